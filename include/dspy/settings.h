/* dspy/settings.h — dspy.settings: process-wide defaults and per-thread context overrides.
 *
 * Defaults (DSPy 3.3.1 DEFAULT_CONFIG, spec §13): lm None, adapter None (= ChatAdapter with
 * the JSONAdapter fallback), format profile V33 (project decision §16.1), trace = one global
 * list, max_trace_size 10000, callbacks [], num_threads 8, max_errors 10,
 * disable_history False.
 *
 * dspy.configure(...) is the dspy_settings_set_* family: it changes the process-wide values
 * (any thread may call it; values are read under a lock). dspy.context(...) is a dspy_context:
 * an object holding only the values it sets, pushed on the calling thread's stack
 * (dspy_context_push) and popped when the scope ends (dspy_context_pop). A lookup
 * (dspy_settings_lm() etc.) takes the innermost pushed context that sets the value, then the
 * process-wide value.
 *
 * Worker threads do not see the stack of the thread that started them. To inherit it, as
 * DSPy's ParallelExecutor does, the parent calls dspy_context_capture() (one context holding
 * every override in effect on its thread, sharing the same trace object) and hands it to each
 * worker, which pushes it for the duration of its work and pops it at the end:
 *
 *     dspy_context *ctx; dspy_context_capture(&ctx);     // parent thread
 *     ... worker: dspy_context_push(ctx); run(); dspy_context_pop(ctx);
 *     dspy_context_free(ctx);                            // parent, after the workers
 *
 * A thread must pop every context it pushed before it exits (the stack is thread-local).
 *
 * What is not here: warn_on_type_mismatch, track_usage, usage_tracker, caller_modules,
 * async_max_workers, stream listeners. disable_history is process-wide only (LM history is
 * switched on or off for all threads at once).
 *
 * Ownership: setters retain what they are given (LMs, traces) and copy callback tables;
 * getters that return objects return new references.
 */
#ifndef DSPY_SETTINGS_H
#define DSPY_SETTINGS_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/adapter.h"
#include "dspy/callback.h"
#include "dspy/lm.h"
#include "dspy/status.h"
#include "dspy/trace.h"
#include "dspy/type.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- process-wide values (dspy.configure) ------------------------------------------------ */

/* settings.lm (retained; NULL = None). */
DSPY_API void dspy_settings_set_lm(dspy_lm *lm);
/* settings.adapter: which adapter Predict calls, and whether a ChatAdapter falls back to the
 * JSONAdapter on a parse failure. */
DSPY_API void dspy_settings_set_adapter(dspy_adapter_kind kind, bool use_json_adapter_fallback);
/* The format profile new modules get by default (dspy_predict_params_default). */
DSPY_API void dspy_settings_set_profile(dspy_profile profile);
/* settings.trace (retained; NULL = None: no tracing). */
DSPY_API void dspy_settings_set_trace(dspy_trace *trace);
DSPY_API void dspy_settings_set_max_trace_size(int64_t n);
/* settings.callbacks = a copy of cbs[0..n). n == 0 clears them. */
DSPY_API dspy_status dspy_settings_set_callbacks(const dspy_callbacks *cbs, size_t n);
/* DSPY_ERR_ARG for n < 1. */
DSPY_API dspy_status dspy_settings_set_num_threads(int32_t n);
/* DSPY_ERR_ARG for n < 0. */
DSPY_API dspy_status dspy_settings_set_max_errors(int32_t n);
/* settings.disable_history: true stops LM history recording (dspy_history_set_enabled). */
DSPY_API void dspy_settings_set_disable_history(bool disable);
/* dspy.c's own extension (not in DSPy): when the LM is a local model served by dspy.c
 * ("openai/local:<dir>"), ask its server for always-valid answers: ChatAdapter calls whose
 * outputs are str and Literal fields carry the "dspy_layout" request field
 * (dspy_chat_adapter_layout), and the JSONAdapter sends its json_schema response_format (as it
 * does for OpenAI models) instead of json_object. Default true; process-wide (no context
 * override). Requests to remote APIs are never changed. */
DSPY_API void dspy_settings_set_local_structured(bool on);
/* Back to the defaults above, with a fresh empty global trace (tests use it). */
DSPY_API void dspy_settings_reset(void);

/* ---- effective values on the calling thread ---------------------------------------------- */

DSPY_API dspy_lm *dspy_settings_lm(void);                 /* new reference or NULL */
DSPY_API dspy_adapter_kind dspy_settings_adapter(bool *use_json_adapter_fallback /* may be NULL */);
DSPY_API dspy_profile dspy_settings_profile(void);
DSPY_API dspy_trace *dspy_settings_trace(void);           /* new reference, or NULL for None */
DSPY_API int64_t dspy_settings_max_trace_size(void);
DSPY_API int32_t dspy_settings_num_threads(void);
DSPY_API int32_t dspy_settings_max_errors(void);
DSPY_API bool dspy_settings_disable_history(void);
DSPY_API bool dspy_settings_local_structured(void);
/* A malloc'd copy of the callback table in effect (*n entries; *out NULL when none). */
DSPY_API dspy_status dspy_settings_callbacks(dspy_callbacks **out, size_t *n);

/* ---- contexts (dspy.context) ------------------------------------------------------------- */

typedef struct dspy_context dspy_context;

/* A context that overrides nothing yet. Reference counted. */
DSPY_API dspy_status dspy_context_new(dspy_context **out);
DSPY_API dspy_context *dspy_context_retain(dspy_context *c); /* NULL-safe; returns c */
DSPY_API void dspy_context_free(dspy_context *c);            /* NULL-safe; drops one reference */

/* Overrides (same meaning as the process-wide setters). A context may be changed while pushed;
 * lookups see the change at once. */
DSPY_API void dspy_context_set_lm(dspy_context *c, dspy_lm *lm);
DSPY_API void dspy_context_set_adapter(dspy_context *c, dspy_adapter_kind kind, bool use_json_adapter_fallback);
DSPY_API void dspy_context_set_profile(dspy_context *c, dspy_profile profile);
DSPY_API void dspy_context_set_trace(dspy_context *c, dspy_trace *trace); /* NULL = None */
DSPY_API void dspy_context_set_max_trace_size(dspy_context *c, int64_t n);
DSPY_API dspy_status dspy_context_set_callbacks(dspy_context *c, const dspy_callbacks *cbs, size_t n);
DSPY_API dspy_status dspy_context_set_num_threads(dspy_context *c, int32_t n);
DSPY_API dspy_status dspy_context_set_max_errors(dspy_context *c, int32_t n);

/* Makes `c` the innermost context of the calling thread (retained until popped). One context
 * may be pushed on several threads at once. */
DSPY_API dspy_status dspy_context_push(dspy_context *c);
/* Pops `c`, which must be the calling thread's innermost context (DSPY_ERR_STATE otherwise). */
DSPY_API dspy_status dspy_context_pop(dspy_context *c);
/* A new context holding every override in effect on the calling thread (innermost wins), for
 * handing to worker threads. With no context pushed it overrides nothing. */
DSPY_API dspy_status dspy_context_capture(dspy_context **out);

#ifdef __cplusplus
}
#endif
#endif
