/* json.c — dspy/json.h on top of jansson, with Python-compatible writers.
 *
 * jansson parses and holds values (insertion-ordered objects, 64-bit ints). Serialisation is
 * our own so that bytes match Python's json.dumps / repr (float repr, separators, escapes),
 * which jansson's writer does not (it prints 0.1 as 0.10000000000000001).
 */
#include "dspy/json.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json_parse.h"

#define J(v) ((json_t *)(v))
#define D(v) ((dspy_json *)(v))

dspy_status dspy_json_parse(const char *text, size_t len, const char *name, dspy_json **out) {
    json_error_t err;
    *out = NULL;
    /* the common case at ~7x jansson's speed (json_parse.c); jansson takes the rest and explains errors */
    json_t *v = text ? dspy_json_parse_fast(text, len) : NULL;
    if (v) {
        *out = D(v);
        return DSPY_OK;
    }
    v = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!v)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: line %d, column %d: invalid JSON: %s",
                         name ? name : "<json>", err.line, err.column, err.text);
    *out = D(v);
    return DSPY_OK;
}

dspy_status dspy_json_load(const char *path, dspy_json **out) {
    char *buf;
    size_t n;
    *out = NULL;
    dspy_status st = dspy_read_file(path, &buf, &n);
    if (st) return st;
    st = dspy_json_parse(buf, n, path, out);
    free(buf);
    return st;
}

dspy_json *dspy_json_null(void) { return D(json_null()); }
dspy_json *dspy_json_bool(bool b) { return D(json_boolean(b)); }
dspy_json *dspy_json_int(int64_t v) { return D(json_integer((json_int_t)v)); }
dspy_json *dspy_json_real(double v) { return D(json_real(v)); }
dspy_json *dspy_json_string(const char *s) { return D(json_stringn_nocheck(s, strlen(s))); }
dspy_json *dspy_json_stringn(const char *s, size_t n) { return D(json_stringn_nocheck(s, n)); }
dspy_json *dspy_json_array(void) { return D(json_array()); }
dspy_json *dspy_json_object(void) { return D(json_object()); }
dspy_json *dspy_json_incref(dspy_json *v) { return D(json_incref(J(v))); }
void dspy_json_decref(dspy_json *v) {
    if (v) json_decref(J(v));
}
dspy_json *dspy_json_copy(const dspy_json *v) { return D(json_deep_copy(J(v))); }

bool dspy_json_equal(const dspy_json *a, const dspy_json *b) {
    if (!a || !b) return a == b;
    json_t *x = J(a), *y = J(b);
    if (json_is_number(x) && json_is_number(y)) {
        if (json_is_integer(x) && json_is_integer(y)) return json_integer_value(x) == json_integer_value(y);
        return json_number_value(x) == json_number_value(y);
    }
    if (json_typeof(x) != json_typeof(y)) return false;
    if (json_is_array(x)) {
        if (json_array_size(x) != json_array_size(y)) return false;
        for (size_t i = 0; i < json_array_size(x); i++)
            if (!dspy_json_equal(D(json_array_get(x, i)), D(json_array_get(y, i)))) return false;
        return true;
    }
    if (json_is_object(x)) {
        if (json_object_size(x) != json_object_size(y)) return false;
        const char *key;
        json_t *val;
        json_object_foreach(x, key, val) {
            json_t *other = json_object_get(y, key);
            if (!other || !dspy_json_equal(D(val), D(other))) return false;
        }
        return true;
    }
    return json_equal(x, y);
}

dspy_json_type dspy_json_typeof(const dspy_json *v) {
    switch (json_typeof(J(v))) {
    case JSON_OBJECT: return DSPY_JSON_OBJECT;
    case JSON_ARRAY: return DSPY_JSON_ARRAY;
    case JSON_STRING: return DSPY_JSON_STRING;
    case JSON_INTEGER: return DSPY_JSON_INT;
    case JSON_REAL: return DSPY_JSON_REAL;
    case JSON_TRUE:
    case JSON_FALSE: return DSPY_JSON_BOOL;
    case JSON_NULL: return DSPY_JSON_NULL;
    }
    return DSPY_JSON_NULL;
}

bool dspy_json_is_string(const dspy_json *v) { return v && json_is_string(J(v)); }
bool dspy_json_is_number(const dspy_json *v) { return v && json_is_number(J(v)); }
const char *dspy_json_str(const dspy_json *v) { return v ? json_string_value(J(v)) : NULL; }
size_t dspy_json_strlen(const dspy_json *v) { return v && json_is_string(J(v)) ? json_string_length(J(v)) : 0; }
int64_t dspy_json_intval(const dspy_json *v) {
    if (!v) return 0;
    if (json_is_integer(J(v))) return json_integer_value(J(v));
    if (json_is_real(J(v))) return (int64_t)json_real_value(J(v));
    return 0;
}
double dspy_json_number(const dspy_json *v) { return v ? json_number_value(J(v)) : 0.0; }

bool dspy_json_truthy(const dspy_json *v) {
    if (!v) return false;
    switch (json_typeof(J(v))) {
    case JSON_NULL:
    case JSON_FALSE: return false;
    case JSON_TRUE: return true;
    case JSON_INTEGER: return json_integer_value(J(v)) != 0;
    case JSON_REAL: return json_real_value(J(v)) != 0.0;
    case JSON_STRING: return json_string_length(J(v)) != 0;
    case JSON_ARRAY: return json_array_size(J(v)) != 0;
    case JSON_OBJECT: return json_object_size(J(v)) != 0;
    }
    return false;
}

dspy_json *dspy_json_get(const dspy_json *obj, const char *key) {
    return obj && json_is_object(J(obj)) ? D(json_object_get(J(obj), key)) : NULL;
}

dspy_status dspy_json_set(dspy_json *obj, const char *key, dspy_json *val) {
    if (!val) return dspy_fail(DSPY_ERR_NOMEM, "json: out of memory setting \"%s\"", key);
    if (!obj || !json_is_object(J(obj))) {
        json_decref(J(val));
        return dspy_fail(DSPY_ERR_ARG, "json: cannot set \"%s\" on a non-object", key);
    }
    if (json_object_set_new(J(obj), key, J(val)) != 0)
        return dspy_fail(DSPY_ERR_NOMEM, "json: cannot set \"%s\"", key);
    return DSPY_OK;
}

dspy_status dspy_json_set_str(dspy_json *obj, const char *key, const char *s) {
    return dspy_json_set(obj, key, dspy_json_string(s));
}

dspy_status dspy_json_del(dspy_json *obj, const char *key) {
    if (!obj || json_object_del(J(obj), key) != 0)
        return dspy_fail(DSPY_ERR_NOTFOUND, "json: no key \"%s\" to delete", key);
    return DSPY_OK;
}

size_t dspy_json_size(const dspy_json *v) {
    if (!v) return 0;
    if (json_is_object(J(v))) return json_object_size(J(v));
    if (json_is_array(J(v))) return json_array_size(J(v));
    return 0;
}

void *dspy_json_iter(const dspy_json *obj) { return obj ? json_object_iter(J(obj)) : NULL; }
void *dspy_json_next(const dspy_json *obj, void *it) { return json_object_iter_next(J(obj), it); }
const char *dspy_json_iter_key(void *it) { return json_object_iter_key(it); }
dspy_json *dspy_json_iter_value(void *it) { return D(json_object_iter_value(it)); }

dspy_json *dspy_json_at(const dspy_json *arr, size_t i) {
    return arr && json_is_array(J(arr)) ? D(json_array_get(J(arr), i)) : NULL;
}

dspy_status dspy_json_append(dspy_json *arr, dspy_json *val) {
    if (!val) return dspy_fail(DSPY_ERR_NOMEM, "json: out of memory appending");
    if (!arr || !json_is_array(J(arr))) {
        json_decref(J(val));
        return dspy_fail(DSPY_ERR_ARG, "json: cannot append to a non-array");
    }
    if (json_array_append_new(J(arr), J(val)) != 0) return dspy_fail(DSPY_ERR_NOMEM, "json: cannot append");
    return DSPY_OK;
}

dspy_status dspy_json_get_int(const dspy_json *obj, const char *key, const char *where, int64_t *out) {
    json_t *v = J(dspy_json_get(obj, key));
    if (!v) return dspy_fail(DSPY_ERR_NOTFOUND, "%s: missing \"%s\"", where, key);
    if (!json_is_integer(v)) return dspy_fail(DSPY_ERR_FORMAT, "%s: \"%s\" must be an integer", where, key);
    *out = json_integer_value(v);
    return DSPY_OK;
}

dspy_status dspy_json_get_num(const dspy_json *obj, const char *key, const char *where, double *out) {
    json_t *v = J(dspy_json_get(obj, key));
    if (!v) return dspy_fail(DSPY_ERR_NOTFOUND, "%s: missing \"%s\"", where, key);
    if (!json_is_number(v)) return dspy_fail(DSPY_ERR_FORMAT, "%s: \"%s\" must be a number", where, key);
    *out = json_number_value(v);
    return DSPY_OK;
}

dspy_status dspy_json_get_strv(const dspy_json *obj, const char *key, const char *where, const char **out) {
    json_t *v = J(dspy_json_get(obj, key));
    if (!v) return dspy_fail(DSPY_ERR_NOTFOUND, "%s: missing \"%s\"", where, key);
    if (!json_is_string(v)) return dspy_fail(DSPY_ERR_FORMAT, "%s: \"%s\" must be a string", where, key);
    *out = json_string_value(v);
    return DSPY_OK;
}

int64_t dspy_json_int_or(const dspy_json *obj, const char *key, int64_t def) {
    json_t *v = J(dspy_json_get(obj, key));
    return v && json_is_integer(v) ? json_integer_value(v) : def;
}
double dspy_json_num_or(const dspy_json *obj, const char *key, double def) {
    json_t *v = J(dspy_json_get(obj, key));
    return v && json_is_number(v) ? json_number_value(v) : def;
}
const char *dspy_json_str_or(const dspy_json *obj, const char *key, const char *def) {
    json_t *v = J(dspy_json_get(obj, key));
    return v && json_is_string(v) ? json_string_value(v) : def;
}
bool dspy_json_bool_or(const dspy_json *obj, const char *key, bool def) {
    json_t *v = J(dspy_json_get(obj, key));
    return v && json_is_boolean(v) ? json_is_true(v) : def;
}

/* ---- Python float repr ------------------------------------------------------------------- */

void dspy_py_float_repr(double x, char *buf, size_t cap) {
    if (isnan(x)) {
        snprintf(buf, cap, "nan");
        return;
    }
    if (isinf(x)) {
        snprintf(buf, cap, x > 0 ? "inf" : "-inf");
        return;
    }
    if (x == 0.0) {
        snprintf(buf, cap, signbit(x) ? "-0.0" : "0.0");
        return;
    }
    /* Shortest %.{p}e that round-trips: digits d.ddd and decimal exponent e. */
    char tmp[40];
    int p;
    for (p = 0; p < 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*e", p, x);
        if (strtod(tmp, NULL) == x) break;
    }
    const char *s = tmp;
    bool neg = false;
    if (*s == '-') {
        neg = true;
        s++;
    }
    char digits[24];
    int nd = 0;
    for (; *s && *s != 'e'; s++)
        if (*s >= '0' && *s <= '9') digits[nd++] = *s;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = '\0';
    int e = atoi(s + 1);
    char *o = buf;
    size_t left = cap;
#define PUT(...)                                      \
    do {                                              \
        int w_ = snprintf(o, left, __VA_ARGS__);      \
        if (w_ < 0 || (size_t)w_ >= left) return;     \
        o += w_;                                      \
        left -= (size_t)w_;                           \
    } while (0)
    if (neg) PUT("-");
    if (e < -4 || e >= 16) {
        PUT("%c", digits[0]);
        if (nd > 1) PUT(".%s", digits + 1);
        PUT("e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    } else if (e < 0) {
        PUT("0.");
        for (int i = 0; i < -e - 1; i++) PUT("0");
        PUT("%s", digits);
    } else {
        for (int i = 0; i <= e; i++) PUT("%c", i < nd ? digits[i] : '0');
        PUT(".");
        if (nd > e + 1) PUT("%s", digits + e + 1);
        else PUT("0");
    }
#undef PUT
}

/* ---- json.dumps ---------------------------------------------------------------------------- */

static void dump_string(const char *s, size_t n, bool ascii, dspy_str *out) {
    dspy_str_appendc(out, '"');
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        }
        if (esc) {
            dspy_str_append(out, esc);
            i++;
        } else if (c < 0x20 || (c == 0x7f && ascii)) {
            dspy_str_appendf(out, "\\u%04x", c);
            i++;
        } else if (c < 0x80 || !ascii) {
            size_t j = i + 1;
            while (j < n && (unsigned char)s[j] >= 0x20 && s[j] != '"' && s[j] != '\\' &&
                   (!ascii || (unsigned char)s[j] < 0x7f))
                j++;
            dspy_str_appendn(out, s + i, j - i);
            i = j;
        } else {
            unsigned cp;
            int l = dspy_utf8_decode(s + i, n - i, &cp);
            if (l == 0) { /* invalid byte: Python would have failed earlier; escape the byte */
                dspy_str_appendf(out, "\\u%04x", c);
                i++;
                continue;
            }
            if (cp >= 0x10000) {
                unsigned v = cp - 0x10000;
                dspy_str_appendf(out, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
            } else {
                dspy_str_appendf(out, "\\u%04x", cp);
            }
            i += (size_t)l;
        }
    }
    dspy_str_appendc(out, '"');
}

void dspy_json_quote(const char *s, size_t n, dspy_str *out) { dump_string(s, n, false, out); }

static void dump_real(double x, dspy_str *out) {
    if (isnan(x)) dspy_str_append(out, "NaN");
    else if (isinf(x)) dspy_str_append(out, x > 0 ? "Infinity" : "-Infinity");
    else {
        char b[40];
        dspy_py_float_repr(x, b, sizeof b);
        dspy_str_append(out, b);
    }
}

static void newline_indent(dspy_str *out, int indent, int depth) {
    dspy_str_appendc(out, '\n');
    for (int i = 0; i < indent * depth; i++) dspy_str_appendc(out, ' ');
}

typedef struct {
    const char *key;
    json_t *val;
} kv;

static int kv_cmp(const void *a, const void *b) {
    return strcmp(((const kv *)a)->key, ((const kv *)b)->key);
}

static void dump_value(json_t *v, int flags, int depth, dspy_str *out) {
    bool ascii = !(flags & DSPY_JSON_UTF8);
    int indent = (flags >> 8) & 0x1F;
    const char *item_sep = indent ? "," : (flags & DSPY_JSON_COMPACT) ? "," : ", ";
    const char *key_sep = (flags & DSPY_JSON_COMPACT) && !indent ? ":" : ": ";
    switch (json_typeof(v)) {
    case JSON_NULL: dspy_str_append(out, "null"); break;
    case JSON_TRUE: dspy_str_append(out, "true"); break;
    case JSON_FALSE: dspy_str_append(out, "false"); break;
    case JSON_INTEGER: dspy_str_appendf(out, "%lld", (long long)json_integer_value(v)); break;
    case JSON_REAL: dump_real(json_real_value(v), out); break;
    case JSON_STRING: dump_string(json_string_value(v), json_string_length(v), ascii, out); break;
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (n == 0) {
            dspy_str_append(out, "[]");
            break;
        }
        dspy_str_appendc(out, '[');
        for (size_t i = 0; i < n; i++) {
            if (i) dspy_str_append(out, item_sep);
            if (indent) newline_indent(out, indent, depth + 1);
            dump_value(json_array_get(v, i), flags, depth + 1, out);
        }
        if (indent) newline_indent(out, indent, depth);
        dspy_str_appendc(out, ']');
        break;
    }
    case JSON_OBJECT: {
        size_t n = json_object_size(v);
        if (n == 0) {
            dspy_str_append(out, "{}");
            break;
        }
        kv *items = malloc(n * sizeof *items);
        if (!items) {
            out->failed = true;
            return;
        }
        size_t k = 0;
        const char *key;
        json_t *val;
        json_object_foreach(v, key, val) {
            items[k].key = key;
            items[k].val = val;
            k++;
        }
        if (flags & DSPY_JSON_SORT_KEYS) qsort(items, k, sizeof *items, kv_cmp);
        dspy_str_appendc(out, '{');
        for (size_t i = 0; i < k; i++) {
            if (i) dspy_str_append(out, item_sep);
            if (indent) newline_indent(out, indent, depth + 1);
            dump_string(items[i].key, strlen(items[i].key), ascii, out);
            dspy_str_append(out, key_sep);
            dump_value(items[i].val, flags, depth + 1, out);
        }
        free(items);
        if (indent) newline_indent(out, indent, depth);
        dspy_str_appendc(out, '}');
        break;
    }
    }
}

dspy_status dspy_json_dump(const dspy_json *v, int flags, dspy_str *out) {
    dump_value(J(v), flags, 0, out);
    if (!dspy_str_ok(out)) return dspy_fail(DSPY_ERR_NOMEM, "json: out of memory serialising");
    return DSPY_OK;
}

char *dspy_json_dumps(const dspy_json *v, int flags) {
    dspy_str s = DSPY_STR_INIT;
    if (dspy_json_dump(v, flags, &s)) {
        dspy_str_free(&s);
        return NULL;
    }
    return dspy_str_take(&s);
}

/* ---- Python repr ----------------------------------------------------------------------------- */

#include "py_unprintable.h"

/* Python's str.isprintable() is false: ASCII controls, or a range of CPython 3.11's table. */
static bool py_nonprintable(unsigned cp) {
    if (cp < 0x20 || cp == 0x7f) return true;
    if (cp < 0x80) return false;
    size_t lo = 0, hi = sizeof k_py_unprintable / sizeof k_py_unprintable[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < k_py_unprintable[mid][0]) hi = mid;
        else if (cp > k_py_unprintable[mid][1]) lo = mid + 1;
        else return true;
    }
    return false;
}

void dspy_py_repr_str(const char *s, size_t n, dspy_str *out) {
    bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = (has_sq && !has_dq) ? '"' : '\'';
    dspy_str_appendc(out, q);
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c == (unsigned char)q || c == '\\') {
            dspy_str_appendc(out, '\\');
            dspy_str_appendc(out, (char)c);
            i++;
        } else if (c == '\n') { dspy_str_append(out, "\\n"); i++; }
        else if (c == '\r') { dspy_str_append(out, "\\r"); i++; }
        else if (c == '\t') { dspy_str_append(out, "\\t"); i++; }
        else if (c < 0x20 || c == 0x7f) { dspy_str_appendf(out, "\\x%02x", c); i++; }
        else if (c < 0x80) { dspy_str_appendc(out, (char)c); i++; }
        else {
            unsigned cp;
            int l = dspy_utf8_decode(s + i, n - i, &cp);
            if (l == 0) { dspy_str_appendf(out, "\\x%02x", c); i++; continue; }
            if (py_nonprintable(cp)) {
                if (cp <= 0xff) dspy_str_appendf(out, "\\x%02x", cp);
                else if (cp <= 0xffff) dspy_str_appendf(out, "\\u%04x", cp);
                else dspy_str_appendf(out, "\\U%08x", cp);
            } else {
                dspy_str_appendn(out, s + i, (size_t)l);
            }
            i += (size_t)l;
        }
    }
    dspy_str_appendc(out, q);
}

void dspy_json_repr(const dspy_json *v, dspy_str *out) {
    json_t *j = J(v);
    switch (json_typeof(j)) {
    case JSON_NULL: dspy_str_append(out, "None"); break;
    case JSON_TRUE: dspy_str_append(out, "True"); break;
    case JSON_FALSE: dspy_str_append(out, "False"); break;
    case JSON_INTEGER: dspy_str_appendf(out, "%lld", (long long)json_integer_value(j)); break;
    case JSON_REAL: {
        char b[40];
        dspy_py_float_repr(json_real_value(j), b, sizeof b);
        dspy_str_append(out, b);
        break;
    }
    case JSON_STRING: dspy_py_repr_str(json_string_value(j), json_string_length(j), out); break;
    case JSON_ARRAY:
        dspy_str_appendc(out, '[');
        for (size_t i = 0; i < json_array_size(j); i++) {
            if (i) dspy_str_append(out, ", ");
            dspy_json_repr(D(json_array_get(j, i)), out);
        }
        dspy_str_appendc(out, ']');
        break;
    case JSON_OBJECT: {
        const char *key;
        json_t *val;
        bool first = true;
        dspy_str_appendc(out, '{');
        json_object_foreach(j, key, val) {
            if (!first) dspy_str_append(out, ", ");
            first = false;
            dspy_py_repr_str(key, strlen(key), out);
            dspy_str_append(out, ": ");
            dspy_json_repr(D(val), out);
        }
        dspy_str_appendc(out, '}');
        break;
    }
    }
}

void dspy_json_pystr(const dspy_json *v, dspy_str *out) {
    if (json_is_string(J(v))) dspy_str_appendn(out, json_string_value(J(v)), json_string_length(J(v)));
    else dspy_json_repr(v, out);
}
