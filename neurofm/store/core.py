"""Training stores: one zarr group per recording plus a parquet manifest.

A store is a directory (local or any fsspec URL)::

    store/
      manifest.parquet          one row per complete recording; its ``path`` column names
                                the version folder readers open
      <id>.zarr/                the continuous canonical Dataset, chunked along time with all
      <id>@<token>.zarr/        channels in one chunk (a later version of <id>)

Writes never touch what the manifest lists: a recording is written under a temporary name,
renamed to a free version name, the manifest is switched atomically, and only then is the
old version deleted (see :mod:`neurofm.store.staging`). Every chunk carries a crc32c
checksum; :meth:`Store.verify` checks them all.

Windows are cut at training time with :meth:`Store.read_window`: uncompressed local stores
(the default) through memory maps of the chunk files (:mod:`neurofm.store.fastread`),
compressed or remote stores through zarr.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pandas as pd
import xarray as xr

from .._logging import logger, progress, use_log_level
from ..errors import DataError, FormatError, NeurofmError
from ._fsutil import crash_point, fs_for, is_url, join, local_path, quiet_zarr, remove_tree
from .errors import (
    ArgumentTypeError,
    ChannelIndexError,
    RecordingNotFound,
    WindowIndexError,
)
from .fastread import ChunkMaps, direct_layout
from .ids import check_id, entity_id, parse_version, recording_id, version_name
from .manifest import (
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    PRIVATE_ATTRS,
    TIME_ATTR,
    TMP_PREFIX,
    TOKEN_ATTR,
    empty_manifest,
    manifest_row,
    read_manifest,
    stamp,
    write_manifest,
)
from .staging import stage_recording, store_lock, tmp_is_dead, write_recording

__all__ = [
    "MANIFEST_COLUMNS",
    "Store",
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


class _Reader:
    """What one process caches to read windows of one recording version."""

    __slots__ = ("arr", "layout", "n_ch", "n_times", "path", "token", "where")

    def __init__(self, arr, layout, path, token, where):
        self.arr, self.layout, self.path, self.token = arr, layout, path, token
        self.n_ch, self.n_times = int(arr.shape[0]), int(arr.shape[1])
        self.where = where  # "<store>: recording '<id>' (<folder>)", for error messages


def _sample_index(name, value):
    """``value`` as a Python int; integers (numpy ones too) only."""
    if type(value) is int:  # the common case, checked first (once per window read)
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ArgumentTypeError(f"read_window: {name} must be an integer sample index; got "
                                f"{value!r} ({type(value).__name__})")
    return int(value)


def _select_channels(out, channels, n_ch):
    if channels is None:
        return out
    if isinstance(channels, slice):
        return out[channels]
    idx = np.asarray(channels)
    if idx.dtype.kind not in "iu" or idx.ndim > 1:
        raise ArgumentTypeError(f"read_window: channels must be a slice or a sequence of "
                                f"integer channel indices; got {channels!r}")
    if idx.size and (idx.min() < -n_ch or idx.max() >= n_ch):
        bad = [int(i) for i in idx.ravel() if not -n_ch <= i < n_ch]
        raise ChannelIndexError(f"read_window: channels {bad} out of range for a recording "
                                f"with {n_ch} channels")
    return out[idx]


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

    def __init__(self, path, *, storage_options=None, _create=False, _check=True,
                 _load=True):
        self.path = os.fspath(path)
        self.storage_options = dict(storage_options or {})
        self._remote = is_url(self.path)
        if self._remote:
            self._fs, self._root = fs_for(self.path, self.storage_options)
            self._protocol = self.path.split("://", 1)[0]
        else:
            self._fs, self._root = None, os.path.abspath(local_path(self.path))
        if _create:
            self._makedirs(self._root)
        self._manifest_file = self._join(MANIFEST_NAME)
        if _load:
            self._load_manifest(missing_ok=_create, strict=_check)
        else:  # index_store rebuilds the manifest: whatever is there now does not matter
            self._set_manifest(empty_manifest(), None)
        self._reset_readers()
        if _check:
            self._check_rows()

    def _reset_readers(self):
        """Forget opened arrays and memory maps (after fork, or when the store changed)."""
        self._readers, self._maps, self._pid = {}, ChunkMaps(), os.getpid()

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
        return rec_id in self._rows

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

        Raises
        ------
        RecordingNotFound
            No such id.
        FormatError
            The recording's folder, metadata or a signal chunk is missing.
        """
        self._sync_if_changed()
        path = self._row(rec_id)[0]
        ds = open_recording(self._location(path), chunks=chunks,
                            storage_options=self.storage_options)
        import zarr

        from .verify import missing_chunks

        with quiet_zarr():
            group = zarr.open_group(self._location(path), mode="r",
                                    storage_options=self.storage_options or None)
            missing = missing_chunks(self._fs if self._remote else None, self._join(path),
                                     group, arrays=("signal",))
        if missing:
            raise FormatError(f"{self.path}: recording {rec_id!r} ({path}): signal chunk(s) "
                              f"{[k for _, k in missing][:10]} missing; the store is damaged "
                              "(run Store.verify() / `neurofm verify`)")
        return ds

    def read_window(self, rec_id, start, stop, *, channels=None, out=None):
        """Read samples ``start:stop`` of one recording.

        Parameters
        ----------
        rec_id : str
            Recording id.
        start, stop : int
            Sample indices (``stop`` exclusive), ``0 <= start < stop <= n_times``; Python or
            numpy integers.
        channels : slice | array-like of int, optional
            Channel selection; all channels by default.
        out : numpy.ndarray of shape (n_channels, stop - start), float32, optional
            Write the window into this array (e.g. one row of a batch buffer) instead of a
            fresh one; only with ``channels=None``.

        Returns
        -------
        window : numpy.ndarray of shape (n_channels, stop - start), float32
            A fresh array (safe to modify), or ``out``. Only the chunks overlapping the
            window are read.

        Raises
        ------
        RecordingNotFound
            Unknown id (also a ``KeyError``).
        ArgumentTypeError
            ``start``/``stop`` not integers, ``channels`` not integer indices (a
            ``TypeError``).
        WindowIndexError
            Window outside the recording (a ``DataError`` and ``IndexError``).
        ChannelIndexError
            A channel index out of range (an ``IndexError``).
        FormatError
            A chunk the window needs is missing, truncated or corrupt.
        """
        start, stop = _sample_index("start", start), _sample_index("stop", stop)
        if os.getpid() != self._pid:  # forked DataLoader worker: reopen lazily
            self._reset_readers()
        self._sync_if_changed()
        if out is not None:
            if channels is not None:
                raise ArgumentTypeError("read_window: out= reads all channels; got channels="
                                        f"{channels!r} too")
            self._check_out(rec_id, start, stop, out)
            return self._read(rec_id, start, stop, retry=True, out=out)
        window = self._read(rec_id, start, stop, retry=True)
        return _select_channels(window, channels, window.shape[0])

    def read_windows(self, windows, *, out=None):
        """Read several windows of equal length into one array.

        Parameters
        ----------
        windows : sequence of (str, int, int)
            ``(rec_id, start, stop)`` per window, all of the same length and channel count.
        out : numpy.ndarray of shape (n_windows, n_channels, n_samples), float32, optional
            The array to read into (e.g. a batch buffer); a fresh one by default.

        Returns
        -------
        batch : numpy.ndarray of shape (n_windows, n_channels, n_samples), float32
            Row ``k`` equals ``read_window(*windows[k])``.

        Raises
        ------
        ArgumentTypeError, RecordingNotFound, WindowIndexError, FormatError
            As :meth:`read_window`; a ``DataError`` when the windows differ in length or
            channel count.
        """
        windows = [(rec_id, _sample_index("start", start), _sample_index("stop", stop))
                   for rec_id, start, stop in windows]
        if not windows:
            raise DataError("read_windows: no windows given")
        if os.getpid() != self._pid:  # forked DataLoader worker: reopen lazily
            self._reset_readers()
        self._sync_if_changed()
        shapes = {(self._reader(r).n_ch, b - a) for r, a, b in windows}
        if len(shapes) > 1:
            raise DataError(f"read_windows: windows differ in (channels, samples): "
                            f"{sorted(shapes)[:6]}; read them with read_window")
        (n_ch, n), = shapes
        want = (len(windows), n_ch, n)
        if out is None:
            out = np.empty(want, dtype=np.float32)
        elif (not isinstance(out, np.ndarray) or out.dtype != np.float32
              or out.shape != want or not out.flags.writeable):
            found = (f"{type(out).__name__} {getattr(out, 'dtype', '')} "
                     f"{getattr(out, 'shape', '')}")
            raise ArgumentTypeError(f"read_windows: out must be a writeable float32 numpy "
                                    f"array of shape {want}; got {found}")
        for k, (rec_id, start, stop) in enumerate(windows):
            self._read(rec_id, start, stop, retry=True, out=out[k])
        return out

    def _check_out(self, rec_id, start, stop, out):
        n_ch = self._reader(rec_id).n_ch
        want = (n_ch, stop - start)
        if (not isinstance(out, np.ndarray) or out.dtype != np.float32
                or out.shape != want or not out.flags.writeable):
            found = (f"{type(out).__name__} {getattr(out, 'dtype', '')} "
                     f"{getattr(out, 'shape', '')}")
            raise ArgumentTypeError(f"read_window({rec_id!r}): out must be a writeable float32 "
                                    f"numpy array of shape {want}; got {found}")

    def verify(self, *, check_data=True, raise_on_error=False):
        """Check every chunk of every recording and the manifest against the folders.

        Parameters
        ----------
        check_data : bool
            Read every chunk (its crc32c checksum is checked); False checks presence and
            metadata only (fast).
        raise_on_error : bool
            Raise :class:`~neurofm.store.errors.CorruptStoreError` (a FormatError listing
            every problem) instead of returning a report with problems.

        Returns
        -------
        report : neurofm.store.verify.VerifyReport
            ``report.ok``, ``report.problems`` (each naming the store, recording and chunk)
            and ``report.notes`` (harmless leftovers of interrupted writers).
        """
        from .verify import verify_store

        report = verify_store(self, check_data=check_data)
        if raise_on_error:
            report.raise_for_problems()
        return report

    def add(self, ds, *, id=None, split=None, chunk_seconds=None, compressor=None,
            overwrite=False):
        """Append one recording and switch the manifest to it (crash-safe at every step).

        The data are written under a temporary name (outside the lock, slow), renamed to a
        free version folder, the manifest is replaced atomically, and only then is the
        version it listed before deleted: a writer killed at any point leaves the old or the
        new recording listed, never a mix or a missing folder.

        Parameters
        ----------
        ds : xarray.Dataset
            Canonical recording; validated first (values while they are written).
        id : str, optional
            Recording id; derived from subject/session/task/run (or the source file name)
            when None and made unique with a numeric suffix.
        split : str, optional
            "train", "val", "test" or any label; stored in the manifest.
        chunk_seconds : float, optional
            Chunk length along time; by default chunks of about 1 MiB.
        compressor : None | "zstd" | "blosc" | zarr codec
            None (default) stores raw float32, the fastest for random windows; "zstd" is
            about 10-40 % smaller on real EEG and several times slower to read. Every chunk
            carries a crc32c checksum either way.
        overwrite : bool
            Replace an existing recording with the same id instead of raising.

        Returns
        -------
        id : str
            The id under which the recording was stored.

        Raises
        ------
        ConcurrentWriteError
            Another process is writing the manifest of this remote store.
        """
        if id is not None:
            check_id(id)
            self._check_free(id, overwrite)  # fail before the slow write, checked again below
        base = id if id is not None else recording_id(ds)
        staged = stage_recording(ds, self._location(version_name(base)),
                                 chunk_seconds=chunk_seconds, compressor=compressor,
                                 storage_options=self.storage_options,
                                 name=f"recording {base!r}")
        renamed = aside = None
        try:
            with self._lock():
                crash_point("locked")
                # against the manifest as it is on disk now: several processes may add at once
                if self._manifest_exists():
                    self._load_manifest(missing_ok=False, strict=True)
                rec_id = self._unique_id(base) if id is None else id
                self._check_free(rec_id, overwrite)
                old = self._rows.get(rec_id)
                name = version_name(rec_id)
                if staged.exists(name):  # listed, or an orphan of an interrupted writer
                    name = version_name(rec_id, staged.token)
                staged.rename_to(name)
                renamed = name
                crash_point("renamed")
                row = manifest_row(rec_id, ds, split, name, staged.token)
                manifest = self._manifest[self._manifest["id"] != rec_id]
                manifest = pd.concat([manifest, pd.DataFrame([row])], ignore_index=True)
                self._write_manifest(manifest)
                renamed = None  # listed now: no longer ours to clean up
                if old is not None and old[0] != name:
                    aside = staged.move_aside(old[0])
                    crash_point("moved-aside")
        except BaseException:
            staged.discard()
            if renamed is not None:
                staged.drop(self._join(renamed))
            raise
        if aside is not None:
            staged.drop(aside)
            crash_point("dropped")
        self._forget(rec_id)
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
            self._load_manifest(missing_ok=False, strict=True)
            unknown = sorted(set(splits) - set(self.ids))
            if unknown:
                raise RecordingNotFound(f"set_split: unknown recording ids {unknown}")
            manifest = self.manifest
            manifest["split"] = [splits.get(i, s) for i, s in zip(manifest["id"],
                                                                  manifest["split"])]
            self._write_manifest(manifest, step="split")

    def refresh(self):
        """Re-read the manifest (after another process added recordings)."""
        self._load_manifest(missing_ok=False, strict=True)
        self._reset_readers()
        return self

    # ---------------------------------------------------------------- reading internals
    def _row(self, rec_id):
        row = self._rows.get(rec_id)
        if row is None:
            ids = self.ids
            shown = ", ".join(map(repr, ids[:10])) + (" ..." if len(ids) > 10 else "")
            raise RecordingNotFound(f"{self.path}: no recording {rec_id!r} (argument rec_id);"
                                    f" ids: {shown or '(none)'}")
        return row

    def _sync_if_changed(self, *, force=False):
        """Reload the manifest when another writer replaced it (local stores: one stat).

        Remote stores are re-read only with ``force`` (after a read failed); the return value
        says whether a recording's version changed.
        """
        if self._remote:
            if not force:
                return False
            before = dict(self._rows)
            self._load_manifest(missing_ok=False, strict=True)
            return before != self._rows
        if stamp(self._manifest_file) == self._stamp:
            return False
        self._load_manifest(missing_ok=False, strict=True)
        return True

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_readers", None)  # memory maps and zarr arrays stay in their process
        state.pop("_maps", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset_readers()

    def _forget(self, rec_id):
        reader = self._readers.pop(rec_id, None)
        if reader is not None and reader.layout is not None:
            self._maps.forget(reader.layout["base"])

    def _reader(self, rec_id):
        reader = self._readers.get(rec_id)
        if reader is not None:
            return reader
        import zarr

        path, token = self._row(rec_id)
        where = f"{self.path}: recording {rec_id!r} ({path})"
        try:
            with quiet_zarr():
                group = zarr.open_group(self._location(path), mode="r",
                                        storage_options=self.storage_options or None)
                arr = group["signal"]
        except Exception as err:
            raise FormatError(f"{where}: not a readable zarr group (missing folder or "
                              f"zarr.json?): {type(err).__name__}: {err}") from err
        found = str(group.attrs.get(TOKEN_ATTR, ""))
        if token and found != token:
            raise FormatError(f"{where}: the folder holds write token {found!r}, the manifest "
                              f"lists {token!r}: it was replaced outside the store; rebuild "
                              "the manifest with index_store()")
        layout = None
        if not self._remote:
            layout = direct_layout(arr, os.path.join(self._root, path, "signal"))
        reader = _Reader(arr, layout, path, token, where)
        self._readers[rec_id] = reader
        return reader

    def _uses_fast_path(self, rec_id):
        """True when windows of ``rec_id`` are read through memory maps."""
        return self._reader(rec_id).layout is not None

    def _read(self, rec_id, start, stop, *, retry, out=None):
        reader = self._reader(rec_id)
        if not 0 <= start < stop <= reader.n_times:
            raise WindowIndexError(f"read_window({rec_id!r}): need 0 <= start < stop <= "
                                   f"n_times ({reader.n_times}); got start={start}, "
                                   f"stop={stop}")
        where = reader.where
        if reader.layout is not None:
            try:
                return self._maps.read(reader.layout, start, stop, where, out=out)
            except FileNotFoundError as err:
                if retry and self._sync_if_changed():  # replaced meanwhile: read the new one
                    return self._read(rec_id, start, stop, retry=False, out=out)
                raise FormatError(f"{where}: signal chunk file {err.filename} is missing; "
                                  "the store is damaged (run `neurofm verify`)") from err
        try:
            window = self._read_zarr(reader, where, start, stop)
        except FormatError:
            # a remote reader learns of a replacement only when the old version is gone
            if retry and self._sync_if_changed(force=True):
                return self._read(rec_id, start, stop, retry=False, out=out)
            raise
        if out is None:
            return window
        out[...] = window
        return out

    def _window_chunks(self, reader, start, stop):
        arr = reader.arr
        n_c = -(-arr.shape[0] // arr.chunks[0])
        t = arr.chunks[1]
        return list(itertools.product(range(n_c), range(start // t, (stop - 1) // t + 1)))

    def _read_zarr(self, reader, where, start, stop):
        arr = reader.arr
        try:
            with quiet_zarr():
                out = np.asarray(arr[:, start:stop])
        except Exception as err:
            for coords in self._window_chunks(reader, start, stop):
                try:
                    with quiet_zarr():
                        arr.get_block_selection(coords)
                except Exception as chunk_err:  # noqa: BLE001 - any decode error names it
                    key = arr.metadata.encode_chunk_key(coords)
                    raise FormatError(f"{where}: signal chunk {key} is corrupt "
                                      f"({type(chunk_err).__name__}: {chunk_err})") from err
            raise FormatError(f"{where}: unreadable window {start}:{stop}: {err}") from err
        if out.size and not np.isfinite(out).all():
            # zarr fills a missing chunk with NaN; a neurofm store has every chunk
            for coords in self._window_chunks(reader, start, stop):
                key = arr.metadata.encode_chunk_key(coords)
                full = self._join(f"{reader.path}/signal/{key}" if self._remote else
                                  os.path.join(reader.path, "signal", *key.split("/")))
                if not (self._fs.exists(full) if self._remote else os.path.exists(full)):
                    raise FormatError(f"{where}: signal chunk {key} is missing; the store is "
                                      "damaged (run `neurofm verify`)")
        return out.astype(np.float32, copy=False)

    # ---------------------------------------------------------------- writing internals
    def _location(self, rel):
        """Location of ``rel`` inside the store, as zarr/xarray expect it."""
        if self._remote:
            return f"{self._protocol}://{self._root}/{rel}"
        return os.path.join(self._root, rel)

    def _join(self, rel):
        return join(self._root, rel, self._remote)

    def _makedirs(self, root):
        if self._remote:
            self._fs.makedirs(root, exist_ok=True)
        else:
            os.makedirs(root, exist_ok=True)

    def _lock(self):
        """Exclusive lock on the store's manifest (see :func:`staging.store_lock`)."""
        return store_lock(self._fs if self._remote else None, self._root)

    def _check_free(self, rec_id, overwrite):
        if rec_id in self and not overwrite:
            raise NeurofmError(f"{self.path}: recording {rec_id!r} already exists; pass "
                               "overwrite=True to replace it")

    def _unique_id(self, base):
        taken = set(self._rows)
        if base not in taken:
            return base
        k = 2
        while f"{base}-{k}" in taken:
            k += 1
        return f"{base}-{k}"

    def _manifest_exists(self):
        target = self._manifest_file
        return self._fs.exists(target) if self._remote else os.path.exists(target)

    def _load_manifest(self, *, missing_ok, strict=True):
        st = None if self._remote else stamp(self._manifest_file)
        try:
            manifest = read_manifest(self._fs if self._remote else None, self._manifest_file,
                                     strict=strict)
        except FileNotFoundError:
            if not missing_ok:
                raise FormatError(f"{self.path}: not a neurofm store (no {MANIFEST_NAME}); "
                                  "create one with write_store() or `neurofm convert`") from None
            manifest = empty_manifest()
        self._set_manifest(manifest, st)

    def _set_manifest(self, manifest, st):
        self._manifest, self._stamp = manifest, st
        rows = {}
        for rec_id, path, token in zip(manifest["id"], manifest["path"], manifest["token"]):
            rows.setdefault(rec_id, (path, token))
        self._rows = rows
        readers = getattr(self, "_readers", {})
        for rec_id in [r for r, reader in readers.items()
                       if rows.get(r) != (reader.path, reader.token)]:
            self._forget(rec_id)  # replaced (stale token) or removed: drop what was cached

    def _write_manifest(self, manifest, step="manifest"):
        manifest = write_manifest(self._fs if self._remote else None, self._root, manifest,
                                  step=step)
        self._set_manifest(manifest, None if self._remote else stamp(self._manifest_file))

    def _check_rows(self, *, again=True):
        """Every listed recording has its folder and group metadata (FormatError if not)."""
        if not len(self._manifest):
            return
        if self._remote:
            names = {p.rstrip("/").rsplit("/", 1)[-1]
                     for p in self._fs.ls(self._root, detail=False)}
            gone = [(i, p) for i, (p, _) in self._rows.items() if p not in names]
        else:
            gone = [(i, p) for i, (p, _) in self._rows.items()
                    if not os.path.isfile(os.path.join(self._root, p, "zarr.json"))]
        if gone and again and self._sync_if_changed():  # replaced while we looked
            return self._check_rows(again=False)
        if gone:
            shown = ", ".join(f"{i!r} ({p})" for i, p in gone[:10])
            raise FormatError(f"{self.path}: the manifest lists recording(s) whose folder or "
                              f"zarr.json is missing: {shown}; the store is damaged (run "
                              "`neurofm verify`)")
        return None


# --------------------------------------------------------------------------------------------
# functions
# --------------------------------------------------------------------------------------------
def is_store(path, *, storage_options=None):
    """True when ``path`` (a directory or fsspec URL) holds a store manifest."""
    path = os.fspath(path)
    if is_url(path):
        fs, root = fs_for(path, storage_options)
        return fs.exists(f"{root}/{MANIFEST_NAME}")
    return os.path.exists(os.path.join(local_path(path), MANIFEST_NAME))


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

    Raises
    ------
    FormatError
        No store there, an unreadable manifest, an id listed twice, or a listed recording
        whose folder is gone.
    """
    if not is_url(os.fspath(path)) and not os.path.isdir(local_path(os.fspath(path))):
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
            remove_tree(path, storage_options)
        store = Store(path, storage_options=storage_options, _create=True)
        store._write_manifest(store._manifest)  # an empty store is a store
        for item, split in zip(progress(recordings, verbose=verbose, desc="writing store",
                                        unit="rec"), splits):
            if not isinstance(item, xr.Dataset):
                from ..io import read_all

                item = read_all(item)
            for ds in item if isinstance(item, list) else [item]:
                store.add(ds, split=split, chunk_seconds=chunk_seconds, compressor=compressor)
        return store


def open_recording(path, *, chunks=None, storage_options=None):
    """Open one recording written by :func:`write_recording` (or inside a store), lazily.

    Parameters
    ----------
    path : str | os.PathLike
        A ``.zarr`` group (local path or fsspec URL).
    chunks : None | dict | "auto"
        None: lazily indexed numpy-backed arrays; otherwise dask chunks.
    storage_options : dict, optional
        fsspec options for URLs.

    Returns
    -------
    ds : xarray.Dataset
        Signal of shape (n_channels, n_times); the store's private attributes (write token
        and time) removed.
    """
    path = os.fspath(path)
    if not is_url(path) and not os.path.isdir(local_path(path)):
        raise FormatError(f"{path}: recording not found (expected a zarr folder)")
    try:
        with quiet_zarr():
            ds = xr.open_zarr(path, chunks=chunks, consolidated=True,
                              storage_options=storage_options or None)
    except Exception as err:
        raise FormatError(f"{path}: not a readable zarr recording: {err}") from err
    for key in PRIVATE_ATTRS:
        ds.attrs.pop(key, None)
    return ds


def _version_info(store, name):
    """``(time_ns, token, ds)`` of a complete version folder, or None (logged) if not."""
    import zarr

    from .verify import missing_chunks

    location = store._location(name)
    try:
        with quiet_zarr():
            group = zarr.open_group(location, mode="r",
                                    storage_options=store.storage_options or None)
            missing = missing_chunks(store._fs if store._remote else None, store._join(name),
                                     group, arrays=("signal",))
        ds = open_recording(location, storage_options=store.storage_options)
    except Exception as err:  # noqa: BLE001 - an unreadable candidate is skipped, not fatal
        logger.warning("%s: skipped, unreadable: %s", location, err)
        return None
    if missing:
        logger.warning("%s: skipped, %d signal chunk(s) missing", location, len(missing))
        return None
    attrs = group.attrs
    return int(attrs.get(TIME_ATTR, 0) or 0), str(attrs.get(TOKEN_ATTR, "") or ""), ds


def index_store(path, *, ids=None, splits=None, storage_options=None):
    """(Re)build the manifest of a store from the recordings in its directory.

    For stores filled by parallel jobs with :func:`write_recording`: for each id the newest
    complete version (``<id>.zarr`` or ``<id>@<token>.zarr``) is listed, the manifest is
    switched atomically, and only then are the other versions of those ids and the
    temporaries of dead writers deleted. The store lists exactly the recordings indexed here.

    Parameters
    ----------
    path : str | os.PathLike
        Store directory or URL.
    ids : sequence of str, optional
        Recordings to list (a version of each must exist); default: every id with a complete
        version folder.
    splits : dict, optional
        Recording id -> split label.
    storage_options : dict, optional
        fsspec options for URLs.

    Returns
    -------
    store : Store

    Raises
    ------
    FormatError
        An id of ``ids`` has no complete version.
    """
    store = Store(path, storage_options=storage_options, _create=True, _check=False,
                  _load=False)
    splits = dict(splits or {})
    with store._lock():
        names = _listdir(store)
        versions = {}
        for name in names:
            parsed = parse_version(name)
            if parsed is not None:
                versions.setdefault(parsed[0], []).append(name)
        ids = sorted(versions) if ids is None else [check_id(i, "ids") for i in ids]
        rows, keep = [], {}
        for rec_id in ids:
            found = []
            for name in versions.get(rec_id, []):
                info = _version_info(store, name)
                if info is not None:
                    found.append((info[0], "@" in name, name, info))
            if not found:
                raise FormatError(f"{store._location(version_name(rec_id))}: recording not "
                                  f"found (expected a complete zarr folder {rec_id}.zarr or "
                                  f"{rec_id}@<token>.zarr)")
            _, _, name, (_, token, ds) = max(found, key=lambda f: f[:3])
            keep[rec_id] = name
            rows.append(manifest_row(rec_id, ds, splits.get(rec_id), name, token))
        manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)) if rows else \
            empty_manifest()
        store._write_manifest(manifest, step="index-manifest")
        # now nothing lists them: other versions of the indexed ids, dead writers' leftovers
        for rec_id, name in keep.items():
            for other in versions.get(rec_id, []):
                if other != name:
                    remove_tree(store._location(other), storage_options)
                    crash_point("index-cleanup")
        for name in names:
            if not (name.startswith(TMP_PREFIX) and tmp_is_dead(name, _mtime(store, name))):
                continue
            if name.endswith(MANIFEST_NAME):
                _remove_file(store, name)
            else:
                remove_tree(store._location(name), storage_options)
    store._reset_readers()
    return store


def _listdir(store):
    if store._remote:
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in store._fs.ls(store._root,
                                                                       detail=False)]
    return os.listdir(store._root)


def _mtime(store, name):
    if store._remote:
        try:
            return float(pd.Timestamp(store._fs.modified(store._join(name))).timestamp())
        except Exception:  # noqa: BLE001 - no time: only this machine's dead writers go
            import time

            return time.time()
    try:
        return os.stat(store._join(name)).st_mtime
    except FileNotFoundError:
        return 0.0


def _remove_file(store, name):
    full = store._join(name)
    if store._remote:
        if store._fs.exists(full):
            store._fs.rm(full)
    elif os.path.exists(full):
        os.remove(full)


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
