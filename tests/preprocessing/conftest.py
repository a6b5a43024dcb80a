"""Fixtures of the preprocessing tests: real EEG in memory and opened lazily from a store,
and the check that a function gives the same result on a dask-backed input."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def eeg(spkit_eeg):
    """spkit's REAL 14-channel EEG (128 Hz, 16 s)."""
    return spkit_eeg


@pytest.fixture(scope="module")
def eeg_store(tmp_path_factory, spkit_eeg):
    """The same real EEG written to a neurofm store with 2 s chunks."""
    from neurofm.store import write_store

    path = tmp_path_factory.mktemp("pp_store") / "store"
    store = write_store([spkit_eeg], path, chunk_seconds=2.0)
    return store


@pytest.fixture
def eeg_lazy(eeg_store):
    """The real EEG opened from the store as dask arrays chunked along time (2 s chunks)."""
    ds = eeg_store.open(eeg_store.ids[0], chunks={})
    assert ds["signal"].chunks is not None
    return ds


@pytest.fixture(scope="module")
def eeg_1k():
    """Generated 1 kHz broadband EEG-like data (brown noise + 10 Hz + 50 Hz line), 8 ch, 30 s.

    Generated because no real recording at 1 kHz ships in a wheel; used where filter lengths
    need a longer signal than the 16 s real EEG.
    """
    from neurofm.schema import make_recording

    rng = np.random.default_rng(1)
    n = 30_000
    t = np.arange(n) / 1000.0
    x = np.cumsum(rng.standard_normal((8, n)), axis=1) * 0.5
    x += 20 * np.sin(2 * np.pi * 10 * t) + 5 * np.sin(2 * np.pi * 50 * t)
    return make_recording(x, channel=[f"E{i}" for i in range(8)], sfreq=1000.0,
                          modality="eeg", subject="gen")


def _assert_lazy_matches(func, eager, lazy, **tolerance):
    """``func(lazy)`` stays dask-backed and its signal equals ``func(eager)``'s.

    Exactly equal, or within ``numpy.testing.assert_allclose(**tolerance)`` when tolerances
    are given. Returns both outputs (lazy first) for further checks.
    """
    out = func(lazy)
    assert out["signal"].chunks is not None, "a dask-backed input must give a lazy output"
    ref = func(eager)
    if tolerance:
        np.testing.assert_allclose(out["signal"].values, ref["signal"].values, **tolerance)
    else:
        np.testing.assert_array_equal(out["signal"].values, ref["signal"].values)
    return out, ref


@pytest.fixture
def assert_lazy_matches():
    """The lazy-equals-in-memory check, ``assert_lazy_matches(func, eager, lazy, **tol)``."""
    return _assert_lazy_matches
