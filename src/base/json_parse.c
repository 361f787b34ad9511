/* json_parse.c — a fast reader for the common JSON (see json_parse.h).
 *
 * Why: jansson's reader takes ~190 ns a number (a character at a time through its stream
 * layer, each token copied into a buffer before conversion): a completions request whose
 * prompt is 1,500 token ids took ~0.3-0.4 ms to parse, on the path of every request the
 * server answers (B2's waves on the H200 wait for it). This one walks the bytes once and builds
 * the same jansson values with jansson's own constructors, so the tree (insertion order, a
 * repeated key's value replacing the first in its place) is the one json_loadb builds.
 *
 * It handles what jansson accepts in the common case and gives up (NULL, nothing built)
 * on anything else, so the caller asks jansson, which then parses or explains the error:
 * invalid UTF-8 inside a string (each sequence is checked by the rule jansson's stream applies,
 * RFC 3629's; bytes >= 0x80 outside strings are syntax errors either way), \u0000, lone or
 * reversed surrogates, integers of more than 18 digits, reals that do not convert to a finite
 * double, nesting over MAX_DEPTH, and every syntax error. The differential fuzz target
 * (fuzz_json) and test_json check it against json_loadb.
 */
#include "base/json_parse.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/str.h"

enum { MAX_DEPTH = 256 };

typedef struct rd {
    const char *p, *end;
    char *buf; /* unescaped string bytes (grows) */
    size_t cap;
} rd;

static void skip_ws(rd *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t')) r->p++;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* \uXXXX at r->p (after the backslash and u): its 16-bit value, or -1. */
static int32_t hex4(rd *r) {
    if (r->end - r->p < 4) return -1;
    int32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(r->p[i]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    r->p += 4;
    return v;
}

static bool put(rd *r, size_t *n, const char *s, size_t k) {
    if (*n + k > r->cap) {
        size_t c = r->cap ? r->cap : 256;
        while (c < *n + k) c *= 2;
        char *b = realloc(r->buf, c);
        if (!b) return false;
        r->buf = b, r->cap = c;
    }
    memcpy(r->buf + *n, s, k);
    *n += k;
    return true;
}

/* A string at r->p (after its opening quote): its bytes, unescaped, in r->buf[0 .. *len).
 * Whether it is one this reader takes (see the top). */
static bool read_string(rd *r, size_t *len) {
    size_t n = 0;
    for (;;) {
        const char *s = r->p;
        while (r->p < r->end && *r->p != '"' && *r->p != '\\' && (unsigned char)*r->p >= 0x20) {
            if ((unsigned char)*r->p < 0x80) {
                r->p++;
                continue;
            }
            /* a UTF-8 sequence, taken whole when jansson's stream would take it (RFC 3629: no
             * overlongs, no surrogates, nothing past U+10FFFF; dspy_utf8_decode's rule) */
            unsigned cp;
            const int k = dspy_utf8_decode(r->p, (size_t)(r->end - r->p), &cp);
            if (k == 0) return false;
            r->p += k;
        }
        if (r->p > s && !put(r, &n, s, (size_t)(r->p - s))) return false;
        if (r->p >= r->end) return false;
        const char c = *r->p++;
        if (c == '"') break;
        if (c != '\\' || r->p >= r->end) return false; /* a control character */
        const char e = *r->p++;
        char out[4];
        size_t k = 1;
        switch (e) {
        case '"': out[0] = '"'; break;
        case '\\': out[0] = '\\'; break;
        case '/': out[0] = '/'; break;
        case 'b': out[0] = '\b'; break;
        case 'f': out[0] = '\f'; break;
        case 'n': out[0] = '\n'; break;
        case 'r': out[0] = '\r'; break;
        case 't': out[0] = '\t'; break;
        case 'u': {
            int32_t u = hex4(r);
            if (u <= 0 || (u >= 0xDC00 && u <= 0xDFFF)) return false; /* \u0000, a lone low surrogate */
            if (u >= 0xD800 && u <= 0xDBFF) {
                if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u') return false;
                r->p += 2;
                int32_t lo = hex4(r);
                if (lo < 0xDC00 || lo > 0xDFFF) return false;
                u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            }
            k = (size_t)dspy_utf8_encode((unsigned)u, out);
            break;
        }
        default: return false;
        }
        if (!put(r, &n, out, k)) return false;
    }
    *len = n;
    return true;
}

/* A number at r->p: JSON's grammar; an integer (no fraction or exponent) of at most 18 digits
 * as json_integer, else a finite real as json_real (strtod on the exact span, as jansson). */
static json_t *read_number(rd *r) {
    const char *s = r->p;
    const char *p = s;
    bool neg = false;
    if (p < r->end && *p == '-') neg = true, p++;
    if (p >= r->end || *p < '0' || *p > '9') return NULL;
    const char *digits = p;
    if (*p == '0') p++;
    else
        while (p < r->end && *p >= '0' && *p <= '9') p++;
    const size_t nd = (size_t)(p - digits);
    bool real = false;
    if (p < r->end && *p == '.') {
        real = true, p++;
        const char *f = p;
        while (p < r->end && *p >= '0' && *p <= '9') p++;
        if (p == f) return NULL;
    }
    if (p < r->end && (*p == 'e' || *p == 'E')) {
        real = true, p++;
        if (p < r->end && (*p == '+' || *p == '-')) p++;
        const char *x = p;
        while (p < r->end && *p >= '0' && *p <= '9') p++;
        if (p == x) return NULL;
    }
    if (p < r->end && *p >= '0' && *p <= '9') return NULL; /* a leading zero followed by digits */
    r->p = p;
    if (!real) {
        if (nd > 18) return NULL;
        int64_t v = 0;
        for (const char *q = digits; q < p; q++) v = v * 10 + (*q - '0');
        return json_integer(neg ? -v : v);
    }
    char tmp[64];
    const size_t n = (size_t)(p - s);
    if (n >= sizeof tmp) return NULL;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    char *e;
    const double d = strtod(tmp, &e);
    if (e != tmp + n || !(d - d == 0)) return NULL; /* not all of it, or not finite */
    return json_real(d);
}

static bool word(rd *r, const char *w, size_t n) {
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, w, n) != 0) return false;
    r->p += n;
    return true;
}

static json_t *read_value(rd *r, int depth);

static json_t *read_array(rd *r, int depth) {
    json_t *a = json_array();
    if (!a) return NULL;
    skip_ws(r);
    if (r->p < r->end && *r->p == ']') {
        r->p++;
        return a;
    }
    for (;;) {
        json_t *v = read_value(r, depth + 1);
        if (!v || json_array_append_new(a, v) != 0) break;
        skip_ws(r);
        if (r->p >= r->end) break;
        const char c = *r->p++;
        if (c == ']') return a;
        if (c != ',') break;
    }
    json_decref(a);
    return NULL;
}

static json_t *read_object(rd *r, int depth) {
    json_t *o = json_object();
    if (!o) return NULL;
    skip_ws(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
        return o;
    }
    for (;;) {
        skip_ws(r);
        size_t kn;
        if (r->p >= r->end || *r->p++ != '"' || !read_string(r, &kn)) break;
        char small[64], *key = kn < sizeof small ? small : malloc(kn + 1);
        if (!key) break;
        if (kn) memcpy(key, r->buf, kn); /* r->buf is NULL until a string has bytes */
        key[kn] = '\0';
        skip_ws(r);
        json_t *v = r->p < r->end && *r->p++ == ':' ? read_value(r, depth + 1) : NULL;
        const bool ok = v && json_object_setn_new_nocheck(o, key, kn, v) == 0;
        if (key != small) free(key);
        if (!ok) break;
        skip_ws(r);
        if (r->p >= r->end) break;
        const char c = *r->p++;
        if (c == '}') return o;
        if (c != ',') break;
    }
    json_decref(o);
    return NULL;
}

static json_t *read_value(rd *r, int depth) {
    if (depth > MAX_DEPTH) return NULL;
    skip_ws(r);
    if (r->p >= r->end) return NULL;
    switch (*r->p) {
    case '{': r->p++; return read_object(r, depth);
    case '[': r->p++; return read_array(r, depth);
    case '"': {
        r->p++;
        size_t n;
        return read_string(r, &n) ? json_stringn_nocheck(r->buf ? r->buf : "", n) : NULL;
    }
    case 't': return word(r, "true", 4) ? json_true() : NULL;
    case 'f': return word(r, "false", 5) ? json_false() : NULL;
    case 'n': return word(r, "null", 4) ? json_null() : NULL;
    default: return read_number(r);
    }
}

json_t *dspy_json_parse_fast(const char *text, size_t len) {
    rd r = {text, text + len, NULL, 0};
    json_t *v = read_value(&r, 0);
    skip_ws(&r);
    if (v && r.p != r.end) {
        json_decref(v);
        v = NULL;
    }
    free(r.buf);
    return v;
}
