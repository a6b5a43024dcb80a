"""The per-job work of the Snakemake pipelines (``pipelines/scripts/*.py`` call these).

Each step reads its inputs, calls neurofm's readers and :mod:`neurofm.preprocessing`, and
writes its output atomically (a temporary name, then a rename), so a killed job never leaves
an output that looks complete. Every output carries ``config_hash`` (of the parameters that
produced it) and ``neurofm_version`` in its attrs.

Steps:

- :func:`read_step`: input file -> canonical zarr (EEG/MEG also pick channels);
- :func:`preprocess_step`: the modality's chain, lazily in time blocks, written into the
  store folder with :func:`neurofm.store.write_recording`; its Snakemake output is a small
  done-marker, so Snakemake never deletes what the store lists;
- :func:`qc_step` / :func:`summary_step`: HTML reports (:mod:`neurofm.viz.qc`);
- :func:`manifest_step`: the store manifest over all recordings, with a seeded subject split
  (:func:`neurofm.store.index_store`, which switches it atomically);
- :func:`failed_run_step`: after failed jobs, the manifest of the recordings that succeeded
  and ``failures.tsv``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import traceback
import uuid
from contextlib import contextmanager
from pathlib import Path

from .._logging import logger
from .._version import __version__
from ..errors import NeurofmError
from ..store import index_store, open_recording, write_recording
from .discovery import STEM, labels_of

__all__ = [
    "apply_chain",
    "failed_run_step",
    "manifest_step",
    "preprocess_step",
    "qc_step",
    "read_done",
    "read_step",
    "run_script",
    "summary_step",
    "write_zarr",
]

#: Channel types kept by default per modality.
DEFAULT_PICK = {"eeg": "eeg", "meg": "meg"}


def write_zarr(ds, path, *, attrs=None, **kwargs):
    """Write a pipeline output with :func:`neurofm.store.write_recording` (atomic), stamped
    with the neurofm version and the given attrs (``config_hash`` ...); ``kwargs`` go to
    ``write_recording`` (``chunk_seconds``, ``compressor``)."""
    return Path(write_recording(ds, path, attrs={**(attrs or {}),
                                                 "neurofm_version": __version__}, **kwargs))


# --------------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------------
def read_step(source, output, *, modality, wildcards, read=None, pick=None, fmri=None,
              config_hash=""):
    """Read one input into a canonical zarr.

    Parameters
    ----------
    source : str
        The input file (EEG/MEG raw file, fMRIPrep BOLD image, suite2p plane folder).
    output : str
        Target zarr folder.
    modality : {"eeg", "meg", "fmri", "calcium"}
    wildcards : mapping
        subject, session, task, run of the recording (written into the attrs).
    read, pick, fmri : dict, optional
        The config sections (see ``pipelines/config/schema.yaml``); ``fmri`` must carry the
        resolved ``atlas`` path.
    config_hash : str
        Fingerprint of these parameters.
    """
    from ..preprocessing import pick as pick_channels

    read = dict(read or {})
    if modality in ("eeg", "meg"):
        from ..io.ephys import read_ephys

        ds = read_ephys(source, modality=modality, montage=read.get("montage"), preload=False)
        if pick is not None:  # null in the config keeps every channel
            ch_type = pick.get("ch_type") or DEFAULT_PICK[modality]
            ds = pick_channels(ds, ch_type, exclude_bad=pick.get("exclude_bad", True))
    elif modality == "fmri":
        from ..io.fmri import read_fmri

        fmri = dict(fmri or {})
        strategy = fmri.get("confounds")
        ds = read_fmri(source, atlas=fmri["atlas"], labels=_labels(fmri.get("labels")),
                       confounds="fmriprep" if strategy else None,
                       strategy=tuple(strategy or ()), standardize=fmri.get("standardize"))
    elif modality == "calcium":
        from ..io.calcium import read_calcium

        ds = read_calcium(source, signal=read.get("signal", "Fc"), fs=read.get("fs"))
    else:
        raise NeurofmError(f"modality must be eeg, meg, fmri or calcium; got {modality!r}")
    ds.attrs.update(labels_of(wildcards))
    write_zarr(ds, output, attrs={"config_hash": config_hash, "pipeline_step": "read"})
    logger.info("read %s -> %s (%d channels x %d samples at %g Hz)", source, output,
                ds.sizes["channel"], ds.sizes["time"], ds.attrs["sfreq"])


def _labels(path):
    if not path:
        return None
    from ..io.fmri import read_label_table

    return read_label_table(path)


def apply_chain(ds, steps, *, modality):
    """The preprocessing chain of a pipeline, in its fixed order.

    dF/F (calcium) -> notch -> band-pass -> resample -> re-reference (EEG) -> scale; each
    step runs only when configured (a null section skips it).

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical recording (numpy- or dask-backed).
    steps : dict
        Config sections ``dff``, ``notch``, ``bandpass``, ``resample``, ``reference``,
        ``scale`` (see ``pipelines/config/schema.yaml``).
    modality : str

    Returns
    -------
    ds : xarray.Dataset
        The processed recording (lazy when the input is).
    """
    from .. import preprocessing as pp

    if steps.get("dff"):
        d = steps["dff"]
        ds = pp.dff(ds, method=d.get("method", "percentile"), window_s=d.get("window_s", 60.0),
                    percentile=d.get("percentile", 8.0), sigma=d.get("sigma", 10.0))
    if steps.get("notch"):
        nyq = ds.attrs["sfreq"] / 2.0
        freqs = [f for f in steps["notch"]["freqs"] if f < nyq - 0.5]
        skipped = [f for f in steps["notch"]["freqs"] if f not in freqs]
        if skipped:
            logger.info("notch: %s Hz at or above Nyquist (%g Hz) skipped", skipped, nyq)
        if freqs:
            ds = pp.notch(ds, freqs, method=steps["notch"].get("method", "fir"))
    if steps.get("bandpass"):
        b = steps["bandpass"]
        ds = pp.filter(ds, b.get("l_freq"), b.get("h_freq"), method=b.get("method", "fir"))
    if steps.get("resample"):
        r = steps["resample"]
        ds = pp.resample(ds, r["sfreq"], method=r.get("method", "polyphase"))
    if steps.get("reference") is not None and modality == "eeg":
        ds = pp.rereference(ds, steps["reference"])
    method = (steps.get("scale") or {}).get("method", "none")
    if method == "robust":
        ds, _ = pp.robust_scale(ds)
    elif method == "zscore":
        ds = pp.zscore(ds)
    return ds


def preprocess_step(source, output, *, target, modality, steps, block_seconds=120.0,
                    threads=1, store=None, config_hash=""):
    """Run the preprocessing chain on one recording and put it into the store folder.

    The recording is processed lazily in time blocks of ``block_seconds`` (filters overlap
    the blocks), checkpointed once on disk before scaling (whose statistics need the whole
    recording), and written with :func:`neurofm.store.write_recording` under ``target``
    exactly as :meth:`neurofm.store.Store.add` writes it; a version the store already lists
    stays readable until :func:`manifest_step` switches the manifest. Then ``output``, a small
    JSON file naming the written recording and its ``config_hash``, marks the job done (it,
    not the recording, is the Snakemake output, so Snakemake never deletes store data).

    Parameters
    ----------
    source : str
        Zarr written by :func:`read_step`.
    output : str
        The done-marker JSON (``work/<modality>/<stem>_desc-preproc.json``).
    target : str
        ``<store>/<id>.zarr``.
    modality : str
    steps : dict
        See :func:`apply_chain`.
    block_seconds : float
        Length of the dask blocks (memory bound of the job).
    threads : int
        dask threads.
    store : dict, optional
        The ``store`` config section (chunk_seconds, compressor).
    config_hash : str
        Fingerprint of the parameters (read + chain + store layout).

    Returns
    -------
    path : pathlib.Path
        The recording as written (what ``output`` names).
    """
    import dask

    store = dict(store or {})
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    for stale in output.parent.glob(f".ckpt-*-{output.stem}.zarr"):  # of killed jobs
        shutil.rmtree(stale, ignore_errors=True)
    ds = open_recording(source)
    block = max(1, round(block_seconds * ds.attrs["sfreq"]))
    ds = ds.chunk({"time": min(block, ds.sizes["time"]), "channel": -1})
    ckpt = output.with_name(f".ckpt-{uuid.uuid4().hex[:8]}-{output.stem}.zarr")
    try:
        with dask.config.set(scheduler="threads", num_workers=int(threads)):
            # the chain runs once into a checkpoint; the scaling statistics and the store
            # write then read the checkpoint instead of recomputing the filters
            pre = apply_chain(ds, {**steps, "scale": None}, modality=modality)
            write_zarr(pre, ckpt)
            out = apply_chain(open_recording(ckpt, chunks={}), {"scale": steps.get("scale")},
                              modality=modality)
            written = write_zarr(out, target, attrs={"config_hash": config_hash,
                                                     "pipeline_step": "preprocess"},
                                 chunk_seconds=store.get("chunk_seconds"),
                                 compressor=store.get("compressor"))
    finally:
        shutil.rmtree(ckpt, ignore_errors=True)
    _write_json(output, {"id": Path(target).name.removesuffix(".zarr"), "path": str(written),
                         "config_hash": config_hash, "neurofm_version": __version__})
    logger.info("preprocessed %s -> %s", source, written)
    return written


def read_done(path):
    """The content of a preprocess done-marker (see :func:`preprocess_step`).

    Returns
    -------
    done : dict
        ``id``, ``path`` (the recording as written), ``config_hash``, ``neurofm_version``.
    """
    try:
        with open(path) as fid:
            done = json.load(fid)
    except (OSError, ValueError) as err:
        raise NeurofmError(f"{path}: unreadable preprocess marker ({err}); rerun the "
                           "pipeline") from err
    if not isinstance(done, dict) or not {"id", "path", "config_hash"} <= set(done):
        raise NeurofmError(f"{path}: a preprocess marker needs id, path and config_hash; "
                           f"found {done!r}")
    return done


def _write_json(path, obj):
    """Write JSON atomically (a temporary name, then a rename)."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    with open(tmp, "w") as fid:
        json.dump(obj, fid, indent=2, default=str)
    os.replace(tmp, path)


def qc_step(raw, preprocessed, output, *, title, qc=None):
    """Write the QC report of one recording (see :func:`neurofm.viz.qc.qc_report`).

    ``preprocessed`` is the done-marker of :func:`preprocess_step`.
    """
    from ..viz.qc import qc_report

    qc = dict(qc or {})
    qc_report(open_recording(raw), open_recording(read_done(preprocessed)["path"]), output,
              title=title, max_seconds=qc.get("max_seconds", 300.0),
              n_traces=qc.get("n_traces", 10))


def summary_step(reports, recordings, output, *, ids, splits, title="neurofm pipeline"):
    """Write the summary page of a run (one row per recording, links to its report).

    ``recordings`` are the done-markers of :func:`preprocess_step`; ``splits`` maps each
    recording id to its split (train / val / test).
    """
    from ..viz.qc import summary_report

    rows = []
    for rec_id, report, marker in zip(ids, reports, recordings):
        ds = open_recording(read_done(marker)["path"])
        rows.append({"id": rec_id, "report": os.path.relpath(report, Path(output).parent),
                     "subject": ds.attrs.get("subject", ""),
                     "split": splits.get(rec_id, ""),
                     "modality": ds.attrs.get("modality", ""),
                     "n_channels": int(ds.sizes["channel"]), "n_times": int(ds.sizes["time"]),
                     "sfreq": float(ds.attrs["sfreq"]),
                     "config_hash": ds.attrs.get("config_hash", "")})
    summary_report(rows, output, title=title)


def manifest_step(recordings, output, *, store, ids, splits, config_hash="", config=None,
                  failures=None):
    """List the recordings the preprocess jobs wrote in the store's manifest, with splits.

    Parameters
    ----------
    recordings : sequence of str
        The done-markers of :func:`preprocess_step`, one per id.
    output : str
        The done-marker of this step (``work/store.json``).
    store : str
        The store folder.
    ids : sequence of str
        Store id of each recording.
    splits : dict of str -> str
        Recording id -> "train" | "val" | "test" (drawn by subject with
        :func:`neurofm.pipelines.assign_splits`, so a subject's recordings share a split).
    config_hash : str
        Fingerprint of the whole pipeline config, written to ``<store>/pipeline.json``.
    config : dict, optional
        The config itself, kept in ``pipeline.json`` for provenance.
    failures : str, optional
        The run's ``failures.tsv``, removed: every recording succeeded.
    """
    for rec_id, marker in zip(ids, recordings):
        done = read_done(marker)
        if done["id"] != rec_id:
            raise NeurofmError(f"{marker}: marks recording {done['id']!r}, expected "
                               f"{rec_id!r}")
    _index(store, list(ids), splits, config_hash=config_hash, config=config, failed=[])
    if failures:
        Path(failures).unlink(missing_ok=True)
    _write_json(output, {"store": str(store), "recordings": list(ids),
                         "config_hash": config_hash})


def _index(store, ids, splits, *, config_hash, config, failed):
    """Switch the store's manifest to ``ids`` (atomically), then write pipeline.json."""
    splits = {k: v for k, v in splits.items() if k in set(ids)}
    indexed = index_store(store, ids=ids, splits=splits)
    _write_json(Path(store) / "pipeline.json",
                {"config_hash": config_hash, "neurofm_version": __version__, "config": config,
                 "splits": splits, "recordings": list(ids), "failed": list(failed)})
    counts = indexed.manifest["split"].value_counts().to_dict()
    logger.info("store %s: %d recordings, splits %s", store, len(indexed.manifest), counts)
    return indexed


#: One line per failed job in its log (see :func:`run_script`).
_ERROR_LINE = re.compile(r"ERROR (?P<rule>\w+) (?P<what>\S+): (?P<error>.*)$")


def failed_run_step(config, *, since, config_hash=""):
    """After a run whose jobs failed: a store of the recordings that succeeded, and why the
    others did not.

    The Snakefile's ``onerror`` handler calls this when, with ``--keep-going``, some jobs
    failed (Snakemake then skips the manifest rule). The manifest is switched to the
    recordings whose preprocess done-marker is current (its ``config_hash`` is the config's)
    and none of whose jobs failed in this run; ``failures.tsv`` (columns ``recording``,
    ``rule``, ``error``, ``log``) names each failed job from the ``ERROR`` line of its log.

    Parameters
    ----------
    config : dict
        The validated config of the run.
    since : float
        Start of the run (``time.time()``): logs older than this belong to earlier runs.
    config_hash : str
        Fingerprint of the whole config (for ``pipeline.json``).

    Returns
    -------
    failures : pandas.DataFrame
        The rows of ``failures.tsv``.
    """
    import pandas as pd

    from .config import stage_parameters
    from .discovery import discover, output_layout, wildcards_of
    from .splits import recording_splits

    recs = discover(config)
    layout = output_layout(config)
    chain_hash = stage_parameters(config)["chain_hash"]
    mod = config["modality"]
    rows, ok = [], []
    for rec in recs.itertuples():
        wc = wildcards_of(rec)
        errors = []
        for rule in (f"{mod}_read", f"{mod}_preprocess", f"{mod}_qc"):
            log = Path(layout["log"].format(rule=rule, **wc))
            if log.is_file() and log.stat().st_mtime >= since:
                error = _log_error(log)
                if error is not None:
                    errors.append({"recording": rec.id, "rule": rule, "error": error,
                                   "log": str(log)})
        current = _is_current(Path(layout["done"].format(**wc)), chain_hash)
        if current and not any(e["rule"] != f"{mod}_qc" for e in errors):
            ok.append(rec.id)
        elif not errors:
            errors.append({"recording": rec.id, "rule": "", "log": "",
                           "error": "not completed (no job of it failed: see the Snakemake "
                                    "output)"})
        rows.extend(errors)
    failed = sorted({r["recording"] for r in rows} - set(ok))
    splits = recording_splits(recs, config["store"]["split"])
    _index(layout["store"], ok, splits, config_hash=config_hash, config=config, failed=failed)
    table = pd.DataFrame(rows, columns=["recording", "rule", "error", "log"])
    path = Path(layout["failures"])
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    table.to_csv(tmp, sep="\t", index=False)
    os.replace(tmp, path)
    logger.error("%d of %d recordings failed (%s); the store %s lists the %d that succeeded; "
                 "see %s", len(failed), len(recs), ", ".join(failed) or "QC only",
                 layout["store"], len(ok), path)
    return table


def _is_current(done, chain_hash):
    """Whether a preprocess done-marker exists and was written with these parameters."""
    try:
        return done.is_file() and read_done(done)["config_hash"] == chain_hash
    except NeurofmError:  # a marker cut short: its recording is not trusted
        return False


def _log_error(log):
    """The error of a job from its log (its ``ERROR`` line), or None when it has none."""
    lines = [line.rstrip() for line in Path(log).read_text(errors="replace").splitlines()]
    for line in lines:
        m = _ERROR_LINE.search(line)
        if m:
            return m.group("error")
    return None


# --------------------------------------------------------------------------------------------
# script entry point
# --------------------------------------------------------------------------------------------
@contextmanager
def _log_to(path):
    """Log the job at INFO into ``path``; the terminal (neurofm's stderr handler) keeps
    showing warnings and errors only, so parallel jobs do not interleave their progress."""
    handler = None
    root = logging.getLogger()
    old_level = logger.level
    terminal = [(h, h.level) for h in logger.handlers if getattr(h, "_neurofm", False)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, mode="w")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(name)s] "
                                               "%(message)s"))
        root.addHandler(handler)  # the neurofm logger propagates to it, as do MNE's
        logger.setLevel(logging.INFO)
        for h, level in terminal:
            h.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        if handler is not None:
            root.removeHandler(handler)
            logger.setLevel(old_level)
            for h, level in terminal:
                h.setLevel(level)
            handler.close()


def run_script(smk, step):
    """Run ``step`` for a Snakemake ``script:`` job, logging into its ``log:`` file.

    Parameters
    ----------
    smk : snakemake.script.Snakemake
        The ``snakemake`` object Snakemake injects into scripts.
    step : {"read", "preprocess", "qc", "summary", "manifest"}
        The pipeline step to run.

    Notes
    -----
    An error is written to the log as one line ``ERROR <rule> <recording>: <message>``
    (plus the traceback) and the job exits with status 1, so Snakemake marks only this job
    as failed and, with ``--keep-going``, finishes the others.
    """
    log = smk.log[0] if len(smk.log) else None
    wc = dict(smk.wildcards.items()) if hasattr(smk.wildcards, "items") else {}
    what = STEM.format(**wc) if "subject" in wc else "all recordings"
    p = smk.params
    with _log_to(log):
        logger.info("neurofm %s, rule %s, %s", __version__, smk.rule, what)
        try:
            if step == "read":
                read_step(smk.input[0], smk.output[0], modality=p.modality, wildcards=wc,
                          read=p.read, pick=p.pick, fmri=p.fmri, config_hash=p.config_hash)
            elif step == "preprocess":
                preprocess_step(smk.input[0], smk.output[0], target=p.target,
                                modality=p.modality, steps=p.steps, block_seconds=p.block_seconds,
                                threads=smk.threads, store=p.store,
                                config_hash=p.config_hash)
            elif step == "qc":
                qc_step(smk.input.raw, smk.input.preprocessed, smk.output[0], title=p.title,
                        qc=p.qc)
            elif step == "summary":
                summary_step(list(smk.input.reports), list(smk.input.recordings),
                             smk.output[0], ids=p.ids, splits=p.splits, title=p.title)
            elif step == "manifest":
                manifest_step(list(smk.input), smk.output[0], store=p.store, ids=p.ids,
                              splits=p.splits, config_hash=p.config_hash, config=p.config,
                              failures=p.failures)
            else:
                raise NeurofmError(f"unknown pipeline step {step!r}")
        except Exception as err:  # noqa: BLE001 - reported in the job log, then re-raised
            logger.error("ERROR %s %s: %s: %s", smk.rule, what, type(err).__name__, err)
            logger.error("%s", traceback.format_exc())
            print(f"ERROR {smk.rule} {what}: {type(err).__name__}: {err}", file=sys.stderr)
            raise SystemExit(1) from None
    return 0
