"""Continuous patch embeddings: non-overlapping patches of p samples per channel -> Linear(p -> D).

The embedding of Brain-JEPA (16-frame patches per ROI) and BrainMAE; the weights train with
the model that uses them, so :meth:`PatchTokenizer.fit` learns nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .._checks import check_positive_int
from ..errors import DataError
from ._base import Tokenizer, register
from ._common import (
    WEIGHTS_FILE,
    as_signal,
    iter_recordings,
    load_state_dict_strict,
    read_torch_state,
    restore,
    write_config,
)

__all__ = ["PatchTokenizer"]


@register
class PatchTokenizer(nn.Module, Tokenizer):
    """Linear embedding of non-overlapping patches, shared across channels.

    Parameters
    ----------
    patch_size : int
        Samples per patch p; T must be a multiple of it.
    d_model : int
        Embedding width D.
    bias : bool
        Learned bias of the projection.
    pos_dim : int, optional
        Add ``Linear(pos_dim -> D)`` of each channel's position (BrainLM: the ROI's xyz
        centroid, ``pos_dim=3``); ``ch_pos`` is then required by ``forward`` / ``encode`` /
        ``decode``.

    Notes
    -----
    :meth:`decode` is the least-squares inverse of the projection; it is exact when
    ``d_model >= patch_size`` (the projection then has full column rank for generic weights).
    ``vocab_size`` is None: the tokens are continuous.
    """

    def __init__(self, patch_size, d_model, bias=True, pos_dim=None):
        super().__init__()
        self.patch_size = check_positive_int("patch_size", patch_size)
        self.d_model = check_positive_int("d_model", d_model)
        self.proj = nn.Linear(self.patch_size, self.d_model, bias=bias)
        self.pos_dim = None if pos_dim is None else check_positive_int("pos_dim", pos_dim)
        self.pos_proj = None if pos_dim is None else nn.Linear(self.pos_dim, self.d_model)

    def n_patches(self, n_times):
        """Patches per channel for ``n_times`` samples (``n_times // patch_size``)."""
        return int(n_times) // self.patch_size

    @property
    def vocab_size(self):
        """None: patch embeddings are continuous."""
        return None

    def _position_term(self, ch_pos, lead_shape, like):
        """Linear embedding of channel positions, broadcast over patches: (..., C, 1, D)."""
        if self.pos_proj is None:
            if ch_pos is not None:
                raise DataError("ch_pos was given but this PatchTokenizer has no pos_dim")
            return None
        if ch_pos is None:
            raise DataError(f"this PatchTokenizer embeds channel positions (pos_dim="
                            f"{self.pos_dim}); pass ch_pos of shape (C, {self.pos_dim})")
        pos = torch.as_tensor(ch_pos).to(like.device, like.dtype)
        if pos.shape[-1] != self.pos_dim or pos.shape[-2] != lead_shape[-1] or pos.ndim > 3:
            raise DataError(f"ch_pos must have shape (C, {self.pos_dim}) or (B, C, "
                            f"{self.pos_dim}) with C = {lead_shape[-1]}; got "
                            f"{tuple(pos.shape)}")
        if not torch.isfinite(pos).all():
            raise DataError("ch_pos contains NaN or Inf (set unknown positions to 0 and mask "
                            "those channels)")
        return self.pos_proj(pos).unsqueeze(-2)  # (..., C, 1, D)

    def forward(self, x, ch_pos=None):
        """Embed patches.

        Parameters
        ----------
        x : Tensor of shape (..., C, T), T a multiple of ``patch_size``
        ch_pos : Tensor of shape (C, pos_dim) or (B, C, pos_dim), optional
            Channel positions (only with ``pos_dim``).

        Returns
        -------
        e : Tensor of shape (..., C, T // patch_size, D)
        """
        T = x.shape[-1]
        if T % self.patch_size:
            raise DataError(f"x has {T} samples, not a multiple of patch_size="
                            f"{self.patch_size}; crop it to {self.n_patches(T) * self.patch_size}")
        patches = x.reshape(*x.shape[:-1], T // self.patch_size, self.patch_size)  # (.., N, p)
        e = self.proj(patches)  # (..., C, N, D)
        pos = self._position_term(ch_pos, x.shape[:-1], e)
        return e if pos is None else e + pos

    def fit(self, data):
        """Check ``data`` (nothing is learned outside the model that trains these weights).

        Returns
        -------
        self
        """
        for rec in iter_recordings(data):
            if rec.shape[-1] % self.patch_size:
                raise DataError(f"data has {rec.shape[-1]} samples, not a multiple of "
                                f"patch_size={self.patch_size}")
        return self

    def encode(self, x, ch_pos=None):
        """Patch embeddings.

        Parameters
        ----------
        x : array-like of shape (C, T) or (B, C, T)
        ch_pos : array-like of shape (C, pos_dim) or (B, C, pos_dim), optional
            Channel positions (only with ``pos_dim``).

        Returns
        -------
        e : same kind as ``x``, float32 of shape (C, N, D) or (B, C, N, D) with
            N = T // patch_size (numpy input gives a detached numpy result)
        """
        t, layout = as_signal(x, min_times=self.patch_size)
        param = self.proj.weight
        if ch_pos is not None and not layout.batched and torch.as_tensor(ch_pos).ndim == 3:
            raise DataError("ch_pos has a batch axis but x does not")
        e = self(t.to(param.device, param.dtype), ch_pos)
        if not layout.torch_in:
            e = e.detach()
        return restore(e, layout)

    def decode(self, tokens, ch_pos=None):
        """Least-squares inverse of the embedding.

        Parameters
        ----------
        tokens : array-like of shape (C, N, D) or (B, C, N, D)
        ch_pos : array-like of shape (C, pos_dim) or (B, C, pos_dim), optional
            The positions given to :meth:`encode` (only with ``pos_dim``).

        Returns
        -------
        x : same kind, float32 of shape (C, N * p) or (B, C, N * p)
        """
        torch_in = isinstance(tokens, torch.Tensor)
        e = tokens.detach() if torch_in else torch.as_tensor(tokens)
        if e.ndim not in (3, 4) or e.shape[-1] != self.d_model:
            raise DataError(f"tokens must have shape (C, N, {self.d_model}) or "
                            f"(B, C, N, {self.d_model}); got {tuple(e.shape)}")
        if not torch.isfinite(e).all():
            raise DataError("tokens contain NaN or Inf")
        batched = e.ndim == 4
        e = (e if batched else e[None]).to(self.proj.weight.device, torch.float32)
        W = self.proj.weight.detach()  # (D, p)
        if self.proj.bias is not None:
            e = e - self.proj.bias.detach()
        with torch.no_grad():
            pos = self._position_term(ch_pos, e.shape[:-2], e)
        if pos is not None:
            e = e - pos
        patches = e @ torch.linalg.pinv(W).T  # (B, C, N, p)
        x = patches.reshape(*patches.shape[:-2], -1)  # (B, C, N * p)
        if not batched:
            x = x[0]
        return x if torch_in else x.cpu().numpy()

    def save(self, path):
        """Write ``tokenizer.json`` and ``weights.pt`` into directory ``path``."""
        write_config(path, type(self).__name__,
                     {"patch_size": self.patch_size, "d_model": self.d_model,
                      "bias": self.proj.bias is not None, "pos_dim": self.pos_dim})
        torch.save({k: v.detach().cpu() for k, v in self.state_dict().items()},
                   Path(path) / WEIGHTS_FILE)

    @classmethod
    def _from_saved(cls, path, config):
        tok = cls(config["patch_size"], config["d_model"], bias=config["bias"],
                  pos_dim=config.get("pos_dim"))
        load_state_dict_strict(tok, read_torch_state(Path(path) / WEIGHTS_FILE),
                               Path(path) / WEIGHTS_FILE)
        return tok
