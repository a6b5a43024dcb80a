"""Pipeline configs, input discovery and splits (no Snakemake run)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pipeline_helpers import CONFIGS, example_config

from neurofm.errors import FormatError, NeurofmError
from neurofm.pipelines import (
    STEM,
    assign_splits,
    config_hash,
    discover,
    labels_of,
    load_config,
    run_pipeline,
    wildcards_of,
)


@pytest.mark.parametrize("name", ["eeg", "meg", "fmri", "calcium"])
def test_example_configs_validate(name):
    cfg = load_config(CONFIGS / f"{name}_example.yaml")
    assert cfg["modality"] == name
    # defaults filled in from the schema
    assert cfg["store"]["split"]["seed"] == 0
    assert cfg["qc"]["enabled"] is True
    assert cfg["resources"]["mem_mb"] >= 100


def test_defaults_do_not_touch_null_sections(tmp_path):
    cfg = load_config({"modality": "eeg", "bids_root": str(tmp_path), "out_dir": "o",
                       "bandpass": {"l_freq": 1.0}})
    assert cfg["notch"] is None
    assert cfg["bandpass"] == {"l_freq": 1.0, "h_freq": None, "method": "fir"}


@pytest.mark.parametrize("change,match", [
    ({"modality": "pet"}, (r"modality: expected one of \['eeg', 'meg', 'fmri', 'calcium'\]; "
                          r"found 'pet'")),
    ({"bandpas": {"l_freq": 1}}, r"unknown key .*bandpas"),
    ({"bandpass": {"l_freq": "low"}}, r"bandpass.l_freq"),
    ({"resample": {"method": "fft"}}, r"resample: missing required key .*sfreq"),
    ({"store": {"split": {"train": 0.5, "val": 0.2, "test": 0.2}}}, "sum to 1"),
    ({"reference": "average", "modality": "meg"}, "reference applies to EEG only"),
    ({"inputs": ["sub-01_task-rest_eeg.edf"]}, "exactly one of bids_root"),
])
def test_bad_configs_are_explained(tmp_path, change, match):
    cfg = {"modality": "eeg", "bids_root": str(tmp_path), "out_dir": "o"}
    cfg.update(change)
    with pytest.raises(NeurofmError, match=match):
        load_config(cfg)


def test_missing_out_dir_and_fmri_atlas(tmp_path):
    with pytest.raises(NeurofmError, match="out_dir"):
        load_config({"modality": "eeg", "bids_root": str(tmp_path)})
    with pytest.raises(NeurofmError, match=r"fmri\.atlas"):
        load_config({"modality": "fmri", "bids_root": str(tmp_path), "out_dir": "o"})


def test_config_file_errors(tmp_path):
    with pytest.raises(FormatError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("modality: [eeg\n")
    with pytest.raises(FormatError, match="not valid YAML"):
        load_config(bad)


def test_run_pipeline_rejects_bad_input_before_snakemake(tmp_path):
    with pytest.raises(NeurofmError, match="cores"):
        run_pipeline(CONFIGS / "eeg_example.yaml", cores=0)
    with pytest.raises(NeurofmError, match="modality"):
        run_pipeline({"modality": "pet", "bids_root": str(tmp_path), "out_dir": "o"})


@pytest.mark.parametrize("name,expected", [
    ("eeg", ["sub-01_task-rest", "sub-02_task-generator", "sub-03_task-generator"]),
    ("meg", ["sub-04_task-rest", "sub-05_task-rest"]
     + [f"sub-{s}_task-evoked_run-{r}" for s in range(30, 34) for r in (1, 2)]),
    ("fmri", [f"sub-{s}_task-rest_run-{r}" for s in range(10, 30) for r in (1, 2)]),
    ("calcium", ["sub-07_task-spont", "sub-08_task-spont", "sub-09_task-spont"]),
])
def test_discover_sample(sample_root, tmp_path, name, expected):
    cfg = load_config(example_config(name, sample_root, tmp_path))
    recs = discover(cfg)
    assert list(recs["id"]) == expected
    for r in recs.itertuples():
        assert STEM.format(**wildcards_of(r)) == r.id
    if name == "fmri":
        atlas = sample_root / "derivatives" / "atlas" / "sub-10" / "anat"
        assert list(recs["atlas"])[:2] == [str(atlas / "sub-10_desc-grid12_dseg.nii.gz")] * 2
        assert list(recs["labels"])[:2] == [str(atlas / "sub-10_desc-grid12_dseg.tsv")] * 2


def test_discover_filters_and_inputs(sample_root, tmp_path):
    cfg = load_config(example_config("eeg", sample_root, tmp_path, subjects=["1", "03"]))
    assert list(discover(cfg)["subject"]) == ["01", "03"]
    edf = sample_root / "sub-01" / "eeg" / "sub-01_task-rest_eeg.edf"
    cfg = load_config({"modality": "eeg", "out_dir": str(tmp_path), "inputs": [
        str(edf), {"path": str(edf), "subject": "x9", "task": "copy"}]})
    assert list(discover(cfg)["id"]) == ["sub-01_task-rest", "sub-x9_task-copy"]
    cfg = load_config({"modality": "eeg", "out_dir": str(tmp_path), "inputs": [str(edf),
                                                                              str(edf)]})
    with pytest.raises(NeurofmError, match="same subject/session/task/run"):
        discover(cfg)
    cfg = load_config({"modality": "eeg", "out_dir": str(tmp_path),
                       "inputs": [str(tmp_path / "recording.edf")]})
    with pytest.raises(NeurofmError, match="no BIDS subject"):
        discover(cfg)
    cfg = load_config({"modality": "eeg", "out_dir": ".", "bids_root": str(tmp_path / "no")})
    with pytest.raises(FormatError, match="bids_root"):
        discover(cfg)


def test_wildcards_round_trip():
    row = {"subject": "01", "session": "2", "task": "rest", "run": ""}
    wc = wildcards_of(row)
    assert STEM.format(**wc) == "sub-01_ses-2_task-rest"
    assert labels_of(wc) == row


def test_config_hash_is_order_free_and_sensitive():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert len(config_hash({})) == 12


def test_splits_by_subject_are_seeded():
    subs = [f"{i:02d}" for i in range(10)]
    a = assign_splits(subs, seed=3)
    assert a == assign_splits(list(reversed(subs)), seed=3)
    assert sorted(a.values()).count("train") == 6
    assert sorted(a.values()).count("val") == 2
    assert a != assign_splits(subs, seed=4)
    three = assign_splits(["a", "b", "c"])
    assert sorted(three.values()) == ["test", "train", "val"]


@given(n=st.integers(1, 40), seed=st.integers(0, 10**6),
       fr=st.sampled_from([(0.6, 0.2, 0.2), (0.8, 0.1, 0.1), (1.0, 0.0, 0.0),
                           (0.34, 0.33, 0.33)]))
def test_split_properties(n, seed, fr):
    subs = [f"s{i}" for i in range(n)]
    out = assign_splits(subs, train=fr[0], val=fr[1], test=fr[2], seed=seed)
    assert set(out) == set(subs)
    counts = {k: list(out.values()).count(k) for k in ("train", "val", "test")}
    for k, f in zip(("train", "val", "test"), fr):
        if f == 0:
            assert counts[k] == 0
        assert abs(counts[k] - f * n) <= 1.5
    if n >= 3:
        assert all(counts[k] >= 1 for k, f in zip(("train", "val", "test"), fr) if f > 0)
