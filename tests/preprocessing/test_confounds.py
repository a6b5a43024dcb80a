"""clean_confounds against nilearn.signal.clean on real fMRI ROI series and real confounds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from nilearn.signal import clean

from neurofm.datasets import package_file
from neurofm.errors import DataError, NeurofmError
from neurofm.preprocessing import clean_confounds
from neurofm.schema import history, make_recording, validate

COLUMNS = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "csf",
           "white_matter"]


@pytest.fixture(scope="module")
def fmri():
    """30 TRs of nitime's REAL ROI series with nilearn's REAL fMRIPrep confounds table."""
    table = pd.read_csv(package_file("nitime", "data", "fmri_timeseries.csv")).iloc[:30]
    conf = pd.read_csv(package_file("nilearn", "interfaces", "fmriprep", "data",
                                    "test_desc-confounds_regressors.tsv"), sep="\t")
    conf = conf[COLUMNS]
    ds = make_recording(table.to_numpy(dtype=float).T, channel=list(table.columns),
                        sfreq=1 / 1.89, modality="fmri", t_r=1.89)
    return ds.assign(confounds=(("time", "confound"), conf.to_numpy(dtype=float))) \
        .assign_coords(confound=("confound", COLUMNS))


@pytest.mark.parametrize("detrend", [False, True])
def test_equals_nilearn_clean(fmri, detrend):
    out = clean_confounds(fmri, detrend=detrend)
    x = np.asarray(fmri["signal"].values, dtype=np.float64).T
    ref = clean(x, confounds=fmri["confounds"].values, detrend=detrend, standardize=None,
                standardize_confounds=True, filter=False)
    np.testing.assert_allclose(out["signal"].values.T, ref, rtol=1e-4,
                               atol=1e-4 * np.abs(ref).max())
    assert history(out)[-1]["params"]["columns"] == COLUMNS
    validate(out)


def test_subset_of_columns(fmri):
    out = clean_confounds(fmri, columns=["csf", "white_matter"])
    x = np.asarray(fmri["signal"].values, dtype=np.float64).T
    ref = clean(x, confounds=fmri["confounds"].sel(confound=["csf", "white_matter"]).values,
                detrend=False, standardize=None, filter=False)
    np.testing.assert_allclose(out["signal"].values.T, ref, rtol=1e-4,
                               atol=1e-4 * np.abs(ref).max())


def test_lazy(fmri, assert_lazy_matches):
    assert_lazy_matches(clean_confounds, fmri, fmri.chunk({"time": 10}), rtol=1e-5, atol=1e-3)


def test_errors(fmri):
    with pytest.raises(DataError, match="no 'confounds'"):
        clean_confounds(fmri.drop_vars(["confounds", "confound"]))
    with pytest.raises(DataError, match="nope"):
        clean_confounds(fmri, columns=["nope"])
    conf = fmri["confounds"].values.copy()
    conf[0, 2] = np.nan
    with pytest.raises(DataError, match="trans_z"):
        clean_confounds(fmri.assign(confounds=(("time", "confound"), conf)))
    with pytest.raises(NeurofmError, match="standardize_confounds"):
        clean_confounds(fmri, standardize_confounds=False)
