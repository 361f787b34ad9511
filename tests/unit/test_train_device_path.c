/* test_train_device_path.c — the trainer's device code path, run on the CPU backend, against
 * the plain CPU trainer: bit for bit.
 *
 * A mirrored trainable (dspy_trainable_new_on(cpu, mirrored)) does everything a CUDA trainable
 * does — blocks through ops->alloc with host mirrors, staged I32 inputs, per-slot loss sums
 * reduced by the sum_rows op, the optimizer step through zero-fill, grad_sumsq, clip_coef and
 * the fused adamw op with its constants in backend memory, one read-back per step, checkpoints
 * and export through the mirrors — only on host memory. Because the CPU ops reproduce the host
 * code's orders and roundings, every loss, gradient norm, weight, moment, resumed run and
 * exported tensor must equal the plain trainer's exactly (tolerance 0; train_pair.h). Cases:
 * full fine-tuning with the fixture's clipping and weight decay, full fine-tuning with a
 * max_grad_norm small enough that every step clips, LoRA with dropout (the dropout keys, the
 * staged RNG state through a checkpoint, the merge on export).
 *
 * Also the new ops' CPU reference on their own: grad_sumsq in train/optim.c's chunk order
 * (more than one chunk), sum_rows in index order, clip_coef's norm, coefficient and its NaN
 * "skip" that adamw obeys (a non-finite norm or loss leaves w, m, v as they were), argument
 * errors.
 */
#include "train_pair.h"

#include "kern/backend.h"
#include "train/trainable_impl.h"

static const pair_tol k_exact = {0, 0, 0, 0};

static void test_full(void) {
    pair_case c = {"full", false, 0.0f, 0.0, 0.01, false};
    pair_run(&c, (dspy_device){DSPY_DEVICE_CPU, 0}, true, &k_exact);
}

static void test_full_clipped(void) {
    pair_case c = {"full-clipped", false, 0.0f, 1e-3, 0.0, false};
    pair_run(&c, (dspy_device){DSPY_DEVICE_CPU, 0}, true, &k_exact);
}

static void test_lora_dropout(void) {
    pair_case c = {"lora-dropout", true, 0.1f, 0.0, 0.01, false};
    pair_run(&c, (dspy_device){DSPY_DEVICE_CPU, 0}, true, &k_exact);
}

/* The plain trainer's public single-sequence entries on a mirrored trainable. */
static void test_step_api(void) {
    if (!g_pair_model) return;
    dspy_trainable *a = NULL, *b = NULL;
    CHECK_OK(dspy_trainable_new(g_pair_model, NULL, 3, &a));
    CHECK_OK(dspy_trainable_new_on(g_pair_model, NULL, 3, (dspy_device){DSPY_DEVICE_CPU, 0}, true, &b));
    if (a && b) {
        dspy_train_seq batch[8];
        int32_t *bufs[8][4];
        size_t nb = pair_batch(0, batch, bufs);
        double la = 0, lb = 0;
        int64_t na = 0, nb_ = 0;
        CHECK_OK(dspy_trainable_loss(a, &batch[0], &la, &na));
        CHECK_OK(dspy_trainable_loss(b, &batch[0], &lb, &nb_));
        CHECK(la == lb && la > 0);
        CHECK_INT(na, nb_);
        CHECK_OK(dspy_trainable_step(a, &batch[0], 0.5f, &la, &na));
        CHECK_OK(dspy_trainable_step(b, &batch[0], 0.5f, &lb, &nb_));
        CHECK(la == lb);
        CHECK_OK(dspy_trainable_to_host(b));
        bool same = true;
        for (size_t i = 0; i < dspy_trainable_nparams(a); i++) {
            dspy_param *pa = dspy_trainable_param(a, i), *pb = dspy_trainable_param(b, i);
            same = same && memcmp(pa->g, pb->g, pa->n * sizeof(float)) == 0;
        }
        CHECK(same);
        /* a sequence without labels: zero loss, gradients untouched */
        int32_t ids[3] = {1, 2, 3}, labels[3] = {-100, -100, -100};
        dspy_train_seq none = {ids, NULL, labels, NULL, 3, 0};
        CHECK_OK(dspy_trainable_step(b, &none, 1.0f, &lb, &nb_));
        CHECK(lb == 0 && nb_ == 0);
        CHECK_OK(dspy_trainable_plan(b, 300, 4));
        CHECK_STATUS(dspy_trainable_plan(b, 0, 4), DSPY_ERR_ARG);
        pair_batch_free(nb, bufs);
    }
    dspy_trainable_free(a);
    dspy_trainable_free(b);
}

/* Data parallel: the ranks' shares of a step (dspy_optimizer_local_grads, sequence s on rank
 * s % world) add up to the whole step's gradients and per-sequence loss sums, for 2 and 3 ranks
 * and for more ranks than sequences (a rank without a sequence holds zeros). The sums over ranks
 * add the same F32 terms in another order: relative 1e-5 of each tensor's largest value. With
 * LoRA dropout the masks must be the same on whichever rank a sequence lands, and the step
 * leaves the dropout RNG where the whole step leaves it. */
static void shard_case(bool lora) {
    pair_case c = {lora ? "lora-dropout-shard" : "full-shard", lora, lora ? 0.1f : 0.0f, 0.0, 0.0, false};
    dspy_trainable *t = NULL;
    dspy_optimizer *o = NULL;
    dspy_train_seq batch[8];
    int32_t *bufs[8][4];
    size_t nb = 0;
    double *want = NULL, *got = NULL;
    if (!pair_make(&c, (dspy_device){DSPY_DEVICE_CPU, 0}, true, &t, &o)) goto done;
    nb = pair_batch(1, batch, bufs);
    CHECK(nb >= 2);
    int64_t N = 0;
    for (size_t s = 0; s < nb; s++)
        for (int32_t j = 0; j < batch[s].T; j++) N += batch[s].labels[j] != -100;
    size_t total = 0, np = dspy_trainable_nparams(t);
    for (size_t i = 0; i < np; i++) total += dspy_trainable_param(t, i)->n;
    want = calloc(total + nb, sizeof *want);
    got = calloc(total + nb, sizeof *got);
    if (!want || !got) goto done;
    const uint64_t rng0 = dspy_trainable_rng_get(t);
    /* rank 0 of 1: the whole step */
    CHECK_OK(dspy_optimizer_local_grads(o, batch, nb, N, 0, 1));
    CHECK(dspy_trainable_rng_get(t) == rng0 + nb);
    CHECK_OK(dspy_trainable_to_host(t));
    for (size_t i = 0, at = 0; i < np; at += dspy_trainable_param(t, i)->n, i++)
        for (size_t j = 0; j < dspy_trainable_param(t, i)->n; j++) want[at + j] = dspy_trainable_param(t, i)->g[j];
    CHECK_OK(t->be->ops->copy(t->be, t->work.loss_host, t->work.loss_dev, sizeof(double) * nb, DSPY_COPY_D2H));
    for (size_t s = 0; s < nb; s++) want[total + s] = t->work.loss_host[s];
    const int worlds[3] = {2, 3, (int)nb + 1};
    for (int w = 0; w < 3; w++) {
        memset(got, 0, sizeof *got * (total + nb));
        int idle = 0;
        for (int r = 0; r < worlds[w]; r++) {
            dspy_trainable_rng_set(t, rng0);
            CHECK_OK(dspy_optimizer_local_grads(o, batch, nb, N, r, worlds[w]));
            CHECK(dspy_trainable_rng_get(t) == rng0 + nb);
            CHECK_OK(dspy_trainable_to_host(t));
            double rank_abs = 0;
            for (size_t i = 0, at = 0; i < np; at += dspy_trainable_param(t, i)->n, i++)
                for (size_t j = 0; j < dspy_trainable_param(t, i)->n; j++) {
                    got[at + j] += dspy_trainable_param(t, i)->g[j];
                    rank_abs += fabs(dspy_trainable_param(t, i)->g[j]);
                }
            CHECK_OK(t->be->ops->copy(t->be, t->work.loss_host, t->work.loss_dev, sizeof(double) * nb, DSPY_COPY_D2H));
            for (size_t s = 0; s < nb; s++) {
                bool mine = s % (size_t)worlds[w] == (size_t)r;
                CHECK(mine ? t->work.loss_host[s] > 0 : t->work.loss_host[s] == 0);
                got[total + s] += t->work.loss_host[s];
            }
            if ((size_t)r >= nb) { /* no sequence on this rank: every gradient zero */
                CHECK(rank_abs == 0);
                idle++;
            }
        }
        CHECK_INT(idle, worlds[w] > (int)nb ? worlds[w] - (int)nb : 0);
        double worst = 0;
        for (size_t i = 0, at = 0; i < np; at += dspy_trainable_param(t, i)->n, i++) {
            size_t n = dspy_trainable_param(t, i)->n;
            double top = 1e-30, diff = 0;
            for (size_t j = 0; j < n; j++) {
                top = fmax(top, fabs(want[at + j]));
                diff = fmax(diff, fabs(got[at + j] - want[at + j]));
            }
            worst = fmax(worst, diff / top);
        }
        for (size_t s = 0; s < nb; s++) worst = fmax(worst, fabs(got[total + s] - want[total + s]) / want[total + s]);
        if (worst > 1e-5) fprintf(stderr, "  %s, %d ranks: relative difference %.3g\n", c.name, worlds[w], worst);
        CHECK(worst <= 1e-5);
    }
    CHECK_STATUS(dspy_optimizer_local_grads(o, batch, nb, N, 2, 2), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_optimizer_local_grads(o, batch, nb, N, -1, 2), DSPY_ERR_ARG);
done:
    if (nb) pair_batch_free(nb, bufs);
    free(want);
    free(got);
    dspy_optimizer_free(o);
    dspy_trainable_free(t);
}

static void test_shard_full(void) { shard_case(false); }
static void test_shard_lora(void) { shard_case(true); }

/* The overlap of the gradients' all-reduce with the backward rests on two things, checked here:
 * backward.c reports layer l (work.layer_done) only once every weight gradient of layer l is
 * final for the pass (a copy taken at the report equals the gradients after the pass), layers
 * last to first, each once; and the optimizer's run of layer l (dspy_optimizer_layer_run) holds
 * exactly the gradients of the parameters named "layers.l." and nothing else (full fine-tuning
 * and LoRA, whose adapter gradients lie in one block in parameter order). */
typedef struct layer_snap {
    dspy_trainable *t;
    float **copy; /* (nparams) the layer's gradients at the report, others NULL */
    int order[64], n;
} layer_snap;

static int layer_of(const char *name) {
    const char *at = strstr(name, "layers.");
    return at ? atoi(at + 7) : -1;
}

static dspy_status snap_layer(void *ud, int layer) {
    layer_snap *s = ud;
    if (s->n < 64) s->order[s->n++] = layer;
    for (size_t i = 0; i < dspy_trainable_nparams(s->t); i++) {
        dspy_param *p = dspy_trainable_param(s->t, i);
        if (layer_of(p->name) != layer) continue;
        s->copy[i] = malloc(p->n * sizeof(float));
        if (s->copy[i]) memcpy(s->copy[i], p->dg, p->n * sizeof(float)); /* CPU backend: host memory */
    }
    return DSPY_OK;
}

static void overlap_case(bool lora) {
    pair_case c = {lora ? "lora-overlap" : "full-overlap", lora, 0.0f, 0.0, 0.0, false};
    dspy_trainable *t = NULL;
    dspy_optimizer *o = NULL;
    if (!pair_make(&c, (dspy_device){DSPY_DEVICE_CPU, 0}, true, &t, &o)) goto done;
    const size_t np = dspy_trainable_nparams(t);
    const int L = t->cfg.num_hidden_layers;
    layer_snap snap = {.t = t, .copy = calloc(np, sizeof(float *))};
    dspy_train_seq batch[8];
    int32_t *bufs[8][4];
    size_t nb = pair_batch(1, batch, bufs);
    double ls = 0;
    int64_t nl = 0;
    CHECK_OK(dspy_trainable_zero_grad(t));
    t->work.layer_done = snap_layer, t->work.layer_done_ud = &snap;
    CHECK_OK(dspy_trainable_step(t, &batch[0], 0.25f, &ls, &nl));
    t->work.layer_done = NULL;
    CHECK_INT(snap.n, L);
    for (int i = 0; i < snap.n && i < L; i++) CHECK_INT(snap.order[i], L - 1 - i);
    int compared = 0;
    for (size_t i = 0; i < np; i++) {
        dspy_param *p = dspy_trainable_param(t, i);
        if (layer_of(p->name) < 0) continue;
        CHECK(snap.copy[i] != NULL);
        if (snap.copy[i]) CHECK(memcmp(snap.copy[i], p->dg, p->n * sizeof(float)) == 0), compared++;
        free(snap.copy[i]);
    }
    CHECK(compared > 0);
    free(snap.copy);
    pair_batch_free(nb, bufs);
    /* the runs: each layer's tensors end to end, and only them (LoRA: its adapters' gradients) */
    for (int l = 0; l < L; l++) {
        float *run = NULL;
        size_t n = dspy_optimizer_layer_run(o, l, &run), inside = 0;
        CHECK(run != NULL && n > 0);
        if (!run) continue;
        for (size_t i = 0; i < np; i++) {
            dspy_param *p = dspy_trainable_param(t, i);
            bool in = p->dg >= run && p->dg + p->n <= run + n, touches = p->dg < run + n && p->dg + p->n > run;
            CHECK(layer_of(p->name) == l ? in : !touches);
            if (in) inside += p->n;
        }
        CHECK(inside == n);
    }
    float *none = NULL;
    CHECK(dspy_optimizer_layer_run(o, L, &none) == 0 && none == NULL);
done:
    dspy_optimizer_free(o);
    dspy_trainable_free(t);
}

static void test_overlap_full(void) { overlap_case(false); }
static void test_overlap_lora(void) { overlap_case(true); }

/* Only a mirrored trainable's step can be shared out. */
static void test_shard_plain(void) {
    if (!g_pair_model) return;
    pair_case c = {"plain", false, 0.0f, 0.0, 0.0, false};
    dspy_trainable *t = NULL;
    dspy_optimizer *o = NULL;
    if (pair_make(&c, (dspy_device){DSPY_DEVICE_CPU, 0}, false, &t, &o)) {
        dspy_train_seq batch[8];
        int32_t *bufs[8][4];
        size_t nb = pair_batch(0, batch, bufs);
        CHECK_STATUS(dspy_optimizer_local_grads(o, batch, nb, 10, 0, 2), DSPY_ERR_STATE);
        pair_batch_free(nb, bufs);
    }
    dspy_optimizer_free(o);
    dspy_trainable_free(t);
}

static uint64_t g_rng = 0x1234567;
static float frand(void) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

static void test_reduce_ops(void) {
    dspy_backend *be = NULL;
    CHECK_OK(dspy_backend_new((dspy_device){DSPY_DEVICE_CPU, 0}, NULL, &be));
    if (!be) return;
    const dspy_ops *o = be->ops;
    enum { N = 3 * DSPY_SUMSQ_CHUNK + 123 }; /* four chunks, the last partial */
    float *x = malloc(N * sizeof *x);
    for (int i = 0; i < N; i++) x[i] = frand();
    double out[3] = {-1, -1, -1};
    dspy_tensor tout = dspy_bt(be, out, 3, DSPY_DTYPE_F64), tx = dspy_bt(be, x, N, DSPY_DTYPE_F32);
    CHECK_OK(o->grad_sumsq(be, tout, 1, tx));
    double want = 0;
    for (int c = 0; c < 4; c++) {
        double s = 0;
        for (int i = c * DSPY_SUMSQ_CHUNK; i < N && i < (c + 1) * DSPY_SUMSQ_CHUNK; i++) s += (double)x[i] * x[i];
        want += s;
    }
    CHECK(out[1] == want);
    CHECK(out[0] == -1 && out[2] == -1);
    CHECK_OK(o->sum_rows(be, tout, 2, dspy_tensor_slice(tx, 0, 1000)));
    want = 0;
    for (int i = 0; i < 1000; i++) want += x[i];
    CHECK(out[2] == want);
    CHECK_OK(o->sum_rows(be, tout, 0, dspy_tensor_slice(tx, 0, 0)));
    CHECK(out[0] == 0);
    CHECK_STATUS(o->sum_rows(be, tout, 3, tx), DSPY_ERR_ARG);
    CHECK_STATUS(o->grad_sumsq(be, tout, -1, tx), DSPY_ERR_ARG);
    CHECK_STATUS(o->grad_sumsq(be, tx, 0, tx), DSPY_ERR_ARG); /* out must be F64 */

    /* clip_coef: two tensors with sums of squares 9 and 16 -> norm 5 */
    float hp[2 * DSPY_ADAMW_WORDS], norm = 0;
    for (int r = 0; r < 2; r++) dspy_adamw_pack(hp + r * DSPY_ADAMW_WORDS, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, 7.0f);
    double sq[2] = {9, 16}, loss[2] = {1.5, 2.5};
    dspy_tensor thp = dspy_bt(be, hp, 2 * DSPY_ADAMW_WORDS, DSPY_DTYPE_F32), tn = dspy_bt(be, &norm, 1, DSPY_DTYPE_F32);
    dspy_tensor tsq = dspy_bt(be, sq, 2, DSPY_DTYPE_F64), tl = dspy_bt(be, loss, 2, DSPY_DTYPE_F64);
    CHECK_OK(o->clip_coef(be, thp, 2, tn, tsq, 2, tl, 2, 1.0));
    CHECK(norm == 5.0f);
    CHECK(hp[DSPY_ADAMW_GSCALE] == 1.0f / (5.0f + 1e-6f));
    CHECK(hp[DSPY_ADAMW_WORDS + DSPY_ADAMW_GSCALE] == hp[DSPY_ADAMW_GSCALE]);
    CHECK_OK(o->clip_coef(be, thp, 2, tn, tsq, 2, tl, 2, 10.0)); /* under the limit: 1 */
    CHECK(hp[DSPY_ADAMW_GSCALE] == 1.0f);
    CHECK_OK(o->clip_coef(be, thp, 1, tn, tsq, 2, tl, 0, 0.0)); /* no clipping asked */
    CHECK(hp[DSPY_ADAMW_GSCALE] == 1.0f);
    /* a non-finite loss: NaN coefficient, and adamw leaves everything as it was */
    loss[1] = INFINITY;
    CHECK_OK(o->clip_coef(be, thp, 2, tn, tsq, 2, tl, 2, 1.0));
    CHECK(isnan(hp[DSPY_ADAMW_GSCALE]) && isnan(hp[DSPY_ADAMW_WORDS + DSPY_ADAMW_GSCALE]));
    float w[4] = {1, 2, 3, 4}, g[4] = {1, 1, 1, 1}, m[4] = {0}, v[4] = {0};
    float w0[4], m0[4], v0[4];
    memcpy(w0, w, sizeof w), memcpy(m0, m, sizeof m), memcpy(v0, v, sizeof v);
#define T4(p) dspy_bt(be, (p), 4, DSPY_DTYPE_F32)
    CHECK_OK(o->adamw(be, T4(w), T4(g), T4(m), T4(v), dspy_tensor_slice(thp, 0, DSPY_ADAMW_WORDS)));
    CHECK(memcmp(w, w0, sizeof w) == 0 && memcmp(m, m0, sizeof m) == 0 && memcmp(v, v0, sizeof v) == 0);
    /* a non-finite norm does the same; a finite one updates */
    loss[1] = 2.5;
    sq[0] = NAN;
    CHECK_OK(o->clip_coef(be, thp, 2, tn, tsq, 2, tl, 2, 1.0));
    CHECK(isnan(norm) && isnan(hp[DSPY_ADAMW_GSCALE]));
    sq[0] = 9;
    CHECK_OK(o->clip_coef(be, thp, 2, tn, tsq, 2, tl, 2, 1.0));
    CHECK_OK(o->adamw(be, T4(w), T4(g), T4(m), T4(v), dspy_tensor_slice(thp, 0, DSPY_ADAMW_WORDS)));
    CHECK(w[0] != w0[0] && m[0] != 0 && v[0] != 0);
#undef T4
    CHECK_STATUS(o->clip_coef(be, thp, 3, tn, tsq, 2, tl, 2, 1.0), DSPY_ERR_ARG); /* hp too small */
    CHECK_STATUS(o->clip_coef(be, thp, 2, tn, tsq, 3, tl, 2, 1.0), DSPY_ERR_ARG); /* sumsq too small */
    free(x);
    dspy_backend_free(be);
}

int main(void) {
    check_current = "setup";
    bool have = pair_setup();
    if (have) {
        RUN(test_full);
        RUN(test_full_clipped);
        RUN(test_lora_dropout);
        RUN(test_step_api);
        RUN(test_shard_full);
        RUN(test_shard_lora);
        RUN(test_shard_plain);
        RUN(test_overlap_full);
        RUN(test_overlap_lora);
    }
    RUN(test_reduce_ops);
    pair_teardown();
    return check_summary("test_train_device_path");
}
