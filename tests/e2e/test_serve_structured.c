/* test_serve_structured.c — structured outputs and /metrics of `dspy serve`, end to end: a real
 * server process (dspy_local_launch) over a tiny random Llama made by `dspy init-model` with the
 * real Llama 3 tokenizer, real HTTP:
 *   - the tiny random student answers Banking77 devset questions (the tutorial dev split, first
 *     12, or all 100 with DSPY_TEST_FULL_DEV=1) through the program layer: ChainOfThought over "text -> label: Literal[77 names]"
 *     with the ChatAdapter (the layout extension is added for the local model) and with the
 *     JSONAdapter (json_schema); every answer parses and its label is one of the 77;
 *   - with local structured outputs off, the same requests carry no constraint (counted in
 *     /metrics) — the random model then does not produce the layout;
 *   - raw requests: json_object answers that stop are JSON objects; an unsupported schema and a
 *     bad dspy_layout get 400 naming the field; "openai/local:<dir>" is accepted as the model;
 *   - /metrics: counters move by exactly the requests and tokens made; histograms count them;
 *     the prefix cache reports hits for the shared system prompt;
 *   - jump-forward: a layout request's answer from a server with --jump-tokens 8 is the one of a
 *     server with --jump-tokens 0 (the CPU is bit for bit), its drafted tokens counted.
 */
#include <curl/curl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "http_client.h"
#include "dspy/adapter.h"
#include "dspy/clock.h"
#include "dspy/datasets.h"
#include "dspy/example.h"
#include "dspy/json.h"
#include "dspy/lm.h"
#include "dspy/local.h"
#include "dspy/module.h"
#include "dspy/prediction.h"
#include "dspy/settings.h"
#include "dspy/signature.h"
#include "dspy/str.h"


/* questions per adapter: 12 in `make check` (4 under ASan, where the server is ~10x slower);
 * DSPY_TEST_FULL_DEV=1 runs the whole dev split (100) */
static size_t g_n_dev = CHECK_UNDER_ASAN ? 4 : 12;

static char g_model[1024];
static dspy_labels *g_labels;
static dspy_dataset *g_dev;

/* ---- HTTP --------------------------------------------------------------------------------- */

/* GET (body NULL) or POST JSON; the body appended to out; returns the status (0 on a transport
 * error). */
static long http(const char *url, const char *body, dspy_str *out) {
    test_http_reply r = {0};
    test_http(NULL, url, body, 120, &r);
    dspy_str_appendn(out, r.body.ptr ? r.body.ptr : "", r.body.len);
    test_http_reply_free(&r);
    return r.status;
}

/* The value of a metric line "name value" (name with its labels, exactly); -1 when absent. */
static double metric(const char *text, const char *name) {
    size_t n = strlen(name);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, name, n) == 0 && p[n] == ' ') return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        if (p) p++;
    }
    return -1;
}

static char *scrape(const char *root) {
    char url[512];
    snprintf(url, sizeof url, "%s/metrics", root);
    dspy_str b = DSPY_STR_INIT;
    long st = http(url, NULL, &b);
    CHECK_INT(st, 200);
    return dspy_str_take(&b);
}

/* /metrics once the server has recorded at least `n` more finished requests than in `prev`: the
 * server records a request right after sending its response, so a scrape that follows the last
 * answer at once can miss that answer's counts. Gives up (and returns the last scrape) after 10 s. */
static char *scrape_after(const char *root, const char *prev, int n) {
    const char *key = "dspy_request_duration_seconds_count";
    const double want = fmax(0, metric(prev, key)) + n;
    char *m = scrape(root);
    for (int i = 0; i < 1000 && m && metric(m, key) < want; i++) {
        free(m);
        dspy_sleep_ms(10);
        m = scrape(root);
    }
    return m;
}

/* ---- fixtures ----------------------------------------------------------------------------- */

static bool setup(void) {
    if (!test_have_shared("models/llama3-tokenizer/tokenizer.json") || !test_have_shared("data/banking77/train.csv")) {
        check_skip("../shared tokenizer or banking77 absent");
        return false;
    }
    snprintf(g_model, sizeof g_model, "%s/tiny-model", test_tmpdir());
    const char *args[] = {"--out", g_model, "--tokenizer", test_shared("models/llama3-tokenizer"), "--seed", "3", NULL};
    test_run_result r = test_run_dspy("init-model", args);
    CHECK_INT(r.status, 0);
    if (r.status != 0) fprintf(stderr, "%s\n", r.err);
    test_run_free(&r);
    dspy_banking77_params bp = dspy_banking77_params_default();
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", test_shared("data/banking77"));
    bp.data_dir = dir;
    dspy_dataset *train = NULL;
    CHECK_OK(dspy_banking77_load(&bp, DSPY_BANKING77_TRAIN, &train, &g_labels));
    if (train) CHECK_OK(dspy_banking77_tutorial_split(train, NULL, &g_dev));
    dspy_dataset_free(train);
    return g_dev && g_labels;
}

static dspy_signature *banking_sig(void) {
    dspy_str s = DSPY_STR_INIT;
    dspy_str_append(&s, "text -> label: Literal[");
    for (size_t i = 0; i < dspy_labels_count(g_labels); i++)
        dspy_str_appendf(&s, "%s'%s'", i ? ", " : "", dspy_labels_name(g_labels, (int32_t)i));
    dspy_str_append(&s, "]");
    dspy_signature *sig = NULL;
    CHECK_OK(dspy_signature_parse(dspy_str_cstr(&s), "Classify the banking customer's intent.", &sig));
    dspy_str_free(&s);
    return sig;
}

/* Runs ChainOfThought over the first g_n_dev dev questions; returns how many came back with one
 * of the 77 labels (parse failures count as misses; printed unless quiet). */
static int answer_devset(dspy_lm *lm, dspy_adapter_kind adapter, bool quiet) {
    dspy_settings_set_lm(lm);
    dspy_settings_set_adapter(adapter, false);
    dspy_signature *sig = banking_sig();
    dspy_module *cot = NULL;
    if (sig) CHECK_OK(dspy_chain_of_thought_new(sig, NULL, &cot));
    int good = 0;
    for (size_t i = 0; cot && i < g_n_dev && i < dspy_dataset_len(g_dev); i++) {
        dspy_json *in = dspy_json_object();
        dspy_json_set_str(in, "text", dspy_example_get_str(dspy_dataset_get(g_dev, i), "text"));
        dspy_prediction *p = NULL;
        dspy_status st = dspy_module_call(cot, in, NULL, &p);
        const char *label = p ? dspy_prediction_get_str(p, "label") : NULL;
        if (st == DSPY_OK && label && dspy_labels_id(g_labels, label) >= 0) good++;
        else if (!quiet) fprintf(stderr, "question %zu: %s\n", i, st ? dspy_errmsg() : label ? label : "(no label)");
        dspy_prediction_free(p);
        dspy_json_decref(in);
    }
    dspy_module_free(cot);
    dspy_signature_free(sig);
    dspy_settings_set_lm(NULL);
    return good;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_program_layer(dspy_local_server *srv, const char *root) {
    char name[1100];
    snprintf(name, sizeof name, "openai/local:%s", g_model);
    dspy_lm_params lp = dspy_lm_params_default();
    lp.cache = 0;
    dspy_lm *lm = NULL;
    CHECK_OK(dspy_lm_new(name, &lp, &lm));
    if (!lm) return;
    CHECK_OK(dspy_lm_set_kwarg(lm, "api_base", dspy_json_string(dspy_local_api_base(srv))));
    dspy_lm_set_kwarg(lm, "temperature", dspy_json_real(0.0));

    char *m0 = scrape(root);
    CHECK_INT(answer_devset(lm, DSPY_ADAPTER_CHAT, false), (int)g_n_dev);
    char *m1 = scrape_after(root, m0, (int)g_n_dev);
    CHECK(metric(m1, "dspy_structured_requests_total{kind=\"layout\"}") -
              metric(m0, "dspy_structured_requests_total{kind=\"layout\"}") == (double)g_n_dev);
    CHECK(metric(m1, "dspy_requests_total{route=\"chat\",status=\"200\"}") -
              fmax(0, metric(m0, "dspy_requests_total{route=\"chat\",status=\"200\"}")) == (double)g_n_dev);
    /* the system message is shared by every question: the prefix cache serves it */
    double hits = metric(m1, "dspy_prefix_cache_hits_tokens_total") - metric(m0, "dspy_prefix_cache_hits_tokens_total");
    double queries = metric(m1, "dspy_prefix_cache_queries_tokens_total") -
                     metric(m0, "dspy_prefix_cache_queries_tokens_total");
    /* every question after the first finds the system message (~1,000 tokens; the user
     * message repeats the 77 labels after the question, so that part is not shared) */
    check_report(hits >= (double)(g_n_dev - 1) * 512, __FILE__, __LINE__,
                 "prefix-cache hits %g of %g prompt tokens over %zu questions", hits, queries, g_n_dev);
    CHECK(metric(m1, "dspy_prefix_cache_hit_rate") > 0);

    CHECK_INT(answer_devset(lm, DSPY_ADAPTER_JSON, false), (int)g_n_dev);
    char *m2 = scrape_after(root, m1, (int)g_n_dev);
    CHECK(metric(m2, "dspy_structured_requests_total{kind=\"json_schema\"}") -
              metric(m1, "dspy_structured_requests_total{kind=\"json_schema\"}") == (double)g_n_dev);

    /* off: plain requests (the random model then rarely writes the layout) */
    dspy_settings_set_local_structured(false);
    dspy_lm_set_kwarg(lm, "max_tokens", dspy_json_int(8));
    answer_devset(lm, DSPY_ADAPTER_CHAT, true);
    dspy_settings_set_local_structured(true);
    char *m3 = scrape_after(root, m2, (int)g_n_dev);
    CHECK(metric(m3, "dspy_structured_requests_total{kind=\"layout\"}") ==
          metric(m2, "dspy_structured_requests_total{kind=\"layout\"}"));
    CHECK(metric(m3, "dspy_structured_requests_total{kind=\"none\"}") -
              metric(m2, "dspy_structured_requests_total{kind=\"none\"}") >= (double)g_n_dev);
    free(m0);
    free(m1);
    free(m2);
    free(m3);
    dspy_lm_free(lm);
}

static char *chat_body(const char *model, const char *extra, int max_tokens) {
    dspy_str b = DSPY_STR_INIT;
    dspy_str_appendf(&b, "{\"model\": \"%s\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello there\"}], "
                         "\"max_tokens\": %d, \"temperature\": 0%s%s}", model, max_tokens, extra ? ", " : "",
                     extra ? extra : "");
    return dspy_str_take(&b);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static void test_raw(const char *base, const char *root) {
    char url[512], name[1100];
    snprintf(url, sizeof url, "%s/chat/completions", base);
    snprintf(name, sizeof name, "openai/local:%s", g_model);
    char *m0 = scrape(root);
    /* json_object, under the openai/local: name */
    char *b = chat_body(name, "\"response_format\": {\"type\": \"json_object\"}", CHECK_UNDER_ASAN ? 60 : 300);
    dspy_str out = DSPY_STR_INIT;
    CHECK_INT(http(url, b, &out), 200);
    dspy_json *v = NULL;
    CHECK_OK(dspy_json_parse(out.ptr, out.len, "answer", &v));
    const dspy_json *ch = dspy_json_at(dspy_json_get(v, "choices"), 0);
    const char *text = dspy_json_str_or(dspy_json_get(ch, "message"), "content", "");
    const char *fin = dspy_json_str_or(ch, "finish_reason", "");
    CHECK(text[0] == '{');
    int64_t completion = dspy_json_int_or(dspy_json_get(v, "usage"), "completion_tokens", -1);
    if (strcmp(fin, "stop") == 0) {
        dspy_json *o = NULL;
        CHECK_OK(dspy_json_parse(text, strlen(text), "json_object answer", &o));
        CHECK(o && dspy_json_typeof(o) == DSPY_JSON_OBJECT);
        dspy_json_decref(o);
    }
    dspy_json_decref(v);
    free(b);
    char *m1 = scrape_after(root, m0, 1);
    CHECK(metric(m1, "dspy_structured_requests_total{kind=\"json_object\"}") -
              metric(m0, "dspy_structured_requests_total{kind=\"json_object\"}") == 1);
    CHECK(metric(m1, "dspy_completion_tokens_total") - metric(m0, "dspy_completion_tokens_total") == completion);
    CHECK(metric(m1, "dspy_time_to_first_token_seconds_count") - metric(m0, "dspy_time_to_first_token_seconds_count") == 1);
    CHECK(metric(m1, "dspy_request_duration_seconds_bucket{le=\"+Inf\"}") ==
          metric(m1, "dspy_request_duration_seconds_count"));
    CHECK(metric(m1, "dspy_queue_length") == 0);
    CHECK(metric(m1, "dspy_kv_cache_capacity_tokens") > 0);

    /* an unsupported schema: 400 naming response_format */
    dspy_str_clear(&out);
    b = chat_body(g_model, "\"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"x\", "
                           "\"schema\": {\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"string\", "
                           "\"format\": \"date-time\"}}}}}", 10);
    CHECK_INT(http(url, b, &out), 400);
    CHECK(strstr(out.ptr, "\"param\":\"response_format\"") != NULL);
    CHECK(strstr(out.ptr, "/properties/a: keyword not supported") != NULL);
    free(b);
    /* a bad layout */
    dspy_str_clear(&out);
    b = chat_body(g_model, "\"dspy_layout\": [{\"name\": \"label\", \"enum\": [\"a\", \"\"]}]", 10);
    CHECK_INT(http(url, b, &out), 400);
    CHECK(strstr(out.ptr, "\"param\":\"dspy_layout\"") != NULL);
    CHECK(strstr(out.ptr, "value 1 is empty") != NULL);
    free(b);
    dspy_str_clear(&out);
    b = chat_body(g_model, "\"dspy_layout\": [{\"name\": \"a\"}], \"response_format\": {\"type\": \"json_object\"}", 10);
    CHECK_INT(http(url, b, &out), 400);
    CHECK(strstr(out.ptr, "cannot be combined") != NULL);
    free(b);
    /* a layout request by hand: the answer is the layout, finish stop, within the bounds */
    dspy_str_clear(&out);
    b = chat_body(g_model, "\"dspy_layout\": [{\"name\": \"reasoning\", \"max_tokens\": 5}, {\"name\": \"answer\", "
                           "\"enum\": [\"yes\", \"no\"]}]", 200);
    CHECK_INT(http(url, b, &out), 200);
    v = NULL;
    CHECK_OK(dspy_json_parse(out.ptr, out.len, "answer", &v));
    ch = dspy_json_at(dspy_json_get(v, "choices"), 0);
    text = dspy_json_str_or(dspy_json_get(ch, "message"), "content", "");
    CHECK_STR(dspy_json_str_or(ch, "finish_reason", ""), "stop");
    CHECK(strncmp(text, "[[ ## reasoning ## ]]\n", 22) == 0);
    CHECK(ends_with(text, "\n\n[[ ## answer ## ]]\nyes\n\n[[ ## completed ## ]]") ||
          ends_with(text, "\n\n[[ ## answer ## ]]\nno\n\n[[ ## completed ## ]]"));
    dspy_json_decref(v);
    free(b);
    char *m2 = scrape_after(root, m1, 4); /* three 400s and the layout request */
    CHECK(metric(m2, "dspy_requests_total{route=\"chat\",status=\"400\"}") -
              fmax(0, metric(m1, "dspy_requests_total{route=\"chat\",status=\"400\"}")) == 3);
    dspy_str_free(&out);
    free(m0);
    free(m1);
    free(m2);
}

/* A `dspy serve` of the test model with the extra arguments, root set to its address (where
 * /metrics is), or NULL (a failed check). */
static dspy_local_server *launch(const char *const *args, size_t n, char *root, size_t root_size) {
    dspy_local_params p = dspy_local_params_default();
    p.dspy_bin = test_bin("dspy");
    p.log_dir = test_tmpdir();
    p.timeout_s = 60;
    p.extra_args = args;
    p.n_extra_args = n;
    dspy_local_server *srv = NULL;
    CHECK_OK(dspy_local_launch(g_model, &p, &srv));
    if (srv) snprintf(root, root_size, "%.*s", (int)(strlen(dspy_local_api_base(srv)) - 3), dspy_local_api_base(srv));
    return srv;
}

/* The content of a greedy layout request (malloc'd) and the drafted tokens it added to /metrics. */
static char *layout_answer(const char *base, const char *root, double *drafted) {
    char url[512];
    snprintf(url, sizeof url, "%s/chat/completions", base);
    char *m0 = scrape(root);
    char *b = chat_body(g_model, "\"dspy_layout\": [{\"name\": \"reasoning\", \"max_tokens\": 6}, {\"name\": "
                                 "\"answer\", \"enum\": [\"yes_indeed\", \"no_thanks\"]}]", 200);
    dspy_str out = DSPY_STR_INIT;
    CHECK_INT(http(url, b, &out), 200);
    dspy_json *v = NULL;
    CHECK_OK(dspy_json_parse(out.ptr, out.len, "answer", &v));
    const dspy_json *ch = dspy_json_at(dspy_json_get(v, "choices"), 0);
    char *text = strdup(dspy_json_str_or(dspy_json_get(ch, "message"), "content", ""));
    CHECK(ends_with(text, "\n\n[[ ## completed ## ]]"));
    char *m1 = scrape_after(root, m0, 1);
    *drafted = metric(m1, "dspy_engine_draft_tokens_total") - metric(m0, "dspy_engine_draft_tokens_total");
    dspy_json_decref(v);
    dspy_str_free(&out);
    free(b);
    free(m0);
    free(m1);
    return text;
}

/* Jump-forward on (--jump-tokens 8) and off (0), each on a server of its own: the same answer;
 * drafts only where on. Both explicit, because the default depends on the device `dspy serve`
 * picks (8 on the CPU, 0 on CUDA): the GPU machine runs this test on CUDA, where the drafted rows
 * take an eager step with a mask per row. */
static void test_jump(void) {
    double drafted[2] = {-1, -1};
    char *text[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        const char *args[] = {"--threads", "1", "--jump-tokens", k == 0 ? "8" : "0"};
        char root[512];
        dspy_local_server *srv = launch(args, 4, root, sizeof root);
        if (!srv) continue;
        text[k] = layout_answer(dspy_local_api_base(srv), root, &drafted[k]);
        CHECK_OK(dspy_local_kill(srv, NULL));
        dspy_local_free(srv);
    }
    if (text[0] && text[1]) CHECK_STR(text[0], text[1]);
    CHECK(drafted[0] > 0);
    CHECK(drafted[1] == 0);
    printf("jump-forward: %.0f tokens drafted for one layout answer (0 with --jump-tokens 0), the same answer\n",
           drafted[0]);
    free(text[0]), free(text[1]);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (getenv("DSPY_TEST_FULL_DEV") && strcmp(getenv("DSPY_TEST_FULL_DEV"), "1") == 0) g_n_dev = 100;
    if (setup()) {
        const char *args[] = {"--threads", "1", "--structured-max-tokens", "24"};
        char root[512];
        dspy_local_server *srv = launch(args, 4, root, sizeof root);
        if (srv) {
            const char *base = dspy_local_api_base(srv);
            check_current = "test_raw";
            test_raw(base, root);
            check_current = "test_program_layer";
            test_program_layer(srv, root);
            check_current = "test_jump";
            test_jump();
            int es = -1;
            CHECK_OK(dspy_local_kill(srv, &es));
            CHECK_INT(es, 0); /* a clean exit (under ASan: no leak report either) */
            dspy_local_free(srv);
        }
    }
    dspy_dataset_free(g_dev);
    dspy_labels_free(g_labels);
    curl_global_cleanup();
    return check_summary("test_serve_structured");
}
