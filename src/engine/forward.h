/* forward.h — one batched forward pass of a Llama-family model (private to src/engine).
 *
 * The batch is N tokens of one or more sequences (flattened; each sequence's rows contiguous),
 * each with its position and KV-cache slot; logits are produced only for the rows asked for.
 * Every array of the batch lives on the backend's device; the pass runs through the kern/ops.h
 * table, so the same code drives every backend, and it allocates nothing: the work buffers are
 * planned once for the largest batch.
 */
#ifndef DSPY_ENGINE_FORWARD_H
#define DSPY_ENGINE_FORWARD_H

#include <stdint.h>

#include "dspy/model.h"
#include "engine/kv_cache.h"
#include "kern/backend.h"

typedef struct dspy_fwd_batch {
    int32_t n;            /* N tokens */
    dspy_tensor tokens;   /* (N) I32 token ids, inside the vocabulary */
    dspy_tensor pos;      /* (N) I32 positions */
    dspy_tensor slots;    /* (N) I32 KV-cache slot of each token */
    dspy_attn_meta attn;  /* segments (one per sequence) and their block tables */
    dspy_tensor out_rows; /* (M) I32 rows whose logits are wanted */
    int32_t n_out;        /* M */
    int32_t attn_one;     /* when attn is not a decode call: its first attn_one segments are one
                             row each (decoding sequences), attended by a decode call of their own
                             and the rest by another; 0: one call for all */
} dspy_fwd_batch;

/* The widest input row of the forward pass's linears: max(C, I, NH*HS) (the fast CPU kernels
 * keep a BF16 copy of it, dspy_backend_cpu_use_fast). */
static inline int32_t dspy_fwd_max_width(const dspy_model_config *c) {
    int32_t w = c->hidden_size > c->intermediate_size ? c->hidden_size : c->intermediate_size;
    int32_t q = c->num_attention_heads * c->head_dim;
    return q > w ? q : w;
}

/* Makes `be` run the model's CPU kernels: the fast table when the model was loaded for them. */
static inline dspy_status dspy_fwd_use_model_kernels(const dspy_model *m, dspy_backend *be) {
    if (dspy_model_cpu_kernels(m) != DSPY_CPU_KERNELS_FAST || be->dev.type != DSPY_DEVICE_CPU) return DSPY_OK;
    return dspy_backend_cpu_use_fast(be, dspy_fwd_max_width(dspy_model_config_get(m)));
}

/* Work buffers for at most `rows` tokens and `out_rows` logits rows per pass, in the backend's
 * memory: the residual stream in F32, the rest in the backend's activation dtype. */
typedef struct dspy_fwd_buf {
    dspy_backend *be; /* borrowed */
    int32_t rows, out_rows;
    void *block;
    dspy_tensor x;      /* (rows, C) F32 residual stream */
    dspy_tensor xn;     /* (rows, C) normed input of a projection */
    dspy_tensor qkv;    /* (rows, NH*HS + 2*NKV*HS) fused q/k/v projection */
    dspy_tensor q;      /* (rows, NH, HS) rotated queries */
    dspy_tensor att;    /* (rows, NH*HS) attention output */
    dspy_tensor gu;     /* (rows, 2I) fused gate/up projection */
    dspy_tensor h;      /* (rows, I) SwiGLU output */
    dspy_tensor sel;    /* (out_rows, C) F32 selected residual rows */
    dspy_tensor seln;   /* (out_rows, C) their final norm */
    dspy_tensor logits; /* (out_rows, V) F32 */
} dspy_fwd_buf;

dspy_status dspy_fwd_buf_init(dspy_fwd_buf *b, dspy_backend *be, const dspy_model_config *c, int32_t rows,
                              int32_t out_rows);
void dspy_fwd_buf_free(dspy_fwd_buf *b);

/* h (N, I) as mlp_in hands it to the down projection of layer L: F16 or W8A8 codes where the
 * backend says its kernels take them (kern/ops.h mlp_f16, mlp_act8), else as given (BF16). */
static inline dspy_tensor dspy_fwd_mlp_h(dspy_backend *be, dspy_tensor h, dspy_tensor x, const dspy_layer_weights *L,
                                         int N, int C, int I) {
    const dspy_ops *o = be->ops;
    if (o->mlp_f16 && o->mlp_f16(be, h, x, L->mlp_norm, L->w_gate_up, L->w_down, N, C, I)) h.dtype = DSPY_DTYPE_F16;
    else if (o->mlp_act8 && o->mlp_act8(be, h, x, L->w_down, N, C, I))
        h = dspy_tensor_make(h.data, h.n * 2, DSPY_DTYPE_U8, h.device); /* its bytes: codes, then scales */
    return h;
}

/* Runs the model over the batch: stores the batch's keys/values in `kv`, attends over each
 * sequence's cached positions, and writes logits (M, V) for b->out_rows into buf->logits.
 * Queues work on the backend (returns before a GPU finishes); a failure comes back as a status. */
dspy_status dspy_forward(const dspy_model *m, dspy_backend *be, dspy_kv_cache *kv, dspy_fwd_buf *buf,
                         const dspy_fwd_batch *b);

/* dspy_forward for a step whose every logits row is sampled greedily and unconstrained: where the
 * backend's logits_greedy (kern/ops.h) takes the batch, tokens (M) I32 and logprobs (M) F32 get
 * what sample at temperature 0 would give, buf->logits is not written and *done = true; else
 * *done = false and buf->logits holds the logits (the caller samples them). */
dspy_status dspy_forward_greedy(const dspy_model *m, dspy_backend *be, dspy_kv_cache *kv, dspy_fwd_buf *buf,
                                const dspy_fwd_batch *b, dspy_tensor tokens, dspy_tensor logprobs, bool *done);

#endif
