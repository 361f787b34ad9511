/* server/http.h — the HTTP/1.1 server of `dspy serve`, on GNU libmicrohttpd (private to
 * src/server/).
 *
 * What it does: binds host:port (port 0 = an ephemeral port, read back with dspy_http_server_port)
 * and serves connections from one libmicrohttpd event thread (epoll): reading request lines,
 * headers and bodies (Content-Length or chunked), keep-alive, pipelining, "Expect:
 * 100-continue", HTTP/1.0, all without a thread per connection, so idle and slow connections
 * cost a socket and a small buffer each. A complete request is handed to the handler callback
 * on a worker thread of its own (one per request in progress, never per connection), which may
 * block: it answers with dspy_http_respond (fixed body) or streams with http_stream_* (chunked
 * transfer encoding, which server-sent events ride on). While a worker runs, its connection is
 * suspended in the event loop and resumed when there is something to send.
 * Limits, each with what the client sees:
 *   - more than max_connections open connections: 503 + "Retry-After: 1" and close, for
 *     requests on the connections past the limit (a hard cap 64 above it refuses at accept);
 *   - more than max_per_client connections from one IP address: refused at accept;
 *   - a head over max_header bytes: 431 (libmicrohttpd's answer); a body over max_body: 413;
 *   - a request (from its request line to its last body byte) not complete within
 *     read_timeout_ms, or a connection with no request for idle_timeout_ms: closed;
 *   - a streamed answer the client does not read for write_timeout_ms: closed;
 *   - malformed requests: libmicrohttpd's 400/505 answers.
 * Errors found here (413, 503, a handler that answered nothing: 500) go through the server's
 * error callback so the caller shapes the body (OpenAI error JSON for dspy serve).
 * What it does not: TLS, HTTP/2, routing (the handler's job).
 * Follows RFC 9112 (message syntax) and RFC 9110 (semantics) through libmicrohttpd 0.9.75.
 *
 * Thread safety: dspy_http_server_stop is async-signal-safe (it writes one byte to a pipe), so a
 * SIGTERM handler may call it. Handlers run on worker threads, many at once; one request's
 * http_conn is used by its handler's thread only.
 */
#ifndef DSPY_SERVER_HTTP_H
#define DSPY_SERVER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/status.h"
#include "dspy/str.h"

typedef struct http_server http_server;
typedef struct http_conn http_conn;

/* A complete request, valid during the handler call only. */
typedef struct http_request {
    dspy_strv method;      /* "GET", "POST", ... (case-sensitive, as RFC 9110 says) */
    dspy_strv target;      /* the request target as sent (path and query) */
    dspy_strv path;        /* target without the query */
    dspy_strv query;       /* after '?', or empty */
    const char *body;      /* body_len bytes (de-chunked), NUL-terminated */
    size_t body_len;
    http_conn *conn;       /* for dspy_http_header_get */
} http_request;

typedef struct http_limits {
    size_t max_header;    /* request line + headers, bytes (431 over it) */
    size_t max_body;      /* body bytes (413 over it) */
    int read_timeout_ms;  /* from a request's first line to its last byte */
    int idle_timeout_ms;  /* a connection with no request in progress is closed after it */
    int write_timeout_ms; /* a streamed answer the client does not take is dropped after it */
} http_limits;

/* 32 KiB head, 8 MiB body, 30 s read, 60 s idle, 30 s write. */
http_limits dspy_http_limits_default(void);

/* The value of header `name` (case-insensitive), or a {NULL, 0} view. The first one when
 * repeated. Valid during the handler call, until the request is answered. */
dspy_strv dspy_http_header_get(const http_request *req, const char *name);

/* "OK", "Not Found", ... for the statuses this server sends ("Unknown" otherwise). */
const char *dspy_http_reason(int status);

/* ---- the server -------------------------------------------------------------------------- */

/* Called once per complete request on a worker thread. It must answer with exactly one
 * dspy_http_respond, or with dspy_http_stream_begin ... dspy_http_stream_end; a handler that answers nothing
 * gets a 500 sent for it, unless it saw the client go (dspy_http_conn_peer_closed), in which case
 * the connection is closed without an answer. */
typedef void (*http_handler_fn)(void *user, const http_request *req, http_conn *c);

/* Writes an error answer for a request the HTTP layer rejected (413, 503, or 500 for a silent
 * handler) by calling dspy_http_respond. NULL: text/plain. May run on the event thread: it must not
 * block. */
typedef void (*http_error_fn)(void *user, http_conn *c, int status, const char *message);

typedef struct http_server_config {
    const char *host;         /* "127.0.0.1" when NULL; a numeric IPv4/IPv6 address or a name */
    int port;                 /* 0 = ephemeral */
    int max_connections;      /* open connections served at once (>= 1); see the top */
    int max_per_client;       /* open connections from one IP address; 0 = no limit */
    http_limits limits;
    http_handler_fn handler;
    http_error_fn error;      /* may be NULL */
    void *user;
} http_server_config;

/* Creates the listening socket (SO_REUSEADDR, backlog 1024). DSPY_ERR_ARG for a bad config,
 * DSPY_ERR_IO when the address cannot be resolved or bound (the message names host:port and
 * the system error). *out NULL on failure. Connections queue until dspy_http_server_run. */
dspy_status dspy_http_server_new(const http_server_config *cfg, http_server **out);

/* The bound port (the chosen one when the config said 0). */
int dspy_http_server_port(const http_server *s);

/* Serves until dspy_http_server_stop; then stops accepting (new connections are refused), closes
 * idle connections and returns (requests in progress keep running; see dspy_http_server_drain).
 * DSPY_ERR_IO if the event loop cannot start. */
dspy_status dspy_http_server_run(http_server *s);

/* Asks run to return. Async-signal-safe; idempotent. Answers sent after this carry
 * "Connection: close". */
void dspy_http_server_stop(http_server *s);

/* True once dspy_http_server_stop has been called. */
bool dspy_http_server_stopping(const http_server *s);

/* Waits until every connection has closed or timeout_ms passed (< 0: no limit). Returns true
 * when none is left. Meaningful after run returned. */
bool dspy_http_server_drain(http_server *s, int timeout_ms);

/* Open connections now. */
int dspy_http_server_connections(http_server *s);

/* Requests being handled by a worker now. */
int dspy_http_server_busy(http_server *s);

/* Waits for every worker (no time limit), stops the event loop, then frees. NULL-safe. Call
 * after run returned (or without run ever called). */
void dspy_http_server_free(http_server *s);

/* ---- answering (handler side) ------------------------------------------------------------ */

/* Sends a complete answer: status, Content-Type (when non-NULL), Content-Length, any
 * `extra_headers` ("Name: value\r\n" lines, may be NULL), and the body (copied).
 * DSPY_ERR_IO when the client is gone. DSPY_ERR_STATE if the request was already answered. */
dspy_status dspy_http_respond(http_conn *c, int status, const char *content_type, const char *body,
                         size_t len, const char *extra_headers);

/* Starts a streamed answer with Transfer-Encoding: chunked (HTTP/1.0: raw bytes, then close)
 * and Cache-Control: no-cache. Each dspy_http_stream_write queues bytes (copied; it waits while more
 * than 1 MiB is unsent, up to write_timeout_ms); dspy_http_stream_end ends the stream.
 * Errors as dspy_http_respond; after an error the connection is closed once the handler returns. */
dspy_status dspy_http_stream_begin(http_conn *c, int status, const char *content_type);
dspy_status dspy_http_stream_write(http_conn *c, const char *data, size_t len);
dspy_status dspy_http_stream_end(http_conn *c);

/* True when the peer has closed its side or reset the connection (checked without blocking
 * and without consuming bytes). A handler waiting for a long result polls this to cancel. */
bool dspy_http_conn_peer_closed(http_conn *c);

/* The server the connection belongs to. */
http_server *dspy_http_conn_server(http_conn *c);

/* Adds "Name: value\r\n" lines to whatever answer this request gets (CORS headers, ...).
 * Call before answering. DSPY_ERR_NOMEM. */
dspy_status dspy_http_conn_add_headers(http_conn *c, const char *lines);

/* The client's address as text ("127.0.0.1", "::1"); "" when unknown. */
const char *dspy_http_conn_peer(const http_conn *c);

#endif
