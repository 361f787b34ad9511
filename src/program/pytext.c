/* pytext.c — CPython string operations reproduced byte for byte (see pytext.h). */
#include "program/pytext.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- splitlines ----------------------------------------------------------------------------- */

/* Length of the line break starting at s[i], 0 if none. */
static size_t line_break_len(const char *s, size_t n, size_t i) {
    unsigned char c = (unsigned char)s[i];
    switch (c) {
    case '\n': case 0x0b: case 0x0c: case 0x1c: case 0x1d: case 0x1e: return 1;
    case '\r': return (i + 1 < n && s[i + 1] == '\n') ? 2 : 1;
    case 0xc2: return (i + 1 < n && (unsigned char)s[i + 1] == 0x85) ? 2 : 0;
    case 0xe2:
        return (i + 2 < n && (unsigned char)s[i + 1] == 0x80 &&
                ((unsigned char)s[i + 2] == 0xa8 || (unsigned char)s[i + 2] == 0xa9)) ? 3 : 0;
    }
    return 0;
}

bool dspy_py_splitlines(const char *s, size_t n, py_lines *out) {
    out->v = NULL;
    out->n = 0;
    size_t cap = 0, start = 0, i = 0;
    for (;;) {
        size_t br = 0;
        while (i < n && (br = line_break_len(s, n, i)) == 0) i++;
        if (i >= n && start >= n) break;
        if (out->n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            dspy_strv *v = realloc(out->v, nc * sizeof *v);
            if (!v) {
                dspy_py_lines_free(out);
                dspy_fail(DSPY_ERR_NOMEM, "splitlines: out of memory");
                return false;
            }
            out->v = v;
            cap = nc;
        }
        out->v[out->n++] = dspy_strv_make(s + start, i - start);
        if (i >= n) break;
        i += br;
        start = i;
    }
    return true;
}

void dspy_py_lines_free(py_lines *l) {
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* ---- cleandoc / dedent ------------------------------------------------------------------------ */

static size_t utf8_len_at(const char *p, size_t n) {
    unsigned cp;
    int l = dspy_utf8_decode(p, n, &cp);
    return l > 0 ? (size_t)l : 1;
}

static size_t count_chars(const char *p, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i += utf8_len_at(p + i, n - i)) c++;
    return c;
}

/* str.expandtabs(8). */
static void expandtabs(const char *s, dspy_str *out) {
    size_t col = 0, n = strlen(s);
    for (size_t i = 0; i < n;) {
        char c = s[i];
        if (c == '\t') {
            size_t spaces = 8 - col % 8;
            dspy_str_repeat(out, " ", spaces);
            col += spaces;
            i++;
        } else if (c == '\n' || c == '\r') {
            dspy_str_appendc(out, c);
            col = 0;
            i++;
        } else {
            size_t l = utf8_len_at(s + i, n - i);
            dspy_str_appendn(out, s + i, l);
            col++;
            i += l;
        }
    }
}

void dspy_py_cleandoc(const char *s, dspy_str *out) {
    dspy_str ex = DSPY_STR_INIT;
    expandtabs(s, &ex);
    const char *t = dspy_str_cstr(&ex);
    size_t n = ex.len;
    /* Split on '\n' only. */
    size_t nl = 1;
    for (size_t i = 0; i < n; i++) nl += t[i] == '\n';
    dspy_strv *lines = malloc(nl * sizeof *lines);
    if (!lines) {
        out->failed = true;
        dspy_str_free(&ex);
        return;
    }
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || t[i] == '\n') {
            lines[k++] = dspy_strv_make(t + start, i - start);
            start = i + 1;
        }
    }
    size_t margin = SIZE_MAX;
    for (size_t i = 1; i < k; i++) {
        dspy_strv rest = dspy_strv_lstrip(lines[i]);
        if (rest.len) {
            size_t indent = count_chars(lines[i].ptr, lines[i].len - rest.len);
            if (indent < margin) margin = indent;
        }
    }
    lines[0] = dspy_strv_lstrip(lines[0]);
    if (margin != SIZE_MAX) {
        for (size_t i = 1; i < k; i++) {
            size_t skip = 0;
            for (size_t c = 0; c < margin && skip < lines[i].len; c++)
                skip += utf8_len_at(lines[i].ptr + skip, lines[i].len - skip);
            lines[i].ptr += skip;
            lines[i].len -= skip;
        }
    }
    size_t lo = 0, hi = k;
    while (hi > lo && lines[hi - 1].len == 0) hi--;
    while (lo < hi && lines[lo].len == 0) lo++;
    for (size_t i = lo; i < hi; i++) {
        if (i > lo) dspy_str_appendc(out, '\n');
        dspy_str_appendv(out, lines[i]);
    }
    free(lines);
    dspy_str_free(&ex);
}

void dspy_py_dedent(const char *s, dspy_str *out) {
    size_t n = strlen(s);
    /* Pass 1: blank the segments ('\n'-separated) made only of [ \t]+, and find the margin
     * (the common [ \t]* prefix of the segments that have other content). */
    const char *margin = NULL;
    size_t mlen = 0;
    for (size_t start = 0; start <= n;) {
        size_t end = start;
        while (end < n && s[end] != '\n') end++;
        size_t ws = start;
        while (ws < end && (s[ws] == ' ' || s[ws] == '\t')) ws++;
        if (ws < end) {
            size_t ilen = ws - start;
            if (!margin) {
                margin = s + start;
                mlen = ilen;
            } else {
                size_t i = 0;
                while (i < mlen && i < ilen && margin[i] == s[start + i]) i++;
                mlen = i;
            }
        }
        start = end + 1;
    }
    for (size_t start = 0; start <= n;) {
        size_t end = start;
        while (end < n && s[end] != '\n') end++;
        size_t ws = start;
        while (ws < end && (s[ws] == ' ' || s[ws] == '\t')) ws++;
        if (ws == end && end > start) {
            /* whitespace-only segment: emptied */
        } else if (mlen && end - start >= mlen && memcmp(s + start, margin, mlen) == 0) {
            dspy_str_appendn(out, s + start + mlen, end - start - mlen);
        } else {
            dspy_str_appendn(out, s + start, end - start);
        }
        if (end < n) dspy_str_appendc(out, '\n');
        start = end + 1;
    }
}

/* ---- word characters and identifiers --------------------------------------------------------- */

/* Non-ASCII code points that Python's str.isalnum() rejects, approximated by ranges of
 * punctuation, symbols, spaces, marks and format characters. */
static bool nonascii_is_word(unsigned cp) {
    if (cp < 0xc0) {
        switch (cp) {
        case 0xaa: case 0xb2: case 0xb3: case 0xb5: case 0xb9: case 0xba: case 0xbc: case 0xbd:
        case 0xbe: return true;
        }
        return false;
    }
    if (cp == 0xd7 || cp == 0xf7) return false;
    if (cp >= 0x0300 && cp <= 0x036f) return false;              /* combining marks */
    if (cp >= 0x2000 && cp <= 0x206f) return false;              /* general punctuation */
    if (cp >= 0x20a0 && cp <= 0x20ff) return false;              /* currency, marks */
    if (cp >= 0x2190 && cp <= 0x2bff) return false;              /* arrows .. misc symbols */
    if (cp >= 0x2e00 && cp <= 0x2e7f) return false;              /* supplemental punctuation */
    if (cp >= 0x3000 && cp <= 0x3004) return false;              /* CJK symbols and punct. */
    if (cp >= 0x3008 && cp <= 0x3020) return false;
    if (cp >= 0xfe00 && cp <= 0xfe0f) return false;              /* variation selectors */
    if (cp >= 0xfe30 && cp <= 0xfe4f) return false;
    if (cp == 0xfeff) return false;
    if ((cp >= 0xff00 && cp <= 0xff0f) || (cp >= 0xff1a && cp <= 0xff20) ||
        (cp >= 0xff3b && cp <= 0xff40) || (cp >= 0xff5b && cp <= 0xff65))
        return false;                                           /* fullwidth punctuation */
    if (cp >= 0x1f000 && cp <= 0x1faff) return false;            /* emoji and pictographs */
    if (cp >= 0xe0000) return false;
    return true;
}

size_t dspy_py_word_char(const char *p, size_t n) {
    if (n == 0) return 0;
    unsigned char c = (unsigned char)*p;
    if (c < 0x80)
        return ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '_') ? 1 : 0;
    unsigned cp;
    int l = dspy_utf8_decode(p, n, &cp);
    if (l <= 0) return 0;
    return nonascii_is_word(cp) ? (size_t)l : 0;
}

size_t dspy_py_ident_start(const char *p, size_t n) {
    if (n == 0) return 0;
    unsigned char c = (unsigned char)*p;
    if (c >= '0' && c <= '9') return 0;
    if (c < 0x80) return dspy_py_word_char(p, n);
    unsigned cp;
    int l = dspy_utf8_decode(p, n, &cp);
    if (l <= 0 || !nonascii_is_word(cp)) return 0;
    /* superscript/fraction digits are alphanumeric but not identifier starts */
    if (cp == 0xb2 || cp == 0xb3 || cp == 0xb9 || (cp >= 0xbc && cp <= 0xbe)) return 0;
    return (size_t)l;
}

size_t dspy_py_ident_continue(const char *p, size_t n) {
    size_t l = dspy_py_word_char(p, n);
    if (!l && n >= 2) {
        unsigned cp;
        int k = dspy_utf8_decode(p, n, &cp);
        if (k > 0 && cp >= 0x0300 && cp <= 0x036f) return (size_t)k; /* combining marks */
    }
    return l;
}

static const char *const k_keywords[] = {
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class",
    "continue", "def", "del", "elif", "else", "except", "finally", "for", "from", "global",
    "if", "import", "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return",
    "try", "while", "with", "yield",
};

bool dspy_py_is_keyword(const char *p, size_t n) {
    for (size_t i = 0; i < sizeof k_keywords / sizeof *k_keywords; i++)
        if (strlen(k_keywords[i]) == n && memcmp(k_keywords[i], p, n) == 0) return true;
    return false;
}

bool dspy_py_is_identifier(const char *p, size_t n) {
    size_t l = dspy_py_ident_start(p, n);
    if (!l) return false;
    for (size_t i = l; i < n; i += l) {
        l = dspy_py_ident_continue(p + i, n - i);
        if (!l) return false;
    }
    return !dspy_py_is_keyword(p, n);
}

/* ---- title / infer_prefix --------------------------------------------------------------------- */

static bool is_lower(char c) { return c >= 'a' && c <= 'z'; }
static bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
static bool is_alpha(char c) { return is_lower(c) || is_upper(c); }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static char to_upper(char c) { return is_lower(c) ? (char)(c - 32) : c; }
static char to_lower(char c) { return is_upper(c) ? (char)(c + 32) : c; }

void dspy_py_title(const char *s, dspy_str *out) {
    bool prev_cased = false;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        char c = s[i];
        if (is_alpha(c)) {
            dspy_str_appendc(out, prev_cased ? to_lower(c) : to_upper(c));
            prev_cased = true;
            i++;
        } else if ((unsigned char)c < 0x80) {
            dspy_str_appendc(out, c);
            prev_cased = false;
            i++;
        } else {
            size_t l = utf8_len_at(s + i, n - i);
            size_t w = dspy_py_word_char(s + i, n - i);
            dspy_str_appendn(out, s + i, l);
            prev_cased = w > 0;
            i += l;
        }
    }
}

/* One re.sub pass of a two-group pattern "(A)(B...)" -> "\1_\2", where `match` returns the
 * length of a match at position i (0 for none) and `split` the length of group 1. */
typedef size_t (*match_fn)(const char *s, size_t n, size_t i, size_t *g1);

static size_t m_camel_word(const char *s, size_t n, size_t i, size_t *g1) {
    /* (.)([A-Z][a-z]+) */
    if (i + 2 >= n || s[i] == '\n' || !is_upper(s[i + 1]) || !is_lower(s[i + 2])) return 0;
    size_t j = i + 2;
    while (j < n && is_lower(s[j])) j++;
    *g1 = 1;
    return j - i;
}
static size_t m_lower_upper(const char *s, size_t n, size_t i, size_t *g1) {
    /* ([a-z0-9])([A-Z]) */
    if (i + 1 >= n || !(is_lower(s[i]) || is_digit(s[i])) || !is_upper(s[i + 1])) return 0;
    *g1 = 1;
    return 2;
}
static size_t m_alpha_digit(const char *s, size_t n, size_t i, size_t *g1) {
    if (i + 1 >= n || !is_alpha(s[i]) || !is_digit(s[i + 1])) return 0;
    *g1 = 1;
    return 2;
}
static size_t m_digit_alpha(const char *s, size_t n, size_t i, size_t *g1) {
    if (i + 1 >= n || !is_digit(s[i]) || !is_alpha(s[i + 1])) return 0;
    *g1 = 1;
    return 2;
}

static void re_sub_underscore(const char *s, match_fn m, dspy_str *out) {
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t g1 = 0, len = m(s, n, i, &g1);
        if (len) {
            dspy_str_appendn(out, s + i, g1);
            dspy_str_appendc(out, '_');
            dspy_str_appendn(out, s + i + g1, len - g1);
            i += len;
        } else {
            dspy_str_appendc(out, s[i]);
            i++;
        }
    }
}

void dspy_py_infer_prefix(const char *name, dspy_str *out) {
    static const match_fn steps[] = {m_camel_word, m_lower_upper, m_alpha_digit, m_digit_alpha};
    dspy_str cur = DSPY_STR_INIT, next = DSPY_STR_INIT;
    dspy_str_append(&cur, name);
    for (size_t k = 0; k < 4; k++) {
        dspy_str_clear(&next);
        re_sub_underscore(dspy_str_cstr(&cur), steps[k], &next);
        dspy_str t = cur;
        cur = next;
        next = t;
    }
    if (!dspy_str_ok(&cur) || !dspy_str_ok(&next)) out->failed = true;
    const char *w = dspy_str_cstr(&cur);
    bool first = true;
    for (;;) {
        const char *e = strchr(w, '_');
        size_t len = e ? (size_t)(e - w) : strlen(w);
        if (!first) dspy_str_appendc(out, ' ');
        first = false;
        bool has_upper = false, has_lower = false;
        for (size_t i = 0; i < len; i++) {
            has_upper |= is_upper(w[i]);
            has_lower |= is_lower(w[i]);
        }
        if (has_upper && !has_lower) {
            dspy_str_appendn(out, w, len);
        } else {
            for (size_t i = 0; i < len; i++)
                dspy_str_appendc(out, i == 0 ? to_upper(w[i]) : to_lower(w[i]));
        }
        if (!e) break;
        w = e + 1;
    }
    dspy_str_free(&cur);
    dspy_str_free(&next);
}
