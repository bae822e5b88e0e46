#!/usr/bin/env bash
# Quick start 1: builds cab-server and cab-client, starts the server on the CPU backend on
# loopback, runs cab-client against it end to end (info, predict in several policies and formats,
# evict, bridge-demo), then stops the server with SIGTERM. Exits non-zero on any failure.
#   CAB_BUILD_DIR (default build), CAB_JOBS (default nproc)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build=${CAB_BUILD_DIR:-build}
jobs=${CAB_JOBS:-$(nproc)}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CAB_CMAKE_ARGS:-} > /dev/null
cmake --build "$build" -j "$jobs" --target cab-server cab-client

work=$(mktemp -d /tmp/cab-demo-XXXXXX)
server_pid=
cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid"; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$build/bin/cab-server" --backend=cpu --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 \
  --port_file="$work/ports" > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 300); do
  [[ -s $work/ports ]] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; echo "demo: cab-server exited" >&2; exit 1; }
  sleep 0.1
done
[[ -s $work/ports ]] || { cat "$work/server.log"; echo "demo: no port file" >&2; exit 1; }
read -r grpc_field metrics_field < "$work/ports"
server=127.0.0.1:${grpc_field#grpc=}
echo "demo: cab-server pid $server_pid on $server (metrics on 127.0.0.1:${metrics_field#metrics=})"

client() {
  echo "+ cab-client $*"
  "$build/bin/cab-client" "$@" --server="$server"
}
client info
client predict --policy=cab --sparsity=0.95 --seq_len=8192 --heads=8 --kv_heads=2 --head_dim=64 --block_size=64 --format=bsr
client predict --policy=quest --sparsity=0.9 --seq_len=4096 --heads=4 --head_dim=64 --dtype=bf16 --format=flex --json
client predict --policy=magnitude --sparsity=0.9 --seq_len=4096 --heads=4 --format=bitmap --representatives
client predict --policy=cab --seq_len=4096 --heads=4 --chunks=4 --representatives --json
for policy in h2o streaming cab snapkv random; do
  client evict --policy="$policy" --seq_len=2048 --heads=4 --keep=256
done
client bridge-demo

kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=
[[ $status -eq 0 ]] || { cat "$work/server.log"; echo "demo: cab-server exited with $status after SIGTERM" >&2; exit 1; }
echo "demo: ok (server drained and exited 0)"
