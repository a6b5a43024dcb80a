"""``MEGGPTModule`` and ``TokenDataModule``: MEG-GPT next-token pretraining on a store.

Wiring (what ``neurofm fit -c configs/meggpt.yaml`` builds)::

    model  = MEGGPT(vocab_size, n_channels, context=100, loss_last=16, ...)  # neurofm.models
    module = MEGGPTModule(model, lr=1e-5, ...)                                # this file
    data   = TokenDataModule(store, tokenizer, context=100)                   # this file

``TokenDataModule`` tokenizes the store's recordings (:class:`neurofm.data.TokenWindowDataset`:
each channel z-scored over its recording, then the tokenizer; on the fly or through a token
cache) and serves windows of ``context + 1`` samples, shape (B, context + 1, C), with a
session index per window. A fixed tokenizer that is not fitted yet (mu-law, quantile) is
fitted on the train split first.

``MEGGPTModule`` runs ``model.loss`` (teacher forcing, cross-entropy on the last
``loss_last`` positions, top-1 / top-5 accuracy) under AdamW (betas (0.9, 0.98), weight decay
0.01 except on embeddings, norms and biases) with a linear warmup over the first 10 % of the
steps and a cosine decay, as a pure function of the step; gradient clipping (1.0) is the
trainer's ``gradient_clip_val``. At the start of fitting the session embedding is
initialized from each training session's token frequencies (sessions without training
tokens get the pooled training frequencies). Dropout is seeded from ``(seed, global step)``
at every step, so a resumed run draws the same masks as an uninterrupted one.

Checkpoints carry, besides the base metadata (model config, normalization = the per-recording
z-score statistics, splits), the tokenizer itself (its saved files, embedded), the session
table, the channel names and the sampling rate: :func:`neurofm.evals.decoding.load_meggpt`
rebuilds model and tokenizer from the checkpoint alone.
"""

from __future__ import annotations

import os

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import default_collate

from .._logging import logger
from ..data.tokens import (
    TokenWindowDataset,
    fit_tokenizer,
    is_fitted,
    load_tokenizer,
    pack_tokenizer,
)
from ..errors import DataError, NeurofmError
from ..objectives.schedules import warmup_cosine
from ..store import Store
from ..tokenizers import Tokenizer
from .base import NeurofmModule
from .datamodule import epoch_loader, replicas_of

__all__ = ["MEGGPTModule", "TokenDataModule", "unigram_accuracy"]


def unigram_accuracy(counts):
    """Top-1 accuracy of always predicting the most frequent token.

    Parameters
    ----------
    counts : array of shape (V,) or (n_sessions, V)
        Token counts (summed over sessions when 2-D).

    Returns
    -------
    accuracy : float
    """
    c = np.asarray(counts, dtype=np.float64)
    c = c.sum(axis=0) if c.ndim == 2 else c
    return float(c.max() / c.sum())


class TokenDataModule(pl.LightningDataModule):
    """Train / val / test token windows of a store.

    Parameters
    ----------
    store : str | os.PathLike | neurofm.store.Store
        The store; its manifest ``split`` column selects train / val / test.
    tokenizer : str | os.PathLike | neurofm.tokenizers.Tokenizer
        A saved neurofm tokenizer directory, the released MEG-GPT tokenizer's directory, or
        a tokenizer object (in YAML: ``class_path`` / ``init_args``, e.g. a
        ``QuantileTokenizer``, fitted on the train split when not fitted).
    context : int
        Model context L: windows have ``L + 1`` samples.
    stride_samples : int, optional
        Step of the window grid (default ``context + 1``).
    batch_size, num_workers, persistent_workers, pin_memory
        DataLoader settings.
    channels : "intersection" | list of str
        Channel set and order (every recording must have them).
    modalities : str | list of str, optional
    random_crop : bool
        Train on one random window per recording per epoch instead of the grid.
    sessions : bool
        Give each window its recording's index in the store (session embeddings); False: -1.
    cache_dir : str, optional
        Token cache (None: tokens are computed on the fly).
    sfreq : "auto" | float | None
        Required sampling rate ("auto": 250 Hz for the MEG-GPT tokenizer).
    seed : int
        Seed of shuffling and random crops.
    """

    def __init__(self, store: str | os.PathLike | Store,
                 tokenizer: Tokenizer | str | None = None, *,
                 context: int = 100, stride_samples: int | None = None, batch_size: int = 64,
                 num_workers: int = 0, persistent_workers: bool = False,
                 pin_memory: bool = False, channels: str | list[str] = "intersection",
                 modalities: str | list[str] | None = None, random_crop: bool = False,
                 sessions: bool = True, cache_dir: str | None = None,
                 sfreq: str | float | None = "auto", seed: int = 0):
        super().__init__()
        for name, value, low in (("context", context, 1), ("batch_size", batch_size, 1),
                                 ("num_workers", num_workers, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise NeurofmError(f"{name} must be an integer >= {low}; got {value!r}")
        if tokenizer is None:
            raise NeurofmError("tokenizer is required: the directory of the released MEG-GPT "
                               "tokenizer or of a saved neurofm tokenizer, or a tokenizer")
        if persistent_workers and num_workers == 0:
            raise NeurofmError("persistent_workers=True needs num_workers > 0")
        self.store = store
        self.tokenizer_source = tokenizer
        self.tokenizer = None
        self.context, self.stride_samples = context, stride_samples
        self.batch_size, self.num_workers = batch_size, num_workers
        self.persistent_workers, self.pin_memory = bool(persistent_workers), bool(pin_memory)
        self.channels, self.modalities = channels, modalities
        self.random_crop, self.sessions = bool(random_crop), bool(sessions)
        self.cache_dir, self.sfreq, self.seed = cache_dir, sfreq, seed
        self.normalization_stats = None
        self.datasets = {}

    # ---------------------------------------------------------------- setup
    def _store(self):
        from ..store import open_store

        if not isinstance(self.store, Store):
            self.store = open_store(self.store)
        return self.store

    def _tokenizer(self):
        if self.tokenizer is None:
            tok = load_tokenizer(self.tokenizer_source)
            if not is_fitted(tok):
                fit_tokenizer(tok, self._store(), split="train",
                              channels=None if self.channels == "intersection"
                              else self.channels)
            self.tokenizer = tok
        return self.tokenizer

    def _has_split(self, split):
        return bool((self._store().manifest["split"] == split).any())

    def _dataset(self, split):
        channels = self.channels
        if channels == "intersection" and "train" in self.datasets:
            channels = self.datasets["train"].channels  # every split in the train order
        return TokenWindowDataset(
            self._store(), self._tokenizer(), window_samples=self.context + 1,
            stride_samples=self.stride_samples, split=split, channels=channels,
            random_crop=self.random_crop and split == "train",
            sessions=None if self.sessions else False, cache_dir=self.cache_dir,
            sfreq=self.sfreq, modalities=self.modalities, seed=self.seed)

    def setup(self, stage=None):
        """Build the token datasets of ``stage`` (train first: it fixes the channel order)."""
        wanted = {"fit": ("train", "val"), "validate": ("train", "val"),
                  "test": ("train", "test"), "predict": ("train", "test"),
                  None: ("train", "val", "test")}[stage]
        for split in wanted:
            if split not in self.datasets and self._has_split(split):
                self.datasets[split] = self._dataset(split)
        if "train" not in self.datasets:
            raise DataError(f"{self._store().path}: no recording in the train split")
        recs = {}
        for dataset in self.datasets.values():
            stats = dataset.normalization_stats()
            if stats is not None:
                recs.update(stats.recordings)
        if recs:
            from ..data import NormalizationStats

            self.normalization_stats = NormalizationStats(
                method="zscore", per="recording", recordings=recs,
                n_windows=sum(len(d) for d in self.datasets.values()))

    @property
    def session_ids(self):
        """The session table (recording ids of the store, manifest order)."""
        return self.datasets["train"].session_ids if "train" in self.datasets else []

    @property
    def channel_names(self):
        return self.datasets["train"].channels if "train" in self.datasets else None

    # ---------------------------------------------------------------- loaders
    def _loader(self, split, shuffle):
        if split not in self.datasets:
            if split == "train":
                raise NeurofmError("TokenDataModule: call setup() before asking for loaders")
            return []  # no recording in this split: nothing to validate / test
        return epoch_loader(self, self.datasets[split], shuffle=shuffle,
                            collate_fn=default_collate, replicas=replicas_of(self))

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)

    def predict_dataloader(self):
        return self._loader("test", shuffle=False)


class MEGGPTModule(NeurofmModule):
    """MEG-GPT next-token pretraining.

    Parameters
    ----------
    model : neurofm.models.MEGGPT
        The architecture.
    lr : float
        Peak learning rate (release: 1e-5 over ~60k steps of batch 128).
    start_lr, final_lr : float
        Warmup start and cosine floor (release: 1e-7, 1e-6).
    warmup_fraction : float
        Share of the optimizer steps spent warming up (0.1).
    weight_decay : float
        AdamW weight decay, not on embeddings, norms and biases (0.01).
    betas : (float, float)
        AdamW betas ((0.9, 0.98)).
    eps : float
        AdamW epsilon.
    init_sessions : bool
        Initialize the session embedding from the training sessions' token frequencies when
        fitting starts.
    seed : int
        Seed of the per-step dropout masks.
    """

    def __init__(self, model: nn.Module, *, lr: float = 1e-5, start_lr: float = 1e-7,
                 final_lr: float = 1e-6, warmup_fraction: float = 0.1,
                 weight_decay: float = 0.01, betas: tuple[float, float] = (0.9, 0.98),
                 eps: float = 1e-8, init_sessions: bool = True, seed: int = 0):
        super().__init__()
        if not hasattr(model, "loss") or not hasattr(model, "init_session_embedding"):
            raise NeurofmError(f"model must be a neurofm.models.MEGGPT; got "
                               f"{type(model).__name__}")
        if not 0.0 <= float(warmup_fraction) < 1.0:
            raise NeurofmError(f"warmup_fraction must be in [0, 1); got {warmup_fraction!r}")
        self.model = model
        self.lr, self.start_lr, self.final_lr = float(lr), float(start_lr), float(final_lr)
        self.warmup_fraction = float(warmup_fraction)
        self.weight_decay, self.eps = float(weight_decay), float(eps)
        self.betas = tuple(float(b) for b in betas)
        self.init_sessions, self.seed = bool(init_sessions), int(seed)
        self.session_ids, self.channel_names, self.sfreq = None, None, None
        self.tokenizer = None

    # ---------------------------------------------------------------- setup
    def _datamodule(self):
        return getattr(self.trainer, "datamodule", None) if self._trainer is not None else None

    def setup(self, stage=None):
        dm = self._datamodule()
        if not isinstance(dm, TokenDataModule):
            return
        cfg = self.model.config
        tok = dm.tokenizer
        train = dm.datasets["train"]
        problems = []
        if tok.vocab_size != cfg["vocab_size"]:
            problems.append(f"the tokenizer's vocab_size is {tok.vocab_size} but the model's "
                            f"vocab_size={cfg['vocab_size']}")
        if len(train.channels) != cfg["n_channels"]:
            problems.append(f"the data have {len(train.channels)} channels but the model's "
                            f"n_channels={cfg['n_channels']}")
        if dm.context > cfg["context"]:
            problems.append(f"the data context={dm.context} exceeds the model's "
                            f"context={cfg['context']}")
        n_sess = cfg["n_sessions"]
        if n_sess is not None and dm.sessions and len(dm.session_ids) > n_sess:
            problems.append(f"the store has {len(dm.session_ids)} recordings (sessions) but "
                            f"the model's n_sessions={n_sess}")
        if problems:
            raise NeurofmError("MEGGPTModule: the model does not fit the data: " +
                               "; ".join(problems) + " (set them under model.init_args."
                               "model.init_args)")
        self.tokenizer = tok
        self.session_ids = list(dm.session_ids) if dm.sessions else []
        self.channel_names, self.sfreq = list(train.channels), float(train.sfreq)
        if stage == "fit" and n_sess is not None and self.init_sessions and dm.sessions:
            counts = train.token_counts(n_sessions=n_sess).astype(np.float64)
            seen = counts.sum(axis=1) > 0
            counts[~seen] = counts[seen].sum(axis=0)  # unseen sessions: pooled frequencies
            self.model.init_session_embedding(counts)
            logger.info("session embedding initialized from the token frequencies of %d "
                        "training session(s)", int(seen.sum()))

    # ---------------------------------------------------------------- optimization
    def _total_steps(self):
        return max(1, int(self.trainer.estimated_stepping_batches))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.model.optim_groups(self.weight_decay), lr=self.start_lr,
                                 betas=self.betas, eps=self.eps)

    def lr_at(self, step, total):
        """Learning rate at optimizer step ``step`` of ``total``."""
        step = min(int(step), total)
        return warmup_cosine(step, total_steps=total,
                             warmup_steps=round(self.warmup_fraction * total),
                             start=self.start_lr, peak=self.lr, final=self.final_lr)

    def on_train_batch_start(self, batch, batch_idx):
        lr = self.lr_at(self.global_step, self._total_steps())
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        self.log("lr", lr, on_step=True, on_epoch=False)
        # dropout masks as a function of the step: a resumed run draws the same ones
        torch.manual_seed(int(np.random.SeedSequence([self.seed, int(self.global_step)])
                              .generate_state(1)[0]))

    def _session(self, batch):
        if self.model.config["n_sessions"] is None:
            return None
        session = batch.get("session")
        if session is None or bool((session < 0).any()):
            return None
        return session

    def _step(self, batch, prefix):
        tokens = batch["tokens"]  # (B, L + 1, C)
        loss, metrics = self.model.loss(tokens, self._session(batch))
        n = tokens.shape[0]
        on_step = prefix == "train"
        self.log(f"{prefix}_loss", loss, prog_bar=True, on_step=on_step, on_epoch=True,
                 batch_size=n, sync_dist=not on_step)
        for key in ("top1", "top5"):
            self.log(f"{prefix}_{key}", metrics[key], prog_bar=key == "top1", on_step=on_step,
                     on_epoch=True, batch_size=n, sync_dist=not on_step)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx):
        """Time-averaged hidden states, channels x width flattened (B, C * D)."""
        tokens = batch["tokens"][:, :-1]  # the inputs of the teacher-forced windows
        h = self.model.hidden_states(tokens)  # (B, L, C, D)
        return {"embedding": h.mean(dim=1).flatten(1), "recording": batch.get("recording"),
                "start": batch.get("start")}

    # ---------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint):
        super().on_save_checkpoint(checkpoint)
        meta = checkpoint["neurofm"]
        tok = self.tokenizer
        dm = self._datamodule()
        source = getattr(dm, "tokenizer_source", None)
        meta["tokenizer"] = None if tok is None else {
            **pack_tokenizer(tok),
            "source": os.fspath(source) if isinstance(source, (str, os.PathLike)) else None}
        meta["session_ids"] = self.session_ids
        meta["channels"] = self.channel_names
        meta["sfreq"] = self.sfreq
        meta["context"] = None if dm is None else int(getattr(dm, "context", 0)) or None

    def on_load_checkpoint(self, checkpoint):
        meta = checkpoint.get("neurofm") or {}
        if self.session_ids is None:
            self.session_ids = meta.get("session_ids")
            self.channel_names = meta.get("channels")
            self.sfreq = meta.get("sfreq")
