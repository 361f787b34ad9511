/* train/share_prefix.h — prefix-shared optimizer steps (private to src/train and its benches).
 *
 * What it does: takes the k sequences of one optimizer step (each one example, or several
 * packed ones) and, when all their examples begin with the same tokens — the tutorial's
 * ~1,300-token system prompt — lays them out again as sequences of one prompt prefix followed
 * by the examples' continuations (dspy_train_seq.prefix: every continuation attends to the
 * prefix and to itself, its positions going on from the prefix length). The prefix is then
 * computed once per sequence instead of once per example; its gradient is the sum over the
 * continuations, which the backward pass forms by itself. The losses, the labelled-token
 * count and the gradients equal the unshared step's up to float summation order: each
 * continuation token sees exactly the keys, positions and labels it had in its own example.
 *
 * The prefix is the longest common token prefix of the step's examples, cut before the first
 * labelled position of any example (a labelled row must stay in its continuation, where its
 * loss is counted once per example) and so that every continuation keeps a token. It is used
 * only when at least min_prefix tokens long and shared by two examples or more; otherwise the
 * step runs as given. Continuations are packed next-fit, in order, into sequences of at most
 * max_T tokens (prefix included), never more sequences than the step had.
 *
 * What it does not: share prefixes between steps, or between groups of examples with different
 * prompts inside one step (the common prefix of all of them is what is shared).
 *
 * Thread safety: a buffer is used from one thread at a time.
 */
#ifndef DSPY_TRAIN_SHARE_PREFIX_H
#define DSPY_TRAIN_SHARE_PREFIX_H

#include <stddef.h>
#include <stdint.h>

#include "dspy/status.h"
#include "train/backward.h"

/* The shortest prefix worth sharing (tokens): below it the saving does not pay for the layout. */
enum { DSPY_SHARE_MIN_PREFIX = 64 };

/* Reusable storage of the shared layouts; zero-initialise, free with dspy_share_buf_free. */
typedef struct dspy_share_buf {
    int32_t *mem;         /* ids, pos, labels, seg of every laid-out sequence */
    size_t mem_cap;
    dspy_train_seq *seqs; /* the laid-out sequences */
    size_t seq_cap;
    struct share_ex *ex;  /* the step's examples */
    size_t ex_cap;
} dspy_share_buf;

void dspy_share_buf_free(dspy_share_buf *b);

/* Lays out the step's k sequences `in` (each of T <= max_T) as described above. On success *out
 * and *n_out are the sequences to run (the buffer's, valid until its next use; or `in` and k
 * unchanged when nothing is shared) and *prefix the shared prefix length (0: not shared).
 * Sequences that already carry a prefix, or explicit positions that do not restart at 0 per
 * example, are run as given. Errors: DSPY_ERR_NOMEM. */
dspy_status dspy_share_prefix(dspy_share_buf *b, const dspy_train_seq *in, size_t k, int32_t max_T, int32_t min_prefix,
                              const dspy_train_seq **out, size_t *n_out, int32_t *prefix);

#endif
