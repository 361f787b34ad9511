/* example.c — dspy.Example and datasets (see include/dspy/example.h for the semantics).
 *
 * Fields are parallel arrays of keys and jansson values in insertion order; lookups are linear
 * (examples have a handful of fields). Values are shared between copies by reference count and
 * never mutated after being stored. Follows spec §11.1 and CC-28.
 */
#include "dspy/example.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "example_internal.h"
#include "dspy/json.h"

struct dspy_example {
    char **keys;
    json_t **vals;
    size_t n, cap;
    bool has_inputs;
    char **inkeys;
    size_t nin;
};

struct dspy_dataset {
    dspy_example **items;
    size_t n, cap;
};

static const char k_inputs_unset[] =
    "Inputs have not been set for this example. Use `example.with_inputs()` to set them.";

static bool hidden(const char *key) { return strncmp(key, "dspy_", 5) == 0; }

/* ---- values ---------------------------------------------------------------------------- */

dspy_value_type dspy_value_type_of(const dspy_value *v) {
    switch (json_typeof(dspy_value_json(v))) {
    case JSON_NULL: return DSPY_VALUE_NULL;
    case JSON_TRUE:
    case JSON_FALSE: return DSPY_VALUE_BOOL;
    case JSON_INTEGER: return DSPY_VALUE_INT;
    case JSON_REAL: return DSPY_VALUE_REAL;
    case JSON_STRING: return DSPY_VALUE_STRING;
    case JSON_ARRAY: return DSPY_VALUE_ARRAY;
    case JSON_OBJECT: return DSPY_VALUE_OBJECT;
    }
    return DSPY_VALUE_NULL;
}

const char *dspy_value_str(const dspy_value *v, size_t *len) {
    json_t *j = v ? dspy_value_json(v) : NULL;
    if (!j || !json_is_string(j)) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = json_string_length(j);
    return json_string_value(j);
}

bool dspy_value_int(const dspy_value *v, int64_t *out) {
    json_t *j = v ? dspy_value_json(v) : NULL;
    if (!j || !json_is_integer(j)) return false;
    *out = (int64_t)json_integer_value(j);
    return true;
}

bool dspy_value_number(const dspy_value *v, double *out) {
    json_t *j = v ? dspy_value_json(v) : NULL;
    if (!j || !json_is_number(j)) return false;
    *out = json_number_value(j);
    return true;
}

/* Python numeric view: bools are 0/1. */
static bool as_int(const json_t *v, long long *i) {
    if (json_is_integer(v)) *i = json_integer_value(v);
    else if (json_is_true(v)) *i = 1;
    else if (json_is_false(v)) *i = 0;
    else return false;
    return true;
}

static bool py_equal(const json_t *a, const json_t *b) {
    long long ia = 0, ib = 0;
    bool a_int = as_int(a, &ia), b_int = as_int(b, &ib);
    if (a_int && b_int) return ia == ib;
    if ((a_int || json_is_real(a)) && (b_int || json_is_real(b))) {
        if (a_int || b_int) { /* int vs float: equal only when the float is exactly that int */
            long long i = a_int ? ia : ib;
            double r = json_real_value(a_int ? b : a);
            return r >= -9223372036854775808.0 && r < 9223372036854775808.0 && r == floor(r) &&
                   (long long)r == i;
        }
        return json_real_value(a) == json_real_value(b);
    }
    if (json_typeof(a) != json_typeof(b)) return false;
    switch (json_typeof(a)) {
    case JSON_NULL: return true;
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b)) return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!py_equal(json_array_get(a, i), json_array_get(b, i))) return false;
        return true;
    case JSON_OBJECT: {
        if (json_object_size(a) != json_object_size(b)) return false;
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)a, k, x) {
            json_t *y = json_object_get(b, k);
            if (!y || !py_equal(x, y)) return false;
        }
        return true;
    }
    default: return false;
    }
}

bool dspy_value_equal(const dspy_value *a, const dspy_value *b) {
    if (!a || !b) return a == b;
    return py_equal(dspy_value_json(a), dspy_value_json(b));
}

void dspy_value_append_json(dspy_str *s, const dspy_value *v) {
    if (dspy_json_dump((const dspy_json *)dspy_value_json(v), DSPY_JSON_COMPACT | DSPY_JSON_UTF8, s))
        s->failed = true;
}

/* dspy_json and dspy_value are both a json_t underneath (base/json.c, example_internal.h) */
const dspy_json *dspy_value_as_json(const dspy_value *v) { return (const dspy_json *)(const void *)dspy_value_json(v); }

void dspy_value_append_repr(dspy_str *s, const dspy_value *v) {
    dspy_json_repr((const dspy_json *)dspy_value_json(v), s);
}

/* ---- examples -------------------------------------------------------------------------- */

dspy_status dspy_example_new(dspy_example **out) {
    *out = calloc(1, sizeof **out);
    return *out ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory creating an example");
}

static void clear_inputs(dspy_example *ex) {
    for (size_t i = 0; i < ex->nin; i++) free(ex->inkeys[i]);
    free(ex->inkeys);
    ex->inkeys = NULL;
    ex->nin = 0;
    ex->has_inputs = false;
}

void dspy_example_free(dspy_example *ex) {
    if (!ex) return;
    for (size_t i = 0; i < ex->n; i++) {
        free(ex->keys[i]);
        json_decref(ex->vals[i]);
    }
    free(ex->keys);
    free(ex->vals);
    clear_inputs(ex);
    free(ex);
}

static long find(const dspy_example *ex, const char *key) {
    for (size_t i = 0; i < ex->n; i++)
        if (strcmp(ex->keys[i], key) == 0) return (long)i;
    return -1;
}

static dspy_status check_key(const char *key) {
    if (!key) return dspy_fail(DSPY_ERR_ARG, "example: field name is NULL");
    if (!dspy_utf8_valid(key, strlen(key), NULL))
        return dspy_fail(DSPY_ERR_ARG, "example: field name is not valid UTF-8");
    return DSPY_OK;
}

dspy_status dspy_example_set_json(dspy_example *ex, const char *key, json_t *v) {
    dspy_status st = check_key(key);
    if (st) {
        json_decref(v);
        return st;
    }
    if (!v) return dspy_fail(DSPY_ERR_NOMEM, "example: out of memory storing field '%s'", key);
    long k = find(ex, key);
    if (k >= 0) {
        json_decref(ex->vals[k]);
        ex->vals[k] = v;
        return DSPY_OK;
    }
    if (ex->n == ex->cap) {
        size_t nc = ex->cap ? ex->cap * 2 : 4;
        char **nk = realloc(ex->keys, nc * sizeof *nk);
        if (nk) ex->keys = nk;
        json_t **nv = nk ? realloc(ex->vals, nc * sizeof *nv) : NULL;
        if (!nv) {
            json_decref(v);
            return dspy_fail(DSPY_ERR_NOMEM, "example: out of memory adding field '%s'", key);
        }
        ex->vals = nv;
        ex->cap = nc;
    }
    char *kc = strdup(key);
    if (!kc) {
        json_decref(v);
        return dspy_fail(DSPY_ERR_NOMEM, "example: out of memory adding field '%s'", key);
    }
    ex->keys[ex->n] = kc;
    ex->vals[ex->n] = v;
    ex->n++;
    return DSPY_OK;
}

dspy_status dspy_example_set_strn(dspy_example *ex, const char *key, const char *value, size_t len) {
    size_t bad;
    if (!value) return dspy_fail(DSPY_ERR_ARG, "example: value of '%s' is NULL", key ? key : "?");
    if (!dspy_utf8_valid(value, len, &bad))
        return dspy_fail(DSPY_ERR_ARG, "example: value of '%s' is not valid UTF-8 (byte offset %zu)",
                         key ? key : "?", bad);
    return dspy_example_set_json(ex, key, json_stringn_nocheck(value, len));
}

dspy_status dspy_example_set_str(dspy_example *ex, const char *key, const char *value) {
    return dspy_example_set_strn(ex, key, value, value ? strlen(value) : 0);
}

dspy_status dspy_example_set_int(dspy_example *ex, const char *key, int64_t value) {
    return dspy_example_set_json(ex, key, json_integer((json_int_t)value));
}

dspy_status dspy_example_set_real(dspy_example *ex, const char *key, double value) {
    if (!isfinite(value))
        return dspy_fail(DSPY_ERR_ARG, "example: value of '%s' is not a finite number", key ? key : "?");
    return dspy_example_set_json(ex, key, json_real(value));
}

dspy_status dspy_example_set_bool(dspy_example *ex, const char *key, bool value) {
    return dspy_example_set_json(ex, key, json_boolean(value));
}

dspy_status dspy_example_set_json_text(dspy_example *ex, const char *key, const char *json) {
    if (!json) return dspy_fail(DSPY_ERR_ARG, "example: JSON text of '%s' is NULL", key ? key : "?");
    json_error_t err;
    json_t *v = json_loads(json, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!v)
        return dspy_fail(DSPY_ERR_ARG, "example: value of '%s' is not valid JSON: %s (column %d)",
                         key ? key : "?", err.text, err.column);
    return dspy_example_set_json(ex, key, v);
}

dspy_status dspy_example_set_value(dspy_example *ex, const char *key, const dspy_value *v) {
    if (!v) return dspy_fail(DSPY_ERR_ARG, "example: value of '%s' is NULL", key ? key : "?");
    return dspy_example_set_json(ex, key, json_incref(dspy_value_json(v)));
}

dspy_status dspy_example_remove(dspy_example *ex, const char *key) {
    long k = key ? find(ex, key) : -1;
    if (k < 0) return dspy_fail(DSPY_ERR_NOTFOUND, "example has no field '%s'", key ? key : "(null)");
    free(ex->keys[k]);
    json_decref(ex->vals[k]);
    memmove(ex->keys + k, ex->keys + k + 1, (ex->n - (size_t)k - 1) * sizeof *ex->keys);
    memmove(ex->vals + k, ex->vals + k + 1, (ex->n - (size_t)k - 1) * sizeof *ex->vals);
    ex->n--;
    return DSPY_OK;
}

dspy_status dspy_example_update(dspy_example *ex, const dspy_example *from) {
    if (!from) return DSPY_OK;
    for (size_t i = 0; i < from->n; i++) {
        dspy_status st = dspy_example_set_json(ex, from->keys[i], json_incref(from->vals[i]));
        if (st) return st;
    }
    return DSPY_OK;
}

bool dspy_example_has(const dspy_example *ex, const char *key) { return key && find(ex, key) >= 0; }

const dspy_value *dspy_example_get(const dspy_example *ex, const char *key) {
    long k = key ? find(ex, key) : -1;
    return k < 0 ? NULL : dspy_value_of_json(ex->vals[k]);
}

const char *dspy_example_get_str(const dspy_example *ex, const char *key) {
    const dspy_value *v = dspy_example_get(ex, key);
    return v ? dspy_value_str(v, NULL) : NULL;
}

dspy_status dspy_example_get_json_text(const dspy_example *ex, const char *key, char **out) {
    *out = NULL;
    const dspy_value *v = dspy_example_get(ex, key);
    if (!v) return dspy_fail(DSPY_ERR_NOTFOUND, "example has no field '%s'", key ? key : "(null)");
    dspy_str s = DSPY_STR_INIT;
    dspy_value_append_json(&s, v);
    *out = dspy_str_take(&s);
    return *out ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory rendering field '%s'", key);
}

size_t dspy_example_len(const dspy_example *ex) {
    size_t n = 0;
    for (size_t i = 0; i < ex->n; i++) n += !hidden(ex->keys[i]);
    return n;
}

static long visible_index(const dspy_example *ex, size_t i) {
    for (size_t k = 0; k < ex->n; k++)
        if (!hidden(ex->keys[k]) && i-- == 0) return (long)k;
    return -1;
}

const char *dspy_example_key(const dspy_example *ex, size_t i) {
    long k = visible_index(ex, i);
    return k < 0 ? NULL : ex->keys[k];
}

const dspy_value *dspy_example_value(const dspy_example *ex, size_t i) {
    long k = visible_index(ex, i);
    return k < 0 ? NULL : dspy_value_of_json(ex->vals[k]);
}

size_t dspy_example_nfields(const dspy_example *ex) { return ex->n; }
const char *dspy_example_field_key(const dspy_example *ex, size_t i) {
    return i < ex->n ? ex->keys[i] : NULL;
}
const dspy_value *dspy_example_field_value(const dspy_example *ex, size_t i) {
    return i < ex->n ? dspy_value_of_json(ex->vals[i]) : NULL;
}

/* ---- input keys ------------------------------------------------------------------------ */

dspy_status dspy_example_set_inputs(dspy_example *ex, const char *const *keys, size_t n) {
    char **nk = n ? calloc(n, sizeof *nk) : NULL;
    if (n && !nk) return dspy_fail(DSPY_ERR_NOMEM, "out of memory setting input keys");
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        dspy_status st = check_key(keys[i]);
        bool dup = false;
        for (size_t j = 0; !st && j < m; j++) dup |= strcmp(nk[j], keys[i]) == 0;
        if (!st && !dup && !(nk[m] = strdup(keys[i])))
            st = dspy_fail(DSPY_ERR_NOMEM, "out of memory setting input keys");
        if (st) {
            for (size_t j = 0; j < m; j++) free(nk[j]);
            free(nk);
            return st;
        }
        if (!dup) m++;
    }
    clear_inputs(ex);
    ex->inkeys = nk;
    ex->nin = m;
    ex->has_inputs = true;
    return DSPY_OK;
}

bool dspy_example_has_inputs(const dspy_example *ex) { return ex->has_inputs; }
size_t dspy_example_ninputs(const dspy_example *ex) { return ex->nin; }
const char *dspy_example_input_key(const dspy_example *ex, size_t i) {
    return i < ex->nin ? ex->inkeys[i] : NULL;
}

bool dspy_example_is_input(const dspy_example *ex, const char *key) {
    for (size_t i = 0; key && i < ex->nin; i++)
        if (strcmp(ex->inkeys[i], key) == 0) return true;
    return false;
}

/* A copy of the fields; input keys copied too when keep_inputs. */
static dspy_status clone(const dspy_example *ex, bool keep_inputs, dspy_example **out) {
    dspy_status st = dspy_example_new(out);
    if (!st) st = dspy_example_update(*out, ex);
    if (!st && keep_inputs && ex->has_inputs)
        st = dspy_example_set_inputs(*out, (const char *const *)ex->inkeys, ex->nin);
    if (st) {
        dspy_example_free(*out);
        *out = NULL;
    }
    return st;
}

dspy_status dspy_example_with_inputs(const dspy_example *ex, const char *const *keys, size_t n,
                                     dspy_example **out) {
    dspy_status st = clone(ex, false, out);
    if (!st) st = dspy_example_set_inputs(*out, keys, n);
    if (st) {
        dspy_example_free(*out);
        *out = NULL;
    }
    return st;
}

dspy_status dspy_example_inputs(const dspy_example *ex, dspy_example **out) {
    *out = NULL;
    if (!ex->has_inputs) return dspy_fail(DSPY_ERR_STATE, "%s", k_inputs_unset);
    dspy_example *r;
    dspy_status st = dspy_example_new(&r);
    for (size_t i = 0; !st && i < ex->n; i++)
        if (dspy_example_is_input(ex, ex->keys[i]))
            st = dspy_example_set_json(r, ex->keys[i], json_incref(ex->vals[i]));
    if (!st) st = dspy_example_set_inputs(r, (const char *const *)ex->inkeys, ex->nin);
    if (st) {
        dspy_example_free(r);
        return st;
    }
    *out = r;
    return DSPY_OK;
}

dspy_status dspy_example_labels(const dspy_example *ex, dspy_example **out) {
    *out = NULL;
    if (!ex->has_inputs) return dspy_fail(DSPY_ERR_STATE, "%s", k_inputs_unset);
    /* DSPy: keys not in self.inputs().keys(), which hides dspy_ keys, so a dspy_ input key
     * lands in labels(). */
    dspy_example *r;
    dspy_status st = dspy_example_new(&r);
    for (size_t i = 0; !st && i < ex->n; i++) {
        bool in = dspy_example_is_input(ex, ex->keys[i]) && !hidden(ex->keys[i]);
        if (!in) st = dspy_example_set_json(r, ex->keys[i], json_incref(ex->vals[i]));
    }
    if (st) {
        dspy_example_free(r);
        return st;
    }
    *out = r;
    return DSPY_OK;
}

dspy_status dspy_example_copy(const dspy_example *ex, const dspy_example *overrides,
                              dspy_example **out) {
    dspy_status st = clone(ex, false, out);
    if (!st && overrides) st = dspy_example_update(*out, overrides);
    if (st) {
        dspy_example_free(*out);
        *out = NULL;
    }
    return st;
}

dspy_status dspy_example_without(const dspy_example *ex, const char *const *keys, size_t n,
                                 dspy_example **out) {
    dspy_status st = clone(ex, false, out);
    for (size_t i = 0; !st && i < n; i++) st = dspy_example_remove(*out, keys[i]);
    if (st) {
        dspy_example_free(*out);
        *out = NULL;
    }
    return st;
}

bool dspy_example_equal(const dspy_example *a, const dspy_example *b) {
    if (!a || !b) return a == b;
    if (a->n != b->n) return false;
    for (size_t i = 0; i < a->n; i++) {
        long k = find(b, a->keys[i]);
        if (k < 0 || !py_equal(a->vals[i], b->vals[k])) return false;
    }
    return true;
}

void dspy_example_append_repr(dspy_str *s, const dspy_example *ex) {
    dspy_str_append(s, "Example({");
    bool first = true;
    for (size_t i = 0; i < ex->n; i++) {
        if (hidden(ex->keys[i])) continue;
        if (!first) dspy_str_append(s, ", ");
        first = false;
        dspy_py_repr_str(ex->keys[i], strlen(ex->keys[i]), s);
        dspy_str_append(s, ": ");
        dspy_json_repr((const dspy_json *)ex->vals[i], s);
    }
    dspy_str_append(s, "}) (input_keys=");
    if (!ex->has_inputs) dspy_str_append(s, "None");
    else if (ex->nin == 0) dspy_str_append(s, "set()");
    else {
        dspy_str_appendc(s, '{');
        for (size_t i = 0; i < ex->nin; i++) {
            if (i) dspy_str_append(s, ", ");
            dspy_py_repr_str(ex->inkeys[i], strlen(ex->inkeys[i]), s);
        }
        dspy_str_appendc(s, '}');
    }
    dspy_str_appendc(s, ')');
}

dspy_status dspy_example_repr(const dspy_example *ex, char **out) {
    dspy_str s = DSPY_STR_INIT;
    dspy_example_append_repr(&s, ex);
    *out = dspy_str_take(&s);
    return *out ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory rendering an example");
}

json_t *dspy_example_to_json_object(const dspy_example *ex, bool include_dspy) {
    json_t *o = json_object();
    for (size_t i = 0; o && i < ex->n; i++) {
        if (!include_dspy && hidden(ex->keys[i])) continue;
        if (json_object_set(o, ex->keys[i], ex->vals[i]) != 0) {
            json_decref(o);
            o = NULL;
        }
    }
    if (!o) dspy_fail(DSPY_ERR_NOMEM, "out of memory converting an example to JSON");
    return o;
}

void dspy_example_append_json(dspy_str *s, const dspy_example *ex, bool include_dspy) {
    json_t *o = dspy_example_to_json_object(ex, include_dspy);
    if (!o || dspy_json_dump((const dspy_json *)o, DSPY_JSON_COMPACT | DSPY_JSON_UTF8, s)) s->failed = true;
    json_decref(o);
}

dspy_status dspy_example_from_json_object(const json_t *obj, dspy_example **out) {
    *out = NULL;
    if (!json_is_object(obj)) return dspy_fail(DSPY_ERR_FORMAT, "expected a JSON object");
    dspy_example *ex;
    dspy_status st = dspy_example_new(&ex);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v) {
        if (st) break;
        st = dspy_example_set_json(ex, k, json_incref(v));
    }
    if (st) {
        dspy_example_free(ex);
        return st;
    }
    *out = ex;
    return DSPY_OK;
}

dspy_status dspy_example_from_json(const char *json, size_t len, const char *name,
                                   dspy_example **out) {
    *out = NULL;
    if (!name) name = "<json>";
    json_error_t err;
    json_t *v = json_loadb(json, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!v)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: invalid JSON at column %d: %s", name, err.column,
                         err.text);
    dspy_status st = json_is_object(v)
                         ? dspy_example_from_json_object(v, out)
                         : dspy_fail(DSPY_ERR_FORMAT, "%s: expected a JSON object for an example", name);
    json_decref(v);
    return st;
}

/* ---- datasets -------------------------------------------------------------------------- */

dspy_status dspy_dataset_new(dspy_dataset **out) {
    *out = calloc(1, sizeof **out);
    return *out ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory creating a dataset");
}

void dspy_dataset_free(dspy_dataset *ds) {
    if (!ds) return;
    for (size_t i = 0; i < ds->n; i++) dspy_example_free(ds->items[i]);
    free(ds->items);
    free(ds);
}

dspy_status dspy_dataset_append(dspy_dataset *ds, dspy_example *ex) {
    if (!ex) return dspy_fail(DSPY_ERR_ARG, "dataset: appending a NULL example");
    if (ds->n == ds->cap) {
        size_t nc = ds->cap ? ds->cap * 2 : 16;
        dspy_example **ni = realloc(ds->items, nc * sizeof *ni);
        if (!ni) {
            dspy_example_free(ex);
            return dspy_fail(DSPY_ERR_NOMEM, "out of memory growing a dataset");
        }
        ds->items = ni;
        ds->cap = nc;
    }
    ds->items[ds->n++] = ex;
    return DSPY_OK;
}

dspy_status dspy_dataset_append_copy(dspy_dataset *ds, const dspy_example *ex) {
    dspy_example *c;
    dspy_status st = clone(ex, true, &c);
    return st ? st : dspy_dataset_append(ds, c);
}

size_t dspy_dataset_len(const dspy_dataset *ds) { return ds->n; }

const dspy_example *dspy_dataset_get(const dspy_dataset *ds, size_t i) {
    return i < ds->n ? ds->items[i] : NULL;
}

dspy_example *dspy_dataset_get_mut(dspy_dataset *ds, size_t i) {
    return i < ds->n ? ds->items[i] : NULL;
}

dspy_status dspy_dataset_slice(const dspy_dataset *ds, size_t start, size_t end,
                               dspy_dataset **out) {
    if (end > ds->n) end = ds->n;
    dspy_status st = dspy_dataset_new(out);
    for (size_t i = start; !st && i < end; i++) st = dspy_dataset_append_copy(*out, ds->items[i]);
    if (st) {
        dspy_dataset_free(*out);
        *out = NULL;
    }
    return st;
}

dspy_status dspy_dataset_gather(const dspy_dataset *ds, const int32_t *idx, size_t n,
                                dspy_dataset **out) {
    *out = NULL;
    for (size_t i = 0; i < n; i++)
        if (idx[i] < 0 || (size_t)idx[i] >= ds->n)
            return dspy_fail(DSPY_ERR_ARG, "dataset: index %d out of range (length %zu)",
                             (int)idx[i], ds->n);
    dspy_status st = dspy_dataset_new(out);
    for (size_t i = 0; !st && i < n; i++)
        st = dspy_dataset_append_copy(*out, ds->items[idx[i]]);
    if (st) {
        dspy_dataset_free(*out);
        *out = NULL;
    }
    return st;
}

dspy_status dspy_dataset_set_inputs(dspy_dataset *ds, const char *const *keys, size_t n) {
    for (size_t i = 0; i < ds->n; i++) {
        dspy_status st = dspy_example_set_inputs(ds->items[i], keys, n);
        if (st) return st;
    }
    return DSPY_OK;
}
