#!/usr/bin/env bash
# run_gpu_h11p.sh — issue 11 scope 3 (prefix-shared steps) on the GPU machine, in one run: the
# CUDA parity tests of the training attention and the trainer (test_cuda_train_ops,
# test_cuda_train: shared prefixes included), then T2 — ours with and without prefix-shared
# steps (bench_train --t2, one epoch) and PyTorch eager and compiled (bench/torch_train.py --t2)
# — and a table. Builds nothing.
#
# Pack (here, after building build-gpu in this worktree):
#   bench/run_gpu_h11p.sh --pack DEST   copies the binaries, the libraries they load that a bare
#                                       GPU machine lacks, torch_train.py and this script to DEST
# Run (on the device, from the repository root, DEST carried):
#   DEST/run_gpu_h11p.sh [TORCH_STEPS]  TORCH_STEPS > 0: PyTorch times the first TORCH_STEPS
#                                       optimizer steps of its epoch and scales them to the epoch
#                                       (said in its output); 0 (default): the whole epoch
set -uo pipefail
if [ "${1-}" = "--pack" ]; then
  SRC=$(cd "$(dirname "$0")/.." && pwd)
  DEST=$2
  B=$SRC/build-gpu
  rm -rf "$DEST" && mkdir -p "$DEST/lib"
  cp "$B/tests/test_cuda_train_ops" "$B/tests/test_cuda_train" "$B/bench/bench_train" "$DEST/"
  cp "$SRC/bench/torch_train.py" "$SRC/bench/run_gpu_h11p.sh" "$DEST/"
  for f in test_cuda_train_ops test_cuda_train bench_train; do ldd "$B/tests/$f" "$B/bench/$f" 2>/dev/null; done |
    awk '/=>/{print $3}' | sort -u |
    grep -v -E '/(libc|libm|libpthread|ld-linux[^/]*|libdl|librt|libcuda|libcublas[^/]*|libgcc_s|libstdc\+\+)\.so' |
    while read -r l; do cp -L "$l" "$DEST/lib/"; done
  du -sh "$DEST"
  exit 0
fi
ROOT=$(pwd)
H=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$ROOT/out}
TORCH_STEPS=${1:-0}
mkdir -p "$OUT"
# the binaries have this worktree's path (/work/h11p) compiled in for tests/ref: point it here
[ -e /work/h11p ] || { mkdir -p /work && ln -s "$ROOT" /work/h11p; }
ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH-}
export LD_LIBRARY_PATH=$H/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "== parity tests"
for t in test_cuda_train_ops test_cuda_train; do
  start=$SECONDS
  (cd "$ROOT" && timeout 150 "$H/$t") > "$OUT/$t.log" 2>&1
  echo "$t: exit $? ($((SECONDS - start)) s)"
  grep -E "FAIL|prefix|shared|passed" "$OUT/$t.log" | tail -n 40
done
MODEL=/tmp/llama-1b-shape
[ -f "$MODEL/model.safetensors" ] ||
  LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH timeout 120 python3 bench/torch_baseline.py --make-model "$MODEL" 2>&1 | tail -n 2
echo "== T2 ours (BF16, one epoch, without then with prefix-shared steps)"
timeout 150 "$H/bench_train" --t2 --model "$MODEL" --device cuda --epochs 1 --warmup 1 2>&1 | tee "$OUT/t2.jsonl"
echo "== T2 PyTorch (eager, compiled)"
LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH PYTHONUNBUFFERED=1 timeout 300 python3 "$H/torch_train.py" --t2 --model "$MODEL" \
  --modes eager,compiled --epochs 1 --warmup 1 --t2-steps "$TORCH_STEPS" 2>&1 | grep --line-buffered -v Warning | tee -a "$OUT/t2.jsonl"
echo "== table"
python3 - "$OUT/t2.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("| T2 (500 examples, 1 epoch measured) | epoch s | 5-epoch estimate s | tokens/s | tokens computed | loss first -> last |")
print("| --- | --- | --- | --- | --- | --- |")
for r in rows:
    if r["bench"] == "T2":
        name = "dspy.c BF16, " + ("prefix-shared" if r["share_prefix"] else "unshared")
        print(f"| {name} | {r['seconds']:.2f} | {r['est_5_epochs_s']:.1f} | {r['tokens_per_s']:.0f} | "
              f"{r['tokens_computed']} of {r['tokens']} | {r['loss_first']:.4f} -> {r['loss_last']:.4f} |")
    elif r["bench"] == "T2_torch":
        ex = f" (from {r['extrapolated_from_steps']} steps)" if r.get("extrapolated_from_steps") else ""
        print(f"| PyTorch {r['mode']} | {r['epoch_s']:.2f}{ex} | {r['est_5_epochs_s']:.1f} | {r['tokens_per_s']:.0f} | "
              f"{r['tokens']} | {r['loss_first']:.4f} -> {r['loss_last']:.4f} (warmup {r['warmup_s']} s) |")
    elif r["bench"] == "T2_losses":
        print(f"| shared vs unshared, {r['steps']} steps | max relative loss difference {r['max_rel_loss_diff_shared_vs_unshared']:.2e} | | | | |")
PY
