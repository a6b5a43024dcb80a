"""RDM estimation kernels (numpy and torch backends) and noise precision estimation.

All distances follow METHODS.md section 6 (rsatoolbox's formulas): they are computed from
condition-mean patterns a_i in R^P and divided by the number of channels P.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

from .._checks import check_option
from ..errors import DataError, NeurofmError

METHODS = ("euclidean", "correlation", "mahalanobis", "crossnobis", "poisson", "poisson_cv")
CV_METHODS = ("crossnobis", "poisson_cv")
#: Methods whose distances do not change when one vector is subtracted from every pattern;
#: for these the channel means are removed first, which protects against cancellation.
TRANSLATION_INVARIANT = ("euclidean", "mahalanobis", "crossnobis")


# --------------------------------------------------------------------------------------
# backends


def group_sums(x, index, n_groups, dtype=None):
    """Sum the rows of x (N, P) by group index (N,) -> (n_groups, P).

    One sparse indicator product (fast for many rows); ``dtype`` is the indicator's dtype
    (default x's), so float64 sums of float32 data need no float64 copy of the data.
    """
    n = x.shape[0]
    ind = sp.csr_matrix((np.ones(n, dtype=dtype or x.dtype), (index, np.arange(n))),
                        shape=(n_groups, n))
    return np.asarray(ind @ x)


class _NumpyBackend:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)

    def array(self, x):
        return np.ascontiguousarray(x, dtype=self.dtype)

    def numpy(self, x):
        return x

    def log(self, x):
        return np.log(x)

    def sqrt(self, x):
        return np.sqrt(x)

    def group_sums(self, x, index, n_groups):
        return group_sums(x, index, n_groups)

    def inv(self, x):
        return np.linalg.inv(x)


class _TorchBackend:
    def __init__(self, dtype, device):
        import torch

        self._t = torch
        self.device = torch.device(device)
        self.dtype = {"float64": torch.float64, "float32": torch.float32}[np.dtype(dtype).name]

    def array(self, x):
        return self._t.as_tensor(np.ascontiguousarray(x), dtype=self.dtype, device=self.device)

    def numpy(self, x):
        return x.detach().cpu().numpy()

    def log(self, x):
        return self._t.log(x)

    def sqrt(self, x):
        return self._t.sqrt(x)

    def group_sums(self, x, index, n_groups):
        out = self._t.zeros((n_groups, x.shape[1]), dtype=x.dtype, device=x.device)
        idx = self._t.as_tensor(index, dtype=self._t.long, device=x.device)
        return out.index_add_(0, idx, x)

    def inv(self, x):
        return self._t.linalg.inv(x)


#: The device rule shared by every RSA function that takes ``device=``.
DEVICE_RULE = (
    "None (default) computes on the CPU (numpy where a numpy path exists, else torch on the "
    "CPU); 'auto' uses the first CUDA GPU when torch sees one, else the CPU as for None; "
    "any torch device ('cpu', 'cuda', 'cuda:1', 'mps', a torch.device) uses torch on that "
    "device, and a device that torch cannot use raises NeurofmError"
)


def resolve_device(device, param="device"):
    """Apply :data:`DEVICE_RULE`: -> None (the CPU default path) or a usable torch.device.

    Parameters
    ----------
    device : None, "auto", str or torch.device
    param : str
        Name of the argument in error messages.

    Raises
    ------
    NeurofmError
        An unknown device string, or a device that this torch build or machine cannot use
        (e.g. ``"cuda"`` with a CPU-only torch or without a visible GPU).
    """
    if device is None:
        return None
    import torch

    if isinstance(device, str) and device == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else None
    if not isinstance(device, (str, torch.device)):
        raise NeurofmError(f"{param} must be None, 'auto', a device string such as 'cpu' or "
                           f"'cuda', or a torch.device; got {type(device).__name__} "
                           f"({device!r})")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise NeurofmError(f"{param} must be None, 'auto' or a torch device such as 'cpu' or "
                           f"'cuda'; got {device!r} ({err})") from None
    if dev.type == "meta":
        raise NeurofmError(f"{param}={device!r}: the meta device holds no data; use None, "
                           "'auto', 'cpu' or a GPU")
    try:  # torch raises AssertionError / RuntimeError deep inside for unusable devices
        torch.empty(1, device=dev)
    except Exception as err:  # noqa: BLE001 - any failure means the device is not usable
        why = str(err).splitlines()[0] if str(err) else type(err).__name__
        cuda = f"; torch {torch.__version__} sees {torch.cuda.device_count()} CUDA device(s)" \
            if dev.type == "cuda" else ""
        raise NeurofmError(f"{param}={device!r} is not usable here ({why}{cuda}); use "
                           f"{param}=None for the CPU or {param}='auto' to take a GPU only "
                           "when there is one") from None
    return dev


def make_backend(dtype, device):
    """numpy backend for the CPU default (``device`` None, or "auto" without a GPU), torch
    otherwise (imported lazily); see :func:`resolve_device`. ``dtype`` is checked by the
    caller ("float64" or "float32")."""
    dev = resolve_device(device)
    if dev is None:
        return _NumpyBackend(dtype)
    return _TorchBackend(dtype, dev)


# --------------------------------------------------------------------------------------
# distances from (fold) mean patterns


def _pairwise_from_kernel(kernel, p):
    """d_ij = (k_ii + k_jj - k_ij - k_ji) / P for any square kernel (numpy or torch)."""
    d = kernel.diagonal()
    return (d[:, None] + d[None, :] - kernel - kernel.T) / p


def _remove_row_mean(m):
    return m - m.mean(axis=1, keepdims=True)


def rdm_from_means(method, means, be, *, noise=None, prior=(1.0, 0.1)):
    """Square RDM (K, K) for the non cross-validated methods from condition means (K, P)."""
    p = means.shape[1]
    if method == "euclidean":
        return _pairwise_from_kernel(means @ means.T, p)
    if method == "mahalanobis":
        if noise is None:  # identity precision: the squared Euclidean distance (rsatoolbox)
            return _pairwise_from_kernel(means @ means.T, p)
        return _pairwise_from_kernel((means @ noise) @ means.T, p)
    if method == "correlation":
        centred = _remove_row_mean(means)
        norms = be.sqrt((centred * centred).sum(axis=1, keepdims=True))
        unit = centred / norms
        return 1.0 - unit @ unit.T
    if method == "poisson":
        lam, w = prior
        x = (means + lam * w) / (1.0 + w)
        return _pairwise_from_kernel(x @ be.log(x).T, p)
    raise AssertionError(method)


def rdm_crossvalidated(method, fold_sums, fold_counts, be, *, noise=None, remove_mean=False,
                       prior=(1.0, 0.1), two_balanced=False):
    """Cross-validated RDM (K, K) from per-fold condition sums (F, K, P) and counts (F, K).

    For fold f, a = mean of the condition's observations in all other folds and b = mean
    of its observations in fold f; the result is the mean over folds of the fold RDMs.
    With a list of per-fold precisions (crossnobis only), pairs of folds (k < l) are
    compared with the precision inv((S_k + S_l) / 2) instead (rsatoolbox's convention).
    ``two_balanced`` (two folds, equal counts per condition in both) enables a shortcut with
    one matrix product instead of two.
    """
    n_folds = fold_sums.shape[0]
    p = fold_sums.shape[2]
    if method == "crossnobis" and isinstance(noise, list):
        means = [_fold_mean(fold_sums[f], fold_counts[f]) for f in range(n_folds)]
        if remove_mean:
            means = [_remove_row_mean(m) for m in means]
        covs = [be.inv(n) for n in noise]
        total = None
        n_pairs = 0
        for k in range(n_folds):
            for q in range(k + 1, n_folds):
                prec = be.inv((covs[k] + covs[q]) / 2)
                rdm = _pairwise_from_kernel((means[k] @ prec) @ means[q].T, p)
                total = rdm if total is None else total + rdm
                n_pairs += 1
        return total / n_pairs
    if method == "crossnobis" and two_balanced:
        # with two folds and equal counts, fold 0's training means are fold 1's test means
        # and vice versa: the two fold kernels are K and K.T, so one product suffices
        b0 = _fold_mean(fold_sums[0], fold_counts[0])
        b1 = _fold_mean(fold_sums[1], fold_counts[1])
        if remove_mean:
            b0, b1 = _remove_row_mean(b0), _remove_row_mean(b1)
        kernel = (b1 @ noise) @ b0.T if noise is not None else b1 @ b0.T
        return _pairwise_from_kernel(kernel, p)
    total_sum = fold_sums.sum(axis=0)
    total_count = fold_counts.sum(axis=0)
    result = None
    for f in range(n_folds):
        train = (total_sum - fold_sums[f]) / (total_count - fold_counts[f])[:, None]
        test = fold_sums[f] / fold_counts[f][:, None]
        if method == "crossnobis":
            if remove_mean:
                train, test = _remove_row_mean(train), _remove_row_mean(test)
            kernel = (train @ noise) @ test.T if noise is not None else train @ test.T
        else:  # poisson_cv
            lam, w = prior
            train = (train + lam * w) / (1.0 + w)
            test = (test + lam * w) / (1.0 + w)
            kernel = train @ be.log(test).T
        rdm = _pairwise_from_kernel(kernel, p)
        result = rdm if result is None else result + rdm
    return result / n_folds


def _fold_mean(sums, counts):
    return sums / counts[:, None]


# --------------------------------------------------------------------------------------
# input parsing helpers used by compute_rdm


def encode_labels(labels, name):
    """Sorted unique labels and the integer code of each entry; raise on unsortable labels."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"{name} must be one label per observation (1-D); got shape "
                        f"{labels.shape}")
    if labels.dtype.kind == "f" and np.isnan(labels).any():
        raise DataError(f"{name} must not contain NaN labels; found "
                        f"{int(np.isnan(labels).sum())}")
    try:
        uniq, codes = np.unique(labels, return_inverse=True)
    except TypeError as err:
        raise DataError(f"{name} must be sortable labels of one type (e.g. all str or all int); "
                        f"got {labels.dtype} ({err})") from None
    return uniq, codes.ravel()


def default_folds(codes, n_cond):
    """k-th repetition of each condition (in observation order) forms fold k."""
    counts = np.bincount(codes, minlength=n_cond)
    if not np.all(counts == counts[0]):
        raise DataError(
            "folds: the default folds (k-th repetition of each condition) need the same number "
            f"of repetitions for every condition; got between {counts.min()} and "
            f"{counts.max()} - pass folds= explicitly"
        )
    # position of each observation among its condition's observations, in input order
    order = np.argsort(codes, kind="stable")
    starts = np.cumsum(counts) - counts
    folds = np.empty(len(codes), dtype=np.int64)
    folds[order] = np.arange(len(codes)) - np.repeat(starts, counts)
    return folds


def fold_condition_counts(codes, folds, cond_values, method):
    """Fold code of each observation and the observation counts (n_folds, n_cond).

    ``folds`` None means the default folds (:func:`default_folds`). Raises unless there
    are at least 2 folds and every condition occurs in every fold.
    """
    n_cond = len(cond_values)
    if folds is None:
        fold_codes = default_folds(codes, n_cond)
    else:
        _, fold_codes = encode_labels(folds, "folds")
    n_folds = int(fold_codes.max()) + 1
    if n_folds < 2:
        raise DataError(f"folds: {method} needs at least 2 folds; got {n_folds}")
    counts = np.bincount(fold_codes * n_cond + codes, minlength=n_folds * n_cond)
    counts = counts.reshape(n_folds, n_cond)
    if (counts == 0).any():
        f, c = np.argwhere(counts == 0)[0]
        raise DataError(
            f"folds: every condition must occur in every fold for {method}; condition "
            f"{cond_values[c].item()!r} is missing from fold {f} ({int((counts == 0).sum())} "
            f"missing condition-fold combinations)"
        )
    return fold_codes, counts


def check_noise(noise, n_channels, method, n_folds):
    """Validate a precision matrix (P, P) or a per-fold list; return float64 arrays."""
    if noise is None:
        return None
    if method not in ("mahalanobis", "crossnobis"):
        raise NeurofmError(
            f"noise is only used by method='mahalanobis' or 'crossnobis'; got noise with "
            f"method={method!r}"
        )
    if isinstance(noise, (list, tuple)) or (isinstance(noise, np.ndarray) and noise.ndim == 3):
        if method != "crossnobis":
            raise NeurofmError(
                "noise: a list of precision matrices (one per fold) is only used by "
                f"method='crossnobis'; got a list with method={method!r}"
            )
        mats = [_check_precision(m, n_channels, f"noise[{i}]") for i, m in enumerate(noise)]
        if len(mats) != n_folds:
            raise DataError(
                f"noise: one precision matrix per fold is needed; got {len(mats)} matrices "
                f"for {n_folds} folds"
            )
        return mats
    return _check_precision(noise, n_channels, "noise")


def _check_precision(m, n_channels, name):
    try:
        m = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a numeric (n_channels, n_channels) precision "
                        f"matrix; got {type(m).__name__}") from None
    if m.shape != (n_channels, n_channels):
        raise DataError(f"{name} must be a precision matrix of shape ({n_channels}, "
                        f"{n_channels}) (n_channels x n_channels); got shape {m.shape}")
    if not np.isfinite(m).all():
        raise DataError(f"{name}: precision matrix must be finite; found "
                        f"{int((~np.isfinite(m)).sum())} non-finite entries")
    scale = np.abs(m).max() or 1.0
    if np.abs(m - m.T).max() > 1e-8 * scale:
        raise DataError(f"{name}: precision matrix must be symmetric; largest |L - L.T| = "
                        f"{np.abs(m - m.T).max():.3g}")
    return m


# --------------------------------------------------------------------------------------
# noise precision from residuals


def covariance_from_residuals(res, *, shrinkage="diag", dof=None):
    """Shrinkage covariance (P, P) of residuals (n, P); rsatoolbox's estimators.

    shrinkage='diag': Schaefer & Strimmer (2005) optimal shrinkage of the correlations towards
    zero (target = the diagonal covariance); 'eye': Ledoit & Wolf (2004) shrinkage towards a
    multiple of the identity; a float lambda in [0, 1]: (1 - lambda) S + lambda diag(S).
    ``shrinkage`` is checked by the caller (:func:`check_shrinkage`).
    """
    n = res.shape[0]
    x = res - res.mean(axis=0, keepdims=True)
    dof = n - 1 if dof is None else dof
    s_sum = x.T @ x
    if shrinkage == "eye":
        x2 = x * x
        s2_sum = x2.T @ x2
        s = s_sum / n
        b2 = np.sum(s2_sum / n - s * s) / n
        m = np.trace(s) / s.shape[0]
        d2 = np.sum((s - m * np.eye(s.shape[0])) ** 2)
        b2 = min(d2, b2)
        cov = b2 / d2 * m * np.eye(s.shape[0]) + (d2 - b2) / d2 * s
        return cov * n / dof
    s = s_sum / dof
    off = ~np.eye(s.shape[0], dtype=bool)
    if shrinkage == "diag":
        x2 = x * x
        s2_sum = x2.T @ x2
        var = np.diag(s)
        std = np.sqrt(var)
        s_mean = s_sum / std[None, :] / std[:, None] / (n - 1)
        s2_mean = s2_sum / var[None, :] / var[:, None] / (n - 1)
        var_hat = n / dof ** 2 * (s2_mean - s_mean ** 2)
        lam = np.sum(var_hat[off]) / np.sum(s_mean[off] ** 2)
        lam = max(min(lam, 1.0), 0.0)
    else:
        lam = float(shrinkage)
    return s * (np.eye(s.shape[0]) + (1.0 - lam) * off)


def check_shrinkage(shrinkage):
    if isinstance(shrinkage, str):
        return check_option("shrinkage", shrinkage, ("diag", "eye"))
    if isinstance(shrinkage, bool) or not isinstance(shrinkage, numbers.Real) \
            or not 0.0 <= float(shrinkage) <= 1.0:
        raise NeurofmError(
            f"shrinkage must be 'diag', 'eye' or a number in [0, 1]; got {shrinkage!r}"
        )
    return float(shrinkage)
