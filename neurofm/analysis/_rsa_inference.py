"""Model evaluation for RSA: one entry point, :func:`evaluate`, and its :class:`EvalResult`.

The three schemes follow rsatoolbox (Schuett et al. 2023) and METHODS.md section 6:

- ``"fixed"``: every data RDM is compared with every model; the variance is the squared
  standard error over subjects (``eval_fixed``);
- ``"bootstrap"``: subjects and/or conditions are resampled with replacement; pairs of a
  condition with its own duplicate are set to NaN (they are trivially zero); the noise
  ceiling is recomputed on every sample (``eval_bootstrap``, ``_rdm``, ``_pattern``);
- ``"crossval"``: inside every bootstrap sample, k-fold cross-validation over subjects and
  conditions (test conditions' sub-RDMs, held-out subjects' lower noise ceiling), repeated
  ``n_cv`` times, with the variance correction var = (n_cv var_mean - var_1) / (n_cv - 1)
  (``bootstrap_crossval``).

Models are fixed RDMs (no fitted parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.stats
import xarray as xr

from .._checks import check_option, check_positive_int
from .._logging import progress
from ..errors import DataError, NeurofmError
from ._rdm_compare import (
    COMPARE_METHODS,
    _compare_finite,
    _nanmean_rows,
    check_comparable,
    compare_paired,
    compare_vectors,
    noise_ceiling_finite,
    noise_ceiling_vectors,
    pooling_transform,
)
from ._rdm_utils import (
    align_conditions,
    as_rdm_stack,
    condensed_index,
    sample_vectors,
    triu_indices,
)

INFERENCE = ("fixed", "bootstrap", "crossval")
BOOT = ("both", "subjects", "conditions")
TESTS = ("t-test", "bootstrap")


@dataclass(frozen=True, repr=False)
class EvalResult:
    """Result of :func:`evaluate`.

    Attributes
    ----------
    models : tuple of str
        Model names, in input order.
    method, inference, boot, test : str
        Comparison method, inference scheme, resampled factor(s), test type.
    scores : ndarray of shape (n_models,)
        Mean evaluation per model (over subjects for ``fixed``; over valid bootstrap samples
        otherwise, as in rsatoolbox).
    sem : ndarray of shape (n_models,)
        Standard error of each score (square root of its variance estimate).
    ci : tuple of ndarray (low, high), each of shape (n_models,)
        Confidence intervals at level ``ci_level`` (t-based or bootstrap percentiles).
    noise_ceiling : tuple of float (lower, upper)
    p_zero : ndarray of shape (n_models,)
        One-sided p-values of score > 0 (chance).
    p_noise : ndarray of shape (n_models,)
        Two-sided p-values of score != the lower noise-ceiling bound.
    p_pairwise : ndarray of shape (n_models, n_models)
        Two-sided p-values of score_i != score_j (1 on the diagonal).
    dof : int
        Degrees of freedom of the t-tests.
    evaluations : ndarray
        Raw evaluations: (n_models, n_rdm) for ``fixed``, (n_boot, n_models) for
        ``bootstrap`` and (n_boot, n_models, n_cv) for ``crossval`` (NaN = invalid sample).
    noise_ceiling_samples : ndarray or None
        (2, n_boot) or (2, n_boot, n_cv) lower/upper bounds per sample.
    variances, diff_variances, nc_variances : ndarray
        Variance of each score (n_models,), of each pairwise difference (n_models,
        n_models) and of each score's difference from the lower / upper ceiling (n_models, 2).
    ci_level : float
        Level of ``ci``.
    n_rdm, n_conditions : int
        Size of the data.
    """

    models: tuple
    method: str
    inference: str
    boot: str | None
    test: str
    ci_level: float
    scores: np.ndarray
    sem: np.ndarray
    ci: tuple
    noise_ceiling: tuple
    p_zero: np.ndarray
    p_noise: np.ndarray
    p_pairwise: np.ndarray
    dof: int
    evaluations: np.ndarray
    noise_ceiling_samples: np.ndarray | None
    variances: np.ndarray
    diff_variances: np.ndarray
    nc_variances: np.ndarray
    n_rdm: int
    n_conditions: int

    def summary(self):
        """Human-readable table of scores, SEMs and p-values."""
        width = max(6, max(len(m) for m in self.models) + 1)
        scheme = self.inference + (f" ({self.boot})" if self.boot else "")
        lines = [(f"RSA model evaluation: {self.method}, {scheme}, {self.test} tests, "
                 f"{self.n_rdm} RDMs x {self.n_conditions} conditions"),
                 f"noise ceiling: [{self.noise_ceiling[0]:.3f}, {self.noise_ceiling[1]:.3f}]",
                 f"{'model':<{width}}|  score +- SEM    | p (> 0)  | p (vs NC)"]
        lines.append("-" * len(lines[-1]))
        for i, name in enumerate(self.models):
            lines.append(f"{name:<{width}}| {self.scores[i]: .3f} +- {self.sem[i]:.3f} "
                         f"| {_fmt_p(self.p_zero[i])} | {_fmt_p(self.p_noise[i])}")
        return "\n".join(lines)

    def __repr__(self):
        return self.summary()

    def to_dataset(self):
        """The result as an :class:`xarray.Dataset` over a ``model`` dimension."""
        models = list(self.models)
        ds = xr.Dataset(
            {
                "score": ("model", self.scores),
                "sem": ("model", self.sem),
                "ci_low": ("model", self.ci[0]),
                "ci_high": ("model", self.ci[1]),
                "p_zero": ("model", self.p_zero),
                "p_noise": ("model", self.p_noise),
                "p_pairwise": (("model", "model_b"), self.p_pairwise),
            },
            coords={"model": models, "model_b": models},
            attrs={"method": self.method, "inference": self.inference,
                   "boot": self.boot or "", "test": self.test, "ci_level": self.ci_level,
                   "dof": int(self.dof), "noise_ceiling_lower": float(self.noise_ceiling[0]),
                   "noise_ceiling_upper": float(self.noise_ceiling[1])},
        )
        return ds


def _fmt_p(p):
    if not np.isfinite(p):
        return "   nan  "
    return " < 0.001" if p < 0.001 else f"{p:8.3f}"


# --------------------------------------------------------------------------------------
# input handling


def _parse_models(models, data):
    """-> (names, vectors (n_models, n_pairs)) aligned to the data's conditions."""
    if isinstance(models, dict):
        if not models:
            raise DataError("models: got an empty dict")
        names = [str(k) for k in models]
        stacks = [as_rdm_stack(v, f"models[{k!r}]") for k, v in models.items()]
    elif isinstance(models, (list, tuple)):
        if not models:
            raise DataError("models: got an empty list")
        stacks = [as_rdm_stack(v, f"models[{i}]") for i, v in enumerate(models)]
        names = [str(getattr(v, "name", None) or f"model{i}") for i, v in enumerate(models)]
    else:
        stack = as_rdm_stack(models, "models")
        if stack.single:
            names = [str(getattr(models, "name", None) or "model0")]
            stacks = [stack]
        else:
            names = [str(n) for n in stack.names] if stack.names is not None else \
                [f"model{i}" for i in range(stack.n_rdm)]
            stacks = [stack.with_vectors(stack.vectors[i:i + 1], single=True)
                      for i in range(stack.n_rdm)]
    vectors = []
    for name, s in zip(names, stacks):
        if not s.single:
            raise DataError(f"models[{name!r}] must be one RDM; got a stack of {s.n_rdm}")
        aligned = align_conditions(data, s, "rdms", f"models[{name!r}]")
        vectors.append(np.asarray(aligned.vectors[0]))
    if len(set(names)) != len(names):
        raise DataError(f"models: model names must be unique; got {names}")
    return tuple(names), np.stack(vectors)


def default_k_conditions(n_cond):
    """rsatoolbox's default number of condition folds for (1 - 1/e) * n conditions."""
    n = (1 - np.exp(-1)) * n_cond
    return 2 if n < 12 else 3 if n < 24 else 4 if n < 40 else 5


def default_k_rdms(n_rdm):
    """rsatoolbox's default number of subject folds for (1 - 1/e) * n subjects."""
    if n_rdm == 1:
        return 1
    n = (1 - np.exp(-1)) * n_rdm
    return 2 if n < 6 else 3 if n < 12 else 4 if n < 20 else 5


# --------------------------------------------------------------------------------------
# resampling


def _sub_pairs(positions, n_sample_cond):
    """Condensed indices of the pairs among the given (sorted) condition positions."""
    pos = np.asarray(positions)
    iu, ju = triu_indices(len(pos))
    return condensed_index(pos[iu], pos[ju], n_sample_cond)


def _safe_nc(v, method, groups):
    try:
        return noise_ceiling_vectors(v, method, groups)
    except DataError:
        return (np.nan, np.nan)


def _sample_pairs(cond_idx, n_cond):
    """Source indices of a bootstrap sample's pairs and the mask of non-duplicate pairs."""
    iu, ju = triu_indices(len(cond_idx))
    a, b = cond_idx[iu], cond_idx[ju]
    keep = a != b
    return condensed_index(a[keep], b[keep], n_cond), keep


def bootstrap_sample_eval(model_v, data_v, rdm_idx, cond_idx, n_cond, method, finite=False):
    """Evaluations (n_models,) and noise ceiling (2,) of one bootstrap sample.

    The evaluation of a model is its mean comparison with the sampled RDMs (copies counted
    as drawn); the noise ceiling leaves out all copies of a subject together. Samples with
    fewer than 3 distinct conditions are invalid (NaN), as in rsatoolbox.
    """
    if len(np.unique(cond_idx)) < 3:
        return np.full(model_v.shape[0], np.nan), np.full(2, np.nan)
    if finite:  # fast path: the only missing pairs are the duplicates, shared by all RDMs
        src, keep = _sample_pairs(cond_idx, n_cond)
        d = data_v[rdm_idx][:, src]
        m = model_v[:, src]
        k = len(cond_idx)
        evals = _compare_finite(m, d, method, k, keep, paired=False).mean(axis=1)
        nc = noise_ceiling_finite(d, method, rdm_idx, k, keep) \
            if len(np.unique(rdm_idx)) > 1 else (np.nan, np.nan)
        return evals, np.array(nc)
    d = sample_vectors(data_v, rdm_idx, cond_idx, n_cond)
    m = sample_vectors(model_v, np.arange(model_v.shape[0]), cond_idx, n_cond)
    evals = np.nanmean(compare_vectors(m, d, method), axis=1)
    return evals, np.array(_safe_nc(d, method, rdm_idx))


def crossval_sample_eval(model_v, data_v, groups, cond_ids, rdm_folds, cond_folds, method):
    """Cross-validated evaluations (n_models,) and noise ceiling (2,) of one sample.

    Parameters
    ----------
    model_v : ndarray of shape (n_models, n_pairs_sample)
        Model vectors restricted to the sample's conditions.
    data_v : ndarray of shape (n_sample_rdm, n_pairs_sample)
    groups : ndarray of shape (n_sample_rdm,)
        Subject id of each sampled RDM (bootstrap copies share an id).
    cond_ids : ndarray of shape (n_sample_cond,)
        Original condition id of each sampled condition (sorted; copies share an id).
    rdm_folds, cond_folds : list of ndarray
        Test sets of subject ids and of condition ids. With one subject fold the training
        subjects are the test subjects (no cross-validation over subjects), as in rsatoolbox.

    For every (subject fold, condition fold): models are scored on the test subjects'
    sub-RDMs of the test conditions; the lower ceiling pools the training subjects' sub-RDMs,
    the upper ceiling pools all subjects' full RDMs and then restricts them to the test
    conditions (rsatoolbox's ``cv_noise_ceiling``). Results are averaged over folds.
    """
    n_sample_cond = len(cond_ids)
    pool_all = _nanmean_rows(pooling_transform(data_v, method))
    evals, lowers, uppers = [], [], []
    for rdm_fold in rdm_folds:
        test_rows = np.isin(groups, rdm_fold)
        train_rows = ~test_rows if len(rdm_folds) > 1 else test_rows
        for cond_fold in cond_folds:
            positions = np.flatnonzero(np.isin(cond_ids, cond_fold))
            test = data_v[test_rows]
            if len(positions) <= 2 or not test_rows.any() or not train_rows.any():
                evals.append(np.full(model_v.shape[0], np.nan))
                lowers.append(np.nan)
                uppers.append(np.nan)
                continue
            sub = _sub_pairs(positions, n_sample_cond)
            test = test[:, sub]
            evals.append(np.nanmean(compare_vectors(model_v[:, sub], test, method), axis=1))
            train_pool = _nanmean_rows(pooling_transform(data_v[train_rows][:, sub], method))
            lowers.append(np.mean(compare_paired(np.broadcast_to(train_pool, test.shape), test,
                                                 method)))
            uppers.append(np.mean(compare_paired(np.broadcast_to(pool_all[sub], test.shape),
                                                 test, method)))
    evals = np.array(evals)
    with np.errstate(invalid="ignore"):
        return np.nanmean(evals, axis=0) if np.isfinite(evals).any() else evals[0], \
            np.array([np.mean(lowers), np.mean(uppers)])


def _split(values, k, rng):
    """Shuffle ``values`` and split them into k groups of near-equal size."""
    values = rng.permutation(values)
    return list(np.array_split(values, k))


# --------------------------------------------------------------------------------------
# variance bookkeeping and tests


def _extract_variances(cov, n_models, nc_included, correction):
    """Model, pairwise-difference and noise-ceiling-difference variances from a covariance."""
    cov = np.atleast_2d(cov) * correction
    model_var = np.diag(cov)[:n_models].copy()
    mv = cov[:n_models, :n_models]
    diff_var = model_var[:, None] + model_var[None, :] - 2 * mv
    if nc_included:
        nc_var = model_var[:, None] - 2 * cov[:n_models, n_models:] \
            + np.diag(cov)[n_models:][None, :]
    else:
        nc_var = np.stack([model_var, model_var], axis=1)
    return model_var, diff_var, nc_var


def _t_tests(scores, model_var, diff_var, nc_var, nc_lower, dof):
    eps = np.finfo(float).eps
    t_dist = scipy.stats.t
    with np.errstate(invalid="ignore"):
        p_zero = 1 - t_dist.cdf(scores / np.sqrt(np.maximum(model_var, eps)), dof)
        t_pair = (scores[:, None] - scores[None, :]) / np.sqrt(np.maximum(diff_var, eps))
        p_pair = 2 * (1 - t_dist.cdf(np.abs(t_pair), dof))
        t_nc = (scores - nc_lower) / np.sqrt(np.maximum(nc_var[:, 0], eps))
        p_noise = 2 * (1 - t_dist.cdf(np.abs(t_nc), dof))
    np.fill_diagonal(p_pair, 1.0)
    return p_zero, p_noise, p_pair


def _bootstrap_tests(samples, nc_lower_samples):
    """Percentile tests on bootstrap samples (n_valid, n_models), rsatoolbox's convention."""
    n = samples.shape[0]
    p_zero = ((samples <= 0).sum(axis=0) + 1) / n
    p_noise = (((nc_lower_samples[:, None] - samples) <= 0).sum(axis=0) + 1) / n
    n_models = samples.shape[1]
    prop = np.zeros((n_models, n_models))
    for i in range(n_models):
        for j in range(i + 1, n_models):
            ties = np.sum(samples[:, i] == samples[:, j])
            prop[i, j] = prop[j, i] = np.sum(samples[:, i] < samples[:, j]) / max(n - ties, 1)
    prop = np.minimum(prop, 1 - prop) * 2
    prop = (n - 1) / n * prop + 1 / n
    np.fill_diagonal(prop, 1.0)
    return p_zero, p_noise, prop


# --------------------------------------------------------------------------------------
# entry point


def evaluate(models, rdms, *, method="corr", inference="fixed", n_boot=1000, boot="both",
             seed=0, n_cv=2, k_conditions=None, k_rdms=None, test="t-test", ci=0.95,
             verbose=None):
    """Evaluate fixed model RDMs against data RDMs: scores, variances, CIs, tests.

    Parameters
    ----------
    models : dict of str -> RDM, list of RDMs, a stacked DataArray (model, condition,
        condition2) or one RDM
        Model RDMs with the same conditions as ``rdms``.
    rdms : xr.DataArray or ndarray of shape (n_subjects, K, K) or (n_subjects, n_pairs)
        One data RDM per subject (a single RDM is allowed for ``fixed``).
    method : str
        Comparison method of :func:`neurofm.analysis.rsa.compare_rdms` (default ``"corr"``).
    inference : {"fixed", "bootstrap", "crossval"}
    n_boot : int
        Number of bootstrap samples (``bootstrap`` and ``crossval``).
    boot : {"both", "subjects", "conditions"}
        What is resampled: subjects and conditions (default), subjects only, or conditions
        only.
    seed : int
        Seed of the resampling (numpy ``default_rng``).
    n_cv : int
        Cross-validation repetitions per bootstrap sample (``crossval``; >= 2 enables the
        variance correction).
    k_conditions, k_rdms : int, optional
        Condition and subject folds of ``crossval`` (rsatoolbox's defaults: 2-5 depending on
        (1 - 1/e) n).
    test : {"t-test", "bootstrap"}
        t-tests on the variance estimates (rsatoolbox's default) or bootstrap percentile
        tests and CIs (``bootstrap`` / ``crossval`` only).
    ci : float
        Confidence level of the intervals.
    verbose : bool, optional
        Progress bar over bootstrap samples.

    Returns
    -------
    EvalResult
    """
    check_option("method", method, COMPARE_METHODS)
    check_option("inference", inference, INFERENCE)
    check_option("boot", boot, BOOT)
    check_option("test", test, TESTS)
    if not (isinstance(ci, float) and 0 < ci < 1):
        raise NeurofmError(f"ci must be a float in (0, 1); got {ci!r}")
    data = as_rdm_stack(rdms, "rdms")
    names, model_v = _parse_models(models, data)
    data_v = np.asarray(data.vectors, dtype=np.float64)
    n_rdm, n_cond = data.n_rdm, data.n_cond
    check_comparable(n_cond, method, "rdms", "model evaluation")
    if inference == "fixed":
        if test == "bootstrap":
            raise NeurofmError("test='bootstrap' needs inference='bootstrap' or 'crossval'")
        return _evaluate_fixed(names, model_v, data_v, method, test, ci, n_cond)
    n_boot = check_positive_int("n_boot", n_boot)
    n_cv = check_positive_int("n_cv", n_cv)
    if boot in ("both", "subjects") and n_rdm < 2:
        raise DataError(f"rdms: bootstrapping subjects needs at least 2 RDMs; got {n_rdm} "
                        f"(use boot='conditions')")
    rng = np.random.default_rng(seed)
    if inference == "bootstrap":
        return _evaluate_bootstrap(names, model_v, data_v, method, boot, n_boot, rng, test, ci,
                                   n_cond, verbose)
    k_cond = default_k_conditions(n_cond) if k_conditions is None else int(k_conditions)
    k_rdm = default_k_rdms(n_rdm) if k_rdms is None else int(k_rdms)
    if k_cond < 1 or k_rdm < 1 or k_rdm > n_rdm or 3 * k_cond > n_cond:
        raise DataError(
            f"k_conditions / k_rdms: need 1 <= k_rdms <= n_rdm ({n_rdm}) and 3 * k_conditions "
            f"<= n_conditions ({n_cond}); got k_rdms={k_rdm}, k_conditions={k_cond}"
        )
    return _evaluate_crossval(names, model_v, data_v, method, boot, n_boot, n_cv, k_cond,
                              k_rdm, rng, test, ci, n_cond, verbose)


def _evaluate_fixed(names, model_v, data_v, method, test, ci, n_cond):
    n_rdm = data_v.shape[0]
    evals = compare_vectors(model_v, data_v, method)  # (n_models, n_rdm)
    scores = np.nanmean(evals, axis=1)
    nc = _safe_nc(data_v, method, None) if n_rdm > 1 else (np.nan, np.nan)
    if n_rdm > 1:
        cov = np.atleast_2d(np.cov(evals, ddof=1)) / n_rdm
        model_var, diff_var, nc_var = _extract_variances(cov, len(names), False, 1.0)
    else:
        model_var = np.full(len(names), np.nan)
        diff_var = np.full((len(names), len(names)), np.nan)
        nc_var = np.full((len(names), 2), np.nan)
    dof = max(n_rdm - 1, 0)
    return _finish(names, method, "fixed", None, test, ci, scores, model_var, diff_var, nc_var,
                   nc, dof, evals, None, n_rdm, n_cond, None)


def _draw(rng, boot, n_rdm, n_cond):
    rdm_idx = rng.integers(0, n_rdm, n_rdm) if boot in ("both", "subjects") \
        else np.arange(n_rdm)
    cond_idx = np.sort(rng.integers(0, n_cond, n_cond)) if boot in ("both", "conditions") \
        else np.arange(n_cond)
    return rdm_idx, cond_idx


def _boot_correction(boot, n_rdm, n_cond):
    n = {"both": min(n_rdm, n_cond), "subjects": n_rdm, "conditions": n_cond}[boot]
    return n / (n - 1), n - 1


def _evaluate_bootstrap(names, model_v, data_v, method, boot, n_boot, rng, test, ci, n_cond,
                        verbose):
    n_rdm = data_v.shape[0]
    finite = bool(np.isfinite(data_v).all() and np.isfinite(model_v).all())
    evals = np.empty((n_boot, len(names)))
    ncs = np.empty((2, n_boot))
    for b in progress(range(n_boot), verbose=verbose, desc="bootstrap"):
        rdm_idx, cond_idx = _draw(rng, boot, n_rdm, n_cond)
        evals[b], ncs[:, b] = bootstrap_sample_eval(model_v, data_v, rdm_idx, cond_idx, n_cond,
                                                    method, finite)
    return _summarize_samples(names, method, "bootstrap", boot, test, ci, evals, ncs, n_rdm,
                              n_cond, evals, ncs)


def _summarize_samples(names, method, inference, boot, test, ci, evals, ncs, n_rdm, n_cond,
                       raw_evals, raw_ncs, cov=None):
    ok = np.isfinite(evals).all(axis=1) & np.isfinite(ncs).all(axis=0)
    if ok.sum() < 2:
        raise DataError(f"rdms: fewer than 2 valid bootstrap samples ({int(ok.sum())} of "
                        f"{len(ok)}); use more conditions or subjects")
    correction, dof = _boot_correction(boot, n_rdm, n_cond)
    if cov is None:
        cov = np.cov(np.concatenate([evals[ok].T, ncs[:, ok]]))
    model_var, diff_var, nc_var = _extract_variances(cov, len(names), True, correction)
    scores = evals[ok].mean(axis=0)
    nc = (float(np.mean(ncs[0, ok])), float(np.mean(ncs[1, ok])))
    return _finish(names, method, inference, boot, test, ci, scores, model_var, diff_var,
                   nc_var, nc, dof, raw_evals, raw_ncs, n_rdm, n_cond,
                   (evals[ok], ncs[0, ok]))


def _evaluate_crossval(names, model_v, data_v, method, boot, n_boot, n_cv, k_cond, k_rdm, rng,
                       test, ci, n_cond, verbose):
    n_rdm = data_v.shape[0]
    evals = np.full((n_boot, len(names), n_cv), np.nan)
    ncs = np.full((2, n_boot, n_cv), np.nan)
    for b in progress(range(n_boot), verbose=verbose, desc="bootstrap-crossval"):
        rdm_idx, cond_idx = _draw(rng, boot, n_rdm, n_cond)
        uniq_rdm, uniq_cond = np.unique(rdm_idx), np.unique(cond_idx)
        if len(uniq_rdm) < k_rdm or len(uniq_cond) < 3 * k_cond:
            continue
        d = sample_vectors(data_v, rdm_idx, cond_idx, n_cond)
        m = sample_vectors(model_v, np.arange(model_v.shape[0]), cond_idx, n_cond)
        for rep in range(n_cv):
            rdm_folds = _split(uniq_rdm, k_rdm, rng)
            cond_folds = _split(uniq_cond, k_cond, rng)
            if k_rdm == 1 and k_cond == 1:
                e = np.nanmean(compare_vectors(m, d, method), axis=1)
                nc = np.array(_safe_nc(d, method, rdm_idx))
            else:
                e, nc = crossval_sample_eval(m, d, rdm_idx, cond_idx, rdm_folds, cond_folds,
                                             method)
            evals[b, :, rep] = e
            ncs[:, b, rep] = nc
    ok = np.isfinite(evals).all(axis=(1, 2)) & np.isfinite(ncs).all(axis=(0, 2))
    mean_e, mean_nc = evals.mean(axis=2), ncs.mean(axis=2)
    cov = None
    if n_cv > 1 and ok.sum() >= 2:
        var_mean = np.cov(np.concatenate([mean_e[ok].T, mean_nc[:, ok]]))
        var_1 = np.mean([np.cov(np.concatenate([evals[ok][:, :, r].T, ncs[:, ok, r]]))
                         for r in range(n_cv)], axis=0)
        cov = (n_cv * var_mean - var_1) / (n_cv - 1)
    return _summarize_samples(names, method, "crossval", boot, test, ci, mean_e, mean_nc,
                              n_rdm, n_cond, evals, ncs, cov=cov)


def _finish(names, method, inference, boot, test, ci, scores, model_var, diff_var, nc_var, nc,
            dof, evals, ncs, n_rdm, n_cond, samples):
    sem = np.sqrt(np.maximum(model_var, 0))
    if test == "t-test":
        p_zero, p_noise, p_pair = _t_tests(scores, model_var, diff_var, nc_var, nc[0], dof)
        with np.errstate(invalid="ignore"):
            half = sem * scipy.stats.t.ppf(1 - (1 - ci) / 2, dof) if dof > 0 \
                else np.full_like(sem, np.nan)
        ci_bounds = (scores - half, scores + half)
    else:
        boot_evals, boot_nc = samples
        p_zero, p_noise, p_pair = _bootstrap_tests(boot_evals, boot_nc)
        cut = (1 - ci) / 2
        ci_bounds = (np.quantile(boot_evals, cut, axis=0),
                     np.quantile(boot_evals, 1 - cut, axis=0))
    return EvalResult(models=tuple(names), method=method, inference=inference, boot=boot,
                      test=test, ci_level=ci, scores=scores, sem=sem, ci=ci_bounds,
                      noise_ceiling=(float(nc[0]), float(nc[1])), p_zero=p_zero,
                      p_noise=p_noise, p_pairwise=p_pair, dof=int(dof), evaluations=evals,
                      noise_ceiling_samples=ncs, variances=model_var, diff_variances=diff_var,
                      nc_variances=nc_var, n_rdm=n_rdm, n_conditions=n_cond)


__all__ = ["EvalResult", "evaluate"]
