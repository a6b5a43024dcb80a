"""Brain-JEPA (Dong et al., NeurIPS 2024): context encoder and predictor.

Architecture only: the EMA target encoder, loss and schedules live in
:mod:`neurofm.objectives.jepa`. Shapes: B batch, R ROIs, T frames, P time patches,
N = R * P tokens (ROI-major: ``token = roi * P + t``), K kept tokens, D width.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from ..errors import DataError, NeurofmError
from ..masking import apply_masks
from .layers import (
    LN_EPS,
    Block,
    init_vit_weights,
    key_padding_bias,
    rescale_residual_weights,
    trunc_normal_,
)
from .positional import POS_EMBED_MODES, BrainPositions

__all__ = ["SIZES", "BrainJEPA", "BrainJEPAEncoder", "BrainJEPAPredictor", "load_gradients"]

#: (embed_dim, depth, num_heads) of the reference's vit_small / vit_base / vit_large
SIZES = {"small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}


def _int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise NeurofmError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def load_gradients(gradients):
    """Gradient matrix from an array or a ``.npy`` / ``.csv`` (no header) file.

    Returns
    -------
    g : float32 numpy array of shape (n_rois, k), or None
    """
    if gradients is None:
        return None
    if isinstance(gradients, (str, os.PathLike)):
        path = os.fspath(gradients)
        if not os.path.isfile(path):
            raise NeurofmError(f"gradients: file {path!r} not found")
        if path.endswith(".npy"):
            g = np.load(path)
        else:
            g = np.loadtxt(path, delimiter=",", ndmin=2)
    elif isinstance(gradients, torch.Tensor):
        g = gradients.detach().cpu().numpy()
    else:
        g = np.asarray(gradients)
    if g.ndim != 2 or not np.issubdtype(g.dtype, np.number):
        raise NeurofmError(f"gradients must be a numeric matrix of shape (n_rois, k); got "
                           f"shape {g.shape}, dtype {g.dtype}")
    return g.astype(np.float32)


def _padding_mask(mask, idx):
    if mask is None:
        return None
    if mask.shape != idx.shape:
        raise DataError(f"index mask shape {tuple(mask.shape)} does not match the indices "
                        f"{tuple(idx.shape)}")
    return mask


class BrainJEPAEncoder(nn.Module):
    """ViT over (ROI, time patch) tokens with brain-gradient positions.

    Patch embedding ``Linear(p -> D)`` on non-overlapping 16-frame patches of each ROI (the
    reference's ``Conv2d(1, D, (1, p), stride=(1, p))``), plus positions, then (optionally)
    the kept tokens, pre-norm blocks and a final LayerNorm. No CLS token.

    Parameters
    ----------
    n_rois : int
        R.
    patch_size : int
        Frames per patch p; trailing frames that do not fill a patch are dropped.
    embed_dim, depth, num_heads : int
        Width D, blocks, heads.
    mlp_ratio : float
        MLP hidden width / D.
    pos_embed, gradients, n_gradients
        See :class:`~neurofm.models.positional.BrainPositions`.
    drop_path : float
        Stochastic depth, linear from 0 (first block) to ``drop_path`` (last block).
    rescale_init : bool
        Divide ``attn.proj`` / ``mlp.fc2`` weights of block l by sqrt(2 l) after init.
    """

    def __init__(self, n_rois, *, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                 mlp_ratio=4.0, pos_embed="gradient", gradients=None, n_gradients=30,
                 drop_path=0.0, rescale_init=True):
        super().__init__()
        self.n_rois, self.patch_size, self.embed_dim = n_rois, patch_size, embed_dim
        self.num_heads = num_heads
        self.patch_embed = nn.Linear(patch_size, embed_dim)
        self.pos = BrainPositions(embed_dim, n_rois, mode=pos_embed, gradients=gradients,
                                  n_gradients=n_gradients)
        rates = np.linspace(0.0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, True, rates[i])
                                     for i in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=LN_EPS)
        init_vit_weights(self)
        if rescale_init:
            rescale_residual_weights(self.blocks)

    def n_time_patches(self, n_frames):
        """P = n_frames // patch_size."""
        return int(n_frames) // self.patch_size

    def check_input(self, x):
        """Return ``x`` as (B, R, T); accept the reference's (B, 1, R, T)."""
        if not isinstance(x, torch.Tensor):
            raise DataError(f"input must be a torch.Tensor of shape (B, R, T); got "
                            f"{type(x).__name__}")
        if x.ndim == 4 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 3:
            raise DataError(f"input must have shape (B, R, T); got {tuple(x.shape)}")
        if self.pos.mode == "gradient" and x.shape[1] != self.n_rois:
            raise DataError(f"input has {x.shape[1]} ROIs; the model was built for "
                            f"{self.n_rois} (the gradient matrix has one row per ROI)")
        if x.shape[2] < self.patch_size:
            raise DataError(f"input has {x.shape[2]} frames, fewer than one patch "
                            f"({self.patch_size})")
        return x

    def embed(self, x):
        """Patch tokens plus positions: (B, R, T) -> (B, R * P, D)."""
        x = self.check_input(x)
        b, r, t = x.shape
        p = t // self.patch_size
        patches = x[:, :, : p * self.patch_size].reshape(b, r * p, self.patch_size)  # (B, N, p)
        tokens = self.patch_embed(patches)  # (B, N, D)
        pos = self.pos(p, r, device=x.device)  # (N, D)
        return tokens + pos.to(tokens.dtype)

    def forward(self, x, idx=None, idx_mask=None):
        """Encode all tokens, or only the tokens ``idx``.

        Parameters
        ----------
        x : tensor of shape (B, R, T)
            ROI time series.
        idx : int64 tensor of shape (B, K), optional
            Flat ROI-major token indices to keep (the context).
        idx_mask : bool tensor of shape (B, K), optional
            False where ``idx`` is padding (excluded from attention).

        Returns
        -------
        tokens : tensor of shape (B, K, D) (K = R * P without ``idx``)
        """
        x = self.embed(x)  # (B, N, D)
        if idx is not None:
            x = apply_masks(x, idx)  # (B, K, D)
        attn_mask = key_padding_bias(_padding_mask(idx_mask, idx) if idx is not None else None)
        for blk in self.blocks:
            x = blk(x, attn_mask)
        return self.norm(x)


class BrainJEPAPredictor(nn.Module):
    """Narrow ViT predicting target-token embeddings from context embeddings.

    ``Linear(D -> Dp)`` of the context tokens plus their positions, concatenated with a
    learned mask token plus the target positions; blocks of width Dp; LayerNorm;
    ``Linear(Dp -> D)``; only target positions are returned. The predictor has its own
    positional module (its own ``Linear(k -> Dp/2)``) over the same gradients.
    """

    def __init__(self, n_rois, *, embed_dim=768, predictor_embed_dim=384, depth=6,
                 num_heads=12, mlp_ratio=4.0, pos_embed="gradient", gradients=None,
                 n_gradients=30, drop_path=0.0, rescale_init=True):
        super().__init__()
        self.embed = nn.Linear(embed_dim, predictor_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_embed_dim))
        self.pos = BrainPositions(predictor_embed_dim, n_rois, mode=pos_embed,
                                  gradients=gradients, n_gradients=n_gradients)
        rates = np.linspace(0.0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList([
            Block(predictor_embed_dim, num_heads, mlp_ratio, True, rates[i])
            for i in range(depth)])
        self.norm = nn.LayerNorm(predictor_embed_dim, eps=LN_EPS)
        self.proj = nn.Linear(predictor_embed_dim, embed_dim)
        init_vit_weights(self)
        trunc_normal_(self.mask_token)
        if rescale_init:
            rescale_residual_weights(self.blocks)

    def forward(self, z, context_idx, target_idx, *, n_rois, n_time_patches,
                context_mask=None, target_mask=None):
        """Predict the target tokens.

        Parameters
        ----------
        z : tensor of shape (B, K_ctx, D)
            Context encoder output.
        context_idx : int64 tensor of shape (B, K_ctx)
        target_idx : int64 tensor of shape (B, K_tgt)
        n_rois, n_time_patches : int
            The token grid R x P.
        context_mask, target_mask : bool tensors of shapes (B, K_ctx), (B, K_tgt), optional
            False at padded indices.

        Returns
        -------
        pred : tensor of shape (B, K_tgt, D)
        """
        k_ctx = z.shape[1]
        pos = self.pos(n_time_patches, n_rois, device=z.device)  # (N, Dp)
        x = self.embed(z)  # (B, K_ctx, Dp)
        x = x + pos[context_idx].to(x.dtype)  # (B, K_ctx, Dp)
        t = self.mask_token.to(x.dtype) + pos[target_idx].to(x.dtype)  # (B, K_tgt, Dp)
        x = torch.cat([x, t], dim=1)  # (B, K_ctx + K_tgt, Dp)
        attn_mask = None
        if context_mask is not None or target_mask is not None:
            cm = _padding_mask(context_mask, context_idx)
            tm = _padding_mask(target_mask, target_idx)
            if cm is None:
                cm = torch.ones_like(context_idx, dtype=torch.bool)
            if tm is None:
                tm = torch.ones_like(target_idx, dtype=torch.bool)
            attn_mask = key_padding_bias(torch.cat([cm, tm], dim=1))
        for blk in self.blocks:
            x = blk(x, attn_mask)
        x = self.norm(x[:, k_ctx:])  # (B, K_tgt, Dp); LayerNorm is per token
        return self.proj(x)  # (B, K_tgt, D)


class BrainJEPA(nn.Module):
    """Brain-JEPA context encoder + predictor.

    Parameters
    ----------
    n_rois : int
        ROIs R of the input (450 in the reference: Tian-S3 50 subcortical, then
        Schaefer-400 17-network order).
    n_frames : int
        Nominal frames T per sample (reference: 160); the model accepts other lengths, the
        number of time patches P = T // patch_size is derived from each input.
    patch_size : int
        Frames per token (16).
    size : {"small", "base", "large"}
        Preset: small 384/12 blocks/6 heads, base 768/12/12 (the reference's main model),
        large 1024/24/16.
    embed_dim, depth, num_heads : int, optional
        Override the preset.
    predictor_embed_dim, predictor_depth : int
        Predictor width and blocks (384, 6); its heads are the encoder's.
    gradients : array-like of shape (n_rois, k) | str path (.npy or .csv), optional
        Group brain-gradient matrix (see :func:`neurofm.models.compute_gradients`). Stored
        as a buffer in the state dict. Without it (``pos_embed="gradient"``) the model has
        a zero placeholder of width ``n_gradients``: call :meth:`set_gradients` or load a
        state dict before the first forward pass.
    pos_embed : {"gradient", "sincos"}
        Brain gradient positioning, or the reference's 2-D sin-cos ablation.
    drop_path : float
        Encoder stochastic depth (the predictor uses none, as the reference).
    n_gradients : int, optional
        k when ``gradients`` is not given (default 30).
    mlp_ratio : float
        MLP width ratio (4).
    rescale_init : bool
        Rescale each block's ``attn.proj`` / ``mlp.fc2`` init by 1/sqrt(2 layer_id), as the
        reference model classes do. The reference's training script re-draws every Linear
        weight afterwards (``init_model``), which undoes this; ``False`` reproduces that.

    Attributes
    ----------
    encoder : BrainJEPAEncoder
        The context encoder.
    predictor : BrainJEPAPredictor
    config : dict
        JSON-safe constructor arguments (the gradients travel in the state dict).
    """

    def __init__(self, n_rois, n_frames, *, patch_size=16, size="base", embed_dim=None,
                 depth=None, num_heads=None, predictor_embed_dim=384, predictor_depth=6,
                 gradients=None, pos_embed="gradient", drop_path=0.0, n_gradients=None,
                 mlp_ratio=4.0, rescale_init=True):
        super().__init__()
        if size not in SIZES:
            raise NeurofmError(f"size must be one of {sorted(SIZES)}; got {size!r}")
        if pos_embed not in POS_EMBED_MODES:
            raise NeurofmError(f"pos_embed must be one of {POS_EMBED_MODES}; got {pos_embed!r}")
        d0, l0, h0 = SIZES[size]
        n_rois = _int("n_rois", n_rois)
        patch_size = _int("patch_size", patch_size)
        n_frames = _int("n_frames", n_frames, patch_size)
        embed_dim = _int("embed_dim", d0 if embed_dim is None else embed_dim)
        depth = _int("depth", l0 if depth is None else depth, 0)
        num_heads = _int("num_heads", h0 if num_heads is None else num_heads)
        predictor_embed_dim = _int("predictor_embed_dim", predictor_embed_dim)
        predictor_depth = _int("predictor_depth", predictor_depth, 0)
        for name, width in (("embed_dim", embed_dim), ("predictor_embed_dim",
                                                      predictor_embed_dim)):
            if width % num_heads or width % 4:
                raise NeurofmError(f"{name}={width} must be divisible by num_heads="
                                   f"{num_heads} and by 4 (two sin-cos halves)")
        if not 0.0 <= float(drop_path) < 1.0:
            raise NeurofmError(f"drop_path must be in [0, 1); got {drop_path!r}")
        g = load_gradients(gradients) if pos_embed == "gradient" else None
        if g is not None:
            if g.shape[0] != n_rois:
                raise NeurofmError(f"gradients has {g.shape[0]} rows; expected n_rois="
                                   f"{n_rois} (one row per ROI)")
            if n_gradients is not None and int(n_gradients) != g.shape[1]:
                raise NeurofmError(f"n_gradients={n_gradients} but gradients has "
                                   f"{g.shape[1]} columns")
            n_gradients = g.shape[1]
        n_gradients = _int("n_gradients", 30 if n_gradients is None else n_gradients)
        self.config = {
            "n_rois": n_rois, "n_frames": n_frames, "patch_size": patch_size, "size": size,
            "embed_dim": embed_dim, "depth": depth, "num_heads": num_heads,
            "predictor_embed_dim": predictor_embed_dim, "predictor_depth": predictor_depth,
            "pos_embed": pos_embed, "drop_path": float(drop_path),
            "n_gradients": n_gradients, "mlp_ratio": float(mlp_ratio),
            "rescale_init": bool(rescale_init),
        }
        self.encoder = BrainJEPAEncoder(
            n_rois, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, mlp_ratio=mlp_ratio, pos_embed=pos_embed, gradients=g,
            n_gradients=n_gradients, drop_path=float(drop_path), rescale_init=rescale_init)
        self.predictor = BrainJEPAPredictor(
            n_rois, embed_dim=embed_dim, predictor_embed_dim=predictor_embed_dim,
            depth=predictor_depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
            pos_embed=pos_embed, gradients=g, n_gradients=n_gradients,
            rescale_init=rescale_init)

    @classmethod
    def from_config(cls, config):
        """Rebuild from :attr:`config` (gradients then come from a state dict)."""
        return cls(**config)

    # ---------------------------------------------------------------- helpers
    @property
    def embed_dim(self):
        return self.config["embed_dim"]

    @property
    def n_rois(self):
        return self.config["n_rois"]

    @property
    def n_time_patches(self):
        """P at the nominal ``n_frames``."""
        return self.config["n_frames"] // self.config["patch_size"]

    def set_gradients(self, gradients):
        """Set the gradient matrix (n_rois, k) of the encoder and the predictor."""
        g = load_gradients(gradients)
        if self.config["pos_embed"] != "gradient":
            raise NeurofmError("set_gradients: the model uses pos_embed='sincos'")
        self.encoder.pos.set_gradients(g)
        self.predictor.pos.set_gradients(g)

    @property
    def gradients(self):
        """The gradient matrix buffer (n_rois, k), or None with sin-cos positions."""
        return self.encoder.pos.gradients if self.config["pos_embed"] == "gradient" else None

    # ---------------------------------------------------------------- forward
    def encode(self, x):
        """Embeddings of every token: (B, R, T) -> (B, R * (T // patch_size), D)."""
        return self.encoder(x)

    def forward(self, x, context_idx, target_idx, context_mask=None, target_mask=None):
        """Predict target-token embeddings from the context tokens.

        Parameters
        ----------
        x : tensor of shape (B, R, T)
        context_idx : int64 tensor of shape (B, K_ctx)
        target_idx : int64 tensor of shape (B, K_tgt)
        context_mask, target_mask : bool tensors, optional
            False at padding (``truncate_to_batch_min=False`` collation).

        Returns
        -------
        pred : tensor of shape (B, K_tgt, D)
        """
        x = self.encoder.check_input(x)
        r, p = x.shape[1], self.encoder.n_time_patches(x.shape[2])
        z = self.encoder(x, context_idx, context_mask)  # (B, K_ctx, D)
        return self.predictor(z, context_idx, target_idx, n_rois=r, n_time_patches=p,
                              context_mask=context_mask, target_mask=target_mask)
