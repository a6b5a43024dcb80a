"""The canonical recording: make_recording, validate (one test per rule), append_history."""

from __future__ import annotations

import json

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given

from neurofm.errors import DataError, NeurofmError, SchemaError
from neurofm.schema import (
    CH_TYPES,
    MODALITIES,
    append_history,
    history,
    make_recording,
    validate,
)


def test_make_recording_layout(small_recording):
    ds = small_recording
    assert ds["signal"].dims == ("channel", "time")
    assert ds["signal"].dtype == np.float32
    assert ds["signal"].attrs["units"] == "uV"
    assert ds["time"].dtype == np.float64
    np.testing.assert_allclose(np.diff(ds["time"].values), 1 / 250.0)
    assert ds["ch_pos"].shape == (8, 3) and np.isnan(ds["ch_pos"].values).all()
    assert ds["bad"].dtype == bool and not ds["bad"].any()
    assert list(ds["event_description"].values) == ["stim/a", "stim/b"]
    assert ds.attrs["schema_version"] == 1 and json.loads(ds.attrs["history"]) == []
    assert ds.attrs["modality"] == "eeg" and ds.attrs["subject"] == "01"
    validate(ds)


def test_make_recording_copies_input():
    x = np.ones((2, 10), dtype=np.float32)
    ds = make_recording(x, channel=["a", "b"], sfreq=10, modality="eeg")
    ds["signal"].values[0, 0] = 5
    assert x[0, 0] == 1


def test_make_recording_mixed_units_and_positions():
    ds = make_recording(np.zeros((2, 4)), channel=["MEG1", "MEG2"], sfreq=100.0,
                        modality="meg", ch_type=["meg_mag", "meg_grad"],
                        ch_pos={"MEG1": [0, 0, 0.1]}, bad=["MEG2"])
    assert ds["signal"].attrs["units"] == "mixed"
    assert list(ds["ch_units"].values) == ["fT", "fT/cm"]
    np.testing.assert_array_equal(ds["ch_pos"].values[0], [0, 0, 0.1])
    assert np.isnan(ds["ch_pos"].values[1]).all()
    assert list(ds["bad"].values) == [False, True]
    validate(ds)


@pytest.mark.parametrize("kwargs, match", [
    ({"signal": np.zeros(5)}, "2-D"),
    ({"channel": ["a"]}, "1 names but signal has 2"),
    ({"channel": ["a", "a"]}, "unique"),
    ({"modality": "xray"}, "modality"),
    ({"sfreq": -1}, "sfreq"),
    ({"ch_type": "banana"}, "ch_type"),
    ({"ch_pos": np.zeros((3, 3))}, "ch_pos"),
    ({"bad": ["zz"]}, "bad"),
    ({"events": [(1.0, 2.0)]}, "events"),
    ({"nested": {"a": 1}}, "nested"),
])
def test_make_recording_rejects(kwargs, match):
    base = {"signal": np.zeros((2, 5)), "channel": ["a", "b"], "sfreq": 10.0, "modality": "eeg"}
    base.update(kwargs)
    signal = base.pop("signal")
    with pytest.raises(NeurofmError, match=match):
        make_recording(signal, **base)


# ------------------------------------------------------------------ validate: one rule each
def _problems(ds):
    with pytest.raises(SchemaError) as info:
        validate(ds)
    return info.value.problems


def test_rule_not_a_dataset():
    with pytest.raises(SchemaError, match=r"expected an xarray\.Dataset"):
        validate(np.zeros(3))


def test_rule_missing_signal(small_recording):
    assert any("missing data variable 'signal'" in p
               for p in _problems(small_recording.drop_vars("signal")))


def test_rule_signal_dims(small_recording):
    ds = small_recording.copy()
    ds["signal"] = ds["signal"].transpose("time", "channel")
    assert any("dims ('channel', 'time')" in p for p in _problems(ds))


def test_rule_extra_dim(small_recording):
    ds = small_recording.copy()
    ds["signal"] = ds["signal"].expand_dims(trial=2)
    assert any("extra ['trial']" in p for p in _problems(ds))


def test_rule_signal_dtype(small_recording):
    ds = small_recording.copy()
    ds["signal"] = ds["signal"].astype("float64")
    assert any("float32; found float64" in p for p in _problems(ds))


def test_rule_units(small_recording):
    ds = small_recording.copy()
    ds["signal"].attrs = {}
    assert any("units" in p for p in _problems(ds))


def test_rule_non_monotonic_time(small_recording):
    t = small_recording["time"].values.copy()
    t[[10, 11]] = t[[11, 10]]
    ds = small_recording.assign_coords(time=t)
    assert any("strictly increasing" in p and "sample 11" in p for p in _problems(ds))


def test_rule_time_spacing_vs_sfreq(small_recording):
    ds = small_recording.copy()
    ds.attrs["sfreq"] = 100.0
    assert any("inconsistent with sfreq=100.0" in p for p in _problems(ds))


def test_rule_dropped_samples_allowed(small_recording):
    ds = small_recording.isel(time=np.r_[0:100, 150:1000])  # e.g. scrubbed fMRI volumes
    validate(ds)


def test_rule_nan_signal_reported_nan_positions_allowed(small_recording):
    ds = small_recording.copy(deep=True)
    ds["ch_pos"].values[:] = np.nan
    validate(ds)
    ds["signal"].values[2, 5] = np.nan
    ds["signal"].values[3, 7] = np.inf
    problems = _problems(ds)
    assert any("2 NaN/Inf values in 2 channel(s): E2, E3" in p for p in problems)
    validate(ds, check_values=False)


def test_rule_nan_allowed_where_not_recorded(small_recording):
    ds = small_recording.copy(deep=True)
    ds["signal"].values[2] = np.nan
    recorded = np.ones(8, bool)
    recorded[2] = False
    ds = ds.assign_coords(recorded=("channel", recorded))
    validate(ds)
    ds["signal"].values[1, 0] = np.nan
    assert any("in 1 channel(s): E1" in p for p in _problems(ds))


def test_rule_non_json_attrs(small_recording):
    ds = small_recording.copy()
    ds.attrs["meta"] = {"nested": 1}
    assert any("'meta' is not a JSON scalar" in p for p in _problems(ds))


def test_rule_unknown_modality_and_ch_type(small_recording):
    ds = small_recording.copy()
    ds.attrs["modality"] = "pet"
    ds = ds.assign_coords(ch_type=("channel", ["eeg"] * 7 + ["laser"]))
    problems = _problems(ds)
    assert any("unknown modality 'pet'" in p for p in problems)
    assert any("unknown ch_type values ['laser']" in p for p in problems)


def test_rule_missing_coords(small_recording):
    ds = small_recording.drop_vars(["ch_type", "bad", "ch_pos"])
    problems = _problems(ds)
    assert len([p for p in problems if p.startswith("missing coordinate")]) == 3


def test_rule_ch_pos_shape_dtype(small_recording):
    ds = small_recording.assign_coords(ch_pos=(("channel", "space"),
                                               np.zeros((8, 3), dtype=np.float32)))
    assert any("ch_pos must be float64" in p for p in _problems(ds))


def test_rule_events_come_together(small_recording):
    assert any("missing ['event_duration']" in p
               for p in _problems(small_recording.drop_vars("event_duration")))


def test_rule_attrs_required_and_history(small_recording):
    ds = small_recording.copy()
    del ds.attrs["sfreq"]
    ds.attrs["history"] = "{not json"
    ds.attrs["schema_version"] = 7
    problems = _problems(ds)
    assert any("missing attribute 'sfreq'" in p for p in problems)
    assert any("history must be a JSON string" in p for p in problems)
    assert any("schema_version must be 1" in p for p in problems)


def test_all_problems_in_one_error(small_recording):
    ds = small_recording.copy()
    ds["signal"] = ds["signal"].astype("float64")
    ds.attrs["modality"] = "pet"
    ds.attrs["meta"] = [1, 2]
    with pytest.raises(SchemaError) as info:
        validate(ds, name="sub-01.edf")
    assert len(info.value.problems) == 3
    assert "sub-01.edf" in str(info.value) and "3 problems" in str(info.value)


# ------------------------------------------------------------------ history
def test_append_history_does_not_mutate(small_recording):
    before = small_recording.attrs["history"]
    out = append_history(small_recording, "filter", l_freq=np.float64(1.0), picks=("a", "b"))
    assert small_recording.attrs["history"] == before
    steps = history(out)
    assert steps[-1]["step"] == "filter"
    assert steps[-1]["params"] == {"l_freq": 1.0, "picks": ["a", "b"]}
    assert "neurofm_version" in steps[-1]
    assert out["signal"].data is small_recording["signal"].data  # shallow: no data copy


# ------------------------------------------------------------------ properties
@st.composite
def recordings(draw):
    n_ch = draw(st.integers(1, 6))
    n_t = draw(st.integers(2, 50))
    data = draw(hnp.arrays(np.float32, (n_ch, n_t),
                           elements=st.floats(-1e6, 1e6, width=32)))
    sfreq = draw(st.sampled_from([0.5, 1.0, 128.0, 250.0, 1000.0, 30000.0]))
    modality = draw(st.sampled_from(MODALITIES))
    types = draw(st.lists(st.sampled_from(CH_TYPES), min_size=n_ch, max_size=n_ch))
    names = [f"ch{i}" for i in range(n_ch)]
    tmin = draw(st.floats(0, 1000))
    return make_recording(data, channel=names, sfreq=sfreq, modality=modality,
                          ch_type=types, tmin=tmin, subject=draw(st.text(max_size=5)))


@given(recordings())
def test_generated_valid_recordings_pass(ds):
    validate(ds)


_CORRUPTIONS = {
    "dtype": (lambda ds: ds.assign(signal=ds["signal"].astype("float64")), "float32"),
    "modality": (lambda ds: ds.assign_attrs(modality="xray"), "unknown modality"),
    "nan": (lambda ds: ds.assign(signal=ds["signal"].where(ds["time"] > ds["time"][0])),
            "NaN/Inf"),
    "sfreq": (lambda ds: ds.assign_attrs(sfreq=ds.attrs["sfreq"] * 3), "inconsistent"),
    "attr": (lambda ds: ds.assign_attrs(extra=[1]), "not a JSON scalar"),
    "time": (lambda ds: ds.assign_coords(time=ds["time"].values[::-1].copy()),
             "strictly increasing"),
}


@given(recordings(), st.sampled_from(sorted(_CORRUPTIONS)))
def test_generated_corrupted_recordings_fail(ds, kind):
    corrupt, needle = _CORRUPTIONS[kind]
    with pytest.raises(SchemaError) as info:
        validate(corrupt(ds))
    assert any(needle in p for p in info.value.problems), info.value.problems


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError) and issubclass(DataError, NeurofmError)
