#!/usr/bin/env bash
# Loopback benchmark of the service: a real cab-server (CPU backend) and cab-client bench on the
# same machine. Unary and streaming latency p50/p99 for N in {4k, 16k, 64k}, with full Q/K and
# with client-side representatives; throughput at 1/4/16 concurrent streams; and where the time
# goes (server kernels vs the server's other work vs transport and client work).
# Writes bench/results/loopback-<backend>.md (the command, the machine and the date included).
#   CAB_BUILD_DIR (default build), CAB_BACKEND (default cpu), CAB_BENCH_QUICK=1 for a smoke run.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${CAB_BUILD_DIR:-build}
backend=${CAB_BACKEND:-cpu}
out=bench/results/loopback-${backend}.md
quick=${CAB_BENCH_QUICK:-0}
if [[ ! -x $build/bin/cab-server || ! -x $build/bin/cab-client ]]; then
  cmake -S . -B "$build" -G Ninja > /dev/null
  cmake --build "$build" -j "${CAB_JOBS:-2}" --target cab-server cab-client
fi

load=$(cut -d' ' -f1-3 /proc/loadavg)
work=$(mktemp -d /tmp/cab-loopback-XXXXXX)
server_pid=
cleanup() {
  [[ -n $server_pid ]] && kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
"$build/bin/cab-server" --backend="$backend" --listen=127.0.0.1:0 --metrics_listen= \
  --port_file="$work/ports" > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 300); do [[ -s $work/ports ]] && break; sleep 0.1; done
port=$(sed -n 's/.*grpc=\([0-9]*\).*/\1/p' "$work/ports")
[[ -n $port ]] || { cat "$work/server.log"; exit 1; }

# Shape: B=1, Hq=8, Hkv=2, D=64, bf16, blocks of 64, cab at 95% sparsity (the defaults).
shape=(--heads=8 --kv_heads=2 --head_dim=64 --dtype=bf16 --block_size=64 --policy=cab --sparsity=0.95)
results=$work/results.jsonl
run() {  # label, then cab-client bench flags
  local label=$1; shift
  echo "loopback: $label $*" >&2
  "$build/bin/cab-client" bench --server=127.0.0.1:$port --json "${shape[@]}" "$@" |
    sed "s/^{/{\"label\":\"$label\",/" >> "$results"
}
reqs() {  # requests per size: fewer for the big ones (2-core machine)
  if [[ $quick == 1 ]]; then echo 2; return; fi
  case $1 in 4096) echo 40 ;; 16384) echo 12 ;; *) echo 4 ;; esac
}
for n in 4096 16384 65536; do
  r=$(reqs $n)
  run latency --mode=unary --seq_len=$n --requests=$r --warmup=1
  run latency --mode=unary --seq_len=$n --requests=$r --warmup=1 --representatives
  # Representatives the caller already holds (built once, untimed): the request alone.
  run latency --mode=unary --seq_len=$n --requests=$((r * 2)) --warmup=2 --representatives --precomputed
  run latency --mode=stream --seq_len=$n --chunks=$((n / 4096)) --requests=$r --warmup=1
  run latency --mode=stream --seq_len=$n --chunks=$((n / 4096)) --requests=$r --warmup=1 --representatives
done
for c in 1 4 16; do
  r=$(( quick == 1 ? 1 : (c == 16 ? 4 : 10) ))
  run throughput --mode=stream --seq_len=16384 --chunks=4 --representatives --concurrency=$c --requests=$r --warmup=1
done

cmd="CAB_BUILD_DIR=$build CAB_BACKEND=$backend bash bench/loopback/run.sh"
machine="$(uname -srm); $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load average at start: $load"
python3 - "$results" "$out" "$cmd" "$machine" "$(date -u '+%Y-%m-%d %H:%M UTC')" "$backend" <<'PY'
import json, sys
results, out, cmd, machine, date, backend = sys.argv[1:]
rows = [json.loads(l) for l in open(results)]
ms = lambda s: f"{s * 1e3:.2f}"
lines = [f"# Loopback benchmark: cab-server ({backend} backend) + cab-client on one machine", "",
         f"- Command: `{cmd}`", f"- Machine: {machine}", f"- Date: {date}",
         "- Shape: B=1, Hq=8, Hkv=2, D=64, bf16, blocks of 64 tokens, policy cab at 95% sparsity.",
         "- Unary: one Predict per request. Stream: open a session (not timed), append the sequence in",
         "  4096-token chunks, ask for the mask of every row; latency is first chunk to mask.",
         "- `reps`: the client coarsens and sends representatives (and no full Q/K); the coarsening is",
         "  inside the timed request. `reps (pre)`: the request with representatives is built once before",
         "  timing (`--precomputed`), as a model that already holds its block representatives would send it.",
         "- Kernels = the server's coarsen + predict stage times from the reply's Timings (for streams: the",
         "  mask query's predict only; coarsening happened at each chunk and counts as non-kernel here).",
         "  Server other = server total minus kernels. Transport + client = client latency minus server",
         "  total (serialisation, copies, loopback, and for `reps` the client-side coarsening); of that,",
         "  client encode is the unary request's construction (copies into the message, client-side coarsening).",
         "  Non-kernel share = (mean latency - kernels) / mean latency.", "",
         "## Latency", "",
         "| mode | N | input | requests | p50 ms | p99 ms | mean ms | server ms | kernels ms | server other ms | transport+client ms | of which client encode ms | non-kernel share | request bytes |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    if r["label"] != "latency": continue
    kind = ('reps (pre)' if r.get('precomputed') else 'reps') if r['representatives'] else 'full'
    lines.append(f"| {r['mode']} | {r['seq_len']} | {kind} | {r['requests']} | "
                 f"{ms(r['p50_seconds'])} | {ms(r['p99_seconds'])} | {ms(r['mean_seconds'])} | {ms(r['server_total_seconds'])} | "
                 f"{ms(r['kernel_seconds'])} | {ms(r['server_overhead_seconds'])} | {ms(r['transport_client_seconds'])} | {ms(r['client_encode_seconds']) if r['mode'] == 'unary' else '-'} | "
                 f"{r['overhead_fraction'] * 100:.0f}% | {r['request_bytes']} |")
lines += ["", "## Throughput (streams of N = 16384 as representatives, 4 chunks each)", "",
          "| concurrent streams | sequences | sequences/s | p50 ms | p99 ms |", "|---|---|---|---|---|"]
for r in rows:
    if r["label"] != "throughput": continue
    lines.append(f"| {r['concurrency']} | {r['requests']} | {r['throughput_per_second']:.1f} | {ms(r['p50_seconds'])} | {ms(r['p99_seconds'])} |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "loopback: wrote $out" >&2
