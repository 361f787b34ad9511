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
 *                  out and inp F32 or BF16: the dropped LoRA input in BF16, and the masked LoRA
 *                  input gradient added into dx in one pass.
 *
 * The GEMMs are cuBLASLt's (dspy_cu_train_gemm; layouts as train_linear.cu: a row-major (R, K)
 * array is a column-major (K, R) one); the scale rides in alpha, so no pass scales u or du.
 */
#include "kern/cuda/train.cuh"

/* plan tags (train_linear.cu reserves 1400 .. 1999 for this file): one (ta, tb) pair each */
enum { TAG_U = 1400, TAG_Y = 1500, TAG_DU = 1600, TAG_GB = 1700, TAG_GA = 1800, TAG_DX = 1900 };

/* The operands both entries share: x (N, C), u (N, r), A (r, C), B (OC, r), all BF16. */
static dspy_status lora_need(dspy_backend *be, const char *op, dspy_tensor x, dspy_tensor u, dspy_tensor A,
                             dspy_tensor B, int N, int C, int r, int OC) {
    CU_NEED(op, "x", x, DSPY_DTYPE_BF16, (int64_t)N * C);
    CU_NEED(op, "u", u, DSPY_DTYPE_BF16, (int64_t)N * r);
    CU_NEED(op, "A", A, DSPY_DTYPE_BF16, (int64_t)r * C);
    CU_NEED(op, "B", B, DSPY_DTYPE_BF16, (int64_t)OC * r);
    if (N < 0 || C < 0 || r < 1 || OC < 0)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: N %d, C %d, r %d, OC %d (r >= 1, the rest >= 0)", op, N, C, r, OC);
    return DSPY_OK;
}

dspy_status dspy_cu_lora_forward(dspy_backend *be, dspy_tensor y, dspy_tensor u, dspy_tensor x, dspy_tensor A,
                                 dspy_tensor B, int N, int C, int r, int OC, float scale) {
    CU_ENTER(be);
    const char *op = "lora_forward";
    CU_NEED2(op, "y", y, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)N * OC);
    DSPY_TRY(lora_need(be, op, x, u, A, B, N, C, r, OC));
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
    DSPY_TRY(lora_need(be, op, x, u, A, B, N, C, r, OC));
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
    if (!dx.data) return DSPY_OK; /* no input gradient asked for */
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
    return cu_launch(be, op, k_dropout_acc, tr_grid(out.n), 256, 0, out.data, (const void *)inp.data, out.n, thr, s,
                     key, accumulate, o16, i16);
}
