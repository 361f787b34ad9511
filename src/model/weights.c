/* weights.c — dspy_model: a model directory loaded onto a device (config + weights).
 *
 * Maps the checkpoint, finds every tensor the config needs under its Hugging Face name, checks
 * its shape, and lays the weights out as the compute core wants them (dspy/model.h): q/k/v
 * stacked into one matrix and gate/up into another, matrices in the device's matrix dtype,
 * norm weights and biases in F32, plus the RoPE inverse frequencies. On the CPU a tensor that
 * needs no change points straight into the read-only mapping; everything else goes into one
 * owned block. For CUDA every tensor is converted on the host in chunks and uploaded into one
 * device allocation, after checking that it fits. Tensors the model does not use (rotary
 * inv_freq buffers, lm_head.weight of a tied model) are ignored, as transformers does. Does
 * not run anything: the forward pass is engine/forward.c.
 */
#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/backend.h"
#include "dspy/log.h"
#include "dspy/model.h"
#include "dspy/safetensors.h"
#include "dspy/str.h"
#include "kern/backend.h"
#include "model/f8_round.h"

/* One checkpoint tensor the model needs, and where it goes. */
typedef struct need {
    char name[96];
    int ndim;
    int64_t shape[2];
    const char *dims;              /* what the expected shape comes from, for messages */
    const char *why;               /* why it must exist, for the missing-tensor message */
    int dest;                      /* index of the model tensor it fills */
    int64_t off;                   /* element offset inside that model tensor */
    const dspy_tensor_info *found; /* the checkpoint's tensor */
} need;

/* One tensor as the model keeps it. */
typedef struct mtensor {
    dspy_tensor *t;      /* where the view is published */
    int64_t n;           /* elements */
    bool f32;            /* norm weight / bias / inv_freq: always F32 */
    int first, count;    /* its needs: nd[first .. first + count) */
    size_t off;          /* byte offset in the owned block, when owned */
    bool direct;         /* CPU: points into the mapping */
} mtensor;

/* A Hugging Face name and the part of a model tensor it is (for dspy_model_tensor_read_f32). */
typedef struct alias {
    char *name;
    dspy_tensor view;
} alias;

struct dspy_model {
    char *dir;
    dspy_model_config cfg;
    dspy_checkpoint *ck;     /* kept open on the CPU (tensors may point into it) */
    dspy_device dev;
    dspy_backend *be;        /* uploads and reads back (CUDA); NULL on the CPU */
    pthread_mutex_t be_mu;   /* one user of `be` at a time */
    dspy_model_weights w;
    dspy_layer_weights *layers;
    void *block;             /* owned tensors (device memory for CUDA) */
    size_t block_bytes;
    float *inv_freq;         /* (HS/2) host copy */
    dspy_dtype mdtype;       /* matrix dtype */
    alias *aliases;
    int n_aliases;
    int32_t n_threads;
    dspy_cpu_kernels cpu_kernels;
    bool f8;                 /* f8_decode: the matrices hold FP8-rounded values */
    bool f8_act;             /* f8_act: prompt GEMMs in W8A8 (CUDA) */
    void *f8_block;          /* CUDA, f8_decode: the matrices' FP8 codes and row scales */
    size_t f8_bytes;
    const void **f8_linked;  /* the BF16 matrices linked to them (kern/ops.h f8_link) */
    int n_f8;
};

dspy_model_params dspy_model_params_default(void) {
    dspy_model_params p = {"cpu", 0, false, DSPY_CPU_KERNELS_REFERENCE, false, false};
    return p;
}

void dspy_model_free(dspy_model *m) {
    if (!m) return;
    if (m->be) {
        for (int i = 0; i < m->n_f8; i++) m->be->ops->f8_unlink(m->be, m->f8_linked[i]);
        m->be->ops->free(m->be, m->f8_block);
        m->be->ops->free(m->be, m->block);
        dspy_backend_free(m->be);
        pthread_mutex_destroy(&m->be_mu);
    } else {
        free(m->block);
    }
    for (int i = 0; i < m->n_aliases; i++) free(m->aliases[i].name);
    free(m->aliases);
    free(m->f8_linked);
    free(m->layers);
    free(m->inv_freq);
    dspy_checkpoint_free(m->ck);
    free(m->dir);
    free(m);
}

const dspy_model_config *dspy_model_config_get(const dspy_model *m) { return &m->cfg; }
const dspy_model_weights *dspy_model_weights_get(const dspy_model *m) { return &m->w; }
dspy_device dspy_model_device(const dspy_model *m) { return m->dev; }
dspy_dtype dspy_model_matrix_dtype(const dspy_model *m) { return m->mdtype; }
size_t dspy_model_weight_bytes(const dspy_model *m) { return m->block_bytes + m->f8_bytes; }
bool dspy_model_f8_decode(const dspy_model *m) { return m->f8; }
bool dspy_model_f8_act(const dspy_model *m) { return m->f8_act; }
const float *dspy_model_inv_freq(const dspy_model *m) { return m->inv_freq; }
const char *dspy_model_dir(const dspy_model *m) { return m->dir; }
int32_t dspy_model_n_threads(const dspy_model *m) { return m->n_threads; }
dspy_cpu_kernels dspy_model_cpu_kernels(const dspy_model *m) { return m->cpu_kernels; }

/* ---- what the config needs ---------------------------------------------------------------- */

typedef struct plan {
    need *nd;
    int nn;
    mtensor *mt;
    int nm;
} plan;

static void add_need(plan *p, int dest, int64_t off, int64_t d0, int64_t d1, int ndim, const char *dims,
                     const char *why, const char *fmt, ...) __attribute__((format(printf, 9, 10)));
static void add_need(plan *p, int dest, int64_t off, int64_t d0, int64_t d1, int ndim, const char *dims,
                     const char *why, const char *fmt, ...) {
    need *n = &p->nd[p->nn++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(n->name, sizeof n->name, fmt, ap);
    va_end(ap);
    n->ndim = ndim, n->shape[0] = d0, n->shape[1] = d1, n->dims = dims, n->why = why;
    n->dest = dest, n->off = off, n->found = NULL;
}

/* Starts model tensor `t` of n elements; the needs added next fill it. */
static int add_mt(plan *p, dspy_tensor *t, int64_t n, bool f32) {
    mtensor *x = &p->mt[p->nm];
    memset(x, 0, sizeof *x);
    x->t = t, x->n = n, x->f32 = f32, x->first = p->nn;
    return p->nm++;
}

static void close_mt(plan *p, int i) { p->mt[i].count = p->nn - p->mt[i].first; }

static void build_plan(dspy_model *m, plan *p) {
    const dspy_model_config *c = &m->cfg;
    int64_t C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    int64_t Q = (int64_t)c->num_attention_heads * c->head_dim, KV = (int64_t)c->num_key_value_heads * c->head_dim;
    const char *L = "model.layers.";
    int t = add_mt(p, &m->w.embed, V * C, false);
    add_need(p, t, 0, V, C, 2, "vocab_size, hidden_size", "", "model.embed_tokens.weight");
    close_mt(p, t);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        dspy_layer_weights *lw = &m->layers[l];
        t = add_mt(p, &lw->attn_norm, C, true);
        add_need(p, t, 0, C, 0, 1, "hidden_size", "", "%s%d.input_layernorm.weight", L, l);
        close_mt(p, t);
        t = add_mt(p, &lw->wqkv, (Q + 2 * KV) * C, false);
        add_need(p, t, 0, Q, C, 2, "num_attention_heads*head_dim, hidden_size", "", "%s%d.self_attn.q_proj.weight", L, l);
        add_need(p, t, Q * C, KV, C, 2, "num_key_value_heads*head_dim, hidden_size", "",
                 "%s%d.self_attn.k_proj.weight", L, l);
        add_need(p, t, (Q + KV) * C, KV, C, 2, "num_key_value_heads*head_dim, hidden_size", "",
                 "%s%d.self_attn.v_proj.weight", L, l);
        close_mt(p, t);
        if (c->qkv_bias) {
            const char *why = c->arch == DSPY_ARCH_QWEN2 ? "; qwen2 has q/k/v biases" : "; attention_bias is true";
            t = add_mt(p, &lw->bqkv, Q + 2 * KV, true);
            add_need(p, t, 0, Q, 0, 1, "num_attention_heads*head_dim", why, "%s%d.self_attn.q_proj.bias", L, l);
            add_need(p, t, Q, KV, 0, 1, "num_key_value_heads*head_dim", why, "%s%d.self_attn.k_proj.bias", L, l);
            add_need(p, t, Q + KV, KV, 0, 1, "num_key_value_heads*head_dim", why, "%s%d.self_attn.v_proj.bias", L, l);
            close_mt(p, t);
        }
        t = add_mt(p, &lw->wo, C * Q, false);
        add_need(p, t, 0, C, Q, 2, "hidden_size, num_attention_heads*head_dim", "", "%s%d.self_attn.o_proj.weight", L, l);
        close_mt(p, t);
        if (c->o_bias) {
            t = add_mt(p, &lw->bo, C, true);
            add_need(p, t, 0, C, 0, 1, "hidden_size", "; attention_bias is true", "%s%d.self_attn.o_proj.bias", L, l);
            close_mt(p, t);
        }
        t = add_mt(p, &lw->mlp_norm, C, true);
        add_need(p, t, 0, C, 0, 1, "hidden_size", "", "%s%d.post_attention_layernorm.weight", L, l);
        close_mt(p, t);
        t = add_mt(p, &lw->w_gate_up, 2 * I * C, false);
        add_need(p, t, 0, I, C, 2, "intermediate_size, hidden_size", "", "%s%d.mlp.gate_proj.weight", L, l);
        add_need(p, t, I * C, I, C, 2, "intermediate_size, hidden_size", "", "%s%d.mlp.up_proj.weight", L, l);
        close_mt(p, t);
        t = add_mt(p, &lw->w_down, C * I, false);
        add_need(p, t, 0, C, I, 2, "hidden_size, intermediate_size", "", "%s%d.mlp.down_proj.weight", L, l);
        close_mt(p, t);
    }
    t = add_mt(p, &m->w.final_norm, C, true);
    add_need(p, t, 0, C, 0, 1, "hidden_size", "", "model.norm.weight");
    close_mt(p, t);
    if (!c->tie_word_embeddings) {
        t = add_mt(p, &m->w.lm_head, V * C, false);
        add_need(p, t, 0, V, C, 2, "vocab_size, hidden_size", "; tie_word_embeddings is false", "lm_head.weight");
        close_mt(p, t);
    }
    t = add_mt(p, &m->w.inv_freq, c->head_dim / 2, true); /* filled from m->inv_freq, no need */
    close_mt(p, t);
}

/* Finds every need in the checkpoint and checks its shape. */
static dspy_status find_all(dspy_model *m, plan *p) {
    const dspy_model_config *c = &m->cfg;
    const char *where = dspy_checkpoint_where(m->ck);
    for (int i = 0; i < p->nn; i++) {
        need *n = &p->nd[i];
        const dspy_tensor_info *t = dspy_checkpoint_find(m->ck, n->name);
        if (!t)
            return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\" is missing (model_type %s, num_hidden_layers=%d%s)",
                             where, n->name, c->arch == DSPY_ARCH_LLAMA ? "llama" : "qwen2", c->num_hidden_layers,
                             n->why);
        bool ok = t->ndim == n->ndim;
        for (int d = 0; ok && d < n->ndim; d++) ok = t->shape[d] == n->shape[d];
        if (!ok) {
            char got[160], want[160];
            dspy_tensor_shape_str(t->shape, t->ndim, got, sizeof got);
            dspy_tensor_shape_str(n->shape, n->ndim, want, sizeof want);
            return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\" has shape %s, but config.json implies %s (%s)",
                             t->file, n->name, got, want, n->dims);
        }
        if (t->dtype != DSPY_DTYPE_F32 && t->dtype != DSPY_DTYPE_BF16 && t->dtype != DSPY_DTYPE_F16 &&
            t->dtype != DSPY_DTYPE_F64)
            return dspy_fail(DSPY_ERR_FORMAT, "%s: tensor \"%s\" is %s; weights must be F32, BF16, F16 or F64",
                             t->file, n->name, dspy_dtype_name(t->dtype));
        n->found = t;
    }
    return DSPY_OK;
}

/* NaN/Inf weights make every answer garbage: a warning, or an error when the caller is strict.
 * One pass over every tensor, in parallel (it pages the file in, which the load does anyway)
 * on the model's n_threads: a caller that asked for one thread gets no OpenMP team, which
 * would otherwise stay parked in its process for good. */
static dspy_status check_finite(dspy_model *m, plan *p, bool strict) {
    int64_t bad[p->nn > 0 ? p->nn : 1], first[p->nn > 0 ? p->nn : 1];
    int nt = m->n_threads > 0 ? m->n_threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int i = 0; i < p->nn; i++) dspy_tensor_check_finite(p->nd[i].found, &bad[i], &first[i]);
    for (int i = 0; i < p->nn; i++) {
        if (bad[i] == 0) continue;
        const need *n = &p->nd[i];
        if (strict)
            return dspy_fail(DSPY_ERR_FORMAT,
                             "%s: tensor \"%s\" holds %lld NaN/Inf values (the first at flat index %lld); the "
                             "checkpoint is corrupt or comes from a diverged run. Re-export it, or load it without "
                             "--strict", n->found->file, n->name, (long long)bad[i], (long long)first[i]);
        dspy_log(DSPY_LOG_WARN,
                 "%s: tensor \"%s\" holds %lld NaN/Inf values (the first at flat index %lld); generation will "
                 "produce garbage. Pass --strict to refuse such checkpoints",
                 n->found->file, n->name, (long long)bad[i], (long long)first[i]);
    }
    (void)m;
    return DSPY_OK;
}

/* ---- conversion ---------------------------------------------------------------------------- */

/* Source element i of t as F32 (exact for F32/BF16/F16; F64 rounds). */
static float src_at(const dspy_tensor_info *t, size_t i) {
    switch (t->dtype) {
    case DSPY_DTYPE_F32: {
        float v;
        memcpy(&v, (const char *)t->data + i * 4, 4);
        return v;
    }
    case DSPY_DTYPE_BF16: {
        uint16_t h;
        memcpy(&h, (const char *)t->data + i * 2, 2);
        return dspy_bf16_to_f32(h);
    }
    case DSPY_DTYPE_F16: {
        uint16_t h;
        memcpy(&h, (const char *)t->data + i * 2, 2);
        return dspy_f16_to_f32(h);
    }
    default: {
        double v;
        memcpy(&v, (const char *)t->data + i * 8, 8);
        return (float)v;
    }
    }
}

/* Writes elements [i0, i0 + n) of t into dst as `to` (F32 or BF16). */
static void convert(const dspy_tensor_info *t, size_t i0, size_t n, dspy_dtype to, void *dst) {
    if (t->dtype == to) {
        memcpy(dst, (const char *)t->data + i0 * dspy_dtype_size(to), n * dspy_dtype_size(to));
        return;
    }
    if (to == DSPY_DTYPE_F32)
        for (size_t i = 0; i < n; i++) ((float *)dst)[i] = src_at(t, i0 + i);
    else
        for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = dspy_f32_to_bf16(src_at(t, i0 + i));
}

static dspy_dtype mt_dtype(const dspy_model *m, const mtensor *x) { return x->f32 ? DSPY_DTYPE_F32 : m->mdtype; }

/* ---- placing the weights ------------------------------------------------------------------- */

/* Decides direct vs owned per model tensor and the owned layout; returns the block size. */
static size_t layout(dspy_model *m, plan *p) {
    size_t off = 0;
    for (int i = 0; i < p->nm; i++) {
        mtensor *x = &p->mt[i];
        dspy_dtype dt = mt_dtype(m, x);
        x->direct = false;
        if (m->dev.type == DSPY_DEVICE_CPU && x->count == 1) {
            const dspy_tensor_info *t = p->nd[x->first].found;
            /* f8_decode rounds the matrices in place: they cannot stay in the read-only mapping */
            x->direct = t->dtype == dt && (uintptr_t)t->data % dspy_dtype_size(dt) == 0 && !(m->f8 && !x->f32);
        }
        if (x->direct) continue;
        off = (off + 255) & ~(size_t)255; /* every tensor 256-byte aligned (vector loads on CUDA) */
        x->off = off;
        off += (size_t)x->n * dspy_dtype_size(dt);
    }
    return off;
}

/* Publishes the dspy_tensor views once the block exists. */
static void publish(dspy_model *m, plan *p) {
    for (int i = 0; i < p->nm; i++) {
        mtensor *x = &p->mt[i];
        dspy_dtype dt = mt_dtype(m, x);
        void *data = x->direct ? (void *)p->nd[x->first].found->data : (char *)m->block + x->off;
        *x->t = dspy_tensor_make(data, x->n, dt, m->dev.type);
    }
    if (m->cfg.tie_word_embeddings) m->w.lm_head = m->w.embed;
}

/* CPU: converts the owned tensors in place in the host block. */
static void fill_cpu(dspy_model *m, plan *p) {
    for (int i = 0; i < p->nm; i++) {
        mtensor *x = &p->mt[i];
        if (x->direct) continue;
        dspy_dtype dt = mt_dtype(m, x);
        char *dst = (char *)m->block + x->off;
        if (x->t == &m->w.inv_freq) {
            memcpy(dst, m->inv_freq, sizeof(float) * (size_t)x->n);
            continue;
        }
        for (int k = 0; k < x->count; k++) {
            const need *n = &p->nd[x->first + k];
            convert(n->found, 0, (size_t)dspy_tensor_numel(n->found), dt, dst + (size_t)n->off * dspy_dtype_size(dt));
        }
    }
}

/* CUDA: converts on the host into a staging buffer, a chunk at a time, and uploads. */
static dspy_status fill_device(dspy_model *m, plan *p) {
    dspy_backend *be = m->be;
    enum { STAGE = 32 << 20 };
    char *stage = NULL;
    dspy_status st = be->ops->alloc_host(be, STAGE, (void **)&stage);
    if (st) return st;
    for (int i = 0; i < p->nm && !st; i++) {
        mtensor *x = &p->mt[i];
        dspy_dtype dt = mt_dtype(m, x);
        size_t es = dspy_dtype_size(dt);
        char *dst = (char *)m->block + x->off;
        if (x->t == &m->w.inv_freq) {
            memcpy(stage, m->inv_freq, sizeof(float) * (size_t)x->n);
            if (!(st = be->ops->copy(be, dst, stage, sizeof(float) * (size_t)x->n, DSPY_COPY_H2D)))
                st = be->ops->sync(be);
            continue;
        }
        for (int k = 0; k < x->count && !st; k++) {
            const need *n = &p->nd[x->first + k];
            size_t total = (size_t)dspy_tensor_numel(n->found), per = STAGE / es;
            for (size_t i0 = 0; i0 < total && !st; i0 += per) {
                size_t cnt = total - i0 < per ? total - i0 : per;
                convert(n->found, i0, cnt, dt, stage);
                st = be->ops->copy(be, dst + ((size_t)n->off + i0) * es, stage, cnt * es, DSPY_COPY_H2D);
                if (!st) st = be->ops->sync(be); /* the staging buffer is reused next */
            }
        }
    }
    be->ops->free_host(be, stage);
    if (st) return dspy_fail_wrap(st, "%s: uploading the weights to the GPU", m->dir);
    return DSPY_OK;
}

static dspy_status check_fits(const dspy_model *m, size_t bytes) {
    size_t free_b = 0, total_b = 0;
    dspy_status st = dspy_cuda_mem_info(m->dev.ordinal, &free_b, &total_b);
    if (st) return st;
    if (bytes + (64u << 20) > free_b)
        return dspy_fail(DSPY_ERR_NOMEM, "%s: the weights need %.2f GiB of GPU memory; cuda:%d has %.2f GiB free of "
                                         "%.2f GiB (free some, or use --device cpu)", m->dir, bytes / 1073741824.0,
                         (int)m->dev.ordinal, free_b / 1073741824.0, total_b / 1073741824.0);
    return DSPY_OK;
}

/* A matrix f8_decode rounds: oc rows of ic. */
typedef struct f8_mat {
    dspy_tensor *w;
    int oc, ic;
} f8_mat;

/* CPU: each matrix (owned: see layout) rounded row by row in place (model/f8_round.h, the
 * definition the CUDA backend's f8_link follows); nothing faster. */
static dspy_status round_f8_cpu(dspy_model *m, const f8_mat *x, int n) {
    for (int i = 0; i < n; i++)
        for (int r = 0; r < x[i].oc; r++) {
            const int64_t at = (int64_t)r * x[i].ic;
            const bool ok = x[i].w->dtype == DSPY_DTYPE_F32
                                ? dspy_f8_round_row_f32((float *)x[i].w->data + at, x[i].ic)
                                : dspy_f8_round_row_bf16((uint16_t *)x[i].w->data + at, x[i].ic);
            if (!ok)
                return dspy_fail(DSPY_ERR_ARG, "%s: FP8 weights (f8_decode): row %d of a %d x %d matrix holds a value "
                                               "that is not finite or above 448 * 2^7", m->dir, r, x[i].oc, x[i].ic);
        }
    return DSPY_OK;
}

static size_t pad16(size_t bytes) { return (bytes + 15) / 16 * 16; }

/* CUDA: each matrix gets an FP8 copy (codes, then row scales, each 16-byte aligned) in one more
 * device block, linked to the BF16 matrix, which is rounded to the same values (kern/ops.h
 * f8_link). */
static dspy_status link_f8_cuda(dspy_model *m, const f8_mat *x, int n) {
    size_t bytes = 0;
    for (int i = 0; i < n; i++) bytes += pad16((size_t)x[i].oc * x[i].ic) + pad16((size_t)x[i].oc * 4);
    dspy_status st = check_fits(m, bytes);
    if (st) return dspy_fail_wrap(st, "%s: the FP8 decode copies (f8_decode)", m->dir);
    m->f8_linked = calloc((size_t)n, sizeof *m->f8_linked);
    if (!m->f8_linked) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", m->dir);
    if ((st = m->be->ops->alloc(m->be, bytes, &m->f8_block))) return st;
    m->f8_bytes = bytes;
    char *p = m->f8_block;
    for (int i = 0; i < n && !st; i++) {
        const int64_t e = (int64_t)x[i].oc * x[i].ic;
        dspy_tensor q = dspy_tensor_make(p, e, DSPY_DTYPE_U8, DSPY_DEVICE_CUDA);
        p += pad16((size_t)e);
        dspy_tensor scale = dspy_tensor_make(p, x[i].oc, DSPY_DTYPE_F32, DSPY_DEVICE_CUDA);
        p += pad16((size_t)x[i].oc * 4);
        /* W8A8 (f8_act): the layers' projections; the lm_head's rows stay BF16 (logits) */
        st = m->be->ops->f8_link(m->be, *x[i].w, q, scale, x[i].oc, x[i].ic, m->f8_act && i < n - 1);
        if (!st) m->f8_linked[m->n_f8++] = x[i].w->data;
    }
    if (st) return dspy_fail_wrap(st, "%s: rounding the weights to FP8 (f8_decode)", m->dir);
    return DSPY_OK;
}

/* f8_decode, after publish (the tensors are in place): every projection matrix and the lm_head
 * (the embedding only when tied to it), rounded on the CPU or linked to FP8 copies on CUDA. */
static dspy_status apply_f8(dspy_model *m) {
    const dspy_model_config *c = &m->cfg;
    const int L = c->num_hidden_layers, C = c->hidden_size, I = c->intermediate_size;
    const int Q = c->num_attention_heads * c->head_dim, KV = c->num_key_value_heads * c->head_dim;
    const int n = 4 * L + 1;
    f8_mat x[n];
    for (int l = 0; l < L; l++) {
        dspy_layer_weights *lw = &m->layers[l];
        x[4 * l] = (f8_mat){&lw->wqkv, Q + 2 * KV, C};
        x[4 * l + 1] = (f8_mat){&lw->wo, C, Q};
        x[4 * l + 2] = (f8_mat){&lw->w_gate_up, 2 * I, C};
        x[4 * l + 3] = (f8_mat){&lw->w_down, C, I};
    }
    x[n - 1] = (f8_mat){&m->w.lm_head, c->vocab_size, C};
    return m->dev.type == DSPY_DEVICE_CPU ? round_f8_cpu(m, x, n) : link_f8_cuda(m, x, n);
}

/* Records each Hugging Face name with its view, for dspy_model_tensor_read_f32. */
static dspy_status make_aliases(dspy_model *m, plan *p) {
    m->aliases = calloc((size_t)p->nn + 1, sizeof *m->aliases);
    if (!m->aliases) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", m->dir);
    for (int i = 0; i < p->nn; i++) {
        const need *n = &p->nd[i];
        dspy_tensor whole = *p->mt[n->dest].t;
        m->aliases[m->n_aliases].name = strdup(n->name);
        m->aliases[m->n_aliases].view = dspy_tensor_slice(whole, n->off, dspy_tensor_numel(n->found));
        if (!m->aliases[m->n_aliases++].name) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", m->dir);
    }
    if (m->cfg.tie_word_embeddings) {
        m->aliases[m->n_aliases].name = strdup("lm_head.weight");
        m->aliases[m->n_aliases].view = m->w.embed;
        if (!m->aliases[m->n_aliases++].name) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", m->dir);
    }
    return DSPY_OK;
}

dspy_status dspy_model_load(const char *dir, const dspy_model_params *p, dspy_model **out) {
    *out = NULL;
    dspy_device dev;
    dspy_status st = dspy_device_parse(p && p->device ? p->device : "cpu", &dev);
    if (st) return st;
    plan pl = {0};
    dspy_model *m = calloc(1, sizeof *m);
    if (!m) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", dir);
    m->dev = dev;
    m->dir = strdup(dir);
    m->f8 = p && p->f8_decode;
    m->f8_act = m->f8 && p->f8_act;
    if (p && p->f8_act && !p->f8_decode) {
        st = dspy_fail(DSPY_ERR_ARG, "%s: f8_act (W8A8 prompt GEMMs) needs f8_decode (the FP8 weights)", dir);
        goto fail;
    }
    if ((st = dspy_model_config_load(dir, &m->cfg))) goto fail;
    const dspy_model_config *c = &m->cfg;
    m->n_threads = p && p->n_threads > 0 ? p->n_threads : 0;
    m->cpu_kernels = p && dev.type == DSPY_DEVICE_CPU ? p->cpu_kernels : DSPY_CPU_KERNELS_REFERENCE;
    m->inv_freq = malloc(sizeof(float) * (size_t)(c->head_dim / 2 > 0 ? c->head_dim / 2 : 1));
    m->layers = calloc((size_t)c->num_hidden_layers, sizeof *m->layers);
    size_t max_needs = 8 + 16 * (size_t)c->num_hidden_layers, max_mt = 8 + 10 * (size_t)c->num_hidden_layers;
    pl.nd = calloc(max_needs, sizeof *pl.nd);
    pl.mt = calloc(max_mt, sizeof *pl.mt);
    if (!m->dir || !m->inv_freq || !m->layers || !pl.nd || !pl.mt) {
        st = dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", dir);
        goto fail;
    }
    m->w.layers = m->layers;
    dspy_rope_inv_freq(c, m->inv_freq);
    if ((st = dspy_checkpoint_open(dir, &m->ck))) goto fail;
    build_plan(m, &pl);
    if ((st = find_all(m, &pl))) goto fail;
    if ((st = check_finite(m, &pl, p && p->strict))) goto fail;
    /* Matrix dtype: BF16 on CUDA and for the fast CPU kernels; on the reference CPU path BF16
     * when every matrix is stored BF16, else F32. */
    m->mdtype = DSPY_DTYPE_BF16;
    if (dev.type == DSPY_DEVICE_CPU && m->cpu_kernels == DSPY_CPU_KERNELS_REFERENCE)
        for (int i = 0; i < pl.nm; i++)
            for (int k = 0; k < pl.mt[i].count; k++)
                if (!pl.mt[i].f32 && pl.nd[pl.mt[i].first + k].found->dtype != DSPY_DTYPE_BF16)
                    m->mdtype = DSPY_DTYPE_F32;
    m->block_bytes = layout(m, &pl);
    if (dev.type == DSPY_DEVICE_CPU) {
        m->block = malloc(m->block_bytes ? m->block_bytes : 1);
        if (!m->block) {
            st = dspy_fail(DSPY_ERR_NOMEM, "%s: cannot allocate %zu MiB for the weights", dir, m->block_bytes >> 20);
            goto fail;
        }
        fill_cpu(m, &pl);
    } else {
        if ((st = check_fits(m, m->block_bytes))) goto fail;
        if ((st = dspy_backend_new(dev, NULL, &m->be))) goto fail;
        pthread_mutex_init(&m->be_mu, NULL);
        if ((st = m->be->ops->alloc(m->be, m->block_bytes, &m->block))) goto fail;
        if ((st = fill_device(m, &pl))) goto fail;
    }
    publish(m, &pl);
    if (m->f8 && (st = apply_f8(m))) goto fail;
    if ((st = make_aliases(m, &pl))) goto fail;
    if (dev.type != DSPY_DEVICE_CPU) { /* nothing points into the mapping any more */
        dspy_checkpoint_free(m->ck);
        m->ck = NULL;
    }
    free(pl.nd);
    free(pl.mt);
    *out = m;
    return DSPY_OK;
fail:
    free(pl.nd);
    free(pl.mt);
    dspy_model_free(m);
    return st;
}

dspy_status dspy_model_tensor_read_f32(const dspy_model *m, const char *name, float *dst, size_t n) {
    const alias *a = NULL;
    for (int i = 0; i < m->n_aliases && !a; i++)
        if (strcmp(m->aliases[i].name, name) == 0) a = &m->aliases[i];
    if (!a) return dspy_fail(DSPY_ERR_NOTFOUND, "%s: the model has no tensor \"%s\"", m->dir, name);
    if ((int64_t)n != a->view.n)
        return dspy_fail(DSPY_ERR_ARG, "%s: tensor \"%s\" has %lld elements, not %zu", m->dir, name,
                         (long long)a->view.n, n);
    const void *src = a->view.data;
    void *tmp = NULL;
    if (m->be) { /* device memory: copy to the host first */
        size_t bytes = dspy_tensor_bytes(a->view);
        tmp = malloc(bytes ? bytes : 1);
        if (!tmp) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory reading \"%s\"", m->dir, name);
        dspy_model *mm = (dspy_model *)m; /* the mutex and stream are not part of the value */
        pthread_mutex_lock(&mm->be_mu);
        dspy_status st = mm->be->ops->copy(mm->be, tmp, src, bytes, DSPY_COPY_D2H);
        if (!st) st = mm->be->ops->sync(mm->be);
        pthread_mutex_unlock(&mm->be_mu);
        if (st) {
            free(tmp);
            return st;
        }
        src = tmp;
    }
    if (a->view.dtype == DSPY_DTYPE_F32) {
        memcpy(dst, src, sizeof(float) * n);
    } else {
        const uint16_t *h = src;
        for (size_t i = 0; i < n; i++) dst[i] = dspy_bf16_to_f32(h[i]);
    }
    free(tmp);
    return DSPY_OK;
}
