"""dF/F of calcium traces: rolling-percentile, suite2p's maximin and constant baselines, z-score.

All four work per channel along time on the recording's ``signal`` (usually raw or
neuropil-corrected fluorescence, ``F`` or ``Fc = F - neucoeff * Fneu``):

- ``"percentile"``: F0 is the running ``percentile`` of the trace over a centred window of
  ``window_s`` seconds; dF/F = (F - F0) / F0.
- ``"maximin"`` (suite2p's ``baseline="maximin"``): F0 is the trace smoothed by a Gaussian of
  ``sigma`` samples, then a running minimum, then a running maximum, both over
  ``int(window_s * sfreq)`` samples; dF/F = (F - F0) / F0.
- ``"constant"`` (suite2p's ``baseline="constant"``): F0 is one number for the whole
  recording, the minimum over every channel and time of the traces smoothed by a Gaussian of
  ``sigma`` samples (suite2p's ``dcnv.preprocess`` takes ``np.amin`` of the smoothed
  (n_rois, n_frames) array, without an axis); dF/F = (F - F0) / F0.
- ``"zscore"``: (F - mean) / std per channel (population std, ddof=0).

Channels whose baseline is not positive somewhere (dF/F undefined) or whose trace is
constant (z-score undefined) are marked ``bad``, set to 0 and named in a warning and in the
history. Channels that are entirely NaN because they were not recorded (``recorded`` False,
as in the C. elegans layout) stay NaN.
"""

from __future__ import annotations

import functools

import numpy as np

from ._checks import check_option, check_positive
from ._dataset import check_recording, is_lazy, overlap_apply, replace_signal, sfreq_of
from ._logging import logger
from .errors import DataError, NeurofmError
from .schema import append_history

__all__ = ["DFF_METHODS", "dff"]

DFF_METHODS = ("percentile", "maximin", "constant", "zscore")


def dff(ds, *, method="percentile", window_s=60.0, percentile=8.0, sigma=10.0):
    """dF/F (or z-score) of every channel of a calcium recording.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical recording whose ``signal`` (channel, time) holds fluorescence
        (n_channels, n_times). Not modified. A dask-backed signal stays lazy (the baselines
        run block-wise with an overlap covering their support); one pass over it checks for
        NaN and undefined channels.
    method : {"percentile", "maximin", "constant", "zscore"}
        Baseline definition (see the module docstring).
    window_s : float
        Window of the running percentile / running min and max, in seconds
        (``int(window_s * sfreq)`` samples, as suite2p's ``win_baseline``).
    percentile : float
        Percentile (0-100) of the running baseline for ``method="percentile"``
        (suite2p's ``prctile_baseline``, CaImAn's ``quantileMin``).
    sigma : float
        Standard deviation, in samples, of the Gaussian smoothing before the running
        minimum for ``method="maximin"``, or before the minimum for ``method="constant"``
        (suite2p's ``sig_baseline``).

    Returns
    -------
    ds : xarray.Dataset
        A new recording whose ``signal`` (n_channels, n_times) float32 holds dF/F (units
        "dF/F") or z-scores (units "z"); attrs ``dff_method`` and the parameters, and a
        ``dff`` history step.

    Raises
    ------
    NeurofmError
        Unknown method or a non-positive window/sigma, a window shorter than one sample, or
        a percentile outside [0, 100].
    DataError
        NaN/Inf in a channel that is marked as recorded.
    """
    func = "dff"
    check_recording(ds, func)
    check_option("method", method, DFF_METHODS)
    window_s = check_positive("window_s", window_s)
    sigma = check_positive("sigma", sigma)
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float, np.number)) \
            or not 0.0 <= float(percentile) <= 100.0:
        raise NeurofmError(f"{func}: percentile must be a number in [0, 100]; got "
                           f"{percentile!r}")
    percentile = float(percentile)
    sfreq = sfreq_of(ds)
    win = int(window_s * sfreq)
    if method in ("percentile", "maximin") and win < 1:
        raise NeurofmError(f"{func}: window_s={window_s} s is shorter than one sample at "
                           f"sfreq={sfreq:g} Hz; expected window_s >= {1.0 / sfreq:g}")

    lazy = is_lazy(ds["signal"])
    if lazy:
        import dask.array as xp
    else:
        xp = np
    x = ds["signal"].data.astype(np.float64) if lazy else \
        np.asarray(ds["signal"].values, dtype=np.float64)  # (C, T)
    if method == "zscore":
        center = x.mean(axis=1, keepdims=True)  # (C, 1)
        scale = x.std(axis=1, keepdims=True)
        defined = scale[:, 0] > 0
        values = (x - center) / xp.where(scale > 0, scale, 1.0)
    elif method == "constant":
        smooth = functools.partial(_smooth, sigma=sigma)
        if lazy:
            depth = int(4.0 * sigma + 0.5) + 2  # support of the Gaussian
            low = overlap_apply(x, smooth, depth=depth, axis=1, min_chunk=depth,
                                dtype=np.float64)
        else:
            low = smooth(x)
        # one F0 for the recording; channels that are entirely NaN (not recorded) are ignored
        level = xp.min(xp.where(xp.isnan(low), np.inf, low))
        f0 = xp.zeros_like(x) + level
        defined = (f0 > 0).all(axis=1) & xp.isfinite(level)
        values = (x - f0) / xp.where(f0 > 0, f0, 1.0)
    else:
        baseline = functools.partial(_baseline, method=method, win=win, percentile=percentile,
                                     sigma=sigma)
        if lazy:
            depth = 2 * win + int(4.0 * sigma + 0.5) + 2  # support of the composed filters
            f0 = overlap_apply(x, baseline, depth=depth, axis=1, min_chunk=depth,
                               dtype=np.float64)
        else:
            f0 = baseline(x)
        defined = (f0 > 0).all(axis=1)
        values = (x - f0) / xp.where(f0 > 0, f0, 1.0)
    n_bad = (~xp.isfinite(x)).sum(axis=1)  # (C,)
    all_nan = xp.isnan(x).all(axis=1)
    if lazy:
        import dask

        defined, n_bad, all_nan = dask.compute(defined, n_bad, all_nan)
    defined, n_bad, all_nan = (np.asarray(a) for a in (defined, n_bad, all_nan))

    unrecorded = np.zeros(x.shape[0], dtype=bool)
    if "recorded" in ds.coords:  # C. elegans slots that were not recorded stay NaN
        unrecorded = ~np.asarray(ds.coords["recorded"].values, dtype=bool) & all_nan
    broken = (n_bad > 0) & ~unrecorded
    if broken.any():
        names = [str(c) for c in ds["channel"].values[broken]]
        raise DataError(f"{func}: signal must be finite in recorded channels; found NaN/Inf "
                        f"in {len(names)} channel(s): {', '.join(names[:5])}"
                        f"{' ...' if len(names) > 5 else ''}")
    undefined = ~defined & ~unrecorded
    if undefined.any():
        values = xp.where(undefined[:, None], 0.0, values)
    out = values.astype(np.float32)

    bad = np.asarray(ds["bad"].values, dtype=bool) | undefined
    undefined_names = [str(c) for c in ds["channel"].values[undefined]]
    if undefined_names:
        what = "constant traces (z-score undefined)" if method == "zscore" else \
            "a baseline F0 <= 0 (dF/F undefined)"
        logger.warning("dff: %d channel(s) have %s; set to 0 and marked bad: %s",
                       len(undefined_names), what, ", ".join(undefined_names[:10])
                       + (" ..." if len(undefined_names) > 10 else ""))

    units = "z" if method == "zscore" else "dF/F"
    result = replace_signal(ds, out, units=units, drop_ch_units=True)
    result = result.assign_coords(bad=("channel", bad, dict(ds["bad"].attrs)))
    params = {"method": method}
    if method == "percentile":
        params.update(window_s=window_s, window_samples=win, percentile=percentile)
    elif method == "maximin":
        params.update(window_s=window_s, window_samples=win, sigma=sigma)
    elif method == "constant":
        params.update(sigma=sigma)
    result.attrs.update({f"dff_{key}": value for key, value in params.items()})
    return append_history(result, "dff", **params, undefined_channels=undefined_names)


def _baseline(x, *, method, win, percentile, sigma):
    """F0 of every row of x (C, T) by the percentile or maximin rule."""
    if x.size == 0:
        return np.array(x, dtype=np.float64)
    if method == "percentile":
        return _percentile_baseline(x, win, percentile)
    return _maximin_baseline(x, win, sigma)


def _percentile_baseline(x, win, percentile):
    """Running percentile over a centred window of ``win`` samples; x is (C, T)."""
    from scipy.ndimage import percentile_filter

    return percentile_filter(x, percentile, size=(1, win), mode="reflect")


def _smooth(x, sigma):
    """Gaussian smoothing of every row of x (C, T), as suite2p's ``gaussian_filter``."""
    from scipy.ndimage import gaussian_filter1d

    if x.size == 0:
        return np.array(x, dtype=np.float64)
    return gaussian_filter1d(x, sigma, axis=1)


def _maximin_baseline(x, win, sigma):
    """suite2p's maximin: Gaussian smoothing, running min, running max; x is (C, T)."""
    from scipy.ndimage import gaussian_filter1d, maximum_filter1d, minimum_filter1d

    low = gaussian_filter1d(x, sigma, axis=1)
    low = minimum_filter1d(low, win, axis=1)
    return maximum_filter1d(low, win, axis=1)


