/* forward.c — the Llama/Qwen2 decoder forward pass over a batch, through the kern/ops.h table.
 *
 * Follows transformers' LlamaForCausalLM / Qwen2ForCausalLM: embedding, then per layer
 * x += o_proj(attn(rope(q_proj(rms(x))), rope(k_proj(..)), v_proj(..))) and
 * x += down_proj(silu(gate_proj(rms(x))) * up_proj(rms(x))), final RMSNorm, lm_head — with q/k/v
 * as one projection and gate/up as another (the model stores them stacked), each with its
 * RMSNorm (and RoPE + cache store, or SwiGLU) as one fused op (attn_in, mlp_in: their defining
 * compositions are in kern/ops.h), and the residual adds done by the projections themselves
 * (linear with accumulate). Five ops a layer. Samples only where the backend fuses a greedy step's
 * sampler into the logits (dspy_forward_greedy); manages no sequences (engine.c).
 */
#include "engine/forward.h"

#include <string.h>

dspy_status dspy_fwd_buf_init(dspy_fwd_buf *b, dspy_backend *be, const dspy_model_config *c, int32_t rows,
                              int32_t out_rows) {
    memset(b, 0, sizeof *b);
    b->be = be;
    b->rows = rows;
    b->out_rows = out_rows;
    int64_t R = rows, M = out_rows, C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    int64_t Q = (int64_t)c->num_attention_heads * c->head_dim, KV = (int64_t)c->num_key_value_heads * c->head_dim;
    dspy_dtype A = be->act_dtype, F = DSPY_DTYPE_F32;
    struct {
        dspy_tensor *t;
        int64_t n;
        dspy_dtype dt;
    } parts[] = {{&b->x, R * C, F},           {&b->xn, R * C, A},   {&b->qkv, R * (Q + 2 * KV), A},
                 {&b->q, R * Q, A},           {&b->att, R * Q, A},  {&b->gu, R * 2 * I, A},
                 {&b->h, R * I, A},           {&b->sel, M * C, F},  {&b->seln, M * C, A},
                 {&b->logits, M * V, F}};
    size_t np = sizeof parts / sizeof parts[0], off = 0, offs[16];
    for (size_t i = 0; i < np; i++) {
        off = (off + 255) & ~(size_t)255;
        offs[i] = off;
        off += (size_t)parts[i].n * dspy_dtype_size(parts[i].dt);
    }
    dspy_status st = be->ops->alloc(be, off, &b->block);
    if (st) return dspy_fail_append(st, " (forward work buffers for %d tokens)", rows);
    for (size_t i = 0; i < np; i++)
        *parts[i].t = dspy_bt(be, (char *)b->block + offs[i], parts[i].n, parts[i].dt);
    return DSPY_OK;
}

void dspy_fwd_buf_free(dspy_fwd_buf *b) {
    if (b->be) b->be->ops->free(b->be, b->block);
    memset(b, 0, sizeof *b);
}

/* The first n rows of a (rows, width) buffer. */
static dspy_tensor rows_of(dspy_tensor t, int64_t n, int64_t width) { return dspy_tensor_slice(t, 0, n * width); }

/* att = attention(q, cache) over b's segments. A prompt chunk's kernel gives each segment tiles
 * of many query rows; the decoding sequences of a mixed step (one row each) would each fill a
 * whole tile and read their context as often as a prompt chunk does, so they go to the decode
 * kernel in a call of their own (each row is attended once either way: same results per row). */
static dspy_status attend(const dspy_ops *o, dspy_backend *be, dspy_tensor att, dspy_tensor q, dspy_tensor kc,
                          dspy_tensor vc, const dspy_fwd_batch *b, int NH, int NKV, int HS) {
    const int32_t one = b->attn_one, nseg = b->attn.nseg;
    if (b->attn.decode || one <= 0 || one > nseg) return o->attention(be, att, q, kc, vc, &b->attn, NH, NKV, HS);
    dspy_attn_meta d = b->attn, p = b->attn;
    d.segs = dspy_tensor_slice(b->attn.segs, 0, 4 * (int64_t)one);
    d.nseg = one;
    d.decode = true;
    DSPY_TRY(o->attention(be, att, q, kc, vc, &d, NH, NKV, HS));
    if (one == nseg) return DSPY_OK;
    p.segs = dspy_tensor_slice(b->attn.segs, 4 * (int64_t)one, 4 * (int64_t)(nseg - one));
    p.nseg = nseg - one;
    return o->attention(be, att, q, kc, vc, &p, NH, NKV, HS);
}

/* Every op up to the logits: the residual stream buf->x (N, C) after the last layer. */
static dspy_status forward_layers(const dspy_model *m, dspy_backend *be, dspy_kv_cache *kv, dspy_fwd_buf *buf,
                                  const dspy_fwd_batch *b) {
    const dspy_ops *o = be->ops;
    const dspy_model_config *c = dspy_model_config_get(m);
    const dspy_model_weights *w = dspy_model_weights_get(m);
    const int N = b->n, M = b->n_out, C = c->hidden_size, I = c->intermediate_size;
    const int NH = c->num_attention_heads, NKV = c->num_key_value_heads, HS = c->head_dim;
    const int Q = NH * HS, QKV = Q + 2 * NKV * HS;
    const float eps = (float)c->rms_norm_eps;
    if (N > buf->rows || M > buf->out_rows)
        return dspy_fail(DSPY_ERR_ARG, "forward: a batch of %d tokens / %d logits rows exceeds the planned %d / %d", N,
                         M, buf->rows, buf->out_rows);
    dspy_tensor x = rows_of(buf->x, N, C), xn = rows_of(buf->xn, N, C), qkv = rows_of(buf->qkv, N, QKV);
    dspy_tensor q = rows_of(buf->q, N, Q), att = rows_of(buf->att, N, Q), gu = rows_of(buf->gu, N, 2 * I);
    dspy_tensor h = rows_of(buf->h, N, I);

    DSPY_TRY(o->embedding(be, x, b->tokens, w->embed, N, C));                          /* x (N, C) */
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const dspy_layer_weights *L = &w->layers[l];
        dspy_tensor kc = dspy_kv_cache_k(kv, l), vc = dspy_kv_cache_v(kv, l);     /* (slots, NKV, HS) */
        /* q (N, NH, HS) and the cache's new keys/values from rms(x) */
        DSPY_TRY(o->attn_in(be, q, kc, vc, x, L->attn_norm, L->wqkv, L->bqkv, b->pos, b->slots, w->inv_freq, xn, qkv,
                            N, C, NH, NKV, HS, eps));
        DSPY_TRY(attend(o, be, att, q, kc, vc, b, NH, NKV, HS));                       /* (N, NH, HS) */
        /* the residual adds: attention and mlp_in, just before, do not write x (ops.h linear) */
        DSPY_TRY(o->linear(be, x, att, L->wo, L->bo, N, Q, C, DSPY_LINEAR_ADD_EARLY)); /* x += o */
        const dspy_tensor hl = dspy_fwd_mlp_h(be, h, x, L, N, C, I); /* F16 or codes where faster */
        DSPY_TRY(o->mlp_in(be, hl, x, L->mlp_norm, L->w_gate_up, xn, gu, N, C, I, eps)); /* h (N, I) */
        DSPY_TRY(o->linear(be, x, hl, L->w_down, dspy_tensor_none(), N, I, C, DSPY_LINEAR_ADD_EARLY)); /* x += mlp */
    }
    return DSPY_OK;
}

/* buf->logits (M, V) of the batch's out rows from the residual stream forward_layers left. */
static dspy_status forward_logits(const dspy_model *m, dspy_backend *be, dspy_fwd_buf *buf, const dspy_fwd_batch *b) {
    const dspy_model_config *c = dspy_model_config_get(m);
    const dspy_model_weights *w = dspy_model_weights_get(m);
    const int M = b->n_out, C = c->hidden_size, V = c->vocab_size;
    return be->ops->logits(be, rows_of(buf->logits, M, V), rows_of(buf->x, b->n, C), b->out_rows, w->final_norm,
                           w->lm_head, rows_of(buf->sel, M, C), rows_of(buf->seln, M, C), M, C, V,
                           (float)c->rms_norm_eps);
}

dspy_status dspy_forward(const dspy_model *m, dspy_backend *be, dspy_kv_cache *kv, dspy_fwd_buf *buf,
                         const dspy_fwd_batch *b) {
    DSPY_TRY(forward_layers(m, be, kv, buf, b));
    return forward_logits(m, be, buf, b);
}

dspy_status dspy_forward_greedy(const dspy_model *m, dspy_backend *be, dspy_kv_cache *kv, dspy_fwd_buf *buf,
                                const dspy_fwd_batch *b, dspy_tensor tokens, dspy_tensor logprobs, bool *done) {
    *done = false;
    DSPY_TRY(forward_layers(m, be, kv, buf, b));
    if (be->ops->logits_greedy) {
        const dspy_model_config *c = dspy_model_config_get(m);
        const dspy_model_weights *w = dspy_model_weights_get(m);
        const int M = b->n_out, C = c->hidden_size, V = c->vocab_size;
        DSPY_TRY(be->ops->logits_greedy(be, tokens, logprobs, rows_of(buf->x, b->n, C), b->out_rows, w->final_norm,
                                        w->lm_head, rows_of(buf->sel, M, C), rows_of(buf->seln, M, C), M, C, V,
                                        (float)c->rms_norm_eps, done));
        if (*done) return DSPY_OK;
    }
    return forward_logits(m, be, buf, b);
}
