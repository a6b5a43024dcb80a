"""Registry test: no preprocessing output shares a writable buffer with the caller's data.

Every public function of :mod:`neurofm.preprocessing` (plus ``dff`` and
:func:`neurofm.io.celegans.resample_celegans`) runs on one recording that carries every kind
of variable (signal, ``bad``, ``ch_pos``, ``ch_units``, events, a ``confounds`` table on
time). For every variable and coordinate of the output, its buffer must not overlap a
buffer of the input unless both are read-only (xarray's pandas indexes), and writing into
every writable array of the output must leave the input identical.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from neurofm import preprocessing as pp
from neurofm.io.celegans import resample_celegans
from neurofm.schema import make_recording

#: name -> call on a recording; the output is a Dataset (or a tuple holding Datasets)
REGISTRY = {
    "clean_confounds": lambda ds: pp.clean_confounds(ds),
    "crop": lambda ds: pp.crop(ds, 1.0, 8.0),
    "crop/all": lambda ds: pp.crop(ds),  # the whole span: a pure slice of the input
    "dff": lambda ds: pp.dff(ds, window_s=2.0),
    "filter": lambda ds: pp.filter(ds, 1.0, 20.0),
    "notch": lambda ds: pp.notch(ds, 25.0),
    "pick": lambda ds: pp.pick(ds, "eeg"),
    "pick/all": lambda ds: pp.pick(ds, exclude_bad=False),
    "rereference": lambda ds: pp.rereference(ds, "average"),
    "resample": lambda ds: pp.resample(ds, 50.0),
    "resample/noop": lambda ds: pp.resample(ds, 100.0),
    "robust_scale": lambda ds: pp.robust_scale(ds),
    "robust_scale_stats": lambda ds: pp.robust_scale_stats([ds], method="channel"),
    "temporal_resample": lambda ds: pp.temporal_resample(ds, 100, 3, start=0),
    "windows": lambda ds: pp.windows(ds, 2.0, 1.0),
    "windows/one": lambda ds: pp.windows(ds.isel(channel=[0]), 10.0, 10.0),
    "zscore": lambda ds: pp.zscore(ds),
    "resample_celegans": lambda ds: resample_celegans(ds, dt=0.03),
}

#: public names that take no recording (nothing to alias)
NOT_RECORDING_FUNCTIONS = {"clip_frame_indices"}


def _rich_recording():
    """Generated 8-channel EEG-like recording (100 Hz, 10 s, positive values) with positions,
    one bad channel, per-channel units, three events and a confounds table."""
    rng = np.random.default_rng(3)
    n_ch, n_t = 8, 1000
    x = 100.0 + rng.standard_normal((n_ch, n_t))
    pos = rng.standard_normal((n_ch, 3)) * 0.05
    ds = make_recording(x, channel=[f"E{i}" for i in range(n_ch)], sfreq=100.0,
                        modality="eeg", ch_pos=pos, bad=["E3"],
                        units=["uV"] * (n_ch - 1) + ["V"],
                        events=[(0.5, 0.0, "a"), (2.0, 0.1, "b"), (9.0, 0.0, "c")],
                        subject="01")
    conf = rng.standard_normal((n_t, 3))
    return ds.assign(confounds=(("time", "confound"), conf)).assign_coords(
        confound=["c0", "c1", "c2"])


def _datasets(result):
    if isinstance(result, xr.Dataset):
        return [result]
    return [r for r in result if isinstance(r, xr.Dataset)]


def _numpy_buffers(ds):
    """name -> numpy array of every numpy-backed variable (index coordinates included)."""
    out = {}
    for name, var in ds.variables.items():
        if getattr(var, "chunks", None) is not None:
            continue  # dask-backed: no buffer until computed
        out[name] = np.asarray(var.values)
    return out


def _check_no_alias(inp, result, label):
    before = inp.copy(deep=True)
    src = _numpy_buffers(inp)
    for out in _datasets(result):
        for name, arr in _numpy_buffers(out).items():
            for src_name, src_arr in src.items():
                if np.shares_memory(arr, src_arr):
                    assert not arr.flags.writeable and not src_arr.flags.writeable, (
                        f"{label}: output {name!r} shares a writable buffer with input "
                        f"{src_name!r}")
        # write into every writable array of the output: the input must not change
        for var in out.variables.values():
            if getattr(var, "chunks", None) is not None:
                continue
            arr = var.values
            if not arr.flags.writeable or arr.size == 0:
                continue
            flat = arr.reshape(-1)
            if arr.dtype.kind == "b":
                flat[...] = ~flat
            elif arr.dtype.kind in "fiuc":
                flat[...] = 12345
            else:
                flat[...] = "zz"
    xr.testing.assert_identical(inp, before)


def _function_of(case):
    """The public function a registry case calls (cases may add a suffix after '/')."""
    return case.split("/")[0]


def test_registry_covers_every_public_function():
    import inspect

    covered = {_function_of(case) for case in REGISTRY}
    public = {name for name, obj in vars(pp).items()
              if not name.startswith("_") and inspect.isfunction(obj)}
    assert public == set(pp.__all__)
    assert public - NOT_RECORDING_FUNCTIONS <= covered
    assert set(pp.__all__) >= NOT_RECORDING_FUNCTIONS
    assert {"dff", "resample_celegans"} <= covered


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_output_shares_no_writable_buffer_with_input(name):
    ds = _rich_recording()
    _check_no_alias(ds, REGISTRY[name](ds), name)


@pytest.fixture(scope="module")
def rich_store(tmp_path_factory):
    from neurofm.store import write_store

    return write_store([_rich_recording()], tmp_path_factory.mktemp("alias") / "store",
                       chunk_seconds=2.0)


LAZY_CASES = sorted(set(REGISTRY) - {"resample_celegans"})  # eager-only by design


@pytest.mark.parametrize("name", LAZY_CASES)
def test_lazy_signal_output_shares_no_writable_buffer_with_input(name):
    """Dask-backed signal and confounds, channel and event coordinates in memory (the
    layout of a lazy file read)."""
    ds = _rich_recording()
    ds = ds.assign(signal=ds["signal"].chunk({"time": 250}),
                   confounds=ds["confounds"].chunk({"time": 250}))
    result = REGISTRY[name](ds)
    assert all(out["signal"].chunks is not None for out in _datasets(result)
               if "signal" in out)
    _check_no_alias(ds, result, name)


@pytest.mark.parametrize("name", LAZY_CASES)
def test_store_backed_output_shares_no_writable_buffer_with_input(rich_store, name):
    ds = rich_store.open(rich_store.ids[0], chunks={})
    assert ds["signal"].chunks is not None
    result = REGISTRY[name](ds)
    # computed results are fresh arrays: writing into them leaves the store's data alone
    for out in _datasets(result):
        _check_no_alias(ds, out.load(), name)


def test_crop_output_is_not_a_view():
    ds = _rich_recording()
    out = pp.crop(ds, 1.0, 3.0)
    out["signal"].values[:] = 0.0
    assert np.all(ds["signal"].values > 90)  # the documented symptom: writes reached the input


def test_bad_flag_of_output_is_not_the_input_buffer():
    ds = _rich_recording()
    for func in (lambda d: pp.filter(d, 1.0, 20.0), pp.zscore, lambda d: pp.resample(d, 50.0)):
        out = func(ds)
        out["bad"].values[0] = True
        out["ch_pos"].values[0, 0] = 99.0
        out["event_onset"].values[0] = 99.0
        assert not ds["bad"].values[0]
        assert ds["ch_pos"].values[0, 0] != 99.0
        assert ds["event_onset"].values[0] == 0.5
