#!/usr/bin/env bash
# bundle-libs.sh LIBDIR BINARY... : copies every shared library the binaries load into LIBDIR,
# except glibc, the C++ runtime and CUDA's own libraries. The GPU image runs binaries built on
# Debian 12 on a CUDA runtime base (Ubuntu) that has neither Debian's gRPC, protobuf, abseil,
# prometheus-cpp nor OpenBLAS; its glibc and libstdc++ are newer, so those stay the base's.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 LIBDIR BINARY..." >&2; exit 2; }
out=$1; shift
mkdir -p "$out"
system='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libgcc_s\.so|libstdc\+\+\.so)'
cuda='^(libcuda\.so|libcudart|libcublas|libnvidia|libnvrtc|libnvJitLink|libcurand|libcusparse|libcufft|libcusolver)'
for bin in "$@"; do
  ldd "$bin" | awk '/=> \// {print $1, $3}' | while read -r name path; do
    [[ $name =~ $system || $name =~ $cuda ]] && continue
    cp -Lu "$path" "$out/"
  done
done
ls "$out"
