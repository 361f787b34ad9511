/* nfa.c — byte NFAs from fragments (Thompson's construction) and their determinisation (the
 * subset construction), for the structured-output compilers (structured_priv.h).
 *
 * Every state has at most one byte edge (a set of bytes to one target) and any number of
 * epsilon edges. Fragments are glued with epsilon edges from a fragment's `out` state. A DFA
 * state is the epsilon closure of a set of NFA states, kept as a sorted list and found again
 * through a hash table. The DFA is then minimised (Moore's partition refinement), keeping
 * apart states that differ in acceptance, region or transience: several subsets often mean
 * the same thing (inside a string after a plain byte, after an escape, after the opening
 * quote), and each state a bounded region keeps costs one copy per level.
 */
#include <stdlib.h>
#include <string.h>

#include "structured/structured_priv.h"

/* ---- byte sets ------------------------------------------------------------------------- */

void dspy_byteset_clear(uint32_t set[8]) { memset(set, 0, 8 * sizeof(uint32_t)); }
void dspy_byteset_add(uint32_t set[8], unsigned char b) { set[b >> 5] |= 1u << (b & 31); }
void dspy_byteset_add_range(uint32_t set[8], unsigned char lo, unsigned char hi) {
    for (unsigned c = lo; c <= hi; c++) dspy_byteset_add(set, (unsigned char)c);
}
bool dspy_byteset_has(const uint32_t set[8], unsigned char b) { return set[b >> 5] >> (b & 31) & 1u; }

/* ---- NFA ------------------------------------------------------------------------------- */

void dspy_nfa_init(nfa *a) {
    memset(a, 0, sizeof *a);
    a->cur_region = -1;
}

void dspy_nfa_free(nfa *a) {
    free(a->s);
    free(a->eps);
    free(a->regions);
    memset(a, 0, sizeof *a);
}

static bool grow(void **p, int32_t *cap, int32_t need, size_t elem) {
    if (need <= *cap) return true;
    int32_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    void *q = realloc(*p, (size_t)nc * elem);
    if (!q) return false;
    *p = q;
    *cap = nc;
    return true;
}

int32_t dspy_nfa_state_new(nfa *a) {
    if (a->oom || !grow((void **)&a->s, &a->cap, a->n + 1, sizeof *a->s)) {
        a->oom = true;
        return 0; /* a valid index keeps the builders simple; oom is reported at the end */
    }
    nfa_state *s = &a->s[a->n];
    memset(s, 0, sizeof *s);
    s->eps_head = -1;
    s->next = -1;
    s->region = a->cur_region;
    s->transient = a->cur_transient;
    return a->n++;
}

void dspy_nfa_eps(nfa *a, int32_t from, int32_t to) {
    if (a->oom || !grow((void **)&a->eps, &a->cap_eps, a->n_eps + 1, sizeof *a->eps)) {
        a->oom = true;
        return;
    }
    a->eps[a->n_eps] = (nfa_edge){to, a->s[from].eps_head};
    a->s[from].eps_head = a->n_eps++;
}

int32_t dspy_nfa_region_begin(nfa *a, int32_t max_tokens) {
    if (a->oom || !grow((void **)&a->regions, &a->cap_regions, a->n_regions + 1, sizeof *a->regions)) {
        a->oom = true;
        return -1;
    }
    a->regions[a->n_regions].max_tokens = max_tokens;
    a->cur_region = a->n_regions;
    return a->n_regions++;
}

void dspy_nfa_region_end(nfa *a) {
    a->cur_region = -1;
    a->cur_transient = false;
}

static void set_edge(nfa *a, int32_t from, const uint32_t set[8], int32_t to) {
    if (a->oom) return;
    memcpy(a->s[from].set, set, sizeof a->s[from].set);
    a->s[from].next = to;
}

frag dspy_frag_empty(nfa *a) {
    int32_t s = dspy_nfa_state_new(a);
    return (frag){s, s};
}

frag dspy_frag_bytes(nfa *a, const char *p, size_t n) {
    int32_t first = dspy_nfa_state_new(a), cur = first;
    for (size_t i = 0; i < n; i++) {
        int32_t nx = dspy_nfa_state_new(a);
        uint32_t set[8];
        dspy_byteset_clear(set);
        dspy_byteset_add(set, (unsigned char)p[i]);
        set_edge(a, cur, set, nx);
        cur = nx;
    }
    return (frag){first, cur};
}

frag dspy_frag_class(nfa *a, const uint32_t set[8]) {
    int32_t x = dspy_nfa_state_new(a), y = dspy_nfa_state_new(a);
    set_edge(a, x, set, y);
    return (frag){x, y};
}

frag dspy_frag_cat(nfa *a, frag x, frag y) {
    dspy_nfa_eps(a, x.out, y.in);
    return (frag){x.in, y.out};
}

frag dspy_frag_alt(nfa *a, frag x, frag y) {
    int32_t in = dspy_nfa_state_new(a), out = dspy_nfa_state_new(a);
    dspy_nfa_eps(a, in, x.in);
    dspy_nfa_eps(a, in, y.in);
    dspy_nfa_eps(a, x.out, out);
    dspy_nfa_eps(a, y.out, out);
    return (frag){in, out};
}

frag dspy_frag_opt(nfa *a, frag x) {
    int32_t in = dspy_nfa_state_new(a), out = dspy_nfa_state_new(a);
    dspy_nfa_eps(a, in, x.in);
    dspy_nfa_eps(a, in, out);
    dspy_nfa_eps(a, x.out, out);
    return (frag){in, out};
}

frag dspy_frag_star(nfa *a, frag x) {
    int32_t in = dspy_nfa_state_new(a), out = dspy_nfa_state_new(a);
    dspy_nfa_eps(a, in, x.in);
    dspy_nfa_eps(a, in, out);
    dspy_nfa_eps(a, x.out, in);
    return (frag){in, out};
}

/* ---- DFA ------------------------------------------------------------------------------- */

void dspy_dfa_free(dfa *d) {
    free(d->next);
    free(d->accept);
    free(d->region);
    free(d->transient);
    free(d->regions);
    memset(d, 0, sizeof *d);
}

int32_t dspy_dfa_add_state(dfa *d) {
    if (d->n == d->cap) {
        int32_t nc = d->cap ? 2 * d->cap : 256;
        int32_t *nx = realloc(d->next, (size_t)nc * 256 * sizeof *nx);
        if (!nx) return -1;
        d->next = nx;
        bool *ac = realloc(d->accept, (size_t)nc * sizeof *ac);
        if (!ac) return -1;
        d->accept = ac;
        int32_t *rg = realloc(d->region, (size_t)nc * sizeof *rg);
        if (!rg) return -1;
        d->region = rg;
        bool *tr = realloc(d->transient, (size_t)nc * sizeof *tr);
        if (!tr) return -1;
        d->transient = tr;
        d->cap = nc;
    }
    int32_t q = d->n++;
    for (int i = 0; i < 256; i++) d->next[(size_t)q * 256 + (size_t)i] = -1;
    d->accept[q] = false;
    d->region[q] = -1;
    d->transient[q] = false;
    return q;
}

/* The subset construction's bookkeeping: the member lists of DFA states (concatenated), and an
 * open-addressing table from a member list's hash to its DFA state. */
typedef struct subsets {
    int32_t *members;
    int64_t n_members, cap_members;
    int64_t *start; /* per DFA state: offset into members; start[q + 1] - start[q] members */
    int32_t cap_start;
    int32_t *table;
    int64_t table_cap;
} subsets;

static uint64_t hash_ints(const int32_t *x, int32_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (int32_t i = 0; i < n; i++) {
        h ^= (uint32_t)x[i];
        h *= 1099511628211ULL;
    }
    return h ^ (uint64_t)n;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Epsilon closure of set[0, n) in place (sorted, unique); `mark` holds generation stamps. */
static int32_t closure(const nfa *a, int32_t *set, int32_t n, int32_t *stack, uint32_t *mark, uint32_t gen) {
    int32_t sp = 0, m = 0;
    for (int32_t i = 0; i < n; i++)
        if (mark[set[i]] != gen) {
            mark[set[i]] = gen;
            stack[sp++] = set[i];
        }
    while (sp) {
        int32_t q = stack[--sp];
        set[m++] = q;
        for (int32_t e = a->s[q].eps_head; e >= 0; e = a->eps[e].link) {
            int32_t t = a->eps[e].to;
            if (mark[t] != gen) {
                mark[t] = gen;
                stack[sp++] = t;
            }
        }
    }
    qsort(set, (size_t)m, sizeof *set, cmp_i32);
    return m;
}

static dspy_status table_rehash(subsets *ss, int32_t n_states) {
    int64_t cap = ss->table_cap ? ss->table_cap * 2 : 1024;
    int32_t *t = malloc((size_t)cap * sizeof *t);
    if (!t) return dspy_fail(DSPY_ERR_NOMEM, "structured: out of memory");
    for (int64_t i = 0; i < cap; i++) t[i] = -1;
    for (int32_t q = 0; q < n_states; q++) {
        const int32_t *m = ss->members + ss->start[q];
        uint64_t h = hash_ints(m, (int32_t)(ss->start[q + 1] - ss->start[q]));
        int64_t i = (int64_t)(h & (uint64_t)(cap - 1));
        while (t[i] >= 0) i = (i + 1) & (cap - 1);
        t[i] = q;
    }
    free(ss->table);
    ss->table = t;
    ss->table_cap = cap;
    return DSPY_OK;
}

/* The DFA state of member list set[0, n), added when new (*added set). -1 on OOM. */
static int32_t find_or_add(const nfa *a, subsets *ss, dfa *d, const int32_t *set, int32_t n, bool *added) {
    *added = false;
    uint64_t h = hash_ints(set, n);
    int64_t i = (int64_t)(h & (uint64_t)(ss->table_cap - 1));
    for (; ss->table[i] >= 0; i = (i + 1) & (ss->table_cap - 1)) {
        int32_t q = ss->table[i];
        int64_t len = ss->start[q + 1] - ss->start[q];
        if (len == n && memcmp(ss->members + ss->start[q], set, (size_t)n * sizeof *set) == 0) return q;
    }
    int32_t q = dspy_dfa_add_state(d);
    if (q < 0) return -1;
    if (ss->n_members + n > ss->cap_members) {
        int64_t nc = ss->cap_members ? ss->cap_members * 2 : 4096;
        while (nc < ss->n_members + n) nc *= 2;
        int32_t *m = realloc(ss->members, (size_t)nc * sizeof *m);
        if (!m) return -1;
        ss->members = m;
        ss->cap_members = nc;
    }
    if (q + 2 > ss->cap_start) {
        int32_t nc = ss->cap_start ? ss->cap_start * 2 : 1024;
        int64_t *st = realloc(ss->start, (size_t)nc * sizeof *st);
        if (!st) return -1;
        ss->start = st;
        ss->cap_start = nc;
    }
    memcpy(ss->members + ss->n_members, set, (size_t)n * sizeof *set);
    ss->start[q] = ss->n_members;
    ss->n_members += n;
    ss->start[q + 1] = ss->n_members;
    /* region and flags from the members: the lowest region id present; transient when every
     * member in that region is transient */
    int32_t region = -1;
    bool any_solid = false;
    for (int32_t k = 0; k < n; k++) {
        const nfa_state *s = &a->s[set[k]];
        if (s->accept) d->accept[q] = true;
        if (s->region >= 0 && (region < 0 || s->region < region)) region = s->region;
    }
    for (int32_t k = 0; k < n; k++) {
        const nfa_state *s = &a->s[set[k]];
        if (s->region == region && !s->transient) any_solid = true;
    }
    d->region[q] = region;
    d->transient[q] = region >= 0 && !any_solid;
    i = (int64_t)(h & (uint64_t)(ss->table_cap - 1));
    while (ss->table[i] >= 0) i = (i + 1) & (ss->table_cap - 1);
    ss->table[i] = q;
    *added = true;
    return q;
}

dspy_status dspy_dfa_build(const nfa *a, int32_t start, int32_t max_states, dfa *out) {
    memset(out, 0, sizeof *out);
    if (a->oom) return dspy_fail(DSPY_ERR_NOMEM, "structured: out of memory building the automaton");
    subsets ss = {0};
    dspy_status st = DSPY_OK;
    int32_t *set = malloc((size_t)a->n * sizeof *set), *stack = malloc((size_t)a->n * sizeof *stack);
    int32_t *prev_set = malloc((size_t)a->n * sizeof *prev_set);
    uint32_t *mark = calloc((size_t)a->n, sizeof *mark);
    uint32_t gen = 0;
    if (!set || !stack || !prev_set || !mark || (st = table_rehash(&ss, 0))) {
        if (!st) st = dspy_fail(DSPY_ERR_NOMEM, "structured: out of memory");
        goto done;
    }
    set[0] = start;
    int32_t n = closure(a, set, 1, stack, mark, ++gen);
    bool added;
    if (find_or_add(a, &ss, out, set, n, &added) < 0) {
        st = dspy_fail(DSPY_ERR_NOMEM, "structured: out of memory building the automaton");
        goto done;
    }
    for (int32_t q = 0; q < out->n; q++) {
        /* for each byte, the members' byte-edge targets, closed; neighbouring bytes mostly move
         * the same members (a byte class), so an unchanged move set reuses the last target */
        int32_t prev_m = -1, prev_t = -1;
        for (int b = 0; b < 256; b++) {
            int32_t m = 0;
            ++gen;
            for (int64_t k = ss.start[q]; k < ss.start[q + 1]; k++) {
                const nfa_state *s = &a->s[ss.members[k]];
                if (s->next >= 0 && dspy_byteset_has(s->set, (unsigned char)b) && mark[s->next] != gen) {
                    mark[s->next] = gen;
                    set[m++] = s->next;
                }
            }
            if (m == 0) {
                prev_m = 0;
                continue;
            }
            if (m == prev_m && memcmp(set, prev_set, (size_t)m * sizeof *set) == 0) {
                out->next[(size_t)q * 256 + (size_t)b] = prev_t;
                continue;
            }
            memcpy(prev_set, set, (size_t)m * sizeof *set);
            prev_m = m;
            m = closure(a, set, m, stack, mark, ++gen);
            int32_t t = find_or_add(a, &ss, out, set, m, &added);
            if (t < 0) {
                st = dspy_fail(DSPY_ERR_NOMEM, "structured: out of memory building the automaton");
                goto done;
            }
            out->next[(size_t)q * 256 + (size_t)b] = t;
            prev_t = t;
            if (added && out->n > max_states) {
                st = dspy_fail(DSPY_ERR_ARG, "structured: the output specification needs more than %d automaton "
                               "states; simplify it (fewer or shorter values, fewer fields)", max_states);
                goto done;
            }
            if (added && (int64_t)out->n * 2 > ss.table_cap && (st = table_rehash(&ss, out->n))) goto done;
        }
    }
    if (a->n_regions) {
        out->regions = malloc((size_t)a->n_regions * sizeof *out->regions);
        if (!out->regions) {
            st = dspy_fail(DSPY_ERR_NOMEM, "structured: out of memory building the automaton");
            goto done;
        }
        memcpy(out->regions, a->regions, (size_t)a->n_regions * sizeof *out->regions);
        out->n_regions = a->n_regions;
    }
    goto done;
done:
    free(set);
    free(stack);
    free(prev_set);
    free(mark);
    free(ss.members);
    free(ss.start);
    free(ss.table);
    if (st) dspy_dfa_free(out);
    return st;
}

/* ---- minimisation ---------------------------------------------------------------------- */

/* Moore's algorithm: start from the classes (accept, region, transient) and split by the
 * classes of the 256 successors until nothing splits. Class ids are given in order of first
 * appearance, so state 0 stays in class 0. */
dspy_status dspy_dfa_minimize(dfa *d) {
    int32_t n = d->n;
    const size_t W = 257; /* own class + one per byte */
    int32_t *cls = malloc((size_t)n * sizeof *cls), *ncls = malloc((size_t)n * sizeof *ncls);
    int32_t *sig = malloc((size_t)n * W * sizeof *sig);
    int64_t cap = 1;
    while (cap < 2 * (int64_t)n) cap *= 2;
    int32_t *table = malloc((size_t)cap * sizeof *table);
    dfa m = {0};
    dspy_status st = DSPY_OK;
    if (!cls || !ncls || !sig || !table) goto fail;
    /* initial classes */
    int32_t k = 0;
    for (int32_t q = 0; q < n; q++) {
        cls[q] = -1;
        for (int32_t r = 0; r < q && cls[q] < 0; r++)
            if (d->accept[r] == d->accept[q] && d->region[r] == d->region[q] && d->transient[r] == d->transient[q])
                cls[q] = cls[r];
        if (cls[q] < 0) cls[q] = k++;
    }
    for (;;) {
        for (int64_t i = 0; i < cap; i++) table[i] = -1;
        int32_t nk = 0;
        for (int32_t q = 0; q < n; q++) {
            int32_t *sq = sig + (size_t)q * W;
            sq[0] = cls[q];
            for (int b = 0; b < 256; b++) {
                int32_t t = d->next[(size_t)q * 256 + (size_t)b];
                sq[1 + b] = t < 0 ? -1 : cls[t];
            }
            uint64_t h = hash_ints(sq, (int32_t)W);
            int64_t i = (int64_t)(h & (uint64_t)(cap - 1));
            ncls[q] = -1;
            for (; table[i] >= 0; i = (i + 1) & (cap - 1))
                if (memcmp(sig + (size_t)table[i] * W, sq, W * sizeof *sq) == 0) {
                    ncls[q] = ncls[table[i]];
                    break;
                }
            if (ncls[q] < 0) {
                ncls[q] = nk++;
                table[i] = q;
            }
        }
        memcpy(cls, ncls, (size_t)n * sizeof *cls);
        if (nk == k) break;
        k = nk;
    }
    if (k == n) goto done; /* already minimal */
    for (int32_t c = 0; c < k; c++)
        if (dspy_dfa_add_state(&m) < 0) goto fail;
    for (int32_t q = 0; q < n; q++) {
        int32_t c = cls[q];
        for (int b = 0; b < 256; b++) {
            int32_t t = d->next[(size_t)q * 256 + (size_t)b];
            m.next[(size_t)c * 256 + (size_t)b] = t < 0 ? -1 : cls[t];
        }
        m.accept[c] = d->accept[q];
        m.region[c] = d->region[q];
        m.transient[c] = d->transient[q];
    }
    m.regions = d->regions;
    m.n_regions = d->n_regions;
    d->regions = NULL;
    dspy_dfa_free(d);
    *d = m;
    goto done;
fail: /* out of memory */
    st = dspy_fail(DSPY_ERR_NOMEM, "structured: out of memory minimising the automaton");
    dspy_dfa_free(&m);
done:
    free(cls);
    free(ncls);
    free(sig);
    free(table);
    return st;
}
