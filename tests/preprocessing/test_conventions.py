"""Convention tests over every preprocessing function: input untouched, history recorded,
canonical output, laziness kept, bad input refused with a NeurofmError."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from neurofm import preprocessing as pp
from neurofm.errors import NeurofmError
from neurofm.schema import history, validate

CALLS = {
    "filter": lambda ds: pp.filter(ds, 1.0, 30.0),
    "notch": lambda ds: pp.notch(ds, 50.0),
    "resample": lambda ds: pp.resample(ds, 64.0),
    "rereference": lambda ds: pp.rereference(ds, "average"),
    "pick": lambda ds: pp.pick(ds, "eeg"),
    "crop": lambda ds: pp.crop(ds, 1.0, 10.0),
    "zscore": lambda ds: pp.zscore(ds),
    "robust_scale": lambda ds: pp.robust_scale(ds)[0],
    "temporal_resample": lambda ds: pp.temporal_resample(ds, 100, 2, start=0),
    "windows": lambda ds: pp.windows(ds, 2.0, 1.0),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_input_untouched_and_history(eeg, name):
    before = eeg.copy(deep=True)
    out = CALLS[name](eeg)
    xr.testing.assert_identical(eeg, before)
    assert history(out)[-1]["step"] == name
    assert len(history(out)) == len(history(eeg)) + 1
    if name != "windows":
        validate(out)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_lazy_input_gives_lazy_output(eeg_lazy, name):
    out = CALLS[name](eeg_lazy)
    assert out["signal"].chunks is not None, f"{name} loaded a dask-backed signal"


@pytest.mark.parametrize("name", sorted(CALLS))
def test_rejects_non_recordings(name):
    with pytest.raises(NeurofmError):
        CALLS[name](xr.Dataset({"x": ("t", np.zeros(3))}))


def test_public_api():
    # every public function is either in CALLS or needs other input (fMRI confounds, calcium)
    assert set(CALLS) | {"clean_confounds", "dff", "robust_scale_stats",
                         "clip_frame_indices"} == set(pp.__all__)
