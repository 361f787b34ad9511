/* adamw.c — the fp32 reference of the fused AdamW op (kern/ops.h adamw).
 *
 * The same operations in the same order as train/optim.c's dspy_adamw_update, with the step
 * constants read from hp (dspy_adamw_pack computes them as optim.c does), so the two agree bit
 * for bit; with gscale the gradient is multiplied first, as dspy_clip_grad_norm's in-place
 * scaling would. Elements are independent: OpenMP over them.
 */
#include "kern/cpu/cpu.h"

dspy_status dspy_cpu_adamw(dspy_backend *be, dspy_tensor w_t, dspy_tensor g_t, dspy_tensor m_t, dspy_tensor v_t,
                      dspy_tensor hp_t) {
    cpu_enter(be);
    const char *op = "adamw";
    CPU_NEED(op, "w", w_t, DSPY_DTYPE_F32, 0);
    CPU_NEED(op, "g", g_t, DSPY_DTYPE_F32, w_t.n);
    CPU_NEED(op, "m", m_t, DSPY_DTYPE_F32, w_t.n);
    CPU_NEED(op, "v", v_t, DSPY_DTYPE_F32, w_t.n);
    CPU_NEED(op, "hp", hp_t, DSPY_DTYPE_F32, DSPY_ADAMW_WORDS);
    const float *hp = hp_t.data, *g = g_t.data;
    const float decay = hp[DSPY_ADAMW_DECAY], w1 = hp[DSPY_ADAMW_W1], b2 = hp[DSPY_ADAMW_B2];
    const float w2 = hp[DSPY_ADAMW_W2], bc2_sqrt = hp[DSPY_ADAMW_BC2_SQRT], eps = hp[DSPY_ADAMW_EPS];
    const float neg_step = hp[DSPY_ADAMW_NEG_STEP], gscale = hp[DSPY_ADAMW_GSCALE];
    float *w = w_t.data, *m = m_t.data, *v = v_t.data;
    const int64_t n = w_t.n;
#pragma omp parallel for schedule(static) if (n > (1L << 16))
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * gscale, wi = w[i] * decay;
        float mi = m[i] + w1 * (gi - m[i]);
        float vi = v[i] * b2;
        vi = vi + w2 * gi * gi;
        float den = sqrtf(vi) / bc2_sqrt + eps;
        wi = wi + neg_step * mi / den;
        m[i] = mi;
        v[i] = vi;
        w[i] = wi;
    }
    return DSPY_OK;
}
