# Shared set-up of the workflow: the validated config, the recordings, the parameters of each
# stage and the input functions of the rules.

import os
import sys
import time

from neurofm import pipelines as nfp
from neurofm.errors import NeurofmError
from neurofm.pipelines.steps import failed_run_step

START = time.time()
CFG = nfp.load_config(dict(config), snakefile=workflow.main_snakefile)
MOD = CFG["modality"]
LAYOUT = nfp.output_layout(CFG)
RECS = nfp.discover(CFG)
if RECS.empty:
    raise NeurofmError(
        f"no {MOD} recordings found in "
        f"{CFG.get('bids_root', 'the inputs list')} with subjects={CFG['subjects']}, "
        f"sessions={CFG['sessions']}, tasks={CFG['tasks']}, runs={CFG['runs']}"
    )
WILDCARDS = [nfp.wildcards_of(r) for r in RECS.itertuples()]
BY_STEM = {r.id: r for r in RECS.itertuples()}
IDS = list(RECS["id"])
# parameters of each stage and their fingerprints (written into every output's attrs)
STAGES = nfp.stage_parameters(CFG)
# recording id -> train / val / test, drawn by subject (seeded)
SPLITS = nfp.recording_splits(RECS, CFG["store"]["split"])
RESOURCES = CFG["resources"]
THREADS = CFG["threads"]
TITLE = {"eeg": "EEG", "meg": "MEG", "fmri": "fMRI", "calcium": "calcium"}[MOD]


def recording(wildcards):
    """The discovered recording (row of nfp.discover) of a job."""
    return BY_STEM[nfp.STEM.format(**wildcards)]


def per_recording(pattern):
    """``pattern`` filled in for every recording."""
    return [pattern.format(**w) for w in WILDCARDS]


def log_of(rule):
    """The log file pattern of a per-recording rule."""
    return LAYOUT["log"].replace("{rule}", rule)


def read_inputs(wildcards):
    """The input of a recording, plus its fMRI atlas and labels table when they are files
    (so editing them reruns the recording)."""
    rec = recording(wildcards)
    files = [getattr(rec, key, "") for key in ("atlas", "labels")]
    return {"source": rec.path, "atlas": [f for f in files if f and os.path.isfile(f)]}


def fmri_params(wildcards):
    """The fmri section with this recording's atlas and labels filled in (fMRI only)."""
    if MOD != "fmri":
        return None
    rec = recording(wildcards)
    return {**CFG["fmri"], "atlas": rec.atlas, "labels": rec.labels}


def store_target(wildcards):
    """The name a recording is written under in the store folder."""
    return LAYOUT["recording"].format(**wildcards)


def failed_run():
    """Called when jobs failed: list the recordings that succeeded, write failures.tsv."""
    try:
        failed_run_step(CFG, since=START - 1.0, config_hash=nfp.config_hash(CFG))
    except Exception as err:  # the run already failed: report, never mask the job errors
        print(f"neurofm: could not index the recordings that succeeded: "
              f"{type(err).__name__}: {err}", file=sys.stderr)
