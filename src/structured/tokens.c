/* tokens.c — from a byte DFA to a token automaton over a tokenizer's vocabulary
 * (structured_priv.h, dspy/structured.h).
 *
 * The vocabulary is a trie of the tokens' byte strings. For a DFA state q, a depth-first walk of
 * the trie alongside the DFA finds every token whose bytes walk from q without dying, and where
 * each lands: dead branches are cut at once, so a state inside a literal costs a few hundred
 * steps and a free-text state one pass over the trie.
 *
 * Token states: one per DFA state, except in a bounded region (K = its max_tokens), where each
 * landable DFA state q has K copies (q, 0) .. (q, K-1), the level counting the tokens taken
 * inside the region. A token from (q, k) landing at q' in the same region goes to (q', k + 1);
 * at level K it goes instead to the start of q''s closing chain: new DFA states spelling the
 * shortest byte path from q' out of the region (a '"', a blank line), so the text must end.
 * Entering a region from outside starts at level 0. A token landing on a transient state of a
 * bounded region (inside an escape) is not allowed.
 *
 * A state where more than half the vocabulary is allowed becomes a FREE state whose default is
 * the most common target; the rest are exceptions.
 */
#include <stdlib.h>
#include <string.h>

#include "dspy/constraint.h"
#include "structured/structured_priv.h"

typedef struct tnode {
    int32_t child, sibling; /* -1 none */
    int32_t token;          /* first token ending here, -1 none (more in dup_next) */
    unsigned char byte;
} tnode;

struct dspy_structured_vocab {
    int32_t vocab;     /* model vocabulary (automaton size) */
    tnode *nodes;      /* node 0 is the root */
    int32_t n_nodes, cap_nodes;
    int32_t *dup_next; /* per token: the next token with the same bytes, -1 none */
    int32_t root_child[256];
};

/* The child of trie node `node` (-1: the root) by byte b, -1 none. */
static int32_t child_of(const dspy_structured_vocab *v, int32_t node, unsigned char b) {
    if (node < 0) return v->root_child[b];
    for (int32_t k = v->nodes[node].child; k >= 0; k = v->nodes[k].sibling)
        if (v->nodes[k].byte == b) return k;
    return -1;
}

static int32_t node_new(dspy_structured_vocab *v, unsigned char b) {
    if (v->n_nodes == v->cap_nodes) {
        int32_t nc = v->cap_nodes ? 2 * v->cap_nodes : 1 << 16;
        tnode *n = realloc(v->nodes, (size_t)nc * sizeof *n);
        if (!n) return -1;
        v->nodes = n;
        v->cap_nodes = nc;
    }
    v->nodes[v->n_nodes] = (tnode){-1, -1, -1, b};
    return v->n_nodes++;
}

void dspy_structured_vocab_free(dspy_structured_vocab *v) {
    if (!v) return;
    free(v->nodes);
    free(v->dup_next);
    free(v);
}

dspy_status dspy_structured_vocab_new(const dspy_tokenizer *tok, int32_t model_vocab, dspy_structured_vocab **out) {
    *out = NULL;
    int32_t tv = dspy_tokenizer_vocab_size(tok);
    if (model_vocab < tv)
        return dspy_fail(DSPY_ERR_ARG, "structured: the model vocabulary (%d) is smaller than the tokenizer's (%d)",
                         model_vocab, tv);
    dspy_structured_vocab *v = calloc(1, sizeof *v);
    if (!v) return dspy_fail(DSPY_ERR_NOMEM, "structured: out of memory");
    v->vocab = model_vocab;
    v->dup_next = malloc((size_t)model_vocab * sizeof *v->dup_next);
    if (!v->dup_next || node_new(v, 0) < 0) goto fail;
    for (int i = 0; i < 256; i++) v->root_child[i] = -1;
    for (int32_t i = 0; i < model_vocab; i++) v->dup_next[i] = -1;
    for (int32_t t = 0; t < tv; t++) {
        size_t len;
        const char *b = dspy_tokenizer_token_bytes(tok, t, &len);
        if (!b || len == 0 || dspy_tokenizer_is_special(tok, t)) continue; /* never generated freely */
        int32_t cur = -1;
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)b[i];
            int32_t found = child_of(v, cur, c);
            if (found < 0) {
                if ((found = node_new(v, c)) < 0) goto fail;
                if (cur < 0) {
                    v->root_child[c] = found;
                } else {
                    v->nodes[found].sibling = v->nodes[cur].child;
                    v->nodes[cur].child = found;
                }
            }
            cur = found;
        }
        v->dup_next[t] = v->nodes[cur].token;
        v->nodes[cur].token = t;
    }
    *out = v;
    return DSPY_OK;
fail:
    dspy_structured_vocab_free(v);
    return dspy_fail(DSPY_ERR_NOMEM, "structured: out of memory building the vocabulary trie");
}

/* ---- walking --------------------------------------------------------------------------- */

typedef struct hit {
    int32_t token, target; /* target: DFA state where the token's bytes land */
} hit;

typedef struct hits {
    hit *h;
    int64_t n, cap;
} hits;

static bool hits_push(hits *l, int32_t token, int32_t target) {
    if (l->n == l->cap) {
        int64_t nc = l->cap ? 2 * l->cap : 1024;
        hit *h = realloc(l->h, (size_t)nc * sizeof *h);
        if (!h) return false;
        l->h = h;
        l->cap = nc;
    }
    l->h[l->n++] = (hit){token, target};
    return true;
}

/* Every token walking from DFA state q, with where it lands (unsorted). */
static bool walk(const dspy_structured_vocab *v, const dfa *d, int32_t q, hits *out, int32_t *stack_node,
                 int32_t *stack_state) {
    out->n = 0;
    int32_t sp = 0;
    for (int c = 0; c < 256; c++) {
        int32_t nx = d->next[(size_t)q * 256 + (size_t)c];
        if (nx >= 0 && v->root_child[c] >= 0) {
            stack_node[sp] = v->root_child[c];
            stack_state[sp++] = nx;
        }
    }
    while (sp) {
        --sp;
        int32_t node = stack_node[sp], s = stack_state[sp];
        for (int32_t t = v->nodes[node].token; t >= 0; t = v->dup_next[t])
            if (!hits_push(out, t, s)) return false;
        for (int32_t k = v->nodes[node].child; k >= 0; k = v->nodes[k].sibling) {
            int32_t nx = d->next[(size_t)s * 256 + v->nodes[k].byte];
            if (nx >= 0) {
                stack_node[sp] = k;
                stack_state[sp++] = nx;
            }
        }
    }
    return true;
}

static int cmp_hit(const void *a, const void *b) {
    int32_t x = ((const hit *)a)->token, y = ((const hit *)b)->token;
    return (x > y) - (x < y);
}

/* ---- compiling ------------------------------------------------------------------------- */

typedef struct plan {
    const dfa *d;
    int32_t *base;    /* per DFA state: its first token state, -1 when it has none */
    int32_t *levels;  /* per DFA state: 1, or K in a bounded region */
    int32_t *closing; /* per DFA state in a bounded region: its closing chain's first state */
} plan;

static int32_t bound_of(const dfa *d, int32_t q) {
    int32_t r = d->region[q];
    return r >= 0 ? d->regions[r].max_tokens : 0;
}

/* The token state a token from (q, k) lands in when its bytes end at DFA state t; -1 banned. */
static int32_t target_state(const plan *p, int32_t q, int32_t k, int32_t t) {
    const dfa *d = p->d;
    int32_t K = bound_of(d, t);
    if (K <= 0) return p->base[t];
    if (d->transient[t]) return -1;
    if (d->region[q] != d->region[t]) return p->base[t];
    if (k + 1 < K) return p->base[t] + k + 1;
    return p->base[p->closing[t]];
}

/* Adds to d, for each landable state of a bounded region, the chain spelling its shortest way
 * out of the region (breadth-first search over bytes). */
static dspy_status add_closings(dfa *d, int32_t **closing_out) {
    int32_t n0 = d->n;
    int32_t *closing = malloc((size_t)n0 * sizeof *closing), *prev = malloc((size_t)n0 * sizeof *prev);
    int32_t *queue = malloc((size_t)n0 * sizeof *queue);
    unsigned char *pbyte = malloc((size_t)n0);
    unsigned char *path = malloc((size_t)n0 + 1);
    dspy_status st = DSPY_OK;
    if (!closing || !prev || !queue || !pbyte || !path) {
        st = dspy_fail(DSPY_ERR_NOMEM, "structured: out of memory");
        goto done;
    }
    for (int32_t q = 0; q < n0; q++) closing[q] = -1;
    for (int32_t q = 0; q < n0; q++) {
        if (bound_of(d, q) <= 0 || d->transient[q]) continue;
        int32_t r = d->region[q];
        for (int32_t i = 0; i < n0; i++) prev[i] = -2;
        int32_t head = 0, tail = 0, exit_state = -1;
        queue[tail++] = q;
        prev[q] = -1;
        while (head < tail && exit_state < 0) {
            int32_t s = queue[head++];
            for (int c = 0; c < 256; c++) {
                int32_t nx = d->next[(size_t)s * 256 + (size_t)c];
                if (nx < 0 || prev[nx] != -2) continue;
                prev[nx] = s;
                pbyte[nx] = (unsigned char)c;
                if (d->region[nx] != r) {
                    exit_state = nx;
                    break;
                }
                queue[tail++] = nx;
            }
        }
        if (exit_state < 0) {
            st = dspy_fail(DSPY_ERR_ARG, "structured: a bounded text has no way out (internal error)");
            goto done;
        }
        int32_t len = 0;
        for (int32_t s = exit_state; s != q; s = prev[s]) path[len++] = pbyte[s];
        /* path is reversed: path[len-1] is the first byte */
        int32_t first = -1, last = -1;
        for (int32_t i = len - 1; i >= 0; i--) {
            int32_t c = dspy_dfa_add_state(d);
            if (c < 0) {
                st = dspy_fail(DSPY_ERR_NOMEM, "structured: out of memory");
                goto done;
            }
            if (last >= 0) d->next[(size_t)last * 256 + path[i + 1]] = c;
            else first = c;
            last = c;
        }
        d->next[(size_t)last * 256 + path[0]] = exit_state;
        closing[q] = first;
    }
    goto done;
done:
    free(prev);
    free(queue);
    free(pbyte);
    free(path);
    if (st) {
        free(closing);
        closing = NULL;
    }
    *closing_out = closing;
    return st;
}

enum { JUMP_MAX_BYTES = 256, JUMP_MAX_TOKENS = 64 };

/* Jump-forward lists (dspy_constraint_set_jump): from each token state, the bytes every path
 * must write next — the DFA's chain of states with exactly one byte out, up to an accepting state
 * or a branch — cut into tokens by longest match over the trie, each token allowed in turn from
 * the state the last one reached (one banned there, e.g. at the bound of a bounded text, ends the
 * list). Longest match, not the tokenizer's merges: the engine only drafts these tokens and
 * samples every row, so a model that writes another tokenization loses the saved steps, not
 * its choice. */
static dspy_status add_jumps(const dspy_structured_vocab *v, const dfa *d, const plan *p, dspy_constraint *c) {
    unsigned char buf[JUMP_MAX_BYTES];
    int32_t toks[JUMP_MAX_TOKENS];
    for (int32_t q = 0; q < d->n; q++) {
        if (p->base[q] < 0) continue;
        int32_t len = 0;
        for (int32_t s = q; len < JUMP_MAX_BYTES && !d->accept[s];) {
            int32_t only = -1, nx = -1;
            for (int b = 0; b < 256; b++) {
                int32_t t = d->next[(size_t)s * 256 + (size_t)b];
                if (t < 0) continue;
                if (only >= 0) {
                    only = -2;
                    break;
                }
                only = b, nx = t;
            }
            if (only < 0) break;
            buf[len++] = (unsigned char)only;
            s = nx;
        }
        for (int32_t k = 0; len > 0 && k < p->levels[q]; k++) {
            const int32_t state = p->base[q] + k;
            int32_t pos = 0, nt = 0, cur = state;
            while (pos < len && nt < JUMP_MAX_TOKENS) {
                int32_t node = child_of(v, -1, buf[pos]), depth = 1, best = -1, blen = 0;
                while (node >= 0) {
                    for (int32_t t = v->nodes[node].token; t >= 0; t = v->dup_next[t])
                        if (dspy_constraint_next(c, cur, t) >= 0) {
                            best = t, blen = depth;
                            break;
                        }
                    if (pos + depth >= len) break;
                    node = child_of(v, node, buf[pos + depth]);
                    depth++;
                }
                if (best < 0) break;
                toks[nt++] = best;
                cur = dspy_constraint_next(c, cur, best);
                pos += blen;
            }
            dspy_status st = nt > 0 ? dspy_constraint_set_jump(c, state, toks, nt) : DSPY_OK;
            if (st) return st;
        }
    }
    return DSPY_OK;
}

dspy_status dspy_tokens_compile(const dspy_structured_vocab *v, dfa *d, dspy_constraint **out) {
    *out = NULL;
    dspy_status st = DSPY_OK;
    plan p = {d, NULL, NULL, NULL};
    int32_t n0 = d->n;
    hits h = {0};
    int32_t *sn = NULL, *ss = NULL, *count = NULL, *tgt = NULL;
    dspy_constraint *c = NULL;
    if ((st = add_closings(d, &p.closing))) return st;
    int32_t n = d->n;
    p.base = malloc((size_t)n * sizeof *p.base);
    p.levels = malloc((size_t)n * sizeof *p.levels);
    /* the trie walk's stack holds at most one entry per trie node */
    sn = malloc(((size_t)v->n_nodes + 256) * sizeof *sn);
    ss = malloc(((size_t)v->n_nodes + 256) * sizeof *ss);
    count = calloc((size_t)n, sizeof *count);
    tgt = malloc((size_t)v->vocab * sizeof *tgt);
    if (!p.base || !p.levels || !sn || !ss || !count || !tgt) {
        st = dspy_fail(DSPY_ERR_NOMEM, "structured: out of memory compiling the token automaton");
        goto done;
    }
    int64_t total = 0;
    for (int32_t q = 0; q < n; q++) {
        int32_t K = q < n0 ? bound_of(d, q) : 0;
        if (K > 0 && d->transient[q]) {
            p.base[q] = -1;
            p.levels[q] = 0;
            continue;
        }
        p.levels[q] = K > 0 ? K : 1;
        p.base[q] = (int32_t)total;
        total += p.levels[q];
    }
    if (total > INT32_MAX / 2) {
        st = dspy_fail(DSPY_ERR_ARG, "structured: %lld token states: lower the token bounds", (long long)total);
        goto done;
    }
    if ((st = dspy_constraint_new((int32_t)total, v->vocab, &c))) goto done;
    for (int32_t i = 0; i < v->vocab; i++) tgt[i] = -1;
    for (int32_t q = 0; q < n; q++) {
        if (p.base[q] < 0) continue;
        if (!walk(v, d, q, &h, sn, ss)) {
            st = dspy_fail(DSPY_ERR_NOMEM, "structured: out of memory compiling the token automaton");
            goto done;
        }
        /* small hit lists are sorted; large ones go through tgt[] (token -> target), read in
         * token order, so that entries are appended in order either way */
        bool big = h.n > 4096 || h.n * 2 > v->vocab;
        if (big) for (int64_t i = 0; i < h.n; i++) tgt[h.h[i].token] = h.h[i].target;
        else qsort(h.h, (size_t)h.n, sizeof *h.h, cmp_hit);
        /* the most common target decides between FREE and LIST */
        int32_t mode = -1;
        if (h.n * 2 > v->vocab) {
            for (int64_t i = 0; i < h.n; i++)
                if (++count[h.h[i].target] > (mode >= 0 ? count[mode] : 0)) mode = h.h[i].target;
            for (int64_t i = 0; i < h.n; i++) count[h.h[i].target] = 0;
        }
        for (int32_t k = 0; k < p.levels[q]; k++) {
            int32_t s = p.base[q] + k;
            if (d->accept[q] && (st = dspy_constraint_set_accept(c, s, true))) goto done;
            int32_t dflt = mode >= 0 ? target_state(&p, q, k, mode) : -1;
            if (dflt >= 0 && (st = dspy_constraint_set_free(c, s, dflt))) goto done;
            if (big) {
                /* FREE: exceptions are tokens not walking (banned) and other targets; LIST: the
                 * tokens walking */
                for (int32_t t = 0; t < v->vocab; t++) {
                    int32_t to = tgt[t] < 0 ? -1 : tgt[t] == mode ? dflt : target_state(&p, q, k, tgt[t]);
                    if (dflt >= 0 ? to != dflt : to >= 0)
                        if ((st = dspy_constraint_set_token(c, s, t, to))) goto done;
                }
            } else {
                for (int64_t i = 0; i < h.n; i++) {
                    int32_t to = target_state(&p, q, k, h.h[i].target);
                    if (to >= 0 && (st = dspy_constraint_set_token(c, s, h.h[i].token, to))) goto done;
                }
            }
        }
        if (big)
            for (int64_t i = 0; i < h.n; i++) tgt[h.h[i].token] = -1;
    }
    if ((st = add_jumps(v, d, &p, c))) goto done;
    *out = c;
    c = NULL;
    goto done;
done:
    dspy_constraint_free(c);
    free(h.h);
    free(sn);
    free(ss);
    free(count);
    free(tgt);
    free(p.base);
    free(p.levels);
    free(p.closing);
    return st;
}
