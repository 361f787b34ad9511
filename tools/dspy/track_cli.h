/* track_cli.h — how `dspy compile`, `dspy finetune` and `dspy eval` record their runs
 * (dspy/track.h): a few calls per command, so the commands stay about their own work.
 *
 * A command calls cli_run_begin once its options are checked and its output directory is known,
 * the cli_run_<command> helper when its results exist, and cli_run_end on every way out.
 * Tracking never fails a command: a run directory that cannot be written is a warning and the
 * command goes on untracked (the helpers accept a NULL run).
 */
#ifndef DSPY_TOOL_TRACK_CLI_H
#define DSPY_TOOL_TRACK_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "args.h"
#include "dspy/compile.h"
#include "dspy/evaluate.h"
#include "dspy/local.h"
#include "dspy/track.h"

/* Starts the run of `kind` in `dir` (NULL: --out, else $DSPY_RUNS_DIR/<kind>-<time>-<random>,
 * DSPY_RUNS_DIR defaulting to ./dspy-runs). Params: every option of `a` with its effective value
 * (defaults included; flags as true/false; repeated options as a JSON list; secrets as "***").
 * MLflow: --mlflow-uri (or --mlflow_uri), else MLFLOW_TRACKING_URI. Notes (the run, its report,
 * the MLflow run) go to `notes`. NULL when the run cannot be recorded (warned). */
dspy_run *cli_run_begin(const dspy_args *a, const char *kind, const char *dir, int argc, char **argv, FILE *notes);

/* Ends and frees the run (*run set to NULL; NULL-safe): FINISHED when ok, else FAILED with the
 * current error message, which is left unchanged for the caller. */
void cli_run_end(dspy_run **run, bool ok);

/* dspy compile: the effective train_kwargs as params "train_kwargs.<key>" and the fine-tuned
 * LM's calls as history.jsonl. */
void cli_run_compile(dspy_run *run, const dspy_bootstrap_finetune_report *rep, dspy_lm *finetuned);

/* dspy compile's evaluations before training (the untrained student, the teacher): the result
 * into baselines/<name>/ (results.json, results.csv) with the program's LM calls so far
 * (history.jsonl). NULL run or result: nothing. A failure is a warning. */
void cli_run_baseline(dspy_run *run, const char *name, const dspy_eval_result *res, dspy_module *program);

/* dspy eval: results.json / results.csv in the run directory (when --out did not put them
 * there), eval_score / eval_examples / eval_failed, and the program's LM calls. */
void cli_run_eval(dspy_run *run, const dspy_eval_result *res, dspy_module *program);

#endif
