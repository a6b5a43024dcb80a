"""The ``neurofm`` command: --version, info, convert (files), and the demo."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from neurofm import __version__
from neurofm.cli import main
from neurofm.store import open_store


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"neurofm {__version__}"


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "neurofm", "--version"], capture_output=True,
                         text=True, check=True)
    assert __version__ in out.stdout


def test_info_recording(capsys, edf_path):
    assert main(["info", str(edf_path)]) == 0
    out = capsys.readouterr().out
    assert "modality   eeg" in out and "200 Hz" in out and "600.000 s" in out
    assert "events     2 (Recording starts: 1, Recording ends: 1)" in out
    assert main(["info", str(edf_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_channels"] == 11 and summary["duration_s"] == 600.0


def test_convert_and_info_store(tmp_path, capsys, edf_path, bdf_path):
    out = tmp_path / "store"
    assert main(["convert", str(edf_path), str(bdf_path), "--out", str(out), "--quiet"]) == 0
    store = open_store(out)
    assert store.ids == ["test_generator", "test_generator-2"]
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "recordings 2 (eeg)" in text and "test_generator-2" in text
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_recordings"] == 2


def test_convert_skips_bad_files(tmp_path, capsys, edf_path):
    bad = tmp_path / "broken.edf"
    bad.write_bytes(edf_path.read_bytes()[:5000])
    out = tmp_path / "store"
    assert main(["convert", str(bad), str(edf_path), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "1 file(s) failed" in err and "broken.edf" in err and "truncated" in err
    assert open_store(out).ids == ["test_generator"]
    assert main(["convert", str(bad), "--out", str(tmp_path / "s2"), "--strict"]) == 2
    assert "neurofm: error:" in capsys.readouterr().err


def test_errors_are_one_line(capsys, tmp_path):
    assert main(["info", str(tmp_path / "missing.edf")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neurofm: error:") and "missing.edf" in err and "Traceback" not in err


def test_demo(tmp_path, capsys):
    from neurofm.demo import run_demo

    store = run_demo(tmp_path / "demo", n_windows=16)
    out = capsys.readouterr().out
    assert len(store) == 2 and "sub-phyaat_task-rest" in out and "windows/s" in out


def test_info_bids_root(tmp_path, capsys, edf_path):
    import shutil

    for sub in ("01", "02"):
        folder = tmp_path / "bids" / f"sub-{sub}" / "eeg"
        folder.mkdir(parents=True)
        shutil.copy(edf_path, folder / f"sub-{sub}_task-rest_eeg.edf")
    assert main(["info", str(tmp_path / "bids")]) == 0
    out = capsys.readouterr().out
    assert "2 recordings, 2 subjects" in out and "rest" in out
    assert main(["info", str(tmp_path / "bids"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["subject"] for r in rows] == ["01", "02"]


def test_convert_bids_honours_store_layout_flags(tmp_path, edf_path):
    import shutil

    import zarr

    folder = tmp_path / "bids" / "sub-01" / "eeg"
    folder.mkdir(parents=True)
    shutil.copy(edf_path, folder / "sub-01_task-rest_eeg.edf")
    out = tmp_path / "store"
    assert main(["convert", str(tmp_path / "bids"), "--out", str(out), "--quiet",
                 "--chunk-seconds", "2", "--compressor", "zstd"]) == 0
    rid = open_store(out).ids[0]
    arr = zarr.open_group(str(out / f"{rid}.zarr"), mode="r")["signal"]
    assert arr.chunks == (11, 400)  # 2 s at 200 Hz
    assert type(arr.metadata.codecs[-1]).__name__ == "ZstdCodec"
