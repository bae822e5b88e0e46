#!/usr/bin/env bash
# Clocks and power while the predictor runs 3000 times at 128k / block 128, sequential and pipelined
# (notes/gpu-runs.md run 56: both at 1980 MHz and ~560 W, i.e. the pipelined slowdown is not
# throttling). On the GPU host from the repository root with bundle-g unpacked:
#   bash bench/gpu/power_probe.sh
set -u
export LD_LIBRARY_PATH=$PWD/bundle-g/lib:/usr/local/cuda/lib64
B=bundle-g/bin/cab-bench-gpu
probe() {  # label, env..., -- args
  local label=$1; shift
  local envs=(); while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  nvidia-smi --query-gpu=clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv,noheader -lms 50 > /tmp/smi.csv &
  local pid=$!
  env "${envs[@]}" $B --n=131072 --blocks=128 --iters=3000 --warmup=20 "$@" 2>&1 | grep -E '^\| [0-9]' | sed "s/^/$label: /"
  kill $pid; sleep 0.2
  echo "$label clocks (sm MHz, mem MHz, W, C), last samples:"; tail -n 25 /tmp/smi.csv | head -n 20 | sort | uniq -c | sort -rn | head -5
}
probe seq -- --claim=off
probe pipe8 CAB_CUDA_COARSEN=bulk:8:2:6:e -- --pipeline=8 --green_sms=56 --one_launch
