/* dspy/parallel.h — DSPy's ParallelExecutor: run a function over N items on a thread pool with
 * an error budget, a live progress bar and SIGINT-safe cancellation.
 *
 * What it does (DSPy 3.3.1 dspy/utils/parallelizer.py, spec §8.2–8.3, CC-26.4–8):
 *   - num_threads == 1 runs every item on the calling thread, in order; otherwise a fresh pool
 *     of min(num_threads, n) workers takes the items in index order. Workers inherit the
 *     calling thread's dspy.context overrides (dspy_context_capture), as DSPy's workers do.
 *   - An item that fails (returns a status) is counted, logged at ERROR as
 *     "Error for <item>: <message>. Set `provide_traceback=True` for traceback." and its
 *     index is reported in `failed` (sorted). The error that brings the count to max_errors
 *     cancels everything not yet started and the run returns DSPY_ERR_CANCELLED with the
 *     message "Execution cancelled due to errors or interruption." (logged as a warning too).
 *     So max_errors=1 aborts at the first error, max_errors=2 tolerates one.
 *   - SIGINT (Ctrl-C) while a run owns the handler stops new items from starting and ends the
 *     run the same way (DSPY_ERR_CANCELLED, report.interrupted). Items already running finish.
 *   - The progress bar (tqdm layout, dspy/progress.h) advances once per finished item, errors
 *     included, and its description is set first: with compare_results
 *     "Average Metric: {s:.2f} / {c} ({round(100*s/c, 1)}%)" where s and c are the sum and the
 *     count of the scores of the items that succeeded (errors excluded, so the tutorial shows
 *     "51.00 / 99 (51.5%)" at 100/100); otherwise "Processed {k} / {n} examples".
 * What it does not: resubmitting stragglers (DSPy's 120 s timeout), tracebacks (C has none;
 * provide_traceback only drops the hint), per-thread usage trackers.
 *
 * Results: items write their own outputs (into the caller's arrays, by index), so results are
 * in item order whatever the thread that computed them. The item function must be safe to
 * call from several threads at once when num_threads > 1.
 */
#ifndef DSPY_PARALLEL_H
#define DSPY_PARALLEL_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dspy/status.h"
#include "dspy/str.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_parallel_params {
    int32_t num_threads;    /* <= 0: dspy_settings_num_threads() (8 by default); 1 = calling thread */
    int32_t max_errors;     /* < 0: dspy_settings_max_errors() (10 by default) */
    bool display_progress;  /* draw a tqdm bar (default false) */
    FILE *progress_out;     /* where the bar goes; NULL = stderr */
    bool compare_results;   /* "Average Metric: ..." descriptions (default true) or "Processed ..." */
    bool provide_traceback; /* drop the "Set `provide_traceback=True`" hint from error logs */
    bool catch_sigint;      /* install a SIGINT handler for the run (default true); a run nested
                               in another that holds it leaves it alone */
    bool log_errors;        /* log each failed item at ERROR (default true) */
} dspy_parallel_params;

DSPY_API dspy_parallel_params dspy_parallel_params_default(void);

/* Computes item i. On success return DSPY_OK and set *score (the value averaged in the
 * progress description; leave it at 0 when it means nothing). On failure return a status with
 * dspy_fail's message: the item counts as an error. */
typedef dspy_status (*dspy_parallel_item_fn)(void *user, size_t i, double *score);
/* Optional: appends a description of item i for the error log (DSPy prints the item's repr). */
typedef void (*dspy_parallel_describe_fn)(void *user, size_t i, dspy_str *out);

/* What a run did. Owned by the caller; release with dspy_parallel_report_clear. */
typedef struct dspy_parallel_report {
    size_t n_items;
    size_t n_ok;          /* items that succeeded */
    size_t n_errors;      /* items that failed */
    size_t *failed;       /* indices of the failed items, sorted (NULL when none) */
    char **failed_msg;    /* their error messages, parallel to `failed` */
    bool *ok;             /* per item: succeeded (false: failed or never ran) */
    double *scores;       /* per item: the score it reported (0 unless ok) */
    double score_sum;     /* sum of the scores of the items that succeeded, in item order */
    bool cancelled;       /* stopped by max_errors or SIGINT */
    bool interrupted;     /* stopped by SIGINT */
    char *last_desc;      /* the last progress description (NULL before any item finished) */
} dspy_parallel_report;

DSPY_API void dspy_parallel_report_clear(dspy_parallel_report *r); /* NULL-safe */

/* Runs fn over items 0..n-1 (see the top of this file). `describe` may be NULL; `p` may be
 * NULL (defaults). `report` may be NULL; when given it is filled in every case, also when the
 * run is cancelled. Returns DSPY_OK when the error budget was not reached (failed items are
 * then only in the report), DSPY_ERR_CANCELLED ("Execution cancelled due to errors or
 * interruption."), DSPY_ERR_ARG for a bad thread count, DSPY_ERR_NOMEM. */
DSPY_API dspy_status dspy_parallel_run(const dspy_parallel_params *p, size_t n, dspy_parallel_item_fn fn,
                              dspy_parallel_describe_fn describe, void *user, dspy_parallel_report *report);

/* The progress description for `count` successful items summing to `sum`:
 * "Average Metric: 51.00 / 99 (51.5%)" (Python's f"{s:.2f} / {c} ({round(100*s/c, 1)}%)",
 * "(0%)" when count is 0). Appended to out. */
DSPY_API void dspy_parallel_metric_desc(dspy_str *out, double sum, size_t count);

/* Python's round(x, ndigits) for 0 <= ndigits <= 15 (exact value, ties to even). */
DSPY_API double dspy_py_round(double x, int ndigits);

#ifdef __cplusplus
}
#endif
#endif
