#!/usr/bin/env bash
# runtime-packages.sh BINARY... : prints the Debian packages that own the shared libraries the
# binaries load, one per line. The CPU image's build stage runs it so that the runtime stage
# installs exactly what the binaries need (same debian:12 base, so the same versions), instead
# of a hand-kept list that drifts when a dependency changes.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BINARY..." >&2; exit 2; }
for bin in "$@"; do
  ldd "$bin" | awk '/=> \// {print $3}'
done | sort -u | while read -r lib; do
  # Debian 12 merges /lib into /usr/lib, but dpkg records whichever path the package shipped.
  real=$(readlink -f "$lib")
  for p in "$lib" "$real" "${real#/usr}" "/usr${real}"; do
    if owner=$(dpkg -S "$p" 2>/dev/null); then
      echo "${owner%%:*}"
      break
    fi
  done
done | sort -u
