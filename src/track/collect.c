/* collect.c — what a finished run's directory holds, turned into metrics (dspy_run_finish).
 *
 * Reads the files the commands already write instead of changing how they are written:
 *   report.json (dspy compile): every number becomes a final metric ("score" as eval_score);
 *     its output_dir's train.jsonl and its data_path (the fine-tuning JSONL) are copied into
 *     the run as train.jsonl and finetune_data.jsonl; its model names become tags;
 *   train.jsonl: the per-step curves (loss, learning_rate, grad_norm, tokens_per_s, epoch) and,
 *     when report.json did not give them, train_steps, train_final_loss, train_tokens_per_s;
 *   results.json: eval_score (mean of the metric column, in percent) and eval_examples when the
 *     command did not log them; baselines/<name>/results.json: baseline_<name>_score.
 * Final values are logged at step 0 with the run's end time, after the curves.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "track/track_priv.h"

/* Sets a final metric unless the command already logged it; records the point too. */
static dspy_status final_metric(dspy_run *r, dspy_json *points, const char *key, double v) {
    if (dspy_json_get(r->metrics, key)) return DSPY_OK;
    dspy_status st = dspy_json_set(r->metrics, key, dspy_track_number(v));
    if (!st) st = dspy_track_point_append(points, key, v, 0, r->end_ms);
    return st;
}

/* The metric column of Evaluate's rows is the last key of each row (merge_dicts(example,
 * prediction) | {metric_name: score}). Mean in percent; -1 when there are no rows. */
dspy_status dspy_track_results_score(const dspy_json *rows, double *score, size_t *n) {
    *score = -1;
    *n = 0;
    if (dspy_json_typeof(rows) != DSPY_JSON_ARRAY) return dspy_fail(DSPY_ERR_FORMAT, "results.json: not a list of rows");
    double sum = 0;
    for (size_t i = 0; i < dspy_json_size(rows); i++) {
        const dspy_json *row = dspy_json_at(rows, i);
        const dspy_json *last = NULL;
        for (void *it = dspy_json_iter(row); it; it = dspy_json_next(row, it)) last = dspy_json_iter_value(it);
        double v = 0;
        if (dspy_json_typeof(last) == DSPY_JSON_BOOL) v = dspy_json_truthy(last) ? 1 : 0;
        else if (!dspy_track_number_of(last, &v)) v = 0;
        sum += v;
        (*n)++;
    }
    if (*n) *score = 100.0 * sum / (double)*n;
    return DSPY_OK;
}

static dspy_status from_report_json(dspy_run *r, dspy_json *points, bool *copied_train) {
    dspy_json *rep = NULL;
    dspy_status st = dspy_track_load_json(r->dir, "report.json", &rep);
    if (st == DSPY_ERR_NOTFOUND) return DSPY_OK;
    if (st) return st;
    for (void *it = dspy_json_iter(rep); !st && it; it = dspy_json_next(rep, it)) {
        const char *k = dspy_json_iter_key(it);
        const dspy_json *v = dspy_json_iter_value(it);
        if (dspy_json_is_number(v)) st = final_metric(r, points, strcmp(k, "score") == 0 ? "eval_score" : k, dspy_json_number(v));
    }
    static const char *const tag_keys[][2] = {
        {"teacher", "dspy.teacher"}, {"student_base", "dspy.student"}, {"finetuned_model", "dspy.finetuned_model"},
        {"format", "dspy.format"}, {"data", "dspy.data"},
    };
    for (size_t i = 0; !st && i < sizeof tag_keys / sizeof *tag_keys; i++) {
        const char *v = dspy_json_str_or(rep, tag_keys[i][0], NULL);
        if (v && *v) st = dspy_json_set_str(r->tags, tag_keys[i][1], v);
    }
    if (!st && dspy_json_get(rep, "teacher_is_stand_in"))
        st = dspy_json_set_str(r->tags, "dspy.teacher_is_stand_in",
                               dspy_json_truthy(dspy_json_get(rep, "teacher_is_stand_in")) ? "true" : "false");
    const char *od = dspy_json_str_or(rep, "output_dir", NULL), *dp = dspy_json_str_or(rep, "data_path", NULL);
    char *src = od && *od ? dspy_track_join(od, "train.jsonl") : NULL;
    char *dst = dspy_track_join(r->dir, "train.jsonl");
    if (!st && src && dst && strcmp(src, dst) != 0 && dspy_track_is_file(src)) {
        st = dspy_track_copy_file(src, dst);
        *copied_train = !st;
    }
    free(src);
    free(dst);
    dst = dspy_track_join(r->dir, "finetune_data.jsonl");
    if (!st && dp && *dp && dst && dspy_track_is_file(dp)) st = dspy_track_copy_file(dp, dst);
    free(dst);
    dspy_json_decref(rep);
    return st;
}

static dspy_status from_train_log(dspy_run *r, dspy_json *curves, dspy_json *points) {
    char *path = dspy_track_join(r->dir, "train.jsonl");
    if (!path) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_status st = DSPY_OK;
    dspy_json *pts = dspy_json_array();
    if (!pts) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    else if (dspy_track_is_file(path)) st = dspy_track_train_log_points(path, pts);
    double last_loss = NAN, tps_sum = 0;
    int64_t last_step = 0, n_tps = 0;
    for (size_t i = 0; !st && i < dspy_json_size(pts); i++) {
        const dspy_json *p = dspy_json_at(pts, i);
        const char *k = dspy_json_str_or(p, "key", "");
        double v = 0;
        dspy_track_number_of(dspy_json_get(p, "value"), &v);
        if (strcmp(k, "loss") == 0) {
            last_loss = v;
            last_step = dspy_json_int_or(p, "step", 0);
        } else if (strcmp(k, "tokens_per_s") == 0 && isfinite(v)) {
            tps_sum += v;
            n_tps++;
        }
        st = dspy_json_append(curves, dspy_json_incref((dspy_json *)p));
    }
    if (!st && last_step > 0) {
        st = final_metric(r, points, "train_steps", (double)last_step);
        if (!st) st = final_metric(r, points, "train_final_loss", last_loss);
    }
    if (!st && n_tps) st = final_metric(r, points, "train_tokens_per_s", tps_sum / (double)n_tps);
    dspy_json_decref(pts);
    free(path);
    return st;
}

static dspy_status from_results(dspy_run *r, dspy_json *points, const char *rel, const char *score_key,
                                const char *n_key) {
    dspy_json *rows = NULL;
    dspy_status st = dspy_track_load_json(r->dir, rel, &rows);
    if (st == DSPY_ERR_NOTFOUND) return DSPY_OK;
    double score = -1;
    size_t n = 0;
    if (!st) st = dspy_track_results_score(rows, &score, &n);
    if (!st && n) st = final_metric(r, points, score_key, score);
    if (!st && n) st = final_metric(r, points, n_key, (double)n);
    dspy_json_decref(rows);
    return st;
}

dspy_status dspy_track_collect(dspy_run *r) {
    dspy_json *points = dspy_json_array(), *curves = dspy_json_array();
    bool copied = false;
    dspy_status st = points && curves ? from_report_json(r, points, &copied) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!st) st = from_train_log(r, curves, points);
    if (!st) st = from_results(r, points, "results.json", "eval_score", "eval_examples");
    dspy_json *arts = st ? NULL : dspy_track_list_artifacts(r->dir);
    for (size_t i = 0; !st && arts && i < dspy_json_size(arts); i++) {
        const char *rel = dspy_json_str(dspy_json_at(arts, i));
        if (strncmp(rel, "baselines/", 10) != 0 || !strstr(rel, "/results.json")) continue;
        dspy_str name = DSPY_STR_INIT, sk = DSPY_STR_INIT, nk = DSPY_STR_INIT;
        dspy_str_appendn(&name, rel + 10, (size_t)(strstr(rel, "/results.json") - (rel + 10)));
        dspy_str_appendf(&sk, "baseline_%s_score", dspy_str_cstr(&name));
        dspy_str_appendf(&nk, "baseline_%s_examples", dspy_str_cstr(&name));
        st = dspy_str_ok(&sk) && dspy_str_ok(&nk) ? from_results(r, points, rel, sk.ptr, nk.ptr)
                                                  : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        dspy_str_free(&name);
        dspy_str_free(&sk);
        dspy_str_free(&nk);
    }
    if (!st && !arts) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    /* the curves first, then the final values */
    if (!st) st = dspy_track_append_points(r->dir, curves);
    if (!st) st = dspy_track_append_points(r->dir, points);
    dspy_json_decref(curves);
    dspy_json_decref(arts);
    dspy_json_decref(points);
    return st;
}
