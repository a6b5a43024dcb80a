"""One public API: every reader at ``neurofm.io.<name>`` (imported lazily), ``read()`` always
one Dataset, ``read_all()`` always a list, options checked against the reader's signature."""

from __future__ import annotations

import subprocess
import sys

import pytest
import xarray as xr

import neurofm as nf
from neurofm import io
from neurofm.errors import FormatError, NeurofmError

READERS = ["read", "read_all", "read_ephys", "from_mne", "to_mne", "read_fmri",
           "read_roi_timeseries", "read_calcium", "read_celegans", "find_recordings",
           "find_reader", "register_reader", "readers"]


def test_every_reader_is_public():
    for name in READERS:
        assert name in nf.io.__all__, name
        assert name in dir(nf.io), name
        assert callable(getattr(nf.io, name)), name
    from neurofm.io import bids, calcium, celegans, fmri

    assert nf.io.read_fmri is fmri.read_fmri
    assert nf.io.read_roi_timeseries is fmri.read_roi_timeseries
    assert nf.io.read_calcium is calcium.read_calcium
    assert nf.io.read_celegans is celegans.read_celegans
    assert nf.io.find_recordings is bids.find_recordings
    for name in nf.io.__all__:  # nothing listed that is not there
        getattr(nf.io, name)
    with pytest.raises(AttributeError, match="read_nothing"):
        nf.io.read_nothing  # noqa: B018


def test_readers_are_imported_lazily():
    code = ("import sys, neurofm, neurofm.io as io; "
            "heavy = [m for m in ('mne', 'nilearn', 'pynwb', 'neurofm.io.fmri', "
            "'neurofm.io.ephys', 'neurofm.io.calcium') if m in sys.modules]; "
            "names = dir(io); assert 'read_fmri' in names; "
            "heavy += [m for m in ('neurofm.io.fmri',) if m in sys.modules]; "
            "io.read_calcium; print(heavy, 'neurofm.io.calcium' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[] True"


def _two(path, **kwargs):
    """A reader returning two recordings (registered for the test only)."""
    return [nf.schema.make_recording([[1.0, 2.0]], channel=["a"], sfreq=1.0, modality="eeg",
                                     subject=str(i)) for i in range(2)]


def _one(path, *, scale=1.0):
    """A reader returning a one-element list, with one option."""
    return [nf.schema.make_recording([[scale]], channel=["a"], sfreq=1.0, modality="eeg")]


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setattr(io, "_REGISTRY", list(io._REGISTRY))
    io.register_reader("two", _two, (".two",), first=True)
    io.register_reader("one", _one, (".one",), first=True)


def test_read_returns_one_dataset_read_all_a_list(tmp_path, registry, edf_path):
    two, one = tmp_path / "x.two", tmp_path / "x.one"
    two.write_text("")
    one.write_text("")
    with pytest.raises(FormatError, match=r"holds 2 recordings.*read_all") as info:
        io.read(two)
    assert str(two) in str(info.value)
    assert [ds.attrs["subject"] for ds in io.read_all(two)] == ["0", "1"]
    ds = io.read(one, scale=3.0)
    assert isinstance(ds, xr.Dataset) and float(ds["signal"].values[0, 0]) == 3.0
    single = io.read_all(edf_path, start=0.0, stop=1.0)
    assert isinstance(single, list) and len(single) == 1
    assert single[0].sizes["time"] == 200
    with pytest.raises(NeurofmError, match=r"\['bogus'\].*one reader.*\['scale'\]"):
        io.read(one, bogus=1)


def test_read_checks_options_before_reading(tmp_path):
    bold = tmp_path / "not_read.nii"
    bold.write_bytes(b"")  # never opened: the option check comes first
    with pytest.raises(NeurofmError, match=r"\['bogus'\].*read_fmri") as info:
        io.read(bold, atlas="power_2011", bogus=1)
    assert str(bold) in str(info.value)
    parquet = tmp_path / "worms.parquet"
    parquet.write_bytes(b"")
    with pytest.raises(NeurofmError, match=r"\['montage'\].*read_celegans"):
        io.read_all(parquet, montage="standard_1020")
