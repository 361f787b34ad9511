/* gemv.cu — the decode-sized projections (N <= 4 rows; by default one row of BF16 weights, the
 * rest goes to gemv_mma.cu: dspy_cu_mma_fits) as memory-bound GEMV kernels, with the
 * steps around them fused in: the fused ops attn_in, mlp_in and logits of kern/ops.h, and the
 * GEMV path of linear.
 *
 * Every kernel streams its weight matrix once (the floor: OC * C * 2 bytes / bandwidth): a warp
 * owns an output feature (or a pair of them), each lane keeps four 16-byte weight loads in flight
 * that bypass L1, F32 accumulation, a warp reduction. The grid is capped at 4 blocks per SM and
 * warps stride over the features, so the per-block prologue stays cheap. Fused around it:
 *   - RMSNorm prologue (attn_in, mlp_in, logits): each block normalises the N input rows (F32
 *     residual, optionally gathered by a row index) into shared memory as BF16 — the same
 *     rounding the composed path's BF16 normed activations get;
 *   - attn_in epilogue: a warp computes rows i and i + HS/2 of one head, so it can apply RoPE and
 *     write q, or the cache's k and v, directly (no qkv buffer, no second kernel);
 *   - mlp_in epilogue: rows r of gate and up, then silu(gate) * up;
 *   - linear: bias, BF16/F32 store, or add into the F32 residual.
 * Shapes these kernels do not take (C % 8 != 0, unaligned rows, normed inputs over the shared
 * memory budget, N > 4) go to the tensor-core kernels of gemv_mma.cu (5..16 rows) or else the
 * composed path (rmsnorm / cuBLASLt / qkv_rope_store / swiglu).
 */
#include <math.h>

#include "kern/cuda/cuda.cuh"
#include "kern/cuda/gemv_mma.cuh"

enum { GW = 8, GEMV_THREADS = GW * 32, NORM_SMEM_MAX = 48 * 1024 };
enum { EP_BF16 = 0, EP_F32 = 1, EP_ACC = 2 };

static __device__ __forceinline__ uint4 ld_stream(const uint4 *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

/* acc + sum_j w[j] * x[j] over the 8 BF16 values of two uint4. */
static __device__ __forceinline__ float dot8(uint4 w, uint4 x, float acc) {
    const __nv_bfloat162 *wp = (const __nv_bfloat162 *)&w, *xp = (const __nv_bfloat162 *)&x;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        float2 a = __bfloat1622float2(wp[j]), b = __bfloat1622float2(xp[j]);
        acc = fmaf(a.x, b.x, acc);
        acc = fmaf(a.y, b.y, acc);
    }
    return acc;
}

static __device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* accA[r] / accB[r] += W row a / b (C BF16) . x row r (x: NR rows of C BF16, 16-byte aligned).
 * B may be NULL (one row). Eight 16-byte weight loads in flight per lane before any use (four
 * per row for a pair). Partial sums per lane; the caller reduces. */
template <int NR>
static __device__ __forceinline__ void rows_dot(const bf16 *__restrict__ wa, const bf16 *__restrict__ wb,
                                         const bf16 *__restrict__ x, int C, float *accA, float *accB, int c0 = 0) {
    const int lane = threadIdx.x & 31, nch = C >> 3;
    const uint4 *A = (const uint4 *)wa, *B = (const uint4 *)wb, *X = (const uint4 *)x;
    int c = lane + c0;
    if (B) {
        for (; c + 96 < nch; c += 128) {
            uint4 a[4], b[4];
#pragma unroll
            for (int k = 0; k < 4; k++) a[k] = ld_stream(A + c + 32 * k), b[k] = ld_stream(B + c + 32 * k);
#pragma unroll
            for (int r = 0; r < NR; r++)
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    uint4 xv = X[(size_t)r * nch + c + 32 * k];
                    accA[r] = dot8(a[k], xv, accA[r]);
                    accB[r] = dot8(b[k], xv, accB[r]);
                }
        }
        for (; c < nch; c += 32) {
            uint4 a0 = ld_stream(A + c), b0 = ld_stream(B + c);
#pragma unroll
            for (int r = 0; r < NR; r++) {
                uint4 x0 = X[(size_t)r * nch + c];
                accA[r] = dot8(a0, x0, accA[r]);
                accB[r] = dot8(b0, x0, accB[r]);
            }
        }
        return;
    }
    for (; c + 224 < nch; c += 256) {
        uint4 a[8];
#pragma unroll
        for (int k = 0; k < 8; k++) a[k] = ld_stream(A + c + 32 * k);
#pragma unroll
        for (int r = 0; r < NR; r++)
#pragma unroll
            for (int k = 0; k < 8; k++) accA[r] = dot8(a[k], X[(size_t)r * nch + c + 32 * k], accA[r]);
    }
    for (; c + 96 < nch; c += 128) {
        uint4 a[4];
#pragma unroll
        for (int k = 0; k < 4; k++) a[k] = ld_stream(A + c + 32 * k);
#pragma unroll
        for (int r = 0; r < NR; r++)
#pragma unroll
            for (int k = 0; k < 4; k++) accA[r] = dot8(a[k], X[(size_t)r * nch + c + 32 * k], accA[r]);
    }
    for (; c < nch; c += 32) {
        uint4 a0 = ld_stream(A + c);
#pragma unroll
        for (int r = 0; r < NR; r++) accA[r] = dot8(a0, X[(size_t)r * nch + c], accA[r]);
    }
}

/* The first PF chunks of a lane's weight rows, loaded before griddep_wait(): weights never depend
 * on the previous kernel, so their latency overlaps its tail (with programmatic dependent launch)
 * and this kernel's own prologue. */
template <int PF> struct prefetch {
    uint4 a[PF], b[PF];
};

template <int PF>
static __device__ __forceinline__ void prefetch_rows(prefetch<PF> &p, const bf16 *wa, const bf16 *wb, int C) {
    const int lane = threadIdx.x & 31, nch = C >> 3;
#pragma unroll
    for (int k = 0; k < PF; k++) {
        int c = lane + 32 * k;
        if (c < nch) {
            p.a[k] = ld_stream((const uint4 *)wa + c);
            if (wb) p.b[k] = ld_stream((const uint4 *)wb + c);
        }
    }
}

/* acc += the prefetched chunks' share of the dot products; the caller continues at 32 * PF. */
template <int NR, int PF>
static __device__ __forceinline__ void prefetch_dot(const prefetch<PF> &p, bool pair, const bf16 *x, int C, float *accA,
                                             float *accB) {
    const int lane = threadIdx.x & 31, nch = C >> 3;
    const uint4 *X = (const uint4 *)x;
#pragma unroll
    for (int k = 0; k < PF; k++) {
        int c = lane + 32 * k;
        if (c >= nch) break;
#pragma unroll
        for (int r = 0; r < NR; r++) {
            uint4 xv = X[(size_t)r * nch + c];
            accA[r] = dot8(p.a[k], xv, accA[r]);
            if (pair) accB[r] = dot8(p.b[k], xv, accB[r]);
        }
    }
}

/* Block-wide sum (every thread gets it). */
static __device__ float block_sum_g(float v) {
    __shared__ float part[GW];
    v = warp_sum(v);
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    __syncthreads();
    if (l == 0) part[w] = v;
    __syncthreads();
    float t = 0;
#pragma unroll
    for (int i = 0; i < GW; i++) t += part[i];
    return t;
}

/* xs (NR, C) BF16 = rmsnorm(x row rows[r] (or r), weight wn) for r < NR.
 * This runs after griddep_wait, on every decode step's critical path, so its loads must not
 * queue one behind another: rows and weights are read as float4 with several loads in flight per
 * thread (a plain loop of dependent-looking scalar loads costs one L2 round trip per element). */
template <int NR>
static __device__ void norm_prologue(bf16 *xs, const float *__restrict__ x, const int32_t *__restrict__ rows,
                              const float *__restrict__ wn, int C, float eps) {
    const bool vec = C % 4 == 0 && (uintptr_t)x % 16 == 0 && (uintptr_t)wn % 16 == 0;
#pragma unroll 1
    for (int r = 0; r < NR; r++) {
        const float *xr = x + (int64_t)(rows ? rows[r] : r) * C;
        float ss = 0.0f;
        if (vec) {
            const float4 *x4 = (const float4 *)xr;
#pragma unroll 4
            for (int c = threadIdx.x; c < C / 4; c += blockDim.x) {
                float4 v = x4[c];
                ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
            }
        } else {
#pragma unroll 4
            for (int c = threadIdx.x; c < C; c += blockDim.x) ss += xr[c] * xr[c];
        }
        ss = block_sum_g(ss);
        const float rinv = 1.0f / sqrtf(ss / (float)C + eps);
        bf16 *xo = xs + (size_t)r * C;
        if (vec) {
            const float4 *x4 = (const float4 *)xr, *w4 = (const float4 *)wn;
#pragma unroll 4
            for (int c = threadIdx.x; c < C / 4; c += blockDim.x) {
                float4 v = x4[c], w = w4[c];
                __nv_bfloat162 lo = __floats2bfloat162_rn(w.x * (v.x * rinv), w.y * (v.y * rinv));
                __nv_bfloat162 hi = __floats2bfloat162_rn(w.z * (v.z * rinv), w.w * (v.w * rinv));
                *(__nv_bfloat162 *)(xo + 4 * c) = lo;
                *(__nv_bfloat162 *)(xo + 4 * c + 2) = hi;
            }
        } else {
#pragma unroll 4
            for (int c = threadIdx.x; c < C; c += blockDim.x) xo[c] = f2bf(wn[c] * (xr[c] * rinv));
        }
    }
    __syncthreads();
}

/* ---- linear (plain) ------------------------------------------------------------------------ */

template <int NR>
static __global__ __launch_bounds__(GEMV_THREADS) void k_gemv(const bf16 *__restrict__ W, const bf16 *__restrict__ X,
                                                       void *out, int mode, const float *__restrict__ bias, int OC,
                                                       int C) {
    const int lane = threadIdx.x & 31;
    int row = blockIdx.x * GW + (threadIdx.x >> 5);
    prefetch<8> pf;
    if (row < OC) prefetch_rows<8>(pf, W + (int64_t)row * C, NULL, C);
    griddep_wait(CU_REL_LINEAR);
    for (bool first = true; row < OC; row += gridDim.x * GW, first = false) {
        float acc[NR];
#pragma unroll
        for (int r = 0; r < NR; r++) acc[r] = 0.0f;
        if (first) {
            prefetch_dot<NR, 8>(pf, false, X, C, acc, NULL);
            rows_dot<NR>(W + (int64_t)row * C, NULL, X, C, acc, NULL, 256);
        } else {
            rows_dot<NR>(W + (int64_t)row * C, NULL, X, C, acc, NULL);
        }
#pragma unroll
        for (int r = 0; r < NR; r++) {
            float v = warp_sum(acc[r]) + (bias ? bias[row] : 0.0f);
            if (lane == r) {
                int64_t idx = (int64_t)r * OC + row;
                if (mode == EP_BF16) ((bf16 *)out)[idx] = f2bf(v);
                else if (mode == EP_F32) ((float *)out)[idx] = v;
                else ((float *)out)[idx] += v;
            }
        }
    }
}

/* Scalar fallback for any C and alignment (N <= 4). */
static __global__ void k_gemv_scalar(const bf16 *__restrict__ W, const bf16 *__restrict__ X, void *out, int mode,
                              const float *__restrict__ bias, int N, int OC, int C) {
    griddep_wait(CU_REL_LINEAR);
    const int lane = threadIdx.x & 31;
    for (int row = blockIdx.x * GW + (threadIdx.x >> 5); row < OC; row += gridDim.x * GW) {
        float acc[GEMV_MAX_ROWS] = {0, 0, 0, 0};
        for (int c = lane; c < C; c += 32) {
            float w = bf2f(W[(int64_t)row * C + c]);
            for (int r = 0; r < N; r++) acc[r] = fmaf(w, bf2f(X[(int64_t)r * C + c]), acc[r]);
        }
        for (int r = 0; r < N; r++) {
            float v = warp_sum(acc[r]) + (bias ? bias[row] : 0.0f);
            if (lane == 0) {
                int64_t idx = (int64_t)r * OC + row;
                if (mode == EP_BF16) ((bf16 *)out)[idx] = f2bf(v);
                else if (mode == EP_F32) ((float *)out)[idx] = v;
                else ((float *)out)[idx] += v;
            }
        }
    }
}

enum { K_GEMV = 0, K_ATTN_IN = 1, K_MLP_IN = 2, K_LOGITS = 3 };

/* The grid of a GEMV-family kernel over `units` warp work units: one wave — no more blocks than
 * fit on the device at once (measured occupancy, at most 4 per SM), so every block is resident
 * from the start, its warps stride over the units, and no block's prologue (the RMSNorm, the
 * first loads) waits for a second wave. */
static unsigned grid_for(dspy_backend *be, int64_t units, int kind, int N) {
    const cuda_state *s = cu_of(be);
    int occ = s->gemv_occ[kind][N < 1 ? 0 : N > 4 ? 3 : N - 1]; /* the scalar fallback may ask for more rows */
    int64_t b = (units + GW - 1) / GW, cap = (int64_t)s->sm_count * (occ < 1 ? 1 : occ > 4 ? 4 : occ);
    return (unsigned)(b < cap ? b : cap);
}

template <typename K> static cudaError_t occ_of(int *out, K kern, size_t smem) {
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(out, kern, GEMV_THREADS, smem);
}

bool dspy_cu_gemv_fits(int N, int C, const void *w, const void *inp) {
    return N >= 1 && N <= GEMV_MAX_ROWS && C % 8 == 0 && (uintptr_t)w % 16 == 0 && (uintptr_t)inp % 16 == 0;
}

dspy_status dspy_cu_gemv(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, dspy_tensor bias, int N, int C,
                    int OC, bool accumulate) {
    int mode = accumulate ? EP_ACC : out.dtype == DSPY_DTYPE_BF16 ? EP_BF16 : EP_F32;
    const bf16 *W = (const bf16 *)w.data, *X = (const bf16 *)inp.data;
    const float *b = (const float *)bias.data;
    unsigned g = grid_for(be, OC, K_GEMV, N);
    if (!dspy_cu_gemv_fits(N, C, w.data, inp.data)) {
        if (N > GEMV_MAX_ROWS) return dspy_fail(DSPY_ERR_ARG, "cuda gemv: %d rows (at most %d)", N, GEMV_MAX_ROWS);
        return cu_launch(be, "linear (gemv)", k_gemv_scalar, g, GEMV_THREADS, 0, W, X, out.data, mode, b, N, OC, C);
    }
    switch (N) {
    case 1: return cu_launch(be, "linear (gemv)", k_gemv<1>, g, GEMV_THREADS, 0, W, X, out.data, mode, b, OC, C);
    case 2: return cu_launch(be, "linear (gemv)", k_gemv<2>, g, GEMV_THREADS, 0, W, X, out.data, mode, b, OC, C);
    case 3: return cu_launch(be, "linear (gemv)", k_gemv<3>, g, GEMV_THREADS, 0, W, X, out.data, mode, b, OC, C);
    default: return cu_launch(be, "linear (gemv)", k_gemv<4>, g, GEMV_THREADS, 0, W, X, out.data, mode, b, OC, C);
    }
}

/* ---- attn_in: RMSNorm + q/k/v projection + RoPE + KV store ------------------------------------ */

/* Work unit u: a pair of rows (i, i + HS/2) of one head of q, k or v. */
template <int NR, int PF>
static __global__ __launch_bounds__(GEMV_THREADS) void k_attn_in(
    const bf16 *__restrict__ W, const float *__restrict__ bias, const float *__restrict__ x, const float *__restrict__ wn,
    float eps, const int32_t *__restrict__ pos, const int32_t *__restrict__ slots, const float *__restrict__ inv_freq,
    bf16 *__restrict__ q_out, bf16 *__restrict__ kc, bf16 *__restrict__ vc, int C, int NH, int NKV, int HS) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *xs = (bf16 *)smem_raw;
    const int lane = threadIdx.x & 31, half = HS / 2, Q = NH * HS, KVD = NKV * HS;
    const int units = (NH + 2 * NKV) * half;
    /* unit u: rows (rowA, rowA + half) of one head of q, k or v */
    auto row_of = [&](int u, int *sect, int *head, int *i) {
        *sect = u < NH * half ? 0 : u < (NH + NKV) * half ? 1 : 2;
        int v = *sect == 0 ? u : *sect == 1 ? u - NH * half : u - (NH + NKV) * half;
        *head = v / half, *i = v % half;
        return (*sect == 0 ? 0 : *sect == 1 ? Q : Q + KVD) + *head * HS + *i;
    };
    int u = blockIdx.x * GW + (threadIdx.x >> 5);
    prefetch<PF> pf; /* PF = 4 (8, both rows whole at C = 2048, measured no faster: 208 registers) */
    if (u < units) {
        int sect, head, i, rowA = row_of(u, &sect, &head, &i);
        prefetch_rows<PF>(pf, W + (int64_t)rowA * C, W + (int64_t)(rowA + half) * C, C);
    }
    griddep_wait(CU_REL_ATTN_IN);
    norm_prologue<NR>(xs, x, NULL, wn, C, eps);
    for (bool first = true; u < units; u += gridDim.x * GW, first = false) {
        int sect, head, i;
        int rowA = row_of(u, &sect, &head, &i), rowB = rowA + half;
        float a[NR], b[NR];
#pragma unroll
        for (int r = 0; r < NR; r++) a[r] = b[r] = 0.0f;
        if (first) {
            prefetch_dot<NR, PF>(pf, true, xs, C, a, b);
            rows_dot<NR>(W + (int64_t)rowA * C, W + (int64_t)rowB * C, xs, C, a, b, 32 * PF);
        } else {
            rows_dot<NR>(W + (int64_t)rowA * C, W + (int64_t)rowB * C, xs, C, a, b);
        }
#pragma unroll
        for (int r = 0; r < NR; r++) {
            float va = warp_sum(a[r]) + (bias ? bias[rowA] : 0.0f), vb = warp_sum(b[r]) + (bias ? bias[rowB] : 0.0f);
            if (lane != r) continue;
            if (sect < 2) { /* rotate-half RoPE: the F32 angle pos * inv_freq, then cos/sin */
                float ang = (float)pos[r] * inv_freq[i], sn, cs;
                sincosf(ang, &sn, &cs);
                float ra = va * cs - vb * sn, rb = vb * cs + va * sn;
                va = ra, vb = rb;
            }
            bf16 *dst = sect == 0 ? q_out + (int64_t)r * Q + head * HS
                                  : (sect == 1 ? kc : vc) + (int64_t)slots[r] * KVD + head * HS;
            dst[i] = f2bf(va);
            dst[i + half] = f2bf(vb);
        }
    }
}

dspy_status dspy_cu_attn_in(dspy_backend *be, dspy_tensor q_out, dspy_tensor kcache, dspy_tensor vcache, dspy_tensor x,
                       dspy_tensor w_norm, dspy_tensor wqkv, dspy_tensor bqkv, dspy_tensor pos, dspy_tensor slots,
                       dspy_tensor inv_freq, dspy_tensor xn, dspy_tensor qkv, int N, int C, int NH, int NKV, int HS,
                       float eps) {
    CU_ENTER(be);
    const int W = (NH + 2 * NKV) * HS;
    size_t smem = (size_t)N * C * 2;
    bool fused = dspy_cu_gemv_fits(N, C, wqkv.data, x.data) && smem <= NORM_SMEM_MAX && HS % 2 == 0;
    CU_NEED("attn_in", "q_out", q_out, DSPY_DTYPE_BF16, (int64_t)N * NH * HS);
    CU_NEED("attn_in", "kcache", kcache, DSPY_DTYPE_BF16, NKV * HS);
    CU_NEED("attn_in", "vcache", vcache, DSPY_DTYPE_BF16, NKV * HS);
    CU_NEED("attn_in", "x", x, DSPY_DTYPE_F32, (int64_t)N * C);
    CU_NEED("attn_in", "w_norm", w_norm, DSPY_DTYPE_F32, C);
    CU_NEED("attn_in", "wqkv", wqkv, DSPY_DTYPE_BF16, (int64_t)W * C);
    if (bqkv.data) CU_NEED("attn_in", "bqkv", bqkv, DSPY_DTYPE_F32, W);
    CU_NEED("attn_in", "pos", pos, DSPY_DTYPE_I32, N);
    CU_NEED("attn_in", "slots", slots, DSPY_DTYPE_I32, N);
    CU_NEED("attn_in", "inv_freq", inv_freq, DSPY_DTYPE_F32, HS / 2);
    /* tensor cores where dspy_cu_mma_fits says so (gemv_mma.cu), else the GEMV below, else the
     * defining composition */
    bool taken = false;
    DSPY_TRY(dspy_cu_mma_attn_in(be, &taken, q_out, kcache, vcache, x, w_norm, wqkv, bqkv, pos, slots, inv_freq, N, C, NH,
                                 NKV, HS, eps));
    if (taken) return DSPY_OK;
    if (!fused) {
        DSPY_TRY(dspy_cu_linear_normed(be, qkv, xn, x, w_norm, eps, wqkv, bqkv, N, C, W));
        return dspy_cu_qkv_rope_store(be, q_out, kcache, vcache, qkv, pos, slots, inv_freq, N, NH, NKV, HS);
    }
    unsigned g = grid_for(be, (int64_t)W / 2, K_ATTN_IN, N);
    const bf16 *Wp = (const bf16 *)wqkv.data;
    const float *bp = (const float *)bqkv.data, *xp = (const float *)x.data, *wn = (const float *)w_norm.data;
    const int32_t *pp = (const int32_t *)pos.data, *sp = (const int32_t *)slots.data;
    const float *fp = (const float *)inv_freq.data;
    bf16 *qo = (bf16 *)q_out.data, *kc = (bf16 *)kcache.data, *vc = (bf16 *)vcache.data;
#define LAUNCH(NR)                                                                                              \
    return cu_launch(be, "attn_in (fused gemv)", k_attn_in<NR, 4>, g, GEMV_THREADS, smem, Wp, bp, xp, wn, eps, pp, \
                     sp, fp, qo, kc, vc, C, NH, NKV, HS)
    switch (N) {
    case 1: LAUNCH(1);
    case 2: LAUNCH(2);
    case 3: LAUNCH(3);
    default: LAUNCH(4);
    }
#undef LAUNCH
}

/* ---- mlp_in: RMSNorm + gate/up projection + SwiGLU ---------------------------------------- */

/* A warp streams its units (gate row u and up row u, as a pair) in pieces of 128 16-byte chunks
 * per row, one piece ahead: the loads of the next piece — of this unit or of the warp's next one
 * — are in flight while the current piece is multiplied, reduced and stored, so the weight
 * stream does not stop at every unit's reductions and SwiGLU (one wave of blocks, several units
 * per warp: without this the stream paused once per piece, ~0.7 of the copy bandwidth). */
template <int NR>
static __global__ __launch_bounds__(GEMV_THREADS) void k_mlp_in(const bf16 *__restrict__ W, const float *__restrict__ x,
                                                         const float *__restrict__ wn, float eps, bf16 *__restrict__ h,
                                                         int C, int I) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *xs = (bf16 *)smem_raw;
    const int lane = threadIdx.x & 31, nch = C >> 3, np = (nch + 127) / 128, stride = gridDim.x * GW;
    /* chunks 128 pp + lane + 32 k (k < 4) of gate row uu and up row uu */
    auto load = [&](uint4 *a, uint4 *b, int uu, int pp) {
        const uint4 *A = (const uint4 *)(W + (int64_t)uu * C), *B = (const uint4 *)(W + (int64_t)(I + uu) * C);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            int c = pp * 128 + lane + 32 * k;
            if (c < nch) a[k] = ld_stream(A + c), b[k] = ld_stream(B + c);
        }
    };
    int u = blockIdx.x * GW + (threadIdx.x >> 5), p = 0;
    uint4 ca[4], cb[4]; /* the piece in hand */
    if (u < I) load(ca, cb, u, 0);
    griddep_wait(CU_REL_MLP_IN);
    norm_prologue<NR>(xs, x, NULL, wn, C, eps);
    const uint4 *X = (const uint4 *)xs;
    float g[NR], up[NR];
#pragma unroll
    for (int r = 0; r < NR; r++) g[r] = up[r] = 0.0f;
    while (u < I) {
        int nu = u, npc = p + 1;
        if (npc == np) npc = 0, nu = u + stride;
        uint4 na[4], nb[4];
        if (nu < I) load(na, nb, nu, npc);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            int c = p * 128 + lane + 32 * k;
            if (c < nch) {
#pragma unroll
                for (int r = 0; r < NR; r++) {
                    uint4 xv = X[(size_t)r * nch + c];
                    g[r] = dot8(ca[k], xv, g[r]);
                    up[r] = dot8(cb[k], xv, up[r]);
                }
            }
        }
        if (npc == 0) { /* unit u complete */
#pragma unroll
            for (int r = 0; r < NR; r++) {
                float gv = warp_sum(g[r]), uv = warp_sum(up[r]);
                /* the composed path rounds gate and up to BF16 before SwiGLU; so does this one */
                gv = bf2f(f2bf(gv)), uv = bf2f(f2bf(uv));
                if (lane == r) h[(int64_t)r * I + u] = f2bf(gv / (1.0f + expf(-gv)) * uv);
                g[r] = up[r] = 0.0f;
            }
        }
#pragma unroll
        for (int k = 0; k < 4; k++) ca[k] = na[k], cb[k] = nb[k];
        u = nu, p = npc;
    }
}

bool dspy_cu_mlp_f16(dspy_backend *be, dspy_tensor h, dspy_tensor x, dspy_tensor w_norm, dspy_tensor w_gate_up,
                     dspy_tensor w_down, int N, int C, int I) {
    (void)be;
    return h.dtype == DSPY_DTYPE_BF16 && x.dtype == DSPY_DTYPE_F32 && w_norm.dtype == DSPY_DTYPE_F32 &&
           w_gate_up.dtype == DSPY_DTYPE_BF16 && w_down.dtype == DSPY_DTYPE_BF16 &&
           dspy_cu_mma_mlp_f16(h, x, w_norm, w_gate_up, w_down, N, C, I);
}

dspy_status dspy_cu_mlp_in(dspy_backend *be, dspy_tensor h, dspy_tensor x, dspy_tensor w_norm, dspy_tensor w_gate_up,
                      dspy_tensor xn, dspy_tensor gu, int N, int C, int I, float eps) {
    CU_ENTER(be);
    size_t smem = (size_t)N * C * 2;
    if (h.dtype == DSPY_DTYPE_U8) CU_NEED("mlp_in", "h (W8A8 codes)", h, DSPY_DTYPE_U8, (int64_t)dspy_act8_bytes(N, I));
    else CU_NEED2("mlp_in", "h", h, DSPY_DTYPE_BF16, DSPY_DTYPE_F16, (int64_t)N * I);
    CU_NEED("mlp_in", "x", x, DSPY_DTYPE_F32, (int64_t)N * C);
    CU_NEED("mlp_in", "w_norm", w_norm, DSPY_DTYPE_F32, C);
    CU_NEED("mlp_in", "w_gate_up", w_gate_up, DSPY_DTYPE_BF16, (int64_t)2 * I * C);
    if (h.dtype == DSPY_DTYPE_U8) { /* mlp_act8's handoff: the composition, SwiGLU writing codes */
        if (N <= MMA_MAX_ROWS || !dspy_cu_swiglu_act8_fits(I, 2 * I, gu.data, gu.data, h.data) ||
            gu.dtype != DSPY_DTYPE_BF16 || gu.n < (int64_t)N * 2 * I)
            return dspy_fail(DSPY_ERR_ARG, "cuda mlp_in: W8A8 codes as h only where mlp_act8 said so (%d rows, I %d)", N, I);
        DSPY_TRY(dspy_cu_linear_normed(be, gu, xn, x, w_norm, eps, w_gate_up, dspy_tensor_none(), N, C, 2 * I));
        uint8_t *q = (uint8_t *)h.data;
        return dspy_cu_swiglu_act8(be, q, (float *)(q + dspy_act8_scales_at(N, I)), gu, dspy_tensor_slice(gu, I, gu.n - I),
                                   N, I, 2 * I);
    }
    bool taken = false; /* tensor cores first, as in attn_in */
    DSPY_TRY(dspy_cu_mma_mlp_in(be, &taken, h, x, w_norm, w_gate_up, N, C, I, eps));
    if (taken) return DSPY_OK;
    if (h.dtype == DSPY_DTYPE_F16)
        return dspy_fail(DSPY_ERR_ARG, "cuda mlp_in: an F16 h only where the tensor-core kernel runs (mlp_f16 says when)");
    if (!dspy_cu_gemv_fits(N, C, w_gate_up.data, x.data) || smem > NORM_SMEM_MAX) {
        DSPY_TRY(dspy_cu_linear_normed(be, gu, xn, x, w_norm, eps, w_gate_up, dspy_tensor_none(), N, C, 2 * I));
        return dspy_cu_swiglu(be, h, gu, dspy_tensor_slice(gu, I, gu.n - I), N, I, 2 * I);
    }
    unsigned g = grid_for(be, I, K_MLP_IN, N);
    const bf16 *Wp = (const bf16 *)w_gate_up.data;
    const float *xp = (const float *)x.data, *wn = (const float *)w_norm.data;
    bf16 *hp = (bf16 *)h.data;
    switch (N) {
    case 1: return cu_launch(be, "mlp_in (fused gemv)", k_mlp_in<1>, g, GEMV_THREADS, smem, Wp, xp, wn, eps, hp, C, I);
    case 2: return cu_launch(be, "mlp_in (fused gemv)", k_mlp_in<2>, g, GEMV_THREADS, smem, Wp, xp, wn, eps, hp, C, I);
    case 3: return cu_launch(be, "mlp_in (fused gemv)", k_mlp_in<3>, g, GEMV_THREADS, smem, Wp, xp, wn, eps, hp, C, I);
    default: return cu_launch(be, "mlp_in (fused gemv)", k_mlp_in<4>, g, GEMV_THREADS, smem, Wp, xp, wn, eps, hp, C, I);
    }
}

/* ---- logits: gather + final RMSNorm + lm_head ---------------------------------------------- */

template <int NR>
static __global__ __launch_bounds__(GEMV_THREADS) void k_logits(const bf16 *__restrict__ W, const float *__restrict__ x,
                                                         const int32_t *__restrict__ rows, const float *__restrict__ wn,
                                                         float eps, float *__restrict__ out, int C, int V) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *xs = (bf16 *)smem_raw;
    const int lane = threadIdx.x & 31;
    int v = blockIdx.x * GW + (threadIdx.x >> 5);
    prefetch<8> pf;
    if (v < V) prefetch_rows<8>(pf, W + (int64_t)v * C, NULL, C);
    griddep_wait(CU_REL_LOGITS);
    norm_prologue<NR>(xs, x, rows, wn, C, eps);
    for (bool first = true; v < V; v += gridDim.x * GW, first = false) {
        float acc[NR];
#pragma unroll
        for (int r = 0; r < NR; r++) acc[r] = 0.0f;
        if (first) {
            prefetch_dot<NR, 8>(pf, false, xs, C, acc, NULL);
            rows_dot<NR>(W + (int64_t)v * C, NULL, xs, C, acc, NULL, 256);
        } else {
            rows_dot<NR>(W + (int64_t)v * C, NULL, xs, C, acc, NULL);
        }
#pragma unroll
        for (int r = 0; r < NR; r++) {
            float s = warp_sum(acc[r]);
            if (lane == r) out[(int64_t)r * V + v] = s;
        }
    }
}

dspy_status dspy_cu_logits(dspy_backend *be, dspy_tensor out, dspy_tensor x, dspy_tensor rows, dspy_tensor w_norm,
                      dspy_tensor w, dspy_tensor sel, dspy_tensor seln, int M, int C, int V, float eps) {
    CU_ENTER(be);
    size_t smem = (size_t)M * C * 2;
    if (M == 0) return DSPY_OK;
    CU_NEED("logits", "out", out, DSPY_DTYPE_F32, (int64_t)M * V);
    CU_NEED("logits", "x", x, DSPY_DTYPE_F32, C);
    CU_NEED("logits", "rows", rows, DSPY_DTYPE_I32, M);
    CU_NEED("logits", "w_norm", w_norm, DSPY_DTYPE_F32, C);
    CU_NEED("logits", "w", w, DSPY_DTYPE_BF16, (int64_t)V * C);
    bool taken = false; /* tensor cores first, as in attn_in */
    DSPY_TRY(dspy_cu_mma_logits(be, &taken, out, x, rows, w_norm, w, M, C, V, eps));
    if (taken) return DSPY_OK;
    if (!dspy_cu_gemv_fits(M, C, w.data, x.data) || smem > NORM_SMEM_MAX) {
        DSPY_TRY(dspy_cu_gather_rows(be, sel, x, rows, M, C));
        DSPY_TRY(dspy_cu_rmsnorm(be, seln, sel, w_norm, M, C, eps));
        return dspy_cu_linear(be, out, seln, w, dspy_tensor_none(), M, C, V, false);
    }
    unsigned g = grid_for(be, V, K_LOGITS, M);
    const bf16 *Wp = (const bf16 *)w.data;
    const float *xp = (const float *)x.data, *wn = (const float *)w_norm.data;
    const int32_t *rp = (const int32_t *)rows.data;
    float *op = (float *)out.data;
    switch (M) {
    case 1: return cu_launch(be, "logits (fused gemv)", k_logits<1>, g, GEMV_THREADS, smem, Wp, xp, rp, wn, eps, op, C, V);
    case 2: return cu_launch(be, "logits (fused gemv)", k_logits<2>, g, GEMV_THREADS, smem, Wp, xp, rp, wn, eps, op, C, V);
    case 3: return cu_launch(be, "logits (fused gemv)", k_logits<3>, g, GEMV_THREADS, smem, Wp, xp, rp, wn, eps, op, C, V);
    default: return cu_launch(be, "logits (fused gemv)", k_logits<4>, g, GEMV_THREADS, smem, Wp, xp, rp, wn, eps, op, C, V);
    }
}

dspy_status dspy_cu_logits_greedy(dspy_backend *be, dspy_tensor tokens, dspy_tensor logprobs, dspy_tensor x,
                                  dspy_tensor rows, dspy_tensor w_norm, dspy_tensor w, dspy_tensor sel, dspy_tensor seln,
                                  int M, int C, int V, float eps, bool *done) {
    (void)sel, (void)seln; /* the tensor-core kernel normalises in shared memory */
    *done = false;
    CU_ENTER(be);
    if (M == 0) return DSPY_OK;
    CU_NEED("logits_greedy", "tokens", tokens, DSPY_DTYPE_I32, M);
    CU_NEED("logits_greedy", "logprobs", logprobs, DSPY_DTYPE_F32, M);
    CU_NEED("logits_greedy", "x", x, DSPY_DTYPE_F32, C);
    CU_NEED("logits_greedy", "rows", rows, DSPY_DTYPE_I32, M);
    CU_NEED("logits_greedy", "w_norm", w_norm, DSPY_DTYPE_F32, C);
    CU_NEED("logits_greedy", "w", w, DSPY_DTYPE_BF16, (int64_t)V * C);
    if (V <= 0) return dspy_fail(DSPY_ERR_ARG, "logits_greedy: vocabulary %d must be positive", V);
    return dspy_cu_mma_logits_greedy(be, done, tokens, logprobs, x, rows, w_norm, w, M, C, V, eps);
}

/* Release flag and measured occupancies (shared memory: the normed rows of a 2,048-wide model;
 * wider rows need more, which only lowers the count when shared memory is what limits it). */
dspy_status dspy_cu_gemv_setup(dspy_backend *be) {
    cuda_state *s = cu_of(be);
    DSPY_TRY(dspy_cu_check(be, cu_release_set(s->release), "gemv (release flag)"));
    cudaError_t e = cudaSuccess;
#define OCC(NR)                                                                                          \
    if (e == cudaSuccess) e = occ_of(&s->gemv_occ[K_GEMV][NR - 1], k_gemv<NR>, 0);                      \
    if (e == cudaSuccess) e = occ_of(&s->gemv_occ[K_ATTN_IN][NR - 1], k_attn_in<NR, 4>, NR * 4096);     \
    if (e == cudaSuccess) e = occ_of(&s->gemv_occ[K_MLP_IN][NR - 1], k_mlp_in<NR>, NR * 4096);          \
    if (e == cudaSuccess) e = occ_of(&s->gemv_occ[K_LOGITS][NR - 1], k_logits<NR>, NR * 4096);
    OCC(1) OCC(2) OCC(3) OCC(4)
#undef OCC
    DSPY_TRY(dspy_cu_check(be, e, "gemv (occupancy)"));
    return dspy_cu_mma_setup(be);
}
