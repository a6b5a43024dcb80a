"""Containers and coercion for RDMs: square <-> condensed, labels, validation.

Every RSA / tRSA function accepts RDMs in several forms (a labelled square DataArray, a
stack of them, square ndarrays, condensed vectors) and works internally on one: a read-only
float array of condensed vectors in scipy ``squareform`` order, shape (n_rdm, n_pairs),
plus the condition labels. :func:`as_rdm_stack` does that conversion and all the checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from ..errors import DataError, NeurofmError

#: Dimension names of a square RDM DataArray. xarray does not support two dimensions with
#: the same name, so the column dimension is ``condition2``; both carry the same labels.
ROW_DIM = "condition"
COL_DIM = "condition2"
#: Default name of the stacking dimension of several RDMs.
STACK_DIM = "rdm"
#: Dimension of condensed (upper-triangle) RDM vectors.
PAIR_DIM = "pair"


@dataclass(frozen=True)
class RDMStack:
    """Condensed RDM vectors with their condition labels (internal representation).

    Attributes
    ----------
    vectors : ndarray of shape (n_rdm, n_pairs)
        Upper triangles in scipy squareform order; read-only, may share memory with the
        caller's array.
    labels : ndarray of shape (n_conditions,)
        Condition labels (``arange`` when the input had none).
    labels_given : bool
        Whether ``labels`` came from the input (DataArray coordinates).
    names : ndarray of shape (n_rdm,) or None
        Values of the stacking coordinate, when the input had one.
    single : bool
        True when the input was one RDM (results are then squeezed).
    stack_dim : str
        Name of the stacking dimension of the input (``"rdm"`` by default).
    attrs : dict
        The attrs of the input DataArray (empty otherwise).
    """

    vectors: np.ndarray
    labels: np.ndarray
    labels_given: bool
    names: np.ndarray | None
    single: bool
    stack_dim: str = STACK_DIM
    attrs: dict = field(default_factory=dict)

    @property
    def n_rdm(self):
        return self.vectors.shape[0]

    @property
    def n_cond(self):
        return self.labels.shape[0]

    def with_vectors(self, vectors, **changes):
        """A copy holding other vectors (same labels unless ``labels=`` is given)."""
        kwargs = {"vectors": vectors, "labels": self.labels,
                  "labels_given": self.labels_given, "names": self.names,
                  "single": self.single, "stack_dim": self.stack_dim,
                  "attrs": dict(self.attrs)}
        kwargs.update(changes)
        return RDMStack(**kwargs)


def n_cond_from_pairs(n_pairs, name="rdm"):
    """Number of conditions K such that K (K - 1) / 2 == n_pairs; raise otherwise."""
    k = round((1 + np.sqrt(1 + 8 * n_pairs)) / 2)
    if k * (k - 1) // 2 != n_pairs:
        raise DataError(
            f"{name}: a condensed RDM vector must have K(K-1)/2 entries for some number of "
            f"conditions K; got {n_pairs} entries"
        )
    return k


def _readonly(a):
    view = a.view()
    view.flags.writeable = False
    return view


def triu_indices(n_cond):
    """Row and column indices of the upper triangle (k=1) in squareform order."""
    return np.triu_indices(n_cond, 1)


def condensed_index(i, j, n_cond):
    """Condensed index of pair (i, j), i != j, in scipy squareform order (vectorized)."""
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    lo = np.minimum(i, j)
    hi = np.maximum(i, j)
    return n_cond * lo - lo * (lo + 1) // 2 + (hi - lo - 1)


def squares_to_vectors(mats):
    """(n, K, K) -> (n, K(K-1)/2) upper triangles (new array)."""
    k = mats.shape[-1]
    iu, ju = triu_indices(k)
    return mats[..., iu, ju]


def vectors_to_squares(vectors, n_cond=None, diagonal=0.0):
    """(n, n_pairs) -> (n, K, K) symmetric matrices with the given diagonal."""
    vectors = np.asarray(vectors)
    if n_cond is None:
        n_cond = n_cond_from_pairs(vectors.shape[-1])
    iu, ju = triu_indices(n_cond)
    out = np.zeros(vectors.shape[:-1] + (n_cond, n_cond), dtype=vectors.dtype)
    out[..., iu, ju] = vectors
    out[..., ju, iu] = vectors
    if diagonal != 0.0:
        idx = np.arange(n_cond)
        out[..., idx, idx] = diagonal
    return out


def _check_square(mats, name):
    """Symmetry and zero (or NaN) diagonal of (n, K, K) float matrices; raise DataError."""
    n_cond = mats.shape[-1]
    if n_cond < 2:
        raise DataError(f"{name}: an RDM needs at least 2 conditions; got {n_cond}")
    finite = np.isfinite(mats) | np.isnan(mats)
    if not finite.all():
        raise DataError(
            f"{name}: RDM entries must be finite or NaN (missing); found "
            f"{int((~finite).sum())} infinite entries"
        )
    scale = np.nanmax(np.abs(mats)) if np.isfinite(mats).any() else 1.0
    scale = scale if scale > 0 else 1.0
    tol = 1e-8 * scale
    diag = np.diagonal(mats, axis1=-2, axis2=-1)
    bad_diag = np.abs(np.nan_to_num(diag, nan=0.0)) > tol
    if bad_diag.any():
        raise DataError(
            f"{name}: an RDM must have a zero (or NaN) diagonal; found {int(bad_diag.sum())} "
            f"diagonal entries with |d_ii| > {tol:.3g} (largest {np.nanmax(np.abs(diag)):.3g})"
        )
    t = np.swapaxes(mats, -1, -2)
    nan_mismatch = np.isnan(mats) != np.isnan(t)
    diff = np.abs(np.nan_to_num(mats - t, nan=0.0))
    if nan_mismatch.any() or (diff > tol).any():
        raise DataError(
            f"{name}: an RDM must be symmetric; found asymmetric entries (largest "
            f"|d_ij - d_ji| = {diff.max():.3g}, {int(nan_mismatch.sum())} NaN mismatches)"
        )


def _labels_from_dataarray(da, name):
    labels = None
    for dim in (ROW_DIM, COL_DIM):
        if dim in da.coords:
            lab = np.asarray(da.coords[dim].values)
            if labels is None:
                labels = lab
            elif not np.array_equal(labels, lab):
                raise DataError(
                    f"{name}: the {ROW_DIM!r} and {COL_DIM!r} coordinates must hold the same "
                    f"labels in the same order; got {list(labels)[:5]}... and {list(lab)[:5]}..."
                )
    return labels


def as_rdm_stack(x, name="rdm", *, allow_nan=True, dtype=np.float64):
    """Convert any accepted RDM input to an :class:`RDMStack`; raise on bad input.

    Accepted inputs
    ---------------
    - xr.DataArray with dims (condition, condition2): one RDM;
    - xr.DataArray with dims (<stack>, condition, condition2): a stack;
    - xr.DataArray with dims (pair,) or (<stack>, pair): condensed vector(s), optionally with
      ``condition_i`` / ``condition_j`` coordinates on ``pair`` (as made by :func:`square`'s
      inverse and by the searchlight);
    - ndarray of shape (K, K): one square RDM (always read as a matrix, never as a stack);
    - ndarray of shape (n, K, K): a stack of square RDMs;
    - ndarray of shape (n_pairs,): one condensed vector;
    - ndarray of shape (n, n_pairs) with n_pairs != n: a stack of condensed vectors.
    """
    if isinstance(x, RDMStack):
        return x
    if isinstance(x, xr.Dataset):
        raise NeurofmError(
            f"{name} must be an RDM (xr.DataArray or ndarray); got an xr.Dataset - select its "
            f"RDM variable first"
        )
    if isinstance(x, xr.DataArray):
        return _from_dataarray(x, name, allow_nan, dtype)
    if isinstance(x, (str, bytes, dict)) or x is None:
        raise NeurofmError(
            f"{name} must be an RDM (xr.DataArray or array-like); got {type(x).__name__}"
        )
    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise DataError(f"{name} must be numeric array-like; could not convert: {err}") from None
    return _from_ndarray(arr, name, allow_nan)


def _from_ndarray(arr, name, allow_nan):
    if arr.ndim == 1:
        n_cond = n_cond_from_pairs(arr.shape[0], name)
        vectors, single = arr[None, :], True
    elif arr.ndim == 2 and arr.shape[0] == arr.shape[1]:
        _check_square(arr[None], name)
        vectors, single = squares_to_vectors(arr[None]), True
        n_cond = arr.shape[0]
    elif arr.ndim == 2:
        n_cond = n_cond_from_pairs(arr.shape[1], name)
        vectors, single = arr, False
    elif arr.ndim == 3:
        if arr.shape[1] != arr.shape[2]:
            raise DataError(
                f"{name}: a 3-D RDM stack must have shape (n_rdm, K, K); got {arr.shape}"
            )
        _check_square(arr, name)
        vectors, single = squares_to_vectors(arr), False
        n_cond = arr.shape[1]
    else:
        raise DataError(
            f"{name}: expected an RDM of shape (K, K), (n_pairs,), (n_rdm, K, K) or "
            f"(n_rdm, n_pairs); got an array of shape {arr.shape}"
        )
    if n_cond < 2:
        raise DataError(f"{name}: an RDM needs at least 2 conditions; got {n_cond}")
    _check_values(vectors, name, allow_nan)
    return RDMStack(vectors=_readonly(vectors), labels=np.arange(n_cond), labels_given=False,
                    names=None, single=single)


def _from_dataarray(da, name, allow_nan, dtype):
    dims = da.dims
    attrs = dict(da.attrs)
    if ROW_DIM in dims and COL_DIM in dims:
        other = [d for d in dims if d not in (ROW_DIM, COL_DIM)]
        if len(other) > 1:
            raise DataError(
                f"{name}: an RDM DataArray may have at most one dimension besides "
                f"{ROW_DIM!r} and {COL_DIM!r}; got dims {dims}"
            )
        labels = _labels_from_dataarray(da, name)
        order = tuple(other) + (ROW_DIM, COL_DIM)
        mats = np.asarray(da.transpose(*order).values, dtype=dtype)
        single = not other
        if single:
            mats = mats[None]
        _check_square(mats, name)
        vectors = squares_to_vectors(mats)
        n_cond = mats.shape[-1]
    elif PAIR_DIM in dims:
        other = [d for d in dims if d != PAIR_DIM]
        if len(other) > 1:
            raise DataError(
                f"{name}: a condensed RDM DataArray may have at most one dimension besides "
                f"{PAIR_DIM!r}; got dims {dims}"
            )
        vectors = np.asarray(da.transpose(*(tuple(other) + (PAIR_DIM,))).values, dtype=dtype)
        single = not other
        if single:
            vectors = vectors[None]
        n_cond = n_cond_from_pairs(vectors.shape[1], name)
        labels = None
        if "condition_i" in da.coords and "condition_j" in da.coords:
            ci = np.asarray(da.coords["condition_i"].values)
            cj = np.asarray(da.coords["condition_j"].values)
            labels = np.concatenate([ci[:1], cj[: n_cond - 1]])
    else:
        raise DataError(
            f"{name}: an RDM DataArray needs dims ({ROW_DIM!r}, {COL_DIM!r}) (square) or "
            f"{PAIR_DIM!r} (condensed), optionally after one stacking dimension; got dims {dims}"
        )
    stack_dim = other[0] if other else STACK_DIM
    names = np.asarray(da.coords[stack_dim].values) if other and stack_dim in da.coords \
        else None
    if n_cond < 2:
        raise DataError(f"{name}: an RDM needs at least 2 conditions; got {n_cond}")
    given = labels is not None
    if not given:
        labels = np.arange(n_cond)
    elif len(np.unique(labels)) != len(labels):
        raise DataError(f"{name}: condition labels must be unique; got {list(labels)}")
    _check_values(vectors, name, allow_nan)
    return RDMStack(vectors=_readonly(np.ascontiguousarray(vectors)), labels=labels,
                    labels_given=given, names=names, single=single, stack_dim=stack_dim,
                    attrs=attrs)


def _check_values(vectors, name, allow_nan):
    bad = ~np.isfinite(vectors)
    if not bad.any():
        return
    n_inf = int(np.isinf(vectors).sum())
    if n_inf:
        raise DataError(
            f"{name}: RDM entries must be finite (NaN marks missing pairs); found {n_inf} "
            f"infinite entries"
        )
    if not allow_nan:
        raise DataError(
            f"{name}: RDM entries must be finite here; found {int(bad.sum())} NaN entries"
        )


def align_conditions(ref, other, name_ref="a", name_other="b"):
    """Return ``other`` with its conditions reordered to ``ref``'s order; raise on mismatch."""
    if ref.n_cond != other.n_cond:
        raise DataError(
            f"{name_ref} and {name_other} must have the same number of conditions; got "
            f"{ref.n_cond} and {other.n_cond}"
        )
    if not (ref.labels_given and other.labels_given):
        return other
    if np.array_equal(ref.labels, other.labels):
        return other
    ref_set = {_key(v) for v in ref.labels}
    other_set = {_key(v) for v in other.labels}
    if ref_set != other_set:
        missing = sorted(map(str, ref_set - other_set))[:5]
        extra = sorted(map(str, other_set - ref_set))[:5]
        raise DataError(
            f"{name_ref} and {name_other} must have the same condition labels; "
            f"{name_other} lacks {missing} and has extra {extra}"
        )
    pos = {_key(v): i for i, v in enumerate(other.labels)}
    perm = np.array([pos[_key(v)] for v in ref.labels])
    return other.with_vectors(permute_conditions(other.vectors, perm), labels=ref.labels)


def _key(v):
    return v.item() if hasattr(v, "item") else v


def permute_conditions(vectors, perm):
    """Reorder the conditions of condensed vectors: new condition p is old condition perm[p]."""
    n_cond = len(perm)
    iu, ju = triu_indices(n_cond)
    src = condensed_index(np.asarray(perm)[iu], np.asarray(perm)[ju], n_cond)
    return np.ascontiguousarray(vectors[..., src])


def sample_vectors(v, rdm_idx, cond_idx, n_cond):
    """RDM vectors of a bootstrap sample; pairs of a condition with itself become NaN.

    Parameters
    ----------
    v : ndarray of shape (n_rdm, n_pairs)
    rdm_idx : ndarray of int, the sampled RDMs (with repetitions)
    cond_idx : ndarray of int, sorted sampled conditions (with repetitions)

    Returns
    -------
    ndarray of shape (len(rdm_idx), len(cond_idx) (len(cond_idx) - 1) / 2), a new array.
    """
    iu, ju = triu_indices(len(cond_idx))
    a, b = cond_idx[iu], cond_idx[ju]
    same = a == b
    src = condensed_index(a, np.where(same, (a + 1) % n_cond, b), n_cond)
    out = v[rdm_idx][:, src]
    out[:, same] = np.nan
    return out


def pair_labels(labels):
    """The (condition_i, condition_j) label of each condensed entry."""
    iu, ju = triu_indices(len(labels))
    return np.asarray(labels)[iu], np.asarray(labels)[ju]


def to_square_dataarray(vectors, labels, *, names=None, stack_dim=STACK_DIM, single=True,
                        attrs=None):
    """Condensed vectors (n, n_pairs) -> square DataArray (condition, condition2) or stack."""
    mats = vectors_to_squares(np.asarray(vectors))
    labels = np.asarray(labels)
    coords = {ROW_DIM: labels, COL_DIM: labels}
    if single:
        return xr.DataArray(mats[0], dims=(ROW_DIM, COL_DIM), coords=coords,
                            attrs=dict(attrs or {}))
    if names is None:
        names = np.arange(mats.shape[0])
    coords[stack_dim] = np.asarray(names)
    return xr.DataArray(mats, dims=(stack_dim, ROW_DIM, COL_DIM), coords=coords,
                        attrs=dict(attrs or {}))
