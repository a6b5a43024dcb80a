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


def test_meg_task_has_four_decodable_event_classes(sample_root):
    """The GENERATED task MEG: annotations equal the stim channel; classes decodable."""
    import mne
    from sklearn.linear_model import LogisticRegression

    from neurofm.datasets.sample import MEG_EVENT_ID, MEG_EVOKED_SUBJECTS
    from neurofm.io.ephys import read_ephys

    X, y, run = [], [], []
    for sub in MEG_EVOKED_SUBJECTS:
        for r in (1, 2):
            path = sample_root / f"sub-{sub}" / "meg" / f"sub-{sub}_task-evoked_run-{r}_meg.fif"
            raw = mne.io.read_raw_fif(path, preload=True, verbose="error")
            assert "GENERATED" in raw.info["description"]
            stim = mne.find_events(raw, stim_channel="STI 014", verbose="error")
            ds = read_ephys(path)
            onsets = ds["event_onset"].values
            names = [str(d) for d in ds["event_description"].values]
            # the annotations and the stim channel hold the same events
            np.testing.assert_allclose(stim[:, 0] / raw.info["sfreq"], onsets, atol=0.01)
            assert [MEG_EVENT_ID[n] for n in names] == list(stim[:, 2])
            assert sorted(set(names)) == sorted(MEG_EVENT_ID)
            x = raw.get_data(picks="meg")
            x = x / x.std(axis=1, keepdims=True)
            for s in stim[:, 0]:
                X.append(x[:, s:s + 60].ravel())    # 0.4 s after the event
            y += list(stim[:, 2])
            run += [r] * len(stim)
    y, run, X = np.array(y), np.array(run), np.array(X)
    assert min(np.bincount(y)[1:]) >= 70    # 4 classes, balanced
    clf = LogisticRegression(C=0.01, max_iter=2000).fit(X[run == 1], y[run == 1])
    assert clf.score(X[run == 2], y[run == 2]) > 0.45      # chance 0.25


def test_celegans_parquet_reads_with_planted_dynamics(sample_root):
    from neurofm.datasets.sample import CELEGANS_WORMS
    from neurofm.io.celegans import read_celegans

    path = sample_root / "derivatives" / "celegans" / "celegans_neural_data.parquet"
    worms = read_celegans(path)
    assert [w.attrs["worm"] for w in worms] == list(CELEGANS_WORMS)
    for w in worms:
        assert w["signal"].shape == (300, 660) and abs(w.attrs["sfreq"] - 1 / 0.333) < 1e-3
        assert w.attrs["source_dataset"] == "Generated" and w.attrs["n_unlabeled_neurons"] == 5
        rec = w.sel(channel=w["recorded"])
        sig = rec["signal"].values
        assert np.allclose(sig.mean(axis=1), 0, atol=1e-4) and np.allclose(sig.std(axis=1), 1,
                                                                           atol=1e-3)
        c = np.corrcoef(w["signal"].sel(channel=["AVAL", "AVAR", "AVBL", "SMDVL", "SMDDL"]))
        assert c[0, 1] > 0.6            # reversal command interneurons together
        assert c[0, 2] < -0.5           # forward vs reversal
        assert c[3, 4] < -0.5           # head motor neurons in antiphase
    desc = json.loads((path.parent / "dataset_description.json").read_text())
    assert "GENERATED" in desc["GeneratedBy"][0]["Description"]
