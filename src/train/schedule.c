/* schedule.c — learning-rate multipliers of transformers' schedules (see train/schedule.h).
 *
 * Follows transformers/optimization.py (get_constant_schedule, get_constant_schedule_with_warmup,
 * get_linear_schedule_with_warmup, get_cosine_schedule_with_warmup with num_cycles 0.5) and
 * TrainingArguments.get_warmup_steps.
 */
#include "train/schedule.h"

#include <math.h>

int64_t dspy_lr_warmup_steps(int64_t total_steps, double warmup_ratio, int64_t warmup_steps) {
    if (warmup_steps > 0) return warmup_steps;
    if (!(warmup_ratio > 0.0)) return 0;
    return (int64_t)ceil((double)total_steps * warmup_ratio);
}

static double max1(int64_t x) { return (double)(x > 1 ? x : 1); }

double dspy_lr_lambda(dspy_lr_schedule s, int64_t step, int64_t warmup, int64_t total) {
    switch (s) {
    case DSPY_LR_CONSTANT: return 1.0;
    case DSPY_LR_CONSTANT_WITH_WARMUP:
        return step < warmup ? (double)step / max1(warmup) : 1.0;
    case DSPY_LR_LINEAR: {
        if (step < warmup) return (double)step / max1(warmup);
        double f = (double)(total - step) / max1(total - warmup);
        return f > 0.0 ? f : 0.0;
    }
    case DSPY_LR_COSINE: {
        if (step < warmup) return (double)step / max1(warmup);
        double progress = (double)(step - warmup) / max1(total - warmup);
        const double pi = 3.141592653589793; /* math.pi */
        double f = 0.5 * (1.0 + cos(pi * 0.5 * 2.0 * progress));
        return f > 0.0 ? f : 0.0;
    }
    }
    return 1.0;
}
