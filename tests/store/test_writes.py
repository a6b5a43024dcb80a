"""Writers: concurrent adds to fsspec URLs, the cross-platform lock, manifest provenance
columns, and a lazy recording computed once while it is written."""

from __future__ import annotations

import json
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from neurofm.errors import DataError
from neurofm.schema import make_recording
from neurofm.store import (
    ConcurrentWriteError,
    open_recording,
    open_store,
    write_recording,
    write_store,
)


def _rec(n_t=500, seed=0, subject="01", n_ch=4, **attrs):
    rng = np.random.default_rng(seed)
    return make_recording(rng.standard_normal((n_ch, n_t)), channel=[f"C{i}" for i in
                                                                      range(n_ch)],
                          sfreq=100.0, modality="eeg", subject=subject, **attrs)


@pytest.fixture
def memory_url():
    import fsspec

    root = f"/neurofm-test-{uuid.uuid4().hex[:8]}"
    yield f"memory://{root}/store"
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_concurrent_adds_on_a_memory_url_lose_nothing(memory_url):
    store = write_store([], memory_url)

    def add(k):  # half of the writers share a base id: ids must come out unique
        return store.add(_rec(seed=k, subject="01" if k % 2 else f"{k:02d}"))

    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(add, range(16)))
    assert len(set(ids)) == 16
    reopened = open_store(memory_url)
    assert sorted(reopened.ids) == sorted(ids)
    for k, rid in enumerate(ids):
        np.testing.assert_array_equal(reopened.read_window(rid, 0, 500),
                                      _rec(seed=k)["signal"].values)
    assert reopened.verify().ok


def test_a_second_remote_writer_process_is_refused(memory_url):
    import fsspec

    store = write_store([_rec()], memory_url)
    fs = fsspec.filesystem("memory")
    root = memory_url.removeprefix("memory://")
    lease = {"owner": "other", "host": "some-other-machine", "pid": 1234,
             "time": __import__("time").time()}
    with fs.open(f"{root}/.writer-lease.json", "wb") as fid:
        fid.write(json.dumps(lease).encode())
    with pytest.raises(ConcurrentWriteError, match=r"another writer \(host some-other-machine,"
                                                   r" pid 1234\).*write_recording"):
        store.add(_rec(subject="02"))
    assert open_store(memory_url).ids == ["sub-01"]
    # a lease left by a dead process of this machine is taken over
    from neurofm.store._fsutil import host_tag

    lease.update(host=host_tag(), pid=2 ** 22 + 17)
    with fs.open(f"{root}/.writer-lease.json", "wb") as fid:
        fid.write(json.dumps(lease).encode())
    store.add(_rec(subject="02"))
    assert sorted(open_store(memory_url).ids) == ["sub-01", "sub-02"]
    assert not fs.exists(f"{root}/.writer-lease.json")


def test_local_lock_is_a_filelock(tmp_path, monkeypatch):
    import filelock

    taken = []

    class Counting(filelock.FileLock):
        def acquire(self, *args, **kwargs):
            taken.append(self.lock_file)
            return super().acquire(*args, **kwargs)

    monkeypatch.setattr(filelock, "FileLock", Counting)
    store = write_store([], tmp_path / "s")
    store.add(_rec())
    assert os.path.join(str(tmp_path / "s"), ".lock") in taken
    # a writer waits for whoever holds the lock
    held = filelock.FileLock(str(tmp_path / "s" / ".lock"))
    held.acquire()
    done = threading.Event()
    worker = threading.Thread(target=lambda: (store.add(_rec(subject="02")), done.set()))
    worker.start()
    assert not done.wait(1.0)
    held.release()
    worker.join(30)
    assert done.is_set() and len(open_store(tmp_path / "s")) == 2


def test_manifest_provenance_columns(tmp_path):
    store = write_store([_rec(source_file="/data/a.edf", source_hash="abc123"),
                         _rec(subject="02")], tmp_path / "s")
    m = store.manifest.set_index("id")
    assert m.loc["sub-01", "source_file"] == "/data/a.edf"
    assert m.loc["sub-01", "source_hash"] == "abc123"
    assert m.loc["sub-02", "source_file"] == "" and m.loc["sub-02", "source_hash"] == ""
    # a manifest written before these columns (and the token) existed still opens
    old = pd.read_parquet(tmp_path / "s" / "manifest.parquet")
    old.drop(columns=["source_file", "source_hash", "token"]).to_parquet(
        tmp_path / "s" / "manifest.parquet", index=False)
    reopened = open_store(tmp_path / "s")
    assert list(reopened.manifest["source_file"]) == ["", ""]
    np.testing.assert_array_equal(reopened.read_window("sub-01", 0, 500),
                                  _rec()["signal"].values)
    reopened.add(_rec(subject="03", source_file="/data/c.edf"))
    assert open_store(tmp_path / "s").manifest.set_index("id").loc["sub-03", "source_file"] \
        == "/data/c.edf"


def test_lazy_recording_is_computed_once(tmp_path):
    import dask

    calls = []

    def count(block, block_info=None):
        calls.append(block_info[0]["chunk-location"])
        return block

    ds = _rec(n_t=4000).chunk({"time": 1000})
    data = ds["signal"].data.map_blocks(count, dtype=np.float32)
    lazy = ds.assign(signal=ds["signal"].copy(data=data))
    with dask.config.set(scheduler="synchronous"):
        write_recording(lazy, tmp_path / "r.zarr", chunk_seconds=10.0)
    assert sorted(calls) == [(0, 0), (0, 1), (0, 2), (0, 3)]  # each block exactly once
    np.testing.assert_array_equal(open_recording(tmp_path / "r.zarr")["signal"].values,
                                  _rec(n_t=4000)["signal"].values)


def test_lazy_nan_is_found_while_writing(tmp_path):
    ds = _rec(n_t=4000)
    sig = ds["signal"].values.copy()
    sig[2, 2500] = np.inf
    lazy = ds.assign(signal=ds["signal"].copy(data=sig)).chunk({"time": 1000})
    with pytest.raises(DataError, match=r"r\.zarr: signal has 1 NaN/Inf values in samples "
                                        r"2000-3000 of channel\(s\) C2"):
        write_recording(lazy, tmp_path / "r.zarr", chunk_seconds=10.0)
    assert os.listdir(tmp_path) == []  # nothing left behind
    # unrecorded channels may hold NaN (C. elegans slots), recorded ones may not
    sig = ds["signal"].values.copy()
    sig[1] = np.nan
    ok = ds.assign(signal=ds["signal"].copy(data=sig))
    ok = ok.assign_coords(recorded=("channel", [True, False, True, True])).chunk({"time": 500})
    write_recording(ok, tmp_path / "ok.zarr")
    assert np.isnan(open_recording(tmp_path / "ok.zarr")["signal"].values[1]).all()


def test_remote_reader_follows_a_replacement(memory_url):
    reader = write_store([_rec(n_t=3000, seed=1)], memory_url, chunk_seconds=5.0)
    np.testing.assert_array_equal(reader.read_window("sub-01", 0, 3000),
                                  _rec(n_t=3000, seed=1)["signal"].values)
    open_store(memory_url).add(_rec(n_t=1000, seed=2), id="sub-01", overwrite=True)
    # the old version is gone: the reader re-reads the manifest instead of failing
    np.testing.assert_array_equal(reader.read_window("sub-01", 0, 1000),
                                  _rec(n_t=1000, seed=2)["signal"].values)


def test_store_pickles_without_its_maps(tmp_path):
    import pickle

    store = write_store([_rec(n_t=2000)], tmp_path / "s")
    store.read_window("sub-01", 0, 100)
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.read_window("sub-01", 5, 1500),
                                  _rec(n_t=2000)["signal"].values[:, 5:1500])


def test_index_store_removes_dead_writers_leftovers_only(tmp_path):
    from neurofm.store import index_store
    from neurofm.store._fsutil import host_tag

    root = tmp_path / "s"
    write_recording(_rec(), root / "A.zarr")
    dead = root / f".tmp-0123456789abcdef-{2 ** 22 + 17}-{host_tag()}-C.zarr"
    live = root / f".tmp-0123456789abcdef-{os.getpid()}-{host_tag()}-D.zarr"
    foreign = root / ".tmp-0123456789abcdef-42-othermachine-E.zarr"  # recent: kept
    for p in (dead, live, foreign):
        p.mkdir()
    (root / ".tmp-deadbeef-manifest.parquet").write_bytes(b"x")  # no live writer holds it
    store = index_store(root)
    assert store.ids == ["A"]
    left = sorted(p.name for p in root.iterdir() if p.name.startswith(".tmp-"))
    assert left == sorted([live.name, foreign.name])
