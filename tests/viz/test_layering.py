"""viz uses only the public API of neurofm.analysis (issue 8, "the house")."""

from __future__ import annotations

import ast
from pathlib import Path

import neurofm.viz

VIZ = Path(neurofm.viz.__file__).parent


def _absolute(module, level, package):
    """Absolute module name of ``from <level dots><module> import ...`` inside ``package``."""
    if level == 0:
        return module or ""
    parts = package.split(".")
    base = parts[: len(parts) - level + 1]
    return ".".join(base + ([module] if module else []))


def _analysis_imports(path):
    """(module, imported name) of every import of neurofm.analysis in one file, plus the
    attribute chains ``analysis._x`` used in the code."""
    package = "neurofm.viz"
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names
                      if alias.name.startswith("neurofm.analysis")]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node.module, node.level, package)
            if module == "neurofm":
                found += [(f"neurofm.{a.name}", None) for a in node.names
                          if a.name == "analysis"]
            elif module.startswith("neurofm.analysis"):
                found += [(module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and isinstance(node.value, (ast.Name, ast.Attribute)) \
                and ast.unparse(node.value).split(".")[-1] in ("analysis", "rsa", "trsa"):
            found.append((f"{ast.unparse(node.value)}.{node.attr}", None))
    return found


def _private(module, name):
    parts = module.split(".") + ([name] if name else [])
    return [p for p in parts if p.startswith("_")]


def test_viz_imports_only_public_analysis_names():
    files = sorted(VIZ.rglob("*.py"))
    assert files
    offenders = []
    seen = []
    for path in files:
        for module, name in _analysis_imports(path):
            seen.append((path.name, module, name))
            if _private(module, name):
                offenders.append(f"{path.name}: {module}{'.' + name if name else ''}")
    assert not offenders, f"viz imports private analysis code: {offenders}"
    assert any(m == "neurofm.analysis.rsa" for _, m, _ in seen)  # the check sees imports


def test_checker_flags_private_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from ..analysis._rdm_utils import as_rdm_stack\n"
                   "from neurofm.analysis.rsa import _finish_square\n"
                   "import neurofm.analysis._searchlight\n"
                   "from .. import analysis\nx = analysis._rdm_calc\n")
    found = _analysis_imports(bad)
    flagged = [(m, n) for m, n in found if _private(m, n)]
    assert ("neurofm.analysis._rdm_utils", "as_rdm_stack") in flagged
    assert ("neurofm.analysis.rsa", "_finish_square") in flagged
    assert ("neurofm.analysis._searchlight", None) in flagged
    assert ("analysis._rdm_calc", None) in flagged
