"""Helpers shared by the tokenizer tests and fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

RELEASE = Path(__file__).resolve().parents[1] / "data" / "meg-gpt-tokenizer"


def meg_like(rng, n_channels, n_times, sfreq=250.0):
    """Generated MEG-like channels: amplitude-modulated alpha, beta and 1/f noise.

    Returns
    -------
    x : ndarray of shape (n_channels, n_times), float32
    """
    t = np.arange(n_times) / sfreq
    x = np.empty((n_channels, n_times))
    freqs = np.maximum(np.arange(n_times // 2 + 1), 1.0)
    for c in range(n_channels):
        env = 1 + 0.6 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 6.3))
        s = env * np.sin(2 * np.pi * rng.uniform(8, 12) * t + rng.uniform(0, 6.3))
        s += 0.5 * np.sin(2 * np.pi * rng.uniform(15, 30) * t + rng.uniform(0, 6.3))
        pink = np.fft.irfft(np.fft.rfft(rng.standard_normal(n_times)) / np.sqrt(freqs), n_times)
        s += 0.5 * pink / pink.std()
        x[c] = s * rng.uniform(0.5, 5.0) + rng.uniform(-2, 2)
    return x.astype(np.float32)
