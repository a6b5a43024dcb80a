"""Store checks: every chunk present and matching its checksum, manifest against groups.

:func:`verify_store` (what :meth:`Store.verify` and ``neurofm verify`` run) reads every chunk
of every listed recording through zarr, which checks the crc32c checksum each chunk carries,
and reports every problem at once, each naming the store, the recording and the chunk.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field

import numpy as np

from ._fsutil import quiet_zarr
from .ids import parse_version
from .manifest import MANIFEST_NAME, TMP_PREFIX, TOKEN_ATTR

__all__ = ["VerifyReport", "chunk_keys", "missing_chunks", "verify_path", "verify_store"]


@dataclass
class VerifyReport:
    """Outcome of :meth:`~neurofm.store.Store.verify`.

    Attributes
    ----------
    path : str
        The store.
    problems : list of str
        Every problem found (damage); empty for a sound store.
    notes : list of str
        Harmless findings (folders no manifest row lists, left by an interrupted writer).
    n_recordings, n_chunks : int
        What was checked.
    """

    path: str
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    n_recordings: int = 0
    n_chunks: int = 0

    @property
    def ok(self):
        """True when no problem was found."""
        return not self.problems

    def __bool__(self):
        return self.ok

    def __str__(self):
        head = (f"store {self.path}: {self.n_recordings} recordings, {self.n_chunks} chunks "
                f"checked, {len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}")
        lines = [head] + [f"  - {p}" for p in self.problems]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def raise_for_problems(self):
        """Raise :class:`~neurofm.store.errors.CorruptStoreError` when there are problems."""
        if self.problems:
            from .errors import CorruptStoreError

            raise CorruptStoreError(self)
        return self


def chunk_keys(arr):
    """``{grid coordinates: chunk key}`` of every chunk of a zarr array."""
    meta = arr.metadata
    grid = [math.ceil(s / c) if s else 0 for s, c in zip(arr.shape, arr.chunks)]
    return {coords: meta.encode_chunk_key(coords)
            for coords in itertools.product(*(range(n) for n in grid))}


def _present(fs, base):
    """Chunk keys (relative to an array folder) of the files under ``base``."""
    if fs is None:
        found = set()
        for dirpath, _, files in os.walk(base):
            rel = os.path.relpath(dirpath, base)
            for name in files:
                if name != "zarr.json":
                    found.add(name if rel == "." else "/".join([*rel.split(os.sep), name]))
        return found
    if not fs.exists(base):
        return set()
    return {p[len(base) + 1:] for p in fs.find(base) if not p.endswith("/zarr.json")}


def missing_chunks(fs, version_root, group, arrays=None):
    """``[(array name, chunk key)]`` of chunk files absent from a version folder."""
    missing = []
    for name, arr in group.arrays():
        if arrays is not None and name not in arrays:
            continue
        base = f"{version_root}/{name}" if fs is not None else os.path.join(version_root,
                                                                              name)
        present = _present(fs, base)
        missing += [(name, key) for key in chunk_keys(arr).values() if key not in present]
    return missing


def _names(store):
    if store._remote:
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in store._fs.ls(store._root,
                                                                          detail=False)]
    return os.listdir(store._root)


def verify_store(store, *, check_data=True):
    """Check a store; return a :class:`VerifyReport` listing every problem.

    Parameters
    ----------
    store : Store
        Opened without the open-time checks (``Store(path, _check=False)``) so that a
        damaged store can still be inspected.
    check_data : bool
        Read every chunk (checksums). False checks only presence and metadata.

    Returns
    -------
    report : VerifyReport
    """
    import zarr

    report = VerifyReport(path=store.path)
    manifest = store._manifest
    dup = sorted(set(manifest["id"][manifest["id"].duplicated()]))
    if dup:
        report.problems.append(f"{store.path}: manifest lists ids more than once: {dup}")
    fs = store._fs if store._remote else None
    names = set(_names(store))
    for row in manifest.itertuples(index=False):
        rec = f"{store.path}: recording {row.id!r} ({row.path})"
        report.n_recordings += 1
        if row.path not in names:
            report.problems.append(f"{rec}: folder is missing")
            continue
        root = store._join(row.path)
        zjson = f"{root}/zarr.json" if fs is not None else os.path.join(root, "zarr.json")
        if not (fs.exists(zjson) if fs is not None else os.path.exists(zjson)):
            report.problems.append(f"{rec}: group metadata zarr.json is missing")
            continue
        try:
            with quiet_zarr():
                group = zarr.open_group(store._location(row.path), mode="r",
                                        storage_options=store.storage_options or None)
                arrays = dict(group.arrays())
        except Exception as err:  # noqa: BLE001 - reported, the check goes on
            report.problems.append(f"{rec}: unreadable zarr group: {err}")
            continue
        if "signal" not in arrays:
            report.problems.append(f"{rec}: no 'signal' array")
            continue
        sig = arrays["signal"]
        expected = (int(row.n_channels), int(row.n_times))
        if tuple(sig.shape) != expected:
            report.problems.append(f"{rec}: signal has shape {tuple(sig.shape)} but the "
                                   f"manifest says (n_channels, n_times) = {expected}")
        token = str(group.attrs.get(TOKEN_ATTR, ""))
        if getattr(row, "token", "") and token != row.token:
            report.problems.append(f"{rec}: write token {token!r} differs from the "
                                   f"manifest's {row.token!r} (replaced outside the store)")
        missing = missing_chunks(fs, root, group)
        for name, key in missing:
            report.problems.append(f"{rec}: array {name!r} chunk {key} is missing")
        missing = set(missing)
        for name, arr in arrays.items():
            for coords, key in chunk_keys(arr).items():
                report.n_chunks += 1
                if not check_data or (name, key) in missing:
                    continue
                try:
                    with quiet_zarr():
                        block = arr.get_block_selection(coords)
                except Exception as err:  # noqa: BLE001 - reported, the check goes on
                    report.problems.append(f"{rec}: array {name!r} chunk {key} is corrupt "
                                           f"({type(err).__name__}: {err})")
                    continue
                if name == "signal" and block.dtype.kind == "f" and \
                        not np.isfinite(block).all() and "recorded" not in arrays:
                    report.problems.append(f"{rec}: signal chunk {key} holds NaN/Inf")
    listed = set(manifest["path"])
    for name in sorted(names):
        if name.startswith(TMP_PREFIX) and not name.endswith(MANIFEST_NAME):
            report.notes.append(f"{name}: temporary left by an interrupted writer")
        elif parse_version(name) is not None and name not in listed:
            report.notes.append(f"{name}: recording folder no manifest row lists")
    return report


def verify_path(path, *, check_data=True, storage_options=None):
    """:func:`verify_store` on a store location, reporting an unopenable store as a problem.

    Parameters
    ----------
    path : str | os.PathLike
        Store directory or fsspec URL.
    check_data : bool
        Read every chunk (checksums).
    storage_options : dict, optional
        fsspec options for URLs.

    Returns
    -------
    report : VerifyReport
    """
    from ..errors import FormatError
    from ._fsutil import is_url, local_path
    from .core import Store

    path = os.fspath(path)
    if not is_url(path) and not os.path.isdir(local_path(path)):
        return VerifyReport(path=path, problems=[f"{path}: store not found (no such "
                                                 "directory)"])
    try:
        store = Store(path, storage_options=storage_options, _check=False)
    except FormatError as err:
        return VerifyReport(path=path, problems=[str(err)])
    return verify_store(store, check_data=check_data)
