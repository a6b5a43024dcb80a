"""zscore and robust scaling against scipy / scikit-learn / the Brain-JEPA formula."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import xarray as xr
from sklearn.preprocessing import RobustScaler

from neurofm.errors import DataError, NeurofmError
from neurofm.preprocessing import robust_scale, robust_scale_stats, zscore
from neurofm.schema import history, make_recording, validate


def test_zscore_equals_scipy(eeg):
    out = zscore(eeg)
    ref = scipy.stats.zscore(np.asarray(eeg["signal"].values, dtype=np.float64), axis=1)
    np.testing.assert_allclose(out["signal"].values, ref, rtol=1e-5, atol=1e-5)
    assert out["signal"].attrs["units"] == "z"
    validate(out)
    across = zscore(eeg, dim="channel")
    ref = scipy.stats.zscore(np.asarray(eeg["signal"].values, dtype=np.float64), axis=0)
    np.testing.assert_allclose(across["signal"].values, ref, rtol=1e-5, atol=1e-5)


def test_zscore_constant_channel_is_zero(small_recording):
    sig = small_recording["signal"].values.copy()
    sig[2] = 7.0
    ds = small_recording.copy()
    ds["signal"] = (("channel", "time"), sig, {"units": "uV"})
    out = zscore(ds)
    np.testing.assert_array_equal(out["signal"].values[2], 0.0)


def test_zscore_lazy(eeg, eeg_lazy, assert_lazy_matches):
    assert_lazy_matches(zscore, eeg, eeg_lazy, atol=1e-5)


def test_robust_scale_equals_sklearn(eeg):
    out, stats = robust_scale(eeg)
    x = np.asarray(eeg["signal"].values, dtype=np.float64)
    scaler = RobustScaler().fit(x.T)
    np.testing.assert_allclose(out["signal"].values, scaler.transform(x.T).T, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(stats["median"].values, scaler.center_)
    np.testing.assert_allclose(stats["iqr"].values, scaler.scale_)
    xr.testing.assert_identical(robust_scale_stats(eeg, method="channel"), stats)
    assert history(out)[-1]["step"] == "robust_scale"
    validate(out)


def test_robust_scale_lazy_and_reuse(eeg, eeg_lazy):
    out, stats = robust_scale(eeg_lazy)
    assert out["signal"].chunks is not None
    ref, ref_stats = robust_scale(eeg)
    np.testing.assert_allclose(stats["median"].values, ref_stats["median"].values)
    np.testing.assert_allclose(out["signal"].values, ref["signal"].values, atol=1e-5)
    # the same stats applied to a channel subset in another order
    sub = eeg.isel(channel=[3, 1])
    again, _ = robust_scale(sub, stats)
    np.testing.assert_allclose(again["signal"].values, ref["signal"].values[[3, 1]], atol=1e-6)


def _subjects():
    """Generated fMRI-like ROI series for 7 subjects with subject-specific offsets."""
    rng = np.random.default_rng(3)
    recs = []
    for s in range(7):
        x = rng.standard_normal((5, 60)) + rng.normal(100, 10, size=(5, 1))
        recs.append(make_recording(x, channel=[f"R{i}" for i in range(5)], sfreq=0.5,
                                   modality="fmri", subject=f"{s:02d}"))
    return recs


def test_brainjepa_stats_follow_reference_formula():
    recs = _subjects()
    stats = robust_scale_stats(recs, method="subject_means")
    means = np.stack([np.asarray(r["signal"].values, dtype=np.float64).mean(axis=1)
                      for r in recs])
    np.testing.assert_allclose(stats["median"].values, np.median(means, axis=0))
    np.testing.assert_allclose(stats["iqr"].values, np.percentile(means, 75, axis=0)
                               - np.percentile(means, 25, axis=0))
    out, used = robust_scale(recs[0], stats)
    x = np.asarray(recs[0]["signal"].values, dtype=np.float64)
    ref = (x - np.median(means, 0)[:, None]) / used["iqr"].values[:, None]
    np.testing.assert_allclose(out["signal"].values, ref, rtol=1e-5)
    assert history(out)[-1]["params"]["method"] == "subject_means"


def test_pooled_stats():
    recs = _subjects()
    stats = robust_scale_stats(recs, method="pooled")
    allx = np.concatenate([np.asarray(r["signal"].values, dtype=np.float64) for r in recs],
                          axis=1)
    np.testing.assert_allclose(stats["median"].values, np.median(allx, axis=1))


def test_robust_scale_errors(eeg):
    recs = _subjects()
    with pytest.raises(DataError, match="different channels"):
        robust_scale_stats([recs[0], recs[1].isel(channel=[0, 1])])
    stats = robust_scale_stats(recs)
    with pytest.raises(DataError, match="no entry for channels"):
        robust_scale(eeg, stats)
    with pytest.raises(NeurofmError, match="quantile_range"):
        robust_scale(eeg, quantile_range=(80, 20))
