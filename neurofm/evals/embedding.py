"""Frozen-encoder embeddings as xarray, and the windows they come from.

Shapes: n windows, C channels, T samples, N tokens, D features.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import DataError, NeurofmError
from .encoders import as_encoder

__all__ = ["Windows", "embed", "embed_array", "load_windows", "resolve_labels"]

POOLS = ("mean", "max", "none")


class Windows:
    """All windows of a dataset in memory, with their provenance.

    Attributes
    ----------
    signal : float32 array of shape (n, C, T)
    recording, subject : str arrays of shape (n,)
    start : int64 array of shape (n,)
    label : array of shape (n,) or None
    sfreq : float
    modality : str
    channel : list of str
    """

    def __init__(self, signal, recording, subject, start, label, sfreq, modality, channel):
        self.signal = signal
        self.recording = np.asarray(recording, dtype=object).astype(str)
        self.subject = np.asarray(subject, dtype=object).astype(str)
        self.start = np.asarray(start, dtype=np.int64)
        self.label = None if label is None else np.asarray(label)
        self.sfreq = float(sfreq)
        self.modality = modality
        self.channel = list(channel)

    def __len__(self):
        return len(self.signal)

    def subset(self, idx):
        idx = np.asarray(idx)
        return Windows(self.signal[idx], self.recording[idx], self.subject[idx],
                       self.start[idx], None if self.label is None else self.label[idx],
                       self.sfreq, self.modality, self.channel)


def _dataset(dataset_or_store, *, split, window_samples, window_s, stride_s, normalization,
             encoder_extra):
    from ..data import NormalizationStats, WindowDataset
    from ..store import Store

    if isinstance(dataset_or_store, WindowDataset):
        return dataset_or_store
    if not isinstance(dataset_or_store, (Store, str, os.PathLike)):
        raise NeurofmError("dataset_or_store must be a WindowDataset, a Store or a store path; "
                           f"got {type(dataset_or_store).__name__}")
    if normalization == "auto":  # the statistics the encoder was pretrained with, if any
        stats = (encoder_extra or {}).get("normalization")
        normalization = None if stats is None else NormalizationStats.from_dict(
            stats, source="encoder metadata")
    if window_samples is None and window_s is None:
        raise NeurofmError("give window_samples or window_s (the encoder's input length) to "
                           "cut windows from a store")
    return WindowDataset(dataset_or_store, split=split, window_samples=window_samples,
                         window_s=window_s, stride_s=stride_s, normalization=normalization)


def load_windows(dataset):
    """Read every window of a :class:`~neurofm.data.WindowDataset` into memory.

    Returns
    -------
    windows : Windows
    """
    if len(dataset) == 0:
        raise DataError(f"{dataset!r} has no windows (recordings shorter than one window, or "
                        "an empty split)")
    samples = [dataset[i] for i in range(len(dataset))]
    shapes = {tuple(s["signal"].shape) for s in samples}
    if len(shapes) > 1:
        raise DataError(f"windows have different shapes {sorted(shapes)}; use one channel set "
                        "(channels='intersection' or a list) and window_samples")
    manifest = dataset._store_obj().manifest
    modalities = dict(zip(manifest["id"].astype(str), manifest["modality"].astype(str)))
    mods = sorted({modalities.get(s["recording"], "") for s in samples})
    label = [s["label"] for s in samples] if "label" in samples[0] else None
    return Windows(np.stack([s["signal"].numpy() for s in samples]).astype(np.float32),
                   [s["recording"] for s in samples], [s["subject"] for s in samples],
                   [s["start"] for s in samples], label, samples[0]["sfreq"],
                   mods[0] if len(mods) == 1 else "mixed", samples[0]["channel"])


def resolve_labels(windows, labels):
    """Per-window targets from a mapping of recording id or subject to a value.

    Parameters
    ----------
    windows : Windows
    labels : None | dict | pandas.Series
        Keys are recording ids or subjects (recording ids are tried first). None keeps the
        windows' own (event) labels.

    Returns
    -------
    y : array of shape (n,)
    """
    if labels is None:
        if windows.label is None:
            raise NeurofmError("no labels: pass labels= (recording id or subject -> value) or "
                               "event-locked windows (events=)")
        return windows.label
    if hasattr(labels, "to_dict"):
        labels = labels.to_dict()
    if not isinstance(labels, dict):
        raise NeurofmError(f"labels must be a dict (recording id or subject -> value); got "
                           f"{type(labels).__name__}")
    labels = {str(k): v for k, v in labels.items()}
    for keys in (windows.recording, windows.subject):
        missing = sorted(set(keys) - set(labels))
        if not missing:
            return np.asarray([labels[k] for k in keys])
    raise DataError(f"labels has no value for some recordings/subjects (e.g. recordings "
                    f"{sorted(set(windows.recording) - set(labels))[:5]}, subjects "
                    f"{sorted(set(windows.subject) - set(labels))[:5]})")


def _pool(h, pool):
    """(B, N, D) -> (B, D) (or (B, N * D) with "none"); (B, D) is returned as is."""
    if h.ndim == 2:
        return h
    if h.ndim != 3:
        raise DataError(f"encoder output must be (B, N, D) or (B, D); got {tuple(h.shape)}")
    if pool == "mean":
        return h.mean(dim=1)
    if pool == "max":
        return h.amax(dim=1)
    return h.flatten(1)


def embed_array(encoder, signal, *, pool="mean", batch_size=64, device=None):
    """Embeddings of an in-memory array of windows.

    Parameters
    ----------
    encoder : see :func:`neurofm.evals.as_encoder`
    signal : float array of shape (n, C, T)
    pool : {"mean", "max", "none"}
        Pooling over tokens ("none" flattens the tokens).

    Returns
    -------
    features : float32 array of shape (n, D)
    """
    import torch

    if pool not in POOLS:
        raise NeurofmError(f"pool must be one of {POOLS}; got {pool!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise NeurofmError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    adapter = as_encoder(encoder)
    device = torch.device(device or "cpu")
    was_training = adapter.training
    adapter.eval().to(device)
    out = []
    try:
        with torch.no_grad():
            for i in range(0, len(signal), batch_size):
                x = torch.as_tensor(np.asarray(signal[i:i + batch_size]), dtype=torch.float32,
                                    device=device)  # (B, C, T)
                out.append(_pool(adapter(x), pool).float().cpu().numpy())  # (B, D)
    finally:
        adapter.train(was_training)
    return np.concatenate(out, axis=0)


def embed(encoder, dataset_or_store, *, pool="mean", batch_size=64, device=None,
          per="window", split=None, window_samples=None, window_s=None, stride_s=None,
          normalization="auto", labels=None):
    """Frozen-encoder embeddings of every window (or recording) as an ``xr.DataArray``.

    Parameters
    ----------
    encoder : nn.Module | callable | str path
        Anything :func:`neurofm.evals.as_encoder` accepts: a ``BrainJEPA`` / ``BrainMAE``
        model, an encoder from :func:`neurofm.models.load_encoder`, a checkpoint or encoder
        file, a braindecode model... mapping (B, C, T) to (B, N, D) or (B, D).
    dataset_or_store : WindowDataset | Store | str
        Windows to embed; a store is cut into windows of ``window_samples`` (default the
        encoder's ``n_frames``) with ``stride_s``, over ``split`` (None: every recording).
    pool : {"mean", "max", "none"}
        Pooling over tokens.
    batch_size : int
    device : str | torch.device, optional
        Default CPU.
    per : {"window", "recording"}
        One row per window, or the mean embedding of each recording's windows.
    normalization : "auto" | None | NormalizationStats | str
        For stores: "auto" uses the statistics stored with the encoder (pretraining), if any.
    labels : dict, optional
        Recording id or subject -> target, added as a ``label`` coordinate.

    Returns
    -------
    features : xr.DataArray of shape (window, feature) or (recording, feature)
        Coordinates ``recording``, ``subject`` (and ``start`` per window, ``label`` when
        known).
    """
    import xarray as xr

    from .encoders import n_frames_of

    if per not in ("window", "recording"):
        raise NeurofmError(f"per must be 'window' or 'recording'; got {per!r}")
    adapter = as_encoder(encoder)
    if window_samples is None and window_s is None:
        window_samples = n_frames_of(adapter)
    ds = _dataset(dataset_or_store, split=split, window_samples=window_samples,
                  window_s=window_s, stride_s=stride_s, normalization=normalization,
                  encoder_extra=adapter.extra)
    win = load_windows(ds)
    feats = embed_array(adapter, win.signal, pool=pool, batch_size=batch_size, device=device)
    y = None
    if labels is not None or win.label is not None:
        y = resolve_labels(win, labels)
    if per == "window":
        coords = {"recording": ("window", win.recording), "subject": ("window", win.subject),
                  "start": ("window", win.start)}
        if y is not None:
            coords["label"] = ("window", y)
        return xr.DataArray(feats, dims=("window", "feature"), coords=coords, name="embedding")
    recs = list(dict.fromkeys(win.recording))
    rows = [np.flatnonzero(win.recording == r) for r in recs]
    data = np.stack([feats[r].mean(axis=0) for r in rows])
    coords = {"recording": recs, "subject": ("recording", [win.subject[r[0]] for r in rows])}
    if y is not None:
        coords["label"] = ("recording", [y[r[0]] for r in rows])
    return xr.DataArray(data, dims=("recording", "feature"), coords=coords, name="embedding")
