/* backward.c — forward and backward pass of one packed training sequence (train/backward.h).
 *
 * Forward, per layer (transformers' LlamaDecoderLayer in fp32, eager attention with a
 * block-diagonal causal mask):
 *   xn = rms(x); q, k, v = xn Wq^T + bq, ...; rope(q, k); att = attention_train(q, k, v);
 *   x += att Wo^T + bo; xn = rms(x); x += (silu(xn Wg^T) * (xn Wu^T)) Wd^T
 * with, under LoRA, every linear y = x W^T + b + (alpha/r) (dropout(x) A^T) B^T (peft). Then
 * the labelled rows only are gathered, normed and projected to logits (ce_rows at a time),
 * and the fused cross-entropy gives the loss and d logits. The backward pass walks the same
 * steps in reverse through the kern/ops.h backward entries; it saves per layer only what it
 * cannot cheaply recompute (see layer_acts) and recomputes the RMSNorm outputs and the SwiGLU
 * product. Does not update weights (the optimizer does) or validate the model (loading did).
 *
 * Memory: every buffer a pass touches is in the backend's memory, planned once (dspy_train_work_reserve;
 * grown only by a longer sequence than planned); a sequence's ids, example starts, positions,
 * labelled rows and targets are prepared on the host into a page-locked staging slot and go
 * over in one H2D copy; the loss sum is reduced on the backend (sum_rows) into a per-slot F64
 * that the optimizer reads back once per step. The same code runs on the CPU backend (copies
 * are memcpy there, so the bits are today's).
 *
 * Mixed precision (t->bf16, CUDA): every linear layer and lm_head casts its F32 input into the
 * BF16 scratch xb (once per group that shares it: q/k/v, gate/up) and runs a BF16 GEMM on the
 * weights' BF16 working copies with an F32 output; backward casts the F32 output gradient into
 * gb and runs BF16 dgrad and wgrad GEMMs that accumulate into the F32 gradients (beta = 1).
 * Attention reads BF16 copies of q (after RoPE), k and v (saved per layer for the backward pass)
 * and runs on tensor cores with F32 softmax statistics and outputs (the output in BF16 where the
 * o-projection reads it directly, att16); its backward keeps the attention gradients in BF16
 * (datt, dq, dk, dv: grad16) from the o-projection's dgrad to the q/k/v GEMMs. Activations, norms,
 * the loss and the residual stream stay F32.
 *
 * LoRA in mixed precision (lora16: the backend's lora_forward / lora_backward / dropout_acc) keeps
 * the same BF16 activations: each adapter's input is dropped out into BF16 and kept per layer
 * (xd16), lora_forward saves u = scale A xd in BF16 (lu16) and adds u B^T into the base GEMM's
 * output (BF16 q/k/v/gate/up, or the F32 residual sum of o/down); the backward pass runs
 * lora_backward on the BF16 output gradient and the kept xd, and adds the masked input gradient
 * (the mask redrawn from its key) into the base dgrad's output. The first layer forms no input
 * gradient at all when the embedding and its input norm are frozen (LoRA). The adapters' BF16
 * working copies (A16, B16) follow their F32 masters. A packed pass (dspy_train_group_run) draws
 * each of its sequences' masks as that sequence alone would.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "train/trainable_impl.h"

/* An F32 view of n floats on the trainable's backend. */
#define F(p, n) dspy_bt(t->be, (p), (int64_t)(n), DSPY_DTYPE_F32)
#define I32(p, n) dspy_bt(t->be, (p), (int64_t)(n), DSPY_DTYPE_I32)
#define B16(p, n) dspy_bt(t->be, (p), (int64_t)(n), DSPY_DTYPE_BF16)
#define NONE dspy_tensor_none()

/* ---- work buffers ----------------------------------------------------------------------- */

void dspy_train_work_free(dspy_backend *be, train_work *w) {
    be->ops->free(be, w->block);
    be->ops->free(be, w->iblock);
    be->ops->free(be, w->loss_dev);
    be->ops->free(be, w->b16);
    be->ops->free_host(be, w->stage);
    be->ops->free_host(be, w->loss_host);
    free(w->acts);
    memset(w, 0, sizeof *w);
}

/* Whether the LoRA path runs on the BF16 entries (lora_forward / lora_backward / dropout_acc):
 * mixed precision on a backend that has them (lora16 also: not merged yet). */
static bool lora_entries16(const dspy_trainable *t) {
    const dspy_ops *o = t->be->ops;
    return t->bf16 && t->lora_on && o->lora_forward && o->lora_backward && o->dropout_acc;
}

/* Rows of logits per chunk of the loss (trainable_impl.h CE_ROWS). */
static size_t ce_rows(const dspy_trainable *t) { return t->bf16 ? CE_ROWS_BF16 : CE_ROWS; }

/* Sizes (and, when `base` is not NULL, carves) every buffer for T tokens; returns the floats needed. */
static size_t work_layout(dspy_trainable *t, size_t T, float *base) {
    const dspy_model_config *c = &t->cfg;
    train_work *w = &t->work;
    size_t C = (size_t)c->hidden_size, I = (size_t)c->intermediate_size, V = (size_t)c->vocab_size;
    size_t NH = (size_t)c->num_attention_heads, Q = NH * (size_t)c->head_dim;
    size_t KV = (size_t)c->num_key_value_heads * (size_t)c->head_dim;
    /* the F32 LoRA buffers (lu, ltmp, xd, dxd, du) belong to the F32 trainer; mixed precision
     * keeps BF16 ones in work.b16 */
    size_t r = t->lora_on && !lora_entries16(t) ? (size_t)t->lora.r : 0, max_in = C > I ? C : I;
    max_in = max_in > Q ? max_in : Q;
    size_t max_out = max_in; /* the same set of widths */
    /* acts16: q, k, v, gate, up live only in BF16 (their GEMMs write BF16), and so does h */
    size_t f = w->acts16 ? 0 : 1;
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
        TAKE(a->q, T * Q * f);
        TAKE(a->k, T * KV * f);
        TAKE(a->v, T * KV * f);
        TAKE(a->lse, T * NH);
        TAKE(a->att, T * Q);
        TAKE(a->xmid, T * C);
        TAKE(a->gate, T * I * f);
        TAKE(a->up, T * I * f);
        for (int k = 0; k < LIN_COUNT; k++) TAKE(a->lu[k], T * r);
    }
    TAKE(w->xfin, T * C);
    TAKE(w->sel, T * C);
    TAKE(w->seln, T * C);
    TAKE(w->dsel, T * C);
    /* BF16 logits in mixed precision: half the floats, kept a multiple of 64 (what follows stays aligned) */
    TAKE(w->logits, t->bf16 ? ((ce_rows(t) * V + 1) / 2 + 63) & ~(size_t)63 : ce_rows(t) * V);
    TAKE(w->loss, T);
    TAKE(w->xn, T * C);
    TAKE(w->dx, T * C);
    TAKE(w->dxn, T * C);
    TAKE(w->dq, T * Q);
    TAKE(w->datt, T * Q);
    TAKE(w->dk, T * KV);
    TAKE(w->dv, T * KV);
    TAKE(w->h, T * I * f);
    /* dh: BF16 (half the floats) where the backend's dgrad writes it so (acts16, see backward_layers;
     * gate and up never carry biases, so acts16 always takes the BF16 MLP path there) */
    TAKE(w->dh, w->acts16 && t->be->ops->linear_backward_beta ? (T * I + 1) / 2 : T * I);
    TAKE(w->dup, T * I);
    TAKE(w->ltmp, T * max_out * (r ? 1 : 0));
    TAKE(w->xd, T * max_in * (r ? 1 : 0));
    TAKE(w->dxd, T * max_in * (r ? 1 : 0));
    TAKE(w->du, T * r);
#undef TAKE
    return off;
}

dspy_status dspy_train_work_reserve(dspy_trainable *t, int32_t T, int slots) {
    train_work *w = &t->work;
    /* the BF16 trainer keeps BF16 norm, SwiGLU, gate/up and q/k/v outputs (acts16; the
     * environment's DSPY_TRAIN_BF16_ACTS=0 keeps the F32 outputs and their casts instead, for
     * comparisons; LoRA's terms are added into them by lora_forward, so LoRA needs its BF16
     * entries); a switch of precision re-lays the buffers out */
    const char *env = getenv("DSPY_TRAIN_BF16_ACTS");
    const bool lora16 = lora_entries16(t);
    const bool acts16 = t->bf16 && (!t->lora_on || lora16) && !(env && strcmp(env, "0") == 0);
    if (T <= w->cap && slots <= w->nslots && (!t->bf16 || w->b16) && acts16 == w->acts16) return DSPY_OK;
    if (T < w->cap) T = w->cap;
    if (slots < w->nslots) slots = w->nslots;
    if (slots < 1) slots = 1;
    dspy_backend *be = t->be;
    /* A step still in flight may read the old buffers. */
    dspy_status st = be->ops->sync(be);
    if (st) return st;
    dspy_backend_plan plan = {T, T, 1, t->cfg.vocab_size, t->cfg.num_attention_heads, t->cfg.head_dim, 0, 0};
    if ((st = dspy_backend_reserve(be, &plan))) return st;
    /* the BF16 trainer's fused attention (CUDA: cuDNN's) plans its scratch for T rows here */
    if (t->bf16 && be->ops->attention_train_layout &&
        (st = be->ops->attention_train_layout(be, dspy_bt(be, NULL, 0, DSPY_DTYPE_I32), T, 0, 0)))
        return st;
    dspy_status (*done)(void *, int) = w->layer_done; /* a caller's hook outlives the re-layout */
    void *done_ud = w->layer_done_ud;
    dspy_train_work_free(be, w);
    w->layer_done = done, w->layer_done_ud = done_ud;
    w->acts16 = acts16; /* read by work_layout */
    size_t n = work_layout(t, (size_t)T, NULL), ni = 5 * (size_t)T;
    w->acts = calloc((size_t)t->cfg.num_hidden_layers, sizeof *w->acts);
    if (!w->acts) st = dspy_fail(DSPY_ERR_NOMEM, "train step: out of memory");
    if (!st && (st = be->ops->alloc(be, sizeof(float) * n, (void **)&w->block)))
        st = dspy_fail_wrap(st, "train step: %zu MiB of activations for %d tokens", n * sizeof(float) >> 20, (int)T);
    if (!st) st = be->ops->alloc(be, sizeof(int32_t) * ni, (void **)&w->iblock);
    if (!st) st = be->ops->alloc(be, sizeof(double) * (size_t)slots, (void **)&w->loss_dev);
    size_t nxb = 0, ngb = 0, nq = 0, nkv = 0, nxn = 0, nh = 0, nlu = 0, nxd = 0, nsave = 0;
    if (t->bf16) {
        /* xb: the widest linear input, T rows (lm_head's M <= T rows of C included); gb: the
         * widest output gradient, or one ce_rows chunk of dlogits; each 256-byte aligned */
        const dspy_model_config *c = &t->cfg;
        size_t in_max = 0, out_max = 0;
        for (int k = 0; k < LIN_COUNT; k++) {
            int in, out;
            dspy_train_lin_dims(c, k, &in, &out);
            in_max = (size_t)in > in_max ? (size_t)in : in_max;
            out_max = (size_t)out > out_max ? (size_t)out : out_max;
        }
        nxb = ((size_t)T * in_max + 127) & ~(size_t)127;
        ngb = ((size_t)T * out_max + 127) & ~(size_t)127;
        if (ce_rows(t) * (size_t)c->vocab_size > ngb) ngb = ce_rows(t) * (size_t)c->vocab_size;
        nq = ((size_t)T * (size_t)c->num_attention_heads * (size_t)c->head_dim + 127) & ~(size_t)127;
        nkv = ((size_t)T * (size_t)c->num_key_value_heads * (size_t)c->head_dim + 127) & ~(size_t)127;
        nxn = acts16 ? ((size_t)T * (size_t)c->hidden_size + 127) & ~(size_t)127 : 0;
        nh = acts16 ? ((size_t)T * (size_t)c->intermediate_size + 127) & ~(size_t)127 : 0;
        /* LoRA: per layer the seven (T, r) u's and, with dropout, the seven dropped inputs (T, in);
         * dxd16 as wide as xb, and du16 */
        const bool drop = lora16 && t->lora.dropout > 0;
        nlu = lora16 ? ((size_t)T * (size_t)t->lora.r + 127) & ~(size_t)127 : 0;
        nxd = drop ? nxb : 0;
        for (int k = 0; drop && k < LIN_COUNT; k++) {
            int in, out;
            dspy_train_lin_dims(c, k, &in, &out);
            nsave += ((size_t)T * (size_t)in + 127) & ~(size_t)127;
        }
        size_t n16 = nxb + ngb + nxd + nlu +
                     (size_t)c->num_hidden_layers * (nq + 2 * nkv + 2 * nxn + 3 * nh + LIN_COUNT * nlu + nsave);
        if (!st && (st = be->ops->alloc(be, sizeof(uint16_t) * n16, (void **)&w->b16)))
            st = dspy_fail_wrap(st, "train step: %zu MiB of BF16 scratch for %d tokens", n16 * sizeof(uint16_t) >> 20,
                                (int)T);
    }
    if (!st) st = be->ops->alloc_host(be, sizeof(int32_t) * ni * (size_t)slots, (void **)&w->stage);
    if (!st) st = be->ops->alloc_host(be, sizeof(double) * (size_t)slots, (void **)&w->loss_host);
    if (st) {
        dspy_train_work_free(be, w);
        return st;
    }
    work_layout(t, (size_t)T, w->block);
    if (w->b16) {
        w->xb = w->b16, w->gb = w->b16 + nxb;
        uint16_t *cur = w->gb + ngb;
        w->dxd16 = nxd ? cur : NULL, cur += nxd;
        w->du16 = nlu ? cur : NULL, cur += nlu;
        for (int l = 0; l < t->cfg.num_hidden_layers; l++) {
            w->acts[l].qb = cur, cur += nq;
            w->acts[l].kb = cur, cur += nkv;
            w->acts[l].vb = cur, cur += nkv;
            w->acts[l].xnb[0] = nxn ? cur : NULL, cur += nxn;
            w->acts[l].xnb[1] = nxn ? cur : NULL, cur += nxn;
            w->acts[l].hb = nh ? cur : NULL, cur += nh;
            w->acts[l].gate16 = nh ? cur : NULL, cur += nh;
            w->acts[l].up16 = nh ? cur : NULL, cur += nh;
            for (int k = 0; k < LIN_COUNT; k++) w->acts[l].lu16[k] = nlu ? cur : NULL, cur += nlu;
            for (int k = 0; nsave && k < LIN_COUNT; k++) {
                int in, out;
                dspy_train_lin_dims(&t->cfg, k, &in, &out);
                w->acts[l].xd16[k] = cur, cur += ((size_t)T * (size_t)in + 127) & ~(size_t)127;
            }
        }
    }
    w->ids = w->iblock, w->start = w->ids + T, w->pos = w->start + T, w->rows = w->pos + T, w->targets = w->rows + T;
    w->cap = T;
    w->nslots = slots;
    return DSPY_OK;
}

/* ---- the sequence ----------------------------------------------------------------------- */

/* Checks the sequence and fills staging slot `slot` with its ids, start, pos, rows, targets
 * (the layout of work.iblock); *M = labelled rows. */
static dspy_status prepare(dspy_trainable *t, const dspy_train_seq *s, int slot, int32_t *M) {
    const dspy_model_config *c = &t->cfg;
    int32_t T = s->T, V = c->vocab_size, m = 0, cap = t->work.cap;
    int32_t *ids = t->work.stage + (size_t)slot * 5 * (size_t)cap;
    int32_t *start = ids + cap, *pos = ids + 2 * (size_t)cap, *rows = ids + 3 * (size_t)cap;
    int32_t *targets = ids + 4 * (size_t)cap;
    memcpy(ids, s->ids, sizeof(int32_t) * (size_t)T);
    if (s->prefix < 0 || s->prefix >= T || (s->prefix > 0 && (!s->seg || s->seg[s->prefix - 1] != s->seg[0] ||
                                                             s->seg[s->prefix] == s->seg[s->prefix - 1])))
        return dspy_fail(DSPY_ERR_ARG,
                         "train sequence: prefix is %d; a shared prefix is the first example exactly (seg runs "
                         "[0, prefix)) and is followed by at least one continuation (0 < prefix < T = %d)",
                         (int)s->prefix, (int)T);
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
        start[i] = first ? i : start[i - 1];
        /* continuations of a shared prefix go on from its last position */
        int32_t p = s->pos ? s->pos[i] : i - start[i] + (start[i] > 0 ? s->prefix : 0);
        if (p < 0)
            return dspy_fail(DSPY_ERR_ARG, "train sequence: pos[%d] is %d; positions are non-negative", (int)i, (int)p);
        if (p >= c->max_position_embeddings)
            return dspy_fail(DSPY_ERR_CONTEXT,
                             "train sequence: pos[%d] is %d, beyond the model's context of %d tokens "
                             "(max_position_embeddings); shorten the example",
                             (int)i, (int)p, (int)c->max_position_embeddings);
        pos[i] = p;
        if (s->labels[i] != -100) {
            rows[m] = i;
            targets[m] = s->labels[i];
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

/* rng: the RNG state of the sequence (the trainable's, plus its index in a packed pass). */
static uint64_t dropout_key(const dspy_trainable *t, uint64_t rng, int layer, int lin) {
    return mix64(mix64(mix64(t->seed) ^ rng) ^ (uint64_t)(layer * LIN_COUNT + lin));
}

/* out (T, cols) = dropout(inp) (or += when acc: dropout_acc) for linear (l, lin): each sequence of
 * the pass (work.parts) with its own key and its elements indexed from its first row, so a
 * packed pass drops exactly what each sequence would alone. out may equal inp (not with acc). */
static dspy_status lora_drop(dspy_trainable *t, int l, int lin, dspy_tensor out, dspy_tensor inp, int cols, bool acc) {
    dspy_backend *be = t->be;
    const train_work *w = &t->work;
    for (int j = 0; j < w->nparts; j++) {
        int64_t r0 = w->parts[j], n = (int64_t)(w->parts[j + 1] - r0) * cols;
        dspy_tensor o = dspy_tensor_slice(out, r0 * cols, n), x = dspy_tensor_slice(inp, r0 * cols, n);
        uint64_t key = dropout_key(t, t->rng + (uint64_t)j * t->rng_stride, l, lin);
        if (acc) DSPY_TRY(be->ops->dropout_acc(be, o, x, t->lora.dropout, key, true));
        else if (o.dtype == DSPY_DTYPE_F32 && x.dtype == DSPY_DTYPE_F32)
            DSPY_TRY(be->ops->dropout(be, o, x, t->lora.dropout, key));
        else DSPY_TRY(be->ops->dropout_acc(be, o, x, t->lora.dropout, key, false));
    }
    return DSPY_OK;
}

static bool lora16(const dspy_trainable *t) { return lora_entries16(t) && !t->merged; }

/* y (T, out) += the LoRA term of linear (l, lin) from its BF16 input x16 (T, in), mixed
 * precision: dropout(x) kept in BF16 (acts xd16), u = scale A dropout(x) saved in BF16 (acts
 * lu16), then y += u B^T accumulated into y, F32 or BF16 (the base GEMM's output). */
static dspy_status lora_fwd16(dspy_trainable *t, int l, int lin, dspy_tensor y, const uint16_t *x16, int T,
                              bool train) {
    dspy_backend *be = t->be;
    train_work *w = &t->work;
    const lora_adapter *a = &t->layers[l].lora[lin];
    int in, out, r = t->lora.r;
    dspy_train_lin_dims(&t->cfg, lin, &in, &out);
    dspy_tensor x = B16((uint16_t *)x16, T * in);
    if (train && t->lora.dropout > 0) { /* kept for the backward pass */
        DSPY_TRY(lora_drop(t, l, lin, B16(w->acts[l].xd16[lin], T * in), x, in, false));
        x = B16(w->acts[l].xd16[lin], T * in);
    }
    return be->ops->lora_forward(be, y, B16(w->acts[l].lu16[lin], T * r), x, B16(a->A16, r * in), B16(a->B16, out * r),
                                 T, in, r, out, t->lora_scale);
}

/* Backward of lora_fwd16: gA, gB accumulate; dx (T, in) (F32 or BF16, the base dgrad's output;
 * none: no input gradient) += the LoRA path's input gradient, dy16 (T, out) the output gradient in
 * BF16. */
static dspy_status lora_bwd16(dspy_trainable *t, int l, int lin, dspy_tensor dx, const uint16_t *x16,
                              const uint16_t *dy16, int T) {
    dspy_backend *be = t->be;
    train_work *w = &t->work;
    const lora_adapter *a = &t->layers[l].lora[lin];
    int in, out, r = t->lora.r;
    dspy_train_lin_dims(&t->cfg, lin, &in, &out);
    const bool drop = t->lora.dropout > 0;
    /* the forward's dropped input (x16 itself without dropout) */
    dspy_tensor x = B16(drop ? w->acts[l].xd16[lin] : (uint16_t *)x16, T * in);
    /* with dropout the input gradient goes through the mask: du A into dxd16 first, then masked
     * and added to dx in one pass */
    dspy_tensor dxl = drop && dx.data ? B16(w->dxd16, T * in) : dx;
    DSPY_TRY(be->ops->lora_backward(be, dxl, F(a->gA, r * in), F(a->gB, out * r), B16(w->du16, T * r),
                                    B16((uint16_t *)dy16, T * out), x, B16(w->acts[l].lu16[lin], T * r),
                                    B16(a->A16, r * in), B16(a->B16, out * r), T, in, r, out, t->lora_scale,
                                    drop ? 0.0f : 1.0f));
    return drop && dx.data ? lora_drop(t, l, lin, dx, dxl, in, true) : DSPY_OK;
}

/* ---- linear layers (with LoRA) ---------------------------------------------------------- */

/* y (T, out) = x (T, in) W^T + b, plus the LoRA path when on (saving its scaled intermediate).
 * Mixed precision: cast_x casts x into work.xb first; false when xb already holds x (the
 * previous linear of the group had the same input); xb16, when given, is x already in BF16
 * (acts16: x itself is then unused); y16, when given (acts16, no LoRA), receives the output in
 * BF16 instead of y. */
static dspy_status linear_fwd16(dspy_trainable *t, int l, int lin, float *y, uint16_t *y16, const float *x,
                                const uint16_t *xb16, int T, bool train, bool cast_x) {
    dspy_backend *be = t->be;
    const dspy_ops *o = be->ops;
    train_layer *L = &t->layers[l];
    train_work *w = &t->work;
    int in, out;
    dspy_train_lin_dims(&t->cfg, lin, &in, &out);
    dspy_tensor bias = L->b[lin] ? F(L->b[lin], out) : NONE;
    if (t->bf16) {
        uint16_t *xb = xb16 ? (uint16_t *)xb16 : w->xb;
        if (cast_x && !xb16) DSPY_TRY(o->cast(be, B16(w->xb, T * in), F((float *)x, T * in)));
        dspy_tensor yt = y16 ? B16(y16, T * out) : F(y, T * out);
        DSPY_TRY(o->linear(be, yt, B16(xb, T * in), B16(L->w16[lin], out * in), bias, T, in, out, false));
        if (lora16(t)) return lora_fwd16(t, l, lin, yt, xb, T, train);
    } else {
        DSPY_TRY(o->linear(be, F(y, T * out), F((float *)x, T * in), F(L->w[lin], out * in), bias, T, in, out, false));
    }
    if (!t->lora_on || t->merged) return DSPY_OK;
    if (y16) return dspy_fail(DSPY_ERR_STATE, "train step: a BF16 linear output under LoRA");
    const lora_adapter *a = &L->lora[lin];
    int r = t->lora.r;
    float *u = w->acts[l].lu[lin]; /* (T, r) */
    const float *xin = x;
    if (train && t->lora.dropout > 0) {
        DSPY_TRY(lora_drop(t, l, lin, F(w->xd, T * in), F((float *)x, T * in), in, false));
        xin = w->xd;
    }
    DSPY_TRY(o->linear(be, F(u, T * r), F((float *)xin, T * in), F(a->A, r * in), NONE, T, in, r, false));
    DSPY_TRY(o->scale(be, F(u, T * r), t->lora_scale));
    DSPY_TRY(o->linear(be, F(w->ltmp, T * out), F(u, T * r), F(a->B, out * r), NONE, T, r, out, false));
    return o->add(be, F(y, T * out), F(w->ltmp, T * out));
}

static dspy_status linear_fwd(dspy_trainable *t, int l, int lin, float *y, const float *x, int T, bool train,
                              bool cast_x) {
    return linear_fwd16(t, l, lin, y, NULL, x, NULL, T, train, cast_x);
}

/* Backward of linear_fwd: dx (T, in) += dy W (+ the LoRA path), or = when !acc_dx (the first
 * contribution to dx: no zeroing needed); weight, bias and adapter gradients accumulate where
 * trainable (the weight gradient is overwritten instead on a fresh pass, work.fresh). Mixed
 * precision: dy is cast into work.gb, and x into work.xb when cast_x (as linear_fwd; only the
 * weight gradient reads it); xb16 / dyb16, when given, are x / dy already in BF16 (acts16;
 * dyb16 only for a linear without bias); dx16, when given (!acc_dx, no LoRA, a backend with
 * linear_backward_beta), receives dx in BF16 instead of dx. With neither dx nor dx16 no input
 * gradient is formed (layer 0's, which only a trained embedding or norm would read). */
static dspy_status linear_bwd16(dspy_trainable *t, int l, int lin, float *dx, uint16_t *dx16, bool acc_dx,
                                const float *dy, const float *x, const uint16_t *xb16, const uint16_t *dyb16, int T,
                                bool cast_x) {
    dspy_backend *be = t->be;
    const dspy_ops *o = be->ops;
    train_layer *L = &t->layers[l];
    train_work *w = &t->work;
    int in, out;
    dspy_train_lin_dims(&t->cfg, lin, &in, &out);
    dspy_tensor dbias = L->b[lin] && L->gb[lin] ? F(L->gb[lin], out) : NONE;
    const bool want_dx = dx || dx16;
    if (t->bf16) {
        uint16_t *xb = xb16 ? (uint16_t *)xb16 : w->xb, *gb = dyb16 ? (uint16_t *)dyb16 : w->gb;
        if (dyb16 && dbias.data)
            return dspy_fail(DSPY_ERR_ARG, "train step: a BF16 output gradient for a linear with a bias");
        /* x in BF16: the weight gradient's operand, or LoRA's (with dropout LoRA reads its kept
         * dropped input instead) */
        if (cast_x && !xb16 && (L->gw[lin] || (lora16(t) && !(t->lora.dropout > 0))))
            DSPY_TRY(o->cast(be, B16(w->xb, T * in), F((float *)x, T * in)));
        if (!dyb16) DSPY_TRY(o->cast(be, B16(w->gb, T * out), F((float *)dy, T * out)));
        /* a single-pass step's weight gradient in BF16 (work.wgrad16: overwritten once, never added to) */
        dspy_tensor gw = !L->gw[lin]  ? NONE
                         : w->wgrad16 ? B16((uint16_t *)L->gw[lin], out * in)
                                      : F(L->gw[lin], out * in);
        if (w->wgrad16 && (!w->fresh || !o->linear_backward_beta))
            return dspy_fail(DSPY_ERR_STATE, "train step: a BF16 weight gradient needs a single overwriting pass");
        if (dx16 && (acc_dx || !o->linear_backward_beta || (t->lora_on && !lora16(t))))
            return dspy_fail(DSPY_ERR_STATE, "train step: a BF16 dx needs an overwriting dgrad (and LoRA's BF16 "
                                             "entries under LoRA)");
        if (o->linear_backward_beta) { /* dx and, on a fresh pass, the weight gradient overwritten */
            dspy_tensor dxt = dx16 ? B16(dx16, T * in) : dx ? F(dx, T * in) : NONE;
            DSPY_TRY(o->linear_backward_beta(be, dxt, gw, B16(gb, T * out), B16(xb, T * in),
                                             B16(L->w16[lin], out * in), T, in, out, acc_dx ? 1.0f : 0.0f,
                                             w->fresh ? 0.0f : 1.0f));
        } else {
            if (want_dx && !acc_dx) DSPY_TRY(o->fill(be, F(dx, T * in), 0.0f));
            DSPY_TRY(o->linear_backward(be, want_dx ? F(dx, T * in) : NONE, gw, NONE, B16(gb, T * out),
                                        B16(xb, T * in), B16(L->w16[lin], out * in), T, in, out));
        }
        if (dbias.data) /* summed from the F32 gradient */
            DSPY_TRY(o->linear_backward(be, NONE, NONE, dbias, F((float *)dy, T * out), NONE, NONE, T, in, out));
        if (lora16(t))
            return lora_bwd16(t, l, lin, dx16 ? B16(dx16, T * in) : dx ? F(dx, T * in) : NONE, xb, gb, T);
    } else {
        if (dx16) return dspy_fail(DSPY_ERR_STATE, "train step: a BF16 dx in the F32 trainer");
        if (want_dx && !acc_dx) DSPY_TRY(o->fill(be, F(dx, T * in), 0.0f));
        DSPY_TRY(o->linear_backward(be, want_dx ? F(dx, T * in) : NONE, L->gw[lin] ? F(L->gw[lin], out * in) : NONE,
                                    dbias, F((float *)dy, T * out), F((float *)x, T * in), F(L->w[lin], out * in), T,
                                    in, out));
    }
    if (!t->lora_on) return DSPY_OK;
    const lora_adapter *a = &L->lora[lin];
    int r = t->lora.r;
    float *u = w->acts[l].lu[lin]; /* (T, r), already scaled by alpha/r */
    DSPY_TRY(o->fill(be, F(w->du, T * r), 0.0f));
    /* du = dy B; gB += dy^T u */
    DSPY_TRY(o->linear_backward(be, F(w->du, T * r), F(a->gB, out * r), NONE, F((float *)dy, T * out), F(u, T * r),
                                F(a->B, out * r), T, r, out));
    DSPY_TRY(o->scale(be, F(w->du, T * r), t->lora_scale));
    if (t->lora.dropout > 0) {
        DSPY_TRY(lora_drop(t, l, lin, F(w->xd, T * in), F((float *)x, T * in), in, false));
        if (want_dx) DSPY_TRY(o->fill(be, F(w->dxd, T * in), 0.0f));
        DSPY_TRY(o->linear_backward(be, want_dx ? F(w->dxd, T * in) : NONE, F(a->gA, r * in), NONE, F(w->du, T * r),
                                    F(w->xd, T * in), F(a->A, r * in), T, in, r));
        if (!want_dx) return DSPY_OK;
        DSPY_TRY(lora_drop(t, l, lin, F(w->dxd, T * in), F(w->dxd, T * in), in, false));
        return o->add(be, F(dx, T * in), F(w->dxd, T * in));
    }
    return o->linear_backward(be, want_dx ? F(dx, T * in) : NONE, F(a->gA, r * in), NONE, F(w->du, T * r),
                              F((float *)x, T * in), F(a->A, r * in), T, in, r);
}

/* ---- the pass --------------------------------------------------------------------------- */

/* Whether layer l keeps its attention output in BF16 (acts16): in a->att's memory (the first half
 * of its F32 buffer) when the o-projection reads it from there as its GEMM operand (linear_add, no
 * o bias) and the backend's attention can write it so (kern/ops.h attention_train: head size 64
 * or 128, 16-byte aligned tensors). It saves the F32 write, the cast into xb forward and again
 * backward, and the fused attention's widening and narrowing of it. The default;
 * DSPY_TRAIN_ATT16=0 keeps the F32 att (the comparison), as does CUDA's DSPY_CUDA_TRAIN_ATTN=wmma
 * (its comparison kernels write F32 only). */
static bool att16(const dspy_trainable *t, int l) {
    const train_work *w = &t->work;
    const train_layer *L = &t->layers[l];
    const int HS = t->cfg.head_dim;
    if (!w->acts16 || !t->be->ops->linear_add || L->b[LIN_O] || (HS != 64 && HS != 128)) return false;
    if (!w->att16_env) return false;
    const void *ptrs[] = {w->acts[l].att, w->acts[l].qb, w->acts[l].kb, w->acts[l].vb, w->dq, w->dk, w->dv, w->datt};
    uintptr_t bits = 0;
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) bits |= (uintptr_t)ptrs[i];
    return (bits & 15u) == 0;
}

/* Whether layer l's attention gradients stay BF16 (grad16), as autocast keeps them: the
 * o-projection's dgrad writes datt in BF16 (in w->datt's memory), attention_train_backward reads
 * it and writes BF16 dq, dk, dv (in w->dq, w->dk, w->dv's memory), RoPE's backward rotates them in
 * place and the q/k/v dgrad and wgrad GEMMs read them as their operands: no F32 copy, no cast.
 * Needs the BF16 saved activations (acts16) and an overwriting dgrad (linear_backward_beta), LoRA
 * on its BF16 entries if on, no q/k/v biases (their gradients are summed from F32), and what the
 * backend's BF16 attention gradients need (kern/ops.h: head size 64 or 128, NH == NKV or
 * NH >= 4 NKV, 16-byte aligned tensors). DSPY_TRAIN_GRAD16=0 keeps the F32 gradients (comparisons);
 * so does CUDA's DSPY_CUDA_TRAIN_ATTN=wmma (its comparison kernels take F32 only). Measured on the
 * H200 (bench_train T1, 4 x 2,048 tokens, the 1B shape, cuDNN's attention): 120.3 ms a step against
 * 124.0 with the F32 gradients under the BF16 att (DSPY_TRAIN_ATT16=1), 123.9 against 126.3 without
 * it; the same losses to BF16 noise (test_cuda_train). */
static bool grad16(const dspy_trainable *t, int l) {
    const train_work *w = &t->work;
    const train_layer *L = &t->layers[l];
    const int HS = t->cfg.head_dim, NH = t->cfg.num_attention_heads, NKV = t->cfg.num_key_value_heads;
    if (!w->grad16_env || !w->acts16 || !t->be->ops->linear_backward_beta || (t->lora_on && !lora16(t))) return false;
    if (L->b[LIN_Q] || L->b[LIN_K] || L->b[LIN_V] || (HS != 64 && HS != 128) || (NH != NKV && NH < 4 * NKV))
        return false;
    const void *ptrs[] = {w->acts[l].att, w->acts[l].qb, w->acts[l].kb, w->acts[l].vb, w->dq, w->dk, w->dv, w->datt};
    uintptr_t bits = 0;
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) bits |= (uintptr_t)ptrs[i];
    return (bits & 15u) == 0;
}

bool dspy_train_grad16(const dspy_trainable *t, int l) {
    return t->work.acts && l >= 0 && l < t->cfg.num_hidden_layers && grad16(t, l);
}

static dspy_status forward_layers(dspy_trainable *t, const dspy_train_seq *s, bool train) {
    const dspy_model_config *c = &t->cfg;
    dspy_backend *be = t->be;
    const dspy_ops *o = be->ops;
    train_work *w = &t->work;
    const int T = s->T, C = c->hidden_size, I = c->intermediate_size;
    const int NH = c->num_attention_heads, NKV = c->num_key_value_heads, HS = c->head_dim;
    const int Q = NH * HS, KV = NKV * HS;
    const float eps = (float)c->rms_norm_eps;
    dspy_tensor inv_freq = F(t->inv_freq, HS / 2), pos = I32(w->pos, T);
    DSPY_TRY(o->embedding(be, F(w->acts[0].xin, T * C), I32(w->ids, T),
                          F(t->embed, (int64_t)c->vocab_size * C), T, C));                  /* x (T, C) */
    for (int l = 0; l < c->num_hidden_layers; l++) {
        train_layer *L = &t->layers[l];
        layer_acts *a = &w->acts[l];
        float *xout = l + 1 < c->num_hidden_layers ? w->acts[l + 1].xin : w->xfin; /* (T, C) */
        /* acts16: the norm, q/k/v, gate/up and SwiGLU outputs are written in BF16 straight into
         * this layer's saved copies, which the next op reads (no F32 copy, no cast) and the
         * backward reuses; RoPE rotates the BF16 q and k in place */
        const bool ba = w->acts16;
        uint16_t *xn0 = ba ? a->xnb[0] : NULL, *xn1 = ba ? a->xnb[1] : NULL, *hb = ba ? a->hb : NULL;
        if (ba) DSPY_TRY(o->rmsnorm(be, B16(xn0, T * C), F(a->xin, T * C), F(L->attn_norm, C), T, C, eps));
        else DSPY_TRY(o->rmsnorm(be, F(w->xn, T * C), F(a->xin, T * C), F(L->attn_norm, C), T, C, eps));
        DSPY_TRY(linear_fwd16(t, l, LIN_Q, a->q, ba ? a->qb : NULL, w->xn, xn0, T, train, true));    /* (T, NH, HS) */
        DSPY_TRY(linear_fwd16(t, l, LIN_K, a->k, ba ? a->kb : NULL, w->xn, xn0, T, train, false));   /* (T, NKV, HS) */
        DSPY_TRY(linear_fwd16(t, l, LIN_V, a->v, ba ? a->vb : NULL, w->xn, xn0, T, train, false));   /* (T, NKV, HS) */
        /* RoPE, then the attention: acts16 rotates the BF16 q and k in place; the BF16 trainer
         * otherwise casts the rotated F32 q, k and v into BF16 copies (both kept for the backward
         * pass), which the tensor-core attention reads */
        dspy_tensor qr = ba ? B16(a->qb, T * Q) : F(a->q, T * Q), kr = ba ? B16(a->kb, T * KV) : F(a->k, T * KV);
        DSPY_TRY(o->rope(be, qr, pos, inv_freq, T, NH, HS));
        DSPY_TRY(o->rope(be, kr, pos, inv_freq, T, NKV, HS));
        if (t->bf16 && !ba) {
            DSPY_TRY(o->cast(be, B16(a->qb, T * Q), F(a->q, T * Q)));
            DSPY_TRY(o->cast(be, B16(a->kb, T * KV), F(a->k, T * KV)));
            DSPY_TRY(o->cast(be, B16(a->vb, T * KV), F(a->v, T * KV)));
        }
        const bool at16 = att16(t, l);
        uint16_t *att16p = at16 ? (uint16_t *)a->att : NULL; /* the BF16 att (T, Q), or NULL */
        if (t->bf16)
            DSPY_TRY(o->attention_train(be, at16 ? B16(att16p, T * Q) : F(a->att, T * Q), F(a->lse, T * NH),
                                        B16(a->qb, T * Q), B16(a->kb, T * KV), B16(a->vb, T * KV), I32(w->start, T),
                                        s->prefix, T, NH, NKV, HS));
        else
            DSPY_TRY(o->attention_train(be, F(a->att, T * Q), F(a->lse, T * NH), F(a->q, T * Q), F(a->k, T * KV),
                                        F(a->v, T * KV), I32(w->start, T), s->prefix, T, NH, NKV, HS));
        /* acts16 (no bias): the residual add rides in the GEMM's epilogue (linear_add), LoRA's
         * term is then added into the sum */
        const bool radd = ba && o->linear_add && !L->b[LIN_O];
        if (radd) {
            uint16_t *xo = att16p ? att16p : w->xb;
            if (!att16p) DSPY_TRY(o->cast(be, B16(w->xb, T * Q), F(a->att, T * Q)));
            DSPY_TRY(o->linear_add(be, F(a->xmid, T * C), B16(xo, T * Q), B16(L->w16[LIN_O], (int64_t)C * Q),
                                   F(a->xin, T * C), T, Q, C));                                /* x + o */
            if (lora16(t)) DSPY_TRY(lora_fwd16(t, l, LIN_O, F(a->xmid, T * C), xo, T, train));
        } else {
            DSPY_TRY(linear_fwd(t, l, LIN_O, a->xmid, a->att, T, train, true));                     /* o (T, C) */
            DSPY_TRY(o->add(be, F(a->xmid, T * C), F(a->xin, T * C)));                        /* x + o */
        }
        if (ba) DSPY_TRY(o->rmsnorm(be, B16(xn1, T * C), F(a->xmid, T * C), F(L->mlp_norm, C), T, C, eps));
        else DSPY_TRY(o->rmsnorm(be, F(w->xn, T * C), F(a->xmid, T * C), F(L->mlp_norm, C), T, C, eps));
        DSPY_TRY(linear_fwd16(t, l, LIN_GATE, a->gate, ba ? a->gate16 : NULL, w->xn, xn1, T, train, true)); /* (T, I) */
        DSPY_TRY(linear_fwd16(t, l, LIN_UP, a->up, ba ? a->up16 : NULL, w->xn, xn1, T, train, false));     /* (T, I) */
        if (ba) DSPY_TRY(o->swiglu(be, B16(hb, T * I), B16(a->gate16, T * I), B16(a->up16, T * I), T, I, I));
        else DSPY_TRY(o->swiglu(be, F(w->h, T * I), F(a->gate, T * I), F(a->up, T * I), T, I, I));
        if (radd) {
            DSPY_TRY(o->linear_add(be, F(xout, T * C), B16(hb, T * I), B16(L->w16[LIN_DOWN], (int64_t)C * I),
                                   F(a->xmid, T * C), T, I, C));                               /* x + mlp */
            if (lora16(t)) DSPY_TRY(lora_fwd16(t, l, LIN_DOWN, F(xout, T * C), hb, T, train));
        } else {
            DSPY_TRY(linear_fwd16(t, l, LIN_DOWN, xout, NULL, w->h, hb, T, train, true));       /* mlp (T, C) */
            DSPY_TRY(o->add(be, F(xout, T * C), F(a->xmid, T * C)));
        }
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
    dspy_tensor inv_freq = F(t->inv_freq, HS / 2), pos = I32(w->pos, T);
    /* w->dx (T, C) holds d loss / d (residual after the last layer). Every first contribution
     * to a gradient buffer overwrites it (acc_dx false; no zeroing pass). */
    for (int l = c->num_hidden_layers - 1; l >= 0; l--) {
        train_layer *L = &t->layers[l];
        layer_acts *a = &w->acts[l];
        /* MLP: x_out = xmid + down(swiglu(gate(xn), up(xn))), xn = rms(xmid). */
        /* acts16: the forward's BF16 norm, gate/up and SwiGLU outputs replace the recomputation
         * (and its casts); without gate/up biases, swiglu_backward writes dgate and dup in BF16
         * (into w->dup's memory, two (T, I) BF16 halves), the GEMMs' operands, and no F32 copy. */
        const bool ba = w->acts16, mlp16 = ba && !L->b[LIN_GATE] && !L->b[LIN_UP];
        uint16_t *xn0 = ba ? a->xnb[0] : NULL, *xn1 = ba ? a->xnb[1] : NULL, *hb = ba ? a->hb : NULL;
        dspy_tensor gate = ba ? B16(a->gate16, T * I) : F(a->gate, T * I), up = ba ? B16(a->up16, T * I) : F(a->up, T * I);
        if (!ba) {
            DSPY_TRY(o->rmsnorm(be, F(w->xn, T * C), F(a->xmid, T * C), F(L->mlp_norm, C), T, C, eps));
            DSPY_TRY(o->swiglu(be, F(w->h, T * I), gate, up, T, I, I));
        }
        /* mlp16 with linear_backward_beta: dh itself in BF16 (in w->dh's memory), what
         * swiglu_backward reads */
        uint16_t *dh16 = mlp16 && o->linear_backward_beta ? (uint16_t *)w->dh : NULL;
        DSPY_TRY(linear_bwd16(t, l, LIN_DOWN, w->dh, dh16, false, w->dx, w->h, hb, NULL, T, true)); /* dh (T, I) */
        if (mlp16) {
            uint16_t *dgb = (uint16_t *)w->dup, *dub = dgb + (size_t)T * I;
            dspy_tensor dh = dh16 ? B16(dh16, T * I) : F(w->dh, T * I);
            DSPY_TRY(o->swiglu_backward(be, B16(dgb, T * I), B16(dub, T * I), dh, gate, up, T, I));
            DSPY_TRY(linear_bwd16(t, l, LIN_GATE, w->dxn, NULL, false, NULL, NULL, xn1, dgb, T, false));
            DSPY_TRY(linear_bwd16(t, l, LIN_UP, w->dxn, NULL, true, NULL, NULL, xn1, dub, T, false));
        } else {
            DSPY_TRY(o->swiglu_backward(be, F(w->dh, T * I), F(w->dup, T * I), F(w->dh, T * I), gate, up, T,
                                        I));                                                  /* dgate in dh */
            DSPY_TRY(linear_bwd16(t, l, LIN_GATE, w->dxn, NULL, false, w->dh, w->xn, xn1, NULL, T, true));
            DSPY_TRY(linear_bwd16(t, l, LIN_UP, w->dxn, NULL, true, w->dup, w->xn, xn1, NULL, T, false));
        }
        DSPY_TRY(o->rmsnorm_backward(be, F(w->dx, T * C), L->g_mlp_norm ? F(L->g_mlp_norm, C) : NONE,
                                     F(w->dxn, T * C), F(a->xmid, T * C), F(L->mlp_norm, C), T, C, eps)); /* d xmid */
        /* Attention: xmid = xin + o(attn(rope(q(xn)), rope(k(xn)), v(xn))), xn = rms(xin). */
        const bool at16 = att16(t, l); /* as the forward decided (the same pass: att16_env) */
        /* grad16: datt, dq, dk, dv in BF16, each in its F32 buffer's memory */
        const bool g16 = grad16(t, l);
        uint16_t *datt16 = g16 ? (uint16_t *)w->datt : NULL, *dq16 = g16 ? (uint16_t *)w->dq : NULL;
        uint16_t *dk16 = g16 ? (uint16_t *)w->dk : NULL, *dv16 = g16 ? (uint16_t *)w->dv : NULL;
        if (at16)
            DSPY_TRY(linear_bwd16(t, l, LIN_O, w->datt, datt16, false, w->dx, NULL, (uint16_t *)a->att, NULL, T,
                                  false));
        else DSPY_TRY(linear_bwd16(t, l, LIN_O, w->datt, datt16, false, w->dx, a->att, NULL, NULL, T, true)); /* datt (T, Q) */
        dspy_tensor qa = t->bf16 ? B16(a->qb, T * Q) : F(a->q, T * Q);
        dspy_tensor ka = t->bf16 ? B16(a->kb, T * KV) : F(a->k, T * KV);
        dspy_tensor va = t->bf16 ? B16(a->vb, T * KV) : F(a->v, T * KV);
        dspy_tensor dq = g16 ? B16(dq16, T * Q) : F(w->dq, T * Q), dk = g16 ? B16(dk16, T * KV) : F(w->dk, T * KV);
        dspy_tensor dv = g16 ? B16(dv16, T * KV) : F(w->dv, T * KV);
        DSPY_TRY(o->attention_train_backward(be, dq, dk, dv, g16 ? B16(datt16, T * Q) : F(w->datt, T * Q),
                                             at16 ? B16((uint16_t *)a->att, T * Q) : F(a->att, T * Q),
                                             F(a->lse, T * NH), qa, ka, va,
                                             I32(w->start, T), s->prefix, T, NH, NKV, HS));
        DSPY_TRY(o->rope_backward(be, dq, pos, inv_freq, T, NH, HS));
        DSPY_TRY(o->rope_backward(be, dk, pos, inv_freq, T, NKV, HS));
        if (!ba) DSPY_TRY(o->rmsnorm(be, F(w->xn, T * C), F(a->xin, T * C), F(L->attn_norm, C), T, C, eps));
        /* the first layer's input gradient feeds only a trained embedding or input norm: frozen
         * under LoRA, so its q/k/v input gradients and the norm's backward are skipped there */
        float *dxn = l > 0 || t->g_embed || L->g_attn_norm ? w->dxn : NULL;
        DSPY_TRY(linear_bwd16(t, l, LIN_Q, dxn, NULL, false, w->dq, w->xn, xn0, dq16, T, true));
        DSPY_TRY(linear_bwd16(t, l, LIN_K, dxn, NULL, true, w->dk, w->xn, xn0, dk16, T, false));
        DSPY_TRY(linear_bwd16(t, l, LIN_V, dxn, NULL, true, w->dv, w->xn, xn0, dv16, T, false));
        if (dxn)
            DSPY_TRY(o->rmsnorm_backward(be, F(w->dx, T * C), L->g_attn_norm ? F(L->g_attn_norm, C) : NONE,
                                         F(dxn, T * C), F(a->xin, T * C), F(L->attn_norm, C), T, C, eps)); /* d xin */
        if (w->layer_done) DSPY_TRY(w->layer_done(w->layer_done_ud, l));
    }
    if (t->g_embed)
        DSPY_TRY(o->embedding_backward(be, F(t->g_embed, (int64_t)c->vocab_size * C), I32(w->ids, T),
                                       F(w->dx, T * C), T, C));
    return DSPY_OK;
}

/* The pass itself (dspy_train_group_run has planned the buffers and set work.parts). */
static dspy_status seq_pass(dspy_trainable *t, const dspy_train_seq *s, bool train, float grad_scale, int slot,
                            int32_t *Mout) {
    if (train && t->merged)
        return dspy_fail(DSPY_ERR_STATE, "train step: the LoRA adapters were merged; make a new trainable to train on");
    int32_t M = 0;
    dspy_status st = prepare(t, s, slot, &M);
    if (st) return st;
    const dspy_model_config *c = &t->cfg;
    dspy_backend *be = t->be;
    const dspy_ops *o = be->ops;
    train_work *w = &t->work;
    const int C = c->hidden_size, V = c->vocab_size, T = s->T;
    const float eps = (float)c->rms_norm_eps;
    dspy_tensor loss_slots = dspy_bt(be, w->loss_dev, w->nslots, DSPY_DTYPE_F64);
    if (M == 0) { /* nothing to learn from: the slot's loss is the empty sum */
        return o->sum_rows(be, loss_slots, slot, F(w->loss, 0));
    }
    *Mout = M;
    const int32_t *stage = w->stage + (size_t)slot * 5 * (size_t)w->cap;
    DSPY_TRY(o->copy(be, w->iblock, stage, sizeof(int32_t) * 5 * (size_t)w->cap, DSPY_COPY_H2D));
    if (t->bf16 && o->attention_train_layout) { /* the examples' count and longest, from the staged starts */
        const int32_t *start = stage + w->cap;
        int nseg = 0, longest = 0;
        for (int i = 0; i < T; i++) {
            if (start[i] == i) nseg++;
            int len = i - start[i] + 1;
            longest = len > longest ? len : longest;
        }
        DSPY_TRY(o->attention_train_layout(be, I32(w->start, T), T, nseg, longest));
    }
    const char *a16 = getenv("DSPY_TRAIN_ATT16"), *wmma = getenv("DSPY_CUDA_TRAIN_ATTN");
    w->att16_env = !(a16 && strcmp(a16, "0") == 0) && !(wmma && strcmp(wmma, "wmma") == 0);
    const char *g16 = getenv("DSPY_TRAIN_GRAD16");
    w->grad16_env = !(g16 && strcmp(g16, "0") == 0) && !(wmma && strcmp(wmma, "wmma") == 0);
    DSPY_TRY(forward_layers(t, s, train));
    dspy_tensor lm_head = F(t->lm_head, (int64_t)V * C), final_norm = F(t->final_norm, C);
    DSPY_TRY(o->gather_rows(be, F(w->sel, M * C), F(w->xfin, T * C), I32(w->rows, M), M, C)); /* sel (M, C) */
    DSPY_TRY(o->rmsnorm(be, F(w->seln, M * C), F(w->sel, M * C), final_norm, M, C, eps));
    /* d seln: each chunk's rows are written once (overwritten where the backend can, else zeroed
     * here and accumulated) */
    const bool beta = t->bf16 && o->linear_backward_beta;
    if (train && !beta) DSPY_TRY(o->fill(be, F(w->dsel, M * C), 0.0f));
    if (t->bf16) { /* the GEMM operands: seln in BF16 once, the head's working copy */
        DSPY_TRY(o->cast(be, B16(w->xb, M * C), F(w->seln, M * C)));
        lm_head = B16(t->lm_head16, (int64_t)V * C);
    }
    const int cr = (int)ce_rows(t);
    for (int m0 = 0; m0 < M; m0 += cr) {
        int mc = M - m0 < cr ? M - m0 : cr;
        dspy_tensor xs = t->bf16 ? B16(w->xb + (size_t)m0 * C, mc * C)                      /* (mc, C) */
                                 : F(w->seln + (size_t)m0 * C, mc * C);
        /* mixed precision: the logits in BF16 (in the F32 buffer's memory), as torch autocast's
         * lm_head writes them; half the bytes for the GEMM to write and the loss to read twice */
        dspy_tensor lg = t->bf16 ? B16((uint16_t *)w->logits, (int64_t)mc * V)               /* (mc, V) */
                                 : F(w->logits, (int64_t)mc * V);
        DSPY_TRY(o->linear(be, lg, xs, lm_head, NONE, mc, C, V, false));
        /* mixed precision: the loss writes d logits in BF16 straight into gb (the GEMMs' operand) */
        dspy_tensor dlg = !train ? NONE : t->bf16 ? B16(w->gb, (int64_t)mc * V) : lg;
        DSPY_TRY(o->cross_entropy(be, F(w->loss + m0, mc), dlg, lg, I32(w->targets + m0, mc), mc, V, grad_scale));
        if (!train) continue;
        /* d seln += dlogits lm_head; d lm_head += dlogits^T seln (the first chunk of a fresh
         * pass overwrites it) */
        dspy_tensor glm = t->g_lm_head ? F(t->g_lm_head, (int64_t)V * C) : NONE;
        if (beta)
            DSPY_TRY(o->linear_backward_beta(be, F(w->dsel + (size_t)m0 * C, mc * C), glm, dlg, xs, lm_head, mc, C, V,
                                             0.0f, w->fresh && m0 == 0 ? 0.0f : 1.0f));
        else
            DSPY_TRY(o->linear_backward(be, F(w->dsel + (size_t)m0 * C, mc * C), glm, NONE, dlg, xs, lm_head, mc, C,
                                        V));
    }
    DSPY_TRY(o->sum_rows(be, loss_slots, slot, F(w->loss, M)));
    if (!train) return DSPY_OK;
    DSPY_TRY(o->fill(be, F(w->dx, T * C), 0.0f));
    DSPY_TRY(o->fill(be, F(w->xn, M * C), 0.0f)); /* d sel, before the scatter */
    DSPY_TRY(o->rmsnorm_backward(be, F(w->xn, M * C), t->g_final_norm ? F(t->g_final_norm, C) : NONE,
                                 F(w->dsel, M * C), F(w->sel, M * C), final_norm, M, C, eps));
    DSPY_TRY(o->scatter_add_rows(be, F(w->dx, T * C), I32(w->rows, M), F(w->xn, M * C), M, C));
    DSPY_TRY(backward_layers(t, s));
    w->fresh = false; /* every weight gradient has had its first contribution */
    return DSPY_OK;
}

dspy_status dspy_train_group_run(dspy_trainable *t, const dspy_train_seq *s, const int32_t *parts, int nparts,
                                 bool train, float grad_scale, int slot, int32_t *Mout) {
    *Mout = 0;
    if (!s || !s->ids || !s->labels || s->T < 1)
        return dspy_fail(DSPY_ERR_ARG, "train sequence: needs ids, labels and T >= 1 (T is %d)", s ? (int)s->T : 0);
    if (nparts < 1 || parts[0] != 0 || parts[nparts] != s->T)
        return dspy_fail(DSPY_ERR_ARG, "train pass: %d parts covering [%d, %d) of its %d tokens; the parts must "
                                       "cover the pass from its first token to its last",
                         nparts, nparts >= 1 ? (int)parts[0] : 0, nparts >= 1 ? (int)parts[nparts] : 0, (int)s->T);
    for (int j = 0; j < nparts; j++)
        if (parts[j + 1] <= parts[j])
            return dspy_fail(DSPY_ERR_ARG, "train pass: part %d is [%d, %d); each part holds at least one token", j,
                             (int)parts[j], (int)parts[j + 1]);
    /* the buffers first: a re-plan clears the work record, parts included */
    dspy_status st = dspy_train_work_reserve(t, s->T, slot + 1);
    if (st) return st;
    t->work.parts = parts, t->work.nparts = nparts;
    st = seq_pass(t, s, train, grad_scale, slot, Mout);
    t->work.parts = NULL, t->work.nparts = 0;
    /* each sequence of the pass draws its own masks: the next pass starts after them */
    if (!st && train) t->rng += (uint64_t)nparts;
    return st;
}

dspy_status dspy_train_seq_run(dspy_trainable *t, const dspy_train_seq *s, bool train, float grad_scale, int slot,
                          int32_t *Mout) {
    int32_t parts[2] = {0, s ? s->T : 0};
    return dspy_train_group_run(t, s, parts, 1, train, grad_scale, slot, Mout);
}

dspy_status dspy_train_slot_clear(dspy_trainable *t, int slot) {
    dspy_backend *be = t->be;
    train_work *w = &t->work;
    if (slot < 0 || slot >= w->nslots)
        return dspy_fail(DSPY_ERR_ARG, "train step: loss slot %d outside the %d planned", slot, w->nslots);
    return be->ops->sum_rows(be, dspy_bt(be, w->loss_dev, w->nslots, DSPY_DTYPE_F64), slot, F(w->loss, 0));
}

/* One sequence in slot 0, its loss read back (waits for the device). */
static dspy_status run(dspy_trainable *t, const dspy_train_seq *s, bool train, float grad_scale, double *loss_sum,
                       int64_t *n_labels) {
    *loss_sum = 0;
    *n_labels = 0;
    int32_t M = 0;
    dspy_status st = dspy_train_seq_run(t, s, train, grad_scale, 0, &M);
    if (st || M == 0) return st;
    dspy_backend *be = t->be;
    DSPY_TRY(be->ops->copy(be, t->work.loss_host, t->work.loss_dev, sizeof(double), DSPY_COPY_D2H));
    DSPY_TRY(be->ops->sync(be));
    *loss_sum = t->work.loss_host[0];
    *n_labels = M;
    return DSPY_OK;
}

dspy_status dspy_trainable_step(dspy_trainable *t, const dspy_train_seq *s, float grad_scale, double *loss_sum,
                                int64_t *n_labels) {
    return run(t, s, true, grad_scale, loss_sum, n_labels);
}

dspy_status dspy_trainable_loss(dspy_trainable *t, const dspy_train_seq *s, double *loss_sum, int64_t *n_labels) {
    return run(t, s, false, 0.0f, loss_sum, n_labels);
}
