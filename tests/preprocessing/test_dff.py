"""dF/F baselines against direct implementations of their definitions.

The traces are GENERATED (no real calcium traces ship in any wheel, DATA.md): spikes
convolved with an exponential kernel on a slowly drifting baseline.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from neurofm.errors import DataError, NeurofmError
from neurofm.preprocessing.dff import dff
from neurofm.schema import history, make_recording, validate

FS = 10.0


def _recording(n_cells=5, n_frames=900, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / FS
    kernel = np.exp(-t[:50])
    spikes = rng.random((n_cells, n_frames)) < 0.03
    calcium = np.array([np.convolve(s, kernel)[:n_frames] for s in spikes])
    drift = 300.0 + 20.0 * np.sin(2 * np.pi * t / 80.0)
    F = drift + 100.0 * calcium + 2.0 * rng.standard_normal((n_cells, n_frames))
    return make_recording(F, channel=[f"roi{i}" for i in range(n_cells)], sfreq=FS,
                          modality="calcium", **kwargs)


def suite2p_maximin(F, fs, win_baseline, sig_baseline):
    """suite2p's dcnv.preprocess baseline, transcribed: gaussian [0, sig], min, max."""
    from scipy import ndimage

    win = int(win_baseline * fs)
    flow = ndimage.gaussian_filter(F, [0.0, sig_baseline])
    flow = ndimage.minimum_filter1d(flow, win)
    return ndimage.maximum_filter1d(flow, win)


def running_percentile(x, win, q):
    """Brute force: the floor(q * win / 100)-th smallest value of each centred window
    (reflect padding at the edges), one sample at a time."""
    left = win // 2
    right = win - left - 1
    padded = np.pad(x, (left, right), mode="symmetric")
    rank = min(int(q * win / 100.0), win - 1)
    return np.array([np.sort(padded[i:i + win])[rank] for i in range(x.size)])


def test_maximin_matches_suite2p_definition():
    ds = _recording()
    F = ds["signal"].values.astype(np.float64)
    out = dff(ds, method="maximin", window_s=30.0, sigma=10.0)
    f0 = suite2p_maximin(F, FS, 30.0, 10.0)
    np.testing.assert_allclose(out["signal"].values, ((F - f0) / f0).astype(np.float32),
                               rtol=1e-5, atol=1e-7)
    assert out["signal"].attrs["units"] == "dF/F"
    assert out.attrs["dff_method"] == "maximin" and out.attrs["dff_window_samples"] == 300
    step = history(out)[-1]
    assert step["step"] == "dff" and step["params"]["sigma"] == 10.0
    validate(out)


@pytest.mark.parametrize("window_s", [6.1, 6.0])  # odd and even windows
def test_percentile_matches_brute_force(window_s):
    ds = _recording(n_cells=2, n_frames=300)
    F = ds["signal"].values.astype(np.float64)
    out = dff(ds, method="percentile", window_s=window_s, percentile=8)
    win = int(window_s * FS)
    for i in range(2):
        f0 = running_percentile(F[i], win, 8.0)
        np.testing.assert_allclose(out["signal"].values[i], (F[i] - f0) / f0, rtol=1e-5,
                                   atol=1e-7)
    assert out.attrs["dff_percentile"] == 8.0


def test_zscore_matches_scipy():
    from scipy.stats import zscore

    ds = _recording()
    out = dff(ds, method="zscore")
    np.testing.assert_allclose(out["signal"].values,
                               zscore(ds["signal"].values.astype(np.float64), axis=1),
                               rtol=1e-5, atol=1e-6)
    assert out["signal"].attrs["units"] == "z"


def test_input_is_not_modified():
    ds = _recording()
    before = ds.copy(deep=True)
    dff(ds, method="maximin")
    assert ds.identical(before)


def test_unrecorded_channels_stay_nan_and_undefined_ones_are_marked_bad(caplog):
    ds = _recording(n_cells=4)
    sig = ds["signal"].values.copy()
    sig[1] = np.nan  # a C. elegans slot that was not recorded
    sig[2] = -5.0  # baseline <= 0: dF/F undefined
    ds = ds.assign(signal=(("channel", "time"), sig, ds["signal"].attrs))
    ds = ds.assign_coords(recorded=("channel", np.array([True, False, True, True])))
    with caplog.at_level(logging.WARNING, logger="neurofm"):
        out = dff(ds, method="percentile", window_s=20.0)
    assert np.isnan(out["signal"].values[1]).all()
    assert (out["signal"].values[2] == 0).all()
    assert list(out["bad"].values) == [False, False, True, False]
    assert "roi2" in caplog.text
    assert history(out)[-1]["params"]["undefined_channels"] == ["roi2"]
    validate(out)
    constant = ds.assign(signal=(("channel", "time"), np.where(np.isnan(sig), np.nan, 1.0)
                                 .astype(np.float32), ds["signal"].attrs))
    z = dff(constant, method="zscore")
    assert list(z["bad"].values) == [True, False, True, True]


def test_bad_input():
    ds = _recording()
    with pytest.raises(NeurofmError, match="method must be one of"):
        dff(ds, method="median")
    with pytest.raises(NeurofmError, match="shorter than one sample"):
        dff(ds, window_s=0.01)
    with pytest.raises(NeurofmError, match=r"percentile must be a number in \[0, 100\]"):
        dff(ds, percentile=150)
    with pytest.raises(NeurofmError, match="sigma"):
        dff(ds, method="maximin", sigma=0)
    sig = ds["signal"].values.copy()
    sig[0, 10] = np.nan
    broken = ds.assign(signal=(("channel", "time"), sig, ds["signal"].attrs))
    with pytest.raises(DataError, match="roi0"):
        dff(broken)
    with pytest.raises(NeurofmError, match=r"xarray\.Dataset"):
        dff(sig)


@pytest.mark.parametrize("method", ["percentile", "maximin", "zscore"])
def test_lazy_input_stays_lazy_and_equals_in_memory(method):
    ds = _recording(n_cells=3, n_frames=1500)
    lazy = ds.chunk({"time": 250})
    kwargs = {"method": method, "window_s": 12.0, "sigma": 5.0}
    out = dff(lazy, **kwargs)
    assert out["signal"].chunks is not None
    np.testing.assert_allclose(out["signal"].values, dff(ds, **kwargs)["signal"].values,
                               rtol=1e-5, atol=1e-6)
