/* trainable.c — a loaded model made trainable: fp32 weight copies, gradients, LoRA adapters,
 * the parameter list, the dropout RNG state, LoRA merging and export to a Hugging Face
 * directory (train/backward.h). The forward/backward pass is in backward.c.
 *
 * On a device (mirrored trainable) the blocks are allocated once with ops->alloc and uploaded
 * with ops->copy; the weights are read from the model into the host mirror first. Work on the
 * host (LoRA merge, export) runs on the mirror through a CPU backend after a download, so it is
 * the same code, with the same bits, as on the CPU.
 *
 * Follows peft's LoraLayer for initialisation (A: nn.Linear's default kaiming_uniform_(a=sqrt(5)),
 * i.e. U(-1/sqrt(in), 1/sqrt(in)); B: zeros), naming (get_peft_model_state_dict) and merging
 * (W += scaling * B @ A), and transformers' save_pretrained layout for export.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dspy/rng.h"
#include "dspy/safetensors.h"
#include "dspy/str.h"
#include "train/trainable_impl.h"

static const char *const k_lin_name[LIN_COUNT] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};

dspy_lora_config dspy_lora_config_default(void) {
    dspy_lora_config c = {8, 8.0f, 0.0f, true};
    return c;
}

void dspy_train_lin_dims(const dspy_model_config *c, int lin, int *in, int *out) {
    int C = c->hidden_size, I = c->intermediate_size;
    int Q = c->num_attention_heads * c->head_dim, KV = c->num_key_value_heads * c->head_dim;
    switch (lin) {
    case LIN_Q: *in = C, *out = Q; break;
    case LIN_K:
    case LIN_V: *in = C, *out = KV; break;
    case LIN_O: *in = Q, *out = C; break;
    case LIN_GATE:
    case LIN_UP: *in = C, *out = I; break;
    default: *in = I, *out = C; break;
    }
}

/* ---- the parameter list ----------------------------------------------------------------- */

static dspy_status add_param(dspy_trainable *t, size_t *cap, float *w, float *g, int32_t rows, int32_t cols,
                             int ndim, const char *fmt, ...) __attribute__((format(printf, 8, 9)));

/* The host mirror of backend pointer p inside one of the blocks (p itself when not mirrored). */
static float *host_of(const dspy_trainable *t, const float *p) {
    if (!t->mirrored || !p) return (float *)p;
    uintptr_t u = (uintptr_t)p;
    const float *blocks[3] = {t->wblock, t->gblock, t->lblock};
    float *mirrors[3] = {t->hwblock, t->hgblock, t->hlblock};
    size_t ns[3] = {t->wn, t->wn, t->ln};
    for (int i = 0; i < 3; i++) {
        uintptr_t b = (uintptr_t)blocks[i];
        if (blocks[i] && u >= b && u < b + ns[i] * sizeof(float)) return mirrors[i] + (u - b) / sizeof(float);
    }
    return NULL;
}

static dspy_status add_param(dspy_trainable *t, size_t *cap, float *w, float *g, int32_t rows, int32_t cols,
                             int ndim, const char *fmt, ...) {
    if (t->nparams == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        dspy_param *np = realloc(t->params, nc * sizeof *np);
        if (!np) return dspy_fail(DSPY_ERR_NOMEM, "trainable: out of memory");
        t->params = np;
        *cap = nc;
    }
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int len = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (len < 0) return dspy_fail(DSPY_ERR_NOMEM, "trainable: out of memory");
    dspy_param *p = &t->params[t->nparams++];
    p->name = s;
    p->dw = w;
    p->dg = g;
    p->w = host_of(t, w);
    p->g = host_of(t, g);
    p->n = (size_t)rows * (size_t)cols;
    p->shape[0] = rows;
    p->shape[1] = cols;
    p->ndim = ndim;
    return DSPY_OK;
}

/* Full fine-tuning: every weight, in HF named_parameters() order. */
static dspy_status list_full(dspy_trainable *t) {
    const dspy_model_config *c = &t->cfg;
    size_t cap = 0;
    dspy_status st;
    if ((st = add_param(t, &cap, t->embed, t->g_embed, c->vocab_size, c->hidden_size, 2, "model.embed_tokens.weight")))
        return st;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        train_layer *L = &t->layers[l];
        for (int k = 0; k < LIN_COUNT; k++) {
            int in, out;
            dspy_train_lin_dims(c, k, &in, &out);
            if ((st = add_param(t, &cap, L->w[k], L->gw[k], out, in, 2, "model.layers.%d.%s.weight", l, k_lin_name[k])))
                return st;
            if (L->b[k] && (st = add_param(t, &cap, L->b[k], L->gb[k], out, 1, 1, "model.layers.%d.%s.bias", l,
                                           k_lin_name[k])))
                return st;
        }
        if ((st = add_param(t, &cap, L->attn_norm, L->g_attn_norm, c->hidden_size, 1, 1,
                            "model.layers.%d.input_layernorm.weight", l)))
            return st;
        if ((st = add_param(t, &cap, L->mlp_norm, L->g_mlp_norm, c->hidden_size, 1, 1,
                            "model.layers.%d.post_attention_layernorm.weight", l)))
            return st;
    }
    if ((st = add_param(t, &cap, t->final_norm, t->g_final_norm, c->hidden_size, 1, 1, "model.norm.weight")))
        return st;
    if (!c->tie_word_embeddings &&
        (st = add_param(t, &cap, t->lm_head, t->g_lm_head, c->vocab_size, c->hidden_size, 2, "lm_head.weight")))
        return st;
    return DSPY_OK;
}

/* LoRA: A then B of every adapted module, peft's state-dict names and order. */
static dspy_status list_lora(dspy_trainable *t) {
    const dspy_model_config *c = &t->cfg;
    size_t cap = 0;
    int r = t->lora.r;
    dspy_status st;
    for (int l = 0; l < c->num_hidden_layers; l++)
        for (int k = 0; k < LIN_COUNT; k++) {
            lora_adapter *a = &t->layers[l].lora[k];
            int in, out;
            dspy_train_lin_dims(c, k, &in, &out);
            if ((st = add_param(t, &cap, a->A, a->gA, r, in, 2, "base_model.model.model.layers.%d.%s.lora_A.weight", l,
                                k_lin_name[k])))
                return st;
            if ((st = add_param(t, &cap, a->B, a->gB, out, r, 2, "base_model.model.model.layers.%d.%s.lora_B.weight", l,
                                k_lin_name[k])))
                return st;
        }
    return DSPY_OK;
}

/* ---- construction ----------------------------------------------------------------------- */

/* Next chunk of n floats from *cur. */
static float *carve(float **cur, size_t n) {
    float *p = *cur;
    *cur += n;
    return p;
}

/* Copies the model's weights (through dspy_model_tensor_read_f32, whatever device and dtype the
 * model keeps them in) into the host mirror of t->wblock in parameter order and sets the layer
 * pointers (into t->wblock, t->gblock). */
static dspy_status copy_weights(dspy_trainable *t, bool full) {
    const dspy_model_config *c = &t->cfg;
    size_t C = (size_t)c->hidden_size, V = (size_t)c->vocab_size;
    float *cur = t->wblock, *gcur = t->gblock;
    dspy_status st = DSPY_OK;
    char name[128];
#define TAKE(dst, gdst, n, ...)                                                    \
    do {                                                                           \
        (dst) = carve(&cur, (n));                                                  \
        snprintf(name, sizeof name, __VA_ARGS__);                                  \
        if ((st = dspy_model_tensor_read_f32(t->m, name, host_of(t, dst), (n)))) return st; \
        if (full) (gdst) = carve(&gcur, (n));                                      \
    } while (0)
    TAKE(t->embed, t->g_embed, V * C, "model.embed_tokens.weight");
    for (int l = 0; l < c->num_hidden_layers; l++) {
        train_layer *L = &t->layers[l];
        for (int k = 0; k < LIN_COUNT; k++) {
            int in, out;
            dspy_train_lin_dims(c, k, &in, &out);
            TAKE(L->w[k], L->gw[k], (size_t)out * in, "model.layers.%d.%s.weight", l, k_lin_name[k]);
            bool has_bias = (k <= LIN_V && c->qkv_bias) || (k == LIN_O && c->o_bias);
            if (has_bias) TAKE(L->b[k], L->gb[k], (size_t)out, "model.layers.%d.%s.bias", l, k_lin_name[k]);
        }
        TAKE(L->attn_norm, L->g_attn_norm, C, "model.layers.%d.input_layernorm.weight", l);
        TAKE(L->mlp_norm, L->g_mlp_norm, C, "model.layers.%d.post_attention_layernorm.weight", l);
    }
    TAKE(t->final_norm, t->g_final_norm, C, "model.norm.weight");
    if (c->tie_word_embeddings) {
        t->lm_head = t->embed;
        t->g_lm_head = t->g_embed;
    } else {
        TAKE(t->lm_head, t->g_lm_head, V * C, "lm_head.weight");
    }
#undef TAKE
    return DSPY_OK;
}

static size_t weights_numel(const dspy_model_config *c) {
    size_t C = (size_t)c->hidden_size, V = (size_t)c->vocab_size, n = V * C + C;
    if (!c->tie_word_embeddings) n += V * C;
    for (int k = 0; k < LIN_COUNT; k++) {
        int in, out;
        dspy_train_lin_dims(c, k, &in, &out);
        n += (size_t)c->num_hidden_layers * (size_t)in * out;
    }
    size_t per_layer_bias = 2 * C;
    if (c->qkv_bias)
        per_layer_bias += (size_t)(c->num_attention_heads + 2 * c->num_key_value_heads) * c->head_dim;
    if (c->o_bias) per_layer_bias += C;
    return n + (size_t)c->num_hidden_layers * per_layer_bias;
}

static dspy_status check_lora(const dspy_lora_config *l) {
    if (l->r < 1)
        return dspy_fail(DSPY_ERR_ARG, "LoRA rank r is %d; it must be at least 1 (peft's default is 8)", (int)l->r);
    if (!isfinite(l->alpha) || l->alpha <= 0)
        return dspy_fail(DSPY_ERR_ARG, "LoRA alpha is %g; it must be a positive number (peft's default is 8)",
                         (double)l->alpha);
    if (!(l->dropout >= 0 && l->dropout < 1))
        return dspy_fail(DSPY_ERR_ARG, "LoRA dropout is %g; it must be in [0, 1)", (double)l->dropout);
    return DSPY_OK;
}

/* Backend blocks and their host mirrors: with a mirror, n floats on the backend (zeroed when
 * `zero`) plus a host array; without, one host array. */
static dspy_status block_new(dspy_trainable *t, size_t n, bool zero, float **dev, float **host) {
    *dev = *host = NULL;
    *host = zero ? calloc(n ? n : 1, sizeof(float)) : malloc((n ? n : 1) * sizeof(float));
    if (!*host) return dspy_fail(DSPY_ERR_NOMEM, "trainable: cannot allocate %zu MiB of host memory", n * 4 >> 20);
    if (!t->mirrored) {
        *dev = *host;
        return DSPY_OK;
    }
    dspy_status st = t->be->ops->alloc(t->be, (n ? n : 1) * sizeof(float), (void **)dev);
    if (st) return st;
    if (zero) st = t->be->ops->fill(t->be, dspy_bt(t->be, *dev, (int64_t)n, DSPY_DTYPE_F32), 0.0f);
    return st;
}

static void block_free(dspy_trainable *t, float *dev, float *host) {
    if (t->mirrored && dev) t->be->ops->free(t->be, dev);
    free(host);
}

/* Copies each block between backend and mirror (D2H or H2D), then waits. */
static dspy_status sync_blocks(dspy_trainable *t, dspy_copy_kind kind) {
    if (!t->mirrored) return DSPY_OK;
    dspy_backend *be = t->be;
    float *dev[3] = {t->wblock, t->gblock, t->lblock}, *host[3] = {t->hwblock, t->hgblock, t->hlblock};
    size_t ns[3] = {t->wn, t->wn, t->ln};
    for (int i = 0; i < 3; i++) {
        if (!dev[i] || !ns[i]) continue;
        size_t bytes = ns[i] * sizeof(float);
        DSPY_TRY(kind == DSPY_COPY_D2H ? be->ops->copy(be, host[i], dev[i], bytes, kind)
                                       : be->ops->copy(be, dev[i], host[i], bytes, kind));
    }
    return be->ops->sync(be);
}

dspy_status dspy_trainable_to_host(dspy_trainable *t) { return sync_blocks(t, DSPY_COPY_D2H); }

dspy_status dspy_trainable_to_device(dspy_trainable *t) {
    DSPY_TRY(sync_blocks(t, DSPY_COPY_H2D));
    return dspy_train_refresh_bf16(t); /* the working copies follow the uploaded master */
}

/* ---- mixed precision -------------------------------------------------------------------- */

/* BF16 elements of the working copy of an (out, in) weight, rounded up to 256 bytes. */
static size_t w16_span(size_t n) { return (n + 127) & ~(size_t)127; }

dspy_status dspy_train_refresh_bf16(dspy_trainable *t) {
    if (!t->bf16) return DSPY_OK;
    dspy_backend *be = t->be;
    const dspy_model_config *c = &t->cfg;
    for (int l = 0; l < c->num_hidden_layers; l++)
        for (int k = 0; k < LIN_COUNT; k++) {
            int in, out;
            dspy_train_lin_dims(c, k, &in, &out);
            int64_t n = (int64_t)in * out;
            DSPY_TRY(be->ops->cast(be, dspy_bt(be, t->layers[l].w16[k], n, DSPY_DTYPE_BF16),
                                   dspy_bt(be, t->layers[l].w[k], n, DSPY_DTYPE_F32)));
            const lora_adapter *a = &t->layers[l].lora[k];
            if (!a->A16) continue;
            int64_t na = (int64_t)t->lora.r * in, nb = (int64_t)out * t->lora.r;
            DSPY_TRY(be->ops->cast(be, dspy_bt(be, a->A16, na, DSPY_DTYPE_BF16),
                                   dspy_bt(be, a->A, na, DSPY_DTYPE_F32)));
            DSPY_TRY(be->ops->cast(be, dspy_bt(be, a->B16, nb, DSPY_DTYPE_BF16),
                                   dspy_bt(be, a->B, nb, DSPY_DTYPE_F32)));
        }
    int64_t nh = (int64_t)c->vocab_size * c->hidden_size;
    return be->ops->cast(be, dspy_bt(be, t->lm_head16, nh, DSPY_DTYPE_BF16),
                         dspy_bt(be, t->lm_head, nh, DSPY_DTYPE_F32));
}

static void bf16_free(dspy_trainable *t) {
    if (t->w16block) t->be->ops->free(t->be, t->w16block);
    t->w16block = t->lm_head16 = NULL;
    for (int l = 0; t->layers && l < t->cfg.num_hidden_layers; l++)
        for (int k = 0; k < LIN_COUNT; k++) {
            t->layers[l].w16[k] = NULL;
            t->layers[l].lora[k].A16 = t->layers[l].lora[k].B16 = NULL;
        }
    t->bf16 = false;
}

dspy_status dspy_trainable_set_bf16(dspy_trainable *t, bool on) {
    if (on == t->bf16) return DSPY_OK;
    if (!on) {
        DSPY_TRY(t->be->ops->sync(t->be)); /* a queued step may still read the copies */
        bf16_free(t);
        return DSPY_OK;
    }
    if (t->be->dev.type == DSPY_DEVICE_CPU)
        return dspy_fail(DSPY_ERR_ARG, "trainable: BF16 mixed precision needs a CUDA device (the CPU trainer "
                                       "computes in F32)");
    const dspy_model_config *c = &t->cfg;
    /* the linear weights, lm_head and (LoRA) every adapter's A and B, these end to end in the
     * parameters' order (as their masters and gradients: the optimizer updates them in one run) */
    size_t n = w16_span((size_t)c->vocab_size * (size_t)c->hidden_size), r = t->lora_on ? (size_t)t->lora.r : 0;
    for (int k = 0; k < LIN_COUNT; k++) {
        int in, out;
        dspy_train_lin_dims(c, k, &in, &out);
        n += (size_t)c->num_hidden_layers * (w16_span((size_t)in * (size_t)out) + r * ((size_t)in + (size_t)out));
    }
    dspy_status st = t->be->ops->alloc(t->be, n * sizeof(uint16_t), (void **)&t->w16block);
    if (st) return dspy_fail_wrap(st, "trainable: %zu MiB of BF16 working weights", n * sizeof(uint16_t) >> 20);
    uint16_t *cur = t->w16block;
    for (int l = 0; l < c->num_hidden_layers; l++)
        for (int k = 0; k < LIN_COUNT; k++) {
            int in, out;
            dspy_train_lin_dims(c, k, &in, &out);
            t->layers[l].w16[k] = cur;
            cur += w16_span((size_t)in * (size_t)out);
        }
    t->lm_head16 = cur;
    cur += w16_span((size_t)c->vocab_size * (size_t)c->hidden_size);
    for (int l = 0; r && l < c->num_hidden_layers; l++)
        for (int k = 0; k < LIN_COUNT; k++) {
            int in, out;
            dspy_train_lin_dims(c, k, &in, &out);
            t->layers[l].lora[k].A16 = cur, cur += r * (size_t)in;
            t->layers[l].lora[k].B16 = cur, cur += (size_t)out * r;
        }
    t->bf16 = true;
    /* the work buffers gain their BF16 scratch at the next reserve */
    if ((st = dspy_train_refresh_bf16(t))) bf16_free(t);
    return st;
}

bool dspy_trainable_bf16(const dspy_trainable *t) { return t->bf16; }
dspy_device dspy_trainable_device(const dspy_trainable *t) { return t->be->dev; }
bool dspy_trainable_mirrored(const dspy_trainable *t) { return t->mirrored; }

int32_t dspy_train_group_tokens(const dspy_trainable *t) {
    if (!t->bf16 || !t->mirrored) return 0;
    const char *e = getenv("DSPY_TRAIN_GROUP_TOKENS");
    int32_t v = e ? (int32_t)atoi(e) : DSPY_TRAIN_GROUP_DEFAULT;
    return v > 0 ? v : 0;
}

dspy_status dspy_trainable_plan(dspy_trainable *t, int32_t max_T, int max_seqs) {
    if (max_T < 1 || max_seqs < 1)
        return dspy_fail(DSPY_ERR_ARG, "trainable plan: %d tokens, %d sequences; both must be >= 1", (int)max_T,
                         max_seqs);
    /* a packed pass holds up to max_seqs sequences, within the group limit (a longer sequence
     * runs alone) */
    int64_t cap = max_T, g = dspy_train_group_tokens(t), all = (int64_t)max_T * max_seqs;
    if (g > cap) cap = all < g ? all : g;
    return dspy_train_work_reserve(t, (int32_t)cap, max_seqs);
}

dspy_status dspy_trainable_use_fast_kernels(dspy_trainable *t) {
    const dspy_model_config *c = &t->cfg;
    int32_t width = c->hidden_size > c->intermediate_size ? c->hidden_size : c->intermediate_size;
    return dspy_backend_cpu_use_fast(t->be, width);
}

dspy_status dspy_trainable_new(dspy_model *m, const dspy_lora_config *lora, uint64_t seed, dspy_trainable **out) {
    return dspy_trainable_new_on(m, lora, seed, (dspy_device){DSPY_DEVICE_CPU, 0}, false, out);
}

dspy_status dspy_trainable_new_on(dspy_model *m, const dspy_lora_config *lora, uint64_t seed, dspy_device dev,
                                  bool mirrored, dspy_trainable **out) {
    *out = NULL;
    dspy_status st;
    if (lora && lora->enabled && (st = check_lora(lora))) return st;
    dspy_trainable *t = calloc(1, sizeof *t);
    if (!t) return dspy_fail(DSPY_ERR_NOMEM, "trainable: out of memory");
    t->m = m;
    t->cfg = *dspy_model_config_get(m);
    t->seed = seed;
    t->rng_stride = 1;
    t->lora_on = lora && lora->enabled;
    if (t->lora_on) {
        t->lora = *lora;
        t->lora_scale = lora->alpha / (float)lora->r;
    }
    const dspy_model_config *c = &t->cfg;
    int L = c->num_hidden_layers;
    t->mirrored = mirrored || dev.type != DSPY_DEVICE_CPU;
    /* The backend computes the steps; its scratch grows with the longest sequence (or is
     * planned once by dspy_trainable_plan). */
    dspy_backend_plan plan = {64, 64, 1, c->vocab_size, c->num_attention_heads, c->head_dim,
                              dspy_model_n_threads(m), 0};
    if ((st = dspy_backend_new(dev, &plan, &t->be))) goto fail;
    t->host_be = t->be;
    if (dev.type != DSPY_DEVICE_CPU &&
        (st = dspy_backend_new((dspy_device){DSPY_DEVICE_CPU, 0}, &plan, &t->host_be))) {
        t->host_be = NULL;
        goto fail;
    }
    t->layers = calloc((size_t)L, sizeof *t->layers);
    if (!t->layers) {
        st = dspy_fail(DSPY_ERR_NOMEM, "trainable: out of memory");
        goto fail;
    }
    t->wn = weights_numel(c);
    if ((st = block_new(t, t->wn, false, &t->wblock, &t->hwblock))) goto fail;
    if (!t->lora_on && (st = block_new(t, t->wn, true, &t->gblock, &t->hgblock))) goto fail;
    if ((st = copy_weights(t, !t->lora_on))) goto fail;
    if (t->mirrored) {
        int hh = c->head_dim / 2;
        if ((st = t->be->ops->alloc(t->be, sizeof(float) * (size_t)(hh > 0 ? hh : 1), (void **)&t->inv_freq)))
            goto fail;
        if ((st = t->be->ops->copy(t->be, t->inv_freq, dspy_model_inv_freq(m), sizeof(float) * (size_t)hh,
                                   DSPY_COPY_H2D)))
            goto fail;
    } else {
        t->inv_freq = (float *)dspy_model_inv_freq(m);
    }
    if (t->lora_on) {
        size_t r = (size_t)t->lora.r, n = 0;
        for (int k = 0; k < LIN_COUNT; k++) {
            int in, o;
            dspy_train_lin_dims(c, k, &in, &o);
            n += (size_t)L * 2 * r * ((size_t)in + (size_t)o);
        }
        t->ln = n;
        if ((st = block_new(t, n, true, &t->lblock, &t->hlblock))) goto fail;
        /* every A and B first, then every gradient (one fill zeroes them all) */
        float *cur = t->lblock, *gcur = t->lblock + n / 2;
        uint64_t rs = seed;
        for (int l = 0; l < L; l++)
            for (int k = 0; k < LIN_COUNT; k++) {
                lora_adapter *a = &t->layers[l].lora[k];
                int in, o;
                dspy_train_lin_dims(c, k, &in, &o);
                a->A = carve(&cur, r * in);
                a->gA = carve(&gcur, r * in);
                a->B = carve(&cur, (size_t)o * r);
                a->gB = carve(&gcur, (size_t)o * r);
                double bound = 1.0 / sqrt((double)in); /* kaiming_uniform_(a=sqrt(5)) on (r, in) */
                float *A = host_of(t, a->A);
                for (size_t i = 0; i < r * (size_t)in; i++) {
                    double u = (double)(dspy_splitmix64(&rs) >> 11) * 0x1.0p-53;
                    A[i] = (float)((2.0 * u - 1.0) * bound);
                }
            }
        st = list_lora(t);
    } else {
        st = list_full(t);
    }
    if (st) goto fail;
    if ((st = dspy_trainable_to_device(t))) goto fail; /* the one upload (waits, so the mirror may change) */
    *out = t;
    return DSPY_OK;
fail:
    dspy_trainable_free(t);
    return st;
}

void dspy_trainable_free(dspy_trainable *t) {
    if (!t) return;
    for (size_t i = 0; i < t->nparams; i++) free((char *)t->params[i].name);
    free(t->params);
    if (t->be) {
        dspy_train_work_free(t->be, &t->work);
        bf16_free(t);
        block_free(t, t->wblock, t->hwblock);
        block_free(t, t->gblock, t->hgblock);
        block_free(t, t->lblock, t->hlblock);
        if (t->mirrored) t->be->ops->free(t->be, t->inv_freq);
    }
    if (t->host_be != t->be) dspy_backend_free(t->host_be);
    dspy_backend_free(t->be);
    free(t->layers);
    free(t);
}

/* ---- parameters, gradients, RNG --------------------------------------------------------- */

size_t dspy_trainable_nparams(const dspy_trainable *t) { return t->nparams; }

dspy_param *dspy_trainable_param(dspy_trainable *t, size_t i) { return i < t->nparams ? &t->params[i] : NULL; }

dspy_param *dspy_trainable_param_find(dspy_trainable *t, const char *name) {
    for (size_t i = 0; i < t->nparams; i++)
        if (strcmp(t->params[i].name, name) == 0) return &t->params[i];
    return NULL;
}

size_t dspy_trainable_numel(const dspy_trainable *t) {
    size_t n = 0;
    for (size_t i = 0; i < t->nparams; i++) n += t->params[i].n;
    return n;
}

dspy_status dspy_trainable_zero_grad(dspy_trainable *t) {
    if (!t->mirrored) {
        for (size_t i = 0; i < t->nparams; i++) memset(t->params[i].g, 0, sizeof(float) * t->params[i].n);
        return DSPY_OK;
    }
    if (t->gblock) /* full fine-tuning: one block holds every gradient */
        return t->be->ops->fill(t->be, dspy_bt(t->be, t->gblock, (int64_t)t->wn, DSPY_DTYPE_F32), 0.0f);
    if (t->lblock) /* LoRA: the second half of the adapters' block */
        return t->be->ops->fill(t->be, dspy_bt(t->be, t->lblock + t->ln / 2, (int64_t)(t->ln / 2), DSPY_DTYPE_F32),
                                0.0f);
    for (size_t i = 0; i < t->nparams; i++)
        DSPY_TRY(t->be->ops->fill(t->be, dspy_bt(t->be, t->params[i].dg, (int64_t)t->params[i].n, DSPY_DTYPE_F32),
                                  0.0f));
    return DSPY_OK;
}

bool dspy_train_can_overwrite(const dspy_trainable *t) {
    return t->mirrored && t->bf16 && t->gblock && !t->lora_on && t->be->ops->linear_backward_beta;
}

/* Whether a fresh pass overwrites gradient g: the linear weights' and lm_head's (the embedding's
 * when tied). */
bool dspy_train_is_linear_grad(const dspy_trainable *t, const float *g) {
    for (int l = 0; g && l < t->cfg.num_hidden_layers; l++)
        for (int k = 0; k < LIN_COUNT; k++)
            if (g == t->layers[l].gw[k]) return true;
    return false;
}

bool dspy_train_wgrad16_fits(const dspy_trainable *t) {
    for (int l = 0; l < t->cfg.num_hidden_layers; l++)
        for (int k = 0; k < LIN_COUNT; k++) {
            int in, out;
            dspy_train_lin_dims(&t->cfg, k, &in, &out);
            const float *g = t->layers[l].gw[k];
            if (g && (((size_t)in * (size_t)out) % 8 != 0 || (uintptr_t)g % 16 != 0)) return false;
        }
    return true;
}

static bool overwritten(const dspy_trainable *t, const float *g) {
    return g == t->g_lm_head || dspy_train_is_linear_grad(t, g);
}

dspy_status dspy_train_zero_uncovered(dspy_trainable *t) {
    if (!dspy_train_can_overwrite(t))
        return dspy_fail(DSPY_ERR_STATE, "train step: gradients cannot be overwritten on this trainable");
    /* one fill per run of adjacent parameters that need it (the norms of a layer sit together) */
    float *run = NULL;
    size_t n = 0;
    for (size_t i = 0; i <= t->nparams; i++) {
        dspy_param *p = i < t->nparams ? &t->params[i] : NULL;
        bool zero = p && !overwritten(t, p->dg);
        if (zero && run && run + n == p->dg) {
            n += p->n;
            continue;
        }
        if (run) DSPY_TRY(t->be->ops->fill(t->be, dspy_bt(t->be, run, (int64_t)n, DSPY_DTYPE_F32), 0.0f));
        run = zero ? p->dg : NULL;
        n = zero ? p->n : 0;
    }
    return DSPY_OK;
}

uint16_t *dspy_train_param_w16(const dspy_trainable *t, const dspy_param *p) {
    if (!t->bf16) return NULL;
    if (p->dw == t->lm_head) return t->lm_head16;
    for (int l = 0; l < t->cfg.num_hidden_layers; l++)
        for (int k = 0; k < LIN_COUNT; k++) {
            const lora_adapter *a = &t->layers[l].lora[k];
            if (p->dw == t->layers[l].w[k]) return t->layers[l].w16[k];
            if (a->A16 && p->dw == a->A) return a->A16;
            if (a->B16 && p->dw == a->B) return a->B16;
        }
    return NULL;
}

uint64_t dspy_trainable_rng_get(const dspy_trainable *t) { return t->rng; }
void dspy_trainable_rng_set(dspy_trainable *t, uint64_t state) { t->rng = state; }

bool dspy_trainable_has_lora(const dspy_trainable *t) { return t->lora_on; }
bool dspy_trainable_lora_merged(const dspy_trainable *t) { return t->merged; }

/* ---- LoRA merge ------------------------------------------------------------------------- */

/* W (out, in) += scale * B (out, r) @ A (r, in), through linear_backward's weight gradient
 * (dw += dout^T inp with dout = scale * B^T (r, out), inp = A). bt: scratch of r * out floats. */
static dspy_status merge_into(dspy_backend *be, float *W, const float *A, const float *B, int r, int in, int out,
                              float scale, float *bt) {
    for (int o = 0; o < out; o++)
        for (int k = 0; k < r; k++) bt[(size_t)k * out + o] = scale * B[(size_t)o * r + k];
    return be->ops->linear_backward(be, dspy_tensor_none(), dspy_bt(be, W, (int64_t)out * in, DSPY_DTYPE_F32),
                                    dspy_tensor_none(), dspy_bt(be, bt, (int64_t)r * out, DSPY_DTYPE_F32),
                                    dspy_bt(be, (float *)A, (int64_t)r * in, DSPY_DTYPE_F32), dspy_tensor_none(), r, in,
                                    out);
}

/* merge_into for adapter (l, k) of t, on the host mirror (host_be). */
static dspy_status merge_host(dspy_trainable *t, float *W, int l, int k, float *bt) {
    int in, out;
    dspy_train_lin_dims(&t->cfg, k, &in, &out);
    const lora_adapter *a = &t->layers[l].lora[k];
    return merge_into(t->host_be, W, host_of(t, a->A), host_of(t, a->B), t->lora.r, in, out, t->lora_scale, bt);
}

static int max_lin_out(const dspy_model_config *c) {
    int mx = 0;
    for (int k = 0; k < LIN_COUNT; k++) {
        int in, out;
        dspy_train_lin_dims(c, k, &in, &out);
        if (out > mx) mx = out;
    }
    return mx;
}

dspy_status dspy_trainable_merge_lora(dspy_trainable *t) {
    if (!t->lora_on) return dspy_fail(DSPY_ERR_STATE, "merge_lora: this trainable has no LoRA adapters");
    if (t->merged) return dspy_fail(DSPY_ERR_STATE, "merge_lora: the LoRA adapters are already merged");
    const dspy_model_config *c = &t->cfg;
    /* On a device: merge on the host mirror, then upload the merged weights. */
    dspy_status st = dspy_trainable_to_host(t);
    if (st) return st;
    float *bt = malloc(sizeof(float) * (size_t)t->lora.r * (size_t)max_lin_out(c));
    if (!bt) return dspy_fail(DSPY_ERR_NOMEM, "merge_lora: out of memory");
    for (int l = 0; l < c->num_hidden_layers && !st; l++)
        for (int k = 0; k < LIN_COUNT && !st; k++) st = merge_host(t, host_of(t, t->layers[l].w[k]), l, k, bt);
    free(bt);
    if (!st) st = dspy_trainable_to_device(t);
    if (st) return st;
    t->merged = true;
    return DSPY_OK;
}

/* ---- export ----------------------------------------------------------------------------- */

/* Copies the tokenizer files the source directory has. */
static dspy_status copy_tokenizer(const char *src, const char *dst) {
    static const char *const files[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                        "chat_template.jinja"};
    dspy_status st = DSPY_OK;
    for (size_t i = 0; i < sizeof files / sizeof *files && !st; i++) {
        dspy_str from = DSPY_STR_INIT, to = DSPY_STR_INIT;
        dspy_str_appendf(&from, "%s/%s", src, files[i]);
        dspy_str_appendf(&to, "%s/%s", dst, files[i]);
        struct stat sb;
        if (stat(dspy_str_cstr(&from), &sb) == 0 && strcmp(dspy_str_cstr(&from), dspy_str_cstr(&to)) != 0) {
            char *data = NULL;
            size_t n = 0;
            st = dspy_read_file(dspy_str_cstr(&from), &data, &n);
            if (!st) st = dspy_write_file(dspy_str_cstr(&to), data, n);
            free(data);
        }
        dspy_str_free(&from);
        dspy_str_free(&to);
    }
    return st;
}

static dspy_status parse_export_dtype(const char *s, dspy_dtype def, dspy_dtype *out) {
    if (!s) {
        *out = def == DSPY_DTYPE_BF16 || def == DSPY_DTYPE_F16 ? def : DSPY_DTYPE_F32;
        return DSPY_OK;
    }
    if (strcmp(s, "f32") == 0 || strcmp(s, "float32") == 0) *out = DSPY_DTYPE_F32;
    else if (strcmp(s, "bf16") == 0 || strcmp(s, "bfloat16") == 0) *out = DSPY_DTYPE_BF16;
    else if (strcmp(s, "f16") == 0 || strcmp(s, "float16") == 0) *out = DSPY_DTYPE_F16;
    else return dspy_fail(DSPY_ERR_ARG, "export: dtype \"%s\" is not supported (use f32, bf16 or f16)", s);
    return DSPY_OK;
}

/* One tensor of the exported file. */
typedef struct {
    const float *data;
    int layer, lin; /* lin >= 0: a linear weight that an unmerged LoRA must be merged into */
} export_src;

dspy_status dspy_trainable_export(dspy_trainable *t, const char *out_dir, const char *dtype) {
    const dspy_model_config *c = &t->cfg;
    dspy_dtype dt = DSPY_DTYPE_F32;
    dspy_status st = parse_export_dtype(dtype, c->dtype, &dt);
    if (st) return st;
    if ((st = dspy_mkdir_p(out_dir))) return st;
    dspy_model_config oc = *c;
    oc.dtype = dt;
    if ((st = dspy_write_text_owned(out_dir, "config.json", dspy_model_config_to_json(&oc)))) return st;
    if ((st = dspy_write_text_owned(out_dir, "generation_config.json", dspy_generation_config_to_json(&oc)))) return st;
    if ((st = copy_tokenizer(dspy_model_dir(t->m), out_dir))) return st;
    if ((st = dspy_trainable_to_host(t))) return st; /* a device trainable writes its mirror */

    /* The full-fine-tuning parameter list is exactly the file's tensor list; build it even for
     * LoRA (where t->params holds the adapters) by walking the same layout. */
    size_t n = 0, cap = 4 + (size_t)c->num_hidden_layers * 13;
    dspy_tensor_out *spec = calloc(cap, sizeof *spec);
    export_src *src = calloc(cap, sizeof *src);
    char **names = calloc(cap, sizeof *names);
    float *tmp = NULL, *bt = NULL;
    dspy_safetensors_writer *w = NULL;
    if (!spec || !src || !names) {
        st = dspy_fail(DSPY_ERR_NOMEM, "export: out of memory");
        goto done;
    }
#define ADD(ptr, layer_, lin_, rows, cols, ndim_, ...)                                       \
    do {                                                                                     \
        dspy_str nm_ = DSPY_STR_INIT;                                                        \
        dspy_str_appendf(&nm_, __VA_ARGS__);                                                 \
        names[n] = dspy_str_take(&nm_);                                                      \
        spec[n].name = names[n], spec[n].dtype = dt, spec[n].ndim = (ndim_);                 \
        spec[n].shape[0] = (rows), spec[n].shape[1] = (cols);                                \
        src[n].data = host_of(t, ptr), src[n].layer = (layer_), src[n].lin = (lin_);         \
        n++;                                                                                 \
    } while (0)
    ADD(t->embed, -1, -1, c->vocab_size, c->hidden_size, 2, "model.embed_tokens.weight");
    for (int l = 0; l < c->num_hidden_layers; l++) {
        train_layer *L = &t->layers[l];
        for (int k = 0; k < LIN_COUNT; k++) {
            int in, out;
            dspy_train_lin_dims(c, k, &in, &out);
            ADD(L->w[k], l, k, out, in, 2, "model.layers.%d.%s.weight", l, k_lin_name[k]);
            if (L->b[k]) ADD(L->b[k], l, -1, out, 0, 1, "model.layers.%d.%s.bias", l, k_lin_name[k]);
        }
        ADD(L->attn_norm, l, -1, c->hidden_size, 0, 1, "model.layers.%d.input_layernorm.weight", l);
        ADD(L->mlp_norm, l, -1, c->hidden_size, 0, 1, "model.layers.%d.post_attention_layernorm.weight", l);
    }
    ADD(t->final_norm, -1, -1, c->hidden_size, 0, 1, "model.norm.weight");
    if (!c->tie_word_embeddings) ADD(t->lm_head, -1, -1, c->vocab_size, c->hidden_size, 2, "lm_head.weight");
#undef ADD
    for (size_t i = 0; i < n; i++)
        if (!names[i]) {
            st = dspy_fail(DSPY_ERR_NOMEM, "export: out of memory");
            goto done;
        }
    bool merge = t->lora_on && !t->merged;
    if (merge) {
        size_t mx = 0;
        for (int k = 0; k < LIN_COUNT; k++) {
            int in, out;
            dspy_train_lin_dims(c, k, &in, &out);
            if ((size_t)in * out > mx) mx = (size_t)in * out;
        }
        tmp = malloc(sizeof(float) * mx);
        bt = malloc(sizeof(float) * (size_t)t->lora.r * (size_t)max_lin_out(c));
        if (!tmp || !bt) {
            st = dspy_fail(DSPY_ERR_NOMEM, "export: out of memory");
            goto done;
        }
    }
    dspy_str path = DSPY_STR_INIT;
    dspy_str_appendf(&path, "%s/model.safetensors", out_dir);
    st = dspy_safetensors_writer_open(dspy_str_cstr(&path), spec, n, NULL, &w);
    dspy_str_free(&path);
    if (st) goto done;
    for (size_t i = 0; i < n && !st; i++) {
        const float *data = src[i].data;
        if (merge && src[i].lin >= 0) {
            int in, out;
            dspy_train_lin_dims(c, src[i].lin, &in, &out);
            memcpy(tmp, data, sizeof(float) * (size_t)in * out);
            st = merge_host(t, tmp, src[i].layer, src[i].lin, bt);
            if (st) break;
            data = tmp;
        }
        st = dspy_safetensors_writer_put(w, i, data);
    }
    if (st) {
        dspy_safetensors_writer_abort(w);
    } else {
        st = dspy_safetensors_writer_close(w);
    }
done:
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    free(spec);
    free(src);
    free(tmp);
    free(bt);
    return st;
}
