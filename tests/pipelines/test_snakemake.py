"""The Snakemake pipelines: dry runs, one real run per modality, kills, reruns, failures.

Snakemake runs in a subprocess (``python -m snakemake``) in a temp working directory, on the
sample dataset: real spkit/pyedflib EEG, real nitime BOLD with a generated atlas, generated
suite2p folders. The default suite runs one pipeline per modality (EEG: killed and resumed;
fMRI; calcium: with one corrupt input; MEG only with ``-m slow``); the values in the stores
are checked against the per-job steps run in-process and against the chain in memory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from pipeline_helpers import example_config, write_config

from neurofm.pipelines import (
    discover,
    load_config,
    output_layout,
    recording_splits,
    run_pipeline,
    stage_parameters,
    wildcards_of,
)
from neurofm.pipelines.steps import apply_chain, preprocess_step, read_done, read_step
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


def _command(config_path, cores=2):
    return [sys.executable, "-m", "neurofm", "preprocess", str(config_path),
            "--cores", str(cores)]


def _kill_when(cmd, cwd, condition, log, timeout=600.0):
    """Start ``cmd`` and SIGKILL it with all its children once ``condition()`` holds."""
    with open(log, "w") as fid:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=fid, stderr=subprocess.STDOUT,
                                start_new_session=True)
        t0 = time.monotonic()
        try:
            while not condition():
                assert proc.poll() is None, f"finished before the kill: {Path(log).read_text()}"
                assert time.monotonic() - t0 < timeout, "no kill point reached"
                time.sleep(0.05)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _reference(cfg, rec_id, tmp):
    """What an uninterrupted run computes for one recording: the read and preprocess steps
    run in-process. Returns (preprocessed, raw) recordings."""
    cfg = load_config(cfg)
    rec = discover(cfg).set_index("id").loc[rec_id]
    stages = stage_parameters(cfg)
    wc = wildcards_of({"subject": rec.subject, "session": rec.session, "task": rec.task,
                       "run": rec.run})
    fmri = {**cfg["fmri"], "atlas": rec.atlas, "labels": rec.labels}
    raw = tmp / f"{rec_id}_raw.zarr"
    read_step(rec.path, str(raw), modality=cfg["modality"], wildcards=wc, read=cfg["read"],
              pick=stages["read"]["pick"], fmri=fmri if cfg["modality"] == "fmri" else None)
    written = preprocess_step(str(raw), str(tmp / f"{rec_id}.json"),
                              target=str(tmp / "store" / f"{rec_id}.zarr"),
                              modality=cfg["modality"], steps=stages["steps"],
                              block_seconds=cfg["block_seconds"], store=stages["store"],
                              config_hash=stages["chain_hash"])
    return open_recording(written), open_recording(raw)


def _assert_chain_in_memory(store, out_dir, cfg, rec_id):
    """A store recording equals the chain re-run in memory on the pipeline's raw read."""
    cfg = load_config(cfg)
    raw = output_layout(cfg)["raw"].format(**wildcards_of(
        discover(cfg).set_index("id").loc[rec_id].to_dict()))
    expected = apply_chain(open_recording(raw).load(), stage_parameters(cfg)["steps"],
                           modality=cfg["modality"])["signal"].values
    n = expected.shape[1]
    np.testing.assert_allclose(store.read_window(rec_id, 0, n), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,n_read", [("eeg", 3), ("meg", 10), ("fmri", 40),
                                         ("calcium", 3)])
def test_dry_run(sample_root, tmp_path, monkeypatch, capfd, name, n_read):
    monkeypatch.chdir(tmp_path)
    cfg = example_config(name, sample_root, tmp_path / "out")
    rc, text = _run(cfg, tmp_path, capfd, dry_run=True)
    assert rc == 0, text
    jobs = _jobs(text)
    assert jobs[f"{name}_read"] == n_read
    assert jobs[f"{name}_preprocess"] == n_read
    assert jobs[f"{name}_qc"] == n_read
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
    return store


@pytest.fixture(scope="session")
def eeg_run(sample_root, tmp_path_factory):
    """The EEG example, SIGKILLed (with every job) once the first recording is in the store,
    then run again with the same command. Run once per session, also with pytest-xdist (the
    workers share it through a file lock), since it is the slowest fixture of the suite."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent                       # shared by the workers of this session
    work, result = root / "eeg_run", root / "eeg_run.json"
    with FileLock(str(root / "eeg_run.lock")):
        if not result.exists():
            work.mkdir(exist_ok=True)
            cfg = example_config("eeg", sample_root, work / "out")
            cmd = _command(write_config(cfg, work / "config.yaml"))
            markers = work / "out" / "work" / "eeg"
            _kill_when(cmd, work, lambda: any(markers.glob("*_desc-preproc.json")),
                       work / "killed.log")
            killed = {
                "markers": sorted(p.name for p in markers.glob("*_desc-preproc.json")),
                "locks": sorted(p.name for p in (work / ".snakemake" / "locks").glob("*")),
                "manifest": (work / "out" / "work" / "store.json").exists()}
            rerun = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=900)
            result.write_text(json.dumps({
                "cfg": cfg, "killed": killed,
                "rerun": {"returncode": rerun.returncode, "stdout": rerun.stdout,
                          "stderr": rerun.stderr}}))
        data = json.loads(result.read_text())
    return SimpleNamespace(work=work, cfg=data["cfg"], killed=SimpleNamespace(**data["killed"]),
                           rerun=SimpleNamespace(**data["rerun"]))


def test_killed_run_resumes_with_the_same_command(eeg_run, tmp_path):
    killed = eeg_run.killed
    assert 1 <= len(killed.markers) < 3 and not killed.manifest      # killed mid-way ...
    assert killed.locks                                  # ... leaving Snakemake's locks behind
    assert eeg_run.rerun.returncode == 0, eeg_run.rerun.stdout + eeg_run.rerun.stderr
    assert "stale Snakemake lock" in eeg_run.rerun.stderr
    out = eeg_run.work / "out"
    store = _check_store(out, "eeg", 3)
    assert (out / "qc" / "summary.html").is_file() and not (out / "failures.tsv").exists()
    for rec_id in store.ids:   # the same values as an uninterrupted run, bit for bit
        expected, _ = _reference(eeg_run.cfg, rec_id, tmp_path)
        got = store.open(rec_id)
        np.testing.assert_array_equal(got["signal"].values, expected["signal"].values)
        assert got.attrs["config_hash"] == expected.attrs["config_hash"]
    _assert_chain_in_memory(store, out, eeg_run.cfg, "sub-01_task-rest")


def test_eeg_end_to_end(eeg_run):
    work = eeg_run.work
    store = _check_store(work / "out", "eeg", 3)
    ds = store.open("sub-01_task-rest")
    assert ds.attrs["sfreq"] == 100.0 and ds.sizes["channel"] == 14
    assert [h["step"] for h in history(ds)][-5:] == ["notch", "filter", "resample",
                                                     "rereference", "robust_scale"]
    x = ds["signal"].values                            # robust scaling: median 0, IQR 1
    q25, q50, q75 = np.percentile(x, [25, 50, 75], axis=1)
    np.testing.assert_allclose(q50, 0.0, atol=1e-5)
    np.testing.assert_allclose(q75 - q25, 1.0, rtol=1e-4)
    done = read_done(work / "out" / "work" / "eeg" / "sub-01_task-rest_desc-preproc.json")
    assert done["config_hash"] == ds.attrs["config_hash"]
    html = (work / "out" / "qc" / "sub-01_task-rest_qc.html").read_text()
    assert "Power spectral density" in html and "data:image/png;base64" in html


def test_second_run_has_nothing_to_do(eeg_run, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(eeg_run.work)
    rc, text = _run(eeg_run.cfg, tmp_path, capfd, dry_run=True)
    assert rc == 0
    assert "Nothing to be done" in text


def test_changed_parameter_reruns_only_affected_rules(eeg_run, tmp_path, monkeypatch, capfd):
    work, cfg = eeg_run.work, eeg_run.cfg
    monkeypatch.chdir(work)
    changed = {**cfg, "bandpass": {**cfg["bandpass"], "h_freq": 30.0}}
    rc, text = _run(changed, tmp_path, capfd, dry_run=True)
    assert rc == 0
    jobs = _jobs(text)
    assert "eeg_read" not in jobs
    assert jobs["eeg_preprocess"] == 3 and jobs["store_manifest"] == 1
    resplit = {**cfg, "store": {**cfg["store"], "split": {**cfg["store"]["split"], "seed": 7}}}
    rc, text = _run(resplit, tmp_path, capfd, dry_run=True)
    jobs = _jobs(text)
    assert set(jobs) == {"store_manifest", "qc_summary", "all"}


def test_snakemake_never_owns_store_files(eeg_run, tmp_path, monkeypatch, capfd):
    """Snakemake deletes a job's outputs when the job starts: none of them may be a file the
    store lists, so a killed rerun never leaves the manifest pointing at a missing file."""
    monkeypatch.chdir(eeg_run.work)
    rc, text = _run(eeg_run.cfg, tmp_path, capfd, dry_run=True, extra_args=["--forceall"])
    assert rc == 0, text
    outputs = [o for line in re.findall(r"^\s*output: (.+)$", text, re.M)
               for o in line.split(", ")]
    assert len(outputs) == 3 * 3 + 2                 # read, preprocess, qc; manifest, summary
    store = (eeg_run.work / "out" / "store").resolve()
    assert [o for o in outputs if Path(o).resolve().is_relative_to(store)] == []


@pytest.mark.slow
def test_kill_during_rerun_keeps_the_store_complete(sample_root, tmp_path):
    """A rerun with a changed filter, killed while it rewrites the recordings: the store
    still lists every recording, with the previous values; the same command then finishes."""
    cfg = example_config("eeg", sample_root, tmp_path / "out", subjects=["01", "03"],
                         qc={"enabled": False})
    cmd = _command(write_config(cfg, tmp_path / "config.yaml"))
    assert subprocess.run(cmd, cwd=tmp_path, capture_output=True).returncode == 0
    store = open_store(tmp_path / "out" / "store")
    before = {rec_id: store.open(rec_id)["signal"].values for rec_id in store.ids}
    changed = {**cfg, "bandpass": {**cfg["bandpass"], "h_freq": 30.0}}
    write_config(changed, tmp_path / "config.yaml")
    markers = tmp_path / "out" / "work" / "eeg"
    started = time.time()
    _kill_when(cmd, tmp_path, lambda: any(p.stat().st_mtime > started
                                          for p in markers.glob("*_desc-preproc.json")),
               tmp_path / "killed.log")
    store = open_store(tmp_path / "out" / "store")
    assert sorted(store.ids) == sorted(before)
    for rec_id, values in before.items():
        np.testing.assert_array_equal(store.open(rec_id)["signal"].values, values)
    assert subprocess.run(cmd, cwd=tmp_path, capture_output=True).returncode == 0
    store = open_store(tmp_path / "out" / "store")
    for rec_id in before:
        expected, _ = _reference(changed, rec_id, tmp_path)
        np.testing.assert_array_equal(store.open(rec_id)["signal"].values,
                                      expected["signal"].values)


def _check_failures(out_dir, recording, rule, pattern):
    failures = pd.read_csv(out_dir / "failures.tsv", sep="\t", keep_default_na=False)
    assert list(failures.columns) == ["recording", "rule", "error", "log"]
    assert list(failures["recording"]) == [recording]
    assert list(failures["rule"]) == [rule]
    assert re.search(pattern, failures["error"][0]), failures["error"][0]
    assert Path(failures["log"][0]) == out_dir / "logs" / rule / f"{recording}.log"


def test_failed_job_leaves_a_usable_store(sample_root, tmp_path, monkeypatch, capfd):
    """The calcium example with one truncated suite2p file: the store lists the two others
    (with their values and splits), failures.tsv names the third, the exit status is 1."""
    from neurofm.cli import main

    root = tmp_path / "bids"
    shutil.copytree(sample_root / "derivatives" / "suite2p", root / "derivatives" / "suite2p")
    bad = (root / "derivatives" / "suite2p" / "sub-08" / "ophys" / "sub-08_task-spont_suite2p"
           / "plane0" / "F.npy")
    bad.write_bytes(bad.read_bytes()[:200])
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    cfg = example_config("calcium", root, out)
    rc, text = _run(cfg, tmp_path, capfd, cores=2)
    assert rc == 1, text
    good = ["sub-07_task-spont", "sub-09_task-spont"]
    store = _check_store(out, "calcium", 2)
    assert list(store.ids) == good
    _check_failures(out, "sub-08_task-spont", "calcium_read",
                    r"^FormatError: .*sub-08_task-spont_suite2p/plane0/F\.npy: truncated")
    provenance = json.loads((out / "store" / "pipeline.json").read_text())
    assert provenance["failed"] == ["sub-08_task-spont"] and provenance["recordings"] == good
    full = load_config(cfg)                  # splits drawn over all three subjects, as planned
    planned = recording_splits(discover(full), full["store"]["split"])
    assert dict(zip(store.manifest["id"], store.manifest["split"])) == {
        rec_id: planned[rec_id] for rec_id in good}
    assert not (out / "work" / "store.json").exists()   # the manifest rule did not run ...
    capfd.readouterr()
    assert main(["info", str(out / "store")]) == 0      # ... yet the store is usable
    assert re.search(r"recordings\s+2 \(calcium\)", capfd.readouterr().out)
    for rec_id in good:
        ds = store.open(rec_id)
        assert [h["step"] for h in history(ds)] == ["read_calcium", "dff", "resample",
                                                    "zscore"]
        assert ds.attrs["sfreq"] == 5.0 and ds["signal"].attrs["units"] == "z"
        np.testing.assert_allclose(ds["signal"].values.mean(axis=1), 0.0, atol=1e-4)
        np.testing.assert_allclose(ds["signal"].values.std(axis=1), 1.0, rtol=1e-3)
        _assert_chain_in_memory(store, out, cfg, rec_id)


@pytest.mark.slow
def test_corrupt_edf_fails_only_its_job(sample_root, tmp_path, monkeypatch, capfd):
    root = tmp_path / "bids"
    for sub in ("01", "03"):
        shutil.copytree(sample_root / f"sub-{sub}", root / f"sub-{sub}")
    bad = root / "sub-02" / "eeg" / "sub-02_task-rest_eeg.edf"
    bad.parent.mkdir(parents=True)
    bad.write_bytes((sample_root / "sub-01" / "eeg"
                     / "sub-01_task-rest_eeg.edf").read_bytes()[:3000])   # truncated
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    cfg = example_config("eeg", root, out, qc={"enabled": False})
    rc, text = _run(cfg, tmp_path, capfd, cores=2)
    assert rc != 0
    log = (out / "logs" / "eeg_read" / "sub-02_task-rest.log").read_text()
    assert re.search(r"ERROR eeg_read sub-02_task-rest: FormatError: .*sub-02_task-rest_eeg"
                     r"\.edf", log), log
    assert "sub-02" in text and "eeg_read" in text
    store = _check_store(out, "eeg", 2)
    assert list(store.ids) == ["sub-01_task-rest", "sub-03_task-generator"]
    _check_failures(out, "sub-02_task-rest", "eeg_read", r"^FormatError: .*sub-02_task-rest")


def test_fmri_end_to_end(sample_root, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    # one subject of the generated cohort (two runs) keeps the default suite fast; the whole
    # cohort goes through tests/training/test_cli_fit.py (slow)
    cfg = example_config("fmri", sample_root, tmp_path / "out", subjects=["10"])
    rc, text = _run(cfg, tmp_path, capfd, cores=2)
    assert rc == 0, text
    store = _check_store(tmp_path / "out", "fmri", 2)
    assert (tmp_path / "out" / "qc" / "summary.html").is_file()
    ds = store.open(store.ids[0])
    assert [h["step"] for h in history(ds)] == ["read_fmri", "filter", "robust_scale"]
    assert "confounds" in ds.data_vars and ds.sizes["channel"] == 12
    html = (tmp_path / "out" / "qc" / f"{store.ids[0]}_qc.html").read_text()
    assert "Carpet plots" in html and "ROI correlation" in html
    for rec_id in store.ids:
        _assert_chain_in_memory(store, tmp_path / "out", cfg, rec_id)


@pytest.mark.slow
def test_calcium_end_to_end(sample_root, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    cfg = example_config("calcium", sample_root, tmp_path / "out")
    rc, text = _run(cfg, tmp_path, capfd, cores=2)
    assert rc == 0, text
    store = _check_store(tmp_path / "out", "calcium", 3)
    assert (tmp_path / "out" / "qc" / "summary.html").is_file()
    for rec_id in store.ids:
        expected, _ = _reference(cfg, rec_id, tmp_path)
        np.testing.assert_array_equal(store.open(rec_id)["signal"].values,
                                      expected["signal"].values)


@pytest.mark.slow
def test_meg_end_to_end(sample_root, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    # the resting recording and one subject of the generated task MEG (events kept)
    cfg = example_config("meg", sample_root, tmp_path / "out", subjects=["04", "30"])
    rc, text = _run(cfg, tmp_path, capfd, cores=2)
    assert rc == 0, text
    store = _check_store(tmp_path / "out", "meg", 3)
    ds = store.open("sub-04_task-rest")
    assert ds.attrs["sfreq"] == 150.0 and ds.sizes["channel"] == 30
    _assert_chain_in_memory(store, tmp_path / "out", cfg, "sub-04_task-rest")
    task = store.open("sub-30_task-evoked_run-1")
    assert task.sizes["channel"] == 30 and task.sizes["event"] >= 30   # stim channel dropped
    assert set(task["event_description"].values) == {"famous", "unfamiliar", "scrambled",
                                                     "button"}
    _assert_chain_in_memory(store, tmp_path / "out", cfg, "sub-30_task-evoked_run-1")
