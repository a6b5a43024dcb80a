"""Training stores: one zarr group per recording plus a parquet manifest.

A store is a directory (local or any fsspec URL)::

    store/
      manifest.parquet          one row per complete recording
      <id>.zarr/                the continuous canonical Dataset, chunked along time
                                with all channels in one chunk

Writes are atomic: a recording is written under a temporary name and renamed into place,
then the manifest is rewritten under a temporary name and renamed. A writer killed at any
point leaves a store that opens and lists only complete recordings.

Windows are cut at training time with :meth:`Store.read_window`. On a local file system,
uncompressed stores (the default) are read by memory-mapping zarr's chunk files directly,
which keeps a random window read in the tens of microseconds; compressed or remote stores go
through zarr.
"""

from __future__ import annotations

import os
import re
import uuid
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .._logging import logger, progress, use_log_level
from ..errors import DataError, FormatError, NeurofmError
from ..schema import validate

__all__ = [
    "MANIFEST_COLUMNS",
    "Store",
    "entity_id",
    "index_store",
    "is_store",
    "open_recording",
    "open_store",
    "recording_id",
    "write_recording",
    "write_store",
]

MANIFEST_NAME = "manifest.parquet"
MANIFEST_COLUMNS = ("id", "subject", "session", "task", "run", "modality", "n_channels",
                    "n_times", "sfreq", "split", "path")
_TMP_PREFIX = ".tmp-"
#: Target size of one chunk (all channels x chunk samples x 4 bytes) when chunk_seconds=None.
CHUNK_BYTES = 1 << 20


# --------------------------------------------------------------------------------------------
# file-system helpers (local paths and fsspec URLs)
# --------------------------------------------------------------------------------------------
def _is_url(path):
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def _local_path(path):
    path = os.fspath(path)
    path = path.removeprefix("file://")
    return path


def _fs(path, storage_options):
    import fsspec

    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    return fs, root.rstrip("/")


@contextmanager
def _quiet_zarr():
    """Silence zarr's notes on consolidated metadata and fixed-width string dtypes.

    Both are known and deliberate: consolidated metadata saves one request per variable on
    object storage, and channel names are fixed-width unicode so they round-trip bit-exact.
    """
    with warnings.catch_warnings():
        try:
            from zarr.errors import UnstableSpecificationWarning, ZarrUserWarning

            warnings.simplefilter("ignore", UnstableSpecificationWarning)
            warnings.simplefilter("ignore", ZarrUserWarning)
        except ImportError:  # pragma: no cover - older zarr
            warnings.simplefilter("ignore", UserWarning)
        yield


#: BIDS entities that name a recording, in file-name order: (attribute / column, key).
ENTITY_KEYS = (("subject", "sub"), ("session", "ses"), ("task", "task"), ("acquisition", "acq"),
               ("run", "run"), ("space", "space"))


def _safe_id(name, default="recording"):
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or default


def entity_id(entities, *, keys=("subject", "session", "task", "run"), suffix=None):
    """``sub-01_ses-1_task-rest_run-1`` from a mapping of BIDS entities (empty ones skipped).

    Parameters
    ----------
    entities : mapping
        Entity values by name (``ds.attrs``, a :func:`~neurofm.io.bids.find_recordings` row).
    keys : sequence of str
        Which entities of :data:`ENTITY_KEYS` to use, always in BIDS order.
    suffix : str, optional
        Appended last (e.g. the datatype).

    Returns
    -------
    id : str
        File-safe (letters, digits, '.', '_', '-'); "" when no entity is set.
    """
    parts = [f"{short}-{entities[key]}" for key, short in ENTITY_KEYS
             if key in keys and entities.get(key)]
    if suffix:
        parts.append(suffix)
    return _safe_id("_".join(parts), default="")


def recording_id(ds, default="recording"):
    """A file-safe id from the BIDS entities of ``ds.attrs`` (or its source file name).

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical recording.
    default : str
        Used when the recording has neither entities nor a source file.

    Returns
    -------
    id : str
        e.g. ``"sub-01_ses-1_task-rest_run-1"``.
    """
    name = entity_id(ds.attrs)
    if name:
        return name
    if ds.attrs.get("source_file"):
        name = Path(str(ds.attrs["source_file"])).name
        for suffix in (".gz", ".nii", ".fif", ".edf", ".bdf", ".vhdr", ".set", ".npy",
                       ".h5", ".nwb", ".parquet", ".csv", ".tsv"):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
    else:
        name = default
    return _safe_id(name, default)


# --------------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------------
class Store:
    """A directory of recordings ready for training.

    Use :func:`open_store` or :func:`write_store` rather than the constructor.

    Attributes
    ----------
    path : str
        Location of the store (local path or fsspec URL).
    manifest : pandas.DataFrame
        One row per recording (a copy; columns :data:`MANIFEST_COLUMNS` plus extras).
    """

    def __init__(self, path, *, storage_options=None, _create=False):
        self.path = os.fspath(path)
        self.storage_options = dict(storage_options or {})
        self._remote = _is_url(self.path)
        if self._remote:
            self._fs, self._root = _fs(self.path, self.storage_options)
        else:
            self._fs, self._root = None, os.path.abspath(_local_path(self.path))
        if _create:
            self._makedirs(self._root)
        self._manifest = self._read_manifest(missing_ok=_create)
        self._reset_readers()

    def _reset_readers(self):
        """Forget opened arrays and memory maps (after fork, or when the store changed)."""
        self._arrays, self._maps, self._pid = {}, _ChunkMaps(), os.getpid()

    # ---------------------------------------------------------------- public API
    @property
    def manifest(self):
        return self._manifest.copy()

    @property
    def ids(self):
        """Recording ids in manifest order."""
        return list(self._manifest["id"])

    def __len__(self):
        return len(self._manifest)

    def __iter__(self):
        return iter(self.ids)

    def __contains__(self, rec_id):
        return rec_id in set(self._manifest["id"])

    def __repr__(self):
        mods = sorted(set(self._manifest["modality"])) if len(self) else []
        return f"<Store {self.path!r}: {len(self)} recordings {mods}>"

    def __getitem__(self, rec_id):
        return self.open(rec_id)

    def open(self, rec_id, *, chunks=None):
        """Open one recording lazily.

        Parameters
        ----------
        rec_id : str
            Recording id (see :attr:`ids`).
        chunks : None | "auto" | dict
            None gives lazily indexed numpy-backed arrays (nothing is read until used);
            anything else gives dask arrays with those chunks (``{}``: the store's chunks).

        Returns
        -------
        ds : xarray.Dataset
            The canonical recording.
        """
        return open_recording(self._location(self._row(rec_id)["path"]), chunks=chunks,
                              storage_options=self.storage_options)

    def read_window(self, rec_id, start, stop, *, channels=None):
        """Read samples ``start:stop`` of one recording.

        Parameters
        ----------
        rec_id : str
            Recording id.
        start, stop : int
            Sample indices (``stop`` exclusive), ``0 <= start < stop <= n_times``.
        channels : slice | array-like of int, optional
            Channel selection; all channels by default.

        Returns
        -------
        window : numpy.ndarray of shape (n_channels, stop - start), float32
            A fresh array (safe to modify). Only the chunks overlapping the window are read.
        """
        if os.getpid() != self._pid:  # forked DataLoader worker: reopen lazily
            self._reset_readers()
        arr = self._array(rec_id)
        n_times = arr.shape[1]
        start, stop = int(start), int(stop)
        if not 0 <= start < stop <= n_times:
            raise DataError(f"read_window({rec_id!r}): need 0 <= start < stop <= n_times "
                            f"({n_times}); got start={start}, stop={stop}")
        direct = self._direct_layout(rec_id, arr)
        if direct is None:
            out = np.asarray(arr[:, start:stop])
        else:
            out = self._read_direct(direct, start, stop)
        if channels is not None:
            out = out[channels]
        return out

    def add(self, ds, *, id=None, split=None, chunk_seconds=None, compressor=None,
            overwrite=False):
        """Append one recording (atomic) and rewrite the manifest.

        Parameters
        ----------
        ds : xarray.Dataset
            Canonical recording; validated first.
        id : str, optional
            Recording id; derived from subject/session/task/run (or the source file name)
            when None and made unique with a numeric suffix.
        split : str, optional
            "train", "val", "test" or any label; stored in the manifest.
        chunk_seconds : float, optional
            Chunk length along time; by default chunks of about 1 MiB.
        compressor : None | "zstd" | "blosc" | zarr codec
            None (default) stores raw float32, the fastest for random windows; "zstd" is
            about 10-40 % smaller on real EEG and several times slower to read.
        overwrite : bool
            Replace an existing recording with the same id instead of raising.

        Returns
        -------
        id : str
            The id under which the recording was stored.
        """
        validate(ds, name=f"recording {id or recording_id(ds)!r}")
        if id is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", str(id)):
            raise NeurofmError(f"id must contain only letters, digits, '.', '_' and '-'; got "
                               f"{id!r}")
        if id is not None:
            self._check_free(id, overwrite)  # fail before the slow write, checked again below
        base = id if id is not None else recording_id(ds)
        # the data are written outside the lock (slow); the id, the rename and the manifest
        # update happen under it, against the manifest as it is on disk now, so that several
        # processes can add to one store at once
        staged = write_recording(ds, self._location(f"{base}.zarr"),
                                 chunk_seconds=chunk_seconds, compressor=compressor,
                                 storage_options=self.storage_options, validated=True,
                                 stage_only=True)
        try:
            with self._lock():
                if self._manifest_exists():
                    self._manifest = self._read_manifest(missing_ok=False)
                if id is None:
                    rec_id = self._unique_id(base)
                else:
                    rec_id = id
                    self._check_free(rec_id, overwrite)
                rel = f"{rec_id}.zarr"
                staged.commit(rel)
                row = _manifest_row(rec_id, ds, split, rel)
                manifest = self._manifest[self._manifest["id"] != rec_id]
                manifest = pd.concat([manifest, pd.DataFrame([row])], ignore_index=True)
                self._write_manifest(manifest)
        except BaseException:
            staged.discard()
            raise
        self._arrays.pop(rec_id, None)
        self._maps.forget(rec_id)
        logger.info("stored %s in %s", rec_id, self.path)
        return rec_id

    def set_split(self, splits):
        """Assign splits and rewrite the manifest atomically.

        Parameters
        ----------
        splits : dict | pandas.Series
            Maps recording ids to split labels; ids not given keep theirs.
        """
        splits = dict(splits)
        with self._lock():
            self._manifest = self._read_manifest(missing_ok=False)
            unknown = sorted(set(splits) - set(self.ids))
            if unknown:
                raise NeurofmError(f"set_split: unknown recording ids {unknown}")
            manifest = self.manifest
            manifest["split"] = [splits.get(i, s) for i, s in zip(manifest["id"],
                                                                  manifest["split"])]
            self._write_manifest(manifest)

    def refresh(self):
        """Re-read the manifest (after another process added recordings)."""
        self._manifest = self._read_manifest(missing_ok=False)
        self._reset_readers()
        return self

    # ---------------------------------------------------------------- internals
    def _row(self, rec_id):
        rows = self._manifest[self._manifest["id"] == rec_id]
        if not len(rows):
            raise KeyError(f"{self.path}: no recording {rec_id!r}; ids: "
                           f"{self.ids[:10]}{' ...' if len(self) > 10 else ''}")
        return rows.iloc[0]

    def _location(self, rel):
        if self._remote:
            protocol = self.path.split("://", 1)[0]
            return f"{protocol}://{self._root}/{rel}"
        return os.path.join(self._root, rel)

    @contextmanager
    def _lock(self):
        """Exclusive lock on the store's manifest (local stores; object stores have none)."""
        if self._remote:
            yield
            return
        import fcntl

        with open(os.path.join(self._root, ".lock"), "a") as fid:
            fcntl.flock(fid.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fid.fileno(), fcntl.LOCK_UN)

    def _check_free(self, rec_id, overwrite):
        if rec_id in self and not overwrite:
            raise NeurofmError(f"{self.path}: recording {rec_id!r} already exists; pass "
                               "overwrite=True to replace it")

    def _unique_id(self, base):
        taken = set(self._manifest["id"])
        if base not in taken:
            return base
        k = 2
        while f"{base}-{k}" in taken:
            k += 1
        return f"{base}-{k}"

    def _array(self, rec_id):
        arr = self._arrays.get(rec_id)
        if arr is None:
            import zarr

            location = self._location(self._row(rec_id)["path"])
            with _quiet_zarr():
                group = zarr.open_group(location, mode="r",
                                        storage_options=self.storage_options or None)
                arr = group["signal"]
            self._arrays[rec_id] = arr
        return arr

    def _direct_layout(self, rec_id, arr):
        """Chunk-file layout for memory-mapped reads, or None when zarr must decode."""
        if rec_id in self._maps.layouts:
            return self._maps.layouts[rec_id]
        layout = None
        meta = arr.metadata
        codecs = getattr(meta, "codecs", ())
        if (not self._remote and len(codecs) == 1 and type(codecs[0]).__name__ == "BytesCodec"
                and arr.chunks[0] == arr.shape[0] and arr.order == "C"
                and str(getattr(codecs[0].endian, "value", codecs[0].endian)) in
                ("little", "None") and np.dtype(arr.dtype).byteorder in ("=", "<", "|")):
            base = os.path.join(self._root, self._row(rec_id)["path"], "signal")
            layout = {"base": base, "meta": meta, "n_ch": arr.shape[0],
                      "chunk": arr.chunks[1], "n_times": arr.shape[1],
                      "fill": arr.fill_value, "rec_id": rec_id}
        self._maps.layouts[rec_id] = layout
        return layout

    def _read_direct(self, layout, start, stop):
        chunk, n_ch = layout["chunk"], layout["n_ch"]
        out = np.empty((n_ch, stop - start), dtype=np.float32)
        first, last = start // chunk, (stop - 1) // chunk
        for c in range(first, last + 1):
            c0 = c * chunk
            lo, hi = max(start, c0), min(stop, c0 + chunk)
            block = self._maps.get(layout, c)
            if block is None:
                out[:, lo - start:hi - start] = layout["fill"]
            else:
                out[:, lo - start:hi - start] = block[:, lo - c0:hi - c0]
        return out

    # writing
    def _join(self, rel):
        return f"{self._root}/{rel}" if self._remote else os.path.join(self._root, rel)

    def _makedirs(self, root):
        if self._remote:
            self._fs.makedirs(root, exist_ok=True)
        else:
            os.makedirs(root, exist_ok=True)

    def _read_manifest(self, *, missing_ok):
        target = self._join(MANIFEST_NAME)
        if not self._manifest_exists():
            if missing_ok:
                return _empty_manifest()
            raise FormatError(f"{self.path}: not a neurofm store (no {MANIFEST_NAME}); "
                              "create one with write_store() or `neurofm convert`")
        try:
            if self._remote:
                with self._fs.open(target, "rb") as fid:
                    manifest = pd.read_parquet(fid)
            else:
                manifest = pd.read_parquet(target)
        except Exception as err:
            raise FormatError(f"{target}: unreadable store manifest: {err}") from err
        missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
        if missing:
            raise FormatError(f"{target}: manifest lacks columns {missing}")
        split = manifest["split"].astype(object)
        manifest["split"] = split.where(split.notna(), None)
        return manifest

    def _manifest_exists(self):
        target = self._join(MANIFEST_NAME)
        return self._fs.exists(target) if self._remote else os.path.exists(target)

    def _write_manifest(self, manifest):
        manifest = manifest.reset_index(drop=True)
        for col in ("id", "subject", "session", "task", "run", "modality", "path"):
            manifest[col] = manifest[col].astype(str)
        manifest["split"] = manifest["split"].astype(object)
        final = self._join(MANIFEST_NAME)
        tmp = self._join(f"{_TMP_PREFIX}{uuid.uuid4().hex[:8]}-{MANIFEST_NAME}")
        if self._remote:
            with self._fs.open(tmp, "wb") as fid:
                manifest.to_parquet(fid, index=False)
            if self._fs.exists(final):
                self._fs.rm(final)
            self._fs.mv(tmp, final)
        else:
            manifest.to_parquet(tmp, index=False)
            with open(tmp, "rb+") as fid:
                os.fsync(fid.fileno())
            os.replace(tmp, final)
        self._manifest = manifest


class _ChunkMaps:
    """Per-process LRU of memory-mapped chunk files (opened lazily, after fork)."""

    def __init__(self, capacity=256):
        self.capacity = capacity
        self.maps = OrderedDict()
        self.layouts = {}  # rec_id -> chunk-file layout, or None when zarr must decode

    def forget(self, rec_id):
        """Drop the maps and layout of one recording (after it was replaced)."""
        for key in [k for k in self.maps if k[0] == rec_id]:
            del self.maps[key]
        self.layouts.pop(rec_id, None)

    def get(self, layout, c):
        key = (layout["rec_id"], c)
        block = self.maps.get(key)
        if block is not None:
            self.maps.move_to_end(key)
            return block
        coords = (0, c)
        rel = layout["meta"].encode_chunk_key(coords)
        fname = os.path.join(layout["base"], *rel.split("/"))
        n = min(layout["chunk"], layout["n_times"] - c * layout["chunk"])
        if not os.path.exists(fname):
            return None
        # a chunk file stores the full chunk shape, also for the last (partial) chunk
        block = np.memmap(fname, dtype="<f4", mode="r", shape=(layout["n_ch"],
                                                                layout["chunk"]))
        block = block[:, :n]
        self.maps[key] = block
        if len(self.maps) > self.capacity:
            self.maps.popitem(last=False)
        return block


def _manifest_row(rec_id, ds, split, rel):
    return {
        "id": rec_id,
        "subject": str(ds.attrs.get("subject", "") or ""),
        "session": str(ds.attrs.get("session", "") or ""),
        "task": str(ds.attrs.get("task", "") or ""),
        "run": str(ds.attrs.get("run", "") or ""),
        "modality": str(ds.attrs["modality"]),
        "n_channels": int(ds.sizes["channel"]),
        "n_times": int(ds.sizes["time"]),
        "sfreq": float(ds.attrs["sfreq"]),
        "split": split if split is None else str(split),
        "path": rel,
    }


def _remove_tree(path, storage_options):
    path = os.fspath(path)
    if _is_url(path):
        fs, root = _fs(path, storage_options)
        if fs.exists(root):
            fs.rm(root, recursive=True)
        return
    import shutil

    shutil.rmtree(_local_path(path), ignore_errors=True)


def _empty_manifest():
    return pd.DataFrame({c: pd.Series(dtype=object if c not in
                                      ("n_channels", "n_times", "sfreq") else
                                      ("int64" if c != "sfreq" else "float64"))
                         for c in MANIFEST_COLUMNS})


def _compressors(compressor):
    if compressor is None or compressor == "none":
        return None
    from zarr.codecs import BloscCodec, ZstdCodec

    if compressor == "zstd":
        return [ZstdCodec(level=3)]
    if compressor == "blosc":
        return [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")]
    if isinstance(compressor, str):
        raise NeurofmError(f"compressor must be None, 'zstd', 'blosc' or a zarr codec; got "
                           f"{compressor!r}")
    return [compressor]


# --------------------------------------------------------------------------------------------
# functions
# --------------------------------------------------------------------------------------------
def is_store(path, *, storage_options=None):
    """True when ``path`` (a directory or fsspec URL) holds a store manifest."""
    path = os.fspath(path)
    if _is_url(path):
        fs, root = _fs(path, storage_options)
        return fs.exists(f"{root}/{MANIFEST_NAME}")
    return os.path.exists(os.path.join(_local_path(path), MANIFEST_NAME))


def open_store(path, *, storage_options=None):
    """Open an existing store.

    Parameters
    ----------
    path : str | os.PathLike
        Local directory or fsspec URL (``memory://``, ``file://``, ``s3://`` ...).
    storage_options : dict, optional
        Passed to fsspec for URLs.

    Returns
    -------
    store : Store
    """
    if not _is_url(os.fspath(path)) and not os.path.isdir(_local_path(os.fspath(path))):
        raise FormatError(f"{path}: store not found (no such directory)")
    return Store(path, storage_options=storage_options)


def write_store(recordings, path, *, chunk_seconds=None, compressor=None, overwrite=False,
                splits=None, storage_options=None, verbose=None):
    """Write recordings into a new store.

    Parameters
    ----------
    recordings : iterable of xarray.Dataset | str | os.PathLike
        Canonical recordings, or files that :func:`neurofm.io.read` reads.
    path : str | os.PathLike
        Store location (local directory or fsspec URL).
    chunk_seconds : float, optional
        Chunk length along time (default: chunks of about 1 MiB).
    compressor : None | "zstd" | "blosc" | zarr codec
        See :meth:`Store.add`.
    overwrite : bool
        Replace an existing store at ``path``. Without it an existing store is an error.
    splits : sequence of str, optional
        One split label per recording.
    storage_options : dict, optional
        fsspec options for URLs.
    verbose : bool | str | None
        Log level and progress bar.

    Returns
    -------
    store : Store
    """
    if isinstance(recordings, (xr.Dataset, str, os.PathLike)):
        recordings = [recordings]
    recordings = list(recordings)
    splits = list(splits) if splits is not None else [None] * len(recordings)
    if len(splits) != len(recordings):  # checked before anything on disk is touched
        raise NeurofmError(f"splits has {len(splits)} entries for {len(recordings)} "
                           "recordings")
    with use_log_level(verbose):
        if is_store(path, storage_options=storage_options):
            if not overwrite:
                raise NeurofmError(f"{path}: a store already exists; pass overwrite=True to "
                                   "replace it (or open_store(path).add(ds) to append)")
            _remove_tree(path, storage_options)
        store = Store(path, storage_options=storage_options, _create=True)
        store._write_manifest(store._manifest)  # an empty store is a store
        for item, split in zip(progress(recordings, verbose=verbose, desc="writing store",
                                        unit="rec"), splits):
            if not isinstance(item, xr.Dataset):
                from ..io import read

                item = read(item)
            for ds in item if isinstance(item, list) else [item]:
                store.add(ds, split=split, chunk_seconds=chunk_seconds, compressor=compressor)
        return store


def write_recording(ds, path, *, chunk_seconds=None, compressor=None, attrs=None,
                    storage_options=None, validated=False, stage_only=False):
    """Write one recording as a zarr group, atomically, in the store layout.

    The group is written under a temporary name beside ``path`` and renamed into place, so
    ``path`` either holds a complete recording or nothing (an existing one is replaced).
    Pipelines use this to fill a store from parallel jobs, then :func:`index_store`.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical recording (dask-backed arrays are written chunk by chunk).
    path : str | os.PathLike
        Target ``<store>/<id>.zarr`` (local path or fsspec URL).
    chunk_seconds : float, optional
        Chunk length along time; by default chunks of about 1 MiB (all channels).
    compressor : None | "zstd" | "blosc" | zarr codec
        See :meth:`Store.add`.
    attrs : dict, optional
        Extra flat attributes to store (e.g. ``config_hash``).
    storage_options : dict, optional
        fsspec options for URLs.

    Returns
    -------
    path : str
    """
    if not validated:
        validate(ds, name=str(path))
    n_ch = int(ds.sizes["channel"])
    sfreq = float(ds.attrs["sfreq"])
    if chunk_seconds is None:
        chunk = max(1, CHUNK_BYTES // (4 * max(n_ch, 1)))
    else:
        if not chunk_seconds > 0:
            raise NeurofmError(f"chunk_seconds must be > 0; got {chunk_seconds!r}")
        chunk = max(1, round(chunk_seconds * sfreq))
    chunk = min(chunk, max(1, int(ds.sizes["time"])))
    out = ds.copy(deep=False)
    out.attrs = {**ds.attrs, **(attrs or {})}
    if getattr(out["signal"].data, "dask", None) is not None:
        out["signal"] = out["signal"].chunk({"channel": -1, "time": chunk})
    for var in out.variables.values():
        var.encoding = {}
    encoding = {"signal": {"chunks": (n_ch, chunk), "compressors": _compressors(compressor)}}

    staged = _Staged(path, storage_options)
    with _quiet_zarr():
        out.to_zarr(staged.tmp_location, mode="w", zarr_format=3, consolidated=True,
                    encoding=encoding, write_empty_chunks=True,
                    storage_options=storage_options or None if staged.remote else None)
    if stage_only:
        return staged
    staged.commit()
    return os.fspath(path)


class _Staged:
    """A recording written under a temporary name beside its target, not yet renamed."""

    def __init__(self, path, storage_options):
        path = os.fspath(path)
        self.remote = _is_url(path)
        token = uuid.uuid4().hex[:8]
        if self.remote:
            self.fs, target = _fs(path, storage_options)
            self.protocol = path.split("://", 1)[0]
            self.parent, name = target.rsplit("/", 1) if "/" in target else ("", target)
            self.name = name
            self.tmp = f"{self.parent}/{_TMP_PREFIX}{name}-{token}"
            self.tmp_location = f"{self.protocol}://{self.tmp}"
        else:
            self.fs = None
            target = os.path.abspath(_local_path(path))
            self.parent, name = os.path.split(target)
            self.name = name
            os.makedirs(self.parent, exist_ok=True)
            self.tmp = self.tmp_location = os.path.join(self.parent,
                                                        f"{_TMP_PREFIX}{name}-{token}")

    def commit(self, name=None):
        """Rename into place as ``name`` (default: the original target), replacing it."""
        name = name or self.name
        if self.remote:
            target = f"{self.parent}/{name}"
            if self.fs.exists(target):
                self.fs.rm(target, recursive=True)
            self.fs.mv(self.tmp, target, recursive=True)
            return
        target = os.path.join(self.parent, name)
        if os.path.exists(target):
            import shutil

            trash = os.path.join(self.parent,
                                 f"{_TMP_PREFIX}old-{uuid.uuid4().hex[:8]}-{name}")
            os.replace(target, trash)
            os.replace(self.tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self.tmp, target)

    def discard(self):
        if self.remote:
            if self.fs.exists(self.tmp):
                self.fs.rm(self.tmp, recursive=True)
        else:
            import shutil

            shutil.rmtree(self.tmp, ignore_errors=True)


def open_recording(path, *, chunks=None, storage_options=None):
    """Open one recording written by :func:`write_recording` (or inside a store), lazily.

    Parameters
    ----------
    path : str | os.PathLike
        A ``.zarr`` group (local path or fsspec URL).
    chunks : None | dict | "auto"
        None: lazily indexed numpy-backed arrays; otherwise dask chunks.

    Returns
    -------
    ds : xarray.Dataset
    """
    path = os.fspath(path)
    if not _is_url(path) and not os.path.isdir(_local_path(path)):
        raise FormatError(f"{path}: recording not found (expected a zarr folder)")
    try:
        with _quiet_zarr():
            return xr.open_zarr(path, chunks=chunks, consolidated=True,
                                storage_options=storage_options or None)
    except Exception as err:
        raise FormatError(f"{path}: not a readable zarr recording: {err}") from err


def index_store(path, *, ids=None, splits=None, storage_options=None):
    """(Re)build the manifest of a store from the recordings in its directory.

    For stores filled by parallel jobs with :func:`write_recording`: the manifest is written
    last and atomically, so the store lists exactly the recordings indexed here.

    Parameters
    ----------
    path : str | os.PathLike
        Store directory or URL.
    ids : sequence of str, optional
        Recordings to list (``<id>.zarr`` must exist); default: every complete ``*.zarr``.
    splits : dict, optional
        Recording id -> split label.
    storage_options : dict, optional
        fsspec options for URLs.

    Returns
    -------
    store : Store
    """
    store = Store(path, storage_options=storage_options, _create=True)
    if ids is None:
        if store._remote:
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in store._fs.ls(store._root,
                                                                             detail=False)]
        else:
            names = os.listdir(store._root)
        ids = sorted(n[: -len(".zarr")] for n in names
                     if n.endswith(".zarr") and not n.startswith(_TMP_PREFIX))
    splits = dict(splits or {})
    rows = []
    for rec_id in ids:
        rel = f"{rec_id}.zarr"
        ds = open_recording(store._location(rel), storage_options=storage_options)
        rows.append(_manifest_row(rec_id, ds, splits.get(rec_id), rel))
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)) if rows else \
        _empty_manifest()
    with store._lock():
        store._write_manifest(manifest)
    store._reset_readers()
    return store


def describe(store):
    """A JSON-friendly summary of a store (used by ``neurofm info``)."""
    m = store.manifest
    return {
        "path": store.path,
        "n_recordings": len(m),
        "modalities": sorted(set(m["modality"])) if len(m) else [],
        "subjects": sorted(set(m["subject"]) - {""}) if len(m) else [],
        "hours": float((m["n_times"] / m["sfreq"]).sum() / 3600.0) if len(m) else 0.0,
        "splits": {str(k): int(v) for k, v in m["split"].fillna("none").value_counts().items()}
        if len(m) else {},
    }
