"""Channel selection, re-referencing and cropping of canonical recordings."""

from __future__ import annotations

import numbers

import numpy as np
import xarray as xr

from .._dataset import (
    check_channels_exist,
    check_recording,
    replace_signal,
    sfreq_of,
    unshare,
)
from ..errors import DataError, NeurofmError
from ..schema import CH_TYPES, append_history

__all__ = ["crop", "pick", "rereference"]

#: Shorthands accepted by :func:`pick` for groups of channel types.
CH_TYPE_GROUPS = {"meg": ("meg_mag", "meg_grad")}

#: Channel types that can be re-referenced, in the order MNE's ``ch_type="auto"`` tries them.
REFERENCE_CH_TYPES = ("eeg", "ecog", "seeg", "dbs")


def _as_list(name, value, func):
    if isinstance(value, str):
        return [value]
    try:
        values = [str(v) for v in value]
    except TypeError:
        raise NeurofmError(f"{func}: {name} must be a string or a list of strings; got "
                           f"{type(value).__name__} ({value!r})") from None
    return values


def pick(ds, ch_type=None, *, exclude_bad=True, channels=None):
    """Keep a subset of channels.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical recording with ``n_channels`` channels; not modified.
    ch_type : str | sequence of str | None
        Channel types to keep (see :data:`neurofm.schema.CH_TYPES`; ``"meg"`` means
        ``meg_mag`` and ``meg_grad``). None keeps every type.
    exclude_bad : bool
        Drop channels marked in the ``bad`` coordinate.
    channels : sequence of str | None
        Channel names to keep, in this order (combined with ``ch_type``).

    Returns
    -------
    ds : xarray.Dataset
        New recording with ``n_picked`` channels; every variable on the ``channel`` dim is
        subset; a ``pick`` history step lists the kept channels.

    Raises
    ------
    DataError
        When a named channel does not exist or nothing is left.
    """
    func = "pick"
    check_recording(ds, func)
    names = np.array([str(c) for c in ds["channel"].values])
    types = np.array([str(t) for t in ds["ch_type"].values])
    keep = np.ones(len(names), dtype=bool)
    wanted_types = None
    if ch_type is not None:
        wanted_types = []
        for t in _as_list("ch_type", ch_type, func):
            wanted_types.extend(CH_TYPE_GROUPS.get(t, (t,)))
        unknown = sorted(set(wanted_types) - set(CH_TYPES))
        if unknown:
            raise NeurofmError(f"{func}: ch_type must be among {CH_TYPES} or "
                               f"{sorted(CH_TYPE_GROUPS)}; got unknown {unknown}")
        keep &= np.isin(types, wanted_types)
    if exclude_bad:
        keep &= ~np.asarray(ds["bad"].values, dtype=bool)
    if channels is not None:
        wanted = _as_list("channels", channels, func)
        check_channels_exist(ds, wanted, "channels", func)
        order = [int(np.flatnonzero(names == c)[0]) for c in wanted]
        idx = [i for i in order if keep[i]]
    else:
        idx = list(np.flatnonzero(keep))
    if not idx:
        raise DataError(
            f"{func}: no channel left after picking ch_type={ch_type!r}, "
            f"exclude_bad={exclude_bad}, channels={channels!r}; the recording has types "
            f"{sorted(set(types))} and {int(np.sum(ds['bad'].values))} bad channel(s)"
        )
    out = unshare(ds.isel(channel=np.asarray(idx, dtype=int)), ds)
    return append_history(out, "pick", ch_type=wanted_types, exclude_bad=exclude_bad,
                          channels=[str(c) for c in names[idx]])


def rereference(ds, ref_channels="average", *, ch_type="auto"):
    """Re-reference electrode channels to their average or to given channels.

    Same arithmetic as :func:`mne.set_eeg_reference` with ``projection=False``: the
    reference (mean of ``ref_channels``) is subtracted from every good channel of the
    re-referenced type; bad channels and other types are left as they are.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical recording, ``signal`` of shape (n_channels, n_times); not modified.
    ref_channels : "average" | sequence of str
        ``"average"`` uses the good channels of ``ch_type``; a list names the reference
        channels (e.g. ``["M1", "M2"]`` for linked mastoids).
    ch_type : "auto" | str
        Electrode type to re-reference: one of ``eeg``, ``ecog``, ``seeg``, ``dbs``;
        ``"auto"`` takes the first of those present.

    Returns
    -------
    ds : xarray.Dataset
        New recording with the re-referenced ``signal`` and a ``rereference`` history step.
    """
    func = "rereference"
    check_recording(ds, func)
    types = np.array([str(t) for t in ds["ch_type"].values])
    names = np.array([str(c) for c in ds["channel"].values])
    if ch_type == "auto":
        present = [t for t in REFERENCE_CH_TYPES if t in set(types)]
        if not present:
            raise DataError(f"{func}: the recording has no electrode channels to re-reference "
                            f"(types {sorted(set(types))}; expected one of "
                            f"{REFERENCE_CH_TYPES})")
        ch_type = present[0]
    elif ch_type not in REFERENCE_CH_TYPES:
        raise NeurofmError(f"{func}: ch_type must be 'auto' or one of {REFERENCE_CH_TYPES}; "
                           f"got {ch_type!r}")
    bad = np.asarray(ds["bad"].values, dtype=bool)
    ref_to = np.flatnonzero((types == ch_type) & ~bad)
    if not len(ref_to):
        raise DataError(f"{func}: no good {ch_type} channel to re-reference")
    if isinstance(ref_channels, str) and ref_channels == "average":
        ref_from = ref_to
        ref_names = "average"
    elif isinstance(ref_channels, str):
        raise NeurofmError(f"{func}: ref_channels must be 'average' or a list of channel "
                           f"names; got the string {ref_channels!r} (wrap one name in a list)")
    else:
        ref_names = _as_list("ref_channels", ref_channels, func)
        if not ref_names:
            raise NeurofmError(f"{func}: ref_channels is an empty list; give 'average' or "
                               "channel names")
        check_channels_exist(ds, ref_names, "ref_channels", func)
        ref_from = np.array([int(np.flatnonzero(names == c)[0]) for c in ref_names])
    sig = ds["signal"].variable.astype(np.float64)
    ref = sig.isel(channel=ref_from).mean("channel")                       # (time,)
    weight = np.zeros(len(names), dtype=np.float64)
    weight[ref_to] = 1.0
    new = (sig - ref * xr.Variable("channel", weight)).transpose(*sig.dims)
    new = new.astype(np.float32).data
    out = replace_signal(ds, new)
    return append_history(out, "rereference", ref_channels=ref_names, ch_type=ch_type,
                          applied_to=[str(c) for c in names[ref_to]])


def crop(ds, tmin=None, tmax=None, *, include_tmax=True):
    """Keep the samples between ``tmin`` and ``tmax`` seconds.

    Times are values of the ``time`` coordinate (not reset to zero, so crops of one
    recording stay aligned); like :meth:`mne.io.Raw.crop`, both limits are rounded to the
    nearest sample.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical recording with ``n_times`` samples; not modified.
    tmin, tmax : float | None
        Limits in seconds; None means the first / last sample.
    include_tmax : bool
        Keep the sample at ``tmax``.

    Returns
    -------
    ds : xarray.Dataset
        New recording with every ``time`` variable cropped; events whose onset falls
        outside the kept span are dropped; a ``crop`` history step.
    """
    func = "crop"
    check_recording(ds, func)
    t = np.asarray(ds["time"].values)
    sfreq = sfreq_of(ds)
    for name, value in (("tmin", tmin), ("tmax", tmax)):
        if value is not None and (isinstance(value, bool)
                                  or not isinstance(value, numbers.Real)
                                  or not np.isfinite(value)):
            raise NeurofmError(f"{func}: {name} must be a finite number of seconds or None; "
                               f"got {value!r}")
    lo = t[0] if tmin is None else float(tmin)
    hi = t[-1] if tmax is None else float(tmax)
    if hi < lo:
        raise NeurofmError(f"{func}: tmax ({tmax}) must be >= tmin ({tmin})")
    if lo > t[-1] + 0.5 / sfreq or hi < t[0] - 0.5 / sfreq:
        raise DataError(f"{func}: [{lo}, {hi}] s lies outside the recording, which spans "
                        f"{t[0]:.6g} to {t[-1]:.6g} s")
    k_lo = np.round((t - lo) * sfreq)
    k_hi = np.round((t - hi) * sfreq)
    keep = (k_lo >= 0) & ((k_hi <= 0) if include_tmax else (k_hi < 0))
    idx = np.flatnonzero(keep)
    if not len(idx):
        raise DataError(f"{func}: no sample between tmin={tmin} and tmax={tmax} s")
    out = ds.isel(time=slice(int(idx[0]), int(idx[-1]) + 1))
    if "event_onset" in out.variables and out.sizes.get("event", 0):
        onset = np.asarray(out["event_onset"].values)
        t_first, t_last = float(t[idx[0]]), float(t[idx[-1]])
        ev = (onset >= t_first - 0.5 / sfreq) & (onset <= t_last + 0.5 / sfreq)
        out = out.isel(event=np.flatnonzero(ev))
    out = unshare(out, ds)  # a slice of the input is a view of its buffers
    return append_history(out, "crop", tmin=tmin, tmax=tmax, include_tmax=include_tmax,
                          n_times=len(idx))
