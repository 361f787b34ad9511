/* test_serve_inproc.c — the local server in process (dspy/local.h DSPY_LOCAL_THREAD over
 * dspy_server_start/join): no `dspy` executable, real HTTP over 127.0.0.1 (libcurl) against a
 * tiny random Llama written by the test with the real Llama 3 tokenizer:
 *   - the default mode picks the thread when this program is not `dspy` and DSPY_BIN is unset;
 *     /v1/models, /health, chat completions whole and streamed, an unknown model (404),
 *     concurrent clients whose answers equal the single-request answer;
 *   - kill: the port is closed and every thread the server started is gone (/proc/self/task);
 *     a second kill returns the same; a restart on the same port serves the same answer; two
 *     servers at once;
 *   - the reference: the same request to a `dspy serve` child (DSPY_BIN, the override) gives
 *     the same greedy answer;
 *   - `dspy serve` options as extra arguments (--name VALUE, --name=VALUE, flags) take effect;
 *     --spec-tokens: the same greedy answer, drafted tokens counted, a bad K refused (and a bad
 *     --jump-tokens);
 *   - bad input: a missing model, a port in use, unknown or malformed extra arguments, a child
 *     asked for without a binary: a clear error and no thread left;
 *   - the program path: dspy_program_launch on a Predict whose LM is "openai/local:<dir>" serves
 *     it in process by default and a call goes through it;
 *   - the lower level: dspy_server_new + dspy_server_start + dspy_server_join (a second start is
 *     refused; join of a server never started is a no-op);
 *   - two replicas behind one port: the same greedy answers, the requests spread over both.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "http_client.h"
#include "dspy/clock.h"
#include "dspy/compile.h"
#include "dspy/engine.h"
#include "dspy/history.h"
#include "dspy/json.h"
#include "dspy/lm.h"
#include "dspy/local.h"
#include "dspy/model.h"
#include "dspy/module.h"
#include "dspy/prediction.h"
#include "dspy/server.h"
#include "dspy/str.h"
#include "dspy/tokenizer.h"

static char g_model[1024];
static char g_tok[1024];
static char *g_answer; /* the greedy answer of the first in-process server */

/* ---- HTTP ------------------------------------------------------------------------------- */

typedef test_http_reply resp;

/* GET (body NULL) or POST a JSON body to base + path. */
static void http(const char *base, const char *path, const char *body, resp *r) {
    char url[2048];
    snprintf(url, sizeof url, "%s%s", base, path);
    memset(r, 0, sizeof *r);
    test_http(NULL, url, body, 120, r);
}

static dspy_json *json_of(const resp *r) {
    dspy_json *v = NULL;
    if (dspy_json_parse(dspy_str_cstr(&r->body), r->body.len, "answer", &v) != DSPY_OK) return NULL;
    return v;
}

static const char k_chat[] =
    "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Name a colour.\"}],"
    "\"max_tokens\":8,\"temperature\":0%s}";

/* A greedy chat answer's text from the server at `base` (malloc'd, NULL on any failure, which
 * is reported); *tokens gets usage.completion_tokens. */
static char *chat(const char *base, const char *model, int64_t *tokens) {
    char body[1400];
    snprintf(body, sizeof body, k_chat, model, "");
    resp r;
    http(base, "/chat/completions", body, &r);
    CHECK_INT(r.status, 200);
    dspy_json *v = json_of(&r);
    dspy_json *c0 = v ? dspy_json_at(dspy_json_get(v, "choices"), 0) : NULL;
    const char *text = c0 ? dspy_json_str_or(dspy_json_get(c0, "message"), "content", NULL) : NULL;
    const char *finish = c0 ? dspy_json_str_or(c0, "finish_reason", "") : "";
    CHECK(text != NULL);
    CHECK(strcmp(finish, "stop") == 0 || strcmp(finish, "length") == 0);
    if (tokens) *tokens = dspy_json_int_or(dspy_json_get(v, "usage"), "completion_tokens", -1);
    char *out = text ? strdup(text) : NULL;
    if (!text) fprintf(stderr, "answer: %s\n", dspy_str_cstr(&r.body));
    dspy_json_decref(v);
    dspy_str_free(&r.body);
    return out;
}

/* The concatenated delta text of a streamed chat answer (malloc'd), NULL when the stream does
 * not end with [DONE]. */
static char *chat_streamed(const char *base, const char *model) {
    char body[1400];
    snprintf(body, sizeof body, k_chat, model, ",\"stream\":true");
    resp r;
    http(base, "/chat/completions", body, &r);
    CHECK_INT(r.status, 200);
    dspy_str text = DSPY_STR_INIT;
    dspy_str_append(&text, "");
    bool done = false;
    for (const char *p = dspy_str_cstr(&r.body); p && strncmp(p, "data: ", 6) == 0;) {
        const char *end = strstr(p, "\n\n");
        if (!end) break;
        if (strncmp(p + 6, "[DONE]", 6) == 0) {
            done = true;
            break;
        }
        dspy_json *v = NULL;
        if (dspy_json_parse(p + 6, (size_t)(end - p - 6), "event", &v) != DSPY_OK) break;
        dspy_json *d = dspy_json_get(dspy_json_at(dspy_json_get(v, "choices"), 0), "delta");
        const char *t = d ? dspy_json_str_or(d, "content", NULL) : NULL;
        if (t) dspy_str_append(&text, t);
        dspy_json_decref(v);
        p = end + 2;
    }
    dspy_str_free(&r.body);
    CHECK(done);
    if (!done) dspy_str_free(&text);
    return done ? dspy_str_take(&text) : NULL;
}

/* ---- threads of this process -------------------------------------------------------------- */

/* The number of threads of this process; with `names`, their names go to stderr (for a
 * failing check). */
static int thread_count_names(bool names) {
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        n++;
        if (!names) continue;
        char path[300];
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        char *comm = test_slurp(path);
        fprintf(stderr, "  thread %s: %s", e->d_name, comm);
        free(comm);
    }
    if (d) closedir(d);
    return n;
}

/* The number of threads once it has stopped changing (three equal reads 20 ms apart, at most
 * 2 s): a detached connection thread of a server freed just before may still be exiting, and
 * counting it as "before" would make a later exact check fail. */
static int thread_count(void) {
    int n = thread_count_names(false), same = 0;
    for (int i = 0; i < 100 && same < 2; i++) {
        dspy_sleep_ms(20);
        int m = thread_count_names(false);
        same = m == n ? same + 1 : 0;
        n = m;
    }
    return n;
}

/* Exactly `want` threads, allowing the server's last threads up to 2 s to finish exiting after
 * it returned. */
#define CHECK_THREADS(want)                                                                    \
    do {                                                                                       \
        int n_ = thread_count_names(false);                                                    \
        for (int i_ = 0; i_ < 100 && n_ != (want); i_++) {                                     \
            dspy_sleep_ms(20);                                                                 \
            n_ = thread_count_names(false);                                                    \
        }                                                                                      \
        CHECK_INT(n_, (want));                                                                 \
        if (n_ != (want)) thread_count_names(true);                                            \
    } while (0)

/* ---- fixtures ------------------------------------------------------------------------------ */

static bool make_model(void) {
    if (!test_have_shared("models/llama3-tokenizer/tokenizer.json")) {
        check_skip("../shared/models/llama3-tokenizer is missing");
        return false;
    }
    snprintf(g_tok, sizeof g_tok, "%s", test_shared("models/llama3-tokenizer"));
    snprintf(g_model, sizeof g_model, "%s/tiny-model", test_tmpdir());
    dspy_model_config cfg;
    CHECK_OK(dspy_model_config_preset("llama", "tiny", &cfg));
    dspy_status st = dspy_model_write_random_std(g_model, &cfg, 3, DSPY_DTYPE_F32, true, 0.2);
    CHECK_OK(st);
    return st == DSPY_OK;
}

/* Params for a server on a thread of this test: the test's tokenizer, one compute thread (ctest
 * runs two test binaries at once on two cores). `args` holds the extra arguments. */
static dspy_local_params thread_params(const char *args[8]) {
    dspy_local_params p = dspy_local_params_default();
    args[0] = "--tokenizer";
    args[1] = g_tok;
    args[2] = "--threads";
    args[3] = "1";
    args[4] = "--max-seqs=4";
    p.extra_args = args;
    p.n_extra_args = 5;
    p.kill_grace_s = 30;
    return p;
}

/* ---- tests --------------------------------------------------------------------------------- */

typedef struct client {
    const char *base, *model;
    char *text;
} client;

static void *client_main(void *arg) {
    client *c = arg;
    c->text = chat(c->base, c->model, NULL);
    return NULL;
}

static void test_thread_serving(void) {
    unsetenv("DSPY_BIN"); /* the override is off: this program is not `dspy`, so a thread */
    int threads_before = thread_count();
    const char *args[8];
    dspy_local_params p = thread_params(args);
    dspy_local_server *s = NULL;
    CHECK_OK(dspy_local_launch(g_model, &p, &s));
    if (!s) return;
    CHECK_INT(dspy_local_get_mode(s), DSPY_LOCAL_THREAD);
    CHECK_INT(dspy_local_pid(s), 0);
    CHECK(dspy_local_log_path(s) == NULL);
    char *logs = NULL;
    CHECK_STATUS(dspy_local_get_logs(s, &logs), DSPY_ERR_STATE);
    CHECK(logs == NULL);
    CHECK(thread_count() > threads_before); /* engine, event loop, deadline and this one */
    const char *base = dspy_local_api_base(s);
    char want_base[64];
    snprintf(want_base, sizeof want_base, "http://127.0.0.1:%d/v1", dspy_local_port(s));
    CHECK_STR(base, want_base);
    CHECK(dspy_local_port(s) > 0);

    resp r;
    http(base, "/models", NULL, &r);
    CHECK_INT(r.status, 200);
    CHECK_CONTAINS(dspy_str_cstr(&r.body), g_model);
    dspy_str_free(&r.body);
    char health[80];
    snprintf(health, sizeof health, "http://127.0.0.1:%d", dspy_local_port(s));
    http(health, "/health", NULL, &r);
    CHECK_INT(r.status, 200);
    dspy_str_free(&r.body);

    int64_t tokens = -1;
    char model[1100];
    snprintf(model, sizeof model, "local:%s", g_model); /* what DSPy's LocalProvider sends */
    g_answer = chat(base, model, &tokens);
    CHECK(tokens >= 1 && tokens <= 8);
    char *streamed = chat_streamed(base, model);
    if (g_answer && streamed) CHECK_STR(streamed, g_answer);
    free(streamed);

    char body[256];
    snprintf(body, sizeof body, k_chat, "no-such-model", "");
    http(base, "/chat/completions", body, &r);
    CHECK_INT(r.status, 404);
    CHECK_CONTAINS(dspy_str_cstr(&r.body), "\"error\"");
    dspy_str_free(&r.body);

    /* concurrent clients share the in-process engine: each gets the single-request answer */
    enum { N_CLIENTS = 4 };
    client cl[N_CLIENTS];
    pthread_t th[N_CLIENTS];
    for (int i = 0; i < N_CLIENTS; i++) {
        cl[i] = (client){base, model, NULL};
        CHECK_INT(pthread_create(&th[i], NULL, client_main, &cl[i]), 0);
    }
    for (int i = 0; i < N_CLIENTS; i++) {
        pthread_join(th[i], NULL);
        if (g_answer && cl[i].text) CHECK_STR(cl[i].text, g_answer);
        free(cl[i].text);
    }

    int port = dspy_local_port(s), code = -1;
    CHECK_OK(dspy_local_kill(s, &code));
    CHECK_INT(code, 0);
    code = -1;
    CHECK_OK(dspy_local_kill(s, &code)); /* idempotent */
    CHECK_INT(code, 0);
    /* killed means stopped: the port refuses connections and the server's threads are gone */
    http(want_base, "/models", NULL, &r);
    CHECK_INT(r.cc, CURLE_COULDNT_CONNECT);
    dspy_str_free(&r.body);
    CHECK_THREADS(threads_before);
    dspy_local_free(s);

    /* a restart on the same port (SO_REUSEADDR: nothing lingers) answers the same */
    p.port = port;
    s = NULL;
    CHECK_OK(dspy_local_launch(g_model, &p, &s));
    if (!s) return;
    CHECK_INT(dspy_local_port(s), port);
    char *again = chat(dspy_local_api_base(s), model, NULL);
    if (g_answer && again) CHECK_STR(again, g_answer);
    free(again);
    /* a second server at the same time, on its own port: no state is shared between them */
    p.port = 0;
    dspy_local_server *s2 = NULL;
    CHECK_OK(dspy_local_launch(g_model, &p, &s2));
    if (s2) {
        CHECK(dspy_local_port(s2) != port);
        char *other = chat(dspy_local_api_base(s2), model, NULL);
        if (g_answer && other) CHECK_STR(other, g_answer);
        free(other);
    }
    dspy_local_free(s2);
    dspy_local_free(s); /* free without kill: stops and joins too */
    CHECK_THREADS(threads_before);
}

/* The same request to a `dspy serve` child: the in-process server is the same server. */
static void test_child_override(void) {
    setenv("DSPY_BIN", test_bin("dspy"), 1);
    const char *args[8];
    dspy_local_params p = thread_params(args);
    p.log_dir = test_tmpdir();
    p.timeout_s = 120;
    dspy_local_server *s = NULL;
    CHECK_OK(dspy_local_launch(g_model, &p, &s));
    unsetenv("DSPY_BIN");
    if (!s) return;
    CHECK_INT(dspy_local_get_mode(s), DSPY_LOCAL_CHILD);
    CHECK(dspy_local_pid(s) > 0);
    CHECK(dspy_local_log_path(s) != NULL);
    char model[1100];
    snprintf(model, sizeof model, "local:%s", g_model);
    char *text = chat(dspy_local_api_base(s), model, NULL);
    if (g_answer && text) CHECK_STR(text, g_answer);
    free(text);
    int code = -1;
    CHECK_OK(dspy_local_kill(s, &code));
    CHECK_INT(code, 0);
    if (code != 0 && dspy_local_log_path(s)) {
        /* what the child said before it died (under ASan: the report), since the test's temporary
         * directory, which holds the log, is removed at the end */
        char *log = test_slurp(dspy_local_log_path(s));
        size_t n = strlen(log);
        fprintf(stderr, "--- the child's log (%s), last 4000 bytes ---\n%s\n---\n", dspy_local_log_path(s),
                log + (n > 4000 ? n - 4000 : 0));
        free(log);
    }
    dspy_local_free(s);
}

static void test_bad_input(void) {
    unsetenv("DSPY_BIN");
    const char *args[8];
    dspy_local_params p = thread_params(args);
    int threads_before = thread_count();
    dspy_local_server *s = NULL;

    CHECK_STATUS(dspy_local_launch("openai/local:", &p, &s), DSPY_ERR_ARG);
    CHECK(dspy_local_launch("openai/local:/no/such/model", &p, &s) != DSPY_OK);
    CHECK_CONTAINS(dspy_errmsg(), "/no/such/model");
    CHECK(s == NULL);
    CHECK_THREADS(threads_before);

    /* the port is taken: the bind fails after the model was loaded; all of it is undone */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 1) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&a, &alen) == 0);
    p.port = ntohs(a.sin_port);
    CHECK_STATUS(dspy_local_launch(g_model, &p, &s), DSPY_ERR_IO);
    CHECK(s == NULL);
    CHECK_THREADS(threads_before);
    close(fd);
    p.port = 0;

    /* extra arguments the thread does not know, or with bad values: refused, naming them */
    const char *bogus[] = {"--bogus", "1"};
    p.extra_args = bogus;
    p.n_extra_args = 2;
    CHECK_STATUS(dspy_local_launch(g_model, &p, &s), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "--bogus");
    const char *parent[] = {"--parent-pid=1"};
    p.extra_args = parent;
    p.n_extra_args = 1;
    CHECK_STATUS(dspy_local_launch(g_model, &p, &s), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "--parent-pid");
    const char *bad_num[] = {"--max-seqs", "many"};
    p.extra_args = bad_num;
    p.n_extra_args = 2;
    CHECK_STATUS(dspy_local_launch(g_model, &p, &s), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "--max-seqs");
    CHECK_CONTAINS(dspy_errmsg(), "many");
    const char *no_value[] = {"--device"};
    p.extra_args = no_value;
    p.n_extra_args = 1;
    CHECK_STATUS(dspy_local_launch(g_model, &p, &s), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "--device needs a value");
    const char *zero_seqs[] = {"--tokenizer", g_tok, "--max-seqs", "0"}; /* range: dspy_server_new */
    p.extra_args = zero_seqs;
    p.n_extra_args = 4;
    CHECK_STATUS(dspy_local_launch(g_model, &p, &s), DSPY_ERR_ARG);
    CHECK(s == NULL);
    const char *big_share[] = {"--tokenizer", g_tok, "--kv-memory-percent", "96"}; /* range: dspy_server_new */
    p.extra_args = big_share;
    p.n_extra_args = 4;
    CHECK_STATUS(dspy_local_launch(g_model, &p, &s), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "kv_memory_percent 0..95");
    CHECK(s == NULL);

    /* a child asked for, and no binary to run */
    p = thread_params(args);
    p.mode = DSPY_LOCAL_CHILD;
    CHECK_STATUS(dspy_local_launch(g_model, &p, &s), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "DSPY_BIN");
    CHECK(s == NULL);
    CHECK_THREADS(threads_before);
}

/* dspy_program_launch: an "openai/local:<dir>" LM is served in process by default. */
static void test_program_launch(void) {
    unsetenv("DSPY_BIN");
    dspy_module *prog = NULL;
    dspy_lm *lm = NULL;
    char name[1100];
    snprintf(name, sizeof name, "openai/local:%s", g_model);
    dspy_lm_params lp = dspy_lm_params_default();
    lp.max_tokens = 8;
    lp.temperature = 0.0;
    lp.cache = 0;
    lp.num_retries = 0;
    CHECK_OK(dspy_lm_new(name, &lp, &lm));
    CHECK_OK(dspy_predict_new_text("question -> answer", NULL, NULL, &prog));
    if (!lm || !prog) goto done;
    CHECK_OK(dspy_module_set_lm(prog, lm));
    const char *args[8];
    dspy_local_params p = thread_params(args);
    dspy_launched *l = NULL;
    CHECK_OK(dspy_program_launch(prog, &p, &l));
    CHECK_INT(dspy_launched_count(l), 1);
    dspy_local_server *s = dspy_launched_server(l, 0);
    if (s) CHECK_INT(dspy_local_get_mode(s), DSPY_LOCAL_THREAD);
    dspy_json *in = NULL;
    CHECK_OK(dspy_json_parse("{\"question\": \"What colour is the sky?\"}", 39, "in", &in));
    dspy_prediction *pred = NULL;
    dspy_status st = dspy_module_call(prog, in, NULL, &pred);
    /* a random model rarely keeps the [[ ## answer ## ]] format; either way the server answered */
    CHECK(st == DSPY_OK || st == DSPY_ERR_PARSE);
    CHECK(dspy_history_len(dspy_lm_history(lm)) >= 1);
    dspy_prediction_free(pred);
    dspy_json_decref(in);
    CHECK_OK(dspy_program_kill(l));
    dspy_launched_free(l);
done:
    dspy_module_free(prog);
    dspy_lm_free(lm);
}

/* dspy_local_launch of `model` on a thread of this test with the `dspy serve` arguments args[n];
 * its status, the server in *out (NULL on failure). */
static dspy_status launch_thread(const char *model, const char **args, size_t n, dspy_local_server **out) {
    dspy_local_params p = dspy_local_params_default();
    p.mode = DSPY_LOCAL_THREAD;
    p.extra_args = args;
    p.n_extra_args = n;
    *out = NULL;
    return dspy_local_launch(model, &p, out);
}

/* `dspy serve` options given as extra_args reach the in-process server: both spellings, flags. */
static void test_serve_args(void) {
    const char *args[] = {"--tokenizer", g_tok, "--threads=1", "--served-model-name=tiny", "--max-n", "2",
                          "--strict", "--device=cpu", "--shutdown-grace", "5"};
    dspy_local_server *s = NULL;
    CHECK_OK(launch_thread(g_model, args, sizeof args / sizeof *args, &s));
    if (!s) return;
    resp r;
    http(dspy_local_api_base(s), "/models", NULL, &r);
    CHECK_INT(r.status, 200);
    CHECK_CONTAINS(dspy_str_cstr(&r.body), "\"id\":\"tiny\"");
    dspy_str_free(&r.body);
    /* --max-n 2: n=3 is refused, naming the limit */
    char body[256];
    snprintf(body, sizeof body, k_chat, "tiny", ",\"n\":3");
    http(dspy_local_api_base(s), "/chat/completions", body, &r);
    CHECK_INT(r.status, 400);
    CHECK_CONTAINS(dspy_str_cstr(&r.body), "at most 2 choices");
    dspy_str_free(&r.body);
    dspy_local_free(s);
}

/* `--spec-tokens K` (speculative decoding by prompt lookup) reaches the engine: on a random
 * model that repeats its last token (std 0.02) the greedy answer with K = 4 is the one with
 * K = 0 (the CPU is bit for bit), /metrics counts drafted and accepted tokens (none at K = 0),
 * and a K over the limit is refused before the server starts. */
static double metric_value(const char *metrics, const char *name) {
    const char *p = strstr(metrics, name);
    return p ? atof(p + strlen(name)) : -1;
}

/* The greedy chat answer of a thread server on `model` with --spec-tokens `k` (malloc'd), and
 * its /metrics' drafted and accepted token counts. */
static char *spec_answer(const char *model, const char *k, double *drafted, double *accepted) {
    const char *args[] = {"--tokenizer", g_tok, "--threads=1", "--device=cpu", "--spec-tokens", k};
    dspy_local_server *s = NULL;
    *drafted = *accepted = -1;
    CHECK_OK(launch_thread(model, args, sizeof args / sizeof *args, &s));
    if (!s) return NULL;
    char *text = chat(dspy_local_api_base(s), model, NULL);
    char root[256];
    snprintf(root, sizeof root, "%.*s", (int)(strlen(dspy_local_api_base(s)) - 3), dspy_local_api_base(s));
    resp r;
    http(root, "/metrics", NULL, &r);
    CHECK_INT(r.status, 200);
    *drafted = metric_value(dspy_str_cstr(&r.body), "\ndspy_engine_draft_tokens_total ");
    *accepted = metric_value(dspy_str_cstr(&r.body), "\ndspy_engine_accepted_tokens_total ");
    dspy_str_free(&r.body);
    dspy_local_free(s);
    return text;
}

static void test_spec_tokens(void) {
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/tiny-repeats", test_tmpdir());
    dspy_model_config cfg;
    CHECK_OK(dspy_model_config_preset("llama", "tiny", &cfg));
    CHECK_OK(dspy_model_write_random_std(dir, &cfg, 5, DSPY_DTYPE_F32, true, 0.02));
    double d0, a0, d4, a4;
    char *off = spec_answer(dir, "0", &d0, &a0), *on = spec_answer(dir, "4", &d4, &a4);
    CHECK(off && on);
    if (off && on) CHECK_STR(on, off);
    CHECK(d0 == 0 && a0 == 0);
    CHECK(d4 > 0 && a4 > 0 && a4 <= d4);
    free(off), free(on);
    const char *args[] = {"--tokenizer", g_tok, "--spec-tokens", "33"};
    dspy_local_server *s = NULL;
    CHECK(launch_thread(g_model, args, sizeof args / sizeof *args, &s) != DSPY_OK);
    CHECK_CONTAINS(dspy_errmsg(), "--spec-tokens");
    CHECK(s == NULL);
    const char *jargs[] = {"--tokenizer", g_tok, "--jump-tokens", "-2"}; /* -1 is auto */
    CHECK(launch_thread(g_model, jargs, sizeof jargs / sizeof *jargs, &s) != DSPY_OK);
    CHECK_CONTAINS(dspy_errmsg(), "--jump-tokens");
    CHECK(s == NULL);
}

/* ignore_eos (vLLM's and SGLang's extension): a model whose eos id is a token its greedy answer
 * reaches stops there without it and goes on to max_tokens with it — the same tokens as the
 * engine gives in process, decoded. The model is g_model's weights (same seed) with that token as
 * its eos id in config.json. */
static void test_ignore_eos(void) {
    static const int32_t prompt[5] = {9906, 11, 1917, 0, 358};
    enum { N = 6 };
    dspy_model *m = NULL;
    CHECK_OK(dspy_model_load(g_model, NULL, &m));
    if (!m) return;
    dspy_sampling sp = dspy_sampling_default();
    sp.temperature = 0;
    sp.max_tokens = N;
    int32_t *gen = NULL;
    size_t ng = 0;
    CHECK_OK(dspy_generate(m, prompt, 5, &sp, &gen, NULL, &ng, NULL));
    dspy_model_free(m);
    CHECK_INT(ng, N);
    if (ng != N) {
        free(gen);
        return;
    }
    int32_t eos = gen[2];
    size_t first = 0; /* where the answer meets eos first */
    while (gen[first] != eos) first++;
    char *want = NULL;
    dspy_tokenizer *tok = NULL;
    CHECK_OK(dspy_tokenizer_load(g_tok, &tok));
    if (tok) CHECK_OK(dspy_tokenizer_decode(tok, gen, N, true, &want, NULL));
    dspy_tokenizer_free(tok);

    char dir[1100];
    snprintf(dir, sizeof dir, "%s/tiny-eos", test_tmpdir());
    dspy_model_config cfg;
    CHECK_OK(dspy_model_config_preset("llama", "tiny", &cfg));
    cfg.n_eos = 1;
    cfg.eos_token_ids[0] = eos;
    CHECK_OK(dspy_model_write_random_std(dir, &cfg, 3, DSPY_DTYPE_F32, true, 0.2));
    const char *args[] = {"--tokenizer", g_tok, "--threads=1", "--device=cpu"};
    dspy_local_server *s = NULL;
    CHECK_OK(launch_thread(dir, args, sizeof args / sizeof *args, &s));
    for (int ignore = 0; s && ignore < 2; ignore++) {
        char body[256];
        snprintf(body, sizeof body, "{\"prompt\":[%d,%d,%d,%d,%d],\"max_tokens\":%d,\"temperature\":0%s}", prompt[0],
                 prompt[1], prompt[2], prompt[3], prompt[4], N, ignore ? ",\"ignore_eos\":true" : "");
        resp r;
        http(dspy_local_api_base(s), "/completions", body, &r);
        CHECK_INT(r.status, 200);
        dspy_json *v = json_of(&r);
        dspy_json *c0 = v ? dspy_json_at(dspy_json_get(v, "choices"), 0) : NULL;
        const char *finish = c0 ? dspy_json_str_or(c0, "finish_reason", "") : "";
        int64_t comp = dspy_json_int_or(dspy_json_get(v, "usage"), "completion_tokens", -1);
        if (ignore) {
            CHECK_STR(finish, "length");
            CHECK_INT(comp, N);
            const char *text = c0 ? dspy_json_str_or(c0, "text", NULL) : NULL;
            CHECK(text && want);
            if (text && want) CHECK_STR(text, want);
        } else {
            CHECK_STR(finish, "stop");
            CHECK_INT(comp, (int64_t)first + 1); /* the eos id it stopped at counts in usage */
        }
        dspy_json_decref(v);
        dspy_str_free(&r.body);
    }
    dspy_local_free(s);
    free(want);
    free(gen);
}

/* dspy_server_start / dspy_server_join without the launcher. */
/* dspy_server_new's parameters for the test model on an ephemeral port, one thread. */
static dspy_server_params server_params(void) {
    dspy_server_params sp = dspy_server_params_default();
    sp.model_dir = g_model;
    sp.tokenizer_dir = g_tok;
    sp.port = 0;
    sp.n_threads = 1;
    return sp;
}

static void test_server_thread(void) {
    int threads_before = thread_count();
    dspy_server_params sp = server_params();
    dspy_server *srv = NULL;
    CHECK_OK(dspy_server_new(&sp, &srv));
    if (!srv) return;
    CHECK_OK(dspy_server_join(srv)); /* never started: nothing to stop */
    CHECK_OK(dspy_server_start(srv));
    CHECK_STATUS(dspy_server_start(srv), DSPY_ERR_STATE);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d/v1", dspy_server_port(srv));
    char *text = chat(base, g_model, NULL);
    if (g_answer && text) CHECK_STR(text, g_answer);
    free(text);
    CHECK_OK(dspy_server_join(srv));
    resp r;
    http(base, "/models", NULL, &r);
    CHECK_INT(r.cc, CURLE_COULDNT_CONNECT);
    dspy_str_free(&r.body);
    dspy_server_free(srv);
    CHECK_THREADS(threads_before);
    /* a started server freed without a join: dspy_server_free stops and joins it */
    srv = NULL;
    CHECK_OK(dspy_server_new(&sp, &srv));
    if (srv) CHECK_OK(dspy_server_start(srv));
    dspy_server_free(srv);
    CHECK_THREADS(threads_before);
}

/* Two replicas of the model behind one port (dspy_server_params.replicas, `dspy serve
 * --replicas/--gpus`): every answer is the single server's greedy answer, the requests are
 * spread over both (/metrics counts them per replica), and a bad count is refused. */
static long long replica_requests(const char *metrics, int i) {
    char key[64];
    snprintf(key, sizeof key, "dspy_replica_requests_total{replica=\"%d\"", i);
    const char *p = strstr(metrics, key);
    if (!p || !(p = strchr(p, '}'))) return -1;
    return atoll(p + 1);
}

static void test_replicas(void) {
    int threads_before = thread_count();
    dspy_server_params sp = server_params();
    sp.replicas = 2;
    dspy_server *srv = NULL;
    CHECK_OK(dspy_server_new(&sp, &srv));
    if (!srv) return;
    CHECK_OK(dspy_server_start(srv));
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d/v1", dspy_server_port(srv));
    for (int i = 0; i < 6; i++) {
        char *text = chat(base, g_model, NULL);
        CHECK(text != NULL);
        if (g_answer && text) CHECK_STR(text, g_answer);
        free(text);
    }
    char root[64];
    snprintf(root, sizeof root, "http://127.0.0.1:%d", dspy_server_port(srv));
    resp r;
    http(root, "/metrics", NULL, &r);
    CHECK_INT(r.status, 200);
    long long a = replica_requests(dspy_str_cstr(&r.body), 0), b = replica_requests(dspy_str_cstr(&r.body), 1);
    CHECK_INT(a + b, 6);
    CHECK(a >= 1 && b >= 1); /* an idle pair alternates; never all on one */
    CHECK(replica_requests(dspy_str_cstr(&r.body), 2) == -1);
    dspy_str_free(&r.body);
    dspy_server_free(srv);
    CHECK_THREADS(threads_before);
    sp.replicas = 65;
    srv = NULL;
    CHECK_STATUS(dspy_server_new(&sp, &srv), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "replicas 0..64");
    CHECK(srv == NULL);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (make_model()) {
        RUN(test_thread_serving);
        RUN(test_child_override);
        RUN(test_bad_input);
        RUN(test_program_launch);
        RUN(test_serve_args);
        RUN(test_spec_tokens);
        RUN(test_ignore_eos);
        RUN(test_server_thread);
        RUN(test_replicas);
    }
    free(g_answer);
    curl_global_cleanup();
    return check_summary("test_serve_inproc");
}
