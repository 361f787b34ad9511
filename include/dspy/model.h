/* dspy/model.h — a Llama-family model directory: config, weights, the loaded model.
 *
 * A model directory is what Hugging Face `save_pretrained` writes:
 *   config.json                    architecture (llama or qwen2), sizes, RoPE, token ids, dtype
 *   generation_config.json         optional: eos ids and sampling defaults
 *   model.safetensors              weights, or model.safetensors.index.json + shards
 *   tokenizer.json ...             read by the tokenizer module, not here
 *
 * Supported: model_type "llama" (Llama 2/3/3.1/3.2 text models; optional attention_bias) and
 * "qwen2" (biases on q/k/v); GQA/MQA through num_key_value_heads; explicit head_dim; tied or
 * untied embeddings; RoPE "default" and "llama3" (frequency scaling of Llama 3.1/3.2), read
 * from either the transformers-4 layout (`rope_theta` + `rope_scaling`) or the transformers-5
 * layout (`rope_parameters`). Not supported (each gives a clear error): other rope types
 * (linear, dynamic, yarn, longrope), sliding-window attention, mlp_bias, activations other
 * than silu, other model types.
 *
 * Weights stay in their stored dtype where the device computes with it: on the CPU, F32 and
 * BF16 matrices are kept as stored (BF16 is widened exactly as it is read; F16 becomes F32), or
 * all become BF16 for the fast CPU kernels (dspy_model_params.cpu_kernels); on CUDA, matrices are BF16 in device memory. Norm weights and biases are F32 everywhere. The
 * q/k/v projections are stored as one matrix and gate/up as another (one GEMM each). Follows transformers' modeling_llama.py / modeling_qwen2.py
 * and configuration_llama.py (defaults for absent keys are transformers' class defaults).
 */
#ifndef DSPY_MODEL_H
#define DSPY_MODEL_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/backend.h"
#include "dspy/status.h"
#include "dspy/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dspy_arch {
    DSPY_ARCH_LLAMA = 0, /* model_type "llama" */
    DSPY_ARCH_QWEN2 = 1  /* model_type "qwen2": q/k/v biases */
} dspy_arch;

typedef enum dspy_rope_kind {
    DSPY_ROPE_DEFAULT = 0, /* inv_freq = 1 / theta^(2i/HS) */
    DSPY_ROPE_LLAMA3 = 1   /* Llama 3.1 frequency scaling (factor, low/high_freq_factor) */
} dspy_rope_kind;

#define DSPY_MAX_EOS 8

typedef struct dspy_model_config {
    dspy_arch arch;
    int32_t vocab_size;              /* V */
    int32_t hidden_size;             /* C */
    int32_t intermediate_size;       /* I, the MLP width */
    int32_t num_hidden_layers;       /* L */
    int32_t num_attention_heads;     /* NH */
    int32_t num_key_value_heads;     /* NKV (divides NH); NH when absent */
    int32_t head_dim;                /* HS; hidden_size / NH when absent or null */
    int32_t max_position_embeddings; /* the context length */
    double rms_norm_eps;
    double rope_theta;
    dspy_rope_kind rope_type;
    double rope_factor;              /* llama3 only */
    double rope_low_freq_factor;     /* llama3 only */
    double rope_high_freq_factor;    /* llama3 only */
    int32_t rope_original_max_position_embeddings; /* llama3 only */
    bool tie_word_embeddings;        /* lm_head shares model.embed_tokens.weight */
    bool qkv_bias;                   /* q/k/v projections have biases (qwen2, llama attention_bias) */
    bool o_bias;                     /* o_proj has a bias (llama attention_bias) */
    int32_t bos_token_id;            /* -1 when absent */
    int32_t eos_token_ids[DSPY_MAX_EOS]; /* from generation_config.json when it has them, else config.json */
    int32_t n_eos;
    dspy_dtype dtype;                /* "torch_dtype"/"dtype"; F32 when absent */
    /* generation_config.json (absent: has_generation_config false, fields as below). */
    bool has_generation_config;
    bool gen_do_sample;              /* false when absent */
    double gen_temperature;          /* 1.0 when absent */
    double gen_top_p;                /* 1.0 when absent */
    int32_t gen_top_k;               /* 0 (off) when absent */
} dspy_model_config;

/* Parses config.json text. `where` names the file in messages ("model/config.json").
 * Applies transformers' defaults for absent keys, then validates (dspy_model_config_validate).
 * Returns DSPY_ERR_FORMAT with a message naming the key, e.g.
 * `model/config.json: "num_key_value_heads" is 3, which does not divide num_attention_heads=32`. */
DSPY_API dspy_status dspy_model_config_parse(const char *text, size_t len, const char *where,
                                             dspy_model_config *out);
/* Applies generation_config.json text on top of a parsed config (eos ids, sampling defaults). */
DSPY_API dspy_status dspy_generation_config_parse(const char *text, size_t len, const char *where,
                                                  dspy_model_config *cfg);
/* Reads DIR/config.json and, when present, DIR/generation_config.json. */
DSPY_API dspy_status dspy_model_config_load(const char *dir, dspy_model_config *out);
/* Checks sizes and relations (positive sizes, NKV divides NH, token ids inside the vocab,
 * llama3 factors consistent). `where` prefixes messages. */
DSPY_API dspy_status dspy_model_config_validate(const dspy_model_config *c, const char *where);

/* A ready config for `dspy init-model`: arch "llama" or "qwen2", preset "tiny" (C=64, L=2,
 * NH=4, NKV=2, I=128), "small" (C=256, L=4, NH=8, NKV=4, I=768) or "1b-shape" (exactly
 * Llama-3.2-1B: C=2048, L=16, NH=32, NKV=8, HS=64, I=8192, tied, llama3 RoPE factor 32,
 * theta 500000, context 131072). All use V=128256 and the Llama 3 special-token ids
 * (bos 128000, eos 128001/128008/128009) unless the caller changes vocab_size afterwards. */
DSPY_API dspy_status dspy_model_config_preset(const char *arch, const char *preset, dspy_model_config *out);

/* config.json text in the transformers-4 layout (`rope_theta` + `rope_scaling`, `torch_dtype`),
 * keys sorted, indent 2, as `save_pretrained` writes it. Caller frees. NULL on OOM. */
DSPY_API char *dspy_model_config_to_json(const dspy_model_config *c);
/* generation_config.json text (bos, eos list, do_sample, temperature, top_p). Caller frees. */
DSPY_API char *dspy_generation_config_to_json(const dspy_model_config *c);

/* RoPE inverse frequencies, exactly as transformers computes them in float32
 * (`1 / theta ** (arange(0, HS, 2).float() / HS)`, then `_compute_llama3_parameters`).
 * `inv_freq` has head_dim/2 entries. */
DSPY_API void dspy_rope_inv_freq(const dspy_model_config *c, float *inv_freq);

/* Parameter count (embeddings counted once when tied). */
DSPY_API int64_t dspy_model_config_params(const dspy_model_config *c);

/* ---- weights ---------------------------------------------------------------------------- */

/* One decoder layer as the model keeps it (HF names in comments). Matrices are in the model's
 * matrix dtype (dspy_model_matrix_dtype) on its device; norm weights and biases are F32. */
typedef struct dspy_layer_weights {
    dspy_tensor attn_norm;  /* (C)                input_layernorm.weight */
    dspy_tensor wqkv;       /* (NH*HS + 2*NKV*HS, C) self_attn.{q,k,v}_proj.weight, rows stacked */
    dspy_tensor bqkv;       /* (NH*HS + 2*NKV*HS) self_attn.{q,k,v}_proj.bias, or none */
    dspy_tensor wo;         /* (C, NH*HS)         self_attn.o_proj.weight */
    dspy_tensor bo;         /* (C)                self_attn.o_proj.bias, or none */
    dspy_tensor mlp_norm;   /* (C)                post_attention_layernorm.weight */
    dspy_tensor w_gate_up;  /* (2I, C)            mlp.gate_proj.weight rows, then mlp.up_proj.weight */
    dspy_tensor w_down;     /* (C, I)             mlp.down_proj.weight */
} dspy_layer_weights;

typedef struct dspy_model_weights {
    dspy_tensor embed;                /* (V, C) model.embed_tokens.weight */
    const dspy_layer_weights *layers; /* (L) */
    dspy_tensor final_norm;           /* (C) model.norm.weight */
    dspy_tensor lm_head;              /* (V, C) lm_head.weight; the embed memory when tied */
    dspy_tensor inv_freq;             /* (HS/2) F32 RoPE inverse frequencies (dspy_rope_inv_freq) */
} dspy_model_weights;

/* ---- the loaded model ------------------------------------------------------------------- */

typedef struct dspy_model dspy_model;

typedef struct dspy_model_params {
    const char *device; /* "cpu" (default; NULL means cpu), "cuda", "cuda:N", or "auto" (CUDA when
                           a device is visible, else the CPU) */
    int32_t n_threads;  /* OpenMP threads for this model's CPU compute; 0 keeps the OpenMP default
                           (OMP_NUM_THREADS or all cores) */
    bool strict;        /* NaN/Inf weights: an error (DSPY_ERR_FORMAT) instead of a logged warning */
    dspy_cpu_kernels cpu_kernels; /* CPU only: REFERENCE (default; matrices as stored) or FAST
                                     (matrices converted to BF16 at load, dspy/backend.h) */
    bool f8_decode;     /* off by default. Every projection matrix and the lm_head are rounded
                           to FP8 E4M3 with a power-of-two scale per row (an embedding tied to
                           the lm_head with it). CUDA: decode steps of 5-16 sequences read a
                           1-byte copy (about half the bytes a step), every other path the same
                           values in BF16; costs half the matrices' memory again. CPU: the same
                           rounded values, nothing faster (to see the rounded model's answers).
                           The model is one FP8-rounded model on every path and device; its
                           outputs are the rounded weights', not the checkpoint's. DSPY_ERR_ARG
                           for a row with a value that is not finite or above 448 * 2^7. */
    bool f8_act;        /* off by default; needs f8_decode (else DSPY_ERR_ARG). W8A8: the
                           layers' linear calls of more than 16 rows (prompt steps) also round
                           each input row to E4M3 (a power-of-two scale a row, f8_decode's rule,
                           kern/e4m3.h). CUDA multiplies codes by codes on FP8 tensor cores, F32
                           sums (~1.6x the BF16 GEMMs at prompt-step sizes on an H200); the CPU
                           computes the same rounded rows in F32, nothing faster. The prompt's
                           activations keep 3 mantissa bits in those products (about 2 %
                           relative a projection); decode steps and the lm_head are as with
                           f8_decode. */
} dspy_model_params;

DSPY_API dspy_model_params dspy_model_params_default(void);

/* Loads DIR: config (+ generation config), then every tensor the config needs, checking names,
 * dtypes and shapes, and places the weights on the device (one upload for CUDA). Errors name
 * the file and tensor, e.g.
 * `m/model.safetensors: tensor "model.layers.1.mlp.up_proj.weight" is missing (num_hidden_layers=2)`;
 * DSPY_ERR_BACKEND when the device cannot be used (the message says why: no CUDA in this build,
 * no device, driver too old) and DSPY_ERR_NOMEM when the weights do not fit (how much they need
 * and how much is free). `p` may be NULL (defaults). The model is immutable after loading: any
 * number of engines and threads may read it concurrently. Free with dspy_model_free. */
DSPY_API dspy_status dspy_model_load(const char *dir, const dspy_model_params *p, dspy_model **out);
/* NULL-safe. The model must outlive every engine made from it. */
DSPY_API void dspy_model_free(dspy_model *m);
/* Borrowed; valid while the model lives. */
DSPY_API const dspy_model_config *dspy_model_config_get(const dspy_model *m);
/* The weights as the model keeps them (device memory for CUDA). Read-only: nothing outside the
 * model re-points or writes them; a trainer copies them (dspy_model_tensor_read_f32). */
DSPY_API const dspy_model_weights *dspy_model_weights_get(const dspy_model *m);
/* The device the weights live on. */
DSPY_API dspy_device dspy_model_device(const dspy_model *m);
/* F32 or BF16: the dtype of the model's matrices. */
DSPY_API dspy_dtype dspy_model_matrix_dtype(const dspy_model *m);
/* Bytes of weight memory the model holds on its device (mapped file pages not counted; the FP8
 * copies of f8_decode included). */
DSPY_API size_t dspy_model_weight_bytes(const dspy_model *m);
/* Whether the model was loaded with f8_decode (its matrices hold FP8-rounded values). */
DSPY_API bool dspy_model_f8_decode(const dspy_model *m);
/* Whether the model was loaded with f8_act (W8A8 prompt GEMMs). */
DSPY_API bool dspy_model_f8_act(const dspy_model *m);
/* Copies the tensor with Hugging Face name `name` (as in the checkpoint: "model.layers.0.self_attn.
 * q_proj.weight", "lm_head.weight" also when tied, ...) into dst (n floats, row-major, widened to
 * F32) from wherever the model keeps it. DSPY_ERR_NOTFOUND for a name the model does not have,
 * DSPY_ERR_ARG when n is not its element count. Thread-safe. */
DSPY_API dspy_status dspy_model_tensor_read_f32(const dspy_model *m, const char *name, float *dst, size_t n);
/* RoPE inverse frequencies (head_dim/2 floats) in host memory, borrowed. */
DSPY_API const float *dspy_model_inv_freq(const dspy_model *m);
/* The n_threads it was loaded with (0 = OpenMP default). */
DSPY_API int32_t dspy_model_n_threads(const dspy_model *m);
/* The CPU kernels it was loaded for (engines made from it use them; REFERENCE on CUDA). */
DSPY_API dspy_cpu_kernels dspy_model_cpu_kernels(const dspy_model *m);
/* The directory the model was loaded from (borrowed). */
DSPY_API const char *dspy_model_dir(const dspy_model *m);

/* ---- random checkpoints ----------------------------------------------------------------- */

/* Writes DIR/config.json, DIR/generation_config.json and DIR/model.safetensors for `cfg` with
 * weights ~ normal(0, 0.02) from a generator seeded with `seed` (same seed, same bytes), norm
 * weights 1, biases 0. `dtype` is F32 or BF16 (the file's tensors; cfg->dtype is set to it).
 * When `weights` is false only the two JSON files are written. Creates DIR if needed.
 * Tensors are streamed one at a time, so a 1B model needs no more than one tensor in memory. */
DSPY_API dspy_status dspy_model_write_random(const char *dir, const dspy_model_config *cfg, uint64_t seed,
                                             dspy_dtype dtype, bool weights);
/* The same with weights ~ normal(0, std): a larger std (0.1-0.3) gives random models whose greedy
 * continuations do not merely repeat one token, for parity tests that compare continuations. */
DSPY_API dspy_status dspy_model_write_random_std(const char *dir, const dspy_model_config *cfg, uint64_t seed,
                                                 dspy_dtype dtype, bool weights, double std);

#ifdef __cplusplus
}
#endif

#endif
