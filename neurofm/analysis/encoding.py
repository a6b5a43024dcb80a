"""Encoding models: ridge with efficient CV, kernel ridge, banded ridge, FIR delays, scores.

Algorithms follow METHODS.md section 8 (himalaya and the Gallant-lab voxelwise tutorials):

* :class:`RidgeCV` -- ``min ||X b - Y||^2 + alpha ||b||^2`` (no 1/n), one SVD per fold,
  every alpha and target batched, CV score = negative mean squared error on the validation
  fold averaged over folds, ``+ 1e-10 log(alpha)`` so that ties go to the larger alpha, best
  alpha per target, refit on all samples. The kernel (dual) form is used automatically when
  ``n_features > n_samples`` (same solution, cheaper).
* :class:`KernelRidgeCV` -- the same in the dual form with a linear, rbf or poly kernel.
* :class:`BandedRidgeCV` -- Dirichlet random search over band weights (first candidate
  uniform), per-target best; ``deltas_ = log(gamma / alpha)``; weights on the original scale.
* :class:`Delayer`, :func:`leave_one_run_out`, :func:`explainable_variance`,
  :func:`correlation_score`, :func:`r2_score`, :func:`noise_normalized`,
  :func:`fit_encoding_model` (xarray in, xarray out).
* :func:`condition_averages` and :func:`r2_ceiling`: the noise ceiling of R^2 against
  condition averages of a finite number of repeated trials (unbalanced repeats allowed).

Weights follow himalaya's layout: ``coef_`` is ``(n_features, n_targets)`` (``(n_features,)``
for a 1-D ``y``). Backends: ``backend="numpy"`` (default) or ``"torch"`` with ``device=``
(``None`` = CPU, ``"auto"``, ``"cuda"``...); float64 by default, float32 by default on a GPU.
``Y`` stays where it is given (e.g. host memory) and moves to the device one batch of
``n_targets_batch`` targets at a time.

Example
-------
>>> import numpy as np
>>> from neurofm.analysis.encoding import RidgeCV
>>> rng = np.random.default_rng(0)
>>> X = rng.standard_normal((200, 10)); W = rng.standard_normal((10, 3))
>>> Y = X @ W + 0.1 * rng.standard_normal((200, 3))
>>> model = RidgeCV(alphas=np.logspace(-2, 4, 7)).fit(X, Y)
>>> bool(np.all(model.score(X, Y) > 0.99))
True
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ..errors import DataError, NeurofmError
from . import _ridge

__all__ = [
    "BandedRidgeCV",
    "Delayer",
    "KernelRidgeCV",
    "RidgeCV",
    "condition_averages",
    "correlation_score",
    "explainable_variance",
    "fit_encoding_model",
    "leave_one_run_out",
    "noise_normalized",
    "r2_ceiling",
    "r2_score",
]

_DEFAULT_ALPHAS = tuple(np.logspace(-2, 8, 21).tolist())  # tuple: sklearn compares params


# ----------------------------------------------------------------------------- scores
def r2_score(y_true, y_pred):
    """Coefficient of determination per target (0 where the target has zero variance).

    Parameters
    ----------
    y_true, y_pred : array-like (n_samples, n_targets) or (n_samples,)

    Returns
    -------
    ndarray (n_targets,) or float
    """
    yt = np.asarray(y_true, dtype=float)
    yp = np.asarray(y_pred, dtype=float)
    if yt.shape != yp.shape:
        raise DataError(f"r2_score: y_true has shape {yt.shape} but y_pred has {yp.shape}")
    ss_res = ((yt - yp) ** 2).sum(0)
    ss_tot = ((yt - yt.mean(0)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - ss_res / ss_tot
    r2 = np.where(ss_tot == 0, 0.0, r2)
    return r2 if r2.ndim else float(r2)


def correlation_score(y_true, y_pred):
    """Pearson correlation per target (0 where either side has zero variance).

    Parameters
    ----------
    y_true, y_pred : array-like (n_samples, n_targets) or (n_samples,)

    Returns
    -------
    ndarray (n_targets,) or float
    """
    yt = np.asarray(y_true, dtype=float)
    yp = np.asarray(y_pred, dtype=float)
    if yt.shape != yp.shape:
        raise DataError(f"correlation_score: y_true has shape {yt.shape} but y_pred has "
                        f"{yp.shape}")
    a = yt - yt.mean(0)
    b = yp - yp.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (a * b).sum(0) / den
    r = np.where(den == 0, 0.0, r)
    return r if r.ndim else float(r)


def explainable_variance(data, bias_correction=True, do_zscore=True):
    """Noise ceiling from repeated presentations (voxelwise tutorials' formula).

    ``ev = var_t(mean_r y) / mean_r var_t(y_r)`` (ddof 1) after z-scoring each repeat over
    time; with ``bias_correction``: ``ev - (1 - ev) / (n_repeats - 1)``.

    Parameters
    ----------
    data : array-like (n_repeats, n_times, n_targets)
    bias_correction : bool
    do_zscore : bool

    Returns
    -------
    ndarray (n_targets,)
    """
    d = np.asarray(data, dtype=float)
    if d.ndim != 3 or d.shape[0] < 2 or d.shape[1] < 2:
        raise DataError("explainable_variance: data must be (n_repeats >= 2, n_times >= 2, "
                        f"n_targets); got shape {d.shape}")
    if do_zscore:
        sd = d.std(1, keepdims=True)
        d = (d - d.mean(1, keepdims=True)) / np.where(sd == 0, 1.0, sd)
    mean_var = d.var(1, ddof=1).mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ev = d.mean(0).var(0, ddof=1) / mean_var
    ev = np.where(mean_var == 0, 0.0, ev)
    if bias_correction:
        ev = ev - (1.0 - ev) / (d.shape[0] - 1)
    return ev


def noise_normalized(score, ev, *, min_ev=1e-3):
    """Score divided by the explainable variance (``r^2 / ev`` or ``R^2 / ev``).

    Parameters
    ----------
    score : array-like (n_targets,)
        R^2, or squared correlation (square it first for Pearson r).
    ev : array-like (n_targets,)
        :func:`explainable_variance`.
    min_ev : float
        Targets with ``ev < min_ev`` get NaN (no reliable ceiling).

    Returns
    -------
    ndarray (n_targets,)
    """
    s = np.asarray(score, dtype=float)
    e = np.asarray(ev, dtype=float)
    if s.shape != e.shape:
        raise DataError(f"noise_normalized: score has shape {s.shape} but ev has {e.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(e >= min_ev, s / e, np.nan)


def condition_averages(trials, conditions):
    """Condition averages of repeated trials and the noise variance of each average.

    With ``y_i(t) = s_k(t) + e_i(t)`` for the trials ``i`` of condition ``k`` (independent
    noise of any variance per condition and time), the average of the ``n_k`` trials has
    noise variance ``var(e_k(t)) / n_k``, estimated without bias by the trials' sample
    variance (ddof 1) divided by ``n_k``. Conditions may have different numbers of trials.

    Parameters
    ----------
    trials : array-like (n_trials, n_times, n_targets)
        One row per trial (e.g. an event-locked epoch of every channel).
    conditions : array-like (n_trials,)
        Condition label of each trial; every condition needs at least 2 trials.

    Returns
    -------
    averages : ndarray (n_conditions, n_times, n_targets)
    noise : ndarray (n_conditions, n_times, n_targets)
        Estimated noise variance of each average (sample variance / n_k).
    labels : ndarray (n_conditions,)
        The conditions, sorted.
    counts : ndarray (n_conditions,)
        Trials per condition.

    Raises
    ------
    DataError
        Wrong shapes, or a condition with fewer than 2 trials.
    """
    y = np.asarray(trials, dtype=float)
    c = np.asarray(conditions)
    if y.ndim != 3 or c.shape != (y.shape[0],):
        raise DataError(f"condition_averages: trials must be (n_trials, n_times, n_targets) "
                        f"and conditions (n_trials,); got shapes {y.shape} and {c.shape}")
    labels, inverse, counts = np.unique(c, return_inverse=True, return_counts=True)
    if not len(labels) or counts.min() < 2:
        few = labels[counts < 2].tolist()
        raise DataError(f"condition_averages: every condition needs >= 2 trials (repeats) "
                        f"for a noise estimate; conditions {few} have fewer")
    averages = np.stack([y[inverse == k].mean(0) for k in range(len(labels))])
    noise = np.stack([y[inverse == k].var(0, ddof=1) / counts[k] for k in range(len(labels))])
    return averages, noise, labels, counts


def r2_ceiling(targets, noise):
    """Noise ceiling of R^2 against noisy averages: ``1 - sum(noise) / SS_tot``.

    For targets ``y_r = s_r + e_r`` (averages of repeats, noise ``e_r`` of variance
    ``v_r``) and a prediction ``p`` that does not depend on the targets' noise,
    ``E[SS_res] = ||s - p||^2 + sum_r v_r``: the best possible prediction (``p = s``) reaches
    ``R^2 = 1 - sum_r v_r / SS_tot`` in expectation, and ``R^2 / ceiling = 1 - ||s - p||^2 /
    (SS_tot - sum_r v_r)`` is at most 1 (the R^2 of ``p`` against the noise-free signal).
    ``SS_tot`` is the targets' sum of squares around their mean, as in :func:`r2_score`.
    For averages of ``n`` balanced repeats this is the Spearman-Brown step-up
    ``n ev / (1 + (n - 1) ev)`` of the single-trial :func:`explainable_variance` ``ev``.

    Parameters
    ----------
    targets : array-like (..., n_targets)
        The averages scored against (e.g. :func:`condition_averages`; rows of any leading
        shape, flattened).
    noise : array-like, same shape
        Noise variance of each average.

    Returns
    -------
    ndarray (n_targets,)
        Can be <= 0 when the averages hold no reliable signal (use :func:`noise_normalized`
        with ``min_ev`` to leave those targets out).
    """
    y = np.asarray(targets, dtype=float)
    v = np.asarray(noise, dtype=float)
    if y.shape != v.shape or y.ndim < 1:
        raise DataError(f"r2_ceiling: targets have shape {y.shape} but noise has {v.shape}")
    if y.ndim == 1:
        y, v = y[:, None], v[:, None]
    y = y.reshape(-1, y.shape[-1])
    v = v.reshape(-1, v.shape[-1])
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ceiling = 1.0 - v.sum(0) / ss_tot
    return np.where(ss_tot == 0, 0.0, ceiling)


# ----------------------------------------------------------------------------- helpers
def leave_one_run_out(run_lengths):
    """Leave-one-run-out CV splits for concatenated runs.

    Parameters
    ----------
    run_lengths : sequence of int
        Number of samples of each run, in the order they are concatenated.

    Returns
    -------
    list of (train_idx, val_idx) ndarray pairs, one per run
    """
    lengths = [int(n) for n in run_lengths]
    if len(lengths) < 2 or min(lengths) < 1:
        raise DataError("leave_one_run_out: need at least 2 runs of >= 1 sample; got "
                        f"run_lengths={lengths}")
    edges = np.concatenate([[0], np.cumsum(lengths)])
    idx = np.arange(edges[-1])
    return [(np.concatenate([idx[: edges[i]], idx[edges[i + 1]:]]), idx[edges[i]: edges[i + 1]])
            for i in range(len(lengths))]


class Delayer(TransformerMixin, BaseEstimator):
    """FIR delays: copies of every feature at the given lags, zero-filled at the start.

    Parameters
    ----------
    delays : sequence of int, default (1, 2, 3, 4)
        Lags in samples (0 = no lag, negative = lead, filled with zeros at the end).

    Notes
    -----
    ``transform`` maps ``(n_samples, n_features)`` to ``(n_samples, n_features * n_delays)``,
    delay-major: columns ``[d * n_features:(d + 1) * n_features]`` hold ``delays[d]``.
    """

    def __init__(self, delays=(1, 2, 3, 4)):
        self.delays = delays

    def fit(self, X, y=None):
        """Record the number of features. Returns self."""
        validate_data(self, X, reset=True)
        self._check_delays()
        return self

    def _check_delays(self):
        d = np.atleast_1d(np.asarray(self.delays))
        if d.size == 0 or not np.issubdtype(d.dtype, np.integer):
            raise DataError(f"Delayer: delays must be a non-empty sequence of int; got "
                            f"{self.delays!r}")
        return d

    def transform(self, X):
        """Delay X (n_samples, n_features) -> (n_samples, n_features * n_delays)."""
        check_is_fitted(self)
        x = validate_data(self, X, reset=False)
        d = self._check_delays()
        n, p = x.shape
        out = np.zeros((n, p * len(d)), dtype=x.dtype)
        for i, lag in enumerate(d):
            blk = out[:, i * p:(i + 1) * p]
            if lag == 0:
                blk[:] = x
            elif 0 < lag < n:
                blk[lag:] = x[:-lag]
            elif 0 < -lag < n:
                blk[:lag] = x[-lag:]
        return out


def _check_alphas(alphas, name="alphas"):
    a = np.atleast_1d(np.asarray(alphas, dtype=float))
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise DataError(f"{name} must be a non-empty 1-D sequence of positive finite numbers; "
                        f"got {alphas!r}")
    return a


def _check_backend(backend):
    if backend not in ("numpy", "torch"):
        raise NeurofmError(f"backend must be 'numpy' or 'torch'; got {backend!r}")


class _RidgeBase(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Shared fit/predict plumbing (validation, backends, 1-D targets, scores)."""

    def _validate(self, X, y):
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True,
                             dtype=[np.float64, np.float32])
        self._y_1d = y.ndim == 1
        y2 = y[:, None] if y.ndim == 1 else y
        _check_backend(self.backend)
        return X, y2

    def _ops(self, X):
        dtype = self.dtype
        if dtype is None and self.backend == "numpy":
            dtype = X.dtype
        return _ridge.make_ops(self.backend, self.device, dtype)

    def _finish(self, arr):
        return arr[..., 0] if self._y_1d else arr

    def score(self, X, y, multioutput="raw_values"):
        """R^2 of the predictions per target.

        Parameters
        ----------
        X : array-like (n_samples, n_features)
        y : array-like (n_samples, n_targets) or (n_samples,)
        multioutput : "raw_values" | "uniform_average"

        Returns
        -------
        ndarray (n_targets,) or float (1-D ``y`` or ``"uniform_average"``)
        """
        if multioutput not in ("raw_values", "uniform_average"):
            raise NeurofmError("multioutput must be 'raw_values' or 'uniform_average'; got "
                               f"{multioutput!r}")
        y = np.asarray(y)
        r2 = r2_score(y, np.asarray(self.predict(X)).reshape(y.shape))
        if multioutput == "uniform_average" or np.ndim(r2) == 0:
            return float(np.mean(r2))
        return r2


class RidgeCV(_RidgeBase):
    """Ridge regression with efficient cross-validation over alphas (per target).

    Parameters
    ----------
    alphas : array-like (n_alphas,), default ``np.logspace(-2, 8, 21)``
    cv : int, sklearn splitter or iterable of (train, val), default 5
        An int means ``KFold(cv)`` without shuffling (contiguous folds).
    fit_intercept : bool, default False
    local_alpha : bool, default True
        Best alpha per target (else one alpha for all targets, best mean score).
    backend : "numpy" | "torch"
    device : None, "auto" or torch device (torch backend)
    dtype : None, "float32" or "float64"
    n_targets_batch : int or None
        Targets per batch (bounds memory; ``Y`` stays on the host between batches).
    solver : "auto" | "primal" | "dual"
        ``"auto"`` uses the kernel (dual) form when ``n_features > n_samples``.

    Attributes
    ----------
    best_alphas_ : ndarray (n_targets,)
    coef_ : ndarray (n_features, n_targets)
    intercept_ : ndarray (n_targets,) or 0.0
    cv_scores_ : ndarray (n_alphas, n_targets)
        Negative MSE averaged over folds, for every alpha.
    solver_ : "primal" | "dual"
    """

    def __init__(self, alphas=_DEFAULT_ALPHAS, *, cv=5, fit_intercept=False, local_alpha=True,
                 backend="numpy", device=None, dtype=None, n_targets_batch=None,
                 solver="auto"):
        self.alphas = alphas
        self.cv = cv
        self.fit_intercept = fit_intercept
        self.local_alpha = local_alpha
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.n_targets_batch = n_targets_batch
        self.solver = solver

    def fit(self, X, y):
        """Fit on X (n_samples, n_features) and y (n_samples, n_targets). Returns self."""
        X, y = self._validate(X, y)
        alphas = _check_alphas(self.alphas)
        if self.solver not in ("auto", "primal", "dual"):
            raise NeurofmError(f"solver must be 'auto', 'primal' or 'dual'; got {self.solver!r}")
        n, p = X.shape
        form = self.solver if self.solver != "auto" else ("dual" if p > n else "primal")
        ops = self._ops(X)
        splits = _ridge.cv_splits(self.cv, n)
        xb = ops.asarray(X)
        out = _ridge.solve(ops, xb, y, alphas, splits, fit_intercept=self.fit_intercept,
                           local_alpha=self.local_alpha, n_targets_batch=self.n_targets_batch,
                           form=form, kernel_fn=lambda: xb @ xb.T)
        self.solver_ = form
        self.best_alphas_ = self._finish(alphas[out["alpha_idx"]])
        self.coef_ = self._finish(out["coef"])
        self.intercept_ = self._finish(out["intercept"]) if self.fit_intercept else 0.0
        self.cv_scores_ = self._finish(out["cv_scores"])
        return self

    def predict(self, X):
        """Predict (n_samples, n_targets) (or (n_samples,) for a 1-D fit target)."""
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return X @ self.coef_ + self.intercept_


class KernelRidgeCV(_RidgeBase):
    """Kernel ridge regression with efficient cross-validation over alphas (per target).

    Parameters
    ----------
    alphas : array-like (n_alphas,), default ``np.logspace(-2, 8, 21)``
    kernel : "linear" | "rbf" | "poly"
        ``rbf``: ``exp(-gamma ||x - y||^2)``; ``poly``: ``(gamma <x, y> + coef0)^degree``;
        ``gamma`` defaults to ``1 / n_features`` (himalaya's defaults).
    kernel_params : dict or None
        ``gamma``, ``degree`` (3), ``coef0`` (1).
    cv, fit_intercept, local_alpha, backend, device, dtype, n_targets_batch
        As in :class:`RidgeCV`.

    Attributes
    ----------
    best_alphas_ : ndarray (n_targets,)
    dual_coef_ : ndarray (n_samples_fit, n_targets)
    X_fit_ : ndarray (n_samples_fit, n_features)
    cv_scores_ : ndarray (n_alphas, n_targets)
    """

    def __init__(self, alphas=_DEFAULT_ALPHAS, *, kernel="linear", kernel_params=None, cv=5,
                 fit_intercept=False, local_alpha=True, backend="numpy", device=None,
                 dtype=None, n_targets_batch=None):
        self.alphas = alphas
        self.kernel = kernel
        self.kernel_params = kernel_params
        self.cv = cv
        self.fit_intercept = fit_intercept
        self.local_alpha = local_alpha
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.n_targets_batch = n_targets_batch

    def _kparams(self):
        if self.kernel not in ("linear", "rbf", "poly"):
            raise NeurofmError(f"kernel must be 'linear', 'rbf' or 'poly'; got {self.kernel!r}")
        return dict(self.kernel_params or {})

    def fit(self, X, y):
        """Fit on X (n_samples, n_features) and y (n_samples, n_targets). Returns self."""
        X, y = self._validate(X, y)
        alphas = _check_alphas(self.alphas)
        params = self._kparams()
        ops = self._ops(X)
        splits = _ridge.cv_splits(self.cv, X.shape[0])
        xb = ops.asarray(X)
        k = _ridge.kernel_matrix(ops, self.kernel, xb, xb, params)
        out = _ridge.solve(ops, None, y, alphas, splits, fit_intercept=self.fit_intercept,
                           local_alpha=self.local_alpha, n_targets_batch=self.n_targets_batch,
                           form="dual", kernel_fn=lambda: k)
        self.X_fit_ = X
        self.best_alphas_ = self._finish(alphas[out["alpha_idx"]])
        self.dual_coef_ = self._finish(out["dual"])
        self.cv_scores_ = self._finish(out["cv_scores"])
        if self.fit_intercept:
            km = ops.to_numpy(k).astype(float)
            self._k_col_means = km.mean(0)
            self._k_all_mean = km.mean()
            self.intercept_ = self._finish(out["intercept"])
        else:
            self.intercept_ = 0.0
        return self

    def predict(self, X):
        """Predict (n_samples, n_targets) (or (n_samples,) for a 1-D fit target)."""
        check_is_fitted(self, "dual_coef_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        ops = _ridge.NumpyOps(np.float64)
        k = _ridge.kernel_matrix(ops, self.kernel, X.astype(float), self.X_fit_.astype(float),
                                 self._kparams())
        if self.fit_intercept:
            k = _ridge.center_kernel(k, self._k_col_means, self._k_all_mean)
        return k @ self.dual_coef_ + self.intercept_


class BandedRidgeCV(_RidgeBase):
    """Banded (group) ridge: one penalty per feature band, found by random search.

    Candidate band weights ``gamma`` are Dirichlet draws (concentrations cycled,
    interleaved; the first candidate is uniform), the same draws as himalaya's
    ``GroupRidgeCV`` for the same ``random_state``. For each candidate the bands are scaled
    by ``sqrt(gamma_i)`` and ridge is cross-validated over ``alphas``; each target keeps its
    best (gamma, alpha). The equivalent per-band penalty is ``alpha / gamma_i``.

    Parameters
    ----------
    groups : sequence of int (n_features,) or list of slices / index arrays
        Band of each feature (labels 0..n_bands-1) or the features of each band.
    alphas : array-like (n_alphas,), default ``np.logspace(-2, 8, 21)``
    n_iter : int or array (n_candidates, n_bands)
        Number of candidates (or the candidates themselves).
    concentration : float or sequence of float, default (0.1, 1.0)
    cv, fit_intercept, local_alpha, backend, device, dtype, n_targets_batch
        As in :class:`RidgeCV`.
    random_state : int, RandomState or None
    solver : "auto" | "primal" | "dual"
        ``"auto"`` uses the dual (multiple-kernel) form when ``n_features > n_samples``.

    Attributes
    ----------
    coef_ : ndarray (n_features, n_targets)
        Weights on the original feature scale.
    deltas_ : ndarray (n_bands, n_targets)
        ``log(gamma / alpha)`` (himalaya's convention).
    best_alphas_ : ndarray (n_targets,)
    best_gammas_ : ndarray (n_bands, n_targets)
    cv_scores_ : ndarray (n_alphas, n_targets) for the winning band weights
    best_scores_ : ndarray (n_targets,)
    band_of_ : ndarray (n_features,)
    """

    def __init__(self, groups=None, alphas=_DEFAULT_ALPHAS, *, n_iter=100,
                 concentration=(0.1, 1.0), cv=5, random_state=None, fit_intercept=False,
                 local_alpha=True, backend="numpy", device=None, dtype=None,
                 n_targets_batch=None, solver="auto"):
        self.groups = groups
        self.alphas = alphas
        self.n_iter = n_iter
        self.concentration = concentration
        self.cv = cv
        self.random_state = random_state
        self.fit_intercept = fit_intercept
        self.local_alpha = local_alpha
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.n_targets_batch = n_targets_batch
        self.solver = solver

    def _band_of(self, p):
        g = self.groups
        if g is None:
            return np.zeros(p, dtype=int)
        if len(g) and all(isinstance(s, (slice, list, tuple, np.ndarray)) for s in g) and \
                not np.isscalar(g[0]):
            band = np.full(p, -1)
            for i, s in enumerate(g):
                band[np.arange(p)[s] if isinstance(s, slice) else np.asarray(s, int)] = i
        else:
            band = np.asarray(g)
            if band.shape != (p,) or not np.issubdtype(band.dtype, np.integer):
                raise DataError(f"BandedRidgeCV: groups must give an int band label per feature "
                                f"({p} features) or the features of each band; got {g!r}")
            band = band.astype(int)
        labels = np.unique(band)
        if labels[0] < 0 or not np.array_equal(labels, np.arange(len(labels))):
            raise DataError("BandedRidgeCV: groups must cover every feature with bands "
                            f"0..n_bands-1; got band labels {labels.tolist()}")
        return band

    def fit(self, X, y):
        """Fit on X (n_samples, n_features) and y (n_samples, n_targets). Returns self."""
        X, y = self._validate(X, y)
        alphas = _check_alphas(self.alphas)
        n, p = X.shape
        band = self._band_of(p)
        n_bands = int(band.max()) + 1
        if isinstance(self.n_iter, numbers.Integral):
            if self.n_iter < 1:
                raise DataError(f"BandedRidgeCV: n_iter must be >= 1; got {self.n_iter}")
            gammas = _ridge.dirichlet_gammas(int(self.n_iter), n_bands, self.concentration,
                                             self.random_state)
        else:
            gammas = np.asarray(self.n_iter, dtype=float)
            if gammas.ndim != 2 or gammas.shape[1] != n_bands:
                raise DataError(f"BandedRidgeCV: n_iter as an array must be (n_candidates, "
                                f"{n_bands}); got shape {gammas.shape}")
        if self.solver not in ("auto", "primal", "dual"):
            raise NeurofmError(f"solver must be 'auto', 'primal' or 'dual'; got {self.solver!r}")
        form = self.solver if self.solver != "auto" else ("dual" if p > n else "primal")
        ops = self._ops(X)
        splits = _ridge.cv_splits(self.cv, n)
        xb = ops.asarray(X)
        band_kernels = None
        if form == "dual":
            band_kernels = []
            for b in range(n_bands):
                xi = xb[:, ops.index(np.flatnonzero(band == b))]
                band_kernels.append(xi @ xi.T)
        out = _ridge.solve(ops, xb, y, alphas, splits, fit_intercept=self.fit_intercept,
                           local_alpha=self.local_alpha, n_targets_batch=self.n_targets_batch,
                           form=form, gammas=gammas, band_of=band, band_kernels=band_kernels)
        self.solver_ = form
        self.band_of_ = band
        self.n_bands_ = n_bands
        self.gammas_ = gammas
        best_alphas = alphas[out["alpha_idx"]]
        best_gammas = gammas[out["gamma_idx"]].T
        self.best_alphas_ = self._finish(best_alphas)
        self.best_gammas_ = self._finish(best_gammas)
        self.deltas_ = self._finish(np.log(best_gammas / best_alphas[None, :]))
        self.coef_ = self._finish(out["coef"])
        self.intercept_ = self._finish(out["intercept"]) if self.fit_intercept else 0.0
        self.cv_scores_ = self._finish(out["cv_scores"])
        self.best_scores_ = self._finish(out["best"])
        return self

    def predict(self, X, split=False):
        """Predict; ``split=True`` returns per-band predictions (n_bands, n_samples, ...).

        With ``split=True`` the intercept is not included (it belongs to no band).
        """
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        if not split:
            return X @ self.coef_ + self.intercept_
        return np.stack([X[:, self.band_of_ == b] @ self.coef_[self.band_of_ == b]
                         for b in range(self.n_bands_)])

    def score_split(self, X, y):
        """Per-band R^2 (product measure); the bands sum to the total R^2 (no intercept).

        ``R^2_i = (2 <y, yhat_i> - <yhat_i, yhat>) / ||y - mean(y)||^2`` with ``y`` centred
        as in himalaya's ``r2_score_split`` (``include_correlation=True``).

        Returns
        -------
        ndarray (n_bands, n_targets) or (n_bands,) for a 1-D fit target
        """
        parts = self.predict(X, split=True)
        yt = np.asarray(y, dtype=float).reshape(parts.shape[1:])
        yc = yt - yt.mean(0)
        parts = parts - parts.mean(1, keepdims=True)
        total = parts.sum(0)
        den = (yc ** 2).sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = (2 * (yc[None] * parts).sum(1) - (parts * total[None]).sum(1)) / den
        return np.where(den == 0, 0.0, r2)


# ----------------------------------------------------------------------------- xarray
def fit_encoding_model(features, responses, *, delays=(1, 2, 3, 4), runs=None, model="ridge",
                       groups=None, alphas=_DEFAULT_ALPHAS, test=None, **kwargs):
    """Fit a voxelwise/channelwise encoding model on xarray inputs.

    Parameters
    ----------
    features : xr.DataArray (time, feature)
    responses : xr.DataArray (time, channel)
        Same ``time`` length as ``features``; the second dim may have any name.
    delays : sequence of int or None
        FIR lags applied to the features (None: no delays).
    runs : sequence of int (run lengths) or array (n_times,) of run labels, or None
        Leave-one-run-out CV when given, else ``KFold(5)``.
    model : "ridge" | "banded"
    groups : for ``model="banded"``: band label per feature (before delays) or the name of
        a coordinate on the ``feature`` dim holding the band of each feature.
    alphas : array-like (n_alphas,)
    test : tuple (features_test, responses_test) of DataArrays or None
        Held-out data; scores are computed on it when given (else CV-free in-sample R^2).
    **kwargs
        Passed to :class:`RidgeCV` / :class:`BandedRidgeCV`.

    Returns
    -------
    xr.Dataset
        ``r2`` and ``r`` (channel), ``alpha`` (channel), ``weights`` (delay, feature,
        channel), and for banded models ``r2_split`` (band, channel) and ``deltas``.
    """
    import xarray as xr

    for name, arr in (("features", features), ("responses", responses)):
        if not isinstance(arr, xr.DataArray) or arr.ndim != 2:
            raise DataError(f"fit_encoding_model: {name} must be a 2-D xarray.DataArray "
                            f"(time, ...); got {type(arr).__name__}")
    tdim = features.dims[0]
    fdim, cdim = features.dims[1], responses.dims[1]
    if responses.sizes[responses.dims[0]] != features.sizes[tdim]:
        raise DataError(f"fit_encoding_model: features have {features.sizes[tdim]} time points "
                        f"but responses have {responses.sizes[responses.dims[0]]}")
    if model not in ("ridge", "banded"):
        raise NeurofmError(f"model must be 'ridge' or 'banded'; got {model!r}")
    d = None if delays is None else tuple(int(v) for v in delays)

    def design(f):
        x = np.asarray(f, dtype=float)
        return Delayer(d).fit_transform(x) if d else x

    x = design(features)
    y = np.asarray(responses, dtype=float)
    cv = kwargs.pop("cv", 5)
    if runs is not None:
        r = np.asarray(runs)
        if r.shape == (x.shape[0],):
            _, first, counts = np.unique(r, return_index=True, return_counts=True)
            lengths = counts[np.argsort(first)]
        else:
            lengths = r
        if int(np.sum(lengths)) != x.shape[0]:
            raise DataError(f"fit_encoding_model: runs cover {int(np.sum(lengths))} samples but "
                            f"there are {x.shape[0]} time points")
        cv = leave_one_run_out(lengths)
    n_feat = features.sizes[fdim]
    n_del = 1 if not d else len(d)
    if model == "banded":
        g = groups
        if isinstance(g, str):
            g = features.coords[g].values
        if g is None:
            raise DataError("fit_encoding_model: model='banded' needs groups= (a band per "
                            "feature or a coordinate name)")
        labels, g_idx = np.unique(np.asarray(g), return_inverse=True)
        est = BandedRidgeCV(groups=np.tile(g_idx, n_del), alphas=alphas, cv=cv, **kwargs)
    else:
        est = RidgeCV(alphas=alphas, cv=cv, **kwargs)
    est.fit(x, y)
    xt, yt = x, y
    if test is not None:
        xt, yt = design(test[0]), np.asarray(test[1], dtype=float)
    pred = est.predict(xt)
    coords = {cdim: responses.coords[cdim]} if cdim in responses.coords else {}
    w = np.asarray(est.coef_).reshape(n_del, n_feat, -1)
    ds = xr.Dataset(
        {
            "r2": ((cdim,), r2_score(yt, pred)),
            "r": ((cdim,), correlation_score(yt, pred)),
            "alpha": ((cdim,), np.asarray(est.best_alphas_)),
            "weights": (("delay", fdim, cdim), w),
        },
        coords={**coords, "delay": list(d) if d else [0],
                **({fdim: features.coords[fdim]} if fdim in features.coords else {})},
        attrs={"model": model, "cv": "leave-one-run-out" if runs is not None else str(cv),
               "scored_on": "test" if test is not None else "train"},
    )
    if model == "banded":
        ds["r2_split"] = (("band", cdim), est.score_split(xt, yt))
        ds["deltas"] = (("band", cdim), est.deltas_)
        ds = ds.assign_coords(band=[str(v) for v in labels])
    return ds
