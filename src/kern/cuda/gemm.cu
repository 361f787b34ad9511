/* gemm.cu — nn.Linear on CUDA: out (N, OC) [+]= inp (N, C) @ W^T + bias, W (OC, C) BF16.
 *
 * Three paths, the same function:
 *   - N <= GEMV_MAX_ROWS (decode): the memory-bound GEMV of gemv.cu (weights streamed once, the
 *     epilogue fused). Floor: OC*C*2 bytes / bandwidth. Since 2026-12-03 only one row of BF16
 *     weights (dspy_cu_mma_fits says which);
 *   - 2..16 rows (a batched decode step), and one row with an FP8 copy of W linked: the
 *     tensor-core GEMV of gemv_mma.cu, the same stream;
 *   - larger N (prefill): cuBLASLt, BF16 operands, F32 compute, D in BF16 or F32; accumulate
 *     is beta = 1 on an F32 D (the residual add happens inside the GEMM). One plan (descriptors
 *     + the heuristic's algorithm) per shape is cached, so steady-state calls do no host-side
 *     planning; a bias (qwen2 and attention_bias models only) is a separate broadcast add.
 *     W8A8 (kern/ops.h f8_link with act8): the input rows are rounded to E4M3 codes with a 2^k
 *     a row (k_act8, into the backend's act8 buffer) and cuBLASLt multiplies them by the FP8
 *     copy's codes, both 2^k vectors applied as outer-vector scales (FP8 tensor cores: ~1.6x the
 *     BF16 GEMMs' rate at prompt-step sizes on an H200, bench/RESULTS.md); small calls whose
 *     tiles would leave most SMs idle cut K into slices (w8a8_splits, below).
 */
#include <math.h>
#include <string.h>

#include <cuda_fp8.h>

#include "kern/cuda/cuda.cuh"
#include "kern/cuda/f8.cuh"
#include "kern/cuda/gemv_mma.cuh"

/* out (N, OC) += bias (OC), out F32 or BF16. */
static __global__ void k_bias(void *out, bool bf, const float *bias, int64_t total, int OC) {
    griddep_wait();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        float b = bias[i % OC];
        if (bf) ((bf16 *)out)[i] = f2bf(bf2f(((bf16 *)out)[i]) + b);
        else ((float *)out)[i] += b;
    }
}

/* ---- cuBLASLt plans ------------------------------------------------------------------------- */

void dspy_cu_gemm_plan_destroy(gemm_plan *p) {
    if (!p->valid) return;
    dspy_cu_lt.MatmulDescDestroy(p->op);
    dspy_cu_lt.MatrixLayoutDestroy(p->a);
    dspy_cu_lt.MatrixLayoutDestroy(p->b);
    dspy_cu_lt.MatrixLayoutDestroy(p->c);
    p->valid = false;
}

void dspy_cu_gemm_plans_free(cuda_state *s) {
    for (int i = 0; i < GEMM_PLANS; i++) dspy_cu_gemm_plan_destroy(&s->plans[i]);
}

/* The plan cache is shared with train_linear.cu (its plans use tags outside the dtype range). */
gemm_plan *dspy_cu_gemm_plan_slot(cuda_state *s, int N, int C, int OC, int tag, bool acc, bool *hit) {
    gemm_plan *victim = NULL;
    for (int i = 0; i < GEMM_PLANS; i++) {
        gemm_plan *p = &s->plans[i];
        if (p->valid && p->N == N && p->C == C && p->OC == OC && p->out_dtype == tag && p->accumulate == acc) {
            p->last_use = ++s->use_clock;
            *hit = true;
            return p;
        }
        /* an empty slot first, else the least recently used */
        if (!victim || (victim->valid && (!p->valid || p->last_use < victim->last_use))) victim = p;
    }
    dspy_cu_gemm_plan_destroy(victim);
    memset(victim, 0, sizeof *victim);
    *hit = false;
    return victim;
}

/* The heuristic's first algorithm for p's descriptors within the workspace, into p->algo; the
 * cuBLASLt status, CUBLAS_STATUS_NOT_SUPPORTED where it found none. */
static cublasStatus_t plan_algo(cuda_state *s, gemm_plan *p) {
    cublasLtMatmulPreference_t pref;
    dspy_cu_lt.MatmulPreferenceCreate(&pref);
    dspy_cu_lt.MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &s->ws_bytes,
                                         sizeof s->ws_bytes);
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cublasStatus_t hs = dspy_cu_lt.MatmulAlgoGetHeuristic(s->lt, p->op, p->a, p->b, p->c, p->c, pref, 1, &res, &found);
    dspy_cu_lt.MatmulPreferenceDestroy(pref);
    if (hs == CUBLAS_STATUS_SUCCESS && found == 0) hs = CUBLAS_STATUS_NOT_SUPPORTED;
    if (hs == CUBLAS_STATUS_SUCCESS) p->algo = res.algo;
    return hs;
}

/* p's matmul (F32 compute, A transposed) and layouts, in the column-major view of out (N, OC) =
 * inp (N, C) @ W^T: A = W (OC, C) row-major, i.e. (C, OC) column-major transposed, its first k
 * rows; B = the input rows, k x N, leading dimension C; D (OC, N) of type dt. p->valid from the
 * first creation on, so that dspy_cu_gemm_plan_destroy releases what was made (on a failure here,
 * which it returns). */
static dspy_status plan_make(dspy_backend *be, gemm_plan *p, cudaDataType_t ab, cudaDataType_t dt, int64_t k, int N,
                             int C, int OC, const char *what) {
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    DSPY_TRY(dspy_cu_check_lt(be, dspy_cu_lt.MatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F), what));
    p->valid = true;
    dspy_cu_lt.MatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    dspy_cu_lt.MatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    dspy_status st = dspy_cu_check_lt(be, dspy_cu_lt.MatrixLayoutCreate(&p->a, ab, k, OC, C), what);
    if (!st) st = dspy_cu_check_lt(be, dspy_cu_lt.MatrixLayoutCreate(&p->b, ab, k, N, C), what);
    if (!st) st = dspy_cu_check_lt(be, dspy_cu_lt.MatrixLayoutCreate(&p->c, dt, OC, N, OC), what);
    if (st) dspy_cu_gemm_plan_destroy(p);
    return st;
}

/* Files a made plan under its key (tag: the plan cache's kind) as the most recently used. */
static void plan_keep(cuda_state *s, gemm_plan *p, int N, int C, int OC, int tag, bool acc) {
    p->N = N, p->C = C, p->OC = OC, p->out_dtype = tag, p->accumulate = acc;
    p->last_use = ++s->use_clock;
}

/* The cached plan for the shape, made (descriptors + heuristic) on first use; the least recently
 * used slot is recycled when the cache is full. */
static dspy_status get_plan(dspy_backend *be, int N, int C, int OC, int out_dtype, bool acc, gemm_plan **out) {
    cuda_state *s = cu_of(be);
    bool hit = false;
    gemm_plan *p = dspy_cu_gemm_plan_slot(s, N, C, OC, out_dtype, acc, &hit);
    if (hit) {
        *out = p;
        return DSPY_OK;
    }
    cudaDataType_t dt = out_dtype == DSPY_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    DSPY_TRY(plan_make(be, p, CUDA_R_16BF, dt, C, N, C, OC, "gemm plan"));
    cublasStatus_t hs = plan_algo(s, p);
    if (hs != CUBLAS_STATUS_SUCCESS) {
        dspy_cu_gemm_plan_destroy(p);
        return dspy_cu_fail(be, DSPY_ERR_BACKEND, "cuda:%d: cuBLASLt has no algorithm for a %d x %d x %d BF16 GEMM (%s)",
                       s->dev, N, C, OC, hs != CUBLAS_STATUS_NOT_SUPPORTED ? "heuristic failed" : "none found");
    }
    plan_keep(s, p, N, C, OC, out_dtype, acc);
    *out = p;
    return DSPY_OK;
}

static dspy_status gemm_lt(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, int N, int C, int OC,
                           bool acc) {
    cuda_state *s = cu_of(be);
    gemm_plan *p = NULL;
    DSPY_TRY(get_plan(be, N, C, OC, out.dtype, acc, &p));
    float alpha = 1.0f, beta = acc ? 1.0f : 0.0f;
    return dspy_cu_check_lt(be,
                       dspy_cu_lt.Matmul(s->lt, p->op, &alpha, w.data, p->a, inp.data, p->b, &beta, out.data, p->c,
                                      out.data, p->c, &p->algo, s->ws, s->ws_bytes, s->stream),
                       "gemm");
}

/* ---- W8A8 ------------------------------------------------------------------------------------ */

enum { A8_THREADS = 256 };

/* Grid (N): row n of inp (N, C) BF16 (C % 16 == 0, 16-byte aligned rows) as E4M3 codes q (N, C)
 * and its 2^k sc[n], k the smallest in [-100, DSPY_ACT8_K_MAX] with every |x| <= 448 * 2^k:
 * f8.cu's rule for weight rows (kern/e4m3.c on the host), codes = E4M3(x / 2^k), nearest even,
 * saturating. */
static __global__ __launch_bounds__(A8_THREADS) void k_act8(const bf16 *__restrict__ inp, uint8_t *__restrict__ q,
                                                         float *__restrict__ sc, int C) {
    __shared__ float red[A8_THREADS / 32];
    griddep_wait();
    const int row = blockIdx.x, tid = threadIdx.x;
    const bf16 *x = inp + (int64_t)row * C;
    float amax = 0.0f;
    for (int c = tid * 8; c < C; c += A8_THREADS * 8) {
        const uint4 v = *(const uint4 *)(x + c);
        const __nv_bfloat162 *h = (const __nv_bfloat162 *)&v;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float2 f = __bfloat1622float2(h[i]);
            amax = fmaxf(amax, fmaxf(fabsf(f.x), fabsf(f.y)));
        }
    }
    amax = f8_block_max<A8_THREADS>(amax, red);
    const int k = min(f8_exponent(amax), (int)DSPY_ACT8_K_MAX);
    const float down = ldexpf(1.0f, -k);
    uint8_t *qr = q + (int64_t)row * C;
    for (int c = tid * 8; c < C; c += A8_THREADS * 8) {
        const uint4 v = *(const uint4 *)(x + c);
        const __nv_bfloat162 *h = (const __nv_bfloat162 *)&v;
        float f[8];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float2 a = __bfloat1622float2(h[i]);
            f[2 * i] = a.x, f[2 * i + 1] = a.y;
        }
        *(uint2 *)(qr + c) = act8_pack8(f, down);
    }
    if (tid == 0) sc[row] = ldexpf(1.0f, k);
}

/* The cached W8A8 plan of a shape (tags 100 + out dtype); p->none where cuBLASLt has no
 * algorithm for it. */
static dspy_status get_plan8(dspy_backend *be, int N, int C, int OC, int out_dtype, bool acc, gemm_plan **out) {
    cuda_state *s = cu_of(be);
    bool hit = false;
    gemm_plan *p = dspy_cu_gemm_plan_slot(s, N, C, OC, 100 + out_dtype, acc, &hit);
    *out = p;
    if (hit) return DSPY_OK;
    cudaDataType_t dt = out_dtype == DSPY_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasLtMatmulMatrixScale_t vec = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    /* A = the codes (OC, C), B = the rows' codes */
    DSPY_TRY(plan_make(be, p, CUDA_R_8F_E4M3, dt, C, N, C, OC, "W8A8 gemm plan"));
    dspy_status st = dspy_cu_check_lt(be, dspy_cu_lt.MatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &vec,
                                                                         sizeof vec), "W8A8 gemm plan (scale mode)");
    if (!st)
        st = dspy_cu_check_lt(be, dspy_cu_lt.MatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &vec, sizeof vec),
                              "W8A8 gemm plan (scale mode)");
    /* the heuristic finds no algorithm for outer-vector scales without their pointers (H200,
     * cuBLASLt 13.1): any device vectors will do until the call sets the real ones */
    const void *any = s->act8_scale;
    dspy_cu_lt.MatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &any, sizeof any);
    dspy_cu_lt.MatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &any, sizeof any);
    if (st) {
        dspy_cu_gemm_plan_destroy(p);
        return st;
    }
    p->none = plan_algo(s, p) != CUBLAS_STATUS_SUCCESS;
    plan_keep(s, p, N, C, OC, 100 + out_dtype, acc);
    return DSPY_OK;
}

/* The W8A8 plan of a call of N rows (C -> OC) where the backend can run one (its act8 buffer holds
 * the rows' codes, cuBLASLt has an algorithm), else *out NULL. */
static dspy_status w8a8_plan(dspy_backend *be, int N, int C, int OC, int out_dtype, bool acc, gemm_plan **out) {
    cuda_state *s = cu_of(be);
    *out = NULL;
    if (!s->act8 || N > s->act8_rows || (size_t)N * C > s->act8_n || C % 16 != 0 || OC % 16 != 0) return DSPY_OK;
    gemm_plan *p = NULL;
    DSPY_TRY(get_plan8(be, N, C, OC, out_dtype, acc, &p));
    if (!p->none) *out = p;
    return DSPY_OK;
}

/* ---- W8A8 split-K: small calls (a prompt step of a few hundred rows) ----------------------------
 * cuBLASLt's outer-vector-scaled FP8 GEMM puts one CTA on a 128 x 128 tile of the output and walks
 * all of K: a single request's prompt step (~200 rows) makes 32-48 of them for the 132 SMs of an
 * H200 (the sixteenth session's probe: o and qkv 10-11 us, down 24 us a layer, 160-290 TFLOP/s).
 * Here the K extent is cut into S slices, multiplied as one strided batch of plain FP8 GEMMs
 * (codes times codes, F32 partials into s->splitk), and k_splitk_sum adds the slices and applies
 * the two 2^k vectors — the same products and scales, summed in another order. */
enum { SPLITK_MAX_ROWS = 512, SPLITK_MAX_OC = 4096, SPLITK_MAX = 4 };

size_t dspy_cu_splitk_floats(void) { return (size_t)SPLITK_MAX * SPLITK_MAX_ROWS * SPLITK_MAX_OC; }

/* The slices of a W8A8 call (1: none): as many as leave the tiles about one an SM, up to 4, each
 * slice's K a multiple of 256 (batch strides on cuBLASLt's 256-byte alignment) and at least 512;
 * none where that is fewer than 3 (H200, 204 rows: qkv's 48 tiles in 2 slices lost ~1 us a
 * layer to the extra sum; o's and down's 32 in 4 gained 1 and 11). A pure function of the shape
 * and DSPY_CUDA_SPLITK (2..4: that many wherever the sizes allow). */
static int w8a8_splits(const cuda_state *s, int N, int C, int OC) {
    if (!s->splitk || s->splitk_mode == 1 || N > SPLITK_MAX_ROWS || OC > SPLITK_MAX_OC) return 1;
    int S = s->splitk_mode;
    if (S < 2) {
        const int tiles = ((N + 127) / 128) * ((OC + 127) / 128);
        S = s->sm_count / tiles;
        if (S < 3) return 1;
    }
    if (S > SPLITK_MAX) S = SPLITK_MAX;
    while (S > 1 && (C % (256 * S) != 0 || C / S < 512)) S--;
    return S < 2 ? 1 : S;
}

/* Floats between two slices' partials (N, OC) in s->splitk: 256-byte aligned. */
static int64_t splitk_stride(int N, int OC) { return ((int64_t)N * OC + 63) / 64 * 64; }

/* The cached plan of a call's S slices (tags 200 + S): plain FP8 operands (no scale vectors), F32
 * D, a strided batch of S over K. p->none where cuBLASLt has no algorithm. */
static dspy_status get_plan8k(dspy_backend *be, int N, int C, int OC, int S, gemm_plan **out) {
    cuda_state *s = cu_of(be);
    bool hit = false;
    gemm_plan *p = dspy_cu_gemm_plan_slot(s, N, C, OC, 200 + S, false, &hit);
    *out = p;
    if (hit) return DSPY_OK;
    const int32_t batch = S;
    const int64_t ks = C / S, ds = splitk_stride(N, OC);
    /* slice z: the codes' columns z*C/S .. (z+1)*C/S - 1 of both operands (leading dimension C) */
    DSPY_TRY(plan_make(be, p, CUDA_R_8F_E4M3, CUDA_R_32F, ks, N, C, OC, "W8A8 split-K plan"));
    dspy_status st = DSPY_OK;
    const cublasLtMatrixLayout_t lay[3] = {p->a, p->b, p->c};
    const int64_t stride[3] = {ks, ks, ds};
    for (int i = 0; i < 3 && !st; i++) {
        st = dspy_cu_check_lt(be, dspy_cu_lt.MatrixLayoutSetAttribute(lay[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch,
                                                                   sizeof batch), "W8A8 split-K plan (batch)");
        if (!st)
            st = dspy_cu_check_lt(be, dspy_cu_lt.MatrixLayoutSetAttribute(lay[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                                       &stride[i], sizeof stride[i]),
                                  "W8A8 split-K plan (batch stride)");
    }
    if (st) {
        dspy_cu_gemm_plan_destroy(p);
        return st;
    }
    p->none = plan_algo(s, p) != CUBLAS_STATUS_SUCCESS;
    plan_keep(s, p, N, C, OC, 200 + S, false);
    return DSPY_OK;
}

/* out (N, OC) [+]= sa[oc] * sb[n] * (the S slices' partials summed in order), out F32 (acc: added
 * to it) or BF16; four columns a thread (OC % 16 == 0). */
static __global__ void k_splitk_sum(void *__restrict__ out, bool bf, bool acc, const float *__restrict__ part,
                                    int64_t stride, int S, const float *__restrict__ sa, const float *__restrict__ sb,
                                    int N, int OC) {
    griddep_wait();
    const int64_t total = (int64_t)N * OC;
    for (int64_t e = 4 * ((int64_t)blockIdx.x * blockDim.x + threadIdx.x); e < total; e += 4 * (int64_t)gridDim.x * blockDim.x) {
        float4 v = *(const float4 *)(part + e);
        for (int z = 1; z < S; z++) {
            const float4 w = *(const float4 *)(part + z * stride + e);
            v.x += w.x, v.y += w.y, v.z += w.z, v.w += w.w;
        }
        const int n = (int)(e / OC), oc = (int)(e % OC);
        const float b = sb[n];
        v.x *= sa[oc] * b, v.y *= sa[oc + 1] * b, v.z *= sa[oc + 2] * b, v.w *= sa[oc + 3] * b;
        if (bf) {
            __nv_bfloat162 *o = (__nv_bfloat162 *)((bf16 *)out + e);
            o[0] = __floats2bfloat162_rn(v.x, v.y), o[1] = __floats2bfloat162_rn(v.z, v.w);
        } else {
            float4 *o = (float4 *)((float *)out + e);
            if (acc) {
                const float4 r = *o;
                v.x += r.x, v.y += r.y, v.z += r.z, v.w += r.w;
            }
            *o = v;
        }
    }
}

/* out (N, OC) [+]= rows @ W^T on plan p: the rows as E4M3 codes q (N, C) with their 2^k sc (N),
 * W the FP8 copy f; in K slices where w8a8_splits says so and cuBLASLt has a batched algorithm. */
static dspy_status w8a8_run(dspy_backend *be, gemm_plan *p, const cu_f8 *f, const uint8_t *q, const float *sc,
                            dspy_tensor out, bool acc) {
    cuda_state *s = cu_of(be);
    const int N = p->N, C = p->C, OC = p->OC, S = w8a8_splits(s, N, C, OC);
    if (S > 1) {
        gemm_plan *k = NULL; /* (p, just used, is the cache's newest entry: never the slot k recycles) */
        DSPY_TRY(get_plan8k(be, N, C, OC, S, &k));
        if (!k->none) {
            const float alpha = 1.0f, beta = 0.0f;
            DSPY_TRY(dspy_cu_check_lt(be,
                                      dspy_cu_lt.Matmul(s->lt, k->op, &alpha, f->q, k->a, q, k->b, &beta, s->splitk, k->c,
                                                     s->splitk, k->c, &k->algo, s->ws, s->ws_bytes, s->stream),
                                      "gemm (W8A8, K slices)"));
            const int64_t quads = (int64_t)N * OC / 4;
            unsigned blocks = (unsigned)((quads + 255) / 256);
            if (blocks > 4u * (unsigned)s->sm_count) blocks = 4u * (unsigned)s->sm_count;
            return cu_launch(be, "linear (W8A8: K slices summed)", k_splitk_sum, blocks, 256, 0, out.data,
                             out.dtype == DSPY_DTYPE_BF16, acc, (const float *)s->splitk, splitk_stride(N, OC), S,
                             (const float *)f->scale, sc, N, OC);
        }
    }
    const void *sa = f->scale, *sb = sc;
    dspy_cu_lt.MatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof sa);
    dspy_cu_lt.MatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof sb);
    float alpha = 1.0f, beta = acc ? 1.0f : 0.0f;
    return dspy_cu_check_lt(be,
                            dspy_cu_lt.Matmul(s->lt, p->op, &alpha, f->q, p->a, q, p->b, &beta, out.data, p->c, out.data,
                                           p->c, &p->algo, s->ws, s->ws_bytes, s->stream),
                            "gemm (W8A8)");
}

/* out (N, OC) [+]= inp @ W^T through the FP8 copy f when the backend can (w8a8_plan); *done says
 * whether it did. */
static dspy_status gemm_w8a8(dspy_backend *be, dspy_tensor out, dspy_tensor inp, const cu_f8 *f, int N, int C, int OC,
                             bool acc, bool *done) {
    cuda_state *s = cu_of(be);
    *done = false;
    if ((uintptr_t)inp.data % 16 != 0) return DSPY_OK;
    gemm_plan *p = NULL;
    DSPY_TRY(w8a8_plan(be, N, C, OC, out.dtype, acc, &p));
    if (!p) return DSPY_OK;
    DSPY_TRY(cu_launch(be, "linear (W8A8: rows to E4M3)", k_act8, dim3(N), dim3(A8_THREADS), 0, (const bf16 *)inp.data,
                       s->act8, s->act8_scale, C));
    DSPY_TRY(w8a8_run(be, p, f, s->act8, s->act8_scale, out, acc));
    *done = true;
    return DSPY_OK;
}

/* Whether every address is a multiple of 256 bytes (what the plans above assume: cuBLASLt's
 * heuristic default). */
static bool aligned256(const void *a, const void *b, const void *c) {
    return (((uintptr_t)a | (uintptr_t)b | (uintptr_t)c) & 255u) == 0;
}

/* F32 inp and w: the trainer's F32 layer; BF16 ones into an F32 out at addresses that are not all
 * 256-byte aligned (slices of the trainer's work buffers): train_linear.cu, whose plans are told
 * the alignment */
static bool to_f32_path(dspy_tensor out, dspy_tensor inp, dspy_tensor w, int N, int C, int OC) {
    return (inp.dtype == DSPY_DTYPE_F32 && w.dtype == DSPY_DTYPE_F32) ||
           (inp.dtype == DSPY_DTYPE_BF16 && w.dtype == DSPY_DTYPE_BF16 && out.dtype == DSPY_DTYPE_F32 &&
            N > GEMV_MAX_ROWS && !dspy_cu_mma_fits(N, OC, C, w.data, inp.data) && !aligned256(out.data, inp.data, w.data));
}

/* Whether a call of N rows with w goes W8A8 (prompt-sized calls only: fewer rows stay W8A16 even
 * where DSPY_CUDA_MMA=0 sends them to cuBLASLt) and w's FP8 copy (*f). */
static bool w8a8_link(dspy_backend *be, dspy_tensor w, int N, int C, int OC, cu_f8 *f) {
    return N >= DSPY_ACT8_MIN_ROWS && cu_of(be)->act8 && dspy_cu_f8_find(w.data, OC, C, f) && f->act8;
}

/* out (N, OC) += bias (OC) where there is one. */
static dspy_status add_bias(dspy_backend *be, dspy_tensor out, dspy_tensor bias, int N, int OC) {
    if (!bias.data) return DSPY_OK;
    int64_t total = (int64_t)N * OC;
    unsigned blocks = cu_blocks(total, 256);
    if (blocks > 65535u * 8) blocks = 65535u * 8;
    return cu_launch(be, "linear (bias)", k_bias, blocks, 256, 0, out.data, out.dtype == DSPY_DTYPE_BF16,
                     (const float *)bias.data, total, OC);
}

/* linear on rows handed over as W8A8 codes (kern/ops.h mlp_act8): inp's bytes hold the codes
 * (N, C), then the rows' 2^k at dspy_act8_scales_at(N, C). */
static dspy_status linear_codes(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, dspy_tensor bias,
                                int N, int C, int OC, int accumulate) {
    CU_NEED("linear", "inp (W8A8 codes)", inp, DSPY_DTYPE_U8, (int64_t)dspy_act8_bytes(N, C));
    CU_NEED2("linear", "out", out, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)N * OC);
    CU_NEED("linear", "w", w, DSPY_DTYPE_BF16, (int64_t)OC * C);
    if (bias.data) CU_NEED("linear", "bias", bias, DSPY_DTYPE_F32, OC);
    if (accumulate && out.dtype != DSPY_DTYPE_F32)
        return dspy_fail(DSPY_ERR_ARG, "cuda linear: accumulate needs an F32 out (the residual stream)");
    cu_f8 f8c;
    gemm_plan *p = NULL;
    if (w8a8_link(be, w, N, C, OC, &f8c) && (uintptr_t)inp.data % 16 == 0)
        DSPY_TRY(w8a8_plan(be, N, C, OC, out.dtype, accumulate != 0, &p));
    if (!p)
        return dspy_fail(DSPY_ERR_ARG, "cuda linear: W8A8 codes as input only where mlp_act8 said so (%d rows, %d x %d)", N,
                         OC, C);
    const uint8_t *q = (const uint8_t *)inp.data;
    DSPY_TRY(w8a8_run(be, p, &f8c, q, (const float *)(q + dspy_act8_scales_at(N, C)), out, accumulate != 0));
    return add_bias(be, out, bias, N, OC);
}

dspy_status dspy_cu_linear(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, dspy_tensor bias, int N,
                      int C, int OC, int accumulate) {
    CU_ENTER(be);
    if (inp.dtype == DSPY_DTYPE_U8) return linear_codes(be, out, inp, w, bias, N, C, OC, accumulate);
    if (to_f32_path(out, inp, w, N, C, OC)) return dspy_cu_linear_f32(be, out, inp, w, bias, N, C, OC, accumulate);
    CU_NEED2("linear", "out", out, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)N * OC);
    CU_NEED2("linear", "inp", inp, DSPY_DTYPE_BF16, DSPY_DTYPE_F16, (int64_t)N * C);
    CU_NEED("linear", "w", w, DSPY_DTYPE_BF16, (int64_t)OC * C);
    if (bias.data) CU_NEED("linear", "bias", bias, DSPY_DTYPE_F32, OC);
    if (accumulate && out.dtype != DSPY_DTYPE_F32)
        return dspy_fail(DSPY_ERR_ARG, "cuda linear: accumulate needs an F32 out (the residual stream)");
    if (N == 0 || OC == 0) return DSPY_OK;
    if (dspy_cu_mma_fits(N, OC, C, w.data, inp.data)) return dspy_cu_mma_linear(be, out, inp, w, bias, N, C, OC, accumulate);
    if (inp.dtype == DSPY_DTYPE_F16) /* mlp_in's F16 handoff (kern/ops.h mlp_f16): tensor cores only */
        return dspy_fail(DSPY_ERR_ARG, "cuda linear: F16 input rows only where the tensor-core kernel runs (%d rows, "
                                       "%d x %d)", N, OC, C);
    if (N <= GEMV_MAX_ROWS) return dspy_cu_gemv(be, out, inp, w, bias, N, C, OC, accumulate);
    cu_f8 f8c;
    bool done = false;
    if (w8a8_link(be, w, N, C, OC, &f8c)) DSPY_TRY(gemm_w8a8(be, out, inp, &f8c, N, C, OC, accumulate, &done));
    if (!done) DSPY_TRY(gemm_lt(be, out, inp, w, N, C, OC, accumulate));
    return add_bias(be, out, bias, N, OC);
}

dspy_status dspy_cu_linear_normed(dspy_backend *be, dspy_tensor out, dspy_tensor xn, dspy_tensor x, dspy_tensor w_norm,
                                  float eps, dspy_tensor w, dspy_tensor bias, int N, int C, int OC) {
    cuda_state *s = cu_of(be);
    cu_f8 f8c;
    gemm_plan *p = NULL;
    /* exactly where the composition's linear would take W8A8 on k_rmsnorm8's rows (w8a8_link's 17+
     * rows go to neither the tensor-core kernels nor the GEMV; the fits test on xn is gemm_w8a8's
     * alignment of its input) */
    if (s->act8_fuse && xn.dtype == DSPY_DTYPE_BF16 && x.dtype == DSPY_DTYPE_F32 && w_norm.dtype == DSPY_DTYPE_F32 &&
        w.dtype == DSPY_DTYPE_BF16 && (out.dtype == DSPY_DTYPE_BF16 || out.dtype == DSPY_DTYPE_F32) &&
        !to_f32_path(out, xn, w, N, C, OC) && w8a8_link(be, w, N, C, OC, &f8c) &&
        dspy_cu_rmsnorm_act8_fits(C, x.data, w_norm.data, xn.data) && dspy_cu_rmsnorm_act8_fits(C, x.data, w_norm.data, s->act8))
        DSPY_TRY(w8a8_plan(be, N, C, OC, out.dtype, false, &p));
    if (!p) {
        DSPY_TRY(dspy_cu_rmsnorm(be, xn, x, w_norm, N, C, eps));
        return dspy_cu_linear(be, out, xn, w, bias, N, C, OC, false);
    }
    CU_NEED("linear", "xn", xn, DSPY_DTYPE_BF16, (int64_t)N * C);
    CU_NEED("linear", "x", x, DSPY_DTYPE_F32, (int64_t)N * C);
    CU_NEED2("linear", "out", out, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)N * OC);
    if (bias.data) CU_NEED("linear", "bias", bias, DSPY_DTYPE_F32, OC);
    DSPY_TRY(dspy_cu_rmsnorm_act8(be, s->act8, s->act8_scale, x, w_norm, N, C, eps));
    DSPY_TRY(w8a8_run(be, p, &f8c, s->act8, s->act8_scale, out, false));
    return add_bias(be, out, bias, N, OC);
}

bool dspy_cu_mlp_act8(dspy_backend *be, dspy_tensor h, dspy_tensor x, dspy_tensor w_down, int N, int C, int I) {
    cu_f8 f8c;
    gemm_plan *p = NULL;
    /* only where the composition (BF16 h, then linear into the F32 residual x) takes W8A8 on the
     * same rows: the same codes, so the same sums */
    if (!cu_of(be)->act8_fuse || h.dtype != DSPY_DTYPE_BF16 || x.dtype != DSPY_DTYPE_F32 || w_down.dtype != DSPY_DTYPE_BF16 ||
        N <= MMA_MAX_ROWS || to_f32_path(x, h, w_down, N, I, C) || (size_t)h.n * 2 < dspy_act8_bytes(N, I) ||
        (uintptr_t)h.data % 16 != 0 || !w8a8_link(be, w_down, N, I, C, &f8c) ||
        !dspy_cu_swiglu_act8_fits(I, 2 * I, h.data, h.data, h.data))
        return false;
    return w8a8_plan(be, N, I, C, DSPY_DTYPE_F32, true, &p) == DSPY_OK && p != NULL;
}
