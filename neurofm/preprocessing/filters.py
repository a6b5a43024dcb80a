"""Temporal filtering and resampling of canonical recordings with MNE's array routines.

In memory the functions call :func:`mne.filter.filter_data`, :func:`mne.filter.notch_filter`
and :func:`mne.filter.resample` on the signal (as float64, like MNE's Raw methods) and store
float32. On a dask-backed signal they run block by block along time with an overlap that
covers the filter's support (``dask.array.map_overlap``), so a recording larger than memory
is processed lazily and FIR results equal the in-memory ones to floating-point precision.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from .._checks import check_option, check_positive
from .._dataset import (
    check_finite,
    check_recording,
    is_lazy,
    overlap_apply,
    replace_signal,
    sfreq_of,
    time_axis,
    time_variables,
    unshare,
    with_time_axis,
)
from .._logging import logger
from ..errors import NeurofmError
from ..schema import append_history

__all__ = ["filter", "notch", "resample"]

#: Channel types that hold no physiological signal and are never filtered (trigger lines).
NON_DATA_CH_TYPES = ("stim",)


def _data_rows(ds):
    types = [str(t) for t in ds["ch_type"].values]
    return np.array([i for i, t in enumerate(types) if t not in NON_DATA_CH_TYPES], dtype=int)


def _check_freq(name, value, nyquist, func, *, allow_none=True):
    if value is None and allow_none:
        return None
    values = np.atleast_1d(np.asarray(value, dtype=float)) if not isinstance(value, str) \
        else None
    if values is None or values.ndim != 1 or not np.all(np.isfinite(values)) \
            or np.any(values <= 0) or np.any(values >= nyquist):
        raise NeurofmError(
            f"{func}: {name} must be {'None or ' if allow_none else ''}a frequency (or list of "
            f"frequencies) in Hz strictly between 0 and the Nyquist frequency {nyquist:g} Hz "
            f"(sfreq {2 * nyquist:g} Hz); got {value!r}"
        )
    return value


def _mne_call(func, fun, *args, **kwargs):
    """Call an MNE routine, turning its ValueErrors into NeurofmError naming ``func``."""
    try:
        return fun(*args, **kwargs)
    except ValueError as err:
        raise NeurofmError(f"{func}: MNE rejected the parameters: {err}") from err


def _apply_rows(ds, rows, block_fun, *, depth, min_chunk, func):
    """Run ``block_fun(float64 (channel, time) array) -> same shape`` on the signal.

    ``block_fun`` filters the data ``rows`` (:func:`_data_rows`); without any, the signal is
    returned as it is.
    """
    sig = ds["signal"]
    if not len(rows):
        return sig.data
    axis = time_axis(sig)

    def run(block):
        x = np.ascontiguousarray(np.moveaxis(block, axis, -1), dtype=np.float64)
        if x.shape[-1] == 0:
            return block.astype(np.float32)
        y = block_fun(x)
        return np.moveaxis(y, -1, axis).astype(np.float32)

    if is_lazy(sig):
        return overlap_apply(sig.data, run, depth=depth, axis=axis, min_chunk=min_chunk)
    data = np.asarray(sig.values)
    check_finite(data, ds, func)
    return run(data)


def filter(ds, l_freq, h_freq, *, method="fir", filter_length="auto",
           l_trans_bandwidth="auto", h_trans_bandwidth="auto", phase="zero",
           fir_window="hamming", fir_design="firwin", iir_params=None,
           pad="reflect_limited"):
    """Band-pass, high-pass, low-pass or band-stop filter every data channel.

    Wraps :func:`mne.filter.filter_data` (same defaults); trigger channels (``ch_type``
    "stim") are left untouched, as in :meth:`mne.io.Raw.filter`.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical recording; ``signal`` of shape (n_channels, n_times), numpy- or
        dask-backed (chunked along time). Not modified.
    l_freq, h_freq : float | None
        Lower and upper pass-band edges in Hz; ``l_freq > h_freq`` gives a band-stop,
        ``None`` a one-sided filter.
    method : {"fir", "iir"}
        FIR overlap-add (default) or IIR (Butterworth by default, zero phase).
    filter_length, l_trans_bandwidth, h_trans_bandwidth, phase, fir_window, fir_design, \
iir_params, pad
        As in :func:`mne.filter.filter_data`.

    Returns
    -------
    ds : xarray.Dataset
        A new recording with the filtered ``signal`` (float32, same shape) and a
        ``filter`` step in its history.

    Notes
    -----
    On a dask-backed signal each time block is filtered with an overlap of one filter
    length (FIR) or of four times MNE's estimated IIR ringing (IIR), so the result equals the
    in-memory one to floating-point precision for FIR and to about 1e-6 of the signal
    scale for IIR.
    """
    import mne

    func = "filter"
    check_recording(ds, func)
    check_option("method", method, ("fir", "iir"))
    sfreq = sfreq_of(ds)
    nyq = sfreq / 2.0
    if l_freq is None and h_freq is None:
        raise NeurofmError(f"{func}: l_freq and h_freq are both None; give at least one edge")
    _check_freq("l_freq", l_freq, nyq, func)
    _check_freq("h_freq", h_freq, nyq, func)
    rows = _data_rows(ds)
    common = {"filter_length": filter_length, "l_trans_bandwidth": l_trans_bandwidth,
              "h_trans_bandwidth": h_trans_bandwidth, "method": method,
              "iir_params": iir_params, "phase": phase, "fir_window": fir_window,
              "fir_design": fir_design}
    design = _mne_call(func, mne.filter.create_filter, None, sfreq, l_freq, h_freq,
                       verbose="error", **common)
    depth, min_chunk = _support(design, method)

    def block_fun(x):
        return mne.filter.filter_data(x, sfreq, l_freq, h_freq, picks=rows, pad=pad,
                                      copy=False, verbose="error", **common)

    data = _apply_rows(ds, rows, block_fun, depth=depth, min_chunk=min_chunk, func=func)
    out = replace_signal(ds, data)
    return append_history(out, "filter", l_freq=l_freq, h_freq=h_freq, pad=pad,
                          n_taps=(None if method == "iir" else int(depth)), **common)


def _support(design, method):
    """Overlap (samples) and minimum block length for a designed MNE filter."""
    if method == "iir":
        padlen = int(design.get("padlen", 0)) if isinstance(design, dict) else 0
        depth = max(4 * padlen, 1)
        return depth, depth
    n_taps = len(design)
    return n_taps, n_taps


def notch(ds, freqs, *, notch_widths=None, trans_bandwidth=1.0, method="fir",
          filter_length="auto", phase="zero", fir_window="hamming", fir_design="firwin",
          iir_params=None, pad="reflect_limited"):
    """Remove line noise at ``freqs`` (and any harmonics listed) with a notch filter.

    Wraps :func:`mne.filter.notch_filter` (same defaults).

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical recording, ``signal`` of shape (n_channels, n_times); not modified.
    freqs : float | sequence of float
        Frequencies to remove in Hz, each below the Nyquist frequency.
    notch_widths : float | sequence of float | None
        Stop-band widths (default ``freqs / 200``).
    trans_bandwidth : float
        Transition bandwidth in Hz.
    method : {"fir", "iir"}
    filter_length, phase, fir_window, fir_design, iir_params, pad
        As in :func:`mne.filter.notch_filter`.

    Returns
    -------
    ds : xarray.Dataset
        New recording with the notched ``signal`` and a ``notch`` history step.
    """
    import mne

    func = "notch"
    check_recording(ds, func)
    check_option("method", method, ("fir", "iir"))
    sfreq = sfreq_of(ds)
    if freqs is None:
        raise NeurofmError(f"{func}: freqs must be a frequency or a list of frequencies; "
                           "got None")
    _check_freq("freqs", freqs, sfreq / 2.0, func, allow_none=False)
    freq_arr = np.atleast_1d(np.asarray(freqs, dtype=float))
    if notch_widths is None:
        widths = freq_arr / 200.0
    else:
        widths = np.atleast_1d(np.asarray(notch_widths, dtype=float))
        if widths.size == 1:
            widths = np.full_like(freq_arr, widths[0])
        if widths.shape != freq_arr.shape or np.any(widths < 0):
            raise NeurofmError(f"{func}: notch_widths must be None, one width >= 0 or one "
                               f"per frequency ({freq_arr.size}); got {notch_widths!r}")
    tb_2 = trans_bandwidth / 2.0
    # the band-stop MNE's notch_filter designs (same edges), to size the overlap
    lows = [f - w / 2.0 - tb_2 for f, w in zip(freq_arr, widths)]
    highs = [f + w / 2.0 + tb_2 for f, w in zip(freq_arr, widths)]
    design = _mne_call(func, mne.filter.create_filter, None, sfreq, highs, lows,
                       filter_length, tb_2, tb_2, method, iir_params, phase, fir_window,
                       fir_design, verbose="error")
    depth, min_chunk = _support(design, method)
    rows = _data_rows(ds)

    def block_fun(x):
        return mne.filter.notch_filter(
            x, sfreq, freq_arr, filter_length=filter_length, notch_widths=widths,
            trans_bandwidth=trans_bandwidth, method=method, iir_params=iir_params,
            picks=rows, copy=False, phase=phase, fir_window=fir_window,
            fir_design=fir_design, pad=pad, verbose="error")

    data = _apply_rows(ds, rows, block_fun, depth=depth, min_chunk=min_chunk, func=func)
    out = replace_signal(ds, data)
    return append_history(out, "notch", freqs=freq_arr.tolist(), notch_widths=widths.tolist(),
                          trans_bandwidth=trans_bandwidth, method=method,
                          filter_length=filter_length, phase=phase, fir_window=fir_window,
                          fir_design=fir_design, iir_params=iir_params, pad=pad)


def resample(ds, sfreq, *, method="fft", npad="auto", window="auto", pad="auto"):
    """Resample the recording to ``sfreq`` Hz.

    Wraps :func:`mne.filter.resample` (``up=sfreq``, ``down=ds.attrs["sfreq"]``) with the
    defaults of :meth:`mne.io.Raw.resample` (``npad="auto"``, ``pad="auto"``); it low-passes
    at the new Nyquist frequency. Every floating-point variable
    on the ``time`` axis (``signal``, fMRI ``confounds``, calcium ``F``...) is resampled the
    same way; other time variables take the nearest sample. Events keep their times.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical recording, ``signal`` of shape (n_channels, n_times); not modified.
    sfreq : float
        New sampling frequency in Hz.
    method : {"fft", "polyphase"}
        MNE's resampling method.
    npad, window, pad
        As in :func:`mne.filter.resample` (defaults of :meth:`mne.io.Raw.resample`).

    Returns
    -------
    ds : xarray.Dataset
        New recording with ``n_times' = round(n_times * sfreq / old_sfreq)`` samples, the
        ``time`` coordinate ``time[0] + arange(n_times') / sfreq``, ``sfreq`` (and fMRI
        ``t_r``) updated and a ``resample`` history step.

    Notes
    -----
    On a dask-backed signal the time axis is processed in blocks whose boundaries fall on
    whole periods of the rational rate ratio, each extended by an overlap and trimmed after
    resampling, so the output grid is exactly that of the in-memory call. ``polyphase``
    then equals the in-memory result to floating-point precision (when ``n_times`` is a
    multiple of the ratio's denominator); ``fft`` is an ideal low-pass whose kernel decays
    slowly, so block-wise results differ from the whole-array ones near block boundaries
    by up to about 1e-3 of the signal's standard deviation for broadband signals: use
    ``method="polyphase"`` when lazy results must equal in-memory ones.
    """
    import mne

    func = "resample"
    check_recording(ds, func)
    new = check_positive("sfreq", sfreq)
    check_option("method", method, ("fft", "polyphase"))
    old = sfreq_of(ds)
    n = ds.sizes["time"]
    final_len = max(round(new / old * n), 1)
    kwargs = {"method": method, "npad": npad, "window": window, "pad": pad}
    if math.isclose(new, old, rel_tol=1e-9):
        return append_history(unshare(ds.copy(deep=False), ds), "resample", sfreq=new,
                              from_sfreq=old, noop=True, **kwargs)

    def resample_array(x):
        return _mne_call(func, mne.filter.resample, x, up=new, down=old, verbose="error",
                         **kwargs)

    variables = {}
    for name in time_variables(ds):
        var = ds[name]
        axis = var.dims.index("time")
        if var.dtype.kind == "f":
            if is_lazy(var):
                data = _resample_lazy(var.data, axis, new, old, final_len, resample_array,
                                      method)
            else:
                x = np.asarray(var.values)
                if name == "signal":
                    check_finite(x, ds, func)
                y = resample_array(np.moveaxis(x, axis, -1).astype(np.float64))
                data = np.moveaxis(y, -1, axis).astype(var.dtype)
        else:
            idx = np.minimum(np.round(np.arange(final_len) * old / new).astype(int), n - 1)
            data = var.variable.isel(time=idx).data
        variables[name] = (var.dims, data)
    t0 = float(ds["time"].values[0]) if n else 0.0
    time = t0 + np.arange(final_len, dtype=np.float64) / new
    out = with_time_axis(ds, time, variables, sfreq=new)
    return append_history(out, "resample", sfreq=new, from_sfreq=old, **kwargs)


def _resample_lazy(data, axis, new, old, final_len, resample_array, method):
    """Block-wise resampling of a dask array along ``axis`` (see :func:`resample` Notes)."""
    import dask.array as da

    ratio = Fraction(new / old).limit_denominator(10_000)
    up, down = ratio.numerator, ratio.denominator
    n = data.shape[axis]
    if method == "polyphase":
        support = math.ceil(10 * max(up, down) / up) + 1
    else:
        support = max(1024, math.ceil(20 * max(up, down) / up))
    depth = math.ceil(support / down) * down
    if abs(up / down - new / old) > 1e-9 * (new / old) or depth > n // 2:
        logger.warning(
            "resample: rate ratio %s/%s has no short period; resampling the time axis in one "
            "block (it is loaded into memory)", new, old)
        block = data.rechunk({axis: -1})
        return block.map_blocks(
            lambda b: np.moveaxis(resample_array(np.moveaxis(b, axis, -1).astype(np.float64)),
                                  -1, axis).astype(data.dtype),
            chunks=tuple(c if i != axis else (final_len,) for i, c in enumerate(block.chunks)),
            dtype=data.dtype)
    # block boundaries on multiples of `down` input samples and at least `depth` long
    chunk = max(int(np.median(data.chunks[axis])), depth)
    chunk = math.ceil(chunk / down) * down
    sizes = [chunk] * (n // chunk)
    rest = n - sum(sizes)
    if rest and sizes and rest < depth:
        sizes[-1] += rest
    elif rest:
        sizes.append(rest)
    data = data.rechunk({axis: tuple(sizes)})
    n_blocks = len(sizes)
    out_sizes = [s * up // down for s in sizes[:-1]]
    out_sizes.append(final_len - sum(out_sizes))
    if n_blocks == 1:
        ext = data
    else:
        ext = da.overlap.overlap(data, depth={i: (depth if i == axis else 0)
                                              for i in range(data.ndim)},
                                 boundary="none")
    trim = depth * up // down

    def run(block, block_info=None):
        loc = block_info[0]["chunk-location"][axis] if block_info else 0
        x = np.moveaxis(block, axis, -1).astype(np.float64)
        y = resample_array(x)
        left = trim if (n_blocks > 1 and loc > 0) else 0
        size = out_sizes[loc]
        y = y[..., left:left + size]
        return np.moveaxis(y, -1, axis).astype(block.dtype)

    out_chunks = tuple(tuple(out_sizes) if i == axis else c for i, c in enumerate(data.chunks))
    return ext.map_blocks(run, chunks=out_chunks, dtype=data.dtype,
                          meta=np.empty((0,) * data.ndim, dtype=data.dtype))
