/* gemm.cu — nn.Linear on CUDA: out (N, OC) [+]= inp (N, C) @ W^T + bias, W (OC, C) BF16.
 *
 * Two paths, the same function:
 *   - N <= GEMV_MAX_ROWS (decode): a memory-bound GEMV that streams W once: one warp per output
 *     feature, 16-byte loads of W that bypass L1 (four in flight per lane), the N input rows read
 *     through the read-only cache, F32 accumulation, a warp reduction, and the epilogue (bias,
 *     store BF16/F32, or add into an F32 residual) fused. Floor: OC*C*2 bytes / bandwidth.
 *   - larger N (prefill): cuBLASLt, BF16 operands, F32 compute, D in BF16 or F32; accumulate
 *     is beta = 1 on an F32 D (the residual add happens inside the GEMM). One plan (descriptors
 *     + the heuristic's algorithm) per shape is cached, so steady-state calls do no host-side
 *     planning; a bias (qwen2 and attention_bias models only) is a separate broadcast add.
 * Sizes the vector path cannot take (C % 8 != 0, unaligned rows) go to a scalar GEMV kernel.
 */
#include <string.h>

#include "kern/cuda/cuda.cuh"

enum { GEMV_MAX_ROWS = 4, GEMV_WARPS = 8 };

/* Epilogue kinds. */
enum { EP_BF16 = 0, EP_F32 = 1, EP_ACC = 2 };

__device__ __forceinline__ uint4 ld_stream(const uint4 *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

/* sum_j w[j] * x[j] over 8 BF16 pairs packed in two uint4. */
__device__ __forceinline__ float dot8(uint4 w, uint4 x, float acc) {
    const __nv_bfloat162 *wp = (const __nv_bfloat162 *)&w, *xp = (const __nv_bfloat162 *)&x;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        float2 a = __bfloat1622float2(wp[j]), b = __bfloat1622float2(xp[j]);
        acc = fmaf(a.x, b.x, acc);
        acc = fmaf(a.y, b.y, acc);
    }
    return acc;
}

__device__ __forceinline__ void epilogue(void *out, int mode, int64_t idx, float v) {
    if (mode == EP_BF16) ((bf16 *)out)[idx] = f2bf(v);
    else if (mode == EP_F32) ((float *)out)[idx] = v;
    else ((float *)out)[idx] += v;
}

/* One warp per output feature `row`; NR input rows. Requires C % 8 == 0 and 16-byte rows. */
template <int NR>
__global__ __launch_bounds__(GEMV_WARPS * 32) void k_gemv(const bf16 *__restrict__ W, const bf16 *__restrict__ X,
                                                          void *out, int mode, const float *__restrict__ bias, int OC,
                                                          int C) {
    int lane = threadIdx.x & 31;
    int row = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (row >= OC) return;
    const int nch = C >> 3; /* 16-byte chunks per row */
    const uint4 *wr = (const uint4 *)(W + (int64_t)row * C);
    const uint4 *xr = (const uint4 *)X;
    float acc[NR];
#pragma unroll
    for (int r = 0; r < NR; r++) acc[r] = 0.0f;
    int c = lane;
    /* Four independent weight loads in flight per lane before any use. */
    for (; c + 96 < nch; c += 128) {
        uint4 w0 = ld_stream(wr + c), w1 = ld_stream(wr + c + 32), w2 = ld_stream(wr + c + 64),
              w3 = ld_stream(wr + c + 96);
#pragma unroll
        for (int r = 0; r < NR; r++) {
            const uint4 *x = xr + (int64_t)r * nch;
            acc[r] = dot8(w0, __ldg(x + c), acc[r]);
            acc[r] = dot8(w1, __ldg(x + c + 32), acc[r]);
            acc[r] = dot8(w2, __ldg(x + c + 64), acc[r]);
            acc[r] = dot8(w3, __ldg(x + c + 96), acc[r]);
        }
    }
    for (; c < nch; c += 32) {
        uint4 w0 = ld_stream(wr + c);
#pragma unroll
        for (int r = 0; r < NR; r++) acc[r] = dot8(w0, __ldg(xr + (int64_t)r * nch + c), acc[r]);
    }
#pragma unroll
    for (int r = 0; r < NR; r++) {
        float v = acc[r];
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) epilogue(out, mode, (int64_t)r * OC + row, bias ? v + bias[row] : v);
    }
}

/* Any C and alignment: element loads, N <= GEMV_MAX_ROWS rows. */
__global__ void k_gemv_scalar(const bf16 *__restrict__ W, const bf16 *__restrict__ X, void *out, int mode,
                              const float *__restrict__ bias, int N, int OC, int C) {
    int lane = threadIdx.x & 31;
    int row = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (row >= OC) return;
    float acc[GEMV_MAX_ROWS] = {0, 0, 0, 0};
    for (int c = lane; c < C; c += 32) {
        float w = bf2f(W[(int64_t)row * C + c]);
        for (int r = 0; r < N; r++) acc[r] = fmaf(w, bf2f(X[(int64_t)r * C + c]), acc[r]);
    }
    for (int r = 0; r < N; r++) {
        float v = acc[r];
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) epilogue(out, mode, (int64_t)r * OC + row, bias ? v + bias[row] : v);
    }
}

/* out (N, OC) += bias (OC), out F32 or BF16. */
__global__ void k_bias(void *out, bool bf, const float *bias, int64_t total, int OC) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        float b = bias[i % OC];
        if (bf) ((bf16 *)out)[i] = f2bf(bf2f(((bf16 *)out)[i]) + b);
        else ((float *)out)[i] += b;
    }
}

/* ---- cuBLASLt plans ------------------------------------------------------------------------- */

static void plan_destroy(gemm_plan *p) {
    if (!p->valid) return;
    cublasLtMatmulDescDestroy(p->op);
    cublasLtMatrixLayoutDestroy(p->a);
    cublasLtMatrixLayoutDestroy(p->b);
    cublasLtMatrixLayoutDestroy(p->c);
    p->valid = false;
}

void cu_gemm_plans_free(cuda_state *s) {
    for (int i = 0; i < GEMM_PLANS; i++) plan_destroy(&s->plans[i]);
}

/* The cached plan for the shape, made (descriptors + heuristic) on first use; the least recently
 * used slot is recycled when the cache is full. */
static dspy_status get_plan(dspy_backend *be, int N, int C, int OC, int out_dtype, bool acc, gemm_plan **out) {
    cuda_state *s = cu_of(be);
    gemm_plan *victim = NULL;
    for (int i = 0; i < GEMM_PLANS; i++) {
        gemm_plan *p = &s->plans[i];
        if (p->valid && p->N == N && p->C == C && p->OC == OC && p->out_dtype == out_dtype && p->accumulate == acc) {
            p->last_use = ++s->use_clock;
            *out = p;
            return DSPY_OK;
        }
        /* an empty slot first, else the least recently used */
        if (!victim || (victim->valid && (!p->valid || p->last_use < victim->last_use))) victim = p;
    }
    plan_destroy(victim);
    gemm_plan *p = victim;
    memset(p, 0, sizeof *p);
    cudaDataType_t dt = out_dtype == DSPY_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    DSPY_TRY(cu_check_lt(be, cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "gemm plan"));
    cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    /* Column-major view: D (OC, N) = W^T' ... i.e. A = W stored (C, OC) col-major, transposed. */
    dspy_status st = cu_check_lt(be, cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, C, OC, C), "gemm plan");
    if (!st) st = cu_check_lt(be, cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, C, N, C), "gemm plan");
    if (!st) st = cu_check_lt(be, cublasLtMatrixLayoutCreate(&p->c, dt, OC, N, OC), "gemm plan");
    p->valid = true; /* so that plan_destroy releases what was made */
    if (st) {
        plan_destroy(p);
        return st;
    }
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &s->ws_bytes,
                                         sizeof s->ws_bytes);
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(s->lt, p->op, p->a, p->b, p->c, p->c, pref, 1, &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (hs != CUBLAS_STATUS_SUCCESS || found == 0) {
        plan_destroy(p);
        return cu_fail(be, DSPY_ERR_BACKEND, "cuda:%d: cuBLASLt has no algorithm for a %d x %d x %d BF16 GEMM (%s)",
                       s->dev, N, C, OC, hs != CUBLAS_STATUS_SUCCESS ? "heuristic failed" : "none found");
    }
    p->algo = res.algo;
    p->N = N, p->C = C, p->OC = OC, p->out_dtype = out_dtype, p->accumulate = acc;
    p->last_use = ++s->use_clock;
    *out = p;
    return DSPY_OK;
}

static dspy_status gemm_lt(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, int N, int C, int OC,
                           bool acc) {
    cuda_state *s = cu_of(be);
    gemm_plan *p = NULL;
    DSPY_TRY(get_plan(be, N, C, OC, out.dtype, acc, &p));
    float alpha = 1.0f, beta = acc ? 1.0f : 0.0f;
    return cu_check_lt(be,
                       cublasLtMatmul(s->lt, p->op, &alpha, w.data, p->a, inp.data, p->b, &beta, out.data, p->c,
                                      out.data, p->c, &p->algo, s->ws, s->ws_bytes, s->stream),
                       "gemm");
}

dspy_status cu_linear(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, dspy_tensor bias, int N,
                      int C, int OC, bool accumulate) {
    CU_ENTER(be);
    CU_NEED2("linear", "out", out, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)N * OC);
    CU_NEED("linear", "inp", inp, DSPY_DTYPE_BF16, (int64_t)N * C);
    CU_NEED("linear", "w", w, DSPY_DTYPE_BF16, (int64_t)OC * C);
    if (bias.data) CU_NEED("linear", "bias", bias, DSPY_DTYPE_F32, OC);
    if (accumulate && out.dtype != DSPY_DTYPE_F32)
        return dspy_fail(DSPY_ERR_ARG, "cuda linear: accumulate needs an F32 out (the residual stream)");
    if (N == 0 || OC == 0) return DSPY_OK;
    cuda_state *s = cu_of(be);
    int mode = accumulate ? EP_ACC : out.dtype == DSPY_DTYPE_BF16 ? EP_BF16 : EP_F32;
    const float *b = (const float *)bias.data;
    if (N <= GEMV_MAX_ROWS) {
        unsigned blocks = cu_blocks(OC, GEMV_WARPS);
        bool vec = C % 8 == 0 && (uintptr_t)w.data % 16 == 0 && (uintptr_t)inp.data % 16 == 0;
        const bf16 *W = (const bf16 *)w.data, *X = (const bf16 *)inp.data;
        if (!vec) k_gemv_scalar<<<blocks, GEMV_WARPS * 32, 0, s->stream>>>(W, X, out.data, mode, b, N, OC, C);
        else if (N == 1) k_gemv<1><<<blocks, GEMV_WARPS * 32, 0, s->stream>>>(W, X, out.data, mode, b, OC, C);
        else if (N == 2) k_gemv<2><<<blocks, GEMV_WARPS * 32, 0, s->stream>>>(W, X, out.data, mode, b, OC, C);
        else if (N == 3) k_gemv<3><<<blocks, GEMV_WARPS * 32, 0, s->stream>>>(W, X, out.data, mode, b, OC, C);
        else k_gemv<4><<<blocks, GEMV_WARPS * 32, 0, s->stream>>>(W, X, out.data, mode, b, OC, C);
        return cu_launched(be, "linear (gemv)");
    }
    DSPY_TRY(gemm_lt(be, out, inp, w, N, C, OC, accumulate));
    if (!b) return DSPY_OK;
    int64_t total = (int64_t)N * OC;
    unsigned blocks = cu_blocks(total, 256);
    if (blocks > 65535u * 8) blocks = 65535u * 8;
    k_bias<<<blocks, 256, 0, s->stream>>>(out.data, out.dtype == DSPY_DTYPE_BF16, b, total, OC);
    return cu_launched(be, "linear (bias)");
}
