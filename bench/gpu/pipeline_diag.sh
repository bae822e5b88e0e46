#!/usr/bin/env bash
# What slows the coarsening when the prediction overlaps it (cab-bench-gpu --pipeline --pred=...):
# the same one-launch pipeline on a green partition, with each group's prediction replaced by less
# (graph only, the score GEMM only, a clock-counting kernel without memory traffic, nothing).
# On the GPU host from an unpacked bundle:  BUNDLE=bundle-g OUT=... bench/gpu/pipeline_diag.sh
set -uo pipefail
BUNDLE=${BUNDLE:-bundle-g}
OUT=${OUT:?}
N=${N:-131072}
SMS=${SMS:-56}
ITERS=${ITERS:-30}
EXTRA=${EXTRA:-}  # more cab-bench-gpu arguments for the pipelined lines, e.g. --pred_streams=2
log=$OUT/pipeline-diag.md
bench() {  # label, args...
  local label=$1; shift
  echo "### $label" | tee -a "$log"
  CAB_CUDA_COARSEN=bulk:8:2:6:e timeout 60 "$BUNDLE/bin/cab-bench-gpu" --n="$N" --blocks=128 --iters="$ITERS" "$@" $EXTRA 2>&1 \
    | grep -E '^\| [0-9]|SMs \(asked|other|timeline|rror|fail|expected' | tee -a "$log"
}
EXTRA= bench "sequential, coarsening alone on $SMS SMs" --claim=on --green_sms="$SMS"
for g in ${GROUPS_LIST:-8 16}; do
  for what in ${PREDS:-full graph scores spin:50 spin:100 none}; do
    bench "pipeline $g on $SMS SMs, prediction: $what $EXTRA" --pipeline="$g" --green_sms="$SMS" --one_launch --pred="$what"
  done
done
# Unequal groups (--head_groups), the full prediction.
for hgs in ${HEAD_GROUPS:-}; do
  bench "head groups $hgs on $SMS SMs, prediction: full $EXTRA" --head_groups="$hgs" --green_sms="$SMS" --one_launch
done
