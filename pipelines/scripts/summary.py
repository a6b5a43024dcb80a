"""Snakemake script of the summary step: see neurofm.pipelines.steps.summary_step."""

from neurofm.pipelines.steps import run_script

run_script(snakemake, "summary")  # noqa: F821 - `snakemake` is injected by Snakemake
