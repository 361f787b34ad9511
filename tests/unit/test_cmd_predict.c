/* test_cmd_predict.c — `dspy predict` run as a process with `--lm scripted:FILE`: the JSON on
 * stdout (fields in order), --inspect-history 1 against the library's own rendering of the same
 * call, --save then --program, and one-line errors with a non-zero exit. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/history.h"
#include "dspy/module.h"
#include "dspy/settings.h"
#include "tutorial_fixture.h"

static test_run_result predict(const char *const *args) { return test_run_dspy("predict", args); }

static const char *write_tmp(const char *name, const char *text) {
    static char buf[8][1024];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", test_tmpdir(), name);
    dspy_write_file(b, text, strlen(text));
    return b;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; s && *s; s++)
        if (*s == '\n') n++;
    return n;
}

static void test_predict_prints_fields(void) {
    const char *replies = write_tmp("paris.json", "[{\"answer\": \"Paris\"}]");
    char lm[1100];
    snprintf(lm, sizeof lm, "scripted:%s", replies);
    const char *args[] = {"--signature", "question -> answer", "--lm", lm, "--input",
                          "question=What is the capital of France?", NULL};
    test_run_result r = predict(args);
    CHECK_INT(r.status, 0);
    CHECK_STR(r.out, "{\n  \"answer\": \"Paris\"\n}\n");
    CHECK_STR(r.err, "");
    test_run_free(&r);

    /* ChainOfThought: reasoning first, non-ASCII kept */
    const char *cot = write_tmp("cot.json", "[\"[[ ## reasoning ## ]]\\nParis est la capitale — évidemment.\\n\\n"
                                            "[[ ## answer ## ]]\\nParis\"]");
    snprintf(lm, sizeof lm, "scripted:%s", cot);
    const char *args2[] = {"--signature", "question -> answer", "--module", "cot", "--lm", lm, "--input",
                           "question=Capitale de la France ?", NULL};
    r = predict(args2);
    CHECK_INT(r.status, 0);
    CHECK_STR(r.out, "{\n  \"reasoning\": \"Paris est la capitale — évidemment.\",\n  \"answer\": \"Paris\"\n}\n");
    test_run_free(&r);

    /* typed outputs come back typed; --input-json passes lists */
    const char *typed = write_tmp("typed.json", "[{\"total\": \"6\", \"ok\": \"True\"}]");
    snprintf(lm, sizeof lm, "scripted:%s", typed);
    const char *args3[] = {"--signature", "numbers: list[int] -> total: int, ok: bool", "--lm", lm,
                           "--input-json", "numbers=[1, 2, 3]", NULL};
    r = predict(args3);
    CHECK_INT(r.status, 0);
    CHECK_STR(r.out, "{\n  \"total\": 6,\n  \"ok\": true\n}\n");
    test_run_free(&r);
}

static void test_inspect_history(void) {
    const char *replies = write_tmp("hist.json", "[{\"answer\": \"Paris\"}]");
    char lm[1100];
    snprintf(lm, sizeof lm, "scripted:%s", replies);
    const char *args[] = {"--signature", "question -> answer", "--lm", lm, "--input",
                          "question=What is the capital of France?", "--inspect-history", "1", NULL};
    test_run_result r = predict(args);
    CHECK_INT(r.status, 0);
    CHECK_STR(r.out, "{\n  \"answer\": \"Paris\"\n}\n");

    /* the same call in-process, rendered by the library (no colours: stderr is a file) */
    dspy_settings_reset();
    dspy_lm *slm = NULL;
    CHECK_OK(dspy_lm_new(lm, NULL, &slm));
    dspy_module *p = NULL;
    CHECK_OK(dspy_predict_new_text("question -> answer", NULL, NULL, &p));
    CHECK_OK(dspy_module_set_lm(p, slm));
    dspy_json *in = J("{\"question\": \"What is the capital of France?\"}");
    dspy_prediction *pred = NULL;
    CHECK_OK(dspy_module_call(p, in, NULL, &pred));
    dspy_json *last = dspy_history_last(dspy_lm_history(slm), 1);
    dspy_str want = DSPY_STR_INIT;
    CHECK_OK(dspy_history_render(last, false, &want));
    /* the timestamps differ: compare everything after the "[...]" line */
    const char *a = strstr(r.err, "]\n"), *b = strstr(dspy_str_cstr(&want), "]\n");
    CHECK(a && b);
    if (a && b) CHECK_STR(a, b);
    CHECK_CONTAINS(r.err, "System message:\n\nYour input fields are:\n1. `question` (str):");
    CHECK_CONTAINS(r.err, "Response:\n\n[[ ## answer ## ]]\nParis");
    CHECK(strncmp(r.err, "\n\n\n\n[20", 7) == 0 || strncmp(r.err, "\n\n\n[20", 6) == 0 || strncmp(r.err, "\n\n[20", 5) == 0);
    dspy_str_free(&want);
    dspy_json_decref(last);
    dspy_json_decref(in);
    dspy_prediction_free(pred);
    dspy_module_free(p);
    dspy_lm_free(slm);
    dspy_settings_reset();
    test_run_free(&r);
}

static void test_save_then_program(void) {
    const char *replies = write_tmp("two.json", "{\"replies\": [{\"reasoning\": \"because\", \"answer\": \"Paris\"}], \"cycle\": true}");
    char lm[1100], save[1100];
    snprintf(lm, sizeof lm, "scripted:%s", replies);
    snprintf(save, sizeof save, "%s/prog.json", test_tmpdir());
    const char *args[] = {"--signature", "question -> answer", "--module", "cot", "--instructions", "Be brief.",
                          "--dspy-format", "2.6", "--lm", lm, "--input", "question=Q?", "--save", save, NULL};
    test_run_result r = predict(args);
    CHECK_INT(r.status, 0);
    CHECK_STR(r.out, "{\n  \"reasoning\": \"because\",\n  \"answer\": \"Paris\"\n}\n");
    char *text = test_slurp(save);
    CHECK(strncmp(text, "{\n  \"predict\": {\n    \"traces\": [],", 34) == 0);
    CHECK_CONTAINS(text, "\"instructions\": \"Be brief.\"");
    CHECK_CONTAINS(text, "\"format_profile\": \"2.6\"");
    CHECK_CONTAINS(text, "\"prefix\": \"Reasoning: Let's think step by step in order to\"");
    CHECK_CONTAINS(text, "\"temperature\": 0.0"); /* the V26 LM default */
    free(text);
    test_run_free(&r);

    /* the saved program runs alone, with the same instructions in its prompt */
    const char *args2[] = {"--program", save, "--lm", lm, "--input", "question=Q?", "--inspect-history", "1", NULL};
    r = predict(args2);
    CHECK_INT(r.status, 0);
    CHECK_STR(r.out, "{\n  \"reasoning\": \"because\",\n  \"answer\": \"Paris\"\n}\n");
    CHECK_CONTAINS(r.err, "Be brief.");
    CHECK_CONTAINS(r.err, "`reasoning`");
    test_run_free(&r);
}

static void test_errors(void) {
    const char *replies = write_tmp("one.json", "[{\"answer\": \"Paris\"}]");
    char lm[1100];
    snprintf(lm, sizeof lm, "scripted:%s", replies);
    /* a bad signature: one error line, nothing on stdout */
    const char *a1[] = {"--signature", "question answer", "--lm", lm, "--input", "question=x", NULL};
    test_run_result r = predict(a1);
    CHECK(r.status != 0);
    CHECK_STR(r.out, "");
    CHECK_INT(count_lines(r.err), 1);
    CHECK(strncmp(r.err, "error: dspy predict: ", 21) == 0);
    CHECK_CONTAINS(r.err, "must contain exactly one '->'");
    test_run_free(&r);

    /* a positional value */
    const char *a2[] = {"--signature", "question -> answer", "--lm", lm, "--input", "Paris?", NULL};
    r = predict(a2);
    CHECK(r.status != 0);
    CHECK_INT(count_lines(r.err), 1);
    CHECK_CONTAINS(r.err, "expected name=value, e.g. --input question=Paris?");
    test_run_free(&r);

    /* an answer that cannot be parsed: AdapterParseError after the JSON fallback */
    const char *junk = write_tmp("junk.json", "{\"replies\": [\"nonsense\"], \"cycle\": true}");
    snprintf(lm, sizeof lm, "scripted:%s", junk);
    const char *a3[] = {"--signature", "question -> answer", "--lm", lm, "--input", "question=x", NULL};
    r = predict(a3);
    CHECK(r.status != 0);
    CHECK_STR(r.out, "");
    CHECK(strncmp(r.err, "error: dspy predict: ", 21) == 0);
    CHECK_CONTAINS(r.err, "Adapter JSONAdapter failed to parse the LM response.");
    test_run_free(&r);

    /* no such LM file, unknown module, missing --signature */
    const char *a4[] = {"--signature", "q -> a", "--lm", "scripted:/nonexistent/r.json", "--input", "q=x", NULL};
    r = predict(a4);
    CHECK(r.status != 0);
    CHECK_INT(count_lines(r.err), 1);
    CHECK_CONTAINS(r.err, "/nonexistent/r.json");
    test_run_free(&r);
    const char *a5[] = {"--signature", "q -> a", "--module", "react", "--lm", lm, NULL};
    r = predict(a5);
    CHECK(r.status != 0);
    CHECK_CONTAINS(r.err, "--module 'react': use predict or cot");
    test_run_free(&r);
    const char *a6[] = {"--lm", lm, NULL};
    r = predict(a6);
    CHECK(r.status != 0);
    CHECK_CONTAINS(r.err, "give --signature SIG");
    test_run_free(&r);
    const char *a7[] = {"--help", NULL};
    r = predict(a7);
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "--inspect-history");
    test_run_free(&r);
}

int main(void) {
    RUN(test_predict_prints_fields);
    RUN(test_inspect_history);
    RUN(test_save_then_program);
    RUN(test_errors);
    return check_summary("test_cmd_predict");
}
