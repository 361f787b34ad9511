#!/usr/bin/env bash
# run_gpu_h10k.sh — helper h10k's GPU call (issue 10, B2's decode step: shared-prefix attention).
# From the carried checkout's root: `bash build-h10k/run_gpu_h10k.sh [tests] [step] [b2]` (default
# all three). Unpacks build-h10k/gpu.tar.xz (bench/pack_gpu_h10k.sh), runs the parity tests,
# the batch-16 decode step with the hint used and ignored (DSPY_CUDA_CASCADE=1/0), then B2
# alternating both settings against the same binary; a table last. Builds nothing.
set -uo pipefail
ROOT=$(pwd)
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT" /tmp/dspy-gpu /work
STAGES=${*:-tests step b2}
has() { case " $STAGES " in *" $1 "*) return 0;; esac; return 1; }
xz -dc build-h10k/gpu.tar.xz | tar -C /tmp/dspy-gpu -xf -
# the binaries carry the build machine's paths: /work/h10k (sources, bin dir) and /work/shared
[ -e /work/h10k ] || ln -sfn "$ROOT" /work/h10k
[ -e "$ROOT/build-gpu" ] || ln -sfn /tmp/dspy-gpu/build-gpu "$ROOT/build-gpu"
ln -sfn /tmp/dspy-gpu/shared /work/shared
ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH-}
export LD_LIBRARY_PATH=/tmp/dspy-gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export DSPY_SHARED_DIR=/work/shared
MODEL=/tmp/llama-1b-shape
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
T0=$(date +%s)
if has step || has b2; then   # the model is made while the tests run
  (LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH timeout 120 python3 bench/torch_baseline.py --make-model "$MODEL" > "$OUT/make_model.log" 2>&1) &
  MK=$!
fi
if has tests; then
  for t in ${TESTS:-test_cuda_ops test_cuda_model}; do
    (cd build-gpu && timeout 100 ./tests/$t) > "$OUT/$t.log" 2>&1
    echo "$t: exit $? $(grep -E 'passed' "$OUT/$t.log" | tail -n 1)"
    grep -E "FAIL" "$OUT/$t.log" | head -n 12
    grep -E "cascade|decode batch 16" "$OUT/$t.log" | head -n 20
  done
fi
[ -n "${MK:-}" ] && { wait $MK; tail -n 2 "$OUT/make_model.log"; }
echo "after tests: $(( $(date +%s) - T0 )) s"
if has step; then
  for cs in ${STEP_CS:-0 1 2 8 1t}; do   # DSPY_CUDA_CASCADE: off, default, n shared slices; 1t: tails in 1 slice
    for cfg in ${STEP_BATCHES:-"16 1300"}; do
      set -- $cfg
      printf 'step cascade=%s batch %s shared %s: ' $cs $1 $2
      DSPY_CUDA_CASCADE_TAIL=$([ $cs = 1t ] && echo 1 || echo 0) DSPY_CUDA_CASCADE=${cs%t} timeout 60 build-gpu/bench/bench_gpu --model "$MODEL" --device cuda --only-step 1 --step-batch $1 \
        --step-shared $2 2>&1 | grep '"step"' | tee -a "$OUT/step.jsonl" | grep -E 'forward|composed|without attention"' | tr '\n' ' '; echo
    done
  done
fi
echo "after step: $(( $(date +%s) - T0 )) s"
if has b2; then
  for cs in ${B2_ORDER:-0 1 0 1}; do
    printf 'B2 cascade=%s: ' $cs
    DSPY_CUDA_CASCADE=$cs timeout 90 build-gpu/bench/bench_b2 --model "$MODEL" --device cuda 2>&1 | tail -n 1 | tee -a "$OUT/b2.jsonl"
  done
fi
echo "total: $(( $(date +%s) - T0 )) s"
