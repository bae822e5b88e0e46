#!/usr/bin/env bash
# The CUDA backend's GPU run in two halves (docs/cuda-backend.md):
#   scripts/gpu-run.sh prepare   here (Debian build host, nvcc but no GPU): configure build-g, build the
#                                plugin, the cross-backend test, the kernel benchmark, cab-server and
#                                cab-client, and pack them with their libraries into bundle-g/.
#   scripts/gpu-run.sh remote    on the GPU host (the device tool's `run`, with carry=["bundle-gz"]):
#                                GPU tests, kernel benchmark, the PyTorch peer, and cab-server end to
#                                end (CPU vs CUDA masks, loopback latency); everything lands in $OUT.
# Example:  scripts/gpu-run.sh prepare   then   run(command="scripts/gpu-run.sh remote", carry=["bundle-gz"])
# The bundle (gRPC, protobuf, OpenBLAS, ...) is ~63 MiB stripped, over the tool's 64 MiB working-tree
# limit together with the tree, so it travels xz-compressed (~13 MiB) as bundle-gz/bundle.tar.xz.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-g}
BUNDLE=${BUNDLE:-bundle-g}
# Where the compressed bundle travels from (several engineers can prepare their own: BUNDLE_GZ=bundle-gz-NAME).
BUNDLE_GZ=${BUNDLE_GZ:-bundle-gz}

prepare() {
  set -e
  cmake -S . -B "$BUILD" -G Ninja >/dev/null
  ninja -C "$BUILD" -j2 cab_cuda_backend cuda_backend_test cuda_evict_test cuda_batch_test cuda_placement_test \
    cuda_representatives_test cuda_coarsen_kernel_test cuda_scores_plan_test cuda_fused_scores_test cuda_pipeline_test cab-bench-gpu cab-bench-evict
  local extra=()
  for t in cab-server cab-client; do
    if ninja -C "$BUILD" -j2 "$t"; then extra+=("$BUILD/bin/$t"); else echo "warning: $t did not build; end-to-end part skipped"; fi
  done
  rm -rf "$BUNDLE"
  local bins=("$BUILD/bin/cab-bench-gpu" "$BUILD/bin/cab-bench-evict" "$BUILD/tests/cuda/cuda_backend_test"
              "$BUILD/tests/cuda/cuda_evict_test" "$BUILD/tests/cuda/cuda_batch_test" "$BUILD/tests/cuda/cuda_placement_test"
              "$BUILD/tests/cuda/cuda_representatives_test" "$BUILD/tests/cuda/cuda_coarsen_kernel_test"
              "$BUILD/tests/cuda/cuda_scores_plan_test" "$BUILD/tests/cuda/cuda_fused_scores_test" "$BUILD/tests/cuda/cuda_pipeline_test")
  ../shared/tools/gpu-bundle.sh "$BUNDLE" "${bins[@]}" "${extra[@]}" \
    2>/dev/null || /work/shared/tools/gpu-bundle.sh "$BUNDLE" "${bins[@]}" "${extra[@]}"
  cp -L "$BUILD/bin/libcab_cuda_backend.so" "$BUNDLE/lib/"
  strip --strip-debug "$BUNDLE"/bin/* "$BUNDLE"/lib/*.so*
  mkdir -p "$BUNDLE_GZ"
  tar -cf - "$BUNDLE" | xz -T2 -4 >"$BUNDLE_GZ/bundle.tar.xz"
  du -sh "$BUNDLE" "$BUNDLE_GZ/bundle.tar.xz"
}

# Starts cab-server with the given backend; prints its gRPC port.
start_server() {
  local backend=$1 portfile=/tmp/cab-$1.port
  shift
  rm -f "$portfile"
  "$BUNDLE/bin/cab-server" --backend="$backend" --listen=127.0.0.1:0 --metrics_listen= --port_file="$portfile" \
    --max_blocks=4096 --max_tokens=1048576 "$@" >"/tmp/cab-server-$backend.log" 2>&1 &
  for _ in $(seq 1 100); do
    [ -s "$portfile" ] && break
    sleep 0.1
  done
  sed -n 's/.*grpc=\([0-9]*\).*/\1/p' "$portfile"
}

# One `cab-client bench --json` line as a short one for the summary (the whole line goes to
# $OUT/e2e.jsonl): median latency, throughput, server time and its kernel part.
brief() {
  local line
  while IFS= read -r line; do
    case "$line" in
      '{'*)
        echo "$line" >>"$OUT/e2e.jsonl"
        local f
        for f in p50_seconds throughput_per_second server_total_seconds kernel_seconds; do
          printf '%s=%s ' "$f" "$(echo "$line" | grep -o "\"$f\":[0-9.e+-]*" | cut -d: -f2)"
        done
        echo ;;
      *) echo "$line" ;;
    esac
  done
}

remote() {
  : "${OUT:?OUT must be set (the device tool sets it)}"
  [ -d "$BUNDLE" ] || tar -xJf "$BUNDLE_GZ/bundle.tar.xz"
  export LD_LIBRARY_PATH=$PWD/$BUNDLE/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export CAB_CUDA_PLUGIN=$PWD/$BUNDLE/lib/libcab_cuda_backend.so
  export PYTHONUNBUFFERED=1
  local summary=$OUT/summary.md
  { echo "# GPU run $(date -u +%FT%TZ)"; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv; } | tee "$summary"

  for t in cuda_backend_test cuda_evict_test cuda_batch_test cuda_placement_test cuda_representatives_test \
           cuda_coarsen_kernel_test cuda_scores_plan_test cuda_fused_scores_test cuda_pipeline_test; do
    echo "## cross-backend test $t" | tee -a "$summary"
    timeout 150 "$BUNDLE/bin/$t" >"$OUT/$t.log" 2>&1
    echo "exit $?" | tee -a "$summary"
    grep -E "^\[  (PASSED|FAILED|SKIPPED) |differ|Failure|Expected|Which is|actual" "$OUT/$t.log" | head -40 | tee -a "$summary"
  done

  [ -n "${SKIP_EVICT_BENCH:-}" ] || {
  echo "## eviction benchmark (Backend::Evict wall time, CUDA vs CPU)" | tee -a "$summary"
  timeout 150 "$BUNDLE/bin/cab-bench-evict" --out="$OUT/bench-evict.md" >/dev/null 2>"$OUT/bench-evict.err"
  echo "exit $?" | tee -a "$summary"
  cat "$OUT/bench-evict.md" 2>/dev/null | tee -a "$summary"
  grep -v '^|' "$OUT/bench-evict.err" | tail -5 | tee -a "$summary"  # errors only: rows are in the table
  }

  [ -n "${SKIP_KERNEL_BENCH:-}" ] || {
  echo "## kernel benchmark (CUDA events)" | tee -a "$summary"
  timeout 150 "$BUNDLE/bin/cab-bench-gpu" --out="$OUT/bench-cuda.md" >/dev/null 2>"$OUT/bench-cuda.err"
  echo "exit $?" | tee -a "$summary"
  cat "$OUT/bench-cuda.md" "$OUT/bench-cuda.err" 2>/dev/null | tee -a "$summary"
  echo "## same, earlier kernels: radix-select top lists (warp per row), CTA-per-row selection, 128k" | tee -a "$summary"
  CAB_CUDA_TOPLISTS=warp CAB_CUDA_SELECT=block timeout 100 "$BUNDLE/bin/cab-bench-gpu" --n=131072 --blocks=64,128 --iters=20 2>&1 | tee -a "$summary"
  echo "## key pass with Quest's bounds and fp32 copies (--k_bounds=on), 128k" | tee -a "$summary"
  timeout 100 "$BUNDLE/bin/cab-bench-gpu" --n=131072 --blocks=64,128 --iters=30 --k_bounds=on 2>&1 | tee -a "$summary"
  echo "## default again (run-order check), 128k" | tee -a "$summary"
  timeout 100 "$BUNDLE/bin/cab-bench-gpu" --n=131072 --blocks=64,128 --iters=30 2>&1 | tee -a "$summary"
  echo "## same, S written by the GEMMs and read by the top lists (CAB_CUDA_FUSED_SCORES=0), 128k" | tee -a "$summary"
  CAB_CUDA_FUSED_SCORES=0 timeout 100 "$BUNDLE/bin/cab-bench-gpu" --n=131072 --blocks=64,128 --iters=30 2>&1 | tee -a "$summary"
  echo "## fused also where one CTA fills an SM's shared memory (CAB_CUDA_FUSED_MAX_SMEM=232448), 64k and 128k" | tee -a "$summary"
  CAB_CUDA_FUSED_MAX_SMEM=232448 timeout 100 "$BUNDLE/bin/cab-bench-gpu" --n=65536,131072 --blocks=64,128 --iters=20 2>&1 | tee -a "$summary"
  }
  if [ -n "${BENCH_EXTRA:-}" ]; then
    timeout 120 "$BUNDLE/bin/cab-bench-gpu" $BENCH_EXTRA 2>&1 | tee -a "$summary"
  fi

  [ -n "${SKIP_TORCH:-}" ] || {
  echo "## PyTorch peer" | tee -a "$summary"
  timeout 150 python3 bench/gpu/torch_predictor.py --out "$OUT/bench-torch.md" >/dev/null 2>"$OUT/bench-torch.err"
  echo "exit $?" | tee -a "$summary"
  cat "$OUT/bench-torch.md" 2>/dev/null | tee -a "$summary"
  tail -5 "$OUT/bench-torch.err" | tee -a "$summary"
  }

  if [ -x "$BUNDLE/bin/cab-server" ] && [ -x "$BUNDLE/bin/cab-client" ] && [ -z "${SKIP_E2E:-}" ]; then
    echo "## end to end (cab-server over loopback)" | tee -a "$summary"
    local gpu_port cpu_port
    gpu_port=$(start_server cuda)
    cpu_port=$(start_server cpu)
    echo "cuda server port ${gpu_port:-none}, cpu server port ${cpu_port:-none}" | tee -a "$summary"
    head -5 /tmp/cab-server-cuda.log | tee -a "$summary"
    local client="$BUNDLE/bin/cab-client"
    # Full Q/K, then representatives (uploaded by the CUDA backend as they arrive).
    for reps in "" "--representatives"; do
      for policy in cab magnitude quest adaptive; do
        for port in "$gpu_port" "$cpu_port"; do
          timeout 60 "$client" predict --server=127.0.0.1:"$port" --seq_len=8192 --heads=8 --kv_heads=4 --head_dim=128 \
            --dtype=bf16 --block_size=64 --policy="$policy" --print_rows=128 $reps 2>&1 | grep "row " >"/tmp/rows-$port-$policy.txt"
        done
        if cmp -s "/tmp/rows-$gpu_port-$policy.txt" "/tmp/rows-$cpu_port-$policy.txt"; then r=identical; else r="differ in $(diff "/tmp/rows-$gpu_port-$policy.txt" "/tmp/rows-$cpu_port-$policy.txt" | grep -c '^<') rows"; fi
        echo "e2e $policy ${reps:-full} (N=8192, Hq=8, Hkv=4, D=128, bf16, head 0, 128 rows): cuda vs cpu server masks $r ($(wc -l <"/tmp/rows-$gpu_port-$policy.txt") rows)" | tee -a "$summary"
      done
    done
    for n in 16384 131072; do
      # --precomputed: the representatives built once, so p50 is transport + server.
      for reps in "" "--representatives" "--representatives --precomputed"; do
        [ "$n" = 131072 ] && [ -z "$reps" ] && continue  # 2 GiB of raw Q/K exceeds one gRPC message
        echo "e2e bench cuda N=$n $reps:" | tee -a "$summary"
        timeout 120 "$client" bench --server=127.0.0.1:"$gpu_port" --requests=5 --warmup=1 --seq_len=$n --heads=32 \
          --head_dim=128 --dtype=bf16 --block_size=64 --sparsity=0.95 $reps --json 2>&1 | tail -3 | brief | tee -a "$summary"
      done
    done
    # start_server runs in a command substitution, so its servers are not this shell's jobs.
    pkill -f "$BUNDLE/bin/cab-server" 2>/dev/null
    cat /tmp/cab-server-cuda.log >"$OUT/server-cuda.log" 2>/dev/null
    sleep 1
    # Throughput without batching (--max_batch=1), 8 concurrent clients, precomputed representatives:
    # uploads overlapping kernels (the default) against CAB_CUDA_OVERLAP=0 (one request at a time whole).
    echo "## throughput, --max_batch=1, 8 concurrent clients, precomputed representatives" | tee -a "$summary"
    for overlap in 1 0; do
      export CAB_CUDA_OVERLAP=$overlap
      gpu_port=$(start_server cuda --max_batch=1)
      for n in 16384 131072; do
        echo "overlap=$overlap N=$n:" | tee -a "$summary"
        timeout 120 "$client" bench --server=127.0.0.1:"$gpu_port" --requests=48 --warmup=8 --concurrency=8 --seq_len=$n \
          --heads=32 --head_dim=128 --dtype=bf16 --block_size=64 --sparsity=0.95 --representatives --precomputed --json 2>&1 |
          tail -1 | brief | tee -a "$summary"
      done
      pkill -f "$BUNDLE/bin/cab-server" 2>/dev/null
      sleep 1
    done
    unset CAB_CUDA_OVERLAP
  fi
  # The device tool brings back only a few files: the logs travel as one archive.
  (cd "$OUT" && shopt -s nullglob && logs=(*.log *.err) && [ ${#logs[@]} -gt 0 ] &&
    tar -czf logs.tar.gz -- "${logs[@]}" && rm -f -- "${logs[@]}")
}

case "${1:-}" in
  prepare) prepare ;;
  remote) remote ;;
  *) echo "usage: $0 prepare|remote" >&2; exit 2 ;;
esac
