/* test_jsonl.c — JSON Lines reading (per-line errors, keep going) and writing (compact, raw
 * UTF-8, append). */
#include <stdlib.h>

#include "check.h"
#include "dspy/jsonl.h"
#include "dspy/str.h"

typedef struct {
    int n;
    int64_t lines[16];
    dspy_str texts;
} seen;

static dspy_status on_line(void *ud, const dspy_jsonl_line *line) {
    seen *s = ud;
    size_t len;
    const char *t = dspy_jsonl_line_text(line, &len);
    if (s->n < 16) s->lines[s->n] = dspy_jsonl_line_number(line);
    s->n++;
    dspy_str_appendn(&s->texts, t, len);
    dspy_str_appendc(&s->texts, '|');
    return DSPY_OK;
}

typedef struct {
    int n;
    int64_t lines[16];
    dspy_str msgs;
} errs;

static void on_error(void *ud, int64_t line, const char *msg) {
    errs *e = ud;
    if (e->n < 16) e->lines[e->n] = line;
    e->n++;
    dspy_str_appendf(&e->msgs, "%lld:%s\n", (long long)line, msg);
}

static const char k_mixed[] =
    "{\"a\": 1}\r\n"
    "\n"
    "   \n"
    "{\"a\": 2, \"s\": \"caf\xc3\xa9\"}\n"
    "{\"a\": 3,}\n"          /* line 5: bad JSON */
    "[1, 2]\n"               /* line 6: not an object */
    "{\"a\": \"\xff\"}\n"    /* line 7: invalid UTF-8 */
    "{\"a\": 4} trailing\n"  /* line 8: garbage after the value */
    "{\"a\": 5}";            /* line 9: no final newline */

static void test_stop_at_first_bad_line(void) {
    seen s = {0};
    size_t nbad = 99;
    CHECK_STATUS(dspy_jsonl_parse(k_mixed, sizeof k_mixed - 1, "m.jsonl", NULL, on_line, &s, &nbad),
                 DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "m.jsonl: line 5: invalid JSON at column");
    CHECK_INT(nbad, 1);
    CHECK_INT(s.n, 2);
    CHECK_INT(s.lines[0], 1);
    CHECK_INT(s.lines[1], 4);
    CHECK_STR(dspy_str_cstr(&s.texts), "{\"a\": 1}|{\"a\": 2, \"s\": \"caf\xc3\xa9\"}|"); /* CR dropped */
    dspy_str_free(&s.texts);
}

static void test_keep_going(void) {
    seen s = {0};
    errs e = {0};
    dspy_jsonl_read_params p = dspy_jsonl_read_params_default();
    p.keep_going = true;
    p.on_error = on_error;
    p.error_ud = &e;
    size_t nbad = 0;
    CHECK_OK(dspy_jsonl_parse(k_mixed, sizeof k_mixed - 1, "m.jsonl", &p, on_line, &s, &nbad));
    CHECK_INT(nbad, 4);
    CHECK_INT(e.n, 4);
    CHECK_INT(e.lines[0], 5);
    CHECK_INT(e.lines[1], 6);
    CHECK_INT(e.lines[2], 7);
    CHECK_INT(e.lines[3], 8);
    CHECK_CONTAINS(dspy_str_cstr(&e.msgs), "6:expected a JSON object, got an array");
    CHECK_CONTAINS(dspy_str_cstr(&e.msgs), "7:invalid UTF-8 at byte 8 of the line");
    CHECK_CONTAINS(dspy_str_cstr(&e.msgs), "8:invalid JSON");
    CHECK_INT(s.n, 3);
    CHECK_INT(s.lines[2], 9);
    dspy_str_free(&s.texts);
    dspy_str_free(&e.msgs);

    /* max_errors stops with a summary */
    p.max_errors = 2;
    p.on_error = NULL;
    CHECK_STATUS(dspy_jsonl_parse(k_mixed, sizeof k_mixed - 1, "m.jsonl", &p, NULL, NULL, &nbad),
                 DSPY_ERR_FORMAT);
    CHECK_INT(nbad, 2);
    CHECK_CONTAINS(dspy_errmsg(), "2 bad lines, stopped at max_errors=2; the first is line 5");

    /* keep_going with nowhere to report is refused */
    p.max_errors = 0;
    CHECK_STATUS(dspy_jsonl_parse(k_mixed, sizeof k_mixed - 1, "m.jsonl", &p, NULL, NULL, NULL),
                 DSPY_ERR_ARG);
    /* allow_non_object accepts the array line */
    p.allow_non_object = true;
    CHECK_OK(dspy_jsonl_parse("[1]\n\"s\"\n", 8, "x", &p, NULL, NULL, &nbad));
    CHECK_INT(nbad, 0);
}

static dspy_status stop_at_second(void *ud, const dspy_jsonl_line *line) {
    (void)ud;
    if (dspy_jsonl_line_number(line) == 2) return dspy_fail(DSPY_ERR_CANCELLED, "callback says stop");
    return DSPY_OK;
}

static void test_callback_error_and_value(void) {
    const char *t = "{}\n{}\n{}\n";
    CHECK_STATUS(dspy_jsonl_parse(t, strlen(t), "c", NULL, stop_at_second, NULL, NULL), DSPY_ERR_CANCELLED);
    CHECK_STR(dspy_errmsg(), "callback says stop");
}

static void test_write_and_read_file(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/out.jsonl", test_tmpdir());
    dspy_jsonl_writer *w = NULL;
    CHECK_OK(dspy_jsonl_writer_open(path, true, &w));
    if (!w) return;
    dspy_example *e = NULL;
    CHECK_OK(dspy_example_new(&e));
    CHECK_OK(dspy_example_set_str(e, "text", "caf\xc3\xa9 \xe2\x82\xac \"q\"\nline2/x"));
    CHECK_OK(dspy_example_set_int(e, "label", 11));
    CHECK_OK(dspy_example_set_int(e, "dspy_hidden", 1));
    CHECK_OK(dspy_jsonl_writer_write_example(w, e, false));
    CHECK_OK(dspy_jsonl_writer_write_example(w, e, true));
    const char *pretty = "{\n  \"b\" : [1, 2],\n  \"a\" : {\"x\": null}\n}";
    CHECK_OK(dspy_jsonl_writer_write_json(w, pretty, strlen(pretty)));
    CHECK_STATUS(dspy_jsonl_writer_write_json(w, "[1]", 3), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_jsonl_writer_write_json(w, "{", 1), DSPY_ERR_ARG);
    CHECK_OK(dspy_jsonl_writer_close(w));
    /* append mode keeps what is there */
    CHECK_OK(dspy_jsonl_writer_open(path, false, &w));
    CHECK_OK(dspy_jsonl_writer_write_json(w, "{}", 2));
    CHECK_OK(dspy_jsonl_writer_close(w));
    CHECK_OK(dspy_jsonl_writer_close(NULL));

    char *data = NULL;
    size_t len = 0;
    CHECK_OK(dspy_read_file(path, &data, &len));
    CHECK_STR(data,
              "{\"text\":\"caf\xc3\xa9 \xe2\x82\xac \\\"q\\\"\\nline2/x\",\"label\":11}\n"
              "{\"text\":\"caf\xc3\xa9 \xe2\x82\xac \\\"q\\\"\\nline2/x\",\"label\":11,\"dspy_hidden\":1}\n"
              "{\"b\":[1,2],\"a\":{\"x\":null}}\n"
              "{}\n");
    free(data);

    dspy_dataset *ds = NULL;
    CHECK_OK(dspy_jsonl_load_examples(path, NULL, &ds, NULL));
    if (ds) {
        CHECK_INT(dspy_dataset_len(ds), 4);
        CHECK(dspy_example_equal(dspy_dataset_get(ds, 1), e));
        CHECK_STR(dspy_example_get_str(dspy_dataset_get(ds, 0), "text"), "caf\xc3\xa9 \xe2\x82\xac \"q\"\nline2/x");
    }
    dspy_dataset_free(ds);

    /* atomic whole-file write round-trips */
    char path2[1024];
    snprintf(path2, sizeof path2, "%s/all.jsonl", test_tmpdir());
    dspy_dataset *one = NULL;
    CHECK_OK(dspy_dataset_new(&one));
    CHECK_OK(dspy_dataset_append_copy(one, e));
    CHECK_OK(dspy_jsonl_write_examples(path2, one, true));
    dspy_dataset *back = NULL;
    CHECK_OK(dspy_jsonl_load_examples(path2, NULL, &back, NULL));
    CHECK(back && dspy_dataset_len(back) == 1 && dspy_example_equal(dspy_dataset_get(back, 0), e));
    dspy_dataset_free(back);
    dspy_dataset_free(one);
    dspy_example_free(e);

    /* file errors carry the path and line */
    char bad[1024];
    snprintf(bad, sizeof bad, "%s/bad.jsonl", test_tmpdir());
    CHECK_OK(dspy_write_file(bad, "{}\n{\"x\":}\n", 10));
    CHECK_STATUS(dspy_jsonl_load_examples(bad, NULL, &ds, NULL), DSPY_ERR_FORMAT);
    CHECK(ds == NULL);
    CHECK_CONTAINS(dspy_errmsg(), "bad.jsonl: line 2: invalid JSON");
    CHECK_STATUS(dspy_jsonl_read("/nonexistent/x.jsonl", NULL, NULL, NULL, NULL), DSPY_ERR_IO);
    CHECK_CONTAINS(dspy_errmsg(), "/nonexistent/x.jsonl");
}

typedef struct {
    dspy_dataset *ds;
} keep_ctx;

static dspy_status keep_value(void *ud, const dspy_jsonl_line *line) {
    keep_ctx *k = ud;
    dspy_example *e;
    dspy_status st = dspy_example_new(&e);
    if (!st) st = dspy_example_set_value(e, "v", dspy_jsonl_line_value(line));
    if (st) {
        dspy_example_free(e);
        return st;
    }
    return dspy_dataset_append(k->ds, e);
}

static void test_line_value_outlives_callback(void) {
    keep_ctx k = {0};
    CHECK_OK(dspy_dataset_new(&k.ds));
    const char *t = "{\"a\":[1,2]}\n{\"b\":\"x\"}\n";
    CHECK_OK(dspy_jsonl_parse(t, strlen(t), "v", NULL, keep_value, &k, NULL));
    CHECK_INT(dspy_dataset_len(k.ds), 2);
    char *j = NULL;
    CHECK_OK(dspy_example_get_json_text(dspy_dataset_get(k.ds, 0), "v", &j));
    CHECK_STR(j, "{\"a\":[1,2]}");
    free(j);
    dspy_dataset_free(k.ds);
}

int main(void) {
    RUN(test_stop_at_first_bad_line);
    RUN(test_keep_going);
    RUN(test_callback_error_and_value);
    RUN(test_write_and_read_file);
    RUN(test_line_value_outlives_callback);
    return check_summary("test_jsonl");
}
