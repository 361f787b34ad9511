/* json_repair.c — lenient JSON for LM answers (see json_repair.h for the exact scope). */
#include "program/json_repair.h"

#include <stdlib.h>
#include <string.h>

typedef enum { CTX_VALUE, CTX_ARRAY, CTX_KEY } jr_ctx;

typedef struct {
    const char *s;
    size_t n, i;
    int depth;
    bool oom;
} jr;

static char peek(const jr *p) { return p->i < p->n ? p->s[p->i] : '\0'; }

static bool at_end(const jr *p) { return p->i >= p->n; }

static void skip_ws(jr *p) {
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' ||
                           p->s[p->i] == '\r'))
        p->i++;
}

/* “ and ” are 3-byte UTF-8 sequences E2 80 9C / E2 80 9D. */
static bool at_lquote_curly(const jr *p) {
    return p->i + 2 < p->n && (unsigned char)p->s[p->i] == 0xe2 &&
           (unsigned char)p->s[p->i + 1] == 0x80 && (unsigned char)p->s[p->i + 2] == 0x9c;
}
static bool at_rquote_curly(const jr *p, size_t i) {
    return i + 2 < p->n && (unsigned char)p->s[i] == 0xe2 &&
           (unsigned char)p->s[i + 1] == 0x80 && (unsigned char)p->s[i + 2] == 0x9d;
}

static bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static void skip_comment(jr *p) {
    if (peek(p) == '#' || (peek(p) == '/' && p->i + 1 < p->n && p->s[p->i + 1] == '/')) {
        while (p->i < p->n && p->s[p->i] != '\n') p->i++;
    } else if (peek(p) == '/' && p->i + 1 < p->n && p->s[p->i + 1] == '*') {
        p->i += 2;
        while (p->i + 1 < p->n && !(p->s[p->i] == '*' && p->s[p->i + 1] == '/')) p->i++;
        p->i = p->i + 2 <= p->n ? p->i + 2 : p->n;
    } else {
        p->i++;
    }
}

static dspy_json *parse_value(jr *p, jr_ctx ctx);

static int hexv(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Whether a closing quote ending just before `after` really closes the string: it must be
 * followed (after whitespace) by a delimiter of the context or by the end. */
static bool closes_here(const jr *p, size_t after, jr_ctx ctx) {
    size_t j = after;
    while (j < p->n && (p->s[j] == ' ' || p->s[j] == '\t' || p->s[j] == '\r' || p->s[j] == '\n'))
        j++;
    if (j >= p->n) return true;
    char c = p->s[j];
    if (ctx == CTX_KEY) return c == ':' || c == '}' || c == ',';
    return c == ',' || c == '}' || c == ']' || c == ':';
}

static dspy_json *parse_quoted(jr *p, jr_ctx ctx) {
    bool curly = at_lquote_curly(p);
    char q = curly ? '\0' : p->s[p->i];
    p->i += curly ? 3 : 1;
    dspy_str out = DSPY_STR_INIT;
    while (p->i < p->n) {
        char c = p->s[p->i];
        bool is_close = curly ? at_rquote_curly(p, p->i) : c == q;
        if (is_close) {
            size_t after = p->i + (curly ? 3 : 1);
            if (ctx == CTX_KEY || closes_here(p, after, ctx)) {
                p->i = after;
                break;
            }
            dspy_str_appendn(&out, p->s + p->i, curly ? 3 : 1);
            p->i = after;
            continue;
        }
        if (c == '\\' && p->i + 1 < p->n) {
            char e = p->s[p->i + 1];
            p->i += 2;
            switch (e) {
            case 'n': dspy_str_appendc(&out, '\n'); break;
            case 't': dspy_str_appendc(&out, '\t'); break;
            case 'r': dspy_str_appendc(&out, '\r'); break;
            case 'b': dspy_str_appendc(&out, '\b'); break;
            case 'f': dspy_str_appendc(&out, '\f'); break;
            case '"': case '\'': case '\\': case '/': dspy_str_appendc(&out, e); break;
            case 'u': {
                unsigned cp = 0;
                int k = 0;
                for (; k < 4 && p->i < p->n && hexv(p->s[p->i]) >= 0; k++, p->i++)
                    cp = cp * 16 + (unsigned)hexv(p->s[p->i]);
                if (k < 4) {
                    dspy_str_append(&out, "\\u");
                    dspy_str_appendn(&out, p->s + p->i - k, (size_t)k);
                    break;
                }
                if (cp >= 0xd800 && cp < 0xdc00 && p->i + 5 < p->n && p->s[p->i] == '\\' &&
                    p->s[p->i + 1] == 'u') {
                    unsigned lo = 0;
                    int m = 0;
                    for (; m < 4 && hexv(p->s[p->i + 2 + m]) >= 0; m++)
                        lo = lo * 16 + (unsigned)hexv(p->s[p->i + 2 + m]);
                    if (m == 4 && lo >= 0xdc00 && lo < 0xe000) {
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                        p->i += 6;
                    }
                }
                char buf[4];
                int l = dspy_utf8_encode(cp, buf);
                dspy_str_appendn(&out, buf, (size_t)l);
                break;
            }
            default:
                dspy_str_appendc(&out, '\\');
                dspy_str_appendc(&out, e);
            }
            continue;
        }
        dspy_str_appendc(&out, c);
        p->i++;
    }
    if (!dspy_str_ok(&out)) {
        p->oom = true;
        dspy_str_free(&out);
        return NULL;
    }
    dspy_json *v = dspy_json_stringn(dspy_str_cstr(&out), out.len);
    dspy_str_free(&out);
    if (!v) p->oom = true;
    return v;
}

/* Unquoted text up to a delimiter of the context, right-stripped. */
static dspy_json *parse_bare(jr *p, jr_ctx ctx) {
    size_t start = p->i;
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c == '\n' || c == ',' || c == '}') break;
        if (ctx == CTX_ARRAY && c == ']') break;
        if (ctx == CTX_KEY && c == ':') break;
        p->i++;
    }
    size_t end = p->i;
    while (end > start && (p->s[end - 1] == ' ' || p->s[end - 1] == '\t' || p->s[end - 1] == '\r'))
        end--;
    dspy_json *v = dspy_json_stringn(p->s + start, end - start);
    if (!v) p->oom = true;
    return v;
}

static bool word_ci(const jr *p, const char *w) {
    size_t l = strlen(w);
    if (p->i + l > p->n) return false;
    for (size_t k = 0; k < l; k++) {
        char c = p->s[p->i + k];
        if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
        if (c != w[k]) return false;
    }
    return true;
}

static dspy_json *parse_literal_or_bare(jr *p, jr_ctx ctx) {
    static const char *const words[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        if (word_ci(p, words[k])) {
            size_t after = p->i + strlen(words[k]);
            if (after < p->n && (is_alpha(p->s[after]) || is_digit(p->s[after]) || p->s[after] == '_'))
                continue;
            p->i = after;
            dspy_json *v = k == 0 ? dspy_json_bool(true) : k == 1 ? dspy_json_bool(false) : dspy_json_null();
            if (!v) p->oom = true;
            return v;
        }
    }
    return parse_bare(p, ctx);
}

static dspy_json *parse_number(jr *p, jr_ctx ctx) {
    size_t start = p->i;
    size_t j = p->i;
    while (j < p->n && (is_digit(p->s[j]) || strchr("+-.eE_", p->s[j]) != NULL) && p->s[j] != '\0')
        j++;
    if (j < p->n && is_alpha(p->s[j])) return parse_bare(p, ctx);
    char buf[64];
    size_t k = 0;
    for (size_t q = start; q < j && k < sizeof buf - 1; q++)
        if (p->s[q] != '_') buf[k++] = p->s[q];
    buf[k] = '\0';
    dspy_json *v = NULL;
    if (dspy_json_parse(buf, k, NULL, &v) == DSPY_OK && dspy_json_is_number(v)) {
        p->i = j;
        return v;
    }
    dspy_json_decref(v);
    dspy_errclear();
    /* "1." or ".5" style numbers */
    char *end;
    double d = strtod(buf, &end);
    if (k && *end == '\0') {
        p->i = j;
        v = dspy_json_real(d);
        if (!v) p->oom = true;
        return v;
    }
    return parse_bare(p, ctx);
}

static dspy_json *parse_object(jr *p) {
    dspy_json *obj = dspy_json_object();
    if (!obj) {
        p->oom = true;
        return NULL;
    }
    p->depth++;
    for (;;) {
        skip_ws(p);
        if (at_end(p)) break;
        char c = peek(p);
        if (c == '}') {
            p->i++;
            break;
        }
        if (c == ',' || c == ':') {
            p->i++;
            continue;
        }
        if (c == '#' || (c == '/' && p->i + 1 < p->n && (p->s[p->i + 1] == '/' || p->s[p->i + 1] == '*'))) {
            skip_comment(p);
            continue;
        }
        if (c == '{' || c == '[' || c == ']') {
            p->i++;
            continue;
        }
        dspy_json *key = (c == '"' || c == '\'' || at_lquote_curly(p)) ? parse_quoted(p, CTX_KEY)
                                                                        : parse_bare(p, CTX_KEY);
        if (!key) break;
        skip_ws(p);
        if (at_end(p) || peek(p) == '}') {
            dspy_json_decref(key);
            continue;
        }
        if (peek(p) == ':') p->i++;
        dspy_json *val = parse_value(p, CTX_VALUE);
        if (p->oom) {
            dspy_json_decref(key);
            break;
        }
        if (!val && !(val = dspy_json_string(""))) {
            p->oom = true;
            dspy_json_decref(key);
            break;
        }
        if (dspy_json_set(obj, dspy_json_str(key), val)) p->oom = true;
        dspy_json_decref(key);
        if (p->oom) break;
    }
    p->depth--;
    if (p->oom) {
        dspy_json_decref(obj);
        return NULL;
    }
    return obj;
}

static dspy_json *parse_array(jr *p) {
    dspy_json *arr = dspy_json_array();
    if (!arr) {
        p->oom = true;
        return NULL;
    }
    p->depth++;
    for (;;) {
        skip_ws(p);
        if (at_end(p)) break;
        char c = peek(p);
        if (c == ']' || c == '}') {
            p->i++;
            break;
        }
        if (c == ',') {
            p->i++;
            continue;
        }
        size_t before = p->i;
        dspy_json *v = parse_value(p, CTX_ARRAY);
        if (p->oom) break;
        if (!v) {
            if (p->i == before) p->i++;
            continue;
        }
        if (dspy_json_append(arr, v)) {
            p->oom = true;
            break;
        }
    }
    p->depth--;
    if (p->oom) {
        dspy_json_decref(arr);
        return NULL;
    }
    return arr;
}

/* A value inside an object or array; NULL for "nothing here" (or OOM, flagged). */
static dspy_json *parse_value(jr *p, jr_ctx ctx) {
    if (p->depth > 256) {
        p->i = p->n;
        return NULL;
    }
    for (;;) {
        skip_ws(p);
        if (at_end(p)) return NULL;
        char c = peek(p);
        if (c == '{') {
            p->i++;
            return parse_object(p);
        }
        if (c == '[') {
            p->i++;
            return parse_array(p);
        }
        if (c == '"' || c == '\'' || at_lquote_curly(p)) return parse_quoted(p, ctx);
        if (is_digit(c) || c == '-' || c == '.') return parse_number(p, ctx);
        if (is_alpha(c) || (unsigned char)c >= 0x80) return parse_literal_or_bare(p, ctx);
        if (c == '}' || c == ']' || c == ',') return NULL;
        if (c == '#' || c == '/') {
            skip_comment(p);
            continue;
        }
        p->i++;
    }
}

/* A top-level value: everything before '{' or '[' is skipped. */
static dspy_json *parse_top(jr *p) {
    while (!at_end(p)) {
        char c = peek(p);
        if (c == '{') {
            p->i++;
            return parse_object(p);
        }
        if (c == '[') {
            p->i++;
            return parse_array(p);
        }
        p->i++;
    }
    return NULL;
}

static bool same_shape(const dspy_json *a, const dspy_json *b) {
    dspy_json_type ta = dspy_json_typeof(a), tb = dspy_json_typeof(b);
    if (ta != tb) {
        bool ba = ta == DSPY_JSON_BOOL, bb = tb == DSPY_JSON_BOOL;
        return ba && bb;
    }
    if (ta == DSPY_JSON_OBJECT) {
        if (dspy_json_size(a) != dspy_json_size(b)) return false;
        for (void *it = dspy_json_iter(a); it; it = dspy_json_next(a, it)) {
            const dspy_json *vb = dspy_json_get(b, dspy_json_iter_key(it));
            if (!vb || !same_shape(dspy_json_iter_value(it), vb)) return false;
        }
        return true;
    }
    if (ta == DSPY_JSON_ARRAY) {
        if (dspy_json_size(a) != dspy_json_size(b)) return false;
        for (size_t i = 0; i < dspy_json_size(a); i++)
            if (!same_shape(dspy_json_at(a, i), dspy_json_at(b, i))) return false;
    }
    return true;
}

dspy_status dspy_json_repair_loads(const char *s, size_t n, dspy_json **out) {
    *out = NULL;
    if (dspy_json_parse(s, n, NULL, out) == DSPY_OK) return DSPY_OK;
    dspy_errclear();
    jr p = {s, n, 0, 0, false};
    dspy_json *first = parse_top(&p), *list = NULL;
    if (p.oom) goto fail;
    if (!first) {
        *out = dspy_json_string("");
        return *out ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "json_repair: out of memory");
    }
    while (!at_end(&p)) {
        dspy_json *v = parse_top(&p);
        if (p.oom) goto fail;
        if (!v) break;
        if (!list) {
            if (!(list = dspy_json_array()) || dspy_json_append(list, dspy_json_incref(first)))
                goto fail;
        }
        size_t k = dspy_json_size(list);
        if (same_shape(dspy_json_at(list, k - 1), v)) {
            /* json_repair: a repeated value of the same shape replaces the previous one */
            dspy_json *rebuilt = dspy_json_array();
            for (size_t i = 0; rebuilt && i + 1 < k; i++)
                if (dspy_json_append(rebuilt, dspy_json_incref(dspy_json_at(list, i)))) {
                    dspy_json_decref(rebuilt);
                    rebuilt = NULL;
                }
            if (!rebuilt) {
                dspy_json_decref(v);
                goto fail;
            }
            dspy_json_decref(list);
            list = rebuilt;
        }
        if (dspy_json_append(list, v)) goto fail;
    }
    if (list && dspy_json_size(list) == 1) {
        dspy_json_decref(first);
        first = dspy_json_incref(dspy_json_at(list, 0));
        dspy_json_decref(list);
        list = NULL;
    }
    if (list) {
        dspy_json_decref(first);
        *out = list;
    } else {
        *out = first;
    }
    return DSPY_OK;
fail: /* out of memory: parse_top's p.oom or an append */
    dspy_json_decref(list);
    dspy_json_decref(first);
    return dspy_fail(DSPY_ERR_NOMEM, "json_repair: out of memory");
}

bool dspy_json_first_braced(const char *s, size_t n, size_t *start, size_t *len) {
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '{') continue;
        int depth = 0;
        for (size_t j = i; j < n; j++) {
            if (s[j] == '{') depth++;
            else if (s[j] == '}' && --depth == 0) {
                *start = i;
                *len = j - i + 1;
                return true;
            }
        }
    }
    return false;
}
