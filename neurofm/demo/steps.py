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


def _runs(store):
    """Every recording of a store as (id, subject, split, signal (channel, time))."""
    from ..store import open_store

    st = open_store(store)
    for _, row in st.manifest.iterrows():
        ds = st.open(str(row["id"]))
        yield (str(row["id"]), str(row["subject"]), str(row["split"]),
               np.asarray(ds["signal"].values, dtype=np.float32), ds)


def _patch_features(encoder, x, keep_rois, patch):
    """Per-time-patch features of the encoder that sees only the ``keep_rois`` tokens.

    ``x`` (channel, time) is cut into non-overlapping windows of ``WINDOW`` frames; the
    tokens of the kept ROIs are encoded (the held-out ROIs are never shown to the model) and
    averaged over ROIs for every time patch. Returns (n_patches_total, D).
    """
    import torch

    n_rois = x.shape[0]
    n_win = x.shape[1] // WINDOW
    p = WINDOW // patch
    idx = torch.as_tensor([r * p + t for r in keep_rois for t in range(p)])
    wins = np.stack([x[:, k * WINDOW:(k + 1) * WINDOW] for k in range(n_win)])
    with torch.no_grad():
        xt = torch.as_tensor(wins, dtype=torch.float32)
        tok = encoder(xt, idx=idx[None].expand(len(wins), -1))          # (B, K, D)
    tok = tok.reshape(len(wins), len(keep_rois), p, -1).mean(dim=1)     # (B, P, D)
    del n_rois
    return tok.reshape(len(wins) * p, -1).numpy()


def encoding_step(out, fmri_store, sample_root, trained, sizes):
    """Encoding models from Brain-JEPA features to held-out parcels.

    For each held-out parcel the encoder sees the other parcels only (their tokens are the
    only ones encoded); its token features (mean over parcels, per 8-frame time patch)
    predict the held-out parcel's patch means with ridge (alpha by inner CV), fitted on the
    other subjects of a subject-wise K-fold (K = min(4, n_subjects)) and scored on the pooled
    out-of-fold predictions (R^2). The same ridge on the other parcels' patch means is the
    baseline. Resting-state runs have no repeated presentations, so no repeat-based noise
    ceiling (:func:`neurofm.analysis.explainable_variance`) is defined and the scores are
    plain out-of-fold R^2.
    """
    import pandas as pd
    import torch

    from ..analysis import RidgeCV, r2_score
    from ..data import NormalizationStats
    from ..evals import load_pretrained

    encoder = load_pretrained(trained["brainjepa"]["last"])
    patch = int(getattr(encoder, "patch_size", None) or encoder.config.get("patch_size", 8))
    stats = (getattr(encoder, "extra", {}) or {}).get("normalization")
    norm = NormalizationStats.from_dict(stats, source="encoder") if stats else None
    recs = list(_runs(fmri_store))
    channels = [str(c) for c in recs[0][4]["channel"].values]
    n_rois = len(channels)
    network = dict.fromkeys(channels, "-")
    for tsv in sorted(Path(sample_root).glob("derivatives/atlas/sub-*/anat/*_dseg.tsv")):
        t = pd.read_csv(tsv, sep="\t", dtype=str)
        if "network" in t and set(channels) <= set(t["name"]):
            network = dict(zip(t["name"], t["network"]))
            break
    nets = sorted({network[c] for c in channels})
    if sizes["encoding_heldout"] == "all":
        heldout = list(range(n_rois))
    else:
        heldout = [channels.index(next(c for c in channels if network[c] == n)) for n in nets]

    def frames(x):
        n = (x.shape[1] // WINDOW) * WINDOW
        return x[:, :n].reshape(x.shape[0], -1, patch)                # (ch, patches, frames)

    xs = []
    for rec_id, subject, _split, x, _ds in recs:
        if norm is not None:
            x = norm.apply(x, channels, recording=rec_id)
        xs.append((subject, np.asarray(x, dtype=np.float32)))
    subjects = sorted({s for s, _ in xs})
    n_folds = min(4, len(subjects))
    fold_of = {s: k % n_folds for k, s in enumerate(subjects)}
    alphas = np.logspace(-2, 4, 13)
    torch.manual_seed(0)
    rows = []
    for h in heldout:
        keep = [i for i in range(n_rois) if i != h]
        feats, means, ys, folds = [], [], [], []
        for s, x in xs:
            f = frames(x)
            feats.append(_patch_features(encoder, x, keep, patch))
            means.append(f[keep].mean(axis=2).T)                          # (patches, ch)
            ys.append(f[h].mean(axis=1))
            folds.append(np.full(f.shape[1], fold_of[s]))
        Y, fold = np.concatenate(ys), np.concatenate(folds)
        row = {"parcel": channels[h], "network": network[channels[h]]}
        for name, X in (("brainjepa", np.concatenate(feats)), ("raw", np.concatenate(means))):
            pred = np.zeros_like(Y)
            for k in range(n_folds):
                te = fold == k
                model = RidgeCV(alphas=alphas).fit(X[~te], Y[~te, None])
                pred[te] = np.ravel(model.predict(X[te]))
            row[f"r2_{name}"] = float(np.ravel(r2_score(Y[:, None], pred[:, None]))[0])
        rows.append(row)
    fig_path = _encoding_figure(out, rows, channels, network)
    return {"rows": rows, "n_subjects": len(subjects), "n_folds": n_folds, "figure": fig_path,
            "n_heldout": len(rows),
            "command": ("python -c \"import neurofm.demo.steps as s, json; print(json.dumps("
                        f"s.encoding_step('{out}', '{fmri_store}', '{sample_root}', "
                        f"{{'brainjepa': {{'last': '{trained['brainjepa']['last']}'}}}}, "
                        f"{{'encoding_heldout': {sizes['encoding_heldout']!r}}})['rows']))\"")}


def _encoding_figure(out, rows, channels, network):
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [2, 1]})
    x = np.arange(len(rows))
    axes[0].bar(x - 0.2, [r["r2_brainjepa"] for r in rows], 0.4, label="Brain-JEPA features")
    axes[0].bar(x + 0.2, [r["r2_raw"] for r in rows], 0.4, label="raw patch means",
                color="tab:orange")
    axes[0].axhline(0.0, color="k", lw=0.8)
    axes[0].set_xticks(x, [f"{r['parcel'].replace('grid_', '')} {r['network']}"
                           for r in rows], fontsize=7, rotation=45, ha="right")
    axes[0].set_ylabel("R² (out of fold)")
    axes[0].legend(frameon=False, fontsize=7)
    # score map: networks (rows) x their parcels (columns)
    nets = sorted({network[c] for c in channels})
    members = {n: [c for c in channels if network[c] == n] for n in nets}
    width = max(len(m) for m in members.values())
    grid = np.full((len(nets), width), np.nan)
    by_parcel = {r["parcel"]: r["r2_brainjepa"] for r in rows}
    for i, n in enumerate(nets):
        for j, c in enumerate(members[n]):
            grid[i, j] = by_parcel.get(c, np.nan)
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.9")
    im = axes[1].imshow(grid, cmap=cmap, vmin=0, vmax=max(0.5, float(np.nanmax(grid))))
    for i, n in enumerate(nets):
        for j, c in enumerate(members[n]):
            v = grid[i, j]
            axes[1].text(j, i, f"{c.replace('grid_', '')}\n"
                         + ("not held out" if np.isnan(v) else f"{v:.2f}"),
                         ha="center", va="center", fontsize=6,
                         color="k" if np.isnan(v) or v > 0.3 else "w")
    axes[1].set_yticks(range(len(nets)), nets)
    axes[1].set_xticks([])
    axes[1].set_title("Brain-JEPA R² per held-out parcel", fontsize=9)
    fig.colorbar(im, ax=axes[1], fraction=0.046)
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
    cfg = {
        "model": {"init_args": {"model": {"init_args": {
            "n_channels": int(man["n_channels"].max()), "n_sessions": len(man)}}}},
        "data": {"init_args": {"store": str(Path(store_path).resolve()),
                               "stride_samples": int(sizes["meggpt_stride"]),
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
    prompt = real.isel(time=slice(0, model.context))
    n_steps = int(sizes["generate_seconds"] * sfreq)
    gen = generate(model, tokenizer, prompt=prompt, n_steps=n_steps, sfreq=sfreq, seed=0)
    res = spectral_similarity(real, gen, fmin=1.0, fmax=min(45.0, sfreq / 2), plot=True)
    fig = res["figure"]
    summary = {k: float(v) for k, v in res["summary"].items()}
    return {"recording": rec, "sfreq": sfreq, "n_steps": n_steps,
            "seconds": n_steps / sfreq, "n_channels": int(gen.sizes["channel"]),
            "summary": summary,
            "figure": _savefig(fig, Path(out) / "figures" / "generation.png"),
            "command": ("python -c \"import neurofm.models as m, neurofm.evals as ev, "
                        "neurofm.store as ns; from neurofm.evals.decoding import load_meggpt; "
                        f"model, tok = load_meggpt('{trained['last']}'); "
                        f"real = ns.open_store('{meg_store}').open('{rec}'); "
                        f"gen = m.generate(model, tok, n_steps={n_steps}, sfreq={sfreq:g}); "
                        "print(ev.spectral_similarity(real, gen)['summary'])\"")}
