/* test_lm_http.c — the OpenAI-compatible client against a real HTTP server on 127.0.0.1
 * (tests/support/http_stub.h): request bodies and headers (CC-21), retries and their sleeps
 * (CC-23), error reporting, timeouts, 16 threads at once, the cache (CC-22: hits, restart,
 * kill -9, rollout_id), usage and history. Retry sleeps use retry_unit_s = 0.1 s. */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "dspy/cache.h"
#include "dspy/history.h"
#include "dspy/log.h"
#include "dspy/lm.h"
#include "http_stub.h"

#define UNIT 0.1
#define MAX_SEEN 64

typedef enum mode {
    M_OK,         /* chat.completion echoing the last message */
    M_429,        /* always 429 with an OpenAI error body */
    M_500_TWICE,  /* 500, 500, then OK */
    M_RETRY_AFTER,/* 429 with Retry-After: 3 once, then OK */
    M_400,        /* 400 with an OpenAI error body */
    M_408,        /* always 408 */
    M_NOT_JSON,   /* 200 with an HTML body */
    M_TRUNCATED,  /* 200, connection closed half-way through the body */
    M_NO_CHOICES, /* 200 {"id": ...} */
    M_SLOW,       /* answers after 1.5 s */
    M_DROP_ONCE,  /* closes the first connection without answering, then OK */
    M_LENGTH      /* OK but finish_reason "length" */
} mode;

typedef struct seen {
    double t;
    char *body, *auth, *ua, *ctype, *path, *xtrace;
} seen;

static struct {
    pthread_mutex_t lock;
    mode mode;
    int in_mode; /* requests served since the mode was set */
    int n;
    seen s[MAX_SEEN];
} g = {.lock = PTHREAD_MUTEX_INITIALIZER, .mode = M_OK};

static http_stub *g_srv;
static char g_base[128]; /* http://127.0.0.1:P/v1 */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static char *dup0(const char *s) { return s ? strdup(s) : NULL; }

static void reset(mode m) {
    pthread_mutex_lock(&g.lock);
    for (int i = 0; i < g.n && i < MAX_SEEN; i++) {
        free(g.s[i].body);
        free(g.s[i].auth);
        free(g.s[i].ua);
        free(g.s[i].ctype);
        free(g.s[i].path);
        free(g.s[i].xtrace);
    }
    memset(g.s, 0, sizeof g.s);
    g.n = 0;
    g.in_mode = 0;
    g.mode = m;
    pthread_mutex_unlock(&g.lock);
}

static int seen_count(void) {
    pthread_mutex_lock(&g.lock);
    int n = g.n;
    pthread_mutex_unlock(&g.lock);
    return n;
}

static void ok_body(const http_stub_request *req, const char *finish, dspy_str *out) {
    dspy_json *body = NULL;
    const char *content = "?";
    int64_t n = 1;
    if (dspy_json_parse(req->body, req->body_len, "request", &body) == DSPY_OK) {
        const dspy_json *msgs = dspy_json_get(body, "messages");
        size_t k = dspy_json_size(msgs);
        const char *c = k ? dspy_json_str(dspy_json_get(dspy_json_at(msgs, k - 1), "content")) : NULL;
        if (c) content = c;
        n = dspy_json_int_or(body, "n", 1);
    }
    dspy_json *resp = dspy_json_object(), *choices = dspy_json_array();
    for (int64_t i = 0; i < n; i++) {
        dspy_json *c = dspy_json_object(), *m = dspy_json_object();
        dspy_str text = DSPY_STR_INIT;
        dspy_str_appendf(&text, "echo: %s", content);
        if (i) dspy_str_appendf(&text, " #%lld", (long long)i);
        dspy_json_set_str(m, "role", "assistant");
        dspy_json_set_str(m, "content", dspy_str_cstr(&text));
        dspy_str_free(&text);
        dspy_json_set(c, "index", dspy_json_int(i));
        dspy_json_set(c, "message", m);
        dspy_json_set_str(c, "finish_reason", finish);
        dspy_json_append(choices, c);
    }
    dspy_json_set_str(resp, "id", "chatcmpl-test");
    dspy_json_set_str(resp, "object", "chat.completion");
    dspy_json_set_str(resp, "model", "gpt-4o-mini-2024-07-18");
    dspy_json_set(resp, "choices", choices);
    dspy_json *usage = NULL;
    const char *u = "{\"prompt_tokens\":10,\"completion_tokens\":5,\"total_tokens\":15,"
                    "\"prompt_tokens_details\":{\"cached_tokens\":2}}";
    dspy_json_parse(u, strlen(u), "usage", &usage);
    dspy_json_set(resp, "usage", usage);
    dspy_json_dump(resp, DSPY_JSON_COMPACT, out);
    dspy_json_decref(resp);
    dspy_json_decref(body);
}

static void handler(void *ud, const http_stub_request *req, http_stub_response *resp) {
    (void)ud;
    pthread_mutex_lock(&g.lock);
    int k = g.in_mode++;
    mode m = g.mode;
    if (g.n < MAX_SEEN) {
        seen *s = &g.s[g.n];
        s->t = now_s();
        s->body = strndup(req->body, req->body_len);
        s->auth = dup0(http_stub_header(req, "Authorization"));
        s->ua = dup0(http_stub_header(req, "User-Agent"));
        s->ctype = dup0(http_stub_header(req, "Content-Type"));
        s->path = dup0(req->path);
        s->xtrace = dup0(http_stub_header(req, "X-Trace"));
    }
    g.n++;
    pthread_mutex_unlock(&g.lock);
    switch (m) {
    case M_OK: ok_body(req, "stop", &resp->body); break;
    case M_LENGTH: ok_body(req, "length", &resp->body); break;
    case M_429:
        resp->status = 429;
        dspy_str_append(&resp->body, "{\"error\":{\"message\":\"Rate limit reached for gpt-4o-mini\",\"type\":\"requests\","
                                     "\"code\":\"rate_limit_exceeded\"}}");
        break;
    case M_500_TWICE:
        if (k < 2) {
            resp->status = 500;
            dspy_str_append(&resp->body, "{\"error\":{\"message\":\"The server had an error\"}}");
        } else {
            ok_body(req, "stop", &resp->body);
        }
        break;
    case M_RETRY_AFTER:
        if (k == 0) {
            resp->status = 429;
            dspy_str_append(&resp->headers, "Retry-After: 3\r\n");
            dspy_str_append(&resp->body, "{\"error\":{\"message\":\"slow down\"}}");
        } else {
            ok_body(req, "stop", &resp->body);
        }
        break;
    case M_400:
        resp->status = 400;
        dspy_str_append(&resp->body, "{\"error\":{\"message\":\"Invalid value for 'temperature': must be <= 2.\","
                                     "\"type\":\"invalid_request_error\",\"param\":\"temperature\"}}");
        break;
    case M_408:
        resp->status = 408;
        resp->content_type = "text/plain";
        dspy_str_append(&resp->body, "request timed out");
        break;
    case M_NOT_JSON:
        resp->content_type = "text/html";
        dspy_str_append(&resp->body, "<html>oops</html>");
        break;
    case M_TRUNCATED:
        ok_body(req, "stop", &resp->body);
        resp->action = HTTP_STUB_CLOSE_MID_BODY;
        break;
    case M_NO_CHOICES: dspy_str_append(&resp->body, "{\"id\":\"x\",\"object\":\"chat.completion\"}"); break;
    case M_SLOW:
        resp->delay_ms = 1500;
        ok_body(req, "stop", &resp->body);
        break;
    case M_DROP_ONCE:
        if (k == 0) resp->action = HTTP_STUB_DROP;
        else ok_body(req, "stop", &resp->body);
        break;
    }
}

/* ---- helpers ----------------------------------------------------------------------------- */

static dspy_json *parse(const char *s) {
    dspy_json *j = NULL;
    CHECK_OK(dspy_json_parse(s, strlen(s), "test", &j));
    return j;
}

static dspy_json *question(const char *q) {
    dspy_json *m = dspy_json_array(), *u = dspy_json_object();
    dspy_json_set_str(u, "role", "user");
    dspy_json_set_str(u, "content", q);
    dspy_json_append(m, u);
    return m;
}

static dspy_json *sys_user(void) {
    return parse("[{\"role\":\"system\",\"content\":\"Your input fields are:\\n1. `question` (str):\"},"
                 "{\"role\":\"user\",\"content\":\"[[ ## question ## ]]\\nWhat is the capital of France?\"}]");
}

/* An LM on the stub: api_base and api_key in its kwargs, cache off unless `cache` given. */
static dspy_lm *stub_lm(const char *model, dspy_lm_params p, dspy_cache *cache) {
    char kw[256];
    snprintf(kw, sizeof kw, "{\"api_base\":\"%s\",\"api_key\":\"sk-test\"}", g_base);
    dspy_json *k = parse(kw);
    if (p.kwargs) { /* merge the caller's kwargs after ours */
        for (void *it = dspy_json_iter(p.kwargs); it; it = dspy_json_next(p.kwargs, it))
            dspy_json_set(k, dspy_json_iter_key(it), dspy_json_copy(dspy_json_iter_value(it)));
    }
    p.kwargs = k;
    p.retry_unit_s = UNIT;
    p.cache = cache ? 1 : 0;
    p.cache_store = cache;
    dspy_lm *lm = NULL;
    CHECK_OK(dspy_lm_new(model, &p, &lm));
    dspy_json_decref(k);
    return lm;
}

static void check_body(int i, const char *want, int line) {
    pthread_mutex_lock(&g.lock);
    const char *got = i < g.n ? g.s[i].body : NULL;
    dspy_json *gj = NULL, *wj = NULL;
    bool ok = got && dspy_json_parse(got, strlen(got), "got", &gj) == DSPY_OK &&
              dspy_json_parse(want, strlen(want), "want", &wj) == DSPY_OK && dspy_json_equal(gj, wj);
    check_report(ok, __FILE__, line, "request body %d:\n  got:  %s\n  want: %s", i, got ? got : "(none)", want);
    pthread_mutex_unlock(&g.lock);
    dspy_json_decref(gj);
    dspy_json_decref(wj);
}
#define CHECK_BODY(i, want) check_body((i), (want), __LINE__)

static const char *seen_field(int i, int which) {
    const char *v = NULL;
    pthread_mutex_lock(&g.lock);
    if (i < g.n) {
        seen *s = &g.s[i];
        v = which == 0 ? s->body : which == 1 ? s->auth : which == 2 ? s->ua : which == 3 ? s->ctype : which == 4 ? s->path : s->xtrace;
    }
    pthread_mutex_unlock(&g.lock);
    return v;
}

static double gap(int i) { /* seconds between request i-1 and request i */
    pthread_mutex_lock(&g.lock);
    double d = g.s[i].t - g.s[i - 1].t;
    pthread_mutex_unlock(&g.lock);
    return d;
}

static char *url_of(const char *path) {
    static char u[256];
    snprintf(u, sizeof u, "%s%s", http_stub_url(g_srv), path);
    return u;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_request_bodies(void) {
    dspy_json *msgs = sys_user();
    const char *msgs_json = "[{\"role\":\"system\",\"content\":\"Your input fields are:\\n1. `question` (str):\"},"
                            "{\"role\":\"user\",\"content\":\"[[ ## question ## ]]\\nWhat is the capital of France?\"}]";
    char want[1024];
    dspy_lm_response *r = NULL;

    /* V33 LM("openai/gpt-4o-mini", max_tokens=3000): {"max_tokens":3000}, no temperature */
    reset(M_OK);
    dspy_lm_params p = dspy_lm_params_default();
    p.max_tokens = 3000;
    dspy_lm *lm = stub_lm("openai/gpt-4o-mini", p, NULL);
    CHECK_OK(dspy_lm_call(lm, msgs, NULL, &r));
    snprintf(want, sizeof want, "{\"model\":\"gpt-4o-mini\",\"messages\":%s,\"max_tokens\":3000}", msgs_json);
    CHECK_STR(seen_field(0, 0), want); /* exact bytes: compact, model first */
    CHECK_STR(seen_field(0, 1), "Bearer sk-test");
    CHECK_STR(seen_field(0, 2), "DSPy/3.3.1");
    CHECK_STR(seen_field(0, 3), "application/json");
    CHECK_STR(seen_field(0, 4), "/v1/chat/completions");
    CHECK(r && r->n == 1 && !r->cached);
    if (r) {
        CHECK_STR(r->choices[0].text, "echo: [[ ## question ## ]]\nWhat is the capital of France?");
        CHECK_STR(r->choices[0].finish_reason, "stop");
        CHECK_STR(r->model, "gpt-4o-mini-2024-07-18");
        CHECK_INT(dspy_json_int_or(r->usage, "total_tokens", -1), 15);
    }
    dspy_lm_response_free(r);
    dspy_lm_free(lm);

    /* V26: {"temperature":0.0,"max_tokens":3000}, no DSPy User-Agent */
    reset(M_OK);
    p.profile = DSPY_LM_V26;
    lm = stub_lm("openai/gpt-4o-mini", p, NULL);
    CHECK_OK(dspy_lm_call(lm, msgs, NULL, &r));
    dspy_lm_response_free(r);
    snprintf(want, sizeof want, "{\"model\":\"gpt-4o-mini\",\"messages\":%s,\"temperature\":0.0,\"max_tokens\":3000}", msgs_json);
    CHECK_STR(seen_field(0, 0), want);
    CHECK(seen_field(0, 2) == NULL || strstr(seen_field(0, 2), "DSPy") == NULL);
    dspy_lm_free(lm);

    /* LM("openai/gpt-4o-mini"): nothing besides model and messages; + config n=3 -> n, temperature */
    reset(M_OK);
    lm = stub_lm("openai/gpt-4o-mini", dspy_lm_params_default(), NULL);
    CHECK_OK(dspy_lm_call(lm, msgs, NULL, &r));
    dspy_lm_response_free(r);
    snprintf(want, sizeof want, "{\"model\":\"gpt-4o-mini\",\"messages\":%s}", msgs_json);
    CHECK_BODY(0, want);
    dspy_json *kw = parse("{\"n\":3,\"temperature\":0.7,\"rollout_id\":5}");
    CHECK_OK(dspy_lm_call(lm, msgs, kw, &r));
    snprintf(want, sizeof want, "{\"model\":\"gpt-4o-mini\",\"messages\":%s,\"n\":3,\"temperature\":0.7}", msgs_json);
    CHECK_BODY(1, want); /* rollout_id is never sent */
    CHECK(r && r->n == 3);
    if (r && r->n == 3) CHECK_STR(r->choices[2].text, "echo: [[ ## question ## ]]\nWhat is the capital of France? #2");
    dspy_lm_response_free(r);
    dspy_json_decref(kw);
    dspy_lm_free(lm);

    /* fine-tuned openai/local:/abs/out after launch: model "local:/abs/out", Bearer local */
    reset(M_OK);
    p = dspy_lm_params_default();
    p.max_tokens = 2000;
    p.cache = 0;
    p.retry_unit_s = UNIT;
    CHECK_OK(dspy_lm_new("openai/local:/abs/out", &p, &lm));
    CHECK_STATUS(dspy_lm_call(lm, msgs, NULL, &r), DSPY_ERR_STATE);
    CHECK_CONTAINS(dspy_errmsg(), "[openai/local:/abs/out] no api_base");
    CHECK_INT(seen_count(), 0);
    CHECK_OK(dspy_lm_set_kwarg(lm, "api_base", dspy_json_string(g_base)));
    CHECK_OK(dspy_lm_call(lm, msgs, NULL, &r));
    dspy_lm_response_free(r);
    snprintf(want, sizeof want, "{\"model\":\"local:/abs/out\",\"messages\":%s,\"max_tokens\":2000}", msgs_json);
    CHECK_STR(seen_field(0, 0), want);
    CHECK_STR(seen_field(0, 1), "Bearer local");
    dspy_lm_free(lm);

    /* api_base / api_key from the environment; OPENAI_BASE_URL wins over OPENAI_API_BASE; no key
     * is an error naming the variable */
    reset(M_OK);
    setenv("OPENAI_BASE_URL", g_base, 1);
    setenv("OPENAI_API_BASE", "http://127.0.0.1:1/v1", 1);
    setenv("OPENAI_API_KEY", "sk-env", 1);
    p = dspy_lm_params_default();
    p.cache = 0;
    CHECK_OK(dspy_lm_new("openai/gpt-4o-mini", &p, &lm));
    CHECK_OK(dspy_lm_call(lm, msgs, NULL, &r));
    dspy_lm_response_free(r);
    CHECK_STR(seen_field(0, 1), "Bearer sk-env");
    setenv("OPENAI_API_KEY", "sk-env\r\nX-Injected: 1", 1);
    CHECK_STATUS(dspy_lm_call(lm, msgs, NULL, &r), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "line break");
    unsetenv("OPENAI_API_KEY");
    CHECK_STATUS(dspy_lm_call(lm, msgs, NULL, &r), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "OPENAI_API_KEY");
    unsetenv("OPENAI_BASE_URL");
    unsetenv("OPENAI_API_BASE");
    dspy_lm_free(lm);

    /* extra_headers are sent as headers; timeout and api_* never reach the body; a trailing "/"
     * on api_base is fine */
    reset(M_OK);
    p = dspy_lm_params_default();
    dspy_json *extra = parse("{\"extra_headers\":{\"X-Trace\":\"t1\"},\"timeout\":30}");
    p.kwargs = extra;
    lm = stub_lm("openai/gpt-4o-mini", p, NULL);
    dspy_json_decref(extra);
    char slash[160];
    snprintf(slash, sizeof slash, "%s/", g_base);
    CHECK_OK(dspy_lm_set_kwarg(lm, "api_base", dspy_json_string(slash)));
    CHECK_OK(dspy_lm_call(lm, msgs, NULL, &r));
    dspy_lm_response_free(r);
    snprintf(want, sizeof want, "{\"model\":\"gpt-4o-mini\",\"messages\":%s}", msgs_json);
    CHECK_STR(seen_field(0, 0), want);
    CHECK_STR(seen_field(0, 4), "/v1/chat/completions");
    CHECK_STR(seen_field(0, 5), "t1");
    dspy_lm_free(lm);
    dspy_json_decref(msgs);
}

static void test_retry_429(void) {
    /* CC-23: num_retries=3 against a server that always says 429 -> 4 attempts, sleeps 1 then 2
     * units after the immediate first retry; the server's message is reported. */
    reset(M_429);
    dspy_lm_params p = dspy_lm_params_default();
    p.max_tokens = 250;
    p.num_retries = 3;
    dspy_lm *lm = stub_lm("openai/gpt-4o-mini", p, NULL);
    dspy_json *m = question("hi");
    dspy_lm_response *r = (dspy_lm_response *)1;
    double t0 = now_s();
    CHECK_STATUS(dspy_lm_call(lm, m, NULL, &r), DSPY_ERR_REMOTE);
    double took = now_s() - t0;
    CHECK(r == NULL);
    CHECK_INT(seen_count(), 4);
    if (seen_count() == 4) {
        CHECK(gap(1) < 0.08);                        /* first retry: immediate */
        CHECK(gap(2) >= 0.095 && gap(2) < 0.35);      /* then 1 unit */
        CHECK(gap(3) >= 0.195 && gap(3) < 0.45);      /* then 2 units */
    }
    CHECK(took < 1.5);
    const char *e = dspy_errmsg();
    CHECK_CONTAINS(e, "[openai/gpt-4o-mini] HTTP 429 (rate limited)");
    CHECK_CONTAINS(e, url_of("/v1/chat/completions"));
    CHECK_CONTAINS(e, "after 4 attempts");
    CHECK_CONTAINS(e, "Rate limit reached for gpt-4o-mini");
    dspy_lm_free(lm);

    /* num_retries=0: one attempt */
    reset(M_429);
    p.num_retries = 0;
    lm = stub_lm("openai/gpt-4o-mini", p, NULL);
    CHECK_STATUS(dspy_lm_call(lm, m, NULL, &r), DSPY_ERR_REMOTE);
    CHECK_INT(seen_count(), 1);
    dspy_lm_free(lm);

    /* 6 retries: waits 0, 1, 2, 4, 8, 10 (capped) units — check the cap on the last one */
    reset(M_429);
    p.num_retries = 6;
    p.retry_unit_s = 0.01;
    lm = NULL;
    char kw[256];
    snprintf(kw, sizeof kw, "{\"api_base\":\"%s\",\"api_key\":\"k\"}", g_base);
    dspy_json *k = parse(kw);
    p.kwargs = k;
    p.cache = 0;
    CHECK_OK(dspy_lm_new("openai/gpt-4o-mini", &p, &lm));
    CHECK_STATUS(dspy_lm_call(lm, m, NULL, &r), DSPY_ERR_REMOTE);
    CHECK_INT(seen_count(), 7);
    if (seen_count() == 7) {
        CHECK(gap(5) >= 0.075 && gap(5) < 0.3); /* 8 units */
        CHECK(gap(6) >= 0.095 && gap(6) < 0.3); /* min(10, 16) units */
    }
    dspy_json_decref(k);
    dspy_lm_free(lm);
    dspy_json_decref(m);
}

static void test_retry_then_success(void) {
    dspy_json *m = question("hello");
    dspy_lm_response *r = NULL;
    dspy_lm_params p = dspy_lm_params_default();

    /* 500, 500, OK: 3 attempts with waits 0 and 1 unit */
    reset(M_500_TWICE);
    dspy_lm *lm = stub_lm("openai/gpt-4o-mini", p, NULL);
    CHECK_OK(dspy_lm_call(lm, m, NULL, &r));
    CHECK(r && strcmp(r->choices[0].text, "echo: hello") == 0);
    dspy_lm_response_free(r);
    CHECK_INT(seen_count(), 3);
    if (seen_count() == 3) {
        CHECK(gap(1) < 0.08);
        CHECK(gap(2) >= 0.095 && gap(2) < 0.35);
    }

    /* Retry-After: 3 on the first failure replaces the immediate retry with 3 units */
    reset(M_RETRY_AFTER);
    CHECK_OK(dspy_lm_call(lm, m, NULL, &r));
    dspy_lm_response_free(r);
    CHECK_INT(seen_count(), 2);
    /* the upper bound only tells 3 units from 3 seconds: a loaded CI machine (ctest -j2 beside
     * the engine tests) once took the stub past 0.6 s */
    if (seen_count() == 2) CHECK(gap(1) >= 0.29 && gap(1) < 1.0);

    /* a connection closed without an answer is retried */
    reset(M_DROP_ONCE);
    CHECK_OK(dspy_lm_call(lm, m, NULL, &r));
    dspy_lm_response_free(r);
    CHECK_INT(seen_count(), 2);
    dspy_lm_free(lm);
    dspy_json_decref(m);
}

static void test_errors_not_retried(void) {
    dspy_json *m = question("hello");
    dspy_lm_response *r = NULL;
    dspy_lm_params p = dspy_lm_params_default();
    dspy_lm *lm = stub_lm("openai/gpt-4o-mini", p, NULL);
    const char *url = url_of("/v1/chat/completions");

    reset(M_400);
    CHECK_STATUS(dspy_lm_call(lm, m, NULL, &r), DSPY_ERR_REMOTE);
    CHECK_INT(seen_count(), 1);
    CHECK_CONTAINS(dspy_errmsg(), "HTTP 400 (invalid request)");
    CHECK_CONTAINS(dspy_errmsg(), "Invalid value for 'temperature': must be <= 2.");
    CHECK_CONTAINS(dspy_errmsg(), url);

    reset(M_NOT_JSON);
    CHECK_STATUS(dspy_lm_call(lm, m, NULL, &r), DSPY_ERR_REMOTE);
    CHECK_INT(seen_count(), 1);
    CHECK_CONTAINS(dspy_errmsg(), "HTTP 200 from ");
    CHECK_CONTAINS(dspy_errmsg(), url);
    CHECK_CONTAINS(dspy_errmsg(), "not valid JSON");
    CHECK_CONTAINS(dspy_errmsg(), "<html>oops</html>");

    reset(M_NO_CHOICES);
    CHECK_STATUS(dspy_lm_call(lm, m, NULL, &r), DSPY_ERR_REMOTE);
    CHECK_INT(seen_count(), 1);
    CHECK_CONTAINS(dspy_errmsg(), "no \"choices\" list");
    dspy_lm_free(lm);

    /* truncated bodies are retried (a dropped connection), then reported with URL and status */
    reset(M_TRUNCATED);
    p.num_retries = 1;
    lm = stub_lm("openai/gpt-4o-mini", p, NULL);
    CHECK_STATUS(dspy_lm_call(lm, m, NULL, &r), DSPY_ERR_REMOTE);
    CHECK_INT(seen_count(), 2);
    CHECK_CONTAINS(dspy_errmsg(), "HTTP 200 from ");
    CHECK_CONTAINS(dspy_errmsg(), url);
    CHECK_CONTAINS(dspy_errmsg(), "truncated response");
    CHECK_CONTAINS(dspy_errmsg(), "after 2 attempts");

    /* 408 is a timeout, retried */
    reset(M_408);
    CHECK_STATUS(dspy_lm_call(lm, m, NULL, &r), DSPY_ERR_TIMEOUT);
    CHECK_INT(seen_count(), 2);
    CHECK_CONTAINS(dspy_errmsg(), "HTTP 408 (request timeout)");
    CHECK_CONTAINS(dspy_errmsg(), "request timed out");
    dspy_lm_free(lm);

    /* nothing listening: connection refused, retried, then reported */
    int port = http_stub_closed_port();
    char kw[128];
    snprintf(kw, sizeof kw, "{\"api_base\":\"http://127.0.0.1:%d/v1\",\"api_key\":\"k\"}", port);
    dspy_json *k = parse(kw);
    p = dspy_lm_params_default();
    p.kwargs = k;
    p.cache = 0;
    p.num_retries = 1;
    p.retry_unit_s = UNIT;
    CHECK_OK(dspy_lm_new("openai/gpt-4o-mini", &p, &lm));
    CHECK_STATUS(dspy_lm_call(lm, m, NULL, &r), DSPY_ERR_REMOTE);
    char want[128];
    snprintf(want, sizeof want, "cannot complete the request to http://127.0.0.1:%d/v1/chat/completions (after 2 attempts)", port);
    CHECK_CONTAINS(dspy_errmsg(), want);
    dspy_lm_free(lm);
    dspy_json_decref(k);
    dspy_json_decref(m);
}

static void test_timeout(void) {
    reset(M_SLOW);
    dspy_lm_params p = dspy_lm_params_default();
    p.timeout_s = 0.3;
    p.num_retries = 1;
    dspy_lm *lm = stub_lm("openai/gpt-4o-mini", p, NULL);
    dspy_json *m = question("slow");
    dspy_lm_response *r = NULL;
    double t0 = now_s();
    CHECK_STATUS(dspy_lm_call(lm, m, NULL, &r), DSPY_ERR_TIMEOUT);
    double took = now_s() - t0;
    CHECK_INT(seen_count(), 2);
    CHECK(took >= 0.55 && took < 1.4); /* two 0.3 s attempts, no wait before the first retry */
    CHECK_CONTAINS(dspy_errmsg(), "did not answer within 0.3 s (after 2 attempts)");
    CHECK_CONTAINS(dspy_errmsg(), url_of("/v1/chat/completions"));
    dspy_lm_free(lm);
    dspy_json_decref(m);
}

typedef struct th_arg {
    dspy_lm *lm;
    int id;
    bool ok, cached;
} th_arg;

static void *thread_call(void *a) {
    th_arg *t = a;
    char q[32], want[48];
    snprintf(q, sizeof q, "question %d", t->id);
    snprintf(want, sizeof want, "echo: %s", q);
    dspy_json *m = question(q);
    dspy_lm_response *r = NULL;
    t->ok = dspy_lm_call(t->lm, m, NULL, &r) == DSPY_OK && r->n == 1 && strcmp(r->choices[0].text, want) == 0;
    t->cached = r && r->cached;
    dspy_lm_response_free(r);
    dspy_json_decref(m);
    return NULL;
}

static dspy_cache *cache_at(const char *name) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", test_tmpdir(), name);
    dspy_cache_params cp = dspy_cache_params_default();
    cp.dir = dir;
    dspy_cache *c = NULL;
    CHECK_OK(dspy_cache_open(&cp, &c));
    return c;
}

static void test_threads(void) {
    reset(M_OK);
    dspy_cache *cache = cache_at("threads");
    dspy_lm *lm = stub_lm("openai/gpt-4o-mini", dspy_lm_params_default(), cache);
    pthread_t th[16];
    th_arg a[16];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 16; i++) {
            a[i] = (th_arg){lm, i, false, false};
            pthread_create(&th[i], NULL, thread_call, &a[i]);
        }
        int ok = 0, cached = 0;
        for (int i = 0; i < 16; i++) {
            pthread_join(th[i], NULL);
            ok += a[i].ok;
            cached += a[i].cached;
        }
        CHECK_INT(ok, 16);
        CHECK_INT(cached, round == 0 ? 0 : 16); /* the second round never reaches the server */
        CHECK_INT(seen_count(), 16);
    }
    dspy_json *u = dspy_lm_usage(lm); /* 16 paid calls, cache hits not counted */
    CHECK_INT(dspy_json_int_or(u, "total_tokens", -1), 16 * 15);
    CHECK_INT(dspy_json_int_or(dspy_json_get(u, "prompt_tokens_details"), "cached_tokens", -1), 32);
    dspy_json_decref(u);
    dspy_lm_free(lm);
    dspy_cache_free(cache);
}

static void test_cache_semantics(void) {
    reset(M_OK);
    dspy_cache *cache = cache_at("semantics");
    dspy_lm *lm = stub_lm("openai/gpt-4o-mini", dspy_lm_params_default(), cache);
    dspy_json *m = question("Hello");
    dspy_lm_response *r1 = NULL, *r2 = NULL;
    dspy_history *h = dspy_lm_history(lm);
    CHECK_OK(dspy_lm_call(lm, m, NULL, &r1));
    CHECK_OK(dspy_lm_call(lm, m, NULL, &r2));
    CHECK_INT(seen_count(), 1);
    CHECK(r1 && !r1->cached && dspy_json_size(r1->usage) == 4);
    CHECK(r2 && r2->cached && dspy_json_size(r2->usage) == 0);
    if (r1 && r2) CHECK_STR(r2->choices[0].text, r1->choices[0].text);
    CHECK(r2 && dspy_json_size(dspy_json_get(r2->raw, "usage")) == 0);
    dspy_lm_response_free(r1);
    dspy_lm_response_free(r2);
    /* history: both calls, the cached one with usage {} */
    CHECK_INT(dspy_history_len(h), 2);
    dspy_json *e = dspy_history_at(h, 1);
    CHECK_INT(dspy_json_size(dspy_json_get(e, "usage")), 0);
    CHECK_STR(dspy_json_str_or(e, "response_model", NULL), "gpt-4o-mini-2024-07-18");
    CHECK_STR(dspy_json_str_or(e, "model", NULL), "openai/gpt-4o-mini");
    dspy_json_decref(e);
    /* per-call cache=false goes to the server; history kwargs never hold api_* keys */
    dspy_json *kw = parse("{\"cache\":false,\"api_key\":\"sk-per-call\",\"top_p\":0.9}");
    CHECK_OK(dspy_lm_call(lm, m, kw, &r1));
    CHECK(r1 && !r1->cached);
    dspy_lm_response_free(r1);
    CHECK_INT(seen_count(), 2);
    CHECK_STR(seen_field(1, 1), "Bearer sk-per-call");
    e = dspy_history_at(h, 2);
    char *kws = dspy_json_dumps(dspy_json_get(e, "kwargs"), DSPY_JSON_COMPACT);
    CHECK_STR(kws, "{\"cache\":false,\"top_p\":0.9}");
    free(kws);
    dspy_json_decref(e);
    dspy_json_decref(kw);
    dspy_lm_free(lm);

    /* restart: a new cache object on the same directory (empty memory) serves it from disk */
    dspy_cache_free(cache);
    cache = cache_at("semantics");
    CHECK_INT(dspy_cache_memory_count(cache), 0);
    lm = stub_lm("openai/gpt-4o-mini", dspy_lm_params_default(), cache);
    CHECK_OK(dspy_lm_call(lm, m, NULL, &r1));
    CHECK(r1 && r1->cached);
    if (r1) CHECK_STR(r1->choices[0].text, "echo: Hello");
    dspy_lm_response_free(r1);
    CHECK_INT(seen_count(), 2);
    /* the key ignores api_key/api_base: an LM on another key and base still hits */
    dspy_lm *other = NULL;
    dspy_json *k2 = parse("{\"api_key\":\"sk-other\",\"api_base\":\"http://127.0.0.1:1/v1\"}");
    dspy_lm_params p = dspy_lm_params_default();
    p.kwargs = k2;
    p.cache_store = cache;
    CHECK_OK(dspy_lm_new("openai/gpt-4o-mini", &p, &other));
    CHECK_OK(dspy_lm_call(other, m, NULL, &r1));
    CHECK(r1 && r1->cached);
    dspy_lm_response_free(r1);
    dspy_lm_free(other);
    dspy_json_decref(k2);
    dspy_lm_free(lm);
    dspy_cache_free(cache);
    dspy_json_decref(m);
}

static void test_cache_rollout_id(void) {
    /* DSPy test_rollout_id_bypasses_cache: rollout 1, 1, 2, none, none -> paid calls 1,0,1,1,0 */
    reset(M_OK);
    dspy_cache *cache = cache_at("rollout");
    dspy_lm *lm = stub_lm("openai/gpt-4o-mini", dspy_lm_params_default(), cache);
    dspy_json *m = question("Query");
    const char *kws[] = {"{\"rollout_id\":1}", "{\"rollout_id\":1}", "{\"rollout_id\":2}", "{}", "{\"rollout_id\":null}"};
    int paid[5];
    for (int i = 0; i < 5; i++) {
        dspy_json *kw = parse(kws[i]);
        dspy_lm_response *r = NULL;
        int before = seen_count();
        CHECK_OK(dspy_lm_call(lm, m, kw, &r));
        paid[i] = seen_count() - before;
        CHECK(r && r->cached == (paid[i] == 0) && (dspy_json_size(r->usage) > 0) == (paid[i] == 1));
        dspy_lm_response_free(r);
        dspy_json_decref(kw);
    }
    CHECK(paid[0] == 1 && paid[1] == 0 && paid[2] == 1 && paid[3] == 1 && paid[4] == 0);
    CHECK_INT(dspy_cache_memory_count(cache), 3);
    for (int i = 0; i < seen_count(); i++) CHECK(strstr(seen_field(i, 0), "rollout_id") == NULL);
    dspy_lm_free(lm);
    dspy_cache_free(cache);
    dspy_json_decref(m);
}

static void test_cache_killed_process(void) {
    /* A child makes 5 paid calls, then kill -9s itself; the parent finds all 5 answers cached. */
    reset(M_OK);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/killed", test_tmpdir());
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dspy_cache_params cp = dspy_cache_params_default();
        cp.dir = dir;
        dspy_cache *c = NULL;
        if (dspy_cache_open(&cp, &c)) _exit(3);
        char kw[256];
        snprintf(kw, sizeof kw, "{\"api_base\":\"%s\",\"api_key\":\"k\"}", g_base);
        dspy_json *k = NULL;
        if (dspy_json_parse(kw, strlen(kw), "kw", &k)) _exit(4);
        dspy_lm_params p = dspy_lm_params_default();
        p.kwargs = k;
        p.cache_store = c;
        dspy_lm *lm = NULL;
        if (dspy_lm_new("openai/gpt-4o-mini", &p, &lm)) _exit(5);
        for (int i = 0; i < 5; i++) {
            char q[32];
            snprintf(q, sizeof q, "paid %d", i);
            dspy_json *m = question(q);
            dspy_lm_response *r = NULL;
            if (dspy_lm_call(lm, m, NULL, &r)) _exit(6);
        }
        kill(getpid(), SIGKILL);
        _exit(7);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    CHECK_INT(seen_count(), 5);
    dspy_cache *cache = cache_at("killed");
    dspy_lm *lm = stub_lm("openai/gpt-4o-mini", dspy_lm_params_default(), cache);
    for (int i = 0; i < 5; i++) {
        char q[32], want[48];
        snprintf(q, sizeof q, "paid %d", i);
        snprintf(want, sizeof want, "echo: %s", q);
        dspy_json *m = question(q);
        dspy_lm_response *r = NULL;
        CHECK_OK(dspy_lm_call(lm, m, NULL, &r));
        CHECK(r && r->cached && strcmp(r->choices[0].text, want) == 0);
        dspy_lm_response_free(r);
        dspy_json_decref(m);
    }
    CHECK_INT(seen_count(), 5);
    dspy_lm_free(lm);
    dspy_cache_free(cache);
}

static char g_warn[2048];
static void capture(dspy_log_level level, const char *msg, void *user) {
    (void)user;
    if (level == DSPY_LOG_WARN) snprintf(g_warn, sizeof g_warn, "%s", msg);
}

static void test_truncation_warning(void) {
    reset(M_LENGTH);
    dspy_lm_params p = dspy_lm_params_default();
    p.max_tokens = 20;
    dspy_lm *lm = stub_lm("openai/gpt-4o-mini", p, NULL);
    dspy_json *m = question("long");
    dspy_lm_response *r = NULL;
    g_warn[0] = '\0';
    dspy_log_set_sink(capture, NULL);
    CHECK_OK(dspy_lm_call(lm, m, NULL, &r));
    dspy_log_set_sink(NULL, NULL);
    CHECK(r && strcmp(r->choices[0].finish_reason, "length") == 0);
    CHECK_STR(g_warn, "LM response was truncated due to exceeding max_tokens=20. You can inspect the latest LM "
                      "interactions with `dspy.inspect_history()`. To avoid truncation, consider passing a larger "
                      "max_tokens when setting up dspy.LM. You may also consider increasing the temperature (currently "
                      "None)  if the reason for truncation is repetition.");
    dspy_lm_response_free(r);
    dspy_lm_free(lm);
    dspy_json_decref(m);
}

/* api_base listing several servers (replicas): sequential calls alternate between equally idle
 * servers, concurrent ones spread, a dead server costs one immediate retry on another (never the
 * request), and a list naming no server is an argument error. */
static dspy_lm *multi_lm(const char *bases) {
    char kw[600];
    snprintf(kw, sizeof kw, "{\"api_base\":\"%s\",\"api_key\":\"sk-test\"}", bases);
    dspy_lm_params p = dspy_lm_params_default();
    dspy_json *k = parse(kw);
    p.kwargs = k;
    p.retry_unit_s = UNIT;
    p.cache = 0;
    dspy_lm *lm = NULL;
    CHECK_OK(dspy_lm_new("openai/gpt-4o-mini", &p, &lm));
    dspy_json_decref(k);
    return lm;
}

/* One call of lm with the question "<prefix> <i>": answered, with one choice. */
static void call_one(dspy_lm *lm, const char *prefix, int i) {
    char q[48];
    snprintf(q, sizeof q, "%s %d", prefix, i);
    dspy_json *m = question(q);
    dspy_lm_response *r = NULL;
    CHECK_OK(dspy_lm_call(lm, m, NULL, &r));
    CHECK(r && r->n == 1);
    dspy_lm_response_free(r);
    dspy_json_decref(m);
}

static void test_several_servers(void) {
    reset(M_OK);
    http_stub *two = NULL, *dead = NULL;
    CHECK_OK(http_stub_start(handler, NULL, &two));
    CHECK_OK(http_stub_start(handler, NULL, &dead));
    if (!two || !dead) return;
    char dead_url[128];
    snprintf(dead_url, sizeof dead_url, "%s/v1", http_stub_url(dead));
    http_stub_stop(dead); /* its port now refuses connections */
    char bases[600];
    snprintf(bases, sizeof bases, "%s, %s/v1/", g_base, http_stub_url(two));
    dspy_lm *lm = multi_lm(bases);
    int a0 = http_stub_requests(g_srv), b0 = http_stub_requests(two);
    for (int i = 0; i < 8; i++) {
        call_one(lm, "alternate", i);
        /* one at a time, both idle: strictly in turn */
        CHECK_INT((http_stub_requests(g_srv) - a0) + (http_stub_requests(two) - b0), i + 1);
        CHECK(abs((http_stub_requests(g_srv) - a0) - (http_stub_requests(two) - b0)) <= 1);
    }
    CHECK_INT(http_stub_requests(g_srv) - a0, 4);
    CHECK_INT(http_stub_requests(two) - b0, 4);

    /* 16 threads at once: every call answered, both servers used */
    a0 = http_stub_requests(g_srv), b0 = http_stub_requests(two);
    pthread_t th[16];
    th_arg ta[16];
    for (int i = 0; i < 16; i++) {
        ta[i] = (th_arg){lm, 100 + i, false, false};
        pthread_create(&th[i], NULL, thread_call, &ta[i]);
    }
    int ok = 0;
    for (int i = 0; i < 16; i++) {
        pthread_join(th[i], NULL);
        ok += ta[i].ok;
    }
    CHECK_INT(ok, 16);
    CHECK_INT((http_stub_requests(g_srv) - a0) + (http_stub_requests(two) - b0), 16);
    CHECK(http_stub_requests(g_srv) - a0 >= 4 && http_stub_requests(two) - b0 >= 4);
    dspy_lm_free(lm);

    /* a dead server in the list: every call still answered, by the live one, without backoff */
    snprintf(bases, sizeof bases, "%s,%s", dead_url, g_base);
    lm = multi_lm(bases);
    a0 = http_stub_requests(g_srv);
    double t0 = now_s();
    for (int i = 0; i < 6; i++) call_one(lm, "failover", i);
    CHECK_INT(http_stub_requests(g_srv) - a0, 6);
    CHECK(now_s() - t0 < 2.0); /* retries after a refused connection are immediate, never 1+ units */
    dspy_lm_free(lm);

    /* only the dead one: the transport error names it after the retries */
    lm = multi_lm(dead_url);
    dspy_json *m = question("nobody");
    dspy_lm_response *r = NULL;
    CHECK_STATUS(dspy_lm_call(lm, m, NULL, &r), DSPY_ERR_REMOTE);
    CHECK_CONTAINS(dspy_errmsg(), dead_url);
    dspy_lm_free(lm);
    lm = multi_lm(" , ");
    CHECK_STATUS(dspy_lm_call(lm, m, NULL, &r), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "names no server");
    dspy_lm_free(lm);
    dspy_json_decref(m);
    http_stub_stop(two);
}

int main(void) {
    unsetenv("OPENAI_API_KEY");
    unsetenv("OPENAI_BASE_URL");
    unsetenv("OPENAI_API_BASE");
    CHECK_OK(http_stub_start(handler, NULL, &g_srv));
    if (!g_srv) return check_summary("test_lm_http");
    snprintf(g_base, sizeof g_base, "%s/v1", http_stub_url(g_srv));
    dspy_history_set_enabled(true);
    RUN(test_request_bodies);
    RUN(test_retry_429);
    RUN(test_retry_then_success);
    RUN(test_errors_not_retried);
    RUN(test_timeout);
    RUN(test_threads);
    RUN(test_cache_semantics);
    RUN(test_cache_rollout_id);
    RUN(test_cache_killed_process);
    RUN(test_truncation_warning);
    RUN(test_several_servers);
    http_stub_stop(g_srv);
    reset(M_OK);
    dspy_history_clear(dspy_history_global());
    return check_summary("test_lm_http");
}
