"""Every result kind can be reloaded by ``lmscope.load_result`` after a bare ``import lmscope`` (which imports nothing
eagerly: ``known_kinds`` finds them)."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def result_classes() -> set[str]:
    names = set()
    for path in (ROOT / "lmscope").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(getattr(b, "id", None) == "Result" for b in node.bases):
                names.add(node.name)
    return names


def test_every_result_kind_is_known_after_import_lmscope():
    code = "import lmscope; from lmscope.io import known_kinds; print(' '.join(sorted(known_kinds())))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    registered = set(out.split())
    classes = result_classes()
    assert classes and classes <= registered, f"unknown to load_result: {classes - registered}"


def test_load_result_finds_a_kind_in_a_fresh_process(tmp_path):
    code = ("import torch; from lmscope.methods.trace import GROUPS, TraceDatasetResult;"
            f"TraceDatasetResult('m', 1, 1, list(GROUPS), {{'mlp': torch.zeros(len(GROUPS), 2)}}, [1] * len(GROUPS),"
            f" 0.1, 0.2, 0.1).save({str(tmp_path / 'r')!r})")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    load = f"import lmscope; print(type(lmscope.load_result({str(tmp_path / 'r')!r})).__name__)"
    out = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "TraceDatasetResult"
