/* dspy/trace.h — DSPy's trace: the list of (predictor, inputs, prediction) tuples that every
 * successful Predict call appends to settings.trace (spec §3.3).
 *
 * The settings hold one global trace by default (DSPy's module-level `trace=[]`); a context can
 * install a fresh one (dspy.context(trace=[])) or none (trace=None), which is how bootstrapping
 * collects one trace per example. Appends drop the oldest entry when the list already holds
 * settings.max_trace_size entries (default 10000) and record nothing when that size is 0.
 *
 * Ownership: traces are reference counted; entries keep references to the predictor module
 * and the prediction, so both outlive the program that made them while the trace holds them.
 * Thread safety: all functions may be called from many threads on the same trace.
 */
#ifndef DSPY_TRACE_H
#define DSPY_TRACE_H

#include "dspy/export.h"

#include <stddef.h>
#include <stdint.h>

#include "dspy/json.h"
#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_module dspy_module;
typedef struct dspy_prediction dspy_prediction;
typedef struct dspy_trace dspy_trace;

/* One entry, with new references (release with dspy_trace_entry_clear). */
typedef struct dspy_trace_entry {
    dspy_module *predictor;      /* the Predict that ran */
    dspy_json *inputs;           /* its inputs (a JSON object, special options removed) */
    dspy_prediction *prediction; /* what it returned */
} dspy_trace_entry;

DSPY_API void dspy_trace_entry_clear(dspy_trace_entry *e); /* drops the references; NULL-safe */

/* A new empty trace. */
DSPY_API dspy_status dspy_trace_new(dspy_trace **out);
DSPY_API dspy_trace *dspy_trace_retain(dspy_trace *t); /* NULL-safe; returns t */
DSPY_API void dspy_trace_free(dspy_trace *t);          /* NULL-safe; drops one reference */

DSPY_API size_t dspy_trace_len(dspy_trace *t);
/* Entry i (Python indexing: -1 is the last one). DSPY_ERR_ARG when out of range. */
DSPY_API dspy_status dspy_trace_get(dspy_trace *t, int64_t i, dspy_trace_entry *out);
/* Appends (predictor, copy of inputs, prediction), first popping the oldest entry while the
 * trace holds max_size or more entries. max_size <= 0 records nothing. */
DSPY_API dspy_status dspy_trace_append(dspy_trace *t, dspy_module *predictor, const dspy_json *inputs,
                                       dspy_prediction *prediction, int64_t max_size);
DSPY_API void dspy_trace_clear(dspy_trace *t);

#ifdef __cplusplus
}
#endif
#endif
