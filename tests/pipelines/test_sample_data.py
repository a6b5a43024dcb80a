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
