"""The interface every tokenizer follows and the registry that ``load`` dispatches on."""

from __future__ import annotations

from ._common import as_signal, pve, read_config, restore, standardize

#: class name -> class, filled by ``register``; ``neurofm.tokenizers.load`` reads it.
REGISTRY = {}


def register(cls):
    REGISTRY[cls.__name__] = cls
    return cls


class Tokenizer:
    """Base class: ``fit`` / ``encode`` / ``decode`` / ``vocab_size`` / ``save`` / ``load``.

    Signals are ``(C, T)`` or ``(B, C, T)`` in the canonical (channel, time) order; results come
    back as numpy arrays for numpy (or xarray) input and as tensors for tensor input.
    Subclasses set ``standardize`` when they work on per-recording z-scores; ``decode`` then
    returns z-scores, and :meth:`normalize` gives the matching target.
    """

    standardize = False

    def fit(self, data):
        """Learn what the tokenizer needs from training data; returns self."""
        raise NotImplementedError

    def encode(self, x):
        raise NotImplementedError

    def decode(self, tokens):
        raise NotImplementedError

    @property
    def vocab_size(self):
        raise NotImplementedError

    def save(self, path):
        raise NotImplementedError

    @classmethod
    def load(cls, path):
        """Load a tokenizer saved with :meth:`save` (the class is checked)."""
        config = read_config(path, cls.__name__)
        return cls._from_saved(path, config)

    @classmethod
    def _from_saved(cls, path, config):
        raise NotImplementedError

    def normalize(self, x):
        """The signal in the units :meth:`decode` returns.

        Per-recording channel z-scores (population std over time) when ``standardize`` is
        True, the signal itself otherwise.

        Parameters
        ----------
        x : array-like of shape (C, T) or (B, C, T)

        Returns
        -------
        z : same kind and shape as ``x``, float32
        """
        t, layout = as_signal(x)
        if self.standardize:
            t = standardize(t)
        return restore(t, layout)

    def pve(self, x):
        """Percentage of variance of ``normalize(x)`` explained by ``decode(encode(x))``.

        Parameters
        ----------
        x : array-like of shape (C, T) or (B, C, T)

        Returns
        -------
        pve : float (percent)
        """
        return pve(self.normalize(x), self.decode(self.encode(x)))
