"""The homogenized C. elegans dataset reader and its resampling rule.

The dataset itself lives on HuggingFace (not reachable offline), so the parquet files here
are GENERATED in the published schema (the columns written by the dataset's
neural_to_parquet.py): random traces for labelled neurons in their canonical slots, unlabelled
ROIs with numeric names in free slots, z-scored and resampled to dt = 0.333 s by the rule
transcribed in ``homogenize`` below.
"""

from __future__ import annotations

import logging
import warnings
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from neurofm.errors import DataError, FormatError, NeurofmError, NeurofmWarning
from neurofm.io import read, read_all
from neurofm.io.celegans import (
    NEURON_LABELS,
    canonical_label,
    read_celegans,
    resample_celegans,
)
from neurofm.schema import history, make_recording, validate

DT = 0.333


def homogenize(t, x, dt=DT):
    """The dataset's rule, transcribed: t from 0; interpolate at dt when dt is finer than the
    data, else interpolate at dt/6 and average blocks of 6. x is (time, neurons)."""
    t = t - t[0]
    if dt < np.median(np.diff(t)):
        grid = np.arange(t.min(), t.max(), dt)
        return grid, np.column_stack([np.interp(grid, t, c) for c in x.T])
    fine = np.arange(t.min(), t.max(), dt / 6)
    fx = np.column_stack([np.interp(fine, t, c) for c in x.T])
    width = max(1, int(np.round(dt / np.median(np.diff(fine)[1:]))))
    n = len(fine) // width
    return dt * np.arange(n), fx[: n * width].reshape(n, width, -1).mean(1)


def make_worm_rows(source, worm, labelled, n_unlabelled, *, n_orig=700, orig_dt=0.2, seed=0):
    """GENERATED rows of one worm in the published parquet schema."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_orig) * orig_dt
    names = list(labelled) + [str(100 + k) for k in range(n_unlabelled)]
    raw = rng.standard_normal((n_orig, len(names))).cumsum(0)
    z = (raw - raw.mean(0)) / raw.std(0)  # StandardScaler
    rt, rz = homogenize(t, z)
    canonical = [canonical_label(n) for n in labelled]
    free = [i for i in range(300) if NEURON_LABELS[i] not in canonical]
    slots = [NEURON_LABELS.index(c) for c in canonical] + list(
        rng.choice(free, n_unlabelled, replace=False))
    rows = []
    for k, (name, slot) in enumerate(zip(names, slots)):
        rows.append({
            "source_dataset": source, "raw_data_file": f"{source}.mat", "worm": worm,
            "neuron": name, "slot": np.int32(slot), "is_labeled_neuron": k < len(labelled),
            "smooth_method": "no smoothing", "interpolate_method": "linear",
            "normalization_method": "standard",
            "original_calcium_data": raw[:, k].astype(np.float32),
            "calcium_data": rz[:, k].astype(np.float32),
            "original_time_in_seconds": t.astype(np.float32),
            "time_in_seconds": rt.astype(np.float32),
            "original_max_timesteps": np.int32(n_orig), "max_timesteps": np.int32(len(rt)),
        })
    return rows


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rows = (make_worm_rows("Kato2015", "worm0", ["AVAL", "AVAR", "RIML", "AWCON", "SMDVL"], 3)
            + make_worm_rows("Kato2015", "worm1", ["ASHL", "AS1", "VB2"], 2, seed=1)
            + make_worm_rows("Nichols2017", "worm0", ["AVAL", "URYDL"], 0, n_orig=400,
                             orig_dt=0.5, seed=2))
    df = pd.DataFrame(rows)
    path = tmp_path_factory.mktemp("worms") / "worm_data.parquet"
    df.to_parquet(path, index=False, engine="pyarrow")
    return path, df


def test_neuron_labels_are_the_300_sorted_canonical_names():
    assert isinstance(NEURON_LABELS, tuple) and len(NEURON_LABELS) == 300
    assert len(set(NEURON_LABELS)) == 300
    assert list(NEURON_LABELS) == sorted(NEURON_LABELS)
    assert NEURON_LABELS[28:32] == ("AS1", "AS10", "AS11", "AS2")
    assert NEURON_LABELS[-13:-9] == ("VD1", "VD10", "VD11", "VD12")
    assert {"AWCL", "AWCR", "AVAL", "RIML", "VD13"} <= set(NEURON_LABELS)
    assert not {"CANL", "CANR", "AWCON", "AWCOFF"} & set(NEURON_LABELS)
    shipped = resources.files("neurofm.io").joinpath("data/celegans_neuron_labels.txt")
    assert tuple(shipped.read_text().split()) == NEURON_LABELS


def test_canonical_label_aliases():
    assert canonical_label("AWCON") == "AWCR"
    assert canonical_label("AWCOFF") == "AWCL"
    assert canonical_label(" aval ") == "AVAL"
    assert canonical_label("VB02") == "VB2"
    assert canonical_label("CANL") is None and canonical_label("17") is None


def test_read_back_one_dataset_per_worm(dataset):
    path, df = dataset
    worms = read_celegans(path)
    assert [(w.attrs["source_dataset"], w.attrs["worm"]) for w in worms] == \
        [("Kato2015", "worm0"), ("Kato2015", "worm1"), ("Nichols2017", "worm0")]
    ds = worms[0]
    validate(ds)
    assert tuple(ds["channel"].values) == NEURON_LABELS
    assert ds["signal"].shape[0] == 300 and set(ds["ch_type"].values) == {"cell"}
    rows = df[(df.source_dataset == "Kato2015") & (df.worm == "worm0")]
    labelled = rows[rows.is_labeled_neuron]
    expected_recorded = {canonical_label(n) for n in labelled.neuron}
    assert {c for c, r in zip(ds["channel"].values, ds["recorded"].values) if r} == \
        expected_recorded
    for _, row in labelled.iterrows():
        np.testing.assert_array_equal(ds["signal"].sel(channel=canonical_label(row.neuron)),
                                      row.calcium_data)
    assert np.isnan(ds["signal"].values[~ds["recorded"].values]).all()
    assert ds.attrs["sfreq"] == pytest.approx(1 / DT, rel=1e-4)
    np.testing.assert_allclose(ds["time"].values, rows.iloc[0].time_in_seconds, atol=1e-4)
    assert ds.attrs["n_unlabeled_neurons"] == 3
    assert ds.attrs["subject"] == "Kato2015worm0" and ds.attrs["modality"] == "calcium"
    assert ds.attrs["normalization_method"] == "standard" and ds["signal"].attrs["units"] == "z"
    assert history(ds)[-1]["params"]["n_recorded"] == 5
    assert worms[2].sizes["time"] == len(df.iloc[-1].time_in_seconds)


def test_select_worms(dataset):
    path, _ = dataset
    assert [w.attrs["source_dataset"] for w in read_celegans(path, worms="worm0")] == \
        ["Kato2015", "Nichols2017"]
    one = read_celegans(path, worms=["Kato2015/worm1"])
    assert len(one) == 1 and one[0].attrs["worm"] == "worm1"
    with pytest.raises(DataError, match=r"no worm \['worm9'\].*Kato2015/worm0"):
        read_celegans(path, worms="worm9")
    assert [w.attrs["worm"] for w in read_all(path)] == ["worm0", "worm1", "worm0"]
    with pytest.raises(FormatError, match=r"holds 3 recordings.*read_all"):
        read(path)  # read() returns one Dataset


def test_original_traces(dataset):
    path, df = dataset
    ds = read_celegans(path, worms="Kato2015/worm1", signal="original_calcium_data")[0]
    assert ds.attrs["sfreq"] == pytest.approx(5.0, rel=1e-4)
    row = df[(df.worm == "worm1") & (df.neuron == "AS1")].iloc[0]
    np.testing.assert_array_equal(ds["signal"].sel(channel="AS1"), row.original_calcium_data)
    assert ds["signal"].attrs["units"] == "a.u."


def test_resample_matches_the_dataset_rule_downsampling():
    rng = np.random.default_rng(3)
    t = np.arange(700) * 0.2  # finer than 0.333: interpolate at dt/6, then average
    x = rng.standard_normal((700, 4)).cumsum(0)
    ds = make_recording(x.T, channel=list("abcd"), sfreq=5.0, modality="calcium", tmin=12.0)
    sig = ds["signal"].values.copy()
    sig[2] = np.nan
    ds = ds.assign(signal=(("channel", "time"), sig, ds["signal"].attrs))
    ds = ds.assign_coords(recorded=("channel", np.array([True, True, False, True])),
                          frame=("time", np.arange(700)))  # integer: cannot be interpolated
    before = ds.copy(deep=True)
    out = resample_celegans(ds)
    assert "frame" not in out.coords and history(out)[-1]["params"]["dropped"] == ["frame"]
    grid, expected = homogenize(t, sig.astype(np.float64).T)
    validate(out)
    np.testing.assert_allclose(out["time"].values, grid)
    ok = [0, 1, 3]
    np.testing.assert_allclose(out["signal"].values[ok], expected.T[ok].astype(np.float32),
                               rtol=1e-5, atol=1e-5)
    assert np.isnan(out["signal"].values[2]).all()
    assert out.attrs["sfreq"] == pytest.approx(1 / DT)
    assert history(out)[-1]["params"]["mode"] == "interpolate_then_average"
    assert ds.identical(before)


def test_resample_matches_the_dataset_rule_upsampling():
    rng = np.random.default_rng(4)
    t = np.arange(300) * 0.5  # coarser than 0.333: plain linear interpolation
    x = rng.standard_normal((300, 2))
    ds = make_recording(x.T, channel=["a", "b"], sfreq=2.0, modality="calcium")
    out = resample_celegans(ds, dt=DT)
    grid, expected = homogenize(t, x)
    np.testing.assert_allclose(out["signal"].values, expected.T.astype(np.float32), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(out["time"].values, grid)
    with pytest.raises(NeurofmError, match="dt"):
        resample_celegans(ds, dt=-1)


def test_bad_parquet_files(tmp_path, dataset):
    _, df = dataset
    with pytest.raises(FormatError, match="not found"):
        read_celegans(tmp_path / "missing.parquet")
    df.drop(columns=["slot"]).to_parquet(tmp_path / "noslot.parquet")
    with pytest.raises(FormatError, match=r"missing columns \['slot'\]"):
        read_celegans(tmp_path / "noslot.parquet")
    with pytest.raises(FormatError, match=r"missing columns.*trace columns present"):
        read_celegans(tmp_path / "noslot.parquet", signal="smooth_calcium_data")
    bad = df.copy()
    bad.loc[0, "neuron"] = "XYZ9"
    bad.to_parquet(tmp_path / "unknown.parquet")
    with pytest.raises(FormatError, match="'XYZ9' is not one of the 300"):
        read_celegans(tmp_path / "unknown.parquet")
    short = df.copy()
    short.at[1, "calcium_data"] = short.at[1, "calcium_data"][:-3]
    short.to_parquet(tmp_path / "short.parquet")
    with pytest.raises(DataError, match="samples in calcium_data but time_in_seconds has"):
        read_celegans(tmp_path / "short.parquet")
    twice = df.copy()
    twice.loc[1, "neuron"] = twice.loc[0, "neuron"]
    twice.to_parquet(tmp_path / "twice.parquet")
    with pytest.raises(DataError, match="appears twice"):
        read_celegans(tmp_path / "twice.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"junk")
    with pytest.raises(FormatError, match="not a readable parquet"):
        read_celegans(tmp_path / "junk.parquet")
    irregular = df[df.worm == "worm1"].copy()
    jitter = np.arange(700) * 0.2
    jitter[::7] += 0.15
    irregular["original_time_in_seconds"] = [jitter.astype(np.float32)] * len(irregular)
    irregular.to_parquet(tmp_path / "irregular.parquet")
    with pytest.raises(DataError, match="expected a regular grid"):
        read_celegans(tmp_path / "irregular.parquet", signal="original_calcium_data")


# --------------------------------------------------------------------------------------------
# issue 9: malformed slots, NaN in recorded neurons, warnings and verbose
# --------------------------------------------------------------------------------------------
def read_celegans_frame(df, path):
    df.to_parquet(path)
    return read_celegans(path)


def test_non_integer_slot_names_the_file_and_worm(tmp_path, dataset):
    _, df = dataset
    bad = df.astype({"slot": str})  # slots stored as text: "12" still reads, "x" cannot
    assert read_celegans_frame(bad, tmp_path / "text.parquet")[0].attrs["worm"] == "worm0"
    bad.loc[0, "slot"] = "x"  # row 0: Kato2015/worm0, AVAL
    bad.to_parquet(tmp_path / "slot.parquet")
    with pytest.raises(FormatError, match=r"slot\.parquet \[Kato2015/worm0\]: neuron AVAL has "
                                          r"slot='x'; expected an integer index"):
        read_celegans(tmp_path / "slot.parquet")


def test_nan_in_a_recorded_neuron(tmp_path, dataset):
    _, df = dataset
    nan = df.copy()
    trace = nan.at[1, "calcium_data"].copy()  # Kato2015/worm0, AVAR
    trace[[3, 4]] = np.nan
    nan.at[1, "calcium_data"] = trace
    nan.to_parquet(tmp_path / "nan.parquet")
    with pytest.raises(DataError, match=r"nan\.parquet \[Kato2015/worm0\]: 2 non-finite "
                                        r"\(NaN/Inf\) sample\(s\) in 1 channel\(s\): AVAR \(2\)"):
        read_celegans(tmp_path / "nan.parquet", worms="Kato2015/worm0")
    with pytest.warns(NeurofmWarning, match=r"\[Kato2015/worm0\]: 2 non-finite.*AVAR"):
        ds = read_celegans(tmp_path / "nan.parquet", worms="Kato2015/worm0",
                           on_nonfinite="warn")[0]
    assert [str(c) for c in ds["channel"].values[ds["bad"].values]] == ["AVAR"]
    np.testing.assert_array_equal(ds["signal"].sel(channel="AVAR").values, trace)
    # neurons that were not recorded are NaN by design and never count
    assert int(ds["recorded"].sum()) == 5 and np.isnan(ds["signal"].sel(channel="ADAL")).all()
    clean = read_celegans(tmp_path / "nan.parquet", worms="Kato2015/worm1")[0]
    assert not clean["bad"].values.any()


def test_celegans_slot_warning_and_verbose(tmp_path, dataset, caplog):
    path, df = dataset
    moved = df.copy()
    moved.loc[0, "slot"] = np.int32(7)  # AVAL placed in another neuron's slot
    moved.to_parquet(tmp_path / "moved.parquet")
    with pytest.warns(NeurofmWarning, match=r"\[Kato2015/worm0\]: 1 labelled neuron\(s\) sit in "
                                            r"a slot other than their label's index; placed by "
                                            r"name: AVAL@7"):
        ds = read_celegans(tmp_path / "moved.parquet", worms="Kato2015/worm0")[0]
    assert bool(ds["recorded"].sel(channel="AVAL"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", NeurofmWarning)
        read_celegans(tmp_path / "moved.parquet", worms="Kato2015/worm0", verbose="error")
    with caplog.at_level(logging.DEBUG):  # the capture handler; neurofm keeps its own level
        read_celegans(path)
        assert not caplog.records
        read_celegans(path, verbose="info")
        assert [r.getMessage() for r in caplog.records] == \
            [f"read {path}: 3 worm(s), signal calcium_data"]
        caplog.clear()
        read_celegans(path, worms="Kato2015/worm1", verbose="debug")
        debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
        assert any(m.endswith("[Kato2015/worm1]: 3 recorded neuron(s), 2 unlabelled ROI(s) "
                              "left out, dt 0.333 s") for m in debug)
