/* mlflow_rest.c — the MLflow tracking REST client (track/mlflow.h) over libcurl.
 *
 * Does: the five RPCs of service.proto that logging a run needs (GetExperimentByName,
 * CreateExperiment, CreateRun, LogBatch, UpdateRun), the proxied artifact upload, retries with
 * exponential backoff, Bearer or Basic authentication from MLflow's environment variables.
 * Does not: read runs back, search, delete, or talk to cloud artifact stores directly.
 * Follows: mlflow/protos/service.proto (message and field names, LogBatch's limits: 1000
 * metrics, 100 params, 100 tags, 1000 entities per request), mlflow/utils/rest_utils.py (the
 * /api/2.0/mlflow prefix, int64 as JSON numbers, retried statuses 429 and 5xx), and
 * mlflow/store/artifact/{http,mlflow}_artifact_repo.py (how an mlflow-artifacts: URI becomes a
 * PUT URL under /api/2.0/mlflow-artifacts/artifacts).
 */
#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "dspy/log.h"
#include "dspy/str.h"
#include "dspy/version.h"
#include "track/mlflow.h"
#include "track/track_priv.h"

enum { LIMIT_METRICS = 1000, LIMIT_PARAMS = 100, LIMIT_TAGS = 100, LIMIT_TOTAL = 1000 };
enum { MAX_PARAM_VALUE = 6000, MAX_TAG_VALUE = 5000 };
#define MAX_RESPONSE_BYTES ((size_t)16 << 20)

struct track_mlflow {
    char *uri;      /* as given, trailing '/' removed (may hold user:password) */
    char *pub;      /* without user:password */
    char *token, *user, *password;
    bool insecure;
    int max_retries;
    double backoff_s, timeout_s;
    int requests;
};

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode g_curl_rc;
static void curl_once(void) { g_curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

static const char *env(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static double env_num(const char *name, double def) {
    const char *v = env(name);
    char *end = NULL;
    double x = v ? strtod(v, &end) : def;
    return v && end && !*end && x >= 0 ? x : def;
}

dspy_mlflow_params dspy_mlflow_params_default(void) {
    return (dspy_mlflow_params){.tracking_uri = NULL, .experiment = NULL, .max_retries = -1,
                                .backoff_factor_s = -1, .timeout_s = 0};
}

void dspy_track_mlflow_free(track_mlflow *m) {
    if (!m) return;
    free(m->uri);
    free(m->pub);
    free(m->token);
    free(m->user);
    free(m->password);
    free(m);
}

const char *dspy_track_mlflow_uri(const track_mlflow *m) { return m->pub; }
int dspy_track_mlflow_requests(const track_mlflow *m) { return m->requests; }

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

dspy_status dspy_track_mlflow_open(const dspy_mlflow_params *p, track_mlflow **out) {
    *out = NULL;
    dspy_mlflow_params d = p ? *p : dspy_mlflow_params_default();
    const char *uri = d.tracking_uri && *d.tracking_uri ? d.tracking_uri : env("MLFLOW_TRACKING_URI");
    if (!uri)
        return dspy_fail(DSPY_ERR_ARG, "MLflow: no tracking URI; pass --mlflow-uri http://HOST:PORT or set "
                                       "MLFLOW_TRACKING_URI");
    if (strncmp(uri, "http://", 7) != 0 && strncmp(uri, "https://", 8) != 0)
        return dspy_fail(DSPY_ERR_ARG, "MLflow: tracking URI '%s': this client speaks http:// and https:// (a "
                         "tracking server); for a local folder use `dspy runs export --mlflow DIR`", uri);
    pthread_once(&g_curl_once, curl_once);
    if (g_curl_rc != CURLE_OK)
        return dspy_fail(DSPY_ERR_REMOTE, "libcurl failed to initialise: %s", curl_easy_strerror(g_curl_rc));
    track_mlflow *m = calloc(1, sizeof *m);
    if (!m) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    m->uri = strdup(uri);
    if (m->uri) {
        size_t n = strlen(m->uri);
        while (n > 8 && m->uri[n - 1] == '/') m->uri[--n] = '\0';
        m->pub = dspy_track_uri_public(m->uri);
    }
    m->token = dup_or_null(env("MLFLOW_TRACKING_TOKEN"));
    m->user = dup_or_null(env("MLFLOW_TRACKING_USERNAME"));
    m->password = dup_or_null(env("MLFLOW_TRACKING_PASSWORD"));
    const char *ins = env("MLFLOW_TRACKING_INSECURE_TLS");
    m->insecure = ins && (strcasecmp(ins, "true") == 0 || strcmp(ins, "1") == 0);
    m->max_retries = d.max_retries >= 0 ? d.max_retries : (int)env_num("MLFLOW_HTTP_REQUEST_MAX_RETRIES", 3);
    m->backoff_s = d.backoff_factor_s >= 0 ? d.backoff_factor_s : env_num("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", 1);
    m->timeout_s = d.timeout_s > 0 ? d.timeout_s : env_num("MLFLOW_HTTP_REQUEST_TIMEOUT", 30);
    if (m->timeout_s <= 0) m->timeout_s = 30;
    if (!m->uri || !m->pub || (env("MLFLOW_TRACKING_TOKEN") && !m->token) ||
        (env("MLFLOW_TRACKING_USERNAME") && !m->user) || (env("MLFLOW_TRACKING_PASSWORD") && !m->password)) {
        dspy_track_mlflow_free(m);
        return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    }
    *out = m;
    return DSPY_OK;
}

/* ---- one HTTP exchange with retries --------------------------------------------------------- */

typedef struct call {
    const char *rpc;      /* for messages: "CreateRun" */
    long status;          /* the last HTTP status, 0 when none arrived */
    char error_code[64];  /* MLflow's error_code of a failed answer, or "" */
    dspy_str body;        /* the last answer */
    bool too_big;
} call;

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
    call *c = ud;
    size_t k = size * n;
    if (c->body.len + k > MAX_RESPONSE_BYTES) {
        c->too_big = true;
        return 0;
    }
    dspy_str_appendn(&c->body, p, k);
    return dspy_str_ok(&c->body) ? k : 0;
}

static bool transport_retryable(CURLcode cc) {
    switch (cc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return true;
    default:
        return false;
    }
}

static void sleep_s(double s) {
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static bool is_loopback(const char *url) {
    const char *h = strstr(url, "://");
    h = h ? h + 3 : url;
    const char *at = strchr(h, '@'), *slash = strchr(h, '/');
    if (at && (!slash || at < slash)) h = at + 1;
    return strncmp(h, "127.", 4) == 0 || strncmp(h, "localhost", 9) == 0 || strncmp(h, "[::1]", 5) == 0;
}

/* The error_code and message of an MLflow error answer ({"error_code": ..., "message": ...}). */
static void error_text(call *c, dspy_str *msg) {
    dspy_json *o = NULL;
    if (c->body.len && dspy_json_parse(c->body.ptr, c->body.len, "MLflow answer", &o) == DSPY_OK &&
        dspy_json_typeof(o) == DSPY_JSON_OBJECT) {
        snprintf(c->error_code, sizeof c->error_code, "%s", dspy_json_str_or(o, "error_code", ""));
        const char *m = dspy_json_str_or(o, "message", "");
        dspy_str_appendf(msg, "%s%s%s", c->error_code, *c->error_code && *m ? ": " : "", m);
    } else if (c->body.len) {
        dspy_str_appendf(msg, "%.*s", c->body.len > 300 ? 300 : (int)c->body.len, c->body.ptr);
    }
    dspy_json_decref(o);
}

static bool add_header(struct curl_slist **list, const char *line) {
    struct curl_slist *t = curl_slist_append(*list, line);
    if (t) *list = t;
    return t != NULL;
}

/* Sends the request (retrying as the header says); DSPY_OK with c->body for a 2xx answer. */
static dspy_status perform(track_mlflow *m, call *c, const char *method, const char *url, const char *ctype,
                           const void *data, size_t len) {
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *headers = NULL;
    dspy_str auth = DSPY_STR_INIT, ct = DSPY_STR_INIT;
    dspy_status st = DSPY_OK;
    CURLcode cc = CURLE_OK;
    int attempts = 0;
    CURL *h = curl_easy_init();
    if (!h) {
        st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        goto fail;
    }
    dspy_str_appendf(&ct, "Content-Type: %s", ctype ? ctype : "application/json");
    if (m->token) dspy_str_appendf(&auth, "Authorization: Bearer %s", m->token);
    if (!dspy_str_ok(&ct) || !dspy_str_ok(&auth) || !add_header(&headers, ct.ptr) ||
        !add_header(&headers, "Accept: application/json") || !add_header(&headers, "Expect:") ||
        !add_header(&headers, "User-Agent: dspy.c/" DSPY_VERSION_STRING) || (m->token && !add_header(&headers, auth.ptr))) {
        st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        goto fail;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (data) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, data);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    } else {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(fmin(m->timeout_s, 10.0) * 1000 + 0.5));
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(m->timeout_s * 1000 + 0.5));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    if (m->user) curl_easy_setopt(h, CURLOPT_USERNAME, m->user);
    if (m->password) curl_easy_setopt(h, CURLOPT_PASSWORD, m->password);
    if (m->insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (is_loopback(url)) curl_easy_setopt(h, CURLOPT_PROXY, "");
    for (;;) {
        dspy_str_clear(&c->body);
        c->status = 0;
        c->too_big = false;
        c->error_code[0] = '\0';
        errbuf[0] = '\0';
        cc = curl_easy_perform(h);
        attempts++;
        m->requests++;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &c->status);
        if (cc == CURLE_OK && c->status >= 200 && c->status < 300) goto fail; /* st is DSPY_OK */
        bool retry = cc != CURLE_OK ? transport_retryable(cc) && !c->too_big : c->status == 429 || c->status >= 500;
        if (!retry || attempts > m->max_retries) break;
        /* why: the server may be restarting or overloaded; waits grow as urllib3's Retry does */
        sleep_s(m->backoff_s * ldexp(1.0, attempts - 1));
    }
    dspy_str msg = DSPY_STR_INIT;
    if (cc != CURLE_OK) {
        dspy_str_append(&msg, c->too_big ? "the answer is larger than 16 MiB" : errbuf[0] ? errbuf : curl_easy_strerror(cc));
        st = dspy_fail(cc == CURLE_OPERATION_TIMEDOUT ? DSPY_ERR_TIMEOUT : DSPY_ERR_REMOTE,
                       "MLflow %s (%s %s): %s, after %d attempt%s; is the tracking server at %s running? (the run "
                       "itself is kept in its directory)", c->rpc, method, m->pub, dspy_str_cstr(&msg), attempts,
                       attempts == 1 ? "" : "s", m->pub);
    } else {
        error_text(c, &msg);
        st = dspy_fail(c->status == 404 ? DSPY_ERR_NOTFOUND : DSPY_ERR_REMOTE, "MLflow %s (%s %s): HTTP %ld%s%s%s",
                       c->rpc, method, m->pub, c->status, msg.len ? " " : "", dspy_str_cstr(&msg),
                       c->status >= 500 ? (attempts > 1 ? " (after retries)" : "") : "");
    }
    dspy_str_free(&msg);
fail:
    curl_slist_free_all(headers);
    if (h) curl_easy_cleanup(h);
    dspy_str_free(&auth);
    dspy_str_free(&ct);
    return st;
}

/* Percent-encodes s (RFC 3986 unreserved kept; '/' kept when keep_slash). */
static void url_encode(dspy_str *out, const char *s, bool keep_slash) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char ch = *p;
        bool plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                     ch == '_' || ch == '.' || ch == '~' || (keep_slash && ch == '/');
        if (plain) dspy_str_appendc(out, (char)ch);
        else dspy_str_appendf(out, "%%%02X", ch);
    }
}

/* An RPC under /api/2.0/mlflow/: GET with `query` or POST with the JSON body `req`; the answer
 * parsed into *resp (may be NULL). */
static dspy_status rpc(track_mlflow *m, const char *name, const char *path, const char *query, const dspy_json *req,
                       dspy_json **resp, call *c) {
    if (resp) *resp = NULL;
    dspy_str url = DSPY_STR_INIT, body = DSPY_STR_INIT;
    c->rpc = name;
    dspy_str_appendf(&url, "%s/api/2.0/mlflow/%s%s%s", m->uri, path, query ? "?" : "", query ? query : "");
    dspy_status st = req ? dspy_json_dump(req, DSPY_JSON_COMPACT | DSPY_JSON_UTF8, &body) : DSPY_OK;
    if (!st && (!dspy_str_ok(&url) || !dspy_str_ok(&body))) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!st) st = perform(m, c, req ? "POST" : "GET", url.ptr, NULL, req ? body.ptr : NULL, body.len);
    if (!st && resp) {
        st = dspy_json_parse(c->body.len ? c->body.ptr : "{}", c->body.len ? c->body.len : 2, "MLflow answer", resp);
        if (st) dspy_fail_wrap(st, "MLflow %s", name);
    }
    dspy_str_free(&url);
    dspy_str_free(&body);
    return st;
}

static void call_free(call *c) { dspy_str_free(&c->body); }

/* ---- the RPCs ---------------------------------------------------------------------------------- */

static dspy_status get_by_name(track_mlflow *m, const char *name, char **id) {
    dspy_str q = DSPY_STR_INIT;
    dspy_str_append(&q, "experiment_name=");
    url_encode(&q, name, false);
    call c = {0};
    dspy_json *resp = NULL;
    dspy_status st = dspy_str_ok(&q) ? rpc(m, "GetExperimentByName", "experiments/get-by-name", q.ptr, NULL, &resp, &c)
                                     : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (st == DSPY_ERR_NOTFOUND && strcmp(c.error_code, "RESOURCE_DOES_NOT_EXIST") != 0 && c.error_code[0])
        st = DSPY_ERR_REMOTE;
    if (!st) {
        const dspy_json *e = dspy_json_get(resp, "experiment");
        const char *eid = dspy_json_str_or(e, "experiment_id", NULL);
        if (!eid) st = dspy_fail(DSPY_ERR_FORMAT, "MLflow GetExperimentByName: the answer has no experiment_id");
        else if (strcmp(dspy_json_str_or(e, "lifecycle_stage", "active"), "deleted") == 0)
            st = dspy_fail(DSPY_ERR_ARG, "MLflow: experiment '%s' (id %s) is deleted; restore it (`mlflow experiments "
                           "restore --experiment-id %s`) or set MLFLOW_EXPERIMENT_NAME to another name", name, eid, eid);
        else if (!(*id = strdup(eid))) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    }
    dspy_json_decref(resp);
    call_free(&c);
    dspy_str_free(&q);
    return st;
}

dspy_status dspy_track_mlflow_experiment(track_mlflow *m, const char *name, char **id) {
    *id = NULL;
    dspy_status st = get_by_name(m, name, id);
    if (st != DSPY_ERR_NOTFOUND) return st;
    dspy_json *req = dspy_json_object(), *resp = NULL;
    call c = {0};
    st = req ? dspy_json_set_str(req, "name", name) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!st) st = rpc(m, "CreateExperiment", "experiments/create", NULL, req, &resp, &c);
    if (st && strcmp(c.error_code, "RESOURCE_ALREADY_EXISTS") == 0) {
        st = get_by_name(m, name, id); /* another client created it meanwhile */
    } else if (!st) {
        const char *eid = dspy_json_str_or(resp, "experiment_id", NULL);
        if (!eid) st = dspy_fail(DSPY_ERR_FORMAT, "MLflow CreateExperiment: the answer has no experiment_id");
        else if (!(*id = strdup(eid))) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    }
    dspy_json_decref(req);
    dspy_json_decref(resp);
    call_free(&c);
    return st;
}

/* [{"key": k, "value": v}, ...] from an object of strings, values cut to `max` bytes. */
static dspy_status kv_list(const dspy_json *obj, void **it, size_t limit, size_t max, const char *what,
                           dspy_json *arr, size_t *n) {
    *n = 0;
    for (; *it && *n < limit; *it = dspy_json_next(obj, *it), (*n)++) {
        const char *k = dspy_json_iter_key(*it);
        const char *v = dspy_json_str(dspy_json_iter_value(*it));
        if (!v) v = "";
        size_t len = strlen(v);
        if (len > max) {
            len = max;
            while (len && ((unsigned char)v[len] & 0xC0) == 0x80) len--; /* whole UTF-8 characters */
            dspy_log(DSPY_LOG_WARN, "MLflow: %s '%s' is %zu bytes; MLflow keeps at most %zu, so it is cut (the "
                     "run directory has it whole)", what, k, strlen(v), max);
        }
        dspy_json *e = dspy_json_object();
        dspy_status st = e ? dspy_json_set_str(e, "key", k) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        if (!st) st = dspy_json_set(e, "value", dspy_json_stringn(v, len));
        if (!st) st = dspy_json_append(arr, e);
        else dspy_json_decref(e);
        if (st) return st;
    }
    return DSPY_OK;
}

dspy_status dspy_track_mlflow_create_run(track_mlflow *m, const char *experiment_id, const char *run_name,
                                    int64_t start_ms, const dspy_json *tags, char **run_id, char **artifact_uri) {
    *run_id = NULL;
    *artifact_uri = NULL;
    dspy_json *req = dspy_json_object(), *resp = NULL, *tl = dspy_json_array();
    call c = {0};
    size_t n = 0;
    void *it = tags ? dspy_json_iter(tags) : NULL;
    dspy_status st = req && tl ? dspy_json_set_str(req, "experiment_id", experiment_id)
                               : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!st && run_name) st = dspy_json_set_str(req, "run_name", run_name);
    if (!st) st = dspy_json_set(req, "start_time", dspy_json_int(start_ms));
    if (!st) st = kv_list(tags, &it, LIMIT_TAGS, MAX_TAG_VALUE, "tag", tl, &n);
    if (!st) st = dspy_json_set(req, "tags", dspy_json_incref(tl));
    if (!st) st = rpc(m, "CreateRun", "runs/create", NULL, req, &resp, &c);
    if (!st) {
        const dspy_json *info = dspy_json_get(dspy_json_get(resp, "run"), "info");
        const char *rid = dspy_json_str_or(info, "run_id", dspy_json_str_or(info, "run_uuid", NULL));
        const char *au = dspy_json_str_or(info, "artifact_uri", "");
        if (!rid) st = dspy_fail(DSPY_ERR_FORMAT, "MLflow CreateRun: the answer has no run.info.run_id");
        else if (!(*run_id = strdup(rid)) || !(*artifact_uri = strdup(au))) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    }
    if (st) {
        free(*run_id);
        free(*artifact_uri);
        *run_id = *artifact_uri = NULL;
    }
    dspy_json_decref(tl);
    dspy_json_decref(req);
    dspy_json_decref(resp);
    call_free(&c);
    return st;
}

dspy_status dspy_track_mlflow_log_batch(track_mlflow *m, const char *run_id, const dspy_json *metrics,
                                   const dspy_json *params, const dspy_json *tags) {
    void *pit = params ? dspy_json_iter(params) : NULL, *tit = tags ? dspy_json_iter(tags) : NULL;
    size_t mi = 0, nm = metrics ? dspy_json_size(metrics) : 0;
    dspy_status st = DSPY_OK;
    while (!st && (pit || tit || mi < nm)) {
        dspy_json *req = dspy_json_object(), *ml = dspy_json_array(), *pl = dspy_json_array(), *tl = dspy_json_array();
        size_t np = 0, nt = 0;
        call c = {0};
        st = req && ml && pl && tl ? dspy_json_set_str(req, "run_id", run_id) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        if (!st) st = kv_list(params, &pit, LIMIT_PARAMS, MAX_PARAM_VALUE, "param", pl, &np);
        if (!st) st = kv_list(tags, &tit, LIMIT_TAGS, MAX_TAG_VALUE, "tag", tl, &nt);
        size_t room = LIMIT_TOTAL - np - nt;
        if (room > LIMIT_METRICS) room = LIMIT_METRICS;
        for (size_t k = 0; !st && k < room && mi < nm; k++, mi++) {
            const dspy_json *p = dspy_json_at(metrics, mi);
            double v = 0;
            dspy_json *e = dspy_json_object();
            st = e ? dspy_json_set_str(e, "key", dspy_json_str_or(p, "key", "")) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
            if (!st && !dspy_track_number_of(dspy_json_get(p, "value"), &v))
                st = dspy_fail(DSPY_ERR_FORMAT, "metric '%s': the value is not a number", dspy_json_str_or(p, "key", ""));
            if (!st) st = dspy_json_set(e, "value", dspy_track_number(v));
            if (!st) st = dspy_json_set(e, "timestamp", dspy_json_int(dspy_json_int_or(p, "timestamp", 0)));
            if (!st) st = dspy_json_set(e, "step", dspy_json_int(dspy_json_int_or(p, "step", 0)));
            if (!st) st = dspy_json_append(ml, e);
            else dspy_json_decref(e);
        }
        if (!st) st = dspy_json_set(req, "metrics", dspy_json_incref(ml));
        if (!st) st = dspy_json_set(req, "params", dspy_json_incref(pl));
        if (!st) st = dspy_json_set(req, "tags", dspy_json_incref(tl));
        if (!st) st = rpc(m, "LogBatch", "runs/log-batch", NULL, req, NULL, &c);
        dspy_json_decref(req);
        dspy_json_decref(ml);
        dspy_json_decref(pl);
        dspy_json_decref(tl);
        call_free(&c);
    }
    return st;
}

dspy_status dspy_track_mlflow_update_run(track_mlflow *m, const char *run_id, const char *status, int64_t end_ms) {
    dspy_json *req = dspy_json_object();
    call c = {0};
    dspy_status st = req ? dspy_json_set_str(req, "run_id", run_id) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!st) st = dspy_json_set_str(req, "status", status);
    if (!st) st = dspy_json_set(req, "end_time", dspy_json_int(end_ms));
    if (!st) st = rpc(m, "UpdateRun", "runs/update", NULL, req, NULL, &c);
    dspy_json_decref(req);
    call_free(&c);
    return st;
}

/* ---- artifacts ------------------------------------------------------------------------------------ */

/* scheme://authority part of a URI (authority with user:password when present) and its path. */
static void split_uri(const char *uri, dspy_strv *origin, dspy_strv *path) {
    const char *s = strstr(uri, "://");
    const char *host = s ? s + 3 : uri;
    const char *slash = strchr(host, '/');
    if (!slash) slash = host + strlen(host);
    *origin = dspy_strv_make(uri, (size_t)(slash - uri));
    *path = dspy_strv_of(slash);
}

/* MlflowArtifactsRepository.resolve_uri: mlflow-artifacts:[//host:port]/path -> the origin
 * (the URI's host and port, else the tracking server's) + /api/2.0/mlflow-artifacts/artifacts
 * + the tracking URI's path + path, repeated slashes collapsed. */
static dspy_status proxied_url(const track_mlflow *m, const char *artifact_uri, dspy_str *out) {
    const char *rest = artifact_uri + strlen("mlflow-artifacts:");
    dspy_strv t_origin, t_path;
    split_uri(m->uri, &t_origin, &t_path);
    dspy_str path = DSPY_STR_INIT;
    dspy_str_append(&path, "/api/2.0/mlflow-artifacts/artifacts/");
    dspy_str_appendv(&path, t_path);
    if (strncmp(rest, "//", 2) == 0) {
        const char *host = rest + 2, *slash = strchr(host, '/');
        size_t hl = slash ? (size_t)(slash - host) : strlen(host);
        const char *colon = memchr(host, ':', hl);
        const char *scheme_end = strstr(m->uri, "://");
        if (hl == 0 || !colon) {
            dspy_str_free(&path);
            return dspy_fail(DSPY_ERR_ARG, "MLflow: artifact URI '%s' needs host:port", artifact_uri);
        }
        dspy_str_appendn(out, m->uri, (size_t)(scheme_end - m->uri) + 3);
        dspy_str_appendn(out, host, hl);
        dspy_str_append(&path, slash ? slash : "");
    } else {
        dspy_str_appendv(out, t_origin);
        dspy_str_append(&path, rest);
    }
    /* collapse "//" in the path only */
    for (size_t i = 0; path.ptr && i < path.len; i++)
        if (path.ptr[i] != '/' || out->len == 0 || out->ptr[out->len - 1] != '/') dspy_str_appendc(out, path.ptr[i]);
    while (out->len > 1 && out->ptr && out->ptr[out->len - 1] == '/') out->ptr[--out->len] = '\0';
    dspy_str_free(&path);
    return dspy_str_ok(out) ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
}

static const char *mime_of(const char *rel) {
    const char *dot = strrchr(rel, '.');
    if (!dot) return "application/octet-stream";
    if (strcmp(dot, ".json") == 0) return "application/json";
    if (strcmp(dot, ".html") == 0) return "text/html";
    if (strcmp(dot, ".csv") == 0) return "text/csv";
    if (strcmp(dot, ".txt") == 0 || strcmp(dot, ".log") == 0) return "text/plain";
    return "application/octet-stream"; /* .jsonl too, as Python's mimetypes has no entry for it */
}

dspy_status dspy_track_mlflow_upload(track_mlflow *m, const char *artifact_uri, const char *rel, const char *local_path) {
    if (strncmp(artifact_uri, "file://", 7) == 0 || artifact_uri[0] == '/') {
        const char *dir = artifact_uri[0] == '/' ? artifact_uri : artifact_uri + 7;
        if (dir[0] != '/')
            return dspy_fail(DSPY_ERR_ARG, "MLflow: artifact URI '%s' is not a local absolute path", artifact_uri);
        char *dst = dspy_track_join(dir, rel);
        dspy_status st = dst ? dspy_track_copy_file(local_path, dst) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        free(dst);
        return st;
    }
    dspy_str url = DSPY_STR_INIT;
    dspy_status st = DSPY_OK;
    if (strncmp(artifact_uri, "mlflow-artifacts:", 17) == 0) {
        st = proxied_url(m, artifact_uri, &url);
    } else if (strncmp(artifact_uri, "http://", 7) == 0 || strncmp(artifact_uri, "https://", 8) == 0) {
        dspy_str_append(&url, artifact_uri);
        while (url.len && url.ptr[url.len - 1] == '/') url.ptr[--url.len] = '\0';
    } else {
        return dspy_fail(DSPY_ERR_ARG, "MLflow: the run's artifact store is '%s', which this client cannot write; "
                         "start the tracking server with --serve-artifacts (MLflow's default since 2.0) so that "
                         "artifacts go through it", artifact_uri);
    }
    char *data = NULL;
    size_t len = 0;
    call c = {0};
    c.rpc = "artifact upload";
    dspy_str_appendc(&url, '/');
    url_encode(&url, rel, true);
    if (!st && !dspy_str_ok(&url)) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!st) st = dspy_read_file(local_path, &data, &len);
    /* an empty body still needs a non-NULL pointer so that curl sends "Content-Length: 0" */
    if (!st) st = perform(m, &c, "PUT", url.ptr, mime_of(rel), data ? data : "", len);
    if (st) dspy_fail_append(st, " (artifact %s)", rel);
    free(data);
    call_free(&c);
    dspy_str_free(&url);
    return st;
}
