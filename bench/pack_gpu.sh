#!/usr/bin/env bash
# pack_gpu.sh — gathers what bench/run_gpu.sh needs on the GPU machine into carry/
# (gpu.tar.xz; ignored by git; the device tool carries at most 64 MiB): the GPU build's test and benchmark
# binaries, the shared libraries `dspy` links that a bare GPU machine lacks (libmicrohttpd,
# jansson, curl, ...), the shared tokenizer files and the Banking77 data. Run it here after
# `cmake --build build-gpu`, then carry `carry`; run_gpu.sh unpacks it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${BUILD:-$ROOT/build-gpu}
SHARED=${DSPY_SHARED_DIR:-$ROOT/../shared}
ST=$(mktemp -d)
trap 'rm -rf "$ST"' EXIT
mkdir -p "$ST/build-gpu/tests" "$ST/build-gpu/bench" "$ST/build-gpu/bin" "$ST/lib" "$ST/shared/models/llama3-tokenizer"
cp "$B"/tests/test_cuda_* "$ST/build-gpu/tests/"
for t in test_serve test_serve_structured; do [ -f "$B/tests/$t" ] && cp "$B/tests/$t" "$ST/build-gpu/tests/"; done
cp "$B/bench/bench_gpu" "$ST/build-gpu/bench/"
for t in bench_serve_load bench_b2 bench_train bench_train_attn; do [ -f "$B/bench/$t" ] && cp "$B/bench/$t" "$ST/build-gpu/bench/"; done
cp "$B/bin/dspy" "$ST/build-gpu/bin/"
# every library dspy loads except the C runtime and the CUDA ones the GPU machine has
ldd "$B/bin/dspy" | awk '/=>/{print $3}' |
  grep -v -E '/(libc|libm|libpthread|ld-linux[^/]*|libdl|librt|libcuda|libcublas[^/]*|libgcc_s|libstdc\+\+)\.so' |
  while read -r l; do cp -L "$l" "$ST/lib/"; done
cp "$SHARED"/models/llama3-tokenizer/{tokenizer.json,tokenizer_config.json,chat_template_llama3_2.jinja,special_tokens_llama3_2.tsv} \
  "$ST/shared/models/llama3-tokenizer/"
mkdir -p "$ST/shared/data" && cp -r "$SHARED/data/banking77" "$ST/shared/data/"   # test_serve_structured's devset
rm -rf "$ROOT/carry" && mkdir -p "$ROOT/carry"
tar -C "$ST" -cf - . | xz -T2 -6 > "$ROOT/carry/gpu.tar.xz"   # xz: with node it must stay under 64 MiB
du -sh "$ROOT/carry/gpu.tar.xz"
# WITH_NODE=1: node, npm and the installed OpenAI Node.js SDK too (the GPU machine has no node and
# no registry), so test_serve's SDK part runs there against dspy serve on the GPU (~30 MB xz).
if [ "${WITH_NODE:-0}" = 1 ]; then
  NS=$(mktemp -d)
  NPMDIR=${DSPY_NPM_CACHE:-$HOME/.cache/dspy-npm}
  SDK=$(ls -d "$NPMDIR"/openai-sdk-* | tail -n 1)
  mkdir -p "$NS/node/bin" "$NS/node/lib/node_modules" "$NS/npm-cache"
  cp -L "$(command -v node)" "$NS/node/bin/node"
  cp -r "$(dirname "$(readlink -f "$(command -v npm)")")/.." "$NS/node/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$NS/node/bin/npm"
  cp -r "$SDK" "$NS/npm-cache/"
  tar -C "$NS" -cf - . | xz -T2 -3 > "$ROOT/carry/node.tar.xz"
  rm -rf "$NS"
  du -sh "$ROOT/carry/node.tar.xz"
fi
