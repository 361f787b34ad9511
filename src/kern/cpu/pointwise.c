/* pointwise.c — fp32 reference row-wise operations: embedding lookup, RMSNorm, RoPE (alone and
 * fused with the KV-cache store), SwiGLU, residual add, row gather.
 *
 * Each follows the arithmetic of transformers' Llama modules in float32 (LlamaRMSNorm,
 * apply_rotary_pos_emb with rotate_half, LlamaMLP with SiLU). OpenMP over rows.
 */
#include <math.h>
#include <string.h>

#include "kern/cpu/cpu.h"

dspy_status dspy_cpu_embedding(dspy_backend *be, dspy_tensor out_t, dspy_tensor ids_t, dspy_tensor table_t, int N,
                          int C) {
    (void)be;
    CPU_NEED("embedding", "out", out_t, DSPY_DTYPE_F32, (int64_t)N * C);
    CPU_NEED("embedding", "ids", ids_t, DSPY_DTYPE_I32, N);
    CPU_NEED2("embedding", "table", table_t, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, C);
    float *out = out_t.data;
    const int32_t *ids = ids_t.data;
    int64_t V = table_t.n / C;
    for (int n = 0; n < N; n++)
        if (ids[n] < 0 || ids[n] >= V)
            return dspy_fail(DSPY_ERR_ARG, "cpu embedding: ids[%d] is %d, outside the table's %lld rows", n, ids[n],
                             (long long)V);
    for (int n = 0; n < N; n++) {
        float *o = out + (size_t)n * C;
        if (table_t.dtype == DSPY_DTYPE_F32) {
            memcpy(o, (const float *)table_t.data + (size_t)ids[n] * C, sizeof(float) * (size_t)C);
        } else {
            const uint16_t *row = (const uint16_t *)table_t.data + (size_t)ids[n] * C;
            for (int c = 0; c < C; c++) o[c] = cpu_bf16(row[c]);
        }
    }
    return DSPY_OK;
}

dspy_status dspy_cpu_rmsnorm(dspy_backend *be, dspy_tensor out_t, dspy_tensor inp_t, dspy_tensor w_t, int N, int C,
                        float eps) {
    cpu_enter(be);
    CPU_NEED("rmsnorm", "out", out_t, DSPY_DTYPE_F32, (int64_t)N * C);
    CPU_NEED("rmsnorm", "inp", inp_t, DSPY_DTYPE_F32, (int64_t)N * C);
    CPU_NEED("rmsnorm", "weight", w_t, DSPY_DTYPE_F32, C);
    float *out = out_t.data;
    const float *inp = inp_t.data, *weight = w_t.data;
#pragma omp parallel for schedule(static) if ((long)N * C > (1L << 18))
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
        float var = (float)(ss / C);
        float r = 1.0f / sqrtf(var + eps);
        float *o = out + (size_t)n * C;
        for (int c = 0; c < C; c++) o[c] = weight[c] * (x[c] * r);
    }
    return DSPY_OK;
}

/* The RoPE cos/sin of one position (half = HS/2 entries each), as transformers computes them:
 * the angle pos * inv_freq in F32, then cos/sin. */
static void rope_angles(int32_t pos, const float *inv_freq, int half, float *cs, float *sn) {
    for (int i = 0; i < half; i++) {
        float ang = (float)pos * inv_freq[i]; /* inv_freq @ position_ids in float32 */
        cs[i] = (float)cos((double)ang);
        sn[i] = (float)sin((double)ang);
    }
}

/* Rotates the H heads of one row in place (dir +1 forward, -1 the transpose). */
static void rotate_row(float *v, int H, int HS, const float *cs, const float *sn, int dir) {
    int half = HS / 2;
    for (int h = 0; h < H; h++, v += HS)
        for (int i = 0; i < half; i++) {
            float a = v[i], b = v[i + half];
            if (dir > 0) {
                v[i] = a * cs[i] - b * sn[i];
                v[i + half] = b * cs[i] + a * sn[i];
            } else {
                v[i] = a * cs[i] + b * sn[i];
                v[i + half] = b * cs[i] - a * sn[i];
            }
        }
}

static dspy_status rope_dir(dspy_backend *be, const char *op, dspy_tensor x_t, dspy_tensor pos_t, dspy_tensor f_t,
                            int N, int H, int HS, int dir) {
    cpu_enter(be);
    CPU_NEED(op, "x", x_t, DSPY_DTYPE_F32, (int64_t)N * H * HS);
    CPU_NEED(op, "pos", pos_t, DSPY_DTYPE_I32, N);
    CPU_NEED(op, "inv_freq", f_t, DSPY_DTYPE_F32, HS / 2);
    float *x = x_t.data;
    const int32_t *pos = pos_t.data;
    const float *inv_freq = f_t.data;
    int half = HS / 2;
#pragma omp parallel for schedule(static) if ((long)N * H * HS > (1L << 18))
    for (int n = 0; n < N; n++) {
        float cs[half > 0 ? half : 1], sn[half > 0 ? half : 1];
        rope_angles(pos[n], inv_freq, half, cs, sn);
        rotate_row(x + (size_t)n * H * HS, H, HS, cs, sn, dir);
    }
    return DSPY_OK;
}

dspy_status dspy_cpu_rope(dspy_backend *be, dspy_tensor x, dspy_tensor pos, dspy_tensor inv_freq, int N, int H, int HS) {
    return rope_dir(be, "rope", x, pos, inv_freq, N, H, HS, +1);
}

dspy_status dspy_cpu_rope_backward(dspy_backend *be, dspy_tensor dx, dspy_tensor pos, dspy_tensor inv_freq, int N, int H,
                              int HS) {
    return rope_dir(be, "rope_backward", dx, pos, inv_freq, N, H, HS, -1);
}

dspy_status dspy_cpu_qkv_rope_store(dspy_backend *be, dspy_tensor q_t, dspy_tensor kc_t, dspy_tensor vc_t,
                               dspy_tensor qkv_t, dspy_tensor pos_t, dspy_tensor slots_t, dspy_tensor f_t, int N,
                               int NH, int NKV, int HS) {
    cpu_enter(be);
    const int Q = NH * HS, KVD = NKV * HS, W = Q + 2 * KVD;
    CPU_NEED("qkv_rope_store", "q_out", q_t, DSPY_DTYPE_F32, (int64_t)N * Q);
    CPU_NEED("qkv_rope_store", "qkv", qkv_t, DSPY_DTYPE_F32, (int64_t)N * W);
    CPU_NEED("qkv_rope_store", "kcache", kc_t, DSPY_DTYPE_F32, KVD);
    CPU_NEED("qkv_rope_store", "vcache", vc_t, DSPY_DTYPE_F32, KVD);
    CPU_NEED("qkv_rope_store", "pos", pos_t, DSPY_DTYPE_I32, N);
    CPU_NEED("qkv_rope_store", "slots", slots_t, DSPY_DTYPE_I32, N);
    CPU_NEED("qkv_rope_store", "inv_freq", f_t, DSPY_DTYPE_F32, HS / 2);
    const int32_t *pos = pos_t.data, *slots = slots_t.data;
    int64_t nslots = kc_t.n / KVD;
    for (int n = 0; n < N; n++)
        if (slots[n] < 0 || slots[n] >= nslots)
            return dspy_fail(DSPY_ERR_ARG, "cpu qkv_rope_store: slots[%d] is %d, outside the cache's %lld slots", n,
                             slots[n], (long long)nslots);
    float *qo = q_t.data, *kc = kc_t.data, *vc = vc_t.data;
    const float *qkv = qkv_t.data, *inv_freq = f_t.data;
    int half = HS / 2;
#pragma omp parallel for schedule(static) if ((long)N * W > (1L << 18))
    for (int n = 0; n < N; n++) {
        float cs[half > 0 ? half : 1], sn[half > 0 ? half : 1];
        rope_angles(pos[n], inv_freq, half, cs, sn);
        const float *row = qkv + (size_t)n * W;
        float *q = qo + (size_t)n * Q, *k = kc + (size_t)slots[n] * KVD, *v = vc + (size_t)slots[n] * KVD;
        memcpy(q, row, sizeof(float) * (size_t)Q);
        memcpy(k, row + Q, sizeof(float) * (size_t)KVD);
        memcpy(v, row + Q + KVD, sizeof(float) * (size_t)KVD);
        rotate_row(q, NH, HS, cs, sn, +1);
        rotate_row(k, NKV, HS, cs, sn, +1);
    }
    return DSPY_OK;
}

dspy_status dspy_cpu_swiglu(dspy_backend *be, dspy_tensor out_t, dspy_tensor g_t, dspy_tensor u_t, int N, int I, int ld) {
    cpu_enter(be);
    CPU_NEED("swiglu", "out", out_t, DSPY_DTYPE_F32, (int64_t)N * I);
    CPU_NEED("swiglu", "gate", g_t, DSPY_DTYPE_F32, N > 0 ? (int64_t)(N - 1) * ld + I : 0);
    CPU_NEED("swiglu", "up", u_t, DSPY_DTYPE_F32, N > 0 ? (int64_t)(N - 1) * ld + I : 0);
    if (ld < I) return dspy_fail(DSPY_ERR_ARG, "cpu swiglu: row stride %d is below the width %d", ld, I);
    float *out = out_t.data;
    const float *gate = g_t.data, *up = u_t.data;
#pragma omp parallel for schedule(static) if ((long)N * I > (1L << 18))
    for (int n = 0; n < N; n++)
        for (int i = 0; i < I; i++) {
            float g = gate[(size_t)n * ld + i];
            out[(size_t)n * I + i] = g / (1.0f + expf(-g)) * up[(size_t)n * ld + i];
        }
    return DSPY_OK;
}

dspy_status dspy_cpu_add(dspy_backend *be, dspy_tensor x_t, dspy_tensor y_t) {
    cpu_enter(be);
    CPU_NEED("add", "x", x_t, DSPY_DTYPE_F32, 0);
    CPU_NEED("add", "y", y_t, DSPY_DTYPE_F32, x_t.n);
    float *x = x_t.data;
    const float *y = y_t.data;
    int64_t n = x_t.n;
#pragma omp parallel for schedule(static) if (n > (1L << 18))
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
    return DSPY_OK;
}

dspy_status dspy_cpu_gather_rows(dspy_backend *be, dspy_tensor out_t, dspy_tensor inp_t, dspy_tensor rows_t, int M,
                            int C) {
    (void)be;
    CPU_NEED("gather_rows", "out", out_t, DSPY_DTYPE_F32, (int64_t)M * C);
    CPU_NEED("gather_rows", "inp", inp_t, DSPY_DTYPE_F32, 0);
    CPU_NEED("gather_rows", "rows", rows_t, DSPY_DTYPE_I32, M);
    const int32_t *rows = rows_t.data;
    for (int m = 0; m < M; m++) {
        if (rows[m] < 0 || (int64_t)(rows[m] + 1) * C > inp_t.n)
            return dspy_fail(DSPY_ERR_ARG, "cpu gather_rows: rows[%d] is %d, outside the input", m, rows[m]);
        memmove((float *)out_t.data + (size_t)m * C, (const float *)inp_t.data + (size_t)rows[m] * C,
                sizeof(float) * (size_t)C);
    }
    return DSPY_OK;
}

/* ---- the fused projections, as their defining compositions (kern/ops.h) ----------------- */

dspy_status dspy_cpu_attn_in(dspy_backend *be, dspy_tensor q_out, dspy_tensor kcache, dspy_tensor vcache, dspy_tensor x,
                        dspy_tensor w_norm, dspy_tensor wqkv, dspy_tensor bqkv, dspy_tensor pos, dspy_tensor slots,
                        dspy_tensor inv_freq, dspy_tensor xn, dspy_tensor qkv, int N, int C, int NH, int NKV, int HS,
                        float eps) {
    const int W = (NH + 2 * NKV) * HS;
    DSPY_TRY(dspy_cpu_rmsnorm(be, xn, x, w_norm, N, C, eps));
    DSPY_TRY(dspy_cpu_linear(be, qkv, xn, wqkv, bqkv, N, C, W, false));
    return dspy_cpu_qkv_rope_store(be, q_out, kcache, vcache, qkv, pos, slots, inv_freq, N, NH, NKV, HS);
}

dspy_status dspy_cpu_mlp_in(dspy_backend *be, dspy_tensor h, dspy_tensor x, dspy_tensor w_norm, dspy_tensor w_gate_up,
                       dspy_tensor xn, dspy_tensor gu, int N, int C, int I, float eps) {
    DSPY_TRY(dspy_cpu_rmsnorm(be, xn, x, w_norm, N, C, eps));
    DSPY_TRY(dspy_cpu_linear(be, gu, xn, w_gate_up, dspy_tensor_none(), N, C, 2 * I, false));
    return dspy_cpu_swiglu(be, h, gu, dspy_tensor_slice(gu, I, gu.n - I), N, I, 2 * I);
}

dspy_status dspy_cpu_logits(dspy_backend *be, dspy_tensor out, dspy_tensor x, dspy_tensor rows, dspy_tensor w_norm,
                       dspy_tensor w, dspy_tensor sel, dspy_tensor seln, int M, int C, int V, float eps) {
    DSPY_TRY(dspy_cpu_gather_rows(be, sel, x, rows, M, C));
    DSPY_TRY(dspy_cpu_rmsnorm(be, seln, sel, w_norm, M, C, eps));
    return dspy_cpu_linear_w16(be, out, seln, w, dspy_tensor_none(), M, C, V, false);
}
