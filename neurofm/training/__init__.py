"""Training with Lightning: LightningModules, the LightningDataModule, callbacks.

The only package (with :mod:`neurofm.cli`) that imports ``lightning``; its names are imported
lazily so that ``import neurofm.training`` stays cheap.
"""

from __future__ import annotations

import importlib

#: public name -> module (relative to this package)
_LAZY = {
    "BrainDataModule": "datamodule",
    "BrainMAEModule": "brainmae",
    "JEPAModule": "brainjepa",
    "MEGGPTModule": "meggpt",
    "NeurofmModule": "base",
    "TemperatureAnnealing": "tokenizer",
    "TokenDataModule": "meggpt",
    "TokenizerModule": "tokenizer",
    "train_tokenizer_net": "tokenizer",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'neurofm.training' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
