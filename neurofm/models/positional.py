"""Positional embeddings of the (ROI, time patch) token grid.

Tokens are flattened ROI-major: ``token = roi * n_time_patches + t``. Both embeddings are
``concat([temporal, spatial])`` along the width, as in the Brain-JEPA reference (its
``GradTs_2dPE`` puts the time-index sin-cos first although it calls it ``emb_h``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import NeurofmError

__all__ = ["POS_EMBED_MODES", "BrainPositions", "sincos_1d"]

POS_EMBED_MODES = ("gradient", "sincos")


def sincos_1d(dim, positions):
    """Fixed 1-D sine-cosine embedding (MAE formula).

    Parameters
    ----------
    dim : int
        Width (even).
    positions : tensor of shape (M,)
        Positions (any real values).

    Returns
    -------
    emb : float32 tensor of shape (M, dim)
        ``[sin(p * w_i), cos(p * w_i)]`` with ``w_i = 10000 ** (-i / (dim / 2))``,
        i = 0 .. dim/2 - 1.
    """
    if dim % 2:
        raise NeurofmError(f"sin-cos width must be even; got {dim}")
    half = dim // 2
    omega = torch.exp(-math.log(10000.0) / half
                      * torch.arange(half, dtype=torch.float64, device=positions.device))
    out = positions.to(torch.float64)[:, None] * omega[None, :]  # (M, dim/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1).to(torch.float32)


class BrainPositions(nn.Module):
    """Positions of the ROI-major token grid: temporal sin-cos + spatial part.

    Parameters
    ----------
    dim : int
        Width D (divisible by 4).
    n_rois : int
        Number of ROIs R.
    mode : {"gradient", "sincos"}
        ``"gradient"``: brain gradient positioning. The spatial half is
        ``Linear(k -> D/2)(G)``, min-max scaled over the whole (R, D/2) matrix to [-1, 1]
        (the reference scales the tensor repeated over time patches, which has the same
        minimum and maximum). ``"sincos"``: the reference's ablation (``add_w="origin"``),
        a fixed sin-cos of the ROI index.
    gradients : array-like of shape (n_rois, k), optional
        The group gradient matrix G, kept as a buffer (saved in the state dict). Without
        it the buffer holds zeros until :meth:`set_gradients`; using it before raises.
    n_gradients : int
        k when ``gradients`` is not given.
    """

    def __init__(self, dim, n_rois, *, mode="gradient", gradients=None, n_gradients=30):
        super().__init__()
        if mode not in POS_EMBED_MODES:
            raise NeurofmError(f"pos_embed must be one of {POS_EMBED_MODES}; got {mode!r}")
        if dim % 4:
            raise NeurofmError(f"positional width must be divisible by 4; got {dim}")
        self.dim, self.n_rois, self.mode = int(dim), int(n_rois), mode
        self.proj = None
        if mode == "gradient":
            k = int(n_gradients) if gradients is None else int(gradients.shape[1])
            self.register_buffer("gradients", torch.zeros(self.n_rois, k))
            self.register_buffer("has_gradients", torch.zeros((), dtype=torch.bool))
            self.proj = nn.Linear(k, dim // 2)
            if gradients is not None:
                self.set_gradients(gradients)

    @torch.no_grad()
    def set_gradients(self, gradients):
        """Copy a gradient matrix of shape (n_rois, k) into the buffer."""
        g = torch.as_tensor(gradients, dtype=torch.float32)
        if g.shape != self.gradients.shape:
            raise NeurofmError(f"gradients must have shape {tuple(self.gradients.shape)} "
                               f"(n_rois, n_gradients); got {tuple(g.shape)}")
        if not torch.isfinite(g).all():
            raise NeurofmError("gradients contain NaN or infinite values")
        self.gradients.copy_(g)
        self.has_gradients.fill_(True)

    def spatial(self):
        """Spatial half of shape (R, D/2), before repetition over time patches."""
        if not torch.compiler.is_compiling() and not bool(self.has_gradients):
            raise NeurofmError("brain gradients were never set: pass gradients= to the model "
                               "(e.g. from neurofm.models.compute_gradients) or call "
                               "set_gradients() before the first forward pass")
        s = self.proj(self.gradients)  # (R, D/2)
        lo, hi = s.min(), s.max()
        return 2.0 * (s - lo) / (hi - lo).clamp_min(torch.finfo(s.dtype).tiny) - 1.0

    def forward(self, n_time_patches, n_rois=None, device=None):
        """Positions of every token.

        Parameters
        ----------
        n_time_patches : int
            P, the number of time patches of the input.
        n_rois : int, optional
            R of the input (only ``"sincos"`` accepts a value other than ``n_rois``).
        device : torch.device, optional
            Where to build a ``"sincos"`` table (gradient positions follow their buffer).

        Returns
        -------
        pos : tensor of shape (R * P, D)
            ROI-major: row ``roi * P + t``.
        """
        r = self.n_rois if n_rois is None else int(n_rois)
        p = int(n_time_patches)
        if self.proj is not None:
            device = self.gradients.device
        t_idx = torch.arange(p, device=device)
        temporal = sincos_1d(self.dim // 2, t_idx).to(device).repeat(r, 1)  # (R*P, D/2)
        if self.mode == "gradient":
            if r != self.n_rois:
                raise NeurofmError(f"gradient positions are for {self.n_rois} ROIs; the input "
                                   f"has {r}")
            spatial = self.spatial().repeat_interleave(p, dim=0)  # (R*P, D/2)
            temporal = temporal.to(spatial.dtype)
        else:
            roi_idx = torch.arange(r, device=device)
            spatial = sincos_1d(self.dim // 2, roi_idx).to(device).repeat_interleave(p, dim=0)
        return torch.cat([temporal, spatial], dim=1)  # (R*P, D)

    def extra_repr(self):
        return f"dim={self.dim}, n_rois={self.n_rois}, mode={self.mode!r}"
