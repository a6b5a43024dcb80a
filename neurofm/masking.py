"""Masks for joint-embedding pretraining, drawn in the DataLoader's collate function.

Masks are flat token indices into the ROI-major grid (``token = roi * P + t`` for R ROIs and
P time patches); :func:`apply_masks` gathers them, so encoders never know about masks.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from .errors import DataError, NeurofmError

__all__ = ["SpatiotemporalMaskCollator", "apply_masks"]


def apply_masks(tokens, idx):
    """Gather tokens at flat indices.

    Parameters
    ----------
    tokens : tensor of shape (B, N, D)
    idx : int64 tensor of shape (B, K), or a list of such tensors
        Token indices per sample. A list is gathered block by block and concatenated along
        the batch (the I-JEPA convention: output (len(idx) * B, K, D)).

    Returns
    -------
    kept : tensor of shape (B, K, D)
    """
    if isinstance(idx, (list, tuple)):
        return torch.cat([apply_masks(tokens, i) for i in idx], dim=0)
    if idx.ndim != 2 or idx.shape[0] != tokens.shape[0]:
        raise DataError(f"apply_masks: indices must have shape (B={tokens.shape[0]}, K); got "
                        f"{tuple(idx.shape)}")
    index = idx.to(device=tokens.device, dtype=torch.int64)[..., None]  # (B, K, 1)
    return torch.gather(tokens, 1, index.expand(-1, -1, tokens.shape[-1]))  # (B, K, D)


def _scale(name, value):
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise NeurofmError(f"{name} must be a pair (low, high); got {value!r}") from None
    if not 0.0 <= lo <= hi <= 1.0:
        raise NeurofmError(f"{name} must satisfy 0 <= low <= high <= 1; got {value!r}")
    return (lo, hi)


class SpatiotemporalMaskCollator:
    """Brain-JEPA spatiotemporal masking as a DataLoader ``collate_fn``.

    Grid: R ROIs x W time patches (reference 450 x 10). For each batch the sizes of the
    observation block and of the Cross-ROI (alpha) block are drawn once; per sample:

    1. observation: ``h_o = int(R * U(obs_scale))`` random ROIs (not contiguous) x a
       contiguous window of ``w_o = int(W * U(obs_scale))`` patches starting at
       ``randint(0, W - w_o)`` (exclusive bound, as torch's: the last column is never
       observed, faithfully to the reference);
    2. alpha (Cross-ROI) target: ``h_a = int(R * U(alpha_roi_scale))`` random ROIs x
       ``int(W * U(alpha_time_scale))`` contiguous patches inside the observation window
       (again with an exclusive start bound); the alpha ROIs leave the context at all times;
    3. right then left targets, sizes drawn per sample and side: one ``s ~
       U(edge_roi_scale)``; ``int(|obs ∩ alpha| * s)`` ROIs from obs ∩ alpha (Double-Cross)
       and ``int(|rest| * s)`` ROIs from the rest (Cross-Time); ``w = int(W *
       U(edge_time_scale))`` columns drawn (not necessarily contiguous) from the last / first
       ``edge_width`` columns (the reference: {7, 8, 9} and {0, 1, 2}); those columns leave
       the context for every ROI;
    4. context = the remaining observation tokens (sorted); target = ``[alpha, right,
       left]`` concatenated (each block sorted; a token may appear in two blocks, as in the
       reference). Context and targets are disjoint.

    With ``truncate_to_batch_min=True`` (the reference) every sample's context and target
    lists are cut to the batch minimum. Context lists are sorted, so this drops tokens of the
    highest ROI indices (a systematic bias against the last ROIs; for the reference's ROI
    order the end of the Schaefer-400 list), and target truncation drops left, then right
    blocks first. With ``False`` the lists are padded (index 0) and masks returned.

    Parameters
    ----------
    n_rois : int
        R.
    n_time_patches : int
        W (>= 2).
    seed : int
        Base seed. Every batch draws from its own generator seeded by ``(seed, rank, epoch,
        batch index in the epoch)``, so masks do not depend on worker scheduling and a run
        resumed at an epoch start (or with :meth:`load_state_dict`) draws the same masks.
    truncate_to_batch_min : bool
        See above.
    obs_scale : (float, float)
        Reference ``enc_mask_scale`` (0.84, 1.0), used for ROI and time fractions
        (separate draws).
    alpha_roi_scale, alpha_time_scale : (float, float)
        Reference ``pred_mask_R_scale`` (0.45, 0.6) and ``pred_mask_T_roi_scale``
        (0.2, 0.6). The alpha window is kept within [1, ``w_o - 1``] patches (always
        the case at W = 10).
    edge_roi_scale, edge_time_scale : (float, float)
        Reference ``pred_mask_R_roi_scale`` (0.15, 0.3) and ``pred_mask_T_scale``
        (0.0, 0.4).
    edge_width : int, optional
        Columns on each side that right / left targets may use; default
        ``max(1, round(0.3 * W))`` (3 at W = 10, hard-coded in the reference).
    min_keep : int
        A sample whose context or target has fewer tokens is redrawn (up to ``max_tries``
        times, then the batch sizes are redrawn, up to ``max_tries`` times, then
        DataError). The reference's check compares the ROI count of a dense
        mask instead of the token count, so it never fires; at the default scales and
        W = 10 redraws do not happen.
    max_tries : int
        Redraws per sample, and of the batch sizes, before giving up.
    patch_size : int, optional
        When given, the batch's frame count must satisfy ``T // patch_size ==
        n_time_patches``.
    collate_fn : callable, optional
        Turns the list of samples into the batch dict (default
        :func:`neurofm.data.collate`).

    Returns (of ``__call__``)
    -------------------------
    batch : dict
        The collated batch plus ``context_idx`` int64 (B, K_ctx), ``target_idx`` int64
        (B, K_tgt) (one tensor: the predictor handles the concatenated blocks in one pass),
        ``target_block`` int8 (B, K_tgt) (0 alpha, 1 right, 2 left, -1 padding),
        ``n_context`` / ``n_target`` int64 (B,) (sizes before truncation or padding) and,
        without truncation, bool ``context_mask`` / ``target_mask`` (False at padding).
    """

    def __init__(self, n_rois, n_time_patches, *, seed=0, truncate_to_batch_min=True,
                 obs_scale=(0.84, 1.0), alpha_roi_scale=(0.45, 0.6),
                 alpha_time_scale=(0.2, 0.6), edge_roi_scale=(0.15, 0.3),
                 edge_time_scale=(0.0, 0.4), edge_width=None, min_keep=4, max_tries=20,
                 patch_size=None, collate_fn=None):
        for name, v, lo in (("n_rois", n_rois, 1), ("n_time_patches", n_time_patches, 2),
                            ("min_keep", min_keep, 0), ("max_tries", max_tries, 1)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
                raise NeurofmError(f"{name} must be an integer >= {lo}; got {v!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise NeurofmError(f"seed must be an integer >= 0; got {seed!r}")
        self.n_rois, self.n_time_patches = int(n_rois), int(n_time_patches)
        self.seed = int(seed)
        self.truncate_to_batch_min = bool(truncate_to_batch_min)
        self.obs_scale = _scale("obs_scale", obs_scale)
        self.alpha_roi_scale = _scale("alpha_roi_scale", alpha_roi_scale)
        self.alpha_time_scale = _scale("alpha_time_scale", alpha_time_scale)
        self.edge_roi_scale = _scale("edge_roi_scale", edge_roi_scale)
        self.edge_time_scale = _scale("edge_time_scale", edge_time_scale)
        w = self.n_time_patches
        if edge_width is None:
            edge_width = max(1, int(0.3 * w + 0.5))
        if isinstance(edge_width, bool) or not isinstance(edge_width, numbers.Integral) \
                or not 1 <= edge_width <= w // 2:
            raise NeurofmError(f"edge_width must be an integer in [1, n_time_patches // 2 = "
                               f"{w // 2}]; got {edge_width!r}")
        self.edge_width = int(edge_width)
        self.min_keep, self.max_tries = int(min_keep), int(max_tries)
        self.patch_size = patch_size
        self.collate_fn = collate_fn
        # [epoch, rank] in shared memory so that set_epoch reaches running workers
        self._shared = torch.zeros(2, dtype=torch.int64).share_memory_()
        self._batches = 0
        self._seen_epoch = 0

    # ---------------------------------------------------------------- state
    @property
    def epoch(self):
        return int(self._shared[0])

    def set_epoch(self, epoch, rank=None):
        """Start epoch ``epoch`` (call before iterating; workers see it too).

        ``rank`` defaults to the torch.distributed rank when a process group exists.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise NeurofmError(f"epoch must be an integer >= 0; got {epoch!r}")
        if rank is None and torch.distributed.is_available() \
                and torch.distributed.is_initialized():
            rank = torch.distributed.get_rank()
        if rank is not None:
            self._shared[1] = int(rank)
        self._shared[0] = int(epoch)

    def state_dict(self):
        """``{"seed", "epoch", "rank", "batches"}``: batches collated in this epoch (main
        process; with DataLoader workers resume at an epoch boundary)."""
        return {"seed": self.seed, "epoch": self.epoch, "rank": int(self._shared[1]),
                "batches": self._batches}

    def load_state_dict(self, state):
        missing = {"seed", "epoch", "batches"} - set(state)
        if missing:
            raise NeurofmError(f"mask collator state lacks {sorted(missing)}")
        self.seed = int(state["seed"])
        self._shared[0] = int(state["epoch"])
        self._shared[1] = int(state.get("rank", 0))
        self._batches = int(state["batches"])
        self._seen_epoch = int(state["epoch"])

    def _next_batch_rng(self):
        epoch = self.epoch
        if epoch != self._seen_epoch:
            self._seen_epoch, self._batches = epoch, 0
        info = torch.utils.data.get_worker_info()
        k = self._batches if info is None else self._batches * info.num_workers + info.id
        self._batches += 1
        return self.generator(k, epoch)

    def generator(self, batch, epoch=None):
        """The numpy Generator of batch number ``batch`` of ``epoch`` (default current)."""
        epoch = self.epoch if epoch is None else int(epoch)
        key = [self.seed, int(self._shared[1]), epoch, int(batch)]
        return np.random.default_rng(np.random.SeedSequence(key))

    # ---------------------------------------------------------------- sampling
    @staticmethod
    def _uniform(rng, scale):
        lo, hi = scale
        return lo + rng.random() * (hi - lo)

    def _edge(self, rng, grid_shape, pools, side):
        r, w = grid_shape
        s = self._uniform(rng, self.edge_roi_scale)
        double_cross, cross_time = pools
        n1, n2 = int(len(double_cross) * s), int(len(cross_time) * s)
        n_cols = min(int(w * self._uniform(rng, self.edge_time_scale)), self.edge_width)
        rois = np.concatenate([rng.permutation(cross_time)[:n2],
                               rng.permutation(double_cross)[:n1]])
        cols = rng.permutation(self.edge_width)[:n_cols]
        if side == "right":
            cols = cols + (w - self.edge_width)
        grid = np.zeros((r, w), dtype=bool)
        if n_cols:
            grid[np.ix_(rois, cols)] = True
        return np.flatnonzero(grid), cols

    def sample_masks(self, rng, sizes):
        """Context and target indices of one sample.

        Parameters
        ----------
        rng : numpy.random.Generator
        sizes : dict
            ``h_obs``, ``w_obs``, ``h_alpha``, ``w_alpha`` (the per-batch draws).

        Returns
        -------
        context : int64 array (K_ctx,)
            Sorted flat indices.
        blocks : list of three int64 arrays
            Alpha, right and left target indices (each sorted).
        """
        r, w = self.n_rois, self.n_time_patches
        obs_rois = rng.permutation(r)[: sizes["h_obs"]]
        w_obs = sizes["w_obs"]
        start = int(rng.integers(0, w - w_obs))  # exclusive high, as torch.randint
        alpha_rois = rng.permutation(r)[: sizes["h_alpha"]]
        w_alpha = min(max(sizes["w_alpha"], 1), w_obs - 1)
        offset = int(rng.integers(0, w_obs - w_alpha))
        a0 = start + offset
        alpha = np.zeros((r, w), dtype=bool)
        alpha[alpha_rois, a0:a0 + w_alpha] = True

        in_obs = np.zeros(r, dtype=bool)
        in_obs[obs_rois] = True
        in_alpha = np.zeros(r, dtype=bool)
        in_alpha[alpha_rois] = True
        pools = (np.flatnonzero(in_obs & in_alpha), np.flatnonzero(~(in_obs & in_alpha)))
        right, right_cols = self._edge(rng, (r, w), pools, "right")
        left, left_cols = self._edge(rng, (r, w), pools, "left")

        context = np.zeros((r, w), dtype=bool)
        context[obs_rois, start:start + w_obs] = True
        context[alpha_rois] = False
        context[:, right_cols] = False
        context[:, left_cols] = False
        return np.flatnonzero(context), [np.flatnonzero(alpha), right, left]

    def _batch_sizes(self, rng):
        r, w = self.n_rois, self.n_time_patches
        # draw order as the reference: alpha (ROI, time), then observation (ROI, time)
        h_alpha = int(r * self._uniform(rng, self.alpha_roi_scale))
        w_alpha = int(w * self._uniform(rng, self.alpha_time_scale))
        h_obs = int(r * self._uniform(rng, self.obs_scale))
        w_obs = int(w * self._uniform(rng, self.obs_scale))
        h_alpha, h_obs = min(h_alpha, r - 1), min(h_obs, r - 1)
        w_obs = min(max(w_obs, 1), w - 1)
        return {"h_obs": h_obs, "w_obs": w_obs, "h_alpha": h_alpha, "w_alpha": w_alpha}

    def masks(self, batch_size, rng):
        """Draw the masks of one batch: lists of per-sample context and target blocks.

        A sample whose context or target is smaller than ``min_keep`` is redrawn; when
        ``max_tries`` redraws fail, the batch sizes are redrawn too (small grids only).
        """
        for _attempt in range(self.max_tries):
            sizes = self._batch_sizes(rng)
            contexts, targets = [], []
            for _ in range(batch_size):
                for _try in range(self.max_tries):
                    ctx, blocks = self.sample_masks(rng, sizes)
                    if len(ctx) >= self.min_keep \
                            and sum(len(b) for b in blocks) >= self.min_keep:
                        contexts.append(ctx)
                        targets.append(blocks)
                        break
                else:
                    break
            if len(contexts) == batch_size:
                return contexts, targets
        raise DataError(
            f"mask collator: no masks with >= min_keep={self.min_keep} context and target "
            f"tokens in {self.max_tries} tries on a {self.n_rois} x {self.n_time_patches} "
            "grid; use a longer window (more time patches), larger scales or a smaller "
            "min_keep")

    # ---------------------------------------------------------------- collation
    def _check_signal(self, signal):
        if signal.ndim != 3 or signal.shape[1] != self.n_rois:
            raise DataError(f"mask collator: signal must have shape (B, R={self.n_rois}, T); "
                            f"got {tuple(signal.shape)}")
        if self.patch_size is not None \
                and signal.shape[2] // self.patch_size != self.n_time_patches:
            raise DataError(f"mask collator: {signal.shape[2]} frames give "
                            f"{signal.shape[2] // self.patch_size} patches of "
                            f"{self.patch_size}; expected n_time_patches="
                            f"{self.n_time_patches}")

    def __call__(self, samples):
        """Collate ``samples`` and add the masks (see the class docstring)."""
        if self.collate_fn is None:
            from .data import collate as collate_fn
        else:
            collate_fn = self.collate_fn
        batch = collate_fn(samples)
        if "signal" in batch:
            self._check_signal(batch["signal"])
        rng = self._next_batch_rng()
        contexts, targets = self.masks(len(samples), rng)
        batch.update(self.pack(contexts, targets))
        return batch

    def pack(self, contexts, targets):
        """Stack per-sample index arrays into the batch tensors (truncating or padding)."""
        n_ctx = np.array([len(c) for c in contexts], dtype=np.int64)
        tgt = [np.concatenate(b) for b in targets]
        lab = [np.concatenate([np.full(len(x), i, np.int8) for i, x in enumerate(b)])
               for b in targets]
        n_tgt = np.array([len(t) for t in tgt], dtype=np.int64)
        out = {"n_context": torch.from_numpy(n_ctx), "n_target": torch.from_numpy(n_tgt)}
        if self.truncate_to_batch_min:
            kc, kt = int(n_ctx.min()), int(n_tgt.min())
            out["context_idx"] = torch.from_numpy(np.stack([c[:kc] for c in contexts]))
            out["target_idx"] = torch.from_numpy(np.stack([t[:kt] for t in tgt]))
            out["target_block"] = torch.from_numpy(np.stack([x[:kt] for x in lab]))
            return out
        kc, kt = int(n_ctx.max()), int(n_tgt.max())
        b = len(contexts)
        ci, cm = np.zeros((b, kc), np.int64), np.zeros((b, kc), bool)
        ti, tm = np.zeros((b, kt), np.int64), np.zeros((b, kt), bool)
        tb = np.full((b, kt), -1, np.int8)
        for i in range(b):
            ci[i, : n_ctx[i]], cm[i, : n_ctx[i]] = contexts[i], True
            ti[i, : n_tgt[i]], tm[i, : n_tgt[i]] = tgt[i], True
            tb[i, : n_tgt[i]] = lab[i]
        out.update(context_idx=torch.from_numpy(ci), context_mask=torch.from_numpy(cm),
                   target_idx=torch.from_numpy(ti), target_mask=torch.from_numpy(tm),
                   target_block=torch.from_numpy(tb))
        return out

    def __repr__(self):
        return (f"SpatiotemporalMaskCollator({self.n_rois} x {self.n_time_patches}, seed="
                f"{self.seed}, truncate_to_batch_min={self.truncate_to_batch_min})")
