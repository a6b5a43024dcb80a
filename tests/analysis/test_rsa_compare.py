"""RDM comparators and noise ceilings: parity with rsatoolbox, definitions, NaN handling."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from neurofm.analysis import _rdm_compare, rsa
from neurofm.errors import DataError, NeurofmError

pytest.importorskip("rsatoolbox")
from rsatoolbox.inference import boot_noise_ceiling
from rsatoolbox.rdm import RDMs, compare

TOL = 1e-10
METHODS = ["cosine", "corr", "spearman", "rho-a", "tau-a", "kendall", "corr_cov", "cosine_cov"]
K = 9
N_PAIRS = K * (K - 1) // 2


def _stacks(seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((4, N_PAIRS))
    b = rng.standard_normal((5, N_PAIRS))
    a[2] = np.round(2 * a[2])  # ties in both sets, incl. a model-like step RDM
    b[1] = np.round(b[1])
    b[3] = (np.arange(N_PAIRS) % 3).astype(float)
    return a, b


@pytest.mark.parametrize("method", METHODS)
def test_comparators_match_rsatoolbox(method):
    a, b = _stacks(1)
    ref = compare(RDMs(a), RDMs(b), method=method)
    np.testing.assert_allclose(rsa.compare_rdms(a, b, method=method), ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_comparators_with_shared_nan_entries_match_rsatoolbox(method):
    a, b = _stacks(2)
    a[:, [3, 10, 20]] = np.nan
    b[:, [3, 10, 20]] = np.nan
    ref = compare(RDMs(a), RDMs(b), method=method)
    np.testing.assert_allclose(rsa.compare_rdms(a, b, method=method), ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_nan_entries_are_handled_pairwise(method):
    # rsatoolbox refuses RDMs whose NaN positions differ; neurofm compares each pair on the
    # entries both RDMs have, which must equal comparing the two reduced RDMs alone.
    a, b = _stacks(3)
    a[0, [1, 5]] = np.nan
    b[2, [5, 7, 30]] = np.nan
    out = rsa.compare_rdms(a, b, method=method)
    for i, j in [(0, 2), (0, 0), (1, 2), (3, 4)]:
        keep = np.isfinite(a[i]) & np.isfinite(b[j])
        ai, bj = a[i].copy(), b[j].copy()
        ai[~keep] = np.nan
        bj[~keep] = np.nan
        ref = compare(RDMs(ai[None]), RDMs(bj[None]), method=method)[0, 0]
        assert out[i, j] == pytest.approx(ref, abs=TOL)


def _tau_a_brute(x, y):
    n = len(x)
    s = sum(np.sign(x[k] - x[m]) * np.sign(y[k] - y[m])
            for k, m in itertools.combinations(range(n), 2))
    return s / (n * (n - 1) / 2)


def test_tau_a_and_rho_a_follow_their_definitions():
    rng = np.random.default_rng(4)
    x = np.round(rng.standard_normal(28), 1)
    y = np.round(rng.standard_normal(28), 1)
    assert rsa.compare_rdms(x, y, method="tau-a") == pytest.approx(_tau_a_brute(x, y), abs=TOL)
    from scipy.stats import rankdata

    n = len(x)
    r1, r2 = rankdata(x), rankdata(y)
    paper = 12 * (r1 @ r2) / (n ** 3 - n) - 3 * (n + 1) / (n - 1)
    assert rsa.compare_rdms(x, y, method="rho-a") == pytest.approx(paper, abs=TOL)
    from scipy.stats import kendalltau

    tau_b = kendalltau(x, y).statistic
    assert rsa.compare_rdms(x, y, method="kendall") == pytest.approx(tau_b, abs=TOL)


def test_tau_fallback_without_private_scipy_routine(monkeypatch):
    a, b = _stacks(5)
    fast = rsa.compare_rdms(a, b, method="tau-a")
    monkeypatch.setattr(_rdm_compare, "_SCIPY_KENDALL_DIS", None)
    slow = rsa.compare_rdms(a, b, method="tau-a")
    np.testing.assert_allclose(slow, fast, atol=TOL, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_noise_ceiling_matches_rsatoolbox(method):
    rng = np.random.default_rng(6)
    true = np.abs(rng.standard_normal(N_PAIRS))
    data = true + 0.7 * np.abs(rng.standard_normal((6, N_PAIRS)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = boot_noise_ceiling(RDMs(data), method=method)
        ours = rsa.noise_ceiling(data, method=method)
    np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)
    assert ours[0] <= ours[1] + 1e-12


@pytest.mark.parametrize("method", ["corr", "spearman", "cosine_cov"])
def test_noise_ceiling_with_shared_nan_entries_matches_rsatoolbox(method):
    rng = np.random.default_rng(7)
    data = np.abs(rng.standard_normal((5, N_PAIRS))) + 0.2
    data[:, [2, 8]] = np.nan
    ref = boot_noise_ceiling(RDMs(data), method=method)
    np.testing.assert_allclose(rsa.noise_ceiling(data, method=method), ref, atol=TOL, rtol=0)


def test_noise_ceiling_groups_leave_out_all_rdms_of_a_group():
    rng = np.random.default_rng(8)
    data = np.abs(rng.standard_normal((4, N_PAIRS)))
    dup = data[[0, 0, 1, 2, 3]]
    # two copies of subject 0 left out together == the lower bound over unique subjects
    # with the pooled RDM still counting subject 0 twice
    lower, upper = rsa.noise_ceiling(dup, method="corr", groups=[0, 0, 1, 2, 3])
    pool = _rdm_compare.pooling_transform(dup, "corr")
    lowers = []
    for rows in ([0, 1], [2], [3], [4]):
        others = np.delete(pool, rows, axis=0).mean(axis=0)
        lowers.append(np.corrcoef(others, dup[rows[0]])[0, 1])
    assert lower == pytest.approx(np.mean(lowers), abs=TOL)
    assert upper >= lower


def test_single_vs_stack_return_types_and_label_alignment():
    a, b = _stacks(9)
    assert isinstance(rsa.compare_rdms(a[0], b[0]), float)
    assert rsa.compare_rdms(a[0], b).shape == (1, 5)
    labels = [f"s{i}" for i in range(K)]
    rdm_a = rsa.square(a[0], labels=labels)
    perm = np.random.default_rng(9).permutation(K)
    rdm_b = rdm_a.isel(condition=perm, condition2=perm)
    assert rsa.compare_rdms(rdm_a, rdm_b, method="corr") == pytest.approx(1.0, abs=TOL)
    other = rsa.square(a[0], labels=[f"t{i}" for i in range(K)])
    with pytest.raises(DataError, match="same condition labels"):
        rsa.compare_rdms(rdm_a, other)


def test_compare_errors():
    a, b = _stacks(10)
    with pytest.raises(NeurofmError, match="method must be one of"):
        rsa.compare_rdms(a, b, method="pearson")
    with pytest.raises(DataError, match="same number of conditions"):
        rsa.compare_rdms(a, np.ones(10))
    with pytest.raises(DataError, match="at least 2 RDMs"):
        rsa.noise_ceiling(a[0], method="corr")
    with pytest.raises(NeurofmError, match="RDM"):
        rsa.compare_rdms(a, xr.Dataset())
    assert np.isnan(rsa.compare_rdms(np.ones(N_PAIRS), a[0], method="corr"))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), method=st.sampled_from(METHODS))
def test_comparator_properties(seed, method):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(15)
    b = rng.standard_normal(15)
    a_before = a.copy()
    ab = rsa.compare_rdms(a, b, method=method)
    assert ab == pytest.approx(rsa.compare_rdms(b, a, method=method), abs=1e-12)
    assert -1 - 1e-12 <= ab <= 1 + 1e-12
    assert rsa.compare_rdms(a, a, method=method) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_equal(a, a_before)
