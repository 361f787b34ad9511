/* dspy/constraint.h — token-level automata that restrict what a sequence may generate
 * (structured outputs: Literal labels, JSON schemas, an adapter's field layout).
 *
 * An automaton has states 0 .. n_states-1 and starts in state 0. In each state every token of
 * the vocabulary is either allowed, with a next state, or banned:
 *   - a FREE state allows every token and moves to its default next state, except the tokens
 *     given an exception (each banned, or moving elsewhere);
 *   - a LIST state allows only the tokens listed, each with its next state.
 * A state may also allow the end of generation: the model's eos ids are then allowed there
 * (and only there; in any other state an eos id is banned like any token not allowed); an eos
 * sampled there ends the sequence with finish "stop", even when the sampling sets ignore_eos. A
 * state that allows nothing but eos thus makes eos the only choice. The engine applies the
 * automaton of a sequence at every sampled token (the banned tokens' logits become -inf before
 * temperature, top-k and top-p; the reported logprob stays the raw distribution's), so whatever
 * the model prefers, the output is a path of the automaton (cut short only by max_tokens or a
 * stop id the automaton allows).
 *
 * What builds them (the compiler from a Literal, a JSON schema or a layout to states) lives with
 * the tokenizer-aware code (server/, program/); this header is only the automaton.
 *
 * Thread safety: build on one thread; once built, immutable and shareable by any number of
 * sequences and engines (they keep their own current state). Free after the last user.
 */
#ifndef DSPY_CONSTRAINT_H
#define DSPY_CONSTRAINT_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stdint.h>

#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_constraint dspy_constraint;

/* An automaton of n_states states over token ids [0, vocab_size), every state a LIST state with
 * nothing listed (so: allowing nothing) until set. DSPY_ERR_ARG for non-positive sizes. */
DSPY_API dspy_status dspy_constraint_new(int32_t n_states, int32_t vocab_size, dspy_constraint **out);
DSPY_API void dspy_constraint_free(dspy_constraint *c); /* NULL-safe */

/* Makes `state` FREE: every token allowed, moving to `next` (exceptions with _set_token). */
DSPY_API dspy_status dspy_constraint_set_free(dspy_constraint *c, int32_t state, int32_t next);
/* In `state`, `token` moves to `next`; next = -1 bans it. In a LIST state this adds (or
 * changes) an entry; in a FREE state it is an exception. DSPY_ERR_ARG for ids out of range. */
DSPY_API dspy_status dspy_constraint_set_token(dspy_constraint *c, int32_t state, int32_t token, int32_t next);
/* Whether the model's eos ids are allowed in `state` (they end the sequence there). */
DSPY_API dspy_status dspy_constraint_set_accept(dspy_constraint *c, int32_t state, bool accept);

DSPY_API int32_t dspy_constraint_states(const dspy_constraint *c);
DSPY_API int32_t dspy_constraint_vocab(const dspy_constraint *c);
/* The next state after `token` in `state`, or -1 when the token is not allowed there. */
DSPY_API int32_t dspy_constraint_next(const dspy_constraint *c, int32_t state, int32_t token);
/* Whether eos is allowed in `state`. */
DSPY_API bool dspy_constraint_accepts(const dspy_constraint *c, int32_t state);
/* Number of tokens allowed in `state` (eos ids not counted). */
DSPY_API int64_t dspy_constraint_count(const dspy_constraint *c, int32_t state);
/* DSPY_ERR_ARG naming the first state reachable from state 0 that allows nothing, where a
 * sequence would be stuck (with has_eos false, e.g. a model without eos ids, accepting does not
 * count as allowing something). The engine checks this when a sequence is added. */
DSPY_API dspy_status dspy_constraint_check(const dspy_constraint *c, bool has_eos);
/* Writes the allowed set of `state` as a bit mask: bit t of words[t / 32] set when token t is
 * allowed (eos ids included when the state accepts; `eos`, n_eos the model's ids). words has
 * (vocab_size + 31) / 32 entries. */
DSPY_API void dspy_constraint_mask(const dspy_constraint *c, int32_t state, const int32_t *eos, int32_t n_eos,
                                   uint32_t *words);

/* Jump-forward: a state may carry the tokens that spell the text every path from it writes next
 * (a stretch the specification fixes: a field header, the rest of a Literal value once its first
 * bytes tell which), as the compiler tokenized it. The engine feeds them as drafts in one step,
 * each row still sampled under its own state's mask, so the tokens are exactly those of one
 * token a step: the drafts only save steps where the model writes that tokenization.
 * set_jump: tokens[0 .. n) must be allowed in turn from `state` (set its entries, and those of
 * the states the path passes, first); n = 0 clears the list; DSPY_ERR_ARG otherwise. */
DSPY_API dspy_status dspy_constraint_set_jump(dspy_constraint *c, int32_t state, const int32_t *tokens, int32_t n);
/* The jump list of `state` (owned by c), *n its length; NULL and 0 when it has none. */
DSPY_API const int32_t *dspy_constraint_jump(const dspy_constraint *c, int32_t state, int32_t *n);

#ifdef __cplusplus
}
#endif
#endif
