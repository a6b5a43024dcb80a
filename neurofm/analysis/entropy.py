"""Diffusion spectral entropy (DSE) and mutual information (DSMI) of representations.

Liao et al., "Assessing neural network representations during training using noise-resilient
diffusion spectral entropy" (CISS 2024); reference code ChenLiu-1996/DiffusionSpectralEntropy
(PyPI ``dse-dsmi``). ``reference=True`` reproduces that package's arithmetic step by step
(dense ``np.diag`` degree matrices, a symmetry check choosing ``eigvalsh`` or ``eigvals``);
the default path computes the same quantity faster: squared distances from one Gram product,
the kernel normalised in place by broadcasting, the eigenvalues of the symmetric operator by
``numpy.linalg.eigvalsh`` or, from 1500 points, LAPACK's two-stage tridiagonal reduction. Both
draw subsets with Python's :mod:`random` exactly as the reference does, so both paths return
the reference's value (to ~1e-10).

DSE is in bits. It depends strongly on ``sigma`` and on the scale of ``X`` (DSE(cX; c sigma)
equals DSE(X; sigma)); ``sigma="median"``, ``sigma="sqrt_dim"`` or ``standardize=True`` make
values comparable across representations of different scale.
"""

from __future__ import annotations

import numbers
import random

import numpy as np
import xarray as xr

from .._checks import check_option, check_positive_int
from .._logging import logger, use_log_level
from ..errors import DataError, NeurofmError

__all__ = [
    "diffusion_spectral_entropy",
    "diffusion_spectral_mutual_information",
    "dse_over_training",
    "plot_dse_over_training",
]

_EPS = np.finfo(float).eps


# ---------------------------------------------------------------------------- inputs
def _as_matrix(X, name="X"):
    """(n_samples, n_features) float64 array from an array or a 2-D DataArray."""
    if isinstance(X, xr.DataArray):
        if X.ndim != 2:
            raise DataError(f"{name} must be a 2-D DataArray (sample, feature); got dims {X.dims}")
        if "feature" in X.dims:  # (window | sample | recording, feature)
            X = X.transpose(..., "feature")
        elif "sample" in X.dims:
            X = X.transpose("sample", ...)
        X = X.values
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{name} must be a numeric array of shape (n_samples, n_features); "
                        f"got {type(X).__name__} ({err})") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"{name} must have shape (n_samples, n_features); got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise DataError(f"{name} needs at least 2 samples; got {arr.shape[0]}")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise DataError(f"{name} contains NaN or Inf in {rows.size} sample(s) (first rows: "
                        f"{rows[:5].tolist()}); drop or impute them first")
    return arr


def _check_t(t):
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not t > 0:
        raise NeurofmError(f"t must be a number > 0 (diffusion time); got {t!r}")
    return t


def _pairwise_sq(X):
    """Squared Euclidean distances (n, n) from one Gram product (clipped at 0)."""
    sq = np.einsum("ij,ij->i", X, X)
    D2 = X @ X.T  # (n, n)
    D2 *= -2.0
    D2 += sq[:, None]
    D2 += sq[None, :]
    np.maximum(D2, 0.0, out=D2)
    np.fill_diagonal(D2, 0.0)
    return D2


def _resolve_sigma(sigma, X):
    """A number > 0, ``"median"`` (median pairwise distance) or ``"sqrt_dim"`` (sqrt(D))."""
    if isinstance(sigma, str):
        check_option("sigma", sigma, ("median", "sqrt_dim"))
        if sigma == "sqrt_dim":
            return float(np.sqrt(X.shape[1]))
        D2 = _pairwise_sq(X)
        med = float(np.sqrt(np.median(D2[np.triu_indices(X.shape[0], 1)])))
        if not med > 0:
            raise DataError("sigma='median': the median pairwise distance of X is 0 "
                            "(most samples are identical); pass a number")
        return med
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) \
            or not np.isfinite(sigma) or not sigma > 0:
        raise NeurofmError(f"sigma must be a number > 0, 'median' or 'sqrt_dim'; got {sigma!r}")
    return float(sigma)


def _prepare(X, sigma, standardize, name="X"):
    X = _as_matrix(X, name)
    if standardize:
        sd = X.std(axis=0)
        sd[sd == 0] = 1.0
        X = (X - X.mean(axis=0)) / sd
    return X, _resolve_sigma(sigma, X)


def _subsample(n, k, seed):
    """Python-``random`` subset exactly as dse-dsmi draws it."""
    if seed is not None:
        random.seed(seed)
    return np.array(random.sample(range(n), k=k))


def _entropy_bits(eigvals, t):
    lam = np.abs(eigvals) ** t
    p = lam / lam.sum()
    p = p + _EPS  # as the reference: eps on every entry, no renormalisation
    return float(-np.sum(p * np.log2(p)))


# ------------------------------------------------------------------------ operators
def _eigvals_reference(X, sigma):
    """dse-dsmi's ``compute_diffusion_matrix`` + ``exact_eigvals``, step by step."""
    from sklearn.metrics import pairwise_distances

    D = pairwise_distances(X)
    G = (1 / (sigma * np.sqrt(2 * np.pi))) * np.exp((-D**2) / (2 * sigma**2))
    Deg = np.diag(1 / np.sum(G, axis=1) ** 0.5)
    K = Deg @ G @ Deg
    if np.allclose(K, K.T, rtol=1e-5, atol=1e-8):
        return np.linalg.eigvalsh(K)
    return np.linalg.eigvals(K)


def _kernel_operator(X, sigma):
    """K = d^-1/2 G d^-1/2 (n, n), built in one buffer (one Gram product, in-place exp).

    G_ij = exp(-||x_i - x_j||^2 / (2 sigma^2)) without the reference's 1/(sigma sqrt(2 pi))
    prefactor, which cancels in the normalisation. The squared distances come from
    ``|x_i|^2 + |x_j|^2 - 2 x_i.x_j``, clipped at 0 with an exact 0 on the diagonal, as the
    reference's ``pairwise_distances``.
    """
    c = 1.0 / (2.0 * sigma**2)
    h = np.einsum("ij,ij->i", X, X) * c  # (n,) |x_i|^2 / (2 sigma^2)
    K = X @ X.T  # (n, n)
    K *= 2.0 * c
    K -= h[:, None]
    K -= h[None, :]  # -||x_i - x_j||^2 / (2 sigma^2)
    np.minimum(K, 0.0, out=K)
    np.fill_diagonal(K, 0.0)
    np.exp(K, out=K)  # G
    s = 1.0 / np.sqrt(K.sum(axis=1))  # d^-1/2, (n,)
    K *= s[:, None]
    K *= s[None, :]
    return K


# From this many points the two-stage reduction beats numpy's one-stage ``syevd`` (idle 2
# cores, OpenBLAS 0.3.3x, syevd vs two-stage with kd = 32: 0.052 vs 0.067 s at N = 1000,
# 0.415 vs 0.316 s at 2000, 2.81 vs 1.90 s at 4000; see docs/entropy.md).
_TWO_STAGE_MIN_N = 1500


def _two_stage_kd(n):
    """Band width: the bulge chasing costs O(n^2 kd) sequential flops, so small (kd 16-48
    were within 10% at N = 2000 and 4000; 96 and above were 2-3x slower)."""
    return 32


class _TwoStageLapack:
    """LAPACK's two-stage tridiagonal reduction (``dsytrd_sy2sb`` then ``dsytrd_sb2st``) and
    ``dsterf``, called through ctypes in the OpenBLAS numpy ships with.

    Eigenvalues only: dense -> band of width ``kd`` with BLAS-3 blocks, band -> tridiagonal by
    bulge chasing, then the tridiagonal QL/QR of ``dsterf``. The one-stage ``dsytrd`` that
    ``numpy.linalg.eigvalsh`` uses spends half its flops in memory-bound matrix-vector products;
    this is the reduction LAPACK's ``dsyevd_2stage`` uses, but with the band width chosen here
    (LAPACK's default is tuned for eigenvectors). Neither numpy nor scipy wrap these routines.
    """

    def __init__(self, lib, prefix, suffix, int_t):
        import ctypes

        self.ctypes, self.int_t = ctypes, int_t
        self.sy2sb = getattr(lib, f"{prefix}dsytrd_sy2sb{suffix}")
        self.sb2st = getattr(lib, f"{prefix}dsytrd_sb2st{suffix}")
        self.sterf = getattr(lib, f"{prefix}dsterf{suffix}")
        for f in (self.sy2sb, self.sb2st, self.sterf):
            f.restype = None

    def _i(self, v):
        return self.ctypes.byref(self.int_t(v))

    def eigvalsh(self, A, kd, timings=False):
        """Eigenvalues (ascending) of the symmetric C-contiguous float64 ``A`` (destroyed).

        ``timings=True`` also returns the seconds spent in each stage (for the benchmark).
        """
        import time

        ct = self.ctypes
        clock = [time.perf_counter()]
        ptr = lambda a: a.ctypes.data_as(ct.c_void_p)
        L = ct.c_size_t(1)  # hidden Fortran string lengths
        n = A.shape[0]
        kd = max(1, min(kd, n - 1))
        info = self.int_t(0)
        AB = np.zeros((n, kd + 1))  # Fortran (kd + 1, n) band storage
        tau = np.empty(n)
        q = np.empty(1)
        # A is symmetric, so its C buffer read as Fortran is A itself: 'L' = lower triangle
        self.sy2sb(b"L", self._i(n), self._i(kd), ptr(A), self._i(n), ptr(AB), self._i(kd + 1),
                   ptr(tau), ptr(q), self._i(-1), ct.byref(info), L)
        work = np.empty(max(1, int(q[0])))
        self.sy2sb(b"L", self._i(n), self._i(kd), ptr(A), self._i(n), ptr(AB), self._i(kd + 1),
                   ptr(tau), ptr(work), self._i(work.size), ct.byref(info), L)
        if info.value != 0:
            raise RuntimeError(f"dsytrd_sy2sb failed (info={info.value})")
        clock.append(time.perf_counter())
        d, e = np.empty(n), np.empty(n)
        qh, qw = np.empty(1), np.empty(1)
        args = (b"Y", b"N", b"L", self._i(n), self._i(kd), ptr(AB), self._i(kd + 1), ptr(d), ptr(e))
        self.sb2st(*args, ptr(qh), self._i(-1), ptr(qw), self._i(-1), ct.byref(info), L, L, L)
        hous, work = np.empty(max(1, int(qh[0]))), np.empty(max(1, int(qw[0])))
        self.sb2st(*args, ptr(hous), self._i(hous.size), ptr(work), self._i(work.size),
                   ct.byref(info), L, L, L)
        if info.value != 0:
            raise RuntimeError(f"dsytrd_sb2st failed (info={info.value})")
        clock.append(time.perf_counter())
        self.sterf(self._i(n), ptr(d), ptr(e), ct.byref(info))
        if info.value != 0:
            raise RuntimeError(f"dsterf failed (info={info.value})")
        if not timings:
            return d
        clock.append(time.perf_counter())
        names = (f"dense->band kd={kd} (sy2sb)", "band->tridiagonal (sb2st)", "dsterf")
        return d, dict(zip(names, np.diff(clock)))


_TWO_STAGE = []  # [] = not looked up yet; [None] = unavailable; [_TwoStageLapack]


def _two_stage():
    """The two-stage solver in numpy's bundled OpenBLAS, checked once on a small matrix; None
    where numpy is built against another LAPACK (then ``numpy.linalg.eigvalsh`` is used)."""
    if _TWO_STAGE:
        return _TWO_STAGE[0]
    import ctypes
    import glob
    import os

    solver = None
    libs = sorted(glob.glob(os.path.join(os.path.dirname(np.__file__) + ".libs",
                                         "lib*openblas*.so*")))
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix, int_t in (("scipy_", "_64_", ctypes.c_int64),
                                      ("", "_64_", ctypes.c_int64),
                                      ("scipy_", "_", ctypes.c_int32), ("", "_", ctypes.c_int32)):
            if hasattr(lib, f"{prefix}dsytrd_sy2sb{suffix}") and \
                    hasattr(lib, f"{prefix}dsytrd_sb2st{suffix}"):
                solver = _TwoStageLapack(lib, prefix, suffix, int_t)
                break
        if solver is not None:
            break
    if solver is not None:  # a wrong integer width would show here, not in a user's result
        A = np.random.default_rng(0).normal(size=(40, 40))
        A = A + A.T
        try:
            ok = np.allclose(solver.eigvalsh(A.copy(), 8), np.linalg.eigvalsh(A), atol=1e-10)
        except RuntimeError:
            ok = False
        if not ok:
            logger.debug("DSE: two-stage LAPACK check failed; using numpy.linalg.eigvalsh")
            solver = None
    _TWO_STAGE.append(solver)
    return solver


def _sym_eigvals(K):
    """All eigenvalues of the symmetric float64 ``K`` (destroyed), ascending."""
    n = K.shape[0]
    solver = _two_stage() if n >= _TWO_STAGE_MIN_N else None
    if solver is None:
        return np.linalg.eigvalsh(K)
    return solver.eigvalsh(K, _two_stage_kd(n))


def _eigvals_numpy(X, sigma):
    """Spectrum of K = d^-1/2 G d^-1/2 (= spectrum of the random walk D^-1 G).

    K is built in one (n, n) buffer; ``numpy.linalg.eigvalsh`` (one-stage ``syevd``) below
    ``_TWO_STAGE_MIN_N`` points, LAPACK's two-stage reduction above (see ``_TwoStageLapack``).
    """
    return _sym_eigvals(_kernel_operator(X, sigma))


def _eigvals_torch(X, sigma, device, dtype):
    import torch

    tdtype = {"float64": torch.float64, "float32": torch.float32}[dtype]
    Xt = torch.as_tensor(X, dtype=tdtype, device=device)  # (n, D)
    K = torch.cdist(Xt, Xt).square_()  # (n, n)
    K.mul_(-1.0 / (2.0 * sigma**2)).exp_()
    s = K.sum(dim=1).rsqrt_()
    K.mul_(s[:, None]).mul_(s[None, :])
    K = 0.5 * (K + K.T)  # exact symmetry for the solver
    return torch.linalg.eigvalsh(K).double().cpu().numpy()


def _dse_core(X, sigma, t, *, reference, backend, device, dtype):
    if reference:
        eig = _eigvals_reference(X, sigma)
    elif backend == "torch":
        eig = _eigvals_torch(X, sigma, device, dtype)
    else:
        eig = _eigvals_numpy(X, sigma)
    return _entropy_bits(eig, t)


def _check_backend(backend, device, dtype, reference):
    check_option("backend", backend, ("numpy", "torch"))
    dtype = "float64" if dtype is None else str(dtype).replace("torch.", "")
    check_option("dtype", dtype, ("float64", "float32"))
    if dtype == "float32" and backend == "numpy":
        raise NeurofmError("dtype='float32' needs backend='torch'; got backend='numpy'")
    if reference and (backend != "numpy" or dtype != "float64"):
        raise NeurofmError("reference=True reproduces dse-dsmi on numpy float64; got "
                           f"backend={backend!r}, dtype={dtype!r}")
    return dtype


# ------------------------------------------------------------------------------ DSE
def diffusion_spectral_entropy(X, *, sigma=10.0, t=1, max_n=10000, seed=0, reference=False,
                               standardize=False, backend="numpy", device=None, dtype=None,
                               verbose=None):
    """Diffusion spectral entropy of a point cloud, in bits.

    G = exp(-||x_i - x_j||^2 / (2 sigma^2)) (self-loops kept), K = d^-1/2 G d^-1/2 with d the
    row sums (the spectrum of the random walk D^-1 G), lambda = |eig(K)|^t,
    p = lambda / sum(lambda) + eps (no renormalisation, as dse-dsmi), DSE = -sum p log2 p.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) | xarray.DataArray
        The representation; a DataArray with a ``sample`` dim is transposed to put it first
        (e.g. embeddings from ``neurofm.evals.embed``). 1-D input is one feature.
    sigma : float | {"median", "sqrt_dim"}
        Gaussian kernel bandwidth. ``"median"``: the median pairwise Euclidean distance;
        ``"sqrt_dim"``: sqrt(n_features) (the value the DSE paper used in its accuracy study).
        The default 10 is the reference's.
    t : float
        Diffusion time (the eigenvalues are raised to ``t``).
    max_n : int | None
        Above this many samples, ``max_n`` rows are drawn without replacement with Python's
        :mod:`random` seeded with ``seed`` (exactly as dse-dsmi does). None: never subsample.
    seed : int | None
        Seed of that draw.
    reference : bool
        Reproduce the reference arithmetic step by step (slow; numpy float64 only).
    standardize : bool
        Z-score every feature first (not in the reference; makes DSE scale-free).
    backend : {"numpy", "torch"}
        ``"torch"`` builds the operator and calls ``torch.linalg.eigvalsh`` on ``device``.
    device : str | torch.device, optional
        Torch device (``"cuda"`` for a GPU).
    dtype : {"float64", "float32"}, optional
        Precision of the torch path (float64 by default; float32 is faster on GPUs and
        accurate to ~1e-4 bits).
    verbose : bool | str | int, optional
        Log level for this call.

    Returns
    -------
    float
        DSE in bits, in [0, log2(n)] up to the eps offset.
    """
    with use_log_level(verbose):
        dtype = _check_backend(backend, device, dtype, reference)
        t = _check_t(t)
        X, sigma = _prepare(X, sigma, standardize)
        if max_n is not None:
            max_n = check_positive_int("max_n", max_n)
            if X.shape[0] > max_n:
                logger.info("DSE: subsampling %d of %d samples (seed %s)", max_n, X.shape[0], seed)
                X = X[_subsample(X.shape[0], max_n, seed)]
        return _dse_core(X, sigma, t, reference=reference, backend=backend, device=device,
                         dtype=dtype)


# ----------------------------------------------------------------------------- DSMI
def _labels(y, n, n_clusters, name="y"):
    """Class labels as the reference derives them (ints as is, floats binned, vectors clustered)."""
    if isinstance(y, xr.DataArray):
        if "sample" in y.dims:
            y = y.transpose("sample", ...)
        y = y.values
    y = np.asarray(y)
    if y.ndim == 1:
        y = y.reshape(-1, 1)
    if y.ndim != 2 or y.shape[0] != n:
        raise DataError(f"{name} must have {n} rows (one per sample of X); got shape {y.shape}")
    if y.shape[1] == 1 and (np.issubdtype(y.dtype, np.integer) or y.dtype.kind in "USOb"):
        return y.reshape(-1)
    y = np.asarray(y, dtype=np.float64)
    if not np.all(np.isfinite(y)):
        raise DataError(f"{name} contains NaN or Inf")
    if y.shape[1] == 1:
        lo, hi = y.min(axis=0), y.max(axis=0)
        if not hi > lo:
            raise DataError(f"{name} is a constant float label; binning needs a range "
                            "(pass integer labels for discrete classes)")
        v = (y - lo) / (hi - lo)
        return np.digitize(v, bins=np.linspace(0, 1, n_clusters + 1)[:-1]).reshape(-1)
    from sklearn.cluster import SpectralClustering

    return SpectralClustering(n_clusters=n_clusters, affinity="nearest_neighbors",
                              assign_labels="cluster_qr", random_state=0).fit(y).labels_


def diffusion_spectral_mutual_information(X, y, *, sigma=10.0, t=1, n_repetitions=5,
                                          n_clusters=10, seed=0, reference=False,
                                          standardize=False, backend="numpy", device=None,
                                          dtype=None, return_labels=False, verbose=None):
    """Diffusion spectral mutual information between a representation and labels, in bits.

    DSMI = sum_c p(c) [mean over ``n_repetitions`` random subsets A* of size n_c of DSE(A*)
    - DSE(X[y == c])], with Python :mod:`random` re-seeded with ``seed`` at every class, as
    in dse-dsmi (so classes of equal size share their random subsets; the default path
    computes each shared subset's DSE once). Can be slightly negative.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) | xarray.DataArray
        The representation.
    y : array-like of shape (n_samples,) or (n_samples, n_ref) | xarray.DataArray | str
        Labels. Integer (or string/bool) 1-D labels are classes; 1-D floats are binned into
        ``n_clusters`` equal bins of their range; vectors are spectrally clustered into
        ``n_clusters`` groups (k-NN affinity, ``cluster_qr``), as the reference does. A str
        names a coordinate of the DataArray ``X``.
    sigma, t, standardize, backend, device, dtype, verbose
        As in :func:`diffusion_spectral_entropy` (inner DSEs use ``max_n=10000``, seed 0,
        like the reference).
    n_repetitions : int
        Random subsets per class.
    n_clusters : int
        Bins / clusters for continuous labels.
    seed : int | None
        Python :mod:`random` seed re-set at every class.
    reference : bool
        Reference arithmetic for every inner DSE.
    return_labels : bool
        Also return the class labels used, shape (n_samples,).

    Returns
    -------
    float | (float, ndarray of shape (n_samples,))
        DSMI in bits (and the labels).
    """
    with use_log_level(verbose):
        dtype = _check_backend(backend, device, dtype, reference)
        t = _check_t(t)
        n_repetitions = check_positive_int("n_repetitions", n_repetitions)
        n_clusters = check_positive_int("n_clusters", n_clusters)
        if isinstance(y, str):
            if not isinstance(X, xr.DataArray) or y not in X.coords:
                raise NeurofmError(f"y={y!r} names no coordinate of X")
            y = X[y]
        X, sigma = _prepare(X, sigma, standardize)
        n = X.shape[0]
        labels = _labels(y, n, n_clusters)
        classes, counts = np.unique(labels, return_counts=True)

        def dse(Z):
            if Z.shape[0] > 10000:  # the reference's inner default max_N, seed 0
                Z = Z[_subsample(Z.shape[0], 10000, 0)]
            return _dse_core(Z, sigma, t, reference=reference, backend=backend, device=device,
                             dtype=dtype)

        cache = {}
        mi = []
        for c, n_c in zip(classes, counts):
            h_cond = dse(X[labels == c])
            key = int(n_c)
            if reference or key not in cache or seed is None:
                if seed is not None:
                    random.seed(seed)
                reps = [dse(X[np.array(random.sample(range(n), k=key))])
                        for _ in range(n_repetitions)]
                cache[key] = float(np.mean(reps))
            mi.append(cache[key] - h_cond)
        value = float(np.sum(counts / counts.sum() * np.array(mi)))
        return (value, labels) if return_labels else value


# ------------------------------------------------------------------- over training
def _checkpoint_name(ckpt, k):
    import os

    if isinstance(ckpt, (str, os.PathLike)):
        return os.path.basename(os.fspath(ckpt))
    return f"checkpoint{k}"


def _checkpoint_step(name):
    import re

    for key in ("step", "epoch"):
        m = re.search(rf"{key}=(\d+)", name)
        if m:
            return key, int(m.group(1))
    return None, None


def dse_over_training(checkpoints, store, *, labels=None, sigma=10.0, t=1, max_n=10000,
                      seed=0, standardize=False, n_repetitions=5, n_clusters=10,
                      backend="numpy", device=None, dtype=None, pool="mean", per="window",
                      batch_size=64, split=None, window_samples=None, window_s=None,
                      stride_s=None, names=None, verbose=None):
    """DSE (and DSMI) of a model's representations across training checkpoints.

    Every checkpoint is loaded and its frozen encoder embeds the same windows with
    :func:`neurofm.evals.embed` (token-pooled features, one row per window or recording);
    DSE of each embedding, and DSMI with the labels when there are any, are computed with
    the same settings -- the DSE paper's use (Liao et al.: DSE of the representation rises
    and DSMI with the classes grows as a network learns).

    Parameters
    ----------
    checkpoints : sequence of str | os.PathLike | nn.Module | callable
        ``neurofm fit`` checkpoints, exported encoder files or encoder modules, in training
        order (anything ``neurofm.evals.embed`` accepts).
    store : Store | str | WindowDataset
        The windows to embed (see :func:`neurofm.evals.embed`).
    labels : dict, optional
        Recording id or subject -> class, for DSMI (or the dataset's own labels).
    sigma, t, max_n, seed, standardize, backend, device, dtype
        As in :func:`diffusion_spectral_entropy` (``sigma="median"`` or ``standardize=True``
        keep values comparable while the scale of the representation drifts).
    n_repetitions, n_clusters
        As in :func:`diffusion_spectral_mutual_information`.
    pool, per, batch_size, split, window_samples, window_s, stride_s
        Passed to :func:`neurofm.evals.embed` (``device`` too).
    names : sequence of str, optional
        Checkpoint labels (default: file names, or ``checkpoint<k>`` for modules).
    verbose : bool | str | int, optional
        Log level for this call.

    Returns
    -------
    xarray.DataArray of shape (n_checkpoints,)
        DSE in bits, dim ``checkpoint``; coordinates ``dsmi`` (bits, NaN without labels),
        ``n_samples`` and, when the file names hold ``step=`` / ``epoch=``, ``step`` /
        ``epoch``. Plot it with :func:`plot_dse_over_training`.
    """
    from ..evals import embed

    with use_log_level(verbose):
        checkpoints = list(checkpoints)
        if not checkpoints:
            raise NeurofmError("checkpoints is empty; pass checkpoint files or encoders")
        if names is None:
            names = [_checkpoint_name(c, k) for k, c in enumerate(checkpoints)]
        elif len(names) != len(checkpoints):
            raise NeurofmError(f"names has {len(names)} entries for {len(checkpoints)} "
                               "checkpoints")
        dse, dsmi, n_samples = [], [], []
        for name, ckpt in zip(names, checkpoints):
            emb = embed(ckpt, store, pool=pool, per=per, batch_size=batch_size, device=device,
                        split=split, window_samples=window_samples, window_s=window_s,
                        stride_s=stride_s, labels=labels)
            kw = {"sigma": sigma, "t": t, "seed": seed, "standardize": standardize,
                  "backend": backend, "device": device, "dtype": dtype}
            dse.append(diffusion_spectral_entropy(emb, max_n=max_n, **kw))
            if "label" in emb.coords:
                dsmi.append(diffusion_spectral_mutual_information(
                    emb, emb["label"].values, n_repetitions=n_repetitions,
                    n_clusters=n_clusters, **kw))
            else:
                dsmi.append(np.nan)
            n_samples.append(emb.shape[0])
            logger.info("dse_over_training: %s DSE %.4f DSMI %.4f bits", name, dse[-1],
                        dsmi[-1])
        coords = {"checkpoint": list(names), "dsmi": ("checkpoint", dsmi),
                  "n_samples": ("checkpoint", n_samples)}
        parsed = [_checkpoint_step(n) for n in names]
        if all(k is not None for k, _ in parsed) and len({k for k, _ in parsed}) == 1:
            coords[parsed[0][0]] = ("checkpoint", [v for _, v in parsed])
        return xr.DataArray(np.asarray(dse), dims=("checkpoint",), coords=coords, name="dse",
                            attrs={"units": "bits", "sigma": str(sigma), "t": t,
                                   "standardize": standardize})


def plot_dse_over_training(result, ax=None):
    """DSE (and DSMI when known) against checkpoint; returns the matplotlib Axes.

    Parameters
    ----------
    result : xarray.DataArray
        The output of :func:`dse_over_training`.
    ax : matplotlib Axes, optional
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    key = next((k for k in ("step", "epoch") if k in result.coords), None)
    x = result[key].values if key else np.arange(result.sizes["checkpoint"])
    ax.plot(x, result.values, "o-", label="DSE")
    if "dsmi" in result.coords and np.isfinite(result["dsmi"].values).any():
        ax.plot(x, result["dsmi"].values, "s--", label="DSMI")
    ax.set_xlabel(key or "checkpoint")
    ax.set_ylabel("bits")
    if not key:
        ax.set_xticks(x, result["checkpoint"].values, rotation=45, ha="right", fontsize=7)
    ax.legend(frameon=False)
    return ax
