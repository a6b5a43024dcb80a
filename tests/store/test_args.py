"""read_window arguments: every misuse is a NeurofmError naming the argument."""

from __future__ import annotations

import numpy as np
import pytest

from neurofm.errors import DataError, NeurofmError
from neurofm.schema import make_recording
from neurofm.store import (
    ArgumentTypeError,
    ChannelIndexError,
    RecordingNotFound,
    WindowIndexError,
    write_store,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(0)
    ds = make_recording(rng.standard_normal((4, 1000)), channel=list("abcd"), sfreq=100.0,
                        modality="eeg", subject="01")
    return write_store([ds], tmp_path_factory.mktemp("args") / "s"), ds


def test_unknown_id(store):
    store, _ = store
    with pytest.raises(RecordingNotFound, match=r"no recording 'nope' \(argument rec_id\); "
                                                r"ids: 'sub-01'") as info:
        store.read_window("nope", 0, 1)
    assert isinstance(info.value, KeyError) and isinstance(info.value, NeurofmError)
    with pytest.raises(KeyError):
        store["nope"]


@pytest.mark.parametrize("channels", [[99], [0, -5], np.array([4])])
def test_channel_out_of_range(store, channels):
    store, _ = store
    with pytest.raises(ChannelIndexError, match=r"channels \[.*\] out of range for a "
                                                r"recording with 4 channels") as info:
        store.read_window("sub-01", 0, 10, channels=channels)
    assert isinstance(info.value, IndexError) and isinstance(info.value, NeurofmError)


@pytest.mark.parametrize("start, stop, name", [(None, 10, "start"), (1.5, 3.7, "start"),
                                               (0, 3.7, "stop"), ("0", 10, "start"),
                                               (0, np.float64(5), "stop"), (True, 5, "start")])
def test_non_integer_indices(store, start, stop, name):
    store, _ = store
    with pytest.raises(ArgumentTypeError, match=rf"{name} must be an integer sample index") \
            as info:
        store.read_window("sub-01", start, stop)
    assert isinstance(info.value, TypeError) and isinstance(info.value, NeurofmError)


def test_numpy_integers_and_selections(store):
    store, ds = store
    truth = ds["signal"].values
    np.testing.assert_array_equal(store.read_window("sub-01", np.int64(10), np.int32(20)),
                                  truth[:, 10:20])
    np.testing.assert_array_equal(store.read_window("sub-01", 0, 5, channels=[3, -1]),
                                  truth[[3, 3], :5])
    np.testing.assert_array_equal(store.read_window("sub-01", 0, 5, channels=slice(1, 3)),
                                  truth[1:3, :5])
    with pytest.raises(ArgumentTypeError, match="channels must be"):
        store.read_window("sub-01", 0, 5, channels=[0.5])


def test_window_out_of_range(store):
    store, _ = store
    with pytest.raises(WindowIndexError, match=r"0 <= start < stop <= n_times \(1000\)") \
            as info:
        store.read_window("sub-01", 990, 1001)
    assert isinstance(info.value, DataError) and isinstance(info.value, IndexError)


@pytest.mark.parametrize("compressor", [None, "zstd"])  # memory-mapped / zarr read path
def test_read_window_into_out_equals_fresh_read(tmp_path, compressor):
    from neurofm.store import write_store
    from neurofm.store.errors import ArgumentTypeError as ArgError

    rec = make_recording(np.arange(3 * 500, dtype=np.float32).reshape(3, 500), sfreq=100.0,
                         channel=["a", "b", "c"], modality="eeg", subject="01")
    store = write_store([rec], tmp_path / "s", compressor=compressor, chunk_seconds=1.0)
    rid = store.ids[0]
    assert store._uses_fast_path(rid) == (compressor is None)
    buf = np.full((2, 3, 120), np.nan, dtype=np.float32)
    got = store.read_window(rid, 370, 490, out=buf[1])
    assert got is not None and np.shares_memory(got, buf)
    np.testing.assert_array_equal(buf[1], store.read_window(rid, 370, 490))
    assert np.isnan(buf[0]).all()  # nothing written outside out
    for bad in (np.empty((3, 119), np.float32), np.empty((3, 120), np.float64),
                np.empty((3, 120), np.float32)[:, ::1].T, [[0.0] * 120] * 3):
        with pytest.raises(ArgError, match="out must be a writeable float32"):
            store.read_window(rid, 370, 490, out=bad)
    with pytest.raises(ArgError, match="out= reads all channels"):
        store.read_window(rid, 370, 490, channels=[0], out=np.empty((1, 120), np.float32))


def test_read_windows_equals_read_window(tmp_path):
    from neurofm.store import write_store
    from neurofm.store.errors import ArgumentTypeError as ArgError

    rng = np.random.default_rng(0)
    recs = [make_recording(rng.standard_normal((3, n)).astype(np.float32), sfreq=100.0,
                           channel=["a", "b", "c"], modality="eeg", subject=s)
            for s, n in (("01", 500), ("02", 400))]
    store = write_store(recs, tmp_path / "s", chunk_seconds=1.0)
    a, b = store.ids
    wins = [(b, 0, 150), (a, 333, 483), (a, 0, 150), (b, 250, 400)]
    got = store.read_windows(wins)
    assert got.shape == (4, 3, 150) and got.dtype == np.float32
    for k, w in enumerate(wins):
        np.testing.assert_array_equal(got[k], store.read_window(*w))
    # windows inside one chunk (the mapped fast loop) and across chunk boundaries, mixed
    short = [(a, 10, 60), (a, 75, 125), (b, 310, 360), (a, 450, 500), (b, 0, 50)]
    got = store.read_windows(short)
    for k, w in enumerate(short):
        np.testing.assert_array_equal(got[k], store.read_window(*w))
        np.testing.assert_array_equal(got[k], recs[0 if w[0] == a else 1]["signal"].values[
            :, w[1]:w[2]])
    with pytest.raises(WindowIndexError, match="start < stop <= n_times"):
        store.read_windows([(a, 10, 60), (a, 460, 510)])
    with pytest.raises(DataError, match="differ in"):
        store.read_windows([(a, 0, 150), (a, 0, 151)])
    with pytest.raises(ArgError, match="out must be"):
        store.read_windows(wins, out=np.empty((3, 3, 150), np.float32))
    with pytest.raises(ArgError, match="start must be an integer"):
        store.read_windows([(a, 0.5, 150)])
