/* dspy/random.h — a bit-exact port of CPython's random.Random (Mersenne Twister MT19937).
 *
 * What it does: seeds exactly like `random.Random(n)` for a non-negative int n (init_by_array
 * over the 32-bit words of n, least significant word first), and reproduces CPython 3.11's
 * genrand_uint32, random(), getrandbits(k), _randbelow(n), shuffle(x), choice(seq) and
 * sample(population, k) draw for draw, so that a data split or a fine-tuning order made in
 * Python is made identically here (spec: dspy_behaviour.md §11.4).
 *
 * What it does not: seeding from str/bytes/float/None, gauss/uniform and the other
 * distributions, sample(counts=...), getstate/setstate. Not a cryptographic generator.
 *
 * Thread safety: a dspy_pyrandom is plain state with no lock; use one per thread or guard it.
 * The struct is public so it can live on the stack; treat its fields as private.
 */
#ifndef DSPY_RANDOM_H
#define DSPY_RANDOM_H

#include "dspy/export.h"

#include <stddef.h>
#include <stdint.h>

#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSPY_PYRANDOM_N 624

typedef struct dspy_pyrandom {
    uint32_t mt[DSPY_PYRANDOM_N];
    int mti;
} dspy_pyrandom;

/* random.Random(seed) / r.seed(seed) for a non-negative int that fits 64 bits. */
DSPY_API void dspy_pyrandom_seed(dspy_pyrandom *r, uint64_t seed);

/* r.seed(n) for an int of any size given as `n_words` 32-bit words, least significant first
 * (high zero words are ignored; n_words == 0 means 0). `words` may be NULL when n_words is 0. */
DSPY_API void dspy_pyrandom_seed_words(dspy_pyrandom *r, const uint32_t *words, size_t n_words);

/* The next raw 32-bit output of MT19937 (CPython's genrand_uint32). */
DSPY_API uint32_t dspy_pyrandom_uint32(dspy_pyrandom *r);

/* r.random(): a double in [0, 1) with 53 random bits, bit-identical to CPython. */
DSPY_API double dspy_pyrandom_random(dspy_pyrandom *r);

/* r.getrandbits(k) for 0 <= k <= 64 (k > 64 is a programmer error: use _words). */
DSPY_API uint64_t dspy_pyrandom_getrandbits(dspy_pyrandom *r, int k);

/* r.getrandbits(k) for any k >= 0, written as ceil(k/32) words, least significant first;
 * `out` must have room for that many words (nothing is written for k == 0). */
DSPY_API void dspy_pyrandom_getrandbits_words(dspy_pyrandom *r, size_t k, uint32_t *out);

/* r._randbelow(n) (CPython's _randbelow_with_getrandbits): uniform in [0, n). n == 0 returns
 * 0 without consuming state (CPython would loop forever). */
DSPY_API uint64_t dspy_pyrandom_randbelow(dspy_pyrandom *r, uint64_t n);

/* r.shuffle(x) over `n` elements of `elem_size` bytes each, in place. */
DSPY_API void dspy_pyrandom_shuffle(dspy_pyrandom *r, void *base, size_t n, size_t elem_size);

/* r.choice(seq) for a sequence of length n: writes the chosen index to *out.
 * DSPY_ERR_ARG when n == 0 (CPython raises IndexError). */
DSPY_API dspy_status dspy_pyrandom_choice(dspy_pyrandom *r, size_t n, size_t *out);

/* r.sample(range(n), k): writes k distinct indices in [0, n) to out[0..k) in selection order,
 * following CPython 3.11's algorithm (pool branch or set branch by its setsize rule), so
 * sample(population, k) == [population[i] for i in out]. DSPY_ERR_ARG when k > n,
 * DSPY_ERR_NOMEM when scratch memory runs out; nothing useful is in `out` then. */
DSPY_API dspy_status dspy_pyrandom_sample(dspy_pyrandom *r, size_t n, size_t k, size_t *out);

#ifdef __cplusplus
}
#endif
#endif
