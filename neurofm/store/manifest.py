"""The store manifest: one parquet row per listed recording, replaced atomically.

Columns :data:`MANIFEST_COLUMNS`; ``path`` names the version folder (``<id>.zarr`` or
``<id>@<token>.zarr``) that readers open, and ``token`` the write token stored in that
folder's attributes (a reader whose token differs drops what it cached). ``source_file``
and ``source_hash`` record where a recording came from (``neurofm convert`` uses them to skip
sources already stored). Manifests written before ``source_file``/``source_hash``/``token``
existed still open (the columns read as "").
"""

from __future__ import annotations

import os
import uuid

import pandas as pd

from ..errors import FormatError
from ._fsutil import crash_point

__all__ = ["MANIFEST_COLUMNS", "MANIFEST_NAME", "OPTIONAL_COLUMNS", "REQUIRED_COLUMNS",
           "empty_manifest", "manifest_row", "read_manifest", "write_manifest"]

MANIFEST_NAME = "manifest.parquet"
#: Columns every manifest has.
REQUIRED_COLUMNS = ("id", "subject", "session", "task", "run", "modality", "n_channels",
                    "n_times", "sfreq", "split", "path")
#: Columns added later: missing ones read as "".
OPTIONAL_COLUMNS = ("source_file", "source_hash", "token")
MANIFEST_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
TMP_PREFIX = ".tmp-"
_STR_COLUMNS = ("id", "subject", "session", "task", "run", "modality", "path") + \
    OPTIONAL_COLUMNS

#: Private attributes a version folder carries (removed by open_recording).
TOKEN_ATTR = "neurofm_write_token"
TIME_ATTR = "neurofm_write_time_ns"
PRIVATE_ATTRS = (TOKEN_ATTR, TIME_ATTR)


def empty_manifest():
    """A manifest with no rows and the right column dtypes."""
    dtypes = {"n_channels": "int64", "n_times": "int64", "sfreq": "float64"}
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, object)) for c in MANIFEST_COLUMNS})


def manifest_row(rec_id, ds, split, rel, token=""):
    """The manifest row of recording ``ds`` stored in version folder ``rel``."""
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
        "source_file": str(ds.attrs.get("source_file", "") or ""),
        "source_hash": str(ds.attrs.get("source_hash", "") or ""),
        "token": str(token or ""),
    }


def _normalize(manifest, where, *, strict=True):
    missing = [c for c in REQUIRED_COLUMNS if c not in manifest.columns]
    if missing:
        raise FormatError(f"{where}: manifest lacks columns {missing}")
    for col in OPTIONAL_COLUMNS:
        if col not in manifest.columns:
            manifest[col] = ""
        manifest[col] = manifest[col].fillna("").astype(str)
    split = manifest["split"].astype(object)
    manifest["split"] = split.where(split.notna(), None)
    if strict:
        dup = sorted(set(manifest["id"][manifest["id"].duplicated()]))
        if dup:
            raise FormatError(f"{where}: manifest lists ids more than once: {dup}")
    return manifest


def read_manifest(fs, target, *, strict=True):
    """Read and check a manifest (``fs`` None: local file).

    Raises :class:`~neurofm.errors.FormatError` naming ``target`` when it is unreadable,
    lacks a required column or (``strict``) lists an id twice.
    """
    try:
        if fs is None:
            manifest = pd.read_parquet(target)
        else:
            with fs.open(target, "rb") as fid:
                manifest = pd.read_parquet(fid)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise FormatError(f"{target}: unreadable store manifest: {err}") from err
    return _normalize(manifest, target, strict=strict)


def stamp(target):
    """Cheap fingerprint of a local manifest file (changes whenever it is replaced)."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def write_manifest(fs, root, manifest, *, step="manifest"):
    """Write ``manifest`` as ``root/manifest.parquet`` atomically; return it normalised.

    Local: written to a temporary file, fsynced and renamed over the old one. Object stores
    have no rename: the new manifest is written to a temporary key and moved in place.
    """
    manifest = manifest.reset_index(drop=True).copy()
    for col in OPTIONAL_COLUMNS:
        if col not in manifest.columns:
            manifest[col] = ""
    manifest = manifest[list(MANIFEST_COLUMNS) + [c for c in manifest.columns
                                                  if c not in MANIFEST_COLUMNS]]
    for col in _STR_COLUMNS:
        manifest[col] = manifest[col].fillna("").astype(str)
    manifest["split"] = manifest["split"].astype(object)
    name = f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{MANIFEST_NAME}"
    if fs is not None:
        final, tmp = f"{root}/{MANIFEST_NAME}", f"{root}/{name}"
        with fs.open(tmp, "wb") as fid:
            manifest.to_parquet(fid, index=False)
        crash_point(f"{step}-tmp")
        if fs.exists(final):
            fs.rm(final)
        fs.mv(tmp, final)
    else:
        final, tmp = os.path.join(root, MANIFEST_NAME), os.path.join(root, name)
        manifest.to_parquet(tmp, index=False)
        with open(tmp, "rb+") as fid:
            os.fsync(fid.fileno())
        crash_point(f"{step}-tmp")
        os.replace(tmp, final)
        _fsync_dir(root)
    crash_point(step)
    return manifest


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
