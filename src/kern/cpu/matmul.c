/* matmul.c — fp32 reference GEMM for nn.Linear: out (N, OC) = inp (N, C) @ w^T (w (OC, C)) + bias.
 *
 * Readable, not fast: OpenMP over blocks of output features, four input rows at a time sharing
 * each weight row (so weights stream from memory once per four rows). Every output element is
 * cpu_dot's fixed-order sum, then the bias, whatever N or the thread count (see kern/ops.h).
 */
#include <stddef.h>

#include "kern/cpu/cpu.h"

/* Four dot products against the same weight row, each bit-identical to cpu_dot(a_r, w, n). */
static void dot4(const float *a0, const float *a1, const float *a2, const float *a3, const float *w, int n,
                 float out[4]) {
    float acc[4][8] = {{0}};
    int c = 0;
    for (; c + 8 <= n; c += 8)
        for (int j = 0; j < 8; j++) {
            float wj = w[c + j];
            acc[0][j] += a0[c + j] * wj;
            acc[1][j] += a1[c + j] * wj;
            acc[2][j] += a2[c + j] * wj;
            acc[3][j] += a3[c + j] * wj;
        }
    const float *a[4] = {a0, a1, a2, a3};
    for (int r = 0; r < 4; r++) {
        const float *x = acc[r];
        float s = ((x[0] + x[1]) + (x[2] + x[3])) + ((x[4] + x[5]) + (x[6] + x[7]));
        for (int k = c; k < n; k++) s += a[r][k] * w[k];
        out[r] = s;
    }
}

void cpu_matmul(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC) {
    enum { OB = 16 }; /* output features per task */
    int nblocks = (OC + OB - 1) / OB;
#pragma omp parallel for schedule(static) if ((long)N * C * OC > (1L << 18))
    for (int b = 0; b < nblocks; b++) {
        int o0 = b * OB, o1 = o0 + OB < OC ? o0 + OB : OC;
        int n = 0;
        for (; n + 4 <= N; n += 4) {
            const float *x = inp + (size_t)n * C;
            for (int o = o0; o < o1; o++) {
                float r[4];
                dot4(x, x + C, x + 2 * (size_t)C, x + 3 * (size_t)C, w + (size_t)o * C, C, r);
                for (int k = 0; k < 4; k++)
                    out[(size_t)(n + k) * OC + o] = bias ? r[k] + bias[o] : r[k];
            }
        }
        for (; n < N; n++)
            for (int o = o0; o < o1; o++) {
                float s = cpu_dot(inp + (size_t)n * C, w + (size_t)o * C, C);
                out[(size_t)n * OC + o] = bias ? s + bias[o] : s;
            }
    }
}
