"""BIDS datasets: parse entities, follow sidecars and list the recordings of a tree.

Converting a whole dataset into a store is :func:`neurofm.store.convert.convert_bids`.

A small entity parser (no pybids / mne-bids dependency) covers what neurofm reads:
``sub-<label>[/ses-<label>]/{eeg,meg,ieeg,func}/`` recordings and fMRIPrep derivatives
(``*_desc-preproc_bold.nii.gz`` next to ``*_desc-confounds_timeseries.tsv``). JSON sidecars
follow the BIDS inheritance principle (:func:`sidecar_metadata`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import FormatError, NeurofmError

__all__ = [
    "DATATYPES",
    "RECORDING_COLUMNS",
    "find_recordings",
    "is_bids_root",
    "parse_entities",
    "sidecar_metadata",
]

#: Datatype folder -> (suffix, readable extensions).
DATATYPES = {
    "eeg": ("eeg", (".edf", ".bdf", ".vhdr", ".set")),
    "meg": ("meg", (".fif", ".ds", ".sqd", ".con")),
    "ieeg": ("ieeg", (".edf", ".bdf", ".vhdr", ".set")),
    "func": ("bold", (".nii.gz", ".nii")),
}

#: Entity keys in file names -> column names.
ENTITY_NAMES = {
    "sub": "subject", "ses": "session", "task": "task", "acq": "acquisition",
    "ce": "ceagent", "rec": "reconstruction", "dir": "direction", "run": "run",
    "echo": "echo", "space": "space", "res": "resolution", "den": "density",
    "desc": "desc", "split": "split", "proc": "processing",
}
_ENTITY_KEYS = {long: key for key, long in ENTITY_NAMES.items()}

#: Columns of :func:`find_recordings`.
RECORDING_COLUMNS = ("subject", "session", "task", "acquisition", "run", "datatype",
                     "suffix", "extension", "space", "desc", "derivatives", "path",
                     "confounds", "sidecar")

_SKIP_DIRS = {"sourcedata", "code", "stimuli", "phenotype"}
_CONFOUND_SUFFIXES = ("_desc-confounds_timeseries.tsv", "_desc-confounds_regressors.tsv")
_SCAN_ENTITIES = ("space", "res", "den", "desc")


# --------------------------------------------------------------------------------------------
# file names and sidecars
# --------------------------------------------------------------------------------------------
def parse_entities(path):
    """Parse the BIDS entities of a file name.

    Parameters
    ----------
    path : str | os.PathLike
        e.g. ``sub-01/ses-1/func/sub-01_ses-1_task-rest_run-1_bold.nii.gz``.

    Returns
    -------
    entities : dict of str -> str
        Long entity names (subject, session, task, acquisition, run, space, desc, ...)
        plus ``suffix`` and ``extension`` (".nii.gz", ".edf", ...). Only what the name holds;
        an empty dict for a name that is not BIDS-like.
    """
    name = Path(path).name
    stem, ext = _split_ext(name)
    parts = stem.split("_")
    out = {}
    for part in parts[:-1]:
        key, sep, value = part.partition("-")
        if not sep or not key or not value:
            return {}
        out[ENTITY_NAMES.get(key, key)] = value
    last = parts[-1]
    if "-" in last:  # no suffix: the last part is an entity
        key, _, value = last.partition("-")
        out[ENTITY_NAMES.get(key, key)] = value
    elif last:
        out["suffix"] = last
    if "subject" not in out and not name.startswith("task-") \
            and not any(k in out for k in ENTITY_NAMES.values()):
        return {}
    if ext:
        out["extension"] = ext
    return out


def _split_ext(name):
    lower = name.lower()
    for ext in (".nii.gz", ".tsv.gz", ".fif.gz"):
        if lower.endswith(ext):
            return name[: -len(ext)], name[-len(ext):]
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return name, ""
    return stem, "." + ext


def _short(entities):
    return {_ENTITY_KEYS.get(k, k): v for k, v in entities.items()
            if k not in ("suffix", "extension")}


def is_bids_root(path):
    """True when ``path`` is a directory holding dataset_description.json or sub-* folders."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / "dataset_description.json").is_file():
        return True
    return any(p.is_dir() and p.name.startswith("sub-") for p in path.iterdir())


def _dataset_root(path):
    for parent in Path(path).resolve().parents:
        if (parent / "dataset_description.json").is_file():
            return parent
    return Path(path).resolve().parent


def sidecar_metadata(path):
    """The JSON sidecar metadata of a BIDS file, following the inheritance principle.

    Every ``*.json`` from the dataset root down to the file's folder whose entities are a
    subset of the file's and whose suffix matches applies; deeper and more specific files
    override shallower ones.

    Parameters
    ----------
    path : str | os.PathLike
        A data file (e.g. a ``_bold.nii.gz``).

    Returns
    -------
    meta : dict
        Merged metadata; empty when no sidecar applies.

    Raises
    ------
    FormatError
        A sidecar that applies is not valid JSON.
    """
    path = Path(path)
    ents = parse_entities(path)
    same_stem = path.parent / (_split_ext(path.name)[0] + ".json")
    if not ents:
        return _read_json(same_stem) if same_stem.is_file() else {}
    suffix = ents.get("suffix")
    own = _short(ents)
    root = _dataset_root(path)
    folders = [root]
    try:
        rel = path.resolve().parent.relative_to(root)
        for part in rel.parts:
            folders.append(folders[-1] / part)
    except ValueError:
        folders = [path.resolve().parent]
    candidates = []
    for depth, folder in enumerate(folders):
        if not folder.is_dir():
            continue
        for js in folder.glob("*.json"):
            if js.name == "dataset_description.json":
                continue
            je = parse_entities(js)
            if not je or je.get("suffix") != suffix:
                continue
            short = _short(je)
            if all(own.get(k) == v for k, v in short.items()):
                candidates.append((depth, len(short), js))
    meta = {}
    for _, _, js in sorted(candidates, key=lambda c: (c[0], c[1], c[2].name)):
        meta.update(_read_json(js))
    return meta


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
    except (OSError, ValueError) as err:
        raise FormatError(f"{path}: not a readable JSON sidecar ({err})") from err
    if not isinstance(value, dict):
        raise FormatError(f"{path}: a JSON sidecar must hold an object; found "
                          f"{type(value).__name__}")
    return value


# --------------------------------------------------------------------------------------------
# listing
# --------------------------------------------------------------------------------------------
def find_recordings(root, *, datatype=None, subject=None, session=None, task=None, run=None,
                    derivatives=False):
    """List the recordings of a BIDS dataset.

    Parameters
    ----------
    root : str | os.PathLike
        The dataset root (holding ``dataset_description.json`` and/or ``sub-*`` folders).
    datatype : str | sequence of str, optional
        Among "eeg", "meg", "ieeg", "func"; all by default.
    subject, session, task, run : str | int | sequence, optional
        Keep only these labels (without the ``sub-``/``ses-`` prefixes); runs compare as
        numbers when both are numeric ("01" matches 1).
    derivatives : bool
        Also list fMRIPrep outputs under ``root/derivatives/*`` (``*_desc-preproc_bold``)
        with the path of their confounds table.

    Returns
    -------
    recordings : pandas.DataFrame
        One row per recording, columns :data:`RECORDING_COLUMNS`: BIDS entities (""
        where absent), ``datatype``, ``suffix``, ``extension``, ``derivatives`` (pipeline
        folder name, "" for raw data), ``path``, ``confounds`` (fMRIPrep table or "") and
        ``sidecar`` (the same-name JSON or ""). Sorted by subject, session, task, run, path.
    """
    import pandas as pd

    root = Path(root)
    if not root.is_dir():
        raise FormatError(f"{root}: BIDS root not found (expected a directory)")
    types = _as_list("datatype", datatype, tuple(DATATYPES))
    rows = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel = here.relative_to(root).parts
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not (len(rel) == 0 and d in _SKIP_DIRS)
                             and not (len(rel) == 0 and d == "derivatives" and not derivatives))
        pipeline = rel[1] if len(rel) > 1 and rel[0] == "derivatives" else ""
        if rel and rel[0] == "derivatives" and len(rel) < 2:
            continue
        dtype = here.name
        if dtype not in DATATYPES or dtype not in types:
            continue
        if pipeline and dtype != "func":
            continue
        suffix, exts = DATATYPES[dtype]
        entries = list(filenames) + [d for d in dirnames if d.lower().endswith(".ds")]
        for name in sorted(entries):
            ents = parse_entities(name)
            if ents.get("suffix") != suffix or ents.get("extension", "").lower() not in exts:
                continue
            if "subject" not in ents:
                continue
            if ents.get("split") not in (None, "01", "1"):
                continue  # MNE follows split FIF files from the first part
            if pipeline and ents.get("desc") != "preproc":
                continue
            path = here / name
            confounds = _find_confounds(here, ents) if pipeline else ""
            sidecar = here / (_split_ext(name)[0] + ".json")
            rows.append({
                "subject": ents.get("subject", ""), "session": ents.get("session", ""),
                "task": ents.get("task", ""), "acquisition": ents.get("acquisition", ""),
                "run": ents.get("run", ""), "datatype": dtype, "suffix": suffix,
                "extension": ents.get("extension", ""), "space": ents.get("space", ""),
                "desc": ents.get("desc", ""), "derivatives": pipeline, "path": str(path),
                "confounds": confounds, "sidecar": str(sidecar) if sidecar.is_file() else "",
            })
        dirnames[:] = [d for d in dirnames if not d.lower().endswith(".ds")]  # recordings
    df = pd.DataFrame(rows, columns=list(RECORDING_COLUMNS))
    for column, wanted in (("subject", subject), ("session", session), ("task", task),
                           ("run", run)):
        if wanted is not None:
            values = _as_list(column, wanted, None)
            df = df[[_label_match(v, values) for v in df[column]]]
    df = df.sort_values(["subject", "session", "task", "run", "derivatives", "path"])
    return df.reset_index(drop=True)


def _as_list(name, value, allowed):
    if value is None:
        return list(allowed)
    values = [value] if isinstance(value, (str, int)) else list(value)
    values = [str(v) for v in values]
    if allowed is not None:
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise NeurofmError(f"{name} must be among {allowed}; got {unknown}")
    return values


def _label_match(value, wanted):
    for w in wanted:
        if value == w:
            return True
        if value.isdigit() and w.isdigit() and int(value) == int(w):
            return True
    return False


def _find_confounds(folder, ents):
    """The fMRIPrep confounds table for a preprocessed BOLD file, or ""."""
    key = {k: v for k, v in _short(ents).items() if k not in _SCAN_ENTITIES}
    for suffix in _CONFOUND_SUFFIXES:
        for tsv in sorted(folder.glob("*" + suffix)):
            te = _short(parse_entities(tsv))
            te.pop("desc", None)
            if te == key:
                return str(tsv)
    return ""

