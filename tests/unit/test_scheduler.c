/* test_scheduler.c — continuous batching over the real engine (a tiny random Llama written to a
 * temp dir) and the real Llama 3 tokenizer: answers under batching equal the engine's own
 * single-sequence dspy_generate decoded by the tokenizer; stop strings cut the text where the
 * first one starts and hold back possible prefixes; n > 1, max_tokens, seeds, cancellation,
 * a full queue (refused) and abort; fair admission by preemption (a greedy choice resumes
 * exactly). Plus the pure stop-string scan. */
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "dspy/engine.h"
#include "dspy/model.h"
#include "dspy/tokenizer.h"
#include "server/scheduler.h"

/* Under ASan (-O0) every token of the 128256-row lm_head is slow: generate fewer. */
#define MAXTOK(k) (CHECK_UNDER_ASAN ? 3 + (k) % 4 : 6 + (k))

/* ---- stop scan -------------------------------------------------------------------------- */

static void scan(const char *text, const char *const *stops, size_t n, bool want_found, size_t want_pos) {
    size_t pos = 999;
    bool found = dspy_sched_stop_scan(text, strlen(text), (char *const *)stops, n, &pos);
    check_report(found == want_found && pos == want_pos, __FILE__, __LINE__,
                 "scan(\"%s\"): found %d pos %zu, want %d %zu", text, found, pos, want_found, want_pos);
}

static void test_stop_scan(void) {
    const char *s1[] = {"END"};
    scan("hello", s1, 1, false, 5);
    scan("hello E", s1, 1, false, 6);  /* "E" may start END */
    scan("hello EN", s1, 1, false, 6);
    scan("hello END more", s1, 1, true, 6);
    scan("ENDEND", s1, 1, true, 0);
    scan("", s1, 1, false, 0);
    scan("EN", s1, 1, false, 0);
    const char *s2[] = {"\n\n", "###", "##x"};
    scan("a\n", s2, 3, false, 1);
    scan("a##", s2, 3, false, 1);
    scan("a ## b", s2, 3, false, 6);
    scan("x###y\n\nz", s2, 3, true, 1); /* earliest start wins */
    scan("x\n\ny###", s2, 3, true, 1);
    scan("abc", NULL, 0, false, 3);
    const char *s3[] = {"\xc3\xa9t\xc3\xa9"}; /* "été" */
    scan("un \xc3\xa9", s3, 1, false, 3);
    scan("un \xc3\xa9t\xc3\xa9!", s3, 1, true, 3);
}

/* ---- with the engine -------------------------------------------------------------------- */

static dspy_model *g_model;
static dspy_tokenizer *g_tok;

static bool setup(void) {
    if (!test_have_shared("models/llama3-tokenizer/tokenizer.json")) {
        check_skip("../shared/models/llama3-tokenizer is missing");
        return false;
    }
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tiny", test_tmpdir());
    dspy_model_config cfg;
    CHECK_OK(dspy_model_config_preset("llama", "tiny", &cfg));
    CHECK_OK(dspy_model_write_random(dir, &cfg, 7, DSPY_DTYPE_BF16, true));
    dspy_model_params mp = dspy_model_params_default();
    mp.n_threads = 1; /* ctest runs two binaries at once on two cores */
    CHECK_OK(dspy_model_load(dir, &mp, &g_model));
    CHECK_OK(dspy_tokenizer_load(test_shared("models/llama3-tokenizer"), &g_tok));
    return g_model && g_tok;
}

static void encode(const char *text, int32_t **ids, size_t *n) {
    CHECK_OK(dspy_tokenizer_encode(g_tok, text, strlen(text), true, true, ids, n));
}

/* The engine's own answer for one sequence, decoded as the scheduler should stream it. */
static char *reference(const int32_t *ids, size_t n, const dspy_sampling *sp) {
    int32_t *out = NULL;
    size_t nout = 0;
    CHECK_OK(dspy_generate(g_model, ids, n, sp, &out, NULL, &nout, NULL));
    char *text = NULL;
    CHECK_OK(dspy_tokenizer_decode(g_tok, out, nout, true, &text, NULL));
    free(out);
    return text;
}

/* Polls a job to its end (bounded); returns the poll result. */
static int finish(sched_job *j, sched_choice_out *outs, int *es, const char **em) {
    int rc = 0;
    for (int i = 0; i < 600 && rc == 0; i++) rc = dspy_sched_job_poll(j, 100, outs, es, em);
    return rc;
}

static sched_job_params params(int n, float temperature, int max_tokens, uint64_t seed) {
    sched_job_params p = {0};
    p.n = n;
    p.sampling = dspy_sampling_default();
    p.sampling.temperature = temperature;
    p.sampling.max_tokens = max_tokens;
    p.sampling.seed = seed;
    return p;
}

static void free_outs(sched_choice_out *o, int n) {
    for (int i = 0; i < n; i++) dspy_str_free(&o[i].text);
}

static void test_batched_equals_single(void) {
    dspy_engine_params ep = dspy_engine_params_default();
    ep.max_seqs = 4;
    dspy_engine *eng = NULL;
    CHECK_OK(dspy_engine_new(g_model, &ep, &eng));
    sched *s = NULL;
    CHECK_OK(dspy_sched_new(eng, g_tok, 64, &s));
    if (!s) return;
    enum { NJ_MAX = 10 };
    const int NJ = CHECK_UNDER_ASAN ? 6 : NJ_MAX;
    const char *prompts[NJ_MAX] = {"Hello", "The capital of France is", "1 2 3 4", "def f(x):", "Once upon a time",
                               "Question: why?", "\xc3\xa9t\xc3\xa9 caf\xc3\xa9", "a", "Answer:", "[[ ## reasoning ## ]]"};
    sched_job *jobs[NJ_MAX];
    int32_t *ids[NJ_MAX];
    size_t nids[NJ_MAX];
    sched_choice_out outs[NJ_MAX][1];
    memset(outs, 0, sizeof outs);
    for (int k = 0; k < NJ; k++) {
        encode(prompts[k], &ids[k], &nids[k]);
        sched_job_params p = params(1, k % 3 == 0 ? 0.8f : 0.0f, MAXTOK(k), 100 + (uint64_t)k);
        CHECK_OK(dspy_sched_job_new(ids[k], nids[k], &p, &jobs[k]));
        CHECK_OK(dspy_sched_submit(s, jobs[k]));
    }
    for (int k = 0; k < NJ; k++) {
        int es = 0;
        const char *em = NULL;
        CHECK_INT(finish(jobs[k], outs[k], &es, &em), 1);
        sched_job_params p = params(1, k % 3 == 0 ? 0.8f : 0.0f, MAXTOK(k), 100 + (uint64_t)k);
        char *want = reference(ids[k], nids[k], &p.sampling);
        CHECK_STR(dspy_str_cstr(&outs[k][0].text), want);
        CHECK(outs[k][0].finish != NULL);
        CHECK(outs[k][0].completion_tokens >= 1 && outs[k][0].completion_tokens <= MAXTOK(k));
        if (outs[k][0].finish && strcmp(outs[k][0].finish, "length") == 0) CHECK_INT(outs[k][0].completion_tokens, MAXTOK(k));
        free(want);
        free_outs(outs[k], 1);
        dspy_sched_job_release(jobs[k]);
        free(ids[k]);
    }
    int32_t q = -1, r = -1;
    dspy_sched_counts(s, &q, &r);
    CHECK_INT(q, 0);
    CHECK_INT(r, 0);
    dspy_sched_free(s);
    dspy_engine_free(eng);
}

static void test_stop_strings_and_n(void) {
    dspy_engine *eng = NULL;
    CHECK_OK(dspy_engine_new(g_model, NULL, &eng));
    sched *s = NULL;
    CHECK_OK(dspy_sched_new(eng, g_tok, 8, &s));
    if (!s) return;
    int32_t *ids;
    size_t n;
    encode("The quick brown fox", &ids, &n);
    sched_job_params p = params(1, 0.0f, CHECK_UNDER_ASAN ? 12 : 24, 0);
    char *full = reference(ids, n, &p.sampling);
    size_t flen = strlen(full);
    CHECK(flen >= 6);
    /* a stop string taken from the middle of the greedy answer: the text ends where its first
     * occurrence starts, finish_reason "stop", fewer tokens */
    if (flen >= 6) {
        char stop[4];
        memcpy(stop, full + flen / 2, 3);
        stop[3] = '\0';
        char *cut = strstr(full, stop);
        size_t want_len = (size_t)(cut - full);
        char *stops[2] = {"this never appears \x01", stop};
        p.stop = stops;
        p.n_stop = 2;
        p.n = 3; /* greedy: three equal choices */
        sched_job *j = NULL;
        CHECK_OK(dspy_sched_job_new(ids, n, &p, &j));
        CHECK_OK(dspy_sched_submit(s, j));
        sched_choice_out o[3];
        memset(o, 0, sizeof o);
        int es;
        const char *em;
        CHECK_INT(finish(j, o, &es, &em), 1);
        for (int i = 0; i < 3; i++) {
            CHECK_INT(o[i].text.len, want_len);
            CHECK(strncmp(dspy_str_cstr(&o[i].text), full, want_len) == 0);
            CHECK_STR(o[i].finish, "stop");
            CHECK(o[i].completion_tokens < (CHECK_UNDER_ASAN ? 12 : 24));
        }
        free_outs(o, 3);
        dspy_sched_job_release(j);
    }
    /* sampling with n = 4 and a seed: choice i is the single run with seed + i */
    sched_job_params ps = params(4, 1.0f, CHECK_UNDER_ASAN ? 4 : 8, 4242);
    sched_job *j = NULL;
    CHECK_OK(dspy_sched_job_new(ids, n, &ps, &j));
    CHECK_OK(dspy_sched_submit(s, j));
    sched_choice_out o[4];
    memset(o, 0, sizeof o);
    int es;
    const char *em;
    CHECK_INT(finish(j, o, &es, &em), 1);
    for (int i = 0; i < 4; i++) {
        sched_job_params one = params(1, 1.0f, CHECK_UNDER_ASAN ? 4 : 8, 4242 + (uint64_t)i);
        char *want = reference(ids, n, &one.sampling);
        CHECK_STR(dspy_str_cstr(&o[i].text), want);
        free(want);
    }
    free_outs(o, 4);
    dspy_sched_job_release(j);
    free(full);
    free(ids);
    dspy_sched_free(s);
    dspy_engine_free(eng);
}

static void test_cancel_queue_abort(void) {
    dspy_engine_params ep = dspy_engine_params_default();
    ep.max_seqs = 1;
    dspy_engine *eng = NULL;
    CHECK_OK(dspy_engine_new(g_model, &ep, &eng));
    sched *s = NULL;
    CHECK_OK(dspy_sched_new(eng, g_tok, 1, &s));
    if (!s) return;
    int32_t *ids;
    size_t n;
    encode("Tell me a long story", &ids, &n);
    sched_job_params p = params(1, 0.0f, 4000, 0);
    p.sampling.ignore_eos = true;
    /* with one sequence at a time and a queue of one, submissions are refused quickly */
    sched_job *jobs[8] = {0};
    int accepted = 0, refused = 0;
    for (int k = 0; k < 8; k++) {
        CHECK_OK(dspy_sched_job_new(ids, n, &p, &jobs[k]));
        dspy_status st = dspy_sched_submit(s, jobs[k]);
        if (st == DSPY_OK) accepted++;
        else {
            CHECK_INT(st, DSPY_ERR_STATE);
            CHECK_CONTAINS(dspy_errmsg(), "overloaded");
            refused++;
            dspy_sched_job_release(jobs[k]);
            jobs[k] = NULL;
        }
    }
    CHECK(accepted >= 1 && accepted <= 3);
    CHECK(refused >= 5);
    /* cancel the first (running): it completes promptly without a finish reason */
    sched_choice_out o[1];
    memset(o, 0, sizeof o);
    int es = 0;
    const char *em = NULL;
    usleep(50 * 1000);
    dspy_sched_job_cancel(jobs[0]);
    CHECK_INT(finish(jobs[0], o, &es, &em), 1);
    CHECK(o[0].finish == NULL);
    free_outs(o, 1);
    /* abort fails the others with the given status */
    dspy_sched_abort(s, 503, "the server is shutting down");
    for (int k = 1; k < 8; k++) {
        if (!jobs[k]) continue;
        memset(o, 0, sizeof o);
        CHECK_INT(finish(jobs[k], o, &es, &em), -1);
        CHECK_INT(es, 503);
        CHECK_STR(em, "the server is shutting down");
        free_outs(o, 1);
    }
    sched_job *late = NULL;
    CHECK_OK(dspy_sched_job_new(ids, n, &p, &late));
    CHECK_STATUS(dspy_sched_submit(s, late), DSPY_ERR_CANCELLED);
    dspy_sched_job_release(late);
    for (int k = 0; k < 8; k++) dspy_sched_job_release(jobs[k]);
    free(ids);
    dspy_sched_free(s);
    dspy_engine_free(eng);
}

/* Fairness: a greedy job holding both decoding slots gives one up at once to a new short job
 * (preemption), the short job ends first, and the preempted choice resumes where it stopped:
 * its text equals the engine's own uninterrupted greedy answer, its token count is exact. A
 * seeded sampled job is never preempted: the short job waits for it. */
static void test_preemption(void) {
    dspy_engine_params ep = dspy_engine_params_default();
    ep.max_seqs = 2;
    dspy_engine *eng = NULL;
    sched *s = NULL;
    CHECK_OK(dspy_engine_new(g_model, &ep, &eng));
    if (eng) CHECK_OK(dspy_sched_new(eng, g_tok, 8, &s));
    if (!s) {
        dspy_engine_free(eng);
        return;
    }
    int long_max = CHECK_UNDER_ASAN ? 24 : 96;
    int32_t *lp = NULL, *sp = NULL;
    size_t nl = 0, ns = 0;
    encode("The long story of", &lp, &nl);
    encode("Hi", &sp, &ns);
    for (int seeded = 0; seeded < 2; seeded++) {
        sched_job_params p = params(2, seeded ? 0.8f : 0.0f, long_max, 11);
        p.preemptible = !seeded;
        sched_job *lj = NULL, *sj = NULL;
        CHECK_OK(dspy_sched_job_new(lp, nl, &p, &lj));
        CHECK_OK(dspy_sched_submit(s, lj));
        sched_choice_out lo[2] = {{DSPY_STR_INIT, NULL, false, 0}, {DSPY_STR_INIT, NULL, false, 0}};
        int es = 0;
        const char *em = NULL;
        for (int i = 0; i < 600 && lo[0].completion_tokens < 2; i++) dspy_sched_job_poll(lj, 10, lo, &es, &em);
        long long before = dspy_sched_preemptions(s);
        sched_job_params q = params(1, 0.0f, 2, 0);
        q.preemptible = true;
        CHECK_OK(dspy_sched_job_new(sp, ns, &q, &sj));
        CHECK_OK(dspy_sched_submit(s, sj));
        sched_choice_out so[1] = {{DSPY_STR_INIT, NULL, false, 0}};
        CHECK_INT(finish(sj, so, &es, &em), 1);
        int lrc = dspy_sched_job_poll(lj, 0, lo, &es, &em);
        if (!seeded) {
            CHECK_INT(lrc, 0); /* the short job got through while the long one still runs */
            CHECK(dspy_sched_preemptions(s) > before);
        } else {
            CHECK_INT(lrc, 1); /* it waited for the seeded job */
            CHECK(dspy_sched_preemptions(s) == before);
        }
        CHECK_INT(finish(lj, lo, &es, &em), 1);
        CHECK_INT(so[0].completion_tokens, 2);
        if (!seeded) {
            dspy_sampling g = dspy_sampling_default();
            g.temperature = 0;
            g.max_tokens = long_max;
            char *want = reference(lp, nl, &g);
            for (int c = 0; c < 2; c++) {
                CHECK_STR(dspy_str_cstr(&lo[c].text), want);
                CHECK_INT(lo[c].completion_tokens, long_max);
            }
            free(want);
        }
        free_outs(lo, 2);
        free_outs(so, 1);
        dspy_sched_job_release(lj);
        dspy_sched_job_release(sj);
    }
    free(lp);
    free(sp);
    dspy_sched_free(s);
    dspy_engine_free(eng);
}

static void test_context_errors(void) {
    dspy_engine *eng = NULL;
    CHECK_OK(dspy_engine_new(g_model, NULL, &eng));
    sched *s = NULL;
    CHECK_OK(dspy_sched_new(eng, g_tok, 4, &s));
    if (!s) return;
    dspy_engine_stats st;
    dspy_engine_stats_get(eng, &st);
    /* a prompt longer than the context: the job fails with 400 and the engine's message */
    size_t n = (size_t)st.context_length + 5;
    int32_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = 1000 + (int32_t)(i % 100);
    sched_job_params p = params(1, 0.0f, 4, 0);
    sched_job *j = NULL;
    CHECK_OK(dspy_sched_job_new(ids, n, &p, &j));
    CHECK_OK(dspy_sched_submit(s, j));
    sched_choice_out o[1];
    memset(o, 0, sizeof o);
    int es = 0;
    const char *em = NULL;
    CHECK_INT(finish(j, o, &es, &em), -1);
    CHECK_INT(es, 400);
    CHECK(em && *em);
    free_outs(o, 1);
    dspy_sched_job_release(j);
    /* bad job parameters */
    CHECK_STATUS(dspy_sched_job_new(ids, 0, &p, &j), DSPY_ERR_ARG);
    free(ids);
    dspy_sched_free(s);
    dspy_engine_free(eng);
}

/* A whole-answer job (sched_job_params.whole) wakes its poller once, at completion, with the
 * full text; a streamed one (the same request otherwise) gets the same text in pieces. Both equal
 * the engine's own answer. */
static void test_whole_wakes_once(void) {
    dspy_engine_params ep = dspy_engine_params_default();
    ep.max_seqs = 2;
    dspy_engine *eng = NULL;
    CHECK_OK(dspy_engine_new(g_model, &ep, &eng));
    sched *s = NULL;
    CHECK_OK(dspy_sched_new(eng, g_tok, 8, &s));
    if (!s) return;
    int32_t *ids = NULL;
    size_t n = 0;
    encode("Once upon a time", &ids, &n);
    const int max_tokens = MAXTOK(6);
    sched_job_params p = params(1, 0.0f, max_tokens, 0);
    p.sampling.ignore_eos = true; /* every answer runs to max_tokens: several steps to wake at */
    char *want = reference(ids, n, &p.sampling);
    for (int whole = 1; whole >= 0; whole--) {
        p.whole = whole;
        sched_job *j = NULL;
        CHECK_OK(dspy_sched_job_new(ids, n, &p, &j));
        CHECK_OK(dspy_sched_submit(s, j));
        sched_choice_out out[1] = {0};
        int es = 0;
        const char *em = NULL;
        int rc = 0, polls = 0;
        while (rc == 0 && polls < 600) {
            rc = dspy_sched_job_poll(j, 60000, out, &es, &em); /* a wake-up, not the timeout, ends a poll */
            polls++;
        }
        CHECK_INT(rc, 1);
        if (whole) CHECK_INT(polls, 1); /* (a streamed job's count depends on the timing) */
        CHECK_STR(dspy_str_cstr(&out[0].text), want);
        CHECK_INT(out[0].completion_tokens, max_tokens);
        free_outs(out, 1);
        dspy_sched_job_release(j);
    }
    free(want);
    free(ids);
    dspy_sched_free(s);
    dspy_engine_free(eng);
}

/* /metrics before the first step: the scheduler's snapshot starts from the engine as it was handed
 * over (steps it already ran, e.g. a GPU server's warm-up, are the baseline, not counted again at
 * the first step), and idle time counts the wait going on now, so that the difference of two
 * snapshots around a burst of requests is that burst's. */
static void test_stats_baseline(void) {
    dspy_engine_params ep = dspy_engine_params_default();
    dspy_engine *eng = NULL;
    CHECK_OK(dspy_engine_new(g_model, &ep, &eng));
    if (!eng) return;
    int32_t *ids = NULL;
    size_t n = 0;
    encode("Hello", &ids, &n);
    dspy_sampling sp = dspy_sampling_default();
    sp.max_tokens = 2;
    int64_t id = 0;
    CHECK_OK(dspy_engine_add(eng, ids, n, &sp, &id));
    dspy_engine_stats es = {0};
    for (int k = 0; k < 8; k++) { /* the prompt step, then decode steps until it is done */
        dspy_step_out out;
        CHECK_OK(dspy_engine_step(eng, &out));
        dspy_engine_stats_get(eng, &es);
        if (es.active == 0) break;
    }
    CHECK_INT(es.active, 0);
    dspy_engine_profile before;
    dspy_engine_profile_get(eng, &before);
    int64_t ran = 0;
    for (int k = 0; k < DSPY_STEP_KINDS; k++) ran += before.steps[k];
    CHECK(ran >= 2);
    sched *s = NULL;
    CHECK_OK(dspy_sched_new(eng, g_tok, 8, &s));
    if (s) {
        sched_stats a, b;
        dspy_sched_stats_get(s, &a);
        int64_t seen = 0;
        for (int k = 0; k < DSPY_STEP_KINDS; k++) seen += a.engine.steps[k];
        CHECK_INT(seen, ran);
        CHECK(a.kv_capacity > 0);
        CHECK(a.prompt_tokens == es.prompt_tokens && a.computed_tokens == es.computed_tokens);
        usleep(30000);
        dspy_sched_stats_get(s, &b);
        check_report(b.idle_ns - a.idle_ns >= 20000000, __FILE__, __LINE__,
                     "idle time while waiting for work: %lld ns between two snapshots 30 ms apart",
                     (long long)(b.idle_ns - a.idle_ns));
        dspy_sched_free(s);
    }
    free(ids);
    dspy_engine_free(eng);
}

/* The cases over the real engine. */
static void engine_cases(void) {
    RUN(test_batched_equals_single);
    RUN(test_stop_strings_and_n);
    RUN(test_cancel_queue_abort);
    RUN(test_context_errors);
    RUN(test_preemption);
    RUN(test_whole_wakes_once);
    RUN(test_stats_baseline);
}

int main(void) {
    RUN(test_stop_scan);
    if (setup()) {
        engine_cases();
        /* again with the last step's results handed out while the next runs (the order on CUDA,
         * where steps are asynchronous; on the CPU it delays each token by a step) */
        setenv("DSPY_SCHED_OVERLAP", "1", 1);
        engine_cases();
        unsetenv("DSPY_SCHED_OVERLAP");
    }
    dspy_tokenizer_free(g_tok);
    dspy_model_free(g_model);
    return check_summary("test_scheduler");
}
