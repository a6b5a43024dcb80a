"""``run_demo``: the steps in order, each resumable, then the report."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .._logging import _install_handler, _level
from ..errors import DataError
from ._state import Steps, file_digest, logger
from .settings import settings

__all__ = ["run_demo"]


def _config_digests(configs, model):
    return {name: file_digest(path) for name, path in (
        ("base", configs / f"{model}.yaml"), ("demo", configs / "demo" / f"{model}.yaml"))}


def run_demo(out="demo_out", *, quick=False, cores=2, force=False, verbose=True):
    """Run neurofm end to end on the bundled sample data and write ``out/report.html``.

    Steps (each skipped when its state in ``out/state`` says it is up to date):

    1. ``sample``: the bundled sample dataset (``neurofm sample-data``).
    2. ``pipeline-<modality>``: the Snakemake pipelines for EEG, MEG, fMRI and calcium
       (``neurofm preprocess``) into stores with QC reports.
    3. ``train-brainjepa``, ``train-brainmae``: pretraining on the fMRI store through the
       Lightning CLI with ``configs/demo/*.yaml`` (``neurofm fit -c ...``), checkpoints at
       several epochs; ``probe``: ``neurofm probe`` against the baselines (group labels).
    4. ``rsa`` (RDMs, RSA and tRSA against the planted groups), ``encoding`` (MEG-GPT
       features to held-out MEG channels of the task MEG, noise-normalized by the
       repeat-based ceiling; needs MEG-GPT), ``dse`` (DSE / DSMI over checkpoints),
       ``connectome`` (NTF dynamic connectome of the calcium recordings).
    5. the report (always rewritten).

    Parameters
    ----------
    out : str | os.PathLike
        Output directory (created; reused by later runs).
    quick : bool
        Smaller sizes (fewer subjects, epochs and seeds): the same sections in minutes.
    cores : int
        Cores for the Snakemake pipelines.
    force : bool
        Recompute every step.
    verbose : bool | str | int
        Log level of the demo's progress lines (``neurofm.demo`` logger; INFO by default);
        the rest of neurofm logs at its own level.

    Returns
    -------
    report : pathlib.Path
        ``out/report.html``.
    """
    _install_handler()
    old = logger.level
    logger.setLevel(_level(verbose) or logging.INFO)
    try:
        return _run(out, quick, cores, force)
    finally:
        logger.setLevel(old)


def _run(out, quick, cores, force):
    from .report import write_report
    from .steps import (
        MODALITIES,
        connectome_step,
        dse_step,
        encoding_step,
        generation_step,
        meggpt_available,
        pipeline_config,
        probe_step,
        resources,
        rsa_step,
        run_pipeline_step,
        sample_data,
        train_meggpt_step,
        train_step,
    )

    t_start = time.perf_counter()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sizes = settings(quick)
    res = resources()
    steps = Steps(out, force=force)
    logger.info("neurofm demo (%s) -> %s", sizes["name"], out)
    meggpt = meggpt_available()
    n_total = 1 + len(MODALITIES) + 3 + 3 + (3 if meggpt else 0)  # encoding needs MEG-GPT

    def title(k, name):
        return f"{k}/{n_total} {name}"

    from ..datasets import SAMPLE_RECIPE

    sample = steps.run("sample", lambda: sample_data(out),
                       params={"out": str(out), "recipe": SAMPLE_RECIPE},
                       outputs=[out / "sample" / "participants.tsv"],
                       title=title(1, "sample dataset"))
    pipes = {}
    for k, mod in enumerate(MODALITIES, start=2):
        cfg = pipeline_config(out, mod, sample, sizes)
        pipes[mod] = steps.run(
            f"pipeline-{mod}",
            lambda mod=mod, cfg=cfg: run_pipeline_step(out, mod, cfg, cores=cores),
            params={"config": cfg, "cores": cores}, deps=["sample"],
            outputs=[Path(cfg["out_dir"]) / "store" / "manifest.parquet",
                     Path(cfg["out_dir"]) / "qc" / "summary.html"],
            title=title(k, f"{mod} pipeline"))
    fmri_store = pipes["fmri"]["store"]
    groups = sample["groups"]
    if not groups or not sample["labels"]:
        raise DataError(f"{out / 'sample'}: the sample dataset has no fMRI cohort with "
                        "group labels (phenotype/fmri_cohort.tsv); rebuild it with this "
                        "neurofm version")
    trained = {}
    k = 2 + len(MODALITIES)
    for model in ("brainjepa", "brainmae"):
        params = {"configs": _config_digests(res["configs"], model),
                  "epochs": sizes["train_epochs"][model],
                  "every": sizes["checkpoint_every"], "window": 32}
        key = steps.key(f"train-{model}", params, ["pipeline-fmri"])
        run = out / "runs" / model
        trained[model] = steps.run(
            f"train-{model}",
            lambda model=model, key=key: train_step(out, model, fmri_store, sizes,
                                                    key=key),
            params=params, deps=["pipeline-fmri"],
            outputs=[run / "checkpoints" / "last.ckpt"], title=title(k, f"train {model}"))
        k += 1
    generated = None
    if meggpt:
        params = {"configs": {name: file_digest(res["configs"] / rel) for name, rel in (
                      ("base", "meggpt.yaml"), ("data", "data/meg_example.yaml"),
                      ("demo", "demo/meggpt.yaml"))},
                  "epochs": sizes["train_epochs"]["meggpt"], "stride": sizes["meggpt_stride"],
                  "every": sizes["checkpoint_every"]}
        key = steps.key("train-meggpt", params, ["pipeline-meg"])
        run = out / "runs" / "meggpt"
        meg_store = pipes["meg"]["store"]
        meg = steps.run(
            "train-meggpt",
            lambda: train_meggpt_step(out, meg_store, sizes, key=key), params=params,
            deps=["pipeline-meg"], outputs=[run / "checkpoints" / "last.ckpt"],
            title=title(k, "train meggpt"))
        k += 1
        generated = steps.run(
            "generation", lambda: generation_step(out, meg_store, meg, sizes),
            params={"seconds": sizes["generate_seconds"]}, deps=["train-meggpt"],
            outputs=[out / "figures" / "generation.png"],
            title=title(k, "MEG-GPT generation and spectra"))
        k += 1
    else:
        meg = None
        logger.info("MEG-GPT is not available in this installation: its sections are left "
                    "out")
    train_deps = ["pipeline-fmri", "train-brainjepa", "train-brainmae"]
    probe = steps.run(
        "probe", lambda: probe_step(out, fmri_store, sample["labels"], trained, sizes),
        params={"seeds": sizes["probe_seeds"], "epochs": sizes["probe_linear_epochs"]},
        deps=train_deps, outputs=[out / "probe" / "results.nc"], title=title(k, "probe"))
    k += 1
    analyses = {}
    analyses["rsa"] = steps.run(
        "rsa", lambda: rsa_step(out, fmri_store, groups, trained), params={},
        deps=train_deps, outputs=[out / "figures" / "rdms.png"],
        title=title(k, "RSA / tRSA"))
    analyses["encoding"] = None  # MEG-GPT features of the task MEG (repeats: a ceiling)
    if meg is not None:
        analyses["encoding"] = steps.run(
            "encoding", lambda: encoding_step(out, pipes["meg"], sample["root"], meg, sizes),
            params={"design": "meg-evoked-heldout-channel-v1",
                    "subjects": sizes.get("encoding_subjects"),
                    "random_init": sizes.get("encoding_random_init", True)},
            deps=["sample", "pipeline-meg", "train-meggpt"],
            outputs=[out / "figures" / "encoding.png"], title=title(k + 1, "encoding model"))
    else:
        k -= 1
    analyses["dse"] = steps.run(
        "dse", lambda: dse_step(out, fmri_store, groups, trained, sizes),
        params={"max_n": sizes["dse_max_n"]}, deps=train_deps,
        outputs=[out / "figures" / "dse.png"], title=title(k + 2, "DSE over training"))
    analyses["connectome"] = steps.run(
        "connectome",
        lambda: connectome_step(out, sample["root"], pipes["calcium"]["store"], sizes),
        params={k2: sizes[k2] for k2 in ("ntf_rank", "ntf_seeds", "ntf_iter")},
        deps=["sample", "pipeline-calcium"], outputs=[out / "figures" / "connectome.png"],
        title=title(k + 3, "NTF dynamic connectome"))
    elapsed = time.perf_counter() - t_start
    path = write_report(out, sizes=sizes, sample=sample, pipes=pipes, trained=trained,
                        probe=probe, analyses=analyses, timings=steps.timings,
                        elapsed=elapsed, meggpt=meg, generated=generated)
    logger.info("report written to %s (%.1f s in total)", path, elapsed)
    return path
