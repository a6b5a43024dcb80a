"""Model evaluation: parity with rsatoolbox's fixed / bootstrap / cross-validation schemes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from neurofm.analysis import _rsa_inference as inf
from neurofm.analysis import rsa
from neurofm.errors import DataError, NeurofmError

pytest.importorskip("rsatoolbox")
from rsatoolbox.inference import (
    crossval,
    eval_bootstrap,
    eval_bootstrap_pattern,
    eval_bootstrap_rdm,
    eval_fixed,
    sets_k_fold,
)
from rsatoolbox.model import ModelFixed
from rsatoolbox.rdm import RDMs

TOL = 1e-10


def _problem(seed=0, n_cond=10, n_subj=6):
    rng = np.random.default_rng(seed)
    n = n_cond * (n_cond - 1) // 2
    true = np.abs(rng.standard_normal(n))
    data = true + 0.5 * rng.standard_normal((n_subj, n))
    models = np.stack([true + 0.3 * rng.standard_normal(n), rng.standard_normal(n), true])
    return models, data


def _rsat_models(models):
    return [ModelFixed(f"m{i}", RDMs(m[None])) for i, m in enumerate(models)]


def _dict(models):
    return {f"m{i}": m for i, m in enumerate(models)}


@pytest.mark.parametrize("method", ["corr", "cosine", "spearman", "tau-a"])
def test_fixed_matches_rsatoolbox(method):
    models, data = _problem(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = eval_fixed(_rsat_models(models), RDMs(data), method=method)
        ours = rsa.evaluate(_dict(models), data, method=method, inference="fixed")
    np.testing.assert_allclose(ours.scores, ref.get_means(), atol=TOL)
    np.testing.assert_allclose(ours.variances, ref.model_var, atol=TOL)
    np.testing.assert_allclose(ours.noise_ceiling, ref.noise_ceiling, atol=TOL)
    np.testing.assert_allclose(ours.p_zero, ref.test_zero(), atol=1e-9)
    np.testing.assert_allclose(ours.p_pairwise, ref.test_pairwise(), atol=1e-9)
    np.testing.assert_allclose(ours.p_noise, ref.test_noise(), atol=1e-9)
    np.testing.assert_allclose(ours.evaluations, ref.evaluations[0], atol=TOL)
    assert ours.dof == data.shape[0] - 1


def _replay_draws(seed, n_boot, n_subj, n_cond, subjects=True, conditions=True):
    """rsatoolbox's draw order: np.random.randint for the RDMs, then for the patterns."""
    np.random.seed(seed)
    draws = []
    for _ in range(n_boot):
        rdm_idx = np.random.randint(0, n_subj, size=n_subj) if subjects else np.arange(n_subj)
        cond_idx = np.sort(np.random.randint(0, n_cond, size=n_cond)) if conditions \
            else np.arange(n_cond)
        draws.append((rdm_idx, cond_idx))
    return draws


@pytest.mark.parametrize("finite_path", [True, False])
@pytest.mark.parametrize("method", ["corr", "spearman", "cosine_cov"])
def test_bootstrap_samples_match_rsatoolbox(method, finite_path):
    models, data = _problem(2)
    n_subj, n_cond, n_boot = data.shape[0], 10, 40
    np.random.seed(11)
    ref = eval_bootstrap(_rsat_models(models), RDMs(data), method=method, N=n_boot)
    evals = np.empty((n_boot, 3))
    ncs = np.empty((2, n_boot))
    for b, (rdm_idx, cond_idx) in enumerate(_replay_draws(11, n_boot, n_subj, n_cond)):
        evals[b], ncs[:, b] = inf.bootstrap_sample_eval(models, data, rdm_idx, cond_idx, n_cond,
                                                        method, finite=finite_path)
    np.testing.assert_allclose(evals, ref.evaluations, atol=TOL, equal_nan=True)
    np.testing.assert_allclose(ncs, ref.noise_ceiling, atol=TOL, equal_nan=True)
    res = inf._summarize_samples(("m0", "m1", "m2"), method, "bootstrap", "both", "t-test",
                                 0.95, evals, ncs, n_subj, n_cond, evals, ncs)
    np.testing.assert_allclose(res.scores, ref.get_means(), atol=TOL)
    np.testing.assert_allclose(res.variances, ref.model_var, atol=TOL)
    np.testing.assert_allclose(res.p_zero, ref.test_zero(), atol=1e-9)
    np.testing.assert_allclose(res.p_pairwise, ref.test_pairwise(), atol=1e-9)
    np.testing.assert_allclose(res.p_noise, ref.test_noise(), atol=1e-9)
    np.testing.assert_allclose(res.nc_variances, ref.noise_ceil_var, atol=TOL)


def test_bootstrap_conditions_and_subjects_only_match_rsatoolbox():
    models, data = _problem(3)
    n_subj, n_cond, n_boot = data.shape[0], 10, 30
    np.random.seed(5)
    ref = eval_bootstrap_pattern(_rsat_models(models), RDMs(data), method="corr", N=n_boot)
    draws = _replay_draws(5, n_boot, n_subj, n_cond, subjects=False)
    evals = np.array([inf.bootstrap_sample_eval(models, data, r, c, n_cond, "corr", True)[0]
                      for r, c in draws])
    np.testing.assert_allclose(evals, ref.evaluations, atol=TOL, equal_nan=True)
    res = inf._summarize_samples(("a", "b", "c"), "corr", "bootstrap", "conditions", "t-test",
                                 0.95, evals, np.array(ref.noise_ceiling), n_subj, n_cond,
                                 evals, None)
    np.testing.assert_allclose(res.variances, ref.model_var, atol=TOL)
    assert res.dof == n_cond - 1
    # subjects only: rsatoolbox draws the RDM indices alone
    np.random.seed(6)
    ref = eval_bootstrap_rdm(_rsat_models(models), RDMs(data), method="corr", N=n_boot)
    np.random.seed(6)
    evals = []
    for _ in range(n_boot):
        rdm_idx = np.random.randint(0, n_subj, size=n_subj)
        evals.append(inf.bootstrap_sample_eval(models, data, rdm_idx, np.arange(n_cond), n_cond,
                                               "corr", True)[0])
    np.testing.assert_allclose(np.array(evals), ref.evaluations, atol=TOL)


def _rsat_folds(n_items, k):
    """rsatoolbox's deterministic (random=False) fold assignment."""
    size, extra = n_items // k, n_items % k
    folds = []
    for i in range(k):
        idx = list(range(i * size, (i + 1) * size))
        if i < extra:
            idx.append(n_items - (i + 1))
        folds.append(np.array(idx))
    return folds


@pytest.mark.parametrize("k_rdm, k_cond", [(2, 3), (3, 2), (1, 3)])
@pytest.mark.parametrize("method", ["corr", "spearman", "cosine"])
def test_crossvalidation_matches_rsatoolbox(k_rdm, k_cond, method):
    models, data = _problem(4, n_cond=12, n_subj=7)
    rdms = RDMs(data)
    train, test, ceil = sets_k_fold(rdms, k_rdm=k_rdm, k_pattern=k_cond, random=False)
    ref = crossval(_rsat_models(models), rdms, train, test, ceil_set=ceil, method=method)
    evals, nc = inf.crossval_sample_eval(models, data, np.arange(7), np.arange(12),
                                         _rsat_folds(7, k_rdm), _rsat_folds(12, k_cond), method)
    np.testing.assert_allclose(evals, np.nanmean(ref.evaluations[0], axis=-1), atol=TOL)
    np.testing.assert_allclose(nc, ref.noise_ceiling, atol=TOL)


def test_crossval_variance_correction():
    models, data = _problem(5, n_cond=12, n_subj=8)
    res = rsa.evaluate(_dict(models), data, method="corr", inference="crossval", n_boot=60,
                       n_cv=3, seed=1)
    evals, ncs = res.evaluations, res.noise_ceiling_samples  # (B, M, n_cv), (2, B, n_cv)
    ok = np.isfinite(evals).all(axis=(1, 2)) & np.isfinite(ncs).all(axis=(0, 2))
    mean_all = np.concatenate([evals[ok].mean(axis=2).T, ncs[:, ok].mean(axis=2)])
    var_mean = np.cov(mean_all)
    var_1 = np.mean([np.cov(np.concatenate([evals[ok][:, :, r].T, ncs[:, ok, r]]))
                     for r in range(3)], axis=0)
    corrected = (3 * var_mean - var_1) / 2
    n = min(8, 12)
    np.testing.assert_allclose(res.variances, np.diag(corrected)[:3] * n / (n - 1), atol=TOL)
    assert res.evaluations.shape == (60, 3, 3)


def test_evaluate_ranks_models_and_is_reproducible():
    models, data = _problem(6, n_cond=14, n_subj=8)
    res = rsa.evaluate(_dict(models), data, inference="bootstrap", n_boot=120, seed=3)
    assert np.argmax(res.scores) == 2 and np.argmin(res.scores) == 1
    assert res.p_zero[2] < 0.01 and res.p_zero[1] > 0.05
    assert res.p_pairwise[2, 1] < 0.01
    assert res.noise_ceiling[0] <= res.noise_ceiling[1]
    again = rsa.evaluate(_dict(models), data, inference="bootstrap", n_boot=120, seed=3)
    np.testing.assert_array_equal(res.evaluations, again.evaluations)
    other = rsa.evaluate(_dict(models), data, inference="bootstrap", n_boot=120, seed=4)
    assert not np.array_equal(res.evaluations, other.evaluations)
    boot = rsa.evaluate(_dict(models), data, inference="bootstrap", n_boot=120, seed=3,
                        test="bootstrap")
    assert np.all(boot.ci[0] <= boot.scores) and np.all(boot.scores <= boot.ci[1])
    ds = res.to_dataset()
    assert list(ds.model.values) == ["m0", "m1", "m2"]
    assert "noise ceiling" in res.summary()


def test_models_as_stacked_dataarray_with_labels():
    models, data = _problem(7)
    labels = [f"s{i}" for i in range(10)]
    stack = rsa.square(models, labels=labels).rename(rdm="model")
    stack = stack.assign_coords(model=["near", "random", "true"])
    perm = np.random.default_rng(7).permutation(10)
    data_da = rsa.square(data, labels=labels).isel(condition=perm, condition2=perm)
    res = rsa.evaluate(stack, data_da, inference="fixed")
    ref = rsa.evaluate(_dict(models), data, inference="fixed")
    assert res.models == ("near", "random", "true")
    np.testing.assert_allclose(res.scores, ref.scores, atol=TOL)


def test_evaluate_errors():
    models, data = _problem(8)
    with pytest.raises(NeurofmError, match="inference must be one of"):
        rsa.evaluate(_dict(models), data, inference="jackknife")
    with pytest.raises(NeurofmError, match="boot must be one of"):
        rsa.evaluate(_dict(models), data, inference="bootstrap", boot="trials")
    with pytest.raises(DataError, match="at least 2 RDMs"):
        rsa.evaluate(_dict(models), data[0], inference="bootstrap", n_boot=5)
    with pytest.raises(DataError, match="same number of conditions"):
        rsa.evaluate({"a": np.ones(3)}, data)
    with pytest.raises(DataError, match="k_rdms"):
        rsa.evaluate(_dict(models), data, inference="crossval", k_conditions=4, n_boot=3)
    with pytest.raises(NeurofmError, match="test='bootstrap' needs"):
        rsa.evaluate(_dict(models), data, test="bootstrap")
    with pytest.raises(NeurofmError, match="n_boot"):
        rsa.evaluate(_dict(models), data, inference="bootstrap", n_boot=0)


@pytest.mark.parametrize("inference", ["fixed", "bootstrap", "crossval"])
def test_evaluate_does_not_mutate_inputs(inference):
    models, data = _problem(9, n_cond=12)
    data[0, :3] = np.nan  # a subject with missing pairs takes the general NaN path
    m_before, d_before = models.copy(), data.copy()
    res = rsa.evaluate(_dict(models), data, inference=inference, n_boot=8, seed=2)
    np.testing.assert_array_equal(models, m_before)
    np.testing.assert_array_equal(data, d_before)
    assert np.isfinite(res.scores).all()
