"""neurofm: one xarray layout for brain recordings, training stores, foundation models and
representational analyses.

Submodules are imported lazily so that ``import neurofm`` stays light::

    import neurofm as nf
    ds = nf.io.read_ephys("sub-01_eeg.edf")
"""

from __future__ import annotations

import importlib

from ._logging import set_log_level
from ._version import __version__
from .errors import DataError, FormatError, NeurofmError, NeurofmWarning, SchemaError

__all__ = [
    "DataError",
    "FormatError",
    "NeurofmError",
    "NeurofmWarning",
    "SchemaError",
    "__version__",
    "analysis",
    "datasets",
    "io",
    "pipelines",
    "preprocessing",
    "schema",
    "set_log_level",
    "store",
    "viz",
]

_SUBMODULES = {"schema", "io", "store", "preprocessing", "analysis", "viz", "cli", "pipelines",
               "datasets"}


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'neurofm' has no attribute {name!r}")
