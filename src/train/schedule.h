/* train/schedule.h — learning-rate schedules as Hugging Face transformers defines them.
 *
 * The multiplier of the base learning rate at optimizer step `step` (0-based: the first
 * optimizer step uses step 0, as LambdaLR does before its first scheduler.step()):
 *   constant              1                                   (get_constant_schedule; warmup ignored)
 *   constant_with_warmup  step < W ? step / max(1, W) : 1     (get_constant_schedule_with_warmup)
 *   linear                step < W ? step / max(1, W)
 *                         : max(0, (N - step) / max(1, N - W))             (get_linear_schedule_with_warmup)
 *   cosine                step < W ? step / max(1, W)
 *                         : max(0, 0.5 (1 + cos(pi * 2 * 0.5 * (step - W) / max(1, N - W))))
 *                                                                          (get_cosine_schedule_with_warmup)
 * with N the total optimizer steps and W the warmup steps: warmup_steps when > 0, else
 * ceil(N * warmup_ratio) (TrainingArguments.get_warmup_steps). Computed in double as Python does.
 */
#ifndef DSPY_TRAIN_SCHEDULE_H
#define DSPY_TRAIN_SCHEDULE_H

#include <stdint.h>

#include "dspy/train.h"

/* W as TrainingArguments.get_warmup_steps computes it. */
int64_t dspy_lr_warmup_steps(int64_t total_steps, double warmup_ratio, int64_t warmup_steps);

/* The multiplier at 0-based optimizer step `step` (see above). */
double dspy_lr_lambda(dspy_lr_schedule s, int64_t step, int64_t warmup, int64_t total);

#endif
