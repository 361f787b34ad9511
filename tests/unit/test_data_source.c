/* test_data_source.c — dspy/data_source.h: JSONL, CSV and Hugging Face sources (a viewer-API
 * stub on 127.0.0.1 serving a ClassLabel column) mapped to a program's fields; the errors with
 * their row; the sorted label set; the generalised tutorial split, checked against the
 * Banking77 tutorial split and CPython's random.Random(0).shuffle(range(1000)) (spec §11.4). */
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/data_source.h"
#include "dspy/datasets.h"
#include "http_stub.h"

static const char *write_tmp(const char *name, const char *text) {
    static char path[8][1024];
    static int k;
    char *p = path[k++ % 8];
    snprintf(p, 1024, "%s/%s", test_tmpdir(), name);
    CHECK_OK(dspy_write_file(p, text, strlen(text)));
    return p;
}

static void test_jsonl_mapping(void) {
    const char *path = write_tmp("qa.jsonl", "{\"q\": \"2+2?\", \"ctx\": \"math\", \"answer\": \"4\", \"extra\": 1}\n"
                                             "\n"
                                             "{\"q\": \"capital of France?\", \"ctx\": [\"geo\"], \"answer\": \"Paris\"}\n");
    dspy_field_map in[2] = {{"question", "q"}, {"context", "ctx"}};
    dspy_field_map lab = {"answer", NULL};
    dspy_data_params p = dspy_data_params_default();
    p.inputs = in;
    p.n_inputs = 2;
    p.label = &lab;
    dspy_dataset *ds = NULL;
    CHECK_OK(dspy_data_load(path, &p, &ds, NULL));
    CHECK_INT(dspy_dataset_len(ds), 2);
    char *r = NULL;
    CHECK_OK(dspy_example_repr(dspy_dataset_get(ds, 1), &r));
    CHECK_STR(r, "Example({'question': 'capital of France?', 'context': ['geo'], 'answer': 'Paris'}) "
                 "(input_keys={'question', 'context'})");
    free(r);
    dspy_dataset_free(ds);

    /* a missing column names the line (blank lines counted) and the columns there are */
    dspy_field_map in2 = {"question", NULL};
    p.inputs = &in2;
    p.n_inputs = 1;
    CHECK_STATUS(dspy_data_load(path, &p, &ds, NULL), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "qa.jsonl: line 1: no column 'question' for the input field 'question' (the line has "
                                  "'q', 'ctx', 'answer', 'extra'); map another column with question=COLUMN");
    CHECK(ds == NULL);
    /* a label that is not a string or an id */
    const char *bad = write_tmp("bad.jsonl", "{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": 1.5}\n");
    dspy_field_map t = {"text", NULL}, l = {"label", NULL};
    p.inputs = &t;
    p.label = &l;
    CHECK_STATUS(dspy_data_load(bad, &p, &ds, NULL), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "bad.jsonl: line 2: the label 'label' must be a string or an integer class id");
    /* integer labels without class names become their decimal text; optional labels */
    const char *ints = write_tmp("ints.jsonl", "{\"text\": \"a\", \"label\": 3}\n{\"text\": \"b\"}\n");
    CHECK_STATUS(dspy_data_load(ints, &p, &ds, NULL), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "ints.jsonl: line 2: no column 'label' for the label field 'label'");
    p.label_optional = true;
    CHECK_OK(dspy_data_load(ints, &p, &ds, NULL));
    CHECK_STR(dspy_example_get_str(dspy_dataset_get(ds, 0), "label"), "3");
    CHECK(!dspy_example_has(dspy_dataset_get(ds, 1), "label"));
    dspy_dataset_free(ds);
    /* bad JSON: the line */
    const char *broken = write_tmp("broken.jsonl", "{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \n");
    CHECK_STATUS(dspy_data_load(broken, &p, &ds, NULL), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "line 2");
    /* no such file, unknown kind */
    CHECK_STATUS(dspy_data_load("/nonexistent/x.jsonl", &p, &ds, NULL), DSPY_ERR_NOTFOUND);
    CHECK_CONTAINS(dspy_errmsg(), "/nonexistent/x.jsonl: no such file");
    CHECK_STATUS(dspy_data_load("data.parquet", &p, &ds, NULL), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "unknown data source");
    /* params: the label among the inputs, duplicate inputs */
    dspy_field_map dup[2] = {{"text", NULL}, {"label", NULL}};
    p.inputs = dup;
    p.n_inputs = 2;
    CHECK_STATUS(dspy_data_load(ints, &p, &ds, NULL), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "'label' is both an input field and the label field");
}

static void test_csv_and_labels(void) {
    const char *path = write_tmp("sent.csv", "sentence,intent\r\n\"hello, there\",greet\r\nbye now,leave\r\n"
                                             "\"multi\nline\",greet\r\n");
    dspy_field_map in = {"text", "sentence"}, lab = {"label", "intent"};
    dspy_data_params p = dspy_data_params_default();
    p.inputs = &in;
    p.n_inputs = 1;
    p.label = &lab;
    dspy_dataset *ds = NULL;
    CHECK_OK(dspy_data_load(path, &p, &ds, NULL));
    CHECK_INT(dspy_dataset_len(ds), 3);
    CHECK_STR(dspy_example_get_str(dspy_dataset_get(ds, 0), "text"), "hello, there");
    CHECK_STR(dspy_example_get_str(dspy_dataset_get(ds, 2), "text"), "multi\nline");
    CHECK(dspy_example_is_input(dspy_dataset_get(ds, 0), "text"));
    CHECK(!dspy_example_is_input(dspy_dataset_get(ds, 0), "label"));
    /* labels: sorted by bytes, each once, over several sets */
    const char *more = write_tmp("more.csv", "sentence,intent\nok,Ack\n");
    dspy_dataset *ds2 = NULL;
    CHECK_OK(dspy_data_load(more, &p, &ds2, NULL));
    const dspy_dataset *sets[3] = {ds, NULL, ds2};
    dspy_labels *labels = NULL;
    CHECK_OK(dspy_labels_collect(sets, 3, "label", &labels));
    CHECK_INT(dspy_labels_count(labels), 3);
    CHECK_STR(dspy_labels_name(labels, 0), "Ack");
    CHECK_STR(dspy_labels_name(labels, 1), "greet");
    CHECK_STR(dspy_labels_name(labels, 2), "leave");
    dspy_labels_free(labels);
    CHECK_STATUS(dspy_labels_collect(sets, 3, "nope", &labels), DSPY_ERR_ARG);
    dspy_dataset_free(ds2);
    dspy_dataset_free(ds);
    /* inputs only: the unlabeled copy */
    CHECK_OK(dspy_data_load(path, &p, &ds, NULL));
    CHECK_OK(dspy_data_load(path, &p, &ds2, NULL));
    dspy_dataset *u = NULL;
    CHECK_OK(dspy_dataset_inputs_only(ds, &u));
    char *r = NULL;
    CHECK_OK(dspy_example_repr(dspy_dataset_get(u, 1), &r));
    CHECK_STR(r, "Example({'text': 'bye now'}) (input_keys={'text'})");
    free(r);
    dspy_dataset_free(u);
    dspy_dataset_free(ds);
    dspy_dataset_free(ds2);
}

/* An empty label cell is an error naming its physical line (the quoted newline counts). */
static void test_empty_label_cell(void) {
    const char *path = write_tmp("empty.csv", "sentence,intent\na,x\n\"b\nc\",\n");
    dspy_field_map in = {"text", "sentence"}, lab = {"label", "intent"};
    dspy_data_params p = dspy_data_params_default();
    p.inputs = &in;
    p.n_inputs = 1;
    p.label = &lab;
    dspy_dataset *ds = NULL;
    CHECK_STATUS(dspy_data_load(path, &p, &ds, NULL), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "empty.csv: line 3: the label 'intent' is empty");
}

/* ---- Hugging Face: rows with ClassLabel ids, /info with their names ---------------------------- */

static int g_hf_requests;
static pthread_mutex_t g_hf_mu = PTHREAD_MUTEX_INITIALIZER;

static void hf_handler(void *ud, const http_stub_request *req, http_stub_response *resp) {
    (void)ud;
    char cfg[64] = "", split[64] = "";
    pthread_mutex_lock(&g_hf_mu);
    g_hf_requests++;
    pthread_mutex_unlock(&g_hf_mu);
    http_stub_query_param(req, "config", cfg, sizeof cfg);
    http_stub_query_param(req, "split", split, sizeof split);
    if (strcmp(cfg, "small") != 0) {
        resp->status = 404;
        dspy_str_append(&resp->body, "{\"error\":\"no such config\"}");
        return;
    }
    if (strcmp(req->path, "/info") == 0) {
        dspy_str_append(&resp->body, "{\"dataset_info\":{\"features\":{\"sentence\":{\"dtype\":\"string\",\"_type\":"
                                     "\"Value\"},\"intent\":{\"names\":[\"neg\",\"pos\",\"neutral\"],\"_type\":"
                                     "\"ClassLabel\"}}},\"partial\":false}");
        return;
    }
    dspy_str_appendf(&resp->body, "{\"rows\":[{\"row_idx\":0,\"row\":{\"sentence\":\"%s great\",\"intent\":1},"
                                  "\"truncated_cells\":[]},{\"row_idx\":1,\"row\":{\"sentence\":\"meh\",\"intent\":2},"
                                  "\"truncated_cells\":[]}],\"num_rows_total\":2,\"partial\":false}",
                     split);
}

static void test_hf_source(void) {
    http_stub *s = NULL;
    CHECK_OK(http_stub_start(hf_handler, NULL, &s));
    if (!s) return;
    dspy_field_map in = {"text", "sentence"}, lab = {"label", "intent"};
    dspy_data_params p = dspy_data_params_default();
    p.inputs = &in;
    p.n_inputs = 1;
    p.label = &lab;
    p.hf.endpoint = http_stub_url(s);
    p.hf.cache_dir = test_tmpdir();
    p.hf.max_retries = 0;
    dspy_dataset *ds = NULL;
    dspy_labels *names = NULL;
    CHECK_OK(dspy_data_load("hf:org/reviews:small:validation", &p, &ds, &names));
    CHECK_INT(dspy_dataset_len(ds), 2);
    CHECK_STR(dspy_example_get_str(dspy_dataset_get(ds, 0), "text"), "validation great");
    CHECK_STR(dspy_example_get_str(dspy_dataset_get(ds, 0), "label"), "pos");
    CHECK_STR(dspy_example_get_str(dspy_dataset_get(ds, 1), "label"), "neutral");
    CHECK(names && dspy_labels_count(names) == 3 && strcmp(dspy_labels_name(names, 0), "neg") == 0);
    dspy_labels_free(names);
    dspy_dataset_free(ds);
    /* cached: a second load asks nothing */
    int before = g_hf_requests;
    CHECK_OK(dspy_data_load("hf:org/reviews:small:validation", &p, &ds, NULL));
    CHECK_INT(g_hf_requests, before);
    dspy_dataset_free(ds);
    /* the default config is "default": this stub has none */
    CHECK_STATUS(dspy_data_load("hf:org/reviews:test", &p, &ds, NULL), DSPY_ERR_NOTFOUND);
    CHECK_STATUS(dspy_data_load("hf:org/reviews:a:b:c", &p, &ds, NULL), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "expected hf:DATASET, hf:DATASET:SPLIT or hf:DATASET:CONFIG:SPLIT");
    CHECK_STATUS(dspy_data_load("hf:org/reviews::x", &p, &ds, NULL), DSPY_ERR_ARG);
    http_stub_stop(s);
}

static void test_field_map_parse(void) {
    char buf[32];
    dspy_field_map m;
    CHECK_OK(dspy_field_map_parse("text=sentence", buf, sizeof buf, &m));
    CHECK_STR(m.field, "text");
    CHECK_STR(m.column, "sentence");
    CHECK_OK(dspy_field_map_parse("label", buf, sizeof buf, &m));
    CHECK(m.column == NULL);
    CHECK_STATUS(dspy_field_map_parse("=x", buf, sizeof buf, &m), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_field_map_parse("x=", buf, sizeof buf, &m), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_field_map_parse("a,b", buf, sizeof buf, &m), DSPY_ERR_ARG);
}

/* The generalised split = the Banking77 tutorial split; the permutation is CPython's. */
static void test_tutorial_split_pool(void) {
    if (!test_have_shared("data/banking77/train.csv")) {
        check_skip("shared Banking77 missing");
        return;
    }
    dspy_banking77_params bp = dspy_banking77_params_default();
    bp.data_dir = test_shared("data/banking77");
    dspy_dataset *train = NULL, *t1 = NULL, *d1 = NULL, *t2 = NULL, *d2 = NULL, *u = NULL;
    CHECK_OK(dspy_banking77_load(&bp, DSPY_BANKING77_TRAIN, &train, NULL));
    if (!train) return;
    static const char *const key[] = {"text"};
    CHECK_OK(dspy_dataset_set_inputs(train, key, 1));
    CHECK_OK(dspy_banking77_tutorial_split(train, &t1, &d1));
    CHECK_OK(dspy_tutorial_split_pool(train, 1000, 500, 100, 0, &t2, &d2));
    CHECK_OK(dspy_dataset_inputs_only(t2, &u));
    CHECK_INT(dspy_dataset_len(u), 500);
    CHECK_INT(dspy_dataset_len(d2), 100);
    int same = 0;
    for (size_t i = 0; i < 500; i++) same += dspy_example_equal(dspy_dataset_get(t1, i), dspy_dataset_get(u, i));
    for (size_t i = 0; i < 100; i++) same += dspy_example_equal(dspy_dataset_get(d1, i), dspy_dataset_get(d2, i));
    CHECK_INT(same, 600);
    /* random.Random(0).shuffle(list(range(1000)))[:10] == [439, 621, 160, 549, 237, ...] (spec §11.4) */
    static const int want[] = {439, 621, 160, 549, 237, 389, 658, 507, 124, 290};
    for (int i = 0; i < 10; i++)
        CHECK_STR(dspy_example_get_str(dspy_dataset_get(t2, (size_t)i), "text"),
                  dspy_example_get_str(dspy_dataset_get(train, (size_t)want[i]), "text"));
    /* too many asked for */
    dspy_dataset *x = NULL;
    CHECK_STATUS(dspy_tutorial_split_pool(train, 50, 40, 20, 0, &x, NULL), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "40 train + 20 dev examples asked for, but only 50 rows are used");
    dspy_dataset_free(train);
    dspy_dataset_free(t1);
    dspy_dataset_free(d1);
    dspy_dataset_free(t2);
    dspy_dataset_free(d2);
    dspy_dataset_free(u);
}

int main(void) {
    RUN(test_jsonl_mapping);
    RUN(test_csv_and_labels);
    RUN(test_empty_label_cell);
    RUN(test_hf_source);
    RUN(test_field_map_parse);
    RUN(test_tutorial_split_pool);
    return check_summary("test_data_source");
}
