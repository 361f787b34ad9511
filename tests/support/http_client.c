/* http_client.c — the tests' JSON HTTP client (http_client.h). */
#include "http_client.h"

#include <stdlib.h>
#include <strings.h>

static size_t on_body(char *p, size_t sz, size_t nm, void *u) {
    dspy_str_appendn(&((test_http_reply *)u)->body, p, sz * nm);
    return sz * nm;
}

static size_t on_header(char *p, size_t sz, size_t nm, void *u) {
    if (sz * nm > 12 && strncasecmp(p, "Retry-After:", 12) == 0) ((test_http_reply *)u)->retry_after = atof(p + 12);
    return sz * nm;
}

void test_http(CURL *h, const char *url, const char *body, long timeout_s, test_http_reply *r) {
    CURL *c = h ? h : curl_easy_init();
    dspy_str_clear(&r->body);
    r->status = 0, r->retry_after = 0, r->cc = CURLE_FAILED_INIT;
    if (!c) return;
    if (h) curl_easy_reset(c);
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    if (body) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    r->cc = curl_easy_perform(c);
    if (r->cc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(hd);
    if (!h) curl_easy_cleanup(c);
}

void test_http_reply_free(test_http_reply *r) { dspy_str_free(&r->body); }
