"""Snakemake script of the manifest step: see neurofm.pipelines.steps.manifest_step."""

from neurofm.pipelines.steps import run_script

run_script(snakemake, "manifest")  # noqa: F821 - `snakemake` is injected by Snakemake
