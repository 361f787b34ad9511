/* f8_ref.c — f8_ref.h. */
#include "f8_ref.h"

#include <math.h>

float f8_ref_round(float x) {
    float a = fabsf(x), step = 0x1p-9f;
    if (a >= 448.0f) return copysignf(448.0f, x);
    if (a >= 0x1p-6f) {
        int e;
        frexpf(a, &e); /* a in [2^(e-1), 2^e): 8 steps a binade */
        step = ldexpf(1.0f, e - 4);
    }
    return copysignf(nearbyintf(a / step) * step, x);
}

float f8_ref_value(uint8_t b) {
    int e = (b >> 3) & 15, m = b & 7;
    float v = e ? ldexpf(1.0f + (float)m / 8.0f, e - 7) : ldexpf((float)m / 8.0f, -6);
    return b & 0x80 ? -v : v;
}

int f8_ref_exponent(float amax) {
    int k = -100;
    while (amax > ldexpf(448.0f, k)) k++;
    return k;
}

void f8_ref_round_rows(float *w, int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        float amax = 0.0f;
        for (int c = 0; c < cols; c++) amax = fmaxf(amax, fabsf(w[(int64_t)r * cols + c]));
        const int k = f8_ref_exponent(amax);
        for (int c = 0; c < cols; c++) w[(int64_t)r * cols + c] = ldexpf(f8_ref_round(ldexpf(w[(int64_t)r * cols + c], -k)), k);
    }
}
