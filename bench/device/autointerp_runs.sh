#!/usr/bin/env bash
# The autointerp comparison of docs/autointerp.md (issue 27), on the dictionaries sae_runs.sh trains. Run 1: the TopK
# k=32 dictionary's features, the MLP neurons of the same layer, random / PCA / ICA directions and the planted
# controls, scored in turn across kinds (a run stopped part way already compares them); run 2: the tied L1
# dictionary's features. Each run resumes where it stopped (a unit is written when scored).
#
#   bench/device/autointerp_runs.sh SAES OUT [LAYER] [N]
#
# SAES: the folder of SAEs (sae_runs.sh's WORK/saes); OUT: where the runs go (OUT/topk, OUT/tied); N: units of each
# dictionary kind and of the neurons (the baselines get N / 2). Environment: DEVICE (default cpu), MODEL
# (smollm2-135m), PARALLEL=1 (a 2-core CPU: both runs at once, one thread each, so that the tied dictionary is not
# left to the end; when it is done run 1 goes on with every thread). The page: python docs/make_interp_pages.py --autointerp OUT/topk=sae-topk OUT/tied=sae-tied
# --autointerp-commands <this script's commands> --autointerp-notes <notes> (while the runs go on, it shows the units
# scored so far and says so; `lmscope autointerp report OUT/topk --out DIR` gives one run's so far).
set -euo pipefail
SAES=$1 OUT=$2 LAYER=${3:-15} N=${4:-100}
DEVICE=${DEVICE:-cpu} MODEL=${MODEL:-smollm2-135m}
A="python3 -m lmscope -q --model $MODEL --device $DEVICE autointerp --corpus wiki+bbc+sotu+kjv --tokens 131072 --fit-tokens 32768"
TIED=$(ls -d "$SAES"/resid_post.$LAYER-tied-* | head -1)
mkdir -p "$OUT"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/commands.log"; }
TOPK=(--sae "$SAES/resid_post.$LAYER-topk-r8-k32" --kinds sae neurons random pca ica planted --n-units "$N"
      --n-baseline-units $((N / 2)) --out "$OUT/topk")
TIEDRUN=(--sae "$TIED" --kinds sae --n-units "$N" --out "$OUT/tied")
if [ "${PARALLEL:-0}" = 1 ]; then
  log topk and tied at once, one thread each
  OMP_NUM_THREADS=1 $A "${TOPK[@]}" & first=$!
  OMP_NUM_THREADS=1 $A "${TIEDRUN[@]}"
  kill "$first" && wait "$first" || true  # it resumes below with every thread
else
  log tied
  $A "${TIEDRUN[@]}"
fi
log topk
$A "${TOPK[@]}"
log done
