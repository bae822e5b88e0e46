#!/usr/bin/env bash
# Sweep of the coarsening / prediction overlap at 128k (cab-bench-gpu --pipeline, --coarsen_ctas,
# --claim, --green_sms, --one_launch, --pred_rest and the coarsening's CAB_CUDA_COARSEN plan), on the
# GPU host from an unpacked bundle (bench/results/gpu-pipeline-h100.md has the figures):
#   BUNDLE=bundle-g OUT=... bench/gpu/pipeline_sweep.sh
# Prints one table per configuration to $OUT/pipeline-sweep.md.
set -uo pipefail
BUNDLE=${BUNDLE:-bundle-g}
OUT=${OUT:?}
N=${N:-131072}
BLOCKS=${BLOCKS:-128,64}
ITERS=${ITERS:-30}
log=$OUT/pipeline-sweep.md
bench() {  # label, env assignments..., -- args...
  local label=$1; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  echo "### $label" | tee -a "$log"
  env "${envs[@]}" timeout 60 "$BUNDLE/bin/cab-bench-gpu" --n="$N" --blocks="$BLOCKS" --iters="$ITERS" "$@" 2>&1 \
    | grep -E '^\| [0-9]|SMs \(asked|other|timeline|rror|fail' | tee -a "$log"
}
E=CAB_CUDA_COARSEN=bulk:8:2:6:e
bench "sequential, fixed shares" -- --claim=off
bench "sequential, claimed blocks" -- --claim=on
for sms in 48 56 64; do
  bench "sequential, coarsening alone on $sms SMs" -- --claim=on --green_sms="$sms"
done
for g in 4 8 16; do
  bench "pipeline $g, a launch per group, 1 CTA/SM" -- --pipeline="$g" --coarsen_ctas=1
done
for sms in 56 64; do
  for g in 4 8 16; do
    bench "pipeline $g, one launch on $sms SMs, evict-first" $E -- --pipeline="$g" --green_sms="$sms" --one_launch
  done
done
for mib in 16 32; do
  for sms in 56 64; do
    bench "pipeline 8, one launch on $sms SMs, evict-first, $mib MiB of L2 kept for S" $E -- --pipeline=8 --green_sms="$sms" --one_launch --persist_mib="$mib"
  done
  bench "pipeline 16, one launch on 56 SMs, evict-first, $mib MiB of L2 kept for S" $E -- --pipeline=16 --green_sms=56 --one_launch --persist_mib="$mib"
  bench "pipeline 8, one launch on 56 SMs, $mib MiB of L2 kept for S" -- --pipeline=8 --green_sms=56 --one_launch --persist_mib="$mib"
done
bench "pipeline 8, one launch on 56 SMs, prediction on the other SMs, evict-first" $E -- --pipeline=8 --green_sms=56 --one_launch --pred_rest
for plan in bulk:8:3:6:e bulk:8:4:4:e bulk:16:2:6:e bulk:12:3:4:e; do
  for sms in 56 64; do
    bench "pipeline 8, one launch on $sms SMs, plan $plan" CAB_CUDA_COARSEN=$plan -- --pipeline=8 --green_sms="$sms" --one_launch
  done
done
