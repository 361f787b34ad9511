/* endpoints.c — spreading an LM's requests over several servers (lm_internal.h).
 *
 * api_base may name several OpenAI-compatible servers, comma-separated (the replicas of one
 * model, e.g. one `dspy serve` per GPU). Each request goes to the one with the fewest requests
 * of this client in flight; ties go round-robin, so sequential calls alternate. A retry after a
 * transport failure (connection refused, reset, timeout) prefers another server than the one
 * that failed, so a dead replica costs one failed attempt, not the request. The table of
 * servers seen lives with the HTTP client (one per LM) and is guarded by one mutex: a pick is a
 * scan of at most DSPY_LM_MAX_ENDPOINTS entries.
 */
#include <stdlib.h>
#include <string.h>

#include "lm_internal.h"

void dspy_lm_endpoints_init(dspy_lm_endpoints *t) {
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->lock, NULL);
}

void dspy_lm_endpoints_free(dspy_lm_endpoints *t) {
    for (int i = 0; i < t->n; i++) free(t->url[i]);
    pthread_mutex_destroy(&t->lock);
    memset(t, 0, sizeof *t);
}

/* The entry of url[0..len) (without trailing slashes), added when new; -1 when the table is
 * full or out of memory. Under the lock. */
static int slot_of(dspy_lm_endpoints *t, const char *url, size_t len) {
    for (int i = 0; i < t->n; i++)
        if (strlen(t->url[i]) == len && memcmp(t->url[i], url, len) == 0) return i;
    if (t->n == DSPY_LM_MAX_ENDPOINTS) return -1;
    char *copy = malloc(len + 1);
    if (!copy) return -1;
    memcpy(copy, url, len);
    copy[len] = '\0';
    t->url[t->n] = copy;
    t->inflight[t->n] = 0;
    return t->n++;
}

dspy_status dspy_lm_endpoints_pick(dspy_lm_endpoints *t, const char *list, int avoid, int *slot, const char **url) {
    int cand[DSPY_LM_MAX_ENDPOINTS], nc = 0;
    dspy_status st = DSPY_OK;
    pthread_mutex_lock(&t->lock);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',') p++;
        const char *e = p;
        while (*e && *e != ',') e++;
        size_t len = (size_t)(e - p);
        while (len && (p[len - 1] == ' ' || p[len - 1] == '/')) len--;
        if (len) {
            if (nc == DSPY_LM_MAX_ENDPOINTS) {
                st = dspy_fail(DSPY_ERR_ARG, "api_base lists more than %d servers", DSPY_LM_MAX_ENDPOINTS);
                goto done;
            }
            int s = slot_of(t, p, len);
            if (s < 0) {
                st = dspy_fail(DSPY_ERR_NOMEM, "api_base: out of memory, or more than %d distinct servers in one LM",
                               DSPY_LM_MAX_ENDPOINTS);
                goto done;
            }
            bool dup = false;
            for (int i = 0; i < nc; i++) dup |= cand[i] == s;
            if (!dup) cand[nc++] = s;
        }
        p = e;
    }
    if (nc == 0) {
        st = dspy_fail(DSPY_ERR_ARG, "api_base names no server ('%s')", list);
        goto done;
    }
    /* the fewest in flight, from a rotating start so that ties alternate; `avoid` (the server
     * whose attempt just failed) only when it is the only one */
    int best = -1;
    unsigned start = t->turn++;
    for (int k = 0; k < nc; k++) {
        int s = cand[(start + (unsigned)k) % (unsigned)nc];
        if (s == avoid && nc > 1) continue;
        if (best < 0 || t->inflight[s] < t->inflight[best]) best = s;
    }
    t->inflight[best]++;
    *slot = best;
    *url = t->url[best];
done:
    pthread_mutex_unlock(&t->lock);
    return st;
}

void dspy_lm_endpoints_done(dspy_lm_endpoints *t, int slot) {
    pthread_mutex_lock(&t->lock);
    if (slot >= 0 && slot < t->n && t->inflight[slot] > 0) t->inflight[slot]--;
    pthread_mutex_unlock(&t->lock);
}
