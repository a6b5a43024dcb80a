"""The per-job steps of the pipelines, without Snakemake."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurofm.pipelines.steps import apply_chain, preprocess_step, read_done, write_zarr
from neurofm.schema import history, validate
from neurofm.store import open_recording


def test_chain_order_and_skipped_notch(spkit_eeg):
    steps = {"dff": None, "notch": {"freqs": [50.0, 100.0]},
             "bandpass": {"l_freq": 1.0, "h_freq": 40.0}, "resample": {"sfreq": 64.0},
             "reference": "average", "scale": {"method": "zscore"}}
    out = apply_chain(spkit_eeg, steps, modality="eeg")
    names = [h["step"] for h in history(out)]
    assert names[-5:] == ["notch", "filter", "resample", "rereference", "zscore"]
    # 100 Hz is above the 64 Hz Nyquist frequency of the real 128 Hz EEG: skipped
    assert history(out)[-5]["params"]["freqs"] == [50.0]
    assert out.attrs["sfreq"] == 64.0
    # re-reference is EEG only
    meg_like = apply_chain(spkit_eeg, {"reference": "average"}, modality="meg")
    assert "rereference" not in [h["step"] for h in history(meg_like)]


def test_write_zarr_is_atomic_and_stamped(spkit_eeg, tmp_path):
    path = write_zarr(spkit_eeg, tmp_path / "rec.zarr", attrs={"config_hash": "0123456789ab"})
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    ds = validate(open_recording(path))
    assert ds.attrs["config_hash"] == "0123456789ab" and ds.attrs["neurofm_version"]
    np.testing.assert_array_equal(ds["signal"].values, spkit_eeg["signal"].values)
    write_zarr(spkit_eeg.isel(channel=[0, 1]), path)        # replaces the old one
    assert open_recording(path).sizes["channel"] == 2


EEG_STEPS = {"dff": None, "notch": {"freqs": [50.0]},
             "bandpass": {"l_freq": 1.0, "h_freq": 40.0, "method": "fir"},
             "resample": {"sfreq": 64.0, "method": "polyphase"}, "reference": "average",
             "scale": {"method": "robust"}}


@pytest.mark.parametrize("block_seconds", [4.0, 120.0])
def test_preprocess_step_equals_the_in_memory_chain(spkit_eeg, tmp_path, block_seconds):
    """Blocked (4 s blocks of a 16 s recording), checkpointed, then scaled: the same values
    as the chain on the whole recording in memory."""
    raw = write_zarr(spkit_eeg, tmp_path / "work" / "raw.zarr")
    done = tmp_path / "work" / "sub-01_task-rest_desc-preproc.json"
    target = tmp_path / "store" / "sub-01_task-rest.zarr"
    written = preprocess_step(str(raw), str(done), target=str(target), modality="eeg",
                              steps=EEG_STEPS, block_seconds=block_seconds,
                              store={"chunk_seconds": 2.0}, config_hash="abcdefabcdef")
    expected = apply_chain(spkit_eeg, EEG_STEPS, modality="eeg")
    got = open_recording(written)
    assert got.sizes == expected.sizes and got.attrs["sfreq"] == 64.0
    np.testing.assert_allclose(got["signal"].values, expected["signal"].values,
                               rtol=1e-4, atol=1e-4)
    # robust scaling: per channel, median 0 and IQR 1 over the whole recording
    q25, q50, q75 = np.percentile(got["signal"].values, [25, 50, 75], axis=1)
    np.testing.assert_allclose(q50, 0.0, atol=1e-5)
    np.testing.assert_allclose(q75 - q25, 1.0, rtol=1e-5)
    assert got.attrs["config_hash"] == "abcdefabcdef"
    assert got["signal"].encoding["chunks"] == (14, 128)        # store.chunk_seconds = 2 s
    marker = read_done(done)
    assert marker["id"] == "sub-01_task-rest" and marker["config_hash"] == "abcdefabcdef"
    assert Path(marker["path"]) == Path(written)
    assert not [p for p in done.parent.iterdir() if p.name.startswith(".ckpt")]


def test_preprocess_step_zscore_dff_calcium(tmp_path):
    """The calcium chain (dF/F -> resample -> z-score) too, on generated traces."""
    from neurofm.schema import make_recording

    rng = np.random.default_rng(0)
    x = (100 + np.cumsum(rng.standard_normal((6, 3000)), axis=1)).astype(np.float32)
    ds = make_recording(x, channel=[f"c{i}" for i in range(6)], sfreq=30.0,
                        modality="calcium", ch_type="cell", units="a.u.")
    steps = {"dff": {"method": "maximin", "window_s": 10.0, "sigma": 2.0},
             "resample": {"sfreq": 5.0}, "scale": {"method": "zscore"}}
    raw = write_zarr(ds, tmp_path / "raw.zarr")
    written = preprocess_step(str(raw), str(tmp_path / "x_desc-preproc.json"),
                              target=str(tmp_path / "store" / "x.zarr"), modality="calcium",
                              steps=steps, block_seconds=20.0)
    expected = apply_chain(ds, steps, modality="calcium")["signal"].values
    got = open_recording(written)["signal"].values
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got.mean(axis=1), 0.0, atol=1e-5)


def test_failed_run_step_lists_current_recordings_and_explains_the_rest(sample_root,
                                                                       spkit_eeg, tmp_path):
    """Three recordings: one done with the current parameters, one whose read failed in this
    run, one with only a marker of older parameters (and an error log of an earlier run)."""
    import json
    import os
    import time

    import pandas as pd

    from neurofm.pipelines import load_config, output_layout, stage_parameters
    from neurofm.pipelines.steps import failed_run_step
    from neurofm.store import open_store

    edfs = sorted(str(p) for p in sample_root.glob("sub-0[123]/eeg/*_eeg.*")
                  if p.suffix in (".edf", ".bdf"))
    cfg = load_config({"modality": "eeg", "inputs": edfs, "out_dir": str(tmp_path / "out"),
                       "store": {"split": {"train": 1.0, "val": 0.0, "test": 0.0}}})
    layout = output_layout(cfg)
    current = stage_parameters(cfg)["chain_hash"]
    wc = {s: {"subject": s, "session": "", "task": t, "run": ""}
          for s, t in (("01", "_task-rest"), ("02", "_task-generator"),
                       ("03", "_task-generator"))}
    since = time.time() - 1.0
    for sub, chash in (("01", current), ("03", "0123456789ab")):
        rec_id = f"sub-{sub}{wc[sub]['task']}"
        written = write_zarr(spkit_eeg.assign_attrs(subject=sub),
                             layout["recording"].format(**wc[sub]))
        done = Path(layout["done"].format(**wc[sub]))
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps({"id": rec_id, "path": str(written), "config_hash": chash}))
    logs = {"02": ("eeg_read", time.time(), "FormatError: x.edf: truncated"),
            "03": ("eeg_preprocess", since - 100, "DataError: from an earlier run")}
    for sub, (rule, mtime, error) in logs.items():
        log = Path(layout["log"].format(rule=rule, **wc[sub]))
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"2026-01-01 INFO [neurofm] start\n2026-01-01 ERROR [neurofm] ERROR "
                       f"{rule} sub-{sub}{wc[sub]['task']}: {error}\nTraceback ...\n")
        os.utime(log, (mtime, mtime))
    table = failed_run_step(cfg, since=since, config_hash="feedfeedfeed")
    store = open_store(layout["store"])
    assert list(store.ids) == ["sub-01_task-rest"] and list(store.manifest["split"]) == ["train"]
    on_disk = pd.read_csv(layout["failures"], sep="\t", keep_default_na=False)
    assert on_disk.to_dict("list") == table.to_dict("list") == {
        "recording": ["sub-02_task-generator", "sub-03_task-generator"],
        "rule": ["eeg_read", ""],
        "error": ["FormatError: x.edf: truncated",
                  "not completed (no job of it failed: see the Snakemake output)"],
        "log": [layout["log"].format(rule="eeg_read", **wc["02"]), ""]}
    provenance = json.loads((Path(layout["store"]) / "pipeline.json").read_text())
    assert provenance["failed"] == ["sub-02_task-generator", "sub-03_task-generator"]
    assert provenance["config_hash"] == "feedfeedfeed"


def test_run_script_logs_into_the_job_log_not_the_terminal(spkit_eeg, tmp_path, capfd):
    """A job's INFO lines go to its log file only; its error is one ERROR line there (and on
    stderr), and the job exits with status 1."""
    from types import SimpleNamespace

    from neurofm.pipelines.steps import run_script

    raw = write_zarr(spkit_eeg, tmp_path / "raw.zarr")
    wc = {"subject": "01", "session": "", "task": "_task-rest", "run": ""}
    smk = SimpleNamespace(
        input=[str(raw)], output=[str(tmp_path / "done.json")], log=[str(tmp_path / "p.log")],
        wildcards=wc, rule="eeg_preprocess", threads=1,
        params=SimpleNamespace(target=str(tmp_path / "store" / "sub-01_task-rest.zarr"),
                               modality="eeg", steps={"scale": {"method": "zscore"}},
                               block_seconds=8.0, store={}, config_hash="c0ffeec0ffee"))
    capfd.readouterr()
    assert run_script(smk, "preprocess") == 0
    assert "INFO" not in capfd.readouterr().err
    log = (tmp_path / "p.log").read_text()
    assert "rule eeg_preprocess, sub-01_task-rest" in log and "preprocessed" in log
    assert read_done(tmp_path / "done.json")["config_hash"] == "c0ffeec0ffee"
    smk.log = [str(tmp_path / "bad.log")]
    smk.input = [str(tmp_path / "missing.zarr")]
    with pytest.raises(SystemExit) as exc:
        run_script(smk, "preprocess")
    assert exc.value.code == 1
    line = f"ERROR eeg_preprocess sub-01_task-rest: FormatError: {tmp_path}/missing.zarr"
    assert line in (tmp_path / "bad.log").read_text() and line in capfd.readouterr().err
