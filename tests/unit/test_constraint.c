/* test_constraint.c — token automata (dspy/constraint.h), the mask_logits op and constrained
 * sampling in the engine.
 *
 * The engine's constrained output is checked against a reference built without the engine's
 * mask code: the model's own logits for each prefix (dspy_model_forward_logits), the allowed set
 * walked with dspy_constraint_next, the argmax among the allowed and the raw log_softmax. A
 * constrained sequence batched with unconstrained ones must leave theirs bit-identical.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/constraint.h"
#include "dspy/engine.h"
#include "dspy/model.h"
#include "dspy/rng.h"
#include "dspy/str.h"
#include "kern/backend.h"

enum { V = 300, EOS = 299, CTX = 64 };

/* ---- the automaton ---------------------------------------------------------------------- */

static void test_automaton(void) {
    dspy_constraint *c = NULL;
    CHECK_STATUS(dspy_constraint_new(0, 10, &c), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_constraint_new(3, 0, &c), DSPY_ERR_ARG);
    CHECK_OK(dspy_constraint_new(4, 70, &c));
    if (!c) return;
    CHECK_INT(dspy_constraint_states(c), 4);
    CHECK_INT(dspy_constraint_vocab(c), 70);
    /* state 0 LIST: 40 -> 1, 5 -> 2, 33 -> 1 (inserted out of order), 5 changed to 3 */
    CHECK_OK(dspy_constraint_set_token(c, 0, 40, 1));
    CHECK_OK(dspy_constraint_set_token(c, 0, 5, 2));
    CHECK_OK(dspy_constraint_set_token(c, 0, 33, 1));
    CHECK_OK(dspy_constraint_set_token(c, 0, 5, 3));
    CHECK_INT(dspy_constraint_next(c, 0, 5), 3);
    CHECK_INT(dspy_constraint_next(c, 0, 33), 1);
    CHECK_INT(dspy_constraint_next(c, 0, 40), 1);
    CHECK_INT(dspy_constraint_next(c, 0, 6), -1);
    CHECK_INT(dspy_constraint_count(c, 0), 3);
    /* state 1 FREE to 1, except 7 banned and 69 -> 2 */
    CHECK_OK(dspy_constraint_set_free(c, 1, 1));
    CHECK_OK(dspy_constraint_set_token(c, 1, 7, -1));
    CHECK_OK(dspy_constraint_set_token(c, 1, 69, 2));
    CHECK_INT(dspy_constraint_next(c, 1, 0), 1);
    CHECK_INT(dspy_constraint_next(c, 1, 7), -1);
    CHECK_INT(dspy_constraint_next(c, 1, 69), 2);
    CHECK_INT(dspy_constraint_count(c, 1), 69);
    CHECK_OK(dspy_constraint_set_accept(c, 2, true));
    CHECK(dspy_constraint_accepts(c, 2));
    CHECK(!dspy_constraint_accepts(c, 1));
    /* bad ids */
    CHECK_STATUS(dspy_constraint_set_token(c, 4, 1, 0), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_constraint_set_token(c, 0, 70, 0), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_constraint_set_token(c, 0, 1, 9), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_constraint_set_free(c, -1, 0), DSPY_ERR_ARG);
    CHECK_INT(dspy_constraint_next(c, 9, 1), -1);
    CHECK_INT(dspy_constraint_next(c, 0, -3), -1);
    /* masks: 3 words; eos 68 only where accepting */
    const int32_t eos[1] = {68};
    uint32_t w[3];
    dspy_constraint_mask(c, 0, eos, 1, w);
    CHECK_U64(w[0], 1u << 5);
    CHECK_U64(w[1], (1u << (33 - 32)) | (1u << (40 - 32)));
    CHECK_U64(w[2], 0);
    dspy_constraint_mask(c, 1, eos, 1, w);
    CHECK_U64(w[0], 0xffffffffu & ~(1u << 7));
    CHECK_U64(w[1], 0xffffffffu);
    CHECK_U64(w[2], 0x3fu & ~(1u << (68 - 64))); /* 70 tokens: bits 64..69; eos banned */
    dspy_constraint_mask(c, 2, eos, 1, w);
    CHECK_U64(w[0], 0);
    CHECK_U64(w[2], 1u << (68 - 64));
    /* state 3 allows nothing and is reachable: the check names it; accepting fixes it only
     * when the model has an eos id */
    CHECK_STATUS(dspy_constraint_check(c, true), DSPY_ERR_ARG);
    CHECK_OK(dspy_constraint_set_accept(c, 3, true));
    CHECK_OK(dspy_constraint_check(c, true));
    CHECK_STATUS(dspy_constraint_check(c, false), DSPY_ERR_ARG);
    dspy_constraint_free(c);
    dspy_constraint_free(NULL);
}

/* ---- mask_logits on the CPU backend ------------------------------------------------------ */

static double lse(const float *x, int n, const uint32_t *mask) {
    double m = -INFINITY, s = 0;
    for (int i = 0; i < n; i++)
        if ((!mask || (mask[i / 32] >> (i % 32) & 1u)) && x[i] > m) m = x[i];
    for (int i = 0; i < n; i++)
        if (!mask || (mask[i / 32] >> (i % 32) & 1u)) s += exp((double)x[i] - m);
    return m + log(s);
}

static void test_mask_op(void) {
    enum { M = 5, VV = 77, W = (VV + 31) / 32, R = 3 };
    dspy_backend_plan plan = {8, 8, 8, VV, 1, 8, 1, 0};
    dspy_backend *be = NULL;
    CHECK_OK(dspy_backend_new((dspy_device){DSPY_DEVICE_CPU, 0}, &plan, &be));
    if (!be) return;
    dspy_rng r;
    dspy_rng_seed(&r, 11);
    float x[M * VV], x0[M * VV], shift[R] = {NAN, NAN, NAN};
    for (int i = 0; i < M * VV; i++) x[i] = x0[i] = (float)(4.0 * dspy_rng_uniform(&r) - 2.0);
    uint32_t masks[R * W];
    for (int i = 0; i < R * W; i++) masks[i] = (uint32_t)(dspy_rng_uniform(&r) * 4294967296.0);
    for (int i = 0; i < W; i++) masks[2 * W + i] = 0xffffffffu; /* mask 2 keeps everything */
    int32_t rows[R] = {3, 0, 4};
    CHECK_OK(be->ops->mask_logits(be, dspy_bt(be, x, M * VV, DSPY_DTYPE_F32), dspy_bt(be, masks, R * W, DSPY_DTYPE_I32),
                                  dspy_bt(be, rows, R, DSPY_DTYPE_I32), dspy_bt(be, shift, R, DSPY_DTYPE_F32), R, VV));
    int bad = 0;
    for (int m = 0; m < M; m++) {
        int k = -1;
        for (int j = 0; j < R; j++)
            if (rows[j] == m) k = j;
        for (int i = 0; i < VV; i++) {
            float want = x0[m * VV + i];
            if (k >= 0 && !(masks[k * W + i / 32] >> (i % 32) & 1u)) want = -INFINITY;
            bad += x[m * VV + i] != want;
        }
        if (k >= 0)
            CHECK_NEAR(shift[k], lse(x0 + m * VV, VV, masks + k * W) - lse(x0 + m * VV, VV, NULL), 1e-6);
    }
    CHECK_INT(bad, 0);
    CHECK(shift[2] == 0.0f); /* nothing banned: exactly no shift */
    /* a mask that keeps nothing, a row outside the logits */
    memset(masks, 0, sizeof masks);
    CHECK_STATUS(be->ops->mask_logits(be, dspy_bt(be, x, M * VV, DSPY_DTYPE_F32), dspy_bt(be, masks, W, DSPY_DTYPE_I32),
                                      dspy_bt(be, rows, 1, DSPY_DTYPE_I32), dspy_bt(be, shift, 1, DSPY_DTYPE_F32), 1, VV),
                 DSPY_ERR_ARG);
    rows[0] = M;
    masks[0] = 1;
    CHECK_STATUS(be->ops->mask_logits(be, dspy_bt(be, x, M * VV, DSPY_DTYPE_F32), dspy_bt(be, masks, W, DSPY_DTYPE_I32),
                                      dspy_bt(be, rows, 1, DSPY_DTYPE_I32), dspy_bt(be, shift, 1, DSPY_DTYPE_F32), 1, VV),
                 DSPY_ERR_ARG);
    dspy_backend_free(be);
}

/* ---- the engine ------------------------------------------------------------------------- */

static char *g_dir; /* random llama, vocab V, eos EOS */

/* 0 -> {10: 1, 20: 2, 30: 3}; 1 -> {11: 4}; 2 -> {21: 4, 22: 4}; 3 FREE to 3 except 5 and 7
 * banned and 40 -> 4; 4 accepts only. */
static dspy_constraint *choice(void) {
    dspy_constraint *c = NULL;
    CHECK_OK(dspy_constraint_new(5, V, &c));
    if (!c) return NULL;
    CHECK_OK(dspy_constraint_set_token(c, 0, 10, 1));
    CHECK_OK(dspy_constraint_set_token(c, 0, 20, 2));
    CHECK_OK(dspy_constraint_set_token(c, 0, 30, 3));
    CHECK_OK(dspy_constraint_set_token(c, 1, 11, 4));
    CHECK_OK(dspy_constraint_set_token(c, 2, 21, 4));
    CHECK_OK(dspy_constraint_set_token(c, 2, 22, 4));
    CHECK_OK(dspy_constraint_set_free(c, 3, 3));
    CHECK_OK(dspy_constraint_set_token(c, 3, 5, -1));
    CHECK_OK(dspy_constraint_set_token(c, 3, 7, -1));
    CHECK_OK(dspy_constraint_set_token(c, 3, 40, 4));
    CHECK_OK(dspy_constraint_set_accept(c, 4, true));
    return c;
}

static bool allowed(const dspy_constraint *c, int32_t state, int32_t tok) {
    if (tok == EOS) return dspy_constraint_accepts(c, state);
    return dspy_constraint_next(c, state, tok) >= 0;
}

/* Walks gen through c against the model's logits: every token allowed, greedy rows the argmax
 * among the allowed, logprobs the raw log_softmax; a stop only on eos in an accepting state. */
static void check_path(dspy_model *m, const dspy_constraint *c, const int32_t *prompt, int np, const int32_t *gen,
                       const float *lps, int ng, dspy_finish fin, bool greedy, int max_tokens) {
    int32_t all[CTX];
    memcpy(all, prompt, sizeof(int32_t) * (size_t)np);
    memcpy(all + np, gen, sizeof(int32_t) * (size_t)ng);
    float *logits = malloc(sizeof(float) * (size_t)(np + ng) * V);
    CHECK_OK(dspy_model_forward_logits(m, all, (size_t)(np + ng), logits));
    int32_t state = 0;
    for (int t = 0; t < ng; t++) {
        const float *row = logits + (size_t)(np + t - 1) * V;
        check_report(allowed(c, state, gen[t]), __FILE__, __LINE__, "token %d (%d) not allowed in state %d", t,
                     gen[t], state);
        if (greedy) {
            int best = -1;
            for (int i = 0; i < V; i++)
                if (allowed(c, state, i) && (best < 0 || row[i] > row[best])) best = i;
            CHECK_INT(gen[t], best);
        }
        CHECK_NEAR(lps[t], (double)row[gen[t]] - lse(row, V, NULL), 2e-5);
        if (gen[t] != EOS) state = dspy_constraint_next(c, state, gen[t]);
    }
    if (fin == DSPY_FINISH_STOP) CHECK(ng > 0 && gen[ng - 1] == EOS);
    else CHECK(fin == DSPY_FINISH_LENGTH && ng == max_tokens);
    free(logits);
}

static int32_t *prompt_of(int n, int salt) {
    int32_t *p = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++) p[i] = (int32_t)((i * 37 + salt * 101 + 11) % V);
    return p;
}

static void test_engine_greedy_and_sampled(void) {
    dspy_model *m = NULL;
    CHECK_OK(dspy_model_load(g_dir, NULL, &m));
    dspy_constraint *c = choice();
    if (!m || !c) return;
    int constrained_differs = 0;
    for (int salt = 0; salt < 6; salt++) {
        int32_t *p = prompt_of(7, salt);
        dspy_sampling sp = dspy_sampling_default();
        sp.max_tokens = 12;
        sp.temperature = 0;
        int32_t *free_gen, *gen;
        float *lps;
        size_t nf, ng;
        dspy_finish fin;
        CHECK_OK(dspy_generate(m, p, 7, &sp, &free_gen, NULL, &nf, &fin));
        sp.constraint = c;
        CHECK_OK(dspy_generate(m, p, 7, &sp, &gen, &lps, &ng, &fin));
        check_path(m, c, p, 7, gen, lps, (int)ng, fin, true, 12);
        constrained_differs += free_gen[0] != gen[0];
        free(gen), free(lps), free(free_gen);
        /* sampled, hot, with and without top-k / top-p; ignore_eos does not apply in accepting
         * states */
        for (int seed = 0; seed < 4; seed++) {
            sp.temperature = 1.7f;
            sp.seed = (uint64_t)(seed + 10 * salt);
            sp.top_k = seed == 1 ? 3 : 0;
            sp.top_p = seed == 2 ? 0.8f : 1.0f;
            sp.ignore_eos = seed == 3;
            CHECK_OK(dspy_generate(m, p, 7, &sp, &gen, &lps, &ng, &fin));
            check_path(m, c, p, 7, gen, lps, (int)ng, fin, false, 12);
            free(gen), free(lps);
        }
        free(p);
    }
    /* the constraint did something: unconstrained greedy rarely starts with 10, 20 or 30 */
    CHECK(constrained_differs >= 4);
    dspy_constraint_free(c);
    dspy_model_free(m);
}

/* A constrained sequence among unconstrained ones: everyone's tokens and logprobs as alone. */
static void test_engine_mixed_batch(void) {
    dspy_model *m = NULL;
    CHECK_OK(dspy_model_load(g_dir, NULL, &m));
    dspy_constraint *c = choice();
    if (!m || !c) return;
    enum { S = 4 };
    dspy_sampling sp[S];
    int32_t *prompts[S], toks[S][32];
    float lps[S][32];
    int ntok[S] = {0}, lens[S] = {9, 5, 12, 6};
    dspy_finish fins[S] = {0};
    int64_t ids[S];
    for (int i = 0; i < S; i++) {
        sp[i] = dspy_sampling_default();
        sp[i].max_tokens = 14;
        sp[i].temperature = i == 0 ? 0.0f : 1.1f;
        sp[i].seed = (uint64_t)i;
        sp[i].constraint = i % 2 ? c : NULL;
        prompts[i] = prompt_of(lens[i], 20 + i);
    }
    dspy_engine_params ep = dspy_engine_params_default();
    ep.max_seqs = 4;
    ep.max_batch_tokens = 8;
    ep.block_size = 4;
    ep.max_tokens_total = 256;
    dspy_engine *e = NULL;
    CHECK_OK(dspy_engine_new(m, &ep, &e));
    if (!e) return;
    int added = 0, done = 0;
    for (int step = 0; done < S && step < 300; step++) {
        if (added < S && (step % 2 == 0)) {
            CHECK_OK(dspy_engine_add(e, prompts[added], (size_t)lens[added], &sp[added], &ids[added]));
            added++;
        }
        dspy_step_out so;
        CHECK_OK(dspy_engine_step(e, &so));
        for (int k = 0; k < so.n_events; k++) {
            const dspy_step_event *ev = &so.events[k];
            int i = 0;
            while (i < added && ids[i] != ev->seq_id) i++;
            if (i >= added || ev->token < 0) continue;
            toks[i][ntok[i]] = ev->token;
            lps[i][ntok[i]++] = ev->logprob;
            if (ev->finish) fins[i] = ev->finish, done++;
        }
    }
    CHECK_INT(done, S);
    dspy_engine_free(e);
    for (int i = 0; i < S; i++) {
        int32_t *g;
        float *gl;
        size_t ng;
        dspy_finish f;
        CHECK_OK(dspy_generate(m, prompts[i], (size_t)lens[i], &sp[i], &g, &gl, &ng, &f));
        bool same = (int)ng == ntok[i] && f == fins[i];
        for (int k = 0; same && k < ntok[i]; k++) same = g[k] == toks[i][k] && gl[k] == lps[i][k];
        check_report(same, __FILE__, __LINE__, "sequence %d (%s) batched differs from alone", i,
                     sp[i].constraint ? "constrained" : "free");
        if (sp[i].constraint) check_path(m, c, prompts[i], lens[i], g, gl, (int)ng, f, false, 14);
        free(g), free(gl), free(prompts[i]);
    }
    dspy_constraint_free(c);
    dspy_model_free(m);
}

static void test_engine_rejects(void) {
    dspy_model *m = NULL;
    CHECK_OK(dspy_model_load(g_dir, NULL, &m));
    if (!m) return;
    int32_t p[3] = {1, 2, 3};
    dspy_sampling sp = dspy_sampling_default();
    sp.max_tokens = 4;
    int32_t *g = NULL;
    size_t ng;
    dspy_constraint *c = NULL;
    CHECK_OK(dspy_constraint_new(2, V + 1, &c)); /* another vocabulary */
    CHECK_OK(dspy_constraint_set_free(c, 0, 0));
    sp.constraint = c;
    CHECK_STATUS(dspy_generate(m, p, 3, &sp, &g, NULL, &ng, NULL), DSPY_ERR_ARG);
    dspy_constraint_free(c);
    CHECK_OK(dspy_constraint_new(2, V, &c)); /* 0 -> 4 -> state 1, which allows nothing */
    CHECK_OK(dspy_constraint_set_token(c, 0, 4, 1));
    sp.constraint = c;
    CHECK_STATUS(dspy_generate(m, p, 3, &sp, &g, NULL, &ng, NULL), DSPY_ERR_ARG);
    /* accepting makes it whole: the output is 4 then eos */
    CHECK_OK(dspy_constraint_set_accept(c, 1, true));
    dspy_finish fin;
    CHECK_OK(dspy_generate(m, p, 3, &sp, &g, NULL, &ng, &fin));
    CHECK_INT(ng, 2);
    if (ng == 2) CHECK(g[0] == 4 && g[1] == EOS);
    CHECK_INT(fin, DSPY_FINISH_STOP);
    free(g);
    dspy_constraint_free(c);
    dspy_model_free(m);
}

int main(void) {
    dspy_str p = DSPY_STR_INIT;
    dspy_str_appendf(&p, "%s/cons", test_tmpdir());
    dspy_model_config cfg;
    CHECK_OK(dspy_model_config_preset("llama", "tiny", &cfg));
    cfg.vocab_size = V;
    cfg.max_position_embeddings = CTX;
    cfg.bos_token_id = 0;
    cfg.n_eos = 1;
    cfg.eos_token_ids[0] = EOS;
    CHECK_OK(dspy_model_write_random(dspy_str_cstr(&p), &cfg, 21, DSPY_DTYPE_F32, true));
    g_dir = dspy_str_take(&p);
    RUN(test_automaton);
    RUN(test_mask_op);
    RUN(test_engine_greedy_and_sampled);
    RUN(test_engine_mixed_batch);
    RUN(test_engine_rejects);
    free(g_dir);
    return check_summary("test_constraint");
}
