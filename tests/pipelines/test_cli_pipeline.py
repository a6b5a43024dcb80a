"""`neurofm sample-data` and `neurofm preprocess` through the command-line entry point."""

from __future__ import annotations

import pytest
from pipeline_helpers import example_config, write_config

from neurofm.cli import main


def test_cli_sample_data_is_idempotent(tmp_path, capsys):
    out = tmp_path / "sample"
    assert main(["sample-data", "--out", str(out)]) == 0
    assert "sample BIDS dataset ready" in capsys.readouterr().out
    before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
    assert (out / "dataset_description.json").is_file()
    assert main(["sample-data", "--out", str(out)]) == 0
    after = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
    assert before == after


def test_cli_preprocess_dry_run(sample_root, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    cfg = write_config(example_config("eeg", sample_root, tmp_path / "out"),
                       tmp_path / "eeg.yaml")
    assert main(["preprocess", str(cfg), "--dry-run", "--cores", "2"]) == 0
    text = "".join(capfd.readouterr())
    assert "eeg_read" in text and "store_manifest" in text
    assert not (tmp_path / "out").exists()


def test_cli_preprocess_bad_config(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("modality: xray\n")
    assert main(["preprocess", str(cfg), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neurofm: error:") and "modality" in err


def test_cli_preprocess_help_describes_the_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["preprocess", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "Run the Snakemake preprocessing workflow that ships with neurofm" in text
    assert "failures.tsv" in text and "resumes by running the same command" in text
