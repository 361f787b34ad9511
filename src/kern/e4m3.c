/* e4m3.c — kern/e4m3.h. */
#include "kern/e4m3.h"

#include <math.h>

enum { E4M3_K_MIN = -100 };

float dspy_e4m3(float a) {
    const float m = fabsf(a);
    if (m >= 448.0f) return copysignf(448.0f, a);
    float step = 0x1p-9f; /* subnormal spacing */
    if (m >= 0x1p-6f) {
        int e;
        frexpf(m, &e); /* m in [2^(e-1), 2^e): 8 steps a binade */
        step = ldexpf(1.0f, e - 4);
    }
    return copysignf(nearbyintf(m / step) * step, a);
}

int dspy_e4m3_row_exponent(float amax, int k_max) {
    int k = E4M3_K_MIN;
    while (k < k_max && amax > ldexpf(448.0f, k)) k++;
    return k;
}

int dspy_e4m3_round_row(float *row, int64_t n, int k_max) {
    float amax = 0.0f;
    for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(row[i]));
    const int k = dspy_e4m3_row_exponent(amax, k_max);
    for (int64_t i = 0; i < n; i++) row[i] = ldexpf(dspy_e4m3(ldexpf(row[i], -k)), k);
    return k;
}
