/* server/sx_cache.h — compiled output constraints, one per distinct output specification
 * (private to src/server/).
 *
 * What it does: turns a request's structured-output format (response_format json_schema or
 * json_object, or the dspy_layout extension; see openai.h) into a dspy_constraint with
 * dspy/structured.h, and keeps it keyed by the specification's text (the compact schema plus
 * the bounds, the layout's fields), so a schema sent by every request of an evaluation is
 * compiled once. Compiling over a 128k vocabulary takes ~0.01-1 s; the vocabulary trie is built
 * on the first structured request. At most max_entries are kept (least recently used goes);
 * an entry in use by a running request lives on until its last reference is released.
 * What it does not: sampling (the engine applies the constraint).
 *
 * Thread safety: dspy_sx_cache_get may be called from any thread; compiles are serialised (a second
 * request for the same specification waits and then shares the result). Entries are
 * reference-counted.
 */
#ifndef DSPY_SERVER_SX_CACHE_H
#define DSPY_SERVER_SX_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "dspy/constraint.h"
#include "dspy/status.h"
#include "dspy/tokenizer.h"
#include "server/openai.h"

typedef struct sx_cache sx_cache;
typedef struct sx_entry sx_entry;

typedef struct sx_defaults {
    int32_t max_free_tokens;   /* a layout's free text without max_tokens */
    int32_t max_string_tokens; /* JSON strings without dspy_max_string_tokens */
    int32_t max_entries;       /* constraints kept */
} sx_defaults;

/* `tok` must outlive the cache; model_vocab is the engine's vocabulary size. */
dspy_status dspy_sx_cache_new(const dspy_tokenizer *tok, int32_t model_vocab, const sx_defaults *d, sx_cache **out);
void dspy_sx_cache_free(sx_cache *c); /* NULL-safe; entries still referenced live on */

/* The constraint for r's format (r->format != OAI_FORMAT_TEXT): a new reference in *out.
 * *hit tells whether it was cached, *compile_s how long the compile took (0 on a hit).
 * DSPY_ERR_ARG with the compiler's message for a specification it cannot enforce (answer 400),
 * DSPY_ERR_NOMEM. */
dspy_status dspy_sx_cache_get(sx_cache *c, const oai_request *r, sx_entry **out, bool *hit, double *compile_s);

const dspy_constraint *dspy_sx_entry_constraint(const sx_entry *e);
/* Drops a reference (a void * for sched_job_params.hold_release). NULL-safe. */
void dspy_sx_entry_release(void *e);

/* Entries kept and compiles done (for tests and /metrics). */
void dspy_sx_cache_counts(sx_cache *c, int32_t *entries, int64_t *compiles, int64_t *hits);

#endif
