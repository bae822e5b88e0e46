#!/usr/bin/env bash
# Quick start 2: installs what is missing, builds everything and runs the whole test suite.
# Tests that need a GPU carry the ctest label "gpu" and skip themselves where none exists.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build=${CAB_BUILD_DIR:-build}
jobs=${CAB_JOBS:-$(nproc)}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CAB_CMAKE_ARGS:-}
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" --output-on-failure -j "$jobs" --timeout 600 "$@"
