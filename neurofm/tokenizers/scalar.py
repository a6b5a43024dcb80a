"""Fixed per-sample tokenizers: mu-law companding and quantile bins (the MEG-GPT baselines).

Both give one token per sample per channel (tokens have the signal's shape) and decode each
token to the centre of its bin.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._checks import check_positive, check_positive_int
from .._logging import warn
from ..errors import DataError, NeurofmError
from ._base import Tokenizer, register
from ._common import (
    as_signal,
    as_tokens,
    check_fitted,
    iter_recordings,
    read_stats,
    restore,
    standardize,
    write_config,
    write_stats,
)

__all__ = ["MuLawTokenizer", "QuantileTokenizer"]


@register
class MuLawTokenizer(Tokenizer):
    """WaveNet-style mu-law tokenizer: ``mu + 1`` levels on a max-abs normalized signal.

    ``y = sign(u) * log(1 + mu |u|) / log(1 + mu)`` with ``u = x / scale`` clipped to
    [-1, 1]; the token is ``round((y + 1) / 2 * mu)`` and decodes to the inverse transform of
    the level ``2 * token / mu - 1``. In the companded domain the error is at most ``1 / mu``.

    Parameters
    ----------
    mu : int
        Companding constant; the vocabulary has ``mu + 1`` tokens (256 for mu = 255).
    scale : float, optional
        The max-abs normalizer. When None, :meth:`fit` learns it as ``max |x|`` over the
        training data (after standardization when ``standardize``).
    standardize : bool
        Z-score each channel of each recording over time before companding; :meth:`decode`
        then returns z-scores.

    Attributes
    ----------
    scale_ : float
        The normalizer in use after :meth:`fit` (or ``scale``).
    """

    def __init__(self, mu=255, scale=None, standardize=False):
        self.mu = mu
        self.scale = scale
        self.standardize = standardize
        self.scale_ = None

    def _check_params(self):
        mu = check_positive_int("mu", self.mu)
        if self.scale is not None:
            check_positive("scale", self.scale)
        return mu

    def fit(self, data):
        """Learn ``scale_ = max |x|`` over the training recordings (unless ``scale`` is given).

        Parameters
        ----------
        data : array-like of shape (C, T) or (B, C, T), or a list of (C, T) recordings

        Returns
        -------
        self
        """
        self._check_params()
        if self.scale is not None:
            self.scale_ = float(self.scale)
            return self
        peak = 0.0
        for rec in iter_recordings(data):
            rec = standardize(rec[None])[0] if self.standardize else rec
            peak = max(peak, float(rec.abs().max()))
        if peak == 0.0:
            raise DataError("data is all zeros: mu-law needs a non-zero max |x| to scale by")
        self.scale_ = peak
        return self

    def _scale(self):
        if self.scale_ is not None:
            return self.scale_
        if self.scale is not None:
            return float(check_positive("scale", self.scale))
        raise NeurofmError("this MuLawTokenizer has no scale: call fit(data) or pass scale=")

    @property
    def vocab_size(self):
        """``mu + 1``."""
        return self._check_params() + 1

    def encode(self, x):
        """Tokens of shape (C, T) or (B, C, T), int64 in [0, mu].

        Parameters
        ----------
        x : array-like of shape (C, T) or (B, C, T)

        Returns
        -------
        tokens : same kind as ``x``, int64, same shape
        """
        mu = self._check_params()
        t, layout = as_signal(x, dtype=torch.float64)
        if self.standardize:
            t = standardize(t).double()
        u = (t / self._scale()).clamp(-1.0, 1.0)
        y = torch.sign(u) * torch.log1p(mu * u.abs()) / math.log1p(mu)
        tokens = torch.round((y + 1.0) * (mu / 2.0)).long().clamp(0, mu)
        return restore(tokens, layout)

    def decode(self, tokens):
        """Bin-centre values of shape (C, T) or (B, C, T), float32.

        Parameters
        ----------
        tokens : integer array-like of shape (C, T) or (B, C, T), values in [0, mu]

        Returns
        -------
        x : same kind as ``tokens``, float32
        """
        mu = self._check_params()
        t, layout = as_tokens(tokens, vocab_size=mu + 1)
        y = t.double() * (2.0 / mu) - 1.0
        u = torch.sign(y) * torch.expm1(y.abs() * math.log1p(mu)) / mu
        return restore((u * self._scale()).float(), layout)

    def save(self, path):
        """Write ``tokenizer.json`` (parameters and the fitted scale) into directory ``path``."""
        self._check_params()
        write_config(path, type(self).__name__,
                     {"mu": int(self.mu), "scale": self.scale, "standardize": self.standardize,
                      "scale_": self.scale_})

    @classmethod
    def _from_saved(cls, path, config):
        tok = cls(mu=config["mu"], scale=config["scale"], standardize=config["standardize"])
        tok.scale_ = config["scale_"]
        return tok


@register
class QuantileTokenizer(Tokenizer):
    """Equal-count bins learned from training data (Chronos-style when standardized).

    :meth:`fit` sets ``n_bins + 1`` edges at the quantiles ``0, 1/n_bins, ..., 1`` of the
    training values; a value in ``[edges_[i], edges_[i+1])`` becomes token ``i`` (values
    beyond the training range go to the first or last token) and decodes to the bin centre
    ``(edges_[i] + edges_[i+1]) / 2``. Inside the training range the error is therefore at
    most half the width of the bin.

    Parameters
    ----------
    n_bins : int
        Vocabulary size.
    standardize : bool
        Z-score each channel of each recording over time first (the reference baseline);
        :meth:`decode` then returns z-scores.
    max_values : int
        Largest number of training values the quantiles are computed from; larger training
        sets are subsampled evenly (deterministically).

    Attributes
    ----------
    edges_ : ndarray of shape (n_bins + 1,)
    centres_ : ndarray of shape (n_bins,)
    """

    def __init__(self, n_bins=256, standardize=True, max_values=20_000_000):
        self.n_bins = n_bins
        self.standardize = standardize
        self.max_values = max_values
        self.edges_ = None
        self.centres_ = None

    def fit(self, data):
        """Learn the bin edges from training recordings.

        Parameters
        ----------
        data : array-like of shape (C, T) or (B, C, T), or a list of (C, T) recordings

        Returns
        -------
        self
        """
        n_bins = check_positive_int("n_bins", self.n_bins)
        if n_bins < 2:
            raise NeurofmError(f"n_bins must be >= 2; got {n_bins}")
        max_values = check_positive_int("max_values", self.max_values)
        values = []
        for rec in iter_recordings(data):
            rec = standardize(rec[None])[0] if self.standardize else rec
            values.append(rec.double().reshape(-1).numpy())
        values = np.concatenate(values)
        if values.size > max_values:
            values = values[np.linspace(0, values.size - 1, max_values).astype(np.int64)]
        edges = np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1))
        n_distinct = np.unique(edges).size
        if n_distinct < n_bins + 1:
            warn(f"QuantileTokenizer: the training data have too few distinct values for "
                 f"n_bins={n_bins}; {n_bins + 1 - n_distinct} bin edge(s) coincide and those "
                 "bins will never be used")
        self.edges_ = edges
        self.centres_ = 0.5 * (edges[:-1] + edges[1:])
        return self

    @property
    def vocab_size(self):
        """``n_bins``."""
        return int(self.n_bins)

    def encode(self, x):
        """Tokens of shape (C, T) or (B, C, T), int64 in [0, n_bins - 1].

        Parameters
        ----------
        x : array-like of shape (C, T) or (B, C, T)

        Returns
        -------
        tokens : same kind as ``x``, int64, same shape
        """
        check_fitted(self, "edges_")
        t, layout = as_signal(x, dtype=torch.float64)
        if self.standardize:
            t = standardize(t).double()
        inner = torch.from_numpy(self.edges_[1:-1])
        tokens = torch.bucketize(t, inner, right=True)
        return restore(tokens.long(), layout)

    def decode(self, tokens):
        """Bin centres of shape (C, T) or (B, C, T), float32.

        Parameters
        ----------
        tokens : integer array-like of shape (C, T) or (B, C, T), values in [0, n_bins - 1]

        Returns
        -------
        x : same kind as ``tokens``, float32
        """
        check_fitted(self, "edges_")
        t, layout = as_tokens(tokens, vocab_size=self.vocab_size)
        centres = torch.from_numpy(self.centres_).float()
        return restore(centres[t], layout)

    def save(self, path):
        """Write ``tokenizer.json`` and ``stats.npz`` (the edges) into directory ``path``."""
        check_fitted(self, "edges_")
        write_config(path, type(self).__name__,
                     {"n_bins": int(self.n_bins), "standardize": self.standardize,
                      "max_values": int(self.max_values)})
        write_stats(path, edges=self.edges_)

    @classmethod
    def _from_saved(cls, path, config):
        tok = cls(n_bins=config["n_bins"], standardize=config["standardize"],
                  max_values=config["max_values"])
        edges = read_stats(path, ["edges"])["edges"].astype(np.float64)
        if edges.shape != (tok.n_bins + 1,) or np.any(np.diff(edges) < 0):
            from ..errors import FormatError

            raise FormatError(f"{path}: edges must be {tok.n_bins + 1} non-decreasing values; "
                              f"found shape {edges.shape}")
        tok.edges_ = edges
        tok.centres_ = 0.5 * (edges[:-1] + edges[1:])
        return tok
