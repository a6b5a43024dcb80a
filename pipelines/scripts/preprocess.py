"""Snakemake script of the preprocess step: see neurofm.pipelines.steps.preprocess_step."""

from neurofm.pipelines.steps import run_script

run_script(snakemake, "preprocess")  # noqa: F821 - `snakemake` is injected by Snakemake
