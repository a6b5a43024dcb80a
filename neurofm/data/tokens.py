"""Token windows of a store for autoregressive models (MEG-GPT).

A store of continuous recordings becomes windows of integer tokens with any neurofm tokenizer
that gives one token per sample per channel (:class:`~neurofm.tokenizers.MEGGPTTokenizer`,
the released MEG-GPT tokenizer by default; :class:`~neurofm.tokenizers.MuLawTokenizer` and
:class:`~neurofm.tokenizers.QuantileTokenizer` as baselines)::

    store --(z-score each channel over the whole recording)--> tokenizer --> (T, C) tokens
          --> windows of ``context + 1`` samples (B, context + 1, C) + a session index each

Tokens are computed on the fly in ``__getitem__`` or read from a token cache
(``cache_dir=``): one ``.npy`` per recording next to a JSON key made of the store's manifest
row (version folder, write token, length, rate, channels) and the tokenizer's fingerprint, so
a rewritten recording or another tokenizer is noticed and re-tokenized. Both paths give
identical tokens: the learned tokenizer reads its input in tiles of ``sequence_length``
samples from a fresh GRU state (the last tile anchored at the end of the recording), and both
paths encode exactly those tiles, one call per tile.

The window index (grid, random crops, event-locked labelled windows, splits) is
:class:`~neurofm.data.WindowDataset`'s.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np

from .._logging import logger
from ..errors import DataError, FormatError, NeurofmError
from .normalization import NormalizationStats
from .windows import WindowDataset

__all__ = ["TokenWindowDataset", "fit_tokenizer", "load_tokenizer", "pack_tokenizer",
           "tokenizer_fingerprint", "unpack_tokenizer", "zscore_stats"]

#: The released MEG-GPT tokenizer was trained on z-scored parcel time courses at this rate.
MEGGPT_SFREQ = 250.0
_CACHE_VERSION = 1
#: Samples per encode call for tokenizers that work sample by sample.
_POINTWISE_CHUNK = 1 << 16


# ------------------------------------------------------------------------------ tokenizers
def load_tokenizer(tokenizer):
    """A tokenizer object from a tokenizer, a saved neurofm tokenizer or a release folder.

    Parameters
    ----------
    tokenizer : Tokenizer | str | os.PathLike
        A tokenizer object (returned as is); a directory written by ``save`` (holding
        ``tokenizer.json``); or the released MEG-GPT tokenizer's directory (``config.yaml``,
        ``model_state.pt``, ``vocab.pkl``; loaded with
        :meth:`~neurofm.tokenizers.MEGGPTTokenizer.from_pretrained`).

    Returns
    -------
    tokenizer : neurofm.tokenizers.Tokenizer
    """
    from ..tokenizers import MEGGPTTokenizer, Tokenizer, load

    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    if not isinstance(tokenizer, (str, os.PathLike)):
        raise NeurofmError("tokenizer must be a neurofm tokenizer or the directory of a saved "
                           f"or released one; got {type(tokenizer).__name__}")
    path = Path(tokenizer)
    if (path / "tokenizer.json").is_file():
        return load(path)
    if (path / "model_state.pt").is_file() and (path / "config.yaml").is_file():
        return MEGGPTTokenizer.from_pretrained(path)
    found = sorted(p.name for p in path.iterdir()) if path.is_dir() else "no directory"
    raise FormatError(f"tokenizer {os.fspath(path)!r}: expected a saved neurofm tokenizer "
                      "(tokenizer.json) or the released MEG-GPT tokenizer (config.yaml, "
                      f"model_state.pt, vocab.pkl); found {found}")


def is_fitted(tokenizer):
    """Whether ``tokenizer`` can encode (fixed tokenizers without data-fitted state: True)."""
    name = type(tokenizer).__name__
    if name == "MEGGPTTokenizer":
        return getattr(tokenizer, "vocab_", None) is not None
    if name == "QuantileTokenizer":
        return getattr(tokenizer, "edges_", None) is not None
    if name == "MuLawTokenizer":
        return tokenizer.scale_ is not None or tokenizer.scale is not None
    for attr in ("vocab_", "edges_", "scale_"):
        if hasattr(tokenizer, attr) and getattr(tokenizer, attr) is None:
            return False
    return True


def fit_tokenizer(tokenizer, store, *, split="train", channels=None):
    """Fit a fixed tokenizer (mu-law scale, quantile edges) on whole training recordings.

    The tokenizer sees what the token windows feed it: each recording as one (C, T) array,
    standardized by the tokenizer itself when its ``standardize`` is set.

    Parameters
    ----------
    tokenizer : Tokenizer
        Fitted in place (``fit`` returns it).
    store : Store | str
    split : str | sequence of str | None
        Recordings to fit on.
    channels : sequence of str, optional
        Channel subset (in this order).

    Returns
    -------
    tokenizer : Tokenizer
    """
    from ..store import Store, open_store

    if type(tokenizer).__name__ == "MEGGPTTokenizer":
        raise NeurofmError("the MEG-GPT tokenizer is trained with MEGGPTTokenizer.fit (a GRU "
                           "autoencoder); load a trained or the released one instead")
    st = store if isinstance(store, Store) else open_store(store)
    man = st.manifest
    if split is not None:
        wanted = [split] if isinstance(split, str) else list(split)
        man = man[man["split"].isin(wanted)]
    if not len(man):
        raise DataError(f"{st.path}: no recording in split {split!r} to fit the tokenizer on")
    recs = []
    for rec_id, n_times in zip(man["id"], man["n_times"]):
        x = st.read_window(str(rec_id), 0, int(n_times))
        if channels is not None:
            names = [str(c) for c in st.open(str(rec_id))["channel"].values]
            x = x[[names.index(c) for c in channels]]
        recs.append(x)
    logger.info("fitting %s on %d recording(s) of %s", type(tokenizer).__name__, len(recs),
                st.path)
    return tokenizer.fit(recs)


def pack_tokenizer(tokenizer):
    """The files of ``tokenizer.save`` as bytes (what checkpoints embed).

    Returns
    -------
    packed : dict
        ``{"class": name, "files": {file name: bytes}}``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(tmp)
        files = {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}
    return {"class": type(tokenizer).__name__, "files": files}


def unpack_tokenizer(packed, *, source="checkpoint"):
    """Inverse of :func:`pack_tokenizer`.

    Raises
    ------
    FormatError
        ``packed`` is not what :func:`pack_tokenizer` writes.
    """
    from ..tokenizers import load

    if not isinstance(packed, dict) or not isinstance(packed.get("files"), dict) \
            or not packed["files"]:
        raise FormatError(f"{source}: no embedded tokenizer (expected {{'class', 'files'}})")
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in packed["files"].items():
            if os.path.basename(name) != name:
                raise FormatError(f"{source}: embedded tokenizer file name {name!r} is not a "
                                  "plain file name")
            Path(tmp, name).write_bytes(bytes(data))
        return load(tmp)


def tokenizer_fingerprint(tokenizer):
    """A SHA-256 hex digest of everything that decides the tokens a tokenizer gives.

    Computed from the saved configuration and the values of the saved arrays and weights
    (not from file bytes, which may carry archive metadata).

    Returns
    -------
    fingerprint : str
    """
    import torch

    h = hashlib.sha256(type(tokenizer).__name__.encode())
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(tmp)
        for p in sorted(Path(tmp).iterdir()):
            h.update(p.name.encode())
            if p.suffix == ".pt":
                state = torch.load(p, map_location="cpu", weights_only=True)
                for key in sorted(state):
                    h.update(key.encode())
                    h.update(np.ascontiguousarray(state[key].numpy()).tobytes())
            elif p.suffix == ".npz":
                with np.load(p, allow_pickle=False) as npz:
                    for key in sorted(npz.files):
                        arr = np.ascontiguousarray(npz[key])
                        h.update(f"{key}{arr.dtype}{arr.shape}".encode())
                        h.update(arr.tobytes())
            elif p.suffix == ".json":
                h.update(json.dumps(json.loads(p.read_text()), sort_keys=True).encode())
            else:
                h.update(p.read_bytes())
    return h.hexdigest()


def _tile_length(tokenizer):
    """Samples a tokenizer reads together: its GRU window, 1 for sample-wise tokenizers,
    None (the whole recording) when unknown."""
    name = type(tokenizer).__name__
    if name == "MEGGPTTokenizer":
        return int(tokenizer.sequence_length)
    if name in ("MuLawTokenizer", "QuantileTokenizer"):
        return 1
    return None


def zscore_stats(x):
    """Mean and population std of each channel over time, float64 (std 0 -> 1).

    The statistics :func:`neurofm.tokenizers.Tokenizer.normalize` uses on a whole recording.

    Parameters
    ----------
    x : float array of shape (C, T)

    Returns
    -------
    mean, std : float64 arrays of shape (C,)
    """
    import torch

    x64 = torch.from_numpy(np.ascontiguousarray(x)).double()
    mean = x64.mean(dim=-1)
    std = x64.std(dim=-1, correction=0)
    std = torch.where(std <= 0, torch.ones_like(std), std)
    return mean.numpy(), std.numpy()


def _apply_zscore(x, mean, std):
    import torch

    x64 = torch.from_numpy(np.ascontiguousarray(x)).double()
    z = (x64 - torch.from_numpy(mean)[:, None]) / torch.from_numpy(std)[:, None]
    return z.float().numpy()


# ------------------------------------------------------------------------------ dataset
class TokenWindowDataset:
    """Windows of tokens from the recordings of a store.

    Parameters
    ----------
    store : neurofm.store.Store | str | os.PathLike
    tokenizer : Tokenizer | str | os.PathLike
        Any neurofm tokenizer giving one token per sample per channel (or its directory, see
        :func:`load_tokenizer`); it must be fitted (see :func:`fit_tokenizer`). When its
        ``standardize`` is set, every channel is z-scored over its whole recording (the
        MEG-GPT convention) before tokenizing.
    window_samples : int, optional
        Window length in samples (``context + 1`` for next-token training).
    stride_samples : int, optional
        Step between window starts; default the window length.
    split : str | sequence of str | None
        Manifest splits to use.
    channels : "intersection" | sequence of str
        Channels (and their order) of every window; every recording must have them all.
    events, tmin, tmax
        Event-locked labelled windows, as in :class:`~neurofm.data.WindowDataset`.
    random_crop : bool
        One random window per recording per epoch (see ``WindowDataset``).
    sessions : None | False | sequence of str
        The session table: recording id -> integer index. None: every recording of the store
        in manifest order (all splits, so a session keeps its index across splits); False:
        no sessions (index -1); a list: that table (recordings missing from it raise).
    cache_dir : str | os.PathLike, optional
        Token cache directory; None tokenizes on the fly.
    sfreq : "auto" | float | None
        Required sampling rate. "auto": 250 Hz for a MEG-GPT tokenizer (the rate the
        released one was trained at), any single rate otherwise. None: any single rate.
    return_signal : bool
        Also return the (z-scored when the tokenizer standardizes) signal of each window.
    modalities : str | sequence of str, optional
    seed : int

    Notes
    -----
    A sample is a dict: ``tokens`` int64 tensor (T, C); ``session`` int; ``recording``,
    ``subject`` str; ``start`` int; ``label`` int with ``events``; ``signal`` float32 (C, T)
    with ``return_signal``. The default collate of torch stacks ``tokens`` into (B, T, C).
    """

    def __init__(self, store, tokenizer, *, window_samples=None, stride_samples=None,
                 split="train", channels="intersection", events=None, tmin=0.0, tmax=None,
                 random_crop=False, sessions=None, cache_dir=None, sfreq="auto",
                 return_signal=False, modalities=None, seed=0):
        from ..store import Store, open_store

        self.tokenizer = load_tokenizer(tokenizer)
        if not is_fitted(self.tokenizer):
            raise NeurofmError(f"the {type(self.tokenizer).__name__} is not fitted: call "
                               "neurofm.data.tokens.fit_tokenizer(tokenizer, store) (or its "
                               "fit) first")
        opened = store if isinstance(store, Store) else open_store(store)
        self._store_path, self._storage_options = opened.path, opened.storage_options
        self._store, self._pid = opened, os.getpid()
        manifest = opened.manifest
        if window_samples is not None and (isinstance(window_samples, bool) or not isinstance(
                window_samples, (int, np.integer)) or window_samples < 1):
            raise NeurofmError(f"window_samples must be a positive integer; got "
                               f"{window_samples!r}")
        if stride_samples is not None and (isinstance(stride_samples, bool) or not isinstance(
                stride_samples, (int, np.integer)) or stride_samples < 1):
            raise NeurofmError(f"stride_samples must be a positive integer; got "
                               f"{stride_samples!r}")
        self.zscore = bool(getattr(self.tokenizer, "standardize", False))
        self._tile = _tile_length(self.tokenizer)
        self.sfreq = self._check_sfreq(manifest, split, modalities, sfreq)
        stride_s = None if stride_samples is None else stride_samples / self.sfreq
        self._windows = WindowDataset(opened, window_samples=window_samples, stride_s=stride_s,
                                      split=split, modalities=modalities, events=events,
                                      tmin=tmin, tmax=tmax, random_crop=random_crop,
                                      seed=seed)
        rows = manifest.set_index("id")
        self._rec_ids = list(self._windows.recording_ids)
        self._rec_pos = {r: k for k, r in enumerate(self._rec_ids)}
        self._rows = {r: rows.loc[r] for r in self._rec_ids}
        self._subjects = {r: str(self._rows[r]["subject"]) for r in self._rec_ids}
        self._names = {r: [str(c) for c in opened.open(r)["channel"].values]
                       for r in self._rec_ids}
        self.channels = self._target_channels(channels)
        self._chan_index = {r: np.array([self._names[r].index(c) for c in self.channels])
                            for r in self._rec_ids}
        self.session_ids = self._session_table(manifest, sessions)
        self._session_of = {r: k for k, r in enumerate(self.session_ids)}
        missing = [r for r in self._rec_ids if self.session_ids and r not in self._session_of]
        if missing:
            raise DataError(f"sessions: recording(s) {missing[:10]} are not in the session "
                            f"table ({len(self.session_ids)} sessions)")
        self.return_signal = bool(return_signal)
        self.fingerprint = tokenizer_fingerprint(self.tokenizer)
        self._encoder = copy.copy(self.tokenizer)  # standardization is done here, per recording
        if self.zscore:
            self._encoder.standardize = False
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self._stats = {}
        self._maps = {}
        self._labels = None
        if events is not None:
            self._labels = np.array([self._windows[i]["label"]
                                     for i in range(len(self._windows))], dtype=np.int64)
        self._prepare()

    # ---------------------------------------------------------------- setup
    def _check_sfreq(self, manifest, split, modalities, sfreq):
        man = manifest
        if split is not None:
            man = man[man["split"].isin([split] if isinstance(split, str) else list(split))]
        if modalities is not None:
            man = man[man["modality"].isin([modalities] if isinstance(modalities, str)
                                           else list(modalities))]
        if not len(man):
            raise DataError(f"{self._store_path}: no recording in split {split!r}")
        rates = sorted({float(s) for s in man["sfreq"]})
        if len(rates) > 1:
            raise DataError(f"{self._store_path}: recordings at several sampling rates {rates} "
                            "Hz; tokens of one model need one rate (resample the store)")
        if sfreq == "auto":
            sfreq = MEGGPT_SFREQ if type(self.tokenizer).__name__ == "MEGGPTTokenizer" \
                else None
        if sfreq is not None and not np.isclose(rates[0], float(sfreq)):
            bad = man[~np.isclose(man["sfreq"].to_numpy(float), float(sfreq))]["id"].tolist()
            raise DataError(
                f"{self._store_path}: recording(s) {bad[:5]} are sampled at {rates[0]:g} Hz; "
                f"the {type(self.tokenizer).__name__} expects {float(sfreq):g} Hz (the released "
                "MEG-GPT tokenizer was trained on per-session z-scored channels at 250 Hz): "
                "resample the store (pipeline config `resample: {sfreq: 250}`), or pass "
                "sfreq=None to use it at another rate on purpose")
        return rates[0]

    def _target_channels(self, channels):
        if not self._rec_ids:
            raise DataError(f"{self._store_path}: no windows (recordings shorter than one "
                            "window, or no matching events)")
        if channels is None or channels == "intersection":
            common = set(self._names[self._rec_ids[0]])
            for r in self._rec_ids[1:]:
                common &= set(self._names[r])
            target = [c for c in self._names[self._rec_ids[0]] if c in common]
            if not target:
                raise DataError("channels='intersection': the recordings share no channel")
            return target
        if isinstance(channels, str):
            raise NeurofmError(f"channels must be 'intersection' or a list of names; got "
                               f"{channels!r}")
        target = [str(c) for c in channels]
        lacking = {r: [c for c in target if c not in self._names[r]] for r in self._rec_ids}
        lacking = {r: c for r, c in lacking.items() if c}
        if lacking:
            raise DataError(f"channels: recording(s) lack requested channels (token models "
                            f"need every channel): {dict(list(lacking.items())[:5])}")
        return target

    def _session_table(self, manifest, sessions):
        if sessions is False:
            return []
        if sessions is None:
            return [str(r) for r in manifest["id"]]
        if isinstance(sessions, str):
            raise NeurofmError("sessions must be None, False or a list of recording ids; got "
                               f"{sessions!r}")
        return [str(r) for r in sessions]

    def _store_obj(self):
        if self._store is None or os.getpid() != self._pid:
            from ..store import Store

            self._store = Store(self._store_path, storage_options=self._storage_options)
            self._pid = os.getpid()
            self._maps = {}
        return self._store

    def _key(self, rec_id):
        row = self._rows[rec_id]
        return {"version": _CACHE_VERSION, "recording": rec_id, "path": str(row["path"]),
                "write_token": str(row["token"]), "n_times": int(row["n_times"]),
                "sfreq": float(row["sfreq"]), "channels": self._names[rec_id],
                "tokenizer": self.fingerprint, "zscore": self.zscore}

    def _cache_files(self, rec_id):
        folder = Path(self.cache_dir) / self.fingerprint[:16]
        return folder / f"{rec_id}.npy", folder / f"{rec_id}.json"

    def _prepare(self):
        """Per-recording z-score statistics; with a cache, tokenize what is missing/stale."""
        for rec_id in self._rec_ids:
            if self.cache_dir is not None:
                self._stats[rec_id] = self._ensure_cached(rec_id)
            elif self.zscore:
                x = self._store_obj().read_window(rec_id, 0, int(self._rows[rec_id]["n_times"]))
                self._stats[rec_id] = zscore_stats(x)

    def _ensure_cached(self, rec_id):
        data_file, key_file = self._cache_files(rec_id)
        key = self._key(rec_id)
        if not key["write_token"]:  # stores without write tokens: key on the content
            n = key["n_times"]
            key["content"] = hashlib.sha256(
                self._store_obj().read_window(rec_id, 0, n).tobytes()).hexdigest()
        if key_file.is_file() and data_file.is_file():
            try:
                saved = json.loads(key_file.read_text())
            except ValueError:
                saved = None
            if isinstance(saved, dict) and saved.get("key") == key:
                stats = saved.get("stats")
                return None if stats is None else (np.asarray(stats["mean"], np.float64),
                                                   np.asarray(stats["std"], np.float64))
            logger.info("token cache of %s is stale (the recording or the tokenizer changed):"
                        " re-tokenizing", rec_id)
        n = key["n_times"]
        x = self._store_obj().read_window(rec_id, 0, n)
        stats = zscore_stats(x) if self.zscore else None
        tokens = self._encode_span(x, 0, n, n, stats)  # (C, n)
        dtype = np.int16 if self.tokenizer.vocab_size <= np.iinfo(np.int16).max else np.int32
        data_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = data_file.with_name(f".tmp-{uuid.uuid4().hex}.npy")
        np.save(tmp, np.ascontiguousarray(tokens.T.astype(dtype)))  # (T, C)
        os.replace(tmp, data_file)
        doc = {"key": key, "stats": None if stats is None else
               {"mean": stats[0].tolist(), "std": stats[1].tolist()}}
        tmp = key_file.with_name(f".tmp-{uuid.uuid4().hex}.json")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, key_file)  # written last: marks the tokens complete
        logger.info("tokenized %s (%d samples) into %s", rec_id, n, data_file.parent)
        return stats

    # ---------------------------------------------------------------- tokenizing
    def _encode(self, x):
        """Tokens (C, T) of z-scored (or raw) signal (C, T), one tokenizer call."""
        tokens = np.asarray(self._encoder.encode(x))
        if tokens.shape != x.shape:
            raise DataError(f"the {type(self.tokenizer).__name__} gives tokens of shape "
                            f"{tokens.shape} for a signal of shape {x.shape}: token windows "
                            "need one token per sample per channel")
        return tokens.astype(np.int64, copy=False)

    def _encode_span(self, x, a, b, n_times, stats):
        """Tokens of samples [a, b) given the signal ``x`` of samples [a, b') (b' >= b).

        ``[a, b')`` must be aligned on the tokenizer's tiles (see :meth:`_span`).
        """
        if stats is not None:
            x = _apply_zscore(x, *stats)
        tile = self._tile
        if tile is None:
            return self._encode(x)[:, :b - a]
        if tile == 1:
            return np.concatenate([self._encode(x[:, s:s + _POINTWISE_CHUNK])
                                   for s in range(0, b - a, _POINTWISE_CHUNK)], axis=1)
        out = np.empty((x.shape[0], x.shape[1]), dtype=np.int64)
        for s in _tiles(n_times, tile, a, a + x.shape[1]):  # the anchored tile comes last
            out[:, s - a:s - a + tile] = self._encode(x[:, s - a:s - a + tile])
        return out[:, :b - a]

    def _span(self, start, stop, n_times):
        """The tile-aligned sample range to read for window [start, stop)."""
        tile = self._tile
        if tile is None:
            return 0, n_times
        if tile == 1:
            return start, stop
        if n_times < tile:
            raise DataError(f"a recording of {n_times} samples is shorter than the tokenizer's "
                            f"sequence_length={tile}")
        n_full = n_times // tile
        a = min((start // tile) * tile, (n_full - 1) * tile)
        if n_times % tile and stop > n_times - tile:  # the anchored last tile is involved
            return a, n_times
        return a, -(-stop // tile) * tile

    def tokens(self, rec_id, start, stop):
        """Tokens of samples ``[start, stop)`` of recording ``rec_id`` in its own channel
        order.

        Returns
        -------
        tokens : int64 array of shape (C_recording, stop - start)
        """
        if rec_id not in self._rec_pos:
            raise NeurofmError(f"recording {rec_id!r} has no windows in this dataset")
        if self.cache_dir is not None:
            arr = self._maps.get(rec_id)
            if arr is None:
                arr = np.load(self._cache_files(rec_id)[0], mmap_mode="r")
                self._maps[rec_id] = arr
            return np.asarray(arr[start:stop]).T.astype(np.int64)
        n_times = int(self._rows[rec_id]["n_times"])
        a, b = self._span(start, stop, n_times)
        x = self._store_obj().read_window(rec_id, a, b)
        tokens = self._encode_span(x, a, b, n_times, self._stats.get(rec_id))
        return tokens[:, start - a:stop - a]

    def signal(self, rec_id, start, stop):
        """The window's signal (C_recording, stop - start), z-scored over the recording when
        the tokenizer standardizes."""
        x = self._store_obj().read_window(rec_id, start, stop)
        stats = self._stats.get(rec_id)
        return x if stats is None else _apply_zscore(x, *stats)

    # ---------------------------------------------------------------- dataset protocol
    def __len__(self):
        return len(self._windows)

    def set_epoch(self, epoch):
        """Forwarded to the window index (random crops)."""
        self._windows.set_epoch(epoch)

    @property
    def recording_ids(self):
        """Ids of the recordings that contribute windows (manifest order)."""
        return list(self._rec_ids)

    @property
    def labels(self):
        """Event labels of the windows (int64 array of shape (n,)), or None."""
        return None if self._labels is None else self._labels.copy()

    def window_info(self, i):
        """``(recording id, start sample, n_samples)`` of window ``i``."""
        return self._windows.window_info(i)

    def subject_of(self, rec_id):
        return self._subjects[rec_id]

    def normalization_stats(self):
        """The per-recording z-score statistics as :class:`NormalizationStats` (None when
        the tokenizer does not standardize)."""
        if not self.zscore:
            return None
        recs = {}
        for rec_id, (mean, std) in self._stats.items():
            names = self._names[rec_id]
            recs[rec_id] = {"center": dict(zip(names, map(float, mean))),
                            "scale": dict(zip(names, map(float, std)))}
        return NormalizationStats(method="zscore", per="recording", recordings=recs,
                                  n_windows=len(self))

    def token_counts(self, n_sessions=None):
        """Token counts per session over the whole recordings of this dataset.

        Returns
        -------
        counts : int64 array of shape (n_sessions, vocab_size)
            Rows of sessions without recordings here are zero.
        """
        n = len(self.session_ids) if n_sessions is None else int(n_sessions)
        if not self.session_ids:
            raise NeurofmError("token_counts needs a session table (sessions=False was given)")
        v = int(self.tokenizer.vocab_size)
        counts = np.zeros((n, v), dtype=np.int64)
        for rec_id in self._rec_ids:
            t = self.tokens(rec_id, 0, int(self._rows[rec_id]["n_times"]))
            t = t[self._chan_index[rec_id]]
            counts[self._session_of[rec_id]] += np.bincount(t.reshape(-1), minlength=v)[:v]
        return counts

    def __getitem__(self, i):
        import torch

        rec_id, start, length = self._windows.window_info(i)
        tokens = self.tokens(rec_id, start, start + length)[self._chan_index[rec_id]]
        sample = {
            "tokens": torch.from_numpy(np.ascontiguousarray(tokens.T)),  # (T, C)
            "session": self._session_of.get(rec_id, -1),
            "recording": rec_id,
            "subject": self._subjects[rec_id],
            "start": int(start),
        }
        if self._labels is not None:
            sample["label"] = int(self._labels[int(i) % len(self)])
        if self.return_signal:
            x = self.signal(rec_id, start, start + length)[self._chan_index[rec_id]]
            sample["signal"] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return sample

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_store"] = None  # reopened lazily in the worker
        state["_maps"] = {}
        return state

    def __repr__(self):
        return (f"<TokenWindowDataset {len(self)} windows, {len(self._rec_ids)} recordings, "
                f"{len(self.channels)} channels, {type(self.tokenizer).__name__}, "
                f"{'cached' if self.cache_dir else 'on the fly'}>")


def _tiles(n_times, tile, a, b):
    """Starts of the tokenizer tiles of a recording that lie inside [a, b), in encode order
    (the regular grid, then the tile anchored at the end, which overwrites its overlap)."""
    from ..tokenizers import window_starts

    return [s for s in window_starts(n_times, tile) if a <= s and s + tile <= b]
