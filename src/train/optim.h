/* train/optim.h — AdamW and gradient clipping, as PyTorch computes them (private to src/train).
 *
 * dspy_adamw_update is torch.optim.AdamW's single-tensor path (torch 2.x `_single_tensor_adam`
 * with decoupled weight decay, no amsgrad, no maximize), element by element in fp32 with the
 * scalars computed in double and rounded to float where torch rounds them:
 *     w  *= (float)(1 - lr * weight_decay)                     (skipped when weight_decay == 0)
 *     m  += (float)(1 - beta1) * (g - m)                       (exp_avg.lerp_(grad, 1 - beta1))
 *     v   = v * (float)beta2 + ((float)(1 - beta2) * g) * g    (mul_ then addcmul_)
 *     bc1 = 1 - beta1^step, bc2 = 1 - beta2^step               (double, step counts from 1)
 *     den = sqrt(v) / (float)sqrt(bc2) + (float)eps
 *     w  += ((float)(-lr / bc1) * m) / den                     (addcdiv_)
 * dspy_clip_grad_norm is torch.nn.utils.clip_grad_norm_ (norm_type 2): total = the 2-norm of
 * the per-tensor 2-norms, coef = max_norm / (total + 1e-6) clamped to at most 1, every gradient
 * multiplied by coef. The norms are summed in double here (torch sums in float with its own
 * order), so the total agrees with torch's to float rounding, not bit for bit.
 *
 * Thread safety: plain functions over caller memory; OpenMP inside over elements.
 */
#ifndef DSPY_TRAIN_OPTIM_H
#define DSPY_TRAIN_OPTIM_H

#include <stddef.h>
#include <stdint.h>

typedef struct dspy_adamw_hparams {
    double beta1;        /* 0.9 */
    double beta2;        /* 0.999 */
    double eps;          /* 1e-8 */
    double weight_decay; /* 0 (HF Trainer's default; torch's own default is 0.01) */
} dspy_adamw_hparams;

/* beta1 0.9, beta2 0.999, eps 1e-8, weight_decay 0. */
dspy_adamw_hparams dspy_adamw_hparams_default(void);

/* One AdamW step on a tensor of n elements: w (n) parameters, g (n) gradients, m/v (n) the
 * first/second moment buffers (zeros before the first step), step the step number after this
 * update (1 for the first), lr this step's learning rate. */
void dspy_adamw_update(float *w, const float *g, float *m, float *v, size_t n, int64_t step, double lr,
                       const dspy_adamw_hparams *h);

/* The global 2-norm of k gradient tensors (grads[i] has ns[i] elements), rounded to float as
 * torch returns it. */
float dspy_grad_norm(float *const *grads, const size_t *ns, size_t k);

/* clip_grad_norm_: computes the global norm (returned, before clipping) and, when max_norm > 0,
 * scales every gradient by min(1, max_norm / (norm + 1e-6)) (computed in float). max_norm <= 0
 * only measures. */
float dspy_clip_grad_norm(float *const *grads, const size_t *ns, size_t k, double max_norm);

#endif
