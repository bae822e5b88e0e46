#!/usr/bin/env bash
# Coarsening on the GPU (task c3, issue 4): the correctness gate and the kernel variants of
# kernels/cuda/coarsen_kernel.cu compared in one device call. Runs on the GPU host from the repository
# root with carry=["bundle-gz-c3"] (prepared here by
#   BUILD=build-c3 BUNDLE=bundle-c3 BUNDLE_GZ=bundle-gz-c3 scripts/gpu-run.sh prepare).
# Writes every log under $OUT and prints a short table last.
#   VARIANTS="warp bulk:8:3:8 ..."  CAB_CUDA_COARSEN values to time at 128k (alternating order, 2 rounds)
#   CHECKS="warp bulk:4:2:1"        extra values under which the Coarsen test cases run
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?OUT must be set (the device tool sets it)}"
B=${BUNDLE:-bundle-c3}
[ -d "$B" ] || tar -xJf "${BUNDLE_GZ:-bundle-gz-c3}/bundle.tar.xz"
export LD_LIBRARY_PATH=$PWD/$B/lib:/usr/local/cuda/lib64
export CAB_CUDA_PLUGIN=$PWD/$B/lib/libcab_cuda_backend.so
S=$OUT/summary.txt
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv; } | tee "$S"

# 1. The gate: the whole cross-backend test with the default kernel; eviction (cab coarsens keys
#    on the device) too.
for t in cuda_backend_test cuda_evict_test; do
  timeout 150 "$B/bin/$t" >"$OUT/$t-default.log" 2>&1
  echo "$t (default): exit $?" | tee -a "$S"
  grep -E "^\[  (PASSED|FAILED) |^\[       OK|Failure|differ" "$OUT/$t-default.log" | head -30 | tee -a "$S"
done

# 2. The Coarsen cases under the other kernels and plans (small copies: many chunks per block).
for v in ${CHECKS:-warp bulk:4:2:1 bulk:2:3:2:ef}; do
  CAB_CUDA_COARSEN=$v timeout 60 "$B/bin/cuda_backend_test" --gtest_filter='*Coarsen*' >"$OUT/test-${v//:/_}.log" 2>&1
  echo "Coarsen cases with CAB_CUDA_COARSEN=$v: exit $? $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/test-${v//:/_}.log" | tr '\n' ' ')" | tee -a "$S"
done
# An extra shape check (if bundled): every lane count, long blocks, several blocks per warp.
if [ -x "$B/bin/coarsen_shapes_check" ]; then
  for v in ${SHAPE_CHECKS:-default}; do
    CAB_CUDA_COARSEN=$([ "$v" = default ] || echo "$v") timeout 90 "$B/bin/coarsen_shapes_check" >"$OUT/shapes-${v//:/_}.log" 2>&1
    echo "shape check with CAB_CUDA_COARSEN=$v: exit $? $(grep -c ok-shape "$OUT/shapes-${v//:/_}.log") shapes; $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/shapes-${v//:/_}.log" | tr '\n' ' ')" | tee -a "$S"
    grep -E "Failure|Which is|Expected" "$OUT/shapes-${v//:/_}.log" | head -6 | tee -a "$S"
  done
fi

# 3. Read-only bandwidth probe (if bundled): the floor for a read-once pass.
[ -x "$B/bin/read_rate" ] && timeout 60 "$B/bin/read_rate" 2>&1 | tee -a "$S"

# 4. Variants at 128k, two rounds in opposite orders (order bias), coarsen Q+K medians.
read -r -a V <<<"${VARIANTS:-warp bulk}"
T=$OUT/variants.tsv
printf "round\tvariant\tblock\tcoarsen_ms\ttotal_ms\n" >"$T"
for round in 1 2; do
  order=("${V[@]}")
  if [ "$round" = 2 ]; then order=(); for ((i = ${#V[@]} - 1; i >= 0; i--)); do order+=("${V[$i]}"); done; fi
  for v in "${order[@]}"; do
    CAB_CUDA_COARSEN=$v timeout 60 "$B/bin/cab-bench-gpu" --n=131072 --blocks=64,128 --iters=30 \
      >"$OUT/bench-${v//:/_}-$round.md" 2>&1
    awk -F'|' -v r="$round" -v v="$v" '$2 ~ /^ *131072 *$/ {gsub(/ /, ""); print r "\t" v "\t" $3 "\t" $6 "\t" $5}' \
      "$OUT/bench-${v//:/_}-$round.md" >>"$T"
  done
done

# 5. The standard benchmark with the default kernel.
timeout 90 "$B/bin/cab-bench-gpu" --n=16384,65536,131072 --blocks=64,128 >"$OUT/bench-default.md" 2>&1
echo "## cab-bench-gpu (default kernel)" | tee -a "$S"
cat "$OUT/bench-default.md" | tee -a "$S"
echo "## variants at N=131072 (coarsen Q+K ms)" | tee -a "$S"
tee -a "$S" <"$T"
