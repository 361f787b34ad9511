#!/usr/bin/env bash
# pack_gpu_h10k.sh — helper h10k's copy of pack_gpu.sh: the binaries run_gpu_h10k.sh needs (two
# GPU tests, bench_gpu, bench_b2, dspy), the libraries dspy loads that a bare GPU machine lacks
# and the tokenizer, into $DEST/gpu.tar.xz with run_gpu_h10k.sh beside it (DEST: an ignored
# folder of the checkout the device tool carries, default /work/main/build-h10k).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${BUILD:-$ROOT/build-gpu}
SHARED=${DSPY_SHARED_DIR:-$ROOT/../shared}
DEST=${DEST:-/work/main/build-h10k}
ST=$(mktemp -d)
trap 'rm -rf "$ST"' EXIT
mkdir -p "$ST/build-gpu/tests" "$ST/build-gpu/bench" "$ST/build-gpu/bin" "$ST/lib" "$ST/shared/models/llama3-tokenizer"
cp "$B"/tests/test_cuda_ops "$B"/tests/test_cuda_model "$ST/build-gpu/tests/"
cp "$B/bench/bench_gpu" "$B/bench/bench_b2" "$ST/build-gpu/bench/"
cp "$B/bin/dspy" "$ST/build-gpu/bin/"
ldd "$B/bin/dspy" "$B/bench/bench_b2" | awk '/=>/{print $3}' | sort -u |
  grep -v -E '/(libc|libm|libpthread|ld-linux[^/]*|libdl|librt|libcuda|libcublas[^/]*|libgcc_s|libstdc\+\+)\.so' |
  while read -r l; do cp -L "$l" "$ST/lib/"; done
cp "$SHARED"/models/llama3-tokenizer/{tokenizer.json,tokenizer_config.json,chat_template_llama3_2.jinja,special_tokens_llama3_2.tsv} \
  "$ST/shared/models/llama3-tokenizer/"
rm -rf "$DEST" && mkdir -p "$DEST"
tar -C "$ST" -cf - . | xz -T2 -6 > "$DEST/gpu.tar.xz"
cp "$ROOT/bench/run_gpu_h10k.sh" "$DEST/"
du -sh "$DEST/gpu.tar.xz"
