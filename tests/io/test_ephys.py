"""Electrophysiology I/O on REAL data shipped in wheels (spkit EEG, pyedflib EDF+/BDF+) and on
files written by MNE's own writers (FIF, EDF via edfio, BrainVision via pybv)."""

from __future__ import annotations

import datetime

import numpy as np
import pytest

import neurofm as nf
from neurofm.errors import DataError, FormatError
from neurofm.io import from_mne, read, read_ephys, to_mne
from neurofm.schema import history, validate

mne = pytest.importorskip("mne")


def _mne_uv(path):
    raw = mne.io.read_raw(path, preload=True, verbose="error")
    return raw, raw.get_data() * 1e6


def _spkit_raw(spkit_eeg):
    """The real spkit EEG as an MNE Raw with annotations and a bad channel."""
    raw = to_mne(spkit_eeg)
    raw.set_annotations(mne.Annotations([1.0, 4.5], [0.0, 0.5], ["stim/a", "blink"]))
    raw.info["bads"] = ["T7"]
    return raw


@pytest.fixture(scope="module")
def written(tmp_path_factory, spkit_eeg):
    """spkit's real EEG written through MNE's FIF, EDF (edfio) and BrainVision (pybv)."""
    out = tmp_path_factory.mktemp("ephys")
    raw = _spkit_raw(spkit_eeg)
    paths = {"fif": out / "spkit_raw.fif", "edf": out / "spkit.edf",
             "brainvision": out / "spkit.vhdr"}
    raw.save(paths["fif"], verbose="error")
    mne.export.export_raw(paths["edf"], raw, fmt="edf", verbose="error")
    mne.export.export_raw(paths["brainvision"], raw, fmt="brainvision", verbose="error")
    return paths


@pytest.mark.parametrize("fmt", ["fif", "edf", "brainvision"])
def test_round_trip_through_mne_writers(written, spkit_eeg, fmt):
    path = written[fmt]
    ds = read(path, montage=None if fmt == "fif" else "standard_1020")
    validate(ds)
    _raw, expected_uv = _mne_uv(path)
    np.testing.assert_allclose(ds["signal"].values, expected_uv.astype(np.float32),
                               rtol=1e-6, atol=1e-6)
    # and the file holds the real EEG (EDF quantises to 16 bit over the physical range)
    atol = 0.05 if fmt == "edf" else 1e-3
    np.testing.assert_allclose(ds["signal"].values, spkit_eeg["signal"].values, atol=atol)
    assert list(ds["channel"].values) == list(spkit_eeg["channel"].values)
    assert ds.attrs["sfreq"] == 128.0 and ds.attrs["modality"] == "eeg"
    assert ds.attrs["source_format"] == fmt
    assert list(ds["event_description"].values) == ["stim/a", "blink"]  # no Comment/ prefix
    np.testing.assert_allclose(ds["event_onset"].values, [1.0, 4.5], atol=1 / 128)
    np.testing.assert_allclose(ds["event_duration"].values, [0.0, 0.5], atol=1 / 128)
    np.testing.assert_allclose(ds["ch_pos"].values, spkit_eeg["ch_pos"].values, atol=1e-6)
    assert ds["ch_pos"].attrs["coord_frame"] == "head"
    if fmt == "fif":  # EDF has no field for bad channels; MNE's BrainVision reader ignores it
        assert list(ds["channel"].values[ds["bad"].values]) == ["T7"]


def test_edf_and_brainvision_lose_positions_without_montage(written):
    for fmt in ("edf", "brainvision"):
        ds = read_ephys(written[fmt])
        assert np.isnan(ds["ch_pos"].values).all()


def test_brainvision_comment_prefix_present_in_mne(written):
    raw = mne.io.read_raw(written["brainvision"], verbose="error")
    assert any(str(d).startswith("Comment/") for d in raw.annotations.description)


def test_pyedflib_edf_plus(edf_path):
    ds = read_ephys(edf_path)
    raw, expected_uv = _mne_uv(edf_path)
    assert ds.sizes == {"channel": 11, "time": 120000, "space": 3, "event": 2}
    np.testing.assert_allclose(ds["signal"].values, expected_uv.astype(np.float32), rtol=1e-6)
    assert ds.attrs["sfreq"] == 200.0
    assert list(ds["channel"].values) == raw.ch_names
    assert list(ds["event_description"].values) == ["Recording starts", "Recording ends"]
    np.testing.assert_allclose(ds["event_onset"].values, [0.0, 600.0])
    assert ds.attrs["meas_date"].startswith("2011-04-04")


def test_pyedflib_bdf_mixed_rates_recorded(bdf_path):
    ds = read_ephys(bdf_path)
    _raw, expected_uv = _mne_uv(bdf_path)
    np.testing.assert_allclose(ds["signal"].values, expected_uv.astype(np.float32), rtol=1e-6)
    assert ds.attrs["sfreq"] == 1000.0
    steps = {s["step"]: s["params"] for s in history(ds)}
    assert steps["resample_on_read"]["sfreq"] == 1000.0
    assert steps["resample_on_read"]["original_rates"]["square 13Hz"] == 800.0


@pytest.mark.parametrize("name", ["test_utf8.edf", "test_subsecond.edf"])
def test_pyedflib_annotations(name):
    from neurofm.datasets import pyedflib_file

    path = pyedflib_file(name)
    ds = read_ephys(path)
    raw = mne.io.read_raw(path, verbose="error")
    assert list(ds["channel"].values) == ["Fp1"] and ds.attrs["sfreq"] == 128.0
    assert [str(d) for d in raw.annotations.description] == \
        list(ds["event_description"].values)
    np.testing.assert_allclose(ds["event_onset"].values, raw.annotations.onset - raw.first_time)


def test_string_dtype_annotations_quirk(spkit_eeg):
    raw = _spkit_raw(spkit_eeg)
    desc = raw.annotations.description
    if desc.dtype.kind != "T":
        pytest.skip(f"this MNE/numpy gives {desc.dtype}, not StringDType")
    with pytest.raises(TypeError):
        np.asarray(desc, dtype=str)
    ds = from_mne(raw)
    assert ds["event_description"].dtype.kind == "U"


def test_from_mne_to_mne_round_trip(spkit_eeg):
    raw = _spkit_raw(spkit_eeg)
    back = to_mne(from_mne(raw))
    np.testing.assert_allclose(back.get_data(), raw.get_data(), rtol=1e-6, atol=1e-12)
    assert back.ch_names == raw.ch_names
    assert back.get_channel_types() == raw.get_channel_types()
    assert back.info["sfreq"] == raw.info["sfreq"]
    assert back.info["bads"] == ["T7"]
    np.testing.assert_allclose(back.annotations.onset, raw.annotations.onset)
    assert list(back.annotations.description) == ["stim/a", "blink"]
    for a, b in zip(back.info["chs"], raw.info["chs"]):
        np.testing.assert_allclose(a["loc"][:3], b["loc"][:3])


def test_meg_units_and_modality():
    """Generated MEG (mag + grad, simulated with MNE): SI -> fT and fT/cm, modality meg."""
    info = mne.create_info(["MEG0111", "MEG0112", "EEG001"], 600.0, ["mag", "grad", "eeg"])
    rng = np.random.default_rng(1)
    data = rng.standard_normal((3, 600)) * np.array([[1e-12], [1e-11], [1e-5]])
    raw = mne.io.RawArray(data, info, verbose="error")
    ds = from_mne(raw)
    assert ds.attrs["modality"] == "meg"
    assert list(ds["ch_type"].values) == ["meg_mag", "meg_grad", "eeg"]
    assert list(ds["ch_units"].values) == ["fT", "fT/cm", "uV"]
    np.testing.assert_allclose(ds["signal"].values,
                               (data * np.array([[1e15], [1e13], [1e6]])).astype(np.float32),
                               rtol=1e-6)
    np.testing.assert_allclose(to_mne(ds).get_data(), data, rtol=1e-6)


def test_ieeg_modality_inferred():
    info = mne.create_info(["LA1", "LA2"], 1000.0, ["seeg", "seeg"])
    raw = mne.io.RawArray(np.zeros((2, 100)), info, verbose="error")
    assert from_mne(raw).attrs["modality"] == "ieeg"


def test_modality_cannot_be_inferred():
    info = mne.create_info(["x"], 10.0, ["misc"])
    raw = mne.io.RawArray(np.zeros((1, 10)), info, verbose="error")
    with pytest.raises(DataError, match="pass modality="):
        from_mne(raw)
    assert from_mne(raw, modality="eeg").attrs["modality"] == "eeg"


def test_start_stop_reads_a_piece(edf_path):
    full = read_ephys(edf_path)
    part = read_ephys(edf_path, start=100.0, stop=110.0)
    assert part.sizes["time"] == 2000
    np.testing.assert_allclose(part["time"].values[0], 100.0)
    np.testing.assert_array_equal(part["signal"].values,
                                  full["signal"].sel(time=slice(100.0, 109.999)).values)
    validate(part)
    with pytest.raises(DataError, match="start"):
        read_ephys(edf_path, start=50, stop=10)


def test_lazy_read(edf_path):
    lazy = read_ephys(edf_path, preload=False, start=10, stop=40)
    assert hasattr(lazy["signal"].data, "dask")
    eager = read_ephys(edf_path, start=10, stop=40)
    np.testing.assert_array_equal(lazy["signal"].values, eager["signal"].values)


def test_montage_old_and_new_names(written):
    from neurofm.io.ephys import resolve_montage_name

    a = read_ephys(written["edf"], montage="standard_1020")
    b = read_ephys(written["edf"], montage=resolve_montage_name("standard_1020"))
    np.testing.assert_array_equal(a["ch_pos"].values, b["ch_pos"].values)
    assert np.isfinite(a["ch_pos"].values).all()


def test_montage_errors(edf_path):
    with pytest.raises(nf.NeurofmError, match="not a built-in MNE montage"):
        read_ephys(edf_path, montage="standard_9999")


# ------------------------------------------------------------------ corrupt inputs
def test_missing_file(tmp_path):
    with pytest.raises(FormatError, match="file not found") as info:
        read(tmp_path / "nope.edf")
    assert "nope.edf" in str(info.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.edf"
    path.write_bytes(b"")
    with pytest.raises(FormatError, match="empty") as info:
        read(path)
    assert str(path) in str(info.value)


def test_truncated_edf(tmp_path, edf_path):
    data = edf_path.read_bytes()
    path = tmp_path / "cut.edf"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="truncated") as info:
        read(path)
    assert str(path) in str(info.value)


def test_random_bytes_fif(tmp_path):
    path = tmp_path / "noise_raw.fif"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(FormatError, match="could not be read as fif") as info:
        read(path)
    assert str(path) in str(info.value)
    assert info.value.__cause__ is not None  # MNE's error is chained, not shown as the message


def test_truncated_fif(tmp_path, written):
    data = written["fif"].read_bytes()
    path = tmp_path / "cut_raw.fif"
    path.write_bytes(data[:2000])
    with pytest.raises(FormatError) as info, \
            pytest.warns(nf.NeurofmWarning, match="Invalid tag"):  # MNE's warning, passed on
        read_ephys(path)
    assert str(path) in str(info.value)


def test_wrong_extension(tmp_path):
    path = tmp_path / "notes.xyz"
    path.write_text("hello")
    with pytest.raises(FormatError, match="no reader") as info:
        read(path)
    assert "notes.xyz" in str(info.value)


def test_edf_content_with_wrong_extension(tmp_path, edf_path):
    path = tmp_path / "actually_edf.vhdr"
    path.write_bytes(edf_path.read_bytes())
    with pytest.raises(FormatError, match="brainvision"), \
            pytest.warns(nf.NeurofmWarning, match="header version"):
        read(path)


def test_directory(tmp_path):
    with pytest.raises(FormatError, match="directory"):
        read_ephys(tmp_path)
    with pytest.raises(FormatError) as info:
        read(tmp_path)
    assert str(tmp_path) in str(info.value)


# ------------------------------------------------------------------ event times (MNE's rules)
_MEAS = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
_GRID = [(meas, first_samp, orig)
         for meas in (None, _MEAS) for first_samp in (0, 250)
         for orig in ((None,) if meas is None else (None, "meas", "meas+7"))]


def _annotated_raw(meas, first_samp, orig):
    """100 Hz, a spike at absolute sample 300, annotations at 3.0 and 9.0 s (orig_time
    None, meas_date or meas_date + 7 s)."""
    info = mne.create_info(["a", "b"], 100.0, "eeg")
    data = np.zeros((2, 1000))
    data[0, 300 - first_samp] = 1e-3  # absolute sample 300
    raw = mne.io.RawArray(data, info, first_samp=first_samp, verbose="error")
    raw.set_meas_date(meas)
    orig_time = {None: None, "meas": _MEAS,
                 "meas+7": _MEAS + datetime.timedelta(seconds=7)}[orig]
    raw.set_annotations(mne.Annotations([3.0, 9.0], [0.0, 0.0], ["x", "y"],
                                        orig_time=orig_time), emit_warning=False)
    return raw


def _mne_event_times(raw, tmin=0.0):
    """Event times in seconds from the first sample, as mne.events_from_annotations."""
    events, _ = mne.events_from_annotations(raw, verbose="error")
    return (events[:, 0] - raw.first_samp) / raw.info["sfreq"] + tmin


@pytest.mark.parametrize(("meas", "first_samp", "orig"), _GRID)
def test_event_times_follow_mne(tmp_path, meas, first_samp, orig):
    raw = _annotated_raw(meas, first_samp, orig)
    path = tmp_path / "events_raw.fif"
    raw.save(path, verbose="error")
    expected = _mne_event_times(raw)
    assert len(expected) >= 1
    # in memory, through the file, lazily, and for a piece starting at 1 s
    np.testing.assert_allclose(from_mne(raw)["event_onset"].values, expected, atol=1e-9)
    for preload in (True, False):
        ds = read(path, preload=preload)
        np.testing.assert_allclose(ds["event_onset"].values, expected, atol=1e-9)
    part = read_ephys(path, start=1.0)
    from_file = mne.io.read_raw_fif(path, verbose="error").crop(tmin=1.0)
    np.testing.assert_allclose(part["event_onset"].values, _mne_event_times(from_file, 1.0),
                               atol=1e-9)


def test_anonymised_fif_event_on_the_spike(tmp_path):
    """The reported case: no meas_date, first_samp=250 at 100 Hz, spike at sample 300."""
    raw = _annotated_raw(None, 250, None)
    raw.set_annotations(mne.Annotations([0.5], [0.0], ["spike"]))  # 0.5 s after sample 250
    path = tmp_path / "anon_raw.fif"
    raw.save(path, verbose="error")
    events, _ = mne.events_from_annotations(mne.io.read_raw_fif(path, verbose="error"),
                                            verbose="error")
    assert events[0, 0] == 300
    ds = read(path)
    assert ds.attrs["meas_date"] == ""
    onset = float(ds["event_onset"].values[0])
    assert onset == pytest.approx(0.5)
    spike_time = float(ds["time"].values[int(np.argmax(ds["signal"].values[0]))])
    assert spike_time == pytest.approx(onset)


# ------------------------------------------------------------------ lazy == eager == MNE
_PYEDFLIB_FILES = ["test_generator.edf", "test_generator.bdf",
                   "test_generator_datarec_generator_0_5.bdf",
                   "test_generator_datarec_generator_2.bdf", "test_legacy.edf",
                   "test_subsecond.edf", "test_utf8.edf"]


def _real_files(written):
    from neurofm.datasets import pyedflib_file

    return [pyedflib_file(n) for n in _PYEDFLIB_FILES] + list(written.values())


def test_lazy_and_eager_equal_mne_eager_on_every_real_file(written):
    for path in _real_files(written):
        mne_raw = mne.io.read_raw(path, preload=True, verbose="error")
        expected = (mne_raw.get_data() * 1e6).astype(np.float32)
        # a piece from 1/4 to 1/2 of the recording, as MNE's eager read cropped
        t0 = round(mne_raw.times[-1] / 4 * mne_raw.info["sfreq"]) / mne_raw.info["sfreq"]
        t1 = round(mne_raw.times[-1] / 2 * mne_raw.info["sfreq"]) / mne_raw.info["sfreq"]
        i0, i1 = mne_raw.time_as_index([t0, t1], use_rounding=True)
        for preload in (True, False):
            ds = read_ephys(path, preload=preload)
            np.testing.assert_array_equal(ds["signal"].values, expected, err_msg=str(path))
            part = read_ephys(path, preload=preload, start=t0, stop=t1)
            np.testing.assert_array_equal(part["signal"].values, expected[:, i0:i1],
                                          err_msg=f"{path} [{t0}, {t1})")


def test_lazy_mixed_rate_bdf_has_no_edge_artifacts(bdf_path):
    """pyedflib's mixed-rate BDF: lazily read blocks used to be off by up to 232 uV."""
    mne_raw = mne.io.read_raw(bdf_path, preload=True, verbose="error")
    expected = (mne_raw.get_data() * 1e6).astype(np.float32)
    lazy = read_ephys(bdf_path, preload=False)
    assert hasattr(lazy["signal"].data, "dask")
    assert lazy["signal"].data.chunks[1][0] == 10_000  # still 10-s chunks
    np.testing.assert_array_equal(lazy["signal"].values, expected)
    # a single chunk computed alone gives the same values too
    np.testing.assert_array_equal(lazy["signal"][:, 20_000:30_000].values,
                                  expected[:, 20_000:30_000])


# ------------------------------------------------------------------ MEG info round trip
def _meg_raw():
    """A generated MEG recording: 2 magnetometers, 2 gradiometers, 1 EEG, full sensor loc
    (position + orientation), coil types, a device-to-head transform and a meas_date."""
    names = ["MEG0111", "MEG0112", "MEG0113", "MEG0121", "EEG001"]
    info = mne.create_info(names, 200.0, ["mag", "grad", "grad", "mag", "eeg"])
    rng = np.random.default_rng(3)
    for ch in info["chs"]:
        ch["loc"][:] = rng.uniform(-0.1, 0.1, 12)
    info["chs"][0]["coil_type"] = 3024  # FIFFV_COIL_VV_MAG_T3
    info["chs"][1]["coil_type"] = info["chs"][2]["coil_type"] = 3012  # VV_PLANAR_T1
    trans = np.eye(4)
    trans[:3, :3] = mne.transforms.rotation(0.1, -0.2, 0.05)[:3, :3]
    trans[:3, 3] = [0.002, -0.01, 0.04]
    info["dev_head_t"] = mne.transforms.Transform("meg", "head", trans)
    data = rng.standard_normal((5, 400)) * np.array([[1e-12], [1e-11], [1e-11], [1e-12],
                                                      [1e-5]])
    raw = mne.io.RawArray(data, info, verbose="error")
    raw.set_meas_date(datetime.datetime(2021, 3, 4, 5, 6, 7, 890000,
                                        tzinfo=datetime.UTC))
    return raw


def _assert_meg_info_equal(back, raw):
    assert back.info["meas_date"] == raw.info["meas_date"]
    np.testing.assert_allclose(back.info["dev_head_t"]["trans"], raw.info["dev_head_t"]["trans"])
    assert back.info["dev_head_t"]["from"] == raw.info["dev_head_t"]["from"]
    assert back.info["dev_head_t"]["to"] == raw.info["dev_head_t"]["to"]
    for a, b, kind in zip(back.info["chs"], raw.info["chs"], raw.get_channel_types()):
        assert a["ch_name"] == b["ch_name"]
        if kind in ("mag", "grad"):  # orientation too: loc[3:12]
            np.testing.assert_allclose(a["loc"], b["loc"])
            assert a["coil_type"] == b["coil_type"]
            assert a["coord_frame"] == b["coord_frame"]
        else:
            np.testing.assert_allclose(a["loc"][:3], b["loc"][:3])
    np.testing.assert_allclose(back.get_data(), raw.get_data(), rtol=1e-6)


def test_to_mne_round_trips_meg_info(tmp_path):
    raw = _meg_raw()
    _assert_meg_info_equal(to_mne(from_mne(raw)), raw)
    path = tmp_path / "meg_raw.fif"
    raw.save(path, verbose="error")
    on_disk = mne.io.read_raw_fif(path, verbose="error")
    ds = read(path)
    validate(ds)
    _assert_meg_info_equal(to_mne(ds), on_disk)
    # the positions of MEG channels stay what they were (loc[:3], device frame)
    np.testing.assert_allclose(ds["ch_pos"].values[0], raw.info["chs"][0]["loc"][:3])


def test_to_mne_keeps_meas_date_and_first_samp(tmp_path, spkit_eeg):
    raw = _annotated_raw(_MEAS, 250, "meas")
    back = to_mne(from_mne(raw))
    assert back.info["meas_date"] == _MEAS
    assert back.first_samp == 250
    np.testing.assert_array_equal(mne.events_from_annotations(back, verbose="error")[0],
                                  mne.events_from_annotations(raw, verbose="error")[0])
    assert to_mne(spkit_eeg).info["meas_date"] is None  # no date recorded: none invented


def test_pipeline_read_step_stores_mne_eager_values(tmp_path, bdf_path):
    """The EEG pipeline reads lazily: its zarr holds MNE's eager values (sub-03's BDF)."""
    from neurofm.pipelines.steps import read_step
    from neurofm.store import open_recording

    out = tmp_path / "sub-03.zarr"
    read_step(str(bdf_path), str(out), modality="eeg", wildcards={"subject": "03"}, pick=None)
    stored = open_recording(out)
    expected = (mne.io.read_raw(bdf_path, preload=True, verbose="error").get_data() * 1e6)
    np.testing.assert_array_equal(stored["signal"].values, expected.astype(np.float32))
