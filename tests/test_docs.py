"""The fenced code blocks of README.md and docs/*.md run as written.

Every ```python block and every shell block (```bash, ```sh, ```shell, ```console) is
executed from a fresh directory laid out like the repository root after
``neurofm sample-data`` (``datasets/sample``, ``pipelines/``, ``configs/``): the python
blocks of one page run in order in one namespace (like a notebook), the shell blocks with
bash, with the test environment's ``neurofm`` first on PATH.

A block that cannot run offline or that must not run here (``make test``, ``pip install``,
SLURM, synopses with placeholders) carries a marker on the line just above its fence::

    <!-- skip-test: why it cannot run -->

and a block that runs a whole pipeline carries ``<!-- test: slow -->`` (it then runs only
with ``-m slow``). Any other block that fails makes the test fail. Shell blocks may only
call ``neurofm``: anything else must be marked.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON_LANGS = {"python", "py", "python3"}
SHELL_LANGS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
SKIP = re.compile(r"^\s*<!--\s*skip-test\s*(?::\s*(?P<why>.*?))?\s*-->\s*$")
SLOW = re.compile(r"^\s*<!--\s*test:\s*slow\s*-->\s*$")
#: Each shell block gets this long (a full pipeline run is marked slow and gets more).
SHELL_TIMEOUT = 120
SLOW_SHELL_TIMEOUT = 900


@dataclass
class Block:
    path: Path
    line: int          # line of the opening fence (1-based)
    lang: str
    code: str
    skip: str | None   # the reason, when marked skip-test
    slow: bool

    @property
    def where(self):
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def runnable(self):
        return self.lang in PYTHON_LANGS | SHELL_LANGS


def extract_blocks(path):
    """Fenced code blocks of a markdown file with their markers."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m["fence"], len(m["indent"])
        start = i
        body = []
        i += 1
        while i < len(lines):
            close = FENCE.match(lines[i])
            if close and close["fence"][0] == fence[0] and len(close["fence"]) >= len(fence) \
                    and not close["info"]:
                break
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        skip, slow = None, False
        j = start - 1
        while j >= 0 and lines[j].strip().startswith("<!--"):  # markers just above
            if (s := SKIP.match(lines[j])) is not None:
                skip = s["why"] or ""
            elif SLOW.match(lines[j]):
                slow = True
            j -= 1
        blocks.append(Block(Path(path), start + 1, m["info"].lower(), "\n".join(body) + "\n",
                            skip, slow))
        i += 1
    return blocks


def shell_commands(block):
    """The commands of a shell block: continuation lines joined, comments and blank lines
    dropped; for ``console`` blocks only the ``$ `` lines (output lines are not run)."""
    text = block.code
    if block.lang == "console":
        text = "\n".join(line.lstrip()[2:] for line in text.splitlines()
                         if line.lstrip().startswith("$ "))
    text = re.sub(r"\s*\\\n\s*", " ", text)
    commands = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        commands.append(line)
    return commands


def _all_blocks():
    return [b for page in PAGES for b in extract_blocks(page)]


def _pages_with_runnable_blocks(slow):
    out = []
    for page in PAGES:
        blocks = [b for b in extract_blocks(page) if b.runnable and b.skip is None]
        if any(b.slow == slow for b in blocks):
            out.append(page.relative_to(ROOT).as_posix())
    return out


# --------------------------------------------------------------------------------------
# static checks: every block is runnable or explicitly marked


def test_pages_have_blocks():
    blocks = _all_blocks()
    assert len(PAGES) >= 10
    assert sum(b.runnable for b in blocks) >= 20


def test_markers_have_reasons():
    missing = [b.where for b in _all_blocks() if b.skip is not None and not b.skip.strip()]
    assert not missing, f"skip-test markers without a reason: {missing}"


def test_shell_blocks_only_call_neurofm():
    offenders = []
    for b in _all_blocks():
        if b.lang not in SHELL_LANGS or b.skip is not None:
            continue
        for cmd in shell_commands(b):
            if not cmd.startswith("neurofm "):
                offenders.append(f"{b.where}: {cmd!r}")
    assert not offenders, ("shell blocks that run something other than neurofm must be "
                           f"marked <!-- skip-test: why -->: {offenders}")


def test_python_blocks_compile():
    for b in _all_blocks():
        if b.lang in PYTHON_LANGS:
            compile(b.code, b.where, "exec")


def test_readme_keeps_two_setup_commands():
    blocks = extract_blocks(ROOT / "README.md")
    make = [cmd for b in blocks if b.lang in SHELL_LANGS
            for cmd in shell_commands(b) if cmd.startswith("make ")]
    assert [shlex.split(c)[:2] for c in make] == [["make", "demo"], ["make", "test"]]


def test_extractor_reads_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n<!-- skip-test: needs SLURM -->\n```bash\nsbatch x\n```\n\n"
                    "<!-- test: slow -->\n```sh\nneurofm preprocess a.yaml \\\n  --cores 2\n"
                    "```\n\n```python\nx = 1\n```\n\n```yaml\na: 1\n```\n")
    b = extract_blocks(page)
    assert [(x.lang, x.skip, x.slow, x.line) for x in b] == [
        ("bash", "needs SLURM", False, 4), ("sh", None, True, 9),
        ("python", None, False, 14), ("yaml", None, False, 18)]
    assert shell_commands(b[1]) == ["neurofm preprocess a.yaml --cores 2"]
    assert b[2].code == "x = 1\n"


# --------------------------------------------------------------------------------------
# running the blocks


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory):
    """``neurofm sample-data`` built once per session."""
    from neurofm.datasets import make_sample_data

    out = tmp_path_factory.mktemp("docs_sample") / "sample"
    make_sample_data(out, verbose="error")
    return out


def _workdir(tmp_path, sample_root):
    """A directory that looks like the repository root after ``neurofm sample-data``."""
    (tmp_path / "datasets").mkdir()
    shutil.copytree(sample_root, tmp_path / "datasets" / "sample", symlinks=True)
    for name in ("pipelines", "configs"):  # read-only parts of the checkout the docs use
        if (ROOT / name).is_dir():
            (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    return tmp_path


def _env():
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MPLBACKEND"] = "Agg"
    env.setdefault("NEUROFM_LOGGING_LEVEL", "ERROR")
    return env


def _run_shell(block, cwd, timeout):
    script = "\n".join(shell_commands(block))
    try:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=_env(),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.where}: shell block did not finish in {timeout} s")
    if proc.returncode:
        pytest.fail(f"{block.where}: shell block exited {proc.returncode}\n--- script\n"
                    f"{script}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n"
                    f"{proc.stderr[-3000:]}")


def _run_page(page, tmp_path, sample_root, monkeypatch, *, slow):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cwd = _workdir(tmp_path, sample_root)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__docs__"}
    ran = 0
    try:
        for block in extract_blocks(ROOT / page):
            if not block.runnable or block.skip is not None or (block.slow and not slow):
                continue
            ran += 1
            if block.lang in SHELL_LANGS:
                _run_shell(block, cwd, SLOW_SHELL_TIMEOUT if block.slow else SHELL_TIMEOUT)
                continue
            try:
                exec(compile(block.code, block.where, "exec"), namespace)
            except Exception as err:  # noqa: BLE001 - any error of a doc block fails the test
                pytest.fail(f"{block.where}: python block raised {type(err).__name__}: {err}")
    finally:
        plt.close("all")
    assert ran


@pytest.mark.parametrize("page", _pages_with_runnable_blocks(slow=False))
def test_doc_blocks_run(page, tmp_path, sample_root, monkeypatch):
    _run_page(page, tmp_path, sample_root, monkeypatch, slow=False)


@pytest.mark.slow
@pytest.mark.parametrize("page", _pages_with_runnable_blocks(slow=True))
def test_doc_blocks_run_including_pipelines(page, tmp_path, sample_root, monkeypatch):
    _run_page(page, tmp_path, sample_root, monkeypatch, slow=True)
