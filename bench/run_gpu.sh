#!/usr/bin/env bash
# run_gpu.sh — the GPU machine's one script for issue 9: parity tests, then our benchmarks and
# PyTorch's in the same run, then a table. Builds nothing: run it from the repository root with
# the GPU build (cmake -B build-gpu; the default architectures "90a-real;90-virtual") and the shared tokenizer gathered
# into carry/ by bench/pack_gpu.sh.
#
#   bench/run_gpu.sh [tests] [bench] [step] [ncu] [minkeys] [attn] [pfvar] [cluster] [b1pair] [sweep] [b2] [torch] [serve] [t1] [t2] [t3] [ddp] [b3] [tutorial] [parity1b]
#   (default: tests bench torch serve)
# parity1b: issue 11 item 5 at the 1B shape — 20 T1 steps' losses against PyTorch eager's in the same
#     run (torch_train.py --curve-vs, 2 %) and the trained checkpoint's logits in transformers
#     against ours (bench_train --export, torch_train.py --check-export, 5e-2).
# t1: issue 11's training benchmark (bench_train, then bench/torch_train.py eager and compiled).
# step: also decode steps of STEP_BATCHES ("batch DSPY_CUDA_MMA shared-positions weights" quadruples; weights bf16 or fp8).
# t2: issue 11's T2 (bench_train --t2 one epoch, shared and unshared; torch_train.py --t2, T2_TORCH_STEPS
#     of the epoch's steps timed and scaled, said in its output).
# t3: issue 11's T3 (bench_train --lora 32; torch_train.py --lora 32: peft, eager and compiled).
# ddp: issue 17's T1 on DDP_GPUS GPUs (bench_train ranks; PyTorch DDP under torchrun); t1 gives one GPU's.
# ncu: warp-stall reasons and source counters of the decode step's kernels (bench_gpu's step at
#     NCU_BATCH sequences, default 16, FP8 weights, B2's context); build with
#     -DDSPY_CUDA_LINEINFO=ON for the source lines. ncu locks the SM clock at base (~1.37 GHz).
# tutorial: issue 12 item 8, `dspy compile` end to end on the 1B shape (TUT_ARGS adds options;
#     TUT_TEACHER=openai/local:DIR makes our own server the teacher instead of the oracle).
# Logs and JSON go to $OUT (the device tool's folder) or ./out.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh"
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT"
# everything printed also into one file: the device tool returns only the last 12,000 characters
# of the output and at most 8 files
exec > >(tee -a "$OUT/run_gpu.txt") 2>&1
STAGES=${*:-tests bench torch serve}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
echo "node: $(command -v node) $(node --version 2>/dev/null)  npm: $(command -v npm)"
# the GPUs as the build sees them (cuBLASLt is opened at run time: a missing one shows here)
build-gpu/bin/dspy version | tee -a "$OUT/gpu.txt"
MODEL=/tmp/llama-1b-shape
has() { case " $STAGES " in *" $1 "*) return 0;; esac; return 1; }

if has tests; then
  echo "== GPU parity tests"
  LOGS=/tmp/dspy-gpu-logs   # the whole logs, packed into one file of $OUT below
  mkdir -p $LOGS
  for t in ${TESTS:-$(cd build-gpu/tests && ls test_cuda_* 2>/dev/null)}; do   # TESTS: a subset
    (cd build-gpu && timeout 300 ./tests/$t) > "$LOGS/$t.log" 2>&1; echo "$t: exit $?"; grep -E "FAIL|passed" "$LOGS/$t.log" | tail -n 12
  done
  tar -C /tmp -czf "$OUT/test_logs.tgz" dspy-gpu-logs
  [ -n "${TESTS:-}" ] || {
  echo "-- the kernel variants the benchmark compares (one query head per prefill CTA; every kernel releasing early)"
  (cd build-gpu && DSPY_CUDA_PREFILL64=0 DSPY_CUDA_PREFILL_HEADS=1 DSPY_CUDA_RELEASE=31 timeout 300 ./tests/test_cuda_ops 2>&1 | grep -E "FAIL|passed" | tail -n 5)
  echo "-- the older prefill kernel at head size 64 (DSPY_CUDA_PREFILL64=0), and decode rows 5-16 on the composed path (DSPY_CUDA_MMA=0)"
  (cd build-gpu && DSPY_CUDA_PREFILL64=0 DSPY_CUDA_MMA=0 timeout 300 ./tests/test_cuda_ops 2>&1 | grep -E "FAIL|passed" | tail -n 5)
  (cd build-gpu && DSPY_CUDA_PREFILL64=0 DSPY_CUDA_MMA=0 timeout 300 ./tests/test_cuda_model 2>&1 | grep -E "FAIL|passed" | tail -n 5)
  (cd build-gpu && DSPY_CUDA_RELEASE=31 timeout 300 ./tests/test_cuda_model 2>&1 | grep -E "FAIL|passed" | tail -n 5)
  echo "-- the prefill attention's key ranges split over clusters of 2, 5 and 8 in every call (DSPY_CUDA_PREFILL_SPLIT), and never (=1)"
  for v in 2 5 8 1; do (cd build-gpu && DSPY_CUDA_PREFILL_SPLIT=$v timeout 300 ./tests/test_cuda_ops 2>&1 | grep -E "FAIL|passed" | tail -n 3); done
  (cd build-gpu && DSPY_CUDA_PREFILL_SPLIT=4 timeout 300 ./tests/test_cuda_model 2>&1 | grep -E "FAIL|passed" | tail -n 3)
  echo "-- decode rows 1-4: every one on the GEMV (DSPY_CUDA_MMA_SMALL=0), every one on tensor cores (=2)"
  for v in 0 2; do (cd build-gpu && DSPY_CUDA_MMA_SMALL=$v timeout 300 ./tests/test_cuda_ops 2>&1 | grep -E "FAIL|passed" | tail -n 3); done
  echo "-- mlp_in and logits summed by groups of 4 warps whatever their size (DSPY_CUDA_MMA_KW=4), and by whole blocks (=16)"
  for v in 4 16; do (cd build-gpu && DSPY_CUDA_MMA_KW=$v timeout 300 ./tests/test_cuda_ops 2>&1 | grep -E "FAIL|passed" | tail -n 3); done
  echo "-- W8A8 prompt rows rounded by linear itself, not written as codes by rmsnorm / SwiGLU (DSPY_CUDA_ACT8_FUSE=0)"
  for t in test_w8a8 test_act8_producers; do (cd build-gpu && DSPY_CUDA_ACT8_FUSE=0 timeout 300 ./tests/test_cuda_ops --only $t 2>&1 | grep -E "FAIL|passed" | tail -n 3); done
  echo "-- the prefill attention's warps past a segment's last row computing as the others (DSPY_CUDA_PREFILL_SKIP=0)"
  (cd build-gpu && DSPY_CUDA_PREFILL_SKIP=0 timeout 300 ./tests/test_cuda_ops --only test_attention 2>&1 | grep -E "FAIL|passed" | tail -n 3)
  echo "-- the prefill attention on mma.sync instead of the warpgroup MMA (DSPY_CUDA_PREFILL_WG=0; also with PREFILL_SKIP=0)"
  (cd build-gpu && DSPY_CUDA_PREFILL_WG=0 timeout 300 ./tests/test_cuda_ops --only test_attention 2>&1 | grep -E "FAIL|passed" | tail -n 3)
  (cd build-gpu && DSPY_CUDA_PREFILL_WG=0 DSPY_CUDA_PREFILL_SKIP=0 timeout 300 ./tests/test_cuda_ops --only test_attention 2>&1 | grep -E "FAIL|passed" | tail -n 3)
  (cd build-gpu && DSPY_CUDA_PREFILL_WG=0 timeout 300 ./tests/test_cuda_model 2>&1 | grep -E "FAIL|passed" | tail -n 3)
  echo "-- W8A8 calls never cut into K slices (DSPY_CUDA_SPLITK=1), always into 2, 3, 4 where the sizes allow"
  for v in 1 2 3 4; do for t in test_w8a8 test_act8_producers; do (cd build-gpu && DSPY_CUDA_SPLITK=$v timeout 300 ./tests/test_cuda_ops --only $t 2>&1 | grep -E "FAIL|passed" | tail -n 3); done; done
  }
fi
if has bench || has torch || has sweep || has b2 || has step || has ncu || has minkeys || has attn || has pfvar || has cluster || has b1pair || has b3 || has t2 || has t1 || has t3 || has ddp || has parity1b; then
  [ -f "$MODEL/model.safetensors" ] || LD_LIBRARY_PATH=${ORIG_LD_LIBRARY_PATH-} timeout 300 python3 bench/torch_baseline.py --make-model "$MODEL" 2>&1 | tail -2
fi
if has bench; then
  echo "== ours"
  timeout 400 build-gpu/bench/bench_gpu --model "$MODEL" --device cuda 2>&1 | tee "$OUT/bench_ours.jsonl"
  echo "-- B1 without programmatic dependent launch, and without CUDA graphs"
  DSPY_CUDA_PDL=0 timeout 100 build-gpu/bench/bench_gpu --model "$MODEL" --device cuda --only-b1 1 2>&1 | grep B1
  DSPY_CUDA_GRAPHS=0 timeout 100 build-gpu/bench/bench_gpu --model "$MODEL" --device cuda --only-b1 1 2>&1 | grep B1
  echo "-- prefill with the older attention kernel (DSPY_CUDA_PREFILL64=0)"
  DSPY_CUDA_PREFILL64=0 timeout 100 build-gpu/bench/bench_gpu --model "$MODEL" --device cuda --only-prefill 1 2>&1 | grep -E '"prefill"|prefill_op'
  echo "-- prefill with other chunk sizes"
  for ch in 8192 16384; do
    timeout 100 build-gpu/bench/bench_gpu --model "$MODEL" --device cuda --only-prefill 1 --prefill-chunk $ch 2>&1 | grep '"prefill"'
  done
  timeout 120 build-gpu/bin/dspy generate --model "$MODEL" --device cuda --prompt-ids 128000,9906,1917 \
    --max-tokens 128 --ignore-eos --print-ids 2>&1 >/dev/null | tee "$OUT/generate.txt"
fi
if has step; then
  echo "== one decode step on the device alone (graph of 10 steps), and each op's cost in the chain"
  for rl in ${RELEASES:-11}; do
    echo "-- DSPY_CUDA_RELEASE=$rl"
    DSPY_CUDA_RELEASE=$rl timeout 100 build-gpu/bench/bench_gpu --model "$MODEL" --device cuda --only-step 1 2>&1 | grep '"step"'
  done
  # batch, DSPY_CUDA_MMA, shared prefix positions, weights
  for cfg in ${STEP_BATCHES:-"16 1 0 bf16" "16 0 0 bf16" "16 1 1300 bf16" "8 1 0 bf16" "14 1 1300 bf16" "14 1 1300 fp8" "16 1 1300 fp8"}; do
    set -- $cfg
    echo "-- $1 sequences, DSPY_CUDA_MMA=$2, first $3 positions in shared KV blocks, $4 weights"
    DSPY_CUDA_MMA=$2 timeout 100 build-gpu/bench/bench_gpu --model "$MODEL" --device cuda --only-step 1 --step-batch $1 \
      --step-shared $3 --weights $4 2>&1 | grep '"step"'
  done
fi
if has minkeys; then
  echo "== B1 over the decode attention's fewest keys per slice (DSPY_CUDA_DEC_MIN_KEYS)"
  for rep in $(seq ${REPS:-2}); do
    for mk in 32 64 128; do
      printf 'min_keys %s: ' $mk
      DSPY_CUDA_DEC_MIN_KEYS=$mk timeout 100 build-gpu/bench/bench_gpu --model "$MODEL" --device cuda --only-b1 1 2>&1 | grep -E '"B1"'
    done
  done
fi
if has attn; then
  echo "== prefill attention alone: PyTorch SDPA on 100 x 1,500 (ours: the prefill_op attention row of bench)"
  LD_LIBRARY_PATH=${ORIG_LD_LIBRARY_PATH-} PYTHONUNBUFFERED=1 timeout 200 python3 bench/torch_baseline.py --attn 2>&1 | grep attn_torch
  timeout 100 build-gpu/bench/bench_gpu --model "$MODEL" --device cuda --only-prefill-ops 1 2>&1 | grep prefill_op
fi
if has pfvar; then
  echo "== prefill attention variants: k_prefill64 (default), then the older kernel (DSPY_CUDA_PREFILL64=0) by"
  echo "   DSPY_CUDA_PREFILL_HEADS (cuda.cuh: 4 its default, 2 Q held, 1 one head a CTA)"
  printf 'k_prefill64: '
  timeout 100 build-gpu/bench/bench_gpu --model "$MODEL" --device cuda --only-prefill-ops 1 2>&1 | grep '"attention"'
  export DSPY_CUDA_PREFILL64=0
  for v in ${PFVARS:-4 2 1}; do
    printf 'variant %s: ' $v
    DSPY_CUDA_PREFILL_HEADS=$v timeout 100 build-gpu/bench/bench_gpu --model "$MODEL" --device cuda --only-prefill-ops 1 2>&1 | grep '"attention"'
    (cd build-gpu && DSPY_CUDA_PREFILL_HEADS=$v timeout 300 ./tests/test_cuda_ops 2>&1 | grep -E "FAIL|passed" | tail -n 3)
  done
  for v in ${PFFULL:-}; do
    for ch in 16384 32768; do
      printf 'variant %s, whole prefill: ' $v
      DSPY_CUDA_PREFILL_HEADS=$v timeout 100 build-gpu/bench/bench_gpu --model "$MODEL" --device cuda --only-prefill 1 --prefill-chunk $ch 2>&1 | grep '"prefill"'
    done
  done
  unset DSPY_CUDA_PREFILL64
fi
if has cluster; then
  echo "== decode attention combined through thread-block clusters (DSPY_CUDA_DEC_CLUSTER: 0 global, 16 the default)"
  for c in 0; do
    echo "-- parity of the fallback (global combine; the tests stage runs the default)"
    (cd build-gpu && DSPY_CUDA_DEC_CLUSTER=$c timeout 300 ./tests/test_cuda_ops 2>&1 | grep -E "FAIL|passed" | tail -n 3)
    (cd build-gpu && DSPY_CUDA_DEC_CLUSTER=$c timeout 300 ./tests/test_cuda_model 2>&1 | grep -E "FAIL|passed" | tail -n 3)
  done
  for rep in $(seq ${REPS:-2}); do
    for c in 0 16; do
      printf 'cluster %s: ' $c
      DSPY_CUDA_DEC_CLUSTER=$c timeout 100 build-gpu/bench/bench_gpu --model "$MODEL" --device cuda --only-b1 1 2>&1 | grep -E '"B1"'
    done
  done
  DSPY_CUDA_DEC_CLUSTER=16 timeout 100 build-gpu/bench/bench_gpu --model "$MODEL" --device cuda --only-step 1 2>&1 | grep '"step"' | head -4
fi
if has b1pair; then
  echo "== B1: ours and PyTorch's (eager, compiled) in the same call"
  for rep in 1 2; do timeout 100 build-gpu/bench/bench_gpu --model "$MODEL" --device cuda --only-b1 1 2>&1 | grep -E '"B1'; done | tee "$OUT/bench_ours.jsonl"
  LD_LIBRARY_PATH=${ORIG_LD_LIBRARY_PATH-} PYTHONUNBUFFERED=1 timeout 300 python3 bench/torch_baseline.py --model "$MODEL" --b1 2>&1 \
    | grep '"B1_torch"' | tee "$OUT/bench_torch.jsonl"
fi
if has sweep; then
  echo "== B1 over the early-release variants (DSPY_CUDA_RELEASE bits: 1 linear, 2 attention, 4 attn_in, 8 mlp_in, 16 logits; default 11)"
  for rep in $(seq ${REPS:-2}); do
    for rl in ${RELEASES:-11 2 3 27 10}; do
      printf 'release %s: ' $rl
      DSPY_CUDA_RELEASE=$rl timeout 100 build-gpu/bench/bench_gpu --model "$MODEL" --device cuda --only-b1 1 2>&1 | grep -E '"B1"'
    done
  done
fi
if has b2; then
  echo "== B2: 100 requests (1,300 shared + 200 own tokens, 80 new) by 16 clients to dspy serve --device cuda"
  echo "-- the first request alone, then 99; a cold burst of all 100 (--burst); each with BF16 and FP8 weights, and W8A8"
  echo "   (FP8 weights and FP8 activations in the prompt GEMMs)"
  for mode in "" "--burst"; do for w in ${B2_WEIGHTS:-bf16 fp8 w8a8}; do
    timeout 240 build-gpu/bench/bench_b2 --model "$MODEL" --device cuda --weights $w $mode 2>&1 | tail -n 4 | tee -a "$OUT/bench_ours.jsonl"
  done; done
  echo "-- the same 100 prompts as one batched generate() in PyTorch"
  LD_LIBRARY_PATH=${ORIG_LD_LIBRARY_PATH-} PYTHONUNBUFFERED=1 timeout 300 python3 bench/torch_baseline.py --model "$MODEL" --b2 2>&1 \
    | grep '"B2_torch"' | tee -a "$OUT/bench_torch.jsonl"
fi
if has torch; then
  echo "== PyTorch"
  LD_LIBRARY_PATH=${ORIG_LD_LIBRARY_PATH-} PYTHONUNBUFFERED=1 timeout 500 python3 bench/torch_baseline.py --model "$MODEL" --b1 --prefill 2>&1 \
    | grep -v Warning | tee "$OUT/bench_torch.jsonl"
fi
if has ncu; then
  echo "== ncu: the decode step's kernels at ${NCU_BATCH:-16} sequences, FP8 weights (stall reasons per issued instruction)"
  NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
  timeout 300 "$NCU" --kernel-name regex:'k_attn_decode_batch|k_mma_mlp_in|k_mma_attn_in|k_mma_linear|k_mma_logits|k_sample' \
    --launch-skip 200 --launch-count 12 --section SpeedOfLight --section WarpStateStats --section SourceCounters \
    --metrics regex:'smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio',smsp__inst_executed.sum,smsp__cycles_active.avg \
    build-gpu/bench/bench_gpu --model "$MODEL" --device cuda --only-step 1 --step-batch ${NCU_BATCH:-16} --step-shared 1300 \
    --weights fp8 > "$OUT/ncu_step.txt" 2>&1
  echo "ncu: exit $? (full report: ncu_step.txt)"
  grep -E '^  [a-z_].*\(|Duration|stalled_(long_scoreboard|barrier|wait|math_pipe|no_instruction|short_scoreboard)|inst_executed' \
    "$OUT/ncu_step.txt" | cut -c1-150 | head -n 120
fi
if has b3; then
  echo "== B3: 256 clients, 2,000 requests a round (16 tokens, every 2nd streamed), 5 rounds, dspy serve --device cuda"
  timeout 400 build-gpu/bench/bench_serve_load --scenario crowd --model "$MODEL" --device cuda --clients 256 --reqs 2000 \
    --rounds 5 --max-tokens 16 --stream-every 2 2>&1 | tee "$OUT/b3.txt" | grep -E "^(server|crowd|bench_serve_load)"
fi
if has t2; then
  echo "== T2: the tutorial's fine-tune (500 examples, a shared 1,300-token prompt + ~280 own tokens, batch 1 x 8,"
  echo "   BF16), one epoch measured, ours without and with prefix-shared steps, then PyTorch eager and compiled"
  timeout 150 build-gpu/bench/bench_train --t2 --model "$MODEL" --device cuda --epochs 1 --warmup 1 2>&1 | tee "$OUT/t2.jsonl"
  LD_LIBRARY_PATH=${ORIG_LD_LIBRARY_PATH-} PYTHONUNBUFFERED=1 timeout ${T2_TORCH_TIMEOUT:-240} python3 bench/torch_train.py --t2 \
    --model "$MODEL" --modes eager,compiled --epochs 1 --warmup 1 --t2-steps ${T2_TORCH_STEPS:-16} 2>&1 \
    | grep --line-buffered -v Warning | tee -a "$OUT/t2.jsonl"
fi
if has tutorial; then
  echo "== issue 12 item 8: the tutorial end to end on the GPU (oracle teacher, 1B-shape student, 500 traces,"
  echo "   DSPy's default train_kwargs on CUDA, ChainOfThought over the 77 labels, 100 dev questions by ${TUT_THREADS:-16} threads)"
  TS=/tmp/tut-student; TO=/tmp/tut-out
  [ -f "$TS/model.safetensors" ] || build-gpu/bin/dspy init-model --preset 1b-shape --weights \
    --tokenizer /work/shared/models/llama3-tokenizer --out "$TS" --seed 0 --force 2>&1 | tail -n 1
  t0=$(date +%s)
  timeout ${TUT_TIMEOUT:-500} build-gpu/bin/dspy compile --teacher "${TUT_TEACHER:-oracle}" --student "$TS" --data-dir /work/shared/data/banking77 \
    --baselines none --device cuda --train-kwargs device=cuda ${TUT_ARGS:-} -n ${TUT_THREADS:-16} --out "$TO" --force \
    > "$OUT/tutorial.log" 2>&1
  echo "dspy compile: exit $? after $(( $(date +%s) - t0 )) s"
  grep -E "^(Bootstrap|Fine-tune|Evaluate|Total)|fine-tuned student|majority" "$OUT/tutorial.log" | head -n 12
  cp "$TO/report.json" "$OUT/tutorial_report.json" 2>/dev/null
  python3 -c "import json; d = json.load(open('$TO/report.json')); print({k: round(v, 2) for k, v in d.items() if k.startswith('seconds')})" 2>&1 | tail -n 1
fi
if has t1; then
  echo "== T1: full fine-tuning, 4 x 2,048 tokens a step, loss on the last fifth (ours BF16, then PyTorch)"
  timeout 300 build-gpu/bench/bench_train --model "$MODEL" --device cuda 2>&1 | tee "$OUT/bench_train.jsonl"
  LD_LIBRARY_PATH=${ORIG_LD_LIBRARY_PATH-} PYTHONUNBUFFERED=1 timeout 400 python3 bench/torch_train.py --model "$MODEL" 2>&1 \
    | grep -v Warning | tee -a "$OUT/bench_train.jsonl"
fi
if has parity1b; then
  echo "== 1B parity: 20 T1 steps against PyTorch eager, the trained checkpoint in transformers"
  rm -rf /tmp/t1-export
  timeout 300 build-gpu/bench/bench_train --model "$MODEL" --device cuda --steps 18 --warmup 2 --no-profile \
    --export /tmp/t1-export 2>&1 | grep '"bench"' | tee "$OUT/parity1b_ours.jsonl"
  LD_LIBRARY_PATH=${ORIG_LD_LIBRARY_PATH-} PYTHONUNBUFFERED=1 timeout 300 python3 bench/torch_train.py --model "$MODEL" \
    --modes eager --steps 18 --warmup 2 --curve-vs "$OUT/parity1b_ours.jsonl" 2>&1 | grep -v -i warning | tee "$OUT/parity1b.txt"
  LD_LIBRARY_PATH=${ORIG_LD_LIBRARY_PATH-} PYTHONUNBUFFERED=1 timeout 300 python3 bench/torch_train.py --model "$MODEL" \
    --check-export /tmp/t1-export 2>&1 | grep -v -i warning | tee -a "$OUT/parity1b.txt"
fi
if has ddp; then   # issue 17: needs DDP_GPUS (default 2) GPUs; multicast off in every rank
  n=${DDP_GPUS:-2}; port=$((29500 + RANDOM % 1000))
  echo "== T1 on $n GPUs: $n ranks of bench_train (4 x 2,048 tokens a GPU a step), then PyTorch DDP (torchrun, compiled)"
  for r in $(seq 0 $((n - 1))); do
    WORLD_SIZE=$n RANK=$r LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port NCCL_NVLS_ENABLE=0 \
      timeout 300 build-gpu/bench/bench_train --model "$MODEL" --device cuda --no-profile > "$OUT/ddp_rank$r.log" 2>&1 &
  done
  wait
  grep -h '"bench"' "$OUT/ddp_rank0.log"; grep -h -i "error" "$OUT"/ddp_rank*.log | head -n 5
  LD_LIBRARY_PATH=${ORIG_LD_LIBRARY_PATH-} NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 \
    timeout 400 torchrun --nproc-per-node "$n" bench/torch_train.py --model "$MODEL" --modes compiled 2>&1 | grep T1_torch
fi
if has t3; then
  echo "== T3: LoRA r=32 (alpha 64, dropout 0.05) on every linear layer, the T1 steps (ours BF16 base, then PyTorch + peft)"
  timeout 300 build-gpu/bench/bench_train --model "$MODEL" --device cuda --lora 32 --no-profile 2>&1 | tee "$OUT/bench_t3.jsonl"
  LD_LIBRARY_PATH=${ORIG_LD_LIBRARY_PATH-} PYTHONUNBUFFERED=1 timeout 400 python3 bench/torch_train.py --model "$MODEL" --lora 32 2>&1 \
    | grep -v Warning | tee -a "$OUT/bench_t3.jsonl"
fi
if has serve; then
  if [ -f "$ROOT/carry/node.tar.xz" ]; then   # node, npm and the OpenAI SDK (pack_gpu.sh WITH_NODE=1)
    mkdir -p /tmp/dspy-node && xz -dc "$ROOT/carry/node.tar.xz" | tar -C /tmp/dspy-node -xf -
    export PATH=/tmp/dspy-node/node/bin:$PATH DSPY_NPM_CACHE=/tmp/dspy-node/npm-cache
    echo "node: $(node --version) npm: $(npm --version 2>&1 | tail -n 1)"
  fi
  echo "== server e2e on the GPU (dspy serve --device auto picks CUDA)"
  (cd build-gpu && timeout 300 ./tests/test_serve > "$OUT/serve_e2e.log" 2>&1); echo "test_serve: exit $? (77 = skipped)"
  grep -i -E "passed|skip|sdk|node" "$OUT/serve_e2e.log" | tail -n 12
fi
echo "== table"
python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
rows = []
def load(name):
    p = os.path.join(out, name)
    if not os.path.exists(p): return []
    res = []
    for line in open(p):
        line = line.strip()
        if line.startswith("{"):
            try: res.append(json.loads(line))
            except Exception: pass
    return res
ours_rows = load("bench_ours.jsonl")
ours = {r["bench"]: r for r in ours_rows}
torch = load("bench_torch.jsonl")
tb1 = {r["mode"]: r for r in torch if r["bench"] == "B1_torch"}
tpf = {r["mode"]: r for r in torch if r["bench"] == "prefill_torch"}
print("| measure | dspy.c | PyTorch eager | PyTorch compiled | ratio vs compiled | floor |")
print("| --- | --- | --- | --- | --- | --- |")
if "B1" in ours:
    b = ours["B1"]; c = tb1.get("compiled", {}).get("ms_per_token"); e = tb1.get("eager", {}).get("ms_per_token")
    print(f"| B1 decode ms/token | {b['ms_per_token']:.3f} | {e or '-'} | {c or '-'} | "
          f"{(c / b['ms_per_token']) if c else 0:.2f}x | {b['floor_ms']:.3f} ms ({100 * b['fraction_of_floor']:.0f}% of floor) |")
if "B1_constrained" in ours:
    b = ours["B1_constrained"]
    print(f"| B1 constrained ms/token | {b['ms_per_token']:.3f} | | | | mask overhead {100 * b['overhead']:.1f}% (target <= 5%) |")
if "prefill" in ours:
    p = ours["prefill"]; c = tpf.get("compiled", {}).get("seconds"); e = tpf.get("eager", {}).get("seconds")
    print(f"| prefill 100x1500 s | {p['seconds']:.3f} | {e or '-'} | {c or '-'} | "
          f"{(min(x for x in (c, e) if x) / p['seconds']) if (c or e) else 0:.2f}x vs best | {p['floor_s']:.3f} s ({p['tflops']:.0f} TFLOP/s) |")
tb2 = {r["mode"]: r for r in torch if r["bench"] == "B2_torch"}
c = tb2.get("compiled", {}).get("seconds"); e = tb2.get("eager", {}).get("seconds")
for b in (r for r in ours_rows if r.get("bench") == "B2"):  # one row per mode and weights
    first = b["mode"] == "first-alone"
    s = b["seconds_with_first"] if first else b["seconds"]
    what = "first alone, then 99" if first else "cold burst"
    print(f"| B2 100 requests s ({what}, {b.get('weights', 'bf16')}) | {s:.3f}" + (f" (99: {b['seconds']:.3f})" if first else "") +
          f" | {e or '-'} | {c or '-'} | {(c / s) if c else 0:.2f}x | "
          f"prefix hits {b['prefix_hit_rate']:.3f} of prompt, {b.get('prefix_hit_of_shared', -1):.3f} of the shared part, {b['req_per_s']:.0f} req/s |")
tr = load("bench_train.jsonl")
t1 = {r["bench"]: r for r in tr if r["bench"] in ("T1", "T1_profile")}
t1t = {r["mode"]: r for r in tr if r["bench"] == "T1_torch"}
if "T1" in t1:
    b = t1["T1"]; c = t1t.get("compiled", {}); e = t1t.get("eager", {})
    fmt = lambda r: f"{r['tokens_per_s']:.0f} tok/s, MFU {100 * r['mfu']:.1f}%, {r.get('mem_reserved_gb', r.get('mem_gb'))} GB" if r else "-"
    ratio = b["tokens_per_s"] / c["tokens_per_s"] if c else 0
    print(f"| T1 full FT 4x2048 ({b['precision']}) | {fmt(b)} | {fmt(e)} | {fmt(c)} | {ratio:.2f}x | "
          f"losses ours {b['loss_first']:.4f} -> {b['loss_last']:.4f}, compiled {c.get('loss_first', 0):.4f} -> {c.get('loss_last', 0):.4f} |")
if "T1_profile" in t1:
    p = t1["T1_profile"]
    print(f"| T1 step breakdown (ours) | step {p['step_ms']:.1f} ms: fwd {p['fwd_ms_per_seq']:.1f} / fwd+bwd {p['fwd_bwd_ms_per_seq']:.1f} ms per seq, "
          f"optimizer {p['rest_of_step_ms']:.1f} ms, attention {p['attention_ms_per_step']:.1f} ms/step | | | | |")
t3 = load("bench_t3.jsonl")
t3o = next((r for r in t3 if r["bench"] == "T3"), None)
t3t = {r["mode"]: r for r in t3 if r["bench"] == "T3_torch"}
if t3o:
    c = t3t.get("compiled", {}); e = t3t.get("eager", {})
    best = max((r["tokens_per_s"] for r in (c, e) if r), default=0)
    fmt = lambda r: f"{r['tokens_per_s']:.0f} tok/s, {r.get('mem_reserved_gb', r.get('mem_gb'))} GB" if r else "-"
    print(f"| T3 LoRA r=32 all-linear 4x2048 ({t3o['precision']}) | {fmt(t3o)} | {fmt(e)} | {fmt(c)} | "
          f"{(t3o['tokens_per_s'] / best) if best else 0:.2f}x vs best | losses ours {t3o['loss_first']:.4f} -> {t3o['loss_last']:.4f}, "
          f"peft {c.get('loss_first', e.get('loss_first', 0)):.4f} -> {c.get('loss_last', e.get('loss_last', 0)):.4f} |")
for r in load("t2.jsonl"):
    if r.get("bench") == "T2":
        print(f"| T2 ours BF16 {'prefix-shared' if r['share_prefix'] else 'unshared'} (1 epoch) | {r['seconds']:.2f} s, "
              f"5 epochs ~{r['est_5_epochs_s']:.1f} s | | | | {r['tokens_computed']} of {r['tokens']} tokens computed |")
    elif r.get("bench") == "T2_torch":
        ex = f" (from {r['extrapolated_from_steps']} steps)" if r.get("extrapolated_from_steps") else ""
        print(f"| T2 PyTorch {r['mode']} (1 epoch{ex}) | | {r['epoch_s']:.2f} s, 5 epochs ~{r['est_5_epochs_s']:.1f} s | | | |")
if "copy" in ours:
    print(f"| copy bandwidth | {ours['copy']['GBps']:.0f} GB/s | | | | weights {ours['copy']['weight_bytes'] / 1e9:.2f} GB |")
PY
