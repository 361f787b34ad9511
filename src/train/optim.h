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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/status.h"
#include "train/backward.h"

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

/* ---- the optimizer of a trainable: AdamW state and one whole optimizer step ---------------- */

/* exp_avg / exp_avg_sq for every trainable tensor of a dspy_trainable, and the step count. */
typedef struct dspy_optimizer dspy_optimizer;

/* Zeroed moments for every parameter of `t` (which must outlive the optimizer).
 * DSPY_ERR_NOMEM. *out NULL on failure. */
dspy_status dspy_optimizer_new(dspy_trainable *t, const dspy_adamw_hparams *h, dspy_optimizer **out);
/* NULL-safe. */
void dspy_optimizer_free(dspy_optimizer *o);
/* The moments of parameter i (dspy_trainable_param(t, i)->n floats each), read-write. */
float *dspy_optimizer_exp_avg(dspy_optimizer *o, size_t i);
float *dspy_optimizer_exp_avg_sq(dspy_optimizer *o, size_t i);
/* Optimizer steps taken (torch's per-parameter "step", the same for all here). */
int64_t dspy_optimizer_steps(const dspy_optimizer *o);
/* Whether the last step kept its linear weight gradients in BF16 (a mixed-precision step of one
 * pass on one rank; DSPY_TRAIN_WGRAD16=0 never). */
bool dspy_optimizer_wgrad16(const dspy_optimizer *o);
/* A mirrored (device) trainable's optimizer keeps the moments on the device; exp_avg/exp_avg_sq
 * are host mirrors: copy device -> mirror before reading them, mirror -> device after writing
 * them (both wait; no-ops otherwise). */
dspy_status dspy_optimizer_to_host(dspy_optimizer *o);
dspy_status dspy_optimizer_to_device(dspy_optimizer *o);
void dspy_optimizer_set_steps(dspy_optimizer *o, int64_t steps);

/* Data parallel (train/dist.h; d must outlive the optimizer, NULL = one rank): each rank's
 * dspy_optimizer_train_step runs only its share of the step's sequences (see
 * dspy_optimizer_local_grads), then sums the gradients and loss sums over the ranks on the
 * device before the norm, clipping and update. Every rank starts from the same weights and
 * moments and sees the same sums (NCCL's all-reduce gives every rank the same bits), so every
 * rank applies the same update and they stay identical without being compared. The result is
 * the single-GPU step's up to the order of the F32 gradient sums. Mirrored trainables only. */
typedef struct dspy_dist dspy_dist;
dspy_status dspy_optimizer_set_dist(dspy_optimizer *o, dspy_dist *d);
/* With several ranks the gradients of each decoder layer are all-reduced as soon as the last
 * pass's backward is done with that layer (on a side stream, overlapping the layers below), when
 * the layer's gradient tensors lie end to end: the run of layer `layer` (*run, returned length;
 * 0 and NULL when the layers' gradients are not laid out so, and every gradient is all-reduced
 * after the backward instead). DSPY_ERR_NOMEM from set_dist. */
size_t dspy_optimizer_layer_run(dspy_optimizer *o, int layer, float **run);

/* Rank `rank` of `world`'s share of one step, without the sums over ranks: zeroes the
 * gradients, then runs the sequences s with s % world == rank (packed as a whole step's are)
 * with grad_scale 1/N, N the labelled tokens of the WHOLE step, so the ranks' gradients add up
 * to the whole step's; their loss sums go to slot s, the other slots hold zeros. A mirrored
 * trainable only (DSPY_ERR_STATE); DSPY_ERR_ARG for a rank outside [0, world). The
 * decomposition dspy_optimizer_train_step relies on, exposed so it can be checked on one
 * machine. */
dspy_status dspy_optimizer_local_grads(dspy_optimizer *o, const dspy_train_seq *seqs, size_t k, int64_t N, int rank,
                                       int world);

typedef struct dspy_step_stats {
    double loss;      /* summed token cross-entropy / labelled tokens */
    float grad_norm;  /* global norm before clipping */
    int64_t n_labels; /* labelled tokens of the step */
    int64_t tokens;   /* all tokens of the step's sequences */
} dspy_step_stats;

/* One optimizer step over the k sequences of an accumulated batch (every micro-batch of it):
 * counts the labelled tokens N of all k, zeroes the gradients, accumulates each sequence's
 * gradients with grad_scale 1/N (so the loss is the mean over the batch's labelled tokens),
 * clips the global norm to max_grad_norm (<= 0: no clipping), then one AdamW update with
 * learning rate `lr`; weight decay applies to the 2-D tensors only (HF Trainer's
 * get_decay_parameter_names leaves out biases and norm weights). Errors: DSPY_ERR_ARG (no labelled token in the batch, or what
 * dspy_trainable_step reports), DSPY_ERR_BACKEND (loss or gradient norm not finite: the weights
 * are left as they were), DSPY_ERR_NOMEM. */
dspy_status dspy_optimizer_train_step(dspy_optimizer *o, const dspy_train_seq *seqs, size_t k, double lr,
                                      double max_grad_norm, dspy_step_stats *stats);

#endif
