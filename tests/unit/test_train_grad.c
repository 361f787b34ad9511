/* test_train_grad.c — the whole training step (train/backward.h) on tiny random models.
 *
 * Gradients of dspy_trainable_step against central differences of dspy_trainable_loss (the
 * forward pass is float32, so h = 1e-2 and the check is on a sample of elements per tensor:
 * the largest-gradient element and random ones; ||analytic - numeric|| / ||numeric|| over the
 * sample <= 2e-3), for full fine-tuning (tied GQA llama; untied MQA llama with q/k/v/o biases)
 * and LoRA (with B made non-zero so that A's gradient is not trivially zero), and for LoRA with
 * dropout (differences of the training-mode loss at a fixed RNG state). Also: the packing mask
 * (a packed sequence's loss and gradients equal the sum over its examples run alone; changing a
 * token of example 2 leaves a loss that only example 1 labels unchanged), the training forward
 * against the inference engine's logits, -100 handling, accumulation and grad_scale, RNG
 * save/restore, merge and export, the model pointing at the trained weights, and errors.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/engine.h"
#include "dspy/model.h"
#include "dspy/str.h"
#include "train/backward.h"

#define GRAD_TOL 2e-3
#define FD_H 1e-2

static uint64_t g_rng = 0x2545f4914f6cdd1dull;
static uint64_t next(void) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return g_rng;
}
static float urand(void) { return (float)((double)(next() >> 11) * 0x1.0p-53 * 2.0 - 1.0); }

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* A tiny random model directory with weights large enough that every tensor matters. */
static char *make_model(const char *name, bool tied, int nkv, bool bias) {
    dspy_model_config c;
    CHECK_OK(dspy_model_config_preset("llama", "tiny", &c));
    c.vocab_size = 50, c.hidden_size = 16, c.intermediate_size = 24, c.num_hidden_layers = 2;
    c.num_attention_heads = 4, c.num_key_value_heads = nkv, c.head_dim = 8, c.max_position_embeddings = 64;
    c.tie_word_embeddings = tied, c.qkv_bias = bias, c.o_bias = bias;
    c.bos_token_id = 1, c.eos_token_ids[0] = 2, c.n_eos = 1;
    c.rope_type = DSPY_ROPE_DEFAULT, c.rope_theta = 10000.0;
    CHECK_OK(dspy_model_config_validate(&c, name));
    dspy_str raw = DSPY_STR_INIT, dir = DSPY_STR_INIT;
    dspy_str_appendf(&raw, "%s/%s_raw", test_tmpdir(), name);
    dspy_str_appendf(&dir, "%s/%s", test_tmpdir(), name);
    CHECK_OK(dspy_model_write_random(dspy_str_cstr(&raw), &c, 7, DSPY_DTYPE_F32, true));
    dspy_model *m = NULL;
    CHECK_OK(dspy_model_load(dspy_str_cstr(&raw), NULL, &m));
    dspy_trainable *t = NULL;
    CHECK_OK(dspy_trainable_new(m, NULL, 1, &t));
    for (size_t i = 0; i < dspy_trainable_nparams(t); i++) {
        dspy_param *p = dspy_trainable_param(t, i);
        for (size_t j = 0; j < p->n; j++) {
            float u = urand();
            p->w[j] = ends_with(p->name, "norm.weight") ? 1.0f + 0.2f * u : ends_with(p->name, ".bias") ? 0.1f * u
                                                                                                       : 0.3f * u;
        }
    }
    CHECK_OK(dspy_trainable_export(t, dspy_str_cstr(&dir), "f32"));
    dspy_trainable_free(t);
    dspy_model_free(m);
    dspy_str_free(&raw);
    return dspy_str_take(&dir);
}

/* Two packed examples (5 + 7 tokens), labels on some tokens of each (already shifted). */
enum { T = 12 };
static int32_t s_ids[T] = {1, 17, 33, 8, 41, 1, 22, 5, 9, 48, 30, 12};
static int32_t s_pos[T] = {0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6};
static int32_t s_seg[T] = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1};
static int32_t s_lab[T] = {-100, -100, 8, 41, -100, -100, -100, 9, 48, -100, 12, -100};
static dspy_train_seq seq(void) {
    dspy_train_seq s = {s_ids, s_pos, s_lab, s_seg, T, 0};
    return s;
}

static double loss_of(dspy_trainable *t, const dspy_train_seq *s) {
    double L = 0;
    int64_t n = 0;
    CHECK_OK(dspy_trainable_loss(t, s, &L, &n));
    return L;
}

/* Training-mode loss at RNG state `rng` (dropout on), without touching the gradients' values. */
static double train_loss_at(dspy_trainable *t, const dspy_train_seq *s, uint64_t rng) {
    size_t np = dspy_trainable_nparams(t);
    float **saved = malloc(np * sizeof *saved);
    for (size_t i = 0; i < np; i++) {
        dspy_param *p = dspy_trainable_param(t, i);
        saved[i] = malloc(p->n * sizeof(float));
        memcpy(saved[i], p->g, p->n * sizeof(float));
    }
    dspy_trainable_rng_set(t, rng);
    double L = 0;
    int64_t n = 0;
    CHECK_OK(dspy_trainable_step(t, s, 0.0f, &L, &n));
    for (size_t i = 0; i < np; i++) {
        dspy_param *p = dspy_trainable_param(t, i);
        memcpy(p->g, saved[i], p->n * sizeof(float));
        free(saved[i]);
    }
    free(saved);
    return L;
}

/* Compares a sample of every trainable tensor's gradient (already in p->g, for grad_scale 1)
 * with central differences; dropout_rng != UINT64_MAX: of the training-mode loss at that state. */
static void check_model_grads(const char *what, dspy_trainable *t, const dspy_train_seq *s, uint64_t dropout_rng) {
    double num2 = 0, diff2 = 0, worst = 0;
    const char *worst_name = "";
    int checked = 0;
    for (size_t i = 0; i < dspy_trainable_nparams(t); i++) {
        dspy_param *p = dspy_trainable_param(t, i);
        size_t pick[3] = {0, next() % p->n, next() % p->n};
        for (size_t j = 1; j < p->n; j++)
            if (fabsf(p->g[j]) > fabsf(p->g[pick[0]])) pick[0] = j;
        for (int k = 0; k < 3; k++) {
            size_t j = pick[k];
            float w0 = p->w[j];
            p->w[j] = w0 + (float)FD_H;
            double lp = dropout_rng == UINT64_MAX ? loss_of(t, s) : train_loss_at(t, s, dropout_rng);
            p->w[j] = w0 - (float)FD_H;
            double lm = dropout_rng == UINT64_MAX ? loss_of(t, s) : train_loss_at(t, s, dropout_rng);
            p->w[j] = w0;
            double fd = (lp - lm) / (2 * FD_H), d = fd - p->g[j];
            num2 += fd * fd;
            diff2 += d * d;
            if (fabs(d) > worst) worst = fabs(d), worst_name = p->name;
            checked++;
        }
    }
    double rel = sqrt(diff2) / sqrt(num2);
    check_report(rel <= GRAD_TOL && num2 > 0, __FILE__, __LINE__,
                 "%s: |analytic - numeric| / |numeric| = %.3g > %g (worst %s, %.3g)", what, rel, GRAD_TOL, worst_name,
                 worst);
    printf("  %-34s %d elements, rel err %.2e\n", what, checked, rel);
}

static void step(dspy_trainable *t, const dspy_train_seq *s, float scale, double *L, int64_t *n) {
    CHECK_OK(dspy_trainable_step(t, s, scale, L, n));
}

static char *g_tied, *g_untied;

static void test_full_grads(void) {
    const char *dirs[2] = {g_tied, g_untied};
    const char *names[2] = {"full, tied GQA", "full, untied MQA + biases"};
    for (int d = 0; d < 2; d++) {
        dspy_model *m = NULL;
        CHECK_OK(dspy_model_load(dirs[d], NULL, &m));
        dspy_trainable *t = NULL;
        CHECK_OK(dspy_trainable_new(m, NULL, 3, &t));
        const dspy_model_config *c = dspy_model_config_get(m);
        size_t want = (size_t)dspy_model_config_params(c);
        CHECK_U64(dspy_trainable_numel(t), want);
        CHECK(dspy_trainable_param_find(t, "model.layers.1.mlp.down_proj.weight") != NULL);
        CHECK((dspy_trainable_param_find(t, "lm_head.weight") != NULL) == !c->tie_word_embeddings);
        CHECK((dspy_trainable_param_find(t, "model.layers.0.self_attn.o_proj.bias") != NULL) == c->o_bias);
        dspy_train_seq s = seq();
        double L = 0;
        int64_t n = 0;
        step(t, &s, 1.0f, &L, &n);
        CHECK_INT(n, 5);
        CHECK(L > 0 && isfinite(L));
        CHECK_NEAR(L, loss_of(t, &s), 1e-9 * L);
        check_model_grads(names[d], t, &s, UINT64_MAX);
        dspy_trainable_free(t);
        dspy_model_free(m);
    }
}

/* The packed sequence against its examples run alone; and a token of example 2 cannot change
 * what example 1 sees. */
static void test_packing_mask(void) {
    dspy_model *m = NULL;
    CHECK_OK(dspy_model_load(g_tied, NULL, &m));
    dspy_trainable *t = NULL;
    CHECK_OK(dspy_trainable_new(m, NULL, 3, &t));
    size_t np = dspy_trainable_nparams(t), total = dspy_trainable_numel(t);
    float *g_packed = malloc(total * sizeof(float)), *g_sep = calloc(total, sizeof(float));
    dspy_train_seq s = seq();
    double Lp = 0, La = 0, Lb = 0;
    int64_t n = 0, na = 0, nb = 0;
    step(t, &s, 1.0f, &Lp, &n);
    for (size_t i = 0, off = 0; i < np; off += dspy_trainable_param(t, i)->n, i++)
        memcpy(g_packed + off, dspy_trainable_param(t, i)->g, dspy_trainable_param(t, i)->n * sizeof(float));
    dspy_trainable_zero_grad(t);
    dspy_train_seq a = {s_ids, s_pos, s_lab, NULL, 5, 0}, b = {s_ids + 5, NULL, s_lab + 5, NULL, 7, 0};
    step(t, &a, 1.0f, &La, &na);
    step(t, &b, 1.0f, &Lb, &nb);
    CHECK_INT(na + nb, n);
    CHECK_NEAR(Lp, La + Lb, 1e-5 * Lp);
    double d2 = 0, g2 = 0;
    for (size_t i = 0, off = 0; i < np; off += dspy_trainable_param(t, i)->n, i++) {
        dspy_param *p = dspy_trainable_param(t, i);
        for (size_t j = 0; j < p->n; j++) {
            d2 += (p->g[j] - g_packed[off + j]) * (double)(p->g[j] - g_packed[off + j]);
            g2 += (double)p->g[j] * p->g[j];
        }
    }
    check_report(sqrt(d2 / g2) < 1e-5, __FILE__, __LINE__, "packed vs separate gradients: rel %.3g", sqrt(d2 / g2));

    /* labels only on example 1: a different token in example 2 changes nothing */
    int32_t lab1[T], ids2[T];
    memcpy(lab1, s_lab, sizeof lab1);
    memcpy(ids2, s_ids, sizeof ids2);
    for (int i = 5; i < T; i++) lab1[i] = -100;
    ids2[6] = 3, ids2[9] = 44;
    dspy_train_seq s1 = {s_ids, s_pos, lab1, s_seg, T, 0}, s2 = {ids2, s_pos, lab1, s_seg, T, 0};
    double L1 = loss_of(t, &s1), L2 = loss_of(t, &s2);
    CHECK(L1 == L2);
    CHECK(L1 == La);
    dspy_trainable_zero_grad(t);
    step(t, &s1, 1.0f, &L1, &n);
    for (size_t i = 0, off = 0; i < np; off += dspy_trainable_param(t, i)->n, i++)
        memcpy(g_sep + off, dspy_trainable_param(t, i)->g, dspy_trainable_param(t, i)->n * sizeof(float));
    dspy_trainable_zero_grad(t);
    step(t, &s2, 1.0f, &L2, &n);
    double e = 0;
    for (size_t i = 0, off = 0; i < np; off += dspy_trainable_param(t, i)->n, i++) {
        dspy_param *p = dspy_trainable_param(t, i);
        if (strcmp(p->name, "model.embed_tokens.weight") == 0) continue; /* rows of ids2's tokens differ by 0 */
        for (size_t j = 0; j < p->n; j++) e = fmax(e, fabs(p->g[j] - g_sep[off + j]));
    }
    CHECK(e == 0);
    /* but the same change does move example 2's own loss */
    int32_t lab2[T];
    for (int i = 0; i < T; i++) lab2[i] = i < 5 ? -100 : s_lab[i];
    dspy_train_seq s3 = {s_ids, s_pos, lab2, s_seg, T, 0}, s4 = {ids2, s_pos, lab2, s_seg, T, 0};
    CHECK(loss_of(t, &s3) != loss_of(t, &s4));
    free(g_packed);
    free(g_sep);
    dspy_trainable_free(t);
    dspy_model_free(m);
}

/* The training forward equals the inference engine's logits for one example. */
static void test_matches_inference(void) {
    dspy_model *m = NULL;
    CHECK_OK(dspy_model_load(g_untied, NULL, &m));
    const int V = dspy_model_config_get(m)->vocab_size;
    float *logits = malloc(sizeof(float) * 7 * (size_t)V);
    CHECK_OK(dspy_model_forward_logits(m, s_ids + 5, 7, logits));
    double want = 0;
    for (int t = 0; t < 7; t++) {
        if (s_lab[5 + t] == -100) continue;
        const float *x = logits + (size_t)t * V;
        double mx = -INFINITY, sum = 0;
        for (int i = 0; i < V; i++) mx = fmax(mx, x[i]);
        for (int i = 0; i < V; i++) sum += exp(x[i] - mx);
        want += mx + log(sum) - x[s_lab[5 + t]];
    }
    dspy_trainable *t = NULL;
    CHECK_OK(dspy_trainable_new(m, NULL, 3, &t));
    dspy_train_seq b = {s_ids + 5, NULL, s_lab + 5, NULL, 7, 0};
    CHECK_NEAR(loss_of(t, &b), want, 1e-5 * want);
    free(logits);
    dspy_trainable_free(t);
    dspy_model_free(m);
}

static void randomize_lora_B(dspy_trainable *t) {
    for (size_t i = 0; i < dspy_trainable_nparams(t); i++) {
        dspy_param *p = dspy_trainable_param(t, i);
        if (ends_with(p->name, "lora_B.weight"))
            for (size_t j = 0; j < p->n; j++) p->w[j] = 0.2f * urand();
    }
}

static void test_lora(void) {
    dspy_model *m = NULL;
    CHECK_OK(dspy_model_load(g_untied, NULL, &m));
    dspy_lora_config lc = dspy_lora_config_default();
    lc.r = 4, lc.alpha = 8;
    dspy_trainable *t = NULL;
    CHECK_OK(dspy_trainable_new(m, &lc, 11, &t));
    const dspy_model_config *c = dspy_model_config_get(m);
    CHECK_INT(dspy_trainable_nparams(t), (size_t)c->num_hidden_layers * 7 * 2);
    dspy_param *A = dspy_trainable_param(t, 0), *B = dspy_trainable_param(t, 1);
    CHECK_STR(A->name, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
    CHECK_STR(B->name, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
    CHECK(A->shape[0] == 4 && A->shape[1] == c->hidden_size && B->shape[0] == c->num_attention_heads * c->head_dim);
    /* A ~ U(-1/sqrt(in), 1/sqrt(in)), B = 0: the adapted model starts as the base model */
    double amax = 0, bmax = 0;
    for (size_t j = 0; j < A->n; j++) amax = fmax(amax, fabs(A->w[j]));
    for (size_t j = 0; j < B->n; j++) bmax = fmax(bmax, fabs(B->w[j]));
    CHECK(amax > 0.7 / sqrt(c->hidden_size) && amax <= 1.0 / sqrt(c->hidden_size) && bmax == 0);
    dspy_train_seq s = seq();
    dspy_trainable *full = NULL;
    double Lbase = loss_of(t, &s);
    randomize_lora_B(t);
    double L0 = loss_of(t, &s), L = 0;
    CHECK(L0 != Lbase);
    int64_t n = 0;
    step(t, &s, 1.0f, &L, &n);
    CHECK_NEAR(L, L0, 1e-9 * L0);
    check_model_grads("LoRA r=4 (A and B)", t, &s, UINT64_MAX);

    /* merge: same loss from the merged weights; export of the unmerged adapter is the same file */
    dspy_str d1 = DSPY_STR_INIT, d2 = DSPY_STR_INIT;
    dspy_str_appendf(&d1, "%s/lora_unmerged", test_tmpdir());
    dspy_str_appendf(&d2, "%s/lora_merged", test_tmpdir());
    CHECK_OK(dspy_trainable_export(t, dspy_str_cstr(&d1), NULL));
    CHECK_OK(dspy_trainable_merge_lora(t));
    CHECK(dspy_trainable_lora_merged(t));
    CHECK_NEAR(loss_of(t, &s), L0, 1e-5 * L0);
    CHECK_STATUS(dspy_trainable_step(t, &s, 1.0f, &L, &n), DSPY_ERR_STATE);
    CHECK_STATUS(dspy_trainable_merge_lora(t), DSPY_ERR_STATE);
    CHECK_OK(dspy_trainable_export(t, dspy_str_cstr(&d2), "f32"));
    char *f1 = NULL, *f2 = NULL;
    size_t n1 = 0, n2 = 0;
    dspy_str p1 = DSPY_STR_INIT, p2 = DSPY_STR_INIT;
    dspy_str_appendf(&p1, "%s/model.safetensors", dspy_str_cstr(&d1));
    dspy_str_appendf(&p2, "%s/model.safetensors", dspy_str_cstr(&d2));
    CHECK_OK(dspy_read_file(dspy_str_cstr(&p1), &f1, &n1));
    CHECK_OK(dspy_read_file(dspy_str_cstr(&p2), &f2, &n2));
    CHECK(f1 && f2 && n1 == n2 && memcmp(f1, f2, n1) == 0);
    /* the model itself is untouched by training and merging (the trainable owns copies) */
    const int V = c->vocab_size;
    float *lg_live = malloc(sizeof(float) * 7 * (size_t)V), *lg_base = malloc(sizeof(float) * 7 * (size_t)V);
    CHECK_OK(dspy_model_forward_logits(m, s_ids, 7, lg_live));
    dspy_trainable_free(t);
    CHECK_OK(dspy_model_forward_logits(m, s_ids, 7, lg_base));
    CHECK(memcmp(lg_live, lg_base, sizeof(float) * 7 * (size_t)V) == 0);
    /* reloading the export gives the merged model: the trainable's loss, other logits */
    dspy_model *m2 = NULL;
    CHECK_OK(dspy_model_load(dspy_str_cstr(&d2), NULL, &m2));
    CHECK_OK(dspy_trainable_new(m2, NULL, 1, &full));
    CHECK_NEAR(loss_of(full, &s), L0, 1e-5 * L0);
    float *lg_re = malloc(sizeof(float) * 7 * (size_t)V);
    CHECK_OK(dspy_model_forward_logits(m2, s_ids, 7, lg_re));
    CHECK(memcmp(lg_base, lg_re, sizeof(float) * 7 * (size_t)V) != 0);
    dspy_trainable_free(full);
    dspy_model_free(m2);
    free(lg_live), free(lg_base), free(lg_re), free(f1), free(f2);
    dspy_str_free(&d1), dspy_str_free(&d2), dspy_str_free(&p1), dspy_str_free(&p2);
    dspy_model_free(m);
}

static void test_lora_dropout(void) {
    dspy_model *m = NULL;
    CHECK_OK(dspy_model_load(g_tied, NULL, &m));
    dspy_lora_config lc = {3, 6.0f, 0.3f, true};
    dspy_trainable *t = NULL;
    CHECK_OK(dspy_trainable_new(m, &lc, 5, &t));
    randomize_lora_B(t);
    dspy_train_seq s = seq();
    double L = 0, L2 = 0;
    int64_t n = 0;
    dspy_trainable_rng_set(t, 17);
    step(t, &s, 1.0f, &L, &n);
    CHECK(dspy_trainable_rng_get(t) == 18);
    check_model_grads("LoRA r=3, dropout 0.3", t, &s, 17);
    /* dropout is on in training, off in evaluation, and differs between steps */
    CHECK(L != loss_of(t, &s));
    CHECK(L != train_loss_at(t, &s, 18));
    /* resume: the same RNG state reproduces the step bit for bit */
    size_t total = dspy_trainable_numel(t), np = dspy_trainable_nparams(t);
    float *g1 = malloc(total * sizeof(float));
    dspy_trainable_zero_grad(t);
    dspy_trainable_rng_set(t, 40);
    step(t, &s, 1.0f, &L, &n);
    for (size_t i = 0, off = 0; i < np; off += dspy_trainable_param(t, i)->n, i++)
        memcpy(g1 + off, dspy_trainable_param(t, i)->g, dspy_trainable_param(t, i)->n * sizeof(float));
    dspy_trainable_zero_grad(t);
    dspy_trainable_rng_set(t, 40);
    step(t, &s, 1.0f, &L2, &n);
    int same = L == L2;
    for (size_t i = 0, off = 0; i < np; off += dspy_trainable_param(t, i)->n, i++)
        same &= memcmp(g1 + off, dspy_trainable_param(t, i)->g, dspy_trainable_param(t, i)->n * sizeof(float)) == 0;
    CHECK(same);
    /* accumulation and grad_scale: two steps at 0.5 give the gradient of one step at 1 */
    dspy_trainable_zero_grad(t);
    dspy_trainable_rng_set(t, 40);
    step(t, &s, 0.5f, &L2, &n);
    dspy_trainable_rng_set(t, 40);
    step(t, &s, 0.5f, &L2, &n);
    CHECK(L == L2);
    double d2 = 0, g2 = 0; /* not bitwise: the second step adds onto the first inside each sum */
    for (size_t i = 0, off = 0; i < np; off += dspy_trainable_param(t, i)->n, i++) {
        dspy_param *p = dspy_trainable_param(t, i);
        for (size_t j = 0; j < p->n; j++) {
            d2 += (p->g[j] - g1[off + j]) * (double)(p->g[j] - g1[off + j]);
            g2 += (double)g1[off + j] * g1[off + j];
        }
    }
    CHECK(g2 > 0 && sqrt(d2 / g2) < 1e-6);
    free(g1);
    dspy_trainable_free(t);
    dspy_model_free(m);
}

static void test_edges_and_errors(void) {
    dspy_model *m = NULL;
    CHECK_OK(dspy_model_load(g_tied, NULL, &m));
    dspy_trainable *t = NULL;
    dspy_lora_config bad = {0, 8, 0, true};
    CHECK_STATUS(dspy_trainable_new(m, &bad, 1, &t), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "rank");
    bad.r = 4, bad.dropout = 1.0f;
    CHECK_STATUS(dspy_trainable_new(m, &bad, 1, &t), DSPY_ERR_ARG);
    CHECK(t == NULL);
    CHECK_OK(dspy_trainable_new(m, NULL, 1, &t));
    CHECK_STATUS(dspy_trainable_merge_lora(t), DSPY_ERR_STATE);
    /* no labels: zero loss, zero count, gradients untouched */
    int32_t none[T];
    for (int i = 0; i < T; i++) none[i] = -100;
    dspy_train_seq s0 = {s_ids, s_pos, none, s_seg, T, 0};
    double L = 1;
    int64_t n = 1;
    step(t, &s0, 1.0f, &L, &n);
    CHECK(L == 0 && n == 0);
    double gmax = 0;
    for (size_t i = 0; i < dspy_trainable_nparams(t); i++) {
        dspy_param *p = dspy_trainable_param(t, i);
        for (size_t j = 0; j < p->n; j++) gmax = fmax(gmax, fabs(p->g[j]));
    }
    CHECK(gmax == 0);
    int32_t ids[T], lab[T], sg[T], pos[T];
    memcpy(ids, s_ids, sizeof ids), memcpy(lab, s_lab, sizeof lab), memcpy(sg, s_seg, sizeof sg);
    memcpy(pos, s_pos, sizeof pos);
    dspy_train_seq s = {ids, pos, lab, sg, T, 0};
    ids[4] = 50;
    CHECK_STATUS(dspy_trainable_step(t, &s, 1.0f, &L, &n), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "ids[4] is 50");
    ids[4] = 41, lab[3] = -1;
    CHECK_STATUS(dspy_trainable_loss(t, &s, &L, &n), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "labels[3] is -1");
    lab[3] = 41, sg[7] = 0;
    CHECK_STATUS(dspy_trainable_loss(t, &s, &L, &n), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "seg[7]");
    sg[7] = 1, pos[2] = 64;
    CHECK_STATUS(dspy_trainable_loss(t, &s, &L, &n), DSPY_ERR_CONTEXT);
    CHECK_CONTAINS(dspy_errmsg(), "pos[2] is 64");
    pos[2] = 2;
    s.T = 0;
    CHECK_STATUS(dspy_trainable_loss(t, &s, &L, &n), DSPY_ERR_ARG);
    s.T = T;
    CHECK_OK(dspy_trainable_loss(t, &s, &L, &n));
    dspy_str d = DSPY_STR_INIT;
    dspy_str_appendf(&d, "%s/bad_export", test_tmpdir());
    CHECK_STATUS(dspy_trainable_export(t, dspy_str_cstr(&d), "f8"), DSPY_ERR_ARG);
    /* bf16 export loads back */
    CHECK_OK(dspy_trainable_export(t, dspy_str_cstr(&d), "bf16"));
    dspy_model *m2 = NULL;
    CHECK_OK(dspy_model_load(dspy_str_cstr(&d), NULL, &m2));
    if (m2) CHECK(dspy_model_config_get(m2)->dtype == DSPY_DTYPE_BF16);
    dspy_model_free(m2);
    dspy_str_free(&d);
    dspy_trainable_free(t);
    dspy_model_free(m);
}

int main(void) {
    g_tied = make_model("tied_gqa", true, 2, false);
    g_untied = make_model("untied_mqa_bias", false, 1, true);
    RUN(test_full_grads);
    RUN(test_packing_mask);
    RUN(test_matches_inference);
    RUN(test_lora);
    RUN(test_lora_dropout);
    RUN(test_edges_and_errors);
    free(g_tied);
    free(g_untied);
    return check_summary("test_train_grad");
}
