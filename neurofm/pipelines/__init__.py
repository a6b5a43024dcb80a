"""The Python side of the Snakemake preprocessing workflow.

The workflow files (Snakefile, rules, scripts, config schema) live in the top-level
``pipelines/`` folder; this package is what they and ``neurofm preprocess`` share.

Modules
-------
config
    Config validation and hashing, input discovery, subject splits, running Snakemake.
steps
    The per-job work each rule's script calls (read, preprocess, qc, summary, manifest).
"""

from __future__ import annotations

from .config import (
    ENTITIES,
    RERUN_TRIGGERS,
    STEM,
    WILDCARD_CONSTRAINTS,
    assign_splits,
    config_hash,
    default_snakefile,
    discover,
    labels_of,
    load_config,
    run_pipeline,
    wildcards_of,
)

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
