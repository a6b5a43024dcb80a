"""Transformer building blocks: pre-norm ViT blocks on torch's fused attention.

Shapes use B batch, N tokens, D width, H heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Attention", "Block", "DropPath", "Mlp", "init_vit_weights", "key_padding_bias",
           "rescale_residual_weights", "trunc_normal_"]

LN_EPS = 1e-6


def trunc_normal_(tensor, std=0.02):
    """Fill ``tensor`` from N(0, std) truncated at +-2 (absolute, as timm / I-JEPA)."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2.0, b=2.0)


def key_padding_bias(mask):
    """Turn a key validity mask into a boolean attention mask for SDPA.

    Parameters
    ----------
    mask : bool tensor of shape (B, N) or None
        True where the token is real, False where it is padding.

    Returns
    -------
    attn_mask : bool tensor of shape (B, 1, 1, N) or None
        True where a key may be attended.
    """
    if mask is None:
        return None
    return mask.to(torch.bool)[:, None, None, :]


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch of whole samples with probability ``p``."""

    def __init__(self, p=0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x):  # x: (B, ...)
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self):
        return f"p={self.p}"


class Mlp(nn.Module):
    """Linear -> GELU -> Linear."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):  # (B, N, D) -> (B, N, D)
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention through :func:`torch.nn.functional.scaled_dot_product_attention`.

    Parameters
    ----------
    dim : int
        Width D (divisible by ``num_heads``).
    num_heads : int
        Heads H.
    qkv_bias : bool
        Bias on the fused query/key/value projection.
    """

    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, attn_bias=None):
        b, n, d = x.shape
        h = self.num_heads
        qkv = self.qkv(x).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)  # (3, B, H, N, D/H)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_bias)
        y = y.transpose(1, 2).reshape(b, n, d)  # (B, N, D)
        return self.proj(y)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x)).

    Parameters
    ----------
    dim, num_heads : int
        Width and heads.
    mlp_ratio : float
        Hidden width of the MLP as a multiple of ``dim``.
    qkv_bias : bool
        Bias on the query/key/value projection.
    drop_path : float
        Stochastic-depth probability of both residual branches.
    """

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, drop_path=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x, attn_bias=None):  # (B, N, D) -> (B, N, D)
        x = x + self.drop_path(self.attn(self.norm1(x), attn_bias))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def init_vit_weights(module, std=0.02):
    """Reference initialisation: trunc-normal Linear/Conv weights, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def rescale_residual_weights(blocks):
    """Divide each block's ``attn.proj`` and ``mlp.fc2`` weights by sqrt(2 * layer_id).

    ``layer_id`` counts from 1, so the first block is scaled by 1/sqrt(2).
    """
    for layer_id, blk in enumerate(blocks, start=1):
        scale = math.sqrt(2.0 * layer_id)
        blk.attn.proj.weight.div_(scale)
        blk.mlp.fc2.weight.div_(scale)
