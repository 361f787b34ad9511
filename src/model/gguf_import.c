/* gguf_import.c — a GGUF file seen as a Hugging Face model: its config and a checkpoint of HF tensors.
 *
 * The inverse of gguf_export.c and of convert_hf_to_gguf.py for Llama/Qwen2: {arch}.* keys give
 * the sizes, tensor names map back to HF names (token_embd.weight -> model.embed_tokens.weight,
 * blk.N.attn_q.weight -> model.layers.N.self_attn.q_proj.weight, ...), dimensions are reversed
 * (GGUF lists the fastest first), llama q/k rows are un-permuted, Q8_0 is dequantized to F32.
 * Llama 3.1 RoPE is stored by llama.cpp only as per-pair frequency factors (rope_freqs.weight);
 * the scaling parameters are recovered from them (see rope_from_factors). Does not read the
 * tokenizer (gguf_vocab.c) and does not run anything.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/str.h"
#include "model/checkpoint_internal.h"
#include "model/gguf_internal.h"

/* A float stored as f32 in the file, back as the double its shortest decimal spelling names
 * (1e-5f -> 1e-05, not 9.99999974738e-06), so a config survives export + import. */
static double short_double(double f32) {
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, f32);
        double d = strtod(buf, NULL);
        if ((float)d == (float)f32) return d;
    }
    return f32;
}

static dspy_status need_int(const dspy_gguf *g, const char *arch, const char *name, bool required, int64_t dflt,
                            int32_t *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, name);
    int64_t v;
    if (!dspy_gguf_get_int(g, key, &v)) {
        if (dspy_gguf_find_key(g, key) >= 0)
            return dspy_fail(DSPY_ERR_FORMAT, "%s: metadata \"%s\" is not an integer", dspy_gguf_path(g), key);
        if (required)
            return dspy_fail(DSPY_ERR_FORMAT, "%s: metadata \"%s\" is missing (a %s model needs it)", dspy_gguf_path(g),
                             key, arch);
        v = dflt;
    }
    if (v < 0 || v > INT32_MAX)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: metadata \"%s\" is %lld, out of range", dspy_gguf_path(g), key,
                         (long long)v);
    *out = (int32_t)v;
    return DSPY_OK;
}

float dspy_gguf_llama3_factor(float freq, double factor, double low, double high, double old_ctx) {
    float wavelen = (float)(2.0 * M_PI) / freq;
    float low_wavelen = (float)(old_ctx / low), high_wavelen = (float)(old_ctx / high);
    if (wavelen < high_wavelen) return 1.0f;
    if (wavelen > low_wavelen) return (float)factor;
    float smooth = ((float)old_ctx / wavelen - (float)low) / (float)(high - low);
    return 1.0f / ((1.0f - smooth) / (float)factor + smooth);
}

static bool factors_match(const float *base, const float *r, int n, double factor, double low, double high,
                          double old_ctx) {
    for (int i = 0; i < n; i++) {
        float want = dspy_gguf_llama3_factor(base[i], factor, low, high, old_ctx);
        if (fabsf(want - r[i]) > 1e-4f * fabsf(r[i])) return false;
    }
    return true;
}

static double round_to(double x, double q) { return round(x / q) * q; }

/* Recovers (factor, low, high) from llama.cpp's per-pair factors r[i] (n = head_dim/2) for an
 * original context old_ctx. Each factor is 1 (short wavelengths), `factor` (long ones) or, in
 * between, 1/((1-s)/factor + s) with s = (old_ctx/wavelen - low)/(high - low), which is linear
 * in 1/wavelen: two such points give low and high. Fewer than two: Llama 3.1's defaults (1, 4)
 * when they reproduce every factor, else (no point in the band) a band between the unscaled
 * and the scaled wavelengths, which gives the same frequencies. */
static dspy_status rope_from_factors(const dspy_gguf *g, dspy_model_config *c, const float *r) {
    int n = c->head_dim / 2;
    dspy_model_config base = *c;
    base.rope_type = DSPY_ROPE_DEFAULT;
    float *f = malloc(sizeof(float) * (size_t)n);
    if (!f) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_rope_inv_freq(&base, f);
    double factor = 1.0;
    for (int i = 0; i < n; i++) factor = fmax(factor, r[i]);
    double old_ctx = c->rope_original_max_position_embeddings;
    double xs[2] = {0, 0}, ss[2] = {0, 0};
    int k = 0;
    for (int i = 0; i < n && factor > 1; i++) {
        if (fabs(r[i] - 1.0) < 1e-6 || fabs(r[i] - factor) < 1e-6 * factor) continue;
        double s = (1.0 / r[i] - 1.0 / factor) / (1.0 - 1.0 / factor);
        double x = old_ctx / ((float)(2.0 * M_PI) / f[i]);
        int slot = k < 2 ? k : 1; /* keep the first and the last smooth point */
        xs[slot] = x;
        ss[slot] = s;
        k++;
    }
    double low = 1.0, high = 4.0;
    if (k >= 2 && xs[1] != xs[0]) {
        double a = (ss[1] - ss[0]) / (xs[1] - xs[0]), b = ss[0] - a * xs[0];
        if (a > 0) {
            low = round_to(-b / a, 1e-4);
            high = round_to(low + 1.0 / a, 1e-4);
        }
    }
    bool ok = factor > 1 && low > 0 && high > low && factors_match(f, r, n, factor, low, high, old_ctx);
    if (!ok && factor > 1 && factors_match(f, r, n, factor, 1.0, 4.0, old_ctx)) {
        low = 1.0;
        high = 4.0;
        ok = true;
    }
    if (!ok && factor > 1 && k == 0) {
        /* No pair in the smooth band: any band between the longest unscaled wavelength and the
         * shortest scaled one gives the same frequencies; take its middle third. */
        double w1 = 0, wf = INFINITY;
        for (int i = 0; i < n; i++) {
            double w = (float)(2.0 * M_PI) / f[i];
            if (fabs(r[i] - 1.0) < 1e-6) w1 = fmax(w1, w);
            else wf = fmin(wf, w);
        }
        if (w1 < wf && isfinite(wf)) {
            high = old_ctx / (w1 + (wf - w1) / 3);
            low = old_ctx / (w1 + 2 * (wf - w1) / 3);
            ok = factors_match(f, r, n, factor, low, high, old_ctx);
        }
    }
    free(f);
    if (factor <= 1.0) return DSPY_OK; /* all ones: plain RoPE */
    if (!ok)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: rope_freqs.weight does not follow Llama 3.1's RoPE scaling for an "
                         "original context of %.0f (set %s.rope.scaling.original_context_length if it differs); "
                         "dspy.c cannot reproduce these frequencies", dspy_gguf_path(g), old_ctx,
                         c->arch == DSPY_ARCH_LLAMA ? "llama" : "qwen2");
    c->rope_type = DSPY_ROPE_LLAMA3;
    c->rope_factor = factor;
    c->rope_low_freq_factor = low;
    c->rope_high_freq_factor = high;
    return DSPY_OK;
}

/* Adds id to the eos set when it is a valid id not yet there. */
static void add_eos(dspy_model_config *c, int64_t id) {
    if (id < 0 || id >= c->vocab_size || c->n_eos >= DSPY_MAX_EOS) return;
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_token_ids[i] == id) return;
    c->eos_token_ids[c->n_eos++] = (int32_t)id;
}

/* Token texts llama.cpp's vocabulary loader treats as end of generation (llama-vocab.cpp). */
static const char *const k_eog_texts[] = {"<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>"};

dspy_status dspy_gguf_model_config(const dspy_gguf *g, dspy_model_config *out) {
    memset(out, 0, sizeof *out);
    const char *path = dspy_gguf_path(g);
    const char *arch = dspy_gguf_get_str(g, "general.architecture");
    dspy_model_config c;
    memset(&c, 0, sizeof c);
    if (!arch)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: metadata \"general.architecture\" is missing", path);
    if (strcmp(arch, "llama") == 0) c.arch = DSPY_ARCH_LLAMA;
    else if (strcmp(arch, "qwen2") == 0) c.arch = DSPY_ARCH_QWEN2;
    else
        return dspy_fail(DSPY_ERR_FORMAT, "%s: architecture \"%s\" is not supported (dspy.c runs llama and qwen2)", path,
                         arch);
    dspy_status st;
    if ((st = need_int(g, arch, "embedding_length", true, 0, &c.hidden_size)) ||
        (st = need_int(g, arch, "feed_forward_length", true, 0, &c.intermediate_size)) ||
        (st = need_int(g, arch, "block_count", true, 0, &c.num_hidden_layers)) ||
        (st = need_int(g, arch, "attention.head_count", true, 0, &c.num_attention_heads)) ||
        (st = need_int(g, arch, "attention.head_count_kv", false, c.num_attention_heads, &c.num_key_value_heads)) ||
        (st = need_int(g, arch, "context_length", true, 0, &c.max_position_embeddings)))
        return st;
    int32_t rope_dim = 0, key_len = 0, value_len = 0;
    if (c.num_attention_heads <= 0)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: %s.attention.head_count is 0", path, arch);
    int32_t dflt_hs = c.hidden_size / c.num_attention_heads;
    if ((st = need_int(g, arch, "rope.dimension_count", false, dflt_hs, &rope_dim)) ||
        (st = need_int(g, arch, "attention.key_length", false, rope_dim, &key_len)) ||
        (st = need_int(g, arch, "attention.value_length", false, key_len, &value_len)))
        return st;
    if (key_len != value_len || rope_dim != key_len)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: key_length %d, value_length %d and rope.dimension_count %d differ; "
                         "dspy.c needs one head size with full rotary embedding", path, key_len, value_len, rope_dim);
    c.head_dim = key_len;
    char key[128];
    double eps, theta = 10000.0;
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
    if (!dspy_gguf_get_float(g, key, &eps))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: metadata \"%s\" is missing or not a float", path, key);
    c.rms_norm_eps = short_double(eps);
    snprintf(key, sizeof key, "%s.rope.freq_base", arch);
    if (dspy_gguf_get_float(g, key, &theta)) theta = short_double(theta);
    c.rope_theta = theta;
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    const char *scaling = dspy_gguf_get_str(g, key);
    if (scaling && strcmp(scaling, "none") != 0)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: RoPE scaling \"%s\" is not supported (dspy.c runs plain and Llama 3.1 "
                         "RoPE)", path, scaling);

    /* vocabulary and tying from the tensors themselves */
    const dspy_gguf_tensor *emb = dspy_gguf_tensor_find(g, "token_embd.weight");
    if (!emb || emb->ndim != 2)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"token_embd.weight\" is missing or not 2-D", path);
    if (emb->ne[1] > INT32_MAX)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: token_embd.weight has %lld rows", path, (long long)emb->ne[1]);
    c.vocab_size = (int32_t)emb->ne[1];
    dspy_gguf_vtype et;
    size_t ntok = 0;
    if (dspy_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &ntok) && ntok != (size_t)c.vocab_size)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %zu entries but token_embd.weight has %d rows",
                         path, ntok, c.vocab_size);
    c.tie_word_embeddings = dspy_gguf_tensor_find(g, "output.weight") == NULL;
    c.qkv_bias = dspy_gguf_tensor_find(g, "blk.0.attn_q.bias") != NULL;
    c.o_bias = dspy_gguf_tensor_find(g, "blk.0.attn_output.bias") != NULL;
    if (c.arch == DSPY_ARCH_QWEN2 && (!c.qkv_bias || c.o_bias))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: a qwen2 model has q/k/v biases and no o_proj bias; this file %s", path,
                         c.o_bias ? "has an attn_output bias" : "lacks blk.0.attn_q.bias");
    switch (emb->type) {
    case GGML_TYPE_F16: c.dtype = DSPY_DTYPE_F16; break;
    case GGML_TYPE_BF16: c.dtype = DSPY_DTYPE_BF16; break;
    default: c.dtype = DSPY_DTYPE_F32; break;
    }

    /* Llama 3.1 RoPE from rope_freqs.weight */
    const dspy_gguf_tensor *rf = dspy_gguf_tensor_find(g, "rope_freqs.weight");
    int32_t orig = 8192;
    if ((st = need_int(g, arch, "rope.scaling.original_context_length", false, 8192, &orig))) return st;
    c.rope_original_max_position_embeddings = orig;
    if (rf) {
        if (rf->type != GGML_TYPE_F32 || rf->ndim != 1 || rf->ne[0] != c.head_dim / 2)
            return dspy_fail(DSPY_ERR_FORMAT, "%s: rope_freqs.weight must be F32 with head_dim/2 = %d values", path,
                             c.head_dim / 2);
        float *r = malloc(sizeof(float) * (size_t)rf->ne[0]);
        if (!r) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        memcpy(r, rf->data, sizeof(float) * (size_t)rf->ne[0]);
        st = rope_from_factors(g, &c, r);
        free(r);
        if (st) return st;
    }
    if (c.rope_type != DSPY_ROPE_LLAMA3) c.rope_original_max_position_embeddings = 0;

    /* special tokens */
    int64_t v;
    c.bos_token_id = dspy_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v) && v >= 0 && v < c.vocab_size
                         ? (int32_t)v
                         : -1;
    static const char *const eos_keys[] = {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                           "tokenizer.ggml.eom_token_id"};
    for (size_t i = 0; i < 3; i++)
        if (dspy_gguf_get_int(g, eos_keys[i], &v)) add_eos(&c, v);
    for (size_t id = 0; id < ntok; id++) {
        size_t len;
        const char *s = dspy_gguf_arr_str(g, "tokenizer.ggml.tokens", id, &len);
        for (size_t k = 0; k < sizeof k_eog_texts / sizeof k_eog_texts[0]; k++)
            if (len == strlen(k_eog_texts[k]) && memcmp(s, k_eog_texts[k], len) == 0) add_eos(&c, (int64_t)id);
    }

    /* sampling defaults (gguf-py's general.sampling.*) */
    double t, p;
    c.gen_temperature = 1.0;
    c.gen_top_p = 1.0;
    if (dspy_gguf_get_float(g, "general.sampling.temp", &t)) {
        c.has_generation_config = true;
        c.gen_do_sample = t > 0;
        c.gen_temperature = short_double(t);
    }
    if (dspy_gguf_get_float(g, "general.sampling.top_p", &p)) {
        c.has_generation_config = true;
        c.gen_top_p = short_double(p);
    }
    if (dspy_gguf_get_int(g, "general.sampling.top_k", &v)) {
        c.has_generation_config = true;
        c.gen_top_k = (int32_t)v;
    }
    if ((st = dspy_model_config_validate(&c, path))) return st;
    *out = c;
    return DSPY_OK;
}

dspy_status dspy_gguf_config_load(const char *path, dspy_model_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    dspy_gguf *g;
    dspy_status st = dspy_gguf_open(path, &g);
    if (st) return st;
    st = dspy_gguf_model_config(g, cfg);
    dspy_gguf_free(g);
    return st;
}

const char *dspy_gguf_chat_template(const dspy_gguf *g) { return dspy_gguf_get_str(g, "tokenizer.chat_template"); }

/* ---- the checkpoint --------------------------------------------------------------------- */

/* What the checkpoint owns: the mapping, names, and converted tensors. */
typedef struct {
    dspy_gguf *g;
    dspy_tensor_info *t;
    void **owned;
    size_t n;
} gguf_ckpt;

static void ckpt_free(void *p) {
    gguf_ckpt *o = p;
    if (!o) return;
    for (size_t i = 0; i < o->n; i++) {
        free((char *)o->t[i].name);
        free(o->owned[i]);
    }
    free(o->t);
    free(o->owned);
    dspy_gguf_free(o->g);
    free(o);
}

/* GGUF per-layer names and their HF suffixes; `perm` marks the llama q/k permutation (1: the
 * query heads, 2: the key/value heads). */
static const struct {
    const char *gguf, *hf;
    int perm;
} k_layer_names[] = {
    {"attn_norm.weight", "input_layernorm.weight", 0},
    {"attn_q.weight", "self_attn.q_proj.weight", 1},
    {"attn_q.bias", "self_attn.q_proj.bias", 1},
    {"attn_k.weight", "self_attn.k_proj.weight", 2},
    {"attn_k.bias", "self_attn.k_proj.bias", 2},
    {"attn_v.weight", "self_attn.v_proj.weight", 0},
    {"attn_v.bias", "self_attn.v_proj.bias", 0},
    {"attn_output.weight", "self_attn.o_proj.weight", 0},
    {"attn_output.bias", "self_attn.o_proj.bias", 0},
    {"ffn_norm.weight", "post_attention_layernorm.weight", 0},
    {"ffn_gate.weight", "mlp.gate_proj.weight", 0},
    {"ffn_up.weight", "mlp.up_proj.weight", 0},
    {"ffn_down.weight", "mlp.down_proj.weight", 0},
};

/* The HF name of a GGUF tensor (malloc'd) and its permutation kind; NULL name for rope_freqs
 * (consumed by the config); DSPY_ERR_FORMAT for a name with no HF counterpart. */
static dspy_status hf_name(const dspy_gguf *g, const char *name, char **out, int *perm) {
    *out = NULL;
    *perm = 0;
    dspy_str s = DSPY_STR_INIT;
    if (strcmp(name, "rope_freqs.weight") == 0) return DSPY_OK;
    if (strcmp(name, "token_embd.weight") == 0) dspy_str_append(&s, "model.embed_tokens.weight");
    else if (strcmp(name, "output_norm.weight") == 0) dspy_str_append(&s, "model.norm.weight");
    else if (strcmp(name, "output.weight") == 0) dspy_str_append(&s, "lm_head.weight");
    else if (strncmp(name, "blk.", 4) == 0) {
        char *end;
        long layer = strtol(name + 4, &end, 10);
        if (end != name + 4 && *end == '.' && layer >= 0)
            for (size_t i = 0; i < sizeof k_layer_names / sizeof k_layer_names[0]; i++)
                if (strcmp(end + 1, k_layer_names[i].gguf) == 0) {
                    dspy_str_appendf(&s, "model.layers.%ld.%s", layer, k_layer_names[i].hf);
                    *perm = k_layer_names[i].perm;
                }
    }
    if (s.len == 0 && dspy_str_ok(&s))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\" has no Hugging Face counterpart in a llama/qwen2 model; "
                         "dspy.c cannot run this file", dspy_gguf_path(g), name);
    *out = dspy_str_take(&s);
    return *out ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
}

/* Fills `t` for GGUF tensor `src`: HF shape, dtype, data (into the mapping or a converted copy
 * kept in *owned). perm_heads > 0 un-permutes the rows in groups of that many heads. */
static dspy_status convert_tensor(const dspy_gguf *g, const dspy_gguf_tensor *src, int64_t perm_heads,
                                  dspy_tensor_info *t, void **owned) {
    t->ndim = src->ndim;
    for (int d = 0; d < src->ndim; d++) t->shape[d] = src->ne[src->ndim - 1 - d];
    t->offset = (size_t)src->offset;
    t->file = dspy_gguf_path(g);
    size_t numel = (size_t)dspy_tensor_numel(t);
    int64_t rows = src->ndim == 1 ? src->ne[0] : (int64_t)(numel / (size_t)src->ne[0]);
    size_t row_elems = src->ndim == 1 ? 1 : (size_t)src->ne[0];
    switch (src->type) {
    case GGML_TYPE_F32: t->dtype = DSPY_DTYPE_F32; break;
    case GGML_TYPE_F16: t->dtype = DSPY_DTYPE_F16; break;
    case GGML_TYPE_BF16: t->dtype = DSPY_DTYPE_BF16; break;
    case GGML_TYPE_Q8_0: t->dtype = DSPY_DTYPE_F32; break;
    default:
        return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\" is %s; dspy.c reads F32, F16, BF16 and Q8_0 GGUF tensors "
                         "(export again with dspy export --dtype q8_0, or use llama-quantize to requantize)",
                         dspy_gguf_path(g), src->name, dspy_gguf_type_name(src->type));
    }
    t->nbytes = numel * dspy_dtype_size(t->dtype);
    if (perm_heads > 0 && (rows % (2 * perm_heads) != 0))
        return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\" has %lld rows, not a multiple of 2 x %lld heads",
                         dspy_gguf_path(g), src->name, (long long)rows, (long long)perm_heads);
    if (src->type != GGML_TYPE_Q8_0 && perm_heads == 0) {
        t->data = src->data;
        return DSPY_OK;
    }
    void *buf = malloc(t->nbytes ? t->nbytes : 1);
    if (!buf) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory for tensor \"%s\"", dspy_gguf_path(g), src->name);
    const void *from = src->data;
    float *deq = NULL;
    if (src->type == GGML_TYPE_Q8_0) {
        deq = perm_heads > 0 ? malloc(t->nbytes) : buf;
        if (!deq) {
            free(buf);
            return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory for tensor \"%s\"", dspy_gguf_path(g), src->name);
        }
        dspy_gguf_dequantize_q8_0(src->data, numel, deq);
        from = deq;
    }
    if (perm_heads > 0)
        dspy_gguf_permute_rows(from, buf, rows, row_elems * dspy_dtype_size(t->dtype), perm_heads, false);
    if (deq && deq != buf) free(deq);
    *owned = buf;
    t->data = buf;
    return DSPY_OK;
}

dspy_status dspy_checkpoint_open_gguf(const char *path, dspy_model_config *cfg_out, dspy_checkpoint **out) {
    *out = NULL;
    if (cfg_out) memset(cfg_out, 0, sizeof *cfg_out);
    dspy_model_config cfg;
    gguf_ckpt *o = calloc(1, sizeof *o);
    if (!o) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", path);
    dspy_status st = dspy_gguf_open(path, &o->g);
    if (st) goto fail;
    if ((st = dspy_gguf_model_config(o->g, &cfg))) goto fail;
    size_t n = dspy_gguf_tensor_count(o->g);
    o->t = calloc(n ? n : 1, sizeof *o->t);
    o->owned = calloc(n ? n : 1, sizeof *o->owned);
    if (!o->t || !o->owned) {
        st = dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        const dspy_gguf_tensor *src = dspy_gguf_tensor_at(o->g, i);
        char *name;
        int perm;
        if ((st = hf_name(o->g, src->name, &name, &perm))) goto fail;
        if (!name) continue;
        dspy_tensor_info *t = &o->t[o->n];
        t->name = name;
        o->n++;
        int64_t heads = 0;
        if (cfg.arch == DSPY_ARCH_LLAMA && perm == 1) heads = cfg.num_attention_heads;
        if (cfg.arch == DSPY_ARCH_LLAMA && perm == 2) heads = cfg.num_key_value_heads;
        if ((st = convert_tensor(o->g, src, heads, t, &o->owned[o->n - 1]))) goto fail;
    }
    if ((st = dspy_checkpoint_adopt(path, o->t, o->n, o, ckpt_free, out))) {
        o = NULL; /* adopt frees the owner on failure */
        goto fail;
    }
    if (cfg_out) *cfg_out = cfg;
    return DSPY_OK;
fail:
    ckpt_free(o);
    return st;
}
