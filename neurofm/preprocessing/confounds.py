"""Confound regression for fMRI ROI time series."""

from __future__ import annotations

import numpy as np

from .._dataset import check_recording, replace_signal
from ..errors import DataError, NeurofmError
from ..schema import append_history

__all__ = ["clean_confounds"]


def clean_confounds(ds, *, columns=None, standardize_confounds=True, detrend=False):
    """Regress the ``confounds`` variable out of the signal.

    Same projection as :func:`nilearn.signal.clean` with ``filter=False`` and
    ``standardize=False``: confounds are z-scored (``standardize_confounds``), reduced to an
    orthonormal basis by pivoted QR (dropping columns with ``|R_ii| <= 100 eps``) and
    projected out of every channel. With ``detrend`` the signal and the confounds are also
    linearly detrended (projecting out a constant and a linear trend, which gives the same
    numbers as detrending both first).

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical recording, ``signal`` of shape (n_channels, n_times), with a
        ``confounds`` variable of shape (n_times, n_confounds) on dims (time, confound),
        as the fMRI reader writes it. Not modified; may be dask-backed.
    columns : sequence of str | None
        Confound columns to use (values of the ``confound`` coordinate); None uses all.
    standardize_confounds : bool
        Z-score the confounds before the projection (centres them, so the signal mean is
        kept unless ``detrend``).
    detrend : bool
        Also remove a linear trend (and the mean) from the signal.

    Returns
    -------
    ds : xarray.Dataset
        New recording with the cleaned ``signal`` and a ``clean_confounds`` history step
        naming the columns used. The ``confounds`` variable is kept.
    """
    import scipy.linalg

    func = "clean_confounds"
    check_recording(ds, func)
    if "confounds" not in ds.data_vars:
        raise DataError(f"{func}: the recording has no 'confounds' variable (time, confound); "
                        "read the fMRI run with its confounds table")
    conf = ds["confounds"]
    if "time" not in conf.dims or conf.ndim != 2:
        raise DataError(f"{func}: 'confounds' must have dims (time, confound); found "
                        f"{conf.dims}")
    other = next(d for d in conf.dims if d != "time")
    conf = conf.transpose("time", other)
    names = [str(c) for c in conf[other].values] if other in conf.coords \
        else [str(i) for i in range(conf.sizes[other])]
    if columns is not None:
        columns = [columns] if isinstance(columns, str) else [str(c) for c in columns]
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(f"{func}: columns {missing} are not in the confounds table "
                            f"(it has {names[:10]}{' ...' if len(names) > 10 else ''})")
        conf = conf.isel({other: [names.index(c) for c in columns]})
        names = columns
    if not standardize_confounds and not detrend:
        raise NeurofmError(f"{func}: standardize_confounds=False and detrend=False would "
                           "regress uncentred confounds out of the signal mean; set one of "
                           "them (as nilearn.signal.clean requires)")
    C = np.asarray(conf.values, dtype=np.float64)                     # (T, K)
    if not np.all(np.isfinite(C)):
        bad = [names[i] for i in np.flatnonzero(~np.isfinite(C).all(axis=0))]
        raise DataError(f"{func}: confound columns {bad[:10]} hold NaN/Inf (fMRIPrep "
                        "derivative columns start with NaN: fill or drop them first)")
    n_t = C.shape[0]
    if detrend:
        trend = np.vstack([np.ones(n_t), np.arange(n_t, dtype=np.float64)]).T
        q_trend, _ = np.linalg.qr(trend)
        C = C - q_trend @ (q_trend.T @ C)
    if standardize_confounds:
        C = C - C.mean(axis=0)
        std = C.std(axis=0, ddof=1) if n_t > 1 else np.ones(C.shape[1])
        std[std < np.finfo(np.float64).eps] = 1.0
        C = C / std
    else:
        cmax = np.max(np.abs(C), axis=0)
        cmax[cmax == 0] = 1
        C = C / cmax
    Q, R, _ = scipy.linalg.qr(C, mode="economic", pivoting=True)
    Q = Q[:, np.abs(np.diag(R)) > np.finfo(np.float64).eps * 100.0]
    if detrend:
        Q = np.hstack([q_trend, Q])
    sig = ds["signal"]
    t_axis = sig.dims.index("time")
    x = sig.data.astype(np.float64)
    if t_axis == 1:
        cleaned = x - (x @ Q) @ Q.T
    else:
        cleaned = x - Q @ (Q.T @ x)
    out = replace_signal(ds, cleaned.astype(np.float32))
    return append_history(out, "clean_confounds", columns=names,
                          standardize_confounds=standardize_confounds, detrend=detrend,
                          rank=int(Q.shape[1]))
