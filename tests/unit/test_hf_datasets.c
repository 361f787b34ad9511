/* test_hf_datasets.c — the dataset viewer client against a local HTTP stub: paging, retries
 * (500, 429, timeout, dropped and truncated connections), malformed and incomplete pages
 * (errors, never a partial split), the bearer token, the cache (second load makes no
 * request), fast failure without a server, and Banking77 through the API = the local CSV. */
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#include "check.h"
#include "dspy/csv.h"
#include "dspy/datasets.h"
#include "dspy/hf_datasets.h"
#include "http_stub.h"

enum mode { OK, INFO_KEYED, FLAKY, MALFORMED, MISSING, GAP, TRUNCATED, PARTIAL, NOT_FOUND, ALWAYS_500, BANKING };

typedef struct {
    pthread_mutex_t mu;
    enum mode mode;
    int total;
    int attempts[256]; /* per page (offset / 100); slot 255 is /info */
    char auth[256];
    int info_requests;
    dspy_csv *csv;       /* BANKING: train.csv */
    dspy_labels *labels; /* BANKING: labels.txt */
} hf_server;

static const char *const k_names[] = {"alpha", "beta", "gamma"};

static void info_body(hf_server *s, dspy_str *out) {
    json_t *names = json_array();
    if (s->mode == BANKING)
        for (size_t i = 0; i < dspy_labels_count(s->labels); i++)
            json_array_append_new(names, json_string(dspy_labels_name(s->labels, (int32_t)i)));
    else
        for (int i = 0; i < 3; i++) json_array_append_new(names, json_string(k_names[i]));
    json_t *root = json_pack("{s:{s:s,s:{s:{s:s,s:s},s:{s:o,s:s}}},s:b}", "dataset_info",
                             "description", "", "features", "text", "dtype", "string", "_type",
                             "Value", "label", "names", names, "_type", "ClassLabel", "partial", 0);
    if (s->mode == INFO_KEYED) { /* the shape /info has without a config parameter */
        json_t *keyed = json_pack("{s:{s:O}}", "dataset_info", "default", json_object_get(root, "dataset_info"));
        json_decref(root);
        root = keyed;
    }
    char *t = json_dumps(root, JSON_COMPACT);
    dspy_str_append(out, t);
    free(t);
    json_decref(root);
}

static void rows_body(hf_server *s, long offset, long length, dspy_str *out) {
    int total = s->mode == BANKING ? (int)dspy_csv_rows(s->csv) : s->total;
    json_t *rows = json_array();
    long end = offset + length < total ? offset + length : total;
    if (s->mode == MISSING && offset >= 200) end = offset; /* rows 200.. never come */
    for (long i = offset; i < end; i++) {
        json_t *row;
        if (s->mode == BANKING) {
            const char *text = dspy_csv_cell(s->csv, (size_t)i, 0, NULL);
            int32_t id = dspy_labels_id(s->labels, dspy_csv_cell(s->csv, (size_t)i, 1, NULL));
            row = json_pack("{s:s,s:i}", "text", text, "label", (int)id);
        } else {
            char text[64];
            snprintf(text, sizeof text, "row %ld caf\xc3\xa9", i);
            row = json_pack("{s:s,s:i}", "text", text, "label", (int)(i % 3));
        }
        long idx = (s->mode == GAP && offset == 100) ? i + 1 : i;
        json_t *trunc = json_array();
        if (s->mode == TRUNCATED && i == 123) json_array_append_new(trunc, json_string("text"));
        json_array_append_new(rows, json_pack("{s:I,s:o,s:o}", "row_idx", (json_int_t)idx, "row", row,
                                              "truncated_cells", trunc));
    }
    json_t *root = json_pack("{s:[],s:o,s:i,s:i,s:b}", "features", "rows", rows, "num_rows_total", total,
                             "num_rows_per_page", 100, "partial", s->mode == PARTIAL);
    char *t = json_dumps(root, JSON_COMPACT);
    dspy_str_append(out, t);
    free(t);
    json_decref(root);
}

static void handler(void *ud, const http_stub_request *req, http_stub_response *resp) {
    hf_server *s = ud;
    char buf[64];
    pthread_mutex_lock(&s->mu);
    const char *auth = http_stub_header(req, "Authorization");
    snprintf(s->auth, sizeof s->auth, "%s", auth ? auth : "");
    bool info = strcmp(req->path, "/info") == 0;
    long offset = 0, length = 100;
    if (!info && strcmp(req->path, "/rows") == 0) {
        if (http_stub_query_param(req, "offset", buf, sizeof buf)) offset = atol(buf);
        if (http_stub_query_param(req, "length", buf, sizeof buf)) length = atol(buf);
    }
    int slot = info ? 255 : (int)(offset / 100) % 255;
    int attempt = ++s->attempts[slot];
    s->info_requests += info;
    enum mode mode = s->mode;
    pthread_mutex_unlock(&s->mu);

    bool ok_query = http_stub_query_param(req, "dataset", buf, sizeof buf) &&
                    (strcmp(buf, "PolyAI/banking77") == 0 || strcmp(buf, "test/synthetic") == 0);
    if (mode == NOT_FOUND || !ok_query || (!info && strcmp(req->path, "/rows") != 0)) {
        resp->status = 404;
        dspy_str_append(&resp->body, "{\"error\":\"The dataset does not exist.\"}");
        return;
    }
    if (mode == ALWAYS_500) {
        resp->status = 500;
        dspy_str_append(&resp->body, "{\"error\":\"boom\"}");
        return;
    }
    if (mode == FLAKY) {
        if (info && attempt == 1) {
            resp->action = HTTP_STUB_DROP;
            return;
        }
        if (!info && offset == 0 && attempt == 1) resp->action = HTTP_STUB_CLOSE_MID_BODY;
        if (!info && offset == 100 && attempt == 1) {
            resp->status = 500;
            dspy_str_append(&resp->body, "{\"error\":\"Internal Server Error\"}");
            return;
        }
        if (!info && offset == 200 && attempt == 1) resp->delay_ms = 3000; /* > client timeout */
        if (!info && offset == 200 && attempt == 2) {
            resp->status = 429;
            dspy_str_append(&resp->body, "{\"error\":\"rate limited\"}");
            return;
        }
    }
    if (mode == MALFORMED && !info && offset == 100) {
        dspy_str_append(&resp->body, "{\"rows\":[{\"row_idx\":100,");
        return;
    }
    if (info) info_body(s, &resp->body);
    else rows_body(s, offset, length, &resp->body);
}

static hf_server *server_new(enum mode mode, int total) {
    hf_server *s = calloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->mode = mode;
    s->total = total;
    return s;
}

static void server_reset(hf_server *s, enum mode mode) {
    pthread_mutex_lock(&s->mu);
    s->mode = mode;
    memset(s->attempts, 0, sizeof s->attempts);
    s->auth[0] = '\0';
    pthread_mutex_unlock(&s->mu);
}

static dspy_hf_params fast_params(const http_stub *stub, const char *cache) {
    dspy_hf_params p = dspy_hf_params_default();
    p.endpoint = http_stub_url(stub);
    p.cache_dir = cache;
    p.use_cache = cache != NULL;
    p.connect_timeout_ms = 1000;
    p.timeout_ms = 800;
    p.max_retries = 3;
    p.backoff_ms = 10;
    p.max_backoff_ms = 40;
    p.token = "";
    return p;
}

static const char *subdir(const char *name) {
    static char buf[4][1024];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, 1024, "%s/%s", test_tmpdir(), name);
    return b;
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void check_synthetic(const dspy_dataset *ds, int n) {
    CHECK_INT(dspy_dataset_len(ds), n);
    for (int i = 0; i < n; i++) {
        const dspy_example *e = dspy_dataset_get(ds, (size_t)i);
        char want[64];
        snprintf(want, sizeof want, "row %d caf\xc3\xa9", i);
        int64_t label = -1;
        if (!e || strcmp(dspy_example_get_str(e, "text") ? dspy_example_get_str(e, "text") : "", want) != 0 ||
            !dspy_value_int(dspy_example_get(e, "label"), &label) || label != i % 3) {
            CHECK_STR(e ? dspy_example_get_str(e, "text") : NULL, want);
            return;
        }
    }
    CHECK(true);
}

static void test_retries_token_and_cache(void) {
    hf_server *s = server_new(FLAKY, 250);
    http_stub *stub = NULL;
    CHECK_OK(http_stub_start(handler, s, &stub));
    if (!stub) return;
    const char *cache = subdir("cache1");
    dspy_hf_params p = fast_params(stub, cache);
    p.token = "tok-123";
    char **names = NULL;
    size_t nn = 0;
    CHECK_OK(dspy_hf_class_names(&p, "test/synthetic", "default", "label", &names, &nn));
    CHECK_INT(nn, 3);
    if (nn == 3) CHECK_STR(names[2], "gamma");
    dspy_hf_names_free(names, nn);
    CHECK_INT(http_stub_requests(stub), 2); /* dropped once, then answered */
    CHECK_STR(s->auth, "Bearer tok-123");

    dspy_dataset *ds = NULL;
    double t0 = now_s();
    CHECK_OK(dspy_hf_load_split(&p, "test/synthetic", "default", "train", &ds));
    double dt = now_s() - t0;
    if (ds) check_synthetic(ds, 250);
    /* offset 0: cut mid-body, retried; 100: 500 then ok; 200: timeout, 429, ok */
    CHECK_INT(s->attempts[0], 2);
    CHECK_INT(s->attempts[1], 2);
    CHECK_INT(s->attempts[2], 3);
    CHECK_INT(http_stub_requests(stub), 2 + 7);
    CHECK(dt < 5.0);
    CHECK_STR(s->auth, "Bearer tok-123");
    CHECK(exists(subdir("cache1/test__synthetic/default/train.jsonl")));
    CHECK(exists(subdir("cache1/test__synthetic/default/info.json")));

    /* second load and label names: from the cache, zero requests */
    int before = http_stub_requests(stub);
    dspy_dataset *again = NULL;
    CHECK_OK(dspy_hf_load_split(&p, "test/synthetic", "default", "train", &again));
    CHECK_OK(dspy_hf_class_names(&p, "test/synthetic", "default", "label", &names, &nn));
    dspy_hf_names_free(names, nn);
    CHECK_INT(http_stub_requests(stub), before);
    if (ds && again) {
        CHECK_INT(dspy_dataset_len(again), 250);
        bool same = true;
        for (size_t i = 0; i < 250; i++)
            same &= dspy_example_equal(dspy_dataset_get(ds, i), dspy_dataset_get(again, i));
        CHECK(same);
    }
    dspy_dataset_free(again);
    dspy_dataset_free(ds);

    /* /info keyed by config name */
    server_reset(s, INFO_KEYED);
    dspy_hf_params k = fast_params(stub, NULL);
    CHECK_OK(dspy_hf_class_names(&k, "test/synthetic", "default", "label", &names, &nn));
    CHECK_INT(nn, 3);
    if (nn == 3) CHECK_STR(names[0], "alpha");
    dspy_hf_names_free(names, nn);
    CHECK_STATUS(dspy_hf_class_names(&k, "test/synthetic", "default", "text", &names, &nn), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "no ClassLabel feature 'text'");

    /* HF_TOKEN from the environment; "" sends none */
    server_reset(s, OK);
    setenv("HF_TOKEN", "env-tok", 1);
    dspy_hf_params q = fast_params(stub, NULL);
    q.token = NULL;
    CHECK_OK(dspy_hf_load_split(&q, "test/synthetic", "default", "train", &ds));
    CHECK_STR(s->auth, "Bearer env-tok");
    dspy_dataset_free(ds);
    q.token = "";
    CHECK_OK(dspy_hf_load_split(&q, "test/synthetic", "default", "train", &ds));
    CHECK_STR(s->auth, "");
    dspy_dataset_free(ds);
    unsetenv("HF_TOKEN");

    /* smaller pages */
    q.page_size = 7;
    int r0 = http_stub_requests(stub);
    CHECK_OK(dspy_hf_load_split(&q, "test/synthetic", "default", "train", &ds));
    if (ds) check_synthetic(ds, 250);
    CHECK_INT(http_stub_requests(stub) - r0, 36);
    dspy_dataset_free(ds);
    q.page_size = 101;
    CHECK_STATUS(dspy_hf_load_split(&q, "test/synthetic", "default", "train", &ds), DSPY_ERR_ARG);

    http_stub_stop(stub);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static void test_bad_pages(void) {
    hf_server *s = server_new(OK, 250);
    http_stub *stub = NULL;
    CHECK_OK(http_stub_start(handler, s, &stub));
    if (!stub) return;
    static const struct {
        enum mode mode;
        dspy_status code;
        const char *msg;
    } cases[] = {
        {MALFORMED, DSPY_ERR_FORMAT, "page at offset 100 is not valid JSON"},
        {MISSING, DSPY_ERR_FORMAT, "page at offset 200 has no rows but num_rows_total is 250"},
        {GAP, DSPY_ERR_FORMAT, "page at offset 100, entry 0 has row_idx 101, expected 100"},
        {TRUNCATED, DSPY_ERR_FORMAT, "row 123 has truncated cells"},
        {PARTIAL, DSPY_ERR_FORMAT, "\"partial\": true"},
        {NOT_FOUND, DSPY_ERR_NOTFOUND, "HTTP 404"},
        {ALWAYS_500, DSPY_ERR_REMOTE, "failed after 4 attempts; last error: HTTP 500"},
    };
    const char *cache = subdir("cache2");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        server_reset(s, cases[i].mode);
        int r0 = http_stub_requests(stub);
        dspy_hf_params p = fast_params(stub, cache);
        dspy_dataset *ds = (dspy_dataset *)1;
        CHECK_STATUS(dspy_hf_load_split(&p, "test/synthetic", "default", "train", &ds), cases[i].code);
        CHECK(ds == NULL);
        CHECK_CONTAINS(dspy_errmsg(), cases[i].msg);
        CHECK_CONTAINS(dspy_errmsg(), "test/synthetic");
        if (cases[i].mode == NOT_FOUND) CHECK_INT(http_stub_requests(stub) - r0, 1); /* not retried */
        if (cases[i].mode == ALWAYS_500) CHECK_INT(http_stub_requests(stub) - r0, 4);
        if (cases[i].mode == MALFORMED) CHECK_INT(s->attempts[1], 1);
    }
    /* nothing was cached from the failed loads */
    CHECK(!exists(subdir("cache2/test__synthetic/default/train.jsonl")));
    http_stub_stop(stub);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static void test_no_server_fails_fast(void) {
    int port = http_stub_closed_port();
    CHECK(port > 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    setenv("DSPY_HF_ENDPOINT", url, 1);
    dspy_hf_params p = dspy_hf_params_default(); /* real defaults: retries, backoff, timeouts */
    p.use_cache = false;
    dspy_dataset *ds = NULL;
    double t0 = now_s();
    dspy_status st = dspy_hf_load_split(&p, "PolyAI/banking77", "default", "train", &ds);
    double dt = now_s() - t0;
    CHECK(st == DSPY_ERR_IO);
    CHECK(ds == NULL);
    CHECK(dt < 3.0);
    CHECK_CONTAINS(dspy_errmsg(), url);
    CHECK_CONTAINS(dspy_errmsg(), "--data-dir");
    dspy_banking77_params bp = dspy_banking77_params_default();
    bp.hf.use_cache = false;
    CHECK_STATUS(dspy_banking77_load(&bp, DSPY_BANKING77_TUTORIAL_DEV, &ds, NULL), DSPY_ERR_IO);
    CHECK_CONTAINS(dspy_errmsg(), "--data-dir");
    unsetenv("DSPY_HF_ENDPOINT");
}

static void test_banking77_via_api_matches_csv(void) {
    if (!test_have_shared("data/banking77/train.csv")) {
        check_skip("shared/data/banking77 not present");
        return;
    }
    hf_server *s = server_new(BANKING, 0);
    CHECK_OK(dspy_csv_load(test_shared("data/banking77/train.csv"), &s->csv));
    CHECK_OK(dspy_labels_load(test_shared("data/banking77/labels.txt"), &s->labels));
    http_stub *stub = NULL;
    CHECK_OK(http_stub_start(handler, s, &stub));
    if (!stub || !s->csv || !s->labels) return;
    dspy_banking77_params remote = dspy_banking77_params_default();
    remote.hf = fast_params(stub, subdir("cache3"));
    remote.hf.timeout_ms = 10000;
    dspy_banking77_params local = dspy_banking77_params_default();
    local.data_dir = test_shared("data/banking77");
    dspy_dataset *a = NULL, *b = NULL;
    dspy_labels *la = NULL;
    CHECK_OK(dspy_banking77_load(&remote, DSPY_BANKING77_TRAIN, &a, &la));
    CHECK_OK(dspy_banking77_load(&local, DSPY_BANKING77_TRAIN, &b, NULL));
    CHECK_INT(http_stub_requests(stub), 1 + 101);
    if (a && b && la) {
        CHECK_INT(dspy_dataset_len(a), 10003);
        CHECK_INT(dspy_labels_count(la), 77);
        bool same = dspy_dataset_len(a) == dspy_dataset_len(b);
        for (size_t i = 0; same && i < dspy_dataset_len(a); i++) {
            const dspy_example *x = dspy_dataset_get(a, i), *y = dspy_dataset_get(b, i);
            same = dspy_example_equal(x, y) && dspy_example_is_input(x, "text") &&
                   dspy_example_ninputs(x) == 1;
        }
        CHECK(same);
    }
    dspy_dataset_free(a);
    dspy_dataset_free(b);
    dspy_labels_free(la);
    /* the tutorial split through the API reuses the cached train rows */
    int before = http_stub_requests(stub);
    CHECK_OK(dspy_banking77_load(&remote, DSPY_BANKING77_TUTORIAL_DEV, &a, NULL));
    CHECK_OK(dspy_banking77_load(&local, DSPY_BANKING77_TUTORIAL_DEV, &b, NULL));
    CHECK_INT(http_stub_requests(stub), before);
    if (a && b) {
        CHECK_INT(dspy_dataset_len(a), 100);
        bool same = true;
        for (size_t i = 0; i < 100; i++) same &= dspy_example_equal(dspy_dataset_get(a, i), dspy_dataset_get(b, i));
        CHECK(same);
    }
    dspy_dataset_free(a);
    dspy_dataset_free(b);
    http_stub_stop(stub);
    dspy_csv_free(s->csv);
    dspy_labels_free(s->labels);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int main(void) {
    unsetenv("HF_TOKEN");
    unsetenv("DSPY_HF_ENDPOINT");
    RUN(test_retries_token_and_cache);
    RUN(test_bad_pages);
    RUN(test_no_server_fails_fast);
    RUN(test_banking77_via_api_matches_csv);
    return check_summary("test_hf_datasets");
}
