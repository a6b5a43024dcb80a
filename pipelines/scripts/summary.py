"""Snakemake script of the summary step: see neurofm.pipeline_steps.summary_step."""

from neurofm.pipeline_steps import run_script

run_script(snakemake, "summary")  # noqa: F821 - `snakemake` is injected by Snakemake
