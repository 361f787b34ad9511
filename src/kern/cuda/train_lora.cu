/* train_lora.cu — LoRA in the mixed-precision trainer (kern/ops.h lora_forward, lora_backward,
 * dropout_acc): peft's Linear, y = x W^T + scale B (A dropout(x)), with BF16 working copies of the
 * adapters, BF16 activations and F32 accumulation (torch autocast's scheme for the adapters too).
 *
 *   lora_forward:  u (N, r) = scale * x A^T          (BF16 u: the backward pass's operand)
 *                  y (N, OC) += u B^T                (beta 1 into y, F32 or BF16: the base GEMM's
 *                                                     output, so the LoRA term needs no extra pass)
 *   lora_backward: du (N, r) = scale * dy B          (BF16)
 *                  gB (OC, r) += dy^T u;  gA (r, C) += du^T x   (F32 master gradients)
 *                  dx (N, C) = du A + beta dx        (beta 1 adds into the base dgrad's output)
 *   dropout_acc:   out = / += dropout(inp) with the dropout op's mask (dspy_dropout_keep), each of
 *                  out and inp F32 or BF16: the dropped LoRA input in BF16.
 *   lora_u:        xd_j = dropout_j(x), u_j = scale xd_j A_j^T for the adapters that share x, from one
 *                  read of x (the product on tensor cores, each xd_j written once for the backward)
 *   lora_dx:       dx (N, C) += sum over j < k of dropout_j(du_j A_j): the masked input gradients
 *                  of the adapters that share an input (q/k/v, gate/up) in one pass over dx, the
 *                  rank-r products on tensor cores (mma.sync), never stored.
 *
 * The GEMMs are cuBLASLt's (dspy_cu_train_gemm; layouts as train_linear.cu: a row-major (R, K)
 * array is a column-major (K, R) one); the scale rides in alpha, so no pass scales u or du.
 */
#include "kern/cuda/mma.cuh"
#include "kern/cuda/train.cuh"

/* plan tags (train_linear.cu reserves 1400 .. 1999 for this file): one (ta, tb) pair each */
enum { TAG_U = 1400, TAG_Y = 1500, TAG_DU = 1600, TAG_GB = 1700, TAG_GA = 1800, TAG_DX = 1900 };

dspy_status dspy_cu_lora_forward(dspy_backend *be, dspy_tensor y, dspy_tensor u, dspy_tensor x, dspy_tensor A,
                                 dspy_tensor B, int N, int C, int r, int OC, float scale) {
    CU_ENTER(be);
    const char *op = "lora_forward";
    CU_NEED2(op, "y", y, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)N * OC);
    CU_NEED(op, "u", u, DSPY_DTYPE_BF16, (int64_t)N * r);
    if (x.data) { /* else u is given (lora_u) */
        CU_NEED(op, "x", x, DSPY_DTYPE_BF16, (int64_t)N * C);
        CU_NEED(op, "A", A, DSPY_DTYPE_BF16, (int64_t)r * C);
    }
    CU_NEED(op, "B", B, DSPY_DTYPE_BF16, (int64_t)OC * r);
    if (N < 0 || C < 0 || r < 1 || OC < 0)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: N %d, C %d, r %d, OC %d (r >= 1, the rest >= 0)", op, N, C, r, OC);
    if (N == 0) return DSPY_OK;
    /* an empty input sum: u = 0 and y unchanged */
    if (C == 0) return x.data ? dspy_cu_fill(be, dspy_tensor_slice(u, 0, (int64_t)N * r), 0.0f) : DSPY_OK;
    /* u: linear's forward with w = A (column-major D (r, N) = A^T (r, C) @ x (C, N)) */
    if (x.data)
        DSPY_TRY(dspy_cu_train_gemm(be, "lora_forward (u)", TAG_U, r, N, C, true, false, scale, 0.0f, A.data,
                                    x.data, u.data, true));
    if (OC == 0) return DSPY_OK;
    /* y += u B^T: D (OC, N) = B^T (OC, r) @ u (r, N) + y */
    return dspy_cu_train_gemm(be, "lora_forward (y)", TAG_Y, OC, N, r, true, false, 1.0f, 1.0f, B.data, u.data, y.data,
                              y.dtype == DSPY_DTYPE_BF16);
}

dspy_status dspy_cu_lora_backward(dspy_backend *be, dspy_tensor dx, dspy_tensor gA, dspy_tensor gB, dspy_tensor du,
                                  dspy_tensor dy, dspy_tensor x, dspy_tensor u, dspy_tensor A, dspy_tensor B, int N,
                                  int C, int r, int OC, float scale, float beta_dx) {
    CU_ENTER(be);
    const char *op = "lora_backward";
    if (dx.data) CU_NEED2(op, "dx", dx, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)N * C);
    CU_NEED(op, "gA", gA, DSPY_DTYPE_F32, (int64_t)r * C);
    CU_NEED(op, "gB", gB, DSPY_DTYPE_F32, (int64_t)OC * r);
    CU_NEED(op, "du", du, DSPY_DTYPE_BF16, (int64_t)N * r);
    CU_NEED(op, "dy", dy, DSPY_DTYPE_BF16, (int64_t)N * OC);
    CU_NEED(op, "x", x, DSPY_DTYPE_BF16, (int64_t)N * C);
    CU_NEED(op, "u", u, DSPY_DTYPE_BF16, (int64_t)N * r);
    CU_NEED(op, "A", A, DSPY_DTYPE_BF16, (int64_t)r * C);
    CU_NEED(op, "B", B, DSPY_DTYPE_BF16, (int64_t)OC * r);
    if (N < 0 || C < 0 || r < 1 || OC < 0)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: N %d, C %d, r %d, OC %d (r >= 1, the rest >= 0)", op, N, C, r, OC);
    if (beta_dx != 0.0f && beta_dx != 1.0f)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: beta_dx is %g; it must be 0 or 1", op, (double)beta_dx);
    if (N == 0) return DSPY_OK; /* no rows: every gradient is an empty sum (dx has no rows) */
    const bool dx16 = dx.dtype == DSPY_DTYPE_BF16;
    if (OC == 0) { /* dy is empty: du = 0, so dx = beta dx and gA += 0 */
        DSPY_TRY(dspy_cu_fill(be, dspy_tensor_slice(du, 0, (int64_t)N * r), 0.0f));
        return dx.data && beta_dx == 0.0f && C > 0 ? dspy_cu_fill(be, dspy_tensor_slice(dx, 0, (int64_t)N * C), 0.0f)
                                                   : DSPY_OK;
    }
    /* du: linear's dgrad with w = B (D (r, N) = B (r, OC) @ dy (OC, N)) */
    DSPY_TRY(dspy_cu_train_gemm(be, "lora_backward (du)", TAG_DU, r, N, OC, false, false, scale, 0.0f, B.data, dy.data,
                                du.data, true));
    /* gB += dy^T u: linear's wgrad with inp = u (D (r, OC) = u (r, N) @ dy^T) */
    DSPY_TRY(dspy_cu_train_gemm(be, "lora_backward (gB)", TAG_GB, r, OC, N, false, true, 1.0f, 1.0f, u.data, dy.data,
                                gB.data, false));
    if (C == 0) return DSPY_OK;
    /* gA += du^T x: D (C, r) = x (C, N) @ du^T */
    DSPY_TRY(dspy_cu_train_gemm(be, "lora_backward (gA)", TAG_GA, C, r, N, false, true, 1.0f, 1.0f, x.data, du.data,
                                gA.data, false));
    if (!dx.data) return DSPY_OK; /* no input gradient asked for (lora_dx forms it) */
    /* dx (+)= du A: D (C, N) = A (C, r) @ du (r, N) */
    return dspy_cu_train_gemm(be, "lora_backward (dx)", TAG_DX, C, N, r, false, false, 1.0f, beta_dx, A.data, du.data,
                              dx.data, dx16);
}

/* ---- dropout_acc ------------------------------------------------------------------------- */

__device__ __forceinline__ float ld_any(const void *p, int64_t i, bool b16) {
    return b16 ? bf2f(((const bf16 *)p)[i]) : ((const float *)p)[i];
}

/* One element: keep(key, i) ? x * s : 0, plus o when acc, separately rounded (no fused
 * multiply-add): the CPU's dropout, then the add. thr: dspy_dropout_threshold(p), the mask test in
 * integers. */
__device__ __forceinline__ float drop1(float x, float o, int64_t i, uint32_t thr, float s, uint64_t key, bool acc) {
    float v = dspy_dropout_bits(key, i) >= thr ? __fmul_rn(x, s) : 0.0f;
    return acc ? __fadd_rn(v, o) : v;
}

/* out (n) = or += dropout(inp), each of out and inp F32 or BF16 (o16, i16), one element per step.
 * The element is read before it is written, so out may be inp. */
static __global__ void k_dropout_acc(void *out, const void *inp, int64_t n, uint32_t thr, float s, uint64_t key,
                                     bool acc, bool o16, bool i16) {
    griddep_wait();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = drop1(ld_any(inp, i, i16), acc ? ld_any(out, i, o16) : 0.0f, i, thr, s, key, acc);
        if (o16) ((bf16 *)out)[i] = f2bf(v);
        else ((float *)out)[i] = v;
    }
}

/* 8 consecutive values as F32, from BF16 (one 16-byte load) or F32 (two); p 16-byte aligned. */
__device__ __forceinline__ void ld8(const bf16 *p, float v[8]) {
    uint4 u = *(const uint4 *)p;
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
    for (int k = 0; k < 4; k++) {
        float2 f = __bfloat1622float2(h[k]);
        v[2 * k] = f.x, v[2 * k + 1] = f.y;
    }
}
__device__ __forceinline__ void ld8(const float *p, float v[8]) {
    float4 a = ((const float4 *)p)[0], b = ((const float4 *)p)[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void st8(bf16 *p, const float v[8]) {
    uint4 u;
    __nv_bfloat162 *h = (__nv_bfloat162 *)&u;
    for (int k = 0; k < 4; k++) h[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
    *(uint4 *)p = u;
}
__device__ __forceinline__ void st8(float *p, const float v[8]) {
    ((float4 *)p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    ((float4 *)p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}

/* The same 8 elements a step, out and inp 16-byte aligned, n8 = n / 8 (n a multiple of 8): the
 * trainer's (T, in) activations, where 16-byte accesses keep the pass at memory speed. */
template <typename OT, typename IT>
static __global__ void k_dropout_acc8(OT *out, const IT *inp, int64_t n8, uint32_t thr, float s, uint64_t key,
                                      bool acc) {
    griddep_wait();
    for (int64_t v = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; v < n8; v += (int64_t)gridDim.x * blockDim.x) {
        float x[8], o[8] = {0};
        ld8(inp + 8 * v, x);
        if (acc) ld8(out + 8 * v, o);
        for (int k = 0; k < 8; k++) o[k] = drop1(x[k], o[k], 8 * v + k, thr, s, key, acc);
        st8(out + 8 * v, o);
    }
}

dspy_status dspy_cu_dropout_acc(dspy_backend *be, dspy_tensor out, dspy_tensor inp, float p, uint64_t key,
                                bool accumulate) {
    CU_ENTER(be);
    const char *op = "dropout_acc";
    CU_NEED2(op, "out", out, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, 0);
    CU_NEED2(op, "inp", inp, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, out.n);
    if (!(p >= 0.0f && p < 1.0f))
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: p is %g; it must be in [0, 1)", op, (double)p);
    if (out.data == inp.data && out.dtype != inp.dtype)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: out is inp with another dtype", op);
    if (out.n == 0) return DSPY_OK;
    float s = 1.0f / (1.0f - p); /* on the host, exactly as the CPU's dropout computes it */
    const uint32_t thr = dspy_dropout_threshold(p);
    const bool o16 = out.dtype == DSPY_DTYPE_BF16, i16 = inp.dtype == DSPY_DTYPE_BF16;
    if (out.n % 8 == 0 && ((uintptr_t)out.data | (uintptr_t)inp.data) % 16 == 0) {
        const int64_t n8 = out.n / 8;
        const unsigned g = tr_grid(n8);
        if (o16 && i16)
            return cu_launch(be, op, k_dropout_acc8<bf16, bf16>, g, 256, 0, (bf16 *)out.data, (const bf16 *)inp.data,
                             n8, thr, s, key, accumulate);
        if (o16)
            return cu_launch(be, op, k_dropout_acc8<bf16, float>, g, 256, 0, (bf16 *)out.data, (const float *)inp.data,
                             n8, thr, s, key, accumulate);
        if (i16)
            return cu_launch(be, op, k_dropout_acc8<float, bf16>, g, 256, 0, (float *)out.data, (const bf16 *)inp.data,
                             n8, thr, s, key, accumulate);
        return cu_launch(be, op, k_dropout_acc8<float, float>, g, 256, 0, (float *)out.data, (const float *)inp.data,
                         n8, thr, s, key, accumulate);
    }
    return cu_launch(be, op, k_dropout_acc, tr_grid(out.n), 256, 0, out.data, (const void *)inp.data, out.n, thr, s, key,
                     accumulate, o16, i16);
}

/* ---- lora_dx ----------------------------------------------------------------------------- */

/* A CTA owns a DX_BM x (16 NT) tile of dx: 8 warps as 4 x 2, each 16 rows x 8 NT columns (NT
 * m16n8 accumulators per adapter; NT 4, or 2 for three adapters, whose accumulators would not fit
 * the registers otherwise). The rank is walked DX_BK at a time (once at r <= 32): every adapter's
 * du tile (DX_BM, DX_BK) row-major and A tile (DX_BK, 16 NT) transposed (column-major) go into
 * shared memory together, zero beyond N, C and r, so both mma operands are 32-bit loads of two
 * consecutive k and one wait covers all K adapters; rows of DX_LD halves (80 bytes) keep the
 * fragment loads free of bank conflicts. dx is read before the tiles (its loads in flight with
 * theirs), the products are masked and added in adapter order, and dx written once. */
enum { DX_BM = 64, DX_BK = 32, DX_LD = DX_BK + 8 };

struct lora_dx_args {
    const bf16 *du0, *du1, *du2, *A0, *A1, *A2;
    uint64_t key0, key1, key2;
};

__device__ __forceinline__ float dx_ld(const float *p) { return *p; }
__device__ __forceinline__ float dx_ld(const bf16 *p) { return bf2f(*p); }
__device__ __forceinline__ void dx_st(float *p, float v) { *p = v; }
__device__ __forceinline__ void dx_st(bf16 *p, float v) { *p = f2bf(v); }
/* two consecutive elements (8-byte F32 or 4-byte BF16 aligned: vec) */
__device__ __forceinline__ float2 dx_ld2(const float *p) { return *(const float2 *)p; }
__device__ __forceinline__ float2 dx_ld2(const bf16 *p) { return __bfloat1622float2(*(const __nv_bfloat162 *)p); }
__device__ __forceinline__ void dx_st2(float *p, float a, float b) { *(float2 *)p = make_float2(a, b); }
__device__ __forceinline__ void dx_st2(bf16 *p, float a, float b) {
    *(__nv_bfloat162 *)p = __floats2bfloat162_rn(a, b);
}

/* vec: C even and dx 8-byte aligned, so each thread's column pair is one aligned access. Every
 * loop over fragments and adapters is unrolled: accumulators and arguments stay in registers. */
template <typename OT, int K, int NT>
static __global__ void __launch_bounds__(256, 2) k_lora_dx(OT *dx, lora_dx_args a, int N, int C, int r, uint32_t thr,
                                                           float s, bool vec) {
    __shared__ __align__(16) bf16 sU[K][DX_BM][DX_LD]; /* du tiles: (row, rank) */
    constexpr int BN = 16 * NT;
    __shared__ __align__(16) bf16 sA[K][BN][DX_LD]; /* A tiles transposed: (column, rank) */
    griddep_wait();
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t4 = lane & 3;
    const int wr = (warp >> 1) * 16, wc = (warp & 1) * 8 * NT; /* the warp's corner in the tile */
    const int row0 = blockIdx.y * DX_BM, col0 = blockIdx.x * BN;
    /* accumulator element e of n-tile ni: row wr + g + 8 (e >> 1), column wc + 8 ni + 2 t4 + (e & 1)
     * (the m16n8 F32 fragment) */
    float tot[NT][4], acc[K][NT][4];
#pragma unroll
    for (int ni = 0; ni < NT; ni++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int row = row0 + wr + g + 8 * h, col = col0 + wc + 8 * ni + 2 * t4;
            const OT *q = dx + (int64_t)row * C + col;
            float v0 = 0.0f, v1 = 0.0f;
            if (row < N && vec && col < C) {
                float2 v = dx_ld2(q);
                v0 = v.x, v1 = v.y;
            } else if (row < N) {
                if (col < C) v0 = dx_ld(q);
                if (col + 1 < C) v1 = dx_ld(q + 1);
            }
            tot[ni][2 * h] = v0, tot[ni][2 * h + 1] = v1;
        }
#pragma unroll
    for (int j = 0; j < K; j++)
#pragma unroll
        for (int ni = 0; ni < NT; ni++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[j][ni][e] = 0.0f;
    const bf16 zero = f2bf(0.0f);
    for (int k0 = 0; k0 < r; k0 += DX_BK) {
        __syncthreads(); /* the previous chunk's fragments are read */
#pragma unroll 1
        for (int j = 0; j < K; j++) { /* not unrolled: the tile loads would take the accumulators' registers */
            const bf16 *du = j == 0 ? a.du0 : j == 1 ? a.du1 : a.du2, *A = j == 0 ? a.A0 : j == 1 ? a.A1 : a.A2;
#pragma unroll
            for (int i = 0; i < DX_BM * DX_BK / 256; i++) {
                const int e = tid + 256 * i, rr = e / DX_BK, kk = e % DX_BK, gr = row0 + rr, gk = k0 + kk;
                sU[j][rr][kk] = gr < N && gk < r ? du[(int64_t)gr * r + gk] : zero;
            }
#pragma unroll
            for (int i = 0; i < DX_BK * BN / 256; i++) {
                const int e = tid + 256 * i, kk = e / BN, cc = e % BN, gk = k0 + kk, gc = col0 + cc;
                sA[j][cc][kk] = gk < r && gc < C ? A[(int64_t)gk * C + gc] : zero;
            }
        }
        __syncthreads();
#pragma unroll
        for (int j = 0; j < K; j++)
#pragma unroll
            for (int kk = 0; kk < DX_BK; kk += 16) {
                uint32_t af[4], bfr[NT][2];
                af[0] = *(const uint32_t *)&sU[j][wr + g][kk + 2 * t4];
                af[1] = *(const uint32_t *)&sU[j][wr + g + 8][kk + 2 * t4];
                af[2] = *(const uint32_t *)&sU[j][wr + g][kk + 2 * t4 + 8];
                af[3] = *(const uint32_t *)&sU[j][wr + g + 8][kk + 2 * t4 + 8];
#pragma unroll
                for (int ni = 0; ni < NT; ni++) {
                    bfr[ni][0] = *(const uint32_t *)&sA[j][wc + 8 * ni + g][kk + 2 * t4];
                    bfr[ni][1] = *(const uint32_t *)&sA[j][wc + 8 * ni + g][kk + 2 * t4 + 8];
                }
#pragma unroll
                for (int ni = 0; ni < NT; ni++) mma16816(acc[j][ni], af, bfr[ni]);
            }
    }
    /* each adapter's dropout value of its product element, added on its own in adapter order (drop1) */
#pragma unroll
    for (int ni = 0; ni < NT; ni++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int64_t row = row0 + wr + g + 8 * (e >> 1), col = col0 + wc + 8 * ni + 2 * t4 + (e & 1);
            const int64_t idx = row * C + col;
#pragma unroll
            for (int j = 0; j < K; j++) {
                const uint64_t key = j == 0 ? a.key0 : j == 1 ? a.key1 : a.key2;
                tot[ni][e] = __fadd_rn(tot[ni][e], thr == 0 || dspy_dropout_bits(key, idx) >= thr
                                                       ? __fmul_rn(acc[j][ni][e], s) : 0.0f);
            }
        }
#pragma unroll
    for (int ni = 0; ni < NT; ni++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int row = row0 + wr + g + 8 * h, col = col0 + wc + 8 * ni + 2 * t4;
            if (row >= N || col >= C) continue;
            OT *q = dx + (int64_t)row * C + col;
            const float v0 = tot[ni][2 * h], v1 = tot[ni][2 * h + 1];
            if (vec) dx_st2(q, v0, v1);
            else {
                dx_st(q, v0);
                if (col + 1 < C) dx_st(q + 1, v1);
            }
        }
}

template <typename OT>
static dspy_status lora_dx_launch(dspy_backend *be, dim3 grid, OT *dx, const lora_dx_args &a, int k, int N, int C,
                                  int r, uint32_t thr, float s, bool vec) {
    const int bn = k == 3 ? 32 : 64;
    grid.x = (unsigned)((C + bn - 1) / bn);
    if (k == 1) return cu_launch(be, "lora_dx", k_lora_dx<OT, 1, 4>, grid, 256, 0, dx, a, N, C, r, thr, s, vec);
    if (k == 2) return cu_launch(be, "lora_dx", k_lora_dx<OT, 2, 4>, grid, 256, 0, dx, a, N, C, r, thr, s, vec);
    return cu_launch(be, "lora_dx", k_lora_dx<OT, 3, 2>, grid, 256, 0, dx, a, N, C, r, thr, s, vec);
}

dspy_status dspy_cu_lora_dx(dspy_backend *be, dspy_tensor dx, int k, const dspy_tensor *du, const dspy_tensor *A,
                            const uint64_t *keys, int N, int C, int r, float p) {
    CU_ENTER(be);
    const char *op = "lora_dx";
    if (k < 1 || k > DSPY_LORA_DX_MAX || N < 0 || C < 0 || r < 1)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: k %d (1 .. %d adapters), N %d, C %d, r %d (r >= 1, the rest >= 0)",
                         op, k, DSPY_LORA_DX_MAX, N, C, r);
    if (!(p >= 0.0f && p < 1.0f))
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: p is %g; it must be in [0, 1)", op, (double)p);
    CU_NEED2(op, "dx", dx, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)N * C);
    const bf16 *dup[DSPY_LORA_DX_MAX] = {NULL}, *Ap[DSPY_LORA_DX_MAX] = {NULL};
    uint64_t kv[DSPY_LORA_DX_MAX] = {0};
    for (int j = 0; j < k; j++) {
        CU_NEED(op, "du", du[j], DSPY_DTYPE_BF16, (int64_t)N * r);
        CU_NEED(op, "A", A[j], DSPY_DTYPE_BF16, (int64_t)r * C);
        dup[j] = (const bf16 *)du[j].data, Ap[j] = (const bf16 *)A[j].data, kv[j] = keys[j];
    }
    const lora_dx_args a = {dup[0], dup[1], dup[2], Ap[0], Ap[1], Ap[2], kv[0], kv[1], kv[2]};
    if (N == 0 || C == 0) return DSPY_OK;
    const float s = 1.0f / (1.0f - p); /* on the host, exactly as the CPU's dropout computes it */
    const bool o16 = dx.dtype == DSPY_DTYPE_BF16;
    const bool vec = C % 2 == 0 && (uintptr_t)dx.data % (o16 ? 4 : 8) == 0;
    const dim3 grid(1, (unsigned)((N + DX_BM - 1) / DX_BM)); /* x: lora_dx_launch (the tile's width) */
    if (grid.y > 65535u)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: N %d is beyond %d rows a call", op, N, 65535 * DX_BM);
    const uint32_t thr = dspy_dropout_threshold(p);
    if (o16) return lora_dx_launch(be, grid, (bf16 *)dx.data, a, k, N, C, r, thr, s, vec);
    return lora_dx_launch(be, grid, (float *)dx.data, a, k, N, C, r, thr, s, vec);
}

/* ---- lora_u ------------------------------------------------------------------------------ */

/* A CTA owns 16 rows of x and DU_BN columns of every u_j (a slice of the rank: grid.x walks r). Its
 * 8 warps split C: warp w takes the 16-column steps w, w + 8, ... and loads its operands straight
 * from global memory in the m16n8k16 fragment layouts: x's two row halves and two k halves (pairs of
 * consecutive columns), dropped out per adapter in registers (and written to xd_j by the rank slice
 * 0 CTA), and A_j's rows (the B operand: two consecutive k of one rank row). The warps' partial sums
 * are added in warp order through shared memory (deterministic), scaled and rounded once. */
enum { DU_BN = 32, DU_WARPS = 8 };

struct lora_u_args {
    const bf16 *A0, *A1, *A2;
    bf16 *xd0, *xd1, *xd2, *u0, *u1, *u2;
    uint64_t key0, key1, key2;
};

/* Elements (row, col) and (row, col + 1) of a row-major (rows, C) BF16 matrix as one packed pair,
 * zero outside (row < rows, col < C); vec: C even and the base 4-byte aligned. */
__device__ __forceinline__ uint32_t ld_pair(const bf16 *m, int64_t row, int col, int rows, int C, bool vec) {
    if (row >= rows || col >= C) return 0u;
    const bf16 *q = m + row * C + col;
    if (vec) return *(const uint32_t *)q;
    __nv_bfloat162 h;
    h.x = q[0], h.y = col + 1 < C ? q[1] : f2bf(0.0f);
    return *(uint32_t *)&h;
}

/* vec: C even with x, every xd and every A 4-byte aligned (each column pair one access). */
template <int K>
static __global__ void __launch_bounds__(256) k_lora_u(const bf16 *x, lora_u_args a, int N, int C, int r, float scale,
                                                       uint32_t thr, float s, bool write_xd, bool vec) {
    __shared__ float red[DU_WARPS][16][DU_BN + 1]; /* the warps' partial sums of one adapter */
    griddep_wait();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t4 = lane & 3;
    const int row0 = blockIdx.y * 16, n0 = blockIdx.x * DU_BN;
    const bool xd_here = write_xd && blockIdx.x == 0; /* one rank slice writes xd */
    float acc[K][4][4];
#pragma unroll
    for (int j = 0; j < K; j++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[j][ni][e] = 0.0f;
    /* fragment register q (0..3): row row0 + g + 8 (q & 1), columns kc + 2 t4 + 8 (q >> 1) (+1) */
    for (int kc = 16 * warp; kc < C; kc += 16 * DU_WARPS) {
        uint32_t xf[4];
#pragma unroll
        for (int q = 0; q < 4; q++) xf[q] = ld_pair(x, row0 + g + 8 * (q & 1), kc + 2 * t4 + 8 * (q >> 1), N, C, vec);
#pragma unroll
        for (int j = 0; j < K; j++) {
            const uint64_t key = j == 0 ? a.key0 : j == 1 ? a.key1 : a.key2;
            bf16 *xd = j == 0 ? a.xd0 : j == 1 ? a.xd1 : a.xd2;
            const bf16 *A = j == 0 ? a.A0 : j == 1 ? a.A1 : a.A2;
            uint32_t af[4];
#pragma unroll
            for (int q = 0; q < 4; q++) {
                const int64_t row = row0 + g + 8 * (q & 1);
                const int col = kc + 2 * t4 + 8 * (q >> 1);
                if (thr == 0) {
                    af[q] = xf[q];
                    continue;
                }
                /* dropout_acc's BF16 -> BF16 value of both elements (drop1, then rounded) */
                const float2 v = __bfloat1622float2(*(const __nv_bfloat162 *)&xf[q]);
                const int64_t idx = row * C + col;
                af[q] = pack_bf16(drop1(v.x, 0.0f, idx, thr, s, key, false),
                                  drop1(v.y, 0.0f, idx + 1, thr, s, key, false));
                if (xd_here && row < N && col < C) {
                    if (vec) *(uint32_t *)(xd + idx) = af[q];
                    else {
                        const __nv_bfloat162 h = *(const __nv_bfloat162 *)&af[q];
                        xd[idx] = h.x;
                        if (col + 1 < C) xd[idx + 1] = h.y;
                    }
                }
            }
#pragma unroll
            for (int ni = 0; ni < 4; ni++) {
                const int n = n0 + 8 * ni + g;
                uint32_t bfr[2] = {ld_pair(A, n, kc + 2 * t4, r, C, vec), ld_pair(A, n, kc + 2 * t4 + 8, r, C, vec)};
                mma16816(acc[j][ni], af, bfr);
            }
        }
    }
    /* u_j = scale * (the warps' sums in warp order), rounded once (cuBLASLt's alpha, then BF16) */
#pragma unroll
    for (int j = 0; j < K; j++) {
        bf16 *u = j == 0 ? a.u0 : j == 1 ? a.u1 : a.u2;
        __syncthreads(); /* the previous adapter's sums are read */
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
#pragma unroll
            for (int e = 0; e < 4; e++) red[warp][g + 8 * (e >> 1)][8 * ni + 2 * t4 + (e & 1)] = acc[j][ni][e];
        __syncthreads();
        for (int o = threadIdx.x; o < 16 * DU_BN; o += 256) {
            const int rr = o / DU_BN, cc = o % DU_BN, row = row0 + rr, col = n0 + cc;
            float sum = red[0][rr][cc];
#pragma unroll
            for (int w = 1; w < DU_WARPS; w++) sum += red[w][rr][cc];
            if (row < N && col < r) u[(int64_t)row * r + col] = f2bf(__fmul_rn(scale, sum));
        }
    }
}

dspy_status dspy_cu_lora_u(dspy_backend *be, int k, const dspy_tensor *xd, const dspy_tensor *u, dspy_tensor x,
                           const dspy_tensor *A, const uint64_t *keys, int N, int C, int r, float scale, float p) {
    CU_ENTER(be);
    const char *op = "lora_u";
    if (k < 1 || k > DSPY_LORA_DX_MAX || N < 0 || C < 0 || r < 1)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: k %d (1 .. %d adapters), N %d, C %d, r %d (r >= 1, the rest >= 0)",
                         op, k, DSPY_LORA_DX_MAX, N, C, r);
    if (!(p >= 0.0f && p < 1.0f))
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: p is %g; it must be in [0, 1)", op, (double)p);
    CU_NEED(op, "x", x, DSPY_DTYPE_BF16, (int64_t)N * C);
    const bool write_xd = p > 0.0f;
    const bf16 *Ap[DSPY_LORA_DX_MAX] = {NULL};
    bf16 *xdp[DSPY_LORA_DX_MAX] = {NULL}, *up[DSPY_LORA_DX_MAX] = {NULL};
    uint64_t kv[DSPY_LORA_DX_MAX] = {0};
    bool aligned = C % 2 == 0 && (uintptr_t)x.data % 4 == 0;
    for (int j = 0; j < k; j++) {
        CU_NEED(op, "u", u[j], DSPY_DTYPE_BF16, (int64_t)N * r);
        CU_NEED(op, "A", A[j], DSPY_DTYPE_BF16, (int64_t)r * C);
        if (write_xd) {
            CU_NEED(op, "xd", xd[j], DSPY_DTYPE_BF16, (int64_t)N * C);
            xdp[j] = (bf16 *)xd[j].data;
            aligned = aligned && (uintptr_t)xdp[j] % 4 == 0;
        }
        Ap[j] = (const bf16 *)A[j].data, up[j] = (bf16 *)u[j].data, kv[j] = keys[j];
        aligned = aligned && (uintptr_t)Ap[j] % 4 == 0;
    }
    if (N == 0) return DSPY_OK;
    const lora_u_args a = {Ap[0], Ap[1], Ap[2], xdp[0], xdp[1], xdp[2], up[0], up[1], up[2], kv[0], kv[1], kv[2]};
    const float s = 1.0f / (1.0f - p); /* on the host, exactly as the CPU's dropout computes it */
    const uint32_t thr = dspy_dropout_threshold(p);
    const dim3 grid((unsigned)((r + DU_BN - 1) / DU_BN), (unsigned)((N + 15) / 16));
    if (grid.y > 65535u) return dspy_fail(DSPY_ERR_ARG, "cuda %s: N %d is beyond %d rows a call", op, N, 65535 * 16);
    /* C 0: every u is the empty sum (the loop does not run) */
    const bf16 *xp = (const bf16 *)x.data;
    if (k == 1) return cu_launch(be, op, k_lora_u<1>, grid, 256, 0, xp, a, N, C, r, scale, thr, s, write_xd, aligned);
    if (k == 2) return cu_launch(be, op, k_lora_u<2>, grid, 256, 0, xp, a, N, C, r, scale, thr, s, write_xd, aligned);
    return cu_launch(be, op, k_lora_u<3>, grid, 256, 0, xp, a, N, C, r, scale, thr, s, write_xd, aligned);
}
