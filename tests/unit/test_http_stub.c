/* test_http_stub.c — the test HTTP server itself, driven by libcurl: request parsing, POST
 * bodies (with Expect: 100-continue), keep-alive, chunked streaming, failure modes, concurrent
 * connections, and a prompt stop while a response is still delayed. */
#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "check.h"
#include "http_stub.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void handler(void *ud, const http_stub_request *req, http_stub_response *resp) {
    (void)ud;
    char v[256];
    if (strcmp(req->path, "/echo") == 0) {
        const char *h = http_stub_header(req, "x-test");
        dspy_str_appendf(&resp->body, "%s %s q=%s x=%s len=%zu body=", req->method, req->path,
                         http_stub_query_param(req, "q", v, sizeof v) ? v : "-", h ? h : "-", req->body_len);
        dspy_str_appendn(&resp->body, req->body, req->body_len);
        dspy_str_append(&resp->headers, "X-Reply: yes\r\n");
        resp->content_type = "text/plain";
    } else if (strcmp(req->path, "/stream") == 0) {
        resp->content_type = "text/event-stream";
        http_stub_add_chunk(resp, "data: 1\n\n", 9, 0);
        http_stub_add_chunk(resp, "data: 2\n\n", 9, 20);
        http_stub_add_chunk(resp, "data: [DONE]\n\n", 14, 20);
    } else if (strcmp(req->path, "/drop") == 0) {
        resp->action = HTTP_STUB_DROP;
    } else if (strcmp(req->path, "/cut") == 0) {
        dspy_str_append(&resp->body, "0123456789abcdef");
        resp->action = HTTP_STUB_CLOSE_MID_BODY;
    } else if (strcmp(req->path, "/slow") == 0) {
        resp->delay_ms = 200;
        dspy_str_append(&resp->body, "slow");
    } else if (strcmp(req->path, "/forever") == 0) {
        resp->delay_ms = 60000;
    } else {
        resp->status = 404;
    }
}

static size_t sink(char *p, size_t s, size_t n, void *ud) {
    dspy_str_appendn((dspy_str *)ud, p, s * n);
    return s * n;
}

typedef struct {
    CURLcode rc;
    long code;
    dspy_str body;
    dspy_str headers;
} result;

static void get(CURL *c, const char *url, const char *post, result *r) {
    memset(r, 0, sizeof *r);
    struct curl_slist *h = curl_slist_append(NULL, "X-Test: hello world ");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r->headers);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (post) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, post);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(post));
    } else {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
    r->rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->code);
    curl_slist_free_all(h);
}

static void result_free(result *r) {
    dspy_str_free(&r->body);
    dspy_str_free(&r->headers);
}

static void test_requests_and_keepalive(void) {
    http_stub *s = NULL;
    CHECK_OK(http_stub_start(handler, NULL, &s));
    if (!s) return;
    CURL *c = curl_easy_init();
    char url[256];
    result r;
    snprintf(url, sizeof url, "%s/echo?q=a%%20b+c&z=1", http_stub_url(s));
    get(c, url, NULL, &r);
    CHECK_INT(r.rc, CURLE_OK);
    CHECK_INT(r.code, 200);
    CHECK_STR(dspy_str_cstr(&r.body), "GET /echo q=a b c x=hello world len=0 body=");
    CHECK_CONTAINS(dspy_str_cstr(&r.headers), "X-Reply: yes");
    result_free(&r);
    /* a POST big enough for curl to send Expect: 100-continue */
    dspy_str big = DSPY_STR_INIT;
    for (int i = 0; i < 3000; i++) dspy_str_appendc(&big, (char)('a' + i % 26));
    snprintf(url, sizeof url, "%s/echo", http_stub_url(s));
    get(c, url, big.ptr, &r);
    CHECK_INT(r.code, 200);
    CHECK_CONTAINS(dspy_str_cstr(&r.body), "POST /echo q=- x=hello world len=3000 body=abcdefghij");
    CHECK_INT(r.body.len, strlen("POST /echo q=- x=hello world len=3000 body=") + 3000);
    result_free(&r);
    dspy_str_free(&big);
    snprintf(url, sizeof url, "%s/missing", http_stub_url(s));
    get(c, url, NULL, &r);
    CHECK_INT(r.code, 404);
    result_free(&r);
    CHECK_INT(http_stub_requests(s), 3);
    CHECK_INT(http_stub_connections(s), 1); /* one kept-alive connection */
    curl_easy_cleanup(c);
    http_stub_stop(s);
}

static void test_stream_and_failures(void) {
    http_stub *s = NULL;
    CHECK_OK(http_stub_start(handler, NULL, &s));
    if (!s) return;
    CURL *c = curl_easy_init();
    char url[256];
    result r;
    snprintf(url, sizeof url, "%s/stream", http_stub_url(s));
    get(c, url, NULL, &r);
    CHECK_INT(r.rc, CURLE_OK);
    CHECK_STR(dspy_str_cstr(&r.body), "data: 1\n\ndata: 2\n\ndata: [DONE]\n\n");
    CHECK_CONTAINS(dspy_str_cstr(&r.headers), "Transfer-Encoding: chunked");
    result_free(&r);
    snprintf(url, sizeof url, "%s/drop", http_stub_url(s));
    get(c, url, NULL, &r);
    CHECK_INT(r.rc, CURLE_GOT_NOTHING);
    result_free(&r);
    snprintf(url, sizeof url, "%s/cut", http_stub_url(s));
    get(c, url, NULL, &r);
    CHECK_INT(r.rc, CURLE_PARTIAL_FILE);
    CHECK_STR(dspy_str_cstr(&r.body), "01234567");
    result_free(&r);
    curl_easy_cleanup(c);
    http_stub_stop(s);
}

typedef struct {
    const char *url;
    result r;
} job;

static void *worker(void *arg) {
    job *j = arg;
    CURL *c = curl_easy_init();
    get(c, j->url, NULL, &j->r);
    curl_easy_cleanup(c);
    return NULL;
}

static void test_concurrent_and_stop(void) {
    http_stub *s = NULL;
    CHECK_OK(http_stub_start(handler, NULL, &s));
    if (!s) return;
    char url[256];
    snprintf(url, sizeof url, "%s/slow", http_stub_url(s));
    enum { N = 8 };
    job jobs[N];
    pthread_t th[N];
    double t0 = now_s();
    for (int i = 0; i < N; i++) {
        jobs[i].url = url;
        pthread_create(&th[i], NULL, worker, &jobs[i]);
    }
    int ok = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ok += jobs[i].r.rc == CURLE_OK && strcmp(dspy_str_cstr(&jobs[i].r.body), "slow") == 0;
        result_free(&jobs[i].r);
    }
    CHECK_INT(ok, N);
    CHECK(now_s() - t0 < 1.5); /* 8 x 200 ms served in parallel */
    CHECK_INT(http_stub_connections(s), N);

    /* stop while a request waits in a 60 s delay: returns promptly */
    job j;
    snprintf(url, sizeof url, "%s/forever", http_stub_url(s));
    j.url = url;
    pthread_t t;
    pthread_create(&t, NULL, worker, &j);
    while (http_stub_requests(s) < N + 1) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    t0 = now_s();
    http_stub_stop(s);
    CHECK(now_s() - t0 < 1.0);
    pthread_join(t, NULL);
    CHECK(j.r.rc != CURLE_OK);
    result_free(&j.r);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    RUN(test_requests_and_keepalive);
    RUN(test_stream_and_failures);
    RUN(test_concurrent_and_stop);
    curl_global_cleanup();
    return check_summary("test_http_stub");
}
