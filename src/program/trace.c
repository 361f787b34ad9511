/* trace.c — dspy/trace.h: a locked, reference-counted list of (predictor, inputs, prediction).
 *
 * Follows Predict._forward_postprocess (spec §3.3): pop the oldest entry when the list holds
 * max_trace_size entries, then append. Entries hold references to the predictor and the
 * prediction; inputs are copied (DSPy stores dict(kwargs)).
 */
#include "dspy/trace.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/module.h"
#include "dspy/prediction.h"

struct dspy_trace {
    atomic_int refs;
    pthread_mutex_t lock;
    dspy_trace_entry *items;
    size_t n, cap;
};

void dspy_trace_entry_clear(dspy_trace_entry *e) {
    if (!e) return;
    dspy_module_free(e->predictor);
    dspy_json_decref(e->inputs);
    dspy_prediction_free(e->prediction);
    memset(e, 0, sizeof *e);
}

dspy_status dspy_trace_new(dspy_trace **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) return dspy_fail(DSPY_ERR_NOMEM, "trace: out of memory");
    atomic_init(&(*out)->refs, 1);
    pthread_mutex_init(&(*out)->lock, NULL);
    return DSPY_OK;
}

dspy_trace *dspy_trace_retain(dspy_trace *t) {
    if (t) atomic_fetch_add(&t->refs, 1);
    return t;
}

void dspy_trace_free(dspy_trace *t) {
    if (!t || atomic_fetch_sub(&t->refs, 1) != 1) return;
    for (size_t i = 0; i < t->n; i++) dspy_trace_entry_clear(&t->items[i]);
    free(t->items);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

size_t dspy_trace_len(dspy_trace *t) {
    if (!t) return 0;
    pthread_mutex_lock(&t->lock);
    size_t n = t->n;
    pthread_mutex_unlock(&t->lock);
    return n;
}

dspy_status dspy_trace_get(dspy_trace *t, int64_t i, dspy_trace_entry *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&t->lock);
    int64_t n = (int64_t)t->n, k = i < 0 ? n + i : i;
    if (k < 0 || k >= n) {
        pthread_mutex_unlock(&t->lock);
        return dspy_fail(DSPY_ERR_ARG, "trace index %lld out of range (the trace holds %lld entries)",
                         (long long)i, (long long)n);
    }
    const dspy_trace_entry *e = &t->items[k];
    out->predictor = dspy_module_retain(e->predictor);
    out->inputs = dspy_json_incref(e->inputs);
    out->prediction = dspy_prediction_retain(e->prediction);
    pthread_mutex_unlock(&t->lock);
    return DSPY_OK;
}

dspy_status dspy_trace_append(dspy_trace *t, dspy_module *predictor, const dspy_json *inputs,
                              dspy_prediction *prediction, int64_t max_size) {
    if (max_size <= 0) return DSPY_OK;
    dspy_json *in = inputs ? dspy_json_copy(inputs) : dspy_json_object();
    if (!in) return dspy_fail(DSPY_ERR_NOMEM, "trace: out of memory");
    dspy_trace_entry dropped[1];
    size_t ndropped = 0;
    pthread_mutex_lock(&t->lock);
    /* drop the oldest entries until there is room (one, unless max_size shrank) */
    size_t drop = t->n >= (size_t)max_size ? t->n - (size_t)max_size + 1 : 0;
    for (size_t i = 0; i < drop; i++) {
        if (ndropped == 0) dropped[ndropped++] = t->items[i];
        else dspy_trace_entry_clear(&t->items[i]); /* rare: only after max_size was lowered */
    }
    if (drop) {
        memmove(t->items, t->items + drop, (t->n - drop) * sizeof *t->items);
        t->n -= drop;
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        dspy_trace_entry *items = realloc(t->items, cap * sizeof *items);
        if (!items) {
            pthread_mutex_unlock(&t->lock);
            dspy_json_decref(in);
            for (size_t i = 0; i < ndropped; i++) dspy_trace_entry_clear(&dropped[i]);
            return dspy_fail(DSPY_ERR_NOMEM, "trace: out of memory");
        }
        t->items = items;
        t->cap = cap;
    }
    t->items[t->n++] = (dspy_trace_entry){dspy_module_retain(predictor), in, dspy_prediction_retain(prediction)};
    pthread_mutex_unlock(&t->lock);
    /* released outside the lock: freeing a module may take other locks */
    for (size_t i = 0; i < ndropped; i++) dspy_trace_entry_clear(&dropped[i]);
    return DSPY_OK;
}

void dspy_trace_clear(dspy_trace *t) {
    if (!t) return;
    pthread_mutex_lock(&t->lock);
    dspy_trace_entry *items = t->items;
    size_t n = t->n;
    t->items = NULL;
    t->n = t->cap = 0;
    pthread_mutex_unlock(&t->lock);
    for (size_t i = 0; i < n; i++) dspy_trace_entry_clear(&items[i]);
    free(items);
}
