"""Snakemake script of the qc step: see neurofm.pipeline_steps.qc_step."""

from neurofm.pipeline_steps import run_script

run_script(snakemake, "qc")  # noqa: F821 - `snakemake` is injected by Snakemake
