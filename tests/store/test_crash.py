"""SIGKILL a writer at every step of a store update: the store must open, list consistent
rows, and every listed recording must read as either its old or its new data.

The writer runs in a forked child that kills itself (SIGKILL) at the step named by
$NEUROFM_STORE_CRASH_AT (see neurofm.store._fsutil.crash_point).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

import numpy as np
import pytest

from neurofm.schema import make_recording
from neurofm.store import index_store, open_store, write_recording, write_store
from neurofm.store._fsutil import CRASH_ENV

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")

OLD_T, NEW_T = 5000, 2000


def _rec(n_t, seed, subject="01"):
    rng = np.random.default_rng(seed)
    return make_recording(rng.standard_normal((8, n_t)) * 30,
                          channel=[f"C{i}" for i in range(8)], sfreq=100.0, modality="eeg",
                          subject=subject)


def _writer(path, mode, point):
    os.environ[CRASH_ENV] = point
    import dask

    with dask.config.set(scheduler="synchronous"):
        new = _rec(NEW_T, seed=1).chunk({"time": 500})  # lazy: written block by block
        if mode == "overwrite":
            open_store(path).add(new, id="r", overwrite=True, chunk_seconds=5.0)
        elif mode == "add":
            open_store(path).add(_rec(NEW_T, seed=2, subject="02").chunk({"time": 500}),
                                 chunk_seconds=5.0)
        else:  # the pipeline contract: write_recording, then index_store
            write_recording(new, os.path.join(path, "r.zarr"), chunk_seconds=5.0)
            index_store(path, ids=["r"])
    os._exit(0)


POINTS = {
    "overwrite": ["writing", "staged", "locked", "renamed", "manifest-tmp", "manifest",
                  "moved-aside", "dropped"],
    "add": ["writing", "staged", "locked", "renamed", "manifest-tmp", "manifest"],
    "pipeline": ["writing", "staged", "publish-locked", "publish-renamed",
                 "index-manifest-tmp", "index-manifest", "index-cleanup"],
}


def _trial(tmp_path, mode, point):
    path = str(tmp_path / f"{mode}-{point}")
    old = _rec(OLD_T, seed=0)
    if mode == "pipeline":
        write_recording(old, os.path.join(path, "r.zarr"), chunk_seconds=5.0)
        index_store(path, ids=["r"])
    else:
        write_store([], path).add(old, id="r", chunk_seconds=5.0)
    assert open_store(path).ids == ["r"]
    ctx = mp.get_context("fork")
    proc = ctx.Process(target=_writer, args=(path, mode, point))
    proc.start()
    proc.join(60)
    killed = proc.exitcode == -signal.SIGKILL

    store = open_store(path)                      # opens, rows consistent with folders
    assert len(set(store.ids)) == len(store.ids)
    report = store.verify()
    assert report.ok, report.problems
    first = "r"
    assert store.ids[0] == "r"
    m = store.manifest.set_index("id")
    w = store.read_window(first, 0, int(m.loc[first, "n_times"]))
    new = _rec(NEW_T, seed=1)["signal"].values
    is_old = w.shape[1] == OLD_T and np.array_equal(w, old["signal"].values)
    is_new = w.shape[1] == NEW_T and np.array_equal(w, new)
    assert is_old or (mode != "add" and is_new), f"{mode}@{point}: neither old nor new data"
    if mode == "add" and len(store) == 2:
        np.testing.assert_array_equal(store.read_window(store.ids[1], 0, NEW_T),
                                      _rec(NEW_T, seed=2)["signal"].values)
    n = len(store)
    store.add(_rec(100, seed=5, subject="09"))    # the lock was released by the kill
    assert len(open_store(path)) == n + 1
    return killed


@pytest.mark.parametrize("mode", ["overwrite", pytest.param("add", marks=pytest.mark.slow),
                                  "pipeline"])
def test_sigkill_at_every_step(tmp_path, mode, capsys):
    """Plain add is also killed mid-write in a fresh interpreter by test_store.py."""
    safe = sum(_trial(tmp_path, mode, point) for point in POINTS[mode])
    # every step was reached (the writer really died there) and left a consistent store
    assert safe == len(POINTS[mode])
    with capsys.disabled():
        print(f"\n{mode}: {safe}/{len(POINTS[mode])} crash points safe")
