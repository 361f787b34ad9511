/* failures.h — quiet reporting of failed examples for `dspy compile` and `dspy eval`.
 *
 * Collects the failures Evaluate / bootstrap_trace_data report (dspy_eval_failure_fn, called
 * from worker threads) and prints them after the run, one line each, in example order:
 *   "   #17 unparseable answer: \"I think the label is\\n\\ncard_arrival...\""
 *   "   #23 LM error: HTTP 500: The server had an error..."
 * (the example's index, the reason, the first 80 characters of the answer — or of the error
 * when there is no answer — with newlines, tabs and backslashes escaped), then a count line.
 * The full records (index, reason, status, whole message, whole answer, the example) go to a
 * JSONL file in the run folder. With --verbose the commands keep DSPy's own log lines instead.
 */
#ifndef DSPY_TOOL_FAILURES_H
#define DSPY_TOOL_FAILURES_H

#include <pthread.h>
#include <stdio.h>

#include "dspy/evaluate.h"
#include "dspy/json.h"

typedef struct failure_log {
    pthread_mutex_t mu;
    const dspy_dataset *ds; /* the examples the indices refer to (borrowed) */
    dspy_json *items;       /* array of records */
    size_t n_parse, n_other;
} failure_log;

dspy_status failure_log_init(failure_log *f, const dspy_dataset *ds);
/* The dspy_eval_failure_fn: `user` is the failure_log. Thread-safe. */
void failure_log_add(void *user, const dspy_eval_failure *e);
size_t failure_log_count(const failure_log *f);
/* Prints the lines and the count (nothing when there were no failures). `what` names the run
 * ("teacher", "evaluation"); `details` (may be NULL) is the JSONL file named in the count. */
void failure_log_print(failure_log *f, FILE *out, const char *what, const char *details);
/* Writes the records as JSONL (sorted by index), atomically. */
dspy_status failure_log_save(failure_log *f, const char *path);
void failure_log_free(failure_log *f);

#endif
