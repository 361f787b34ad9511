#!/usr/bin/env bash
# run_gpu_h11l2.sh — helper h11l2 (issue 11 T3, LoRA step overhead): the GPU machine's script, run
# from the repository root as `bash build-h11l2/run_gpu_h11l2.sh [tests] [bench]` (default: both)
# with build-h11l2/ from bench/pack_gpu_h11l2.sh carried. Builds nothing.
#   tests: test_cuda_train_lora (the LoRA entries, lora_dx included, against the CPU) and
#          test_cuda_train (the trainer against the CPU trainer, BF16 LoRA packed and unpacked)
#   bench: bench_train --lora 32 of main's build (before, no profile), then of this branch (after,
#          with the profile and the LoRA entries alone), then without lora_u (DSPY_TRAIN_LORA_U=0)
#          and, with NO_DX=1, without lora_dx too; the same call and machine
# A table last. Logs and JSON go to $OUT (the device tool's folder) or ./out.
set -uo pipefail
ROOT=$(pwd)
H=$ROOT/build-h11l2
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT" /work
# the build has its source directory compiled in (test fixtures under tests/ref): on the GPU machine
# (no /work/h11l2 there) point it here; never touch an existing one
[ -e /work/h11l2 ] || ln -sfn "$ROOT" /work/h11l2
mkdir -p /tmp/h11l2 && xz -dc "$H/gpu.tar.xz" | tar -C /tmp/h11l2 -xf -
ORIG_LD=${LD_LIBRARY_PATH-}
export LD_LIBRARY_PATH=/tmp/h11l2/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
B=/tmp/h11l2/bin
MODEL=/tmp/llama-1b-shape
STAGES=${*:-tests bench}
has() { case " $STAGES " in *" $1 "*) return 0;; esac; return 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
MK=""
if has bench && [ ! -f "$MODEL/model.safetensors" ]; then
  LD_LIBRARY_PATH=$ORIG_LD timeout 300 python3 bench/torch_baseline.py --make-model "$MODEL" > "$OUT/make_model.log" 2>&1 &
  MK=$!
fi
if has tests; then
  echo "== parity"
  for t in ${TESTS:-test_cuda_train_lora test_cuda_train}; do
    (cd /tmp/h11l2 && timeout 200 $B/$t) > "$OUT/$t.log" 2>&1; echo "$t: exit $?"
    if [ "$t" = test_cuda_train_lora ]; then grep -E "FAIL|lora_dx|passed" "$OUT/$t.log" | cut -c1-120 | tail -n 30
    else grep -E "FAIL|lora|passed" "$OUT/$t.log" | tail -n 14; grep -E "FAIL" "$OUT/$t.log" | head -n 5; fi
  done
fi
[ -z "$MK" ] || { wait "$MK"; tail -n 1 "$OUT/make_model.log"; }
rm -f "$OUT/t3.jsonl"; touch "$OUT/t3.jsonl"
t3() { # name, environment assignment (X=1 for none), binary, then arguments
  local name=$1 envs=$2 bin=$3; shift 3
  env $envs timeout 150 $B/$bin --model $MODEL --device cuda --lora 32 "$@" 2>&1 |
    grep -E '^\{|error|bench_train' | sed "s/}\$/, \"name\": \"$name\"}/" | tee -a "$OUT/t3.jsonl"
}
if has bench; then
  echo "== T3: LoRA r 32, alpha 64, dropout 0.05, 4 x 2,048 tokens a step, loss on the last fifth"
  t3 before X=1 bench_train_before --no-profile
  t3 after X=1 bench_train
  t3 after_no_lora_u DSPY_TRAIN_LORA_U=0 bench_train --no-profile
  [ -z "${NO_DX:-}" ] || t3 after_no_lora_u_dx "DSPY_TRAIN_LORA_U=0 DSPY_TRAIN_LORA_DX=0" bench_train --no-profile
fi
echo "== table"
python3 - "$OUT/t3.jsonl" <<'PY'
import json, sys
rows = []
for l in open(sys.argv[1]):
    try: rows.append(json.loads(l))
    except Exception: pass
print("| run | step ms | tokens/s | mem GB | loss first -> last | profile |")
print("| --- | --- | --- | --- | --- | --- |")
for r in rows:
    b = r.get("bench", "")
    if b.endswith("_profile"):
        print(f"| {r['name']} profile | | | | | fwd {r['fwd_ms_per_seq']} ms, fwd+bwd {r['fwd_bwd_ms_per_seq']} ms a 2,048 seq; rest {r['rest_of_step_ms']} ms; attention {r['attention_ms_per_step']} ms a step |")
    elif b == "T3_ops":
        print(f"| ops {r['in']}->{r['out']} T {r['T']} | | | | | base fwd {r['base_fwd_ms']} dgrad {r['base_dgrad_ms']}; dropout {r['dropout_ms']} lora fwd {r['lora_fwd_ms']} bwd {r['lora_bwd_ms']} masked add {r['dropout_add_ms']}; bwd no dx {r.get('lora_bwd_no_dx_ms')} lora_dx group of {r.get('group')} {r.get('lora_dx_group_ms')}; lora_u group {r.get('lora_u_group_ms')} fwd u given {r.get('lora_fwd_u_given_ms')} (ms) |")
    elif b.startswith("T3"):
        ms = r.get("step_ms", 1e3 * r["seconds"] / r["steps"])
        print(f"| {r['name']} | {ms:.1f} | {r['tokens_per_s']:.0f} | {r.get('mem_gb', '')} | {r['loss_first']:.4f} -> {r['loss_last']:.4f} | |")
PY
