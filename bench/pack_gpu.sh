#!/usr/bin/env bash
# pack_gpu.sh — gathers what bench/run_gpu.sh needs on the GPU machine into carry/ (ignored by
# git; the device tool's size limit is 64 MiB): the GPU build's test and benchmark binaries and
# the shared tokenizer. Run it here after `cmake --build build-gpu`, then carry `carry`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${BUILD:-$ROOT/build-gpu}
SHARED=${DSPY_SHARED_DIR:-$ROOT/../shared}
rm -rf "$ROOT/carry" && mkdir -p "$ROOT/carry/build-gpu/tests" "$ROOT/carry/build-gpu/bench" "$ROOT/carry/build-gpu/bin"
for t in "$B"/tests/test_cuda_*; do cp "$t" "$ROOT/carry/build-gpu/tests/"; done
for t in test_serve; do [ -f "$B/tests/$t" ] && cp "$B/tests/$t" "$ROOT/carry/build-gpu/tests/"; done
cp "$B/bench/bench_gpu" "$ROOT/carry/build-gpu/bench/"
[ -f "$B/bench/bench_serve_load" ] && cp "$B/bench/bench_serve_load" "$ROOT/carry/build-gpu/bench/"
cp "$B/bin/dspy" "$ROOT/carry/build-gpu/bin/"
mkdir -p "$ROOT/carry/shared/models" && cp -r "$SHARED/models/llama3-tokenizer" "$ROOT/carry/shared/models/"
du -sh "$ROOT/carry"
