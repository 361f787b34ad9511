/* tokenizer_encode.c — text to token ids: added-token split, pre-tokenizer, byte-level BPE.
 *
 * Follows HF tokenizers (AddedVocabulary::split_with_indices, pre_tokenizers::split with
 * behavior Isolated, models::bpe::Word::merge_all) so that ids match transformers exactly:
 *  - added tokens are found leftmost-longest in the raw text (a byte trie), specials only when
 *    parse_special; lstrip/rstrip widen the match over whitespace; single_word rejects a match
 *    touching a word character;
 *  - each text segment between them is split by the pre-tokenizer regex: the Llama 3 / Qwen2
 *    pattern through a hand-written matcher that reproduces the regex's leftmost-first
 *    alternation and backtracking, anything else through PCRE2; text between matches is kept
 *    as its own piece (Isolated);
 *  - each piece is BPE-merged over its raw bytes: with ignore_merges a piece that is itself a
 *    vocabulary token is emitted directly; otherwise the lowest-rank adjacent pair merges first
 *    (leftmost on ties), by a quadratic loop for short pieces and a binary heap for long ones.
 * An NFC normalizer (Qwen2) is applied to each segment between added tokens (unicode_nfc.c).
 * No BPE cache is kept: with ignore_merges most pieces are one vocabulary lookup, which is what
 * a cache lookup would cost (measured: ~96 MB/s per Banking77 text without one).
 */
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer_internal.h"
#include "model/unicode_tables.h"

/* ---- output vector ---------------------------------------------------------------------- */

typedef struct {
    int32_t *ids;
    size_t *starts; /* NULL unless offsets were asked for */
    size_t n, cap;
    bool want_starts;
    bool oom;
    size_t max; /* stop once more than this many ids were produced (0 = no limit) */
    size_t max_token_bytes; /* with max: the longest token's bytes, to refuse a huge piece unseen */
    bool over;  /* ... which happened: the caller's budget check failed, the work stayed bounded */
} idvec;

#define IDVEC_STOP(v) ((v)->oom || (v)->over)

static bool idvec_grow(idvec *v, size_t need) {
    if (v->n + need <= v->cap) return true;
    size_t nc = v->cap ? v->cap * 2 : 64;
    while (nc < v->n + need) nc *= 2;
    int32_t *ni = realloc(v->ids, nc * sizeof *ni);
    if (!ni) return !(v->oom = true);
    v->ids = ni;
    if (v->want_starts) {
        size_t *ns = realloc(v->starts, nc * sizeof *ns);
        if (!ns) return !(v->oom = true);
        v->starts = ns;
    }
    v->cap = nc;
    return true;
}

static inline void idvec_push(idvec *v, int32_t id, size_t start) {
    if (v->max && v->n >= v->max) {
        v->over = true;
        return;
    }
    if (v->n == v->cap && !idvec_grow(v, 1)) return;
    v->ids[v->n] = id;
    if (v->want_starts) v->starts[v->n] = start;
    v->n++;
}

/* ---- merges ----------------------------------------------------------------------------- */

static inline uint64_t mix64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return k;
}

/* Rank of merging (a, b), or INT32_MAX; *merged gets the result id. */
static inline int32_t merge_rank(const dspy_tokenizer *tok, int32_t a, int32_t b, int32_t *merged) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint64_t i = mix64(key) & tok->merge_mask;
    for (;;) {
        const merge_slot *s = &tok->merges[i];
        if (s->key == key) {
            *merged = s->merged;
            return s->rank;
        }
        if (s->key == UINT64_MAX) return INT32_MAX;
        i = (i + 1) & tok->merge_mask;
    }
}

/* ---- BPE -------------------------------------------------------------------------------- */

#define BPE_SMALL_MAX 64

/* Short pieces: symbols in arrays, rank of each adjacent pair cached, lowest rank merged
 * (leftmost on ties) until no pair has a merge. */
static void bpe_small(const dspy_tokenizer *tok, const unsigned char *p, size_t n, size_t base,
                      idvec *out) {
    int32_t sym[BPE_SMALL_MAX], rank[BPE_SMALL_MAX], merged[BPE_SMALL_MAX];
    uint32_t pos[BPE_SMALL_MAX];
    int m = (int)n;
    for (int i = 0; i < m; i++) {
        sym[i] = tok->byte_id[p[i]];
        pos[i] = (uint32_t)i;
    }
    for (int i = 0; i + 1 < m; i++) rank[i] = merge_rank(tok, sym[i], sym[i + 1], &merged[i]);
    while (m > 1) {
        int best = -1;
        int32_t br = INT32_MAX;
        for (int i = 0; i + 1 < m; i++)
            if (rank[i] < br) {
                br = rank[i];
                best = i;
            }
        if (best < 0) break;
        sym[best] = merged[best];
        int tail = m - best - 2; /* entries after best+1 */
        if (tail > 0) {
            memmove(&sym[best + 1], &sym[best + 2], (size_t)tail * sizeof sym[0]);
            memmove(&pos[best + 1], &pos[best + 2], (size_t)tail * sizeof pos[0]);
            memmove(&rank[best + 1], &rank[best + 2], (size_t)tail * sizeof rank[0]);
            memmove(&merged[best + 1], &merged[best + 2], (size_t)tail * sizeof merged[0]);
        }
        m--;
        if (best > 0) rank[best - 1] = merge_rank(tok, sym[best - 1], sym[best], &merged[best - 1]);
        if (best + 1 < m) rank[best] = merge_rank(tok, sym[best], sym[best + 1], &merged[best]);
    }
    if (!idvec_grow(out, (size_t)m)) return;
    for (int i = 0; i < m; i++) idvec_push(out, sym[i], base + pos[i]);
}

typedef struct {
    int32_t rank, pos, merged;
} heap_ent;

static inline bool heap_less(heap_ent a, heap_ent b) {
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void heap_push(heap_ent *h, size_t *n, heap_ent e) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t par = (i - 1) / 2;
        if (!heap_less(e, h[par])) break;
        h[i] = h[par];
        i = par;
    }
    h[i] = e;
}

static heap_ent heap_pop(heap_ent *h, size_t *n) {
    heap_ent top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(h[c + 1], h[c])) c++;
        if (!heap_less(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = last;
    return top;
}

/* Long pieces: doubly linked symbols and a heap of candidate merges, as HF's
 * Word::merge_all. A popped entry is stale when its left symbol died, has no right
 * neighbour any more, or the pair now merges into a different token. */
static void bpe_heap(const dspy_tokenizer *tok, const unsigned char *p, size_t n, size_t base,
                     idvec *out) {
    int32_t *sym = malloc(n * sizeof *sym);
    int32_t *prev = malloc(n * sizeof *prev);
    int32_t *next = malloc(n * sizeof *next);
    heap_ent *heap = malloc(2 * n * sizeof *heap);
    if (!sym || !prev || !next || !heap) {
        out->oom = true;
        goto done;
    }
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        sym[i] = tok->byte_id[p[i]];
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        heap_ent e = {0, (int32_t)i, 0};
        e.rank = merge_rank(tok, sym[i], sym[i + 1], &e.merged);
        if (e.rank != INT32_MAX) heap_push(heap, &hn, e);
    }
    while (hn > 0) {
        heap_ent e = heap_pop(heap, &hn);
        int32_t a = e.pos;
        if (sym[a] < 0 || next[a] < 0) continue;
        int32_t b = next[a], m;
        if (merge_rank(tok, sym[a], sym[b], &m) == INT32_MAX || m != e.merged) continue;
        sym[a] = m;
        sym[b] = -1;
        next[a] = next[b];
        if (next[b] >= 0) prev[next[b]] = a;
        if (prev[a] >= 0) {
            heap_ent l = {0, prev[a], 0};
            l.rank = merge_rank(tok, sym[prev[a]], sym[a], &l.merged);
            if (l.rank != INT32_MAX) heap_push(heap, &hn, l);
        }
        if (next[a] >= 0) {
            heap_ent r = {0, a, 0};
            r.rank = merge_rank(tok, sym[a], sym[next[a]], &r.merged);
            if (r.rank != INT32_MAX) heap_push(heap, &hn, r);
        }
    }
    for (int32_t i = 0; i >= 0; i = next[i]) idvec_push(out, sym[i], base + (size_t)i);
done:
    free(sym);
    free(prev);
    free(next);
    free(heap);
}

/* One pre-token [p, p+n) that starts at byte `base` of the text. */
static void bpe_piece(const dspy_tokenizer *tok, const unsigned char *p, size_t n, size_t base,
                      idvec *out) {
    /* A piece of n bytes needs at least n / (longest token) ids: one that cannot fit the budget
     * is refused before BPE, whose cost grows with the piece (a megabyte with no space in it) */
    if (out->max && out->max_token_bytes && (n + out->max_token_bytes - 1) / out->max_token_bytes > out->max - out->n) {
        out->over = true;
        return;
    }
    if (n == 1) {
        idvec_push(out, tok->byte_id[p[0]], base);
        return;
    }
    if (tok->ignore_merges) {
        int32_t id = dspy_tok_vocab_find(tok, (const char *)p, n);
        if (id >= 0) {
            idvec_push(out, id, base);
            return;
        }
    }
    if ((int)n <= tok->bpe_small_limit) bpe_small(tok, p, n, base, out);
    else bpe_heap(tok, p, n, base, out);
}

/* ---- the Llama 3 / Qwen2 split matcher -------------------------------------------------- */

/* Decodes the (valid) UTF-8 code point at s[i]; *len gets its byte length. */
static inline unsigned cp_at(const unsigned char *s, size_t i, int *len) {
    unsigned c = s[i];
    if (c < 0x80) {
        *len = 1;
        return c;
    }
    if (c < 0xE0) {
        *len = 2;
        return ((c & 0x1F) << 6) | (s[i + 1] & 0x3F);
    }
    if (c < 0xF0) {
        *len = 3;
        return ((c & 0x0F) << 12) | ((unsigned)(s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F);
    }
    *len = 4;
    return ((c & 0x07) << 18) | ((unsigned)(s[i + 1] & 0x3F) << 12) |
           ((unsigned)(s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F);
}

/* ASCII classes, so the common case skips the two-stage table. */
static const unsigned char k_ascii_cls[128] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 3, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,
};

/* Class of the code point at s[i] (i < n); *len its byte length. */
static inline int cls_at(const unsigned char *s, size_t i, int *len) {
    if (s[i] < 0x80) {
        *len = 1;
        return k_ascii_cls[s[i]];
    }
    return dspy_ucls(cp_at(s, i, len)) & DSPY_UCLS_MASK;
}

/* End of the \p{L}+ run starting at i. */
static inline size_t scan_class(const unsigned char *s, size_t i, size_t n, int want) {
    int l;
    while (i < n && cls_at(s, i, &l) == want) i += (size_t)l;
    return i;
}

static inline bool ieq(unsigned char c, char lower) { return (c | 0x20) == (unsigned char)lower; }

/* End of the match of
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,D}| ?[^\s\p{L}\p{N}]+[\r\n]*
 *   |\s*[\r\n]+|\s+(?!\S)|\s+
 * at s[i] (i < n; D = max_digits), with the regex's leftmost-first alternation. Every position
 * matches at least one character, so the split has no gaps. */
static size_t llama3_match(const unsigned char *s, size_t i, size_t n, int max_digits) {
    int l0;
    unsigned c0 = s[i];
    int k0 = cls_at(s, i, &l0);
    if (c0 == '\'' && i + 1 < n) {
        unsigned char c1 = s[i + 1];
        if (ieq(c1, 's') || ieq(c1, 't') || ieq(c1, 'm') || ieq(c1, 'd')) return i + 2;
        if (c1 == 0xC5 && i + 2 < n && s[i + 2] == 0xBF) return i + 3; /* U+017F folds to s */
        if (i + 2 < n) {
            unsigned char c2 = s[i + 2];
            if ((ieq(c1, 'r') && ieq(c2, 'e')) || (ieq(c1, 'v') && ieq(c2, 'e')) ||
                (ieq(c1, 'l') && ieq(c2, 'l')))
                return i + 3;
        }
    }
    if (k0 == DSPY_UCLS_LETTER) return scan_class(s, i + (size_t)l0, n, DSPY_UCLS_LETTER);
    size_t j = i + (size_t)l0;
    int l1;
    if (k0 != DSPY_UCLS_NUMBER && c0 != '\r' && c0 != '\n' && j < n &&
        cls_at(s, j, &l1) == DSPY_UCLS_LETTER)
        return scan_class(s, j + (size_t)l1, n, DSPY_UCLS_LETTER);
    if (k0 == DSPY_UCLS_NUMBER) {
        for (int d = 1; d < max_digits && j < n && cls_at(s, j, &l1) == DSPY_UCLS_NUMBER; d++)
            j += (size_t)l1;
        return j;
    }
    if (k0 == DSPY_UCLS_OTHER || (c0 == ' ' && j < n && cls_at(s, j, &l1) == DSPY_UCLS_OTHER)) {
        j = scan_class(s, j, n, DSPY_UCLS_OTHER);
        while (j < n && (s[j] == '\r' || s[j] == '\n')) j++;
        return j;
    }
    /* Whitespace: \s*[\r\n]+ ends after the run's last newline; else \s+(?!\S) takes the run
     * up to the end of text, or all but its last character; else \s+ takes the one character. */
    size_t last_nl = SIZE_MAX, last_start = i;
    j = i;
    while (j < n && cls_at(s, j, &l1) == DSPY_UCLS_SPACE) {
        if (s[j] == '\r' || s[j] == '\n') last_nl = j;
        last_start = j;
        j += (size_t)l1;
    }
    if (last_nl != SIZE_MAX) return last_nl + 1;
    if (j == n) return n;
    if (last_start > i) return last_start;
    return j;
}

/* ---- segments --------------------------------------------------------------------------- */

/* Pre-tokenizes and BPE-encodes seg[0, n), whose first byte is at offset `a` of the text. */
static void encode_pieces(const dspy_tokenizer *tok, const unsigned char *seg, size_t n, size_t a,
                          pcre2_match_data *md, idvec *out) {
    switch (tok->pretok) {
    case PRETOK_NONE:
        bpe_piece(tok, seg, n, a, out);
        return;
    case PRETOK_LLAMA3:
    case PRETOK_QWEN2: {
        int maxd = tok->pretok == PRETOK_LLAMA3 ? 3 : 1;
        for (size_t i = 0; i < n && !IDVEC_STOP(out);) {
            size_t e = llama3_match(seg, i, n, maxd);
            bpe_piece(tok, seg + i, e - i, a + i, out);
            i = e;
        }
        return;
    }
    case PRETOK_PCRE2: {
        /* off: start of the text not yet emitted; an empty match only cuts the gap there. */
        size_t off = 0, search = 0;
        while (search <= n && !IDVEC_STOP(out)) {
            int rc = pcre2_match(tok->re, seg, n, search, PCRE2_NO_UTF_CHECK, md, NULL);
            if (rc < 0) break;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t ms = ov[0], me = ov[1];
            if (ms > off) bpe_piece(tok, seg + off, ms - off, a + off, out);
            if (me > ms) bpe_piece(tok, seg + ms, me - ms, a + ms, out);
            off = me;
            if (me > ms) {
                search = me;
            } else {
                if (me >= n) break;
                search = me + 1;
                while (search < n && (seg[search] & 0xC0) == 0x80) search++;
            }
        }
        if (off < n && !IDVEC_STOP(out)) bpe_piece(tok, seg + off, n - off, a + off, out);
        return;
    }
    }
}

/* Encodes the text segment s[a, b) between added tokens: normalizes it (NFC) when the
 * tokenizer asks for it, then pre-tokenizes and BPE-encodes it. Token offsets of normalized text
 * point at the original characters. */
static void encode_segment(const dspy_tokenizer *tok, const unsigned char *s, size_t a, size_t b,
                           pcre2_match_data *md, idvec *out) {
    if (a >= b || IDVEC_STOP(out)) return;
    if (tok->nfc) {
        dspy_str norm = DSPY_STR_INIT;
        size_t *map = NULL;
        bool changed;
        if (dspy_nfc(s + a, b - a, a, &norm, &map, &changed) != DSPY_OK) {
            out->oom = true;
            return;
        }
        if (changed) {
            size_t first = out->n;
            encode_pieces(tok, (const unsigned char *)norm.ptr, norm.len, 0, md, out);
            if (out->want_starts && !IDVEC_STOP(out))
                for (size_t k = first; k < out->n; k++) out->starts[k] = map[out->starts[k]];
            free(map);
            dspy_str_free(&norm);
            return;
        }
        dspy_str_free(&norm);
    }
    encode_pieces(tok, s + a, b - a, a, md, out);
}

static inline bool is_space_at(const unsigned char *s, size_t i, int *len) {
    return cls_at(s, i, len) == DSPY_UCLS_SPACE;
}

/* Start of the code point that ends at s[i-1]. */
static size_t prev_cp(const unsigned char *s, size_t i) {
    do i--;
    while (i > 0 && (s[i] & 0xC0) == 0x80);
    return i;
}

static bool word_char_at(const unsigned char *s, size_t i) {
    int l;
    int k = cls_at(s, i, &l);
    return k == DSPY_UCLS_LETTER || k == DSPY_UCLS_NUMBER || s[i] == '_';
}

/* Longest added token (allowed by parse_special) matching at s[i]; -1 if none; *end its end. */
static int32_t trie_match(const dspy_tokenizer *tok, const unsigned char *s, size_t i, size_t n,
                          bool parse_special, size_t *end) {
    int32_t node = 0, best = -1;
    for (size_t j = i; j < n; j++) {
        int32_t c = tok->trie[node].first_child;
        while (c >= 0 && tok->trie[c].byte != s[j]) c = tok->trie[c].next_sibling;
        if (c < 0) break;
        node = c;
        int32_t t = tok->trie[node].token;
        if (t >= 0 && (parse_special || !tok->added[t].special)) {
            best = t;
            *end = j + 1;
        }
    }
    return best;
}

static dspy_status encode_impl(const dspy_tokenizer *tok, const char *text, size_t len,
                               bool add_special, bool parse_special, idvec *out) {
    const unsigned char *s = (const unsigned char *)text;
    size_t bad;
    if (!dspy_utf8_valid(text, len, &bad))
        return dspy_fail(DSPY_ERR_ARG,
                         "tokenizer: text is not valid UTF-8 (bad byte 0x%02x at offset %zu); "
                         "decode it as UTF-8 before encoding",
                         s[bad], bad);
    pcre2_match_data *md = NULL;
    if (tok->pretok == PRETOK_PCRE2) {
        md = pcre2_match_data_create_from_pattern(tok->re, NULL);
        if (!md) return dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory");
    }
    if (add_special)
        for (int32_t k = 0; k < tok->n_prefix; k++) idvec_push(out, tok->tmpl_prefix[k], 0);
    size_t seg = 0;
    for (size_t i = 0; i < len && !IDVEC_STOP(out);) {
        size_t end = 0;
        int32_t t = tok->trie_first[s[i]] ? trie_match(tok, s, i, len, parse_special, &end) : -1;
        if (t < 0) {
            i++;
            continue;
        }
        const added_token *at = &tok->added[t];
        size_t start = i;
        if (at->single_word &&
            ((start > 0 && word_char_at(s, prev_cp(s, start))) || (end < len && word_char_at(s, end)))) {
            i++;
            continue;
        }
        int l;
        if (at->lstrip)
            while (start > seg && is_space_at(s, prev_cp(s, start), &l)) start = prev_cp(s, start);
        if (at->rstrip)
            while (end < len && is_space_at(s, end, &l)) end += (size_t)l;
        encode_segment(tok, s, seg, start, md, out);
        idvec_push(out, at->id, start);
        seg = i = end;
    }
    encode_segment(tok, s, seg, len, md, out);
    if (add_special)
        for (int32_t k = 0; k < tok->n_suffix; k++) idvec_push(out, tok->tmpl_suffix[k], len);
    pcre2_match_data_free(md);
    if (out->oom) return dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory encoding %zu bytes", len);
    if (out->over)
        return dspy_fail(DSPY_ERR_CONTEXT, "tokenizer: the text is longer than %zu tokens (stopped there)", out->max);
    return DSPY_OK;
}

static dspy_status encode_public(const dspy_tokenizer *tok, const char *text, size_t len, bool add_special,
                                 bool parse_special, size_t max_tokens, int32_t **ids, size_t **starts, size_t *n) {
    *ids = NULL;
    if (starts) *starts = NULL;
    *n = 0;
    if (!tok || (!text && len)) return dspy_fail(DSPY_ERR_ARG, "tokenizer: encode needs a tokenizer and text");
    idvec v = {0};
    v.want_starts = starts != NULL;
    v.max = max_tokens;
    if (max_tokens)
        for (int32_t i = 0; i < tok->n_ids; i++) {
            size_t b = tok->bytes_off[i + 1] - tok->bytes_off[i];
            if (b > v.max_token_bytes) v.max_token_bytes = b;
        }
    size_t guess = len / 3 + 8;
    if (max_tokens && guess > max_tokens + 8) guess = max_tokens + 8;
    if (!idvec_grow(&v, guess)) return dspy_fail(DSPY_ERR_NOMEM, "tokenizer: out of memory");
    dspy_status st = encode_impl(tok, text ? text : "", len, add_special, parse_special, &v);
    if (st != DSPY_OK) {
        free(v.ids);
        free(v.starts);
        return st;
    }
    *ids = v.ids;
    if (starts) *starts = v.starts;
    *n = v.n;
    return DSPY_OK;
}

dspy_status dspy_tokenizer_encode_offsets(const dspy_tokenizer *tok, const char *text, size_t len,
                                          bool add_special, bool parse_special, int32_t **ids,
                                          size_t **starts, size_t *n) {
    return encode_public(tok, text, len, add_special, parse_special, 0, ids, starts, n);
}

dspy_status dspy_tokenizer_encode(const dspy_tokenizer *tok, const char *text, size_t len,
                                  bool add_special, bool parse_special, int32_t **ids, size_t *n) {
    return encode_public(tok, text, len, add_special, parse_special, 0, ids, NULL, n);
}

dspy_status dspy_tokenizer_encode_max(const dspy_tokenizer *tok, const char *text, size_t len, bool add_special,
                                      bool parse_special, size_t max_tokens, int32_t **ids, size_t *n) {
    return encode_public(tok, text, len, add_special, parse_special, max_tokens, ids, NULL, n);
}

dspy_status dspy_tok_compile_pcre2(dspy_tokenizer *tok, const char *pattern, const char *where) {
    int err;
    PCRE2_SIZE erroff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                                   &err, &erroff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return dspy_fail(DSPY_ERR_FORMAT,
                         "%s: pre_tokenizer Split regex does not compile with PCRE2 at offset %zu: %s",
                         where, (size_t)erroff, (const char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional speed-up; the interpreter is the fallback */
    pcre2_code_free(tok->re);
    tok->re = re;
    tok->pretok = PRETOK_PCRE2;
    return DSPY_OK;
}

dspy_status dspy_tokenizer_debug_force_pcre2(dspy_tokenizer *tok) {
    if (!tok->pattern) return dspy_fail(DSPY_ERR_STATE, "tokenizer: no Split pattern to compile");
    return dspy_tok_compile_pcre2(tok, tok->pattern, tok->path);
}

void dspy_tokenizer_debug_bpe_small_limit(dspy_tokenizer *tok, int limit) {
    tok->bpe_small_limit = limit < 0 ? 0 : limit > BPE_SMALL_MAX ? BPE_SMALL_MAX : limit;
}
