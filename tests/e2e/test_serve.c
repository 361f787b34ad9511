/* test_serve.c — `dspy serve` end to end: real server processes on 127.0.0.1 started through
 * the local provider (dspy_local_launch), a tiny random Llama made by `dspy init-model` with the
 * real Llama 3 tokenizer, and real HTTP (libcurl):
 *   - /v1/models, /v1/models/{id}, /health, model aliases (dir, local:dir, basename);
 *   - chat completions whole and streamed (SSE framing, [DONE], usage chunk), /v1/completions
 *     with text and token-id prompts, n > 1, stop strings;
 *   - 32 concurrent clients (8 under ASan) whose answers equal the single-request answers;
 *   - every error status with its OpenAI body: 400 bad JSON, 404 model, 400 context, 413 body,
 *     503 overloaded, 404 route, 405 method, 401 key; a client that disconnects mid-stream;
 *   - SIGTERM with a request in flight: it completes, exit status 0;
 *   - the official OpenAI Node.js SDK (tests/e2e/openai_sdk, installed under ~/.cache/dspy-npm or
 *     $DSPY_NPM_CACHE), skipped (exit 77) only without node/npm or when the npm registry is unreachable;
 *   - the launcher itself: prefix stripping, no binary, early exit, and the readiness timeout
 *     honoured while connections are refused (project decision §16.6).
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "dspy/json.h"
#include "dspy/lm.h"
#include "dspy/local.h"
#include "dspy/server.h"
#include "dspy/str.h"


extern char **environ;

static char g_model[1024];

/* ---- processes -------------------------------------------------------------------------- */

/* Runs argv (no shell) with stdout+stderr to `log` (or inherited when NULL), in `cwd` when
 * given; returns the exit status (-1 when it could not run). */
static int run(char *const argv[], const char *log, const char *cwd) {
    char *old = NULL;
    if (cwd) {
        old = getcwd(NULL, 0);
        if (chdir(cwd) != 0) {
            free(old);
            return -1;
        }
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (log) {
        posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        posix_spawn_file_actions_adddup2(&fa, 1, 2);
    }
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (old) {
        if (chdir(old) != 0) perror("chdir");
        free(old);
    }
    if (rc != 0) return -1;
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static bool on_path(const char *name) {
    const char *path = getenv("PATH");
    if (!path) return false;
    char *p = strdup(path), *save = NULL;
    bool found = false;
    for (char *d = strtok_r(p, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", d, name);
        found = access(full, X_OK) == 0;
    }
    free(p);
    return found;
}

static void print_file(const char *path) {
    char *t = NULL;
    size_t n;
    if (dspy_read_file(path, &t, &n) == DSPY_OK) fprintf(stderr, "---- %s ----\n%s\n----\n", path, t);
    free(t);
}

/* ---- HTTP ------------------------------------------------------------------------------- */

typedef struct resp {
    long status;
    CURLcode cc;
    dspy_str body;
    dspy_str headers;
    int stop_after; /* abort the transfer after this many body callbacks (0: never) */
    int calls;
    int got_data;   /* set (atomically) by the first body bytes */
} resp;

static size_t on_body(char *p, size_t sz, size_t nm, void *u) {
    resp *r = u;
    dspy_str_appendn(&r->body, p, sz * nm);
    __atomic_store_n(&r->got_data, 1, __ATOMIC_SEQ_CST);
    if (r->stop_after && ++r->calls >= r->stop_after) return 0;
    return sz * nm;
}

static size_t on_header(char *p, size_t sz, size_t nm, void *u) {
    resp *r = u;
    dspy_str_appendn(&r->headers, p, sz * nm);
    return sz * nm;
}

static void resp_free(resp *r) {
    dspy_str_free(&r->body);
    dspy_str_free(&r->headers);
}

/* method + url (relative to base), optional JSON body and "Authorization" key. */
static void http_with(const char *base, const char *method, const char *path, const char *body, size_t len,
                      const char *key, const char *const *headers, resp *r) {
    CURL *h = curl_easy_init();
    char url[2048];
    snprintf(url, sizeof url, "%s%s", base, path);
    struct curl_slist *hdrs = NULL;
    for (size_t i = 0; headers && headers[i]; i++) hdrs = curl_slist_append(hdrs, headers[i]);
    if (!headers) hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    char auth[256];
    if (key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
        hdrs = curl_slist_append(hdrs, auth);
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    r->cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
}

static void http(const char *base, const char *method, const char *path, const char *body, size_t len,
                 const char *key, resp *r) {
    http_with(base, method, path, body, len, key, NULL, r);
}

static void post(const char *base, const char *path, const char *body, resp *r) {
    http(base, "POST", path, body, strlen(body), NULL, r);
}

static dspy_json *json_of(const resp *r) {
    dspy_json *v = NULL;
    if (dspy_json_parse(dspy_str_cstr(&r->body), r->body.len, "answer", &v) != DSPY_OK) return NULL;
    return v;
}

/* Checks an OpenAI error answer: status, and error.code / error.param when given. */
static void check_error(const resp *r, long status, const char *code, const char *param, int line) {
    check_report(r->status == status, __FILE__, line, "status %ld, want %ld (body %s)", r->status, status,
                 dspy_str_cstr(&r->body));
    dspy_json *v = json_of(r);
    dspy_json *e = v ? dspy_json_get(v, "error") : NULL;
    check_report(e && dspy_json_size(e) == 4 && dspy_json_is_string(dspy_json_get(e, "message")) &&
                     dspy_json_is_string(dspy_json_get(e, "type")),
                 __FILE__, line, "not an OpenAI error body: %s", dspy_str_cstr(&r->body));
    if (e && code) {
        const char *c = dspy_json_str_or(e, "code", "(null)");
        check_report(strcmp(c, code) == 0, __FILE__, line, "code %s, want %s", c, code);
    }
    if (e && param) {
        const char *p = dspy_json_str_or(e, "param", "(null)");
        check_report(strcmp(p, param) == 0, __FILE__, line, "param %s, want %s", p, param);
    }
    dspy_json_decref(v);
}
#define CHECK_ERROR(r, st, code, param) check_error((r), (st), (code), (param), __LINE__)

/* Request bodies. */
static char *chat_body(const char *model, const char *user, int max_tokens, double temperature, int seed, bool stream,
                       const char *extra) {
    dspy_str b = DSPY_STR_INIT;
    dspy_str_appendf(&b, "{\"model\":\"%s\",\"messages\":[{\"role\":\"system\",\"content\":\"Answer briefly.\"},"
                         "{\"role\":\"user\",\"content\":\"%s\"}],\"max_tokens\":%d,\"temperature\":%g",
                     model, user, max_tokens, temperature);
    if (seed >= 0) dspy_str_appendf(&b, ",\"seed\":%d", seed);
    if (stream) dspy_str_append(&b, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    if (extra) dspy_str_append(&b, extra);
    dspy_str_append(&b, "}");
    return dspy_str_take(&b);
}

/* The text of a whole chat answer (malloc'd), or NULL. */
static char *chat_text(const resp *r, const char **finish_out) {
    dspy_json *v = json_of(r);
    dspy_json *c0 = v ? dspy_json_at(dspy_json_get(v, "choices"), 0) : NULL;
    dspy_json *msg = c0 ? dspy_json_get(c0, "message") : NULL;
    const char *content = msg ? dspy_json_str_or(msg, "content", NULL) : NULL;
    char *t = content ? strdup(content) : NULL;
    if (finish_out) {
        static __thread char fin[16];
        snprintf(fin, sizeof fin, "%s", c0 ? dspy_json_str_or(c0, "finish_reason", "") : "");
        *finish_out = fin;
    }
    dspy_json_decref(v);
    return t;
}

/* Parses an SSE chat/completion stream: checks the framing (only "data: ...\n\n" events, the
 * last one [DONE]) and returns the concatenated text of choice 0 (malloc'd) or NULL. */
static char *sse_text(const char *body, bool chat, const char **finish_out, int64_t *completion_tokens) {
    dspy_str text = DSPY_STR_INIT;
    const char *p = body;
    bool done = false, ok = true, saw_role = false;
    static __thread char fin[16];
    fin[0] = '\0';
    if (completion_tokens) *completion_tokens = -1;
    while (*p) {
        if (strncmp(p, "data: ", 6) != 0) {
            ok = false;
            break;
        }
        const char *end = strstr(p, "\n\n");
        if (!end) {
            ok = false;
            break;
        }
        const char *data = p + 6;
        size_t n = (size_t)(end - data);
        if (n == 6 && strncmp(data, "[DONE]", 6) == 0) {
            done = true;
            p = end + 2;
            ok = *p == '\0';
            break;
        }
        dspy_json *v = NULL;
        if (dspy_json_parse(data, n, "event", &v) != DSPY_OK) {
            ok = false;
            break;
        }
        dspy_json *choices = dspy_json_get(v, "choices");
        dspy_json *u = dspy_json_get(v, "usage");
        if (u && dspy_json_typeof(u) == DSPY_JSON_OBJECT && completion_tokens)
            *completion_tokens = dspy_json_int_or(u, "completion_tokens", -1);
        for (size_t i = 0; i < dspy_json_size(choices); i++) {
            dspy_json *c = dspy_json_at(choices, i);
            if (dspy_json_int_or(c, "index", -1) != 0) continue;
            const char *t = NULL;
            if (chat) {
                dspy_json *d = dspy_json_get(c, "delta");
                t = dspy_json_str_or(d, "content", NULL);
                if (dspy_json_str_or(d, "role", NULL)) saw_role = true;
            } else {
                t = dspy_json_str_or(c, "text", NULL);
            }
            if (t) dspy_str_append(&text, t);
            const char *f = dspy_json_str_or(c, "finish_reason", NULL);
            if (f) snprintf(fin, sizeof fin, "%s", f);
        }
        dspy_json_decref(v);
        p = end + 2;
    }
    if (finish_out) *finish_out = fin;
    if (!ok || !done || (chat && !saw_role)) {
        dspy_str_free(&text);
        return NULL;
    }
    if (text.len == 0) dspy_str_append(&text, "");
    return dspy_str_take(&text);
}

/* ---- fixtures --------------------------------------------------------------------------- */

static bool make_model(void) {
    if (!test_have_shared("models/llama3-tokenizer/tokenizer.json")) {
        check_skip("../shared/models/llama3-tokenizer is missing");
        return false;
    }
    snprintf(g_model, sizeof g_model, "%s/tiny-model", test_tmpdir());
    char log[1100];
    snprintf(log, sizeof log, "%s/init-model.log", test_tmpdir());
    char tok[1024];
    snprintf(tok, sizeof tok, "%s", test_shared("models/llama3-tokenizer"));
    char *argv[] = {(char *)test_bin("dspy"), "init-model", "--out", g_model, "--tokenizer", tok, "--seed", "3", NULL};
    int rc = run(argv, log, NULL);
    CHECK_INT(rc, 0);
    if (rc != 0) print_file(log);
    return rc == 0;
}

static dspy_local_server *launch(const char *const *extra, size_t n_extra, const char *key) {
    dspy_local_params p = dspy_local_params_default();
    p.api_key = key;
    p.dspy_bin = test_bin("dspy");
    p.log_dir = test_tmpdir();
    p.timeout_s = 60;
    p.kill_grace_s = 30;
    /* one compute thread: ctest runs two test binaries at once on two cores, and OpenMP
     * threads spinning against each other would slow everything down */
    const char *args[16] = {"--threads", "1"};
    size_t n = 2;
    for (size_t i = 0; i < n_extra && n < 16; i++) args[n++] = extra[i];
    p.extra_args = args;
    p.n_extra_args = n;
    dspy_local_server *s = NULL;
    dspy_status st = dspy_local_launch(g_model, &p, &s);
    CHECK_OK(st);
    return s;
}

/* ---- timing ---------------------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_models_and_health(const char *base) {
    resp r = {0};
    http(base, "GET", "/models", NULL, 0, NULL, &r);
    CHECK_INT(r.status, 200);
    CHECK_CONTAINS(r.headers.ptr, "Content-Type: application/json");
    dspy_json *v = json_of(&r);
    CHECK_STR(dspy_json_str_or(v, "object", NULL), "list");
    dspy_json *m = dspy_json_at(dspy_json_get(v, "data"), 0);
    CHECK_INT(dspy_json_size(dspy_json_get(v, "data")), 1);
    CHECK_STR(dspy_json_str_or(m, "id", NULL), g_model);
    CHECK_STR(dspy_json_str_or(m, "object", NULL), "model");
    CHECK_STR(dspy_json_str_or(m, "owned_by", NULL), "dspy.c");
    CHECK(dspy_json_int_or(m, "created", 0) > 1600000000);
    dspy_json_decref(v);
    resp_free(&r);

    char *esc = curl_easy_escape(NULL, g_model, 0);
    char path[2048];
    snprintf(path, sizeof path, "/models/local%%3A%s", esc);
    curl_free(esc);
    memset(&r, 0, sizeof r);
    http(base, "GET", path, NULL, 0, NULL, &r);
    CHECK_INT(r.status, 200);
    CHECK_CONTAINS(r.body.ptr, "\"object\":\"model\"");
    resp_free(&r);
    memset(&r, 0, sizeof r);
    http(base, "GET", "/models/gpt-4o", NULL, 0, NULL, &r);
    CHECK_ERROR(&r, 404, "model_not_found", "model");
    resp_free(&r);

    /* /health lives outside /v1 */
    char root[256];
    snprintf(root, sizeof root, "%.*s", (int)(strlen(base) - 3), base);
    memset(&r, 0, sizeof r);
    http(root, "GET", "/health", NULL, 0, NULL, &r);
    CHECK_INT(r.status, 200);
    CHECK_STR(r.body.ptr, "{\"status\":\"ok\"}");
    resp_free(&r);
}

static void test_chat(const char *base) {
    /* the same greedy request under each accepted model name gives the same answer */
    char local[1100];
    snprintf(local, sizeof local, "local:%s", g_model);
    const char *names[] = {local, g_model, "tiny-model"};
    char *first = NULL;
    for (size_t i = 0; i < 3; i++) {
        char *b = chat_body(names[i], "What is 2+2?", 12, 0.0, -1, false, NULL);
        resp r = {0};
        post(base, "/chat/completions", b, &r);
        CHECK_INT(r.status, 200);
        dspy_json *v = json_of(&r);
        CHECK_STR(dspy_json_str_or(v, "object", NULL), "chat.completion");
        CHECK(strncmp(dspy_json_str_or(v, "id", ""), "chatcmpl-", 9) == 0);
        CHECK_STR(dspy_json_str_or(v, "model", NULL), g_model);
        dspy_json *c0 = dspy_json_at(dspy_json_get(v, "choices"), 0);
        CHECK_STR(dspy_json_str_or(dspy_json_get(c0, "message"), "role", NULL), "assistant");
        const char *fin = dspy_json_str_or(c0, "finish_reason", "");
        CHECK(strcmp(fin, "stop") == 0 || strcmp(fin, "length") == 0);
        dspy_json *u = dspy_json_get(v, "usage");
        int64_t pt = dspy_json_int_or(u, "prompt_tokens", -1), ct = dspy_json_int_or(u, "completion_tokens", -1);
        CHECK(pt > 10 && ct >= 1 && ct <= 12);
        CHECK_INT(dspy_json_int_or(u, "total_tokens", -1), pt + ct);
        if (strcmp(fin, "length") == 0) CHECK_INT(ct, 12);
        char *t = chat_text(&r, NULL);
        CHECK(t != NULL);
        if (!first) first = t ? strdup(t) : NULL;
        else CHECK_STR(t, first);
        free(t);
        dspy_json_decref(v);
        resp_free(&r);
        free(b);
    }
    /* streamed: same text, proper framing, usage chunk */
    char *b = chat_body(g_model, "What is 2+2?", 12, 0.0, -1, true, NULL);
    resp r = {0};
    post(base, "/chat/completions", b, &r);
    CHECK_INT(r.status, 200);
    CHECK_CONTAINS(r.headers.ptr, "Content-Type: text/event-stream");
    CHECK_CONTAINS(r.headers.ptr, "Transfer-Encoding: chunked");
    const char *fin = NULL;
    int64_t ct = 0;
    char *t = sse_text(dspy_str_cstr(&r.body), true, &fin, &ct);
    CHECK(t != NULL);
    CHECK_STR(t, first);
    CHECK(strcmp(fin, "stop") == 0 || strcmp(fin, "length") == 0);
    CHECK(ct >= 1 && ct <= 12);
    CHECK(dspy_strv_ends_with(dspy_strv_make(r.body.ptr, r.body.len), "\n\ndata: [DONE]\n\n"));
    CHECK_CONTAINS(r.body.ptr, "\"object\":\"chat.completion.chunk\"");
    free(t);
    free(b);
    resp_free(&r);
    free(first);
}

static void test_completions(const char *base) {
    resp r = {0};
    post(base, "/completions", "{\"prompt\":\"Once upon a time\",\"max_tokens\":10,\"temperature\":0,\"n\":2}", &r);
    CHECK_INT(r.status, 200);
    dspy_json *v = json_of(&r);
    CHECK_STR(dspy_json_str_or(v, "object", NULL), "text_completion");
    dspy_json *ch = dspy_json_get(v, "choices");
    CHECK_INT(dspy_json_size(ch), 2);
    const char *t0 = dspy_json_str_or(dspy_json_at(ch, 0), "text", NULL);
    const char *t1 = dspy_json_str_or(dspy_json_at(ch, 1), "text", NULL);
    CHECK(t0 && t1 && strcmp(t0, t1) == 0);
    CHECK_INT(dspy_json_int_or(dspy_json_at(ch, 1), "index", -1), 1);
    dspy_json *u = dspy_json_get(v, "usage");
    CHECK_INT(dspy_json_int_or(u, "prompt_tokens", -1), 5); /* <|begin_of_text|> Once upon a time */
    char *greedy = t0 ? strdup(t0) : strdup("");
    dspy_json_decref(v);
    resp_free(&r);

    /* token ids: the same prompt as ids gives the same text */
    memset(&r, 0, sizeof r);
    post(base, "/completions", "{\"prompt\":[128000,12805,5304,264,892],\"max_tokens\":10,\"temperature\":0}", &r);
    CHECK_INT(r.status, 200);
    v = json_of(&r);
    CHECK_STR(dspy_json_str_or(dspy_json_at(dspy_json_get(v, "choices"), 0), "text", NULL), greedy);
    dspy_json_decref(v);
    resp_free(&r);

    /* streamed completion */
    memset(&r, 0, sizeof r);
    post(base, "/completions", "{\"prompt\":\"Once upon a time\",\"max_tokens\":10,\"temperature\":0,\"stream\":true}", &r);
    CHECK_INT(r.status, 200);
    char *st = sse_text(dspy_str_cstr(&r.body), false, NULL, NULL);
    CHECK_STR(st, greedy);
    CHECK(strstr(r.body.ptr, "\"usage\"") == NULL); /* not asked for */
    free(st);
    resp_free(&r);

    /* a stop string from the middle of the greedy text cuts it there */
    size_t gl = strlen(greedy);
    if (gl >= 4) {
        char stop[3] = {greedy[gl / 2], greedy[gl / 2 + 1], 0};
        dspy_json *sv = dspy_json_stringn(stop, 2);
        char *sj = dspy_json_dumps(sv, DSPY_JSON_COMPACT);
        dspy_json_decref(sv);
        char body[512];
        snprintf(body, sizeof body, "{\"prompt\":\"Once upon a time\",\"max_tokens\":10,\"temperature\":0,\"stop\":[%s]}", sj);
        free(sj);
        memset(&r, 0, sizeof r);
        post(base, "/completions", body, &r);
        CHECK_INT(r.status, 200);
        v = json_of(&r);
        dspy_json *c0 = dspy_json_at(dspy_json_get(v, "choices"), 0);
        size_t cut = (size_t)(strstr(greedy, stop) - greedy);
        const char *got = dspy_json_str_or(c0, "text", "");
        CHECK_INT(strlen(got), cut);
        CHECK(strncmp(got, greedy, cut) == 0);
        CHECK_STR(dspy_json_str_or(c0, "finish_reason", NULL), "stop");
        dspy_json_decref(v);
        resp_free(&r);
    } else {
        check_skip("greedy completion too short for the stop-string check");
    }
    free(greedy);
}

/* The project's own LM client, configured as DSPy's LocalProvider leaves it after launch()
 * (model "openai/local:<dir>", api_base from the launcher, api_key "local"), gets the same
 * answer as a plain request. */
static void test_dspy_lm(const char *base) {
    char name[1100];
    snprintf(name, sizeof name, "openai/local:%s", g_model);
    dspy_lm_params p = dspy_lm_params_default();
    p.temperature = 0.0;
    p.max_tokens = 12;
    p.cache = 0;
    p.num_retries = 0;
    dspy_lm *lm = NULL;
    CHECK_OK(dspy_lm_new(name, &p, &lm));
    if (!lm) return;
    CHECK_OK(dspy_lm_set_kwarg(lm, "api_base", dspy_json_string(base)));
    dspy_json *msgs = NULL;
    const char *mj = "[{\"role\":\"system\",\"content\":\"Answer briefly.\"},"
                     "{\"role\":\"user\",\"content\":\"What is 2+2?\"}]";
    CHECK_OK(dspy_json_parse(mj, strlen(mj), "messages", &msgs));
    dspy_lm_response *out = NULL;
    CHECK_OK(dspy_lm_call(lm, msgs, NULL, &out));
    char *b = chat_body(g_model, "What is 2+2?", 12, 0.0, -1, false, NULL);
    resp r = {0};
    post(base, "/chat/completions", b, &r);
    char *want = chat_text(&r, NULL);
    if (out) {
        CHECK_INT(out->n, 1);
        CHECK_STR(out->choices[0].text, want);
        CHECK_STR(out->model, g_model);
        CHECK(dspy_json_int_or(out->usage, "completion_tokens", 0) >= 1);
    }
    free(want);
    free(b);
    resp_free(&r);
    dspy_lm_response_free(out);
    dspy_json_decref(msgs);
    dspy_lm_free(lm);
}

/* ---- concurrency ------------------------------------------------------------------------ */

#define N_PROMPTS 4
static const char *k_prompts[N_PROMPTS] = {"Name a color.", "Count to three.", "What is DSPy?", "Translate: bonjour"};

typedef struct client {
    const char *base;
    int k;
    const char *expect;
    char *got;
    long status;
} client;

static bool sampled(int k) { return k % 3 == 0; }

static char *one_request(const char *base, int prompt, bool sample, bool stream, long *status) {
    char *b = chat_body(g_model, k_prompts[prompt], 8, sample ? 1.0 : 0.0, sample ? 77 + prompt : -1, stream, NULL);
    resp r = {0};
    post(base, "/chat/completions", b, &r);
    *status = r.status;
    char *t = NULL;
    if (r.status == 200) t = stream ? sse_text(dspy_str_cstr(&r.body), true, NULL, NULL) : chat_text(&r, NULL);
    free(b);
    resp_free(&r);
    return t;
}

static void *client_main(void *p) {
    client *c = p;
    c->got = one_request(c->base, c->k % N_PROMPTS, sampled(c->k), c->k % 2 == 1, &c->status);
    return NULL;
}

static void test_concurrent(const char *base) {
    char *expect[N_PROMPTS][2];
    for (int p = 0; p < N_PROMPTS; p++)
        for (int s = 0; s < 2; s++) {
            long st = 0;
            expect[p][s] = one_request(base, p, s == 1, false, &st);
            CHECK_INT(st, 200);
        }
    int n = CHECK_UNDER_ASAN ? 8 : 32;
    client cl[32];
    pthread_t th[32];
    for (int k = 0; k < n; k++) {
        cl[k] = (client){.base = base, .k = k};
        cl[k].expect = expect[k % N_PROMPTS][sampled(k) ? 1 : 0];
        pthread_create(&th[k], NULL, client_main, &cl[k]);
    }
    int same = 0;
    for (int k = 0; k < n; k++) {
        pthread_join(th[k], NULL);
        CHECK_INT(cl[k].status, 200);
        check_report(cl[k].got && cl[k].expect && strcmp(cl[k].got, cl[k].expect) == 0, __FILE__, __LINE__,
                     "client %d (%s, %s): got \"%s\", single request gave \"%s\"", k, sampled(k) ? "seeded" : "greedy",
                     k % 2 ? "stream" : "whole", cl[k].got ? cl[k].got : "(null)", cl[k].expect ? cl[k].expect : "(null)");
        same += cl[k].got && cl[k].expect && strcmp(cl[k].got, cl[k].expect) == 0;
        free(cl[k].got);
    }
    CHECK_INT(same, n);
    for (int p = 0; p < N_PROMPTS; p++)
        for (int s = 0; s < 2; s++) free(expect[p][s]);
}

/* ---- errors ----------------------------------------------------------------------------- */

static void test_errors(const char *base) {
    resp r = {0};
    post(base, "/chat/completions", "{\"messages\": [", &r);
    CHECK_ERROR(&r, 400, NULL, NULL);
    CHECK_CONTAINS(r.body.ptr, "We could not parse the JSON body of your request.");
    resp_free(&r);

    memset(&r, 0, sizeof r);
    post(base, "/chat/completions", "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &r);
    CHECK_ERROR(&r, 404, "model_not_found", "model");
    CHECK_CONTAINS(r.body.ptr, "gpt-4o");
    resp_free(&r);

    memset(&r, 0, sizeof r);
    post(base, "/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":9}", &r);
    CHECK_ERROR(&r, 400, "decimal_above_max_value", "temperature");
    resp_free(&r);

    /* a prompt longer than the context (8192 for the tiny preset) */
    dspy_str big = DSPY_STR_INIT;
    dspy_str_append(&big, "{\"max_tokens\":4,\"prompt\":[128000");
    for (int i = 0; i < 8300; i++) dspy_str_append(&big, ",1000");
    dspy_str_append(&big, "]}");
    memset(&r, 0, sizeof r);
    post(base, "/completions", big.ptr, &r);
    CHECK_ERROR(&r, 400, "context_length_exceeded", "prompt");
    CHECK_CONTAINS(r.body.ptr, "maximum context length is 8192 tokens");
    CHECK_CONTAINS(r.body.ptr, "8301 tokens");
    resp_free(&r);
    dspy_str_free(&big);

    /* a body over --max-body (1000000 here) */
    dspy_str huge = DSPY_STR_INIT;
    dspy_str_append(&huge, "{\"prompt\":\"");
    dspy_str_repeat(&huge, "a", 1100000);
    dspy_str_append(&huge, "\"}");
    memset(&r, 0, sizeof r);
    post(base, "/completions", huge.ptr, &r);
    CHECK_ERROR(&r, 413, "request_too_large", NULL);
    resp_free(&r);
    dspy_str_free(&huge);

    memset(&r, 0, sizeof r);
    post(base, "/embeddings", "{}", &r);
    CHECK_ERROR(&r, 404, "unknown_url", NULL);
    CHECK_CONTAINS(r.body.ptr, "Invalid URL (POST /v1/embeddings)");
    resp_free(&r);

    memset(&r, 0, sizeof r);
    http(base, "GET", "/chat/completions", NULL, 0, NULL, &r);
    CHECK_ERROR(&r, 405, "method_not_allowed", NULL);
    CHECK_CONTAINS(r.headers.ptr, "Allow: POST");
    resp_free(&r);

    memset(&r, 0, sizeof r);
    http(base, "PUT", "/models", "{}", 2, NULL, &r);
    CHECK_ERROR(&r, 405, "method_not_allowed", NULL);
    resp_free(&r);

    /* a body that is not declared JSON (a browser's cross-site form or text/plain POST): 415 */
    const char *ok_body = "{\"prompt\":\"hi\",\"max_tokens\":1}";
    const char *text_plain[] = {"Content-Type: text/plain", NULL};
    memset(&r, 0, sizeof r);
    http_with(base, "POST", "/completions", ok_body, strlen(ok_body), NULL, text_plain, &r);
    CHECK_ERROR(&r, 415, "unsupported_media_type", NULL);
    CHECK_CONTAINS(r.body.ptr, "'text/plain'");
    resp_free(&r);
    const char *no_type[] = {"Content-Type:", NULL}; /* curl: drop its default form type */
    memset(&r, 0, sizeof r);
    http_with(base, "POST", "/completions", ok_body, strlen(ok_body), NULL, no_type, &r);
    CHECK_ERROR(&r, 415, "unsupported_media_type", NULL);
    resp_free(&r);
    const char *json_charset[] = {"Content-Type: Application/JSON; charset=utf-8", NULL};
    memset(&r, 0, sizeof r);
    http_with(base, "POST", "/completions", ok_body, strlen(ok_body), NULL, json_charset, &r);
    CHECK_INT(r.status, 200);
    CHECK(strstr(r.headers.ptr, "Access-Control-Allow-Origin") == NULL); /* CORS off by default */
    resp_free(&r);

    /* DNS rebinding: a name that is not allowed gets 403; IP literals and localhost pass */
    const char *evil[] = {"Content-Type: application/json", "Host: attacker.example:8000", NULL};
    memset(&r, 0, sizeof r);
    http_with(base, "GET", "/models", NULL, 0, NULL, evil, &r);
    CHECK_ERROR(&r, 403, "host_not_allowed", NULL);
    CHECK_CONTAINS(r.body.ptr, "--allowed-hosts");
    resp_free(&r);
    const char *local_names[][3] = {{"Host: localhost:1234", NULL, NULL}, {"Host: [::1]:80", NULL, NULL},
                                    {"Host: 10.1.2.3", NULL, NULL}};
    for (int i = 0; i < 3; i++) {
        memset(&r, 0, sizeof r);
        http_with(base, "GET", "/models", NULL, 0, NULL, local_names[i], &r);
        CHECK_INT(r.status, 200);
        resp_free(&r);
    }
    /* no CORS preflight answer by default */
    memset(&r, 0, sizeof r);
    http(base, "OPTIONS", "/chat/completions", NULL, 0, NULL, &r);
    CHECK_INT(r.status, 405);
    resp_free(&r);

    /* admission: n over --max-n, and a request whose KV budget is over the cap, refused at once */
    memset(&r, 0, sizeof r);
    post(base, "/completions", "{\"prompt\":\"hi\",\"n\":17}", &r);
    CHECK_ERROR(&r, 400, "invalid_value", "n");
    CHECK_CONTAINS(r.body.ptr, "at most 16 choices");
    resp_free(&r);
    memset(&r, 0, sizeof r);
    post(base, "/completions", "{\"prompt\":\"hi\",\"n\":16,\"max_tokens\":1000000000}", &r);
    CHECK_ERROR(&r, 400, "request_too_large", "max_tokens");
    CHECK_CONTAINS(r.body.ptr, "needs up to 131072 tokens of KV cache");
    {   /* the budget scales with the KV pool (the CPU default or the GPU's free memory), but it
         * always holds one full-context sequence (8,192 tokens) and is under what was asked */
        const char *b = r.body.ptr ? strstr(r.body.ptr, "per-request budget of ") : NULL;
        long long budget = b ? strtoll(b + strlen("per-request budget of "), NULL, 10) : -1;
        CHECK(budget >= 8192 && budget < 131072);
    }
    resp_free(&r);

    /* an 8 MB-class prompt is refused after tokenizing only up to the context: fast */
    dspy_str longp = DSPY_STR_INIT;
    dspy_str_append(&longp, "{\"prompt\":\"");
    dspy_str_repeat(&longp, "word ", 190000);
    dspy_str_append(&longp, "\"}");
    double t0 = now_s();
    memset(&r, 0, sizeof r);
    post(base, "/completions", longp.ptr, &r);
    CHECK_ERROR(&r, 400, "context_length_exceeded", "prompt");
    CHECK_CONTAINS(r.body.ptr, "resulted in more than 8192 tokens");
    CHECK(now_s() - t0 < (CHECK_UNDER_ASAN ? 20.0 : 2.0));
    resp_free(&r);
    dspy_str_free(&longp);
}

/* A streaming client that hangs up after the first event: the server notices, cancels the
 * sequence, and keeps serving. */
static void test_disconnect(const char *base, dspy_local_server *srv) {
    char *b = chat_body(g_model, "Go on forever.", 3000, 0.0, -1, true, NULL);
    resp r = {0};
    r.stop_after = 1;
    post(base, "/chat/completions", b, &r);
    CHECK_INT(r.cc, CURLE_WRITE_ERROR);
    free(b);
    resp_free(&r);
    bool seen = false;
    for (int i = 0; i < 100 && !seen; i++) {
        char *log = NULL;
        if (dspy_local_get_logs(srv, &log) == DSPY_OK) seen = strstr(log, " 0 client gone") != NULL;
        free(log);
        if (!seen) usleep(50 * 1000);
    }
    CHECK(seen);
    memset(&r, 0, sizeof r);
    post(base, "/completions", "{\"prompt\":\"hi\",\"max_tokens\":2}", &r);
    CHECK_INT(r.status, 200);
    resp_free(&r);
}

typedef struct bg {
    const char *base;
    const char *key;
    const char *body;
    resp r;
} bg;

static void *bg_main(void *p) {
    bg *b = p;
    http(b->base, "POST", "/chat/completions", b->body, strlen(b->body), b->key, &b->r);
    return NULL;
}

/* dspy_local_kill, and where the server did not exit 0 its log's last 4 KB on stderr: the one
 * record of what an abort at shutdown (a sanitizer's report: exit 134 in the ASan lane) said. */
static int kill_server(dspy_local_server *s) {
    int code = -1;
    CHECK_OK(dspy_local_kill(s, &code));
    char *log = NULL;
    if (code != 0 && dspy_local_get_logs(s, &log) == DSPY_OK && log) {
        const size_t n = strlen(log);
        fprintf(stderr, "server exited %d; its log's end:\n%s\n", code, n > 4096 ? log + n - 4096 : log);
    }
    free(log);
    return code;
}

/* Second server: --api-key, --served-model-name, one sequence and a queue of one. */
static void test_key_overload_and_sigterm(void) {
    const char *extra[] = {"--served-model-name", "tiny-served", "--max-seqs", "1", "--max-queue", "1"};
    dspy_local_server *s = launch(extra, 6, "sekret");
    if (!s) return;
    const char *base = dspy_local_api_base(s);
    resp r = {0};
    http(base, "GET", "/models", NULL, 0, NULL, &r);
    CHECK_ERROR(&r, 401, "invalid_api_key", NULL);
    CHECK_CONTAINS(r.headers.ptr, "WWW-Authenticate: Bearer");
    resp_free(&r);
    memset(&r, 0, sizeof r);
    http(base, "GET", "/models", NULL, 0, "wrong", &r);
    CHECK_ERROR(&r, 401, "invalid_api_key", NULL);
    resp_free(&r);
    memset(&r, 0, sizeof r);
    http(base, "GET", "/models", NULL, 0, "sekret", &r);
    CHECK_INT(r.status, 200);
    CHECK_CONTAINS(r.body.ptr, "\"id\":\"tiny-served\"");
    resp_free(&r);
    char root[256];
    snprintf(root, sizeof root, "%.*s", (int)(strlen(base) - 3), base);
    memset(&r, 0, sizeof r);
    http(root, "GET", "/health", NULL, 0, NULL, &r);
    CHECK_INT(r.status, 200);
    resp_free(&r);

    /* overload: six long requests at once against one sequence + a queue of one */
    char *body = chat_body("tiny-served", "Write a lot.", CHECK_UNDER_ASAN ? 15 : 60, 0.0, -1, false, NULL);
    enum { NB = 6 };
    bg jobs[NB];
    pthread_t th[NB];
    for (int i = 0; i < NB; i++) {
        jobs[i] = (bg){.base = base, .key = "sekret", .body = body};
        pthread_create(&th[i], NULL, bg_main, &jobs[i]);
    }
    int ok = 0, busy = 0;
    for (int i = 0; i < NB; i++) {
        pthread_join(th[i], NULL);
        if (jobs[i].r.status == 200) ok++;
        else {
            CHECK_ERROR(&jobs[i].r, 503, "overloaded", NULL);
            CHECK_CONTAINS(jobs[i].r.headers.ptr, "Retry-After: 1");
            busy++;
        }
        resp_free(&jobs[i].r);
    }
    CHECK(ok >= 1);
    CHECK(busy >= 1);
    CHECK_INT(ok + busy, NB);
    free(body);

    /* SIGTERM while a stream is in flight (its first event has arrived): the stream runs to its
     * end, then the server exits 0 */
    char *slow = chat_body("local:tiny-served", "One more.", CHECK_UNDER_ASAN ? 40 : 200, 0.0, -1, true, NULL);
    bg inflight = {.base = base, .key = "sekret", .body = slow};
    pthread_t t1;
    pthread_create(&t1, NULL, bg_main, &inflight);
    for (int i = 0; i < 3000 && !__atomic_load_n(&inflight.r.got_data, __ATOMIC_SEQ_CST); i++) usleep(10 * 1000);
    CHECK(__atomic_load_n(&inflight.r.got_data, __ATOMIC_SEQ_CST));
    CHECK_INT(kill_server(s), 0);
    pthread_join(t1, NULL);
    CHECK_INT(inflight.r.status, 200);
    const char *fin = NULL;
    int64_t ct = 0;
    char *t = sse_text(dspy_str_cstr(&inflight.r.body), true, &fin, &ct);
    CHECK(t != NULL);
    CHECK_STR(fin, "length");
    CHECK_INT(ct, CHECK_UNDER_ASAN ? 40 : 200);
    free(t);
    resp_free(&inflight.r);
    free(slow);
    char *log = NULL;
    CHECK_OK(dspy_local_get_logs(s, &log));
    CHECK_CONTAINS(log, "dspy serve: listening on http://127.0.0.1:");
    CHECK_CONTAINS(log, "(model tiny-served; max-seqs ");
    CHECK_CONTAINS(log, "serve: shutting down; waiting up to 30000 ms for 1 connection(s)");
    CHECK_CONTAINS(log, "dspy serve: stopped");
    free(log);
    CHECK_INT(kill_server(s), 0); /* idempotent */
    dspy_local_free(s);
}

/* Third server: no grace period, so SIGTERM aborts a running stream with an error event; and
 * --default-max-tokens applies to requests without max_tokens. */
static void test_abort_on_sigterm(void) {
    const char *extra[] = {"--shutdown-grace", "0", "--default-max-tokens", "5"};
    dspy_local_server *s = launch(extra, 4, NULL);
    if (!s) return;
    const char *base = dspy_local_api_base(s);
    resp r = {0};
    post(base, "/completions", "{\"prompt\":\"Once upon a time\",\"temperature\":0}", &r);
    CHECK_INT(r.status, 200);
    dspy_json *v = json_of(&r);
    dspy_json *c0 = dspy_json_at(dspy_json_get(v, "choices"), 0);
    if (strcmp(dspy_json_str_or(c0, "finish_reason", ""), "length") == 0)
        CHECK_INT(dspy_json_int_or(dspy_json_get(v, "usage"), "completion_tokens", -1), 5);
    else
        CHECK(dspy_json_int_or(dspy_json_get(v, "usage"), "completion_tokens", -1) <= 5);
    dspy_json_decref(v);
    resp_free(&r);

    char *b = chat_body(g_model, "Never stop.", 3000, 0.0, -1, true, NULL);
    bg inflight = {.base = base, .body = b};
    pthread_t t1;
    pthread_create(&t1, NULL, bg_main, &inflight);
    for (int i = 0; i < 3000 && !__atomic_load_n(&inflight.r.got_data, __ATOMIC_SEQ_CST); i++) usleep(10 * 1000);
    CHECK_INT(kill_server(s), 0);
    pthread_join(t1, NULL);
    CHECK_INT(inflight.r.status, 200);
    CHECK_INT(inflight.r.cc, CURLE_OK);
    CHECK_CONTAINS(inflight.r.body.ptr, "data: {\"error\":{\"message\":\"the server is shutting down\","
                                        "\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\ndata: [DONE]\n\n");
    CHECK(dspy_strv_ends_with(dspy_strv_make(inflight.r.body.ptr, inflight.r.body.len), "data: [DONE]\n\n"));
    resp_free(&inflight.r);
    free(b);
    char *log = NULL;
    CHECK_OK(dspy_local_get_logs(s, &log));
    CHECK_CONTAINS(log, "serve: aborting 1 unfinished connection(s)");
    CHECK_CONTAINS(log, "dspy serve: stopped");
    free(log);
    dspy_local_free(s);
}

/* The SDK version tests/e2e/openai_sdk/package.json pins; its install lives outside the tree. */
#define OPENAI_SDK_VERSION "6.30.1"

/* Copies tests/e2e/openai_sdk/<name> into dir. */
static bool copy_sdk_file(const char *dir, const char *name) {
    char src[1100], dst[1100];
    snprintf(src, sizeof src, "%s/%s", test_source("tests/e2e/openai_sdk"), name);
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    char *text = NULL;
    size_t n = 0;
    bool ok = dspy_read_file(src, &text, &n) == DSPY_OK && dspy_write_file(dst, text, n) == DSPY_OK;
    if (!ok) check_report(false, __FILE__, __LINE__, "copying %s to %s: %s", src, dst, dspy_errmsg());
    free(text);
    return ok;
}

static void test_node_sdk(const char *base) {
    if (!on_path("node") || !on_path("npm")) {
        check_skip("node/npm are not installed; the OpenAI Node.js SDK test needs them");
        return;
    }
    /* The package files and the script are copied to a directory outside the source tree and
     * installed there (npm's download cache too: test_npm_dir), once per SDK version. */
    char *pj = test_slurp(test_source("tests/e2e/openai_sdk/package.json"));
    bool pinned = strstr(pj, "\"openai\": \"" OPENAI_SDK_VERSION "\"") != NULL;
    free(pj);
    if (!pinned) {
        check_report(false, __FILE__, __LINE__, "tests/e2e/openai_sdk/package.json does not pin openai "
                     OPENAI_SDK_VERSION ": update OPENAI_SDK_VERSION in test_serve.c with it");
        return;
    }
    const char *d = test_npm_dir("openai-sdk-" OPENAI_SDK_VERSION);
    if (!d) return;
    char dir[1024], mods[1100], log[1100];
    snprintf(dir, sizeof dir, "%s", d);
    if (!copy_sdk_file(dir, "package.json") || !copy_sdk_file(dir, "package-lock.json") ||
        !copy_sdk_file(dir, "sdk_test.mjs"))
        return;
    snprintf(mods, sizeof mods, "%s/node_modules/openai/package.json", dir);
    snprintf(log, sizeof log, "%s/npm.log", test_tmpdir());
    char *installed = access(mods, R_OK) == 0 ? test_slurp(mods) : NULL;
    bool ready = installed && strstr(installed, "\"version\": \"" OPENAI_SDK_VERSION "\"");
    free(installed);
    if (!ready) {
        /* First ask whether the registry answers at all (one try: npm's default retries take over
         * a minute per command), so that "no registry" is a named skip and not a timeout. */
        char plog[1100];
        snprintf(plog, sizeof plog, "%s/npm-ping.log", test_tmpdir());
        char *ping[] = {"npm", "ping", "--fetch-retries=0", "--fetch-timeout=15000", NULL};
        if (run(ping, plog, dir) != 0) {
            print_file(plog);
            check_skip("the npm registry cannot be reached (npm ping failed, log above): the OpenAI "
                       "Node.js SDK was not installed and this part did NOT run");
            return;
        }
        fprintf(stderr, "test_serve: installing the OpenAI Node.js SDK %s into %s\n", OPENAI_SDK_VERSION, dir);
        char *argv[] = {"npm", "ci", "--no-audit", "--no-fund", NULL};
        int rc = run(argv, log, dir);
        if (rc != 0) {
            print_file(log);
            check_report(false, __FILE__, __LINE__, "npm ci (openai %s) in %s failed (exit %d) though the "
                         "registry answered a ping; see the log above", OPENAI_SDK_VERSION, dir, rc);
            return;
        }
    }
    char script[1100];
    snprintf(script, sizeof script, "%s/sdk_test.mjs", dir);
    snprintf(log, sizeof log, "%s/sdk.log", test_tmpdir());
    char *argv[] = {"node", script, (char *)base, g_model, NULL};
    int rc = run(argv, log, dir);
    CHECK_INT(rc, 0);
    char *out = NULL;
    size_t n;
    if (dspy_read_file(log, &out, &n) == DSPY_OK) CHECK_CONTAINS(out, "sdk_test: ok");
    if (rc != 0) print_file(log);
    free(out);
}

/* ---- the launcher ----------------------------------------------------------------------- */

static void write_script(const char *path, const char *body) {
    dspy_str s = DSPY_STR_INIT;
    dspy_str_appendf(&s, "#!/bin/sh\n%s\n", body);
    CHECK_OK(dspy_write_file(path, s.ptr, s.len));
    chmod(path, 0755);
    dspy_str_free(&s);
}


static void test_launcher(void) {
    CHECK_STR(dspy_local_strip_model("openai/local:/abs/out"), "/abs/out");
    CHECK_STR(dspy_local_strip_model("local:huggingface/meta-llama/Llama-3.2-1B"), "meta-llama/Llama-3.2-1B");
    CHECK_STR(dspy_local_strip_model("/plain"), "/plain");

    dspy_local_params p = dspy_local_params_default();
    p.log_dir = test_tmpdir();
    dspy_local_server *s = NULL;
    /* a child asked for and no binary: this test program is not `dspy` and DSPY_BIN is unset
     * (the default mode would serve on a thread instead: test_serve_inproc) */
    char *saved = getenv("DSPY_BIN") ? strdup(getenv("DSPY_BIN")) : NULL;
    unsetenv("DSPY_BIN");
    p.mode = DSPY_LOCAL_CHILD;
    CHECK_STATUS(dspy_local_launch(g_model, &p, &s), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "DSPY_BIN");
    CHECK(s == NULL);
    p.mode = DSPY_LOCAL_AUTO;
    /* DSPY_BIN is honoured: a model that does not exist makes the server exit early */
    setenv("DSPY_BIN", test_bin("dspy"), 1);
    p.timeout_s = 60;
    double t0 = now_s();
    CHECK_STATUS(dspy_local_launch("openai/local:/no/such/model", &p, &s), DSPY_ERR_STATE);
    CHECK_CONTAINS(dspy_errmsg(), "exited with status 1 before it was ready");
    CHECK_CONTAINS(dspy_errmsg(), "/no/such/model");
    CHECK(now_s() - t0 < 30);
    if (saved) setenv("DSPY_BIN", saved, 1);
    else unsetenv("DSPY_BIN");
    free(saved);

    /* readiness timeout while connections are refused: honoured, process killed */
    char fake[1100];
    snprintf(fake, sizeof fake, "%s/fake-dspy", test_tmpdir());
    write_script(fake, "echo \"dspy serve: listening on http://127.0.0.1:1 (model x)\" >&2\nexec sleep 60");
    p.dspy_bin = fake;
    p.timeout_s = 1.0;
    p.kill_grace_s = 5;
    t0 = now_s();
    CHECK_STATUS(dspy_local_launch(g_model, &p, &s), DSPY_ERR_TIMEOUT);
    double dt = now_s() - t0;
    CHECK(dt >= 0.9 && dt < 8.0);
    CHECK_CONTAINS(dspy_errmsg(), "did not become ready within 1 s");
    CHECK_CONTAINS(dspy_errmsg(), "listening on http://127.0.0.1:1");
    /* and when the port never even appears */
    write_script(fake, "exec sleep 60");
    t0 = now_s();
    CHECK_STATUS(dspy_local_launch(g_model, &p, &s), DSPY_ERR_TIMEOUT);
    CHECK(now_s() - t0 < 8.0);

    /* a child that ignores SIGTERM is killed with SIGKILL after the grace period */
    write_script(fake, "trap '' TERM\nexec sleep 60");
    p.timeout_s = 0.5;
    p.kill_grace_s = 0.5;
    t0 = now_s();
    CHECK_STATUS(dspy_local_launch(g_model, &p, &s), DSPY_ERR_TIMEOUT);
    dt = now_s() - t0;
    CHECK(dt >= 0.9 && dt < 5.0);
}

/* Children die with their parent: a process that launched `dspy serve` is killed with SIGKILL
 * (no cleanup runs) and the server goes too, within a second or two (PR_SET_PDEATHSIG, and the
 * parent-pid check for a parent that died before the child could set it up). */
static void test_orphan(void) {
    /* this process adopts orphans, so the server is ours to reap once its parent is gone */
    CHECK(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    pid_t helper = fork();
    if (helper == 0) {
        close(pfd[0]);
        dspy_local_server *srv = launch(NULL, 0, NULL);
        long pid = srv ? (long)dspy_local_pid(srv) : -1;
        ssize_t w = write(pfd[1], &pid, sizeof pid);
        (void)w;
        for (;;) pause();
    }
    close(pfd[1]);
    long server = -1;
    ssize_t r = read(pfd[0], &server, sizeof server);
    close(pfd[0]);
    CHECK(r == (ssize_t)sizeof server && server > 0);
    if (server <= 0) {
        kill(helper, SIGKILL);
        waitpid(helper, NULL, 0);
        return;
    }
    CHECK(kill((pid_t)server, 0) == 0); /* serving */
    kill(helper, SIGKILL);
    waitpid(helper, NULL, 0);
    double t0 = now_s();
    int status = 0;
    pid_t got = 0;
    while (got != (pid_t)server && now_s() - t0 < 10) {
        got = waitpid((pid_t)server, &status, WNOHANG);
        if (got == 0) usleep(20 * 1000);
    }
    CHECK_INT(got, server);
    CHECK(now_s() - t0 < 3.0);
    if (got != (pid_t)server) {
        kill((pid_t)server, SIGKILL);
        waitpid((pid_t)server, NULL, 0);
    }
    prctl(PR_SET_CHILD_SUBREAPER, 0);
    /* a server told to follow a process that is not its parent refuses to start */
    const char *args[] = {"--model", g_model, "--parent-pid", "999999", NULL};
    test_run_result rr = test_run_dspy("serve", args);
    CHECK(rr.status == 1);
    CHECK_CONTAINS(rr.err, "parent process 999999 is already gone");
    test_run_free(&rr);
}

/* The API key's sources and the bind warning: --api-key-file must be a regular file with a key
 * on its first line; a non-loopback bind without a key says so on stderr; with a key from the
 * file, /v1 needs it. */
static void test_key_sources(void) {
    char fifo[1100], empty[1100], keyf[1100];
    snprintf(fifo, sizeof fifo, "%s/key.fifo", test_tmpdir());
    snprintf(empty, sizeof empty, "%s/key.empty", test_tmpdir());
    snprintf(keyf, sizeof keyf, "%s/key.txt", test_tmpdir());
    CHECK(mkfifo(fifo, 0600) == 0);
    CHECK_OK(dspy_write_file(empty, "\n", 1));
    CHECK_OK(dspy_write_file(keyf, "s3cret-from-file\nignored\n", 26));
    const char *a1[] = {"--model", g_model, "--api-key-file", fifo, NULL};
    test_run_result r = test_run_dspy("serve", a1);
    CHECK(r.status == 2);
    CHECK_CONTAINS(r.err, "is a FIFO, not a regular file");
    test_run_free(&r);
    const char *a2[] = {"--model", g_model, "--api-key-file", empty, NULL};
    r = test_run_dspy("serve", a2);
    CHECK(r.status == 2);
    CHECK_CONTAINS(r.err, "the first line is empty");
    test_run_free(&r);
    const char *a3[] = {"--model", g_model, "--api-key-file", keyf, "--api-key", "x", NULL};
    r = test_run_dspy("serve", a3);
    CHECK(r.status == 2);
    CHECK_CONTAINS(r.err, "not both");
    test_run_free(&r);
    /* the KV share of the free GPU memory is a percentage the CLI bounds before loading anything */
    const char *a4[] = {"--model", g_model, "--kv-memory-percent", "0", NULL};
    r = test_run_dspy("serve", a4);
    CHECK(r.status == 2);
    CHECK_CONTAINS(r.err, "--kv-memory-percent");
    test_run_free(&r);
    /* 0.0.0.0 without a key: served, with a warning in the log */
    dspy_local_params p = dspy_local_params_default();
    p.dspy_bin = test_bin("dspy");
    p.log_dir = test_tmpdir();
    p.timeout_s = 60;
    p.host = "0.0.0.0";
    const char *t1[] = {"--threads", "1"};
    p.extra_args = t1;
    p.n_extra_args = 2;
    dspy_local_server *srv = NULL;
    CHECK_OK(dspy_local_launch(g_model, &p, &srv));
    if (srv) {
        dspy_local_kill(srv, NULL);
        char *log = test_slurp(dspy_local_log_path(srv));
        CHECK_CONTAINS(log, "listening on 0.0.0.0 without an API key");
        free(log);
        dspy_local_free(srv);
    }
    /* the key from the file is required */
    const char *t2[] = {"--threads", "1", "--api-key-file", keyf};
    p.host = "127.0.0.1";
    p.extra_args = t2;
    p.n_extra_args = 4;
    p.api_key = "s3cret-from-file"; /* the launcher's readiness check sends it */
    CHECK_OK(dspy_local_launch(g_model, &p, &srv));
    if (srv) {
        char base[256];
        snprintf(base, sizeof base, "%s", dspy_local_api_base(srv));
        resp rr = {0};
        http(base, "GET", "/models", NULL, 0, NULL, &rr);
        CHECK_INT(rr.status, 401);
        resp_free(&rr);
        memset(&rr, 0, sizeof rr);
        http(base, "GET", "/models", NULL, 0, "s3cret-from-file", &rr);
        CHECK_INT(rr.status, 200);
        resp_free(&rr);
        memset(&rr, 0, sizeof rr);
        http(base, "GET", "/models", NULL, 0, "s3cret-from-filf", &rr);
        CHECK_INT(rr.status, 401);
        resp_free(&rr);
        char *log = test_slurp(dspy_local_log_path(srv));
        CHECK(strstr(log, "s3cret") == NULL);
        free(log);
        dspy_local_free(srv);
    }
}

/* Launch logs do not pile up in $TMPDIR: a server started without a log directory that ends
 * cleanly leaves no log behind (with a log directory, the log stays with the run). */
static void test_temp_log(void) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s/tmplogs", test_tmpdir());
    CHECK_OK(dspy_mkdir_p(tmp));
    char *saved = getenv("TMPDIR") ? strdup(getenv("TMPDIR")) : NULL;
    setenv("TMPDIR", tmp, 1);
    dspy_local_params p = dspy_local_params_default();
    p.dspy_bin = test_bin("dspy");
    p.timeout_s = 60;
    const char *t1[] = {"--threads", "1"};
    p.extra_args = t1;
    p.n_extra_args = 2;
    dspy_local_server *srv = NULL;
    CHECK_OK(dspy_local_launch(g_model, &p, &srv));
    char log[1200] = "";
    if (srv) {
        snprintf(log, sizeof log, "%s", dspy_local_log_path(srv));
        CHECK(strncmp(log, tmp, strlen(tmp)) == 0);
        CHECK(access(log, F_OK) == 0);
        dspy_local_free(srv);
        CHECK(access(log, F_OK) != 0);
    }
    if (saved) setenv("TMPDIR", saved, 1);
    else unsetenv("TMPDIR");
    free(saved);
}

/* Fair admission: a greedy request with max_tokens = 1e9 streams (it reserves the whole KV
 * cache), and a 2-token request still completes within 2 s (the long one is preempted after
 * its time slice and resumes); the defaults keep connections >= queue, so overload is a 503. */
static void test_fairness(const char *base, int port) {
    dspy_server_params d = dspy_server_params_default();
    CHECK(d.max_connections >= d.max_queue);
    CHECK_INT(d.default_max_tokens, 1024);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    static const char body[] = "{\"prompt\":\"Once upon a time\",\"max_tokens\":1000000000,\"temperature\":0,\"stream\":true}";
    char req[512];
    int k = snprintf(req, sizeof req, "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                                      "Content-Length: %zu\r\n\r\n%s", sizeof body - 1, body);
    CHECK(send(fd, req, (size_t)k, MSG_NOSIGNAL) == k);
    char buf[4096];
    size_t got = 0;
    double t0 = now_s();
    while (got < 1500 && now_s() - t0 < 60) { /* it streams tokens: it holds the engine */
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 100) > 0) {
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n <= 0) break;
            got += (size_t)n;
        }
    }
    CHECK(got >= 1500);
    resp r = {0};
    t0 = now_s();
    post(base, "/completions", "{\"prompt\":\"Hi\",\"max_tokens\":2,\"temperature\":0}", &r);
    double dt = now_s() - t0;
    CHECK_INT(r.status, 200);
    CHECK(dt < (CHECK_UNDER_ASAN ? 20.0 : 2.0));
    resp_free(&r);
    got = 0; /* the long one is still streaming */
    t0 = now_s();
    while (got == 0 && now_s() - t0 < 10) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 100) > 0 && recv(fd, buf, sizeof buf, 0) > 0) got = 1;
    }
    CHECK(got == 1);
    close(fd);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (make_model()) {
        const char *extra[] = {"--max-body", "1000000", "--max-seqs", "8"};
        dspy_local_server *s = launch(extra, 4, NULL);
        if (s) {
            const char *base = dspy_local_api_base(s);
            CHECK(strncmp(base, "http://127.0.0.1:", 17) == 0);
            CHECK(dspy_strv_ends_with(dspy_strv_of(base), "/v1"));
            CHECK(dspy_local_port(s) > 0);
            CHECK_STR(dspy_local_model_path(s), g_model);
            check_current = "test_models_and_health";
            test_models_and_health(base);
            check_current = "test_chat";
            test_chat(base);
            check_current = "test_completions";
            test_completions(base);
            check_current = "test_dspy_lm";
            test_dspy_lm(base);
            check_current = "test_concurrent";
            test_concurrent(base);
            check_current = "test_errors";
            test_errors(base);
            check_current = "test_disconnect";
            test_disconnect(base, s);
            check_current = "test_fairness";
            test_fairness(base, dspy_local_port(s));
            check_current = "test_node_sdk";
            test_node_sdk(base);
            CHECK_INT(kill_server(s), 0);
            dspy_local_free(s);
        }
        RUN(test_key_overload_and_sigterm);
        RUN(test_abort_on_sigterm);
        RUN(test_launcher);
        RUN(test_orphan);
        RUN(test_key_sources);
        RUN(test_temp_log);
    }
    curl_global_cleanup();
    return check_summary("test_serve");
}
