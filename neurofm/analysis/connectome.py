"""Dynamic connectomes from calcium imaging by non-negative tensor factorization (NTF).

Dyballa et al., ICLR 2024 (github dyballa/dynamic-connectomes). Three stages:

1. :func:`differential_affinity` / :func:`affinity_tensor`: instantaneous non-negative
   pairwise affinities a_ij(t) from smoothed, z-scored time derivatives of the traces, stacked
   into a TIME x ANIMAL x PAIR tensor on a common neuron set. The paper's worm notebook is not
   public; the formula here is ours, configurable and documented (docs/connectome.md).
2. :class:`NonNegativeCP`: non-negative CP decomposition by HALS (temporal, animal and pair
   factors); :func:`select_rank` reports explained variance and factor stability over seeds.
3. :func:`weighted_sbm`: a weighted stochastic block model with exponential edge weights on a
   component's N x N affinity matrix (the reference uses graph-tool's nested SBM, not on
   PyPI); :func:`leiden` (leidenalg) is the fast, non-equivalent alternative.

:func:`dynamic_connectome` runs the whole pipeline and returns a :class:`DynamicConnectome`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from .._checks import check_option, check_positive, check_positive_int
from .._logging import logger, use_log_level, warn
from ..errors import DataError, NeurofmError

__all__ = [
    "DynamicConnectome",
    "NonNegativeCP",
    "affinity_tensor",
    "differential_affinity",
    "dynamic_connectome",
    "factor_match_score",
    "leiden",
    "select_rank",
    "weighted_sbm",
]


# ------------------------------------------------------------------------- affinities
def _recording_traces(ds, func):
    from .._dataset import check_recording

    check_recording(ds, func)
    sig = ds["signal"].transpose("channel", "time")
    data = np.asarray(sig.values, dtype=np.float64)  # (N, T)
    names = [str(c) for c in ds["channel"].values]
    return data, names, float(ds.attrs["sfreq"]), np.asarray(ds["time"].values, float)


def _finite_channels(data, names, where):
    """Drop channels holding NaN/Inf (reported); raise if fewer than 2 remain."""
    ok = np.isfinite(data).all(axis=1)
    if not ok.all():
        dropped = [n for n, k in zip(names, ok) if not k]
        warn(f"{where}: excluded {len(dropped)} channel(s) with NaN/Inf samples: "
             f"{', '.join(dropped[:10])}{' ...' if len(dropped) > 10 else ''}")
    if ok.sum() < 2:
        raise DataError(f"{where}: need at least 2 channels with finite traces; found "
                        f"{int(ok.sum())} of {len(names)}")
    return ok


def _zscored_derivative(data, sfreq, smooth_s, where, names):
    """Gaussian-smoothed (sigma = smooth_s), differentiated, z-scored traces (N, T)."""
    from scipy.ndimage import gaussian_filter1d

    x = data
    if smooth_s:
        x = gaussian_filter1d(x, sigma=smooth_s * sfreq, axis=1, mode="nearest")
    dx = np.gradient(x, axis=1) * sfreq  # (N, T) per second
    sd = dx.std(axis=1)
    flat = ~(sd > 1e-12 * max(1.0, float(np.abs(dx).max())))
    if flat.any():
        raise DataError(f"{where}: constant traces have no derivative to compare: "
                        f"{', '.join(n for n, f in zip(names, flat) if f)}")
    return (dx - dx.mean(axis=1, keepdims=True)) / sd[:, None]


def _pair_affinity(z, method, window):
    """Affinity (T, P) of the upper-triangle pairs from z-scored derivatives z (N, T)."""
    iu, ju = np.triu_indices(z.shape[0], 1)
    if method == "derivative_product":
        a = z[iu].T * z[ju].T  # (T, P)
        np.maximum(a, 0.0, out=a)
        return a
    if method == "sign_agreement":
        return ((z[iu].T * z[ju].T) > 0).astype(np.float64)
    from scipy.ndimage import uniform_filter1d

    # windowed Pearson correlation of the derivatives, clipped at 0
    m = uniform_filter1d(z, window, axis=1, mode="nearest")  # (N, T)
    v = uniform_filter1d(z * z, window, axis=1, mode="nearest") - m * m
    sd = np.sqrt(np.maximum(v, 1e-12))
    cov = uniform_filter1d(z[iu] * z[ju], window, axis=1, mode="nearest") - m[iu] * m[ju]
    r = cov / (sd[iu] * sd[ju])  # (P, T)
    return np.clip(r, 0.0, 1.0).T


def _pair_coords(names):
    iu, ju = np.triu_indices(len(names), 1)
    arr = np.asarray(names, dtype=object)
    return {"pair": np.arange(iu.size), "neuron_i": ("pair", arr[iu].astype(str)),
            "neuron_j": ("pair", arr[ju].astype(str))}


_METHODS = ("derivative_product", "sign_agreement", "windowed_corr")


def differential_affinity(ds, *, method="derivative_product", smooth_s=0.5, window_s=5.0,
                          neurons=None, verbose=None):
    """Instantaneous pairwise affinities of a calcium recording.

    Each trace is smoothed with a Gaussian of ``smooth_s`` seconds, differentiated and
    z-scored (z_i'). Then, for every pair i < j and every sample t:

    - ``"derivative_product"``: a_ij(t) = max(0, z_i'(t) z_j'(t)) -- large when both neurons
      change strongly in the same direction at the same time;
    - ``"sign_agreement"``: a_ij(t) = 1 if z_i'(t) z_j'(t) > 0 else 0;
    - ``"windowed_corr"``: max(0, Pearson correlation of z_i', z_j' in a centred window of
      ``window_s`` seconds).

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical calcium recording (``neurofm.io.read_calcium``,
        ``neurofm.schema.make_recording(..., modality="calcium")``), signal (channel, time).
    method : {"derivative_product", "sign_agreement", "windowed_corr"}
        Affinity formula (the paper's exact formula is not public; see docs/connectome.md).
    smooth_s : float
        Gaussian smoothing sigma in seconds before differentiation (0: none).
    window_s : float
        Window length in seconds for ``"windowed_corr"``.
    neurons : sequence of str, optional
        Neurons to keep, in this order (default: every channel with finite samples).
    verbose : bool | str | int, optional
        Log level for this call.

    Returns
    -------
    xarray.DataArray of shape (n_times, n_pairs)
        Non-negative float32 affinities, dims (time, pair); coordinates ``neuron_i`` and
        ``neuron_j`` name the pair (upper triangle, row-major); ``attrs["excluded"]`` lists
        the channels dropped for NaN/Inf samples.
    """
    with use_log_level(verbose):
        check_option("method", method, _METHODS)
        smooth_s = 0.0 if smooth_s == 0 else check_positive("smooth_s", smooth_s)
        window_s = check_positive("window_s", window_s)
        data, names, sfreq, time = _recording_traces(ds, "differential_affinity")
        if neurons is not None:
            missing = [n for n in neurons if n not in names]
            if missing:
                raise DataError(f"differential_affinity: neurons not in the recording: "
                                f"{', '.join(map(str, missing[:10]))}")
            idx = [names.index(n) for n in neurons]
            data, names = data[idx], [names[i] for i in idx]
        ok = _finite_channels(data, names, "differential_affinity")
        excluded = [n for n, k in zip(names, ok) if not k]
        data, names = data[ok], [n for n, k in zip(names, ok) if k]
        z = _zscored_derivative(data, sfreq, smooth_s, "differential_affinity", names)
        window = max(2, round(window_s * sfreq))
        a = _pair_affinity(z, method, window).astype(np.float32)
        return xr.DataArray(a, dims=("time", "pair"),
                            coords={"time": time, **_pair_coords(names)},
                            attrs={"method": method, "smooth_s": smooth_s,
                                   "window_s": window_s, "sfreq": sfreq,
                                   "excluded": excluded})


def affinity_tensor(recordings, *, neurons=None, sfreq=None, method="derivative_product",
                    smooth_s=0.5, window_s=5.0, verbose=None):
    """TIME x ANIMAL x PAIR affinity tensor on a common neuron set and a common time base.

    Traces are linearly interpolated onto a common grid (``sfreq``, default the lowest rate
    among the recordings) starting at each recording's first sample and cropped to the
    shortest duration, then passed to :func:`differential_affinity`.

    Parameters
    ----------
    recordings : sequence of xarray.Dataset | dict of str to xarray.Dataset
        Canonical calcium recordings, one per animal (dict keys name the animals).
    neurons : sequence of str, optional
        The neuron set; default the neurons with finite traces in every recording
        (intersection, in the order of the first recording).
    sfreq : float, optional
        Common sampling rate in Hz.
    method, smooth_s, window_s
        As in :func:`differential_affinity`.
    verbose : bool | str | int, optional
        Log level for this call.

    Returns
    -------
    xarray.DataArray of shape (n_times, n_animals, n_pairs)
        Float32, dims (time, animal, pair); time in seconds from each recording's start.
    """
    with use_log_level(verbose):
        check_option("method", method, _METHODS)
        smooth_s = 0.0 if smooth_s == 0 else check_positive("smooth_s", smooth_s)
        window_s = check_positive("window_s", window_s)
        if isinstance(recordings, dict):
            labels, recs = [str(k) for k in recordings], list(recordings.values())
        else:
            recs = list(recordings)
            labels = [str(r.attrs.get("subject") or f"animal{k}") if isinstance(r, xr.Dataset)
                      else f"animal{k}" for k, r in enumerate(recs)]
            if len(set(labels)) < len(labels):
                labels = [f"animal{k}" for k in range(len(recs))]
        if not recs:
            raise DataError("affinity_tensor: recordings is empty")
        traces = [_recording_traces(r, "affinity_tensor") for r in recs]
        valid = []
        for lab, (data, names, _, _) in zip(labels, traces):
            ok = np.isfinite(data).all(axis=1)
            if not ok.all():
                bad = [n for n, k in zip(names, ok) if not k]
                warn(f"affinity_tensor: {lab}: excluded {len(bad)} neuron(s) with NaN/Inf "
                     f"samples: {', '.join(bad[:10])}")
            valid.append([n for n, k in zip(names, ok) if k])
        if neurons is None:
            common = set(valid[0]).intersection(*valid[1:])
            neurons = [n for n in valid[0] if n in common]
            if len(neurons) < 2:
                raise DataError(
                    "affinity_tensor: the recordings share fewer than 2 neurons with finite "
                    f"traces (found {len(neurons)}; neuron counts "
                    f"{[len(v) for v in valid]}); pass neurons= or check the channel names")
        else:
            neurons = [str(n) for n in neurons]
            problems = [f"{lab}: missing {', '.join(sorted(set(neurons) - set(v))[:10])}"
                        for lab, v in zip(labels, valid) if set(neurons) - set(v)]
            if problems:
                raise DataError("affinity_tensor: neurons= are not all present with finite "
                                "traces in every recording: " + "; ".join(problems))
        rates = [tr[2] for tr in traces]
        sfreq = min(rates) if sfreq is None else check_positive("sfreq", sfreq)
        duration = min(tr[3][-1] - tr[3][0] for tr in traces)
        n_t = int(np.floor(duration * sfreq + 1e-9)) + 1
        if n_t < 3:
            raise DataError(f"affinity_tensor: the common duration ({duration:.3g} s) holds "
                            f"fewer than 3 samples at {sfreq} Hz")
        grid = np.arange(n_t) / sfreq
        out = None
        for a_idx, (data, names, _, time) in enumerate(traces):
            rows = data[[names.index(n) for n in neurons]]
            rel = time - time[0]
            res = np.stack([np.interp(grid, rel, row) for row in rows])  # (N, T)
            z = _zscored_derivative(res, sfreq, smooth_s, f"affinity_tensor: {labels[a_idx]}",
                                    neurons)
            a = _pair_affinity(z, method, max(2, round(window_s * sfreq)))
            if out is None:
                out = np.empty((n_t, len(recs), a.shape[1]), dtype=np.float32)
            out[:, a_idx] = a
        return xr.DataArray(out, dims=("time", "animal", "pair"),
                            coords={"time": grid, "animal": labels, **_pair_coords(neurons)},
                            attrs={"method": method, "smooth_s": smooth_s,
                                   "window_s": window_s, "sfreq": sfreq,
                                   "neurons": list(neurons)})


# --------------------------------------------------------------------------- NTF (HALS)
class _Ops:
    """The few array operations HALS needs, for numpy or torch."""

    def __init__(self, backend, device, dtype):
        self.torch = backend == "torch"
        if self.torch:
            import torch

            self.t = torch
            self.dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
            self.device = device
        else:
            self.dtype = np.dtype(dtype)

    def asarray(self, x):
        if self.torch:
            return self.t.as_tensor(np.ascontiguousarray(x), dtype=self.dtype,
                                    device=self.device)
        return np.ascontiguousarray(x, dtype=self.dtype)

    def numpy(self, x):
        return x.detach().cpu().double().numpy() if self.torch else np.asarray(x, float)

    def einsum(self, spec, *a):
        return self.t.einsum(spec, *a) if self.torch else np.einsum(spec, *a, optimize=True)

    def clip0(self, x):
        return self.t.clamp_min(x, 0.0) if self.torch else np.maximum(x, 0.0)

    def where(self, m, a, b):
        return self.t.where(m, a, b) if self.torch else np.where(m, a, b)

    def scalar(self, x):
        return float(x)


def _khatri_rao(A, B, ops):
    """(I*J, R) with row i*J + j = A[i] * B[j]."""
    return (A[:, None, :] * B[None, :, :]).reshape(A.shape[0] * B.shape[0], A.shape[1])


def _hals_update(A, M, V, n_inner, ops):
    """Up to ``n_inner`` HALS sweeps on A (I, R) for min ||M - A V|| s.t. A >= 0."""
    R = A.shape[1]
    diag = ops.numpy(V.diagonal())  # one device sync per update, not per column
    err0 = None
    for _ in range(n_inner):
        change = 0.0
        for k in range(R):
            if not diag[k] > 0:
                continue
            new = ops.clip0(A[:, k] + (M[:, k] - A @ V[:, k]) / diag[k])
            change = change + ((new - A[:, k]) ** 2).sum()
            A[:, k] = new
        change = ops.scalar(change)
        if err0 is None:
            err0 = change
        elif change <= 1e-8 * err0:
            break
    return A


def _cp_full(factors, ops):
    A, B, C = factors
    return ops.einsum("ir,jr,kr->ijk", A, B, C)


def _hals_cp(T, rank, factors, *, n_iter_max, tol, n_inner, mask, ops, verbose_every=0):
    """HALS non-negative CP of a 3-way tensor T (I, J, K). Returns factors and errors.

    The MTTKRPs share one product: P = T x_3 A_2 (I, J, R) serves modes 0 and 1; mode 2 is
    one GEMM with the Khatri-Rao product of A_0, A_1. Errors come from Gram matrices.
    """
    n_i, n_j, n_k = T.shape
    A0, A1, A2 = factors
    Tm = T.reshape(n_i * n_j, n_k)  # (IJ, K) view
    obs = mask
    norm_T = ops.scalar((T * T).sum()) if mask is None else ops.scalar(((T * mask) ** 2).sum())
    norm_T = np.sqrt(norm_T)
    errors = []
    for it in range(n_iter_max):
        if obs is not None and it > 0:  # EM imputation of missing entries by the model
            Tw = ops.where(obs, T, _cp_full((A0, A1, A2), ops))
            Tm = Tw.reshape(n_i * n_j, n_k)
        P = (Tm @ A2).reshape(n_i, n_j, rank)  # (I, J, R)
        G0, G1, G2 = A0.T @ A0, A1.T @ A1, A2.T @ A2
        M0 = ops.einsum("ijr,jr->ir", P, A1)
        A0 = _hals_update(A0, M0, G1 * G2, n_inner, ops)
        G0 = A0.T @ A0
        M1 = ops.einsum("ijr,ir->jr", P, A0)
        A1 = _hals_update(A1, M1, G0 * G2, n_inner, ops)
        G1 = A1.T @ A1
        M2 = Tm.T @ _khatri_rao(A0, A1, ops)  # (K, R)
        A2 = _hals_update(A2, M2, G0 * G1, n_inner, ops)
        G2 = A2.T @ A2
        if obs is None:
            inner = ops.scalar((M2 * A2).sum())
            sq = ops.scalar((G0 * G1 * G2).sum())
            err = np.sqrt(abs(norm_T**2 - 2 * inner + sq)) / norm_T
        else:
            diff = (T - _cp_full((A0, A1, A2), ops)) * obs
            err = np.sqrt(ops.scalar((diff * diff).sum())) / norm_T
        errors.append(err)
        if verbose_every and it % verbose_every == 0:
            logger.info("NTF iteration %d: relative error %.6g", it, err)
        if tol and it >= 1 and abs(errors[-2] - errors[-1]) < tol:
            break
    return [A0, A1, A2], errors


def _max_cp_rank(shape):
    s = sorted(shape)
    return int(np.prod(s[:-1]))


def _as_tensor(tensor, name="tensor"):
    dims = None
    if isinstance(tensor, xr.DataArray):
        dims = tensor.dims
        tensor = tensor.values
    try:
        T = np.asarray(tensor, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{name} must be a numeric array; got {type(tensor).__name__} "
                        f"({err})") from None
    if T.ndim != 3:
        raise DataError(f"{name} must be 3-way (e.g. time x animal x pair); got shape {T.shape}")
    return T, dims


class NonNegativeCP:
    """Non-negative CP (PARAFAC) decomposition of a 3-way tensor by HALS.

    T ~ sum_r w_r a_r (x) b_r (x) c_r with a_r, b_r, c_r >= 0 (unit norm) and weights w_r.
    The updates are those of tensorly's ``non_negative_parafac_hals`` (up to ``n_inner``
    column sweeps per mode and iteration), with the random initialisation drawn the same way
    (``RandomState(random_state).random_sample`` per mode), but the MTTKRPs share one tensor
    contraction per iteration and never unfold (copy) the tensor, and the error comes from
    Gram matrices.

    Parameters
    ----------
    rank : int
        Number of components R.
    init : {"random"} | list of 3 arrays
        ``"random"``: uniform [0, 1) factors; or initial factors of shapes (I, R), (J, R),
        (K, R).
    n_iter_max : int
        Maximum number of outer iterations.
    tol : float
        Stop when the relative error changes by less than ``tol`` between iterations (0: run
        all iterations).
    n_inner : int
        HALS sweeps per mode per iteration.
    random_state : int | None
        Seed of the random initialisation.
    backend : {"numpy", "torch"}
        Torch runs on ``device`` (GPU for large tensors).
    device : str | torch.device, optional
        Torch device.
    dtype : {"float64", "float32"}
        Working precision (float32 halves memory).
    verbose : bool | str | int, optional
        Log level during ``fit`` (INFO logs the error every 50 iterations).

    Attributes
    ----------
    factors_ : list of 3 ndarrays of shapes (I, R), (J, R), (K, R)
        Unit-norm non-negative factors, components sorted by decreasing weight.
    weights_ : ndarray of shape (R,)
        Component weights.
    reconstruction_error_ : float
        ||T - T_hat|| / ||T|| (observed entries only when a mask is given).
    errors_ : ndarray of shape (n_iter,)
        Relative error after every iteration.
    n_iter_ : int
        Iterations run.
    """

    def __init__(self, rank, *, init="random", n_iter_max=200, tol=1e-7, n_inner=5,
                 random_state=None, backend="numpy", device=None, dtype="float64",
                 verbose=None):
        self.rank = rank
        self.init = init
        self.n_iter_max = n_iter_max
        self.tol = tol
        self.n_inner = n_inner
        self.random_state = random_state
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.verbose = verbose

    def fit(self, tensor, mask=None):
        """Decompose ``tensor``.

        Parameters
        ----------
        tensor : array-like of shape (I, J, K) | xarray.DataArray
            Non-negative tensor (NaN allowed only where ``mask`` is False).
        mask : array-like of bool, shape (I, J, K), optional
            True where an entry is observed; missing entries are imputed by the model at
            every iteration (EM) and left out of the error.

        Returns
        -------
        self
        """
        with use_log_level(self.verbose):
            rank = check_positive_int("rank", self.rank)
            n_iter_max = check_positive_int("n_iter_max", self.n_iter_max)
            n_inner = check_positive_int("n_inner", self.n_inner)
            if isinstance(self.tol, bool) or not isinstance(self.tol, numbers.Real) \
                    or self.tol < 0:
                raise NeurofmError(f"tol must be a number >= 0; got {self.tol!r}")
            check_option("backend", self.backend, ("numpy", "torch"))
            check_option("dtype", str(self.dtype), ("float64", "float32"))
            T, _ = _as_tensor(tensor)
            if mask is not None:
                mask = np.asarray(mask, dtype=bool)
                if mask.shape != T.shape:
                    raise DataError(f"mask must have the tensor's shape {T.shape}; got "
                                    f"{mask.shape}")
                if not mask.any():
                    raise DataError("mask marks no entry as observed")
                T = np.where(mask, T, 0.0)
            if not np.all(np.isfinite(T)):
                raise DataError("tensor contains NaN or Inf; pass mask= (False at missing "
                                "entries) to fit around them")
            if (T < 0).any():
                raise DataError(f"tensor must be non-negative; found {int((T < 0).sum())} "
                                f"negative entries (min {T.min():.3g})")
            if not (T > 0).any():
                raise DataError("tensor is all zeros; nothing to decompose")
            max_rank = _max_cp_rank(T.shape)
            if rank > max_rank:
                raise DataError(f"rank={rank} is larger than this tensor of shape {T.shape} "
                                f"supports (a CP rank above {max_rank} = product of the two "
                                "smallest dimensions is never needed)")
            if isinstance(self.init, str):
                check_option("init", self.init, ("random",))
                rs = np.random.RandomState(self.random_state)
                init = [rs.random_sample((s, rank)) for s in T.shape]
            else:
                init = [np.array(f, dtype=float) for f in self.init]
                shapes = [tuple(f.shape) for f in init]
                if shapes != [(s, rank) for s in T.shape] or any((f < 0).any() for f in init):
                    raise DataError(f"init factors must be non-negative with shapes "
                                    f"{[(s, rank) for s in T.shape]}; got {shapes}")
            ops = _Ops(self.backend, self.device, str(self.dtype))
            Tt = ops.asarray(T)
            mt = None if mask is None else (ops.t.as_tensor(mask, device=self.device)
                                            if ops.torch else mask)
            factors, errors = _hals_cp(
                Tt, rank, [ops.asarray(f) for f in init], n_iter_max=n_iter_max,
                tol=float(self.tol), n_inner=n_inner, mask=mt, ops=ops,
                verbose_every=50)
            factors = [ops.numpy(f) for f in factors]
            norms = [np.linalg.norm(f, axis=0) for f in factors]
            weights = np.prod(norms, axis=0)
            factors = [f / np.where(n > 0, n, 1.0) for f, n in zip(factors, norms)]
            order = np.argsort(-weights, kind="stable")
            self.weights_ = weights[order]
            self.factors_ = [f[:, order] for f in factors]
            self.errors_ = np.asarray(errors)
            self.reconstruction_error_ = float(errors[-1])
            self.n_iter_ = len(errors)
            return self

    def reconstruct(self):
        """The fitted tensor T_hat, shape (I, J, K)."""
        A, B, C = self.factors_
        return np.einsum("r,ir,jr,kr->ijk", self.weights_, A, B, C)


def factor_match_score(factors_a, factors_b, weights_a=None, weights_b=None):
    """Factor match score between two CP models (1 = identical up to permutation/scale).

    Components are paired by the Hungarian algorithm on the product of the absolute cosine
    similarities of their factors; with weights, each pair is also scaled by
    1 - |w_a - w_b| / max(w_a, w_b) (Tomasi & Bro; tensortools' ``kruskal_align``).

    Parameters
    ----------
    factors_a, factors_b : list of ndarrays of shapes (I_n, R)
        Factors of the two models (same shapes).
    weights_a, weights_b : ndarray of shape (R,), optional
        Component weights; with factors of any norm, these are taken as the norms products.

    Returns
    -------
    float
        Mean score over matched components, in [0, 1].
    """
    from scipy.optimize import linear_sum_assignment

    fa = [np.asarray(f, float) for f in factors_a]
    fb = [np.asarray(f, float) for f in factors_b]
    if len(fa) != len(fb) or any(a.shape != b.shape for a, b in zip(fa, fb)):
        raise DataError("factor_match_score: the two models need factors of equal shapes; got "
                        f"{[a.shape for a in fa]} and {[b.shape for b in fb]}")
    na = [np.linalg.norm(f, axis=0) for f in fa]
    nb = [np.linalg.norm(f, axis=0) for f in fb]
    wa = np.prod(na, axis=0) if weights_a is None else np.asarray(weights_a) * np.prod(na, 0)
    wb = np.prod(nb, axis=0) if weights_b is None else np.asarray(weights_b) * np.prod(nb, 0)
    sim = np.ones((fa[0].shape[1], fb[0].shape[1]))
    for a, b, x, y in zip(fa, fb, na, nb):
        sim *= np.abs((a / np.where(x > 0, x, 1)).T @ (b / np.where(y > 0, y, 1)))
    lam = 1 - np.abs(wa[:, None] - wb[None, :]) / np.maximum(
        np.maximum(wa[:, None], wb[None, :]), 1e-300)
    score = sim * lam
    r, c = linear_sum_assignment(-score)
    return float(score[r, c].mean())


@dataclass
class RankSelection:
    """Outcome of :func:`select_rank`.

    Attributes
    ----------
    table : xarray.Dataset
        ``error`` (rank, seed), ``explained_variance`` (rank, seed) = 1 - error^2, and
        ``stability`` (rank): mean factor match score of every seed's model against the
        lowest-error one.
    rank : int
        The chosen rank: the elbow (farthest point above the chord) of -log10 of the best
        seed's unexplained variance against rank, stepped down to the largest rank not above
        it whose stability reaches the threshold.
    models : dict of int to NonNegativeCP
        The lowest-error model per rank.
    """

    table: xr.Dataset
    rank: int
    models: dict = field(repr=False)

    def plot(self, ax=None):
        """Explained variance and stability against rank; returns the matplotlib Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4.5, 3.2))
        ranks = self.table["rank"].values
        ev = self.table["explained_variance"]
        ax.plot(ranks, ev.max("seed"), "o-", label="explained variance (best seed)")
        ax.plot(ranks, self.table["stability"], "s--", label="stability (FMS)")
        ax.axvline(self.rank, color="k", lw=0.8, ls=":")
        ax.set_xlabel("rank")
        ax.set_ylim(0, 1.02)
        ax.legend(frameon=False, fontsize=8)
        return ax


def _elbow(x, y):
    """Index of the point farthest below/above the chord from the first to the last point."""
    if len(x) < 3:
        return int(np.argmax(y)) if len(x) else 0
    x = (np.asarray(x, float) - x[0]) / max(x[-1] - x[0], 1e-12)
    yr = y[-1] - y[0]
    y = (np.asarray(y, float) - y[0]) / (yr if abs(yr) > 1e-12 else 1.0)
    return int(np.argmax(y - x))


def select_rank(tensor, ranks, n_seeds=5, *, stability_threshold=0.8, n_iter_max=200,
                tol=1e-7, random_state=0, backend="numpy", device=None, dtype="float64",
                mask=None, verbose=None):
    """Fit NTF at several ranks and seeds; report explained variance, stability, an elbow.

    Parameters
    ----------
    tensor : array-like of shape (I, J, K) | xarray.DataArray
        Non-negative tensor.
    ranks : sequence of int
        Candidate ranks.
    n_seeds : int
        Random initialisations per rank (seeds ``random_state + s``).
    stability_threshold : float
        Ranks whose stability (mean factor match score against the best seed) is below this
        are not chosen (the elbow steps down to a stable rank; rank ``min(ranks)`` if none).
    n_iter_max, tol, backend, device, dtype, mask
        Passed to :class:`NonNegativeCP`.
    random_state : int
        First seed.
    verbose : bool | str | int, optional
        Log level for this call.

    Returns
    -------
    RankSelection
    """
    with use_log_level(verbose):
        ranks = sorted({check_positive_int("ranks", r) for r in ranks})
        if not ranks:
            raise NeurofmError("ranks must list at least one rank")
        n_seeds = check_positive_int("n_seeds", n_seeds)
        err = np.zeros((len(ranks), n_seeds))
        stab = np.zeros(len(ranks))
        models = {}
        for i, r in enumerate(ranks):
            fits = [NonNegativeCP(r, n_iter_max=n_iter_max, tol=tol,
                                  random_state=random_state + s, backend=backend,
                                  device=device, dtype=dtype).fit(tensor, mask=mask)
                    for s in range(n_seeds)]
            err[i] = [m.reconstruction_error_ for m in fits]
            best = fits[int(np.argmin(err[i]))]
            models[r] = best
            others = [m for m in fits if m is not best]
            stab[i] = 1.0 if not others else np.mean(
                [factor_match_score(best.factors_, m.factors_, best.weights_, m.weights_)
                 for m in others])
            logger.info("select_rank: rank %d error %.4g stability %.3f", r, err[i].min(),
                        stab[i])
        ev = 1 - err**2
        stable = stab >= stability_threshold
        # elbow of the log unexplained variance of the best seed, then the largest stable
        # rank not above it
        log_unexplained = -np.log10(np.maximum(1 - ev.max(axis=1), 1e-16))
        idx = _elbow(np.asarray(ranks, float), log_unexplained)
        below = [i for i in range(idx + 1) if stable[i]]
        chosen = ranks[below[-1] if below else 0]
        table = xr.Dataset(
            {"error": (("rank", "seed"), err), "explained_variance": (("rank", "seed"), ev),
             "stability": ("rank", stab)},
            coords={"rank": ranks, "seed": np.arange(n_seeds) + random_state},
            attrs={"chosen_rank": chosen, "stability_threshold": stability_threshold})
        return RankSelection(table=table, rank=chosen, models=models)


# ----------------------------------------------------------------------- communities
def _square_weights(W, name="W"):
    if isinstance(W, xr.DataArray):
        W = W.values
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise DataError(f"{name} must be a square (N, N) affinity matrix; got shape {W.shape}")
    if not np.all(np.isfinite(W)):
        raise DataError(f"{name} contains NaN or Inf")
    if (W < 0).any():
        raise DataError(f"{name} must be non-negative (edge weights); min is {W.min():.3g}")
    if not np.allclose(W, W.T, rtol=1e-6, atol=1e-12 * max(1.0, np.abs(W).max())):
        raise DataError(f"{name} must be symmetric (an undirected weighted graph)")
    W = 0.5 * (W + W.T)
    np.fill_diagonal(W, 0.0)
    if W.shape[0] < 2:
        raise DataError(f"{name} needs at least 2 nodes; got {W.shape[0]}")
    return W


def _xlogy(x, y):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, x * np.log(np.where(y > 0, y, 1.0)), 0.0)


def _block_loglik(E, S, Np):
    """Log-likelihood of block pairs (r <= s entries of symmetric (..., B, B) arrays).

    Bernoulli edges (E edges among Np pairs) and exponential weights (rate MLE E / S).
    """
    p_term = _xlogy(E, E / np.where(Np > 0, Np, 1)) + _xlogy(Np - E, 1 - E / np.where(
        Np > 0, Np, 1))
    w_term = _xlogy(E, E / np.where(S > 0, S, 1)) - E
    tot = p_term + w_term
    B = E.shape[-1]
    iu = np.triu_indices(B)
    return tot[..., iu[0], iu[1]].sum(axis=-1)


def _pairs(sizes):
    Np = np.outer(sizes, sizes).astype(float)
    np.fill_diagonal(Np, sizes * (sizes - 1) / 2.0)
    return Np


def _block_stats(A, W, z, B):
    Z = np.eye(B)[z]  # (N, B)
    E = Z.T @ A @ Z
    S = Z.T @ W @ Z
    d = np.arange(B)
    E[d, d] /= 2
    S[d, d] /= 2
    return E, S


def _sbm_fit_B(A, W, B, rng, n_init, max_sweeps=30):
    """Greedy node moves maximising the SBM log-likelihood at B blocks; best of n_init."""
    from sklearn.cluster import KMeans

    N = A.shape[0]
    best_z, best_ll = None, -np.inf
    if B == 1:
        z = np.zeros(N, int)
        E, S = _block_stats(A, W, z, 1)
        return z, float(_block_loglik(E, S, _pairs(np.array([N]))))
    # spectral start: leading eigenvectors of the normalised weight matrix
    d = W.sum(1)
    dn = 1 / np.sqrt(np.where(d > 0, d, 1))
    _, vec = np.linalg.eigh(dn[:, None] * W * dn[None, :])
    emb = vec[:, -B:]
    for k in range(n_init):
        z = KMeans(B, n_init=1 if k else 4, random_state=int(rng.integers(1 << 31))).fit(
            emb).labels_
        z = np.asarray(z, int)
        E, S = _block_stats(A, W, z, B)
        sizes = np.bincount(z, minlength=B).astype(float)
        for _ in range(max_sweeps):
            moved = 0
            for i in rng.permutation(N):
                r = z[i]
                if sizes[r] <= 1:
                    continue
                k_e = np.bincount(z, weights=A[i], minlength=B)  # edges of i to each block
                k_w = np.bincount(z, weights=W[i], minlength=B)
                # remove i from r
                E0, S0 = E.copy(), S.copy()
                E0[r, :] -= k_e
                E0[:, r] -= k_e
                E0[r, r] += k_e[r]  # diagonal was subtracted twice
                S0[r, :] -= k_w
                S0[:, r] -= k_w
                S0[r, r] += k_w[r]
                s0 = sizes.copy()
                s0[r] -= 1
                k_e_r = k_e.copy()
                k_w_r = k_w.copy()  # i's links to the blocks after removal (unchanged: no loops)
                # candidates t: add i to t (vectorised over t)
                Et = np.repeat(E0[None], B, 0)
                St = np.repeat(S0[None], B, 0)
                t = np.arange(B)
                Et[t, t, :] += k_e_r[None, :]
                Et[t, :, t] += k_e_r[None, :]
                Et[t, t, t] -= k_e_r  # diagonal added twice
                St[t, t, :] += k_w_r[None, :]
                St[t, :, t] += k_w_r[None, :]
                St[t, t, t] -= k_w_r
                sizes_t = np.repeat(s0[None], B, 0)
                sizes_t[t, t] += 1
                Np_t = sizes_t[:, :, None] * sizes_t[:, None, :]
                Np_t[:, np.arange(B), np.arange(B)] = sizes_t * (sizes_t - 1) / 2
                ll = _block_loglik(Et, St, Np_t)
                best_t = int(np.argmax(ll))
                if best_t != r and ll[best_t] > ll[r] + 1e-10:
                    z[i] = best_t
                    E, S, sizes = Et[best_t], St[best_t], sizes_t[best_t]
                    moved += 1
            if not moved:
                break
        ll = float(_block_loglik(E, S, _pairs(sizes)))
        if ll > best_ll:
            best_ll, best_z = ll, z.copy()
    return best_z, best_ll


def _relabel(z):
    _, inv = np.unique(z, return_inverse=True)
    order = np.argsort([np.flatnonzero(inv == k)[0] for k in range(inv.max() + 1)])
    lut = np.empty_like(order)
    lut[order] = np.arange(order.size)
    return lut[inv]


def weighted_sbm(W, *, n_blocks=None, degree_corrected="auto", n_init=2, seed=0,
                 return_info=False, verbose=None):
    """Communities of a weighted graph by a stochastic block model with exponential weights.

    Model: every pair of nodes in blocks (r, s) is linked with probability p_rs, and a
    link's weight is exponential with block-pair rate lambda_rs. The degree-corrected
    variant divides every weight by theta_i theta_j (theta = node strength / mean strength),
    the non-corrected one does not. For every candidate number of blocks B, the partition
    maximising the likelihood is searched (spectral start + greedy node moves, ``n_init``
    starts), and the description length

        DL = -log L + (n_params / 2) log(n_pairs) + N log B (+ N log N for theta)

    (a BIC-style two-part code) picks B and, with ``degree_corrected="auto"``, the variant.
    This is not graph-tool's nested microcanonical SBM (which the paper used; not on PyPI)
    but fits the same family of models.

    Parameters
    ----------
    W : array-like of shape (N, N) | xarray.DataArray
        Symmetric non-negative weights; zeros are absent edges; the diagonal is ignored.
    n_blocks : int | sequence of int | None
        The number of blocks, candidates to choose from, or None for 1..min(10, N // 2)
        (the scan stops once the description length has risen twice in a row).
    degree_corrected : bool | "auto"
        Use the degree-corrected model, the plain one, or choose by description length.
    n_init : int
        Starts per B (k-means on the spectral embedding with different seeds).
    seed : int
        Random seed.
    return_info : bool
        Also return a dict with the description length per (B, variant) and the choices.
    verbose : bool | str | int, optional
        Log level for this call.

    Returns
    -------
    labels : ndarray of int, shape (N,)
        Block of every node, numbered by first appearance.
    info : dict, only with ``return_info``
    """
    with use_log_level(verbose):
        W = _square_weights(W)
        N = W.shape[0]
        if n_blocks is None:
            cands = list(range(1, max(1, min(10, N // 2)) + 1))
        elif isinstance(n_blocks, numbers.Integral):
            cands = [check_positive_int("n_blocks", n_blocks)]
        else:
            cands = sorted({check_positive_int("n_blocks", b) for b in n_blocks})
        if not cands or max(cands) > N:
            raise NeurofmError(f"n_blocks must be between 1 and the number of nodes ({N}); "
                               f"got {n_blocks!r}")
        if degree_corrected not in (True, False, "auto"):
            raise NeurofmError(f"degree_corrected must be True, False or 'auto'; got "
                               f"{degree_corrected!r}")
        if not (W > 0).any():
            raise DataError("W has no edges (all weights are 0)")
        n_init = check_positive_int("n_init", n_init)
        A = (W > 0).astype(float)
        n_pairs = N * (N - 1) / 2
        variants = [False, True] if degree_corrected == "auto" else [bool(degree_corrected)]
        rng = np.random.default_rng(seed)
        dl = {}
        best = (np.inf, None, None, None)
        for dc in variants:
            if dc:
                s = W.sum(1)
                theta = s / s[s > 0].mean()
                theta[theta == 0] = 1.0
                Wm = W / np.outer(theta, theta)
                jac = -np.sum(np.log(np.outer(theta, theta))[np.triu_indices(N, 1)]
                              * A[np.triu_indices(N, 1)])
            else:
                Wm, jac = W, 0.0
            worse = 0
            for B in cands:
                if worse >= 2:  # the description length rose twice in a row: stop
                    break
                z, ll = _sbm_fit_B(A, Wm, B, rng, n_init)
                k = B * (B + 1)  # p_rs and lambda_rs per block pair
                desc = -(ll + jac) + 0.5 * k * np.log(n_pairs) + N * np.log(B)
                if dc:
                    desc += 0.5 * N * np.log(n_pairs)
                prev = dl.get((B - 1, dc))
                worse = worse + 1 if prev is not None and desc > prev else 0
                dl[(B, dc)] = float(desc)
                logger.info("weighted_sbm: B=%d degree_corrected=%s DL=%.2f", B, dc, desc)
                if desc < best[0]:
                    best = (desc, z, B, dc)
        labels = _relabel(best[1])
        if return_info:
            return labels, {"description_length": dl, "n_blocks": int(labels.max() + 1),
                            "degree_corrected": best[3]}
        return labels


def leiden(W, resolution=1.0, *, seed=0, n_iterations=-1):
    """Communities by the Leiden algorithm (leidenalg; RB-configuration modularity).

    A fast alternative to :func:`weighted_sbm`, not equivalent to it (modularity with a
    resolution parameter instead of a generative model).

    Parameters
    ----------
    W : array-like of shape (N, N) | xarray.DataArray
        Symmetric non-negative weights (diagonal ignored).
    resolution : float
        Resolution parameter (larger: more, smaller communities).
    seed : int
        Random seed.
    n_iterations : int
        Leiden iterations (-1: until stable).

    Returns
    -------
    ndarray of int, shape (N,)
        Community of every node, numbered by first appearance.
    """
    try:
        import igraph as ig
        import leidenalg
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("leiden needs leidenalg and igraph: pip install leidenalg "
                          "(or neurofm[test])") from err
    W = _square_weights(W)
    resolution = check_positive("resolution", resolution)
    iu, ju = np.nonzero(np.triu(W, 1))
    g = ig.Graph(n=W.shape[0], edges=list(zip(iu.tolist(), ju.tolist())))
    g.es["weight"] = W[iu, ju].tolist()
    part = leidenalg.find_partition(g, leidenalg.RBConfigurationVertexPartition,
                                    weights="weight", resolution_parameter=resolution,
                                    seed=int(seed), n_iterations=n_iterations)
    return _relabel(np.asarray(part.membership))


# ------------------------------------------------------------------- whole pipeline
@dataclass
class DynamicConnectome:
    """Result of :func:`dynamic_connectome`.

    Attributes
    ----------
    temporal : xarray.DataArray (time, component)
        Temporal factors scaled by the component weights.
    animal : xarray.DataArray (animal, component)
        Unit-norm animal loadings.
    affinity : xarray.DataArray (component, neuron, neuron_to)
        Per-component N x N affinity matrices (unit-norm pair factor, zero diagonal).
    communities : xarray.DataArray (component, neuron)
        Community label of every neuron in every component.
    model : NonNegativeCP
        The fitted decomposition (``reconstruction_error_``, ``factors_``, ...).
    tensor : xarray.DataArray (time, animal, pair)
        The affinity tensor that was decomposed.
    events : pandas.DataFrame
        Stimulus periods (onset, duration, description) from the first recording, in seconds
        from its start.
    """

    temporal: xr.DataArray
    animal: xr.DataArray
    affinity: xr.DataArray
    communities: xr.DataArray
    model: NonNegativeCP = field(repr=False)
    tensor: xr.DataArray = field(repr=False)
    events: object = field(default=None, repr=False)

    def plot_temporal(self, ax=None):
        """Temporal factors with the stimulus periods shaded; returns the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 3))
        t = self.temporal["time"].values
        for k in range(self.temporal.sizes["component"]):
            ax.plot(t, self.temporal.isel(component=k), lw=0.9, label=f"component {k}")
        if self.events is not None and len(self.events):
            for _, ev in self.events.iterrows():
                ax.axvspan(ev["onset"], ev["onset"] + ev["duration"], color="0.85", zorder=0)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("temporal factor")
        ax.legend(frameon=False, fontsize=7)
        return ax

    def plot_affinity(self, component=0, ax=None):
        """The component's affinity matrix with neurons ordered by community."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4, 4))
        lab = self.communities.isel(component=component).values
        order = np.argsort(lab, kind="stable")
        M = self.affinity.isel(component=component).values[np.ix_(order, order)]
        ax.imshow(M, cmap="viridis", interpolation="nearest")
        names = self.affinity["neuron"].values[order]
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=5)
        ax.set_yticks(range(len(names)), names, fontsize=5)
        edges = np.flatnonzero(np.diff(lab[order])) + 0.5
        for e in edges:
            ax.axhline(e, color="w", lw=0.6)
            ax.axvline(e, color="w", lw=0.6)
        ax.set_title(f"component {component}")
        return ax

    def plot_animals(self, ax=None):
        """Animal loadings per component (heat map); returns the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4, 3))
        ax.imshow(self.animal.values, aspect="auto", cmap="magma")
        ax.set_yticks(range(self.animal.sizes["animal"]), self.animal["animal"].values)
        ax.set_xlabel("component")
        return ax


def dynamic_connectome(recordings, *, rank, neurons=None, sfreq=None,
                       method="derivative_product", smooth_s=0.5, window_s=5.0, n_seeds=3,
                       n_iter_max=300, tol=1e-7, random_state=0, community="sbm",
                       n_blocks=None, resolution=1.0, backend="numpy", device=None,
                       dtype="float32", verbose=None):
    """Dynamic connectome: affinities -> non-negative CP -> communities per component.

    Parameters
    ----------
    recordings : sequence | dict of xarray.Dataset
        Canonical calcium recordings, one per animal (see :func:`affinity_tensor`).
    rank : int
        Number of NTF components (see :func:`select_rank`).
    neurons, sfreq, method, smooth_s, window_s
        Passed to :func:`affinity_tensor`.
    n_seeds : int
        Random starts; the lowest-error decomposition is kept.
    n_iter_max, tol, backend, device, dtype
        Passed to :class:`NonNegativeCP`.
    random_state : int
        First seed.
    community : {"sbm", "leiden"}
        :func:`weighted_sbm` (with ``n_blocks``) or :func:`leiden` (with ``resolution``).
    verbose : bool | str | int, optional
        Log level for this call.

    Returns
    -------
    DynamicConnectome
    """
    import pandas as pd
    from scipy.spatial.distance import squareform

    with use_log_level(verbose):
        check_option("community", community, ("sbm", "leiden"))
        rank = check_positive_int("rank", rank)
        n_seeds = check_positive_int("n_seeds", n_seeds)
        tensor = affinity_tensor(recordings, neurons=neurons, sfreq=sfreq, method=method,
                                 smooth_s=smooth_s, window_s=window_s)
        model = None
        for s in range(n_seeds):
            m = NonNegativeCP(rank, n_iter_max=n_iter_max, tol=tol, random_state=random_state + s,
                              backend=backend, device=device, dtype=dtype).fit(tensor)
            if model is None or m.reconstruction_error_ < model.reconstruction_error_:
                model = m
        ft, fw, fa = model.factors_
        comp = np.arange(rank)
        names = list(tensor.attrs["neurons"])
        mats = np.stack([squareform(fa[:, k]) for k in range(rank)])  # (R, N, N)
        labels = np.stack([
            weighted_sbm(mats[k], n_blocks=n_blocks, seed=random_state) if community == "sbm"
            else leiden(mats[k], resolution, seed=random_state) for k in range(rank)])
        events = None
        first_rec = (list(recordings.values()) if isinstance(recordings, dict)
                     else list(recordings))[0]
        if "event_onset" in first_rec:
            t0 = float(first_rec["time"].values[0])
            events = pd.DataFrame({
                "onset": first_rec["event_onset"].values - t0,
                "duration": first_rec["event_duration"].values,
                "description": first_rec["event_description"].values})
        return DynamicConnectome(
            temporal=xr.DataArray(ft * model.weights_, dims=("time", "component"),
                                  coords={"time": tensor["time"].values, "component": comp}),
            animal=xr.DataArray(fw, dims=("animal", "component"),
                                coords={"animal": tensor["animal"].values, "component": comp}),
            affinity=xr.DataArray(mats, dims=("component", "neuron", "neuron_to"),
                                  coords={"component": comp, "neuron": names,
                                          "neuron_to": names}),
            communities=xr.DataArray(labels, dims=("component", "neuron"),
                                     coords={"component": comp, "neuron": names}),
            model=model, tensor=tensor, events=events)
