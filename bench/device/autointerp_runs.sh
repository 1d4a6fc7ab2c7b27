#!/usr/bin/env bash
# The autointerp comparison of docs/autointerp.md (issue 27), on the dictionaries sae_runs.sh trains: the TopK k=32
# dictionary's features with the MLP neurons of the same layer and the planted controls, the tied L1 dictionary's
# features, and random / PCA / ICA directions. Each run resumes where it stopped (a unit is written when scored).
#
#   bench/device/autointerp_runs.sh SAES OUT [LAYER] [N]
#
# SAES: the folder of SAEs (sae_runs.sh's WORK/saes); OUT: where the three runs go (OUT/topk, OUT/tied,
# OUT/baselines); N: units of each dictionary kind (the baselines get N / 2). Environment: DEVICE (default cpu),
# MODEL (smollm2-135m). The page: python docs/make_interp_pages.py --autointerp OUT/topk=sae-topk
# OUT/tied=sae-tied OUT/baselines --autointerp-commands <this script's commands> --autointerp-notes <notes>
set -euo pipefail
SAES=$1 OUT=$2 LAYER=${3:-15} N=${4:-100}
DEVICE=${DEVICE:-cpu} MODEL=${MODEL:-smollm2-135m}
A="python3 -m lmscope -q --model $MODEL --device $DEVICE autointerp --corpus wiki+bbc+sotu+kjv --tokens 131072 --fit-tokens 32768"
TIED=$(ls -d "$SAES"/resid_post.$LAYER-tied-* | head -1)
mkdir -p "$OUT"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/commands.log"; }
log topk
$A --sae "$SAES/resid_post.$LAYER-topk-r8-k32" --kinds planted sae neurons --n-units "$N" --out "$OUT/topk"
log tied
$A --sae "$TIED" --kinds sae --n-units "$N" --out "$OUT/tied"
log baselines
$A --layer "$LAYER" --kinds random pca ica --n-units $((N / 2)) --out "$OUT/baselines"
log done
