#!/usr/bin/env bash
# pack_gpu_h10s.sh — helper h10s (issue 10 B2, the serving engine's step overhead): gathers what
# bench/run_gpu_h10s.sh needs on the GPU machine into $DEST (default /work/main/build-h10s, an
# ignored folder of the checkout the device tool carries): this worktree's GPU build (dspy,
# bench_b2, bench_gpu, test_cuda_model), main's dspy as the baseline (bin/dspy_main), the
# libraries dspy loads that a bare GPU machine lacks, the tokenizer, and the run script itself.
# Run it after `cmake --build build-gpu --target dspy bench_b2 bench_gpu test_cuda_model`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${BUILD:-$ROOT/build-gpu}
MAIN_DSPY=${MAIN_DSPY:-/work/main/build-gpu/bin/dspy}
SHARED=${DSPY_SHARED_DIR:-$ROOT/../shared}
DEST=${DEST:-/work/main/build-h10s}
ST=$(mktemp -d)
trap 'rm -rf "$ST"' EXIT
mkdir -p "$ST/build-gpu/tests" "$ST/build-gpu/bench" "$ST/build-gpu/bin" "$ST/lib" "$ST/shared/models/llama3-tokenizer"
cp "$B/tests/test_cuda_model" "$ST/build-gpu/tests/"
cp "$B/bench/bench_b2" "$B/bench/bench_gpu" "$ST/build-gpu/bench/"
cp "$B/bin/dspy" "$ST/build-gpu/bin/dspy_new"
cp "$MAIN_DSPY" "$ST/build-gpu/bin/dspy_main"
ldd "$B/bin/dspy" | awk '/=>/{print $3}' |
  grep -v -E '/(libc|libm|libpthread|ld-linux[^/]*|libdl|librt|libcuda|libcublas[^/]*|libgcc_s|libstdc\+\+)\.so' |
  while read -r l; do cp -L "$l" "$ST/lib/"; done
cp "$SHARED"/models/llama3-tokenizer/{tokenizer.json,tokenizer_config.json,chat_template_llama3_2.jinja,special_tokens_llama3_2.tsv} \
  "$ST/shared/models/llama3-tokenizer/"
rm -rf "$DEST" && mkdir -p "$DEST"
tar -C "$ST" -cf - . | xz -T2 -6 > "$DEST/gpu.tar.xz"
cp "$ROOT/bench/run_gpu_h10s.sh" "$DEST/"
du -sh "$DEST/gpu.tar.xz"
