/* attention_train.c — fp32 reference attention of one packed training sequence, and its backward.
 *
 * Keys and values are plain (T, NKV, HS) arrays (no paged cache). Row t of an example starting
 * at start[t] attends keys start[t] .. t: causal within the example, block-diagonal across
 * examples — what HF's eager attention computes with a 4D block-diagonal causal mask.
 * Forward per (row, head), in the order of attention.c: s_j = (q . k_j) / sqrt(HS),
 * p = softmax(s) (max-subtracted), out = sum_j p_j v_j; it also saves lse = log sum_j exp(s_j).
 * Backward recomputes p from lse (nothing of size T x T is stored):
 *   D = dout . out,  dp_j = dout . v_j,  ds_j = p_j (dp_j - D),
 *   dq += ds_j k_j / sqrt(HS),  dk_j += ds_j q / sqrt(HS),  dv_j += p_j dout.
 * GQA: query head h reads kv head h / (NH / NKV). OpenMP over (row, head) forward and over
 * (example, kv head) backward, so that no two threads write the same dk/dv row. Each thread's
 * probabilities live in its planned scratch row (max_len >= T).
 */
#include <math.h>
#include <string.h>

#include "kern/cpu/cpu.h"

static dspy_status check_start(const char *op, const int32_t *start, int T) {
    for (int t = 0; t < T; t++)
        if (start[t] < 0 || start[t] > t || (t > 0 && start[t] != t && start[t] != start[t - 1]))
            return dspy_fail(DSPY_ERR_ARG, "cpu %s: start[%d] = %d does not begin an example at or before %d", op, t,
                             start[t], t);
    return DSPY_OK;
}

dspy_status dspy_cpu_attention_train(dspy_backend *be, dspy_tensor out_t, dspy_tensor lse_t, dspy_tensor q_t,
                                dspy_tensor k_t, dspy_tensor v_t, dspy_tensor start_t, int T, int NH, int NKV,
                                int HS) {
    cpu_enter(be);
    const char *op = "attention_train";
    CPU_NEED(op, "out", out_t, DSPY_DTYPE_F32, (int64_t)T * NH * HS);
    CPU_NEED(op, "lse", lse_t, DSPY_DTYPE_F32, (int64_t)T * NH);
    CPU_NEED(op, "q", q_t, DSPY_DTYPE_F32, (int64_t)T * NH * HS);
    CPU_NEED(op, "k", k_t, DSPY_DTYPE_F32, (int64_t)T * NKV * HS);
    CPU_NEED(op, "v", v_t, DSPY_DTYPE_F32, (int64_t)T * NKV * HS);
    CPU_NEED(op, "start", start_t, DSPY_DTYPE_I32, T);
    DSPY_TRY(dspy_cpu_plan_check(op, "sequence length", T, be->plan.max_len));
    const int32_t *start = start_t.data;
    DSPY_TRY(check_start(op, start, T));
    float *out = out_t.data, *lse = lse_t.data;
    const float *q = q_t.data, *k = k_t.data, *v = v_t.data;
    cpu_state *cs = cpu_of(be);
    const size_t stride = (size_t)be->plan.max_len;
    const float scale = (float)(1.0 / sqrt((double)HS));
    const int group = NH / NKV;
    long work = 0;
    for (int t = 0; t < T; t++) work += (long)(t - start[t] + 1) * NH * HS * 2;
#pragma omp parallel if (work > (1L << 18))
    {
        float *p = cs->att + (size_t)omp_get_thread_num() * stride; /* (T) */
#pragma omp for collapse(2) schedule(dynamic, 4)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH; h++) {
                int j0 = start[t], kvh = h / group;
                const float *qv = q + ((size_t)t * NH + h) * HS; /* (HS) */
                float m = -INFINITY;
                for (int j = j0; j <= t; j++) {
                    float sc = cpu_dot(qv, k + ((size_t)j * NKV + kvh) * HS, HS) * scale;
                    p[j] = sc;
                    if (sc > m) m = sc;
                }
                float sum = 0;
                for (int j = j0; j <= t; j++) {
                    p[j] = expf(p[j] - m);
                    sum += p[j];
                }
                lse[(size_t)t * NH + h] = m + logf(sum);
                float *o = out + ((size_t)t * NH + h) * HS; /* (HS) */
                memset(o, 0, sizeof(float) * (size_t)HS);
                for (int j = j0; j <= t; j++) {
                    const float *vv = v + ((size_t)j * NKV + kvh) * HS;
                    float pj = p[j] / sum;
                    for (int d = 0; d < HS; d++) o[d] += pj * vv[d];
                }
            }
    }
    return DSPY_OK;
}

dspy_status dspy_cpu_attention_train_backward(dspy_backend *be, dspy_tensor dq_t, dspy_tensor dk_t, dspy_tensor dv_t,
                                         dspy_tensor dout_t, dspy_tensor out_t, dspy_tensor lse_t, dspy_tensor q_t,
                                         dspy_tensor k_t, dspy_tensor v_t, dspy_tensor start_t, int T, int NH,
                                         int NKV, int HS) {
    cpu_enter(be);
    const char *op = "attention_train_backward";
    CPU_NEED(op, "dq", dq_t, DSPY_DTYPE_F32, (int64_t)T * NH * HS);
    CPU_NEED(op, "dk", dk_t, DSPY_DTYPE_F32, (int64_t)T * NKV * HS);
    CPU_NEED(op, "dv", dv_t, DSPY_DTYPE_F32, (int64_t)T * NKV * HS);
    CPU_NEED(op, "dout", dout_t, DSPY_DTYPE_F32, (int64_t)T * NH * HS);
    CPU_NEED(op, "out", out_t, DSPY_DTYPE_F32, (int64_t)T * NH * HS);
    CPU_NEED(op, "lse", lse_t, DSPY_DTYPE_F32, (int64_t)T * NH);
    CPU_NEED(op, "q", q_t, DSPY_DTYPE_F32, (int64_t)T * NH * HS);
    CPU_NEED(op, "k", k_t, DSPY_DTYPE_F32, (int64_t)T * NKV * HS);
    CPU_NEED(op, "v", v_t, DSPY_DTYPE_F32, (int64_t)T * NKV * HS);
    CPU_NEED(op, "start", start_t, DSPY_DTYPE_I32, T);
    DSPY_TRY(dspy_cpu_plan_check(op, "sequence length", T, be->plan.max_len));
    DSPY_TRY(dspy_cpu_plan_check(op, "rows", T, be->plan.max_rows));
    const int32_t *start = start_t.data;
    DSPY_TRY(check_start(op, start, T));
    float *dq = dq_t.data, *dk = dk_t.data, *dv = dv_t.data;
    const float *dout = dout_t.data, *out = out_t.data, *lse = lse_t.data, *q = q_t.data, *k = k_t.data,
                *v = v_t.data;
    cpu_state *cs = cpu_of(be);
    const size_t stride = (size_t)be->plan.max_len;
    const float scale = (float)(1.0 / sqrt((double)HS));
    const int group = NH / NKV;
    memset(dq, 0, sizeof(float) * (size_t)T * NH * HS);
    memset(dk, 0, sizeof(float) * (size_t)T * NKV * HS);
    memset(dv, 0, sizeof(float) * (size_t)T * NKV * HS);
    /* The examples: [ex0[e], ex1[e]) for e < nex. */
    int32_t *ex0 = cs->rowmap, *ex1 = cs->rowmap2;
    int nex = 0;
    for (int t = 0, e = -1; t < T; t++) {
        if (start[t] == t) ex0[++e] = t, nex++;
        ex1[e] = t + 1;
    }
    long work = 0;
    for (int t = 0; t < T; t++) work += (long)(t - start[t] + 1) * NH * HS * 4;
#pragma omp parallel if (work > (1L << 18))
    {
        float *p = cs->att + (size_t)omp_get_thread_num() * stride; /* (T) */
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int e = 0; e < nex; e++)
            for (int kvh = 0; kvh < NKV; kvh++)
                for (int h = kvh * group; h < (kvh + 1) * group; h++)
                    for (int t = ex0[e]; t < ex1[e]; t++) {
                        size_t row = (size_t)t * NH + h;
                        const float *qv = q + row * HS, *go = dout + row * HS, *o = out + row * HS; /* (HS) */
                        float *dqv = dq + row * HS;
                        float l = lse[row], D = cpu_dot(go, o, HS);
                        for (int j = ex0[e]; j <= t; j++)
                            p[j] = expf(cpu_dot(qv, k + ((size_t)j * NKV + kvh) * HS, HS) * scale - l);
                        for (int j = ex0[e]; j <= t; j++) {
                            size_t kr = ((size_t)j * NKV + kvh) * HS;
                            float ds = p[j] * (cpu_dot(go, v + kr, HS) - D) * scale;
                            float *dkv = dk + kr, *dvv = dv + kr;
                            const float *kv = k + kr;
                            for (int d = 0; d < HS; d++) {
                                dqv[d] += ds * kv[d];
                                dkv[d] += ds * qv[d];
                                dvv[d] += p[j] * go[d];
                            }
                        }
                    }
    }
    return DSPY_OK;
}
