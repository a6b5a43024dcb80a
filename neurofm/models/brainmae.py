"""BrainMAE (Yang, Mao, Liu, Liu; arXiv 2406.17086): masked autoencoding of fMRI ROI signals
with region-aware graph attention. Paper re-implementation: NO PUBLIC CODE EXISTS.

Everything here follows the paper's description (../shared/METHODS.md section 2); nothing
could be checked against reference code. What the paper states:

- a learnable embedding per ROI, shared across subjects (E, R x D);
- region-aware attention whose weights come from the ROI embeddings alone,
  ``A_ij = softmax_{j != i}((W_q e_i) . (W_k e_j) / sqrt(d))`` (self-loops removed; the variant
  with self-loops is worse); the static-graph encoder (SG) has 3 such blocks, features updated
  as ``FFN(LN(H + A V(H)))``; an adaptive variant (AG) adds 2 self-attention blocks over the
  signal;
- the time series is cut into segments of tau = 15 s (``round(15 / TR)`` frames); each
  segment becomes a state embedding (pooled over ROIs); a transformer models the sequence of
  segment states; a decoder reconstructs the ROI signals of each segment;
- segment-wise ROI masking; loss ``0.75 * MSE(masked) + 0.25 * MSE(unmasked)``;
- Schaefer-100 parcellation; ablations: no masking, fixed instead of learned ROI embeddings,
  self-loops.

UNVERIFIED choices (all configurable):

- the mask ratio (default 0.5) and that exactly ``round(mask_ratio * R)`` ROIs are masked in
  every segment, independently per segment and sample; masked ROIs get a learned mask token
  (plus their ROI embedding) in place of their signal embedding;
- the signal embedding: ``Linear(segment_frames -> D)`` of each ROI's segment, plus E;
- multi-head region-aware attention (heads split D; logits from E only in SG) and the block
  form: post-norm ``H = LN(H + A V(H)); H = LN(H + FFN(H))`` (the paper's
  ``FFN(LN(H + A V(H)))`` with a residual around the FFN);
- AG: ``n_adaptive`` (2) standard pre-norm self-attention blocks over the ROI tokens of a
  segment before the region-aware blocks (the paper's exact composition is not described);
- the state of a segment is the mean of its ROI features; the temporal transformer has
  ``temporal_depth`` (2) pre-norm blocks with fixed 1-D sin-cos segment positions;
- the decoder: ``MLP(LN(h_ki + W s'_k))`` -> the segment_frames samples of ROI i in segment k,
  from the ROI feature h_ki and the contextualized state s'_k;
- the fixed ROI embedding ablation ("PosSG") uses 1-D sin-cos of the ROI index;
- widths and depths (D = 128, 3 graph blocks, 4 heads) and the optimizer
  (:class:`neurofm.training.BrainMAEModule`).

Shapes: B batch, R ROIs, T frames, L frames per segment, K segments (T // L), D width.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..errors import DataError, FormatError, NeurofmError
from .layers import LN_EPS, Block, DropPath, Mlp, init_vit_weights, trunc_normal_

__all__ = ["BrainMAE", "BrainMAEEncoder", "RegionAwareAttention", "encoder_from_checkpoint",
           "export_brainmae_encoder", "load_brainmae_encoder", "masked_loss",
           "segment_frames_for"]

ENCODERS = ("static", "adaptive")
ROI_EMBEDDINGS = ("learned", "fixed")


def segment_frames_for(t_r, seconds=15.0):
    """Frames per segment for a repetition time: ``round(seconds / t_r)`` (at least 1)."""
    if not t_r or t_r <= 0:
        raise NeurofmError(f"t_r must be > 0 seconds; got {t_r!r}")
    return max(1, round(float(seconds) / float(t_r)))


def _sincos(n, dim):
    """Fixed 1-D sin-cos table (n, dim) of positions 0..n-1."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = torch.cat([torch.sin(pos * omega), torch.cos(pos * omega)], dim=1)
    return out.float()


def _int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise NeurofmError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


class RegionAwareAttention(nn.Module):
    """Graph attention over ROIs whose weights come from the ROI embeddings.

    ``logits[h, i, j] = (W_q e_i)_h . (W_k e_j)_h / sqrt(D / H)``, the diagonal removed unless
    ``self_loops``; softmax over j; ``out_i = W_o sum_j A_ij (W_v h_j)``. The attention is the
    same for every sample (static graph).

    Parameters
    ----------
    dim, num_heads : int
    self_loops : bool
        Keep j = i in the softmax (the paper's worse ablation).
    """

    def __init__(self, dim, num_heads, self_loops=False):
        super().__init__()
        if dim % num_heads:
            raise NeurofmError(f"embed_dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads, self.self_loops = num_heads, bool(self_loops)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def weights(self, e):
        """Attention matrix (H, R, R) from ROI embeddings ``e`` (R, D)."""
        r, d = e.shape
        h = self.num_heads
        q = self.q(e).view(r, h, d // h).transpose(0, 1)  # (H, R, D/H)
        k = self.k(e).view(r, h, d // h).transpose(0, 1)  # (H, R, D/H)
        logits = q @ k.transpose(1, 2) / math.sqrt(d // h)  # (H, R, R)
        if not self.self_loops:
            eye = torch.eye(r, dtype=torch.bool, device=e.device)
            logits = logits.masked_fill(eye, float("-inf"))
        return torch.softmax(logits, dim=-1)

    def forward(self, x, e):  # x (B', R, D), e (R, D) -> (B', R, D)
        b, r, d = x.shape
        h = self.num_heads
        a = self.weights(e).to(x.dtype)  # (H, R, R)
        v = self.v(x).view(b, r, h, d // h).transpose(1, 2)  # (B', H, R, D/H)
        out = (a[None] @ v).transpose(1, 2).reshape(b, r, d)  # (B', R, D)
        return self.proj(out)


class GraphBlock(nn.Module):
    """``H = LN(H + A V(H)); H = LN(H + FFN(H))`` with region-aware attention A."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, self_loops=False, drop_path=0.0):
        super().__init__()
        self.attn = RegionAwareAttention(dim, num_heads, self_loops=self_loops)
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x, e):  # (B', R, D) -> (B', R, D)
        x = self.norm1(x + self.drop_path(self.attn(x, e)))
        return self.norm2(x + self.drop_path(self.mlp(x)))


class BrainMAEEncoder(nn.Module):
    """Transient-state encoder (per segment) plus the temporal transformer over states.

    ``forward(x)`` maps (B, R, T) to segment states (B, K, D); :meth:`tokens` also returns the
    ROI features (B, K, R, D). See :class:`BrainMAE` for the parameters.
    """

    def __init__(self, n_rois, segment_frames, *, embed_dim, depth, num_heads, temporal_depth,
                 encoder, roi_embedding, self_loops, n_adaptive, mlp_ratio, drop_path):
        super().__init__()
        self.n_rois, self.segment_frames, self.embed_dim = n_rois, segment_frames, embed_dim
        self.roi_embedding = roi_embedding
        if roi_embedding == "learned":
            self.roi_embed = nn.Parameter(torch.zeros(n_rois, embed_dim))
        else:
            self.register_buffer("roi_embed", _sincos(n_rois, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.input_proj = nn.Linear(segment_frames, embed_dim)
        n_total = (n_adaptive if encoder == "adaptive" else 0) + depth + temporal_depth
        rates = iter(np.linspace(0.0, drop_path, max(n_total, 1)).tolist())
        self.signal_blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, True, next(rates))
             for _ in range(n_adaptive if encoder == "adaptive" else 0)])
        self.graph_blocks = nn.ModuleList(
            [GraphBlock(embed_dim, num_heads, mlp_ratio, self_loops, next(rates))
             for _ in range(depth)])
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, True, next(rates))
                                     for _ in range(temporal_depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=LN_EPS)
        init_vit_weights(self)
        if roi_embedding == "learned":
            trunc_normal_(self.roi_embed)
        trunc_normal_(self.mask_token)

    def check_input(self, x):
        """Return ``x`` as (B, R, T); accept (B, 1, R, T)."""
        if not isinstance(x, torch.Tensor):
            raise DataError(f"input must be a torch.Tensor of shape (B, R, T); got "
                            f"{type(x).__name__}")
        if x.ndim == 4 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 3:
            raise DataError(f"input must have shape (B, R, T); got {tuple(x.shape)}")
        if x.shape[1] != self.n_rois:
            raise DataError(f"input has {x.shape[1]} ROIs; the model was built for "
                            f"{self.n_rois} (one learned embedding per ROI)")
        if x.shape[2] < self.segment_frames:
            raise DataError(f"input has {x.shape[2]} frames, fewer than one segment "
                            f"({self.segment_frames})")
        return x

    def segments(self, x):
        """(B, R, T) -> (B, K, R, L); trailing frames that do not fill a segment dropped."""
        x = self.check_input(x)
        b, r, t = x.shape
        k, seg = t // self.segment_frames, self.segment_frames
        return x[:, :, : k * seg].reshape(b, r, k, seg).transpose(1, 2)  # (B, K, R, L)

    def tokens(self, x, mask=None):
        """ROI features and segment states.

        Parameters
        ----------
        x : tensor of shape (B, R, T)
        mask : bool tensor of shape (B, K, R), optional
            True where the ROI's segment is masked (its signal is not seen).

        Returns
        -------
        h : tensor of shape (B, K, R, D)
            ROI features after the transient-state encoder.
        states : tensor of shape (B, K, D)
            Segment states after the temporal transformer and the final LayerNorm.
        """
        seg = self.segments(x)  # (B, K, R, L)
        b, k, r, _ = seg.shape
        h = self.input_proj(seg)  # (B, K, R, D)
        if mask is not None:
            if mask.shape != (b, k, r):
                raise DataError(f"mask must have shape (B, K, R) = {(b, k, r)}; got "
                                f"{tuple(mask.shape)}")
            h = torch.where(mask[..., None], self.mask_token.to(h.dtype), h)
        e = self.roi_embed.to(h.dtype)  # (R, D)
        h = (h + e).reshape(b * k, r, -1)  # (B K, R, D)
        for blk in self.signal_blocks:
            h = blk(h)
        for blk in self.graph_blocks:
            h = blk(h, e)
        h = h.view(b, k, r, -1)  # (B, K, R, D)
        s = h.mean(dim=2)  # (B, K, D): a segment's state pools its ROIs
        s = s + _sincos(k, s.shape[-1]).to(s.device, s.dtype)
        for blk in self.blocks:
            s = blk(s)
        return h, self.norm(s)

    def forward(self, x):  # (B, R, T) -> (B, K, D)
        return self.tokens(x)[1]


def masked_loss(pred, target, mask, masked_weight=0.75):
    """``w * MSE(masked) + (1 - w) * MSE(unmasked)`` over ROI segments.

    Parameters
    ----------
    pred, target : tensors of shape (B, K, R, L)
    mask : bool tensor of shape (B, K, R)
    masked_weight : float
        w (0.75 in the paper). Without any masked (or unmasked) segment the other term alone
        is returned.

    Returns
    -------
    loss, loss_masked, loss_unmasked : scalar tensors (NaN for an empty term)
    """
    err = ((pred - target) ** 2).mean(dim=-1)  # (B, K, R)
    m = mask.to(err.dtype)
    n_m, n_u = m.sum(), (1 - m).sum()
    masked = (err * m).sum() / n_m if n_m > 0 else err.new_tensor(float("nan"))
    unmasked = (err * (1 - m)).sum() / n_u if n_u > 0 else err.new_tensor(float("nan"))
    if n_m == 0:
        return unmasked, masked, unmasked
    if n_u == 0:
        return masked, masked, unmasked
    return masked_weight * masked + (1 - masked_weight) * unmasked, masked, unmasked


class BrainMAE(nn.Module):
    """BrainMAE: region-aware masked autoencoder of fMRI ROI time series (paper only).

    No public code exists; see the module docstring for what is from the paper and which
    choices are UNVERIFIED.

    Parameters
    ----------
    n_rois : int
        R (Schaefer-100 in the paper).
    segment_frames : int
        L, frames per segment: 15 s of volumes (:func:`segment_frames_for`; 21 at TR 0.72 s).
    n_frames : int, optional
        Nominal input length (a multiple of ``segment_frames`` is used by downstream tools);
        default 10 segments. Inputs of any length >= L are accepted.
    embed_dim, depth, num_heads : int
        Width D, region-aware blocks (3 in the paper's SG), heads.
    temporal_depth : int
        Blocks of the transformer over segment states.
    mask_ratio : float
        Share of ROIs masked in every segment (UNVERIFIED; 0 = the "BrainAE" ablation).
    encoder : {"static", "adaptive"}
        SG (attention from ROI embeddings only) or AG (plus ``n_adaptive`` self-attention
        blocks over the signal).
    roi_embedding : {"learned", "fixed"}
        Learned ROI embeddings, or fixed sin-cos of the ROI index (the "PosSG" ablation).
    self_loops : bool
        Keep i -> i in the region-aware attention (ablation; worse in the paper).
    n_adaptive : int
        Self-attention blocks of the adaptive encoder.
    masked_weight : float
        Weight of the masked term of the loss (0.75).
    mlp_ratio, drop_path : float

    Attributes
    ----------
    encoder : BrainMAEEncoder
    config : dict
        JSON-safe constructor arguments.
    """

    def __init__(self, n_rois, segment_frames, *, n_frames=None, embed_dim=128, depth=3,
                 num_heads=4, temporal_depth=2, mask_ratio=0.5, encoder="static",
                 roi_embedding="learned", self_loops=False, n_adaptive=2, masked_weight=0.75,
                 mlp_ratio=4.0, drop_path=0.0):
        super().__init__()
        n_rois = _int("n_rois", n_rois, 2)
        segment_frames = _int("segment_frames", segment_frames)
        n_frames = 10 * segment_frames if n_frames is None else _int("n_frames", n_frames,
                                                                     segment_frames)
        embed_dim = _int("embed_dim", embed_dim, 2)
        num_heads = _int("num_heads", num_heads)
        if embed_dim % num_heads or embed_dim % 2:
            raise NeurofmError(f"embed_dim={embed_dim} must be even and divisible by "
                               f"num_heads={num_heads}")
        if encoder not in ENCODERS:
            raise NeurofmError(f"encoder must be one of {ENCODERS}; got {encoder!r}")
        if roi_embedding not in ROI_EMBEDDINGS:
            raise NeurofmError(f"roi_embedding must be one of {ROI_EMBEDDINGS}; got "
                               f"{roi_embedding!r}")
        if not 0.0 <= float(mask_ratio) < 1.0:
            raise NeurofmError(f"mask_ratio must be in [0, 1); got {mask_ratio!r}")
        if not 0.0 <= float(masked_weight) <= 1.0:
            raise NeurofmError(f"masked_weight must be in [0, 1]; got {masked_weight!r}")
        if not 0.0 <= float(drop_path) < 1.0:
            raise NeurofmError(f"drop_path must be in [0, 1); got {drop_path!r}")
        self.config = {
            "n_rois": n_rois, "segment_frames": segment_frames, "n_frames": n_frames,
            "embed_dim": embed_dim, "depth": _int("depth", depth, 0), "num_heads": num_heads,
            "temporal_depth": _int("temporal_depth", temporal_depth, 0),
            "mask_ratio": float(mask_ratio), "encoder": encoder,
            "roi_embedding": roi_embedding, "self_loops": bool(self_loops),
            "n_adaptive": _int("n_adaptive", n_adaptive, 0),
            "masked_weight": float(masked_weight), "mlp_ratio": float(mlp_ratio),
            "drop_path": float(drop_path),
        }
        self.encoder = BrainMAEEncoder(
            n_rois, segment_frames, embed_dim=embed_dim, depth=self.config["depth"],
            num_heads=num_heads, temporal_depth=self.config["temporal_depth"],
            encoder=encoder, roi_embedding=roi_embedding, self_loops=self_loops,
            n_adaptive=self.config["n_adaptive"], mlp_ratio=mlp_ratio,
            drop_path=float(drop_path))
        self.encoder.config = self.config
        self.decoder_state = nn.Linear(embed_dim, embed_dim)
        self.decoder = nn.Sequential(nn.LayerNorm(embed_dim, eps=LN_EPS),
                                     nn.Linear(embed_dim, embed_dim), nn.GELU(),
                                     nn.Linear(embed_dim, segment_frames))
        init_vit_weights(self.decoder_state)
        init_vit_weights(self.decoder)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @property
    def n_masked(self):
        """ROIs masked per segment: ``round(mask_ratio * R)``."""
        return round(self.config["mask_ratio"] * self.config["n_rois"])

    def random_mask(self, batch, n_segments, *, generator=None, device=None):
        """Segment-wise ROI mask: exactly :attr:`n_masked` ROIs per (sample, segment).

        Returns
        -------
        mask : bool tensor of shape (B, K, R)
        """
        r = self.config["n_rois"]
        noise = torch.rand(batch, n_segments, r, generator=generator)  # (B, K, R)
        ranks = noise.argsort(dim=-1).argsort(dim=-1)
        return (ranks < self.n_masked).to(device)

    def encode(self, x):
        """Segment states of an unmasked input: (B, R, T) -> (B, K, D)."""
        return self.encoder(x)

    def forward(self, x, mask=None):
        """Reconstruct every ROI segment.

        Parameters
        ----------
        x : tensor of shape (B, R, T)
        mask : bool tensor of shape (B, K, R), optional
            Masked ROI segments (None: nothing masked).

        Returns
        -------
        pred : tensor of shape (B, K, R, L)
        """
        h, states = self.encoder.tokens(x, mask)  # (B, K, R, D), (B, K, D)
        return self.decoder(h + self.decoder_state(states)[:, :, None, :])  # (B, K, R, L)

    def loss(self, x, mask):
        """Reconstruction loss of :func:`masked_loss` on the segments of ``x``.

        Returns
        -------
        out : dict
            ``loss``, ``loss_masked``, ``loss_unmasked`` (scalars) and ``state_std`` (std of
            the segment states across the batch, averaged over features: a collapse check).
        """
        target = self.encoder.segments(x)  # (B, K, R, L)
        h, states = self.encoder.tokens(x, mask)
        pred = self.decoder(h + self.decoder_state(states)[:, :, None, :])
        loss, lm, lu = masked_loss(pred, target, mask, self.config["masked_weight"])
        std = states.float().mean(dim=1).std(dim=0).mean() if len(x) > 1 else \
            states.new_zeros(())
        return {"loss": loss, "loss_masked": lm, "loss_unmasked": lu,
                "state_std": std.detach()}


# ------------------------------------------------------------------------------ export
def _config_from(meta_or_payload, source):
    config = dict(meta_or_payload.get("model_config") or meta_or_payload.get("config") or {})
    config.pop("model", None)
    if "n_rois" not in config or "segment_frames" not in config:
        raise FormatError(f"{source}: no BrainMAE model config")
    return config


def encoder_from_checkpoint(ckpt, source="checkpoint"):
    """The :class:`BrainMAEEncoder` of a Lightning checkpoint (strict loading).

    Returns
    -------
    encoder : BrainMAEEncoder
        In eval mode, with ``config`` and ``extra`` (normalization, splits, seed...).
    """
    from .export import load_state_dict_strict

    meta = ckpt.get("neurofm") or {}
    model = BrainMAE(**_config_from(meta, source))
    sd = {k[len("model."):]: v for k, v in ckpt["state_dict"].items()
          if k.startswith("model.")}
    load_state_dict_strict(model, sd, source=f"{source} (BrainMAE)")
    enc = model.encoder
    enc.config = dict(model.config)
    enc.extra = {k: v for k, v in meta.items() if k != "model_config"}
    return enc.eval()


def export_brainmae_encoder(ckpt_or_model, path):
    """Write a BrainMAE encoder to a plain torch file (``neurofm.encoder`` format).

    Parameters
    ----------
    ckpt_or_model : BrainMAE | str path of a Lightning checkpoint
    path : str | os.PathLike

    Returns
    -------
    path : str
    """
    import os

    from .._version import __version__
    from .export import ENCODER_FORMAT

    if isinstance(ckpt_or_model, BrainMAE):
        enc, extra = ckpt_or_model.encoder, {}
        config = dict(ckpt_or_model.config)
    else:
        source = os.fspath(ckpt_or_model)
        if not os.path.isfile(source):
            raise FormatError(f"{source}: checkpoint not found")
        enc = encoder_from_checkpoint(torch.load(source, map_location="cpu",
                                                 weights_only=False), source)
        config, extra = dict(enc.config), enc.extra
    payload = {"format": ENCODER_FORMAT, "version": 1, "neurofm_version": __version__,
               "config": {**config, "model": "BrainMAE"}, "which": "encoder",
               "state_dict": {k: v.detach().cpu() for k, v in enc.state_dict().items()},
               "extra": extra}
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(payload, path)
    return path


def load_brainmae_encoder(payload_or_path, source=None):
    """Load an encoder written by :func:`export_brainmae_encoder` (strict).

    Returns
    -------
    encoder : BrainMAEEncoder
        ``encoder(x)`` maps (B, R, T) to (B, K, D).
    """
    import os

    from .export import load_state_dict_strict

    payload = payload_or_path
    if isinstance(payload_or_path, (str, os.PathLike)):
        source = os.fspath(payload_or_path)
        payload = torch.load(source, map_location="cpu", weights_only=True)
    source = source or "encoder file"
    enc = BrainMAE(**_config_from(payload, source)).encoder
    load_state_dict_strict(enc, payload["state_dict"], source=source)
    enc.config = _config_from(payload, source)
    enc.extra = payload.get("extra", {})
    return enc.eval()
