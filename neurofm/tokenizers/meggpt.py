"""The learned per-sample tokenizer of MEG-GPT (METHODS.md section 3).

Each channel is tokenized on its own with shared weights: a GRU reads the scalar samples of a
window, a linear layer + LayerNorm scaled by 10 gives logits over ``n_tokens``, and the token
is their argmax. Each token owns a waveform of ``token_dim`` samples; the reconstruction is the
overlap-add of the waveforms of the tokens (a convolution over one-hot token weights). During
training the one-hot weights are mixed with the softmax, ``tau * softmax + (1 - tau) *
onehot``, and ``tau`` is annealed in stages (:func:`annealed_temperature`). After training the
raw ids are renumbered by frequency (:meth:`MEGGPTTokenizer.refactor_vocab`): id 0 is
reserved, 1 is the most used token, unused tokens are dropped.

The released tokenizer (OHBA-analysis/MEG-GPT ``models/tokenizer``) loads with
:meth:`MEGGPTTokenizer.from_pretrained`; ``encode`` then reproduces the reference
``tokenize_session(x.T, margin=0, standardize=True, remap=True)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_option, check_positive, check_positive_int
from ..errors import DataError, FormatError, NeurofmError
from ._base import Tokenizer, register
from ._common import (
    WEIGHTS_FILE,
    as_signal,
    as_tokens,
    check_fitted,
    iter_recordings,
    load_state_dict_strict,
    read_stats,
    read_torch_state,
    restore,
    standardize,
    write_config,
    write_stats,
)

__all__ = ["MEGGPTTokenizer", "MEGGPTTokenizerNet", "annealed_temperature", "window_starts"]

#: The reference divides the normalized logits by 0.1.
LOGIT_SCALE = 10.0
#: Sequences per forward pass when encoding (bounds memory, not results).
_CHUNK = 4096


def window_starts(n_times, length):
    """Starts of the windows that tile ``n_times`` samples as the reference does.

    Non-overlapping windows at ``0, L, 2L, ...``; when ``L`` does not divide ``n_times`` a
    last window is anchored at ``n_times - L`` (it overlaps the one before it).

    Parameters
    ----------
    n_times : int
    length : int
        Window length L (<= n_times).

    Returns
    -------
    starts : list of int
    """
    last = n_times - length
    starts = list(range(0, last + 1, length))
    if starts[-1] != last:
        starts.append(last)
    return starts


def annealed_temperature(epoch, n_epochs, n_stages, start=1.0, end=1e-3):
    """Temperature of the soft/hard token mix at ``epoch`` (0-based): linear in stages.

    ``n_stages`` equally spaced values from ``start`` to ``end``; each held for
    ``max(1, n_epochs // n_stages)`` epochs, the last one for the rest of training.

    Returns
    -------
    tau : float
    """
    n_stages = max(1, int(n_stages))
    per_stage = max(1, int(n_epochs) // n_stages)
    stage = min(n_stages - 1, int(epoch) // per_stage)
    if n_stages == 1:
        return float(start)
    return float(start + (end - start) * stage / (n_stages - 1))


class MEGGPTTokenizerNet(nn.Module):
    """GRU encoder, token logits and token waveforms (the network only).

    Parameters
    ----------
    n_tokens : int
        Raw vocabulary N.
    rnn_units : int
        GRU width H.
    rnn_layers : int
        Stacked GRU layers (input size 1 for the first).
    token_dim : int
        Waveform length k of each token (samples).
    padding : {"causal", "same"}
        "causal": k - 1 zeros on the left (a token shapes its own sample and the next k - 1);
        "same": (k - 1) // 2 left and the rest right.
    bias : bool
        A learned constant added to the reconstruction.

    Notes
    -----
    The waveforms are kept, as in the reference, as a ``Conv1d(N, N, k)`` whose outputs are
    summed; the sum is taken over the kernel first (the same function, and the same gradients
    per weight, at 1/N of the cost).
    """

    def __init__(self, n_tokens=128, rnn_units=128, rnn_layers=1, token_dim=10,
                 padding="causal", bias=True):
        super().__init__()
        self.n_tokens = n_tokens
        self.token_dim = token_dim
        self.padding = padding
        self.gru = nn.GRU(1, rnn_units, num_layers=rnn_layers, batch_first=True)
        self.proj = nn.Linear(rnn_units, n_tokens)
        self.norm = nn.LayerNorm(n_tokens)
        self.kernels = nn.Conv1d(n_tokens, n_tokens, token_dim, bias=bias)
        self.register_buffer("temperature", torch.tensor(1.0))
        self.reset_parameters()

    def reset_parameters(self):
        """Xavier-uniform linear/conv weights, orthogonal recurrent weights, zero biases."""
        for name, p in self.gru.named_parameters():
            if name.startswith("weight_ih"):
                nn.init.xavier_uniform_(p)
            elif name.startswith("weight_hh"):
                nn.init.orthogonal_(p)
            else:
                nn.init.zeros_(p)
        for layer in (self.proj, self.kernels):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        nn.init.ones_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    def logits(self, x):
        """Token logits of single-channel sequences.

        Parameters
        ----------
        x : Tensor of shape (S, L)
            S sequences (batch x channels) of L samples.

        Returns
        -------
        logits : Tensor of shape (S, L, N)
        """
        h, _ = self.gru(x.unsqueeze(-1))  # (S, L, H)
        return self.norm(self.proj(h)) * LOGIT_SCALE  # (S, L, N)

    def synthesize(self, weights):
        """Overlap-add the token waveforms.

        Parameters
        ----------
        weights : Tensor of shape (S, N, L)
            Token weights (one-hot at inference).

        Returns
        -------
        x_hat : Tensor of shape (S, L)
        """
        k = self.token_dim
        left = k - 1 if self.padding == "causal" else (k - 1) // 2
        w = F.pad(weights, (left, k - 1 - left))  # (S, N, L + k - 1)
        kernel = self.kernels.weight.sum(dim=0, keepdim=True)  # (1, N, k)
        bias = None if self.kernels.bias is None else self.kernels.bias.sum().reshape(1)
        return F.conv1d(w, kernel, bias).squeeze(1)  # (S, L)

    def forward(self, x):
        """Reconstruct single-channel sequences.

        In training mode the token weights are ``tau * softmax + (1 - tau) * onehot(argmax)``
        with ``tau = self.temperature``; otherwise one-hot.

        Parameters
        ----------
        x : Tensor of shape (S, L)

        Returns
        -------
        x_hat : Tensor of shape (S, L)
        logits : Tensor of shape (S, L, N)
        """
        logits = self.logits(x)  # (S, L, N)
        hard = F.one_hot(logits.argmax(dim=-1), self.n_tokens).to(logits.dtype)
        if self.training:
            tau = self.temperature
            weights = tau * logits.softmax(dim=-1) + (1.0 - tau) * hard
        else:
            weights = hard
        return self.synthesize(weights.transpose(1, 2)), logits  # (S, L), (S, L, N)

    def training_loss(self, x):
        """MSE between windows and their reconstruction.

        Parameters
        ----------
        x : Tensor of shape (S, L)

        Returns
        -------
        loss : scalar Tensor
        logs : dict of str -> float
            ``temperature`` and ``pve`` (percentage of variance of the windows explained,
            with the soft/hard token mix in training mode, hard tokens in eval mode).
        """
        x_hat, _ = self(x)  # (S, L)
        loss = F.mse_loss(x_hat, x)
        with torch.no_grad():
            sse = (x - x_hat).pow(2).sum()
            sst = (x - x.mean(dim=-1, keepdim=True)).pow(2).sum().clamp_min(1e-12)
            batch_pve = float(100.0 * (1.0 - sse / sst))
        return loss, {"temperature": float(self.temperature), "pve": batch_pve}


@register
class MEGGPTTokenizer(Tokenizer):
    """Learned per-sample tokenizer: one token per sample per channel.

    Parameters
    ----------
    n_tokens : int
        Raw vocabulary before the refactor (128 in the release).
    rnn_units, rnn_layers : int
        GRU width and depth (128, 1).
    sequence_length : int
        Window length L used to train and to encode (200 samples).
    token_dim : int
        Samples per token waveform (10).
    padding : {"causal", "same"}
        How the waveform sits around its token ("causal" in the 2026 release).
    n_channels : int, optional
        Fix the channel count (``DataError`` on other counts). The weights are shared across
        channels, so None (any count) is the default.
    standardize : bool
        Z-score each channel of each recording over time before encoding (population std,
        std 0 -> 1), as at training time; :meth:`decode` returns z-scores.
    token_bias : bool
        A learned constant added to the reconstruction (True in the release).

    Attributes
    ----------
    net_ : MEGGPTTokenizerNet
    vocab_ : dict of ndarray
        ``token_order`` (K,) raw ids by decreasing use, ``token_counts`` (n_recordings, K),
        ``total_token_counts`` (K,), ``label_map`` (n_tokens,) raw id -> refactored id
        (0 for unused raw ids).
    history_ : list of dict
        Per-epoch training metrics: ``epoch``, ``train_loss``, ``train_pve``,
        ``train_temperature``, and ``val_loss``, ``val_pve`` when validation data were given.
    """

    def __init__(self, n_tokens=128, rnn_units=128, rnn_layers=1, sequence_length=200,
                 token_dim=10, padding="causal", n_channels=None, standardize=True,
                 token_bias=True):
        self.n_tokens = n_tokens
        self.rnn_units = rnn_units
        self.rnn_layers = rnn_layers
        self.sequence_length = sequence_length
        self.token_dim = token_dim
        self.padding = padding
        self.n_channels = n_channels
        self.standardize = standardize
        self.token_bias = token_bias
        self.net_ = None
        self.vocab_ = None
        self.history_ = []

    # ----------------------------------------------------------------------------- config

    def _config(self):
        cfg = {
            "n_tokens": check_positive_int("n_tokens", self.n_tokens),
            "rnn_units": check_positive_int("rnn_units", self.rnn_units),
            "rnn_layers": check_positive_int("rnn_layers", self.rnn_layers),
            "sequence_length": check_positive_int("sequence_length", self.sequence_length),
            "token_dim": check_positive_int("token_dim", self.token_dim),
            "padding": check_option("padding", self.padding, ("causal", "same")),
            "n_channels": (None if self.n_channels is None
                           else check_positive_int("n_channels", self.n_channels)),
            "standardize": bool(self.standardize),
            "token_bias": bool(self.token_bias),
        }
        if cfg["n_tokens"] < 2:
            raise NeurofmError(f"n_tokens must be >= 2; got {cfg['n_tokens']}")
        return cfg

    def _build_net(self):
        cfg = self._config()
        return MEGGPTTokenizerNet(cfg["n_tokens"], cfg["rnn_units"], cfg["rnn_layers"],
                                  cfg["token_dim"], cfg["padding"], bias=cfg["token_bias"])

    @property
    def vocab_size(self):
        """Refactored vocabulary: the used raw tokens plus the reserved id 0."""
        check_fitted(self, "vocab_", "fit")
        return int(self.vocab_["token_order"].size) + 1

    # ---------------------------------------------------------------------------- training

    def windows(self, data):
        """Standardized single-channel training windows tiled as :meth:`encode` tiles them.

        Parameters
        ----------
        data : array-like of shape (C, T) or (B, C, T), or a list of (C, T) recordings

        Returns
        -------
        windows : Tensor of shape (n_windows, L), float32
        """
        L = self._config()["sequence_length"]
        out = []
        for i, rec in enumerate(iter_recordings(data)):
            self._check_rec(rec, f"data[{i}]")
            z = standardize(rec[None])[0] if self.standardize else rec  # (C, T)
            out.extend(z[:, s:s + L] for s in window_starts(z.shape[-1], L))
        return torch.cat(out, dim=0)

    def _check_rec(self, rec, name):
        cfg = self._config()
        if rec.shape[-1] < cfg["sequence_length"]:
            raise DataError(f"{name} has {rec.shape[-1]} samples; the tokenizer needs at least "
                            f"sequence_length={cfg['sequence_length']}")
        if cfg["n_channels"] is not None and rec.shape[0] != cfg["n_channels"]:
            raise DataError(f"{name} must have {cfg['n_channels']} channels (n_channels="
                            f"{cfg['n_channels']}); got {rec.shape[0]}")

    def fit(self, data, *, val_data=None, max_epochs=20, batch_size=64, lr=1e-3,
            n_annealing_epochs=None, n_stages=None, start_temperature=1.0,
            end_temperature=1e-3, seed=0, accelerator="cpu", devices=1, verbose=False):
        """Train the network with Lightning, then refactor the vocabulary on ``data``.

        Training runs through :func:`neurofm.training.tokenizer.train_tokenizer_net` with the
        temperature annealing as a callback (:class:`~neurofm.training.tokenizer.
        TemperatureAnnealing`). Adam on the MSE of standardized windows.

        Parameters
        ----------
        data : array-like of shape (C, T) or (B, C, T), or a list of (C, T) recordings
            Training recordings (each at least ``sequence_length`` samples).
        val_data : same, optional
            Held-out recordings; their loss is logged per epoch.
        max_epochs : int
        batch_size : int
            Single-channel windows per optimizer step.
        lr : float
            Adam learning rate (the release used 1e-5 on far more data).
        n_annealing_epochs : int, optional
            Epochs over which tau goes from ``start_temperature`` to ``end_temperature``
            (default ``max_epochs``).
        n_stages : int, optional
            Annealing stages (default ``n_annealing_epochs``).
        start_temperature, end_temperature : float
        seed : int
            Seeds the initialization and the batch order.
        accelerator, devices
            Passed to the Lightning Trainer.
        verbose : bool
            Progress bar.

        Returns
        -------
        self
        """
        max_epochs = check_positive_int("max_epochs", max_epochs)
        check_positive("lr", lr)
        n_annealing_epochs = check_positive_int(
            "n_annealing_epochs", max_epochs if n_annealing_epochs is None
            else n_annealing_epochs)
        n_stages = check_positive_int("n_stages", n_annealing_epochs if n_stages is None
                                      else n_stages)
        train = self.windows(data)
        val = None if val_data is None else self.windows(val_data)
        from ..training.tokenizer import TemperatureAnnealing, train_tokenizer_net

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = self._build_net()
        annealing = TemperatureAnnealing(n_stages=n_stages, n_epochs=n_annealing_epochs,
                                         start=start_temperature, end=end_temperature)
        self.history_ = train_tokenizer_net(
            net, train, val, max_epochs=max_epochs, batch_size=batch_size, lr=lr,
            callbacks=[annealing], seed=seed, accelerator=accelerator, devices=devices,
            verbose=verbose)
        self.net_ = net.cpu().eval()
        self.refactor_vocab(data)
        return self

    # ------------------------------------------------------------------------- vocabulary

    def refactor_vocab(self, data):
        """Renumber raw tokens by their use on ``data``: 0 reserved, 1 = most used.

        Unused raw tokens are dropped from the vocabulary; ties keep the lower raw id first.

        Parameters
        ----------
        data : array-like of shape (C, T) or (B, C, T), or a list of (C, T) recordings
            Usually the training recordings; counts are kept per recording.

        Returns
        -------
        self
        """
        check_fitted(self, "net_", "fit")
        n = self._config()["n_tokens"]
        counts = []
        for i, rec in enumerate(iter_recordings(data)):
            self._check_rec(rec, f"data[{i}]")
            raw = self._raw_tokens(rec[None])  # (1, C, T)
            counts.append(np.bincount(raw.reshape(-1).numpy(), minlength=n))
        counts = np.stack(counts).astype(np.int64)  # (n_recordings, N)
        total = counts.sum(axis=0)
        order = np.lexsort((np.arange(n), -total))  # by decreasing count, then raw id
        order = order[total[order] > 0]
        label_map = np.zeros(n, dtype=np.int64)
        label_map[order] = np.arange(1, order.size + 1)
        self.vocab_ = {
            "token_order": order.astype(np.int64),
            "token_counts": counts[:, order],
            "total_token_counts": total[order],
            "label_map": label_map,
        }
        return self

    # --------------------------------------------------------------------- encode / decode

    @torch.no_grad()
    def _raw_tokens(self, t):
        """Raw token ids of a (B, C, T) tensor tiled in windows of L (the last anchored)."""
        net = self.net_
        cfg = self._config()
        L = cfg["sequence_length"]
        B, C, T = t.shape
        z = standardize(t) if cfg["standardize"] else t.float()
        starts = window_starts(T, L)
        device = next(net.parameters()).device
        win = torch.stack([z[..., s:s + L] for s in starts], dim=1)  # (B, W, C, L)
        seqs = win.reshape(-1, L)  # (B*W*C, L)
        was_training = net.training
        net.eval()
        try:
            ids = torch.cat([net.logits(chunk.to(device)).argmax(dim=-1).cpu()
                             for chunk in seqs.split(_CHUNK)])  # (B*W*C, L)
        finally:
            net.train(was_training)
        ids = ids.reshape(B, len(starts), C, L)
        out = torch.empty((B, C, T), dtype=torch.long)
        for w, s in enumerate(starts):  # the anchored last window overwrites the overlap
            out[..., s:s + L] = ids[:, w]
        return out

    def encode(self, x):
        """Refactored tokens, one per sample per channel.

        Each recording (batch item) is z-scored per channel over time (when
        ``standardize``), cut in windows of ``sequence_length`` tiled without overlap with
        the last window anchored at the end (its tokens win where it overlaps), and each
        window is encoded from a fresh GRU state.

        Parameters
        ----------
        x : array-like of shape (C, T) or (B, C, T), T >= sequence_length

        Returns
        -------
        tokens : same kind as ``x``, int64 of shape (C, T) or (B, C, T), values in
            [1, vocab_size - 1]
        """
        check_fitted(self, "vocab_", "fit")
        cfg = self._config()
        t, layout = as_signal(x, n_channels=cfg["n_channels"],
                              min_times=cfg["sequence_length"], dtype=torch.float64)
        raw = self._raw_tokens(t)
        label_map = torch.from_numpy(self.vocab_["label_map"])
        return restore(label_map[raw], layout)

    def raw_ids(self, tokens):
        """Map refactored ids back to raw ids; id 0 becomes the first unused raw id.

        When every raw id is in use, id 0 maps to -1 (decoded as silence, i.e. the bias
        only); the reference raises in that case.

        Parameters
        ----------
        tokens : Tensor of int64, any shape

        Returns
        -------
        raw : Tensor of int64, same shape
        """
        check_fitted(self, "vocab_", "fit")
        order = torch.from_numpy(self.vocab_["token_order"])
        unused = np.flatnonzero(self.vocab_["label_map"] == 0)
        zero_id = int(unused[0]) if unused.size else -1
        table = torch.cat([torch.tensor([zero_id]), order])  # refactored id -> raw id
        return table[tokens]

    @torch.no_grad()
    def decode(self, tokens, *, windowed=True):
        """Reconstruct (z-scored) signals from refactored tokens.

        Parameters
        ----------
        tokens : integer array-like of shape (C, T) or (B, C, T), values in
            [0, vocab_size - 1]
        windowed : bool
            True (default, as the reference ``reconstruct_session``): decode windows of
            ``sequence_length`` tiled like :meth:`encode`, each from zero padding; the
            samples the reference drops (past the last multiple of L) come from the window
            anchored at the end. False: one overlap-add over the whole stream (tokens near a
            window edge also shape the samples across it).

        Returns
        -------
        x_hat : same kind as ``tokens``, float32 of shape (C, T) or (B, C, T)
        """
        check_fitted(self, "vocab_", "fit")
        t, layout = as_tokens(tokens, vocab_size=self.vocab_size)
        B, C, T = t.shape
        raw = self.raw_ids(t).reshape(B * C, T)  # (S, T)
        net = self.net_
        L = self._config()["sequence_length"]
        n = net.n_tokens
        device = next(net.parameters()).device

        def synth(ids):  # (S, l) -> (S, l)
            hot = F.one_hot(ids.clamp(min=0), n).float()
            hot = hot * (ids >= 0).unsqueeze(-1).float()  # id -1: no waveform
            return net.synthesize(hot.transpose(1, 2).to(device)).cpu()

        if not windowed or T <= L:
            x_hat = torch.cat([synth(chunk) for chunk in raw.split(_CHUNK)])
        else:
            x_hat = torch.empty((B * C, T))
            n_full = T // L
            full = raw[:, :n_full * L].reshape(B * C * n_full, L)
            rec = torch.cat([synth(chunk) for chunk in full.split(_CHUNK)])
            x_hat[:, :n_full * L] = rec.reshape(B * C, n_full * L)
            if n_full * L < T:  # the tail, from the window anchored at the end
                tail = torch.cat([synth(chunk) for chunk in raw[:, T - L:].split(_CHUNK)])
                x_hat[:, n_full * L:] = tail[:, n_full * L - (T - L):]
        return restore(x_hat.reshape(B, C, T), layout)

    # --------------------------------------------------------------------- save / load

    def save(self, path):
        """Write ``tokenizer.json``, ``weights.pt`` and ``stats.npz`` (vocabulary) to ``path``.

        Parameters
        ----------
        path : str or Path
            Directory (created).
        """
        check_fitted(self, "vocab_", "fit")
        write_config(path, type(self).__name__, self._config())
        torch.save({k: v.detach().cpu() for k, v in self.net_.state_dict().items()},
                   Path(path) / WEIGHTS_FILE)
        write_stats(path, **self.vocab_)

    @classmethod
    def _from_saved(cls, path, config):
        tok = cls(**config)
        net = tok._build_net()
        load_state_dict_strict(net, read_torch_state(Path(path) / WEIGHTS_FILE),
                               Path(path) / WEIGHTS_FILE)
        tok.net_ = net.eval()
        stats = read_stats(path, ["token_order", "token_counts", "total_token_counts",
                                  "label_map"])
        tok.vocab_ = _check_vocab({k: stats[k] for k in
                                   ("token_order", "token_counts", "total_token_counts",
                                    "label_map")}, tok.n_tokens, Path(path) / "stats.npz")
        return tok

    @classmethod
    def from_pretrained(cls, path, *, n_channels=None):
        """Load the released MEG-GPT tokenizer (``config.yaml``, ``model_state.pt``,
        ``vocab.pkl``) strictly.

        Every tensor of ``model_state.pt`` must map onto the network and every shape must
        match; otherwise a :class:`~neurofm.errors.FormatError` lists the missing,
        unexpected and mismatched keys (nothing is half loaded). ``vocab.pkl`` is read with
        the restricted unpickler (numpy arrays and builtins only).

        Parameters
        ----------
        path : str or Path
            Directory holding the three files.
        n_channels : int, optional
            Fix the channel count; by default any count is accepted (the weights are shared
            across channels; the release was trained on 52 parcels, kept in
            ``trained_n_channels``).

        Returns
        -------
        tokenizer : MEGGPTTokenizer
        """
        from ..io._pickle import restricted_load

        path = Path(path)
        cfg = _read_release_config(path / "config.yaml")
        tok = cls(n_tokens=cfg["n_tokens"], rnn_units=cfg["rnn_n_units"],
                  rnn_layers=cfg["rnn_n_layers"], sequence_length=cfg["sequence_length"],
                  token_dim=cfg["token_dim"], padding=cfg["token_kernel_padding"],
                  n_channels=n_channels, standardize=True,
                  token_bias=bool(cfg["token_kernel_bias"]))
        tok.trained_n_channels = cfg.get("n_channels")
        net = tok._build_net()
        state = read_torch_state(path / "model_state.pt")
        load_state_dict_strict(net, _release_to_net_keys(state, cfg["rnn_n_layers"]),
                               path / "model_state.pt")
        tok.net_ = net.eval()
        vocab = restricted_load(path / "vocab.pkl")
        if not isinstance(vocab, dict):
            raise FormatError(f"{path / 'vocab.pkl'}: expected a dict of arrays; found "
                              f"{type(vocab).__name__}")
        tok.vocab_ = _check_vocab(vocab, tok.n_tokens, path / "vocab.pkl")
        return tok


# ------------------------------------------------------------------------------ release I/O

_RELEASE_DEFAULTS = {"rnn_type": "gru", "rnn_n_layers": 1, "token_kernel_bias": True,
                     "token_groups": 1}
_RELEASE_REQUIRED = ("n_tokens", "rnn_n_units", "sequence_length", "token_dim",
                     "token_kernel_padding")


def _read_release_config(file):
    try:
        import yaml
    except ImportError as err:  # pragma: no cover - PyYAML comes with lightning
        raise ImportError("reading config.yaml needs PyYAML (pip install pyyaml)") from err
    if not file.is_file():
        raise FormatError(f"{file}: missing (expected the released tokenizer's config.yaml)")
    try:
        doc = yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        raise FormatError(f"{file}: not valid YAML ({err})") from err
    model = doc.get("model_config") if isinstance(doc, dict) else None
    if not isinstance(model, dict):
        raise FormatError(f"{file}: expected a 'model_config' mapping")
    cfg = {**_RELEASE_DEFAULTS, **model}
    missing = [k for k in _RELEASE_REQUIRED if k not in cfg]
    if missing:
        raise FormatError(f"{file}: model_config lacks {missing}")
    if cfg["rnn_type"] != "gru":
        raise FormatError(f"{file}: rnn_type {cfg['rnn_type']!r} is not supported (only 'gru')")
    if cfg["token_groups"] != 1:
        raise FormatError(f"{file}: token_groups {cfg['token_groups']!r} is not supported "
                          "(only 1)")
    if cfg["token_kernel_padding"] not in ("causal", "same"):
        raise FormatError(f"{file}: token_kernel_padding must be 'causal' or 'same'; found "
                          f"{cfg['token_kernel_padding']!r}")
    return cfg


def _release_to_net_keys(state, n_layers):
    """Rename the released state dict's keys to :class:`MEGGPTTokenizerNet`'s.

    Unknown keys keep their name so that the strict load reports them.
    """
    names = {
        "token_weights_layer.dense_layer.weight": "proj.weight",
        "token_weights_layer.dense_layer.bias": "proj.bias",
        "token_weights_layer.norm_layer.weight": "norm.weight",
        "token_weights_layer.norm_layer.bias": "norm.bias",
        "token_weights_layer._temperature": "temperature",
        "decoder_layer.token_basis_layer.weight": "kernels.weight",
        "decoder_layer.token_basis_layer.bias": "kernels.bias",
    }
    for i in range(n_layers):  # stacked single-layer GRUs == one multi-layer GRU
        for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            names[f"encoder_layer.rnn_layers.{i}.{p}_l0"] = f"gru.{p}_l{i}"
    return {names.get(k, k): v for k, v in state.items()}


def _check_vocab(vocab, n_tokens, source):
    keys = ("token_order", "token_counts", "total_token_counts", "label_map")
    missing = [k for k in keys if k not in vocab]
    if missing:
        raise FormatError(f"{source}: vocabulary lacks {missing}; found {sorted(vocab)}")
    out = {k: np.asarray(vocab[k]) for k in keys}
    order, label_map = out["token_order"].astype(np.int64), out["label_map"].astype(np.int64)
    if label_map.shape != (n_tokens,):
        raise FormatError(f"{source}: label_map must have shape ({n_tokens},); found "
                          f"{label_map.shape}")
    K = order.size
    if order.ndim != 1 or K == 0 or order.min() < 0 or order.max() >= n_tokens \
            or np.unique(order).size != K:
        raise FormatError(f"{source}: token_order must list distinct raw ids in "
                          f"[0, {n_tokens - 1}]; found shape {order.shape}")
    if not np.array_equal(label_map[order], np.arange(1, K + 1)) \
            or np.count_nonzero(label_map) != K:
        raise FormatError(f"{source}: label_map is not the inverse of token_order "
                          "(raw id token_order[i] must map to i + 1, all others to 0)")
    out["token_order"], out["label_map"] = order, label_map
    out["token_counts"] = out["token_counts"].astype(np.int64)
    out["total_token_counts"] = out["total_token_counts"].astype(np.int64)
    return out
