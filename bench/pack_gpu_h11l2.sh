#!/usr/bin/env bash
# pack_gpu_h11l2.sh — helper h11l2 (issue 11 T3, LoRA step overhead): gathers what
# bench/run_gpu_h11l2.sh needs on the GPU machine into /work/main/build-h11l2/ (ignored there; carry
# `build-h11l2`): this worktree's GPU build of the LoRA parity tests and bench_train, main's
# bench_train as it was built (BEFORE, the "before" of the same call), the shared libraries they
# load that a bare GPU machine lacks, and the run script (the device tool copies /work/main's tree,
# not this branch's). Run it here after `cmake --build build-gpu --target bench_train
# test_cuda_train test_cuda_train_lora`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${BUILD:-$ROOT/build-gpu}
BEFORE=${BEFORE:-/work/main/build-gpu/bench/bench_train}
DEST=${DEST:-/work/main/build-h11l2}
ST=$(mktemp -d)
trap 'rm -rf "$ST"' EXIT
mkdir -p "$ST/bin" "$ST/lib"
for t in test_cuda_train test_cuda_train_lora; do cp "$B/tests/$t" "$ST/bin/"; done
cp "$B/bench/bench_train" "$ST/bin/"
cp "$BEFORE" "$ST/bin/bench_train_before"
for f in "$ST"/bin/*; do ldd "$f"; done | awk '/=>/{print $3}' | sort -u |
  grep -v -E '/(libc|libm|libpthread|ld-linux[^/]*|libdl|librt|libcuda|libcublas[^/]*|libgcc_s|libstdc\+\+)\.so' |
  while read -r l; do cp -L "$l" "$ST/lib/"; done
rm -rf "$DEST" && mkdir -p "$DEST"
tar -C "$ST" -cf - . | xz -T2 -6 > "$DEST/gpu.tar.xz"
cp "$ROOT/bench/run_gpu_h11l2.sh" "$DEST/"
du -sh "$DEST/gpu.tar.xz"
