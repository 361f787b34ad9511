#!/usr/bin/env bash
# run_gpu_h10d.sh — issue 10 B2 (helper h10d): what the batched decode attention and the engine
# warm-up still need measured on the GPU machine. Same layout as bench/run_gpu.sh (run it from the
# repository root with carry/gpu.tar.xz from bench/pack_gpu.sh); builds nothing.
#   1. parity: test_cuda_ops and test_cuda_model by default (test_cuda_model checks that
#      dspy_engine_warmup leaves no trace and the same tokens), test_cuda_ops with the kernel's
#      variants (16-warp CTAs, the L2 prefetch)
#   2. one batch-16 decode step (context 1,564, 1,300 positions in shared blocks) per variant:
#      DSPY_CUDA_DEC_BATCH=0 is the split-K kernel of attention.cu
#   3. B2 without and with the server's warm-up (DSPY_SERVE_WARMUP=1), old and new kernel
# A table last. Logs go to $OUT (the device tool's folder) or ./out.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh"
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT"
B=build-gpu
MODEL=/tmp/llama-1b-shape
MK=""   # the 1B-shape model is written while the parity tests run
if [ ! -f "$MODEL/model.safetensors" ]; then
  LD_LIBRARY_PATH=${ORIG_LD_LIBRARY_PATH-} timeout 300 python3 bench/torch_baseline.py --make-model "$MODEL" \
    > "$OUT/make_model.log" 2>&1 &
  MK=$!
fi
echo "== parity"
(cd $B && timeout 300 ./tests/test_cuda_ops) > "$OUT/test_cuda_ops.log" 2>&1; echo "test_cuda_ops: exit $?"
grep -E "FAIL|decode batch 16, HS=64|passed" "$OUT/test_cuda_ops.log" | tail -n 6
(cd $B && timeout 300 ./tests/test_cuda_model) > "$OUT/test_cuda_model.log" 2>&1; echo "test_cuda_model: exit $?"
grep -E "FAIL|engine:|passed" "$OUT/test_cuda_model.log" | tail -n 6
(cd $B && DSPY_CUDA_DEC_BATCH_WARPS=16 DSPY_CUDA_DEC_BATCH_PF=1 timeout 300 ./tests/test_cuda_ops 2>&1 \
  | grep -E "FAIL|passed" | tail -n 4)
(cd $B && DSPY_CUDA_DEC_BATCH=4 DSPY_CUDA_DEC_BATCH_PF=1 timeout 300 ./tests/test_cuda_ops 2>&1 | grep -E "FAIL|passed" | tail -n 4)
[ -z "$MK" ] || wait "$MK"
echo "== one decode step (graph of 10), batch ${SB:-16}, 1,300 shared positions"
rm -f "$OUT/step.jsonl" "$OUT/b2.jsonl"
step() { # name, then environment assignments
  local name=$1; shift
  env "$@" timeout 100 $B/bench/bench_gpu --model $MODEL --device cuda --only-step 1 --step-batch ${SB:-16} \
    --step-shared 1300 2>&1 | grep '"step"' | sed "s/}\$/, \"name\": \"$name\"}/" >> "$OUT/step.jsonl"
}
step old DSPY_CUDA_DEC_BATCH=0
step new X=1
step new_w16 DSPY_CUDA_DEC_BATCH_WARPS=16
step new_pf DSPY_CUDA_DEC_BATCH_PF=1
step new_w16_pf DSPY_CUDA_DEC_BATCH_WARPS=16 DSPY_CUDA_DEC_BATCH_PF=1
echo "== B2"
b2() { # name, then environment assignments
  local name=$1; shift
  env "$@" timeout 240 $B/bench/bench_b2 --model $MODEL --device cuda 2>&1 | tail -n 2 | \
    sed "s/}\$/, \"name\": \"$name\"}/" | tee -a "$OUT/b2.jsonl"
}
b2 old DSPY_CUDA_DEC_BATCH=0
b2 new X=1
b2 new_warmup DSPY_SERVE_WARMUP=1
b2 old_warmup DSPY_CUDA_DEC_BATCH=0 DSPY_SERVE_WARMUP=1
echo "== table"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = [json.loads(l) for l in open(f"{out}/step.jsonl") if l.startswith("{")]
print("| variant | step us | attention | attn_in | o_proj | mlp_in | down | logits+sample |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
names = []
for r in rows:
    if r["name"] not in names: names.append(r["name"])
for n in names:
    v = {r["variant"].strip(): r for r in rows if r["name"] == n}
    g = lambda k: f'{v[k]["chain_cost_us"]:.0f}' if k in v else "-"
    print(f'| {n} | {v.get("forward+sample", {}).get("us", 0):.0f} | {g("without attention")} | {g("without attn_in")} | '
          f'{g("without o_proj")} | {g("without mlp_in")} | {g("without down")} | {g("without logits+sample")} |')
for l in open(f"{out}/b2.jsonl"):
    if not l.startswith("{"): continue
    r = json.loads(l)
    print(f'B2 {r["name"]}: {r["seconds_with_first"]:.3f} s ({r["seconds_with_first"] - r["seconds"]:.3f} first alone + '
          f'{r["seconds"]:.3f}), errors {r["errors"]}, prefix hit {r["prefix_hit_rate"]:.3f}')
PY
