/* text_normalize.c — DSPy's normalize_text and f1_score (dspy/evaluate.h), code point for code
 * point what these Python lines of dspy/dsp/utils/metrics.py (DSPy 3.3.1) compute:
 *
 *     def normalize_text(s):
 *         s = unicodedata.normalize("NFD", s)
 *         ... white_space_fix(remove_articles(remove_punc(lower(s))))
 *     remove_articles: re.sub(r"\b(a|an|the)\b", " ", text)
 *     white_space_fix: " ".join(text.split())
 *     remove_punc:     "".join(ch for ch in text if ch not in set(string.punctuation))
 *     lower:           text.lower()
 *
 *     def f1_score(prediction, ground_truth):
 *         prediction_tokens = normalize_text(prediction).split()
 *         ground_truth_tokens = normalize_text(ground_truth).split()
 *         common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
 *         num_same = sum(common.values())
 *         if num_same == 0: return 0
 *         precision = 1.0 * num_same / len(prediction_tokens)
 *         recall = 1.0 * num_same / len(ground_truth_tokens)
 *         return (2 * precision * recall) / (precision + recall)
 *
 * The Unicode data (text_tables.c) is read from CPython 3.11 (Unicode 14.0.0):
 *   - NFD: each code point's full decomposition (Hangul by the algorithm), then the canonical
 *     ordering of runs of non-zero combining classes (a stable sort by class);
 *   - str.lower(): full mappings (U+0130 gives two code points) and Final_Sigma for U+03A3 as
 *     CPython's handle_capital_sigma decides it (a cased letter before it, skipping
 *     case-ignorable ones, and none after);
 *   - \b: Python's re word characters, str.isalnum() or '_';
 *   - split(): str.isspace().
 * Checked against CPython with tests/ref/normalize_f1.json (scripts/make_ref_f1.py).
 */
#include <stdlib.h>
#include <string.h>

#include "dspy/evaluate.h"
#include "dspy/str.h"
#include "program/text_tables.h"

typedef struct cps {
    uint32_t *v;
    size_t n, cap;
    bool nomem;
} cps;

static void push(cps *s, uint32_t c) {
    if (s->nomem) return;
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        uint32_t *v = realloc(s->v, cap * sizeof *v);
        if (!v) {
            s->nomem = true;
            return;
        }
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = c;
}

static bool in_ranges(const uint32_t (*r)[2], unsigned n, uint32_t c) {
    unsigned lo = 0, hi = n;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (c < r[mid][0]) hi = mid;
        else if (c > r[mid][1]) lo = mid + 1;
        else return true;
    }
    return false;
}

/* Entry of `c` in a {cp, offset, len} table, or NULL. */
static const uint32_t *find_map(const uint32_t (*t)[3], unsigned n, uint32_t c) {
    unsigned lo = 0, hi = n;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (t[mid][0] == c) return t[mid];
        if (t[mid][0] < c) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static unsigned ccc_of(uint32_t c) {
    unsigned lo = 0, hi = dspy_text_ccc_count;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (c < dspy_text_ccc[mid][0]) hi = mid;
        else if (c > dspy_text_ccc[mid][1]) lo = mid + 1;
        else return dspy_text_ccc[mid][2];
    }
    return 0;
}

static bool is_word(uint32_t c) { return c == '_' || in_ranges(dspy_text_alnum, dspy_text_alnum_count, c); }
static bool is_space(uint32_t c) { return in_ranges(dspy_text_space, dspy_text_space_count, c); }
static bool is_ignorable(uint32_t c) { return in_ranges(dspy_text_ignorable, dspy_text_ignorable_count, c); }
static bool is_cased(uint32_t c) { return in_ranges(dspy_text_cased, dspy_text_cased_count, c); }

/* unicodedata.normalize("NFD", s). */
static void nfd(const uint32_t *in, size_t n, cps *out) {
    enum { SBASE = 0xAC00, LBASE = 0x1100, VBASE = 0x1161, TBASE = 0x11A7, LCOUNT = 19, VCOUNT = 21, TCOUNT = 28 };
    for (size_t i = 0; i < n; i++) {
        uint32_t c = in[i];
        if (c >= SBASE && c < SBASE + LCOUNT * VCOUNT * TCOUNT) {
            uint32_t s = c - SBASE;
            push(out, LBASE + s / (VCOUNT * TCOUNT));
            push(out, VBASE + (s % (VCOUNT * TCOUNT)) / TCOUNT);
            if (s % TCOUNT) push(out, TBASE + s % TCOUNT);
            continue;
        }
        const uint32_t *d = find_map(dspy_text_decomp, dspy_text_decomp_count, c);
        if (!d) push(out, c);
        else
            for (uint32_t k = 0; k < d[2]; k++) push(out, dspy_text_decomp_data[d[1] + k]);
    }
    /* canonical ordering: a stable insertion sort of each run of non-starters by class */
    for (size_t i = 1; !out->nomem && i < out->n; i++) {
        unsigned ci = ccc_of(out->v[i]);
        if (!ci) continue;
        uint32_t c = out->v[i];
        size_t j = i;
        while (j > 0) {
            unsigned cj = ccc_of(out->v[j - 1]);
            if (!cj || cj <= ci) break;
            out->v[j] = out->v[j - 1];
            j--;
        }
        out->v[j] = c;
    }
}

/* str.lower(), with CPython's Final_Sigma rule for U+03A3. */
static void lower(const uint32_t *in, size_t n, cps *out) {
    for (size_t i = 0; i < n; i++) {
        uint32_t c = in[i];
        if (c == 0x03A3) {
            size_t j = i;
            while (j > 0 && is_ignorable(in[j - 1])) j--;
            bool final = j > 0 && is_cased(in[j - 1]);
            if (final) {
                size_t k = i + 1;
                while (k < n && is_ignorable(in[k])) k++;
                final = k == n || !is_cased(in[k]);
            }
            push(out, final ? 0x03C2 : 0x03C3);
            continue;
        }
        const uint32_t *m = find_map(dspy_text_lower, dspy_text_lower_count, c);
        if (!m) push(out, c);
        else
            for (uint32_t k = 0; k < m[2]; k++) push(out, dspy_text_lower_data[m[1] + k]);
    }
}

/* The normalized text as code points (punctuation, articles and whitespace handled). */
static dspy_status normalize_cps(const char *s, cps *out) {
    size_t len = strlen(s);
    cps a = {0}, b = {0}, c = {0};
    dspy_status st = DSPY_OK;
    for (size_t i = 0; i < len;) {
        unsigned cp;
        int l = dspy_utf8_decode(s + i, len - i, &cp);
        if (l <= 0) {
            st = dspy_fail(DSPY_ERR_ARG, "normalize_text: invalid UTF-8 at byte %zu", i);
            goto done;
        }
        push(&a, cp);
        i += (size_t)l;
    }
    nfd(a.v, a.n, &b);
    a.n = 0;
    lower(b.v, b.n, &a);
    /* remove_punc: string.punctuation is ASCII only */
    b.n = 0;
    static const char punct[] = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
    for (size_t i = 0; i < a.n; i++)
        if (a.v[i] >= 0x80 || a.v[i] == 0 || !strchr(punct, (int)a.v[i])) push(&b, a.v[i]);
    /* remove_articles: \b(a|an|the)\b -> " ", scanning left to right without overlaps; \b looks
     * at the characters of the text being scanned (the original of this step) */
    for (size_t i = 0; i < b.n;) {
        size_t m = 0;
        if (i == 0 || !is_word(b.v[i - 1])) {
            static const char *const arts[] = {"a", "an", "the"};
            for (int t = 0; t < 3 && !m; t++) {
                size_t k = strlen(arts[t]);
                bool eq = i + k <= b.n;
                for (size_t q = 0; eq && q < k; q++) eq = b.v[i + q] == (uint32_t)arts[t][q];
                if (eq && (i + k == b.n || !is_word(b.v[i + k]))) m = k;
            }
        }
        if (m) {
            push(&c, ' ');
            i += m;
        } else {
            push(&c, b.v[i++]);
        }
    }
    /* white_space_fix */
    out->n = 0;
    for (size_t i = 0; i < c.n;) {
        while (i < c.n && is_space(c.v[i])) i++;
        if (i == c.n) break;
        if (out->n) push(out, ' ');
        while (i < c.n && !is_space(c.v[i])) push(out, c.v[i++]);
    }
    if (a.nomem || b.nomem || c.nomem || out->nomem) st = dspy_fail(DSPY_ERR_NOMEM, "normalize_text: out of memory");
done:
    free(a.v);
    free(b.v);
    free(c.v);
    return st;
}

static char *to_utf8(const cps *s) {
    dspy_str o = DSPY_STR_INIT;
    char buf[4];
    for (size_t i = 0; i < s->n; i++) dspy_str_appendn(&o, buf, (size_t)dspy_utf8_encode(s->v[i], buf));
    if (!dspy_str_ok(&o)) {
        dspy_str_free(&o);
        dspy_fail(DSPY_ERR_NOMEM, "normalize_text: out of memory");
        return NULL;
    }
    char *r = dspy_str_take(&o);
    return r ? r : strdup("");
}

char *dspy_normalize_text(const char *s) {
    cps out = {0};
    char *r = normalize_cps(s, &out) ? NULL : to_utf8(&out);
    free(out.v);
    return r;
}

/* Tokens of a normalized text (split on its single spaces): starts and lengths. */
typedef struct tok {
    const uint32_t *p;
    size_t n;
} tok;

static int tok_cmp(const void *x, const void *y) {
    const tok *a = x, *b = y;
    size_t n = a->n < b->n ? a->n : b->n;
    for (size_t i = 0; i < n; i++)
        if (a->p[i] != b->p[i]) return a->p[i] < b->p[i] ? -1 : 1;
    return a->n < b->n ? -1 : a->n > b->n;
}

static tok *tokens(const cps *s, size_t *n) {
    *n = 0;
    tok *t = malloc((s->n + 1) * sizeof *t);
    if (!t) return NULL;
    for (size_t i = 0; i < s->n;) {
        size_t j = i;
        while (j < s->n && s->v[j] != ' ') j++;
        t[(*n)++] = (tok){s->v + i, j - i};
        i = j + 1;
    }
    qsort(t, *n, sizeof *t, tok_cmp);
    return t;
}

dspy_status dspy_f1_score(const char *prediction, const char *ground_truth, double *out) {
    *out = 0;
    cps p = {0}, g = {0};
    tok *tp = NULL, *tg = NULL;
    size_t np = 0, ng = 0;
    dspy_status st = normalize_cps(prediction, &p);
    if (!st) st = normalize_cps(ground_truth, &g);
    if (!st && (!(tp = tokens(&p, &np)) || !(tg = tokens(&g, &ng))))
        st = dspy_fail(DSPY_ERR_NOMEM, "f1_score: out of memory");
    if (!st) {
        /* Counter(a) & Counter(b): a merge of the two sorted token lists */
        size_t same = 0;
        for (size_t i = 0, j = 0; i < np && j < ng;) {
            int c = tok_cmp(&tp[i], &tg[j]);
            if (c == 0) {
                same++;
                i++;
                j++;
            } else if (c < 0) {
                i++;
            } else {
                j++;
            }
        }
        if (same) {
            double precision = 1.0 * (double)same / (double)np, recall = 1.0 * (double)same / (double)ng;
            *out = (2 * precision * recall) / (precision + recall);
        }
    }
    free(tp);
    free(tg);
    free(p.v);
    free(g.v);
    return st;
}
