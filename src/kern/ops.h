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
 * Training entries (train/backward.c) come after the inference ones: the backward passes, a
 * training attention over plain (T, NKV, HS) keys/values of one packed sequence with a
 * block-diagonal causal mask, fused cross-entropy, dropout. Unless an entry says otherwise,
 * gradient outputs ACCUMULATE (+=) so that several paths can add into one buffer, and a NULL
 * gradient output is skipped. They follow the same determinism rule as the inference entries.
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

    /* ---- training ------------------------------------------------------------------------ */

    /* Backward of matmul: dinp (N, C) += dout (N, OC) @ w (OC, C); dw (OC, C) += dout^T @ inp (N, C);
     * dbias (OC) += sum over rows of dout. dinp, dw, dbias may each be NULL (w may then be NULL). */
    void (*matmul_backward)(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                            const float *w, int N, int C, int OC);

    /* Backward of rmsnorm (same eps): dinp (N, C) += d out/d inp^T dout (N, C);
     * dweight (C) += sum over rows of dout * inp / rms. dweight may be NULL. */
    void (*rmsnorm_backward)(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                             int N, int C, float eps);

    /* Backward of rope, in place on dx (N, H, HS): the transpose rotation (angle -pos * inv_freq). */
    void (*rope_backward)(float *dx, const int32_t *pos, const float *inv_freq, int N, int H, int HS);

    /* Training attention of one packed sequence of T tokens: out (T, NH, HS) = softmax(q k^T / sqrt(HS)) v
     * where row t sees keys start[t] .. t (start (T): index of the first token of t's example, so the
     * mask is causal within an example and block-diagonal across examples; rows of one example share
     * start). q (T, NH, HS), k and v (T, NKV, HS), GQA as attention_prefill. Also writes
     * lse (T, NH), the log-sum-exp of each row's scaled scores, for the backward pass. */
    void (*attention_train)(float *out, float *lse, const float *q, const float *k, const float *v,
                            const int32_t *start, int T, int NH, int NKV, int HS);

    /* Backward of attention_train from its saved out and lse: OVERWRITES dq (T, NH, HS),
     * dk and dv (T, NKV, HS) (GQA: a kv head's gradient sums over its query heads). */
    void (*attention_train_backward)(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                     const float *lse, const float *q, const float *k, const float *v,
                                     const int32_t *start, int T, int NH, int NKV, int HS);

    /* Backward of swiglu: OVERWRITES dgate, dup (N, C) from dout (N, C); dgate may equal dout. */
    void (*swiglu_backward)(float *dgate, float *dup, const float *dout, const float *gate, const float *up, int N,
                            int C);

    /* Backward of embedding: dtable (V, C) rows ids[n] += dout (N, C) row n (repeated ids add up). */
    void (*embedding_backward)(float *dtable, const int32_t *ids, const float *dout, int N, int C);

    /* Backward of gather_rows: dinp (N, C) rows rows[m] += dout (M, C) row m. */
    void (*scatter_add_rows)(float *dinp, const int32_t *rows, const float *dout, int M, int C);

    /* Fused cross-entropy of M rows: loss (M) = logsumexp(logits[m]) - logits[m][targets[m]]
     * (natural log; targets in [0, V)); when dlogits (M, V) is not NULL it is OVERWRITTEN with
     * dscale * (softmax(logits[m]) - onehot(targets[m])). dlogits may equal logits. */
    void (*cross_entropy)(float *loss, float *dlogits, const float *logits, const int32_t *targets, int M, int V,
                          float dscale);

    /* Inverted dropout: out (n) = keep(key, i) ? inp / (1 - p) : 0, out may equal inp. The mask is a
     * pure function of (key, i), so the backward pass is the same call on the gradient with the same
     * key; every backend must use dspy_dropout_keep below. */
    void (*dropout)(float *out, const float *inp, int64_t n, float p, uint64_t key);

    /* x (n) *= s. */
    void (*scale)(float *x, float s, int64_t n);
} dspy_ops;

/* The dropout mask: element i of the call with `key` is kept when the top 24 bits of
 * splitmix64(key + i * golden) read as a fraction in [0, 1) are >= p. */
static inline int dspy_dropout_keep(uint64_t key, int64_t i, float p) {
    uint64_t z = key + (uint64_t)i * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) * 0x1.0p-24f >= p;
}

/* The fp32 CPU reference (OpenMP). Never NULL. */
const dspy_ops *dspy_ops_cpu(void);

#endif
