#!/usr/bin/env bash
# Create bench/peers/.venv-saelens: a virtualenv of its own for the SAELens peer benchmark (saelens_bench.py).
#
# torch is installed first and alone, pinned to the version whose CPU wheel is on this machine's local wheel
# mirror; installed later as a dependency, an unpinned torch would pull the CUDA build and gigabytes of nvidia-*.
# sae-lens 6.x requires transformer-lens < 4 (4.x dropped HookedTransformer); 3.9.0 is pinned explicitly, and
# transformers to lmscope's own version. Running it again with the same pins does nothing but print the versions.
#
#     bash bench/peers/setup_saelens.sh          # PYTHON=python3.11 to choose the interpreter
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv-saelens"
TORCH_PIN="torch==2.13.0"
PINS="sae-lens==6.54.12 transformer-lens==3.9.0 transformers==5.24.0"
STAMP="$VENV/.pins"
WANT="$TORCH_PIN $PINS"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    echo "setup_saelens: $VENV already has $WANT" >&2
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
names = ["torch", "sae-lens", "transformer-lens", "transformers", "datasets", "numpy"]
print("python " + platform.python_version())
print("\n".join(f"{n} {md.version(n)}" for n in names))
PY
