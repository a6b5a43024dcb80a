"""The memory-mapped window path: taken for the default layout, refused for anything it
cannot map, and never serving data of a replaced recording."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from neurofm.schema import make_recording
from neurofm.store import (
    WindowIndexError,
    index_store,
    open_recording,
    open_store,
    write_store,
)
from neurofm.store._fsutil import quiet_zarr


def _rec(n_t, seed=0, n_ch=8, subject="01"):
    rng = np.random.default_rng(seed)
    return make_recording(rng.standard_normal((n_ch, n_t)) * 30,
                          channel=[f"C{i}" for i in range(n_ch)], sfreq=100.0,
                          modality="eeg", subject=subject)


def test_fast_path_is_taken_for_the_default_layout(tmp_path, monkeypatch):
    import zarr
    from zarr.codecs import BytesCodec, Crc32cCodec

    ds = _rec(5000)
    store = write_store([ds], tmp_path / "s", chunk_seconds=10.0)
    rid = store.ids[0]
    arr = zarr.open_group(str(tmp_path / "s" / f"{rid}.zarr"), mode="r")["signal"]
    # the layout the memory maps assume: raw little-endian float32 then a crc32c trailer
    codecs = arr.metadata.codecs
    assert [type(c) for c in codecs] == [BytesCodec, Crc32cCodec]
    assert codecs[0].endian.value == "little" and arr.dtype == np.float32
    chunk_file = tmp_path / "s" / f"{rid}.zarr" / "signal" / "c" / "0" / "3"
    assert chunk_file.stat().st_size == 8 * 1000 * 4 + 4
    assert store._uses_fast_path(rid)

    def no_zarr(*args, **kwargs):
        raise AssertionError("read_window went through zarr instead of the memory maps")

    monkeypatch.setattr(zarr.Array, "__getitem__", no_zarr)
    np.testing.assert_array_equal(store.read_window(rid, 950, 3050),
                                  ds["signal"].values[:, 950:3050])


def test_compressed_store_is_not_mapped(tmp_path):
    ds = _rec(3000)
    store = write_store([ds], tmp_path / "s", compressor="zstd")
    assert not store._uses_fast_path(store.ids[0])
    np.testing.assert_array_equal(store.read_window(store.ids[0], 10, 2000),
                                  ds["signal"].values[:, 10:2000])


def test_float64_signal_registered_with_index_store(tmp_path):
    """A foreign float64 group with the raw bytes codec: read through zarr, right values."""
    ds = _rec(4000, seed=3)
    sig64 = ds["signal"].astype(np.float64) + 1e-9  # values not exactly float32
    foreign = ds.assign(signal=sig64)
    for var in foreign.variables.values():
        var.encoding = {}
    with quiet_zarr():
        foreign.to_zarr(tmp_path / "s" / "X.zarr", mode="w", zarr_format=3,
                        consolidated=True,
                        encoding={"signal": {"chunks": (8, 1000), "compressors": None}})
    store = index_store(tmp_path / "s")
    assert store.ids == ["X"]
    assert not store._uses_fast_path("X")
    w = store.read_window("X", 500, 2500)
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w, sig64.values[:, 500:2500].astype(np.float32))
    assert np.abs(w).max() < 500  # not reinterpreted float64 bytes (values like 1e19)


def test_replacement_by_another_store_object_is_seen(tmp_path):
    old, new = _rec(6000, seed=1), _rec(2500, seed=2)
    path = tmp_path / "s"
    reader = write_store([old], path, chunk_seconds=10.0)
    rid = reader.ids[0]
    np.testing.assert_array_equal(reader.read_window(rid, 0, 6000), old["signal"].values)
    token_before = reader.manifest["token"].iloc[0]
    writer = open_store(path)
    writer.add(new, id=rid, overwrite=True, chunk_seconds=10.0)
    # the first Store object has every chunk of the old version mapped: it must notice
    np.testing.assert_array_equal(reader.read_window(rid, 0, 2500), new["signal"].values)
    np.testing.assert_array_equal(reader.read_window(rid, 900, 2100),
                                  new["signal"].values[:, 900:2100])
    with pytest.raises(WindowIndexError, match=r"n_times \(2500\)"):
        reader.read_window(rid, 2000, 3000)
    assert reader.manifest["token"].iloc[0] != token_before
    assert len(reader) == 1


def test_write_token_in_attrs_and_manifest(tmp_path):
    import zarr

    store = write_store([_rec(1000)], tmp_path / "s")
    row = store.manifest.iloc[0]
    group = zarr.open_group(str(tmp_path / "s" / row["path"]), mode="r")
    assert len(row["token"]) == 16
    assert group.attrs["neurofm_write_token"] == row["token"]
    # private attributes do not leak into the Dataset
    ds = open_recording(tmp_path / "s" / row["path"])
    assert "neurofm_write_token" not in ds.attrs
    xr.testing.assert_identical(store[row["id"]].load(), _rec(1000))


def test_group_replaced_outside_the_store_is_refused(tmp_path):
    """A version folder whose token is not the manifest's is not read as if it were."""
    import shutil

    from neurofm.errors import FormatError
    from neurofm.store import write_recording

    path = tmp_path / "s"
    store = write_store([_rec(3000, seed=1)], path)
    rid = store.ids[0]
    other = write_recording(_rec(3000, seed=9), tmp_path / "elsewhere.zarr")
    shutil.rmtree(path / f"{rid}.zarr")
    shutil.copytree(other, path / f"{rid}.zarr")
    with pytest.raises(FormatError, match="replaced outside the store"):
        open_store(path).read_window(rid, 0, 10)
