/* type_value.c — DSPy's parse_value and pydantic's lax validation for signature types.
 *
 * What: dspy/adapters/utils.py:parse_value (V33) and the V26 parse_value, on dspy_json values;
 * pydantic v2 TypeAdapter(...).validate_python in lax mode for the types of dspy/type.h
 * (int from "42"/42.0/True, float from ints and numeric strings, bool from 0/1 and
 * yes/no/true/false/on/off/t/f/y/n/1/0 strings, element-wise containers, literal membership,
 * unions tried strict-then-lax left to right).
 * Not: pydantic's exact error text. Messages follow pydantic's layout ("1 validation error for
 * int\n  Input should be ... [type=int_parsing, input_value='x', input_type=str]") without
 * the "For further information" URL line; set order is first occurrence (Python's is hash
 * order).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "program/json_repair.h"
#include "program/pyliteral.h"
#include "program/type_priv.h"

typedef struct verrs {
    dspy_str text; /* accumulated error lines */
    int count;
} verrs;

static const char *py_type_name(const dspy_json *v) {
    switch (dspy_json_typeof(v)) {
    case DSPY_JSON_NULL: return "NoneType";
    case DSPY_JSON_BOOL: return "bool";
    case DSPY_JSON_INT: return "int";
    case DSPY_JSON_REAL: return "float";
    case DSPY_JSON_STRING: return "str";
    case DSPY_JSON_ARRAY: return "list";
    case DSPY_JSON_OBJECT: return "dict";
    }
    return "object";
}

static void add_err(verrs *e, const char *loc, const char *type, const char *msg,
                    const dspy_json *input) {
    e->count++;
    if (e->text.len) dspy_str_appendc(&e->text, '\n');
    if (loc && *loc) {
        dspy_str_append(&e->text, loc);
        dspy_str_appendc(&e->text, '\n');
    }
    dspy_str_appendf(&e->text, "  %s [type=%s, input_value=", msg, type);
    dspy_json_repr(input, &e->text);
    dspy_str_appendf(&e->text, ", input_type=%s]", py_type_name(input));
}

static dspy_json *oom_json(void) {
    dspy_fail(DSPY_ERR_NOMEM, "validation: out of memory");
    return NULL;
}

static bool is_num(const dspy_json *v) {
    return dspy_json_typeof(v) == DSPY_JSON_INT || dspy_json_typeof(v) == DSPY_JSON_REAL;
}

/* Python float() of a stripped string (digits, '.', exponent, underscores, inf/nan). */
static bool parse_float_str(const char *s, size_t n, double *out) {
    dspy_strv v = dspy_strv_strip(dspy_strv_make(s, n));
    if (v.len == 0 || v.len > 200) return false;
    char buf[256];
    size_t k = 0;
    for (size_t i = 0; i < v.len; i++) {
        char c = v.ptr[i];
        if (c == '_') {
            if (i == 0 || i + 1 >= v.len || !(v.ptr[i - 1] >= '0' && v.ptr[i - 1] <= '9') ||
                !(v.ptr[i + 1] >= '0' && v.ptr[i + 1] <= '9'))
                return false;
            continue;
        }
        if (!strchr("0123456789+-.eEinfatyINFATY", c)) return false;
        buf[k++] = c;
    }
    buf[k] = '\0';
    char *end;
    double d = strtod(buf, &end);
    if (end == buf || *end) return false;
    /* strtod accepts hex and "infinity"/"nan(...)" forms Python's float() also accepts for
     * inf/nan words; reject hex, which Python rejects. */
    if (strchr(buf, 'x') || strchr(buf, 'X')) return false;
    *out = d;
    return true;
}

static bool parse_int_str(const char *s, size_t n, int64_t *out) {
    dspy_strv v = dspy_strv_strip(dspy_strv_make(s, n));
    size_t i = 0;
    bool neg = false;
    if (i < v.len && (v.ptr[i] == '+' || v.ptr[i] == '-')) neg = v.ptr[i++] == '-';
    if (i >= v.len) return false;
    unsigned long long acc = 0;
    size_t digits = 0;
    for (; i < v.len; i++) {
        char c = v.ptr[i];
        if (c == '_' && digits && i + 1 < v.len && v.ptr[i + 1] >= '0' && v.ptr[i + 1] <= '9')
            continue;
        if (c == '.') break;
        if (c < '0' || c > '9') return false;
        if (acc > (unsigned long long)INT64_MAX / 10) return false;
        acc = acc * 10 + (unsigned long long)(c - '0');
        digits++;
    }
    if (!digits) return false;
    if (i < v.len) { /* "12.000" */
        for (i++; i < v.len; i++)
            if (v.ptr[i] != '0') return false;
    }
    if (acc > (unsigned long long)INT64_MAX) return false;
    *out = neg ? -(int64_t)acc : (int64_t)acc;
    return true;
}

static bool str_ieq(dspy_strv a, const char *z) {
    size_t n = strlen(z);
    if (a.len != n) return false;
    for (size_t i = 0; i < n; i++) {
        char c = a.ptr[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
        if (c != z[i]) return false;
    }
    return true;
}

static bool literal_match(const dspy_json *lit, const dspy_json *v) {
    dspy_json_type tl = dspy_json_typeof(lit), tv = dspy_json_typeof(v);
    if (tl == DSPY_JSON_BOOL || tv == DSPY_JSON_BOOL) return tl == tv && dspy_type_py_eq(lit, v);
    if (is_num(lit) && is_num(v)) return dspy_type_py_eq(lit, v);
    return tl == tv && dspy_json_equal(lit, v);
}

static dspy_json *validate(const dspy_type *t, const dspy_json *v, bool strict, const char *loc,
                           verrs *e);

static void child_loc(const char *loc, const char *key, dspy_str *out) {
    if (loc && *loc) {
        dspy_str_append(out, loc);
        dspy_str_append(out, ".");
    }
    dspy_str_append(out, key);
}

static dspy_json *validate_seq(const dspy_type *t, const dspy_json *v, bool strict,
                               const char *loc, verrs *e) {
    dspy_json *arr = dspy_json_array();
    if (!arr) return oom_json();
    int before = e->count;
    size_t n = dspy_json_size(v);
    for (size_t i = 0; i < n; i++) {
        const dspy_type *et = NULL;
        if (t->kind == DSPY_TYPE_TUPLE && !t->variadic) et = i < t->nargs ? t->args[i] : NULL;
        else et = t->nargs ? t->args[0] : NULL;
        dspy_json *x;
        if (!et) {
            x = dspy_json_incref(dspy_json_at(v, i));
        } else {
            dspy_str cl = DSPY_STR_INIT;
            char idx[32];
            snprintf(idx, sizeof idx, "%zu", i);
            child_loc(loc, idx, &cl);
            x = validate(et, dspy_json_at(v, i), strict, dspy_str_cstr(&cl), e);
            dspy_str_free(&cl);
            if (!x) {
                if (!dspy_str_ok(&e->text)) {
                    dspy_json_decref(arr);
                    return NULL;
                }
                continue;
            }
        }
        if (t->kind == DSPY_TYPE_SET || t->kind == DSPY_TYPE_FROZENSET) {
            bool dup = false;
            for (size_t j = 0; j < dspy_json_size(arr) && !dup; j++)
                dup = dspy_type_py_eq(dspy_json_at(arr, j), x);
            if (dup) {
                dspy_json_decref(x);
                continue;
            }
        }
        if (dspy_json_append(arr, x)) {
            dspy_json_decref(arr);
            return oom_json();
        }
    }
    if (e->count != before) {
        dspy_json_decref(arr);
        return NULL;
    }
    return arr;
}

/* The error for a value of the wrong JSON type (pydantic's int_type, float_type, ...). */
static dspy_json *type_error(const dspy_type *t, const dspy_json *v, const char *loc, verrs *e) {
    static const char *const tnames[][2] = {
        [DSPY_TYPE_INT] = {"int_type", "Input should be a valid integer"},
        [DSPY_TYPE_FLOAT] = {"float_type", "Input should be a valid number"},
        [DSPY_TYPE_BOOL] = {"bool_type", "Input should be a valid boolean"},
    };
    bool known = t->kind <= DSPY_TYPE_BOOL && tnames[t->kind][0];
    add_err(e, loc, known ? tnames[t->kind][0] : "type_error",
            known ? tnames[t->kind][1] : "Input has the wrong type", v);
    return NULL;
}

/* int: strict takes only integers; lax also bools, integral floats and integer strings. */
static dspy_json *validate_int(const dspy_type *t, const dspy_json *v, bool strict, const char *loc, verrs *e) {
    dspy_json_type vt = dspy_json_typeof(v);
    if (vt == DSPY_JSON_INT) return dspy_json_incref((dspy_json *)v);
    if (strict) return type_error(t, v, loc, e);
    if (vt == DSPY_JSON_BOOL) return dspy_json_int(dspy_json_truthy(v) ? 1 : 0);
    if (vt == DSPY_JSON_REAL) {
        double d = dspy_json_number(v);
        if (!isfinite(d)) {
            add_err(e, loc, "finite_number", "Input should be a finite number", v);
            return NULL;
        }
        if (d != floor(d) || fabs(d) > 9.2e18) {
            add_err(e, loc, "int_from_float",
                    "Input should be a valid integer, got a number with a fractional part", v);
            return NULL;
        }
        return dspy_json_int((int64_t)d);
    }
    if (vt == DSPY_JSON_STRING) {
        int64_t x;
        if (parse_int_str(dspy_json_str(v), dspy_json_strlen(v), &x)) return dspy_json_int(x);
        add_err(e, loc, "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer", v);
        return NULL;
    }
    return type_error(t, v, loc, e);
}

/* float: ints always widen; lax also bools and numeric strings. */
static dspy_json *validate_float(const dspy_type *t, const dspy_json *v, bool strict, const char *loc, verrs *e) {
    dspy_json_type vt = dspy_json_typeof(v);
    if (vt == DSPY_JSON_REAL) return dspy_json_incref((dspy_json *)v);
    if (vt == DSPY_JSON_INT) return dspy_json_real((double)dspy_json_intval(v));
    if (strict) return type_error(t, v, loc, e);
    if (vt == DSPY_JSON_BOOL) return dspy_json_real(dspy_json_truthy(v) ? 1.0 : 0.0);
    if (vt == DSPY_JSON_STRING) {
        double d;
        if (parse_float_str(dspy_json_str(v), dspy_json_strlen(v), &d)) return dspy_json_real(d);
        add_err(e, loc, "float_parsing",
                "Input should be a valid number, unable to parse string as a number", v);
        return NULL;
    }
    return type_error(t, v, loc, e);
}

/* bool: lax also 0/1 and pydantic's yes/no words, case-insensitively. */
static dspy_json *validate_bool(const dspy_type *t, const dspy_json *v, bool strict, const char *loc, verrs *e) {
    dspy_json_type vt = dspy_json_typeof(v);
    if (vt == DSPY_JSON_BOOL) return dspy_json_incref((dspy_json *)v);
    if (strict) return type_error(t, v, loc, e);
    if (is_num(v)) {
        double d = dspy_json_number(v);
        if (d == 0.0 || d == 1.0) return dspy_json_bool(d == 1.0);
        add_err(e, loc, "bool_parsing", "Input should be a valid boolean, unable to interpret input", v);
        return NULL;
    }
    if (vt == DSPY_JSON_STRING) {
        dspy_strv s = dspy_strv_make(dspy_json_str(v), dspy_json_strlen(v));
        static const char *const yes[] = {"1", "on", "t", "true", "y", "yes"};
        static const char *const no[] = {"0", "off", "f", "false", "n", "no"};
        for (int i = 0; i < 6; i++) {
            if (str_ieq(s, yes[i])) return dspy_json_bool(true);
            if (str_ieq(s, no[i])) return dspy_json_bool(false);
        }
        add_err(e, loc, "bool_parsing", "Input should be a valid boolean, unable to interpret input", v);
        return NULL;
    }
    add_err(e, loc, "bool_type", "Input should be a valid boolean", v);
    return NULL;
}

/* list, set, frozenset, tuple: a JSON array (a fixed tuple also of the right length). */
static dspy_json *validate_sequence(const dspy_type *t, const dspy_json *v, bool strict, const char *loc, verrs *e) {
    dspy_json_type vt = dspy_json_typeof(v);
    if (vt != DSPY_JSON_ARRAY) {
        const char *ty = t->kind == DSPY_TYPE_LIST ? "list_type"
                         : t->kind == DSPY_TYPE_SET ? "set_type"
                         : t->kind == DSPY_TYPE_FROZENSET ? "frozen_set_type" : "tuple_type";
        const char *msg = t->kind == DSPY_TYPE_LIST ? "Input should be a valid list"
                          : t->kind == DSPY_TYPE_SET ? "Input should be a valid set"
                          : t->kind == DSPY_TYPE_FROZENSET ? "Input should be a valid frozenset"
                                                           : "Input should be a valid tuple";
        add_err(e, loc, ty, msg, v);
        return NULL;
    }
    if (t->kind == DSPY_TYPE_TUPLE && !t->variadic && t->nargs) {
        size_t n = dspy_json_size(v);
        if (n != t->nargs) {
            char msg[160];
            snprintf(msg, sizeof msg, "Tuple should have at %s %zu item%s after validation, not %zu",
                     n < t->nargs ? "least" : "most", t->nargs, t->nargs == 1 ? "" : "s", n);
            add_err(e, loc, n < t->nargs ? "too_short" : "too_long", msg, v);
            return NULL;
        }
    }
    return validate_seq(t, v, strict, loc, e);
}

/* dict[K, V]: each key validated as K (from its string) and each value as V. */
static dspy_json *validate_dict(const dspy_type *t, const dspy_json *v, bool strict, const char *loc, verrs *e) {
    if (dspy_json_typeof(v) != DSPY_JSON_OBJECT) {
        add_err(e, loc, "dict_type", "Input should be a valid dictionary", v);
        return NULL;
    }
    dspy_json *o = dspy_json_object();
    if (!o) return oom_json();
    int before = e->count;
    for (void *it = dspy_json_iter(v); it; it = dspy_json_next(v, it)) {
        const char *k = dspy_json_iter_key(it);
        dspy_json *kv = NULL, *vv = NULL;
        dspy_str cl = DSPY_STR_INIT;
        child_loc(loc, k, &cl);
        if (t->nargs == 2) {
            dspy_json *ks = dspy_json_string(k);
            if (!ks) {
                dspy_str_free(&cl);
                dspy_json_decref(o);
                return oom_json();
            }
            dspy_str kl = DSPY_STR_INIT;
            dspy_str_append(&kl, dspy_str_cstr(&cl));
            dspy_str_append(&kl, ".[key]");
            kv = validate(t->args[0], ks, strict, dspy_str_cstr(&kl), e);
            dspy_str_free(&kl);
            dspy_json_decref(ks);
            vv = validate(t->args[1], dspy_json_iter_value(it), strict, dspy_str_cstr(&cl), e);
        } else {
            vv = dspy_json_incref(dspy_json_iter_value(it));
        }
        dspy_str_free(&cl);
        if (vv && (t->nargs != 2 || kv)) {
            dspy_str key = DSPY_STR_INIT;
            if (kv) dspy_json_pystr(kv, &key);
            else dspy_str_append(&key, k);
            if (dspy_json_set(o, dspy_str_cstr(&key), vv)) {
                dspy_str_free(&key);
                dspy_json_decref(kv);
                dspy_json_decref(o);
                return oom_json();
            }
            vv = NULL;
            dspy_str_free(&key);
        }
        dspy_json_decref(kv);
        dspy_json_decref(vv);
    }
    if (e->count != before) {
        dspy_json_decref(o);
        return NULL;
    }
    return o;
}

/* Literal[...]: the first equal literal (numbers by value, 1 == 1.0; a bool equals only a bool),
 * returned as declared. */
static dspy_json *validate_literal(const dspy_type *t, const dspy_json *v, const char *loc, verrs *e) {
    for (size_t i = 0; i < dspy_json_size(t->literals); i++)
        if (literal_match(dspy_json_at(t->literals, i), v))
            return dspy_json_incref(dspy_json_at(t->literals, i));
    dspy_str msg = DSPY_STR_INIT;
    dspy_str_append(&msg, "Input should be ");
    size_t n = dspy_json_size(t->literals);
    for (size_t i = 0; i < n; i++) {
        if (i) dspy_str_append(&msg, i + 1 == n ? " or " : ", ");
        dspy_json_repr(dspy_json_at(t->literals, i), &msg);
    }
    add_err(e, loc, "literal_error", dspy_str_cstr(&msg), v);
    dspy_str_free(&msg);
    return NULL;
}

/* Union: pydantic's smart mode, an exact (strict) match of any member wins, else the first lax
 * success; the errors of every member when none matches. The caller's strictness does not
 * apply: the two passes decide it. */
static dspy_json *validate_union(const dspy_type *t, const dspy_json *v, const char *loc, verrs *e) {
    for (int pass = 0; pass < 2; pass++) {
        verrs sub = {DSPY_STR_INIT, 0};
        for (size_t i = 0; i < t->nargs; i++) {
            dspy_str name = DSPY_STR_INIT;
            dspy_type_name(t->args[i], DSPY_PROFILE_V33, &name);
            dspy_str cl = DSPY_STR_INIT;
            child_loc(loc, dspy_str_cstr(&name), &cl);
            dspy_json *x = validate(t->args[i], v, pass == 0, dspy_str_cstr(&cl), &sub);
            dspy_str_free(&name);
            dspy_str_free(&cl);
            if (x) {
                dspy_str_free(&sub.text);
                return x;
            }
        }
        if (pass == 1) {
            if (e->text.len && sub.text.len) dspy_str_appendc(&e->text, '\n');
            dspy_str_appendn(&e->text, sub.text.ptr ? sub.text.ptr : "", sub.text.len);
            e->count += sub.count;
        }
        dspy_str_free(&sub.text);
    }
    return NULL;
}

static dspy_json *validate(const dspy_type *t, const dspy_json *v, bool strict, const char *loc,
                           verrs *e) {
    dspy_json_type vt = dspy_json_typeof(v);
    switch (t->kind) {
    case DSPY_TYPE_ANY:
        return dspy_json_incref((dspy_json *)v);
    case DSPY_TYPE_STR:
        if (vt == DSPY_JSON_STRING) return dspy_json_incref((dspy_json *)v);
        add_err(e, loc, "string_type", "Input should be a valid string", v);
        return NULL;
    case DSPY_TYPE_BYTES:
        if (vt == DSPY_JSON_STRING) return dspy_json_incref((dspy_json *)v);
        add_err(e, loc, "bytes_type", "Input should be a valid bytes", v);
        return NULL;
    case DSPY_TYPE_NONE:
        if (vt == DSPY_JSON_NULL) return dspy_json_incref((dspy_json *)v);
        add_err(e, loc, "none_required", "Input should be None", v);
        return NULL;
    case DSPY_TYPE_INT: return validate_int(t, v, strict, loc, e);
    case DSPY_TYPE_FLOAT: return validate_float(t, v, strict, loc, e);
    case DSPY_TYPE_BOOL: return validate_bool(t, v, strict, loc, e);
    case DSPY_TYPE_LIST:
    case DSPY_TYPE_SET:
    case DSPY_TYPE_FROZENSET:
    case DSPY_TYPE_TUPLE: return validate_sequence(t, v, strict, loc, e);
    case DSPY_TYPE_DICT: return validate_dict(t, v, strict, loc, e);
    case DSPY_TYPE_LITERAL: return validate_literal(t, v, loc, e);
    case DSPY_TYPE_UNION: return validate_union(t, v, loc, e);
    }
    return type_error(t, v, loc, e);
}

dspy_status dspy_type_validate(const dspy_type *t, const dspy_json *value, dspy_json **out) {
    *out = NULL;
    verrs e = {DSPY_STR_INIT, 0};
    dspy_json *r = validate(t, value, false, "", &e);
    if (r) {
        dspy_str_free(&e.text);
        *out = r;
        return DSPY_OK;
    }
    if (!e.count || !dspy_str_ok(&e.text)) {
        dspy_str_free(&e.text);
        return dspy_fail(DSPY_ERR_NOMEM, "validation: out of memory");
    }
    dspy_str name = DSPY_STR_INIT;
    dspy_type_name(t, DSPY_PROFILE_V33, &name);
    dspy_status st = dspy_fail(DSPY_ERR_PARSE, "%d validation error%s for %s\n%s", e.count,
                               e.count == 1 ? "" : "s", dspy_str_cstr(&name),
                               dspy_str_cstr(&e.text));
    dspy_str_free(&name);
    dspy_str_free(&e.text);
    return st;
}

/* ---- parse_value --------------------------------------------------------------------------------- */

static bool has_kind(const dspy_type *t, dspy_type_kind k) {
    for (size_t i = 0; i < t->nargs; i++)
        if (t->args[i]->kind == k) return true;
    return false;
}

static dspy_status str_value(const dspy_json *value, dspy_json **out) {
    dspy_str s = DSPY_STR_INIT;
    dspy_json_pystr(value, &s);
    if (!dspy_str_ok(&s)) {
        dspy_str_free(&s);
        return dspy_fail(DSPY_ERR_NOMEM, "parse_value: out of memory");
    }
    *out = dspy_json_stringn(dspy_str_cstr(&s), s.len);
    dspy_str_free(&s);
    return *out ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "parse_value: out of memory");
}

static bool literal_in(const dspy_type *t, const dspy_json *v) {
    for (size_t i = 0; i < dspy_json_size(t->literals); i++)
        if (dspy_type_py_eq(dspy_json_at(t->literals, i), v)) return true;
    return false;
}

static dspy_status parse_literal_v33(const dspy_type *t, const dspy_json *value, dspy_json **out) {
    if (literal_in(t, value)) {
        *out = dspy_json_copy(value);
        return *out ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "parse_value: out of memory");
    }
    if (dspy_json_is_string(value)) {
        dspy_strv v = dspy_strv_strip(dspy_strv_make(dspy_json_str(value), dspy_json_strlen(value)));
        if ((dspy_strv_starts_with(v, "Literal[") || dspy_strv_starts_with(v, "str[")) &&
            dspy_strv_ends_with(v, "]")) {
            const char *b = memchr(v.ptr, '[', v.len);
            size_t off = (size_t)(b - v.ptr) + 1;
            v = dspy_strv_make(v.ptr + off, v.len - off - 1);
        }
        if (v.len > 1 && v.ptr[0] == v.ptr[v.len - 1] && (v.ptr[0] == '"' || v.ptr[0] == '\''))
            v = dspy_strv_make(v.ptr + 1, v.len - 2);
        dspy_json *cand = dspy_json_stringn(v.ptr, v.len);
        if (!cand) return dspy_fail(DSPY_ERR_NOMEM, "parse_value: out of memory");
        if (literal_in(t, cand)) {
            *out = cand;
            return DSPY_OK;
        }
        dspy_json_decref(cand);
    }
    dspy_str msg = DSPY_STR_INIT;
    dspy_json_repr(value, &msg);
    dspy_str_append(&msg, " is not one of ");
    dspy_type_literal_tuple_repr(t, &msg);
    dspy_status st = dspy_fail(DSPY_ERR_PARSE, "%s", dspy_str_cstr(&msg));
    dspy_str_free(&msg);
    return st;
}

dspy_status dspy_type_parse_value(const dspy_type *t, const dspy_json *value, dspy_profile p,
                                  dspy_json **out) {
    *out = NULL;
    if (t->kind == DSPY_TYPE_STR) return str_value(value, out);
    if (p == DSPY_PROFILE_V26) {
        if (!dspy_json_is_string(value)) return dspy_type_validate(t, value, out);
        const char *s = dspy_json_str(value);
        size_t n = dspy_json_strlen(value);
        dspy_json *cand = NULL;
        if (dspy_json_parse(s, n, NULL, &cand) != DSPY_OK) {
            dspy_errclear();
            if (dspy_py_literal_eval(s, n, &cand) != DSPY_OK) {
                dspy_errclear();
                cand = dspy_json_incref((dspy_json *)value);
            }
        }
        dspy_status st = dspy_type_validate(t, cand, out);
        dspy_json_decref(cand);
        return st;
    }
    if (t->kind == DSPY_TYPE_LITERAL) return parse_literal_v33(t, value, out);
    if (!dspy_json_is_string(value)) return dspy_type_validate(t, value, out);
    if (t->kind == DSPY_TYPE_UNION && has_kind(t, DSPY_TYPE_NONE) && has_kind(t, DSPY_TYPE_STR))
        return dspy_type_validate(t, value, out);
    const char *s = dspy_json_str(value);
    size_t n = dspy_json_strlen(value);
    dspy_json *cand = NULL;
    dspy_status st = dspy_json_repair_loads(s, n, &cand);
    if (st) return st;
    if (dspy_json_is_string(cand) && dspy_json_strlen(cand) == 0 && n != 0) {
        dspy_json_decref(cand);
        if (dspy_py_literal_eval(s, n, &cand) != DSPY_OK) {
            dspy_errclear();
            cand = dspy_json_incref((dspy_json *)value);
        }
    }
    st = dspy_type_validate(t, cand, out);
    dspy_json_decref(cand);
    return st;
}
