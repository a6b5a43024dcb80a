"""Snakemake script of the qc step: see neurofm.pipelines.steps.qc_step."""

from neurofm.pipelines.steps import run_script

run_script(snakemake, "qc")  # noqa: F821 - `snakemake` is injected by Snakemake
