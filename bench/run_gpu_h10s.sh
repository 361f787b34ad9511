#!/usr/bin/env bash
# run_gpu_h10s.sh — helper h10s (issue 10 B2): on the GPU machine, from the carried checkout's
# root, with build-h10s/gpu.tar.xz from bench/pack_gpu_h10s.sh: builds nothing.
#   1. parity: test_cuda_model (the engine on CUDA: staggered mixed steps, graphs, warm-up),
#      default, with DSPY_ENGINE_PAD_ROWS=1 and with DSPY_ENGINE_SPLIT_MIXED=1 (TESTS=0 skips)
#   2. B2 (bench_b2: 100 requests, 16 clients, dspy serve on the 1B shape): main's dspy, this
#      branch's (its ladder warm-up; nowarm: DSPY_SERVE_WARMUP=0), with eager steps padded
#      (pad: DSPY_ENGINE_PAD_ROWS=1), with mixed steps' decode rows attended apart (split:
#      DSPY_ENGINE_SPLIT_MIXED=1); each run's profile (the server's /metrics) and the server's
#      warm-up time go to $OUT/b2_<name>.log and the listing
# A table last. Logs go to $OUT (the device tool's folder) or ./out.
set -uo pipefail
ROOT=$(pwd)
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT"
H=/tmp/h10s
mkdir -p "$H" && xz -dc "$ROOT/build-h10s/gpu.tar.xz" | tar -C "$H" -xf -
# the build has /work/h10s/... compiled in (bench_b2 runs /work/h10s/build-gpu/bin/dspy; the tests
# read /work/h10s/tests/ref): point it at this checkout and the unpacked build
mkdir -p /work && ln -sfn "$ROOT" /work/h10s
[ -e "$ROOT/build-gpu" ] || ln -sfn "$H/build-gpu" "$ROOT/build-gpu"
B=$ROOT/build-gpu
ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH-}
export LD_LIBRARY_PATH=$H/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export DSPY_SHARED_DIR=$H/shared
MODEL=/tmp/llama-1b-shape
MK=""
if [ ! -f "$MODEL/model.safetensors" ]; then
  LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH timeout 300 python3 bench/torch_baseline.py --make-model "$MODEL" \
    > "$OUT/make_model.log" 2>&1 &
  MK=$!
fi
ln -sfn dspy_new "$B/bin/dspy"
if [ "${TESTS:-1}" = 1 ]; then
  echo "== parity"
  (cd $B && timeout 200 ./tests/test_cuda_model) > "$OUT/test_cuda_model.log" 2>&1; echo "test_cuda_model: exit $?"
  grep -E "FAIL|engine:|passed" "$OUT/test_cuda_model.log" | tail -n 6
  (cd $B && DSPY_ENGINE_PAD_ROWS=1 timeout 200 ./tests/test_cuda_model) > "$OUT/test_cuda_model_pad.log" 2>&1
  echo "test_cuda_model (DSPY_ENGINE_PAD_ROWS=1): exit $?"; grep -E "FAIL|passed" "$OUT/test_cuda_model_pad.log" | tail -n 3
  (cd $B && DSPY_ENGINE_SPLIT_MIXED=1 timeout 200 ./tests/test_cuda_model) > "$OUT/test_cuda_model_split.log" 2>&1
  echo "test_cuda_model (DSPY_ENGINE_SPLIT_MIXED=1): exit $?"; grep -E "FAIL|passed" "$OUT/test_cuda_model_split.log" | tail -n 3
fi
[ -z "$MK" ] || wait "$MK"
echo "== B2"
rm -f "$OUT/b2.jsonl"
b2() { # name, the dspy binary, then environment assignments
  local name=$1 bin=$2; shift 2
  ln -sfn "$bin" "$B/bin/dspy"
  env "$@" B2_SERVER_LOG_DIR=/tmp/h10s/serve_$name timeout 120 $B/bench/bench_b2 --model $MODEL --device cuda \
    > "$OUT/b2_$name.log" 2>&1
  echo "$name: exit $? $(cat /tmp/h10s/serve_$name/*.log 2>/dev/null | grep -o 'warmed up in [0-9]* ms')"
  grep '"bench": "B2"' "$OUT/b2_$name.log" | tail -n 1 | sed "s/}\$/, \"name\": \"$name\"}/" >> "$OUT/b2.jsonl"
}
for v in ${B2_RUNS:-main new pad split nowarm main2 new2 pad2}; do
  case $v in
    main*) b2 $v dspy_main X=1 ;;
    new*) b2 $v dspy_new X=1 ;;
    pad*) b2 $v dspy_new DSPY_ENGINE_PAD_ROWS=1 ;;
    split*) b2 $v dspy_new DSPY_ENGINE_SPLIT_MIXED=1 ;;
    nowarm*) b2 $v dspy_new DSPY_SERVE_WARMUP=0 ;;
  esac
done
ln -sfn dspy_new "$B/bin/dspy"
for v in new pad nowarm; do
  [ -f "$OUT/b2_$v.log" ] || continue
  echo "== profile ($v)"
  grep '^profile' "$OUT/b2_$v.log"
done
echo "== table"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
print("| B2 run | total s | first alone s | 99 by 16 clients s | errors | prefix hit | answers hash |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for l in open(f"{out}/b2.jsonl"):
    if not l.startswith("{"): continue
    r = json.loads(l)
    print(f'| {r["name"]} | {r["seconds_with_first"]:.3f} | {r["seconds_with_first"] - r["seconds"]:.3f} | '
          f'{r["seconds"]:.3f} | {r["errors"]} | {r["prefix_hit_rate"]:.3f} | {r.get("text_hash", "-")} |')
PY
