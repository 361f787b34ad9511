/* dspy/bootstrap.h — bootstrap_trace_data and BootstrapFinetune's data preparation: run a
 * teacher program over a trainset with one trace per example, turn the traces into chat
 * fine-tuning data, write it as JSONL, and describe the fine-tuning jobs a compile step runs.
 *
 * Follows DSPy 3.3.1 dspy/teleprompt/{bootstrap_trace,bootstrap_finetune}.py and
 * dspy/clients/{lm_local,utils_finetune}.py (spec §9, §10, CC-29, CC-30.4–5) with the project
 * decisions of spec §16.6–16.7:
 *   - each example runs as program(**example.inputs()) on the parallel executor
 *     (dspy/parallel.h) under a dspy.context with its own fresh trace; an item is
 *     {example, prediction, trace, example_ind} plus score when a metric is given;
 *   - an answer that cannot be parsed becomes a FailedPrediction(completion_text,
 *     format_reward) appended to the trace as the failing Predict's step; its score is
 *     format_reward (format_failure_score, -1, when nothing was parsed; with k of n outputs
 *     parsed, format_failure_score + (failure_score - format_failure_score) * k / n — DSPy
 *     meant this and crashes computing it). Such an example is reported and counted, and it
 *     counts toward max_errors like an LM error; it never reaches the fine-tuning data;
 *   - an LM error (after the LM's own retries) or a metric error is counted and the example
 *     gets no item; the run stops (DSPY_ERR_CANCELLED) only when max_errors is reached.
 *     (DSPy aborts the whole compile on any such error.)
 *   - the metric is called as metric(example, prediction, NULL) (DSPy passes trace=None);
 *     without one every successful example scores True;
 *   - fine-tuning data (_prepare_finetune_data): items with a falsy score are dropped when a
 *     metric was given; each trace step (or only step pred_ind when not multitask — DSPy
 *     selects by position in the trace) becomes ChatAdapter.format_finetune_data(signature,
 *     demos ([] with exclude_demos), inputs, outputs) of the trace's Predict, in the student's
 *     format profile; the list is shuffled with Python's random.Random(0);
 *   - the data file is <finetune_dir>/<sha256 of the JSONL bytes>.jsonl, one compact JSON
 *     object per line ({"messages": [...]}, raw UTF-8, "/" unescaped, as orjson writes it);
 *     finetune_dir = $DSPY_FINETUNEDIR, else $DSPY_CACHEDIR/finetune, else
 *     ~/.dspy_cache/finetune, made absolute and created;
 *   - output_dir = data_path with ".jsonl" replaced by "_<6 of [a-z0-9]>_<model with '/' ->
 *     '-'>_<YYYY-MM-DD_HH-MM-SS local time>", model = the LM's finetuning_model or model
 *     without "openai/" and "local:";
 *   - train_kwargs = {"device": null, "use_peft": false, "num_train_epochs": 5,
 *     "per_device_train_batch_size": 1, "gradient_accumulation_steps": 8,
 *     "learning_rate": 1e-05, "max_seq_length": null, "packing": true, "bf16": true,
 *     "output_dir": output_dir} overridden key by key by the user's (new keys appended), as
 *     LocalProvider.finetune builds it ("max_seq_length": null leaves the trainer's default,
 *     4096 by spec §16.4). The user's kwargs are BootstrapFinetune's train_kwargs, or when
 *     those are absent/empty the LM's own train_kwargs.
 *   - compile never mutates the student: the job holds a deep copy for the compile step.
 * What is not here: training, launching, assigning the fine-tuned LMs (the compile step).
 *
 * Thread safety: one call at a time per program; the program must be callable from several
 * threads when num_threads > 1 (modules and LMs are).
 */
#ifndef DSPY_BOOTSTRAP_H
#define DSPY_BOOTSTRAP_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dspy/evaluate.h"
#include "dspy/example.h"
#include "dspy/json.h"
#include "dspy/lm.h"
#include "dspy/module.h"
#include "dspy/prediction.h"
#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- trace data (bootstrap_trace_data) ----------------------------------------------------- */

/* dspy.teleprompt.bootstrap_trace.FailedPrediction. */
typedef struct dspy_failed_prediction {
    char *completion_text; /* the answer that could not be parsed (NULL when unknown) */
    double format_reward;
} dspy_failed_prediction;

/* One (predictor, inputs, prediction) tuple of a trace. */
typedef struct dspy_trace_step {
    dspy_module *predictor;                /* the Predict that ran */
    dspy_json *inputs;                     /* its inputs (object) */
    dspy_prediction *prediction;           /* its prediction; NULL for the failed call */
    const dspy_failed_prediction *failed;  /* the failed call's FailedPrediction, else NULL */
} dspy_trace_step;

/* One example's record. Everything is owned by the trace data. */
typedef struct dspy_trace_item {
    dspy_example *example;          /* a copy of the dataset's example */
    size_t example_ind;             /* its index in the dataset */
    dspy_prediction *prediction;    /* NULL when the answer could not be parsed */
    dspy_failed_prediction *failed; /* non-NULL when it could not be parsed */
    dspy_trace_step *trace;         /* in call order */
    size_t n_trace;
    bool has_score;                 /* a metric was given */
    double score;
} dspy_trace_item;

typedef struct dspy_trace_data dspy_trace_data;

/* What a bootstrap run did. */
typedef struct dspy_bootstrap_counts {
    size_t examples;       /* examples run */
    size_t items;          /* items recorded (successes and parse failures) */
    size_t parse_failures; /* items holding a FailedPrediction */
    size_t errors;         /* examples without an item (LM/metric/other errors) */
} dspy_bootstrap_counts;

DSPY_API dspy_status dspy_trace_data_new(dspy_trace_data **out);
DSPY_API void dspy_trace_data_free(dspy_trace_data *d); /* NULL-safe */
DSPY_API size_t dspy_trace_data_len(const dspy_trace_data *d);
/* Item i (borrowed), NULL past the end. */
DSPY_API const dspy_trace_item *dspy_trace_data_item(const dspy_trace_data *d, size_t i);
DSPY_API dspy_bootstrap_counts dspy_trace_data_counts(const dspy_trace_data *d);
/* Appends an item built by hand: the example is copied, predictions, predictors and inputs
 * are retained; `score` NULL = no score. Steps must have a prediction. */
DSPY_API dspy_status dspy_trace_data_append(dspy_trace_data *d, const dspy_example *example, size_t example_ind,
                                            dspy_prediction *prediction, const dspy_trace_step *steps, size_t n_steps,
                                            const double *score);

typedef struct dspy_bootstrap_params {
    const dspy_metric *metric;   /* NULL: no metric, items carry no score */
    int32_t num_threads;         /* <= 0: dspy_settings_num_threads() */
    int32_t max_errors;          /* < 0: dspy_settings_max_errors() (10) */
    bool display_progress;       /* default true, as DSPy */
    FILE *progress_out;          /* NULL = stderr */
    double failure_score;        /* 0 */
    double format_failure_score; /* -1 */
    bool log_failures;           /* an ERROR log line per failed example (default true) */
    dspy_eval_failure_fn on_failure; /* called once per failed example (dspy/evaluate.h); NULL */
    void *failure_user;
} dspy_bootstrap_params;

DSPY_API dspy_bootstrap_params dspy_bootstrap_params_default(void);

/* bootstrap_trace_data(program, dataset, metric, ...): see the top of this file. On success
 * *out has one item per example that produced one, in dataset order. Errors: DSPY_ERR_ARG,
 * DSPY_ERR_CANCELLED (max_errors reached or SIGINT; *out NULL), DSPY_ERR_NOMEM. */
DSPY_API dspy_status dspy_bootstrap_trace_data(dspy_module *program, const dspy_dataset *dataset,
                                               const dspy_bootstrap_params *p, dspy_trace_data **out);

/* ---- fine-tuning data ---------------------------------------------------------------------- */

/* Formats one trace step as a fine-tuning record (DSPy's adapter.format_finetune_data); `demos`
 * is [] or the predictor's demos. */
typedef dspy_status (*dspy_finetune_format_fn)(void *user, const dspy_trace_step *step, const dspy_json *demos,
                                               dspy_json **out);

typedef struct dspy_finetune_data_params {
    int64_t pred_ind;               /* < 0: every step (multitask); else only the step at that position */
    bool filter_by_score;           /* drop items whose score is falsy (a metric was given) */
    bool exclude_demos;             /* format with demos=[] */
    dspy_finetune_format_fn format; /* NULL: ChatAdapter.format_finetune_data (settings' adapter) */
    void *format_user;
    int profile;                    /* for the default format: -1 = the step's Predict's profile */
} dspy_finetune_data_params;

DSPY_API dspy_finetune_data_params dspy_finetune_data_params_default(void);

typedef struct dspy_finetune_data_counts {
    size_t items;        /* items looked at */
    size_t filtered_out; /* dropped by the metric (falsy score) */
    size_t failed;       /* dropped because they hold a FailedPrediction */
    size_t kept;         /* items that gave data */
    size_t records;      /* records produced */
} dspy_finetune_data_counts;

/* _prepare_finetune_data: a JSON array of records, Random(0)-shuffled (new reference).
 * `counts` may be NULL. */
DSPY_API dspy_status dspy_finetune_data_prepare(const dspy_trace_data *data, const dspy_finetune_data_params *p,
                                                dspy_json **out, dspy_finetune_data_counts *counts);

/* The fine-tuning folder: `dir` if given, else $DSPY_FINETUNEDIR, $DSPY_CACHEDIR/finetune,
 * ~/.dspy_cache/finetune; made absolute (malloc'd) and created. */
DSPY_API dspy_status dspy_finetune_dir(const char *dir, char **out);
/* Writes `records` (a JSON array) as JSONL to <finetune_dir>/<sha256>.jsonl (atomically) and
 * returns the path (malloc'd). `dir` as for dspy_finetune_dir. */
DSPY_API dspy_status dspy_finetune_data_write(const dspy_json *records, const char *dir, char **path);
/* LocalProvider's output_dir for a data path and a model string (see the top), malloc'd. */
DSPY_API dspy_status dspy_finetune_output_dir(const char *data_path, const char *model, char **out);
/* The effective train kwargs (see the top) as compact JSON text (malloc'd). `user_kwargs` is a
 * JSON object or NULL. DSPY_ERR_ARG when it is not an object. */
DSPY_API dspy_status dspy_finetune_train_kwargs(const dspy_json *user_kwargs, const char *output_dir, char **out);

/* ---- BootstrapFinetune (everything compile does before training) ----------------------------- */

typedef struct dspy_finetune_params {
    const dspy_metric *metric;  /* NULL: keep every trace */
    bool multitask;             /* one job per LM (default true) or per predictor */
    bool exclude_demos;         /* default false */
    int32_t num_threads;        /* <= 0: dspy_settings_num_threads() */
    int32_t max_errors;         /* < 0: dspy_settings_max_errors() */
    const char *train_kwargs;   /* JSON object text for every job; NULL/"{}": each LM's own */
    const char *finetune_dir;   /* NULL: the environment (see dspy_finetune_dir) */
    bool display_progress;      /* default true */
    FILE *progress_out;         /* NULL = stderr */
    bool log_failures;          /* bootstrapping: an ERROR log line per failed example (default true) */
    dspy_eval_failure_fn on_failure; /* bootstrapping: called once per failed example; NULL */
    void *failure_user;
} dspy_finetune_params;

DSPY_API dspy_finetune_params dspy_finetune_params_default(void);

/* One fine-tuning job: one LM (and predictor index when not multitask). */
typedef struct dspy_finetune_task {
    dspy_lm *lm;               /* the student LM to fine-tune (reference held by the job) */
    int64_t pred_ind;          /* -1 for multitask */
    size_t *predictors;        /* student predictor indices that get the fine-tuned LM */
    size_t n_predictors;
    char *model;               /* finetuning_model or model, "openai/" and "local:" stripped */
    char *data_path;           /* the JSONL file */
    size_t n_records;          /* lines in it */
    char *output_dir;
    char *train_kwargs;        /* effective train kwargs, compact JSON */
    const char *data_format;   /* "chat" */
    dspy_finetune_data_counts counts;
} dspy_finetune_task;

typedef struct dspy_finetune_job dspy_finetune_job;

/* BootstrapFinetune(metric, multitask, train_kwargs, exclude_demos, num_threads)
 * .compile(student, trainset, teacher) up to the training: checks (every student predictor has
 * an LM — else DSPY_ERR_ARG "Predictor i does not have an LM assigned. ... set_lm(...)"; each
 * teacher has the student's predictor names in order, all Predict, none shared with the
 * student; a chat adapter; no more jobs than num_threads), bootstraps every teacher (none =
 * the student itself), prepares and writes each job's data, computes output_dir and
 * train_kwargs, and deep-copies the student with exclude_demos applied (its LMs are still the
 * originals: the compile step assigns the fine-tuned ones). The student is not changed.
 * Errors: those of the checks, of bootstrapping, and of writing the files. */
DSPY_API dspy_status dspy_bootstrap_finetune_prepare(dspy_module *student, const dspy_dataset *trainset,
                                                     dspy_module *const *teachers, size_t n_teachers,
                                                     const dspy_finetune_params *p, dspy_finetune_job **out);
DSPY_API void dspy_finetune_job_free(dspy_finetune_job *job); /* NULL-safe */

/* The deep-copied student (borrowed; retain it to keep it past the job). */
DSPY_API dspy_module *dspy_finetune_job_student(const dspy_finetune_job *job);
DSPY_API size_t dspy_finetune_job_n_tasks(const dspy_finetune_job *job);
DSPY_API const dspy_finetune_task *dspy_finetune_job_task(const dspy_finetune_job *job, size_t i);
/* All teachers' trace data together (borrowed). */
DSPY_API const dspy_trace_data *dspy_finetune_job_trace_data(const dspy_finetune_job *job);
DSPY_API dspy_bootstrap_counts dspy_finetune_job_counts(const dspy_finetune_job *job);

#ifdef __cplusplus
}
#endif
#endif
