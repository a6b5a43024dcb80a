"""A TFM-Tokenizer-style time-frequency vector-quantized tokenizer (METHODS.md section 4).

Single-channel, one token per STFT frame (1 s windows with 0.5 s hop at 200 Hz by default):

- the magnitude STFT (Hann, ``center=False``, first ``n_freq`` bins) is cut into patches of
  ``freq_patch`` bins, embedded, mixed by a frequency transformer and pooled with sigmoid
  gates (the frequency path);
- a strided ``Conv1d(k=n_fft, stride=hop)`` over the raw samples gives a second per-frame
  vector (the raw path);
- both are concatenated to ``dim``, mixed over time by a transformer, L2-normalized and
  quantized by an EMA codebook (:class:`VectorQuantizerEMA`, straight-through gradients,
  commitment weight ``beta``, dead-code restart);
- a temporal transformer and Linear-Tanh-Linear decode the magnitude spectrum.

Training (:meth:`VQTokenizer.fit`, Lightning) reconstructs the full spectrum from a view
whose spectrogram has a random half of the frequency bins and of the frames masked, and from
the complementary view.

Not a copy of the reference: sizes, the gate and the masking follow the paper's description;
the exact layer widths of TFM-Tokenizer's code are configurable rather than fixed.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_positive, check_positive_int, check_unit_interval
from ..errors import DataError, NeurofmError
from ._base import Tokenizer, register
from ._common import (
    WEIGHTS_FILE,
    as_signal,
    as_tokens,
    check_fitted,
    iter_recordings,
    load_state_dict_strict,
    read_torch_state,
    restore,
    standardize,
    write_config,
)
from .meggpt import window_starts

__all__ = ["VQTokenizer", "VQTokenizerNet", "VectorQuantizerEMA", "codebook_perplexity",
           "codebook_usage"]


def codebook_usage(tokens, codebook_size):
    """Fraction of the codebook that ``tokens`` use.

    Parameters
    ----------
    tokens : Tensor or array of int, any shape
    codebook_size : int

    Returns
    -------
    usage : float in [0, 1]
    """
    t = torch.as_tensor(tokens).reshape(-1).long()
    return float(torch.unique(t).numel()) / float(codebook_size)


def codebook_perplexity(tokens, codebook_size):
    """``exp(entropy)`` of the code histogram of ``tokens`` (1 = one code, K = uniform).

    Parameters
    ----------
    tokens : Tensor or array of int, any shape
    codebook_size : int

    Returns
    -------
    perplexity : float
    """
    t = torch.as_tensor(tokens).reshape(-1).long()
    p = torch.bincount(t, minlength=codebook_size).double()
    p = p / p.sum()
    nz = p[p > 0]
    return float(torch.exp(-(nz * nz.log()).sum()))


class VectorQuantizerEMA(nn.Module):
    """Nearest-code quantizer whose codebook follows an exponential moving average.

    In training mode each forward pass updates, with decay ``d`` (the first one after
    initializing the codes from the batch when ``data_init``)::

        n_k  <- d n_k + (1 - d) * #{z assigned to k}
        m_k  <- d m_k + (1 - d) * sum of the z assigned to k
        e_k  <- m_k / n~_k      (n~ Laplace-smoothed with eps)

    (after quantizing with the codebook as it was), then renormalizes the codes when
    ``normalize`` (inputs are L2-normalized), and replaces
    every code whose ``n_k`` fell below ``dead_threshold`` by a random input vector of the
    batch (dead-code restart). Gradients pass straight through; the loss is
    ``beta * ||z - sg(e)||^2``.

    Parameters
    ----------
    codebook_size : int
        K.
    dim : int
        D.
    decay : float
        EMA decay in [0, 1).
    beta : float
        Commitment weight.
    eps : float
        Laplace smoothing of the counts.
    dead_threshold : float
        EMA count (vectors per batch) below which a code is restarted (0 disables
        restarts); counts start at 1, so an unused code restarts after about
        ``log(dead_threshold) / log(decay)`` steps (69 with the defaults).
    normalize : bool
        Keep codes on the unit sphere (for L2-normalized inputs).
    data_init : bool
        Set the codes to random input vectors of the first training batch (avoids the
        collapse onto a few codes that a random codebook invites).

    Attributes
    ----------
    last_usage, last_perplexity : float
        Codebook usage and perplexity of the last batch.
    n_restarted : int
        Codes restarted by the last training forward pass.
    """

    def __init__(self, codebook_size, dim, decay=0.99, beta=1.0, eps=1e-5,
                 dead_threshold=0.5, normalize=True, data_init=True):
        super().__init__()
        self.codebook_size = codebook_size
        self.dim = dim
        self.decay = decay
        self.beta = beta
        self.eps = eps
        self.dead_threshold = dead_threshold
        self.normalize = normalize
        self.data_init = data_init
        codes = torch.randn(codebook_size, dim)
        if normalize:
            codes = F.normalize(codes, dim=-1)
        self.register_buffer("codebook", codes)  # (K, D)
        self.register_buffer("cluster_size", torch.ones(codebook_size))  # (K,)
        self.register_buffer("embed_sum", codes.clone())  # (K, D)
        self.register_buffer("initialized", torch.tensor(not data_init))
        self.last_usage = 0.0
        self.last_perplexity = 0.0
        self.n_restarted = 0

    def assign(self, z):
        """Nearest code (squared Euclidean distance) of each row of ``z`` (S, D) -> (S,)."""
        d = (z.pow(2).sum(-1, keepdim=True) - 2 * z @ self.codebook.T
             + self.codebook.pow(2).sum(-1))  # (S, K)
        return d.argmin(dim=-1)

    def forward(self, z):
        """Quantize.

        Parameters
        ----------
        z : Tensor of shape (..., D)

        Returns
        -------
        q : Tensor of shape (..., D)
            Straight-through quantized vectors.
        codes : Tensor of shape (...,), int64
        loss : scalar Tensor
            ``beta * mse(z, sg(q))``.
        """
        flat = z.reshape(-1, self.dim)  # (S, D)
        if self.training and not bool(self.initialized):
            self._init_from(flat.detach())
        codes = self.assign(flat.detach())  # (S,)
        q = self.codebook[codes].clone()  # (S, D), the codes the assignment was made with
        if self.training:
            self._ema_update(flat.detach(), codes)
        loss = self.beta * F.mse_loss(flat, q.detach())
        q = flat + (q - flat).detach()  # straight-through
        self.last_usage = codebook_usage(codes, self.codebook_size)
        self.last_perplexity = codebook_perplexity(codes, self.codebook_size)
        return q.reshape(z.shape), codes.reshape(z.shape[:-1]), loss

    @torch.no_grad()
    def _init_from(self, flat):
        """Codes = random vectors of the first training batch (with replacement if short)."""
        n_vectors = flat.shape[0]
        if n_vectors >= self.codebook_size:
            pick = torch.randperm(n_vectors, device=flat.device)[: self.codebook_size]
        else:
            pick = torch.randint(0, n_vectors, (self.codebook_size,), device=flat.device)
        self.codebook.copy_(flat[pick])
        self.embed_sum.copy_(flat[pick])
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat, codes):
        d = self.decay
        onehot = F.one_hot(codes, self.codebook_size).to(flat.dtype)  # (S, K)
        self.cluster_size.mul_(d).add_(onehot.sum(0), alpha=1 - d)
        self.embed_sum.mul_(d).add_(onehot.T @ flat, alpha=1 - d)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        codes_new = self.embed_sum / smoothed.unsqueeze(-1)
        if self.normalize:
            codes_new = F.normalize(codes_new, dim=-1)
        self.codebook.copy_(codes_new)
        dead = self.cluster_size < self.dead_threshold
        self.n_restarted = int(dead.sum())
        if self.n_restarted:
            pick = torch.randint(0, flat.shape[0], (self.n_restarted,), device=flat.device)
            fresh = flat[pick]
            self.codebook[dead] = fresh
            self.embed_sum[dead] = fresh
            self.cluster_size[dead] = 1.0


def _sinusoid(n, dim, device):
    pos = torch.arange(n, device=device, dtype=torch.float32).unsqueeze(1)  # (n, 1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32)
                     * (-math.log(10000.0) / dim))  # (dim/2,)
    pe = torch.zeros(n, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe  # (n, dim)


def _transformer(dim, depth, heads):
    layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class VQTokenizerNet(nn.Module):
    """Encoder, EMA quantizer and spectrum decoder of :class:`VQTokenizer`."""

    def __init__(self, n_fft=200, hop=100, n_freq=100, freq_patch=5, dim=64, depth=4,
                 heads=8, codebook_size=8192, decay=0.99, beta=1.0, dead_threshold=0.5,
                 mask_ratio=0.5):
        super().__init__()
        self.n_fft, self.hop, self.n_freq, self.freq_patch = n_fft, hop, n_freq, freq_patch
        self.mask_ratio = mask_ratio
        half = dim // 2
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.patch_embed = nn.Linear(freq_patch, half)
        self.freq_pos = nn.Parameter(torch.zeros(n_freq // freq_patch, half))
        self.freq_encoder = _transformer(half, depth, max(1, heads // 2))
        self.gate = nn.Linear(half, half)
        self.raw_conv = nn.Conv1d(1, half, kernel_size=n_fft, stride=hop)
        self.time_encoder = _transformer(dim, depth, heads)
        self.to_code = nn.Linear(dim, dim)
        self.quantizer = VectorQuantizerEMA(codebook_size, dim, decay=decay, beta=beta,
                                            dead_threshold=dead_threshold)
        self.time_decoder = _transformer(dim, depth, heads)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, n_freq))

    def spectrogram(self, x):
        """Magnitude STFT scaled by ``n_fft ** -0.5``: (S, T) -> (S, n_freq, n_frames)."""
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, center=False,
                          normalized=True, return_complex=True)  # (S, n_fft/2+1, n_frames)
        return spec.abs()[:, : self.n_freq]

    def encode_latent(self, x, spec):
        """Per-frame unit vectors before quantization: (S, n_frames, dim)."""
        S, Fq, n = spec.shape
        p = self.freq_patch
        patches = spec.permute(0, 2, 1).reshape(S * n, Fq // p, p)  # (S*n, P, p)
        h = self.patch_embed(patches) + self.freq_pos  # (S*n, P, D/2)
        h = self.freq_encoder(h)
        f = (torch.sigmoid(self.gate(h)) * h).mean(dim=1).reshape(S, n, -1)  # (S, n, D/2)
        r = self.raw_conv(x.unsqueeze(1)).transpose(1, 2)  # (S, n, D/2)
        z = torch.cat([f, r], dim=-1)  # (S, n, D)
        z = self.time_encoder(z + _sinusoid(n, z.shape[-1], z.device))
        return F.normalize(self.to_code(z), dim=-1)  # (S, n, D)

    def decode_codes(self, q):
        """Magnitude spectrum from quantized vectors: (S, n, D) -> (S, n_freq, n)."""
        n = q.shape[1]
        h = self.time_decoder(q + _sinusoid(n, q.shape[-1], q.device))
        return self.head(h).transpose(1, 2)  # (S, n_freq, n)

    def forward(self, x, spec_mask=None):
        """Tokens and reconstructed spectrum of single-channel sequences.

        Parameters
        ----------
        x : Tensor of shape (S, T)
        spec_mask : Tensor of shape (S, n_freq, n_frames), optional
            1 where the encoder may see the spectrogram.

        Returns
        -------
        spec_hat : Tensor (S, n_freq, n_frames)
        codes : Tensor (S, n_frames), int64
        vq_loss : scalar Tensor
        spec : Tensor (S, n_freq, n_frames), the target
        """
        spec = self.spectrogram(x)
        seen = spec if spec_mask is None else spec * spec_mask
        z = self.encode_latent(x, seen)
        q, codes, vq_loss = self.quantizer(z)
        return self.decode_codes(q), codes, vq_loss, spec

    def training_loss(self, x):
        """Reconstruction of the full spectrum from a masked view and from its complement."""
        S = x.shape[0]
        n = 1 + (x.shape[-1] - self.n_fft) // self.hop
        freq_keep = (torch.rand(S, self.n_freq, 1, device=x.device) >= self.mask_ratio)
        time_keep = (torch.rand(S, 1, n, device=x.device) >= self.mask_ratio)
        mask = (freq_keep & time_keep).float()  # (S, F, n)
        total = 0.0
        for m in (mask, 1.0 - mask):
            spec_hat, _, vq_loss, spec = self(x, m)
            total = total + F.mse_loss(spec_hat, spec) + vq_loss
        return total / 2, {"usage": self.quantizer.last_usage,
                           "perplexity": self.quantizer.last_perplexity}


@register
class VQTokenizer(Tokenizer):
    """Single-channel time-frequency VQ tokenizer: one token per STFT frame per channel.

    Parameters
    ----------
    n_fft, hop : int
        STFT frame and hop in samples (200 / 100 at 200 Hz: 1 s windows, 0.5 s hop).
    n_freq : int
        Frequency bins kept (the first ``n_freq`` of ``n_fft // 2 + 1``).
    freq_patch : int
        Bins per frequency patch (divides ``n_freq``).
    dim : int
        Latent and code width (even).
    depth, heads : int
        Transformer depth and heads (frequency transformer: half the heads, half the width).
    codebook_size : int
        Vocabulary size (8192 in TFM-Tokenizer).
    decay, beta : float
        EMA decay and commitment weight.
    dead_threshold : float
        EMA usage below which a code is restarted from the batch.
    mask_ratio : float
        Fraction of bins and of frames hidden in the masked training view.
    standardize : bool
        Z-score each channel of each recording first.

    Attributes
    ----------
    net_ : VQTokenizerNet
    history_ : list of dict
        Per-epoch ``train_loss``, ``train_usage``, ``train_perplexity``.
    """

    def __init__(self, n_fft=200, hop=100, n_freq=100, freq_patch=5, dim=64, depth=4,
                 heads=8, codebook_size=8192, decay=0.99, beta=1.0, dead_threshold=0.5,
                 mask_ratio=0.5, standardize=True):
        self.n_fft = n_fft
        self.hop = hop
        self.n_freq = n_freq
        self.freq_patch = freq_patch
        self.dim = dim
        self.depth = depth
        self.heads = heads
        self.codebook_size = codebook_size
        self.decay = decay
        self.beta = beta
        self.dead_threshold = dead_threshold
        self.mask_ratio = mask_ratio
        self.standardize = standardize
        self.net_ = None
        self.history_ = []

    def _config(self):
        cfg = {k: check_positive_int(k, getattr(self, k))
               for k in ("n_fft", "hop", "n_freq", "freq_patch", "dim", "depth", "heads",
                         "codebook_size")}
        if cfg["n_freq"] > cfg["n_fft"] // 2 + 1:
            raise NeurofmError(f"n_freq must be <= n_fft // 2 + 1 = {cfg['n_fft'] // 2 + 1}; "
                               f"got {cfg['n_freq']}")
        if cfg["n_freq"] % cfg["freq_patch"]:
            raise NeurofmError(f"freq_patch must divide n_freq; got {cfg['freq_patch']} and "
                               f"{cfg['n_freq']}")
        if cfg["dim"] % 2 or cfg["dim"] % cfg["heads"] or (cfg["dim"] // 2) % max(
                1, cfg["heads"] // 2):
            raise NeurofmError(f"dim must be even and divisible by heads (and dim/2 by "
                               f"heads/2); got dim={cfg['dim']}, heads={cfg['heads']}")
        decay = float(self.decay)
        if not 0.0 <= decay < 1.0:
            raise NeurofmError(f"decay must be in [0, 1); got {self.decay!r}")
        cfg.update(decay=decay, beta=check_positive("beta", self.beta),
                   dead_threshold=float(self.dead_threshold),
                   mask_ratio=float(check_unit_interval("mask_ratio", self.mask_ratio)),
                   standardize=bool(self.standardize))
        return cfg

    def _build_net(self):
        cfg = self._config()
        cfg.pop("standardize")
        return VQTokenizerNet(**cfg)

    @property
    def vocab_size(self):
        """``codebook_size``."""
        return int(self.codebook_size)

    def n_frames(self, n_times):
        """Tokens per channel for ``n_times`` samples: ``1 + (n_times - n_fft) // hop``."""
        return 1 + (int(n_times) - int(self.n_fft)) // int(self.hop)

    def _signal(self, x):
        t, layout = as_signal(x, min_times=int(self.n_fft))
        if self.standardize:
            t = standardize(t)
        return t, layout

    def spectrogram(self, x):
        """The target of :meth:`decode`: magnitude STFT of the (standardized) signal.

        Parameters
        ----------
        x : array-like of shape (C, T) or (B, C, T)

        Returns
        -------
        spec : same kind, float32 of shape (C, n_freq, n_frames) or (B, C, n_freq, n_frames)
        """
        self._config()
        net = self.net_ if self.net_ is not None else self._build_net()
        t, layout = self._signal(x)
        B, C, T = t.shape
        with torch.no_grad():
            spec = net.spectrogram(t.reshape(B * C, T))
        return restore(spec.reshape(B, C, *spec.shape[1:]), layout)

    def fit(self, data, *, window_frames=10, max_epochs=20, batch_size=64, lr=1e-3, seed=0,
            accelerator="cpu", devices=1, verbose=False):
        """Train with Lightning on single-channel windows of ``window_frames`` frames.

        Parameters
        ----------
        data : array-like of shape (C, T) or (B, C, T), or a list of (C, T) recordings
        window_frames : int
            Frames per training window (``n_fft + hop * (window_frames - 1)`` samples).
        max_epochs, batch_size : int
        lr : float
            Adam learning rate.
        seed : int
        accelerator, devices
            Passed to the Lightning Trainer.
        verbose : bool

        Returns
        -------
        self
        """
        window_frames = check_positive_int("window_frames", window_frames)
        length = int(self.n_fft) + int(self.hop) * (window_frames - 1)
        windows = []
        for i, rec in enumerate(iter_recordings(data)):
            if rec.shape[-1] < length:
                raise DataError(f"data[{i}] has {rec.shape[-1]} samples; training windows of "
                                f"{window_frames} frames need {length}")
            z = standardize(rec[None])[0] if self.standardize else rec
            windows.extend(z[:, s:s + length] for s in window_starts(z.shape[-1], length))
        train = torch.cat(windows, dim=0)  # (n_windows, length)
        from ..training.tokenizer import train_tokenizer_net

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = self._build_net()
        self.history_ = train_tokenizer_net(net, train, max_epochs=max_epochs,
                                            batch_size=batch_size, lr=lr, seed=seed,
                                            accelerator=accelerator, devices=devices,
                                            verbose=verbose)
        self.net_ = net.cpu().eval()
        return self

    @torch.no_grad()
    def encode(self, x):
        """One code per frame per channel.

        Parameters
        ----------
        x : array-like of shape (C, T) or (B, C, T), T >= n_fft

        Returns
        -------
        tokens : same kind, int64 of shape (C, n_frames) or (B, C, n_frames)
        """
        check_fitted(self, "net_", "fit")
        t, layout = self._signal(x)
        B, C, T = t.shape
        net = self.net_.eval()
        seqs = t.reshape(B * C, T)
        z = net.encode_latent(seqs, net.spectrogram(seqs))  # (S, n, D)
        codes = net.quantizer.assign(z.reshape(-1, z.shape[-1]))
        return restore(codes.reshape(B, C, -1), layout)

    @torch.no_grad()
    def decode(self, tokens):
        """Magnitude spectra from codes.

        Parameters
        ----------
        tokens : integer array-like of shape (C, n_frames) or (B, C, n_frames)

        Returns
        -------
        spec : same kind, float32 of shape (C, n_freq, n_frames) or
            (B, C, n_freq, n_frames)
        """
        check_fitted(self, "net_", "fit")
        t, layout = as_tokens(tokens, vocab_size=self.vocab_size)
        B, C, n = t.shape
        net = self.net_.eval()
        q = net.quantizer.codebook[t.reshape(B * C, n)]  # (S, n, D)
        spec = net.decode_codes(q)  # (S, F, n)
        return restore(spec.reshape(B, C, *spec.shape[1:]), layout)

    def pve(self, x):
        """Percentage of the energy of :meth:`spectrogram` explained by ``decode(encode(x))``.

        ``100 * (1 - sum((S - S_hat)**2) / sum(S**2))``: spectra are not centred (their
        time-mean per bin is most of what a tokenizer must get right).

        Returns
        -------
        pve : float (percent)
        """
        spec = torch.as_tensor(self.spectrogram(x)).double()
        spec_hat = torch.as_tensor(self.decode(self.encode(x))).double()
        return 100.0 * (1.0 - float(((spec - spec_hat) ** 2).sum()) / float((spec ** 2).sum()))

    def codebook_stats(self, x):
        """Codebook usage (fraction of codes used) and perplexity on ``x``.

        Returns
        -------
        stats : dict with ``usage`` and ``perplexity``
        """
        tokens = self.encode(x)
        return {"usage": codebook_usage(tokens, self.vocab_size),
                "perplexity": codebook_perplexity(tokens, self.vocab_size)}

    def save(self, path):
        """Write ``tokenizer.json`` and ``weights.pt`` (codebook and EMA state included)."""
        check_fitted(self, "net_", "fit")
        write_config(path, type(self).__name__, self._config())
        torch.save({k: v.detach().cpu() for k, v in self.net_.state_dict().items()},
                   Path(path) / WEIGHTS_FILE)

    @classmethod
    def _from_saved(cls, path, config):
        tok = cls(**config)
        net = tok._build_net()
        load_state_dict_strict(net, read_torch_state(Path(path) / WEIGHTS_FILE),
                               Path(path) / WEIGHTS_FILE)
        tok.net_ = net.eval()
        return tok
