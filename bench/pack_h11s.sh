#!/usr/bin/env bash
# pack_h11s.sh — puts what run_gpu_h11s.sh runs into DEST (default /work/main/build-h11s, ignored by
# git there; the device tool carries it): the GPU build's test_cuda_train_ops, test_cuda_train,
# bench_train_attn and bench_train, the libraries they load that a bare GPU machine lacks, the
# build's source directory (compiled into the binaries) and the script itself.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${BUILD:-$ROOT/build-gpu}
DEST=${DEST:-/work/main/build-h11s}
rm -rf "$DEST" && mkdir -p "$DEST/lib"
cp "$B/tests/test_cuda_train_ops" "$B/tests/test_cuda_train" "$B/bench/bench_train_attn" "$B/bench/bench_train" "$DEST/"
ldd "$B/bench/bench_train" | awk '/=>/{print $3}' | grep -E '/(libjansson|libgomp)[^/]*$' | while read -r l; do cp -L "$l" "$DEST/lib/"; done
cp "$ROOT/bench/run_gpu_h11s.sh" "$DEST/"
echo "$ROOT" > "$DEST/srcdir"
du -sh "$DEST"
