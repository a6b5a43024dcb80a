"""Readers that turn recording files into the canonical Dataset.

:func:`read` dispatches by file extension (or, for directories, by what the directory holds)
to the reader registered for it and returns one Dataset; :func:`read_all` returns a list for
any file (one Dataset per recording it holds). Each format module registers itself in
``_BUILTIN`` below by dotted path, so nothing heavy (MNE, nilearn, pynwb) is imported until a
file is read; every reader is also reachable as ``neurofm.io.<name>`` (imported on first
access).
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FormatError, NeurofmError

#: Public functions of the format modules, imported on first access as ``neurofm.io.<name>``.
_LAZY = {
    "read_ephys": "ephys", "from_mne": "ephys", "to_mne": "ephys",
    "read_fmri": "fmri", "read_roi_timeseries": "fmri",
    "read_calcium": "calcium",
    "read_celegans": "celegans", "resample_celegans": "celegans",
    "find_recordings": "bids", "is_bids_root": "bids", "parse_entities": "bids",
    "sidecar_metadata": "bids",
}

__all__ = sorted([
    "Reader", "find_reader", "read", "read_all", "readers", "register_reader", *_LAZY,
])


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
    params : str | None
        "module:function" whose signature lists the keyword arguments :func:`read` accepts
        for this reader (default: the reader itself), for a target that is a thin wrapper.
    """

    name: str
    target: str
    extensions: tuple = field(default_factory=tuple)
    sniff: str | None = None
    params: str | None = None

    def load(self):
        return _load(self.target)

    def check_kwargs(self, path, kwargs):
        """Raise a :class:`NeurofmError` naming the reader for an option it does not take.

        A reader with ``**kwargs`` (:func:`~neurofm.io.ephys.read_ephys`, which passes them
        on to MNE) checks them itself.
        """
        func = _load(self.params or self.target)
        params = list(inspect.signature(func).parameters.values())[1:]  # after the path
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return
        accepted = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                         p.KEYWORD_ONLY)]
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise NeurofmError(
                f"{path}: unknown option(s) {unknown} for the {self.name} reader "
                f"({func.__module__}.{func.__name__}); it takes {accepted}")


# The raw formats mne.io.read_raw reads, by extension.
_EPHYS_EXTENSIONS = (
    ".fif", ".fif.gz", ".edf", ".bdf", ".gdf", ".vhdr", ".ahdr", ".set", ".cnt", ".sqd",
    ".con", ".ds", ".mff", ".nxe", ".lay", ".eeg", ".data", ".bin", ".mef", ".cdt", ".snirf",
    ".nedf", ".e",
)

_BUILTIN = [
    Reader("ephys", "neurofm.io.ephys:read_ephys", _EPHYS_EXTENSIONS,
           sniff="neurofm.io.ephys:_is_ephys_dir"),
    Reader("fmri", "neurofm.io.fmri:_read_fmri_dispatch", (".nii", ".nii.gz"),
           params="neurofm.io.fmri:read_fmri"),
    Reader("calcium", "neurofm.io.calcium:read_calcium", (".nwb", ".hdf5", ".h5"),
           sniff="neurofm.io.calcium:_is_suite2p_dir"),
    Reader("celegans", "neurofm.io.celegans:read_celegans", (".parquet",)),
]


#: Lookup order of :func:`read`; :func:`register_reader` extends it.
_REGISTRY: list[Reader] = list(_BUILTIN)


def register_reader(name, target, extensions=(), *, sniff=None, first=False, params=None):
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
    params : str | callable | None
        The function whose signature lists the options :func:`read` accepts (default: the
        reader itself).
    """
    if callable(target):
        module = target.__module__
        target = f"{module}:{target.__name__}"
    if callable(sniff):
        sniff = f"{sniff.__module__}:{sniff.__name__}"
    if callable(params):
        params = f"{params.__module__}:{params.__name__}"
    reader = Reader(name, target, tuple(e.lower() for e in extensions), sniff, params)
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
    """Read any supported recording into one canonical Dataset.

    Parameters
    ----------
    path : str | os.PathLike
        A file (or directory format) whose type is recognised by its extension or content.
    **kwargs
        Options of the format's reader, checked against its signature (e.g. ``montage=``,
        ``preload=``, ``on_nonfinite=`` for :func:`~neurofm.io.ephys.read_ephys`, plus the
        options of MNE's reader for that format such as ``infer_types=True`` or ``eog=``;
        ``atlas=`` for :func:`~neurofm.io.fmri.read_fmri`).

    Returns
    -------
    ds : xarray.Dataset
        The canonical recording (see :mod:`neurofm.schema`).

    Raises
    ------
    FormatError
        Missing file, unknown format, or a file holding several recordings (use
        :func:`read_all`, or the format's reader to choose one).
    NeurofmError
        An option the reader does not take.
    """
    p, reader = _resolve(path)
    reader.check_kwargs(p, kwargs)
    result = reader.load()(p, **kwargs)
    if not isinstance(result, list):
        return result
    if len(result) == 1:
        return result[0]
    hint = {"celegans": " or neurofm.io.read_celegans(path, worms=...) for one worm"}
    raise FormatError(
        f"{path}: holds {len(result)} recordings; read() returns one Dataset. Use "
        f"neurofm.io.read_all(path) for the list{hint.get(reader.name, '')}")


def read_all(path, **kwargs):
    """Read every recording a file holds, as a list (one element for most formats).

    Parameters
    ----------
    path : str | os.PathLike
        A file or directory format, as for :func:`read`.
    **kwargs
        Options of the format's reader (see :func:`read`).

    Returns
    -------
    recordings : list of xarray.Dataset
        One canonical recording per recording in the file (one per worm for the C. elegans
        parquet files; a single-element list otherwise).
    """
    p, reader = _resolve(path)
    reader.check_kwargs(p, kwargs)
    result = reader.load()(p, **kwargs)
    return list(result) if isinstance(result, list) else [result]


def _resolve(path):
    if not isinstance(path, (str, os.PathLike)):
        raise FormatError(f"path must be a str or os.PathLike; got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise FormatError(f"{path}: file not found")
    return p, find_reader(p)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        globals()[name] = value  # import once
        return value
    raise AttributeError(f"module 'neurofm.io' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
