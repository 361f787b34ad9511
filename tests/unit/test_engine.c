/* test_engine.c — the continuous-batching engine, the sampler, and the init-model/generate CLI.
 *
 * Batched, staggered, chunked runs must give exactly the tokens and logprobs of each sequence
 * run alone; the KV-cache decode path must agree with a full prefill (teacher forcing); finish
 * rules, capacity errors and the sampler's distribution are checked against direct
 * computations. Models are random checkpoints written by dspy_model_write_random, plus the HF
 * fixtures when present.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "dspy/engine.h"
#include "dspy/model.h"
#include "dspy/chat_template.h"
#include "dspy/str.h"
#include "dspy/tokenizer.h"
#include "dspy/backend.h"
#include "dspy/rng.h"
#include "kern/backend.h"

static char *g_dir; /* random llama, vocab 300, context 64 */

static char *model_dir(const char *name, const char *arch, int vocab, int ctx, int eos, uint64_t seed) {
    dspy_str p = DSPY_STR_INIT;
    dspy_str_appendf(&p, "%s/%s", test_tmpdir(), name);
    dspy_model_config c;
    CHECK_OK(dspy_model_config_preset(arch, "tiny", &c));
    c.vocab_size = vocab;
    c.max_position_embeddings = ctx;
    c.bos_token_id = 0;
    c.n_eos = eos >= 0 ? 1 : 0;
    c.eos_token_ids[0] = eos;
    CHECK_OK(dspy_model_write_random(dspy_str_cstr(&p), &c, seed, DSPY_DTYPE_F32, true));
    return dspy_str_take(&p);
}

static dspy_model *load(const char *dir) {
    dspy_model *m = NULL;
    CHECK_OK(dspy_model_load(dir, NULL, &m));
    return m;
}

/* ---- sampler ---------------------------------------------------------------------------- */

/* One draw of the CPU backend's sampler (kern/ops.h sample), the uniform drawn from r as the
 * engine does (only when sampling). */
static dspy_backend *g_cpu;
static int32_t sample1(const float *logits, int V, float temp, float top_p, int top_k, dspy_rng *r, float *lp) {
    dspy_sample_param sp = {temp, top_p, top_k, 0, temp > 0 ? dspy_rng_uniform(r) : 0.0};
    int32_t tok = -1;
    CHECK_OK(g_cpu->ops->sample(g_cpu, dspy_bt(g_cpu, &tok, 1, DSPY_DTYPE_I32), dspy_bt(g_cpu, lp, 1, DSPY_DTYPE_F32),
                                dspy_bt(g_cpu, (float *)logits, V, DSPY_DTYPE_F32),
                                dspy_bt(g_cpu, &sp, DSPY_SAMPLE_PARAM_WORDS, DSPY_DTYPE_I32), 1, V));
    return tok;
}

static void test_sampler(void) {
    dspy_backend_plan plan = {16, 16, 1, 16, 1, 1, 1, 0};
    CHECK_OK(dspy_backend_new((dspy_device){DSPY_DEVICE_CPU, 0}, &plan, &g_cpu));
    if (!g_cpu) return;
    float logits[4] = {(float)log(0.4), (float)log(0.3), (float)log(0.2), (float)log(0.1)};
    float lp;
    dspy_rng r;
    dspy_rng_seed(&r, 42);
    CHECK_INT(sample1(logits, 4, 0, 1, 0, &r, &lp), 0);
    CHECK_NEAR(lp, log(0.4), 1e-6);
    float tie[3] = {1, 3, 3};
    CHECK_INT(sample1(tie, 3, 0, 1, 0, &r, &lp), 1); /* lowest id on ties */
    CHECK_INT(sample1(logits, 4, 1.0f, 1, 1, &r, &lp), 0); /* top_k 1 = greedy */
    int count[4] = {0}, n = 40000;
    for (int i = 0; i < n; i++) count[sample1(logits, 4, 1.0f, 1.0f, 0, &r, &lp)]++;
    for (int k = 0; k < 4; k++) CHECK_NEAR((double)count[k] / n, exp(logits[k]), 0.01);
    /* temperature 2: p ~ sqrt(p) renormalised */
    memset(count, 0, sizeof count);
    double z = sqrt(0.4) + sqrt(0.3) + sqrt(0.2) + sqrt(0.1);
    for (int i = 0; i < n; i++) count[sample1(logits, 4, 2.0f, 1.0f, 0, &r, &lp)]++;
    for (int k = 0; k < 4; k++) CHECK_NEAR((double)count[k] / n, sqrt(exp(logits[k])) / z, 0.01);
    /* top_p 0.5 keeps {0, 1} (0.4 < 0.5, then 0.7), renormalised 4:3 */
    memset(count, 0, sizeof count);
    for (int i = 0; i < n; i++) count[sample1(logits, 4, 1.0f, 0.5f, 0, &r, &lp)]++;
    CHECK(count[2] == 0 && count[3] == 0);
    CHECK_NEAR((double)count[0] / n, 4.0 / 7, 0.01);
    /* top_k 2 keeps ties with the 2nd score */
    float tk[4] = {5, 1, 1, 0};
    memset(count, 0, sizeof count);
    for (int i = 0; i < 3000; i++) count[sample1(tk, 4, 10.0f, 1.0f, 2, &r, &lp)]++;
    CHECK(count[1] > 0 && count[2] > 0 && count[3] == 0);
    CHECK_NEAR(lp, tk[3] - log(exp(5) + 2 * exp(1) + 1), 10); /* lp is of the drawn token; finite */
    /* the same seed gives the same draws */
    dspy_rng a, b;
    dspy_rng_seed(&a, 7);
    dspy_rng_seed(&b, 7);
    int same = 0;
    for (int i = 0; i < 100; i++) same += sample1(logits, 4, 1, 1, 0, &a, &lp) == sample1(logits, 4, 1, 1, 0, &b, &lp);
    CHECK_INT(same, 100);
    /* a vocabulary larger than planned is an error, not an overflow */
    float big[32] = {0};
    int32_t tok;
    dspy_sample_param sp = {0, 1, 0, 0, 0};
    CHECK_INT(g_cpu->ops->sample(g_cpu, dspy_bt(g_cpu, &tok, 1, DSPY_DTYPE_I32), dspy_bt(g_cpu, &lp, 1, DSPY_DTYPE_F32),
                                 dspy_bt(g_cpu, big, 32, DSPY_DTYPE_F32),
                                 dspy_bt(g_cpu, &sp, DSPY_SAMPLE_PARAM_WORDS, DSPY_DTYPE_I32), 1, 32),
              DSPY_ERR_ARG);
    dspy_backend_free(g_cpu);
}

/* ---- engine ----------------------------------------------------------------------------- */

static int32_t *prompt_of(int n, int vocab, int salt) {
    int32_t *p = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++) p[i] = (int32_t)((i * 37 + salt * 101 + 11) % vocab);
    return p;
}

/* The KV-cache decode path equals a full prefill: teacher forcing with forward_logits. */
static void test_decode_matches_prefill(void) {
    dspy_model *m = load(g_dir);
    if (!m) return;
    int32_t *p = prompt_of(6, 300, 1);
    dspy_sampling sp = dspy_sampling_default();
    sp.temperature = 0;
    sp.max_tokens = 10;
    int32_t *gen;
    float *lps;
    size_t ng;
    dspy_finish fin;
    CHECK_OK(dspy_generate(m, p, 6, &sp, &gen, &lps, &ng, &fin));
    CHECK_INT(ng, 10);
    CHECK_INT(fin, DSPY_FINISH_LENGTH);
    int32_t all[16];
    memcpy(all, p, 6 * sizeof(int32_t));
    memcpy(all + 6, gen, 9 * sizeof(int32_t));
    float *logits = malloc(sizeof(float) * 15 * 300);
    CHECK_OK(dspy_model_forward_logits(m, all, 15, logits));
    for (int t = 0; t < 10; t++) {
        const float *row = logits + (size_t)(5 + t) * 300;
        int best = 0;
        double se = 0;
        for (int i = 1; i < 300; i++)
            if (row[i] > row[best]) best = i;
        for (int i = 0; i < 300; i++) se += exp((double)row[i] - row[best]);
        CHECK_INT(gen[t], best);
        CHECK_NEAR(lps[t], (double)row[gen[t]] - row[best] - log(se), 1e-6);
    }
    free(logits), free(gen), free(lps), free(p);
    dspy_model_free(m);
}

typedef struct {
    int len;
    dspy_sampling sp;
} req;

/* Runs reqs through one engine (staggered adds, small prefill budget) and checks each
 * sequence's tokens and logprobs against dspy_generate alone, and the engine's profile against
 * what its steps reported. knob: an environment switch of a step variant (engine_step.c) set
 * while the batched engine is made (NULL: none); the reference is made without it. */
static void batched_vs_single(const char *dir, int vocab, const char *knob) {
    dspy_model *m = load(dir);
    if (!m) return;
    enum { R = 5 };
    static const int32_t stop[1] = {7};
    req rq[R] = {{5, {0, 1, 0, 0, 12, NULL, 0, false, NULL}},
                 {17, {0.8f, 1, 0, 1, 9, NULL, 0, false, NULL}},
                 {30, {1.2f, 0.9f, 0, 2, 14, NULL, 0, false, NULL}},
                 {3, {1.0f, 1, 5, 3, 11, stop, 1, false, NULL}},
                 {9, {0.7f, 0.95f, 20, 4, 13, NULL, 0, true, NULL}}};
    int32_t *prompts[R], *toks[R];
    float *lps[R];
    int ntok[R] = {0};
    dspy_finish fins[R] = {0};
    int64_t ids[R];
    for (int i = 0; i < R; i++) {
        prompts[i] = prompt_of(rq[i].len, vocab, i);
        toks[i] = malloc(sizeof(int32_t) * 64);
        lps[i] = malloc(sizeof(float) * 64);
    }
    dspy_engine_params ep = dspy_engine_params_default();
    ep.max_seqs = 4;
    ep.max_batch_tokens = 8;
    ep.block_size = 4;
    ep.max_tokens_total = 256;
    dspy_engine *e;
    if (knob) setenv(knob, "1", 1);
    CHECK_OK(dspy_engine_new(m, &ep, &e));
    if (knob) unsetenv(knob);
    if (!e) return;
    int added = 0, steps = 0, done = 0;
    int64_t fed_steps = 0, fed_rows = 0, fed_seqs = 0;
    while (done < R && steps < 500) {
        /* add two at the start, then one more every third step while there is room */
        while (added < R && (added < 2 || steps % 3 == 0)) {
            dspy_status st = dspy_engine_add(e, prompts[added], (size_t)rq[added].len, &rq[added].sp, &ids[added]);
            if (st == DSPY_ERR_STATE) break;
            CHECK_OK(st);
            added++;
            if (steps > 0) break;
        }
        dspy_step_out so;
        CHECK_OK(dspy_engine_step(e, &so));
        CHECK(so.n_prefill_tokens <= 8);
        fed_steps += so.n_events > 0;
        fed_rows += so.n_prefill_tokens + so.n_decode_tokens;
        fed_seqs += so.n_events;
        for (int k = 0; k < so.n_events; k++) {
            const dspy_step_event *ev = &so.events[k];
            int i = 0;
            while (i < added && ids[i] != ev->seq_id) i++;
            CHECK(i < added);
            if (i >= added || ev->token < 0) continue;
            toks[i][ntok[i]] = ev->token;
            lps[i][ntok[i]++] = ev->logprob;
            CHECK_INT(ev->n_generated, ntok[i]);
            if (ev->finish) {
                fins[i] = ev->finish;
                done++;
            }
        }
        steps++;
    }
    CHECK_INT(done, R);
    dspy_engine_profile pf;
    dspy_engine_profile_get(e, &pf);
    int64_t ps = 0, pr = 0, pq = 0;
    for (int k = 0; k < DSPY_STEP_KINDS; k++) ps += pf.steps[k], pr += pf.rows[k], pq += pf.seqs[k];
    CHECK(ps == fed_steps && pr == fed_rows && pq == fed_seqs);
    CHECK(pf.steps[DSPY_STEP_GRAPH] == 0 && pf.captures == 0); /* the CPU has no graphs */
    CHECK(pf.steps[DSPY_STEP_MIXED] > 0 && pf.steps[DSPY_STEP_DECODE] > 0 && pf.steps[DSPY_STEP_PREFILL] > 0);
    CHECK_STR(dspy_step_kind_name(DSPY_STEP_MIXED), "mixed");
    dspy_engine_stats st;
    dspy_engine_stats_get(e, &st);
    CHECK_INT(st.active, 0);
    CHECK_INT(st.free_tokens, st.capacity_tokens);
    dspy_engine_free(e);
    for (int i = 0; i < R; i++) {
        int32_t *g;
        float *gl;
        size_t ng;
        dspy_finish f;
        CHECK_OK(dspy_generate(m, prompts[i], (size_t)rq[i].len, &rq[i].sp, &g, &gl, &ng, &f));
        bool same = (int)ng == ntok[i] && f == fins[i];
        for (int k = 0; same && k < ntok[i]; k++) same = g[k] == toks[i][k] && gl[k] == lps[i][k];
        check_report(same, __FILE__, __LINE__, "%s: sequence %d batched (%d tokens, %s) differs from alone (%zu, %s)",
                     dir, i, ntok[i], dspy_finish_name(fins[i]), ng, dspy_finish_name(f));
        if (rq[i].sp.n_stop_ids && ng < (size_t)rq[i].sp.max_tokens) CHECK_INT(g[ng - 1], 7);
        free(g), free(gl);
    }
    for (int i = 0; i < R; i++) free(prompts[i]), free(toks[i]), free(lps[i]);
    dspy_model_free(m);
}

static void test_batched_equals_single(void) {
    batched_vs_single(g_dir, 300, NULL);
    /* mixed steps' one-row segments listed first and attended by a call of their own; eager
     * steps padded with rows in no segment: neither may change a bit on the CPU */
    batched_vs_single(g_dir, 300, "DSPY_ENGINE_SPLIT_MIXED");
    batched_vs_single(g_dir, 300, "DSPY_ENGINE_PAD_ROWS");
    const char *fx[] = {"tests/ref/models/llama_bias_sharded", "tests/ref/models/qwen2_bias",
                        "tests/ref/models/llama_untied_llama3"};
    for (int i = 0; i < 3; i++) {
        if (access(test_source(fx[i]), R_OK) != 0) {
            check_skip("HF fixture models absent");
            continue;
        }
        char *d = strdup(test_source(fx[i]));
        batched_vs_single(d, 1000, NULL);
        free(d);
    }
}

static void test_seeds_and_stops(void) {
    dspy_model *m = load(g_dir);
    if (!m) return;
    int32_t *p = prompt_of(4, 300, 9);
    dspy_sampling sp = dspy_sampling_default();
    sp.max_tokens = 20;
    sp.seed = 11;
    int32_t *a, *b, *c;
    size_t na, nb, nc;
    CHECK_OK(dspy_generate(m, p, 4, &sp, &a, NULL, &na, NULL));
    CHECK_OK(dspy_generate(m, p, 4, &sp, &b, NULL, &nb, NULL));
    sp.seed = 12;
    CHECK_OK(dspy_generate(m, p, 4, &sp, &c, NULL, &nc, NULL));
    CHECK(na == 20 && nb == 20 && nc == 20);
    CHECK(memcmp(a, b, 20 * sizeof(int32_t)) == 0);
    CHECK(memcmp(a, c, 20 * sizeof(int32_t)) != 0); /* near-uniform random model: seeds differ */
    free(c);
    /* a stop id ends the sequence at its first occurrence, included */
    sp.seed = 11;
    sp.stop_ids = &a[5];
    sp.n_stop_ids = 1;
    int first = 0;
    while (a[first] != a[5]) first++;
    dspy_finish fin;
    CHECK_OK(dspy_generate(m, p, 4, &sp, &c, NULL, &nc, &fin));
    CHECK_INT(nc, first + 1);
    CHECK_INT(fin, DSPY_FINISH_STOP);
    CHECK(memcmp(a, c, nc * sizeof(int32_t)) == 0);
    free(c);
    /* max_tokens 0: until the context (64) ends */
    sp = dspy_sampling_default();
    sp.temperature = 0;
    CHECK_OK(dspy_generate(m, p, 4, &sp, &c, NULL, &nc, &fin));
    CHECK_INT(nc, 60);
    CHECK_INT(fin, DSPY_FINISH_LENGTH);
    free(a), free(b), free(c), free(p);
    dspy_model_free(m);
}

/* dspy_engine_step_begin / _end: the same events as dspy_engine_step, bit for bit (two engines,
 * three sampled and greedy sequences of staggered lengths); a sequence removed while a step is in
 * flight reports nothing from that step and is gone after it; one added meanwhile is not in that
 * step, joins the next and gets the tokens it gets alone; a second begin answers
 * DSPY_ERR_STATE, an unknown id NOTFOUND; an end with nothing begun reports nothing. */
static void test_step_halves(void) {
    dspy_model *m = load(g_dir);
    if (!m) return;
    dspy_engine *a = NULL, *b = NULL;
    CHECK_OK(dspy_engine_new(m, NULL, &a));
    CHECK_OK(dspy_engine_new(m, NULL, &b));
    if (!a || !b) {
        dspy_engine_free(a), dspy_engine_free(b), dspy_model_free(m);
        return;
    }
    int64_t ids[2][3];
    int32_t *p[3];
    for (int k = 0; k < 3; k++) {
        p[k] = prompt_of(3 + 5 * k, 300, 40 + k);
        dspy_sampling sp = dspy_sampling_default();
        sp.max_tokens = 6 + 3 * k;
        sp.temperature = k == 1 ? 0.0f : 0.9f;
        sp.seed = 5 + (uint64_t)k;
        CHECK_OK(dspy_engine_add(a, p[k], (size_t)(3 + 5 * k), &sp, &ids[0][k]));
        CHECK_OK(dspy_engine_add(b, p[k], (size_t)(3 + 5 * k), &sp, &ids[1][k]));
    }
    int steps = 0, events = 0;
    for (; steps < 100; steps++) {
        dspy_step_out oa, ob;
        bool launched = false;
        CHECK_OK(dspy_engine_step(a, &oa));
        CHECK_OK(dspy_engine_step_begin(b, &launched));
        CHECK_OK(dspy_engine_step_end(b, &ob));
        CHECK_INT(launched, oa.n_events > 0);
        CHECK_INT(ob.n_events, oa.n_events);
        if (ob.n_events != oa.n_events) break;
        for (int32_t k = 0; k < oa.n_events; k++) {
            const dspy_step_event *x = &oa.events[k], *y = &ob.events[k];
            CHECK(x->seq_id == y->seq_id && x->token == y->token && x->finish == y->finish &&
                  x->n_generated == y->n_generated && memcmp(&x->logprob, &y->logprob, sizeof x->logprob) == 0);
        }
        events += oa.n_events;
        if (oa.n_events == 0) break;
    }
    CHECK(events >= 6 + 9 + 12);
    dspy_step_out o;
    CHECK_OK(dspy_engine_step_end(b, &o)); /* nothing begun */
    CHECK_INT(o.n_events, 0);
    /* removal in flight */
    int64_t x = 0, y = 0;
    dspy_sampling sp = dspy_sampling_default();
    sp.max_tokens = 10;
    CHECK_OK(dspy_engine_add(b, p[2], 13, &sp, &x));
    CHECK_OK(dspy_engine_add(b, p[1], 8, &sp, &y));
    bool launched = false;
    CHECK_OK(dspy_engine_step_begin(b, &launched));
    CHECK(launched);
    int64_t z = 0;
    bool done = false;
    CHECK_OK(dspy_engine_step_done(b, &done));
    CHECK(done); /* the CPU runs a step as it is queued */
    CHECK_OK(dspy_engine_add(b, p[0], 3, &sp, &z));
    CHECK_INT(dspy_engine_step_begin(b, &launched), DSPY_ERR_STATE);
    CHECK_INT(dspy_engine_remove(b, 9999), DSPY_ERR_NOTFOUND);
    CHECK_OK(dspy_engine_remove(b, x));
    CHECK_OK(dspy_engine_remove(b, x)); /* listed once */
    dspy_engine_stats st;
    dspy_engine_stats_get(b, &st);
    CHECK_INT(st.active, 3); /* x still in the step, z added */
    CHECK_OK(dspy_engine_step_end(b, &o));
    CHECK_INT(o.n_events, 1);
    CHECK(o.events[0].seq_id == y);
    dspy_engine_stats_get(b, &st);
    CHECK_INT(st.active, 2);
    CHECK_INT(dspy_engine_remove(b, x), DSPY_ERR_NOTFOUND);
    CHECK_OK(dspy_engine_step(b, &o));
    CHECK_INT(o.n_events, 2);
    CHECK(o.events[0].seq_id == y && o.events[0].token >= 0 && o.events[1].seq_id == z);
    int32_t zt[10];
    int nz = 0;
    for (int s = 0; s < 40 && nz < 10; s++) {
        for (int32_t k = 0; k < o.n_events; k++)
            if (o.events[k].seq_id == z && o.events[k].token >= 0 && nz < 10) zt[nz++] = o.events[k].token;
        if (nz < 10) CHECK_OK(dspy_engine_step(b, &o));
    }
    int32_t *g = NULL;
    size_t ng = 0;
    CHECK_OK(dspy_generate(m, p[0], 3, &sp, &g, NULL, &ng, NULL));
    CHECK(nz == 10 && ng == 10 && g && memcmp(g, zt, sizeof zt) == 0); /* added in flight: as alone */
    free(g);
    for (int k = 0; k < 3; k++) free(p[k]);
    dspy_engine_free(a);
    dspy_engine_free(b);
    dspy_model_free(m);
}

/* The model's eos ends generation (reported as STOP, token included) unless ignore_eos. */
static void test_eos(void) {
    char *plain = model_dir("noeos", "llama", 300, 64, -1, 5);
    dspy_model *m = load(plain);
    int32_t *p = prompt_of(5, 300, 3);
    dspy_sampling sp = dspy_sampling_default();
    sp.temperature = 1.5f;
    sp.seed = 3;
    sp.max_tokens = 24;
    int32_t *g, *h;
    size_t ng, nh;
    dspy_finish fin;
    CHECK_OK(dspy_generate(m, p, 5, &sp, &g, NULL, &ng, &fin));
    dspy_model_free(m);
    CHECK_INT(ng, 24);
    int eos = g[6], first = 0;
    while (g[first] != eos) first++;
    char *withe = model_dir("eos", "llama", 300, 64, eos, 5); /* same seed: same weights */
    m = load(withe);
    CHECK_OK(dspy_generate(m, p, 5, &sp, &h, NULL, &nh, &fin));
    CHECK_INT(nh, first + 1);
    CHECK_INT(fin, DSPY_FINISH_STOP);
    CHECK(memcmp(g, h, nh * sizeof(int32_t)) == 0);
    free(h);
    sp.ignore_eos = true;
    CHECK_OK(dspy_generate(m, p, 5, &sp, &h, NULL, &nh, &fin));
    CHECK_INT(nh, 24);
    CHECK(memcmp(g, h, 24 * sizeof(int32_t)) == 0);
    free(g), free(h), free(p), free(plain), free(withe);
    dspy_model_free(m);
}

static void test_add_errors(void) {
    dspy_model *m = load(g_dir);
    if (!m) return;
    dspy_engine_params ep = dspy_engine_params_default();
    ep.max_seqs = 2;
    ep.max_tokens_total = 48;
    ep.block_size = 8;
    dspy_engine *e;
    CHECK_OK(dspy_engine_new(m, &ep, &e));
    dspy_engine_stats w0, w1; /* the warm-up: nothing to do without graphs, and nothing changes */
    dspy_engine_stats_get(e, &w0);
    CHECK_OK(dspy_engine_warmup(e));
    dspy_engine_stats_get(e, &w1);
    CHECK(memcmp(&w0, &w1, sizeof w0) == 0);
    int32_t *p = prompt_of(70, 300, 0);
    int64_t id, id2, id3;
    dspy_sampling sp = dspy_sampling_default();
    sp.max_tokens = 8;
    CHECK_STATUS(dspy_engine_add(e, p, 0, &sp, &id), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "prompt is empty");
    int32_t bad[2] = {3, 300};
    CHECK_STATUS(dspy_engine_add(e, bad, 2, &sp, &id), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "prompt token 1 is 300, outside the vocabulary (vocab_size=300)");
    CHECK_STATUS(dspy_engine_add(e, p, 60, &sp, &id), DSPY_ERR_CONTEXT);
    CHECK_CONTAINS(dspy_errmsg(), "prompt of 60 tokens + max_tokens 8 exceeds the model's context of 64 tokens");
    CHECK_STATUS(dspy_engine_add(e, p, 45, &sp, &id), DSPY_ERR_CONTEXT);
    CHECK_CONTAINS(dspy_errmsg(), "the engine holds 48 in all");
    sp.top_p = 0;
    CHECK_STATUS(dspy_engine_add(e, p, 4, &sp, &id), DSPY_ERR_ARG);
    sp.top_p = 1;
    CHECK_OK(dspy_engine_add(e, p, 20, &sp, &id)); /* the prompt's 20 tokens -> 3 blocks of 8 now */
    dspy_engine_stats st;
    dspy_engine_stats_get(e, &st);
    CHECK_INT(st.free_tokens, 24);
    CHECK_STATUS(dspy_engine_add(e, p, 40, &sp, &id2), DSPY_ERR_STATE);
    CHECK_CONTAINS(dspy_errmsg(), "not enough free KV cache now: the prompt needs 5 blocks, 3 free");
    CHECK_OK(dspy_engine_add(e, p, 5, &sp, &id2));
    CHECK_STATUS(dspy_engine_add(e, p, 1, &sp, &id3), DSPY_ERR_STATE);
    CHECK_CONTAINS(dspy_errmsg(), "engine is full: 2 sequences active (max_seqs)");
    dspy_step_out so;
    CHECK_OK(dspy_engine_step(e, &so));
    CHECK_INT(so.n_events, 2);
    CHECK_OK(dspy_engine_remove(e, id));
    CHECK_STATUS(dspy_engine_remove(e, id), DSPY_ERR_NOTFOUND);
    dspy_engine_stats_get(e, &st);
    CHECK_INT(st.active, 1);
    CHECK_INT(st.free_tokens, 40); /* the removed sequence's 2 full blocks stay cached, evictable */
    CHECK_INT(st.cached_tokens, 16);
    CHECK_OK(dspy_engine_add(e, p, 20, &sp, &id3));
    CHECK(id3 > id2);
    dspy_engine_stats_get(e, &st);
    CHECK_INT(st.prefix_hit_tokens, 16); /* the same 20-token prompt: its 2 full blocks were reused */
    dspy_engine_free(e);
    /* an idle engine steps to nothing */
    CHECK_OK(dspy_engine_new(m, NULL, &e));
    CHECK_OK(dspy_engine_step(e, &so));
    CHECK_INT(so.n_events, 0);
    dspy_engine_free(e);
    ep.max_seqs = 0;
    CHECK_STATUS(dspy_engine_new(m, &ep, &e), DSPY_ERR_ARG);
    float *lg = malloc(sizeof(float) * 65 * 300);
    CHECK_STATUS(dspy_model_forward_logits(m, p, 65, lg), DSPY_ERR_CONTEXT);
    free(lg), free(p);
    dspy_model_free(m);
}

/* ---- CLI -------------------------------------------------------------------------------- */

static int run_cmd(const char *cmd, char **out) {
    dspy_str full = DSPY_STR_INIT;
    dspy_str path = DSPY_STR_INIT;
    dspy_str_appendf(&path, "%s/cli.out", test_tmpdir());
    dspy_str_appendf(&full, "%s >'%s' 2>'%s.err'", cmd, dspy_str_cstr(&path), dspy_str_cstr(&path));
    int rc = system(dspy_str_cstr(&full));
    size_t len;
    *out = NULL;
    dspy_read_file(dspy_str_cstr(&path), out, &len);
    dspy_str_free(&full);
    dspy_str_free(&path);
    return rc;
}

static void test_cli(void) {
    char cmd[2048], *o1 = NULL, *o2 = NULL;
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --prompt-ids 5,6,7 --temperature 0 --max-tokens 12 --print-ids",
             test_bin("dspy"), g_dir);
    CHECK_INT(run_cmd(cmd, &o1), 0);
    CHECK_INT(run_cmd(cmd, &o2), 0);
    CHECK(o1 && o2 && strcmp(o1, o2) == 0);
    dspy_model *m = load(g_dir);
    int32_t p[3] = {5, 6, 7}, *g;
    size_t ng;
    dspy_sampling sp = dspy_sampling_default();
    sp.temperature = 0;
    sp.max_tokens = 12;
    CHECK_OK(dspy_generate(m, p, 3, &sp, &g, NULL, &ng, NULL));
    dspy_str want = DSPY_STR_INIT;
    for (size_t i = 0; i < ng; i++) dspy_str_appendf(&want, "%s%d", i ? "," : "", g[i]);
    dspy_str_appendc(&want, '\n');
    CHECK_STR(o1, dspy_str_cstr(&want));
    dspy_str_free(&want);
    free(g), free(o1), free(o2);
    dspy_model_free(m);
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --prompt-ids 5,x", test_bin("dspy"), g_dir);
    CHECK_INT(run_cmd(cmd, &o1) != 0, 1);
    free(o1);
    /* --device cuda: a clear error without a GPU, a run with one */
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --prompt-ids 5 --device cuda", test_bin("dspy"), g_dir);
    bool gpu = dspy_cuda_device_count(NULL) > 0;
    CHECK_INT(run_cmd(cmd, &o1) != 0, !gpu);
    free(o1);

    /* init-model round trips: llama and qwen2 load; the tokenizer files are copied */
    const char *tok = test_shared("models/llama3-tokenizer");
    bool have_tok = test_have_shared("models/llama3-tokenizer/tokenizer.json");
    const char *archs[] = {"llama", "qwen2"};
    for (int a = 0; a < 2; a++) {
        dspy_str dir = DSPY_STR_INIT;
        dspy_str_appendf(&dir, "%s/cli-%s", test_tmpdir(), archs[a]);
        snprintf(cmd, sizeof cmd, "'%s' init-model --arch %s --preset tiny --vocab 320 --seed 4 --out '%s'%s%s%s",
                 test_bin("dspy"), archs[a], dspy_str_cstr(&dir), have_tok ? " --tokenizer '" : "",
                 have_tok ? tok : "", have_tok ? "'" : "");
        CHECK_INT(run_cmd(cmd, &o1), 0);
        CHECK_CONTAINS(o1, "wrote ");
        free(o1);
        m = load(dspy_str_cstr(&dir));
        if (m) {
            const dspy_model_config *c = dspy_model_config_get(m);
            CHECK_INT(c->arch, a == 0 ? DSPY_ARCH_LLAMA : DSPY_ARCH_QWEN2);
            CHECK_INT(c->vocab_size, 320);
            CHECK_INT(c->hidden_size, 64);
            CHECK_INT(c->dtype, DSPY_DTYPE_BF16);
            CHECK(((const float *)dspy_model_weights_get(m)->layers[0].attn_norm.data)[3] == 1.0f);
            CHECK((dspy_model_weights_get(m)->layers[0].bqkv.data != NULL) == (a == 1));
            CHECK_INT(dspy_model_matrix_dtype(m), DSPY_DTYPE_BF16); /* kept as stored */
            int32_t q[2] = {1, 2};
            dspy_sampling s8 = dspy_sampling_default();
            s8.max_tokens = 8;
            CHECK_OK(dspy_generate(m, q, 2, &s8, &g, NULL, &ng, NULL));
            CHECK_INT(ng, 8);
            free(g);
            dspy_model_free(m);
        }
        if (have_tok) {
            dspy_str tj = DSPY_STR_INIT;
            dspy_str_appendf(&tj, "%s/tokenizer.json", dspy_str_cstr(&dir));
            CHECK(access(dspy_str_cstr(&tj), R_OK) == 0);
            dspy_str_free(&tj);
        } else {
            check_skip("shared tokenizer absent: copy not tested");
        }
        dspy_str_free(&dir);
    }
    /* 1b-shape without --weights: the config only, equal to Llama-3.2-1B's shape */
    dspy_str dir = DSPY_STR_INIT;
    dspy_str_appendf(&dir, "%s/cli-1b", test_tmpdir());
    snprintf(cmd, sizeof cmd, "'%s' init-model --preset 1b-shape --out '%s'", test_bin("dspy"), dspy_str_cstr(&dir));
    CHECK_INT(run_cmd(cmd, &o1), 0);
    CHECK_CONTAINS(o1, "1235.81M parameters, config only");
    free(o1);
    dspy_model_config c;
    CHECK_OK(dspy_model_config_load(dspy_str_cstr(&dir), &c));
    CHECK_INT(c.hidden_size, 2048);
    CHECK_INT(c.rope_type, DSPY_ROPE_LLAMA3);
    dspy_str_appendf(&dir, "/model.safetensors");
    CHECK(access(dspy_str_cstr(&dir), F_OK) != 0);
    dspy_str_free(&dir);
    snprintf(cmd, sizeof cmd, "'%s' init-model --preset giant --out '%s/x'", test_bin("dspy"), test_tmpdir());
    CHECK(run_cmd(cmd, &o1) != 0);
    free(o1);
}

/* --prompt and --messages go through the model directory's tokenizer and chat template. */
static void test_cli_text(void) {
    if (!test_have_shared("models/llama3-tokenizer/tokenizer.json")) {
        check_skip("shared tokenizer absent");
        return;
    }
    dspy_str dir = DSPY_STR_INIT;
    dspy_str_appendf(&dir, "%s/cli-full", test_tmpdir());
    char cmd[2048], *o = NULL;
    snprintf(cmd, sizeof cmd, "'%s' init-model --preset tiny --seed 8 --out '%s' --tokenizer '%s'", test_bin("dspy"),
             dspy_str_cstr(&dir), test_shared("models/llama3-tokenizer"));
    CHECK_INT(run_cmd(cmd, &o), 0);
    free(o);
    dspy_model *m = load(dspy_str_cstr(&dir));
    dspy_tokenizer *tok = NULL;
    CHECK_OK(dspy_tokenizer_load(dspy_str_cstr(&dir), &tok));
    if (!m || !tok) return;
    dspy_sampling sp = dspy_sampling_default();
    sp.temperature = 0;
    sp.max_tokens = 6;
    /* --prompt: BOS + text */
    int32_t *ids, *g;
    size_t n, ng;
    CHECK_OK(dspy_tokenizer_encode(tok, "Hello, world", 12, true, true, &ids, &n));
    CHECK(n == 4 && ids[0] == 128000);
    CHECK_OK(dspy_generate(m, ids, n, &sp, &g, NULL, &ng, NULL));
    dspy_str want = DSPY_STR_INIT;
    char *text;
    size_t tl;
    CHECK_OK(dspy_tokenizer_decode(tok, g, ng, true, &text, &tl));
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --prompt 'Hello, world' --temperature 0 --max-tokens 6",
             test_bin("dspy"), dspy_str_cstr(&dir));
    CHECK_INT(run_cmd(cmd, &o), 0);
    dspy_str_appendf(&want, "%s\n", text);
    CHECK_STR(o, dspy_str_cstr(&want));
    free(o), free(text), free(ids), free(g);
    /* --messages: the Llama 3.2 template (copied by init-model), no extra BOS, <|eot_id|> stops */
    dspy_chat_template *tpl = NULL;
    CHECK_OK(dspy_chat_template_load(dspy_str_cstr(&dir), &tpl));
    dspy_chat_msg msg = {"user", "What is 2+2?"};
    dspy_str r = DSPY_STR_INIT;
    CHECK_OK(dspy_chat_render(tpl, &msg, 1, true, NULL, &r, NULL, NULL));
    CHECK_OK(dspy_tokenizer_encode(tok, dspy_str_cstr(&r), r.len, false, true, &ids, &n));
    CHECK(ids[0] == 128000 && ids[1] == 128006);
    int32_t eot = 128009;
    sp.stop_ids = &eot;
    sp.n_stop_ids = 1;
    CHECK_OK(dspy_generate(m, ids, n, &sp, &g, NULL, &ng, NULL));
    dspy_str_clear(&want);
    for (size_t i = 0; i < ng; i++) dspy_str_appendf(&want, "%s%d", i ? "," : "", g[i]);
    dspy_str_appendc(&want, '\n');
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --messages '[{\"role\": \"user\", \"content\": "
             "\"What is 2+2?\"}]' --temperature 0 --max-tokens 6 --print-ids", test_bin("dspy"), dspy_str_cstr(&dir));
    CHECK_INT(run_cmd(cmd, &o), 0);
    CHECK_STR(o, dspy_str_cstr(&want));
    free(o), free(ids), free(g);
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --prompt x --prompt-ids 1", test_bin("dspy"),
             dspy_str_cstr(&dir));
    CHECK(run_cmd(cmd, &o) != 0);
    free(o);
    dspy_str_free(&r);
    dspy_str_free(&want);
    dspy_str_free(&dir);
    dspy_chat_template_free(tpl);
    dspy_tokenizer_free(tok);
    dspy_model_free(m);
}

/* KV memory grows with the sequences; when the pool runs dry the later sequence is preempted and
 * recomputed, and every sequence still gets exactly the tokens it gets alone (CPU). A prompt that
 * starts like an earlier one reuses its full blocks, also bit for bit. */
static void test_preempt_and_prefix_cache(void) {
    dspy_model *m = load(g_dir);
    if (!m) return;
    dspy_sampling sp = dspy_sampling_default();
    sp.temperature = 0.7f, sp.max_tokens = 20, sp.ignore_eos = true;
    int32_t *p[3];
    size_t len[3] = {18, 21, 26};
    for (int k = 0; k < 3; k++) p[k] = prompt_of((int)len[k], 300, 10 + k);
    memcpy(p[2], p[0], sizeof(int32_t) * 16); /* p[2] shares p[0]'s first two blocks of 8 */
    int32_t *alone[3];
    size_t nalone[3];
    for (int k = 0; k < 3; k++) {
        sp.seed = (uint64_t)k;
        CHECK_OK(dspy_generate(m, p[k], len[k], &sp, &alone[k], NULL, &nalone[k], NULL));
    }
    /* a pool of 8 blocks of 8 (one is the engine's own): three sequences needing 5-6 blocks each */
    dspy_engine_params ep = dspy_engine_params_default();
    ep.max_seqs = 3, ep.max_tokens_total = 56, ep.block_size = 8, ep.max_batch_tokens = 12;
    dspy_engine *e;
    CHECK_OK(dspy_engine_new(m, &ep, &e));
    int64_t id[3] = {0, 0, 0};
    int32_t got[3][32];
    int ng[3] = {0, 0, 0}, added = 0;
    for (int step = 0; step < 400; step++) {
        if (added < 3) {
            sp.seed = (uint64_t)added;
            dspy_status st = dspy_engine_add(e, p[added], len[added], &sp, &id[added]);
            if (st == DSPY_OK) added++;
            else CHECK_INT(st, DSPY_ERR_STATE);
        }
        dspy_step_out so;
        CHECK_OK(dspy_engine_step(e, &so));
        for (int k = 0; k < so.n_events; k++)
            for (int q = 0; q < 3; q++)
                if (so.events[k].seq_id == id[q] && so.events[k].token >= 0) got[q][ng[q]++] = so.events[k].token;
        if (added == 3 && so.n_events == 0) break;
    }
    dspy_engine_stats st;
    dspy_engine_stats_get(e, &st);
    CHECK(st.preemptions >= 1);
    for (int q = 0; q < 3; q++) {
        CHECK_INT(ng[q], (int)nalone[q]);
        CHECK(memcmp(got[q], alone[q], sizeof(int32_t) * nalone[q]) == 0);
    }
    printf("  3 sequences in 7 blocks: %lld preemptions, %lld prefix-cache tokens, identical to alone\n",
           (long long)st.preemptions, (long long)st.prefix_hit_tokens);
    dspy_engine_free(e);
    /* prefix cache alone: p[2] after p[0] reuses 16 tokens and computes the rest */
    ep.max_tokens_total = 512;
    CHECK_OK(dspy_engine_new(m, &ep, &e));
    for (int k = 0; k < 2; k++) {
        int q = k ? 2 : 0;
        int64_t sid;
        sp.seed = (uint64_t)q;
        CHECK_OK(dspy_engine_add(e, p[q], len[q], &sp, &sid));
        int n = 0;
        int32_t toks[32];
        for (;;) {
            dspy_step_out so;
            CHECK_OK(dspy_engine_step(e, &so));
            if (so.n_events == 0) break;
            if (so.events[0].token >= 0) toks[n++] = so.events[0].token;
        }
        CHECK_INT(n, (int)nalone[q]);
        CHECK(memcmp(toks, alone[q], sizeof(int32_t) * nalone[q]) == 0);
    }
    dspy_engine_stats_get(e, &st);
    CHECK_INT(st.prefix_hit_tokens, 16);
    CHECK_INT(st.prompt_tokens, (int64_t)(len[0] + len[2]));
    CHECK_INT(st.computed_tokens, (int64_t)(len[0] + len[2] - 16));
    dspy_engine_free(e);
    for (int k = 0; k < 3; k++) free(p[k]), free(alone[k]);
    dspy_model_free(m);
}

int main(void) {
    g_dir = model_dir("rand", "llama", 300, 64, -1, 3);
    RUN(test_sampler);
    RUN(test_decode_matches_prefill);
    RUN(test_batched_equals_single);
    RUN(test_seeds_and_stops);
    RUN(test_step_halves);
    RUN(test_eos);
    RUN(test_add_errors);
    RUN(test_preempt_and_prefix_cache);
    RUN(test_cli);
    RUN(test_cli_text);
    free(g_dir);
    return check_summary("test_engine");
}
