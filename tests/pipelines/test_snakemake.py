"""The Snakemake pipelines: dry runs, one real run per modality, reruns, failures.

Snakemake runs in a subprocess (``python -m snakemake``) in a temp working directory, on the
sample dataset: real spkit/pyedflib EEG, real nitime BOLD with a generated atlas, generated
suite2p folders.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
from pipeline_helpers import example_config, write_config

from neurofm.pipelines import run_pipeline
from neurofm.schema import history, validate
from neurofm.store import open_recording, open_store


def _jobs(text):
    """Job counts of a Snakemake dry-run's "Job stats" table."""
    table = text.split("Job stats:")[-1]
    counts = {}
    for line in table.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)\s*$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def _run(cfg, tmp, capfd, **kwargs):
    path = write_config(cfg, tmp / "config.yaml")
    capfd.readouterr()
    rc = run_pipeline(path, **kwargs)
    out = capfd.readouterr()
    return rc, out.out + out.err


@pytest.mark.parametrize("name,n_read", [("eeg", 3), ("meg", 2), ("fmri", 2),
                                         ("calcium", 3)])
def test_dry_run(sample_root, tmp_path, monkeypatch, capfd, name, n_read):
    monkeypatch.chdir(tmp_path)
    cfg = example_config(name, sample_root, tmp_path / "out")
    rc, text = _run(cfg, tmp_path, capfd, dry_run=True)
    assert rc == 0, text
    jobs = _jobs(text)
    assert jobs[f"{name}_read"] == n_read
    assert jobs[f"{name}_preprocess"] == n_read
    assert jobs["store_manifest"] == 1 and jobs["qc_summary"] == 1
    assert not (tmp_path / "out").exists()


def _check_store(out_dir, modality, n):
    store = open_store(out_dir / "store")
    m = store.manifest
    assert len(m) == n and set(m["modality"]) == {modality}
    assert set(m["split"]) <= {"train", "val", "test"}
    # every subject in exactly one split (the fMRI sample has two runs of one subject)
    assert m.groupby("subject")["split"].nunique().max() == 1
    provenance = json.loads((out_dir / "store" / "pipeline.json").read_text())
    assert provenance["splits"] == dict(zip(m["id"], m["split"]))
    for rec_id in store.ids:
        ds = store.open(rec_id)
        validate(ds, name=rec_id)
        assert len(ds.attrs["config_hash"]) == 12
        assert ds.attrs["neurofm_version"]
    assert (out_dir / "qc" / "summary.html").is_file()
    return store


@pytest.fixture(scope="module")
def eeg_run(sample_root, tmp_path_factory):
    """One real run of the EEG example on the sample tree (its own working directory)."""
    import os

    work = tmp_path_factory.mktemp("eeg_run")
    cfg = example_config("eeg", sample_root, work / "out")
    path = write_config(cfg, work / "config.yaml")
    old = os.getcwd()
    os.chdir(work)
    try:
        rc = run_pipeline(path, cores=2)
    finally:
        os.chdir(old)
    assert rc == 0
    return work, cfg


def test_eeg_end_to_end(eeg_run):
    work, _ = eeg_run
    store = _check_store(work / "out", "eeg", 3)
    ds = store.open("sub-01_task-rest")
    assert ds.attrs["sfreq"] == 100.0 and ds.sizes["channel"] == 14
    assert [h["step"] for h in history(ds)][-5:] == ["notch", "filter", "resample",
                                                     "rereference", "robust_scale"]
    html = (work / "out" / "qc" / "sub-01_task-rest_qc.html").read_text()
    assert "Power spectral density" in html and "data:image/png;base64" in html


def test_second_run_has_nothing_to_do(eeg_run, monkeypatch, capfd):
    work, cfg = eeg_run
    monkeypatch.chdir(work)
    rc, text = _run(cfg, work, capfd, dry_run=True)
    assert rc == 0
    assert "Nothing to be done" in text


def test_changed_parameter_reruns_only_affected_rules(eeg_run, monkeypatch, capfd):
    work, cfg = eeg_run
    monkeypatch.chdir(work)
    changed = {**cfg, "bandpass": {**cfg["bandpass"], "h_freq": 30.0}}
    rc, text = _run(changed, work, capfd, dry_run=True)
    assert rc == 0
    jobs = _jobs(text)
    assert "eeg_read" not in jobs
    assert jobs["eeg_preprocess"] == 3 and jobs["store_manifest"] == 1
    resplit = {**cfg, "store": {**cfg["store"], "split": {**cfg["store"]["split"], "seed": 7}}}
    rc, text = _run(resplit, work, capfd, dry_run=True)
    jobs = _jobs(text)
    assert set(jobs) == {"store_manifest", "qc_summary", "all"}


def test_corrupt_input_fails_only_its_job(sample_root, tmp_path, monkeypatch, capfd):
    root = tmp_path / "bids"
    for sub in ("01", "03"):
        shutil.copytree(sample_root / f"sub-{sub}", root / f"sub-{sub}")
    bad = root / "sub-02" / "eeg" / "sub-02_task-rest_eeg.edf"
    bad.parent.mkdir(parents=True)
    bad.write_bytes((sample_root / "sub-01" / "eeg"
                     / "sub-01_task-rest_eeg.edf").read_bytes()[:3000])   # truncated
    monkeypatch.chdir(tmp_path)
    cfg = example_config("eeg", root, tmp_path / "out", qc={"enabled": False})
    rc, text = _run(cfg, tmp_path, capfd, cores=2)
    assert rc != 0
    log = (tmp_path / "out" / "logs" / "eeg_read" / "sub-02_task-rest.log").read_text()
    assert re.search(r"ERROR eeg_read sub-02_task-rest: FormatError: .*sub-02_task-rest_eeg"
                     r"\.edf", log), log
    assert "sub-02" in text and "eeg_read" in text
    for good in ("sub-01_task-rest", "sub-03_task-generator"):
        ds = validate(open_recording(tmp_path / "out" / "store" / f"{good}.zarr"))
        assert ds.attrs["subject"] == good[4:6]
    assert not (tmp_path / "out" / "store" / "manifest.parquet").exists()


@pytest.mark.parametrize("name,n", [("fmri", 2), ("calcium", 3)])
def test_end_to_end(sample_root, tmp_path, monkeypatch, capfd, name, n):
    monkeypatch.chdir(tmp_path)
    cfg = example_config(name, sample_root, tmp_path / "out")
    rc, text = _run(cfg, tmp_path, capfd, cores=2)
    assert rc == 0, text
    store = _check_store(tmp_path / "out", name, n)
    ds = store.open(store.ids[0])
    steps = [h["step"] for h in history(ds)]
    if name == "fmri":
        assert steps == ["read_fmri", "filter", "robust_scale"]
        assert "confounds" in ds.data_vars and ds.sizes["channel"] == 12
        html = (tmp_path / "out" / "qc" / f"{store.ids[0]}_qc.html").read_text()
        assert "Carpet plots" in html and "ROI correlation" in html
    else:
        assert steps == ["read_calcium", "dff", "resample", "zscore"]
        assert ds.attrs["sfreq"] == 5.0 and ds["signal"].attrs["units"] == "z"


@pytest.mark.slow
def test_meg_end_to_end(sample_root, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    cfg = example_config("meg", sample_root, tmp_path / "out")
    rc, text = _run(cfg, tmp_path, capfd, cores=2)
    assert rc == 0, text
    store = _check_store(tmp_path / "out", "meg", 2)
    ds = store.open("sub-04_task-rest")
    assert ds.attrs["sfreq"] == 150.0 and ds.sizes["channel"] == 30
