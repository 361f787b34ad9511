/* share_prefix.c — one optimizer step's examples as a shared prompt prefix plus continuations
 * (train/share_prefix.h).
 *
 * Three passes over the step: list its examples (the seg runs of every sequence), find the
 * prefix (longest common token prefix, cut before any labelled row and before any example's
 * last token), then group the continuations next-fit into sequences of at most max_T tokens and
 * write them: [prefix | continuation 1 | continuation 2 | ...] with seg 0, 1, 2, ..., positions
 * 0 .. P - 1 for the prefix and P .. n - 1 for an example of n tokens, labels as given.
 *
 * The grouping never needs more sequences than the step had: the examples of one input
 * sequence fit one output sequence (their continuations are shorter by P each, and one prefix
 * is added), and greedy next-fit gives the fewest contiguous groups. It is checked anyway.
 */
#include "train/share_prefix.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* One example of the step: n tokens of ids and (shifted) labels. */
struct share_ex {
    const int32_t *ids, *labels;
    int32_t n;
};

void dspy_share_buf_free(dspy_share_buf *b) {
    if (!b) return;
    free(b->mem);
    free(b->seqs);
    free(b->ex);
    memset(b, 0, sizeof *b);
}

/* Grows *p (elements of `size` bytes, capacity *cap) to hold n. */
static bool grow(void **p, size_t *cap, size_t n, size_t size) {
    if (n <= *cap) return true;
    size_t c = *cap ? *cap : 16;
    while (c < n) c *= 2;
    void *q = realloc(*p, c * size);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

/* The step's examples into b->ex; false (*n_ex untouched) when the step cannot be shared: a
 * sequence already with a prefix, or positions that do not restart at 0 per example. */
static dspy_status list_examples(dspy_share_buf *b, const dspy_train_seq *in, size_t k, bool *ok, size_t *n_ex) {
    size_t n = 0;
    *ok = false;
    for (size_t s = 0; s < k; s++) {
        const dspy_train_seq *q = &in[s];
        if (q->prefix != 0) return DSPY_OK;
        for (int32_t t0 = 0, t1; t0 < q->T; t0 = t1) {
            /* no seg: the whole sequence is one example */
            for (t1 = t0 + 1; t1 < q->T && (!q->seg || q->seg[t1] == q->seg[t0]); t1++) {}
            if (q->pos)
                for (int32_t i = t0; i < t1; i++)
                    if (q->pos[i] != i - t0) return DSPY_OK;
            if (!grow((void **)&b->ex, &b->ex_cap, n + 1, sizeof *b->ex))
                return dspy_fail(DSPY_ERR_NOMEM, "prefix-shared step: out of memory");
            b->ex[n++] = (struct share_ex){q->ids + t0, q->labels + t0, t1 - t0};
        }
    }
    *ok = true;
    *n_ex = n;
    return DSPY_OK;
}

/* The prefix the examples can share (see the file comment); 0 when there is none. */
static int32_t common_prefix(const struct share_ex *ex, size_t n) {
    int32_t P = ex[0].n;
    for (size_t e = 0; e < n; e++) {
        int32_t l = 0;
        while (l < P && l < ex[e].n && ex[e].ids[l] == ex[0].ids[l]) l++;
        P = l;
        /* the row before the first labelled one is the last that may be shared */
        for (int32_t t = 0; t < P; t++)
            if (ex[e].labels[t] != -100) P = t;
        if (P > ex[e].n - 1) P = ex[e].n - 1; /* every continuation keeps a token */
    }
    return P > 0 ? P : 0;
}

dspy_status dspy_share_prefix(dspy_share_buf *b, const dspy_train_seq *in, size_t k, int32_t max_T, int32_t min_prefix,
                              const dspy_train_seq **out, size_t *n_out, int32_t *prefix) {
    *out = in;
    *n_out = k;
    *prefix = 0;
    bool ok = false;
    size_t n = 0;
    dspy_status st = list_examples(b, in, k, &ok, &n);
    if (st) return st;
    if (!ok || n < 2) return DSPY_OK;
    for (size_t e = 0; e < n; e++)
        if (b->ex[e].n > max_T) return DSPY_OK;
    int32_t P = common_prefix(b->ex, n);
    if (P < min_prefix || P < 1) return DSPY_OK;
    /* group the continuations next-fit: output sequence i holds examples [first, first + count) */
    size_t groups = 0, tokens = 0;
    for (size_t e = 0, T = 0; e < n; e++) {
        size_t c = (size_t)(b->ex[e].n - P);
        if (T == 0 || T + c > (size_t)max_T) {
            if (groups == k) return DSPY_OK; /* more sequences than the step had: run it as given */
            groups++;
            T = (size_t)P;
            tokens += (size_t)P;
        }
        T += c;
        tokens += c;
    }
    if (!grow((void **)&b->seqs, &b->seq_cap, groups, sizeof *b->seqs) ||
        !grow((void **)&b->mem, &b->mem_cap, 4 * tokens, sizeof *b->mem))
        return dspy_fail(DSPY_ERR_NOMEM, "prefix-shared step: out of memory for %zu tokens", tokens);
    int32_t *cur = b->mem;
    size_t g = 0;
    for (size_t e = 0; e < n;) {
        /* this group's examples and length */
        size_t e1 = e, T = (size_t)P;
        while (e1 < n && (e1 == e || T + (size_t)(b->ex[e1].n - P) <= (size_t)max_T)) T += (size_t)(b->ex[e1++].n - P);
        int32_t *ids = cur, *pos = cur + T, *labels = cur + 2 * T, *seg = cur + 3 * T;
        cur += 4 * T;
        memcpy(ids, b->ex[e].ids, sizeof(int32_t) * (size_t)P);
        for (int32_t t = 0; t < P; t++) pos[t] = t, labels[t] = -100, seg[t] = 0;
        size_t t = (size_t)P;
        for (size_t x = e; x < e1; x++) {
            const struct share_ex *ex = &b->ex[x];
            size_t c = (size_t)(ex->n - P);
            memcpy(ids + t, ex->ids + P, sizeof(int32_t) * c);
            memcpy(labels + t, ex->labels + P, sizeof(int32_t) * c);
            for (size_t i = 0; i < c; i++) pos[t + i] = P + (int32_t)i, seg[t + i] = (int32_t)(x - e + 1);
            t += c;
        }
        b->seqs[g++] = (dspy_train_seq){ids, pos, labels, seg, (int32_t)T, P};
        e = e1;
    }
    *out = b->seqs;
    *n_out = groups;
    *prefix = P;
    return DSPY_OK;
}
