"""Electrophysiology readers never return wrong data silently: value checks (NaN/Inf,
undefined EDF scaling), size checks (truncated BrainVision / FIF), empty recordings,
implausible rates, argument checks, and MNE's warnings reaching the user.

The EDF/BDF files here are written byte by byte (``write_edf``) so that each header field can
be set to a broken value; every value asserted is compared with what MNE reads."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from neurofm.errors import DataError, FormatError, NeurofmError, NeurofmWarning
from neurofm.io import from_mne, read, read_ephys, to_mne

mne = pytest.importorskip("mne")


def write_edf(path, digital, *, labels, pmin, pmax, dmin, dmax, n_samps, n_records,
              duration="1"):
    """Write an EDF file from digital samples, every header field as given (no checks).

    Parameters
    ----------
    digital : list of numpy.ndarray of int, one per signal, length n_records * n_samps[i]
    labels, pmin, pmax, dmin, dmax, n_samps : sequences, one entry per signal
        Written as text into the 8/16-byte header fields ("nan" is written as is).
    """
    ns = len(labels)

    def f(value, width):
        return str(value).ljust(width)[:width].encode("ascii")

    head = (f(0, 8) + f("X X X X", 80) + f("Startdate 01-JAN-2020 X X X", 80)
            + f("01.01.20", 8) + f("00.00.00", 8) + f(256 * (ns + 1), 8) + f("", 44)
            + f(n_records, 8) + f(duration, 8) + f(ns, 4))
    for values, width in ((labels, 16), (["AgAgCl"] * ns, 80), (["uV"] * ns, 8), (pmin, 8),
                          (pmax, 8), (dmin, 8), (dmax, 8), ([""] * ns, 80), (n_samps, 8),
                          ([""] * ns, 32)):
        head += b"".join(f(v, width) for v in values)
    body = b"".join(np.asarray(digital[i][r * n_samps[i]:(r + 1) * n_samps[i]], "<i2")
                    .tobytes() for r in range(n_records) for i in range(ns))
    path.write_bytes(head + body)
    return path


def _two_channel_edf(path, **fields):
    rng = np.random.default_rng(0)
    digital = [rng.integers(-30000, 30000, 400), rng.integers(-30000, 30000, 400)]
    kw = {"labels": ["A", "B"], "pmin": [-100, -100], "pmax": [100, 100],
          "dmin": [-32768, -32768], "dmax": [32767, 32767], "n_samps": [100, 100],
          "n_records": 4}
    kw.update(fields)
    return write_edf(path, digital, **kw)


def _mne_uv(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = mne.io.read_raw(path, preload=True, verbose="error", **kwargs)
    return raw, raw.get_data() * 1e6


# ------------------------------------------------------------------ NaN / Inf samples
@pytest.fixture
def nonfinite_fif(tmp_path):
    """A FIF whose channel 'b' holds one NaN and channel 'c' two Inf samples."""
    info = mne.create_info(["a", "b", "c", "d"], 100.0, "eeg")
    data = np.random.default_rng(1).standard_normal((4, 3000)) * 1e-5
    data[1, 10] = np.nan
    data[2, [5, 2500]] = np.inf
    path = tmp_path / "nonfinite_raw.fif"
    mne.io.RawArray(data, info, verbose="error").save(path, verbose="error")
    return path


def test_nonfinite_fif_is_a_data_error(nonfinite_fif):
    with pytest.raises(DataError) as info:
        read(nonfinite_fif)
    message = str(info.value)
    assert str(nonfinite_fif) in message
    assert "3 non-finite" in message and "b (1)" in message and "c (2)" in message
    assert "a (" not in message and 'on_nonfinite="warn"' in message


def test_nonfinite_fif_warn_marks_channels_bad(nonfinite_fif):
    with pytest.warns(NeurofmWarning, match=r"b \(1\), c \(2\)"):
        ds = read(nonfinite_fif, on_nonfinite="warn")
    assert list(ds["bad"].values) == [False, True, True, False]
    _raw, expected = _mne_uv(nonfinite_fif)
    np.testing.assert_array_equal(ds["signal"].values, expected.astype(np.float32))


def test_nonfinite_fif_lazy_raises_when_computed(nonfinite_fif):
    ds = read(nonfinite_fif, preload=False)  # nothing read yet
    with pytest.raises(DataError, match=r"nonfinite_raw\.fif"):
        ds["signal"].values  # noqa: B018
    with pytest.warns(NeurofmWarning, match="non-finite"):
        read(nonfinite_fif, preload=False, on_nonfinite="warn")["signal"].values  # noqa: B018


def test_from_mne_checks_values_too():
    info = mne.create_info(["x", "y"], 10.0, "eeg")
    data = np.zeros((2, 20))
    data[0, 3] = np.nan
    raw = mne.io.RawArray(data, info, verbose="error")
    with pytest.raises(DataError, match=r"x \(1\)"):
        from_mne(raw)
    with pytest.warns(NeurofmWarning):
        assert list(from_mne(raw, on_nonfinite="warn")["bad"].values) == [True, False]


@pytest.mark.parametrize("pmax", ["nan", "inf"])
def test_edf_nonfinite_physical_range(tmp_path, pmax):
    path = _two_channel_edf(tmp_path / f"phys_{pmax}.edf", pmax=[pmax, 100])
    _raw, mne_uv = _mne_uv(path)
    assert not np.isfinite(mne_uv[0]).any()  # what MNE returns without a word
    with pytest.raises(DataError, match="physical range") as info:
        read(path)
    assert str(path) in str(info.value) and "A (" in str(info.value)
    for preload in (True, False):  # the header check needs no samples
        with pytest.raises(DataError):
            read(path, preload=preload)
    with pytest.warns(NeurofmWarning) as record:
        ds = read(path, on_nonfinite="warn")
    assert any("undefined" in str(w.message) for w in record)  # the header check
    assert any("400 non-finite" in str(w.message) for w in record)  # the value check
    assert list(ds["bad"].values) == [True, False]
    np.testing.assert_array_equal(ds["signal"].values[1], mne_uv[1].astype(np.float32))


def test_edf_degenerate_digital_range(tmp_path):
    path = _two_channel_edf(tmp_path / "flat_digital.edf", dmin=[0, -32768], dmax=[0, 32767])
    _raw, mne_uv = _mne_uv(path)
    assert np.abs(mne_uv[0]).max() > 1e3  # raw counts passed off as uV (range is +-100 uV)
    with pytest.raises(DataError, match="digital minimum = maximum") as info, \
            pytest.warns(NeurofmWarning, match="Scaling factor"):
        read(path)
    assert str(path) in str(info.value)
    with pytest.warns(NeurofmWarning) as record:
        ds = read(path, on_nonfinite="warn")
    messages = [str(w.message) for w in record]
    assert any("digital minimum = maximum" in m for m in messages)
    mne_warning = [w for w in record if "Scaling factor will not be defined" in str(w.message)]
    assert len(mne_warning) == 1  # MNE's own warning, passed on
    assert "flat_digital.edf" in str(mne_warning[0].message)
    assert mne_warning[0].filename == __file__  # points at the user's call
    assert list(ds["bad"].values) == [True, False]
    np.testing.assert_array_equal(ds["signal"].values[1], mne_uv[1].astype(np.float32))


# ------------------------------------------------------------------ sizes and emptiness
def test_truncated_brainvision_is_a_format_error(tmp_path, spkit_eeg):
    raw = to_mne(spkit_eeg)
    vhdr = tmp_path / "cut.vhdr"
    mne.export.export_raw(vhdr, raw, fmt="brainvision", verbose="error")
    eeg = vhdr.with_suffix(".eeg")
    eeg.write_bytes(eeg.read_bytes()[:-7])
    mne_raw, _ = _mne_uv(vhdr)
    assert mne_raw.n_times == raw.n_times - 1  # MNE silently drops the partial frame
    with pytest.raises(FormatError, match="partial sample") as info:
        read(vhdr)
    assert "cut.eeg" in str(info.value)
    eeg.write_bytes(eeg.read_bytes()[:-(14 * 4 - 7)])  # whole frames again: readable
    assert read(vhdr).sizes["time"] == raw.n_times - 1


def test_zero_sample_edf_is_a_data_error(tmp_path):
    path = write_edf(tmp_path / "empty_records.edf", [np.zeros(0, int)], labels=["A"],
                     pmin=[-100], pmax=[100], dmin=[-32768], dmax=[32767], n_samps=[100],
                     n_records=0)
    with pytest.raises(DataError, match="no samples") as info:
        read(path)
    assert str(path) in str(info.value)


def test_zero_channel_or_sample_raw_is_a_data_error():
    no_channels = mne.io.RawArray(np.zeros((0, 10)), mne.create_info([], 100.0),
                                  verbose="error")
    with pytest.raises(DataError, match="no channels"):
        from_mne(no_channels, modality="eeg")
    no_samples = mne.io.RawArray(np.zeros((2, 0)), mne.create_info(2, 100.0, "eeg"),
                                 verbose="error")
    with pytest.raises(DataError, match="no samples"):
        from_mne(no_samples)


def test_absurd_sampling_rates_warn(tmp_path):
    edf = _two_channel_edf(tmp_path / "fast.edf", duration="5e-31")
    with pytest.warns(NeurofmWarning, match=r"2e\+32 Hz is implausible") as record:
        ds = read(edf)
    assert ds.attrs["sfreq"] == pytest.approx(2e32)
    assert sum("implausible" in str(w.message) for w in record) == 1  # once, naming the file
    assert "fast.edf" in str(record[0].message)
    info = mne.create_info(2, 1e12, "eeg")
    fif = tmp_path / "fast_raw.fif"
    mne.io.RawArray(np.zeros((2, 50)), info, verbose="error").save(fif, verbose="error")
    with pytest.warns(NeurofmWarning, match=r"1e\+12 Hz is implausible"):
        read(fif)


@pytest.mark.parametrize("fraction", [0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85,
                                      0.95])
def test_truncated_fif_is_a_format_error(tmp_path, spkit_eeg, fraction):
    raw = to_mne(spkit_eeg)
    full = tmp_path / "full_raw.fif"
    raw.save(full, verbose="error")
    data = full.read_bytes()
    path = tmp_path / "cut_raw.fif"
    path.write_bytes(data[:int(len(data) * fraction)])
    for preload in (True, False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NeurofmWarning)
            with pytest.raises(FormatError) as info:
                read(path, preload=preload)["signal"].values  # noqa: B018
        assert str(path) in str(info.value)


@pytest.mark.parametrize(("name", "value"), [("start", "a"), ("stop", [1.0]),
                                             ("start", float("nan")), ("stop", True)])
def test_start_stop_must_be_numbers(edf_path, name, value):
    with pytest.raises(NeurofmError, match=name) as info:
        read_ephys(edf_path, **{name: value})
    assert repr(value) in str(info.value)


def test_bad_options(edf_path):
    with pytest.raises(NeurofmError, match="on_nonfinite"):
        read_ephys(edf_path, on_nonfinite="ignore")
    with pytest.raises(NeurofmError, match="preload"):
        read_ephys(edf_path, preload="yes")


# ------------------------------------------------------------------ MNE's warnings
def test_mne_warnings_reach_the_user(tmp_path):
    path = _two_channel_edf(tmp_path / "dupes.edf", labels=["A", "A"])
    with pytest.warns(NeurofmWarning, match="Channel names are not unique") as record:
        ds = read(path)
    assert any("dupes.edf" in str(w.message) for w in record)
    raw, mne_uv = _mne_uv(path)
    assert list(ds["channel"].values) == raw.ch_names == ["A-0", "A-1"]
    np.testing.assert_array_equal(ds["signal"].values, mne_uv.astype(np.float32))


def test_verbose_error_silences_routed_warnings(tmp_path):
    path = _two_channel_edf(tmp_path / "dupes.edf", labels=["A", "A"])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        read(path, verbose="error")
    assert not [w for w in record if issubclass(w.category, NeurofmWarning)]


def test_no_mne_private_api():
    """The reader uses MNE's public API only (positions via make_dig_montage/set_montage)."""
    from pathlib import Path

    import neurofm.io.ephys as ephys

    source = Path(ephys.__file__).read_text()
    assert "_raw_extras" not in source and "_unlock" not in source
    assert 'simplefilter("ignore")' not in source


# ------------------------------------------------------------------ MNE reader options
def _typed_edf(path):
    """Labels with EDF type prefixes, as clinical systems write them."""
    return _two_channel_edf(path, labels=["EEG Fz", "EOG left"])


def test_reader_options_pass_through(tmp_path):
    path = _typed_edf(tmp_path / "typed.edf")
    plain = read(path)
    assert list(plain["ch_type"].values) == ["eeg", "eeg"]  # MNE's default, as before
    ds = read(path, infer_types=True)
    raw, mne_uv = _mne_uv(path, infer_types=True)
    assert raw.get_channel_types() == ["eeg", "eog"]
    assert list(ds["channel"].values) == raw.ch_names == ["Fz", "left"]
    assert list(ds["ch_type"].values) == ["eeg", "eog"]
    np.testing.assert_array_equal(ds["signal"].values, mne_uv.astype(np.float32))
    lazy = read_ephys(path, preload=False, eog=["EOG left"])
    assert list(lazy["ch_type"].values) == ["eeg", "eog"]
    assert '"eog": ["EOG left"]' in lazy.attrs["history"]  # recorded with the other params


def test_reader_options_are_checked(tmp_path, written_fif):
    path = _typed_edf(tmp_path / "typed.edf")
    with pytest.raises(NeurofmError, match=r"\['bogus'\].*read_raw_edf") as info:
        read(path, bogus=1)
    assert str(path) in str(info.value) and "infer_types" in str(info.value)
    with pytest.raises(NeurofmError, match=r"infer_types.*read_raw_fif"):
        read(written_fif, infer_types=True)  # the FIF reader has no such option
    with pytest.raises(NeurofmError, match="set by read_ephys"):
        read_ephys(path, input_fname="x.edf")


@pytest.fixture
def written_fif(tmp_path, spkit_eeg):
    path = tmp_path / "spkit_raw.fif"
    to_mne(spkit_eeg).save(path, verbose="error")
    return path


def test_truncated_fif_does_not_abort_a_convert_batch(tmp_path, spkit_eeg):
    from neurofm.store.convert import convert_files

    full = tmp_path / "full_raw.fif"
    to_mne(spkit_eeg).save(full, verbose="error")
    cut = tmp_path / "cut_raw.fif"  # cut in the data: MNE opens it, the samples fail
    cut.write_bytes(full.read_bytes()[:int(full.stat().st_size * 0.6)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NeurofmWarning)
        store = convert_files([cut, full], tmp_path / "store")
    assert [f["path"] for f in store.failures] == [str(cut)]
    assert "truncated or corrupt" in store.failures[0]["error"]
    assert len(store) == 1  # the intact file went in
    np.testing.assert_allclose(store.manifest["n_times"].tolist(), [spkit_eeg.sizes["time"]])


def test_verbose_true_logs_the_read(edf_path, caplog):
    """verbose=True lowers the neurofm logger to INFO for this call only."""
    caplog.set_level(0)  # the capturing handler takes everything the logger lets through
    read_ephys(edf_path)  # default level WARNING: the read is not logged
    assert "120000 samples" not in caplog.text
    read_ephys(edf_path, verbose=True)
    assert f"read {edf_path}: 11 channels, 120000 samples at 200 Hz" in caplog.text
