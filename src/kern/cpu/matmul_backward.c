/* matmul_backward.c — fp32 reference backward of nn.Linear (kern/ops.h matmul_backward).
 *
 * Forward: out (N, OC) = inp (N, C) @ w^T + bias. Backward, all accumulating:
 *   dinp (N, C)  += dout (N, OC) @ w (OC, C)     OpenMP over rows n
 *   dw   (OC, C) += dout^T @ inp                 OpenMP over output features o
 *   dbias (OC)   += sum_n dout[n]                same loop as dw
 * Each output element is a sum in a fixed order (ascending o for dinp, ascending n for dw), so
 * the result does not depend on the thread count. Readable, not fast.
 */
#include <stddef.h>

#include "kern/cpu/cpu.h"

void cpu_matmul_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp, const float *w,
                         int N, int C, int OC) {
    long work = (long)N * C * OC;
    if (dinp) {
#pragma omp parallel for schedule(static) if (work > (1L << 18))
        for (int n = 0; n < N; n++) {
            float *di = dinp + (size_t)n * C;    /* (C) */
            const float *g = dout + (size_t)n * OC; /* (OC) */
            for (int o = 0; o < OC; o++) {
                float go = g[o];
                if (go == 0.0f) continue;
                const float *wr = w + (size_t)o * C;
                for (int c = 0; c < C; c++) di[c] += go * wr[c];
            }
        }
    }
    if (dw || dbias) {
#pragma omp parallel for schedule(static) if (work > (1L << 18))
        for (int o = 0; o < OC; o++) {
            float *dwr = dw ? dw + (size_t)o * C : NULL; /* (C) */
            float db = 0;
            for (int n = 0; n < N; n++) {
                float go = dout[(size_t)n * OC + o];
                db += go;
                if (!dwr || go == 0.0f) continue;
                const float *x = inp + (size_t)n * C;
                for (int c = 0; c < C; c++) dwr[c] += go * x[c];
            }
            if (dbias) dbias[o] += db;
        }
    }
}
