"""RDM comparators, pooling and noise ceilings on condensed vectors (METHODS.md section 6).

Vectors are (n_rdm, n_pairs) float arrays. Missing pairs are NaN and are handled pairwise:
two RDMs are compared on the entries that both have. Linear comparators (cosine, corr,
spearman, rho-a and the whitened corr_cov / cosine_cov) map every RDM to a unit-scale
embedding so that one matrix product compares all pairs; the Kendall variants count
concordant and discordant pairs with an O(n log n) merge count per pair.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import scipy.stats

from ..errors import DataError
from ._rdm_utils import n_cond_from_pairs, triu_indices

COMPARE_METHODS = ("cosine", "corr", "spearman", "rho-a", "tau-a", "kendall", "corr_cov",
                   "cosine_cov")
_LINEAR = ("cosine", "corr", "spearman", "rho-a", "corr_cov", "cosine_cov")
_TAU = ("tau-a", "kendall")
#: Fewest conditions an RDM comparison needs: with 2 conditions an RDM has one entry, so a
#: correlation is undefined and a cosine is only the product of two signs.
MIN_COMPARE_CONDITIONS = 3

try:  # compiled merge count of discordant pairs; private, so a public fallback is kept
    from scipy.stats._stats import _kendall_dis as _SCIPY_KENDALL_DIS
except ImportError:  # pragma: no cover - depends on the scipy version
    _SCIPY_KENDALL_DIS = None


def check_comparable(n_cond, method, name, what="comparing RDMs"):
    """Raise DataError unless RDMs with ``n_cond`` conditions can be compared by ``method``.

    Every comparator needs at least :data:`MIN_COMPARE_CONDITIONS` conditions (at least 3
    dissimilarities), so that all methods, cosine included, accept and refuse the same RDMs.
    """
    if n_cond < MIN_COMPARE_CONDITIONS:
        raise DataError(
            f"{name}: {what} with method {method!r} needs RDMs with at least "
            f"{MIN_COMPARE_CONDITIONS} conditions (at least 3 dissimilarities); got {n_cond} "
            f"conditions ({n_cond * (n_cond - 1) // 2} dissimilarity)")


# --------------------------------------------------------------------------------------
# embeddings for the linear comparators


def rank_rows(v):
    """Average ranks (1..n) of each row of a finite (m, n) array."""
    return scipy.stats.rankdata(v, axis=1)


def nan_rank_rows(v):
    """Average ranks of the finite entries of each row; NaN stays NaN."""
    ok = np.isfinite(v)
    if ok.all():
        return rank_rows(v)
    out = np.full(v.shape, np.nan)
    for i in range(v.shape[0]):
        out[i, ok[i]] = scipy.stats.rankdata(v[i, ok[i]])
    return out


def _unit(v):
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.sqrt(np.einsum("ij,ij->i", v, v))
        return v / norm[:, None]


def _pair_indicator(n_cond, keep=None):
    """Sparse (n_pairs, K) matrix with a 1 at both conditions of each pair."""
    iu, ju = triu_indices(n_cond)
    if keep is not None:
        iu, ju = iu[keep], ju[keep]
    n = len(iu)
    rows = np.concatenate([np.arange(n), np.arange(n)])
    cols = np.concatenate([iu, ju])
    return sp.csr_matrix((np.ones(2 * n), (rows, cols)), shape=(n, n_cond)), iu, ju


def cov_weight(v, n_cond, keep=None):
    """Whitened representation of RDM vectors (Diedrichsen et al. 2021, rsatoolbox's WUC).

    Each RDM d is mapped to the double-centred second moment G = -1/2 H D H (with a zero
    diagonal for D); off-diagonal entries of G are multiplied by sqrt(2) (each is stored
    once) and the K diagonal entries are appended. With missing pairs (``keep`` a boolean
    mask over pairs), the centring is the weighted least-squares projection on the
    available entries, as in rsatoolbox.

    Parameters
    ----------
    v : ndarray of shape (m, n_kept)
        RDM vectors restricted to the kept pairs.
    n_cond : int
    keep : ndarray of bool, shape (n_pairs,), optional

    Returns
    -------
    ndarray of shape (m, n_kept + n_cond)
    """
    m, n_kept = v.shape
    w = np.concatenate([-0.5 * v, np.zeros((m, n_cond))], axis=1)
    if keep is None or keep.all():
        ind, iu, ju = _pair_indicator(n_cond)
        row_sums = (ind.T @ (-0.5 * v).T).T  # (m, K): sum over each condition's pairs
        mean_c = row_sums / n_cond
        grand = 2.0 * (-0.5 * v).sum(axis=1, keepdims=True) / (n_cond * n_cond)
        off = -0.5 * v - mean_c[:, iu] - mean_c[:, ju] + grand
        diag = -2.0 * mean_c + grand
        w = np.concatenate([off, diag], axis=1)
    else:
        ind, _, _ = _pair_indicator(n_cond, keep)
        ext = sp.vstack([ind, sp.identity(n_cond, format="csr")]).toarray()
        weight = np.concatenate([np.full(n_kept, 0.5), np.ones(n_cond)])[:, None]
        gram = ext.T @ (weight * ext)
        proj = np.linalg.solve(gram, (weight * ext).T)  # (K, n_ext)
        w = w - (w @ ext) @ proj
    w[:, :n_kept] *= np.sqrt(2.0)
    return w


def embed(v, method, n_cond, keep=None):
    """Embedding E such that compare(a, b) = E(a) . E(b) for the linear methods."""
    if method == "cosine":
        return _unit(v)
    if method == "corr":
        return _unit(v - v.mean(axis=1, keepdims=True))
    if method == "spearman":
        r = rank_rows(v)
        return _unit(r - r.mean(axis=1, keepdims=True))
    if method == "rho-a":
        n = v.shape[1]
        r = rank_rows(v)
        return (r - r.mean(axis=1, keepdims=True)) * np.sqrt(12.0 / (n ** 3 - n))
    if method == "cosine_cov":
        return _unit(cov_weight(v, n_cond, keep))
    if method == "corr_cov":
        return _unit(cov_weight(v - v.mean(axis=1, keepdims=True), n_cond, keep))
    raise AssertionError(method)


# --------------------------------------------------------------------------------------
# Kendall tau-a / tau-b


class _RankInfo:
    """Dense ranks, tie counts and sort orders of the rows of a finite (m, n) array."""

    def __init__(self, v):
        m, n = v.shape
        self.n = n
        self.dense = np.empty((m, n), dtype=np.intp)
        self.order = np.empty((m, n), dtype=np.intp)
        self.ties = np.zeros(m, dtype=np.int64)
        for i in range(m):
            order = np.argsort(v[i], kind="mergesort")
            sv = v[i][order]
            new = np.r_[True, sv[1:] != sv[:-1]]
            dense_sorted = new.cumsum(dtype=np.intp)
            self.dense[i, order] = dense_sorted
            self.order[i] = order
            cnt = np.diff(np.r_[np.flatnonzero(new), n])
            self.ties[i] = int((cnt * (cnt - 1) // 2).sum())


def _discordant(x_sorted, y):
    """Strictly discordant pairs, x sorted ascending (dense ranks) and y dense ranks."""
    if _SCIPY_KENDALL_DIS is not None:
        return int(_SCIPY_KENDALL_DIS(np.ascontiguousarray(x_sorted), np.ascontiguousarray(y)))
    return _inversions(x_sorted, y)  # pragma: no cover - exercised by a monkeypatched test


def _inversions(x_sorted, y):
    """Count pairs k < l with y_k > y_l by a bottom-up merge count (numpy, O(n log^2 n)).

    Ties in x are sorted by y ascending by the caller, so they contribute no inversion.
    """
    seq = np.asarray(y, dtype=np.int64)
    n = len(seq)
    # unique ranks that keep position order among equal values (equal y never count)
    cur = np.empty(n, dtype=np.int64)
    cur[np.argsort(seq, kind="mergesort")] = np.arange(n)
    pos = np.arange(n)
    total = 0
    width = 1
    while width < n:
        block = pos // (2 * width)
        is_right = (pos % (2 * width)) >= width
        key = cur + block * n  # offsets keep blocks apart, so one global sort sorts blocks
        left, right = key[~is_right], key[is_right]
        less = np.searchsorted(left, right) - block[is_right] * width
        total += int((width - less).sum())
        cur = np.sort(key) - block * n
        width *= 2
    return total


def _tau_pair(ra, i, rb, j):
    """(concordant - discordant, ties in a, ties in b) for row i of ra and row j of rb."""
    n = ra.n
    xtie, ytie = int(ra.ties[i]), int(rb.ties[j])
    ntie = 0
    if xtie == 0:
        perm = ra.order[i]
        dis = _discordant(np.arange(1, n + 1, dtype=np.intp), rb.dense[j][perm])
    elif ytie == 0:
        perm = rb.order[j]
        dis = _discordant(np.arange(1, n + 1, dtype=np.intp), ra.dense[i][perm])
    else:
        key = ra.dense[i].astype(np.int64) * (n + 1) + rb.dense[j]
        perm = np.argsort(key, kind="mergesort")
        x = ra.dense[i][perm]
        y = rb.dense[j][perm]
        dis = _discordant(x, y)
        obs = np.r_[True, (x[1:] != x[:-1]) | (y[1:] != y[:-1]), True]
        cnt = np.diff(np.flatnonzero(obs)).astype(np.int64)
        ntie = int((cnt * (cnt - 1) // 2).sum())
    tot = n * (n - 1) // 2
    return tot - xtie - ytie + ntie - 2 * dis, xtie, ytie


def _tau_value(method, num, xtie, ytie, n):
    tot = n * (n - 1) // 2
    if method == "tau-a":
        return num / tot
    denom = np.sqrt(float(tot - xtie)) * np.sqrt(float(tot - ytie))
    return num / denom if denom > 0 else np.nan


def _tau_matrix(a, b, method):
    ra, rb = _RankInfo(a), _RankInfo(b)
    out = np.empty((a.shape[0], b.shape[0]))
    for i in range(a.shape[0]):
        for j in range(b.shape[0]):
            num, xt, yt = _tau_pair(ra, i, rb, j)
            out[i, j] = _tau_value(method, num, xt, yt, ra.n)
    return out


def _tau_paired(a, b, method):
    ra, rb = _RankInfo(a), _RankInfo(b)
    out = np.empty(a.shape[0])
    for i in range(a.shape[0]):
        num, xt, yt = _tau_pair(ra, i, rb, i)
        out[i] = _tau_value(method, num, xt, yt, ra.n)
    return out


# --------------------------------------------------------------------------------------
# comparisons with pairwise NaN handling


def _compare_finite(a, b, method, n_cond, keep, paired):
    if a.shape[1] < 2:
        return np.full(a.shape[0] if paired else (a.shape[0], b.shape[0]), np.nan)
    if method in _TAU:
        return _tau_paired(a, b, method) if paired else _tau_matrix(a, b, method)
    ea = embed(a, method, n_cond, keep)
    eb = embed(b, method, n_cond, keep)
    if paired:
        return np.einsum("ij,ij->i", ea, eb)
    return ea @ eb.T


def compare_vectors(a, b, method):
    """All pairwise comparisons of rows of a (m, n) and b (k, n) -> (m, k).

    NaN entries are handled pairwise: each pair of RDMs is compared on the entries that
    both have (rows with equal missingness patterns are compared in one batch).
    """
    n_cond = n_cond_from_pairs(a.shape[1])
    ok_a, ok_b = np.isfinite(a), np.isfinite(b)
    if ok_a.all() and ok_b.all():
        return _compare_finite(a, b, method, n_cond, None, paired=False)
    pat_a, inv_a = np.unique(ok_a, axis=0, return_inverse=True)
    pat_b, inv_b = np.unique(ok_b, axis=0, return_inverse=True)
    inv_a, inv_b = inv_a.ravel(), inv_b.ravel()
    out = np.empty((a.shape[0], b.shape[0]))
    for ga, mask_a in enumerate(pat_a):
        rows_a = np.flatnonzero(inv_a == ga)
        for gb, mask_b in enumerate(pat_b):
            rows_b = np.flatnonzero(inv_b == gb)
            keep = mask_a & mask_b
            out[np.ix_(rows_a, rows_b)] = _compare_finite(
                a[np.ix_(rows_a, keep)], b[np.ix_(rows_b, keep)], method, n_cond, keep,
                paired=False)
    return out


def compare_paired(a, b, method):
    """Row-by-row comparisons of a (m, n) and b (m, n) -> (m,), NaN handled pairwise."""
    n_cond = n_cond_from_pairs(a.shape[1])
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.all():
        return _compare_finite(a, b, method, n_cond, None, paired=True)
    pats, inv = np.unique(ok, axis=0, return_inverse=True)
    inv = inv.ravel()
    out = np.empty(a.shape[0])
    for g, keep in enumerate(pats):
        rows = np.flatnonzero(inv == g)
        out[rows] = _compare_finite(a[np.ix_(rows, keep)], b[np.ix_(rows, keep)], method,
                                    n_cond, keep, paired=True)
    return out


# --------------------------------------------------------------------------------------
# pooling and noise ceilings


def pooling_transform(v, method):
    """Per-RDM normalization whose mean is the best-scoring pooled RDM for ``method``.

    cosine / cosine_cov: divide by the root mean square; corr / corr_cov: z-score; rank
    methods: average ranks of the available entries (the Kendall variants use the same
    rank averaging, which is only an approximation of their optimum, as in rsatoolbox).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        if method in ("cosine", "cosine_cov"):
            return v / np.sqrt(np.nanmean(v ** 2, axis=1, keepdims=True))
        if method in ("corr", "corr_cov"):
            c = v - np.nanmean(v, axis=1, keepdims=True)
            return c / np.nanstd(c, axis=1, keepdims=True)
    return nan_rank_rows(v)


def _nanmean_rows(v):
    count = np.isfinite(v).sum(axis=0)
    total = np.nansum(v, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def pool_vectors(v, method):
    """The pooled RDM vector (n_pairs,) of a stack for a comparison method."""
    return _nanmean_rows(pooling_transform(v, method))


def noise_ceiling_finite(v, method, groups, n_cond, keep=None):
    """Noise ceiling of finite vectors (n, n_kept) (``keep``: kept pairs of the full RDM).

    All leave-one-group-out pools are formed at once from group sums, so the cost is a
    few embeddings and dot products instead of one comparison per group.
    """
    if v.shape[1] < 2:
        return np.nan, np.nan
    uniq, inv = np.unique(groups, return_inverse=True)
    inv = inv.ravel()
    n = v.shape[0]
    t = pooling_transform(v, method)
    ind = np.zeros((len(uniq), n))
    ind[inv, np.arange(n)] = 1.0
    sums = ind @ t
    sizes = ind.sum(axis=1)
    total = t.sum(axis=0)
    pools = (total[None, :] - sums) / (n - sizes)[:, None]
    pool_all = total / n
    if method in _TAU:
        lower_each = _tau_paired(pools[inv], v, method)
        upper_each = _tau_matrix(pool_all[None], v, method)[0]
    else:
        ev = embed(v, method, n_cond, keep)
        lower_each = np.einsum("ij,ij->i", embed(pools, method, n_cond, keep)[inv], ev)
        upper_each = ev @ embed(pool_all[None], method, n_cond, keep)[0]
    lower = np.mean(np.bincount(inv, lower_each) / sizes)
    upper = np.mean(np.bincount(inv, upper_each) / sizes)
    return float(lower), float(upper)


def noise_ceiling_vectors(v, method, groups=None):
    """Leave-one-group-out noise ceiling (lower, upper) of RDM vectors (n, n_pairs).

    upper = mean over groups of the mean over the group's RDMs of compare(pool(all), rdm);
    lower = the same with pool(all RDMs outside the group). ``groups`` defaults to one
    group per RDM; RDMs sharing a group (e.g. bootstrap copies of a subject) are left out
    together.
    """
    n = v.shape[0]
    groups = np.arange(n) if groups is None else np.asarray(groups)
    uniq, inv = np.unique(groups, return_inverse=True)
    inv = inv.ravel()
    if len(uniq) < 2:
        raise DataError(
            f"rdms: a noise ceiling needs RDMs from at least 2 subjects (groups); got "
            f"{len(uniq)}"
        )
    if method in _TAU:
        warnings.warn("noise ceiling for Kendall's tau pools RDMs by averaging ranks, which "
                      "only approximates the best pooled RDM", stacklevel=3)
    if np.isfinite(v).all():
        return noise_ceiling_finite(v, method, groups, n_cond_from_pairs(v.shape[1]))
    t = pooling_transform(v, method)
    ok = np.isfinite(t)
    total = np.where(ok, t, 0.0).sum(axis=0)
    count = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled_all = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        upper_each = compare_paired(np.broadcast_to(pooled_all, v.shape), v, method)
        lower_each = np.empty(n)
        for g in range(len(uniq)):
            members = inv == g
            tot_g = total - np.where(ok[members], t[members], 0.0).sum(axis=0)
            cnt_g = count - ok[members].sum(axis=0)
            pooled = np.where(cnt_g > 0, tot_g / np.maximum(cnt_g, 1), np.nan)
            lower_each[members] = compare_paired(
                np.broadcast_to(pooled, (members.sum(), v.shape[1])), v[members], method)
    lower = np.mean([np.mean(lower_each[inv == g]) for g in range(len(uniq))])
    upper = np.mean([np.mean(upper_each[inv == g]) for g in range(len(uniq))])
    return float(lower), float(upper)
