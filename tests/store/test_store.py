"""Training stores: bit-exact round trips, atomic writes (crash test), fsspec URLs, windows,
concurrent readers."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import xarray as xr

from neurofm.errors import DataError, FormatError, NeurofmError
from neurofm.schema import make_recording, validate
from neurofm.store import MANIFEST_COLUMNS, open_store, write_store


def _rec(subject, n_ch=16, n_t=20000, sfreq=500.0, seed=0):
    """Generated recording (random numbers) with events and a bad channel."""
    rng = np.random.default_rng(seed)
    return make_recording(rng.standard_normal((n_ch, n_t)) * 30,
                          channel=[f"C{i}" for i in range(n_ch)], sfreq=sfreq, modality="eeg",
                          subject=subject, session="1", task="rest", run="1",
                          events=[(1.0, 0.5, "stim/a"), (2.0, 0.0, "resp")], bad=["C3"])


def test_round_trip_bit_exact(tmp_path, spkit_eeg, edf_path):
    from neurofm.io import read_ephys

    recs = [spkit_eeg, read_ephys(edf_path), _rec("02")]
    store = write_store(recs, tmp_path / "s", splits=["train", "val", "test"])
    assert len(store) == 3
    assert list(store.manifest.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    for rec_id, ds in zip(store, recs):
        back = store[rec_id]
        xr.testing.assert_identical(back.load(), ds)
        validate(back)
    m = store.manifest.set_index("id")
    assert m.loc["sub-02_ses-1_task-rest_run-1", "split"] == "test"
    assert m.loc["test_generator", "n_times"] == 120000
    reopened = open_store(tmp_path / "s")
    assert reopened.ids == store.ids


def test_lazy_open_reads_nothing_until_used(tmp_path):
    store = write_store([_rec("01")], tmp_path / "s")
    ds = store["sub-01_ses-1_task-rest_run-1"]
    assert not isinstance(ds["signal"].variable._data, np.ndarray)
    dsk = store.open(store.ids[0], chunks={})
    assert hasattr(dsk["signal"].data, "dask")
    assert dsk["signal"].data.chunks[0] == (16,)  # all channels in one chunk


def test_chunking_along_time(tmp_path):
    import zarr

    store = write_store([_rec("01", n_ch=8)], tmp_path / "s", chunk_seconds=2.0)
    arr = zarr.open_group(str(tmp_path / "s" / f"{store.ids[0]}.zarr"), mode="r")["signal"]
    assert arr.chunks == (8, 1000)
    store = write_store([_rec("01", n_ch=64)], tmp_path / "auto")
    arr = zarr.open_group(str(tmp_path / "auto" / f"{store.ids[0]}.zarr"), mode="r")["signal"]
    assert arr.chunks == (64, 4096)  # about 1 MiB per chunk


@pytest.mark.parametrize("compressor", [None, "zstd", "blosc"])
def test_read_window(tmp_path, compressor):
    ds = _rec("01", n_t=10007)
    store = write_store([ds], tmp_path / "s", chunk_seconds=1.0, compressor=compressor)
    rid = store.ids[0]
    truth = ds["signal"].values
    rng = np.random.default_rng(0)
    for start in list(rng.integers(0, 9000, 20)) + [0, 9999]:
        stop = min(int(start) + int(rng.integers(1, 1500)), 10007)
        w = store.read_window(rid, start, stop)
        assert w.dtype == np.float32 and w.flags.writeable
        np.testing.assert_array_equal(w, truth[:, start:stop])
    np.testing.assert_array_equal(store.read_window(rid, 10000, 10007), truth[:, 10000:])
    np.testing.assert_array_equal(store.read_window(rid, 5, 900, channels=[0, 3]),
                                  truth[[0, 3], 5:900])
    for bad in [(-1, 10), (10, 10), (0, 10008)]:
        with pytest.raises(DataError, match="0 <= start < stop"):
            store.read_window(rid, *bad)
    with pytest.raises(KeyError, match="no recording"):
        store.read_window("nope", 0, 1)


def test_window_is_a_copy(tmp_path):
    ds = _rec("01", n_t=3000)
    store = write_store([ds], tmp_path / "s")
    w = store.read_window(store.ids[0], 0, 100)
    w[:] = 0
    np.testing.assert_array_equal(store.read_window(store.ids[0], 0, 100),
                                  ds["signal"].values[:, :100])


def test_add_and_ids(tmp_path):
    store = write_store([_rec("01")], tmp_path / "s")
    rid = store.add(_rec("01", seed=1))
    assert rid == "sub-01_ses-1_task-rest_run-1-2"
    with pytest.raises(NeurofmError, match="already exists"):
        store.add(_rec("01"), id=store.ids[0])
    first = store.ids[0]
    store.read_window(first, 0, 10)  # maps the old chunk files
    store.add(_rec("01", seed=5), id=first, overwrite=True)
    np.testing.assert_array_equal(store.read_window(first, 0, 10),
                                  _rec("01", seed=5)["signal"].values[:, :10])
    assert len(open_store(tmp_path / "s")) == 2
    with pytest.raises(NeurofmError, match="letters, digits"):
        store.add(_rec("03"), id="bad id/with slash")
    store.set_split({first: "train"})
    m = open_store(tmp_path / "s").manifest.set_index("id")
    assert m.loc[first, "split"] == "train" and m.loc[rid, "split"] is None


def test_add_validates(tmp_path, small_recording):
    store = write_store([], tmp_path / "s")
    ds = small_recording.copy(deep=True)
    ds["signal"].values[0, 0] = np.nan
    with pytest.raises(NeurofmError, match="NaN"):
        store.add(ds)
    assert len(open_store(tmp_path / "s")) == 0


def test_existing_store_needs_overwrite(tmp_path):
    write_store([_rec("01")], tmp_path / "s")
    with pytest.raises(NeurofmError, match="already exists"):
        write_store([_rec("02")], tmp_path / "s")
    store = write_store([_rec("02")], tmp_path / "s", overwrite=True)
    assert store.ids == ["sub-02_ses-1_task-rest_run-1"]


def test_open_store_errors(tmp_path):
    with pytest.raises(FormatError, match="not found"):
        open_store(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="not a neurofm store"):
        open_store(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "manifest.parquet").write_bytes(b"garbage")
    with pytest.raises(FormatError, match="unreadable store manifest"):
        open_store(tmp_path / "junk")


def test_write_store_from_paths(tmp_path, edf_path):
    store = write_store([edf_path], tmp_path / "s")
    assert store.ids == ["test_generator"]


_WRITER = textwrap.dedent("""
    import sys, numpy as np
    from neurofm.schema import make_recording
    from neurofm.store import write_store
    def rec(sub, n_t):
        rng = np.random.default_rng(0)
        return make_recording(rng.standard_normal((8, n_t)), channel=[f"C{i}" for i in range(8)],
                              sfreq=100.0, modality="eeg", subject=sub)
    store = write_store([rec("01", 1000)], sys.argv[1])
    print("first-done", flush=True)
    store.add(rec("02", 4_000_000), chunk_seconds=1.0)   # 40000 chunk files: slow
    print("second-done", flush=True)
""")


def test_crash_mid_write_leaves_consistent_store(tmp_path):
    path = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "first-done"
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until the second recording is half written
            tmps = [p for p in path.iterdir()
                    if p.name.startswith(".tmp-") and p.name.endswith("-sub-02.zarr")]
            if tmps and (tmps[0] / "signal" / "c" / "0").exists() and \
                    len(list((tmps[0] / "signal" / "c" / "0").iterdir())) > 50:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the writer never started the second recording")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    store = open_store(path)
    assert store.ids == ["sub-01"]
    assert store.read_window("sub-01", 0, 1000).shape == (8, 1000)
    assert not (path / "sub-02.zarr").exists()
    store.add(_rec("03"))  # still writable after the crash
    assert open_store(path).ids == ["sub-01", "sub-03_ses-1_task-rest_run-1"]


@pytest.mark.parametrize("url", ["memory://neurofm-test/store", "file://{tmp}/store"])
def test_fsspec_urls(tmp_path, url):
    url = url.format(tmp=tmp_path)
    ds = _rec("01", n_t=5000)
    store = write_store([ds], url)
    assert store.ids == ["sub-01_ses-1_task-rest_run-1"]
    reopened = open_store(url)
    xr.testing.assert_identical(reopened[reopened.ids[0]].load(), ds)
    np.testing.assert_array_equal(reopened.read_window(reopened.ids[0], 100, 2100),
                                  ds["signal"].values[:, 100:2100])
    reopened.add(_rec("02", n_t=100))
    assert len(open_store(url)) == 2
    if url.startswith("memory://"):
        import fsspec

        fsspec.filesystem("memory").rm("/neurofm-test", recursive=True)


def test_concurrent_readers_threads(tmp_path):
    ds = _rec("01", n_t=50000)
    store = write_store([ds], tmp_path / "s", chunk_seconds=3.0)
    rid, truth = store.ids[0], ds["signal"].values
    starts = np.random.default_rng(3).integers(0, 48000, 400)

    def read(s):
        return np.array_equal(store.read_window(rid, s, s + 1000), truth[:, s:s + 1000])

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(read, starts))


def _child_read(args):
    path, rid, starts = args
    store = open_store(path)
    return [float(store.read_window(rid, s, s + 500).sum(dtype=np.float64)) for s in starts]


def test_concurrent_readers_processes(tmp_path):
    ds = _rec("01", n_t=20000)
    store = write_store([ds], tmp_path / "s")
    rid = store.ids[0]
    store.read_window(rid, 0, 10)  # parent has open maps before forking
    starts = [list(range(k, 19000, 997)) for k in range(4)]
    ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
    with ctx.Pool(2) as pool:
        results = pool.map(_child_read, [(str(tmp_path / "s"), rid, s) for s in starts])
    truth = ds["signal"].values.astype(np.float64)
    for s_list, res in zip(starts, results):
        np.testing.assert_allclose(res, [truth[:, s:s + 500].sum() for s in s_list],
                                   rtol=1e-9)


@pytest.mark.parametrize("compressor", [None, "zstd"])
def test_window_touches_only_its_chunks(tmp_path, compressor):
    ds = _rec("01", n_t=10000)
    store = write_store([ds], tmp_path / "s", chunk_seconds=2.0, compressor=compressor)
    rid = store.ids[0]
    chunk_dir = tmp_path / "s" / f"{rid}.zarr" / "signal" / "c" / "0"
    assert sorted(int(p.name) for p in chunk_dir.iterdir()) == list(range(10))
    for p in chunk_dir.iterdir():  # corrupt every chunk but 2 and 3 (samples 2000-3999)
        if p.name not in ("2", "3"):
            p.write_bytes(b"\x00garbage" * 7)
    fresh = open_store(tmp_path / "s")
    np.testing.assert_array_equal(fresh.read_window(rid, 2100, 3900),
                                  ds["signal"].values[:, 2100:3900])


def test_write_recording_then_index_store(tmp_path):
    """Pipelines fill a store from parallel jobs, then index it once."""
    from neurofm.store import index_store, open_recording, write_recording

    root = tmp_path / "s"
    a, b = _rec("01", n_t=3000), _rec("02", n_t=4000, seed=2)
    write_recording(a, root / "A.zarr", attrs={"config_hash": "abc"})
    write_recording(b, root / "B.zarr", compressor="zstd")
    assert open_recording(root / "A.zarr").attrs["config_hash"] == "abc"
    (root / ".tmp-C.zarr-1234").mkdir()  # a crashed job's leftovers are not listed
    store = index_store(root, splits={"A": "train"})
    assert store.ids == ["A", "B"]
    assert store.manifest.set_index("id").loc["A", "split"] == "train"
    np.testing.assert_array_equal(store.read_window("B", 10, 3990),
                                  b["signal"].values[:, 10:3990])
    # a listed recording is never replaced in place: the new version goes beside it and
    # the manifest still lists the old one until index_store switches it
    new = write_recording(b, root / "A.zarr")
    assert new.startswith(str(root / "A@")) and new.endswith(".zarr")
    np.testing.assert_array_equal(open_store(root).read_window("A", 0, 3000),
                                  a["signal"].values)
    store = index_store(root, ids=["A", "B"])
    assert store.manifest.set_index("id").loc["A", "path"] == os.path.basename(new)
    np.testing.assert_array_equal(store.read_window("A", 0, 4000), b["signal"].values)
    assert sorted(p.name for p in root.iterdir() if p.name.endswith(".zarr")) == \
        sorted([os.path.basename(new), "B.zarr"])  # the old version is gone once unlisted
    with pytest.raises(FormatError, match="recording not found"):
        open_recording(root / "nope.zarr")
    with pytest.raises(NeurofmError, match="NaN"):
        write_recording(a.assign(signal=a["signal"] * np.nan), root / "N.zarr")
    assert not (root / "N.zarr").exists()


def _child_add(args):
    path, worker = args
    store = open_store(path)
    for k in range(3):  # same subject in every worker: ids must still come out unique
        store.add(_rec("01", n_t=2000, seed=10 * worker + k), split=f"w{worker}")
    return worker


def test_concurrent_writers_processes(tmp_path):
    path = tmp_path / "s"
    write_store([], path)
    ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
    with ctx.Pool(4) as pool:
        assert sorted(pool.map(_child_add, [(str(path), w) for w in range(4)])) == [0, 1, 2, 3]
    store = open_store(path)
    assert len(store) == 12 and len(set(store.ids)) == 12
    assert sorted(store.manifest["split"].value_counts().tolist()) == [3, 3, 3, 3]
    assert sorted(p.name for p in path.iterdir() if p.name.endswith(".zarr")) == \
        sorted(f"{i}.zarr" for i in store.ids)
    for rid in store.ids:  # every listed recording is complete and readable
        assert store.read_window(rid, 0, 2000).shape == (16, 2000)


def test_overwrite_replaces_a_corrupt_store_and_bad_args_touch_nothing(tmp_path):
    path = tmp_path / "s"
    write_store([_rec("01")], path)
    with pytest.raises(NeurofmError, match="splits has 2 entries"):
        write_store([_rec("02")], path, overwrite=True, splits=["a", "b"])
    assert open_store(path).ids == ["sub-01_ses-1_task-rest_run-1"]  # nothing was lost
    (path / "manifest.parquet").write_bytes(b"garbage")
    store = write_store([_rec("02")], path, overwrite=True)
    assert store.ids == ["sub-02_ses-1_task-rest_run-1"]
