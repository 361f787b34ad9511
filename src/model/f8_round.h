/* model/f8_round.h — FP8 (E4M3) rounding of weight rows on the host: the readable definition of
 * what kern/ops.h f8_link does on CUDA, used by the model loader on the CPU (dspy_model_params.
 * f8_decode) so that both devices compute the same rounded model. Private to src/model. */
#ifndef DSPY_MODEL_F8_ROUND_H
#define DSPY_MODEL_F8_ROUND_H

#include <stdbool.h>
#include <stdint.h>

/* The row's scale exponent: the smallest k in [-100, 7] with amax <= 448 * 2^k (448: E4M3's
 * largest finite value; -100 for a zero row). false (k untouched) when amax is not finite or
 * needs k > 7. */
bool dspy_f8_row_exponent(float amax, int *k);

/* Rounds row (n values, F32 or BF16 bits) in place to code * 2^k, code = E4M3 of w / 2^k (nearest
 * even, saturating at 448). false, changing nothing, when the row cannot be held (see above). */
bool dspy_f8_round_row_f32(float *row, int64_t n);
bool dspy_f8_round_row_bf16(uint16_t *row, int64_t n);

#endif
