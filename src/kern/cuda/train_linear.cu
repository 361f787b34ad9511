/* train_linear.cu — nn.Linear and its backward on cuBLASLt for the trainer (kern/ops.h linear
 * with F32 inp and w, linear_backward with F32 or BF16 operands):
 *   forward: out (N, OC) [+]= inp (N, C) @ w^T + bias   (the trainer's F32 layer; gemm.cu sends
 *            F32 inp/w here, and BF16 ones with an F32 out whose addresses are not all 256-byte
 *            aligned; the rest to its own BF16 GEMM/GEMV)
 *   dgrad: dinp (N, C)  += dout (N, OC) @ w (OC, C)
 *   wgrad: dw   (OC, C) += dout^T @ inp (N, C)
 *   dbias (OC)          += column sums of dout       (train_pointwise.cu's deterministic colsum)
 * Each output is optional (none skips it); all three accumulate (beta = 1). linear_backward_beta
 * (BF16 operands) takes beta 0 or 1 per output: 0 overwrites, so the trainer need not zero a
 * gradient buffer before its first GEMM (the plans do not depend on beta), and a BF16 dinp is
 * written straight from the F32 accumulators (the trainer's dh, swiglu_backward's input).
 *   linear_add: out (N, OC) = res + inp @ w^T, BF16 inp and w: the residual add in the GEMM's
 *            epilogue (cuBLASLt's C = res, D = out), so out is written once.
 *
 * Precision: F32 operands, CUBLAS_COMPUTE_32F (true F32 multiply-adds; no TF32), so results
 * agree with the CPU reference to F32 rounding of a length-K sum (~1e-6 relative). The BF16
 * mixed-precision trainer passes BF16 dout, inp and w instead (its working copies): the same
 * GEMMs on tensor cores, F32 accumulation, F32 dinp / dw read and written with beta = 1, so the
 * gradients still accumulate in F32 (the fp32-master-weights scheme of torch autocast).
 *
 * Layouts: cuBLASLt is column-major, so a row-major (R, K) array is a column-major (K, R) one.
 *   forward: D (OC, N) = A^T, A the stored w viewed (C, OC), @ B (C, N) [inp as stored].
 *   dgrad: D (C, N) = A (C, OC) [w as stored] @ B (OC, N) [dout as stored], no transposes.
 *   wgrad: D (C, OC) = A (C, N) [inp as stored] @ B^T, B the stored (OC, N) dout.
 * Plans (descriptors + the heuristic's algorithm) live in gemm.cu's plan cache under tags
 * >= 1000 that also encode the pointers' alignment: tensors may be slices of larger buffers,
 * and the heuristic is told how aligned they are so that it never picks an algorithm that
 * needs more (its default assumes 256-byte alignment).
 */
#include "kern/cuda/train.cuh"

/* TAG_BF16 is added to a tag for BF16 A and B, TAG_D16 for a BF16 C/D; tags 1400 .. 1999 are
 * train_lora.cu's (dspy_cu_train_gemm) */
enum { TAG_DGRAD = 1000, TAG_WGRAD = 1100, TAG_FWD = 1200, TAG_FWD_ACC = 1300, TAG_BF16 = 1000, TAG_D16 = 2000 };

/* log2 of the largest power of two (<= 256) that divides every address. */
static int align_log2(const void *a, const void *b, const void *c, const void *d = NULL) {
    uintptr_t u = (uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d | 256u;
    int l = 0;
    while (!(u & 1u)) u >>= 1, l++;
    return l;
}

/* The cached plan of one GEMM D (m, n) = alpha op(A) @ op(B) + beta C, column-major, C and D F32
 * (or, d16, BF16) and A, B F32 or (bf) BF16: A (m, k) or, when ta, stored (k, m) and transposed;
 * B (k, n) or, when tb, stored (n, k) and transposed. The tag names (ta, tb, beta, bf): each tag
 * is used with one combination only. */
static dspy_status f32_plan(dspy_backend *be, const char *what, int tag, int m, int n, int k, bool ta, bool tb, int al,
                            bool bf, bool d16, gemm_plan **out) {
    cuda_state *s = cu_of(be);
    bool hit = false;
    /* key: (m, n, k) in the (N, C, OC) fields, tag + alignment in out_dtype */
    if (bf) tag += TAG_BF16;
    if (d16) tag += TAG_D16;
    gemm_plan *p = dspy_cu_gemm_plan_slot(s, m, n, k, tag + al, true, &hit);
    if (hit) {
        *out = p;
        return DSPY_OK;
    }
    cublasOperation_t tao = ta ? CUBLAS_OP_T : CUBLAS_OP_N, tbo = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    DSPY_TRY(dspy_cu_check_lt(be, dspy_cu_lt.MatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F), what));
    p->valid = true; /* so that dspy_cu_gemm_plan_destroy releases what was made */
    dspy_cu_lt.MatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &tao, sizeof tao);
    dspy_cu_lt.MatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tbo, sizeof tbo);
    cudaDataType_t ab = bf ? CUDA_R_16BF : CUDA_R_32F;
    dspy_status st = dspy_cu_check_lt(be, ta ? dspy_cu_lt.MatrixLayoutCreate(&p->a, ab, k, m, k)
                                        : dspy_cu_lt.MatrixLayoutCreate(&p->a, ab, m, k, m),
                                 what);
    if (!st)
        st = dspy_cu_check_lt(be, tb ? dspy_cu_lt.MatrixLayoutCreate(&p->b, ab, n, k, n)
                                : dspy_cu_lt.MatrixLayoutCreate(&p->b, ab, k, n, k),
                         what);
    if (!st) st = dspy_cu_check_lt(be, dspy_cu_lt.MatrixLayoutCreate(&p->c, d16 ? CUDA_R_16BF : CUDA_R_32F, m, n, m), what);
    if (st) {
        dspy_cu_gemm_plan_destroy(p);
        return st;
    }
    cublasLtMatmulPreference_t pref;
    if (dspy_cu_lt.MatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS) {
        dspy_cu_gemm_plan_destroy(p);
        return dspy_cu_fail(be, DSPY_ERR_BACKEND, "cuda:%d: %s: cannot create a cuBLASLt preference", s->dev, what);
    }
    uint32_t abytes = 1u << al;
    dspy_cu_lt.MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &s->ws_bytes,
                                         sizeof s->ws_bytes);
    dspy_cu_lt.MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &abytes, sizeof abytes);
    dspy_cu_lt.MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &abytes, sizeof abytes);
    dspy_cu_lt.MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &abytes, sizeof abytes);
    dspy_cu_lt.MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &abytes, sizeof abytes);
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cublasStatus_t hs = dspy_cu_lt.MatmulAlgoGetHeuristic(s->lt, p->op, p->a, p->b, p->c, p->c, pref, 1, &res, &found);
    dspy_cu_lt.MatmulPreferenceDestroy(pref);
    if (hs != CUBLAS_STATUS_SUCCESS || found == 0) {
        dspy_cu_gemm_plan_destroy(p);
        return dspy_cu_fail(be, DSPY_ERR_BACKEND,
                       "cuda:%d: %s: cuBLASLt has no algorithm for an %s GEMM m=%d n=%d k=%d (%d-byte aligned; %s)",
                       s->dev, what, bf ? "BF16" : "F32", m, n, k, 1 << al,
                       hs != CUBLAS_STATUS_SUCCESS ? "heuristic failed" : "none found");
    }
    p->algo = res.algo;
    p->N = m, p->C = n, p->OC = k, p->out_dtype = tag + al, p->accumulate = true;
    p->last_use = ++s->use_clock;
    *out = p;
    return DSPY_OK;
}

/* D = alpha op(A) @ op(B) + beta C with the plan of (m, n, k); A and B F32, or BF16 when bf; C
 * and D F32 (C may be D, or another array of D's shape), or both BF16 when d16. */
static dspy_status gemm_acd(dspy_backend *be, const char *what, int tag, int m, int n, int k, bool ta, bool tb,
                            float alpha, float beta, const void *A, const void *B, const void *Cm, void *D, bool bf,
                            bool d16) {
    cuda_state *s = cu_of(be);
    gemm_plan *p = NULL;
    DSPY_TRY(f32_plan(be, what, tag, m, n, k, ta, tb, align_log2(A, B, D, Cm), bf, d16, &p));
    return dspy_cu_check_lt(be,
                       dspy_cu_lt.Matmul(s->lt, p->op, &alpha, A, p->a, B, p->b, &beta, Cm, p->c, D, p->c, &p->algo,
                                      s->ws, s->ws_bytes, s->stream),
                       what);
}

/* gemm_acd with alpha 1 (a BF16 D is only ever overwritten here: beta 0). */
static dspy_status gemm_cd(dspy_backend *be, const char *what, int tag, int m, int n, int k, bool ta, bool tb,
                           float beta, const void *A, const void *B, const void *Cm, void *D, bool bf, bool d16) {
    return gemm_acd(be, what, tag, m, n, k, ta, tb, 1.0f, beta, A, B, Cm, D, bf, d16);
}

dspy_status dspy_cu_train_gemm(dspy_backend *be, const char *what, int tag, int m, int n, int k, bool ta, bool tb,
                               float alpha, float beta, const void *A, const void *B, void *D, bool d16) {
    return gemm_acd(be, what, tag, m, n, k, ta, tb, alpha, beta, A, B, D, D, true, d16);
}

/* D (F32) = op(A) @ op(B) + beta D with the plan of (m, n, k); A and B F32, or BF16 when bf. */
static dspy_status f32_gemm(dspy_backend *be, const char *what, int tag, int m, int n, int k, bool ta, bool tb,
                            float beta, const void *A, const void *B, float *D, bool bf) {
    return gemm_cd(be, what, tag, m, n, k, ta, tb, beta, A, B, D, D, bf, false);
}

dspy_status dspy_cu_linear_backward(dspy_backend *be, dspy_tensor dinp, dspy_tensor dw, dspy_tensor dbias,
                               dspy_tensor dout, dspy_tensor inp, dspy_tensor w, int N, int C, int OC) {
    CU_ENTER(be);
    const char *op = "linear_backward";
    /* The GEMM operands (dout, and w or inp where used) are all F32 or all BF16; dout's dtype
     * decides. The outputs are F32 either way. */
    const dspy_dtype ot = dout.dtype == DSPY_DTYPE_BF16 ? DSPY_DTYPE_BF16 : DSPY_DTYPE_F32;
    const bool bf = ot == DSPY_DTYPE_BF16;
    CU_NEED(op, "dout", dout, ot, (int64_t)N * OC);
    if (dinp.data) {
        CU_NEED(op, "dinp", dinp, DSPY_DTYPE_F32, (int64_t)N * C);
        CU_NEED(op, "w", w, ot, (int64_t)OC * C);
    }
    if (dw.data) {
        CU_NEED(op, "dw", dw, DSPY_DTYPE_F32, (int64_t)OC * C);
        CU_NEED(op, "inp", inp, ot, (int64_t)N * C);
    }
    if (dbias.data) {
        CU_NEED(op, "dbias", dbias, DSPY_DTYPE_F32, OC);
        if (bf)
            return dspy_fail(DSPY_ERR_ARG, "cuda linear_backward: dbias needs an F32 dout (a separate call: the "
                                           "bias gradient is summed from the F32 gradient)");
    }
    if (N <= 0 || OC <= 0) return DSPY_OK; /* nothing flows back */
    if (dinp.data && C > 0)
        DSPY_TRY(f32_gemm(be, "linear_backward (dinp)", TAG_DGRAD, C, N, OC, false, false, 1.0f, w.data, dout.data,
                          (float *)dinp.data, bf));
    if (dw.data && C > 0)
        DSPY_TRY(f32_gemm(be, "linear_backward (dw)", TAG_WGRAD, C, OC, N, false, true, 1.0f, inp.data, dout.data,
                          (float *)dw.data, bf));
    if (dbias.data)
        DSPY_TRY(dspy_cu_train_colsum(be, "linear_backward (dbias)", (float *)dbias.data, (const float *)dout.data,
                                      NULL, NULL, N, OC));
    return DSPY_OK;
}

dspy_status dspy_cu_linear_backward_beta(dspy_backend *be, dspy_tensor dinp, dspy_tensor dw, dspy_tensor dout,
                                         dspy_tensor inp, dspy_tensor w, int N, int C, int OC, float beta_dinp,
                                         float beta_dw) {
    CU_ENTER(be);
    const char *op = "linear_backward_beta";
    /* BF16 operands only: the mixed-precision trainer's (its F32 layer composes fill + linear_backward) */
    CU_NEED(op, "dout", dout, DSPY_DTYPE_BF16, (int64_t)N * OC);
    if (dinp.data) {
        CU_NEED2(op, "dinp", dinp, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)N * C);
        CU_NEED(op, "w", w, DSPY_DTYPE_BF16, (int64_t)OC * C);
    }
    if (dw.data) {
        CU_NEED2(op, "dw", dw, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)OC * C);
        CU_NEED(op, "inp", inp, DSPY_DTYPE_BF16, (int64_t)N * C);
    }
    if ((beta_dinp != 0.0f && beta_dinp != 1.0f) || (beta_dw != 0.0f && beta_dw != 1.0f))
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: beta_dinp %g and beta_dw %g must each be 0 or 1", op,
                         (double)beta_dinp, (double)beta_dw);
    const bool d16 = dinp.data && dinp.dtype == DSPY_DTYPE_BF16, w16 = dw.data && dw.dtype == DSPY_DTYPE_BF16;
    if (d16 && beta_dinp != 0.0f)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: a BF16 dinp is overwritten (beta_dinp 0), never accumulated", op);
    if (w16 && beta_dw != 0.0f)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: a BF16 dw is overwritten (beta_dw 0), never accumulated", op);
    if (C <= 0) return DSPY_OK;
    /* an empty sum still overwrites: beta 0 means the output is defined after the call */
    if (N <= 0 || OC <= 0) {
        if (dinp.data && beta_dinp == 0.0f && N > 0) DSPY_TRY(dspy_cu_fill(be, dinp, 0.0f));
        if (dw.data && beta_dw == 0.0f && OC > 0) DSPY_TRY(dspy_cu_fill(be, dw, 0.0f));
        return DSPY_OK;
    }
    if (dinp.data)
        DSPY_TRY(gemm_cd(be, "linear_backward_beta (dinp)", TAG_DGRAD, C, N, OC, false, false, beta_dinp, w.data,
                         dout.data, dinp.data, dinp.data, true, d16));
    if (dw.data)
        DSPY_TRY(gemm_cd(be, "linear_backward_beta (dw)", TAG_WGRAD, C, OC, N, false, true, beta_dw, inp.data,
                         dout.data, dw.data, dw.data, true, w16));
    return DSPY_OK;
}

dspy_status dspy_cu_linear_add(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, dspy_tensor res,
                               int N, int C, int OC) {
    CU_ENTER(be);
    const char *op = "linear_add";
    CU_NEED(op, "out", out, DSPY_DTYPE_F32, (int64_t)N * OC);
    CU_NEED(op, "inp", inp, DSPY_DTYPE_BF16, (int64_t)N * C);
    CU_NEED(op, "w", w, DSPY_DTYPE_BF16, (int64_t)OC * C);
    CU_NEED(op, "res", res, DSPY_DTYPE_F32, (int64_t)N * OC);
    if (N <= 0 || OC <= 0) return DSPY_OK;
    if (res.data != out.data) { /* out = res elsewhere: no partial overlap (the epilogue streams both) */
        const char *a = (const char *)out.data, *b = (const char *)res.data;
        const size_t bytes = (size_t)N * OC * sizeof(float);
        if (a < b + bytes && b < a + bytes)
            return dspy_fail(DSPY_ERR_ARG, "cuda %s: out partly overlaps res (it may equal res, or be separate)", op);
    }
    if (C <= 0) { /* an empty product: out = res */
        if (res.data == out.data) return DSPY_OK;
        return dspy_cu_check(be, cudaMemcpyAsync(out.data, res.data, (size_t)N * OC * sizeof(float),
                                                 cudaMemcpyDeviceToDevice, cu_of(be)->stream), op);
    }
    /* the residual is the GEMM's C: D = inp w^T + 1 * res, one pass over out */
    return gemm_cd(be, op, TAG_FWD_ACC, OC, N, C, true, false, 1.0f, w.data, inp.data, res.data, out.data, true, false);
}

/* out (N, OC) += bias (OC), F32. */
static __global__ void k_bias_f32(float *out, const float *bias, int64_t total, int OC) {
    griddep_wait();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
        out[i] += bias[i % OC];
}

dspy_status dspy_cu_linear_f32(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, dspy_tensor bias, int N,
                          int C, int OC, bool accumulate) {
    CU_ENTER(be);
    /* inp and w both F32, or both BF16 (gemm.cu sends BF16 ones whose addresses are not all
     * 256-byte aligned here: these plans are told the alignment) */
    const bool bf = inp.dtype == DSPY_DTYPE_BF16;
    const char *op = bf ? "linear (BF16 operands, F32 out)" : "linear (F32)";
    const dspy_dtype ot = bf ? DSPY_DTYPE_BF16 : DSPY_DTYPE_F32;
    CU_NEED(op, "out", out, DSPY_DTYPE_F32, (int64_t)N * OC);
    CU_NEED(op, "inp", inp, ot, (int64_t)N * C);
    CU_NEED(op, "w", w, ot, (int64_t)OC * C);
    if (bias.data) CU_NEED(op, "bias", bias, DSPY_DTYPE_F32, OC);
    if (N <= 0 || OC <= 0) return DSPY_OK;
    if (C <= 0) { /* an empty sum: y = bias */
        if (!accumulate) DSPY_TRY(dspy_cu_fill(be, dspy_tensor_make(out.data, (int64_t)N * OC, DSPY_DTYPE_F32,
                                                               DSPY_DEVICE_CUDA), 0.0f));
    } else {
        DSPY_TRY(f32_gemm(be, op, accumulate ? TAG_FWD_ACC : TAG_FWD, OC, N, C, true, false, accumulate ? 1.0f : 0.0f,
                          w.data, inp.data, (float *)out.data, bf));
    }
    if (!bias.data) return DSPY_OK;
    return cu_launch(be, "linear (F32 bias)", k_bias_f32, tr_grid((int64_t)N * OC), 256, 0, (float *)out.data,
                     (const float *)bias.data, (int64_t)N * OC, OC);
}
