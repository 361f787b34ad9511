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

typedef dspy_json_cur rd;

/* Members left out of the tree (dspy_json_parse_fast_spans): at the top level's object, want is
 * unused; inside an outer member, want has bit j for each span j of that outer key. */
typedef struct span_ctx {
    dspy_json_span *spans;
    size_t n;
    unsigned want;
} span_ctx;

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

/* A string at r->p (after its opening quote): its bytes, unescaped, in *out[0 .. *len) — the
 * text itself where it holds no escape, else r->buf. Whether it is one this reader takes (see
 * the top). */
static bool read_string(rd *r, const char **out, size_t *len) {
    const char *const start = r->p;
    size_t n = 0;
    bool esc = false;
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
        const char *run_end = r->p;
        if (r->p >= r->end) return false;
        const char c = *r->p++;
        if (c == '"') {
            if (!esc) { /* no escape: the text is the string */
                *out = start;
                *len = (size_t)(run_end - start);
                return true;
            }
            if (run_end > s && !put(r, &n, s, (size_t)(run_end - s))) return false;
            break;
        }
        if (c != '\\' || r->p >= r->end) return false; /* a control character */
        if (!esc) esc = true, s = start;                /* the first escape: copy from the start */
        if (run_end > s && !put(r, &n, s, (size_t)(run_end - s))) return false;
        const char e = *r->p++;
        char out4[4];
        size_t k = 1;
        switch (e) {
        case '"': out4[0] = '"'; break;
        case '\\': out4[0] = '\\'; break;
        case '/': out4[0] = '/'; break;
        case 'b': out4[0] = '\b'; break;
        case 'f': out4[0] = '\f'; break;
        case 'n': out4[0] = '\n'; break;
        case 'r': out4[0] = '\r'; break;
        case 't': out4[0] = '\t'; break;
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
            k = (size_t)dspy_utf8_encode((unsigned)u, out4);
            break;
        }
        default: return false;
        }
        if (!put(r, &n, out4, k)) return false;
    }
    *out = r->buf;
    *len = n;
    return true;
}

/* A number at r->p by JSON's grammar: an integer (no fraction or exponent) of at most 18 digits
 * (*is_int, its value in *iv), else a finite real (*dv: strtod on the exact span, as jansson).
 * False, r->p unmoved, for anything else. */
static bool scan_number(rd *r, bool *is_int, int64_t *iv, double *dv) {
    const char *s = r->p;
    const char *p = s;
    bool neg = false;
    if (p < r->end && *p == '-') neg = true, p++;
    if (p >= r->end || *p < '0' || *p > '9') return false;
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
        if (p == f) return false;
    }
    if (p < r->end && (*p == 'e' || *p == 'E')) {
        real = true, p++;
        if (p < r->end && (*p == '+' || *p == '-')) p++;
        const char *x = p;
        while (p < r->end && *p >= '0' && *p <= '9') p++;
        if (p == x) return false;
    }
    if (p < r->end && *p >= '0' && *p <= '9') return false; /* a leading zero followed by digits */
    *is_int = !real;
    if (!real) {
        if (nd > 18) return false;
        int64_t v = 0;
        for (const char *q = digits; q < p; q++) v = v * 10 + (*q - '0');
        *iv = neg ? -v : v;
        r->p = p;
        return true;
    }
    char tmp[64];
    const size_t n = (size_t)(p - s);
    if (n >= sizeof tmp) return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    char *e;
    const double d = strtod(tmp, &e);
    if (e != tmp + n || !(d - d == 0)) return false; /* not all of it, or not finite */
    *dv = d;
    r->p = p;
    return true;
}

static json_t *read_number(rd *r) {
    bool is_int;
    int64_t iv;
    double dv;
    if (!scan_number(r, &is_int, &iv, &dv)) return NULL;
    return is_int ? json_integer(iv) : json_real(dv);
}

static bool word(rd *r, const char *w, size_t n) {
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, w, n) != 0) return false;
    r->p += n;
    return true;
}

static json_t *read_value(rd *r, int depth, const span_ctx *sc);
static bool skip_value(rd *r, int depth, size_t *items);

/* Before item i of an object or array whose opening character was read: 1 when an item follows
 * (r->p at it, whitespace skipped), 0 when `close` ends the container here (consumed), -1
 * otherwise. */
static int next_item(rd *r, size_t i, char close) {
    skip_ws(r);
    if (r->p >= r->end) return -1;
    if (*r->p == close) {
        r->p++;
        return 0;
    }
    if (i > 0) {
        if (*r->p != ',') return -1;
        r->p++;
        skip_ws(r);
    }
    return 1;
}

static json_t *read_array(rd *r, int depth) {
    json_t *a = json_array();
    if (!a) return NULL;
    for (size_t i = 0;; i++) {
        const int k = next_item(r, i, ']');
        if (k == 0) return a;
        json_t *v = k > 0 ? read_value(r, depth + 1, NULL) : NULL;
        if (!v || json_array_append_new(a, v) != 0) break;
    }
    json_decref(a);
    return NULL;
}

/* The key of an object member and its ':' (r->p at the key's quote). */
static bool read_key(rd *r, const char **key, size_t *kn) {
    if (r->p >= r->end || *r->p++ != '"' || !read_string(r, key, kn)) return false;
    skip_ws(r);
    return r->p < r->end && *r->p++ == ':';
}

static bool key_is(const char *key, size_t kn, const char *want) {
    return strlen(want) == kn && memcmp(key, want, kn) == 0;
}

/* sc (dspy_json_parse_fast_spans): at depth 0, members named by spans' outer keys pass their
 * spans down; at depth 1, members named by a wanted span's inner key are skipped and recorded. */
static json_t *read_object(rd *r, int depth, const span_ctx *sc) {
    json_t *o = json_object();
    if (!o) return NULL;
    for (size_t i = 0;; i++) {
        const int k = next_item(r, i, '}');
        if (k == 0) return o;
        const char *kp;
        size_t kn;
        if (k < 0 || !read_key(r, &kp, &kn)) break;
        char small[64], *key = kn < sizeof small ? small : malloc(kn + 1);
        if (!key) break;
        if (kn) memcpy(key, kp, kn);
        key[kn] = '\0';
        span_ctx child = {sc ? sc->spans : NULL, sc ? sc->n : 0, 0};
        int skip = -1;
        for (size_t j = 0; sc && j < sc->n; j++) {
            if (depth == 0 && key_is(key, kn, sc->spans[j].outer)) {
                child.want |= 1u << j;
                sc->spans[j].at = NULL; /* a repeated outer member: the last one counts */
            } else if (depth == 1 && (sc->want >> j & 1) && key_is(key, kn, sc->spans[j].inner)) {
                skip = (int)j;
            }
        }
        bool ok;
        if (skip >= 0) {
            skip_ws(r);
            const char *at = r->p;
            size_t items = 0;
            ok = skip_value(r, depth + 1, &items);
            sc->spans[skip].at = at, sc->spans[skip].len = (size_t)(r->p - at), sc->spans[skip].items = items;
        } else {
            json_t *v = read_value(r, depth + 1, child.want ? &child : NULL);
            ok = v && json_object_setn_new_nocheck(o, key, kn, v) == 0;
        }
        if (key != small) free(key);
        if (!ok) break;
    }
    json_decref(o);
    return NULL;
}

static json_t *read_value(rd *r, int depth, const span_ctx *sc) {
    if (depth > MAX_DEPTH) return NULL;
    skip_ws(r);
    if (r->p >= r->end) return NULL;
    switch (*r->p) {
    case '{': r->p++; return read_object(r, depth, sc);
    case '[': r->p++; return read_array(r, depth);
    case '"': {
        r->p++;
        const char *sp;
        size_t n;
        return read_string(r, &sp, &n) ? json_stringn_nocheck(sp, n) : NULL;
    }
    case 't': return word(r, "true", 4) ? json_true() : NULL;
    case 'f': return word(r, "false", 5) ? json_false() : NULL;
    case 'n': return word(r, "null", 4) ? json_null() : NULL;
    default: return read_number(r);
    }
}

/* read_value's checks without building anything; items (if not NULL) counts the value's own
 * elements or members where it is an array or object. */
static bool skip_value(rd *r, int depth, size_t *items) {
    if (depth > MAX_DEPTH) return false;
    skip_ws(r);
    if (r->p >= r->end) return false;
    const char *sp;
    size_t n;
    switch (*r->p) {
    case '{':
    case '[': {
        const char close = *r->p++ == '{' ? '}' : ']';
        for (size_t i = 0;; i++) {
            const int k = next_item(r, i, close);
            if (k <= 0) return k == 0;
            if (close == '}' && !read_key(r, &sp, &n)) return false;
            if (!skip_value(r, depth + 1, NULL)) return false;
            if (items) ++*items;
        }
    }
    case '"': r->p++; return read_string(r, &sp, &n);
    case 't': return word(r, "true", 4);
    case 'f': return word(r, "false", 5);
    case 'n': return word(r, "null", 4);
    default: {
        bool is_int;
        int64_t iv;
        double dv;
        return scan_number(r, &is_int, &iv, &dv);
    }
    }
}

static json_t *parse_whole(const char *text, size_t len, const span_ctx *sc) {
    rd r = {.p = text, .end = text + len};
    json_t *v = read_value(&r, 0, sc);
    skip_ws(&r);
    if (v && r.p != r.end) {
        json_decref(v);
        v = NULL;
    }
    free(r.buf);
    return v;
}

json_t *dspy_json_parse_fast(const char *text, size_t len) { return parse_whole(text, len, NULL); }

json_t *dspy_json_parse_fast_spans(const char *text, size_t len, dspy_json_span *spans, size_t n_spans) {
    if (n_spans > 8) return NULL;
    for (size_t j = 0; j < n_spans; j++) spans[j].at = NULL, spans[j].len = spans[j].items = 0;
    const span_ctx sc = {spans, n_spans, 0};
    return parse_whole(text, len, &sc);
}

/* ---- the cursor ----------------------------------------------------------------------------- */

void dspy_json_cur_init(dspy_json_cur *c, const char *text, size_t len) {
    *c = (dspy_json_cur){.p = text, .end = text + len};
}

void dspy_json_cur_free(dspy_json_cur *c) {
    free(c->buf);
    c->buf = NULL;
    c->cap = 0;
}

int dspy_json_cur_peek(dspy_json_cur *c) {
    skip_ws(c);
    return c->p < c->end ? (unsigned char)*c->p : -1;
}

bool dspy_json_cur_enter(dspy_json_cur *c, char open) {
    if ((open != '{' && open != '[') || dspy_json_cur_peek(c) != open || c->depth >= MAX_DEPTH) return false;
    const int d = c->depth++;
    if (open == '{') c->kinds[d >> 3] |= (unsigned char)(1u << (d & 7));
    else c->kinds[d >> 3] &= (unsigned char)~(1u << (d & 7));
    c->p++;
    return true;
}

int dspy_json_cur_item(dspy_json_cur *c, size_t i) {
    if (c->depth <= 0) return -1;
    const int d = c->depth - 1;
    const int k = next_item(c, i, (c->kinds[d >> 3] >> (d & 7) & 1) ? '}' : ']');
    if (k == 0) c->depth--;
    return k;
}

bool dspy_json_cur_string(dspy_json_cur *c, const char **s, size_t *n) {
    if (dspy_json_cur_peek(c) != '"') return false;
    c->p++;
    return read_string(c, s, n);
}

bool dspy_json_cur_key(dspy_json_cur *c, const char **s, size_t *n) {
    skip_ws(c);
    return read_key(c, s, n);
}

bool dspy_json_cur_int(dspy_json_cur *c, int64_t *v) {
    bool is_int;
    double dv;
    skip_ws(c);
    const char *at = c->p;
    if (!scan_number(c, &is_int, v, &dv)) return false;
    if (!is_int) c->p = at;
    return is_int;
}

bool dspy_json_cur_skip(dspy_json_cur *c) { return skip_value(c, 0, NULL); }
