#!/usr/bin/env bash
# pack_gpu_h11l.sh — helper h11l (issue 11 T3, LoRA): gathers what bench/run_gpu_h11l.sh needs on
# the GPU machine into /work/main/build-h11l/ (ignored there; carry `build-h11l`): this worktree's
# GPU build of the LoRA parity tests and bench_train, the shared libraries they load that a bare
# GPU machine lacks, and the run script itself (the device tool copies /work/main's tree, not this
# branch's). Run it here after `cmake --build build-gpu --target bench_train test_cuda_train
# test_cuda_train_lora test_cuda_train_ops`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${BUILD:-$ROOT/build-gpu}
DEST=${DEST:-/work/main/build-h11l}
ST=$(mktemp -d)
trap 'rm -rf "$ST"' EXIT
mkdir -p "$ST/bin" "$ST/lib"
for t in test_cuda_train test_cuda_train_lora test_cuda_train_ops; do cp "$B/tests/$t" "$ST/bin/"; done
cp "$B/bench/bench_train" "$ST/bin/"
for f in "$ST"/bin/*; do ldd "$f"; done | awk '/=>/{print $3}' | sort -u |
  grep -v -E '/(libc|libm|libpthread|ld-linux[^/]*|libdl|librt|libcuda|libcublas[^/]*|libgcc_s|libstdc\+\+)\.so' |
  while read -r l; do cp -L "$l" "$ST/lib/"; done
rm -rf "$DEST" && mkdir -p "$DEST"
tar -C "$ST" -cf - . | xz -T2 -6 > "$DEST/gpu.tar.xz"
cp "$ROOT/bench/run_gpu_h11l.sh" "$DEST/"
du -sh "$DEST/gpu.tar.xz"
