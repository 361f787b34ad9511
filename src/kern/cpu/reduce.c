/* reduce.c — the CPU reference of the trainer's reductions (kern/ops.h sum_rows, grad_sumsq,
 * clip_coef): the loss sum, per-tensor sums of squares and torch's clip_grad_norm_ coefficient.
 *
 * The orders are train/backward.c's and train/optim.c's host loops (index order; chunks of
 * DSPY_SUMSQ_CHUNK added in chunk order), so a trainer that runs its step through these ops on
 * the CPU gets the same bits as the host code. Chunks are summed by OpenMP in batches whose
 * partial sums live on the stack (an op never allocates), then added in chunk order.
 */
#include <math.h>

#include "kern/cpu/cpu.h"

dspy_status dspy_cpu_sum_rows(dspy_backend *be, dspy_tensor out, int slot, dspy_tensor x) {
    cpu_enter(be);
    const char *op = "sum_rows";
    if (slot < 0) return dspy_fail(DSPY_ERR_ARG, "cpu %s: slot is %d; it must be >= 0", op, slot);
    CPU_NEED(op, "out", out, DSPY_DTYPE_F64, (int64_t)slot + 1);
    CPU_NEED(op, "x", x, DSPY_DTYPE_F32, 0);
    const float *v = x.data;
    double s = 0;
    for (int64_t i = 0; i < x.n; i++) s += v[i];
    ((double *)out.data)[slot] = s;
    return DSPY_OK;
}

enum { BATCH = 64 }; /* chunks summed in parallel at once */

dspy_status dspy_cpu_grad_sumsq(dspy_backend *be, dspy_tensor out, int slot, dspy_tensor x) {
    cpu_enter(be);
    const char *op = "grad_sumsq";
    if (slot < 0) return dspy_fail(DSPY_ERR_ARG, "cpu %s: slot is %d; it must be >= 0", op, slot);
    CPU_NEED(op, "out", out, DSPY_DTYPE_F64, (int64_t)slot + 1);
    CPU_NEED(op, "x", x, DSPY_DTYPE_F32, 0);
    const float *g = x.data;
    const int64_t n = x.n, nchunks = (n + DSPY_SUMSQ_CHUNK - 1) / DSPY_SUMSQ_CHUNK;
    double total = 0.0;
    for (int64_t c0 = 0; c0 < nchunks; c0 += BATCH) {
        double part[BATCH];
        int nb = nchunks - c0 < BATCH ? (int)(nchunks - c0) : BATCH;
#pragma omp parallel for schedule(static) if (nb > 1)
        for (int b = 0; b < nb; b++) {
            int64_t s0 = (c0 + b) * (int64_t)DSPY_SUMSQ_CHUNK;
            int64_t e = s0 + DSPY_SUMSQ_CHUNK < n ? s0 + DSPY_SUMSQ_CHUNK : n;
            double s = 0.0;
            for (int64_t i = s0; i < e; i++) s += (double)g[i] * (double)g[i];
            part[b] = s;
        }
        for (int b = 0; b < nb; b++) total += part[b];
    }
    ((double *)out.data)[slot] = total;
    return DSPY_OK;
}

dspy_status dspy_cpu_clip_coef(dspy_backend *be, dspy_tensor hp_t, int nhp, dspy_tensor out, dspy_tensor sumsq, int k,
                          dspy_tensor check, int nc, double max_norm) {
    cpu_enter(be);
    const char *op = "clip_coef";
    if (nhp < 0 || k < 0 || nc < 0)
        return dspy_fail(DSPY_ERR_ARG, "cpu %s: nhp %d, k %d, nc %d must be >= 0", op, nhp, k, nc);
    CPU_NEED(op, "hp", hp_t, DSPY_DTYPE_F32, (int64_t)nhp * DSPY_ADAMW_WORDS);
    CPU_NEED(op, "out", out, DSPY_DTYPE_F32, 1);
    CPU_NEED(op, "sumsq", sumsq, DSPY_DTYPE_F64, k);
    if (nc > 0) CPU_NEED(op, "check", check, DSPY_DTYPE_F64, nc);
    const double *sq = sumsq.data, *ck = check.data;
    double total = 0.0;
    for (int i = 0; i < k; i++) {
        float tn = (float)sqrt(sq[i]); /* torch: each tensor's norm is a float */
        total += (double)tn * (double)tn;
    }
    float norm = (float)sqrt(total), coef = 1.0f;
    bool finite = isfinite(norm);
    for (int i = 0; i < nc; i++) finite = finite && isfinite(ck[i]);
    if (!finite) {
        coef = NAN;
    } else if (max_norm > 0.0) {
        float c = (float)max_norm / (norm + 1e-6f);
        if (c < 1.0f) coef = c;
    }
    ((float *)out.data)[0] = norm;
    float *hp = hp_t.data;
    for (int r = 0; r < nhp; r++) hp[(size_t)r * DSPY_ADAMW_WORDS + DSPY_ADAMW_GSCALE] = coef;
    return DSPY_OK;
}
