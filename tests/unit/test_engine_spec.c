/* test_engine_spec.c — steps that give a sequence several tokens: speculative decoding
 * (dspy_engine_params.spec_tokens, DSPY_ENGINE_SPEC), jump-forward (jump_tokens,
 * DSPY_ENGINE_JUMP: constrained sequences draft their automaton's jump lists, test_jump) and
 * decode runs (multi_steps, DSPY_ENGINE_MULTI: several greedy decode steps queued at once, each
 * fed the last one's tokens by kern/ops.h decode_advance; test_runs).
 *
 * With drafts on, every sequence must get exactly the tokens, logprobs (bit for bit) and finish
 * reason it gets alone with speculation off (dspy_generate, spec_tokens 0): greedy ones that
 * draft, and sampled or constrained ones in the same batch that do not. Cases: staggered batches
 * of mixed requests, max_tokens and stop ids landing inside an accepted run, eos, preemption in
 * a small pool, prefix-cache hits on blocks that drafting sequences filled, parameter errors.
 * Each drafting case asserts that drafts were accepted (and some rejected), so none can pass
 * without speculating. Models: random checkpoints (dspy_model_write_random_std: std 0.2 wanders,
 * most drafts rejected; std 0.02 repeats its last token, drafts accepted) and the HF fixtures
 * under tests/ref when present (loops that prompt lookup partly predicts).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "dspy/constraint.h"
#include "dspy/engine.h"
#include "dspy/model.h"
#include "dspy/str.h"

enum { V = 300, CTX = 128, MAXGEN = 128 };

static char *g_dir; /* random llama, vocab V, context CTX, no eos */
static int g_run = -1; /* the multi_steps engine() gives its engines (-1: auto, off on the CPU) */

/* std 0.2: greedy continuations that wander (drafts mostly rejected); 0.02: ones that repeat
 * their last token (drafts accepted) */
static char *model_dir_std(const char *name, int eos, uint64_t seed, double std) {
    dspy_str p = DSPY_STR_INIT;
    dspy_str_appendf(&p, "%s/%s", test_tmpdir(), name);
    dspy_model_config c;
    CHECK_OK(dspy_model_config_preset("llama", "tiny", &c));
    c.vocab_size = V;
    c.max_position_embeddings = CTX;
    c.bos_token_id = 0;
    c.n_eos = eos >= 0 ? 1 : 0;
    c.eos_token_ids[0] = eos;
    CHECK_OK(dspy_model_write_random_std(dspy_str_cstr(&p), &c, seed, DSPY_DTYPE_F32, true, std));
    return dspy_str_take(&p);
}

static char *model_dir(const char *name, int eos, uint64_t seed) { return model_dir_std(name, eos, seed, 0.2); }

static dspy_model *load(const char *dir) {
    dspy_model *m = NULL;
    CHECK_OK(dspy_model_load(dir, NULL, &m));
    return m;
}

/* n tokens: a pattern of `period` tokens repeated (period 0: no repetition). */
static void prompt_fill(int32_t *p, int n, int vocab, int salt, int period) {
    for (int i = 0; i < n; i++) {
        int k = period > 0 ? i % period : i;
        p[i] = (int32_t)((k * 37 + salt * 101 + 11) % vocab);
    }
}

typedef struct job {
    int32_t prompt[96];
    int len;
    dspy_sampling sp;
    int32_t stop;  /* its stop id when sp.n_stop_ids is 1 */
    int add_step;  /* added at this step or, while the engine refuses, later */
    int64_t id;
    int32_t toks[MAXGEN];
    float lps[MAXGEN];
    int n;
    dspy_finish fin;
    bool multi_end; /* its finishing event came in a step that gave it several tokens */
} job;

/* The HF checkpoints under tests/ref (vocabulary 1,000). */
static const char *const k_fixtures[3] = {"tests/ref/models/llama_bias_sharded", "tests/ref/models/qwen2_bias",
                                          "tests/ref/models/llama_untied_llama3"};

/* Fixture i's directory (the caller frees it), or NULL, reported as a skip, when it is absent. */
static char *fixture_dir(int i) {
    if (access(test_source(k_fixtures[i]), R_OK) != 0) {
        check_skip("HF fixture models absent");
        return NULL;
    }
    return strdup(test_source(k_fixtures[i]));
}

/* A greedy job of a len-token prompt (prompt_fill's salt and period) and max_tokens new tokens. */
static job greedy_job(int len, int vocab, int salt, int period, int max_tokens) {
    job j;
    memset(&j, 0, sizeof j);
    j.len = len;
    prompt_fill(j.prompt, len, vocab, salt, period);
    j.sp = dspy_sampling_default();
    j.sp.temperature = 0;
    j.sp.max_tokens = max_tokens;
    return j;
}

typedef struct run_stats {
    dspy_engine_profile pf;
    dspy_engine_stats st;
} run_stats;

/* Runs the jobs through engine e until all finish. Checks the events: n_generated counts every
 * token, a sequence's events of one step are consecutive and only the last may finish, and the
 * profile's rows are the fed prompt, decode and drafted tokens. */
static void run_jobs(dspy_engine *e, job *jobs, int nj, run_stats *rs) {
    int added = 0, done = 0;
    int64_t fed_rows = 0;
    dspy_engine_profile_get(e, &rs->pf); /* an engine may have run jobs before: count from here */
    for (int k = 0; k < DSPY_STEP_KINDS; k++) fed_rows += rs->pf.rows[k];
    fed_rows -= rs->pf.draft_tokens;
    for (int i = 0; i < nj; i++) jobs[i].n = 0, jobs[i].fin = DSPY_FINISH_NONE, jobs[i].multi_end = false;
    for (int step = 0; done < nj && step < 2000; step++) {
        while (added < nj && jobs[added].add_step <= step) {
            job *j = &jobs[added];
            dspy_status st = dspy_engine_add(e, j->prompt, (size_t)j->len, &j->sp, &j->id);
            if (st == DSPY_ERR_STATE) break;
            CHECK_OK(st);
            if (st) return;
            added++;
        }
        dspy_step_out so;
        CHECK_OK(dspy_engine_step(e, &so));
        fed_rows += so.n_prefill_tokens + so.n_decode_tokens;
        for (int k = 0; k < so.n_events; k++) {
            const dspy_step_event *ev = &so.events[k];
            int i = 0;
            while (i < added && jobs[i].id != ev->seq_id) i++;
            CHECK(i < added);
            if (i >= added) continue;
            job *j = &jobs[i];
            /* a sequence's events of a step are consecutive; all but the last are unfinished tokens */
            if (k + 1 < so.n_events && so.events[k + 1].seq_id == ev->seq_id)
                CHECK(ev->finish == DSPY_FINISH_NONE && ev->token >= 0);
            if (k > 0 && so.events[k - 1].seq_id != ev->seq_id)
                for (int q = 0; q < k - 1; q++) CHECK(so.events[q].seq_id != ev->seq_id);
            if (ev->token < 0) continue;
            CHECK(j->fin == DSPY_FINISH_NONE && j->n < MAXGEN);
            if (j->fin != DSPY_FINISH_NONE || j->n >= MAXGEN) continue;
            j->toks[j->n] = ev->token;
            j->lps[j->n++] = ev->logprob;
            CHECK_INT(ev->n_generated, j->n);
            if (ev->finish) {
                j->fin = ev->finish;
                j->multi_end = k > 0 && so.events[k - 1].seq_id == ev->seq_id;
                done++;
            }
        }
    }
    CHECK_INT(done, nj);
    dspy_engine_profile_get(e, &rs->pf);
    dspy_engine_stats_get(e, &rs->st);
    int64_t rows = 0;
    for (int k = 0; k < DSPY_STEP_KINDS; k++) rows += rs->pf.rows[k];
    CHECK(rows == fed_rows + rs->pf.draft_tokens);
    CHECK(rs->pf.accepted_tokens <= rs->pf.draft_tokens);
    CHECK_INT(rs->st.active, 0);
    CHECK_INT(rs->st.free_tokens, rs->st.capacity_tokens); /* drafted positions' blocks given back */
}

/* Every job's tokens, logprobs and finish equal dspy_generate's alone (speculation and
 * jump-forward off). */
static void expect_alone(const dspy_model *m, const job *jobs, int nj, const char *what) {
    for (int i = 0; i < nj; i++) {
        const job *j = &jobs[i];
        int32_t *g;
        float *gl;
        size_t ng;
        dspy_finish f;
        setenv("DSPY_ENGINE_JUMP", "0", 1); /* alone: one token a step, constrained ones too */
        CHECK_OK(dspy_generate(m, j->prompt, (size_t)j->len, &j->sp, &g, &gl, &ng, &f));
        unsetenv("DSPY_ENGINE_JUMP");
        bool same = (int)ng == j->n && f == j->fin;
        int k = 0;
        for (; same && k < j->n; k++) same = g[k] == j->toks[k] && gl[k] == j->lps[k];
        check_report(same, __FILE__, __LINE__,
                     "%s: job %d (temperature %g%s) gave %d tokens (%s), alone %zu (%s), first difference at %d", what,
                     i, (double)j->sp.temperature, j->sp.constraint ? ", constrained" : "", j->n,
                     dspy_finish_name(j->fin), ng, dspy_finish_name(f), k - 1);
        free(g), free(gl);
    }
}

static dspy_engine *engine(const dspy_model *m, int max_seqs, int total, int bs, int budget, int spec) {
    dspy_engine_params ep = dspy_engine_params_default();
    ep.max_seqs = max_seqs, ep.max_tokens_total = total, ep.block_size = bs, ep.max_batch_tokens = budget;
    ep.spec_tokens = spec;
    ep.multi_steps = g_run;
    dspy_engine *e = NULL;
    CHECK_OK(dspy_engine_new(m, &ep, &e));
    return e;
}

/* An automaton over tokens 10 .. 59: any of them, forever. */
static dspy_constraint *band(int vocab) {
    dspy_constraint *c = NULL;
    CHECK_OK(dspy_constraint_new(1, vocab, &c));
    if (!c) return NULL;
    for (int t = 10; t < 60; t++) CHECK_OK(dspy_constraint_set_token(c, 0, t, 0));
    CHECK_OK(dspy_constraint_set_accept(c, 0, true));
    return c;
}

/* Eight requests of every kind through four slots, added over the first steps. */
static int mixed_jobs(job *jobs, int vocab, const dspy_constraint *c) {
    static const struct {
        int len, period, max;
        float temp;
        int top_k;
        bool cons, ignore_eos;
        int add;
    } k[] = {
        {30, 6, 60, 0, 0, false, false, 0}, /* repeating prompt, greedy */
        {9, 0, 70, 0, 0, false, false, 0},  /* plain prompt, greedy */
        {24, 4, 40, 0.9f, 0, false, false, 1}, /* sampled */
        {20, 5, 30, 0, 0, true, false, 2},  /* greedy but constrained: no drafts */
        {2, 0, 90, 0, 0, false, true, 3},   /* short prompt, greedy, long */
        {17, 3, 25, 1.1f, 0, true, false, 5}, /* sampled and constrained */
        {40, 8, 50, 0, 5, false, false, 6}, /* greedy (top_k ignored) */
        {12, 0, 33, 0, 0, false, false, 9},
    };
    const int n = (int)(sizeof k / sizeof k[0]);
    for (int i = 0; i < n; i++) {
        job *j = &jobs[i];
        memset(j, 0, sizeof *j);
        j->len = k[i].len;
        prompt_fill(j->prompt, j->len, vocab, i, k[i].period);
        j->sp = dspy_sampling_default();
        j->sp.temperature = k[i].temp;
        j->sp.top_k = k[i].top_k;
        j->sp.seed = (uint64_t)(100 + i);
        j->sp.max_tokens = k[i].max;
        j->sp.ignore_eos = k[i].ignore_eos;
        j->sp.constraint = k[i].cons ? c : NULL;
        j->add_step = k[i].add;
    }
    return n;
}

/* Mixed batches with K = 0, 1, 4, 8 drafted tokens: all equal to alone; drafts accepted when on.
 * knob: a step variant's environment switch (engine_step.c) set while the engines are made. */
static void mixed_batch(const char *dir, int vocab, const char *what, const char *knob) {
    dspy_model *m = load(dir);
    dspy_constraint *c = band(vocab);
    if (!m || !c) return;
    static const int Ks[] = {0, 1, 4, 8};
    for (int q = 0; q < 4; q++) {
        job jobs[8];
        int nj = mixed_jobs(jobs, vocab, c);
        if (knob) setenv(knob, "1", 1);
        dspy_engine *e = engine(m, 4, 1024, 4, 8, Ks[q]);
        if (knob) unsetenv(knob);
        if (!e) continue;
        run_stats rs;
        run_jobs(e, jobs, nj, &rs);
        dspy_engine_free(e);
        char label[128];
        snprintf(label, sizeof label, "%s%s%s, K=%d", what, knob ? ", " : "", knob ? knob : "", Ks[q]);
        expect_alone(m, jobs, nj, label);
        if (Ks[q] == 0) {
            CHECK(rs.pf.spec_steps == 0 && rs.pf.draft_tokens == 0 && rs.pf.accepted_tokens == 0);
        } else {
            CHECK(rs.pf.spec_steps > 0 && rs.pf.accepted_tokens > 0);
            CHECK(rs.pf.accepted_tokens < rs.pf.draft_tokens); /* some drafts rejected too */
        }
        int64_t steps = 0;
        for (int k = 0; k < DSPY_STEP_KINDS; k++) steps += rs.pf.steps[k];
        printf("  %s: %lld steps, %lld drafted, %lld accepted, %d requests identical to alone\n", label,
               (long long)steps, (long long)rs.pf.draft_tokens, (long long)rs.pf.accepted_tokens, nj);
    }
    dspy_constraint_free(c);
    dspy_model_free(m);
}

static void test_mixed_batch(void) {
    mixed_batch(g_dir, V, "random llama", NULL);
    /* drafted rows among one-row segments attended apart, and in eager steps padded with rows in
     * no segment (CUDA's default): neither may change a bit on the CPU */
    mixed_batch(g_dir, V, "random llama", "DSPY_ENGINE_SPLIT_MIXED");
    mixed_batch(g_dir, V, "random llama", "DSPY_ENGINE_PAD_ROWS");
    for (int i = 0; i < 3; i++) {
        char *d = fixture_dir(i);
        if (!d) continue;
        mixed_batch(d, 1000, k_fixtures[i], NULL);
        free(d);
    }
}

/* One greedy job alone through an engine with K drafted tokens. */
static void run_one(const dspy_model *m, job *j, int spec, run_stats *rs) {
    dspy_engine *e = engine(m, 1, j->len + j->sp.max_tokens, 16, 256, spec);
    if (!e) return;
    run_jobs(e, j, 1, rs);
    dspy_engine_free(e);
}

/* max_tokens and stop ids that end a sequence inside a run of accepted drafts: the finish comes
 * at the same token as one token a step, and tokens after it are not reported. Adds to *length
 * and *stop the runs whose finish came in a step that gave several tokens. */
static void finish_inside(const char *dir, int vocab, const char *what, int spec, int *length, int *stop) {
    dspy_model *m = load(dir);
    if (!m) return;
    const job base = greedy_job(24, vocab, 7, 5, 48);
    run_stats rs;
    job j = base;
    run_one(m, &j, spec, &rs);
    expect_alone(m, &j, 1, what);
    const job full = j;
    int length_inside = 0, stop_inside = 0, runs = 0;
    for (int mt = 1; mt <= 20; mt++) {
        j = base;
        j.sp.max_tokens = mt;
        run_one(m, &j, spec, &rs);
        expect_alone(m, &j, 1, what);
        CHECK(j.fin == DSPY_FINISH_LENGTH || (j.fin == DSPY_FINISH_STOP && j.n < mt));
        length_inside += j.multi_end && j.fin == DSPY_FINISH_LENGTH;
        runs++;
    }
    /* each distinct token of the output as the stop id */
    int32_t seen[MAXGEN];
    int nseen = 0;
    for (int k = 1; k < full.n && nseen < 16; k++) {
        bool dup = false;
        for (int q = 0; q < nseen; q++) dup |= seen[q] == full.toks[k];
        if (dup) continue;
        seen[nseen++] = full.toks[k];
        j = base;
        j.stop = full.toks[k];
        j.sp.stop_ids = &j.stop;
        j.sp.n_stop_ids = 1;
        run_one(m, &j, spec, &rs);
        expect_alone(m, &j, 1, what);
        CHECK_INT(j.fin, DSPY_FINISH_STOP);
        CHECK(j.n > 0 && j.toks[j.n - 1] == j.stop);
        stop_inside += j.multi_end;
        runs++;
    }
    printf("  %s: %d runs; max_tokens ended a multi-token step %d times, a stop id %d times\n", what, runs,
           length_inside, stop_inside);
    *length += length_inside, *stop += stop_inside;
    dspy_model_free(m);
}

static void test_finish_inside_run(void) {
    int length = 0, stop = 0;
    char *rep = model_dir_std("spec_repeat", -1, 3, 0.02);
    finish_inside(g_dir, V, "random llama", 8, &length, &stop);
    finish_inside(rep, V, "repeating random llama", 8, &length, &stop);
    for (int i = 0; i < 3; i++) {
        char *d = fixture_dir(i);
        if (!d) continue;
        finish_inside(d, 1000, k_fixtures[i], 8, &length, &stop);
        free(d);
    }
    CHECK(length > 0 && stop > 0);
    free(rep);
}

/* The model's eos (a token its greedy loop produces) ends the sequence where it does without
 * speculation; ignore_eos runs through it. */
static void eos_case(int spec) {
    char *plain = model_dir("spec_noeos", -1, 5);
    dspy_model *m = load(plain);
    if (!m) return;
    job j = greedy_job(20, V, 3, 4, 40);
    run_stats rs;
    run_one(m, &j, spec, &rs);
    dspy_model_free(m);
    CHECK_INT(j.n, 40);
    int inside = 0, tried = 0;
    for (int k = 3; k < j.n && tried < 3; k++) {
        bool dup = false;
        for (int q = 0; q < k; q++) dup |= j.toks[q] == j.toks[k];
        if (dup) continue; /* first occurrences only: the eos run ends there */
        tried++;
        char name[32];
        snprintf(name, sizeof name, "spec_eos%d", tried);
        char *withe = model_dir(name, j.toks[k], 5); /* same seed: same weights */
        dspy_model *me = load(withe);
        if (me) {
            for (int ign = 0; ign < 2; ign++) {
                job x = j;
                x.sp.ignore_eos = ign == 1;
                run_one(me, &x, spec, &rs);
                expect_alone(me, &x, 1, ign ? "ignore_eos" : "eos");
                if (!ign) {
                    CHECK_INT(x.fin, DSPY_FINISH_STOP);
                    CHECK_INT(x.n, k + 1);
                    inside += x.multi_end;
                } else {
                    CHECK_INT(x.n, 40);
                }
            }
            dspy_model_free(me);
        }
        free(withe);
    }
    printf("  %d eos ids tried, %d ended a multi-token step\n", tried, inside);
    CHECK(tried > 0 && inside > 0);
    free(plain);
}

static void test_eos(void) { eos_case(6); }

/* Three drafting sequences in a pool of 7 blocks of 8: preempted and recomputed, drafting fewer
 * tokens when the pool is dry, and still exactly as alone. */
static void preemption_case(int spec) {
    dspy_model *m = load(g_dir);
    if (!m) return;
    job jobs[3];
    const int lens[3] = {18, 21, 26};
    for (int i = 0; i < 3; i++) {
        jobs[i] = greedy_job(lens[i], V, 10 + i, 3 + i, 20);
        jobs[i].sp.ignore_eos = true;
        jobs[i].add_step = i;
    }
    memcpy(jobs[2].prompt, jobs[0].prompt, sizeof(int32_t) * 16); /* a prefix-cache hit too */
    dspy_engine *e = engine(m, 3, 56, 8, 12, spec);
    if (!e) return;
    run_stats rs;
    run_jobs(e, jobs, 3, &rs);
    dspy_engine_free(e);
    expect_alone(m, jobs, 3, "preemption");
    CHECK(rs.st.preemptions >= 1);
    CHECK(spec ? rs.pf.accepted_tokens > 0 : rs.pf.run_steps > 0);
    printf("  3 sequences in 7 blocks: %lld preemptions, %lld drafted, %lld accepted, %lld steps in runs, "
           "identical to alone\n", (long long)rs.st.preemptions, (long long)rs.pf.draft_tokens,
           (long long)rs.pf.accepted_tokens, (long long)rs.pf.run_steps);
    dspy_model_free(m);
}

static void test_preemption(void) { preemption_case(4); }

/* A drafting sequence's full blocks are published with the keys and values of its final tokens:
 * a later prompt made of its prompt and output reuses them and gets the tokens it gets alone. */
static void prefix_case(int spec) {
    dspy_model *m = load(g_dir);
    if (!m) return;
    dspy_engine *e = engine(m, 2, 1024, 8, 64, spec);
    if (!e) return;
    job a = greedy_job(20, V, 21, 5, 50);
    run_stats rs;
    run_jobs(e, &a, 1, &rs);
    expect_alone(m, &a, 1, "first request");
    CHECK(spec ? rs.pf.accepted_tokens > 0 : rs.pf.run_steps > 0);
    /* b: a's prompt, a's first 44 tokens (positions 0 .. 63, 8 blocks), then 3 more tokens */
    job b;
    memset(&b, 0, sizeof b);
    memcpy(b.prompt, a.prompt, sizeof(int32_t) * 20);
    memcpy(b.prompt + 20, a.toks, sizeof(int32_t) * 44);
    b.prompt[64] = 5, b.prompt[65] = 6, b.prompt[66] = 7;
    b.len = 67;
    b.sp = a.sp;
    b.sp.max_tokens = 40;
    const int64_t hits0 = rs.st.prefix_hit_tokens;
    run_jobs(e, &b, 1, &rs);
    dspy_engine_free(e);
    expect_alone(m, &b, 1, "second request");
    CHECK_INT(rs.st.prefix_hit_tokens - hits0, 64);
    printf("  prompt + output of a %s sequence reused: %lld prefix tokens, identical to alone\n",
           spec ? "drafting" : "decode-run", (long long)(rs.st.prefix_hit_tokens - hits0));
    dspy_model_free(m);
}

static void test_prefix_cache(void) { prefix_case(6); }

/* Headers over tokens 60 .. 64 (the third also spelled 162), then a band of 10 .. 19 that may
 * start another header (token 60) or end: every header state has a jump list (the rest of
 * 60 .. 64), which the model follows where one token is allowed and may leave at the third. */
static dspy_constraint *headers(int vocab) {
    dspy_constraint *c = NULL;
    CHECK_OK(dspy_constraint_new(6, vocab, &c));
    if (!c) return NULL;
    for (int s = 0; s < 5; s++) CHECK_OK(dspy_constraint_set_token(c, s, 60 + s, s + 1));
    CHECK_OK(dspy_constraint_set_token(c, 2, 162, 3));
    for (int t = 10; t < 20; t++) CHECK_OK(dspy_constraint_set_token(c, 5, t, 5));
    CHECK_OK(dspy_constraint_set_token(c, 5, 60, 1));
    CHECK_OK(dspy_constraint_set_accept(c, 5, true));
    const int32_t path[5] = {60, 61, 62, 63, 64};
    for (int s = 0; s < 5; s++) CHECK_OK(dspy_constraint_set_jump(c, s, path + s, 5 - s));
    /* a list must walk: 63 is not allowed in state 1 */
    CHECK_STATUS(dspy_constraint_set_jump(c, 1, path + 2, 2), DSPY_ERR_ARG);
    int32_t n;
    CHECK(dspy_constraint_jump(c, 1, &n) != NULL && n == 4);
    CHECK(dspy_constraint_jump(c, 5, &n) == NULL && n == 0);
    return c;
}

/* Jump-forward: constrained jobs, greedy and sampled (the rows past a mismatch drew uniforms the
 * step rewinds), with max_tokens ending inside a header, through engines with jump_tokens 0, 2 and
 * 8: every job equal to alone; drafts fed and accepted when on, in fewer steps. */
static void test_jump(void) {
    dspy_model *m = load(g_dir);
    dspy_constraint *c = headers(V);
    if (!m || !c) return;
    static const struct {
        float temp;
        int max;
    } k[] = {{0, 60}, {0, 4}, {0.9f, 50}, {1.3f, 40}, {0, 2}, {0.7f, 7}, {0, 45}};
    const int nj = (int)(sizeof k / sizeof k[0]);
    static const int Js[] = {0, 2, 8};
    int64_t steps[3] = {0, 0, 0};
    for (int q = 0; q < 3; q++) {
        job jobs[8];
        for (int i = 0; i < nj; i++) {
            job *j = &jobs[i];
            memset(j, 0, sizeof *j);
            j->len = 6 + 3 * i;
            prompt_fill(j->prompt, j->len, V, 40 + i, 0);
            j->sp = dspy_sampling_default();
            j->sp.temperature = k[i].temp;
            j->sp.seed = (uint64_t)(7 + i);
            j->sp.max_tokens = k[i].max;
            j->sp.constraint = c;
            j->add_step = i / 2;
        }
        dspy_engine_params ep = dspy_engine_params_default();
        CHECK_INT(ep.jump_tokens, -1); /* auto: 8 on the CPU */
        ep.max_seqs = 4, ep.max_tokens_total = 1024, ep.block_size = 4, ep.max_batch_tokens = 8;
        ep.jump_tokens = Js[q];
        dspy_engine *e = NULL;
        CHECK_OK(dspy_engine_new(m, &ep, &e));
        if (!e) continue;
        run_stats rs;
        run_jobs(e, jobs, nj, &rs);
        dspy_engine_free(e);
        char label[64];
        snprintf(label, sizeof label, "jump-forward, jump_tokens %d", Js[q]);
        expect_alone(m, jobs, nj, label);
        for (int kk = 0; kk < DSPY_STEP_KINDS; kk++) steps[q] += rs.pf.steps[kk];
        if (Js[q] == 0) CHECK(rs.pf.draft_tokens == 0 && rs.pf.spec_steps == 0);
        else CHECK(rs.pf.draft_tokens > 0 && rs.pf.accepted_tokens > 0);
        int headers_seen = 0;
        for (int i = 0; i < nj; i++)
            for (int t = 0; t < jobs[i].n; t++) headers_seen += jobs[i].toks[t] == 60;
        CHECK(headers_seen > nj); /* every job starts with one, some write more */
        printf("  %s: %lld steps, %lld drafted, %lld accepted, %d headers\n", label, (long long)steps[q],
               (long long)rs.pf.draft_tokens, (long long)rs.pf.accepted_tokens, headers_seen);
    }
    CHECK(steps[2] < steps[0] && steps[1] < steps[0]);
    dspy_constraint_free(c);
    dspy_model_free(m);
}

/* Bad spec_tokens and DSPY_ENGINE_SPEC values; the variable overrides the parameter both ways. */
static void test_params(void) {
    dspy_model *m = load(g_dir);
    if (!m) return;
    dspy_engine_params ep = dspy_engine_params_default();
    CHECK_INT(ep.spec_tokens, 0);
    dspy_engine *e = NULL;
    ep.jump_tokens = -2;
    CHECK_STATUS(dspy_engine_new(m, &ep, &e), DSPY_ERR_ARG);
    ep.jump_tokens = DSPY_ENGINE_MAX_SPEC + 1;
    CHECK_STATUS(dspy_engine_new(m, &ep, &e), DSPY_ERR_ARG);
    ep.jump_tokens = 8;
    setenv("DSPY_ENGINE_JUMP", "-1", 1); /* the variable takes counts only */
    CHECK_STATUS(dspy_engine_new(m, &ep, &e), DSPY_ERR_ARG);
    setenv("DSPY_ENGINE_JUMP", "", 1); /* empty: not set */
    CHECK_OK(dspy_engine_new(m, &ep, &e));
    dspy_engine_free(e);
    e = NULL;
    unsetenv("DSPY_ENGINE_JUMP");
    ep.spec_tokens = -1;
    CHECK_STATUS(dspy_engine_new(m, &ep, &e), DSPY_ERR_ARG);
    ep.spec_tokens = DSPY_ENGINE_MAX_SPEC + 1;
    CHECK_STATUS(dspy_engine_new(m, &ep, &e), DSPY_ERR_ARG);
    ep.spec_tokens = 0;
    setenv("DSPY_ENGINE_SPEC", "4x", 1);
    CHECK_STATUS(dspy_engine_new(m, &ep, &e), DSPY_ERR_ARG);
    job j = greedy_job(24, V, 7, 5, 30);
    run_stats rs;
    setenv("DSPY_ENGINE_SPEC", "3", 1); /* on, over spec_tokens 0 */
    run_one(m, &j, 0, &rs);
    unsetenv("DSPY_ENGINE_SPEC");
    expect_alone(m, &j, 1, "DSPY_ENGINE_SPEC=3");
    CHECK(rs.pf.draft_tokens > 0 && rs.pf.spec_steps > 0);
    setenv("DSPY_ENGINE_SPEC", "0", 1); /* off, over spec_tokens 5 */
    run_one(m, &j, 5, &rs);
    unsetenv("DSPY_ENGINE_SPEC");
    expect_alone(m, &j, 1, "DSPY_ENGINE_SPEC=0");
    CHECK(rs.pf.draft_tokens == 0 && rs.pf.spec_steps == 0);
    dspy_model_free(m);
}

/* Decode runs (multi_steps R): every sequence gets the tokens, logprobs (bit for bit) and finish
 * it gets alone, one token a step. Mixed batches (a sampled or constrained sequence among them
 * keeps steps single while it is active), greedy batches added over the first steps with
 * max_tokens that end runs early and block size 4 (a run's positions cross blocks, taken when it
 * is planned), finishes by stop id and eos inside a run, preemption in a small pool, and
 * prefix-cache reuse of blocks a run filled. dspy_engine_limit_run(e, 1) turns runs off. */
static void test_runs(void) {
    dspy_model *m = load(g_dir);
    dspy_constraint *c = band(V);
    if (!m || !c) return;
    static const int Rs[] = {4, 7};
    for (int q = 0; q < 2; q++) {
        g_run = Rs[q];
        job jobs[8];
        int nj = mixed_jobs(jobs, V, c);
        dspy_engine *e = engine(m, 4, 1024, 4, 8, 0);
        if (!e) break;
        run_stats rs;
        run_jobs(e, jobs, nj, &rs);
        dspy_engine_free(e);
        char label[96];
        snprintf(label, sizeof label, "mixed batch, runs of %d", Rs[q]);
        expect_alone(m, jobs, nj, label);
        const int64_t mixed_runs = rs.pf.run_steps;
        CHECK(mixed_runs > 0);
        static const int lens[5] = {13, 2, 30, 21, 9}, maxs[5] = {13, 30, 7, 41, 22}, adds[5] = {0, 0, 2, 5, 9};
        for (int lim = 0; lim < 2; lim++) {
            job g[5];
            for (int i = 0; i < 5; i++) {
                g[i] = greedy_job(lens[i], V, 40 + i, i, maxs[i]);
                g[i].add_step = adds[i];
            }
            e = engine(m, 5, 1024, 4, 64, 0);
            if (!e) break;
            if (lim) dspy_engine_limit_run(e, 1);
            run_jobs(e, g, 5, &rs);
            dspy_engine_free(e);
            snprintf(label, sizeof label, "greedy batch, runs of %d%s", Rs[q], lim ? ", limited to 1" : "");
            expect_alone(m, g, 5, label);
            CHECK(lim ? rs.pf.run_steps == 0 : rs.pf.run_steps > 0);
            printf("  %s: %lld steps in runs (mixed batch: %lld), identical to alone\n", label,
                   (long long)rs.pf.run_steps, (long long)mixed_runs);
        }
    }
    g_run = 4;
    int length = 0, stop = 0;
    finish_inside(g_dir, V, "random llama, runs of 4", 0, &length, &stop);
    CHECK(length > 0 && stop > 0);
    eos_case(0);
    preemption_case(0);
    prefix_case(0);
    g_run = -1;
    dspy_engine *e = NULL;
    dspy_engine_params ep = dspy_engine_params_default();
    CHECK_INT(ep.multi_steps, -1);
    ep.multi_steps = 0;
    CHECK_STATUS(dspy_engine_new(m, &ep, &e), DSPY_ERR_ARG);
    ep.multi_steps = DSPY_ENGINE_MAX_RUN + 1;
    CHECK_STATUS(dspy_engine_new(m, &ep, &e), DSPY_ERR_ARG);
    ep.multi_steps = -1;
    setenv("DSPY_ENGINE_MULTI", "4x", 1);
    CHECK_STATUS(dspy_engine_new(m, &ep, &e), DSPY_ERR_ARG);
    setenv("DSPY_ENGINE_MULTI", "3", 1); /* on, over the CPU's auto */
    job j = greedy_job(24, V, 7, 5, 30);
    run_stats rs;
    run_one(m, &j, 0, &rs);
    unsetenv("DSPY_ENGINE_MULTI");
    expect_alone(m, &j, 1, "DSPY_ENGINE_MULTI=3");
    CHECK(rs.pf.run_steps > 0);
    dspy_constraint_free(c);
    dspy_model_free(m);
}

int main(void) {
    unsetenv("DSPY_ENGINE_SPEC"); /* the references run with speculation off */
    unsetenv("DSPY_ENGINE_JUMP");
    unsetenv("DSPY_ENGINE_MULTI");
    g_dir = model_dir("spec_rand", -1, 3);
    RUN(test_mixed_batch);
    RUN(test_finish_inside_run);
    RUN(test_eos);
    RUN(test_preemption);
    RUN(test_prefix_cache);
    RUN(test_jump);
    RUN(test_params);
    RUN(test_runs);
    free(g_dir);
    return check_summary("test_engine_spec");
}
