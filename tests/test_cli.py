"""The ``neurofm`` command: --version, info, convert (files); the demo: tests/test_demo.py."""

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
    assert "ZstdCodec" in [type(c).__name__ for c in arr.metadata.codecs]


# --------------------------------------------------------------------------------------------
# convert: options, exit statuses, idempotence; info through a closed pipe; the sample tree
# --------------------------------------------------------------------------------------------
def _codecs(store_dir, rid):
    import zarr

    arr = zarr.open_group(str(store_dir / f"{rid}.zarr"), mode="r")["signal"]
    return [type(c).__name__ for c in arr.metadata.codecs]


def test_convert_compressor_none_is_accepted(tmp_path, edf_path):
    """The help lists none (any case) as a --compressor choice: it must parse, and store raw
    values without a compression codec."""
    for i, spelling in enumerate(("None", "none", "NONE")):
        out = tmp_path / f"s{i}"
        assert main(["convert", str(edf_path), "--out", str(out), "--quiet",
                     "--compressor", spelling]) == 0
        codecs = _codecs(out, "test_generator")
        assert not {"ZstdCodec", "BloscCodec"} & set(codecs), codecs
    out = tmp_path / "zstd"
    assert main(["convert", str(edf_path), "--out", str(out), "--quiet",
                 "--compressor", "ZSTD"]) == 0
    assert "ZstdCodec" in _codecs(out, "test_generator")
    import numpy as np

    np.testing.assert_array_equal(open_store(out).open("test_generator")["signal"].values,
                                  open_store(tmp_path / "s0").open("test_generator")
                                  ["signal"].values)
    with pytest.raises(SystemExit) as info:
        main(["convert", str(edf_path), "--out", str(out), "--compressor", "lz4"])
    assert info.value.code == 2


def test_info_into_a_closed_pipe_has_no_traceback(tmp_path, edf_path):
    """`neurofm info STORE | head -3`: the reader of stdout goes away before neurofm writes."""
    out = tmp_path / "store"
    assert main(["convert", str(edf_path), "--out", str(out), "--quiet"]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "neurofm", "info", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `head` exiting: every write to stdout now fails with EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert err == ""
    # and through a real shell pipeline: the first 3 lines, nothing on stderr
    shell = subprocess.run(f'"{sys.executable}" -m neurofm info "{out}" | head -3',
                           shell=True, capture_output=True, text=True, check=True)
    assert shell.stdout.splitlines()[0] == f"store      {out}"
    assert len(shell.stdout.splitlines()) == 3 and "Traceback" not in shell.stderr


def test_convert_twice_adds_nothing(tmp_path, capsys, edf_path):
    out = tmp_path / "store"
    assert main(["convert", str(edf_path), "--out", str(out), "--quiet"]) == 0
    assert "1 added" in capsys.readouterr().err
    assert main(["convert", str(edf_path), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "0 added" in err and "1 already in the store (unchanged" in err
    assert open_store(out).ids == ["test_generator"]
    assert main(["convert", str(edf_path), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert "1 added" in capsys.readouterr().err and open_store(out).ids == ["test_generator"]


def test_convert_exit_statuses(tmp_path, capsys, edf_path):
    bad1, bad2 = tmp_path / "a.edf", tmp_path / "b.edf"
    bad1.write_bytes(edf_path.read_bytes()[:3000])
    bad2.write_bytes(b"garbage")
    out = tmp_path / "store"
    # every input fails: exit 1, every failure listed, no store
    assert main(["convert", str(bad1), str(bad2), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "nothing was converted" in err and "no store was created" in err
    assert str(bad1) in err and str(bad2) in err and "truncated" in err
    assert not out.exists()
    # an option no reader of the inputs takes: exit 2, naming it, before anything is read
    assert main(["convert", str(edf_path), "--out", str(out), "--atlas", "power_2011"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neurofm: error: unknown reader option 'atlas'")
    assert "read_ephys" in err and "'montage'" in err and not out.exists()
    # a typo in a reader option given with --option: exit 2, naming it and the right one
    assert main(["convert", str(edf_path), "--out", str(out), "--option",
                 "montag=standard_1020"]) == 2
    err = capsys.readouterr().err
    assert "unknown reader option 'montag' (did you mean 'montage'?)" in err
    assert not out.exists()
    assert main(["convert", str(edf_path), "--out", str(out), "--option", "oops"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    # --datatype is for BIDS roots
    assert main(["convert", str(edf_path), "--out", str(out), "--datatype", "eeg"]) == 2
    assert "--datatype applies to a BIDS root only" in capsys.readouterr().err


def test_cli_docs_list_every_convert_and_info_option():
    """docs/cli.md documents every option of `neurofm convert` and `neurofm info`."""
    from pathlib import Path

    from neurofm.cli import build_parser

    docs = (Path(__file__).parents[1] / "docs" / "cli.md").read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command in ("convert", "info"):
        for action in sub.choices[command]._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert flag in docs, f"docs/cli.md does not mention {command} {flag}"
    assert "--atlas" in docs


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory):
    """The bundled sample BIDS tree (real EEG and BOLD, generated MEG and calcium)."""
    from neurofm.datasets import make_sample_data

    return make_sample_data(tmp_path_factory.mktemp("sample") / "sample")


def test_info_sample_lists_calcium(sample_root, capsys):
    assert main(["info", str(sample_root)]) == 0
    out = capsys.readouterr().out
    assert "58 recordings, 33 subjects" in out
    assert main(["info", str(sample_root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    ophys = [r for r in rows if r["datatype"] == "ophys"]
    assert [r["subject"] for r in ophys] == ["07", "08", "09"]
    assert {r["task"] for r in ophys} == {"spont"}
    assert all(r["path"].endswith("plane0") and r["derivatives"] == "suite2p" for r in ophys)
    assert [r["datatype"] for r in rows].count("func") == 42


def test_convert_sample_without_atlas_says_what_it_skipped(sample_root, tmp_path, capsys):
    import shutil

    from neurofm.datasets.sample import COHORT_SUBJECTS, MEG_EVOKED_SUBJECTS

    # the first nine subjects of the sample: the generated fMRI cohort and task MEG left out
    cohort = {f"sub-{s}" for s in COHORT_SUBJECTS + MEG_EVOKED_SUBJECTS}
    sample_root = shutil.copytree(sample_root, tmp_path / "sample",
                                  ignore=lambda d, names: [n for n in names if n in cohort])
    out = tmp_path / "store"
    assert main(["convert", str(sample_root), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    runs = sorted(str(p) for p in (sample_root / "derivatives" / "fmriprep").rglob(
        "*_desc-preproc_bold.nii.gz"))
    assert len(runs) == 2
    assert "2 BOLD run(s) NOT converted: no --atlas given" in err
    for run in runs:
        assert run in err
    store = open_store(out)
    assert sorted(store.ids) == sorted([
        "sub-01_task-rest_eeg", "sub-02_task-generator_eeg", "sub-03_task-generator_eeg",
        "sub-04_task-rest_meg", "sub-05_task-rest_meg", "sub-07_task-spont_plane0",
        "sub-08_task-spont_plane0", "sub-09_task-spont_plane0"])
    m = store.manifest.set_index("id")
    assert m.loc["sub-08_task-spont_plane0"].subject == "08"
    assert m.loc["sub-08_task-spont_plane0"].modality == "calcium"
    # --modality would be silently ignored for a BIDS root: refused
    assert main(["convert", str(sample_root), "--out", str(out), "--modality", "eeg"]) == 2
    assert "--modality does not apply to a BIDS root" in capsys.readouterr().err
    # leaving fMRI out on purpose: nothing skipped, exit 0, nothing converted twice
    assert main(["convert", str(sample_root), "--out", str(out), "--quiet",
                 "--datatype", "eeg", "meg", "ophys"]) == 0
    assert "8 already in the store" in capsys.readouterr().err
    # with the sample's atlas the BOLD runs come in; the rest is not converted again
    atlas = next((sample_root / "derivatives" / "atlas").rglob("*_dseg.nii.gz"))
    assert main(["convert", str(sample_root), "--out", str(out), "--quiet",
                 "--atlas", str(atlas), "--option",
                 'strategy=["wm_csf", "global_signal"]']) == 0
    err = capsys.readouterr().err
    assert "2 added" in err and "8 already in the store" in err
    m = open_store(out).manifest.set_index("id")
    assert len(m) == 10 and list(m.loc[["sub-06_task-rest_run-1_func",
                                        "sub-06_task-rest_run-2_func"], "modality"]) == \
        ["fmri", "fmri"]
