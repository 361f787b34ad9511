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
 * Weights on the CPU are fp32: BF16/F16 tensors are converted on load, F32 tensors are used
 * straight from the read-only mmap. Follows transformers' modeling_llama.py / modeling_qwen2.py
 * and configuration_llama.py (defaults for absent keys are transformers' class defaults).
 */
#ifndef DSPY_MODEL_H
#define DSPY_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/status.h"

typedef enum dspy_arch {
    DSPY_ARCH_LLAMA = 0, /* model_type "llama" */
    DSPY_ARCH_QWEN2 = 1  /* model_type "qwen2": q/k/v biases */
} dspy_arch;

/* Tensor element types as safetensors names them. The engine computes with F32; BF16 and F16
 * convert to F32 on load; the others are only measured (so a file holding them still opens). */
typedef enum dspy_dtype {
    DSPY_DTYPE_F32 = 0,
    DSPY_DTYPE_BF16,
    DSPY_DTYPE_F16,
    DSPY_DTYPE_F64,
    DSPY_DTYPE_I64,
    DSPY_DTYPE_I32,
    DSPY_DTYPE_I16,
    DSPY_DTYPE_I8,
    DSPY_DTYPE_U8,
    DSPY_DTYPE_BOOL,
    DSPY_DTYPE_F8_E4M3,
    DSPY_DTYPE_F8_E5M2,
    DSPY_DTYPE_COUNT
} dspy_dtype;

/* "F32", "BF16", ... (safetensors spelling); "?" for an invalid value. */
const char *dspy_dtype_name(dspy_dtype t);
/* Bytes per element (0 for an invalid value). */
size_t dspy_dtype_size(dspy_dtype t);
/* Parses a safetensors dtype name; false if unknown. */
bool dspy_dtype_parse(const char *name, dspy_dtype *out);

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
dspy_status dspy_model_config_parse(const char *text, size_t len, const char *where,
                                    dspy_model_config *out);
/* Applies generation_config.json text on top of a parsed config (eos ids, sampling defaults). */
dspy_status dspy_generation_config_parse(const char *text, size_t len, const char *where,
                                         dspy_model_config *cfg);
/* Reads DIR/config.json and, when present, DIR/generation_config.json. */
dspy_status dspy_model_config_load(const char *dir, dspy_model_config *out);
/* Checks sizes and relations (positive sizes, NKV divides NH, token ids inside the vocab,
 * llama3 factors consistent). `where` prefixes messages. */
dspy_status dspy_model_config_validate(const dspy_model_config *c, const char *where);

/* A ready config for `dspy init-model`: arch "llama" or "qwen2", preset "tiny" (C=64, L=2,
 * NH=4, NKV=2, I=128), "small" (C=256, L=4, NH=8, NKV=4, I=768) or "1b-shape" (exactly
 * Llama-3.2-1B: C=2048, L=16, NH=32, NKV=8, HS=64, I=8192, tied, llama3 RoPE factor 32,
 * theta 500000, context 131072). All use V=128256 and the Llama 3 special-token ids
 * (bos 128000, eos 128001/128008/128009) unless the caller changes vocab_size afterwards. */
dspy_status dspy_model_config_preset(const char *arch, const char *preset, dspy_model_config *out);

/* config.json text in the transformers-4 layout (`rope_theta` + `rope_scaling`, `torch_dtype`),
 * keys sorted, indent 2, as `save_pretrained` writes it. Caller frees. NULL on OOM. */
char *dspy_model_config_to_json(const dspy_model_config *c);
/* generation_config.json text (bos, eos list, do_sample, temperature, top_p). Caller frees. */
char *dspy_generation_config_to_json(const dspy_model_config *c);

/* RoPE inverse frequencies, exactly as transformers computes them in float32
 * (`1 / theta ** (arange(0, HS, 2).float() / HS)`, then `_compute_llama3_parameters`).
 * `inv_freq` has head_dim/2 entries. */
void dspy_rope_inv_freq(const dspy_model_config *c, float *inv_freq);

/* Parameter count (embeddings counted once when tied). */
int64_t dspy_model_config_params(const dspy_model_config *c);

/* ---- weights ---------------------------------------------------------------------------- */

/* One decoder layer, HF names in comments. Pointers are fp32, row-major; biases NULL when the
 * config has none. */
typedef struct dspy_layer_weights {
    const float *attn_norm; /* (C)        input_layernorm.weight */
    const float *wq;        /* (NH*HS, C) self_attn.q_proj.weight */
    const float *wk;        /* (NKV*HS, C) self_attn.k_proj.weight */
    const float *wv;        /* (NKV*HS, C) self_attn.v_proj.weight */
    const float *wo;        /* (C, NH*HS) self_attn.o_proj.weight */
    const float *bq;        /* (NH*HS)    self_attn.q_proj.bias or NULL */
    const float *bk;        /* (NKV*HS)   self_attn.k_proj.bias or NULL */
    const float *bv;        /* (NKV*HS)   self_attn.v_proj.bias or NULL */
    const float *bo;        /* (C)        self_attn.o_proj.bias or NULL */
    const float *mlp_norm;  /* (C)        post_attention_layernorm.weight */
    const float *w_gate;    /* (I, C)     mlp.gate_proj.weight */
    const float *w_up;      /* (I, C)     mlp.up_proj.weight */
    const float *w_down;    /* (C, I)     mlp.down_proj.weight */
} dspy_layer_weights;

typedef struct dspy_model_weights {
    const float *embed;         /* (V, C) model.embed_tokens.weight */
    dspy_layer_weights *layers; /* (L) */
    const float *final_norm;    /* (C) model.norm.weight */
    const float *lm_head;       /* (V, C) lm_head.weight; == embed when tied */
} dspy_model_weights;

/* ---- the loaded model ------------------------------------------------------------------- */

typedef struct dspy_model dspy_model;

typedef struct dspy_model_params {
    const char *device; /* "cpu" (default, NULL means cpu); "cuda"/"cuda:N" is not available yet */
    int32_t n_threads;  /* OpenMP threads for this model's compute (applied on whichever thread runs
                           it); 0 keeps the OpenMP default (OMP_NUM_THREADS or all cores) */
} dspy_model_params;

dspy_model_params dspy_model_params_default(void);

/* Loads DIR: config (+ generation config), then every tensor the config needs, checking names,
 * dtypes and shapes. Errors name the file and tensor, e.g.
 * `m/model.safetensors: tensor "model.layers.1.mlp.up_proj.weight" is missing (num_hidden_layers=2)`.
 * `p` may be NULL (defaults). The model is immutable after loading: any number of engines and
 * threads may read it concurrently. Free with dspy_model_free. */
dspy_status dspy_model_load(const char *dir, const dspy_model_params *p, dspy_model **out);
/* NULL-safe. The model must outlive every engine made from it. */
void dspy_model_free(dspy_model *m);
/* Borrowed; valid while the model lives. */
const dspy_model_config *dspy_model_config_get(const dspy_model *m);
const dspy_model_weights *dspy_model_weights_get(const dspy_model *m);
/* The same weight pointers, writable: only for the trainer (src/train/backward.h), which points
 * them at its fp32 copies while it lives and back at the loaded ones when it is freed. */
dspy_model_weights *dspy_model_weights_mut(dspy_model *m);
/* RoPE inverse frequencies (head_dim/2 floats), borrowed. */
const float *dspy_model_inv_freq(const dspy_model *m);
/* The n_threads it was loaded with (0 = OpenMP default). */
int32_t dspy_model_n_threads(const dspy_model *m);
/* The directory the model was loaded from (borrowed). */
const char *dspy_model_dir(const dspy_model *m);

/* ---- random checkpoints ----------------------------------------------------------------- */

/* Writes DIR/config.json, DIR/generation_config.json and DIR/model.safetensors for `cfg` with
 * weights ~ normal(0, 0.02) from a generator seeded with `seed` (same seed, same bytes), norm
 * weights 1, biases 0. `dtype` is F32 or BF16 (the file's tensors; cfg->dtype is set to it).
 * When `weights` is false only the two JSON files are written. Creates DIR if needed.
 * Tensors are streamed one at a time, so a 1B model needs no more than one tensor in memory. */
dspy_status dspy_model_write_random(const char *dir, const dspy_model_config *cfg, uint64_t seed,
                                    dspy_dtype dtype, bool weights);

#endif
