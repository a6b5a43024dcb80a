"""Calcium imaging traces -> canonical Dataset.

Four sources, told apart by :func:`read_calcium` (or its ``format=`` argument):

- a suite2p plane folder (``F.npy``, ``Fneu.npy``, ``spks.npy``, ``iscell.npy``, ``stat.npy``,
  ``ops.npy``; the two object arrays go through the restricted unpickler of
  :mod:`neurofm.io._pickle`);
- a CaImAn HDF5 file written by ``cnm.save`` (read with h5py: ``estimates/C``, ``S``,
  ``F_dff``, ``YrA``, ``A``, ``idx_components``, ``dims`` and ``params/data/fr``);
- an NWB file with an ``ophys`` processing module (``Fluorescence`` / ``DfOverF``
  RoiResponseSeries, ROI centroids from their PlaneSegmentation);
- a plain cells x time array (``.npy``, ``.csv``, ``.tsv``, ``.txt``) with ``fs=``.

Every ROI is a ``channel`` with ch_type "cell"; ``ch_pos`` holds its centroid in pixels
(x = column, y = row, z = plane index). ``iscell`` / ``iscell_prob`` coordinates and the
extra (channel, time) variables ``F``, ``Fneu``, ``spks`` (and CaImAn's ``C``) are added when
the source has them.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import numpy as np
import xarray as xr

from .._checks import check_option, check_positive
from .._logging import logger, use_log_level, warn
from ..errors import DataError, FormatError, NeurofmError
from ..schema import append_history, make_recording, validate
from ._common import (
    NONFINITE_POLICIES,
    check_nonfinite,
    check_not_empty,
    positive_number,
    read_table,
    regular_step,
)

__all__ = ["CALCIUM_FORMATS", "CALCIUM_SIGNALS", "read_calcium"]

CALCIUM_FORMATS = ("suite2p", "caiman", "nwb", "array")
CALCIUM_SIGNALS = ("dff", "F", "Fc", "spks", "C")

_ARRAY_SUFFIXES = (".npy", ".csv", ".tsv", ".txt")
_SUITE2P_FILES = ("F.npy", "Fneu.npy", "spks.npy", "iscell.npy", "stat.npy", "ops.npy")
_DEFAULT_NEUCOEFF = 0.7


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
def read_calcium(path, *, format=None, fs=None, signal="dff", neucoeff=None,
                 on_nonfinite="raise", verbose=None):
    """Read calcium imaging traces into the canonical Dataset.

    Parameters
    ----------
    path : str | os.PathLike
        A suite2p plane folder (``.../suite2p/plane0``), a CaImAn ``.hdf5``/``.h5`` file, an
        ``.nwb`` file, or a ``.npy``/``.csv``/``.tsv``/``.txt`` array of shape
        (n_cells, n_frames).
    format : {"suite2p", "caiman", "nwb", "array"} | None
        Inferred from ``path`` when None.
    fs : float, optional
        Frame rate in Hz. Required for plain arrays; overrides ``ops["fs"]`` (suite2p) and
        ``params/data/fr`` (CaImAn) when given. NWB files carry their own rate.
    signal : {"dff", "F", "Fc", "spks", "C"}
        What lands in ``signal``: "dF/F" (the file's own when it has one, e.g. CaImAn
        ``F_dff`` or an NWB ``DfOverF`` series; otherwise computed with
        :func:`neurofm.preprocessing.dff`: suite2p's maximin baseline with the ``ops``
        parameters on Fc for suite2p, a running 8th percentile over 60 s elsewhere), raw
        fluorescence "F" (CaImAn: ``C + YrA``), neuropil-corrected "Fc" = F - neucoeff * Fneu,
        deconvolved "spks" (CaImAn ``S``) or CaImAn's denoised "C".
    neucoeff : float, optional
        Neuropil coefficient for "Fc" (and for suite2p dF/F); defaults to ``ops["neucoeff"]``
        or 0.7.
    on_nonfinite : {"raise", "warn"}
        NaN/Inf in the traces that land in ``signal`` (before dF/F): "raise" (default) a
        :class:`~neurofm.errors.DataError` naming the file, the ROIs and the sample counts;
        "warn" keeps the recording with a :class:`~neurofm.errors.NeurofmWarning` and marks
        those ROIs bad (their traces are kept as read; a dF/F computed here is NaN for them).
    verbose : bool | str | None
        Log level for this call.

    Returns
    -------
    ds : xarray.Dataset
        Canonical recording, modality "calcium": ``signal`` (n_rois, n_frames) float32,
        channel = ROI ids (``roi<k>``), ch_type "cell", ``ch_pos`` = centroids in pixels
        (attrs units "px"), coords ``iscell`` (bool) and ``iscell_prob`` where available,
        extra variables ``F``, ``Fneu``, ``spks`` (channel, time) when present.

    Raises
    ------
    FormatError
        Missing/unrecognised files (e.g. a suite2p folder without ``F.npy``, an NWB file
        without ophys data), a pickle that names non-numpy globals, or a ``signal`` the
        source does not have.
    DataError
        No frame rate (or one that is not a number > 0), no ROI or no frame, shape mismatches
        (F vs Fneu), irregular timestamps, NaN/Inf values (``on_nonfinite="raise"``), an
        unknown suite2p ``ops["baseline"]``.
    """
    with use_log_level(verbose):
        path = Path(path)
        if not path.exists():
            raise FormatError(f"{path}: file or folder not found")
        check_option("signal", signal, CALCIUM_SIGNALS)
        fmt = _infer_format(path) if format is None else check_option("format", format,
                                                                        CALCIUM_FORMATS)
        fs = check_positive("fs", fs, allow_none=True)
        check_option("on_nonfinite", on_nonfinite, NONFINITE_POLICIES)
        if neucoeff is not None:
            if isinstance(neucoeff, bool) or not isinstance(neucoeff, (int, float)) \
                    or not np.isfinite(neucoeff) or neucoeff < 0:
                raise NeurofmError(f"neucoeff must be a finite number >= 0; got {neucoeff!r}")
            neucoeff = float(neucoeff)
        reader = {"suite2p": _read_suite2p, "caiman": _read_caiman, "nwb": _read_nwb,
                  "array": _read_array}[fmt]
        logger.debug("%s: reading as %s (signal=%s, fs=%s, neucoeff=%s)", path, fmt, signal,
                     fs, neucoeff)
        ds = reader(path, fs=fs, signal=signal, neucoeff=neucoeff, on_nonfinite=on_nonfinite)
        validate(ds, name=str(path), check_values=on_nonfinite == "raise")
        logger.info("read %s (%s): %d ROIs, %d frames at %g Hz, signal %s", path, fmt,
                    ds.sizes["channel"], ds.sizes["time"], ds.attrs["sfreq"], signal)
        return ds


def _infer_format(path):
    if path.is_dir():
        if _is_suite2p_dir(path):
            return "suite2p"
        planes = sorted(p.name for p in path.glob("plane*") if p.is_dir())
        if planes:
            raise FormatError(f"{path}: a suite2p output folder with planes {planes}; pass one "
                              f"plane folder, e.g. {path / planes[0]}")
        raise FormatError(f"{path}: not a suite2p plane folder; expected F.npy (with Fneu.npy, "
                          f"iscell.npy, stat.npy, ops.npy) inside")
    name = path.name.lower()
    if name.endswith(".nwb"):
        return "nwb"
    if name.endswith((".hdf5", ".h5")):
        return "caiman"
    if name.endswith(_ARRAY_SUFFIXES):
        return "array"
    raise FormatError(f"{path}: cannot tell the calcium format; expected a suite2p plane "
                      f"folder, .hdf5/.h5 (CaImAn), .nwb or {', '.join(_ARRAY_SUFFIXES)}; pass "
                      "format= to choose")


def _is_suite2p_dir(path):
    """True for a folder holding suite2p plane outputs (used by :func:`neurofm.io.read`)."""
    path = Path(path)
    if not path.is_dir():
        return False
    present = [f for f in _SUITE2P_FILES if (path / f).is_file()]
    return "F.npy" in present or len(present) >= 2


# --------------------------------------------------------------------------------------------
# building the Dataset
# --------------------------------------------------------------------------------------------
def _build(data, *, names, fs, units, path, fmt, on_nonfinite, ch_pos=None, iscell=None,
           iscell_prob=None, extras=None, tmin=0.0, attrs=None):
    """Assemble the canonical recording from (n_rois, n_frames) arrays.

    ``data`` is checked here (at least one ROI and one frame; the NaN/Inf policy, whose bad
    ROIs become ``bad``). ``extras`` maps variable names to (n_rois, n_frames) traces (None
    where the source lacks one); each present one becomes a (channel, time) variable in "a.u.".
    """
    check_not_empty(np.shape(data), path, layout="(n_rois, n_frames)")
    bad = check_nonfinite(np.asarray(data), names, path, on_nonfinite)
    ds = make_recording(
        data, channel=names, sfreq=fs, modality="calcium", ch_type="cell", ch_pos=ch_pos,
        bad=bad,
        units=units, tmin=tmin, pos_coord_frame="image", pos_units="px",
        source_file=str(Path(path).resolve()), source_format=fmt, **(attrs or {}),
    )
    if iscell is not None:
        ds = ds.assign_coords(iscell=("channel", np.asarray(iscell, dtype=bool)))
    if iscell_prob is not None:
        ds = ds.assign_coords(iscell_prob=("channel", np.asarray(iscell_prob,
                                                                  dtype=np.float64)))
    for name, arr in (extras or {}).items():
        if arr is not None:
            ds[name] = xr.Variable(("channel", "time"), np.array(arr, dtype=np.float32),
                                   {"units": "a.u."})
    return ds


def _to_dff(ds, path, **dff_kwargs):
    """dF/F of ``ds``; ROIs holding NaN/Inf (kept with ``on_nonfinite="warn"``) get NaN."""
    import xarray as xr

    from .._dff import dff

    logger.info("%s: computing dF/F (%s)", path, dff_kwargs)
    values = np.asarray(ds["signal"].values)
    broken = ~np.isfinite(values).all(axis=1)
    if not broken.any():
        return dff(ds, **dff_kwargs)
    if broken.all():
        raise DataError(f"{path}: every ROI holds NaN/Inf samples; dF/F cannot be computed "
                        "(read signal='F' to get the traces as stored)")
    part = dff(ds.isel(channel=~broken), **dff_kwargs)
    out_values = np.full(values.shape, np.nan, dtype=np.float32)
    out_values[~broken] = part["signal"].values
    out = ds.copy()
    out.attrs = dict(part.attrs)
    out["signal"] = xr.Variable(("channel", "time"), out_values, dict(part["signal"].attrs))
    bad = np.asarray(ds["bad"].values, dtype=bool).copy()
    bad[~broken] |= np.asarray(part["bad"].values, dtype=bool)
    return out.assign_coords(bad=("channel", bad, dict(ds["bad"].attrs)))


def _check_2d(arr, name, path):
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise DataError(f"{path}: {name} must be a 2-D array (n_rois, n_frames); got shape "
                        f"{arr.shape}")
    if arr.dtype.kind not in "fiub":
        raise DataError(f"{path}: {name} must be numeric; got dtype {arr.dtype}")
    return arr


def _same_shape(arr, ref, name, ref_name, path):
    if arr.shape != ref.shape:
        raise DataError(f"{path}: {name} has shape {arr.shape} but {ref_name} has shape "
                        f"{ref.shape}; expected the same (n_rois, n_frames)")


def _roi_names(n, ids=None):
    if ids is None:
        ids = range(n)
    return [f"roi{int(i)}" for i in ids]


def _offered_signals(traces):
    """The ``signal=`` choices of a source holding ``traces`` (name -> array or None)."""
    have = {name for name, arr in traces.items() if arr is not None}
    if have & {"dff", "F", "C"}:  # a file's own dF/F, or one computed from F (CaImAn: C)
        have.add("dff")
    if {"F", "Fneu"} <= have:
        have.add("Fc")
    return [s for s in CALCIUM_SIGNALS if s in have]


def _missing_signal(path, fmt, signal, available):
    return FormatError(f"{path}: signal={signal!r} is not available from a {fmt} source; "
                       f"available: {available}")


def _split_iscell(raw, where):
    """suite2p's iscell (n_rois, 2: flag, probability) -> (bool flags, probabilities or None)."""
    try:
        raw = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{where}: iscell must be numeric (n_rois,) or (n_rois, 2: flag, "
                        f"probability); {err}") from err
    if raw.ndim == 1:
        raw = raw[:, None]
    if raw.ndim != 2 or raw.shape[1] == 0:
        raise DataError(f"{where}: iscell must have shape (n_rois,) or (n_rois, 2: flag, "
                        f"probability); got shape {raw.shape}")
    return raw[:, 0] > 0.5, (raw[:, 1] if raw.shape[1] > 1 else None)


# --------------------------------------------------------------------------------------------
# suite2p
# --------------------------------------------------------------------------------------------
def _read_suite2p(path, *, fs, signal, neucoeff, on_nonfinite):
    from ._pickle import load_npy

    folder = Path(path)
    present = [f for f in _SUITE2P_FILES if (folder / f).is_file()]
    if "F.npy" not in present:
        found = sorted(p.name for p in folder.glob("*.npy"))
        raise FormatError(f"{folder}: suite2p plane folder without F.npy (the fluorescence "
                          f"traces, n_rois x n_frames); found {found}")

    def optional(name):  # stat.npy and ops.npy go through the restricted unpickler
        return load_npy(folder / name) if name in present else None

    F = _check_2d(load_npy(folder / "F.npy"), "F.npy", folder)
    check_not_empty(F.shape, folder / "F.npy", layout="(n_rois, n_frames)")
    n_rois = F.shape[0]
    traces = {"F": F, "Fneu": optional("Fneu.npy"), "spks": optional("spks.npy")}
    for name in ("Fneu", "spks"):
        if traces[name] is not None:
            traces[name] = _check_2d(traces[name], f"{name}.npy", folder)
            _same_shape(traces[name], F, f"{name}.npy", "F.npy", folder)
    Fneu = traces["Fneu"]

    iscell = iscell_prob = None
    raw_iscell = optional("iscell.npy")
    if raw_iscell is not None:
        iscell, iscell_prob = _split_iscell(raw_iscell, folder / "iscell.npy")
        if iscell.shape[0] != n_rois:
            raise DataError(f"{folder}: iscell.npy has {iscell.shape[0]} rows but F.npy "
                            f"has {n_rois} ROIs")

    stat = optional("stat.npy")
    ch_pos = None if stat is None else _suite2p_centroids(stat, n_rois, folder)

    ops = {}
    raw_ops = optional("ops.npy")
    if raw_ops is not None:
        if isinstance(raw_ops, np.ndarray) and raw_ops.dtype == object and raw_ops.size == 1:
            raw_ops = raw_ops.item()
        if not isinstance(raw_ops, dict):
            raise FormatError(f"{folder / 'ops.npy'}: expected a dict of options (0-d object "
                              f"array); found {type(raw_ops).__name__}")
        ops = raw_ops

    ops_file = folder / "ops.npy"
    fs_source = "argument"
    if fs is None:
        if "fs" not in ops:
            where = "ops.npy has no fs" if ops else "no ops.npy"
            raise DataError(f"{folder}: no frame rate ({where}); pass fs= (Hz)")
        fs = positive_number(ops["fs"], f"{ops_file}: ops['fs'] (frame rate in Hz)")
        fs_source = "ops.npy"
    coef = neucoeff if neucoeff is not None else _ops_number(ops, "neucoeff", _DEFAULT_NEUCOEFF,
                                                             ops_file, minimum=0.0)
    plane = int(_ops_number(ops, "iplane", 0, ops_file, minimum=0.0))
    if ch_pos is not None and "iplane" in ops:
        ch_pos[:, 2] = float(plane)

    available = _offered_signals(traces)
    if signal not in available:
        fmt = "suite2p (no Fneu.npy)" if signal == "Fc" else "suite2p"
        raise _missing_signal(folder, fmt, signal, available)
    if signal in ("Fc", "dff") and Fneu is not None:
        # dF/F from Fc (or from F without neuropil) with suite2p's baseline options
        data = F.astype(np.float64) - coef * Fneu.astype(np.float64)
    else:
        data = traces["F" if signal == "dff" else signal]
    attrs = {"neucoeff": coef, "calcium_signal": signal, "plane": plane}
    baseline = _suite2p_baseline(ops, data.shape[1] / fs, ops_file) if signal == "dff" else None
    ds = _build(data, names=_roi_names(n_rois), fs=fs, units="a.u.", path=folder,
                fmt="suite2p", on_nonfinite=on_nonfinite, ch_pos=ch_pos, iscell=iscell,
                iscell_prob=iscell_prob,
                extras=traces, attrs=attrs)
    ds = append_history(ds, "read_calcium", path=str(folder), format="suite2p", signal=signal,
                        neucoeff=coef, fs=fs, fs_source=fs_source, files=present)
    if signal == "dff":
        ds = _to_dff(ds, folder, **baseline)
    return ds


#: suite2p's ``ops["baseline"]`` values (``dcnv.preprocess``); "constant_prctile" is the name
#: of "prctile" before suite2p 1.0.
SUITE2P_BASELINES = ("maximin", "constant", "prctile", "constant_prctile")


def _ops_number(ops, key, default, ops_file, *, minimum):
    """``ops[key]`` as a finite float >= ``minimum`` (``default`` when absent)."""
    value = ops.get(key, default)
    try:
        number = float(np.asarray(value).item()) if not isinstance(value, (str, bytes)) \
            else float(value)
    except (TypeError, ValueError) as err:
        raise DataError(f"{ops_file}: ops[{key!r}] must be a number; found {value!r}") from err
    if not np.isfinite(number) or number < minimum:
        raise DataError(f"{ops_file}: ops[{key!r}] must be a finite number >= {minimum:g}; "
                        f"found {value!r}")
    return number


def _suite2p_baseline(ops, duration, ops_file):
    """dff() arguments matching suite2p's baseline options in ``ops``.

    suite2p (``extraction/dcnv.preprocess``) knows "maximin" (Gaussian smoothing of
    ``sig_baseline`` frames, running min then max over ``win_baseline`` s), "constant" (the
    minimum of the Gaussian-smoothed traces: one value for the whole plane) and "prctile"
    ("constant_prctile" before 1.0: the ``prctile_baseline`` percentile of each trace).
    """
    baseline = ops.get("baseline", "maximin")
    if not isinstance(baseline, str) or baseline not in SUITE2P_BASELINES:
        raise DataError(f"{ops_file}: ops['baseline']={baseline!r} is not a suite2p baseline; "
                        f"expected one of {SUITE2P_BASELINES}; fix ops.npy or read "
                        "signal='Fc' and compute dF/F with neurofm.preprocessing.dff")
    sigma = _ops_number(ops, "sig_baseline", 10.0, ops_file, minimum=0.0)
    if baseline == "constant":
        return {"method": "constant", "sigma": sigma}
    if baseline in ("prctile", "constant_prctile"):
        prct = _ops_number(ops, "prctile_baseline", 8.0, ops_file, minimum=0.0)
        return {"method": "percentile", "window_s": 2.0 * duration + 1.0, "percentile": prct}
    window_s = _ops_number(ops, "win_baseline", 60.0, ops_file, minimum=0.0)
    return {"method": "maximin", "window_s": window_s, "sigma": sigma}


def _suite2p_centroids(stat, n_rois, folder):
    stat = np.asarray(stat, dtype=object).ravel()
    if stat.shape[0] != n_rois:
        raise DataError(f"{folder}: stat.npy describes {stat.shape[0]} ROIs but F.npy has "
                        f"{n_rois}")
    pos = np.full((n_rois, 3), np.nan)
    for i, roi in enumerate(stat):
        if not isinstance(roi, dict):
            raise FormatError(f"{folder / 'stat.npy'}: entry {i} is {type(roi).__name__}; "
                              "expected a dict per ROI")
        try:
            if "med" in roi:
                y, x = np.asarray(roi["med"], dtype=np.float64).ravel()[:2]
            elif "ypix" in roi and "xpix" in roi:
                y = float(np.mean(np.asarray(roi["ypix"], dtype=np.float64)))
                x = float(np.mean(np.asarray(roi["xpix"], dtype=np.float64)))
            else:
                continue
        except (TypeError, ValueError) as err:
            field = "med" if "med" in roi else "ypix/xpix"
            raise FormatError(f"{folder / 'stat.npy'}: ROI {i} has {field}="
                              f"{roi.get('med', roi.get('ypix'))!r}; expected pixel "
                              f"coordinates (med = (y, x) numbers) ({err})") from err
        pos[i] = (x, y, 0.0)
    return pos


# --------------------------------------------------------------------------------------------
# CaImAn
# --------------------------------------------------------------------------------------------
def _read_caiman(path, *, fs, signal, neucoeff, on_nonfinite):
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - h5py is in the test/all extras
        raise ImportError("reading CaImAn HDF5 files needs h5py: pip install "
                          "'neurofm[all]'") from err
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise FormatError(f"{path}: not a readable HDF5 file ({err})") from err
    with fh:
        if "estimates" not in fh or "C" not in fh["estimates"]:
            raise FormatError(f"{path}: not a CaImAn file: expected the dataset estimates/C "
                              f"(written by cnm.save); found top-level keys {sorted(fh.keys())}")
        est = fh["estimates"]
        C = _check_2d(_h5_array(est, "C"), "estimates/C", path)
        n_comp = C.shape[0]
        S = _h5_array(est, "S")
        F_dff = _h5_array(est, "F_dff")
        YrA = _h5_array(est, "YrA")
        for name, arr in (("S", S), ("F_dff", F_dff), ("YrA", YrA)):
            if arr is not None:
                _check_2d(arr, f"estimates/{name}", path)
                _same_shape(arr, C, f"estimates/{name}", "estimates/C", path)
        idx = _h5_array(est, "idx_components")
        dims = _h5_array(est, "dims")
        if dims is None:
            dims = _h5_array(fh, "dims")
        A = _caiman_footprints(est, path)
        fr = None
        if "params" in fh and "data" in fh["params"]:
            fr = _h5_array(fh["params"]["data"], "fr")
    fs_source = "argument"
    if fs is None:
        if fr is None or np.ndim(fr) != 0:
            raise DataError(f"{path}: no frame rate (params/data/fr missing); pass fs= (Hz)")
        fs = positive_number(fr, f"{path}: params/data/fr (frame rate in Hz)")
        fs_source = "params/data/fr"

    iscell = None
    if idx is not None:
        idx = np.asarray(idx, dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= n_comp):
            raise DataError(f"{path}: estimates/idx_components holds indices outside "
                            f"[0, {n_comp}); found {idx.min()}..{idx.max()}")
        iscell = np.zeros(n_comp, dtype=bool)
        iscell[idx] = True
    ch_pos = None
    if A is not None:
        ch_pos = _caiman_centroids(A, dims, n_comp, path)

    F = C + YrA if YrA is not None else None
    traces = {"C": C, "F": F, "spks": S}
    available = _offered_signals(traces)
    if signal not in available:
        why = {"spks": "no estimates/S", "F": "no estimates/YrA",
               "Fc": "background is modelled, there is no neuropil trace"}[signal]
        raise _missing_signal(path, f"CaImAn ({why})", signal, available)
    units = "a.u."
    compute_dff = signal == "dff" and F_dff is None
    if signal != "dff":
        data = traces[signal]
    elif F_dff is not None:
        data, units = F_dff, "dF/F"
    else:
        data = F if F is not None else C
    ds = _build(data, names=_roi_names(n_comp), fs=fs, units=units, path=path, fmt="caiman",
                on_nonfinite=on_nonfinite,
                ch_pos=ch_pos, iscell=iscell, extras=traces,
                attrs={"calcium_signal": signal})
    ds = append_history(ds, "read_calcium", path=str(path), format="caiman", signal=signal,
                        fs=fs, fs_source=fs_source,
                        dff_source="file" if signal == "dff" and not compute_dff else None)
    if compute_dff:
        ds = _to_dff(ds, path, method="percentile")
    return ds


def _h5_array(group, name):
    """A dataset as an array, or None when absent or stored as CaImAn's 'NoneType'."""
    if name not in group:
        return None
    node = group[name]
    if not hasattr(node, "shape"):
        return None
    value = node[()]
    if isinstance(value, (bytes, str)):
        return None  # cnm.save writes None as the string 'NoneType'
    arr = np.asarray(value)
    if arr.dtype.kind in "SUO":
        return None
    return arr


def _caiman_footprints(est, path):
    import scipy.sparse as sp

    if "A" not in est:
        return None
    node = est["A"]
    if hasattr(node, "shape"):  # dense (pixels x components)
        arr = np.asarray(node[()])
        return sp.csc_matrix(arr) if arr.ndim == 2 else None
    need = ("data", "indices", "indptr", "shape")
    if not all(k in node for k in need):
        raise FormatError(f"{path}: estimates/A must hold data, indices, indptr and shape (a CSC "
                          f"matrix); found {sorted(node.keys())}")
    shape = tuple(int(s) for s in np.asarray(node["shape"][()]).ravel())
    try:
        return sp.csc_matrix((node["data"][()], node["indices"][()], node["indptr"][()]),
                             shape=shape)
    except ValueError as err:
        raise FormatError(f"{path}: estimates/A is not a valid CSC matrix of shape {shape} "
                          f"({err})") from err


def _caiman_centroids(A, dims, n_comp, path):
    if A.shape[1] != n_comp:
        raise DataError(f"{path}: estimates/A has {A.shape[1]} components but estimates/C has "
                        f"{n_comp}")
    if dims is None:
        warn(f"{path}: no dims stored; ROI centroids are unknown (ch_pos is NaN)")
        return None
    dims = tuple(int(d) for d in np.asarray(dims).ravel())
    if int(np.prod(dims)) != A.shape[0]:
        raise DataError(f"{path}: estimates/A has {A.shape[0]} pixels but dims {dims} give "
                        f"{int(np.prod(dims))}")
    # CaImAn flattens the field of view in Fortran order: pixel p -> (row, col[, plane]).
    coords = np.unravel_index(np.arange(A.shape[0]), dims, order="F")
    W = abs(A.tocsc()).T  # (components, pixels) footprint weights
    weights = np.asarray(W.sum(axis=1)).ravel()
    pos = np.full((n_comp, 3), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        row = np.asarray(W @ coords[0]).ravel() / weights
        col = np.asarray(W @ coords[1]).ravel() / weights
        plane = (np.asarray(W @ coords[2]).ravel() / weights if len(dims) > 2
                 else np.zeros(n_comp))
    ok = weights > 0
    pos[ok] = np.column_stack([col, row, plane])[ok]
    return pos


# --------------------------------------------------------------------------------------------
# NWB
# --------------------------------------------------------------------------------------------
_SUITE2P_NWB_NAMES = {"Fluorescence": "F", "Neuropil": "Fneu", "Deconvolved": "spks"}


def _read_nwb(path, *, fs, signal, neucoeff, on_nonfinite):
    try:
        from pynwb import NWBHDF5IO
        from pynwb.ophys import DfOverF, Fluorescence
    except ImportError as err:  # pragma: no cover - pynwb is in the test/all extras
        raise ImportError("reading NWB files needs pynwb: pip install 'neurofm[all]'") from err
    with ExitStack() as stack:  # closes the file even when read() fails
        try:
            io = stack.enter_context(NWBHDF5IO(str(path), mode="r", load_namespaces=True))
            nwb = io.read()
        except Exception as err:  # pynwb/hdmf raise many types on a bad file
            raise FormatError(f"{path}: not a readable NWB file ({type(err).__name__}: "
                              f"{err})") from err
        modules = sorted(nwb.processing.keys())
        if "ophys" not in nwb.processing:
            raise FormatError(f"{path}: NWB file without optical physiology: expected a "
                              f"processing module 'ophys'; found {modules or 'none'}")
        ophys = nwb.processing["ophys"]
        found = {}  # role -> (interface name, series)
        for name, iface in ophys.data_interfaces.items():
            if isinstance(iface, DfOverF):
                found.setdefault("dff", (name, _one_series(iface, path, name)))
            elif isinstance(iface, Fluorescence):
                role = _SUITE2P_NWB_NAMES.get(name, "F")
                found.setdefault(role, (name, _one_series(iface, path, name)))
        if not found:
            raise FormatError(f"{path}: the ophys module holds no Fluorescence or DfOverF "
                              f"RoiResponseSeries; found {sorted(ophys.data_interfaces)}")
        ref_role = "F" if "F" in found else next(iter(found))
        ref_name, ref = found[ref_role]
        arrays = {}
        for role, (name, series) in found.items():
            data = np.asarray(series.data[:])
            if data.ndim == 1:
                data = data[:, None]
            if data.ndim != 2:
                raise DataError(f"{path}: {name}/{series.name} data must be 2-D (n_frames, "
                                f"n_rois); got shape {data.shape}")
            if data.dtype.kind not in "fiub":
                raise DataError(f"{path}: {name}/{series.name} data must be numeric "
                                f"(n_frames, n_rois); found dtype {data.dtype}")
            arrays[role] = data.T  # NWB is time-first
        ref_shape = arrays[ref_role].shape
        for role, arr in arrays.items():
            if arr.shape != ref_shape:
                raise DataError(f"{path}: {found[role][0]} has {arr.shape[0]} ROIs x "
                                f"{arr.shape[1]} frames but {ref_name} has {ref_shape[0]} x "
                                f"{ref_shape[1]}")
        rate, tmin, rate_source = _nwb_timing(ref, path, fs)
        ids, ch_pos, iscell, iscell_prob = _nwb_rois(ref, ref_shape[0], path)

    available = _offered_signals(arrays)
    if signal not in available:
        raise _missing_signal(path, "NWB", signal, available)
    coef = neucoeff if neucoeff is not None else _DEFAULT_NEUCOEFF
    compute_dff = signal == "dff" and "dff" not in arrays
    source = "F" if compute_dff else signal
    if source == "Fc":
        data = arrays["F"].astype(np.float64) - coef * arrays["Fneu"].astype(np.float64)
    else:
        data = arrays[source]
    units = "dF/F" if source == "dff" else "a.u."
    extras = {k: v for k, v in arrays.items() if k != "dff"}
    ds = _build(data, names=ids, fs=rate, units=units, path=path, fmt="nwb",
                on_nonfinite=on_nonfinite, ch_pos=ch_pos,
                iscell=iscell, iscell_prob=iscell_prob, extras=extras, tmin=tmin,
                attrs={"calcium_signal": signal, "neucoeff": coef})
    ds = append_history(ds, "read_calcium", path=str(path), format="nwb", signal=signal,
                        series={r: f"{n}/{s.name}" for r, (n, s) in found.items()},
                        fs=rate, fs_source=rate_source)
    if compute_dff:
        ds = _to_dff(ds, path, method="percentile")
    return ds


def _one_series(iface, path, name):
    series = dict(iface.roi_response_series)
    if len(series) == 1:
        return next(iter(series.values()))
    if not series:
        raise FormatError(f"{path}: ophys/{name} holds no RoiResponseSeries")
    raise FormatError(f"{path}: ophys/{name} holds several RoiResponseSeries {sorted(series)}; "
                      "neurofm reads one plane per file (split the planes first)")


def _nwb_timing(series, path, fs):
    rate = getattr(series, "rate", None)
    tmin = float(getattr(series, "starting_time", None) or 0.0)
    if rate is not None:
        rate = positive_number(rate, f"{path}: {series.name}.rate (frame rate in Hz)")
        if fs is not None and abs(fs - rate) > 1e-6 * rate:
            warn(f"{path}: fs={fs:g} given but the file's rate is {rate:g} Hz; using fs")
            return fs, tmin, "argument"
        return rate, tmin, "rate"
    stamps = getattr(series, "timestamps", None)
    if stamps is None:
        if fs is None:
            raise DataError(f"{path}: {series.name} has neither rate nor timestamps; pass fs=")
        return fs, tmin, "argument"
    t = np.asarray(stamps[:], dtype=np.float64)
    if t.size < 2:
        if fs is None:
            raise DataError(f"{path}: {series.name} has {t.size} timestamp(s); pass fs=")
        return fs, float(t[0]) if t.size else 0.0, "argument"
    step = regular_step(t, f"{path}: {series.name} timestamp", rtol=0.01,
                        expected="a constant frame interval")
    rate = fs if fs is not None else 1.0 / step
    return rate, float(t[0]), "argument" if fs is not None else "timestamps"


def _nwb_rois(series, n_rois, path):
    region = getattr(series, "rois", None)
    if region is None:
        return _roi_names(n_rois), None, None, None
    table = region.table
    index = np.asarray(region.data[:], dtype=np.int64)
    if index.size != n_rois:
        raise DataError(f"{path}: {series.name} has {n_rois} ROI columns but its rois region "
                        f"lists {index.size}")
    ids = np.asarray(table.id[:])[index]
    columns = set(table.colnames)
    pos = np.full((n_rois, 3), np.nan)
    if "pixel_mask" in columns:
        for k, i in enumerate(index):
            pm = table["pixel_mask"][int(i)]
            x = np.asarray([p[0] for p in pm], dtype=np.float64)
            y = np.asarray([p[1] for p in pm], dtype=np.float64)
            w = np.asarray([p[2] for p in pm], dtype=np.float64)
            if w.sum() > 0:
                pos[k] = (np.sum(w * x) / w.sum(), np.sum(w * y) / w.sum(), 0.0)
    elif "image_mask" in columns:
        for k, i in enumerate(index):
            mask = np.abs(np.asarray(table["image_mask"][int(i)], dtype=np.float64))
            total = mask.sum()
            if total > 0:
                grid = np.indices(mask.shape)
                # NWB image masks are (x, y[, z])
                centre = [float((g * mask).sum() / total) for g in grid]
                pos[k] = (centre[0], centre[1], centre[2] if len(centre) > 2 else 0.0)
    iscell = iscell_prob = None
    if "iscell" in columns:
        iscell, iscell_prob = _split_iscell(np.asarray(table["iscell"].data[:])[index],
                                            f"{path}: {table.name}/iscell")
    return _roi_names(n_rois, ids), pos, iscell, iscell_prob


# --------------------------------------------------------------------------------------------
# plain arrays
# --------------------------------------------------------------------------------------------
def _read_array(path, *, fs, signal, neucoeff, on_nonfinite):
    if fs is None:
        raise DataError(f"{path}: a plain array carries no frame rate; pass fs= (Hz)")
    if signal not in ("dff", "F"):
        raise _missing_signal(path, "plain array (read as F)", signal, ["dff", "F"])
    names = None
    if path.name.lower().endswith(".npy"):
        from ._pickle import load_npy

        data = load_npy(path)
    else:
        data, names = _read_table(path)
    data = _check_2d(data, "the array", path)
    if names is None:
        names = _roi_names(data.shape[0])
    ds = _build(data, names=names, fs=fs, units="a.u.", path=path, fmt="array",
                on_nonfinite=on_nonfinite,
                attrs={"calcium_signal": signal})
    ds = append_history(ds, "read_calcium", path=str(path), format="array", signal=signal,
                        fs=fs)
    if signal == "dff":
        ds = _to_dff(ds, path, method="percentile")
    return ds


def _read_table(path):
    """A cells x time text table, optionally with ROI names in the first column."""
    import pandas as pd

    df = read_table(path, "cells x frames table", header=None)
    names = None
    first_col = pd.to_numeric(df.iloc[:, 0], errors="coerce")
    if df.shape[1] > 1 and first_col.isna().sum() > len(df) // 2:
        names = [str(v) for v in df.iloc[:, 0]]
        df = df.iloc[:, 1:]
    first_row = pd.to_numeric(df.iloc[0], errors="coerce")
    if first_row.isna().all():  # a header row (frame labels)
        df = df.iloc[1:]
        if names is not None:
            names = names[1:]
    values = df.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(values).any() and not np.isnan(values).all():
        r, c = np.argwhere(np.isnan(values))[0]
        raise DataError(f"{path}: non-numeric or missing value at row {r}, column {c}; "
                        "expected a numeric cells x frames table")
    return values, names
