"""Snakemake script of the preprocess step: see neurofm.pipeline_steps.preprocess_step."""

from neurofm.pipeline_steps import run_script

run_script(snakemake, "preprocess")  # noqa: F821 - `snakemake` is injected by Snakemake
