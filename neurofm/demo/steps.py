"""The steps of ``neurofm demo``: each returns a small JSON-safe result and writes figures.

Every step goes through the same public code path a user would take: the sample dataset
(:func:`neurofm.datasets.make_sample_data`), the Snakemake pipelines
(:func:`neurofm.pipelines.run_pipeline`, i.e. ``neurofm preprocess``), the Lightning CLI
(:func:`neurofm.training.cli.run_lightning_cli`, i.e. ``neurofm fit -c ...``), ``neurofm
probe`` (:func:`neurofm.cli.main`) and the analysis functions of :mod:`neurofm.analysis`.
The command that reproduces each part is returned with its result (``command``).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np

from ..errors import DataError, FormatError, NeurofmError
from ._state import logger

__all__ = ["MODALITIES", "resources"]

#: Pipelines the demo runs, in order.
MODALITIES = ("eeg", "meg", "fmri", "calcium")
#: The demo's window of the fMRI models (frames) and its grid step (frames).
WINDOW, STRIDE = 32, 8


def _q(path):
    return shlex.quote(str(path))


def resources():
    """Where the example pipeline configs and the LightningCLI configs are.

    Returns
    -------
    dict with ``pipelines`` (folder of ``*_example.yaml``) and ``configs`` (folder with
    ``brainjepa.yaml`` and ``demo/``).

    Raises
    ------
    FormatError
        Outside a source checkout (the configs ship with the repository).
    """
    from ..pipelines import default_snakefile

    pipelines = default_snakefile().parent / "config"
    here = Path(__file__).resolve().parents[2]
    for configs in (here / "configs", Path.cwd() / "configs"):
        if (configs / "demo" / "brainjepa.yaml").is_file():
            break
    else:
        raise FormatError("the LightningCLI configs (configs/brainjepa.yaml, configs/demo/) "
                          f"were not found next to the package ({here / 'configs'}) nor in "
                          f"{Path.cwd() / 'configs'}; run the demo from a neurofm checkout")
    if not (pipelines / "fmri_example.yaml").is_file():
        raise FormatError(f"{pipelines}: the example pipeline configs were not found")
    return {"pipelines": pipelines, "configs": configs}


def _savefig(fig, path):
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------------------------
# 1. sample data
# --------------------------------------------------------------------------------------------
def sample_data(out):
    """Build the sample dataset under ``out/sample``; describe its subjects."""
    import pandas as pd

    from ..datasets import make_sample_data

    root = make_sample_data(Path(out) / "sample")
    table = pd.read_csv(root / "participants.tsv", sep="\t", dtype=str)
    rows = []
    for dtype, part in table.groupby("datatype", sort=False):
        src = part["source"].str.lower()
        rows.append({"datatype": dtype, "subjects": len(part),
                     "real": int((~src.str.contains("generated")).sum()),
                     "generated": int(src.str.contains("generated").sum()),
                     "ids": [s.removeprefix("sub-") for s in part["participant_id"]]})
    groups = {}
    cohort = root / "phenotype" / "fmri_cohort.tsv"
    if cohort.is_file():
        pheno = pd.read_csv(cohort, sep="\t", dtype=str)
        groups = dict(zip(pheno["participant_id"].str.removeprefix("sub-"), pheno["group"]))
    return {"root": str(root), "datatypes": rows, "groups": groups,
            "labels": str(cohort) if cohort.is_file() else None,
            "command": f"neurofm sample-data --out {_q(root)}"}


# --------------------------------------------------------------------------------------------
# 2. pipelines
# --------------------------------------------------------------------------------------------
def pipeline_config(out, modality, sample, sizes):
    """The example config of ``modality`` pointed at the demo's sample tree and folders.

    Returns
    -------
    config : dict
        Written to ``out/pipelines/<modality>.yaml`` by :func:`run_pipeline_step`.
    """
    import yaml

    src = resources()["pipelines"] / f"{modality}_example.yaml"
    cfg = yaml.safe_load(src.read_text())
    cfg["bids_root"] = str(Path(sample["root"]).resolve())
    cfg["out_dir"] = str((Path(out) / "pipelines" / modality).resolve())
    n = sizes["subjects"][modality]
    if n is not None:
        chosen = cfg.get("subjects")
        if chosen in (None, "all"):
            kind = {"eeg": "eeg", "meg": "meg", "fmri": "func", "calcium": "ophys"}[modality]
            chosen = next((r["ids"] for r in sample["datatypes"] if r["datatype"] == kind), [])
        chosen = [str(s).removeprefix("sub-") for s in chosen]
        cfg["subjects"] = [f"{int(s):02d}" if s.isdigit() else s for s in chosen][:n]
    if sizes["runs"][modality] is not None:
        cfg["runs"] = list(sizes["runs"][modality])
    qc = dict(cfg.get("qc") or {})
    qc["max_seconds"] = float(sizes["qc_max_seconds"])
    cfg["qc"] = qc
    return cfg


def run_pipeline_step(out, modality, cfg, *, cores):
    """Run one Snakemake pipeline (``neurofm preprocess``) and summarise its store and QC."""
    import yaml

    from ..pipelines import run_pipeline
    from ..store import open_store

    out = Path(out).resolve()
    path = out / "pipelines" / f"{modality}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# written by neurofm demo from pipelines/config/{modality}_example.yaml"
                    "\n" + yaml.safe_dump(cfg, sort_keys=False))
    extra = ("--directory", str(out), "--quiet", "rules")
    status = run_pipeline(path, cores=cores, extra_args=extra)
    outdir = Path(cfg["out_dir"])
    store_path = outdir / "store"
    if status != 0 and not (store_path / "manifest.parquet").is_file():
        raise NeurofmError(f"the {modality} pipeline failed (exit status {status}); see "
                           f"{outdir / 'logs'} and {outdir / 'failures.tsv'}")
    store = open_store(store_path)
    man = store.manifest
    failures = 0
    if (outdir / "failures.tsv").is_file():
        failures = max(0, len((outdir / "failures.tsv").read_text().strip().splitlines()) - 1)
    qc_pages = sorted(str(p) for p in (outdir / "qc").glob("*_qc.html"))
    result = {
        "modality": modality, "store": str(store_path), "config": str(path),
        "n_recordings": len(man), "n_subjects": int(man["subject"].nunique()),
        "n_channels": sorted({int(c) for c in man["n_channels"]}),
        "sfreq": sorted({float(s) for s in man["sfreq"]}),
        "hours": float((man["n_times"] / man["sfreq"]).sum() / 3600.0),
        "splits": {k: int(v) for k, v in man["split"].value_counts().items()},
        "failures": failures, "qc_pages": qc_pages,
        "qc_summary": str(outdir / "qc" / "summary.html"),
        "command": (f"neurofm preprocess {_q(path)} --cores {cores} -- --directory "
                    f"{_q(out)}"),
    }
    result["check"] = _pipeline_check(outdir, store, modality)
    return result


def _raw_path(outdir, rec_id):
    hits = sorted((outdir / "work").glob(f"*/{rec_id}_desc-raw.zarr"))
    return hits[0] if hits else None


def _band_power_db(x, sfreq, freq):
    """Height (dB) of a line peak: the largest Welch power (mean over channels) within
    ``freq`` +- 1 Hz over the median power 3-6 Hz away on both sides; NaN above Nyquist."""
    from scipy.signal import welch

    if freq + 6 >= sfreq / 2:
        return float("nan")
    f, p = welch(x, fs=sfreq, nperseg=min(x.shape[-1], int(4 * sfreq)), axis=-1)
    p = p.mean(axis=0)
    peak = p[(f >= freq - 1) & (f <= freq + 1)]
    d = np.abs(f - freq)
    near = p[(d >= 3) & (d <= 6)]
    if not peak.size or not near.size:
        return float("nan")
    return float(10 * np.log10(peak.max() / np.median(near)))


def _pipeline_check(outdir, store, modality):
    """One number per pipeline that says whether its processing did what it should."""
    from ..store import open_recording

    rec_id = str(store.manifest["id"].iloc[0])
    raw_path = _raw_path(outdir, rec_id)
    after = store.open(rec_id)
    y = np.asarray(after["signal"].values, dtype=float)
    sf_after = float(after.attrs["sfreq"])
    check = {"recording": rec_id}
    if modality in ("eeg", "meg") and raw_path is not None:
        before = open_recording(raw_path)
        x = np.asarray(before["signal"].values, dtype=float)
        sf = float(before.attrs["sfreq"])
        check["line_db_before"] = _band_power_db(x, sf, 50.0)
        check["line_db_after"] = _band_power_db(y, sf_after, 50.0)
        check["sfreq_before"], check["sfreq_after"] = sf, sf_after
    elif modality == "fmri":
        c = np.corrcoef(y)
        iu = np.triu_indices_from(c, 1)
        check["mean_roi_corr"] = float(np.nanmean(c[iu]))
        check["median_abs_signal"] = float(np.median(np.abs(y)))
    else:
        check["median_abs_signal"] = float(np.median(np.abs(y)))
        check["max_signal"] = float(np.max(y))
    return check


# --------------------------------------------------------------------------------------------
# 3. training (the Lightning CLI) and probe
# --------------------------------------------------------------------------------------------
def _store_shape(store_path):
    from ..store import open_store

    man = open_store(store_path).manifest
    return int(man["n_channels"].max()), int(man["n_times"].min()), float(man["sfreq"].iloc[0])


def train_config(out, model, store_path, sizes):
    """The run-specific LightningCLI piece (store, sizes of this store, logger, checkpoints).

    Returns
    -------
    path : pathlib.Path
        ``out/runs/<model>/run.yaml``; the command is ``neurofm fit -c configs/<model>.yaml
        -c configs/demo/<model>.yaml [-c configs/demo/quick.yaml] -c <path>``.
    """
    import yaml

    n_rois, n_times, sfreq = _store_shape(store_path)
    if n_times < WINDOW:
        raise DataError(f"{store_path}: recordings of {n_times} samples are shorter than the "
                        f"demo's {WINDOW}-frame window")
    run = (Path(out) / "runs" / model).resolve()
    model_args = {"n_rois": n_rois}
    data_args = {"store": str(Path(store_path).resolve()), "window_samples": WINDOW,
                 "stride_s": STRIDE / sfreq}
    if model == "brainjepa":
        data_args["collate"] = {"init_args": {"n_rois": n_rois}}
    cfg = {
        "model": {"init_args": {"model": {"init_args": model_args}}},
        "data": {"init_args": data_args},
        "trainer": {
            "max_epochs": int(sizes["train_epochs"][model]),
            "default_root_dir": str(run),
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                       "init_args": {"save_dir": str(run), "name": "logs"}},
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"dirpath": str(run / "checkpoints"),
                               "filename": "{epoch}", "save_top_k": -1,
                               "every_n_epochs": int(sizes["checkpoint_every"]),
                               "save_last": True}},
            ],
        },
    }
    path = run / "run.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by neurofm demo: this run's store, folders and checkpoints\n"
                    + yaml.safe_dump(cfg, sort_keys=False))
    return path


def train_step(out, model, store_path, sizes, *, key):
    """``neurofm fit`` with the demo configs; resumes from ``last.ckpt`` of the same key."""
    from ..training.cli import run_lightning_cli

    configs = resources()["configs"]
    run_yaml = train_config(out, model, store_path, sizes)
    run = run_yaml.parent
    argv = ["fit", "-c", str(configs / f"{model}.yaml"),
            "-c", str(configs / "demo" / f"{model}.yaml"), "-c", str(run_yaml)]
    keyfile, last = run / "key.json", run / "checkpoints" / "last.ckpt"
    resume = keyfile.is_file() and json.loads(keyfile.read_text()).get("key") == key \
        and last.is_file()
    if not resume:  # a different config: start over (old checkpoints would mix in)
        import shutil

        shutil.rmtree(run / "checkpoints", ignore_errors=True)
        shutil.rmtree(run / "logs", ignore_errors=True)
        keyfile.write_text(json.dumps({"key": key}))
    else:
        logger.info("%s: resuming the interrupted run from %s", model, last)
    run_lightning_cli(argv + (["--ckpt_path", str(last)] if resume else []))
    command = "neurofm " + " ".join(_q(a) for a in argv)
    ckpts = sorted((run / "checkpoints").glob("epoch=*.ckpt"), key=_epoch_of)
    curves = _read_curves(run / "logs")
    if not ckpts:
        raise NeurofmError(f"{run / 'checkpoints'}: the {model} run saved no checkpoint")
    return {"model": model, "run": str(run), "checkpoints": [str(c) for c in ckpts],
            "last": str(ckpts[-1]), "curves": curves, "command": command,
            "epochs": int(sizes["train_epochs"][model])}


def _epoch_of(path):
    import re

    m = re.search(r"epoch=(\d+)", Path(path).name)
    return int(m.group(1)) if m else -1


def _read_curves(logdir):
    """Training curves from every ``metrics.csv`` under ``logdir`` (resumed runs append a
    version): per metric, lists of (step, value)."""
    import pandas as pd

    frames = [pd.read_csv(p) for p in sorted(Path(logdir).glob("version_*/metrics.csv"))]
    if not frames:
        return {}
    df = pd.concat(frames, ignore_index=True)
    curves = {}
    for col in df.columns:
        if col in ("step", "epoch") or not col.endswith(("loss", "loss_epoch", "loss_step")):
            continue
        part = df[["step", col]].dropna().drop_duplicates("step", keep="last")
        part = part.sort_values("step")
        if len(part):
            curves[col] = [[int(s), float(v)] for s, v in zip(part["step"], part[col])]
    return curves


def probe_step(out, fmri_store, labels_path, trained, sizes):
    """``neurofm probe`` of the trained encoders against the baselines (group labels)."""
    from ..cli import main

    dest = (Path(out) / "probe").resolve()
    _, _, sfreq = _store_shape(fmri_store)
    argv = ["probe", str(fmri_store), "--labels", str(labels_path), "--label-column",
            "group"]
    for name, res in trained.items():
        argv += ["--encoder", f"{name}={res['last']}"]
    argv += ["--window-samples", str(WINDOW), "--stride-s", f"{STRIDE / sfreq:g}",
             "--seeds", *[str(s) for s in sizes["probe_seeds"]],
             "--linear-epochs", str(sizes["probe_linear_epochs"]), "--out", str(dest)]
    status = main(argv)
    if status != 0:
        raise NeurofmError(f"neurofm probe failed (exit status {status})")
    import xarray as xr

    res = xr.load_dataset(dest / "results.nc")
    metric = res.attrs["primary_metric"]
    rows = []
    for model, kind in zip(res["model"].values.tolist(), res["kind"].values.tolist()):
        rows.append({"model": str(model), "kind": str(kind),
                     "mean": float(res["mean"].sel(model=model, metric=metric)),
                     "std": float(res["std"].sel(model=model, metric=metric)),
                     "scores": {str(m): [float(res["mean"].sel(model=model, metric=m)),
                                         float(res["std"].sel(model=model, metric=m))]
                                for m in res["metric"].values.tolist()}})
    return {"rows": rows, "metric": metric, "metrics": res["metric"].values.tolist(),
            "verdicts": json.loads(res.attrs.get("verdict", "[]")),
            "n_subjects": int(res.attrs["n_subjects"]), "n_windows": int(res.attrs["n_windows"]),
            "n_seeds": int(res.sizes["seed"]), "task": str(res.attrs["task"]),
            "out": str(dest), "command": "neurofm " + " ".join(_q(a) for a in argv)}


# --------------------------------------------------------------------------------------------
# 4. analyses
# --------------------------------------------------------------------------------------------
def _subject_embeddings(ckpt, store, groups, stride_s):
    """Subject-mean embeddings (subject, feature), ordered by group then subject."""
    from ..evals import embed

    emb = embed(ckpt, store, per="recording", window_samples=WINDOW, stride_s=stride_s)
    subjects = np.asarray(emb["subject"].values).astype(str)
    keep = [s for s in sorted(set(subjects), key=lambda s: (groups.get(s, "?"), s))
            if s in groups]
    data = np.stack([emb.values[subjects == s].mean(axis=0) for s in keep])
    return data, keep


def _fc_features(store, subjects):
    """Functional connectivity (upper-triangle correlations) per subject, mean over runs."""
    from ..store import open_store

    st = open_store(store)
    man = st.manifest
    out = []
    for s in subjects:
        mats = []
        for rec in man.loc[man["subject"].astype(str) == s, "id"]:
            x = np.asarray(st.open(str(rec))["signal"].values, dtype=float)
            c = np.corrcoef(x)
            mats.append(c[np.triu_indices_from(c, 1)])
        out.append(np.mean(mats, axis=0))
    return np.stack(out)


def rsa_step(out, fmri_store, groups, trained):
    """Subject RDMs of the encoders' embeddings and of FC; RSA and tRSA against the planted
    group model RDM (0 within a group, 1 between groups)."""
    import xarray as xr

    from ..analysis import compare_rdms, compute_rdm, gt_transform
    from ..viz import plot_rdm

    _, _, sfreq = _store_shape(fmri_store)
    rdms, scores = {}, {}
    subjects = None
    for name, res in trained.items():
        data, subjects = _subject_embeddings(res["last"], fmri_store, groups, STRIDE / sfreq)
        labels = [f"{groups[s]}-{s}" for s in subjects]
        rdms[name] = compute_rdm(data, method="correlation", conditions=labels)
        first, _ = _subject_embeddings(res["checkpoints"][0], fmri_store, groups,
                                       STRIDE / sfreq)
        rdms[f"{name} (epoch 0)"] = compute_rdm(first, method="correlation",
                                                 conditions=labels)
    labels = [f"{groups[s]}-{s}" for s in subjects]
    rdms["FC baseline"] = compute_rdm(_fc_features(fmri_store, subjects), method="correlation",
                                      conditions=labels)
    g = np.array([groups[s] for s in subjects])
    model = xr.DataArray((g[:, None] != g[None, :]).astype(float),
                         dims=("condition", "condition2"),
                         coords={"condition": labels, "condition2": labels})
    model = model.sortby("condition").sortby("condition2")
    for name, rdm in rdms.items():
        scores[name] = {
            "rsa": float(compare_rdms(rdm, model, method="spearman")),
            "trsa": float(compare_rdms(gt_transform(rdm, 0.2, 0.8), model,
                                       method="spearman")),
        }
    plt = _pyplot()
    names = list(trained) + ["FC baseline"]
    fig, axes = plt.subplots(1, len(names) + 2, figsize=(3.2 * (len(names) + 2), 3.9))
    plot_rdm(model, ax=axes[0], labels=False, colorbar=False, title="model: planted groups")
    for ax, n in zip(axes[1:], names):
        plot_rdm(rdms[n], ax=ax, labels=False, colorbar=False, rank=True,
                 title=f"{n}\nrho={scores[n]['rsa']:.2f}")
    best = max(trained, key=lambda n: scores[n]["trsa"])
    plot_rdm(gt_transform(rdms[best], 0.2, 0.8), ax=axes[-1], labels=False, colorbar=False,
             title=f"{best}, GT-transformed\nrho={scores[best]['trsa']:.2f}")
    fig.tight_layout()
    fig_path = _savefig(fig, Path(out) / "figures" / "rdms.png")
    return {"scores": scores, "n_subjects": len(subjects), "figure": fig_path,
            "groups": sorted(set(g.tolist())),
            "command": ("python -c \"import neurofm.analysis as na, neurofm.evals as ev; "
                        f"e = ev.embed('{trained[best]['last']}', '{fmri_store}', "
                        "per='recording', window_samples=32); "
                        "print(na.compute_rdm(e.values, method='correlation'))\"")}


#: Epoch of the encoding step: samples after each event (MEG-GPT's context at most).
ENCODING_SAMPLES = 50
#: Trial folds of the encoding step (fit / feature / target roles rotate over 3 folds).
ENCODING_FOLDS = 3
#: Channels whose ceiling is below this get no normalized score (no reliable signal).
ENCODING_MIN_CEILING = 0.1


def _evoked_store(out, meg, sample_root, n_subjects):
    """A store of the sample's event-related MEG (4 event classes, repeated trials).

    The MEG store's recordings that carry the sample's event classes when it has any (the
    full demo: sub-30..33 through the MEG pipeline); otherwise (``--quick`` preprocesses the
    resting MEG only) the task runs of the first ``n_subjects`` evoked subjects of the sample
    are read and run through the MEG pipeline's own chain
    (:func:`neurofm.pipelines.steps.apply_chain` with the demo's ``pipelines/meg.yaml``)
    in-process into ``out/encoding/evoked_store``.

    Returns
    -------
    store : str
        The store path.
    source : str
        Where its recordings came from (for the report).
    """
    import yaml

    from ..datasets.sample import MEG_EVENT_ID, MEG_EVOKED_SUBJECTS
    from ..store import open_store, write_store

    st = open_store(meg["store"])
    subjects = set()
    for rec in st.manifest["id"]:
        ds = st.open(str(rec))
        if "event_description" in ds and set(map(str, ds["event_description"].values)) \
                & set(MEG_EVENT_ID):
            subjects.add(str(ds.attrs.get("subject", rec)))
    if subjects:
        return meg["store"], (f"the MEG store ({len(subjects)} task subjects preprocessed by "
                              "the MEG pipeline)")
    from ..io.ephys import read_ephys
    from ..pipelines.steps import apply_chain
    from ..preprocessing import pick

    cfg = yaml.safe_load(Path(meg["config"]).read_text())
    subs = MEG_EVOKED_SUBJECTS[:n_subjects] if n_subjects else MEG_EVOKED_SUBJECTS
    recordings = []
    for sub in subs:
        files = sorted((Path(sample_root) / f"sub-{sub}" / "meg").glob(
            f"sub-{sub}_task-evoked_run-*_meg.fif"))
        if not files:
            raise DataError(f"{Path(sample_root) / f'sub-{sub}' / 'meg'}: no task MEG runs "
                            "(sub-XX_task-evoked_run-N_meg.fif) for the encoding step; "
                            "rebuild the sample dataset with this neurofm version")
        for path in files:
            ds = read_ephys(path, modality="meg")
            ds = pick(ds, (cfg.get("pick") or {}).get("ch_type") or "meg")
            ds = apply_chain(ds, cfg, modality="meg").load()
            ds.attrs.update(subject=sub, task="evoked",
                            run=path.name.split("_run-")[1].split("_")[0])
            recordings.append(ds)
    dest = Path(out) / "encoding" / "evoked_store"
    write_store(recordings, dest, overwrite=True)
    return str(dest), (f"the sample's task runs of sub-{', sub-'.join(subs)} through the MEG "
                       "pipeline's chain (this run's MEG store has no task recordings)")


def _evoked_epochs(store, model, tokenizer, n_samples):
    """Event-locked epochs of every channel: tokens, z-scored signal and labels.

    Returns
    -------
    dict with ``tokens`` (n, T, C) int64, ``signal`` (n, T, C) float, ``condition`` (n,)
    str, ``subject`` (n,) str, ``channels`` (C,), ``sfreq``.
    """
    import warnings

    import torch

    from ..data.tokens import TokenWindowDataset
    from ..datasets.sample import MEG_EVENT_ID
    from ..errors import NeurofmWarning
    from ..store import open_store

    st = open_store(store)
    rate = float(st.manifest["sfreq"].iloc[0])
    events = {name: k for k, name in enumerate(MEG_EVENT_ID)}
    channels = (getattr(model, "extra", None) or {}).get("channels") or "intersection"
    with warnings.catch_warnings():  # the store's resting recordings have no events
        warnings.filterwarnings("ignore", message=r".*recording\(s\) without any of the "
                                "events", category=NeurofmWarning)
        epochs = TokenWindowDataset(st, tokenizer, events=events, tmin=0.0,
                                    tmax=n_samples / rate, split=None, channels=channels,
                                    sessions=False, return_signal=True, sfreq=None)
    items = [epochs[i] for i in range(len(epochs))]
    names = list(MEG_EVENT_ID)
    return {"tokens": torch.stack([it["tokens"][:n_samples] for it in items]),
            "signal": np.stack([it["signal"][:, :n_samples].numpy().T for it in items]),
            "condition": np.array([names[it["label"]] for it in items]),
            "subject": np.array([str(it["subject"]) for it in items]),
            "channels": list(epochs.channels), "sfreq": rate}


def _hidden_states(model, tokens, batch_size=64):
    """MEG-GPT hidden states at every time step and channel: (n, T, C, D) float32."""
    import torch

    out = []
    model.eval()
    with torch.no_grad():
        for chunk in tokens.split(batch_size):
            out.append(model.hidden_states(chunk).float().numpy())
    return np.concatenate(out)


def _trial_folds(conditions, groups, n_folds):
    """Fold of every trial: within each group and condition, trials in order take folds
    0, 1, ..., n_folds - 1 in turn (every fold holds every condition)."""
    folds = np.full(len(conditions), -1)
    for g in np.unique(groups):
        for c in np.unique(conditions):
            idx = np.flatnonzero((groups == g) & (conditions == c))
            folds[idx] = np.arange(len(idx)) % n_folds
    return folds


def _ridge_fit_predict(k_aa, y, k_ba, alphas, n_inner=5, run=5):
    """Pick alpha by inner K-fold CV on the fit rows, predict the eval rows: kernel ridge
    with an unpenalized intercept, solved by :func:`neurofm.analysis._ridge.solve` (the
    solver of :class:`~neurofm.analysis.KernelRidgeCV`) on the precomputed kernel.

    The inner folds take runs of ``run`` consecutive rows in turn (rows are the time steps
    of each condition), so every fold holds part of every condition's time course (a
    contiguous fold would leave whole conditions out and with them their topography).
    ``k_aa`` (n, n) kernel of the fit rows, ``y`` (n,) their targets, ``k_ba`` (m, n) kernel
    between the rows to predict and the fit rows. Returns (m,) predictions."""
    from ..analysis import _ridge

    inner = (np.arange(len(y)) // run) % n_inner
    splits = [(np.flatnonzero(inner != k), np.flatnonzero(inner == k)) for k in range(n_inner)]
    out = _ridge.solve(_ridge.NumpyOps(np.float64), None, np.asarray(y, float)[:, None],
                       np.asarray(alphas, float), splits, fit_intercept=True,
                       local_alpha=True, n_targets_batch=None, form="dual",
                       kernel_fn=lambda: k_aa)
    col = k_aa.mean(0)
    return (_ridge.center_kernel(k_ba, col, col.mean()) @ out["dual"])[:, 0] \
        + out["intercept"][0]


def _fold_predictions(features, y, conditions, groups, folds, labels, alphas, n_folds,
                      targets, noise, counts, preds):
    """The loop of :func:`encoding_scores` (appends to targets, noise, counts, preds)."""
    from ..analysis import condition_averages

    n_ch = y.shape[2]
    for g in np.unique(groups):
        avg, var, feat = {}, {}, {name: {} for name in features}
        for f in range(n_folds):
            sel = (groups == g) & (folds == f)
            lab, cnt = np.unique(conditions[sel], return_counts=True)
            if not np.array_equal(lab, labels) or cnt.min() < 2:
                raise DataError(f"encoding_scores: group {g!r} needs >= {2 * n_folds} trials "
                                f"of every condition {labels.tolist()} (>= 2 per fold); fold "
                                f"{f} has {dict(zip(lab.tolist(), cnt.tolist()))}")
            avg[f], var[f], _, _ = condition_averages(y[sel], conditions[sel])
            counts.append(cnt)
            for name, x in features.items():
                x = np.asarray(x)
                fx = np.stack([x[sel & (conditions == c)].mean(0) for c in labels])
                feat[name][f] = fx.reshape(-1, *fx.shape[2:]).astype(float)  # (K*T, C, D)
        for name in features:
            # per-channel linear kernels between the folds' rows; a held-out channel's
            # kernel is the total minus its own
            per = {(b, a): np.einsum("icd,jcd->cij", feat[name][b], feat[name][a])
                   for a in range(n_folds) for b in range(n_folds)}
            total = {k: v.sum(0) for k, v in per.items()}
            pred = {c: np.zeros_like(avg[c]) for c in range(n_folds)}  # (K, T, C)
            for ch in range(n_ch):
                for a in range(n_folds):
                    ya = avg[a][..., ch].reshape(-1)
                    others = [b for b in range(n_folds) if b != a]
                    k_aa = total[(a, a)] - per[(a, a)][ch]
                    k_ba = np.concatenate([total[(b, a)] - per[(b, a)][ch] for b in others])
                    p_all = _ridge_fit_predict(k_aa, ya, k_ba, alphas)
                    p_all = p_all.reshape(len(others), *avg[a].shape[:2])
                    for b, p_b in zip(others, p_all):      # fit a, features b: targets c
                        for c in range(n_folds):
                            if c not in (a, b):
                                pred[c][..., ch] += p_b / ((n_folds - 1) * (n_folds - 2))
            for c in range(n_folds):
                preds[name].append(pred[c])
        for c in range(n_folds):
            targets.append(avg[c])
            noise.append(var[c])


def encoding_scores(features, responses, conditions, groups=None, *, n_folds=ENCODING_FOLDS,
                    alphas=None, min_ceiling=ENCODING_MIN_CEILING):
    """Held-out-channel encoding of condition-averaged responses, noise-normalized.

    Trials are split into ``n_folds`` folds within each group (subject) and condition. For
    each target fold, each held-out channel and each ordered pair (fit fold, feature fold)
    of the other folds: ridge (kernel form, unpenalized intercept, alpha by inner 5-fold CV
    over runs of 5 time steps; the same solution as :class:`neurofm.analysis.RidgeCV` with
    ``fit_intercept=True``) maps the fit fold's condition-averaged features of the OTHER
    channels (every time step of every condition is a sample) to the fit fold's condition
    average of the held-out channel; it then predicts from the feature fold's
    condition-averaged features (fold-disjoint, so a model with features unrelated to the
    response scores about 0 rather than reproducing the fit fold's own average).
    The predictions of the pairs are averaged and scored (R^2 per channel over all groups,
    folds, conditions and time steps) against the target fold's condition averages. The
    prediction never uses the target fold, so its noise cannot be predicted, and the R^2 is
    bounded in expectation by the ceiling :func:`neurofm.analysis.r2_ceiling` of the target
    averages (their noise variance from the trial repeats,
    :func:`neurofm.analysis.condition_averages`); ``normalized = R^2 / ceiling`` is the R^2
    against the noise-free signal (1 = as good as the data allow, 0 = no better than the
    mean), NaN where the ceiling is below ``min_ceiling``.

    Parameters
    ----------
    features : dict of str -> array (n_trials, n_times, n_channels, n_dims)
        Per-channel features of every trial (a channel's own slice is dropped when it is the
        held-out one).
    responses : array (n_trials, n_times, n_channels)
    conditions : array (n_trials,)
        Condition of every trial; every group needs >= 2 * n_folds trials per condition.
    groups : array (n_trials,), optional
        Separate models per group (e.g. subject).
    n_folds : int
        >= 3.
    alphas : array-like, optional
        Ridge penalties (default ``np.logspace(-2, 6, 17)``).
    min_ceiling : float

    Returns
    -------
    dict with ``ceiling`` (n_channels,), ``r2`` and ``normalized`` (dict name -> array
    (n_channels,)), ``n_trials``, ``n_groups``, ``n_folds``, ``trials_per_average`` (mean
    number of trials in a target average).
    """
    from threadpoolctl import threadpool_limits

    from ..analysis import noise_normalized, r2_ceiling, r2_score

    y = np.asarray(responses, dtype=float)
    conditions = np.asarray(conditions).astype(str)
    groups = np.zeros(len(y), dtype=int) if groups is None else np.asarray(groups)
    if n_folds < 3:
        raise NeurofmError(f"encoding_scores: n_folds must be >= 3 (fit, feature and target "
                           f"folds); got {n_folds}")
    if y.ndim != 3 or conditions.shape != (len(y),) or groups.shape != (len(y),):
        raise DataError(f"encoding_scores: responses must be (n_trials, n_times, n_channels) "
                        f"with one condition and group per trial; got {y.shape}, "
                        f"{conditions.shape}, {groups.shape}")
    for name, f in features.items():
        if np.shape(f)[:3] != y.shape or np.ndim(f) != 4:
            raise DataError(f"encoding_scores: features {name!r} must be (n_trials, n_times, "
                            f"n_channels, n_dims) = {y.shape} + (D,); got {np.shape(f)}")
    alphas = np.logspace(-2, 6, 17) if alphas is None else np.asarray(alphas, dtype=float)
    folds = _trial_folds(conditions, groups, n_folds)
    labels = np.unique(conditions)
    n_ch = y.shape[2]
    targets, noise, counts = [], [], []
    preds = {name: [] for name in features}
    with threadpool_limits(1):  # many small eigh: BLAS threads only add contention
        _fold_predictions(features, y, conditions, groups, folds, labels, alphas, n_folds,
                          targets, noise, counts, preds)
    target = np.concatenate(targets).reshape(-1, n_ch)
    ceiling = r2_ceiling(target, np.concatenate(noise).reshape(-1, n_ch))
    r2 = {name: r2_score(target, np.concatenate(p).reshape(-1, n_ch))
          for name, p in preds.items()}
    return {"ceiling": ceiling, "r2": r2,
            "normalized": {name: noise_normalized(r, ceiling, min_ev=min_ceiling)
                           for name, r in r2.items()},
            "n_trials": len(y), "n_groups": len(np.unique(groups)), "n_folds": n_folds,
            "trials_per_average": float(np.mean(np.concatenate(counts)))}


#: Feature sets of the encoding step, in report order: (key, label).
ENCODING_FEATURES = (("meggpt", "MEG-GPT (pretrained)"), ("meggpt_init", "MEG-GPT (random init)"),
                     ("raw", "raw signal (baseline)"))


def encoding_step(out, meg, sample_root, meggpt, sizes):
    """Encoding models from MEG-GPT features to held-out MEG channels, noise-normalized.

    Why MEG and not the fMRI models: a noise ceiling needs repeated presentations, and the
    resting-state fMRI runs have none (two substitutes tried earlier bounded nothing). The
    sample's GENERATED task MEG has them: 4 event classes, ~75 trials per class over its 4
    subjects (:func:`_evoked_store`). Epochs of :data:`ENCODING_SAMPLES` samples after each
    event (each channel z-scored over its recording and tokenized as in MEG-GPT's training);
    responses: each trial's epoch with its linear trend removed (the slow 1/f drift is most
    of the trial-to-trial noise). Features of a channel at each time step: the MEG-GPT
    hidden states of that channel (causal; channels do not attend to each other in this
    model, so a channel's states depend on its own past only). Each channel is held out in
    turn and predicted from the OTHER channels' features by :func:`encoding_scores` (the
    subjects' trials pooled, i.e. grand averages; 3 trial folds: fit / feature / target):
    the R^2 of the held-out trials' condition-averaged response, its noise ceiling from the
    trial repeats (finite-repeat correction: the noise variance of an average of n trials
    is the trials' variance / n, :func:`neurofm.analysis.r2_ceiling`) and ``R^2 /
    ceiling``, which is bounded by 1 in expectation because the prediction never sees the
    target trials. The same model on the other channels' raw (detrended) signal is the
    baseline; the same MEG-GPT with random weights separates what pretraining learned from
    what the architecture alone gives (e.g. its time-position code).

    Parameters
    ----------
    out : path
    meg : dict
        The MEG pipeline step's result (``store``, ``config``).
    sample_root : path
    meggpt : dict
        The MEG-GPT training result (its ``last`` checkpoint); without MEG-GPT in the
        installation the demo leaves this step out.
    sizes : dict
        ``encoding_subjects`` (optional; None, the default: all four task subjects; an int:
        the first that many, used only when the task runs are preprocessed here) and
        ``encoding_random_init`` (optional, default True: also score the randomly
        initialised MEG-GPT).

    Returns
    -------
    dict (JSON-safe) with per-channel ``rows``, ``summary`` per feature set, ``figure`` and
    ``command``.
    """
    import torch
    from scipy.signal import detrend

    from ..evals.decoding import load_meggpt
    from ..models import MEGGPT

    store, source = _evoked_store(out, meg, sample_root, sizes.get("encoding_subjects"))
    model, tokenizer = load_meggpt(meggpt["last"])
    n_samples = min(ENCODING_SAMPLES, int(model.config["context"]))
    ep = _evoked_epochs(store, model, tokenizer, n_samples)
    # responses: each trial's z-scored epoch with its linear trend removed (slow 1/f drift
    # is most of the trial-to-trial noise); the subjects' trials are pooled (grand averages)
    y = detrend(ep["signal"], axis=1)
    names = [k for k, _ in ENCODING_FEATURES
             if k != "meggpt_init" or sizes.get("encoding_random_init", True)]
    feats = {"meggpt": _hidden_states(model, ep["tokens"])}
    if "meggpt_init" in names:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            init = MEGGPT(**model.config).eval()
        feats["meggpt_init"] = _hidden_states(init, ep["tokens"])
    feats["raw"] = y[..., None]
    res = encoding_scores(feats, y, ep["condition"])
    channels = ep["channels"]
    rows = []
    for k, ch in enumerate(channels):
        row = {"channel": ch, "ceiling": float(res["ceiling"][k])}
        for name in names:
            row[f"r2_{name}"] = float(res["r2"][name][k])
            row[f"norm_{name}"] = float(res["normalized"][name][k])
        rows.append(row)
    summary = {}
    for name in names:
        norm = np.array([r[f"norm_{name}"] for r in rows])
        summary[name] = {"median_r2": float(np.median([r[f"r2_{name}"] for r in rows])),
                         "median_normalized": float(np.nanmedian(norm))
                         if np.isfinite(norm).any() else float("nan")}
    scored = [r for r in rows if np.isfinite(r["norm_meggpt"])]
    fig_path = _encoding_figure(out, rows, names)
    ckpt = meggpt["last"]
    return {"rows": rows, "summary": summary, "features": names, "figure": fig_path,
            "source": source,
            "store": str(store), "n_channels": len(channels), "n_scored": len(scored),
            "n_trials": res["n_trials"], "n_subjects": len(set(ep["subject"].tolist())),
            "n_folds": res["n_folds"], "trials_per_average": res["trials_per_average"],
            "n_samples": n_samples, "sfreq": ep["sfreq"],
            "min_ceiling": ENCODING_MIN_CEILING,
            "conditions": sorted(set(ep["condition"].tolist())),
            "command": ("python -c \"import neurofm.demo.steps as s, json; print(json.dumps("
                        f"s.encoding_step('{out}', {{'store': '{meg['store']}', 'config': "
                        f"'{meg['config']}'}}, '{sample_root}', {{'last': '{ckpt}'}}, "
                        f"{{'encoding_subjects': {sizes.get('encoding_subjects')!r}, "
                        "'encoding_random_init': "
                        f"{sizes.get('encoding_random_init', True)!r}}})"
                        "['summary']))\"")}


def _encoding_figure(out, rows, features=None):
    plt = _pyplot()
    fig = plt.figure(figsize=(12, 7.2))
    gs = fig.add_gridspec(2, 3, height_ratios=[1, 1])
    ax0 = fig.add_subplot(gs[0, :])
    ax1 = fig.add_subplot(gs[1, :2])
    ax2 = fig.add_subplot(gs[1, 2])
    x = np.arange(len(rows))
    names = [r["channel"] for r in rows]
    colors = {"meggpt": "tab:blue", "meggpt_init": "tab:gray", "raw": "tab:orange"}
    ax0.bar(x, [r["ceiling"] for r in rows], 0.8, color="0.85", label="noise ceiling")
    shown = [(n, lab) for n, lab in ENCODING_FEATURES if features is None or n in features]
    bar = 0.75 / len(shown)
    for k, (name, label) in enumerate(shown):
        dx = (k - (len(shown) - 1) / 2) * bar
        ax0.plot(x + dx, [r[f"r2_{name}"] for r in rows], "o", ms=4, color=colors[name],
                 label=f"R² {label}")
        ax1.bar(x + dx, [r[f"norm_{name}"] for r in rows], bar, color=colors[name],
                label=label)
    for ax in (ax0, ax1):
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xticks(x, names, fontsize=6, rotation=90)
        ax.set_xlim(-0.7, len(rows) - 0.3)
    ax0.set_ylabel("R² (held-out trials)")
    ax0.set_title("raw R² of the held-out trials' condition averages, and the ceiling",
                  fontsize=9)
    ax0.legend(frameon=False, fontsize=7, ncol=4)
    ax1.axhline(1.0, color="k", lw=0.8, ls="--")
    ax1.set_ylabel("R² / ceiling")
    ax1.set_title("noise-normalized score per held-out channel (empty: ceiling too low)",
                  fontsize=9)
    ax1.legend(frameon=False, fontsize=7)
    # score map: sensor positions (rows) x the channels at each position (columns)
    sensors = list(dict.fromkeys(n[:-1] for n in names))
    members = {s: [r for r in rows if r["channel"][:-1] == s] for s in sensors}
    width = max(len(m) for m in members.values())
    grid = np.full((len(sensors), width), np.nan)
    for i, s in enumerate(sensors):
        for j, r in enumerate(members[s]):
            grid[i, j] = r["norm_meggpt"]
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.9")
    im = ax2.imshow(grid, cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for i, s in enumerate(sensors):
        for j in range(len(members[s])):
            v = grid[i, j]
            ax2.text(j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                     fontsize=6, color="k" if np.isnan(v) or v > 0.5 else "w")
    ax2.set_yticks(range(len(sensors)), sensors, fontsize=6)
    ax2.set_xticks(range(width), [f"…{k + 1}" for k in range(width)], fontsize=6)
    ax2.set_title("MEG-GPT R² / ceiling per sensor", fontsize=9)
    fig.colorbar(im, ax=ax2, fraction=0.046)
    fig.tight_layout()
    return _savefig(fig, Path(out) / "figures" / "encoding.png")


def dse_step(out, fmri_store, groups, trained, sizes):
    """DSE / DSMI (group labels) of the embeddings at every saved checkpoint."""
    from ..analysis import dse_over_training, plot_dse_over_training

    _, _, sfreq = _store_shape(fmri_store)
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(trained), figsize=(5 * len(trained), 3.2))
    axes = np.atleast_1d(axes)
    curves = {}
    for ax, (name, res) in zip(axes, trained.items()):
        r = dse_over_training(res["checkpoints"], fmri_store, labels=groups, per="window",
                              window_samples=WINDOW, stride_s=STRIDE / sfreq,
                              max_n=sizes["dse_max_n"], standardize=True, n_clusters=2)
        key = "epoch" if "epoch" in r.coords else ("step" if "step" in r.coords else None)
        x = r[key].values.tolist() if key else list(range(r.sizes["checkpoint"]))
        curves[name] = {"x": [int(v) for v in x], "xlabel": key or "checkpoint",
                        "dse": [float(v) for v in r.values],
                        "dsmi": [float(v) for v in r["dsmi"].values],
                        "n_samples": int(r["n_samples"].values[0])}
        plot_dse_over_training(r, ax=ax)
        ax.set_title(name)
    fig.tight_layout()
    return {"curves": curves, "figure": _savefig(fig, Path(out) / "figures" / "dse.png"),
            "command": ("python -c \"import neurofm.analysis as na, glob; print(na."
                        "dse_over_training(sorted(glob.glob('"
                        f"{trained[next(iter(trained))]['run']}/checkpoints/epoch=*.ckpt')), "
                        f"'{fmri_store}', window_samples={WINDOW}, standardize=True))\"")}


def connectome_step(out, sample_root, calcium_store, sizes):
    """NTF dynamic connectome of the sample's C. elegans worms (one animal per worm; the
    calcium store's recordings when the sample has no C. elegans file)."""
    from ..analysis import dynamic_connectome
    from ..store import open_store

    parquet = Path(sample_root) / "derivatives" / "celegans" / "celegans_neural_data.parquet"
    if parquet.is_file():
        from ..io.celegans import read_celegans

        worms = read_celegans(parquet)
        recordings = {str(ds.attrs.get("worm", k)): ds for k, ds in enumerate(worms)}
        # the neurons recorded in every worm (the others are NaN by design)
        rec = [{str(c) for c, r in zip(ds["channel"].values, ds["recorded"].values) if r}
               for ds in worms]
        neurons = [str(c) for c in worms[0]["channel"].values if all(str(c) in r for r in rec)]
        recordings = {k: ds.sel(channel=neurons) for k, ds in recordings.items()}
        source, command_read = "C. elegans", (
            f"from neurofm.io.celegans import read_celegans; "
            f"recs = read_celegans('{parquet}')")
    else:
        st = open_store(calcium_store)
        recordings = {str(r): st.open(str(r)).load() for r in st.manifest["id"]}
        neurons = None
        source, command_read = "calcium", (
            f"import neurofm.store as ns; st = ns.open_store('{calcium_store}'); "
            "recs = [st.open(i).load() for i in st.ids]")
    dc = dynamic_connectome(recordings, rank=int(sizes["ntf_rank"]), neurons=neurons,
                            n_seeds=int(sizes["ntf_seeds"]), n_iter_max=int(sizes["ntf_iter"]),
                            n_blocks=None)
    err = float(dc.model.reconstruction_error_)
    n_comm = [len(np.unique(dc.communities.isel(component=k).values))
              for k in range(dc.communities.sizes["component"])]
    share = (dc.temporal.values.sum(axis=0) / dc.temporal.values.sum()).tolist()
    top = int(np.argmax(share))
    # the planted C. elegans circuits: are the reversal and the forward neurons each kept
    # together, and apart from each other, in some component?
    names = [str(n) for n in dc.communities["neuron"].values]
    groups = {"reversal": [n for n in ("AVAL", "AVAR", "AVEL", "AVER", "AIBL", "AIBR", "RIML",
                                       "RIMR") if n in names],
              "forward": [n for n in ("AVBL", "AVBR", "RIBL", "RIBR", "VB1", "VB2", "DB1",
                                      "DB2") if n in names]}
    purity = {}
    for g, members in groups.items():
        if len(members) < 2:
            continue
        best = 0.0
        for k in range(dc.communities.sizes["component"]):
            lab = dc.communities.isel(component=k).values
            vals = [lab[names.index(m)] for m in members]
            best = max(best, max(vals.count(v) for v in set(vals)) / len(vals))
        purity[g] = float(best)
    plt = _pyplot()
    fig = plt.figure(figsize=(13, 3.8))
    ax0 = fig.add_subplot(1, 3, 1)
    dc.plot_temporal(ax=ax0)
    ax1 = fig.add_subplot(1, 3, 2)
    dc.plot_affinity(top, ax=ax1)
    ax2 = fig.add_subplot(1, 3, 3)
    dc.plot_animals(ax=ax2)
    ax2.set_title("animal loadings")
    fig.tight_layout()
    return {"source": source, "n_animals": len(recordings),
            "n_neurons": int(dc.affinity.sizes["neuron"]),
            "n_times": int(dc.tensor.sizes["time"]), "rank": int(sizes["ntf_rank"]),
            "explained_variance": float(1 - err ** 2), "error": err, "communities": n_comm,
            "component_share": [float(v) for v in share], "top": top, "purity": purity,
            "figure": _savefig(fig, Path(out) / "figures" / "connectome.png"),
            "command": (f"python -c \"import neurofm.analysis as na; {command_read}; "
                        f"dc = na.dynamic_connectome(recs, rank={sizes['ntf_rank']}); "
                        "print(dc.communities)\"")}


# --------------------------------------------------------------------------------------------
# MEG-GPT: pretraining on the MEG store, generation and its spectral check
# --------------------------------------------------------------------------------------------
def meggpt_available():
    """Whether this installation has MEG-GPT (model, training module, generation, checks)."""
    import importlib.util

    names = ("neurofm.models.generation", "neurofm.training.meggpt", "neurofm.evals.spectral",
             "neurofm.evals.decoding")
    try:
        return all(importlib.util.find_spec(n) is not None for n in names) \
            and (resources()["configs"] / "meggpt.yaml").is_file()
    except (ImportError, NeurofmError):
        return False


def meggpt_config(out, store_path, sizes):
    """The run file of the MEG-GPT run (store, channels, sessions, token cache, logger,
    checkpoints); composed after ``configs/meggpt.yaml``, ``configs/data/meg_example.yaml``
    and ``configs/demo/meggpt.yaml``."""
    import yaml

    from ..store import open_store

    man = open_store(store_path).manifest
    run = (Path(out) / "runs" / "meggpt").resolve()
    # No session embedding: the quantile tokens have the same frequencies in every recording
    # (equal-count bins of z-scored channels), so the term carries no information, and the
    # demo's uses of the model (generation, encoding features) have no session to give.
    cfg = {
        "model": {"init_args": {"model": {"init_args": {
            "n_channels": int(man["n_channels"].max()), "n_sessions": None}}}},
        "data": {"init_args": {"store": str(Path(store_path).resolve()),
                               "stride_samples": int(sizes["meggpt_stride"]),
                               "batch_size": int(sizes["meggpt_batch"]),
                               "cache_dir": str(run / "tokens")}},
        "trainer": {
            "max_epochs": int(sizes["train_epochs"]["meggpt"]),
            "default_root_dir": str(run),
            "limit_val_batches": 1.0 if (man["split"] == "val").any() else 0,
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                       "init_args": {"save_dir": str(run), "name": "logs"}},
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"dirpath": str(run / "checkpoints"), "filename": "{epoch}",
                               "save_top_k": -1,
                               "every_n_epochs": int(sizes["checkpoint_every"]),
                               "save_last": True}},
            ],
        },
    }
    path = run / "run.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by neurofm demo: this run's store, sizes and folders\n"
                    + yaml.safe_dump(cfg, sort_keys=False))
    return path


def train_meggpt_step(out, store_path, sizes, *, key):
    """``neurofm fit -c configs/meggpt.yaml -c configs/data/meg_example.yaml -c
    configs/demo/meggpt.yaml -c run.yaml`` (resumes from ``last.ckpt`` of the same key)."""
    from ..training.cli import run_lightning_cli

    configs = resources()["configs"]
    run_yaml = meggpt_config(out, store_path, sizes)
    run = run_yaml.parent
    argv = ["fit", "-c", str(configs / "meggpt.yaml"),
            "-c", str(configs / "data" / "meg_example.yaml"),
            "-c", str(configs / "demo" / "meggpt.yaml"), "-c", str(run_yaml)]
    keyfile, last = run / "key.json", run / "checkpoints" / "last.ckpt"
    resume = keyfile.is_file() and json.loads(keyfile.read_text()).get("key") == key \
        and last.is_file()
    if not resume:
        import shutil

        for sub in ("checkpoints", "logs", "tokens"):
            shutil.rmtree(run / sub, ignore_errors=True)
        keyfile.write_text(json.dumps({"key": key}))
    else:
        logger.info("meggpt: resuming the interrupted run from %s", last)
    run_lightning_cli(argv + (["--ckpt_path", str(last)] if resume else []))
    ckpts = sorted((run / "checkpoints").glob("epoch=*.ckpt"), key=_epoch_of)
    if not ckpts:
        raise NeurofmError(f"{run / 'checkpoints'}: the MEG-GPT run saved no checkpoint")
    return {"model": "meggpt", "run": str(run), "checkpoints": [str(c) for c in ckpts],
            "last": str(ckpts[-1]), "curves": _read_curves(run / "logs"),
            "command": "neurofm " + " ".join(_q(a) for a in argv),
            "epochs": int(sizes["train_epochs"]["meggpt"])}


#: Sampling settings of the demo's MEG-GPT continuation (:func:`neurofm.models.generate`):
#: plain sampling at temperature 1 (lower temperatures and nucleus sampling were measured
#: to add low-frequency drift, not to sharpen the alpha peak; docs/demo.md).
GENERATE_OPTIONS = {}


def generation_step(out, meg_store, trained, sizes):
    """Continue a real MEG recording with MEG-GPT and compare spectra and envelopes."""
    from ..evals import spectral_similarity
    from ..evals.decoding import load_meggpt
    from ..models import generate
    from ..store import open_store

    model, tokenizer = load_meggpt(trained["last"])
    st = open_store(meg_store)
    rec = str(st.manifest["id"].iloc[0])
    real = st.open(rec).load()
    sfreq = float(real.attrs["sfreq"])
    # the model sees each channel z-scored over its recording (as in training)
    x = real["signal"].values.astype(np.float64)
    z = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    real = real.copy()
    real["signal"] = (("channel", "time"), z.astype(np.float32), {"units": "a.u."})
    # The prompt is the whole recording (tokenized with the same z-scoring over the recording
    # as in training; a prompt of ``context`` samples alone would be z-scored over those few
    # samples) and the model continues after its last ``context`` samples. A model with a
    # session embedding gets the recording's session (without it every input lacks the
    # term the model was trained with).
    sessions = list((getattr(model, "extra", None) or {}).get("session_ids") or [])
    session = sessions.index(rec) if model.config["n_sessions"] is not None \
        and rec in sessions else None
    n_steps = int(sizes["generate_seconds"] * sfreq)
    gen = generate(model, tokenizer, prompt=real, n_steps=n_steps, sfreq=sfreq, seed=0,
                   session=session, **GENERATE_OPTIONS)
    res = spectral_similarity(real, gen, fmin=1.0, fmax=min(45.0, sfreq / 2), plot=True)
    fig = res["figure"]
    summary = {k: float(v) for k, v in res["summary"].items()}
    opts = "".join(f", {k}={v!r}" for k, v in GENERATE_OPTIONS.items())
    return {"recording": rec, "sfreq": sfreq, "n_steps": n_steps,
            "seconds": n_steps / sfreq, "n_channels": int(gen.sizes["channel"]),
            "session": session, "options": dict(GENERATE_OPTIONS),
            "summary": summary,
            "figure": _savefig(fig, Path(out) / "figures" / "generation.png"),
            "command": ("python -c \"import neurofm.models as m, neurofm.evals as ev, "
                        "neurofm.store as ns; from neurofm.evals.decoding import load_meggpt; "
                        f"model, tok = load_meggpt('{trained['last']}'); "
                        f"real = ns.open_store('{meg_store}').open('{rec}').load(); "
                        "x = real['signal'].values.astype(float); "
                        "real['signal'] = (('channel', 'time'), ((x - x.mean(1, keepdims=True))"
                        " / x.std(1, keepdims=True)).astype('float32'), {'units': 'a.u.'}); "
                        f"gen = m.generate(model, tok, prompt=real, n_steps={n_steps}, "
                        f"sfreq={sfreq:g}, session={session!r}{opts}); "
                        "print(ev.spectral_similarity(real, gen, fmin=1.0, "
                        f"fmax={min(45.0, sfreq / 2):g})['summary'])\"")}
