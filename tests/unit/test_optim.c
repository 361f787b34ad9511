/* test_optim.c — AdamW, clip_grad_norm_ and the LR schedules against their reference formulas.
 *
 * AdamW: compared with torch.optim.AdamW's documented algorithm evaluated in double (decoupled
 * decay, bias corrections, eps added to sqrt(v_hat)) over several steps and hyper-parameters;
 * and, when tests/ref/train/optim_ref.json exists (scripts/make_ref_train_steps.py, real torch
 * 2.x on the CPU), with torch's own numbers. Schedules: values printed by transformers'
 * get_{linear,cosine,constant}_schedule_with_warmup lambdas (copied from
 * transformers/optimization.py into python3) for N = 10, warmup_ratio 0.25.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/json.h"
#include "dspy/train.h"
#include "kern/backend.h"
#include "train/optim.h"
#include "train/schedule.h"

/* torch.optim.AdamW docs, in double. */
static void adamw_ref(double *w, const double *g, double *m, double *v, size_t n, int64_t t, double lr,
                      const dspy_adamw_hparams *h) {
    for (size_t i = 0; i < n; i++) {
        w[i] -= lr * h->weight_decay * w[i];
        m[i] = h->beta1 * m[i] + (1 - h->beta1) * g[i];
        v[i] = h->beta2 * v[i] + (1 - h->beta2) * g[i] * g[i];
        double mh = m[i] / (1 - pow(h->beta1, (double)t));
        double vh = v[i] / (1 - pow(h->beta2, (double)t));
        w[i] -= lr * mh / (sqrt(vh) + h->eps);
    }
}

static void test_adamw_formula(void) {
    enum { N = 257, STEPS = 6 };
    dspy_adamw_hparams cases[3] = {dspy_adamw_hparams_default(), dspy_adamw_hparams_default(),
                                   dspy_adamw_hparams_default()};
    cases[1].weight_decay = 0.1;
    cases[2].beta1 = 0.8;
    cases[2].beta2 = 0.95;
    cases[2].eps = 1e-6;
    cases[2].weight_decay = 0.01;
    double lrs[3] = {1e-3, 5e-2, 1e-5};
    for (int c = 0; c < 3; c++) {
        float w[N], m[N] = {0}, v[N] = {0}, g[N];
        double wd[N], md[N] = {0}, vd[N] = {0}, gd[N];
        for (int i = 0; i < N; i++) wd[i] = w[i] = (float)(0.5 * sin(i * 0.37 + c));
        double maxrel = 0;
        for (int t = 1; t <= STEPS; t++) {
            for (int i = 0; i < N; i++) gd[i] = g[i] = (float)(cos(i * 0.11 * t + c) * (i % 7 == 0 ? 1e-4 : 0.3));
            double lr = lrs[c] * (t % 2 ? 1.0 : 0.5); /* the lr may change between steps */
            dspy_adamw_update(w, g, m, v, N, t, lr, &cases[c]);
            adamw_ref(wd, gd, md, vd, N, t, lr, &cases[c]);
            for (int i = 0; i < N; i++) {
                double moved = fabs(wd[i] - 0.5 * sin(i * 0.37 + c)) + 1e-30;
                double rel = fabs(w[i] - wd[i]) / (moved > 1e-3 ? moved : 1e-3);
                if (rel > maxrel) maxrel = rel;
            }
        }
        /* fp32 arithmetic against double: the change of w agrees to ~1e-4 of its size */
        CHECK(maxrel < 1e-3);
        /* moments themselves */
        for (int i = 0; i < N; i += 16) {
            CHECK_NEAR(m[i], md[i], 1e-5 * fabs(md[i]) + 1e-8); /* float sums with cancellation */
            CHECK_NEAR(v[i], vd[i], 1e-5 * fabs(vd[i]) + 1e-12);
        }
    }
}

static void test_adamw_first_step(void) {
    /* step 1: m_hat = g, v_hat = g^2, so w moves by lr * g / (|g| + eps) = ~lr * sign(g) */
    float w[4] = {1, -1, 0.5f, 0}, g[4] = {0.3f, -2.0f, 1e-3f, 0}, m[4] = {0}, v[4] = {0};
    dspy_adamw_hparams h = dspy_adamw_hparams_default();
    dspy_adamw_update(w, g, m, v, 4, 1, 0.01, &h);
    CHECK_NEAR(w[0], 1 - 0.01, 1e-6);
    CHECK_NEAR(w[1], -1 + 0.01, 1e-6);
    CHECK_NEAR(w[2], 0.5 - 0.01 * 1e-3 / (1e-3 + 1e-8), 1e-6);
    CHECK(w[3] == 0.0f); /* zero gradient, no decay: unchanged */
    /* decoupled weight decay alone (zero gradient): w *= 1 - lr * wd */
    float w2[1] = {2.0f}, g2[1] = {0}, m2[1] = {0}, v2[1] = {0};
    h.weight_decay = 0.5;
    dspy_adamw_update(w2, g2, m2, v2, 1, 1, 0.1, &h);
    CHECK(w2[0] == (float)(2.0f * (float)(1 - 0.1 * 0.5)));
}

/* The backend op (kern/ops.h adamw, CPU reference) equals dspy_adamw_update bit for bit over
 * several steps, with weight decay, a changing lr, and a clip coefficient (gscale) that the
 * reference applies by scaling the gradient in place first, as dspy_clip_grad_norm does. */
static void test_adamw_op(void) {
    enum { N = 1001, STEPS = 5 };
    dspy_backend *be = NULL;
    CHECK_OK(dspy_backend_new((dspy_device){DSPY_DEVICE_CPU, 0}, NULL, &be));
    if (!be) return;
    dspy_adamw_hparams h = dspy_adamw_hparams_default();
    h.weight_decay = 0.05;
    h.beta2 = 0.95;
    static float w[N], m[N], v[N], g[N], w2[N], m2[N], v2[N], g2[N];
    for (int i = 0; i < N; i++) w[i] = w2[i] = (float)(0.5 * sin(i * 0.37)), m[i] = m2[i] = v[i] = v2[i] = 0;
    int same = 0;
    for (int t = 1; t <= STEPS; t++) {
        double lr = 1e-3 * (t % 2 ? 1.0 : 0.3);
        float coef = t == 3 ? 0.37f : 1.0f;
        for (int i = 0; i < N; i++) g[i] = g2[i] = (float)(cos(i * 0.11 * t) * (i % 7 == 0 ? 1e-4 : 0.3));
        float hp[DSPY_ADAMW_WORDS];
        dspy_adamw_pack(hp, t, lr, h.beta1, h.beta2, h.eps, h.weight_decay, coef);
        CHECK_OK(be->ops->adamw(be, dspy_bt(be, w, N, DSPY_DTYPE_F32), dspy_bt(be, g, N, DSPY_DTYPE_F32),
                                dspy_bt(be, m, N, DSPY_DTYPE_F32), dspy_bt(be, v, N, DSPY_DTYPE_F32),
                                dspy_bt(be, hp, DSPY_ADAMW_WORDS, DSPY_DTYPE_F32)));
        if (coef != 1.0f)
            for (int i = 0; i < N; i++) g2[i] *= coef;
        dspy_adamw_update(w2, g2, m2, v2, N, t, lr, &h);
    }
    for (int i = 0; i < N; i++)
        same += memcmp(&w[i], &w2[i], 4) == 0 && memcmp(&m[i], &m2[i], 4) == 0 && memcmp(&v[i], &v2[i], 4) == 0;
    CHECK_INT(same, N);
    /* without decay (1-D parameters): decay packs as exactly 1 */
    float hp[DSPY_ADAMW_WORDS];
    dspy_adamw_pack(hp, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1.0f);
    CHECK(hp[DSPY_ADAMW_DECAY] == 1.0f && hp[DSPY_ADAMW_GSCALE] == 1.0f);
    /* a short hp is refused */
    CHECK_STATUS(be->ops->adamw(be, dspy_bt(be, w, N, DSPY_DTYPE_F32), dspy_bt(be, g, N, DSPY_DTYPE_F32),
                                dspy_bt(be, m, N, DSPY_DTYPE_F32), dspy_bt(be, v, N, DSPY_DTYPE_F32),
                                dspy_bt(be, hp, 4, DSPY_DTYPE_F32)),
                 DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "hp");
    dspy_backend_free(be);
}

static void test_clip(void) {
    float a[3] = {3, 0, 0}, b[2] = {0, 4};
    float *gs[2] = {a, b};
    size_t ns[2] = {3, 2};
    /* measure only */
    CHECK_NEAR(dspy_clip_grad_norm(gs, ns, 2, 0.0), 5.0, 1e-6);
    CHECK(a[0] == 3 && b[1] == 4);
    /* below the limit: untouched, bit for bit */
    CHECK_NEAR(dspy_clip_grad_norm(gs, ns, 2, 10.0), 5.0, 1e-6);
    CHECK(a[0] == 3 && b[1] == 4);
    /* above: scaled by max / (norm + 1e-6) */
    float norm = dspy_clip_grad_norm(gs, ns, 2, 2.0);
    CHECK_NEAR(norm, 5.0, 1e-6);
    float coef = 2.0f / (5.0f + 1e-6f);
    CHECK(a[0] == 3 * coef);
    CHECK(b[1] == 4 * coef);
    CHECK_NEAR(dspy_grad_norm(gs, ns, 2), 2.0, 1e-5);
    /* large tensors: chunked sums give the same value however they are split */
    size_t n = 300000;
    float *big = malloc(n * sizeof *big);
    double ref = 0;
    for (size_t i = 0; i < n; i++) {
        big[i] = (float)sin((double)i);
        ref += (double)big[i] * big[i];
    }
    float *gb[1] = {big};
    size_t nb[1] = {n};
    float n1 = dspy_grad_norm(gb, nb, 1), n2 = dspy_grad_norm(gb, nb, 1);
    CHECK(n1 == n2);
    CHECK_NEAR(n1, sqrt(ref), 1e-3);
    free(big);
}

static void test_schedules(void) {
    static const double lin[11] = {0.0, 0.3333333333333333, 0.6666666666666666, 1.0, 0.8571428571428571,
                                   0.7142857142857143, 0.5714285714285714, 0.42857142857142855,
                                   0.2857142857142857, 0.14285714285714285, 0.0};
    static const double cosv[11] = {0.0, 0.3333333333333333, 0.6666666666666666, 1.0, 0.9504844339512095,
                                    0.8117449009293668, 0.6112604669781572, 0.38873953302184283,
                                    0.18825509907063326, 0.04951556604879048, 0.0};
    int64_t W = dspy_lr_warmup_steps(10, 0.25, 0);
    CHECK_INT(W, 3);
    for (int s = 0; s <= 10; s++) {
        CHECK(dspy_lr_lambda(DSPY_LR_LINEAR, s, W, 10) == lin[s]);
        CHECK_NEAR(dspy_lr_lambda(DSPY_LR_COSINE, s, W, 10), cosv[s], 1e-15);
        CHECK(dspy_lr_lambda(DSPY_LR_CONSTANT, s, W, 10) == 1.0);
        CHECK(dspy_lr_lambda(DSPY_LR_CONSTANT_WITH_WARMUP, s, W, 10) == (s < 3 ? lin[s] : 1.0));
    }
    /* math.ceil(N * ratio), warmup_steps overrides */
    CHECK_INT(dspy_lr_warmup_steps(100, 0.03, 0), 3);
    CHECK_INT(dspy_lr_warmup_steps(7, 0.03, 0), 1);
    CHECK_INT(dspy_lr_warmup_steps(1000, 0.03, 0), 30);
    CHECK_INT(dspy_lr_warmup_steps(1000, 0.03, 5), 5);
    CHECK_INT(dspy_lr_warmup_steps(1000, 0.0, 0), 0);
    /* DSPy's setting: constant with warmup_ratio 0.03 is flat from step 0 */
    CHECK(dspy_lr_lambda(DSPY_LR_CONSTANT, 0, dspy_lr_warmup_steps(100, 0.03, 0), 100) == 1.0);
    /* past the end the decays stay at 0 */
    CHECK(dspy_lr_lambda(DSPY_LR_LINEAR, 12, 3, 10) == 0.0);
}

static void test_params(void) {
    dspy_train_params p = dspy_train_params_default();
    /* DSPy's LocalProvider defaults (CC-30 item 5) and SFTConfig */
    CHECK_INT(p.num_train_epochs, 5);
    CHECK_INT(p.per_device_train_batch_size, 1);
    CHECK_INT(p.gradient_accumulation_steps, 8);
    CHECK(p.learning_rate == 1e-5);
    CHECK_INT(p.max_seq_length, 4096);
    CHECK(p.packing && p.bf16 && !p.use_peft);
    CHECK(p.max_grad_norm == 2.0);
    CHECK(p.lr_scheduler_type == DSPY_LR_CONSTANT);
    CHECK(p.warmup_ratio == 0.03);
    CHECK(p.weight_decay == 0.0);
    CHECK_INT(p.seed, 42);
    CHECK_INT(p.lora_r, 32);
    CHECK(p.lora_alpha == 64.0 && p.lora_dropout == 0.05);
    CHECK_OK(dspy_train_params_validate(&p));

    CHECK_OK(dspy_train_params_set(&p, "num_train_epochs", "3"));
    CHECK_OK(dspy_train_params_set(&p, "learning-rate", "2e-4"));
    CHECK_OK(dspy_train_params_set(&p, "--gradient-accumulation-steps", "4.0"));
    CHECK_OK(dspy_train_params_set(&p, "packing", "False"));
    CHECK_OK(dspy_train_params_set(&p, "use_peft", "true"));
    CHECK_OK(dspy_train_params_set(&p, "lr_scheduler_type", "cosine"));
    CHECK_OK(dspy_train_params_set(&p, "max_seq_length", "None"));
    CHECK_OK(dspy_train_params_set(&p, "device", "None"));
    CHECK_OK(dspy_train_params_set(&p, "seed", "7"));
    CHECK_OK(dspy_train_params_set(&p, "output_dir", "/tmp/x"));
    CHECK_INT(p.num_train_epochs, 3);
    CHECK(p.learning_rate == 2e-4);
    CHECK_INT(p.gradient_accumulation_steps, 4);
    CHECK(!p.packing && p.use_peft);
    CHECK(p.lr_scheduler_type == DSPY_LR_COSINE);
    CHECK_INT(p.max_seq_length, 4096);
    CHECK(p.device == NULL);
    CHECK_INT(p.seed, 7);
    CHECK_STR(p.output_dir, "/tmp/x");
    CHECK_OK(dspy_train_params_set(&p, "max_grad_norm", "None"));
    CHECK(p.max_grad_norm == 0.0);
    CHECK_OK(dspy_train_params_validate(&p));

    dspy_train_params q = p;
    CHECK_STATUS(dspy_train_params_set(&p, "num_epochs", "3"), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "unknown key 'num_epochs'");
    CHECK_CONTAINS(dspy_errmsg(), "num_train_epochs");
    CHECK_STATUS(dspy_train_params_set(&p, "num_train_epochs", "2.5"), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_train_params_set(&p, "learning_rate", "fast"), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "learning_rate is 'fast'");
    CHECK_STATUS(dspy_train_params_set(&p, "packing", "maybe"), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_train_params_set(&p, "lr_scheduler_type", "polynomial"), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_train_params_set(&p, "seed", "-1"), DSPY_ERR_ARG);
    CHECK(memcmp(&p, &q, sizeof p) == 0);

    p.learning_rate = 0;
    CHECK_STATUS(dspy_train_params_validate(&p), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "learning_rate");
    p = q;
    /* device names by form (whether a GPU is there is checked when training starts) */
    static const char *const good_dev[] = {"cpu", "auto", "cuda", "cuda:0", "cuda:12"};
    for (size_t i = 0; i < sizeof good_dev / sizeof *good_dev; i++) {
        p.device = good_dev[i];
        CHECK_OK(dspy_train_params_validate(&p));
    }
    static const char *const bad_dev[] = {"tpu", "cuda:", "cuda:x", "cuda0", "CUDA"};
    for (size_t i = 0; i < sizeof bad_dev / sizeof *bad_dev; i++) {
        p.device = bad_dev[i];
        CHECK_STATUS(dspy_train_params_validate(&p), DSPY_ERR_ARG);
        CHECK_CONTAINS(dspy_errmsg(), "device is '");
    }
    p = q;
    p.lora_dropout = 1.0;
    CHECK_STATUS(dspy_train_params_validate(&p), DSPY_ERR_ARG);
    p = q;
    p.max_seq_length = 1;
    CHECK_STATUS(dspy_train_params_validate(&p), DSPY_ERR_ARG);
    CHECK_STR(dspy_lr_schedule_name(DSPY_LR_CONSTANT_WITH_WARMUP), "constant_with_warmup");
}

/* Real torch numbers (scripts/make_ref_train_steps.py, "optim" section), when present. */
static void test_torch_fixture(void) {
    const char *path = test_source("tests/ref/train/optim_ref.json");
    dspy_json *j = NULL;
    if (dspy_json_load(path, &j) != DSPY_OK) {
        check_skip("tests/ref/train/optim_ref.json absent");
        return;
    }
    dspy_json *cases = dspy_json_get(j, "adamw");
    for (size_t c = 0; c < dspy_json_size(cases); c++) {
        dspy_json *cs = dspy_json_at(cases, c);
        dspy_adamw_hparams h = dspy_adamw_hparams_default();
        h.weight_decay = dspy_json_num_or(cs, "weight_decay", 0);
        h.beta1 = dspy_json_num_or(cs, "beta1", 0.9);
        h.beta2 = dspy_json_num_or(cs, "beta2", 0.999);
        h.eps = dspy_json_num_or(cs, "eps", 1e-8);
        dspy_json *w0 = dspy_json_get(cs, "w0"), *grads = dspy_json_get(cs, "grads"), *lrs = dspy_json_get(cs, "lr"),
                  *ws = dspy_json_get(cs, "w");
        size_t n = dspy_json_size(w0);
        float *w = calloc(n, sizeof *w), *m = calloc(n, sizeof *m), *v = calloc(n, sizeof *v),
              *g = calloc(n, sizeof *g);
        for (size_t i = 0; i < n; i++) w[i] = (float)dspy_json_number(dspy_json_at(w0, i));
        double maxd = 0;
        for (size_t t = 0; t < dspy_json_size(grads); t++) {
            for (size_t i = 0; i < n; i++) g[i] = (float)dspy_json_number(dspy_json_at(dspy_json_at(grads, t), i));
            dspy_adamw_update(w, g, m, v, n, (int64_t)t + 1, dspy_json_number(dspy_json_at(lrs, t)), &h);
            for (size_t i = 0; i < n; i++) {
                double d = fabs(w[i] - dspy_json_number(dspy_json_at(dspy_json_at(ws, t), i)));
                if (d > maxd) maxd = d;
            }
        }
        CHECK(maxd < 1e-7);
        free(w);
        free(m);
        free(v);
        free(g);
    }
    dspy_json *clip = dspy_json_get(j, "clip");
    for (size_t c = 0; c < dspy_json_size(clip); c++) {
        dspy_json *cs = dspy_json_at(clip, c);
        dspy_json *gs = dspy_json_get(cs, "grads");
        size_t k = dspy_json_size(gs);
        float **gp = calloc(k, sizeof *gp);
        size_t *ns = calloc(k, sizeof *ns);
        for (size_t t = 0; t < k; t++) {
            ns[t] = dspy_json_size(dspy_json_at(gs, t));
            gp[t] = calloc(ns[t], sizeof(float));
            for (size_t i = 0; i < ns[t]; i++) gp[t][i] = (float)dspy_json_number(dspy_json_at(dspy_json_at(gs, t), i));
        }
        float norm = dspy_clip_grad_norm(gp, ns, k, dspy_json_number(dspy_json_get(cs, "max_norm")));
        CHECK_NEAR(norm, dspy_json_number(dspy_json_get(cs, "norm")), 1e-6 * norm);
        dspy_json *after = dspy_json_get(cs, "clipped");
        double maxd = 0;
        for (size_t t = 0; t < k; t++) {
            for (size_t i = 0; i < ns[t]; i++) {
                double d = fabs(gp[t][i] - dspy_json_number(dspy_json_at(dspy_json_at(after, t), i)));
                if (d > maxd) maxd = d;
            }
            free(gp[t]);
        }
        CHECK(maxd < 1e-6);
        free(gp);
        free(ns);
    }
    dspy_json *sch = dspy_json_get(j, "schedules");
    for (size_t c = 0; c < dspy_json_size(sch); c++) {
        dspy_json *cs = dspy_json_at(sch, c);
        const char *name = dspy_json_str(dspy_json_get(cs, "type"));
        dspy_lr_schedule s = DSPY_LR_CONSTANT;
        for (int k = 0; k <= DSPY_LR_COSINE; k++)
            if (strcmp(name, dspy_lr_schedule_name((dspy_lr_schedule)k)) == 0) s = (dspy_lr_schedule)k;
        int64_t total = dspy_json_intval(dspy_json_get(cs, "total"));
        int64_t W = dspy_lr_warmup_steps(total, dspy_json_number(dspy_json_get(cs, "warmup_ratio")), 0);
        CHECK_INT(W, dspy_json_intval(dspy_json_get(cs, "warmup")));
        dspy_json *lrs = dspy_json_get(cs, "lr");
        double base = dspy_json_number(dspy_json_get(cs, "base_lr"));
        for (size_t t = 0; t < dspy_json_size(lrs); t++)
            CHECK_NEAR(base * dspy_lr_lambda(s, (int64_t)t, W, total),
                       dspy_json_number(dspy_json_at(lrs, t)), 1e-15);
    }
    dspy_json_decref(j);
}

int main(void) {
    RUN(test_adamw_formula);
    RUN(test_adamw_first_step);
    RUN(test_adamw_op);
    RUN(test_clip);
    RUN(test_schedules);
    RUN(test_params);
    RUN(test_torch_fixture);
    return check_summary("test_optim");
}
