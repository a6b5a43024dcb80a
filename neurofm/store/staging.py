"""Atomic writes: staged recordings, the store lock, and :func:`write_recording`.

A recording is always written under a temporary name (``.tmp-<token>-<pid>-<host>-<name>``)
beside its target and renamed into place only when complete. Inside a store, the folder the
manifest lists is never touched: a new version of a listed recording goes to
``<id>@<token>.zarr`` and becomes visible when the manifest is switched (atomically) to it;
the old version is deleted afterwards. A writer killed at any step therefore leaves a store
whose manifest lists only complete recordings, each either the old or the new version.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from contextlib import contextmanager

import numpy as np

from .._logging import logger
from ..errors import DataError, NeurofmError
from ..schema import validate
from ._fsutil import crash_point, fs_for, host_tag, is_url, local_path, pid_alive, quiet_zarr
from .errors import ConcurrentWriteError
from .ids import new_token, parse_version, version_name
from .manifest import MANIFEST_NAME, TIME_ATTR, TMP_PREFIX, TOKEN_ATTR, read_manifest

__all__ = ["CHUNK_BYTES", "store_lock", "write_recording"]

#: Target size of one chunk (all channels x chunk samples x 4 bytes) when chunk_seconds=None.
CHUNK_BYTES = 1 << 20
#: Temporaries of writers on other machines are removed once older than this (seconds).
STALE_SECONDS = 24 * 3600
#: A remote writer lease older than this (seconds) is considered abandoned.
LEASE_SECONDS = 600
LEASE_NAME = ".writer-lease.json"

_REMOTE_LOCKS = {}
_REMOTE_LOCKS_GUARD = threading.Lock()


# --------------------------------------------------------------------------------------------
# locks
# --------------------------------------------------------------------------------------------
@contextmanager
def store_lock(fs, root, *, lease=True):
    """Exclusive lock on a store's manifest.

    Local stores: a :mod:`filelock` lock file ``<root>/.lock`` (works across processes and
    threads, on every platform). Object stores have no locks: writers of one process are
    serialised by a process-wide lock, and (``lease=True``) a lease file
    ``<root>/.writer-lease.json`` makes a writer in *another* process fail with
    :class:`~neurofm.store.errors.ConcurrentWriteError` instead of silently losing rows.
    """
    if fs is None:
        from filelock import FileLock

        os.makedirs(root, exist_ok=True)
        with FileLock(os.path.join(root, ".lock")):
            yield
        return
    key = (type(fs).__name__, root)
    with _REMOTE_LOCKS_GUARD:
        lock = _REMOTE_LOCKS.setdefault(key, threading.RLock())
    with lock:
        if not lease:
            yield
            return
        owner = _take_lease(fs, root)
        try:
            yield
        finally:
            _drop_lease(fs, root, owner)


def _read_lease(fs, path):
    import json

    try:
        with fs.open(path, "rb") as fid:
            return json.loads(fid.read().decode())
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - unreadable lease (torn write): treat as held
        return {"owner": "?", "time": time.time(), "host": "?", "pid": -1}


def _take_lease(fs, root):
    import json
    import uuid

    path = f"{root}/{LEASE_NAME}"
    held = _read_lease(fs, path)
    if held is not None:
        dead = held.get("host") == host_tag() and not pid_alive(int(held.get("pid", -1)))
        if not dead and time.time() - float(held.get("time", 0)) < LEASE_SECONDS:
            raise ConcurrentWriteError(
                f"{root}: another writer (host {held.get('host')}, pid {held.get('pid')}) is "
                f"updating this remote store's manifest; object stores have no locks, so one "
                f"process writes at a time. Let parallel jobs write with "
                f"write_recording(ds, '<store>/<id>.zarr') and list them once with "
                f"index_store(store) (or remove {LEASE_NAME} if that writer is gone)")
    owner = uuid.uuid4().hex
    lease = {"owner": owner, "host": host_tag(), "pid": os.getpid(), "time": time.time()}
    with fs.open(path, "wb") as fid:
        fid.write(json.dumps(lease).encode())
    back = _read_lease(fs, path)
    if back is None or back.get("owner") != owner:
        raise ConcurrentWriteError(f"{root}: another writer took this remote store's lease "
                                   "at the same time; retry (one writer at a time)")
    return owner


def _drop_lease(fs, root, owner):
    path = f"{root}/{LEASE_NAME}"
    held = _read_lease(fs, path)
    if held is not None and held.get("owner") == owner:
        fs.rm(path)


# --------------------------------------------------------------------------------------------
# temporaries
# --------------------------------------------------------------------------------------------
def tmp_name(name, token):
    """``.tmp-<token>-<pid>-<host>-<name>``: who wrote it, so dead writers' leftovers can go."""
    return f"{TMP_PREFIX}{token}-{os.getpid()}-{host_tag()}-{name}"


def tmp_is_dead(name, mtime):
    """True when temporary ``name`` belongs to a writer that no longer runs.

    Same machine: its process is gone. Other machines: older than :data:`STALE_SECONDS`.
    Call under the store lock (a live manifest writer holds it, so a manifest temporary
    seen then is dead).
    """
    parts = name[len(TMP_PREFIX):].split("-", 3)
    if name.endswith(MANIFEST_NAME):
        return True
    if len(parts) == 4 and parts[1].isdigit() and parts[2] == host_tag():
        return not pid_alive(int(parts[1]))
    return time.time() - mtime > STALE_SECONDS


def listed_paths(fs, root):
    """Version folders the store's manifest lists (empty when there is no manifest)."""
    target = f"{root}/{MANIFEST_NAME}" if fs is not None else os.path.join(root, MANIFEST_NAME)
    try:
        manifest = read_manifest(fs, target, strict=False)
    except FileNotFoundError:
        return set()
    return set(manifest["path"])


# --------------------------------------------------------------------------------------------
# staged recordings
# --------------------------------------------------------------------------------------------
class Staged:
    """A recording written under a temporary name beside its target, not yet visible.

    Parameters
    ----------
    path : str
        The target ``<parent>/<name>`` (local path or URL).
    storage_options : dict, optional
    token : str
        Write token of this version (also in the group attrs).
    """

    def __init__(self, path, storage_options, token):
        path = os.fspath(path)
        self.path = path
        self.token = token
        self.remote = is_url(path)
        if self.remote:
            self.fs, target = fs_for(path, storage_options)
            self.protocol = path.split("://", 1)[0]
            self.parent, self.name = target.rsplit("/", 1) if "/" in target else ("", target)
            self.tmp = f"{self.parent}/{tmp_name(self.name, token)}"
            self.tmp_location = f"{self.protocol}://{self.tmp}"
        else:
            self.fs = None
            self.parent, self.name = os.path.split(os.path.abspath(local_path(path)))
            os.makedirs(self.parent, exist_ok=True)
            self.tmp = self.tmp_location = os.path.join(self.parent,
                                                        tmp_name(self.name, token))

    def _join(self, name):
        return f"{self.parent}/{name}" if self.remote else os.path.join(self.parent, name)

    def location(self, name):
        """Location (path or URL) of ``name`` beside the target."""
        full = self._join(name)
        return f"{self.protocol}://{full}" if self.remote else full

    def exists(self, name):
        full = self._join(name)
        return self.fs.exists(full) if self.remote else os.path.exists(full)

    def rename_to(self, name):
        """Rename the staged folder to ``name`` (must be free)."""
        target = self._join(name)
        if self.remote:
            self.fs.mv(self.tmp, target, recursive=True)
        else:
            os.replace(self.tmp, target)

    def move_aside(self, name):
        """Rename the existing folder ``name`` to a temporary (deleted by :meth:`drop`)."""
        aside = self._join(tmp_name(f"old-{name}", new_token()))
        if self.remote:
            self.fs.mv(self._join(name), aside, recursive=True)
        else:
            os.replace(self._join(name), aside)
        return aside

    def drop(self, full):
        """Delete a folder moved aside (or any folder beside the target)."""
        if self.remote:
            if self.fs.exists(full):
                self.fs.rm(full, recursive=True)
        else:
            shutil.rmtree(full, ignore_errors=True)

    def publish(self):
        """Make the staged recording visible at the target, never touching a listed version.

        When the store manifest beside the target lists the target folder, the new version
        goes to ``<id>@<token>.zarr`` instead (visible once :func:`index_store` switches the
        manifest to it). An unlisted folder at the target is replaced.

        Returns
        -------
        location : str
            Where the recording now is.
        """
        fs = self.fs if self.remote else None
        with store_lock(fs, self.parent, lease=False):
            listed = listed_paths(fs, self.parent)
            crash_point("publish-locked")
            name = self.name
            if name in listed:
                parsed = parse_version(name)
                if parsed is None:
                    raise NeurofmError(f"{self.location(name)}: listed by the store manifest "
                                       "but not named <id>.zarr; cannot add a version")
                name = version_name(parsed[0], self.token)
            aside = None
            if self.exists(name):
                aside = self.move_aside(name)
                crash_point("publish-aside")
            self.rename_to(name)
            crash_point("publish-renamed")
        if aside is not None:
            self.drop(aside)
        return self.path if name == self.name else self.location(name)

    def discard(self):
        """Delete the staged folder (after a failure).

        When a block fails, dask may still be finishing other blocks of the same write: the
        folder is removed again until nothing reappears.
        """
        for _ in range(40):
            self.drop(self.tmp)
            time.sleep(0.05)
            if not self.exists(self.tmp.rsplit("/", 1)[-1] if self.remote else
                               os.path.basename(self.tmp)):
                return


# --------------------------------------------------------------------------------------------
# codecs
# --------------------------------------------------------------------------------------------
def compressors(compressor):
    """zarr bytes-to-bytes codecs of the signal: the compressor, then a crc32c checksum."""
    from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

    if compressor is None or compressor in ("none", "None"):
        codecs = []
    elif compressor == "zstd":
        codecs = [ZstdCodec(level=3)]
    elif compressor == "blosc":
        codecs = [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")]
    elif isinstance(compressor, str):
        raise NeurofmError(f"compressor must be None, 'zstd', 'blosc' or a zarr codec; got "
                           f"{compressor!r}")
    else:
        codecs = [compressor]
    return [*codecs, Crc32cCodec()]


def _other_compressors():
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return [ZstdCodec(level=0), Crc32cCodec()]


# --------------------------------------------------------------------------------------------
# finiteness, checked on the blocks as they are written
# --------------------------------------------------------------------------------------------
def _finite_checker(name, channels, nan_ok):
    def check(block, block_info=None):
        loc = block_info[0]["array-location"] if block_info else [(0, block.shape[0]),
                                                                   (0, block.shape[1])]
        (c0, _), (t0, t1) = loc
        if t0 > 0:
            crash_point("writing")
        bad = ~np.isfinite(block)
        if nan_ok is not None:
            bad &= ~(np.isnan(block) & nan_ok[c0:c0 + block.shape[0], None])
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            chans = [str(channels[c0 + r]) for r in rows[:5]]
            raise DataError(f"{name}: signal has {int(bad.sum())} NaN/Inf values in samples "
                            f"{t0}-{t1} of channel(s) {', '.join(chans)}"
                            f"{' ...' if len(rows) > 5 else ''}; nothing was written")
        return block

    return check


def _chunk_len(ds, chunk_seconds):
    n_ch = int(ds.sizes["channel"])
    if chunk_seconds is None:
        chunk = max(1, CHUNK_BYTES // (4 * max(n_ch, 1)))
    else:
        if not (isinstance(chunk_seconds, (int, float)) and chunk_seconds > 0):
            raise NeurofmError(f"chunk_seconds must be a number > 0; got {chunk_seconds!r}")
        chunk = max(1, round(chunk_seconds * float(ds.attrs["sfreq"])))
    return min(chunk, max(1, int(ds.sizes["time"])))


def stage_recording(ds, path, *, chunk_seconds=None, compressor=None, attrs=None,
                    storage_options=None, validated=False, name=None):
    """Write ``ds`` under a temporary name beside ``path``; return the :class:`Staged`.

    The signal is computed once: its structure is validated up front, its values (NaN/Inf)
    block by block while they are written.
    """
    name = name or str(path)
    sig = ds.get("signal")
    lazy = sig is not None and not isinstance(sig.variable._data, np.ndarray)
    if not validated:
        # in-memory signals are checked here (cheap); lazy ones while they are written
        validate(ds, check_values=not lazy, name=name)
    chunk = _chunk_len(ds, chunk_seconds)
    n_ch = int(ds.sizes["channel"])
    codecs = compressors(compressor)  # argument errors before anything is written
    token = new_token()
    out = ds.copy(deep=False)
    out.attrs = {**ds.attrs, **(attrs or {}), TOKEN_ATTR: token, TIME_ATTR: time.time_ns()}
    if lazy:
        nan_ok = None
        if "recorded" in ds.coords:
            nan_ok = ~np.asarray(ds.coords["recorded"].values).astype(bool)
        signal = out["signal"].chunk({"channel": -1, "time": chunk})
        check = _finite_checker(name, np.asarray(ds["channel"].values), nan_ok)
        data = signal.data.map_blocks(check, dtype=signal.dtype)
        out["signal"] = signal.copy(data=data)
    for var in out.variables.values():
        var.encoding = {}
    encoding = {k: {"compressors": _other_compressors()} for k in out.variables
                if k != "signal"}
    encoding["signal"] = {"chunks": (n_ch, chunk), "compressors": codecs}
    staged = Staged(path, storage_options, token)
    try:
        with quiet_zarr():
            out.to_zarr(staged.tmp_location, mode="w", zarr_format=3, consolidated=True,
                        encoding=encoding, write_empty_chunks=True,
                        storage_options=(storage_options or None) if staged.remote else None)
        crash_point("staged")
    except BaseException:
        staged.discard()
        raise
    return staged


def write_recording(ds, path, *, chunk_seconds=None, compressor=None, attrs=None,
                    storage_options=None, validated=False, stage_only=False):
    """Write one recording as a zarr group, atomically, in the store layout.

    The group is written under a temporary name beside ``path`` and renamed into place, so
    ``path`` either holds a complete recording or what it held before. Pipelines use this to
    fill a store from parallel jobs, then :func:`~neurofm.store.index_store`. Inside a store,
    a folder the manifest lists is never replaced: the new version is written as
    ``<id>@<token>.zarr`` beside it, and :func:`~neurofm.store.index_store` switches the
    manifest to the newest version of each id and removes the others.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical recording, signal of shape (n_channels, n_times). A dask-backed signal is
        computed once, chunk by chunk, and checked for NaN/Inf as it is written.
    path : str | os.PathLike
        Target ``<store>/<id>.zarr`` (local path or fsspec URL).
    chunk_seconds : float, optional
        Chunk length along time; by default chunks of about 1 MiB (all channels).
    compressor : None | "zstd" | "blosc" | zarr codec
        See :meth:`~neurofm.store.Store.add`. Every chunk also carries a crc32c checksum.
    attrs : dict, optional
        Extra flat attributes to store (e.g. ``config_hash``).
    storage_options : dict, optional
        fsspec options for URLs.
    validated : bool
        Skip the structural validation (the caller already ran it).
    stage_only : bool
        Write under the temporary name only and return the :class:`Staged` recording
        (``.publish()`` makes it visible, ``.discard()`` deletes it).

    Returns
    -------
    path : str
        Where the recording was written: ``path``, or ``<id>@<token>.zarr`` beside it when
        the store manifest lists ``path``.

    Raises
    ------
    SchemaError
        ``ds`` does not follow the canonical layout.
    DataError
        NaN/Inf in the signal (nothing is left on disk).
    """
    staged = stage_recording(ds, path, chunk_seconds=chunk_seconds, compressor=compressor,
                             attrs=attrs, storage_options=storage_options,
                             validated=validated)
    if stage_only:
        return staged
    try:
        location = staged.publish()
    except BaseException:
        staged.discard()
        raise
    logger.debug("wrote %s", location)
    return location
