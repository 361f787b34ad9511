/* dspy/evaluate.h — dspy.Evaluate: run a program over a devset, score it with a metric, print
 * the average, a result table, and save the rows as JSON or CSV.
 *
 * Follows DSPy 3.3.1 dspy/evaluate/evaluate.py (spec §8, CC-26, CC-27):
 *   - every example runs as program(**example.inputs()) on the parallel executor
 *     (dspy/parallel.h: num_threads, max_errors, progress bar "Average Metric: 51.00 / 99
 *     (51.5%)" over the successful items); the metric scores it;
 *   - a failed example (an LM error, an unparseable answer, a metric error) gets an empty
 *     Prediction and failure_score; reaching max_errors aborts with DSPY_ERR_CANCELLED;
 *   - score = round(100 * sum(scores) / len(devset), 2) over ALL examples, and the INFO log
 *     line "Average Metric: 51.0 / 100 (51.0%)": the sum prints as Python prints it, an int
 *     for bool/int metrics without failures ("55 / 100 (55.0%)"), a float otherwise (a failure
 *     adds the float failure_score);
 *   - rows for the table/JSON/CSV: merge_dicts(example, prediction) | {metric_name: score}
 *     (a key in both becomes example_<k> and pred_<k>); table columns in first-seen order;
 *     cells longer than 25 words are cut to 25 words + "..."; the metric column styled V33's
 *     way: "✔️ [100.000]" for floats, "✔️ [True]" for bools and ints;
 *   - the printed table is what DSPy's console branch prints, print(df) with unlimited rows
 *     and columns: pandas' DataFrame.to_string layout at display.width 80 (columns wrapped
 *     into blocks with " \" markers, max_colwidth 50, NaN for absent cells, \n shown
 *     escaped), checked against pandas 1.5.3 (tests/ref/evaluate_tables.json). With a row
 *     limit, the note DSPy shows as HTML is a plain line "... K more rows not displayed ...".
 * What it does not: pandas' scientific notation for very large/small floats in other columns,
 * on_evaluate callbacks, callback_metadata, V26's return value shapes (V26 styled falsy scores
 * as blank cells).
 *
 * Ownership: results own references to the examples' values and to the predictions.
 * Thread safety: dspy_evaluate may run from any thread; a result may be read from many.
 */
#ifndef DSPY_EVALUATE_H
#define DSPY_EVALUATE_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dspy/example.h"
#include "dspy/json.h"
#include "dspy/module.h"
#include "dspy/prediction.h"
#include "dspy/status.h"
#include "dspy/trace.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- metrics ------------------------------------------------------------------------------ */

/* How a metric's value prints (Python's type of the returned value). */
typedef enum dspy_score_kind {
    DSPY_SCORE_FLOAT = 0, /* 0.5 -> "0.5", styled "✔️ [0.500]" */
    DSPY_SCORE_BOOL,      /* 0/1 -> False/True, styled "✔️ [True]" */
    DSPY_SCORE_INT        /* 3 -> "3", styled "✔️ [3]" */
} dspy_score_kind;

/* metric(example, prediction, trace) -> *score. `trace` is NULL in Evaluate (DSPy calls
 * metric(example, pred)) and in bootstrap_trace_data; bool metrics return 0 or 1. A failure
 * status counts the example as failed. Must be thread-safe when num_threads > 1. */
typedef dspy_status (*dspy_metric_fn)(void *user, const dspy_example *example, const dspy_prediction *pred,
                                      dspy_trace *trace, double *score);

typedef struct dspy_metric {
    const char *name;     /* metric.__name__: the table column (NULL = "metric") */
    dspy_metric_fn fn;
    void *user;
    dspy_score_kind kind;
} dspy_metric;

/* Built-in metrics on one field (`field` must outlive the metric):
 * exact_match: Python `example.f.strip() == pred.f.strip()` for strings (other JSON values:
 * equality; an absent field is None), a bool; named "exact_match".
 * answer_exact_match: DSPy's answer_exact_match: normalize_text of both sides equal; an
 * example value that is a list matches when any element does. A bool, named
 * "answer_exact_match".
 * f1: DSPy's token-level F1 (dsp.utils.metrics.F1 = max of f1_score(pred.f, answer) over the
 * example's answer or list of answers), a float in [0, 1], named "f1". */
DSPY_API dspy_metric dspy_metric_exact_match(const char *field);
DSPY_API dspy_metric dspy_metric_answer_exact_match(const char *field);
DSPY_API dspy_metric dspy_metric_f1(const char *field);
/* DSPy's normalize_text, exactly (dspy/dsp/utils/metrics.py): unicodedata NFD, str.lower()
 * (full mappings, final sigma), ASCII punctuation removed, the articles a/an/the removed as
 * whole words (Python re's \b), whitespace (str.isspace) collapsed to single spaces, stripped.
 * Unicode data of CPython 3.11 (Unicode 14.0.0). malloc'd; NULL on OOM or invalid UTF-8 (with
 * dspy_errmsg). */
DSPY_API char *dspy_normalize_text(const char *s);
/* DSPy's f1_score(prediction, ground_truth): the token-level F1 of the two normalized texts
 * (tokens = split on whitespace, counted as multisets); 0 when no token is shared (also when
 * both are empty, as DSPy). Errors: DSPY_ERR_ARG (invalid UTF-8), DSPY_ERR_NOMEM. */
DSPY_API dspy_status dspy_f1_score(const char *prediction, const char *ground_truth, double *out);

/* ---- failures ----------------------------------------------------------------------------- */

/* One failed example as Evaluate (or bootstrap_trace_data) saw it. Valid during the callback. */
typedef struct dspy_eval_failure {
    size_t index;            /* position in the devset / dataset */
    dspy_status status;      /* DSPY_ERR_PARSE: the answer could not be parsed (AdapterParseError);
                                else the LM's, the metric's or another error */
    const char *message;     /* the whole error text (DSPy's wording) */
    const char *lm_response; /* the LM's raw answer when it could not be parsed, else NULL */
} dspy_eval_failure;

/* Called once per failed example, from the thread that ran it (several threads may call it at
 * once: make it thread-safe), before the executor counts the error. */
typedef void (*dspy_eval_failure_fn)(void *user, const dspy_eval_failure *f);

/* ---- results ------------------------------------------------------------------------------ */

typedef struct dspy_eval_result dspy_eval_result;

/* An empty result (for building one by hand; dspy_evaluate makes its own). */
DSPY_API dspy_status dspy_eval_result_new(const char *metric_name, dspy_eval_result **out);
/* Appends (example, prediction, score): the example is copied (with its input keys), the
 * prediction retained (NULL = an empty Prediction, as for a failed example). */
DSPY_API dspy_status dspy_eval_result_append(dspy_eval_result *r, const dspy_example *example, dspy_prediction *pred,
                                             double score, dspy_score_kind kind);
DSPY_API void dspy_eval_result_free(dspy_eval_result *r); /* NULL-safe */

/* EvaluationResult.score: round(100 * sum(scores) / len(results), 2) (0 for no results), or
 * the value given to dspy_eval_result_set_score (EvaluationResult(score=..., results=...)). */
DSPY_API double dspy_eval_result_score(const dspy_eval_result *r);
DSPY_API void dspy_eval_result_set_score(dspy_eval_result *r, double score);
DSPY_API size_t dspy_eval_result_len(const dspy_eval_result *r);
DSPY_API const char *dspy_eval_result_metric_name(const dspy_eval_result *r);
/* Row i's parts (borrowed; NULL past the end). */
DSPY_API const dspy_example *dspy_eval_result_example(const dspy_eval_result *r, size_t i);
DSPY_API const dspy_prediction *dspy_eval_result_prediction(const dspy_eval_result *r, size_t i);
DSPY_API double dspy_eval_result_item_score(const dspy_eval_result *r, size_t i);
DSPY_API dspy_score_kind dspy_eval_result_item_kind(const dspy_eval_result *r, size_t i);
/* The error of a failed example (NULL when it succeeded or was appended by hand). */
DSPY_API const char *dspy_eval_result_item_error(const dspy_eval_result *r, size_t i);
/* The status of a failed example (DSPY_OK when it succeeded): DSPY_ERR_PARSE for an answer
 * that could not be parsed. */
DSPY_API dspy_status dspy_eval_result_item_status(const dspy_eval_result *r, size_t i);
/* The LM's raw answer of an example whose answer could not be parsed (NULL otherwise). */
DSPY_API const char *dspy_eval_result_item_reply(const dspy_eval_result *r, size_t i);
/* Failed examples, and their indices in devset order (borrowed, NULL when none). */
DSPY_API size_t dspy_eval_result_n_failed(const dspy_eval_result *r);
DSPY_API const size_t *dspy_eval_result_failed_indices(const dspy_eval_result *r);

/* "EvaluationResult(score=100.0, results=<list of 1 results>)" (malloc'd). */
DSPY_API dspy_status dspy_eval_result_repr(const dspy_eval_result *r, char **out);
/* The log line "Average Metric: 51.0 / 100 (51.0%)" (malloc'd). */
DSPY_API dspy_status dspy_eval_result_summary(const dspy_eval_result *r, char **out);

/* The rows DSPy saves (_prepare_results_output): a JSON array with one object per result,
 * merge_dicts(example, prediction) then {metric_name: score}, untruncated (new reference). */
DSPY_API dspy_status dspy_eval_result_rows(const dspy_eval_result *r, dspy_json **out);
/* The table's column names in first-seen order (a JSON array of strings, new reference). */
DSPY_API dspy_status dspy_eval_result_columns(const dspy_eval_result *r, dspy_json **out);
/* The table's cell text for row i and column c as displayed: absent cells "NaN", 25-word
 * truncation, metric styling (malloc'd). */
DSPY_API dspy_status dspy_eval_result_cell(const dspy_eval_result *r, size_t row, size_t col, char **out);
/* Prints the table (all rows when max_rows < 0, else the first max_rows and then
 * "... K more rows not displayed ...") as plain text. */
DSPY_API dspy_status dspy_eval_result_print_table(const dspy_eval_result *r, int64_t max_rows, FILE *out);
DSPY_API dspy_status dspy_eval_result_table_text(const dspy_eval_result *r, int64_t max_rows, char **out);

/* save_as_json: json.dump(rows) (", "/": " separators, non-ASCII escaped), atomically. */
DSPY_API dspy_status dspy_eval_result_save_json(const dspy_eval_result *r, const char *path);
/* save_as_csv: csv.DictWriter (excel dialect: "," separator, '"' quoting when needed, CRLF
 * line ends); the header is the table's columns (DSPy takes the first row's keys, which
 * raises when a later row has more; we take them all), absent cells empty, values as
 * Python's str(). Written atomically. */
DSPY_API dspy_status dspy_eval_result_save_csv(const dspy_eval_result *r, const char *path);

/* ---- Evaluate ----------------------------------------------------------------------------- */

typedef struct dspy_evaluate_params {
    int32_t num_threads;     /* <= 0: dspy_settings_num_threads(); 1 = the calling thread */
    bool display_progress;   /* tqdm bar (default false) */
    FILE *progress_out;      /* NULL = stderr */
    int64_t display_table;   /* 0 = none (default), N > 0 = the first N rows, < 0 = all rows */
    FILE *table_out;         /* NULL = stderr (the library never writes stdout by itself) */
    int32_t max_errors;      /* < 0: dspy_settings_max_errors() (10) */
    double failure_score;    /* score of a failed example (0.0) */
    bool provide_traceback;  /* drop the traceback hint from error logs */
    const char *save_as_json; /* write the rows here when set */
    const char *save_as_csv;
    /* dspy.c's own (DSPy has neither) */
    bool log_failures;        /* DSPy's ERROR log line "Error for <example>: <message>" per failed
                                 example (default true); false leaves the reporting to on_failure */
    bool count_parse_failures; /* an answer that cannot be parsed counts toward max_errors, as in
                                  DSPy (default true). false: it is scored failure_score like a
                                  wrong answer (a failed row, DSPY_ERR_PARSE) and only LM, metric
                                  and other errors count; the progress description then counts
                                  it among the scored examples */
    dspy_eval_failure_fn on_failure; /* NULL: none */
    void *failure_user;
} dspy_evaluate_params;

DSPY_API dspy_evaluate_params dspy_evaluate_params_default(void);

/* Evaluate(devset=..., metric=...)(program). `p` may be NULL. On success *out holds every
 * example in devset order and the INFO line "Average Metric: ..." has been logged; the table
 * and files follow the params. Errors: DSPY_ERR_ARG (no program/metric, an empty devset: DSPy
 * divides by zero), DSPY_ERR_CANCELLED when max_errors was reached or SIGINT arrived (*out
 * NULL), errors saving the files. */
DSPY_API dspy_status dspy_evaluate(dspy_module *program, const dspy_dataset *devset, const dspy_metric *metric,
                                   const dspy_evaluate_params *p, dspy_eval_result **out);

#ifdef __cplusplus
}
#endif
#endif
