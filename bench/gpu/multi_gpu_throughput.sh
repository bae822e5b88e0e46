#!/usr/bin/env bash
# Throughput of cab-server's CUDA backend on one GPU against two (one worker per GPU): unary requests
# (no session: each goes to the worker with the fewest calls in flight) and streaming sessions (each
# pinned to the worker with the fewest sessions), precomputed / client-side representatives, B=1,
# H=32, D=128, bf16, block 64, cab, sparsity 0.95. On a host with two GPUs, from an unpacked bundle:
#   BUNDLE=bundle-g OUT=... bench/gpu/multi_gpu_throughput.sh
set -uo pipefail
BUNDLE=${BUNDLE:-bundle-g}
OUT=${OUT:?}
CONC=${CONC:-16}
export LD_LIBRARY_PATH=$PWD/$BUNDLE/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export CAB_CUDA_PLUGIN=$PWD/$BUNDLE/lib/libcab_cuda_backend.so
log=$OUT/multi-gpu.md
nvidia-smi --query-gpu=index,name --format=csv,noheader | tee -a "$log"
rate() { grep -o '"throughput_per_second":[0-9.e+-]*' | cut -d: -f2; }
for devs in 0 0,1; do
  rm -f /tmp/cab-mg.port
  "$BUNDLE/bin/cab-server" --backend=cuda --cuda_devices="$devs" --listen=127.0.0.1:0 --metrics_listen= \
    --port_file=/tmp/cab-mg.port --max_blocks=4096 --max_tokens=1048576 --max_batch=1 >"/tmp/cab-mg-$devs.log" 2>&1 &
  for _ in $(seq 1 100); do [ -s /tmp/cab-mg.port ] && break; sleep 0.1; done
  port=$(sed -n 's/.*grpc=\([0-9]*\).*/\1/p' /tmp/cab-mg.port)
  common=(--server=127.0.0.1:"$port" --heads=32 --head_dim=128 --dtype=bf16 --block_size=64 --sparsity=0.95 --json)
  for n in 16384 131072; do
    r=$(timeout 90 "$BUNDLE/bin/cab-client" bench "${common[@]}" --mode=unary --concurrency="$CONC" --requests=16 \
        --warmup=2 --seq_len=$n --representatives --precomputed 2>&1 | tail -1 | rate)
    echo "| devices $devs | unary, precomputed representatives | $n | $CONC | ${r:-failed} |" | tee -a "$log"
  done
  r=$(timeout 120 "$BUNDLE/bin/cab-client" bench "${common[@]}" --mode=stream --concurrency="$CONC" --requests=8 \
      --warmup=1 --seq_len=16384 --representatives 2>&1 | tail -1 | rate)
  echo "| devices $devs | streaming sessions, representatives | 16384 | $CONC | ${r:-failed} |" | tee -a "$log"
  grep -i "worker\|device" "/tmp/cab-mg-$devs.log" | head -3 | tee -a "$log"
  pkill -f "$BUNDLE/bin/cab-server" 2>/dev/null
  sleep 1
done
