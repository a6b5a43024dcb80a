"""Damaged stores are reported (FormatError naming store, recording and chunk), never read as
plausible data; Store.verify / `neurofm verify` list every problem at once."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from neurofm.cli import main as cli
from neurofm.errors import FormatError
from neurofm.schema import make_recording
from neurofm.store import CorruptStoreError, open_store, write_store
from neurofm.store.verify import chunk_keys, verify_path


def _rec(n_t=5000, seed=0, n_ch=8, subject="01", zeros=False):
    rng = np.random.default_rng(seed)
    data = np.zeros((n_ch, n_t)) if zeros else rng.standard_normal((n_ch, n_t)) * 30
    return make_recording(data, channel=[f"C{i}" for i in range(n_ch)], sfreq=100.0,
                          modality="eeg", subject=subject)


def _store(tmp_path, compressor=None, n=1):
    recs = [_rec(seed=k, subject=f"0{k + 1}") for k in range(n)]
    store = write_store(recs, tmp_path / "s", chunk_seconds=10.0, compressor=compressor)
    return store, recs


def _chunk(tmp_path, rid, k):
    return tmp_path / "s" / f"{rid}.zarr" / "signal" / "c" / "0" / str(k)


def test_every_chunk_is_written_even_all_zero_data(tmp_path):
    import zarr

    store = write_store([_rec(zeros=True)], tmp_path / "s", chunk_seconds=10.0)
    root = tmp_path / "s" / f"{store.ids[0]}.zarr"
    group = zarr.open_group(str(root), mode="r")
    n_expected = 0
    for name, arr in group.arrays():
        for key in chunk_keys(arr).values():
            assert (root / name / key).is_file(), f"{name}/{key} was skipped"
            n_expected += 1
    assert len(chunk_keys(group["signal"])) == 5  # 5000 samples in chunks of 1000
    report = store.verify()
    assert report.ok and report.n_chunks == n_expected
    np.testing.assert_array_equal(store.read_window(store.ids[0], 0, 5000), 0.0)


@pytest.mark.parametrize("compressor", [None, "zstd"])
def test_missing_chunk_is_an_error_not_nan(tmp_path, compressor):
    store, recs = _store(tmp_path, compressor)
    rid = store.ids[0]
    _chunk(tmp_path, rid, 2).unlink()
    fresh = open_store(tmp_path / "s")
    pattern = rf"{tmp_path / 's'}.*recording '{rid}'.*(c/0/2|c{os.sep}0{os.sep}2).*missing"
    with pytest.raises(FormatError, match=pattern):
        fresh.read_window(rid, 1500, 2500)
    np.testing.assert_array_equal(fresh.read_window(rid, 0, 2000),  # other chunks still read
                                  recs[0]["signal"].values[:, :2000])
    with pytest.raises(FormatError, match=pattern):  # a batch of windows reports it too
        fresh.read_windows([(rid, 0, 500), (rid, 2100, 2600)])
    with pytest.raises(FormatError, match=rf"recording '{rid}'.*c/0/2"):
        fresh.open(rid)


def test_truncated_chunk(tmp_path):
    store, _ = _store(tmp_path)
    rid = store.ids[0]
    f = _chunk(tmp_path, rid, 1)
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(FormatError, match=rf"recording '{rid}'.*chunk 1 .*1000 bytes; "
                                          rf"expected 32004"):
        open_store(tmp_path / "s").read_window(rid, 1200, 1300)
    with pytest.raises(FormatError, match=rf"recording '{rid}'.*chunk 1 .*1000 bytes"):
        open_store(tmp_path / "s").read_windows([(rid, 0, 100), (rid, 1200, 1300)])


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_compressed_chunk(tmp_path, damage):
    store, _ = _store(tmp_path, compressor="zstd")
    rid = store.ids[0]
    f = _chunk(tmp_path, rid, 3)
    raw = bytearray(f.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match=rf"recording '{rid}'.*signal chunk c/0/3 is corrupt"):
        open_store(tmp_path / "s").read_window(rid, 2500, 3500)


def test_missing_group_metadata(tmp_path):
    store, _ = _store(tmp_path)
    rid = store.ids[0]
    (tmp_path / "s" / f"{rid}.zarr" / "zarr.json").unlink()
    with pytest.raises(FormatError, match=rf"{tmp_path / 's'}.*'{rid}' \({rid}.zarr\)"):
        open_store(tmp_path / "s")


def test_listed_recording_gone(tmp_path):
    import shutil

    store, _ = _store(tmp_path, n=2)
    gone = store.ids[1]
    shutil.rmtree(tmp_path / "s" / f"{gone}.zarr")
    with pytest.raises(FormatError, match=rf"whose folder or zarr.json is missing: '{gone}'"):
        open_store(tmp_path / "s")


def test_duplicated_ids_in_manifest(tmp_path):
    store, _ = _store(tmp_path)
    m = pd.read_parquet(tmp_path / "s" / "manifest.parquet")
    pd.concat([m, m]).to_parquet(tmp_path / "s" / "manifest.parquet", index=False)
    with pytest.raises(FormatError, match=rf"lists ids more than once: \['{store.ids[0]}'\]"):
        open_store(tmp_path / "s")


def test_verify_reports_every_problem_at_once(tmp_path, capsys):
    store, _ = _store(tmp_path, n=3)
    a, b, c = store.ids
    assert store.verify().ok
    assert cli(["verify", str(tmp_path / "s")]) == 0
    assert "0 problems" in capsys.readouterr().out
    _chunk(tmp_path, a, 4).unlink()                      # missing chunk
    f = _chunk(tmp_path, b, 0)                            # silent bit flip (raw chunk)
    raw = bytearray(f.read_bytes())
    raw[100] ^= 0x01
    f.write_bytes(bytes(raw))
    (tmp_path / "s" / f"{c}.zarr" / "zarr.json").unlink()  # missing group metadata
    # the memory-mapped path does not check checksums, verify does
    report = verify_path(tmp_path / "s")
    assert not report.ok
    assert len(report.problems) == 3, report.problems
    assert f"recording '{a}'" in report.problems[0] and "chunk c/0/4 is missing" in \
        report.problems[0]
    assert f"recording '{b}'" in report.problems[1] and "chunk c/0/0 is corrupt" in \
        report.problems[1]
    assert f"recording '{c}'" in report.problems[2] and "zarr.json is missing" in \
        report.problems[2]
    with pytest.raises(CorruptStoreError, match="3 problems"):
        report.raise_for_problems()
    assert cli(["verify", str(tmp_path / "s")]) == 1
    out = capsys.readouterr().out
    assert "3 problems" in out and "c/0/4 is missing" in out and "c/0/0 is corrupt" in out


def test_verify_manifest_against_folders(tmp_path, capsys):
    import shutil

    store, _ = _store(tmp_path, n=2)
    a, b = store.ids
    m = pd.read_parquet(tmp_path / "s" / "manifest.parquet")
    m.loc[m["id"] == a, "n_times"] = 9999
    pd.concat([m, m.iloc[[1]]]).to_parquet(tmp_path / "s" / "manifest.parquet", index=False)
    shutil.rmtree(tmp_path / "s" / f"{b}.zarr")
    assert cli(["verify", str(tmp_path / "s"), "--quick"]) == 1
    out = capsys.readouterr().out
    assert f"lists ids more than once: ['{b}']" in out
    assert f"recording '{a}'" in out and "(n_channels, n_times) = (8, 9999)" in out
    assert f"recording '{b}' ({b}.zarr): folder is missing" in out
    assert cli(["verify", str(tmp_path / "nope")]) == 1
