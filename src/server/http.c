/* http.c — HTTP/1.1 request parsing and the connection-per-thread server (see http.h).
 *
 * The accept loop runs on the caller of http_server_run and polls the listening socket and a
 * self-pipe (written by http_server_stop, which is therefore async-signal-safe). Each accepted
 * connection gets a detached thread; the server counts them under `mu` and signals `cv` when
 * one ends, which is what drain and free wait on. Connections over max_connections still get a
 * thread (up to HTTP_OVERFLOW_THREADS more) whose only job is to read the request and answer
 * 503, so the client sees the status instead of a reset; past that they are closed at once.
 * Sockets stay blocking: reads are preceded by poll with a 100 ms tick (so timeouts and stop
 * are noticed), sends rely on SO_SNDTIMEO for the write timeout and MSG_NOSIGNAL for EPIPE.
 * After an error answer the connection is closed gracefully: shutdown(SHUT_WR), then unread
 * request bytes are drained for a short while so the peer reads our answer instead of a RST.
 * Follows RFC 9112 §2-§9 for syntax, keep-alive and the 100-continue exchange.
 */
#include "server/http.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HTTP_OVERFLOW_THREADS 32 /* extra threads that only answer 503 */
#define HTTP_TICK_MS 100
#define HTTP_READ_CHUNK 65536
#define HTTP_LINGER_MS 1000
#define HTTP_LINGER_BYTES (64u << 20)

http_limits http_limits_default(void) {
    http_limits l = {.max_header = 32 * 1024,
                     .max_body = 8u * 1024 * 1024,
                     .read_timeout_ms = 30000,
                     .idle_timeout_ms = 60000,
                     .write_timeout_ms = 30000};
    return l;
}

const char *http_reason(int status) {
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* ---- parsing ---------------------------------------------------------------------------- */

static bool is_tchar(unsigned char c) {
    if (c >= '0' && c <= '9') return true;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool view_ieq(dspy_strv v, const char *z) {
    size_t n = strlen(z);
    return v.len == n && strncasecmp(v.ptr, z, n) == 0;
}

static int perr(http_parse_error *err, int status, const char *msg) {
    err->status = status;
    err->message = msg;
    return -1;
}

/* Parses the request line [p, p+n). */
static int parse_request_line(const char *p, size_t n, http_request *req, http_parse_error *err) {
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)p[i])) i++;
    if (i == 0 || i >= n || p[i] != ' ') return perr(err, 400, "malformed request line");
    req->method = dspy_strv_make(p, i);
    size_t t0 = ++i;
    while (i < n && p[i] != ' ') {
        unsigned char c = (unsigned char)p[i];
        if (c <= 0x20 || c == 0x7f) return perr(err, 400, "malformed request target");
        i++;
    }
    if (i == t0 || i >= n) return perr(err, 400, "malformed request line");
    req->target = dspy_strv_make(p + t0, i - t0);
    i++;
    const char *v = p + i;
    size_t vn = n - i;
    if (vn != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
        v[7] < '0' || v[7] > '9')
        return perr(err, 400, "malformed HTTP version in the request line");
    if (v[5] != '1') return perr(err, 505, "only HTTP/1.0 and HTTP/1.1 are supported");
    req->minor = v[7] == '0' ? 0 : 1;

    dspy_strv t = req->target;
    if (t.ptr[0] != '/') {
        size_t skip = 0;
        if (dspy_strv_starts_with(t, "http://")) skip = 7;
        else if (dspy_strv_starts_with(t, "https://")) skip = 8;
        if (skip) {
            const char *slash = memchr(t.ptr + skip, '/', t.len - skip);
            t = slash ? dspy_strv_make(slash, (size_t)(t.ptr + t.len - slash)) : dspy_strv_of("/");
        } else if (!dspy_strv_eqz(t, "*")) {
            return perr(err, 400, "malformed request target");
        }
    }
    const char *q = memchr(t.ptr, '?', t.len);
    if (q) {
        req->path = dspy_strv_make(t.ptr, (size_t)(q - t.ptr));
        req->query = dspy_strv_make(q + 1, (size_t)(t.ptr + t.len - q - 1));
    } else {
        req->path = t;
        req->query = dspy_strv_make(t.ptr + t.len, 0);
    }
    return 1;
}

static int parse_header_line(const char *p, size_t n, http_request *req, http_parse_error *err) {
    if (p[0] == ' ' || p[0] == '\t') return perr(err, 400, "obsolete header line folding");
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)p[i])) i++;
    if (i == 0 || i >= n || p[i] != ':') return perr(err, 400, "malformed header line");
    if (req->nheaders == HTTP_MAX_HEADERS) return perr(err, 431, "too many header lines");
    size_t a = i + 1, b = n;
    while (a < b && (p[a] == ' ' || p[a] == '\t')) a++;
    while (b > a && (p[b - 1] == ' ' || p[b - 1] == '\t')) b--;
    for (size_t k = a; k < b; k++) {
        unsigned char c = (unsigned char)p[k];
        if ((c < 0x20 && c != '\t') || c == 0x7f) return perr(err, 400, "control character in a header value");
    }
    http_header *h = &req->headers[req->nheaders++];
    h->name = dspy_strv_make(p, i);
    h->value = dspy_strv_make(p + a, b - a);
    return 1;
}

dspy_strv http_header_get(const http_request *req, const char *name) {
    for (size_t i = 0; i < req->nheaders; i++)
        if (view_ieq(req->headers[i].name, name)) return req->headers[i].value;
    return dspy_strv_make(NULL, 0);
}

/* true if the comma-separated token list `v` holds `tok` (case-insensitive). */
static bool list_has(dspy_strv v, const char *tok) {
    size_t i = 0;
    while (i < v.len) {
        size_t j = i;
        while (j < v.len && v.ptr[j] != ',') j++;
        dspy_strv item = dspy_strv_strip(dspy_strv_make(v.ptr + i, j - i));
        if (view_ieq(item, tok)) return true;
        i = j + 1;
    }
    return false;
}

static int check_semantics(http_request *req, const http_limits *limits, http_parse_error *err) {
    bool conn_close = false, conn_keep = false;
    for (size_t i = 0; i < req->nheaders; i++) {
        const http_header *h = &req->headers[i];
        if (view_ieq(h->name, "Content-Length")) {
            dspy_strv v = h->value;
            if (v.len == 0) return perr(err, 400, "empty Content-Length");
            size_t val = 0;
            for (size_t k = 0; k < v.len; k++) {
                if (v.ptr[k] < '0' || v.ptr[k] > '9') return perr(err, 400, "Content-Length is not a number");
                if (val > (SIZE_MAX - 9) / 10) return perr(err, 413, "request body is too large");
                val = val * 10 + (size_t)(v.ptr[k] - '0');
            }
            if (req->has_length && val != req->content_length)
                return perr(err, 400, "conflicting Content-Length headers");
            req->has_length = true;
            req->content_length = val;
        } else if (view_ieq(h->name, "Transfer-Encoding")) {
            return perr(err, 411, "chunked or encoded request bodies are not supported; send the body with Content-Length");
        } else if (view_ieq(h->name, "Connection")) {
            if (list_has(h->value, "close")) conn_close = true;
            if (list_has(h->value, "keep-alive")) conn_keep = true;
        } else if (view_ieq(h->name, "Expect")) {
            if (view_ieq(h->value, "100-continue")) req->expect_continue = true;
        }
    }
    req->keep_alive = !conn_close && (req->minor >= 1 || conn_keep);
    if (!req->has_length && (dspy_strv_eqz(req->method, "POST") || dspy_strv_eqz(req->method, "PUT") ||
                             dspy_strv_eqz(req->method, "PATCH")))
        return perr(err, 411, "a request body needs a Content-Length header");
    if (req->content_length > limits->max_body) return perr(err, 413, "request body is too large");
    return 1;
}

int http_parse_head(const char *buf, size_t len, const http_limits *limits, http_request *req,
                    http_parse_error *err) {
    memset(req, 0, sizeof *req);
    if (len == 0) return 0;
    size_t pos = 0;
    bool have_line = false;
    for (;;) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        if (!nl) {
            if (len > limits->max_header) return perr(err, 431, "request header section is too large");
            return 0;
        }
        size_t end = (size_t)(nl - buf);
        if (end + 1 > limits->max_header) return perr(err, 431, "request header section is too large");
        size_t n = end - pos;
        if (n > 0 && buf[end - 1] == '\r') n--;
        const char *line = buf + pos;
        pos = end + 1;
        if (!have_line) {
            if (n == 0) continue; /* RFC 9112 §2.2: ignore empty lines before the request line */
            if (parse_request_line(line, n, req, err) < 0) return -1;
            have_line = true;
            continue;
        }
        if (n == 0) break;
        if (parse_header_line(line, n, req, err) < 0) return -1;
    }
    req->head_len = pos;
    return check_semantics(req, limits, err);
}

/* ---- the server ------------------------------------------------------------------------- */

struct http_server {
    http_server_config cfg;
    char *host;
    int listen_fd;
    int port;
    int wake[2];
    atomic_bool stopping;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a connection thread ended */
    int nconns;        /* threads serving requests */
    int noverflow;     /* threads answering 503 */
};

enum { ANSWER_NONE, ANSWER_DONE, ANSWER_STREAMING };

struct http_conn {
    http_server *s;
    int fd;
    char *buf;
    size_t len, cap;
    int answer;
    bool close_after; /* send "Connection: close" and close after this answer */
    bool broken;      /* a write failed: close without further writes */
    bool raw_stream;  /* HTTP/1.0 client: stream without chunking, end by closing */
    bool overflow;    /* over the connection cap: answer 503 to the first request */
};

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static dspy_status send_all(http_conn *c, const char *p, size_t n) {
    if (c->broken) return dspy_fail(DSPY_ERR_IO, "http: connection is closed");
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            c->broken = true;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return dspy_fail(DSPY_ERR_TIMEOUT, "http: client did not read the answer in time");
            return dspy_fail(DSPY_ERR_IO, "http: send failed: %s", strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return DSPY_OK;
}

static void head_common(http_conn *c, dspy_str *h, int status) {
    if (http_server_stopping(c->s)) c->close_after = true;
    dspy_str_appendf(h, "HTTP/1.1 %d %s\r\nServer: dspy.c\r\n", status, http_reason(status));
}

dspy_status http_respond(http_conn *c, int status, const char *content_type, const char *body,
                         size_t len, const char *extra_headers) {
    if (c->answer != ANSWER_NONE) return dspy_fail(DSPY_ERR_STATE, "http: the request was already answered");
    c->answer = ANSWER_DONE;
    dspy_str h = DSPY_STR_INIT;
    head_common(c, &h, status);
    if (content_type) dspy_str_appendf(&h, "Content-Type: %s\r\n", content_type);
    dspy_str_appendf(&h, "Content-Length: %zu\r\nConnection: %s\r\n", len,
                     c->close_after ? "close" : "keep-alive");
    if (extra_headers) dspy_str_append(&h, extra_headers);
    dspy_str_append(&h, "\r\n");
    if (len) dspy_str_appendn(&h, body, len);
    if (!dspy_str_ok(&h)) {
        dspy_str_free(&h);
        c->broken = true;
        return dspy_fail(DSPY_ERR_NOMEM, "http: out of memory building an answer");
    }
    dspy_status st = send_all(c, h.ptr, h.len);
    dspy_str_free(&h);
    return st;
}

dspy_status http_stream_begin(http_conn *c, int status, const char *content_type) {
    if (c->answer != ANSWER_NONE) return dspy_fail(DSPY_ERR_STATE, "http: the request was already answered");
    c->answer = ANSWER_STREAMING;
    dspy_str h = DSPY_STR_INIT;
    head_common(c, &h, status);
    if (c->raw_stream) c->close_after = true;
    if (content_type) dspy_str_appendf(&h, "Content-Type: %s\r\n", content_type);
    dspy_str_appendf(&h, "Cache-Control: no-cache\r\n%sConnection: %s\r\n\r\n",
                     c->raw_stream ? "" : "Transfer-Encoding: chunked\r\n",
                     c->close_after ? "close" : "keep-alive");
    if (!dspy_str_ok(&h)) {
        dspy_str_free(&h);
        c->broken = true;
        return dspy_fail(DSPY_ERR_NOMEM, "http: out of memory building an answer");
    }
    dspy_status st = send_all(c, h.ptr, h.len);
    dspy_str_free(&h);
    return st;
}

dspy_status http_stream_write(http_conn *c, const char *data, size_t len) {
    if (c->answer != ANSWER_STREAMING) return dspy_fail(DSPY_ERR_STATE, "http: no stream is open");
    if (len == 0) return DSPY_OK; /* an empty chunk would end the stream */
    if (c->raw_stream) return send_all(c, data, len);
    char size[32];
    int k = snprintf(size, sizeof size, "%zx\r\n", len);
    dspy_str h = DSPY_STR_INIT;
    dspy_str_appendn(&h, size, (size_t)k);
    dspy_str_appendn(&h, data, len);
    dspy_str_append(&h, "\r\n");
    if (!dspy_str_ok(&h)) {
        dspy_str_free(&h);
        c->broken = true;
        return dspy_fail(DSPY_ERR_NOMEM, "http: out of memory building a chunk");
    }
    dspy_status st = send_all(c, h.ptr, h.len);
    dspy_str_free(&h);
    return st;
}

dspy_status http_stream_end(http_conn *c) {
    if (c->answer != ANSWER_STREAMING) return dspy_fail(DSPY_ERR_STATE, "http: no stream is open");
    c->answer = ANSWER_DONE;
    if (c->raw_stream) return DSPY_OK;
    return send_all(c, "0\r\n\r\n", 5);
}

bool http_conn_peer_closed(http_conn *c) {
    if (c->broken) return true;
    struct pollfd p = {.fd = c->fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLERR | POLLHUP | POLLRDHUP)) return true;
    char b;
    ssize_t r = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r == 0) return true;
    if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return true;
    return false;
}

http_server *http_conn_server(http_conn *c) { return c->s; }

bool http_server_stopping(const http_server *s) { return atomic_load(&s->stopping); }

void http_server_stop(http_server *s) {
    atomic_store(&s->stopping, true);
    char b = 1;
    ssize_t r = write(s->wake[1], &b, 1);
    (void)r; /* a full pipe already holds a wake-up */
}

int http_server_port(const http_server *s) { return s->port; }

static void send_error(http_conn *c, int status, const char *msg) {
    c->close_after = true;
    if (c->s->cfg.error) {
        c->s->cfg.error(c->s->cfg.user, c, status, msg);
    }
    if (c->answer == ANSWER_NONE) {
        dspy_str b = DSPY_STR_INIT;
        dspy_str_appendf(&b, "%d %s: %s\n", status, http_reason(status), msg);
        http_respond(c, status, "text/plain; charset=utf-8", dspy_str_cstr(&b), b.len, NULL);
        dspy_str_free(&b);
    }
}

/* Closes after an error answer: stop sending, drain what the peer still sends for a short
 * while so it reads the answer rather than a reset, then close. */
static void linger_close(int fd) {
    shutdown(fd, SHUT_WR);
    int64_t deadline = now_ms() + HTTP_LINGER_MS;
    size_t total = 0;
    char tmp[16384];
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0) break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)left);
        if (r <= 0) break;
        ssize_t n = recv(fd, tmp, sizeof tmp, 0);
        if (n <= 0) break;
        total += (size_t)n;
        if (total > HTTP_LINGER_BYTES) break;
    }
    close(fd);
}

/* Reads more bytes into c->buf (at most `limit` bytes buffered). Returns 1 on data, 0 on EOF
 * or error, -1 on deadline, -2 when the server is stopping and `stop_ok` says to give up. */
static int read_more(http_conn *c, size_t limit, int64_t deadline, bool stop_ok) {
    for (;;) {
        if (stop_ok && http_server_stopping(c->s)) return -2;
        int64_t left = deadline - now_ms();
        if (left <= 0) return -1;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int r = poll(&p, 1, left < HTTP_TICK_MS ? (int)left : HTTP_TICK_MS);
        if (r < 0 && errno != EINTR) return 0;
        if (r <= 0) continue;
        if (c->len >= limit) return 1; /* caller sees the limit */
        size_t want = limit - c->len;
        if (want > HTTP_READ_CHUNK) want = HTTP_READ_CHUNK;
        if (c->cap - c->len < want) {
            size_t ncap = c->cap ? c->cap : 4096;
            while (ncap - c->len < want) ncap *= 2;
            char *nb = realloc(c->buf, ncap);
            if (!nb) return 0;
            c->buf = nb;
            c->cap = ncap;
        }
        ssize_t n = recv(c->fd, c->buf + c->len, want, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) return 0;
        c->len += (size_t)n;
        return 1;
    }
}

/* Serves requests on one connection until it closes. */
static void serve_connection(http_conn *c) {
    http_server *s = c->s;
    const http_limits *lim = &s->cfg.limits;
    http_request *req = malloc(sizeof *req);
    if (!req) return;
    for (;;) {
        /* head */
        int64_t idle_deadline = now_ms() + lim->idle_timeout_ms;
        int64_t read_deadline = c->len ? now_ms() + lim->read_timeout_ms : 0;
        http_parse_error perr_ = {0, NULL};
        int r;
        bool closed = false;
        while ((r = http_parse_head(c->buf, c->len, lim, req, &perr_)) == 0) {
            bool idle = c->len == 0 || (c->len <= 2 && (c->buf[0] == '\r' || c->buf[0] == '\n'));
            int rr = read_more(c, lim->max_header + 1, idle ? idle_deadline : read_deadline, idle);
            if (rr == 1 && read_deadline == 0) read_deadline = now_ms() + lim->read_timeout_ms;
            if (rr == -1 && !idle) {
                send_error(c, 408, "the request was not received in time");
                closed = true;
                break;
            }
            if (rr != 1) { /* EOF, idle timeout or stopping: close without an answer */
                closed = true;
                break;
            }
        }
        if (closed) break;
        if (r < 0) {
            c->raw_stream = req->minor == 0;
            send_error(c, perr_.status, perr_.message);
            break;
        }
        if (c->overflow) {
            send_error(c, 503, "the server has too many open connections; retry later");
            break;
        }
        /* body */
        size_t need = req->head_len + req->content_length;
        if (req->expect_continue && c->len < need) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            if (send_all(c, cont, sizeof cont - 1) != DSPY_OK) break;
        }
        if (read_deadline == 0) read_deadline = now_ms() + lim->read_timeout_ms;
        while (c->len < need) {
            int rr = read_more(c, need, read_deadline, false);
            if (rr == -1) {
                send_error(c, 408, "the request body was not received in time");
                closed = true;
                break;
            }
            if (rr != 1) {
                closed = true;
                break;
            }
        }
        if (closed) break;
        /* the buffer may have moved: re-parse the head over it (cheap, views refreshed) */
        if (http_parse_head(c->buf, c->len, lim, req, &perr_) != 1) break;
        req->body = c->buf + req->head_len;
        req->body_len = req->content_length;
        c->answer = ANSWER_NONE;
        c->close_after = !req->keep_alive || http_server_stopping(s);
        c->raw_stream = req->minor == 0;
        s->cfg.handler(s->cfg.user, req, c);
        if (c->answer == ANSWER_NONE && !c->broken) send_error(c, 500, "the handler sent no answer");
        if (c->answer == ANSWER_STREAMING) c->broken = true;
        if (c->broken || c->close_after) break;
        memmove(c->buf, c->buf + need, c->len - need);
        c->len -= need;
    }
    free(req);
}

typedef struct conn_arg {
    http_server *s;
    int fd;
    bool overflow;
} conn_arg;

static void *conn_main(void *p) {
    conn_arg a = *(conn_arg *)p;
    free(p);
    http_conn c = {.s = a.s, .fd = a.fd, .overflow = a.overflow};
    serve_connection(&c);
    if (c.close_after && !c.broken) linger_close(c.fd);
    else close(c.fd);
    free(c.buf);
    http_server *s = a.s;
    pthread_mutex_lock(&s->mu);
    if (a.overflow) s->noverflow--;
    else s->nconns--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

dspy_status http_server_new(const http_server_config *cfg, http_server **out) {
    *out = NULL;
    if (!cfg || !cfg->handler || cfg->max_connections < 1 || cfg->port < 0 || cfg->port > 65535)
        return dspy_fail(DSPY_ERR_ARG, "http: bad server config (a handler, max_connections >= 1 and a port in 0..65535 are needed)");
    http_server *s = calloc(1, sizeof *s);
    if (!s) return dspy_fail(DSPY_ERR_NOMEM, "http: out of memory");
    s->cfg = *cfg;
    s->listen_fd = -1;
    s->wake[0] = s->wake[1] = -1;
    atomic_init(&s->stopping, false);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    s->host = strdup(cfg->host ? cfg->host : "127.0.0.1");
    s->cfg.host = s->host;
    dspy_status st = DSPY_OK;
    struct addrinfo *res = NULL;
    if (!s->host) {
        st = dspy_fail(DSPY_ERR_NOMEM, "http: out of memory");
        goto fail;
    }
    if (pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        st = dspy_fail(DSPY_ERR_IO, "http: pipe: %s", strerror(errno));
        goto fail;
    }
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    int gai = getaddrinfo(s->host, port, &hints, &res);
    if (gai != 0) {
        st = dspy_fail(DSPY_ERR_IO, "http: cannot resolve host '%s': %s; pass a numeric address such as 127.0.0.1",
                       s->host, gai_strerror(gai));
        goto fail;
    }
    int last_errno = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 128) == 0) {
            s->listen_fd = fd;
            break;
        }
        last_errno = errno;
        close(fd);
    }
    if (s->listen_fd < 0) {
        st = dspy_fail(DSPY_ERR_IO, "http: cannot listen on %s:%d: %s", s->host, cfg->port, strerror(last_errno));
        goto fail;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(s->listen_fd, (struct sockaddr *)&ss, &sl) != 0) {
        st = dspy_fail(DSPY_ERR_IO, "http: getsockname: %s", strerror(errno));
        goto fail;
    }
    s->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    freeaddrinfo(res);
    *out = s;
    return DSPY_OK;
fail:
    if (res) freeaddrinfo(res);
    http_server_free(s);
    return st;
}

static void start_connection(http_server *s, int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {.tv_sec = s->cfg.limits.write_timeout_ms / 1000,
                         .tv_usec = (s->cfg.limits.write_timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    pthread_mutex_lock(&s->mu);
    bool overflow = s->nconns >= s->cfg.max_connections;
    if (overflow && s->noverflow >= HTTP_OVERFLOW_THREADS) {
        pthread_mutex_unlock(&s->mu);
        close(fd);
        return;
    }
    if (overflow) s->noverflow++;
    else s->nconns++;
    pthread_mutex_unlock(&s->mu);
    conn_arg *a = malloc(sizeof *a);
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    bool started = false;
    if (a) {
        a->s = s;
        a->fd = fd;
        a->overflow = overflow;
        started = pthread_create(&th, &attr, conn_main, a) == 0;
    }
    pthread_attr_destroy(&attr);
    if (!started) {
        free(a);
        close(fd);
        pthread_mutex_lock(&s->mu);
        if (overflow) s->noverflow--;
        else s->nconns--;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
}

dspy_status http_server_run(http_server *s) {
    dspy_status st = DSPY_OK;
    while (!http_server_stopping(s)) {
        struct pollfd p[2] = {{.fd = s->listen_fd, .events = POLLIN}, {.fd = s->wake[0], .events = POLLIN}};
        int r = poll(p, 2, -1);
        if (r < 0) {
            if (errno == EINTR) continue;
            st = dspy_fail(DSPY_ERR_IO, "http: poll: %s", strerror(errno));
            break;
        }
        if (p[1].revents) break;
        if (!(p[0].revents & POLLIN)) continue;
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED || errno == EPROTO) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                usleep(50 * 1000);
                continue;
            }
            st = dspy_fail(DSPY_ERR_IO, "http: accept: %s", strerror(errno));
            break;
        }
        start_connection(s, fd);
    }
    atomic_store(&s->stopping, true);
    if (s->listen_fd >= 0) close(s->listen_fd);
    s->listen_fd = -1;
    return st;
}

bool http_server_drain(http_server *s, int timeout_ms) {
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    if (timeout_ms >= 0) {
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&s->mu);
    while (s->nconns + s->noverflow > 0) {
        if (timeout_ms < 0) pthread_cond_wait(&s->cv, &s->mu);
        else if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) == ETIMEDOUT) break;
    }
    bool none = s->nconns + s->noverflow == 0;
    pthread_mutex_unlock(&s->mu);
    return none;
}

int http_server_connections(http_server *s) {
    pthread_mutex_lock(&s->mu);
    int n = s->nconns + s->noverflow;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void http_server_free(http_server *s) {
    if (!s) return;
    atomic_store(&s->stopping, true);
    http_server_drain(s, -1);
    if (s->listen_fd >= 0) close(s->listen_fd);
    if (s->wake[0] >= 0) close(s->wake[0]);
    if (s->wake[1] >= 0) close(s->wake[1]);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->host);
    free(s);
}
