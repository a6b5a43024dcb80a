"""Which recordings a pipeline config processes, and how they are named.

:func:`discover` lists the recordings (from a BIDS root through
:func:`neurofm.io.bids.find_recordings`, suite2p folders, or an explicit file list) with their
subject / session / task / run labels; :data:`STEM` names every per-recording output, and
:func:`wildcards_of` / :func:`labels_of` convert between entity labels and the Snakemake
wildcard values of :data:`STEM`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .._logging import logger
from ..errors import FormatError, NeurofmError

__all__ = ["ENTITIES", "STEM", "WILDCARD_CONSTRAINTS", "discover", "labels_of", "output_layout",
           "wildcards_of"]

#: Wildcards of every per-recording rule.
ENTITIES = ("subject", "session", "task", "run")
#: Per-recording file stem. Optional entities carry their own prefix in the wildcard value
#: (``session`` is "" or "_ses-1"), so names stay BIDS-like: ``sub-01_task-rest``.
STEM = "sub-{subject}{session}{task}{run}"
#: Wildcard constraints of :data:`STEM`.
WILDCARD_CONSTRAINTS = {
    "subject": r"[A-Za-z0-9]+",
    "session": r"(_ses-[A-Za-z0-9]+)?",
    "task": r"(_task-[A-Za-z0-9]+)?",
    "run": r"(_run-[A-Za-z0-9]+)?",
}
_PREFIX = {"session": "_ses-", "task": "_task-", "run": "_run-"}
_LABEL = re.compile(r"^[A-Za-z0-9]+$")
_MODALITY_DATATYPE = {"eeg": "eeg", "meg": "meg", "fmri": "func"}


def discover(config):
    """The recordings a pipeline config processes.

    Parameters
    ----------
    config : dict
        A config from :func:`load_config`.

    Returns
    -------
    recordings : pandas.DataFrame
        One row per recording: ``subject``, ``session``, ``task``, ``run`` (labels, "" where
        a file name has no such entity), ``path`` (input file or folder), ``atlas`` and
        ``labels`` (fMRI, with placeholders filled; "" when not set), ``id`` (the file stem
        and store id, e.g. ``sub-01_task-rest``). Sorted by the entities.

    Raises
    ------
    FormatError
        A missing bids_root or input file.
    NeurofmError
        A file name without a subject, labels with characters other than letters and
        digits, or two inputs that map to the same outputs.
    """
    import pandas as pd

    modality = config["modality"]
    if "inputs" in config:
        rows = [_input_row(item) for item in config["inputs"]]
    else:
        root = Path(config["bids_root"])
        if not root.is_dir():
            raise FormatError(f"bids_root {root} not found (expected a BIDS dataset "
                              "directory; build the sample one with `neurofm sample-data`)")
        if modality == "calcium":
            rows = _suite2p_rows(root)
        else:
            rows = _bids_rows(root, modality, config)
    df = pd.DataFrame(rows, columns=[*ENTITIES, "path"])
    for key in ENTITIES:  # the subjects / sessions / tasks / runs selections
        wanted = config.get(f"{key}s")
        if wanted not in (None, "all"):
            values = [str(v) for v in wanted]
            df = df[[_label_match(v, values) for v in df[key]]]
    for key in ENTITIES:
        df[key] = [str(v) for v in df[key]]
        bad = [v for v in df[key] if v and not _LABEL.match(v)]
        if bad:
            raise NeurofmError(f"{key} labels must hold letters and digits only (BIDS); "
                               f"found {sorted(set(bad))[:5]}")
    dupes = df[df.duplicated(list(ENTITIES), keep=False)]
    if len(dupes):
        raise NeurofmError(
            "several inputs have the same subject/session/task/run and would write the same "
            f"outputs: {sorted(dupes['path'])[:4]}; select one with subjects/sessions/tasks/"
            "runs or fmri.space")
    df["id"] = [STEM.format(**wildcards_of(r)) for r in df.itertuples()]
    fmri = config.get("fmri") or {}
    for key in ("atlas", "labels"):
        template = fmri.get(key)
        df[key] = [_fill(f"fmri.{key}", template, r, config) if template else ""
                   for r in df.itertuples()]
    return df.sort_values(list(ENTITIES)).reset_index(drop=True)


def wildcards_of(row):
    """Wildcard values of :data:`STEM` for a recording (a :func:`discover` row or a dict).

    Returns
    -------
    wildcards : dict of str -> str
        ``{"subject": "01", "session": "", "task": "_task-rest", "run": "_run-1"}``.
    """
    get = (lambda k: row[k]) if isinstance(row, dict) else (lambda k: getattr(row, k))
    out = {"subject": str(get("subject"))}
    for key, prefix in _PREFIX.items():
        value = str(get(key) or "")
        out[key] = f"{prefix}{value}" if value else ""
    return out


def labels_of(wildcards):
    """Entity labels from :data:`STEM` wildcard values (the inverse of :func:`wildcards_of`).

    Returns
    -------
    labels : dict of str -> str
        ``{"subject": "01", "session": "", "task": "rest", "run": "1"}``.
    """
    out = {"subject": str(wildcards["subject"])}
    for key, prefix in _PREFIX.items():
        value = str(wildcards.get(key, "") or "")
        out[key] = value.removeprefix(prefix)
    return out


def _fill(name, template, row, config):
    """``template`` with the recording's entities and ``bids_root`` filled in."""
    values = {k: getattr(row, k) for k in ENTITIES}
    values["bids_root"] = config.get("bids_root", "")
    try:
        return str(template).format(**values)
    except (KeyError, IndexError) as err:
        raise NeurofmError(f"{name} {template!r}: unknown placeholder {err}; use "
                           "{subject}, {session}, {task}, {run} or {bids_root}") from None


def _label_match(value, wanted):
    for w in wanted:
        if value == w or (value.isdigit() and w.isdigit() and int(value) == int(w)):
            return True
    return False


def _input_row(item):
    from ..io.bids import parse_entities

    if isinstance(item, dict):
        path = Path(item["path"])
        ents = {k: str(item.get(k, "") or "") for k in ENTITIES}
    else:
        path = Path(item)
        ents = parse_entities(path)
        if "subject" not in ents:
            raise NeurofmError(f"inputs: {path} has no BIDS subject entity in its name "
                               "(expected sub-<label>_..._<suffix>.<ext>); give it as a "
                               "mapping {path: ..., subject: ...}")
    if not path.exists():
        raise FormatError(f"inputs: {path} not found")
    return _row(ents, path)


def _row(entities, path):
    """A :func:`discover` row: the BIDS entities ("" when absent) and the input path."""
    return {**{k: entities.get(k, "") for k in ENTITIES}, "path": str(path)}


def _bids_rows(root, modality, config):
    from ..io.bids import find_recordings

    datatype = _MODALITY_DATATYPE[modality]
    recs = find_recordings(root, datatype=datatype, derivatives=(modality == "fmri"))
    if modality == "fmri":
        recs = recs[recs["desc"] == "preproc"]
        space = config["fmri"].get("space")
        if space:
            recs = recs[recs["space"] == space]
    return [_row(r, r["path"]) for r in recs.to_dict("records")]


def _suite2p_rows(root):
    """suite2p folders named ``sub-<s>[_ses-<s>]_task-<t>[_run-<r>]_suite2p`` with plane0."""
    from ..io.bids import parse_entities

    rows = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        if not here.name.endswith("_suite2p"):
            continue
        ents = parse_entities(here.name)
        if "subject" not in ents or ents.get("suffix") != "suite2p":
            continue
        plane = here / "plane0"
        if not plane.is_dir():
            logger.warning("%s: no plane0 folder; skipped", here)
            continue
        rows.append(_row(ents, plane))
        dirnames[:] = []
    return rows


def output_layout(config):
    """Where a pipeline writes what, under its ``out_dir`` (the Snakefile's paths).

    Parameters
    ----------
    config : dict
        A config from :func:`neurofm.pipelines.load_config`.

    Returns
    -------
    layout : dict of str -> str
        Path templates; per-recording ones contain :data:`STEM` (``{subject}`` ...), ``log``
        also ``{rule}``:

        - ``raw``: ``work/<modality>/<stem>_desc-raw.zarr``, the recording as read;
        - ``done``: ``work/<modality>/<stem>_desc-preproc.json``, written when a recording
          is in the store (its path there and its ``config_hash``);
        - ``store``: the store folder; ``recording``: ``store/<stem>.zarr``, the name a
          recording is written under (:func:`neurofm.store.write_recording`);
        - ``indexed``: ``work/store.json``, written when the manifest lists every recording;
        - ``qc``, ``summary``: the QC pages; ``log``: ``logs/<rule>/<stem>.log``;
        - ``failures``: ``failures.tsv``, what failed in the last run (when something did).
    """
    out = str(config["out_dir"]).rstrip("/") or "."
    mod = config["modality"]
    return {
        "out": out,
        "raw": f"{out}/work/{mod}/{STEM}_desc-raw.zarr",
        "done": f"{out}/work/{mod}/{STEM}_desc-preproc.json",
        "store": f"{out}/store",
        "recording": f"{out}/store/{STEM}.zarr",
        "indexed": f"{out}/work/store.json",
        "qc": f"{out}/qc/{STEM}_qc.html",
        "summary": f"{out}/qc/summary.html",
        "log": f"{out}/logs/{{rule}}/{STEM}.log",
        "failures": f"{out}/failures.tsv",
    }
