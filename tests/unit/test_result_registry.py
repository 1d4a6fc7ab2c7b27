"""Every result kind can be reloaded by ``lmscope.load_result`` after a bare ``import lmscope``."""

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


def test_every_result_kind_is_registered_by_import_lmscope():
    code = "import lmscope; from lmscope.io import Result; print(' '.join(sorted(Result.kinds)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    registered = set(out.split())
    classes = result_classes()
    assert classes and classes <= registered, f"not registered by `import lmscope`: {classes - registered}"
