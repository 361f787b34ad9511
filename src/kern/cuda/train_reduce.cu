/* train_reduce.cu — the trainer's reductions on CUDA (kern/ops.h sum_rows, grad_sumsq,
 * clip_coef): the loss sum, per-tensor sums of squares for the gradient norm, and torch's
 * clip_grad_norm_ coefficient written straight into the adamw step constants, so an optimizer
 * step needs no host read between the backward pass and the update.
 *
 * Determinism: every sum is in double over a fixed assignment of elements to threads and a
 * fixed reduction tree, so a result does not depend on timing (no atomics). The orders differ
 * from the CPU's index order (results agree to double rounding, far below F32). grad_sumsq runs
 * up to SUMSQ_BLOCKS blocks (1,024: enough loads in flight to stream a large gradient at memory
 * speed; one per 256 elements below that) whose partial sums go to the planned training scratch (after train_rows' rows,
 * train_plan.cu), then one block adds them in a fixed order.
 * clip_coef is one thread doing the CPU's arithmetic with explicitly rounded intrinsics, so from
 * the same sums it gives the CPU's norm and coefficient bit for bit.
 */
#include "kern/cuda/train.cuh"

enum { RED_THREADS = 256, SUMSQ_BLOCKS = TR_SUMSQ_BLOCKS };

/* Sum over the block of RED_THREADS threads in a fixed tree; thread 0 gets it. */
static __device__ __forceinline__ double red_block_sum(double v, double *part) {
    for (int o = 16; o > 0; o >>= 1) v = __dadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    if (l == 0) part[w] = v;
    __syncthreads();
    if (w == 0) {
        v = l < (int)(blockDim.x >> 5) ? part[l] : 0.0;
        for (int o = 16; o > 0; o >>= 1) v = __dadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
    }
    return v;
}

/* out[slot] = sum of x (n): one block, thread t takes elements t, t + 256, ... */
static __global__ void __launch_bounds__(RED_THREADS) k_sum_rows(double *out, int slot, const float *x, int64_t n) {
    griddep_wait();
    __shared__ double part[RED_THREADS / 32];
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s = __dadd_rn(s, (double)x[i]);
    s = red_block_sum(s, part);
    if (threadIdx.x == 0) out[slot] = s;
}

/* s += the squares of one load unit, in double, element by element in index order: an F32 element,
 * or a 16-byte group of 8 BF16 ones (the single-pass step's weight gradients). */
static __device__ __forceinline__ void sq_add(double &s, float x) {
    const double v = (double)x;
    s = __dadd_rn(s, __dmul_rn(v, v));
}
static __device__ __forceinline__ void sq_add(double &s, uint4 x) {
    const bf16 *e = (const bf16 *)&x;
#pragma unroll
    for (int j = 0; j < 8; j++) sq_add(s, bf2f(e[j]));
}

/* part[b] = sum of squares of the n units b * 256 + t + j * (gridDim.x * 256). */
template <typename U>
static __global__ void __launch_bounds__(RED_THREADS) k_sumsq_part(double *partial, const U *x, int64_t n) {
    griddep_wait();
    __shared__ double part[RED_THREADS / 32];
    double s = 0.0;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) sq_add(s, x[i]);
    s = red_block_sum(s, part);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

/* out[slot] = sum of the nb partials (one block; thread t adds partials t, t + 256, ... in that
 * order, then the fixed tree). */
static __global__ void __launch_bounds__(RED_THREADS) k_sumsq_final(double *out, int slot, const double *partial,
                                                                      int nb) {
    griddep_wait();
    __shared__ double part[RED_THREADS / 32];
    double s = 0.0;
    for (int i = threadIdx.x; i < nb; i += RED_THREADS) s = __dadd_rn(s, partial[i]);
    s = red_block_sum(s, part);
    if (threadIdx.x == 0) out[slot] = s;
}

static __global__ void k_clip_coef(float *hp, int nhp, float *out, const double *sq, int k, const double *check, int nc,
                            double max_norm) {
    griddep_wait();
    double total = 0.0;
    for (int i = 0; i < k; i++) {
        const float tn = __double2float_rn(__dsqrt_rn(sq[i]));
        total = __dadd_rn(total, __dmul_rn((double)tn, (double)tn));
    }
    const float norm = __double2float_rn(__dsqrt_rn(total));
    bool finite = isfinite(norm);
    for (int i = 0; i < nc; i++) finite = finite && isfinite(check[i]);
    float coef = 1.0f;
    if (!finite) {
        coef = __int_as_float(0x7fc00000); /* NaN: adamw skips the step */
    } else if (max_norm > 0.0) {
        const float c = __fdiv_rn(__double2float_rn(max_norm), __fadd_rn(norm, 1e-6f));
        if (c < 1.0f) coef = c;
    }
    out[0] = norm;
    for (int r = 0; r < nhp; r++) hp[(int64_t)r * DSPY_ADAMW_WORDS + DSPY_ADAMW_GSCALE] = coef;
}

dspy_status dspy_cu_sum_rows(dspy_backend *be, dspy_tensor out, int slot, dspy_tensor x) {
    CU_ENTER(be);
    const char *op = "sum_rows";
    if (slot < 0) return dspy_fail(DSPY_ERR_ARG, "cuda %s: slot is %d; it must be >= 0", op, slot);
    CU_NEED(op, "out", out, DSPY_DTYPE_F64, (int64_t)slot + 1);
    CU_NEED(op, "x", x, DSPY_DTYPE_F32, 0);
    return cu_launch(be, op, k_sum_rows, 1, RED_THREADS, 0, (double *)out.data, slot, (const float *)x.data, x.n);
}

dspy_status dspy_cu_grad_sumsq(dspy_backend *be, dspy_tensor out, int slot, dspy_tensor x) {
    CU_ENTER(be);
    const char *op = "grad_sumsq";
    if (slot < 0) return dspy_fail(DSPY_ERR_ARG, "cuda %s: slot is %d; it must be >= 0", op, slot);
    CU_NEED(op, "out", out, DSPY_DTYPE_F64, (int64_t)slot + 1);
    CU_NEED2(op, "x", x, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, 0);
    const bool x16 = x.dtype == DSPY_DTYPE_BF16;
    if (x16 && (x.n % 8 != 0 || (uintptr_t)x.data % 16 != 0))
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: a BF16 x needs a multiple of 8 elements (%lld) from a 16-byte "
                                       "aligned start", op, (long long)x.n);
    cuda_state *s = cu_of(be);
    if (!s->train_rows)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: no training scratch (dspy_backend_reserve)", op);
    double *partial = tr_sumsq_partials(s);
    /* up to SUMSQ_BLOCKS blocks, fewer for a small tensor (a function of n alone: deterministic) */
    const int64_t units = x16 ? x.n / 8 : x.n, want = (units + RED_THREADS - 1) / RED_THREADS;
    const int nb = want < 1 ? 1 : want > SUMSQ_BLOCKS ? SUMSQ_BLOCKS : (int)want;
    if (x16)
        DSPY_TRY(cu_launch(be, op, k_sumsq_part<uint4>, nb, RED_THREADS, 0, partial, (const uint4 *)x.data, units));
    else DSPY_TRY(cu_launch(be, op, k_sumsq_part<float>, nb, RED_THREADS, 0, partial, (const float *)x.data, x.n));
    return cu_launch(be, op, k_sumsq_final, 1, RED_THREADS, 0, (double *)out.data, slot, (const double *)partial, nb);
}

dspy_status dspy_cu_clip_coef(dspy_backend *be, dspy_tensor hp, int nhp, dspy_tensor out, dspy_tensor sumsq, int k,
                         dspy_tensor check, int nc, double max_norm) {
    CU_ENTER(be);
    const char *op = "clip_coef";
    if (nhp < 0 || k < 0 || nc < 0)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: nhp %d, k %d, nc %d must be >= 0", op, nhp, k, nc);
    CU_NEED(op, "hp", hp, DSPY_DTYPE_F32, (int64_t)nhp * DSPY_ADAMW_WORDS);
    CU_NEED(op, "out", out, DSPY_DTYPE_F32, 1);
    CU_NEED(op, "sumsq", sumsq, DSPY_DTYPE_F64, k);
    if (nc > 0) CU_NEED(op, "check", check, DSPY_DTYPE_F64, nc);
    return cu_launch(be, op, k_clip_coef, 1, 1, 0, (float *)hp.data, nhp, (float *)out.data,
                     (const double *)sumsq.data, k, (const double *)check.data, nc, max_norm);
}
