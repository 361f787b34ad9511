/* test_http.c — the HTTP/1.1 layer: request-head parsing (every rejection with its status) and
 * a live in-process server on 127.0.0.1 driven over raw sockets: keep-alive, pipelining,
 * 100-continue, chunked streaming, body/header limits, read timeout, the connection cap,
 * peer-close detection and graceful stop. Error bodies go through an OpenAI-shaped error
 * callback, as dspy serve wires it. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "dspy/str.h"
#include "server/http.h"
#include "server/openai.h"

/* ---- parser ----------------------------------------------------------------------------- */

static http_limits lim(void) {
    http_limits l = http_limits_default();
    l.max_header = 1024;
    l.max_body = 100;
    return l;
}

static int parse(const char *text, http_request *req, http_parse_error *err) {
    http_limits l = lim();
    err->status = 0;
    return http_parse_head(text, strlen(text), &l, req, err);
}

static void expect_error(const char *text, int status) {
    http_request req;
    http_parse_error err;
    int r = parse(text, &req, &err);
    CHECK_INT(r, -1);
    CHECK_INT(err.status, status);
    CHECK(err.message && *err.message);
}

static void test_parse_ok(void) {
    http_request req;
    http_parse_error err;
    const char *t = "GET /v1/models?x=1 HTTP/1.1\r\nHost: a\r\nX-Thing:   padded value \t\r\n\r\nrest";
    CHECK_INT(parse(t, &req, &err), 1);
    CHECK(dspy_strv_eqz(req.method, "GET"));
    CHECK(dspy_strv_eqz(req.target, "/v1/models?x=1"));
    CHECK(dspy_strv_eqz(req.path, "/v1/models"));
    CHECK(dspy_strv_eqz(req.query, "x=1"));
    CHECK_INT(req.minor, 1);
    CHECK_INT(req.nheaders, 2);
    CHECK(dspy_strv_eqz(http_header_get(&req, "x-thing"), "padded value"));
    CHECK(dspy_strv_eqz(http_header_get(&req, "HOST"), "a"));
    CHECK(http_header_get(&req, "missing").ptr == NULL);
    CHECK_INT(req.head_len, strlen(t) - 4);
    CHECK(req.keep_alive);
    CHECK(!req.has_length);

    CHECK_INT(parse("POST /v1/completions HTTP/1.1\r\nContent-Length: 12\r\nExpect: 100-continue\r\n\r\n", &req, &err), 1);
    CHECK(req.has_length);
    CHECK_INT(req.content_length, 12);
    CHECK(req.expect_continue);

    /* keep-alive rules */
    CHECK_INT(parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", &req, &err), 1);
    CHECK(!req.keep_alive);
    CHECK_INT(parse("GET / HTTP/1.0\r\n\r\n", &req, &err), 1);
    CHECK(!req.keep_alive);
    CHECK_INT(req.minor, 0);
    CHECK_INT(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &req, &err), 1);
    CHECK(req.keep_alive);
    CHECK_INT(parse("GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n", &req, &err), 1);
    CHECK(!req.keep_alive);

    /* absolute form, bare LF line ends, leading empty line, same Content-Length twice */
    CHECK_INT(parse("GET http://127.0.0.1:8000/health?a HTTP/1.1\r\n\r\n", &req, &err), 1);
    CHECK(dspy_strv_eqz(req.path, "/health"));
    CHECK(dspy_strv_eqz(req.query, "a"));
    CHECK_INT(parse("GET /x HTTP/1.1\nHost: h\n\n", &req, &err), 1);
    CHECK(dspy_strv_eqz(http_header_get(&req, "Host"), "h"));
    CHECK_INT(parse("\r\nGET /y HTTP/1.1\r\n\r\n", &req, &err), 1);
    CHECK(dspy_strv_eqz(req.path, "/y"));
    CHECK_INT(parse("PUT /z HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", &req, &err), 1);
    CHECK_INT(req.content_length, 3);
    /* HTTP/1.2 is served as 1.1 (same major version) */
    CHECK_INT(parse("GET / HTTP/1.2\r\n\r\n", &req, &err), 1);
    CHECK_INT(req.minor, 1);
}

static void test_parse_incomplete(void) {
    http_request req;
    http_parse_error err;
    CHECK_INT(parse("", &req, &err), 0);
    CHECK_INT(parse("GET / HTTP/1.1\r\nHost: a\r\n", &req, &err), 0);
    CHECK_INT(parse("GET / HTTP/1.1\r\nHost: a\r\n\r", &req, &err), 0);
    CHECK_INT(parse("GET / HT", &req, &err), 0);
}

static void test_parse_errors(void) {
    expect_error("GET\r\n\r\n", 400);
    expect_error("GET  /x HTTP/1.1\r\n\r\n", 400);
    expect_error("GET /x HTTP/1.1 extra\r\n\r\n", 400);
    expect_error("G(T /x HTTP/1.1\r\n\r\n", 400);
    expect_error("GET x HTTP/1.1\r\n\r\n", 400);
    expect_error("GET /x HTTX/1.1\r\n\r\n", 400);
    expect_error("GET /x HTTP/2.0\r\n\r\n", 505);
    expect_error("GET /x HTTP/1.1\r\nHost : a\r\n\r\n", 400);
    expect_error("GET /x HTTP/1.1\r\nNoColon\r\n\r\n", 400);
    expect_error("GET /x HTTP/1.1\r\nA: b\r\n  folded\r\n\r\n", 400);
    expect_error("GET /x HTTP/1.1\r\nA: b\x01\r\n\r\n", 400);
    expect_error("POST /x HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400);
    expect_error("POST /x HTTP/1.1\r\nContent-Length: \r\n\r\n", 400);
    expect_error("POST /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400);
    expect_error("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411);
    expect_error("POST /x HTTP/1.1\r\nHost: a\r\n\r\n", 411);
    expect_error("POST /x HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413);
    expect_error("POST /x HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n", 413);
    /* header section over 1024 bytes: complete or not */
    dspy_str big = DSPY_STR_INIT;
    dspy_str_append(&big, "GET /x HTTP/1.1\r\nX-Big: ");
    dspy_str_repeat(&big, "a", 1100);
    expect_error(big.ptr, 431);
    dspy_str_append(&big, "\r\n\r\n");
    expect_error(big.ptr, 431);
    dspy_str_free(&big);
    dspy_str many = DSPY_STR_INIT;
    dspy_str_append(&many, "GET /x HTTP/1.1\r\n");
    for (int i = 0; i < HTTP_MAX_HEADERS + 1; i++) dspy_str_append(&many, "A:1\r\n");
    dspy_str_append(&many, "\r\n");
    http_limits l = lim();
    l.max_header = 8192;
    http_request req;
    http_parse_error err;
    CHECK_INT(http_parse_head(many.ptr, many.len, &l, &req, &err), -1);
    CHECK_INT(err.status, 431);
    dspy_str_free(&many);
    CHECK_STR(http_reason(413), "Content Too Large");
    CHECK_STR(http_reason(431), "Request Header Fields Too Large");
}

/* Random bytes and random mutations of valid heads: the parser never reads out of bounds
 * (ASan), and answers 1, 0, or -1 with one of its statuses. */
static void test_parse_robust(void) {
    static const char *const seeds[] = {
        "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nConnection: keep-alive\r\n\r\n",
        "GET /v1/models?x=1 HTTP/1.0\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET http://h/x HTTP/1.1\nA: b\n\n",
    };
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    http_limits l = lim();
    int bad = 0;
    for (int it = 0; it < 20000; it++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const char *seed = seeds[x % 3];
        size_t n = strlen(seed);
        char buf[256];
        memcpy(buf, seed, n);
        int muts = 1 + (int)((x >> 8) % 4);
        for (int m = 0; m < muts; m++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size_t pos = (size_t)(x % n);
            static const char pool[] = " :\r\n\t\x01\x7f\xff" "0123456789/?%HTP.";
            buf[pos] = (x >> 32) & 1 ? pool[(x >> 40) % (sizeof pool - 1)] : (char)(x >> 48);
        }
        size_t len = (size_t)((x >> 20) % (n + 1)); /* also every truncation */
        char *copy = malloc(len ? len : 1); /* exact size, so ASan sees any over-read */
        memcpy(copy, buf, len);
        http_request req;
        http_parse_error err = {0, NULL};
        int r = http_parse_head(copy, len, &l, &req, &err);
        bool ok = r == 0 || r == 1 ||
                  (r == -1 && err.message && (err.status == 400 || err.status == 411 || err.status == 413 ||
                                              err.status == 431 || err.status == 505));
        if (r == 1 && req.head_len > len) ok = false;
        if (!ok) bad++;
        free(copy);
    }
    CHECK_INT(bad, 0);
}

/* ---- live server ------------------------------------------------------------------------ */

static atomic_int g_peer_closed_seen;

static void handler(void *user, const http_request *req, http_conn *c) {
    (void)user;
    if (dspy_strv_eqz(req->path, "/echo")) {
        http_respond(c, 200, "text/plain", req->body, req->body_len, NULL);
    } else if (dspy_strv_eqz(req->path, "/stream")) {
        http_stream_begin(c, 200, "text/event-stream");
        http_stream_write(c, "data: {\"a\":1}\n\n", 15);
        http_stream_write(c, "", 0); /* ignored: an empty chunk would end the stream */
        http_stream_write(c, "data: [DONE]\n\n", 14);
        http_stream_end(c);
    } else if (dspy_strv_eqz(req->path, "/slow")) {
        usleep(300 * 1000);
        http_respond(c, 200, "text/plain", "slow", 4, NULL);
    } else if (dspy_strv_eqz(req->path, "/wait-close")) {
        for (int i = 0; i < 300 && !http_conn_peer_closed(c); i++) usleep(10 * 1000);
        if (http_conn_peer_closed(c)) atomic_store(&g_peer_closed_seen, 1);
        http_respond(c, 200, "text/plain", "x", 1, NULL);
    } else if (dspy_strv_eqz(req->path, "/silent")) {
        /* answers nothing: the layer sends 500 */
    } else if (dspy_strv_eqz(req->path, "/twice")) {
        http_respond(c, 200, "text/plain", "1", 1, NULL);
        CHECK_STATUS(http_respond(c, 200, "text/plain", "2", 1, NULL), DSPY_ERR_STATE);
    } else {
        http_respond(c, 404, "text/plain", "nf", 2, NULL);
    }
}

static void error_cb(void *user, http_conn *c, int status, const char *message) {
    (void)user;
    oai_error e = OAI_ERROR_INIT;
    oai_error_set(&e, status, NULL, NULL, status == 413 ? "request_too_large" : NULL, "%s", message);
    char *body = oai_error_json(&e);
    http_respond(c, status, "application/json", body, strlen(body), NULL);
    free(body);
    oai_error_free(&e);
}

typedef struct live {
    http_server *srv;
    pthread_t th;
    dspy_status run_status;
} live;

static void *run_main(void *p) {
    live *l = p;
    l->run_status = http_server_run(l->srv);
    return NULL;
}

static bool live_start(live *l, int max_conns, int read_timeout_ms, int idle_timeout_ms) {
    http_server_config cfg = {0};
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    cfg.max_connections = max_conns;
    cfg.limits = http_limits_default();
    cfg.limits.max_body = 1000;
    cfg.limits.max_header = 2048;
    cfg.limits.read_timeout_ms = read_timeout_ms;
    cfg.limits.idle_timeout_ms = idle_timeout_ms;
    cfg.handler = handler;
    cfg.error = error_cb;
    dspy_status st = http_server_new(&cfg, &l->srv);
    CHECK_OK(st);
    if (st != DSPY_OK) return false;
    CHECK(http_server_port(l->srv) > 0);
    pthread_create(&l->th, NULL, run_main, l);
    return true;
}

static void live_stop(live *l) {
    http_server_stop(l->srv);
    pthread_join(l->th, NULL);
    CHECK_OK(l->run_status);
    CHECK(http_server_drain(l->srv, 5000));
    http_server_free(l->srv);
}

static int connect_to(const live *l) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)http_server_port(l->srv))};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void send_str(int fd, const char *s) {
    size_t n = strlen(s);
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

/* Reads until `needle` appears (one byte at a time, so nothing of a pipelined next answer is
 * consumed), EOF, or the receive timeout; appends what was read. */
static void read_until(int fd, const char *needle, dspy_str *out) {
    size_t nl = needle ? strlen(needle) : 0;
    char c;
    while (!needle || out->len < nl || memcmp(out->ptr + out->len - nl, needle, nl) != 0) {
        ssize_t r = recv(fd, &c, 1, 0);
        if (r <= 0) break;
        dspy_str_appendn(out, &c, 1);
    }
}

/* Reads one answer with a Content-Length body (or up to EOF). */
static void read_answer(int fd, dspy_str *out) {
    dspy_str_clear(out);
    read_until(fd, "\r\n\r\n", out);
    if (!out->ptr) return;
    const char *cl = strstr(out->ptr, "Content-Length: ");
    const char *end = strstr(out->ptr, "\r\n\r\n");
    if (!cl || !end) return;
    size_t want = (size_t)(end + 4 - out->ptr) + (size_t)strtoul(cl + 16, NULL, 10);
    char buf[4096];
    while (out->len < want) {
        ssize_t r = recv(fd, buf, want - out->len < sizeof buf ? want - out->len : sizeof buf, 0);
        if (r <= 0) break;
        dspy_str_appendn(out, buf, (size_t)r);
    }
}

static bool at_eof(int fd) {
    char b;
    return recv(fd, &b, 1, 0) == 0;
}

static void test_live_basic(void) {
    live l;
    if (!live_start(&l, 8, 2000, 5000)) return;
    int fd = connect_to(&l);
    CHECK(fd >= 0);
    dspy_str a = DSPY_STR_INIT;
    /* keep-alive: two requests, one connection */
    send_str(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    read_answer(fd, &a);
    CHECK_CONTAINS(a.ptr, "HTTP/1.1 200 OK\r\n");
    CHECK_CONTAINS(a.ptr, "Content-Length: 5\r\n");
    CHECK_CONTAINS(a.ptr, "Connection: keep-alive\r\n");
    CHECK(dspy_strv_ends_with(dspy_strv_make(a.ptr, a.len), "\r\n\r\nhello"));
    send_str(fd, "GET /nope HTTP/1.1\r\n\r\n");
    read_answer(fd, &a);
    CHECK_CONTAINS(a.ptr, "HTTP/1.1 404 Not Found");
    /* pipelined: two requests in one write */
    send_str(fd, "POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nde");
    read_answer(fd, &a);
    CHECK(dspy_strv_ends_with(dspy_strv_make(a.ptr, a.len), "abc"));
    read_answer(fd, &a);
    CHECK(dspy_strv_ends_with(dspy_strv_make(a.ptr, a.len), "de"));
    /* a body split over several writes */
    send_str(fd, "POST /echo HTTP/1.1\r\nContent-Length: 6\r\n\r\nab");
    usleep(50 * 1000);
    send_str(fd, "cdef");
    read_answer(fd, &a);
    CHECK(dspy_strv_ends_with(dspy_strv_make(a.ptr, a.len), "abcdef"));
    /* a silent handler gets a 500, a second answer is refused */
    send_str(fd, "GET /silent HTTP/1.1\r\n\r\n");
    read_answer(fd, &a);
    CHECK_CONTAINS(a.ptr, "HTTP/1.1 500 Internal Server Error");
    CHECK(at_eof(fd));
    close(fd);
    fd = connect_to(&l);
    send_str(fd, "GET /twice HTTP/1.1\r\n\r\n");
    read_answer(fd, &a);
    CHECK(dspy_strv_ends_with(dspy_strv_make(a.ptr, a.len), "\r\n\r\n1"));
    /* Connection: close is honoured */
    send_str(fd, "POST /echo HTTP/1.1\r\nConnection: close\r\nContent-Length: 1\r\n\r\nz");
    read_answer(fd, &a);
    CHECK_CONTAINS(a.ptr, "Connection: close\r\n");
    CHECK(at_eof(fd));
    close(fd);
    /* HTTP/1.0 without keep-alive closes */
    fd = connect_to(&l);
    send_str(fd, "GET /nope HTTP/1.0\r\n\r\n");
    read_answer(fd, &a);
    CHECK_CONTAINS(a.ptr, "Connection: close\r\n");
    CHECK(at_eof(fd));
    close(fd);
    dspy_str_free(&a);
    live_stop(&l);
}

static void test_live_continue_and_stream(void) {
    live l;
    if (!live_start(&l, 8, 2000, 5000)) return;
    dspy_str a = DSPY_STR_INIT;
    int fd = connect_to(&l);
    send_str(fd, "POST /echo HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    read_until(fd, "\r\n\r\n", &a);
    CHECK_STR(a.ptr, "HTTP/1.1 100 Continue\r\n\r\n");
    send_str(fd, "body");
    read_answer(fd, &a);
    CHECK_CONTAINS(a.ptr, "HTTP/1.1 200 OK");
    CHECK(dspy_strv_ends_with(dspy_strv_make(a.ptr, a.len), "body"));

    /* chunked SSE framing, exactly */
    dspy_str_clear(&a);
    send_str(fd, "GET /stream HTTP/1.1\r\n\r\n");
    read_until(fd, "0\r\n\r\n", &a);
    CHECK_CONTAINS(a.ptr, "Content-Type: text/event-stream\r\n");
    CHECK_CONTAINS(a.ptr, "Transfer-Encoding: chunked\r\n");
    CHECK_CONTAINS(a.ptr, "Cache-Control: no-cache\r\n");
    const char *body = strstr(a.ptr, "\r\n\r\n");
    CHECK_STR(body, "\r\n\r\nf\r\ndata: {\"a\":1}\n\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n");
    /* the connection is still usable after a stream */
    send_str(fd, "POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nok");
    read_answer(fd, &a);
    CHECK(dspy_strv_ends_with(dspy_strv_make(a.ptr, a.len), "ok"));
    close(fd);
    /* HTTP/1.0 stream: no chunking, ends with close */
    fd = connect_to(&l);
    dspy_str_clear(&a);
    send_str(fd, "GET /stream HTTP/1.0\r\n\r\n");
    read_until(fd, NULL, &a);
    CHECK(strstr(a.ptr, "Transfer-Encoding") == NULL);
    CHECK(dspy_strv_ends_with(dspy_strv_make(a.ptr, a.len), "\r\n\r\ndata: {\"a\":1}\n\ndata: [DONE]\n\n"));
    close(fd);
    dspy_str_free(&a);
    live_stop(&l);
}

static void check_error_body(const char *answer, int status, const char *code) {
    const char *body = answer ? strstr(answer, "\r\n\r\n") : NULL;
    CHECK(body != NULL);
    if (!body) return;
    char line[64];
    snprintf(line, sizeof line, "HTTP/1.1 %d ", status);
    CHECK(strncmp(answer, line, strlen(line)) == 0);
    CHECK_CONTAINS(answer, "Content-Type: application/json\r\n");
    CHECK_CONTAINS(answer, "Connection: close\r\n");
    CHECK_CONTAINS(body, "{\"error\":{\"message\":\"");
    char type[96];
    snprintf(type, sizeof type, "\"type\":\"%s\"", oai_error_type_for(status));
    CHECK_CONTAINS(body, type);
    if (code) {
        char c[64];
        snprintf(c, sizeof c, "\"code\":\"%s\"", code);
        CHECK_CONTAINS(body, c);
    }
}

static void test_live_limits(void) {
    live l;
    if (!live_start(&l, 8, 300, 5000)) return;
    dspy_str a = DSPY_STR_INIT;
    /* 413: the body is not read; the answer still arrives (lingering close) */
    int fd = connect_to(&l);
    dspy_str req = DSPY_STR_INIT;
    dspy_str_append(&req, "POST /echo HTTP/1.1\r\nContent-Length: 5000\r\n\r\n");
    dspy_str_repeat(&req, "x", 5000);
    send_str(fd, req.ptr);
    read_answer(fd, &a);
    check_error_body(a.ptr, 413, "request_too_large");
    CHECK_CONTAINS(a.ptr, "request body is too large");
    close(fd);
    /* 431 */
    fd = connect_to(&l);
    dspy_str_clear(&req);
    dspy_str_append(&req, "GET /echo HTTP/1.1\r\nX-Big: ");
    dspy_str_repeat(&req, "y", 3000);
    dspy_str_append(&req, "\r\n\r\n");
    send_str(fd, req.ptr);
    read_answer(fd, &a);
    check_error_body(a.ptr, 431, NULL);
    close(fd);
    /* 411 for a chunked body, 400 for garbage, 505 for HTTP/2 */
    fd = connect_to(&l);
    send_str(fd, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    read_answer(fd, &a);
    check_error_body(a.ptr, 411, NULL);
    close(fd);
    fd = connect_to(&l);
    send_str(fd, "HELLO\r\n\r\n");
    read_answer(fd, &a);
    check_error_body(a.ptr, 400, NULL);
    close(fd);
    fd = connect_to(&l);
    send_str(fd, "GET / HTTP/2.0\r\n\r\n");
    read_answer(fd, &a);
    check_error_body(a.ptr, 505, NULL);
    close(fd);
    /* 408: a head that never completes, and a body that never completes (300 ms timeout) */
    fd = connect_to(&l);
    send_str(fd, "GET /echo HTTP/1.1\r\nHost: slow");
    read_answer(fd, &a);
    check_error_body(a.ptr, 408, NULL);
    close(fd);
    fd = connect_to(&l);
    send_str(fd, "POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
    read_answer(fd, &a);
    check_error_body(a.ptr, 408, NULL);
    close(fd);
    dspy_str_free(&req);
    dspy_str_free(&a);
    live_stop(&l);
}

static void test_live_idle_and_cap(void) {
    live l;
    if (!live_start(&l, 2, 2000, 400)) return;
    dspy_str a = DSPY_STR_INIT;
    /* idle keep-alive connection is closed after idle_timeout without an answer */
    int fd = connect_to(&l);
    send_str(fd, "GET /nope HTTP/1.1\r\n\r\n");
    read_answer(fd, &a);
    CHECK_CONTAINS(a.ptr, "404");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(at_eof(fd));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK(dt > 0.2 && dt < 3.0);
    close(fd);
    /* cap of 2: two busy connections, the third gets 503 */
    for (int i = 0; i < 100 && http_server_connections(l.srv) > 0; i++) usleep(20 * 1000);
    CHECK_INT(http_server_connections(l.srv), 0);
    int f1 = connect_to(&l), f2 = connect_to(&l);
    send_str(f1, "GET /nope HTTP/1.1\r\n\r\n");
    read_answer(f1, &a);
    CHECK_CONTAINS(a.ptr, "404 Not Found");
    send_str(f2, "GET /nope HTTP/1.1\r\n\r\n");
    read_answer(f2, &a);
    CHECK_CONTAINS(a.ptr, "404 Not Found");
    CHECK_INT(http_server_connections(l.srv), 2);
    int f3 = connect_to(&l);
    send_str(f3, "GET /nope HTTP/1.1\r\n\r\n");
    read_answer(f3, &a);
    CHECK(a.ptr && strncmp(a.ptr, "HTTP/1.1 503 ", 13) == 0);
    CHECK_CONTAINS(a.ptr, "\"type\":\"server_error\"");
    CHECK_CONTAINS(a.ptr, "too many open connections");
    close(f3);
    close(f1);
    close(f2);
    /* once they are gone, new connections are served again */
    for (int i = 0; i < 100 && http_server_connections(l.srv) > 0; i++) usleep(20 * 1000);
    fd = connect_to(&l);
    send_str(fd, "GET /nope HTTP/1.1\r\n\r\n");
    read_answer(fd, &a);
    CHECK_CONTAINS(a.ptr, "404 Not Found");
    close(fd);
    dspy_str_free(&a);
    live_stop(&l);
}

typedef struct slow_client {
    live *l;
    dspy_str answer;
} slow_client;

static void *slow_main(void *p) {
    slow_client *sc = p;
    int fd = connect_to(sc->l);
    send_str(fd, "GET /slow HTTP/1.1\r\n\r\n");
    read_answer(fd, &sc->answer);
    close(fd);
    return NULL;
}

static void test_live_peer_close_and_stop(void) {
    live l;
    if (!live_start(&l, 8, 2000, 60000)) return;
    /* the handler notices that the client went away */
    atomic_store(&g_peer_closed_seen, 0);
    int fd = connect_to(&l);
    send_str(fd, "GET /wait-close HTTP/1.1\r\n\r\n");
    usleep(100 * 1000);
    close(fd);
    for (int i = 0; i < 200 && !atomic_load(&g_peer_closed_seen); i++) usleep(10 * 1000);
    CHECK(atomic_load(&g_peer_closed_seen));

    /* graceful stop: an idle keep-alive connection is closed, an in-flight request finishes
     * with Connection: close, new connections are refused */
    int idle = connect_to(&l);
    dspy_str a = DSPY_STR_INIT;
    send_str(idle, "GET /nope HTTP/1.1\r\n\r\n");
    read_answer(idle, &a);
    slow_client sc = {&l, DSPY_STR_INIT};
    pthread_t th;
    pthread_create(&th, NULL, slow_main, &sc);
    usleep(100 * 1000);
    http_server_stop(l.srv);
    http_server_stop(l.srv); /* idempotent */
    pthread_join(l.th, NULL);
    CHECK(http_server_stopping(l.srv));
    CHECK(at_eof(idle));
    close(idle);
    pthread_join(th, NULL);
    CHECK_CONTAINS(sc.answer.ptr, "HTTP/1.1 200 OK");
    CHECK_CONTAINS(sc.answer.ptr, "Connection: close");
    CHECK(dspy_strv_ends_with(dspy_strv_make(sc.answer.ptr, sc.answer.len), "slow"));
    CHECK(http_server_drain(l.srv, 5000));
    CHECK_INT(http_server_connections(l.srv), 0);
    CHECK(connect_to(&l) < 0);
    http_server_free(l.srv);
    dspy_str_free(&sc.answer);
    dspy_str_free(&a);
}

static void test_bind_errors(void) {
    http_server_config cfg = {0};
    cfg.handler = handler;
    cfg.max_connections = 1;
    cfg.limits = http_limits_default();
    cfg.host = "no-such-host.invalid";
    http_server *s = NULL;
    CHECK_STATUS(http_server_new(&cfg, &s), DSPY_ERR_IO);
    CHECK(s == NULL);
    CHECK_CONTAINS(dspy_errmsg(), "no-such-host.invalid");
    cfg.host = "127.0.0.1";
    cfg.max_connections = 0;
    CHECK_STATUS(http_server_new(&cfg, &s), DSPY_ERR_ARG);
    /* a port in use */
    cfg.max_connections = 1;
    http_server *a = NULL;
    CHECK_OK(http_server_new(&cfg, &a));
    if (a) {
        cfg.port = http_server_port(a);
        CHECK_STATUS(http_server_new(&cfg, &s), DSPY_ERR_IO);
        CHECK_CONTAINS(dspy_errmsg(), "cannot listen on 127.0.0.1:");
        http_server_free(a);
    }
}

int main(void) {
    RUN(test_parse_ok);
    RUN(test_parse_incomplete);
    RUN(test_parse_errors);
    RUN(test_parse_robust);
    RUN(test_live_basic);
    RUN(test_live_continue_and_stream);
    RUN(test_live_limits);
    RUN(test_live_idle_and_cap);
    RUN(test_live_peer_close_and_stop);
    RUN(test_bind_errors);
    return check_summary("test_http");
}
