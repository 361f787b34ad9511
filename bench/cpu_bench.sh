#!/usr/bin/env bash
# cpu_bench.sh — issue 16's CPU benchmark: prefill and batch-1 decode tokens/s of our engine with
# the fast and the reference kernels, and of llama.cpp (node-llama-cpp 3.21.1's prebuilt CPU
# build), on the same BF16 GGUF file, the same thread count, in the same run.
#
# Models: random checkpoints made by `dspy init-model` (the `small` preset and the Llama-3.2-1B
# shape, bf16, the real Llama 3 tokenizer), exported with `dspy export --format gguf --dtype bf16`;
# both engines load that .gguf. Made once into $CPU_BENCH_DIR (default /tmp/dspy-cpu-bench).
#
# The machine may be shared (this one has 2 cores and other jobs): the engines run interleaved,
# round by round (ours fast, llama.cpp, ours fast, llama.cpp, ...), each run one process with one
# untimed warm-up pass; the table reports the medians over rounds with min-max, and the ratio
# ours / llama.cpp is taken within each round (the two runs are adjacent in time) and its median
# reported. The reference kernels run every round for `small`; for the 1B shape they are slow
# (fp32, ~5 GFLOP/s) and run once, on a shorter prompt (REF_PROMPT_1B, REF_DECODE_1B).
#
# Environment: THREADS (2), ROUNDS (5), PROMPT (128), DECODE (32), MODELS ("small 1b"),
# NLC_MODULES (node-llama-cpp's node_modules; default the test cache ~/.cache/dspy-npm/...),
# DSPY (./build/bin/dspy), BENCH (./build/bench/bench_cpu), TOKENIZER (../shared/models/llama3-tokenizer).
# Output: the raw JSON lines in $CPU_BENCH_DIR/runs.jsonl and a Markdown table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
DSPY=${DSPY:-./build/bin/dspy}
BENCH=${BENCH:-./build/bench/bench_cpu}
DIR=${CPU_BENCH_DIR:-/tmp/dspy-cpu-bench}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-5}
PROMPT=${PROMPT:-128}
DECODE=${DECODE:-32}
MODELS=${MODELS:-"small 1b"}
REF_PROMPT_1B=${REF_PROMPT_1B:-32}
REF_DECODE_1B=${REF_DECODE_1B:-8}
TOKENIZER=${TOKENIZER:-../shared/models/llama3-tokenizer}
NLC=${NLC_MODULES:-${DSPY_NPM_CACHE:-$HOME/.cache/dspy-npm}/node-llama-cpp-3.21.1/node_modules}
[ -d "$NLC/node-llama-cpp" ] || { echo "cpu_bench: node-llama-cpp not found in $NLC (npm i -E node-llama-cpp@3.21.1 --prefix DIR, or run test_gguf_llama_cpp once)" >&2; exit 1; }
mkdir -p "$DIR"
RUNS="$DIR/runs.jsonl"
: > "$RUNS"

preset_of() { [ "$1" = 1b ] && echo 1b-shape || echo "$1"; }
for m in $MODELS; do
  if [ ! -f "$DIR/$m.bf16.gguf" ]; then
    extra=(); [ "$m" = 1b ] && extra=(--weights)
    "$DSPY" init-model --preset "$(preset_of "$m")" --tokenizer "$TOKENIZER" --out "$DIR/$m" --seed 1 --dtype bf16 -f "${extra[@]}" >&2
    "$DSPY" export --format gguf --model "$DIR/$m" --out "$DIR/$m.bf16.gguf" --dtype bf16 >&2
    rm -rf "${DIR:?}/$m" # the GGUF is what both engines read
  fi
done

# tag MODEL ENGINE: prefixes each JSON line with the model and engine
tag() { sed -e "s/^{/{\"model\": \"$1\", \"engine\": \"$2\", /" -e 's/"engine":"llama.cpp",//'; }
ours() { "$BENCH" model --model "$DIR/$1.bf16.gguf" --kernels "$2" --threads "$THREADS" --prompt "$3" --decode "$4" --warmup 1 --reps 1 | grep '^{' | tag "$1" "dspy.c $2"; }
theirs() { node bench/cpu_bench_llama.mjs "$NLC" "$DIR/$1.bf16.gguf" "$THREADS" "$PROMPT" "$DECODE" 1 1 | tag "$1" "llama.cpp"; }

echo "cpu_bench: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $THREADS threads, prompt $PROMPT, decode $DECODE, $ROUNDS rounds" >&2
roundtag() { sed -e "s/^{/{\"round\": $1, /"; }
for r in $(seq 1 "$ROUNDS"); do
  for m in $MODELS; do
    ours "$m" fast "$PROMPT" "$DECODE" | roundtag "$r" >> "$RUNS"
    theirs "$m" | roundtag "$r" >> "$RUNS"
    if [ "$m" != 1b ]; then ours "$m" reference "$PROMPT" "$DECODE" | roundtag "$r" >> "$RUNS"; fi
  done
  echo "cpu_bench: round $r done (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
done
for m in $MODELS; do
  if [ "$m" = 1b ]; then ours "$m" reference "$REF_PROMPT_1B" "$REF_DECODE_1B" | roundtag 0 >> "$RUNS"; fi
done

python3 - "$RUNS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
groups = {}
for r in rows:
    groups.setdefault((r["model"], r["engine"]), []).append(r)
med = statistics.median
fmt = lambda v: f"**{med(v):.1f}** ({min(v):.1f}-{max(v):.1f})"
print("| model | engine | prompt / decode | prefill tok/s (median, min-max) | decode tok/s (median, min-max) | runs |")
print("| --- | --- | --- | --- | --- | --- |")
for (m, e), rs in groups.items():
    print(f"| {m} | {e} | {rs[0]['prompt']} / {rs[0]['decode']} | {fmt([r['prefill_tok_s'] for r in rs])} | "
          f"{fmt([r['decode_tok_s'] for r in rs])} | {len(rs)} |")
    if e == "llama.cpp" and all("internal_decode_tok_s" in r for r in rs):
        print(f"| {m} | llama.cpp, its own counters (time inside llama_decode) | | "
              f"{fmt([r['internal_prefill_tok_s'] for r in rs])} | {fmt([r['internal_decode_tok_s'] for r in rs])} | {len(rs)} |")
print()
for m in sorted({k[0] for k in groups}):
    f = {r["round"]: r for r in groups.get((m, "dspy.c fast"), [])}
    l = {r["round"]: r for r in groups.get((m, "llama.cpp"), [])}
    both = sorted(set(f) & set(l))
    if both:
        rp = [f[i]["prefill_tok_s"] / l[i]["prefill_tok_s"] for i in both]
        rd = [f[i]["decode_tok_s"] / l[i]["decode_tok_s"] for i in both]
        print(f"{m}: dspy.c fast / llama.cpp within each round, median (min-max) over {len(both)} rounds: "
              f"prefill {med(rp):.2f}x ({min(rp):.2f}-{max(rp):.2f}), decode {med(rd):.2f}x ({min(rd):.2f}-{max(rd):.2f})")
EOF
