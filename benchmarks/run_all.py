"""Run every benchmark of ``benchmarks/`` at a quick size and write ``benchmarks/RESULTS.md``.

Each ``bench_*.py`` script runs in its own process with the argument set of :data:`QUICK`
(sized so that the whole roll-up takes minutes, not hours, on a 2-core machine; the scripts'
own defaults are the full sizes the docs pages quote). A script that needs a reference
checkout which is absent is skipped with a message; a script this file does not know runs
with its default arguments. The report holds, per script, the exact command, its wall time,
its exit status and everything it printed (the figures), plus the date, the machine (CPU
model, cores, memory, load average before and after) and the library versions.

Usage::

    python benchmarks/run_all.py                      # all scripts -> benchmarks/RESULTS.md
    python benchmarks/run_all.py --only bench_rsa bench_ntf --out /tmp/RESULTS.md
    python benchmarks/run_all.py --list               # the commands, without running them

``make bench`` runs the first line.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: Reference checkouts some scripts compare against (scratch directories, never part of
#: neurofm); override with the environment variable named here.
BRAINJEPA_REF = os.environ.get("NEUROFM_BRAINJEPA_REF", "/tmp/brainjepa_ref")
MEGGPT_REF = os.environ.get("NEUROFM_MEGGPT_REF", "/tmp/meggpt_ref")


@dataclass(frozen=True)
class Bench:
    """How the roll-up runs one script.

    Attributes
    ----------
    args : tuple of str
        Command-line arguments (the quick size).
    needs : tuple of str
        Paths that must exist (reference checkouts); the script is skipped when one is
        missing.
    note : str
        One line printed in the report (what the quick size is).
    """

    args: tuple = ()
    needs: tuple = ()
    note: str = ""


#: Quick argument sets, per script name (``bench_x`` for ``bench_x.py``).
QUICK: dict[str, Bench] = {
    "bench_windows": Bench(
        ("--hours", "0.25", "--n-windows", "1000"),
        note="15-minute recording (default 1 h), 1000 windows"),
    "bench_dataloader": Bench(
        ("--hours", "0.25", "--batches", "20"),
        note="15-minute recording (default 1 h), 20 batches of 64 (default 40)"),
    "bench_pipeline": Bench(
        ("--recordings", "2", "--minutes", "1"),
        note="2 recordings x 1 min (default 4 x 5 min)"),
    "bench_rsa": Bench(
        ("--n-cond", "200", "--n-chan", "2000", "--n-rdm", "30", "--n-boot", "200",
         "--sl-shape", "14x16x12", "--sl-cond", "40"),
        note="200 conditions x 2000 channels (default 1000 x 10000), 30 RDMs compared, "
             "200 bootstraps, 14x16x12 searchlight volume"),
    "bench_encoding": Bench(("--small", "--n-iter", "5"),
                            note="600 x 200 x 2000 targets x 21 alphas (default 3000 x 1000 x "
                                 "20000), 5 banded-ridge candidates (default 20 with --small)"),
    "bench_entropy": Bench(("--sizes", "1000", "2000"),
                           note="N = 1000, 2000 (default 1000, 2000, 4000)"),
    "bench_ntf": Bench(("--small",), note="150 x 10 x 1225 tensor (default 600 x 20 x 4950)"),
    "bench_tokenizers": Bench(("--epochs", "8"),
                              note="the learned tokenizer trained 8 epochs (default 22)"),
    "bench_pretrain": Bench(
        ("--reference", BRAINJEPA_REF, "--sizes", "small", "--batch", "1", "--steps", "1",
         "--warmup", "1"),
        needs=(BRAINJEPA_REF,),
        note="ViT-small only (default small and base), batch 1 (default 2), 1 timed step "
             "(default 3); needs a checkout of Eric-LRL/Brain-JEPA"),
    "bench_meggpt": Bench(
        ("--reference", MEGGPT_REF, "--batch", "2", "--steps", "3", "--gen-steps", "32",
         "--gen-repeats", "1"),
        needs=(MEGGPT_REF,),
        note="training batch 2 (default 8), 3 timed steps (default 6), 32 generated steps, "
             "1 generation repeat (default 2); needs a checkout of OHBA-analysis/MEG-GPT"),
}


@dataclass
class Result:
    """One script's run."""

    name: str
    command: list
    note: str
    status: str = "not run"       # "ok", "failed (exit N)", "timed out", "skipped: why"
    seconds: float = 0.0
    stdout: str = ""
    stderr_tail: str = ""
    extra: dict = field(default_factory=dict)


def discover(bench_dir):
    """The benchmark scripts of ``bench_dir`` (``bench_*.py``), sorted by name."""
    return sorted(Path(bench_dir).glob("bench_*.py"))


def plan(script, python=sys.executable):
    """The :class:`Bench` and the command line for one script."""
    name = Path(script).stem
    bench = QUICK.get(name, Bench(note="no quick argument set known: default arguments"))
    command = [python, str(script), *bench.args]
    return bench, command


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _clean(text):
    """Drop ANSI colours and progress-bar redraws (keep the last state of a ``\\r`` line)."""
    text = _ANSI.sub("", text.replace("\r\n", "\n"))
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n")).strip()


def run_one(script, timeout, python=sys.executable, cwd=ROOT):
    """Run one script at its quick size; return a :class:`Result`."""
    bench, command = plan(script, python)
    res = Result(Path(script).stem, command, bench.note)
    missing = [p for p in bench.needs if not Path(p).exists()]
    if missing:
        res.status = f"skipped: reference checkout {', '.join(missing)} not found"
        print(f"[bench] {res.name}: {res.status}", flush=True)
        return res
    print(f"[bench] {res.name}: {shlex.join(_display(command, cwd))}", flush=True)
    res.extra = {"started": f"{_dt.datetime.now(_dt.UTC):%H:%M} UTC", "load": _load()}
    env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
    t0 = time.perf_counter()
    # bytes, not text=True: universal newlines would turn progress-bar \r into lines. Each
    # script gets its own process group, so that a timeout also ends the worker processes
    # it started (bench_pretrain, bench_rsa run their measurements in subprocesses).
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _end_group(proc)
        out, err = proc.communicate()
        res.seconds = time.perf_counter() - t0
        res.status = f"timed out after {timeout:.0f} s"
        res.stdout = _clean(_text(out))
        res.stderr_tail = _tail(_clean(_text(err)))
    else:
        res.seconds = time.perf_counter() - t0
        res.status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        res.stdout = _clean(_text(out))
        if proc.returncode != 0:
            res.stderr_tail = _tail(_clean(_text(err)))
    print(f"[bench] {res.name}: {res.status} in {res.seconds:.0f} s", flush=True)
    return res


def _end_group(proc, grace=5.0):
    """SIGTERM the process group of ``proc`` (the script and its workers), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; give its workers the same grace, then kill what is left
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def _text(data):
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _tail(text, n=30):
    return "\n".join(text.splitlines()[-n:])


def _display(command, cwd=ROOT):
    """The command as a user types it from the repository root."""
    out = []
    for i, part in enumerate(command):
        if i == 0:
            out.append("python")
            continue
        try:
            out.append(str(Path(part).relative_to(cwd)))
        except ValueError:
            out.append(part)
    return out


def machine():
    """CPU model, core counts, memory and versions, as ``(label, value)`` pairs."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    except OSError:
        pass
    versions = [f"Python {platform.python_version()}"]
    for dist in ("numpy", "scipy", "torch"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    rows = [("CPU", cpu), ("cores", f"{usable} usable ({os.cpu_count()} online)")]
    if mem:
        rows.append(("memory", mem))
    rows += [("OS", f"{platform.system()} {platform.release()}"), ("versions", ", ".join(versions))]
    return rows


def _commit(cwd=ROOT):
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, text=True,
                             capture_output=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _load():
    try:
        return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "unknown"


def render(results, started, load_before, load_after, total_s, cwd=ROOT):
    """The markdown report."""
    lines = [
        "# Benchmark results",
        "",
        "Written by `python benchmarks/run_all.py` (`make bench`): every script of "
        "`benchmarks/` at the quick size listed below (the scripts' defaults are the full "
        "sizes quoted on the docs pages). Timings on a shared machine vary from run to run; "
        "each script measures neurofm and its peer in the same run, so read the ratios.",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC",
        f"- commit: {_commit(cwd)}",
    ]
    lines += [f"- {k}: {v}" for k, v in machine()]
    lines += [
        f"- load average (1, 5, 15 min) before: {load_before}; after: {load_after}",
        f"- total wall time: {total_s:.0f} s",
        "",
        "| script | status | wall time (s) | quick size |",
        "|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| [{r.name}](#{r.name}) | {r.status} | "
                     f"{r.seconds:.0f} | {r.note} |")
    for r in results:
        lines += ["", f"## {r.name}", "", "```bash", shlex.join(_display(r.command, cwd)), "```",
                  "", f"{r.status}" + (f", {r.seconds:.1f} s" if r.seconds else "")
                  + (f" (started {r.extra['started']}, load average {r.extra['load']})"
                     if r.extra else "") + ".", ""]
        if r.stdout:
            lines += ["```text", r.stdout, "```"]
        if r.stderr_tail:
            lines += ["", "Last lines of stderr:", "", "```text", r.stderr_tail, "```"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="script names (bench_rsa or bench_rsa.py); default all")
    p.add_argument("--out", default=str(HERE / "RESULTS.md"), help="report path")
    p.add_argument("--timeout", type=float, default=1200, help="seconds per script")
    p.add_argument("--bench-dir", default=str(HERE), help=argparse.SUPPRESS)
    p.add_argument("--list", action="store_true", help="print the commands and exit")
    args = p.parse_args(argv)

    scripts = discover(args.bench_dir)
    if args.only:
        wanted = {Path(n).stem for n in args.only}
        unknown = wanted - {s.stem for s in scripts}
        if unknown:
            p.error(f"--only: no script {sorted(unknown)} in {args.bench_dir}; "
                    f"found {[s.stem for s in scripts]}")
        scripts = [s for s in scripts if s.stem in wanted]
    if args.list:
        for s in scripts:
            bench, command = plan(s)
            print(shlex.join(_display(command)), f"  # {bench.note}")
        return 0

    started = _dt.datetime.now(_dt.UTC)
    load_before = _load()
    t0 = time.perf_counter()
    results = [run_one(s, args.timeout) for s in scripts]
    total = time.perf_counter() - t0
    report = render(results, started, load_before, _load(), total)
    Path(args.out).write_text(report, encoding="utf-8")
    print(f"[bench] wrote {args.out} ({total:.0f} s)", flush=True)
    failed = [r.name for r in results if r.status.startswith(("failed", "timed out"))]
    if failed:
        print(f"[bench] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
