/* module.c — dspy/module.h: the module object every program is made of, Module.__call__ with
 * its callbacks, named_predictors, set_lm/get_lm, deepcopy and reset_copy.
 *
 * Follows DSPy 3.3.1 dspy/primitives/{module,base_module}.py (spec §3.2, §3.4): a module is a
 * type (vtable), its own state (impl) and named children kept in insertion order, the C form of
 * the attributes named_parameters() walks. Not here: Predict's forward (predict.c), state and
 * files (module_state.c), caller_modules and usage tracking.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/hash.h"
#include "dspy/settings.h"
#include "program/module_priv.h"
#include "program/settings_priv.h"

struct dspy_module {
    atomic_int refs;
    const dspy_module_vtable *vt;
    void *impl;
    char **names;
    dspy_module **children;
    size_t n, cap;
    dspy_callbacks *cbs; /* instance callbacks */
    size_t ncbs;
    bool compiled;
};

static dspy_status nomem(void) { return dspy_fail(DSPY_ERR_NOMEM, "module: out of memory"); }

dspy_call_options dspy_call_options_default(void) {
    dspy_call_options o = {0};
    return o;
}

dspy_status dspy_module_new(const dspy_module_vtable *vt, void *impl, dspy_module **out) {
    *out = NULL;
    if (!vt || !vt->forward) {
        if (vt && vt->free_impl && impl) vt->free_impl(impl);
        return dspy_fail(DSPY_ERR_ARG, "module_new: the vtable needs a forward function");
    }
    dspy_module *m = calloc(1, sizeof *m);
    if (!m) {
        if (vt->free_impl && impl) vt->free_impl(impl);
        return nomem();
    }
    atomic_init(&m->refs, 1);
    m->vt = vt;
    m->impl = impl;
    *out = m;
    return DSPY_OK;
}

void *dspy_module_impl(const dspy_module *m) { return m ? m->impl : NULL; }

dspy_module *dspy_module_retain(dspy_module *m) {
    if (m) atomic_fetch_add(&m->refs, 1);
    return m;
}

void dspy_module_free(dspy_module *m) {
    if (!m || atomic_fetch_sub(&m->refs, 1) != 1) return;
    for (size_t i = 0; i < m->n; i++) {
        free(m->names[i]);
        dspy_module_free(m->children[i]);
    }
    free(m->names);
    free(m->children);
    free(m->cbs);
    if (m->vt->free_impl && m->impl) m->vt->free_impl(m->impl);
    free(m);
}

const char *dspy_module_type_name(const dspy_module *m) {
    return m && m->vt->type_name ? m->vt->type_name : "Module";
}

bool dspy_module_is_predict(const dspy_module *m) { return m && m->vt == &dspy_predict_vtable; }

predict_state *dspy_predict_state_of(const dspy_module *m) { return dspy_module_is_predict(m) ? m->impl : NULL; }

/* ---- children ----------------------------------------------------------------------------- */

static bool contains(const dspy_module *tree, const dspy_module *m) {
    if (tree == m) return true;
    for (size_t i = 0; i < tree->n; i++)
        if (contains(tree->children[i], m)) return true;
    return false;
}

dspy_status dspy_module_add_child(dspy_module *m, const char *name, dspy_module *child) {
    if (!m || !child || !name || !*name)
        return dspy_fail(DSPY_ERR_ARG, "module_add_child: a module, a non-empty name and a child are needed");
    if (dspy_module_child(m, name))
        return dspy_fail(DSPY_ERR_ARG, "module_add_child: %s already has a child named '%s'", dspy_module_type_name(m), name);
    if (contains(child, m))
        return dspy_fail(DSPY_ERR_ARG, "module_add_child: '%s' would make the module contain itself", name);
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 4;
        char **names = realloc(m->names, cap * sizeof *names);
        if (!names) return nomem();
        m->names = names;
        dspy_module **ch = realloc(m->children, cap * sizeof *ch);
        if (!ch) return nomem();
        m->children = ch;
        m->cap = cap;
    }
    char *nm = strdup(name);
    if (!nm) return nomem();
    m->names[m->n] = nm;
    m->children[m->n++] = dspy_module_retain(child);
    return DSPY_OK;
}

dspy_module *dspy_module_child(const dspy_module *m, const char *name) {
    for (size_t i = 0; m && name && i < m->n; i++)
        if (strcmp(m->names[i], name) == 0) return m->children[i];
    return NULL;
}

size_t dspy_module_n_children(const dspy_module *m) { return m ? m->n : 0; }

dspy_module *dspy_module_child_at(const dspy_module *m, size_t i, const char **name) {
    if (!m || i >= m->n) {
        if (name) *name = NULL;
        return NULL;
    }
    if (name) *name = m->names[i];
    return m->children[i];
}

void dspy_module_set_compiled(dspy_module *m, bool compiled) {
    if (m) m->compiled = compiled;
}

bool dspy_module_compiled(const dspy_module *m) { return m && m->compiled; }

dspy_status dspy_module_add_callbacks(dspy_module *m, const dspy_callbacks *cb) {
    if (!m || !cb) return dspy_fail(DSPY_ERR_ARG, "module_add_callbacks: a module and callbacks are needed");
    dspy_callbacks *n = realloc(m->cbs, (m->ncbs + 1) * sizeof *n);
    if (!n) return nomem();
    n[m->ncbs++] = *cb;
    m->cbs = n;
    return DSPY_OK;
}

/* ---- calling ------------------------------------------------------------------------------ */

dspy_status dspy_module_call(dspy_module *m, const dspy_json *inputs, const dspy_call_options *opt,
                             dspy_prediction **out) {
    *out = NULL;
    if (!m) return dspy_fail(DSPY_ERR_ARG, "module_call: no module given");
    predict_state *ps = dspy_predict_state_of(m);
    /* Predict.__call__ rejects positional arguments before Module.__call__ runs callbacks */
    if (ps && (!inputs || dspy_json_typeof(inputs) != DSPY_JSON_OBJECT)) return dspy_predict_positional_error(ps->sig);
    if (!inputs || dspy_json_typeof(inputs) != DSPY_JSON_OBJECT)
        return dspy_fail(DSPY_ERR_ARG, "%s: inputs must be a JSON object of keyword arguments (field name -> value)",
                         dspy_module_type_name(m));
    dspy_call_options none = dspy_call_options_default();
    if (!opt) opt = &none;

    settings_view v;
    dspy_settings_view_get(&v);
    cb_list *cbs = NULL;
    dspy_status st = dspy_cb_list_make(v.callbacks ? v.callbacks->items : NULL, v.callbacks ? v.callbacks->n : 0,
                                  m->cbs, m->ncbs, &cbs);
    dspy_settings_view_clear(&v);
    if (st) return st;
    char call_id[33] = "";
    if (cbs) {
        dspy_uuid4_hex(call_id);
        for (size_t i = 0; i < cbs->n; i++)
            if (cbs->items[i].on_module_start) cbs->items[i].on_module_start(cbs->items[i].user, call_id, m, inputs);
    }
    st = m->vt->forward(m, inputs, opt, out);
    if (!st && !*out) st = dspy_fail(DSPY_ERR_STATE, "%s.forward returned no prediction", dspy_module_type_name(m));
    if (cbs) {
        char *err = dspy_cb_err_save(st);
        for (size_t i = 0; i < cbs->n; i++)
            if (cbs->items[i].on_module_end)
                cbs->items[i].on_module_end(cbs->items[i].user, call_id, st ? NULL : *out, st, st ? (err ? err : "") : NULL);
        dspy_cb_err_restore(st, err);
        dspy_cb_list_free(cbs);
    }
    if (st) {
        dspy_prediction_free(*out);
        *out = NULL;
    }
    return st;
}

dspy_status dspy_module_call_example(dspy_module *m, const dspy_example *ex, const dspy_call_options *opt,
                                     dspy_prediction **out) {
    *out = NULL;
    if (!ex) return dspy_fail(DSPY_ERR_ARG, "module_call_example: no example given");
    dspy_example *in = NULL;
    dspy_status st = DSPY_OK;
    if (dspy_example_has_inputs(ex) && (st = dspy_example_inputs(ex, &in))) return st;
    dspy_str s = DSPY_STR_INIT;
    dspy_example_append_json(&s, in ? in : ex, false);
    dspy_example_free(in);
    dspy_json *inputs = NULL;
    if (!dspy_str_ok(&s)) st = nomem();
    else st = dspy_json_parse(dspy_str_cstr(&s), s.len, "example", &inputs);
    dspy_str_free(&s);
    if (st) return st;
    st = dspy_module_call(m, inputs, opt, out);
    dspy_json_decref(inputs);
    return st;
}

/* ---- named predictors ----------------------------------------------------------------------- */

typedef struct np_list {
    dspy_named_predictor *items;
    size_t n, cap;
} np_list;

static dspy_status np_add(np_list *l, const char *name, dspy_module *p) {
    for (size_t i = 0; i < l->n; i++)
        if (l->items[i].predictor == p) return DSPY_OK; /* listed once */
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        dspy_named_predictor *it = realloc(l->items, cap * sizeof *it);
        if (!it) return nomem();
        l->items = it;
        l->cap = cap;
    }
    char *nm = strdup(name);
    if (!nm) return nomem();
    l->items[l->n++] = (dspy_named_predictor){nm, p};
    return DSPY_OK;
}

/* named_parameters() of `m`, each name prefixed with `prefix` + "." when prefix is given. */
static dspy_status np_walk(dspy_module *m, const char *prefix, np_list *l) {
    dspy_status st = DSPY_OK;
    dspy_str name = DSPY_STR_INIT;
    if (dspy_module_is_predict(m)) {
        if (prefix) dspy_str_appendf(&name, "%s.self", prefix);
        else dspy_str_append(&name, "self");
        st = dspy_str_ok(&name) ? np_add(l, dspy_str_cstr(&name), m) : nomem();
    }
    for (size_t i = 0; i < m->n && !st; i++) {
        dspy_module *c = m->children[i];
        dspy_str_clear(&name);
        if (prefix) dspy_str_appendf(&name, "%s.%s", prefix, m->names[i]);
        else dspy_str_append(&name, m->names[i]);
        if (!dspy_str_ok(&name)) st = nomem();
        else if (dspy_module_is_predict(c)) st = np_add(l, dspy_str_cstr(&name), c);
        else if (!c->compiled) st = np_walk(c, dspy_str_cstr(&name), l);
    }
    dspy_str_free(&name);
    return st;
}

void dspy_named_predictors_free(dspy_named_predictor *list, size_t n) {
    for (size_t i = 0; list && i < n; i++) free(list[i].name);
    free(list);
}

dspy_status dspy_module_named_predictors(dspy_module *m, dspy_named_predictor **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (!m) return dspy_fail(DSPY_ERR_ARG, "named_predictors: no module given");
    np_list l = {0};
    dspy_status st = np_walk(m, NULL, &l);
    if (st) {
        dspy_named_predictors_free(l.items, l.n);
        return st;
    }
    *out = l.items;
    *n = l.n;
    return DSPY_OK;
}

dspy_status dspy_module_set_lm(dspy_module *m, dspy_lm *lm) {
    dspy_named_predictor *ps;
    size_t n;
    dspy_status st = dspy_module_named_predictors(m, &ps, &n);
    if (st) return st;
    for (size_t i = 0; i < n; i++) {
        predict_state *s = dspy_predict_state_of(ps[i].predictor);
        dspy_lm *old = s->lm;
        s->lm = dspy_lm_retain(lm);
        dspy_lm_free(old);
    }
    dspy_named_predictors_free(ps, n);
    return DSPY_OK;
}

dspy_status dspy_module_get_lm(dspy_module *m, dspy_lm **out) {
    *out = NULL;
    dspy_named_predictor *ps;
    size_t n;
    dspy_status st = dspy_module_named_predictors(m, &ps, &n);
    if (st) return st;
    bool unique = n > 0;
    for (size_t i = 1; i < n && unique; i++)
        if (dspy_predict_state_of(ps[i].predictor)->lm != dspy_predict_state_of(ps[0].predictor)->lm) unique = false;
    if (unique) *out = dspy_predict_state_of(ps[0].predictor)->lm;
    dspy_named_predictors_free(ps, n);
    if (!unique) return dspy_fail(DSPY_ERR_STATE, "Multiple LMs are being used in the module. There's no unique LM to return.");
    return DSPY_OK;
}

/* ---- copies ------------------------------------------------------------------------------- */

typedef struct memo {
    const dspy_module **from;
    dspy_module **to;
    size_t n, cap;
} memo;

static dspy_status copy_rec(const dspy_module *m, memo *mm, dspy_module **out) {
    *out = NULL;
    for (size_t i = 0; i < mm->n; i++)
        if (mm->from[i] == m) {
            *out = dspy_module_retain(mm->to[i]);
            return DSPY_OK;
        }
    void *impl = NULL;
    dspy_status st;
    if (m->impl) {
        if (!m->vt->copy_impl)
            return dspy_fail(DSPY_ERR_STATE, "deepcopy: module type %s cannot copy its state (no copy_impl)",
                             dspy_module_type_name(m));
        if ((st = m->vt->copy_impl(m->impl, &impl))) return st;
    }
    dspy_module *c;
    if ((st = dspy_module_new(m->vt, impl, &c))) return st;
    c->compiled = m->compiled;
    if (m->ncbs) {
        if (!(c->cbs = malloc(m->ncbs * sizeof *c->cbs))) {
            dspy_module_free(c);
            return nomem();
        }
        memcpy(c->cbs, m->cbs, m->ncbs * sizeof *c->cbs);
        c->ncbs = m->ncbs;
    }
    if (mm->n == mm->cap) {
        size_t cap = mm->cap ? mm->cap * 2 : 8;
        const dspy_module **f = realloc(mm->from, cap * sizeof *f);
        if (f) mm->from = f;
        dspy_module **t = f ? realloc(mm->to, cap * sizeof *t) : NULL;
        if (t) mm->to = t;
        if (!f || !t) {
            dspy_module_free(c);
            return nomem();
        }
        mm->cap = cap;
    }
    mm->from[mm->n] = m;
    mm->to[mm->n++] = c;
    for (size_t i = 0; i < m->n; i++) {
        dspy_module *cc;
        if ((st = copy_rec(m->children[i], mm, &cc))) break;
        st = dspy_module_add_child(c, m->names[i], cc);
        dspy_module_free(cc);
        if (st) break;
    }
    if (st) {
        dspy_module_free(c); /* stays in the memo only as a dangling key; the whole copy fails */
        return st;
    }
    *out = c;
    return DSPY_OK;
}

dspy_status dspy_module_deepcopy(const dspy_module *m, dspy_module **out) {
    *out = NULL;
    if (!m) return dspy_fail(DSPY_ERR_ARG, "deepcopy: no module given");
    memo mm = {0};
    dspy_status st = copy_rec(m, &mm, out);
    free(mm.from);
    free(mm.to);
    return st;
}

dspy_status dspy_module_reset_copy(const dspy_module *m, dspy_module **out) {
    dspy_status st = dspy_module_deepcopy(m, out);
    if (st) return st;
    dspy_named_predictor *ps;
    size_t n;
    if ((st = dspy_module_named_predictors(*out, &ps, &n))) {
        dspy_module_free(*out);
        *out = NULL;
        return st;
    }
    for (size_t i = 0; i < n && !st; i++) st = dspy_predict_reset(ps[i].predictor);
    dspy_named_predictors_free(ps, n);
    if (st) {
        dspy_module_free(*out);
        *out = NULL;
    }
    return st;
}
