"""Shared plumbing of the preprocessing functions: input checks, dask detection, block-wise
application along time with overlap, and rebuilding a recording around a new signal."""

from __future__ import annotations

import numpy as np
import xarray as xr

from .errors import DataError, NeurofmError
from .schema import validate

__all__ = []


def check_recording(ds, func):
    """Validate ``ds`` as a canonical recording before ``func`` runs on it.

    Values are not scanned here (that would load a dask-backed signal); functions that need
    finite input call :func:`check_finite` on the in-memory array they are about to use.
    """
    if not isinstance(ds, xr.Dataset):
        raise NeurofmError(
            f"{func}: ds must be a canonical recording (xarray.Dataset); got "
            f"{type(ds).__name__}"
        )
    validate(ds, check_values=False, name=f"{func}: input recording")
    return ds


def is_lazy(da):
    """True when a DataArray is backed by dask."""
    return getattr(da, "chunks", None) is not None


def sfreq_of(ds):
    return float(ds.attrs["sfreq"])


def check_finite(data, ds, func):
    """Raise DataError naming the channels that hold NaN/Inf in an in-memory array."""
    bad = ~np.isfinite(data)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(data.shape[0], -1).any(axis=1))
        names = [str(c) for c in ds["channel"].values[rows]]
        shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
        raise DataError(
            f"{func}: signal must be finite; found {int(bad.sum())} NaN/Inf values in "
            f"{len(names)} channel(s): {shown}"
        )


def time_axis(da):
    return da.dims.index("time")


def _numpy_buffers(ds):
    """The numpy arrays behind the non-dask variables of ``ds`` (index coordinates too)."""
    buffers = []
    for var in ds.variables.values():
        if is_lazy(var):
            continue
        data = var.data if not isinstance(var, xr.IndexVariable) else np.asarray(var.values)
        if isinstance(data, np.ndarray) and data.size:
            buffers.append(data)
    return buffers


def unshare(out, *sources):
    """Return ``out`` with every numpy buffer that may overlap one of ``sources`` copied.

    Preprocessing results must never alias the caller's data: a shallow copy
    (``Dataset.copy(deep=False)``, ``isel`` with a slice, a kept coordinate) hands the
    caller's ``bad``, ``ch_pos``, event or signal buffer to the output, so writing into the
    output would change the input. Only the overlapping variables are copied (cheap for the
    channel and event coordinates; the signal only when it is a view, as after
    :func:`~neurofm.preprocessing.crop`). Dask-backed variables hold no buffer and are left
    as they are; index coordinates are read-only pandas indexes and are kept.

    Parameters
    ----------
    out : xarray.Dataset
        The new recording.
    *sources : xarray.Dataset
        The caller's recordings.

    Returns
    -------
    out : xarray.Dataset
        ``out`` itself when nothing overlaps, else a new Dataset with the copies.
    """
    src = [b for ds in sources for b in _numpy_buffers(ds)]
    if not src:
        return out
    copies = {}
    for name, var in out.variables.items():
        if name in out.xindexes or is_lazy(var):
            continue
        data = var.data
        if isinstance(data, np.ndarray) and any(np.may_share_memory(data, b) for b in src):
            copies[name] = var.copy(deep=True)
    if not copies:
        return out
    coords = {n: v for n, v in copies.items() if n in out.coords}
    data_vars = {n: v for n, v in copies.items() if n not in coords}
    result = out.assign_coords(coords) if coords else out
    result = result.assign(data_vars) if data_vars else result
    result.attrs = dict(out.attrs)
    return result


def replace_signal(ds, data, *, units=None, drop_ch_units=False):
    """Return a copy of ``ds`` whose ``signal`` holds ``data`` (same dims).

    The caller's Dataset is never modified and shares no writable buffer with the result
    (see :func:`unshare`): the copy owns its attrs and variables.
    """
    out = ds.copy(deep=False)
    out.attrs = dict(ds.attrs)
    attrs = dict(ds["signal"].attrs)
    if units is not None:
        attrs["units"] = units
    if drop_ch_units and "ch_units" in out.coords:
        out = out.drop_vars("ch_units")
    out["signal"] = xr.Variable(ds["signal"].dims, data, attrs)
    return unshare(out, ds)


def overlap_apply(data, func, *, depth, axis, min_chunk=None, dtype=np.float32):
    """Apply ``func`` (an array -> array function along ``axis``) block-wise with overlap.

    Parameters
    ----------
    data : dask.array.Array
        Array chunked along ``axis``.
    func : callable
        Receives a block extended by ``depth`` samples on each inner side (no extension at
        the outer edges of the array, where ``func`` does its own edge handling) and returns
        an array of the same shape.
    depth : int
        Overlap in samples; must cover the support of the operation for exact results.
    axis : int
        The time axis.
    min_chunk : int, optional
        Smallest chunk length; the array is rechunked along ``axis`` when a chunk is smaller
        (a filter must see at least its own length of data in every block).
    """
    import dask.array as da

    depth = int(max(depth, 1))
    n = data.shape[axis]
    chunks = data.chunks[axis]
    need = max(depth, int(min_chunk or 0))
    if len(chunks) > 1 and min(chunks) < need:
        size = min(max(need, max(chunks)), n)
        sizes = [size] * (n // size)
        rest = n - sum(sizes)
        if rest and rest < need:
            sizes[-1] += rest
        elif rest:
            sizes.append(rest)
        data = data.rechunk({axis: tuple(sizes)})
    if len(data.chunks[axis]) == 1:
        return data.map_blocks(func, dtype=dtype)
    depths = dict.fromkeys(range(data.ndim), 0)
    depths[axis] = depth
    return da.map_overlap(func, data, depth=depths, boundary="none", trim=True, dtype=dtype,
                          meta=np.empty((0,) * data.ndim, dtype=dtype))


def with_time_axis(ds, time, variables, *, sfreq=None):
    """Rebuild ``ds`` on a new ``time`` coordinate.

    Parameters
    ----------
    ds : xarray.Dataset
        The original recording (not modified; the result shares no writable buffer with it).
    time : numpy.ndarray of shape (n_times_new,)
        The new time coordinate (float64 seconds).
    variables : dict of str -> (dims, data)
        Replacement for every variable that has a ``time`` dim (``signal`` included).
    sfreq : float, optional
        New sampling frequency; updates ``sfreq`` (and ``t_r`` for fMRI).
    """
    keep = {}
    for name, var in ds.variables.items():
        if name == "time" or "time" in var.dims:
            continue
        keep[name] = var
    missing = [n for n in time_variables(ds) if n not in variables]
    if missing:
        raise NeurofmError(f"internal: no replacement given for time variables {missing}")
    data_vars = {}
    for name in ds.data_vars:
        if name in variables:
            dims, data = variables[name]
            data_vars[name] = xr.Variable(dims, data, dict(ds[name].attrs))
        else:
            data_vars[name] = keep[name]
    coords = {"time": xr.Variable("time", np.asarray(time, dtype=np.float64),
                                  dict(ds["time"].attrs))}
    for name in ds.coords:
        if name == "time":
            continue
        if name in variables:
            dims, data = variables[name]
            coords[name] = xr.Variable(dims, data, dict(ds[name].attrs))
        else:
            coords[name] = keep[name]
    out = xr.Dataset(data_vars, coords=coords)
    out.attrs = dict(ds.attrs)
    if sfreq is not None:
        out.attrs["sfreq"] = float(sfreq)
        if "t_r" in out.attrs:
            out.attrs["t_r"] = 1.0 / float(sfreq)
    return unshare(out, ds)


def time_variables(ds):
    """Names of data variables and non-index coordinates that have a ``time`` dim."""
    names = [n for n, v in ds.data_vars.items() if "time" in v.dims]
    names += [n for n, v in ds.coords.items() if n != "time" and "time" in v.dims]
    return names


def check_channels_exist(ds, names, param, func):
    have = [str(c) for c in ds["channel"].values]
    missing = [n for n in names if n not in have]
    if missing:
        raise DataError(
            f"{func}: {param} names channels that are not in the recording: {missing}; "
            f"available: {have[:10]}{' ...' if len(have) > 10 else ''}"
        )
