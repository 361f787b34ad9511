/* train_xent.cu — fused cross-entropy over M rows of logits (kern/ops.h cross_entropy; logits F32,
 * or BF16 as the mixed-precision trainer's lm_head writes them; dlogits F32, or BF16 for that
 * trainer).
 *
 * One block per row. One pass reads the row once and keeps an online log-sum-exp per thread
 * (max and rescaled sum, train.cuh), merged across the block: lse = m + log(s). Then
 * loss = lse - logits[target]; and, when dlogits is given, a second pass writes
 * dlogits[i] = dscale * (exp(logits[i] - lse) - [i == target]). dlogits may be logits: the
 * target's logit is read before the barrier that precedes any write, and every other element
 * is read and written by the same thread.
 *
 * BF16 logits with V a multiple of 8 (16-byte aligned rows) are read 8 at a time with 16-byte
 * loads, each group folded into the running pair as (its max, its sum of exps), and dlogits
 * written 8 at a time; the same formulas per element.
 *
 * Accuracy: the sums are F32 (the CPU's are double); loss and probabilities agree with the
 * CPU's to ~1e-6 relative for V up to the Llama 3 vocabulary. A target outside [0, V) cannot
 * be reported without waiting for the device, so that row's loss and dlogits become NaN (the
 * CPU returns DSPY_ERR_ARG); the trainer's loss shows it.
 */
#include "kern/cuda/train.cuh"

enum { XENT_THREADS = 512 };

/* DT: dlogits F32, or BF16 (the mixed-precision trainer's lm_head GEMM operand, written directly
 * instead of an F32 array and a cast; then it may not alias logits). LT: logits F32 or BF16. */
static __device__ __forceinline__ float xe_ld(const float *p, int64_t i) { return p[i]; }
static __device__ __forceinline__ float xe_ld(const bf16 *p, int64_t i) { return bf2f(p[i]); }

/* The block's (max, sum) pair merged across its warps; every thread gets it. */
static __device__ __forceinline__ tr_lse xe_block_lse(tr_lse a, float *sm, float *ss) {
    for (int o = 16; o > 0; o >>= 1) {
        tr_lse b = {__shfl_xor_sync(0xffffffffu, a.m, o), __shfl_xor_sync(0xffffffffu, a.s, o)};
        a = tr_lse_merge(a, b);
    }
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (l == 0) sm[w] = a.m, ss[w] = a.s;
    __syncthreads();
    a = l < nw ? tr_lse{sm[l], ss[l]} : tr_lse{-INFINITY, 0.0f};
    for (int o = 16; o > 0; o >>= 1) {
        tr_lse b = {__shfl_xor_sync(0xffffffffu, a.m, o), __shfl_xor_sync(0xffffffffu, a.s, o)};
        a = tr_lse_merge(a, b);
    }
    return a;
}

template <typename DT, typename LT>
static __global__ void __launch_bounds__(XENT_THREADS) k_cross_entropy(float *loss, DT *dlogits, const LT *logits,
                                                                const int32_t *targets, int V, float dscale) {
    griddep_wait();
    __shared__ float sm[32], ss[32];
    __shared__ float x_target;
    const int64_t off = (int64_t)blockIdx.x * V;
    const LT *x = logits + off;
    const int t = targets[blockIdx.x];
    const bool bad = t < 0 || t >= V;
    tr_lse a = {-INFINITY, 0.0f};
    for (int i = threadIdx.x; i < V; i += blockDim.x) a = tr_lse_add(a, xe_ld(x, i));
    if (threadIdx.x == 0) x_target = bad ? NAN : xe_ld(x, t);
    a = xe_block_lse(a, sm, ss); /* its barrier also orders the read of x[t] before any write to dlogits (may alias) */
    const float lse = bad ? NAN : a.m + logf(a.s);
    if (threadIdx.x == 0) loss[blockIdx.x] = lse - x_target;
    if (!dlogits) return;
    DT *d = dlogits + off;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float p = expf(xe_ld(x, i) - lse);
        const float g = dscale * (i == t ? p - 1.0f : p);
        if constexpr (sizeof(DT) == 2) d[i] = f2bf(g);
        else d[i] = g;
    }
}

/* BF16 logits and dlogits (or none), V % 8 == 0, 16-byte aligned: 8 elements a thread per load. */
static __global__ void __launch_bounds__(XENT_THREADS) k_cross_entropy8(float *loss, bf16 *dlogits, const bf16 *logits,
                                                                 const int32_t *targets, int V, float dscale) {
    griddep_wait();
    __shared__ float sm[32], ss[32];
    __shared__ float x_target;
    const int64_t off = (int64_t)blockIdx.x * V;
    const uint4 *x8 = (const uint4 *)(logits + off);
    const int t = targets[blockIdx.x], V8 = V / 8;
    const bool bad = t < 0 || t >= V;
    tr_lse a = {-INFINITY, 0.0f};
    for (int i = threadIdx.x; i < V8; i += blockDim.x) {
        const uint4 v = x8[i];
        const bf16 *e = (const bf16 *)&v;
        float f[8], m = -INFINITY;
#pragma unroll
        for (int j = 0; j < 8; j++) f[j] = bf2f(e[j]), m = fmaxf(m, f[j]);
        if (m == -INFINITY) continue; /* adds nothing */
        float s = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++) s += expf(f[j] - m);
        a = tr_lse_merge(a, tr_lse{m, s});
    }
    if (threadIdx.x == 0) x_target = bad ? NAN : bf2f(logits[off + t]);
    a = xe_block_lse(a, sm, ss);
    const float lse = bad ? NAN : a.m + logf(a.s);
    if (threadIdx.x == 0) loss[blockIdx.x] = lse - x_target;
    if (!dlogits) return;
    uint4 *d8 = (uint4 *)(dlogits + off);
    for (int i = threadIdx.x; i < V8; i += blockDim.x) {
        const uint4 v = x8[i];
        const bf16 *e = (const bf16 *)&v;
        uint4 o;
        bf16 *g8 = (bf16 *)&o;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const float p = expf(bf2f(e[j]) - lse);
            g8[j] = f2bf(dscale * (8 * i + j == t ? p - 1.0f : p));
        }
        d8[i] = o;
    }
}

dspy_status dspy_cu_cross_entropy(dspy_backend *be, dspy_tensor loss, dspy_tensor dlogits, dspy_tensor logits,
                             dspy_tensor targets, int M, int V, float dscale) {
    CU_ENTER(be);
    const char *op = "cross_entropy";
    CU_NEED(op, "loss", loss, DSPY_DTYPE_F32, M);
    CU_NEED2(op, "logits", logits, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)M * V);
    CU_NEED(op, "targets", targets, DSPY_DTYPE_I32, M);
    if (dlogits.data) CU_NEED2(op, "dlogits", dlogits, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)M * V);
    if (M == 0) return DSPY_OK;
    if (V <= 0) return dspy_fail(DSPY_ERR_ARG, "cuda %s: V is %d; it must be positive", op, V);
    const bool d16 = dlogits.data && dlogits.dtype == DSPY_DTYPE_BF16, l16 = logits.dtype == DSPY_DTYPE_BF16;
    if (dlogits.data && (d16 || l16 || dlogits.data != logits.data)) {
        /* Partial overlap would let one row's writes reach another row's reads (a BF16 dlogits
         * or BF16 logits have another row pitch: it must be separate). */
        const char *a = (const char *)dlogits.data, *b = (const char *)logits.data;
        size_t bytes = (size_t)M * V * dspy_dtype_size(logits.dtype);
        size_t abytes = (size_t)M * V * dspy_dtype_size(dlogits.dtype);
        if (a < b + bytes && b < a + abytes)
            return dspy_fail(DSPY_ERR_ARG, "cuda %s: dlogits overlaps logits; an F32 dlogits may equal F32 logits or "
                                           "be separate, a BF16 one must be separate (and so must any dlogits of BF16 logits)", op);
    }
    const float *l32 = (const float *)logits.data;
    const bf16 *lb = (const bf16 *)logits.data;
    const int32_t *tg = (const int32_t *)targets.data;
    if (l16 && (!dlogits.data || d16) && V % 8 == 0 && ((uintptr_t)logits.data | (uintptr_t)dlogits.data) % 16 == 0)
        return cu_launch(be, op, k_cross_entropy8, M, XENT_THREADS, 0, (float *)loss.data, (bf16 *)dlogits.data, lb,
                         tg, V, dscale);
    if (l16)
        return d16 ? cu_launch(be, op, k_cross_entropy<bf16, bf16>, M, XENT_THREADS, 0, (float *)loss.data,
                               (bf16 *)dlogits.data, lb, tg, V, dscale)
                   : cu_launch(be, op, k_cross_entropy<float, bf16>, M, XENT_THREADS, 0, (float *)loss.data,
                               (float *)dlogits.data, lb, tg, V, dscale);
    if (d16)
        return cu_launch(be, op, k_cross_entropy<bf16, float>, M, XENT_THREADS, 0, (float *)loss.data,
                         (bf16 *)dlogits.data, l32, tg, V, dscale);
    return cu_launch(be, op, k_cross_entropy<float, float>, M, XENT_THREADS, 0, (float *)loss.data,
                     (float *)dlogits.data, l32, tg, V, dscale);
}
