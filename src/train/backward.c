/* backward.c — forward and backward pass of one packed training sequence (train/backward.h).
 *
 * Forward, per layer (transformers' LlamaDecoderLayer in fp32, eager attention with a
 * block-diagonal causal mask):
 *   xn = rms(x); q, k, v = xn Wq^T + bq, ...; rope(q, k); att = attention_train(q, k, v);
 *   x += att Wo^T + bo; xn = rms(x); x += (silu(xn Wg^T) * (xn Wu^T)) Wd^T
 * with, under LoRA, every linear y = x W^T + b + (alpha/r) (dropout(x) A^T) B^T (peft). Then
 * the labelled rows only are gathered, normed and projected to logits (CE_ROWS rows at a time),
 * and the fused cross-entropy gives the loss and d logits. The backward pass walks the same
 * steps in reverse through the kern/ops.h backward entries; it saves per layer only what it
 * cannot cheaply recompute (see layer_acts) and recomputes the RMSNorm outputs and the SwiGLU
 * product. Does not update weights (the optimizer does) or validate the model (loading did).
 */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "train/trainable_impl.h"

/* ---- work buffers ----------------------------------------------------------------------- */

void train_work_free(train_work *w) {
    free(w->block);
    free(w->acts);
    free(w->start);
    free(w->pos);
    free(w->rows);
    free(w->targets);
    memset(w, 0, sizeof *w);
}

/* Sizes (and, when `base` is not NULL, carves) every buffer for T tokens; returns the floats needed. */
static size_t work_layout(dspy_trainable *t, size_t T, float *base) {
    const dspy_model_config *c = &t->cfg;
    train_work *w = &t->work;
    size_t C = (size_t)c->hidden_size, I = (size_t)c->intermediate_size, V = (size_t)c->vocab_size;
    size_t NH = (size_t)c->num_attention_heads, Q = NH * (size_t)c->head_dim;
    size_t KV = (size_t)c->num_key_value_heads * (size_t)c->head_dim;
    size_t r = t->lora_on ? (size_t)t->lora.r : 0, max_in = C > I ? C : I;
    max_in = max_in > Q ? max_in : Q;
    size_t max_out = max_in; /* the same set of widths */
    size_t off = 0;
#define TAKE(dst, n)                          \
    do {                                      \
        if (base) (dst) = base + off;         \
        off += (n);                           \
    } while (0)
    for (int l = 0; l < c->num_hidden_layers; l++) {
        layer_acts *a = base ? &w->acts[l] : NULL;
        layer_acts dummy;
        if (!a) a = &dummy;
        TAKE(a->xin, T * C);
        TAKE(a->q, T * Q);
        TAKE(a->k, T * KV);
        TAKE(a->v, T * KV);
        TAKE(a->lse, T * NH);
        TAKE(a->att, T * Q);
        TAKE(a->xmid, T * C);
        TAKE(a->gate, T * I);
        TAKE(a->up, T * I);
        for (int k = 0; k < LIN_COUNT; k++) TAKE(a->lu[k], T * r);
    }
    TAKE(w->xfin, T * C);
    TAKE(w->sel, T * C);
    TAKE(w->seln, T * C);
    TAKE(w->dsel, T * C);
    TAKE(w->logits, (size_t)CE_ROWS * V);
    TAKE(w->loss, T);
    TAKE(w->xn, T * C);
    TAKE(w->dx, T * C);
    TAKE(w->dxn, T * C);
    TAKE(w->dq, T * Q);
    TAKE(w->datt, T * Q);
    TAKE(w->dk, T * KV);
    TAKE(w->dv, T * KV);
    TAKE(w->h, T * I);
    TAKE(w->dh, T * I);
    TAKE(w->dup, T * I);
    TAKE(w->ltmp, T * max_out * (r ? 1 : 0));
    TAKE(w->xd, T * max_in * (r ? 1 : 0));
    TAKE(w->dxd, T * max_in * (r ? 1 : 0));
    TAKE(w->du, T * r);
#undef TAKE
    return off;
}

static dspy_status work_reserve(dspy_trainable *t, int32_t T) {
    train_work *w = &t->work;
    if (T <= w->cap) return DSPY_OK;
    train_work_free(w);
    size_t n = work_layout(t, (size_t)T, NULL);
    w->block = malloc(sizeof(float) * n);
    w->acts = calloc((size_t)t->cfg.num_hidden_layers, sizeof *w->acts);
    size_t ni = sizeof(int32_t) * (size_t)T;
    w->start = malloc(ni), w->pos = malloc(ni), w->rows = malloc(ni), w->targets = malloc(ni);
    if (!w->block || !w->acts || !w->start || !w->pos || !w->rows || !w->targets) {
        train_work_free(w);
        return dspy_fail(DSPY_ERR_NOMEM, "train step: cannot allocate %zu MiB of activations for %d tokens",
                         n * sizeof(float) >> 20, (int)T);
    }
    work_layout(t, (size_t)T, w->block);
    w->cap = T;
    return DSPY_OK;
}

/* ---- the sequence ----------------------------------------------------------------------- */

/* Checks the sequence and fills work.start, .pos, .rows, .targets; *M = labelled rows. */
static dspy_status prepare(dspy_trainable *t, const dspy_train_seq *s, int32_t *M) {
    const dspy_model_config *c = &t->cfg;
    train_work *w = &t->work;
    int32_t T = s->T, V = c->vocab_size, m = 0;
    for (int32_t i = 0; i < T; i++) {
        if (s->ids[i] < 0 || s->ids[i] >= V)
            return dspy_fail(DSPY_ERR_ARG, "train sequence: ids[%d] is %d, outside the vocabulary [0, %d)", (int)i,
                             (int)s->ids[i], (int)V);
        if (s->labels[i] != -100 && (s->labels[i] < 0 || s->labels[i] >= V))
            return dspy_fail(DSPY_ERR_ARG,
                             "train sequence: labels[%d] is %d; a label is a token id in [0, %d) or -100 (no loss)",
                             (int)i, (int)s->labels[i], (int)V);
        bool first = i == 0 || (s->seg && s->seg[i] != s->seg[i - 1]);
        if (s->seg && i > 0 && s->seg[i] < s->seg[i - 1])
            return dspy_fail(DSPY_ERR_ARG,
                             "train sequence: seg[%d] is %d after seg[%d] = %d; example indices must not decrease "
                             "(each packed example is one contiguous run)",
                             (int)i, (int)s->seg[i], (int)i - 1, (int)s->seg[i - 1]);
        w->start[i] = first ? i : w->start[i - 1];
        int32_t p = s->pos ? s->pos[i] : i - w->start[i];
        if (p < 0)
            return dspy_fail(DSPY_ERR_ARG, "train sequence: pos[%d] is %d; positions are non-negative", (int)i, (int)p);
        if (p >= c->max_position_embeddings)
            return dspy_fail(DSPY_ERR_CONTEXT,
                             "train sequence: pos[%d] is %d, beyond the model's context of %d tokens "
                             "(max_position_embeddings); shorten the example",
                             (int)i, (int)p, (int)c->max_position_embeddings);
        w->pos[i] = p;
        if (s->labels[i] != -100) {
            w->rows[m] = i;
            w->targets[m] = s->labels[i];
            m++;
        }
    }
    *M = m;
    return DSPY_OK;
}

/* The dropout key of (step, layer, linear): a pure function of the seed and those three. */
static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t dropout_key(const dspy_trainable *t, int layer, int lin) {
    return mix64(mix64(mix64(t->seed) ^ t->rng) ^ (uint64_t)(layer * LIN_COUNT + lin));
}

/* ---- linear layers (with LoRA) ---------------------------------------------------------- */

/* y (T, out) = x (T, in) W^T + b, plus the LoRA path when on (saving its scaled intermediate). */
static void linear_fwd(dspy_trainable *t, int l, int lin, float *y, const float *x, int T, bool train) {
    const dspy_ops *ops = t->ops;
    train_layer *L = &t->layers[l];
    int in, out;
    train_lin_dims(&t->cfg, lin, &in, &out);
    ops->matmul(y, x, L->w[lin], L->b[lin], T, in, out);
    if (!t->lora_on || t->merged) return;
    train_work *w = &t->work;
    const lora_adapter *a = &L->lora[lin];
    int r = t->lora.r;
    float *u = w->acts[l].lu[lin]; /* (T, r) */
    const float *xin = x;
    if (train && t->lora.dropout > 0) {
        ops->dropout(w->xd, x, (int64_t)T * in, t->lora.dropout, dropout_key(t, l, lin));
        xin = w->xd;
    }
    ops->matmul(u, xin, a->A, NULL, T, in, r);
    ops->scale(u, t->lora_scale, (int64_t)T * r);
    ops->matmul(w->ltmp, u, a->B, NULL, T, r, out);
    ops->add(y, w->ltmp, (int64_t)T * out);
}

/* Backward of linear_fwd: dx (T, in) += dy W (+ the LoRA path); weight, bias and adapter
 * gradients accumulate where trainable. */
static void linear_bwd(dspy_trainable *t, int l, int lin, float *dx, const float *dy, const float *x, int T) {
    const dspy_ops *ops = t->ops;
    train_layer *L = &t->layers[l];
    int in, out;
    train_lin_dims(&t->cfg, lin, &in, &out);
    ops->matmul_backward(dx, L->gw[lin], L->b[lin] ? L->gb[lin] : NULL, dy, x, L->w[lin], T, in, out);
    if (!t->lora_on) return;
    train_work *w = &t->work;
    const lora_adapter *a = &L->lora[lin];
    int r = t->lora.r;
    const float *u = w->acts[l].lu[lin]; /* (T, r), already scaled by alpha/r */
    memset(w->du, 0, sizeof(float) * (size_t)T * r);
    ops->matmul_backward(w->du, a->gB, NULL, dy, u, a->B, T, r, out); /* du = dy B; gB += dy^T u */
    ops->scale(w->du, t->lora_scale, (int64_t)T * r);
    if (t->lora.dropout > 0) {
        uint64_t key = dropout_key(t, l, lin);
        ops->dropout(w->xd, x, (int64_t)T * in, t->lora.dropout, key);
        memset(w->dxd, 0, sizeof(float) * (size_t)T * in);
        ops->matmul_backward(w->dxd, a->gA, NULL, w->du, w->xd, a->A, T, in, r);
        ops->dropout(w->dxd, w->dxd, (int64_t)T * in, t->lora.dropout, key);
        ops->add(dx, w->dxd, (int64_t)T * in);
    } else {
        ops->matmul_backward(dx, a->gA, NULL, w->du, x, a->A, T, in, r);
    }
}

/* ---- the pass --------------------------------------------------------------------------- */

static void forward_layers(dspy_trainable *t, const dspy_train_seq *s, bool train) {
    const dspy_model_config *c = &t->cfg;
    const dspy_ops *ops = t->ops;
    train_work *w = &t->work;
    const float *inv_freq = dspy_model_inv_freq(t->m);
    const int T = s->T, C = c->hidden_size, I = c->intermediate_size;
    const int NH = c->num_attention_heads, NKV = c->num_key_value_heads, HS = c->head_dim;
    const float eps = (float)c->rms_norm_eps;
    ops->embedding(w->acts[0].xin, s->ids, t->embed, T, C);                      /* x (T, C) */
    for (int l = 0; l < c->num_hidden_layers; l++) {
        train_layer *L = &t->layers[l];
        layer_acts *a = &w->acts[l];
        float *xout = l + 1 < c->num_hidden_layers ? w->acts[l + 1].xin : w->xfin; /* (T, C) */
        ops->rmsnorm(w->xn, a->xin, L->attn_norm, T, C, eps);
        linear_fwd(t, l, LIN_Q, a->q, w->xn, T, train);                           /* (T, NH, HS) */
        linear_fwd(t, l, LIN_K, a->k, w->xn, T, train);                           /* (T, NKV, HS) */
        linear_fwd(t, l, LIN_V, a->v, w->xn, T, train);                           /* (T, NKV, HS) */
        ops->rope(a->q, w->pos, inv_freq, T, NH, HS);
        ops->rope(a->k, w->pos, inv_freq, T, NKV, HS);
        ops->attention_train(a->att, a->lse, a->q, a->k, a->v, w->start, T, NH, NKV, HS);
        linear_fwd(t, l, LIN_O, a->xmid, a->att, T, train);                       /* o (T, C) */
        ops->add(a->xmid, a->xin, (int64_t)T * C);                                /* x + o */
        ops->rmsnorm(w->xn, a->xmid, L->mlp_norm, T, C, eps);
        linear_fwd(t, l, LIN_GATE, a->gate, w->xn, T, train);                     /* (T, I) */
        linear_fwd(t, l, LIN_UP, a->up, w->xn, T, train);                         /* (T, I) */
        ops->swiglu(w->h, a->gate, a->up, T, I);
        linear_fwd(t, l, LIN_DOWN, xout, w->h, T, train);                         /* mlp (T, C) */
        ops->add(xout, a->xmid, (int64_t)T * C);
    }
}

static void backward_layers(dspy_trainable *t, const dspy_train_seq *s) {
    const dspy_model_config *c = &t->cfg;
    const dspy_ops *ops = t->ops;
    train_work *w = &t->work;
    const float *inv_freq = dspy_model_inv_freq(t->m);
    const int T = s->T, C = c->hidden_size, I = c->intermediate_size;
    const int NH = c->num_attention_heads, NKV = c->num_key_value_heads, HS = c->head_dim;
    const int Q = NH * HS;
    const float eps = (float)c->rms_norm_eps;
    /* w->dx (T, C) holds d loss / d (residual after the last layer). */
    for (int l = c->num_hidden_layers - 1; l >= 0; l--) {
        train_layer *L = &t->layers[l];
        layer_acts *a = &w->acts[l];
        /* MLP: x_out = xmid + down(swiglu(gate(xn), up(xn))), xn = rms(xmid). */
        ops->rmsnorm(w->xn, a->xmid, L->mlp_norm, T, C, eps);
        ops->swiglu(w->h, a->gate, a->up, T, I);
        memset(w->dh, 0, sizeof(float) * (size_t)T * I);
        linear_bwd(t, l, LIN_DOWN, w->dh, w->dx, w->h, T);                         /* dh (T, I) */
        ops->swiglu_backward(w->dh, w->dup, w->dh, a->gate, a->up, T, I);         /* dgate in dh */
        memset(w->dxn, 0, sizeof(float) * (size_t)T * C);
        linear_bwd(t, l, LIN_GATE, w->dxn, w->dh, w->xn, T);
        linear_bwd(t, l, LIN_UP, w->dxn, w->dup, w->xn, T);
        ops->rmsnorm_backward(w->dx, L->g_mlp_norm, w->dxn, a->xmid, L->mlp_norm, T, C, eps); /* d xmid */
        /* Attention: xmid = xin + o(attn(rope(q(xn)), rope(k(xn)), v(xn))), xn = rms(xin). */
        memset(w->datt, 0, sizeof(float) * (size_t)T * Q);
        linear_bwd(t, l, LIN_O, w->datt, w->dx, a->att, T);                        /* datt (T, Q) */
        ops->attention_train_backward(w->dq, w->dk, w->dv, w->datt, a->att, a->lse, a->q, a->k, a->v, w->start, T,
                                      NH, NKV, HS);
        ops->rope_backward(w->dq, w->pos, inv_freq, T, NH, HS);
        ops->rope_backward(w->dk, w->pos, inv_freq, T, NKV, HS);
        ops->rmsnorm(w->xn, a->xin, L->attn_norm, T, C, eps);
        memset(w->dxn, 0, sizeof(float) * (size_t)T * C);
        linear_bwd(t, l, LIN_Q, w->dxn, w->dq, w->xn, T);
        linear_bwd(t, l, LIN_K, w->dxn, w->dk, w->xn, T);
        linear_bwd(t, l, LIN_V, w->dxn, w->dv, w->xn, T);
        ops->rmsnorm_backward(w->dx, L->g_attn_norm, w->dxn, a->xin, L->attn_norm, T, C, eps); /* d xin */
    }
    if (t->g_embed) ops->embedding_backward(t->g_embed, s->ids, w->dx, T, C);
}

/* Forward (and, when train, backward) of one sequence. */
static dspy_status run(dspy_trainable *t, const dspy_train_seq *s, bool train, float grad_scale, double *loss_sum,
                       int64_t *n_labels) {
    *loss_sum = 0;
    *n_labels = 0;
    if (!s || !s->ids || !s->labels || s->T < 1)
        return dspy_fail(DSPY_ERR_ARG, "train sequence: needs ids, labels and T >= 1 (T is %d)", s ? (int)s->T : 0);
    if (train && t->merged)
        return dspy_fail(DSPY_ERR_STATE, "train step: the LoRA adapters were merged; make a new trainable to train on");
    dspy_status st = work_reserve(t, s->T);
    if (st) return st;
    int32_t M = 0;
    if ((st = prepare(t, s, &M))) return st;
    if (dspy_model_n_threads(t->m) > 0) omp_set_num_threads(dspy_model_n_threads(t->m));
    const dspy_model_config *c = &t->cfg;
    const dspy_ops *ops = t->ops;
    train_work *w = &t->work;
    const int C = c->hidden_size, V = c->vocab_size;
    if (M == 0) {
        if (train) t->rng++;
        return DSPY_OK;
    }
    forward_layers(t, s, train);
    ops->gather_rows(w->sel, w->xfin, w->rows, M, C);                            /* sel (M, C) */
    ops->rmsnorm(w->seln, w->sel, t->final_norm, M, C, (float)c->rms_norm_eps);
    if (train) memset(w->dsel, 0, sizeof(float) * (size_t)M * C);
    double sum = 0;
    for (int m0 = 0; m0 < M; m0 += CE_ROWS) {
        int mc = M - m0 < CE_ROWS ? M - m0 : CE_ROWS;
        const float *xs = w->seln + (size_t)m0 * C;                              /* (mc, C) */
        ops->matmul(w->logits, xs, t->lm_head, NULL, mc, C, V);                  /* (mc, V) */
        ops->cross_entropy(w->loss + m0, train ? w->logits : NULL, w->logits, w->targets + m0, mc, V, grad_scale);
        if (train) /* d seln += dlogits lm_head; d lm_head += dlogits^T seln */
            ops->matmul_backward(w->dsel + (size_t)m0 * C, t->g_lm_head, NULL, w->logits, xs, t->lm_head, mc, C, V);
    }
    for (int m = 0; m < M; m++) sum += w->loss[m];
    *loss_sum = sum;
    *n_labels = M;
    if (!train) return DSPY_OK;
    memset(w->dx, 0, sizeof(float) * (size_t)s->T * C);
    memset(w->xn, 0, sizeof(float) * (size_t)M * C); /* d sel, before the scatter */
    ops->rmsnorm_backward(w->xn, t->g_final_norm, w->dsel, w->sel, t->final_norm, M, C, (float)c->rms_norm_eps);
    ops->scatter_add_rows(w->dx, w->rows, w->xn, M, C);
    backward_layers(t, s);
    t->rng++;
    return DSPY_OK;
}

dspy_status dspy_trainable_step(dspy_trainable *t, const dspy_train_seq *s, float grad_scale, double *loss_sum,
                                int64_t *n_labels) {
    return run(t, s, true, grad_scale, loss_sum, n_labels);
}

dspy_status dspy_trainable_loss(dspy_trainable *t, const dspy_train_seq *s, double *loss_sum, int64_t *n_labels) {
    return run(t, s, false, 0.0f, loss_sum, n_labels);
}
