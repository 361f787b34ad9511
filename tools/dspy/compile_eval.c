/* compile_eval.c — `dspy compile`'s evaluations on the devset and its before/after table (see
 * compile_run.h): the untrained student (served by `dspy serve` like the fine-tuned one), the
 * teacher, and the fine-tuned student, all with the same devset, metric and settings, so the
 * rows compare. Unparseable answers are scored as wrong (failure_score 0) and listed one line
 * each (failures.h); the details go to <out>/failures-<tag>.jsonl.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compile_run.h"
#include "dspy/clock.h"
#include "dspy/parallel.h"
#include "quiet_log.h"

void compile_eval_clear(compile_eval *e) {
    dspy_eval_result_free(e->result);
    e->result = NULL;
}

dspy_status compile_evaluate(run_state *r, dspy_module *program, compile_eval *e, const char *tag, bool save_results) {
    failure_log fl;
    dspy_status st = failure_log_init(&fl, r->t.devset);
    if (st) return st;
    dspy_evaluate_params ep = dspy_evaluate_params_default();
    ep.num_threads = (int32_t)r->num_threads;
    ep.display_progress = true;
    ep.progress_out = stderr;
    ep.display_table = save_results ? r->table_rows : 0;
    ep.table_out = stderr;
    ep.max_errors = r->max_errors >= 0 ? (int32_t)r->max_errors : (int32_t)(dspy_dataset_len(r->t.devset) + 1);
    ep.log_failures = r->verbose;
    ep.count_parse_failures = false;
    ep.on_failure = failure_log_add;
    ep.failure_user = &fl;
    dspy_str js = DSPY_STR_INIT, cs = DSPY_STR_INIT, fp = DSPY_STR_INIT;
    dspy_str_appendf(&js, "%s/results.json", r->out_dir);
    dspy_str_appendf(&cs, "%s/results.csv", r->out_dir);
    dspy_str_appendf(&fp, "%s/failures-%s.jsonl", r->out_dir, tag);
    if (save_results) {
        ep.save_as_json = dspy_str_cstr(&js);
        ep.save_as_csv = dspy_str_cstr(&cs);
    }
    double t0 = dspy_now_s();
    if (!r->verbose) quiet_log_begin();
    st = dspy_evaluate(program, r->t.devset, &r->t.metric, &ep, &e->result);
    if (!r->verbose) quiet_log_end();
    e->seconds = dspy_now_s() - t0;
    e->ran = st == DSPY_OK;
    if (st) snprintf(e->error, sizeof e->error, "%s", dspy_errmsg());
    if (!r->verbose || st) failure_log_print(&fl, stderr, e->name, failure_log_count(&fl) ? dspy_str_cstr(&fp) : NULL);
    e->unparseable = fl.n_parse;
    if (failure_log_count(&fl)) {
        dspy_status sst = failure_log_save(&fl, dspy_str_cstr(&fp));
        if (!st) st = sst;
    }
    if (e->ran) {
        char *sum = NULL;
        if (dspy_eval_result_summary(e->result, &sum) == DSPY_OK)
            compile_note("%s: %s, %zu failed (%zu unparseable answers scored as wrong) (%.1f s)", e->name, sum,
                         dspy_eval_result_n_failed(e->result), e->unparseable, e->seconds);
        free(sum);
    }
    dspy_str_free(&js);
    dspy_str_free(&cs);
    dspy_str_free(&fp);
    failure_log_free(&fl);
    return st;
}

dspy_status compile_baseline_student(run_state *r) {
    if (!r->baseline_student && !r->baseline_teacher) {
        compile_note("--baselines none: nothing evaluated before compiling (the student's server is first started "
                     "after training)");
        return DSPY_OK;
    }
    dspy_launched *srv = NULL;
    dspy_status st = dspy_program_launch(r->student, &r->lp, &srv);
    if (st)
        return dspy_fail_wrap(st, "the untrained student's `dspy serve` did not start (check --student, --serve-arg "
                              "and --device; no teacher call was made)");
    for (size_t i = 0; i < dspy_launched_count(srv); i++)
        compile_note("untrained student served at %s (log %s)", dspy_local_api_base(dspy_launched_server(srv, i)),
                     dspy_local_log_path(dspy_launched_server(srv, i)));
    if (r->baseline_student) st = compile_evaluate(r, r->student, &r->before_student, "untrained-student", false);
    else compile_note("server checked; the untrained student is not evaluated (--baselines)");
    dspy_status kst = dspy_program_kill(srv);
    dspy_launched_free(srv);
    /* a failed evaluation of the untrained student is reported, not fatal: it is a baseline */
    if (st && st != DSPY_ERR_NOMEM) {
        compile_note("the untrained student's evaluation stopped: %s", dspy_errmsg());
        st = DSPY_OK;
    }
    return st ? st : kst;
}

dspy_status compile_baseline_teacher(run_state *r) {
    if (!r->baseline_teacher) return DSPY_OK;
    dspy_status st = compile_evaluate(r, r->teacher, &r->before_teacher, "teacher", false);
    if (st && st != DSPY_ERR_NOMEM) {
        compile_note("the teacher's evaluation stopped: %s", dspy_errmsg());
        st = DSPY_OK;
    }
    return st;
}

static void row(const compile_eval *e, const char *label, size_t n) {
    if (!e->result) {
        printf("  %-38s %s\n", label, e->error[0] ? "did not finish (see above)" : "not evaluated");
        return;
    }
    size_t failed = dspy_eval_result_n_failed(e->result);
    printf("  %-38s %7.2f %%   %5zu / %-5zu %6zu\n", label, dspy_eval_result_score(e->result), n - failed, n, failed);
}

void compile_print_table(run_state *r) {
    size_t n = dspy_dataset_len(r->t.devset);
    const char *maj = NULL;
    double rate = 0;
    task_majority(&r->t, &maj, &rate);
    printf("\n== dspy compile: before and after, on the same %zu devset examples (metric %s on %s) ==\n", n,
           r->t.metric.name, r->t.metric_field);
    printf("  %-38s %9s   %13s %6s\n", "", "score", "answered", "failed");
    char label[96];
    row(&r->before_student, "untrained student", n);
    snprintf(label, sizeof label, "teacher (%s%s)", dspy_lm_model(r->teacher_lm), r->teacher_is_oracle ? ", a stand-in" : "");
    row(&r->before_teacher, label, n);
    row(&r->after, "fine-tuned student", n);
    if (maj && r->t.metric_kind != TASK_METRIC_NONE) {
        snprintf(label, sizeof label, "majority class (%.24s)", maj);
        printf("  %-38s %7.2f %%\n", label, rate);
    }
    if (r->after.result) {
        double ft = dspy_eval_result_score(r->after.result);
        printf("  fine-tuned student: %.2f %%", ft);
        if (maj && rate > 0) printf(" = %.2f x the majority-class rate", ft / rate);
        if (r->before_student.result) {
            double un = dspy_eval_result_score(r->before_student.result);
            if (un > 0) printf(", %.2f x the untrained student", ft / un);
            else printf(" (the untrained student scored 0)");
        }
        printf("\n");
    }
    printf("  (answered: the answer parsed; failed: unparseable answers and errors, scored 0)\n");
    fflush(stdout);
}

static dspy_json *eval_json(const compile_eval *e, size_t n) {
    if (!e->result) return e->error[0] ? dspy_json_string(e->error) : dspy_json_null();
    dspy_json *o = dspy_json_object();
    if (!o) return NULL;
    size_t failed = dspy_eval_result_n_failed(e->result);
    dspy_json_set(o, "score", dspy_json_real(dspy_eval_result_score(e->result)));
    dspy_json_set(o, "n", dspy_json_int((int64_t)n));
    dspy_json_set(o, "answered", dspy_json_int((int64_t)(n - failed)));
    dspy_json_set(o, "unparseable", dspy_json_int((int64_t)e->unparseable));
    dspy_json_set(o, "errors", dspy_json_int((int64_t)(failed - e->unparseable)));
    dspy_json_set(o, "seconds", dspy_json_real(e->seconds));
    return o;
}

dspy_json *compile_table_json(run_state *r) {
    size_t n = dspy_dataset_len(r->t.devset);
    dspy_json *o = dspy_json_object();
    if (!o) return NULL;
    const char *maj = NULL;
    double rate = 0;
    task_majority(&r->t, &maj, &rate);
    dspy_json_set(o, "untrained_student", eval_json(&r->before_student, n));
    dspy_json_set(o, "teacher", eval_json(&r->before_teacher, n));
    dspy_json_set(o, "finetuned_student", eval_json(&r->after, n));
    dspy_json_set(o, "majority_class", maj ? dspy_json_string(maj) : dspy_json_null());
    dspy_json_set(o, "majority_rate", dspy_json_real(dspy_py_round(rate, 2)));
    /* the ratios the main job is judged by (null when undefined) */
    double ft = r->after.result ? dspy_eval_result_score(r->after.result) : -1;
    double un = r->before_student.result ? dspy_eval_result_score(r->before_student.result) : -1;
    dspy_json_set(o, "finetuned_over_majority",
                  ft >= 0 && rate > 0 ? dspy_json_real(dspy_py_round(ft / rate, 3)) : dspy_json_null());
    dspy_json_set(o, "finetuned_over_untrained", ft >= 0 && un > 0 ? dspy_json_real(dspy_py_round(ft / un, 3)) : dspy_json_null());
    return o;
}
