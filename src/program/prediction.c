/* prediction.c — dspy.Prediction and its Completions (see include/dspy/prediction.h).
 *
 * Fields live in one insertion-ordered JSON object; completions in another that maps each
 * field to the list of its values over the choices (DSPy's Completions._completions).
 * Follows DSPy 3.3.1 dspy/primitives/prediction.py: from_completions, __repr__, __float__,
 * Completions.__getitem__/__repr__. Not here: get_lm_usage, async, majority voting.
 */
#include "dspy/prediction.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct dspy_prediction {
    atomic_int refs;
    dspy_json *fields;      /* object */
    dspy_json *completions; /* object of arrays, or NULL (Python None) */
};

static dspy_status nomem(void) { return dspy_fail(DSPY_ERR_NOMEM, "Prediction: out of memory"); }

static dspy_status alloc(dspy_prediction **out) {
    *out = calloc(1, sizeof **out);
    if (!*out || !((*out)->fields = dspy_json_object())) {
        free(*out);
        *out = NULL;
        return nomem();
    }
    atomic_init(&(*out)->refs, 1);
    return DSPY_OK;
}

dspy_status dspy_prediction_new(dspy_prediction **out) { return alloc(out); }

dspy_prediction *dspy_prediction_retain(dspy_prediction *p) {
    if (p) atomic_fetch_add(&p->refs, 1);
    return p;
}

void dspy_prediction_free(dspy_prediction *p) {
    if (!p || atomic_fetch_sub(&p->refs, 1) != 1) return;
    dspy_json_decref(p->fields);
    dspy_json_decref(p->completions);
    free(p);
}

/* Copies the members of `src` into the object `dst` (values shared). */
static dspy_status copy_members(dspy_json *dst, const dspy_json *src) {
    for (void *it = dspy_json_iter(src); it; it = dspy_json_next(src, it))
        if (dspy_json_set(dst, dspy_json_iter_key(it), dspy_json_incref(dspy_json_iter_value(it))))
            return nomem();
    return DSPY_OK;
}

dspy_status dspy_prediction_from_fields(const dspy_json *fields, dspy_prediction **out) {
    *out = NULL;
    if (fields && dspy_json_typeof(fields) != DSPY_JSON_OBJECT)
        return dspy_fail(DSPY_ERR_ARG, "Prediction: fields must be a JSON object");
    dspy_prediction *p;
    dspy_status st = alloc(&p);
    if (st) return st;
    if (fields && (st = copy_members(p->fields, fields))) {
        dspy_prediction_free(p);
        return st;
    }
    *out = p;
    return DSPY_OK;
}

/* Completions.__init__: a list of dicts becomes {k: [v, ...]} (setdefault order); a dict of
 * lists is checked and copied. */
static dspy_status build_completions(const dspy_json *c, dspy_json **out) {
    *out = NULL;
    dspy_json *m = dspy_json_object();
    if (!m) return nomem();
    dspy_status st = DSPY_OK;
    if (dspy_json_typeof(c) == DSPY_JSON_ARRAY) {
        for (size_t i = 0; i < dspy_json_size(c) && !st; i++) {
            const dspy_json *choice = dspy_json_at(c, i);
            if (dspy_json_typeof(choice) != DSPY_JSON_OBJECT) {
                st = dspy_fail(DSPY_ERR_ARG, "Prediction.from_completions: completion %zu is not an object "
                               "of output fields", i);
                break;
            }
            for (void *it = dspy_json_iter(choice); it && !st; it = dspy_json_next(choice, it)) {
                const char *k = dspy_json_iter_key(it);
                dspy_json *list = dspy_json_get(m, k);
                if (!list) {
                    if (!(list = dspy_json_array()) || dspy_json_set(m, k, list)) st = nomem();
                }
                if (!st && dspy_json_append(list, dspy_json_incref(dspy_json_iter_value(it)))) st = nomem();
            }
        }
    } else if (dspy_json_typeof(c) == DSPY_JSON_OBJECT) {
        size_t len = 0;
        bool first = true;
        for (void *it = dspy_json_iter(c); it && !st; it = dspy_json_next(c, it)) {
            const dspy_json *v = dspy_json_iter_value(it);
            if (dspy_json_typeof(v) != DSPY_JSON_ARRAY) {
                st = dspy_fail(DSPY_ERR_ARG, "Prediction.from_completions: All values must be lists "
                               "('%s' is not)", dspy_json_iter_key(it));
            } else if (!first && dspy_json_size(v) != len) {
                st = dspy_fail(DSPY_ERR_ARG, "Prediction.from_completions: All lists must have the same "
                               "length ('%s' has %zu values, expected %zu)", dspy_json_iter_key(it),
                               dspy_json_size(v), len);
            } else {
                len = dspy_json_size(v);
                first = false;
                dspy_json *copy = dspy_json_array();
                for (size_t i = 0; copy && i < len && !st; i++)
                    if (dspy_json_append(copy, dspy_json_incref(dspy_json_at(v, i)))) st = nomem();
                if (!copy) st = nomem();
                else if (st) dspy_json_decref(copy);
                else if (dspy_json_set(m, dspy_json_iter_key(it), copy)) st = nomem();
            }
        }
    } else {
        st = dspy_fail(DSPY_ERR_ARG, "Prediction.from_completions: expected a list of completions or an "
                       "object of lists");
    }
    if (st) {
        dspy_json_decref(m);
        return st;
    }
    *out = m;
    return DSPY_OK;
}

dspy_status dspy_prediction_from_completions(const dspy_json *completions, dspy_prediction **out) {
    *out = NULL;
    if (!completions) return dspy_fail(DSPY_ERR_ARG, "Prediction.from_completions: no completions given");
    dspy_prediction *p;
    dspy_status st = alloc(&p);
    if (st) return st;
    if ((st = build_completions(completions, &p->completions))) goto fail;
    for (void *it = dspy_json_iter(p->completions); it; it = dspy_json_next(p->completions, it)) {
        const dspy_json *list = dspy_json_iter_value(it);
        if (dspy_json_size(list) == 0) continue; /* Python would raise IndexError on v[0] */
        if (dspy_json_set(p->fields, dspy_json_iter_key(it), dspy_json_incref(dspy_json_at(list, 0)))) {
            st = nomem();
            goto fail;
        }
    }
    *out = p;
    return DSPY_OK;
fail:
    dspy_prediction_free(p);
    return st;
}

dspy_status dspy_prediction_set(dspy_prediction *p, const char *key, dspy_json *value) {
    if (!key || !value) {
        dspy_json_decref(value);
        return dspy_fail(DSPY_ERR_ARG, "Prediction: set needs a key and a value");
    }
    return dspy_json_set(p->fields, key, value) ? nomem() : DSPY_OK;
}

const dspy_json *dspy_prediction_get(const dspy_prediction *p, const char *key) {
    return p && key ? dspy_json_get(p->fields, key) : NULL;
}

const char *dspy_prediction_get_str(const dspy_prediction *p, const char *key) {
    return dspy_json_str(dspy_prediction_get(p, key));
}

const dspy_json *dspy_prediction_fields(const dspy_prediction *p) { return p ? p->fields : NULL; }

size_t dspy_prediction_len(const dspy_prediction *p) { return p ? dspy_json_size(p->fields) : 0; }

const char *dspy_prediction_key(const dspy_prediction *p, size_t i) {
    if (!p) return NULL;
    for (void *it = dspy_json_iter(p->fields); it; it = dspy_json_next(p->fields, it), i--)
        if (i == 0) return dspy_json_iter_key(it);
    return NULL;
}

/* Completions.__len__: the length of the first list. */
size_t dspy_prediction_n_completions(const dspy_prediction *p) {
    if (!p || !p->completions) return 0;
    void *it = dspy_json_iter(p->completions);
    return it ? dspy_json_size(dspy_json_iter_value(it)) : 0;
}

const dspy_json *dspy_prediction_completions(const dspy_prediction *p) { return p ? p->completions : NULL; }

dspy_status dspy_prediction_completion(const dspy_prediction *p, size_t i, dspy_prediction **out) {
    *out = NULL;
    if (i >= dspy_prediction_n_completions(p)) return dspy_fail(DSPY_ERR_ARG, "Index out of range");
    dspy_prediction *c;
    dspy_status st = alloc(&c);
    if (st) return st;
    for (void *it = dspy_json_iter(p->completions); it; it = dspy_json_next(p->completions, it)) {
        if (dspy_json_set(c->fields, dspy_json_iter_key(it), dspy_json_incref(dspy_json_at(dspy_json_iter_value(it), i)))) {
            dspy_prediction_free(c);
            return nomem();
        }
    }
    *out = c;
    return DSPY_OK;
}

/* "k1=repr(v1),\n    k2=repr(v2)" over an object. */
static void append_items(dspy_str *out, const dspy_json *obj) {
    bool first = true;
    for (void *it = dspy_json_iter(obj); it; it = dspy_json_next(obj, it)) {
        if (!first) dspy_str_append(out, ",\n    ");
        first = false;
        dspy_str_append(out, dspy_json_iter_key(it));
        dspy_str_appendc(out, '=');
        dspy_json_repr(dspy_json_iter_value(it), out);
    }
}

void dspy_prediction_append_repr(dspy_str *out, const dspy_prediction *p) {
    dspy_str_append(out, "Prediction(\n    ");
    append_items(out, p->fields);
    size_t n = dspy_prediction_n_completions(p);
    if (!p->completions || n == 1) {
        dspy_str_append(out, "\n)");
        return;
    }
    dspy_str_appendf(out, ",\n    completions=Completions(...)\n) (%zu completions omitted)", n - 1);
}

dspy_status dspy_prediction_repr(const dspy_prediction *p, char **out) {
    dspy_str s = DSPY_STR_INIT;
    dspy_prediction_append_repr(&s, p);
    *out = dspy_str_ok(&s) ? dspy_str_take(&s) : NULL;
    dspy_str_free(&s);
    return *out ? DSPY_OK : nomem();
}

dspy_status dspy_prediction_completions_repr(const dspy_prediction *p, char **out) {
    *out = NULL;
    if (!p->completions) return dspy_fail(DSPY_ERR_STATE, "Prediction has no completions (completions is None)");
    dspy_str s = DSPY_STR_INIT;
    dspy_str_append(&s, "Completions(\n    ");
    append_items(&s, p->completions);
    dspy_str_append(&s, "\n)");
    *out = dspy_str_ok(&s) ? dspy_str_take(&s) : NULL;
    dspy_str_free(&s);
    return *out ? DSPY_OK : nomem();
}

dspy_status dspy_prediction_score(const dspy_prediction *p, double *out) {
    *out = 0;
    const dspy_json *s = dspy_prediction_get(p, "score");
    if (!s) return dspy_fail(DSPY_ERR_NOTFOUND, "Prediction object does not have a 'score' field to convert to float.");
    switch (dspy_json_typeof(s)) {
    case DSPY_JSON_INT:
    case DSPY_JSON_REAL: *out = dspy_json_number(s); return DSPY_OK;
    case DSPY_JSON_BOOL: *out = dspy_json_truthy(s) ? 1.0 : 0.0; return DSPY_OK;
    case DSPY_JSON_STRING: {
        /* float("0.5") works in Python; accept a string holding a number */
        const char *txt = dspy_json_str(s);
        char *end;
        double v = strtod(txt, &end);
        dspy_strv rest = dspy_strv_strip(dspy_strv_of(end));
        if (end != txt && rest.len == 0) {
            *out = v;
            return DSPY_OK;
        }
        break;
    }
    default: break;
    }
    dspy_str r = DSPY_STR_INIT;
    dspy_json_repr(s, &r);
    dspy_status st = dspy_fail(DSPY_ERR_ARG, "Prediction: the 'score' field %s is not a number", dspy_str_cstr(&r));
    dspy_str_free(&r);
    return st;
}

dspy_status dspy_prediction_to_example(const dspy_prediction *p, dspy_example **out) {
    *out = NULL;
    char *js = dspy_json_dumps(p->fields, DSPY_JSON_UTF8 | DSPY_JSON_COMPACT);
    if (!js) return nomem();
    dspy_status st = dspy_example_from_json(js, strlen(js), "Prediction", out);
    free(js);
    return st;
}

bool dspy_prediction_equal(const dspy_prediction *a, const dspy_prediction *b) {
    if (!a || !b) return a == b;
    return dspy_json_equal(a->fields, b->fields);
}
