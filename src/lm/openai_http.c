/* openai_http.c — the OpenAI-compatible chat-completions client (libcurl).
 *
 * One request = POST {api_base}/chat/completions with the body {"model": <name without
 * "openai/">, "messages": [...], ...non-null kwargs} and headers Content-Type, Authorization:
 * Bearer <key> and (V33) User-Agent: DSPy/3.3.1 (spec dspy_behaviour.md §6.2, CC-21).
 * Retries follow CC-23 (litellm's exponential_backoff_retry as DSPy 3.3.1 uses it): up to
 * 1 + num_retries attempts; the first retry is immediate; after retry j fails, sleep
 * min(10, 2**(j-1)) units; a Retry-After / retry-after-ms header replaces the computed wait
 * (capped at 60). Retried: connection failures and resets, timeouts, truncated bodies, HTTP
 * 408, 409, 429 and 5xx. Not retried: other 4xx (the server's error.message is reported),
 * a 2xx body that is not a JSON object with "choices".
 * api_base may list several servers, comma-separated: each attempt goes to the least busy
 * (endpoints.c), a retry after a transport failure to another one.
 * Not here: streaming, the Responses API, proxies beyond libcurl's environment handling
 * (loopback addresses never go through a proxy).
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lm_internal.h"

#define MAX_BODY_BYTES ((size_t)256 << 20)
#define MAX_RETRY_AFTER_S 60.0

typedef struct http_impl {
    CURLSH *share;
    pthread_mutex_t locks[CURL_LOCK_DATA_LAST];
    dspy_lm_endpoints ep; /* the servers api_base lists, with this client's requests in flight */
} http_impl;

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode g_curl_init_rc;
static void curl_init_once(void) { g_curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

static dspy_status nomem(const char *model) {
    return dspy_fail(DSPY_ERR_NOMEM, "[%s] out of memory building the request", model);
}

static void share_lock(CURL *h, curl_lock_data d, curl_lock_access a, void *u) {
    (void)h;
    (void)a;
    pthread_mutex_lock(&((http_impl *)u)->locks[d]);
}

static void share_unlock(CURL *h, curl_lock_data d, void *u) {
    (void)h;
    pthread_mutex_unlock(&((http_impl *)u)->locks[d]);
}

static void http_free(void *p) {
    http_impl *h = p;
    if (!h) return;
    if (h->share) curl_share_cleanup(h->share);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++) pthread_mutex_destroy(&h->locks[i]);
    dspy_lm_endpoints_free(&h->ep);
    free(h);
}

dspy_status dspy_openai_http_new(void **impl) {
    *impl = NULL;
    pthread_once(&g_curl_once, curl_init_once);
    if (g_curl_init_rc != CURLE_OK)
        return dspy_fail(DSPY_ERR_REMOTE, "libcurl failed to initialise: %s", curl_easy_strerror(g_curl_init_rc));
    http_impl *h = calloc(1, sizeof *h);
    if (!h) return dspy_fail(DSPY_ERR_NOMEM, "HTTP client: out of memory");
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++) pthread_mutex_init(&h->locks[i], NULL);
    dspy_lm_endpoints_init(&h->ep);
    /* DNS answers and TLS sessions are shared between calls; connections are not (libcurl does
     * not support sharing its connection cache between concurrent threads). */
    h->share = curl_share_init();
    if (!h->share) {
        http_free(h);
        return dspy_fail(DSPY_ERR_NOMEM, "HTTP client: cannot create a libcurl share");
    }
    curl_share_setopt(h->share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(h->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(h->share, CURLSHOPT_USERDATA, h);
    curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    *impl = h;
    return DSPY_OK;
}

/* ---- one attempt ------------------------------------------------------------------------- */

typedef struct attempt {
    CURLcode cc;
    long status;          /* 0 when no HTTP status line arrived */
    char errbuf[CURL_ERROR_SIZE];
    dspy_str body;
    double retry_after;   /* seconds; < 0 when the server sent none */
    curl_off_t content_length;
    bool too_large;
} attempt;

static size_t on_body(char *p, size_t size, size_t n, void *u) {
    attempt *a = u;
    size_t len = size * n;
    if (a->body.len + len > MAX_BODY_BYTES) {
        a->too_large = true;
        return 0;
    }
    dspy_str_appendn(&a->body, p, len);
    return dspy_str_ok(&a->body) ? len : 0;
}

static bool header_is(const char *line, size_t n, const char *name, const char **value) {
    size_t k = strlen(name);
    if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':') return false;
    *value = line + k + 1;
    return true;
}

static size_t on_header(char *p, size_t size, size_t n, void *u) {
    attempt *a = u;
    size_t len = size * n;
    const char *v;
    if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) {
        a->retry_after = -1; /* a new response (after 100 Continue or a redirect) */
    } else if (header_is(p, len, "retry-after-ms", &v)) {
        char *end;
        double ms = strtod(v, &end);
        if (end != v && ms >= 0) a->retry_after = ms / 1000.0;
    } else if (header_is(p, len, "retry-after", &v) && a->retry_after < 0) {
        char *end;
        double s = strtod(v, &end); /* an HTTP-date form is ignored: the backoff schedule applies */
        if (end != v && s >= 0) a->retry_after = s;
    }
    return len;
}

static bool is_loopback(const char *url) {
    const char *h = strstr(url, "://");
    h = h ? h + 3 : url;
    return strncmp(h, "127.", 4) == 0 || strncmp(h, "localhost", 9) == 0 || strncmp(h, "[::1]", 5) == 0;
}

static void sleep_s(double s) {
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Text of the server's error: error.message, error (string), message, detail; else the start
 * of the body. */
static void server_message(const dspy_str *body, dspy_str *out) {
    dspy_json *j = NULL;
    if (body->len && dspy_json_parse(body->ptr, body->len, "body", &j) == DSPY_OK && dspy_json_typeof(j) == DSPY_JSON_OBJECT) {
        const dspy_json *e = dspy_json_get(j, "error");
        const dspy_json *m = NULL;
        if (e && dspy_json_typeof(e) == DSPY_JSON_OBJECT) m = dspy_json_get(e, "message");
        else if (dspy_json_is_string(e)) m = e;
        if (!m) m = dspy_json_get(j, "message");
        if (!m) m = dspy_json_get(j, "detail");
        if (m) {
            dspy_json_pystr(m, out);
            dspy_json_decref(j);
            return;
        }
    }
    dspy_errclear();
    dspy_json_decref(j);
    if (!body->len) {
        dspy_str_append(out, "(empty body)");
        return;
    }
    size_t n = body->len < 300 ? body->len : 300;
    dspy_str_append(out, "body: ");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)body->ptr[i];
        if (c == '\n' || c == '\r' || c == '\t') dspy_str_appendc(out, ' ');
        else if (c < 0x20) dspy_str_appendf(out, "\\x%02x", c);
        else dspy_str_appendc(out, (char)c);
    }
    if (body->len > n) dspy_str_append(out, "...");
}

static const char *status_kind(long s) {
    switch (s) {
    case 401:
    case 403: return "authentication failed (check api_key / OPENAI_API_KEY)";
    case 402: return "billing error";
    case 404: return "not found (unknown model, or api_base does not serve /chat/completions)";
    case 408: return "request timeout";
    case 409: return "conflict";
    case 429: return "rate limited";
    default: return s >= 500 ? "server error" : "invalid request";
    }
}

static bool transport_retryable(CURLcode cc) {
    switch (cc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM: return true;
    default: return false;
    }
}

typedef struct req_ctx {
    const char *model; /* the LM's model string, for "[model]" prefixes */
    const char *url;
    int attempts;      /* made so far */
} req_ctx;

/* Error status and message for a failed attempt. */
static dspy_status attempt_error(const req_ctx *r, attempt *a, double timeout_s) {
    char tries[48] = "";
    if (r->attempts > 1) snprintf(tries, sizeof tries, " (after %d attempts)", r->attempts);
    if (a->cc != CURLE_OK) {
        if (a->too_large)
            return dspy_fail(DSPY_ERR_REMOTE, "[%s] HTTP %ld from %s: the response is larger than %zu MiB%s", r->model,
                             a->status, r->url, MAX_BODY_BYTES >> 20, tries);
        if (a->cc == CURLE_OPERATION_TIMEDOUT)
            return dspy_fail(DSPY_ERR_TIMEOUT, "[%s] %s did not answer within %.3g s%s: %s (raise timeout_s, or check "
                             "the server)", r->model, r->url, timeout_s, tries, a->errbuf[0] ? a->errbuf : curl_easy_strerror(a->cc));
        if (a->cc == CURLE_PARTIAL_FILE)
            return dspy_fail(DSPY_ERR_REMOTE, "[%s] HTTP %ld from %s: truncated response: the connection closed after "
                             "%zu of %lld body bytes%s", r->model, a->status, r->url, a->body.len,
                             (long long)a->content_length, tries);
        return dspy_fail(DSPY_ERR_REMOTE, "[%s] cannot complete the request to %s%s: %s", r->model, r->url, tries,
                         a->errbuf[0] ? a->errbuf : curl_easy_strerror(a->cc));
    }
    dspy_str m = DSPY_STR_INIT;
    server_message(&a->body, &m);
    dspy_status st = dspy_fail(a->status == 408 ? DSPY_ERR_TIMEOUT : DSPY_ERR_REMOTE, "[%s] HTTP %ld (%s) from %s%s: %s",
                               r->model, a->status, status_kind(a->status), r->url, tries, dspy_str_cstr(&m));
    dspy_str_free(&m);
    return st;
}

static bool status_retryable(long s) { return s == 408 || s == 409 || s == 429 || s >= 500; }

/* Parses a 2xx body into a response object with "choices". */
static dspy_status parse_ok_body(const req_ctx *r, attempt *a, dspy_json **out) {
    *out = NULL;
    dspy_json *j = NULL;
    if (!a->body.len)
        return dspy_fail(DSPY_ERR_REMOTE, "[%s] HTTP %ld from %s: the response body is empty", r->model, a->status, r->url);
    if (dspy_json_parse(a->body.ptr, a->body.len, "body", &j) != DSPY_OK) {
        dspy_str m = DSPY_STR_INIT;
        dspy_str_append(&m, dspy_errmsg());
        dspy_str snippet = DSPY_STR_INIT;
        server_message(&a->body, &snippet);
        dspy_status st = dspy_fail(DSPY_ERR_REMOTE, "[%s] HTTP %ld from %s: the response is not valid JSON (%s); %s",
                                   r->model, a->status, r->url, dspy_str_cstr(&m), dspy_str_cstr(&snippet));
        dspy_str_free(&m);
        dspy_str_free(&snippet);
        return st;
    }
    const dspy_json *choices = dspy_json_typeof(j) == DSPY_JSON_OBJECT ? dspy_json_get(j, "choices") : NULL;
    if (!choices || dspy_json_typeof(choices) != DSPY_JSON_ARRAY) {
        dspy_str m = DSPY_STR_INIT;
        server_message(&a->body, &m);
        dspy_status st = dspy_fail(DSPY_ERR_REMOTE, "[%s] HTTP %ld from %s: the response has no \"choices\" list: %s",
                                   r->model, a->status, r->url, dspy_str_cstr(&m));
        dspy_str_free(&m);
        dspy_json_decref(j);
        return st;
    }
    *out = j;
    return DSPY_OK;
}

/* ---- the request ------------------------------------------------------------------------- */

static bool client_side_key(const char *k) {
    static const char *const keys[] = {"model", "messages", "api_key", "api_base", "base_url", "rollout_id", "cache",
                                       "num_retries", "timeout", "extra_headers", NULL};
    for (const char *const *p = keys; *p; p++)
        if (strcmp(*p, k) == 0) return true;
    return false;
}

static const char *kw_str(const dspy_json *req, const char *k) {
    const dspy_json *v = dspy_json_get(req, k);
    return dspy_json_is_string(v) && dspy_json_strlen(v) ? dspy_json_str(v) : NULL;
}

static const char *env_nonempty(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* Where the request goes and with which key: kwargs api_base/base_url, then $OPENAI_BASE_URL /
 * $OPENAI_API_BASE, then OpenAI's; kwargs api_key, then $OPENAI_API_KEY ("local" for a local
 * model, whose server the launcher started without a key unless it set one). */
static dspy_status resolve_endpoint(const dspy_json *request, const char *model, bool local, const char **base_out,
                                    const char **key_out) {
    const char *base = kw_str(request, "api_base");
    if (!base) base = kw_str(request, "base_url");
    if (!base && local)
        return dspy_fail(DSPY_ERR_STATE, "[%s] no api_base: the local model's server is not running; launch it "
                         "first (it sets api_base), or pass kwargs api_base", model);
    if (!base) base = env_nonempty("OPENAI_BASE_URL");
    if (!base) base = env_nonempty("OPENAI_API_BASE");
    if (!base) base = "https://api.openai.com/v1";
    const char *key = kw_str(request, "api_key");
    if (!key) key = local ? "local" : env_nonempty("OPENAI_API_KEY");
    if (!key)
        return dspy_fail(DSPY_ERR_ARG, "[%s] no API key: set OPENAI_API_KEY or pass kwargs api_key", model);
    /* a line break would let the key inject more headers */
    if (strpbrk(key, "\r\n"))
        return dspy_fail(DSPY_ERR_ARG, "[%s] the API key contains a line break; check OPENAI_API_KEY / api_key", model);
    *base_out = base;
    *key_out = key;
    return DSPY_OK;
}

/* The JSON body: model (without "openai/"), messages, then every kwarg the server should see
 * (client-side ones such as api_key and nulls left out). */
static dspy_status build_body(const dspy_json *request, const char *model, const char *name, dspy_str *body) {
    dspy_status st = DSPY_OK;
    dspy_json *payload = dspy_json_object();
    if (!payload || dspy_json_set_str(payload, "model", name) ||
        dspy_json_set(payload, "messages", dspy_json_incref(dspy_json_get(request, "messages")))) {
        st = nomem(model);
        goto done;
    }
    for (void *it = dspy_json_iter(request); it; it = dspy_json_next(request, it)) {
        const char *k = dspy_json_iter_key(it);
        const dspy_json *v = dspy_json_iter_value(it);
        if (client_side_key(k) || dspy_json_typeof(v) == DSPY_JSON_NULL) continue;
        if (dspy_json_set(payload, k, dspy_json_incref((dspy_json *)v))) {
            st = nomem(model);
            goto done;
        }
    }
    st = dspy_json_dump(payload, DSPY_JSON_COMPACT | DSPY_JSON_UTF8, body);
done:
    dspy_json_decref(payload);
    return st;
}

/* The request headers; kwargs extra_headers come last. *out is NULL on failure. */
static dspy_status build_headers(dspy_lm *lm, const dspy_json *request, const char *model, const char *key,
                                 struct curl_slist **out) {
    dspy_str line = DSPY_STR_INIT;
    dspy_str_appendf(&line, "Authorization: Bearer %s", key);
    const char *fixed[5];
    size_t n = 0;
    fixed[n++] = "Content-Type: application/json";
    fixed[n++] = "Accept: application/json";
    fixed[n++] = dspy_str_cstr(&line);
    if (dspy_lm_profile_of(lm) == DSPY_LM_V33) fixed[n++] = "User-Agent: DSPy/3.3.1";
    fixed[n++] = "Expect:"; /* no 100-continue round trip for large bodies */
    struct curl_slist *headers = NULL, *t = NULL;
    bool ok = dspy_str_ok(&line);
    /* curl copies each line, so `line` can be reused for the extra headers */
    for (size_t i = 0; ok && i < n; i++) ok = (t = curl_slist_append(headers, fixed[i])) && (headers = t);
    const dspy_json *extra = dspy_json_get(request, "extra_headers");
    for (void *it = extra && dspy_json_typeof(extra) == DSPY_JSON_OBJECT ? dspy_json_iter(extra) : NULL; ok && it;
         it = dspy_json_next(extra, it)) {
        dspy_str_clear(&line);
        dspy_str_appendf(&line, "%s: ", dspy_json_iter_key(it));
        dspy_json_pystr(dspy_json_iter_value(it), &line);
        ok = dspy_str_ok(&line) && (t = curl_slist_append(headers, dspy_str_cstr(&line))) && (headers = t);
    }
    dspy_str_free(&line);
    if (!ok) {
        curl_slist_free_all(headers);
        return nomem(model);
    }
    *out = headers;
    return DSPY_OK;
}

/* Points the handle at the server `base` (one of api_base's): url = base + "/chat/completions". */
static dspy_status set_url(CURL *c, const char *base, const char *model, dspy_str *url) {
    dspy_str_clear(url);
    dspy_str_append(url, base);
    dspy_str_append(url, "/chat/completions");
    if (!dspy_str_ok(url)) return nomem(model);
    curl_easy_setopt(c, CURLOPT_URL, dspy_str_cstr(url));
    /* a local server must not be reached through an HTTP proxy set for the internet */
    curl_easy_setopt(c, CURLOPT_PROXY, is_loopback(dspy_str_cstr(url)) ? "" : NULL);
    return DSPY_OK;
}

/* Sends the request until it succeeds, fails for good, or the retries are spent (DSPy's
 * schedule, CC-23); a 2xx answer is parsed into *out. Each attempt picks its server from
 * api_base's list (endpoints.c); after a transport failure, another one if there is one. */
static dspy_status send_with_retries(dspy_lm *lm, http_impl *h, CURL *c, attempt *a, req_ctx *r, const char *bases,
                                     double timeout_s, dspy_json **out) {
    double unit = dspy_lm_retry_unit_s(lm);
    int max_attempts = 1 + dspy_lm_num_retries(lm);
    dspy_str url = DSPY_STR_INIT;
    int failed = -1;
    dspy_status st = DSPY_OK;
    for (;;) {
        int slot = -1;
        const char *base = NULL;
        if ((st = dspy_lm_endpoints_pick(&h->ep, bases, failed, &slot, &base))) break;
        if ((st = set_url(c, base, r->model, &url))) {
            dspy_lm_endpoints_done(&h->ep, slot);
            break;
        }
        r->url = dspy_str_cstr(&url);
        dspy_str_clear(&a->body);
        a->errbuf[0] = '\0';
        a->status = 0;
        a->retry_after = -1;
        a->content_length = -1;
        a->too_large = false;
        a->cc = curl_easy_perform(c);
        dspy_lm_endpoints_done(&h->ep, slot);
        r->attempts++;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a->status);
        curl_easy_getinfo(c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &a->content_length);
        /* a well-formed but unusable 2xx answer is not retried */
        if (a->cc == CURLE_OK && a->status >= 200 && a->status < 300) {
            st = parse_ok_body(r, a, out);
            break;
        }
        bool retryable = a->cc != CURLE_OK ? !a->too_large && transport_retryable(a->cc) : status_retryable(a->status);
        if (!retryable || r->attempts >= max_attempts) {
            st = attempt_error(r, a, timeout_s);
            break;
        }
        failed = a->cc != CURLE_OK ? slot : -1;
        /* CC-23: retry 1 immediately; after retry j (= attempt j+1) fails, min(10, 2**(j-1)). */
        int j = r->attempts - 1;
        double wait = j == 0 ? 0 : (j - 1 >= 4 ? 10.0 : (double)(1 << (j - 1)));
        if (wait > 10) wait = 10;
        if (a->retry_after >= 0) wait = a->retry_after < MAX_RETRY_AFTER_S ? a->retry_after : MAX_RETRY_AFTER_S;
        sleep_s(wait * unit);
    }
    r->url = NULL; /* the buffer goes; the messages above already hold the text */
    dspy_str_free(&url);
    return st;
}

static dspy_status http_complete(void *impl, dspy_lm *lm, const dspy_json *request, dspy_json **out) {
    http_impl *h = impl;
    *out = NULL;
    const char *model = dspy_json_str(dspy_json_get(request, "model"));
    if (!model) return dspy_fail(DSPY_ERR_ARG, "HTTP client: the request has no model");
    const char *name = strncmp(model, "openai/", 7) == 0 ? model + 7 : model;
    const char *bases = NULL, *key = NULL;
    dspy_status st = resolve_endpoint(request, model, strncmp(name, "local:", 6) == 0, &bases, &key);
    if (st) return st;

    dspy_str body = DSPY_STR_INIT;
    struct curl_slist *headers = NULL;
    CURL *c = NULL;
    attempt a;
    memset(&a, 0, sizeof a);
    if ((st = build_body(request, model, name, &body)) != DSPY_OK) goto done;
    if ((st = build_headers(lm, request, model, key, &headers)) != DSPY_OK) goto done;

    double timeout_s = dspy_lm_timeout_s(lm);
    const dspy_json *tv = dspy_json_get(request, "timeout");
    if (dspy_json_is_number(tv) && dspy_json_number(tv) > 0) timeout_s = dspy_json_number(tv);
    if (!(c = curl_easy_init())) {
        st = nomem(model);
        goto done;
    }
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, dspy_str_cstr(&body));
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body.len);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(dspy_lm_connect_timeout_s(lm) * 1000 + 0.5));
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(timeout_s * 1000 + 0.5));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &a);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &a);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, a.errbuf);
    curl_easy_setopt(c, CURLOPT_SHARE, h->share);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    req_ctx r = {model, NULL, 0};
    st = send_with_retries(lm, h, c, &a, &r, bases, timeout_s, out);
done:
    if (c) curl_easy_cleanup(c);
    curl_slist_free_all(headers);
    dspy_str_free(&a.body);
    dspy_str_free(&body);
    return st;
}

const dspy_lm_provider dspy_openai_http_provider = {"openai_http", http_complete, http_free};
