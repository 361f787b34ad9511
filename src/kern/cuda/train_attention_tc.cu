/* train_attention_tc.cu — the training attention on tensor cores (kern/ops.h attention_train and
 * attention_train_backward with BF16 q, k, v: the BF16 mixed-precision trainer's copies).
 *
 * The same flash-style algorithm, masks and outputs as train_attention.cu (row t sees keys
 * start[t] .. t and those of a shared prefix [0, prefix); the key tiles of tr_key_tiles; nothing of size T x T is stored; the backward recomputes scores from q, k and the
 * saved lse), with the tile products on tensor cores through WMMA (16 x 16 x 16 BF16 fragments,
 * F32 accumulation): 4 warps a block, each warp owning 16 of the tile's 64 rows (queries in the
 * forward and dq passes, keys in the dk/dv pass), so that the softmax statistics and the
 * element-wise steps of a row are the owning warp's alone and need no block barrier; only the
 * shared K/V (or Q/dO) tiles do. Scores, the online softmax (m, l), lse, D = dout . out and
 * every accumulator are F32; the operands of each product are BF16: q, k, v as given, dout
 * rounded on load, P and dS rounded before their products (as flash-attention does). Results
 * agree with the F32 reference to BF16 rounding (~3e-3 relative). Head dims are padded with zeros
 * to DP = 64 (HS <= 64) or 128 (HS <= 128).
 *
 * Kernels (128 threads):
 *   forward  (T/64, NH): S = Q K^T per 64-key tile into shared F32, the warp's rows' online
 *            softmax (P into shared BF16, O rescaled in shared F32), O += P V;
 *            out = O / l, lse = m + log l.
 *   dk/dv    (T/64, NKV): a 64-key tile over the group's query heads and the 64-row query tiles
 *            that can see it: S^T = K Q^T, dP^T = V dO^T, P^T = exp(S^T scale - lse),
 *            dS^T = P^T (dP^T - D); dV += P^T dO, dK += dS^T Q (accumulators in registers).
 *   dq       (T/64, NH): dQ += dS K over the key tiles (D from train_attention.cu's row dots).
 * Each output element is written once (OVERWRITE), as the F32 kernels.
 */
#include <mma.h>

#include "kern/cuda/train.cuh"

using namespace nvcuda;

enum {
    TC_THREADS = 128,
    TC_ROWS = 64,     /* rows (queries or keys) of a block's tile; 16 per warp */
    TC_KEYS = 64,     /* the other side of a score tile */
    TC_LS = TC_KEYS + 4, /* row stride (floats) of F32 score tiles */
    TC_LP = TC_KEYS + 8, /* row stride (bf16) of BF16 P / dS tiles */
};

typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> frag_a;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> frag_b_row;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> frag_b_col;
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> frag_c;

/* Shared-memory layout: byte offsets of the kernels' arrays, each rounded to 128 bytes (WMMA
 * wants 32-byte aligned fragment pointers). LB = DP + 8 bf16 per row of an operand tile,
 * LO = DP + 4 floats per row of an F32 output tile. */
static constexpr __host__ __device__ size_t tc_round(size_t b) { return (b + 127) & ~(size_t)127; }
template <int DP> static constexpr __host__ __device__ size_t tc_op() {
    return tc_round((size_t)TC_ROWS * (DP + 8) * sizeof(bf16));
}
template <int DP> static constexpr __host__ __device__ size_t tc_out() {
    return tc_round((size_t)TC_ROWS * (DP + 4) * sizeof(float));
}
static constexpr __host__ __device__ size_t tc_sf() { return tc_round((size_t)TC_ROWS * TC_LS * sizeof(float)); }
static constexpr __host__ __device__ size_t tc_pb() { return tc_round((size_t)TC_ROWS * TC_LP * sizeof(bf16)); }
/* lse, D, start of a tile's rows */
static constexpr __host__ __device__ size_t tc_vals() { return tc_round(3 * TC_ROWS * sizeof(float)); }

/* forward: Q K V | S | P | O | vals */
template <int DP> static constexpr __host__ __device__ size_t fwd_tc_smem() {
    return 3 * tc_op<DP>() + tc_sf() + tc_pb() + tc_out<DP>() + tc_vals();
}
/* dq: Q dO K V | S dP | dS | out | vals */
template <int DP> static constexpr __host__ __device__ size_t dq_tc_smem() {
    return 4 * tc_op<DP>() + 2 * tc_sf() + tc_pb() + tc_out<DP>() + tc_vals();
}
/* dk/dv: K V Q dO | S^T dP^T | P^T dS^T | out | vals */
template <int DP> static constexpr __host__ __device__ size_t dkdv_tc_smem() {
    return 4 * tc_op<DP>() + 2 * tc_sf() + 2 * tc_pb() + tc_out<DP>() + tc_vals();
}

/* Rows [r0, r0 + 64) of head h of a (T, H, HS) BF16 array into dst (64, DP + 8); zero past T and
 * HS. vec: HS == DP and 16-byte aligned rows (8 elements a load). */
template <int DP>
static __device__ __forceinline__ void tc_load_bf(bf16 *dst, const bf16 *src, int r0, int T, int H, int h, int HS,
                                                  bool vec) {
    constexpr int LB = DP + 8;
    if (vec) {
        for (int idx = threadIdx.x; idx < TC_ROWS * DP / 8; idx += TC_THREADS) {
            int r = idx / (DP / 8), c = (idx % (DP / 8)) * 8, t = r0 + r;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (t < T) v = *reinterpret_cast<const uint4 *>(src + ((int64_t)t * H + h) * HS + c);
            *reinterpret_cast<uint4 *>(dst + r * LB + c) = v;
        }
        return;
    }
    for (int idx = threadIdx.x; idx < TC_ROWS * DP; idx += TC_THREADS) {
        int r = idx / DP, d = idx % DP, t = r0 + r;
        dst[r * LB + d] = (t < T && d < HS) ? src[((int64_t)t * H + h) * HS + d] : __float2bfloat16_rn(0.0f);
    }
}

/* The same from an F32 array, rounded to BF16 (dout). */
template <int DP>
static __device__ __forceinline__ void tc_load_f32(bf16 *dst, const float *src, int r0, int T, int H, int h, int HS) {
    constexpr int LB = DP + 8;
    for (int idx = threadIdx.x; idx < TC_ROWS * DP; idx += TC_THREADS) {
        int r = idx / DP, d = idx % DP, t = r0 + r;
        dst[r * LB + d] = f2bf((t < T && d < HS) ? src[((int64_t)t * H + h) * HS + d] : 0.0f);
    }
}

/* Per-row values and starts of rows [r0, r0 + 64) (see train_attention.cu). */
static __device__ __forceinline__ void tc_load_vals(float *ls, float *Ds, int *st, const float *lse, const float *Dg,
                                                    const int32_t *start, int r0, int T, int H, int h) {
    for (int r = threadIdx.x; r < TC_ROWS; r += TC_THREADS) {
        int t = r0 + r;
        if (ls) ls[r] = t < T ? lse[(int64_t)t * H + h] : 0.0f;
        if (Ds) Ds[r] = t < T ? Dg[(int64_t)t * H + h] : 0.0f;
        st[r] = t < T ? start[t] : 0x7fffffff;
    }
}

static __device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
static __device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* dst (16, 64) F32 (row stride TC_LS) = A (16 rows of a (., DP + 8) tile) B^T, B the 64 rows of
 * another such tile: scores of 16 rows against 64 rows. */
template <int DP>
static __device__ __forceinline__ void tc_scores(float *dst, const bf16 *A, const bf16 *B) {
    constexpr int LB = DP + 8;
#pragma unroll
    for (int j = 0; j < TC_KEYS / 16; j++) {
        frag_c c;
        wmma::fill_fragment(c, 0.0f);
#pragma unroll
        for (int kd = 0; kd < DP; kd += 16) {
            frag_a a;
            frag_b_col b; /* B^T: element (d, key) of the product's right side is B[key][d] */
            wmma::load_matrix_sync(a, A + kd, LB);
            wmma::load_matrix_sync(b, B + 16 * j * LB + kd, LB);
            wmma::mma_sync(c, a, b, c);
        }
        wmma::store_matrix_sync(dst + 16 * j, c, TC_LS, wmma::mem_row_major);
    }
}

/* acc[e] (16, 16 dims e) += P (16, 64) BF16 (row stride TC_LP) @ B (64, DP) BF16 (row stride DP + 8). */
template <int DP>
static __device__ __forceinline__ void tc_accum(frag_c (&acc)[DP / 16], const bf16 *P, const bf16 *B) {
    constexpr int LB = DP + 8;
#pragma unroll
    for (int kk = 0; kk < TC_KEYS; kk += 16) {
        frag_a a;
        wmma::load_matrix_sync(a, P + kk, TC_LP);
#pragma unroll
        for (int e = 0; e < DP / 16; e++) {
            frag_b_row b;
            wmma::load_matrix_sync(b, B + kk * LB + 16 * e, LB);
            wmma::mma_sync(acc[e], a, b, acc[e]);
        }
    }
}

/* Writes a warp's 16 rows of accumulators, times mul, to rows [row0, row0 + 16) of head h of
 * dst (T, H, HS) through the warp's rows of the F32 staging tile O (row stride DP + 4). */
template <int DP>
static __device__ __forceinline__ void tc_store_rows(float *dst, frag_c (&acc)[DP / 16], float *O, int row0, int T,
                                                     int H, int h, int HS, float mul) {
    constexpr int LO = DP + 4;
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int e = 0; e < DP / 16; e++) wmma::store_matrix_sync(O + 16 * e, acc[e], LO, wmma::mem_row_major);
    __syncwarp();
    for (int i = lane; i < 16 * DP; i += 32) {
        int r = i / DP, d = i % DP, t = row0 + r;
        if (t < T && d < HS) dst[((int64_t)t * H + h) * HS + d] = O[r * LO + d] * mul;
    }
    __syncwarp();
}

/* ---- forward ----------------------------------------------------------------------------- */

template <int DP>
static __global__ void __launch_bounds__(TC_THREADS)
    k_att_fwd_tc(float *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, const int32_t *start,
                 int prefix, int T, int NH, int NKV, int HS, float scale, bool vec) {
    griddep_wait();
    constexpr int LB = DP + 8, LO = DP + 4;
    extern __shared__ float4 smem4[];
    char *sm = reinterpret_cast<char *>(smem4);
    bf16 *Qs = (bf16 *)sm, *Ks = (bf16 *)(sm + tc_op<DP>()), *Vs = (bf16 *)(sm + 2 * tc_op<DP>());
    float *Ss = (float *)(sm + 3 * tc_op<DP>());
    bf16 *Ps = (bf16 *)(sm + 3 * tc_op<DP>() + tc_sf());
    float *Os = (float *)(sm + 3 * tc_op<DP>() + tc_sf() + tc_pb());
    int *st = (int *)(sm + 3 * tc_op<DP>() + tc_sf() + tc_pb() + tc_out<DP>());
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, w0 = 16 * warp;
    const int t0 = blockIdx.x * TC_ROWS, h = blockIdx.y, kvh = h / (NH / NKV);
    tc_load_bf<DP>(Qs, q, t0, T, NH, h, HS, vec);
    tc_load_vals(NULL, NULL, st, NULL, NULL, start, t0, T, NH, h);
    for (int i = lane; i < 16 * LO; i += 32) Os[w0 * LO + i] = 0.0f;
    float m[16], l[16];
#pragma unroll
    for (int r = 0; r < 16; r++) m[r] = -INFINITY, l[r] = 0.0f;
    const tr_keys kt = tr_key_tiles(prefix, start[t0], min(t0 + TC_ROWS, T) - 1, TC_KEYS);
    for (int it = 0; it < kt.nt; it++) {
        const int j0 = tr_key_tile(kt, it, TC_KEYS);
        __syncthreads(); /* every warp is done with the previous Ks, Vs (and Qs, st are loaded) */
        tc_load_bf<DP>(Ks, k, j0, T, NKV, kvh, HS, vec);
        tc_load_bf<DP>(Vs, v, j0, T, NKV, kvh, HS, vec);
        __syncthreads();
        tc_scores<DP>(Ss + w0 * TC_LS, Qs + w0 * LB, Ks);
        __syncwarp();
#pragma unroll
        for (int r = 0; r < 16; r++) {
            const int rr = w0 + r, row = t0 + rr, rs = st[rr];
            float s[2];
#pragma unroll
            for (int c = 0; c < 2; c++) {
                const int kk = lane + 32 * c, key = j0 + kk;
                s[c] = (tr_sees(key, row, rs, prefix) && key < T) ? Ss[rr * TC_LS + kk] * scale : -INFINITY;
            }
            const float mnew = fmaxf(m[r], warp_max(fmaxf(s[0], s[1])));
            float alpha = 1.0f, p[2] = {0.0f, 0.0f};
            if (mnew != -INFINITY) {
                alpha = expf(m[r] - mnew); /* 0 when m was -inf */
                p[0] = expf(s[0] - mnew), p[1] = expf(s[1] - mnew);
            }
            l[r] = l[r] * alpha + warp_sum(p[0] + p[1]);
            m[r] = mnew;
            Ps[rr * TC_LP + lane] = f2bf(p[0]);
            Ps[rr * TC_LP + lane + 32] = f2bf(p[1]);
            for (int d = lane; d < DP; d += 32) Os[rr * LO + d] *= alpha;
        }
        __syncwarp();
        /* O (the warp's 16 rows) += P V */
#pragma unroll
        for (int e = 0; e < DP / 16; e++) {
            frag_c c;
            wmma::load_matrix_sync(c, Os + w0 * LO + 16 * e, LO, wmma::mem_row_major);
#pragma unroll
            for (int kk = 0; kk < TC_KEYS; kk += 16) {
                frag_a a;
                frag_b_row b;
                wmma::load_matrix_sync(a, Ps + w0 * TC_LP + kk, TC_LP);
                wmma::load_matrix_sync(b, Vs + kk * LB + 16 * e, LB);
                wmma::mma_sync(c, a, b, c);
            }
            wmma::store_matrix_sync(Os + w0 * LO + 16 * e, c, LO, wmma::mem_row_major);
        }
        __syncwarp();
    }
#pragma unroll
    for (int r = 0; r < 16; r++) {
        const int rr = w0 + r, row = t0 + rr;
        if (row >= T) continue;
        const float inv = 1.0f / l[r];
        float *dst = out + ((int64_t)row * NH + h) * HS;
        for (int d = lane; d < HS; d += 32) dst[d] = Os[rr * LO + d] * inv;
        if (lane == 0) lse[(int64_t)row * NH + h] = m[r] + logf(l[r]);
    }
}

/* ---- backward ---------------------------------------------------------------------------- */

template <int DP>
static __global__ void __launch_bounds__(TC_THREADS)
    k_att_bwd_dq_tc(float *dq, const float *dout, const float *lse, const float *Dg, const bf16 *q, const bf16 *k,
                    const bf16 *v, const int32_t *start, int prefix, int T, int NH, int NKV, int HS, float scale,
                    bool vec) {
    griddep_wait();
    constexpr int LB = DP + 8;
    extern __shared__ float4 smem4[];
    char *sm = reinterpret_cast<char *>(smem4);
    const size_t op = tc_op<DP>();
    bf16 *Qs = (bf16 *)sm, *Gs = (bf16 *)(sm + op), *Ks = (bf16 *)(sm + 2 * op), *Vs = (bf16 *)(sm + 3 * op);
    float *Ss = (float *)(sm + 4 * op), *Ps = (float *)(sm + 4 * op + tc_sf());
    bf16 *dSs = (bf16 *)(sm + 4 * op + 2 * tc_sf());
    float *Os = (float *)(sm + 4 * op + 2 * tc_sf() + tc_pb());
    float *ls = (float *)(sm + 4 * op + 2 * tc_sf() + tc_pb() + tc_out<DP>()), *Ds = ls + TC_ROWS;
    int *st = (int *)(Ds + TC_ROWS);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, w0 = 16 * warp;
    const int t0 = blockIdx.x * TC_ROWS, h = blockIdx.y, kvh = h / (NH / NKV);
    tc_load_bf<DP>(Qs, q, t0, T, NH, h, HS, vec);
    tc_load_f32<DP>(Gs, dout, t0, T, NH, h, HS);
    tc_load_vals(ls, Ds, st, lse, Dg, start, t0, T, NH, h);
    frag_c acc[DP / 16];
#pragma unroll
    for (int e = 0; e < DP / 16; e++) wmma::fill_fragment(acc[e], 0.0f);
    const tr_keys kt = tr_key_tiles(prefix, start[t0], min(t0 + TC_ROWS, T) - 1, TC_KEYS);
    for (int it = 0; it < kt.nt; it++) {
        const int j0 = tr_key_tile(kt, it, TC_KEYS);
        __syncthreads();
        tc_load_bf<DP>(Ks, k, j0, T, NKV, kvh, HS, vec);
        tc_load_bf<DP>(Vs, v, j0, T, NKV, kvh, HS, vec);
        __syncthreads();
        tc_scores<DP>(Ss + w0 * TC_LS, Qs + w0 * LB, Ks); /* S = Q K^T */
        tc_scores<DP>(Ps + w0 * TC_LS, Gs + w0 * LB, Vs); /* dP = dO V^T */
        __syncwarp();
        for (int i = lane; i < 16 * TC_KEYS; i += 32) {
            const int rr = w0 + i / TC_KEYS, kk = i % TC_KEYS, row = t0 + rr, key = j0 + kk;
            const bool ok = tr_sees(key, row, st[rr], prefix) && key < T;
            const float p = ok ? expf(Ss[rr * TC_LS + kk] * scale - ls[rr]) : 0.0f;
            dSs[rr * TC_LP + kk] = f2bf(p * (Ps[rr * TC_LS + kk] - Ds[rr]));
        }
        __syncwarp();
        tc_accum<DP>(acc, dSs + w0 * TC_LP, Ks); /* dQ += dS K */
    }
    tc_store_rows<DP>(dq, acc, Os + w0 * (DP + 4), t0 + w0, T, NH, h, HS, scale);
}

template <int DP>
static __global__ void __launch_bounds__(TC_THREADS)
    k_att_bwd_dkdv_tc(float *dk, float *dv, const float *dout, const float *lse, const float *Dg, const bf16 *q,
                      const bf16 *k, const bf16 *v, const int32_t *start, int prefix, int T, int NH, int NKV, int HS,
                      float scale, bool vec) {
    griddep_wait();
    constexpr int LB = DP + 8;
    extern __shared__ float4 smem4[];
    char *sm = reinterpret_cast<char *>(smem4);
    const size_t op = tc_op<DP>();
    bf16 *Ks = (bf16 *)sm, *Vs = (bf16 *)(sm + op), *Qs = (bf16 *)(sm + 2 * op), *Gs = (bf16 *)(sm + 3 * op);
    float *St = (float *)(sm + 4 * op), *dPt = (float *)(sm + 4 * op + tc_sf());
    bf16 *Pt = (bf16 *)(sm + 4 * op + 2 * tc_sf()), *dSt = (bf16 *)(sm + 4 * op + 2 * tc_sf() + tc_pb());
    float *Os = (float *)(sm + 4 * op + 2 * tc_sf() + 2 * tc_pb());
    float *ls = (float *)(sm + 4 * op + 2 * tc_sf() + 2 * tc_pb() + tc_out<DP>()), *Ds = ls + TC_ROWS;
    int *st = (int *)(Ds + TC_ROWS);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, w0 = 16 * warp;
    const int j0 = blockIdx.x * TC_KEYS, kvh = blockIdx.y, group = NH / NKV, je = min(j0 + TC_KEYS, T) - 1;
    tc_load_bf<DP>(Ks, k, j0, T, NKV, kvh, HS, vec);
    tc_load_bf<DP>(Vs, v, j0, T, NKV, kvh, HS, vec);
    frag_c dka[DP / 16], dva[DP / 16];
#pragma unroll
    for (int e = 0; e < DP / 16; e++) wmma::fill_fragment(dka[e], 0.0f), wmma::fill_fragment(dva[e], 0.0f);
    for (int g = 0; g < group; g++) {
        const int h = kvh * group + g;
        /* rows before j0 never see these keys; from the first row whose start is past je on,
         * none does (starts only grow), unless the tile holds prefix keys (every later row sees
         * those) */
        for (int t0 = j0; t0 < T && (start[t0] <= je || j0 < prefix); t0 += TC_ROWS) {
            __syncthreads(); /* every warp is done with the previous Qs, Gs, vals (Ks, Vs loaded) */
            tc_load_bf<DP>(Qs, q, t0, T, NH, h, HS, vec);
            tc_load_f32<DP>(Gs, dout, t0, T, NH, h, HS);
            tc_load_vals(ls, Ds, st, lse, Dg, start, t0, T, NH, h);
            __syncthreads();
            tc_scores<DP>(St + w0 * TC_LS, Ks + w0 * LB, Qs);  /* S^T = K Q^T (the warp's 16 keys) */
            tc_scores<DP>(dPt + w0 * TC_LS, Vs + w0 * LB, Gs); /* dP^T = V dO^T */
            __syncwarp();
            for (int i = lane; i < 16 * TC_ROWS; i += 32) {
                const int kk = w0 + i / TC_ROWS, rr = i % TC_ROWS, key = j0 + kk, row = t0 + rr;
                const bool ok = tr_sees(key, row, st[rr], prefix) && key < T && row < T;
                const float p = ok ? expf(St[kk * TC_LS + rr] * scale - ls[rr]) : 0.0f;
                Pt[kk * TC_LP + rr] = f2bf(p);
                dSt[kk * TC_LP + rr] = f2bf(p * (dPt[kk * TC_LS + rr] - Ds[rr]));
            }
            __syncwarp();
            tc_accum<DP>(dva, Pt + w0 * TC_LP, Gs);  /* dV += P^T dO */
            tc_accum<DP>(dka, dSt + w0 * TC_LP, Qs); /* dK += dS^T Q */
        }
    }
    float *Ow = Os + w0 * (DP + 4);
    tc_store_rows<DP>(dk, dka, Ow, j0 + w0, T, NKV, kvh, HS, scale);
    tc_store_rows<DP>(dv, dva, Ow, j0 + w0, T, NKV, kvh, HS, 1.0f);
}

/* ---- entries (called by train_attention.cu's for BF16 q, k, v) ----------------------------- */

dspy_status dspy_cu_train_tc_setup(dspy_backend *be) {
#define TC_SMEM(kern, bytes) \
    DSPY_TRY(dspy_cu_check(be, cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)(bytes)), \
                           "tensor-core training attention setup"))
    TC_SMEM(k_att_fwd_tc<64>, fwd_tc_smem<64>());
    TC_SMEM(k_att_fwd_tc<128>, fwd_tc_smem<128>());
    TC_SMEM(k_att_bwd_dq_tc<64>, dq_tc_smem<64>());
    TC_SMEM(k_att_bwd_dq_tc<128>, dq_tc_smem<128>());
    TC_SMEM(k_att_bwd_dkdv_tc<64>, dkdv_tc_smem<64>());
    TC_SMEM(k_att_bwd_dkdv_tc<128>, dkdv_tc_smem<128>());
#undef TC_SMEM
    return DSPY_OK;
}

/* 16-byte loads of whole rows: HS is the padded width and every row starts 16-byte aligned. */
static bool tc_vec(int HS, const void *a, const void *b, const void *c) {
    return (HS == 64 || HS == 128) && ((((uintptr_t)a | (uintptr_t)b | (uintptr_t)c) & 15u) == 0);
}

dspy_status dspy_cu_attention_train_tc(dspy_backend *be, float *out, float *lse, const bf16 *q, const bf16 *k,
                                       const bf16 *v, const int32_t *start, int prefix, int T, int NH, int NKV,
                                       int HS) {
    const float scale = (float)(1.0 / sqrt((double)HS));
    const bool vec = tc_vec(HS, q, k, v);
    dim3 grid(cu_blocks(T, TC_ROWS), NH);
    if (HS <= 64)
        return cu_launch(be, "attention_train (BF16)", k_att_fwd_tc<64>, grid, TC_THREADS, fwd_tc_smem<64>(), out,
                         lse, q, k, v, start, prefix, T, NH, NKV, HS, scale, vec);
    return cu_launch(be, "attention_train (BF16)", k_att_fwd_tc<128>, grid, TC_THREADS, fwd_tc_smem<128>(), out, lse,
                     q, k, v, start, prefix, T, NH, NKV, HS, scale, vec);
}

dspy_status dspy_cu_attention_train_backward_tc(dspy_backend *be, float *dq, float *dk, float *dv, const float *dout,
                                                const float *lse, const float *D, const bf16 *q, const bf16 *k,
                                                const bf16 *v, const int32_t *start, int prefix, int T, int NH,
                                                int NKV, int HS) {
    const float scale = (float)(1.0 / sqrt((double)HS));
    const bool vec = tc_vec(HS, q, k, v);
    dim3 gkv(cu_blocks(T, TC_KEYS), NKV), gq(cu_blocks(T, TC_ROWS), NH);
    if (HS <= 64) {
        DSPY_TRY(cu_launch(be, "attention_train_backward (BF16 dk, dv)", k_att_bwd_dkdv_tc<64>, gkv, TC_THREADS,
                           dkdv_tc_smem<64>(), dk, dv, dout, lse, D, q, k, v, start, prefix, T, NH, NKV, HS, scale,
                           vec));
        return cu_launch(be, "attention_train_backward (BF16 dq)", k_att_bwd_dq_tc<64>, gq, TC_THREADS,
                         dq_tc_smem<64>(), dq, dout, lse, D, q, k, v, start, prefix, T, NH, NKV, HS, scale, vec);
    }
    DSPY_TRY(cu_launch(be, "attention_train_backward (BF16 dk, dv)", k_att_bwd_dkdv_tc<128>, gkv, TC_THREADS,
                       dkdv_tc_smem<128>(), dk, dv, dout, lse, D, q, k, v, start, prefix, T, NH, NKV, HS, scale,
                           vec));
    return cu_launch(be, "attention_train_backward (BF16 dq)", k_att_bwd_dq_tc<128>, gq, TC_THREADS,
                     dq_tc_smem<128>(), dq, dout, lse, D, q, k, v, start, prefix, T, NH, NKV, HS, scale, vec);
}
