/* sample.c — the reference sampler (kern/ops.h sample): one token per row of logits.
 *
 * Follows transformers' LogitsProcessors in order: TemperatureLogitsWarper, TopKLogitsWarper
 * (ties with the k-th score are kept) and TopPLogitsWarper (a token is kept while the mass
 * ranked above it is < top_p; at least one token is kept), then a draw from the renormalised
 * distribution: the kept tokens are walked in rank order (descending score, ascending id on
 * ties) and the first whose cumulative mass passes uniform * total is taken. So the same draw
 * always gives the same token for the same logits. Temperature 0 is greedy. The scratch (V
 * floats and ids) is the backend's planned vocabulary scratch, so rows run one after another.
 */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include "kern/cpu/cpu.h"

/* Descending by score, ascending by id on ties. */
static int cmp_desc(const void *a, const void *b, void *ctx) {
    const float *w = ctx;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (w[i] != w[j]) return w[i] > w[j] ? -1 : 1;
    return (i > j) - (i < j);
}

static int32_t sample_row(const float *logits, int32_t V, const dspy_sample_param *sp, float *work, int32_t *idx,
                          float *logprob) {
    int32_t best = 0;
    for (int32_t i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    float m = logits[best];
    double se = 0;
    for (int32_t i = 0; i < V; i++) se += exp((double)logits[i] - m);
    double lse = m + log(se);
    int32_t tok = best;
    float temperature = sp->temperature, top_p = sp->top_p;
    int32_t top_k = sp->top_k;
    if (temperature > 0) {
        for (int32_t i = 0; i < V; i++) work[i] = logits[i] / temperature;
        float mx = work[best];
        bool filter = (top_k > 0 && top_k < V) || top_p < 1.0f;
        int32_t n = V;
        double total = 0;
        if (filter) {
            for (int32_t i = 0; i < V; i++) idx[i] = i;
            qsort_r(idx, (size_t)V, sizeof *idx, cmp_desc, work);
            if (top_k > 0 && top_k < V) {
                n = top_k;
                while (n < V && work[idx[n]] == work[idx[n - 1]]) n++;
            }
            for (int32_t j = 0; j < n; j++) total += exp((double)work[idx[j]] - mx);
            if (top_p < 1.0f) {
                double before = 0;
                int32_t keep = 0;
                while (keep < n && (keep == 0 || before / total < top_p)) {
                    before += exp((double)work[idx[keep]] - mx);
                    keep++;
                }
                n = keep;
                total = before;
            }
        } else {
            for (int32_t i = 0; i < V; i++) total += exp((double)work[i] - mx);
        }
        double target = sp->uniform * total, cum = 0;
        tok = filter ? idx[n - 1] : V - 1;
        for (int32_t j = 0; j < n; j++) {
            int32_t id = filter ? idx[j] : j;
            cum += exp((double)work[id] - mx);
            if (cum > target) {
                tok = id;
                break;
            }
        }
    }
    *logprob = (float)((double)logits[tok] - lse);
    return tok;
}

dspy_status dspy_cpu_sample(dspy_backend *be, dspy_tensor tokens_t, dspy_tensor lp_t, dspy_tensor logits_t,
                       dspy_tensor params_t, int M, int V) {
    CPU_NEED("sample", "tokens", tokens_t, DSPY_DTYPE_I32, M);
    CPU_NEED("sample", "logprobs", lp_t, DSPY_DTYPE_F32, M);
    CPU_NEED("sample", "logits", logits_t, DSPY_DTYPE_F32, (int64_t)M * V);
    CPU_NEED("sample", "params", params_t, DSPY_DTYPE_I32, (int64_t)M * DSPY_SAMPLE_PARAM_WORDS);
    DSPY_TRY(dspy_cpu_plan_check("sample", "vocabulary", V, be->plan.max_vocab));
    cpu_state *cs = cpu_of(be);
    const dspy_sample_param *sp = params_t.data;
    for (int m = 0; m < M; m++)
        ((int32_t *)tokens_t.data)[m] = sample_row((const float *)logits_t.data + (size_t)m * V, V, &sp[m], cs->vwork,
                                                   cs->vidx, (float *)lp_t.data + m);
    return DSPY_OK;
}

/* The masked row's log-sum-exp and the raw row's, both over the row in id order (in double), so
 * a mask that keeps everything gives a shift of exactly 0. */
dspy_status dspy_cpu_mask_logits(dspy_backend *be, dspy_tensor logits_t, dspy_tensor masks_t, dspy_tensor rows_t,
                            dspy_tensor shift_t, int R, int V) {
    (void)be;
    const int64_t W = ((int64_t)V + 31) / 32;
    CPU_NEED("mask_logits", "logits", logits_t, DSPY_DTYPE_F32, 0);
    CPU_NEED("mask_logits", "masks", masks_t, DSPY_DTYPE_I32, (int64_t)R * W);
    CPU_NEED("mask_logits", "rows", rows_t, DSPY_DTYPE_I32, R);
    CPU_NEED("mask_logits", "shift", shift_t, DSPY_DTYPE_F32, R);
    if (V <= 0) return dspy_fail(DSPY_ERR_ARG, "mask_logits: vocabulary %d must be positive", V);
    const int64_t M = logits_t.n / V;
    const int32_t *rows = rows_t.data;
    for (int r = 0; r < R; r++) {
        if (rows[r] < 0 || rows[r] >= M)
            return dspy_fail(DSPY_ERR_ARG, "mask_logits: row %d of mask %d is outside the %lld logits rows", rows[r], r,
                             (long long)M);
        float *x = (float *)logits_t.data + (int64_t)rows[r] * V;
        const uint32_t *mk = (const uint32_t *)masks_t.data + (int64_t)r * W;
        float raw_max = -INFINITY, max = -INFINITY;
        for (int32_t i = 0; i < V; i++) {
            if (x[i] > raw_max) raw_max = x[i];
            if ((mk[i / 32] >> (i % 32) & 1u) && x[i] > max) max = x[i];
        }
        if (max == -INFINITY)
            return dspy_fail(DSPY_ERR_ARG, "mask_logits: mask %d (row %d) keeps no token with a finite logit", r,
                             rows[r]);
        double raw_sum = 0, sum = 0;
        for (int32_t i = 0; i < V; i++) {
            raw_sum += exp((double)x[i] - raw_max);
            if (mk[i / 32] >> (i % 32) & 1u) sum += exp((double)x[i] - max);
            else x[i] = -INFINITY;
        }
        ((float *)shift_t.data)[r] = (float)(((double)max + log(sum)) - ((double)raw_max + log(raw_sum)));
    }
    return DSPY_OK;
}

/* kern/ops.h decode_advance: the reference of the CUDA kernel (sample.cu), checked where the
 * device cannot check: ctl[0] within the n rows, every table entry read inside `tables`. */
dspy_status dspy_cpu_decode_advance(dspy_backend *be, dspy_tensor tokens_t, dspy_tensor pos_t, dspy_tensor slots_t,
                                    dspy_tensor segs_t, dspy_tensor tables_t, dspy_tensor sampled_t,
                                    dspy_tensor lp_t, dspy_tensor ring_t, dspy_tensor ctl_t, int n, int ring_slots,
                                    int bs) {
    (void)be;
    CPU_NEED("decode_advance", "tokens", tokens_t, DSPY_DTYPE_I32, n);
    CPU_NEED("decode_advance", "pos", pos_t, DSPY_DTYPE_I32, n);
    CPU_NEED("decode_advance", "slots", slots_t, DSPY_DTYPE_I32, n);
    CPU_NEED("decode_advance", "segs", segs_t, DSPY_DTYPE_I32, 4 * (int64_t)n);
    CPU_NEED("decode_advance", "tables", tables_t, DSPY_DTYPE_I32, 0);
    CPU_NEED("decode_advance", "sampled", sampled_t, DSPY_DTYPE_I32, n);
    CPU_NEED("decode_advance", "logprobs", lp_t, DSPY_DTYPE_F32, n);
    CPU_NEED("decode_advance", "ring", ring_t, DSPY_DTYPE_I32, 2 * (int64_t)n * ring_slots);
    CPU_NEED("decode_advance", "ctl", ctl_t, DSPY_DTYPE_I32, 3);
    if (n < 0 || ring_slots < 1 || bs < 1)
        return dspy_fail(DSPY_ERR_ARG, "decode_advance: n %d, ring_slots %d and block size %d must be positive", n,
                         ring_slots, bs);
    int32_t *ctl = ctl_t.data, *tokens = tokens_t.data, *pos = pos_t.data, *slots = slots_t.data;
    dspy_attn_seg *segs = segs_t.data;
    const int32_t *tables = tables_t.data, *sampled = sampled_t.data;
    if (ctl[0] < 0 || ctl[0] > n)
        return dspy_fail(DSPY_ERR_ARG, "decode_advance: %d rows to advance, outside 0 .. %d", ctl[0], n);
    if (ctl[1] >= 0 && ctl[1] < ring_slots) {
        int32_t *slot = (int32_t *)ring_t.data + (int64_t)ctl[1] * 2 * n;
        memcpy(slot, sampled, sizeof(int32_t) * (size_t)n);
        memcpy(slot + n, lp_t.data, sizeof(float) * (size_t)n);
    }
    const bool next = ctl[1] + 1 < ctl[2];
    ctl[1]++;
    for (int i = 0; next && i < ctl[0]; i++) {
        const int32_t p = pos[i] + 1, e = segs[i].table_off + p / bs;
        if (e < 0 || e >= tables_t.n)
            return dspy_fail(DSPY_ERR_ARG, "decode_advance: row %d's position %d needs table entry %d, outside the "
                                           "%lld entries", i, p, e, (long long)tables_t.n);
        tokens[i] = sampled[i];
        pos[i] = p;
        segs[i].pos0 = p;
        slots[i] = tables[e] * bs + p % bs;
    }
    return DSPY_OK;
}
