/* parse_failure.h — the C form of AdapterParseError's attributes (signature, lm_response,
 * parsed_result) for the code that catches it: bootstrap_trace_data turns a Predict call whose
 * answer could not be parsed into a FailedPrediction (spec §9, CC-29.4).
 *
 * A thread records nothing until it calls dspy_parse_failure_watch(true); then every Predict call
 * that fails with DSPY_ERR_PARSE on that thread replaces the thread's note with (the Predict,
 * its inputs, the LM's last answer, how many output fields were parsed). The watcher takes the
 * note with dspy_parse_failure_take and stops with dspy_parse_failure_watch(false), which drops any note
 * left. Private to src/program.
 */
#ifndef DSPY_PROGRAM_PARSE_FAILURE_H
#define DSPY_PROGRAM_PARSE_FAILURE_H

#include <stdbool.h>

#include "dspy/json.h"
#include "dspy/module.h"

typedef struct parse_failure {
    dspy_module *predictor; /* reference */
    dspy_json *inputs;      /* reference */
    char *lm_response;      /* malloc'd; NULL when unknown */
    int n_parsed;           /* output fields the last attempt parsed (0 when none or unknown) */
} parse_failure;

/* Starts or stops watching on the calling thread (stopping drops a pending note). */
void dspy_parse_failure_watch(bool on);
/* True while the calling thread watches. */
bool dspy_parse_failure_watching(void);
/* Called by Predict on DSPY_ERR_PARSE while dspy_errmsg() is the AdapterParseError text; keeps
 * that message unchanged. A no-op unless the thread watches. */
void dspy_parse_failure_note(dspy_module *predictor, const dspy_json *inputs, const char *lm_response);
/* Moves the note into *out and returns true, or returns false when there is none. */
bool dspy_parse_failure_take(parse_failure *out);
void dspy_parse_failure_clear(parse_failure *pf);

#endif
