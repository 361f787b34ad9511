/* sx_cache.c — compiled output constraints keyed by their specification (see sx_cache.h). */
#include "server/sx_cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dspy/clock.h"
#include "dspy/json.h"
#include "dspy/str.h"
#include "dspy/structured.h"

struct sx_entry {
    atomic_int refs;
    char *key;
    dspy_constraint *c;
    uint64_t last_use;
    sx_entry *next;
};

struct sx_cache {
    pthread_mutex_t mu;
    const dspy_tokenizer *tok;
    int32_t model_vocab;
    sx_defaults d;
    dspy_structured_vocab *voc; /* built on first use */
    sx_entry *entries;
    int32_t n_entries;
    uint64_t clock;
    int64_t compiles, hits;
};

static void entry_free(sx_entry *e) {
    dspy_constraint_free(e->c);
    free(e->key);
    free(e);
}

void dspy_sx_entry_release(void *p) {
    sx_entry *e = p;
    if (e && atomic_fetch_sub(&e->refs, 1) == 1) entry_free(e);
}

const dspy_constraint *dspy_sx_entry_constraint(const sx_entry *e) { return e->c; }

dspy_status dspy_sx_cache_new(const dspy_tokenizer *tok, int32_t model_vocab, const sx_defaults *d, sx_cache **out) {
    *out = NULL;
    if (d->max_free_tokens < 0 || d->max_string_tokens < 0 || d->max_entries < 1)
        return dspy_fail(DSPY_ERR_ARG, "serve: structured-output bounds must be >= 0 and the cache >= 1 entry");
    sx_cache *c = calloc(1, sizeof *c);
    if (!c) return dspy_fail(DSPY_ERR_NOMEM, "serve: out of memory");
    pthread_mutex_init(&c->mu, NULL);
    c->tok = tok;
    c->model_vocab = model_vocab;
    c->d = *d;
    *out = c;
    return DSPY_OK;
}

void dspy_sx_cache_free(sx_cache *c) {
    if (!c) return;
    for (sx_entry *e = c->entries, *n; e; e = n) {
        n = e->next;
        dspy_sx_entry_release(e);
    }
    dspy_structured_vocab_free(c->voc);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void dspy_sx_cache_counts(sx_cache *c, int32_t *entries, int64_t *compiles, int64_t *hits) {
    pthread_mutex_lock(&c->mu);
    if (entries) *entries = c->n_entries;
    if (compiles) *compiles = c->compiles;
    if (hits) *hits = c->hits;
    pthread_mutex_unlock(&c->mu);
}

/* The key: the kind, the bounds in force and the specification's text, length-prefixed. */
static char *make_key(const sx_cache *c, const oai_request *r) {
    dspy_str k = DSPY_STR_INIT;
    if (r->format == OAI_FORMAT_JSON_OBJECT) {
        dspy_str_append(&k, "json_object");
    } else if (r->format == OAI_FORMAT_JSON_SCHEMA) {
        int32_t ms = r->max_string_tokens >= 0 ? r->max_string_tokens : c->d.max_string_tokens;
        dspy_str_appendf(&k, "json_schema %d %s", ms, r->schema_text);
    } else {
        dspy_str_append(&k, "layout");
        for (size_t i = 0; i < r->n_layout; i++) {
            const oai_layout_field *f = &r->layout[i];
            int32_t mt = f->max_tokens >= 0 ? f->max_tokens : c->d.max_free_tokens;
            dspy_str_appendf(&k, " %zu:%s %d %zu", strlen(f->name), f->name, f->n_values ? 0 : mt, f->n_values);
            for (size_t v = 0; v < f->n_values; v++)
                dspy_str_appendf(&k, " %zu:%s", strlen(f->values[v]), f->values[v]);
        }
    }
    if (!dspy_str_ok(&k)) {
        dspy_str_free(&k);
        return NULL;
    }
    return dspy_str_take(&k);
}

static dspy_status compile(sx_cache *c, const oai_request *r, dspy_constraint **out) {
    if (r->format == OAI_FORMAT_JSON_OBJECT) return dspy_structured_json_object(c->voc, NULL, out);
    if (r->format == OAI_FORMAT_JSON_SCHEMA) {
        dspy_json *schema = NULL;
        dspy_status st = dspy_json_parse(r->schema_text, strlen(r->schema_text), "response_format.json_schema.schema",
                                         &schema);
        if (st) return st;
        dspy_structured_params p = dspy_structured_params_default();
        p.max_string_tokens = r->max_string_tokens >= 0 ? r->max_string_tokens : c->d.max_string_tokens;
        st = dspy_structured_json_schema(c->voc, schema, &p, out);
        dspy_json_decref(schema);
        return st;
    }
    dspy_layout_field *f = calloc(r->n_layout, sizeof *f);
    if (!f) return dspy_fail(DSPY_ERR_NOMEM, "serve: out of memory");
    for (size_t i = 0; i < r->n_layout; i++) {
        f[i].name = r->layout[i].name;
        f[i].values = (const char *const *)r->layout[i].values;
        f[i].n_values = r->layout[i].n_values;
        f[i].max_tokens = r->layout[i].max_tokens >= 0 ? r->layout[i].max_tokens : c->d.max_free_tokens;
    }
    dspy_status st = dspy_structured_layout(c->voc, f, r->n_layout, out);
    free(f);
    return st;
}

dspy_status dspy_sx_cache_get(sx_cache *c, const oai_request *r, sx_entry **out, bool *hit, double *compile_s) {
    *out = NULL;
    *hit = false;
    *compile_s = 0;
    char *key = make_key(c, r);
    if (!key) return dspy_fail(DSPY_ERR_NOMEM, "serve: out of memory");
    dspy_status st = DSPY_OK;
    pthread_mutex_lock(&c->mu);
    for (sx_entry *e = c->entries; e; e = e->next)
        if (strcmp(e->key, key) == 0) {
            e->last_use = ++c->clock;
            atomic_fetch_add(&e->refs, 1);
            c->hits++;
            *hit = true;
            *out = e;
            goto done;
        }
    double t0 = dspy_now_s();
    if (!c->voc && (st = dspy_structured_vocab_new(c->tok, c->model_vocab, &c->voc))) goto done;
    sx_entry *e = calloc(1, sizeof *e);
    if (!e) {
        st = dspy_fail(DSPY_ERR_NOMEM, "serve: out of memory");
        goto done;
    }
    if ((st = compile(c, r, &e->c))) {
        free(e);
        goto done;
    }
    /* a state where the sequence would be stuck is a specification error, found before any
     * request runs it */
    if ((st = dspy_constraint_check(e->c, true))) {
        entry_free(e);
        goto done;
    }
    c->compiles++;
    *compile_s = dspy_now_s() - t0;
    e->key = key;
    key = NULL;
    atomic_init(&e->refs, 2); /* the cache's and the caller's */
    e->last_use = ++c->clock;
    e->next = c->entries;
    c->entries = e;
    c->n_entries++;
    *out = e;
    if (c->n_entries > c->d.max_entries) { /* the least recently used goes */
        sx_entry **victim = NULL;
        for (sx_entry **pp = &c->entries; *pp; pp = &(*pp)->next)
            if (!victim || (*pp)->last_use < (*victim)->last_use) victim = pp;
        sx_entry *v = *victim;
        *victim = v->next;
        c->n_entries--;
        dspy_sx_entry_release(v);
    }
done:
    pthread_mutex_unlock(&c->mu);
    free(key);
    return st;
}
