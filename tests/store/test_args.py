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
