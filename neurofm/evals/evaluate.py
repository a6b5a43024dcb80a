"""``probe``: encoders next to classical baselines on the same subject-disjoint splits.

One call gives, for every seed (a new subject-disjoint split and new initializations), the
test scores of: each encoder's linear probe (and fine-tuning), the same architecture with
random weights, and the classical baselines of the modality. The result is an
``xr.Dataset``; :mod:`neurofm.evals.report` turns it into a table, a plot and plain verdicts.
"""

from __future__ import annotations

import json

import numpy as np

from .._logging import logger, use_log_level
from ..errors import DataError, NeurofmError
from .baselines import BASELINES, default_baselines, fit_baseline
from .embedding import _dataset, embed_array, load_windows, resolve_labels
from .encoders import as_encoder, n_frames_of, random_like
from .metrics import CLASSIFICATION_METRICS, PRIMARY, REGRESSION_METRICS, score
from .probing import fine_tune, linear_probe
from .splits import SPLITS, assert_subject_disjoint, subject_splits

__all__ = ["MODES", "infer_task", "probe"]

MODES = ("linear", "finetune")


def infer_task(y):
    """"classification" for integer, boolean or string targets, else "regression"."""
    y = np.asarray(y)
    if y.dtype.kind in "biuOUS":
        return "classification"
    if y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0) and len(np.unique(y)) <= 10:
        return "classification"
    return "regression"


def _encoders(encoder):
    if isinstance(encoder, dict):
        if not encoder:
            raise NeurofmError("encoder: an empty dict")
        return {str(k): as_encoder(v) for k, v in encoder.items()}
    if isinstance(encoder, (list, tuple)):
        return {f"encoder{i}": as_encoder(v) for i, v in enumerate(encoder)}
    return {"pretrained": as_encoder(encoder)}


def probe(encoder, data, labels=None, *, task="auto", modes=("linear",), seeds=(0, 1, 2),
          fractions=(0.6, 0.2, 0.2), baselines="auto", random_init=True, pool="mean",
          window_samples=None, window_s=None, stride_s=None, split=None,
          normalization="auto", batch_size=64, device=None, linear=None, finetune=None,
          verbose=None):
    """Evaluate encoders against baselines on subject-disjoint splits over several seeds.

    Parameters
    ----------
    encoder : encoder | dict of str -> encoder | None
        What :func:`neurofm.evals.as_encoder` accepts (model, encoder, checkpoint or encoder
        file, braindecode model, callable (B, C, T) -> (B, N, D) or (B, D)); a dict names
        several (e.g. ``{"brainjepa": ckpt1, "brainmae": ckpt2}``). None: baselines only.
    data : WindowDataset | Store | str
        The windows (a store is cut with ``window_samples`` / ``window_s`` and ``stride_s``
        over ``split``, default every recording: the probe makes its own splits).
    labels : dict | pandas.Series, optional
        Recording id or subject -> target; None uses event labels of the windows.
    task : {"auto", "classification", "regression"}
    modes : sequence of {"linear", "finetune"}
        Linear probe on frozen embeddings; full fine-tuning with layer-wise lr decay.
    seeds : sequence of int
        One subject-disjoint split and one initialization per seed.
    fractions : (float, float, float)
        Train / val / test fractions of the subjects (val selects epochs and
        regularization).
    baselines : "auto" | sequence of str
        "auto": the modality's (fMRI: fc_correlation, fc_tangent; EEG/MEG/iEEG:
        riemann_tangent, log_bandpower).
    random_init : bool
        Also evaluate each encoder's architecture with random weights (a new draw per seed).
    pool : {"mean", "max", "none"}
        Token pooling of the linear probe's embeddings.
    linear, finetune : dict, optional
        Options of :func:`neurofm.evals.probing.linear_probe` / :func:`fine_tune`.

    Returns
    -------
    results : xr.Dataset
        ``score`` (model, seed, metric), ``mean`` and ``std`` (model, metric; std with
        ddof=1), ``split`` (seed, subject: "train"/"val"/"test"), coordinate ``kind``
        (model: "encoder", "random", "baseline"); attrs ``task``, ``primary_metric``,
        ``modality``, ``n_windows``, ``n_subjects``, ``verdict`` (plain-language comparison
        lines, JSON list) and ``options`` (JSON).
    """
    import xarray as xr

    with use_log_level(verbose):
        modes = tuple(modes)
        bad = [m for m in modes if m not in MODES]
        if bad:
            raise NeurofmError(f"modes must be among {MODES}; got {bad}")
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise NeurofmError("seeds must name at least one seed")
        encoders = {} if encoder is None else _encoders(encoder)
        first = next(iter(encoders.values()), None)
        if window_samples is None and window_s is None and first is not None:
            window_samples = n_frames_of(first)
        ds = _dataset(data, split=split, window_samples=window_samples, window_s=window_s,
                      stride_s=stride_s, normalization=normalization,
                      encoder_extra=None if first is None else first.extra)
        win = load_windows(ds)
        y = resolve_labels(win, labels)
        if task == "auto":
            task = infer_task(y)
        if task not in ("classification", "regression"):
            raise NeurofmError(f"task must be 'auto', 'classification' or 'regression'; got "
                               f"{task!r}")
        if task == "regression":
            y = np.asarray(y, dtype=np.float64)
        if baselines == "auto":
            baselines = default_baselines(win.modality)
        unknown = [b for b in baselines if b not in BASELINES]
        if unknown:
            raise NeurofmError(f"unknown baselines {unknown}; choose from {BASELINES}")
        metrics = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
        subjects = sorted(set(win.subject))
        methods, kinds, rows, split_rows = [], [], {}, []

        def record(method, kind, seed, pred, proba, classes, te):
            if method not in rows:
                methods.append(method)
                kinds.append(kind)
                rows[method] = {}
            rows[method][seed] = score(task, y[te], pred, proba, classes)

        feats = {name: embed_array(enc, win.signal, pool=pool, batch_size=batch_size,
                                   device=device) for name, enc in encoders.items()
                 if "linear" in modes}
        for seed in seeds:
            splits = subject_splits(win.subject, y if task == "classification" else None,
                                    seed=seed, fractions=fractions)
            assert_subject_disjoint(win.subject, splits)
            te = splits["test"]
            if task == "classification" and len(np.unique(y[splits["train"]])) < 2:
                raise DataError(f"seed {seed}: the training split has one class only; more "
                                "subjects per class are needed")
            where = {s: next(k for k in SPLITS if s in set(win.subject[splits[k]]))
                     for s in subjects}
            split_rows.append([where[s] for s in subjects])
            logger.info("seed %d: %s subjects", seed,
                        {k: len(set(win.subject[v])) for k, v in splits.items()})
            for name, enc in encoders.items():
                rand = random_like(enc, seed=seed) if random_init else None
                if "linear" in modes:
                    record(f"{name} linear", "encoder", seed,
                           *linear_probe(task, feats[name], y, splits, seed=seed,
                                         options=linear, device=device), te)
                    if rand is not None:
                        f = embed_array(rand, win.signal, pool=pool, batch_size=batch_size,
                                        device=device)
                        record(f"random-init {name} linear", "random", seed,
                               *linear_probe(task, f, y, splits, seed=seed, options=linear,
                                             device=device), te)
                if "finetune" in modes:
                    record(f"{name} finetune", "encoder", seed,
                           *fine_tune(task, enc, win.signal, y, splits, seed=seed,
                                      options=finetune, device=device), te)
                    if rand is not None:
                        record(f"random-init {name} finetune", "random", seed,
                               *fine_tune(task, rand, win.signal, y, splits, seed=seed,
                                          options=finetune, device=device), te)
            for b in baselines:
                record(b, "baseline", seed,
                       *fit_baseline(b, task, win.signal, y, splits, sfreq=win.sfreq), te)
        if not methods:
            raise NeurofmError("nothing to evaluate: no encoder and no baseline")
        data_ = np.array([[[rows[m][s][k] for k in metrics] for s in seeds] for m in methods])
        n = len(seeds)
        mean = np.nanmean(data_, axis=1) if n else data_
        std = np.nanstd(data_, axis=1, ddof=1) if n > 1 else np.zeros_like(mean)
        res = xr.Dataset(
            {"score": (("model", "seed", "metric"), data_),
             "mean": (("model", "metric"), mean),
             "std": (("model", "metric"), std),
             "split": (("seed", "subject"), np.array(split_rows, dtype=str))},
            coords={"model": methods, "seed": seeds, "metric": list(metrics),
                    "subject": subjects, "kind": ("model", kinds)})
        res.attrs.update({
            "task": task, "primary_metric": PRIMARY[task], "modality": win.modality,
            "n_windows": len(win), "n_subjects": len(subjects),
            "options": json.dumps({"modes": modes, "fractions": list(fractions), "pool": pool,
                                   "window_samples": window_samples, "linear": linear,
                                   "finetune": finetune}, default=str)})
        from .report import verdicts

        res.attrs["verdict"] = json.dumps(verdicts(res))
        for line in verdicts(res):
            logger.info("%s", line)
        return res
