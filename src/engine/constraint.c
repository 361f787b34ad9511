/* constraint.c — token-level automata for constrained sampling (dspy/constraint.h).
 *
 * Each state keeps its entries (token, next) sorted by token, so lookups are a binary search and
 * a mask is one pass over the entries; a FREE state's mask starts all ones and its entries are
 * the exceptions. Inserting keeps the order (a memmove): automata are built once and small.
 */
#include "dspy/constraint.h"

#include <stdlib.h>
#include <string.h>

#define CTRY(expr)                \
    do {                          \
        dspy_status t_ = (expr);  \
        if (t_) return t_;        \
    } while (0)

typedef struct cstate {
    bool free_mode;  /* FREE: all tokens allowed unless an entry says otherwise */
    bool accept;     /* eos allowed */
    int32_t dflt;    /* FREE: the next state of tokens without an entry */
    int32_t *tok, *next;
    int32_t n, cap;
    int32_t *jump; /* the jump-forward tokens (dspy_constraint_set_jump), n_jump of them */
    int32_t n_jump;
} cstate;

struct dspy_constraint {
    int32_t n_states, vocab;
    cstate *s;
};

dspy_status dspy_constraint_new(int32_t n_states, int32_t vocab_size, dspy_constraint **out) {
    *out = NULL;
    if (n_states <= 0 || vocab_size <= 0)
        return dspy_fail(DSPY_ERR_ARG, "constraint: %d states over a vocabulary of %d: both must be positive",
                         n_states, vocab_size);
    dspy_constraint *c = calloc(1, sizeof *c);
    if (c) c->s = calloc((size_t)n_states, sizeof *c->s);
    if (!c || !c->s) {
        free(c);
        return dspy_fail(DSPY_ERR_NOMEM, "constraint: out of memory for %d states", n_states);
    }
    c->n_states = n_states;
    c->vocab = vocab_size;
    *out = c;
    return DSPY_OK;
}

void dspy_constraint_free(dspy_constraint *c) {
    if (!c) return;
    for (int32_t i = 0; i < c->n_states; i++) {
        free(c->s[i].tok);
        free(c->s[i].next);
        free(c->s[i].jump);
    }
    free(c->s);
    free(c);
}

static dspy_status check_state(const dspy_constraint *c, int32_t s, const char *what) {
    if (s < 0 || s >= c->n_states)
        return dspy_fail(DSPY_ERR_ARG, "constraint: %s %d is not a state (0 .. %d)", what, s, c->n_states - 1);
    return DSPY_OK;
}

dspy_status dspy_constraint_set_free(dspy_constraint *c, int32_t state, int32_t next) {
    CTRY(check_state(c, state, "state"));
    CTRY(check_state(c, next, "next state"));
    c->s[state].free_mode = true;
    c->s[state].dflt = next;
    return DSPY_OK;
}

dspy_status dspy_constraint_set_accept(dspy_constraint *c, int32_t state, bool accept) {
    CTRY(check_state(c, state, "state"));
    c->s[state].accept = accept;
    return DSPY_OK;
}

/* Index of the first entry >= token. */
static int32_t lower_bound(const cstate *s, int32_t token) {
    int32_t lo = 0, hi = s->n;
    while (lo < hi) {
        int32_t mid = (lo + hi) / 2;
        if (s->tok[mid] < token) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

dspy_status dspy_constraint_set_token(dspy_constraint *c, int32_t state, int32_t token, int32_t next) {
    CTRY(check_state(c, state, "state"));
    if (next != -1) CTRY(check_state(c, next, "next state"));
    if (token < 0 || token >= c->vocab)
        return dspy_fail(DSPY_ERR_ARG, "constraint: token %d is outside the vocabulary [0, %d)", token, c->vocab);
    cstate *s = &c->s[state];
    int32_t i = lower_bound(s, token);
    if (i < s->n && s->tok[i] == token) {
        s->next[i] = next;
        return DSPY_OK;
    }
    if (s->n == s->cap) {
        int32_t nc = s->cap ? 2 * s->cap : 8;
        int32_t *nt = realloc(s->tok, sizeof(int32_t) * (size_t)nc);
        if (!nt) return dspy_fail(DSPY_ERR_NOMEM, "constraint: out of memory");
        s->tok = nt;
        int32_t *nn = realloc(s->next, sizeof(int32_t) * (size_t)nc);
        if (!nn) return dspy_fail(DSPY_ERR_NOMEM, "constraint: out of memory");
        s->next = nn;
        s->cap = nc;
    }
    memmove(s->tok + i + 1, s->tok + i, sizeof(int32_t) * (size_t)(s->n - i));
    memmove(s->next + i + 1, s->next + i, sizeof(int32_t) * (size_t)(s->n - i));
    s->tok[i] = token;
    s->next[i] = next;
    s->n++;
    return DSPY_OK;
}

dspy_status dspy_constraint_set_jump(dspy_constraint *c, int32_t state, const int32_t *tokens, int32_t n) {
    CTRY(check_state(c, state, "state"));
    if (n < 0 || (n > 0 && !tokens)) return dspy_fail(DSPY_ERR_ARG, "constraint: a jump list of %d tokens", n);
    for (int32_t i = 0, q = state; i < n; i++) {
        int32_t nx = dspy_constraint_next(c, q, tokens[i]);
        if (nx < 0)
            return dspy_fail(DSPY_ERR_ARG, "constraint: jump token %d (%d of the list from state %d) is not allowed "
                                           "in state %d", tokens[i], i, state, q);
        q = nx;
    }
    int32_t *j = NULL;
    if (n > 0) {
        if (!(j = malloc(sizeof(int32_t) * (size_t)n))) return dspy_fail(DSPY_ERR_NOMEM, "constraint: out of memory");
        memcpy(j, tokens, sizeof(int32_t) * (size_t)n);
    }
    free(c->s[state].jump);
    c->s[state].jump = j;
    c->s[state].n_jump = n;
    return DSPY_OK;
}

const int32_t *dspy_constraint_jump(const dspy_constraint *c, int32_t state, int32_t *n) {
    *n = 0;
    if (state < 0 || state >= c->n_states || c->s[state].n_jump == 0) return NULL;
    *n = c->s[state].n_jump;
    return c->s[state].jump;
}

int32_t dspy_constraint_states(const dspy_constraint *c) { return c->n_states; }
int32_t dspy_constraint_vocab(const dspy_constraint *c) { return c->vocab; }

int32_t dspy_constraint_next(const dspy_constraint *c, int32_t state, int32_t token) {
    if (state < 0 || state >= c->n_states || token < 0 || token >= c->vocab) return -1;
    const cstate *s = &c->s[state];
    int32_t i = lower_bound(s, token);
    if (i < s->n && s->tok[i] == token) return s->next[i];
    return s->free_mode ? s->dflt : -1;
}

bool dspy_constraint_accepts(const dspy_constraint *c, int32_t state) {
    return state >= 0 && state < c->n_states && c->s[state].accept;
}

int64_t dspy_constraint_count(const dspy_constraint *c, int32_t state) {
    if (state < 0 || state >= c->n_states) return 0;
    const cstate *s = &c->s[state];
    int64_t n = s->free_mode ? c->vocab : 0;
    for (int32_t i = 0; i < s->n; i++) {
        bool allowed = s->next[i] != -1;
        if (s->free_mode) n -= !allowed;
        else n += allowed;
    }
    return n;
}

void dspy_constraint_mask(const dspy_constraint *c, int32_t state, const int32_t *eos, int32_t n_eos,
                          uint32_t *words) {
    const int32_t W = (c->vocab + 31) / 32;
    const cstate *s = &c->s[state];
    if (s->free_mode) {
        memset(words, 0xff, sizeof(uint32_t) * (size_t)W);
        if (c->vocab % 32) words[W - 1] = (1u << (c->vocab % 32)) - 1; /* no bits past the vocabulary */
    } else {
        memset(words, 0, sizeof(uint32_t) * (size_t)W);
    }
    for (int32_t i = 0; i < s->n; i++) {
        uint32_t bit = 1u << (s->tok[i] % 32);
        if (s->next[i] != -1) words[s->tok[i] / 32] |= bit;
        else words[s->tok[i] / 32] &= ~bit;
    }
    /* eos ids: allowed exactly in accepting states */
    for (int32_t k = 0; k < n_eos; k++) {
        int32_t t = eos[k];
        if (t < 0 || t >= c->vocab) continue;
        if (s->accept) words[t / 32] |= 1u << (t % 32);
        else words[t / 32] &= ~(1u << (t % 32));
    }
}

/* Breadth-first over the states reachable from 0 (successors: the entries' next states and a
 * FREE state's default, when some token still takes it). */
dspy_status dspy_constraint_check(const dspy_constraint *c, bool has_eos) {
    int32_t *queue = malloc(sizeof(int32_t) * (size_t)c->n_states);
    bool *seen = calloc((size_t)c->n_states, 1);
    dspy_status st = DSPY_OK;
    if (!queue || !seen) {
        st = dspy_fail(DSPY_ERR_NOMEM, "constraint: out of memory checking %d states", c->n_states);
        goto done;
    }
    int32_t head = 0, tail = 0;
    queue[tail++] = 0;
    seen[0] = true;
    while (head < tail) {
        int32_t q = queue[head++];
        const cstate *s = &c->s[q];
        int64_t n = dspy_constraint_count(c, q);
        if (n == 0 && !(s->accept && has_eos)) {
            st = dspy_fail(DSPY_ERR_ARG, "constraint: state %d, reachable from the start, allows no token%s", q,
                           s->accept ? " (it accepts, but the model has no eos id)" : "");
            goto done;
        }
        for (int32_t i = 0; i <= s->n; i++) {
            int32_t nx = i < s->n ? s->next[i] : (s->free_mode && n > 0 ? s->dflt : -1);
            if (nx >= 0 && !seen[nx]) {
                seen[nx] = true;
                queue[tail++] = nx;
            }
        }
    }
done:
    free(queue);
    free(seen);
    return st;
}
