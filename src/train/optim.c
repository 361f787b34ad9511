/* optim.c — AdamW and clip_grad_norm_ as torch computes them (see train/optim.h).
 *
 * Follows torch/optim/adam.py `_single_tensor_adam` (decoupled weight decay) and
 * torch/nn/utils/clip_grad.py. torch's vectorized CPU lerp_ fuses its multiply-add (FMA); this
 * file does not (a software fmaf would be slow on CPUs without FMA), so m can differ from
 * torch's in the last bit. Every element is updated independently, so the result does not
 * depend on the thread count.
 */
#include "train/optim.h"

#include <math.h>
#include <stdlib.h>

dspy_adamw_hparams dspy_adamw_hparams_default(void) {
    dspy_adamw_hparams h = {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0};
    return h;
}

void dspy_adamw_update(float *w, const float *g, float *m, float *v, size_t n, int64_t step, double lr,
                       const dspy_adamw_hparams *h) {
    double bc1 = 1.0 - pow(h->beta1, (double)step);
    double bc2 = 1.0 - pow(h->beta2, (double)step);
    const float decay = (float)(1.0 - lr * h->weight_decay);
    const int do_decay = h->weight_decay != 0.0;
    const float w1 = (float)(1.0 - h->beta1);
    const float b2 = (float)h->beta2, w2 = (float)(1.0 - h->beta2);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float eps = (float)h->eps;
    const float neg_step = (float)(-(lr / bc1));
    const long long N = (long long)n;
#pragma omp parallel for schedule(static) if (N > (1LL << 16))
    for (long long i = 0; i < N; i++) {
        float wi = w[i], gi = g[i];
        if (do_decay) wi *= decay;
        float mi = m[i] + w1 * (gi - m[i]);
        float vi = v[i] * b2;
        vi = vi + w2 * gi * gi;
        float den = sqrtf(vi) / bc2_sqrt + eps;
        wi = wi + neg_step * mi / den;
        m[i] = mi;
        v[i] = vi;
        w[i] = wi;
    }
}

/* Sum of squares of g (n) in double, over fixed chunks added in chunk order: the same bits
 * whatever the thread count or scheduling. */
static double sum_squares(const float *g, size_t n) {
    enum { CHUNK = 1 << 15 };
    const long long nchunks = (long long)((n + CHUNK - 1) / CHUNK);
    if (nchunks <= 1) {
        double s = 0.0;
        for (size_t i = 0; i < n; i++) s += (double)g[i] * (double)g[i];
        return s;
    }
    double *part = malloc((size_t)nchunks * sizeof *part);
    if (!part) { /* no memory for partial sums: the same order, one thread */
        double total = 0.0;
        for (long long c = 0; c < nchunks; c++) {
            double s = 0.0;
            size_t e = (size_t)(c + 1) * CHUNK < n ? (size_t)(c + 1) * CHUNK : n;
            for (size_t i = (size_t)c * CHUNK; i < e; i++) s += (double)g[i] * (double)g[i];
            total += s;
        }
        return total;
    }
#pragma omp parallel for schedule(static)
    for (long long c = 0; c < nchunks; c++) {
        double s = 0.0;
        size_t e = (size_t)(c + 1) * CHUNK < n ? (size_t)(c + 1) * CHUNK : n;
        for (size_t i = (size_t)c * CHUNK; i < e; i++) s += (double)g[i] * (double)g[i];
        part[c] = s;
    }
    double total = 0.0;
    for (long long c = 0; c < nchunks; c++) total += part[c];
    free(part);
    return total;
}

float dspy_grad_norm(float *const *grads, const size_t *ns, size_t k) {
    double total = 0.0;
    for (size_t t = 0; t < k; t++) {
        /* torch: the norm of each tensor is a float, then the norm of those norms */
        float tn = (float)sqrt(sum_squares(grads[t], ns[t]));
        total += (double)tn * (double)tn;
    }
    return (float)sqrt(total);
}

float dspy_clip_grad_norm(float *const *grads, const size_t *ns, size_t k, double max_norm) {
    float norm = dspy_grad_norm(grads, ns, k);
    if (!(max_norm > 0.0)) return norm;
    float coef = (float)max_norm / (norm + 1e-6f);
    if (!(coef < 1.0f)) return norm; /* clamp(max=1): multiplying by 1 changes nothing */
    for (size_t t = 0; t < k; t++) {
        float *g = grads[t];
        const long long N = (long long)ns[t];
#pragma omp parallel for schedule(static) if (N > (1LL << 16))
        for (long long i = 0; i < N; i++) g[i] *= coef;
    }
    return norm;
}
