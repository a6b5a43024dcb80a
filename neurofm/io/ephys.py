"""EEG, MEG and iEEG recordings in any raw format MNE reads -> canonical Dataset.

Reading goes through :func:`mne.io.read_raw`; :func:`from_mne` converts a loaded
:class:`mne.io.BaseRaw` (SI units) into the canonical layout (uV, fT, fT/cm) and
:func:`to_mne` goes back.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .._checks import check_option
from .._logging import logger, use_log_level
from ..errors import DataError, FormatError, NeurofmError
from ..schema import MODALITIES, append_history, make_recording

__all__ = ["MNE_TO_CH_TYPE", "SCALE_TO_SI", "from_mne", "read_ephys", "to_mne"]

#: MNE channel type -> canonical ch_type.
MNE_TO_CH_TYPE = {
    "eeg": "eeg", "mag": "meg_mag", "grad": "meg_grad", "ref_meg": "ref_meg",
    "seeg": "seeg", "ecog": "ecog", "dbs": "dbs", "eog": "eog", "ecg": "ecg", "emg": "emg",
    "stim": "stim", "resp": "resp", "bio": "bio", "misc": "misc",
}
_CH_TYPE_TO_MNE = {v: k for k, v in MNE_TO_CH_TYPE.items()}
_CH_TYPE_TO_MNE.update({"roi": "misc", "cell": "misc"})

#: Canonical units of each MNE channel type and the factor from MNE's SI value.
_UNITS_FROM_SI = {
    "eeg": ("uV", 1e6), "seeg": ("uV", 1e6), "ecog": ("uV", 1e6), "dbs": ("uV", 1e6),
    "eog": ("uV", 1e6), "ecg": ("uV", 1e6), "emg": ("uV", 1e6),
    "mag": ("fT", 1e15), "ref_meg": ("fT", 1e15), "grad": ("fT/cm", 1e13),
}

#: Multiply a value in these units by the factor to get SI (V, T, T/m).
SCALE_TO_SI = {
    "V": 1.0, "mV": 1e-3, "uV": 1e-6, "µV": 1e-6, "nV": 1e-9,
    "T": 1.0, "pT": 1e-12, "fT": 1e-15, "T/m": 1.0, "fT/cm": 1e-13, "fT/m": 1e-15,
    "a.u.": 1.0, "z": 1.0, "dF/F": 1.0,
}

_FORMAT_NAMES = {
    ".fif": "fif", ".fif.gz": "fif", ".edf": "edf", ".bdf": "bdf", ".gdf": "gdf",
    ".vhdr": "brainvision", ".ahdr": "brainvision", ".set": "eeglab", ".cnt": "cnt",
    ".sqd": "kit", ".con": "kit", ".ds": "ctf", ".mff": "egi", ".nxe": "eximia",
    ".lay": "persyst", ".eeg": "nihon", ".data": "nicolet", ".bin": "artemis123",
    ".mef": "mef", ".cdt": "curry", ".snirf": "snirf", ".nedf": "nedf", ".e": "nicolet",
}

_FRAMES = {0: "unknown", 1: "meg", 4: "head", 5: "mri", 2: "isotrak", 3: "hpi"}


def _source_format(path):
    name = Path(path).name.lower()
    for ext in sorted(_FORMAT_NAMES, key=len, reverse=True):
        if name.endswith(ext):
            return _FORMAT_NAMES[ext]
    return Path(path).suffix.lstrip(".").lower() or "unknown"


def _is_ephys_dir(path):
    """Directory formats MNE reads: CTF ``.ds`` and EGI ``.mff``."""
    return Path(path).suffix.lower() in (".ds", ".mff")


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def read_ephys(path, *, modality=None, montage=None, preload=True, start=None, stop=None,
               verbose=None):
    """Read an EEG/MEG/iEEG file into the canonical Dataset.

    Parameters
    ----------
    path : str | os.PathLike
        Any raw format :func:`mne.io.read_raw` reads (FIF, EDF, BDF, BrainVision, EEGLAB,
        CNT, CTF, KIT, ...).
    modality : {"eeg", "meg", "ieeg"} | None
        Inferred from the channel types when None (any MEG channel -> "meg"; sEEG/ECoG/DBS
        -> "ieeg"; EEG -> "eeg").
    montage : str | mne.channels.DigMontage | None
        Electrode positions to apply (e.g. ``"standard_1020"``); EDF and BrainVision files
        carry none. Channels the montage lacks keep NaN positions.
    preload : bool
        False returns a dask-backed ``signal`` read lazily in chunks from the file.
    start, stop : float | None
        Read only this part of the recording, in seconds from its first sample
        (``stop`` exclusive). Only the samples inside are read from disk.
    verbose : bool | str | None
        Log level for this call.

    Returns
    -------
    ds : xarray.Dataset
        Canonical recording: ``signal`` (channel, time) float32 in uV (EEG/iEEG), fT (MEG
        magnetometers) or fT/cm (gradiometers); annotations as events; bads in ``bad``.

    Raises
    ------
    FormatError
        Missing, empty, truncated, corrupt or unsupported file.
    """
    with use_log_level(verbose):
        path = Path(path)
        _check_readable(path)
        raw = _open_raw(path)
        fmt = _source_format(path)
        if start is not None or stop is not None:
            raw = _crop(raw, path, start, stop)
        if montage is not None:
            _apply_montage(raw, montage)
        montage_name = montage if isinstance(montage, str) or montage is None \
            else "DigMontage"
        params = {"path": str(path), "modality": modality, "montage": montage_name,
                  "start": start, "stop": stop, "preload": preload}
        notes = _mixed_rate_note(raw)
        ds = from_mne(raw, modality=modality, lazy=not preload, source_file=str(path.resolve()),
                      source_format=fmt, _tmin=float(start or 0.0))
        ds = append_history(ds, "read_ephys", **params)
        if notes:
            ds = append_history(ds, "resample_on_read", **notes)
            logger.info("%s: channels with lower rates were upsampled to %s Hz by MNE",
                        path, notes["sfreq"])
        logger.info("read %s: %d channels, %d samples at %g Hz", path, ds.sizes["channel"],
                    ds.sizes["time"], ds.attrs["sfreq"])
        return ds


def _check_readable(path):
    if not path.exists():
        raise FormatError(f"{path}: file not found")
    if path.is_dir():
        if not _is_ephys_dir(path):
            raise FormatError(f"{path}: is a directory, expected a recording file (or a CTF "
                              ".ds / EGI .mff directory)")
        return
    if path.stat().st_size == 0:
        raise FormatError(f"{path}: file is empty (0 bytes)")
    if _source_format(path) in ("edf", "bdf"):
        _check_edf_size(path)


def _check_edf_size(path):
    """Compare the data size the EDF/BDF header declares with the file size.

    MNE reads a truncated EDF silently (with only a warning), returning a shorter recording;
    a truncated file is corrupt and must not pass for a complete one.
    """
    bytes_per_sample = 3 if path.suffix.lower() == ".bdf" else 2
    size = path.stat().st_size
    with open(path, "rb") as fid:
        head = fid.read(256)
        try:
            header_bytes = int(head[184:192].decode("ascii").strip())
            n_records = int(head[236:244].decode("ascii").strip())
            n_signals = int(head[252:256].decode("ascii").strip())
        except (UnicodeDecodeError, ValueError) as err:
            raise FormatError(f"{path}: not a valid EDF/BDF header ({err})") from err
        if len(head) < 256 or n_signals <= 0 or header_bytes != 256 * (n_signals + 1):
            raise FormatError(f"{path}: not a valid EDF/BDF header (declares {n_signals} "
                              f"signals and {header_bytes} header bytes)")
        fid.seek(256 + n_signals * 216)
        samp_field = fid.read(8 * n_signals)
    try:
        n_samps = [int(samp_field[i * 8:(i + 1) * 8].decode("ascii").strip())
                   for i in range(n_signals)]
    except (UnicodeDecodeError, ValueError) as err:
        raise FormatError(f"{path}: corrupt EDF/BDF header (samples per record: {err})") from err
    if n_records < 0:  # -1: still being recorded; MNE infers the count from the size
        return
    expected = header_bytes + n_records * sum(n_samps) * bytes_per_sample
    if size < expected:
        raise FormatError(
            f"{path}: truncated or corrupt: the header declares {n_records} data records "
            f"({expected} bytes) but the file holds {size} bytes"
        )


def _open_raw(path):
    import mne

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = mne.io.read_raw(path, preload=False, verbose="error")
    except Exception as err:
        fmt = _source_format(path)
        raise FormatError(f"{path}: could not be read as {fmt} by MNE: "
                          f"{type(err).__name__}: {err}") from err
    if raw.n_times == 0:
        raise FormatError(f"{path}: holds no samples")
    return raw


def _crop(raw, path, start, stop):
    duration = raw.n_times / raw.info["sfreq"]
    tmin = 0.0 if start is None else float(start)
    tmax = duration if stop is None else float(stop)
    if not 0 <= tmin < tmax or tmax > duration + 1e-9:
        raise DataError(f"{path}: start={start!r}, stop={stop!r} must satisfy "
                        f"0 <= start < stop <= duration ({duration:g} s)")
    include = stop is None or tmax >= duration
    return raw.crop(tmin=tmin, tmax=min(tmax, raw.times[-1]) if include else tmax,
                    include_tmax=include, verbose="error")


#: Montage names MNE deprecated (1.13) -> their new names; the positions are the same.
_MONTAGE_RENAMES = {
    "standard_1005": "colin27_1005", "standard_1020": "colin27_1020",
    "standard_alphabetic": "colin27_alphabetic", "standard_postfixed": "colin27_postfixed",
    "standard_prefixed": "colin27_prefixed", "standard_primed": "colin27_primed",
}


def resolve_montage_name(name):
    """The name under which this MNE version ships a built-in montage.

    ``standard_1020`` and friends were renamed ``colin27_*`` in MNE 1.13; users and papers
    keep using the old names, so both are accepted with whichever MNE is installed.
    """
    import mne

    builtin = set(mne.channels.get_builtin_montages())
    if name in builtin:
        return name
    if name in _MONTAGE_RENAMES and _MONTAGE_RENAMES[name] in builtin:
        return _MONTAGE_RENAMES[name]
    inverse = {v: k for k, v in _MONTAGE_RENAMES.items()}
    return inverse.get(name, name)


def _apply_montage(raw, montage):
    import mne

    if isinstance(montage, str):
        try:
            montage = mne.channels.make_standard_montage(resolve_montage_name(montage))
        except ValueError as err:
            raise NeurofmError(f"montage {montage!r} is not a built-in MNE montage; expected "
                               f"one of {mne.channels.get_builtin_montages()}") from err
    try:
        raw.set_montage(montage, on_missing="ignore", match_case=False, verbose="error")
    except ValueError as err:
        raise DataError(f"montage could not be applied: {err}") from err


def _mixed_rate_note(raw):
    extras = getattr(raw, "_raw_extras", None) or [{}]
    n_samps = extras[0].get("n_samps")
    record_length = extras[0].get("record_length")
    if n_samps is None or record_length is None:
        return None
    sel = extras[0].get("sel", np.arange(len(n_samps)))
    n_samps = np.asarray(n_samps)[np.asarray(sel)[: len(raw.ch_names)]]
    if len(set(n_samps.tolist())) <= 1:
        return None
    rl = float(np.atleast_1d(record_length)[0])
    rates = {name: float(n) / rl for name, n in zip(raw.ch_names, n_samps)}
    return {"sfreq": raw.info["sfreq"], "original_rates": rates}


# --------------------------------------------------------------------------------------------
# conversion
# --------------------------------------------------------------------------------------------
def from_mne(raw, *, modality=None, lazy=False, source_file=None, source_format=None,
             _tmin=0.0):
    """Convert an :class:`mne.io.BaseRaw` into the canonical Dataset.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        The recording; data in SI units as MNE keeps them. It is not modified.
    modality : {"eeg", "meg", "ieeg"} | None
        Inferred from the channel types when None.
    lazy : bool
        Build a dask-backed ``signal`` that reads from ``raw`` chunk by chunk.
    source_file, source_format : str | None
        Recorded in attrs (default: the raw's first file name and "mne").

    Returns
    -------
    ds : xarray.Dataset
        Canonical recording with ``signal`` (channel, time) float32.
    """
    import mne

    if not isinstance(raw, mne.io.BaseRaw):
        raise NeurofmError(f"raw must be an mne.io.BaseRaw; got {type(raw).__name__}")
    mne_types = raw.get_channel_types()
    ch_types, units, scale = [], [], np.empty(len(mne_types))
    for i, t in enumerate(mne_types):
        ch_types.append(MNE_TO_CH_TYPE.get(t, "misc"))
        unit, factor = _UNITS_FROM_SI.get(t, ("a.u.", 1.0))
        units.append(unit)
        scale[i] = factor
    if modality is None:
        modality = _infer_modality(ch_types, raw)
    else:
        check_option("modality", modality, MODALITIES)

    sfreq = float(raw.info["sfreq"])
    if lazy:
        data = _lazy_data(raw, scale)
    else:
        data = raw.get_data()  # (C, T) float64 SI
        data *= scale[:, None]
    pos, frame = _positions(raw)
    events = _annotations_to_events(raw, _tmin)
    first = raw.filenames[0] if getattr(raw, "filenames", None) else None
    meas = raw.info.get("meas_date")
    attrs = {
        "source_file": source_file if source_file is not None else (str(first) if first else ""),
        "source_format": source_format or "mne",
        "first_time": float(raw.first_time),
        "meas_date": meas.isoformat() if meas is not None else "",
    }
    if raw.info.get("line_freq"):
        attrs["line_freq"] = float(raw.info["line_freq"])
    return make_recording(
        data, channel=raw.ch_names, sfreq=sfreq, modality=modality, ch_type=ch_types,
        ch_pos=pos, units=units, events=events, bad=list(raw.info["bads"]), tmin=_tmin,
        pos_coord_frame=frame, pos_units="m", **attrs,
    )


def _lazy_data(raw, scale):
    try:
        import dask
        import dask.array as da
    except ImportError as err:  # pragma: no cover - dask is in the test and all extras
        raise ImportError("preload=False needs dask: pip install 'neurofm[all]'") from err
    n_ch, n_t = len(raw.ch_names), raw.n_times
    chunk = max(1, int(10 * raw.info["sfreq"]))  # 10-s blocks

    def block(start, stop):
        return (raw.get_data(start=start, stop=stop) * scale[:, None]).astype(np.float32)

    blocks = []
    for s in range(0, n_t, chunk):
        e = min(n_t, s + chunk)
        blocks.append(da.from_delayed(dask.delayed(block)(s, e), shape=(n_ch, e - s),
                                      dtype=np.float32))
    return da.concatenate(blocks, axis=1)


def _infer_modality(ch_types, raw):
    kinds = set(ch_types)
    if kinds & {"meg_mag", "meg_grad"}:
        return "meg"
    if kinds & {"seeg", "ecog", "dbs"}:
        return "ieeg"
    if "eeg" in kinds:
        return "eeg"
    raise DataError(
        f"{raw.filenames[0] if raw.filenames else 'raw'}: cannot infer the modality from the "
        f"channel types {sorted(kinds)}; pass modality= one of ('eeg', 'meg', 'ieeg')"
    )


def _positions(raw):
    n = len(raw.ch_names)
    pos = np.full((n, 3), np.nan)
    frames = set()
    for i, ch in enumerate(raw.info["chs"]):
        loc = np.asarray(ch["loc"][:3], dtype=np.float64)
        if np.all(np.isfinite(loc)) and np.any(loc != 0):
            pos[i] = loc
            frames.add(_FRAMES.get(int(ch.get("coord_frame", 0)), "unknown"))
    frame = frames.pop() if len(frames) == 1 else ("mixed" if frames else "unknown")
    return pos, frame


def _annotations_to_events(raw, tmin):
    ann = raw.annotations
    if len(ann) == 0:
        return None
    onset = np.asarray(ann.onset, dtype=np.float64)
    if ann.orig_time is not None:
        # onsets are relative to meas_date; the first sample sits at first_time
        onset = onset - raw.first_time
    # Python str first: numpy StringDType (MNE >= 1.13) refuses to cast to fixed-width U.
    desc = [str(d) for d in ann.description]
    desc = [d.removeprefix("Comment/") for d in desc]
    return {"onset": onset + tmin, "duration": np.asarray(ann.duration, dtype=np.float64),
            "description": desc}


def to_mne(ds):
    """Convert a canonical recording back into an :class:`mne.io.RawArray`.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical recording (see :mod:`neurofm.schema`).

    Returns
    -------
    raw : mne.io.RawArray
        Data in SI units, channel names and types, positions (head frame when the Dataset's
        positions are in head coordinates), bads and annotations (onsets relative to the
        first sample).
    """
    import mne

    from ..schema import validate

    validate(ds, check_values=False)
    names = [str(c) for c in ds["channel"].values]
    types = [_CH_TYPE_TO_MNE.get(str(t), "misc") for t in ds["ch_type"].values]
    if "ch_units" in ds.coords:
        units = [str(u) for u in ds["ch_units"].values]
    else:
        units = [str(ds["signal"].attrs.get("units", "a.u."))] * len(names)
    unknown = sorted(set(units) - set(SCALE_TO_SI))
    if unknown:
        raise DataError(f"signal units {unknown} have no known conversion to SI; expected "
                        f"among {sorted(SCALE_TO_SI)}")
    scale = np.array([SCALE_TO_SI[u] for u in units])
    data = np.asarray(ds["signal"].values, dtype=np.float64) * scale[:, None]
    info = mne.create_info(names, float(ds.attrs["sfreq"]), types, verbose="error")
    pos = np.asarray(ds["ch_pos"].values, dtype=np.float64)
    frame = ds["ch_pos"].attrs.get("coord_frame", "unknown")
    frame_code = {v: k for k, v in _FRAMES.items()}.get(frame)
    with info._unlock():
        for i, ch in enumerate(info["chs"]):
            if np.all(np.isfinite(pos[i])):
                ch["loc"][:3] = pos[i]
                if frame_code is not None:
                    ch["coord_frame"] = frame_code
        info["bads"] = [n for n, b in zip(names, ds["bad"].values) if b]
        if ds.attrs.get("line_freq"):
            info["line_freq"] = float(ds.attrs["line_freq"])
    raw = mne.io.RawArray(data, info, first_samp=0, verbose="error")
    if ds.sizes.get("event", 0):
        t0 = float(ds["time"].values[0])
        raw.set_annotations(mne.Annotations(
            onset=np.asarray(ds["event_onset"].values, dtype=float) - t0,
            duration=np.asarray(ds["event_duration"].values, dtype=float),
            description=[str(d) for d in ds["event_description"].values],
            orig_time=None,
        ))
    return raw
