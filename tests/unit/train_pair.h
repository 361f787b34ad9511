/* train_pair.h — one trainer run on two trainables side by side, for test_train_device_path.c
 * (the device code path on the CPU backend, bit for bit) and test_cuda_train.c (CUDA, within
 * stated tolerances). Included by exactly one test file each (static functions).
 *
 * The reference is the plain CPU trainable (dspy_trainable_new, host AdamW of train/optim.c);
 * the subject is dspy_trainable_new_on(dev, mirrored). Both start from the same weights (the
 * fixture model tests/ref/models/llama_tied_gqa, LoRA A from the same seed) and take the 10
 * optimizer steps of tests/ref/train/steps_ref.json (the sequences and batches
 * test_train_steps_ref checks against PyTorch, cosine schedule, AdamW with weight decay,
 * clip_grad_norm_). Compared: every step's loss and gradient norm (relative) and labelled
 * count; after the last step every trainable tensor and both AdamW moments (max |diff| over a
 * tensor divided by max(1e-3, max |ref|) of that tensor: a state tolerance that does not blow
 * up on tiny moments); a resume of the subject from the checkpoint written after step 5
 * (dspy_ckpt_save / dspy_ckpt_load, the trainer's own files) that must reach the
 * uninterrupted subject's final weights; and the exported model (LoRA merged on export) of
 * both, tensor by tensor. Tolerance 0 means bit-identical.
 */
#ifndef DSPY_TEST_TRAIN_PAIR_H
#define DSPY_TEST_TRAIN_PAIR_H

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/model.h"
#include "dspy/random.h"
#include "dspy/safetensors.h"
#include "dspy/str.h"
#include "train/backward.h"
#include "train/checkpoint.h"
#include "train/optim.h"
#include "train/schedule.h"

typedef struct pair_tol {
    double loss_rel;   /* per step */
    double norm_rel;   /* per step */
    double state_rel;  /* final weights and moments (scaled max |diff|, see above) */
    double resume_rel; /* resumed subject vs uninterrupted subject */
} pair_tol;

typedef struct pair_case {
    const char *name;
    bool lora;
    float lora_dropout;
    double max_norm;     /* <= 0: the fixture's */
    double weight_decay;
    bool bf16;           /* the subject (a CUDA one) in BF16 mixed precision */
} pair_case;

static json_t *g_pair_ref;
static dspy_model *g_pair_model;

/* Loads the fixture and its model; false (with a skip) when absent. */
static bool pair_setup(void) {
    json_error_t err;
    g_pair_ref = json_load_file(test_source("tests/ref/train/steps_ref.json"), 0, &err);
    if (!g_pair_ref) {
        check_skip("tests/ref/train/steps_ref.json absent");
        return false;
    }
    char path[512];
    snprintf(path, sizeof path, "tests/ref/models/%s", json_string_value(json_object_get(g_pair_ref, "model")));
    CHECK_OK(dspy_model_load(test_source(path), NULL, &g_pair_model));
    return g_pair_model != NULL;
}

static void pair_teardown(void) {
    dspy_model_free(g_pair_model);
    json_decref(g_pair_ref);
}

static int32_t *pair_ints(json_t *a, size_t *n) {
    *n = json_array_size(a);
    int32_t *v = malloc((*n ? *n : 1) * sizeof *v);
    for (size_t i = 0; i < *n; i++) v[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return v;
}

/* The sequences of step k (at most 8), their arrays in bufs (freed by pair_batch_free). */
static size_t pair_batch(size_t k, dspy_train_seq *batch, int32_t *bufs[8][4]) {
    json_t *pl = json_array_get(json_object_get(g_pair_ref, "plan"), k);
    json_t *epochs = json_object_get(g_pair_ref, "epochs");
    size_t nb = json_array_size(pl) < 8 ? json_array_size(pl) : 8;
    for (size_t b = 0; b < nb; b++) {
        json_t *ref = json_array_get(pl, b);
        json_t *seq = json_array_get(
            json_object_get(json_array_get(epochs, (size_t)json_integer_value(json_array_get(ref, 0))), "seqs"),
            (size_t)json_integer_value(json_array_get(ref, 1)));
        size_t T;
        bufs[b][0] = pair_ints(json_object_get(seq, "train_ids"), &T);
        bufs[b][1] = pair_ints(json_object_get(seq, "pos"), &T);
        bufs[b][2] = pair_ints(json_object_get(seq, "train_targets"), &T);
        bufs[b][3] = pair_ints(json_object_get(seq, "seg"), &T);
        batch[b] = (dspy_train_seq){bufs[b][0], bufs[b][1], bufs[b][2], bufs[b][3], (int32_t)T, 0};
    }
    return nb;
}

static void pair_batch_free(size_t nb, int32_t *bufs[8][4]) {
    for (size_t b = 0; b < nb; b++)
        for (int a = 0; a < 4; a++) free(bufs[b][a]);
}

/* The scaled distance of two tensors (see the file comment). */
static double pair_dist(const float *a, const float *ref, size_t n) {
    double d = 0, s = 1e-3;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)ref[i]);
        if (e > d || isnan(e)) d = isnan(e) ? INFINITY : e;
        if (fabs((double)ref[i]) > s) s = fabs((double)ref[i]);
    }
    return d / s;
}

/* The worst pair_dist over the parameters (and, with oa/ob, the moments) of two trainables
 * whose host mirrors are current. */
static double pair_state_dist(dspy_trainable *a, dspy_optimizer *oa, dspy_trainable *b, dspy_optimizer *ob) {
    double worst = 0;
    for (size_t i = 0; i < dspy_trainable_nparams(a); i++) {
        dspy_param *pa = dspy_trainable_param(a, i), *pb = dspy_trainable_param(b, i);
        double d = pair_dist(pb->w, pa->w, pa->n);
        if (oa && ob) {
            double dm = pair_dist(dspy_optimizer_exp_avg(ob, i), dspy_optimizer_exp_avg(oa, i), pa->n);
            double dv = pair_dist(dspy_optimizer_exp_avg_sq(ob, i), dspy_optimizer_exp_avg_sq(oa, i), pa->n);
            d = fmax(d, fmax(dm, dv));
        }
        if (d > worst || isnan(d)) worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

/* The worst pair_dist over the tensors of two exported model directories. */
static double pair_export_dist(const char *dir_a, const char *dir_b) {
    char pa[1100], pb[1100];
    snprintf(pa, sizeof pa, "%s/model.safetensors", dir_a);
    snprintf(pb, sizeof pb, "%s/model.safetensors", dir_b);
    dspy_safetensors *fa = NULL, *fb = NULL;
    CHECK_OK(dspy_safetensors_open(pa, &fa));
    CHECK_OK(dspy_safetensors_open(pb, &fb));
    double worst = fa && fb ? 0 : INFINITY;
    for (size_t i = 0; fa && fb && i < dspy_safetensors_count(fa); i++) {
        const dspy_tensor_info *ta = dspy_safetensors_at(fa, i), *tb = dspy_safetensors_find(fb, ta->name);
        if (!tb || dspy_tensor_numel(ta) != dspy_tensor_numel(tb)) {
            worst = INFINITY;
            continue;
        }
        size_t n = (size_t)dspy_tensor_numel(ta);
        float *xa = malloc(n * sizeof *xa), *xb = malloc(n * sizeof *xb);
        CHECK_OK(dspy_tensor_to_f32(ta, xa));
        CHECK_OK(dspy_tensor_to_f32(tb, xb));
        worst = fmax(worst, pair_dist(xb, xa, n));
        free(xa);
        free(xb);
    }
    if (fa && fb) CHECK_INT(dspy_safetensors_count(fa), dspy_safetensors_count(fb));
    dspy_safetensors_free(fa);
    dspy_safetensors_free(fb);
    return worst;
}

/* A trainable and its optimizer for case c on (dev, mirrored). */
static bool pair_make(const pair_case *c, dspy_device dev, bool mirrored, dspy_trainable **t, dspy_optimizer **o) {
    json_t *betas = json_object_get(g_pair_ref, "betas");
    dspy_adamw_hparams h = {json_number_value(json_array_get(betas, 0)), json_number_value(json_array_get(betas, 1)),
                            json_number_value(json_object_get(g_pair_ref, "eps")), c->weight_decay};
    dspy_lora_config lc = dspy_lora_config_default();
    lc.r = 4;
    lc.alpha = 8.0f;
    lc.dropout = c->lora_dropout;
    *t = NULL;
    *o = NULL;
    CHECK_OK(dspy_trainable_new_on(g_pair_model, c->lora ? &lc : NULL, 7, dev, mirrored, t));
    if (*t && c->bf16 && dev.type != DSPY_DEVICE_CPU) {
        CHECK_OK(dspy_trainable_set_bf16(*t, true));
        CHECK(dspy_trainable_bf16(*t));
    }
    if (*t) CHECK_OK(dspy_optimizer_new(*t, &h, o));
    return *t && *o;
}

static double pair_lr(size_t k) {
    int64_t total = json_integer_value(json_object_get(g_pair_ref, "steps"));
    return json_number_value(json_object_get(g_pair_ref, "lr")) * dspy_lr_lambda(DSPY_LR_COSINE, (int64_t)k, 0, total);
}

/* Steps [k0, k1) on one trainable; stats (k1 entries, indexed by step) may be NULL. */
static bool pair_steps(dspy_optimizer *o, size_t k0, size_t k1, double max_norm, dspy_step_stats *stats) {
    for (size_t k = k0; k < k1; k++) {
        dspy_train_seq batch[8];
        int32_t *bufs[8][4];
        size_t nb = pair_batch(k, batch, bufs);
        dspy_step_stats ss;
        dspy_status st = dspy_optimizer_train_step(o, batch, nb, pair_lr(k), max_norm, &ss);
        pair_batch_free(nb, bufs);
        CHECK_OK(st);
        if (st) return false;
        if (stats) stats[k] = ss;
    }
    return true;
}

static void pair_run(const pair_case *c, dspy_device dev, bool mirrored, const pair_tol *tol) {
    enum { STEPS = 10, SAVE_AT = 5 };
    if (!g_pair_model) return;
    double max_norm = c->max_norm > 0 ? c->max_norm : json_number_value(json_object_get(g_pair_ref, "max_grad_norm"));
    dspy_trainable *ta = NULL, *tb = NULL, *tr = NULL;
    dspy_optimizer *oa = NULL, *ob = NULL, *orr = NULL;
    const char *tmp = test_tmpdir();
    char ckpt_dir[1024], exp_a[1024], exp_b[1024];
    snprintf(ckpt_dir, sizeof ckpt_dir, "%s/%s-run", tmp, c->name);
    snprintf(exp_a, sizeof exp_a, "%s/%s-export-ref", tmp, c->name);
    snprintf(exp_b, sizeof exp_b, "%s/%s-export-dev", tmp, c->name);
    static const char fp[] = "0000000000000000000000000000000000000000000000000000000000000000";
    if (!pair_make(c, (dspy_device){DSPY_DEVICE_CPU, 0}, false, &ta, &oa) || !pair_make(c, dev, mirrored, &tb, &ob))
        goto done;
    CHECK(dspy_trainable_mirrored(tb) == (mirrored || dev.type != DSPY_DEVICE_CPU));
    CHECK_INT(dspy_trainable_numel(ta), dspy_trainable_numel(tb));
    dspy_step_stats sa[STEPS], sb[STEPS];
    double worst_loss = 0, worst_norm = 0;
    bool ok = true;
    for (size_t k = 0; k < STEPS && ok; k++) {
        ok = pair_steps(oa, k, k + 1, max_norm, sa) && pair_steps(ob, k, k + 1, max_norm, sb);
        if (!ok) break;
        CHECK_INT(sb[k].n_labels, sa[k].n_labels);
        CHECK_INT(sb[k].tokens, sa[k].tokens);
        double el = fabs(sb[k].loss - sa[k].loss) / fabs(sa[k].loss);
        double en = fabs((double)sb[k].grad_norm - (double)sa[k].grad_norm) / fabs((double)sa[k].grad_norm);
        worst_loss = fmax(worst_loss, isnan(el) ? INFINITY : el);
        worst_norm = fmax(worst_norm, isnan(en) ? INFINITY : en);
        CHECK(el <= tol->loss_rel);
        CHECK(en <= tol->norm_rel);
        if (k + 1 == SAVE_AT) {
            dspy_ckpt_state cs = {.step = SAVE_AT, .epoch = 0, .seq_pos = 0,
                                  .dropout_rng = dspy_trainable_rng_get(tb), .elapsed_s = 0};
            dspy_pyrandom_seed(&cs.data_rng, 1);
            memcpy(cs.fingerprint, fp, sizeof cs.fingerprint);
            dspy_lora_config lc = {4, 8.0f, c->lora_dropout, true};
            CHECK_OK(dspy_mkdir_p(ckpt_dir));
            CHECK_OK(dspy_ckpt_save(ckpt_dir, dspy_model_config_get(g_pair_model), c->lora ? &lc : NULL, tb, ob, &cs,
                                    0, NULL));
        }
    }
    printf("  %s: %d steps, worst loss rel diff %.3g, worst grad-norm rel diff %.3g (steps 1/%d norms %.4g/%.4g)\n",
           c->name, STEPS, worst_loss, worst_norm, STEPS, (double)sb[0].grad_norm,
           ok ? (double)sb[STEPS - 1].grad_norm : NAN);
    if (!ok) goto done;
    CHECK_OK(dspy_trainable_to_host(tb));
    CHECK_OK(dspy_optimizer_to_host(ob));
    double ds = pair_state_dist(ta, oa, tb, ob);
    printf("  %s: final weights and moments, scaled max |diff| %.3g\n", c->name, ds);
    CHECK(ds <= tol->state_rel);
    /* resume: a fresh subject from checkpoint-5, steps 6-10 */
    char ck[1100];
    snprintf(ck, sizeof ck, "%s/checkpoint-%d", ckpt_dir, (int)SAVE_AT);
    if (pair_make(c, dev, mirrored, &tr, &orr)) {
        dspy_ckpt_state cs;
        dspy_status st = dspy_ckpt_load(ck, fp, tr, orr, &cs);
        CHECK_OK(st);
        CHECK_INT(dspy_optimizer_steps(orr), SAVE_AT);
        if (!st && pair_steps(orr, SAVE_AT, STEPS, max_norm, NULL)) {
            CHECK_OK(dspy_trainable_to_host(tr));
            CHECK_OK(dspy_optimizer_to_host(orr));
            double dr = pair_state_dist(tb, ob, tr, orr);
            printf("  %s: resumed at step %d vs uninterrupted: scaled max |diff| %.3g\n", c->name, (int)SAVE_AT, dr);
            CHECK(dr <= tol->resume_rel);
        }
    }
    /* export (an unmerged LoRA is merged on the way out) */
    CHECK_OK(dspy_trainable_export(ta, exp_a, "f32"));
    CHECK_OK(dspy_trainable_export(tb, exp_b, "f32"));
    double de = pair_export_dist(exp_a, exp_b);
    printf("  %s: exported model, scaled max |diff| %.3g\n", c->name, de);
    CHECK(de <= tol->state_rel);
done:
    dspy_optimizer_free(orr);
    dspy_trainable_free(tr);
    dspy_optimizer_free(oa);
    dspy_optimizer_free(ob);
    dspy_trainable_free(ta);
    dspy_trainable_free(tb);
}

#endif
