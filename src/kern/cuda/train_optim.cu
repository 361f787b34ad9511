/* train_optim.cu — the fused AdamW op on CUDA (kern/ops.h adamw, and adamw_bf16: the same pass
 * also writes the BF16 working copy of the updated weights).
 *
 * One grid-stride pass over the parameter: each element reads w, g, m, v once and writes w, m,
 * v once. Every operation uses the explicitly rounded intrinsics (__fmul_rn, __fadd_rn, ...),
 * which the compiler never contracts into fused multiply-adds, so the result is bit-identical
 * to the CPU reference (kern/cpu/adamw.c) and to train/optim.c's dspy_adamw_update. The step
 * constants are read from device memory (hp), so a captured step graph replays with the
 * current learning rate and clip coefficient.
 */
#include "kern/cuda/train.cuh"

/* w16, when not NULL, gets the updated w rounded to BF16 (the mixed-precision trainer's working
 * copy, written in the same pass instead of a separate cast that reads w again). G: the gradient
 * F32, or BF16 (a single-pass step's weight gradient; widened exactly). */
static __device__ __forceinline__ float ad_ld(const float *g, int64_t i) { return g[i]; }
static __device__ __forceinline__ float ad_ld(const bf16 *g, int64_t i) { return bf2f(g[i]); }

template <typename G>
static __global__ void k_adamw(float *w, const G *g, float *m, float *v, const float *hp, bf16 *w16, int64_t n) {
    griddep_wait();
    const float decay = hp[DSPY_ADAMW_DECAY], w1 = hp[DSPY_ADAMW_W1], b2 = hp[DSPY_ADAMW_B2];
    const float w2 = hp[DSPY_ADAMW_W2], bc2_sqrt = hp[DSPY_ADAMW_BC2_SQRT], eps = hp[DSPY_ADAMW_EPS];
    const float neg_step = hp[DSPY_ADAMW_NEG_STEP], gscale = hp[DSPY_ADAMW_GSCALE];
    if (isnan(gscale)) return; /* clip_coef's "skip this step" */
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float gi = __fmul_rn(ad_ld(g, i), gscale), mo = m[i];
        const float wi = __fmul_rn(w[i], decay);
        const float mi = __fadd_rn(mo, __fmul_rn(w1, __fsub_rn(gi, mo)));
        const float vi = __fadd_rn(__fmul_rn(v[i], b2), __fmul_rn(__fmul_rn(w2, gi), gi));
        const float den = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
        const float wn = __fadd_rn(wi, __fdiv_rn(__fmul_rn(neg_step, mi), den));
        m[i] = mi;
        v[i] = vi;
        w[i] = wn;
        if (w16) w16[i] = f2bf(wn);
    }
}

static dspy_status adamw_run(dspy_backend *be, const char *op, dspy_tensor w, dspy_tensor g, dspy_tensor m,
                             dspy_tensor v, dspy_tensor hp, bf16 *w16) {
    CU_NEED(op, "w", w, DSPY_DTYPE_F32, 0);
    CU_NEED2(op, "g", g, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, w.n);
    CU_NEED(op, "m", m, DSPY_DTYPE_F32, w.n);
    CU_NEED(op, "v", v, DSPY_DTYPE_F32, w.n);
    CU_NEED(op, "hp", hp, DSPY_DTYPE_F32, DSPY_ADAMW_WORDS);
    if (w.n == 0) return DSPY_OK;
    if (g.dtype == DSPY_DTYPE_BF16)
        return cu_launch(be, op, k_adamw<bf16>, tr_grid(w.n), 256, 0, (float *)w.data, (const bf16 *)g.data,
                         (float *)m.data, (float *)v.data, (const float *)hp.data, w16, w.n);
    return cu_launch(be, op, k_adamw<float>, tr_grid(w.n), 256, 0, (float *)w.data, (const float *)g.data,
                     (float *)m.data, (float *)v.data, (const float *)hp.data, w16, w.n);
}

dspy_status dspy_cu_adamw(dspy_backend *be, dspy_tensor w, dspy_tensor g, dspy_tensor m, dspy_tensor v, dspy_tensor hp) {
    CU_ENTER(be);
    return adamw_run(be, "adamw", w, g, m, v, hp, NULL);
}

dspy_status dspy_cu_adamw_bf16(dspy_backend *be, dspy_tensor w, dspy_tensor g, dspy_tensor m, dspy_tensor v,
                               dspy_tensor hp, dspy_tensor w16) {
    CU_ENTER(be);
    CU_NEED("adamw_bf16", "w16", w16, DSPY_DTYPE_BF16, w.n);
    return adamw_run(be, "adamw_bf16", w, g, m, v, hp, (bf16 *)w16.data);
}
