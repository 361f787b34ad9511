/* train/backward.h — the numerical core of fine-tuning: a loaded model made trainable, the
 * forward + backward pass of one packed training sequence, LoRA, merging and export.
 *
 * What it does: copies the model's weights into fp32 buffers it owns (through
 * dspy_model_tensor_read_f32: the model itself is never changed), adds LoRA adapters when
 * asked (peft semantics: A (r, in) kaiming-uniform(a=sqrt(5)), B (out, r) zeros, scaling
 * alpha / r, dropout on the input of the LoRA path only, targets q/k/v/o/gate/up/down, never
 * lm_head; only A and B are trainable then), runs the training forward pass of one packed
 * sequence (several examples, causal within each, block-diagonal across them, positions
 * restarting per example) with the cross-entropy over labelled positions only, and
 * accumulates the gradients of every trainable parameter. Tied embeddings get both
 * contributions (input embedding and lm_head) in their one gradient. To run the trained
 * weights, export them (dspy_trainable_export) and load the directory.
 *
 * What it does not: data loading, packing, optimizer steps, schedules, gradient clipping,
 * checkpoints of optimizer state (train/ loop code does those on top of dspy_param). Steps run
 * on the CPU reference backend of kern/ops.h or, through the same op table, on CUDA
 * (dspy_trainable_new_on), F32 throughout.
 *
 * Follows transformers 5.17's LlamaForCausalLM / Qwen2ForCausalLM in float32 (eager
 * attention), peft's LoraLayer (Linear) and torch.nn.CrossEntropyLoss(reduction="sum",
 * ignore_index=-100). Compute goes through the kern/ops.h table.
 *
 * Thread safety: a trainable is used from one thread at a time. It only reads the model (at
 * construction), so engines may keep running on the model meanwhile.
 */
#ifndef DSPY_TRAIN_BACKWARD_H
#define DSPY_TRAIN_BACKWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/model.h"
#include "dspy/status.h"

/* LoRA on every linear layer of the decoder (peft `target_modules="all-linear"`: q_proj,
 * k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj of every layer; lm_head excluded). */
typedef struct dspy_lora_config {
    int32_t r;       /* rank, >= 1 */
    float alpha;     /* lora_alpha; the LoRA path is scaled by alpha / r */
    float dropout;   /* lora_dropout in [0, 1): applied to the LoRA path's input in training */
    bool enabled;    /* false behaves like passing NULL (full fine-tuning) */
} dspy_lora_config;

/* peft LoraConfig's defaults: r 8, alpha 8, dropout 0, enabled. */
dspy_lora_config dspy_lora_config_default(void);

/* One trainable tensor. `w` and `g` are fp32, row-major, `n` elements each, owned by the
 * trainable and valid until it is freed. The caller (optimizer, checkpoint code) may read and
 * write both: w is what the next step uses, g what the steps since the last zero_grad
 * accumulated. `name` is the Hugging Face name: the model's tensor name for full fine-tuning
 * (model.layers.0.self_attn.q_proj.weight, ..., lm_head.weight only when untied; biases
 * included when the config has them), peft's adapter name for LoRA
 * (base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight, ...lora_B.weight). */
typedef struct dspy_param {
    const char *name;
    float *w;
    float *g;
    float *dw, *dg;   /* the same tensors in the backend's memory (== w, g on the CPU); on a
                         device trainable w and g are host mirrors: see dspy_trainable_to_host */
    size_t n;
    int32_t shape[2]; /* (rows, cols) for matrices, (n, 1) for vectors */
    int ndim;         /* 1 or 2 */
} dspy_param;

/* One packed training sequence of T tokens: one or more examples laid end to end.
 * Token t attends to tokens t' <= t of its own example only (block-diagonal causal mask), and,
 * when prefix > 0, to the shared prefix [0, prefix) as well.
 *
 * Prefix-shared layout (prefix > 0; see train/share_prefix.h): the first example is exactly
 * tokens [0, prefix), a prompt prefix that every later example continues: each later example
 * holds only its continuation tokens, at positions prefix, prefix + 1, ..., and attends to the
 * prefix and to itself, so its logits and loss are those of the whole example (prefix +
 * continuation) run alone, while the prefix is computed once. The prefix's gradient is the sum
 * over the continuations (they all read its keys and values).
 *
 * LABELS ARE ALREADY SHIFTED: labels[t] is the token the model should predict after reading
 * ids[0..t] of its example, i.e. labels[t] = ids[t + 1] for a trained position, and -100 (no
 * loss) everywhere else, including the last token of every example. The loss at t is
 * cross_entropy(logits[t], labels[t]); logits are computed only for labelled rows. */
typedef struct dspy_train_seq {
    const int32_t *ids;    /* (T) token ids in [0, vocab_size) */
    const int32_t *pos;    /* (T) RoPE positions, restarting at 0 per example; NULL: t minus the
                              index of its example's first token (plus prefix for the
                              continuations of a prefix-shared sequence) */
    const int32_t *labels; /* (T) target ids in [0, vocab_size), or -100 */
    const int32_t *seg;    /* (T) example index per token, non-decreasing (each example is one
                              contiguous run); NULL: the whole sequence is one example (then
                              prefix must be 0) */
    int32_t T;             /* >= 1 */
    int32_t prefix;        /* 0, or the shared prefix's tokens: the first example is exactly
                              [0, prefix) (0 < prefix < T) */
} dspy_train_seq;

typedef struct dspy_trainable dspy_trainable;

/* Makes `m` trainable: fp32 copies of all its weights, gradients for the trainable ones, LoRA adapters when
 * `lora` is non-NULL and enabled (A drawn from a generator seeded with `seed`, B zero; the
 * numbers are not torch's — write A through dspy_param.w to use other ones). `seed` also seeds
 * the LoRA dropout. Gradients start at zero. Errors: DSPY_ERR_ARG (bad LoRA config),
 * DSPY_ERR_NOMEM. */
dspy_status dspy_trainable_new(dspy_model *m, const dspy_lora_config *lora, uint64_t seed, dspy_trainable **out);
/* The same on a chosen device: DSPY_DEVICE_CPU (the reference, as dspy_trainable_new) or
 * DSPY_DEVICE_CUDA. There, master weights, gradients (and LoRA adapters) are F32 arrays in
 * device memory, uploaded once; steps run on the device and the host reads back only each
 * step's loss and gradient norm. `mirrored` on the CPU runs that device code path on the CPU
 * backend (separate host mirrors, staged inputs, the optimizer through the op table), which
 * tests compare bit for bit with the plain CPU path; CUDA is always mirrored.
 * Errors: as dspy_trainable_new, DSPY_ERR_BACKEND (no such device). */
dspy_status dspy_trainable_new_on(dspy_model *m, const dspy_lora_config *lora, uint64_t seed, dspy_device dev,
                                  bool mirrored, dspy_trainable **out);
/* Mixed precision on a CUDA trainable (on = true): the linear layers and lm_head run as BF16
 * GEMMs on tensor cores (BF16 working copies of the weights, cast from the F32 master after
 * every optimizer step, and BF16 casts of their inputs and output gradients), with F32
 * accumulation and F32 outputs, gradients, master weights, AdamW moments, norms, softmax and
 * loss: torch autocast's scheme. Under LoRA the adapters' products run the same way (BF16 working
 * copies of A and B, BF16 dropped inputs and intermediates, F32 gradients and masters), and a
 * step's sequences are packed into larger passes with each sequence's own dropout masks. Off (the
 * default) is the F32 parity path. Call before the first step. Errors: DSPY_ERR_ARG on a CPU
 * trainable (the CPU reference computes in F32), DSPY_ERR_NOMEM, what the device reports. */
dspy_status dspy_trainable_set_bf16(dspy_trainable *t, bool on);
bool dspy_trainable_bf16(const dspy_trainable *t);

/* NULL-safe. Trained or merged weights are gone with the trainable: export them first. */
void dspy_trainable_free(dspy_trainable *t);

/* CPU: the steps use the fast kernels (kern/backend.h dspy_backend_cpu_use_fast: SIMD F32
 * products, deterministic, within F32 rounding of the reference). Before the first step. */
dspy_status dspy_trainable_use_fast_kernels(dspy_trainable *t);
/* The device the steps run on, and whether dspy_param.w/g are mirrors (see dspy_trainable_new_on). */
dspy_device dspy_trainable_device(const dspy_trainable *t);
bool dspy_trainable_mirrored(const dspy_trainable *t);
/* Mirrored trainables: copy weights, gradients and adapters device -> host mirror (before
 * reading dspy_param.w/g) or host mirror -> device (after writing them). Wait for the device.
 * No-ops otherwise. */
dspy_status dspy_trainable_to_host(dspy_trainable *t);
dspy_status dspy_trainable_to_device(dspy_trainable *t);
/* Plans the work buffers once for sequences of up to max_T tokens and up to max_seqs sequences
 * per optimizer step, so that steps allocate nothing (they grow them otherwise). */
dspy_status dspy_trainable_plan(dspy_trainable *t, int32_t max_T, int max_seqs);

/* The trainable tensors, in Hugging Face named_parameters() order (LoRA: peft's order, A then
 * B per module, modules q, k, v, o, gate, up, down per layer). i < nparams. */
size_t dspy_trainable_nparams(const dspy_trainable *t);
dspy_param *dspy_trainable_param(dspy_trainable *t, size_t i);
/* The parameter with that name, or NULL. */
dspy_param *dspy_trainable_param_find(dspy_trainable *t, const char *name);
/* Total elements over all trainable tensors. */
size_t dspy_trainable_numel(const dspy_trainable *t);

/* Sets every gradient to zero (on the device for a mirrored trainable). */
dspy_status dspy_trainable_zero_grad(dspy_trainable *t);

/* Forward and backward of one packed sequence in training mode (LoRA dropout on). Gradients
 * ACCUMULATE: g += grad_scale * d(sum of the labelled tokens' cross-entropy)/dw — pass
 * 1 / (labelled tokens in the optimizer step) for a mean over the step. Writes the summed loss
 * (nats, over labelled tokens, before grad_scale) and the number of labelled tokens; a
 * sequence without labels gives 0 and 0 and leaves the gradients as they were. Each call
 * advances the dropout RNG by one (see dspy_trainable_rng_get). Errors: DSPY_ERR_ARG (token,
 * label, seg or pos out of range, the message names the position), DSPY_ERR_CONTEXT (a position
 * at or beyond max_position_embeddings), DSPY_ERR_STATE (LoRA already merged), DSPY_ERR_NOMEM. */
dspy_status dspy_trainable_step(dspy_trainable *t, const dspy_train_seq *s, float grad_scale, double *loss_sum,
                                int64_t *n_labels);
/* The same forward pass in evaluation mode (no dropout, no gradients, RNG untouched). */
dspy_status dspy_trainable_loss(dspy_trainable *t, const dspy_train_seq *s, double *loss_sum, int64_t *n_labels);

/* Dropout RNG state: the number of training steps taken so far. Masks are a pure function of
 * (seed, state, layer, module, element), so saving the state and setting it back on resume
 * reproduces the following steps bit for bit. */
uint64_t dspy_trainable_rng_get(const dspy_trainable *t);
void dspy_trainable_rng_set(dspy_trainable *t, uint64_t state);

/* W += (alpha / r) B A for every adapted layer; from then on the trainable's loss and export
 * use the merged weights and step refuses with DSPY_ERR_STATE. DSPY_ERR_STATE without LoRA or when
 * already merged. */
dspy_status dspy_trainable_merge_lora(dspy_trainable *t);
/* Whether LoRA is on (and whether it has been merged). */
bool dspy_trainable_has_lora(const dspy_trainable *t);
bool dspy_trainable_lora_merged(const dspy_trainable *t);

/* Writes a Hugging Face model directory to `out_dir` (created if needed): config.json,
 * generation_config.json, model.safetensors with the current weights (an unmerged LoRA is
 * merged on the fly into what is written; the trainable is not changed), and copies of the
 * tokenizer files found in the source model directory (tokenizer.json, tokenizer_config.json,
 * special_tokens_map.json, chat_template.jinja). dtype "f32", "bf16" or NULL (the source
 * config's dtype). Tied models write model.embed_tokens.weight only, as save_pretrained.
 * Errors: DSPY_ERR_ARG (dtype), DSPY_ERR_IO. */
dspy_status dspy_trainable_export(dspy_trainable *t, const char *out_dir, const char *dtype);

#endif
