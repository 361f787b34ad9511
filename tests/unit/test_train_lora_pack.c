/* test_train_lora_pack.c — LoRA dropout in a packed pass (train/trainable_impl.h
 * dspy_train_group_run) on the CPU reference trainer.
 *
 * Two sequences (23 and 17 tokens) of the tiny fixture Llama with LoRA r 4, alpha 8, dropout 0.3
 * and non-zero B (so the dropout masks change the loss): run one after the other
 * (dspy_train_seq_run, RNG states 0 and 1) and as one packed pass of both with their boundaries
 * (dspy_train_group_run, parts {0, 23, 40}) on twin trainables. The packed pass must give the
 * same loss sum (1e-6 relative: the same terms, summed in one pass) and the same adapter
 * gradients (1e-5 relative: the weight-gradient products sum the rows in another grouping), and
 * both advance the RNG by 2. A third twin runs the packed sequence as ONE part (one mask over
 * all 40 rows): its gradients must differ (> 1e-3), so the comparison above can fail. Bad
 * boundaries are refused. With rng_stride k (a data-parallel rank's pass), sequence j draws at
 * rng + j k.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/model.h"
#include "train/trainable_impl.h"

enum { T1 = 23, T2 = 17, TT = T1 + T2 };

static dspy_model *g_model;
static int32_t g_ids[TT], g_labels[TT], g_seg[TT];

/* A LoRA trainable with B drawn from a fixed stream (the same for every twin). */
static dspy_trainable *make(void) {
    dspy_lora_config lc = {4, 8.0f, 0.3f, true};
    dspy_trainable *t = NULL;
    CHECK_OK(dspy_trainable_new(g_model, &lc, 7, &t));
    if (!t) return NULL;
    uint64_t s = 0x2545f4914f6cdd1dull;
    for (size_t i = 0; i < dspy_trainable_nparams(t); i++) {
        dspy_param *p = dspy_trainable_param(t, i);
        if (!strstr(p->name, "lora_B")) continue;
        for (size_t j = 0; j < p->n; j++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            p->w[j] = (float)((double)(s >> 11) * 0x1.0p-53 - 0.5) * 0.2f;
        }
    }
    return t;
}

/* Relative max |a - b| / max |b| over every adapter gradient of two trainables. */
static double grad_dist(dspy_trainable *a, dspy_trainable *b) {
    double d = 0, m = 0;
    for (size_t i = 0; i < dspy_trainable_nparams(a); i++) {
        dspy_param *pa = dspy_trainable_param(a, i), *pb = dspy_trainable_param(b, i);
        for (size_t j = 0; j < pa->n; j++) {
            double e = fabs((double)pa->g[j] - (double)pb->g[j]);
            d = isnan(e) ? INFINITY : fmax(d, e);
            m = fmax(m, fabs((double)pb->g[j]));
        }
    }
    return d / (m > 0 ? m : 1);
}

static double loss_of(dspy_trainable *t) { return t->work.loss_dev[0]; }

static void test_packed_masks(void) {
    dspy_trainable *a = make(), *b = make(), *c = make();
    if (!a || !b || !c) goto done;
    int32_t M = 0;
    dspy_train_seq s1 = {g_ids, NULL, g_labels, NULL, T1, 0}, s2 = {g_ids + T1, NULL, g_labels + T1, NULL, T2, 0};
    dspy_train_seq both = {g_ids, NULL, g_labels, g_seg, TT, 0};
    CHECK_OK(dspy_train_seq_run(a, &s1, true, 1.0f, 0, &M));
    double l1 = loss_of(a);
    CHECK_OK(dspy_train_seq_run(a, &s2, true, 1.0f, 0, &M));
    double l2 = loss_of(a);
    const int32_t parts[3] = {0, T1, TT}, one[2] = {0, TT};
    CHECK_OK(dspy_train_group_run(b, &both, parts, 2, true, 1.0f, 0, &M));
    double l12 = loss_of(b);
    CHECK_INT(M, TT - 2);
    CHECK(fabs(l12 - (l1 + l2)) <= 1e-6 * fabs(l1 + l2));
    double g = grad_dist(b, a);
    CHECK(g <= 1e-5);
    CHECK_INT(dspy_trainable_rng_get(a), 2);
    CHECK_INT(dspy_trainable_rng_get(b), 2);
    CHECK_OK(dspy_train_group_run(c, &both, one, 1, true, 1.0f, 0, &M));
    double gc = grad_dist(c, a);
    CHECK(gc > 1e-3);
    CHECK_INT(dspy_trainable_rng_get(c), 1);
    printf("  losses %.6f + %.6f vs packed %.6f; gradients packed %.2e, one mask over both %.2e\n", l1, l2, l12, g, gc);
    /* boundaries that do not cover the pass, or an empty part */
    const int32_t short_[2] = {0, T1}, empty[3] = {0, 0, TT};
    CHECK_STATUS(dspy_train_group_run(c, &both, short_, 1, true, 1.0f, 0, &M), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "must cover the pass");
    CHECK_STATUS(dspy_train_group_run(c, &both, empty, 2, true, 1.0f, 0, &M), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "at least one token");
    CHECK_INT(dspy_trainable_rng_get(c), 1);
done:
    dspy_trainable_free(a);
    dspy_trainable_free(b);
    dspy_trainable_free(c);
}

/* A data-parallel rank's pass holds every world-th sequence of a step: with rng_stride 3, the
 * packed pass's second sequence draws at rng + 3, as it would alone at that state. */
static void test_stride(void) {
    dspy_trainable *a = make(), *b = make();
    if (!a || !b) goto done;
    int32_t M = 0;
    dspy_train_seq s1 = {g_ids, NULL, g_labels, NULL, T1, 0}, s2 = {g_ids + T1, NULL, g_labels + T1, NULL, T2, 0};
    dspy_train_seq both = {g_ids, NULL, g_labels, g_seg, TT, 0};
    dspy_trainable_rng_set(a, 5);
    CHECK_OK(dspy_train_seq_run(a, &s1, true, 1.0f, 0, &M));
    dspy_trainable_rng_set(a, 8);
    CHECK_OK(dspy_train_seq_run(a, &s2, true, 1.0f, 0, &M));
    const int32_t parts[3] = {0, T1, TT};
    dspy_trainable_rng_set(b, 5);
    b->rng_stride = 3;
    CHECK_OK(dspy_train_group_run(b, &both, parts, 2, true, 1.0f, 0, &M));
    b->rng_stride = 1;
    double g = grad_dist(b, a);
    CHECK(g <= 1e-5);
    printf("  rng stride 3: packed vs alone at states 5 and 8: gradients %.2e\n", g);
done:
    dspy_trainable_free(a);
    dspy_trainable_free(b);
}

int main(void) {
    CHECK_OK(dspy_model_load(test_source("tests/ref/models/llama_tied_gqa"), NULL, &g_model));
    if (!g_model) return check_summary("test_train_lora_pack");
    int32_t V = dspy_model_config_get(g_model)->vocab_size;
    uint64_t s = 99;
    for (int i = 0; i < TT; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        g_ids[i] = (int32_t)(s % (uint64_t)V);
        g_seg[i] = i < T1 ? 0 : 1;
    }
    /* shifted labels within each sequence; the last token of each has none */
    for (int i = 0; i < TT; i++) g_labels[i] = i == T1 - 1 || i == TT - 1 ? -100 : g_ids[i + 1];
    RUN(test_packed_masks);
    RUN(test_stride);
    dspy_model_free(g_model);
    return check_summary("test_train_lora_pack");
}
