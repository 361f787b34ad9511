/* weights.c — dspy_model: a model directory loaded for the CPU (config + fp32 weights).
 *
 * Maps the checkpoint, finds every tensor the config needs under its Hugging Face name, checks
 * its shape, and exposes fp32 pointers: F32 tensors point into the mapping, BF16/F16 tensors are
 * converted into one owned block. Tensors the model does not use (rotary inv_freq buffers,
 * lm_head.weight of a tied model) are ignored, as transformers does. Does not run anything:
 * the forward pass is in src/engine/forward.c.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/model.h"
#include "dspy/safetensors.h"
#include "dspy/str.h"

struct dspy_model {
    char *dir;
    dspy_model_config cfg;
    dspy_checkpoint *ck;
    dspy_model_weights w;
    float *owned;
    float *inv_freq;
    int32_t n_threads;
};

dspy_model_params dspy_model_params_default(void) {
    dspy_model_params p = {"cpu", 0};
    return p;
}

void dspy_model_free(dspy_model *m) {
    if (!m) return;
    free(m->w.layers);
    free(m->owned);
    free(m->inv_freq);
    dspy_checkpoint_free(m->ck);
    free(m->dir);
    free(m);
}

const dspy_model_config *dspy_model_config_get(const dspy_model *m) { return &m->cfg; }
const dspy_model_weights *dspy_model_weights_get(const dspy_model *m) { return &m->w; }
dspy_model_weights *dspy_model_weights_mut(dspy_model *m) { return &m->w; }
const float *dspy_model_inv_freq(const dspy_model *m) { return m->inv_freq; }
const char *dspy_model_dir(const dspy_model *m) { return m->dir; }
int32_t dspy_model_n_threads(const dspy_model *m) { return m->n_threads; }

/* One tensor the model needs. */
typedef struct {
    char name[96];
    const float **dst;
    int ndim;
    int64_t shape[2];
    const char *dims; /* what the expected shape comes from, for messages */
    const char *why;  /* why it must exist, for the missing-tensor message */
} need;

static dspy_status check_device(const dspy_model_params *p) {
    const char *dev = p && p->device ? p->device : "cpu";
    if (strcmp(dev, "cpu") == 0) return DSPY_OK;
    if (strncmp(dev, "cuda", 4) == 0 && (dev[4] == '\0' || dev[4] == ':'))
        return dspy_fail(DSPY_ERR_BACKEND, "device \"%s\": the CUDA engine is not available yet; use device \"cpu\"",
                         dev);
    return dspy_fail(DSPY_ERR_ARG, "device \"%s\" is not known (expected \"cpu\" or \"cuda[:N]\")", dev);
}

static int build_needs(dspy_model *m, need *nd) {
    const dspy_model_config *c = &m->cfg;
    int64_t C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    int64_t Q = (int64_t)c->num_attention_heads * c->head_dim, KV = (int64_t)c->num_key_value_heads * c->head_dim;
    int k = 0;
#define NEED(ptr, d0, d1, nd_, dimstr, whystr, ...)                                  \
    do {                                                                             \
        snprintf(nd[k].name, sizeof nd[k].name, __VA_ARGS__);                        \
        nd[k].dst = (ptr), nd[k].ndim = (nd_), nd[k].shape[0] = (d0), nd[k].shape[1] = (d1); \
        nd[k].dims = (dimstr), nd[k].why = (whystr);                                 \
        k++;                                                                         \
    } while (0)
    NEED(&m->w.embed, V, C, 2, "vocab_size, hidden_size", "", "model.embed_tokens.weight");
    for (int l = 0; l < c->num_hidden_layers; l++) {
        dspy_layer_weights *L = &m->w.layers[l];
        const char *p = "model.layers.";
        NEED(&L->attn_norm, C, 0, 1, "hidden_size", "", "%s%d.input_layernorm.weight", p, l);
        NEED(&L->wq, Q, C, 2, "num_attention_heads*head_dim, hidden_size", "", "%s%d.self_attn.q_proj.weight", p, l);
        NEED(&L->wk, KV, C, 2, "num_key_value_heads*head_dim, hidden_size", "", "%s%d.self_attn.k_proj.weight", p, l);
        NEED(&L->wv, KV, C, 2, "num_key_value_heads*head_dim, hidden_size", "", "%s%d.self_attn.v_proj.weight", p, l);
        NEED(&L->wo, C, Q, 2, "hidden_size, num_attention_heads*head_dim", "", "%s%d.self_attn.o_proj.weight", p, l);
        if (c->qkv_bias) {
            const char *why = c->arch == DSPY_ARCH_QWEN2 ? "; qwen2 has q/k/v biases" : "; attention_bias is true";
            NEED(&L->bq, Q, 0, 1, "num_attention_heads*head_dim", why, "%s%d.self_attn.q_proj.bias", p, l);
            NEED(&L->bk, KV, 0, 1, "num_key_value_heads*head_dim", why, "%s%d.self_attn.k_proj.bias", p, l);
            NEED(&L->bv, KV, 0, 1, "num_key_value_heads*head_dim", why, "%s%d.self_attn.v_proj.bias", p, l);
        }
        if (c->o_bias) NEED(&L->bo, C, 0, 1, "hidden_size", "; attention_bias is true", "%s%d.self_attn.o_proj.bias", p, l);
        NEED(&L->mlp_norm, C, 0, 1, "hidden_size", "", "%s%d.post_attention_layernorm.weight", p, l);
        NEED(&L->w_gate, I, C, 2, "intermediate_size, hidden_size", "", "%s%d.mlp.gate_proj.weight", p, l);
        NEED(&L->w_up, I, C, 2, "intermediate_size, hidden_size", "", "%s%d.mlp.up_proj.weight", p, l);
        NEED(&L->w_down, C, I, 2, "hidden_size, intermediate_size", "", "%s%d.mlp.down_proj.weight", p, l);
    }
    NEED(&m->w.final_norm, C, 0, 1, "hidden_size", "", "model.norm.weight");
    if (!c->tie_word_embeddings)
        NEED(&m->w.lm_head, V, C, 2, "vocab_size, hidden_size", "; tie_word_embeddings is false", "lm_head.weight");
#undef NEED
    return k;
}

/* Whether a tensor can be used straight from the mapping. */
static bool direct(const dspy_tensor_info *t) {
    return t->dtype == DSPY_DTYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0;
}

dspy_status dspy_model_load(const char *dir, const dspy_model_params *p, dspy_model **out) {
    *out = NULL;
    dspy_status st = check_device(p);
    if (st) return st;
    need *nd = NULL;
    const dspy_tensor_info **found = NULL;
    dspy_model *m = calloc(1, sizeof *m);
    if (!m) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", dir);
    m->dir = strdup(dir);
    if ((st = dspy_model_config_load(dir, &m->cfg))) goto fail;
    const dspy_model_config *c = &m->cfg;
    m->n_threads = p && p->n_threads > 0 ? p->n_threads : 0;
    m->inv_freq = malloc(sizeof(float) * (size_t)(c->head_dim / 2));
    m->w.layers = calloc((size_t)c->num_hidden_layers, sizeof *m->w.layers);
    size_t max_needs = 4 + 16 * (size_t)c->num_hidden_layers;
    nd = calloc(max_needs, sizeof *nd);
    found = calloc(max_needs, sizeof *found);
    if (!m->dir || !m->inv_freq || !m->w.layers || !nd || !found) {
        st = dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", dir);
        goto fail;
    }
    dspy_rope_inv_freq(c, m->inv_freq);
    if ((st = dspy_checkpoint_open(dir, &m->ck))) goto fail;
    const char *where = dspy_checkpoint_where(m->ck);
    int n = build_needs(m, nd);
    size_t owned = 0;
    for (int i = 0; i < n; i++) {
        const dspy_tensor_info *t = dspy_checkpoint_find(m->ck, nd[i].name);
        if (!t) {
            st = dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\" is missing (model_type %s, num_hidden_layers=%d%s)",
                           where, nd[i].name, c->arch == DSPY_ARCH_LLAMA ? "llama" : "qwen2",
                           c->num_hidden_layers, nd[i].why);
            goto fail;
        }
        bool ok = t->ndim == nd[i].ndim;
        for (int d = 0; ok && d < nd[i].ndim; d++) ok = t->shape[d] == nd[i].shape[d];
        if (!ok) {
            char got[160], want[160];
            dspy_tensor_shape_str(t->shape, t->ndim, got, sizeof got);
            dspy_tensor_shape_str(nd[i].shape, nd[i].ndim, want, sizeof want);
            st = dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\" has shape %s, but config.json implies %s (%s)",
                           t->file, nd[i].name, got, want, nd[i].dims);
            goto fail;
        }
        found[i] = t;
        if (!direct(t)) owned += (size_t)dspy_tensor_numel(t);
    }
    if (owned) {
        m->owned = malloc(owned * sizeof(float));
        if (!m->owned) {
            st = dspy_fail(DSPY_ERR_NOMEM, "%s: cannot allocate %zu MiB for fp32 weights", dir,
                           owned * sizeof(float) >> 20);
            goto fail;
        }
    }
    float *cur = m->owned;
    for (int i = 0; i < n; i++) {
        if (direct(found[i])) {
            *nd[i].dst = found[i]->data;
            continue;
        }
        if ((st = dspy_tensor_to_f32(found[i], cur))) goto fail;
        *nd[i].dst = cur;
        cur += dspy_tensor_numel(found[i]);
    }
    if (c->tie_word_embeddings) m->w.lm_head = m->w.embed;
    free(nd);
    free(found);
    *out = m;
    return DSPY_OK;
fail:
    free(nd);
    free(found);
    dspy_model_free(m);
    return st;
}
