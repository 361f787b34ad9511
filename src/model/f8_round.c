/* f8_round.c — model/f8_round.h: E4M3 rounding of weight rows, written from the format's
 * definition (kern/e4m3.h's rounding; here the rows that cannot be held are refused). A
 * power-of-two row scale 2^k
 * keeps every rounded value exact in BF16 (4 significant bits), so the rounded model is the same
 * in F32, BF16 and the CUDA backend's 1-byte codes (kern/cuda/f8.cu does the same on the device).
 */
#include "model/f8_round.h"

#include <math.h>

#include "dspy/safetensors.h"
#include "kern/e4m3.h"

enum { F8_K_MAX = 7 }; /* the largest row scale 2^k (kern/e4m3.h starts at 2^-100) */

/* v rounded at row scale 2^k: E4M3 of v / 2^k, times 2^k (exact: powers of two). */
static float round_at(float v, int k) { return ldexpf(dspy_e4m3(ldexpf(v, -k)), k); }

bool dspy_f8_row_exponent(float amax, int *k) {
    if (!isfinite(amax) || amax > ldexpf(448.0f, F8_K_MAX)) return false;
    *k = dspy_e4m3_row_exponent(amax, F8_K_MAX);
    return true;
}

bool dspy_f8_round_row_f32(float *row, int64_t n) {
    float amax = 0.0f;
    bool nan = false;
    for (int64_t i = 0; i < n; i++) nan |= isnan(row[i]), amax = fmaxf(amax, fabsf(row[i]));
    int k;
    if (nan || !dspy_f8_row_exponent(amax, &k)) return false;
    for (int64_t i = 0; i < n; i++) row[i] = round_at(row[i], k);
    return true;
}

bool dspy_f8_round_row_bf16(uint16_t *row, int64_t n) {
    float amax = 0.0f;
    bool nan = false;
    for (int64_t i = 0; i < n; i++) {
        const float v = dspy_bf16_to_f32(row[i]);
        nan |= isnan(v), amax = fmaxf(amax, fabsf(v));
    }
    int k;
    if (nan || !dspy_f8_row_exponent(amax, &k)) return false;
    for (int64_t i = 0; i < n; i++) row[i] = dspy_f32_to_bf16(round_at(dspy_bf16_to_f32(row[i]), k));
    return true;
}
