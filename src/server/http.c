/* http.c — the HTTP/1.1 server on libmicrohttpd (see http.h).
 *
 * Threads:
 *   - libmicrohttpd's event thread (epoll) reads and writes every socket and calls on_access,
 *     the content reader and the notify callbacks;
 *   - one worker thread per request in progress runs the handler; a worker that finishes waits
 *     up to HTTP_WORKER_IDLE_MS for the next request before it exits (a thread cache: a
 *     request then starts without a thread being created, ~0.1 ms of each on the H200's host);
 *   - a reaper thread enforces the request and idle deadlines (libmicrohttpd only knows an
 *     inactivity timeout, which a client sending one byte every few seconds never reaches).
 * Objects:
 *   - conn_track, one per open connection (libmicrohttpd's socket context), in a list under
 *     s->mu: the socket, when the connection became idle, when its current request started.
 *     The reaper shuts down (never closes) sockets past a deadline; libmicrohttpd then sees the
 *     socket end and cleans up. Entries leave the list in the CLOSED notification, which
 *     libmicrohttpd sends before it closes the socket, so the reaper never touches a socket
 *     number that was reused.
 *   - http_conn, one per request (libmicrohttpd's request context), reference counted (event
 *     thread + worker + streaming response). c->mu guards the answer handed from the worker to
 *     the event thread. The worker never calls into libmicrohttpd except MHD_resume_connection,
 *     and only on a connection it knows is suspended (c->suspended, set under c->mu by the event
 *     thread in the same critical section that suspended it), as the library requires.
 * A request's answer: the worker stores a finished response (or stream state) and resumes the
 * connection; libmicrohttpd calls on_access again, which queues it. A stream's content reader
 * hands out queued bytes and suspends the connection when it has none.
 */
#include "server/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
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

#include "dspy/clock.h"

#define HTTP_HARD_EXTRA 64            /* connections above max_connections refused at accept */
#define HTTP_REAP_MS 50               /* how often deadlines are checked */
#define HTTP_STREAM_HIGH (1u << 20)   /* unsent stream bytes before dspy_http_stream_write waits */
#define HTTP_WORKER_STACK (512 * 1024)
#define HTTP_WORKER_IDLE_MS 10000     /* an idle worker waits this long for a request */

http_limits dspy_http_limits_default(void) {
    http_limits l = {.max_header = 32 * 1024,
                     .max_body = 8u * 1024 * 1024,
                     .read_timeout_ms = 30000,
                     .idle_timeout_ms = 60000,
                     .write_timeout_ms = 30000};
    return l;
}

const char *dspy_http_reason(int status) {
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
    case 421: return "Misdirected Request";
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

/* ---- objects ------------------------------------------------------------------------------ */

typedef struct conn_track {
    int fd;
    int64_t idle_since;    /* when the last request ended (or the connection opened) */
    int64_t request_start; /* when the current request line arrived; 0 = none */
    bool busy;             /* a worker has the request: no deadline */
    bool reaped;           /* shut down once already */
    struct conn_track *prev, *next;
} conn_track;

typedef enum { ST_READING, ST_WORKING, ST_ANSWERED } conn_state;
typedef enum { ANS_NONE, ANS_WHOLE, ANS_STREAM, ANS_DONE } answer_kind;

struct http_conn {
    http_server *s;
    struct MHD_Connection *mc;
    conn_track *track;
    int fd;
    char peer[INET6_ADDRSTRLEN];
    atomic_int refs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* event thread only */
    conn_state state;
    bool headers_seen;
    bool too_large;
    bool in_access; /* inside on_access: dspy_http_respond queues directly */
    bool http10;
    dspy_str method, url, body;
    http_request req;
    /* under mu */
    bool suspended;   /* suspended by us; the worker may resume it */
    bool gone;        /* libmicrohttpd is done with the request (answered, or the client left) */
    bool peer_closed; /* the handler saw the client go: close without an answer */
    answer_kind answer;
    struct MHD_Response *resp; /* a whole answer waiting to be queued */
    int status;
    dspy_str out;     /* stream bytes not yet handed to libmicrohttpd */
    size_t out_off;
    bool stream_begun, stream_queued, stream_end, stream_error;
    bool worker_done;
    bool close_after; /* an error answer: close the connection after it */
    char *extra;      /* "Name: value\r\n" lines added to the answer (dspy_http_conn_add_headers) */
    char stream_ctype[128];
    struct http_conn *work_next; /* under s->mu: the next request handed to an idle worker */
};

/* A worker thread: joined once it leaves its loop (see worker_main). */
typedef struct http_worker {
    pthread_t th;
    http_conn *first;         /* the request it was started for */
    struct http_worker *next; /* under s->mu: in s->exited */
} http_worker;

struct http_server {
    http_server_config cfg;
    char *host;
    int port;
    int listen_fd;
    int wake[2]; /* self-pipe: dspy_http_server_stop writes, run polls */
    atomic_bool stopping;
    struct MHD_Daemon *d;
    pthread_mutex_t mu; /* tracks, counters */
    pthread_cond_t cv;  /* signalled when a connection closes or a worker ends */
    conn_track *tracks;
    int n_conns;
    int n_busy;
    /* the worker thread cache, under mu: requests handed to idle workers, and the threads */
    pthread_cond_t work_cv; /* signalled when a request is handed over or the server stops */
    http_conn *handoff;     /* requests handed to idle workers, not yet taken (linked by work_next) */
    int n_idle;             /* idle workers no request is handed to yet */
    int n_workers;          /* worker threads alive */
    http_worker *exited;    /* workers that left the loop, to be joined (the reaper, the free) */
    bool workers_quit;
    bool reaper_quit;
    bool reaper_started;
    pthread_t reaper;
};

static void conn_release(http_conn *c) {
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1) return;
    if (c->resp) MHD_destroy_response(c->resp);
    free(c->extra);
    dspy_str_free(&c->method);
    dspy_str_free(&c->url);
    dspy_str_free(&c->body);
    dspy_str_free(&c->out);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

/* Under c->mu: lets the event thread look at the connection again. */
static void wake_locked(http_conn *c) {
    if (c->suspended) {
        c->suspended = false;
        MHD_resume_connection(c->mc);
    }
    pthread_cond_broadcast(&c->cv);
}

dspy_strv dspy_http_header_get(const http_request *req, const char *name) {
    size_t n = 0;
    const char *v = NULL;
    if (req->conn && MHD_lookup_connection_value_n(req->conn->mc, MHD_HEADER_KIND, name, strlen(name), &v, &n) == MHD_YES &&
        v)
        return dspy_strv_make(v, n);
    return dspy_strv_make(NULL, 0);
}

http_server *dspy_http_conn_server(http_conn *c) { return c->s; }
const char *dspy_http_conn_peer(const http_conn *c) { return c->peer; }

dspy_status dspy_http_conn_add_headers(http_conn *c, const char *lines) {
    pthread_mutex_lock(&c->mu);
    size_t a = c->extra ? strlen(c->extra) : 0, b = strlen(lines);
    char *n = realloc(c->extra, a + b + 1);
    if (n) {
        memcpy(n + a, lines, b + 1);
        c->extra = n;
    }
    pthread_mutex_unlock(&c->mu);
    return n ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "http: out of memory");
}
bool dspy_http_server_stopping(const http_server *s) { return atomic_load(&s->stopping); }
int dspy_http_server_port(const http_server *s) { return s->port; }

void dspy_http_server_stop(http_server *s) {
    atomic_store(&s->stopping, true);
    char b = 1;
    ssize_t r = write(s->wake[1], &b, 1);
    (void)r; /* a full pipe already holds a wake-up */
}

/* ---- answers ------------------------------------------------------------------------------ */

/* Adds "Name: value\r\n" lines to a response. */
static bool add_headers(struct MHD_Response *r, const char *lines) {
    while (lines && *lines) {
        const char *eol = strstr(lines, "\r\n");
        size_t n = eol ? (size_t)(eol - lines) : strlen(lines);
        const char *colon = memchr(lines, ':', n);
        if (colon) {
            char name[128], value[1024];
            size_t nl = (size_t)(colon - lines), vl = n - nl - 1;
            const char *v = colon + 1;
            while (vl && (*v == ' ' || *v == '\t')) v++, vl--;
            if (nl < sizeof name && vl < sizeof value) {
                memcpy(name, lines, nl);
                name[nl] = '\0';
                memcpy(value, v, vl);
                value[vl] = '\0';
                if (MHD_add_response_header(r, name, value) != MHD_YES) return false;
            }
        }
        lines = eol ? eol + 2 : lines + n;
    }
    return true;
}

static void common_headers(http_conn *c, struct MHD_Response *r, const char *content_type) {
    if (content_type) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (dspy_http_server_stopping(c->s) || c->close_after) MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    if (c->extra) add_headers(r, c->extra);
}

/* Event thread: queues what the worker left, if anything. Returns false to drop the
 * connection. */
static bool queue_answer_locked(http_conn *c);

/* With c->mu held: DSPY_OK when c may still be answered (the lock stays held); otherwise the
 * lock is released and the error says why (answered already; the client gone, which also
 * closes the answer). */
static dspy_status answer_open_locked(http_conn *c) {
    if (c->answer != ANS_NONE) {
        pthread_mutex_unlock(&c->mu);
        return dspy_fail(DSPY_ERR_STATE, "http: the request was already answered");
    }
    if (c->gone || c->peer_closed) {
        c->answer = ANS_DONE;
        pthread_mutex_unlock(&c->mu);
        return dspy_fail(DSPY_ERR_IO, "http: the client is gone");
    }
    return DSPY_OK;
}

dspy_status dspy_http_respond(http_conn *c, int status, const char *content_type, const char *body, size_t len,
                              const char *extra_headers) {
    pthread_mutex_lock(&c->mu);
    dspy_status st0 = answer_open_locked(c);
    if (st0) return st0;
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)(body ? body : ""), MHD_RESPMEM_MUST_COPY);
    if (!r) {
        pthread_mutex_unlock(&c->mu);
        return dspy_fail(DSPY_ERR_NOMEM, "http: out of memory building an answer");
    }
    common_headers(c, r, content_type);
    add_headers(r, extra_headers);
    c->resp = r;
    c->status = status;
    c->answer = ANS_WHOLE;
    if (c->in_access) queue_answer_locked(c);
    else wake_locked(c);
    pthread_mutex_unlock(&c->mu);
    return DSPY_OK;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    http_conn *c = cls;
    pthread_mutex_lock(&c->mu);
    ssize_t r;
    size_t avail = c->out.len - c->out_off;
    if (avail) {
        size_t n = avail < max ? avail : max;
        memcpy(buf, c->out.ptr + c->out_off, n);
        c->out_off += n;
        if (c->out_off == c->out.len) {
            dspy_str_clear(&c->out);
            c->out_off = 0;
        }
        pthread_cond_broadcast(&c->cv);
        r = (ssize_t)n;
    } else if (c->stream_error || c->peer_closed) {
        r = MHD_CONTENT_READER_END_WITH_ERROR;
    } else if (c->stream_end) {
        r = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        /* nothing to send yet: sleep until the worker writes (returning 0 without suspending
         * would make the event loop spin) */
        MHD_suspend_connection(c->mc);
        c->suspended = true;
        r = 0;
    }
    pthread_mutex_unlock(&c->mu);
    return r;
}

static void stream_reader_free(void *cls) { conn_release(cls); }

static bool queue_answer_locked(http_conn *c) {
    if (c->peer_closed) return false;
    if (c->answer == ANS_WHOLE && c->resp) {
        enum MHD_Result ok = MHD_queue_response(c->mc, (unsigned)c->status, c->resp);
        MHD_destroy_response(c->resp);
        c->resp = NULL;
        c->state = ST_ANSWERED;
        return ok == MHD_YES;
    }
    if (c->stream_begun && !c->stream_queued) {
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_reader, c,
                                                                   stream_reader_free);
        if (!r) return false;
        atomic_fetch_add(&c->refs, 1); /* dropped by stream_reader_free */
        common_headers(c, r, c->stream_ctype[0] ? c->stream_ctype : NULL);
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        enum MHD_Result ok = MHD_queue_response(c->mc, (unsigned)c->status, r);
        MHD_destroy_response(r);
        c->stream_queued = true;
        c->state = ST_ANSWERED;
        return ok == MHD_YES;
    }
    return true;
}

dspy_status dspy_http_stream_begin(http_conn *c, int status, const char *content_type) {
    pthread_mutex_lock(&c->mu);
    dspy_status st0 = answer_open_locked(c);
    if (st0) return st0;
    c->answer = ANS_STREAM;
    c->stream_begun = true;
    c->status = status;
    snprintf(c->stream_ctype, sizeof c->stream_ctype, "%s", content_type ? content_type : "");
    if (c->in_access) queue_answer_locked(c);
    else wake_locked(c);
    pthread_mutex_unlock(&c->mu);
    return DSPY_OK;
}

dspy_status dspy_http_stream_write(http_conn *c, const char *data, size_t len) {
    pthread_mutex_lock(&c->mu);
    dspy_status st = DSPY_OK;
    if (c->answer != ANS_STREAM) {
        st = dspy_fail(DSPY_ERR_STATE, "http: no stream is open");
        goto done;
    }
    if (len == 0) goto done; /* an empty chunk would end the stream */
    struct timespec dl;
    dspy_deadline_in(&dl, c->s->cfg.limits.write_timeout_ms);
    /* back-pressure: a client that does not read does not make the server buffer without end */
    while (!c->gone && !c->stream_error && c->out.len - c->out_off > HTTP_STREAM_HIGH)
        if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) == ETIMEDOUT) {
            c->stream_error = true;
            wake_locked(c);
            break;
        }
    if (c->gone || c->stream_error) {
        st = dspy_fail(DSPY_ERR_IO, "http: the client is gone or does not read");
        goto done;
    }
    dspy_str_appendn(&c->out, data, len);
    if (!dspy_str_ok(&c->out)) {
        c->stream_error = true;
        wake_locked(c);
        st = dspy_fail(DSPY_ERR_NOMEM, "http: out of memory queueing a chunk");
        goto done;
    }
    wake_locked(c);
done:
    pthread_mutex_unlock(&c->mu);
    return st;
}

dspy_status dspy_http_stream_end(http_conn *c) {
    pthread_mutex_lock(&c->mu);
    dspy_status st = DSPY_OK;
    if (c->answer != ANS_STREAM) st = dspy_fail(DSPY_ERR_STATE, "http: no stream is open");
    else if (c->gone || c->stream_error) st = dspy_fail(DSPY_ERR_IO, "http: the client is gone");
    if (c->answer == ANS_STREAM) {
        c->answer = ANS_DONE;
        c->stream_end = true;
        wake_locked(c);
    }
    pthread_mutex_unlock(&c->mu);
    return st;
}

bool dspy_http_conn_peer_closed(http_conn *c) {
    pthread_mutex_lock(&c->mu);
    bool closed = c->gone || c->peer_closed;
    if (!closed) {
        /* the socket is open while the request is not gone: libmicrohttpd closes it only after
         * telling us (notify_completed takes c->mu) */
        struct pollfd p = {.fd = c->fd, .events = POLLIN | POLLRDHUP};
        if (poll(&p, 1, 0) > 0) {
            if (p.revents & (POLLERR | POLLHUP | POLLRDHUP)) {
                closed = true;
            } else {
                char b;
                ssize_t r = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
                closed = r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
            }
        }
        if (closed) {
            c->peer_closed = true;
            wake_locked(c);
        }
    }
    pthread_mutex_unlock(&c->mu);
    return closed;
}

/* ---- workers ------------------------------------------------------------------------------ */

static void default_error(http_conn *c, int status, const char *msg) {
    pthread_mutex_lock(&c->mu);
    c->close_after = true;
    pthread_mutex_unlock(&c->mu);
    if (c->s->cfg.error) c->s->cfg.error(c->s->cfg.user, c, status, msg);
    bool none;
    pthread_mutex_lock(&c->mu);
    none = c->answer == ANS_NONE;
    pthread_mutex_unlock(&c->mu);
    if (none) {
        dspy_str b = DSPY_STR_INIT;
        dspy_str_appendf(&b, "%d %s: %s\n", status, dspy_http_reason(status), msg);
        dspy_http_respond(c, status, "text/plain; charset=utf-8", dspy_str_cstr(&b), b.len, NULL);
        dspy_str_free(&b);
    }
}

/* One request, start to end, on a worker. */
static void run_request(http_conn *c) {
    http_server *s = c->s;
    s->cfg.handler(s->cfg.user, &c->req, c);
    pthread_mutex_lock(&c->mu);
    bool silent = c->answer == ANS_NONE && !c->peer_closed && !c->gone;
    pthread_mutex_unlock(&c->mu);
    if (silent) default_error(c, 500, "the handler sent no answer");
    pthread_mutex_lock(&c->mu);
    if (c->answer == ANS_STREAM) { /* the handler left a stream open: end it as broken */
        c->answer = ANS_DONE;
        c->stream_error = true;
    }
    c->worker_done = true;
    wake_locked(c);
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_lock(&s->mu);
    s->n_busy--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    conn_release(c);
}

/* A worker: its first request, then the ones handed to it while it waits idle; it exits after
 * HTTP_WORKER_IDLE_MS without one, or when the server stops. Workers are joined, not detached:
 * a thread's own exit (thread-local destructors, OpenSSL's per-thread state among them) must be
 * over before the server's free returns, or a process that exits right after races it. */
static void *worker_main(void *arg) {
    http_worker *w = arg;
    http_conn *c = w->first;
    http_server *s = c->s;
    for (;;) {
        run_request(c);
        pthread_mutex_lock(&s->mu);
        struct timespec dl;
        dspy_deadline_in(&dl, HTTP_WORKER_IDLE_MS);
        s->n_idle++;
        while (!s->handoff && !s->workers_quit)
            if (pthread_cond_timedwait(&s->work_cv, &s->mu, &dl) == ETIMEDOUT) break;
        c = s->handoff; /* the handing thread counted one idle worker out of n_idle for it */
        if (!c) { /* timed out, or the server stops */
            s->n_idle--;
            s->n_workers--;
            w->next = s->exited;
            s->exited = w;
            pthread_cond_broadcast(&s->cv);
            pthread_mutex_unlock(&s->mu);
            return NULL;
        }
        s->handoff = c->work_next;
        pthread_mutex_unlock(&s->mu);
    }
}

/* Hands c to an idle worker, or starts a new one. */
static bool start_worker(http_conn *c) {
    http_server *s = c->s;
    atomic_fetch_add(&c->refs, 1);
    pthread_mutex_lock(&s->mu);
    s->n_busy++;
    if (s->n_idle > 0 && !s->workers_quit) { /* never waits: the event thread calls this */
        c->work_next = s->handoff;
        s->handoff = c;
        s->n_idle--;
        pthread_cond_signal(&s->work_cv);
        pthread_mutex_unlock(&s->mu);
        return true;
    }
    s->n_workers++;
    pthread_mutex_unlock(&s->mu);
    http_worker *w = calloc(1, sizeof *w);
    bool ok = w != NULL;
    if (ok) {
        w->first = c;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, HTTP_WORKER_STACK);
        ok = pthread_create(&w->th, &attr, worker_main, w) == 0;
        pthread_attr_destroy(&attr);
    }
    if (!ok) {
        free(w);
        pthread_mutex_lock(&s->mu);
        s->n_busy--;
        s->n_workers--;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        atomic_fetch_sub(&c->refs, 1);
    }
    return ok;
}

/* ---- libmicrohttpd callbacks (event thread) ------------------------------------------------ */

static http_conn *conn_new(http_server *s, struct MHD_Connection *mc) {
    http_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->s = s;
    c->mc = mc;
    atomic_init(&c->refs, 1); /* libmicrohttpd's, dropped in on_completed */
    pthread_mutex_init(&c->mu, NULL);
    dspy_cond_init_monotonic(&c->cv);
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    c->track = ci ? ci->socket_context : NULL;
    ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    c->fd = ci ? ci->connect_fd : -1;
    ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, c->peer, sizeof c->peer);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, c->peer, sizeof c->peer);
    }
    return c;
}

/* The request line has arrived: the request's deadline starts. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *mc) {
    http_server *s = cls;
    http_conn *c = conn_new(s, mc);
    if (c) {
        dspy_str_append(&c->url, uri);
        pthread_mutex_lock(&s->mu);
        if (c->track) c->track->request_start = dspy_now_ms();
        pthread_mutex_unlock(&s->mu);
    }
    return c;
}

/* Counts a header line's bytes ("name: value\r\n"). */
static enum MHD_Result add_header_size(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    (void)kind;
    *(size_t *)cls += strlen(key) + (value ? strlen(value) : 0) + 4;
    return MHD_YES;
}

static enum MHD_Result reject(http_conn *c, int status, const char *msg) {
    c->in_access = true;
    default_error(c, status, msg);
    c->in_access = false;
    return c->state == ST_ANSWERED ? MHD_YES : MHD_NO;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *mc, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_size, void **ctx) {
    http_server *s = cls;
    http_conn *c = *ctx;
    if (!c) { /* on_uri ran out of memory */
        if (!(c = conn_new(s, mc))) return MHD_NO;
        dspy_str_append(&c->url, url);
        *ctx = c;
    }
    if (!c->headers_seen) {
        c->headers_seen = true;
        c->http10 = version && strcmp(version, MHD_HTTP_VERSION_1_0) == 0;
        dspy_str_append(&c->method, method);
        int n_conns;
        pthread_mutex_lock(&s->mu);
        n_conns = s->n_conns;
        pthread_mutex_unlock(&s->mu);
        if (n_conns > s->cfg.max_connections)
            return reject(c, 503, "the server has too many open connections; retry later");
        size_t head = c->url.len + c->method.len + 12;
        MHD_get_connection_values(mc, MHD_HEADER_KIND, add_header_size, &head);
        if (head > s->cfg.limits.max_header)
            return reject(c, 431, "the request head (request line and headers) is too large");
        const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->cfg.limits.max_body)
            return reject(c, 413, "the request body is too large");
        return MHD_YES; /* libmicrohttpd sends "100 Continue" when asked */
    }
    if (*upload_size) {
        if (!c->too_large && c->body.len + *upload_size <= s->cfg.limits.max_body) {
            dspy_str_appendn(&c->body, upload_data, *upload_size);
            if (!dspy_str_ok(&c->body)) return MHD_NO;
        } else {
            c->too_large = true;
            dspy_str_free(&c->body);
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (c->too_large) return reject(c, 413, "the request body is too large");
    pthread_mutex_lock(&c->mu);
    enum MHD_Result res = MHD_YES;
    if (c->state == ST_READING) {
        dspy_strv u = dspy_strv_make(dspy_str_cstr(&c->url), c->url.len);
        c->req.method = dspy_strv_make(dspy_str_cstr(&c->method), c->method.len);
        c->req.target = u;
        const char *q = memchr(u.ptr, '?', u.len);
        c->req.path = q ? dspy_strv_make(u.ptr, (size_t)(q - u.ptr)) : u;
        c->req.query = q ? dspy_strv_make(q + 1, (size_t)(u.ptr + u.len - q - 1)) : dspy_strv_make(u.ptr + u.len, 0);
        c->req.body = dspy_str_cstr(&c->body);
        c->req.body_len = c->body.len;
        c->req.conn = c;
        c->state = ST_WORKING;
        pthread_mutex_lock(&s->mu);
        if (c->track) c->track->busy = true;
        pthread_mutex_unlock(&s->mu);
        if (!start_worker(c)) {
            pthread_mutex_unlock(&c->mu);
            return reject(c, 503, "the server cannot start a worker for the request; retry later");
        }
        MHD_suspend_connection(mc);
        c->suspended = true;
    } else if (c->state == ST_WORKING) {
        if (!queue_answer_locked(c)) res = MHD_NO;
        else if (c->state == ST_WORKING && c->worker_done) res = MHD_NO; /* nothing will come */
        else if (c->state == ST_WORKING) { /* woken with nothing to send (yet) */
            MHD_suspend_connection(mc);
            c->suspended = true;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return res;
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **ctx, enum MHD_RequestTerminationCode toe) {
    (void)mc;
    (void)toe;
    http_server *s = cls;
    http_conn *c = *ctx;
    if (!c) return;
    *ctx = NULL;
    pthread_mutex_lock(&c->mu);
    c->gone = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_lock(&s->mu);
    if (c->track) {
        c->track->request_start = 0;
        c->track->busy = false;
        c->track->idle_since = dspy_now_ms();
    }
    pthread_mutex_unlock(&s->mu);
    conn_release(c);
}

static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_ctx, enum MHD_ConnectionNotificationCode code) {
    http_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        conn_track *t = calloc(1, sizeof *t);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
        pthread_mutex_lock(&s->mu);
        s->n_conns++;
        if (t) {
            t->fd = ci ? ci->connect_fd : -1;
            t->idle_since = dspy_now_ms();
            t->next = s->tracks;
            if (s->tracks) s->tracks->prev = t;
            s->tracks = t;
        }
        pthread_mutex_unlock(&s->mu);
        *socket_ctx = t;
        if (t) {
            int one = 1;
            setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
    } else {
        conn_track *t = *socket_ctx;
        pthread_mutex_lock(&s->mu);
        s->n_conns--;
        if (t) {
            if (t->prev) t->prev->next = t->next;
            else s->tracks = t->next;
            if (t->next) t->next->prev = t->prev;
        }
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        free(t);
        *socket_ctx = NULL;
    }
}

/* Shuts down connections past their deadline (see the top of the file). Under s->mu. */
static void reap_locked(http_server *s) {
    int64_t now = dspy_now_ms();
    bool stopping = dspy_http_server_stopping(s);
    for (conn_track *t = s->tracks; t; t = t->next) {
        if (t->busy || t->reaped || t->fd < 0) continue;
        bool late = t->request_start ? now - t->request_start > s->cfg.limits.read_timeout_ms
                                     : stopping || now - t->idle_since > s->cfg.limits.idle_timeout_ms;
        if (late) {
            shutdown(t->fd, SHUT_RDWR);
            t->reaped = true;
        }
    }
}

/* Joins the workers that left their loop (each is past its last use of s->mu); called with s->mu
 * held, released around the joins. */
static void join_exited_locked(http_server *s) {
    http_worker *w = s->exited;
    s->exited = NULL;
    if (!w) return;
    pthread_mutex_unlock(&s->mu);
    while (w) {
        http_worker *next = w->next;
        pthread_join(w->th, NULL);
        free(w);
        w = next;
    }
    pthread_mutex_lock(&s->mu);
}

static void *reaper_main(void *arg) {
    http_server *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->reaper_quit) {
        reap_locked(s);
        join_exited_locked(s);
        struct timespec dl;
        dspy_deadline_in(&dl, HTTP_REAP_MS);
        pthread_cond_timedwait(&s->cv, &s->mu, &dl);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    (void)fmt;
    (void)ap; /* libmicrohttpd's own messages (a client that reset, ...) are not ours to print */
}

dspy_status dspy_http_server_new(const http_server_config *cfg, http_server **out) {
    *out = NULL;
    if (!cfg || !cfg->handler || cfg->max_connections < 1 || cfg->max_per_client < 0 || cfg->port < 0 ||
        cfg->port > 65535 || cfg->limits.read_timeout_ms < 1 || cfg->limits.idle_timeout_ms < 1 ||
        cfg->limits.write_timeout_ms < 1)
        return dspy_fail(DSPY_ERR_ARG, "http: bad server config (a handler, max_connections >= 1, max_per_client >= 0, "
                                       "positive timeouts and a port in 0..65535 are needed)");
    http_server *s = calloc(1, sizeof *s);
    if (!s) return dspy_fail(DSPY_ERR_NOMEM, "http: out of memory");
    s->cfg = *cfg;
    s->listen_fd = -1;
    s->wake[0] = s->wake[1] = -1;
    atomic_init(&s->stopping, false);
    pthread_mutex_init(&s->mu, NULL);
    dspy_cond_init_monotonic(&s->cv);
    dspy_cond_init_monotonic(&s->work_cv);
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
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1024) == 0) {
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
    dspy_http_server_free(s);
    return st;
}

dspy_status dspy_http_server_run(http_server *s) {
    if (!dspy_http_server_stopping(s)) {
        /* The connection memory pool holds the request head and read buffer: room for the
         * largest head allowed (libmicrohttpd answers 431 past it) plus a read buffer. */
        size_t pool = s->cfg.limits.max_header + 16 * 1024;
        unsigned idle_s = (unsigned)((s->cfg.limits.idle_timeout_ms + 999) / 1000);
        s->d = MHD_start_daemon(
            MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_access, s,
            MHD_OPTION_LISTEN_SOCKET, s->listen_fd, MHD_OPTION_CONNECTION_LIMIT,
            (unsigned)(s->cfg.max_connections + HTTP_HARD_EXTRA), MHD_OPTION_PER_IP_CONNECTION_LIMIT,
            (unsigned)s->cfg.max_per_client, MHD_OPTION_CONNECTION_TIMEOUT, idle_s,
            MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
            MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, MHD_OPTION_END);
        if (!s->d) return dspy_fail(DSPY_ERR_IO, "http: cannot start the libmicrohttpd event loop on port %d", s->port);
        if (pthread_create(&s->reaper, NULL, reaper_main, s) != 0) {
            MHD_stop_daemon(s->d);
            s->d = NULL;
            return dspy_fail(DSPY_ERR_NOMEM, "http: cannot start the deadline thread");
        }
        s->reaper_started = true;
    }
    while (!dspy_http_server_stopping(s)) {
        struct pollfd p = {.fd = s->wake[0], .events = POLLIN};
        int r = poll(&p, 1, -1);
        if (r < 0 && errno != EINTR) break;
        if (r > 0) break;
    }
    atomic_store(&s->stopping, true);
    if (s->d) {
        /* stop accepting: the listening socket is handed back and closed, so new connections
         * are refused at once instead of waiting in the backlog */
        MHD_socket lfd = MHD_quiesce_daemon(s->d);
        if (lfd >= 0 && lfd == s->listen_fd) s->listen_fd = -1;
        if (lfd >= 0) close(lfd);
    }
    if (s->listen_fd >= 0) close(s->listen_fd);
    s->listen_fd = -1;
    pthread_mutex_lock(&s->mu);
    reap_locked(s); /* idle keep-alive connections close now */
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return DSPY_OK;
}

bool dspy_http_server_drain(http_server *s, int timeout_ms) {
    struct timespec dl;
    if (timeout_ms >= 0) dspy_deadline_in(&dl, timeout_ms);
    pthread_mutex_lock(&s->mu);
    while (s->n_conns + s->n_busy > 0) {
        if (timeout_ms < 0) pthread_cond_wait(&s->cv, &s->mu);
        else if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) == ETIMEDOUT) break;
    }
    bool none = s->n_conns + s->n_busy == 0;
    pthread_mutex_unlock(&s->mu);
    return none;
}

int dspy_http_server_connections(http_server *s) {
    pthread_mutex_lock(&s->mu);
    int n = s->n_conns;
    pthread_mutex_unlock(&s->mu);
    return n;
}

int dspy_http_server_busy(http_server *s) {
    pthread_mutex_lock(&s->mu);
    int n = s->n_busy;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void dspy_http_server_free(http_server *s) {
    if (!s) return;
    atomic_store(&s->stopping, true);
    /* workers first: libmicrohttpd must not be stopped with a connection still suspended */
    pthread_mutex_lock(&s->mu);
    while (s->n_busy > 0) pthread_cond_wait(&s->cv, &s->mu);
    s->workers_quit = true; /* idle workers exit; the struct outlives them */
    pthread_cond_broadcast(&s->work_cv);
    while (s->n_workers > 0) pthread_cond_wait(&s->cv, &s->mu);
    s->reaper_quit = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->reaper_started) pthread_join(s->reaper, NULL);
    pthread_mutex_lock(&s->mu);
    join_exited_locked(s); /* those the reaper had not joined yet */
    pthread_mutex_unlock(&s->mu);
    if (s->d) MHD_stop_daemon(s->d);
    if (s->listen_fd >= 0) close(s->listen_fd);
    if (s->wake[0] >= 0) close(s->wake[0]);
    if (s->wake[1] >= 0) close(s->wake[1]);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_cond_destroy(&s->work_cv);
    free(s->host);
    free(s);
}
