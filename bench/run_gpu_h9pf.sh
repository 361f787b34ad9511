#!/usr/bin/env bash
# run_gpu_h9pf.sh — the GPU machine's script for the prefill attention work of issue 9 (helper
# h9pf): parity of every prefill kernel variant against the CPU reference, the attention op alone
# per variant (random q, k, v), the whole prefill of 100 x 1,500 tokens, and PyTorch's prefill in
# the same call. Builds nothing: it runs from the repository root with build-h9pf/ holding
# tests/test_cuda_ops, tests/test_cuda_model, bench/bench_gpu, bin/dspy and lib/ (the shared
# libraries the GPU machine lacks), all built in /work/h9pf/build-gpu (whose paths the binaries carry).
#
#   bench/run_gpu_h9pf.sh [tests] [variants] [prefill] [torch]
#   VARIANTS="0 1": DSPY_CUDA_PREFILL64 values (0: the older kernel, 1: k_prefill64)
#   PREFILL_VARIANTS="default": the same for the whole prefill ("best": the fastest attention op)
set -uo pipefail
ROOT=$(pwd)
OUT=${OUT:-$ROOT/out}
B=$ROOT/build-h9pf
mkdir -p "$OUT"
STAGES=${*:-tests variants prefill torch}
VARIANTS=${VARIANTS:-0 1}
has() { case " $STAGES " in *" $1 "*) return 0;; esac; return 1; }
# the paths the binaries carry: /work/h9pf/tests/ref (fixtures) and /work/h9pf/build-gpu/bin/dspy
if [ "$(readlink -f /work/h9pf/tests)" != "$ROOT/tests" ]; then
  rm -rf /work/h9pf && mkdir -p /work/h9pf && ln -sfn "$ROOT/tests" /work/h9pf/tests && ln -sfn "$B" /work/h9pf/build-gpu
fi
ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH-}
export LD_LIBRARY_PATH=$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
MODEL=/tmp/llama-1b-shape
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
if has variants || has prefill || has torch; then   # made on the CPU while the tests run
  (LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH timeout 200 python3 bench/torch_baseline.py --make-model "$MODEL" > "$OUT/make_model.log" 2>&1) &
  MAKER=$!
fi
if has tests; then
  echo "== parity (seed 12345; one line per prefill variant)"
  for v in $VARIANTS; do
    DSPY_TEST_SEED=12345 DSPY_CUDA_PREFILL64=$v timeout 200 "$B/tests/test_cuda_ops" > "$OUT/ops_$v.log" 2>&1
    echo "variant $v: exit $? $(grep -E 'passed' "$OUT/ops_$v.log" | tail -n 1)"
    grep -E "FAIL" "$OUT/ops_$v.log" | head -n 5
  done
  grep -E "attention prefill" "$OUT/ops_${VARIANTS##* }.log" "$OUT/ops_1.log" 2>/dev/null
  timeout 300 "$B/tests/test_cuda_model" > "$OUT/model.log" 2>&1
  echo "test_cuda_model: exit $? $(grep -E 'passed' "$OUT/model.log" | tail -n 1)"
  grep -E "FAIL" "$OUT/model.log" | head -n 5
fi
[ -n "${MAKER-}" ] && { wait "$MAKER"; tail -n 1 "$OUT/make_model.log"; }
if has variants; then
  echo "== attention op alone, 16,384 rows = 11 x 1,488, random q/k/v (ms, TFLOP/s)"
  for v in $VARIANTS; do
    printf 'variant %s: ' "$v"
    DSPY_CUDA_PREFILL64=$v timeout 60 "$B/bench/bench_gpu" --model "$MODEL" --device cuda --only-prefill-ops 1 2>&1 \
      | grep '"attention"' | sed "s/^{/{\"variant\": $v, /" | tee -a "$OUT/attn_ops.jsonl"
  done
  BEST=$(python3 -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print(min(r, key=lambda x: x["ms"])["variant"])' "$OUT/attn_ops.jsonl")
  echo "fastest: variant $BEST"
fi
if has prefill; then
  echo "== prefill 100 x 1,500 (default variant unless PREFILL_VARIANTS)"
  for v in ${PREFILL_VARIANTS:-default}; do
    [ "$v" = best ] && v=${BEST:-default}
    for ch in 16384 32768; do
      printf 'variant %s chunk %s: ' "$v" "$ch"
      ( [ "$v" = default ] || export DSPY_CUDA_PREFILL64=$v
        timeout 60 "$B/bench/bench_gpu" --model "$MODEL" --device cuda --only-prefill 1 --prefill-chunk $ch 2>&1 ) \
        | grep '"prefill"' | tee -a "$OUT/prefill.jsonl"
    done
  done
fi
if has torch; then
  echo "== PyTorch prefill (eager, compiled), same call"
  LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH PYTHONUNBUFFERED=1 timeout 300 python3 bench/torch_baseline.py --model "$MODEL" --prefill 2>&1 \
    | grep -v Warning | tee "$OUT/torch.jsonl" | grep prefill
  LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH PYTHONUNBUFFERED=1 timeout 120 python3 bench/torch_baseline.py --attn 2>&1 | grep attn_torch
fi
