/* attention.c — fp32 reference causal attention over a paged KV cache (prefill and decode).
 *
 * For each (row, head): scores s_j = (q . k_j) * HS^-0.5 for every cached position j <= the
 * row's position, p = softmax(s) (max-subtracted, as torch), out = sum_j p_j v_j — the order of
 * HF's eager attention. GQA: query head h reads kv head h / (NH / NKV). One kernel serves
 * prefill and decode, so they agree exactly (kern/ops.h). OpenMP over (row, head); each thread
 * keeps its probabilities in its planned scratch row.
 */
#include <math.h>
#include <string.h>

#include "kern/cpu/cpu.h"

dspy_status dspy_cpu_attention(dspy_backend *be, dspy_tensor out_t, dspy_tensor q_t, dspy_tensor kc_t, dspy_tensor vc_t,
                          const dspy_attn_meta *m, int NH, int NKV, int HS) {
    cpu_enter(be);
    cpu_state *cs = cpu_of(be);
    const int N = m->N, nseg = m->nseg, bs = m->block_size;
    CPU_NEED("attention", "out", out_t, DSPY_DTYPE_F32, (int64_t)N * NH * HS);
    CPU_NEED("attention", "q", q_t, DSPY_DTYPE_F32, (int64_t)N * NH * HS);
    CPU_NEED("attention", "kcache", kc_t, DSPY_DTYPE_F32, 1);
    CPU_NEED("attention", "vcache", vc_t, DSPY_DTYPE_F32, 1);
    CPU_NEED("attention", "segs", m->segs, DSPY_DTYPE_I32, (int64_t)nseg * 4);
    CPU_NEED("attention", "tables", m->tables, DSPY_DTYPE_I32, 0);
    DSPY_TRY(dspy_cpu_plan_check("attention", "rows", N, be->plan.max_rows));
    const dspy_attn_seg *segs = m->segs.data;
    const int32_t *tables = m->tables.data;
    int maxlen = 0;
    for (int s = 0; s < nseg; s++) {
        if (segs[s].row0 < 0 || segs[s].n < 0 || segs[s].row0 + segs[s].n > N || segs[s].pos0 < 0)
            return dspy_fail(DSPY_ERR_ARG, "cpu attention: segment %d (rows %d+%d, pos %d) is outside the %d rows", s,
                             segs[s].row0, segs[s].n, segs[s].pos0, N);
        if (segs[s].pos0 + segs[s].n > maxlen) maxlen = segs[s].pos0 + segs[s].n;
        int64_t need = ((int64_t)segs[s].pos0 + segs[s].n + bs - 1) / bs;
        if (segs[s].table_off < 0 || segs[s].table_off + need > m->tables.n)
            return dspy_fail(DSPY_ERR_ARG, "cpu attention: segment %d needs block-table entries %d..%lld, the tables "
                                           "hold %lld", s, segs[s].table_off, (long long)(segs[s].table_off + need - 1),
                             (long long)m->tables.n);
        for (int64_t i = 0; i < need; i++) {
            int32_t blk = ((const int32_t *)m->tables.data)[segs[s].table_off + i];
            if (blk < 0 || ((int64_t)blk + 1) * bs * NKV * HS > kc_t.n || ((int64_t)blk + 1) * bs * NKV * HS > vc_t.n)
                return dspy_fail(DSPY_ERR_ARG, "cpu attention: segment %d's block %lld is %d, outside the cache", s,
                                 (long long)i, blk);
        }
    }
    DSPY_TRY(dspy_cpu_plan_check("attention", "sequence length", maxlen, be->plan.max_len));
    if (N == 0) return DSPY_OK;
    int32_t *row_seg = cs->rowmap; /* (N) segment of each row, -1 for rows in no segment */
    for (int i = 0; i < N; i++) row_seg[i] = -1;
    for (int s = 0; s < nseg; s++)
        for (int i = 0; i < segs[s].n; i++) row_seg[segs[s].row0 + i] = s;
    float *out = out_t.data;
    const float *q = q_t.data, *kcache = kc_t.data, *vcache = vc_t.data;
    const float scale = (float)(1.0 / sqrt((double)HS));
    const int group = NH / NKV;
    const size_t stride = (size_t)be->plan.max_len;
    long work = 0; /* multiply-adds, to keep tiny batches on one thread */
    for (int s = 0; s < nseg; s++) work += (long)segs[s].n * (segs[s].pos0 + segs[s].n) * NH * HS * 2;
#pragma omp parallel if (work > (1L << 18))
    {
        float *p = cs->att + (size_t)omp_get_thread_num() * stride; /* (max_len) */
#pragma omp for collapse(2) schedule(dynamic, 4)
        for (int r = 0; r < N; r++)
            for (int h = 0; h < NH; h++) {
                int s = row_seg[r];
                if (s < 0) continue;
                const dspy_attn_seg *sg = &segs[s];
                const int32_t *table = tables + sg->table_off;
                int pos = sg->pos0 + (r - sg->row0);
                int kvh = h / group;
                const float *qv = q + ((size_t)r * NH + h) * HS;
                float mx = -INFINITY;
                for (int j = 0; j <= pos; j++) {
                    size_t slot = (size_t)table[j / bs] * bs + j % bs;
                    float sc = cpu_dot(qv, kcache + (slot * NKV + kvh) * HS, HS) * scale;
                    p[j] = sc;
                    if (sc > mx) mx = sc;
                }
                float sum = 0;
                for (int j = 0; j <= pos; j++) {
                    p[j] = expf(p[j] - mx);
                    sum += p[j];
                }
                float *o = out + ((size_t)r * NH + h) * HS;
                memset(o, 0, sizeof(float) * (size_t)HS);
                for (int j = 0; j <= pos; j++) {
                    size_t slot = (size_t)table[j / bs] * bs + j % bs;
                    const float *vv = vcache + (slot * NKV + kvh) * HS;
                    float pj = p[j] / sum;
                    for (int d = 0; d < HS; d++) o[d] += pj * vv[d];
                }
            }
    }
    return DSPY_OK;
}
