/* pointwise_backward.c — fp32 reference row-wise training operations (kern/ops.h): backward of
 * RMSNorm, RoPE, SwiGLU, embedding lookup and row gather; fused cross-entropy; dropout; scale.
 *
 * The derivatives are those of the forward formulas in pointwise.c (transformers' LlamaRMSNorm,
 * rotate-half RoPE, SiLU-gated MLP); cross-entropy is torch's log_softmax + nll. Reductions over
 * rows (weight gradients, embedding rows) run over columns in parallel and over rows in
 * ascending order, so the results do not depend on the thread count. OpenMP over rows/columns.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kern/cpu/cpu.h"

/* 1 / sqrt(mean(x^2) + eps), exactly as cpu_rmsnorm computes it. */
static float rms_inv(const float *x, int C, float eps) {
    double ss = 0;
    for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
    float var = (float)(ss / C);
    return 1.0f / sqrtf(var + eps);
}

/* y_c = w_c x_c r with r = (mean(x^2) + eps)^-1/2:
 * dx_c = r w_c dy_c - x_c r^3 / C * sum_k w_k dy_k x_k;  dw_c = sum_n dy_c x_c r. */
void cpu_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                          int N, int C, float eps) {
#pragma omp parallel for schedule(static) if ((long)N * C > (1L << 16))
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
        float r = rms_inv(x, C, eps);
        double dot = 0;
        for (int c = 0; c < C; c++) dot += (double)weight[c] * dy[c] * x[c];
        float k = (float)(dot * (double)r * r * r / C);
        float *dx = dinp + (size_t)n * C;
        for (int c = 0; c < C; c++) dx[c] += r * weight[c] * dy[c] - k * x[c];
    }
    if (!dweight) return;
    float *r = malloc(sizeof(float) * (size_t)(N ? N : 1));
    if (!r) abort();
    for (int n = 0; n < N; n++) r[n] = rms_inv(inp + (size_t)n * C, C, eps);
#pragma omp parallel for schedule(static) if ((long)N * C > (1L << 16))
    for (int c = 0; c < C; c++) {
        float s = 0;
        for (int n = 0; n < N; n++) s += dout[(size_t)n * C + c] * inp[(size_t)n * C + c] * r[n];
        dweight[c] += s;
    }
    free(r);
}

/* The forward rotation by +angle is orthogonal; its transpose rotates by -angle. */
void cpu_rope_backward(float *dx, const int32_t *pos, const float *inv_freq, int N, int H, int HS) {
    int half = HS / 2;
#pragma omp parallel for schedule(static) if ((long)N * H * HS > (1L << 18))
    for (int n = 0; n < N; n++) {
        float cs[half > 0 ? half : 1], sn[half > 0 ? half : 1];
        for (int i = 0; i < half; i++) {
            float ang = (float)pos[n] * inv_freq[i];
            cs[i] = (float)cos((double)ang);
            sn[i] = (float)sin((double)ang);
        }
        for (int h = 0; h < H; h++) {
            float *v = dx + ((size_t)n * H + h) * HS;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * cs[i] + b * sn[i];
                v[i + half] = b * cs[i] - a * sn[i];
            }
        }
    }
}

/* out = silu(g) u, silu(g) = g sigmoid(g): dg = dout u sigmoid(g) (1 + g (1 - sigmoid(g))),
 * du = dout silu(g). */
void cpu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, int N,
                         int C) {
    size_t n = (size_t)N * C;
#pragma omp parallel for schedule(static) if (n > (1L << 18))
    for (size_t i = 0; i < n; i++) {
        float g = gate[i], d = dout[i];
        float sg = 1.0f / (1.0f + expf(-g));
        dup[i] = d * g * sg;
        dgate[i] = d * up[i] * sg * (1.0f + g * (1.0f - sg));
    }
}

/* Parallel over column blocks so that repeated ids never race; rows in ascending order. */
void cpu_embedding_backward(float *dtable, const int32_t *ids, const float *dout, int N, int C) {
    enum { CB = 64 };
    int nb = (C + CB - 1) / CB;
#pragma omp parallel for schedule(static) if ((long)N * C > (1L << 18))
    for (int b = 0; b < nb; b++) {
        int c0 = b * CB, c1 = c0 + CB < C ? c0 + CB : C;
        for (int n = 0; n < N; n++) {
            float *d = dtable + (size_t)ids[n] * C;
            const float *g = dout + (size_t)n * C;
            for (int c = c0; c < c1; c++) d[c] += g[c];
        }
    }
}

void cpu_scatter_add_rows(float *dinp, const int32_t *rows, const float *dout, int M, int C) {
    cpu_embedding_backward(dinp, rows, dout, M, C);
}

void cpu_cross_entropy(float *loss, float *dlogits, const float *logits, const int32_t *targets, int M, int V,
                       float dscale) {
#pragma omp parallel for schedule(static) if ((long)M * V > (1L << 16))
    for (int m = 0; m < M; m++) {
        const float *x = logits + (size_t)m * V;
        float mx = -INFINITY;
        for (int i = 0; i < V; i++)
            if (x[i] > mx) mx = x[i];
        double sum = 0;
        for (int i = 0; i < V; i++) sum += exp((double)x[i] - mx);
        double lse = mx + log(sum);
        int t = targets[m];
        loss[m] = (float)(lse - x[t]);
        if (!dlogits) continue;
        float *d = dlogits + (size_t)m * V;
        for (int i = 0; i < V; i++) {
            float p = (float)exp((double)x[i] - lse);
            d[i] = dscale * (i == t ? p - 1.0f : p);
        }
    }
}

void cpu_dropout(float *out, const float *inp, int64_t n, float p, uint64_t key) {
    float s = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static) if (n > (1L << 18))
    for (int64_t i = 0; i < n; i++) out[i] = dspy_dropout_keep(key, i, p) ? inp[i] * s : 0.0f;
}

void cpu_scale(float *x, float s, int64_t n) {
#pragma omp parallel for schedule(static) if (n > (1L << 18))
    for (int64_t i = 0; i < n; i++) x[i] *= s;
}
