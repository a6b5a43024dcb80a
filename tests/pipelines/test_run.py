"""Running the workflow: the out_dir lock, stale Snakemake locks, lint, the installed wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from pipeline_helpers import REPO, example_config, write_config

from neurofm.errors import NeurofmError
from neurofm.pipelines import (
    LOCK_NAME,
    clear_stale_snakemake_locks,
    default_snakefile,
    run_pipeline,
)


def test_default_snakefile_is_the_checkouts_workflow():
    assert default_snakefile() == REPO / "pipelines" / "Snakefile"


def test_busy_out_dir_is_refused(sample_root, tmp_path, monkeypatch):
    from filelock import FileLock

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    cfg = write_config(example_config("eeg", sample_root, out), tmp_path / "eeg.yaml")
    with FileLock(out / LOCK_NAME), pytest.raises(NeurofmError,
                                                  match="another neurofm preprocess run"):
        run_pipeline(cfg)
    assert not (tmp_path / ".snakemake").exists()   # refused before Snakemake started


def test_clear_stale_snakemake_locks_only_touches_out_dir(tmp_path):
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    ours = [locks / "0.input.lock", locks / "0.output.lock"]
    ours[0].write_text("/data/sub-01.edf\nout/work/eeg/sub-01_desc-raw.zarr\n")
    ours[1].write_text(f"{tmp_path}/out/store/x\n")         # absolute path inside out_dir
    theirs = [locks / "1.input.lock", locks / "1.output.lock"]
    theirs[0].write_text("/data/sub-01.edf\n")
    theirs[1].write_text("other_out/work/x.zarr\nout2/y\n")
    removed = clear_stale_snakemake_locks(tmp_path, "out")
    assert sorted(removed) == sorted(ours)
    assert sorted(locks.iterdir()) == sorted(theirs)
    assert clear_stale_snakemake_locks(tmp_path / "nowhere", "out") == []


def test_snakemake_lint_passes(sample_root, tmp_path):
    cfg = write_config(example_config("fmri", sample_root, tmp_path / "out"),
                       tmp_path / "fmri.yaml")
    res = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile",
                          str(default_snakefile()), "--configfile", str(cfg), "--lint"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text
    assert "Lints for" not in text
    assert "Congratulations, your workflow is in a good condition!" in text


def test_installed_wheel_runs_the_workflow(sample_root, tmp_path):
    """Build the wheel, install it into a fresh venv and dry-run from outside the checkout
    (about 13 s)."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", str(REPO), "-w", str(wheels)], check=True,
                   timeout=300)
    (wheel,) = wheels.glob("neurofm-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"], check=True,
                             capture_output=True, text=True).stdout.strip()
    # the dependencies come from this environment; neurofm itself only from the wheel
    Path(purelib, "_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cfg = write_config(example_config("eeg", sample_root, elsewhere / "out"),
                       elsewhere / "eeg.yaml")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run([str(python), "-c", "import neurofm.pipelines as p; "
                            "print(p.default_snakefile())"], cwd=elsewhere, env=env,
                           check=True, capture_output=True, text=True).stdout.strip()
    assert Path(where) == Path(purelib) / "neurofm" / "pipelines" / "workflow" / "Snakefile"
    res = subprocess.run([str(venv / "bin" / "neurofm"), "preprocess", str(cfg), "--dry-run"],
                         cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text
    assert "eeg_preprocess        3" in text and "store_manifest        1" in text
    assert not (elsewhere / "out").exists()
