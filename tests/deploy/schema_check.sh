#!/usr/bin/env bash
# schema_check.sh WORKDIR KUBECTL PYTHON OVERLAY
# Renders OVERLAY and validates every object against Kubernetes' OpenAPI schemas
# (tests/deploy/schema/validate.mjs). The npm packages are installed once into WORKDIR from the
# committed package-lock.json; where the npm registry cannot be reached the test is skipped
# (exit 77) and says so.
set -euo pipefail
work=$1 kubectl=$2 python=$3 overlay=$4
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"
(
  flock 9   # parallel ctest jobs share one install
  for f in package.json package-lock.json; do
    cmp -s "$here/schema/$f" "$work/$f" || { cp "$here/schema/$f" "$work/$f"; rm -rf "$work/node_modules"; }
  done
  if [ ! -d "$work/node_modules/kubernetes-models" ]; then
    if ! (cd "$work" && timeout 180 npm ci --no-audit --no-fund --loglevel=error >npm.log 2>&1); then
      echo "SKIP: npm ci failed (is the npm registry reachable?); schema validation not run:"
      tail -5 "$work/npm.log"
      exit 77
    fi
  fi
) 9>"$work/.lock"
cp "$here/schema/validate.mjs" "$work/validate.mjs"
"$kubectl" kustomize "$overlay" \
  | "$python" -c 'import sys, yaml, json; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))' \
  | node "$work/validate.mjs"
