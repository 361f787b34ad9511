/* test_mlflow.c — the MLflow REST client against tests/support/mlflow_stub, a tracking server that
 * checks every request against the request messages of MLflow's mlflow/protos/service.proto
 * (MLflow commit 0026b08dc1b90b63efce78302b7d6df63f1eac63, the 3.x line; the messages used are
 * unchanged since MLflow 2.0) and MLflow's LogBatch limits:
 *   - the checker itself rejects wrong types, unknown fields, missing required fields, bad enums
 *     and too-large batches (so that "no violation" below means something);
 *   - a run's lifecycle: experiment created once by name, CreateRun at dspy_run_begin (RUNNING),
 *     params / metrics with steps and timestamps / tags in LogBatch requests within MLflow's
 *     limits (2,503 metric points, 151 params: several requests), a param longer than MLflow
 *     keeps cut to 6000 bytes, NaN and infinities, artifacts through the proxied artifact store
 *     byte for byte with their Content-Type, UpdateRun FINISHED with the run's end time;
 *     everything equal to what the run directory holds;
 *   - an existing experiment is reused; 503 answers and a dropped connection are retried;
 *   - a tracking server that is down or answers 500 forever never fails the run: a warning,
 *     run.json records "failed", the run directory keeps everything, and `dspy_run_push_mlflow`
 *     sends it later; pushing twice makes a second MLflow run, never duplicate points in one;
 *   - credentials in the URI are not written to run.json;
 *   - `dspy eval --mlflow-uri` (a process, scripted LM) logs its run; its stdout is unchanged;
 *   - kill -9 of a `dspy eval` in the middle: the MLflow run stays RUNNING, the run directory
 *     reads as DIED, and `dspy runs push` sends it with status KILLED.
 */
#include <curl/curl.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "dspy/datasets.h"
#include "dspy/log.h"
#include "dspy/module.h"
#include "dspy/track.h"
#include "http_stub.h"
#include "mlflow_stub.h"
#include "tutorial_fixture.h"

extern char **environ;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t sink(char *p, size_t size, size_t n, void *ud) {
    dspy_str_appendn(ud, p, size * n);
    return size * n;
}

/* A raw request to the stub; returns the HTTP status, body into *out (may be NULL). */
static long raw(const char *url, const char *method, const char *body, dspy_str *out) {
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    dspy_str sinkbuf = DSPY_STR_INIT;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out ? out : &sinkbuf);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    dspy_str_free(&sinkbuf);
    return status;
}

static void test_checker_rejects(void) {
    mlflow_stub *s = NULL;
    CHECK_OK(mlflow_stub_start(&s));
    if (!s) return;
    char url[256];
    static const char *const bad[][2] = {
        {"runs/create", "{\"experiment_id\": 0}"},                                     /* int for a string */
        {"runs/create", "{\"experiment_id\": \"0\", \"nme\": \"x\"}"},                 /* unknown field */
        {"experiments/create", "{}"},                                                  /* required name */
        {"runs/update", "{\"run_id\": \"x\", \"status\": \"DONE\"}"},                  /* not a RunStatus */
        {"runs/log-batch", "{\"run_id\": \"x\", \"metrics\": [{\"key\": \"a\", \"value\": \"high\", \"timestamp\": 1}]}"},
        {"runs/log-batch", "{\"run_id\": \"x\", \"params\": {\"key\": \"a\"}}"},      /* repeated as object */
        {"runs/create", "{\"experiment_id\": \"0\", \"start_time\": 1.5}"},            /* int64 with a fraction */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(url, sizeof url, "%s/api/2.0/mlflow/%s", mlflow_stub_url(s), bad[i][0]);
        dspy_str body = DSPY_STR_INIT;
        CHECK_INT(raw(url, "POST", bad[i][1], &body), 400);
        CHECK_CONTAINS(dspy_str_cstr(&body), "INVALID_PARAMETER_VALUE");
        dspy_str_free(&body);
    }
    CHECK_INT(mlflow_stub_violations(s), (int)(sizeof bad / sizeof *bad));
    /* a batch over MLflow's limits */
    dspy_str big = DSPY_STR_INIT;
    dspy_str_append(&big, "{\"run_id\": \"x\", \"params\": [");
    for (int i = 0; i < 101; i++) dspy_str_appendf(&big, "%s{\"key\": \"p%d\", \"value\": \"v\"}", i ? "," : "", i);
    dspy_str_append(&big, "]}");
    snprintf(url, sizeof url, "%s/api/2.0/mlflow/runs/create", mlflow_stub_url(s));
    CHECK_INT(raw(url, "POST", "{\"experiment_id\": \"0\", \"start_time\": \"123\"}", NULL), 200); /* int64 as text */
    dspy_json *runs = mlflow_stub_runs(s);
    dspy_str_clear(&big);
    dspy_str_appendf(&big, "{\"run_id\": \"%s\", \"params\": [", dspy_json_str(dspy_json_at(runs, 0)));
    for (int i = 0; i < 101; i++) dspy_str_appendf(&big, "%s{\"key\": \"p%d\", \"value\": \"v\"}", i ? "," : "", i);
    dspy_str_append(&big, "]}");
    snprintf(url, sizeof url, "%s/api/2.0/mlflow/runs/log-batch", mlflow_stub_url(s));
    CHECK_INT(raw(url, "POST", big.ptr, NULL), 400);
    CHECK_INT(mlflow_stub_violations(s), (int)(sizeof bad / sizeof *bad) + 1);
    snprintf(url, sizeof url, "%s/api/2.0/mlflow/runs/get?run_id=%s", mlflow_stub_url(s), dspy_json_str(dspy_json_at(runs, 0)));
    CHECK_INT(raw(url, "GET", NULL, NULL), 200);
    dspy_json_decref(runs);
    dspy_str_free(&big);
    mlflow_stub_stop(s);
}

/* A run directory with a results.json, a program.json and metrics of every kind. */
static dspy_run *make_run(const char *dir, const char *uri, const char *experiment) {
    static const char *const argv[] = {"dspy", "eval", "--program", "p.json", "--api-key", "sk-SECRET", "--lm", "x"};
    dspy_run_params p = dspy_run_params_default();
    p.kind = "eval";
    p.argc = 8;
    p.argv = argv;
    p.mlflow_uri = uri;
    p.mlflow_experiment = experiment;
    dspy_run *r = NULL;
    CHECK_OK(dspy_run_begin(dir, &p, &r));
    return r;
}

static void fill_run(dspy_run *r) {
    char key[16];
    for (int i = 0; i < 150; i++) {
        snprintf(key, sizeof key, "p%03d", i);
        CHECK_OK(dspy_run_set_param(r, key, key + 1));
    }
    char *longv = malloc(7001);
    memset(longv, 'x', 7000);
    longv[7000] = '\0';
    CHECK_OK(dspy_run_set_param(r, "long", longv));
    free(longv);
    for (int i = 1; i <= 2500; i++) CHECK_OK(dspy_run_log_metric(r, "loss", 10.0 / i, i));
    CHECK_OK(dspy_run_log_metric(r, "odd", NAN, 1));
    CHECK_OK(dspy_run_log_metric(r, "odd", INFINITY, 2));
    CHECK_OK(dspy_run_log_metric(r, "odd", -INFINITY, 3));
    char *p = NULL;
    dspy_str path = DSPY_STR_INIT;
    dspy_str_appendf(&path, "%s/results.json", dspy_run_dir(r));
    const char *rows = "[{\"text\": \"a\", \"example_label\": \"x\", \"pred_label\": \"x\", \"m\": true}, "
                       "{\"text\": \"b\", \"label\": \"y\", \"m\": 0.0}]";
    CHECK_OK(dspy_write_file(path.ptr, rows, strlen(rows)));
    dspy_str_clear(&path);
    dspy_str_appendf(&path, "%s/program.json", dspy_run_dir(r));
    CHECK_OK(dspy_write_file(path.ptr, "{\"predict\": {}}\n", 16));
    dspy_str_free(&path);
    free(p);
}

static int count_lines(const char *path) {
    char *t = test_slurp(path);
    int n = 0;
    for (const char *c = t; *c; c++) n += *c == '\n';
    free(t);
    return n;
}

static void test_run_lifecycle(void) {
    mlflow_stub *s = NULL;
    CHECK_OK(mlflow_stub_start(&s));
    if (!s) return;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/life", test_tmpdir());
    dspy_run *r = make_run(dir, mlflow_stub_url(s), "dspy-test");
    if (!r) {
        mlflow_stub_stop(s);
        return;
    }
    /* begin: the experiment made once, the MLflow run RUNNING already */
    CHECK_INT(mlflow_stub_calls(s, "CreateExperiment"), 1);
    CHECK_INT(mlflow_stub_calls(s, "CreateRun"), 1);
    char mid[64] = "";
    CHECK(dspy_run_mlflow_run_id(r) != NULL);
    if (dspy_run_mlflow_run_id(r)) snprintf(mid, sizeof mid, "%s", dspy_run_mlflow_run_id(r));
    dspy_json *mr = mlflow_stub_run(s, mid);
    CHECK_STR(dspy_json_str_or(mr, "status", ""), "RUNNING");
    dspy_json_decref(mr);
    fill_run(r);
    CHECK_OK(dspy_run_finish(r, true, NULL));
    char *viol = mlflow_stub_violation_text(s);
    CHECK_INT(mlflow_stub_violations(s), 0);
    if (*viol) fprintf(stderr, "violations:\n%s", viol);
    free(viol);
    char *trace = mlflow_stub_trace(s);
    /* 2,509 points and 151 params take three requests within MLflow's limits */
    CHECK_CONTAINS(trace, "CreateExperiment CreateRun LogBatch LogBatch LogBatch artifact PUT");
    CHECK_CONTAINS(trace, "artifact PUT UpdateRun");
    CHECK_INT(mlflow_stub_calls(s, "LogBatch"), 3);
    free(trace);

    mr = mlflow_stub_run(s, mid);
    dspy_json *man = NULL, *points = NULL;
    CHECK_OK(dspy_run_load(dir, &man));
    CHECK_OK(dspy_run_metrics(dir, &points));
    CHECK_STR(dspy_json_str_or(mr, "status", ""), "FINISHED");
    CHECK_INT(dspy_json_int_or(mr, "end_time", -1), dspy_json_int_or(man, "end_time", -2));
    CHECK_INT(dspy_json_int_or(mr, "start_time", -1), dspy_json_int_or(man, "start_time", -2));
    CHECK_STR(dspy_json_str_or(dspy_json_get(mr, "tags"), "mlflow.runName", ""), "life");
    CHECK_STR(dspy_json_str_or(dspy_json_get(mr, "tags"), "dspy.run_id", ""), dspy_json_str_or(man, "id", "?"));
    /* params: every one, the long one cut to MLflow's 6000 bytes (whole in run.json) */
    const dspy_json *mp = dspy_json_get(mr, "params"), *lp = dspy_json_get(man, "params");
    CHECK_INT(dspy_json_size(mp), dspy_json_size(lp));
    CHECK_STR(dspy_json_str_or(mp, "p149", ""), "149");
    CHECK_INT(strlen(dspy_json_str_or(mp, "long", "")), 6000);
    CHECK_INT(strlen(dspy_json_str_or(lp, "long", "")), 7000);
    /* metrics: the same points, in order, with steps and timestamps */
    const dspy_json *mm = dspy_json_get(mr, "metrics");
    CHECK_INT(dspy_json_size(mm), dspy_json_size(points));
    CHECK(dspy_json_size(points) >= 2503 + 2);
    size_t same = 0;
    for (size_t i = 0; i < dspy_json_size(points) && i < dspy_json_size(mm); i++) {
        const dspy_json *a = dspy_json_at(points, i), *b = dspy_json_at(mm, i);
        bool eq = strcmp(dspy_json_str_or(a, "key", "a"), dspy_json_str_or(b, "key", "b")) == 0 &&
                  dspy_json_int_or(a, "step", -1) == dspy_json_int_or(b, "step", -2) &&
                  dspy_json_int_or(a, "timestamp", -1) == dspy_json_int_or(b, "timestamp", -2) &&
                  dspy_json_equal(dspy_json_get(a, "value"), dspy_json_get(b, "value"));
        same += eq;
    }
    CHECK_INT(same, dspy_json_size(points));
    CHECK_STR(dspy_json_str(dspy_json_get(dspy_json_at(mm, 2500), "value")), "NaN");
    CHECK_STR(dspy_json_str(dspy_json_get(dspy_json_at(mm, 2501), "value")), "Infinity");
    CHECK_STR(dspy_json_str(dspy_json_get(dspy_json_at(mm, 2502), "value")), "-Infinity");
    CHECK_NEAR(dspy_json_number(dspy_json_get(dspy_json_at(mm, 9), "value")), 1.0, 0);
    CHECK_INT(dspy_json_int_or(dspy_json_at(mm, 9), "step", 0), 10);
    /* artifacts byte for byte, with their types */
    size_t len = 0;
    char *prog = mlflow_stub_artifact(s, mid, "program.json", &len);
    CHECK_STR(prog, "{\"predict\": {}}\n");
    free(prog);
    char *ct = mlflow_stub_artifact_type(s, mid, "program.json");
    CHECK_STR(ct, "application/json");
    free(ct);
    ct = mlflow_stub_artifact_type(s, mid, "report.html");
    CHECK_STR(ct, "text/html");
    free(ct);
    char *local = test_slurp(dspy_json_str_or(man, "dir", "")), *rep = NULL;
    free(local);
    dspy_str rp = DSPY_STR_INIT;
    dspy_str_appendf(&rp, "%s/report.html", dir);
    local = test_slurp(rp.ptr);
    rep = mlflow_stub_artifact(s, mid, "report.html", &len);
    CHECK(rep && strlen(local) > 1000 && strcmp(rep, local) == 0);
    free(rep);
    free(local);
    dspy_str_free(&rp);
    char *mtext = mlflow_stub_artifact(s, mid, "metrics.jsonl", &len);
    CHECK(mtext != NULL && len > 100000);
    free(mtext);
    /* run.json: synced, the secret option masked */
    const dspy_json *ml = dspy_json_get(man, "mlflow");
    CHECK_STR(dspy_json_str_or(ml, "status", ""), "synced");
    CHECK_STR(dspy_json_str_or(ml, "run_id", ""), mid);
    char *text = dspy_json_dumps(man, DSPY_JSON_COMPACT);
    CHECK(text && !strstr(text, "sk-SECRET"));
    CHECK_CONTAINS(text, "\"--api-key\",\"***\"");
    free(text);
    dspy_json_decref(mr);
    dspy_json_decref(man);
    dspy_json_decref(points);
    dspy_run_free(r);

    /* a second push makes a second MLflow run (never duplicate points in the first) */
    char *mid2 = NULL;
    CHECK_OK(dspy_run_push_mlflow(dir, NULL, &mid2));
    CHECK(mid2 && strcmp(mid2, mid) != 0);
    dspy_json *runs = mlflow_stub_runs(s);
    CHECK_INT(dspy_json_size(runs), 2);
    dspy_json_decref(runs);
    free(mid2);
    CHECK_INT(mlflow_stub_violations(s), 0);
    mlflow_stub_stop(s);
}

static void test_existing_experiment_and_retries(void) {
    mlflow_stub *s = NULL;
    CHECK_OK(mlflow_stub_start(&s));
    if (!s) return;
    const char *eid = mlflow_stub_add_experiment(s, "team experiment");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/retry", test_tmpdir());
    mlflow_stub_fail_next(s, 2, 503);
    dspy_run *r = make_run(dir, mlflow_stub_url(s), "team experiment");
    if (!r) {
        mlflow_stub_stop(s);
        return;
    }
    CHECK_INT(mlflow_stub_calls(s, "CreateExperiment"), 0);
    CHECK_INT(mlflow_stub_calls(s, "GetExperimentByName"), 1);
    CHECK_INT(mlflow_stub_requests(s), 4); /* 2 x 503, then get-by-name and create-run */
    CHECK_OK(dspy_run_log_metric(r, "loss", 1.5, 1));
    mlflow_stub_drop_next(s, 1); /* the first LogBatch's connection is dropped */
    CHECK_OK(dspy_run_finish(r, true, NULL));
    dspy_json *mr = mlflow_stub_run(s, dspy_run_mlflow_run_id(r));
    CHECK_STR(dspy_json_str_or(mr, "experiment_id", ""), eid);
    CHECK_STR(dspy_json_str_or(mr, "status", ""), "FINISHED");
    CHECK_INT(dspy_json_size(dspy_json_get(mr, "metrics")), 1);
    CHECK_INT(mlflow_stub_violations(s), 0);
    dspy_json_decref(mr);
    dspy_run_free(r);
    mlflow_stub_stop(s);
}

static dspy_json *manifest(const char *dir) {
    dspy_json *m = NULL;
    CHECK_OK(dspy_run_load(dir, &m));
    return m;
}

static void test_server_down_then_push(void) {
    char dir[1024], uri[128];
    snprintf(dir, sizeof dir, "%s/down", test_tmpdir());
    snprintf(uri, sizeof uri, "http://127.0.0.1:%d", http_stub_closed_port());
    double t0 = now_s();
    dspy_run *r = make_run(dir, uri, "dspy-test");
    if (!r) return;
    CHECK(dspy_run_mlflow_run_id(r) == NULL);
    fill_run(r);
    CHECK_OK(dspy_run_finish(r, true, NULL)); /* the run is fine; MLflow was not */
    CHECK(now_s() - t0 < 20);
    dspy_run_free(r);
    dspy_json *m = manifest(dir);
    CHECK_STR(dspy_json_str_or(m, "status", ""), "FINISHED");
    CHECK_STR(dspy_json_str_or(dspy_json_get(m, "mlflow"), "status", ""), "failed");
    CHECK_CONTAINS(dspy_json_str_or(dspy_json_get(m, "mlflow"), "error", ""), "127.0.0.1");
    CHECK_CONTAINS(dspy_json_str_or(dspy_json_get(m, "mlflow"), "error", ""), "4 attempts");
    dspy_json_decref(m);
    char path[1100];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    CHECK(count_lines(path) >= 2503);
    snprintf(path, sizeof path, "%s/report.html", dir);
    CHECK(access(path, R_OK) == 0);

    /* the server comes up: push sends what the directory kept */
    mlflow_stub *s = NULL;
    CHECK_OK(mlflow_stub_start(&s));
    if (!s) return;
    dspy_mlflow_params p = dspy_mlflow_params_default();
    p.tracking_uri = mlflow_stub_url(s);
    char *mid = NULL;
    CHECK_OK(dspy_run_push_mlflow(dir, &p, &mid));
    dspy_json *mr = mlflow_stub_run(s, mid);
    CHECK_STR(dspy_json_str_or(mr, "status", ""), "FINISHED");
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    CHECK_INT(dspy_json_size(dspy_json_get(mr, "metrics")), count_lines(path));
    CHECK_INT(mlflow_stub_violations(s), 0);
    m = manifest(dir);
    CHECK_STR(dspy_json_str_or(dspy_json_get(m, "mlflow"), "status", ""), "synced");
    CHECK_STR(dspy_json_str_or(dspy_json_get(m, "mlflow"), "experiment", ""), "dspy-test");
    dspy_json_decref(m);
    dspy_json_decref(mr);
    free(mid);
    mlflow_stub_stop(s);
}

static void test_server_errors_forever(void) {
    mlflow_stub *s = NULL;
    CHECK_OK(mlflow_stub_start(&s));
    if (!s) return;
    mlflow_stub_fail_all(s, true);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/err500", test_tmpdir());
    dspy_run *r = make_run(dir, mlflow_stub_url(s), NULL);
    if (!r) {
        mlflow_stub_stop(s);
        return;
    }
    CHECK_OK(dspy_run_log_metric(r, "loss", 2.0, 1));
    CHECK_OK(dspy_run_finish(r, false, "the command failed"));
    dspy_run_free(r);
    CHECK_INT(mlflow_stub_requests(s), 8); /* 4 attempts at begin, 4 at the end */
    dspy_json *m = manifest(dir);
    CHECK_STR(dspy_json_str_or(m, "status", ""), "FAILED");
    CHECK_STR(dspy_json_str_or(m, "error", ""), "the command failed");
    CHECK_STR(dspy_json_str_or(dspy_json_get(m, "mlflow"), "status", ""), "failed");
    CHECK_CONTAINS(dspy_json_str_or(dspy_json_get(m, "mlflow"), "error", ""), "HTTP 500 INTERNAL_ERROR");
    dspy_json_decref(m);
    mlflow_stub_stop(s);
}

static void test_credentials_not_recorded(void) {
    mlflow_stub *s = NULL;
    CHECK_OK(mlflow_stub_start(&s));
    if (!s) return;
    char dir[1024], uri[256];
    snprintf(dir, sizeof dir, "%s/creds", test_tmpdir());
    snprintf(uri, sizeof uri, "http://alice:pw-XYZZY@%s", mlflow_stub_url(s) + strlen("http://"));
    dspy_run *r = make_run(dir, uri, NULL);
    if (!r) {
        mlflow_stub_stop(s);
        return;
    }
    CHECK_OK(dspy_run_finish(r, true, NULL));
    CHECK(dspy_run_mlflow_run_id(r) != NULL);
    dspy_run_free(r);
    char path[1100];
    snprintf(path, sizeof path, "%s/run.json", dir);
    char *text = test_slurp(path);
    CHECK(!strstr(text, "XYZZY"));
    CHECK_CONTAINS(text, mlflow_stub_url(s));
    free(text);
    mlflow_stub_stop(s);
}

/* ---- the CLI ------------------------------------------------------------------------------------ */

static char g_prog[1024], g_lm_arg[1100], g_data[1024];

/* A saved tutorial program and a scripted LM: 2 right, 1 wrong label, 1 unparseable answer. */
static bool eval_fixture(void) {
    if (!test_have_shared("data/banking77/labels.txt")) return false;
    snprintf(g_data, sizeof g_data, "%s", test_shared("data/banking77"));
    dspy_banking77_params bp = dspy_banking77_params_default();
    bp.data_dir = g_data;
    dspy_dataset *dev = NULL;
    CHECK_OK(dspy_banking77_load(&bp, DSPY_BANKING77_TUTORIAL_DEV, &dev, NULL));
    if (!dev) return false;
    dspy_json *match = dspy_json_object(), *file = dspy_json_object();
    for (int i = 0; i < 4; i++) {
        const dspy_example *e = dspy_dataset_get(dev, (size_t)i);
        dspy_json *o = dspy_json_object();
        dspy_json_set_str(o, "reasoning", "scripted");
        dspy_json_set_str(o, "label", i == 1 ? "pending_transfer" : dspy_example_get_str(e, "label"));
        if (i == 2) dspy_json_set_str(match, dspy_example_get_str(e, "text"), "I cannot tell.");
        else dspy_json_set(match, dspy_example_get_str(e, "text"), o);
        if (i == 2) dspy_json_decref(o);
    }
    dspy_json_set(file, "match", match);
    char lm_path[1024];
    snprintf(lm_path, sizeof lm_path, "%s/eval_lm.json", test_tmpdir());
    char *text = dspy_json_dumps(file, DSPY_JSON_UTF8);
    CHECK_OK(dspy_write_file(lm_path, text, strlen(text)));
    free(text);
    dspy_json_decref(file);
    dspy_dataset_free(dev);
    snprintf(g_lm_arg, sizeof g_lm_arg, "scripted:%s", lm_path);
    int nl;
    char *sig = tutorial_signature_text(&nl);
    dspy_module *cot = NULL;
    CHECK_OK(dspy_chain_of_thought_new_text(sig, NULL, NULL, &cot));
    free(sig);
    snprintf(g_prog, sizeof g_prog, "%s/classify.json", test_tmpdir());
    CHECK_OK(dspy_module_save(cot, g_prog));
    dspy_module_free(cot);
    return true;
}

static void test_cli_eval_mlflow(void) {
    if (!eval_fixture()) {
        check_skip("shared/data/banking77 missing");
        return;
    }
    mlflow_stub *s = NULL;
    CHECK_OK(mlflow_stub_start(&s));
    if (!s) return;
    char out[1024];
    snprintf(out, sizeof out, "%s/cli-eval", test_tmpdir());
    const char *args[] = {"--program", g_prog, "--lm", g_lm_arg, "--data-dir", g_data, "--limit", "4", "--num-threads",
                          "2", "--out", out, "--mlflow-uri", mlflow_stub_url(s), NULL};
    test_run_result r = test_run_dspy("eval", args);
    CHECK_INT(r.status, 0);
    if (r.status != 0) fprintf(stderr, "dspy eval:\n%s\n", r.err);
    CHECK_STR(r.out, "EvaluationResult(score=50.0, results=<list of 4 results>)\n");
    CHECK_CONTAINS(r.err, "report: file://");
    dspy_json *runs = mlflow_stub_runs(s);
    CHECK_INT(dspy_json_size(runs), 1);
    dspy_json *mr = mlflow_stub_run(s, dspy_json_str(dspy_json_at(runs, 0)));
    CHECK_STR(dspy_json_str_or(mr, "status", ""), "FINISHED");
    CHECK_STR(dspy_json_str_or(dspy_json_get(mr, "params"), "lm", ""), g_lm_arg);
    CHECK_STR(dspy_json_str_or(dspy_json_get(mr, "params"), "limit", ""), "4");
    CHECK_STR(dspy_json_str_or(dspy_json_get(mr, "tags"), "mlflow.source.name", ""), "dspy eval");
    const dspy_json *mm = dspy_json_get(mr, "metrics");
    bool score = false;
    for (size_t i = 0; i < dspy_json_size(mm); i++)
        if (strcmp(dspy_json_str_or(dspy_json_at(mm, i), "key", ""), "eval_score") == 0)
            score = fabs(dspy_json_number(dspy_json_get(dspy_json_at(mm, i), "value")) - 50.0) < 1e-9;
    CHECK(score);
    size_t len = 0;
    char *res = mlflow_stub_artifact(s, dspy_json_str(dspy_json_at(runs, 0)), "results.json", &len);
    char path[1100];
    snprintf(path, sizeof path, "%s/results.json", out);
    char *local = test_slurp(path);
    CHECK(res && strlen(local) > 10 && strcmp(res, local) == 0);
    free(res);
    free(local);
    CHECK_INT(mlflow_stub_violations(s), 0);
    dspy_json_decref(mr);
    dspy_json_decref(runs);
    test_run_free(&r);
    mlflow_stub_stop(s);
}

/* An OpenAI-compatible endpoint that never answers in time. */
static void slow_handler(void *ud, const http_stub_request *req, http_stub_response *resp) {
    (void)ud;
    (void)req;
    resp->delay_ms = 60000;
    dspy_str_append(&resp->body, "{}");
}

static void test_kill9_then_push(void) {
    if (!eval_fixture()) {
        check_skip("shared/data/banking77 missing");
        return;
    }
    mlflow_stub *s = NULL;
    http_stub *slow = NULL;
    CHECK_OK(mlflow_stub_start(&s));
    CHECK_OK(http_stub_start(slow_handler, NULL, &slow));
    if (!s || !slow) {
        mlflow_stub_stop(s);
        http_stub_stop(slow);
        return;
    }
    char out[1024], base[256], manifest_path[1100];
    snprintf(out, sizeof out, "%s/killed", test_tmpdir());
    snprintf(base, sizeof base, "%s/v1", http_stub_url(slow));
    snprintf(manifest_path, sizeof manifest_path, "%s/run.json", out);
    const char *argv[] = {test_bin("dspy"), "eval", "--program", g_prog, "--lm", "openai/slow-model", "--api-base", base,
                          "--api-key", "k", "--data-dir", g_data, "--limit", "2", "--out", out, "--mlflow-uri",
                          mlflow_stub_url(s), "--no-progress", NULL};
    pid_t pid;
    CHECK_INT(posix_spawn(&pid, argv[0], NULL, NULL, (char *const *)argv, environ), 0);
    /* wait until the run is recorded and the MLflow run exists, then kill -9 */
    for (int i = 0; i < 400 && !(access(manifest_path, R_OK) == 0 && mlflow_stub_calls(s, "CreateRun") == 1); i++)
        usleep(25000);
    usleep(200000);
    kill(pid, SIGKILL);
    int ws;
    waitpid(pid, &ws, 0);
    CHECK(WIFSIGNALED(ws));
    dspy_json *runs = mlflow_stub_runs(s);
    CHECK_INT(dspy_json_size(runs), 1);
    const char *mid = dspy_json_str(dspy_json_at(runs, 0));
    dspy_json *mr = mlflow_stub_run(s, mid);
    CHECK_STR(dspy_json_str_or(mr, "status", ""), "RUNNING");
    dspy_json_decref(mr);
    dspy_json *m = manifest(out);
    CHECK_STR(dspy_json_str_or(m, "status", ""), "RUNNING");
    CHECK(!dspy_json_bool_or(m, "alive", true));
    dspy_json_decref(m);
    const char *list_args[] = {out, NULL};
    test_run_result r = test_run_dspy("runs", (const char *const[]){"list", out, NULL});
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "DIED");
    test_run_free(&r);
    (void)list_args;
    r = test_run_dspy("runs", (const char *const[]){"push", out, NULL});
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, mid);
    test_run_free(&r);
    mr = mlflow_stub_run(s, mid);
    CHECK_STR(dspy_json_str_or(mr, "status", ""), "KILLED"); /* the same MLflow run, now closed */
    dspy_json_decref(mr);
    CHECK_INT(mlflow_stub_violations(s), 0);
    dspy_json_decref(runs);
    http_stub_stop(slow);
    mlflow_stub_stop(s);
}

static void test_bad_input(void) {
    test_run_result r = test_run_dspy("runs", (const char *const[]){"push", "/nonexistent/run", "--mlflow-uri",
                                                                     "http://127.0.0.1:1", NULL});
    CHECK(r.status != 0);
    CHECK_CONTAINS(r.err, "/nonexistent/run");
    test_run_free(&r);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/life", test_tmpdir());
    r = test_run_dspy("runs", (const char *const[]){"push", dir, "--mlflow-uri", "ftp://example", NULL});
    CHECK(r.status != 0);
    CHECK_CONTAINS(r.err, "http:// and https://");
    test_run_free(&r);
}

int main(void) {
    /* short waits between retries keep the failure tests fast */
    setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0.01", 1);
    setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3", 1);
    unsetenv("MLFLOW_TRACKING_URI");
    unsetenv("MLFLOW_EXPERIMENT_NAME");
    setenv("DSPY_CACHEDIR", test_tmpdir(), 1);
    dspy_log_set_level(DSPY_LOG_ERROR);
    RUN(test_checker_rejects);
    RUN(test_run_lifecycle);
    RUN(test_existing_experiment_and_retries);
    RUN(test_server_down_then_push);
    RUN(test_server_errors_forever);
    RUN(test_credentials_not_recorded);
    RUN(test_cli_eval_mlflow);
    RUN(test_kill9_then_push);
    RUN(test_bad_input);
    return check_summary("test_mlflow");
}
