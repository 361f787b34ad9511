/* forward.c — the Llama/Qwen2 decoder forward pass over a batch, through the kern/ops.h table.
 *
 * Follows transformers' LlamaForCausalLM / Qwen2ForCausalLM: embedding, then per layer
 * x += o_proj(attn(rope(q_proj(rms(x))), rope(k_proj(..)), v_proj(..))) and
 * x += down_proj(silu(gate_proj(rms(x))) * up_proj(rms(x))), final RMSNorm, lm_head.
 * Does not sample or manage sequences (engine.c does).
 */
#include "engine/forward.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

dspy_status dspy_fwd_buf_init(dspy_fwd_buf *b, const dspy_model_config *c, int32_t rows, int32_t out_rows) {
    memset(b, 0, sizeof *b);
    size_t R = (size_t)rows, C = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
    size_t Q = (size_t)c->num_attention_heads * (size_t)c->head_dim;
    size_t KV = (size_t)c->num_key_value_heads * (size_t)c->head_dim;
    b->rows = rows;
    b->out_rows = out_rows;
    b->x = malloc(sizeof(float) * R * C);
    b->xn = malloc(sizeof(float) * R * C);
    b->q = malloc(sizeof(float) * R * Q);
    b->k = malloc(sizeof(float) * R * KV);
    b->v = malloc(sizeof(float) * R * KV);
    b->att = malloc(sizeof(float) * R * Q);
    b->gate = malloc(sizeof(float) * R * I);
    b->up = malloc(sizeof(float) * R * I);
    b->sel = malloc(sizeof(float) * (size_t)out_rows * C);
    if (!b->x || !b->xn || !b->q || !b->k || !b->v || !b->att || !b->gate || !b->up || !b->sel) {
        dspy_fwd_buf_free(b);
        return dspy_fail(DSPY_ERR_NOMEM, "forward: cannot allocate work buffers for %d tokens", rows);
    }
    return DSPY_OK;
}

void dspy_fwd_buf_free(dspy_fwd_buf *b) {
    free(b->x);
    free(b->xn);
    free(b->q);
    free(b->k);
    free(b->v);
    free(b->att);
    free(b->gate);
    free(b->up);
    free(b->sel);
    memset(b, 0, sizeof *b);
}

void dspy_forward(const dspy_model *m, const dspy_ops *ops, dspy_kv_cache *kv, dspy_fwd_buf *buf,
                  const dspy_fwd_batch *b, float *logits) {
    const dspy_model_config *c = dspy_model_config_get(m);
    const dspy_model_weights *w = dspy_model_weights_get(m);
    const float *inv_freq = dspy_model_inv_freq(m);
    const int N = b->n, M = b->n_out, C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    const int NH = c->num_attention_heads, NKV = c->num_key_value_heads, HS = c->head_dim;
    const int Q = NH * HS, KVD = NKV * HS;
    const float eps = (float)c->rms_norm_eps;
    if (dspy_model_n_threads(m) > 0) omp_set_num_threads(dspy_model_n_threads(m)); /* this thread's ICV */
    bool decode = true;
    for (int s = 0; s < b->nseg; s++)
        if (b->segs[s].n != 1) decode = false;

    ops->embedding(buf->x, b->tokens, w->embed, N, C);                       /* x (N, C) */
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const dspy_layer_weights *L = &w->layers[l];
        float *kc = dspy_kv_cache_k(kv, l), *vc = dspy_kv_cache_v(kv, l);    /* (slots, NKV, HS) */
        ops->rmsnorm(buf->xn, buf->x, L->attn_norm, N, C, eps);              /* xn (N, C) */
        ops->matmul(buf->q, buf->xn, L->wq, L->bq, N, C, Q);                 /* q (N, NH, HS) */
        ops->matmul(buf->k, buf->xn, L->wk, L->bk, N, C, KVD);               /* k (N, NKV, HS) */
        ops->matmul(buf->v, buf->xn, L->wv, L->bv, N, C, KVD);               /* v (N, NKV, HS) */
        ops->rope(buf->q, b->pos, inv_freq, N, NH, HS);
        ops->rope(buf->k, b->pos, inv_freq, N, NKV, HS);
        ops->kv_store(kc, vc, buf->k, buf->v, b->slots, N, KVD);
        if (decode)
            ops->attention_decode(buf->att, buf->q, kc, vc, b->segs, b->nseg, kv->block_size, NH, NKV, HS);
        else
            ops->attention_prefill(buf->att, buf->q, kc, vc, b->segs, b->nseg, kv->block_size, NH, NKV, HS);
        ops->matmul(buf->xn, buf->att, L->wo, L->bo, N, Q, C);               /* o (N, C) */
        ops->add(buf->x, buf->xn, (int64_t)N * C);
        ops->rmsnorm(buf->xn, buf->x, L->mlp_norm, N, C, eps);               /* xn (N, C) */
        ops->matmul(buf->gate, buf->xn, L->w_gate, NULL, N, C, I);           /* gate (N, I) */
        ops->matmul(buf->up, buf->xn, L->w_up, NULL, N, C, I);               /* up (N, I) */
        ops->swiglu(buf->gate, buf->gate, buf->up, N, I);                    /* h (N, I) */
        ops->matmul(buf->xn, buf->gate, L->w_down, NULL, N, I, C);           /* mlp (N, C) */
        ops->add(buf->x, buf->xn, (int64_t)N * C);
    }
    ops->gather_rows(buf->sel, buf->x, b->out_rows, M, C);                   /* sel (M, C) */
    ops->rmsnorm(buf->sel, buf->sel, w->final_norm, M, C, eps);
    ops->matmul(logits, buf->sel, w->lm_head, NULL, M, C, V);                /* logits (M, V) */
}
