"""filter, notch and resample against MNE's array routines on the same data."""

from __future__ import annotations

import json

import mne
import numpy as np
import pytest

from neurofm.errors import DataError, NeurofmError
from neurofm.preprocessing import filter, notch, resample
from neurofm.schema import history, validate


def _x(ds):
    return np.asarray(ds["signal"].values, dtype=np.float64)


@pytest.mark.parametrize("l_freq,h_freq", [(1.0, 40.0), (0.5, None), (None, 30.0),
                                           (45.0, 15.0)])
def test_filter_equals_mne_filter_data(eeg, l_freq, h_freq):
    out = filter(eeg, l_freq, h_freq)
    ref = mne.filter.filter_data(_x(eeg), 128.0, l_freq, h_freq, verbose="error")
    np.testing.assert_array_equal(out["signal"].values, ref.astype(np.float32))
    assert out["signal"].dtype == np.float32
    step = history(out)[-1]
    assert step["step"] == "filter"
    assert step["params"]["l_freq"] == l_freq and step["params"]["h_freq"] == h_freq
    validate(out)


def test_filter_iir_equals_mne(eeg):
    out = filter(eeg, 1.0, 40.0, method="iir")
    ref = mne.filter.filter_data(_x(eeg), 128.0, 1.0, 40.0, method="iir", verbose="error")
    np.testing.assert_array_equal(out["signal"].values, ref.astype(np.float32))


def test_filter_does_not_mutate_input(eeg):
    before = eeg["signal"].values.copy()
    hist = eeg.attrs["history"]
    filter(eeg, 1.0, 40.0)
    np.testing.assert_array_equal(eeg["signal"].values, before)
    assert eeg.attrs["history"] == hist


def test_filter_lazy_from_store_matches_in_memory(eeg, eeg_lazy, assert_lazy_matches):
    assert_lazy_matches(lambda ds: filter(ds, 1.0, 40.0), eeg, eeg_lazy, rtol=0, atol=1e-4)


def test_filter_lazy_iir_close_to_in_memory(eeg, eeg_lazy):
    out = filter(eeg_lazy, 1.0, 40.0, method="iir")
    ref = filter(eeg, 1.0, 40.0, method="iir")["signal"].values
    assert out["signal"].chunks is not None
    np.testing.assert_allclose(out["signal"].values, ref, rtol=0,
                               atol=1e-5 * np.abs(ref).max())


def test_filter_lazy_long_filter_small_chunks(eeg_1k):
    """A 1 Hz high-pass at 1 kHz needs 3.3 s taps: chunks of 1 s are merged, result exact."""
    lazy = eeg_1k.chunk({"time": 1000})
    out = filter(lazy, 1.0, 40.0)
    ref = mne.filter.filter_data(_x(eeg_1k), 1000.0, 1.0, 40.0, verbose="error")
    np.testing.assert_allclose(out["signal"].values, ref, rtol=0, atol=1e-4)


def test_filter_leaves_stim_channels(eeg):
    types = eeg["ch_type"].values.astype(object)
    types[0] = "stim"
    ds = eeg.assign_coords(ch_type=("channel", types))
    out = filter(ds, 1.0, 40.0)
    np.testing.assert_array_equal(out["signal"].values[0], ds["signal"].values[0])
    assert not np.allclose(out["signal"].values[1], ds["signal"].values[1])


@pytest.mark.parametrize("kwargs,match", [
    ({"l_freq": 1.0, "h_freq": 64.0}, "h_freq"),
    ({"l_freq": -1.0, "h_freq": 30.0}, "l_freq"),
    ({"l_freq": None, "h_freq": None}, "both None"),
])
def test_filter_bad_frequencies(eeg, kwargs, match):
    with pytest.raises(NeurofmError, match=match):
        filter(eeg, **kwargs)


def test_filter_nan_names_channel(eeg):
    sig = eeg["signal"].values.copy()
    sig[3, 100] = np.nan
    ds = eeg.copy()
    ds["signal"] = (("channel", "time"), sig, dict(eeg["signal"].attrs))
    with pytest.raises(DataError, match=str(eeg["channel"].values[3])):
        filter(ds, 1.0, 40.0)


def test_notch_equals_mne(eeg_1k):
    out = notch(eeg_1k, [50.0, 100.0])
    ref = mne.filter.notch_filter(_x(eeg_1k), 1000.0, [50.0, 100.0], verbose="error")
    np.testing.assert_array_equal(out["signal"].values, ref.astype(np.float32))
    params = json.loads(out.attrs["history"])[-1]["params"]
    assert params["freqs"] == [50.0, 100.0]
    # the 50 Hz line is gone, the 10 Hz rhythm stays
    f, p_in = _psd(eeg_1k)
    _, p_out = _psd(out)
    i50, i10 = np.argmin(abs(f - 50)), np.argmin(abs(f - 10))
    assert p_out[i50] < 1e-2 * p_in[i50]
    assert p_out[i10] == pytest.approx(p_in[i10], rel=0.05)


def _psd(ds):
    from scipy.signal import welch

    f, p = welch(_x(ds), fs=ds.attrs["sfreq"], nperseg=4000)
    return f, p.mean(axis=0)


def test_notch_lazy_matches(eeg_1k):
    lazy = eeg_1k.chunk({"time": 4000})
    out = notch(lazy, 50.0)
    assert out["signal"].chunks is not None
    ref = mne.filter.notch_filter(_x(eeg_1k), 1000.0, 50.0, verbose="error")
    np.testing.assert_allclose(out["signal"].values, ref, rtol=0, atol=1e-4)


def test_notch_above_nyquist_is_rejected(eeg):
    with pytest.raises(NeurofmError, match="Nyquist"):
        notch(eeg, [50.0, 100.0])


@pytest.mark.parametrize("method", ["fft", "polyphase"])
def test_resample_equals_mne(eeg_1k, method):
    out = resample(eeg_1k, 250.0, method=method)
    ref = mne.filter.resample(_x(eeg_1k), up=250.0, down=1000.0, method=method,
                              npad="auto", verbose="error")
    np.testing.assert_array_equal(out["signal"].values, ref.astype(np.float32))
    assert out.attrs["sfreq"] == 250.0
    assert out.sizes["time"] == 7500
    np.testing.assert_allclose(np.diff(out["time"].values), 1 / 250.0)
    validate(out)
    assert history(out)[-1]["params"]["from_sfreq"] == 1000.0


def test_resample_matches_raw_resample(eeg):
    raw = mne.io.RawArray(_x(eeg) * 1e-6, mne.create_info(list(eeg["channel"].values),
                                                          128.0, "eeg"), verbose="error")
    raw.resample(100.0, verbose="error")
    out = resample(eeg, 100.0)
    np.testing.assert_allclose(out["signal"].values, raw.get_data() * 1e6, rtol=1e-5,
                               atol=1e-4)


def test_resample_lazy_polyphase_exact(eeg_1k, assert_lazy_matches):
    out, ref = assert_lazy_matches(lambda ds: resample(ds, 250.0, method="polyphase"), eeg_1k,
                                   eeg_1k.chunk({"time": 3000}), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(out["time"].values, ref["time"].values)


def test_resample_lazy_fft_close(eeg, eeg_lazy):
    out = resample(eeg_lazy, 64.0)
    ref = resample(eeg, 64.0)["signal"].values
    assert out.sizes["time"] == ref.shape[1]
    err = np.abs(out["signal"].values - ref).max()
    assert err < 2e-3 * ref.std()


def test_resample_resamples_other_time_variables(eeg_1k):
    ds = eeg_1k.assign(extra=(("time",), np.linspace(0, 1, eeg_1k.sizes["time"])))
    out = resample(ds, 500.0)
    assert out["extra"].shape == (15000,)
    np.testing.assert_allclose(out["extra"].values[100:-100],
                               np.linspace(0, 1, 30000)[::2][100:-100], atol=1e-3)


def test_resample_rejects_bad_sfreq(eeg):
    with pytest.raises(NeurofmError, match="sfreq"):
        resample(eeg, -5)
