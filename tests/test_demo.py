"""``neurofm demo``: the end-to-end run, its report, reuse of finished steps and resuming.

``test_demo_quick_end_to_end`` is the suite's single long test: it runs ``neurofm demo
--quick`` once, checks every section of the report (reading, command, real figures) and
then reruns it (every step reused, same sections, much faster).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from neurofm.demo._state import Steps, stable_hash
from neurofm.demo.report import SECTIONS
from neurofm.demo.steps import meggpt_available

#: Sections that carry figures, and how many at least.
FIGURES = {"qc": 4, "training": 1, "probe": 1, "rsa": 1, "encoding": 1, "dse": 1,
           "connectome": 1, "generation": 1}


def _sections(page):
    """section id -> its HTML."""
    found = re.findall(r"<section id='([a-z]+)'>(.*?)</section>", page, flags=re.S)
    return dict(found)


def _images(section_html):
    from PIL import Image

    out = []
    for b64 in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", section_html):
        img = Image.open(io.BytesIO(base64.b64decode(b64)))
        img.load()
        out.append(np.asarray(img.convert("RGB"), dtype=float))
    return out


def _reading(section_html):
    m = re.search(r"<b>Reading:</b>(.*?)</p>", section_html, flags=re.S)
    return m.group(1).strip() if m else ""


def _check_report(path):
    page = Path(path).read_text(encoding="utf-8")
    # one self-contained page: no scripts, no external resources or links
    assert "<script" not in page.lower()
    assert not re.search(r"(src|href)=['\"](https?:|//|file:)", page)
    assert not re.search(r"src=['\"](?!data:image/png;base64,)", page)
    sections = _sections(page)
    # the encoding section's features are MEG-GPT's: both need it
    expected = [sid for sid, _ in SECTIONS
                if sid not in ("generation", "encoding") or meggpt_available()]
    assert list(sections) == expected
    for sid, html in sections.items():
        reading = _reading(html)
        assert len(reading) > 30 and re.search(r"\d", reading), (sid, reading)
        assert "Reproduce:" in html and "<pre>" in html, sid
        imgs = _images(html)
        assert len(imgs) >= FIGURES.get(sid, 0), (sid, len(imgs))
        for img in imgs:
            assert img.shape[0] >= 150 and img.shape[1] >= 150, (sid, img.shape)
            assert img.std() > 5.0, (sid, img.std())       # not blank
    return page, sections


def test_demo_quick_end_to_end(tmp_path):
    from neurofm.cli import main

    out = tmp_path / "demo"
    t0 = time.perf_counter()
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    first = time.perf_counter() - t0
    _, sections = _check_report(out / "report.html")
    states = {p.stem: json.loads(p.read_text()) for p in (out / "state").glob("*.json")}
    meggpt = meggpt_available()
    n_steps = 14 if meggpt else 11
    assert {s["status"] for s in states.values()} == {"done"} and len(states) == n_steps

    # the readings are computed from the steps' numbers
    probe = states["probe"]["result"]
    best = max((r for r in probe["rows"] if r["kind"] == "encoder"), key=lambda r: r["mean"])
    assert f"{best['model']} ({probe['metric']} {best['mean']:.3f}" in _reading(
        sections["probe"])
    rsa = states["rsa"]["result"]["scores"]
    assert f"FC baseline rho = {rsa['FC baseline']['rsa']:.2f}" in _reading(sections["rsa"])
    con = states["connectome"]["result"]
    assert f"{100 * con['explained_variance']:.1f}%" in _reading(sections["connectome"])
    dse = states["dse"]["result"]["curves"]["brainjepa"]
    assert f"DSE {dse['dse'][0]:.2f}" in _reading(sections["dse"])
    # the commands are the user's doors
    assert "neurofm preprocess" in sections["qc"] and "neurofm fit -c" in sections["training"]
    assert "configs/demo/brainjepa.yaml" in sections["training"]
    assert "neurofm probe" in sections["probe"]
    # checkpoints at several epochs, training curves from the CSV logs
    jepa = states["train-brainjepa"]["result"]
    assert len(jepa["checkpoints"]) >= 3 and jepa["curves"]
    assert len(dse["dse"]) == len(jepa["checkpoints"])
    if meggpt:
        gen = states["generation"]["result"]["summary"]
        assert f"log-PSD correlation with the real recording {gen['log_psd_corr']:.2f}" in \
            _reading(sections["generation"])
        assert "configs/demo/meggpt.yaml" in states["train-meggpt"]["result"]["command"]
        # encoding: per channel the raw and noise-normalized scores, the ceiling and the
        # baseline; the reading is computed from them
        enc = states["encoding"]["result"]
        ceil = np.array([r["ceiling"] for r in enc["rows"]])
        assert f"median noise ceiling {np.median(ceil):.2f}" in _reading(sections["encoding"])
        for col in ("noise ceiling", "R² MEG-GPT", "R² / ceiling MEG-GPT", "R² raw baseline",
                    "R² / ceiling raw baseline"):
            assert f"<th>{col}</th>" in sections["encoding"]
        assert len(enc["rows"]) == 30 and enc["n_trials"] > 200 and enc["n_subjects"] == 4
        for r in enc["rows"]:
            for k in ("meggpt", "raw"):
                if r["ceiling"] >= enc["min_ceiling"]:
                    assert np.isclose(r[f"norm_{k}"], r[f"r2_{k}"] / r["ceiling"])
                else:
                    assert np.isnan(r[f"norm_{k}"])
        # the generated responses are linear mixtures: the baseline explains a real share
        assert 0.2 < enc["summary"]["raw"]["median_normalized"] < 1.0

    # a rerun reuses every step and writes the same sections, much faster
    t0 = time.perf_counter()
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    second = time.perf_counter() - t0
    _, sections2 = _check_report(out / "report.html")
    assert list(sections2) == list(sections)
    assert f"{n_steps} of {n_steps} steps were reused" in _reading(sections2["timings"])
    assert _reading(sections2["probe"]) == _reading(sections["probe"])
    assert second < first / 4, (first, second)


# --------------------------------------------------------------------------------------------
# steps: reuse, keys, outputs
# --------------------------------------------------------------------------------------------
def test_steps_reuse_and_rerun_on_changed_params(tmp_path):
    calls = []

    def work(value):
        def f():
            calls.append(value)
            (tmp_path / "out.txt").write_text(str(value))
            return {"value": value}
        return f

    steps = Steps(tmp_path)
    assert steps.run("a", work(1), params={"p": 1}, outputs=[tmp_path / "out.txt"]) == {
        "value": 1}
    steps.run("b", work(2), params={}, deps=["a"])
    assert calls == [1, 2]
    # same params: both reused (in a new session, as after a restart)
    steps = Steps(tmp_path)
    assert steps.run("a", work(1), params={"p": 1}, outputs=[tmp_path / "out.txt"]) == {
        "value": 1}
    steps.run("b", work(2), params={}, deps=["a"])
    assert calls == [1, 2] and steps.timings["a"]["reused"] and steps.timings["b"]["reused"]
    # a changed parameter reruns the step and, through its key, the steps after it
    steps = Steps(tmp_path)
    steps.run("a", work(3), params={"p": 2}, outputs=[tmp_path / "out.txt"])
    steps.run("b", work(4), params={}, deps=["a"])
    assert calls == [1, 2, 3, 4]
    # a missing output reruns the step
    (tmp_path / "out.txt").unlink()
    steps = Steps(tmp_path)
    steps.run("a", work(5), params={"p": 2}, outputs=[tmp_path / "out.txt"])
    assert calls[-1] == 5
    # force reruns everything
    Steps(tmp_path, force=True).run("a", work(6), params={"p": 2})
    assert calls[-1] == 6


def test_interrupted_step_is_not_reused(tmp_path):
    steps = Steps(tmp_path)

    def crash():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        steps.run("a", crash, params={})
    state = json.loads((tmp_path / "state" / "a.json").read_text())
    assert state["status"] == "running"
    assert Steps(tmp_path).run("a", lambda: {"ok": 1}, params={}) == {"ok": 1}
    assert json.loads((tmp_path / "state" / "a.json").read_text())["status"] == "done"


def test_stable_hash_ignores_key_order():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def test_pipeline_config_points_at_the_demo(tmp_path):
    from neurofm.demo.settings import settings
    from neurofm.demo.steps import pipeline_config

    sample = {"root": str(tmp_path / "sample"),
              "datatypes": [{"datatype": "eeg", "ids": ["01", "02", "03"]}]}
    cfg = pipeline_config(tmp_path, "eeg", sample, settings(quick=True))
    assert cfg["bids_root"] == str((tmp_path / "sample").resolve())
    assert cfg["out_dir"] == str((tmp_path / "pipelines" / "eeg").resolve())
    assert cfg["subjects"] == ["01"] and cfg["qc"]["max_seconds"] == 20.0
    full = pipeline_config(tmp_path, "eeg", sample, settings(quick=False))
    assert full["subjects"] == "all" and full["notch"] == cfg["notch"]


def test_report_readings_follow_the_numbers():
    from neurofm.demo.report import _connectome, _dse

    dse = {"curves": {"m": {"x": [0, 1, 2], "xlabel": "epoch", "dse": [3.5, 4.25, 5.0],
                            "dsmi": [0.1, 0.2, 0.3], "n_samples": 40}},
           "figure": None, "command": "x"}
    from unittest import mock

    with mock.patch("neurofm.demo.report._img", return_value=""):
        html = _dse(dse)
        assert "m DSE 3.50 -&gt; 5.00 bits (DSMI with the group 0.100 -&gt; 0.300)" in html
        con = {"rank": 3, "explained_variance": 0.4321, "n_animals": 2, "n_neurons": 24,
               "component_share": [0.2, 0.7, 0.1], "communities": [2, 3, 1], "top": 1,
               "figure": None, "command": "y"}
        html = _connectome(con)
    assert "explains 43.2%" in html and "carries 70%" in html and "into 3 communities" in html


# --------------------------------------------------------------------------------------------
# slow: a run killed in the middle resumes
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_killed_demo_resumes(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "neurofm.demo", "--quick", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    state = out / "state" / "train-brainjepa.json"
    deadline = time.time() + 900
    try:
        while time.time() < deadline and proc.poll() is None:
            if state.is_file() and json.loads(state.read_text()).get("status") == "running":
                time.sleep(3.0)   # inside training
                break
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert json.loads(state.read_text())["status"] == "running"
    done_before = {p.stem for p in (out / "state").glob("*.json")
                   if json.loads(p.read_text())["status"] == "done"}
    assert {"sample", "pipeline-fmri"} <= done_before
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "up to date" in res.stderr and "calcium pipeline] up to date" in res.stderr
    _check_report(out / "report.html")
