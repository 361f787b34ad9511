/* kern/ops.h — the one table of compute operations (DESIGN.md §6).
 *
 * engine/forward.c (and later train/backward.c) call only these entries, so a backend is a
 * filled table: kern/cpu/ is the readable fp32 reference (OpenMP over rows/heads), kern/cuda/
 * will be the fast path. All tensors are row-major fp32 on the backend's memory; shapes are in
 * the comments with the usual letters: N rows (tokens of the batch, flattened over sequences),
 * C model width, OC output width, NH/NKV query/key-value heads, HS head size, V vocabulary.
 *
 * Determinism contract (the engine relies on it): every output element is computed from its own
 * inputs in a fixed order that does not depend on N, on the other rows of the batch, or on the
 * number of threads. So a row gives bit-identical results alone or batched with others, and a
 * sequence's attention is the same whether its prompt was prefilled in one chunk or several.
 *
 * Backward entries (for the trainer) will be added to this table; they are not here yet.
 */
#ifndef DSPY_KERN_OPS_H
#define DSPY_KERN_OPS_H

#include <stdint.h>

/* One sequence's slice of an attention call: rows [row0, row0 + n) of q/out are its new tokens
 * at positions pos0 .. pos0 + n - 1; keys/values for positions 0 .. pos0 + n - 1 are already in
 * the paged cache (kv_store ran first). Position p lives in cache slot
 * block_table[p / block_size] * block_size + p % block_size. */
typedef struct dspy_attn_seg {
    int32_t row0;
    int32_t n;
    int32_t pos0;
    const int32_t *block_table;
} dspy_attn_seg;

typedef struct dspy_ops {
    const char *name;

    /* out (N, OC) = inp (N, C) @ w^T + bias; w (OC, C) as nn.Linear stores it; bias (OC) or NULL. */
    void (*matmul)(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC);

    /* out (N, C) = inp / sqrt(mean(inp^2) + eps) * weight (C); HF LlamaRMSNorm in fp32.
     * out may equal inp. */
    void (*rmsnorm)(float *out, const float *inp, const float *weight, int N, int C, float eps);

    /* In place on x (N, H, HS): rotate-half RoPE at positions pos (N) with inv_freq (HS/2):
     * x[i] = x[i] cos - x[i+HS/2] sin, x[i+HS/2] = x[i+HS/2] cos + x[i] sin, angle = pos * inv_freq[i]. */
    void (*rope)(float *x, const int32_t *pos, const float *inv_freq, int N, int H, int HS);

    /* Copies k, v (N, KVD) into the layer's cache (slots, KVD) at rows slots (N). */
    void (*kv_store)(float *kcache, float *vcache, const float *k, const float *v, const int32_t *slots, int N,
                     int KVD);

    /* out (N, NH, HS) = causal softmax(q k^T / sqrt(HS)) v for each segment, q (N, NH, HS), caches
     * (slots, NKV, HS); query head h reads kv head h / (NH / NKV) (GQA). Prefill: segments of any
     * length; decode: every segment has n == 1. Both must give identical numbers for the same
     * query (the CPU reference uses one kernel for both). */
    void (*attention_prefill)(float *out, const float *q, const float *kcache, const float *vcache,
                              const dspy_attn_seg *segs, int nseg, int block_size, int NH, int NKV, int HS);
    void (*attention_decode)(float *out, const float *q, const float *kcache, const float *vcache,
                             const dspy_attn_seg *segs, int nseg, int block_size, int NH, int NKV, int HS);

    /* out (N, C) = silu(gate) * up, gate/up (N, C); out may equal gate. */
    void (*swiglu)(float *out, const float *gate, const float *up, int N, int C);

    /* out (N, V) = softmax(inp) along rows; out may equal inp. */
    void (*softmax)(float *out, const float *inp, int N, int V);

    /* out (N, C) = table[ids] (table (V, C)). */
    void (*embedding)(float *out, const int32_t *ids, const float *table, int N, int C);

    /* x (n) += y (n). */
    void (*add)(float *x, const float *y, int64_t n);

    /* out (M, C) = inp[rows] (inp (N, C), rows (M)). */
    void (*gather_rows)(float *out, const float *inp, const int32_t *rows, int M, int C);
} dspy_ops;

/* The fp32 CPU reference (OpenMP). Never NULL. */
const dspy_ops *dspy_ops_cpu(void);

#endif
