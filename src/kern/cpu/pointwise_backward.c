/* pointwise_backward.c — fp32 reference row-wise training operations (kern/ops.h): backward of
 * RMSNorm, SwiGLU, embedding lookup and row gather; fused cross-entropy; dropout; scale. (The
 * RoPE backward shares pointwise.c's rotation.)
 *
 * The derivatives are those of the forward formulas in pointwise.c (transformers' LlamaRMSNorm,
 * SiLU-gated MLP); cross-entropy is torch's log_softmax + nll. Reductions over rows (weight
 * gradients, embedding rows) run over columns in parallel and over rows in ascending order, so
 * the results do not depend on the thread count. OpenMP over rows/columns.
 */
#include <math.h>
#include <string.h>

#include "kern/cpu/cpu.h"

/* 1 / sqrt(mean(x^2) + eps), exactly as dspy_cpu_rmsnorm computes it. */
static float rms_inv(const float *x, int C, float eps) {
    double ss = 0;
    for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
    float var = (float)(ss / C);
    return 1.0f / sqrtf(var + eps);
}

/* y_c = w_c x_c r with r = (mean(x^2) + eps)^-1/2:
 * dx_c = r w_c dy_c - x_c r^3 / C * sum_k w_k dy_k x_k;  dw_c = sum_n dy_c x_c r. */
dspy_status dspy_cpu_rmsnorm_backward(dspy_backend *be, dspy_tensor dinp_t, dspy_tensor dw_t, dspy_tensor dout_t,
                                 dspy_tensor inp_t, dspy_tensor w_t, int N, int C, float eps) {
    cpu_enter(be);
    const char *op = "rmsnorm_backward";
    CPU_NEED(op, "dinp", dinp_t, DSPY_DTYPE_F32, (int64_t)N * C);
    CPU_NEED(op, "dout", dout_t, DSPY_DTYPE_F32, (int64_t)N * C);
    CPU_NEED(op, "inp", inp_t, DSPY_DTYPE_F32, (int64_t)N * C);
    CPU_NEED(op, "weight", w_t, DSPY_DTYPE_F32, C);
    if (dw_t.data) CPU_NEED(op, "dweight", dw_t, DSPY_DTYPE_F32, C);
    DSPY_TRY(dspy_cpu_plan_check(op, "rows", N, be->plan.max_rows));
    float *dinp = dinp_t.data, *dweight = dw_t.data;
    const float *dout = dout_t.data, *inp = inp_t.data, *weight = w_t.data;
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
    if (!dweight) return DSPY_OK;
    float *r = cpu_of(be)->rowf; /* (N) */
    for (int n = 0; n < N; n++) r[n] = rms_inv(inp + (size_t)n * C, C, eps);
#pragma omp parallel for schedule(static) if ((long)N * C > (1L << 16))
    for (int c = 0; c < C; c++) {
        float s = 0;
        for (int n = 0; n < N; n++) s += dout[(size_t)n * C + c] * inp[(size_t)n * C + c] * r[n];
        dweight[c] += s;
    }
    return DSPY_OK;
}

/* out = silu(g) u, silu(g) = g sigmoid(g): dg = dout u sigmoid(g) (1 + g (1 - sigmoid(g))),
 * du = dout silu(g). */
dspy_status dspy_cpu_swiglu_backward(dspy_backend *be, dspy_tensor dg_t, dspy_tensor du_t, dspy_tensor dout_t,
                                dspy_tensor g_t, dspy_tensor u_t, int N, int I) {
    cpu_enter(be);
    const char *op = "swiglu_backward";
    int64_t n = (int64_t)N * I;
    CPU_NEED(op, "dgate", dg_t, DSPY_DTYPE_F32, n);
    CPU_NEED(op, "dup", du_t, DSPY_DTYPE_F32, n);
    CPU_NEED(op, "dout", dout_t, DSPY_DTYPE_F32, n);
    CPU_NEED(op, "gate", g_t, DSPY_DTYPE_F32, n);
    CPU_NEED(op, "up", u_t, DSPY_DTYPE_F32, n);
    float *dgate = dg_t.data, *dup = du_t.data;
    const float *dout = dout_t.data, *gate = g_t.data, *up = u_t.data;
#pragma omp parallel for schedule(static) if (n > (1L << 18))
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i], d = dout[i];
        float sg = 1.0f / (1.0f + expf(-g));
        dup[i] = d * g * sg;
        dgate[i] = d * up[i] * sg * (1.0f + g * (1.0f - sg));
    }
    return DSPY_OK;
}

/* Parallel over column blocks so that repeated ids never race; rows in ascending order. */
static dspy_status add_rows(dspy_backend *be, const char *op, dspy_tensor dst_t, dspy_tensor ids_t,
                            dspy_tensor src_t, int N, int C) {
    cpu_enter(be);
    CPU_NEED(op, "destination", dst_t, DSPY_DTYPE_F32, C);
    CPU_NEED(op, "ids", ids_t, DSPY_DTYPE_I32, N);
    CPU_NEED(op, "dout", src_t, DSPY_DTYPE_F32, (int64_t)N * C);
    const int32_t *ids = ids_t.data;
    int64_t rows = dst_t.n / C;
    for (int n = 0; n < N; n++)
        if (ids[n] < 0 || ids[n] >= rows)
            return dspy_fail(DSPY_ERR_ARG, "cpu %s: index %d of row %d is outside the %lld rows", op, ids[n], n,
                             (long long)rows);
    float *dtable = dst_t.data;
    const float *dout = src_t.data;
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
    return DSPY_OK;
}

dspy_status dspy_cpu_embedding_backward(dspy_backend *be, dspy_tensor dtable, dspy_tensor ids, dspy_tensor dout, int N,
                                   int C) {
    return add_rows(be, "embedding_backward", dtable, ids, dout, N, C);
}

dspy_status dspy_cpu_scatter_add_rows(dspy_backend *be, dspy_tensor dinp, dspy_tensor rows, dspy_tensor dout, int M,
                                 int C) {
    return add_rows(be, "scatter_add_rows", dinp, rows, dout, M, C);
}

dspy_status dspy_cpu_cross_entropy(dspy_backend *be, dspy_tensor loss_t, dspy_tensor dl_t, dspy_tensor logits_t,
                              dspy_tensor tg_t, int M, int V, float dscale) {
    cpu_enter(be);
    const char *op = "cross_entropy";
    CPU_NEED(op, "loss", loss_t, DSPY_DTYPE_F32, M);
    CPU_NEED(op, "logits", logits_t, DSPY_DTYPE_F32, (int64_t)M * V);
    CPU_NEED(op, "targets", tg_t, DSPY_DTYPE_I32, M);
    if (dl_t.data) CPU_NEED(op, "dlogits", dl_t, DSPY_DTYPE_F32, (int64_t)M * V);
    const int32_t *targets = tg_t.data;
    for (int m = 0; m < M; m++)
        if (targets[m] < 0 || targets[m] >= V)
            return dspy_fail(DSPY_ERR_ARG, "cpu %s: targets[%d] is %d, outside [0, %d)", op, m, targets[m], V);
    float *loss = loss_t.data, *dlogits = dl_t.data;
    const float *logits = logits_t.data;
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
    return DSPY_OK;
}

dspy_status dspy_cpu_dropout(dspy_backend *be, dspy_tensor out_t, dspy_tensor inp_t, float p, uint64_t key) {
    cpu_enter(be);
    CPU_NEED("dropout", "out", out_t, DSPY_DTYPE_F32, 0);
    CPU_NEED("dropout", "inp", inp_t, DSPY_DTYPE_F32, out_t.n);
    float *out = out_t.data;
    const float *inp = inp_t.data;
    int64_t n = out_t.n;
    float s = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static) if (n > (1L << 18))
    for (int64_t i = 0; i < n; i++) out[i] = dspy_dropout_keep(key, i, p) ? inp[i] * s : 0.0f;
    return DSPY_OK;
}

dspy_status dspy_cpu_scale(dspy_backend *be, dspy_tensor x_t, float s) {
    cpu_enter(be);
    CPU_NEED("scale", "x", x_t, DSPY_DTYPE_F32, 0);
    float *x = x_t.data;
    int64_t n = x_t.n;
#pragma omp parallel for schedule(static) if (n > (1L << 18))
    for (int64_t i = 0; i < n; i++) x[i] *= s;
    return DSPY_OK;
}
