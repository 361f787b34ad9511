/* test_train_share.c — prefix-shared optimizer steps (train/share_prefix.h) on the CPU reference
 * trainer, tests/ref/models/llama_tied_gqa (4 heads over 2 KV heads, 2 layers, tied embeddings).
 *
 * The step: 4 examples that begin with the same 80-token "system prompt", then continuations of
 * 1 to 40 tokens with labels on their last tokens (one labelled right after the prefix), in 3
 * sequences (one of them two examples packed). Checked:
 *   - the layout: the common prefix found (80, or shorter when a label or a differing token
 *     comes first), one prefix + the continuations with seg 0, 1, ... and positions going on from
 *     the prefix, several sequences when max_T is short, and the step run as given when nothing
 *     worth sharing is there (prefix below the minimum, one example, different prompts,
 *     positions that do not restart per example, a sequence already shared);
 *   - one forward + backward: the shared step's summed loss and labelled count equal the
 *     unshared step's (loss 1e-6 relative) and every gradient tensor too (max |diff| over the
 *     tensor <= 1e-5 of its max |g|: F32 summation order only);
 *   - 5 optimizer steps (AdamW lr 1e-3, clipping 1.0) with and without sharing: per-step loss
 *     and gradient norm within 1e-5 relative (measured ~1e-7), final weights within 1e-4 of the
 *     largest weight of each tensor (measured ~9e-6: AdamW divides by sqrt(v), so an element
 *     whose gradient is near zero turns a rounding difference into a step of up to lr);
 *   - errors: the share_prefix train_kwarg takes booleans only (default true), a sequence whose
 *     prefix is not its first example is refused.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/model.h"
#include "dspy/train.h"
#include "train/backward.h"
#include "train/optim.h"
#include "train/share_prefix.h"
#include "share_step.h"

static dspy_model *g_model;

static void test_layout(void) {
    ss_step s;
    ss_make_step(&s);
    dspy_share_buf b = {0};
    const dspy_train_seq *out = NULL;
    size_t n = 0;
    int32_t P = -1;
    CHECK_OK(dspy_share_prefix(&b, s.seq, 3, SS_MAXT, DSPY_SHARE_MIN_PREFIX, &out, &n, &P));
    CHECK_INT(P, SS_P0);
    CHECK_INT(n, 1);
    if (n == 1 && P == SS_P0) {
        const dspy_train_seq *o = &out[0];
        int want_T = SS_P0;
        for (int e = 0; e < SS_NEX; e++) want_T += ss_cont[e];
        CHECK_INT(o->T, want_T);
        CHECK_INT(o->prefix, SS_P0);
        bool same = memcmp(o->ids, ss_ids[0], sizeof(int32_t) * SS_P0) == 0;
        for (int t = 0; t < SS_P0; t++) same &= o->pos[t] == t && o->labels[t] == -100 && o->seg[t] == 0;
        for (int e = 0, t = SS_P0; e < SS_NEX; e++)
            for (int i = SS_P0; i < ss_n[e]; i++, t++)
                same &= o->ids[t] == ss_ids[e][i] && o->labels[t] == ss_lab[e][i] && o->pos[t] == i && o->seg[t] == e + 1;
        CHECK(same);
    }
    /* a short max_T: the continuations spread over sequences, each with its own prefix */
    CHECK_OK(dspy_share_prefix(&b, s.seq, 3, SS_P0 + 35, DSPY_SHARE_MIN_PREFIX, &out, &n, &P));
    CHECK_INT(P, SS_P0);
    CHECK_INT(n, 3); /* [20 12] [31] [7] */
    if (n == 3) CHECK(out[0].T == SS_P0 + 32 && out[1].T == SS_P0 + 31 && out[2].T == SS_P0 + 7 && out[2].seg[SS_P0] == 1);
    /* a label inside the common prompt cuts the prefix before it */
    s.lab[2][70] = 5; /* example 3 (sequence 2 alone) */
    CHECK_OK(dspy_share_prefix(&b, s.seq, 3, SS_MAXT, DSPY_SHARE_MIN_PREFIX, &out, &n, &P));
    CHECK_INT(P, 70);
    s.lab[2][70] = -100;
    /* a differing token at 66: 66 tokens shared; at 40: below the minimum, run as given */
    s.ids[1][SS_P0 + 12 + 66] = (s.ids[1][SS_P0 + 12 + 66] + 1) % SS_V;
    CHECK_OK(dspy_share_prefix(&b, s.seq, 3, SS_MAXT, DSPY_SHARE_MIN_PREFIX, &out, &n, &P));
    CHECK_INT(P, 66);
    s.ids[1][SS_P0 + 12 + 40] = (s.ids[1][SS_P0 + 12 + 40] + 1) % SS_V;
    CHECK_OK(dspy_share_prefix(&b, s.seq, 3, SS_MAXT, DSPY_SHARE_MIN_PREFIX, &out, &n, &P));
    CHECK(P == 0 && out == s.seq && n == 3);
    ss_make_step(&s);
    /* sequences without seg and pos (one example each, positions from 0): examples 0 and 3 */
    dspy_train_seq plain[2] = {s.seq[0], s.seq[2]};
    for (int i = 0; i < 2; i++) plain[i].seg = NULL, plain[i].pos = NULL;
    CHECK_OK(dspy_share_prefix(&b, plain, 2, SS_MAXT, DSPY_SHARE_MIN_PREFIX, &out, &n, &P));
    CHECK(P == SS_P0 && n == 1 && out[0].T == SS_P0 + ss_cont[0] + ss_cont[3]);
    /* one example alone: nothing to share */
    CHECK_OK(dspy_share_prefix(&b, s.seq, 1, SS_MAXT, DSPY_SHARE_MIN_PREFIX, &out, &n, &P));
    CHECK(P == 0 && out == s.seq && n == 1);
    /* positions that do not restart per example */
    s.pos[0][3] = 7;
    CHECK_OK(dspy_share_prefix(&b, s.seq, 3, SS_MAXT, DSPY_SHARE_MIN_PREFIX, &out, &n, &P));
    CHECK(P == 0 && out == s.seq);
    s.pos[0][3] = 3;
    /* a sequence already laid out with a prefix is not laid out again */
    const dspy_train_seq *shared = NULL;
    CHECK_OK(dspy_share_prefix(&b, s.seq, 3, SS_MAXT, DSPY_SHARE_MIN_PREFIX, &shared, &n, &P));
    dspy_train_seq again = shared[0];
    dspy_share_buf b2 = {0};
    CHECK_OK(dspy_share_prefix(&b2, &again, 1, SS_MAXT, DSPY_SHARE_MIN_PREFIX, &out, &n, &P));
    CHECK(P == 0 && out == &again);
    dspy_share_buf_free(&b2);
    dspy_share_buf_free(&b);
}

/* Max |a - b| over a tensor divided by max |b| (at least 1e-30). */
static double scaled_diff(const float *a, const float *b, size_t n) {
    double d = 0, s = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        d = e > d || isnan(e) ? (isnan(e) ? INFINITY : e) : d;
        s = fmax(s, fabs((double)b[i]));
    }
    return d / s;
}

static void test_one_step_gradients(void) {
    ss_shared z;
    CHECK_OK(ss_make_shared(&z));
    dspy_trainable *t = NULL;
    CHECK_OK(dspy_trainable_new(g_model, NULL, 1, &t));
    if (!t || z.P != SS_P0) goto done;
    int64_t N = 0;
    for (int e = 0; e < SS_NEX; e++)
        for (int i = 0; i < ss_n[e]; i++) N += ss_lab[e][i] != -100;
    float scale = (float)(1.0 / (double)N);
    /* unshared: the gradients kept aside */
    double L0 = 0, L1 = 0;
    int64_t M0 = 0, M1 = 0;
    CHECK_OK(dspy_trainable_zero_grad(t));
    for (int q = 0; q < 3; q++) {
        double l;
        int64_t m;
        CHECK_OK(dspy_trainable_step(t, &z.s.seq[q], scale, &l, &m));
        L0 += l, M0 += m;
    }
    size_t np = dspy_trainable_nparams(t);
    float **g0 = calloc(np, sizeof *g0);
    for (size_t i = 0; i < np; i++) {
        dspy_param *p = dspy_trainable_param(t, i);
        g0[i] = malloc(sizeof(float) * p->n);
        memcpy(g0[i], p->g, sizeof(float) * p->n);
    }
    CHECK_OK(dspy_trainable_zero_grad(t));
    for (size_t q = 0; q < z.ns; q++) {
        double l;
        int64_t m;
        CHECK_OK(dspy_trainable_step(t, &z.sh[q], scale, &l, &m));
        L1 += l, M1 += m;
    }
    CHECK_INT(M1, M0);
    CHECK_INT(M0, N);
    check_report(fabs(L1 - L0) <= 1e-6 * fabs(L0), __FILE__, __LINE__, "shared loss %.9g vs unshared %.9g", L1, L0);
    double worst = 0;
    const char *worst_name = "";
    for (size_t i = 0; i < np; i++) {
        dspy_param *p = dspy_trainable_param(t, i);
        double d = scaled_diff(p->g, g0[i], p->n);
        if (d > worst) worst = d, worst_name = p->name;
        free(g0[i]);
    }
    free(g0);
    check_report(worst <= 1e-5, __FILE__, __LINE__, "gradient of %s differs by %.3g of its largest element",
                 worst_name, worst);
    printf("  one step: loss %.9g (shared) vs %.9g, worst gradient difference %.2e (%s), %d vs %d tokens\n", L1, L0,
           worst, worst_name, z.sh[0].T, z.s.seq[0].T + z.s.seq[1].T + z.s.seq[2].T);
done:
    dspy_trainable_free(t);
    dspy_share_buf_free(&z.b);
}

static void test_optimizer_steps(void) {
    ss_step s;
    ss_make_step(&s);
    dspy_share_buf b = {0};
    dspy_trainable *ta = NULL, *tb = NULL;
    dspy_optimizer *oa = NULL, *ob = NULL;
    dspy_adamw_hparams h = dspy_adamw_hparams_default();
    CHECK_OK(dspy_trainable_new(g_model, NULL, 1, &ta));
    CHECK_OK(dspy_trainable_new(g_model, NULL, 1, &tb));
    if (!ta || !tb) goto done;
    CHECK_OK(dspy_optimizer_new(ta, &h, &oa));
    CHECK_OK(dspy_optimizer_new(tb, &h, &ob));
    double wl = 0, wn = 0;
    for (int k = 0; k < 5 && oa && ob; k++) {
        const dspy_train_seq *sh = NULL;
        size_t ns = 0;
        int32_t P = 0;
        CHECK_OK(dspy_share_prefix(&b, s.seq, 3, SS_MAXT, DSPY_SHARE_MIN_PREFIX, &sh, &ns, &P));
        CHECK_INT(P, SS_P0);
        dspy_step_stats sa, sb;
        CHECK_OK(dspy_optimizer_train_step(oa, s.seq, 3, 1e-3, 1.0, &sa));
        CHECK_OK(dspy_optimizer_train_step(ob, sh, ns, 1e-3, 1.0, &sb));
        CHECK_INT(sb.n_labels, sa.n_labels);
        wl = fmax(wl, fabs(sb.loss - sa.loss) / fabs(sa.loss));
        wn = fmax(wn, fabs((double)sb.grad_norm - (double)sa.grad_norm) / (double)sa.grad_norm);
        printf("  step %d: loss %.7f / %.7f (shared), grad norm %.6f / %.6f\n", k + 1, sa.loss, sb.loss,
               (double)sa.grad_norm, (double)sb.grad_norm);
    }
    check_report(wl <= 1e-5, __FILE__, __LINE__, "per-step loss differs by %.3g relative", wl);
    check_report(wn <= 1e-5, __FILE__, __LINE__, "per-step gradient norm differs by %.3g relative", wn);
    double worst = 0;
    for (size_t i = 0; i < dspy_trainable_nparams(ta); i++) {
        dspy_param *pa = dspy_trainable_param(ta, i), *pb = dspy_trainable_param(tb, i);
        worst = fmax(worst, scaled_diff(pb->w, pa->w, pa->n));
    }
    check_report(worst <= 1e-4, __FILE__, __LINE__, "weights after 5 steps differ by %.3g of the largest", worst);
    printf("  5 steps: loss %.2e, norm %.2e relative; weights %.2e of the largest\n", wl, wn, worst);
done:
    dspy_optimizer_free(oa);
    dspy_optimizer_free(ob);
    dspy_trainable_free(ta);
    dspy_trainable_free(tb);
    dspy_share_buf_free(&b);
}

static void test_errors(void) {
    dspy_train_params p = dspy_train_params_default();
    CHECK(p.share_prefix);
    CHECK_OK(dspy_train_params_set(&p, "share_prefix", "false"));
    CHECK(!p.share_prefix);
    CHECK_OK(dspy_train_params_set(&p, "--share-prefix", "True"));
    CHECK(p.share_prefix);
    CHECK_STATUS(dspy_train_params_set(&p, "share_prefix", "maybe"), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "share_prefix is 'maybe'; expected true or false");
    CHECK_STATUS(dspy_train_params_set(&p, "share_prefix", "None"), DSPY_ERR_ARG);
    /* a prefix that is not exactly the first example, or that leaves nothing after it */
    ss_step s;
    ss_make_step(&s);
    dspy_trainable *t = NULL;
    CHECK_OK(dspy_trainable_new(g_model, NULL, 1, &t));
    if (!t) return;
    double l;
    int64_t m;
    dspy_train_seq bad = s.seq[1]; /* examples of 92 and 111 tokens */
    bad.prefix = 50;
    CHECK_STATUS(dspy_trainable_step(t, &bad, 1.0f, &l, &m), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "prefix is 50");
    bad.prefix = bad.T;
    CHECK_STATUS(dspy_trainable_step(t, &bad, 1.0f, &l, &m), DSPY_ERR_ARG);
    bad = s.seq[0];
    bad.seg = NULL, bad.prefix = SS_P0;
    CHECK_STATUS(dspy_trainable_step(t, &bad, 1.0f, &l, &m), DSPY_ERR_ARG);
    bad = s.seq[1];
    bad.prefix = ss_n[1]; /* the first example: accepted */
    CHECK_OK(dspy_trainable_step(t, &bad, 1.0f, &l, &m));
    dspy_trainable_free(t);
}

int main(void) {
    ss_make_examples();
    CHECK_OK(dspy_model_load(test_source("tests/ref/models/llama_tied_gqa"), NULL, &g_model));
    if (!g_model) return check_summary("test_train_share");
    RUN(test_layout);
    RUN(test_one_step_gradients);
    RUN(test_optimizer_steps);
    RUN(test_errors);
    dspy_model_free(g_model);
    return check_summary("test_train_share");
}
