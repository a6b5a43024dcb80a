"""Whole-brain volume searchlight RDMs with bounded memory (torch backend; CPU by default,
a GPU with ``device="auto"`` or ``"cuda"``).

Condition means of all in-mask voxels are computed once; centres are then processed in
chunks: each chunk gathers its spheres' voxels into a padded (B, K, S) tensor (B centres, K
conditions, S sphere voxels, padding = 0), forms the (B, K, K) Gram matrices with one
batched matmul and turns them into distances. Only one chunk of RDMs exists at a time:
either it is compared with model RDMs (maps of model fit), written into ``out`` (e.g. a
``np.memmap``), or gathered into the returned array when that array fits in ``max_memory``.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .._checks import check_option, check_positive, check_positive_int, check_unit_interval
from .._logging import logger, progress
from ..errors import DataError
from ._rdm_calc import encode_labels, fold_condition_counts, group_sums, resolve_device
from ._rdm_compare import _LINEAR, COMPARE_METHODS, check_comparable, compare_vectors, embed
from ._rdm_utils import (
    PAIR_DIM,
    RDMStack,
    pair_labels,
    triu_indices,
)
from ._rsa_inference import _parse_models

SEARCHLIGHT_METHODS = ("euclidean", "correlation", "crossnobis")


def _image_array(img):
    """The data of a nibabel image (its ``dataobj`` when present) as an ndarray."""
    return np.asarray(img.dataobj if hasattr(img, "dataobj") else img.get_fdata())


def _load_volume(img, conditions, obs_dim):
    """-> (data (n_obs, X, Y, Z) float, labels or None, spatial dim names)."""
    if isinstance(img, xr.DataArray):
        if img.ndim != 4:
            raise DataError(f"img: a DataArray must have an observation dim and 3 spatial dims; "
                            f"got dims {img.dims}")
        if isinstance(conditions, str) or conditions is None:
            name = conditions or "condition"
            if name not in img.coords or img.coords[name].ndim != 1:
                raise DataError(f"img has no 1-D coordinate {name!r} with the condition of each "
                                f"observation (coords: {list(img.coords)})")
            obs_dim = img.coords[name].dims[0]
            labels = np.asarray(img.coords[name].values)
        else:
            if obs_dim not in img.dims:
                raise DataError(f"img: no observation dimension {obs_dim!r} in {img.dims}")
            labels = None
        spatial = [d for d in img.dims if d != obs_dim]
        return np.asarray(img.transpose(obs_dim, *spatial).values), labels, spatial
    arr = _image_array(img) if hasattr(img, "get_fdata") or hasattr(img, "dataobj") \
        else np.asarray(img)
    if arr.ndim != 4:
        raise DataError(f"img must be 4-D (x, y, z, observation), like a NIfTI image; got "
                        f"shape {arr.shape}")
    return np.moveaxis(arr, -1, 0), None, ["x", "y", "z"]


def _load_mask(mask, shape):
    if hasattr(mask, "get_fdata") or hasattr(mask, "dataobj"):
        mask = _image_array(mask)
    mask = np.asarray(mask.values if isinstance(mask, xr.DataArray) else mask)
    if mask.shape != tuple(shape):
        raise DataError(f"mask must have the volume's spatial shape {tuple(shape)}; got "
                        f"{mask.shape}")
    if mask.dtype != bool:
        if not np.isfinite(mask).all():
            raise DataError("mask must be finite (0/1 or bool)")
        mask = mask != 0
    if mask.sum() < 2:
        raise DataError(f"mask must select at least 2 voxels; got {int(mask.sum())}")
    return mask


def sphere_offsets(radius):
    """Integer offsets (n, 3) with Euclidean norm <= radius, sorted by distance."""
    r = int(np.floor(radius))
    grid = np.mgrid[-r:r + 1, -r:r + 1, -r:r + 1].reshape(3, -1).T
    d2 = (grid ** 2).sum(axis=1)
    keep = d2 <= radius * radius + 1e-9
    grid, d2 = grid[keep], d2[keep]
    return grid[np.argsort(d2, kind="stable")]


def searchlight_centers(mask, radius, threshold=0.0):
    """Centres and their in-mask sphere voxels.

    Returns
    -------
    centers : ndarray of shape (n_centers, 3)
        Voxel coordinates of the centres (in-mask voxels whose sphere has at least 2 in-mask
        voxels and an in-mask fraction >= threshold).
    counts : ndarray of shape (n_centers,)
        Number of in-mask voxels of each sphere.
    """
    offsets = sphere_offsets(radius)
    coords = np.argwhere(mask)
    counts = _sphere_counts(mask, coords, offsets)
    keep = (counts >= 2) & (counts / len(offsets) >= threshold)
    return coords[keep], counts[keep]


def _sphere_counts(mask, coords, offsets):
    padded = np.pad(mask, [(len(offsets), len(offsets))] * 3)  # generous margin
    shift = len(offsets)
    counts = np.zeros(len(coords), dtype=np.int64)
    for off in offsets:
        c = coords + off + shift
        counts += padded[c[:, 0], c[:, 1], c[:, 2]]
    return counts


def _neighbours(centers, offsets, index_vol):
    """(B, S) indices into the in-mask voxel list, -1 where outside the mask/volume."""
    shape = np.array(index_vol.shape)
    pts = centers[:, None, :] + offsets[None, :, :]  # (B, S, 3)
    inside = ((pts >= 0) & (pts < shape)).all(axis=2)
    pts = np.where(inside[..., None], pts, 0)
    idx = index_vol[pts[..., 0], pts[..., 1], pts[..., 2]]
    return np.where(inside, idx, -1)


def searchlight_rdms(img, *, mask, radius, method="correlation", conditions=None, folds=None,
                     models=None, compare="corr", threshold=0.0, remove_mean=False,
                     dtype="float32", device=None, chunk_size=None, max_chunk_bytes=2 ** 26,
                     out=None, max_memory=2 ** 31, obs_dim="observation", verbose=None):
    """RDMs of spherical searchlights over a volume, in bounded memory.

    Every in-mask voxel whose sphere (Euclidean distance <= ``radius`` voxels) holds at least
    2 in-mask voxels, and a fraction >= ``threshold`` of the sphere inside the mask, is a
    centre. Spheres are truncated at the mask boundary (only in-mask voxels are used, which
    avoids rsatoolbox issue #466).

    Parameters
    ----------
    img : nibabel image or ndarray of shape (x, y, z, n_obs), or xr.DataArray
        The volume series; a DataArray has one observation dimension (the dimension of its
        condition coordinate, or ``obs_dim``) and three spatial dimensions.
    mask : ndarray of shape (x, y, z) (bool or 0/1) or nibabel image
        Voxels to use (required).
    radius : float
        Sphere radius in voxels (> 0).
    method : {"euclidean", "correlation", "crossnobis"}
        Distance (as in :func:`compute_rdm`; crossnobis with identity noise, so prewhiten
        the data for a noise-normalized version).
    conditions : array-like of shape (n_obs,) or str
        Condition of each observation (a coordinate name for a DataArray).
    folds : array-like of shape (n_obs,), optional
        Folds of crossnobis (default: k-th repetition of each condition).
    models : dict, list or stack of RDMs, optional
        If given, each searchlight RDM is compared with the models (``compare`` method) and
        maps of the comparisons are returned instead of the RDMs; RDMs are never all held.
    compare : str
        Comparison method for ``models`` (see :func:`compare_rdms`).
    threshold : float in [0, 1]
        Minimum fraction of the sphere that must lie inside the mask.
    remove_mean : bool
        Subtract each pattern's mean over the sphere's voxels (euclidean / crossnobis).
    dtype : {"float32", "float64"}
    device : None, "auto", str or torch.device
        The rule of :func:`compute_rdm`: None (default) computes on the CPU (torch, as the
        searchlight has no numpy path); ``"auto"`` uses the first CUDA GPU when there is
        one, else the CPU; a torch device uses that device; an unusable device (``"cuda"``
        on a CPU-only torch) raises NeurofmError.
    chunk_size : int, optional
        Centres per chunk; default chosen so that a chunk needs about ``max_chunk_bytes``
        (64 MiB by default; at least one centre).
    max_chunk_bytes : int
        Memory budget of one chunk, used when ``chunk_size`` is None.
    out : ndarray of shape (n_centers, n_pairs), optional
        Writable array (e.g. ``np.memmap``) that receives the RDM vectors chunk by chunk.
    max_memory : int
        Largest returned RDM array (bytes) when neither ``models`` nor ``out`` is given;
        larger requests raise instead of exhausting memory.
    verbose : bool, optional
        Progress bar over chunks.

    Returns
    -------
    xr.DataArray
        Without models: RDM vectors with dims ("center", "pair") and coordinates
        ``voxel_x/y/z`` (centre coordinates) and ``condition_i`` / ``condition_j`` (pair
        labels), backed by ``out`` when given. With models: maps with dims ("model", x, y, z),
        NaN outside the centres.

    Notes
    -----
    A sphere in which a condition's pattern is constant has an undefined correlation
    distance: those RDM entries are NaN (and comparisons use the remaining entries).
    """
    import torch

    check_option("method", method, SEARCHLIGHT_METHODS)
    check_option("dtype", dtype, ("float32", "float64"))
    if models is not None:
        check_option("compare", compare, COMPARE_METHODS)
    check_positive("radius", radius)
    check_unit_interval("threshold", threshold)
    dev = resolve_device(device) or torch.device("cpu")
    vol, labels, spatial = _load_volume(img, conditions, obs_dim)
    if labels is None:
        if conditions is None or isinstance(conditions, str):
            raise DataError("conditions: one label per observation is required for an "
                            "array volume")
        labels = np.asarray(conditions)
    n_obs = vol.shape[0]
    if len(labels) != n_obs:
        raise DataError(f"conditions must have one label per observation ({n_obs}); got "
                        f"{len(labels)}")
    cond_values, codes = encode_labels(labels, "conditions")
    n_cond = len(cond_values)
    if n_cond < 2:
        raise DataError(f"conditions: an RDM needs at least 2 conditions; got {n_cond}")
    if models is not None:
        check_comparable(n_cond, compare, "models", "comparing searchlight RDMs with models")
    mask = _load_mask(mask, vol.shape[1:])
    if not np.issubdtype(vol.dtype, np.number):
        raise DataError(f"img must be numeric; got dtype {vol.dtype}")
    data = vol[:, mask]  # (n_obs, n_vox) copy of the in-mask voxels
    if not np.isfinite(data).all():
        raise DataError(f"img: in-mask voxels must be finite; found "
                        f"{int((~np.isfinite(data)).sum())} NaN/Inf values")
    tdtype = torch.float32 if dtype == "float32" else torch.float64

    # condition (or fold x condition) means of every in-mask voxel, once
    n_vox = data.shape[1]
    if method == "crossnobis":
        if folds is not None:
            folds = np.asarray(folds)
            if folds.shape != (n_obs,):
                raise DataError(f"folds must have one entry per observation ({n_obs}); got "
                                f"shape {folds.shape}")
        fold_codes, counts = fold_condition_counts(codes, folds, cond_values, method)
        n_folds = counts.shape[0]
        group = fold_codes * n_cond + codes
    else:
        n_folds = 1
        group = codes
        counts = np.bincount(codes, minlength=n_cond)[None, :]
    sums = group_sums(data, group, n_folds * n_cond, dtype=np.float64)  # float64 sums
    means = sums.reshape(n_folds, n_cond, n_vox) / counts[:, :, None]
    if method != "correlation":  # translation invariant: remove each voxel's grand mean
        means = means - means.mean(axis=(0, 1), keepdims=True)
    # one padding column of zeros at index n_vox
    # voxel-major layout, one zero row at index n_vox for the padding: (F, V+1, K)
    means_vk = np.concatenate([means, np.zeros((n_folds, n_cond, 1))], axis=2)
    means_t = torch.as_tensor(np.ascontiguousarray(means_vk.transpose(0, 2, 1)), dtype=tdtype,
                              device=dev)
    counts_t = torch.as_tensor(counts, dtype=tdtype, device=dev)  # (F, K)
    offsets = sphere_offsets(radius)
    centers, n_in = searchlight_centers(mask, radius, threshold)
    if len(centers) == 0:
        raise DataError("mask / radius / threshold leave no searchlight centre")
    index_vol = np.full(mask.shape, -1, dtype=np.int64)
    index_vol[mask] = np.arange(n_vox)
    n_centers, n_pairs = len(centers), n_cond * (n_cond - 1) // 2
    iu, ju = triu_indices(n_cond)
    iu_t = torch.as_tensor(iu, device=dev)
    ju_t = torch.as_tensor(ju, device=dev)
    item = 4 if dtype == "float32" else 8
    per_center = item * (n_folds * n_cond * len(offsets) * 3 + 4 * n_cond * n_cond + n_pairs)
    if models is not None:  # float64 copies of the chunk's vectors for the comparisons
        per_center += 8 * 3 * n_pairs
    if chunk_size is None:
        chunk_size = int(max(1, min(n_centers, max_chunk_bytes // per_center)))
    else:
        chunk_size = check_positive_int("chunk_size", chunk_size)

    model_names, model_v = None, None
    if models is not None:
        # a stand-in for the data RDMs, only for aligning the models' condition labels
        ref = RDMStack(vectors=np.zeros((1, n_pairs)), labels=cond_values, labels_given=True,
                       names=None, single=True)
        model_names, model_v = _parse_models(models, ref)
        linear = compare in _LINEAR and np.isfinite(model_v).all()
        model_emb = embed(model_v, compare, n_cond) if linear else None
        result = np.full((len(model_names),) + mask.shape, np.nan)
    elif out is not None:
        if not isinstance(out, np.ndarray) or out.shape != (n_centers, n_pairs) \
                or not out.flags.writeable:
            raise DataError(f"out must be a writable ndarray (e.g. np.memmap) of shape "
                            f"({n_centers}, {n_pairs}) (centres x pairs); got "
                            f"{getattr(out, 'shape', type(out).__name__)}")
        result = out
    else:
        need = n_centers * n_pairs * item
        if need > max_memory:
            raise DataError(
                f"searchlight: {n_centers} centres x {n_pairs} pairs need {need / 2**30:.1f} "
                f"GiB, more than max_memory ({max_memory / 2**30:.1f} GiB); pass models= to get "
                f"maps, out=np.memmap(...) to write to disk, or raise max_memory"
            )
        result = np.empty((n_centers, n_pairs), dtype=dtype)
    logger.info("searchlight: %d centres, %d voxels per full sphere, chunks of %d",
                n_centers, len(offsets), chunk_size)

    starts = range(0, n_centers, chunk_size)
    for start in progress(starts, verbose=verbose, desc="searchlight", unit="chunk"):
        stop = min(start + chunk_size, n_centers)
        nb = _neighbours(centers[start:stop], offsets, index_vol)  # (B, S)
        valid = nb >= 0
        p = torch.as_tensor(valid.sum(axis=1), dtype=tdtype, device=dev)  # (B,)
        idx = torch.as_tensor(np.where(valid, nb, n_vox), device=dev)
        vmask = torch.as_tensor(valid, dtype=tdtype, device=dev)
        with torch.no_grad():
            rdm = _chunk_rdms(method, means_t, counts_t, idx, vmask, p, remove_mean)  # (B, K, K)
            vec = rdm[:, iu_t, ju_t]  # (B, n_pairs)
        vec_np = vec.cpu().numpy()
        if models is not None:
            v64 = vec_np.astype(np.float64)
            if linear and np.isfinite(v64).all():
                sims = model_emb @ embed(v64, compare, n_cond).T  # (M, B)
            else:
                sims = compare_vectors(model_v, v64, compare)
            c = centers[start:stop]
            result[:, c[:, 0], c[:, 1], c[:, 2]] = sims
        else:
            result[start:stop] = vec_np

    if models is not None:
        coords = {"model": list(model_names)}
        if isinstance(img, xr.DataArray):
            coords.update({d: img.coords[d].values for d in spatial if d in img.coords})
        return xr.DataArray(result, dims=["model"] + list(spatial), coords=coords,
                            attrs={"method": method, "compare": compare,
                                   "radius": float(radius), "n_centers": int(n_centers)})
    ci, cj = pair_labels(cond_values)
    return xr.DataArray(
        result, dims=("center", PAIR_DIM),
        coords={"voxel_x": ("center", centers[:, 0]), "voxel_y": ("center", centers[:, 1]),
                "voxel_z": ("center", centers[:, 2]), "n_voxels": ("center", n_in),
                "condition_i": (PAIR_DIM, ci), "condition_j": (PAIR_DIM, cj)},
        attrs={"method": method, "radius": float(radius), "n_conditions": int(n_cond)})


def _chunk_rdms(method, means_t, counts_t, idx, vmask, p, remove_mean):
    """(B, K, K) RDMs of one chunk from gathered sphere patterns.

    means_t: (F, V+1, K) fold/condition means per voxel with a zero padding row; counts_t:
    (F, K) observations behind each mean; idx: (B, S) voxel indices (padding -> V); vmask:
    (B, S) 1 for real voxels; p: (B,) voxel counts.
    """
    n_folds = means_t.shape[0]
    x = means_t[:, idx]  # (F, B, S, K): rows of K values gathered per voxel
    pb = p[:, None, None]
    if method == "correlation" or remove_mean:
        mu = x.sum(dim=2, keepdim=True) / pb[None]  # (F, B, 1, K) pattern means over voxels
        x = (x - mu) * vmask[None, :, :, None]
    if method == "correlation":
        gram = x[0].transpose(1, 2) @ x[0]  # (B, K, K) centred cross products
        norm = gram.diagonal(dim1=1, dim2=2).sqrt()
        return 1.0 - gram / (norm[:, :, None] * norm[:, None, :])
    if method == "euclidean":
        gram = x[0].transpose(1, 2) @ x[0]  # (B, K, K)
        d = gram.diagonal(dim1=1, dim2=2)
        return (d[:, :, None] + d[:, None, :] - 2 * gram) / pb
    # crossnobis: leave-one-fold-out means (identity noise), weighted by observation counts
    w = counts_t[:, None, None, :]  # (F, 1, 1, K)
    total = (w * x).sum(dim=0)  # (B, S, K)
    n_total = counts_t.sum(dim=0)
    kernel = None
    for f in range(n_folds):
        train = (total - w[f] * x[f]) / (n_total - counts_t[f])  # (B, S, K)
        k = train.transpose(1, 2) @ x[f]  # (B, K, K)
        kernel = k if kernel is None else kernel + k
    d = kernel.diagonal(dim1=1, dim2=2)
    return (d[:, :, None] + d[:, None, :] - kernel - kernel.transpose(1, 2)) / (pb * n_folds)
