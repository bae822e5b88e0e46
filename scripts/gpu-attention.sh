#!/usr/bin/env bash
# GPU run of the attention kernels in two halves.
#   scripts/gpu-attention.sh prepare [BUILD_DIR]   (here, on the Debian build machine)
#       builds the GPU tests and the benchmark and packs them with their libraries into
#       bundle-attention/ (gitignored), for the device tool to carry.
#   scripts/gpu-attention.sh remote                (there, on the GPU host, in the repo root)
#       runs the GPU tests, the C++ benchmark (which writes the masks in the Flex layout) and
#       bench/attention/flex_bench.py (FlexAttention + SDPA on the same masks); everything that
#       matters goes to $OUT (at most 8 files). Env: N (default 16384,65536,131072), SPARSITY
#       (default 0,0.9,0.95,0.99), REPS (default 10).
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
case "$mode" in
  prepare)
    build=${2:-build-a}
    set -e
    ninja -C "$build" -j2 attention_gpu_test attention_cpu_test attention_backend_test attention_bench
    rm -rf bundle-attention
    bash ../shared/tools/gpu-bundle.sh bundle-attention "$build/tests/attention/attention_gpu_test" \
      "$build/tests/attention/attention_cpu_test" "$build/tests/attention/attention_backend_test" \
      "$build/bin/attention_bench"
    strip --strip-debug bundle-attention/bin/* bundle-attention/lib/*  # the carry limit is 64 MiB
    ;;
  remote)
    out=${OUT:-/tmp/attention-out}
    mkdir -p "$out"
    export LD_LIBRARY_PATH=bundle-attention/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
    export PYTHONUNBUFFERED=1
    {
      date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv
      echo "== SASS of the kernels (tensor-core and local-memory instructions)"
      cuobjdump -sass bundle-attention/bin/attention_bench 2>/dev/null | grep -oE "HGMMA|HMMA|LDL|STL|LDGSTS|UTMALDG|SYNCS[.A-Z]*" | sort | uniq -c
      echo "== GPU tests"
      timeout 180 bundle-attention/bin/attention_gpu_test --gtest_output=xml:"$out/gpu_tests.xml" 2>&1 | tail -40
      echo "gpu tests rc=${PIPESTATUS[0]}"
      echo "== backend table (every op of every backend against the CPU one)"
      timeout 120 bundle-attention/bin/attention_backend_test --gtest_output=xml:"$out/backend_tests.xml" 2>&1 | tail -12
      echo "backend tests rc=${PIPESTATUS[0]}"
      echo "== benchmark"
      timeout 240 bundle-attention/bin/attention_bench --out=/tmp/ab --n="${N:-16384,65536,131072}" \
        --sparsity="${SPARSITY:-0,0.9,0.95,0.99}" --reps="${REPS:-10}"
      echo "bench rc=$?"
      cp /tmp/ab/attention_bench.csv /tmp/ab/decode_bench.csv "$out/" 2>/dev/null
      echo "== PyTorch peers"
      timeout 300 python3 bench/attention/flex_bench.py --masks /tmp/ab --out "$out" --reps "${REPS:-10}"
      echo "flex rc=$?"
    } 2>&1 | tee "$out/run.log"
    ;;
  *)
    echo "usage: $0 prepare [BUILD_DIR] | remote" >&2
    exit 2
    ;;
esac
