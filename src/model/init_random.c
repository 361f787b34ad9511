/* init_random.c — write a random Llama-family checkpoint (config + generation config + weights).
 *
 * Weights ~ normal(0, 0.02) (transformers' initializer_range), RMSNorm weights 1, biases 0, as
 * `LlamaForCausalLM(config)` initialises them; the numbers come from xoshiro256** seeded by
 * splitmix64(seed) through Box–Muller, so a seed always gives the same bytes (they are not the
 * numbers torch would draw). Tensors are generated and streamed one at a time. The tokenizer
 * files are copied by the CLI, not here.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dspy/model.h"
#include "dspy/rng.h"
#include "dspy/safetensors.h"
#include "dspy/str.h"

enum { K_NORMAL, K_ONES, K_ZEROS };

dspy_status dspy_model_write_random(const char *dir, const dspy_model_config *cfg_in, uint64_t seed,
                                    dspy_dtype dtype, bool weights) {
    return dspy_model_write_random_std(dir, cfg_in, seed, dtype, weights, 0.02);
}

dspy_status dspy_model_write_random_std(const char *dir, const dspy_model_config *cfg_in, uint64_t seed,
                                        dspy_dtype dtype, bool weights, double std) {
    if (!(std > 0) || !isfinite(std))
        return dspy_fail(DSPY_ERR_ARG, "random checkpoints: the weight standard deviation %g must be positive", std);
    if (dtype != DSPY_DTYPE_F32 && dtype != DSPY_DTYPE_BF16)
        return dspy_fail(DSPY_ERR_ARG, "random checkpoints are written as F32 or BF16, not %s", dspy_dtype_name(dtype));
    dspy_model_config cfg = *cfg_in;
    cfg.dtype = dtype;
    dspy_status st = dspy_model_config_validate(&cfg, "config");
    if (st) return st;
    if ((st = dspy_mkdir_p(dir))) return st;
    if ((st = dspy_write_text_owned(dir, "config.json", dspy_model_config_to_json(&cfg)))) return st;
    if ((st = dspy_write_text_owned(dir, "generation_config.json", dspy_generation_config_to_json(&cfg)))) return st;
    if (!weights) return DSPY_OK;

    int64_t C = cfg.hidden_size, I = cfg.intermediate_size, V = cfg.vocab_size;
    int64_t Q = (int64_t)cfg.num_attention_heads * cfg.head_dim, KV = (int64_t)cfg.num_key_value_heads * cfg.head_dim;
    size_t cap = 3 + 13 * (size_t)cfg.num_hidden_layers;
    dspy_tensor_out *t = calloc(cap, sizeof *t);
    int *kind = calloc(cap, sizeof *kind);
    char (*names)[96] = calloc(cap, sizeof *names);
    float *buf = NULL;
    dspy_safetensors_writer *w = NULL;
    if (!t || !kind || !names) {
        st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        goto done;
    }
    size_t n = 0;
    int64_t biggest = 0;
#define T(k, d0, d1, ...)                                                              \
    do {                                                                               \
        snprintf(names[n], sizeof names[n], __VA_ARGS__);                              \
        t[n].name = names[n], t[n].dtype = dtype, t[n].ndim = (d1) ? 2 : 1;            \
        t[n].shape[0] = (d0), t[n].shape[1] = (d1), kind[n] = (k);                     \
        if ((int64_t)(d0) * ((d1) ? (d1) : 1) > biggest) biggest = (int64_t)(d0) * ((d1) ? (d1) : 1); \
        n++;                                                                           \
    } while (0)
    T(K_NORMAL, V, C, "model.embed_tokens.weight");
    for (int l = 0; l < cfg.num_hidden_layers; l++) {
        const char *p = "model.layers.";
        T(K_ONES, C, 0, "%s%d.input_layernorm.weight", p, l);
        T(K_NORMAL, Q, C, "%s%d.self_attn.q_proj.weight", p, l);
        T(K_NORMAL, KV, C, "%s%d.self_attn.k_proj.weight", p, l);
        T(K_NORMAL, KV, C, "%s%d.self_attn.v_proj.weight", p, l);
        T(K_NORMAL, C, Q, "%s%d.self_attn.o_proj.weight", p, l);
        if (cfg.qkv_bias) {
            T(K_ZEROS, Q, 0, "%s%d.self_attn.q_proj.bias", p, l);
            T(K_ZEROS, KV, 0, "%s%d.self_attn.k_proj.bias", p, l);
            T(K_ZEROS, KV, 0, "%s%d.self_attn.v_proj.bias", p, l);
        }
        if (cfg.o_bias) T(K_ZEROS, C, 0, "%s%d.self_attn.o_proj.bias", p, l);
        T(K_ONES, C, 0, "%s%d.post_attention_layernorm.weight", p, l);
        T(K_NORMAL, I, C, "%s%d.mlp.gate_proj.weight", p, l);
        T(K_NORMAL, I, C, "%s%d.mlp.up_proj.weight", p, l);
        T(K_NORMAL, C, I, "%s%d.mlp.down_proj.weight", p, l);
    }
    T(K_ONES, C, 0, "model.norm.weight");
    if (!cfg.tie_word_embeddings) T(K_NORMAL, V, C, "lm_head.weight");
#undef T
    buf = malloc((size_t)biggest * sizeof(float));
    if (!buf) {
        st = dspy_fail(DSPY_ERR_NOMEM, "cannot allocate %lld MiB for the largest tensor", (long long)(biggest * 4 >> 20));
        goto done;
    }
    dspy_str path = DSPY_STR_INIT;
    dspy_str_appendf(&path, "%s/model.safetensors", dir);
    st = dspy_safetensors_writer_open(dspy_str_cstr(&path), t, n, NULL, &w);
    dspy_str_free(&path);
    if (st) goto done;
    dspy_rng r;
    dspy_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) {
        int64_t numel = t[i].shape[0] * (t[i].ndim == 2 ? t[i].shape[1] : 1);
        for (int64_t j = 0; j < numel; j++)
            buf[j] = kind[i] == K_ONES ? 1.0f : kind[i] == K_ZEROS ? 0.0f : (float)(std * dspy_rng_normal(&r));
        if ((st = dspy_safetensors_writer_put(w, i, buf))) goto done;
    }
    st = dspy_safetensors_writer_close(w);
    w = NULL;
done:
    dspy_safetensors_writer_abort(w);
    free(buf);
    free(t);
    free(kind);
    free(names);
    return st;
}
