/* dspy/train.h — supervised fine-tuning of a local model: DSPy's train_sft_locally in C.
 *
 * dspy_finetune reads a chat JSONL file (DSPy's format_finetune_data lines), renders and labels
 * it (include/dspy/sft_data.h: loss on assistant tokens only), packs it, and trains the model of
 * a Hugging Face directory with AdamW, gradient accumulation, clipping and an LR schedule, using
 * DSPy's train_kwargs names and defaults (dspy_behaviour.md §10.5-10.6, conformance CC-30 item 5,
 * project decisions §16.2-16.4). It writes an HF-layout directory that the engine serves.
 *
 * The loop, exactly:
 *   - epoch e (0-based) trains the usable examples in the order random.Random(seed + e).shuffle
 *     gives (Python-compatible), packed next-fit into sequences of at most max_seq_length tokens
 *     (packing false: one example per sequence);
 *   - a micro-batch is per_device_train_batch_size sequences, an optimizer step accumulates
 *     gradient_accumulation_steps micro-batches, i.e. B*G sequences; the last step of an epoch
 *     takes what is left (as HF's Trainer does), so an epoch has ceil(sequences / (B*G)) steps;
 *   - the loss of a step is the sum of the token cross-entropies over all its labelled tokens
 *     divided by their count (normalised by the labelled tokens of the whole accumulated batch,
 *     as transformers >= 4.46 does with num_items_in_batch), so every labelled token weighs the
 *     same whatever sequence or micro-batch it is in;
 *   - then clip_grad_norm_(max_grad_norm) (the logged grad_norm is the norm before clipping),
 *     then AdamW (torch.optim.AdamW formulas) with lr = learning_rate * schedule(step), the
 *     schedule taken at the 0-based step as LambdaLR does; weight_decay applies to the 2-D
 *     tensors (linear weights, embeddings), not to biases and norm weights, as HF's Trainer
 *     groups them;
 *   - max_steps > 0 stops after that many optimizer steps (continuing into further epochs if
 *     needed, as HF does), else num_train_epochs epochs are run.
 *
 * Files in the output directory:
 *   train.jsonl     one JSON object per optimizer step: {"step", "epoch", "loss", "grad_norm",
 *                   "lr", "tokens", "labels", "tokens_per_s", "elapsed"} (epoch fractional, as HF
 *                   logs it; tokens = all tokens of the step's sequences; elapsed seconds since
 *                   the start of training, resumed runs continuing the count)
 *   checkpoint-N/   every save_steps optimizer steps, at the end of training, and at the end of
 *                   an epoch when epoch_save_after_s of training have passed since the last one:
 *                   model.safetensors (the trainable parameters, fp32: the whole model for full
 *                   fine-tuning, so with config.json next to it transformers loads it; the LoRA
 *                   A/B matrices with use_peft), optimizer.safetensors (AdamW's exp_avg and
 *                   exp_avg_sq per parameter), trainer_state.json (step counters, data position,
 *                   RNG states, the settings and data hash it belongs to). Written to a temporary
 *                   directory and renamed, so a checkpoint-N directory is always complete; only
 *                   the newest save_total_limit are kept.
 *   config.json, generation_config.json, model.safetensors (the input's dtype), tokenizer.json,
 *   tokenizer_config.json, special_tokens_map.json (when the input has it), chat_template.jinja
 *                   the fine-tuned model, LoRA merged into the base weights: `dspy generate`, the
 *                   server and transformers load it.
 * resume = true continues from the newest complete checkpoint-N in the output directory and gives
 * bit-for-bit the model an uninterrupted run gives (same settings, data and thread count).
 *
 * Precision: computation is fp32 on the CPU whatever `bf16` says (bf16 is accepted and recorded).
 * On CUDA, bf16 = true (the default) runs every GEMM in BF16 on tensor cores with F32
 * accumulation over F32 master weights and AdamW state (torch autocast's scheme); false keeps
 * F32 throughout. The output keeps the input model's dtype.
 *
 * Thread safety: dspy_finetune uses the calling thread (OpenMP inside); run one per process.
 */
#ifndef DSPY_TRAIN_H
#define DSPY_TRAIN_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* lr_scheduler_type (transformers' SchedulerType names). */
typedef enum dspy_lr_schedule {
    DSPY_LR_CONSTANT = 0,        /* "constant": flat, warmup ignored (DSPy's setting, §16.3) */
    DSPY_LR_CONSTANT_WITH_WARMUP, /* "constant_with_warmup" */
    DSPY_LR_LINEAR,              /* "linear": warmup then linear decay to 0 */
    DSPY_LR_COSINE               /* "cosine": warmup then half a cosine to 0 */
} dspy_lr_schedule;

/* "constant", "constant_with_warmup", "linear", "cosine" ("?" otherwise). */
DSPY_API const char *dspy_lr_schedule_name(dspy_lr_schedule s);

typedef struct dspy_train_params {
    /* DSPy's LocalProvider train_kwargs, with its defaults */
    int32_t num_train_epochs;            /* 5 */
    int32_t per_device_train_batch_size; /* 1 (packed sequences per micro-batch) */
    int32_t gradient_accumulation_steps; /* 8 */
    double learning_rate;                /* 1e-5 */
    int32_t max_seq_length;              /* 4096 (DSPy passes None; project decision §16.4) */
    bool packing;                        /* true */
    bool bf16;                           /* true; CPU computes in fp32 (see above); CUDA runs
                                            the GEMMs in BF16 over F32 master weights (false:
                                            F32 throughout, the parity path) */
    bool use_peft;                       /* false: full fine-tuning; true: LoRA, merged at the end */
    const char *output_dir;              /* NULL: the out_dir argument of dspy_finetune (borrowed) */
    const char *device;                  /* NULL or "cpu" (DSPy's None), "cuda", "cuda:N" or "auto"
                                            (CUDA when a GPU is visible, else the CPU); CUDA
                                            trains on the device, precision per bf16
                                            (checkpoints, resume and export are the same files) */
    /* the SFTConfig / TrainingArguments DSPy sets or inherits */
    dspy_lr_schedule lr_scheduler_type;  /* constant */
    double warmup_ratio;                 /* 0.03 (ignored by constant) */
    int32_t warmup_steps;                /* 0: use warmup_ratio */
    double weight_decay;                 /* 0 */
    double max_grad_norm;                /* 2.0; <= 0 turns clipping off */
    double adam_beta1;                   /* 0.9 */
    double adam_beta2;                   /* 0.999 */
    double adam_epsilon;                 /* 1e-8 */
    uint64_t seed;                       /* 42: data order and LoRA init/dropout */
    int32_t save_steps;                  /* 10000 (DSPy's SFTConfig) */
    int32_t save_total_limit;            /* 1: checkpoints kept (0 = all) */
    int64_t max_steps;                   /* -1: run num_train_epochs */
    int32_t lora_r;                      /* 32 */
    double lora_alpha;                   /* 64 */
    double lora_dropout;                 /* 0.05 */
    /* dspy.c's own */
    bool resume;                         /* false; true: continue from the newest checkpoint */
    double epoch_save_after_s;           /* 300: an epoch end writes a checkpoint only when at least
                                            this many seconds of training have passed since the last
                                            checkpoint (or the start); 0: at every epoch end. Why: a
                                            1B model's checkpoint (F32 weights + AdamW state) is
                                            ~15 GB; the tutorial's 5 epochs take ~1 minute on an
                                            H200 and their 5 epoch-end checkpoints measured ~80 s
                                            more, while an hours-long CPU run still gets one per
                                            epoch */
    int32_t n_threads;                   /* OpenMP threads; 0 = the OpenMP default */
    const char *cpu_kernels;             /* CPU steps: NULL or "reference" (the fp32 parity kernels)
                                            or "fast" (SIMD F32 products: deterministic for any
                                            thread count, within F32 rounding of the reference,
                                            not bit-equal to it); dspy/backend.h (borrowed) */
    const char *chat_date;               /* Llama 3 "Today Date:"; NULL = "26 Jul 2024" (borrowed) */
    bool share_prefix;                   /* true: prefix-shared steps — when the examples of an
                                            optimizer step begin with the same >= 64 tokens (a
                                            system prompt) before any labelled token, that prefix
                                            is computed once per packed sequence and each example
                                            continues it; losses and gradients are the unshared
                                            ones up to float rounding. false: every example runs
                                            whole */
} dspy_train_params;

/* The defaults above. */
DSPY_API dspy_train_params dspy_train_params_default(void);

/* Sets one train_kwarg from its text, as DSPy's train_kwargs dict or a CLI flag gives it. Keys
 * are the names above; dashes are read as underscores ("num-train-epochs"). Values: integers,
 * floats ("1e-5"), booleans (true/false/True/False/1/0/yes/no), "None"/"null" for the default of
 * max_seq_length, output_dir, device and chat_date. String values are borrowed, not copied: keep
 * them alive while `p` is used. Errors: DSPY_ERR_ARG naming the key and what it accepts
 * (unknown key: the list of known ones); `p` is unchanged then. */
DSPY_API dspy_status dspy_train_params_set(dspy_train_params *p, const char *key, const char *value);

/* Checks ranges (epochs >= 1, batch sizes >= 1, lr > 0, max_seq_length >= 2, 0 <= betas < 1,
 * eps > 0, weight_decay >= 0, 0 <= warmup_ratio < 1, 0 <= lora_dropout < 1, lora_r >= 1,
 * save_steps >= 1, device cpu/auto/cuda/cuda:N by form). DSPY_ERR_ARG naming the key. */
DSPY_API dspy_status dspy_train_params_validate(const dspy_train_params *p);

/* What a progress callback receives. */
typedef enum dspy_train_event {
    DSPY_TRAIN_START = 0, /* before the first step: total_steps known, step = the resumed step */
    DSPY_TRAIN_STEP,      /* after each optimizer step */
    DSPY_TRAIN_SAVE,      /* a checkpoint was written: checkpoint names it */
    DSPY_TRAIN_END        /* the model is written */
} dspy_train_event;

typedef struct dspy_train_progress {
    dspy_train_event event;
    int64_t step;          /* optimizer steps done */
    int64_t total_steps;
    double epoch;          /* fractional epoch (HF's) */
    int32_t num_epochs;    /* epochs the run covers */
    double loss;           /* this step's loss (STEP) */
    double grad_norm;      /* before clipping (STEP) */
    double lr;             /* the learning rate this step used (STEP) */
    int64_t tokens;        /* tokens of this step (STEP) */
    double tokens_per_s;   /* this step's throughput (STEP) */
    double elapsed_s;      /* since training started (resumed runs: continued) */
    double eta_s;          /* estimated seconds left; < 0 when unknown */
    const char *checkpoint; /* SAVE: the checkpoint directory; END: the output directory */
} dspy_train_progress;

/* Called on the training thread; must not call back into the trainer. */
typedef void (*dspy_train_progress_fn)(void *ud, const dspy_train_progress *p);

typedef struct dspy_train_result {
    int64_t steps;            /* optimizer steps of the whole training (resumed ones included) */
    int64_t resumed_from;     /* the checkpoint step resumed from, 0 for a fresh run */
    int64_t steps_run;        /* optimizer steps this call ran */
    double first_loss;        /* loss of this call's first step (NaN when it ran none) */
    double final_loss;        /* loss of the last step (NaN when it ran none) */
    double final_grad_norm;
    int64_t tokens;           /* tokens trained on by this call */
    double train_seconds;     /* wall time of this call's steps */
    size_t n_examples;        /* usable examples */
    size_t n_skipped;         /* lines skipped (each reported through dspy_log at WARN) */
    int32_t num_epochs;
    int64_t trainable_params; /* parameters updated (LoRA: the adapters only) */
} dspy_train_result;

/* Fine-tunes the model in `model_dir` on `data_path` and writes the result to `out_dir` (NULL:
 * p->output_dir). `p` NULL means the defaults. `progress` may be NULL. `result` may be NULL.
 * Skipped lines are logged (dspy_log WARN, one line each: "data.jsonl: line 7: too_long: ...").
 * Errors: DSPY_ERR_ARG (bad params, no output directory, no usable example, resume without a
 * checkpoint or with a checkpoint of other settings or data), DSPY_ERR_NOTFOUND/IO/FORMAT (model,
 * data, checkpoint files), DSPY_ERR_NOMEM, DSPY_ERR_BACKEND (loss or gradients not finite: the
 * message names the step; lower learning_rate). */
DSPY_API dspy_status dspy_finetune(const char *model_dir, const char *data_path, const char *out_dir,
                                   const dspy_train_params *p, dspy_train_progress_fn progress, void *ud,
                                   dspy_train_result *result);

/* A ready progress callback drawing a progress.h bar: pass dspy_train_bar_update as `progress`
 * and a dspy_train_bar (zero it and set `out`, e.g. stderr) as `ud`. The bar counts optimizer
 * steps with tqdm's ETA and shows "epoch E/N loss L lr X T tok/s" (out NULL: no bar). The bar is
 * closed on END; call dspy_train_bar_close after a failed run. */
typedef struct dspy_train_bar {
    FILE *out;
    struct dspy_progress *bar; /* private */
    int64_t shown;             /* private */
} dspy_train_bar;
DSPY_API void dspy_train_bar_update(void *bar, const dspy_train_progress *p);
/* Closes a bar left open (NULL-safe, idempotent). */
DSPY_API void dspy_train_bar_close(dspy_train_bar *bar);

#ifdef __cplusplus
}
#endif
#endif
