/* kern/cpu/cpu.h — the fp32 CPU reference operations (private to kern/cpu; the engine reaches
 * them through dspy_ops_cpu() in kern/ops.h). */
#ifndef DSPY_KERN_CPU_H
#define DSPY_KERN_CPU_H

#include <stdint.h>

#include "kern/ops.h"

/* Dot product of length n in a fixed order: 8 interleaved partial sums over blocks of 8, a
 * fixed pairwise combination, then the tail. The order depends only on n, which is what makes
 * batched and single-row results bit-identical. */
static inline float cpu_dot(const float *a, const float *b, int n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int c = 0;
    for (; c + 8 <= n; c += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[c + j] * b[c + j];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; c < n; c++) s += a[c] * b[c];
    return s;
}

void cpu_matmul(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC);
void cpu_attention(float *out, const float *q, const float *kcache, const float *vcache, const dspy_attn_seg *segs,
                   int nseg, int block_size, int NH, int NKV, int HS);
void cpu_rmsnorm(float *out, const float *inp, const float *weight, int N, int C, float eps);
void cpu_rope(float *x, const int32_t *pos, const float *inv_freq, int N, int H, int HS);
void cpu_kv_store(float *kcache, float *vcache, const float *k, const float *v, const int32_t *slots, int N, int KVD);
void cpu_swiglu(float *out, const float *gate, const float *up, int N, int C);
void cpu_softmax(float *out, const float *inp, int N, int V);
void cpu_embedding(float *out, const int32_t *ids, const float *table, int N, int C);
void cpu_add(float *x, const float *y, int64_t n);
void cpu_gather_rows(float *out, const float *inp, const int32_t *rows, int M, int C);

/* Training (matmul_backward.c, pointwise_backward.c, attention_train.c). */
void cpu_matmul_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp, const float *w,
                         int N, int C, int OC);
void cpu_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                          int N, int C, float eps);
void cpu_rope_backward(float *dx, const int32_t *pos, const float *inv_freq, int N, int H, int HS);
void cpu_attention_train(float *out, float *lse, const float *q, const float *k, const float *v,
                         const int32_t *start, int T, int NH, int NKV, int HS);
void cpu_attention_train_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                  const float *lse, const float *q, const float *k, const float *v,
                                  const int32_t *start, int T, int NH, int NKV, int HS);
void cpu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, int N,
                         int C);
void cpu_embedding_backward(float *dtable, const int32_t *ids, const float *dout, int N, int C);
void cpu_scatter_add_rows(float *dinp, const int32_t *rows, const float *dout, int M, int C);
void cpu_cross_entropy(float *loss, float *dlogits, const float *logits, const int32_t *targets, int M, int V,
                       float dscale);
void cpu_dropout(float *out, const float *inp, int64_t n, float p, uint64_t key);
void cpu_scale(float *x, float s, int64_t n);

#endif
