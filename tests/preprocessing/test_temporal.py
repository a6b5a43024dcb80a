"""temporal_resample (Brain-JEPA clip-and-linspace rule) and windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from neurofm.errors import DataError, NeurofmError
from neurofm.preprocessing import clip_frame_indices, temporal_resample, windows
from neurofm.schema import history, make_recording, validate


def _reference_indices(n_times, n_frames, stride, start):
    """The reference's _temporal_sampling index rule, written with torch as it does."""
    clip = n_frames * stride
    index = torch.linspace(start, start + clip - 1, n_frames)
    return torch.clamp(index, 0, n_times - 1).long().numpy()


@pytest.fixture(scope="module")
def fmri_like():
    """Real resting-state ROI series from nitime (250 TRs x 31 ROIs, TR 1.89 s)."""
    import pandas as pd

    from neurofm.datasets import package_file

    table = pd.read_csv(package_file("nitime", "data", "fmri_timeseries.csv"))
    return make_recording(table.to_numpy(dtype=float).T, channel=list(table.columns),
                          sfreq=1 / 1.89, modality="fmri", t_r=1.89, subject="nitime")


@pytest.mark.parametrize("start", [0.0, 3.0, 17.25, 60.9])
def test_indices_match_reference(start):
    np.testing.assert_array_equal(clip_frame_indices(250, 60, 3, start),
                                  _reference_indices(250, 60, 3, start))


def test_short_recording_repeats_last_frame():
    idx = clip_frame_indices(100, 40, 3, 0.0)
    np.testing.assert_array_equal(idx, _reference_indices(100, 40, 3, 0.0))
    assert idx[-1] == 99 and (idx == 99).sum() > 1


def test_temporal_resample(fmri_like):
    out = temporal_resample(fmri_like, 60, 3, start=10.0)
    idx = clip_frame_indices(250, 60, 3, 10.0)
    np.testing.assert_array_equal(out["signal"].values, fmri_like["signal"].values[:, idx])
    np.testing.assert_array_equal(out["frame"].values, idx)
    assert out.attrs["t_r"] == pytest.approx(1.89 * 3)
    assert out.attrs["sfreq"] == pytest.approx(1 / (1.89 * 3))
    validate(out)
    assert history(out)[-1]["params"]["start"] == 10.0


def test_temporal_resample_random_start_is_seeded(fmri_like):
    a = temporal_resample(fmri_like, 60, 3, seed=1)
    b = temporal_resample(fmri_like, 60, 3, seed=1)
    np.testing.assert_array_equal(a["frame"].values, b["frame"].values)
    start = history(a)[-1]["params"]["start"]
    assert 0 <= start <= 250 - 180


def test_temporal_resample_lazy(fmri_like, assert_lazy_matches):
    assert_lazy_matches(lambda ds: temporal_resample(ds, 60, 3, start=0), fmri_like,
                        fmri_like.chunk({"time": 50}))


def test_temporal_resample_errors(fmri_like):
    with pytest.raises(NeurofmError, match="n_frames"):
        temporal_resample(fmri_like, 0, 3)
    with pytest.raises(NeurofmError, match="start"):
        temporal_resample(fmri_like, 10, 3, start=-1)


def test_windows(eeg):
    w = windows(eeg, 2.0, 1.0)
    assert w["signal"].dims == ("window", "channel", "time")
    assert w.sizes["window"] == 15 and w.sizes["time"] == 256
    np.testing.assert_array_equal(w["signal"].values[3], eeg["signal"].values[:, 384:640])
    np.testing.assert_allclose(w["window_start"].values, np.arange(15) * 1.0)
    assert history(w)[-1]["params"]["n_windows"] == 15


def test_windows_lazy(eeg, eeg_lazy, assert_lazy_matches):
    assert_lazy_matches(lambda ds: windows(ds, 2.0, 0.5), eeg, eeg_lazy)


def test_windows_too_long(eeg):
    with pytest.raises(DataError, match="longer than the recording"):
        windows(eeg, 20.0, 1.0)


@given(n_times=st.integers(10, 400), length=st.integers(1, 50), stride=st.integers(1, 30))
def test_windows_count_and_content(n_times, length, stride):
    x = np.arange(2 * n_times, dtype=float).reshape(2, n_times)
    ds = make_recording(x, channel=["a", "b"], sfreq=10.0, modality="eeg")
    if length > n_times:
        with pytest.raises(DataError):
            windows(ds, length / 10.0, stride / 10.0)
        return
    w = windows(ds, length / 10.0, stride / 10.0)
    n_win = 1 + (n_times - length) // stride
    assert w["signal"].shape == (n_win, 2, length)
    last = (n_win - 1) * stride
    np.testing.assert_array_equal(w["signal"].values[-1], x[:, last:last + length])
