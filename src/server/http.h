/* server/http.h — a small HTTP/1.1 server on POSIX sockets (private to src/server/).
 *
 * What it does: binds host:port (port 0 = an ephemeral port, read back with http_server_port),
 * accepts connections on the thread that calls http_server_run, and serves each connection on
 * its own thread up to a cap (over the cap the connection gets a 503 and is closed). A
 * connection reads requests with Content-Length bodies, keeps the connection alive between
 * requests (HTTP/1.1 default, HTTP/1.0 with "Connection: keep-alive"), answers
 * "Expect: 100-continue", and hands each complete request to one handler callback. The handler
 * answers with http_respond (fixed body) or streams with http_stream_* (chunked transfer
 * encoding, which is what server-sent events ride on).
 * Limits, each with its status: a head over max_header bytes 431, a body over max_body 413,
 * a request not complete within read_timeout_ms 408, "Transfer-Encoding" (chunked bodies) 411,
 * a POST/PUT/PATCH without Content-Length 411, malformed request line or headers 400, an HTTP
 * version other than 1.0/1.1 505. Error answers go through the server's error callback so the
 * caller shapes the body (OpenAI error JSON for dspy serve).
 * What it does not: TLS, chunked request bodies, HTTP/2, pipelining beyond keeping extra bytes
 * for the next request, routing (the handler's job).
 * Follows RFC 9112 (message syntax) and RFC 9110 (semantics) in the subset above.
 *
 * Thread safety: http_server_stop is async-signal-safe (it writes one byte to a pipe), so a
 * SIGTERM handler may call it. The handler runs on connection threads, many at once.
 */
#ifndef DSPY_SERVER_HTTP_H
#define DSPY_SERVER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/status.h"
#include "dspy/str.h"

#define HTTP_MAX_HEADERS 100

typedef struct http_header {
    dspy_strv name;  /* as sent; compare case-insensitively */
    dspy_strv value; /* leading/trailing spaces and tabs removed */
} http_header;

/* A parsed request. Views point into the connection's buffer and are valid during the
 * handler call only. */
typedef struct http_request {
    dspy_strv method;       /* "GET", "POST", ... (case-sensitive, as RFC 9110 says) */
    dspy_strv target;       /* the request target as sent */
    dspy_strv path;         /* target without the query (absolute-form: without scheme://host) */
    dspy_strv query;        /* after '?', or empty */
    int minor;              /* HTTP/1.<minor>: 0 or 1 */
    http_header headers[HTTP_MAX_HEADERS];
    size_t nheaders;
    bool has_length;        /* Content-Length was given */
    size_t content_length;  /* 0 without Content-Length */
    bool keep_alive;        /* the client allows another request on this connection */
    bool expect_continue;   /* "Expect: 100-continue" */
    size_t head_len;        /* bytes of request line + headers + blank line */
    const char *body;       /* content_length bytes (set once the body is read) */
    size_t body_len;
} http_request;

typedef struct http_limits {
    size_t max_header;    /* request line + headers, bytes (431 over it) */
    size_t max_body;      /* Content-Length limit, bytes (413 over it) */
    int read_timeout_ms;  /* from a request's first byte to its last (408 after it) */
    int idle_timeout_ms;  /* a kept-alive connection with no request is closed after it */
    int write_timeout_ms; /* a send that makes no progress this long drops the connection */
} http_limits;

/* 32 KiB head, 8 MiB body, 30 s read, 60 s idle, 30 s write. */
http_limits http_limits_default(void);

/* A parse failure: the status to answer with and a one-line reason. */
typedef struct http_parse_error {
    int status;
    const char *message; /* static text */
} http_parse_error;

/* Parses the request head in buf[0, len). Returns 1 when the head is complete (req filled,
 * req->head_len set; the body is not looked at), 0 when more bytes are needed, -1 on an
 * error (*err set: 400, 411, 413, 431 or 505). Views in `req` point into `buf`. A head longer
 * than limits->max_header is 431 whether or not it is complete. */
int http_parse_head(const char *buf, size_t len, const http_limits *limits, http_request *req,
                    http_parse_error *err);

/* The value of header `name` (case-insensitive), or a {NULL, 0} view. The first one when
 * repeated. */
dspy_strv http_header_get(const http_request *req, const char *name);

/* "OK", "Not Found", ... for the statuses this server sends ("Unknown" otherwise). */
const char *http_reason(int status);

/* ---- the server -------------------------------------------------------------------------- */

typedef struct http_server http_server;
typedef struct http_conn http_conn;

/* Called once per complete request on a connection thread. It must answer with exactly one
 * http_respond, or with http_stream_begin ... http_stream_end; a handler that answers nothing
 * gets a 500 sent for it. */
typedef void (*http_handler_fn)(void *user, const http_request *req, http_conn *c);

/* Writes an error answer for a request the HTTP layer rejected (status 400/408/411/413/431/
 * 503/505, or 500 for a silent handler) by calling http_respond. NULL: text/plain. */
typedef void (*http_error_fn)(void *user, http_conn *c, int status, const char *message);

typedef struct http_server_config {
    const char *host;         /* "127.0.0.1" when NULL; a numeric IPv4/IPv6 address or a name */
    int port;                 /* 0 = ephemeral */
    int max_connections;      /* open connections served at once (>= 1) */
    http_limits limits;
    http_handler_fn handler;
    http_error_fn error;      /* may be NULL */
    void *user;
} http_server_config;

/* Creates the listening socket (SO_REUSEADDR, backlog 128). DSPY_ERR_ARG for a bad config,
 * DSPY_ERR_IO when the address cannot be resolved or bound (the message names host:port and
 * the system error). *out NULL on failure. */
dspy_status http_server_new(const http_server_config *cfg, http_server **out);

/* The bound port (the chosen one when the config said 0). */
int http_server_port(const http_server *s);

/* Accepts connections until http_server_stop; then closes the listening socket and returns
 * (connections still open keep running; see http_server_drain). DSPY_ERR_IO if accept fails
 * for a reason other than a full process fd table or a transient error. */
dspy_status http_server_run(http_server *s);

/* Asks run to return. Async-signal-safe; idempotent. Kept-alive idle connections close within
 * about 100 ms; answers sent after this carry "Connection: close". */
void http_server_stop(http_server *s);

/* True once http_server_stop has been called. */
bool http_server_stopping(const http_server *s);

/* Waits until every connection thread has ended or timeout_ms passed (< 0: no limit).
 * Returns true when none is left. */
bool http_server_drain(http_server *s, int timeout_ms);

/* Number of connection threads alive now. */
int http_server_connections(http_server *s);

/* Waits for all connection threads (no time limit), then frees. NULL-safe. Call after run
 * returned (or without run ever called). */
void http_server_free(http_server *s);

/* ---- answering (handler side) ------------------------------------------------------------ */

/* Sends a complete answer: status line, Content-Type (when non-NULL), Content-Length,
 * Connection, any `extra_headers` ("Name: value\r\n" lines, may be NULL), and the body.
 * DSPY_ERR_IO when the client is gone or the write timed out (the connection then closes).
 * DSPY_ERR_STATE if the request was already answered. */
dspy_status http_respond(http_conn *c, int status, const char *content_type, const char *body,
                         size_t len, const char *extra_headers);

/* Starts a streamed answer with Transfer-Encoding: chunked (and Cache-Control: no-cache).
 * Each http_stream_write sends one chunk; http_stream_end sends the last (empty) chunk.
 * Errors as http_respond; after an error the connection is closed once the handler returns. */
dspy_status http_stream_begin(http_conn *c, int status, const char *content_type);
dspy_status http_stream_write(http_conn *c, const char *data, size_t len);
dspy_status http_stream_end(http_conn *c);

/* True when the peer has closed its side or reset the connection (checked without blocking
 * and without consuming bytes). A handler waiting for a long result polls this to cancel. */
bool http_conn_peer_closed(http_conn *c);

/* The server the connection belongs to. */
http_server *http_conn_server(http_conn *c);

#endif
