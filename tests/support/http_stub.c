/* http_stub.c — threaded HTTP/1.1 test server (see http_stub.h).
 *
 * One accept thread and one thread per connection. Finished connection threads are joined by
 * the accept thread (and the rest at stop), so a long test does not pile up threads. Stopping
 * sets a flag, shuts the listening socket down (which wakes accept() on Linux) and shuts every
 * live connection down (which wakes recv()); delays sleep in 5 ms steps and watch the flag.
 * Follows RFC 9112 for what a test needs: request line, headers, Content-Length bodies,
 * keep-alive, 100-continue, chunked responses.
 */
#include "http_stub.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { MAX_HEADER_BYTES = 65536, MAX_HEADERS = 100 };
#define MAX_BODY_BYTES ((size_t)256 << 20)

typedef struct conn {
    struct http_stub *server;
    int fd;
    pthread_t thread;
    atomic_bool done;
    struct conn *next;
} conn;

struct http_stub {
    http_stub_handler handler;
    void *ud;
    int listen_fd;
    int port;
    char url[64];
    pthread_t accept_thread;
    atomic_bool stopping;
    atomic_int requests;
    atomic_int connections;
    pthread_mutex_t lock; /* guards conns */
    conn *conns;
};

/* ---- small helpers ----------------------------------------------------------------------- */

static void sleep_ms_watch(http_stub *s, int ms) {
    while (ms > 0 && !atomic_load(&s->stopping)) {
        int step = ms < 5 ? ms : 5;
        struct timespec ts = {0, (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

static bool send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return false;
        p += k;
        n -= (size_t)k;
    }
    return true;
}

static const char *reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
    }
}

const char *http_stub_header(const http_stub_request *r, const char *name) {
    for (int i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->header_names[i], name) == 0) return r->header_values[i];
    return NULL;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool http_stub_query_param(const http_stub_request *r, const char *name, char *buf, size_t cap) {
    size_t nl = strlen(name);
    const char *q = r->query;
    while (*q) {
        const char *amp = strchr(q, '&');
        const char *end = amp ? amp : q + strlen(q);
        if ((size_t)(end - q) > nl && strncmp(q, name, nl) == 0 && q[nl] == '=') {
            size_t o = 0;
            for (const char *c = q + nl + 1; c < end; c++) {
                char ch = *c;
                if (ch == '+') ch = ' ';
                else if (ch == '%' && c + 2 < end && hexval(c[1]) >= 0 && hexval(c[2]) >= 0) {
                    ch = (char)(hexval(c[1]) * 16 + hexval(c[2]));
                    c += 2;
                }
                if (o + 1 >= cap) return false;
                buf[o++] = ch;
            }
            buf[o] = '\0';
            return true;
        }
        q = amp ? amp + 1 : end;
    }
    return false;
}

void http_stub_add_chunk(http_stub_response *resp, const char *data, size_t len, int delay_ms) {
    http_stub_chunk *nc = realloc(resp->chunks, (size_t)(resp->nchunks + 1) * sizeof *nc);
    if (!nc) abort();
    resp->chunks = nc;
    char *copy = malloc(len ? len : 1);
    if (!copy) abort();
    if (len) memcpy(copy, data, len);
    resp->chunks[resp->nchunks++] = (http_stub_chunk){copy, len, delay_ms};
}

static void response_free(http_stub_response *r) {
    dspy_str_free(&r->headers);
    dspy_str_free(&r->body);
    for (int i = 0; i < r->nchunks; i++) free(r->chunks[i].data);
    free(r->chunks);
}

/* ---- one connection ---------------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap;
} inbuf;

/* Reads more bytes into b; false on EOF, error or stop. */
static bool fill(conn *c, inbuf *b) {
    if (b->cap - b->len < 4096) {
        size_t nc = b->cap ? b->cap * 2 : 8192;
        char *nb = realloc(b->buf, nc + 1);
        if (!nb) return false;
        b->buf = nb;
        b->cap = nc;
    }
    for (;;) {
        ssize_t k = recv(c->fd, b->buf + b->len, b->cap - b->len, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0 || atomic_load(&c->server->stopping)) return false;
        b->len += (size_t)k;
        b->buf[b->len] = '\0';
        return true;
    }
}

static void trim(char **s, char *end) {
    while (**s == ' ' || **s == '\t') (*s)++;
    while (end > *s && (end[-1] == ' ' || end[-1] == '\t')) *--end = '\0';
}

static void send_simple(int fd, int status, const char *msg) {
    char out[256];
    int n = snprintf(out, sizeof out,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s",
                     status, reason(status), strlen(msg), msg);
    send_all(fd, out, (size_t)n);
}

/* Sends the response; false when the connection must close afterwards. */
static bool send_response(conn *c, http_stub_response *r, bool keep) {
    http_stub *s = c->server;
    if (r->delay_ms > 0) sleep_ms_watch(s, r->delay_ms);
    if (atomic_load(&s->stopping) || r->action == HTTP_STUB_DROP) return false;
    bool chunked = r->nchunks > 0;
    keep = keep && !r->close && r->action == HTTP_STUB_RESPOND;
    dspy_str h = DSPY_STR_INIT;
    dspy_str_appendf(&h, "HTTP/1.1 %d %s\r\n", r->status, reason(r->status));
    if (r->content_type) dspy_str_appendf(&h, "Content-Type: %s\r\n", r->content_type);
    if (chunked) dspy_str_append(&h, "Transfer-Encoding: chunked\r\n");
    else dspy_str_appendf(&h, "Content-Length: %zu\r\n", r->body.len);
    dspy_str_appendn(&h, dspy_str_cstr(&r->headers), r->headers.len);
    dspy_str_append(&h, keep ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n");
    bool whole = !chunked && r->action == HTTP_STUB_RESPOND;
    if (whole) dspy_str_appendn(&h, dspy_str_cstr(&r->body), r->body.len); /* one send */
    bool ok = dspy_str_ok(&h) && send_all(c->fd, h.ptr, h.len);
    dspy_str_free(&h);
    if (!ok) return false;
    if (whole) return keep;
    if (r->action == HTTP_STUB_CLOSE_MID_BODY) {
        if (chunked) {
            if (r->chunks[0].len) {
                char line[32];
                int n = snprintf(line, sizeof line, "%zx\r\n", r->chunks[0].len);
                send_all(c->fd, line, (size_t)n);
                send_all(c->fd, r->chunks[0].data, r->chunks[0].len / 2);
            }
        } else {
            send_all(c->fd, dspy_str_cstr(&r->body), r->body.len / 2);
        }
        return false;
    }
    for (int i = 0; i < r->nchunks; i++) {
        if (r->chunks[i].delay_ms > 0) sleep_ms_watch(s, r->chunks[i].delay_ms);
        if (atomic_load(&s->stopping)) return false;
        if (r->chunks[i].len == 0) continue; /* an empty chunk would end the body */
        char line[32];
        int n = snprintf(line, sizeof line, "%zx\r\n", r->chunks[i].len);
        if (!send_all(c->fd, line, (size_t)n) || !send_all(c->fd, r->chunks[i].data, r->chunks[i].len) ||
            !send_all(c->fd, "\r\n", 2))
            return false;
    }
    return send_all(c->fd, "0\r\n\r\n", 5) && keep;
}

/* Serves one request from b; false when the connection must close. */
static bool serve_one(conn *c, inbuf *b, int conn_index) {
    http_stub *s = c->server;
    char *eoh;
    while (!(eoh = strstr(b->buf ? b->buf : "", "\r\n\r\n"))) {
        if (b->len > MAX_HEADER_BYTES) {
            send_simple(c->fd, 431, "request headers too large");
            return false;
        }
        if (!fill(c, b)) return false;
    }
    size_t head_len = (size_t)(eoh - b->buf) + 4;
    char *head = malloc(head_len + 1);
    if (!head) return false;
    memcpy(head, b->buf, head_len);
    head[head_len] = '\0';
    char *names[MAX_HEADERS], *values[MAX_HEADERS];
    int nh = 0;
    char *line_end = strstr(head, "\r\n");
    *line_end = '\0';
    char *method = head, *sp1 = strchr(head, ' '), *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    bool ok = sp1 && sp2;
    if (ok) {
        *sp1 = '\0';
        *sp2 = '\0';
    }
    char *target = ok ? sp1 + 1 : (char *)"";
    const char *version = ok ? sp2 + 1 : "";
    for (char *p = line_end + 2; ok && *p && !(p[0] == '\r' && p[1] == '\n');) {
        char *e = strstr(p, "\r\n");
        *e = '\0';
        char *colon = strchr(p, ':');
        if (!colon || nh == MAX_HEADERS) {
            ok = false;
            break;
        }
        *colon = '\0';
        char *v = colon + 1;
        trim(&v, e);
        names[nh] = p;
        values[nh] = v;
        nh++;
        p = e + 2;
    }
    if (!ok) {
        send_simple(c->fd, 400, "malformed request");
        free(head);
        return false;
    }
    http_stub_request req = {0};
    req.method = method;
    req.target = target;
    req.header_names = (const char *const *)names;
    req.header_values = (const char *const *)values;
    req.nheaders = nh;
    req.conn_index = conn_index;
    char *path = strdup(target);
    if (!path) {
        free(head);
        return false;
    }
    char *qm = strchr(path, '?');
    req.query = qm ? target + (qm - path) + 1 : "";
    if (qm) *qm = '\0';
    req.path = path;
    const char *cl = http_stub_header(&req, "Content-Length");
    size_t body_len = cl ? strtoull(cl, NULL, 10) : 0;
    const char *te = http_stub_header(&req, "Transfer-Encoding");
    bool keep = strcmp(version, "HTTP/1.0") != 0;
    const char *conn_h = http_stub_header(&req, "Connection");
    if (conn_h && strcasecmp(conn_h, "close") == 0) keep = false;
    if ((te && strcasecmp(te, "identity") != 0) || body_len > MAX_BODY_BYTES) {
        send_simple(c->fd, te ? 501 : 413, te ? "chunked request bodies are not supported" : "body too large");
        free(path);
        free(head);
        return false;
    }
    const char *expect = http_stub_header(&req, "Expect");
    if (expect && strcasecmp(expect, "100-continue") == 0 && b->len - head_len < body_len)
        send_all(c->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    while (b->len - head_len < body_len) {
        if (!fill(c, b)) {
            free(path);
            free(head);
            return false;
        }
    }
    char *body = malloc(body_len + 1);
    if (!body) {
        free(path);
        free(head);
        return false;
    }
    memcpy(body, b->buf + head_len, body_len);
    body[body_len] = '\0';
    req.body = body;
    req.body_len = body_len;
    /* keep the bytes of a pipelined next request */
    size_t used = head_len + body_len;
    memmove(b->buf, b->buf + used, b->len - used);
    b->len -= used;
    b->buf[b->len] = '\0';
    req.index = atomic_fetch_add(&s->requests, 1);
    http_stub_response resp = {0};
    resp.status = 200;
    resp.content_type = "application/json";
    s->handler(s->ud, &req, &resp);
    bool again = send_response(c, &resp, keep);
    response_free(&resp);
    free(body);
    free(path);
    free(head);
    return again;
}

static void *conn_main(void *arg) {
    conn *c = arg;
    inbuf b = {0};
    for (int i = 0; !atomic_load(&c->server->stopping); i++)
        if (!serve_one(c, &b, i)) break;
    free(b.buf);
    shutdown(c->fd, SHUT_RDWR);
    atomic_store(&c->done, true);
    return NULL;
}

/* Joins and frees finished connections (all of them when `all`). */
static void reap(http_stub *s, bool all) {
    pthread_mutex_lock(&s->lock);
    conn **pp = &s->conns;
    while (*pp) {
        conn *c = *pp;
        if (all || atomic_load(&c->done)) {
            *pp = c->next;
            if (all) shutdown(c->fd, SHUT_RDWR);
            pthread_mutex_unlock(&s->lock);
            pthread_join(c->thread, NULL);
            close(c->fd);
            free(c);
            pthread_mutex_lock(&s->lock);
            pp = &s->conns;
        } else {
            pp = &c->next;
        }
    }
    pthread_mutex_unlock(&s->lock);
}

static void *accept_main(void *arg) {
    http_stub *s = arg;
    while (!atomic_load(&s->stopping)) {
        int fd = accept(s->listen_fd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            break;
        }
        if (atomic_load(&s->stopping)) {
            close(fd);
            break;
        }
        reap(s, false);
        conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        int one = 1; /* no Nagle: small responses must not wait for the client's delayed ACK */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->server = s;
        c->fd = fd;
        atomic_init(&c->done, false);
        atomic_fetch_add(&s->connections, 1);
        pthread_mutex_lock(&s->lock);
        if (pthread_create(&c->thread, NULL, conn_main, c) != 0) {
            pthread_mutex_unlock(&s->lock);
            close(fd);
            free(c);
            continue;
        }
        c->next = s->conns;
        s->conns = c;
        pthread_mutex_unlock(&s->lock);
    }
    return NULL;
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static int bind_local(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t al = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

dspy_status http_stub_start(http_stub_handler handler, void *ud, http_stub **out) {
    *out = NULL;
    http_stub *s = calloc(1, sizeof *s);
    if (!s) return dspy_fail(DSPY_ERR_NOMEM, "http_stub: out of memory");
    s->handler = handler;
    s->ud = ud;
    atomic_init(&s->stopping, false);
    atomic_init(&s->requests, 0);
    atomic_init(&s->connections, 0);
    pthread_mutex_init(&s->lock, NULL);
    s->listen_fd = bind_local(&s->port);
    if (s->listen_fd < 0 || listen(s->listen_fd, 128) != 0) {
        dspy_status st = dspy_fail(DSPY_ERR_IO, "http_stub: cannot listen on 127.0.0.1: %s", strerror(errno));
        if (s->listen_fd >= 0) close(s->listen_fd);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return st;
    }
    snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", s->port);
    if (pthread_create(&s->accept_thread, NULL, accept_main, s) != 0) {
        close(s->listen_fd);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return dspy_fail(DSPY_ERR_IO, "http_stub: cannot start the accept thread");
    }
    *out = s;
    return DSPY_OK;
}

void http_stub_stop(http_stub *s) {
    if (!s) return;
    atomic_store(&s->stopping, true);
    shutdown(s->listen_fd, SHUT_RDWR);
    pthread_join(s->accept_thread, NULL);
    close(s->listen_fd);
    reap(s, true);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

int http_stub_port(const http_stub *s) { return s->port; }
const char *http_stub_url(const http_stub *s) { return s->url; }
int http_stub_requests(const http_stub *s) { return atomic_load(&((http_stub *)s)->requests); }
int http_stub_connections(const http_stub *s) { return atomic_load(&((http_stub *)s)->connections); }

int http_stub_closed_port(void) {
    int port = 0;
    int fd = bind_local(&port);
    if (fd < 0) return 0;
    close(fd);
    return port;
}
