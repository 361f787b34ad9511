/* adamw.c — the fp32 reference of the fused AdamW op (kern/ops.h adamw).
 *
 * dspy_adamw_apply (kern/ops.h), the loop train/optim.c's dspy_adamw_update runs too, with the
 * step constants read from hp, so the two agree bit for bit; with gscale the gradient is
 * multiplied first, as dspy_clip_grad_norm's in-place scaling would.
 */
#include <math.h>

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
    const float *hp = hp_t.data;
    if (isnan(hp[DSPY_ADAMW_GSCALE])) return DSPY_OK; /* clip_coef's "skip this step" */
    dspy_adamw_apply(hp, w_t.data, g_t.data, m_t.data, v_t.data, w_t.n);
    return DSPY_OK;
}
