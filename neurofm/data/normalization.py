"""Normalization statistics fitted on the training windows of a store.

:func:`fit_normalization` computes :class:`NormalizationStats` from a
:class:`~neurofm.data.WindowDataset` (its train split), the dataset applies them in
``__getitem__``, and they are saved to / loaded from JSON (and, by the training stack, into
every checkpoint) so a model always sees its data scaled as it was during training.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from .._checks import check_option
from .._logging import logger, warn
from ..errors import DataError, FormatError, NeurofmError

__all__ = ["NORMALIZATION_METHODS", "NormalizationStats", "fit_normalization"]

#: ``method=`` of :func:`fit_normalization`.
NORMALIZATION_METHODS = ("zscore", "robust", "subject_means")
_PER = ("channel", "recording")
_FORMAT = "neurofm-normalization"
_VERSION = 1


@dataclass
class NormalizationStats:
    """Centre and scale per channel (``per="channel"``) or per recording and channel.

    ``x_normalized = (x - center) / scale``.

    Attributes
    ----------
    method : {"zscore", "robust", "subject_means"}
        How the statistics were computed (see :func:`fit_normalization`).
    per : {"channel", "recording"}
        ``"channel"``: one centre / scale per channel name, pooled over the training
        recordings. ``"recording"``: each recording is scaled by its own statistics (per
        channel); the dataset computes them for recordings it has not seen (instance
        normalization: nothing crosses recordings, so nothing leaks from val / test).
    center, scale : dict of str -> float
        By channel name (``per="channel"``).
    recordings : dict of str -> dict
        ``{recording_id: {"center": {ch: value}, "scale": {ch: value}}}`` (``per="recording"``).
    n_windows : int
        Windows the statistics were computed from.
    """

    method: str
    per: str = "channel"
    center: dict = field(default_factory=dict)
    scale: dict = field(default_factory=dict)
    recordings: dict = field(default_factory=dict)
    n_windows: int = 0

    def __post_init__(self):
        check_option("method", self.method, NORMALIZATION_METHODS)
        check_option("per", self.per, _PER)

    # ---------------------------------------------------------------- applying
    def _maps(self, recording):
        if self.per == "recording":
            entry = self.recordings.get(recording)
            if entry is None:
                raise NeurofmError(f"no normalization statistics for recording {recording!r}")
            return entry["center"], entry["scale"]
        return self.center, self.scale

    def vectors(self, channels, recording=None):
        """Centre and scale vectors for a channel list.

        Parameters
        ----------
        channels : sequence of str of length n_channels
        recording : str, optional
            Recording id (needed when ``per="recording"``).

        Returns
        -------
        center, scale : numpy.ndarray of shape (n_channels,), float32
            Channels without statistics get centre 0 and scale 1.
        """
        return _vectors(channels, *self._maps(recording))

    def apply(self, x, channels, recording=None):
        """Normalize a window (a new array).

        Parameters
        ----------
        x : numpy.ndarray of shape (n_channels, n_times)
        channels : sequence of str of length n_channels
        recording : str, optional

        Returns
        -------
        x : numpy.ndarray of shape (n_channels, n_times), float32
        """
        return apply_stats(x, channels, *self._maps(recording))

    # ---------------------------------------------------------------- (de)serialization
    def to_dict(self):
        """JSON-safe mapping (what :meth:`save` writes and checkpoints hold)."""
        return {"format": _FORMAT, "version": _VERSION, "method": self.method, "per": self.per,
                "center": {k: float(v) for k, v in self.center.items()},
                "scale": {k: float(v) for k, v in self.scale.items()},
                "recordings": {r: {"center": {k: float(v) for k, v in e["center"].items()},
                                   "scale": {k: float(v) for k, v in e["scale"].items()}}
                               for r, e in self.recordings.items()},
                "n_windows": int(self.n_windows)}

    @classmethod
    def from_dict(cls, d, *, source="normalization statistics"):
        """Inverse of :meth:`to_dict`; :class:`FormatError` on anything else."""
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise FormatError(f"{source}: not neurofm normalization statistics (expected "
                              f"format {_FORMAT!r})")
        if d.get("version") != _VERSION:
            raise FormatError(f"{source}: normalization statistics version {d.get('version')!r}"
                              f"; this neurofm reads version {_VERSION}")
        try:
            return cls(method=d["method"], per=d["per"], center=dict(d["center"]),
                       scale=dict(d["scale"]), recordings=dict(d["recordings"]),
                       n_windows=int(d["n_windows"]))
        except (KeyError, TypeError) as err:
            raise FormatError(f"{source}: incomplete normalization statistics ({err})") from err

    def save(self, path):
        """Write the statistics as JSON (atomically: a temporary file, then a rename)."""
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as fid:
            json.dump(self.to_dict(), fid, indent=1, sort_keys=True)
            fid.flush()
            os.fsync(fid.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path):
        """Read statistics written by :meth:`save`."""
        path = os.fspath(path)
        try:
            with open(path) as fid:
                d = json.load(fid)
        except FileNotFoundError as err:
            raise FormatError(f"{path}: normalization statistics not found") from err
        except (OSError, ValueError) as err:
            raise FormatError(f"{path}: unreadable normalization statistics ({err})") from err
        return cls.from_dict(d, source=path)


def _vectors(channels, center, scale):
    """float32 centre / scale vectors for ``channels`` (0 and 1 where a channel is absent)."""
    c = np.array([center.get(str(ch), 0.0) for ch in channels], dtype=np.float32)
    s = np.array([scale.get(str(ch), 1.0) for ch in channels], dtype=np.float32)
    return c, s


def apply_stats(x, channels, center, scale):
    """``(x - center) / scale`` per channel, from name -> value maps (a new float32 array).

    Parameters
    ----------
    x : numpy.ndarray of shape (n_channels, n_times)
    channels : sequence of str of length n_channels
    center, scale : dict of str -> float
    """
    c, s = _vectors(channels, center, scale)
    return ((x - c[:, None]) / s[:, None]).astype(np.float32, copy=False)


def _sample(rows, max_windows, seed):
    """At most ``max_windows`` of ``rows`` (a seeded subset, in order)."""
    if len(rows) > max_windows:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_windows, replace=False))
    return rows


def _recording_samples(dataset, rec, max_windows, seed):
    """Raw samples of up to ``max_windows`` windows of one recording: (n_channels, n)."""
    rows = _sample(dataset._windows_of(rec), max_windows, seed)
    return np.concatenate([dataset._raw_window(int(i)) for i in rows], axis=1), len(rows)


def _center_scale(x, method):
    """Per-row centre and scale of (n_channels, n_samples) by ``method``."""
    if method == "zscore":
        center = x.mean(axis=1)
        scale = x.std(axis=1)
    else:
        q25, center, q75 = np.percentile(x, [25.0, 50.0, 75.0], axis=1)
        scale = q75 - q25
    return center, scale


def _guard_scale(scale, names, where):
    zero = ~(scale > 0)
    if zero.any():
        warn(f"{where}: scale is 0 for channel(s) {[names[i] for i in np.flatnonzero(zero)][:10]};"
             " they are only centred")
    return np.where(zero, 1.0, scale)


def recording_stats(dataset, rec, method, max_windows, seed=0):
    """Statistics of one recording from up to ``max_windows`` of its windows."""
    names = dataset._channel_names(rec)
    x, _ = _recording_samples(dataset, rec, max_windows, seed)
    center, scale = _center_scale(x.astype(np.float64), "zscore" if method == "zscore"
                                  else "robust")
    scale = _guard_scale(scale, names, f"recording {dataset._rec_ids[rec]!r}")
    return {"center": dict(zip(names, center.tolist())),
            "scale": dict(zip(names, scale.tolist()))}


def fit_normalization(dataset, method="zscore", per="channel", max_windows=1000, seed=0):
    """Fit normalization statistics on the training windows of a dataset.

    Parameters
    ----------
    dataset : WindowDataset
        Must be restricted to ``split="train"`` (statistics are never computed on val / test
        data); its own normalization, if any, is ignored.
    method : {"zscore", "robust", "subject_means"}
        ``"zscore"``: mean and standard deviation per channel over the sampled windows.
        ``"robust"``: median and interquartile range (25-75 %) per channel.
        ``"subject_means"``: the Brain-JEPA pretraining scaling (METHODS.md section 1):
        each training subject's temporal mean per channel, then the median and IQR of
        those means across subjects (needs ``per="channel"``).
    per : {"channel", "recording"}
        See :class:`NormalizationStats`.
    max_windows : int
        Most windows read (a seeded random subset when there are more); per recording
        when ``per="recording"`` or ``method="subject_means"``.
    seed : int
        Seed of the subset.

    Returns
    -------
    stats : NormalizationStats
    """
    check_option("method", method, NORMALIZATION_METHODS)
    check_option("per", per, _PER)
    if isinstance(max_windows, bool) or not isinstance(max_windows, (int, np.integer)) \
            or max_windows < 1:
        raise NeurofmError(f"max_windows must be an integer >= 1; got {max_windows!r}")
    splits = dataset.splits
    if splits != ("train",):
        held = "every split" if splits is None else list(splits)
        raise NeurofmError("fit_normalization: the dataset must be the train split only "
                           f"(split='train'); it holds {held}")
    if len(dataset) == 0:
        raise DataError("fit_normalization: the dataset has no windows")
    recs = dataset._used_recordings()
    if per == "recording":
        if method == "subject_means":
            raise NeurofmError('method="subject_means" needs per="channel"')
        table = {dataset._rec_ids[r]: recording_stats(dataset, r, method, max_windows, seed)
                 for r in recs}
        n = sum(min(len(dataset._windows_of(r)), max_windows) for r in recs)
        return NormalizationStats(method, per, recordings=table, n_windows=n)
    if method == "subject_means":
        return _subject_means(dataset, recs, max_windows, seed)
    rows = _sample(np.arange(len(dataset)), max_windows, seed)
    sums = {}
    for i in rows:
        rec = dataset._rec_of_row(int(i))
        names = dataset._channel_names(rec)
        x = dataset._raw_window(int(i)).astype(np.float64)
        for name, values in zip(names, x):
            sums.setdefault(name, []).append(values)
    center, scale = {}, {}
    for name, chunks in sums.items():
        values = np.concatenate(chunks)[None]
        c, s = _center_scale(values, method)
        center[name], scale[name] = float(c[0]), float(s[0])
    names = list(scale)
    guarded = _guard_scale(np.array([scale[n] for n in names]), names, "fit_normalization")
    scale = dict(zip(names, guarded.tolist()))
    logger.info("normalization (%s per channel) fitted on %d windows", method, len(rows))
    return NormalizationStats(method, per, center=center, scale=scale, n_windows=len(rows))


def _subject_means(dataset, recs, max_windows, seed):
    """Brain-JEPA: median / IQR across subjects of each subject's temporal mean per channel."""
    by_subject = {}
    n = 0
    for rec in recs:
        names = dataset._channel_names(rec)
        x, used = _recording_samples(dataset, rec, max_windows, seed)
        n += used
        subject = dataset._subjects[rec] or dataset._rec_ids[rec]
        entry = by_subject.setdefault(subject, {})
        for name, values in zip(names, x.astype(np.float64)):
            entry.setdefault(name, []).append(values)
    means = {}  # channel -> list of subject means
    for entry in by_subject.values():
        for name, chunks in entry.items():
            means.setdefault(name, []).append(float(np.concatenate(chunks).mean()))
    center, scale = {}, {}
    for name, values in means.items():
        q25, q50, q75 = np.percentile(np.asarray(values), [25.0, 50.0, 75.0])
        center[name], scale[name] = float(q50), float(q75 - q25)
    if len(by_subject) < 2:
        warn(f'fit_normalization(method="subject_means"): only {len(by_subject)} training '
             "subject(s); the IQR across subjects is 0 and channels are only centred")
    names = list(scale)
    guarded = _guard_scale(np.array([scale[k] for k in names]), names, "fit_normalization")
    return NormalizationStats("subject_means", "channel", center=center,
                              scale=dict(zip(names, guarded.tolist())), n_windows=n)
