/* settings.c — dspy/settings.h: process-wide defaults, per-thread context stacks, capture for
 * workers.
 *
 * Follows DSPy 3.3.1 dspy/dsp/utils/settings.py (DEFAULT_CONFIG, configure, context, the
 * thread-local overrides that ParallelExecutor copies into its workers). The process-wide
 * values are one "context" that sets everything, guarded by a mutex; each thread has a linked
 * stack of pushed contexts. A lookup applies the global values, then the pushed contexts from
 * the outermost to the innermost.
 */
#include "dspy/settings.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/history.h"
#include "program/settings_priv.h"

enum {
    F_LM = 1 << 0,
    F_ADAPTER = 1 << 1,
    F_PROFILE = 1 << 2,
    F_TRACE = 1 << 3,
    F_MAX_TRACE = 1 << 4,
    F_CALLBACKS = 1 << 5,
    F_THREADS = 1 << 6,
    F_ERRORS = 1 << 7,
    F_ALL = (1 << 8) - 1
};

struct dspy_context {
    atomic_int refs;
    pthread_mutex_t lock;
    unsigned set; /* F_* bits of the values this context overrides */
    dspy_lm *lm;
    dspy_adapter_kind adapter;
    bool use_json_fallback;
    dspy_profile profile;
    dspy_trace *trace;
    int64_t max_trace_size;
    cb_list *callbacks;
    int32_t num_threads, max_errors;
};

typedef struct ctx_node {
    dspy_context *ctx;
    struct ctx_node *below;
} ctx_node;

static _Thread_local ctx_node *tl_top;

static dspy_context g_settings = {.lock = PTHREAD_MUTEX_INITIALIZER};
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static bool g_disable_history;

/* DEFAULT_CONFIG on `c` (whose previous references the caller has released). */
static void set_defaults(dspy_context *c) {
    c->set = F_ALL;
    c->lm = NULL;
    c->adapter = DSPY_ADAPTER_CHAT;
    c->use_json_fallback = true;
    c->profile = DSPY_PROFILE_V33;
    c->trace = NULL;
    dspy_trace_new(&c->trace); /* on OOM the trace is None until reset */
    c->max_trace_size = 10000;
    c->callbacks = NULL;
    c->num_threads = 8;
    c->max_errors = 10;
}

static void global_init(void) { set_defaults(&g_settings); }

static dspy_context *global(void) {
    pthread_once(&g_once, global_init);
    return &g_settings;
}

/* ---- setters shared by contexts and the globals -------------------------------------------- */

static void ctx_set_lm(dspy_context *c, dspy_lm *lm) {
    dspy_lm_retain(lm);
    pthread_mutex_lock(&c->lock);
    dspy_lm *old = c->lm;
    c->lm = lm;
    c->set |= F_LM;
    pthread_mutex_unlock(&c->lock);
    dspy_lm_free(old);
}

static void ctx_set_adapter(dspy_context *c, dspy_adapter_kind kind, bool fallback) {
    pthread_mutex_lock(&c->lock);
    c->adapter = kind;
    c->use_json_fallback = fallback;
    c->set |= F_ADAPTER;
    pthread_mutex_unlock(&c->lock);
}

static void ctx_set_profile(dspy_context *c, dspy_profile p) {
    pthread_mutex_lock(&c->lock);
    c->profile = p;
    c->set |= F_PROFILE;
    pthread_mutex_unlock(&c->lock);
}

static void ctx_set_trace(dspy_context *c, dspy_trace *t) {
    dspy_trace_retain(t);
    pthread_mutex_lock(&c->lock);
    dspy_trace *old = c->trace;
    c->trace = t;
    c->set |= F_TRACE;
    pthread_mutex_unlock(&c->lock);
    dspy_trace_free(old);
}

static void ctx_set_max_trace(dspy_context *c, int64_t n) {
    pthread_mutex_lock(&c->lock);
    c->max_trace_size = n;
    c->set |= F_MAX_TRACE;
    pthread_mutex_unlock(&c->lock);
}

static dspy_status ctx_set_callbacks(dspy_context *c, const dspy_callbacks *cbs, size_t n) {
    if (n && !cbs) return dspy_fail(DSPY_ERR_ARG, "settings: callbacks is NULL but n = %zu", n);
    cb_list *l;
    dspy_status st = dspy_cb_list_make(cbs, n, NULL, 0, &l);
    if (st) return st;
    pthread_mutex_lock(&c->lock);
    cb_list *old = c->callbacks;
    c->callbacks = l;
    c->set |= F_CALLBACKS;
    pthread_mutex_unlock(&c->lock);
    dspy_cb_list_free(old);
    return DSPY_OK;
}

static dspy_status ctx_set_threads(dspy_context *c, int32_t n) {
    if (n < 1) return dspy_fail(DSPY_ERR_ARG, "settings: num_threads must be at least 1 (got %d)", (int)n);
    pthread_mutex_lock(&c->lock);
    c->num_threads = n;
    c->set |= F_THREADS;
    pthread_mutex_unlock(&c->lock);
    return DSPY_OK;
}

static dspy_status ctx_set_errors(dspy_context *c, int32_t n) {
    if (n < 0) return dspy_fail(DSPY_ERR_ARG, "settings: max_errors must be 0 or more (got %d)", (int)n);
    pthread_mutex_lock(&c->lock);
    c->max_errors = n;
    c->set |= F_ERRORS;
    pthread_mutex_unlock(&c->lock);
    return DSPY_OK;
}

/* ---- process-wide ------------------------------------------------------------------------- */

void dspy_settings_set_lm(dspy_lm *lm) { ctx_set_lm(global(), lm); }
void dspy_settings_set_adapter(dspy_adapter_kind kind, bool fallback) { ctx_set_adapter(global(), kind, fallback); }
void dspy_settings_set_profile(dspy_profile profile) { ctx_set_profile(global(), profile); }
void dspy_settings_set_trace(dspy_trace *trace) { ctx_set_trace(global(), trace); }
void dspy_settings_set_max_trace_size(int64_t n) { ctx_set_max_trace(global(), n); }
dspy_status dspy_settings_set_callbacks(const dspy_callbacks *cbs, size_t n) { return ctx_set_callbacks(global(), cbs, n); }
dspy_status dspy_settings_set_num_threads(int32_t n) { return ctx_set_threads(global(), n); }
dspy_status dspy_settings_set_max_errors(int32_t n) { return ctx_set_errors(global(), n); }

void dspy_settings_set_disable_history(bool disable) {
    dspy_context *g = global();
    pthread_mutex_lock(&g->lock);
    g_disable_history = disable;
    dspy_history_set_enabled(!disable);
    pthread_mutex_unlock(&g->lock);
}

void dspy_settings_reset(void) {
    dspy_context *g = global();
    pthread_mutex_lock(&g->lock);
    dspy_lm *lm = g->lm;
    dspy_trace *trace = g->trace;
    cb_list *cbs = g->callbacks;
    set_defaults(g);
    g_disable_history = false;
    dspy_history_set_enabled(true);
    pthread_mutex_unlock(&g->lock);
    dspy_lm_free(lm);
    dspy_trace_free(trace);
    dspy_cb_list_free(cbs);
}

/* ---- lookups ------------------------------------------------------------------------------ */

/* Copies the values `c` sets into v (v holds references; replaced ones are released). */
static void apply(settings_view *v, dspy_context *c) {
    pthread_mutex_lock(&c->lock);
    unsigned s = c->set;
    dspy_lm *lm = NULL;
    dspy_trace *trace = NULL;
    cb_list *cbs = NULL;
    bool new_lm = s & F_LM, new_trace = s & F_TRACE, new_cbs = s & F_CALLBACKS;
    if (new_lm) lm = dspy_lm_retain(c->lm);
    if (new_trace) trace = dspy_trace_retain(c->trace);
    if (new_cbs) cbs = dspy_cb_list_retain(c->callbacks);
    if (s & F_ADAPTER) {
        v->adapter = c->adapter;
        v->use_json_fallback = c->use_json_fallback;
    }
    if (s & F_PROFILE) v->profile = c->profile;
    if (s & F_MAX_TRACE) v->max_trace_size = c->max_trace_size;
    if (s & F_THREADS) v->num_threads = c->num_threads;
    if (s & F_ERRORS) v->max_errors = c->max_errors;
    pthread_mutex_unlock(&c->lock);
    if (new_lm) {
        dspy_lm_free(v->lm);
        v->lm = lm;
    }
    if (new_trace) {
        dspy_trace_free(v->trace);
        v->trace = trace;
    }
    if (new_cbs) {
        dspy_cb_list_free(v->callbacks);
        v->callbacks = cbs;
    }
}

static void apply_stack(settings_view *v, ctx_node *n) {
    if (!n) return;
    apply_stack(v, n->below); /* outermost first, so inner contexts win */
    apply(v, n->ctx);
}

void dspy_settings_view_get(settings_view *v) {
    memset(v, 0, sizeof *v);
    apply(v, global());
    apply_stack(v, tl_top);
}

void dspy_settings_view_clear(settings_view *v) {
    dspy_lm_free(v->lm);
    dspy_trace_free(v->trace);
    dspy_cb_list_free(v->callbacks);
    memset(v, 0, sizeof *v);
}

dspy_lm *dspy_settings_lm(void) {
    settings_view v;
    dspy_settings_view_get(&v);
    dspy_lm *lm = dspy_lm_retain(v.lm);
    dspy_settings_view_clear(&v);
    return lm;
}

dspy_adapter_kind dspy_settings_adapter(bool *fallback) {
    settings_view v;
    dspy_settings_view_get(&v);
    if (fallback) *fallback = v.use_json_fallback;
    dspy_adapter_kind k = v.adapter;
    dspy_settings_view_clear(&v);
    return k;
}

#define SIMPLE_GETTER(type, name, field) \
    type name(void) {                    \
        settings_view v;                 \
        dspy_settings_view_get(&v);           \
        type r = v.field;                \
        dspy_settings_view_clear(&v);         \
        return r;                        \
    }

SIMPLE_GETTER(dspy_profile, dspy_settings_profile, profile)
SIMPLE_GETTER(int64_t, dspy_settings_max_trace_size, max_trace_size)
SIMPLE_GETTER(int32_t, dspy_settings_num_threads, num_threads)
SIMPLE_GETTER(int32_t, dspy_settings_max_errors, max_errors)

dspy_trace *dspy_settings_trace(void) {
    settings_view v;
    dspy_settings_view_get(&v);
    dspy_trace *t = dspy_trace_retain(v.trace);
    dspy_settings_view_clear(&v);
    return t;
}

bool dspy_settings_disable_history(void) {
    dspy_context *g = global();
    pthread_mutex_lock(&g->lock);
    bool d = g_disable_history;
    pthread_mutex_unlock(&g->lock);
    return d;
}

dspy_status dspy_settings_callbacks(dspy_callbacks **out, size_t *n) {
    *out = NULL;
    *n = 0;
    settings_view v;
    dspy_settings_view_get(&v);
    dspy_status st = DSPY_OK;
    if (v.callbacks) {
        if (!(*out = malloc(v.callbacks->n * sizeof **out))) {
            st = dspy_fail(DSPY_ERR_NOMEM, "settings: out of memory");
        } else {
            memcpy(*out, v.callbacks->items, v.callbacks->n * sizeof **out);
            *n = v.callbacks->n;
        }
    }
    dspy_settings_view_clear(&v);
    return st;
}

/* ---- contexts ----------------------------------------------------------------------------- */

dspy_status dspy_context_new(dspy_context **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) return dspy_fail(DSPY_ERR_NOMEM, "context: out of memory");
    atomic_init(&(*out)->refs, 1);
    pthread_mutex_init(&(*out)->lock, NULL);
    return DSPY_OK;
}

dspy_context *dspy_context_retain(dspy_context *c) {
    if (c) atomic_fetch_add(&c->refs, 1);
    return c;
}

void dspy_context_free(dspy_context *c) {
    if (!c || c == &g_settings || atomic_fetch_sub(&c->refs, 1) != 1) return;
    dspy_lm_free(c->lm);
    dspy_trace_free(c->trace);
    dspy_cb_list_free(c->callbacks);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

void dspy_context_set_lm(dspy_context *c, dspy_lm *lm) { ctx_set_lm(c, lm); }
void dspy_context_set_adapter(dspy_context *c, dspy_adapter_kind kind, bool fallback) { ctx_set_adapter(c, kind, fallback); }
void dspy_context_set_profile(dspy_context *c, dspy_profile profile) { ctx_set_profile(c, profile); }
void dspy_context_set_trace(dspy_context *c, dspy_trace *trace) { ctx_set_trace(c, trace); }
void dspy_context_set_max_trace_size(dspy_context *c, int64_t n) { ctx_set_max_trace(c, n); }
dspy_status dspy_context_set_callbacks(dspy_context *c, const dspy_callbacks *cbs, size_t n) {
    return ctx_set_callbacks(c, cbs, n);
}
dspy_status dspy_context_set_num_threads(dspy_context *c, int32_t n) { return ctx_set_threads(c, n); }
dspy_status dspy_context_set_max_errors(dspy_context *c, int32_t n) { return ctx_set_errors(c, n); }

dspy_status dspy_context_push(dspy_context *c) {
    if (!c) return dspy_fail(DSPY_ERR_ARG, "context_push: no context given");
    ctx_node *n = malloc(sizeof *n);
    if (!n) return dspy_fail(DSPY_ERR_NOMEM, "context: out of memory");
    n->ctx = dspy_context_retain(c);
    n->below = tl_top;
    tl_top = n;
    return DSPY_OK;
}

dspy_status dspy_context_pop(dspy_context *c) {
    if (!tl_top || tl_top->ctx != c)
        return dspy_fail(DSPY_ERR_STATE, "context_pop: %s", tl_top ? "this context is not the innermost one on "
                         "this thread (pop contexts in the reverse order of push)" : "no context is pushed on this thread");
    ctx_node *n = tl_top;
    tl_top = n->below;
    dspy_context_free(n->ctx);
    free(n);
    return DSPY_OK;
}

static void merge_into(dspy_context *dst, ctx_node *n) {
    if (!n) return;
    merge_into(dst, n->below);
    dspy_context *c = n->ctx;
    pthread_mutex_lock(&c->lock);
    unsigned s = c->set;
    if (s & F_LM) {
        dspy_lm_free(dst->lm);
        dst->lm = dspy_lm_retain(c->lm);
    }
    if (s & F_TRACE) {
        dspy_trace_free(dst->trace);
        dst->trace = dspy_trace_retain(c->trace);
    }
    if (s & F_CALLBACKS) {
        dspy_cb_list_free(dst->callbacks);
        dst->callbacks = dspy_cb_list_retain(c->callbacks);
    }
    if (s & F_ADAPTER) {
        dst->adapter = c->adapter;
        dst->use_json_fallback = c->use_json_fallback;
    }
    if (s & F_PROFILE) dst->profile = c->profile;
    if (s & F_MAX_TRACE) dst->max_trace_size = c->max_trace_size;
    if (s & F_THREADS) dst->num_threads = c->num_threads;
    if (s & F_ERRORS) dst->max_errors = c->max_errors;
    dst->set |= s;
    pthread_mutex_unlock(&c->lock);
}

dspy_status dspy_context_capture(dspy_context **out) {
    dspy_status st = dspy_context_new(out);
    if (st) return st;
    merge_into(*out, tl_top);
    return DSPY_OK;
}
