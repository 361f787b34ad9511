/* test_cmd_eval.c — `dspy eval` run as a process: a tutorial ChainOfThought program saved with a
 * scripted LM, evaluated on the first tutorial-dev rows of shared/data/banking77 with another
 * scripted LM (two right, one wrong label, one unparseable answer): exit status, the
 * EvaluationResult line and the table on stdout, the "Average Metric" log line and the progress
 * bar on stderr, results.json / results.csv under --out; then one-line errors. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/datasets.h"
#include "dspy/module.h"
#include "dspy/settings.h"
#include "tutorial_fixture.h"

static test_run_result eval_cmd(const char *const *args) { return test_run_dspy("eval", args); }

static int count_lines(const char *s) {
    int n = 0;
    for (; s && *s; s++)
        if (*s == '\n') n++;
    return n;
}

/* A reply in ChatAdapter layout for the tutorial's ChainOfThought. */
static dspy_json *reply(const char *reasoning, const char *label) {
    dspy_json *o = dspy_json_object();
    dspy_json_set_str(o, "reasoning", reasoning);
    dspy_json_set_str(o, "label", label);
    return o;
}

static void test_eval_tutorial_rows(void) {
    if (!test_have_shared("data/banking77/labels.txt")) {
        check_skip("shared/data/banking77 missing");
        return;
    }
    const char *data_dir = strdup(test_shared("data/banking77"));
    dspy_banking77_params bp = dspy_banking77_params_default();
    bp.data_dir = data_dir;
    dspy_dataset *dev = NULL;
    CHECK_OK(dspy_banking77_load(&bp, DSPY_BANKING77_TUTORIAL_DEV, &dev, NULL));
    if (!dev) return;
    const char *t0 = dspy_example_get_str(dspy_dataset_get(dev, 0), "text");
    const char *t1 = dspy_example_get_str(dspy_dataset_get(dev, 1), "text");
    const char *t2 = dspy_example_get_str(dspy_dataset_get(dev, 2), "text");
    const char *t3 = dspy_example_get_str(dspy_dataset_get(dev, 3), "text");
    CHECK_STR(t0, "Which fiat currencies do you currently support? Will this change in this future?");

    /* the scripted LM of the evaluation: answers by the text in the prompt */
    dspy_json *match = dspy_json_object(), *file = dspy_json_object();
    dspy_json_set(match, t0, reply("Asks which currencies are supported.", dspy_example_get_str(dspy_dataset_get(dev, 0), "label")));
    dspy_json_set(match, t1, reply("A transfer seems stuck.", "pending_transfer")); /* gold: pending_cash_withdrawal */
    dspy_json_set_str(match, t2, "I cannot tell.");                                  /* unparseable */
    dspy_json_set(match, t3, reply("Exchange rates.", dspy_example_get_str(dspy_dataset_get(dev, 3), "label")));
    dspy_json_set(file, "match", match);
    char lm_path[1024], lm_arg[1100], prog[1024], out_dir[1024], save_lm[1100];
    snprintf(lm_path, sizeof lm_path, "%s/eval_lm.json", test_tmpdir());
    char *text = dspy_json_dumps(file, DSPY_JSON_UTF8);
    CHECK_OK(dspy_write_file(lm_path, text, strlen(text)));
    free(text);
    dspy_json_decref(file);
    snprintf(lm_arg, sizeof lm_arg, "scripted:%s", lm_path);

    /* the program: the tutorial's ChainOfThought, saved with the LM it was built with */
    int nl;
    char *sig = tutorial_signature_text(&nl);
    dspy_module *cot = NULL;
    CHECK_OK(dspy_chain_of_thought_new_text(sig, NULL, NULL, &cot));
    free(sig);
    snprintf(save_lm, sizeof save_lm, "scripted:%s", lm_path);
    dspy_lm *lm = NULL;
    CHECK_OK(dspy_lm_new(save_lm, NULL, &lm));
    CHECK_OK(dspy_module_set_lm(cot, lm));
    snprintf(prog, sizeof prog, "%s/classify.json", test_tmpdir());
    CHECK_OK(dspy_module_save(cot, prog));
    dspy_module_free(cot);
    dspy_lm_free(lm);

    snprintf(out_dir, sizeof out_dir, "%s/eval-out", test_tmpdir());
    /* DSPy's behaviour: --verbose logs DSPy's error line, --strict-errors counts the failure */
    const char *args[] = {"--program", prog, "--lm", lm_arg, "--data-dir", data_dir, "--split", "tutorial-dev",
                          "--limit", "4", "--num-threads", "2", "--display-table", "4", "--out", out_dir,
                          "--verbose", "--strict-errors", NULL};
    test_run_result r = eval_cmd(args);
    CHECK_INT(r.status, 0);
    /* stdout: the table (tutorial column order), then the result */
    CHECK_CONTAINS(r.out, "EvaluationResult(score=50.0, results=<list of 4 results>)\n");
    CHECK_CONTAINS(r.out, "text");
    CHECK_CONTAINS(r.out, "example_label");
    CHECK_CONTAINS(r.out, "✔️ [True]");
    CHECK_CONTAINS(r.out, "✔️ [False]");
    CHECK_CONTAINS(r.out, "✔️ [0.000]");
    CHECK(strstr(r.out, "example_label") < strstr(r.out, "reasoning") &&
          strstr(r.out, "reasoning") < strstr(r.out, "pred_label") &&
          strstr(r.out, "pred_label") < strstr(r.out, "exact_match"));
    /* stderr: the failure, the bar over the 3 successes, the log line over all 4 */
    CHECK_CONTAINS(r.err, "[dspy] ERROR: Error for Example({'text': 'what currencies do you accept?', 'label': "
                          "'fiat_currency_support'}) (input_keys={'text'}): ");
    CHECK_CONTAINS(r.err, "Average Metric: 2.00 / 3 (66.7%): 100%|██████████| 4/4 [");
    CHECK_CONTAINS(r.err, "[dspy] INFO: Average Metric: 2.0 / 4 (50.0%)\n");

    char path[1100];
    snprintf(path, sizeof path, "%s/results.json", out_dir);
    dspy_json *rows = NULL;
    CHECK_OK(dspy_json_load(path, &rows));
    CHECK_INT(dspy_json_size(rows), 4);
    const dspy_json *r0 = dspy_json_at(rows, 0), *r1 = dspy_json_at(rows, 1), *r2 = dspy_json_at(rows, 2);
    CHECK(dspy_json_typeof(dspy_json_get(r0, "exact_match")) == DSPY_JSON_BOOL && dspy_json_truthy(dspy_json_get(r0, "exact_match")));
    CHECK_STR(dspy_json_str(dspy_json_get(r0, "pred_label")), "fiat_currency_support");
    CHECK_STR(dspy_json_str(dspy_json_get(r0, "reasoning")), "Asks which currencies are supported.");
    CHECK_STR(dspy_json_str(dspy_json_get(r1, "example_label")), "pending_cash_withdrawal");
    CHECK_STR(dspy_json_str(dspy_json_get(r1, "pred_label")), "pending_transfer");
    CHECK(!dspy_json_truthy(dspy_json_get(r1, "exact_match")));
    /* the failed row: the example's own keys and failure_score */
    CHECK_STR(dspy_json_str(dspy_json_get(r2, "label")), "fiat_currency_support");
    CHECK(dspy_json_get(r2, "reasoning") == NULL);
    CHECK(dspy_json_typeof(dspy_json_get(r2, "exact_match")) == DSPY_JSON_REAL);
    dspy_json_decref(rows);
    snprintf(path, sizeof path, "%s/results.csv", out_dir);
    char *csv = test_slurp(path);
    CHECK(strncmp(csv, "text,example_label,reasoning,pred_label,exact_match,label\r\n", 57) == 0);
    CHECK_INT(count_lines(csv), 5);
    free(csv);
    test_run_free(&r);

    /* answer_exact_match and one thread give the same score; no table, no bar */
    const char *args2[] = {"--program", prog, "--lm", lm_arg, "--data-dir", data_dir, "--limit", "4", "--num-threads",
                           "1", "--metric", "answer_exact_match", "--no-progress", NULL};
    r = eval_cmd(args2);
    CHECK_INT(r.status, 0);
    CHECK_STR(r.out, "EvaluationResult(score=50.0, results=<list of 4 results>)\n");
    CHECK(!strstr(r.err, "it/s]"));
    test_run_free(&r);

    /* max_errors=1 with DSPy's counting: the unparseable row aborts the run */
    const char *args3[] = {"--program", prog, "--lm", lm_arg, "--data-dir", data_dir, "--limit", "4", "--num-threads",
                           "1", "--max-errors", "1", "--no-progress", "--strict-errors", NULL};
    r = eval_cmd(args3);
    CHECK_INT(r.status, 1);
    CHECK_CONTAINS(r.err, "error: dspy eval: Execution cancelled due to errors or interruption.\n");
    CHECK_STR(r.out, "");
    test_run_free(&r);

    /* the default: the unparseable answer is a wrong answer, listed in one line, the run completes;
     * no DSPy error line with the whole answer */
    const char *args4[] = {"--program", prog, "--lm", lm_arg, "--data-dir", data_dir, "--limit", "4", "--num-threads",
                           "2", "--max-errors", "1", NULL};
    r = eval_cmd(args4);
    CHECK_INT(r.status, 0);
    CHECK_STR(r.out, "EvaluationResult(score=50.0, results=<list of 4 results>)\n");
    CHECK_CONTAINS(r.err, "   #2 unparseable answer: \"I cannot tell.\"\n");
    CHECK_CONTAINS(r.err, "   1 evaluated example failed: 1 unparseable answer (scored as wrong), 0 other errors (pass "
                          "--out DIR to keep the details)\n");
    CHECK(!strstr(r.err, "Error for"));
    CHECK_CONTAINS(r.err, "Average Metric: 2.00 / 4 (50.0%): 100%|");
    test_run_free(&r);

    /* errors: one line, exit status 2 (nothing started) */
    const char *bad_metric[] = {"--program", prog, "--lm", lm_arg, "--data-dir", data_dir, "--metric", "bleu", NULL};
    r = eval_cmd(bad_metric);
    CHECK_INT(r.status, 2);
    CHECK_STR(r.err, "error: dspy eval: --metric 'bleu': use exact[:FIELD], f1[:FIELD], answer_exact_match[:FIELD] or "
                     "none\n");
    test_run_free(&r);
    const char *bad_limit[] = {"--program", prog, "--lm", lm_arg, "--limit", "-2", NULL};
    r = eval_cmd(bad_limit);
    CHECK_INT(r.status, 2);
    CHECK_STR(r.err, "error: dspy eval: --limit '-2': expected an integer >= 0\n");
    test_run_free(&r);
    const char *no_file[] = {"--program", "/nonexistent/prog.json", "--lm", lm_arg, "--data-dir", data_dir, NULL};
    r = eval_cmd(no_file);
    CHECK_INT(r.status, 2);
    CHECK_INT(count_lines(r.err), 1);
    CHECK_CONTAINS(r.err, "error: dspy eval: ");
    CHECK_CONTAINS(r.err, "/nonexistent/prog.json");
    test_run_free(&r);
    const char *missing[] = {"--lm", lm_arg, NULL};
    r = eval_cmd(missing);
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "--program");
    test_run_free(&r);
    const char *help[] = {"--help", NULL};
    r = eval_cmd(help);
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "--display-table");
    test_run_free(&r);

    dspy_dataset_free(dev);
    free((char *)data_dir);
}

int main(void) {
    RUN(test_eval_tutorial_rows);
    return check_summary("test_cmd_eval");
}
