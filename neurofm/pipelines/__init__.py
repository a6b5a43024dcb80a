"""The Python side of the Snakemake preprocessing workflow.

The workflow files (Snakefile, rules, scripts, config schema) live in the top-level
``pipelines/`` folder of the source tree and ship inside the wheel as
``neurofm/pipelines/workflow/``; this package is what they and ``neurofm preprocess`` share.

Modules
-------
config
    Config validation against the schema, parameter fingerprints.
discovery
    The recordings a config processes, their wildcards and labels.
splits
    The seeded train / val / test split by subject.
run
    Running Snakemake: the workflow's location, one run per output directory, resuming.
steps
    The per-job work each rule's script calls (read, preprocess, qc, summary, manifest,
    and the store of a run whose jobs failed).
"""

from __future__ import annotations

from .config import CHAIN_STEPS, config_hash, load_config, stage_parameters
from .discovery import (
    ENTITIES,
    STEM,
    WILDCARD_CONSTRAINTS,
    discover,
    labels_of,
    output_layout,
    wildcards_of,
)
from .run import (
    LOCK_NAME,
    RERUN_TRIGGERS,
    clear_stale_snakemake_locks,
    default_snakefile,
    run_pipeline,
)
from .splits import assign_splits, recording_splits

__all__ = [
    "CHAIN_STEPS",
    "ENTITIES",
    "LOCK_NAME",
    "RERUN_TRIGGERS",
    "STEM",
    "WILDCARD_CONSTRAINTS",
    "assign_splits",
    "clear_stale_snakemake_locks",
    "config_hash",
    "default_snakefile",
    "discover",
    "labels_of",
    "load_config",
    "output_layout",
    "recording_splits",
    "run_pipeline",
    "stage_parameters",
    "wildcards_of",
]
