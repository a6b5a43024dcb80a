"""Brain gradients for gradient positioning: group FC -> diffusion-map embedding.

Follows BrainSpace's ``GradientMaps(approach="dm", kernel="normalized_angle",
sparsity=0.9)`` (Vos de Wael et al., 2020), the toolbox Brain-JEPA's README names for its
unreleased 450 x 30 gradient file.
"""

from __future__ import annotations

import os

import numpy as np

from .._logging import warn
from ..errors import DataError, NeurofmError

__all__ = ["KERNELS", "SOLVERS", "affinity", "compute_gradients", "diffusion_map", "group_fc"]

KERNELS = ("normalized_angle", "cosine")
SOLVERS = ("exact", "brainspace")


def _check_fc(fc):
    x = np.asarray(fc, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != x.shape[1] or x.shape[0] < 3:
        raise DataError(f"fc must be a square matrix (n_rois, n_rois) with n_rois >= 3; got "
                        f"shape {x.shape}")
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[:5].tolist()
        raise DataError(f"fc contains NaN or infinite values (e.g. at {bad})")
    return x


def affinity(fc, *, kernel="normalized_angle", sparsity=0.9):
    """Affinity matrix of connectivity profiles (BrainSpace ``compute_affinity``).

    Each row keeps its ``int(n * (1 - sparsity))`` largest values (zeros elsewhere); the
    kernel compares the sparsified rows: cosine similarity, or the normalized angle
    ``1 - arccos(cos) / pi``; negative values are zeroed.

    Parameters
    ----------
    fc : array of shape (n_rois, n_rois)
    kernel : {"normalized_angle", "cosine"}
    sparsity : float in [0, 1)
        Fraction of each row set to zero (0 keeps everything).

    Returns
    -------
    a : array of shape (n_rois, n_rois)
        Symmetric, non-negative.
    """
    x = _check_fc(fc)
    if kernel not in KERNELS:
        raise NeurofmError(f"kernel must be one of {KERNELS}; got {kernel!r}")
    if not 0.0 <= float(sparsity) < 1.0:
        raise NeurofmError(f"sparsity must be in [0, 1); got {sparsity!r}")
    n = x.shape[1]
    if sparsity > 0:
        k = int(n * (1.0 - sparsity))
        if k < 1:
            raise NeurofmError(f"sparsity={sparsity} keeps no element of rows of length {n}")
        top = np.argpartition(x, n - k, axis=1)[:, -k:]  # (n, k) largest per row
        rows = np.arange(n)[:, None]
        sparse = np.zeros_like(x)
        sparse[rows, top] = x[rows, top]
        x = sparse
    norms = np.linalg.norm(x, axis=1)
    norms[norms == 0] = 1.0
    unit = x / norms[:, None]
    a = unit @ unit.T
    if kernel == "normalized_angle":
        a = 1.0 - np.arccos(np.clip(a, -1.0, 1.0)) / np.pi
    a[a < 0] = 0.0
    return 0.5 * (a + a.T)


def diffusion_map(a, *, n_components=30, alpha=0.5, solver="exact", random_state=0):
    """Diffusion-map embedding with automatic (multi-scale) diffusion time.

    ``W = D^-alpha A D^-alpha``, ``P = D_W^-1 W``; the non-trivial eigenvectors of P, each
    normalized so that the trivial one is all ones and scaled by ``lambda / (1 - lambda)``;
    the sign of each component makes its largest-magnitude entry positive.

    Parameters
    ----------
    a : array of shape (n, n)
        Symmetric non-negative affinity.
    n_components : int
    alpha : float in [0, 1]
        Anisotropic diffusion parameter (0.5: Fokker-Planck).
    solver : {"exact", "brainspace"}
        ``"exact"``: eigendecomposition of the symmetric conjugate of P (exact right
        eigenvectors). ``"brainspace"``: BrainSpace's call, ARPACK ``eigsh`` on the
        non-symmetric P from a random start vector, which only approximates them (on
        generated FC: column correlations above 0.99, differences up to a few % of the
        gradient range); use it to reproduce BrainSpace output.
    random_state : int
        Start vector seed of the ``"brainspace"`` solver.

    Returns
    -------
    gradients : array of shape (n, n_components)
    lambdas : array of shape (n_components,)
        Scaled eigenvalues ``lambda / (1 - lambda)``, descending.
    """
    a = np.array(a, dtype=np.float64)
    n = a.shape[0]
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) \
            or not 1 <= n_components < n - 1:
        raise NeurofmError(f"n_components must be an integer in [1, n_rois - 2 = {n - 2}]; "
                           f"got {n_components!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise NeurofmError(f"alpha must be in [0, 1]; got {alpha!r}")
    if solver not in SOLVERS:
        raise NeurofmError(f"solver must be one of {SOLVERS}; got {solver!r}")
    if np.any(a.sum(axis=1) <= 0):
        raise DataError("affinity has rows without any positive entry (isolated ROIs)")
    from scipy.sparse.csgraph import connected_components

    if connected_components(a > 0, directed=False)[0] > 1:
        warn("the affinity graph is not connected: the first gradients will separate its "
             "components")
    if alpha > 0:
        d = a.sum(axis=1) ** -alpha
        a *= d[:, None] * d[None, :]
    deg = a.sum(axis=1)
    k = int(n_components) + 1
    if solver == "exact":
        s = a / np.sqrt(deg[:, None] * deg[None, :])  # D^-1/2 W D^-1/2, symmetric
        from scipy.linalg import eigh

        w, u = eigh(s, subset_by_index=[n - k, n - 1])
        w, u = w[::-1], u[:, ::-1]
        v = u / np.sqrt(deg)[:, None]  # right eigenvectors of P
    else:
        from scipy.sparse.linalg import eigsh

        p = a / deg[:, None]
        v0 = np.random.RandomState(random_state).uniform(-1, 1, n)
        w, v = eigsh(p, k=k, which="LM", tol=0, v0=v0)
        w, v = w[::-1], v[:, ::-1]
    v = v / v[:, [0]]
    w = w / w[0]
    w, v = w[1:], v[:, 1:]
    w = w / (1.0 - w)
    v = v * w[None, :]
    v *= np.sign(v[np.abs(v).argmax(axis=0), np.arange(v.shape[1])])
    return v, w


def compute_gradients(fc, n_components=30, kernel="normalized_angle", sparsity=0.9, alpha=0.5,
                      *, solver="exact", random_state=0, return_lambdas=False):
    """Brain gradients of a group functional-connectivity matrix.

    BrainSpace-compatible: ``GradientMaps(n_components, approach="dm", kernel=kernel)
    .fit(fc, sparsity=sparsity)`` (diffusion maps, ``alpha``, automatic diffusion time);
    see :func:`affinity` and :func:`diffusion_map`.

    Parameters
    ----------
    fc : array of shape (n_rois, n_rois)
        Group FC (e.g. :func:`group_fc`), rows in the model's ROI order.
    n_components : int
        k, the gradient count (30 in Brain-JEPA).
    kernel : {"normalized_angle", "cosine"}
    sparsity : float
        Fraction of each FC row zeroed before the kernel (0.9 keeps the top 10 %).
    alpha : float
        Diffusion-map anisotropy.
    solver : {"exact", "brainspace"}
        See :func:`diffusion_map`.
    random_state : int
        Seed of the ``"brainspace"`` solver.
    return_lambdas : bool
        Also return the scaled eigenvalues.

    Returns
    -------
    gradients : float64 array of shape (n_rois, n_components)
        Column j is gradient j + 1 (decreasing eigenvalue), scaled by ``lambda / (1 -
        lambda)``; signs fixed (largest-magnitude entry positive). Pass it to
        ``BrainJEPA(gradients=...)``.
    lambdas : array of shape (n_components,)
        Only with ``return_lambdas``.
    """
    a = affinity(fc, kernel=kernel, sparsity=sparsity)
    g, lam = diffusion_map(a, n_components=n_components, alpha=alpha, solver=solver,
                           random_state=random_state)
    return (g, lam) if return_lambdas else g


def group_fc(store, split="train", *, recordings=None, channels=None):
    """Mean Fisher-z functional connectivity over a store's recordings.

    Parameters
    ----------
    store : str | os.PathLike | neurofm.store.Store
    split : str | None
        Manifest split whose recordings are averaged (None: all recordings).
    recordings : list of str, optional
        Explicit recording ids (overrides ``split``).
    channels : list of str, optional
        Channel (ROI) names and order; default the first recording's. Every recording must
        contain them.

    Returns
    -------
    fc : float64 array of shape (n_rois, n_rois)
        ``tanh(mean_i(arctanh(r_i)))`` of the Pearson correlations r_i of each recording's
        ``signal`` (channel x time), with a unit diagonal. Pairs that are undefined in a
        recording (a constant ROI) are left out of its mean.
    channels : list of str
        The ROI order of ``fc``.
    """
    from ..store import open_store

    if isinstance(store, (str, os.PathLike)):
        store = open_store(store)
    manifest = store.manifest
    if recordings is not None:
        ids = list(recordings)
        unknown = [r for r in ids if r not in set(manifest["id"])]
        if unknown:
            raise DataError(f"group_fc: recordings {unknown[:5]} are not in {store.path}")
    elif split is None:
        ids = list(manifest["id"])
    else:
        ids = list(manifest.loc[manifest["split"] == split, "id"])
        if not ids:
            found = sorted({str(s) for s in manifest["split"]})
            raise DataError(f"group_fc: no recording with split {split!r} in {store.path} "
                            f"(splits found: {found})")
    total, count = None, None
    for rec_id in ids:
        ds = store.open(rec_id)
        names = [str(c) for c in ds["channel"].values]
        if channels is None:
            channels = names
        pos = {c: i for i, c in enumerate(names)}
        missing = [c for c in channels if c not in pos]
        if missing:
            raise DataError(f"group_fc: recording {rec_id!r} lacks channels {missing[:5]} "
                            f"({len(missing)} of {len(channels)})")
        x = np.asarray(ds["signal"].values, dtype=np.float64)[[pos[c] for c in channels]]
        if x.shape[1] < 3:
            raise DataError(f"group_fc: recording {rec_id!r} has {x.shape[1]} samples")
        x = x - x.mean(axis=1, keepdims=True)
        sd = np.sqrt((x * x).sum(axis=1))
        ok = sd > 0
        x[ok] /= sd[ok, None]
        r = np.clip(x @ x.T, -1 + 1e-7, 1 - 1e-7)
        z = np.arctanh(r)
        valid = ok[:, None] & ok[None, :]
        if total is None:
            total, count = np.zeros_like(z), np.zeros(z.shape, dtype=np.int64)
        total += np.where(valid, z, 0.0)
        count += valid
    if np.any(count == 0):
        bad = [channels[i] for i in np.flatnonzero((count == 0).all(axis=1))][:5]
        raise DataError(f"group_fc: some ROI pairs are constant in every recording (ROIs {bad})")
    fc = np.tanh(total / count)
    np.fill_diagonal(fc, 1.0)
    return fc, list(channels)
