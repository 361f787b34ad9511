/* sampler.h — token sampling for the engine (private to src/engine).
 *
 * Order as transformers' LogitsProcessors: temperature, then top-k, then top-p (nucleus), then a
 * draw from the renormalised distribution with the sequence's own RNG (xoshiro256** seeded by
 * splitmix64(seed)). Temperature 0 is greedy. Deterministic: ties break by token id.
 */
#ifndef DSPY_ENGINE_SAMPLER_H
#define DSPY_ENGINE_SAMPLER_H

#include <stdint.h>

#include "dspy/rng.h"

/* Picks a token from logits (V). work (V floats) and idx (V ints) are scratch. *logprob gets
 * log_softmax(logits)[token] (the raw distribution). */
int32_t dspy_sample(const float *logits, int32_t V, float temperature, float top_p, int32_t top_k,
                    dspy_rng *r, float *work, int32_t *idx, float *logprob);

#endif
