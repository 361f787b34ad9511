/* fast_linear.c — the fast CPU path's matrix products: linear (GEMV for decode, a cache-blocked
 * GEMM for prefill) and the fused projections built on it (attn_in, mlp_in, logits).
 *
 * linear: y (N, OC) = inp (N, C) @ w^T (+ bias), w (OC, C) BF16 as nn.Linear stores it. One
 * OpenMP region: the threads first round inp to BF16 into the planned scratch (each a share of
 * the elements), then split the outputs into contiguous runs of 4-row weight tiles, one run
 * per thread. A thread walks its run in panels of weight rows that stay in L2 (~256 KiB); for
 * each panel, blocks of 4 input rows (in L1) against every tile of the panel, each tile over the
 * full K (kern/cpu/fast.h: the sum order is the SIMD level's and K's alone). So every output
 * element is one thread's one sum, whatever the thread count, N or the element's tile: results
 * are deterministic and a row is bit-identical alone or batched. Weights not in BF16 (a
 * reference-loaded model) take the reference kernel.
 *
 * The fused projections are their defining compositions (kern/ops.h) with this linear.
 */
#include "kern/cpu/fast.h"

enum {
    TILE_O = 4,             /* weight rows per tile */
    TILE_N = 4,             /* input rows per tile */
    PANEL_BYTES = 256 << 10 /* weight rows a thread keeps hot in its L2 */
};

/* Work (multiply-adds) below which the region runs on one thread: a team costs microseconds. */
#define FAST_PARALLEL_MIN (1L << 15)

dspy_status dspy_cpu_fast_linear(dspy_backend *be, dspy_tensor out_t, dspy_tensor inp_t, dspy_tensor w_t,
                                 dspy_tensor bias_t, int N, int C, int OC, bool accumulate) {
    if (w_t.dtype != DSPY_DTYPE_BF16) return dspy_cpu_linear(be, out_t, inp_t, w_t, bias_t, N, C, OC, accumulate);
    cpu_enter(be);
    cpu_state *cs = cpu_of(be);
    CPU_NEED("linear", "out", out_t, DSPY_DTYPE_F32, (int64_t)N * OC);
    CPU_NEED("linear", "inp", inp_t, DSPY_DTYPE_F32, (int64_t)N * C);
    CPU_NEED("linear", "w", w_t, DSPY_DTYPE_BF16, (int64_t)OC * C);
    if (bias_t.data) CPU_NEED("linear", "bias", bias_t, DSPY_DTYPE_F32, OC);
    if (N < 0 || C < 1 || OC < 0)
        return dspy_fail(DSPY_ERR_ARG, "cpu linear: N=%d, C=%d, OC=%d (N, OC >= 0 and C >= 1 expected)", N, C, OC);
    DSPY_TRY(dspy_cpu_plan_check("linear", "N x C (the BF16 copy of the input)", (int64_t)N * C, cs->xb_cap));
    if (N == 0 || OC == 0) return DSPY_OK;
    float *out = out_t.data;
    const float *inp = inp_t.data, *bias = bias_t.data;
    const uint16_t *w = w_t.data;
    uint16_t *xb = cs->xb; /* (N, C) */
    const dspy_cpu_tile_fn tile = dspy_cpu_tile_for(dspy_cpu_simd_active());
    const int ntiles = (OC + TILE_O - 1) / TILE_O;
    const int64_t panel_tiles = (int64_t)PANEL_BYTES / ((int64_t)TILE_O * C * 2) > 0
                                    ? (int64_t)PANEL_BYTES / ((int64_t)TILE_O * C * 2)
                                    : 1;
    const int64_t nx = (int64_t)N * C;
#pragma omp parallel if ((long)N * C * OC > FAST_PARALLEL_MIN)
    {
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        for (int64_t i = nx * tid / nth, e = nx * (tid + 1) / nth; i < e; i++) xb[i] = dspy_cpu_round_bf16(inp[i]);
#pragma omp barrier
        const int t0 = (int)((int64_t)ntiles * tid / nth), t1 = (int)((int64_t)ntiles * (tid + 1) / nth);
        for (int p0 = t0; p0 < t1; p0 += (int)panel_tiles) {
            const int p1 = p0 + panel_tiles < t1 ? p0 + (int)panel_tiles : t1;
            for (int n0 = 0; n0 < N; n0 += TILE_N) {
                const int nr = N - n0 < TILE_N ? N - n0 : TILE_N;
                for (int t = p0; t < p1; t++) {
                    const int o0 = t * TILE_O;
                    const uint16_t *wr[TILE_O];
                    for (int j = 0; j < TILE_O; j++) /* past OC: repeat the last row, result unused */
                        wr[j] = w + (size_t)(o0 + j < OC ? o0 + j : OC - 1) * C;
                    float r[TILE_N][TILE_O];
                    tile(xb + (size_t)n0 * C, (size_t)C, nr, wr, C, r);
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
    return dspy_cpu_fast_linear(be, out, seln, w, dspy_tensor_none(), M, C, V, false);
}
