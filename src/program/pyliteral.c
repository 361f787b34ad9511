/* pyliteral.c — Python literal syntax and ast.literal_eval (see pyliteral.h). */
#include "program/pyliteral.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "program/pytext.h"

static dspy_status nomem(void) { return dspy_fail(DSPY_ERR_NOMEM, "literal_eval: out of memory"); }

void dspy_pyc_skip_ws(py_cursor *c) {
    while (c->pos < c->n) {
        char ch = c->s[c->pos];
        if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f') {
            c->pos++;
        } else if (ch == '\\' && c->pos + 1 < c->n && c->s[c->pos + 1] == '\n') {
            c->pos += 2;
        } else if (ch == '#') {
            while (c->pos < c->n && c->s[c->pos] != '\n') c->pos++;
        } else {
            break;
        }
    }
}

char dspy_pyc_peek(const py_cursor *c) { return c->pos < c->n ? c->s[c->pos] : '\0'; }

bool dspy_pyc_eat(py_cursor *c, const char *op) {
    size_t l = strlen(op);
    if (c->pos + l <= c->n && memcmp(c->s + c->pos, op, l) == 0) {
        c->pos += l;
        return true;
    }
    return false;
}

size_t dspy_pyc_name_len(const py_cursor *c) {
    const char *p = c->s + c->pos;
    size_t n = c->n - c->pos;
    size_t l = dspy_py_ident_start(p, n);
    if (!l) return 0;
    size_t i = l;
    while (i < n && (l = dspy_py_ident_continue(p + i, n - i)) > 0) i += l;
    return i;
}

/* Length of a string prefix (r, b, u, rb, br, any case) followed by a quote; SIZE_MAX if no
 * string starts here. f-strings report as strings so that the caller can reject them. */
static size_t string_prefix(const py_cursor *c, bool *raw, bool *bytes, bool *fstr) {
    *raw = *bytes = *fstr = false;
    size_t i = c->pos;
    for (int k = 0; k < 2 && i < c->n; k++) {
        char ch = c->s[i];
        if (ch == 'r' || ch == 'R') *raw = true;
        else if (ch == 'b' || ch == 'B') *bytes = true;
        else if (ch == 'f' || ch == 'F') *fstr = true;
        else if ((ch == 'u' || ch == 'U') && k == 0) {
        } else break;
        i++;
    }
    if (i < c->n && (c->s[i] == '\'' || c->s[i] == '"')) return i - c->pos;
    *raw = *bytes = *fstr = false;
    return (size_t)-1;
}

bool dspy_pyc_at_string(const py_cursor *c) {
    bool r, b, f;
    return string_prefix(c, &r, &b, &f) != (size_t)-1;
}

bool dspy_pyc_at_number(const py_cursor *c) {
    char ch = dspy_pyc_peek(c);
    if (ch >= '0' && ch <= '9') return true;
    return ch == '.' && c->pos + 1 < c->n && c->s[c->pos + 1] >= '0' && c->s[c->pos + 1] <= '9';
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

static void append_cp(dspy_str *out, unsigned cp) {
    char buf[4];
    int l = dspy_utf8_encode(cp, buf);
    dspy_str_appendn(out, buf, (size_t)l);
}

/* One literal (prefix + quotes) at the cursor. */
static dspy_status one_string(py_cursor *c, dspy_str *out) {
    bool raw, bytes, fstr;
    size_t start = c->pos;
    size_t pl = string_prefix(c, &raw, &bytes, &fstr);
    if (pl == (size_t)-1)
        return dspy_fail(DSPY_ERR_FORMAT, "column %zu: expected a string literal", start + 1);
    if (fstr)
        return dspy_fail(DSPY_ERR_FORMAT, "column %zu: f-strings are not literals", start + 1);
    c->pos += pl;
    char q = c->s[c->pos];
    bool triple = c->pos + 2 < c->n && c->s[c->pos + 1] == q && c->s[c->pos + 2] == q;
    c->pos += triple ? 3 : 1;
    for (;;) {
        if (c->pos >= c->n)
            return dspy_fail(DSPY_ERR_FORMAT, "column %zu: unterminated string literal",
                             start + 1);
        char ch = c->s[c->pos];
        if (ch == q) {
            if (!triple) {
                c->pos++;
                return DSPY_OK;
            }
            if (c->pos + 2 < c->n && c->s[c->pos + 1] == q && c->s[c->pos + 2] == q) {
                c->pos += 3;
                return DSPY_OK;
            }
        }
        if (ch == '\n' && !triple)
            return dspy_fail(DSPY_ERR_FORMAT, "column %zu: unterminated string literal",
                             start + 1);
        if (ch != '\\') {
            dspy_str_appendc(out, ch);
            c->pos++;
            continue;
        }
        if (c->pos + 1 >= c->n)
            return dspy_fail(DSPY_ERR_FORMAT, "column %zu: unterminated string literal",
                             start + 1);
        char e = c->s[c->pos + 1];
        if (raw) {
            dspy_str_appendc(out, '\\');
            dspy_str_appendc(out, e);
            c->pos += 2;
            continue;
        }
        c->pos += 2;
        switch (e) {
        case '\n': break;
        case '\\': dspy_str_appendc(out, '\\'); break;
        case '\'': dspy_str_appendc(out, '\''); break;
        case '"': dspy_str_appendc(out, '"'); break;
        case 'a': dspy_str_appendc(out, '\a'); break;
        case 'b': dspy_str_appendc(out, '\b'); break;
        case 'f': dspy_str_appendc(out, '\f'); break;
        case 'n': dspy_str_appendc(out, '\n'); break;
        case 'r': dspy_str_appendc(out, '\r'); break;
        case 't': dspy_str_appendc(out, '\t'); break;
        case 'v': dspy_str_appendc(out, '\v'); break;
        case 'x': case 'u': case 'U': {
            int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            if (bytes && e != 'x') {
                dspy_str_appendc(out, '\\');
                dspy_str_appendc(out, e);
                break;
            }
            unsigned cp = 0;
            for (int k = 0; k < digits; k++) {
                int h = c->pos < c->n ? hexval(c->s[c->pos]) : -1;
                if (h < 0)
                    return dspy_fail(DSPY_ERR_FORMAT,
                                     "column %zu: truncated \\%c escape in string literal",
                                     c->pos + 1, e);
                cp = cp * 16 + (unsigned)h;
                c->pos++;
            }
            if (cp > 0x10ffff)
                return dspy_fail(DSPY_ERR_FORMAT, "column %zu: illegal Unicode character",
                                 c->pos);
            append_cp(out, cp);
            break;
        }
        case 'N':
            return dspy_fail(DSPY_ERR_FORMAT,
                             "column %zu: \\N{...} escapes are not supported; write the "
                             "character itself", c->pos - 1);
        default:
            if (e >= '0' && e <= '7') {
                unsigned cp = (unsigned)(e - '0');
                for (int k = 0; k < 2 && c->pos < c->n && c->s[c->pos] >= '0' &&
                                c->s[c->pos] <= '7'; k++)
                    cp = cp * 8 + (unsigned)(c->s[c->pos++] - '0');
                append_cp(out, cp);
            } else {
                dspy_str_appendc(out, '\\');
                dspy_str_appendc(out, e);
            }
        }
    }
}

dspy_status dspy_pyc_string(py_cursor *c, dspy_str *out) {
    dspy_status st = one_string(c, out);
    if (st) return st;
    for (;;) {
        size_t save = c->pos;
        dspy_pyc_skip_ws(c);
        if (!dspy_pyc_at_string(c)) {
            c->pos = save;
            return dspy_str_ok(out) ? DSPY_OK
                                    : dspy_fail(DSPY_ERR_NOMEM, "string literal: out of memory");
        }
        st = one_string(c, out);
        if (st) return st;
    }
}

dspy_status dspy_pyc_number(py_cursor *c, dspy_json **out) {
    *out = NULL;
    size_t start = c->pos;
    char buf[128];
    size_t k = 0;
    int base = 10;
    bool is_float = false;
    const char *s = c->s;
    size_t n = c->n, i = c->pos;
    if (i + 1 < n && s[i] == '0' && strchr("xXoObB", s[i + 1])) {
        base = (s[i + 1] == 'x' || s[i + 1] == 'X') ? 16 : (s[i + 1] == 'o' || s[i + 1] == 'O') ? 8 : 2;
        i += 2;
        while (i < n && (hexval(s[i]) >= 0 || s[i] == '_') && k < sizeof buf - 1) {
            if (s[i] != '_') {
                if (hexval(s[i]) >= base) break;
                buf[k++] = s[i];
            }
            i++;
        }
    } else {
        while (i < n && k < sizeof buf - 1) {
            char ch = s[i];
            if ((ch >= '0' && ch <= '9')) buf[k++] = ch;
            else if (ch == '_' && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '9' && k > 0) {
            } else if (ch == '.' && !is_float) {
                is_float = true;
                buf[k++] = ch;
            } else if ((ch == 'e' || ch == 'E') && k > 0) {
                size_t j = i + 1;
                if (j < n && (s[j] == '+' || s[j] == '-')) j++;
                if (j >= n || s[j] < '0' || s[j] > '9') break;
                is_float = true;
                buf[k++] = 'e';
                if (s[i + 1] == '+' || s[i + 1] == '-') buf[k++] = s[++i];
            } else break;
            i++;
        }
    }
    buf[k] = '\0';
    if (i < n && (s[i] == 'j' || s[i] == 'J'))
        return dspy_fail(DSPY_ERR_FORMAT, "column %zu: complex numbers are not supported",
                         start + 1);
    if (k == 0)
        return dspy_fail(DSPY_ERR_FORMAT, "column %zu: malformed number literal", start + 1);
    if (i < n && dspy_py_ident_continue(s + i, n - i))
        return dspy_fail(DSPY_ERR_FORMAT, "column %zu: invalid number literal", start + 1);
    c->pos = i;
    if (is_float) {
        *out = dspy_json_real(strtod(buf, NULL));
    } else {
        if (base == 10 && k > 1 && buf[0] == '0') {
            for (size_t j = 0; j < k; j++)
                if (buf[j] != '0')
                    return dspy_fail(DSPY_ERR_FORMAT,
                                     "column %zu: leading zeros in decimal integer literals are "
                                     "not permitted", start + 1);
        }
        errno = 0;
        unsigned long long v = strtoull(buf, NULL, base);
        if (errno == ERANGE || v > (unsigned long long)INT64_MAX)
            return dspy_fail(DSPY_ERR_FORMAT,
                             "column %zu: integer literal does not fit in 64 bits", start + 1);
        *out = dspy_json_int((int64_t)v);
    }
    return *out ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "number literal: out of memory");
}

/* ---- literal_eval ------------------------------------------------------------------------------ */

static dspy_status lit_value(py_cursor *c, int depth, dspy_json **out);

static dspy_status not_literal(const py_cursor *c) {
    return dspy_fail(DSPY_ERR_PARSE, "malformed node or string at column %zu", c->pos + 1);
}

/* Python equality for set/dict-key de-duplication (1 == 1.0 == True). */
static bool py_eq(const dspy_json *a, const dspy_json *b) {
    dspy_json_type ta = dspy_json_typeof(a), tb = dspy_json_typeof(b);
    bool na = ta == DSPY_JSON_INT || ta == DSPY_JSON_REAL || ta == DSPY_JSON_BOOL;
    bool nb = tb == DSPY_JSON_INT || tb == DSPY_JSON_REAL || tb == DSPY_JSON_BOOL;
    if (na && nb) {
        double x = ta == DSPY_JSON_BOOL ? (dspy_json_truthy(a) ? 1 : 0) : dspy_json_number(a);
        double y = tb == DSPY_JSON_BOOL ? (dspy_json_truthy(b) ? 1 : 0) : dspy_json_number(b);
        return x == y;
    }
    return dspy_json_equal(a, b);
}

/* Items of a bracketed sequence up to `close`; sets `*saw_comma`. */
static dspy_status lit_items(py_cursor *c, int depth, char close, dspy_json *arr,
                             bool *saw_comma) {
    *saw_comma = false;
    for (;;) {
        dspy_pyc_skip_ws(c);
        if (dspy_pyc_peek(c) == close) {
            c->pos++;
            return DSPY_OK;
        }
        dspy_json *v;
        dspy_status st = lit_value(c, depth + 1, &v);
        if (st) return st;
        st = dspy_json_append(arr, v);
        if (st) return st;
        dspy_pyc_skip_ws(c);
        if (dspy_pyc_eat(c, ",")) {
            *saw_comma = true;
            continue;
        }
        if (dspy_pyc_peek(c) == close) {
            c->pos++;
            return DSPY_OK;
        }
        return not_literal(c);
    }
}

static dspy_status lit_dict_or_set(py_cursor *c, int depth, dspy_json **out) {
    dspy_json *obj = NULL, *arr = NULL, *k = NULL;
    dspy_status st = DSPY_OK;
    dspy_pyc_skip_ws(c);
    if (dspy_pyc_eat(c, "}")) {
        *out = dspy_json_object();
        return *out ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "literal_eval: out of memory");
    }
    st = lit_value(c, depth + 1, &k);
    if (st) return st;
    dspy_pyc_skip_ws(c);
    if (dspy_pyc_eat(c, ":")) {
        obj = dspy_json_object();
        if (!obj) {
            st = nomem();
            goto fail;
        }
        for (;;) {
            if (!dspy_json_is_string(k)) {
                /* Non-string keys have no JSON form; keep their Python str(). */
                dspy_str ks = DSPY_STR_INIT;
                dspy_json_pystr(k, &ks);
                dspy_json_decref(k);
                k = dspy_json_string(dspy_str_cstr(&ks));
                dspy_str_free(&ks);
                if (!k) {
                    st = nomem();
                    goto fail;
                }
            }
            dspy_json *v;
            st = lit_value(c, depth + 1, &v);
            if (st) goto fail;
            st = dspy_json_set(obj, dspy_json_str(k), v);
            if (st) goto fail;
            dspy_json_decref(k);
            k = NULL;
            dspy_pyc_skip_ws(c);
            bool comma = dspy_pyc_eat(c, ",");
            dspy_pyc_skip_ws(c);
            if (dspy_pyc_eat(c, "}")) break;
            if (!comma) {
                st = not_literal(c);
                goto fail;
            }
            st = lit_value(c, depth + 1, &k);
            if (st) goto fail;
            dspy_pyc_skip_ws(c);
            if (!dspy_pyc_eat(c, ":")) {
                st = not_literal(c);
                goto fail;
            }
        }
        *out = obj;
        return DSPY_OK;
    }
    /* a set */
    arr = dspy_json_array();
    if (!arr) {
        st = nomem();
        goto fail;
    }
    st = dspy_json_append(arr, k);
    k = NULL;
    if (st) goto fail;
    dspy_pyc_skip_ws(c);
    if (dspy_pyc_eat(c, ",")) {
        bool comma;
        st = lit_items(c, depth, '}', arr, &comma);
        if (st) goto fail;
    } else if (!dspy_pyc_eat(c, "}")) {
        st = not_literal(c);
        goto fail;
    }
    {
        dspy_json *uniq = dspy_json_array();
        if (!uniq) {
            st = nomem();
            goto fail;
        }
        for (size_t i = 0; i < dspy_json_size(arr); i++) {
            dspy_json *x = dspy_json_at(arr, i);
            bool seen = false;
            for (size_t j = 0; j < dspy_json_size(uniq) && !seen; j++)
                seen = py_eq(dspy_json_at(uniq, j), x);
            if (!seen && dspy_json_append(uniq, dspy_json_incref(x))) {
                dspy_json_decref(uniq);
                st = nomem();
                goto fail;
            }
        }
        dspy_json_decref(arr);
        *out = uniq;
    }
    return DSPY_OK;
fail:
    dspy_json_decref(obj);
    dspy_json_decref(arr);
    dspy_json_decref(k);
    return st;
}

static dspy_status lit_value(py_cursor *c, int depth, dspy_json **out) {
    *out = NULL;
    if (depth > 200) return dspy_fail(DSPY_ERR_PARSE, "literal nested too deeply");
    dspy_pyc_skip_ws(c);
    char ch = dspy_pyc_peek(c);
    if (dspy_pyc_at_string(c)) {
        dspy_str s = DSPY_STR_INIT;
        dspy_status st = dspy_pyc_string(c, &s);
        if (st == DSPY_OK) {
            *out = dspy_json_stringn(dspy_str_cstr(&s), s.len);
            if (!*out) st = nomem();
        } else {
            st = dspy_fail(DSPY_ERR_PARSE, "%s", dspy_errmsg());
        }
        dspy_str_free(&s);
        return st;
    }
    if (ch == '+' || ch == '-') {
        c->pos++;
        dspy_pyc_skip_ws(c);
        dspy_json *v;
        if (dspy_pyc_at_number(c)) {
            if (dspy_pyc_number(c, &v)) return dspy_fail(DSPY_ERR_PARSE, "%s", dspy_errmsg());
        } else if (dspy_pyc_peek(c) == '+' || dspy_pyc_peek(c) == '-') {
            dspy_status st = lit_value(c, depth + 1, &v);
            if (st) return st;
            if (!dspy_json_is_number(v) || dspy_json_typeof(v) == DSPY_JSON_BOOL) {
                dspy_json_decref(v);
                return not_literal(c);
            }
        } else {
            return not_literal(c);
        }
        if (ch == '-') {
            dspy_json *neg = dspy_json_typeof(v) == DSPY_JSON_INT ? dspy_json_int(-dspy_json_intval(v))
                                                                   : dspy_json_real(-dspy_json_number(v));
            dspy_json_decref(v);
            v = neg;
        }
        *out = v;
        return v ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "literal_eval: out of memory");
    }
    if (dspy_pyc_at_number(c)) {
        if (dspy_pyc_number(c, out)) return dspy_fail(DSPY_ERR_PARSE, "%s", dspy_errmsg());
        return DSPY_OK;
    }
    size_t nl = dspy_pyc_name_len(c);
    if (nl) {
        const char *p = c->s + c->pos;
        if (nl == 4 && memcmp(p, "True", 4) == 0) *out = dspy_json_bool(true);
        else if (nl == 5 && memcmp(p, "False", 5) == 0) *out = dspy_json_bool(false);
        else if (nl == 4 && memcmp(p, "None", 4) == 0) *out = dspy_json_null();
        else return not_literal(c);
        c->pos += nl;
        return DSPY_OK;
    }
    if (ch == '[' || ch == '(') {
        c->pos++;
        dspy_json *arr = dspy_json_array();
        if (!arr) return dspy_fail(DSPY_ERR_NOMEM, "literal_eval: out of memory");
        bool comma;
        dspy_status st = lit_items(c, depth, ch == '[' ? ']' : ')', arr, &comma);
        if (st) {
            dspy_json_decref(arr);
            return st;
        }
        if (ch == '(' && dspy_json_size(arr) == 1 && !comma) {
            /* (x) is x, not a tuple */
            dspy_json *x = dspy_json_incref(dspy_json_at(arr, 0));
            dspy_json_decref(arr);
            arr = x;
        }
        *out = arr;
        return DSPY_OK;
    }
    if (ch == '{') {
        c->pos++;
        return lit_dict_or_set(c, depth, out);
    }
    return not_literal(c);
}

dspy_status dspy_py_literal_eval(const char *s, size_t n, dspy_json **out) {
    *out = NULL;
    py_cursor c = {s, n, 0};
    while (c.pos < n && (s[c.pos] == ' ' || s[c.pos] == '\t')) c.pos++;
    if (c.pos < n && (s[c.pos] == '\n' || s[c.pos] == '\r'))
        return dspy_fail(DSPY_ERR_PARSE, "malformed node or string: unexpected indentation");
    dspy_json *v;
    dspy_status st = lit_value(&c, 0, &v);
    if (st) return st;
    /* A bare top-level tuple: "1, 2" */
    dspy_pyc_skip_ws(&c);
    if (dspy_pyc_peek(&c) == ',') {
        dspy_json *arr = dspy_json_array();
        if (!arr || dspy_json_append(arr, v)) {
            dspy_json_decref(arr);
            return dspy_fail(DSPY_ERR_NOMEM, "literal_eval: out of memory");
        }
        v = arr;
        while (dspy_pyc_eat(&c, ",")) {
            dspy_pyc_skip_ws(&c);
            if (c.pos >= n) break;
            dspy_json *x;
            st = lit_value(&c, 1, &x);
            if (st || dspy_json_append(v, x)) {
                dspy_json_decref(v);
                return st ? st : dspy_fail(DSPY_ERR_NOMEM, "literal_eval: out of memory");
            }
            dspy_pyc_skip_ws(&c);
        }
    }
    dspy_pyc_skip_ws(&c);
    if (c.pos < n) {
        dspy_json_decref(v);
        return not_literal(&c);
    }
    *out = v;
    return DSPY_OK;
}

