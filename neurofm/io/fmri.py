"""fMRI -> canonical Dataset: ROI time series extracted from a 4D BOLD image with nilearn.

:func:`read_fmri` runs one of nilearn's maskers on a BOLD image:

- a labels image (3D integer parcellation) -> :class:`~nilearn.maskers.NiftiLabelsMasker`,
  one channel per parcel, ``ch_pos`` = parcel centroid in world mm;
- a probabilistic maps image (4D) -> :class:`~nilearn.maskers.NiftiMapsMasker`;
- coordinates (a table or array of x, y, z in mm, or an offline atlas name: "power_2011",
  "dosenbach_2010", "seitzman_2018") -> :class:`~nilearn.maskers.NiftiSpheresMasker`.

Confounds come from fMRIPrep tables (``nilearn.interfaces.fmriprep.load_confounds``, with its
``sample_mask``), from a DataFrame / TSV, or not at all. :func:`read_roi_timeseries` wraps an
already extracted time x ROI table.
"""

from __future__ import annotations

import os
import warnings
import zlib
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
    read_table,
)
from .bids import parse_entities, sidecar_metadata

__all__ = ["COORDINATE_ATLASES", "read_fmri", "read_label_table", "read_roi_timeseries"]

#: Offline coordinate atlases shipped inside nilearn (read from its package data).
COORDINATE_ATLASES = ("power_2011", "dosenbach_2010", "seitzman_2018")

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_TABLE_SUFFIXES = (".csv", ".tsv", ".txt")
_MS_THRESHOLD = 100.0  # a "TR" above this many seconds is really milliseconds


# --------------------------------------------------------------------------------------------
# read_fmri
# --------------------------------------------------------------------------------------------
def read_fmri(bold, *, atlas, confounds=None, strategy=("motion", "high_pass", "wm_csf"),
              t_r=None, standardize="zscore_sample", detrend=False, low_pass=None,
              high_pass=None, radius=5.0, labels=None, mask_img=None, on_nonfinite="raise",
              verbose=None):
    """Extract ROI time series from a 4D BOLD image.

    Parameters
    ----------
    bold : str | os.PathLike | nibabel image
        A 4D NIfTI image of shape (x, y, z, n_volumes).
    atlas : str | os.PathLike | nibabel image | pandas.DataFrame | array-like
        A 3D labels image (integer parcels; 0 is background), a 4D probabilistic maps image
        (x, y, z, n_maps), a coordinate table (DataFrame, ``.csv``/``.tsv`` with columns x, y,
        z and optionally name; or an array of shape (n_rois, 3) in mm), or the name of an
        offline coordinate atlas: "power_2011" (264 ROIs), "dosenbach_2010" (160),
        "seitzman_2018" (300). An object with ``maps`` (and ``labels``) attributes, as
        nilearn's atlas fetchers return, is accepted too.
    confounds : None | "fmriprep" | pandas.DataFrame | str | os.PathLike | array-like
        "fmriprep" loads the fMRIPrep confounds next to ``bold`` with
        :func:`nilearn.interfaces.fmriprep.load_confounds` (``strategy``) and honours its
        ``sample_mask``; a DataFrame, a TSV/CSV path or an array of shape (n_volumes,
        n_confounds) is regressed out as given. Stored as ``confounds`` (time, confound).
    strategy : tuple of str
        ``load_confounds`` strategy for ``confounds="fmriprep"``.
    t_r : float, optional
        Repetition time in seconds. When None it is read from the BIDS JSON sidecar
        (``RepetitionTime``), else from the NIfTI header (a header TR above 100 "s" is read
        as milliseconds, with a warning). When given it is used as is (with a warning when
        the file says otherwise).
    standardize : {"zscore_sample", "zscore", "psc"} | bool | None
        Passed to the nilearn masker.
    detrend : bool
        Passed to the nilearn masker.
    low_pass, high_pass : float, optional
        Butterworth cut-offs in Hz, passed to the nilearn masker.
    radius : float
        Sphere radius in mm for coordinate atlases.
    labels : sequence of str | dict | str | os.PathLike, optional
        Names of the parcels (labels image: one per non-background label, or one per label
        including background, or a dict label value -> name) or of the maps (one per map).
        A path is a look-up table (``.tsv``/``.csv``, as BIDS ``*_dseg.tsv`` and nilearn's
        atlas look-up tables define it) with columns ``index`` (the integer label value) and
        ``name``; other columns (``color``, ``abbreviation``, ...) are ignored and a row for
        index 0 names the background. Default: the label values ("1", "2", ...) and
        "map<k>" for maps.
    mask_img : str | os.PathLike | nibabel image, optional
        Brain mask passed to the masker.
    on_nonfinite : {"raise", "warn"}
        NaN/Inf in the extracted ROI time series: "raise" (default) a
        :class:`~neurofm.errors.DataError` naming the file, ROIs and sample counts; "warn"
        keeps the recording with a :class:`~neurofm.errors.NeurofmWarning` and marks those
        ROIs bad.
    verbose : bool | str | None
        Log level for this call: True or "info" logs what was read, "debug" also the masker
        settings, "error" silences the warnings.

    Warns
    -----
    NeurofmWarning
        Parcels, maps or spheres of the atlas that hold no voxel of the BOLD image (dropped,
        listed in the history); a header TR read as milliseconds; ``t_r`` overriding a
        different TR of the sidecar or header.

    Returns
    -------
    ds : xarray.Dataset
        Canonical recording, modality "fmri": ``signal`` (n_rois, n_volumes_kept) float32,
        ch_type "roi", ``ch_pos`` in mm, sfreq = 1 / t_r, ``time`` = volume index x t_r,
        a ``volume`` (time) coordinate with the original volume indices, ``confounds``
        (time, confound) when confounds were used; attrs ``t_r``, ``atlas``, ``space`` and
        BIDS entities from the file name.

    Raises
    ------
    DataError
        A 3D image, no TR anywhere, an atlas that does not overlap the BOLD field of view,
        confounds of the wrong length or with NaN, too few volumes for the filter, a scrubbing
        strategy that removes every volume, NaN/Inf in the ROI time series
        (``on_nonfinite="raise"``).
    FormatError
        Missing, unreadable or truncated files, no fMRIPrep confounds next to ``bold``.
    """
    with use_log_level(verbose):
        img, bold_path = _load_bold(bold)
        where = _name(bold_path)
        n_volumes = int(img.shape[3])
        t_r, t_r_source = _repetition_time(img, bold_path, t_r)
        radius = check_positive("radius", radius)
        check_option("on_nonfinite", on_nonfinite, NONFINITE_POLICIES)
        use_fmriprep = isinstance(confounds, str) and confounds == "fmriprep"
        if high_pass is not None and use_fmriprep and "high_pass" in tuple(strategy):
            raise NeurofmError(
                f"high_pass={high_pass} filters the signal while the confound strategy "
                f"{tuple(strategy)} already regresses out the cosine drift terms ('high_pass'); "
                "use one of the two (drop 'high_pass' from strategy or set high_pass=None)"
            )
        spec = _resolve_atlas(atlas, labels)
        conf, sample_mask, conf_source = _load_confounds(confounds, strategy, bold_path,
                                                         n_volumes)
        kept = np.arange(n_volumes) if sample_mask is None else np.asarray(sample_mask,
                                                                          dtype=np.int64)
        if kept.size == 0:
            raise DataError(f"{where}: the confound strategy {tuple(strategy)} "
                            f"marks all {n_volumes} volumes for removal (sample_mask is empty)")
        std = _nilearn_standardize(standardize)
        _check_filter(n_volumes, low_pass, high_pass, t_r, where)
        n_regions = len(spec["names"])
        masker = _make_masker(spec, std, detrend, low_pass, high_pass, t_r, radius,
                              mask_img)
        logger.debug("%s: %s with %d region(s) of %s, standardize=%s, detrend=%s, "
                     "low_pass=%s, high_pass=%s, t_r=%g, confounds=%s", where,
                     type(masker).__name__, n_regions, spec["name"], std, detrend, low_pass,
                     high_pass, t_r, conf_source)
        X, empty = _transform(masker, spec, img, conf, sample_mask, where)
        names = spec["names"]
        if X.shape[1] != len(names):
            raise DataError(f"{where}: the masker returned {X.shape[1]} regions but "
                            f"{len(names)} were expected from the atlas")
        if empty:
            what = {"labels": "parcel(s)", "maps": "map(s)", "spheres": "sphere(s)"}[spec["kind"]]
            warn(f"{where}: {len(empty)} of {n_regions} {what} of atlas {spec['name']!r} hold "
                 "no voxel of the BOLD image (after resampling/masking) and were dropped: "
                 + ", ".join(empty[:20]) + (" ..." if len(empty) > 20 else ""))
        bad = check_nonfinite(X.T, names, where, on_nonfinite)
        entities = parse_entities(bold_path) if bold_path else {}
        space = entities.get("space") or "unknown"
        frame = "mni" if spec["kind"] == "spheres" or space.lower().startswith("mni") \
            else "unknown"
        attrs = {k: entities[k] for k in ("subject", "session", "task", "run") if k in entities}
        ds = make_recording(
            X.T, channel=names, sfreq=1.0 / t_r, modality="fmri", ch_type="roi",
            ch_pos=spec["pos"], bad=bad,
            units="z" if std in ("zscore_sample", "zscore") else "a.u.",
            pos_coord_frame=frame, pos_units="mm", t_r=t_r, atlas=spec["name"], space=space,
            source_file=str(Path(bold_path).resolve()) if bold_path else "",
            source_format="nifti", **attrs,
        )
        ds = ds.assign_coords(time=("time", kept.astype(np.float64) * t_r, {"units": "s"}),
                              volume=("time", kept))
        for cname, values in spec["extra"].items():
            ds = ds.assign_coords({cname: ("channel", values)})
        if conf is not None:
            ds["confounds"] = xr.Variable(
                ("time", "confound"), conf.to_numpy(dtype=np.float64)[kept],
                {"source": conf_source},
            )
            ds = ds.assign_coords(confound=("confound", np.array([str(c) for c in conf.columns],
                                                                 dtype=str)))
        dropped = sorted(set(range(n_volumes)) - set(kept.tolist()))
        ds = append_history(
            ds, "read_fmri", bold=where, atlas=spec["name"],
            atlas_kind=spec["kind"], confounds=conf_source,
            strategy=list(strategy) if use_fmriprep else None, t_r=t_r,
            t_r_source=t_r_source, standardize=std, detrend=detrend, low_pass=low_pass,
            high_pass=high_pass, radius=radius if spec["kind"] == "spheres" else None,
            n_volumes=n_volumes, dropped_volumes=dropped, empty_parcels=empty,
        )
        if dropped:
            logger.info("%s: %d volume(s) dropped by the confound sample_mask: %s",
                        where, len(dropped), dropped)
        validate(ds, name=where, check_values=not bad.any())
        logger.info("read %s: %d ROIs x %d volumes (TR %g s, %s)", where,
                    ds.sizes["channel"], ds.sizes["time"], t_r, spec["name"])
        return ds


def _read_fmri_dispatch(path, **kwargs):
    """:func:`neurofm.io.read` entry: fMRI needs an atlas, say so clearly when it is missing."""
    if "atlas" not in kwargs:
        raise NeurofmError(f"{path}: reading a BOLD image needs atlas= (a labels/maps image, a "
                           f"coordinate table or one of {COORDINATE_ATLASES})")
    return read_fmri(path, **kwargs)


def _name(path):
    return str(path) if path else "<in-memory image>"


# --------------------------------------------------------------------------------------------
# BOLD and TR
# --------------------------------------------------------------------------------------------
def _load_bold(bold):
    import nibabel as nib

    path = None
    if isinstance(bold, (str, os.PathLike)):
        path = Path(bold)
        if not path.is_file():
            raise FormatError(f"{path}: BOLD image not found")
        try:
            img = nib.load(str(path))
        except Exception as err:  # nibabel raises many types on a bad file
            raise FormatError(f"{path}: not a readable NIfTI image ({type(err).__name__}: "
                              f"{err})") from err
    elif isinstance(bold, nib.spatialimages.SpatialImage):
        img = bold
    else:
        raise NeurofmError(f"bold must be a path or a nibabel image; got {type(bold).__name__}")
    if len(img.shape) != 4:
        raise DataError(f"{_name(path)}: expected a 4D BOLD image (x, y, z, time); got a "
                        f"{len(img.shape)}D image of shape {tuple(img.shape)}")
    if img.shape[3] < 2:
        raise DataError(f"{_name(path)}: expected at least 2 volumes; got {img.shape[3]}")
    if not isinstance(img.dataobj, np.ndarray):
        # nibabel reads the voxels lazily: read them here, where a truncated or corrupt file
        # can be named, instead of inside the masker (nilearn reads them all anyway)
        source = _name(path) if path else (img.get_filename() or _name(path))
        try:
            data = np.asanyarray(img.dataobj)
        except (EOFError, OSError, ValueError, zlib.error) as err:
            raise FormatError(
                f"{source}: truncated or corrupt NIfTI data: expected {img.shape} values of "
                f"{img.get_data_dtype()} ({type(err).__name__}: {err})"
            ) from err
        img = img.__class__(data, img.affine, img.header)
    return img, path


def _repetition_time(img, path, t_r):
    """(t_r, source) from the argument, the JSON sidecar or the header."""
    file_tr, source = None, None
    if path is not None:
        meta = sidecar_metadata(path)
        if "RepetitionTime" in meta:
            try:
                file_tr = float(meta["RepetitionTime"])
            except (TypeError, ValueError) as err:
                raise DataError(f"{path}: sidecar RepetitionTime must be a number of seconds; "
                                f"found {meta['RepetitionTime']!r}") from err
            if not file_tr > 0:
                raise DataError(f"{path}: sidecar RepetitionTime must be > 0; found {file_tr}")
            source = "sidecar"
    if file_tr is None:
        file_tr = _header_tr(img, path)
        source = "header" if file_tr is not None else None
    if t_r is not None:
        t_r = check_positive("t_r", t_r)
        if file_tr is not None and abs(file_tr - t_r) > 0.01 * t_r:
            warn(f"{_name(path)}: t_r={t_r:g} s given but the {source} says {file_tr:g} s; "
                 f"using t_r={t_r:g}")
        return t_r, "argument"
    if file_tr is None:
        raise DataError(f"{_name(path)}: no repetition time: no JSON sidecar with "
                        "RepetitionTime and no TR in the NIfTI header; pass t_r= (seconds)")
    return file_tr, source


def _header_tr(img, path):
    header = img.header
    zooms = header.get_zooms()
    if len(zooms) < 4:
        return None
    tr = float(zooms[3])
    if not np.isfinite(tr) or tr <= 0:
        return None
    unit = "unknown"
    if hasattr(header, "get_xyzt_units"):
        unit = header.get_xyzt_units()[1]
    if unit == "msec":
        return tr / 1000.0
    if unit == "usec":
        return tr / 1e6
    if unit in ("hz", "ppm", "rads"):
        return None
    if tr > _MS_THRESHOLD:
        warn(f"{_name(path)}: the header says TR = {tr:g} "
             f"{'s' if unit == 'sec' else '(no unit)'}, which is implausible in seconds; "
             f"reading it as milliseconds ({tr / 1000.0:g} s); pass t_r= to override")
        return tr / 1000.0
    return tr


# --------------------------------------------------------------------------------------------
# atlas
# --------------------------------------------------------------------------------------------
def _resolve_atlas(atlas, labels):
    """Normalise ``atlas`` into a spec dict: kind, name, image or seeds, names, positions."""
    import nibabel as nib
    import pandas as pd

    if isinstance(labels, (str, os.PathLike)):
        labels = read_label_table(labels)

    if hasattr(atlas, "maps") and not isinstance(atlas, (str, os.PathLike, pd.DataFrame)):
        if labels is None and getattr(atlas, "labels", None) is not None:
            labels = list(atlas.labels)
        atlas = atlas.maps
    if isinstance(atlas, str) and atlas in COORDINATE_ATLASES:
        return _named_coordinates(atlas)
    if isinstance(atlas, (str, os.PathLike)):
        path = Path(atlas)
        lower = path.name.lower()
        if not path.exists():
            raise FormatError(
                f"atlas {atlas!r} is neither a file nor one of the offline coordinate atlases "
                f"{COORDINATE_ATLASES}"
            )
        if lower.endswith(_NIFTI_SUFFIXES):
            try:
                img = nib.load(str(path))
            except Exception as err:
                raise FormatError(f"{path}: not a readable NIfTI atlas ({err})") from err
            return _image_atlas(img, labels, name=path.name)
        if lower.endswith(_TABLE_SUFFIXES):
            table = read_table(path, "coordinate table")
            return _table_coordinates(table, name=path.name, source=str(path))
        raise FormatError(f"{path}: unsupported atlas file; expected a NIfTI image "
                          f"({', '.join(_NIFTI_SUFFIXES)}) or a coordinate table "
                          f"({', '.join(_TABLE_SUFFIXES)})")
    if isinstance(atlas, nib.spatialimages.SpatialImage):
        return _image_atlas(atlas, labels, name="labels image" if len(atlas.shape) == 3
                            else "maps image")
    if isinstance(atlas, pd.DataFrame):
        return _table_coordinates(atlas, name="coordinates", source="DataFrame")
    if isinstance(atlas, (np.ndarray, list, tuple)):
        arr = np.asarray(atlas, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise DataError(f"atlas coordinates must have shape (n_rois, 3) in mm; got "
                            f"{arr.shape}")
        names = list(labels) if labels is not None else [f"roi{i:03d}" for i in range(len(arr))]
        return _coordinate_spec(arr, names, "coordinates", {})
    raise NeurofmError(
        f"atlas must be a labels/maps image (path or nibabel image), a coordinate table or "
        f"array (n_rois, 3), or one of {COORDINATE_ATLASES}; got {type(atlas).__name__}"
    )


def _named_coordinates(name):
    from nilearn import datasets

    if name == "power_2011":
        bunch = datasets.fetch_coords_power_2011()
        rois = bunch.rois
        names = [f"power_{int(r):03d}" for r in rois["roi"]]
        return _coordinate_spec(rois[["x", "y", "z"]].to_numpy(np.float64), names, name, {})
    if name == "dosenbach_2010":
        bunch = datasets.fetch_coords_dosenbach_2010()
        coords = bunch.rois[["x", "y", "z"]].to_numpy(np.float64)
        extra = {"network": np.array([str(n) for n in bunch.networks], dtype=str)}
        return _coordinate_spec(coords, [str(v) for v in bunch.labels], name, extra)
    bunch = datasets.fetch_coords_seitzman_2018()
    coords = bunch.rois[["x", "y", "z"]].to_numpy(np.float64)
    names = [f"seitzman_{int(i) + 1:03d}" for i in bunch.rois.index]
    extra = {"network": np.array([str(n) for n in bunch.networks], dtype=str),
             "region": np.array([str(r) for r in bunch.regions], dtype=str)}
    return _coordinate_spec(coords, names, name, extra)


def _table_coordinates(table, *, name, source):
    cols = {str(c).lower(): c for c in table.columns}
    missing = [c for c in ("x", "y", "z") if c not in cols]
    if missing:
        raise FormatError(f"{source}: a coordinate table needs columns x, y, z (mm); missing "
                          f"{missing}; found {list(table.columns)}")
    coords = table[[cols["x"], cols["y"], cols["z"]]].to_numpy(dtype=np.float64)
    if not np.isfinite(coords).all():
        raise DataError(f"{source}: coordinates must be finite numbers (mm)")
    names = None
    for key in ("name", "label", "labels", "roi", "region"):
        if key in cols:
            names = [str(v) for v in table[cols[key]]]
            break
    if names is None:
        names = [f"roi{i:03d}" for i in range(len(coords))]
    extra = {}
    if "network" in cols:
        extra["network"] = np.array([str(v) for v in table[cols["network"]]], dtype=str)
    return _coordinate_spec(coords, names, name, extra)


def _coordinate_spec(coords, names, name, extra):
    if len(names) != len(coords):
        raise DataError(f"atlas {name}: {len(names)} names for {len(coords)} coordinates")
    return {"kind": "spheres", "name": name, "seeds": coords, "names": list(names),
            "pos": coords.copy(), "extra": extra}


def _image_atlas(img, labels, name):
    shape = tuple(img.shape)
    if len(shape) == 4 and shape[3] == 1:
        import nibabel as nib

        img = nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine)
        shape = shape[:3]
    if len(shape) == 3:
        data = np.asarray(img.dataobj)
        if not np.all(np.isfinite(data)) or not np.allclose(data, np.round(data)):
            raise DataError(f"atlas {name}: a 3D atlas must be a labels image holding integer "
                            "parcel values (0 = background); found non-integer values")
        values = np.unique(np.round(data).astype(np.int64))
        values = values[values != 0]
        if values.size == 0:
            raise DataError(f"atlas {name}: the labels image holds no parcel (only 0)")
        id_names = _label_names(values, labels, name)
        pos = _label_centroids(np.round(data).astype(np.int64), values, img.affine)
        return {"kind": "labels", "name": name, "img": img, "values": values,
                "names": [id_names[int(v)] for v in values], "pos": pos, "extra": {}}
    if len(shape) == 4:
        n_maps = shape[3]
        if labels is None:
            names = [f"map{k:03d}" for k in range(n_maps)]
        elif isinstance(labels, dict):  # a look-up table: maps in index order
            keys = sorted(labels, key=int)
            if len(keys) == n_maps + 1 and int(keys[0]) == 0:
                keys = keys[1:]  # the background row
            names = [str(labels[k]) for k in keys]
            if len(names) != n_maps:
                raise DataError(f"atlas {name}: {len(names)} labels for {n_maps} maps")
        else:
            names = [str(v) for v in labels]
            if len(names) != n_maps:
                raise DataError(f"atlas {name}: {len(names)} labels for {n_maps} maps")
        pos = _map_centroids(img)
        return {"kind": "maps", "name": name, "img": img, "names": names, "pos": pos,
                "extra": {}}
    raise DataError(f"atlas {name}: expected a 3D labels image or a 4D maps image; got shape "
                    f"{shape}")


def read_label_table(path):
    """An atlas look-up table (BIDS ``*_dseg.tsv``, nilearn's atlas LUT) as label -> name.

    Parameters
    ----------
    path : str | os.PathLike
        A ``.tsv`` / ``.csv`` file with columns ``index`` (integer label values, unique) and
        ``name`` (non-empty); other columns are ignored.

    Returns
    -------
    names : dict of int -> str
        One entry per row, in file order (index 0, when present, names the background).

    Raises
    ------
    FormatError
        The file is missing or unreadable, lacks the ``index`` / ``name`` columns, or holds a
        non-integer or repeated index or an empty name (the message names the file).
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: atlas labels table not found")
    try:
        table = read_table(path, "atlas labels table", dtype=str, keep_default_na=False)
    except DataError as err:
        raise FormatError(str(err)) from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("index", "name") if c not in table.columns]
    if missing:
        raise FormatError(f"{path}: atlas labels table needs the columns index and name "
                          f"(BIDS dseg.tsv); missing {missing}, found {list(table.columns)}")
    index = pd.to_numeric(table["index"].str.strip(), errors="coerce")
    bad = table["index"][index.isna() | (index != index.round())].tolist()
    if bad:
        raise FormatError(f"{path}: atlas labels table: column index must hold integers; "
                          f"found {bad[:5]}")
    index = index.astype(np.int64)
    dup = sorted(set(index[index.duplicated()].tolist()))
    if dup:
        raise FormatError(f"{path}: atlas labels table: index values repeated: {dup[:5]}")
    names = table["name"].str.strip()
    empty = index[names == ""].tolist()
    if empty:
        raise FormatError(f"{path}: atlas labels table: empty name for index {empty[:5]}")
    return dict(zip(index.tolist(), names.tolist()))


def _label_names(values, labels, name):
    if labels is None:
        return {int(v): str(int(v)) for v in values}
    if isinstance(labels, dict):
        out = {int(v): str(labels.get(int(v), labels.get(str(int(v)), int(v)))) for v in values}
        return out
    labels = [str(v) for v in labels]
    if len(labels) == len(values):
        return dict(zip((int(v) for v in values), labels))
    if len(labels) == len(values) + 1:  # first entry names the background
        return dict(zip((int(v) for v in values), labels[1:]))
    raise DataError(f"atlas {name}: {len(labels)} labels for {len(values)} parcels; expected "
                    f"{len(values)} (or {len(values) + 1} with the background first), or a dict")


def _label_centroids(data, values, affine):
    """Mean voxel position of each label, in world mm: array of shape (n_labels, 3)."""
    inside = np.isin(data, values)
    ijk = np.argwhere(inside).astype(np.float64)  # (V, 3), same order as data[inside]
    index = np.searchsorted(values, data[inside])  # values are sorted (np.unique)
    counts = np.bincount(index, minlength=len(values)).astype(np.float64)
    centre = np.vstack([np.bincount(index, weights=ijk[:, a], minlength=len(values))
                        for a in range(3)]) / counts  # (3, n_labels)
    return (affine[:3, :3] @ centre + affine[:3, 3:4]).T


def _map_centroids(img):
    data = np.asarray(img.dataobj, dtype=np.float64)
    weights = np.clip(np.nan_to_num(data), 0, None)
    grid = np.indices(data.shape[:3]).reshape(3, -1)  # (3, V)
    w = weights.reshape(-1, data.shape[3])  # (V, M)
    total = w.sum(axis=0)
    pos = np.full((data.shape[3], 3), np.nan)
    ok = total > 0
    if ok.any():
        centre = (grid @ w[:, ok]) / total[ok]  # (3, M_ok)
        pos[ok] = (img.affine[:3, :3] @ centre + img.affine[:3, 3:4]).T
    return pos


# --------------------------------------------------------------------------------------------
# confounds
# --------------------------------------------------------------------------------------------
def _load_confounds(confounds, strategy, bold_path, n_volumes):
    """(DataFrame or None, sample_mask or None, source description)."""
    import pandas as pd

    if confounds is None:
        return None, None, None
    if isinstance(confounds, str) and confounds == "fmriprep":
        if bold_path is None:
            raise NeurofmError("confounds='fmriprep' needs bold as a file path (the confounds "
                               "table is found next to it)")
        from nilearn.interfaces.fmriprep import load_confounds

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                conf, sample_mask = load_confounds(str(bold_path), strategy=tuple(strategy))
        except (ValueError, FileNotFoundError, KeyError) as err:
            raise FormatError(
                f"{bold_path}: could not load fMRIPrep confounds with strategy "
                f"{tuple(strategy)}: expected a *_desc-confounds_timeseries.tsv (or "
                f"_regressors.tsv) and its .json next to a BIDS-named *_desc-preproc_bold "
                f"image ({err})"
            ) from err
        if len(conf) != n_volumes:
            raise DataError(f"{bold_path}: the fMRIPrep confounds have {len(conf)} rows but the "
                            f"BOLD image has {n_volumes} volumes")
        return conf, sample_mask, "fmriprep"
    source = "DataFrame"
    if isinstance(confounds, (str, os.PathLike)):
        path = Path(confounds)
        if not path.is_file():
            raise FormatError(f"{path}: confounds file not found (or pass 'fmriprep', a "
                              "DataFrame or an array)")
        conf = read_table(path, "confounds table", na_values=["n/a"])
        source = str(path)
    elif isinstance(confounds, pd.DataFrame):
        conf = confounds.copy()
    elif isinstance(confounds, (np.ndarray, list, tuple)):
        arr = np.asarray(confounds, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise DataError(f"confounds must have shape (n_volumes, n_confounds); got "
                            f"{arr.shape}")
        conf = pd.DataFrame(arr, columns=[f"confound{k:02d}" for k in range(arr.shape[1])])
        source = "array"
    else:
        raise NeurofmError(f"confounds must be None, 'fmriprep', a DataFrame, a TSV/CSV path or "
                           f"an array; got {type(confounds).__name__}")
    if len(conf) != n_volumes:
        raise DataError(f"confounds ({source}) have {len(conf)} rows but the BOLD image has "
                        f"{n_volumes} volumes")
    try:
        values = conf.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"confounds ({source}) must be numeric; {err}") from err
    nan_cols = [str(c) for c, bad in zip(conf.columns, ~np.isfinite(values).all(axis=0)) if bad]
    if nan_cols:
        raise DataError(
            f"confounds ({source}) hold NaN/Inf in columns {nan_cols[:10]}"
            f"{' ...' if len(nan_cols) > 10 else ''} (fMRIPrep leaves n/a in the first row of "
            "derivative columns); fill them (e.g. conf.fillna(0)) or use confounds='fmriprep'"
        )
    return conf, None, source


# --------------------------------------------------------------------------------------------
# masker
# --------------------------------------------------------------------------------------------
def _nilearn_standardize(standardize):
    if isinstance(standardize, bool):
        return "zscore_sample" if standardize else None
    return check_option("standardize", standardize, (None, "zscore_sample", "zscore", "psc"))


def _make_masker(spec, standardize, detrend, low_pass, high_pass, t_r, radius, mask_img):
    from nilearn.maskers import NiftiLabelsMasker, NiftiMapsMasker, NiftiSpheresMasker

    common = {"standardize": standardize, "detrend": detrend, "low_pass": low_pass,
              "high_pass": high_pass, "t_r": t_r, "mask_img": mask_img}
    if spec["kind"] == "labels":
        return NiftiLabelsMasker(spec["img"], **common)
    if spec["kind"] == "maps":
        return NiftiMapsMasker(spec["img"], **common)
    return NiftiSpheresMasker(spec["seeds"], radius=radius, allow_overlap=True, **common)


_BUTTERWORTH_ORDER = 5  # nilearn.signal.butterworth's default, used by its maskers


def _check_filter(n_volumes, low_pass, high_pass, t_r, where):
    """Refuse cut-offs nilearn cannot apply and runs too short for its Butterworth filter.

    nilearn filters with ``scipy.signal.sosfiltfilt`` (order 5, cut-offs at or above Nyquist
    lowered just below it), whose default padding needs more than ``padlen`` samples; with a
    scrubbing ``sample_mask`` the censored volumes are interpolated first, so the whole run
    is filtered.
    """
    from scipy.signal import butter

    low_pass = check_positive("low_pass", low_pass, allow_none=True)
    high_pass = check_positive("high_pass", high_pass, allow_none=True)
    if low_pass is None and high_pass is None:
        return
    if low_pass is not None and high_pass is not None and high_pass >= low_pass:
        raise NeurofmError(f"high_pass={high_pass} Hz must be below low_pass={low_pass} Hz "
                           "(a band-pass filter)")
    nyquist = 0.5 / t_r
    eps = np.finfo(np.float32).eps

    def below_nyquist(freq):
        return nyquist - nyquist * 10 * eps if freq >= nyquist else freq

    freqs = [below_nyquist(f) for f in (high_pass, low_pass) if f is not None]
    btype = "band" if len(freqs) == 2 else ("high" if high_pass is not None else "low")
    sos = butter(_BUTTERWORTH_ORDER, freqs if len(freqs) == 2 else freqs[0], btype=btype,
                 output="sos", fs=1.0 / t_r)
    padlen = 3 * (2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()),
                                         int((sos[:, 5] == 0).sum())))
    if n_volumes <= padlen:
        raise DataError(
            f"{where}: {n_volumes} volumes are too few for the requested filter "
            f"(low_pass={low_pass}, high_pass={high_pass}, TR {t_r:g} s): nilearn's order-"
            f"{_BUTTERWORTH_ORDER} Butterworth filter needs at least {padlen + 1} volumes; "
            "drop the filter or use a longer run"
        )


def _labels_on_bold_grid(spec, img, mask_img, where):
    """Resample a labels atlas (and mask) onto the BOLD grid as nilearn would; check overlap.

    Replaces ``spec["img"]`` by the resampled atlas, so that the masker does not resample it
    again, and returns the names of the parcels that vanished.
    """
    from nilearn.image import resample_img
    from nilearn.image.resampling import BoundingBoxError

    atlas = spec["img"]
    shape = tuple(img.shape[:3])

    def on_grid(image):
        if tuple(image.shape[:3]) == shape and np.allclose(image.affine, img.affine):
            return image
        return resample_img(image, target_affine=img.affine, target_shape=shape,
                            interpolation="nearest", force_resample=True, copy_header=True)

    try:
        resampled = on_grid(atlas)
    except BoundingBoxError as err:
        raise DataError(
            f"{where}: the atlas {spec['name']!r} does not overlap the BOLD field of view "
            f"(affines/shapes cannot be matched by resampling: {err}); check that both are in "
            "the same space"
        ) from err
    data = np.asarray(resampled.dataobj)
    present = np.unique(data)
    inside = data
    if mask_img is not None:
        from nilearn.image import load_img

        mask = np.asarray(on_grid(load_img(mask_img)).dataobj) != 0
        inside = data[mask]
    labels_left = np.setdiff1d(np.unique(inside), [0])
    if labels_left.size == 0:
        raise DataError(
            f"{where}: no parcel of atlas {spec['name']!r} lies in the BOLD field of view"
            f"{' inside mask_img' if mask_img is not None else ''} after resampling it to the "
            f"BOLD grid {shape}; check that both images are in the same space"
        )
    spec["img"] = resampled  # already on the grid: nilearn does not resample it again
    return _drop_regions(spec, [i for i, v in enumerate(spec["values"])
                                if int(v) not in set(present.tolist())])


def _transform(masker, spec, img, conf, sample_mask, where):
    """Run the masker; return (X of shape (n_kept, n_regions), names of empty parcels).

    The preconditions nilearn would fail on (an atlas outside the field of view, empty
    spheres, parcels lost in resampling) are checked before; empty parcels are removed from
    ``spec``, whose names, positions and extra coords then describe the columns of X.
    """
    from nilearn.image.resampling import BoundingBoxError

    empty = []
    if spec["kind"] == "spheres":
        empty = _drop_regions(spec, _empty_spheres(spec, img, masker))
        if not spec["names"]:
            raise DataError(f"{where}: no sphere of atlas {spec['name']!r} (radius "
                            f"{masker.radius} mm) contains a voxel of the BOLD image; check "
                            "that the image is in the atlas space (MNI)")
        masker.seeds = [tuple(s) for s in spec["seeds"]]
    elif spec["kind"] == "labels":
        empty = _labels_on_bold_grid(spec, img, masker.mask_img, where)
        masker.labels_img = spec["img"]
    try:
        X = masker.fit_transform(img, confounds=conf, sample_mask=sample_mask)
    except BoundingBoxError as err:
        raise DataError(
            f"{where}: the atlas {spec['name']!r} does not overlap the BOLD field "
            f"of view (affines/shapes cannot be matched by resampling: {err}); check that "
            "both are in the same space"
        ) from err
    except ValueError as err:
        raise DataError(f"{where}: nilearn could not extract the time series "
                        f"with atlas {spec['name']!r}: {err}") from err
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[None, :]
    if spec["kind"] == "labels":
        kept_ids = {int(v) for k, v in masker.region_ids_.items() if k != "background"}
        empty += _drop_regions(spec, [i for i, v in enumerate(spec["values"])
                                      if int(v) not in kept_ids])
    elif spec["kind"] == "maps":
        zero = np.flatnonzero(np.all(X == 0, axis=0))
        empty += _drop_regions(spec, zero)
        X = np.delete(X, zero, axis=1)
    return X, empty


def _empty_spheres(spec, img, masker):
    """Indices of seeds whose sphere holds no voxel of the image (or of the mask)."""
    from scipy.spatial import cKDTree

    shape = img.shape[:3]
    if masker.mask_img is not None:
        from nilearn.image import resample_img
        from nilearn.masking import load_mask_img

        mask_img = resample_img(masker.mask_img, target_affine=img.affine, target_shape=shape,
                                interpolation="nearest")
        mask, _ = load_mask_img(mask_img)
    else:
        mask = np.ones(shape, dtype=bool)
    ijk = np.argwhere(mask)
    if ijk.size == 0:
        return list(range(len(spec["seeds"])))
    xyz = ijk @ img.affine[:3, :3].T + img.affine[:3, 3]
    tree = cKDTree(xyz)
    seeds = np.asarray(spec["seeds"], dtype=np.float64)
    counts = tree.query_ball_point(seeds, r=masker.radius, return_length=True)
    inv = np.linalg.inv(img.affine)
    nearest = np.round(seeds @ inv[:3, :3].T + inv[:3, 3]).astype(int)
    inside = np.all((nearest >= 0) & (nearest < np.array(shape)), axis=1)
    near_in_mask = np.zeros(len(seeds), dtype=bool)
    near_in_mask[inside] = mask[tuple(nearest[inside].T)]
    empty = [i for i in range(len(seeds)) if counts[i] == 0 and not near_in_mask[i]]
    # nilearn also keeps the in-mask voxel whose world coordinates, truncated to integers,
    # equal the seed's truncated coordinates: such a voxel lies within sqrt(3) mm of the seed,
    # so only a radius below that can leave one outside the sphere
    if empty and masker.radius < np.sqrt(3.0):
        near = tree.query_ball_point(seeds[empty], r=np.sqrt(3.0) + 1e-9)
        cell = np.trunc(seeds[empty])
        empty = [i for i, c, idx in zip(empty, cell, near)
                 if not (np.trunc(xyz[idx]) == c).all(axis=1).any()]
    return empty


def _drop_regions(spec, idx):
    """Remove regions ``idx`` from ``spec`` (in place); return their names."""
    idx = sorted({int(i) for i in idx})
    if not idx:
        return []
    names = [spec["names"][i] for i in idx]
    keep = np.setdiff1d(np.arange(len(spec["names"])), idx)
    spec["names"] = [spec["names"][i] for i in keep]
    spec["pos"] = spec["pos"][keep]
    spec["extra"] = {k: v[keep] for k, v in spec["extra"].items()}
    for key in ("seeds", "values"):  # per-region arrays of spheres / labels atlases
        if key in spec:
            spec[key] = spec[key][keep]
    return names


# --------------------------------------------------------------------------------------------
# read_roi_timeseries
# --------------------------------------------------------------------------------------------
def read_roi_timeseries(table, *, t_r, roi_names=None, ch_pos=None, on_nonfinite="raise",
                        verbose=None):
    """Wrap an already extracted ROI time series table as a canonical fMRI recording.

    Parameters
    ----------
    table : str | os.PathLike | pandas.DataFrame | array-like
        A CSV/TSV file or DataFrame with one column per ROI (the header gives the ROI names)
        and one row per volume, or an array of shape (n_volumes, n_rois).
    t_r : float
        Repetition time in seconds.
    roi_names : sequence of str, optional
        ROI names (length n_rois); override the header.
    ch_pos : array-like of shape (n_rois, 3) | dict, optional
        ROI positions in mm.
    on_nonfinite : {"raise", "warn"}
        NaN/Inf values (including empty cells of a table): "raise" (default) a
        :class:`~neurofm.errors.DataError` naming the source, ROIs and counts; "warn" keeps
        them with a :class:`~neurofm.errors.NeurofmWarning` and marks those ROIs bad.
    verbose : bool | str | None
        Log level for this call.

    Returns
    -------
    ds : xarray.Dataset
        Canonical recording, modality "fmri": ``signal`` (n_rois, n_volumes) float32, ch_type
        "roi", sfreq = 1 / t_r, attrs ``t_r``.

    Raises
    ------
    DataError
        An empty file or table (no ROI or no volume), non-numeric values, NaN/Inf
        (``on_nonfinite="raise"``), ``roi_names`` of the wrong length.
    FormatError
        A missing or unparsable file.
    """
    import pandas as pd

    with use_log_level(verbose):
        t_r = check_positive("t_r", t_r)
        check_option("on_nonfinite", on_nonfinite, NONFINITE_POLICIES)
        source = "array"
        header = None
        if isinstance(table, (str, os.PathLike)):
            path = Path(table)
            if not path.is_file():
                raise FormatError(f"{path}: ROI time series table not found")
            df = read_table(path, "ROI time series table")
            if all(_is_number(c) for c in df.columns):  # no header row
                df = read_table(path, "ROI time series table", header=None)
            else:
                header = [str(c) for c in df.columns]
            source = str(path.resolve())
            values = df
        elif isinstance(table, pd.DataFrame):
            header = [str(c) for c in table.columns]
            values = table
            source = "DataFrame"
        else:
            values = table
        try:
            data = np.array(values, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise DataError(f"ROI table ({source}) must be numeric (n_volumes, n_rois): "
                            f"{err}") from err
        if data.ndim != 2:
            raise DataError(f"ROI table ({source}) must be 2-D (n_volumes, n_rois); got shape "
                            f"{data.shape}")
        check_not_empty(data.shape, source, layout="(n_volumes, n_rois)")
        n_vol, n_roi = data.shape
        if roi_names is not None:
            names = [str(n) for n in roi_names]
            if len(names) != n_roi:
                raise DataError(f"roi_names has {len(names)} names but the table has {n_roi} "
                                f"ROI columns (shape {data.shape}: volumes x ROIs)")
        elif header is not None:
            names = header
        else:
            names = [f"roi{i:03d}" for i in range(n_roi)]
        bad = check_nonfinite(data.T, names, source, on_nonfinite)
        ds = make_recording(data.T, channel=names, sfreq=1.0 / t_r, modality="fmri",
                            ch_type="roi", ch_pos=ch_pos, bad=bad, units="a.u.", pos_units="mm",
                            t_r=t_r, atlas="", space="unknown", source_file=source,
                            source_format="roi_table")
        ds = ds.assign_coords(volume=("time", np.arange(n_vol)))
        ds = append_history(ds, "read_roi_timeseries", source=source, t_r=t_r,
                            n_volumes=n_vol, n_rois=n_roi)
        validate(ds, name=source, check_values=not bad.any())
        logger.info("read %s: %d ROIs x %d volumes (TR %g s)", source, n_roi, n_vol, t_r)
        return ds


def _is_number(value):
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
