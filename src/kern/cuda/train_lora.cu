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
    CU_NEED(op, "x", x, DSPY_DTYPE_BF16, (int64_t)N * C);
    CU_NEED(op, "A", A, DSPY_DTYPE_BF16, (int64_t)r * C);
    CU_NEED(op, "B", B, DSPY_DTYPE_BF16, (int64_t)OC * r);
    if (N < 0 || C < 0 || r < 1 || OC < 0)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: N %d, C %d, r %d, OC %d (r >= 1, the rest >= 0)", op, N, C, r, OC);
    if (N == 0) return DSPY_OK;
    /* an empty input sum: u = 0 and y unchanged */
    if (C == 0) return dspy_cu_fill(be, dspy_tensor_slice(u, 0, (int64_t)N * r), 0.0f);
    /* u: linear's forward with w = A (column-major D (r, N) = A^T (r, C) @ x (C, N)) */
    DSPY_TRY(dspy_cu_train_gemm(be, "lora_forward (u)", TAG_U, r, N, C, true, false, scale, 0.0f, A.data, x.data,
                                u.data, true));
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
 * multiply-add): the CPU's dropout, then the add. */
__device__ __forceinline__ float drop1(float x, float o, int64_t i, float p, float s, uint64_t key, bool acc) {
    float v = dspy_dropout_keep(key, i, p) ? __fmul_rn(x, s) : 0.0f;
    return acc ? __fadd_rn(v, o) : v;
}

/* out (n) = or += dropout(inp), each of out and inp F32 or BF16 (o16, i16), one element per step.
 * The element is read before it is written, so out may be inp. */
static __global__ void k_dropout_acc(void *out, const void *inp, int64_t n, float p, float s, uint64_t key, bool acc,
                                     bool o16, bool i16) {
    griddep_wait();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = drop1(ld_any(inp, i, i16), acc ? ld_any(out, i, o16) : 0.0f, i, p, s, key, acc);
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
static __global__ void k_dropout_acc8(OT *out, const IT *inp, int64_t n8, float p, float s, uint64_t key, bool acc) {
    griddep_wait();
    for (int64_t v = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; v < n8; v += (int64_t)gridDim.x * blockDim.x) {
        float x[8], o[8] = {0};
        ld8(inp + 8 * v, x);
        if (acc) ld8(out + 8 * v, o);
        for (int k = 0; k < 8; k++) o[k] = drop1(x[k], o[k], 8 * v + k, p, s, key, acc);
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
    const bool o16 = out.dtype == DSPY_DTYPE_BF16, i16 = inp.dtype == DSPY_DTYPE_BF16;
    if (out.n % 8 == 0 && ((uintptr_t)out.data | (uintptr_t)inp.data) % 16 == 0) {
        const int64_t n8 = out.n / 8;
        const unsigned g = tr_grid(n8);
        if (o16 && i16)
            return cu_launch(be, op, k_dropout_acc8<bf16, bf16>, g, 256, 0, (bf16 *)out.data, (const bf16 *)inp.data,
                             n8, p, s, key, accumulate);
        if (o16)
            return cu_launch(be, op, k_dropout_acc8<bf16, float>, g, 256, 0, (bf16 *)out.data, (const float *)inp.data,
                             n8, p, s, key, accumulate);
        if (i16)
            return cu_launch(be, op, k_dropout_acc8<float, bf16>, g, 256, 0, (float *)out.data, (const bf16 *)inp.data,
                             n8, p, s, key, accumulate);
        return cu_launch(be, op, k_dropout_acc8<float, float>, g, 256, 0, (float *)out.data, (const float *)inp.data,
                         n8, p, s, key, accumulate);
    }
    return cu_launch(be, op, k_dropout_acc, tr_grid(out.n), 256, 0, out.data, (const void *)inp.data, out.n, p, s, key,
                     accumulate, o16, i16);
}

/* ---- lora_dx ----------------------------------------------------------------------------- */

/* A CTA owns a DX_BM x DX_BN tile of dx: 8 warps as 2 x 4, each 32 rows x 32 columns (2 x 4
 * m16n8 accumulators). Per adapter the rank is walked DX_BK at a time: du's (DX_BM, DX_BK) tile
 * row-major and A's (DX_BK, DX_BN) tile transposed (column-major) into shared memory, zero
 * beyond N, C and r, so both mma operands are 32-bit loads of two consecutive k; rows of DX_LD
 * halves (80 bytes) keep the fragment loads free of bank conflicts. */
enum { DX_BM = 64, DX_BN = 128, DX_BK = 32, DX_LD = DX_BK + 8 };

struct lora_dx_args {
    const bf16 *du[DSPY_LORA_DX_MAX];
    const bf16 *A[DSPY_LORA_DX_MAX];
    uint64_t key[DSPY_LORA_DX_MAX];
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

/* vec: C even and dx 8-byte aligned, so each thread's column pair is one aligned access. */
template <typename OT>
static __global__ void __launch_bounds__(256) k_lora_dx(OT *dx, lora_dx_args a, int k, int N, int C, int r, float p,
                                                        float s, bool vec) {
    __shared__ __align__(16) bf16 sU[DX_BM][DX_LD]; /* du tile: (row, rank) */
    __shared__ __align__(16) bf16 sA[DX_BN][DX_LD]; /* A tile transposed: (column, rank) */
    griddep_wait();
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t4 = lane & 3;
    const int wr = (warp >> 2) * 32, wc = (warp & 3) * 32; /* the warp's corner in the tile */
    const int row0 = blockIdx.y * DX_BM, col0 = blockIdx.x * DX_BN;
    /* accumulator element e of m-tile mi, n-tile ni: row wr + 16 mi + g + 8 (e >> 1), column
     * wc + 8 ni + 2 t4 + (e & 1) (the m16n8 F32 fragment) */
    float tot[2][4][4];
    for (int mi = 0; mi < 2; mi++)
        for (int ni = 0; ni < 4; ni++)
            for (int h = 0; h < 2; h++) {
                const int row = row0 + wr + 16 * mi + g + 8 * h, col = col0 + wc + 8 * ni + 2 * t4;
                const OT *q = dx + (int64_t)row * C + col;
                float v0 = 0.0f, v1 = 0.0f;
                if (row < N && vec && col < C) {
                    float2 v = dx_ld2(q);
                    v0 = v.x, v1 = v.y;
                } else if (row < N) {
                    if (col < C) v0 = dx_ld(q);
                    if (col + 1 < C) v1 = dx_ld(q + 1);
                }
                tot[mi][ni][2 * h] = v0, tot[mi][ni][2 * h + 1] = v1;
            }
    const bf16 zero = f2bf(0.0f);
    for (int j = 0; j < k; j++) {
        float acc[2][4][4] = {};
        for (int k0 = 0; k0 < r; k0 += DX_BK) {
            __syncthreads(); /* the previous chunk's fragments are read */
            for (int e = tid; e < DX_BM * DX_BK; e += 256) {
                const int rr = e / DX_BK, kk = e % DX_BK, gr = row0 + rr, gk = k0 + kk;
                sU[rr][kk] = gr < N && gk < r ? a.du[j][(int64_t)gr * r + gk] : zero;
            }
            for (int e = tid; e < DX_BK * DX_BN; e += 256) {
                const int kk = e / DX_BN, cc = e % DX_BN, gk = k0 + kk, gc = col0 + cc;
                sA[cc][kk] = gk < r && gc < C ? a.A[j][(int64_t)gk * C + gc] : zero;
            }
            __syncthreads();
            for (int kk = 0; kk < DX_BK; kk += 16) {
                uint32_t af[2][4], bfr[4][2];
                for (int mi = 0; mi < 2; mi++) {
                    const int rb = wr + 16 * mi + g;
                    af[mi][0] = *(const uint32_t *)&sU[rb][kk + 2 * t4];
                    af[mi][1] = *(const uint32_t *)&sU[rb + 8][kk + 2 * t4];
                    af[mi][2] = *(const uint32_t *)&sU[rb][kk + 2 * t4 + 8];
                    af[mi][3] = *(const uint32_t *)&sU[rb + 8][kk + 2 * t4 + 8];
                }
                for (int ni = 0; ni < 4; ni++) {
                    const int cb = wc + 8 * ni + g;
                    bfr[ni][0] = *(const uint32_t *)&sA[cb][kk + 2 * t4];
                    bfr[ni][1] = *(const uint32_t *)&sA[cb][kk + 2 * t4 + 8];
                }
                for (int mi = 0; mi < 2; mi++)
                    for (int ni = 0; ni < 4; ni++) mma16816(acc[mi][ni], af[mi], bfr[ni]);
            }
        }
        /* the dropout op's value of each product element, added on its own (drop1) */
        const uint64_t key = a.key[j];
        for (int mi = 0; mi < 2; mi++)
            for (int ni = 0; ni < 4; ni++)
                for (int e = 0; e < 4; e++) {
                    const int64_t row = row0 + wr + 16 * mi + g + 8 * (e >> 1);
                    const int64_t col = col0 + wc + 8 * ni + 2 * t4 + (e & 1);
                    const bool keep = p == 0.0f || dspy_dropout_keep(key, row * C + col, p);
                    tot[mi][ni][e] = __fadd_rn(tot[mi][ni][e], keep ? __fmul_rn(acc[mi][ni][e], s) : 0.0f);
                }
    }
    for (int mi = 0; mi < 2; mi++)
        for (int ni = 0; ni < 4; ni++)
            for (int h = 0; h < 2; h++) {
                const int row = row0 + wr + 16 * mi + g + 8 * h, col = col0 + wc + 8 * ni + 2 * t4;
                if (row >= N || col >= C) continue;
                OT *q = dx + (int64_t)row * C + col;
                const float v0 = tot[mi][ni][2 * h], v1 = tot[mi][ni][2 * h + 1];
                if (vec) dx_st2(q, v0, v1);
                else {
                    dx_st(q, v0);
                    if (col + 1 < C) dx_st(q + 1, v1);
                }
            }
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
    lora_dx_args a = {};
    for (int j = 0; j < k; j++) {
        CU_NEED(op, "du", du[j], DSPY_DTYPE_BF16, (int64_t)N * r);
        CU_NEED(op, "A", A[j], DSPY_DTYPE_BF16, (int64_t)r * C);
        a.du[j] = (const bf16 *)du[j].data, a.A[j] = (const bf16 *)A[j].data, a.key[j] = keys[j];
    }
    if (N == 0 || C == 0) return DSPY_OK;
    const float s = 1.0f / (1.0f - p); /* on the host, exactly as the CPU's dropout computes it */
    const bool o16 = dx.dtype == DSPY_DTYPE_BF16;
    const bool vec = C % 2 == 0 && (uintptr_t)dx.data % (o16 ? 4 : 8) == 0;
    const dim3 grid((unsigned)((C + DX_BN - 1) / DX_BN), (unsigned)((N + DX_BM - 1) / DX_BM));
    if (grid.y > 65535u)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: N %d is beyond %d rows a call", op, N, 65535 * DX_BM);
    if (o16) return cu_launch(be, op, k_lora_dx<bf16>, grid, 256, 0, (bf16 *)dx.data, a, k, N, C, r, p, s, vec);
    return cu_launch(be, op, k_lora_dx<float>, grid, 256, 0, (float *)dx.data, a, k, N, C, r, p, s, vec);
}
