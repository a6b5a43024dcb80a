"""Ridge solvers behind :mod:`neurofm.analysis.encoding` (numpy and torch backends).

Algorithms (METHODS.md section 8, himalaya's ``solve_group_ridge_random_search``): one
decomposition per CV fold (SVD of the training features in the primal form, eigh of the
training kernel in the dual form), then every alpha and every target as batched products.

Differences from himalaya that make it faster while giving the same numbers up to rounding:

* primal validation predictions use ``A = X_val V`` (n_val x k) once per fold, so each alpha
  costs one ``(n_val x k) @ (k x n_targets)`` product instead of himalaya's
  ``(n_val x n_train) @ (n_train x n_targets)`` (and no ``(n_features x n_train)`` resolution
  matrix per alpha);
* the training cross-products come from ``X^T Y`` of all samples minus the validation block
  (``V^T X_tr^T Y_tr = S U^T Y_tr``), so a fold costs ``p x n_val x t`` instead of
  ``k x n_train x t``; in banded ridge the per-band scaling folds into ``V``, so the
  cross-products are shared by every candidate band weighting;
* the refit is one ``V diag(1 / (s^2 + alpha_t)) V^T X^T Y`` for all targets at once (an
  elementwise per-target weighting), not one resolution matrix per selected alpha.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import DataError


# ----------------------------------------------------------------------------- backends
class NumpyOps:
    """Array operations on the CPU with numpy (LAPACK gesdd / syevd)."""

    name = "numpy"

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.device = None

    def asarray(self, a):
        if hasattr(a, "detach"):  # torch tensor given to the numpy backend
            a = a.detach().cpu().numpy()
        return np.ascontiguousarray(np.asarray(a, dtype=self.dtype))

    def to_numpy(self, a):
        return np.asarray(a)

    def index(self, idx):
        return np.asarray(idx, dtype=np.intp)

    def svd(self, x):
        u, s, vt = np.linalg.svd(x, full_matrices=False)
        return u, s, vt

    def eigh(self, k):
        return np.linalg.eigh(k)

    def sumsq(self, a):
        return np.einsum("ij,ij->j", a, a)

    def matmul(self, a, b, out=None):
        return np.matmul(a, b, out=out)

    def empty(self, shape):
        return np.empty(shape, dtype=self.dtype)

    def zeros(self, shape):
        return np.zeros(shape, dtype=self.dtype)

    def exp(self, a):
        return np.exp(a)


class TorchOps:
    """Array operations with torch on any device (float32 recommended on GPU)."""

    name = "torch"

    def __init__(self, dtype, device):
        import torch

        self._t = torch
        self.device = torch.device("cpu" if device is None else device)
        self.dtype = {"float64": torch.float64, "float32": torch.float32}[np.dtype(dtype).name]

    def asarray(self, a):
        t = self._t
        if isinstance(a, t.Tensor):
            return a.to(device=self.device, dtype=self.dtype).contiguous()
        a = np.ascontiguousarray(a)
        if not a.flags.writeable:  # torch cannot wrap read-only memory (e.g. memmaps)
            a = a.copy()
        return t.as_tensor(a, dtype=self.dtype, device=self.device)

    def to_numpy(self, a):
        return a.detach().cpu().numpy()

    def index(self, idx):
        return self._t.as_tensor(np.asarray(idx), dtype=self._t.long, device=self.device)

    def svd(self, x):
        return self._t.linalg.svd(x, full_matrices=False)

    def eigh(self, k):
        return self._t.linalg.eigh(k)

    def sumsq(self, a):
        return self._t.einsum("ij,ij->j", a, a)

    def matmul(self, a, b, out=None):
        if out is None:
            return a @ b
        return self._t.matmul(a, b, out=out)

    def empty(self, shape):
        return self._t.empty(shape, dtype=self.dtype, device=self.device)

    def zeros(self, shape):
        return self._t.zeros(shape, dtype=self.dtype, device=self.device)

    def exp(self, a):
        return self._t.exp(a)


def make_ops(backend, device, dtype):
    """Return the array backend; ``dtype=None`` keeps float64 (float32 on a GPU)."""
    if backend == "numpy":
        return NumpyOps(np.float64 if dtype is None else dtype)
    from ._rdm_calc import resolve_device

    dev = resolve_device(device)
    if dtype is None:
        dtype = np.float32 if (dev is not None and dev.type != "cpu") else np.float64
    return TorchOps(dtype, dev)


# ----------------------------------------------------------------------------- kernels
def kernel_matrix(ops, kernel, x, y, params):
    """Kernel between rows of x (n, p) and y (m, p) -> (n, m), himalaya's defaults."""
    if kernel == "linear":
        return x @ y.T
    gamma = params.get("gamma")
    if gamma is None:
        gamma = 1.0 / x.shape[1]
    if kernel == "poly":
        return (gamma * (x @ y.T) + params.get("coef0", 1.0)) ** params.get("degree", 3)
    # rbf: exp(-gamma ||x - y||^2)
    xx = ops.sumsq(x.T)[:, None]
    yy = ops.sumsq(y.T)[None, :]
    d2 = xx + yy - 2 * (x @ y.T)
    d2 = d2 * (d2 > 0)
    return ops.exp(-gamma * d2)


def center_kernel(k, col_means, all_mean):
    """Center a kernel (n_test, n_train) with the training statistics (KernelCenterer)."""
    return k - col_means[None, :] - k.mean(1)[:, None] + all_mean


# ----------------------------------------------------------------------------- CV core
def cv_splits(cv, n_samples):
    """Materialise ``cv`` (int, splitter or iterable of (train, val)) as index arrays."""
    from sklearn.model_selection import check_cv

    if hasattr(cv, "split") or isinstance(cv, (int, np.integer)):
        splitter = check_cv(int(cv) if isinstance(cv, (int, np.integer)) else cv)
        splits = list(splitter.split(np.zeros((n_samples, 1))))
    else:
        splits = [(np.asarray(tr), np.asarray(va)) for tr, va in cv]
    for i, (tr, va) in enumerate(splits):
        if len(tr) == 0 or len(va) == 0:
            raise DataError(f"cv: fold {i} has an empty train or validation set "
                            f"({len(tr)} train, {len(va)} validation samples)")
    return splits


class _Fold:
    __slots__ = ("a", "basis", "kind", "s2", "tr", "val", "xm")


def _primal_fold(ops, x, tr, val, fit_intercept, scale):
    """SVD of the (scaled, centred) training features; ``basis`` = scale * V (p x k)."""
    f = _Fold()
    f.kind, f.tr, f.val = "primal", tr, val
    xtr, xval = x[tr], x[val]
    if scale is not None:
        xtr, xval = xtr * scale[None, :], xval * scale[None, :]
    f.xm = None
    if fit_intercept:
        f.xm = xtr.mean(0)
        xtr, xval = xtr - f.xm, xval - f.xm
    _, s, vt = ops.svd(xtr)
    v = vt.T
    f.a = xval @ v
    f.s2 = s * s
    f.basis = v if scale is None else v * scale[:, None]
    return f


def _dual_fold(ops, k, tr, val, fit_intercept):
    """eigh of the (centred) training kernel; ``basis`` = eigenvectors (n_train x n_train)."""
    f = _Fold()
    f.kind, f.tr, f.val = "dual", tr, val
    ktr = k[tr][:, tr]
    kval = k[val][:, tr]
    f.xm = None
    if fit_intercept:
        cm = ktr.mean(0)
        am = cm.mean()
        ktr = center_kernel(ktr, cm, am)
        kval = center_kernel(kval, cm, am)
        f.xm = True
    lam, q = ops.eigh((ktr + ktr.T) / 2)
    f.s2 = lam * (lam > 0)  # float error can make tiny negative eigenvalues
    f.basis = q
    f.a = kval @ q
    return f


class _TargetCache:
    """Per-fold target quantities for one batch of targets (shared by band weightings)."""

    def __init__(self, ops, folds, x, yb, fit_intercept, primal):
        self.c, self.yval = [], []
        xty = x.T @ yb if primal else None
        for f in folds:
            yval = yb[f.val]
            ym = yb[f.tr].mean(0) if fit_intercept else None
            if primal:
                c = xty - x[f.val].T @ yval
                if fit_intercept:
                    n_tr = len(f.tr)
                    c = c - n_tr * (x[f.tr].mean(0)[:, None] * ym[None, :])
            else:
                c = yb[f.tr]
                if fit_intercept:
                    c = c - ym
            if fit_intercept:
                yval = yval - ym
            self.c.append(c)
            self.yval.append(yval)
        self.xty = xty


def cv_scores_batch(ops, folds, cache, alphas):
    """Mean over folds of -||Y_val - P_alpha||^2 / n_val -> (n_alphas, n_targets_batch)."""
    n_t = cache.yval[0].shape[1]
    total = ops.zeros((len(alphas), n_t))
    for f, c, yval in zip(folds, cache.c, cache.yval, strict=True):
        z = f.basis.T @ c  # (k, t): V^T C (primal, = S U^T Y_tr) or Q^T Y_tr (dual)
        p = ops.empty(yval.shape)
        n_val = yval.shape[0]
        for j, alpha in enumerate(alphas):
            aw = f.a * (1.0 / (f.s2 + alpha))[None, :]
            ops.matmul(aw, z, out=p)
            p -= yval
            total[j] -= ops.sumsq(p) / n_val
    return total / len(folds)


def select_alphas(mean_scores, alphas, local_alpha):
    """Best alpha index per target with the 1e-10 log(alpha) tie-break (numpy in, numpy out).

    Returns (index (n_targets,), best score with the tie-break term (n_targets,)).
    """
    s = mean_scores + (np.log(alphas) * 1e-10)[:, None]
    if local_alpha:
        idx = np.argmax(s, axis=0)
    else:
        idx = np.full(s.shape[1], np.argmax(s.mean(1)))
    return idx, s[idx, np.arange(s.shape[1])]


def dirichlet_gammas(n_iter, n_bands, concentration, random_state):
    """Candidate band weights: interleaved Dirichlet draws, first candidate uniform.

    Same draws as himalaya's ``generate_dirichlet_samples`` for the same ``random_state``.
    """
    if isinstance(random_state, np.random.RandomState):
        rng = random_state
    else:
        rng = np.random.RandomState(random_state)
    conc = np.atleast_1d(np.asarray(concentration, dtype=float))
    per = math.ceil(n_iter / len(conc))
    draws = []
    for c in conc:
        if np.isinf(c):
            draws.append(np.full((per, n_bands), 1.0 / n_bands))
        else:
            draws.append(rng.dirichlet([c] * n_bands, per))
    g = np.swapaxes(np.stack(draws), 0, 1).reshape(len(conc) * per, n_bands)[:n_iter]
    g[0] = 1.0 / n_bands
    return g


# ----------------------------------------------------------------------------- solvers
def solve(ops, x, y, alphas, splits, *, fit_intercept, local_alpha, n_targets_batch,
          form, gammas=None, band_of=None, kernel_fn=None, band_kernels=None,
          score_y=False):
    """Cross-validated (banded) ridge for all targets, batched.

    Parameters
    ----------
    ops : NumpyOps | TorchOps
    x : backend array (n_samples, n_features) or None for precomputed kernels
    y : numpy or backend array (n_samples, n_targets); batches move to the device
    alphas : ndarray (n_alphas,)
    splits : list of (train, val) index arrays
    form : "primal" | "dual"
    gammas : ndarray (n_candidates, n_bands) or None (plain ridge)
    band_of : ndarray (n_features,) band index of each feature (banded ridge)
    kernel_fn : callable () -> kernel (n, n) for the dual form of plain (kernel) ridge
    band_kernels : list of backend (n, n) kernels per band (dual banded)

    Returns
    -------
    dict with ``alpha_idx`` (n_targets,), ``gamma_idx`` (n_targets,), ``cv_scores``
    (n_alphas, n_targets) for the winning band weighting, ``best_scores`` (n_targets,),
    ``coef`` backend-free numpy (n_features, n_targets) [primal] or ``dual`` (n_samples,
    n_targets), ``intercept`` (n_targets,) or None, ``x_mean`` (n_features,) or None.
    """
    n_samples, n_targets = y.shape
    banded = gammas is not None
    if not banded:
        gammas = np.ones((1, 1))
    primal = form == "primal"
    idx_splits = [(ops.index(tr), ops.index(va)) for tr, va in splits]
    alphas = np.asarray(alphas, dtype=float)

    def scale_of(g):
        if not banded:
            return None
        return ops.asarray(np.sqrt(g)[band_of])

    def kernel_of(g):
        if not banded:
            return kernel_fn()
        k = band_kernels[0] * float(g[0])
        for kb, gb in zip(band_kernels[1:], g[1:], strict=True):
            k = k + kb * float(gb)
        return k

    def folds_for(g):
        if primal:
            sc = scale_of(g)
            return [_primal_fold(ops, x, tr, va, fit_intercept, sc) for tr, va in idx_splits]
        k = kernel_of(g)
        return [_dual_fold(ops, k, tr, va, fit_intercept) for tr, va in idx_splits]

    cached_folds = folds_for(gammas[0]) if len(gammas) == 1 else None
    eps = np.finfo(np.dtype(str(ops.dtype).replace("torch.", ""))).eps

    alpha_idx = np.zeros(n_targets, dtype=int)
    gamma_idx = np.zeros(n_targets, dtype=int)
    best = np.full(n_targets, -np.inf)
    cv_scores = np.zeros((len(alphas), n_targets))
    n_feat = None if x is None else x.shape[1]
    coef = np.zeros((n_feat, n_targets)) if (primal or x is not None) else None
    dual = None if primal else np.zeros((n_samples, n_targets))
    intercept = np.zeros(n_targets) if fit_intercept else None
    batch = n_targets if not n_targets_batch else int(n_targets_batch)

    for start in range(0, n_targets, batch):
        sl = slice(start, min(start + batch, n_targets))
        yb = ops.asarray(y[:, sl])
        cache = None
        for gi, g in enumerate(gammas):
            folds = cached_folds if cached_folds is not None else folds_for(g)
            if cache is None:
                cache = _TargetCache(ops, folds, x, yb, fit_intercept, primal)
            mean = ops.to_numpy(cv_scores_batch(ops, folds, cache, alphas)).astype(float)
            ai, sc = select_alphas(mean, alphas, local_alpha)
            better = sc > best[sl] + eps
            idx = np.flatnonzero(better) + start
            best[idx] = sc[better]
            alpha_idx[idx] = ai[better]
            gamma_idx[idx] = gi
            cv_scores[:, idx] = mean[:, better]
        # refit on all samples, grouped by winning band weighting
        for gi in np.unique(gamma_idx[sl]):
            cols = np.flatnonzero(gamma_idx[sl] == gi)
            ycols = yb[:, ops.index(cols)]
            lam = alphas[alpha_idx[sl][cols]]
            out = _refit(ops, x, ycols, lam, gammas[gi], primal, fit_intercept, scale_of,
                         kernel_of, cache.xty[:, ops.index(cols)] if primal else None)
            if out["coef"] is not None:
                coef[:, cols + start] = out["coef"]
            if dual is not None:
                dual[:, cols + start] = out["dual"]
            if fit_intercept:
                intercept[cols + start] = out["intercept"]
        del yb, cache
    x_mean = None
    if fit_intercept and x is not None:
        x_mean = ops.to_numpy(x.mean(0)).astype(float)
    return {"alpha_idx": alpha_idx, "gamma_idx": gamma_idx, "cv_scores": cv_scores,
            "best": best, "coef": coef, "dual": dual, "intercept": intercept, "x_mean": x_mean}


def _refit(ops, x, y, lam, g, primal, fit_intercept, scale_of, kernel_of, xty):
    """Weights on all samples for targets y (n, t) with per-target penalties lam (t,)."""
    lam_b = ops.asarray(lam)
    ym = y.mean(0) if fit_intercept else None
    out = {"coef": None, "dual": None, "intercept": None}
    if primal:
        sc = scale_of(g)
        xs = x if sc is None else x * sc[None, :]
        xm = None
        if fit_intercept:
            xm = xs.mean(0)
            xs = xs - xm
        _, s, vt = ops.svd(xs)
        v = vt.T
        basis = v if sc is None else v * sc[:, None]
        c = xty
        if fit_intercept:
            c = c - x.shape[0] * (x.mean(0)[:, None] * ym[None, :])
        z = basis.T @ c  # V^T Xs^T Y
        w = z / (s[:, None] ** 2 + lam_b[None, :])
        b = v @ w  # weights on the scaled features
        if sc is not None:
            b = b * sc[:, None]  # back to the original feature scale
        out["coef"] = ops.to_numpy(b)
        if fit_intercept:
            out["intercept"] = ops.to_numpy(ym - x.mean(0) @ b)
        return out
    k = kernel_of(g)
    yc = y
    if fit_intercept:
        cm = k.mean(0)
        k = center_kernel(k, cm, cm.mean())
        yc = y - ym
    lam_k, q = ops.eigh((k + k.T) / 2)
    lam_k = lam_k * (lam_k > 0)
    d = q @ ((q.T @ yc) / (lam_k[:, None] + lam_b[None, :]))
    out["dual"] = ops.to_numpy(d)
    if x is not None:  # linear kernels: primal weights on the original scale
        xc = x - x.mean(0) if fit_intercept else x
        b = xc.T @ d
        sc = scale_of(g)
        if sc is not None:
            b = b * (sc * sc)[:, None]  # gamma_band * X_band^T dual
        out["coef"] = ops.to_numpy(b)
        if fit_intercept:
            out["intercept"] = ops.to_numpy(ym - x.mean(0) @ b)
    elif fit_intercept:
        out["intercept"] = ops.to_numpy(ym)
    return out
