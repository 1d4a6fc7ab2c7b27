#!/usr/bin/env bash
# The SAE runs of docs/sae.md for one model: harvest once (cached), train the paper's tied model and TopK at
# several k from the cache (tied with and without resampling), evaluate each on held-out text, write feature pages.
#
#   bench/device/sae_runs.sh MODEL LAYER WORK [EPOCHS] [TOKENS]
#
# Environment: DEVICE (default cuda), DTYPE (float32), KS (TopK k values), EVAL_TOKENS, FEATURE_TOKENS,
# RESAMPLE_EVERY / DEAD_TOKENS (tied resampling), EVAL_DTYPE (the model's dtype in sae-eval / sae-features),
# NORESAMPLE=0 (skip the tied run without resampling), HARVEST_ARGS (extra harvest options, given to harvest and
# train alike, e.g. "--no-drop-first --sink-factor 0" to reuse a cache written before those defaults), TRAIN_ARGS
# (extra options of the sweep, e.g. "--autocast"). Every step resumes or is skipped when its output exists.
set -euo pipefail
MODEL=$1 LAYER=$2 WORK=$3 EPOCHS=${4:-1} TOKENS=${5:-5000000}
DEVICE=${DEVICE:-cuda} DTYPE=${DTYPE:-float32} KS=${KS:-16 32 64 128}
EVAL_TOKENS=${EVAL_TOKENS:-131072} FEATURE_TOKENS=${FEATURE_TOKENS:-262144}
RESAMPLE_EVERY=${RESAMPLE_EVERY:-250} DEAD_TOKENS=${DEAD_TOKENS:-500000}
CORPUS=${CORPUS:-wiki+bbc+sotu+kjv} EVAL_DTYPE=${EVAL_DTYPE:-$DTYPE} NORESAMPLE=${NORESAMPLE:-1}
HARVEST_ARGS=${HARVEST_ARGS:-} TRAIN_ARGS=${TRAIN_ARGS:-}
L="python3 -m lmscope -q --model $MODEL --device $DEVICE --dtype $DTYPE"
E="python3 -m lmscope -q --model $MODEL --device $DEVICE --dtype $EVAL_DTYPE"
SITE=resid_post.$LAYER
mkdir -p "$WORK"
log() { echo "[$(date +%T)] $*" | tee -a "$WORK/commands.log"; }

log harvest
$L sae-harvest --sites $SITE --corpus $CORPUS --tokens $TOKENS $HARVEST_ARGS --out "$WORK/acts"
log train sweep
$L sae-train --sites $SITE --corpus $CORPUS --tokens $TOKENS --epochs $EPOCHS --cache "$WORK/acts" $HARVEST_ARGS \
  --sweep-architecture tied topk --sweep-k $KS --resample-every $RESAMPLE_EVERY --dead-tokens $DEAD_TOKENS $TRAIN_ARGS \
  --out "$WORK/saes"
evaluate() {  # evaluate every SAE in a folder of SAEs
  for d in "$1"/$SITE-*; do
    name=$(basename "$1")-$(basename "$d")
    [ -f "$WORK/eval/$name/eval.json" ] && continue
    log eval "$name"
    $E sae-eval "$d" --corpus $CORPUS --tokens $EVAL_TOKENS --out "$WORK/eval/$name"
  done
}
pages() {
  [ -f "$WORK/pages/$(basename "$1")/index.html" ] && return
  log features "$(basename "$1")"
  $E sae-features "$1" --corpus $CORPUS --tokens $FEATURE_TOKENS --out "$WORK/pages/$(basename "$1")"
}
evaluate "$WORK/saes"
pages "$WORK/saes/$SITE-topk-r8-k32"
if [ "$NORESAMPLE" = 1 ]; then
log train tied without resampling
$L sae-train --sites $SITE --corpus $CORPUS --tokens $TOKENS --epochs $EPOCHS --cache "$WORK/acts" $HARVEST_ARGS \
  --architecture tied --dead-tokens $DEAD_TOKENS --out "$WORK/saes-noresample"
evaluate "$WORK/saes-noresample"
fi
pages "$(ls -d "$WORK"/saes/$SITE-tied-*)"
log done
