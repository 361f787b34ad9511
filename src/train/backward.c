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
#include <stdlib.h>
#include <string.h>

#include "train/trainable_impl.h"

/* An F32 view of n floats on the trainable's backend. */
#define F(p, n) dspy_bt(t->be, (p), (int64_t)(n), DSPY_DTYPE_F32)
#define I32(p, n) dspy_bt(t->be, (p), (int64_t)(n), DSPY_DTYPE_I32)
#define NONE dspy_tensor_none()

/* ---- work buffers ----------------------------------------------------------------------- */

void dspy_train_work_free(train_work *w) {
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
    dspy_backend_plan plan = {T, T, 1, t->cfg.vocab_size, t->cfg.num_attention_heads, t->cfg.head_dim, 0};
    dspy_status st = dspy_backend_reserve(t->be, &plan);
    if (st) return st;
    dspy_train_work_free(w);
    size_t n = work_layout(t, (size_t)T, NULL);
    w->block = malloc(sizeof(float) * n);
    w->acts = calloc((size_t)t->cfg.num_hidden_layers, sizeof *w->acts);
    size_t ni = sizeof(int32_t) * (size_t)T;
    w->start = malloc(ni), w->pos = malloc(ni), w->rows = malloc(ni), w->targets = malloc(ni);
    if (!w->block || !w->acts || !w->start || !w->pos || !w->rows || !w->targets) {
        dspy_train_work_free(w);
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
static dspy_status linear_fwd(dspy_trainable *t, int l, int lin, float *y, const float *x, int T, bool train) {
    dspy_backend *be = t->be;
    const dspy_ops *o = be->ops;
    train_layer *L = &t->layers[l];
    int in, out;
    dspy_train_lin_dims(&t->cfg, lin, &in, &out);
    DSPY_TRY(o->linear(be, F(y, T * out), F((float *)x, T * in), F(L->w[lin], out * in),
                       L->b[lin] ? F(L->b[lin], out) : NONE, T, in, out, false));
    if (!t->lora_on || t->merged) return DSPY_OK;
    train_work *w = &t->work;
    const lora_adapter *a = &L->lora[lin];
    int r = t->lora.r;
    float *u = w->acts[l].lu[lin]; /* (T, r) */
    const float *xin = x;
    if (train && t->lora.dropout > 0) {
        DSPY_TRY(o->dropout(be, F(w->xd, T * in), F((float *)x, T * in), t->lora.dropout, dropout_key(t, l, lin)));
        xin = w->xd;
    }
    DSPY_TRY(o->linear(be, F(u, T * r), F((float *)xin, T * in), F(a->A, r * in), NONE, T, in, r, false));
    DSPY_TRY(o->scale(be, F(u, T * r), t->lora_scale));
    DSPY_TRY(o->linear(be, F(w->ltmp, T * out), F(u, T * r), F(a->B, out * r), NONE, T, r, out, false));
    return o->add(be, F(y, T * out), F(w->ltmp, T * out));
}

/* Backward of linear_fwd: dx (T, in) += dy W (+ the LoRA path); weight, bias and adapter
 * gradients accumulate where trainable. */
static dspy_status linear_bwd(dspy_trainable *t, int l, int lin, float *dx, const float *dy, const float *x, int T) {
    dspy_backend *be = t->be;
    const dspy_ops *o = be->ops;
    train_layer *L = &t->layers[l];
    int in, out;
    dspy_train_lin_dims(&t->cfg, lin, &in, &out);
    DSPY_TRY(o->linear_backward(be, F(dx, T * in), L->gw[lin] ? F(L->gw[lin], out * in) : NONE,
                                L->b[lin] && L->gb[lin] ? F(L->gb[lin], out) : NONE, F((float *)dy, T * out),
                                F((float *)x, T * in), F(L->w[lin], out * in), T, in, out));
    if (!t->lora_on) return DSPY_OK;
    train_work *w = &t->work;
    const lora_adapter *a = &L->lora[lin];
    int r = t->lora.r;
    float *u = w->acts[l].lu[lin]; /* (T, r), already scaled by alpha/r */
    DSPY_TRY(o->fill(be, F(w->du, T * r), 0.0f));
    /* du = dy B; gB += dy^T u */
    DSPY_TRY(o->linear_backward(be, F(w->du, T * r), F(a->gB, out * r), NONE, F((float *)dy, T * out), F(u, T * r),
                                F(a->B, out * r), T, r, out));
    DSPY_TRY(o->scale(be, F(w->du, T * r), t->lora_scale));
    if (t->lora.dropout > 0) {
        uint64_t key = dropout_key(t, l, lin);
        DSPY_TRY(o->dropout(be, F(w->xd, T * in), F((float *)x, T * in), t->lora.dropout, key));
        DSPY_TRY(o->fill(be, F(w->dxd, T * in), 0.0f));
        DSPY_TRY(o->linear_backward(be, F(w->dxd, T * in), F(a->gA, r * in), NONE, F(w->du, T * r), F(w->xd, T * in),
                                    F(a->A, r * in), T, in, r));
        DSPY_TRY(o->dropout(be, F(w->dxd, T * in), F(w->dxd, T * in), t->lora.dropout, key));
        return o->add(be, F(dx, T * in), F(w->dxd, T * in));
    }
    return o->linear_backward(be, F(dx, T * in), F(a->gA, r * in), NONE, F(w->du, T * r), F((float *)x, T * in),
                              F(a->A, r * in), T, in, r);
}

/* ---- the pass --------------------------------------------------------------------------- */

static dspy_status forward_layers(dspy_trainable *t, const dspy_train_seq *s, bool train) {
    const dspy_model_config *c = &t->cfg;
    dspy_backend *be = t->be;
    const dspy_ops *o = be->ops;
    train_work *w = &t->work;
    const int T = s->T, C = c->hidden_size, I = c->intermediate_size;
    const int NH = c->num_attention_heads, NKV = c->num_key_value_heads, HS = c->head_dim;
    const int Q = NH * HS, KV = NKV * HS;
    const float eps = (float)c->rms_norm_eps;
    dspy_tensor inv_freq = F((float *)dspy_model_inv_freq(t->m), HS / 2), pos = I32(w->pos, T);
    DSPY_TRY(o->embedding(be, F(w->acts[0].xin, T * C), I32((int32_t *)s->ids, T),
                          F(t->embed, (int64_t)c->vocab_size * C), T, C));                  /* x (T, C) */
    for (int l = 0; l < c->num_hidden_layers; l++) {
        train_layer *L = &t->layers[l];
        layer_acts *a = &w->acts[l];
        float *xout = l + 1 < c->num_hidden_layers ? w->acts[l + 1].xin : w->xfin; /* (T, C) */
        DSPY_TRY(o->rmsnorm(be, F(w->xn, T * C), F(a->xin, T * C), F(L->attn_norm, C), T, C, eps));
        DSPY_TRY(linear_fwd(t, l, LIN_Q, a->q, w->xn, T, train));                             /* (T, NH, HS) */
        DSPY_TRY(linear_fwd(t, l, LIN_K, a->k, w->xn, T, train));                             /* (T, NKV, HS) */
        DSPY_TRY(linear_fwd(t, l, LIN_V, a->v, w->xn, T, train));                             /* (T, NKV, HS) */
        DSPY_TRY(o->rope(be, F(a->q, T * Q), pos, inv_freq, T, NH, HS));
        DSPY_TRY(o->rope(be, F(a->k, T * KV), pos, inv_freq, T, NKV, HS));
        DSPY_TRY(o->attention_train(be, F(a->att, T * Q), F(a->lse, T * NH), F(a->q, T * Q), F(a->k, T * KV),
                                    F(a->v, T * KV), I32(w->start, T), T, NH, NKV, HS));
        DSPY_TRY(linear_fwd(t, l, LIN_O, a->xmid, a->att, T, train));                         /* o (T, C) */
        DSPY_TRY(o->add(be, F(a->xmid, T * C), F(a->xin, T * C)));                            /* x + o */
        DSPY_TRY(o->rmsnorm(be, F(w->xn, T * C), F(a->xmid, T * C), F(L->mlp_norm, C), T, C, eps));
        DSPY_TRY(linear_fwd(t, l, LIN_GATE, a->gate, w->xn, T, train));                       /* (T, I) */
        DSPY_TRY(linear_fwd(t, l, LIN_UP, a->up, w->xn, T, train));                           /* (T, I) */
        DSPY_TRY(o->swiglu(be, F(w->h, T * I), F(a->gate, T * I), F(a->up, T * I), T, I, I));
        DSPY_TRY(linear_fwd(t, l, LIN_DOWN, xout, w->h, T, train));                           /* mlp (T, C) */
        DSPY_TRY(o->add(be, F(xout, T * C), F(a->xmid, T * C)));
    }
    return DSPY_OK;
}

static dspy_status backward_layers(dspy_trainable *t, const dspy_train_seq *s) {
    const dspy_model_config *c = &t->cfg;
    dspy_backend *be = t->be;
    const dspy_ops *o = be->ops;
    train_work *w = &t->work;
    const int T = s->T, C = c->hidden_size, I = c->intermediate_size;
    const int NH = c->num_attention_heads, NKV = c->num_key_value_heads, HS = c->head_dim;
    const int Q = NH * HS, KV = NKV * HS;
    const float eps = (float)c->rms_norm_eps;
    dspy_tensor inv_freq = F((float *)dspy_model_inv_freq(t->m), HS / 2), pos = I32(w->pos, T);
    /* w->dx (T, C) holds d loss / d (residual after the last layer). */
    for (int l = c->num_hidden_layers - 1; l >= 0; l--) {
        train_layer *L = &t->layers[l];
        layer_acts *a = &w->acts[l];
        /* MLP: x_out = xmid + down(swiglu(gate(xn), up(xn))), xn = rms(xmid). */
        DSPY_TRY(o->rmsnorm(be, F(w->xn, T * C), F(a->xmid, T * C), F(L->mlp_norm, C), T, C, eps));
        DSPY_TRY(o->swiglu(be, F(w->h, T * I), F(a->gate, T * I), F(a->up, T * I), T, I, I));
        DSPY_TRY(o->fill(be, F(w->dh, T * I), 0.0f));
        DSPY_TRY(linear_bwd(t, l, LIN_DOWN, w->dh, w->dx, w->h, T));                          /* dh (T, I) */
        DSPY_TRY(o->swiglu_backward(be, F(w->dh, T * I), F(w->dup, T * I), F(w->dh, T * I), F(a->gate, T * I),
                                    F(a->up, T * I), T, I));                                  /* dgate in dh */
        DSPY_TRY(o->fill(be, F(w->dxn, T * C), 0.0f));
        DSPY_TRY(linear_bwd(t, l, LIN_GATE, w->dxn, w->dh, w->xn, T));
        DSPY_TRY(linear_bwd(t, l, LIN_UP, w->dxn, w->dup, w->xn, T));
        DSPY_TRY(o->rmsnorm_backward(be, F(w->dx, T * C), L->g_mlp_norm ? F(L->g_mlp_norm, C) : NONE,
                                     F(w->dxn, T * C), F(a->xmid, T * C), F(L->mlp_norm, C), T, C, eps)); /* d xmid */
        /* Attention: xmid = xin + o(attn(rope(q(xn)), rope(k(xn)), v(xn))), xn = rms(xin). */
        DSPY_TRY(o->fill(be, F(w->datt, T * Q), 0.0f));
        DSPY_TRY(linear_bwd(t, l, LIN_O, w->datt, w->dx, a->att, T));                         /* datt (T, Q) */
        DSPY_TRY(o->attention_train_backward(be, F(w->dq, T * Q), F(w->dk, T * KV), F(w->dv, T * KV),
                                             F(w->datt, T * Q), F(a->att, T * Q), F(a->lse, T * NH), F(a->q, T * Q),
                                             F(a->k, T * KV), F(a->v, T * KV), I32(w->start, T), T, NH, NKV, HS));
        DSPY_TRY(o->rope_backward(be, F(w->dq, T * Q), pos, inv_freq, T, NH, HS));
        DSPY_TRY(o->rope_backward(be, F(w->dk, T * KV), pos, inv_freq, T, NKV, HS));
        DSPY_TRY(o->rmsnorm(be, F(w->xn, T * C), F(a->xin, T * C), F(L->attn_norm, C), T, C, eps));
        DSPY_TRY(o->fill(be, F(w->dxn, T * C), 0.0f));
        DSPY_TRY(linear_bwd(t, l, LIN_Q, w->dxn, w->dq, w->xn, T));
        DSPY_TRY(linear_bwd(t, l, LIN_K, w->dxn, w->dk, w->xn, T));
        DSPY_TRY(linear_bwd(t, l, LIN_V, w->dxn, w->dv, w->xn, T));
        DSPY_TRY(o->rmsnorm_backward(be, F(w->dx, T * C), L->g_attn_norm ? F(L->g_attn_norm, C) : NONE,
                                     F(w->dxn, T * C), F(a->xin, T * C), F(L->attn_norm, C), T, C, eps)); /* d xin */
    }
    if (t->g_embed)
        DSPY_TRY(o->embedding_backward(be, F(t->g_embed, (int64_t)c->vocab_size * C), I32((int32_t *)s->ids, T),
                                       F(w->dx, T * C), T, C));
    return DSPY_OK;
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
    const dspy_model_config *c = &t->cfg;
    dspy_backend *be = t->be;
    const dspy_ops *o = be->ops;
    train_work *w = &t->work;
    const int C = c->hidden_size, V = c->vocab_size, T = s->T;
    const float eps = (float)c->rms_norm_eps;
    if (M == 0) {
        if (train) t->rng++;
        return DSPY_OK;
    }
    DSPY_TRY(forward_layers(t, s, train));
    dspy_tensor lm_head = F(t->lm_head, (int64_t)V * C), final_norm = F(t->final_norm, C);
    DSPY_TRY(o->gather_rows(be, F(w->sel, M * C), F(w->xfin, T * C), I32(w->rows, M), M, C)); /* sel (M, C) */
    DSPY_TRY(o->rmsnorm(be, F(w->seln, M * C), F(w->sel, M * C), final_norm, M, C, eps));
    if (train) DSPY_TRY(o->fill(be, F(w->dsel, M * C), 0.0f));
    double sum = 0;
    for (int m0 = 0; m0 < M; m0 += CE_ROWS) {
        int mc = M - m0 < CE_ROWS ? M - m0 : CE_ROWS;
        dspy_tensor xs = F(w->seln + (size_t)m0 * C, mc * C);                                 /* (mc, C) */
        dspy_tensor lg = F(w->logits, (int64_t)mc * V);                                       /* (mc, V) */
        DSPY_TRY(o->linear(be, lg, xs, lm_head, NONE, mc, C, V, false));
        DSPY_TRY(o->cross_entropy(be, F(w->loss + m0, mc), train ? lg : NONE, lg, I32(w->targets + m0, mc), mc, V,
                                  grad_scale));
        if (train) /* d seln += dlogits lm_head; d lm_head += dlogits^T seln */
            DSPY_TRY(o->linear_backward(be, F(w->dsel + (size_t)m0 * C, mc * C),
                                        t->g_lm_head ? F(t->g_lm_head, (int64_t)V * C) : NONE, NONE, lg, xs, lm_head,
                                        mc, C, V));
    }
    for (int m = 0; m < M; m++) sum += w->loss[m];
    *loss_sum = sum;
    *n_labels = M;
    if (!train) return DSPY_OK;
    DSPY_TRY(o->fill(be, F(w->dx, T * C), 0.0f));
    DSPY_TRY(o->fill(be, F(w->xn, M * C), 0.0f)); /* d sel, before the scatter */
    DSPY_TRY(o->rmsnorm_backward(be, F(w->xn, M * C), t->g_final_norm ? F(t->g_final_norm, C) : NONE,
                                 F(w->dsel, M * C), F(w->sel, M * C), final_norm, M, C, eps));
    DSPY_TRY(o->scatter_add_rows(be, F(w->dx, T * C), I32(w->rows, M), F(w->xn, M * C), M, C));
    DSPY_TRY(backward_layers(t, s));
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
