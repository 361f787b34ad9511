/* eval_report.c — score.json, results.json/.csv and table.txt of an evaluation (see
 * eval_report.h). */
#include "eval_report.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dspy/parallel.h"
#include "dspy/str.h"

dspy_status eval_report_summary(const dspy_eval_result *r, const task *t, dspy_json **out) {
    *out = NULL;
    dspy_json *o = dspy_json_object(), *pc = dspy_json_object();
    if (!o || !pc) {
        dspy_json_decref(o);
        dspy_json_decref(pc);
        return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    }
    size_t n = dspy_eval_result_len(r), parse = 0, failed = dspy_eval_result_n_failed(r);
    for (size_t i = 0; i < n; i++) parse += dspy_eval_result_item_status(r, i) == DSPY_ERR_PARSE;
    dspy_status st = dspy_json_set(o, "score", dspy_json_real(dspy_eval_result_score(r)));
    if (!st) st = dspy_json_set_str(o, "metric", dspy_eval_result_metric_name(r));
    if (!st) st = dspy_json_set_str(o, "metric_field", t->metric_field);
    if (!st) st = dspy_json_set(o, "n", dspy_json_int((int64_t)n));
    if (!st) st = dspy_json_set(o, "failed", dspy_json_int((int64_t)failed));
    if (!st) st = dspy_json_set(o, "unparseable", dspy_json_int((int64_t)parse));
    if (!st) st = dspy_json_set(o, "errors", dspy_json_int((int64_t)(failed - parse)));
    /* per class of the gold value, in first-seen order */
    for (size_t i = 0; !st && i < n; i++) {
        const char *g = dspy_example_get_str(dspy_eval_result_example(r, i), t->metric_field);
        if (!g) continue;
        dspy_json *c = dspy_json_get(pc, g);
        if (!c) {
            if (!(c = dspy_json_object())) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
            if (!st) st = dspy_json_set(c, "n", dspy_json_int(0));
            if (!st) st = dspy_json_set(c, "sum", dspy_json_real(0));
            if (!st) st = dspy_json_set(pc, g, c);
            if (st) break;
        }
        st = dspy_json_set(c, "n", dspy_json_int(dspy_json_int_or(c, "n", 0) + 1));
        if (!st) st = dspy_json_set(c, "sum", dspy_json_real(dspy_json_num_or(c, "sum", 0) + dspy_eval_result_item_score(r, i)));
    }
    if (!st) {
        /* sums -> percent scores */
        for (void *it = dspy_json_iter(pc); it; it = dspy_json_next(pc, it)) {
            dspy_json *c = dspy_json_iter_value(it);
            double cn = (double)dspy_json_int_or(c, "n", 1), sum = dspy_json_num_or(c, "sum", 0);
            dspy_json_del(c, "sum");
            dspy_json_set(c, "score", dspy_json_real(dspy_py_round(100.0 * sum / cn, 2)));
        }
        st = dspy_json_set(o, "per_class", pc);
        pc = NULL;
    }
    const char *maj = NULL;
    double rate = 0;
    task_majority(t, &maj, &rate);
    if (!st) st = dspy_json_set(o, "majority_class", maj ? dspy_json_string(maj) : dspy_json_null());
    if (!st) st = dspy_json_set(o, "majority_rate", dspy_json_real(dspy_py_round(rate, 2)));
    dspy_json_decref(pc);
    if (st) {
        dspy_json_decref(o);
        return st;
    }
    *out = o;
    return DSPY_OK;
}

static dspy_status path_in(dspy_str *p, const char *dir, const char *name) {
    dspy_str_clear(p);
    dspy_str_appendf(p, "%s/%s", dir, name);
    return dspy_str_ok(p) ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
}

bool eval_report_exists(const char *dir) {
    dspy_str p = DSPY_STR_INIT;
    bool e = false;
    if (!path_in(&p, dir, "score.json")) e = access(dspy_str_cstr(&p), F_OK) == 0;
    if (!e && !path_in(&p, dir, "results.json")) e = access(dspy_str_cstr(&p), F_OK) == 0;
    dspy_str_free(&p);
    return e;
}

dspy_status eval_report_write(const dspy_eval_result *r, const task *t, const dspy_json *extra, const char *dir) {
    dspy_json *sum = NULL;
    char *text = NULL, *table = NULL;
    dspy_str p = DSPY_STR_INIT, body = DSPY_STR_INIT;
    dspy_status st = dspy_mkdir_p(dir);
    if (!st) st = eval_report_summary(r, t, &sum);
    for (void *it = extra && !st ? dspy_json_iter(extra) : NULL; !st && it; it = dspy_json_next(extra, it))
        st = dspy_json_set(sum, dspy_json_iter_key(it), dspy_json_copy(dspy_json_iter_value(it)));
    if (!st && !(text = dspy_json_dumps(sum, DSPY_JSON_UTF8 | DSPY_JSON_INDENT(2))))
        st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!st) {
        dspy_str_append(&body, text);
        dspy_str_appendc(&body, '\n');
        if (!(st = path_in(&p, dir, "score.json"))) st = dspy_write_file(dspy_str_cstr(&p), body.ptr, body.len);
    }
    if (!st && !(st = path_in(&p, dir, "results.json"))) st = dspy_eval_result_save_json(r, dspy_str_cstr(&p));
    if (!st && !(st = path_in(&p, dir, "results.csv"))) st = dspy_eval_result_save_csv(r, dspy_str_cstr(&p));
    if (!st) st = dspy_eval_result_table_text(r, -1, &table);
    if (!st && !(st = path_in(&p, dir, "table.txt"))) st = dspy_write_file(dspy_str_cstr(&p), table, strlen(table));
    free(table);
    free(text);
    dspy_str_free(&p);
    dspy_str_free(&body);
    dspy_json_decref(sum);
    return st;
}
