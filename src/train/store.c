/* store.c — rank 0's key-value store over TCP and every rank's client (train/store.h).
 *
 * Frames (integers big-endian): a request is op (1 byte: 'S' set, 'G' get, 'A' add), the key's
 * length (u32) and bytes, then for 'S' the value's length (u32) and bytes, for 'A' the delta
 * (i64). Answers: 'S' one byte 1; 'G' the value's length (u32) and bytes, once the key is set;
 * 'A' the sum (i64). A connection that sends anything else is closed.
 */
#include "train/store.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dspy/clock.h"

enum { MAX_KEY = 1024, MAX_VALUE = 1 << 20, MAX_CONNS = 1024 };

typedef struct entry {
    char *key;
    uint8_t *value;
    size_t n;
    struct entry *next;
} entry;

typedef struct server {
    int listen_fd;
    pthread_t accept_thread;
    bool accept_started;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    entry *entries;
    bool stop;
    int conn_fd[MAX_CONNS];
    pthread_t conn_thread[MAX_CONNS];
    int n_conns;
} server;

struct dspy_store {
    int fd;              /* this rank's connection to the server */
    double timeout_s;
    char where[300];     /* "host:port", for messages */
    server *srv;         /* rank 0 only */
};

/* ---- bytes on a socket -------------------------------------------------------------------- */

/* 0 done, 1 the peer closed, -1 error (errno; EAGAIN: the socket's timeout). */
static int read_full(int fd, void *buf, size_t n) {
    uint8_t *p = buf;
    while (n) {
        ssize_t k = recv(fd, p, n, 0);
        if (k == 0) return 1;
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += k, n -= (size_t)k;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t n) {
    const uint8_t *p = buf;
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += k, n -= (size_t)k;
    }
    return 0;
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static uint32_t get_u32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static void put_i64(uint8_t *p, int64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)((uint64_t)v >> (56 - 8 * i));
}

static int64_t get_i64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return (int64_t)v;
}

/* ---- rank 0's server ----------------------------------------------------------------------- */

/* Under the lock. */
static entry *find(server *sv, const char *key) {
    for (entry *e = sv->entries; e; e = e->next)
        if (!strcmp(e->key, key)) return e;
    return NULL;
}

/* Under the lock. NULL when out of memory. */
static entry *find_or_add(server *sv, const char *key) {
    entry *e = find(sv, key);
    if (e) return e;
    if (!(e = calloc(1, sizeof *e)) || !(e->key = strdup(key))) {
        free(e);
        return NULL;
    }
    e->next = sv->entries;
    sv->entries = e;
    return e;
}

/* Serves one request; false closes the connection. */
static bool serve_one(server *sv, int fd) {
    uint8_t hdr[5];
    if (read_full(fd, hdr, 5)) return false;
    uint32_t klen = get_u32(hdr + 1);
    if (klen == 0 || klen > MAX_KEY) return false;
    char key[MAX_KEY + 1];
    if (read_full(fd, key, klen)) return false;
    key[klen] = '\0';
    if (hdr[0] == 'S') {
        uint8_t lb[4];
        if (read_full(fd, lb, 4)) return false;
        uint32_t n = get_u32(lb);
        if (n > MAX_VALUE) return false;
        uint8_t *v = malloc(n ? n : 1);
        if (!v || read_full(fd, v, n)) {
            free(v);
            return false;
        }
        pthread_mutex_lock(&sv->lock);
        entry *e = find_or_add(sv, key);
        if (e) {
            free(e->value);
            e->value = v, e->n = n;
            pthread_cond_broadcast(&sv->changed);
        }
        pthread_mutex_unlock(&sv->lock);
        if (!e) {
            free(v);
            return false;
        }
        uint8_t ok = 1;
        return write_full(fd, &ok, 1) == 0;
    }
    if (hdr[0] == 'A') {
        uint8_t db[8], out[8];
        if (read_full(fd, db, 8)) return false;
        pthread_mutex_lock(&sv->lock);
        entry *e = find_or_add(sv, key);
        int64_t sum = 0;
        if (e) {
            int64_t cur = e->n == 8 ? get_i64(e->value) : 0;
            sum = cur + get_i64(db);
            if (e->n != 8) { /* absent, or set as bytes of another length: an integer from now on */
                free(e->value);
                e->value = malloc(8);
            }
            if (e->value) {
                put_i64(e->value, sum);
                e->n = 8;
            }
            pthread_cond_broadcast(&sv->changed);
        }
        bool ok = e && e->value;
        pthread_mutex_unlock(&sv->lock);
        if (!ok) return false;
        put_i64(out, sum);
        return write_full(fd, out, 8) == 0;
    }
    if (hdr[0] != 'G') return false;
    /* wait for the key in short slices, so that a stopping server does not wait on it */
    pthread_mutex_lock(&sv->lock);
    entry *e;
    while (!(e = find(sv, key)) || !e->value) {
        if (sv->stop) {
            pthread_mutex_unlock(&sv->lock);
            return false;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&sv->changed, &sv->lock, &ts);
    }
    size_t n = e->n;
    uint8_t *copy = malloc(4 + n);
    if (copy) {
        put_u32(copy, (uint32_t)n);
        memcpy(copy + 4, e->value, n);
    }
    pthread_mutex_unlock(&sv->lock);
    bool ok = copy && write_full(fd, copy, 4 + n) == 0;
    free(copy);
    return ok;
}

typedef struct conn_arg {
    server *sv;
    int fd;
} conn_arg;

static void *conn_main(void *p) {
    conn_arg a = *(conn_arg *)p;
    free(p);
    while (serve_one(a.sv, a.fd)) {
    }
    return NULL;
}

static void *accept_main(void *p) {
    server *sv = p;
    for (;;) {
        int fd = accept(sv->listen_fd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return NULL; /* the listening socket was shut down: the store stops */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_mutex_lock(&sv->lock);
        bool room = !sv->stop && sv->n_conns < MAX_CONNS;
        conn_arg *a = room ? malloc(sizeof *a) : NULL;
        if (a) {
            *a = (conn_arg){sv, fd};
            if (pthread_create(&sv->conn_thread[sv->n_conns], NULL, conn_main, a) == 0) {
                sv->conn_fd[sv->n_conns++] = fd;
                a = NULL, fd = -1;
            }
        }
        pthread_mutex_unlock(&sv->lock);
        free(a);
        if (fd >= 0) close(fd);
    }
}

static void server_free(server *sv) {
    if (!sv) return;
    pthread_mutex_lock(&sv->lock);
    sv->stop = true;
    pthread_cond_broadcast(&sv->changed);
    pthread_mutex_unlock(&sv->lock);
    if (sv->listen_fd >= 0) shutdown(sv->listen_fd, SHUT_RDWR);
    if (sv->accept_started) pthread_join(sv->accept_thread, NULL);
    /* no new connections now: wake the ones reading and wait for their threads */
    for (int i = 0; i < sv->n_conns; i++) shutdown(sv->conn_fd[i], SHUT_RDWR);
    for (int i = 0; i < sv->n_conns; i++) {
        pthread_join(sv->conn_thread[i], NULL);
        close(sv->conn_fd[i]);
    }
    if (sv->listen_fd >= 0) close(sv->listen_fd);
    while (sv->entries) {
        entry *e = sv->entries;
        sv->entries = e->next;
        free(e->key);
        free(e->value);
        free(e);
    }
    pthread_cond_destroy(&sv->changed);
    pthread_mutex_destroy(&sv->lock);
    free(sv);
}

static dspy_status server_start(int port, const char *where, server **out) {
    *out = NULL;
    server *sv = calloc(1, sizeof *sv);
    if (!sv) return dspy_fail(DSPY_ERR_NOMEM, "store %s: out of memory", where);
    pthread_mutex_init(&sv->lock, NULL);
    pthread_cond_init(&sv->changed, NULL);
    sv->listen_fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int v6 = sv->listen_fd >= 0;
    if (!v6) sv->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    dspy_status st = DSPY_OK;
    if (sv->listen_fd < 0) {
        st = dspy_fail(DSPY_ERR_IO, "store %s: socket: %s", where, strerror(errno));
        goto fail;
    }
    int one = 1, zero = 0;
    setsockopt(sv->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc;
    if (v6) {
        setsockopt(sv->listen_fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero); /* IPv4 too */
        struct sockaddr_in6 a = {0};
        a.sin6_family = AF_INET6, a.sin6_addr = in6addr_any, a.sin6_port = htons((uint16_t)port);
        rc = bind(sv->listen_fd, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in a = {0};
        a.sin_family = AF_INET, a.sin_addr.s_addr = htonl(INADDR_ANY), a.sin_port = htons((uint16_t)port);
        rc = bind(sv->listen_fd, (struct sockaddr *)&a, sizeof a);
    }
    if (rc != 0 || listen(sv->listen_fd, 128) != 0) {
        st = dspy_fail(DSPY_ERR_IO, "store %s: rank 0 cannot listen on port %d: %s (another run on the same "
                       "MASTER_PORT?)", where, port, strerror(errno));
        goto fail;
    }
    if (pthread_create(&sv->accept_thread, NULL, accept_main, sv) != 0) {
        st = dspy_fail(DSPY_ERR_STATE, "store %s: cannot start its thread", where);
        goto fail;
    }
    sv->accept_started = true;
    *out = sv;
    return DSPY_OK;
fail:
    server_free(sv);
    return st;
}

/* ---- every rank's client ------------------------------------------------------------------- */

/* Connects to host:port, retrying until the deadline. -1 with a message on failure. */
static int connect_until(const char *host, int port, double deadline, const char *where) {
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    const char *last = "no address";
    for (;;) {
        struct addrinfo hints = {0}, *res = NULL;
        hints.ai_socktype = SOCK_STREAM;
        int gai = getaddrinfo(host, ps, &hints, &res);
        if (gai != 0) {
            dspy_fail(DSPY_ERR_IO, "store %s: cannot resolve MASTER_ADDR '%s': %s", where, host, gai_strerror(gai));
            return -1;
        }
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
            int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
            if (fd < 0) continue;
            if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
                freeaddrinfo(res);
                return fd;
            }
            last = strerror(errno);
            close(fd);
        }
        freeaddrinfo(res);
        if (dspy_now_s() >= deadline) break;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    dspy_fail(DSPY_ERR_IO, "store %s: rank 0 did not answer (%s); is it running, and are MASTER_ADDR and "
              "MASTER_PORT the same on every rank?", where, last);
    return -1;
}

dspy_status dspy_store_new(const char *host, int port, bool serve, double timeout_s, dspy_store **out) {
    *out = NULL;
    if (!host || !*host || port < 1 || port > 65535 || !(timeout_s > 0))
        return dspy_fail(DSPY_ERR_ARG, "store: MASTER_ADDR must be set and MASTER_PORT in 1..65535 (got '%s', %d)",
                         host ? host : "", port);
    dspy_store *s = calloc(1, sizeof *s);
    if (!s) return dspy_fail(DSPY_ERR_NOMEM, "store: out of memory");
    s->fd = -1;
    s->timeout_s = timeout_s;
    snprintf(s->where, sizeof s->where, "%s:%d", host, port);
    dspy_status st = DSPY_OK;
    if (serve && (st = server_start(port, s->where, &s->srv))) goto fail;
    if ((s->fd = connect_until(serve ? "127.0.0.1" : host, port, dspy_now_s() + timeout_s, s->where)) < 0) {
        st = DSPY_ERR_IO;
        goto fail;
    }
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {(time_t)timeout_s, (suseconds_t)((timeout_s - (double)(time_t)timeout_s) * 1e6)};
    setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(s->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    *out = s;
    return DSPY_OK;
fail:
    dspy_store_free(s);
    return st;
}

static dspy_status io_error(dspy_store *s, const char *op, const char *key, int rc) {
    if (rc == 1)
        return dspy_fail(DSPY_ERR_IO, "store %s: %s '%s': rank 0 closed the connection (did it exit?)", s->where, op, key);
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return dspy_fail(DSPY_ERR_TIMEOUT, "store %s: %s '%s': no answer within %.0f s (a rank is missing or stuck)",
                         s->where, op, key, s->timeout_s);
    return dspy_fail(DSPY_ERR_IO, "store %s: %s '%s': %s", s->where, op, key, strerror(errno));
}

/* Sends op + key (+ tail). */
static dspy_status send_request(dspy_store *s, char op, const char *key, const void *tail, size_t n_tail) {
    size_t klen = strlen(key);
    if (klen == 0 || klen > MAX_KEY) return dspy_fail(DSPY_ERR_ARG, "store: key length %zu is not in 1..%d", klen, MAX_KEY);
    uint8_t hdr[5];
    hdr[0] = (uint8_t)op;
    put_u32(hdr + 1, (uint32_t)klen);
    int rc = write_full(s->fd, hdr, 5);
    if (!rc) rc = write_full(s->fd, key, klen);
    if (!rc && n_tail) rc = write_full(s->fd, tail, n_tail);
    return rc ? io_error(s, op == 'S' ? "set" : op == 'G' ? "get" : "add", key, rc) : DSPY_OK;
}

dspy_status dspy_store_set(dspy_store *s, const char *key, const void *v, size_t n) {
    if (n > MAX_VALUE) return dspy_fail(DSPY_ERR_ARG, "store: a value of %zu bytes is over the %d-byte limit", n, MAX_VALUE);
    uint8_t lb[4];
    put_u32(lb, (uint32_t)n);
    dspy_status st = send_request(s, 'S', key, lb, 4);
    if (!st && n && write_full(s->fd, v, n)) st = io_error(s, "set", key, -1);
    uint8_t ok = 0;
    int rc = st ? 0 : read_full(s->fd, &ok, 1);
    if (!st && rc) st = io_error(s, "set", key, rc);
    return st;
}

dspy_status dspy_store_get(dspy_store *s, const char *key, void **v, size_t *n) {
    *v = NULL, *n = 0;
    dspy_status st = send_request(s, 'G', key, NULL, 0);
    if (st) return st;
    uint8_t lb[4];
    int rc = read_full(s->fd, lb, 4);
    if (rc) return io_error(s, "get", key, rc);
    uint32_t len = get_u32(lb);
    if (len > MAX_VALUE) return dspy_fail(DSPY_ERR_FORMAT, "store %s: get '%s': a %u-byte answer", s->where, key, len);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return dspy_fail(DSPY_ERR_NOMEM, "store: out of memory");
    if ((rc = read_full(s->fd, buf, len))) {
        free(buf);
        return io_error(s, "get", key, rc);
    }
    *v = buf, *n = len;
    return DSPY_OK;
}

dspy_status dspy_store_add(dspy_store *s, const char *key, int64_t delta, int64_t *out) {
    uint8_t db[8], rb[8];
    put_i64(db, delta);
    dspy_status st = send_request(s, 'A', key, db, 8);
    if (st) return st;
    int rc = read_full(s->fd, rb, 8);
    if (rc) return io_error(s, "add", key, rc);
    *out = get_i64(rb);
    return DSPY_OK;
}

dspy_status dspy_store_barrier(dspy_store *s, const char *name, int world) {
    char key[MAX_KEY], done[MAX_KEY];
    snprintf(key, sizeof key, "barrier/%s", name);
    snprintf(done, sizeof done, "barrier/%s/done", name);
    int64_t arrived = 0;
    dspy_status st = dspy_store_add(s, key, 1, &arrived);
    if (st) return st;
    if (arrived == world && (st = dspy_store_set(s, done, "1", 1))) return st; /* the last one opens it */
    void *v = NULL;
    size_t n = 0;
    st = dspy_store_get(s, done, &v, &n);
    free(v);
    return st;
}

void dspy_store_free(dspy_store *s) {
    if (!s) return;
    if (s->fd >= 0) close(s->fd);
    server_free(s->srv);
    free(s);
}
