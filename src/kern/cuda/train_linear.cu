/* train_linear.cu — the backward of nn.Linear in F32 on cuBLASLt (kern/ops.h linear_backward):
 *   dgrad: dinp (N, C)  += dout (N, OC) @ w (OC, C)
 *   wgrad: dw   (OC, C) += dout^T @ inp (N, C)
 *   dbias (OC)          += column sums of dout       (train_pointwise.cu's deterministic colsum)
 * Each output is optional (none skips it); all three accumulate (beta = 1).
 *
 * Precision: F32 operands, CUBLAS_COMPUTE_32F (true F32 multiply-adds; no TF32), so results
 * agree with the CPU reference to F32 rounding of a length-K sum (~1e-6 relative).
 *
 * Layouts: cuBLASLt is column-major, so a row-major (R, K) array is a column-major (K, R) one.
 *   dgrad: D (C, N) = A (C, OC) [w as stored] @ B (OC, N) [dout as stored], no transposes.
 *   wgrad: D (C, OC) = A (C, N) [inp as stored] @ B^T, B the stored (OC, N) dout.
 * Plans (descriptors + the heuristic's algorithm) live in gemm.cu's plan cache under tags
 * >= 1000 that also encode the pointers' alignment: tensors may be slices of larger buffers,
 * and the heuristic is told how aligned they are so that it never picks an algorithm that
 * needs more (its default assumes 256-byte alignment).
 */
#include "kern/cuda/train.cuh"

enum { TAG_DGRAD = 1000, TAG_WGRAD = 1100 };

/* log2 of the largest power of two (<= 256) that divides every address. */
static int align_log2(const void *a, const void *b, const void *c) {
    uintptr_t u = (uintptr_t)a | (uintptr_t)b | (uintptr_t)c | 256u;
    int l = 0;
    while (!(u & 1u)) u >>= 1, l++;
    return l;
}

/* The cached plan of one F32 GEMM D (m, n) += A (m, k) @ op(B), column-major, A not
 * transposed, B (k, n) or, when tb, stored (n, k) and transposed. */
static dspy_status f32_plan(dspy_backend *be, const char *what, int tag, int m, int n, int k, bool tb, int al,
                            gemm_plan **out) {
    cuda_state *s = cu_of(be);
    bool hit = false;
    /* key: (m, n, k) in the (N, C, OC) fields, tag + alignment in out_dtype */
    gemm_plan *p = dspy_cu_gemm_plan_slot(s, m, n, k, tag + al, true, &hit);
    if (hit) {
        *out = p;
        return DSPY_OK;
    }
    cublasOperation_t ta = CUBLAS_OP_N, tbo = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    DSPY_TRY(dspy_cu_check_lt(be, cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F), what));
    p->valid = true; /* so that dspy_cu_gemm_plan_destroy releases what was made */
    cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tbo, sizeof tbo);
    dspy_status st = dspy_cu_check_lt(be, cublasLtMatrixLayoutCreate(&p->a, CUDA_R_32F, m, k, m), what);
    if (!st)
        st = dspy_cu_check_lt(be, tb ? cublasLtMatrixLayoutCreate(&p->b, CUDA_R_32F, n, k, n)
                                : cublasLtMatrixLayoutCreate(&p->b, CUDA_R_32F, k, n, k),
                         what);
    if (!st) st = dspy_cu_check_lt(be, cublasLtMatrixLayoutCreate(&p->c, CUDA_R_32F, m, n, m), what);
    if (st) {
        dspy_cu_gemm_plan_destroy(p);
        return st;
    }
    cublasLtMatmulPreference_t pref;
    if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS) {
        dspy_cu_gemm_plan_destroy(p);
        return dspy_cu_fail(be, DSPY_ERR_BACKEND, "cuda:%d: %s: cannot create a cuBLASLt preference", s->dev, what);
    }
    uint32_t abytes = 1u << al;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &s->ws_bytes,
                                         sizeof s->ws_bytes);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &abytes, sizeof abytes);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &abytes, sizeof abytes);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &abytes, sizeof abytes);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &abytes, sizeof abytes);
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(s->lt, p->op, p->a, p->b, p->c, p->c, pref, 1, &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (hs != CUBLAS_STATUS_SUCCESS || found == 0) {
        dspy_cu_gemm_plan_destroy(p);
        return dspy_cu_fail(be, DSPY_ERR_BACKEND,
                       "cuda:%d: %s: cuBLASLt has no algorithm for an F32 GEMM m=%d n=%d k=%d (%d-byte aligned; %s)",
                       s->dev, what, m, n, k, 1 << al, hs != CUBLAS_STATUS_SUCCESS ? "heuristic failed" : "none found");
    }
    p->algo = res.algo;
    p->N = m, p->C = n, p->OC = k, p->out_dtype = tag + al, p->accumulate = true;
    p->last_use = ++s->use_clock;
    *out = p;
    return DSPY_OK;
}

/* D += A @ op(B) with the plan of (m, n, k). */
static dspy_status f32_gemm_acc(dspy_backend *be, const char *what, int tag, int m, int n, int k, bool tb,
                                const float *A, const float *B, float *D) {
    cuda_state *s = cu_of(be);
    gemm_plan *p = NULL;
    DSPY_TRY(f32_plan(be, what, tag, m, n, k, tb, align_log2(A, B, D), &p));
    const float alpha = 1.0f, beta = 1.0f;
    return dspy_cu_check_lt(be,
                       cublasLtMatmul(s->lt, p->op, &alpha, A, p->a, B, p->b, &beta, D, p->c, D, p->c, &p->algo, s->ws,
                                      s->ws_bytes, s->stream),
                       what);
}

dspy_status dspy_cu_linear_backward(dspy_backend *be, dspy_tensor dinp, dspy_tensor dw, dspy_tensor dbias,
                               dspy_tensor dout, dspy_tensor inp, dspy_tensor w, int N, int C, int OC) {
    CU_ENTER(be);
    const char *op = "linear_backward";
    CU_NEED(op, "dout", dout, DSPY_DTYPE_F32, (int64_t)N * OC);
    if (dinp.data) {
        CU_NEED(op, "dinp", dinp, DSPY_DTYPE_F32, (int64_t)N * C);
        CU_NEED(op, "w", w, DSPY_DTYPE_F32, (int64_t)OC * C);
    }
    if (dw.data) {
        CU_NEED(op, "dw", dw, DSPY_DTYPE_F32, (int64_t)OC * C);
        CU_NEED(op, "inp", inp, DSPY_DTYPE_F32, (int64_t)N * C);
    }
    if (dbias.data) CU_NEED(op, "dbias", dbias, DSPY_DTYPE_F32, OC);
    if (N <= 0 || OC <= 0) return DSPY_OK; /* nothing flows back */
    const float *g = (const float *)dout.data;
    if (dinp.data && C > 0)
        DSPY_TRY(f32_gemm_acc(be, "linear_backward (dinp)", TAG_DGRAD, C, N, OC, false, (const float *)w.data, g,
                              (float *)dinp.data));
    if (dw.data && C > 0)
        DSPY_TRY(f32_gemm_acc(be, "linear_backward (dw)", TAG_WGRAD, C, OC, N, true, (const float *)inp.data, g,
                              (float *)dw.data));
    if (dbias.data)
        DSPY_TRY(dspy_cu_train_colsum(be, "linear_backward (dbias)", (float *)dbias.data, g, NULL, NULL, N, OC));
    return DSPY_OK;
}
