"""pick, rereference and crop against MNE on the same data."""

from __future__ import annotations

import mne
import numpy as np
import pytest

from neurofm.errors import DataError, NeurofmError
from neurofm.preprocessing import crop, pick, rereference
from neurofm.schema import history, validate


def _raw(ds, bads=()):
    info = mne.create_info([str(c) for c in ds["channel"].values], ds.attrs["sfreq"], "eeg")
    raw = mne.io.RawArray(np.asarray(ds["signal"].values, dtype=np.float64) * 1e-6, info,
                          verbose="error")
    raw.info["bads"] = list(bads)
    return raw


def _with_bad(ds, names):
    return ds.assign_coords(bad=("channel", np.isin(ds["channel"].values, names)))


def _with_types(ds, mapping):
    types = ds["ch_type"].values.astype(object)
    for i, c in enumerate(ds["channel"].values):
        if str(c) in mapping:
            types[i] = mapping[str(c)]
    return ds.assign_coords(ch_type=("channel", types.astype(str)))


def test_pick_by_type_and_bad(eeg):
    ds = _with_types(_with_bad(eeg, ["F7"]), {"AF3": "eog"})
    out = pick(ds, "eeg")
    names = list(out["channel"].values)
    assert "AF3" not in names and "F7" not in names
    assert len(names) == 12
    np.testing.assert_array_equal(out["signal"].sel(channel="O1").values,
                                  eeg["signal"].sel(channel="O1").values)
    assert out["ch_pos"].shape == (12, 3)
    assert history(out)[-1]["params"]["channels"] == names
    validate(out)
    kept = pick(ds, "eeg", exclude_bad=False)
    assert "F7" in list(kept["channel"].values)
    assert eeg.sizes["channel"] == 14


def test_pick_channels_in_given_order(eeg):
    out = pick(eeg, channels=["O2", "AF3"])
    assert list(out["channel"].values) == ["O2", "AF3"]


def test_pick_errors(eeg):
    with pytest.raises(DataError, match="no channel left"):
        pick(eeg, "meg")
    with pytest.raises(NeurofmError, match="unknown"):
        pick(eeg, "eegg")
    with pytest.raises(DataError, match="XX"):
        pick(eeg, channels=["XX"])


def test_rereference_average_equals_mne_with_bad(eeg):
    ds = _with_bad(eeg, ["T7"])
    out = rereference(ds, "average")
    raw, _ = mne.set_eeg_reference(_raw(ds, bads=["T7"]), "average", copy=True,
                                   verbose="error")
    np.testing.assert_allclose(out["signal"].values, raw.get_data() * 1e6, rtol=0, atol=1e-4)
    # the bad channel is left untouched, as in MNE
    np.testing.assert_array_equal(out["signal"].sel(channel="T7").values,
                                  eeg["signal"].sel(channel="T7").values)


def test_rereference_channels_equals_mne(eeg):
    out = rereference(eeg, ["T7", "T8"])
    raw, _ = mne.set_eeg_reference(_raw(eeg), ["T7", "T8"], copy=True, verbose="error")
    np.testing.assert_allclose(out["signal"].values, raw.get_data() * 1e6, rtol=0, atol=1e-4)
    assert history(out)[-1]["params"]["ref_channels"] == ["T7", "T8"]


def test_rereference_lazy(eeg, eeg_lazy, assert_lazy_matches):
    assert_lazy_matches(lambda ds: rereference(ds, "average"), eeg, eeg_lazy, atol=1e-5)


def test_rereference_errors(eeg):
    with pytest.raises(NeurofmError, match="wrap one name"):
        rereference(eeg, "T7")
    with pytest.raises(DataError, match="ZZ"):
        rereference(eeg, ["ZZ"])
    roi = _with_types(eeg, {str(c): "roi" for c in eeg["channel"].values})
    with pytest.raises(DataError, match="no electrode channels"):
        rereference(roi)


def test_crop_equals_raw_crop(eeg):
    out = crop(eeg, 2.0, 5.5)
    raw = _raw(eeg).crop(2.0, 5.5)
    np.testing.assert_allclose(out["signal"].values, raw.get_data() * 1e6, rtol=1e-6)
    assert out["time"].values[0] == pytest.approx(2.0)
    assert out["time"].values[-1] == pytest.approx(5.5)
    validate(out)


def test_crop_exclusive_tmax_and_events(small_recording):
    out = crop(small_recording, 1.0, 2.0, include_tmax=False)
    assert out.sizes["time"] == 250
    assert list(out["event_description"].values) == ["stim/b"]


def test_crop_lazy(eeg, eeg_lazy, assert_lazy_matches):
    assert_lazy_matches(lambda ds: crop(ds, 1.0, 3.0), eeg, eeg_lazy)


def test_crop_errors(eeg):
    with pytest.raises(NeurofmError, match="tmax"):
        crop(eeg, 5.0, 2.0)
    with pytest.raises(DataError, match="outside"):
        crop(eeg, 100.0, 200.0)
