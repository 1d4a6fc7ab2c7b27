#!/usr/bin/env bash
# Create bench/peers/.venv-sparsify: a virtualenv of its own for EleutherAI's sparsify (PyPI eai-sparsify), whose
# saved SAEs and transcoders lmscope's loader is checked against.
#
# torch is installed first and alone (peer_venv.sh says why).
# eai-sparsify 1.3.3 (the latest release) pins none of its dependencies (torch, transformers, safetensors, ...
# unversioned), so transformers is pinned to lmscope's own version. Running it again with the same pins does
# nothing but print the versions.
#
#     bash bench/peers/setup_sparsify.sh         # PYTHON=python3.11 to choose the interpreter
set -euo pipefail

# shellcheck source=bench/peers/peer_venv.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/peer_venv.sh"
peer_venv sparsify "eai-sparsify==1.3.3 transformers==5.24.0" \
    "torch eai-sparsify transformers safetensors datasets numpy"
