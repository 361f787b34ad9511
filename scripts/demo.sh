#!/usr/bin/env bash
# The main job, offline: DSPy's Banking77 BootstrapFinetune tutorial end to end on this machine,
# with no network and no GPU (README.md, "The main job"), sized to show learning on 2 CPU cores.
#
# Real: Banking77 (../shared/data/banking77) and the tutorial's Random(0) split (the 100 dev
# questions are the tutorial's), DSPy's ChatAdapter prompts, bootstrap_trace_data on a thread
# pool, the chat JSONL named by SHA-256, the C trainer (AdamW, assistant-only loss), `dspy serve`,
# the evaluations over HTTP with threads (the untrained student, the teacher, the fine-tuned
# student), inspect_history, save, and `dspy eval` of the saved program.
# Stand-ins and demo sizes (the real thing needs the network or a GPU):
#   teacher  = "oracle": answers with the dataset's GOLD label (instead of gpt-4o-mini);
#   student  = a tiny random Llama (2 layers, hidden 64) with the real Llama 3 tokenizer
#              (instead of Llama-3.2-1B-Instruct);
#   program  = Predict("text -> label: Literal[...]") over the 7 intents that occur in the
#              tutorial's 1,000 rows (--observed-labels; the tutorial: ChainOfThought over all 77):
#              a ~300-token prompt instead of ~1,500, which two cores can train on in minutes;
#   adapter  = ChatAdapter without the JSON fallback (--no-json-fallback): an unparseable answer
#              of the untrained student costs one call, not three;
#   training = DEMO_TRAIN trainset examples, DEMO_EPOCHS epochs, lr DEMO_LR with a cosine schedule,
#              one example per optimizer step (packing off).
#   CPU kernels = the fast path (DEMO_CPU_KERNELS=fast): BF16 SIMD kernels in `dspy serve`, SIMD F32
#              products in the trainer; DEMO_CPU_KERNELS=reference runs the fp32 reference kernels;
#              OpenMP threads wait passively (OMP_WAIT_POLICY=passive unless set).
# Override with the environment: DEMO_TRAIN, DEMO_DEV, DEMO_EPOCHS, DEMO_LR, DEMO_MAX_TOKENS,
# DEMO_MODULE (predict or cot), DEMO_THREADS, DEMO_CPU_KERNELS, DEMO_OUT, DEMO_ACCUM (examples per
# optimizer step; with more than one, the step's shared prompt is computed once: share_prefix).
set -euo pipefail
cd "$(dirname "$0")/.."
DSPY=${DSPY:-./build/bin/dspy}
SHARED=${DSPY_SHARED_DIR:-../shared}
OUT=${DEMO_OUT:-demo-out}
TRAIN=${DEMO_TRAIN:-300}
DEV=${DEMO_DEV:-100}
# 6 epochs at lr 1e-2: the first setting measured to learn the intents, not only the answer
# format (41 % against a 17 % majority rate, 127 s wall on a quiet machine; 1 epoch at 5e-3 and
# 4-6 epochs at 2e-2-3e-2 answered one intent for every question or reached 32 %: README, "Numbers")
EPOCHS=${DEMO_EPOCHS:-6}
LR=${DEMO_LR:-1e-2}
MAXTOK=${DEMO_MAX_TOKENS:-24}
MODULE=${DEMO_MODULE:-predict}
THREADS=${DEMO_THREADS:-2}
ACCUM=${DEMO_ACCUM:-1}
KERNELS=${DEMO_CPU_KERNELS:-fast}
export DSPY_CPU_KERNELS="$KERNELS" # the `dspy serve` processes that compile and eval launch
# Idle OpenMP threads sleep instead of spinning: on a machine whose cores other jobs share, a
# spinning team waits a scheduler time slice at every barrier (the fine-tune measured 2.6x
# slower with spinning under a load average of 4-5); on an idle machine the cost is a wake-up.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

start=$(date +%s)
rm -rf "$OUT"
mkdir -p "$OUT"
unset DSPY_CACHEDIR DSPY_FINETUNEDIR OPENAI_API_KEY

echo "== The main job, offline: DSPy's Banking77 BootstrapFinetune tutorial ($TRAIN train, $DEV dev) =="
echo "   machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"
echo
echo "-- stand-in student: a tiny random Llama with the real Llama 3 tokenizer (for Llama-3.2-1B-Instruct) --"
$DSPY init-model --preset tiny --tokenizer "$SHARED/models/llama3-tokenizer" --out "$OUT/student" --seed 0

echo
echo "-- dspy compile --teacher oracle (the stand-in for gpt-4o-mini) --"
$DSPY compile --teacher oracle --student "$OUT/student" --data-dir "$SHARED/data/banking77" \
  --limit-train "$TRAIN" --limit-dev "$DEV" --num-threads "$THREADS" --max-tokens "$MAXTOK" \
  --module "$MODULE" --observed-labels --no-json-fallback \
  --train-kwargs num_train_epochs="$EPOCHS" --train-kwargs learning_rate="$LR" \
  --train-kwargs gradient_accumulation_steps="$ACCUM" --train-kwargs packing=false \
  --train-kwargs lr_scheduler_type=cosine --train-kwargs warmup_ratio=0.05 \
  --train-kwargs cpu_kernels="$KERNELS" \
  --display-table 5 --out "$OUT"

echo
echo "-- dspy eval --program $OUT/program.json (re-evaluates the saved program: its own server) --"
DSPY_CACHEDIR="$OUT/eval-cache" $DSPY eval --program "$OUT/program.json" --data-dir "$SHARED/data/banking77" \
  --split tutorial-dev --limit "$DEV" --num-threads "$THREADS" --no-json-fallback --out "$OUT/eval"

end=$(date +%s)
echo
echo "== What was real and what was a stand-in =="
echo "real:     Banking77 data and the tutorial split (its 100 dev questions); DSPy 3.3 ChatAdapter prompts;"
echo "          bootstrap_trace_data; the fine-tuning JSONL; the C trainer; dspy serve; evaluation over HTTP;"
echo "          inspect_history; save and dspy eval of the saved program"
echo "stand-in: teacher = oracle (gold labels, NOT a language model)"
echo "stand-in: student = a tiny random Llama (8.3M parameters, 2 layers) with the real Llama 3 tokenizer"
echo "demo:     $MODULE over the 7 labels of the tutorial's rows, no JSON fallback, $TRAIN examples x $EPOCHS epoch(s),"
echo "          $KERNELS CPU kernels"
echo "measured: $OUT/report.json (\"before_after\": the three scores, the majority rate and the ratios);"
echo "          wall time of this demo: $((end - start)) s on $(nproc) cores (load average now $(cut -d' ' -f1-3 /proc/loadavg))"
echo "report:   $OUT/report.html (curves, accuracy of the untrained student / teacher / fine-tuned student,"
echo "          per-class accuracy, confusion matrix, failed examples); the eval run: $OUT/eval/report.html"
