/* structured_priv.h — the byte automata behind dspy/structured.h (private to src/structured/).
 *
 * An NFA over bytes is built from fragments (Thompson's construction: literals, byte classes,
 * alternation, concatenation, loops), determinised by the subset construction into a DFA, and
 * the DFA is turned into a token automaton over a vocabulary trie (tokens.c).
 *
 * Regions: the NFA states of a free text (a layout field's text, a JSON string's content) carry
 * a region id. A DFA state belongs to a region when one of its NFA states does. A region with a
 * bound K counts the tokens taken inside it (see tokens.c). NFA states marked transient (inside
 * a JSON escape) are never the end of a token in a bounded region.
 */
#ifndef DSPY_STRUCTURED_PRIV_H
#define DSPY_STRUCTURED_PRIV_H

#include <stdbool.h>
#include <stdint.h>

#include "dspy/structured.h"

/* ---- NFA --------------------------------------------------------------------------------- */

typedef struct nfa_state {
    int32_t eps_head;  /* first epsilon edge (index into nfa.eps), -1 none */
    int32_t next;      /* target of the byte edge, -1 none */
    uint32_t set[8];   /* bytes of the byte edge */
    int32_t region;    /* -1 none */
    bool transient;
    bool accept;
} nfa_state;

typedef struct nfa_edge {
    int32_t to, link;
} nfa_edge;

typedef struct nfa_region {
    int32_t max_tokens; /* 0 = unbounded */
} nfa_region;

typedef struct nfa {
    nfa_state *s;
    int32_t n, cap;
    nfa_edge *eps;
    int32_t n_eps, cap_eps;
    nfa_region *regions;
    int32_t n_regions, cap_regions;
    int32_t cur_region; /* region given to new states (-1 none) */
    bool cur_transient;
    bool oom;           /* an allocation failed: the builder reports it once at the end */
} nfa;

/* A fragment: enter at `in`, leave from `out` (a state with no byte edge yet). */
typedef struct frag {
    int32_t in, out;
} frag;

void dspy_nfa_init(nfa *a);
void dspy_nfa_free(nfa *a);
int32_t dspy_nfa_state_new(nfa *a);
void dspy_nfa_eps(nfa *a, int32_t from, int32_t to);
/* A new region (bound max_tokens) made current; returns its id. */
int32_t dspy_nfa_region_begin(nfa *a, int32_t max_tokens);
void dspy_nfa_region_end(nfa *a);

void dspy_byteset_clear(uint32_t set[8]);
void dspy_byteset_add(uint32_t set[8], unsigned char b);
void dspy_byteset_add_range(uint32_t set[8], unsigned char lo, unsigned char hi);
bool dspy_byteset_has(const uint32_t set[8], unsigned char b);

frag dspy_frag_empty(nfa *a);
frag dspy_frag_bytes(nfa *a, const char *p, size_t n);   /* a literal */
frag dspy_frag_class(nfa *a, const uint32_t set[8]);       /* one byte of the set */
frag dspy_frag_cat(nfa *a, frag x, frag y);
frag dspy_frag_alt(nfa *a, frag x, frag y);
frag dspy_frag_opt(nfa *a, frag x);
frag dspy_frag_star(nfa *a, frag x);                       /* x* */

/* ---- DFA --------------------------------------------------------------------------------- */

typedef struct dfa {
    int32_t n, cap;
    int32_t *next;     /* (n, 256): next state, -1 dead */
    bool *accept;
    int32_t *region;   /* -1 none */
    bool *transient;   /* in a region and only at transient NFA states */
    nfa_region *regions; /* copied from the NFA */
    int32_t n_regions;
} dfa;

/* Subset construction from `start`. DSPY_ERR_ARG when it would pass max_states (a schema too
 * large), DSPY_ERR_NOMEM. */
dspy_status dspy_dfa_build(const nfa *a, int32_t start, int32_t max_states, dfa *out);
void dspy_dfa_free(dfa *d);
/* Merges equivalent states (same acceptance, region and transience, same futures); state 0
 * stays the start. DSPY_ERR_NOMEM (d unchanged). */
dspy_status dspy_dfa_minimize(dfa *d);
/* Appends a state (no transitions, not accepting, no region); -1 on OOM. */
int32_t dspy_dfa_add_state(dfa *d);

/* ---- token automaton --------------------------------------------------------------------- */

/* The token automaton of `d` over v (see tokens.c). */
dspy_status dspy_tokens_compile(const dspy_structured_vocab *v, dfa *d, dspy_constraint **out);

/* Marks f.out accepting, determinises from f.in and compiles over v (layout.c). */
dspy_status dspy_structured_finish(const dspy_structured_vocab *v, nfa *a, frag f, dspy_constraint **out);

#endif
