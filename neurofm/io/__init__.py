"""Readers that turn recording files into the canonical Dataset.

:func:`read` dispatches by file extension (or, for directories, by what the directory holds)
to the reader registered for it. Each format module registers itself in ``_BUILTIN`` below by
dotted path, so nothing heavy (MNE, nilearn, pynwb) is imported until a file is read.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FormatError

__all__ = [
    "find_reader", "from_mne", "read", "read_ephys", "readers", "register_reader", "to_mne",
]


@dataclass(frozen=True)
class Reader:
    """A registered reader.

    Attributes
    ----------
    name : str
        Short name (e.g. "ephys").
    target : str
        "module:function" of the reader; imported on first use.
    extensions : tuple of str
        Lower-case file suffixes it reads (".edf", ".nii.gz", ...).
    sniff : str | None
        "module:function" of a predicate ``sniff(path) -> bool`` for directories.
    """

    name: str
    target: str
    extensions: tuple = field(default_factory=tuple)
    sniff: str | None = None

    def load(self):
        return _load(self.target)


# The raw formats mne.io.read_raw reads, by extension.
_EPHYS_EXTENSIONS = (
    ".fif", ".fif.gz", ".edf", ".bdf", ".gdf", ".vhdr", ".ahdr", ".set", ".cnt", ".sqd",
    ".con", ".ds", ".mff", ".nxe", ".lay", ".eeg", ".data", ".bin", ".mef", ".cdt", ".snirf",
    ".nedf", ".e",
)

_BUILTIN = [
    Reader("ephys", "neurofm.io.ephys:read_ephys", _EPHYS_EXTENSIONS,
           sniff="neurofm.io.ephys:_is_ephys_dir"),
    Reader("fmri", "neurofm.io.fmri:_read_fmri_dispatch", (".nii", ".nii.gz")),
    Reader("calcium", "neurofm.io.calcium:read_calcium", (".nwb", ".hdf5", ".h5"),
           sniff="neurofm.io.calcium:_is_suite2p_dir"),
    Reader("celegans", "neurofm.io.celegans:read_celegans", (".parquet",)),
]


#: Lookup order of :func:`read`; :func:`register_reader` extends it.
_REGISTRY: list[Reader] = list(_BUILTIN)


def register_reader(name, target, extensions=(), *, sniff=None, first=False):
    """Register a reader for :func:`read`.

    Parameters
    ----------
    name : str
        Short name of the format family.
    target : str | callable
        The reader, or its "module:function" path (imported lazily).
    extensions : sequence of str
        File suffixes, e.g. ``(".nii", ".nii.gz")``; matched case-insensitively, longest first.
    sniff : str | callable | None
        For directory formats: a predicate ``sniff(path) -> bool``.
    first : bool
        Put the reader before the existing ones (to override a suffix).
    """
    if callable(target):
        module = target.__module__
        target = f"{module}:{target.__name__}"
    if callable(sniff):
        sniff = f"{sniff.__module__}:{sniff.__name__}"
    reader = Reader(name, target, tuple(e.lower() for e in extensions), sniff)
    if first:
        _REGISTRY.insert(0, reader)
    else:
        _REGISTRY.append(reader)
    return reader


def readers():
    """Return the registered readers (in lookup order)."""
    return list(_REGISTRY)


def _load(target):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def find_reader(path):
    """The registered :class:`Reader` for ``path`` (by content for directories, else by the
    longest matching extension); :class:`FormatError` when none fits."""
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        for reader in _REGISTRY:
            if reader.sniff and _load(reader.sniff)(p):
                return reader
        # directory formats known by suffix (CTF .ds, EGI .mff)
    matches = [(len(ext), r) for r in _REGISTRY for ext in r.extensions if name.endswith(ext)]
    if matches:
        return max(matches, key=lambda m: m[0])[1]
    known = sorted({e for r in _REGISTRY for e in r.extensions})
    what = "directory" if p.is_dir() else "file"
    raise FormatError(
        f"{path}: no reader for this {what}; expected one of the extensions {known}"
        + (" or a directory format (suite2p plane folder, CTF .ds, EGI .mff)" if p.is_dir()
           else "")
    )


def read(path, **kwargs):
    """Read any supported recording into the canonical Dataset.

    Parameters
    ----------
    path : str | os.PathLike
        A file (or directory format) whose type is recognised by its extension or content.
    **kwargs
        Passed to the format's reader (e.g. ``montage=`` for :func:`read_ephys`).

    Returns
    -------
    ds : xarray.Dataset
        The canonical recording (see :mod:`neurofm.schema`); some readers return a list
        (one Dataset per worm for the C. elegans dataset).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise FormatError(f"path must be a str or os.PathLike; got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise FormatError(f"{path}: file not found")
    reader = find_reader(p)
    return reader.load()(p, **kwargs)


def __getattr__(name):
    if name in ("read_ephys", "from_mne", "to_mne"):
        from . import ephys

        return getattr(ephys, name)
    raise AttributeError(f"module 'neurofm.io' has no attribute {name!r}")
