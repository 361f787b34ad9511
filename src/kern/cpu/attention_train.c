/* attention_train.c — fp32 reference attention of one packed training sequence, and its backward.
 *
 * Keys and values are plain (T, NKV, HS) arrays (no paged cache). Row t sees the keys
 *   j <= t with j >= start[t] (its own example: causal within it, block-diagonal across
 *   examples, what HF's eager attention computes with a 4D block-diagonal causal mask)
 *   or j < prefix (a shared prompt prefix that every later example continues),
 * i.e. keys [0, min(prefix, start[t])) then [start[t], t], in that order. A continuation row
 * at position P + i of a prefix of P tokens thus sees exactly the keys its unshared example
 * would (the prefix, then itself), in the same order.
 * Forward per (row, head), in the order of attention.c: s_j = (q . k_j) / sqrt(HS),
 * p = softmax(s) (max-subtracted), out = sum_j p_j v_j; it also saves lse = log sum_j exp(s_j).
 * Backward recomputes p from lse (nothing of size T x T is stored):
 *   D = dout . out,  dp_j = dout . v_j,  ds_j = p_j (dp_j - D),
 *   dq += ds_j k_j / sqrt(HS),  dk_j += ds_j q / sqrt(HS),  dv_j += p_j dout.
 * in two passes so that no two threads write one row: dq per (row, head) over the row's keys,
 * then dk and dv per (kv head, key) over the rows that see the key (the group's query heads in
 * order, rows ascending: the summation order of the per-example loop this replaced). GQA: query
 * head h reads kv head h / (NH / NKV). OpenMP over those units. Each thread's probabilities
 * live in its planned scratch row (max_len >= T).
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

static dspy_status check_prefix(const char *op, int prefix, int T) {
    if (prefix < 0 || prefix > T)
        return dspy_fail(DSPY_ERR_ARG, "cpu %s: prefix is %d; a shared prefix has 0 .. T = %d tokens", op, prefix, T);
    return DSPY_OK;
}

/* The end of row t's prefix keys: [0, pre_end(t)) then [start[t], t] are what it sees. */
static inline int pre_end(const int32_t *start, int prefix, int t) { return prefix < start[t] ? prefix : start[t]; }

/* Row t's keys in order: for (j = first_key(pe, j0); j <= t; j = next_key(j, pe, j0)), where
 * pe = pre_end(start, prefix, t) and j0 = start[t]. */
static inline int first_key(int pe, int j0) { return pe > 0 ? 0 : j0; }
static inline int next_key(int j, int pe, int j0) { return j + 1 == pe ? j0 : j + 1; }

/* Whether row t sees key j. */
static inline bool sees(const int32_t *start, int prefix, int t, int j) {
    return j <= t && (j >= start[t] || j < prefix);
}

dspy_status dspy_cpu_attention_train(dspy_backend *be, dspy_tensor out_t, dspy_tensor lse_t, dspy_tensor q_t,
                                     dspy_tensor k_t, dspy_tensor v_t, dspy_tensor start_t, int prefix, int T, int NH,
                                     int NKV, int HS) {
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
    DSPY_TRY(check_prefix(op, prefix, T));
    float *out = out_t.data, *lse = lse_t.data;
    const float *q = q_t.data, *k = k_t.data, *v = v_t.data;
    cpu_state *cs = cpu_of(be);
    const size_t stride = (size_t)be->plan.max_len;
    const float scale = (float)(1.0 / sqrt((double)HS));
    const int group = NH / NKV;
    long work = 0;
    for (int t = 0; t < T; t++) work += (long)(t - start[t] + 1 + pre_end(start, prefix, t)) * NH * HS * 2;
#pragma omp parallel if (work > (1L << 18))
    {
        float *p = cs->att + (size_t)omp_get_thread_num() * stride; /* (T), indexed by key */
#pragma omp for collapse(2) schedule(dynamic, 4)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH; h++) {
                /* keys [0, pe) (the shared prefix) then [j0, t] (its own example) */
                int pe = pre_end(start, prefix, t), j0 = start[t], kvh = h / group;
                const float *qv = q + ((size_t)t * NH + h) * HS; /* (HS) */
                float m = -INFINITY;
                for (int j = first_key(pe, j0); j <= t; j = next_key(j, pe, j0)) {
                    float sc = cpu_dot(qv, k + ((size_t)j * NKV + kvh) * HS, HS) * scale;
                    p[j] = sc;
                    if (sc > m) m = sc;
                }
                float sum = 0;
                for (int j = first_key(pe, j0); j <= t; j = next_key(j, pe, j0)) {
                    p[j] = expf(p[j] - m);
                    sum += p[j];
                }
                lse[(size_t)t * NH + h] = m + logf(sum);
                float *o = out + ((size_t)t * NH + h) * HS; /* (HS) */
                memset(o, 0, sizeof(float) * (size_t)HS);
                for (int j = first_key(pe, j0); j <= t; j = next_key(j, pe, j0)) {
                    const float *vv = v + ((size_t)j * NKV + kvh) * HS;
                    float pj = p[j] / sum;
                    for (int d = 0; d < HS; d++) o[d] += pj * vv[d];
                }
            }
    }
    return DSPY_OK;
}

dspy_status dspy_cpu_attention_train_backward(dspy_backend *be, dspy_tensor dq_t, dspy_tensor dk_t, dspy_tensor dv_t,
                                              dspy_tensor dout_t, dspy_tensor out_t, dspy_tensor lse_t,
                                              dspy_tensor q_t, dspy_tensor k_t, dspy_tensor v_t, dspy_tensor start_t,
                                              int prefix, int T, int NH, int NKV, int HS) {
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
    DSPY_TRY(dspy_cpu_plan_check(op, "rows x heads", (int64_t)T * NH,
                                 (int64_t)be->plan.max_rows * (be->plan.NH > 1 ? be->plan.NH : 1)));
    const int32_t *start = start_t.data;
    DSPY_TRY(check_start(op, start, T));
    DSPY_TRY(check_prefix(op, prefix, T));
    float *dq = dq_t.data, *dk = dk_t.data, *dv = dv_t.data;
    const float *dout = dout_t.data, *out = out_t.data, *lse = lse_t.data, *q = q_t.data, *k = k_t.data,
                *v = v_t.data;
    cpu_state *cs = cpu_of(be);
    float *Dg = cs->rowf; /* (T, NH) dout . out */
    const size_t stride = (size_t)be->plan.max_len;
    const float scale = (float)(1.0 / sqrt((double)HS));
    const int group = NH / NKV;
    memset(dq, 0, sizeof(float) * (size_t)T * NH * HS);
    memset(dk, 0, sizeof(float) * (size_t)T * NKV * HS);
    memset(dv, 0, sizeof(float) * (size_t)T * NKV * HS);
    long work = 0;
    for (int t = 0; t < T; t++) work += (long)(t - start[t] + 1 + pre_end(start, prefix, t)) * NH * HS * 4;
    /* dq (and D) per (row, head) over the row's keys */
#pragma omp parallel if (work > (1L << 18))
    {
        float *p = cs->att + (size_t)omp_get_thread_num() * stride; /* (T), indexed by key */
#pragma omp for collapse(2) schedule(dynamic, 4)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH; h++) {
                size_t row = (size_t)t * NH + h;
                int pe = pre_end(start, prefix, t), j0 = start[t], kvh = h / group;
                const float *qv = q + row * HS, *go = dout + row * HS, *o = out + row * HS; /* (HS) */
                float *dqv = dq + row * HS;
                float l = lse[row], D = cpu_dot(go, o, HS);
                Dg[row] = D;
                for (int j = first_key(pe, j0); j <= t; j = next_key(j, pe, j0))
                    p[j] = expf(cpu_dot(qv, k + ((size_t)j * NKV + kvh) * HS, HS) * scale - l);
                for (int j = first_key(pe, j0); j <= t; j = next_key(j, pe, j0)) {
                    size_t kr = ((size_t)j * NKV + kvh) * HS;
                    float ds = p[j] * (cpu_dot(go, v + kr, HS) - D) * scale;
                    const float *kv = k + kr;
                    for (int d = 0; d < HS; d++) dqv[d] += ds * kv[d];
                }
            }
    }
    /* dk, dv per (kv head, key) over the rows that see the key: the group's heads in order, rows
     * ascending (a key past the prefix is seen by rows of its own example only, and starts only
     * grow, so the scan stops at the first row whose example starts after it) */
#pragma omp parallel for collapse(2) schedule(dynamic, 4) if (work > (1L << 18))
    for (int kvh = 0; kvh < NKV; kvh++)
        for (int j = 0; j < T; j++) {
            size_t kr = ((size_t)j * NKV + kvh) * HS;
            const float *kv = k + kr, *vv = v + kr; /* (HS) */
            float *dkv = dk + kr, *dvv = dv + kr;
            for (int h = kvh * group; h < (kvh + 1) * group; h++)
                for (int t = j; t < T; t++) {
                    if (j >= prefix && start[t] > j) break;
                    if (!sees(start, prefix, t, j)) continue;
                    size_t row = (size_t)t * NH + h;
                    const float *qv = q + row * HS, *go = dout + row * HS; /* (HS) */
                    float pj = expf(cpu_dot(qv, kv, HS) * scale - lse[row]);
                    float ds = pj * (cpu_dot(go, vv, HS) - Dg[row]) * scale;
                    for (int d = 0; d < HS; d++) {
                        dkv[d] += ds * qv[d];
                        dvv[d] += pj * go[d];
                    }
                }
        }
    return DSPY_OK;
}
