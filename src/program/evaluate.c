/* evaluate.c — dspy/evaluate.h: the Evaluate driver, the result object and the built-in
 * metrics. The table, the saved rows and the files are in evaluate_table.c.
 *
 * Follows DSPy 3.3.1 dspy/evaluate/evaluate.py and dspy/evaluate/metrics.py (spec §8,
 * CC-26): process_item = program(**example.inputs()) then metric(example, pred); failed items
 * become (example, Prediction(), failure_score); the score and the log line are computed over
 * every example, the sum printed the way Python prints it (int for bool/int metrics unless a
 * float failure_score entered it).
 */
#include <stdlib.h>
#include <string.h>

#include "dspy/log.h"
#include "dspy/parallel.h"
#include "program/evaluate_priv.h"
#include "program/parse_failure.h"

static dspy_status nomem(void) { return dspy_fail(DSPY_ERR_NOMEM, "Evaluate: out of memory"); }

/* ---- metrics ------------------------------------------------------------------------------ */

static dspy_status field_values(const char *field, const dspy_example *ex, const dspy_prediction *pred,
                                const dspy_json **gold, const dspy_json **guess) {
    const dspy_value *ev = dspy_example_get(ex, field);
    if (!ev) return dspy_fail(DSPY_ERR_ARG, "metric: the example has no field '%s' ('Example' object has no attribute '%s')",
                              field, field);
    *gold = dspy_value_as_json(ev);
    *guess = dspy_prediction_get(pred, field);
    if (!*guess)
        return dspy_fail(DSPY_ERR_ARG, "metric: the prediction has no field '%s' ('Prediction' object has no attribute '%s')",
                         field, field);
    return DSPY_OK;
}

static dspy_status exact_match_fn(void *user, const dspy_example *ex, const dspy_prediction *pred, dspy_trace *trace,
                                  double *score) {
    (void)trace;
    const dspy_json *gold = NULL, *guess = NULL;
    dspy_status st = field_values(user, ex, pred, &gold, &guess);
    if (st) return st;
    if (dspy_json_is_string(gold) && dspy_json_is_string(guess)) {
        dspy_strv a = dspy_strv_strip(dspy_strv_make(dspy_json_str(gold), dspy_json_strlen(gold)));
        dspy_strv b = dspy_strv_strip(dspy_strv_make(dspy_json_str(guess), dspy_json_strlen(guess)));
        *score = dspy_strv_eq(a, b) ? 1.0 : 0.0;
    } else {
        *score = dspy_json_equal(gold, guess) ? 1.0 : 0.0;
    }
    return DSPY_OK;
}

dspy_metric dspy_metric_exact_match(const char *field) {
    dspy_metric m = {"exact_match", exact_match_fn, (void *)field, DSPY_SCORE_BOOL};
    return m;
}

static dspy_status normalized_equal(const dspy_json *gold, const char *guess_norm, bool *eq) {
    dspy_str s = DSPY_STR_INIT;
    dspy_json_pystr(gold, &s);
    if (!dspy_str_ok(&s)) return nomem();
    char *g = dspy_normalize_text(dspy_str_cstr(&s));
    dspy_str_free(&s);
    if (!g) return nomem();
    *eq = strcmp(g, guess_norm) == 0;
    free(g);
    return DSPY_OK;
}

static dspy_status answer_exact_match_fn(void *user, const dspy_example *ex, const dspy_prediction *pred,
                                         dspy_trace *trace, double *score) {
    (void)trace;
    const dspy_json *gold = NULL, *guess = NULL;
    dspy_status st = field_values(user, ex, pred, &gold, &guess);
    if (st) return st;
    dspy_str s = DSPY_STR_INIT;
    dspy_json_pystr(guess, &s);
    if (!dspy_str_ok(&s)) return nomem();
    char *g = dspy_normalize_text(dspy_str_cstr(&s));
    dspy_str_free(&s);
    if (!g) return nomem();
    bool eq = false;
    if (dspy_json_typeof(gold) == DSPY_JSON_ARRAY) {
        for (size_t i = 0; !st && !eq && i < dspy_json_size(gold); i++) st = normalized_equal(dspy_json_at(gold, i), g, &eq);
    } else {
        st = normalized_equal(gold, g, &eq);
    }
    free(g);
    *score = eq ? 1.0 : 0.0;
    return st;
}

dspy_metric dspy_metric_answer_exact_match(const char *field) {
    dspy_metric m = {"answer_exact_match", answer_exact_match_fn, (void *)field, DSPY_SCORE_BOOL};
    return m;
}

/* max(f1_score(pred, gold) for gold in answers) over the example's value (a string, or a list
 * of them), both sides as Python's str() of the value. */
static dspy_status f1_fn(void *user, const dspy_example *ex, const dspy_prediction *pred, dspy_trace *trace,
                         double *score) {
    (void)trace;
    *score = 0;
    const dspy_json *gold = NULL, *guess = NULL;
    dspy_status st = field_values(user, ex, pred, &gold, &guess);
    if (st) return st;
    dspy_str g = DSPY_STR_INIT, e = DSPY_STR_INIT;
    dspy_json_pystr(guess, &g);
    bool list = dspy_json_typeof(gold) == DSPY_JSON_ARRAY;
    size_t n = list ? dspy_json_size(gold) : 1;
    for (size_t i = 0; !st && i < n; i++) {
        dspy_str_clear(&e);
        dspy_json_pystr(list ? dspy_json_at(gold, i) : gold, &e);
        double f = 0;
        if (!dspy_str_ok(&g) || !dspy_str_ok(&e)) st = nomem();
        else st = dspy_f1_score(dspy_str_cstr(&g), dspy_str_cstr(&e), &f);
        if (!st && f > *score) *score = f;
    }
    dspy_str_free(&g);
    dspy_str_free(&e);
    return st;
}

dspy_metric dspy_metric_f1(const char *field) {
    dspy_metric m = {"f1", f1_fn, (void *)field, DSPY_SCORE_FLOAT};
    return m;
}

/* ---- the result object -------------------------------------------------------------------- */

dspy_status dspy_eval_result_new(const char *metric_name, dspy_eval_result **out) {
    *out = NULL;
    dspy_eval_result *r = calloc(1, sizeof *r);
    if (!r || !(r->metric_name = strdup(metric_name && *metric_name ? metric_name : "metric"))) {
        free(r);
        return nomem();
    }
    *out = r;
    return DSPY_OK;
}

void dspy_eval_result_free(dspy_eval_result *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) {
        dspy_example_free(r->rows[i].example);
        dspy_prediction_free(r->rows[i].pred);
        free(r->rows[i].error);
        free(r->rows[i].reply);
    }
    free(r->rows);
    free(r->failed);
    free(r->metric_name);
    free(r);
}

/* A copy of `ex` that keeps its input keys. */
static dspy_status copy_example(const dspy_example *ex, dspy_example **out) {
    if (!dspy_example_has_inputs(ex)) return dspy_example_copy(ex, NULL, out);
    size_t n = dspy_example_ninputs(ex);
    const char **keys = calloc(n ? n : 1, sizeof *keys);
    if (!keys) return nomem();
    for (size_t i = 0; i < n; i++) keys[i] = dspy_example_input_key(ex, i);
    dspy_status st = dspy_example_with_inputs(ex, keys, n, out);
    free(keys);
    return st;
}

/* Appends a row; `error` (may be NULL) is copied and marks the row failed. */
static dspy_status append_row(dspy_eval_result *r, const dspy_example *ex, dspy_prediction *pred, double score,
                              dspy_score_kind kind, const char *error, dspy_status status, const char *reply) {
    if (!ex) return dspy_fail(DSPY_ERR_ARG, "EvaluationResult: a row needs an example");
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        eval_row *rows = realloc(r->rows, cap * sizeof *rows);
        if (!rows) return nomem();
        r->rows = rows;
        r->cap = cap;
    }
    if (error) {
        size_t *f = realloc(r->failed, (r->n_failed + 1) * sizeof *f);
        if (!f) return nomem();
        r->failed = f;
    }
    eval_row row = {.score = kind == DSPY_SCORE_BOOL ? (score != 0 ? 1.0 : 0.0) : score, .kind = kind};
    dspy_status st = copy_example(ex, &row.example);
    if (st) return st;
    if (pred) row.pred = dspy_prediction_retain(pred);
    else if ((st = dspy_prediction_new(&row.pred))) goto fail;
    if ((error && !(row.error = strdup(error))) || (reply && !(row.reply = strdup(reply)))) {
        st = nomem();
        goto fail;
    }
    row.status = error ? (status ? status : DSPY_ERR_CANCELLED) : DSPY_OK; /* no status: never ran */
    if (error) r->failed[r->n_failed++] = r->n;
    r->rows[r->n++] = row;
    return DSPY_OK;
fail:
    dspy_example_free(row.example);
    dspy_prediction_free(row.pred);
    free(row.error);
    free(row.reply);
    return st;
}

dspy_status dspy_eval_result_append(dspy_eval_result *r, const dspy_example *example, dspy_prediction *pred,
                                    double score, dspy_score_kind kind) {
    return append_row(r, example, pred, score, kind, NULL, DSPY_OK, NULL);
}

/* sum(scores) in row order, and whether Python would hold it as an int. */
static double score_sum(const dspy_eval_result *r, bool *is_int) {
    double s = 0;
    *is_int = true;
    for (size_t i = 0; i < r->n; i++) {
        s += r->rows[i].score;
        if (r->rows[i].kind == DSPY_SCORE_FLOAT) *is_int = false;
    }
    return s;
}

void dspy_eval_result_set_score(dspy_eval_result *r, double score) {
    r->score_set = true;
    r->score = score;
}

double dspy_eval_result_score(const dspy_eval_result *r) {
    if (r && r->score_set) return r->score;
    if (!r || r->n == 0) return 0;
    bool is_int;
    return dspy_py_round(100.0 * score_sum(r, &is_int) / (double)r->n, 2);
}

size_t dspy_eval_result_len(const dspy_eval_result *r) { return r ? r->n : 0; }
const char *dspy_eval_result_metric_name(const dspy_eval_result *r) { return r ? r->metric_name : NULL; }
const dspy_example *dspy_eval_result_example(const dspy_eval_result *r, size_t i) {
    return r && i < r->n ? r->rows[i].example : NULL;
}
const dspy_prediction *dspy_eval_result_prediction(const dspy_eval_result *r, size_t i) {
    return r && i < r->n ? r->rows[i].pred : NULL;
}
double dspy_eval_result_item_score(const dspy_eval_result *r, size_t i) { return r && i < r->n ? r->rows[i].score : 0; }
dspy_score_kind dspy_eval_result_item_kind(const dspy_eval_result *r, size_t i) {
    return r && i < r->n ? r->rows[i].kind : DSPY_SCORE_FLOAT;
}
const char *dspy_eval_result_item_error(const dspy_eval_result *r, size_t i) {
    return r && i < r->n ? r->rows[i].error : NULL;
}
dspy_status dspy_eval_result_item_status(const dspy_eval_result *r, size_t i) {
    return r && i < r->n ? r->rows[i].status : DSPY_OK;
}
const char *dspy_eval_result_item_reply(const dspy_eval_result *r, size_t i) {
    return r && i < r->n ? r->rows[i].reply : NULL;
}
size_t dspy_eval_result_n_failed(const dspy_eval_result *r) { return r ? r->n_failed : 0; }
const size_t *dspy_eval_result_failed_indices(const dspy_eval_result *r) { return r ? r->failed : NULL; }

static void append_float(dspy_str *s, double x) {
    char buf[40];
    dspy_py_float_repr(x, buf, sizeof buf);
    dspy_str_append(s, buf);
}

static dspy_status take(dspy_str *s, char **out) {
    *out = NULL;
    if (!dspy_str_ok(s)) {
        dspy_str_free(s);
        return nomem();
    }
    *out = dspy_str_take(s);
    return *out ? DSPY_OK : nomem();
}

dspy_status dspy_eval_result_repr(const dspy_eval_result *r, char **out) {
    dspy_str s = DSPY_STR_INIT;
    dspy_str_append(&s, "EvaluationResult(score=");
    append_float(&s, dspy_eval_result_score(r));
    dspy_str_appendf(&s, ", results=<list of %zu results>)", dspy_eval_result_len(r));
    return take(&s, out);
}

dspy_status dspy_eval_result_summary(const dspy_eval_result *r, char **out) {
    bool is_int;
    double sum = score_sum(r, &is_int);
    dspy_str s = DSPY_STR_INIT;
    dspy_str_append(&s, "Average Metric: ");
    if (is_int) dspy_str_appendf(&s, "%.0f", sum);
    else append_float(&s, sum);
    dspy_str_appendf(&s, " / %zu (", r->n);
    if (r->n) append_float(&s, dspy_py_round(100.0 * sum / (double)r->n, 1));
    else dspy_str_append(&s, "0");
    dspy_str_append(&s, "%)");
    return take(&s, out);
}

/* ---- Evaluate ----------------------------------------------------------------------------- */

dspy_evaluate_params dspy_evaluate_params_default(void) {
    dspy_evaluate_params p = {
        .num_threads = 0,
        .display_progress = false,
        .progress_out = NULL,
        .display_table = 0,
        .table_out = NULL,
        .max_errors = -1,
        .failure_score = 0.0,
        .provide_traceback = false,
        .save_as_json = NULL,
        .save_as_csv = NULL,
        .log_failures = true,
        .count_parse_failures = true,
        .on_failure = NULL,
        .failure_user = NULL,
    };
    return p;
}

typedef struct eval_job {
    dspy_module *program;
    const dspy_dataset *devset;
    const dspy_metric *metric;
    const dspy_evaluate_params *p;
    dspy_prediction **preds;
    double *scores;
    dspy_status *status; /* per item: the failure's status (set by the item, also when counted) */
    char **msg;          /* per item: an uncounted failure's message */
    char **reply;        /* per item: the unparseable answer */
} eval_job;

/* Tells on_failure about item i (message: dspy_errmsg() as the item failed). */
static void report_failure(eval_job *j, size_t i, dspy_status st, const char *message) {
    if (!j->p->on_failure) return;
    dspy_eval_failure f = {i, st, message, j->reply[i]};
    j->p->on_failure(j->p->failure_user, &f);
}

static dspy_status eval_item(void *user, size_t i, double *score) {
    eval_job *j = user;
    const dspy_example *ex = dspy_dataset_get(j->devset, i);
    dspy_example *in = NULL;
    /* program(**example.inputs()): an example without input keys is DSPy's ValueError */
    dspy_status st = dspy_example_inputs(ex, &in);
    dspy_example_free(in);
    dspy_prediction *pred = NULL;
    bool watched = dspy_parse_failure_watching();
    if (!st) {
        if (!watched) dspy_parse_failure_watch(true);
        st = dspy_module_call_example(j->program, ex, NULL, &pred);
        parse_failure pf;
        if (st == DSPY_ERR_PARSE && !watched && dspy_parse_failure_take(&pf)) {
            j->reply[i] = pf.lm_response; /* NULL on OOM: only the reply is lost */
            pf.lm_response = NULL;
            dspy_parse_failure_clear(&pf);
        }
        if (!watched) dspy_parse_failure_watch(false);
    }
    double s = 0;
    if (!st && (st = j->metric->fn(j->metric->user, ex, pred, NULL, &s))) {
        dspy_prediction_free(pred);
        pred = NULL;
    }
    if (st) {
        char *msg = strdup(*dspy_errmsg() ? dspy_errmsg() : dspy_status_name(st));
        j->status[i] = st;
        report_failure(j, i, st, msg ? msg : dspy_status_name(st));
        if (st == DSPY_ERR_PARSE && !j->p->count_parse_failures) {
            /* an answer scored failure_score, not an error for the budget */
            if (j->p->log_failures && dspy_log_enabled(DSPY_LOG_ERROR)) {
                dspy_str d = DSPY_STR_INIT;
                dspy_example_append_repr(&d, ex);
                dspy_log(DSPY_LOG_ERROR, "Error for %s: %s%s", dspy_str_ok(&d) ? dspy_str_cstr(&d) : "an example",
                         msg ? msg : "", j->p->provide_traceback ? "" : ". Set `provide_traceback=True` for traceback.");
                dspy_str_free(&d);
            }
            j->msg[i] = msg;
            *score = j->p->failure_score;
            return DSPY_OK;
        }
        st = dspy_fail(st, "%s", msg ? msg : dspy_status_name(st));
        free(msg);
        return st;
    }
    if (j->metric->kind == DSPY_SCORE_BOOL) s = s != 0 ? 1.0 : 0.0;
    j->preds[i] = pred;
    j->scores[i] = s;
    *score = s;
    return DSPY_OK;
}

static void eval_describe(void *user, size_t i, dspy_str *out) {
    eval_job *j = user;
    dspy_example_append_repr(out, dspy_dataset_get(j->devset, i));
}

dspy_status dspy_evaluate(dspy_module *program, const dspy_dataset *devset, const dspy_metric *metric,
                          const dspy_evaluate_params *params, dspy_eval_result **out) {
    *out = NULL;
    dspy_evaluate_params p = params ? *params : dspy_evaluate_params_default();
    if (!program || !devset) return dspy_fail(DSPY_ERR_ARG, "Evaluate: a program and a devset are needed");
    if (!metric || !metric->fn)
        return dspy_fail(DSPY_ERR_ARG, "Evaluate: no metric given; pass one (e.g. dspy_metric_exact_match(\"answer\"))");
    size_t n = dspy_dataset_len(devset);
    if (n == 0) return dspy_fail(DSPY_ERR_ARG, "Evaluate: the devset is empty (DSPy divides by its length)");
    eval_job job = {program,
                    devset,
                    metric,
                    &p,
                    calloc(n, sizeof(dspy_prediction *)),
                    calloc(n, sizeof(double)),
                    calloc(n, sizeof(dspy_status)),
                    calloc(n, sizeof(char *)),
                    calloc(n, sizeof(char *))};
    dspy_eval_result *r = NULL;
    dspy_parallel_report rep;
    memset(&rep, 0, sizeof rep);
    dspy_status st = DSPY_OK;
    if (!job.preds || !job.scores || !job.status || !job.msg || !job.reply) {
        st = nomem();
        goto done;
    }
    dspy_parallel_params pp = dspy_parallel_params_default();
    pp.num_threads = p.num_threads;
    pp.max_errors = p.max_errors;
    pp.display_progress = p.display_progress;
    pp.progress_out = p.progress_out;
    pp.provide_traceback = p.provide_traceback;
    pp.log_errors = p.log_failures;
    if ((st = dspy_parallel_run(&pp, n, eval_item, eval_describe, &job, &rep))) goto done;

    if ((st = dspy_eval_result_new(metric->name, &r))) goto done;
    size_t f = 0;
    for (size_t i = 0; i < n && !st; i++) {
        const dspy_example *ex = dspy_dataset_get(devset, i);
        if (rep.ok[i] && !job.msg[i]) {
            st = append_row(r, ex, job.preds[i], job.scores[i], metric->kind, NULL, DSPY_OK, NULL);
        } else if (rep.ok[i]) { /* an uncounted parse failure */
            st = append_row(r, ex, NULL, p.failure_score, DSPY_SCORE_FLOAT, job.msg[i], job.status[i], job.reply[i]);
        } else {
            const char *msg = f < rep.n_errors && rep.failed[f] == i ? rep.failed_msg[f++] : "not run";
            st = append_row(r, ex, NULL, p.failure_score, DSPY_SCORE_FLOAT, msg, job.status[i], job.reply[i]);
        }
    }
    if (st) goto done;
    char *line = NULL;
    if ((st = dspy_eval_result_summary(r, &line))) goto done;
    dspy_log(DSPY_LOG_INFO, "%s", line);
    free(line);
    if (p.display_table != 0 &&
        (st = dspy_eval_result_print_table(r, p.display_table < 0 ? -1 : p.display_table,
                                           p.table_out ? p.table_out : stderr)))
        goto done;
    if (p.save_as_csv && (st = dspy_eval_result_save_csv(r, p.save_as_csv))) goto done;
    if (p.save_as_json && (st = dspy_eval_result_save_json(r, p.save_as_json))) goto done;
    *out = r;
    r = NULL;
done:
    for (size_t i = 0; job.preds && i < n; i++) dspy_prediction_free(job.preds[i]);
    for (size_t i = 0; job.msg && i < n; i++) free(job.msg[i]);
    for (size_t i = 0; job.reply && i < n; i++) free(job.reply[i]);
    free(job.preds);
    free(job.scores);
    free(job.status);
    free(job.msg);
    free(job.reply);
    dspy_parallel_report_clear(&rep);
    dspy_eval_result_free(r);
    return st;
}
