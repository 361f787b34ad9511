/* test_track.c — run directories, the report's data, the HTML writer, `dspy runs` and the MLflow
 * file-store export:
 *   - a compile-shaped run directory (report.json, the trainer's train.jsonl in another folder,
 *     the fine-tuning JSONL, results.json, baselines): run.json's fields, the curves in
 *     metrics.jsonl with timestamps derived from train.jsonl's "elapsed", the final values,
 *     copies, the artifact list; a failed run; secrets masked; bad keys refused;
 *   - the report model: confusion cells sum to the rows of results.json, "(no answer)" for
 *     failed examples, per-class counts, top confusions, failed examples with their LM calls;
 *   - the HTML: prompts holding "</script>" cannot end the data element, a CSP that forbids
 *     network access, no external URL anywhere;
 *   - finding runs (skipping caches, checkpoints and model folders; a finetune run directory that
 *     is also a model folder is found), id prefixes, a run whose process died;
 *   - `dspy runs list / show / compare`, `dspy report`, and their errors;
 *   - `dspy runs export --mlflow DIR`: MLflow's FileStore layout and file contents, the YAML read
 *     back by PyYAML (an independent parser; skipped when python3-yaml is absent), a re-export
 *     replacing the run, a second experiment, an existing store left as it is.
 */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "dspy/log.h"
#include "dspy/track.h"

static void put(const char *dir, const char *rel, const char *text) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    CHECK_OK(dspy_mkdir_p(path));
    *slash = '/';
    CHECK_OK(dspy_write_file(path, text, strlen(text)));
}

static char *get(const char *dir, const char *rel) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    return test_slurp(path);
}

static bool exists(const char *dir, const char *rel) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    return access(path, F_OK) == 0;
}

static const char *k_rows =
    "[{\"text\": \"card late\", \"example_label\": \"card_arrival\", \"reasoning\": \"r\", \"pred_label\": \"card_arrival\", \"m\": true},\n"
    " {\"text\": \"card still late\", \"example_label\": \"card_arrival\", \"reasoning\": \"r\", \"pred_label\": \"card_linking\", \"m\": false},\n"
    " {\"text\": \"rate </script><b>x\", \"label\": \"exchange_rate\", \"m\": 0.0},\n"
    " {\"text\": \"which rate\", \"example_label\": \"exchange_rate\", \"reasoning\": \"r\", \"pred_label\": \"exchange_rate\", \"m\": true},\n"
    " {\"text\": \"link card\", \"example_label\": \"card_linking\", \"reasoning\": \"r\", \"pred_label\": \"card_arrival\", \"m\": false}]\n";

/* A run directory as `dspy compile` leaves it, with the fine-tuning output elsewhere. */
static void compile_like(const char *dir, const char *ftdir) {
    put(ftdir, "train.jsonl",
        "{\"step\":1,\"epoch\":0.5,\"loss\":4.0,\"grad_norm\":1.5,\"lr\":0.001,\"tokens\":100,\"labels\":10,\"tokens_per_s\":50.0,\"elapsed\":2.0}\n"
        "{\"step\":2,\"epoch\":1.0,\"loss\":3.0,\"grad_norm\":1.25,\"lr\":0.001,\"tokens\":100,\"labels\":10,\"tokens_per_s\":70.0,\"elapsed\":3.5}\n"
        "{\"step\":3,\"epo");
    put(ftdir, "../data.jsonl", "{\"messages\": []}\n");
    char rep[4096];
    snprintf(rep, sizeof rep,
             "{\"teacher\": \"oracle:banking77\", \"teacher_is_stand_in\": true, \"student_base\": \"openai/local:/s\", "
             "\"finetuned_model\": \"openai/local:%s\", \"trainset\": 2, \"devset\": 5, \"output_dir\": \"%s\", "
             "\"data_path\": \"%s/../data.jsonl\", \"train_first_loss\": 4.0, \"train_final_loss\": 3.0, "
             "\"score\": 40.0, \"seconds_total\": 12.5}\n", ftdir, ftdir, ftdir);
    put(dir, "report.json", rep);
    put(dir, "results.json", k_rows);
    put(dir, "program.json", "{}\n");
    put(dir, "baselines/teacher/results.json", "[{\"text\": \"a\", \"example_label\": \"x\", \"pred_label\": \"x\", \"m\": true}]");
    put(dir, "baselines/student/results.json",
        "[{\"text\": \"a\", \"label\": \"x\", \"m\": false}, {\"text\": \"b\", \"label\": \"y\", \"m\": false}]");
}

static dspy_run *begin(const char *dir, const char *kind) {
    static const char *const argv[] = {"dspy", "compile", "--teacher-api-key", "sk-123", "--hf_token=abc",
                                       "--max-tokens", "64", "--out", "x"};
    dspy_run_params p = dspy_run_params_default();
    p.kind = kind;
    p.argc = 9;
    p.argv = argv;
    dspy_run *r = NULL;
    CHECK_OK(dspy_run_begin(dir, &p, &r));
    return r;
}

static const dspy_json *point(const dspy_json *pts, const char *key, int64_t step) {
    for (size_t i = 0; i < dspy_json_size(pts); i++) {
        const dspy_json *p = dspy_json_at(pts, i);
        if (strcmp(dspy_json_str_or(p, "key", ""), key) == 0 && dspy_json_int_or(p, "step", -1) == step) return p;
    }
    return NULL;
}

static char g_compile_dir[1024];

static void test_compile_run_dir(void) {
    char dir[1024], ft[1024];
    snprintf(dir, sizeof dir, "%s/runs/compile-a", test_tmpdir());
    snprintf(ft, sizeof ft, "%s/cache/finetune/job1", test_tmpdir());
    snprintf(g_compile_dir, sizeof g_compile_dir, "%s", dir);
    dspy_run *r = begin(dir, "compile");
    if (!r) return;
    /* while it runs: RUNNING, alive */
    dspy_json *m = NULL;
    CHECK_OK(dspy_run_load(dir, &m));
    CHECK_STR(dspy_json_str_or(m, "status", ""), "RUNNING");
    CHECK(dspy_json_bool_or(m, "alive", false));
    CHECK_INT(strlen(dspy_json_str_or(m, "id", "")), 32);
    dspy_json_decref(m);
    compile_like(dir, ft);
    CHECK_OK(dspy_run_set_param(r, "teacher", "oracle"));
    CHECK_STATUS(dspy_run_set_param(r, "bad key!", "x"), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_run_set_param(r, "../up", "x"), DSPY_ERR_ARG);
    dspy_json *kw = NULL;
    CHECK_OK(dspy_json_parse("{\"learning_rate\": 0.005, \"use_peft\": false, \"output_dir\": \"/o\"}", 63, "kw", &kw));
    CHECK_OK(dspy_run_set_params_json(r, "train_kwargs.", kw));
    dspy_json_decref(kw);
    struct stat sb;
    char tpath[1100];
    snprintf(tpath, sizeof tpath, "%s/train.jsonl", ft);
    CHECK(stat(tpath, &sb) == 0);
    int64_t mtime = (int64_t)sb.st_mtim.tv_sec * 1000 + sb.st_mtim.tv_nsec / 1000000;
    CHECK_OK(dspy_run_finish(r, true, NULL));
    CHECK_OK(dspy_run_finish(r, false, "ignored: already finished"));
    CHECK(dspy_run_report_path(r) != NULL);
    dspy_run_free(r);

    CHECK_OK(dspy_run_load(dir, &m));
    CHECK_STR(dspy_json_str_or(m, "status", ""), "FINISHED");
    CHECK(dspy_json_int_or(m, "end_time", 0) >= dspy_json_int_or(m, "start_time", 1));
    const dspy_json *params = dspy_json_get(m, "params"), *metrics = dspy_json_get(m, "metrics");
    CHECK_STR(dspy_json_str_or(params, "train_kwargs.learning_rate", ""), "0.005");
    CHECK_STR(dspy_json_str_or(params, "train_kwargs.use_peft", ""), "false");
    CHECK_STR(dspy_json_str_or(params, "train_kwargs.output_dir", ""), "/o");
    CHECK_NEAR(dspy_json_num_or(metrics, "eval_score", -1), 40.0, 0);
    CHECK_NEAR(dspy_json_num_or(metrics, "seconds_total", -1), 12.5, 0);
    CHECK_NEAR(dspy_json_num_or(metrics, "train_steps", -1), 2, 0);
    CHECK_NEAR(dspy_json_num_or(metrics, "train_tokens_per_s", -1), 60.0, 1e-12);
    CHECK_NEAR(dspy_json_num_or(metrics, "baseline_teacher_score", -1), 100.0, 0);
    CHECK_NEAR(dspy_json_num_or(metrics, "baseline_student_score", -1), 0.0, 0);
    CHECK_NEAR(dspy_json_num_or(metrics, "baseline_student_examples", -1), 2, 0);
    CHECK(!dspy_json_get(metrics, "teacher_is_stand_in")); /* a bool, not a metric */
    const dspy_json *tags = dspy_json_get(m, "tags");
    CHECK_STR(dspy_json_str_or(tags, "dspy.teacher_is_stand_in", ""), "true");
    CHECK_STR(dspy_json_str_or(tags, "mlflow.source.name", ""), "dspy compile");
    /* secrets masked, the rest as given */
    char *cmd = dspy_json_dumps(dspy_json_get(m, "command"), DSPY_JSON_COMPACT);
    CHECK_STR(cmd, "[\"dspy\",\"compile\",\"--teacher-api-key\",\"***\",\"--hf_token=***\",\"--max-tokens\",\"64\",\"--out\",\"x\"]");
    free(cmd);
    /* the copies and the artifact list */
    char *a = get(dir, "train.jsonl"), *b = test_slurp(tpath);
    CHECK(strlen(a) > 100 && strcmp(a, b) == 0);
    free(a);
    free(b);
    a = get(dir, "finetune_data.jsonl");
    CHECK_STR(a, "{\"messages\": []}\n");
    free(a);
    char *arts = dspy_json_dumps(dspy_json_get(m, "artifacts"), DSPY_JSON_COMPACT);
    CHECK_STR(arts, "[\"run.json\",\"metrics.jsonl\",\"report.json\",\"program.json\",\"results.json\",\"train.jsonl\","
                    "\"finetune_data.jsonl\",\"report.html\",\"baselines/student/results.json\","
                    "\"baselines/teacher/results.json\"]");
    free(arts);
    dspy_json_decref(m);
    /* the curves: steps, values, timestamps from train.jsonl's mtime and "elapsed"; the cut line skipped */
    dspy_json *pts = NULL;
    CHECK_OK(dspy_run_metrics(dir, &pts));
    const dspy_json *l1 = point(pts, "loss", 1), *l2 = point(pts, "loss", 2), *lr = point(pts, "learning_rate", 2);
    CHECK(l1 && l2 && lr && !point(pts, "loss", 3));
    CHECK_NEAR(dspy_json_num_or(l1, "value", 0), 4.0, 0);
    CHECK_NEAR(dspy_json_num_or(lr, "value", 0), 0.001, 0);
    CHECK_INT(dspy_json_int_or(l2, "timestamp", 0), mtime);
    CHECK_INT(dspy_json_int_or(l1, "timestamp", 0), mtime - 1500);
    CHECK(point(pts, "grad_norm", 2) && point(pts, "tokens_per_s", 1) && point(pts, "epoch", 2));
    CHECK(point(pts, "eval_score", 0) != NULL);
    /* curves come before the final values */
    size_t last_curve = 0, first_final = dspy_json_size(pts);
    for (size_t i = 0; i < dspy_json_size(pts); i++) {
        if (dspy_json_int_or(dspy_json_at(pts, i), "step", 0) > 0) last_curve = i;
        else if (i < first_final) first_final = i;
    }
    CHECK(last_curve < first_final);
    dspy_json_decref(pts);
}

static void test_failed_run(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/runs/failed", test_tmpdir());
    dspy_run *r = begin(dir, "finetune");
    if (!r) return;
    CHECK_OK(dspy_run_log_metric(r, "loss", NAN, 1));
    CHECK_OK(dspy_run_finish(r, false, "finetune: loss is not finite at step 1"));
    dspy_run_free(r);
    dspy_json *m = NULL, *pts = NULL;
    CHECK_OK(dspy_run_load(dir, &m));
    CHECK_STR(dspy_json_str_or(m, "status", ""), "FAILED");
    CHECK_STR(dspy_json_str_or(m, "error", ""), "finetune: loss is not finite at step 1");
    CHECK_STR(dspy_json_str(dspy_json_get(dspy_json_get(m, "metrics"), "loss")), "NaN");
    CHECK_OK(dspy_run_metrics(dir, &pts));
    CHECK_INT(dspy_json_size(pts), 1);
    dspy_json_decref(pts);
    dspy_json_decref(m);
    CHECK(exists(dir, "report.html"));
}

static void test_bad_begin(void) {
    dspy_run *r = NULL;
    dspy_run_params p = dspy_run_params_default();
    CHECK_STATUS(dspy_run_begin("/tmp/x", &p, &r), DSPY_ERR_ARG);
    p.kind = "eval";
    CHECK_STATUS(dspy_run_begin("/proc/no/such/dir", &p, &r), DSPY_ERR_IO);
    CHECK(r == NULL);
    dspy_json *m = NULL;
    CHECK_STATUS(dspy_run_load(test_tmpdir(), &m), DSPY_ERR_NOTFOUND);
    char bad[1024];
    snprintf(bad, sizeof bad, "%s/badmanifest", test_tmpdir());
    put(bad, "run.json", "{\"format\": \"something else\"}");
    CHECK_STATUS(dspy_run_load(bad, &m), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "run.json");
    CHECK(m == NULL);
}

/* ---- the report ---------------------------------------------------------------------------------- */

static void test_report_model(void) {
    /* the LM calls of the failed examples, as history.jsonl holds them */
    put(g_compile_dir, "history.jsonl",
        "{\"prompt\": null, \"messages\": [{\"role\": \"system\", \"content\": \"Classify.\"}, {\"role\": \"user\", "
        "\"content\": \"[[ ## text ## ]]\\nrate </script><b>x\\n\\nRespond.\"}], \"kwargs\": {}, \"response\": {}, "
        "\"outputs\": [\"garbled\"], \"usage\": {}, \"cost\": null, \"timestamp\": \"2026-01-01T00:00:00.000000\", "
        "\"uuid\": \"u\", \"model\": \"m\", \"response_model\": \"m\", \"model_type\": \"chat\"}\n"
        "{\"prompt\": null, \"messages\": [{\"role\": \"user\", \"content\": \"[[ ## text ## ]]\\nlink card\\n\"}], "
        "\"kwargs\": {}, \"response\": {}, \"outputs\": [\"[[ ## label ## ]]\\ncard_arrival\"], \"usage\": {}, "
        "\"cost\": null, \"timestamp\": \"2026-01-01T00:00:01.000000\", \"uuid\": \"v\", \"model\": \"m\", "
        "\"response_model\": \"m\", \"model_type\": \"chat\"}\n{\"cut by a kil");
    dspy_json *model = NULL;
    CHECK_OK(dspy_report_model(g_compile_dir, NULL, &model));
    if (!model) return;
    const dspy_json *run = dspy_json_at(dspy_json_get(model, "runs"), 0);
    const dspy_json *ev = dspy_json_get(run, "eval");
    CHECK_STR(dspy_json_str_or(ev, "field", ""), "label");
    CHECK_INT(dspy_json_int_or(ev, "n", 0), 5);
    CHECK_INT(dspy_json_int_or(ev, "correct", 0), 2);
    CHECK_INT(dspy_json_int_or(ev, "no_answer", 0), 1);
    const dspy_json *cm = dspy_json_get(ev, "confusion");
    char *rows = dspy_json_dumps(dspy_json_get(cm, "rows"), DSPY_JSON_COMPACT);
    char *cols = dspy_json_dumps(dspy_json_get(cm, "cols"), DSPY_JSON_COMPACT);
    CHECK_STR(rows, "[\"card_arrival\",\"card_linking\",\"exchange_rate\"]");
    CHECK_STR(cols, "[\"card_arrival\",\"card_linking\",\"exchange_rate\",\"(no answer)\"]");
    free(rows);
    free(cols);
    int64_t sum = 0, diag = 0;
    const dspy_json *cells = dspy_json_get(cm, "cells");
    for (size_t i = 0; i < dspy_json_size(cells); i++) {
        const dspy_json *c = dspy_json_at(cells, i);
        int64_t r = dspy_json_intval(dspy_json_at(c, 0)), k = dspy_json_intval(dspy_json_at(c, 1));
        sum += dspy_json_intval(dspy_json_at(c, 2));
        if (r == k) diag += dspy_json_intval(dspy_json_at(c, 2));
    }
    CHECK_INT(sum, 5);
    CHECK_INT(diag, 2);
    /* per class, worst first: card_linking 0/1, card_arrival 1/2, exchange_rate 1/2 */
    const dspy_json *pc = dspy_json_get(ev, "per_class");
    CHECK_STR(dspy_json_str_or(dspy_json_at(pc, 0), "label", ""), "card_linking");
    CHECK_INT(dspy_json_int_or(dspy_json_at(pc, 1), "n", 0), 2);
    CHECK_INT(dspy_json_int_or(dspy_json_at(pc, 1), "correct", 0), 1);
    CHECK_INT(dspy_json_size(dspy_json_get(ev, "top_confusions")), 3);
    /* failed examples with the inspect_history text of their calls */
    const dspy_json *fx = dspy_json_get(ev, "failed_examples");
    CHECK_INT(dspy_json_size(fx), 3);
    CHECK_INT(dspy_json_int_or(ev, "failed_total", 0), 3);
    const dspy_json *f2 = dspy_json_at(fx, 1);
    CHECK_STR(dspy_json_str_or(f2, "gold", ""), "exchange_rate");
    CHECK(dspy_json_typeof(dspy_json_get(f2, "pred")) == DSPY_JSON_NULL);
    CHECK_CONTAINS(dspy_json_str_or(f2, "history", ""), "User message:");
    CHECK_CONTAINS(dspy_json_str_or(f2, "history", ""), "garbled");
    CHECK_CONTAINS(dspy_json_str_or(dspy_json_at(fx, 2), "history", ""), "card_arrival");
    CHECK(dspy_json_typeof(dspy_json_get(dspy_json_at(fx, 0), "history")) == DSPY_JSON_NULL);
    /* accuracy of the three */
    const dspy_json *acc = dspy_json_get(run, "accuracy");
    CHECK_INT(dspy_json_size(acc), 3);
    CHECK_NEAR(dspy_json_num_or(dspy_json_at(acc, 0), "score", -1), 0.0, 0);
    CHECK_NEAR(dspy_json_num_or(dspy_json_at(acc, 1), "score", -1), 100.0, 0);
    CHECK_NEAR(dspy_json_num_or(dspy_json_at(acc, 2), "score", -1), 40.0, 0);
    CHECK_INT(dspy_json_size(dspy_json_get(dspy_json_get(run, "curves"), "loss")), 2);
    dspy_json_decref(model);
}

static void test_report_html(void) {
    char out[1100];
    snprintf(out, sizeof out, "%s/r.html", test_tmpdir());
    CHECK_OK(dspy_report_write(g_compile_dir, NULL, out));
    char *html = test_slurp(out);
    const char *data = strstr(html, "<script type=\"application/json\" id=\"dspy-report-data\">");
    CHECK(data != NULL);
    const char *end = data ? strstr(data, "</script>") : NULL;
    /* the text "rate </script><b>x" is inside, escaped: the element ends after the whole JSON */
    CHECK(end && strstr(data, "rate \\u003c/script\\u003e\\u003cb\\u003ex") && strstr(data, "rate \\u003c") < end);
    CHECK(end && strncmp(end, "</script>\n<script>", 18) == 0);
    CHECK_CONTAINS(html, "Content-Security-Policy\" content=\"default-src 'none'; script-src 'unsafe-inline'; "
                         "style-src 'unsafe-inline'\"");
    CHECK(!strstr(html, "src=\"http") && !strstr(html, "href=\"http") && !strstr(html, "url(") &&
          !strstr(html, "@import") && !strstr(html, "fetch("));
    CHECK_CONTAINS(html, "<title>dspy report: compile-a</title>");
    free(html);
    CHECK_STATUS(dspy_report_write("/no/such/run", NULL, out), DSPY_ERR_NOTFOUND);
}

/* ---- finding runs and the CLI ------------------------------------------------------------------------ */

static char g_root[1024], g_eval_dir[1200], g_ft_dir[1200], g_eval_id[40];

static void test_find_and_resolve(void) {
    snprintf(g_root, sizeof g_root, "%s/runs", test_tmpdir());
    /* an eval run, and a finetune run whose directory is also a model folder */
    snprintf(g_eval_dir, sizeof g_eval_dir, "%s/deeper/eval-b", g_root);
    dspy_run *r = begin(g_eval_dir, "eval");
    if (!r) return;
    snprintf(g_eval_id, sizeof g_eval_id, "%s", dspy_run_id(r));
    put(g_eval_dir, "results.json", "[{\"text\": \"a\", \"example_label\": \"x\", \"pred_label\": \"x\", \"m\": 1.0}]");
    CHECK_OK(dspy_run_set_param(r, "teacher", "openai/gpt-4o-mini"));
    CHECK_OK(dspy_run_finish(r, true, NULL));
    dspy_run_free(r);
    snprintf(g_ft_dir, sizeof g_ft_dir, "%s/ft", g_root);
    r = begin(g_ft_dir, "finetune");
    if (!r) return;
    put(g_ft_dir, "config.json", "{}");
    CHECK_OK(dspy_run_finish(r, true, NULL));
    dspy_run_free(r);
    /* never searched: caches, checkpoints, a plain model folder */
    put(g_root, "cache/finetune/x/run.json", "{\"format\": \"dspy.run/1\", \"id\": \"cache\"}");
    put(g_root, "ft/checkpoint-4/run.json", "{\"format\": \"dspy.run/1\", \"id\": \"ckpt\"}");
    put(g_root, "model/config.json", "{}");
    put(g_root, "model/sub/run.json", "{\"format\": \"dspy.run/1\", \"id\": \"model\"}");
    /* a run whose process is gone (pid 1 never ran dspy; a pid that does not exist) */
    char dead[1100];
    snprintf(dead, sizeof dead, "%s/dead", g_root);
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    char text[1024];
    snprintf(text, sizeof text, "{\"format\": \"dspy.run/1\", \"id\": \"deadbeefdeadbeefdeadbeefdeadbeef\", "
             "\"name\": \"dead\", \"kind\": \"eval\", \"status\": \"RUNNING\", \"start_time\": 1, \"pid\": %d, "
             "\"host\": \"%s\", \"params\": {}, \"metrics\": {}}", 0x3ffffff0, host);
    put(dead, "run.json", text);

    const char *roots[] = {g_root};
    dspy_json *runs = NULL;
    CHECK_OK(dspy_runs_find(roots, 1, 3, &runs));
    CHECK_INT(dspy_json_size(runs), 5); /* compile-a, failed, eval-b, ft, dead */
    bool saw_dead = false;
    for (size_t i = 0; i < dspy_json_size(runs); i++) {
        const dspy_json *m = dspy_json_at(runs, i);
        const char *id = dspy_json_str_or(m, "id", "");
        CHECK(strcmp(id, "cache") != 0 && strcmp(id, "ckpt") != 0 && strcmp(id, "model") != 0);
        if (strcmp(id, "deadbeefdeadbeefdeadbeefdeadbeef") == 0) {
            saw_dead = true;
            CHECK(!dspy_json_bool_or(m, "alive", true));
        }
        if (i) CHECK(dspy_json_int_or(m, "start_time", 0) <= dspy_json_int_or(dspy_json_at(runs, i - 1), "start_time", 0));
    }
    CHECK(saw_dead);
    dspy_json_decref(runs);
    CHECK_OK(dspy_runs_find(roots, 1, 0, &runs)); /* depth 0: only the root itself */
    CHECK_INT(dspy_json_size(runs), 0);
    dspy_json_decref(runs);

    char *dir = NULL;
    char prefix[9];
    snprintf(prefix, sizeof prefix, "%.8s", g_eval_id);
    CHECK_OK(dspy_run_resolve(prefix, roots, 1, &dir));
    CHECK_STR(dir, g_eval_dir);
    free(dir);
    dir = NULL;
    CHECK_OK(dspy_run_resolve(g_ft_dir, roots, 1, &dir));
    CHECK_STR(dir, g_ft_dir);
    free(dir);
    dir = NULL;
    CHECK_STATUS(dspy_run_resolve("abc", roots, 1, &dir), DSPY_ERR_NOTFOUND);
    CHECK_STATUS(dspy_run_resolve("ffffffff", roots, 1, &dir), DSPY_ERR_NOTFOUND);
    CHECK_CONTAINS(dspy_errmsg(), "no run id starts with it");
    /* two ids with a common prefix */
    put(g_root, "twin1/run.json", "{\"format\": \"dspy.run/1\", \"id\": \"abcd1111\", \"start_time\": 1}");
    put(g_root, "twin2/run.json", "{\"format\": \"dspy.run/1\", \"id\": \"abcd2222\", \"start_time\": 1}");
    CHECK_STATUS(dspy_run_resolve("abcd", roots, 1, &dir), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "ambiguous");
    CHECK(dir == NULL);
}

static void test_cli_runs(void) {
    test_run_result r = test_run_dspy("runs", (const char *const[]){"list", g_root, NULL});
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "ID        KIND      STATUS");
    CHECK_CONTAINS(r.out, "FINISHED");
    CHECK_CONTAINS(r.out, "FAILED");
    CHECK_CONTAINS(r.out, "DIED");
    CHECK_CONTAINS(r.out, "40.0%");
    CHECK_CONTAINS(r.out, g_eval_dir);
    test_run_free(&r);

    r = test_run_dspy("runs", (const char *const[]){"compare", g_compile_dir, g_eval_dir, NULL});
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "params that differ");
    CHECK_CONTAINS(r.out, "openai/gpt-4o-mini");
    CHECK_CONTAINS(r.out, "eval_score");
    CHECK_CONTAINS(r.out, "+60"); /* 100 - 40 */
    CHECK_CONTAINS(r.out, "compile-a");
    test_run_free(&r);

    char prefix[9];
    snprintf(prefix, sizeof prefix, "%.8s", g_eval_id);
    r = test_run_dspy("runs", (const char *const[]){"compare", g_compile_dir, prefix, "--dir", g_root, "--json", NULL});
    CHECK_INT(r.status, 0);
    dspy_json *o = NULL;
    CHECK_OK(dspy_json_parse(r.out, strlen(r.out), "compare", &o));
    const dspy_json *es = dspy_json_get(dspy_json_get(o, "metrics"), "eval_score");
    CHECK_NEAR(dspy_json_number(dspy_json_at(es, 0)), 40.0, 0);
    CHECK_NEAR(dspy_json_number(dspy_json_at(es, 1)), 100.0, 0);
    CHECK_STR(dspy_json_str(dspy_json_at(dspy_json_get(dspy_json_get(o, "params_differ"), "teacher"), 1)), "openai/gpt-4o-mini");
    dspy_json_decref(o);
    test_run_free(&r);

    r = test_run_dspy("runs", (const char *const[]){"show", g_eval_dir, NULL});
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "dspy eval, FINISHED");
    CHECK_CONTAINS(r.out, "artifacts: run.json metrics.jsonl results.json report.html");
    test_run_free(&r);

    char out[1100];
    snprintf(out, sizeof out, "%s/cmp.html", test_tmpdir());
    r = test_run_dspy("report", (const char *const[]){g_compile_dir, "--compare", g_eval_dir, "--out", out, NULL});
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, out);
    char *html = test_slurp(out);
    CHECK_CONTAINS(html, "<title>dspy report: compile-a vs eval-b</title>");
    free(html);
    test_run_free(&r);

    /* errors: a clear message and a non-zero exit */
    r = test_run_dspy("runs", (const char *const[]){"compare", g_compile_dir, NULL});
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "give two runs");
    test_run_free(&r);
    r = test_run_dspy("runs", (const char *const[]){"frobnicate", NULL});
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "unknown subcommand");
    test_run_free(&r);
    r = test_run_dspy("report", (const char *const[]){"/no/such/run", NULL});
    CHECK(r.status != 0);
    CHECK_CONTAINS(r.err, "error: dspy report: run '/no/such/run'");
    test_run_free(&r);
    r = test_run_dspy("runs", (const char *const[]){"list", "--depth", "99", NULL});
    CHECK_INT(r.status, 2);
    test_run_free(&r);
}

/* ---- MLflow file store ------------------------------------------------------------------------------- */

/* The single subfolder of `dir` other than `not` ("" when none or several). */
static void only_subdir(const char *dir, const char *not1, const char *not2, char *out, size_t cap) {
    out[0] = '\0';
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, not1) == 0 || (not2 && strcmp(e->d_name, not2) == 0)) continue;
        char sub[2400];
        struct stat sb;
        snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name);
        if (stat(sub, &sb) != 0 || !S_ISDIR(sb.st_mode)) continue;
        snprintf(out, cap, "%s", e->d_name);
        n++;
    }
    if (d) closedir(d);
    if (n != 1) out[0] = '\0';
}

static bool have_pyyaml(void) { return system("python3 -c 'import yaml' >/dev/null 2>&1") == 0; }

/* PyYAML's reading of a meta.yaml, as JSON (NULL when python3-yaml is absent). */
static dspy_json *yaml_load(const char *path) {
    char cmd[2400], out[1100];
    snprintf(out, sizeof out, "%s/yaml.json", test_tmpdir());
    snprintf(cmd, sizeof cmd, "python3 -c 'import json,sys,yaml; json.dump(yaml.safe_load(open(sys.argv[1])), "
             "open(sys.argv[2], \"w\"))' '%s' '%s'", path, out);
    if (system(cmd) != 0) return NULL;
    dspy_json *j = NULL;
    CHECK_OK(dspy_json_load(out, &j));
    return j;
}

static void test_export_file_store(void) {
    char store[1024], exp[256], run[256], p[2600];
    snprintf(store, sizeof store, "%s/mlruns", test_tmpdir());
    char *path = NULL;
    CHECK_OK(dspy_run_export_mlflow(g_compile_dir, store, "banking77", &path));
    if (!path) return;
    CHECK(exists(store, ".trash"));
    char *z = get(store, "0/meta.yaml");
    CHECK_CONTAINS(z, "name: Default\n");
    CHECK_CONTAINS(z, "experiment_id: '0'\n");
    free(z);
    only_subdir(store, "0", NULL, exp, sizeof exp);
    CHECK(strlen(exp) == 18 && strspn(exp, "0123456789") == 18);
    snprintf(p, sizeof p, "%s/%s", store, exp);
    only_subdir(p, "tags", NULL, run, sizeof run);
    dspy_json *m = NULL;
    CHECK_OK(dspy_run_load(g_compile_dir, &m));
    CHECK_STR(run, dspy_json_str_or(m, "id", "?"));
    char rd[2400];
    snprintf(rd, sizeof rd, "%s/%s/%s", store, exp, run);
    CHECK_STR(path, rd);
    /* meta.yaml: keys sorted, RunStatus FINISHED = 3, source LOCAL = 4 */
    char *meta = get(rd, "meta.yaml");
    char want[4096];
    snprintf(want, sizeof want,
             "artifact_uri: file://%s/artifacts\ndeleted_time: null\nend_time: %lld\nentry_point_name: ''\n"
             "experiment_id: '%s'\nlifecycle_stage: active\nrun_id: %s\nrun_name: compile-a\nrun_uuid: %s\n"
             "source_name: ''\nsource_type: 4\nsource_version: ''\nstart_time: %lld\nstatus: 3\ntags: []\nuser_id: ",
             rd, (long long)dspy_json_int_or(m, "end_time", 0), exp, run, run, (long long)dspy_json_int_or(m, "start_time", 0));
    CHECK(strncmp(meta, want, strlen(want)) == 0);
    if (strncmp(meta, want, strlen(want)) != 0) fprintf(stderr, "got:\n%s\nwant:\n%s\n", meta, want);
    free(meta);
    /* metrics/<key>: "<timestamp> <value> <step>" per point, as FileStore appends them */
    dspy_json *pts = NULL;
    CHECK_OK(dspy_run_metrics(g_compile_dir, &pts));
    char *loss = get(rd, "metrics/loss");
    snprintf(want, sizeof want, "%lld 4.0 1\n%lld 3.0 2\n", (long long)dspy_json_int_or(point(pts, "loss", 1), "timestamp", 0),
             (long long)dspy_json_int_or(point(pts, "loss", 2), "timestamp", 0));
    CHECK_STR(loss, want);
    free(loss);
    char *es = get(rd, "metrics/eval_score");
    snprintf(want, sizeof want, "%lld 40.0 0\n", (long long)dspy_json_int_or(point(pts, "eval_score", 0), "timestamp", 0));
    CHECK_STR(es, want);
    free(es);
    dspy_json_decref(pts);
    /* params and tags: the value, no newline; mlflow.runName as FileStore.create_run sets it */
    char *lr = get(rd, "params/train_kwargs.learning_rate"), *rn = get(rd, "tags/mlflow.runName");
    char *src = get(rd, "tags/mlflow.source.type");
    CHECK_STR(lr, "0.005");
    CHECK_STR(rn, "compile-a");
    CHECK_STR(src, "LOCAL");
    free(lr);
    free(rn);
    free(src);
    /* artifacts: copies */
    char *a = get(rd, "artifacts/results.json"), *b = get(g_compile_dir, "results.json");
    CHECK(strlen(a) > 10 && strcmp(a, b) == 0);
    free(a);
    free(b);
    CHECK(exists(rd, "artifacts/baselines/teacher/results.json"));
    CHECK(exists(rd, "artifacts/report.html"));
    /* what PyYAML reads, as MLflow's FileStore would */
    if (have_pyyaml()) {
        snprintf(p, sizeof p, "%s/meta.yaml", rd);
        dspy_json *y = yaml_load(p);
        CHECK_STR(dspy_json_str_or(y, "experiment_id", ""), exp);
        CHECK_STR(dspy_json_str_or(y, "run_id", ""), run);
        CHECK_INT(dspy_json_int_or(y, "status", 0), 3);
        CHECK_INT(dspy_json_int_or(y, "source_type", 0), 4);
        CHECK_INT(dspy_json_int_or(y, "start_time", 0), dspy_json_int_or(m, "start_time", -1));
        CHECK(dspy_json_typeof(dspy_json_get(y, "deleted_time")) == DSPY_JSON_NULL);
        CHECK(dspy_json_typeof(dspy_json_get(y, "tags")) == DSPY_JSON_ARRAY);
        CHECK_STR(dspy_json_str_or(y, "lifecycle_stage", ""), "active");
        dspy_json_decref(y);
        snprintf(p, sizeof p, "%s/%s/meta.yaml", store, exp);
        y = yaml_load(p);
        CHECK_STR(dspy_json_str_or(y, "name", ""), "banking77");
        CHECK_STR(dspy_json_str_or(y, "experiment_id", ""), exp); /* a string, quoted */
        CHECK(dspy_json_typeof(dspy_json_get(y, "creation_time")) == DSPY_JSON_INT);
        dspy_json_decref(y);
    } else {
        check_skip("python3 with PyYAML (python3-yaml) is not installed: meta.yaml not read back");
    }
    /* a name YAML would read as another type stays a string */
    char odd[1024];
    snprintf(odd, sizeof odd, "%s/runs/2024-01-01", test_tmpdir());
    dspy_run *r = begin(odd, "eval");
    if (r) {
        CHECK_OK(dspy_run_finish(r, true, NULL));
        dspy_run_free(r);
    }
    char *path2 = NULL;
    CHECK_OK(dspy_run_export_mlflow(odd, store, "banking77: dates & times", &path2));
    if (have_pyyaml() && path2) {
        snprintf(p, sizeof p, "%s/meta.yaml", path2);
        dspy_json *y = yaml_load(p);
        CHECK_STR(dspy_json_str_or(y, "run_name", ""), "2024-01-01");
        dspy_json_decref(y);
        char *slash = strrchr(path2, '/');
        *slash = '\0';
        snprintf(p, sizeof p, "%s/meta.yaml", path2);
        y = yaml_load(p);
        CHECK_STR(dspy_json_str_or(y, "name", ""), "banking77: dates & times");
        dspy_json_decref(y);
    }
    free(path2);
    /* exporting again replaces the run: no doubled metric lines; the store's experiments stay */
    char *again = NULL;
    CHECK_OK(dspy_run_export_mlflow(g_compile_dir, store, "banking77", &again));
    CHECK_STR(again, path);
    char *loss2 = get(rd, "metrics/loss");
    int lines = 0;
    for (const char *c = loss2; *c; c++) lines += *c == '\n';
    CHECK_INT(lines, 2);
    free(loss2);
    free(again);
    only_subdir(store, "0", NULL, p, sizeof p);
    CHECK_STR(p, ""); /* two experiments now: banking77 and the dated one */
    /* a Default experiment someone else wrote is not rewritten */
    put(store, "0/meta.yaml", "name: Default\nlifecycle_stage: active\n# kept\n");
    CHECK_OK(dspy_run_export_mlflow(g_eval_dir, store, "Default", NULL));
    z = get(store, "0/meta.yaml");
    CHECK_CONTAINS(z, "# kept");
    free(z);
    snprintf(p, sizeof p, "0/%s/meta.yaml", g_eval_id);
    CHECK(exists(store, p));
    /* the CLI */
    test_run_result res = test_run_dspy("runs", (const char *const[]){"export", g_ft_dir, "--mlflow", store, NULL});
    CHECK_INT(res.status, 0);
    CHECK_CONTAINS(res.out, "mlflow ui --backend-store-uri");
    test_run_free(&res);
    res = test_run_dspy("runs", (const char *const[]){"export", g_ft_dir, NULL});
    CHECK_INT(res.status, 2);
    CHECK_CONTAINS(res.err, "--mlflow");
    test_run_free(&res);
    dspy_json_decref(m);
    free(path);
}

/* MLFLOW_TRACKING_URI=file:... (MLflow's own way to name a local store): the run lands there. */
static void test_file_store_uri(void) {
    char dir[1024], store[1024], uri[1100];
    snprintf(dir, sizeof dir, "%s/runs/to-file-store", test_tmpdir());
    snprintf(store, sizeof store, "%s/file-store", test_tmpdir());
    snprintf(uri, sizeof uri, "file://%s", store);
    dspy_run_params p = dspy_run_params_default();
    p.kind = "eval";
    p.mlflow_uri = uri;
    p.mlflow_experiment = "local";
    dspy_run *r = NULL;
    CHECK_OK(dspy_run_begin(dir, &p, &r));
    if (!r) return;
    CHECK_OK(dspy_run_log_metric(r, "eval_score", 75.0, 0));
    CHECK_OK(dspy_run_finish(r, true, NULL));
    char rel[200];
    snprintf(rel, sizeof rel, "%s/metrics/eval_score", dspy_run_id(r));
    dspy_json *m = NULL;
    CHECK_OK(dspy_run_load(dir, &m));
    const char *run_path = dspy_json_str_or(dspy_json_get(m, "mlflow"), "run_path", "");
    CHECK_STR(dspy_json_str_or(dspy_json_get(m, "mlflow"), "status", ""), "synced");
    CHECK(strstr(run_path, store) == run_path);
    char *text = get(run_path, "metrics/eval_score");
    CHECK_CONTAINS(text, " 75.0 0\n");
    free(text);
    dspy_json_decref(m);
    dspy_run_free(r);
}

int main(void) {
    unsetenv("MLFLOW_TRACKING_URI");
    setenv("DSPY_RUNS_DIR", test_tmpdir(), 1);
    dspy_log_set_level(DSPY_LOG_ERROR);
    RUN(test_compile_run_dir);
    RUN(test_failed_run);
    RUN(test_bad_begin);
    RUN(test_report_model);
    RUN(test_report_html);
    RUN(test_find_and_resolve);
    RUN(test_cli_runs);
    RUN(test_export_file_store);
    RUN(test_file_store_uri);
    return check_summary("test_track");
}
