"""Frame selection (Brain-JEPA temporal resampling) and fixed-length windows."""

from __future__ import annotations

import numbers

import numpy as np
import xarray as xr

from .._dataset import (
    check_recording,
    is_lazy,
    sfreq_of,
    time_variables,
    unshare,
    with_time_axis,
)
from ..errors import DataError, NeurofmError
from ..schema import append_history

__all__ = ["clip_frame_indices", "temporal_resample", "windows"]


def _positive_int(name, value, func):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise NeurofmError(f"{func}: {name} must be an integer >= 1; got {value!r}")
    return int(value)


def clip_frame_indices(n_times, n_frames, stride, start=0.0):
    """Indices of the Brain-JEPA clip-and-linspace rule.

    A clip of ``n_frames * stride`` frames starting at ``start`` is sampled at
    ``n_frames`` evenly spaced positions (``linspace(start, start + clip - 1, n_frames)``),
    clamped to ``[0, n_times - 1]`` and truncated to integers.

    Parameters
    ----------
    n_times : int
        Frames available.
    n_frames : int
        Frames to return.
    stride : int
        Nominal step between returned frames (the clip is ``n_frames * stride`` long).
    start : float
        First position of the clip (the reference draws it uniformly in
        ``[0, max(n_times - clip, 0)]``).

    Returns
    -------
    idx : numpy.ndarray of shape (n_frames,), int64
    """
    clip = n_frames * stride
    pos = np.linspace(float(start), float(start) + clip - 1, n_frames)
    return np.clip(pos, 0, n_times - 1).astype(np.int64)


def temporal_resample(ds, n_frames, stride, *, start=None, seed=None):
    """Select ``n_frames`` frames with the Brain-JEPA clip-and-linspace rule.

    Brain-JEPA (METHODS.md section 1; reference ``_get_start_end_idx`` and
    ``_temporal_sampling``) turns 490 UKB frames into 160 by taking a clip of
    ``n_frames * stride`` = 480 frames at a random start and sampling it with
    ``linspace``; see :func:`clip_frame_indices`. Recordings shorter than the clip repeat
    their last frame, as in the reference.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical recording with ``n_times`` frames; not modified.
    n_frames : int
        Frames to keep.
    stride : int
        Nominal step (3 in Brain-JEPA).
    start : float | None
        Start of the clip in frames. None draws it uniformly in
        ``[0, max(n_times - n_frames * stride, 0)]`` from ``numpy.random.default_rng(seed)``
        (the reference's random jitter); give 0 for a deterministic clip.
    seed : int | None
        Seed of that draw.

    Returns
    -------
    ds : xarray.Dataset
        New recording with ``n_frames`` samples on a regular grid ``time[idx[0]] +
        arange(n_frames) * stride / sfreq``, ``sfreq`` divided by ``stride`` (``t_r``
        multiplied), the source frame numbers in a ``frame`` coordinate on ``time``, and a
        ``temporal_resample`` history step. Every ``time`` variable is subset.
    """
    func = "temporal_resample"
    check_recording(ds, func)
    n_frames = _positive_int("n_frames", n_frames, func)
    stride = _positive_int("stride", stride, func)
    n = ds.sizes["time"]
    delta = max(n - n_frames * stride, 0)
    if start is None:
        start = float(np.random.default_rng(seed).uniform(0, delta)) if delta else 0.0
    elif isinstance(start, bool) or not isinstance(start, numbers.Real) or start < 0:
        raise NeurofmError(f"{func}: start must be a number of frames >= 0 or None; got "
                           f"{start!r}")
    idx = clip_frame_indices(n, n_frames, stride, start)
    variables = {}
    for name in time_variables(ds):
        var = ds[name]
        variables[name] = (var.dims, var.variable.isel(time=idx).data)
    sfreq = sfreq_of(ds)
    new_sfreq = sfreq / stride
    t0 = float(ds["time"].values[idx[0]])
    time = t0 + np.arange(n_frames, dtype=np.float64) / new_sfreq
    out = with_time_axis(ds, time, variables, sfreq=new_sfreq)
    out = out.assign_coords(frame=("time", idx))
    return append_history(out, "temporal_resample", n_frames=n_frames, stride=stride,
                          start=float(start), seed=seed, n_times_in=int(n))


def windows(ds, length_s, stride_s):
    """Cut the recording into fixed-length windows (for analysis; training cuts its own).

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical recording, ``signal`` of shape (n_channels, n_times); not modified.
    length_s : float
        Window length in seconds (rounded to ``n_len`` samples).
    stride_s : float
        Step between window starts in seconds (rounded to ``n_stride`` samples).

    Returns
    -------
    windows : xarray.Dataset
        ``signal`` of shape (n_windows, n_channels, n_len) with dims
        (window, channel, time), ``n_windows = 1 + (n_times - n_len) // n_stride``;
        ``time`` is the time within a window (``arange(n_len) / sfreq``) and
        ``window_start`` (window,) the start of each window in the recording's seconds.
        Channel coordinates, events and attrs are kept (plus a ``windows`` history step);
        other time variables are dropped. Lazy when the input is dask-backed.
    """
    func = "windows"
    check_recording(ds, func)
    sfreq = sfreq_of(ds)
    for name, value in (("length_s", length_s), ("stride_s", stride_s)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
            raise NeurofmError(f"{func}: {name} must be a number of seconds > 0; got {value!r}")
    n_len = round(length_s * sfreq)
    n_stride = round(stride_s * sfreq)
    if n_len < 1 or n_stride < 1:
        raise NeurofmError(f"{func}: length_s={length_s} and stride_s={stride_s} must each "
                           f"span at least one sample at sfreq={sfreq} Hz")
    n = ds.sizes["time"]
    if n_len > n:
        raise DataError(f"{func}: window of {length_s} s ({n_len} samples) is longer than the "
                        f"recording ({n} samples, {n / sfreq:.6g} s)")
    n_win = 1 + (n - n_len) // n_stride
    sig = ds["signal"].transpose("channel", "time")
    starts = np.arange(n_win) * n_stride
    if is_lazy(sig):
        from dask.array.lib.stride_tricks import sliding_window_view as swv

        view = swv(sig.data, n_len, axis=1)[:, ::n_stride]          # (C, W, L)
        data = view.transpose(1, 0, 2)
    else:
        view = np.lib.stride_tricks.sliding_window_view(sig.values, n_len, axis=1)
        data = np.ascontiguousarray(view[:, ::n_stride].transpose(1, 0, 2))  # (W, C, L)
    t = np.asarray(ds["time"].values)
    coords = {name: ds.coords[name].variable for name in ds.coords
              if "time" not in ds.coords[name].dims}
    coords["time"] = ("time", np.arange(n_len, dtype=np.float64) / sfreq, {"units": "s"})
    coords["window_start"] = ("window", t[starts], {"units": "s"})
    out = xr.Dataset({"signal": (("window", "channel", "time"), data,
                                 dict(ds["signal"].attrs))}, coords=coords)
    for name, var in ds.data_vars.items():
        if name != "signal" and "time" not in var.dims:
            out[name] = var.variable
    out.attrs = dict(ds.attrs)
    out = unshare(out, ds)
    return append_history(out, "windows", length_s=length_s, stride_s=stride_s,
                          n_len=n_len, n_stride=n_stride, n_windows=int(n_win))
