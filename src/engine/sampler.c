/* sampler.c — temperature / top-k / top-p sampling with a per-sequence RNG (see sampler.h).
 *
 * Follows transformers' TemperatureLogitsWarper, TopKLogitsWarper (ties with the k-th score are
 * kept) and TopPLogitsWarper (a token is kept while the mass ranked above it is < top_p; at
 * least one token is kept). The draw walks the kept tokens in a fixed order, so a seed always
 * gives the same token for the same logits.
 */
#include "engine/sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

/* Descending by score, ascending by id on ties. */
static int cmp_desc(const void *a, const void *b, void *ctx) {
    const float *w = ctx;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (w[i] != w[j]) return w[i] > w[j] ? -1 : 1;
    return (i > j) - (i < j);
}

int32_t dspy_sample(const float *logits, int32_t V, float temperature, float top_p, int32_t top_k,
                    dspy_rng *r, float *work, int32_t *idx, float *logprob) {
    int32_t best = 0;
    for (int32_t i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    float m = logits[best];
    double se = 0;
    for (int32_t i = 0; i < V; i++) se += exp((double)logits[i] - m);
    double lse = m + log(se);
    int32_t tok = best;
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
        double target = dspy_rng_uniform(r) * total, cum = 0;
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
