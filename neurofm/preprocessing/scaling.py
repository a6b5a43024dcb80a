"""Scaling of canonical recordings: z-scoring and robust (median / IQR) scaling.

:func:`robust_scale` returns the statistics it used, so that the same statistics can be
applied to validation and test recordings and stored with a model. The Brain-JEPA
pretraining normalisation (METHODS.md section 1) takes its statistics across training
subjects of each subject's temporal mean: compute them with
:func:`robust_scale_stats` (``method="subject_means"``) and pass them to
:func:`robust_scale`.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .._checks import check_option
from .._dataset import check_recording, is_lazy, replace_signal
from .._logging import logger
from ..errors import DataError, NeurofmError
from ..schema import append_history

__all__ = ["robust_scale", "robust_scale_stats", "zscore"]

_STATS_METHODS = ("channel", "subject_means", "pooled")


def zscore(ds, dim="time", *, ddof=0):
    """Z-score the signal along time (per channel) or across channels (per sample).

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical recording, ``signal`` of shape (n_channels, n_times); not modified.
    dim : {"time", "channel"}
        Dimension along which mean and standard deviation are taken.
    ddof : int
        Delta degrees of freedom of the standard deviation (0 as in
        :func:`scipy.stats.zscore`).

    Returns
    -------
    ds : xarray.Dataset
        New recording with ``(signal - mean) / std`` in float32 and units ``"z"``. Constant
        rows (std 0) become 0 rather than NaN. A ``zscore`` history step.
    """
    func = "zscore"
    check_recording(ds, func)
    check_option("dim", dim, ("time", "channel"))
    sig = ds["signal"].astype(np.float64)
    mean = sig.mean(dim)
    std = sig.std(dim, ddof=ddof)
    std = xr.where(std > 0, std, 1.0)
    z = ((sig - mean) / std).astype(np.float32).transpose(*ds["signal"].dims)
    out = replace_signal(ds, z.data, units="z", drop_ch_units=True)
    return append_history(out, "zscore", dim=dim, ddof=ddof)


def _quantiles(sig, q):
    """Exact per-channel percentiles ``q`` (linear interpolation) of a numpy- or dask-backed
    (channel, time) signal, as a float64 array of shape (len(q), n_channels)."""
    if is_lazy(sig):
        # exact quantiles need all of a channel's samples together: one channel per chunk
        sig = sig.chunk({"channel": 1, "time": -1})
    q = sig.quantile(np.asarray(q) / 100.0, dim="time").compute()
    return np.asarray(q.transpose("quantile", "channel").values, dtype=np.float64)


def _channel_stats(ds, lo, hi, func):
    """Median and IQR of each channel of one recording over time (the "channel" method)."""
    names = [str(c) for c in ds["channel"].values]
    qv = _quantiles(ds["signal"], [lo, 50.0, hi])
    if not np.all(np.isfinite(qv)):
        bad = [names[i] for i in np.flatnonzero(~np.isfinite(qv).all(axis=0))]
        raise DataError(f"{func}: signal must be finite; channels {bad[:5]} hold NaN/Inf")
    return _stats_dataset(names, qv[1], qv[2] - qv[0], "channel", (lo, hi), 1)


def _check_quantile_range(quantile_range, func):
    try:
        lo, hi = (float(v) for v in quantile_range)
    except (TypeError, ValueError):
        raise NeurofmError(f"{func}: quantile_range must be two percentiles (low, high); got "
                           f"{quantile_range!r}") from None
    if not 0 <= lo < hi <= 100:
        raise NeurofmError(f"{func}: quantile_range must satisfy 0 <= low < high <= 100; got "
                           f"{quantile_range!r}")
    return lo, hi


def _stats_dataset(channels, median, iqr, method, quantile_range, n_recordings):
    return xr.Dataset(
        {"median": ("channel", np.asarray(median, dtype=np.float64)),
         "iqr": ("channel", np.asarray(iqr, dtype=np.float64))},
        coords={"channel": np.asarray(channels, dtype=str)},
        attrs={"method": method, "quantile_range": list(quantile_range),
               "n_recordings": int(n_recordings)},
    )


def robust_scale(ds, stats=None, *, quantile_range=(25.0, 75.0)):
    """Robust scaling per channel: ``(signal - median) / IQR``.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical recording, ``signal`` of shape (n_channels, n_times); not modified.
    stats : xarray.Dataset | None
        Statistics with ``median`` and ``iqr`` variables on a ``channel`` dim (as returned
        here or by :func:`robust_scale_stats`); matched to ``ds`` by channel name. None
        computes them from ``ds`` itself (median and IQR of each channel over time, as
        :class:`sklearn.preprocessing.RobustScaler` does).
    quantile_range : (float, float)
        Percentiles defining the IQR when ``stats`` is None.

    Returns
    -------
    ds : xarray.Dataset
        New recording with the scaled ``signal`` (float32, units ``"a.u."``) and a
        ``robust_scale`` history step.
    stats : xarray.Dataset
        The statistics used: ``median`` and ``iqr`` of shape (n_channels,). An IQR of 0 is
        replaced by 1 when applied (as in scikit-learn), with a warning.
    """
    func = "robust_scale"
    check_recording(ds, func)
    names = [str(c) for c in ds["channel"].values]
    if stats is None:
        stats = _channel_stats(ds, *_check_quantile_range(quantile_range, func), func)
    else:
        stats = _check_stats(stats, names, func)
    median = stats["median"].sel(channel=names).values
    iqr = stats["iqr"].sel(channel=names).values
    zero = iqr == 0
    if zero.any():
        logger.warning("%s: IQR is 0 for channel(s) %s; they are only centred", func,
                       [names[i] for i in np.flatnonzero(zero)][:5])
    scale = np.where(zero, 1.0, iqr)
    sig = ds["signal"]
    ch_axis = sig.dims.index("channel")
    shape = [1] * sig.ndim
    shape[ch_axis] = len(names)
    data = ((sig.data.astype(np.float64) - median.reshape(shape)) / scale.reshape(shape)
            ).astype(np.float32)
    out = replace_signal(ds, data, units="a.u.", drop_ch_units=True)
    out = append_history(out, "robust_scale", method=stats.attrs.get("method", "given"),
                         quantile_range=stats.attrs.get("quantile_range"),
                         n_recordings=stats.attrs.get("n_recordings"))
    return out, stats


def _check_stats(stats, names, func):
    if not isinstance(stats, xr.Dataset) or not {"median", "iqr"} <= set(stats.data_vars):
        raise NeurofmError(f"{func}: stats must be an xarray.Dataset with 'median' and 'iqr' "
                           f"variables on a 'channel' dim; got {type(stats).__name__}")
    have = [str(c) for c in stats["channel"].values]
    missing = [c for c in names if c not in have]
    if missing:
        raise DataError(f"{func}: stats has no entry for channels {missing[:10]} of the "
                        f"recording (stats cover {len(have)} channels)")
    return stats


def robust_scale_stats(recordings, *, method="subject_means", quantile_range=(25.0, 75.0)):
    """Robust-scaling statistics across recordings (e.g. the training subjects).

    Parameters
    ----------
    recordings : sequence of xarray.Dataset
        Canonical recordings with the same channels (``n_channels``; matched by name).
    method : {"subject_means", "pooled", "channel"}
        ``"subject_means"`` (Brain-JEPA pretraining, METHODS.md section 1): each recording's
        temporal mean per channel, then the median and IQR of those means across
        recordings. ``"pooled"``: median and IQR of all samples of all recordings per
        channel. ``"channel"``: the statistics of a single recording over time.
    quantile_range : (float, float)
        Percentiles defining the IQR (linear interpolation, as :func:`numpy.percentile`).

    Returns
    -------
    stats : xarray.Dataset
        ``median`` and ``iqr`` of shape (n_channels,), with attrs ``method``,
        ``quantile_range`` and ``n_recordings``.
    """
    func = "robust_scale_stats"
    check_option("method", method, _STATS_METHODS)
    lo, hi = _check_quantile_range(quantile_range, func)
    if isinstance(recordings, xr.Dataset):
        recordings = [recordings]
    recordings = list(recordings)
    if not recordings:
        raise NeurofmError(f"{func}: recordings is empty; give at least one recording")
    if method == "channel" and len(recordings) != 1:
        raise NeurofmError(f"{func}: method='channel' takes one recording; got "
                           f"{len(recordings)} (use 'pooled' or 'subject_means')")
    for i, ds in enumerate(recordings):
        check_recording(ds, f"{func} (recording {i})")
    names = [str(c) for c in recordings[0]["channel"].values]
    for i, ds in enumerate(recordings[1:], start=1):
        other = [str(c) for c in ds["channel"].values]
        if sorted(other) != sorted(names):
            raise DataError(
                f"{func}: recording {i} has different channels than recording 0 "
                f"(missing {sorted(set(names) - set(other))[:5]}, extra "
                f"{sorted(set(other) - set(names))[:5]}); pick the same channels first")
    if method == "channel":
        return _channel_stats(recordings[0], lo, hi, func)
    if method == "subject_means":
        means = np.stack([
            np.asarray(ds["signal"].sel(channel=names).astype(np.float64).mean("time").values)
            for ds in recordings])                                       # (n_recordings, C)
        median = np.median(means, axis=0)
        iqr = np.percentile(means, hi, axis=0) - np.percentile(means, lo, axis=0)
    else:
        pooled = xr.concat([ds["signal"].sel(channel=names).astype(np.float64)
                            .drop_vars([c for c in ds["signal"].coords if c != "channel"])
                            for ds in recordings], dim="time")
        qv = _quantiles(pooled, [lo, 50.0, hi])
        median, iqr = qv[1], qv[2] - qv[0]
    if not (np.all(np.isfinite(median)) and np.all(np.isfinite(iqr))):
        raise DataError(f"{func}: the recordings hold NaN/Inf; statistics are not finite")
    return _stats_dataset(names, median, iqr, method, (lo, hi), len(recordings))
