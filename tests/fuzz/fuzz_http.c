/* fuzz_http.c — libFuzzer target: the HTTP layer of `dspy serve` end to end. A server
 * (src/server/http.c over libmicrohttpd, small limits) runs in this process; each input is
 * sent as raw bytes on a fresh loopback connection, the write side is shut, and the answer is
 * read to EOF. Whatever the bytes — pipelined requests, chunked bodies, garbage, oversized
 * heads — the server must neither crash nor hang (a hang shows as a libFuzzer timeout), and
 * must answer the next well-formed request on a new connection.
 * The request parser itself is libmicrohttpd's (fuzzed upstream, not instrumented here); what
 * this covers is our code around it: request assembly, limits, workers, answers, streams. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "server/http.h"

static http_server *g_srv;
static pthread_t g_thread;

static void handler(void *user, const http_request *req, http_conn *c) {
    (void)user;
    if (dspy_strv_starts_with(req->path, "/stream")) {
        dspy_http_stream_begin(c, 200, "text/event-stream");
        for (size_t i = 0; i < req->body_len % 5; i++) dspy_http_stream_write(c, "data: x\n\n", 9);
        dspy_http_stream_end(c);
    } else if (dspy_strv_starts_with(req->path, "/silent")) {
        /* answers nothing: the layer sends 500 */
    } else {
        dspy_strv h = dspy_http_header_get(req, "X-Echo");
        dspy_http_respond(c, 200, "text/plain", req->body, req->body_len, h.ptr ? "X-Seen: 1\r\n" : NULL);
    }
}

static void *run_main(void *arg) {
    dspy_http_server_run(arg);
    return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    http_server_config cfg = {0};
    cfg.host = "127.0.0.1";
    cfg.max_connections = 64;
    cfg.limits = dspy_http_limits_default();
    cfg.limits.max_body = 4096;
    cfg.limits.max_header = 2048;
    cfg.limits.read_timeout_ms = 500;
    cfg.limits.idle_timeout_ms = 500;
    cfg.limits.write_timeout_ms = 500;
    cfg.handler = handler;
    if (dspy_http_server_new(&cfg, &g_srv) != DSPY_OK) {
        fprintf(stderr, "fuzz_http: %s\n", dspy_errmsg());
        abort();
    }
    pthread_create(&g_thread, NULL, run_main, g_srv);
    return 0;
}

static int dial(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)dspy_http_server_port(g_srv))};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends `data`, shuts the write side, reads to EOF (at most wait_ms). Returns bytes read. */
static size_t exchange(const uint8_t *data, size_t size, char *first, size_t first_cap, int wait_ms) {
    int fd = dial();
    FUZZ_ASSERT(fd >= 0);
    size_t off = 0, got = 0;
    while (off < size) {
        ssize_t w = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (w <= 0) break;
        off += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    char buf[4096];
    for (int waited = 0; waited < wait_ms;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, 100);
        if (r == 0) {
            waited += 100;
            continue;
        }
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        if (got < first_cap) {
            size_t k = (size_t)n < first_cap - got ? (size_t)n : first_cap - got;
            memcpy(first + got, buf, k);
        }
        got += (size_t)n;
    }
    close(fd);
    return got;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char first[64];
    exchange(data, size, first, sizeof first, 1500);
    /* the server still answers a normal request */
    static const char ok[] = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    memset(first, 0, sizeof first);
    /* generous: on a loaded machine a worker thread may take a while to be scheduled */
    size_t n = exchange((const uint8_t *)ok, sizeof ok - 1, first, sizeof first - 1, 7000);
    if (n <= 12 || strncmp(first, "HTTP/1.1 200", 12) != 0)
        fprintf(stderr, "fuzz_http: the follow-up request got %zu bytes: \"%.*s\"\n", n, (int)(n < 63 ? n : 63), first);
    FUZZ_ASSERT(n > 12 && strncmp(first, "HTTP/1.1 200", 12) == 0);
    return 0;
}
