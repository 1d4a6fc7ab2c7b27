#!/usr/bin/env bash
# Shared by the setup_*.sh scripts: peer_venv NAME "PINS" "PACKAGES TO PRINT"
#
# Creates bench/peers/.venv-NAME (idempotent: a stamp file records the pins). torch is installed first and alone,
# pinned to the version whose CPU wheel is on this machine's local wheel mirror; installed later as a dependency, an
# unpinned torch would pull the CUDA build and gigabytes of nvidia-*. Prints the versions installed.

peer_venv() {
    local name="$1" pins="$2" show="$3"
    local here venv torch_pin="torch==2.13.0"
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    venv="$here/.venv-$name"
    local want="$torch_pin $pins"
    if [[ -f "$venv/.pins" && "$(cat "$venv/.pins")" == "$want" ]]; then
        echo "setup_$name: $venv already has $want" >&2
    else
        [[ -x "$venv/bin/python" ]] || "${PYTHON:-python3}" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --upgrade pip
        "$venv/bin/python" -m pip install --quiet "$torch_pin"
        # shellcheck disable=SC2086  # pins is a list of requirement specifiers
        "$venv/bin/python" -m pip install --quiet "$torch_pin" $pins
        echo "$want" > "$venv/.pins"
    fi
    SHOW="$show" "$venv/bin/python" - <<'PY'
import importlib.metadata as md
import os
import platform
print("python " + platform.python_version())
print("\n".join(f"{n} {md.version(n)}" for n in os.environ["SHOW"].split()))
PY
}
