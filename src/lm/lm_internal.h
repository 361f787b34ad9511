/* lm_internal.h — what the LM core (lm.c) and its built-in providers share. Private to src/lm. */
#ifndef DSPY_LM_INTERNAL_H
#define DSPY_LM_INTERNAL_H

#include <pthread.h>

#include "dspy/lm.h"
#include "dspy/server.h"

/* Several servers behind one LM (endpoints.c): api_base "http://a/v1,http://b/v1". The url
 * strings live until dspy_lm_endpoints_free; every pick is paired with one done. */
enum { DSPY_LM_MAX_ENDPOINTS = 32 };
typedef struct dspy_lm_endpoints {
    pthread_mutex_t lock;
    char *url[DSPY_LM_MAX_ENDPOINTS]; /* without trailing slashes */
    int inflight[DSPY_LM_MAX_ENDPOINTS];
    int n;
    unsigned turn;                    /* round-robin start among equally loaded servers */
} dspy_lm_endpoints;
void dspy_lm_endpoints_init(dspy_lm_endpoints *t);
void dspy_lm_endpoints_free(dspy_lm_endpoints *t);
/* The server of the comma-separated `list` with the fewest requests in flight (ties in turn),
 * not `avoid` (a slot, or -1) unless it is the only one; *slot for dspy_lm_endpoints_done.
 * DSPY_ERR_ARG when the list names none or more than DSPY_LM_MAX_ENDPOINTS. */
dspy_status dspy_lm_endpoints_pick(dspy_lm_endpoints *t, const char *list, int avoid, int *slot, const char **url);
void dspy_lm_endpoints_done(dspy_lm_endpoints *t, int slot);

/* OpenAI-compatible HTTP provider (openai_http.c). */
extern const dspy_lm_provider dspy_openai_http_provider;
dspy_status dspy_openai_http_new(void **impl);

/* Scripted provider (scripted.c). */
extern const dspy_lm_provider dspy_scripted_provider;
/* Builds a scripted impl from a "scripted:" file's parsed JSON (`where` labels errors). */
dspy_status dspy_scripted_from_json(const dspy_json *spec, const char *where, void **impl);
dspy_status dspy_scripted_load(const char *path, void **impl);

/* Python datetime.now().isoformat(): local time, microseconds omitted when zero. */
void dspy_lm_timestamp(char out[40]);

/* In-process local server (local_args.c): `dspy serve` options ("--max-seqs", "16" or
 * "--max-seqs=16", "--strict") written into *p; strings are borrowed from args. *grace_set
 * tells whether --shutdown-grace was given. DSPY_ERR_ARG naming an unknown or bad option. */
dspy_status dspy_local_serve_args(const char *const *args, size_t n, dspy_server_params *p, bool *grace_set);

#endif
