#!/usr/bin/env bash
# run_gpu_h11l.sh — helper h11l (issue 11 T3, LoRA r 32 on every linear layer): the GPU machine's
# script, run from the repository root as `bash build-h11l/run_gpu_h11l.sh [tests] [bench] [torch]`
# (default: all three) with build-h11l/ from bench/pack_gpu_h11l.sh carried. Builds nothing.
#   tests: test_cuda_train_lora (the LoRA entries against the CPU), test_cuda_train (the trainer
#          against the CPU trainer, BF16 LoRA packed and unpacked included), test_cuda_train_ops
#          (TESTS overrides the list)
#   bench: bench_train --lora 32 (then its profile and the LoRA entries alone), the same without
#          dropout (--lora-dropout 0) and, with UNPACKED=1, unpacked (DSPY_TRAIN_GROUP_TOKENS=0)
#   torch: bench/torch_train.py --lora 32 --modes ${TORCH_MODES:-compiled} (PyTorch + peft)
# A table last. Logs and JSON go to $OUT (the device tool's folder) or ./out.
set -uo pipefail
ROOT=$(pwd)
H=$ROOT/build-h11l
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT" /work
# the build has its source directory compiled in (test fixtures under tests/ref): on the GPU machine
# (no /work/h11l there) point it here; never touch an existing one
[ -e /work/h11l ] || ln -sfn "$ROOT" /work/h11l
mkdir -p /tmp/h11l && xz -dc "$H/gpu.tar.xz" | tar -C /tmp/h11l -xf -
ORIG_LD=${LD_LIBRARY_PATH-}
export LD_LIBRARY_PATH=/tmp/h11l/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
B=/tmp/h11l/bin
MODEL=/tmp/llama-1b-shape
STAGES=${*:-tests bench torch}
has() { case " $STAGES " in *" $1 "*) return 0;; esac; return 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
MK=""
if (has bench || has torch) && [ ! -f "$MODEL/model.safetensors" ]; then
  LD_LIBRARY_PATH=$ORIG_LD timeout 300 python3 bench/torch_baseline.py --make-model "$MODEL" > "$OUT/make_model.log" 2>&1 &
  MK=$!
fi
if has tests; then
  echo "== parity"
  for t in ${TESTS:-test_cuda_train_lora test_cuda_train test_cuda_train_ops}; do
    (cd /tmp/h11l && timeout 200 $B/$t) > "$OUT/$t.log" 2>&1; echo "$t: exit $?"
    if [ "$t" = test_cuda_train_lora ]; then grep -v "bit-identical: yes" "$OUT/$t.log" | cut -c1-110 | tail -n 40
    else grep -E "FAIL|lora|passed" "$OUT/$t.log" | tail -n 14; grep -E "FAIL" "$OUT/$t.log" | head -n 5; fi
  done
fi
[ -z "$MK" ] || { wait "$MK"; tail -n 1 "$OUT/make_model.log"; }
rm -f "$OUT/t3.jsonl"; touch "$OUT/t3.jsonl"
t3() { # name, then arguments, then environment assignments after --
  local name=$1; shift
  local args=() envs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do args+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  envs=("$@")
  env "${envs[@]}" timeout 150 $B/bench_train --model $MODEL --device cuda --lora 32 "${args[@]}" 2>&1 |
    grep -E '^\{|error|bench_train' | sed "s/}\$/, \"name\": \"$name\"}/" | tee -a "$OUT/t3.jsonl"
}
if has bench; then
  echo "== T3: LoRA r 32, alpha 64, dropout 0.05, 4 x 2,048 tokens a step, loss on the last fifth"
  t3 ours -- X=1
  t3 ours_no_dropout --no-profile --lora-dropout 0 -- X=1
  [ -z "${UNPACKED:-}" ] || t3 ours_unpacked --no-profile -- DSPY_TRAIN_GROUP_TOKENS=0
fi
if has torch; then
  echo "== PyTorch + peft"
  LD_LIBRARY_PATH=$ORIG_LD PYTHONUNBUFFERED=1 timeout 300 python3 bench/torch_train.py --model "$MODEL" --lora 32 \
    --modes ${TORCH_MODES:-compiled} 2>&1 | grep -v Warning | grep '^{' | sed 's/}$/, "name": "torch"}/' | tee -a "$OUT/t3.jsonl"
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
        print(f"| ops {r['in']}->{r['out']} T {r['T']} | | | | | base fwd {r['base_fwd_ms']} dgrad {r['base_dgrad_ms']}; dropout {r['dropout_ms']} lora fwd {r['lora_fwd_ms']} bwd {r['lora_bwd_ms']} masked add {r['dropout_add_ms']} (ms) |")
    elif b.startswith("T3"):
        mode = r.get("mode", r.get("precision", ""))
        ms = r.get("step_ms", 1e3 * r["seconds"] / r["steps"])
        print(f"| {r['name']} {mode} | {ms:.1f} | {r['tokens_per_s']:.0f} | {r.get('mem_gb', r.get('mem_reserved_gb', ''))} | {r['loss_first']:.4f} -> {r['loss_last']:.4f} | |")
PY
