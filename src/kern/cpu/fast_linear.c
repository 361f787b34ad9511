/* fast_linear.c — the fast CPU path's matrix products: linear (GEMV for decode, a cache-blocked
 * GEMM for prefill) and the fused projections built on it (attn_in, mlp_in, logits).
 *
 * linear: y (N, OC) = inp (N, C) @ w^T (+ bias), w (OC, C) BF16 as nn.Linear stores it. One
 * OpenMP region: the threads first round inp to BF16 into the planned scratch (each a share of
 * the elements), then take panels of 4-row weight tiles that stay in L2 (~256 KiB) one at a
 * time (dynamic: a thread another process delays takes fewer); for each panel, blocks of 4
 * input rows (in L1) against every tile of the panel, each tile over the full K
 * (kern/cpu/fast.h: the sum order is the SIMD level's and K's alone). So every output element
 * is one thread's one sum, the same whichever thread, whatever the thread count, N or the
 * element's tile: results are deterministic and a row is bit-identical alone or batched. F32 weights (the trainer's
 * masters) take F32 tiles on the input as it is (no rounding, no copy). linear_backward keeps
 * the reference's order per element with SIMD axpys.
 *
 * The fused projections are their defining compositions (kern/ops.h) with this linear.
 */
#include "kern/cpu/fast.h"

enum {
    TILE_O = 4,             /* weight rows per tile */
    TILE_N = 4,             /* input rows per tile */
    PANEL_BYTES = 256 << 10 /* weight rows a thread keeps hot in its L2 */
};

/* Work (multiply-adds) below which the region runs on one thread (the reference's threshold): a
 * team costs microseconds on an idle machine, and up to a scheduler time slice when another
 * process holds a core. */
#define FAST_PARALLEL_MIN (1L << 18)
/* Input elements up to which the calling thread rounds the input alone, before the region. */
#define SERIAL_ROUND_MAX (1L << 15)

/* act8: the rows go through dspy_cpu_act8_rows (W8A8 where planned; never for the logits). */
static dspy_status fast_linear(dspy_backend *be, dspy_tensor out_t, dspy_tensor inp_t, dspy_tensor w_t,
                               dspy_tensor bias_t, int N, int C, int OC, bool accumulate, bool act8) {
    cpu_enter(be);
    cpu_state *cs = cpu_of(be);
    CPU_NEED("linear", "out", out_t, DSPY_DTYPE_F32, (int64_t)N * OC);
    CPU_NEED("linear", "inp", inp_t, DSPY_DTYPE_F32, (int64_t)N * C);
    CPU_NEED2("linear", "w", w_t, DSPY_DTYPE_BF16, DSPY_DTYPE_F32, (int64_t)OC * C);
    if (bias_t.data) CPU_NEED("linear", "bias", bias_t, DSPY_DTYPE_F32, OC);
    if (N < 0 || C < 1 || OC < 0)
        return dspy_fail(DSPY_ERR_ARG, "cpu linear: N=%d, C=%d, OC=%d (N, OC >= 0 and C >= 1 expected)", N, C, OC);
    const bool bf = w_t.dtype == DSPY_DTYPE_BF16; /* else F32 weights: no rounding, no copy */
    if (bf) DSPY_TRY(dspy_cpu_plan_check("linear", "N x C (the BF16 copy of the input)", (int64_t)N * C, cs->xb_cap));
    if (N == 0 || OC == 0) return DSPY_OK;
    float *out = out_t.data;
    const float *inp = act8 ? dspy_cpu_act8_rows(be, inp_t.data, N, C) : inp_t.data, *bias = bias_t.data;
    uint16_t *xb = cs->xb; /* (N, C) */
    const dspy_cpu_simd level = dspy_cpu_simd_active();
    const dspy_cpu_tile_fn tile = dspy_cpu_tile_for(level);
    const dspy_cpu_tile_f32_fn tile_f32 = dspy_cpu_tile_f32_for(level);
    const int ntiles = (OC + TILE_O - 1) / TILE_O;
    const int64_t tile_bytes = (int64_t)TILE_O * C * (bf ? 2 : 4);
    const int64_t panel_tiles = PANEL_BYTES / tile_bytes > 0 ? PANEL_BYTES / tile_bytes : 1;
    const int npanels = (int)((ntiles + panel_tiles - 1) / panel_tiles);
    /* A short input (decode) is rounded here: a barrier inside the region costs more than that,
     * above all when another process holds a core; a long one (prefill) by the whole team. */
    const bool team_rounds = bf && (int64_t)N * C > SERIAL_ROUND_MAX;
    const int64_t nx = team_rounds ? (int64_t)N * C : 0;
    if (bf && !team_rounds)
        for (int64_t i = 0; i < (int64_t)N * C; i++) xb[i] = dspy_cpu_round_bf16(inp[i]);
#pragma omp parallel if ((long)N * C * OC > FAST_PARALLEL_MIN)
    {
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        if (team_rounds) {
            for (int64_t i = nx * tid / nth, e = nx * (tid + 1) / nth; i < e; i++)
                xb[i] = dspy_cpu_round_bf16(inp[i]);
#pragma omp barrier
        }
        /* Panels are handed out one at a time: a thread that another process delays takes
         * fewer, and no output depends on which thread computes it. */
#pragma omp for schedule(dynamic, 1) nowait
        for (int pi = 0; pi < npanels; pi++) {
            const int p0 = pi * (int)panel_tiles, p1 = p0 + panel_tiles < ntiles ? p0 + (int)panel_tiles : ntiles;
            for (int n0 = 0; n0 < N; n0 += TILE_N) {
                const int nr = N - n0 < TILE_N ? N - n0 : TILE_N;
                for (int t = p0; t < p1; t++) {
                    const int o0 = t * TILE_O;
                    float r[TILE_N][TILE_O];
                    if (bf) {
                        const uint16_t *wr[TILE_O];
                        for (int j = 0; j < TILE_O; j++) /* past OC: repeat the last row, result unused */
                            wr[j] = (const uint16_t *)w_t.data + (size_t)(o0 + j < OC ? o0 + j : OC - 1) * C;
                        tile(xb + (size_t)n0 * C, (size_t)C, nr, wr, C, r);
                    } else {
                        const float *wr[TILE_O];
                        for (int j = 0; j < TILE_O; j++)
                            wr[j] = (const float *)w_t.data + (size_t)(o0 + j < OC ? o0 + j : OC - 1) * C;
                        tile_f32(inp + (size_t)n0 * C, (size_t)C, nr, wr, C, r);
                    }
                    for (int i = 0; i < nr; i++) {
                        float *dst = out + (size_t)(n0 + i) * OC;
                        for (int j = 0; j < TILE_O && o0 + j < OC; j++) {
                            float y = bias ? r[i][j] + bias[o0 + j] : r[i][j];
                            dst[o0 + j] = accumulate ? dst[o0 + j] + y : y;
                        }
                    }
                }
            }
        }
    }
    return DSPY_OK;
}

dspy_status dspy_cpu_fast_linear(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, dspy_tensor bias,
                                 int N, int C, int OC, int accumulate) {
    return fast_linear(be, out, inp, w, bias, N, C, OC, accumulate, true);
}

static dspy_status fast_linear_w16(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w,
                                   dspy_tensor bias, int N, int C, int OC, int accumulate) {
    return fast_linear(be, out, inp, w, bias, N, C, OC, accumulate, false);
}

/* linear_backward (kern/ops.h), F32. The reference's order per element, with the ISA's axpy:
 *   dinp row n += sum over o in order of dout[n, o] w[o]   (the rows split over threads; the
 *     weight walked in L2-sized blocks of rows so that it is read once per thread, not per row)
 *   dw row o += sum over n in order of dout[n, o] inp[n];  dbias[o] += the same sum of dout
 *     (the output rows handed out to threads 64 at a time).
 * Zero gradients are skipped as the reference skips them. Each element is one thread's sum in
 * a fixed order: deterministic for any thread count. */
dspy_status dspy_cpu_fast_linear_backward(dspy_backend *be, dspy_tensor dinp_t, dspy_tensor dw_t, dspy_tensor dbias_t,
                                          dspy_tensor dout_t, dspy_tensor inp_t, dspy_tensor w_t, int N, int C,
                                          int OC) {
    cpu_enter(be);
    DSPY_TRY(dspy_cpu_linear_backward_check(dinp_t, dw_t, dbias_t, dout_t, inp_t, w_t, N, C, OC));
    float *dinp = dinp_t.data, *dw = dw_t.data, *dbias = dbias_t.data;
    const float *dout = dout_t.data, *inp = inp_t.data, *w = w_t.data;
    const dspy_cpu_axpy_fn axpy = dspy_cpu_axpy_for(dspy_cpu_simd_active());
    const long work = (long)N * C * OC;
    if (dinp) {
        const int ob = (int)(PANEL_BYTES / ((int64_t)C * 4) > 0 ? PANEL_BYTES / ((int64_t)C * 4) : 1);
#pragma omp parallel if (work > FAST_PARALLEL_MIN)
        {
            const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
            const int n0 = (int)((int64_t)N * tid / nth), n1 = (int)((int64_t)N * (tid + 1) / nth);
            for (int o0 = 0; o0 < OC; o0 += ob) {
                const int o1 = OC - o0 < ob ? OC : o0 + ob;
                for (int n = n0; n < n1; n++) {
                    float *di = dinp + (size_t)n * C;       /* (C) */
                    const float *g = dout + (size_t)n * OC; /* (OC) */
                    for (int o = o0; o < o1; o++)
                        if (g[o] != 0.0f) axpy(di, g[o], w + (size_t)o * C, C);
                }
            }
        }
    }
    if (dw || dbias) {
#pragma omp parallel for schedule(dynamic, 64) if (work > FAST_PARALLEL_MIN)
        for (int o = 0; o < OC; o++) {
            float *dwr = dw ? dw + (size_t)o * C : NULL; /* (C) */
            float db = 0;
            for (int n = 0; n < N; n++) {
                float go = dout[(size_t)n * OC + o];
                db += go;
                if (dwr && go != 0.0f) axpy(dwr, go, inp + (size_t)n * C, C);
            }
            if (dbias) dbias[o] += db;
        }
    }
    return DSPY_OK;
}

/* ---- the fused projections, as their defining compositions (kern/ops.h) ----------------- */

dspy_status dspy_cpu_fast_attn_in(dspy_backend *be, dspy_tensor q_out, dspy_tensor kcache, dspy_tensor vcache,
                                  dspy_tensor x, dspy_tensor w_norm, dspy_tensor wqkv, dspy_tensor bqkv,
                                  dspy_tensor pos, dspy_tensor slots, dspy_tensor inv_freq, dspy_tensor xn,
                                  dspy_tensor qkv, int N, int C, int NH, int NKV, int HS, float eps) {
    const int W = (NH + 2 * NKV) * HS;
    DSPY_TRY(dspy_cpu_rmsnorm(be, xn, x, w_norm, N, C, eps));
    DSPY_TRY(dspy_cpu_fast_linear(be, qkv, xn, wqkv, bqkv, N, C, W, false));
    return dspy_cpu_qkv_rope_store(be, q_out, kcache, vcache, qkv, pos, slots, inv_freq, N, NH, NKV, HS);
}

dspy_status dspy_cpu_fast_mlp_in(dspy_backend *be, dspy_tensor h, dspy_tensor x, dspy_tensor w_norm,
                                 dspy_tensor w_gate_up, dspy_tensor xn, dspy_tensor gu, int N, int C, int I,
                                 float eps) {
    DSPY_TRY(dspy_cpu_rmsnorm(be, xn, x, w_norm, N, C, eps));
    DSPY_TRY(dspy_cpu_fast_linear(be, gu, xn, w_gate_up, dspy_tensor_none(), N, C, 2 * I, false));
    return dspy_cpu_swiglu(be, h, gu, dspy_tensor_slice(gu, I, gu.n - I), N, I, 2 * I);
}

dspy_status dspy_cpu_fast_logits(dspy_backend *be, dspy_tensor out, dspy_tensor x, dspy_tensor rows,
                                 dspy_tensor w_norm, dspy_tensor w, dspy_tensor sel, dspy_tensor seln, int M, int C,
                                 int V, float eps) {
    DSPY_TRY(dspy_cpu_gather_rows(be, sel, x, rows, M, C));
    DSPY_TRY(dspy_cpu_rmsnorm(be, seln, sel, w_norm, M, C, eps));
    return fast_linear_w16(be, out, seln, w, dspy_tensor_none(), M, C, V, false);
}
