"""Snakemake script of the manifest step: see neurofm.pipeline_steps.manifest_step."""

from neurofm.pipeline_steps import run_script

run_script(snakemake, "manifest")  # noqa: F821 - `snakemake` is injected by Snakemake
