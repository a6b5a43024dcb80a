"""The documentation site (mkdocs.yml, docs/, docs/api/) builds offline in strict mode.

The fast checks validate the configuration statically (nav entries exist, every page is in
the nav, the API pages cover every public module, nothing fetches fonts or assets at build
or view time); ``test_site_builds_strict`` runs ``mkdocs build --strict`` into a temporary
directory and reads the generated pages.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONFIG = ROOT / "mkdocs.yml"


def _config():
    return yaml.safe_load(CONFIG.read_text(encoding="utf-8"))


def _nav_files(nav):
    """Every page path of a mkdocs nav (nested lists of {title: path | list})."""
    out = []
    for item in nav:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            for value in item.values():
                out.extend(_nav_files(value) if isinstance(value, list) else [value])
    return out


def _public_modules(package):
    """Public submodules of ``neurofm.<package>`` from the source tree."""
    base = ROOT / "neurofm" / package
    mods = set()
    for p in base.iterdir():
        if p.name.startswith("_"):
            continue
        if p.suffix == ".py":
            mods.add(p.stem)
        elif p.is_dir() and (p / "__init__.py").exists():
            mods.add(p.name)
    return mods


def _directives(page):
    return set(re.findall(r"^::: ([\w.]+)\s*$", page.read_text(encoding="utf-8"), re.M))


# ----------------------------------------------------------------------------- static


def test_nav_entries_exist():
    nav = _nav_files(_config()["nav"])
    missing = [p for p in nav if not (DOCS / p).is_file()]
    assert not missing, f"mkdocs.yml nav names pages that do not exist: {missing}"
    assert len(nav) == len(set(nav)), "a page is listed twice in the nav"
    # the sections the site promises: quick start, three doors, faithful vs default,
    # benchmarks and the API reference
    for page in ("quickstart.md", "pipelines.md", "training.md", "python-api.md",
                 "faithful.md", "benchmarks.md", "api/analysis.md"):
        assert page in nav


def test_every_page_is_in_the_nav():
    nav = set(_nav_files(_config()["nav"]))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages - nav == set(), f"pages missing from the mkdocs.yml nav: {pages - nav}"


def test_api_pages_cover_every_public_module():
    api = DOCS / "api"
    problems = []
    for page in sorted(api.glob("*.md")):
        if page.stem == "core":
            continue
        package = page.stem
        wanted = {f"neurofm.{package}"} | {f"neurofm.{package}.{m}"
                                           for m in _public_modules(package)}
        found = _directives(page)
        if wanted - found:
            problems.append(f"{page.name}: no section for {sorted(wanted - found)}")
        if found - wanted:
            problems.append(f"{page.name}: sections for missing modules {sorted(found - wanted)}")
    assert not problems, "; ".join(problems)
    documented = {p.stem for p in api.glob("*.md")}
    for package in ("io", "preprocessing", "store", "pipelines", "data", "tokenizers",
                    "models", "training", "evals", "analysis", "viz", "datasets"):
        assert package in documented
    assert {"neurofm.schema", "neurofm.errors", "neurofm.masking"} <= _directives(api / "core.md")


def test_config_builds_offline():
    cfg = _config()
    assert cfg["theme"]["name"] == "material"
    assert cfg["theme"]["font"] is False  # no Google Fonts download
    plugins = [p if isinstance(p, str) else next(iter(p)) for p in cfg["plugins"]]
    assert set(plugins) <= {"search", "mkdocstrings"}, plugins  # no social / privacy plugins
    for key in ("omitted_files", "unrecognized_links", "anchors"):
        assert cfg["validation"][key] == "warn"  # warnings fail --strict


# ----------------------------------------------------------------------------- build


def _mkdocs():
    exe = Path(sys.executable).with_name("mkdocs")
    if not exe.exists():
        pytest.importorskip("mkdocs")
        return [sys.executable, "-m", "mkdocs"]
    return [str(exe)]


def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocstrings_handlers.python")
    pytest.importorskip("material")
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([*_mkdocs(), "build", "--strict", "-f", str(CONFIG), "-d", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    for page in _nav_files(_config()["nav"]):
        assert (site / page).with_suffix(".html").is_file(), page

    # the API reference is generated from the docstrings: every public function of
    # neurofm.analysis.rsa has its own anchored entry with its docstring
    from neurofm.analysis import rsa

    html = (site / "api" / "analysis.html").read_text(encoding="utf-8")
    functions = [n for n in rsa.__all__ if callable(getattr(rsa, n))]
    assert {"compute_rdm", "compare_rdms", "noise_ceiling", "evaluate"} <= set(functions)
    for name in functions:
        assert f'id="neurofm.analysis.rsa.{name}"' in html, name
    first_line = rsa.compute_rdm.__doc__.strip().splitlines()[0]
    assert first_line.split()[0] in html
    assert 'id="neurofm.analysis.trsa.gt_transform"' in html

    faithful = (site / "faithful.html").read_text(encoding="utf-8")
    for switch in ("truncate_to_batch_min", "ema_schedule", "zero_is_edge", "reference=True"):
        assert switch in faithful

    quick = (site / "quickstart.html").read_text(encoding="utf-8")
    assert "make demo" in quick and "make test" in quick

    # the benchmarks page shows the figures of benchmarks/RESULTS.md (included at build time)
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    date = re.search(r"^- date: (.+)$", results, re.M).group(1).strip()
    assert date in (site / "benchmarks.html").read_text(encoding="utf-8")

    # nothing is fetched when the site is viewed: no web fonts, no CDN scripts
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "fonts.googleapis.com" not in text and "fonts.gstatic.com" not in text, page
