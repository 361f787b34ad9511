/* hf_datasets.c — Hugging Face dataset viewer client (see include/dspy/hf_datasets.h).
 *
 * One libcurl easy handle per load (keep-alive across pages). Retry policy: HTTP 429/5xx and
 * transport failures (timeouts, resets, truncated bodies) are retried with exponential backoff;
 * other HTTP errors are final. A load whose first contact cannot even connect fails at once:
 * retrying a machine without network only delays the message that says what to do.
 * Follows https://huggingface.co/docs/dataset-viewer (the /info and /rows endpoints).
 */
#include "dspy/hf_datasets.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dspy/clock.h"
#include "dspy/jsonl.h"
#include "dspy/str.h"
#include "example_internal.h"

static const char k_offline_hint[] =
    "without network access, load the data from a local copy instead (dspy CLI: --data-dir DIR, "
    "a folder with the dataset's CSV files; library: data_dir), or point DSPY_HF_ENDPOINT at a "
    "reachable mirror";

dspy_hf_params dspy_hf_params_default(void) {
    dspy_hf_params p = {0};
    p.use_cache = true;
    p.connect_timeout_ms = 5000;
    p.timeout_ms = 30000;
    p.max_retries = 5;
    p.backoff_ms = 500;
    p.max_backoff_ms = 8000;
    p.page_size = 100;
    return p;
}

void dspy_hf_names_free(char **names, size_t n) {
    if (!names) return;
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* ---- HTTP ------------------------------------------------------------------------------ */

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode g_curl_init_rc;
static void curl_init_once(void) { g_curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

typedef struct {
    dspy_hf_params p;
    const char *endpoint;
    const char *token;
    CURL *curl;
    struct curl_slist *headers;
    bool reached; /* some request of this session got an HTTP answer */
} session;

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *ud) {
    dspy_str *s = ud;
    dspy_str_appendn(s, ptr, size * nmemb);
    return dspy_str_ok(s) ? size * nmemb : 0;
}

static dspy_status session_open(session *s, const dspy_hf_params *p) {
    memset(s, 0, sizeof *s);
    s->p = p ? *p : dspy_hf_params_default();
    if (s->p.page_size < 1 || s->p.page_size > 100)
        return dspy_fail(DSPY_ERR_ARG, "hf: page_size %d is out of range 1..100", s->p.page_size);
    if (s->p.max_retries < 0) s->p.max_retries = 0;
    s->endpoint = s->p.endpoint;
    if (!s->endpoint || !*s->endpoint) s->endpoint = getenv("DSPY_HF_ENDPOINT");
    if (!s->endpoint || !*s->endpoint) s->endpoint = DSPY_HF_DEFAULT_ENDPOINT;
    s->token = s->p.token ? s->p.token : getenv("HF_TOKEN");
    pthread_once(&g_curl_once, curl_init_once);
    if (g_curl_init_rc != CURLE_OK)
        return dspy_fail(DSPY_ERR_IO, "hf: libcurl initialisation failed: %s",
                         curl_easy_strerror(g_curl_init_rc));
    s->curl = curl_easy_init();
    if (!s->curl) return dspy_fail(DSPY_ERR_NOMEM, "hf: cannot create a libcurl handle");
    if (s->token && *s->token) {
        dspy_str h = DSPY_STR_INIT;
        dspy_str_appendf(&h, "Authorization: Bearer %s", s->token);
        struct curl_slist *l = dspy_str_ok(&h) ? curl_slist_append(NULL, h.ptr) : NULL;
        dspy_str_free(&h);
        if (!l) return dspy_fail(DSPY_ERR_NOMEM, "hf: out of memory building request headers");
        s->headers = l;
    }
    return DSPY_OK;
}

static void session_close(session *s) {
    if (s->curl) curl_easy_cleanup(s->curl);
    curl_slist_free_all(s->headers);
}

static bool transient_curl_error(CURLcode rc) {
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return true;
    default:
        return false;
    }
}

/* GET base+path_query into *body (HTTP 200 only). `what` names the request in messages. */
static dspy_status http_get(session *s, const char *path_query, const char *what, dspy_str *body) {
    dspy_str url = DSPY_STR_INIT;
    dspy_str_append(&url, s->endpoint);
    while (url.len && url.ptr[url.len - 1] == '/') url.ptr[--url.len] = '\0';
    dspy_str_append(&url, path_query);
    if (!dspy_str_ok(&url)) return dspy_fail(DSPY_ERR_NOMEM, "hf: out of memory");
    char errbuf[CURL_ERROR_SIZE];
    dspy_str last = DSPY_STR_INIT;
    dspy_status last_code = DSPY_ERR_REMOTE;
    dspy_status st = DSPY_OK;
    long delay = s->p.backoff_ms;
    for (int attempt = 0;; attempt++) {
        dspy_str_clear(body);
        errbuf[0] = '\0';
        CURL *c = s->curl;
        curl_easy_setopt(c, CURLOPT_URL, url.ptr);
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(c, CURLOPT_USERAGENT, "dspy.c");
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, s->p.connect_timeout_ms);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, s->p.timeout_ms);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, s->headers);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
        CURLcode rc = curl_easy_perform(c);
        bool retry;
        dspy_str_clear(&last);
        if (rc == CURLE_OK) {
            long code = 0;
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
            s->reached = true;
            if (code == 200) break;
            dspy_str_appendf(&last, "HTTP %ld", code);
            if (body->len) {
                size_t n = body->len < 300 ? body->len : 300;
                dspy_str_append(&last, ": ");
                for (size_t i = 0; i < n; i++)
                    dspy_str_appendc(&last, body->ptr[i] == '\n' ? ' ' : body->ptr[i]);
            }
            retry = code == 429 || code >= 500;
            last_code = DSPY_ERR_REMOTE;
            if (!retry) {
                st = dspy_fail(code == 404 ? DSPY_ERR_NOTFOUND : DSPY_ERR_REMOTE, "hf: GET %s (%s): %s",
                               url.ptr, what, dspy_str_cstr(&last));
                break;
            }
        } else {
            curl_off_t connect_us = 0;
            curl_easy_getinfo(c, CURLINFO_CONNECT_TIME_T, &connect_us);
            dspy_str_appendf(&last, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
            if (rc == CURLE_WRITE_ERROR && !dspy_str_ok(body)) {
                st = dspy_fail(DSPY_ERR_NOMEM, "hf: out of memory receiving %s", what);
                break;
            }
            if (!s->reached && connect_us == 0) {
                st = dspy_fail(rc == CURLE_OPERATION_TIMEDOUT ? DSPY_ERR_TIMEOUT : DSPY_ERR_IO,
                               "hf: cannot reach the dataset viewer at %s (%s); %s", s->endpoint,
                               dspy_str_cstr(&last), k_offline_hint);
                break;
            }
            retry = transient_curl_error(rc);
            last_code = rc == CURLE_OPERATION_TIMEDOUT ? DSPY_ERR_TIMEOUT : DSPY_ERR_IO;
            if (!retry) {
                st = dspy_fail(DSPY_ERR_IO, "hf: GET %s (%s): %s", url.ptr, what, dspy_str_cstr(&last));
                break;
            }
        }
        if (attempt >= s->p.max_retries) {
            st = dspy_fail(last_code, "hf: GET %s (%s) failed after %d attempts; last error: %s",
                           url.ptr, what, attempt + 1, dspy_str_cstr(&last));
            break;
        }
        if (delay > 0) dspy_sleep_ms(delay);
        delay = delay * 2 > s->p.max_backoff_ms ? s->p.max_backoff_ms : delay * 2;
    }
    curl_easy_setopt(s->curl, CURLOPT_ERRORBUFFER, NULL);
    dspy_str_free(&url);
    dspy_str_free(&last);
    if (!st && !dspy_str_ok(body)) st = dspy_fail(DSPY_ERR_NOMEM, "hf: out of memory receiving %s", what);
    return st;
}

/* ---- cache paths ----------------------------------------------------------------------- */

/* Appends `v` as one safe path component: [A-Za-z0-9._-] kept, '/' -> "__", others %XX. */
static void append_component(dspy_str *s, const char *v) {
    if (strcmp(v, ".") == 0 || strcmp(v, "..") == 0) {
        dspy_str_append(s, v[1] ? "%2E%2E" : "%2E");
        return;
    }
    for (const unsigned char *c = (const unsigned char *)v; *c; c++) {
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
            *c == '.' || *c == '_' || *c == '-')
            dspy_str_appendc(s, (char)*c);
        else if (*c == '/') dspy_str_append(s, "__");
        else dspy_str_appendf(s, "%%%02X", *c);
    }
}


/* <cache>/<dataset>/<config> into *dir (empty when caching is off). */
static dspy_status cache_dir_of(const session *s, const char *dataset, const char *config,
                                dspy_str *dir) {
    if (!s->p.use_cache) return DSPY_OK;
    const char *base = s->p.cache_dir;
    if (base && *base) dspy_str_append(dir, base);
    else if (getenv("DSPY_CACHEDIR") && *getenv("DSPY_CACHEDIR"))
        dspy_str_appendf(dir, "%s/hf", getenv("DSPY_CACHEDIR"));
    else if (getenv("HOME") && *getenv("HOME"))
        dspy_str_appendf(dir, "%s/.dspy_cache/hf", getenv("HOME"));
    else
        return dspy_fail(DSPY_ERR_ARG, "hf: no cache folder: set DSPY_CACHEDIR or HOME, or pass a cache dir");
    dspy_str_appendc(dir, '/');
    append_component(dir, dataset);
    dspy_str_appendc(dir, '/');
    append_component(dir, config);
    return dspy_str_ok(dir) ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
}

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static dspy_status escape_into(session *s, dspy_str *q, const char *v) {
    char *e = curl_easy_escape(s->curl, v, 0);
    if (!e) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_str_append(q, e);
    curl_free(e);
    return DSPY_OK;
}

/* ---- /info ----------------------------------------------------------------------------- */

static dspy_status check_args(const char *dataset, const char *config, const char *split) {
    if (!dataset || !*dataset || !config || !*config || (split && !*split))
        return dspy_fail(DSPY_ERR_ARG, "hf: dataset, config and split must be non-empty");
    return DSPY_OK;
}

dspy_status dspy_hf_class_names(const dspy_hf_params *p, const char *dataset, const char *config,
                                const char *feature, char ***names, size_t *n) {
    *names = NULL;
    *n = 0;
    dspy_status st = check_args(dataset, config, "x");
    if (st) return st;
    session s;
    dspy_str dir = DSPY_STR_INIT, path = DSPY_STR_INIT, body = DSPY_STR_INIT, q = DSPY_STR_INIT;
    json_t *root = NULL;
    char **out = NULL;
    size_t count = 0;
    if ((st = session_open(&s, p))) goto done;
    if ((st = cache_dir_of(&s, dataset, config, &dir))) goto done;
    bool cached = false;
    if (dir.len) {
        dspy_str_appendf(&path, "%s/info.json", dir.ptr);
        cached = file_exists(path.ptr);
    }
    const char *src;
    if (cached) {
        char *data;
        size_t len;
        if ((st = dspy_read_file(path.ptr, &data, &len))) goto done;
        dspy_str_appendn(&body, data, len);
        free(data);
        src = path.ptr;
    } else {
        dspy_str_append(&q, "/info?dataset=");
        escape_into(&s, &q, dataset);
        dspy_str_append(&q, "&config=");
        escape_into(&s, &q, config);
        if ((st = http_get(&s, dspy_str_cstr(&q), "dataset info", &body))) goto done;
        src = "GET /info";
    }
    json_error_t err;
    root = json_loadb(dspy_str_cstr(&body), body.len, 0, &err);
    if (!root) {
        st = dspy_fail(DSPY_ERR_FORMAT, "hf: %s for %s: not valid JSON (column %d: %s)", src, dataset,
                       err.column, err.text);
        goto done;
    }
    json_t *info = json_object_get(root, "dataset_info");
    if (info && !json_object_get(info, "features")) info = json_object_get(info, config);
    json_t *feats = info ? json_object_get(info, "features") : NULL;
    json_t *names_j = json_object_get(json_object_get(feats, feature), "names");
    if (!json_is_array(names_j)) {
        st = dspy_fail(DSPY_ERR_FORMAT,
                       "hf: %s for %s (config %s): no ClassLabel feature '%s' with \"names\" in "
                       "dataset_info.features",
                       src, dataset, config, feature);
        goto done;
    }
    count = json_array_size(names_j);
    out = calloc(count ? count : 1, sizeof *out);
    if (!out) {
        st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < count; i++) {
        const char *nm = json_string_value(json_array_get(names_j, i));
        if (!nm) {
            st = dspy_fail(DSPY_ERR_FORMAT, "hf: %s for %s: label name %zu is not a string", src,
                           dataset, i);
            goto done;
        }
        if (!(out[i] = strdup(nm))) {
            st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
            goto done;
        }
    }
    if (!cached && dir.len) {
        if ((st = dspy_mkdir_p(dir.ptr))) {
            dspy_fail_append(st, "; choose another cache folder with --cache-dir or DSPY_CACHEDIR");
            goto done;
        }
        if ((st = dspy_write_file(path.ptr, body.ptr, body.len))) goto done;
    }
    *names = out;
    *n = count;
    out = NULL;
done:
    dspy_hf_names_free(out, count);
    json_decref(root);
    session_close(&s);
    dspy_str_free(&dir);
    dspy_str_free(&path);
    dspy_str_free(&body);
    dspy_str_free(&q);
    return st;
}

/* ---- /rows ----------------------------------------------------------------------------- */

/* Validates one /rows page at `offset` and appends its rows. *total is set by the first page
 * and must not change. Returns the number of rows in *got. */
static dspy_status take_page(const char *body, size_t len, const char *what, size_t offset,
                             long long *total, dspy_dataset *ds, size_t *got) {
    *got = 0;
    json_error_t err;
    json_t *root = json_loadb(body, len, 0, &err);
    dspy_status st = DSPY_OK;
    if (!root) {
        st = dspy_fail(DSPY_ERR_FORMAT, "hf: %s: page at offset %zu is not valid JSON (column %d: %s)",
                       what, offset, err.column, err.text);
        goto done;
    }
    json_t *nt = json_object_get(root, "num_rows_total"), *rows = json_object_get(root, "rows");
    if (!json_is_integer(nt) || json_integer_value(nt) < 0 || !json_is_array(rows)) {
        st = dspy_fail(DSPY_ERR_FORMAT,
                       "hf: %s: page at offset %zu lacks \"rows\" (array) or \"num_rows_total\" "
                       "(integer)",
                       what, offset);
        goto done;
    }
    if (json_is_true(json_object_get(root, "partial"))) {
        st = dspy_fail(DSPY_ERR_FORMAT,
                       "hf: %s: the dataset viewer holds only part of this split (\"partial\": "
                       "true); download the full data and use a local copy",
                       what);
        goto done;
    }
    if (*total < 0) *total = json_integer_value(nt);
    else if (*total != json_integer_value(nt)) {
        st = dspy_fail(DSPY_ERR_FORMAT,
                       "hf: %s: num_rows_total changed from %lld to %lld at offset %zu (the "
                       "dataset changed while downloading); try again",
                       what, *total, (long long)json_integer_value(nt), offset);
        goto done;
    }
    size_t n = json_array_size(rows);
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_array_get(rows, i);
        json_t *idx = json_object_get(r, "row_idx"), *row = json_object_get(r, "row");
        json_t *trunc = json_object_get(r, "truncated_cells");
        if (!json_is_integer(idx) || !json_is_object(row)) {
            st = dspy_fail(DSPY_ERR_FORMAT,
                           "hf: %s: page at offset %zu, entry %zu: expected {\"row_idx\": int, "
                           "\"row\": {...}}",
                           what, offset, i);
            goto done;
        }
        if ((long long)json_integer_value(idx) != (long long)(offset + i)) {
            st = dspy_fail(DSPY_ERR_FORMAT,
                           "hf: %s: page at offset %zu, entry %zu has row_idx %lld, expected %zu "
                           "(rows missing or out of order)",
                           what, offset, i, (long long)json_integer_value(idx), offset + i);
            goto done;
        }
        if (json_array_size(trunc) > 0) {
            st = dspy_fail(DSPY_ERR_FORMAT,
                           "hf: %s: row %zu has truncated cells; the viewer cannot serve it whole, "
                           "use a local copy of the data",
                           what, offset + i);
            goto done;
        }
        dspy_example *ex;
        if ((st = dspy_example_from_json_object(row, &ex))) goto done;
        if ((st = dspy_dataset_append(ds, ex))) goto done;
    }
    *got = n;
done:
    json_decref(root);
    return st;
}

dspy_status dspy_hf_load_split(const dspy_hf_params *p, const char *dataset, const char *config,
                               const char *split, dspy_dataset **out) {
    *out = NULL;
    dspy_status st = check_args(dataset, config, split);
    if (st) return st;
    session s;
    dspy_str dir = DSPY_STR_INIT, path = DSPY_STR_INIT, body = DSPY_STR_INIT, q = DSPY_STR_INIT,
             what = DSPY_STR_INIT;
    dspy_dataset *ds = NULL;
    if ((st = session_open(&s, p))) goto done;
    if ((st = cache_dir_of(&s, dataset, config, &dir))) goto done;
    if (dir.len) {
        dspy_str_appendf(&path, "%s/", dir.ptr);
        append_component(&path, split);
        dspy_str_append(&path, ".jsonl");
        if (file_exists(path.ptr)) {
            st = dspy_jsonl_load_examples(path.ptr, NULL, &ds, NULL);
            if (st) st = dspy_fail_wrap(st, "hf: cached split (delete the file to download again)");
            goto done;
        }
    }
    dspy_str_appendf(&what, "%s/%s/%s", dataset, config, split);
    if ((st = dspy_dataset_new(&ds))) goto done;
    long long total = -1;
    size_t offset = 0;
    while (total < 0 || (long long)offset < total) {
        dspy_str_clear(&q);
        dspy_str_append(&q, "/rows?dataset=");
        escape_into(&s, &q, dataset);
        dspy_str_append(&q, "&config=");
        escape_into(&s, &q, config);
        dspy_str_append(&q, "&split=");
        escape_into(&s, &q, split);
        dspy_str_appendf(&q, "&offset=%zu&length=%d", offset, s.p.page_size);
        if (!dspy_str_ok(&q)) {
            st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
            goto done;
        }
        if ((st = http_get(&s, q.ptr, what.ptr, &body))) goto done;
        size_t got;
        if ((st = take_page(dspy_str_cstr(&body), body.len, what.ptr, offset, &total, ds, &got)))
            goto done;
        if (got == 0 && (long long)offset < total) {
            st = dspy_fail(DSPY_ERR_FORMAT,
                           "hf: %s: page at offset %zu has no rows but num_rows_total is %lld "
                           "(rows missing); no partial split is returned",
                           what.ptr, offset, total);
            goto done;
        }
        offset += got;
        if ((long long)offset > total) {
            st = dspy_fail(DSPY_ERR_FORMAT, "hf: %s: more rows (%zu) than num_rows_total (%lld)",
                           what.ptr, offset, total);
            goto done;
        }
    }
    if (dir.len) {
        if ((st = dspy_mkdir_p(dir.ptr))) {
            dspy_fail_append(st, "; choose another cache folder with --cache-dir or DSPY_CACHEDIR");
            goto done;
        }
        if ((st = dspy_jsonl_write_examples(path.ptr, ds, true))) goto done;
    }
done:
    if (st) {
        dspy_dataset_free(ds);
        ds = NULL;
    }
    *out = ds;
    session_close(&s);
    dspy_str_free(&dir);
    dspy_str_free(&path);
    dspy_str_free(&body);
    dspy_str_free(&q);
    dspy_str_free(&what);
    return st;
}
