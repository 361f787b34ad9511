/* test_evaluate.c — the parallel executor and Evaluate: conformance CC-26 (all 8 points: the
 * score over all examples, the progress description over the successes, the log line's int
 * and float forms, failure_score, max_errors 1/2/3 on [1..5], the default budget of 10, the
 * calling thread for num_threads=1), CC-27 (columns, rows, V33 styling, 25-word cells, repr),
 * the result table, CSV and JSON against tests/ref/evaluate_tables.json (made with pandas by
 * scripts/make_ref_evaluate.py), SIGINT cancellation, context inheritance by workers, and the
 * exact-match metrics. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "dspy/evaluate.h"
#include "dspy/log.h"
#include "dspy/module.h"
#include "dspy/parallel.h"
#include "dspy/settings.h"
#include "tutorial_fixture.h"

#define CANCEL_MSG "Execution cancelled due to errors or interruption."

/* ---- log capture ------------------------------------------------------------------------------ */

static pthread_mutex_t g_log_mu = PTHREAD_MUTEX_INITIALIZER;
static dspy_str g_log = DSPY_STR_INIT;

static void capture(dspy_log_level level, const char *msg, void *user) {
    (void)user;
    pthread_mutex_lock(&g_log_mu);
    dspy_str_appendf(&g_log, "%s: %s\n", dspy_log_level_name(level), msg);
    pthread_mutex_unlock(&g_log_mu);
}

static void log_start(void) {
    dspy_str_clear(&g_log);
    dspy_log_set_sink(capture, NULL);
}

static const char *log_stop(void) {
    dspy_log_set_sink(NULL, NULL);
    return dspy_str_cstr(&g_log);
}

static char *read_stream(FILE *f) {
    fflush(f);
    long n = ftell(f);
    rewind(f);
    char *buf = calloc((size_t)(n > 0 ? n : 0) + 1, 1);
    if (buf && n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) buf[0] = '\0';
    return buf;
}

/* ---- a question/answer program whose LM answers by rule ----------------------------------------- */

/* Question "q<k>": answer "a<k>" for k < n_right, "wrong" otherwise; an LM error for each k in
 * `fail` (k < 64 as a bit mask). */
typedef struct qa_rule {
    int n_right;
    uint64_t fail;
    uint64_t garble; /* questions answered without any field marker (unparseable) */
    atomic_int calls;
    int sleep_us;
} qa_rule;

static int question_number(const dspy_json *messages) {
    const char *c = msg_content(messages, dspy_json_size(messages) - 1);
    const char *p = c ? strstr(c, "]]\nq") : NULL;
    return p ? atoi(p + 4) : -1;
}

static dspy_status qa_fn(void *user, const dspy_json *messages, const dspy_json *kwargs, int32_t choice, char **text) {
    (void)kwargs;
    (void)choice;
    qa_rule *r = user;
    atomic_fetch_add(&r->calls, 1);
    if (r->sleep_us) {
        struct timespec ts = {0, r->sleep_us * 1000L};
        nanosleep(&ts, NULL);
    }
    int k = question_number(messages);
    if (k >= 0 && k < 64 && (r->fail >> k) & 1) return dspy_fail(DSPY_ERR_REMOTE, "HTTP 500 for q%d", k);
    dspy_str s = DSPY_STR_INIT;
    if (k >= 0 && k < 64 && (r->garble >> k) & 1) dspy_str_appendf(&s, "I think\n\nit is a%d", k);
    else if (k >= 0 && k < r->n_right) dspy_str_appendf(&s, "[[ ## answer ## ]]\na%d", k);
    else dspy_str_append(&s, "[[ ## answer ## ]]\nwrong");
    *text = dspy_str_take(&s);
    return DSPY_OK;
}

static dspy_dataset *qa_devset(int n) {
    dspy_dataset *ds = NULL;
    CHECK_OK(dspy_dataset_new(&ds));
    const char *in[] = {"question"};
    for (int i = 0; i < n; i++) {
        dspy_example *ex = NULL;
        char q[32], a[32];
        snprintf(q, sizeof q, "q%d", i);
        snprintf(a, sizeof a, "a%d", i);
        dspy_example_new(&ex);
        dspy_example_set_str(ex, "question", q);
        dspy_example_set_str(ex, "answer", a);
        dspy_example_set_inputs(ex, in, 1);
        dspy_dataset_append(ds, ex);
    }
    return ds;
}

static dspy_module *qa_program(qa_rule *rule, dspy_lm **lm_out) {
    dspy_module *p = NULL;
    dspy_lm *lm = NULL;
    CHECK_OK(dspy_predict_new_text("question -> answer", NULL, NULL, &p));
    CHECK_OK(dspy_lm_new_scripted_fn(qa_fn, rule, NULL, &lm));
    CHECK_OK(dspy_module_set_lm(p, lm));
    *lm_out = lm;
    return p;
}

/* ---- CC-26 --------------------------------------------------------------------------------------- */

static dspy_status answer_fn(void *user, const dspy_json *messages, const dspy_json *kwargs, int32_t choice,
                             char **text) {
    (void)kwargs;
    (void)choice;
    bool right = *(bool *)user;
    const char *c = msg_content(messages, dspy_json_size(messages) - 1);
    const char *ans = strstr(c, "1+1") ? (right ? "2" : "3") : (right ? "4" : "5");
    dspy_str s = DSPY_STR_INIT;
    dspy_str_appendf(&s, "[[ ## answer ## ]]\n%s", ans);
    *text = dspy_str_take(&s);
    return DSPY_OK;
}

/* CC-26.1: answer_exact_match over the 2-example devset. */
static void test_cc26_1_score(void) {
    dspy_dataset *ds = NULL;
    CHECK_OK(dspy_dataset_new(&ds));
    const char *in[] = {"question"};
    const char *qs[][2] = {{"What is 1+1?", "2"}, {"What is 2+2?", "4"}};
    for (int i = 0; i < 2; i++) {
        dspy_example *ex;
        dspy_example_new(&ex);
        dspy_example_set_str(ex, "question", qs[i][0]);
        dspy_example_set_str(ex, "answer", qs[i][1]);
        dspy_example_set_inputs(ex, in, 1);
        dspy_dataset_append(ds, ex);
    }
    for (int pass = 0; pass < 2; pass++) {
        bool right = pass == 0;
        dspy_lm *lm = NULL;
        dspy_module *p = NULL;
        CHECK_OK(dspy_lm_new_scripted_fn(answer_fn, &right, NULL, &lm));
        CHECK_OK(dspy_predict_new_text("question -> answer", NULL, NULL, &p));
        CHECK_OK(dspy_module_set_lm(p, lm));
        dspy_metric m = dspy_metric_answer_exact_match("answer");
        dspy_evaluate_params ep = dspy_evaluate_params_default();
        ep.num_threads = 2;
        dspy_eval_result *r = NULL;
        log_start();
        CHECK_OK(dspy_evaluate(p, ds, &m, &ep, &r));
        const char *log = log_stop();
        CHECK_NEAR(dspy_eval_result_score(r), right ? 100.0 : 0.0, 0);
        CHECK_CONTAINS(log, right ? "INFO: Average Metric: 2 / 2 (100.0%)" : "INFO: Average Metric: 0 / 2 (0.0%)");
        char *repr = NULL;
        CHECK_OK(dspy_eval_result_repr(r, &repr));
        CHECK_STR(repr, right ? "EvaluationResult(score=100.0, results=<list of 2 results>)"
                              : "EvaluationResult(score=0.0, results=<list of 2 results>)");
        free(repr);
        CHECK_STR(dspy_prediction_get_str(dspy_eval_result_prediction(r, 1), "answer"), right ? "4" : "5");
        CHECK_INT(dspy_eval_result_item_kind(r, 0), DSPY_SCORE_BOOL);
        dspy_eval_result_free(r);
        dspy_module_free(p);
        dspy_lm_free(lm);
    }
    dspy_dataset_free(ds);
}

/* CC-26.2/26.3: 100 examples, 51 right, 48 wrong, 1 LM error. */
static void test_cc26_2_3_progress_and_failure(void) {
    for (int pass = 0; pass < 2; pass++) {
        qa_rule rule = {.n_right = 51, .fail = 1ull << 57};
        /* with q57 failing, questions 0..50 are right: 51 True, 48 False */
        dspy_lm *lm;
        dspy_module *p = qa_program(&rule, &lm);
        dspy_dataset *ds = qa_devset(100);
        dspy_metric m = dspy_metric_exact_match("answer");
        dspy_evaluate_params ep = dspy_evaluate_params_default();
        ep.num_threads = 4;
        ep.display_progress = true;
        FILE *bar = tmpfile();
        ep.progress_out = bar;
        ep.failure_score = pass == 0 ? 0.0 : 1.0;
        dspy_eval_result *r = NULL;
        log_start();
        CHECK_OK(dspy_evaluate(p, ds, &m, &ep, &r));
        const char *log = log_stop();
        char *text = read_stream(bar);
        fclose(bar);
        /* the bar: 100/100 ticks, the average over the 99 successes */
        CHECK(strncmp(text, "Average Metric: 51.00 / 99 (51.5%): 100%|██████████| 100/100 [", 81) == 0);
        if (pass == 0) {
            CHECK_CONTAINS(log, "INFO: Average Metric: 51.0 / 100 (51.0%)\n");
            CHECK_NEAR(dspy_eval_result_score(r), 51.0, 0);
        } else {
            CHECK_CONTAINS(log, "INFO: Average Metric: 52.0 / 100 (52.0%)\n");
            CHECK_NEAR(dspy_eval_result_score(r), 52.0, 0);
        }
        CHECK_CONTAINS(log, "ERROR: Error for Example({'question': 'q57', 'answer': 'a57'}) (input_keys={'question'}): ");
        CHECK_CONTAINS(log, "HTTP 500 for q57. Set `provide_traceback=True` for traceback.\n");
        CHECK_INT(dspy_eval_result_len(r), 100);
        CHECK_INT(dspy_eval_result_n_failed(r), 1);
        CHECK_INT(dspy_eval_result_failed_indices(r)[0], 57);
        /* the failed slot: (example, Prediction(), failure_score) */
        CHECK_INT(dspy_prediction_len(dspy_eval_result_prediction(r, 57)), 0);
        CHECK_NEAR(dspy_eval_result_item_score(r, 57), ep.failure_score, 0);
        CHECK_INT(dspy_eval_result_item_kind(r, 57), DSPY_SCORE_FLOAT);
        CHECK_CONTAINS(dspy_eval_result_item_error(r, 57), "HTTP 500 for q57");
        CHECK_STR(dspy_example_get_str(dspy_eval_result_example(r, 57), "question"), "q57");
        CHECK(dspy_eval_result_item_error(r, 56) == NULL);
        CHECK_NEAR(dspy_eval_result_item_score(r, 50), 1, 0);
        CHECK_NEAR(dspy_eval_result_item_score(r, 51), 0, 0);
        free(text);
        dspy_eval_result_free(r);
        dspy_dataset_free(ds);
        dspy_module_free(p);
        dspy_lm_free(lm);
    }
}

/* The log line prints an int sum for bool metrics without failures (the tutorial's teacher). */
static void test_cc26_2_int_sum(void) {
    qa_rule rule = {.n_right = 55};
    dspy_lm *lm;
    dspy_module *p = qa_program(&rule, &lm);
    dspy_dataset *ds = qa_devset(100);
    dspy_metric m = dspy_metric_exact_match("answer");
    dspy_eval_result *r = NULL;
    log_start();
    CHECK_OK(dspy_evaluate(p, ds, &m, NULL, &r));
    const char *log = log_stop();
    CHECK_CONTAINS(log, "INFO: Average Metric: 55 / 100 (55.0%)\n");
    char *line = NULL;
    CHECK_OK(dspy_eval_result_summary(r, &line));
    CHECK_STR(line, "Average Metric: 55 / 100 (55.0%)");
    free(line);
    CHECK_NEAR(dspy_eval_result_score(r), 55.0, 0);
    dspy_eval_result_free(r);
    /* a float metric always prints a float sum; round(100*s/n, 2) */
    dspy_eval_result *h = NULL;
    CHECK_OK(dspy_eval_result_new("f", &h));
    const dspy_example *ex = dspy_dataset_get(ds, 0);
    for (int i = 0; i < 3; i++) CHECK_OK(dspy_eval_result_append(h, ex, NULL, i == 0 ? 1.0 : 0.0, DSPY_SCORE_FLOAT));
    CHECK_OK(dspy_eval_result_summary(h, &line));
    CHECK_STR(line, "Average Metric: 1.0 / 3 (33.3%)");
    free(line);
    CHECK_NEAR(dspy_eval_result_score(h), 33.33, 0);
    dspy_eval_result_free(h);
    dspy_dataset_free(ds);
    dspy_module_free(p);
    dspy_lm_free(lm);
}

/* ---- CC-26.4-6: the executor over [1, 2, 3, 4, 5] ------------------------------------------------ */

typedef struct five {
    uint32_t fail_mask; /* bit i: item i fails */
    int out[5];         /* None = 0 */
    atomic_int ran;
    int sigint_at;      /* raise SIGINT in this item (-1: never) */
    int sleep_us;
} five;

static dspy_status five_item(void *user, size_t i, double *score) {
    five *f = user;
    atomic_fetch_add(&f->ran, 1);
    if (f->sleep_us) {
        struct timespec ts = {0, f->sleep_us * 1000L};
        nanosleep(&ts, NULL);
    }
    if ((int)i == f->sigint_at) raise(SIGINT);
    if ((f->fail_mask >> i) & 1) return dspy_fail(DSPY_ERR_ARG, "item %zu raises", i + 1);
    f->out[i] = (int)i + 1;
    *score = 1;
    return DSPY_OK;
}

static void test_cc26_4_5_6_max_errors(void) {
    dspy_parallel_params pp = dspy_parallel_params_default();
    pp.num_threads = 3;
    dspy_log_set_level(DSPY_LOG_OFF);

    /* 4: item 3 raises, max_errors=1 */
    five f = {.fail_mask = 1u << 2, .sigint_at = -1};
    pp.max_errors = 1;
    dspy_parallel_report rep;
    CHECK_STATUS(dspy_parallel_run(&pp, 5, five_item, NULL, &f, &rep), DSPY_ERR_CANCELLED);
    CHECK_STR(dspy_errmsg(), CANCEL_MSG);
    CHECK(rep.cancelled);
    CHECK(!rep.interrupted);
    dspy_parallel_report_clear(&rep);

    /* 5: max_errors=2 returns [1, 2, None, 4, 5] */
    five g = {.fail_mask = 1u << 2, .sigint_at = -1};
    pp.max_errors = 2;
    CHECK_OK(dspy_parallel_run(&pp, 5, five_item, NULL, &g, &rep));
    int want5[5] = {1, 2, 0, 4, 5};
    for (int i = 0; i < 5; i++) CHECK_INT(g.out[i], want5[i]);
    CHECK_INT(rep.n_errors, 1);
    CHECK_INT(rep.failed[0], 2);
    CHECK_STR(rep.failed_msg[0], "item 3 raises");
    CHECK(!rep.cancelled);
    dspy_parallel_report_clear(&rep);

    /* 6: items 3 and 5 raise, max_errors=3: [1, 2, None, 4, None], failed_indices [2, 4] */
    five h = {.fail_mask = (1u << 2) | (1u << 4), .sigint_at = -1};
    pp.max_errors = 3;
    CHECK_OK(dspy_parallel_run(&pp, 5, five_item, NULL, &h, &rep));
    int want6[5] = {1, 2, 0, 4, 0};
    for (int i = 0; i < 5; i++) CHECK_INT(h.out[i], want6[i]);
    CHECK_INT(rep.n_errors, 2);
    CHECK_INT(rep.failed[0], 2);
    CHECK_INT(rep.failed[1], 4);
    CHECK_INT(rep.n_ok, 3);
    CHECK(rep.ok[3] && !rep.ok[4]);
    CHECK_STR(rep.last_desc, "Average Metric: 3.00 / 3 (100.0%)");
    dspy_parallel_report_clear(&rep);

    /* the same on the calling thread: the 2nd error (max_errors=2) stops before item 5 */
    five k = {.fail_mask = (1u << 1) | (1u << 2), .sigint_at = -1};
    pp.num_threads = 1;
    pp.max_errors = 2;
    CHECK_STATUS(dspy_parallel_run(&pp, 5, five_item, NULL, &k, NULL), DSPY_ERR_CANCELLED);
    CHECK_INT(atomic_load(&k.ran), 3);
    dspy_log_set_level(DSPY_LOG_INFO);
}

/* CC-26.7: Evaluate's default max_errors is settings.max_errors = 10. */
static void test_cc26_7_default_budget(void) {
    dspy_settings_reset();
    dspy_log_set_level(DSPY_LOG_OFF);
    qa_rule rule = {.n_right = 64, .fail = 0xFFFull}; /* q0..q11 fail */
    dspy_lm *lm;
    dspy_module *p = qa_program(&rule, &lm);
    dspy_dataset *ds = qa_devset(20);
    dspy_metric m = dspy_metric_exact_match("answer");
    dspy_evaluate_params ep = dspy_evaluate_params_default();
    ep.num_threads = 1;
    dspy_eval_result *r = (dspy_eval_result *)1;
    CHECK_STATUS(dspy_evaluate(p, ds, &m, &ep, &r), DSPY_ERR_CANCELLED);
    CHECK_STR(dspy_errmsg(), CANCEL_MSG);
    CHECK(r == NULL);
    CHECK_INT(atomic_load(&rule.calls), 10); /* the 10th error aborts */
    /* 9 errors are tolerated */
    qa_rule nine = {.n_right = 64, .fail = 0x1FFull};
    dspy_lm *lm9;
    dspy_module *p9 = qa_program(&nine, &lm9);
    CHECK_OK(dspy_evaluate(p9, ds, &m, &ep, &r));
    CHECK_INT(dspy_eval_result_n_failed(r), 9);
    CHECK_NEAR(dspy_eval_result_score(r), 55.0, 0);
    dspy_eval_result_free(r);
    /* the settings' value is what "None" means */
    CHECK_OK(dspy_settings_set_max_errors(3));
    qa_rule three = {.n_right = 64, .fail = 0x7ull};
    dspy_lm *lm3;
    dspy_module *p3 = qa_program(&three, &lm3);
    CHECK_STATUS(dspy_evaluate(p3, ds, &m, &ep, &r), DSPY_ERR_CANCELLED);
    dspy_settings_reset();
    dspy_log_set_level(DSPY_LOG_INFO);
    dspy_module_free(p);
    dspy_module_free(p9);
    dspy_module_free(p3);
    dspy_lm_free(lm);
    dspy_lm_free(lm9);
    dspy_lm_free(lm3);
    dspy_dataset_free(ds);
}

/* CC-26.8: num_threads=1 runs every metric call on the calling thread; more threads do not. */
typedef struct thread_probe {
    pthread_t main;
    atomic_int on_main, elsewhere;
} thread_probe;

static dspy_status probe_metric(void *user, const dspy_example *ex, const dspy_prediction *pred, dspy_trace *trace,
                                double *score) {
    (void)ex;
    (void)pred;
    thread_probe *t = user;
    CHECK(trace == NULL);
    if (pthread_equal(pthread_self(), t->main)) atomic_fetch_add(&t->on_main, 1);
    else atomic_fetch_add(&t->elsewhere, 1);
    *score = 0.5;
    return DSPY_OK;
}

static void test_cc26_8_calling_thread(void) {
    qa_rule rule = {.n_right = 5, .sleep_us = 2000};
    dspy_lm *lm;
    dspy_module *p = qa_program(&rule, &lm);
    dspy_dataset *ds = qa_devset(12);
    for (int threads = 1; threads <= 4; threads += 3) {
        thread_probe t = {.main = pthread_self()};
        dspy_metric m = {"probe", probe_metric, &t, DSPY_SCORE_FLOAT};
        dspy_evaluate_params ep = dspy_evaluate_params_default();
        ep.num_threads = threads;
        dspy_eval_result *r = NULL;
        dspy_log_set_level(DSPY_LOG_WARN);
        CHECK_OK(dspy_evaluate(p, ds, &m, &ep, &r));
        dspy_log_set_level(DSPY_LOG_INFO);
        CHECK_INT(atomic_load(&t.on_main), threads == 1 ? 12 : 0);
        CHECK_INT(atomic_load(&t.elsewhere), threads == 1 ? 0 : 12);
        char *line = NULL;
        CHECK_OK(dspy_eval_result_summary(r, &line));
        CHECK_STR(line, "Average Metric: 6.0 / 12 (50.0%)");
        free(line);
        dspy_eval_result_free(r);
    }
    dspy_dataset_free(ds);
    dspy_module_free(p);
    dspy_lm_free(lm);
}

/* Workers inherit the caller's dspy.context (here: the LM), as ParallelExecutor does. */
static void test_workers_inherit_context(void) {
    qa_rule rule = {.n_right = 8};
    dspy_lm *lm = NULL;
    dspy_module *p = NULL;
    CHECK_OK(dspy_predict_new_text("question -> answer", NULL, NULL, &p));
    CHECK_OK(dspy_lm_new_scripted_fn(qa_fn, &rule, NULL, &lm));
    dspy_context *ctx = NULL;
    CHECK_OK(dspy_context_new(&ctx));
    dspy_context_set_lm(ctx, lm);
    CHECK_OK(dspy_context_push(ctx));
    dspy_dataset *ds = qa_devset(8);
    dspy_metric m = dspy_metric_exact_match("answer");
    dspy_evaluate_params ep = dspy_evaluate_params_default();
    ep.num_threads = 3;
    dspy_eval_result *r = NULL;
    dspy_log_set_level(DSPY_LOG_WARN);
    CHECK_OK(dspy_evaluate(p, ds, &m, &ep, &r));
    dspy_log_set_level(DSPY_LOG_INFO);
    CHECK_NEAR(dspy_eval_result_score(r), 100.0, 0);
    CHECK_INT(dspy_eval_result_n_failed(r), 0);
    CHECK_OK(dspy_context_pop(ctx));
    dspy_eval_result_free(r);
    dspy_context_free(ctx);
    dspy_dataset_free(ds);
    dspy_module_free(p);
    dspy_lm_free(lm);
}

/* An example without input keys is DSPy's ValueError, counted as a failure. */
static void test_example_without_inputs(void) {
    qa_rule rule = {.n_right = 8};
    dspy_lm *lm;
    dspy_module *p = qa_program(&rule, &lm);
    dspy_dataset *ds = qa_devset(2);
    dspy_example_free(NULL);
    dspy_example *bare = NULL;
    dspy_example_new(&bare);
    dspy_example_set_str(bare, "question", "q1");
    dspy_example_set_str(bare, "answer", "a1");
    dspy_dataset_append(ds, bare);
    dspy_metric m = dspy_metric_exact_match("answer");
    dspy_eval_result *r = NULL;
    dspy_log_set_level(DSPY_LOG_OFF);
    CHECK_OK(dspy_evaluate(p, ds, &m, NULL, &r));
    dspy_log_set_level(DSPY_LOG_INFO);
    CHECK_INT(dspy_eval_result_n_failed(r), 1);
    CHECK_CONTAINS(dspy_eval_result_item_error(r, 2), "Inputs have not been set for this example");
    dspy_eval_result_free(r);
    /* argument errors */
    CHECK_STATUS(dspy_evaluate(p, ds, NULL, NULL, &r), DSPY_ERR_ARG);
    dspy_dataset *empty = NULL;
    CHECK_OK(dspy_dataset_new(&empty));
    CHECK_STATUS(dspy_evaluate(p, empty, &m, NULL, &r), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "empty");
    dspy_dataset_free(empty);
    dspy_dataset_free(ds);
    dspy_module_free(p);
    dspy_lm_free(lm);
}

/* ---- SIGINT ------------------------------------------------------------------------------------- */

static atomic_int g_outer_sigints;
static void outer_handler(int sig) {
    (void)sig;
    atomic_fetch_add(&g_outer_sigints, 1);
}

static void test_sigint_cancels(void) {
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = outer_handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    dspy_log_set_level(DSPY_LOG_OFF);
    for (int threads = 1; threads <= 2; threads++) {
        five f = {.sigint_at = 1, .sleep_us = threads == 1 ? 0 : 20000};
        dspy_parallel_params pp = dspy_parallel_params_default();
        pp.num_threads = threads;
        pp.max_errors = 100;
        dspy_parallel_report rep;
        CHECK_STATUS(dspy_parallel_run(&pp, 5, five_item, NULL, &f, &rep), DSPY_ERR_CANCELLED);
        CHECK_STR(dspy_errmsg(), CANCEL_MSG);
        CHECK(rep.interrupted && rep.cancelled);
        CHECK(atomic_load(&f.ran) < 5);
        if (threads == 1) CHECK_INT(atomic_load(&f.ran), 2); /* items 0 and 1, then it stops */
        dspy_parallel_report_clear(&rep);
    }
    CHECK_INT(atomic_load(&g_outer_sigints), 0);
    /* the previous handler is back, and a later run starts clean */
    raise(SIGINT);
    CHECK_INT(atomic_load(&g_outer_sigints), 1);
    five g = {.sigint_at = -1};
    CHECK_OK(dspy_parallel_run(NULL, 5, five_item, NULL, &g, NULL));
    CHECK_INT(g.out[4], 5);
    dspy_log_set_level(DSPY_LOG_INFO);
    sigaction(SIGINT, &old, NULL);
}

/* ---- progress text -------------------------------------------------------------------------------- */

static void test_metric_desc_and_round(void) {
    dspy_str s = DSPY_STR_INIT;
    dspy_parallel_metric_desc(&s, 51, 99);
    CHECK_STR(dspy_str_cstr(&s), "Average Metric: 51.00 / 99 (51.5%)");
    dspy_str_clear(&s);
    dspy_parallel_metric_desc(&s, 0, 0);
    CHECK_STR(dspy_str_cstr(&s), "Average Metric: 0.00 / 0 (0%)");
    dspy_str_clear(&s);
    dspy_parallel_metric_desc(&s, 500, 500);
    CHECK_STR(dspy_str_cstr(&s), "Average Metric: 500.00 / 500 (100.0%)");
    dspy_str_clear(&s);
    dspy_parallel_metric_desc(&s, 2.675, 3);
    CHECK_STR(dspy_str_cstr(&s), "Average Metric: 2.67 / 3 (89.2%)"); /* 2.675 is below the tie */
    dspy_str_free(&s);
    /* Python round(): the exact binary value, ties to even */
    CHECK_NEAR(dspy_py_round(0.125, 2), 0.12, 0);
    CHECK_NEAR(dspy_py_round(0.375, 2), 0.38, 0);
    CHECK_NEAR(dspy_py_round(2.675, 2), 2.67, 0);
    CHECK_NEAR(dspy_py_round(100.0 * 2 / 3, 2), 66.67, 0);
    CHECK_NEAR(dspy_py_round(-0.55, 1), -0.6, 0);
}

/* ---- CC-27 ---------------------------------------------------------------------------------------- */

static dspy_example *ex_from(const char *json) {
    dspy_example *ex = NULL;
    CHECK_OK(dspy_example_from_json(json, strlen(json), "test", &ex));
    return ex;
}

static dspy_prediction *pred_from(const char *json) {
    dspy_json *j = J(json);
    dspy_prediction *p = NULL;
    CHECK_OK(dspy_prediction_from_fields(j, &p));
    dspy_json_decref(j);
    return p;
}

static void add(dspy_eval_result *r, const char *ex_json, const char *pred_json, double score, dspy_score_kind kind) {
    dspy_example *ex = ex_from(ex_json);
    dspy_prediction *p = pred_json ? pred_from(pred_json) : NULL;
    CHECK_OK(dspy_eval_result_append(r, ex, p, score, kind));
    dspy_prediction_free(p);
    dspy_example_free(ex);
}

static char *cell(const dspy_eval_result *r, size_t row, size_t col) {
    char *c = NULL;
    CHECK_OK(dspy_eval_result_cell(r, row, col, &c));
    return c;
}

static void test_cc27_columns_rows_styling(void) {
    dspy_eval_result *r = NULL;
    CHECK_OK(dspy_eval_result_new("answer_exact_match", &r));
    add(r, "{\"question\": \"What is 1+1?\", \"answer\": \"2\"}", "{\"answer\": \"2\"}", 100.0, DSPY_SCORE_FLOAT);
    add(r, "{\"question\": \"What is 2+2?\", \"answer\": \"4\"}", "{\"answer\": \"4\"}", 100.0, DSPY_SCORE_FLOAT);
    add(r, "{\"question\": \"What is 3+3?\", \"answer\": \"-1\"}", "{\"answer\": \"-1\"}", 0.0, DSPY_SCORE_FLOAT);
    dspy_json *cols = NULL, *rows = NULL;
    CHECK_OK(dspy_eval_result_columns(r, &cols));
    char *c = dspy_json_dumps(cols, DSPY_JSON_PY);
    CHECK_STR(c, "[\"question\", \"example_answer\", \"pred_answer\", \"answer_exact_match\"]");
    free(c);
    CHECK_OK(dspy_eval_result_rows(r, &rows));
    c = dspy_json_dumps(rows, DSPY_JSON_COMPACT);
    CHECK_STR(c, "[{\"question\":\"What is 1+1?\",\"example_answer\":\"2\",\"pred_answer\":\"2\",\"answer_exact_match\":100.0},"
                 "{\"question\":\"What is 2+2?\",\"example_answer\":\"4\",\"pred_answer\":\"4\",\"answer_exact_match\":100.0},"
                 "{\"question\":\"What is 3+3?\",\"example_answer\":\"-1\",\"pred_answer\":\"-1\",\"answer_exact_match\":0.0}]");
    free(c);
    char *x = cell(r, 0, 3);
    CHECK_STR(x, "✔️ [100.000]");
    free(x);
    x = cell(r, 2, 3);
    CHECK_STR(x, "✔️ [0.000]");
    free(x);
    x = cell(r, 2, 1);
    CHECK_STR(x, "-1");
    free(x);
    CHECK_STATUS(dspy_eval_result_cell(r, 3, 0, &x), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_eval_result_cell(r, 0, 4, &x), DSPY_ERR_ARG);
    dspy_json_decref(cols);
    dspy_json_decref(rows);
    dspy_eval_result_free(r);

    /* bool styling, and the tutorial's column order with one failed row */
    CHECK_OK(dspy_eval_result_new("<lambda>", &r));
    add(r, "{\"text\": \"t1\", \"label\": \"a\"}", "{\"reasoning\": \"r1\", \"label\": \"a\"}", 1, DSPY_SCORE_BOOL);
    add(r, "{\"text\": \"t2\", \"label\": \"b\"}", NULL, 0.0, DSPY_SCORE_FLOAT);
    add(r, "{\"text\": \"t3\", \"label\": \"c\"}", "{\"reasoning\": \"r3\", \"label\": \"a\"}", 0, DSPY_SCORE_BOOL);
    CHECK_OK(dspy_eval_result_columns(r, &cols));
    c = dspy_json_dumps(cols, DSPY_JSON_PY);
    CHECK_STR(c, "[\"text\", \"example_label\", \"reasoning\", \"pred_label\", \"<lambda>\", \"label\"]");
    free(c);
    x = cell(r, 0, 4);
    CHECK_STR(x, "✔️ [True]");
    free(x);
    x = cell(r, 2, 4);
    CHECK_STR(x, "✔️ [False]");
    free(x);
    x = cell(r, 1, 4);
    CHECK_STR(x, "✔️ [0.000]");
    free(x);
    x = cell(r, 1, 5);
    CHECK_STR(x, "b");
    free(x);
    x = cell(r, 0, 5);
    CHECK_STR(x, "NaN");
    free(x);
    dspy_json_decref(cols);
    dspy_eval_result_free(r);

    /* repr of a one-result EvaluationResult */
    CHECK_OK(dspy_eval_result_new("m", &r));
    add(r, "{\"q\": \"x\"}", "{\"a\": \"y\"}", 1.0, DSPY_SCORE_FLOAT);
    CHECK_OK(dspy_eval_result_repr(r, &c));
    CHECK_STR(c, "EvaluationResult(score=100.0, results=<list of 1 results>)"); /* round(100 * 1.0 / 1, 2) */
    free(c);
    dspy_eval_result_set_score(r, 100.0); /* EvaluationResult(score=100.0, results=[...]) */
    CHECK_NEAR(dspy_eval_result_score(r), 100.0, 0);
    CHECK_OK(dspy_eval_result_repr(r, &c));
    CHECK_STR(c, "EvaluationResult(score=100.0, results=<list of 1 results>)");
    free(c);
    dspy_eval_result_free(r);

    /* ints styled as ints, unless a float failure makes the column float64 */
    CHECK_OK(dspy_eval_result_new("n", &r));
    add(r, "{\"q\": \"x\"}", "{}", 3, DSPY_SCORE_INT);
    x = cell(r, 0, 1);
    CHECK_STR(x, "✔️ [3]");
    free(x);
    add(r, "{\"q\": \"y\"}", NULL, 0.0, DSPY_SCORE_FLOAT);
    x = cell(r, 0, 1);
    CHECK_STR(x, "✔️ [3.000]");
    free(x);
    dspy_eval_result_free(r);
}

static void test_cc27_truncation(void) {
    dspy_str words = DSPY_STR_INIT, want = DSPY_STR_INIT, exact = DSPY_STR_INIT;
    for (int i = 1; i <= 30; i++) {
        dspy_str_appendf(&words, "%sw%d", i == 1 ? "" : (i % 7 == 0 ? " \n\t " : " "), i);
        if (i <= 25) dspy_str_appendf(&want, "%sw%d", i == 1 ? "" : " ", i);
        if (i <= 25) dspy_str_appendf(&exact, "%sw%d", i == 1 ? "" : "  ", i);
    }
    dspy_str_append(&want, "...");
    dspy_json *ex = dspy_json_object(), *pred = dspy_json_object();
    dspy_json_set_str(ex, "long", dspy_str_cstr(&words));
    dspy_json_set_str(ex, "exact", dspy_str_cstr(&exact));
    dspy_json_set(pred, "list", J("[\"x\", 1]"));
    char *exs = dspy_json_dumps(ex, DSPY_JSON_COMPACT), *ps = dspy_json_dumps(pred, DSPY_JSON_COMPACT);
    dspy_eval_result *r = NULL;
    CHECK_OK(dspy_eval_result_new("m", &r));
    add(r, exs, ps, 1, DSPY_SCORE_BOOL);
    char *x = cell(r, 0, 0);
    CHECK_STR(x, dspy_str_cstr(&want));
    free(x);
    x = cell(r, 0, 1); /* 25 words: left as it is */
    CHECK_STR(x, dspy_str_cstr(&exact));
    free(x);
    x = cell(r, 0, 2);
    CHECK_STR(x, "['x', 1]");
    free(x);
    /* the saved rows are not truncated */
    dspy_json *rows = NULL;
    CHECK_OK(dspy_eval_result_rows(r, &rows));
    CHECK_STR(dspy_json_str(dspy_json_get(dspy_json_at(rows, 0), "long")), dspy_str_cstr(&words));
    dspy_json_decref(rows);
    dspy_eval_result_free(r);
    free(exs);
    free(ps);
    dspy_json_decref(ex);
    dspy_json_decref(pred);
    dspy_str_free(&words);
    dspy_str_free(&want);
    dspy_str_free(&exact);
}

/* ---- the table, CSV and JSON against pandas ------------------------------------------------------- */

static void test_reference_tables(void) {
    dspy_json *ref = NULL;
    CHECK_OK(dspy_json_load(test_source("tests/ref/evaluate_tables.json"), &ref));
    if (!ref) return;
    const dspy_json *cases = dspy_json_get(ref, "cases");
    CHECK(dspy_json_size(cases) >= 5);
    for (size_t ci = 0; ci < dspy_json_size(cases); ci++) {
        const dspy_json *cs = dspy_json_at(cases, ci);
        const char *name = dspy_json_str(dspy_json_get(cs, "name"));
        dspy_eval_result *r = NULL;
        CHECK_OK(dspy_eval_result_new(dspy_json_str(dspy_json_get(cs, "metric")), &r));
        const dspy_json *rows = dspy_json_get(cs, "rows");
        for (size_t i = 0; i < dspy_json_size(rows); i++) {
            const dspy_json *row = dspy_json_at(rows, i);
            char *ex_text = dspy_json_dumps(dspy_json_at(row, 0), DSPY_JSON_COMPACT | DSPY_JSON_UTF8);
            dspy_example *ex = ex_from(ex_text);
            dspy_prediction *p = NULL;
            CHECK_OK(dspy_prediction_from_fields(dspy_json_at(row, 1), &p));
            const char *k = dspy_json_str(dspy_json_at(row, 3));
            dspy_score_kind kind = strcmp(k, "bool") == 0 ? DSPY_SCORE_BOOL
                                   : strcmp(k, "int") == 0 ? DSPY_SCORE_INT : DSPY_SCORE_FLOAT;
            const dspy_json *sv = dspy_json_at(row, 2);
            double score = dspy_json_typeof(sv) == DSPY_JSON_BOOL ? (dspy_json_truthy(sv) ? 1 : 0) : dspy_json_number(sv);
            CHECK_OK(dspy_eval_result_append(r, ex, p, score, kind));
            dspy_prediction_free(p);
            dspy_example_free(ex);
            free(ex_text);
        }
        const dspy_json *head = dspy_json_get(cs, "head");
        int64_t max_rows = head && dspy_json_typeof(head) == DSPY_JSON_INT ? dspy_json_intval(head) : -1;
        char *table = NULL;
        CHECK_OK(dspy_eval_result_table_text(r, max_rows, &table));
        dspy_str want = DSPY_STR_INIT;
        dspy_str_append(&want, dspy_json_str(dspy_json_get(cs, "table")));
        if (max_rows >= 0 && (size_t)max_rows < dspy_json_size(rows))
            dspy_str_appendf(&want, "... %zu more rows not displayed ...\n", dspy_json_size(rows) - (size_t)max_rows);
        if (!table || strcmp(table, dspy_str_cstr(&want)) != 0) fprintf(stderr, "case %s: table differs\n", name);
        CHECK_STR(table, dspy_str_cstr(&want));
        dspy_str_free(&want);
        free(table);

        char path[1024];
        size_t n;
        char *got = NULL;
        snprintf(path, sizeof path, "%s/%s.csv", test_tmpdir(), name);
        CHECK_OK(dspy_eval_result_save_csv(r, path));
        CHECK_OK(dspy_read_file(path, &got, &n));
        CHECK_STR(got, dspy_json_str(dspy_json_get(cs, "csv")));
        free(got);
        snprintf(path, sizeof path, "%s/%s.json", test_tmpdir(), name);
        CHECK_OK(dspy_eval_result_save_json(r, path));
        CHECK_OK(dspy_read_file(path, &got, &n));
        CHECK_STR(got, dspy_json_str(dspy_json_get(cs, "json")));
        free(got);
        dspy_eval_result_free(r);
    }
    dspy_json_decref(ref);
}

/* Evaluate's own display_table / save_as_json / save_as_csv parameters. */
static void test_evaluate_table_and_files(void) {
    qa_rule rule = {.n_right = 2, .fail = 1ull << 3};
    dspy_lm *lm;
    dspy_module *p = qa_program(&rule, &lm);
    dspy_dataset *ds = qa_devset(5);
    dspy_metric m = dspy_metric_exact_match("answer");
    char jpath[1024], cpath[1024];
    snprintf(jpath, sizeof jpath, "%s/eval.json", test_tmpdir());
    snprintf(cpath, sizeof cpath, "%s/eval.csv", test_tmpdir());
    dspy_evaluate_params ep = dspy_evaluate_params_default();
    ep.num_threads = 2;
    ep.display_table = 2;
    FILE *tab = tmpfile();
    ep.table_out = tab;
    ep.save_as_json = jpath;
    ep.save_as_csv = cpath;
    dspy_eval_result *r = NULL;
    dspy_log_set_level(DSPY_LOG_OFF);
    CHECK_OK(dspy_evaluate(p, ds, &m, &ep, &r));
    dspy_log_set_level(DSPY_LOG_INFO);
    char *text = read_stream(tab);
    fclose(tab);
    /* made with pandas: head(2) keeps every column of the frame */
    CHECK_STR(text, "  question example_answer pred_answer exact_match answer\n"
                    "0       q0             a0          a0   ✔️ [True]    NaN\n"
                    "1       q1             a1          a1   ✔️ [True]    NaN\n"
                    "... 3 more rows not displayed ...\n");
    free(text);
    char *got = NULL;
    size_t n;
    CHECK_OK(dspy_read_file(jpath, &got, &n));
    CHECK_STR(got, "[{\"question\": \"q0\", \"example_answer\": \"a0\", \"pred_answer\": \"a0\", \"exact_match\": true}, "
                   "{\"question\": \"q1\", \"example_answer\": \"a1\", \"pred_answer\": \"a1\", \"exact_match\": true}, "
                   "{\"question\": \"q2\", \"example_answer\": \"a2\", \"pred_answer\": \"wrong\", \"exact_match\": false}, "
                   "{\"question\": \"q3\", \"answer\": \"a3\", \"exact_match\": 0.0}, "
                   "{\"question\": \"q4\", \"example_answer\": \"a4\", \"pred_answer\": \"wrong\", \"exact_match\": false}]");
    free(got);
    CHECK_OK(dspy_read_file(cpath, &got, &n));
    CHECK_STR(got, "question,example_answer,pred_answer,exact_match,answer\r\nq0,a0,a0,True,\r\nq1,a1,a1,True,\r\n"
                   "q2,a2,wrong,False,\r\nq3,,,0.0,a3\r\nq4,a4,wrong,False,\r\n");
    free(got);
    /* a file that cannot be written is an error */
    ep.save_as_json = "/nonexistent-dir/x.json";
    ep.display_table = 0;
    dspy_eval_result *r2 = NULL;
    dspy_log_set_level(DSPY_LOG_OFF);
    CHECK_STATUS(dspy_evaluate(p, ds, &m, &ep, &r2), DSPY_ERR_IO);
    dspy_log_set_level(DSPY_LOG_INFO);
    CHECK_CONTAINS(dspy_errmsg(), "save_as_json");
    CHECK(r2 == NULL);
    dspy_eval_result_free(r);
    dspy_dataset_free(ds);
    dspy_module_free(p);
    dspy_lm_free(lm);
}

/* ---- metrics ------------------------------------------------------------------------------------- */

static void test_metrics(void) {
    const char *norm[][2] = {
        {"The Answer!", "answer"},       {"  a  cat ", "cat"},   {"An apple, the pie.", "apple pie"},
        {"theatre", "theatre"},          {"Paris.", "paris"},    {"card_arrival", "cardarrival"},
        {"a-an-the", "aanthe"},          {"", ""},               {"x\tY\nz", "x y z"},
        {"a a the an", ""},              {"The-the", "thethe"},
    };
    for (size_t i = 0; i < sizeof norm / sizeof norm[0]; i++) {
        char *n = dspy_normalize_text(norm[i][0]);
        CHECK_STR(n, norm[i][1]);
        free(n);
    }
    dspy_example *ex = ex_from("{\"label\": \" card_arrival \", \"answers\": [\"Paris\", \"Lyon\"]}");
    dspy_metric em = dspy_metric_exact_match("label");
    double s = -1;
    dspy_prediction *p = pred_from("{\"label\": \"card_arrival\"}");
    CHECK_OK(em.fn(em.user, ex, p, NULL, &s));
    CHECK_NEAR(s, 1, 0);
    CHECK_STR(em.name, "exact_match");
    CHECK_INT(em.kind, DSPY_SCORE_BOOL);
    dspy_prediction_free(p);
    p = pred_from("{\"label\": \"Card_arrival\"}");
    CHECK_OK(em.fn(em.user, ex, p, NULL, &s));
    CHECK_NEAR(s, 0, 0);
    dspy_prediction_free(p);
    p = pred_from("{\"other\": 1}");
    CHECK_STATUS(em.fn(em.user, ex, p, NULL, &s), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "'Prediction' object has no attribute 'label'");
    dspy_prediction_free(p);
    dspy_metric aem = dspy_metric_answer_exact_match("answers");
    p = pred_from("{\"answers\": \"the lyon!\"}");
    CHECK_OK(aem.fn(aem.user, ex, p, NULL, &s));
    CHECK_NEAR(s, 1, 0);
    dspy_prediction_free(p);
    p = pred_from("{\"answers\": \"Marseille\"}");
    CHECK_OK(aem.fn(aem.user, ex, p, NULL, &s));
    CHECK_NEAR(s, 0, 0);
    CHECK_STR(aem.name, "answer_exact_match");
    dspy_metric missing = dspy_metric_exact_match("nope");
    CHECK_STATUS(missing.fn(missing.user, ex, p, NULL, &s), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "'Example' object has no attribute 'nope'");
    dspy_prediction_free(p);
    dspy_example_free(ex);
}

/* ---- dspy.c's failure reporting ------------------------------------------------------------------ */

typedef struct seen_failures {
    pthread_mutex_t mu;
    int n, parse;
    char reply[8][64];
    size_t index[8];
} seen_failures;

static void on_failure(void *user, const dspy_eval_failure *f) {
    seen_failures *s = user;
    pthread_mutex_lock(&s->mu);
    if (s->n < 8) {
        snprintf(s->reply[s->n], sizeof s->reply[0], "%s", f->lm_response ? f->lm_response : "(none)");
        s->index[s->n] = f->index;
    }
    s->n++;
    s->parse += f->status == DSPY_ERR_PARSE;
    pthread_mutex_unlock(&s->mu);
}

/* count_parse_failures=false: unparseable answers are scored failure_score and do not spend the
 * error budget; LM errors still do; on_failure sees every failure with the raw answer; with
 * log_failures=false nothing is logged per failure. DSPy's default counts them. */
static void test_parse_failures_as_answers(void) {
    qa_rule rule = {.n_right = 10, .garble = (1u << 1) | (1u << 4) | (1u << 7)};
    dspy_lm *lm = NULL;
    dspy_module *prog = qa_program(&rule, &lm);
    dspy_dataset *dev = qa_devset(10);
    dspy_metric m = dspy_metric_exact_match("answer");
    dspy_eval_result *r = NULL;
    /* DSPy: the third unparseable answer reaches max_errors=3 */
    dspy_evaluate_params p = dspy_evaluate_params_default();
    p.num_threads = 1;
    p.max_errors = 3;
    log_start();
    CHECK_STATUS(dspy_evaluate(prog, dev, &m, &p, &r), DSPY_ERR_CANCELLED);
    CHECK_CONTAINS(log_stop(), "ERROR: Error for Example({'question': 'q1', 'answer': 'a1'})");
    /* dspy.c's CLI mode */
    seen_failures seen = {.mu = PTHREAD_MUTEX_INITIALIZER};
    p.num_threads = 3;
    p.max_errors = 1;
    p.count_parse_failures = false;
    p.log_failures = false;
    p.on_failure = on_failure;
    p.failure_user = &seen;
    log_start();
    CHECK_OK(dspy_evaluate(prog, dev, &m, &p, &r));
    const char *log = log_stop();
    CHECK(strstr(log, "Error for") == NULL);
    CHECK_CONTAINS(log, "INFO: Average Metric: 7.0 / 10 (70.0%)");
    CHECK_INT(seen.n, 3);
    CHECK_INT(seen.parse, 3);
    for (int i = 0; i < 3 && i < seen.n; i++) {
        char want[64];
        snprintf(want, sizeof want, "I think\n\nit is a%zu", seen.index[i]);
        CHECK_STR(seen.reply[i], want);
    }
    if (r) {
        CHECK_INT(dspy_eval_result_n_failed(r), 3);
        CHECK_NEAR(dspy_eval_result_score(r), 70.0, 0);
        CHECK_INT(dspy_eval_result_item_status(r, 4), DSPY_ERR_PARSE);
        CHECK_STR(dspy_eval_result_item_reply(r, 4), "I think\n\nit is a4");
        CHECK_CONTAINS(dspy_eval_result_item_error(r, 4), "Adapter JSONAdapter failed to parse the LM response.");
        CHECK_INT(dspy_eval_result_item_status(r, 5), DSPY_OK);
        CHECK(dspy_eval_result_item_reply(r, 5) == NULL);
    }
    dspy_eval_result_free(r);
    r = NULL;
    /* an LM error still spends the budget */
    rule.fail = 1u << 2;
    seen.n = seen.parse = 0;
    CHECK_STATUS(dspy_evaluate(prog, dev, &m, &p, &r), DSPY_ERR_CANCELLED);
    CHECK(seen.n >= 1);
    p.max_errors = 2;
    seen.n = seen.parse = 0;
    CHECK_OK(dspy_evaluate(prog, dev, &m, &p, &r));
    CHECK_INT(seen.n, 4);
    CHECK_INT(seen.parse, 3);
    if (r) CHECK_INT(dspy_eval_result_item_status(r, 2), DSPY_ERR_REMOTE);
    dspy_eval_result_free(r);
    dspy_dataset_free(dev);
    dspy_module_free(prog);
    dspy_lm_free(lm);
}

int main(void) {
    RUN(test_cc26_1_score);
    RUN(test_parse_failures_as_answers);
    RUN(test_cc26_2_3_progress_and_failure);
    RUN(test_cc26_2_int_sum);
    RUN(test_cc26_4_5_6_max_errors);
    RUN(test_cc26_7_default_budget);
    RUN(test_cc26_8_calling_thread);
    RUN(test_workers_inherit_context);
    RUN(test_example_without_inputs);
    RUN(test_sigint_cancels);
    RUN(test_metric_desc_and_round);
    RUN(test_cc27_columns_rows_styling);
    RUN(test_cc27_truncation);
    RUN(test_reference_tables);
    RUN(test_evaluate_table_and_files);
    RUN(test_metrics);
    dspy_str_free(&g_log);
    return check_summary("test_evaluate");
}
