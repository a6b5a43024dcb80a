"""Transformer brain encoders on frozen features from any backbone (users bring the features).

:class:`RoutingEncoder`
    The attention-routing encoder of Adeli, Sun & Kriegeskorte, "Transformer brain encoders
    explain human high-level visual responses" (NeurIPS 2025; code
    ``Hosseinadeli/transformer_brain_encoder``): learned queries, one per region (ROI),
    cross-attend to the patch tokens of a frozen image model (one pre-norm decoder layer,
    2-D sine positional embeddings on the keys as in DETR); each query maps linearly to the
    targets (voxels / vertices) of its region; MSE. The per-query attention maps show which
    patches are routed to each region.
:class:`InContextEncoder`
    BraInCoRL (Yu et al., NeurIPS 2025): a transformer reads (feature, response) context
    pairs of one voxel and outputs that voxel's linear encoding weights; meta-trained across
    voxels (and subjects); predicts new voxels from their context with no fine-tuning.

Both have a plain torch ``fit`` (AdamW, MSE) suited to these small models and a ``predict``
that takes and returns numpy arrays. Features are arrays computed by the user from any
backbone; nothing is downloaded.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..errors import DataError

__all__ = ["InContextEncoder", "RoutingEncoder", "sine_positional_embedding_2d"]


def sine_positional_embedding_2d(height, width, dim, temperature=10000.0):
    """DETR's 2-D sine embedding for a (height, width) patch grid -> (height * width, dim).

    ``dim`` must be divisible by 4: a quarter each for sin/cos of the row and the column.
    """
    if dim % 4:
        raise DataError(f"sine_positional_embedding_2d: dim must be divisible by 4; got {dim}")
    q = dim // 4
    freq = temperature ** (-torch.arange(q, dtype=torch.float32) / q)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32) / max(height - 1, 1),
                            torch.arange(width, dtype=torch.float32) / max(width - 1, 1),
                            indexing="ij")
    ay = 2 * math.pi * ys.reshape(-1, 1) * freq
    ax = 2 * math.pi * xs.reshape(-1, 1) * freq
    return torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=1)


def _as_tensor(x, name, ndim, device=None):
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x,
                        dtype=torch.float32)
    if t.ndim not in ndim:
        raise DataError(f"{name} must have {' or '.join(map(str, ndim))} dims; got shape "
                        f"{tuple(t.shape)}")
    return t if device is None else t.to(device)


def _train_loop(model, batches, *, n_steps, lr, weight_decay, clip, seed, log_every=0):
    """AdamW on ``model.loss(*batch)`` for n_steps batches drawn from ``batches(rng)``."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(n_steps, 1),
                                                       eta_min=lr * 0.05)
    rng = np.random.default_rng(seed)
    history = []
    model.train()
    for _ in range(n_steps):
        loss = model.loss(*batches(rng))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
    model.eval()
    return history


# ----------------------------------------------------------------------------- routing
class RoutingEncoder(nn.Module):
    """Learned ROI queries cross-attend to frozen patch features; per-ROI linear readout.

    Parameters
    ----------
    feature_dim : int
        Width D of the frozen patch tokens.
    n_queries : int
        Number of regions (one learned query each).
    n_targets : int
        Number of predicted targets (voxels / vertices).
    target_to_query : array-like of int (n_targets,)
        Region (query index) of each target.
    grid : tuple (height, width) or None
        Patch grid: fixed 2-D sine positional embeddings on the keys. Without a grid, pass
        ``n_patches`` for learned positional embeddings.
    n_patches : int or None
    hidden_dim : int, default 64
    n_heads : int, default 4
    dim_feedforward : int, default 128
    dropout : float, default 0.0

    Notes
    -----
    One pre-norm decoder layer: ``h = q + CrossAttn(LN(q), mem + pos, mem)``, ``h = h +
    FFN(LN(h))``, with ``mem = Linear(features)``. The self-attention of a first decoder
    layer acts on the learned queries only (input independent), so it is folded into them.
    ``forward`` takes features (B, N, D) or (B, H, W, D) and returns (B, n_targets).
    """

    def __init__(self, feature_dim, n_queries, n_targets, target_to_query, *, grid=None,
                 n_patches=None, hidden_dim=64, n_heads=4, dim_feedforward=128, dropout=0.0):
        super().__init__()
        t2q = np.asarray(target_to_query)
        if t2q.shape != (n_targets,) or not np.issubdtype(t2q.dtype, np.integer) or \
                t2q.min() < 0 or t2q.max() >= n_queries:
            raise DataError(f"RoutingEncoder: target_to_query must be {n_targets} ints in "
                            f"[0, {n_queries}); got shape {t2q.shape}, dtype {t2q.dtype}")
        if grid is None and n_patches is None:
            raise DataError("RoutingEncoder: give grid=(height, width) (sine positions) or "
                            "n_patches (learned positions)")
        self.feature_dim, self.n_queries, self.n_targets = feature_dim, n_queries, n_targets
        self.grid = None if grid is None else tuple(int(g) for g in grid)
        self.n_patches = int(np.prod(self.grid)) if grid is not None else int(n_patches)
        self.register_buffer("target_to_query", torch.as_tensor(t2q, dtype=torch.long))
        self.input_proj = nn.Linear(feature_dim, hidden_dim)
        if grid is not None:
            self.register_buffer("pos", sine_positional_embedding_2d(*self.grid, hidden_dim))
        else:
            self.pos = nn.Parameter(torch.randn(self.n_patches, hidden_dim) * 0.02)
        self.queries = nn.Parameter(torch.randn(n_queries, hidden_dim) * 0.02)
        self.norm_q = nn.LayerNorm(hidden_dim)
        self.attn = nn.MultiheadAttention(hidden_dim, n_heads, dropout=dropout,
                                          batch_first=True)
        self.norm_ff = nn.LayerNorm(hidden_dim)
        self.ffn = nn.Sequential(nn.Linear(hidden_dim, dim_feedforward), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(dim_feedforward, hidden_dim))
        self.readout_w = nn.Parameter(torch.randn(n_targets, hidden_dim) / math.sqrt(hidden_dim))
        self.readout_b = nn.Parameter(torch.zeros(n_targets))

    def _tokens(self, features):
        if features.ndim == 4:
            b, h, w, d = features.shape
            if self.grid is not None and (h, w) != self.grid:
                raise DataError(f"RoutingEncoder: features grid {(h, w)} != grid {self.grid}")
            features = features.reshape(b, h * w, d)
        if features.shape[1:] != (self.n_patches, self.feature_dim):
            raise DataError(f"RoutingEncoder: features must be (batch, {self.n_patches}, "
                            f"{self.feature_dim}); got {tuple(features.shape)}")
        return features

    def forward(self, features, return_attention=False):
        """Predict targets (B, n_targets); with ``return_attention`` also (B, n_queries, N)."""
        mem = self.input_proj(self._tokens(features))
        q = self.queries.unsqueeze(0).expand(mem.shape[0], -1, -1)
        a, attn = self.attn(self.norm_q(q), mem + self.pos, mem, need_weights=True,
                            average_attn_weights=True)
        h = q + a
        h = h + self.ffn(self.norm_ff(h))
        out = (h[:, self.target_to_query] * self.readout_w).sum(-1) + self.readout_b
        return (out, attn) if return_attention else out

    def loss(self, features, responses):
        """Mean squared error of the predictions."""
        return nn.functional.mse_loss(self(features), responses)

    def fit(self, features, responses, *, n_epochs=50, batch_size=64, lr=2e-3,
            weight_decay=1e-4, clip=1.0, seed=0):
        """Train with AdamW + MSE (cosine schedule).

        Parameters
        ----------
        features : array (n_images, N, D) or (n_images, H, W, D)
        responses : array (n_images, n_targets)

        Returns
        -------
        self (``loss_history_`` holds the per-step training loss)
        """
        dev = next(self.parameters()).device
        x = self._tokens(_as_tensor(features, "features", (3, 4), dev))
        y = _as_tensor(responses, "responses", (2,), dev)
        if y.shape != (x.shape[0], self.n_targets):
            raise DataError(f"RoutingEncoder.fit: responses must be ({x.shape[0]}, "
                            f"{self.n_targets}); got {tuple(y.shape)}")
        torch.manual_seed(seed)
        n = x.shape[0]
        bs = min(batch_size, n)
        n_steps = n_epochs * math.ceil(n / bs)

        def batches(rng):
            idx = torch.as_tensor(rng.choice(n, bs, replace=False), device=dev)
            return x[idx], y[idx]

        self.loss_history_ = _train_loop(self, batches, n_steps=n_steps, lr=lr,
                                         weight_decay=weight_decay, clip=clip, seed=seed)
        return self

    @torch.no_grad()
    def predict(self, features, batch_size=256):
        """Predict (n_images, n_targets) as numpy from features (n_images, N, D)."""
        self.eval()
        dev = next(self.parameters()).device
        x = _as_tensor(features, "features", (3, 4))
        return np.concatenate([self(x[i:i + batch_size].to(dev)).cpu().numpy()
                               for i in range(0, x.shape[0], batch_size)])

    @torch.no_grad()
    def attention_maps(self, features):
        """Attention of each query over the patches, (n_images, n_queries, N) numpy."""
        self.eval()
        dev = next(self.parameters()).device
        _, attn = self(_as_tensor(features, "features", (3, 4), dev), return_attention=True)
        return attn.cpu().numpy()


# ----------------------------------------------------------------------------- in-context
class _ResidualBlock(nn.Module):
    """BraInCoRL's token / head block: Linear(LeakyReLU(LayerNorm(x))) (+ x when shapes match)."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.norm = nn.LayerNorm(d_in)
        self.act = nn.LeakyReLU(0.1)
        self.lin = nn.Linear(d_in, d_out)
        self.skip = d_in == d_out

    def forward(self, x):
        y = self.lin(self.act(self.norm(x)))
        return x + y if self.skip else y


class InContextEncoder(nn.Module):
    """Transformer mapping (feature, response) context pairs of a voxel to its linear weights.

    Parameters
    ----------
    feature_dim : int
        Width E of the (frozen) stimulus features.
    dim : int, default 64
        Internal width.
    n_layers : int, default 4
    n_heads : int, default 4
    n_registers : int, default 4
        Learned tokens prepended to the context; the first one is read out.
    dim_feedforward : int, default 4 * dim
    dropout : float, default 0.0

    Notes
    -----
    Each context pair ``[e, y]`` (E + 1) goes through a residual block to ``dim``; registers
    are prepended; ``n_layers`` pre-norm self-attention blocks (GELU FFN; BraInCoRL uses
    SwiGLU and 20 layers); the first register goes through a residual block to the
    hyperweights ``w`` (E + 1), and a query stimulus is predicted as ``w^T [e_q; 1]``.
    Context pairs are permutation invariant (no positional embedding); ``mask`` marks padded
    context entries.
    """

    def __init__(self, feature_dim, *, dim=64, n_layers=4, n_heads=4, n_registers=4,
                 dim_feedforward=None, dropout=0.0):
        super().__init__()
        self.feature_dim = int(feature_dim)
        self.embed = _ResidualBlock(feature_dim + 1, dim)
        self.registers = nn.Parameter(torch.randn(n_registers, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, n_heads, dim_feedforward or 4 * dim,
                                           dropout=dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = _ResidualBlock(dim, feature_dim + 1)

    def forward(self, context_features, context_responses, mask=None):
        """Hyperweights (B, E + 1) from context (B, S, E) features and (B, S) responses.

        ``mask`` (B, S) bool: True for real context entries (None: all real).
        """
        b, s, e = context_features.shape
        if e != self.feature_dim or context_responses.shape != (b, s):
            raise DataError(f"InContextEncoder: context features must be (B, S, "
                            f"{self.feature_dim}) and responses (B, S); got "
                            f"{tuple(context_features.shape)} and "
                            f"{tuple(context_responses.shape)}")
        tok = self.embed(torch.cat([context_features, context_responses[..., None]], -1))
        reg = self.registers.unsqueeze(0).expand(b, -1, -1)
        pad = None
        if mask is not None:
            pad = torch.cat([torch.zeros(b, reg.shape[1], dtype=torch.bool, device=tok.device),
                             ~mask.bool()], 1)
        h = self.blocks(torch.cat([reg, tok], 1), src_key_padding_mask=pad)
        return self.head(self.norm(h[:, 0]))

    @staticmethod
    def apply_weights(weights, query_features):
        """Predictions (B, Q) of hyperweights (B, E + 1) on query features (B, Q, E)."""
        return (query_features * weights[:, None, :-1]).sum(-1) + weights[:, None, -1]

    def loss(self, ctx_x, ctx_y, q_x, q_y):
        """MSE of the query predictions made from the context."""
        return nn.functional.mse_loss(self.apply_weights(self(ctx_x, ctx_y), q_x), q_y)

    def fit(self, features, responses, *, n_steps=2000, context_size=(10, 50), n_query=16,
            batch_voxels=64, lr=1e-3, weight_decay=1e-4, clip=1.0, seed=0):
        """Meta-train across voxels (and subjects).

        Parameters
        ----------
        features : array (n_images, E) or list of such arrays (one per subject)
        responses : array (n_images, n_voxels) or list (one per subject)
        n_steps : int
        context_size : (int, int)
            Each step draws a context size uniformly in this range (inclusive).
        n_query : int
            Query images per voxel (disjoint from its context).
        batch_voxels : int

        Returns
        -------
        self (``loss_history_`` holds the per-step loss)
        """
        feats = features if isinstance(features, (list, tuple)) else [features]
        resps = responses if isinstance(responses, (list, tuple)) else [responses]
        if len(feats) != len(resps):
            raise DataError(f"InContextEncoder.fit: {len(feats)} feature arrays but "
                            f"{len(resps)} response arrays")
        dev = next(self.parameters()).device
        subjects = []
        for i, (f, r) in enumerate(zip(feats, resps, strict=True)):
            ft = _as_tensor(f, f"features[{i}]", (2,), dev)
            rt = _as_tensor(r, f"responses[{i}]", (2,), dev)
            if ft.shape[1] != self.feature_dim or rt.shape[0] != ft.shape[0]:
                raise DataError(f"InContextEncoder.fit: subject {i}: features {tuple(ft.shape)}"
                                f" (need (n_images, {self.feature_dim})) and responses "
                                f"{tuple(rt.shape)} (need (n_images, n_voxels))")
            hi = context_size[1]
            if ft.shape[0] < hi + n_query:
                raise DataError(f"InContextEncoder.fit: subject {i} has {ft.shape[0]} images; "
                                f"need >= max context {hi} + n_query {n_query}")
            subjects.append((ft, rt))
        torch.manual_seed(seed)

        def batches(rng):
            ft, rt = subjects[rng.integers(len(subjects))]
            n_img, n_vox = rt.shape
            s = int(rng.integers(context_size[0], context_size[1] + 1))
            vox = torch.as_tensor(rng.choice(n_vox, min(batch_voxels, n_vox), replace=False),
                                  device=dev)
            order = torch.as_tensor(np.stack([rng.permutation(n_img)[: s + n_query]
                                              for _ in range(len(vox))]), device=dev)
            x = ft[order]  # (V, s + q, E)
            y = rt[order, vox[:, None]]  # (V, s + q)
            return x[:, :s], y[:, :s], x[:, s:], y[:, s:]

        self.loss_history_ = _train_loop(self, batches, n_steps=n_steps, lr=lr,
                                         weight_decay=weight_decay, clip=clip, seed=seed)
        return self

    @torch.no_grad()
    def predict_weights(self, context_features, context_responses):
        """Linear weights (n_voxels, E + 1) of voxels from a shared context.

        Parameters
        ----------
        context_features : array (S, E)
        context_responses : array (S, n_voxels)
        """
        self.eval()
        dev = next(self.parameters()).device
        f = _as_tensor(context_features, "context_features", (2,), dev)
        r = _as_tensor(context_responses, "context_responses", (2,), dev)
        if r.shape[0] != f.shape[0]:
            raise DataError(f"InContextEncoder: {f.shape[0]} context images but responses "
                            f"have {r.shape[0]} rows")
        v = r.shape[1]
        w = self(f.unsqueeze(0).expand(v, -1, -1), r.T.contiguous())
        return w.cpu().numpy()

    def predict(self, context_features, context_responses, query_features):
        """Predict new voxels on query images with no fine-tuning -> (n_query, n_voxels)."""
        w = self.predict_weights(context_features, context_responses)
        q = np.asarray(query_features, dtype=np.float32)
        return q @ w[:, :-1].T + w[:, -1]
