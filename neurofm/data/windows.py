"""Windows of a store as a map-style torch Dataset.

The index of ``(recording, start)`` pairs is built from the store's manifest (and, for
event-locked windows or fixed channel sets, the recordings' small metadata arrays); no signal
is read until ``__getitem__``, which reads through :meth:`neurofm.store.Store.read_window`
(the store is opened lazily in each DataLoader worker).
"""

from __future__ import annotations

import operator
import os
from collections.abc import MutableSequence

import numpy as np

from .._logging import logger, warn
from ..errors import DataError, NeurofmError
from .normalization import NormalizationStats, apply_stats, recording_stats

__all__ = ["WindowBatch", "WindowDataset"]


def _positive(name, value, kind=float):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise NeurofmError(f"{name} must be a positive number; got {value!r}")
    if kind is int and (not float(value).is_integer()):
        raise NeurofmError(f"{name} must be a positive integer; got {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise NeurofmError(f"{name} must be > 0; got {value!r}")
    return kind(value)


class WindowDataset:
    """Fixed-length windows cut from the recordings of a store.

    Parameters
    ----------
    store : neurofm.store.Store | str | os.PathLike
        The store (or its path / URL).
    window_s : float, optional
        Window length in seconds (``round(window_s * sfreq)`` samples per recording).
    window_samples : int, optional
        Window length in samples (the same for every recording). Give exactly one of
        ``window_s`` / ``window_samples`` (or, for event-locked windows, ``tmax``).
    stride_s : float, optional
        Step between window starts on the fixed grid; default the window length
        (non-overlapping). Ignored with ``random_crop`` and ``events``.
    split : str | sequence of str | None
        Manifest ``split`` labels to use ("train", "val", "test"); None uses every recording.
    modalities : str | sequence of str, optional
        Keep only these modalities (manifest ``modality``).
    channels : None | "intersection" | sequence of str
        None: each recording's own channels (batches are padded by :func:`collate`, with a
        mask). A list of names: that channel set in that order for every recording; channels
        a recording lacks are zero-filled and masked (a warning lists them).
        ``"intersection"``: the channels common to all selected recordings (in the order of
        the first one).
    events : dict of str -> int, optional
        Event description -> integer label: one window per matching event, from
        ``onset + tmin`` to ``onset + tmax`` (or the window length). Recordings without any
        of these events are skipped and counted in a warning; windows that would leave the
        recording are dropped (counted too).
    tmin, tmax : float
        Event-locked window bounds in seconds relative to the event onset.
    random_crop : bool
        One window per recording per epoch at a random start drawn from
        ``(seed, epoch, index)`` (see :meth:`set_epoch`), instead of the fixed grid.
    transform : callable, optional
        ``transform(sample) -> sample`` applied last (after normalization).
    normalization : NormalizationStats | str | os.PathLike, optional
        Statistics (or their JSON file) applied to every window.
    seed : int
        Seed of the random crops.

    Notes
    -----
    A sample is a dict: ``signal`` float32 tensor (C, T); ``channel_mask`` bool (C,) (False
    for missing and bad channels); ``ch_pos`` float32 (C, 3) with NaN replaced by 0 and
    ``ch_pos_mask`` bool (C,) true where the position is known; ``channel`` and ``ch_type``
    (lists of str); ``recording``, ``subject`` (str); ``sfreq`` (float); ``start`` (int,
    first sample); ``label`` (int) with ``events``.
    """

    def __init__(self, store, *, window_s=None, window_samples=None, stride_s=None,
                 split="train", modalities=None, channels=None, events=None, tmin=0.0,
                 tmax=None, random_crop=False, transform=None, normalization=None, seed=0):
        from ..store import Store, open_store

        if isinstance(store, Store):
            self._store_path, self._storage_options = store.path, store.storage_options
            opened = store
        else:
            self._store_path, self._storage_options = os.fspath(store), {}
            opened = open_store(store)
        self._store, self._pid = opened, os.getpid()
        window_s = _positive("window_s", window_s)
        window_samples = _positive("window_samples", window_samples, int)
        stride_s = _positive("stride_s", stride_s)
        if events is None and tmax is not None:
            raise NeurofmError("tmax is used with events=; give window_s or window_samples")
        given = [v is not None for v in (window_s, window_samples, tmax)]
        if sum(given) != 1:
            raise NeurofmError("give exactly one of window_s, window_samples (or tmax with "
                               f"events=); got window_s={window_s!r}, "
                               f"window_samples={window_samples!r}, tmax={tmax!r}")
        if transform is not None and not callable(transform):
            raise NeurofmError(f"transform must be callable; got {type(transform).__name__}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise NeurofmError(f"seed must be an integer; got {seed!r}")
        self.window_s, self.window_samples, self.stride_s = window_s, window_samples, stride_s
        self.tmin, self.tmax = float(tmin), None if tmax is None else float(tmax)
        if self.tmax is not None and self.tmax <= self.tmin:
            raise NeurofmError(f"tmax must be > tmin; got tmin={tmin!r}, tmax={tmax!r}")
        self.random_crop, self.transform, self.seed = bool(random_crop), transform, int(seed)
        self.events = None if events is None else self._check_events(events)
        if self.events is not None and self.random_crop:
            raise NeurofmError("random_crop cannot be combined with events=")
        if isinstance(normalization, (str, os.PathLike)):
            normalization = NormalizationStats.load(normalization)
        if normalization is not None and not isinstance(normalization, NormalizationStats):
            raise NeurofmError("normalization must be NormalizationStats or the path of its "
                               f"JSON file; got {type(normalization).__name__}")
        self.normalization = normalization
        self._epoch = _shared_epoch()

        manifest = opened.manifest
        self.splits = self._select_splits(manifest, split)
        if self.splits is not None:
            manifest = manifest[manifest["split"].isin(self.splits)]
        if modalities is not None:
            mods = [modalities] if isinstance(modalities, str) else list(modalities)
            manifest = manifest[manifest["modality"].isin(mods)]
        manifest = manifest.reset_index(drop=True)
        self._rec_ids = [str(i) for i in manifest["id"]]
        self._subjects = [str(s) for s in manifest["subject"]]
        self._sfreq = manifest["sfreq"].to_numpy(dtype=np.float64)
        self._n_times = manifest["n_times"].to_numpy(dtype=np.int64)
        self._meta = [None] * len(self._rec_ids)
        self._channels_mode = self._check_channels(channels)
        self._instance_stats = {}
        self._layouts = {}
        self._build_index()
        self._target = None
        if isinstance(self._channels_mode, list):
            self._target = list(self._channels_mode)
            self._warn_missing()
        elif self._channels_mode == "intersection":
            self._target = self._intersection()
        logger.info("WindowDataset: %d windows from %d recordings of %s", len(self),
                    len(self._used_recordings()), self._store_path)

    # ---------------------------------------------------------------- arguments
    @staticmethod
    def _select_splits(manifest, split):
        if split is None:
            return None
        wanted = (split,) if isinstance(split, str) else tuple(split)
        if not all(isinstance(s, str) for s in wanted) or not wanted:
            raise NeurofmError(f"split must be a str, a sequence of str or None; got {split!r}")
        return wanted

    @staticmethod
    def _check_events(events):
        if not isinstance(events, dict) or not events:
            raise NeurofmError("events must be a non-empty dict of description -> integer "
                               f"label; got {events!r}")
        out = {}
        for key, label in events.items():
            if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
                raise NeurofmError(f"events[{key!r}] must be an integer label; got {label!r}")
            out[str(key)] = int(label)
        return out

    @staticmethod
    def _check_channels(channels):
        if channels is None or channels == "intersection":
            return channels
        if isinstance(channels, str):
            raise NeurofmError('channels must be None, "intersection" or a list of channel '
                               f"names; got {channels!r}")
        names = [str(c) for c in channels]
        if not names:
            raise NeurofmError("channels must not be empty")
        dup = sorted({c for c in names if names.count(c) > 1})
        if dup:
            raise NeurofmError(f"channels lists {dup} more than once")
        return names

    # ---------------------------------------------------------------- metadata
    def _store_obj(self):
        if self._store is None or os.getpid() != self._pid:
            from ..store import Store

            self._store = Store(self._store_path, storage_options=self._storage_options)
            self._pid = os.getpid()
        return self._store

    def _metadata(self, rec):
        """Channel names, types, positions, bad flags (and events) of one recording."""
        meta = self._meta[rec]
        if meta is None:
            ds = self._store_obj().open(self._rec_ids[rec])
            meta = {
                "channel": [str(c) for c in ds["channel"].values],
                "ch_type": [str(t) for t in ds["ch_type"].values],
                "ch_pos": np.asarray(ds["ch_pos"].values, dtype=np.float64),
                "bad": np.asarray(ds["bad"].values, dtype=bool),
                "t0": float(ds["time"][0].values) if ds.sizes["time"] else 0.0,
            }
            if "event_onset" in ds:
                meta["onset"] = np.asarray(ds["event_onset"].values, dtype=np.float64)
                meta["description"] = [str(d) for d in ds["event_description"].values]
            else:
                meta["onset"], meta["description"] = np.zeros(0), []
            self._meta[rec] = meta
        return meta

    def _channel_names(self, rec):
        return self._metadata(rec)["channel"]

    def _window_length(self, rec):
        if self.window_samples is not None:
            return self.window_samples
        if self.tmax is not None:
            return round((self.tmax - self.tmin) * self._sfreq[rec])
        return round(self.window_s * self._sfreq[rec])

    # ---------------------------------------------------------------- index
    def _build_index(self):
        recs, starts, labels, lengths = [], [], [], []
        too_short, no_events, dropped = [], 0, 0
        for rec in range(len(self._rec_ids)):
            n_times, length = int(self._n_times[rec]), self._window_length(rec)
            if length < 1:
                raise DataError(f"recording {self._rec_ids[rec]!r}: the window is "
                                f"{length} samples at {self._sfreq[rec]} Hz")
            if self.events is not None:
                meta = self._metadata(rec)
                rows = [(o, self.events[d]) for o, d in zip(meta["onset"], meta["description"])
                        if d in self.events]
                if not rows:
                    no_events += 1
                    continue
                for onset, label in rows:
                    start = round((onset - meta["t0"] + self.tmin) * self._sfreq[rec])
                    if start < 0 or start + length > n_times:
                        dropped += 1
                        continue
                    recs.append(rec)
                    starts.append(start)
                    labels.append(label)
                    lengths.append(length)
                continue
            if n_times < length:
                too_short.append(self._rec_ids[rec])
                continue
            if self.random_crop:
                recs.append(rec)
                starts.append(-1)
                lengths.append(length)
                continue
            stride = length if self.stride_s is None else round(self.stride_s *
                                                                  self._sfreq[rec])
            if stride < 1:
                raise DataError(f"recording {self._rec_ids[rec]!r}: stride_s={self.stride_s}"
                                f" is less than one sample at {self._sfreq[rec]} Hz")
            grid = np.arange(0, n_times - length + 1, stride, dtype=np.int64)
            recs.extend([rec] * len(grid))
            starts.extend(grid.tolist())
            lengths.extend([length] * len(grid))
        if too_short:
            warn(f"{len(too_short)} recording(s) shorter than one window were skipped: "
                 f"{too_short[:10]}")
        if no_events:
            warn(f"{no_events} recording(s) without any of the events {sorted(self.events)} "
                 "were skipped")
        if dropped:
            warn(f"{dropped} event-locked window(s) extending beyond their recording were "
                 "dropped")
        self._rows_rec = np.asarray(recs, dtype=np.int64)
        self._rows_start = np.asarray(starts, dtype=np.int64)
        self._rows_len = np.asarray(lengths, dtype=np.int64)
        self._rows_label = np.asarray(labels, dtype=np.int64) if self.events else None

    def _used_recordings(self):
        return sorted(set(self._rows_rec.tolist()))

    @property
    def recording_ids(self):
        """Ids of the recordings that contribute at least one window (manifest order)."""
        return [self._rec_ids[r] for r in self._used_recordings()]

    def _windows_of(self, rec):
        return np.flatnonzero(self._rows_rec == rec)

    def _rec_of_row(self, i):
        return int(self._rows_rec[i])

    def _intersection(self):
        recs = self._used_recordings()
        if not recs:
            return []
        first = self._channel_names(recs[0])
        common = set(first)
        for rec in recs[1:]:
            common &= set(self._channel_names(rec))
        target = [c for c in first if c in common]
        if not target:
            raise DataError("channels='intersection': the selected recordings share no channel")
        return target

    def _warn_missing(self):
        missing = {}
        for rec in self._used_recordings():
            have = set(self._channel_names(rec))
            lost = [c for c in self._target if c not in have]
            if lost:
                missing[self._rec_ids[rec]] = lost
        if missing:
            shown = "; ".join(f"{r}: {c}" for r, c in list(missing.items())[:10])
            warn(f"{len(missing)} recording(s) lack some of the requested channels (zero-filled"
                 f" and masked): {shown}")

    # ---------------------------------------------------------------- epochs
    def set_epoch(self, epoch):
        """Set the epoch used by random crops (also seen by running DataLoader workers)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise NeurofmError(f"epoch must be an integer >= 0; got {epoch!r}")
        self._epoch[0] = int(epoch)

    @property
    def epoch(self):
        return int(self._epoch[0])

    # ---------------------------------------------------------------- access
    def __len__(self):
        return len(self._rows_rec)

    def _start(self, i):
        start = int(self._rows_start[i])
        if start >= 0:
            return start
        rec = int(self._rows_rec[i])
        high = int(self._n_times[rec]) - int(self._rows_len[i]) + 1
        rng = np.random.default_rng([self.seed, self.epoch, i])
        return int(rng.integers(0, high))

    def _raw_window(self, i):
        rec = int(self._rows_rec[i])
        start = self._start(i)
        return self._store_obj().read_window(self._rec_ids[rec], start,
                                             start + int(self._rows_len[i]))

    def window_info(self, i):
        """``(recording id, start sample, n_samples)`` of window ``i`` (this epoch)."""
        i = self._check_index(i)
        return self._rec_ids[int(self._rows_rec[i])], self._start(i), int(self._rows_len[i])

    def _check_index(self, i):
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise NeurofmError(f"index must be an integer; got {i!r}")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"window index {i} out of range for {n} windows")
        return int(i) % n

    def _normalize(self, x, rec):
        stats = self.normalization
        if stats is None:
            return x
        names = self._channel_names(rec)
        rec_id = self._rec_ids[rec]
        if stats.per == "recording" and rec_id not in stats.recordings:
            entry = self._instance_stats.get(rec)
            if entry is None:
                entry = recording_stats(self, rec, stats.method, 1000, self.seed)
                self._instance_stats[rec] = entry
            return apply_stats(x, names, entry["center"], entry["scale"])
        return stats.apply(x, names, rec_id)

    def _layout(self, rec):
        """Per-recording channel mapping, masks and positions (computed once)."""
        layout = self._layouts.get(rec)
        if layout is not None:
            return layout
        meta = self._metadata(rec)
        if self._target is None:
            index, present = None, np.ones(len(meta["channel"]), dtype=bool)
            mask = ~meta["bad"]
            pos = meta["ch_pos"]
            types, channel = list(meta["ch_type"]), list(meta["channel"])
        else:
            where = {n: k for k, n in enumerate(meta["channel"])}
            index = np.array([where.get(n, -1) for n in self._target])
            present = index >= 0
            mask = present.copy()
            mask[present] &= ~meta["bad"][index[present]]
            pos = np.full((len(index), 3), np.nan)
            pos[present] = meta["ch_pos"][index[present]]
            types = [meta["ch_type"][k] if k >= 0 else "" for k in index]
            channel = list(self._target)
        pos_mask = np.isfinite(pos).all(axis=1)
        layout = {"index": index, "present": present, "mask": np.asarray(mask, dtype=bool),
                  "pos": np.where(pos_mask[:, None], pos, 0.0).astype(np.float32),
                  "pos_mask": pos_mask, "ch_type": types, "channel": channel}
        self._layouts[rec] = layout
        return layout

    def __getitem__(self, i):
        return self._item(self._check_index(i))

    def _check_indices(self, indices):
        """``indices`` checked and wrapped into [0, len) as an int64 array: vectorized for
        a list of ints or an integer array, else index by index (which also raises the error
        naming a bad one)."""
        n = len(self)
        if isinstance(indices, np.ndarray) and indices.ndim == 1 and indices.dtype.kind in "iu":
            arr = indices
        elif (isinstance(indices, (list, tuple)) and all(type(i) is int for i in indices)
              and (not indices or (min(indices) > -2**62 and max(indices) < 2**62))):
            arr = np.array(indices, dtype=np.int64)
        else:
            arr = None
        if arr is None or (arr.size and (arr.min() < -n or arr.max() >= n)):
            return np.array([self._check_index(i) for i in indices], dtype=np.int64)
        return arr.astype(np.int64, copy=False) % max(n, 1)

    def __getitems__(self, indices):
        """The samples of a batch of indices (what a DataLoader asks for).

        Parameters
        ----------
        indices : sequence of int
            Window indices (negative ones count from the end).

        Returns
        -------
        samples : WindowBatch
            The samples ``[self[i] for i in indices]`` (equal values), list-like. When the
            windows share one shape and no ``transform`` is set, they are read into one
            (B, C, T) buffer (raw windows by :meth:`neurofm.store.Store.read_windows`, in one
            pass) and their dicts are made only when accessed: :func:`~neurofm.data.collate`
            returns an untouched batch from its buffers without another copy.
        """
        import torch

        rows = self._check_indices(indices)
        if self.transform is not None or not rows.size:
            return WindowBatch._of_samples([self._item(i) for i in rows.tolist()])
        recs = self._rows_rec[rows]
        used = np.unique(recs).tolist()
        lengths = self._rows_len[rows]
        if (len({len(self._layout(r)["channel"]) for r in used}) > 1
                or (lengths != lengths[0]).any()):
            return WindowBatch._of_samples([self._item(i) for i in rows.tolist()])
        n_ch, length = len(self._layout(used[0])["channel"]), int(lengths[0])
        batch = _new_tensor((len(rows), n_ch, length), torch.float32)
        fixed = self._rows_start[rows]
        starts = (fixed.tolist() if (fixed >= 0).all()  # a grid: starts known
                  else [self._start(i) for i in rows.tolist()])  # random crops: per window
        recs = recs.tolist()
        if self.normalization is None and all(self._layout(r)["index"] is None for r in used):
            # raw windows straight into the buffer
            self._store_obj().read_windows(
                [(self._rec_ids[r], a, a + length) for r, a in zip(recs, starts)],
                out=batch.numpy())
        else:
            out = batch.numpy()
            for k, (r, a) in enumerate(zip(recs, starts)):
                out[k] = self._window(r, a, length)
        return self._samples(rows, recs, starts, batch)

    def _samples(self, rows, recs, starts, batch):
        """The :class:`WindowBatch` of windows whose signals are the rows of ``batch``
        (B, C, T); its per-window tensors (channel masks, positions, sfreq, start, label)
        are built once for the batch, in one allocation."""
        import torch

        b, n_ch = len(recs), batch.shape[1]
        specs = [("channel_mask", (b, n_ch), torch.bool), ("ch_pos", (b, n_ch, 3), torch.float32),
                 ("ch_pos_mask", (b, n_ch), torch.bool), ("sfreq", (b,), torch.float64),
                 ("start", (b,), torch.int64)]
        if self._rows_label is not None:
            specs.append(("label", (b,), torch.int64))
        table = _new_tensors(specs)
        one = len(set(recs)) == 1
        for key, name in (("mask", "channel_mask"), ("pos", "ch_pos"),
                          ("pos_mask", "ch_pos_mask")):
            out = table[name].numpy()
            if one:  # one recording: repeat its row
                out[...] = self._layout(recs[0])[key]
            else:
                np.stack([self._layout(r)[key] for r in recs], out=out)
        info = {r: self._info(r) for r in set(recs)}
        table["sfreq"].numpy()[...] = [info[r][4] for r in recs]
        table["start"].numpy()[...] = starts
        labels = None
        if self._rows_label is not None:
            labels = self._rows_label[rows].tolist()
            table["label"].numpy()[...] = labels
        return WindowBatch._of_buffers(batch, table, recs, starts, info, labels)

    def _info(self, rec):
        """``(channel, ch_type, recording id, subject, sfreq)`` of a recording's samples."""
        layout = self._layout(rec)
        return (layout["channel"], layout["ch_type"], self._rec_ids[rec], self._subjects[rec],
                float(self._sfreq[rec]))

    def _window(self, rec, start, length):
        """The (C, T) float32 window of ``rec`` at ``start``: normalized and mapped onto the
        dataset's channel set (a fresh array)."""
        layout = self._layout(rec)
        x = self._normalize(self._store_obj().read_window(self._rec_ids[rec], start,
                                                          start + length), rec)
        if layout["index"] is not None:
            mapped = np.zeros((len(layout["index"]), length), dtype=np.float32)
            mapped[layout["present"]] = x[layout["index"][layout["present"]]]
            x = mapped
        return np.ascontiguousarray(x, dtype=np.float32)

    def _item(self, i):
        """Sample ``i`` (a checked index), read on its own."""
        import torch

        rec = int(self._rows_rec[i])
        start = self._start(i)
        layout = self._layout(rec)
        sample = _sample_dict(
            torch.from_numpy(self._window(rec, start, int(self._rows_len[i]))),
            # fresh tensors: nothing a caller mutates reaches the cached layout
            torch.from_numpy(layout["mask"].copy()), torch.from_numpy(layout["pos"].copy()),
            torch.from_numpy(layout["pos_mask"].copy()), self._info(rec), int(start),
            None if self._rows_label is None else int(self._rows_label[i]))
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    # ---------------------------------------------------------------- pickling (workers)
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_store"] = None  # reopened lazily in the worker
        return state

    def __repr__(self):
        return (f"<WindowDataset {len(self)} windows, {len(self._used_recordings())} "
                f"recordings, splits={self.splits}, store={self._store_path!r}>")


def _sample_dict(signal, channel_mask, ch_pos, ch_pos_mask, info, start, label):
    """One sample: the tensors given, ``info`` as made by ``WindowDataset._info`` (its
    name lists copied, so that editing a sample changes nothing else), ``label`` or None."""
    channel, ch_type, rec_id, subject, sfreq = info
    sample = {"signal": signal, "channel_mask": channel_mask, "ch_pos": ch_pos,
              "ch_pos_mask": ch_pos_mask, "channel": list(channel), "ch_type": list(ch_type),
              "recording": rec_id, "subject": subject, "sfreq": sfreq, "start": start}
    if label is not None:
        sample["label"] = label
    return sample


_NO_SAMPLES = object()


class WindowBatch(MutableSequence):
    """The samples of one batch of :class:`WindowDataset` (what ``__getitems__`` returns).

    A list-like sequence of sample dicts, each equal to ``dataset[i]``. For a batch read into
    one buffer, the dicts are made on first access and their tensors are rows of per-batch
    tensors: ``signal`` of one (B, C, T) buffer; ``channel_mask`` (B, C), ``ch_pos``
    (B, C, 3), ``ch_pos_mask`` (B, C), ``sfreq``, ``start`` and ``label`` (B,) of another.
    :func:`~neurofm.data.collate` returns such a batch, if none of its samples has been
    accessed, straight from those tensors; once one has (or the sequence was changed), the
    sample dicts are collated as they now are.

    It supports what a list of samples does (indexing, slicing, iteration, ``==``, ``+``,
    item assignment, ``append``, ``insert``, ``del``, ``random.shuffle``) but is not a
    ``list`` subclass; ``WindowBatch(iterable)`` (or ``list(batch)``) gives a plain list of
    the samples, as code that rebuilds sequences by their type expects.
    """

    __slots__ = ("_info", "_labels", "_made", "_recs", "_signal", "_starts", "_table")

    def __new__(cls, samples=_NO_SAMPLES):
        # rebuilding by type, as Lightning's apply_to_collection and torch's pin_memory do,
        # gives the plain list of samples (the batch tensors are not rebuilt)
        if samples is not _NO_SAMPLES:
            return list(samples)
        return super().__new__(cls)

    def __init__(self, samples=_NO_SAMPLES):
        self._signal = self._table = self._recs = self._starts = None
        self._info = self._labels = None
        self._made = []

    @classmethod
    def _of_samples(cls, samples):
        """The batch of already-made ``samples`` (collated as they are)."""
        self = cls()
        self._made = list(samples)
        return self

    @classmethod
    def _of_buffers(cls, signal, table, recs, starts, info, labels):
        """The batch of windows read into ``signal`` (B, C, T), with ``table`` the dict of
        per-window tensors, ``recs`` / ``starts`` / ``labels`` per window and ``info``
        ``{rec: (channel, ch_type, rec_id, subject, sfreq)}``."""
        self = super().__new__(cls)
        self._signal, self._table, self._recs, self._starts = signal, table, recs, starts
        self._info, self._labels = info, labels
        self._made = [None] * len(recs)
        return self

    def _sample(self, k):
        sample = self._made[k]
        if sample is None:
            t = self._table
            sample = _sample_dict(self._signal[k], t["channel_mask"][k], t["ch_pos"][k],
                                  t["ch_pos_mask"][k], self._info[self._recs[k]],
                                  self._starts[k],
                                  None if self._labels is None else self._labels[k])
            self._made[k] = sample
        return sample

    def _all(self):
        """Every sample made; from now on the batch is its list of dicts."""
        for k in range(len(self._made)):
            self._sample(k)
        self._signal = None  # changed or changeable: collate the dicts
        return self._made

    def __len__(self):
        return len(self._made)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self._sample(j) for j in range(*k.indices(len(self)))]
        n = len(self)
        k = operator.index(k)
        if not -n <= k < n:
            raise IndexError(f"sample {k} out of range for a batch of {n}")
        return self._sample(k % n)

    def __setitem__(self, k, value):
        self._all()[k] = value

    def __delitem__(self, k):
        del self._all()[k]

    def insert(self, k, value):
        self._all().insert(k, value)

    def __iter__(self):
        for k in range(len(self)):
            yield self._sample(k)

    def __eq__(self, other):
        if isinstance(other, (list, WindowBatch)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None

    def __add__(self, other):
        return list(self) + list(other) if isinstance(other, (list, WindowBatch)) \
            else NotImplemented

    def __radd__(self, other):
        return list(other) + list(self) if isinstance(other, list) else NotImplemented

    def copy(self):
        """A plain list of the samples."""
        return list(self)

    def __repr__(self):
        shape = "" if self._signal is None else f", signal {tuple(self._signal.shape)}"
        return f"<WindowBatch of {len(self)} windows{shape}>"

    def collated(self):
        """The batch dict :func:`~neurofm.data.collate` makes of these samples, or None
        when the samples must be collated themselves (one was accessed or changed, or the
        batch was not read into one buffer)."""
        if self._signal is None or any(s is not None for s in self._made):
            return None
        info, recs, table = self._info, self._recs, self._table
        batch = {"signal": self._signal, "channel_mask": table["channel_mask"],
                 "ch_pos": table["ch_pos"], "ch_pos_mask": table["ch_pos_mask"],
                 "channel": [list(info[r][0]) for r in recs],
                 "ch_type": [list(info[r][1]) for r in recs],
                 "recording": [info[r][2] for r in recs],
                 "subject": [info[r][3] for r in recs],
                 "sfreq": table["sfreq"], "start": table["start"]}
        if self._labels is not None:
            batch["label"] = table["label"]
        return batch


def _new_tensors(specs):
    """Uninitialized tensors ``{name: tensor}`` for ``specs`` [(name, shape, dtype)], views
    of one allocation (in shared memory in a DataLoader worker: one file to send)."""
    import torch

    offsets, nbytes = [], 0
    for _, shape, dtype in specs:
        size = torch.empty(0, dtype=dtype).element_size()
        nbytes = -(-nbytes // 8) * 8  # every tensor 8-byte aligned
        offsets.append(nbytes // size)
        nbytes += int(np.prod(shape)) * size
    storage = _new_tensor((max(nbytes, 1),), torch.uint8).untyped_storage()
    return {name: torch.empty(0, dtype=dtype).set_(storage, offset, shape)
            for (name, shape, dtype), offset in zip(specs, offsets)}


def _new_tensor(shape, dtype):
    """An uninitialized tensor; in a DataLoader worker, in shared memory (as
    ``default_collate`` allocates its batches), so sending the batch to the main process
    does not copy it again."""
    import torch
    from torch.utils.data import get_worker_info

    if get_worker_info() is None:
        # numpy's allocator reuses freed heap memory; torch.empty maps fresh pages for every
        # large tensor, and faulting them in cost as much as reading the windows
        return torch.from_numpy(np.empty(shape, dtype=torch.empty(0, dtype=dtype).numpy().dtype))
    proto = torch.empty(0, dtype=dtype)
    storage = proto._typed_storage()._new_shared(int(np.prod(shape)))
    return proto.new(storage).resize_(*shape)


def _shared_epoch():
    """A one-element int64 tensor in shared memory: set_epoch reaches running workers."""
    import torch

    return torch.zeros(1, dtype=torch.int64).share_memory_()
