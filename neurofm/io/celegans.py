"""The homogenized C. elegans neural activity dataset (Simeon et al., arXiv:2411.12091).

The published parquet files hold one row per (worm, neuron): ``source_dataset``, ``worm``,
``neuron``, ``slot``, ``is_labeled_neuron``, the traces ``calcium_data`` (z-scored, linearly
resampled to dt = 0.333 s) and ``original_calcium_data``, their time vectors
``time_in_seconds`` / ``original_time_in_seconds``, and a few provenance columns.
:func:`read_celegans` turns each worm into one canonical recording whose channels are the
300 hermaphrodite neurons (:data:`NEURON_LABELS`, sorted as strings), NaN where the neuron
was not recorded and a ``recorded`` (channel) mask. :func:`resample_celegans` applies the
dataset's resampling rule to any recording.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from types import MappingProxyType

import numpy as np

from .._checks import check_option, check_positive
from .._logging import logger, use_log_level, warn
from ..errors import DataError, FormatError, NeurofmError
from ..schema import append_history, make_recording, validate
from ._common import NONFINITE_POLICIES, check_nonfinite, regular_step

__all__ = [
    "NEURON_ALIASES",
    "NEURON_LABELS",
    "RESAMPLE_DT",
    "canonical_label",
    "read_celegans",
    "resample_celegans",
]

#: Time step (s) of the homogenized dataset.
RESAMPLE_DT = 0.333

_REQUIRED = ("source_dataset", "worm", "neuron", "slot", "is_labeled_neuron")
_PROVENANCE = ("raw_data_file", "smooth_method", "interpolate_method", "normalization_method")
_TRACE_COLUMNS = ("calcium_data", "smooth_calcium_data", "residual_calcium",
                  "smooth_residual_calcium", "original_calcium_data",
                  "original_smooth_calcium_data", "original_residual_calcium",
                  "original_smooth_residual_calcium")


def _package_text(name):
    return resources.files("neurofm.io").joinpath("data", name).read_text(encoding="utf-8")


def _read_labels():
    text = _package_text("celegans_neuron_labels.txt")
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(labels) != 300 or list(labels) != sorted(labels):  # pragma: no cover - package data
        raise FormatError("neurofm package data celegans_neuron_labels.txt is damaged: expected "
                          f"300 sorted labels, found {len(labels)}")
    return labels


#: The 300 hermaphrodite neuron labels of the homogenized dataset, sorted as strings
#: (AS1, AS10, AS11, AS2, ...); CANL/CANR are end-organs (Cook et al. 2019), not neurons.
NEURON_LABELS = _read_labels()

#: Alternative names -> canonical label (read-only).
NEURON_ALIASES = MappingProxyType(
    dict(json.loads(_package_text("celegans_neuron_aliases.json"))["aliases"]))

_LABEL_INDEX = {label: i for i, label in enumerate(NEURON_LABELS)}
_PADDED = re.compile(r"^([A-Z]+)0+(\d+)$")


def canonical_label(name):
    """The canonical label of a neuron name, or None when it is not one of the 300.

    Upper-cases, strips spaces, maps aliases (``AWCON`` -> ``AWCR``, ``AWCOFF`` -> ``AWCL``)
    and drops zero padding (``VB02`` -> ``VB2``).

    Parameters
    ----------
    name : str
        A neuron name as found in a recording.

    Returns
    -------
    label : str | None
    """
    key = str(name).strip().upper()
    key = NEURON_ALIASES.get(key, key)
    if key not in _LABEL_INDEX:
        m = _PADDED.match(key)
        if m:
            key = f"{m.group(1)}{int(m.group(2))}"
    return key if key in _LABEL_INDEX else None


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def read_celegans(path, *, worms=None, signal="calcium_data", on_nonfinite="raise",
                  verbose=None):
    """Read worms of the homogenized C. elegans dataset (parquet) into canonical recordings.

    Parameters
    ----------
    path : str | os.PathLike
        A parquet file, or a directory of parquet files, in the published schema (one row per
        worm and neuron).
    worms : str | sequence of str, optional
        Worms to read, by ``worm`` name ("worm3") or as "source_dataset/worm"
        ("Kato2015/worm3"); all by default.
    signal : str
        The trace column that lands in ``signal``: "calcium_data" (default),
        "smooth_calcium_data", "residual_calcium", ... or an "original_*" column (read on
        its own time axis, which must be regular).
    on_nonfinite : {"raise", "warn"}
        NaN/Inf inside the trace of a recorded neuron (neurons that were not recorded are NaN
        by design and never count): "raise" (default) a
        :class:`~neurofm.errors.DataError` naming the file, worm, neurons and sample counts;
        "warn" keeps the worm with a :class:`~neurofm.errors.NeurofmWarning` and marks those
        neurons bad (values kept as read).
    verbose : bool | str | None
        Log level for this call.

    Returns
    -------
    recordings : list of xarray.Dataset
        One per worm, in file order: ``signal`` (300, n_times) float32 with channel =
        :data:`NEURON_LABELS`, NaN for neurons not recorded, ``recorded`` (channel) bool
        coord, ch_type "cell", sfreq = 1 / dt (dt = median step of the time column), attrs
        ``worm``, ``source_dataset``, ``subject`` (source dataset + worm) and the provenance
        columns. Unlabelled ROIs (numeric names, random slots) are left out and counted in
        ``n_unlabeled_neurons``.

    Raises
    ------
    FormatError
        Missing file or columns, a labelled neuron that is not one of the 300.
        A ``slot`` that is not an integer.
    DataError
        No worm matches ``worms``, traces whose length differs from their time vector,
        irregular time steps, a neuron present twice in one worm, NaN/Inf in a recorded
        neuron (``on_nonfinite="raise"``).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    with use_log_level(verbose):
        path = Path(path)
        if not path.exists():
            raise FormatError(f"{path}: parquet file not found")
        if not isinstance(signal, str) or not signal:
            raise NeurofmError(f"signal must be a trace column name; got {signal!r}")
        check_option("on_nonfinite", on_nonfinite, NONFINITE_POLICIES)
        time_col = "original_time_in_seconds" if signal.startswith("original_") \
            else "time_in_seconds"
        try:
            schema = pq.read_schema(path) if path.is_file() else \
                pq.ParquetDataset(path).schema
        except (pa.ArrowException, OSError) as err:
            raise FormatError(f"{path}: not a readable parquet file ({err})") from err
        names = set(schema.names)
        missing = [c for c in (*_REQUIRED, signal, time_col) if c not in names]
        if missing:
            hint = (f"; trace columns present: {sorted(names & set(_TRACE_COLUMNS))}"
                    if signal not in names else "")
            raise FormatError(f"{path}: not in the homogenized C. elegans schema: missing "
                              f"columns {missing}{hint}")
        columns = [*_REQUIRED, signal, time_col] + [c for c in _PROVENANCE if c in names]
        keys = filters = None
        try:
            if worms is not None:  # find the wanted worms first, then read only their rows
                ids = pq.read_table(path, columns=["source_dataset", "worm"]).to_pandas()
                keys = _select_worms(ids, worms, path)
                filters = [("worm", "in", sorted({w for _, w in keys}))]
            df = pq.read_table(path, columns=columns, filters=filters).to_pandas()
        except (pa.ArrowException, OSError) as err:
            raise FormatError(f"{path}: could not read the parquet columns {columns} ({err})") \
                from err
        if keys is None:
            keys = _select_worms(df, None, path)
        src = df["source_dataset"].astype(str).to_numpy()
        wrm = df["worm"].astype(str).to_numpy()
        logger.debug("%s: %d row(s), columns %s, worms %s", path, len(df), columns,
                     [f"{s}/{w}" for s, w in keys])
        out = [_worm_recording(df[(src == s) & (wrm == w)], s, w, signal, time_col, path,
                               on_nonfinite) for s, w in keys]
        logger.info("read %s: %d worm(s), signal %s", path, len(out), signal)
        return out


def _select_worms(df, worms, path):
    """(source_dataset, worm) keys in file order, restricted to ``worms``."""
    keys = list(dict.fromkeys(zip(df["source_dataset"].astype(str), df["worm"].astype(str))))
    if worms is None:
        return keys
    wanted = [worms] if isinstance(worms, str) else [str(w) for w in worms]
    unknown = [w for w in wanted if not any(w in (k[1], f"{k[0]}/{k[1]}") for k in keys)]
    if unknown:
        shown = [f"{s}/{w}" for s, w in keys[:10]]
        raise DataError(f"{path}: no worm {unknown}; available (source/worm): {shown}"
                        f"{' ...' if len(keys) > 10 else ''}")
    return [k for k in keys if k[1] in wanted or f"{k[0]}/{k[1]}" in wanted]


def _worm_recording(rows, source, worm, signal, time_col, path, on_nonfinite):
    where = f"{path} [{source}/{worm}]"
    time = np.asarray(rows[time_col].iloc[0], dtype=np.float64).ravel()
    if time.size < 2:
        raise DataError(f"{where}: {time_col} has {time.size} value(s); need at least 2")
    dt = regular_step(time, f"{where}: {time_col}", rtol=0.05,
                      expected="a regular grid (use 'calcium_data', which the dataset "
                               "resampled to dt = 0.333 s)")
    n_t = time.size
    data = np.full((len(NEURON_LABELS), n_t), np.nan, dtype=np.float32)
    recorded = np.zeros(len(NEURON_LABELS), dtype=bool)
    n_unlabeled = 0
    slot_mismatch = []
    for neuron, slot, is_labeled, trace in zip(rows["neuron"], rows["slot"],
                                               rows["is_labeled_neuron"], rows[signal]):
        if not bool(is_labeled):
            n_unlabeled += 1
            continue
        label = canonical_label(neuron)
        if label is None:
            raise FormatError(f"{where}: labelled neuron {neuron!r} is not one of the 300 "
                              "canonical hermaphrodite neurons (NEURON_LABELS)")
        values = np.asarray(trace, dtype=np.float32).ravel()
        if values.size != n_t:
            raise DataError(f"{where}: neuron {neuron} has {values.size} samples in {signal} "
                            f"but {time_col} has {n_t}")
        k = _LABEL_INDEX[label]
        if recorded[k]:
            raise DataError(f"{where}: neuron {label} appears twice")
        try:
            slot = int(slot)
        except (TypeError, ValueError) as err:
            raise FormatError(f"{where}: neuron {neuron} has slot={slot!r}; expected an integer "
                              "index into the 300 neuron labels") from err
        if slot != k:
            slot_mismatch.append(f"{neuron}@{slot}")
        data[k] = values
        recorded[k] = True
    if slot_mismatch:
        warn(f"{where}: {len(slot_mismatch)} labelled neuron(s) sit in a slot other than "
             f"their label's index; placed by name: {', '.join(slot_mismatch[:10])}")
    bad = np.zeros(len(NEURON_LABELS), dtype=bool)
    bad[recorded] = check_nonfinite(data[recorded], np.asarray(NEURON_LABELS)[recorded],
                                    where, on_nonfinite)
    first = rows.iloc[0]
    provenance = {c: str(first[c]) for c in _PROVENANCE if c in rows.columns}
    normalized = signal in ("calcium_data", "smooth_calcium_data") and \
        provenance.get("normalization_method", "").lower() not in ("", "none")
    ds = make_recording(
        data, channel=NEURON_LABELS, sfreq=1.0 / dt, modality="calcium", ch_type="cell",
        units="z" if normalized else "a.u.", tmin=float(time[0]),
        subject=f"{source}{worm}", worm=worm, source_dataset=source,
        bad=bad, source_file=str(Path(path).resolve()), source_format="celegans_parquet",
        n_unlabeled_neurons=n_unlabeled, calcium_signal=signal, **provenance,
    )
    ds = ds.assign_coords(recorded=("channel", recorded))
    ds = append_history(ds, "read_celegans", path=str(path), worm=worm, source_dataset=source,
                        signal=signal, dt=dt, n_recorded=int(recorded.sum()),
                        n_unlabeled_dropped=n_unlabeled)
    validate(ds, name=where, check_values=not bad.any())
    logger.debug("%s: %d recorded neuron(s), %d unlabelled ROI(s) left out, dt %g s", where,
                 int(recorded.sum()), n_unlabeled, dt)
    return ds


# --------------------------------------------------------------------------------------------
# resampling
# --------------------------------------------------------------------------------------------
def resample_celegans(ds, dt=RESAMPLE_DT):
    """Resample a recording onto the homogenized dataset's time grid.

    The dataset's rule, per worm: time restarts at 0; when ``dt`` is smaller than the median
    step of the recording the traces are linearly interpolated at ``0, dt, 2 dt, ...`` (up to,
    not including, the last time point); otherwise they are first linearly interpolated at
    ``dt / 6`` and then averaged over consecutive blocks of 6 samples, placed at
    ``0, dt, 2 dt, ...``. Channels that are entirely NaN (not recorded) stay NaN.

    Parameters
    ----------
    ds : xarray.Dataset
        A recording (channel, time); its ``time`` coordinate may be irregular (strictly
        increasing). Not modified.
    dt : float
        Target step in seconds (0.333 in the published dataset).

    Returns
    -------
    ds : xarray.Dataset
        The resampled recording: every float variable with a ``time`` dim is resampled,
        sfreq = 1 / dt, time starts at 0, and the step is recorded in the history.
    """
    import xarray as xr

    from .._dataset import time_variables, with_time_axis

    if not isinstance(ds, xr.Dataset) or "signal" not in ds or "time" not in ds.coords:
        raise NeurofmError(f"resample_celegans: ds must be a recording with a signal (channel, "
                           f"time) and a time coordinate; got {type(ds).__name__}")
    dt = check_positive("dt", dt)
    t = np.asarray(ds["time"].values, dtype=np.float64)
    if t.size < 2 or not np.all(np.diff(t) > 0):
        raise DataError("resample_celegans: the time coordinate must hold at least 2 strictly "
                        "increasing values")
    t0 = float(t[0])
    t = t - t0
    step = float(np.median(np.diff(t)))
    upsample = dt < step
    if upsample:
        new_t = np.arange(t.min(), t.max(), dt)
        grid = new_t
    else:
        grid = np.arange(t.min(), t.max(), dt / 6.0)
        fine_step = float(np.median(np.diff(grid)[1:])) if grid.size > 2 else dt / 6.0
        block = max(1, int(np.round(dt / fine_step)))
        n_blocks = grid.size // block
        if n_blocks < 1:
            raise DataError(f"resample_celegans: the recording ({t.max():.3g} s) is shorter "
                            f"than one step of dt={dt} s")
        new_t = dt * np.arange(n_blocks)

    def resample(values, axis):
        moved = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
        flat = moved.reshape(-1, moved.shape[-1])
        out = np.empty((flat.shape[0], grid.size))
        for i, row in enumerate(flat):
            out[i] = np.interp(grid, t, row)
        if not upsample:
            out = out[:, : n_blocks * block].reshape(flat.shape[0], n_blocks, block).mean(-1)
        out = out.reshape(moved.shape[:-1] + (out.shape[-1],))
        return np.moveaxis(out, -1, axis)

    on_time = time_variables(ds)
    drop = [n for n in on_time if ds[n].dtype.kind not in "fc"]  # e.g. fMRI's volume index
    src = ds.drop_vars(drop) if drop else ds
    variables = {}
    for name in on_time:
        if name in drop:
            continue
        var = src[name].variable
        values = resample(var.values, var.dims.index("time")).astype(var.dtype)
        variables[name] = (var.dims, values)
    out = with_time_axis(src, new_t, variables, sfreq=1.0 / dt)
    out = append_history(out, "resample_celegans", dt=dt, from_median_dt=step,
                         mode="interpolate" if upsample else "interpolate_then_average",
                         original_start=t0, dropped=drop)
    return out
