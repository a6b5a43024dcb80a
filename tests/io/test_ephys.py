"""Electrophysiology I/O on REAL data shipped in wheels (spkit EEG, pyedflib EDF+/BDF+) and on
files written by MNE's own writers (FIF, EDF via edfio, BrainVision via pybv)."""

from __future__ import annotations

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
    with pytest.raises(FormatError) as info:
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
    with pytest.raises(FormatError, match="brainvision"):
        read(path)


def test_directory(tmp_path):
    with pytest.raises(FormatError, match="directory"):
        read_ephys(tmp_path)
    with pytest.raises(FormatError) as info:
        read(tmp_path)
    assert str(tmp_path) in str(info.value)
