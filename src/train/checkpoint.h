/* train/checkpoint.h — training checkpoints: write atomically, find the newest, restore
 * (private to src/train; the layout is documented in include/dspy/train.h).
 *
 * A checkpoint is OUT/checkpoint-N (N = optimizer steps done) holding
 *   model.safetensors          full fine-tuning: every trainable tensor, fp32, HF names, plus
 *                              config.json and generation_config.json (transformers loads it)
 *   adapter_model.safetensors  LoRA: the A/B tensors (peft names), with adapter_config.json
 *   optimizer.safetensors      "<param>.exp_avg" and "<param>.exp_avg_sq", fp32
 *   trainer_state.json         step, epoch, position in the epoch, dropout RNG state, the data
 *                              order RNG state (MT19937 words), elapsed seconds, and the
 *                              fingerprint of the settings and data it belongs to
 * It is written into OUT/.tmp-checkpoint-N and renamed to checkpoint-N when complete, so a
 * directory named checkpoint-N is always whole (a kill -9 leaves at most a .tmp- directory,
 * removed by the next run).
 */
#ifndef DSPY_TRAIN_CHECKPOINT_H
#define DSPY_TRAIN_CHECKPOINT_H

#include <stdbool.h>
#include <stdint.h>

#include "dspy/model.h"
#include "dspy/random.h"
#include "dspy/status.h"
#include "train/backward.h"
#include "train/optim.h"

typedef struct dspy_ckpt_state {
    int64_t step;            /* optimizer steps done */
    int64_t epoch;           /* the epoch of the next step (0-based) */
    int64_t seq_pos;         /* packed sequences of that epoch already trained */
    uint64_t dropout_rng;    /* dspy_trainable_rng_get */
    dspy_pyrandom data_rng;  /* the epoch's order generator, as seeded (Random(seed + epoch)) */
    double elapsed_s;        /* training seconds so far */
    char fingerprint[65];    /* SHA-256 of the settings + data + base model it belongs to */
} dspy_ckpt_state;

/* Writes OUT/checkpoint-<st->step> (replacing one of the same step), then removes the oldest
 * checkpoint-* beyond `keep` (0 keeps all). `cfg` is the base model's config (written, as fp32,
 * next to full fine-tuning weights); `lora` the LoRA settings or NULL (adapter_config.json).
 * *path (may be NULL) gets the checkpoint directory (caller frees). */
dspy_status dspy_ckpt_save(const char *out_dir, const dspy_model_config *cfg, const dspy_lora_config *lora,
                           dspy_trainable *t, dspy_optimizer *o, const dspy_ckpt_state *st, int32_t keep,
                           char **path);

/* The newest complete checkpoint in OUT: *path (caller frees) and its step. DSPY_ERR_NOTFOUND
 * when there is none. Removes leftover .tmp-checkpoint-* directories. */
dspy_status dspy_ckpt_find_latest(const char *out_dir, char **path, int64_t *step);

/* Reads only trainer_state.json of checkpoint `dir` into *st and checks its fingerprint (errors
 * as dspy_ckpt_load). */
dspy_status dspy_ckpt_read_state(const char *dir, const char *fingerprint, dspy_ckpt_state *st);

/* Restores weights, moments, optimizer step count and dropout RNG from checkpoint `dir` into
 * `t` and `o`, and fills *st. The fingerprint must equal `fingerprint` (else DSPY_ERR_ARG:
 * the checkpoint belongs to other settings, data or model). Errors name the file and tensor. */
dspy_status dspy_ckpt_load(const char *dir, const char *fingerprint, dspy_trainable *t, dspy_optimizer *o,
                           dspy_ckpt_state *st);

/* Removes every checkpoint-* and .tmp-checkpoint-* directory in OUT (a fresh run). */
dspy_status dspy_ckpt_remove_all(const char *out_dir);


#endif
