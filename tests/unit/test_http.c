/* test_http.c — the HTTP/1.1 layer (libmicrohttpd underneath): a live in-process server on
 * 127.0.0.1 driven over raw sockets: keep-alive, pipelining, 100-continue, chunked request
 * bodies, chunked streaming, body/header limits, the request deadline against a client that
 * sends one byte at a time, idle connections costing no worker, the connection cap (503 +
 * Retry-After, never a reset), peer-close detection while a worker waits, and graceful stop.
 * Error bodies go through an OpenAI-shaped error callback, as dspy serve wires it. */
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

/* ---- live server ------------------------------------------------------------------------ */

static atomic_int g_peer_closed_seen;

static void handler(void *user, const http_request *req, http_conn *c) {
    (void)user;
    if (dspy_strv_eqz(req->path, "/echo")) {
        dspy_http_respond(c, 200, "text/plain", req->body, req->body_len, NULL);
    } else if (dspy_strv_eqz(req->path, "/stream")) {
        dspy_http_stream_begin(c, 200, "text/event-stream");
        dspy_http_stream_write(c, "data: {\"a\":1}\n\n", 15);
        dspy_http_stream_write(c, "", 0); /* ignored: an empty chunk would end the stream */
        dspy_http_stream_write(c, "data: [DONE]\n\n", 14);
        dspy_http_stream_end(c);
    } else if (dspy_strv_eqz(req->path, "/slow")) {
        usleep(300 * 1000);
        dspy_http_respond(c, 200, "text/plain", "slow", 4, NULL);
    } else if (dspy_strv_eqz(req->path, "/wait-close")) {
        for (int i = 0; i < 300 && !dspy_http_conn_peer_closed(c); i++) usleep(10 * 1000);
        if (dspy_http_conn_peer_closed(c)) atomic_store(&g_peer_closed_seen, 1);
        dspy_http_respond(c, 200, "text/plain", "x", 1, NULL);
    } else if (dspy_strv_eqz(req->path, "/wait-close-silent")) {
        for (int i = 0; i < 300 && !dspy_http_conn_peer_closed(c); i++) usleep(10 * 1000);
        if (dspy_http_conn_peer_closed(c)) atomic_store(&g_peer_closed_seen, 2);
        /* answers nothing: the client is gone, so no 500 is made up for it */
    } else if (dspy_strv_eqz(req->path, "/silent")) {
        /* answers nothing: the layer sends 500 */
    } else if (dspy_strv_eqz(req->path, "/twice")) {
        dspy_http_respond(c, 200, "text/plain", "1", 1, NULL);
        CHECK_STATUS(dspy_http_respond(c, 200, "text/plain", "2", 1, NULL), DSPY_ERR_STATE);
    } else {
        dspy_http_respond(c, 404, "text/plain", "nf", 2, NULL);
    }
}

static atomic_int g_errors_500;

static void error_cb(void *user, http_conn *c, int status, const char *message) {
    (void)user;
    if (status == 500) atomic_fetch_add(&g_errors_500, 1);
    oai_error e = OAI_ERROR_INIT;
    dspy_oai_error_set(&e, status, NULL, NULL, status == 413 ? "request_too_large" : NULL, "%s", message);
    char *body = dspy_oai_error_json(&e);
    dspy_http_respond(c, status, "application/json", body, strlen(body), NULL);
    free(body);
    dspy_oai_error_free(&e);
}

typedef struct live {
    http_server *srv;
    pthread_t th;
    dspy_status run_status;
} live;

static void *run_main(void *p) {
    live *l = p;
    l->run_status = dspy_http_server_run(l->srv);
    return NULL;
}

static bool live_start(live *l, int max_conns, int read_timeout_ms, int idle_timeout_ms) {
    http_server_config cfg = {0};
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    cfg.max_connections = max_conns;
    cfg.max_per_client = 0;
    cfg.limits = dspy_http_limits_default();
    cfg.limits.max_body = 1000;
    cfg.limits.max_header = 2048;
    cfg.limits.read_timeout_ms = read_timeout_ms;
    cfg.limits.idle_timeout_ms = idle_timeout_ms;
    cfg.handler = handler;
    cfg.error = error_cb;
    dspy_status st = dspy_http_server_new(&cfg, &l->srv);
    CHECK_OK(st);
    if (st != DSPY_OK) return false;
    CHECK(dspy_http_server_port(l->srv) > 0);
    pthread_create(&l->th, NULL, run_main, l);
    return true;
}

static void live_stop(live *l) {
    dspy_http_server_stop(l->srv);
    pthread_join(l->th, NULL);
    CHECK_OK(l->run_status);
    CHECK(dspy_http_server_drain(l->srv, 5000));
    dspy_http_server_free(l->srv);
}

static int connect_to(const live *l) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)dspy_http_server_port(l->srv))};
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

/* The payload of a chunked body (RFC 9112 §7.1): "size[;ext]\r\ndata\r\n" ... "0\r\n\r\n". */
static char *dechunk(const char *p) {
    dspy_str out = DSPY_STR_INIT;
    for (;;) {
        char *end;
        unsigned long n = strtoul(p, &end, 16);
        const char *crlf = strstr(end, "\r\n");
        if (!crlf || n == 0) break;
        dspy_str_appendn(&out, crlf + 2, n);
        p = crlf + 2 + n + 2;
    }
    char *r = dspy_str_take(&out);
    return r ? r : strdup("");
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
    CHECK(strstr(a.ptr, "Connection: close") == NULL);
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
    CHECK_CONTAINS(a.ptr, " 404 Not Found");
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
    char *payload = dechunk(body ? body + 4 : "");
    CHECK_STR(payload, "data: {\"a\":1}\n\ndata: [DONE]\n\n");
    free(payload);
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
    CHECK(a.ptr && strstr(a.ptr, "Transfer-Encoding") == NULL);
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
    snprintf(type, sizeof type, "\"type\":\"%s\"", dspy_oai_error_type_for(status));
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
    /* a chunked request body is accepted (and limited like any other) */
    fd = connect_to(&l);
    send_str(fd, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    read_answer(fd, &a);
    CHECK_CONTAINS(a.ptr, "HTTP/1.1 200 OK");
    CHECK(a.ptr && dspy_strv_ends_with(dspy_strv_make(a.ptr, a.len), "\r\n\r\nhello world"));
    close(fd);
    fd = connect_to(&l);
    dspy_str_clear(&req);
    dspy_str_append(&req, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        dspy_str_append(&req, "1f4\r\n");
        dspy_str_repeat(&req, "c", 500);
        dspy_str_append(&req, "\r\n");
    }
    dspy_str_append(&req, "0\r\n\r\n");
    send_str(fd, req.ptr);
    read_answer(fd, &a);
    check_error_body(a.ptr, 413, "request_too_large");
    close(fd);
    /* 400 for garbage, 505 for HTTP/2 (libmicrohttpd's answers) */
    fd = connect_to(&l);
    send_str(fd, "GET\x01/ HTTP/1.1\r\n\r\n");
    read_answer(fd, &a);
    CHECK(a.ptr && strncmp(a.ptr, "HTTP/1.1 400 ", 13) == 0);
    close(fd);
    fd = connect_to(&l); /* a request line it cannot split: libmicrohttpd closes without an answer */
    send_str(fd, "HELLO\r\n\r\n");
    read_answer(fd, &a);
    CHECK(a.len == 0 || strncmp(a.ptr, "HTTP/1.1 400 ", 13) == 0);
    close(fd);
    fd = connect_to(&l);
    send_str(fd, "GET / HTTP/2.0\r\nHost: x\r\n\r\n");
    read_answer(fd, &a);
    CHECK(a.ptr && strncmp(a.ptr, "HTTP/1.1 505 ", 13) == 0);
    close(fd);
    /* the request deadline (300 ms): a head that never completes, a body that never completes,
     * and a client sending one byte every 100 ms (never idle, never done) are all cut off */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fd = connect_to(&l);
    send_str(fd, "GET /echo HTTP/1.1\r\nHost: slow");
    CHECK(at_eof(fd));
    close(fd);
    fd = connect_to(&l);
    send_str(fd, "POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
    CHECK(at_eof(fd));
    close(fd);
    fd = connect_to(&l);
    const char *drip = "POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\n0123456789012345678901234567890123456789";
    bool cut = false;
    for (size_t i = 0; drip[i] && !cut; i++) {
        cut = send(fd, drip + i, 1, MSG_NOSIGNAL) != 1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (!cut && poll(&p, 1, 100) > 0) cut = true;
    }
    CHECK(cut);
    close(fd);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK(dt > 0.6 && dt < 4.0);
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
    for (int i = 0; i < 100 && dspy_http_server_connections(l.srv) > 0; i++) usleep(20 * 1000);
    CHECK_INT(dspy_http_server_connections(l.srv), 0);
    int f1 = connect_to(&l), f2 = connect_to(&l);
    send_str(f1, "GET /nope HTTP/1.1\r\n\r\n");
    read_answer(f1, &a);
    CHECK_CONTAINS(a.ptr, "404 Not Found");
    send_str(f2, "GET /nope HTTP/1.1\r\n\r\n");
    read_answer(f2, &a);
    CHECK_CONTAINS(a.ptr, "404 Not Found");
    CHECK_INT(dspy_http_server_connections(l.srv), 2);
    int f3 = connect_to(&l);
    send_str(f3, "GET /nope HTTP/1.1\r\n\r\n");
    read_answer(f3, &a);
    CHECK(a.ptr && strncmp(a.ptr, "HTTP/1.1 503 ", 13) == 0);
    CHECK_CONTAINS(a.ptr, "\"type\":\"server_error\"");
    CHECK_CONTAINS(a.ptr, "too many open connections");
    CHECK_CONTAINS(a.ptr, "Connection: close");
    close(f3);
    close(f1);
    close(f2);
    /* once they are gone, new connections are served again */
    for (int i = 0; i < 100 && dspy_http_server_connections(l.srv) > 0; i++) usleep(20 * 1000);
    fd = connect_to(&l);
    send_str(fd, "GET /nope HTTP/1.1\r\n\r\n");
    read_answer(fd, &a);
    CHECK_CONTAINS(a.ptr, "404 Not Found");
    close(fd);
    dspy_str_free(&a);
    live_stop(&l);
}

/* 300 idle connections and 50 that send a byte every 50 ms hold no worker and lock nobody
 * out: a normal client is answered at once, each time. */
static void test_live_idle_crowd(void) {
    live l;
    if (!live_start(&l, 400, 3000, 10000)) return;
    enum { IDLE = 300, SLOW = 50 };
    int fds[IDLE + SLOW];
    int opened = 0;
    for (int i = 0; i < IDLE + SLOW; i++)
        if ((fds[i] = connect_to(&l)) >= 0) opened++;
    CHECK_INT(opened, IDLE + SLOW);
    dspy_str a = DSPY_STR_INIT;
    int ok = 0;
    for (int round = 0; round < 10; round++) {
        for (int i = IDLE; i < IDLE + SLOW; i++) send(fds[i], round == 0 ? "P" : "O", 1, MSG_NOSIGNAL);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int fd = connect_to(&l);
        send_str(fd, "POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi");
        read_answer(fd, &a);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        if (a.ptr && strstr(a.ptr, "200 OK") && dt < 0.5) ok++;
        close(fd);
        /* the worker ends just after its answer is out; then no thread serves the crowd */
        for (int i = 0; i < 100 && dspy_http_server_busy(l.srv) > 0; i++) usleep(5 * 1000);
        CHECK_INT(dspy_http_server_busy(l.srv), 0);
        usleep(50 * 1000);
    }
    CHECK_INT(ok, 10);
    CHECK(dspy_http_server_connections(l.srv) >= IDLE + SLOW);
    for (int i = 0; i < IDLE + SLOW; i++)
        if (fds[i] >= 0) close(fds[i]);
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
    /* a handler that saw the client go and answers nothing: no 500 is sent or logged */
    atomic_store(&g_peer_closed_seen, 0);
    atomic_store(&g_errors_500, 0);
    fd = connect_to(&l);
    send_str(fd, "GET /wait-close-silent HTTP/1.1\r\n\r\n");
    usleep(100 * 1000);
    close(fd);
    for (int i = 0; i < 200 && atomic_load(&g_peer_closed_seen) != 2; i++) usleep(10 * 1000);
    CHECK_INT(atomic_load(&g_peer_closed_seen), 2);
    for (int i = 0; i < 100 && dspy_http_server_busy(l.srv) > 0; i++) usleep(10 * 1000);
    CHECK_INT(dspy_http_server_busy(l.srv), 0);
    CHECK_INT(atomic_load(&g_errors_500), 0);

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
    dspy_http_server_stop(l.srv);
    dspy_http_server_stop(l.srv); /* idempotent */
    pthread_join(l.th, NULL);
    CHECK(dspy_http_server_stopping(l.srv));
    CHECK(at_eof(idle));
    close(idle);
    pthread_join(th, NULL);
    CHECK_CONTAINS(sc.answer.ptr, "HTTP/1.1 200 OK");
    CHECK_CONTAINS(sc.answer.ptr, "Connection: close");
    CHECK(dspy_strv_ends_with(dspy_strv_make(sc.answer.ptr, sc.answer.len), "slow"));
    CHECK(dspy_http_server_drain(l.srv, 5000));
    CHECK_INT(dspy_http_server_connections(l.srv), 0);
    CHECK(connect_to(&l) < 0);
    dspy_http_server_free(l.srv);
    dspy_str_free(&sc.answer);
    dspy_str_free(&a);
}

static void test_bind_errors(void) {
    http_server_config cfg = {0};
    cfg.handler = handler;
    cfg.max_connections = 1;
    cfg.limits = dspy_http_limits_default();
    cfg.host = "no-such-host.invalid";
    http_server *s = NULL;
    CHECK_STATUS(dspy_http_server_new(&cfg, &s), DSPY_ERR_IO);
    CHECK(s == NULL);
    CHECK_CONTAINS(dspy_errmsg(), "no-such-host.invalid");
    cfg.host = "127.0.0.1";
    cfg.max_connections = 0;
    CHECK_STATUS(dspy_http_server_new(&cfg, &s), DSPY_ERR_ARG);
    /* a port in use */
    cfg.max_connections = 1;
    http_server *a = NULL;
    CHECK_OK(dspy_http_server_new(&cfg, &a));
    if (a) {
        cfg.port = dspy_http_server_port(a);
        CHECK_STATUS(dspy_http_server_new(&cfg, &s), DSPY_ERR_IO);
        CHECK_CONTAINS(dspy_errmsg(), "cannot listen on 127.0.0.1:");
        dspy_http_server_free(a);
    }
}

int main(void) {
    RUN(test_live_basic);
    RUN(test_live_continue_and_stream);
    RUN(test_live_limits);
    RUN(test_live_idle_and_cap);
    RUN(test_live_idle_crowd);
    RUN(test_live_peer_close_and_stop);
    RUN(test_bind_errors);
    return check_summary("test_http");
}
