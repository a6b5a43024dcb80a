"""Recording ids, and the folder names of the versions of a recording inside a store.

A recording ``<id>`` lives in ``<id>.zarr`` (its first version) or ``<id>@<token>.zarr`` (a
later version, written beside the one the manifest lists so that a replacement never touches
the data readers are using). ``@`` cannot occur in an id, so the two never clash.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from ..errors import NeurofmError

__all__ = ["ENTITY_KEYS", "check_id", "entity_id", "new_token", "parse_version",
           "recording_id", "version_name"]

#: BIDS entities that name a recording, in file-name order: (attribute / column, key).
ENTITY_KEYS = (("subject", "sub"), ("session", "ses"), ("task", "task"), ("acquisition", "acq"),
               ("run", "run"), ("space", "space"))

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_TOKEN_RE = re.compile(r"[0-9a-f]{8,32}")


def _safe_id(name, default="recording"):
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or default


def check_id(rec_id, name="id"):
    """Raise :class:`~neurofm.errors.NeurofmError` unless ``rec_id`` is a valid id."""
    if not isinstance(rec_id, str) or not _ID_RE.fullmatch(rec_id):
        raise NeurofmError(f"{name} must be a string of letters, digits, '.', '_' and '-' "
                           f"(starting with a letter or digit); got {rec_id!r}")
    return rec_id


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


def new_token():
    """A fresh write token (16 hex digits), stored in a version's attrs and manifest row."""
    return uuid.uuid4().hex[:16]


def version_name(rec_id, token=None):
    """Folder name of a version: ``<id>.zarr`` (token None) or ``<id>@<token>.zarr``."""
    return f"{rec_id}.zarr" if token is None else f"{rec_id}@{token}.zarr"


def parse_version(name):
    """``(id, token)`` of a version folder name (token None for ``<id>.zarr``), or None.

    Temporaries (``.tmp-...``) and other names give None.
    """
    if not name.endswith(".zarr") or name.startswith("."):
        return None
    stem = name[: -len(".zarr")]
    rec_id, sep, token = stem.partition("@")
    if not _ID_RE.fullmatch(rec_id):
        return None
    if not sep:
        return rec_id, None
    if not _TOKEN_RE.fullmatch(token):
        return None
    return rec_id, token
