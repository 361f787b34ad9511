/* optim.c — AdamW and clip_grad_norm_ as torch computes them (see train/optim.h).
 *
 * Follows torch/optim/adam.py `_single_tensor_adam` (decoupled weight decay) and
 * torch/nn/utils/clip_grad.py. torch's vectorized CPU lerp_ fuses its multiply-add (FMA); this
 * file does not (a software fmaf would be slow on CPUs without FMA), so m can differ from
 * torch's in the last bit. Every element is updated independently, so the result does not
 * depend on the thread count.
 *
 * A mirrored (device) trainable keeps its moments in the backend's memory and runs the whole
 * optimizer step through the op table (device_step): zero the gradients, the sequences, per-tensor
 * grad_sumsq, clip_coef writing the clip coefficient into the adamw step constants (uploaded
 * once per step), one adamw per tensor, and a single read-back of the loss sums and the norm at
 * the end. On the CPU backend that path gives the same bits as the host code above (the ops
 * reproduce its orders and roundings); tests check it. The mixed-precision trainer (CUDA) also
 * packs the step's sequences into larger passes (group_end; with LoRA too), lets the first pass
 * of full fine-tuning overwrite the weight gradients instead of zeroing them
 * (linear_backward_beta), and refreshes the BF16 working weights (LoRA: the adapters') inside
 * the update (adamw_bf16).
 */
#include "train/optim.h"

#include "dspy/status.h"
#include "kern/backend.h"
#include "train/dist.h"
#include "train/trainable_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

dspy_adamw_hparams dspy_adamw_hparams_default(void) {
    dspy_adamw_hparams h = {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0};
    return h;
}

void dspy_adamw_update(float *w, const float *g, float *m, float *v, size_t n, int64_t step, double lr,
                       const dspy_adamw_hparams *h) {
    /* the constants as the adamw op gets them (no decay: a factor of exactly 1) */
    float hp[DSPY_ADAMW_WORDS];
    dspy_adamw_pack(hp, step, lr, h->beta1, h->beta2, h->eps, h->weight_decay, 1.0f);
    dspy_adamw_apply(hp, w, g, m, v, (int64_t)n);
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
    float *block;     /* every m then every v (the host mirror when the trainable is mirrored) */
    float *dblock;    /* the same on the backend (== block when not mirrored) */
    double *sumsq;    /* (np) F64 on the backend: per-tensor sums of squares */
    float *hp;        /* (2, DSPY_ADAMW_WORDS) on the backend: adamw constants with / without decay */
    float *norm;      /* (1) on the backend */
    float *hp_host;   /* (2 * DSPY_ADAMW_WORDS + 1) page-locked: the constants going, the norm coming */
    size_t *off;      /* (np) offset of parameter i's moments in each half */
    size_t total;
    int64_t steps;
    float **grads;    /* (np) scratch for clipping */
    size_t *ns;       /* (np) */
    int32_t *cat;     /* packed passes (see group_end): ids, labels, seg, pos of one group */
    size_t cat_cap;   /* tokens cat holds */
    dspy_dist *dist;  /* data parallel (dspy_optimizer_set_dist); NULL: one rank */
    int *layer_of;    /* (np) the decoder layer parameter i belongs to, -1 for none */
    float **lrun;     /* (layers) where each layer's gradients lie end to end, NULL when they do not */
    size_t *lrun_n;   /* (layers) their length */
    int nlayers;
    bool overlap;     /* every layer's gradients one run: all-reduced as the backward finishes it */
    dspy_train_seq *mine; /* (mine_cap) several ranks: this rank's sequences of a step, in order */
    size_t mine_cap;
    int32_t *parts;   /* (parts_cap) a group's sequence boundaries (dspy_train_group_run) */
    size_t parts_cap;
    bool g16;         /* this step's linear weight gradients are BF16 (see wgrad16_step) */
    bool *lin;        /* (np) parameter i is a decoder layer's linear weight */
    bool g16_fits;    /* every such gradient can be kept in BF16 (dspy_train_wgrad16_fits) */
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
    o->lin = calloc(np1, sizeof *o->lin);
    if (!o->off || !o->grads || !o->ns || !o->lin) goto fail;
    for (size_t i = 0; i < o->np; i++) {
        o->off[i] = o->total;
        o->total += dspy_trainable_param(t, i)->n;
        o->lin[i] = dspy_train_is_linear_grad(t, dspy_trainable_param(t, i)->dg);
    }
    o->g16_fits = dspy_train_wgrad16_fits(t);
    o->block = calloc(o->total ? 2 * o->total : 1, sizeof(float));
    if (!o->block) goto fail;
    o->dblock = o->block;
    if (t->mirrored) {
        dspy_backend *be = t->be;
        dspy_status st = be->ops->alloc(be, sizeof(float) * (o->total ? 2 * o->total : 1), (void **)&o->dblock);
        if (!st) st = be->ops->fill(be, dspy_bt(be, o->dblock, (int64_t)(2 * o->total), DSPY_DTYPE_F32), 0.0f);
        if (!st) st = be->ops->alloc(be, sizeof(double) * np1, (void **)&o->sumsq);
        if (!st) st = be->ops->alloc(be, sizeof(float) * (2 * DSPY_ADAMW_WORDS + 1), (void **)&o->hp);
        if (!st) st = be->ops->alloc_host(be, sizeof(float) * (2 * DSPY_ADAMW_WORDS + 1), (void **)&o->hp_host);
        if (!st) st = be->ops->sync(be);
        if (st) {
            if (o->dblock == o->block) o->dblock = NULL;
            dspy_optimizer_free(o);
            return st;
        }
        o->norm = o->hp + 2 * DSPY_ADAMW_WORDS;
    }
    *out = o;
    return DSPY_OK;
fail:;
    size_t want = 2 * o->total;
    dspy_optimizer_free(o);
    return dspy_fail(DSPY_ERR_NOMEM, "optimizer: out of memory for the AdamW state (%zu floats)", want);
}

void dspy_optimizer_free(dspy_optimizer *o) {
    if (!o) return;
    if (o->t->mirrored) {
        dspy_backend *be = o->t->be;
        if (o->dblock != o->block) be->ops->free(be, o->dblock);
        be->ops->free(be, o->sumsq);
        be->ops->free(be, o->hp);
        be->ops->free_host(be, o->hp_host);
    }
    free(o->block);
    free(o->cat);
    free(o->mine);
    free(o->layer_of);
    free(o->lrun);
    free(o->lrun_n);
    free(o->parts);
    free(o->off);
    free(o->grads);
    free(o->ns);
    free(o->lin);
    free(o);
}

float *dspy_optimizer_exp_avg(dspy_optimizer *o, size_t i) { return o->block + o->off[i]; }
float *dspy_optimizer_exp_avg_sq(dspy_optimizer *o, size_t i) { return o->block + o->total + o->off[i]; }
int64_t dspy_optimizer_steps(const dspy_optimizer *o) { return o->steps; }
bool dspy_optimizer_wgrad16(const dspy_optimizer *o) { return o->g16; }

/* Copies the moments between the backend and the host mirror, then waits. */
static dspy_status sync_moments(dspy_optimizer *o, dspy_copy_kind kind) {
    if (!o->t->mirrored || o->total == 0) return DSPY_OK;
    dspy_backend *be = o->t->be;
    size_t bytes = sizeof(float) * 2 * o->total;
    DSPY_TRY(kind == DSPY_COPY_D2H ? be->ops->copy(be, o->block, o->dblock, bytes, kind)
                                   : be->ops->copy(be, o->dblock, o->block, bytes, kind));
    return be->ops->sync(be);
}

dspy_status dspy_optimizer_to_host(dspy_optimizer *o) { return sync_moments(o, DSPY_COPY_D2H); }
dspy_status dspy_optimizer_to_device(dspy_optimizer *o) { return sync_moments(o, DSPY_COPY_H2D); }
void dspy_optimizer_set_steps(dspy_optimizer *o, int64_t steps) { o->steps = steps; }
/* Which layer each parameter belongs to (its name's "layers.N.") and whether each layer's
 * gradients lie end to end (one all-reduce each, started when the backward is done with that
 * layer). Not so: every gradient is all-reduced after the backward instead. */
static dspy_status plan_overlap(dspy_optimizer *o) {
    dspy_trainable *t = o->t;
    const int L = t->cfg.num_hidden_layers;
    size_t np1 = o->np ? o->np : 1;
    o->layer_of = calloc(np1, sizeof *o->layer_of);
    o->lrun = calloc((size_t)(L > 0 ? L : 1), sizeof *o->lrun);
    o->lrun_n = calloc((size_t)(L > 0 ? L : 1), sizeof *o->lrun_n);
    if (!o->layer_of || !o->lrun || !o->lrun_n) return dspy_fail(DSPY_ERR_NOMEM, "optimizer: out of memory");
    o->nlayers = L;
    float **end = calloc((size_t)(L > 0 ? L : 1), sizeof *end);
    if (!end) return dspy_fail(DSPY_ERR_NOMEM, "optimizer: out of memory");
    for (size_t i = 0; i < o->np; i++) {
        dspy_param *p = dspy_trainable_param(t, i);
        const char *at = strstr(p->name, "layers.");
        int l = at ? atoi(at + 7) : -1;
        o->layer_of[i] = l >= 0 && l < L ? l : -1;
        if (o->layer_of[i] < 0) continue;
        if (!o->lrun[l] || p->dg < o->lrun[l]) o->lrun[l] = p->dg;
        if (!end[l] || p->dg + p->n > end[l]) end[l] = p->dg + p->n;
        o->lrun_n[l] += p->n;
    }
    o->overlap = L > 0;
    for (int l = 0; l < L; l++) /* end to end: the span holds exactly the layer's (disjoint) tensors */
        o->overlap = o->overlap && o->lrun[l] && (size_t)(end[l] - o->lrun[l]) == o->lrun_n[l];
    free(end);
    return DSPY_OK;
}

dspy_status dspy_optimizer_set_dist(dspy_optimizer *o, dspy_dist *d) {
    o->dist = d;
    if (!d || dspy_dist_world(d) == 1 || o->layer_of) return DSPY_OK;
    return plan_overlap(o);
}

size_t dspy_optimizer_layer_run(dspy_optimizer *o, int layer, float **run) {
    *run = NULL;
    if (!o->layer_of) {
        dspy_status st = plan_overlap(o);
        if (st) return 0;
    }
    if (!o->overlap || layer < 0 || layer >= o->nlayers) return 0;
    *run = o->lrun[layer];
    return o->lrun_n[layer];
}

/* Packed passes (mixed precision): consecutive sequences of a step without a shared prefix run as
 * ONE forward/backward pass over their concatenation, up to dspy_train_group_tokens tokens (0 runs
 * every sequence alone). Each keeps its own examples (block-diagonal attention, positions
 * restarting per example) and, under LoRA, its own dropout masks (dspy_train_group_run), so the
 * losses and gradients are the same sums; the GEMMs are larger and every weight gradient is read
 * and written once per pass instead of once per sequence. The grouping depends only on the batch, so a resumed run
 * groups exactly as the uninterrupted one did.
 *
 * group_end: the end (exclusive) of the group that starts at sequence s; *T gets its tokens. */
static size_t group_end(const dspy_train_seq *seqs, size_t k, size_t s, int32_t limit, int32_t *T) {
    size_t e = s + 1;
    int64_t tot = seqs[s].T;
    if (seqs[s].prefix == 0)
        while (e < k && seqs[e].prefix == 0 && tot + seqs[e].T <= limit) tot += seqs[e++].T;
    *T = (int32_t)tot;
    return e;
}

/* The concatenation of sequences [s, e) into o->cat, as one dspy_train_seq: examples keep their
 * own runs of seg (renumbered to stay increasing across sequences) and their positions; o->parts
 * gets where each sequence starts (and the end). */
static dspy_status group_make(dspy_optimizer *o, const dspy_train_seq *seqs, size_t s, size_t e, int32_t T,
                              dspy_train_seq *out) {
    if (e - s + 1 > o->parts_cap) {
        int32_t *np = realloc(o->parts, sizeof(int32_t) * (e - s + 1));
        if (!np) return dspy_fail(DSPY_ERR_NOMEM, "optimizer step: out of memory packing %zu sequences", e - s);
        o->parts = np;
        o->parts_cap = e - s + 1;
    }
    if ((size_t)T > o->cat_cap) {
        int32_t *nc = realloc(o->cat, sizeof(int32_t) * 4 * (size_t)T);
        if (!nc) return dspy_fail(DSPY_ERR_NOMEM, "optimizer step: out of memory packing %d tokens", (int)T);
        o->cat = nc;
        o->cat_cap = (size_t)T;
    }
    int32_t *ids = o->cat, *labels = ids + T, *seg = labels + T, *pos = seg + T;
    bool any_pos = false;
    for (size_t i = s; i < e; i++) any_pos = any_pos || seqs[i].pos;
    int32_t off = 0, base = 0;
    for (size_t i = s; i < e; i++) {
        const dspy_train_seq *q = &seqs[i];
        o->parts[i - s] = off;
        memcpy(ids + off, q->ids, sizeof(int32_t) * (size_t)q->T);
        memcpy(labels + off, q->labels, sizeof(int32_t) * (size_t)q->T);
        int32_t ex0 = 0; /* the first token of the current example (for positions) */
        for (int32_t j = 0; j < q->T; j++) {
            int32_t sg = q->seg ? q->seg[j] - q->seg[0] : 0;
            if (j > 0 && q->seg && q->seg[j] != q->seg[j - 1]) ex0 = j;
            seg[off + j] = base + sg;
            if (any_pos) pos[off + j] = q->pos ? q->pos[j] : j - ex0;
        }
        base = seg[off + q->T - 1] + 1;
        off += q->T;
    }
    o->parts[e - s] = off;
    *out = (dspy_train_seq){ids, any_pos ? pos : NULL, labels, seg, T, 0};
    return DSPY_OK;
}

/* This rank's share of a step, data parallel: the sequences s with s % world == rank, in step
 * order; its c-th is step sequence rank + c * world (its loss slot). One rank: the step itself,
 * else gathered into o->mine. The share depends only on the step's batch and the world size,
 * so every rank agrees on it. */
static dspy_status shard(dspy_optimizer *o, const dspy_train_seq *seqs, size_t k, int rank, int world,
                         const dspy_train_seq **mine, size_t *count) {
    *mine = seqs, *count = k;
    if (world == 1) return DSPY_OK;
    if (k > o->mine_cap) {
        dspy_train_seq *m = realloc(o->mine, k * sizeof *m);
        if (!m) return dspy_fail(DSPY_ERR_NOMEM, "optimizer step: out of memory sharding %zu sequences", k);
        o->mine = m;
        o->mine_cap = k;
    }
    size_t c = 0;
    for (size_t s = (size_t)rank; s < k; s += (size_t)world) o->mine[c++] = seqs[s];
    *mine = o->mine, *count = c;
    return DSPY_OK;
}

/* The step index (and loss slot) of this rank's c-th sequence. */
static size_t step_at(int rank, int world, size_t c) { return (size_t)rank + c * (size_t)world; }

/* A layer's gradients are final on this rank: their all-reduce starts on the side stream. */
static dspy_status on_layer(void *ud, int layer) {
    dspy_optimizer *o = ud;
    return dspy_dist_allreduce_side(o->dist, o->lrun[layer], o->lrun_n[layer], false,
                                    dspy_backend_native_stream(o->t->be));
}

/* Whether a step of npass passes on `world` ranks keeps its linear weight gradients in BF16
 * (backward.c's work.wgrad16): mixed precision without LoRA, one rank, ONE pass (its weight
 * GEMMs overwrite the gradients once, so nothing is ever accumulated in BF16: torch autocast's
 * per-pass gradient, rounded once), a backend that can write them so and update from them, and
 * DSPY_TRAIN_WGRAD16 not 0. Each such gradient then takes the first half of its F32 slot (2 bytes
 * less to write, sum and update per parameter). */
static bool wgrad16_step(const dspy_optimizer *o, size_t npass, int world) {
    const dspy_trainable *t = o->t;
    const char *env = getenv("DSPY_TRAIN_WGRAD16");
    return npass == 1 && world == 1 && t->bf16 && !t->lora_on && dspy_train_can_overwrite(t) &&
           o->g16_fits && !(env && strcmp(env, "0") == 0);
}

/* dspy_optimizer_local_grads; with `early`, the last pass reports each layer's finished
 * gradients to on_layer (a rank without a pass reports them all after zeroing them, so every
 * rank queues the same all-reduces in the same order). */
static dspy_status local_grads(dspy_optimizer *o, const dspy_train_seq *seqs, size_t k, int64_t N, int rank, int world,
                               bool early) {
    dspy_trainable *t = o->t;
    if (!t->mirrored) return dspy_fail(DSPY_ERR_STATE, "optimizer step: a share of a step needs a mirrored trainable");
    if (k > (size_t)INT32_MAX) return dspy_fail(DSPY_ERR_ARG, "optimizer step: %zu sequences", k);
    if (world < 1 || rank < 0 || rank >= world)
        return dspy_fail(DSPY_ERR_ARG, "optimizer step: rank %d of %d", rank, world);
    size_t n = 0;
    const dspy_train_seq *mine = NULL;
    DSPY_TRY(shard(o, seqs, k, rank, world, &mine, &n));

    const int32_t limit = dspy_train_group_tokens(t);
    int32_t maxT = 1;
    size_t npass = 0;
    for (size_t s = 0, e; s < n; s = e, npass++) {
        int32_t T = 0;
        e = limit > 0 ? group_end(mine, n, s, limit, &T) : s + 1;
        if (limit <= 0) T = mine[s].T;
        if (T > maxT) maxT = T;
    }
    o->g16 = wgrad16_step(o, npass, world);
    /* the step's staging and loss slots must exist before its first sequence */
    DSPY_TRY(dspy_train_work_reserve(t, maxT, (int)k));
    /* the first pass overwrites the weight gradients where it can: only the rest is zeroed (a
     * rank without a sequence this step has no first pass: it zeroes them all) */
    if (n > 0 && dspy_train_can_overwrite(t)) {
        DSPY_TRY(dspy_train_zero_uncovered(t));
        t->work.fresh = true;
        t->work.wgrad16 = o->g16;
    } else {
        DSPY_TRY(dspy_trainable_zero_grad(t));
    }
    /* the other ranks' loss slots hold zeros, so the sum over ranks is the step's */
    for (size_t s = 0; s < k && world > 1; s++)
        if (s % (size_t)world != (size_t)rank) DSPY_TRY(dspy_train_slot_clear(t, (int)s));
    float scale = (float)(1.0 / (double)N);
    /* LoRA dropout: sequence s of the step draws at base + s on whichever rank it lands (a pass
     * starts at its first sequence's state; its j-th sequence, every world-th of the step, at
     * j * world further), so the masks do not depend on the number of ranks; the step leaves
     * base + k, as k single passes would */
    const uint64_t base = dspy_trainable_rng_get(t);
    t->rng_stride = (uint64_t)world;
    for (size_t s = 0, e; s < n; s = e) {
        int32_t M = 0, T = 0;
        e = limit > 0 ? group_end(mine, n, s, limit, &T) : s + 1;
        dspy_train_seq g = mine[s];
        const size_t at = step_at(rank, world, s); /* its loss slot and RNG state */
        dspy_trainable_rng_set(t, base + at);
        if (early && e == n) t->work.layer_done = on_layer, t->work.layer_done_ud = o;
        dspy_status st;
        if (e > s + 1) {
            st = group_make(o, mine, s, e, T, &g);
            if (!st) st = dspy_train_group_run(t, &g, o->parts, (int)(e - s), true, scale, (int)at, &M);
        } else {
            st = dspy_train_seq_run(t, &g, true, scale, (int)at, &M);
        }
        t->work.layer_done = NULL;
        for (size_t i = s + 1; !st && i < e; i++) st = dspy_train_slot_clear(t, (int)step_at(rank, world, i));
        if (st) {
            t->work.fresh = t->work.wgrad16 = false;
            t->rng_stride = 1;
            return st;
        }
    }
    t->work.fresh = t->work.wgrad16 = false;
    t->rng_stride = 1;
    dspy_trainable_rng_set(t, base + k);
    for (int l = o->nlayers - 1; early && n == 0 && l >= 0; l--) DSPY_TRY(on_layer(o, l));
    return DSPY_OK;
}

dspy_status dspy_optimizer_local_grads(dspy_optimizer *o, const dspy_train_seq *seqs, size_t k, int64_t N, int rank,
                                       int world) {
    return local_grads(o, seqs, k, N, rank, world, false);
}

/* Sums the ranks' gradients and loss slots in place, all on the rank's side stream in the same
 * order on every rank (the layers' runs already queued by on_layer when overlapping), then makes
 * the compute stream wait for them: the norm, clipping and update see the whole step's sums on
 * every rank. The gradients not queued yet go as few large all-reduces: tensors that lie end to
 * end as one, at most BUCKET floats each. */
static dspy_status reduce_step(dspy_optimizer *o, size_t k) {
    enum { BUCKET = 1 << 26 };
    dspy_trainable *t = o->t;
    void *stream = dspy_backend_native_stream(t->be);
    float *run = NULL;
    size_t len = 0;
    for (size_t i = 0; i <= o->np; i++) {
        dspy_param *p = i < o->np ? dspy_trainable_param(t, i) : NULL;
        if (p && o->overlap && o->layer_of[i] >= 0) continue; /* queued by on_layer */
        if (p && run && p->dg == run + len && len + p->n <= BUCKET) {
            len += p->n;
            continue;
        }
        if (run) DSPY_TRY(dspy_dist_allreduce_side(o->dist, run, len, false, stream));
        run = p ? p->dg : NULL;
        len = p ? p->n : 0;
    }
    DSPY_TRY(dspy_dist_allreduce_side(o->dist, t->work.loss_dev, k, true, stream));
    return dspy_dist_join(o->dist, stream);
}

/* Whether parameter i's gradient is BF16 this step (a linear weight of a wgrad16 step). */
static bool g16_of(const dspy_optimizer *o, size_t i) { return o->g16 && o->lin[i]; }

/* n elements of parameter i's gradient from its start, as this step wrote them. */
static dspy_tensor grad_of(const dspy_optimizer *o, size_t i, int64_t n) {
    return dspy_bt(o->t->be, dspy_trainable_param(o->t, i)->dg, n, g16_of(o, i) ? DSPY_DTYPE_BF16 : DSPY_DTYPE_F32);
}

/* dspy_optimizer_train_step on a mirrored trainable: everything through the op table, one
 * read-back at the end (see the file comment). */
static dspy_status device_step(dspy_optimizer *o, const dspy_train_seq *seqs, size_t k, double lr,
                               double max_grad_norm, int64_t N, int64_t tokens, dspy_step_stats *stats) {
    dspy_trainable *t = o->t;
    dspy_backend *be = t->be;
    const dspy_ops *ops = be->ops;
    const int world = o->dist ? dspy_dist_world(o->dist) : 1;
    DSPY_TRY(local_grads(o, seqs, k, N, o->dist ? dspy_dist_rank(o->dist) : 0, world, world > 1 && o->overlap));
    if (world > 1) DSPY_TRY(reduce_step(o, k));
    dspy_tensor sq = dspy_bt(be, o->sumsq, (int64_t)(o->np ? o->np : 1), DSPY_DTYPE_F64);
    for (size_t i = 0; i < o->np; i++)
        DSPY_TRY(ops->grad_sumsq(be, sq, (int)i, grad_of(o, i, (int64_t)dspy_trainable_param(t, i)->n)));
    /* the constants of step steps + 1: decay for 2-D tensors, none for biases and norms */
    dspy_adamw_pack(o->hp_host, o->steps + 1, lr, o->h.beta1, o->h.beta2, o->h.eps, o->h.weight_decay, 1.0f);
    dspy_adamw_pack(o->hp_host + DSPY_ADAMW_WORDS, o->steps + 1, lr, o->h.beta1, o->h.beta2, o->h.eps, 0.0, 1.0f);
    DSPY_TRY(ops->copy(be, o->hp, o->hp_host, sizeof(float) * 2 * DSPY_ADAMW_WORDS, DSPY_COPY_H2D));
    dspy_tensor hp = dspy_bt(be, o->hp, 2 * DSPY_ADAMW_WORDS, DSPY_DTYPE_F32);
    DSPY_TRY(ops->clip_coef(be, hp, 2, dspy_bt(be, o->norm, 1, DSPY_DTYPE_F32), sq, (int)o->np,
                            dspy_bt(be, t->work.loss_dev, t->work.nslots, DSPY_DTYPE_F64), (int)k, max_grad_norm));
    /* mixed precision: the BF16 working copies follow the updated master (LoRA: the adapters'; the
     * base is frozen), written by the update itself where the backend can (adamw_bf16), else recast */
    const bool fused16 = t->bf16 && ops->adamw_bf16;
    /* one update per run of parameters that lie end to end in every array it touches (w, g, the
     * moments and, fused, w16) and share their constants: the update is element-wise, so a run
     * gives the same bits in fewer launches (the LoRA adapters are one run) */
    for (size_t i = 0, j; i < o->np; i = j) {
        dspy_param *p = dspy_trainable_param(t, i);
        uint16_t *w16 = fused16 ? dspy_train_param_w16(t, p) : NULL;
        size_t off = o->off[i], run = p->n;
        /* a BF16 gradient (the first half of its F32 slot) is not end to end with the next one */
        for (j = i + 1; j < o->np && !g16_of(o, i); j++) {
            dspy_param *q = dspy_trainable_param(t, j);
            uint16_t *q16 = fused16 ? dspy_train_param_w16(t, q) : NULL;
            if (q->dw != p->dw + run || q->dg != p->dg + run || o->off[j] != off + run || q->ndim != p->ndim ||
                (w16 ? q16 != w16 + run : q16 != NULL) || g16_of(o, j))
                break;
            run += q->n;
        }
        int64_t n = (int64_t)run;
        dspy_tensor w = dspy_bt(be, p->dw, n, DSPY_DTYPE_F32), g = grad_of(o, i, n);
        dspy_tensor m = dspy_bt(be, o->dblock + off, n, DSPY_DTYPE_F32);
        dspy_tensor v = dspy_bt(be, o->dblock + o->total + off, n, DSPY_DTYPE_F32);
        dspy_tensor h = dspy_tensor_slice(hp, p->ndim == 2 ? 0 : DSPY_ADAMW_WORDS, DSPY_ADAMW_WORDS);
        if (w16) DSPY_TRY(ops->adamw_bf16(be, w, g, m, v, h, dspy_bt(be, w16, n, DSPY_DTYPE_BF16)));
        else DSPY_TRY(ops->adamw(be, w, g, m, v, h));
    }
    if (t->bf16 && !fused16) DSPY_TRY(dspy_train_refresh_bf16(t));
    /* the step's one wait: its loss sums and the norm */
    float *norm_host = o->hp_host + 2 * DSPY_ADAMW_WORDS;
    DSPY_TRY(ops->copy(be, t->work.loss_host, t->work.loss_dev, sizeof(double) * k, DSPY_COPY_D2H));
    DSPY_TRY(ops->copy(be, norm_host, o->norm, sizeof(float), DSPY_COPY_D2H));
    DSPY_TRY(ops->sync(be));
    double loss_sum = 0;
    for (size_t s = 0; s < k; s++) loss_sum += t->work.loss_host[s];
    double loss = loss_sum / (double)N;
    float norm = *norm_host;
    if (!isfinite(loss) || !isfinite(norm))
        return dspy_fail(DSPY_ERR_BACKEND,
                         "optimizer step %lld: the loss (%g) or the gradient norm (%g) is not finite; the "
                         "weights were not updated (lower learning_rate or check the data)",
                         (long long)o->steps + 1, loss, (double)norm);
    o->steps++;
    if (stats) *stats = (dspy_step_stats){loss, norm, N, tokens};
    return DSPY_OK;
}

dspy_status dspy_optimizer_train_step(dspy_optimizer *o, const dspy_train_seq *seqs, size_t k, double lr,
                                      double max_grad_norm, dspy_step_stats *stats) {
    int64_t N = 0, tokens = 0;
    for (size_t s = 0; s < k; s++) {
        tokens += seqs[s].T;
        for (int32_t t = 0; t < seqs[s].T; t++) N += seqs[s].labels[t] != -100;
    }
    if (N == 0) return dspy_fail(DSPY_ERR_ARG, "optimizer step: the batch has no labelled token");
    if (o->t->mirrored) return device_step(o, seqs, k, lr, max_grad_norm, N, tokens, stats);
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
