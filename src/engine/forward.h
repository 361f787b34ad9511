/* forward.h — one batched forward pass of a Llama-family model (private to src/engine).
 *
 * The batch is N tokens of one or more sequences (flattened; each sequence's rows contiguous),
 * each with its position and KV-cache slot; logits are produced only for the rows asked for.
 * Runs through the kern/ops.h table, so the same code drives every backend.
 */
#ifndef DSPY_ENGINE_FORWARD_H
#define DSPY_ENGINE_FORWARD_H

#include <stdint.h>

#include "dspy/model.h"
#include "engine/kv_cache.h"
#include "kern/ops.h"

typedef struct dspy_fwd_batch {
    int32_t n;                  /* N tokens */
    const int32_t *tokens;      /* (N) token ids, inside the vocabulary */
    const int32_t *pos;         /* (N) positions */
    const int32_t *slots;       /* (N) KV-cache slot of each token */
    const dspy_attn_seg *segs;  /* one per sequence in the batch */
    int32_t nseg;
    const int32_t *out_rows;    /* (M) rows whose logits are wanted */
    int32_t n_out;              /* M */
} dspy_fwd_batch;

/* Work buffers sized for at most `rows` tokens and `out_rows` logits rows per pass. */
typedef struct dspy_fwd_buf {
    int32_t rows, out_rows;
    float *x;     /* (rows, C) residual stream */
    float *xn;    /* (rows, C) normed input / projection output */
    float *q;     /* (rows, NH*HS) */
    float *k;     /* (rows, NKV*HS) */
    float *v;     /* (rows, NKV*HS) */
    float *att;   /* (rows, NH*HS) */
    float *gate;  /* (rows, I) */
    float *up;    /* (rows, I) */
    float *sel;   /* (out_rows, C) */
} dspy_fwd_buf;

dspy_status dspy_fwd_buf_init(dspy_fwd_buf *b, const dspy_model_config *c, int32_t rows, int32_t out_rows);
void dspy_fwd_buf_free(dspy_fwd_buf *b);

/* Runs the model over the batch: stores the batch's keys/values in `kv`, attends over each
 * sequence's cached positions, and writes logits (M, V) for b->out_rows. */
void dspy_forward(const dspy_model *m, const dspy_ops *ops, dspy_kv_cache *kv, dspy_fwd_buf *buf,
                  const dspy_fwd_batch *b, float *logits);

#endif
