"""Run the Snakemake preprocessing pipelines of ``pipelines/`` and plan their inputs.

The workflow itself lives in ``pipelines/Snakefile`` (rules in ``pipelines/rules/*.smk``);
this module is what it and the ``neurofm preprocess`` command share:

- :func:`load_config` validates a pipeline config against ``pipelines/config/schema.yaml``
  (with :func:`snakemake.utils.validate`, which fills in the defaults) and checks what a
  schema cannot (inputs exist, the modality has what it needs);
- :func:`discover` lists the recordings to process (from a BIDS root through
  :func:`neurofm.io.bids.find_recordings`, suite2p folders, or an explicit file list) with
  their subject / session / task / run wildcards;
- :func:`assign_splits` draws the seeded train / val / test split by subject;
- :func:`config_hash` fingerprints the parameters written into every output;
- :func:`run_pipeline` runs ``python -m snakemake`` in a subprocess (Snakemake >= 8 has no
  ``snakemake.snakemake()`` function) with parameter-aware reruns.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from .._logging import logger
from ..errors import FormatError, NeurofmError

__all__ = [
    "ENTITIES",
    "RERUN_TRIGGERS",
    "STEM",
    "WILDCARD_CONSTRAINTS",
    "assign_splits",
    "config_hash",
    "default_snakefile",
    "discover",
    "labels_of",
    "load_config",
    "run_pipeline",
    "wildcards_of",
]

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
#: What makes Snakemake rerun a job: changed parameters, new or changed inputs. Code changes
#: (the scripts) are deliberately not a trigger, so upgrading neurofm does not redo a study.
RERUN_TRIGGERS = ("mtime", "params", "input")

_LABEL = re.compile(r"^[A-Za-z0-9]+$")
_MODALITY_DATATYPE = {"eeg": "eeg", "meg": "meg", "fmri": "func"}


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
def default_snakefile():
    """The ``pipelines/Snakefile`` of this checkout (or of the current directory).

    Raises
    ------
    FormatError
        When neither the source tree next to the package nor ``./pipelines`` holds one.
    """
    candidates = [Path(__file__).resolve().parents[2] / "pipelines" / "Snakefile",
                  Path.cwd() / "pipelines" / "Snakefile"]
    for path in candidates:
        if path.is_file():
            return path
    raise FormatError(
        "pipelines/Snakefile not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); run from a neurofm source checkout or pass snakefile="
    )


def _schema_path(snakefile):
    return Path(snakefile).resolve().parent / "config" / "schema.yaml"


def load_config(config, *, snakefile=None):
    """Validate a pipeline config and fill in its defaults.

    Parameters
    ----------
    config : str | os.PathLike | dict
        A YAML file or an already loaded mapping (not modified).
    snakefile : str | os.PathLike, optional
        The Snakefile whose ``config/schema.yaml`` applies (default
        :func:`default_snakefile`).

    Returns
    -------
    config : dict
        A validated copy with every default set.

    Raises
    ------
    NeurofmError
        Naming the config file, the offending key, what was expected and what was found.
    """
    import yaml

    source = "config"
    if isinstance(config, (str, os.PathLike)):
        source = str(config)
        path = Path(config)
        if not path.is_file():
            raise FormatError(f"{path}: pipeline config not found")
        try:
            with open(path) as fid:
                config = yaml.safe_load(fid)
        except yaml.YAMLError as err:
            raise FormatError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(config, dict):
        raise NeurofmError(f"{source}: a pipeline config must be a mapping of keys to values; "
                           f"got {type(config).__name__}")
    cfg = copy.deepcopy(config)
    _validate_schema(cfg, _schema_path(snakefile or default_snakefile()), source)
    _check_semantics(cfg, source)
    return cfg


def _validate_schema(cfg, schema, source):
    import jsonschema
    import yaml

    # first a plain jsonschema pass for a precise message (path, expected, found) ...
    with open(schema) as fid:
        spec = yaml.safe_load(fid)
    validator = jsonschema.Draft202012Validator(spec)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:10]:
            where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
            lines.append(f"  - {where}: {_describe(err)}")
        raise NeurofmError(f"{source}: invalid pipeline config ({len(errors)} problem"
                           f"{'s' if len(errors) != 1 else ''}; schema {schema}):\n"
                           + "\n".join(lines))
    # ... then Snakemake's own validation (what the Snakefile runs), and the defaults
    from snakemake.utils import validate

    try:
        validate(cfg, str(schema), set_default=False)
    except Exception as err:
        raise NeurofmError(f"{source}: invalid pipeline config: {err}") from err
    _fill_defaults(cfg, spec)


def _fill_defaults(instance, schema):
    """Set the schema's defaults, recursing into mappings (a null section stays null)."""
    for key, sub in (schema.get("properties") or {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and "properties" in sub:
            _fill_defaults(instance[key], sub)


def _describe(err):
    if err.validator == "enum":
        return f"expected one of {err.validator_value}; found {err.instance!r}"
    if err.validator == "required":
        return f"missing required key ({err.message})"
    if err.validator == "additionalProperties":
        return f"unknown key ({err.message}); see pipelines/config/schema.yaml"
    if err.validator == "type":
        return f"expected {err.validator_value}; found {err.instance!r}"
    if err.validator == "oneOf":
        return (f"found {err.instance!r}, which matches none of the allowed forms "
                f"{[s.get('type', s.get('enum')) for s in err.validator_value]}")
    return f"{err.message}"


def _check_semantics(cfg, source):
    modality = cfg["modality"]
    if ("bids_root" in cfg) == ("inputs" in cfg):
        raise NeurofmError(f"{source}: give exactly one of bids_root (a BIDS dataset) or "
                           f"inputs (a list of files); found "
                           f"{'both' if 'bids_root' in cfg else 'neither'}")
    if modality == "fmri" and not cfg["fmri"].get("atlas"):
        raise NeurofmError(f"{source}: modality fmri needs fmri.atlas (a labels image, maps "
                           "image, coordinate table or one of power_2011, dosenbach_2010, "
                           "seitzman_2018)")
    bp = cfg.get("bandpass")
    if bp and bp.get("l_freq") is None and bp.get("h_freq") is None:
        raise NeurofmError(f"{source}: bandpass needs l_freq and/or h_freq (or set bandpass: "
                           "null to skip it)")
    if cfg.get("reference") is not None and modality != "eeg":
        raise NeurofmError(f"{source}: reference applies to EEG only; found reference="
                           f"{cfg['reference']!r} with modality {modality!r} (set it to null)")
    if cfg.get("dff") is not None and modality != "calcium":
        raise NeurofmError(f"{source}: dff applies to calcium only; found modality "
                           f"{modality!r}")
    split = cfg["store"]["split"]
    total = split["train"] + split["val"] + split["test"]
    if abs(total - 1.0) > 1e-6:
        raise NeurofmError(f"{source}: store.split fractions must sum to 1; found "
                           f"train={split['train']} + val={split['val']} + "
                           f"test={split['test']} = {total:g}")


def config_hash(params):
    """A short, stable fingerprint of JSON-like parameters.

    Parameters
    ----------
    params : dict | list | scalar
        Parameters (keys are sorted, so order does not matter).

    Returns
    -------
    hash : str
        12 hexadecimal characters of the SHA-256 of the canonical JSON.
    """
    from ..schema import to_json_safe

    text = json.dumps(to_json_safe(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------
def assign_splits(subjects, *, train=0.6, val=0.2, test=0.2, seed=0):
    """Assign each subject to train / val / test with a seeded shuffle.

    Counts follow the fractions by largest remainder; every split with a positive fraction
    gets at least one subject when there are enough subjects. All recordings of a subject
    share its split, so no subject leaks across splits.

    Parameters
    ----------
    subjects : iterable of str
        Subject labels (duplicates are ignored).
    train, val, test : float
        Fractions summing to 1.
    seed : int
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    splits : dict of str -> str
        Subject -> "train" | "val" | "test".
    """
    import numpy as np

    subs = sorted({str(s) for s in subjects})
    fractions = {"train": float(train), "val": float(val), "test": float(test)}
    if any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
        raise NeurofmError(f"split fractions must be >= 0 and sum to 1; got {fractions}")
    n = len(subs)
    exact = {k: f * n for k, f in fractions.items()}
    counts = {k: int(np.floor(v)) for k, v in exact.items()}
    order = sorted(exact, key=lambda k: (-(exact[k] - counts[k]), list(exact).index(k)))
    for k in order[: n - sum(counts.values())]:
        counts[k] += 1
    for k in ("train", "val", "test"):
        if fractions[k] > 0 and counts[k] == 0:
            donor = max(counts, key=lambda d: counts[d])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[k] += 1
    perm = np.random.default_rng(seed).permutation(n)
    labels = ["train"] * counts["train"] + ["val"] * counts["val"] + ["test"] * counts["test"]
    return {subs[i]: labels[j] for j, i in enumerate(perm)}


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------
def run_pipeline(config, *, cores=1, dry_run=False, extra_args=(), snakefile=None):
    """Run a preprocessing pipeline with Snakemake.

    Equivalent to::

        python -m snakemake --snakefile pipelines/Snakefile --configfile CONFIG \\
            --cores N --rerun-triggers mtime params input --keep-going --rerun-incomplete

    Parameters
    ----------
    config : str | os.PathLike | dict
        Pipeline config (YAML path or mapping); validated first.
    cores : int
        Cores Snakemake may use (jobs run in parallel, one recording per job).
    dry_run : bool
        Only show what would run (``--dry-run``).
    extra_args : sequence of str
        More Snakemake arguments, e.g. ``("--executor", "slurm", "--jobs", "100")``.
    snakefile : str | os.PathLike, optional
        Another workflow (default :func:`default_snakefile`).

    Returns
    -------
    returncode : int
        Snakemake's exit status (0 on success).

    Raises
    ------
    NeurofmError
        An invalid config (before Snakemake starts) or a bad ``cores``.
    """
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise NeurofmError(f"cores must be an integer >= 1; got {cores!r}")
    if isinstance(extra_args, str):
        raise NeurofmError(f"extra_args must be a sequence of arguments, not one string; got "
                           f"{extra_args!r} (use shlex.split)")
    snakefile = Path(snakefile) if snakefile is not None else default_snakefile()
    if not snakefile.is_file():
        raise FormatError(f"{snakefile}: Snakefile not found")
    load_config(config, snakefile=snakefile)  # fail early, with neurofm's wording
    tmp = None
    if isinstance(config, dict):
        import yaml

        with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="neurofm-config-",
                                         delete=False) as tmp:
            yaml.safe_dump(config, tmp)
        config_path = tmp.name
    else:
        config_path = str(config)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile),
           "--configfile", config_path, "--cores", str(cores),
           "--rerun-triggers", *RERUN_TRIGGERS, "--keep-going", "--rerun-incomplete"]
    if dry_run:
        cmd.append("--dry-run")
    cmd += [str(a) for a in extra_args]
    logger.info("running %s", " ".join(cmd))
    try:
        return subprocess.run(cmd, check=False).returncode
    finally:
        if tmp is not None:
            os.unlink(tmp.name)
