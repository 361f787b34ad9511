/* http_client.h — the JSON HTTP client of the tests and benchmarks that talk to `dspy serve`
 * (libcurl): GET or POST, no proxy, the status, the body and the Retry-After header. */
#ifndef DSPY_TEST_HTTP_CLIENT_H
#define DSPY_TEST_HTTP_CLIENT_H

#include <curl/curl.h>

#include "dspy/str.h"

typedef struct test_http_reply {
    long status;        /* the HTTP status; 0 when no response came */
    CURLcode cc;        /* libcurl's result (CURLE_COULDNT_CONNECT, a timeout, ...) */
    double retry_after; /* the Retry-After header's seconds; 0 when absent */
    dspy_str body;      /* the response body */
} test_http_reply;

/* GET url (body NULL) or POST body as application/json, waiting at most timeout_s. h: a handle
 * reused across calls (its connection kept alive; its options are reset here) or NULL for a
 * one-off. r must start zeroed; each call clears its fields first, so one reply serves many
 * calls. Free with test_http_reply_free. */
void test_http(CURL *h, const char *url, const char *body, long timeout_s, test_http_reply *r);
void test_http_reply_free(test_http_reply *r);

#endif
