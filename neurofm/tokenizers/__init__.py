"""Tokenizers: signals of shape (C, T) or (B, C, T) to tokens and back.

Every tokenizer has ``fit(data)`` (where something is learned), ``encode(x)``,
``decode(tokens)``, ``vocab_size``, ``save(path)`` / ``load(path)`` and ``pve(x)``.

Classes
-------
PatchTokenizer
    Continuous patch embeddings (Brain-JEPA / BrainMAE style), an ``nn.Module``.
MuLawTokenizer, QuantileTokenizer
    Fixed per-sample tokens (the MEG-GPT baselines).
MEGGPTTokenizer
    The learned per-sample tokenizer of MEG-GPT, trainable with Lightning and able to load
    the released weights (``from_pretrained``).
VQTokenizer
    TFM-Tokenizer-style time-frequency vector-quantized tokenizer (EMA codebook).

``neurofm.tokenizers.load(path)`` reads any saved tokenizer.
"""

from __future__ import annotations

from ._base import REGISTRY, Tokenizer
from ._common import pve, read_header
from .meggpt import MEGGPTTokenizer, annealed_temperature, window_starts
from .patch import PatchTokenizer
from .scalar import MuLawTokenizer, QuantileTokenizer
from .vq import VectorQuantizerEMA, VQTokenizer

__all__ = [
    "MEGGPTTokenizer",
    "MuLawTokenizer",
    "PatchTokenizer",
    "QuantileTokenizer",
    "Tokenizer",
    "VQTokenizer",
    "VectorQuantizerEMA",
    "annealed_temperature",
    "load",
    "pve",
    "window_starts",
]


def load(path):
    """Load a tokenizer saved with ``save(path)``, whatever its class.

    Parameters
    ----------
    path : str or Path
        The directory written by ``save``.

    Returns
    -------
    tokenizer : Tokenizer
    """
    from ..errors import FormatError

    name, config = read_header(path)
    if name not in REGISTRY:
        raise FormatError(f"{path}: unknown tokenizer class {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name]._from_saved(path, config)
