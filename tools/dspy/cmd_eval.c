/* cmd_eval.c — `dspy eval`: evaluate a saved program on a devset (dspy.Evaluate).
 *
 * The program: a file saved by dspy.c (`dspy compile`, `dspy predict --save`) or by Python
 * DSPy's save() (program_file.h: the signature is read from the file or given with
 * --signature/--module). Its LM: --lm, or the one it was saved with; local LMs
 * ("openai/local:<dir>", relative paths resolved against the file's folder, or --model DIR)
 * are served with `dspy serve` for the run and killed at the end.
 * The data and the metric: task_opts.h (Banking77's tutorial devset by default, or --devset /
 * --dataset with a field mapping; exact match on the label by default).
 * Output as DSPy's Evaluate: the tqdm bar and the "Average Metric" line on stderr, the table
 * (--display-table N) and the EvaluationResult repr on stdout. Failed examples are listed one
 * line each after the run (failures.h; DSPy's log lines with --verbose). --out DIR writes
 * score.json (score, per-class scores, failures, majority rate), results.json/.csv, table.txt
 * and failures.jsonl; an existing result there is kept unless --force.
 * Errors in the options, the program file or the data are reported before any LM call, with
 * exit status 2. The LM gets temperature 0.0 unless --temperature says otherwise (spec §16.5).
 * An answer that cannot be parsed is scored failure_score like a wrong answer and does not
 * count toward --max-errors (DSPy counts it; --strict-errors restores that).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "dspy/compile.h"
#include "dspy/evaluate.h"
#include "dspy/log.h"
#include "dspy/module.h"
#include "dspy/settings.h"
#include "eval_report.h"
#include "track_cli.h"
#include "failures.h"
#include "program_file.h"
#include "quiet_log.h"
#include "task_opts.h"

static dspy_status make_lm(const dspy_args *a, dspy_profile profile, dspy_lm **out) {
    *out = NULL;
    dspy_lm_params lp = dspy_lm_params_default();
    lp.profile = profile == DSPY_PROFILE_V26 ? DSPY_LM_V26 : DSPY_LM_V33;
    double t = 0.0;
    long mt = 0;
    dspy_status st = dspy_args_number(a, "temperature", &t);
    if (!st) st = dspy_args_int_in(a, "max-tokens", 1, INT32_MAX, &mt);
    if (st) return st;
    lp.temperature = t;
    if (mt > 0) lp.max_tokens = (int32_t)mt;
    dspy_json *kw = dspy_json_object();
    if (!kw) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (dspy_args_get(a, "api-base")) st = dspy_json_set_str(kw, "api_base", dspy_args_get(a, "api-base"));
    if (!st && dspy_args_get(a, "api-key")) st = dspy_json_set_str(kw, "api_key", dspy_args_get(a, "api-key"));
    lp.kwargs = kw;
    if (!st) st = dspy_lm_new(dspy_args_get(a, "lm"), &lp, out);
    dspy_json_decref(kw);
    return st;
}

/* The Predict whose signature the metric reads (the program's only one, or its "predict"). */
static const dspy_signature *program_signature(dspy_module *m) {
    const dspy_module *p = dspy_module_is_predict(m) ? m : dspy_module_child(m, "predict");
    return p ? dspy_predict_signature(p) : NULL;
}

typedef struct eval_run {
    dspy_args a;
    task t;
    dspy_module *m;
    dspy_lm *lm;
    dspy_launched *servers;
    dspy_eval_result *res;
    failure_log failures;
    long threads, max_errors, table;
    double failure_score, launch_timeout;
    const char *out;
} eval_run;

/* Everything before the first LM call; an error here is a usage error (exit 2). */
static dspy_status prepare(eval_run *e) {
    const dspy_args *a = &e->a;
    long limit = -1;
    e->threads = 8;
    e->max_errors = 10;
    e->launch_timeout = 600;
    dspy_status st = dspy_args_int_in(a, "limit", 0, INT32_MAX, &limit);
    if (!st) st = dspy_args_int_in(a, "num-threads", 1, INT32_MAX, &e->threads);
    if (!st) st = dspy_args_int_in(a, "max-errors", 0, INT32_MAX, &e->max_errors);
    if (!st) st = dspy_args_int_in(a, "display-table", -1, INT32_MAX, &e->table);
    if (!st) st = dspy_args_number(a, "failure-score", &e->failure_score);
    if (!st) st = dspy_args_number(a, "launch-timeout", &e->launch_timeout);
    if (!st && dspy_args_get(a, "lm")) {
        double t;
        long mt;
        if (!(st = dspy_args_number(a, "temperature", &t))) st = dspy_args_int_in(a, "max-tokens", 1, INT32_MAX, &mt);
    }
    if (st) return st;
    const char *device = dspy_args_get(a, "device");
    if (strcmp(device, "auto") != 0 && strcmp(device, "cpu") != 0 && strcmp(device, "cuda") != 0)
        return dspy_fail(DSPY_ERR_ARG, "--device '%s': use auto, cpu or cuda", device);
    if ((st = task_parse(&e->t, a, false))) return st;
    e->out = dspy_args_get(a, "out");
    if (e->out && eval_report_exists(e->out) && !dspy_args_flag(a, "force"))
        return dspy_fail(DSPY_ERR_ARG, "--out %s already holds results (score.json / results.json); pass --force to "
                         "overwrite them, or choose another folder", e->out);
    bool inferred = false;
    const char *program = dspy_args_get(a, "program");
    if ((st = program_file_load(program, dspy_args_get(a, "signature"), dspy_args_get(a, "module"),
                                e->t.profile_given ? (int)e->t.profile : -1, &e->m, &inferred)))
        return st;
    if ((st = task_load(&e->t, a, NULL, dspy_args_get(a, "split"), -1, limit))) return st;
    const dspy_signature *sig = program_signature(e->m);
    if (!sig) return dspy_fail(DSPY_ERR_ARG, "%s: the program has no Predict to read the signature from", program);
    if ((st = task_check(&e->t, sig))) return st;
    dspy_named_predictor *np = NULL;
    size_t nnp = 0;
    if ((st = dspy_module_named_predictors(e->m, &np, &nnp))) return st;
    dspy_profile profile = nnp ? dspy_predict_profile(np[0].predictor) : DSPY_PROFILE_V33;
    dspy_named_predictors_free(np, nnp);
    if (dspy_args_get(a, "lm")) {
        if ((st = make_lm(a, profile, &e->lm)) || (st = dspy_module_set_lm(e->m, e->lm))) return st;
        return DSPY_OK;
    }
    dspy_lm *own = NULL;
    if ((st = dspy_module_get_lm(e->m, &own))) return st;
    if (!own)
        return dspy_fail(DSPY_ERR_ARG, "%s: the program was saved without an LM; give --lm MODEL", program);
    if ((st = program_file_resolve_models(e->m, program, dspy_args_get(a, "model")))) return st;
    /* --temperature / --max-tokens given: they override the saved LM's */
    if (!dspy_args_given(a, "temperature") && !dspy_args_given(a, "max-tokens")) return DSPY_OK;
    if ((st = dspy_module_get_lm(e->m, &own))) return st;
    dspy_json *ov = dspy_json_object();
    double t = 0;
    long mt = 0;
    st = ov ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!st && dspy_args_given(a, "temperature") && !(st = dspy_args_number(a, "temperature", &t)))
        st = dspy_json_set(ov, "temperature", dspy_json_real(t));
    if (!st && dspy_args_given(a, "max-tokens") && !(st = dspy_args_int_in(a, "max-tokens", 1, INT32_MAX, &mt)))
        st = dspy_json_set(ov, "max_tokens", dspy_json_int(mt));
    dspy_lm *copy = NULL;
    if (!st) st = dspy_lm_copy(own, ov, &copy);
    if (!st) st = dspy_module_set_lm(e->m, copy);
    dspy_lm_free(copy);
    dspy_json_decref(ov);
    return st;
}

/* Launches the program's local LMs (a failure here is a run failure: exit 1). */
static dspy_status launch(eval_run *e) {
    if (dspy_args_get(&e->a, "lm")) return DSPY_OK;
    dspy_local_params lp = dspy_local_params_default();
    lp.timeout_s = e->launch_timeout;
    const char *extra[DSPY_ARGS_MAX_MULTI + 1];
    size_t n = 0;
    for (int i = 0; i < dspy_args_count(&e->a, "serve-arg"); i++) extra[n++] = dspy_args_at(&e->a, "serve-arg", i);
    static char device_arg[32];
    const char *device = dspy_args_get(&e->a, "device");
    if (strcmp(device, "auto") != 0) { /* `dspy serve --device` (see README: --device) */
        snprintf(device_arg, sizeof device_arg, "--device=%s", device);
        extra[n++] = device_arg;
    }
    lp.extra_args = extra;
    lp.n_extra_args = n;
    dspy_str logdir = DSPY_STR_INIT; /* the server's log goes with the results */
    if (e->out) dspy_str_appendf(&logdir, "%s/logs", e->out);
    if (logdir.len) lp.log_dir = dspy_str_cstr(&logdir);
    dspy_status st = dspy_program_launch(e->m, &lp, &e->servers);
    dspy_str_free(&logdir);
    for (size_t i = 0; !st && i < dspy_launched_count(e->servers); i++)
        fprintf(stderr, "launched %s at %s (log %s)\n", dspy_local_model_path(dspy_launched_server(e->servers, i)),
                dspy_local_api_base(dspy_launched_server(e->servers, i)),
                dspy_local_log_path(dspy_launched_server(e->servers, i)));
    return st;
}

static dspy_status run_eval(eval_run *e) {
    bool verbose = dspy_args_flag(&e->a, "verbose");
    dspy_evaluate_params ep = dspy_evaluate_params_default();
    ep.num_threads = (int32_t)e->threads;
    ep.max_errors = (int32_t)e->max_errors;
    ep.failure_score = e->failure_score;
    ep.display_progress = !dspy_args_flag(&e->a, "no-progress");
    ep.progress_out = stderr;
    ep.display_table = e->table;
    ep.table_out = stdout;
    ep.log_failures = verbose;
    ep.count_parse_failures = dspy_args_flag(&e->a, "strict-errors");
    ep.on_failure = failure_log_add;
    ep.failure_user = &e->failures;
    fprintf(stderr, "evaluating %s on %zu examples of %s (%s), metric %s\n", dspy_args_get(&e->a, "program"),
            dspy_dataset_len(e->t.devset), e->t.data_desc, e->t.split_desc, e->t.metric.name);
    if (!verbose) quiet_log_begin();
    dspy_status st = dspy_evaluate(e->m, e->t.devset, &e->t.metric, &ep, &e->res);
    if (!verbose) quiet_log_end();
    if (!verbose || st) {
        dspy_str details = DSPY_STR_INIT;
        if (e->out) dspy_str_appendf(&details, "%s/failures.jsonl", e->out);
        failure_log_print(&e->failures, stderr, "evaluated", e->out ? dspy_str_cstr(&details) : NULL);
        dspy_str_free(&details);
    }
    return st;
}

static dspy_status write_out(eval_run *e) {
    dspy_json *extra = dspy_json_object();
    if (!extra) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_status st = dspy_json_set_str(extra, "program", dspy_args_get(&e->a, "program"));
    if (!st) st = dspy_json_set_str(extra, "data", e->t.data_desc);
    if (!st) st = dspy_json_set_str(extra, "split", e->t.split_desc);
    if (!st) st = eval_report_write(e->res, &e->t, extra, e->out);
    dspy_json_decref(extra);
    dspy_str p = DSPY_STR_INIT;
    dspy_str_appendf(&p, "%s/failures.jsonl", e->out);
    if (!st) st = dspy_str_ok(&p) ? failure_log_save(&e->failures, dspy_str_cstr(&p)) : dspy_fail(DSPY_ERR_NOMEM, "oom");
    if (!st) fprintf(stderr, "saved score.json, results.json, results.csv, table.txt, failures.jsonl in %s\n", e->out);
    dspy_str_free(&p);
    return st;
}

int cmd_eval(int argc, char **argv) {
    static const dspy_opt opts[] = {
        {"program", "FILE.json", "the program, saved by dspy.c or by Python DSPy's save()", true, false, NULL},
        {"model", "DIR", "the local model directory the program's openai/local LM uses, instead of the saved path",
         false, false, NULL},
        {"lm", "MODEL", "openai/<model>, openai/local:<path>, or scripted:<replies.json> (default: the program's "
                        "saved LM; a local one is served with `dspy serve` for the run)", false, false, NULL},
        {"api-base", "URL", "OpenAI-compatible endpoint (default: $OPENAI_BASE_URL or api.openai.com)", false, false, NULL},
        {"api-key", "KEY", "API key (default: $OPENAI_API_KEY)", false, false, NULL},
        {"temperature", "T", "sampling temperature sent to the LM (given: also overrides the saved LM's)", false, false,
         "0.0"},
        {"max-tokens", "N", "max_tokens sent to the LM (default: --lm: not sent; the saved LM: its own)", false, false,
         NULL},
        TASK_OPTS_DATA,
        {"split", "NAME", "Banking77: tutorial-dev (the tutorial's 100), test, train or stratified; --dataset: "
                          "tutorial or stratified (their devset part) or all", false, false, "tutorial-dev"},
        TASK_OPTS_PROGRAM,
        {"field", "NAME", "the output field the metric compares (same as --metric KIND:FIELD)", false, false, NULL},
        {"serve-arg", "ARG", "an extra `dspy serve` argument for a local LM's server (repeatable)", false, true, NULL},
        {"device", "NAME", "where a launched local model runs: auto, cpu or cuda (passed to `dspy serve --device`)",
         false, false, "auto"},
        {"launch-timeout", "SECONDS", "how long to wait for a local LM's server", false, false, "600"},
        {"limit", "N", "evaluate only the first N devset examples", false, false, NULL},
        {"num-threads", "N", "threads (1 runs on the calling thread)", false, false, "8"},
        {"max-errors", "N", "stop after this many failed examples (LM and metric errors; unparseable answers are "
                            "scored as wrong and not counted unless --strict-errors)", false, false, "10"},
        {"strict-errors", NULL, "count unparseable answers toward --max-errors, as DSPy's Evaluate does", false, false,
         NULL},
        {"failure-score", "X", "score of a failed example", false, false, "0.0"},
        {"display-table", "N", "print the first N rows of the result table (0: none, -1: all)", false, false, "0"},
        {"no-progress", NULL, "do not draw the progress bar", false, false, NULL},
        {"verbose", NULL, "DSPy's log line for each failed example (with the whole answer) instead of one short line",
         false, false, NULL},
        {"out", "DIR", "write score.json, results.json, results.csv, table.txt and failures.jsonl there", false, false,
         NULL},
        {"force", NULL, "overwrite results already in --out", false, false, NULL},
        {"mlflow-uri", "URI", "log the run to an MLflow tracking server (default: $MLFLOW_TRACKING_URI)", false, false, NULL},
        {0},
    };
    eval_run e;
    memset(&e, 0, sizeof e);
    int rc = dspy_args_parse(&e.a, "eval", "--program FILE.json [--devset SRC | --dataset SRC] [--lm MODEL] [options]",
                             "Evaluate a saved program on a devset as dspy.Evaluate does: progress bar, "
                             "\"Average Metric\" line,\nresult table, and the score. Banking77's tutorial devset "
                             "unless --devset/--dataset name other data.",
                             opts, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    int ret = DSPY_EXIT_FAIL;
    dspy_run *run = NULL;
    dspy_status st = prepare(&e);
    if (st) {
        ret = dspy_cli_usage_error("eval");
        goto done;
    }
    dspy_settings_set_adapter(DSPY_ADAPTER_CHAT, e.t.json_fallback);
    dspy_settings_set_local_structured(e.t.structured);
    if ((st = failure_log_init(&e.failures, e.t.devset))) goto fail;
    run = cli_run_begin(&e.a, "eval", NULL, argc, argv, stderr); /* its inputs are loaded: a run to record */
    if ((st = launch(&e)) || (st = run_eval(&e))) goto fail;
    char *repr = NULL;
    if ((st = dspy_eval_result_repr(e.res, &repr))) goto fail;
    printf("%s\n", repr);
    free(repr);
    if (fflush(stdout) != 0) {
        st = dspy_fail(DSPY_ERR_IO, "cannot write to stdout");
        goto fail;
    }
    if (e.out && (st = write_out(&e))) goto fail;
    cli_run_eval(run, e.res, e.m);
    if ((st = dspy_program_kill(e.servers))) goto fail;
    ret = DSPY_EXIT_OK;
fail:
    if (ret) ret = dspy_cli_error("eval");
done:
    cli_run_end(&run, ret == DSPY_EXIT_OK);
    dspy_launched_free(e.servers);
    dspy_eval_result_free(e.res);
    if (e.failures.items) failure_log_free(&e.failures);
    task_free(&e.t);
    dspy_module_free(e.m);
    dspy_lm_free(e.lm);
    dspy_settings_reset();
    return ret;
}
