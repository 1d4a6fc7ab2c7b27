#!/usr/bin/env python3
"""Set up a local virtual environment (.venv) and run lmscope's main job, its tests or its benchmarks.

    python3 dev.py demo     # set up, then the logit lens of the default prompt -> out/demo/{lens.png,report.html}
    python3 dev.py test     # set up, then ruff and the whole test suite (slow real-model tests included)
    python3 dev.py bench    # set up, then the benchmark scripts in bench/ (tables in bench/results/)

Needs nothing but Python >= 3.10 and access to PyPI. torch is pinned to 2.13.0 (CPU); the set-up is redone only
when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".lmscope-installed"
TORCH = "torch==2.13.0"


def run(*cmd, env: dict | None = None) -> None:
    """Run a command from the repository root; stop with its exit code if it fails."""
    print("+", " ".join(map(str, cmd)), flush=True)
    code = subprocess.call([str(c) for c in cmd], cwd=ROOT, env={**os.environ, **(env or {})})
    if code != 0:
        sys.exit(code)


def setup() -> None:
    """Create .venv and install lmscope (editable) with its dev tools, unless already done for this pyproject."""
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.is_file() and STAMP.read_text() == wanted and PY.exists():
        return
    if not PY.exists():
        print(f"+ creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    run(PY, "-m", "pip", "install", "-q", "--upgrade", "pip")
    run(PY, "-m", "pip", "install", "-q", TORCH)  # first and alone, so pip never picks another build
    run(PY, "-m", "pip", "install", "-q", "-e", ".[dev]")
    STAMP.write_text(wanted)


QUIET_CPU = {"OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"}


def demo() -> None:
    """The main job: logit lens of the default prompt on the default (bundled) model."""
    run(BIN / "lmscope", "lens", "The capital of France is", "--out", "out/demo", env=QUIET_CPU)


def test() -> None:
    """Lint, then every test: the fast tiers (tests/unit, families, methods, cli), then the real models (tests/real)."""
    run(BIN / "ruff", "check", "lmscope", "tests", "bench", "docs", "dev.py")
    run(PY, "-m", "pytest", "-q", "-m", "not slow", env=QUIET_CPU)
    run(PY, "-m", "pytest", "-q", "-m", "slow", env=QUIET_CPU)


def bench() -> None:
    """Every benchmark script in bench/."""
    for script in sorted((ROOT / "bench").glob("bench_*.py")):
        run(PY, script, env=QUIET_CPU)


COMMANDS = {"setup": lambda: None, "demo": demo, "test": test, "bench": bench}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python3 dev.py {{{'|'.join(COMMANDS)}}}")
    setup()
    COMMANDS[sys.argv[1]]()
