"""convert_files / convert_bids: files -> store, appending, idempotence, BIDS entities,
option checks, failures, fsspec URLs.

Recordings: pyedflib's real test_generator.edf (copied, sometimes with some data bytes
changed) and GENERATED suite2p plane folders.
"""

from __future__ import annotations

import hashlib
import logging
import shutil

import numpy as np
import pytest

from neurofm.errors import FormatError, NeurofmError
from neurofm.io.ephys import read_ephys
from neurofm.store import is_store, open_store
from neurofm.store.convert import (
    ConversionError,
    ReaderOptionError,
    bids_recordings,
    convert_bids,
    convert_files,
    source_entities,
    source_hash,
)


def write_suite2p(folder, seed, n_rois=4, n_frames=300, fs=10.0):
    """A GENERATED suite2p plane folder (F, Fneu, ops with fs)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    F = 400.0 + 20.0 * rng.standard_normal((n_rois, n_frames)) + 100.0 * \
        (rng.random((n_rois, n_frames)) < 0.02)
    np.save(folder / "F.npy", F.astype(np.float32))
    np.save(folder / "Fneu.npy", (200.0 + rng.standard_normal((n_rois, n_frames)))
            .astype(np.float32))
    np.save(folder / "ops.npy", np.array({"fs": fs, "neucoeff": 0.7}, dtype=object),
            allow_pickle=True)
    return folder


def _changed_copy(src, dst, offset=-200):
    """``dst``: ``src`` with 20 data bytes (samples near the end) replaced; still valid EDF."""
    data = bytearray(src.read_bytes())
    data[offset:offset + 20] = bytes(range(20))
    dst.write_bytes(bytes(data))


# --------------------------------------------------------------------------------------------
# appending, failures, strict
# --------------------------------------------------------------------------------------------
def test_convert_files_appends_and_reports(tmp_path, edf_path):
    bad = tmp_path / "cut.edf"
    bad.write_bytes(edf_path.read_bytes()[:3000])
    out = tmp_path / "store"
    store = convert_files([edf_path, bad], out, verbose=False)
    assert store.ids == ["test_generator"] and store.added == ["test_generator"]
    assert [f["path"] for f in store.failures] == [str(bad)]
    assert "truncated" in store.failures[0]["error"]
    # a second run finds the source in the store with the same content: nothing is added
    again = convert_files([edf_path], out, verbose=False)
    assert again.ids == ["test_generator"] and again.failures == []
    assert again.added == [] and again.unchanged == [str(edf_path)]
    fresh = convert_files([edf_path], out, overwrite=True, verbose=False)
    assert fresh.ids == ["test_generator"] and fresh.added == ["test_generator"]
    with pytest.raises(FormatError, match="truncated"):
        convert_files([bad], tmp_path / "strict", strict=True, verbose=False)
    assert not (tmp_path / "strict").exists()


def test_convert_files_to_url(edf_path, tmp_path):
    url = "memory://neurofm-convert/store"
    assert not is_store(url)
    convert_files([edf_path], url, montage=None, verbose=False)
    assert is_store(url)
    convert_files([edf_path], url, verbose=False)  # same source, same content: skipped
    assert open_store(url).ids == ["test_generator"]
    copy = tmp_path / "test_generator.edf"  # same content, another source path: a new one
    shutil.copy(edf_path, copy)
    convert_files([copy], url, verbose=False)
    assert open_store(url).ids == ["test_generator", "test_generator-2"]
    import fsspec

    fsspec.filesystem("memory").rm("/neurofm-convert", recursive=True)


# --------------------------------------------------------------------------------------------
# idempotence: source path + content hash
# --------------------------------------------------------------------------------------------
def test_source_hash_values(tmp_path, edf_path):
    assert source_hash(edf_path) == hashlib.sha256(edf_path.read_bytes()).hexdigest()
    # BrainVision: the header alone does not hold the data; a change in .eeg changes the hash
    vhdr, eeg = tmp_path / "rec.vhdr", tmp_path / "rec.eeg"
    vhdr.write_text("Brain Vision Data Exchange Header File Version 1.0\n")
    eeg.write_bytes(b"\x00" * 64)
    before = source_hash(vhdr)
    assert before != hashlib.sha256(vhdr.read_bytes()).hexdigest()
    eeg.write_bytes(b"\x00" * 63 + b"\x01")
    assert source_hash(vhdr) != before
    # a directory: every file, in sorted order; suite2p's movie data.bin is left out
    plane = write_suite2p(tmp_path / "plane0", seed=1)
    h0 = source_hash(plane)
    (plane / "data.bin").write_bytes(b"movie" * 100)
    assert source_hash(plane) == h0
    np.save(plane / "Fneu.npy", np.zeros((4, 300), np.float32))
    assert source_hash(plane) != h0
    with pytest.raises(FormatError, match="not found"):
        source_hash(tmp_path / "missing.edf")


def test_convert_is_idempotent_and_replaces_changed_sources(tmp_path, edf_path, caplog):
    src = tmp_path / "data" / "sub-01_task-rest_eeg.edf"
    src.parent.mkdir()
    shutil.copy(edf_path, src)
    out = tmp_path / "store"
    first = convert_files([src], out, verbose=False)
    assert first.ids == ["sub-01_task-rest_eeg"]
    row = first.manifest.iloc[0]
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    stored = first.open("sub-01_task-rest_eeg")
    assert stored.attrs["source_hash"] == digest
    assert stored.attrs["source_file"] == str(src.resolve())
    assert (row.source_file, row.source_hash) == (str(src.resolve()), digest)  # manifest
    # same command again: nothing converted, nothing duplicated
    second = convert_files([src], out, verbose=False)
    assert second.ids == ["sub-01_task-rest_eeg"] and second.added == []
    assert second.unchanged == [str(src)]
    # the file changes on disk: converted again, replacing the stale recording, with a warning
    _changed_copy(edf_path, src)
    new_digest = hashlib.sha256(src.read_bytes()).hexdigest()
    assert new_digest != digest
    with caplog.at_level(logging.WARNING, logger="neurofm"):
        third = convert_files([src], out, verbose=False)
    assert "changed since it was converted" in caplog.text and str(src) in caplog.text
    assert third.ids == ["sub-01_task-rest_eeg"] and third.replaced == ["sub-01_task-rest_eeg"]
    rec = third.open("sub-01_task-rest_eeg")
    assert rec.attrs["source_hash"] == new_digest
    np.testing.assert_array_equal(rec["signal"].values, read_ephys(src)["signal"].values)
    assert not np.array_equal(rec["signal"].values, stored["signal"].values)
    # a BIDS run of the same tree is idempotent too
    bids = tmp_path / "bids"
    (bids / "sub-01" / "eeg").mkdir(parents=True)
    shutil.copy(edf_path, bids / "sub-01" / "eeg" / "sub-01_task-rest_eeg.edf")
    a = convert_bids(bids, tmp_path / "bids_store", verbose=False)
    b = convert_bids(bids, tmp_path / "bids_store", verbose=False)
    assert a.ids == b.ids == ["sub-01_task-rest_eeg"]
    assert (a.added, b.added, len(b.unchanged)) == (["sub-01_task-rest_eeg"], [], 1)


def test_convert_bids_refuses_an_id_held_by_another_source(tmp_path, edf_path):
    for name in ("one", "two"):
        folder = tmp_path / name / "sub-01" / "eeg"
        folder.mkdir(parents=True)
        shutil.copy(edf_path, folder / "sub-01_task-rest_eeg.edf")
    _changed_copy(edf_path, tmp_path / "two" / "sub-01" / "eeg" / "sub-01_task-rest_eeg.edf")
    out = tmp_path / "store"
    convert_bids(tmp_path / "one", out, verbose=False)
    with pytest.raises(ConversionError, match="converted from a different source"):
        convert_bids(tmp_path / "two", out, verbose=False)
    # a moved copy with the same content is recognised as already converted
    shutil.copytree(tmp_path / "one", tmp_path / "moved")
    moved = convert_bids(tmp_path / "moved", out, verbose=False)
    assert moved.ids == ["sub-01_task-rest_eeg"] and len(moved.unchanged) == 1


# --------------------------------------------------------------------------------------------
# BIDS entities of individual files and suite2p folders
# --------------------------------------------------------------------------------------------
def test_convert_files_takes_bids_entities(tmp_path, edf_path):
    named = tmp_path / "sub-01_ses-2_task-rest_run-3_eeg.edf"
    shutil.copy(edf_path, named)
    nested = tmp_path / "sub-02" / "ses-1" / "eeg" / "recording.edf"
    nested.parent.mkdir(parents=True)
    shutil.copy(edf_path, nested)
    planes = [write_suite2p(tmp_path / "s2p" / "sub-07_task-spont_suite2p" / "plane0", 0),
              write_suite2p(tmp_path / "s2p" / "sub-07_task-spont_suite2p" / "plane1", 1),
              write_suite2p(tmp_path / "s2p" / "sub-08_task-spont_suite2p" / "plane0", 2)]
    store = convert_files([named, nested, *planes], tmp_path / "store", verbose=False)
    m = store.manifest.set_index("id")
    assert list(m.index) == ["sub-01_ses-2_task-rest_run-3_eeg", "sub-02_ses-1",
                             "sub-07_task-spont_plane0", "sub-07_task-spont_plane1",
                             "sub-08_task-spont_plane0"]
    assert list(m["subject"]) == ["01", "02", "07", "07", "08"]
    assert list(m["session"]) == ["2", "1", "", "", ""]
    assert list(m["task"]) == ["rest", "", "spont", "spont", "spont"]
    assert list(m["run"]) == ["3", "", "", "", ""]
    assert list(m["modality"]) == ["eeg", "eeg", "calcium", "calcium", "calcium"]
    np.testing.assert_array_equal(
        store.open("sub-07_task-spont_plane1")["F"].values, np.load(planes[1] / "F.npy"))
    # a file name without BIDS entities keeps the name-based id and an empty subject
    assert source_entities(edf_path) == ({}, None)
    assert source_entities(planes[0]) == ({"subject": "07", "task": "spont"},
                                          "sub-07_task-spont_plane0")


def test_bids_recordings_lists_suite2p_planes(tmp_path, edf_path):
    (tmp_path / "sub-01" / "eeg").mkdir(parents=True)
    shutil.copy(edf_path, tmp_path / "sub-01" / "eeg" / "sub-01_task-rest_eeg.edf")
    base = tmp_path / "derivatives" / "suite2p" / "sub-07" / "ophys"
    write_suite2p(base / "sub-07_ses-1_task-spont_suite2p" / "plane0", 0)
    write_suite2p(base / "sub-07_ses-1_task-spont_suite2p" / "plane1", 1)
    df = bids_recordings(tmp_path)
    assert list(df["datatype"]) == ["eeg", "ophys", "ophys"]
    assert list(df["subject"]) == ["01", "07", "07"]
    assert list(df["session"]) == ["", "1", "1"]
    assert list(df["derivatives"]) == ["", "suite2p", "suite2p"]
    assert [p.rsplit("/", 1)[-1] for p in df["path"]] == ["sub-01_task-rest_eeg.edf",
                                                          "plane0", "plane1"]
    assert list(bids_recordings(tmp_path, datatype="ophys")["datatype"]) == ["ophys"] * 2
    store = convert_bids(tmp_path, tmp_path / "store", verbose=False)
    assert store.ids == ["sub-01_task-rest_eeg", "sub-07_ses-1_task-spont_plane0",
                         "sub-07_ses-1_task-spont_plane1"]
    with pytest.raises(NeurofmError, match="datatype must be among"):
        bids_recordings(tmp_path, datatype="anat")


# --------------------------------------------------------------------------------------------
# options checked up front; only NeurofmError is a per-file failure
# --------------------------------------------------------------------------------------------
def test_reader_options_are_validated_up_front(tmp_path, edf_path):
    out = tmp_path / "store"
    with pytest.raises(ReaderOptionError, match=r"'montag' \(did you mean 'montage'\?\)") as e:
        convert_files([edf_path], out, montag="standard_1020", verbose=False)
    assert "read_ephys" in str(e.value) and "'montage'" in str(e.value)
    assert isinstance(e.value, TypeError) and not out.exists()
    bids = tmp_path / "bids" / "sub-01" / "eeg"
    bids.mkdir(parents=True)
    shutil.copy(edf_path, bids / "sub-01_task-rest_eeg.edf")
    with pytest.raises(ReaderOptionError, match="'montag'"):
        convert_bids(tmp_path / "bids", out, montag="standard_1020", verbose=False)
    assert not out.exists()
    # an option of another reader (fMRI) is not silently dropped for EEG-only inputs
    with pytest.raises(ReaderOptionError, match="'standardize'"):
        convert_bids(tmp_path / "bids", out, standardize=False, verbose=False)
    # a BOLD image given as a file needs an atlas
    bold = tmp_path / "sub-02_task-rest_bold.nii.gz"
    bold.write_bytes(b"")
    with pytest.raises(ReaderOptionError, match="needs atlas="):
        convert_files([bold], out, verbose=False)
    # options of a reader of the batch are fine even if others ignore them
    plane = write_suite2p(tmp_path / "sub-07_task-spont_suite2p" / "plane0", 0)
    store = convert_files([edf_path, plane], out, montage=None, verbose=False)
    assert len(store) == 2


def test_every_input_failing_creates_no_store(tmp_path, edf_path):
    bad1, bad2 = tmp_path / "a.edf", tmp_path / "b.edf"
    bad1.write_bytes(edf_path.read_bytes()[:3000])
    bad2.write_bytes(b"not an edf at all")
    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello")
    out = tmp_path / "store"
    with pytest.raises(ConversionError, match="no store was created") as e:
        convert_files([bad1, bad2, unknown], out, verbose=False)
    assert [f["path"] for f in e.value.failures] == [str(unknown), str(bad1), str(bad2)]
    for path in (bad1, bad2, unknown):
        assert str(path) in str(e.value)
    assert not out.exists() and not is_store(out)
    # an existing store is left exactly as it was, even with overwrite=True
    convert_files([edf_path], out, verbose=False)
    manifest = (out / "manifest.parquet").read_bytes()
    with pytest.raises(ConversionError, match="left unchanged"):
        convert_files([bad1, bad2], out, overwrite=True, verbose=False)
    assert (out / "manifest.parquet").read_bytes() == manifest
    assert open_store(out).ids == ["test_generator"]


def test_only_neurofm_errors_are_per_file_failures(tmp_path, edf_path, monkeypatch):
    import neurofm.io.ephys as ephys

    def broken(path, *, modality=None, montage=None, preload=True, start=None, stop=None,
               verbose=None):
        raise ZeroDivisionError("a reader bug")

    monkeypatch.setattr(ephys, "read_ephys", broken)
    with pytest.raises(ZeroDivisionError) as e:
        convert_files([edf_path], tmp_path / "store", verbose=False)
    assert any(str(edf_path) in note for note in e.value.__notes__)
    assert not (tmp_path / "store").exists()


def test_stores_without_source_columns_are_still_idempotent(tmp_path, edf_path):
    """A manifest written before source_file/source_hash existed: the recordings' own attrs
    say where they came from, so a rerun still converts nothing."""
    import pandas as pd

    out = tmp_path / "store"
    convert_files([edf_path], out, verbose=False)
    manifest = pd.read_parquet(out / "manifest.parquet")
    manifest.drop(columns=["source_file", "source_hash"]).to_parquet(out / "manifest.parquet")
    again = convert_files([edf_path], out, verbose=False)
    assert again.ids == ["test_generator"] and again.unchanged == [str(edf_path)]
