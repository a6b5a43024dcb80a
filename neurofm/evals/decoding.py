"""Decoding evaluation of MEG-GPT (the paper's Wakeman-Henson protocol) on a store.

Epochs of ``n_samples`` samples after each event are tokenized like the pretraining data
(:class:`neurofm.data.TokenWindowDataset`: each channel z-scored over its recording, then the
tokenizer). Features:

- ``raw``: the z-scored epoch flattened (C x T), the paper's baseline;
- ``zero-shot``: the model's hidden states (final LayerNorm output) averaged over the epoch's
  time steps and flattened (C x D); no session label;
- ``fine-tuned``: the same after continuing next-token training on the unlabelled continuous
  data of the fold's training recordings (a copy of the model; ``finetune_steps`` AdamW
  steps on windows of ``context + 1`` samples);
- the classical baselines of :mod:`neurofm.evals.baselines` (covariance tangent space, log
  band power) on the z-scored epochs.

Every feature set is standardized with the training statistics and classified with
``LogisticRegression(max_iter=1000)``. Splits:

- ``cross-session``: train on every run but the held-out one (default the last) of each
  subject, test on the held-out runs (recording-disjoint);
- ``cross-subject``: for each subject in turn, train on all recordings of the other subjects
  and test on that subject's (subject-disjoint).

Runs are the manifest's ``run`` (else ``session``, else each recording is its own run).
"""

from __future__ import annotations

import copy
import os
import pickle

import numpy as np

from .._logging import logger, use_log_level
from ..errors import DataError, FormatError, NeurofmError

__all__ = ["FEATURES", "decode", "decoding_splits", "finetune_next_token", "is_meggpt_checkpoint",
           "load_meggpt", "meggpt_features", "summary_table"]

FEATURES = ("raw", "zero-shot", "fine-tuned")


# ------------------------------------------------------------------------------ checkpoints
def load_meggpt(path):
    """Model and tokenizer of a ``neurofm fit`` MEG-GPT checkpoint (no Lightning needed).

    Parameters
    ----------
    path : str | os.PathLike
        A checkpoint written by :class:`neurofm.training.MEGGPTModule`.

    Returns
    -------
    model : neurofm.models.MEGGPT
        In eval mode; ``model.extra`` holds the checkpoint's neurofm metadata (session table,
        channels, sampling rate, normalization, splits).
    tokenizer : neurofm.tokenizers.Tokenizer
        The tokenizer embedded in the checkpoint.

    Raises
    ------
    FormatError
        Not a MEG-GPT checkpoint, no embedded tokenizer, or weights that do not match.
    """
    from ..data.tokens import unpack_tokenizer
    from ..models import MEGGPT
    from ..models.export import read_torch_file

    path = os.fspath(path)
    ckpt = read_torch_file(path, what="checkpoint", weights_only=False,
                           kind="torch checkpoint")
    meta = ckpt.get("neurofm") if isinstance(ckpt, dict) else None
    if not meta or "meggpt" not in str(meta.get("model_class", "")).lower():
        raise FormatError(f"{path}: not a MEG-GPT checkpoint of neurofm fit (model_class "
                          f"{None if not meta else meta.get('model_class')!r})")
    model = MEGGPT(**meta["model_config"])
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items()
             if k.startswith("model.")}
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise FormatError(f"{path}: the weights do not match the model config: missing "
                          f"{missing[:10]}, unexpected {unexpected[:10]}, shapes {wrong[:10]}")
    model.load_state_dict(state, strict=True)
    model.eval()
    model.extra = {k: v for k, v in meta.items() if k != "tokenizer"}
    tokenizer = unpack_tokenizer(meta.get("tokenizer"), source=path)
    return model, tokenizer


def is_meggpt_checkpoint(path):
    """Whether ``path`` is a Lightning checkpoint of a MEG-GPT module (cheap header check)."""
    import torch

    if not os.path.isfile(os.fspath(path)):
        return False
    try:
        ckpt = torch.load(os.fspath(path), map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError):
        return False  # not a torch file: not ours (the caller reports it)
    meta = ckpt.get("neurofm") if isinstance(ckpt, dict) else None
    return bool(meta) and "meggpt" in str(meta.get("model_class", "")).lower()


# ------------------------------------------------------------------------------ features
def meggpt_features(model, tokens, *, batch_size=64, device=None):
    """Time-averaged hidden states, flattened channels x width.

    Parameters
    ----------
    model : neurofm.models.MEGGPT
    tokens : LongTensor | int array of shape (n, T, C)
        T <= ``model.context``.
    batch_size : int
    device : str, optional

    Returns
    -------
    features : float32 array of shape (n, C * D)
    """
    import torch

    tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    was_training = model.training
    model.eval()
    device = torch.device(device or "cpu")
    out = []
    try:
        with torch.no_grad():
            for chunk in tokens.split(batch_size):
                h = model.to(device).hidden_states(chunk.to(device))  # (b, T, C, D)
                out.append(h.mean(dim=1).flatten(1).float().cpu().numpy())  # (b, C * D)
    finally:
        model.train(was_training)
    return np.concatenate(out)


def finetune_next_token(model, windows, *, steps=100, lr=1e-4, batch_size=16,
                        weight_decay=0.01, seed=0, device=None):
    """Continue next-token training of a copy of ``model`` on unlabelled token windows.

    Parameters
    ----------
    model : neurofm.models.MEGGPT
        Not modified.
    windows : Dataset of dicts with ``tokens`` (L + 1, C)
        E.g. a :class:`~neurofm.data.TokenWindowDataset` (or a Subset of one) with
        ``window_samples = context + 1``.
    steps, lr, batch_size, weight_decay
        AdamW (betas (0.9, 0.98)) steps on ``model.loss`` without session labels.
    seed : int
        Batch order and dropout.

    Returns
    -------
    model : neurofm.models.MEGGPT
        The fine-tuned copy, in eval mode.
    losses : list of float
    """
    import torch
    from torch.utils.data import DataLoader, RandomSampler, default_collate

    if len(windows) == 0:
        raise DataError("finetune_next_token: no unlabelled windows to train on")
    tuned = copy.deepcopy(model).to(torch.device(device or "cpu")).train()
    opt = torch.optim.AdamW(tuned.optim_groups(weight_decay), lr=lr, betas=(0.9, 0.98))
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(windows, batch_size=batch_size, collate_fn=default_collate,
                        sampler=RandomSampler(windows, replacement=True,
                                              num_samples=steps * batch_size, generator=g))
    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for batch in loader:
            loss, _ = tuned.loss(batch["tokens"].to(next(tuned.parameters()).device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tuned.parameters(), 1.0)
            opt.step()
            losses.append(float(loss.detach()))
    return tuned.eval(), losses


# ------------------------------------------------------------------------------ splits
def decoding_splits(subjects, runs, *, heldout_run=None):
    """Cross-session and cross-subject splits of epochs.

    Parameters
    ----------
    subjects, runs : str arrays of shape (n,)
        Subject and run of each epoch.
    heldout_run : str, optional
        The run held out for cross-session testing (default: each subject's last run in
        sorted order).

    Returns
    -------
    folds : list of (protocol, fold name, train indices, test indices)
        ``("cross-session", "run <r>", ...)`` then ``("cross-subject", "<subject>", ...)``
        for every subject.

    Raises
    ------
    DataError
        Fewer than 2 subjects, a subject with a single run, or leaking splits.
    """
    subjects = np.asarray(subjects).astype(str)
    runs = np.asarray(runs).astype(str)
    unique = sorted(set(subjects))
    if len(unique) < 2:
        raise DataError(f"decoding needs at least 2 subjects for cross-subject folds; got "
                        f"{unique}")
    held = np.zeros(len(subjects), dtype=bool)
    for s in unique:
        mine = sorted(set(runs[subjects == s]))
        if len(mine) < 2:
            raise DataError(f"subject {s!r} has a single run ({mine}); cross-session decoding "
                            "needs at least 2 runs per subject")
        r = mine[-1] if heldout_run is None else str(heldout_run)
        if r not in mine:
            raise DataError(f"subject {s!r} has no run {r!r} (runs {mine})")
        held |= (subjects == s) & (runs == r)
    folds = [("cross-session", "held-out run" if heldout_run is None else f"run {heldout_run}",
              np.flatnonzero(~held), np.flatnonzero(held))]
    for s in unique:
        folds.append(("cross-subject", s, np.flatnonzero(subjects != s),
                      np.flatnonzero(subjects == s)))
    pairs = np.char.add(np.char.add(subjects, "\x00"), runs)
    for protocol, _, tr, te in folds:
        if protocol == "cross-session":
            leak = set(pairs[tr]) & set(pairs[te])
        else:
            leak = set(subjects[tr]) & set(subjects[te])
        if leak:
            raise DataError(f"{protocol} split leaks {sorted(leak)[:5]}")
    return folds


# ------------------------------------------------------------------------------ protocol
def _classify(f_tr, y_tr, f_te, y_te, seed):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(f_tr)  # train statistics only
    clf = LogisticRegression(max_iter=1000, random_state=seed)
    clf.fit(scaler.transform(f_tr), y_tr)
    return float(np.mean(clf.predict(scaler.transform(f_te)) == y_te))


def _runs(store, rec_ids):
    man = store.manifest.set_index("id")
    out = {}
    for r in rec_ids:
        run = str(man.loc[r, "run"] or "") or str(man.loc[r, "session"] or "") or r
        out[r] = run
    return out


def decode(model, tokenizer, store, events, *, n_samples=80, tmin=0.0, split=None,
           channels=None, baselines="auto", protocols=("cross-session", "cross-subject"),
           finetune=True, finetune_steps=100, finetune_lr=1e-4, finetune_batch_size=16,
           heldout_run=None, sfreq="auto", cache_dir=None, batch_size=64, seed=0,
           device=None, verbose=None):
    """Decode event classes from MEG-GPT features and baselines (the paper's protocol).

    Parameters
    ----------
    model : neurofm.models.MEGGPT
    tokenizer : Tokenizer
        The tokenizer the model was trained with (:func:`load_meggpt` gives both).
    store : neurofm.store.Store | str
    events : dict of str -> int
        Event description -> class label; one epoch per matching event.
    n_samples : int
        Epoch length after ``tmin`` (80 in the paper, 320 ms at 250 Hz); at most the model
        context.
    tmin : float
        Epoch start relative to the event (s).
    split : str | list of str, optional
        Manifest splits to use (default every recording).
    channels : list of str, optional
        Channel order (default the checkpoint's channels when ``model.extra`` has them,
        else the recordings' common channels).
    baselines : "auto" | sequence of str
        Baselines of :mod:`neurofm.evals.baselines` ("auto": the modality's); the raw epoch
        is always evaluated.
    protocols : sequence of {"cross-session", "cross-subject"}
    finetune : bool
        Also evaluate features after self-supervised fine-tuning on each fold's training
        recordings.
    finetune_steps, finetune_lr, finetune_batch_size
        See :func:`finetune_next_token`.
    heldout_run : str, optional
        See :func:`decoding_splits`.
    sfreq : "auto" | float | None
        Required rate (see :class:`~neurofm.data.TokenWindowDataset`).
    cache_dir : str, optional
        Token cache of the store's recordings (tokenized once; default on the fly).
    batch_size : int
        Feature extraction batch.
    seed : int
    device : str, optional
    verbose : bool | str | None

    Returns
    -------
    results : pandas.DataFrame
        One row per (protocol, fold, features): ``protocol``, ``fold``, ``features``,
        ``accuracy``, ``chance`` (1 / n_classes), ``n_classes``, ``n_train``, ``n_test``,
        ``train_subjects``, ``test_subjects``, ``train_recordings``, ``test_recordings``
        (comma-separated). :func:`summary_table` averages the folds.
    """
    import pandas as pd
    import torch
    from torch.utils.data import Subset

    from ..data.tokens import TokenWindowDataset
    from ..store import Store, open_store
    from .baselines import BASELINES, default_baselines, make_baseline

    with use_log_level(verbose):
        bad = [p for p in protocols if p not in ("cross-session", "cross-subject")]
        if bad or not protocols:
            raise NeurofmError(f"protocols must be among ('cross-session', 'cross-subject'); "
                               f"got {list(protocols)}")
        st = store if isinstance(store, Store) else open_store(store)
        context = int(model.config["context"])
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) \
                or not 1 <= n_samples <= context:
            raise NeurofmError(f"n_samples must be an integer in [1, model context={context}]"
                               f"; got {n_samples!r}")
        extra = getattr(model, "extra", None) or {}
        if channels is None:
            channels = extra.get("channels") or "intersection"
        rates = sorted(set(st.manifest["sfreq"].astype(float)))
        rate = rates[0]
        epochs = TokenWindowDataset(st, tokenizer, events=events, tmin=tmin,
                                    tmax=tmin + n_samples / rate, split=split,
                                    channels=channels, sessions=False, return_signal=True,
                                    sfreq=sfreq, cache_dir=cache_dir)
        if len(epochs.channels) != model.config["n_channels"]:
            raise DataError(f"the store's epochs have {len(epochs.channels)} channels; the "
                            f"model has n_channels={model.config['n_channels']}")
        items = [epochs[i] for i in range(len(epochs))]
        if not items:
            raise DataError(f"{st.path}: no epochs for events {sorted(events)}")
        tokens = torch.stack([it["tokens"][:n_samples] for it in items])  # (n, T, C)
        signal = np.stack([it["signal"][:, :n_samples].numpy() for it in items])  # (n, C, T)
        y = np.array([it["label"] for it in items])
        recs = np.array([it["recording"] for it in items])
        subjects = np.array([it["subject"] or it["recording"] for it in items])
        run_of = _runs(st, sorted(set(recs)))
        runs = np.array([run_of[r] for r in recs])
        n_classes = len(np.unique(y))
        if n_classes < 2:
            raise DataError(f"the epochs hold one class only ({np.unique(y)})")
        if baselines == "auto":
            mods = sorted(set(st.manifest.set_index("id").loc[sorted(set(recs)), "modality"]))
            baselines = default_baselines(mods[0]) if len(mods) == 1 else ()
        unknown = [b for b in baselines if b not in BASELINES]
        if unknown:
            raise NeurofmError(f"unknown baselines {unknown}; choose from {BASELINES}")
        folds = [f for f in decoding_splits(subjects, runs, heldout_run=heldout_run)
                 if f[0] in protocols]
        logger.info("decoding %d epochs (%d classes) of %d subjects: %d folds", len(y),
                    n_classes, len(set(subjects)), len(folds))
        zero_shot = meggpt_features(model, tokens, batch_size=batch_size, device=device)
        continuous = None
        if finetune:
            continuous = TokenWindowDataset(st, tokenizer, window_samples=context + 1,
                                            split=split, channels=epochs.channels,
                                            sessions=False, sfreq=sfreq, cache_dir=cache_dir)
            rec_of_window = np.array([continuous.window_info(i)[0]
                                      for i in range(len(continuous))])
        rows = []
        for protocol, fold, tr, te in folds:
            feats = {"raw": signal.reshape(len(y), -1), "zero-shot": zero_shot}
            if finetune:
                train_recs = sorted(set(recs[tr]))
                idx = np.flatnonzero(np.isin(rec_of_window, train_recs))
                tuned, losses = finetune_next_token(
                    model, Subset(continuous, idx.tolist()), steps=finetune_steps,
                    lr=finetune_lr, batch_size=finetune_batch_size, seed=seed, device=device)
                logger.info("%s %s: fine-tuned on %d windows, loss %.3f -> %.3f", protocol,
                            fold, len(idx), losses[0], losses[-1])
                feats["fine-tuned"] = meggpt_features(tuned, tokens, batch_size=batch_size,
                                                      device=device)
            scores = {name: _classify(f[tr], y[tr], f[te], y[te], seed)
                      for name, f in feats.items()}
            for b in baselines:
                clf = make_baseline(b, "classification", sfreq=rate, reg=1.0)
                clf.fit(signal[tr], y[tr])
                scores[b] = float(np.mean(clf.predict(signal[te]) == y[te]))
            for name, acc in scores.items():
                rows.append({"protocol": protocol, "fold": fold, "features": name,
                             "accuracy": acc, "chance": 1.0 / n_classes,
                             "n_classes": n_classes, "n_train": len(tr), "n_test": len(te),
                             "train_subjects": ",".join(sorted(set(subjects[tr]))),
                             "test_subjects": ",".join(sorted(set(subjects[te]))),
                             "train_recordings": ",".join(sorted(set(recs[tr]))),
                             "test_recordings": ",".join(sorted(set(recs[te])))})
        return pd.DataFrame(rows)


def summary_table(results):
    """Mean accuracy per protocol and feature set (folds averaged), with chance.

    Parameters
    ----------
    results : pandas.DataFrame
        What :func:`decode` returns.

    Returns
    -------
    table : pandas.DataFrame
        Index ``features``; one column per protocol, plus ``chance``.
    """
    order = [f for f in FEATURES if f in set(results["features"])]
    order += [f for f in dict.fromkeys(results["features"]) if f not in order]
    table = results.pivot_table(index="features", columns="protocol", values="accuracy",
                                aggfunc="mean").reindex(order)
    table.columns.name = None
    table["chance"] = float(results["chance"].iloc[0])
    return table
