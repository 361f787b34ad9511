/* dspy/rng.h — a small, fast, seedable generator for numerics (sampling, random weights,
 * dropout): xoshiro256** seeded through splitmix64. Not Python-compatible (that is
 * dspy/random.h) and not cryptographic. The state is a plain struct: copy it to save/restore
 * (the trainer checkpoints it). One generator per thread or per sequence.
 */
#ifndef DSPY_RNG_H
#define DSPY_RNG_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_rng {
    uint64_t s[4];
    bool have_spare; /* normal(): Box–Muller's second value is kept for the next call */
    double spare;
} dspy_rng;

/* One step of splitmix64 (Steele, Lea & Flood): advances *state by the golden-ratio constant
 * and returns its mix. A stateless-looking stream for seeding and for per-element random
 * numbers (dropout masks); dspy_rng_seed expands a seed with it. */
DSPY_API uint64_t dspy_splitmix64(uint64_t *state);

/* The same seed always gives the same sequence, on every machine. */
DSPY_API void dspy_rng_seed(dspy_rng *r, uint64_t seed);
DSPY_API uint64_t dspy_rng_u64(dspy_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
DSPY_API double dspy_rng_uniform(dspy_rng *r);
/* Uniform in (0, 1]: safe for log(). */
DSPY_API double dspy_rng_uniform_pos(dspy_rng *r);
/* Standard normal (Box–Muller). */
DSPY_API double dspy_rng_normal(dspy_rng *r);

#ifdef __cplusplus
}
#endif

#endif
