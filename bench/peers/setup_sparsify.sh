#!/usr/bin/env bash
# Create bench/peers/.venv-sparsify: a virtualenv of its own for EleutherAI's sparsify (PyPI eai-sparsify), whose
# saved SAEs and transcoders lmscope's loader is checked against.
#
# torch is installed first and alone, pinned to the version whose CPU wheel is on this machine's local wheel
# mirror; installed later as a dependency, an unpinned torch would pull the CUDA build and gigabytes of nvidia-*.
# eai-sparsify 1.3.3 (the latest release) pins none of its dependencies (torch, transformers, safetensors, ...
# unversioned), so transformers is pinned to lmscope's own version. Running it again with the same pins does
# nothing but print the versions.
#
#     bash bench/peers/setup_sparsify.sh         # PYTHON=python3.11 to choose the interpreter
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv-sparsify"
TORCH_PIN="torch==2.13.0"
PINS="eai-sparsify==1.3.3 transformers==5.24.0"
STAMP="$VENV/.pins"
WANT="$TORCH_PIN $PINS"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    echo "setup_sparsify: $VENV already has $WANT" >&2
else
    [[ -x "$VENV/bin/python" ]] || "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet "$TORCH_PIN"
    # shellcheck disable=SC2086  # PINS is a list of requirement specifiers
    "$VENV/bin/python" -m pip install --quiet "$TORCH_PIN" $PINS
    echo "$WANT" > "$STAMP"
fi

"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import platform
names = ["torch", "eai-sparsify", "transformers", "safetensors", "datasets", "numpy"]
print("python " + platform.python_version())
print("\n".join(f"{n} {md.version(n)}" for n in names))
PY
