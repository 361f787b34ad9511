#!/usr/bin/env bash
# run_gpu_h11s.sh — helper h11s's GPU call (issue 11 T2: the prefix-shared attention through cuDNN by
# the exact split, train_attention_split.cu). Builds nothing and sources nothing of the lead's:
# pack_h11s.sh puts the test and benchmark binaries of a GPU build (plus libjansson and libgomp)
# into build-h11s/ of the checkout the device tool carries; run this from that checkout's root:
#   bash build-h11s/run_gpu_h11s.sh [tests] [attn] [t2] [train]     (default: all four)
# Stages (each skipped when the call's time is spent): the split's parity tests
# (test_cuda_train_ops), bench_train_attn on T1's, T2's and a short prefix's layouts (own kernels,
# the split, the layout without the split; ATTN_SHAPES; ATTN_BF16 "1" the BF16 trainer's dtypes, "1 0"
# also all-F32), T2 prefix-shared (T2_EPOCHS, default 1)
# with the split on and off (DSPY_CUDA_CUDNN_SPLIT) for each DSPY_TRAIN_ATT16 of T2_ATT16 (default
# "1 0"), test_cuda_train.
ROOT=$(pwd)
B=$ROOT/build-h11s
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT"
# the binaries have the build's source directory compiled in (test fixtures, tmp dirs)
SRC=$(cat "$B/srcdir" 2>/dev/null || echo /work/h11s)
[ -e "$SRC" ] || { mkdir -p "$(dirname "$SRC")" && ln -sfn "$ROOT" "$SRC"; }
ORIG=${LD_LIBRARY_PATH-}
export LD_LIBRARY_PATH=$B/lib${ORIG:+:$ORIG}
STAGES=${*:-tests attn t2 train}
has() { case " $STAGES " in *" $1 "*) return 0;; esac; return 1; }
t0=$(date +%s)
el() { echo $(( $(date +%s) - t0 )); }
room() { [ "$(el)" -lt "$1" ] || { echo "-- skipped $2: $(el) s elapsed"; return 1; }; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
if has tests; then
  echo "== test_cuda_train_ops"
  (cd "$B" && timeout 90 ./test_cuda_train_ops) > "$OUT/ops.log" 2>&1; echo "test_cuda_train_ops: exit $?"
  grep -E "FAIL|split|passed" "$OUT/ops.log" | tail -n 70
  echo "== elapsed $(el) s"
fi
M=/tmp/llama-1b-shape
if has t2; then
  [ -f $M/model.safetensors ] || (LD_LIBRARY_PATH=$ORIG timeout 60 python3 bench/torch_baseline.py --make-model $M 2>&1 | tail -1)
fi
if has attn && room 100 attn; then
  for g in ${ATTN_BF16:-1}; do
    echo "== bench_train_attn --bf16 $g"
    timeout 40 "$B/bench_train_attn" --shapes "${ATTN_SHAPES:-t1,t2,pshort}" --variants -,cudnn,nosplit --reps 10 \
      --bf16 "$g" > "$OUT/attn$g.txt" 2>&1
    echo "exit $?"; grep -v '^{' "$OUT/attn$g.txt" | tail -n 14
  done
fi
if has t2; then
  for a in ${T2_ATT16:-1 0}; do for v in 1 0; do
    room 125 "T2 att16=$a split=$v" || break 2
    echo "== T2 share on, DSPY_TRAIN_ATT16=$a DSPY_CUDA_CUDNN_SPLIT=$v, ${T2_EPOCHS:-1} epoch(s)"
    DSPY_TRAIN_ATT16=$a DSPY_CUDA_CUDNN_SPLIT=$v DSPY_CUDA_CUDNN_DEBUG=1 timeout 45 "$B/bench_train" --t2 --model $M \
      --device cuda --epochs "${T2_EPOCHS:-1}" --warmup 1 --share on > "$OUT/t2_$a$v.txt" 2>&1
    echo "exit $?"; grep -E '"T2"|rror' "$OUT/t2_$a$v.txt" | head -n 5
    echo "cudnn graphs planned: $(grep -c 'planned' "$OUT/t2_$a$v.txt"), refused: $(grep -c 'no plan' "$OUT/t2_$a$v.txt")"
  done; done
fi
if has train && room 130 test_cuda_train; then
  echo "== test_cuda_train"
  (cd "$B" && timeout 60 ./test_cuda_train) > "$OUT/train.log" 2>&1; echo "test_cuda_train: exit $?"
  grep -E "FAIL|passed|att" "$OUT/train.log" | tail -n 16
fi
echo "== elapsed $(el) s (end)"
