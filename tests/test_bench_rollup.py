"""benchmarks/run_all.py (``make bench``): runs every benchmark script and writes RESULTS.md."""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_ALL = ROOT / "benchmarks" / "run_all.py"


def _load_run_all():
    spec = importlib.util.spec_from_file_location("run_all", RUN_ALL)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_every_script_has_a_quick_size_its_parser_accepts():
    run_all = _load_run_all()
    scripts = {p.stem: p for p in (ROOT / "benchmarks").glob("bench_*.py")}
    assert set(scripts) == set(run_all.QUICK), (
        "benchmarks/run_all.py QUICK must list every bench_*.py script (and no other): "
        f"missing {sorted(set(scripts) - set(run_all.QUICK))}, "
        f"stale {sorted(set(run_all.QUICK) - set(scripts))}")
    for name, bench in run_all.QUICK.items():
        source = scripts[name].read_text(encoding="utf-8")
        for flag in (a for a in bench.args if a.startswith("--")):
            assert re.search(rf"add_argument\(\s*[\"']{re.escape(flag)}[\"']", source), \
                f"{name}: run_all passes {flag}, which its argparse does not define"


FAKE_OK = """
import sys
print("neurofm  0.50 s   peer  1.50 s   ratio  3.00x")
print("args:", " ".join(sys.argv[1:]))
print("\\rprogress 10%\\rprogress 100%")
"""
FAKE_FAIL = """
import sys
print("started")
print("boom: the peer library is missing", file=sys.stderr)
sys.exit(3)
"""


def test_rollup_writes_results(tmp_path):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "bench_entropy.py").write_text(textwrap.dedent(FAKE_OK))   # a known name
    (bench / "bench_zeta.py").write_text(textwrap.dedent(FAKE_OK))      # an unknown one
    (bench / "bench_broken.py").write_text(textwrap.dedent(FAKE_FAIL))
    (bench / "bench_pretrain.py").write_text("raise SystemExit('must not run')\n")
    (bench / "helper.py").write_text("raise SystemExit('not a benchmark')\n")
    out = tmp_path / "RESULTS.md"
    env = dict(os.environ, NEUROFM_BRAINJEPA_REF=str(tmp_path / "no_reference_here"))
    proc = subprocess.run([sys.executable, str(RUN_ALL), "--bench-dir", str(bench),
                           "--out", str(out), "--timeout", "60"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stderr  # one script failed
    assert "bench_broken" in proc.stderr
    text = out.read_text(encoding="utf-8")

    # header: date, machine, load, versions
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    assert re.search(rf"^- date: {today} \d\d:\d\d UTC$", text, re.M)
    assert re.search(r"^- CPU: .+$", text, re.M)
    assert re.search(r"^- cores: \d+ usable", text, re.M)
    assert re.search(r"^- load average \(1, 5, 15 min\) before: [\d.]+ [\d.]+ [\d.]+; after: ",
                     text, re.M)
    assert "numpy " in text

    # per script: the exact command (quick arguments for a known script), status, output
    sections = dict(re.findall(r"^## (bench_\w+)\n(.*?)(?=^## |\Z)", text, re.M | re.S))
    assert sorted(sections) == ["bench_broken", "bench_entropy", "bench_pretrain", "bench_zeta"]
    ent = sections["bench_entropy"]
    assert f"python {bench / 'bench_entropy.py'} --sizes 1000 2000" in ent
    assert "ratio  3.00x" in ent and "args: --sizes 1000 2000" in ent
    assert "progress 100%" in ent and "progress 10%" not in ent  # \r redraws collapsed
    assert ent.count("ok, ") == 1
    assert "args: \n" in sections["bench_zeta"] or "args:\n" in sections["bench_zeta"]
    assert "failed (exit 3)" in sections["bench_broken"]
    assert "boom: the peer library is missing" in sections["bench_broken"]
    assert "skipped: reference checkout" in sections["bench_pretrain"]
    assert "must not run" not in text
    assert "helper" not in text
    # the summary table lists every script with its status
    assert re.search(r"^\| \[bench_broken\]\(#bench_broken\) \| failed \(exit 3\) \|", text, re.M)
    assert re.search(r"^\| \[bench_pretrain\]\(#bench_pretrain\) \| skipped", text, re.M)


def test_rollup_only_names_unknown_script(tmp_path):
    proc = subprocess.run([sys.executable, str(RUN_ALL), "--only", "bench_nope",
                           "--out", str(tmp_path / "R.md")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "bench_nope" in proc.stderr and "bench_windows" in proc.stderr
    assert not (tmp_path / "R.md").exists()


FAKE_HANG = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[0] + ".pid", "w").write(str(child.pid))
print("worker started", flush=True)
time.sleep(600)
"""


def test_rollup_timeout_ends_the_script_and_its_workers(tmp_path):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "bench_hang.py").write_text(textwrap.dedent(FAKE_HANG))
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run([sys.executable, str(RUN_ALL), "--bench-dir", str(bench),
                           "--out", str(out), "--timeout", "3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    text = out.read_text(encoding="utf-8")
    assert "| timed out after 3 s |" in text and "worker started" in text
    worker = int((bench / "bench_hang.py.pid").read_text())
    # the worker (a grandchild of run_all) was ended with the script, not left running
    for _ in range(50):
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, 9)
        raise AssertionError("the benchmark's worker process survived the timeout")
