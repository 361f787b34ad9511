/* optim.c — AdamW and clip_grad_norm_ as torch computes them (see train/optim.h).
 *
 * Follows torch/optim/adam.py `_single_tensor_adam` (decoupled weight decay) and
 * torch/nn/utils/clip_grad.py. torch's vectorized CPU lerp_ fuses its multiply-add (FMA); this
 * file does not (a software fmaf would be slow on CPUs without FMA), so m can differ from
 * torch's in the last bit. Every element is updated independently, so the result does not
 * depend on the thread count.
 */
#include "train/optim.h"

#include "dspy/status.h"

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

/* ---- the optimizer of a trainable ------------------------------------------------------------ */

struct dspy_optimizer {
    dspy_trainable *t;
    dspy_adamw_hparams h;
    size_t np;
    float *block;     /* every m then every v */
    size_t *off;      /* (np) offset of parameter i's moments in each half */
    size_t total;
    int64_t steps;
    float **grads;    /* (np) scratch for clipping */
    size_t *ns;       /* (np) */
};

dspy_status dspy_optimizer_new(dspy_trainable *t, const dspy_adamw_hparams *h, dspy_optimizer **out) {
    *out = NULL;
    dspy_optimizer *o = calloc(1, sizeof *o);
    if (!o) return dspy_fail(DSPY_ERR_NOMEM, "optimizer: out of memory");
    o->t = t;
    o->h = h ? *h : dspy_adamw_hparams_default();
    o->np = dspy_trainable_nparams(t);
    size_t np1 = o->np ? o->np : 1;
    o->off = calloc(np1, sizeof *o->off);
    o->grads = calloc(np1, sizeof *o->grads);
    o->ns = calloc(np1, sizeof *o->ns);
    if (!o->off || !o->grads || !o->ns) goto oom;
    for (size_t i = 0; i < o->np; i++) {
        o->off[i] = o->total;
        o->total += dspy_trainable_param(t, i)->n;
    }
    o->block = calloc(o->total ? 2 * o->total : 1, sizeof(float));
    if (!o->block) goto oom;
    *out = o;
    return DSPY_OK;
oom:;
    size_t want = 2 * o->total;
    dspy_optimizer_free(o);
    return dspy_fail(DSPY_ERR_NOMEM, "optimizer: out of memory for the AdamW state (%zu floats)", want);
}

void dspy_optimizer_free(dspy_optimizer *o) {
    if (!o) return;
    free(o->block);
    free(o->off);
    free(o->grads);
    free(o->ns);
    free(o);
}

float *dspy_optimizer_exp_avg(dspy_optimizer *o, size_t i) { return o->block + o->off[i]; }
float *dspy_optimizer_exp_avg_sq(dspy_optimizer *o, size_t i) { return o->block + o->total + o->off[i]; }
int64_t dspy_optimizer_steps(const dspy_optimizer *o) { return o->steps; }
void dspy_optimizer_set_steps(dspy_optimizer *o, int64_t steps) { o->steps = steps; }

dspy_status dspy_optimizer_train_step(dspy_optimizer *o, const dspy_train_seq *seqs, size_t k, double lr,
                                      double max_grad_norm, dspy_step_stats *stats) {
    int64_t N = 0, tokens = 0;
    for (size_t s = 0; s < k; s++) {
        tokens += seqs[s].T;
        for (int32_t t = 0; t < seqs[s].T; t++) N += seqs[s].labels[t] != -100;
    }
    if (N == 0) return dspy_fail(DSPY_ERR_ARG, "optimizer step: the batch has no labelled token");
    dspy_trainable_zero_grad(o->t);
    float scale = (float)(1.0 / (double)N);
    double loss_sum = 0;
    for (size_t s = 0; s < k; s++) {
        double ls = 0;
        int64_t nl = 0;
        dspy_status st = dspy_trainable_step(o->t, &seqs[s], scale, &ls, &nl);
        if (st) return st;
        loss_sum += ls;
    }
    double loss = loss_sum / (double)N;
    for (size_t i = 0; i < o->np; i++) {
        dspy_param *p = dspy_trainable_param(o->t, i);
        o->grads[i] = p->g;
        o->ns[i] = p->n;
    }
    float norm = dspy_clip_grad_norm(o->grads, o->ns, o->np, max_grad_norm);
    if (!isfinite(loss) || !isfinite(norm))
        return dspy_fail(DSPY_ERR_BACKEND,
                         "optimizer step %lld: the loss (%g) or the gradient norm (%g) is not finite; the "
                         "weights were not updated (lower learning_rate or check the data)",
                         (long long)o->steps + 1, loss, (double)norm);
    o->steps++;
    dspy_adamw_hparams no_decay = o->h;
    no_decay.weight_decay = 0.0;
    for (size_t i = 0; i < o->np; i++) {
        dspy_param *p = dspy_trainable_param(o->t, i);
        /* HF Trainer: no weight decay for biases and norm weights (the 1-D tensors here) */
        dspy_adamw_update(p->w, p->g, dspy_optimizer_exp_avg(o, i), dspy_optimizer_exp_avg_sq(o, i), p->n, o->steps,
                          lr, p->ndim == 2 ? &o->h : &no_decay);
    }
    if (stats) *stats = (dspy_step_stats){loss, norm, N, tokens};
    return DSPY_OK;
}
