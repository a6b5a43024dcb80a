"""The bundled sample dataset: offline, idempotent, real data where it ships."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neurofm.datasets import make_sample_data, spkit_eeg
from neurofm.errors import NeurofmError


def _mtimes(root):
    return {str(p): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def test_second_build_changes_nothing(sample_root):
    before = _mtimes(sample_root)
    assert make_sample_data(sample_root) == sample_root
    assert _mtimes(sample_root) == before


def test_damaged_tree_is_rebuilt_and_foreign_dir_refused(tmp_path):
    root = make_sample_data(tmp_path / "s")
    edf = root / "sub-01" / "eeg" / "sub-01_task-rest_eeg.edf"
    edf.write_bytes(b"truncated")
    make_sample_data(root)
    assert edf.stat().st_size > 1000
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(NeurofmError, match="not a neurofm sample dataset"):
        make_sample_data(other)
    assert (other / "notes.txt").read_text() == "keep me"
    make_sample_data(other, overwrite=True)
    assert not (other / "notes.txt").exists()


def test_eeg_is_the_real_spkit_recording(sample_root):
    from neurofm.io.ephys import read_ephys

    ds = read_ephys(sample_root / "sub-01" / "eeg" / "sub-01_task-rest_eeg.edf")
    ref = spkit_eeg()
    assert list(ds["channel"].values) == list(ref["channel"].values)
    assert ds.attrs["sfreq"] == 128.0
    # EDF stores 16-bit integers: equal up to the quantisation step
    np.testing.assert_allclose(ds["signal"].values, ref["signal"].values, atol=0.05)


def test_fmri_derivatives_load_with_nilearn(sample_root):
    from nilearn.interfaces.fmriprep import load_confounds

    bold = (sample_root / "derivatives" / "fmriprep" / "sub-06" / "func"
            / "sub-06_task-rest_run-1_desc-preproc_bold.nii.gz")
    conf, mask = load_confounds(str(bold), strategy=("wm_csf", "global_signal"))
    assert sorted(conf.columns) == ["csf", "global_signal", "white_matter"]
    assert len(conf) == 40 and mask is None


def test_calcium_is_labelled_generated_and_readable(sample_root):
    from neurofm.io.calcium import read_calcium

    plane = (sample_root / "derivatives" / "suite2p" / "sub-07" / "ophys"
             / "sub-07_task-spont_suite2p" / "plane0")
    ds = read_calcium(plane, signal="Fc")
    assert ds.sizes["channel"] == 24 and ds.attrs["sfreq"] == 10.0
    desc = json.loads((sample_root / "derivatives" / "suite2p"
                       / "dataset_description.json").read_text())
    assert "GENERATED" in desc["GeneratedBy"][0]["Description"]


def test_fmri_cohort_is_labelled_generated_with_planted_groups(sample_root):
    """The GENERATED cohort: 20 subjects x 2 runs, groups A/B planted in network coupling."""
    import pandas as pd

    from neurofm.datasets.sample import COHORT_NETWORKS, COHORT_SUBJECTS
    from neurofm.io.fmri import read_fmri

    parts = pd.read_csv(sample_root / "participants.tsv", sep="\t", dtype=str)
    cohort = parts[parts["participant_id"].isin([f"sub-{s}" for s in COHORT_SUBJECTS])]
    assert len(cohort) == 20 and (cohort["source"] == "generated fMRI cohort").all()
    assert sorted(cohort["group"].value_counts().items()) == [("A", 10), ("B", 10)]
    assert parts.loc[~parts.index.isin(cohort.index), "group"].isna().all()  # n/a elsewhere
    pheno = pd.read_csv(sample_root / "phenotype" / "fmri_cohort.tsv", sep="\t", dtype=str)
    assert pheno.to_dict("list") == cohort[["participant_id", "group", "age"]].to_dict("list")
    assert "GENERATED" in json.loads((sample_root / "phenotype" / "fmri_cohort.json")
                                     .read_text())["MeasurementToolMetadata"]["Description"]
    bolds = sorted((sample_root / "derivatives" / "fmriprep").glob(
        "sub-*/func/*_desc-preproc_bold.nii.gz"))
    assert len(bolds) == 42   # 2 real nitime runs (sub-06) + 40 generated
    nets = np.array(COHORT_NETWORKS)
    groups = dict(zip(cohort["participant_id"], cohort["group"]))
    for sub in ("sub-10", "sub-11", "sub-12", "sub-13"):
        bold = (sample_root / "derivatives" / "fmriprep" / sub / "func"
                / f"{sub}_task-rest_run-2_desc-preproc_bold.nii.gz")
        atlas = sample_root / "derivatives" / "atlas" / sub / "anat"
        ds = read_fmri(bold, atlas=atlas / f"{sub}_desc-grid12_dseg.nii.gz",
                       confounds="fmriprep", strategy=("wm_csf", "global_signal"),
                       standardize=None, low_pass=0.1, high_pass=0.01, verbose="error")
        assert ds.attrs["sfreq"] == 0.5 and ds.sizes["time"] == 120
        c = np.corrcoef(ds["signal"].values)
        n1n2 = c[np.ix_(nets == "N1", nets == "N2")].mean()
        n2n3 = c[np.ix_(nets == "N2", nets == "N3")].mean()
        # group A couples N1-N2, group B couples N2-N3 (after confound regression)
        if groups[sub] == "A":
            assert n1n2 - n2n3 > 0.05, (sub, n1n2, n2n3)
        else:
            assert n2n3 - n1n2 > 0.05, (sub, n1n2, n2n3)
