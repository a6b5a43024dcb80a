"""EEG, MEG and iEEG recordings in any raw format MNE reads -> canonical Dataset.

Reading goes through :func:`mne.io.read_raw`; :func:`from_mne` converts a loaded
:class:`mne.io.BaseRaw` (SI units) into the canonical layout (uV, fT, fT/cm) and
:func:`to_mne` goes back.
"""

from __future__ import annotations

import inspect
import json
import math
import numbers
import re
import threading
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .._checks import check_option, validate_type
from .._logging import logger, use_log_level, warn
from ..errors import DataError, FormatError, NeurofmError, SchemaError
from ..schema import MODALITIES, append_history, make_recording
from ._common import NONFINITE_POLICIES, check_nonfinite

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
#: Our format name -> the public MNE reader(s) that :func:`mne.io.read_raw` dispatches to;
#: their signatures validate the keyword arguments passed through :func:`read_ephys`.
_MNE_READERS = {
    "fif": ("read_raw_fif",), "edf": ("read_raw_edf",), "bdf": ("read_raw_bdf",),
    "gdf": ("read_raw_gdf",), "brainvision": ("read_raw_brainvision",),
    "eeglab": ("read_raw_eeglab",), "cnt": ("read_raw_cnt", "read_raw_ant"),
    "kit": ("read_raw_kit",), "ctf": ("read_raw_ctf",), "egi": ("read_raw_egi",),
    "eximia": ("read_raw_eximia",), "persyst": ("read_raw_persyst",),
    "nihon": ("read_raw_nihon",), "nicolet": ("read_raw_nicolet",),
    "artemis123": ("read_raw_artemis123", "read_raw_fil"), "curry": ("read_raw_curry",),
    "snirf": ("read_raw_snirf",), "nedf": ("read_raw_nedf",),
}

#: Arguments read_ephys sets itself (or that name the file) and MNE's readers also take.
_OWN_ARGS = ("fname", "input_fname", "preload", "verbose")

#: Sampling rates outside this range (Hz) are implausible for a recording: warned about.
PLAUSIBLE_SFREQ = (1e-3, 1e6)

_EDF_ANNOTATION_LABELS = ("EDF Annotations", "BDF Annotations")


def read_ephys(path, *, modality=None, montage=None, preload=True, start=None, stop=None,
               on_nonfinite="raise", verbose=None, **kwargs):
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
        False returns a dask-backed ``signal`` read lazily in chunks from the file. Both
        paths give MNE's eager (``preload=True``) values, also for mixed-rate EDF/BDF files
        (whose upsampled channels are read whole, as MNE does, then sliced).
    start, stop : float | None
        Read only this part of the recording, in seconds from its first sample
        (``stop`` exclusive). Only the samples inside are read from disk (except the
        upsampled channels of a mixed-rate EDF/BDF, read whole so that the values equal
        MNE's eager read cropped to the same samples).
    on_nonfinite : {"raise", "warn"}
        NaN/Inf samples (and EDF/BDF channels whose header makes their values undefined:
        non-finite physical range, digital minimum equal to the maximum) raise a
        :class:`~neurofm.errors.DataError` naming the file, channels and sample counts;
        "warn" keeps the recording, warns and marks those channels bad. With
        ``preload=False`` NaN/Inf samples are only seen when a block is computed (the same
        error, or the warning, comes then).
    verbose : bool | str | None
        Log level for this call.
    **kwargs
        Passed to MNE's reader for the format (e.g. ``infer_types=True``, ``eog=[...]`` for
        EDF/BDF, ``misc=`` for BrainVision, ``allow_maxshield=`` for FIF); checked against
        its signature.

    Returns
    -------
    ds : xarray.Dataset
        Canonical recording: ``signal`` (channel, time) float32 in uV (EEG/iEEG), fT (MEG
        magnetometers) or fT/cm (gradiometers); annotations as events; bads in ``bad``.
        MNE's warnings while reading reach the caller as
        :class:`~neurofm.errors.NeurofmWarning` naming the file.

    Raises
    ------
    FormatError
        Missing, empty, truncated, corrupt or unsupported file.
    DataError
        No channels, no samples, NaN/Inf samples, undefined EDF/BDF scaling, or
        ``start``/``stop`` outside the recording.
    NeurofmError
        Bad arguments (``start="a"``, an option MNE's reader for this format does not take).
    """
    with use_log_level(verbose):
        path = Path(path)
        start = _check_seconds("start", start)
        stop = _check_seconds("stop", stop)
        validate_type("preload", preload, bool)
        check_option("on_nonfinite", on_nonfinite, NONFINITE_POLICIES)
        fmt = _source_format(path)
        reader_kwargs = _check_reader_kwargs(path, fmt, kwargs)
        header = _check_readable(path)
        raw = _open_raw(path, reader_kwargs)
        full = raw
        if start is not None or stop is not None:
            raw = _crop(raw.copy(), path, start, stop)
        if montage is not None:
            _apply_montage(raw, montage, path)
        montage_name = montage if isinstance(montage, str) or montage is None \
            else "DigMontage"
        params = {"path": str(path), "modality": modality, "montage": montage_name,
                  "start": start, "stop": stop, "preload": preload,
                  "on_nonfinite": on_nonfinite, **reader_kwargs}
        extra_bad, whole = (), None
        notes = None
        if header is not None:
            extra_bad = _edf_scaling_problems(header, full, path, on_nonfinite)
            notes = _mixed_rate_note(header, full)
            if notes:
                whole = _upsampled_rows(header, full)
        elif fmt == "gdf":  # mixed rates cannot be told from outside: read channels whole
            whole = np.ones(len(full.ch_names), dtype=bool)
        segments = _Segments(full, path, offset=raw.first_samp - full.first_samp,
                             n_times=raw.n_times, whole=whole)
        ds = from_mne(raw, modality=modality, lazy=not preload,
                      source_file=str(path.resolve()), source_format=fmt,
                      on_nonfinite=on_nonfinite, _tmin=float(start or 0.0),
                      _segments=segments, _extra_bad=extra_bad)
        ds = append_history(ds, "read_ephys", **params)
        if notes:
            ds = append_history(ds, "resample_on_read", **notes)
            logger.info("%s: channels with lower rates were upsampled to %s Hz by MNE",
                        path, notes["sfreq"])
        logger.info("read %s: %d channels, %d samples at %g Hz", path, ds.sizes["channel"],
                    ds.sizes["time"], ds.attrs["sfreq"])
        return ds


def _check_seconds(name, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value):
        raise NeurofmError(f"{name} must be a finite number of seconds or None; got "
                           f"{value!r}")
    return float(value)


def _check_reader_kwargs(path, fmt, kwargs):
    """Check the pass-through options against the signature of MNE's reader for ``fmt``."""
    if not kwargs:
        return {}
    import mne

    own = sorted(k for k in kwargs if k in _OWN_ARGS)
    if own:
        raise NeurofmError(f"{path}: {own} are set by read_ephys itself; use its own "
                           f"arguments (preload=, verbose=)")
    names = [n for n in _MNE_READERS.get(fmt, ()) if hasattr(mne.io, n)]
    if not names:
        raise NeurofmError(f"{path}: read_ephys cannot check reader options {sorted(kwargs)} "
                           f"for the format {fmt!r}; pass only read_ephys's own arguments")
    accepted = set()
    for name in names:
        accepted |= {p.name for p in inspect.signature(getattr(mne.io, name)).parameters
                     .values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    accepted -= set(_OWN_ARGS)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise NeurofmError(
            f"{path}: unknown option(s) {unknown} for read_ephys; it takes modality, "
            f"montage, preload, start, stop, on_nonfinite, verbose, and the options of "
            f"mne.io.{' / mne.io.'.join(names)}: {sorted(accepted)}")
    return dict(kwargs)


class _routed_warnings:
    """Collect the warnings MNE (or numpy under it) emits and pass them on to the user.

    They come back as :class:`~neurofm.errors.NeurofmWarning` through
    :func:`neurofm._logging.warn` (so they point at the user's call), prefixed with the file,
    so they reach the user like every neurofm warning and ``verbose="error"`` silences them;
    deprecation notices keep their category. Nothing is dropped.

    :class:`warnings.catch_warnings` changes process-wide state, so outside the main thread
    (dask workers computing a lazy signal) this does nothing: MNE's warnings then reach the
    user directly, unchanged.
    """

    def __init__(self, path):
        self.path = path
        self._catcher = None
        if threading.current_thread() is threading.main_thread():
            self._catcher = warnings.catch_warnings(record=True)

    def __enter__(self):
        if self._catcher is not None:
            self._caught = self._catcher.__enter__()
            warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        if self._catcher is None:
            return False
        self._catcher.__exit__(*exc)
        seen = set()
        for w in self._caught:
            key = (w.category, str(w.message))
            if key in seen:
                continue
            seen.add(key)
            if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning,
                                       FutureWarning)):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            else:
                text = " ".join(str(w.message).split())
                if len(text) > 400:
                    text = text[:400] + " ..."
                warn(f"{self.path}: {text} ({w.category.__name__} from MNE while reading)")
        return False


def _check_readable(path):
    """Cheap checks before MNE opens the file; returns the EDF/BDF header or None."""
    if not path.exists():
        raise FormatError(f"{path}: file not found")
    if path.is_dir():
        if not _is_ephys_dir(path):
            raise FormatError(f"{path}: is a directory, expected a recording file (or a CTF "
                              ".ds / EGI .mff directory)")
        return None
    if path.stat().st_size == 0:
        raise FormatError(f"{path}: file is empty (0 bytes)")
    fmt = _source_format(path)
    if fmt in ("edf", "bdf"):
        return _read_edf_header(path)
    if fmt == "brainvision":
        _check_brainvision_size(path)
    return None


def _read_edf_header(path):
    """Parse the EDF/BDF header and compare the data size it declares with the file size.

    MNE reads a truncated EDF silently (with only a warning), returning a shorter recording;
    a truncated file is corrupt and must not pass for a complete one.

    Returns
    -------
    header : dict
        ``labels``, ``n_samps`` (per record), ``pmin``, ``pmax``, ``dmin``, ``dmax`` (lists
        over the header's signals; None where a field does not parse), ``record_length`` (s)
        and ``n_records``.
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
        signal_header = fid.read(256 * n_signals)
    if len(signal_header) < 256 * n_signals:
        raise FormatError(f"{path}: truncated EDF/BDF header ({256 + len(signal_header)} of "
                          f"{header_bytes} bytes)")

    def field(offset, width):
        start = offset * n_signals
        return [signal_header[start + i * width:start + (i + 1) * width]
                .decode("latin-1").strip() for i in range(n_signals)]

    def number(text, kind):
        try:
            return kind(text)
        except ValueError:
            return None

    # field offsets (in units of n_signals bytes): label 16, transducer 80, unit 8, pmin 8,
    # pmax 8, dmin 8, dmax 8, prefilter 80, samples per record 8
    labels = field(0, 16)
    pmin = [number(v, float) for v in field(104, 8)]
    pmax = [number(v, float) for v in field(112, 8)]
    dmin = [number(v, float) for v in field(120, 8)]
    dmax = [number(v, float) for v in field(128, 8)]
    n_samps = [number(v, int) for v in field(216, 8)]
    if any(n is None or n < 0 for n in n_samps):
        raise FormatError(f"{path}: corrupt EDF/BDF header (samples per record: "
                          f"{field(216, 8)})")
    record_length = number(head[244:252].decode("ascii", "replace").strip(), float)
    if n_records >= 0:  # -1: still being recorded; MNE infers the count from the size
        expected = header_bytes + n_records * sum(n_samps) * bytes_per_sample
        if size < expected:
            raise FormatError(
                f"{path}: truncated or corrupt: the header declares {n_records} data records "
                f"({expected} bytes) but the file holds {size} bytes"
            )
    return {"labels": labels, "n_samps": n_samps, "pmin": pmin, "pmax": pmax, "dmin": dmin,
            "dmax": dmax, "record_length": record_length, "n_records": n_records}


def _edf_data_signals(header):
    """Indices of the header's data signals (not the EDF+/BDF+ annotation channels)."""
    return [i for i, label in enumerate(header["labels"])
            if label not in _EDF_ANNOTATION_LABELS]


def _edf_rows(header, raw):
    """Header signal index of each channel of ``raw`` (None where it cannot be told)."""
    signals = _edf_data_signals(header)
    if len(signals) == len(raw.ch_names):  # MNE keeps the file order
        return signals
    by_label = {}
    for i in signals:
        by_label.setdefault(header["labels"][i], i)
    return [by_label.get(name) for name in raw.ch_names]


def _edf_scaling_problems(header, raw, path, on_nonfinite):
    """Channels whose header leaves their values undefined (the DataError / warn policy).

    A non-finite physical range gives NaN samples (caught by the value check as well); a
    digital minimum equal to the maximum makes the scaling a division by zero, which MNE
    replaces by 1 and so returns raw digital counts (values like 6e7 uV) without a word.
    """
    problems = {}
    for i in _edf_data_signals(header):
        label = header["labels"][i]
        pmin, pmax = header["pmin"][i], header["pmax"][i]
        dmin, dmax = header["dmin"][i], header["dmax"][i]
        if pmin is not None and pmax is not None and not (
                math.isfinite(pmin) and math.isfinite(pmax)):
            problems[i] = f"{label} (physical range {pmin:g}..{pmax:g})"
        elif dmin is not None and dmax is not None and dmin == dmax:
            problems[i] = f"{label} (digital minimum = maximum = {dmin:g})"
    if not problems:
        return ()
    message = (f"{path}: the EDF/BDF header leaves the values of {len(problems)} channel(s) "
               f"undefined: {', '.join(problems.values())}; expected finite physical "
               f"minimum/maximum and a digital minimum below the maximum")
    if on_nonfinite == "raise":
        raise DataError(message + '; pass on_nonfinite="warn" to keep the recording with '
                        "these channels marked bad")
    warn(message + "; these channels are marked bad")
    rows = _edf_rows(header, raw)
    return tuple(name for name, i in zip(raw.ch_names, rows) if i in problems)


def _upsampled_rows(header, raw):
    """Channels of a mixed-rate EDF/BDF that MNE upsamples (True also when unknown)."""
    top = max(header["n_samps"][i] for i in _edf_data_signals(header))
    return np.array([i is None or header["n_samps"][i] != top for i in _edf_rows(header, raw)])


def _mixed_rate_note(header, raw):
    """The original per-channel rates of a mixed-rate EDF/BDF (None when uniform)."""
    signals = _edf_data_signals(header)
    rl = header["record_length"]
    if len({header["n_samps"][i] for i in signals}) <= 1 or not rl:
        return None
    rates = {header["labels"][i]: float(header["n_samps"][i]) / rl for i in signals}
    return {"sfreq": raw.info["sfreq"], "original_rates": rates}


def _check_brainvision_size(path):
    """A BrainVision binary file must hold whole frames (one sample of every channel).

    MNE reads ``size // frame`` samples, so a cut inside a frame silently returns a shorter
    recording.
    """
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as err:
        raise FormatError(f"{path}: cannot read the BrainVision header ({err})") from err

    def key(name):
        match = re.search(rf"^\s*{name}\s*=\s*(.+?)\s*$", text, flags=re.MULTILINE | re.I)
        return match.group(1) if match else None

    data_file, n_ch = key("DataFile"), key("NumberOfChannels")
    if (key("DataFormat") or "BINARY").upper() != "BINARY" or not data_file or not n_ch:
        return  # ASCII data or an incomplete header: MNE's reader decides
    sizes = {"INT_16": 2, "UINT_16": 2, "INT_32": 4, "IEEE_FLOAT_32": 4}
    width = sizes.get((key("BinaryFormat") or "INT_16").upper())
    data = path.parent / data_file
    try:
        n_ch = int(n_ch)
    except ValueError:
        return
    if width is None or n_ch <= 0 or not data.is_file():
        return
    size = data.stat().st_size
    frame = n_ch * width
    if size % frame:
        raise FormatError(
            f"{data}: truncated or corrupt: {size} bytes is not a whole number of "
            f"{frame}-byte frames ({n_ch} channels x {width} bytes, as {path.name} declares); "
            f"the last {size % frame} bytes hold a partial sample")


def _open_raw(path, reader_kwargs):
    import mne

    try:
        with _routed_warnings(path):
            raw = mne.io.read_raw(path, preload=False, verbose="warning", **reader_kwargs)
    except NeurofmError:
        raise
    except Exception as err:
        fmt = _source_format(path)
        raise FormatError(f"{path}: could not be read as {fmt} by MNE: "
                          f"{type(err).__name__}: {err}") from err
    _check_raw(raw, path)
    return raw


def _check_raw(raw, name, *, check_sfreq=True):
    """No channels, no samples: DataError; an implausible sampling rate: a warning."""
    if len(raw.ch_names) == 0:
        raise DataError(f"{name}: holds no channels; expected at least one")
    if raw.n_times == 0:
        raise DataError(f"{name}: holds no samples ({len(raw.ch_names)} channels); expected "
                        "at least one")
    sfreq = float(raw.info["sfreq"])
    if not check_sfreq:
        return
    if not math.isfinite(sfreq) or sfreq <= 0:
        raise DataError(f"{name}: sampling rate {sfreq!r} Hz; expected a finite rate > 0")
    lo, hi = PLAUSIBLE_SFREQ
    if not lo <= sfreq <= hi:
        warn(f"{name}: sampling rate {sfreq:g} Hz is implausible for a recording (expected "
             f"{lo:g}..{hi:g} Hz); the header is probably corrupt")


def _crop(raw, path, start, stop):
    duration = raw.n_times / raw.info["sfreq"]
    tmin = 0.0 if start is None else float(start)
    tmax = duration if stop is None else float(stop)
    if not 0 <= tmin < tmax or tmax > duration + 1e-9:
        raise DataError(f"{path}: start={start!r}, stop={stop!r} must satisfy "
                        f"0 <= start < stop <= duration ({duration:g} s)")
    include = stop is None or tmax >= duration
    with _routed_warnings(path):
        return raw.crop(tmin=tmin, tmax=min(tmax, raw.times[-1]) if include else tmax,
                        include_tmax=include, verbose="warning")


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


def _apply_montage(raw, montage, path=None):
    import mne

    if isinstance(montage, str):
        try:
            montage = mne.channels.make_standard_montage(resolve_montage_name(montage))
        except ValueError as err:
            raise NeurofmError(f"montage {montage!r} is not a built-in MNE montage; expected "
                               f"one of {mne.channels.get_builtin_montages()}") from err
    try:
        with _routed_warnings(path or "montage"):
            raw.set_montage(montage, on_missing="ignore", match_case=False, verbose="warning")
    except ValueError as err:
        raise DataError(f"{path or 'raw'}: montage could not be applied: {err}") from err


# --------------------------------------------------------------------------------------------
# conversion
# --------------------------------------------------------------------------------------------
def from_mne(raw, *, modality=None, lazy=False, source_file=None, source_format=None,
             on_nonfinite="raise", _tmin=0.0, _segments=None, _extra_bad=()):
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
    on_nonfinite : {"raise", "warn"}
        NaN/Inf samples: :class:`~neurofm.errors.DataError` naming the channels (default),
        or a warning and the channels marked bad (see :func:`read_ephys`).

    Returns
    -------
    ds : xarray.Dataset
        Canonical recording with ``signal`` (channel, time) float32. Events are placed as
        :func:`mne.events_from_annotations` places them, for every combination of
        ``meas_date``, annotation ``orig_time`` and ``first_samp``. The measurement date
        (``meas_date``, ISO 8601), the device-to-head transform (``mne_dev_head_t``, JSON
        4x4) and the full MEG sensor description (``mne_meg_chs``, JSON: ``loc`` (12),
        ``coil_type`` and ``coord_frame`` per MEG channel) are kept in attrs for
        :func:`to_mne`.

    Raises
    ------
    DataError
        No channels or samples, NaN/Inf samples (``on_nonfinite="raise"``).
    FormatError
        The samples cannot be read from the raw's file (truncated or corrupt file).
    """
    import mne

    if not isinstance(raw, mne.io.BaseRaw):
        raise NeurofmError(f"raw must be an mne.io.BaseRaw; got {type(raw).__name__}")
    check_option("on_nonfinite", on_nonfinite, NONFINITE_POLICIES)
    first = raw.filenames[0] if getattr(raw, "filenames", None) else None
    name = source_file or (str(first) if first else "raw")
    _check_raw(raw, name, check_sfreq=_segments is None)  # read_ephys checked it already
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
    segments = _segments or _Segments(raw, name, offset=0, n_times=raw.n_times)
    bad = set(raw.info["bads"]) | set(_extra_bad)
    if lazy:
        data = _lazy_data(segments, scale, raw.ch_names, on_nonfinite)
    else:
        data = segments.read(0, raw.n_times)  # (C, T) float64 SI
        data *= scale[:, None]
        found = check_nonfinite(data, raw.ch_names, name, on_nonfinite)
        bad |= {c for c, b in zip(raw.ch_names, found) if b}
    pos, frame = _positions(raw)
    events = _annotations_to_events(raw, _tmin)
    meas = raw.info.get("meas_date")
    attrs = {
        "source_file": source_file if source_file is not None else (str(first) if first else ""),
        "source_format": source_format or "mne",
        "first_time": float(raw.first_time),
        "meas_date": meas.isoformat() if meas is not None else "",
    }
    if raw.info.get("line_freq"):
        attrs["line_freq"] = float(raw.info["line_freq"])
    attrs.update(_meg_info_attrs(raw))
    return make_recording(
        data, channel=raw.ch_names, sfreq=sfreq, modality=modality, ch_type=ch_types,
        ch_pos=pos, units=units, events=events, bad=[c for c in raw.ch_names if c in bad],
        tmin=_tmin, pos_coord_frame=frame, pos_units="m", **attrs,
    )


class _Segments:
    """Reads samples ``[offset, offset + n_times)`` of a raw exactly as MNE's eager read.

    MNE upsamples the slower channels of a mixed-rate EDF/BDF/GDF with an FFT over the whole
    read; reading a piece resamples only that piece (edge artifacts of hundreds of uV).
    Channels flagged in ``whole`` are therefore always read over the whole recording and
    sliced; the others are read piece by piece.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        The uncropped recording.
    name : str | os.PathLike
        The file, for error messages.
    offset, n_times : int
        First sample (relative to ``raw.first_samp``) and length of the part returned.
    whole : numpy.ndarray of shape (n_channels,), bool | None
        Channels to read over the whole recording.
    """

    def __init__(self, raw, name, *, offset, n_times, whole=None):
        self.raw, self.name, self.offset, self.n_times = raw, name, int(offset), int(n_times)
        n_ch = len(raw.ch_names)
        self.whole = np.zeros(n_ch, bool) if whole is None else np.asarray(whole, bool)

    def _get(self, picks, start, stop):
        try:
            with _routed_warnings(self.name):
                return self.raw.get_data(picks=picks, start=start, stop=stop,
                                         verbose="warning")
        except NeurofmError:
            raise
        except Exception as err:  # MNE/numpy on a truncated or corrupt file
            raise FormatError(
                f"{self.name}: could not read samples {start}..{stop} ({type(err).__name__}: "
                f"{err}); the file is truncated or corrupt") from err

    def rows(self, kind):
        """Row indices read piece-wise (``kind="piece"``) or whole (``"whole"``)."""
        return np.flatnonzero(self.whole if kind == "whole" else ~self.whole)

    def read(self, start, stop, rows=None):
        """Samples ``[start, stop)`` of the part, float64 SI, shape (len(rows), stop - start).
        """
        rows = np.arange(len(self.whole)) if rows is None else np.asarray(rows)
        out = np.empty((len(rows), stop - start))
        piece = ~self.whole[rows]
        if piece.any():
            out[piece] = self._get(rows[piece], self.offset + start, self.offset + stop)
        if (~piece).any():
            full = self._get(rows[~piece], 0, self.raw.n_times)
            out[~piece] = full[:, self.offset + start:self.offset + stop]
        return out


def _lazy_data(segments, scale, names, on_nonfinite):
    try:
        import dask
        import dask.array as da
    except ImportError as err:  # pragma: no cover - dask is in the test and all extras
        raise ImportError("preload=False needs dask: pip install 'neurofm[all]'") from err
    n_t = segments.n_times
    chunk = max(1, int(10 * segments.raw.info["sfreq"]))  # 10-s blocks
    names = list(names)

    def block(rows, start, stop):
        data = segments.read(start, stop, rows) * scale[rows, None]
        check_nonfinite(data, [names[r] for r in rows],
                        f"{segments.name} (samples {start}..{stop})", on_nonfinite)
        return data.astype(np.float32)

    # runs of consecutive channels read the same way, kept in channel order
    runs, kinds = [], segments.whole
    for i in range(len(kinds)):
        if runs and kinds[runs[-1][-1]] == kinds[i]:
            runs[-1].append(i)
        else:
            runs.append([i])
    parts = []
    for run in runs:
        rows = np.array(run)
        if kinds[run[0]]:  # read whole: one task, sliced into the same 10-s chunks
            arr = da.from_delayed(dask.delayed(block)(rows, 0, n_t), shape=(len(rows), n_t),
                                  dtype=np.float32).rechunk((len(rows), chunk))
        else:
            arr = da.concatenate([
                da.from_delayed(dask.delayed(block)(rows, s, min(n_t, s + chunk)),
                                shape=(len(rows), min(n_t, s + chunk) - s), dtype=np.float32)
                for s in range(0, n_t, chunk)], axis=1)
        parts.append(arr)
    return parts[0] if len(parts) == 1 else da.concatenate(parts, axis=0)


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


_MEG_TYPES = ("mag", "grad", "ref_meg")


def _meg_info_attrs(raw):
    """What MNE needs of a MEG recording beyond positions, as JSON-string attrs."""
    info = raw.info
    attrs = {}
    chs = {}
    for ch, kind in zip(info["chs"], raw.get_channel_types()):
        if kind in _MEG_TYPES:
            loc = [None if not np.isfinite(v) else float(v) for v in ch["loc"]]
            chs[ch["ch_name"]] = {"loc": loc, "coil_type": int(ch["coil_type"]),
                                  "coord_frame": int(ch["coord_frame"])}
    if chs:
        attrs["mne_meg_chs"] = json.dumps(chs)
    dev_head_t = info.get("dev_head_t")
    if dev_head_t is not None and chs:
        attrs["mne_dev_head_t"] = json.dumps(np.asarray(dev_head_t["trans"]).tolist())
    return attrs


def _annotations_to_events(raw, tmin):
    """Annotation onsets in seconds from the first sample of ``raw`` (+ ``tmin``).

    As :func:`mne.events_from_annotations`: onsets of annotations without ``orig_time`` count
    from sample 0 of the acquisition (MNE adds ``first_time`` when they are set), onsets with
    an ``orig_time`` count from it; either way the first sample sits at ``first_time``.
    """
    ann = raw.annotations
    if len(ann) == 0:
        return None
    onset = np.asarray(ann.onset, dtype=np.float64) - raw.first_time
    meas = raw.info["meas_date"]
    if ann.orig_time is not None and meas is not None:
        onset = onset + (ann.orig_time - meas).total_seconds()
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
        Data in SI units, channel names and types, positions (EEG-like channels in head
        coordinates through a :func:`mne.channels.make_dig_montage` montage), bads,
        annotations (onsets relative to the first sample), ``first_samp`` (from the
        ``first_time`` attr), the measurement date, and for MEG the full sensor ``loc``
        (positions and orientations), coil types and the device-to-head transform, when
        :func:`from_mne` recorded them.
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
    sfreq = float(ds.attrs["sfreq"])
    info = mne.create_info(names, sfreq, types, verbose="error")
    pos = np.asarray(ds["ch_pos"].values, dtype=np.float64)
    frame = ds["ch_pos"].attrs.get("coord_frame", "unknown")
    frame_code = {v: k for k, v in _FRAMES.items()}.get(frame)
    meg = _json_attr(ds, "mne_meg_chs") or {}
    montage_pos = {}
    for i, ch in enumerate(info["chs"]):  # the dicts in info["chs"] are the public route
        if names[i] in meg:
            stored = meg[names[i]]
            ch["loc"][:] = [np.nan if v is None else v for v in stored["loc"]]
            ch["coil_type"] = stored["coil_type"]
            ch["coord_frame"] = stored["coord_frame"]
        elif np.all(np.isfinite(pos[i])):
            if frame == "head" and types[i] in ("eeg", "seeg", "ecog", "dbs"):
                montage_pos[names[i]] = pos[i]
            else:
                ch["loc"][:3] = pos[i]
                if frame_code is not None:
                    ch["coord_frame"] = frame_code
    info["bads"] = [n for n, b in zip(names, ds["bad"].values) if b]
    if ds.attrs.get("line_freq"):
        info["line_freq"] = float(ds.attrs["line_freq"])
    trans = _json_attr(ds, "mne_dev_head_t")
    if trans is not None:
        info["dev_head_t"] = mne.transforms.Transform("meg", "head", np.asarray(trans))
    first_time = ds.attrs.get("first_time")
    first_samp = 0
    if isinstance(first_time, numbers.Real) and math.isfinite(first_time):
        first_samp = round(float(first_time) * sfreq)
    raw = mne.io.RawArray(data, info, first_samp=first_samp, verbose="error")
    if montage_pos:
        montage = mne.channels.make_dig_montage(ch_pos=montage_pos, coord_frame="head")
        with _routed_warnings("to_mne"):
            raw.set_montage(montage, on_missing="ignore", verbose="warning")
    meas = ds.attrs.get("meas_date")
    if isinstance(meas, str) and meas:
        try:
            date = datetime.fromisoformat(meas)
        except ValueError:
            warn(f"to_mne: meas_date attr {meas!r} is not an ISO 8601 date; left unset")
        else:
            raw.set_meas_date(date if date.tzinfo else date.replace(tzinfo=UTC))
    if ds.sizes.get("event", 0):
        t0 = float(ds["time"].values[0])
        raw.set_annotations(mne.Annotations(
            onset=np.asarray(ds["event_onset"].values, dtype=float) - t0,
            duration=np.asarray(ds["event_duration"].values, dtype=float),
            description=[str(d) for d in ds["event_description"].values],
            orig_time=None,
        ))
    return raw


def _json_attr(ds, key):
    value = ds.attrs.get(key)
    if not isinstance(value, str) or not value:
        return None
    try:
        return json.loads(value)
    except ValueError as err:
        raise SchemaError([f"attribute {key!r} is not valid JSON: {err}"]) from err
