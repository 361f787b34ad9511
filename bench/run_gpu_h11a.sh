#!/usr/bin/env bash
# run_gpu_h11a.sh — helper h11a's GPU script (issue 11 T1/T2, the training attention kernels of
# src/kern/cuda/train_attention_fa.cu): parity tests, the attention passes alone
# (bench_train_attn: every kernel variant, DSPY_CUDA_FA), then T1 (bench_train, 4 x 2,048), a
# table last. Builds nothing: run from the repository root with build-h11a/gpu.tar.xz made by
# bench/pack_gpu_h11a.sh (carry build-h11a).
#
#   bench/run_gpu_h11a.sh [tests] [attn] [t1] [t1old]   (default: tests attn)
# attn: ATTN_VARIANTS (bench_train_attn --variants) over ATTN_SHAPES.
# t1: bench_train with the default kernels; t1old: the same with DSPY_CUDA_FA=00 (the 64-row
#     kernels this work started from).
set -uo pipefail
ROOT=$(pwd)
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT" /tmp/h11a
# the build has its source directory compiled in (tests/ref fixtures): point it here
[ -e /work/h11a ] || { mkdir -p /work && ln -s "$ROOT" /work/h11a; }
xz -dc "$ROOT/build-h11a/gpu.tar.xz" | tar -C /tmp/h11a -xf -
ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH-}
export LD_LIBRARY_PATH=/tmp/h11a/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
B=/tmp/h11a/build-gpu
STAGES=${*:-tests attn}
has() { case " $STAGES " in *" $1 "*) return 0;; esac; return 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader
if has tests; then
  echo "== parity: the attention cases of test_cuda_train_ops (every DSPY_CUDA_FA variant), test_cuda_train"
  for t in test_cuda_train_ops test_cuda_train; do
    (cd "$B" && timeout ${TEST_TIMEOUT:-100} ./tests/$t) > "$OUT/$t.log" 2>&1
    echo "$t: exit $?"; grep -E "FAIL|passed" "$OUT/$t.log" | tail -n 15
  done
fi
if has attn; then
  echo "== the training attention passes alone"
  timeout ${ATTN_TIMEOUT:-120} "$B/bench/bench_train_attn" --variants "${ATTN_VARIANTS:-00,10,20,01,02,-}" \
    --shapes "${ATTN_SHAPES:-t1,packed,odd,t2}" --reps ${ATTN_REPS:-10} > "$OUT/attn.txt" 2>&1
  echo "bench_train_attn: exit $?"; grep -v '^|' "$OUT/attn.txt" | grep -v '^{' | tail -n 5
fi
if has t1 || has t1old; then
  MODEL=/tmp/llama-1b-shape
  [ -f "$MODEL/model.safetensors" ] || LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH timeout 200 python3 bench/torch_baseline.py --make-model "$MODEL" 2>&1 | tail -n 1
  if has t1; then
    echo "== T1 (default kernels)"
    timeout 150 "$B/bench/bench_train" --model "$MODEL" --device cuda 2>&1 | tee "$OUT/t1.jsonl" | grep -E '"T1'
  fi
  if has t1old; then
    echo "== T1 (DSPY_CUDA_FA=00)"
    DSPY_CUDA_FA=00 timeout 150 "$B/bench/bench_train" --model "$MODEL" --device cuda --no-profile 2>&1 | tee "$OUT/t1old.jsonl" | grep -E '"T1'
  fi
fi
echo "== table"
[ -f "$OUT/attn.txt" ] && grep '^|' "$OUT/attn.txt"
