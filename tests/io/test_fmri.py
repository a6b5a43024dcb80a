"""fMRI readers against nilearn's maskers on real BOLD data shipped in wheels.

Real data: nibabel's ``functional.nii`` (17x21x3x20, TR 2 s) and ``example4d.nii.gz`` (header
TR 2000 "s"), nitime's ``fmri1.nii.gz`` (10x10x18x40, TR 1.35 s) and ``fmri_timeseries.csv``
(250 x 31, TR 1.89 s), nilearn's fMRIPrep confounds tables and its offline coordinate atlases.
Generated here: the labels/maps atlases (a partition of each image's own brain mask into
parcels, since no parcellation NIfTI ships offline) and small confound tables.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from neurofm.datasets import package_file
from neurofm.errors import DataError, FormatError, NeurofmError, NeurofmWarning
from neurofm.io import read
from neurofm.io.fmri import read_fmri, read_roi_timeseries
from neurofm.schema import history, validate

pytest.importorskip("nitime")


@pytest.fixture(scope="module")
def functional():
    return package_file("nibabel", "tests", "data", "functional.nii")


@pytest.fixture(scope="module")
def nitime_bold():
    return package_file("nitime", "data", "fmri1.nii.gz")


def _labels_atlas(img, n_x=4, n_y=2, threshold=None):
    """Generated: partition the voxels brighter than the mean into n_x * n_y slabs."""
    data = np.asarray(img.dataobj, dtype=np.float64).mean(-1)
    mask = data > (data.mean() if threshold is None else threshold)
    lab = np.zeros(data.shape, dtype=np.int16)
    ijk = np.argwhere(mask)
    lab[tuple(ijk.T)] = 1 + ijk[:, 0] * n_x // data.shape[0] + n_x * (ijk[:, 1] * n_y
                                                                        // data.shape[1])
    return nib.Nifti1Image(lab, img.affine)


def _centroids(lab_img):
    lab = np.asarray(lab_img.dataobj)
    out = []
    for v in np.unique(lab[lab != 0]):
        ijk = np.argwhere(lab == v).mean(0)
        out.append(nib.affines.apply_affine(lab_img.affine, ijk))
    return np.array(out)


# --------------------------------------------------------------------------------------------
# labels / maps / spheres against nilearn
# --------------------------------------------------------------------------------------------
def test_labels_atlas_equals_nilearn_on_nibabel_functional(functional):
    from nilearn.maskers import NiftiLabelsMasker

    img = nib.load(functional)
    atlas = _labels_atlas(img)
    ds = read_fmri(functional, atlas=atlas)
    masker = NiftiLabelsMasker(atlas, standardize="zscore_sample")
    expected = masker.fit_transform(img)  # (time, roi)
    validate(ds)
    assert ds.attrs["modality"] == "fmri" and ds.attrs["t_r"] == 2.0 and ds.attrs["sfreq"] == 0.5
    assert list(ds["channel"].values) == [masker.region_names_[k] for k in
                                          sorted(masker.region_names_)]
    assert set(ds["ch_type"].values) == {"roi"}
    np.testing.assert_allclose(ds["signal"].values, expected.T.astype(np.float32), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(ds["ch_pos"].values, _centroids(atlas))
    assert ds["ch_pos"].attrs["units"] == "mm"
    np.testing.assert_allclose(ds["time"].values, np.arange(20) * 2.0)
    assert list(ds["volume"].values) == list(range(20))


def test_nitime_bold_with_band_pass_equals_nilearn(nitime_bold):
    from nilearn.maskers import NiftiLabelsMasker

    img = nib.load(nitime_bold)
    atlas = _labels_atlas(img, n_x=3, n_y=3)
    kwargs = {"standardize": "zscore_sample", "detrend": True, "low_pass": 0.2, "high_pass": 0.01}
    ds = read_fmri(nitime_bold, atlas=atlas, **kwargs)
    expected = NiftiLabelsMasker(atlas, t_r=1.35, **kwargs).fit_transform(img)
    assert ds.attrs["t_r"] == pytest.approx(1.35)
    assert ds.sizes["time"] == 40
    # filtered: compare away from the edges (edge effects are not part of the contract)
    np.testing.assert_allclose(ds["signal"].values[:, 3:-3], expected.T[:, 3:-3], rtol=1e-4,
                               atol=1e-4)
    step = history(ds)[-1]
    assert step["step"] == "read_fmri" and step["params"]["low_pass"] == 0.2


def test_maps_atlas_equals_nilearn(functional):
    from nilearn.maskers import NiftiMapsMasker

    img = nib.load(functional)
    grid = np.indices(img.shape[:3]).astype(float)
    centres = [(4, 5, 1), (12, 6, 1), (8, 15, 1)]
    maps = np.stack([np.exp(-((grid[0] - c[0]) ** 2 + (grid[1] - c[1]) ** 2
                              + (grid[2] - c[2]) ** 2) / 8.0) for c in centres], -1)
    maps_img = nib.Nifti1Image(maps, img.affine)  # generated probabilistic maps
    ds = read_fmri(functional, atlas=maps_img, labels=["a", "b", "c"], standardize=None)
    expected = NiftiMapsMasker(maps_img, standardize=None).fit_transform(img)
    assert list(ds["channel"].values) == ["a", "b", "c"]
    np.testing.assert_allclose(ds["signal"].values, expected.T, rtol=1e-5)
    assert ds["signal"].attrs["units"] == "a.u."
    np.testing.assert_allclose(ds["ch_pos"].values,
                               nib.affines.apply_affine(img.affine, np.array(centres, float)),
                               atol=0.3)


def test_empty_maps_are_dropped_and_recorded(functional):
    from nilearn.maskers import NiftiMapsMasker

    img = nib.load(functional)
    grid = np.indices(img.shape[:3]).astype(float)
    blob = np.exp(-((grid[0] - 8) ** 2 + (grid[1] - 10) ** 2 + (grid[2] - 1) ** 2) / 8.0)
    maps_img = nib.Nifti1Image(np.stack([blob, np.zeros_like(blob)], -1), img.affine)
    with pytest.warns(NeurofmWarning, match=r"1 of 2 map\(s\).*dropped: void"):
        ds = read_fmri(functional, atlas=maps_img, labels=["blob", "void"], standardize=None)
    expected = NiftiMapsMasker(maps_img, standardize=None).fit_transform(img)
    assert list(ds["channel"].values) == ["blob"] and ds["ch_pos"].shape == (1, 3)
    np.testing.assert_allclose(ds["signal"].values, expected.T[:1], rtol=1e-5)
    assert history(ds)[-1]["params"]["empty_parcels"] == ["void"]


def test_power_spheres_equal_nilearn_and_empty_spheres_are_reported(functional):
    from nilearn.datasets import fetch_coords_power_2011
    from nilearn.maskers import NiftiSpheresMasker

    img = nib.load(functional)
    coords = fetch_coords_power_2011().rois[["x", "y", "z"]].to_numpy(float)
    # the BOLD field of view (17x21x3 voxels) holds 21 of Power's 264 spheres: the user is told
    with pytest.warns(NeurofmWarning, match=r"243 of 264 sphere\(s\) of atlas 'power_2011'"):
        ds = read_fmri(functional, atlas="power_2011")
    kept = [int(c.split("_")[1]) - 1 for c in ds["channel"].values]
    dropped = sorted(set(range(264)) - set(kept))
    assert len(kept) == 21 and len(dropped) == 243
    expected = NiftiSpheresMasker(coords[kept], radius=5.0,
                                  standardize="zscore_sample").fit_transform(img)
    np.testing.assert_allclose(ds["signal"].values, expected.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ds["ch_pos"].values, coords[kept])
    assert ds["ch_pos"].attrs["coord_frame"] == "mni"
    # the dropped spheres really are empty for nilearn: it lists exactly these
    with pytest.raises(ValueError, match="empty") as info:
        NiftiSpheresMasker(coords[dropped], radius=5.0, standardize=None).fit_transform(img)
    assert len(str(info.value).split(":")[1].replace("[", " ").replace("]", " ")
               .split()) == len(dropped)
    recorded = history(ds)[-1]["params"]["empty_parcels"]
    assert recorded == [f"power_{i + 1:03d}" for i in dropped]
    # every kept sphere is non-empty for nilearn too (the check before the masker is exact)
    NiftiSpheresMasker(coords[kept], radius=5.0, standardize=None).fit_transform(img)


@pytest.mark.parametrize("name, n_total, n_empty, extra",
                         [("dosenbach_2010", 160, 144, "network"),
                          ("seitzman_2018", 300, 262, "region")])
def test_other_offline_coordinate_atlases(functional, name, n_total, n_empty, extra):
    with pytest.warns(NeurofmWarning, match=rf"{n_empty} of {n_total} sphere\(s\) of atlas "
                                            f"'{name}' hold no voxel"):
        ds = read_fmri(functional, atlas=name, standardize=None)
    assert ds.sizes["channel"] == n_total - n_empty
    assert extra in ds.coords and ds[extra].dims == ("channel",)
    assert len(set(ds["channel"].values)) == ds.sizes["channel"]
    assert ds.attrs["atlas"] == name


def test_coordinate_table_file(functional, tmp_path):
    from nilearn.maskers import NiftiSpheresMasker

    table = pd.DataFrame({"name": ["left", "right"], "x": [-10.0, 10.0], "y": [0.0, 0.0],
                          "z": [8.0, 8.0]})
    path = tmp_path / "seeds.tsv"
    table.to_csv(path, sep="\t", index=False)
    ds = read_fmri(functional, atlas=path, radius=6.0, standardize=None)
    expected = NiftiSpheresMasker(table[["x", "y", "z"]].to_numpy(), radius=6.0,
                                  standardize=None).fit_transform(nib.load(functional))
    assert list(ds["channel"].values) == ["left", "right"]
    np.testing.assert_allclose(ds["signal"].values, expected.T, rtol=1e-5)


def test_read_dispatch_needs_an_atlas(functional):
    with pytest.raises(NeurofmError, match="atlas="):
        read(functional)
    with pytest.warns(NeurofmWarning, match="243 of 264"):
        ds = read(functional, atlas="power_2011")
    assert ds.attrs["modality"] == "fmri" and ds.sizes["channel"] == 21


# --------------------------------------------------------------------------------------------
# confounds
# --------------------------------------------------------------------------------------------
def _fmriprep_tree(tmp_path, nitime_bold, *, name="test-v21_desc-confounds_timeseries"):
    """A BIDS-named fMRIPrep output: the first 30 volumes of nitime's real BOLD, next to
    nilearn's real 30-row confounds table and its JSON, plus a sidecar with the TR."""
    img = nib.load(nitime_bold)
    bold = tmp_path / "sub-01_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., :30], img.affine, img.header), bold)
    kind = "timeseries" if name.endswith("timeseries") else "regressors"
    for ext in ("tsv", "json"):
        shutil.copy(package_file("nilearn", "interfaces", "fmriprep", "data", f"{name}.{ext}"),
                    tmp_path / f"sub-01_task-rest_desc-confounds_{kind}.{ext}")
    (tmp_path / (bold.name.replace(".nii.gz", ".json"))).write_text(
        json.dumps({"RepetitionTime": 1.35}))
    return bold


@pytest.mark.parametrize("table", ["test-v21_desc-confounds_timeseries",
                                   "test_desc-confounds_regressors"])
def test_fmriprep_confounds_equal_nilearn(tmp_path, nitime_bold, table):
    from nilearn.interfaces.fmriprep import load_confounds
    from nilearn.maskers import NiftiLabelsMasker

    bold = _fmriprep_tree(tmp_path, nitime_bold, name=table)
    img = nib.load(bold)
    atlas = _labels_atlas(img, n_x=3, n_y=2)
    ds = read_fmri(bold, atlas=atlas, confounds="fmriprep")
    conf, sample_mask = load_confounds(str(bold), strategy=("motion", "high_pass", "wm_csf"))
    assert sample_mask is not None and len(sample_mask) < 30  # non-steady-state volumes
    expected = NiftiLabelsMasker(atlas, standardize="zscore_sample", t_r=1.35).fit_transform(
        img, confounds=conf, sample_mask=sample_mask)
    validate(ds)
    np.testing.assert_allclose(ds["signal"].values, expected.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(ds["volume"].values, sample_mask)
    np.testing.assert_allclose(ds["time"].values, np.asarray(sample_mask) * 1.35)
    assert list(ds["confound"].values) == list(conf.columns)
    assert ds["confounds"].dims == ("time", "confound")
    np.testing.assert_allclose(ds["confounds"].values, conf.to_numpy()[sample_mask])
    params = history(ds)[-1]["params"]
    assert params["dropped_volumes"] == sorted(set(range(30)) - set(sample_mask.tolist()))
    assert params["t_r_source"] == "sidecar"
    assert (ds.attrs["subject"], ds.attrs["task"], ds.attrs["space"]) == \
        ("01", "rest", "MNI152NLin2009cAsym")


def test_confounds_dataframe_and_tsv_equal_nilearn(functional, tmp_path):
    from nilearn.maskers import NiftiLabelsMasker

    img = nib.load(functional)
    atlas = _labels_atlas(img)
    rng = np.random.default_rng(0)
    conf = pd.DataFrame(rng.standard_normal((20, 3)), columns=["a", "b", "c"])  # generated
    expected = NiftiLabelsMasker(atlas, standardize="zscore_sample").fit_transform(
        img, confounds=conf)
    ds = read_fmri(functional, atlas=atlas, confounds=conf)
    np.testing.assert_allclose(ds["signal"].values, expected.T, rtol=1e-4, atol=1e-5)
    assert list(ds["confound"].values) == ["a", "b", "c"]
    path = tmp_path / "conf.tsv"
    conf.to_csv(path, sep="\t", index=False)
    ds2 = read_fmri(functional, atlas=atlas, confounds=path)
    np.testing.assert_allclose(ds2["signal"].values, ds["signal"].values, rtol=1e-5, atol=1e-6)
    conf_before = conf.copy()
    read_fmri(functional, atlas=atlas, confounds=conf)
    pd.testing.assert_frame_equal(conf, conf_before)  # caller data untouched


def test_bad_confounds(functional):
    atlas = _labels_atlas(nib.load(functional))
    conf = pd.DataFrame({"a": np.r_[np.nan, np.arange(19.0)]})
    with pytest.raises(DataError, match=r"NaN.*\['a'\]"):
        read_fmri(functional, atlas=atlas, confounds=conf)
    with pytest.raises(DataError, match="19 rows but the BOLD image has 20 volumes"):
        read_fmri(functional, atlas=atlas, confounds=np.zeros((19, 2)))
    with pytest.raises(FormatError, match="fMRIPrep confounds"):
        read_fmri(functional, atlas=atlas, confounds="fmriprep")


def test_high_pass_filter_with_cosine_strategy_is_refused(tmp_path, nitime_bold):
    bold = _fmriprep_tree(tmp_path, nitime_bold)
    with pytest.raises(NeurofmError, match="cosine"):
        read_fmri(bold, atlas="power_2011", confounds="fmriprep", high_pass=0.01)


# --------------------------------------------------------------------------------------------
# TR
# --------------------------------------------------------------------------------------------
def test_tr_from_sidecar_header_and_argument(functional, tmp_path):
    img = nib.load(functional)
    atlas = _labels_atlas(img)
    bold = tmp_path / "sub-02_task-x_bold.nii"
    shutil.copy(functional, bold)
    assert read_fmri(bold, atlas=atlas).attrs["t_r"] == 2.0  # header
    (tmp_path / "sub-02_task-x_bold.json").write_text(json.dumps({"RepetitionTime": 2.5}))
    ds = read_fmri(bold, atlas=atlas)
    assert ds.attrs["t_r"] == 2.5 and ds.attrs["sfreq"] == pytest.approx(0.4)
    assert history(ds)[-1]["params"]["t_r_source"] == "sidecar"
    with pytest.warns(NeurofmWarning, match=r"t_r=3 s given but the sidecar says 2.5 s"):
        assert read_fmri(bold, atlas=atlas, t_r=3.0).attrs["t_r"] == 3.0
    (tmp_path / "sub-02_task-x_bold.json").unlink()
    with pytest.warns(NeurofmWarning, match=r"t_r=3 s given but the header says 2 s"):
        ds = read_fmri(bold, atlas=atlas, t_r=3.0)
    assert ds.attrs["t_r"] == 3.0 and history(ds)[-1]["params"]["t_r_source"] == "argument"
    with warnings.catch_warnings():
        warnings.simplefilter("error", NeurofmWarning)
        assert read_fmri(bold, atlas=atlas, t_r=2.0).attrs["t_r"] == 2.0  # agrees: no warning
        # verbose="error" silences the warning
        assert read_fmri(bold, atlas=atlas, t_r=3.0, verbose="error").attrs["t_r"] == 3.0


def test_header_tr_in_milliseconds_is_fixed():
    example = package_file("nibabel", "tests", "data", "example4d.nii.gz")
    assert nib.load(example).header.get_zooms()[3] == 2000.0  # the quirk: 2000 "sec"
    with pytest.warns(NeurofmWarning) as record:
        ds = read_fmri(example, atlas=_labels_atlas(nib.load(example)), standardize=None)
    assert ds.attrs["t_r"] == 2.0 and ds.attrs["sfreq"] == 0.5
    assert any("TR = 2000 s" in str(w.message) and "milliseconds (2 s)" in str(w.message)
               for w in record)


def test_no_tr_anywhere(functional, tmp_path):
    img = nib.load(functional)
    header = img.header.copy()
    header.set_zooms(header.get_zooms()[:3] + (0.0,))
    path = tmp_path / "no_tr.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, header), path)
    atlas = _labels_atlas(img)
    with pytest.raises(DataError, match=r"no repetition time.*t_r="):
        read_fmri(path, atlas=atlas)
    assert read_fmri(path, atlas=atlas, t_r=1.5).attrs["sfreq"] == pytest.approx(1 / 1.5)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
def test_3d_image_is_refused(functional):
    img = nib.load(functional)
    img3d = nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine)
    with pytest.raises(DataError, match=r"expected a 4D BOLD image.*3D"):
        read_fmri(img3d, atlas=_labels_atlas(img))


def test_atlas_outside_the_field_of_view(functional):
    img = nib.load(functional)
    atlas = _labels_atlas(img)
    shifted = atlas.affine.copy()
    shifted[:3, 3] += 1000.0
    with pytest.raises(DataError, match="does not overlap"):
        read_fmri(functional, atlas=nib.Nifti1Image(np.asarray(atlas.dataobj), shifted))
    with pytest.raises(DataError, match="no sphere"):
        read_fmri(functional, atlas=np.array([[500.0, 500.0, 500.0]]))


def test_empty_parcels_are_dropped_warned_and_recorded(functional):
    from nilearn.maskers import NiftiLabelsMasker

    img = nib.load(functional)
    lab = np.asarray(_labels_atlas(img).dataobj)
    big = np.repeat(np.repeat(np.repeat(lab, 2, 0), 2, 1), 2, 2)  # atlas at twice the resolution
    big[1, 1, 1] = 77  # one voxel: vanishes when resampled to the BOLD grid
    affine = img.affine.copy()
    affine[:3, :3] /= 2
    atlas = nib.Nifti1Image(big, affine)
    with pytest.warns(NeurofmWarning, match=r"1 of 9 parcel\(s\).*dropped: 77"):
        ds = read_fmri(functional, atlas=atlas)
    assert "77" not in list(ds["channel"].values)
    assert history(ds)[-1]["params"]["empty_parcels"] == ["77"]
    with pytest.warns(UserWarning, match="removed"):  # nilearn drops it too
        expected = NiftiLabelsMasker(atlas, standardize="zscore_sample").fit_transform(img)
    np.testing.assert_allclose(ds["signal"].values, expected.T, rtol=1e-5, atol=1e-5)


def test_too_few_volumes_for_the_filter(functional):
    with pytest.raises(DataError, match=r"20 volumes are too few.*at least 34"):
        read_fmri(functional, atlas=_labels_atlas(nib.load(functional)), low_pass=0.1,
                  high_pass=0.01)


def test_missing_and_unknown_inputs(functional, tmp_path):
    with pytest.raises(FormatError, match="not found"):
        read_fmri(tmp_path / "nope.nii.gz", atlas="power_2011")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(FormatError, match="not a readable NIfTI"):
        read_fmri(bad, atlas="power_2011")
    with pytest.raises(FormatError, match="offline coordinate atlases"):
        read_fmri(functional, atlas="harvard_oxford")
    img = nib.load(functional)
    float_atlas = nib.Nifti1Image(np.random.default_rng(0).random(img.shape[:3]), img.affine)
    with pytest.raises(DataError, match="integer"):
        read_fmri(functional, atlas=float_atlas)
    with pytest.raises(DataError, match="labels for"):
        read_fmri(functional, atlas=_labels_atlas(img), labels=["a", "b"])


# --------------------------------------------------------------------------------------------
# ROI tables
# --------------------------------------------------------------------------------------------
def test_roi_timeseries_from_nitime_csv():
    path = package_file("nitime", "data", "fmri_timeseries.csv")
    ds = read_roi_timeseries(path, t_r=1.89)
    table = pd.read_csv(path)
    validate(ds)
    assert ds.sizes["channel"] == 31 and ds.sizes["time"] == 250
    assert list(ds["channel"].values) == list(table.columns)
    np.testing.assert_allclose(ds["signal"].values, table.to_numpy().T.astype(np.float32))
    assert ds.attrs["sfreq"] == pytest.approx(1 / 1.89) and ds.attrs["t_r"] == 1.89
    np.testing.assert_allclose(ds["time"].values[:3], [0.0, 1.89, 3.78])


def test_roi_timeseries_from_array_with_names_and_positions():
    data = np.arange(12.0).reshape(4, 3)  # generated: 4 volumes x 3 ROIs
    pos = np.eye(3) * 10
    ds = read_roi_timeseries(data, t_r=2.0, roi_names=["a", "b", "c"], ch_pos=pos)
    np.testing.assert_array_equal(ds["signal"].values, data.T)
    np.testing.assert_array_equal(ds["ch_pos"].values, pos)
    with pytest.raises(DataError, match="roi_names has 2 names but the table has 3"):
        read_roi_timeseries(data, t_r=2.0, roi_names=["a", "b"])
    with pytest.raises(DataError, match="2-D"):
        read_roi_timeseries(np.zeros(5), t_r=2.0)
    with pytest.raises(NeurofmError, match="t_r"):
        read_roi_timeseries(data, t_r=0)


# --------------------------------------------------------------------------------------------
# issue 9: truncated files, empty tables, NaN, preconditions instead of nilearn's wording,
# warnings and verbose
# --------------------------------------------------------------------------------------------
def test_truncated_nifti_names_the_file(functional, tmp_path):
    raw = Path(functional).read_bytes()  # 352-byte header + 17*21*3*20 int16 (42840 bytes)
    for frac in (0.1, 0.5, 0.95):
        cut = tmp_path / f"cut{int(frac * 100)}_bold.nii"
        n = 352 + int(frac * 42840)
        cut.write_bytes(raw[:n])
        with pytest.raises(FormatError, match=rf"cut{int(frac * 100)}_bold\.nii: truncated or "
                                              r"corrupt NIfTI data: expected \(17, 21, 3, 20\) "
                                              r"values of int16 \(OSError: Expected 42840 bytes, "
                                              rf"got {n - 352} bytes"):
            read_fmri(cut, atlas="power_2011")
    packed = gzip.compress(raw)
    cut = tmp_path / "cut_bold.nii.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(FormatError, match=r"cut_bold\.nii\.gz: truncated or corrupt NIfTI data"
                                          r".*\(EOFError: Compressed file ended"):
        read_fmri(cut, atlas="power_2011")
    # a nibabel image handed over by the user, still backed by the truncated file
    with pytest.raises(FormatError, match=r"cut_bold\.nii\.gz: truncated or corrupt"):
        read_fmri(nib.load(cut), atlas="power_2011")


def test_roi_tables_without_rows_or_columns(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: empty ROI time series table: the file "
                                        "holds no rows"):
        read_roi_timeseries(tmp_path / "empty.csv", t_r=2.0)
    (tmp_path / "blank.tsv").write_text("\n  \n")
    with pytest.raises(DataError, match=r"blank\.tsv: empty ROI time series table"):
        read_roi_timeseries(tmp_path / "blank.tsv", t_r=2.0)
    (tmp_path / "header.csv").write_text("V1,V2,MT\n")
    with pytest.raises(DataError, match=r"header\.csv: empty recording: the signal "
                                        r"\(n_volumes, n_rois\) has shape \(0, 3\)"):
        read_roi_timeseries(tmp_path / "header.csv", t_r=2.0)
    with pytest.raises(DataError, match=r"array: empty recording.*shape \(0, 50\)"):
        read_roi_timeseries(np.zeros((0, 50)), t_r=2.0)
    with pytest.raises(DataError, match=r"array: empty recording.*shape \(50, 0\)"):
        read_roi_timeseries(np.zeros((50, 0)), t_r=2.0)
    with pytest.raises(DataError, match=r"DataFrame: empty recording.*shape \(0, 2\)"):
        read_roi_timeseries(pd.DataFrame({"a": [], "b": []}), t_r=2.0)


def test_roi_table_nonfinite_values(tmp_path):
    path = tmp_path / "rois.csv"
    path.write_text("a,b,c\n1,2,3\n4,,6\n7,nan,9\n10,11,inf\n")  # generated
    with pytest.raises(DataError, match=r"rois\.csv: 3 non-finite \(NaN/Inf\) sample\(s\) in 2 "
                                        r"channel\(s\): b \(2\), c \(1\)"):
        read_roi_timeseries(path, t_r=2.0)
    with pytest.warns(NeurofmWarning, match=r"rois\.csv: 3 non-finite.*marked bad"):
        ds = read_roi_timeseries(path, t_r=2.0, on_nonfinite="warn")
    np.testing.assert_array_equal(ds["bad"].values, [False, True, True])
    np.testing.assert_array_equal(ds["signal"].values[0], [1, 4, 7, 10])
    np.testing.assert_array_equal(np.isnan(ds["signal"].values[1]), [False, True, True, False])
    assert ds["signal"].values[2, 3] == np.inf
    with pytest.raises(NeurofmError, match="on_nonfinite"):
        read_roi_timeseries(path, t_r=2.0, on_nonfinite="drop")


def _volumes(img, n):
    """The first n volumes of ``img`` repeated in time (generated from the real BOLD)."""
    data = np.asarray(img.dataobj)
    reps = int(np.ceil(n / data.shape[3]))
    return nib.Nifti1Image(np.concatenate([data] * reps, axis=3)[..., :n], img.affine,
                           img.header)


def _masker_must_not_run(monkeypatch):
    from nilearn.maskers import NiftiLabelsMasker

    def refuse(*args, **kwargs):
        raise AssertionError("the nilearn masker was called although a precondition fails")

    monkeypatch.setattr(NiftiLabelsMasker, "fit_transform", refuse)


@pytest.mark.parametrize("low_pass, high_pass, need", [(0.1, 0.01, 34), (None, 0.01, None),
                                                       (0.1, None, None)])
def test_filter_length_is_checked_before_nilearn(functional, monkeypatch, low_pass, high_pass,
                                                 need):
    """The volume count the reader demands is exactly the one below which nilearn fails."""
    from nilearn.maskers import NiftiLabelsMasker

    img = nib.load(functional)
    atlas = _labels_atlas(img)
    kwargs = {"low_pass": low_pass, "high_pass": high_pass, "standardize": None}
    with monkeypatch.context() as m:
        _masker_must_not_run(m)
        with pytest.raises(DataError, match=r"3 volumes are too few.*needs at least (\d+) "
                                            "volumes") as info:
            read_fmri(_volumes(img, 3), atlas=atlas, **kwargs)
        found = int(str(info.value).split("needs at least ")[1].split()[0])
        if need is not None:
            assert found == need
        with pytest.raises(DataError, match=rf"{found - 1} volumes are too few"):
            read_fmri(_volumes(img, found - 1), atlas=atlas, **kwargs)
    nilearn_kwargs = {**kwargs, "t_r": 2.0}
    with pytest.raises(ValueError, match="padlen"):
        NiftiLabelsMasker(atlas, **nilearn_kwargs).fit_transform(_volumes(img, found - 1))
    ok = _volumes(img, found)
    ds = read_fmri(ok, atlas=atlas, **kwargs)
    expected = NiftiLabelsMasker(atlas, **nilearn_kwargs).fit_transform(ok)
    np.testing.assert_allclose(ds["signal"].values, expected.T, rtol=1e-4, atol=1e-3)
    with pytest.raises(NeurofmError, match=r"high_pass=0.2 Hz must be below low_pass=0.1 Hz"):
        read_fmri(functional, atlas=atlas, low_pass=0.1, high_pass=0.2)


def test_labels_atlas_overlap_is_checked_before_nilearn(functional, monkeypatch):
    from nilearn.maskers import NiftiLabelsMasker

    img = nib.load(functional)
    lab = np.asarray(_labels_atlas(img).dataobj)
    mask = nib.Nifti1Image((lab == 0).astype(np.uint8), img.affine)  # outside every parcel
    with pytest.raises(ValueError, match="No label left"):  # what nilearn would say
        NiftiLabelsMasker(_labels_atlas(img), mask_img=mask).fit_transform(img)
    with monkeypatch.context() as m:
        _masker_must_not_run(m)
        with pytest.raises(DataError, match=r"functional\.nii: no parcel of atlas 'labels "
                                            r"image' lies in the BOLD field of view inside "
                                            "mask_img"):
            read_fmri(functional, atlas=_labels_atlas(img), mask_img=mask)
        shifted = _labels_atlas(img).affine.copy()
        shifted[:3, 3] += 1000.0
        with pytest.raises(DataError, match="does not overlap the BOLD field of view"):
            read_fmri(functional, atlas=nib.Nifti1Image(lab, shifted))
    # one parcel covering the whole grid at twice the resolution: once resampled it has no
    # background, which nilearn refuses ("No label left") when it resamples itself; the
    # reader hands nilearn the resampled atlas and gets the mean of every voxel
    affine = img.affine.copy()
    affine[:3, :3] /= 2
    full = nib.Nifti1Image(np.full([2 * n for n in img.shape[:3]], 5, np.int16), affine)
    with pytest.raises(ValueError, match="No label left"), \
            pytest.warns(UserWarning, match="single label covering the whole image"):
        NiftiLabelsMasker(full).fit_transform(img)
    with pytest.warns(UserWarning, match="single label covering the whole image"):  # nilearn's
        ds = read_fmri(functional, atlas=full, standardize=None)
    voxels = np.asarray(img.dataobj, dtype=np.float64).reshape(-1, img.shape[3])
    assert list(ds["channel"].values) == ["5"]
    np.testing.assert_allclose(ds["signal"].values[0], voxels.mean(0), rtol=1e-6)


def test_fmri_reader_does_not_parse_nilearn_messages():
    import inspect

    from neurofm.io import fmri

    source = inspect.getsource(fmri)
    for wording in ("padlen, which is", "No label left", "These spheres are empty",
                    "labels were removed"):
        assert wording not in source


def test_fmri_verbose_levels(functional, caplog):
    with caplog.at_level(logging.DEBUG):  # the capture handler; neurofm keeps its own level
        with pytest.warns(NeurofmWarning, match="243 of 264"):
            read_fmri(functional, atlas="power_2011")
        assert not [r for r in caplog.records if r.levelno < logging.WARNING]
        with pytest.warns(NeurofmWarning):
            read_fmri(functional, atlas="power_2011", verbose=True)
        info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
        assert any(m.endswith("functional.nii: 21 ROIs x 20 volumes (TR 2 s, power_2011)")
                   for m in info)
        assert not [r for r in caplog.records if r.levelno == logging.DEBUG]
        caplog.clear()
        with pytest.warns(NeurofmWarning):
            read_fmri(functional, atlas="power_2011", verbose="debug")
        debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
        assert any("NiftiSpheresMasker with 264 region(s) of power_2011" in m for m in debug)
        caplog.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("error", NeurofmWarning)
            ds = read_fmri(functional, atlas="power_2011", verbose="error")
        assert ds.sizes["channel"] == 21 and not caplog.records
        ds = read_roi_timeseries(np.ones((4, 2)), t_r=2.0, verbose="info")
        assert "read array: 2 ROIs x 4 volumes (TR 2 s)" in caplog.text


def test_empty_sphere_rule_is_nilearns():
    """Seeds just outside a 1-mm grid: nilearn keeps the voxel whose truncated world
    coordinates equal the seed's (x = -0.6 -> voxel 0) even though the nearest voxel (-1) is
    outside; the reader drops exactly the spheres nilearn calls empty."""
    from nilearn.maskers import NiftiSpheresMasker

    rng = np.random.default_rng(0)  # generated 5x5x5 image, 30 volumes, 1 mm voxels
    img = nib.Nifti1Image(rng.standard_normal((5, 5, 5, 30)).astype(np.float32), np.eye(4))
    img.header.set_zooms((1.0, 1.0, 1.0, 2.0))
    seeds = np.array([[-0.6, 2, 2], [-0.4, 2, 2], [2, 4.7, 2], [2, 2, -0.9], [-1.2, 2, 2],
                      [4.55, 4.55, 4.55], [2, 2, 5.8]])
    with pytest.raises(ValueError, match=r"These spheres are empty: \[4 6\]"):
        NiftiSpheresMasker(seeds, radius=0.3, allow_overlap=True,
                           standardize=None).fit_transform(img)
    with pytest.warns(NeurofmWarning, match=r"2 of 7 sphere\(s\).*dropped: roi004, roi006"):
        ds = read_fmri(img, atlas=seeds, radius=0.3, standardize=None)
    kept = [0, 1, 2, 3, 5]
    assert list(ds["channel"].values) == [f"roi{i:03d}" for i in kept]
    expected = NiftiSpheresMasker(seeds[kept], radius=0.3, allow_overlap=True,
                                  standardize=None).fit_transform(img)
    np.testing.assert_allclose(ds["signal"].values, expected.T, rtol=1e-6)


def test_nonfinite_roi_series_follow_the_policy(functional, monkeypatch):
    """nilearn zeroes NaN voxels itself, so a NaN series is simulated at the masker output."""
    from nilearn.maskers import NiftiLabelsMasker

    real = NiftiLabelsMasker.fit_transform

    def with_nan(self, *args, **kwargs):
        out = np.array(real(self, *args, **kwargs))
        out[[2, 5], 1] = np.nan  # parcel "2", volumes 2 and 5
        return out

    monkeypatch.setattr(NiftiLabelsMasker, "fit_transform", with_nan)
    atlas = _labels_atlas(nib.load(functional))
    with pytest.raises(DataError, match=r"functional\.nii: 2 non-finite \(NaN/Inf\) sample\(s\) "
                                        r"in 1 channel\(s\): 2 \(2\)"):
        read_fmri(functional, atlas=atlas)
    with pytest.warns(NeurofmWarning, match=r"functional\.nii: 2 non-finite.*marked bad"):
        ds = read_fmri(functional, atlas=atlas, on_nonfinite="warn")
    assert list(ds["channel"].values[ds["bad"].values]) == ["2"]
    np.testing.assert_array_equal(np.flatnonzero(np.isnan(ds["signal"].sel(channel="2"))),
                                  [2, 5])


def test_empty_coordinate_and_confound_files(functional, tmp_path):
    (tmp_path / "seeds.csv").write_text("")
    with pytest.raises(DataError, match=r"seeds\.csv: empty coordinate table"):
        read_fmri(functional, atlas=tmp_path / "seeds.csv")
    (tmp_path / "conf.csv").write_text("")
    with pytest.raises(DataError, match=r"conf\.csv: empty confounds table"):
        read_fmri(functional, atlas="power_2011", confounds=tmp_path / "conf.csv")
    (tmp_path / "odd.csv").write_text("x y z\n1 2\n")  # no delimiter the sniffer can find
    with pytest.raises(NeurofmError, match=r"odd\.csv"):
        read_fmri(functional, atlas=tmp_path / "odd.csv")


# --------------------------------------------------------------------------------------------
# atlas labels given as a look-up table file (BIDS dseg.tsv / nilearn LUT)
# --------------------------------------------------------------------------------------------
def test_labels_table_path_names_the_parcels(functional, tmp_path):
    """A labels TSV path is a look-up table (index, name), not a sequence of characters."""
    img = nib.load(functional)
    atlas = _labels_atlas(img)                      # 8 parcels, values 1..8
    values = np.unique(np.asarray(atlas.dataobj))
    values = values[values != 0]
    lut = tmp_path / "atlas_dseg.tsv"
    # background row, rows out of order, an extra column: as BIDS dseg.tsv allows
    rows = ["index\tname\tcolor", "0\tBackground\t#000000"]
    rows += [f"{v}\tparcel_{chr(96 + int(v))}\t#ff0000" for v in values[::-1]]
    lut.write_text("\n".join(rows) + "\n")
    table = pd.read_csv(lut, sep="\t")
    expected = dict(zip(table["index"], table["name"]))
    for labels in (str(lut), lut):
        ds = read_fmri(functional, atlas=atlas, labels=labels, standardize=None)
        assert ds.sizes["channel"] == len(values) == 8
        assert list(ds["channel"].values) == [expected[int(v)] for v in values]
        assert list(ds["channel"].values) == [f"parcel_{c}" for c in "abcdefgh"]
    # the same through the pipeline's CSV flavour
    csv = tmp_path / "atlas_lut.csv"
    table.drop(columns="color").to_csv(csv, index=False)
    ds = read_fmri(functional, atlas=atlas, labels=csv, standardize=None)
    assert list(ds["channel"].values) == [f"parcel_{c}" for c in "abcdefgh"]


def test_labels_table_for_maps_is_in_index_order(functional, tmp_path):
    img = nib.load(functional)
    grid = np.indices(img.shape[:3]).astype(float)
    maps = np.stack([np.exp(-((grid[0] - c) ** 2 + (grid[1] - 8) ** 2) / 8.0)
                     for c in (4, 12)], -1)
    lut = tmp_path / "maps.tsv"
    lut.write_text("index\tname\n2\tsecond\n1\tfirst\n")
    ds = read_fmri(functional, atlas=nib.Nifti1Image(maps, img.affine), labels=lut,
                   standardize=None)
    assert list(ds["channel"].values) == ["first", "second"]


@pytest.mark.parametrize("text,match", [
    ("label\tname\n1\ta\n", r"needs the columns index and name.*missing \['index'\]"),
    ("index\tregion\n1\ta\n", r"missing \['name'\]"),
    ("index\tname\n1\ta\nx\tb\n", r"index must hold integers; found \['x'\]"),
    ("index\tname\n1.5\ta\n", r"index must hold integers"),
    ("index\tname\n1\ta\n1\tb\n", r"index values repeated: \[1\]"),
    ("index\tname\n1\t\n", r"empty name for index \[1\]"),
    ("", r"empty atlas labels table"),
])
def test_bad_labels_tables_name_the_file(functional, tmp_path, text, match):
    from neurofm.io.fmri import read_label_table

    img = nib.load(functional)
    bad = tmp_path / "bad_dseg.tsv"
    bad.write_text(text)
    with pytest.raises(FormatError, match=match) as err:
        read_fmri(functional, atlas=_labels_atlas(img), labels=str(bad))
    assert str(bad) in str(err.value)
    with pytest.raises(FormatError, match="not found"):
        read_label_table(tmp_path / "missing.tsv")
