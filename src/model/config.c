/* config.c — config.json / generation_config.json of Llama-family models, presets, RoPE freqs.
 *
 * Follows transformers' configuration_llama.py / configuration_qwen2.py (defaults for absent
 * keys), modeling_rope_utils.py (`_compute_default_rope_parameters`, `_compute_llama3_parameters`,
 * and the transformers-5 `rope_parameters` layout), and `PretrainedConfig.to_json_string`
 * (sorted keys, indent 2) for writing. Validation messages name the file and the key.
 * Does not read tokenizer files.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/json.h"
#include "dspy/gguf.h"
#include "dspy/model.h"
#include "dspy/str.h"

#define CONFIG_MAX_BYTES ((size_t)16 << 20) /* config.json / generation_config.json */
/* The largest model accepted: 2^40 parameters (a 2 TiB bf16 checkpoint), far above any
 * model this code can run, low enough that every size derived from it fits in int64. */
#define MAX_PARAMS ((double)(1ULL << 40))

/* ---- typed reads with precise errors ---------------------------------------------------- */

/* Reads an integer key (an integral real such as 8192.0 is accepted too). Absent or null keeps
 * *out. Values outside [lo, hi] are errors. */
static dspy_status get_i32(json_t *o, const char *key, const char *where, int64_t lo, int64_t hi,
                           int32_t *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return DSPY_OK;
    int64_t x;
    if (json_is_integer(v)) x = json_integer_value(v);
    else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
             fabs(json_real_value(v)) < 9e15)
        x = (int64_t)json_real_value(v);
    else return dspy_fail(DSPY_ERR_FORMAT, "%s: \"%s\" must be an integer", where, key);
    if (x < lo || x > hi)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: \"%s\" is %lld; it must be between %lld and %lld", where, key,
                         (long long)x, (long long)lo, (long long)hi);
    *out = (int32_t)x;
    return DSPY_OK;
}

static dspy_status get_num(json_t *o, const char *key, const char *where, double *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return DSPY_OK;
    if (!json_is_number(v)) return dspy_fail(DSPY_ERR_FORMAT, "%s: \"%s\" must be a number", where, key);
    *out = json_number_value(v);
    return DSPY_OK;
}

static dspy_status get_bool(json_t *o, const char *key, const char *where, bool *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return DSPY_OK;
    if (!json_is_boolean(v)) return dspy_fail(DSPY_ERR_FORMAT, "%s: \"%s\" must be true or false", where, key);
    *out = json_is_true(v);
    return DSPY_OK;
}

/* eos_token_id: an int or a list of ints (null: none). */
static dspy_status get_eos(json_t *o, const char *where, dspy_model_config *c) {
    json_t *v = json_object_get(o, "eos_token_id");
    if (!v) return DSPY_OK;
    c->n_eos = 0;
    if (json_is_null(v)) return DSPY_OK;
    if (json_is_integer(v)) {
        c->eos_token_ids[c->n_eos++] = (int32_t)json_integer_value(v);
        if (json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
            return dspy_fail(DSPY_ERR_FORMAT, "%s: \"eos_token_id\" is %lld; token ids are non-negative", where,
                             (long long)json_integer_value(v));
        return DSPY_OK;
    }
    if (!json_is_array(v))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: \"eos_token_id\" must be an integer or a list of integers", where);
    if (json_array_size(v) > DSPY_MAX_EOS)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: \"eos_token_id\" lists %zu ids; at most %d are supported", where,
                         json_array_size(v), DSPY_MAX_EOS);
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > INT32_MAX)
            return dspy_fail(DSPY_ERR_FORMAT, "%s: \"eos_token_id\"[%zu] must be a non-negative integer", where, i);
        c->eos_token_ids[c->n_eos++] = (int32_t)json_integer_value(e);
    }
    return DSPY_OK;
}

/* Reads the rope type and its parameters from `rp` (a rope_scaling or rope_parameters object).
 * `name` is the key it came from, for messages. */
static dspy_status get_rope(json_t *rp, const char *name, const char *where, json_t *top, dspy_model_config *c) {
    if (!json_is_object(rp)) return dspy_fail(DSPY_ERR_FORMAT, "%s: \"%s\" must be an object or null", where, name);
    json_t *t = json_object_get(rp, "rope_type");
    if (!t) t = json_object_get(rp, "type");
    const char *type = t ? json_string_value(t) : "default";
    if (!type) return dspy_fail(DSPY_ERR_FORMAT, "%s: \"%s\".\"rope_type\" must be a string", where, name);
    char sub[96];
    snprintf(sub, sizeof sub, "%s: \"%s\"", where, name);
    dspy_status st = get_num(rp, "rope_theta", sub, &c->rope_theta);
    if (st) return st;
    if (strcmp(type, "default") == 0) {
        c->rope_type = DSPY_ROPE_DEFAULT;
        return DSPY_OK;
    }
    if (strcmp(type, "llama3") != 0)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: \"%s\" has rope_type \"%s\", which is not supported "
                                          "(supported: default, llama3)", where, name, type);
    c->rope_type = DSPY_ROPE_LLAMA3;
    static const char *need[] = {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"};
    for (int i = 0; i < 4; i++) {
        json_t *v = json_object_get(rp, need[i]);
        if (!v && i == 3) v = json_object_get(top, need[i]);
        if (!v || !json_is_number(v))
            return dspy_fail(DSPY_ERR_FORMAT, "%s: \"%s\" of rope_type llama3 needs a number \"%s\"", where, name,
                             need[i]);
    }
    c->rope_factor = json_number_value(json_object_get(rp, "factor"));
    c->rope_low_freq_factor = json_number_value(json_object_get(rp, "low_freq_factor"));
    c->rope_high_freq_factor = json_number_value(json_object_get(rp, "high_freq_factor"));
    json_t *om = json_object_get(rp, "original_max_position_embeddings");
    return get_i32(om ? rp : top, "original_max_position_embeddings", sub, 1, INT32_MAX,
                   &c->rope_original_max_position_embeddings);
}

static void set_defaults(dspy_model_config *c, dspy_arch arch) {
    memset(c, 0, sizeof *c);
    c->arch = arch;
    c->hidden_size = 4096;
    c->num_hidden_layers = 32;
    c->num_attention_heads = 32;
    c->num_key_value_heads = -1;
    c->head_dim = -1;
    c->rms_norm_eps = 1e-6;
    c->rope_theta = 10000.0;
    c->rope_type = DSPY_ROPE_DEFAULT;
    c->dtype = DSPY_DTYPE_F32;
    c->gen_temperature = 1.0;
    c->gen_top_p = 1.0;
    if (arch == DSPY_ARCH_LLAMA) {
        c->vocab_size = 32000;
        c->intermediate_size = 11008;
        c->max_position_embeddings = 2048;
        c->bos_token_id = 1;
        c->eos_token_ids[0] = 2;
        c->n_eos = 1;
    } else {
        c->vocab_size = 151936;
        c->intermediate_size = 22016;
        c->max_position_embeddings = 32768;
        c->bos_token_id = -1;
        c->qkv_bias = true;
    }
}

dspy_status dspy_model_config_parse(const char *text, size_t len, const char *where, dspy_model_config *out) {
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *o = json_loadb(text, len, 0, &jerr);
    if (!o) return dspy_fail(DSPY_ERR_FORMAT, "%s: line %d, column %d: %s", where, jerr.line, jerr.column, jerr.text);
    dspy_status st = DSPY_OK;
    dspy_model_config c;
    if (!json_is_object(o)) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: must be a JSON object", where);
        goto done;
    }
    const char *mt = json_string_value(json_object_get(o, "model_type"));
    if (!mt) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: \"model_type\" is missing (expected \"llama\" or \"qwen2\")", where);
        goto done;
    }
    if (strcmp(mt, "llama") == 0) set_defaults(&c, DSPY_ARCH_LLAMA);
    else if (strcmp(mt, "qwen2") == 0) set_defaults(&c, DSPY_ARCH_QWEN2);
    else {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: \"model_type\" is \"%s\"; supported: llama, qwen2", where, mt);
        goto done;
    }
#define I32(key, field, lo)                                                  \
    if ((st = get_i32(o, key, where, lo, INT32_MAX, &c.field))) goto done
    I32("vocab_size", vocab_size, INT32_MIN);
    I32("hidden_size", hidden_size, INT32_MIN);
    I32("intermediate_size", intermediate_size, INT32_MIN);
    I32("num_hidden_layers", num_hidden_layers, INT32_MIN);
    I32("num_attention_heads", num_attention_heads, INT32_MIN);
    I32("num_key_value_heads", num_key_value_heads, INT32_MIN);
    I32("head_dim", head_dim, INT32_MIN);
    I32("max_position_embeddings", max_position_embeddings, INT32_MIN);
    I32("bos_token_id", bos_token_id, 0);
#undef I32
    if (json_is_null(json_object_get(o, "bos_token_id"))) c.bos_token_id = -1;
    if (c.num_key_value_heads == -1) c.num_key_value_heads = c.num_attention_heads;
    if (c.head_dim == -1 && c.num_attention_heads > 0) {
        if (c.hidden_size % c.num_attention_heads != 0) {
            st = dspy_fail(DSPY_ERR_FORMAT, "%s: \"hidden_size\" %d is not divisible by num_attention_heads=%d and "
                                            "\"head_dim\" is not given", where, c.hidden_size, c.num_attention_heads);
            goto done;
        }
        c.head_dim = c.hidden_size / c.num_attention_heads;
    }
    if ((st = get_num(o, "rms_norm_eps", where, &c.rms_norm_eps))) goto done;
    if ((st = get_num(o, "rope_theta", where, &c.rope_theta))) goto done;
    if ((st = get_bool(o, "tie_word_embeddings", where, &c.tie_word_embeddings))) goto done;
    if ((st = get_eos(o, where, &c))) goto done;
    if (c.arch == DSPY_ARCH_LLAMA) {
        bool ab = false, mb = false;
        if ((st = get_bool(o, "attention_bias", where, &ab))) goto done;
        if ((st = get_bool(o, "mlp_bias", where, &mb))) goto done;
        c.qkv_bias = c.o_bias = ab;
        if (mb) {
            st = dspy_fail(DSPY_ERR_FORMAT, "%s: \"mlp_bias\" is true, which is not supported", where);
            goto done;
        }
    } else {
        bool sw = false;
        if ((st = get_bool(o, "use_sliding_window", where, &sw))) goto done;
        if (sw) {
            st = dspy_fail(DSPY_ERR_FORMAT, "%s: \"use_sliding_window\" is true; sliding-window attention is "
                                            "not supported", where);
            goto done;
        }
        json_t *lt = json_object_get(o, "layer_types");
        size_t i;
        json_t *e;
        if (json_is_array(lt))
            json_array_foreach(lt, i, e) {
                if (!json_is_string(e) || strcmp(json_string_value(e), "full_attention") != 0) {
                    st = dspy_fail(DSPY_ERR_FORMAT, "%s: \"layer_types\"[%zu] is not \"full_attention\"; only full "
                                                    "attention is supported", where, i);
                    goto done;
                }
            }
    }
    const char *act = json_string_value(json_object_get(o, "hidden_act"));
    if (json_object_get(o, "hidden_act") && (!act || strcmp(act, "silu") != 0)) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: \"hidden_act\" is %s%s%s; only \"silu\" is supported", where,
                       act ? "\"" : "", act ? act : "not a string", act ? "\"" : "");
        goto done;
    }
    /* RoPE: transformers-5 `rope_parameters` wins over the transformers-4 `rope_scaling`. */
    json_t *rp = json_object_get(o, "rope_parameters");
    json_t *rs = json_object_get(o, "rope_scaling");
    if (rp && !json_is_null(rp)) st = get_rope(rp, "rope_parameters", where, o, &c);
    else if (rs && !json_is_null(rs)) st = get_rope(rs, "rope_scaling", where, o, &c);
    if (st) goto done;
    const char *dt = NULL;
    const char *dkey = json_object_get(o, "dtype") ? "dtype" : "torch_dtype";
    json_t *dv = json_object_get(o, dkey);
    if (dv && !json_is_null(dv)) {
        dt = json_string_value(dv);
        if (!dt) {
            st = dspy_fail(DSPY_ERR_FORMAT, "%s: \"%s\" must be a string", where, dkey);
            goto done;
        }
        if (strcmp(dt, "float32") == 0) c.dtype = DSPY_DTYPE_F32;
        else if (strcmp(dt, "bfloat16") == 0) c.dtype = DSPY_DTYPE_BF16;
        else if (strcmp(dt, "float16") == 0) c.dtype = DSPY_DTYPE_F16;
        else {
            st = dspy_fail(DSPY_ERR_FORMAT, "%s: \"%s\" is \"%s\"; expected float32, bfloat16 or float16", where,
                           dkey, dt);
            goto done;
        }
    }
    st = dspy_model_config_validate(&c, where);
    if (st == DSPY_OK) *out = c;
done:
    json_decref(o);
    return st;
}

/* dspy_model_config_params in double: exact below 2^53, never overflows. */
static double config_params_f64(const dspy_model_config *c) {
    double C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    double q = (double)c->num_attention_heads * c->head_dim, kv = (double)c->num_key_value_heads * c->head_dim;
    double layer = 2 * C + C * q + 2 * C * kv + q * C + 3 * C * I;
    if (c->qkv_bias) layer += q + 2 * kv;
    if (c->o_bias) layer += C;
    return V * C * (c->tie_word_embeddings ? 1 : 2) + C + layer * c->num_hidden_layers;
}

dspy_status dspy_model_config_validate(const dspy_model_config *c, const char *where) {
    const struct {
        const char *key;
        int32_t v;
    } pos[] = {{"vocab_size", c->vocab_size},
               {"hidden_size", c->hidden_size},
               {"intermediate_size", c->intermediate_size},
               {"num_hidden_layers", c->num_hidden_layers},
               {"num_attention_heads", c->num_attention_heads},
               {"num_key_value_heads", c->num_key_value_heads},
               {"head_dim", c->head_dim},
               {"max_position_embeddings", c->max_position_embeddings}};
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++)
        if (pos[i].v <= 0)
            return dspy_fail(DSPY_ERR_FORMAT, "%s: \"%s\" is %d; it must be positive", where, pos[i].key, pos[i].v);
    if (c->num_attention_heads % c->num_key_value_heads != 0)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: \"num_key_value_heads\" is %d, which does not divide "
                                          "num_attention_heads=%d", where, c->num_key_value_heads,
                         c->num_attention_heads);
    if (c->head_dim > 1024)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: \"head_dim\" is %d; at most 1024 is supported", where, c->head_dim);
    if (c->head_dim % 2 != 0)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: \"head_dim\" is %d; RoPE needs an even head dimension", where,
                         c->head_dim);
    if ((int64_t)c->num_attention_heads * c->head_dim > (1 << 20) || c->hidden_size > (1 << 20) ||
        c->intermediate_size > (1 << 22))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: sizes are implausibly large (hidden_size=%d, heads*head_dim=%lld, "
                                          "intermediate_size=%d)", where, c->hidden_size,
                         (long long)c->num_attention_heads * c->head_dim, c->intermediate_size);
    /* Sizes are checked in double before anything is allocated from them: int64 products of
     * absurd values (num_hidden_layers = 1e9) would overflow, and an allocation sized from them
     * would only say "out of memory". */
    double params = config_params_f64(c);
    if (params > MAX_PARAMS) {
        double bytes = params * (double)(dspy_dtype_size(c->dtype) ? dspy_dtype_size(c->dtype) : 4);
        return dspy_fail(DSPY_ERR_FORMAT, "%s: this config describes %.4g parameters (num_hidden_layers=%d, "
                                          "hidden_size=%d, intermediate_size=%d, vocab_size=%d), which would need "
                                          "%.4g GiB of %s weights; at most %.4g parameters are supported. Check "
                                          "the config for a mistyped size", where, params, c->num_hidden_layers,
                         c->hidden_size, c->intermediate_size, c->vocab_size, bytes / (1024.0 * 1024.0 * 1024.0),
                         dspy_dtype_name(c->dtype), MAX_PARAMS);
    }
    double kv_row = 2.0 * c->num_hidden_layers * c->num_key_value_heads * c->head_dim;
    if (kv_row * 4.0 > (double)(1ULL << 32))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: one token of KV cache would take %.4g GiB in fp32 (2 x "
                                          "num_hidden_layers=%d x num_key_value_heads=%d x head_dim=%d); at most 4 "
                                          "GiB per token is supported", where, kv_row * 4.0 / (1024.0 * 1024.0 * 1024.0),
                         c->num_hidden_layers, c->num_key_value_heads, c->head_dim);
    if (!(c->rms_norm_eps > 0) || !isfinite(c->rms_norm_eps))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: \"rms_norm_eps\" is %g; it must be a positive number", where,
                         c->rms_norm_eps);
    if (!(c->rope_theta > 0) || !isfinite(c->rope_theta))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: \"rope_theta\" is %g; it must be a positive number", where,
                         c->rope_theta);
    if (c->rope_type == DSPY_ROPE_LLAMA3) {
        if (!(c->rope_factor >= 1) || !isfinite(c->rope_factor))
            return dspy_fail(DSPY_ERR_FORMAT, "%s: rope \"factor\" is %g; llama3 scaling needs a factor >= 1", where,
                             c->rope_factor);
        if (!(c->rope_low_freq_factor > 0) || !(c->rope_high_freq_factor > c->rope_low_freq_factor))
            return dspy_fail(DSPY_ERR_FORMAT, "%s: rope \"low_freq_factor\" %g and \"high_freq_factor\" %g must "
                                              "satisfy 0 < low < high", where, c->rope_low_freq_factor,
                             c->rope_high_freq_factor);
        if (c->rope_original_max_position_embeddings <= 0)
            return dspy_fail(DSPY_ERR_FORMAT, "%s: rope \"original_max_position_embeddings\" must be positive", where);
    }
    if (c->bos_token_id >= c->vocab_size)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: \"bos_token_id\" %d is outside the vocabulary (vocab_size=%d)", where,
                         c->bos_token_id, c->vocab_size);
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_token_ids[i] < 0 || c->eos_token_ids[i] >= c->vocab_size)
            return dspy_fail(DSPY_ERR_FORMAT, "%s: \"eos_token_id\" %d is outside the vocabulary (vocab_size=%d)",
                             where, c->eos_token_ids[i], c->vocab_size);
    if (c->n_eos < 0 || c->n_eos > DSPY_MAX_EOS)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: %d eos ids", where, c->n_eos);
    if (!(c->gen_temperature >= 0) || !(c->gen_top_p > 0 && c->gen_top_p <= 1) || c->gen_top_k < 0)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: generation defaults out of range (temperature %g, top_p %g, top_k %d)",
                         where, c->gen_temperature, c->gen_top_p, c->gen_top_k);
    return DSPY_OK;
}

dspy_status dspy_generation_config_parse(const char *text, size_t len, const char *where, dspy_model_config *cfg) {
    json_error_t jerr;
    json_t *o = json_loadb(text, len, 0, &jerr);
    if (!o) return dspy_fail(DSPY_ERR_FORMAT, "%s: line %d, column %d: %s", where, jerr.line, jerr.column, jerr.text);
    dspy_status st = DSPY_OK;
    dspy_model_config c = *cfg;
    if (!json_is_object(o)) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: must be a JSON object", where);
        goto done;
    }
    c.has_generation_config = true;
    if ((st = get_eos(o, where, &c))) goto done;
    if ((st = get_i32(o, "bos_token_id", where, 0, INT32_MAX, &c.bos_token_id))) goto done;
    if ((st = get_bool(o, "do_sample", where, &c.gen_do_sample))) goto done;
    if ((st = get_num(o, "temperature", where, &c.gen_temperature))) goto done;
    if ((st = get_num(o, "top_p", where, &c.gen_top_p))) goto done;
    if ((st = get_i32(o, "top_k", where, 0, INT32_MAX, &c.gen_top_k))) goto done;
    if ((st = dspy_model_config_validate(&c, where))) goto done;
    *cfg = c;
done:
    json_decref(o);
    return st;
}

static dspy_status load_text(const char *dir, const char *name, bool optional, char **text, size_t *len,
                             char **path) {
    *text = NULL;
    dspy_str p = DSPY_STR_INIT;
    dspy_str_appendf(&p, "%s/%s", dir, name);
    *path = dspy_str_take(&p);
    if (!*path) return DSPY_ERR_NOMEM;
    dspy_status st = dspy_read_regular_file(*path, CONFIG_MAX_BYTES, text, len);
    if (st == DSPY_ERR_NOTFOUND && optional) return DSPY_OK;
    if (st == DSPY_ERR_NOTFOUND)
        return dspy_fail(DSPY_ERR_NOTFOUND, "%s: no %s here (expected a Hugging Face model directory)", dir, name);
    return st;
}

dspy_status dspy_model_config_load(const char *dir, dspy_model_config *out) {
    memset(out, 0, sizeof *out);
    if (dspy_gguf_is_path(dir)) return dspy_gguf_config_load(dir, out);
    char *text = NULL, *path = NULL;
    size_t len = 0;
    dspy_model_config c;
    dspy_status st = load_text(dir, "config.json", false, &text, &len, &path);
    if (st == DSPY_OK) st = dspy_model_config_parse(text, len, path, &c);
    free(text);
    free(path);
    if (st) return st;
    st = load_text(dir, "generation_config.json", true, &text, &len, &path);
    if (st == DSPY_OK && text) st = dspy_generation_config_parse(text, len, path, &c);
    free(text);
    free(path);
    if (st) return st;
    *out = c;
    return DSPY_OK;
}

dspy_status dspy_model_config_preset(const char *arch, const char *preset, dspy_model_config *out) {
    dspy_arch a;
    if (strcmp(arch, "llama") == 0) a = DSPY_ARCH_LLAMA;
    else if (strcmp(arch, "qwen2") == 0) a = DSPY_ARCH_QWEN2;
    else return dspy_fail(DSPY_ERR_ARG, "unknown architecture \"%s\" (expected llama or qwen2)", arch);
    dspy_model_config c;
    set_defaults(&c, a);
    c.vocab_size = 128256;
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 500000.0;
    c.tie_word_embeddings = true;
    c.bos_token_id = 128000;
    c.eos_token_ids[0] = 128001;
    c.eos_token_ids[1] = 128008;
    c.eos_token_ids[2] = 128009;
    c.n_eos = 3;
    c.dtype = DSPY_DTYPE_BF16;
    c.has_generation_config = true;
    c.gen_do_sample = true;
    c.gen_temperature = 0.6;
    c.gen_top_p = 0.9;
    if (strcmp(preset, "tiny") == 0) {
        c.hidden_size = 64, c.num_hidden_layers = 2, c.num_attention_heads = 4, c.num_key_value_heads = 2;
        c.intermediate_size = 128, c.max_position_embeddings = 8192;
    } else if (strcmp(preset, "small") == 0) {
        c.hidden_size = 256, c.num_hidden_layers = 4, c.num_attention_heads = 8, c.num_key_value_heads = 4;
        c.intermediate_size = 768, c.max_position_embeddings = 8192;
    } else if (strcmp(preset, "1b-shape") == 0) {
        c.hidden_size = 2048, c.num_hidden_layers = 16, c.num_attention_heads = 32, c.num_key_value_heads = 8;
        c.intermediate_size = 8192, c.max_position_embeddings = 131072;
        c.rope_type = DSPY_ROPE_LLAMA3;
        c.rope_factor = 32.0, c.rope_low_freq_factor = 1.0, c.rope_high_freq_factor = 4.0;
        c.rope_original_max_position_embeddings = 8192;
    } else {
        return dspy_fail(DSPY_ERR_ARG, "unknown preset \"%s\" (expected tiny, small or 1b-shape)", preset);
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
    dspy_status st = dspy_model_config_validate(&c, "preset");
    if (st) return st;
    *out = c;
    return DSPY_OK;
}

/* ---- writing ---------------------------------------------------------------------------- */

static const char *dtype_torch_name(dspy_dtype t) {
    return t == DSPY_DTYPE_BF16 ? "bfloat16" : t == DSPY_DTYPE_F16 ? "float16" : "float32";
}

static dspy_json *eos_json(const dspy_model_config *c) {
    if (c->n_eos == 0) return dspy_json_null();
    if (c->n_eos == 1) return dspy_json_int(c->eos_token_ids[0]);
    dspy_json *a = dspy_json_array();
    for (int i = 0; i < c->n_eos; i++) dspy_json_append(a, dspy_json_int(c->eos_token_ids[i]));
    return a;
}

static char *dump_sorted(dspy_json *o) {
    char *body = dspy_json_dumps(o, DSPY_JSON_SORT_KEYS | DSPY_JSON_INDENT(2));
    dspy_json_decref(o);
    if (!body) return NULL;
    dspy_str s = DSPY_STR_INIT;
    dspy_str_append(&s, body);
    dspy_str_appendc(&s, '\n');
    free(body);
    return dspy_str_take(&s);
}

char *dspy_model_config_to_json(const dspy_model_config *c) {
    bool llama = c->arch == DSPY_ARCH_LLAMA;
    dspy_json *o = dspy_json_object();
    dspy_json *arch = dspy_json_array();
    dspy_json_append(arch, dspy_json_string(llama ? "LlamaForCausalLM" : "Qwen2ForCausalLM"));
    dspy_json_set(o, "architectures", arch);
    if (llama) {
        dspy_json_set(o, "attention_bias", dspy_json_bool(c->qkv_bias));
        dspy_json_set(o, "mlp_bias", dspy_json_bool(false));
        dspy_json_set(o, "pretraining_tp", dspy_json_int(1));
    } else {
        dspy_json_set(o, "use_sliding_window", dspy_json_bool(false));
        dspy_json_set(o, "sliding_window", dspy_json_null());
        dspy_json_set(o, "max_window_layers", dspy_json_int(c->num_hidden_layers));
    }
    dspy_json_set(o, "attention_dropout", dspy_json_real(0.0));
    dspy_json_set(o, "bos_token_id", c->bos_token_id >= 0 ? dspy_json_int(c->bos_token_id) : dspy_json_null());
    dspy_json_set(o, "eos_token_id", eos_json(c));
    dspy_json_set(o, "head_dim", dspy_json_int(c->head_dim));
    dspy_json_set(o, "hidden_act", dspy_json_string("silu"));
    dspy_json_set(o, "hidden_size", dspy_json_int(c->hidden_size));
    dspy_json_set(o, "initializer_range", dspy_json_real(0.02));
    dspy_json_set(o, "intermediate_size", dspy_json_int(c->intermediate_size));
    dspy_json_set(o, "max_position_embeddings", dspy_json_int(c->max_position_embeddings));
    dspy_json_set(o, "model_type", dspy_json_string(llama ? "llama" : "qwen2"));
    dspy_json_set(o, "num_attention_heads", dspy_json_int(c->num_attention_heads));
    dspy_json_set(o, "num_hidden_layers", dspy_json_int(c->num_hidden_layers));
    dspy_json_set(o, "num_key_value_heads", dspy_json_int(c->num_key_value_heads));
    dspy_json_set(o, "rms_norm_eps", dspy_json_real(c->rms_norm_eps));
    if (c->rope_type == DSPY_ROPE_LLAMA3) {
        dspy_json *rs = dspy_json_object();
        dspy_json_set(rs, "factor", dspy_json_real(c->rope_factor));
        dspy_json_set(rs, "high_freq_factor", dspy_json_real(c->rope_high_freq_factor));
        dspy_json_set(rs, "low_freq_factor", dspy_json_real(c->rope_low_freq_factor));
        dspy_json_set(rs, "original_max_position_embeddings", dspy_json_int(c->rope_original_max_position_embeddings));
        dspy_json_set(rs, "rope_type", dspy_json_string("llama3"));
        dspy_json_set(o, "rope_scaling", rs);
    } else {
        dspy_json_set(o, "rope_scaling", dspy_json_null());
    }
    dspy_json_set(o, "rope_theta", dspy_json_real(c->rope_theta));
    dspy_json_set(o, "tie_word_embeddings", dspy_json_bool(c->tie_word_embeddings));
    dspy_json_set(o, "torch_dtype", dspy_json_string(dtype_torch_name(c->dtype)));
    dspy_json_set(o, "use_cache", dspy_json_bool(true));
    dspy_json_set(o, "vocab_size", dspy_json_int(c->vocab_size));
    return dump_sorted(o);
}

char *dspy_generation_config_to_json(const dspy_model_config *c) {
    dspy_json *o = dspy_json_object();
    if (c->bos_token_id >= 0) dspy_json_set(o, "bos_token_id", dspy_json_int(c->bos_token_id));
    dspy_json_set(o, "eos_token_id", eos_json(c));
    dspy_json_set(o, "do_sample", dspy_json_bool(c->gen_do_sample));
    if (c->gen_do_sample) {
        dspy_json_set(o, "temperature", dspy_json_real(c->gen_temperature));
        dspy_json_set(o, "top_p", dspy_json_real(c->gen_top_p));
        if (c->gen_top_k > 0) dspy_json_set(o, "top_k", dspy_json_int(c->gen_top_k));
    }
    return dump_sorted(o);
}

/* ---- RoPE ------------------------------------------------------------------------------- */

void dspy_rope_inv_freq(const dspy_model_config *c, float *inv_freq) {
    int HS = c->head_dim;
    float base = (float)c->rope_theta;
    for (int i = 0; i < HS / 2; i++) {
        /* torch: arange(0, dim, 2).float() / dim, base ** x, 1.0 / x — all float32 */
        float e = (float)(2 * i) / (float)HS;
        float p = (float)pow((double)base, (double)e);
        inv_freq[i] = 1.0f / p;
    }
    if (c->rope_type != DSPY_ROPE_LLAMA3) return;
    /* _compute_llama3_parameters, each tensor op in float32 with the Python scalar cast to it. */
    float factor = (float)c->rope_factor;
    float low = (float)c->rope_low_freq_factor;
    double old_ctx = (double)c->rope_original_max_position_embeddings;
    float low_wavelen = (float)(old_ctx / c->rope_low_freq_factor);
    float high_wavelen = (float)(old_ctx / c->rope_high_freq_factor);
    float two_pi = (float)(2.0 * M_PI);
    float span = (float)(c->rope_high_freq_factor - c->rope_low_freq_factor);
    for (int i = 0; i < HS / 2; i++) {
        float f = inv_freq[i];
        float wavelen = two_pi / f;
        float fl = wavelen > low_wavelen ? f / factor : f;
        float smooth = ((float)old_ctx / wavelen - low) / span;
        float smoothed = (1.0f - smooth) * fl / factor + smooth * fl;
        bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
        inv_freq[i] = medium ? smoothed : fl;
    }
}

int64_t dspy_model_config_params(const dspy_model_config *c) {
    int64_t C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    int64_t q = (int64_t)c->num_attention_heads * c->head_dim, kv = (int64_t)c->num_key_value_heads * c->head_dim;
    int64_t layer = 2 * C + C * q + 2 * C * kv + q * C + 3 * C * I;
    if (c->qkv_bias) layer += q + 2 * kv;
    if (c->o_bias) layer += C;
    return V * C * (c->tie_word_embeddings ? 1 : 2) + C + layer * c->num_hidden_layers;
}
