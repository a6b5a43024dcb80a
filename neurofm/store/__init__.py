"""Training stores: one zarr group per recording plus a parquet manifest.

Modules
-------
core
    :class:`Store`, :func:`open_store`, :func:`write_store`, :func:`open_recording` and
    :func:`index_store`.
ids
    Recording ids (:func:`recording_id`, :func:`entity_id`) and version folder names.
manifest
    The parquet manifest (:data:`MANIFEST_COLUMNS`), written atomically.
staging
    Atomic writes: the store lock, staged recordings, :func:`write_recording`.
fastread
    The memory-mapped window path of uncompressed local stores.
verify
    :func:`~neurofm.store.verify.verify_store` (``Store.verify``, ``neurofm verify``).
errors
    The store's error classes (all :class:`~neurofm.errors.NeurofmError`).
convert
    :func:`convert_files` and :func:`convert_bids`: recording files or a BIDS tree into a
    store (what ``neurofm convert`` runs).
summary
    Human-readable summaries of recordings and stores (``neurofm info``).
"""

from __future__ import annotations

import importlib

from .core import (
    MANIFEST_COLUMNS,
    Store,
    describe,
    entity_id,
    index_store,
    is_store,
    open_recording,
    open_store,
    recording_id,
    write_recording,
    write_store,
)
from .errors import (
    ArgumentTypeError,
    ChannelIndexError,
    ConcurrentWriteError,
    CorruptStoreError,
    RecordingNotFound,
    WindowIndexError,
)
from .verify import VerifyReport

__all__ = [
    "MANIFEST_COLUMNS",
    "ArgumentTypeError",
    "ChannelIndexError",
    "ConcurrentWriteError",
    "CorruptStoreError",
    "RecordingNotFound",
    "Store",
    "VerifyReport",
    "WindowIndexError",
    "convert_bids",
    "convert_files",
    "describe",
    "entity_id",
    "index_store",
    "is_store",
    "open_recording",
    "open_store",
    "recording_id",
    "write_recording",
    "write_store",
]

_LAZY = {"convert_bids": "convert", "convert_files": "convert"}


def __getattr__(name):
    # conversion imports the readers; keep `import neurofm.store` light
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'neurofm.store' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
