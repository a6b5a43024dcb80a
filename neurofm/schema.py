"""The canonical recording (schema version 1).

Every loader returns, and everything downstream accepts, one :class:`xarray.Dataset` per
recording::

    dims        channel, time  (+ event, space=3 where present)
    data var    signal (channel, time) float32, attrs: units
    coords      channel (str), time (float64, s), ch_type (channel, str),
                ch_pos (channel, space) float64 (NaN where unknown), bad (channel, bool)
    event vars  event_onset (s), event_duration (s), event_description (str) on dim event
    attrs       flat JSON-safe scalars: modality, sfreq, subject, session, task, run,
                source_file, source_format, schema_version=1, history (JSON list)

:func:`make_recording` builds it, :func:`validate` checks it and reports every problem at
once, :func:`append_history` records a processing step on a copy.
"""

from __future__ import annotations

import datetime as _dt
import json
import numbers

import numpy as np
import xarray as xr

from ._checks import check_option, check_positive, validate_type
from ._version import __version__
from .errors import DataError, NeurofmError, SchemaError

__all__ = [
    "CH_TYPES",
    "DEFAULT_UNITS",
    "MODALITIES",
    "SCHEMA_VERSION",
    "append_history",
    "history",
    "make_recording",
    "to_json_safe",
    "validate",
]

SCHEMA_VERSION = 1

MODALITIES = ("eeg", "meg", "ieeg", "fmri", "calcium")

#: Channel types of the canonical layout. The first eleven are the ones of DESIGN.md; the
#: rest keep MNE's auxiliary types distinct so that a round trip through MNE is lossless.
CH_TYPES = (
    "eeg", "meg_mag", "meg_grad", "seeg", "ecog", "eog", "ecg", "emg", "misc", "roi", "cell",
    "ref_meg", "dbs", "stim", "resp", "bio",
)

#: Units of ``signal`` for each channel type when the caller gives none.
DEFAULT_UNITS = {
    "eeg": "uV", "seeg": "uV", "ecog": "uV", "dbs": "uV", "eog": "uV", "ecg": "uV",
    "emg": "uV", "meg_mag": "fT", "ref_meg": "fT", "meg_grad": "fT/cm", "roi": "a.u.",
    "cell": "a.u.", "misc": "a.u.", "stim": "a.u.", "resp": "a.u.", "bio": "a.u.",
}

_DEFAULT_CH_TYPE = {"eeg": "eeg", "meg": "meg_mag", "ieeg": "seeg", "fmri": "roi",
                    "calcium": "cell"}

#: Attributes every recording carries (None becomes "" so that attrs stay JSON scalars).
REQUIRED_ATTRS = ("modality", "sfreq", "schema_version", "history")
IDENTITY_ATTRS = ("subject", "session", "task", "run", "source_file", "source_format")

_CORE_DIMS = ("channel", "time")
_EVENT_VARS = ("event_onset", "event_duration", "event_description")


# --------------------------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------------------------
def to_json_safe(value):
    """Convert numpy scalars/arrays, tuples and paths into JSON-serialisable Python objects."""
    if isinstance(value, dict):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json_safe(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    return str(value)


def _is_attr_scalar(value):
    return value is None or isinstance(value, (str, bool, numbers.Real))


# --------------------------------------------------------------------------------------------
# construction
# --------------------------------------------------------------------------------------------
def make_recording(
    signal,
    *,
    channel,
    sfreq,
    modality,
    ch_type=None,
    ch_pos=None,
    units=None,
    events=None,
    bad=None,
    tmin=0.0,
    pos_coord_frame="unknown",
    pos_units="m",
    **attrs,
):
    """Build a canonical recording.

    Parameters
    ----------
    signal : array-like of shape (n_channels, n_times)
        The samples, already in the units given by ``units``. Stored as float32 (copied);
        a dask array stays lazy.
    channel : sequence of str, length n_channels
        Unique channel names (sensor names, ROI labels, neuron ids).
    sfreq : float
        Sampling frequency in Hz.
    modality : {"eeg", "meg", "ieeg", "fmri", "calcium"}
        Recording modality.
    ch_type : str | sequence of str, optional
        One type for all channels or one per channel (see :data:`CH_TYPES`). Defaults to the
        modality's usual type (eeg, meg_mag, seeg, roi, cell).
    ch_pos : array-like of shape (n_channels, 3) | dict, optional
        Positions; a dict maps channel names to 3-vectors. NaN where unknown.
    units : str | sequence of str, optional
        Units of ``signal``; one per channel allowed (stored as the ``ch_units`` coordinate
        when they differ). Defaults from the channel types.
    events : pandas.DataFrame | dict | sequence of (onset, duration, description), optional
        Events with onset and duration in seconds on the same axis as ``time``.
    bad : sequence of str | array-like of bool, optional
        Bad channels, by name or as a boolean mask.
    tmin : float
        Time of the first sample in seconds (``time = tmin + arange(n_times) / sfreq``).
    pos_coord_frame, pos_units : str
        Stored as attrs of ``ch_pos`` (e.g. "head" and "m" for MNE, "mni" and "mm" for fMRI).
    **attrs
        Flat JSON-safe attributes (subject, session, task, run, source_file, ...).

    Returns
    -------
    ds : xarray.Dataset
        The canonical recording; see :mod:`neurofm.schema`.
    """
    check_option("modality", modality, MODALITIES)
    sfreq = check_positive("sfreq", sfreq)
    if hasattr(signal, "dask"):  # dask array: stay lazy
        data = signal.astype(np.float32)
    else:
        data = np.array(signal, dtype=np.float32, copy=True)
    if data.ndim != 2:
        raise DataError(
            f"signal must be a 2-D array of shape (n_channels, n_times); got shape {data.shape}"
        )
    n_ch, n_t = data.shape
    names = [str(c) for c in channel]
    if len(names) != n_ch:
        raise DataError(
            f"channel has {len(names)} names but signal has {n_ch} channels (shape {data.shape})"
        )
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise DataError(f"channel names must be unique; duplicated: {dupes}")

    types = _per_channel("ch_type", ch_type if ch_type is not None
                         else _DEFAULT_CH_TYPE[modality], n_ch)
    unknown = sorted(set(types) - set(CH_TYPES))
    if unknown:
        raise NeurofmError(f"ch_type must be among {CH_TYPES}; got unknown types {unknown}")

    if units is None:
        unit_list = [DEFAULT_UNITS[t] for t in types]
    else:
        unit_list = _per_channel("units", units, n_ch)

    pos = _positions(ch_pos, names)
    bad_mask = _bad_mask(bad, names)
    time = float(tmin) + np.arange(n_t, dtype=np.float64) / sfreq

    coords = {
        "channel": ("channel", np.array(names, dtype=str)),
        "time": ("time", time, {"units": "s"}),
        "ch_type": ("channel", np.array(types, dtype=str)),
        "ch_pos": (("channel", "space"), pos, {"coord_frame": str(pos_coord_frame),
                                               "units": str(pos_units)}),
        "bad": ("channel", bad_mask),
        "space": ("space", np.array(["x", "y", "z"])),
    }
    if len(set(unit_list)) > 1:
        coords["ch_units"] = ("channel", np.array(unit_list, dtype=str))
        sig_units = "mixed"
    else:
        sig_units = unit_list[0] if unit_list else "a.u."

    ds = xr.Dataset(
        {"signal": (("channel", "time"), data, {"units": sig_units})}, coords=coords
    )
    onset, duration, description = _events(events)
    ds["event_onset"] = ("event", onset, {"units": "s"})
    ds["event_duration"] = ("event", duration, {"units": "s"})
    ds["event_description"] = ("event", description)

    out_attrs = {"modality": modality, "sfreq": sfreq}
    for key in IDENTITY_ATTRS:
        out_attrs[key] = ""
    for key, value in attrs.items():
        value = to_json_safe(value)
        if not _is_attr_scalar(value):
            raise NeurofmError(
                f"attribute {key!r} must be a JSON scalar (str, int, float, bool); got "
                f"{type(value).__name__}; put nested provenance into history"
            )
        out_attrs[key] = "" if value is None else value
    out_attrs["schema_version"] = SCHEMA_VERSION
    out_attrs.setdefault("history", "[]")
    if not isinstance(out_attrs["history"], str):
        out_attrs["history"] = json.dumps(to_json_safe(out_attrs["history"]))
    ds.attrs = out_attrs
    return ds


def _per_channel(name, value, n_ch):
    if isinstance(value, str):
        return [value] * n_ch
    values = [str(v) for v in value]
    if len(values) != n_ch:
        raise DataError(f"{name} must be a string or have one entry per channel ({n_ch}); "
                        f"got {len(values)} entries")
    return values


def _positions(ch_pos, names):
    n_ch = len(names)
    pos = np.full((n_ch, 3), np.nan, dtype=np.float64)
    if ch_pos is None:
        return pos
    if isinstance(ch_pos, dict):
        for i, name in enumerate(names):
            if name in ch_pos and ch_pos[name] is not None:
                pos[i] = np.asarray(ch_pos[name], dtype=np.float64).reshape(3)
        return pos
    arr = np.array(ch_pos, dtype=np.float64, copy=True)
    if arr.shape != (n_ch, 3):
        raise DataError(f"ch_pos must have shape (n_channels, 3) = ({n_ch}, 3); got {arr.shape}")
    return arr


def _bad_mask(bad, names):
    if bad is None:
        return np.zeros(len(names), dtype=bool)
    bad = list(bad) if not isinstance(bad, np.ndarray) else bad
    if len(bad) and all(isinstance(b, (bool, np.bool_)) for b in bad):
        mask = np.asarray(bad, dtype=bool)
        if mask.shape != (len(names),):
            raise DataError(f"bad mask must have one entry per channel ({len(names)}); "
                            f"got shape {mask.shape}")
        return mask
    bad = [str(b) for b in bad]
    missing = sorted(set(bad) - set(names))
    if missing:
        raise DataError(f"bad names channels that do not exist: {missing}")
    return np.isin(np.array(names), bad)


def _events(events):
    if events is None:
        return np.zeros(0), np.zeros(0), np.array([], dtype=str)
    try:
        import pandas as pd

        if isinstance(events, pd.DataFrame):
            onset = events["onset"].to_numpy(dtype=np.float64)
            duration = (events["duration"].to_numpy(dtype=np.float64)
                        if "duration" in events else np.zeros(len(onset)))
            desc = [str(d) for d in events["description"]]
        elif isinstance(events, dict):
            onset = np.asarray(events["onset"], dtype=np.float64)
            duration = np.asarray(events.get("duration", np.zeros(len(onset))), dtype=np.float64)
            desc = [str(d) for d in events["description"]]
        else:
            rows = list(events)
            onset = np.array([r[0] for r in rows], dtype=np.float64)
            duration = np.array([r[1] for r in rows], dtype=np.float64)
            desc = [str(r[2]) for r in rows]
    except (KeyError, TypeError, IndexError, ValueError) as err:
        raise DataError(
            "events must be a DataFrame/dict with onset, duration, description or a sequence "
            f"of (onset, duration, description) tuples; could not use {type(events).__name__}: "
            f"{err}"
        ) from err
    if not (len(onset) == len(duration) == len(desc)):
        raise DataError(f"events: onset ({len(onset)}), duration ({len(duration)}) and "
                        f"description ({len(desc)}) differ in length")
    # Python str first: MNE >= 1.13 hands out numpy StringDType, which refuses to cast to U.
    width = max((len(d) for d in desc), default=1)
    return onset, duration, np.array(desc, dtype=f"<U{max(width, 1)}")


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def validate(ds, *, check_values=True, name="recording"):
    """Check that ``ds`` follows the canonical layout; report every problem at once.

    Parameters
    ----------
    ds : xarray.Dataset
        The recording to check.
    check_values : bool
        Also scan the signal for NaN/Inf (loads it). NaN is allowed in channels whose
        ``recorded`` coordinate is False (C. elegans slots that were not recorded).
    name : str
        How the recording is called in the message (e.g. its file path).

    Returns
    -------
    ds : xarray.Dataset
        The same object, so that ``ds = validate(ds)`` reads naturally.

    Raises
    ------
    SchemaError
        Listing every problem found.
    """
    if not isinstance(ds, xr.Dataset):
        raise SchemaError([f"expected an xarray.Dataset, got {type(ds).__name__}"], name)
    problems = []
    problems += _check_signal(ds, check_values)
    problems += _check_coords(ds)
    problems += _check_events(ds)
    problems += _check_attrs(ds)
    if problems:
        raise SchemaError(problems, name)
    return ds


def _check_signal(ds, check_values):
    if "signal" not in ds.data_vars:
        return ["missing data variable 'signal' (channel, time)"]
    sig = ds["signal"]
    problems = []
    if sig.dims != _CORE_DIMS:
        missing = [d for d in _CORE_DIMS if d not in sig.dims]
        extra = [d for d in sig.dims if d not in _CORE_DIMS]
        msg = f"signal must have dims ('channel', 'time'); found {sig.dims}"
        if missing:
            msg += f" (missing {missing})"
        if extra:
            msg += f" (extra {extra})"
        problems.append(msg)
    if sig.dtype != np.float32:
        problems.append(f"signal must be float32; found {sig.dtype}")
    units = sig.attrs.get("units")
    if not isinstance(units, str) or not units:
        problems.append(f"signal.attrs['units'] must be a non-empty string; found {units!r}")
    elif units == "mixed" and "ch_units" not in ds.coords:
        problems.append("signal units are 'mixed' but there is no 'ch_units' (channel) coord")
    if check_values and not problems and sig.size:
        finite = np.isfinite(sig)
        nan_ok = None
        if "recorded" in ds.coords:
            nan_ok = ~ds.coords["recorded"].astype(bool)
        bad_vals = ~finite
        if nan_ok is not None:
            bad_vals = bad_vals & ~(np.isnan(sig) & nan_ok)
        per_channel = bad_vals.sum("time")
        n_bad = int(per_channel.sum())
        if n_bad:
            chans = [str(c) for c in ds["channel"].values[np.asarray(per_channel) > 0]]
            shown = ", ".join(chans[:5]) + (" ..." if len(chans) > 5 else "")
            problems.append(f"signal has {n_bad} NaN/Inf values in {len(chans)} channel(s): "
                            f"{shown}")
    return problems


def _check_coords(ds):
    problems = []
    if "channel" not in ds.coords:
        problems.append("missing coordinate 'channel'")
    else:
        ch = ds["channel"]
        if ch.dtype.kind not in "UO":
            problems.append(f"channel coordinate must hold strings; found dtype {ch.dtype}")
        values = [str(v) for v in ch.values]
        if len(set(values)) != len(values):
            problems.append("channel names must be unique")
    if "time" not in ds.coords:
        problems.append("missing coordinate 'time'")
    else:
        problems += _check_time(ds)
    if "ch_type" not in ds.coords:
        problems.append("missing coordinate 'ch_type' (channel)")
    else:
        ct = ds["ch_type"]
        if ct.dims != ("channel",):
            problems.append(f"ch_type must have dims ('channel',); found {ct.dims}")
        unknown = sorted({str(v) for v in ct.values} - set(CH_TYPES))
        if unknown:
            problems.append(f"unknown ch_type values {unknown}; expected among {CH_TYPES}")
    if "ch_pos" not in ds.coords:
        problems.append("missing coordinate 'ch_pos' (channel, space)")
    else:
        pos = ds["ch_pos"]
        if pos.dims != ("channel", "space") or pos.sizes.get("space") != 3:
            problems.append(f"ch_pos must have dims ('channel', 'space') with space=3; found "
                            f"{dict(pos.sizes)}")
        if pos.dtype != np.float64:
            problems.append(f"ch_pos must be float64 (NaN where unknown); found {pos.dtype}")
    if "bad" not in ds.coords:
        problems.append("missing coordinate 'bad' (channel, bool)")
    elif ds["bad"].dtype != bool or ds["bad"].dims != ("channel",):
        problems.append(f"bad must be a boolean (channel,) coord; found dtype {ds['bad'].dtype} "
                        f"dims {ds['bad'].dims}")
    return problems


def _check_time(ds):
    problems = []
    time = ds["time"]
    if time.dims != ("time",):
        return [f"time coordinate must have dims ('time',); found {time.dims}"]
    if time.dtype != np.float64:
        problems.append(f"time must be float64 seconds; found {time.dtype}")
        return problems
    t = np.asarray(time.values)
    if t.size < 2:
        return problems
    dt = np.diff(t)
    if not np.all(dt > 0):
        first = int(np.argmax(~(dt > 0)))
        problems.append(f"time must be strictly increasing; it is not at sample {first + 1} "
                        f"({t[first]!r} -> {t[first + 1]!r})")
        return problems
    sfreq = ds.attrs.get("sfreq")
    if isinstance(sfreq, numbers.Real) and not isinstance(sfreq, bool) and sfreq > 0:
        step = 1.0 / float(sfreq)
        ratio = dt / step
        tol = 1e-6 * max(1.0, float(np.abs(t).max()) / step) + 1e-6
        off_grid = np.abs(ratio - np.round(ratio)) > tol
        median = float(np.median(ratio))
        if abs(median - 1.0) > 1e-3 or off_grid.any():
            problems.append(
                f"time spacing is inconsistent with sfreq={sfreq}: expected steps of "
                f"{step:.6g} s (or whole multiples where samples were dropped); found median "
                f"step {float(np.median(dt)):.6g} s"
            )
    return problems


def _check_events(ds):
    present = [v for v in _EVENT_VARS if v in ds.variables]
    if not present:
        return []
    problems = []
    missing = [v for v in _EVENT_VARS if v not in ds.variables]
    if missing:
        problems.append(f"event variables come together; missing {missing}")
    for v in present:
        if ds[v].dims != ("event",):
            problems.append(f"{v} must have dims ('event',); found {ds[v].dims}")
    for v in ("event_onset", "event_duration"):
        if v in ds.variables and ds[v].dtype.kind != "f":
            problems.append(f"{v} must be float seconds; found dtype {ds[v].dtype}")
    if "event_description" in ds.variables and ds["event_description"].dtype.kind not in "UO":
        problems.append(f"event_description must hold strings; found "
                        f"{ds['event_description'].dtype}")
    return problems


def _check_attrs(ds):
    problems = []
    attrs = ds.attrs
    for key in REQUIRED_ATTRS:
        if key not in attrs:
            problems.append(f"missing attribute {key!r}")
    for key, value in attrs.items():
        if not _is_attr_scalar(value):
            problems.append(f"attribute {key!r} is not a JSON scalar (found "
                            f"{type(value).__name__}); keep attrs flat")
    modality = attrs.get("modality")
    if "modality" in attrs and modality not in MODALITIES:
        problems.append(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    if "sfreq" in attrs:
        sfreq = attrs["sfreq"]
        if (isinstance(sfreq, bool) or not isinstance(sfreq, numbers.Real)
                or not np.isfinite(sfreq) or sfreq <= 0):
            problems.append(f"sfreq must be a finite number > 0; found {sfreq!r}")
    if "schema_version" in attrs and attrs["schema_version"] != SCHEMA_VERSION:
        problems.append(f"schema_version must be {SCHEMA_VERSION}; found "
                        f"{attrs['schema_version']!r}")
    if "history" in attrs:
        try:
            hist = json.loads(attrs["history"])
            if not isinstance(hist, list):
                problems.append("history must be a JSON list of steps")
        except (TypeError, ValueError):
            problems.append(f"history must be a JSON string; found {attrs['history']!r:.80}")
    return problems


# --------------------------------------------------------------------------------------------
# provenance
# --------------------------------------------------------------------------------------------
def history(ds):
    """Return the processing history of ``ds`` as a list of dicts."""
    raw = ds.attrs.get("history", "[]")
    try:
        return json.loads(raw)
    except (TypeError, ValueError) as err:
        raise SchemaError([f"history attribute is not valid JSON: {err}"]) from err


def append_history(ds, step, **params):
    """Return a shallow copy of ``ds`` with one processing step added to its history.

    Parameters
    ----------
    ds : xarray.Dataset
        A canonical recording; it is not modified.
    step : str
        Name of the step (usually the function name, e.g. ``"filter"``).
    **params
        Parameters of the step; converted to JSON-safe values.

    Returns
    -------
    ds : xarray.Dataset
        A new Dataset sharing the data of the input, with the longer ``history`` attr.
    """
    validate_type("step", step, str)
    steps = history(ds)
    steps.append({
        "step": step,
        "params": to_json_safe(params),
        "neurofm_version": __version__,
        "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    })
    out = ds.copy(deep=False)
    out.attrs = dict(ds.attrs)
    out.attrs["history"] = json.dumps(steps)
    return out
