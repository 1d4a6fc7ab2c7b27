#!/usr/bin/env bash
# Pack one model's SAE runs for the trip back (at most 8 files of 16 MB): everything but the activation cache,
# checkpoints and weights in NAME.tgz; the TopK k=32 SAE's weights in 15 MB parts (cat them back together).
#   bench/device/pack.sh WORK NAME OUTDIR
WORK=$1 NAME=$2 OUTDIR=$3
tar czf "$OUTDIR/$NAME.tgz" --exclude=acts --exclude=checkpoint --exclude=sae.safetensors \
  -C "$(dirname "$WORK")" "$(basename "$WORK")"
k32=$(ls -d "$WORK"/saes/*-topk-r8-k32 2>/dev/null | head -1)
[ -n "$k32" ] && [ -f "$k32/sae.safetensors" ] && split -b 15000000 "$k32/sae.safetensors" "$OUTDIR/$NAME-k32.part-" \
  && sha256sum "$k32/sae.safetensors" > "$OUTDIR/$NAME-k32.sha256"
ls -la "$OUTDIR"
