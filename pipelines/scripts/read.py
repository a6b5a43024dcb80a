"""Snakemake script of the read step: see neurofm.pipelines.steps.read_step."""

from neurofm.pipelines.steps import run_script

run_script(snakemake, "read")  # noqa: F821 - `snakemake` is injected by Snakemake
