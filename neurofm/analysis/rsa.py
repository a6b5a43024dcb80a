"""Representational similarity analysis (RSA): RDMs, comparisons, noise ceilings, inference.

Formulas and defaults follow METHODS.md section 6, i.e. rsatoolbox's definitions, with two
deliberate differences: ``method="poisson_cv"`` averages the fold RDMs (rsatoolbox returns
only its last fold) and missing (NaN) RDM entries are handled pairwise in comparisons.

An RDM is an :class:`xarray.DataArray` with dims ``("condition", "condition2")`` (xarray
does not allow a dimension twice, so the column dimension is ``condition2``; both carry the
condition labels), zero diagonal and attrs ``method`` / ``n_channels``. ``np.asarray(rdm)``
is the square matrix; :func:`upper` gives the condensed vector in scipy squareform order and
:func:`square` the inverse. A stack of RDMs has dims ``("rdm", "condition", "condition2")``.

Every function that takes RDMs also accepts square ndarrays (K, K), stacks (n, K, K) and
condensed vectors (n_pairs,) or (n, n_pairs).

Example
-------
>>> import numpy as np
>>> from neurofm.analysis import rsa
>>> x = np.random.default_rng(0).standard_normal((20, 50))   # 20 trials, 50 channels
>>> rdm = rsa.compute_rdm(x, conditions=np.repeat(np.arange(5), 4), method="correlation")
>>> rdm.shape
(5, 5)
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .._checks import check_option, check_positive_int, validate_type
from .._logging import logger
from ..errors import DataError, NeurofmError
from . import _rdm_calc as _calc
from ._rdm_compare import (
    COMPARE_METHODS,
    check_comparable,
    compare_vectors,
    noise_ceiling_vectors,
)
from ._rdm_utils import (
    COL_DIM,
    ROW_DIM,
    STACK_DIM,
    align_conditions,
    as_rdm_stack,
    n_cond_from_pairs,
    to_square_dataarray,
)
from ._rsa_inference import EvalResult, evaluate
from ._searchlight import searchlight_rdms

__all__ = [
    "COMPARE_METHODS",
    "RDM_METHODS",
    "EvalResult",
    "as_rdm",
    "compare_rdms",
    "compute_rdm",
    "compute_rdms",
    "evaluate",
    "noise_ceiling",
    "prec_from_residuals",
    "searchlight_rdms",
    "square",
    "upper",
]

RDM_METHODS = _calc.METHODS


# --------------------------------------------------------------------------------------
# RDM estimation


def compute_rdm(data, *, method="euclidean", conditions=None, folds=None, noise=None,
                remove_mean=False, dtype="float64", device=None, prior_lambda=1.0,
                prior_weight=0.1):
    """Representational dissimilarity matrix of condition-mean patterns.

    Observations with the same condition label are averaged into one pattern a_i per
    condition (P channels) and every distance is divided by P:

    - ``"euclidean"``: ||a_i - a_j||^2 / P (squared Euclidean);
    - ``"correlation"``: 1 - corr(a_i, a_j);
    - ``"mahalanobis"``: (a_i - a_j)^T L (a_i - a_j) / P, L = ``noise`` (a precision);
      without ``noise`` L is the identity, which gives the squared Euclidean distance (as
      rsatoolbox's ``calc_rdm_mahalanobis``; an INFO log message says so);
    - ``"crossnobis"``: mean over folds f of (a_i - a_j)^T L (b_i - b_j) / P with b the means
      of fold f and a the means of all other folds (L = identity when ``noise`` is None);
      with a list of per-fold precisions, pairs of folds (k < l) use inv((S_k + S_l) / 2);
    - ``"poisson"``: x <- (x + lambda w) / (1 + w);
      sum_c (x_ic - x_jc)(log x_ic - log x_jc) / P (symmetrized KL of Poisson rates);
    - ``"poisson_cv"``: the cross-validated Poisson distance, averaged over the folds
      (rsatoolbox's ``calc_rdm_poisson_cv`` returns only its last fold; this does not).

    Parameters
    ----------
    data : xr.DataArray of shape (observation, channel) or ndarray of shape (n_obs, n_channels)
        A DataArray must carry the condition labels as a coordinate along its observation
        dimension (name given by ``conditions``, default ``"condition"``). Never modified.
    method : str
        One of ``"euclidean"``, ``"correlation"``, ``"mahalanobis"``, ``"crossnobis"``,
        ``"poisson"``, ``"poisson_cv"``.
    conditions : str or array-like of shape (n_obs,), optional
        Coordinate name (DataArray) or one label per observation. For an ndarray without
        labels every row is its own condition (e.g. one model embedding per stimulus).
    folds : str or array-like of shape (n_obs,), optional
        Cross-validation fold of each observation (``crossnobis`` / ``poisson_cv`` only).
        Default: the k-th repetition of each condition, in observation order, is fold k
        (this needs the same number of repetitions for every condition).
    noise : ndarray of shape (n_channels, n_channels) or list of them, optional
        Noise precision matrix (see :func:`prec_from_residuals`); for ``crossnobis`` also a
        list (or array of shape (n_folds, P, P)) with one precision per fold. None means
        the identity for ``mahalanobis`` and ``crossnobis``.
    remove_mean : bool
        Subtract each pattern's mean over channels first (no effect on correlation and the
        Poisson distances, as in rsatoolbox).
    dtype : {"float64", "float32"}
        Precision of the computation and of the result; float32 halves memory and time.
    device : None, "auto", str or torch.device
        None (default) computes with numpy on the CPU; ``"auto"`` uses torch on the first
        CUDA GPU when there is one and numpy otherwise; a torch device (``"cpu"``,
        ``"cuda"``, ``"cuda:1"``...) uses torch on it. The same rule holds for every RSA
        function taking ``device=``; an unusable device (``"cuda"`` on a CPU-only torch)
        raises NeurofmError.
    prior_lambda, prior_weight : float
        Prior of the Poisson distances (rsatoolbox's defaults 1 and 0.1).

    Returns
    -------
    rdm : xr.DataArray of shape (n_conditions, n_conditions)
        Dims ``("condition", "condition2")`` with the sorted unique condition labels as
        coordinates, zero diagonal, attrs ``method`` and ``n_channels`` (and ``n_folds``).

    Raises
    ------
    DataError
        NaN/Inf data, fewer than two conditions, mismatched label length, a condition
        missing from a fold, bad noise shapes, negative values for the Poisson distances.
    NeurofmError
        Unknown method or dtype, or an unusable ``device``.
    """
    check_option("method", method, _calc.METHODS)
    check_option("dtype", dtype, ("float64", "float32"))
    validate_type("remove_mean", remove_mean, (bool, np.bool_), "True or False")
    x, labels, fold_labels, cond_name = _parse_data(data, conditions, folds)
    cond_values, codes = _calc.encode_labels(labels, "conditions")
    n_cond = len(cond_values)
    if n_cond < 2:
        raise DataError(
            f"conditions: an RDM needs at least 2 conditions; got {n_cond} "
            f"({cond_values.tolist()})"
        )
    n_obs, n_channels = x.shape
    if method == "correlation" and n_channels < 2:
        raise DataError(f"data: the correlation distance needs at least 2 channels; got "
                        f"{n_channels}")
    be = _calc.make_backend(dtype, device)
    prior = (float(prior_lambda), float(prior_weight))
    attrs = {"method": method, "n_channels": int(n_channels)}
    if cond_name is not None:
        attrs["condition_name"] = cond_name

    if method in _calc.CV_METHODS:
        fold_codes, counts = _calc.fold_condition_counts(codes, fold_labels, cond_values,
                                                         method)
        n_folds = counts.shape[0]
        noise = _calc.check_noise(noise, n_channels, method, n_folds)
        xb = be.array(x)
        sums = be.group_sums(xb, fold_codes * n_cond + codes, n_folds * n_cond)
        sums = sums.reshape(n_folds, n_cond, n_channels)
        if method == "poisson_cv":
            _check_poisson(x, prior, "counts/rates")
        else:  # remove the grand mean: distances are translation invariant
            grand = sums.sum(axis=(0, 1)) / n_obs
            sums = sums - be.array(counts)[:, :, None] * grand
        if isinstance(noise, list):
            noise_b = [be.array(n) for n in noise]
        else:
            noise_b = None if noise is None else be.array(noise)
        two_balanced = n_folds == 2 and bool(np.array_equal(counts[0], counts[1]))
        mat = _calc.rdm_crossvalidated(method, sums, be.array(counts), be, noise=noise_b,
                                       remove_mean=remove_mean, prior=prior,
                                       two_balanced=two_balanced)
        attrs["n_folds"] = n_folds
    else:
        if fold_labels is not None:
            raise NeurofmError(f"folds are only used by the cross-validated methods "
                               f"{_calc.CV_METHODS}; got folds with method={method!r}")
        noise = _calc.check_noise(noise, n_channels, method, 1)
        if method == "mahalanobis" and noise is None:
            logger.info("compute_rdm: method='mahalanobis' without noise= uses the identity "
                        "precision, i.e. the squared Euclidean distance (as rsatoolbox); pass "
                        "noise=prec_from_residuals(...) for a noise-normalized distance")
        xb = be.array(x)
        counts = np.bincount(codes, minlength=n_cond)
        means = be.group_sums(xb, codes, n_cond) / be.array(counts)[:, None]
        if remove_mean and method in ("euclidean", "mahalanobis"):
            means = means - means.mean(axis=1, keepdims=True)
        if method in _calc.TRANSLATION_INVARIANT:
            means = means - means.mean(axis=0, keepdims=True)
        if method == "poisson":
            _check_poisson(be.numpy(means), prior, "condition means")
        if method == "correlation":
            _check_constant_patterns(be.numpy(means), cond_values)
        mat = _calc.rdm_from_means(method, means, be,
                                   noise=None if noise is None else be.array(noise),
                                   prior=prior)
    return _finish_square(be.numpy(mat), cond_values, attrs, dtype)


def _finish_square(mat, labels, attrs, dtype):
    """Copy the upper triangle to the lower one, zero the diagonal, wrap in a DataArray."""
    mat = np.array(mat, dtype=dtype, copy=True)
    iu = np.triu_indices(mat.shape[0], 1)
    mat[(iu[1], iu[0])] = mat[iu]
    np.fill_diagonal(mat, 0.0)
    return xr.DataArray(mat, dims=(ROW_DIM, COL_DIM),
                        coords={ROW_DIM: labels, COL_DIM: labels}, attrs=attrs)


def _parse_data(data, conditions, folds):
    """-> (x (n_obs, P) float64 ndarray, labels (n_obs,), folds (n_obs,) or None, cond name)."""
    cond_name = None
    if isinstance(data, xr.Dataset):
        raise NeurofmError("data must be an xr.DataArray (observation, channel) or an ndarray; "
                           "got an xr.Dataset - select its data variable first")
    if isinstance(data, xr.DataArray):
        if data.ndim != 2:
            raise DataError(f"data must be 2-D (observation, channel); got dims {data.dims}")
        if conditions is None or isinstance(conditions, str):
            cond_name = conditions or "condition"
            if cond_name not in data.coords:
                raise DataError(
                    f"data has no coordinate {cond_name!r} with the condition of each "
                    f"observation; pass conditions=<coordinate name> or one label per "
                    f"observation (data coords: {list(data.coords)})"
                )
            coord = data.coords[cond_name]
            if coord.ndim != 1 or coord.dims[0] not in data.dims:
                raise DataError(f"conditions: coordinate {cond_name!r} must be 1-D along the "
                                f"observation dimension; got dims {coord.dims}")
            obs_dim = coord.dims[0]
            labels = np.asarray(coord.values)
        else:
            obs_dim = data.dims[0]
            labels = _as_labels(conditions, "conditions")
        ch_dim = next(d for d in data.dims if d != obs_dim)
        x = np.asarray(data.transpose(obs_dim, ch_dim).values)
        if isinstance(folds, str):
            if folds not in data.coords or data.coords[folds].dims != (obs_dim,):
                raise DataError(f"folds: data has no coordinate {folds!r} along {obs_dim!r}")
            folds = np.asarray(data.coords[folds].values)
    else:
        if isinstance(conditions, str):
            raise NeurofmError(
                f"conditions={conditions!r} names a coordinate, which needs an xr.DataArray; "
                f"for an ndarray pass one label per observation"
            )
        if isinstance(folds, str):
            raise NeurofmError(f"folds={folds!r} names a coordinate, which needs an "
                               f"xr.DataArray; for an ndarray pass one fold per observation")
        try:
            x = np.asarray(data)
        except Exception as err:  # noqa: BLE001 - any conversion failure is a data error
            raise DataError(f"data must be array-like; got {type(data).__name__} ({err})") \
                from None
        if x.ndim != 2:
            raise DataError(f"data must be 2-D (n_observations, n_channels); got shape "
                            f"{x.shape}")
        labels = np.arange(x.shape[0]) if conditions is None else \
            _as_labels(conditions, "conditions")
    if x.dtype.kind not in "biuf":
        raise DataError(f"data must be numeric; got dtype {x.dtype}")
    x = x.astype(np.float64, copy=False)
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"data must have observations and channels; got shape {x.shape}")
    if len(labels) != x.shape[0]:
        raise DataError(f"conditions must have one label per observation ({x.shape[0]}); "
                        f"got {len(labels)} labels")
    if folds is not None:
        folds = _as_labels(folds, "folds")
        if len(folds) != x.shape[0]:
            raise DataError(f"folds must have one entry per observation ({x.shape[0]}); got "
                            f"{len(folds)}")
    bad = ~np.isfinite(x)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise DataError(
            f"data must be finite; found {int(bad.sum())} NaN/Inf values (first at "
            f"observation {rows[0]}, channel {cols[0]}); drop or impute them first"
        )
    return x, labels, folds, cond_name


def _as_labels(values, name):
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D (one entry per observation); got shape {arr.shape}")
    return arr


def _check_poisson(values, prior, what):
    """The prior-shifted values must stay positive for the logarithm of the Poisson distances."""
    if values.min() <= -prior[0] * prior[1]:
        raise DataError(
            f"data: the Poisson distances need {what} > -prior_lambda*prior_weight "
            f"({-prior[0] * prior[1]}); found a minimum of {values.min():.4g}"
        )


def _check_constant_patterns(means, labels):
    flat = np.ptp(means, axis=1) == 0
    if flat.any():
        raise DataError(
            f"data: the correlation distance is undefined for constant patterns; conditions "
            f"{labels[flat].tolist()[:5]} have the same value on every channel"
        )


def compute_rdms(datasets, *, method="euclidean", conditions=None, folds=None, noise=None,
                 remove_mean=False, dtype="float64", device=None, names=None,
                 prior_lambda=1.0, prior_weight=0.1):
    """RDMs of several datasets (e.g. subjects), stacked.

    Parameters
    ----------
    datasets : sequence of xr.DataArray or ndarray
        Each as accepted by :func:`compute_rdm`; all must have the same condition labels.
    method, remove_mean, dtype, device, prior_lambda, prior_weight
        As in :func:`compute_rdm`, shared by all datasets.
    conditions, folds : str, array-like or list of array-likes, optional
        A coordinate name or one label array shared by all datasets, or a list with one
        label array per dataset (a list whose elements are themselves sequences).
    noise : ndarray of shape (P, P), ndarray of shape (n_datasets, P, P) or list, optional
        One precision shared by all datasets, or a list / 3-D array with one entry per
        dataset (each entry anything :func:`compute_rdm` accepts).
    names : sequence, optional
        Values of the ``rdm`` coordinate (default 0..n-1), e.g. subject ids.

    Returns
    -------
    rdms : xr.DataArray of shape (n_datasets, n_conditions, n_conditions)
        Dims ``("rdm", "condition", "condition2")``.
    """
    if isinstance(datasets, (xr.DataArray, np.ndarray)) or not hasattr(datasets, "__len__"):
        raise NeurofmError("datasets must be a list of datasets; for one dataset use "
                           "compute_rdm")
    n = len(datasets)
    if n == 0:
        raise DataError("datasets: got an empty list")
    conds = _per_dataset(conditions, n, "conditions")
    fold_list = _per_dataset(folds, n, "folds")
    if noise is None or (isinstance(noise, np.ndarray) and noise.ndim == 2):
        noises = [noise] * n
    elif isinstance(noise, (list, tuple)) or (isinstance(noise, np.ndarray) and noise.ndim == 3):
        if len(noise) != n:
            raise DataError(f"noise: a list of precisions must have one entry per dataset "
                            f"({n}); got {len(noise)}")
        noises = list(noise)
    else:
        raise DataError(f"noise must be None, a (P, P) array or one entry per dataset; got "
                        f"{type(noise).__name__}")
    if names is not None and len(names) != n:
        raise DataError(f"names must have one entry per dataset ({n}); got {len(names)}")
    rdms = []
    for i, ds in enumerate(datasets):
        try:
            rdms.append(compute_rdm(ds, method=method, conditions=conds[i], folds=fold_list[i],
                                    noise=noises[i], remove_mean=remove_mean, dtype=dtype,
                                    device=device, prior_lambda=prior_lambda,
                                    prior_weight=prior_weight))
        except NeurofmError as err:
            raise type(err)(f"datasets[{i}]: {err}") from None
    first = as_rdm_stack(rdms[0])
    vectors = [first.vectors]
    for i, rdm in enumerate(rdms[1:], start=1):
        stack = align_conditions(first, as_rdm_stack(rdm), "datasets[0]", f"datasets[{i}]")
        vectors.append(stack.vectors)
    attrs = {k: v for k, v in rdms[0].attrs.items() if k != "n_channels"}
    out = to_square_dataarray(np.concatenate(vectors).astype(dtype), first.labels,
                              names=names, single=False, attrs=attrs)
    out.coords["n_channels"] = (STACK_DIM, np.array([r.attrs["n_channels"] for r in rdms]))
    return out


def _per_dataset(value, n, name):
    if value is None or isinstance(value, str):
        return [value] * n
    if isinstance(value, (list, tuple)) and len(value) and all(
            hasattr(v, "__len__") and not isinstance(v, str) for v in value):
        if len(value) != n:
            raise DataError(f"{name}: a list of label arrays must have one entry per dataset "
                            f"({n}); got {len(value)}")
        return list(value)
    return [value] * n


# --------------------------------------------------------------------------------------
# square <-> condensed


def as_rdm(rdm):
    """Any accepted RDM input as a square DataArray (the canonical RDM layout).

    Parameters
    ----------
    rdm : xr.DataArray or ndarray
        One RDM (K, K) or (n_pairs,), or a stack (n, K, K) or (n, n_pairs), as accepted by
        every RSA function (a 2-D ndarray with equal sides is one square RDM).

    Returns
    -------
    xr.DataArray
        Shape (K, K) with dims ("condition", "condition2") for one RDM, or (n, K, K) with
        dims (<stack>, "condition", "condition2") for a stack (the input's stacking
        dimension and its coordinate, else "rdm" and 0..n-1); condition labels as
        coordinates (0..K-1 when the input had none), the input's attrs, zero diagonal.
        NaN entries are kept. Always a new array.

    Raises
    ------
    DataError
        Not an RDM (asymmetric, non-zero diagonal, a length that is no K (K - 1) / 2...).
    """
    stack = as_rdm_stack(rdm, "rdm")
    return to_square_dataarray(stack.vectors, stack.labels, names=stack.names,
                               stack_dim=stack.stack_dim, single=stack.single,
                               attrs=stack.attrs)


def upper(rdm):
    """Condensed upper triangle(s) in scipy ``squareform`` order (row-major, i < j).

    Parameters
    ----------
    rdm : xr.DataArray or ndarray
        One RDM (K, K) or a stack (n, K, K) (or already condensed vectors).

    Returns
    -------
    ndarray of shape (n_pairs,) for one RDM or (n_rdm, n_pairs) for a stack,
    n_pairs = K (K - 1) / 2. Always a new array.
    """
    stack = as_rdm_stack(rdm, "rdm")
    out = np.array(stack.vectors, copy=True)
    return out[0] if stack.single else out


def square(vector, labels=None):
    """Square RDM DataArray(s) from condensed vector(s) (inverse of :func:`upper`).

    Parameters
    ----------
    vector : array-like of shape (n_pairs,) or (n_rdm, n_pairs)
    labels : array-like of shape (n_conditions,), optional
        Condition labels (default 0..K-1).

    Returns
    -------
    xr.DataArray of shape (K, K) with dims ("condition", "condition2"), or
    (n_rdm, K, K) with dims ("rdm", "condition", "condition2"); zero diagonal.
    """
    if isinstance(vector, xr.DataArray) and labels is None:
        stack = as_rdm_stack(vector, "vector")
        return to_square_dataarray(stack.vectors, stack.labels, names=stack.names,
                                   single=stack.single, attrs=stack.attrs)
    v = np.array(vector, dtype=np.float64, copy=True)
    if v.ndim not in (1, 2):
        raise DataError(f"vector must be condensed: shape (n_pairs,) or (n_rdm, n_pairs); got "
                        f"shape {v.shape}")
    n_cond = n_cond_from_pairs(v.shape[-1], "vector")
    if labels is None:
        labels = np.arange(n_cond)
    labels = np.asarray(labels)
    if labels.shape != (n_cond,):
        raise DataError(f"labels must have one entry per condition ({n_cond}); got shape "
                        f"{labels.shape}")
    if len(np.unique(labels)) != n_cond:
        raise DataError("labels must be unique")
    return to_square_dataarray(np.atleast_2d(v), labels, single=v.ndim == 1)


# --------------------------------------------------------------------------------------
# noise precision


def prec_from_residuals(residuals, *, shrinkage="diag", dof=None):
    """Noise precision matrix (inverse covariance) from residuals, with shrinkage.

    Parameters
    ----------
    residuals : ndarray of shape (n_residuals, n_channels), (n_runs, n_residuals, n_channels)
        or list of 2-D arrays
        E.g. GLM residuals (time points x voxels); a 3-D array or a list gives one precision
        per run (usable as per-fold ``noise`` for crossnobis).
    shrinkage : {"diag", "eye"} or float
        ``"diag"``: Schaefer & Strimmer (2005) optimal shrinkage towards the diagonal
        covariance (rsatoolbox's ``shrinkage_diag``, the default); ``"eye"``: Ledoit & Wolf
        (2004) optimal shrinkage towards a multiple of the identity (``shrinkage_eye``);
        a float lambda in [0, 1]: (1 - lambda) S + lambda diag(S) (0 = no shrinkage).
    dof : int, optional
        Degrees of freedom of the covariance estimate (default n_residuals - 1; subtract the
        number of GLM regressors where applicable).

    Returns
    -------
    ndarray of shape (n_channels, n_channels), or (n_runs, P, P) / list for several runs.
    """
    shrinkage = _calc.check_shrinkage(shrinkage)
    if isinstance(residuals, (list, tuple)):
        return [prec_from_residuals(r, shrinkage=shrinkage, dof=dof) for r in residuals]
    res = np.asarray(residuals, dtype=np.float64)
    if res.ndim == 3:
        return np.stack([prec_from_residuals(r, shrinkage=shrinkage, dof=dof) for r in res])
    if res.ndim != 2:
        raise DataError(f"residuals must have shape (n_residuals, n_channels); got "
                        f"{res.shape}")
    n, p = res.shape
    if n < 2:
        raise DataError(f"residuals: need at least 2 residuals to estimate a covariance; got "
                        f"{n}")
    if not np.isfinite(res).all():
        raise DataError(f"residuals must be finite; found {int((~np.isfinite(res)).sum())} "
                        f"NaN/Inf values")
    if dof is not None:
        dof = check_positive_int("dof", dof)
    flat = np.ptp(res, axis=0) == 0
    if flat.any():
        raise DataError(f"residuals: channels {np.flatnonzero(flat).tolist()[:5]} have zero "
                        f"variance; the noise precision is undefined - drop them")
    cov = _calc.covariance_from_residuals(res, shrinkage=shrinkage, dof=dof)
    try:
        return np.linalg.inv(cov)
    except np.linalg.LinAlgError:
        raise DataError(
            f"residuals: the covariance estimate is singular ({n} residuals for {p} "
            f"channels); use shrinkage='diag' or 'eye' or a larger shrinkage value"
        ) from None


# --------------------------------------------------------------------------------------
# comparisons and noise ceilings


def compare_rdms(a, b, *, method="cosine"):
    """Similarity of RDMs.

    Methods (on the condensed upper triangles v1, v2 with n entries):
    ``"cosine"``; ``"corr"`` (Pearson); ``"spearman"`` (Pearson of average-tie ranks);
    ``"rho-a"`` = 12 (r1 - mean)(r2 - mean) / (n^3 - n); ``"tau-a"`` = (concordant -
    discordant) / (n (n - 1) / 2); ``"kendall"`` (tau-b, as scipy.stats.kendalltau);
    ``"cosine_cov"`` / ``"corr_cov"``: cosine (of the centred vectors for corr_cov) after
    whitening with the RDM covariance under i.i.d. noise (Diedrichsen et al. 2021).

    Parameters
    ----------
    a, b : xr.DataArray or ndarray
        One RDM each, or stacks. Condition labels must match (a DataArray ``b`` with the same
        labels in another order is reordered to ``a``'s order).
    method : str

    Returns
    -------
    float when a and b are single RDMs, otherwise ndarray of shape (n_a, n_b).
    Missing (NaN) entries are handled pairwise: each pair is compared on the entries both
    RDMs have. Comparisons with a constant RDM (undefined correlation) are NaN.

    Raises
    ------
    DataError
        RDMs with fewer than 3 conditions (one dissimilarity cannot be compared: a
        correlation is undefined and a cosine only compares two signs), for every method.
    """
    check_option("method", method, COMPARE_METHODS)
    sa = as_rdm_stack(a, "a")
    sb = align_conditions(sa, as_rdm_stack(b, "b"), "a", "b")
    check_comparable(sa.n_cond, method, "a, b")
    out = compare_vectors(np.asarray(sa.vectors), np.asarray(sb.vectors), method)
    if sa.single and sb.single:
        return float(out[0, 0])
    return out


def noise_ceiling(rdms, *, method, groups=None):
    """Lower and upper bound of the noise ceiling of a set of subject RDMs.

    upper = mean_s compare(pool(all RDMs), rdm_s); lower = mean_s compare(pool(all RDMs but
    s), rdm_s). The pooled RDM is the best-scoring average for the method: cosine /
    cosine_cov divide each RDM by its root mean square, corr / corr_cov z-score it, the
    rank methods rank it, then the RDMs are averaged (rsatoolbox's ``boot_noise_ceiling``).

    Parameters
    ----------
    rdms : xr.DataArray or ndarray of shape (n_subjects, K, K) or (n_subjects, n_pairs)
    method : str
        A :func:`compare_rdms` method.
    groups : array-like of shape (n_subjects,), optional
        RDMs with the same group (e.g. sessions of one subject) are left out together.

    Returns
    -------
    (lower, upper) : tuple of float

    Raises
    ------
    DataError
        Fewer than 2 RDMs, or RDMs with fewer than 3 conditions (as :func:`compare_rdms`).
    """
    check_option("method", method, COMPARE_METHODS)
    stack = as_rdm_stack(rdms, "rdms")
    if stack.single or stack.n_rdm < 2:
        raise DataError(f"rdms: a noise ceiling needs a stack of at least 2 RDMs; got "
                        f"{stack.n_rdm}")
    check_comparable(stack.n_cond, method, "rdms", "a noise ceiling")
    if groups is not None and len(groups) != stack.n_rdm:
        raise DataError(f"groups must have one entry per RDM ({stack.n_rdm}); got "
                        f"{len(groups)}")
    return noise_ceiling_vectors(np.asarray(stack.vectors), method, groups)
