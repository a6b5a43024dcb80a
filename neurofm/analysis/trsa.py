"""Topological RSA (tRSA; Lin & Kriegeskorte, PNAS 2024), METHODS.md section 7.

The geo-topological (GT) transform makes an RDM sensitive to topology rather than geometry:
per RDM, distances are rank-transformed and scaled to [0, 1], then everything below the
``lower`` quantile becomes 0 ("same place"), everything above ``upper`` becomes 1 ("far")
and the band in between is stretched linearly. Geodesic transforms (RGDMs) go one step
further and replace distances by shortest-path lengths on a neighbourhood graph.
Representations are then compared by how well their RDMs identify brain regions (or network
layers) across subjects: leave-one-subject-out nearest-centroid identification.

Differences from the reference implementations (documented in METHODS.md):

- the GT transform is computed per RDM, with the rank step (the original code); rsatoolbox's
  pooled, no-rank ``geotopological_transform`` is available as ``method="rsatoolbox"`` for
  cross-checking (without its saturation bug for u-quantiles < 1, and never in place);
- geodesic graphs keep zero-weight edges by default (``zero_is_edge=True``); the reference
  code builds graphs with networkx, which drops them, so the closest pairs lose their direct
  edge. ``zero_is_edge=False`` reproduces that.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import scipy.stats
import xarray as xr
from scipy.sparse.csgraph import csgraph_from_dense, shortest_path

from .._checks import check_option, check_positive_int, check_unit_interval
from .._logging import progress
from ..errors import DataError, NeurofmError
from ._rdm_utils import (
    PAIR_DIM,
    as_rdm_stack,
    sample_vectors,
    to_square_dataarray,
    triu_indices,
    vectors_to_squares,
)

__all__ = [
    "RGTM_FAMILIES",
    "IdentificationBootstrap",
    "bootstrap_identification",
    "geodesic_transform",
    "gt_transform",
    "identification_grid",
    "identify",
    "rgtm_family",
    "sample_rgtm",
]

GT_METHODS = ("lin2024", "rsatoolbox", "sigmoid")
GEODESIC_VARIANTS = ("twostep", "p_shortest", "k_nearest", "p_nearest")
RGTM_FAMILIES = ("local", "global", "geometry", "topology", "intermediate")
#: Tolerance of the family boundaries, as in the reference code (utils_analysis.check_gt).
_FAMILY_TOL = 1e-3


# --------------------------------------------------------------------------------------
# helpers


def _minmax(v):
    lo, hi = np.nanmin(v), np.nanmax(v)
    if not hi > lo:
        raise DataError("rdm: the RDM is constant (all dissimilarities equal); its rank "
                        "transform is undefined")
    return (v - lo) / (hi - lo)


def _rank_minmax(v):
    """minmax(rankdata(v, 'average')) of the finite entries of one vector; NaN kept."""
    out = np.full(v.shape, np.nan)
    ok = np.isfinite(v)
    if ok.sum() < 2:
        raise DataError(f"rdm: need at least 2 finite dissimilarities; got {int(ok.sum())}")
    out[ok] = _minmax(scipy.stats.rankdata(v[ok]))
    return out


def _clip_band(d, lo, hi):
    if hi > lo:
        return np.clip((d - lo) / (hi - lo), 0.0, 1.0)
    # degenerate band (ties at the quantile): a step at the threshold, ties map to 0
    return np.where(np.isnan(d), np.nan, (d > lo).astype(float))


def _quantile_band(d, lower, upper):
    """The clipped linear band between the lower and upper quantiles of d's finite entries."""
    lo, hi = np.quantile(d[np.isfinite(d)], [lower, upper])
    return _clip_band(d, lo, hi)


def _check_lu(lower, upper):
    check_unit_interval("lower", lower, "a quantile level")
    check_unit_interval("upper", upper, "a quantile level")
    if not lower < upper:
        raise NeurofmError(f"lower must be < upper; got lower={lower}, upper={upper}")


def _like_input(x, stack, vectors, attrs_update):
    """Return ``vectors`` in the same form as the input ``x`` (never a view of it)."""
    if isinstance(x, xr.DataArray):
        attrs = dict(stack.attrs)
        attrs.update(attrs_update)
        if PAIR_DIM in x.dims:
            out = x.copy(data=(vectors[0] if stack.single else vectors).astype(float))
            out.attrs = attrs
            return out
        return to_square_dataarray(vectors, stack.labels, names=stack.names,
                                   stack_dim=stack.stack_dim, single=stack.single, attrs=attrs)
    arr = np.asarray(x)
    if arr.ndim >= 2 and arr.shape[-1] == arr.shape[-2] and (arr.ndim == 3 or stack.single):
        mats = vectors_to_squares(vectors)
        return mats[0] if stack.single else mats
    return vectors[0].copy() if stack.single else vectors.copy()


# --------------------------------------------------------------------------------------
# GT transform


def gt_transform(rdm, lower=0.2, upper=0.8, *, method="lin2024", alpha=10.0, beta=0.5):
    """Geo-topological transform of one RDM or of each RDM of a stack.

    ``"lin2024"`` (default; the original tRSA code), per RDM vector d::

        d  = minmax(rankdata(d, "average"))
        lo, hi = quantile(d, lower), quantile(d, upper)      # linear interpolation
        g  = clip((d - lo) / (hi - lo), 0, 1)

    Because of the rank step ``lower`` and ``upper`` act as quantile levels of the distance
    distribution. ``"rsatoolbox"``: no rank step and quantiles pooled over all RDMs of the
    input (rsatoolbox >= 0.2's ``geotopological_transform``, but without its saturation bug
    and never in place) - for cross-checking only. ``"sigmoid"``: 1 / (1 + exp(-alpha (d -
    beta))) after the rank and min-max step (``lower`` / ``upper`` are ignored).

    Parameters
    ----------
    rdm : xr.DataArray or ndarray
        One RDM (K, K) / (n_pairs,) or a stack (n, K, K) / (n, n_pairs); NaN entries stay
        NaN and are ignored by the ranks and quantiles. Never modified.
    lower, upper : float
        Quantile levels, 0 <= lower < upper <= 1 (defaults 0.2 and 0.8).
    method : {"lin2024", "rsatoolbox", "sigmoid"}
    alpha, beta : float
        Slope and centre of the sigmoid variant (reference defaults 10 and 0.5).

    Returns
    -------
    The transformed RDM(s), in the same form as ``rdm`` (values in [0, 1]).

    Notes
    -----
    When ties make the two quantiles equal, the band degenerates to a step: values above
    the quantile map to 1 and the tied values at it to 0 (the reference divides by zero).
    """
    check_option("method", method, GT_METHODS)
    if method != "sigmoid":
        _check_lu(lower, upper)
    stack = as_rdm_stack(rdm, "rdm")
    out = _gt_vectors(np.asarray(stack.vectors, dtype=np.float64), lower, upper, method,
                      alpha, beta)
    attrs = {"transform": f"gt_{method}", "gt_lower": float(lower), "gt_upper": float(upper)}
    return _like_input(rdm, stack, out, attrs)


def _gt_vectors(vecs, lower, upper, method="lin2024", alpha=10.0, beta=0.5):
    """GT transform of condensed vectors (n, n_pairs) -> new array."""
    out = np.empty_like(vecs)
    if method == "rsatoolbox":
        out[:] = _quantile_band(vecs, lower, upper)
        return out
    for i, v in enumerate(vecs):
        d = _rank_minmax(v)
        if method == "sigmoid":
            out[i] = 1.0 / (1.0 + np.exp(-alpha * (d - beta)))
        else:
            out[i] = _quantile_band(d, lower, upper)
    return out


# --------------------------------------------------------------------------------------
# geodesic transform


def _edge_weights(v, variant, lower, upper, p, k, zero_is_edge, knn_rule, n_cond):
    """Square weight matrix with +inf for non-edges (diagonal 0)."""
    if variant == "twostep":
        w = _minmax(_gt_vectors(v[None], lower, upper)[0])
        edge = w < 1.0
    else:
        w = _rank_minmax(v)
        if variant == "p_shortest":
            edge = w <= np.quantile(w, p)
        else:
            kk = k if variant == "k_nearest" else int(p * n_cond)
            edge = _knn_edges(w, kk, n_cond, zero_is_edge, knn_rule)
    if not zero_is_edge:
        edge &= w > 0
    weights = np.where(edge, w, np.inf)
    mat = vectors_to_squares(weights[None], n_cond)[0]
    np.fill_diagonal(mat, 0.0)
    return mat


def _knn_edges(w, kk, n_cond, zero_is_edge, knn_rule):
    """Pairs (i, j) where j is among i's kk nearest neighbours (ties: lower index first).

    knn_rule "symmetric": keep the pair if either end lists the other; "reference": keep
    pair (i < j) only if j is among i's neighbours (the original code's edge iteration).
    Without zero_is_edge, zero weights are not candidate neighbours (networkx drops them).
    """
    mat = vectors_to_squares(w[None], n_cond)[0]
    cand = mat.copy()
    np.fill_diagonal(cand, np.inf)
    if not zero_is_edge:
        cand[cand <= 0] = np.inf
    order = np.lexsort((np.broadcast_to(np.arange(n_cond), cand.shape), cand), axis=1)
    near = np.zeros((n_cond, n_cond), dtype=bool)
    rows = np.repeat(np.arange(n_cond), min(kk, n_cond - 1))
    cols = order[:, :min(kk, n_cond - 1)].ravel()
    valid = np.isfinite(cand[rows, cols])
    near[rows[valid], cols[valid]] = True
    iu, ju = triu_indices(n_cond)
    if knn_rule == "reference":
        return near[iu, ju]
    return near[iu, ju] | near[ju, iu]


def geodesic_transform(rdm, *, variant="twostep", lower=0.2, upper=0.8, p=0.05, k=1,
                       zero_is_edge=True, rank_after=True, finite=True,
                       knn_rule="symmetric"):
    """Geodesic (shortest-path) transform of RDMs on a neighbourhood graph (RGDM).

    Variants (edge weights w, graph edges):

    - ``"twostep"`` (the paper's RGDM): w = minmax(GT(d; lower, upper)); edges where w < 1;
    - ``"p_shortest"``: w = minmax(rank(d)); edges among the fraction ``p`` shortest;
    - ``"k_nearest"``: w = minmax(rank(d)); edges to each condition's ``k`` nearest;
    - ``"p_nearest"``: as k_nearest with k = int(p * n_conditions).

    Shortest paths use scipy's csgraph (Dijkstra / Floyd-Warshall) on the undirected graph;
    unreachable pairs get +inf.

    Parameters
    ----------
    rdm : xr.DataArray or ndarray
        One RDM or a stack (finite entries). Never modified.
    variant : str
    lower, upper : float
        GT quantile levels of ``twostep``.
    p : float in [0, 1]
        Edge fraction of ``p_shortest`` / neighbour fraction of ``p_nearest``.
    k : int
        Neighbours of ``k_nearest``.
    zero_is_edge : bool
        Keep zero-weight pairs as edges of length 0 (default). False reproduces the reference
        code (networkx drops zero weights, so the closest pairs lose their direct edge and
        get long geodesics).
    rank_after : bool
        Rank-transform the geodesic distances (the reference's default); +inf ranks last.
    finite : bool
        Replace +inf (disconnected pairs) by the largest finite value (the reference's
        ``finitemax`` before MDS / identification).
    knn_rule : {"symmetric", "reference"}
        kNN graph rule: an edge if either end lists the other (default), or the reference
        code's rule (pair i < j kept only if j is among i's neighbours).

    Returns
    -------
    The geodesic RDM(s), in the same form as ``rdm``.
    """
    check_option("variant", variant, GEODESIC_VARIANTS)
    check_option("knn_rule", knn_rule, ("symmetric", "reference"))
    if variant == "twostep":
        _check_lu(lower, upper)
    if variant in ("p_shortest", "p_nearest"):
        check_unit_interval("p", p, "a fraction")
    if variant == "k_nearest":
        check_positive_int("k", k)
    stack = as_rdm_stack(rdm, "rdm", allow_nan=False)
    n_cond = stack.n_cond
    if variant == "p_nearest" and int(p * n_cond) < 1:
        raise DataError(f"p: p_nearest uses k = int(p * n_conditions) = int({p} * {n_cond}) = "
                        f"0 neighbours, so the graph has no edges; increase p")
    out = np.empty(stack.vectors.shape)
    iu, ju = triu_indices(n_cond)
    for i, v in enumerate(np.asarray(stack.vectors, dtype=np.float64)):
        weights = _edge_weights(v, variant, lower, upper, p, k, zero_is_edge, knn_rule, n_cond)
        graph = csgraph_from_dense(weights, null_value=np.inf)
        geo = shortest_path(graph, directed=False)[iu, ju]
        if rank_after:
            geo = scipy.stats.rankdata(geo)
        if finite and np.isinf(geo).any():
            fin = geo[np.isfinite(geo)]
            if fin.size == 0:
                raise DataError(f"rdm: the {variant} graph has no edges, so every pair is "
                                f"disconnected; loosen its parameters")
            geo = np.where(np.isinf(geo), fin.max(), geo)
        out[i] = geo
    attrs = {"transform": f"geodesic_{variant}"}
    return _like_input(rdm, stack, out, attrs)


# --------------------------------------------------------------------------------------
# RGTM families


def rgtm_family(lower, upper):
    """Family of a GT transform with quantile levels (lower, upper).

    In this order (the reference code's, with its 1e-3 tolerance): ``"local"`` if
    mean(l, u) <= 0.2; ``"global"`` if mean(l, u) >= 0.8; ``"geometry"`` (geometry
    sensitive) if u - l >= 0.8; ``"topology"`` (topology sensitive) if l >= 0.4 and u <= 0.6;
    otherwise ``"intermediate"``.
    """
    check_unit_interval("lower", lower)
    check_unit_interval("upper", upper)
    if lower > upper:
        raise NeurofmError(f"lower must be <= upper; got lower={lower}, upper={upper}")
    mean = (lower + upper) / 2
    if mean <= 0.2 + _FAMILY_TOL:
        return "local"
    if mean >= 0.8 - _FAMILY_TOL:
        return "global"
    if upper - lower >= 0.8 - _FAMILY_TOL:
        return "geometry"
    if lower >= 0.4 - _FAMILY_TOL and upper <= 0.6 + _FAMILY_TOL:
        return "topology"
    return "intermediate"


def sample_rgtm(family, n, seed=0):
    """Draw ``n`` (lower, upper) pairs of one RGTM family by rejection sampling.

    As in the reference code: (l, u) ~ U(0, 1)^2, swapped so that l <= u, rejected if
    l + u <= 0.01 or >= 1.99, rounded to 2 decimals with u += 1e-5 (clipped to 1), and kept
    when :func:`rgtm_family` returns ``family``.

    Returns
    -------
    ndarray of shape (n, 2)
    """
    check_option("family", family, RGTM_FAMILIES)
    check_positive_int("n", n)
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        lo, up = np.sort(rng.uniform(size=2))
        if lo + up <= 1e-2 or lo + up >= 2 - 1e-2:
            continue
        lo, up = round(float(lo), 2), min(round(float(up), 2) + 1e-5, 1.0)
        if lo < up and rgtm_family(lo, up) == family:
            out.append((lo, up))
    return np.array(out)


# --------------------------------------------------------------------------------------
# identification


def _prepare(rdms, labels, groups):
    stack = as_rdm_stack(rdms, "rdms")
    if stack.single:
        raise DataError("rdms: identification needs a stack of RDMs (one per subject and "
                        "region); got one RDM")
    labels, groups = np.asarray(labels), np.asarray(groups)
    n = stack.n_rdm
    for name, arr in (("labels", labels), ("groups", groups)):
        if arr.shape != (n,):
            raise DataError(f"{name} must have one entry per RDM ({n}); got shape {arr.shape}")
    if len(np.unique(groups)) < 2:
        raise DataError(f"groups: leave-one-group-out needs at least 2 groups; got "
                        f"{len(np.unique(groups))}")
    if len(np.unique(labels)) < 2:
        raise DataError(f"labels: identification needs at least 2 labels; got "
                        f"{len(np.unique(labels))}")
    return stack, labels, groups


def _apply_transform(vecs, transform):
    if transform is None:
        return vecs
    if isinstance(transform, tuple) and len(transform) == 2:
        _check_lu(*transform)
        return _gt_vectors(vecs, transform[0], transform[1])
    if callable(transform):
        out = np.stack([np.asarray(transform(v.copy()), dtype=float) for v in vecs])
        if out.shape != vecs.shape:
            raise DataError(f"transform must return a vector of the same length "
                            f"({vecs.shape[1]}); got shape {out.shape[1:]}")
        return out
    raise NeurofmError(f"transform must be None, a (lower, upper) tuple or a callable; got "
                       f"{type(transform).__name__}")


def _handle_nan(vecs, nan_policy):
    """Drop entries that are NaN in any RDM, or mean-impute them ("mean"; entries NaN in
    every RDM are dropped, like scikit-learn's SimpleImputer)."""
    bad = ~np.isfinite(vecs)
    if not bad.any():
        return vecs
    keep = ~bad.all(axis=0) if nan_policy == "mean" else ~bad.any(axis=0)
    if keep.sum() == 0:
        raise DataError("rdms: every RDM entry is NaN in some RDM; nothing left to use")
    vecs, bad = vecs[:, keep], bad[:, keep]
    if nan_policy == "drop":
        return vecs
    col_mean = np.nanmean(vecs, axis=0)
    return np.where(bad, col_mean[None, :], vecs)


def _logo_accuracy(x, labels, groups):
    """Leave-one-group-out nearest-centroid (Euclidean) accuracy of rows of x."""
    correct = 0
    for g in np.unique(groups):
        test = groups == g
        train = ~test
        classes = np.unique(labels[train])
        cents = np.stack([x[train & (labels == c)].mean(axis=0) for c in classes])
        d2 = (x[test] ** 2).sum(1)[:, None] - 2 * x[test] @ cents.T + (cents ** 2).sum(1)
        pred = classes[np.argmin(d2, axis=1)]
        correct += int((pred == labels[test]).sum())
    return correct / len(labels)


def identify(rdms, labels, groups, *, transform=None, nan_policy="drop"):
    """Leave-one-group-out nearest-centroid identification accuracy of RDM labels.

    For each group (subject) g, the centroid of every label (brain region, network layer)
    is the mean RDM vector of the other groups' RDMs with that label; each of g's RDMs is
    assigned the label of the nearest centroid (Euclidean; ties go to the first label in
    sorted order, like scikit-learn's NearestCentroid). The accuracy is the fraction of
    correct assignments over all RDMs.

    Parameters
    ----------
    rdms : xr.DataArray or ndarray of shape (n_rdm, K, K) or (n_rdm, n_pairs)
    labels : array-like of shape (n_rdm,)
        What is identified (e.g. region of each RDM).
    groups : array-like of shape (n_rdm,)
        Left-out unit (e.g. subject of each RDM).
    transform : None, (lower, upper) or callable, optional
        Applied to each RDM vector first: a tuple means ``gt_transform(rdm, lower, upper)``;
        a callable maps a condensed vector (n_pairs,) to a vector of the same length.
    nan_policy : {"drop", "mean"}
        Entries that are NaN in any RDM are dropped (default) or replaced by the column mean.

    Returns
    -------
    float
        Accuracy in [0, 1]; chance is about 1 / n_labels.
    """
    check_option("nan_policy", nan_policy, ("drop", "mean"))
    stack, labels, groups = _prepare(rdms, labels, groups)
    vecs = _apply_transform(np.asarray(stack.vectors, dtype=float), transform)
    return _logo_accuracy(_handle_nan(vecs, nan_policy), labels, groups)


def identification_grid(rdms, labels, groups, step=0.05, *, nan_policy="drop", verbose=None):
    """Identification accuracy of GT-transformed RDMs over a grid of (lower, upper).

    Parameters
    ----------
    rdms, labels, groups
        As in :func:`identify`.
    step : float
        Grid spacing: lower in {0, step, ..., 1 - step}, upper in {step, ..., 1}.

    Returns
    -------
    xr.DataArray of shape (n_lower, n_upper)
        Dims ("lower", "upper"); NaN where upper <= lower. The (0, 1) cell is the accuracy
        of the rank-transformed RDMs.
    """
    check_option("nan_policy", nan_policy, ("drop", "mean"))
    if not isinstance(step, numbers.Real) or not 0 < step <= 0.5:
        raise NeurofmError(f"step must be in (0, 0.5]; got {step!r}")
    stack, labels, groups = _prepare(rdms, labels, groups)
    n_steps = round(1 / step)
    lowers = np.round(np.arange(n_steps) * step, 10)
    uppers = np.round(np.arange(1, n_steps + 1) * step, 10)
    uppers[-1] = min(uppers[-1], 1.0)
    # the rank step of the GT transform does not depend on (lower, upper): done once
    ranked = np.stack([_rank_minmax(v) for v in np.asarray(stack.vectors, dtype=float)])
    acc = np.full((len(lowers), len(uppers)), np.nan)
    cells = [(i, j) for i in range(len(lowers)) for j in range(len(uppers))
             if uppers[j] > lowers[i]]
    for i, j in progress(cells, verbose=verbose, desc="GT grid"):
        g = np.stack([_quantile_band(d, lowers[i], uppers[j]) for d in ranked])
        acc[i, j] = _logo_accuracy(_handle_nan(g, nan_policy), labels, groups)
    return xr.DataArray(acc, dims=("lower", "upper"), coords={"lower": lowers, "upper": uppers},
                        attrs={"measure": "identification accuracy", "step": float(step)})


@dataclass(frozen=True)
class IdentificationBootstrap:
    """Bootstrap distribution of an identification accuracy.

    Attributes
    ----------
    accuracy : float
        Accuracy on the full data.
    samples : ndarray of shape (n_boot,)
        Accuracy of each bootstrap sample (NaN for invalid samples).
    std : float
        Standard deviation of the valid samples (the bootstrap standard error).
    ci : tuple of float
        Percentile confidence interval at level ``ci_level``.
    ci_level : float
    """

    accuracy: float
    samples: np.ndarray
    std: float
    ci: tuple
    ci_level: float


def bootstrap_identification(rdms, labels, groups, *, transform=None, n_boot=1000, seed=0,
                             boot="both", ci=0.95, nan_policy="drop", verbose=None):
    """Bootstrap the identification accuracy over groups (subjects) and stimuli.

    ``transform`` is applied to the full RDMs first (as in the reference analysis); each
    sample then draws groups with replacement (all RDMs of a drawn group; copies of a group
    keep its id and are left out together) and/or stimuli with replacement (pairs of a
    stimulus with its own duplicate are NaN and handled by ``nan_policy``). The reference
    code resamples individual RDMs (sessions) instead of groups.

    Parameters
    ----------
    rdms, labels, groups, transform, nan_policy
        As in :func:`identify`.
    n_boot : int
    seed : int
    boot : {"both", "groups", "stimuli"}
    ci : float
        Confidence level of the percentile interval.

    Returns
    -------
    IdentificationBootstrap
    """
    check_option("boot", boot, ("both", "groups", "stimuli"))
    check_option("nan_policy", nan_policy, ("drop", "mean"))
    check_positive_int("n_boot", n_boot)
    stack, labels, groups = _prepare(rdms, labels, groups)
    n_cond = stack.n_cond
    vecs = _apply_transform(np.asarray(stack.vectors, dtype=float), transform)
    accuracy = _logo_accuracy(_handle_nan(vecs, nan_policy), labels, groups)
    rng = np.random.default_rng(seed)
    uniq_groups = np.unique(groups)
    samples = np.full(n_boot, np.nan)
    for b in progress(range(n_boot), verbose=verbose, desc="bootstrap"):
        if boot in ("both", "groups"):
            drawn = rng.choice(uniq_groups, size=len(uniq_groups), replace=True)
            rows = np.concatenate([np.flatnonzero(groups == g) for g in drawn])
        else:
            rows = np.arange(len(groups))
        if boot in ("both", "stimuli"):
            stim = np.sort(rng.integers(0, n_cond, n_cond))
        else:
            stim = np.arange(n_cond)
        if len(np.unique(groups[rows])) < 2 or len(np.unique(stim)) < 3:
            continue
        sample = sample_vectors(vecs, rows, stim, n_cond)
        try:
            samples[b] = _logo_accuracy(_handle_nan(sample, nan_policy), labels[rows],
                                        groups[rows])
        except DataError:
            continue
    valid = samples[np.isfinite(samples)]
    if valid.size < 2:
        raise DataError("bootstrap: fewer than 2 valid samples; use more groups or stimuli")
    cut = (1 - ci) / 2
    return IdentificationBootstrap(
        accuracy=float(accuracy), samples=samples, std=float(valid.std(ddof=1)),
        ci=(float(np.quantile(valid, cut)), float(np.quantile(valid, 1 - cut))), ci_level=ci)
