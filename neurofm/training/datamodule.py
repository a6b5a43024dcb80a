"""``BrainDataModule``: a store's windows for the Lightning trainer."""

from __future__ import annotations

import os
from collections.abc import Callable

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler

from .._logging import logger
from ..data import NORMALIZATION_METHODS, NormalizationStats, WindowDataset, collate
from ..errors import NeurofmError
from ..store import Store

__all__ = ["BrainDataModule"]

_COLLATES = {"pad": collate}


class _EpochSampler(DistributedSampler):
    """DistributedSampler whose ``set_epoch`` also reaches the dataset (random crops).

    Lightning calls ``set_epoch`` on a DistributedSampler it finds in a DataLoader and does
    not replace it, so the same sampler serves one process and DDP.
    """

    def __init__(self, dataset, *, collate_fn=None, **kwargs):
        super().__init__(dataset, **kwargs)
        self.collate_fn = collate_fn

    def set_epoch(self, epoch):
        super().set_epoch(epoch)
        self.dataset.set_epoch(epoch)
        # a collate_fn with per-epoch randomness (the JEPA mask collator) follows too
        if hasattr(self.collate_fn, "set_epoch"):
            self.collate_fn.set_epoch(epoch)


def replicas_of(datamodule):
    """``(world size, rank)`` of the trainer a datamodule is attached to; (1, 0) without."""
    trainer = getattr(datamodule, "trainer", None)
    if trainer is None:
        return 1, 0
    return int(trainer.world_size), int(trainer.global_rank)


def epoch_loader(datamodule, dataset, *, shuffle, collate_fn, replicas):
    """A DataLoader over ``dataset`` with an :class:`_EpochSampler` (one process or DDP).

    ``datamodule`` provides ``seed``, ``batch_size``, ``num_workers``, ``pin_memory`` and
    ``persistent_workers``; ``replicas`` is ``(world size, rank)``.
    """
    replicas, rank = replicas
    sampler = _EpochSampler(dataset, collate_fn=collate_fn, num_replicas=replicas, rank=rank,
                            shuffle=shuffle, seed=datamodule.seed, drop_last=False)
    return DataLoader(dataset, batch_size=datamodule.batch_size, sampler=sampler,
                      num_workers=datamodule.num_workers, collate_fn=collate_fn,
                      pin_memory=datamodule.pin_memory and torch.cuda.is_available(),
                      persistent_workers=datamodule.persistent_workers)


class BrainDataModule(pl.LightningDataModule):
    """Train / val / test windows of a store, with normalization fitted on train.

    Parameters
    ----------
    store : str | os.PathLike | neurofm.store.Store
        The store (its manifest ``split`` column selects train / val / test).
    window_s : float, optional
        Window length in seconds (or ``window_samples``).
    window_samples : int, optional
        Window length in samples.
    stride_s : float, optional
        Grid step of val / test windows (and train windows without ``random_crop``);
        default the window length.
    batch_size : int
        Windows per batch (per process under DDP).
    num_workers : int
        DataLoader worker processes (each opens the store itself).
    persistent_workers : bool
        Keep workers alive between epochs (needs ``num_workers > 0``).
    pin_memory : bool
        Page-locked batches for faster host-to-GPU copies.
    normalization : None | "zscore" | "robust" | "subject_means" | str path |
        NormalizationStats
        A method name fits statistics on the train split in :meth:`setup`; a JSON path or
        statistics object is used as is.
    normalization_per : {"channel", "recording"}
        See :class:`~neurofm.data.NormalizationStats`.
    max_norm_windows : int
        Windows read to fit the statistics.
    collate : "pad" | callable
        ``"pad"``: :func:`neurofm.data.collate` (mixed channel sets padded and masked).
    channels : None | "intersection" | list of str
        Channel policy of :class:`~neurofm.data.WindowDataset`.
    modalities : str | list of str, optional
        Modalities to keep.
    random_crop : bool
        Train on one random crop per recording per epoch instead of the fixed grid.
    events : dict of str -> int, optional
        Event-locked, labelled windows (with ``tmin`` / ``tmax``).
    tmin, tmax : float
        Event window bounds in seconds.
    seed : int
        Seed of shuffling and random crops.
    """

    def __init__(self, store: str | os.PathLike | Store, *, window_s: float | None = None,
                 window_samples: int | None = None, stride_s: float | None = None,
                 batch_size: int = 32, num_workers: int = 0, persistent_workers: bool = False,
                 pin_memory: bool = False,
                 normalization: str | NormalizationStats | None = None,
                 normalization_per: str = "channel", max_norm_windows: int = 1000,
                 collate: str | Callable = "pad", channels: str | list[str] | None = None,
                 modalities: str | list[str] | None = None, random_crop: bool = False,
                 events: dict[str, int] | None = None, tmin: float = 0.0,
                 tmax: float | None = None, seed: int = 0):
        super().__init__()
        for name, value, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0),
                                 ("max_norm_windows", max_norm_windows, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise NeurofmError(f"{name} must be an integer >= {low}; got {value!r}")
        if persistent_workers and num_workers == 0:
            raise NeurofmError("persistent_workers=True needs num_workers > 0")
        if isinstance(collate, str):
            if collate not in _COLLATES:
                raise NeurofmError(f"collate must be one of {sorted(_COLLATES)} or a callable; "
                                   f"got {collate!r}")
            collate = _COLLATES[collate]
        elif not callable(collate):
            raise NeurofmError(f"collate must be a name or a callable; got {collate!r}")
        if isinstance(normalization, str) and normalization not in NORMALIZATION_METHODS \
                and not os.path.exists(normalization):
            raise NeurofmError(f"normalization must be None, one of {NORMALIZATION_METHODS}, "
                               f"a statistics JSON file or NormalizationStats; got "
                               f"{normalization!r} (no such file)")
        self.store = store
        self.batch_size, self.num_workers = batch_size, num_workers
        self.persistent_workers, self.pin_memory = bool(persistent_workers), bool(pin_memory)
        self.normalization, self.normalization_per = normalization, normalization_per
        self.max_norm_windows, self.collate_fn, self.seed = max_norm_windows, collate, seed
        self.random_crop = bool(random_crop)
        self._window = {"window_s": window_s, "window_samples": window_samples}
        self._common = {"stride_s": stride_s, "channels": channels, "modalities": modalities,
                        "events": events, "tmin": tmin, "tmax": tmax, "seed": seed}
        self.normalization_stats = None
        self.datasets = {}

    # ---------------------------------------------------------------- statistics
    def _stats(self):
        if self.normalization_stats is not None or self.normalization is None:
            return self.normalization_stats
        norm = self.normalization
        if isinstance(norm, NormalizationStats):
            stats = norm
        elif isinstance(norm, str) and norm in NORMALIZATION_METHODS:
            from ..data import fit_normalization

            train = self._dataset("train", normalization=None, random_crop=False)
            stats = fit_normalization(train, method=norm, per=self.normalization_per,
                                      max_windows=self.max_norm_windows, seed=self.seed)
            logger.info("fitted %s normalization on %d train windows", norm, stats.n_windows)
        else:
            stats = NormalizationStats.load(norm)
        self.normalization_stats = stats
        return stats

    def _dataset(self, split, *, normalization, random_crop):
        return WindowDataset(self.store, split=split, random_crop=random_crop,
                             normalization=normalization, **self._window, **self._common)

    def setup(self, stage=None):
        """Build the datasets of ``stage`` ("fit", "validate", "test", "predict" or None)."""
        stats = self._stats()
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                  "predict": ("test",), None: ("train", "val", "test")}[stage]
        for split in wanted:
            if split not in self.datasets:
                self.datasets[split] = self._dataset(
                    split, normalization=stats,
                    random_crop=self.random_crop and split == "train")

    # ---------------------------------------------------------------- loaders
    def _replicas(self):
        return replicas_of(self)

    def _loader(self, split, shuffle):
        if split not in self.datasets:
            raise NeurofmError(f"BrainDataModule: call setup() before asking for the {split} "
                               "loader")
        return epoch_loader(self, self.datasets[split], shuffle=shuffle,
                            collate_fn=self.collate_fn, replicas=self._replicas())

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)

    def predict_dataloader(self):
        return self._loader("test", shuffle=False)

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self):
        """The normalization statistics (saved in every Lightning checkpoint)."""
        stats = self._stats()
        return {"normalization": None if stats is None else stats.to_dict()}

    def load_state_dict(self, state_dict):
        """Restore the statistics of a checkpoint (used instead of refitting)."""
        norm = state_dict.get("normalization")
        self.normalization_stats = None if norm is None else NormalizationStats.from_dict(
            norm, source="checkpoint datamodule state")
        # Lightning restores after setup(): datasets already built switch to these statistics
        for dataset in self.datasets.values():
            dataset.normalization = self.normalization_stats
