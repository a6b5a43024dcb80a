"""Snakemake script of the read step: see neurofm.pipeline_steps.read_step."""

from neurofm.pipeline_steps import run_script

run_script(snakemake, "read")  # noqa: F821 - `snakemake` is injected by Snakemake
