/* dspy/compile.h — BootstrapFinetune.compile and launch()/kill() of the compiled program.
 *
 * dspy_bootstrap_finetune_compile is DSPy's BootstrapFinetune(...).compile(student, trainset,
 * teacher) (dspy_behaviour.md §10.2, CC-29, CC-30) in three steps:
 *   1. dspy_bootstrap_finetune_prepare (dspy/bootstrap.h): checks, bootstrap_trace_data with
 *      every teacher, metric filtering, format_finetune_data, the Random(0) shuffle, the JSONL
 *      file named by SHA-256, output_dir and the effective train_kwargs of each job;
 *   2. for each job, the local provider's finetune: dspy_finetune (dspy/train.h) on the
 *      student LM's model directory ("openai/local:<dir>" or its finetuning_model, prefixes
 *      stripped) with the job's train_kwargs, writing output_dir;
 *   3. a NEW program (a deep copy; the student given is not changed, project decision §16.6)
 *      whose predictors of each job get lm.copy(model="openai/local:<output_dir>") — the
 *      student LM's kwargs are kept, so the temperature/max_tokens the caller set on the
 *      student LM (the tutorial flow sets temperature 0.0, §16.5) carry over, and launch_kwargs
 *      {"chat_date": <the training's date>} — marked compiled.
 * Jobs run one after the other in the calling thread (DSPy starts a thread per job and waits
 * for all; the trainer uses every core anyway). A job that fails ends the compile with its
 * error; files already written stay (the data file, a partial output_dir with checkpoints).
 *
 * dspy_program_launch/kill are lm.launch()/lm.kill() over a program's LMs (§10.7): every
 * distinct "openai/local:<dir>" LM gets a `dspy serve` child (dspy/local.h; LMs of the same
 * directory share one server) and its kwargs api_base/api_key point at it; LMs that already
 * have an api_base are left alone (DSPy's "Server is already launched."); other LMs are
 * skipped. An LM's launch_kwargs "chat_date" becomes `--chat-date` and "device" (cpu, cuda;
 * "auto" adds nothing) `--device` unless the caller's extra server arguments give them. kill stops the servers and REMOVES api_base/api_key again — unlike DSPy, which keeps
 * them (CC-30.3): a dead server's address is useless, a call then fails at once with "not
 * launched" instead of retrying a refused connection, and a program saved after kill records
 * only "openai/local:<dir>", which `dspy eval --program` launches itself.
 *
 * Thread safety: compile and launch/kill need exclusive use of the programs involved.
 */
#ifndef DSPY_COMPILE_H
#define DSPY_COMPILE_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/bootstrap.h"
#include "dspy/local.h"
#include "dspy/module.h"
#include "dspy/status.h"
#include "dspy/train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- BootstrapFinetune.compile ----------------------------------------------------------- */

typedef struct dspy_bootstrap_finetune_params {
    dspy_finetune_params prepare;    /* metric, multitask, exclude_demos, num_threads, max_errors,
                                        train_kwargs (JSON text), finetune_dir, progress
                                        (dspy_finetune_params_default()) */
    dspy_train_progress_fn progress; /* the trainer's progress (e.g. dspy_train_bar_update); NULL */
    void *progress_ud;
    int32_t train_threads;           /* trainer compute threads; 0 = the OpenMP default */
    const char *chat_date;           /* Llama 3 "Today Date:" for training; NULL = the trainer's
                                        default ("26 Jul 2024"). Recorded in the fine-tuned LM's
                                        launch_kwargs {"chat_date": ...}, which launch passes to
                                        `dspy serve --chat-date`, so the served prompts match the
                                        training data. Borrowed. */
} dspy_bootstrap_finetune_params;

DSPY_API dspy_bootstrap_finetune_params dspy_bootstrap_finetune_params_default(void);

/* One fine-tuning job as it ran. Strings are owned by the report. */
typedef struct dspy_finetune_run {
    char *base_model;       /* the model directory trained from */
    char *data_path;        /* the JSONL file */
    size_t n_records;       /* its lines */
    char *output_dir;       /* the fine-tuned model directory */
    char *finetuned_model;  /* "openai/local:" + output_dir */
    char *train_kwargs;     /* the effective train_kwargs (compact JSON) */
    dspy_finetune_data_counts data; /* items kept / filtered out / failed */
    dspy_train_result train;        /* steps, losses, tokens, seconds */
} dspy_finetune_run;

typedef struct dspy_bootstrap_finetune_report {
    dspy_bootstrap_counts bootstrap; /* all teachers together */
    dspy_finetune_run *runs;         /* one per job */
    size_t n_runs;
    double bootstrap_s;              /* wall time of step 1 */
    double train_s;                  /* wall time of step 2 */
} dspy_bootstrap_finetune_report;

DSPY_API void dspy_bootstrap_finetune_report_clear(dspy_bootstrap_finetune_report *r); /* NULL-safe */

/* compile(student, trainset, teachers): see the top of this file. `teachers` may be NULL with
 * n_teachers 0 (the student teaches itself). `p` may be NULL (defaults). *out is the new
 * compiled program; `report` (may be NULL) is filled as far as the compile got, also on
 * failure (release it with _report_clear either way). Errors: those of
 * dspy_bootstrap_finetune_prepare; DSPY_ERR_ARG for a bad train_kwarg (named) or a student LM
 * that is not a local model ("openai/local:<dir>"); those of dspy_finetune. */
DSPY_API dspy_status dspy_bootstrap_finetune_compile(dspy_module *student, const dspy_dataset *trainset,
                                            dspy_module *const *teachers, size_t n_teachers,
                                            const dspy_bootstrap_finetune_params *p, dspy_module **out,
                                            dspy_bootstrap_finetune_report *report);

/* Applies DSPy train_kwargs (a JSON object, e.g. {"num_train_epochs": 5, "learning_rate":
 * 1e-05, "max_seq_length": null, "output_dir": "/x"}) to trainer params with
 * dspy_train_params_set: numbers in Python's repr, booleans, null as "None", strings as they
 * are. `kwargs` must outlive `p` (string values are borrowed). DSPY_ERR_ARG naming the key. */
DSPY_API dspy_status dspy_train_params_from_kwargs(dspy_train_params *p, const dspy_json *kwargs);

/* ---- launch / kill ----------------------------------------------------------------------- */

typedef struct dspy_launched dspy_launched;

/* lm.launch() for every local LM of `program` (see the top). `p` (may be NULL) configures the
 * servers (binary, log dir, timeout, extra `dspy serve` args). On failure the servers already
 * started are killed and the LMs left as they were. *out is NULL on failure. */
DSPY_API dspy_status dspy_program_launch(dspy_module *program, const dspy_local_params *p, dspy_launched **out);
/* Servers started (0 when the program has no local LM to launch). */
DSPY_API size_t dspy_launched_count(const dspy_launched *l);
/* Server i (borrowed; NULL past the end): api base, pid, log path (dspy/local.h). */
DSPY_API dspy_local_server *dspy_launched_server(const dspy_launched *l, size_t i);
/* lm.kill(): stops the servers and removes api_base/api_key from the LMs. Idempotent; NULL-safe.
 * Returns the first kill error (every server is still attempted). */
DSPY_API dspy_status dspy_program_kill(dspy_launched *l);
/* Kills (when not yet killed) and frees. NULL-safe. */
DSPY_API void dspy_launched_free(dspy_launched *l);

#ifdef __cplusplus
}
#endif
#endif
