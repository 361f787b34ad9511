/* http_stub.h — a small threaded HTTP/1.1 server on 127.0.0.1 for tests.
 *
 * A test starts a server with a handler callback; every request (method, target, headers,
 * body) is passed to the handler, which fills in a response: status, headers, body, an
 * optional delay before answering, a chunked body sent piece by piece with delays between the
 * pieces (for streaming/SSE), or a failure to simulate: drop the connection without answering,
 * or close it half-way through the body. Connections are persistent (HTTP/1.1 keep-alive)
 * unless the client or the response says "Connection: close"; each connection has its own
 * thread, so handlers run concurrently and must be thread-safe (use atomics or a lock for
 * shared state). `Expect: 100-continue` is answered. Request bodies need Content-Length
 * (chunked request bodies are not supported).
 *
 * http_stub_stop() ends everything cleanly: it stops accepting, wakes connections that wait
 * for a request or sleep in a delay, joins every thread and frees the server.
 */
#ifndef DSPY_TEST_HTTP_STUB_H
#define DSPY_TEST_HTTP_STUB_H

#include <stdbool.h>
#include <stddef.h>

#include "dspy/status.h"
#include "dspy/str.h"

typedef struct http_stub http_stub;

typedef struct http_stub_request {
    const char *method;  /* "GET", "POST", ... */
    const char *target;  /* path and query as sent: "/rows?dataset=x&offset=0" */
    const char *path;    /* target without the query */
    const char *query;   /* after '?', or "" */
    const char *const *header_names;  /* as sent */
    const char *const *header_values; /* leading/trailing spaces removed */
    int nheaders;
    const char *body;    /* NUL-terminated copy of the body (may also hold NULs: use body_len) */
    size_t body_len;
    int index;           /* 0-based arrival order over the whole server */
    int conn_index;      /* 0-based order of this request on its connection */
} http_stub_request;

typedef enum http_stub_action {
    HTTP_STUB_RESPOND = 0,     /* send the response */
    HTTP_STUB_DROP,            /* close the connection without answering */
    HTTP_STUB_CLOSE_MID_BODY   /* send headers and half the body, then close */
} http_stub_action;

typedef struct http_stub_chunk {
    char *data;
    size_t len;
    int delay_ms;
} http_stub_chunk;

/* Filled by the handler. Starts as: status 200, content_type "application/json", empty
 * headers and body, no delay, action RESPOND. */
typedef struct http_stub_response {
    int status;
    const char *content_type;  /* NULL: no Content-Type header */
    dspy_str headers;          /* extra header lines, each "Name: value\r\n" */
    dspy_str body;
    int delay_ms;              /* before anything is sent (or before dropping) */
    http_stub_action action;
    bool close;                /* add "Connection: close" and close after the response */
    http_stub_chunk *chunks;   /* set through http_stub_add_chunk; replaces body */
    int nchunks;
} http_stub_response;

typedef void (*http_stub_handler)(void *ud, const http_stub_request *req, http_stub_response *resp);

/* Starts a server on 127.0.0.1 with an ephemeral port. Errors: DSPY_ERR_IO. */
dspy_status http_stub_start(http_stub_handler handler, void *ud, http_stub **out);
/* Stops and frees the server (see above). NULL-safe. */
void http_stub_stop(http_stub *s);

int http_stub_port(const http_stub *s);
/* "http://127.0.0.1:<port>", owned by the server. */
const char *http_stub_url(const http_stub *s);
/* Requests received so far (complete requests, whatever the handler did with them). */
int http_stub_requests(const http_stub *s);
/* Connections accepted so far. */
int http_stub_connections(const http_stub *s);

/* Case-insensitive header lookup; NULL when absent. */
const char *http_stub_header(const http_stub_request *r, const char *name);
/* URL-decoded value of query parameter `name` into buf (cap bytes, NUL-terminated); false when
 * absent or too long. */
bool http_stub_query_param(const http_stub_request *r, const char *name, char *buf, size_t cap);
/* Appends a chunk of a chunked (streamed) response, sent `delay_ms` after the previous one. */
void http_stub_add_chunk(http_stub_response *resp, const char *data, size_t len, int delay_ms);

/* A local TCP port on 127.0.0.1 on which nothing listens (bound, then closed), for
 * "connection refused" tests; 0 on failure. */
int http_stub_closed_port(void);

#endif
