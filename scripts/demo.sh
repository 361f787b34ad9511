#!/usr/bin/env bash
# The main job, offline: DSPy's Banking77 BootstrapFinetune tutorial end to end on this machine,
# with no network and no GPU (README.md, "The main job").
#
# Real: Banking77 (../shared/data/banking77), the tutorial's Random(0) split, the ChainOfThought
# program and DSPy's ChatAdapter prompts, bootstrap_trace_data on a thread pool, the chat JSONL
# named by SHA-256, the C trainer (AdamW, assistant-only loss, packing), `dspy serve`, the
# evaluation over HTTP with threads, inspect_history, save, and `dspy eval` of the saved program.
# Stand-ins (they need the network or a GPU for the real thing):
#   teacher  = "oracle": answers with the dataset's GOLD label and a templated reasoning line
#              (instead of gpt-4o-mini);
#   student  = a tiny random Llama (2 layers, hidden 64) with the real Llama 3 tokenizer
#              (instead of Llama-3.2-1B-Instruct), small enough to train on 2 CPU cores.
# Sizes (override with the environment): DEMO_TRAIN trainset examples, DEMO_DEV devset examples,
# DEMO_EPOCHS epochs, DEMO_LR learning rate, DEMO_MAX_TOKENS the student's max_tokens.
set -euo pipefail
cd "$(dirname "$0")/.."
DSPY=${DSPY:-./build/bin/dspy}
SHARED=${DSPY_SHARED_DIR:-../shared}
OUT=${DEMO_OUT:-demo-out}
TRAIN=${DEMO_TRAIN:-100}
DEV=${DEMO_DEV:-30}
EPOCHS=${DEMO_EPOCHS:-2}
LR=${DEMO_LR:-5e-3}
MAXTOK=${DEMO_MAX_TOKENS:-48}
THREADS=${DEMO_THREADS:-2}

start=$(date +%s)
rm -rf "$OUT"
mkdir -p "$OUT"
unset DSPY_CACHEDIR DSPY_FINETUNEDIR OPENAI_API_KEY

echo "== The main job, offline: DSPy's Banking77 BootstrapFinetune tutorial ($TRAIN train, $DEV dev) =="
echo
echo "-- stand-in student: a tiny random Llama with the real Llama 3 tokenizer (for Llama-3.2-1B-Instruct) --"
$DSPY init-model --preset tiny --tokenizer "$SHARED/models/llama3-tokenizer" --out "$OUT/student" --seed 0

echo
echo "-- dspy compile --teacher oracle (the stand-in for gpt-4o-mini) --"
$DSPY compile --teacher oracle --student "$OUT/student" --data-dir "$SHARED/data/banking77" \
  --limit-train "$TRAIN" --limit-dev "$DEV" --num-threads "$THREADS" --max-tokens "$MAXTOK" \
  --train-kwargs num_train_epochs="$EPOCHS" --train-kwargs learning_rate="$LR" \
  --train-kwargs gradient_accumulation_steps=1 --display-table 5 --baselines --out "$OUT"

echo
echo "-- dspy eval --program $OUT/program.json (re-evaluates the saved program: its own server) --"
DSPY_CACHEDIR="$OUT/eval-cache" $DSPY eval --program "$OUT/program.json" --data-dir "$SHARED/data/banking77" \
  --split tutorial-dev --limit "$DEV" --num-threads "$THREADS" --max-errors $((DEV + 1)) --out "$OUT/eval"

end=$(date +%s)
echo
echo "== What was real and what was a stand-in =="
echo "real:     Banking77 data and the tutorial split; DSPy 3.3 ChatAdapter prompts; bootstrap_trace_data;"
echo "          the fine-tuning JSONL; the C trainer; dspy serve; evaluation over HTTP; inspect_history;"
echo "          save and dspy eval of the saved program"
echo "stand-in: teacher = oracle (gold labels + a templated reasoning line, NOT a language model)"
echo "stand-in: student = a tiny random Llama (8.3M parameters, 2 layers) with the real Llama 3 tokenizer"
echo "measured: see $OUT/report.json; wall time of this demo: $((end - start)) s on $(nproc) cores"
echo "report:   $OUT/report.html (curves, accuracy of the untrained student / teacher / fine-tuned student,"
echo "          per-class accuracy, confusion matrix, failed examples); the eval run: $OUT/eval/report.html"
