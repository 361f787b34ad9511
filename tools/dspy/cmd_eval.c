/* cmd_eval.c — `dspy eval`: re-evaluate a saved program on Banking77 (dspy.Evaluate).
 *
 * Loads a program saved by `dspy predict --save` or dspy_module_save (DSPy's JSON layout),
 * points its predictors at --lm, runs it over a Banking77 split with the exact-match metric on
 * the label field, and reports as DSPy's Evaluate does: the tqdm bar and the
 * "Average Metric: ..." line on stderr, the result table (--display-table N) and the
 * EvaluationResult repr on stdout. --out DIR saves results.json and results.csv (DSPy's
 * save_as_json / save_as_csv rows). The LM gets temperature 0.0 unless --temperature says
 * otherwise, so runs are reproducible (spec §16.5).
 * Without --lm the program runs with the LM it was saved with (e.g. a program saved by `dspy
 * compile`, whose LM is "openai/local:<fine-tuned model dir>" with its temperature and
 * max_tokens); local LMs are launched with `dspy serve` first (dspy_program_launch) and killed
 * at the end. --split stratified evaluates the devset of `dspy compile --split stratified`
 * (same --train-size/--dev-size/--seed).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "dspy/compile.h"
#include "dspy/datasets.h"
#include "dspy/evaluate.h"
#include "dspy/module.h"
#include "dspy/settings.h"
#include "track_cli.h"

/* An integer option >= min (absent: *out unchanged). */
static dspy_status count_opt(const dspy_args *a, const char *name, long min, long *out) {
    const char *v = dspy_args_get(a, name);
    if (!v) return DSPY_OK;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < min || x > INT32_MAX)
        return dspy_fail(DSPY_ERR_ARG, "--%s '%s': expected an integer >= %ld", name, v, min);
    *out = x;
    return DSPY_OK;
}

/* A number option (absent: *out unchanged). */
static dspy_status number_opt(const dspy_args *a, const char *name, double *out) {
    const char *v = dspy_args_get(a, name);
    if (!v) return DSPY_OK;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end) return dspy_fail(DSPY_ERR_ARG, "--%s '%s': expected a number", name, v);
    *out = x;
    return DSPY_OK;
}

static dspy_status make_lm(const dspy_args *a, dspy_profile profile, dspy_lm **out) {
    *out = NULL;
    dspy_lm_params lp = dspy_lm_params_default();
    lp.profile = profile == DSPY_PROFILE_V26 ? DSPY_LM_V26 : DSPY_LM_V33;
    double t = 0.0;
    long mt = 0;
    dspy_status st = number_opt(a, "temperature", &t);
    if (!st) st = count_opt(a, "max-tokens", 1, &mt);
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

static dspy_status save_results(const dspy_eval_result *r, const char *dir) {
    dspy_status st = dspy_mkdir_p(dir);
    if (st) return st;
    dspy_str path = DSPY_STR_INIT;
    dspy_str_appendf(&path, "%s/results.json", dir);
    if (!dspy_str_ok(&path)) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!(st = dspy_eval_result_save_json(r, dspy_str_cstr(&path)))) fprintf(stderr, "saved %s\n", dspy_str_cstr(&path));
    dspy_str_clear(&path);
    dspy_str_appendf(&path, "%s/results.csv", dir);
    if (!st && !dspy_str_ok(&path)) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!st && !(st = dspy_eval_result_save_csv(r, dspy_str_cstr(&path)))) fprintf(stderr, "saved %s\n", dspy_str_cstr(&path));
    dspy_str_free(&path);
    return st;
}

int cmd_eval(int argc, char **argv) {
    static const dspy_opt opts[] = {
        {"program", "FILE.json", "the program to evaluate, saved in DSPy's JSON layout (dspy predict --save)", true, false, NULL},
        {"lm", "MODEL", "openai/<model>, openai/local:<path>, or scripted:<replies.json> (default: the program's "
                        "saved LM; a local one is served with `dspy serve` for the run)", false, false, NULL},
        {"api-base", "URL", "OpenAI-compatible endpoint (default: $OPENAI_BASE_URL or api.openai.com)", false, false, NULL},
        {"api-key", "KEY", "API key (default: $OPENAI_API_KEY)", false, false, NULL},
        {"temperature", "T", "sampling temperature sent to the LM", false, false, "0.0"},
        {"max-tokens", "N", "max_tokens sent to the LM (default: not sent)", false, false, NULL},
        {"data-dir", "DIR", "local Banking77 folder (train.csv, test.csv, labels.txt); default: download", false, false, NULL},
        {"cache-dir", "DIR", "download cache [default: $DSPY_CACHEDIR/hf or ~/.dspy_cache/hf]", false, false, NULL},
        {"split", "NAME", "tutorial-dev (the tutorial's 100), test, train, or stratified (the devset of `dspy compile "
                          "--split stratified`)", false, false, "tutorial-dev"},
        {"train-size", "N", "stratified: trainset size (as given to dspy compile)", false, false, "500"},
        {"dev-size", "N", "stratified: devset size", false, false, "154"},
        {"seed", "N", "stratified: random.Random seed", false, false, "0"},
        {"serve-arg", "ARG", "an extra `dspy serve` argument for a local LM's server (repeatable)", false, true, NULL},
        {"launch-timeout", "SECONDS", "how long to wait for a local LM's server", false, false, "600"},
        {"limit", "N", "evaluate only the first N examples", false, false, NULL},
        {"metric", "NAME", "exact (label.strip() == gold.strip()) or answer_exact_match (DSPy's normalised match)", false, false, "exact"},
        {"field", "NAME", "the output field the metric compares", false, false, "label"},
        {"num-threads", "N", "threads (1 runs on the calling thread)", false, false, "8"},
        {"max-errors", "N", "stop after this many failed examples", false, false, "10"},
        {"failure-score", "X", "score of a failed example", false, false, "0.0"},
        {"display-table", "N", "print the first N rows of the result table (0: none, -1: all)", false, false, "0"},
        {"no-progress", NULL, "do not draw the progress bar", false, false, NULL},
        {"out", "DIR", "write results.json and results.csv there", false, false, NULL},
        {"mlflow-uri", "URI", "log the run to an MLflow tracking server (default: $MLFLOW_TRACKING_URI)", false, false, NULL},
        {0},
    };
    dspy_args a;
    int rc = dspy_args_parse(&a, "eval", "--program FILE.json [--lm MODEL] [--data-dir DIR] [--split NAME] [options]",
                             "Evaluate a saved program on Banking77 as dspy.Evaluate does: progress bar, "
                             "\"Average Metric\" line, result table, and the score.",
                             opts, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;

    dspy_module *m = NULL;
    dspy_lm *lm = NULL;
    dspy_dataset *ds = NULL, *sub = NULL;
    dspy_eval_result *res = NULL;
    dspy_launched *servers = NULL;
    dspy_run *run = NULL;
    char *repr = NULL;
    int ret = 1;
    long limit = -1, threads = 8, max_errors = 10, table = 0;
    double failure_score = 0.0;
    dspy_metric metric;
    dspy_banking77_split split;
    const char *mname = dspy_args_get(&a, "metric"), *field = dspy_args_get(&a, "field");
    bool stratified = strcmp(dspy_args_get(&a, "split"), "stratified") == 0;
    long ntr = 0, ndev = 0, seed = 0;
    dspy_status st = stratified ? DSPY_OK : dspy_banking77_split_parse(dspy_args_get(&a, "split"), &split);
    if (!st && stratified) {
        split = DSPY_BANKING77_TEST;
        st = count_opt(&a, "train-size", 0, &ntr);
        if (!st) st = count_opt(&a, "dev-size", 1, &ndev);
        if (!st) st = count_opt(&a, "seed", 0, &seed);
    }
    if (!st) st = count_opt(&a, "limit", 0, &limit);
    if (!st) st = count_opt(&a, "num-threads", 1, &threads);
    if (!st) st = count_opt(&a, "max-errors", 0, &max_errors);
    if (!st) st = count_opt(&a, "display-table", -1, &table);
    if (!st) st = number_opt(&a, "failure-score", &failure_score);
    if (st) goto fail;
    if (strcmp(mname, "exact") == 0) {
        metric = dspy_metric_exact_match(field);
    } else if (strcmp(mname, "answer_exact_match") == 0 || strcmp(mname, "em") == 0) {
        metric = dspy_metric_answer_exact_match(field);
    } else {
        st = dspy_fail(DSPY_ERR_ARG, "--metric '%s': use exact or answer_exact_match", mname);
        goto fail;
    }

    dspy_program_load_params pl = dspy_program_load_params_default();
    if ((st = dspy_program_load(dspy_args_get(&a, "program"), &pl, &m))) goto fail;
    dspy_named_predictor *np = NULL;
    size_t nnp = 0;
    if ((st = dspy_module_named_predictors(m, &np, &nnp))) goto fail;
    dspy_profile profile = nnp ? dspy_predict_profile(np[0].predictor) : DSPY_PROFILE_V33;
    dspy_named_predictors_free(np, nnp);
    if (dspy_args_get(&a, "lm")) {
        if ((st = make_lm(&a, profile, &lm)) || (st = dspy_module_set_lm(m, lm))) goto fail;
    } else {
        dspy_lm *own = NULL;
        if ((st = dspy_module_get_lm(m, &own))) goto fail;
        if (!own) {
            st = dspy_fail(DSPY_ERR_ARG, "%s: the program was saved without an LM; give --lm MODEL",
                           dspy_args_get(&a, "program"));
            goto fail;
        }
        double timeout = 600;
        if ((st = number_opt(&a, "launch-timeout", &timeout))) goto fail;
        dspy_local_params lp = dspy_local_params_default();
        lp.timeout_s = timeout;
        dspy_str logdir = DSPY_STR_INIT; /* the server's log goes with the results */
        if (dspy_args_get(&a, "out")) dspy_str_appendf(&logdir, "%s/logs", dspy_args_get(&a, "out"));
        if (logdir.len) lp.log_dir = dspy_str_cstr(&logdir);
        const char *extra[DSPY_ARGS_MAX_MULTI];
        for (int i = 0; i < dspy_args_count(&a, "serve-arg"); i++) extra[i] = dspy_args_at(&a, "serve-arg", i);
        lp.extra_args = extra;
        lp.n_extra_args = (size_t)dspy_args_count(&a, "serve-arg");
        st = dspy_program_launch(m, &lp, &servers);
        dspy_str_free(&logdir);
        if (st) goto fail;
        for (size_t i = 0; i < dspy_launched_count(servers); i++)
            fprintf(stderr, "launched %s at %s (log %s)\n", dspy_local_model_path(dspy_launched_server(servers, i)),
                    dspy_local_api_base(dspy_launched_server(servers, i)),
                    dspy_local_log_path(dspy_launched_server(servers, i)));
    }

    dspy_banking77_params bp = dspy_banking77_params_default();
    bp.data_dir = dspy_args_get(&a, "data-dir");
    bp.hf.cache_dir = dspy_args_get(&a, "cache-dir");
    if ((st = dspy_banking77_load(&bp, split, &ds, NULL))) goto fail;
    if (stratified) {
        if ((st = dspy_stratified_split(ds, "label", (size_t)ntr, (size_t)ndev, (uint64_t)seed, NULL, &sub))) goto fail;
        dspy_dataset_free(ds);
        ds = sub;
        sub = NULL;
    }
    if (limit >= 0 && (size_t)limit < dspy_dataset_len(ds)) {
        if ((st = dspy_dataset_slice(ds, 0, (size_t)limit, &sub))) goto fail;
        dspy_dataset_free(ds);
        ds = sub;
        sub = NULL;
    }

    run = cli_run_begin(&a, "eval", NULL, argc, argv, stderr);
    dspy_evaluate_params ep = dspy_evaluate_params_default();
    ep.num_threads = (int32_t)threads;
    ep.max_errors = (int32_t)max_errors;
    ep.failure_score = failure_score;
    ep.display_progress = !dspy_args_flag(&a, "no-progress");
    ep.progress_out = stderr;
    ep.display_table = table;
    ep.table_out = stdout;
    if ((st = dspy_evaluate(m, ds, &metric, &ep, &res))) goto fail;
    if ((st = dspy_eval_result_repr(res, &repr))) goto fail;
    printf("%s\n", repr);
    if (fflush(stdout) != 0) {
        st = dspy_fail(DSPY_ERR_IO, "cannot write to stdout");
        goto fail;
    }
    if (dspy_args_get(&a, "out") && (st = save_results(res, dspy_args_get(&a, "out")))) goto fail;
    cli_run_eval(run, res, m);
    if ((st = dspy_program_kill(servers))) goto fail;
    ret = 0;
fail:
    if (ret) ret = dspy_cli_error("eval");
    cli_run_end(&run, ret == 0);
    dspy_launched_free(servers);
    free(repr);
    dspy_eval_result_free(res);
    dspy_dataset_free(sub);
    dspy_dataset_free(ds);
    dspy_module_free(m);
    dspy_lm_free(lm);
    dspy_settings_reset();
    return ret;
}
