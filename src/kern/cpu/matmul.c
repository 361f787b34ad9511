/* matmul.c — fp32 reference nn.Linear and its backward (kern/ops.h linear, linear_backward).
 *
 * Forward: out (N, OC) [+]= inp (N, C) @ w^T (w (OC, C), F32 or BF16) + bias. Readable, not fast:
 * OpenMP over blocks of output features, four input rows at a time sharing each weight row (so
 * weights stream from memory once per four rows). Every output element is cpu_dot's fixed-order
 * sum, then the bias, then (accumulate) the add into out, whatever N or the thread count.
 *
 * Backward, all accumulating:
 *   dinp (N, C)  += dout (N, OC) @ w (OC, C)     OpenMP over rows n
 *   dw   (OC, C) += dout^T @ inp                 OpenMP over output features o
 *   dbias (OC)   += sum_n dout[n]                same loop as dw
 * Each output element is a sum in a fixed order (ascending o for dinp, ascending n for dw), so
 * the result does not depend on the thread count.
 */
#include <stddef.h>

#include "kern/cpu/cpu.h"
#include "kern/e4m3.h"

/* Four dot products against the same weight row, each bit-identical to cpu_dot(a_r, w, n).
 * W(i) reads weight element i as F32 (a macro so that the F32 and BF16 bodies are one text). */
#define DOT4_BODY(W)                                                                            \
    float acc[4][8] = {{0}};                                                                    \
    int c = 0;                                                                                  \
    for (; c + 8 <= n; c += 8)                                                                  \
        for (int j = 0; j < 8; j++) {                                                           \
            float wj = W(c + j);                                                                \
            acc[0][j] += a0[c + j] * wj;                                                        \
            acc[1][j] += a1[c + j] * wj;                                                        \
            acc[2][j] += a2[c + j] * wj;                                                        \
            acc[3][j] += a3[c + j] * wj;                                                        \
        }                                                                                       \
    const float *a[4] = {a0, a1, a2, a3};                                                       \
    for (int r = 0; r < 4; r++) {                                                               \
        const float *x = acc[r];                                                                \
        float s = ((x[0] + x[1]) + (x[2] + x[3])) + ((x[4] + x[5]) + (x[6] + x[7]));            \
        for (int k = c; k < n; k++) s += a[r][k] * W(k);                                        \
        out[r] = s;                                                                             \
    }

static void dot4_f32(const float *a0, const float *a1, const float *a2, const float *a3, const float *w, int n,
                     float out[4]) {
#define WF(i) w[i]
    DOT4_BODY(WF)
#undef WF
}

static void dot4_bf16(const float *a0, const float *a1, const float *a2, const float *a3, const uint16_t *w, int n,
                      float out[4]) {
#define WB(i) cpu_bf16(w[i])
    DOT4_BODY(WB)
#undef WB
}

/* act8: the rows go through dspy_cpu_act8_rows (W8A8 where planned; never for the logits). */
static dspy_status linear_ref(dspy_backend *be, dspy_tensor out_t, dspy_tensor inp_t, dspy_tensor w_t,
                              dspy_tensor bias_t, int N, int C, int OC, bool accumulate, bool act8) {
    cpu_enter(be);
    CPU_NEED("linear", "out", out_t, DSPY_DTYPE_F32, (int64_t)N * OC);
    CPU_NEED("linear", "inp", inp_t, DSPY_DTYPE_F32, (int64_t)N * C);
    CPU_NEED2("linear", "w", w_t, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)OC * C);
    if (bias_t.data) CPU_NEED("linear", "bias", bias_t, DSPY_DTYPE_F32, OC);
    float *out = out_t.data;
    const float *inp = act8 ? dspy_cpu_act8_rows(be, inp_t.data, N, C) : inp_t.data, *bias = bias_t.data;
    const bool bf = w_t.dtype == DSPY_DTYPE_BF16;
    const float *wf = w_t.data;
    const uint16_t *wb = w_t.data;
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
                if (bf) dot4_bf16(x, x + C, x + 2 * (size_t)C, x + 3 * (size_t)C, wb + (size_t)o * C, C, r);
                else dot4_f32(x, x + C, x + 2 * (size_t)C, x + 3 * (size_t)C, wf + (size_t)o * C, C, r);
                for (int k = 0; k < 4; k++) {
                    float y = bias ? r[k] + bias[o] : r[k];
                    float *dst = &out[(size_t)(n + k) * OC + o];
                    *dst = accumulate ? *dst + y : y;
                }
            }
        }
        for (; n < N; n++)
            for (int o = o0; o < o1; o++) {
                const float *x = inp + (size_t)n * C;
                float s = bf ? cpu_dot_bf16(x, wb + (size_t)o * C, C) : cpu_dot(x, wf + (size_t)o * C, C);
                float y = bias ? s + bias[o] : s;
                float *dst = &out[(size_t)n * OC + o];
                *dst = accumulate ? *dst + y : y;
            }
    }
    return DSPY_OK;
}

dspy_status dspy_cpu_linear(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, dspy_tensor bias, int N,
                            int C, int OC, int accumulate) {
    return linear_ref(be, out, inp, w, bias, N, C, OC, accumulate, true);
}

dspy_status dspy_cpu_linear_w16(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, dspy_tensor bias,
                                int N, int C, int OC, int accumulate) {
    return linear_ref(be, out, inp, w, bias, N, C, OC, accumulate, false);
}

const float *dspy_cpu_act8_rows(dspy_backend *be, const float *inp, int N, int C) {
    cpu_state *s = cpu_of(be);
    if (N < DSPY_ACT8_MIN_ROWS || !s->a8 || (int64_t)N * C > s->a8_cap) return inp;
#pragma omp parallel for schedule(static) if ((long)N * C > (1L << 16))
    for (int n = 0; n < N; n++) {
        float *row = s->a8 + (size_t)n * C;
        memcpy(row, inp + (size_t)n * C, sizeof(float) * (size_t)C);
        dspy_e4m3_round_row(row, C, DSPY_ACT8_K_MAX);
    }
    return s->a8;
}

dspy_status dspy_cpu_linear_backward_check(dspy_tensor dinp_t, dspy_tensor dw_t, dspy_tensor dbias_t, dspy_tensor dout_t,
                                          dspy_tensor inp_t, dspy_tensor w_t, int N, int C, int OC) {
    CPU_NEED("linear_backward", "dout", dout_t, DSPY_DTYPE_F32, (int64_t)N * OC);
    if (dinp_t.data) {
        CPU_NEED("linear_backward", "dinp", dinp_t, DSPY_DTYPE_F32, (int64_t)N * C);
        CPU_NEED("linear_backward", "w", w_t, DSPY_DTYPE_F32, (int64_t)OC * C);
    }
    if (dw_t.data) {
        CPU_NEED("linear_backward", "dw", dw_t, DSPY_DTYPE_F32, (int64_t)OC * C);
        CPU_NEED("linear_backward", "inp", inp_t, DSPY_DTYPE_F32, (int64_t)N * C);
    }
    if (dbias_t.data) CPU_NEED("linear_backward", "dbias", dbias_t, DSPY_DTYPE_F32, OC);
    return DSPY_OK;
}

dspy_status dspy_cpu_linear_backward(dspy_backend *be, dspy_tensor dinp_t, dspy_tensor dw_t, dspy_tensor dbias_t,
                                dspy_tensor dout_t, dspy_tensor inp_t, dspy_tensor w_t, int N, int C, int OC) {
    cpu_enter(be);
    DSPY_TRY(dspy_cpu_linear_backward_check(dinp_t, dw_t, dbias_t, dout_t, inp_t, w_t, N, C, OC));
    float *dinp = dinp_t.data, *dw = dw_t.data, *dbias = dbias_t.data;
    const float *dout = dout_t.data, *inp = inp_t.data, *w = w_t.data;
    long work = (long)N * C * OC;
    if (dinp) {
#pragma omp parallel for schedule(static) if (work > (1L << 18))
        for (int n = 0; n < N; n++) {
            float *di = dinp + (size_t)n * C;       /* (C) */
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
    return DSPY_OK;
}
