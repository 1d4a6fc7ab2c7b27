"""The rules of lmscope's layout, checked inside the repository (docs/architecture.md draws them).

- the foundation (top-level plumbing: errors, config, io, store, runs, ...) imports no model, data, method, viz,
  web or command line; the model layer imports none of data, methods, viz, web, cli;
- method families never import each other; ``viz`` reads results and never imports a method;
- ``ops`` (the operations) sits on the methods and viz; ``web`` and ``cli`` are on top: nothing below imports them;
- every package's docstring names each of its modules (and no module it lacks), and no source file points to a
  specification outside the repository.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "lmscope"
FACADE = {"__init__", "__main__", "autointerp", "graphs", "lens", "neurons", "patching", "projector", "rome", "sae",
          "trace"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """Every lmscope module ``path`` imports (inside functions too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("lmscope")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmscope"):
            submodules = {f"{node.module}.{a.name}" for a in node.names} & set(MODULES)
            out |= submodules or {node.module}  # `from lmscope import config` is lmscope.config
    return out


EDGES = {m: {t for t in imports(p) if t in MODULES or t.rsplit(".", 1)[0] in MODULES} for m, p in MODULES.items()}


def part(name: str) -> str:
    """The layer of a module: foundation, model, data, methods, viz, web, cli, or facade (the public API)."""
    pieces = name.split(".")
    if len(pieces) == 1:
        return "facade"
    if len(pieces) == 2 and not (PKG / pieces[1]).is_dir():
        return "facade" if pieces[1] in FACADE else "foundation"
    return pieces[1]


def family(name: str) -> str | None:
    pieces = name.split(".")
    return pieces[2] if len(pieces) > 2 and pieces[1] == "methods" else None


def violations(rule) -> list[str]:
    return sorted(f"{m} imports {t}" for m, ts in EDGES.items() for t in ts if rule(m, t))


FORBIDDEN = {"foundation": {"model", "data", "methods", "viz", "ops", "web", "cli", "facade"},
             "model": {"data", "methods", "viz", "ops", "web", "cli", "facade"},
             "data": {"methods", "viz", "ops", "web", "cli", "facade"},
             "methods": {"viz", "ops", "web", "cli", "facade"},
             "viz": {"methods", "ops", "web", "cli", "facade"},
             "ops": {"web", "cli", "facade"},  # the operations both the command line and the workbench run
             "web": {"cli", "facade"}}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_downward_only(layer):
    bad = violations(lambda m, t: part(m) == layer and part(t) in FORBIDDEN[layer])
    assert not bad, bad


def test_method_families_never_import_each_other():
    bad = violations(lambda m, t: family(m) and family(t) and family(m) != family(t))
    assert not bad, bad


def test_the_rules_find_a_violation_when_there_is_one():
    EDGES["lmscope.methods.trace.fake"] = {"lmscope.methods.rome.edit", "lmscope.viz.report"}
    try:
        assert violations(lambda m, t: family(m) and family(t) and family(m) != family(t))
        assert violations(lambda m, t: part(m) == "methods" and part(t) in FORBIDDEN["methods"])
    finally:
        del EDGES["lmscope.methods.trace.fake"]


def packages() -> list[Path]:
    return sorted(p.parent for p in PKG.rglob("__init__.py") if p.parent != PKG)


@pytest.mark.parametrize("folder", packages(), ids=lambda p: p.relative_to(PKG).as_posix())
def test_package_docstrings_name_their_modules(folder):
    doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
    modules = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
    named = set(re.findall(r"``(\w+)/?``", doc))
    missing = sorted(m for m in modules if m not in named and f"{m}.py" not in doc)
    assert not missing, f"{folder.relative_to(ROOT)}/__init__.py does not name {missing}"


def test_no_source_points_to_a_file_outside_the_repository():
    bad = [f"{p.relative_to(ROOT)}:{i}" for p in PKG.rglob("*.py")
           for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"SPEC(\.md| §)", line)]
    assert not bad, bad


ALL_MODULE_NAMES = ({p.stem for p in PKG.rglob("*.py")}
                    | {p.parent.name for p in PKG.rglob("__init__.py")}) - {"lmscope"}


@pytest.mark.parametrize("folder", packages(), ids=lambda p: p.relative_to(PKG).as_posix())
def test_package_docstrings_name_no_module_they_lack(folder):
    """A name that is a module elsewhere in lmscope but not in this package was moved away: the docstring is stale."""
    doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
    here = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if p.is_dir()}
    stale = sorted(n for n in set(re.findall(r"``(\w+)/?``", doc)) if n in ALL_MODULE_NAMES and n not in here)
    assert not stale, f"{folder.relative_to(ROOT)}/__init__.py names modules it does not have: {stale}"
