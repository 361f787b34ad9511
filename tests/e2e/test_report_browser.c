/* test_report_browser.c — the HTML report of a real tiny `dspy compile`, rendered in headless
 * Chromium (Debian's chromium package) and inspected over the DevTools protocol:
 *   - the compile: the oracle teacher (a stand-in that answers with the gold label), a tiny
 *     random Llama student with the real Llama 3 tokenizer, one epoch, the baselines (the teacher
 *     and the untrained student evaluated too); compile writes report.html and prints its link;
 *   - a second run to compare with: `dspy eval` of a saved tutorial program with a scripted LM
 *     (2 right, 1 wrong label, 1 unparseable answer), then `dspy report RUN --compare RUN2`;
 *   - in the browser, for both reports: no console error, uncaught exception or browser log
 *     error (CSP violations included), no network request at all; every chart present with data
 *     points: accuracy (3 bars, and 1 more for the eval run), loss / learning rate / gradient norm
 *     / tokens/s (one point per optimizer step, counted from train.jsonl), per-class accuracy (one
 *     bar per gold label of the devset), confusion matrices whose cells sum to the devset size
 *     (from report.json and results.json, read here); the failed examples with their prompts; the
 *     zoom buttons of the confusion matrix (x1.5 per click);
 *   - full-page screenshots kept as test artifacts in <build>/test-artifacts/report_browser/.
 * Exit 77 (CTest SKIP_RETURN_CODE) when chromium is not installed or ../shared is missing; a
 * skip is never reported as a pass.
 */
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "chromium.h"
#include "dspy/datasets.h"
#include "dspy/log.h"
#include "dspy/module.h"
#include "dspy/str.h"
#include "../unit/tutorial_fixture.h"

#define SKIP 77

static char g_artifacts[1024], g_tmp[1024];

static int count_lines(const char *path) {
    char *t = test_slurp(path);
    int n = 0;
    for (const char *c = t; *c; c++) n += *c == '\n';
    free(t);
    return n;
}

/* What the page drew, gathered in the page. */
static const char *k_probe =
    "(() => {"
    "  const charts = {};"
    "  for (const svg of document.querySelectorAll('svg[data-chart]')) {"
    "    let sum = 0;"
    "    for (const c of svg.querySelectorAll('.cell')) sum += Number(c.getAttribute('data-count'));"
    "    charts[svg.getAttribute('data-chart')] = {pts: svg.querySelectorAll('.pt').length,"
    "      bars: svg.querySelectorAll('.bar').length, cells: svg.querySelectorAll('.cell').length, sum: sum,"
    "      width: Number(svg.getAttribute('width') || 0)};"
    "  }"
    "  return JSON.stringify({rendered: document.body.getAttribute('data-rendered'), title: document.title,"
    "    charts: charts, failed: document.querySelectorAll('details.failed').length,"
    "    prompts: document.querySelectorAll('details.failed pre').length,"
    "    h2: Array.from(document.querySelectorAll('h2')).map(h => h.textContent)});"
    "})()";

static dspy_json *probe(chromium *c) {
    dspy_json *v = NULL, *o = NULL;
    CHECK_OK(chromium_eval(c, k_probe, &v));
    const char *s = dspy_json_str(v);
    if (s) CHECK_OK(dspy_json_parse(s, strlen(s), "probe", &o));
    dspy_json_decref(v);
    return o;
}

static const dspy_json *chart(const dspy_json *p, const char *name) {
    const dspy_json *c = dspy_json_get(dspy_json_get(p, "charts"), name);
    if (!c) fprintf(stderr, "FAIL: no chart \"%s\" in the page\n", name);
    return c;
}

static bool run_cmd(const char *sub, const char *const *args, const char *what) {
    test_run_result r = test_run_dspy(sub, args);
    bool ok = r.status == 0;
    if (!ok) fprintf(stderr, "%s failed (exit %d):\n%s\n%s\n", what, r.status, r.out, r.err);
    CHECK_INT(r.status, 0);
    if (ok && strcmp(sub, "compile") == 0) CHECK_CONTAINS(r.out, "report: file://");
    test_run_free(&r);
    return ok;
}

/* The eval run: a saved tutorial program, a scripted LM (2 right, 1 wrong, 1 unparseable). */
static bool eval_run(const char *data, const char *out) {
    dspy_banking77_params bp = dspy_banking77_params_default();
    bp.data_dir = data;
    dspy_dataset *dev = NULL;
    CHECK_OK(dspy_banking77_load(&bp, DSPY_BANKING77_TUTORIAL_DEV, &dev, NULL));
    if (!dev) return false;
    dspy_json *match = dspy_json_object(), *file = dspy_json_object();
    for (int i = 0; i < 4; i++) {
        const dspy_example *e = dspy_dataset_get(dev, (size_t)i);
        if (i == 2) {
            dspy_json_set_str(match, dspy_example_get_str(e, "text"), "I cannot tell.");
            continue;
        }
        dspy_json *o = dspy_json_object();
        dspy_json_set_str(o, "reasoning", "scripted");
        dspy_json_set_str(o, "label", i == 1 ? "pending_transfer" : dspy_example_get_str(e, "label"));
        dspy_json_set(match, dspy_example_get_str(e, "text"), o);
    }
    dspy_json_set(file, "match", match);
    dspy_dataset_free(dev);
    char lm_path[1200], lm_arg[1300], prog[1200];
    snprintf(lm_path, sizeof lm_path, "%s/eval_lm.json", g_tmp);
    char *text = dspy_json_dumps(file, DSPY_JSON_UTF8);
    CHECK_OK(dspy_write_file(lm_path, text, strlen(text)));
    free(text);
    dspy_json_decref(file);
    snprintf(lm_arg, sizeof lm_arg, "scripted:%s", lm_path);
    int nl;
    char *sig = tutorial_signature_text(&nl);
    dspy_module *cot = NULL;
    CHECK_OK(dspy_chain_of_thought_new_text(sig, NULL, NULL, &cot));
    free(sig);
    snprintf(prog, sizeof prog, "%s/classify.json", g_tmp);
    CHECK_OK(dspy_module_save(cot, prog));
    dspy_module_free(cot);
    const char *args[] = {"--program", prog, "--lm", lm_arg, "--data-dir", data, "--limit", "4", "--num-threads", "2",
                          "--out", out, "--no-progress", NULL};
    return run_cmd("eval", args, "dspy eval");
}

/* Loads `html` in the browser, checks that nothing went wrong, keeps a screenshot. */
static dspy_json *render(chromium *c, const char *html, const char *shot_name) {
    char url[1300], shot[1300];
    snprintf(url, sizeof url, "file://%s", html);
    CHECK_OK(chromium_load(c, url, 60));
    dspy_json *p = probe(c);
    CHECK_STR(dspy_json_str_or(p, "rendered", ""), "true");
    snprintf(shot, sizeof shot, "%s/%s", g_artifacts, shot_name);
    int w = 0, h = 0;
    CHECK_OK(chromium_screenshot(c, shot, &w, &h));
    CHECK(w >= 1300 && w <= 1400); /* 1400 less a scrollbar, when there is one */
    CHECK(h > 1500);
    struct stat sb;
    CHECK(stat(shot, &sb) == 0 && sb.st_size > 20000);
    fprintf(stderr, "screenshot: %s (%dx%d)\n", shot, w, h);
    return p;
}

int main(void) {
    const char *chrome = chromium_find();
    if (!chrome) {
        printf("SKIP test_report_browser: chromium is not installed (Debian: apt-get install chromium; "
               "scripts/install-deps.sh does it)\n");
        return SKIP;
    }
    if (!test_have_shared("models/llama3-tokenizer/tokenizer.json") || !test_have_shared("data/banking77/train.csv")) {
        printf("SKIP test_report_browser: ../shared (the Llama 3 tokenizer, Banking77) is missing\n");
        return SKIP;
    }
    dspy_log_set_level(DSPY_LOG_ERROR);
    snprintf(g_tmp, sizeof g_tmp, "%s", test_tmpdir());
    setenv("DSPY_CACHEDIR", g_tmp, 1);
    setenv("DSPY_RUNS_DIR", g_tmp, 1);
    unsetenv("MLFLOW_TRACKING_URI");
    char bin[1024];
    snprintf(bin, sizeof bin, "%s", DSPY_BIN_DIR);
    snprintf(g_artifacts, sizeof g_artifacts, "%s/test-artifacts/report_browser", dirname(bin));
    CHECK_OK(dspy_mkdir_p(g_artifacts));

    char data[1024], tok[1024], student[1200], run[1200], ev[1200], cmp[1300];
    snprintf(data, sizeof data, "%s", test_shared("data/banking77"));
    snprintf(tok, sizeof tok, "%s", test_shared("models/llama3-tokenizer"));
    snprintf(student, sizeof student, "%s/student", g_tmp);
    snprintf(run, sizeof run, "%s/compile-run", g_tmp);
    snprintf(ev, sizeof ev, "%s/eval-run", g_tmp);
    snprintf(cmp, sizeof cmp, "%s/compare.html", g_tmp);
    check_current = "tiny compile";
    bool ok = run_cmd("init-model", (const char *const[]){"--out", student, "--tokenizer", tok, "--seed", "0", NULL},
                      "dspy init-model");
    ok = ok && run_cmd("compile",
                       (const char *const[]){"--teacher", "oracle", "--student", student, "--data-dir", data,
                                             "--limit-train", "4", "--limit-dev", "6", "--num-threads", "2",
                                             "--max-tokens", "16", "--train-kwargs", "num_train_epochs=1",
                                             "--train-kwargs", "learning_rate=5e-3", "--train-kwargs",
                                             "gradient_accumulation_steps=1", "--baselines", "student,teacher", "--out", run, NULL},
                       "dspy compile");
    ok = ok && eval_run(data, ev);
    ok = ok && run_cmd("report", (const char *const[]){run, "--compare", ev, "--out", cmp, NULL}, "dspy report");
    if (!ok) return check_summary("test_report_browser");

    /* what the pages must show, from the run directories */
    char path[1400];
    snprintf(path, sizeof path, "%s/train.jsonl", run);
    int steps = count_lines(path);
    dspy_json *rep = NULL, *rows = NULL, *erows = NULL;
    snprintf(path, sizeof path, "%s/report.json", run);
    CHECK_OK(dspy_json_load(path, &rep));
    snprintf(path, sizeof path, "%s/results.json", run);
    CHECK_OK(dspy_json_load(path, &rows));
    snprintf(path, sizeof path, "%s/results.json", ev);
    CHECK_OK(dspy_json_load(path, &erows));
    int64_t devset = dspy_json_int_or(rep, "devset", -1);
    CHECK_INT(devset, 6);
    CHECK_INT(dspy_json_size(rows), devset);
    CHECK(steps >= 2);
    dspy_json *gold = dspy_json_object();
    for (size_t i = 0; i < dspy_json_size(rows); i++) {
        const dspy_json *r = dspy_json_at(rows, i);
        const char *g = dspy_json_str_or(r, "example_label", dspy_json_str_or(r, "label", "?"));
        dspy_json_set(gold, g, dspy_json_null());
    }
    int failed = 0;
    for (size_t i = 0; i < dspy_json_size(rows); i++) {
        const dspy_json *r = dspy_json_at(rows, i);
        failed += !dspy_json_truthy(dspy_json_get(r, "<lambda>"));
    }

    chromium *c = NULL;
    char profile[1300], log[1300];
    snprintf(profile, sizeof profile, "%s/chromium-profile", g_tmp);
    snprintf(log, sizeof log, "%s/chromium.log", g_artifacts);
    check_current = "chromium";
    CHECK_OK(chromium_start(chrome, profile, log, 1400, 1000, &c));
    if (!c) {
        fprintf(stderr, "%s", test_slurp(log));
        return check_summary("test_report_browser");
    }

    check_current = "report of the compile run";
    snprintf(path, sizeof path, "%s/report.html", run);
    dspy_json *p = render(c, path, "report.png");
    const dspy_json *ch;
    if ((ch = chart(p, "accuracy"))) CHECK_INT(dspy_json_int_or(ch, "bars", 0), 3);
    static const char *const curves[] = {"loss", "learning_rate", "grad_norm", "tokens_per_s"};
    for (size_t i = 0; i < 4; i++)
        if ((ch = chart(p, curves[i]))) CHECK_INT(dspy_json_int_or(ch, "pts", 0), steps);
    if ((ch = chart(p, "per_class"))) CHECK_INT(dspy_json_int_or(ch, "bars", 0), (int64_t)dspy_json_size(gold));
    if ((ch = chart(p, "confusion-0"))) {
        CHECK_INT(dspy_json_int_or(ch, "sum", 0), devset);
        CHECK(dspy_json_int_or(ch, "cells", 0) >= 1);
    }
    CHECK_INT(dspy_json_int_or(p, "failed", -1), failed);
    CHECK(failed == 0 || dspy_json_int_or(p, "prompts", 0) >= 1);
    /* zoom: each click on + makes the matrix 1.5 times larger */
    dspy_json *w = NULL;
    CHECK_OK(chromium_eval(c, "(() => { const s = document.querySelector('svg[data-chart=\"confusion-0\"]');"
                              " const a = Number(s.getAttribute('width')); document.getElementById('cm0-zoom-in').click();"
                              " document.getElementById('cm0-zoom-in').click();"
                              " return Number(s.getAttribute('width')) / a; })()", &w));
    CHECK_NEAR(dspy_json_number(w), 2.25, 0.01);
    dspy_json_decref(w);
    dspy_json_decref(p);

    check_current = "side-by-side report";
    p = render(c, cmp, "compare.png");
    CHECK_CONTAINS(dspy_json_str_or(p, "title", ""), "compile-run vs eval-run");
    if ((ch = chart(p, "accuracy"))) CHECK_INT(dspy_json_int_or(ch, "bars", 0), 4);
    if ((ch = chart(p, "loss"))) CHECK_INT(dspy_json_int_or(ch, "pts", 0), steps);
    if ((ch = chart(p, "confusion-0"))) CHECK_INT(dspy_json_int_or(ch, "sum", 0), devset);
    if ((ch = chart(p, "confusion-1"))) {
        CHECK_INT(dspy_json_int_or(ch, "sum", 0), (int64_t)dspy_json_size(erows));
        CHECK_INT(dspy_json_int_or(ch, "sum", 0), 4);
    }
    CHECK(dspy_json_int_or(p, "failed", 0) >= failed + 2);
    dspy_json_decref(p);

    /* the same pages, everything that could have gone wrong in them */
    if (chromium_problem_count(c)) fprintf(stderr, "browser problems:\n%s", chromium_problems(c));
    CHECK_INT(chromium_problem_count(c), 0);
    chromium_stop(c);

    /* the reports next to the screenshots, to open by hand */
    char dst[1400];
    snprintf(path, sizeof path, "%s/report.html", run);
    snprintf(dst, sizeof dst, "%s/report.html", g_artifacts);
    char *html = test_slurp(path);
    CHECK_OK(dspy_write_file(dst, html, strlen(html)));
    free(html);
    snprintf(dst, sizeof dst, "%s/compare.html", g_artifacts);
    html = test_slurp(cmp);
    CHECK_OK(dspy_write_file(dst, html, strlen(html)));
    free(html);
    dspy_json_decref(gold);
    dspy_json_decref(rep);
    dspy_json_decref(rows);
    dspy_json_decref(erows);
    return check_summary("test_report_browser");
}
