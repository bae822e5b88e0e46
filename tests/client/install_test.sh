#!/usr/bin/env bash
# Installs the cab-dev component of BUILD to a temp prefix, builds EXAMPLES against it with
# find_package(cab) in a separate CMake project, and runs the program against a real server.
# usage: install_test.sh BUILD EXAMPLES SERVER
set -euo pipefail
build=$1 examples=$2 server=$3
tmp=$(mktemp -d /tmp/cab-install-test-XXXXXX)
server_pid=
cleanup() { [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

cmake --install "$build" --prefix "$tmp/prefix" --component cab-dev > "$tmp/install.log"
test -f "$tmp/prefix/lib/cmake/cab/cabConfig.cmake"
cmake -S "$examples" -B "$tmp/build" -G Ninja -DCMAKE_PREFIX_PATH="$tmp/prefix" > "$tmp/configure.log" ||
  { cat "$tmp/configure.log"; exit 1; }
cmake --build "$tmp/build" -j 2 > "$tmp/build.log" || { cat "$tmp/build.log"; exit 1; }
"$tmp/build/cab-client-example" --help

"$server" --listen=127.0.0.1:0 --metrics_listen= --port_file="$tmp/ports" --backend=cpu > "$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do [[ -s $tmp/ports ]] && break; sleep 0.1; done
port=$(sed -n 's/.*grpc=\([0-9]*\).*/\1/p' "$tmp/ports")
[[ -n $port ]] || { cat "$tmp/server.log"; exit 1; }
"$tmp/build/cab-client-example" --server=127.0.0.1:$port
