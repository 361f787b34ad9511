#!/usr/bin/env bash
# run_gpu_h10b.sh — issue 10's batched decode on the GPU machine, in one call: the parity tests,
# one decode step at batch 16 with the tensor-core projections (gemv_mma.cu) and without them
# (DSPY_CUDA_MMA=0: the composed path), then B2 both ways and PyTorch's batched generate of the
# same prompts. Builds nothing. Run from the repository root with the GPU build packed by
#   BUILD=build-gpu bench/pack_gpu.sh   (then carry/gpu.tar.xz moved to $PACK, default build-h10b/)
# The build has its own checkout's paths compiled in (SRC, default /work/h10b): they are pointed here.
#   bench/run_gpu_h10b.sh [tests] [step] [b2] [torch]      (default: all four)
set -uo pipefail
ROOT=$(pwd)
OUT=${OUT:-$ROOT/out}
PACK=${PACK:-$ROOT/build-h10b}
SRC=${SRC:-/work/h10b}
MODEL=/tmp/llama-1b-shape
STAGES=${*:-tests step b2 torch}
has() { case " $STAGES " in *" $1 "*) return 0;; esac; return 1; }
mkdir -p "$OUT" /tmp/h10b
xz -dc "$PACK/gpu.tar.xz" | tar -C /tmp/h10b -xf -
if [ "$(readlink -f "$SRC" 2>/dev/null)" != "$ROOT" ]; then
  mkdir -p "$SRC"
  for d in tests bench src include; do ln -sfn "$ROOT/$d" "$SRC/$d"; done
  ln -sfn /tmp/h10b/build-gpu "$SRC/build-gpu"
fi
[ -e "$(dirname "$SRC")/shared" ] || ln -sfn /tmp/h10b/shared "$(dirname "$SRC")/shared"
ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH-}   # Python gets the machine's own libraries back
export LD_LIBRARY_PATH=/tmp/h10b/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export DSPY_SHARED_DIR=$(dirname "$SRC")/shared
B=$SRC/build-gpu
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
# the 1B-shape model, made while the tests run
if [ ! -f "$MODEL/model.safetensors" ]; then
  (LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH timeout 200 python3 bench/torch_baseline.py --make-model "$MODEL" > "$OUT/make_model.log" 2>&1) &
  MAKER=$!
fi
if has tests; then
  echo "== GPU parity tests"
  for t in test_cuda_ops test_cuda_model; do
    (cd "$B" && timeout 200 ./tests/$t) > "$OUT/$t.log" 2>&1; echo "$t: exit $?"
    grep -E "FAIL|passed|tensor-core|linear N=(5|8|9|13|16|11) |(attn_in|mlp_in|logits) N=(5|8|13|16|17) |16 sequences|part at" "$OUT/$t.log" | tail -n 40
  done
fi
[ -n "${MAKER-}" ] && wait "$MAKER"; tail -n 2 "$OUT/make_model.log" 2>/dev/null
if has step; then
  echo "== one decode step on the device alone (graph of 10 steps, ctx 1,564): batch 16 with / without the tensor-core path, 8, 1"
  for cfg in ${STEPS:-"16 1 0" "16 0 0" "16 1 1300" "8 1 0" "1 1 0"}; do
    set -- $cfg
    echo "-- batch $1, DSPY_CUDA_MMA=$2, first $3 positions in shared KV blocks"
    DSPY_CUDA_MMA=$2 timeout 60 "$B/bench/bench_gpu" --model "$MODEL" --device cuda --only-step 1 --step-batch $1 --step-shared $3 2>&1 | grep '"step"' | tee -a "$OUT/step.jsonl"
  done
fi
if has b2; then
  echo "== B2: 100 requests (1,300 shared + 200 own tokens, 80 new) by 16 clients to dspy serve --device cuda"
  for mma in 1 0; do
    echo "-- DSPY_CUDA_MMA=$mma"
    DSPY_CUDA_MMA=$mma timeout 120 "$B/bench/bench_b2" --model "$MODEL" --device cuda 2>&1 | tail -n 3 | tee -a "$OUT/b2.txt"
  done
fi
if has torch; then
  echo "-- the same 100 prompts as one batched generate() in PyTorch"
  LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH PYTHONUNBUFFERED=1 timeout 240 python3 bench/torch_baseline.py --model "$MODEL" --b2 2>&1 \
    | grep '"B2_torch"' | tee -a "$OUT/b2.txt"
fi
