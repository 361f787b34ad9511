#!/usr/bin/env bash
# pack_gpu_h11a.sh — gathers what bench/run_gpu_h11a.sh needs on the GPU machine into
# /work/main/build-h11a/gpu.tar.xz (an ignored folder of the checkout the device tool carries):
# the GPU build's training tests and benchmarks and the libraries they load that a bare GPU
# machine lacks, and the run script itself. Run after
# `cmake --build build-gpu --target test_cuda_train_ops test_cuda_train bench_train bench_train_attn`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${BUILD:-$ROOT/build-gpu}
DEST=${DEST:-/work/main/build-h11a}
ST=$(mktemp -d)
trap 'rm -rf "$ST"' EXIT
mkdir -p "$ST/build-gpu/tests" "$ST/build-gpu/bench" "$ST/lib" "$DEST"
cp "$B"/tests/test_cuda_train_ops "$B"/tests/test_cuda_train "$ST/build-gpu/tests/"
cp "$B"/bench/bench_train "$B"/bench/bench_train_attn "$ST/build-gpu/bench/"
ldd "$B/bench/bench_train" | awk '/=>/{print $3}' |
  grep -v -E '/(libc|libm|libpthread|ld-linux[^/]*|libdl|librt|libcuda|libcublas[^/]*|libgcc_s|libstdc\+\+)\.so' |
  while read -r l; do cp -L "$l" "$ST/lib/"; done
tar -C "$ST" -cf - . | xz -T2 -6 > "$DEST/gpu.tar.xz"
cp "$ROOT/bench/run_gpu_h11a.sh" "$DEST/"
du -sh "$DEST/gpu.tar.xz"
