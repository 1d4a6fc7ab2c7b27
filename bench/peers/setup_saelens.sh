#!/usr/bin/env bash
# Create bench/peers/.venv-saelens: a virtualenv of its own for the SAELens peer benchmark (saelens_bench.py).
#
# torch is installed first and alone (peer_venv.sh says why).
# sae-lens 6.x requires transformer-lens < 4 (4.x dropped HookedTransformer); 3.9.0 is pinned explicitly, and
# transformers to lmscope's own version. Running it again with the same pins does nothing but print the versions.
#
#     bash bench/peers/setup_saelens.sh          # PYTHON=python3.11 to choose the interpreter
set -euo pipefail

# shellcheck source=bench/peers/peer_venv.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/peer_venv.sh"
peer_venv saelens "sae-lens==6.54.12 transformer-lens==3.9.0 transformers==5.24.0" \
    "torch sae-lens transformer-lens transformers datasets numpy"
