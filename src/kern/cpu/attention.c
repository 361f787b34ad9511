/* attention.c — fp32 reference causal attention over a paged KV cache (prefill and decode).
 *
 * For each (row, head): scores s_j = (q . k_j) * HS^-0.5 for every cached position j <= the
 * row's position, p = softmax(s) (max-subtracted, as torch), out = sum_j p_j v_j — the order of
 * HF's eager attention. GQA: query head h reads kv head h / (NH / NKV). One kernel serves both
 * table entries, so prefill and decode agree exactly (kern/ops.h). OpenMP over (row, head).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kern/cpu/cpu.h"

void cpu_attention(float *out, const float *q, const float *kcache, const float *vcache, const dspy_attn_seg *segs,
                   int nseg, int block_size, int NH, int NKV, int HS) {
    int N = 0, maxlen = 0;
    for (int s = 0; s < nseg; s++) {
        if (segs[s].row0 + segs[s].n > N) N = segs[s].row0 + segs[s].n;
        if (segs[s].pos0 + segs[s].n > maxlen) maxlen = segs[s].pos0 + segs[s].n;
    }
    if (N == 0) return;
    int *row_seg = malloc(sizeof(int) * (size_t)N);
    if (!row_seg) abort();
    for (int i = 0; i < N; i++) row_seg[i] = -1;
    for (int s = 0; s < nseg; s++)
        for (int i = 0; i < segs[s].n; i++) row_seg[segs[s].row0 + i] = s;
    const float scale = (float)(1.0 / sqrt((double)HS));
    const int group = NH / NKV;
    long work = 0; /* multiply-adds, to keep tiny batches on one thread */
    for (int s = 0; s < nseg; s++) work += (long)segs[s].n * (segs[s].pos0 + segs[s].n) * NH * HS * 2;
#pragma omp parallel if (work > (1L << 18))
    {
        float *p = malloc(sizeof(float) * (size_t)(maxlen ? maxlen : 1));
        if (!p) abort();
#pragma omp for collapse(2) schedule(dynamic, 4)
        for (int r = 0; r < N; r++)
            for (int h = 0; h < NH; h++) {
                int s = row_seg[r];
                if (s < 0) continue;
                const dspy_attn_seg *sg = &segs[s];
                int pos = sg->pos0 + (r - sg->row0);
                int kvh = h / group;
                const float *qv = q + ((size_t)r * NH + h) * HS;
                float m = -INFINITY;
                for (int j = 0; j <= pos; j++) {
                    size_t slot = (size_t)sg->block_table[j / block_size] * block_size + j % block_size;
                    float sc = cpu_dot(qv, kcache + (slot * NKV + kvh) * HS, HS) * scale;
                    p[j] = sc;
                    if (sc > m) m = sc;
                }
                float sum = 0;
                for (int j = 0; j <= pos; j++) {
                    p[j] = expf(p[j] - m);
                    sum += p[j];
                }
                float *o = out + ((size_t)r * NH + h) * HS;
                memset(o, 0, sizeof(float) * (size_t)HS);
                for (int j = 0; j <= pos; j++) {
                    size_t slot = (size_t)sg->block_table[j / block_size] * block_size + j % block_size;
                    const float *vv = vcache + (slot * NKV + kvh) * HS;
                    float pj = p[j] / sum;
                    for (int d = 0; d < HS; d++) o[d] += pj * vv[d];
                }
            }
        free(p);
    }
    free(row_seg);
}
