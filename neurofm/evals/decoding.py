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

The model comes from a ``neurofm fit`` checkpoint (:func:`load_meggpt`) or from the YAML
config(s) of ``neurofm fit`` with or without a checkpoint (:func:`meggpt_from_config`; no
checkpoint: the config's randomly initialized model).
"""

from __future__ import annotations

import copy
import importlib
import os
import pickle
from typing import NamedTuple

import numpy as np

from .._logging import logger, use_log_level, warn
from ..errors import DataError, FormatError, NeurofmError

__all__ = ["FEATURES", "RANDOM_INIT", "CheckpointMismatchError", "ConfigError", "MEGGPTSetup",
           "decode", "decoding_splits", "finetune_next_token", "is_meggpt_checkpoint",
           "load_meggpt", "meggpt_features", "meggpt_from_config", "summary_table"]

FEATURES = ("raw", "zero-shot", "fine-tuned")
RANDOM_INIT = "zero-shot (random init)"


# ------------------------------------------------------------------------------ checkpoints
def _meggpt_checkpoint(path, *, what, not_meggpt):
    """(neurofm metadata, model state dict without the ``model.`` prefix) of a MEG-GPT
    checkpoint; FormatError ``not_meggpt(model_class)`` for any other file."""
    from ..models.export import read_torch_file

    ckpt = read_torch_file(path, what=what, weights_only=False, kind="torch checkpoint")
    meta = ckpt.get("neurofm") if isinstance(ckpt, dict) else None
    model_class = None if not meta else meta.get("model_class")
    if not meta or "meggpt" not in str(model_class).lower() \
            or not isinstance(ckpt.get("state_dict"), dict):
        raise FormatError(not_meggpt(model_class))
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items()
             if k.startswith("model.")}
    return meta, state


def _state_mismatch(own, state):
    """(missing keys, unexpected keys, {key: (saved shape, model shape)}) of ``state``
    against the model's state dict ``own``; all empty when it loads strictly."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = {k: (tuple(state[k].shape), tuple(own[k].shape))
              for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape}
    return missing, unexpected, shapes


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

    path = os.fspath(path)
    meta, state = _meggpt_checkpoint(
        path, what="checkpoint",
        not_meggpt=lambda found: f"{path}: not a MEG-GPT checkpoint of neurofm fit "
                                f"(model_class {found!r})")
    model = MEGGPT(**meta["model_config"])
    missing, unexpected, shapes = _state_mismatch(model.state_dict(), state)
    if missing or unexpected or shapes:
        raise FormatError(f"{path}: the weights do not match the model config: missing "
                          f"{missing[:10]}, unexpected {unexpected[:10]}, shapes "
                          f"{list(shapes)[:10]}")
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


# ------------------------------------------------------------------------------ configs
class ConfigError(NeurofmError):
    """A ``neurofm fit`` config that does not give a MEG-GPT model on a store."""


class CheckpointMismatchError(FormatError):
    """Checkpoint weights that do not fit the model of the config (every mismatch listed).

    Attributes
    ----------
    path : str
        The checkpoint.
    missing : list of str
        Parameters of the config's model absent from the checkpoint.
    unexpected : list of str
        Checkpoint parameters the config's model does not have.
    shapes : dict of str -> (tuple, tuple)
        Parameter -> (checkpoint shape, config model shape), where they differ.
    settings : dict of str -> (object, object)
        Model setting -> (checkpoint value, config value), where they differ.
    """

    def __init__(self, path, where, missing, unexpected, shapes, settings):
        self.path, self.missing, self.unexpected = path, missing, unexpected
        self.shapes, self.settings = shapes, settings

        def listed(items):
            items = list(items)
            more = f" ... ({len(items) - 20} more)" if len(items) > 20 else ""
            return f"{items[:20]}{more}"

        shape_text = [f"{k}: {tuple(a)} vs {tuple(b)}" for k, (a, b) in shapes.items()]
        setting_text = [f"{k}: {a!r} vs {b!r}" for k, (a, b) in settings.items()]
        super().__init__(
            f"--ckpt_path {path}: the weights do not match the model of {where} (strict "
            f"load): missing {listed(missing)}, unexpected {listed(unexpected)}, shapes "
            f"(checkpoint vs config) {listed(shape_text)}; model settings (checkpoint vs "
            f"config) {setting_text or 'identical'}")


class MEGGPTSetup(NamedTuple):
    """What :func:`meggpt_from_config` gives: everything :func:`decode` needs.

    Attributes
    ----------
    model : neurofm.models.MEGGPT | None
        The config's model with the checkpoint's weights (eval mode; ``model.extra`` holds the
        checkpoint's metadata), or None without a checkpoint.
    random_init : neurofm.models.MEGGPT
        The config's model with the initial weights ``neurofm fit`` would start from (drawn
        after the config's ``seed_everything``), in eval mode.
    tokenizer : neurofm.tokenizers.Tokenizer
        The checkpoint's embedded tokenizer; without a checkpoint the config's
        ``data.init_args.tokenizer`` (fitted on the store's train split when it needs
        fitting).
    store : neurofm.store.Store
        ``data.init_args.store`` (or the ``store=`` override).
    channels : "intersection" | list of str
        The checkpoint's channels, else ``data.init_args.channels``.
    sfreq : "auto" | float | None
        ``data.init_args.sfreq``.
    cache_dir : str | None
        ``data.init_args.cache_dir`` (the token cache of pretraining, shared).
    configs : list of str
        The config files, in order.
    """

    model: object
    random_init: object
    tokenizer: object
    store: object
    channels: object
    sfreq: object
    cache_dir: object
    configs: list


def _resolve(class_path):
    module, _, name = str(class_path).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _compose(args, where):
    """Run neurofm's Lightning CLI on ``args`` without a trainer: (module, datamodule)."""
    import argparse

    import lightning.pytorch as pl

    from ..training import MEGGPTModule, TokenDataModule
    from ..training.cli import NeurofmCLI, _neurofm_cause

    expected = {"model": MEGGPTModule, "data": TokenDataModule}

    class ProbeCLI(NeurofmCLI):
        """``neurofm fit``'s config composition, without a trainer and without exiting."""

        def parse_arguments(self, parser, args):
            try:
                self.config = parser.parse_args(args)
            except argparse.ArgumentError as err:
                text = str(err)
                if 'key "data"' in text and ("required: store" in text
                                             or "store=None" in text):
                    raise ConfigError(f"{where}: data.init_args.store is not set: expected "
                                      "the store directory (in the config or as STORE); "
                                      "found none") from err
                raise ConfigError(f"{where}: not a valid neurofm fit config: "
                                  f"{text.strip()}") from err

        def before_instantiate_classes(self):
            found = {}
            for key in expected:
                section = self.config.get(key)
                found[key] = None if section is None else section.get("class_path")
            bad = [k for k, cls in expected.items()
                   if not isinstance(_resolve(found[k]), type)
                   or not issubclass(_resolve(found[k]), cls)]
            if bad:
                want = ", ".join(f"{k}.class_path neurofm.training.{expected[k].__name__}"
                                 for k in expected)
                got = ", ".join(f"{k}.class_path {found[k]}" for k in expected)
                raise ConfigError(f"{where}: not a MEG-GPT config: expected {want}; found "
                                  f"{got}")

        def instantiate_trainer(self, **kwargs):
            return None  # probing needs no trainer (nor its devices, loggers, folders)

    try:
        cli = ProbeCLI(pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True,
                       subclass_mode_data=True, args=list(args), run=False,
                       parser_kwargs={"prog": "neurofm probe", "default_env": False,
                                      "exit_on_error": False},
                       auto_configure_optimizers=False)
    except ValueError as err:  # jsonargparse wraps errors of the classes it builds
        cause = _neurofm_cause(err)
        if cause is None:
            raise ConfigError(f"{where}: the config's classes could not be built: "
                              f"{str(err).strip()}") from err
        raise cause from err
    return cli.model, cli.datamodule


def _tokenizer_problem(source, tokenizer):
    """Why the checkpoint's ``tokenizer`` is not the config's ``source`` (None: it is)."""
    from ..data.tokens import is_fitted, load_tokenizer, tokenizer_fingerprint
    from ..tokenizers import Tokenizer

    if source is None:
        return None
    if isinstance(source, Tokenizer):
        config_tok = source
    else:
        try:
            config_tok = load_tokenizer(source)
        except NeurofmError as err:  # e.g. the released tokenizer not downloaded here
            logger.info("data.init_args.tokenizer %s not loaded (%s); the checkpoint's "
                        "embedded tokenizer is used", source, err)
            return None
    if type(config_tok) is not type(tokenizer):
        return (f"{type(tokenizer).__name__} in the checkpoint vs "
                f"{type(config_tok).__name__} in the config")
    if is_fitted(config_tok) and not isinstance(source, Tokenizer) \
            and tokenizer_fingerprint(config_tok) != tokenizer_fingerprint(tokenizer):
        return f"the checkpoint's {type(tokenizer).__name__} is not the one saved at {source}"
    if config_tok.vocab_size != tokenizer.vocab_size:
        return (f"vocab_size {tokenizer.vocab_size} in the checkpoint vs "
                f"{config_tok.vocab_size} in the config")
    return None


def meggpt_from_config(config, ckpt_path=None, *, store=None, overrides=()):
    """MEG-GPT model, tokenizer and store from the config(s) of ``neurofm fit``.

    The YAML files are composed exactly as ``neurofm fit -c A -c B`` composes them (neurofm's
    Lightning CLI: later files and dotted ``overrides`` win; ``seed_everything`` is applied
    before the model is built); no trainer is built. The config gives the store
    (``data.init_args.store``), the tokenizer and the model settings; the checkpoint, when
    given, the weights (strict: every missing, unexpected or reshaped parameter is listed)
    and the tokenizer state the weights were trained with.

    Parameters
    ----------
    config : str | os.PathLike | list of those
        ``neurofm fit`` YAML config(s), e.g. ``["configs/meggpt.yaml",
        "configs/data/meg_example.yaml"]``.
    ckpt_path : str | os.PathLike, optional
        A checkpoint of ``neurofm fit`` with this config (``last.ckpt``). None: the model
        keeps its random initialization.
    store : str | os.PathLike | neurofm.store.Store, optional
        Replaces ``data.init_args.store``.
    overrides : sequence of str
        Dotted overrides as ``neurofm fit`` takes them
        (``"--model.init_args.model.init_args.dropout=0.0"``).

    Returns
    -------
    setup : MEGGPTSetup
        ``model`` (None without a checkpoint), ``random_init``, ``tokenizer``, ``store``,
        ``channels``, ``sfreq``, ``cache_dir``, ``configs``.

    Raises
    ------
    ConfigError
        A config file missing or invalid, not a MEG-GPT config (model ``MEGGPTModule``,
        data ``TokenDataModule``), no store, a store that cannot be opened, or a tokenizer
        whose vocabulary is not the model's.
    FormatError
        The checkpoint is missing, unreadable or not a MEG-GPT checkpoint of ``neurofm fit``,
        or its tokenizer is not the config's.
    CheckpointMismatchError
        Its weights do not fit the config's model.
    """
    from ..data.tokens import fit_tokenizer, is_fitted, load_tokenizer, unpack_tokenizer
    from ..store import Store, open_store

    configs = [os.fspath(c) for c in
               ([config] if isinstance(config, (str, os.PathLike)) else list(config))]
    if not configs:
        raise ConfigError("-c/--config: expected at least one neurofm fit YAML config; got "
                          "none")
    for c in configs:
        if not os.path.isfile(c):
            raise ConfigError(f"-c {c}: config file not found")
    where = " ".join(f"-c {c}" for c in configs)
    args = [a for c in configs for a in ("-c", c)]
    if store is not None:
        path = store.path if isinstance(store, Store) else os.fspath(store)
        args.append(f"--data.init_args.store={path}")
    args += [os.fspath(o) for o in overrides]
    module, dm = _compose(args, where)
    random_init = module.model.eval()
    cfg = dict(random_init.config)

    source = store if isinstance(store, Store) else dm.store
    if source is None or (isinstance(source, str) and not source.strip()):
        raise ConfigError(f"{where}: data.init_args.store is not set: expected the store "
                          "directory (in the config or as STORE); found none")
    try:
        st = source if isinstance(source, Store) else open_store(source)
    except NeurofmError as err:
        raise ConfigError(f"{where}: data.init_args.store={os.fspath(source)!r}: {err}") \
            from err

    model, extra = None, {}
    if ckpt_path is not None:
        path = os.fspath(ckpt_path)
        meta, state = _meggpt_checkpoint(
            path, what="checkpoint (--ckpt_path)",
            not_meggpt=lambda found: f"--ckpt_path {path}: expected a MEG-GPT checkpoint of "
                                     f"neurofm fit (model_class MEGGPT); found model_class "
                                     f"{found!r}")
        missing, unexpected, shapes = _state_mismatch(random_init.state_dict(), state)
        saved = dict(meta.get("model_config") or {})
        settings = {k: (saved.get(k), cfg.get(k)) for k in sorted(set(saved) | set(cfg))
                    if saved.get(k) != cfg.get(k)}
        if missing or unexpected or shapes:
            raise CheckpointMismatchError(path, where, missing, unexpected, shapes, settings)
        if settings:
            warn(f"--ckpt_path {path}: model settings differ from {where} (checkpoint vs "
                 f"config: {settings}); the weights load, the config's settings are used")
        model = copy.deepcopy(random_init)
        model.load_state_dict(state, strict=True)
        model.eval()
        extra = {k: v for k, v in meta.items() if k != "tokenizer"}
        model.extra = extra
        tokenizer = unpack_tokenizer(meta.get("tokenizer"), source=path)
        problem = _tokenizer_problem(dm.tokenizer_source, tokenizer)
        if problem:
            raise FormatError(f"--ckpt_path {path}: its tokenizer does not match "
                              f"data.init_args.tokenizer of {where}: {problem}")
    else:
        tokenizer = load_tokenizer(dm.tokenizer_source)
        if not is_fitted(tokenizer):
            fit_tokenizer(tokenizer, st, split="train",
                          channels=None if dm.channels == "intersection" else dm.channels)
    if tokenizer.vocab_size != cfg["vocab_size"]:
        raise ConfigError(f"{where}: the tokenizer's vocab_size is {tokenizer.vocab_size} but "
                          f"model.init_args.model.init_args.vocab_size={cfg['vocab_size']}")
    return MEGGPTSetup(model=model, random_init=random_init, tokenizer=tokenizer, store=st,
                       channels=extra.get("channels") or dm.channels, sfreq=dm.sfreq,
                       cache_dir=dm.cache_dir, configs=configs)


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
           device=None, random_init=None, verbose=None):
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
    random_init : neurofm.models.MEGGPT, optional
        The same architecture with random weights: its zero-shot features on the same epochs
        are evaluated too, as ``"zero-shot (random init)"`` (:data:`RANDOM_INIT`).
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
        random_features = None if random_init is None else meggpt_features(
            random_init, tokens, batch_size=batch_size, device=device)
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
            if random_features is not None:
                scores[RANDOM_INIT] = _classify(random_features[tr], y[tr],
                                                random_features[te], y[te], seed)
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
