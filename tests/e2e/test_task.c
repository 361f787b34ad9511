/* test_task.c — `dspy compile` and `dspy eval` on a task that is not Banking77: a 3-label
 * JSONL dataset written here (columns "sentence" and "mood"), a custom signature
 * "review -> sentiment: Literal['negative', 'neutral', 'positive']" with the columns mapped to
 * it, a teacher served over HTTP on 127.0.0.1 that COUNTS its requests (tests/support/
 * http_stub.h), and a tiny random Llama student:
 *   - compile runs end to end: the plan, the untrained student and the teacher evaluated before,
 *     fine-tune, the fine-tuned student after, the before/after table, report.json, program.json
 *     with the custom signature and its model path relative to the run folder;
 *   - the run folder moved elsewhere still evaluates (`dspy eval --program`), with the same
 *     score, and --out writes score.json with per-class scores;
 *   - a program.json in the layout Python DSPy's save() writes (spec §12; no signature, no
 *     types) is evaluated: the signature read from its default instructions, or given;
 *   - every bad input of the options, paths, train_kwargs, data, signature and metric is exit
 *     status 2 with its message, and the teacher received NO request (counted at the stub);
 *   - init-model refuses to overwrite without --force; dspy help CMD; tokenize --messages.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "dspy/json.h"
#include "dspy/str.h"
#include "http_stub.h"

static const char *const k_rows[][2] = {
    {"I love this phone, it works great", "positive"}, {"Terrible battery, broke in a week", "negative"},
    {"It is a phone.", "neutral"},                     {"Absolutely wonderful service", "positive"},
    {"Worst purchase I ever made", "negative"},        {"The box was brown.", "neutral"},
    {"Fantastic screen and fast", "positive"},         {"It stopped charging, awful", "negative"},
    {"Delivered on Tuesday.", "neutral"},              {"Great value, very happy", "positive"},
    {"Do not buy this, rubbish", "negative"},          {"It has two buttons.", "neutral"},
};
#define N_TRAIN 6
#define N_DEV 6
#define SIG "review -> sentiment: Literal['negative', 'neutral', 'positive']"

static atomic_int g_requests;
static char g_student[1024], g_train[1024], g_dev[1024], g_url[300];

/* The teacher: the gold sentiment of the [[ ## review ## ]] text, in ChatAdapter or JSON form. */
static void teacher(void *ud, const http_stub_request *req, http_stub_response *resp) {
    (void)ud;
    atomic_fetch_add(&g_requests, 1);
    dspy_json *body = NULL;
    if (strcmp(req->path, "/v1/chat/completions") != 0 || dspy_json_parse(req->body, req->body_len, "req", &body)) {
        resp->status = 404;
        dspy_str_append(&resp->body, "{\"error\":{\"message\":\"no\"}}");
        return;
    }
    const dspy_json *msgs = dspy_json_get(body, "messages");
    const char *user = dspy_json_str_or(dspy_json_at(msgs, dspy_json_size(msgs) - 1), "content", "");
    const char *label = "neutral";
    for (size_t i = 0; i < sizeof k_rows / sizeof k_rows[0]; i++)
        if (strstr(user, k_rows[i][0])) label = k_rows[i][1];
    bool reasoning = strstr(user, "[[ ## reasoning ## ]]") != NULL;
    dspy_str content = DSPY_STR_INIT;
    if (dspy_json_get(body, "response_format"))
        dspy_str_appendf(&content, "{%s\"sentiment\": \"%s\"}", reasoning ? "\"reasoning\": \"Tone.\", " : "", label);
    else
        dspy_str_appendf(&content, "%s[[ ## sentiment ## ]]\n%s\n\n[[ ## completed ## ]]",
                         reasoning ? "[[ ## reasoning ## ]]\nTone.\n\n" : "", label);
    dspy_json *o = dspy_json_object(), *choices = dspy_json_array(), *c = dspy_json_object(), *m = dspy_json_object();
    dspy_json_set_str(m, "role", "assistant");
    dspy_json_set_str(m, "content", dspy_str_cstr(&content));
    dspy_json_set(c, "index", dspy_json_int(0));
    dspy_json_set(c, "message", m);
    dspy_json_set_str(c, "finish_reason", "stop");
    dspy_json_append(choices, c);
    dspy_json_set_str(o, "id", "x");
    dspy_json_set_str(o, "object", "chat.completion");
    dspy_json_set_str(o, "model", "stub");
    dspy_json_set(o, "choices", choices);
    dspy_json_dump(o, DSPY_JSON_COMPACT | DSPY_JSON_UTF8, &resp->body);
    dspy_json_decref(o);
    dspy_json_decref(body);
    dspy_str_free(&content);
}

static void write_jsonl(const char *path, size_t from, size_t n) {
    dspy_str s = DSPY_STR_INIT;
    for (size_t i = from; i < from + n; i++)
        dspy_str_appendf(&s, "{\"id\": %zu, \"sentence\": \"%s\", \"mood\": \"%s\"}\n", i, k_rows[i][0], k_rows[i][1]);
    CHECK_OK(dspy_write_file(path, s.ptr, s.len));
    dspy_str_free(&s);
}

static test_run_result run_cmd(const char *cmd, const char *const *args) { return test_run_dspy(cmd, args); }

static void show_if_failed(const test_run_result *r, int want) {
    if (r->status != want) fprintf(stderr, "---- stderr ----\n%s\n---- stdout ----\n%s\n", r->err, r->out);
}

/* The common compile arguments, then `extra` (NULL-terminated), into argv (NULL-terminated). */
static void compile_args(const char **argv, const char *out, const char *const *extra) {
    static char url_arg[340];
    snprintf(url_arg, sizeof url_arg, "--teacher-base-url=%s/v1", g_url);
    const char *base[] = {"--student", g_student, "--teacher", "openai/stub-teacher", "--teacher-api-key", "k", url_arg,
                          "--trainset", g_train, "--devset", g_dev, "--input-fields", "review=sentence",
                          "--label-field", "sentiment=mood", "--signature", SIG, "--module", "predict",
                          "-n", "9", "--max-tokens", "8", "--train-kwargs", "num_train_epochs=1",
                          "--train-kwargs", "max_steps=1", "--train-kwargs", "gradient_accumulation_steps=1",
                          "--train-kwargs", "learning_rate=1e-3", "--train-threads", "1",
                          "--serve-arg=--threads", "--serve-arg=1", "--chat-date", "26 Jul 2024", "-o", out, NULL};
    int n = 0;
    for (int i = 0; base[i]; i++) argv[n++] = base[i];
    for (int i = 0; extra && extra[i]; i++) argv[n++] = extra[i];
    argv[n] = NULL;
}

static double report_score(const dspy_json *rep, const char *which) {
    return dspy_json_num_or(dspy_json_get(dspy_json_get(rep, "before_after"), which), "score", -1);
}

static void test_compile_and_eval_custom_task(void) {
    char out[1100], moved[1100], path[1300], evout[1100];
    snprintf(out, sizeof out, "%s/run", test_tmpdir());
    const char *argv[96];
    compile_args(argv, out, NULL);
    int before = atomic_load(&g_requests);
    test_run_result r = run_cmd("compile", argv);
    CHECK_INT(r.status, 0);
    show_if_failed(&r, 0);
    /* N_TRAIN bootstrap calls and N_DEV for the teacher's evaluation (it always parses) */
    CHECK_INT(atomic_load(&g_requests) - before, N_TRAIN + N_DEV);
    CHECK_CONTAINS(r.err, "plan: 12 teacher calls (6 trainset examples + 6 devset examples to score the teacher");
    CHECK_CONTAINS(r.err, "== [4/9] Before: the untrained student and the teacher on the devset ==");
    CHECK_CONTAINS(r.out, "== dspy compile: before and after, on the same 6 devset examples (metric exact_match on "
                          "sentiment) ==");
    CHECK_CONTAINS(r.out, "untrained student");
    CHECK_CONTAINS(r.out, "teacher (openai/stub-teacher)");
    CHECK_CONTAINS(r.out, "100.00 %       6 / 6");
    CHECK_CONTAINS(r.out, "fine-tuned student");
    CHECK_CONTAINS(r.out, "majority class");
    test_run_free(&r);
    /* 9 threads call the student's servers: each decodes 9 sequences together (the default 8 would
     * queue one), said in its log's first line */
    snprintf(path, sizeof path, "%s/logs", out);
    DIR *logs = opendir(path);
    int n_logs = 0;
    for (struct dirent *de; logs && (de = readdir(logs));) {
        if (strncmp(de->d_name, "dspy-serve-", 11) != 0) continue;
        char lp[1600];
        snprintf(lp, sizeof lp, "%s/%s", path, de->d_name);
        char *text = NULL;
        size_t len = 0;
        CHECK_OK(dspy_read_file(lp, &text, &len));
        CHECK_CONTAINS(text, "; max-seqs 9)");
        free(text);
        n_logs++;
    }
    if (logs) closedir(logs);
    CHECK(n_logs >= 2); /* the untrained student's server, then the fine-tuned one's */
    snprintf(path, sizeof path, "%s/report.json", out);
    dspy_json *rep = NULL;
    CHECK_OK(dspy_json_load(path, &rep));
    CHECK_STR(dspy_json_str_or(rep, "signature", ""), SIG);
    CHECK_INT(dspy_json_int_or(rep, "devset", -1), N_DEV);
    CHECK_INT(dspy_json_int_or(rep, "bootstrap_traces", -1), N_TRAIN);
    CHECK_NEAR(report_score(rep, "teacher"), 100.0, 0);
    CHECK(report_score(rep, "untrained_student") >= 0);
    CHECK(report_score(rep, "finetuned_student") >= 0);
    CHECK_NEAR(dspy_json_num_or(dspy_json_get(rep, "before_after"), "majority_rate", -1), 33.33, 0); /* 2 of 6, 2 decimals */
    double score = dspy_json_num_or(rep, "score", -1);
    dspy_json_decref(rep);
    /* program.json: the custom signature, the model path relative to the run folder */
    snprintf(path, sizeof path, "%s/program.json", out);
    dspy_json *prog = NULL;
    CHECK_OK(dspy_json_load(path, &prog));
    const dspy_json *dc = dspy_json_get(dspy_json_get(prog, "metadata"), "dspy_c");
    CHECK_STR(dspy_json_str_or(dc, "signature", ""), SIG);
    CHECK_STR(dspy_json_str_or(dc, "program", ""), "Predict");
    const char *model = dspy_json_str_or(dspy_json_get(dspy_json_get(prog, "self"), "lm"), "model", "");
    CHECK(strncmp(model, "openai/local:cache/finetune/", 28) == 0);
    dspy_json_decref(prog);
    /* a second compile into the finished run folder needs --force */
    before = atomic_load(&g_requests);
    r = run_cmd("compile", argv);
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "holds a finished run (program.json); pass --force");
    CHECK_INT(atomic_load(&g_requests) - before, 0);
    test_run_free(&r);

    /* the run folder moves: eval finds the model next to program.json */
    snprintf(moved, sizeof moved, "%s/moved", test_tmpdir());
    CHECK_INT(rename(out, moved), 0);
    snprintf(path, sizeof path, "%s/program.json", moved);
    snprintf(evout, sizeof evout, "%s/eval", test_tmpdir());
    const char *eargs[] = {"--program", path, "--devset", g_dev, "--input-fields", "review=sentence", "--label-field",
                           "sentiment=mood", "-n", "2", "--serve-arg=--threads", "--serve-arg=1", "-o", evout, NULL};
    r = run_cmd("eval", eargs);
    CHECK_INT(r.status, 0);
    show_if_failed(&r, 0);
    char want[96], num[32];
    dspy_py_float_repr(score, num, sizeof num);
    snprintf(want, sizeof want, "EvaluationResult(score=%s, results=<list of 6 results>)", num);
    CHECK_CONTAINS(r.out, want);
    test_run_free(&r);
    snprintf(path, sizeof path, "%s/score.json", evout);
    dspy_json *sc = NULL;
    CHECK_OK(dspy_json_load(path, &sc));
    CHECK_NEAR(dspy_json_num_or(sc, "score", -1), score, 0);
    CHECK_INT(dspy_json_int_or(sc, "n", -1), N_DEV);
    const dspy_json *pc = dspy_json_get(sc, "per_class");
    CHECK_INT(dspy_json_int_or(dspy_json_get(pc, "positive"), "n", -1), 2);
    CHECK_INT(dspy_json_int_or(dspy_json_get(pc, "neutral"), "n", -1), 2);
    CHECK_STR(dspy_json_str_or(sc, "metric_field", ""), "sentiment");
    dspy_json_decref(sc);
    snprintf(path, sizeof path, "%s/table.txt", evout);
    char *table = test_slurp(path);
    CHECK_CONTAINS(table, "exact_match");
    free(table);
    /* and refuses to overwrite it without --force */
    snprintf(path, sizeof path, "%s/program.json", moved);
    r = run_cmd("eval", eargs);
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "already holds results");
    test_run_free(&r);
    /* --model re-points the LM at another directory (here: the untrained student) */
    const char *e2[] = {"--program", path, "--model", g_student, "--devset", g_dev, "--input-fields", "review=sentence",
                        "--label-field", "sentiment=mood", "--limit", "2", "--serve-arg=--threads", "--serve-arg=1",
                        "--no-progress", NULL};
    r = run_cmd("eval", e2);
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.err, g_student);
    test_run_free(&r);
}

/* A program.json as Python DSPy 3.3.1's save() writes it (spec §12: dump_state + metadata, no
 * signature text, no types), for ChainOfThought(SIG) with an LM saved as openai/gpt-4o-mini. */
static const char *python_saved(const char *name, bool cot) {
    static char path[1100];
    snprintf(path, sizeof path, "%s/%s", test_tmpdir(), name);
    dspy_str s = DSPY_STR_INIT;
    dspy_str_appendf(&s,
                     "{\n  \"%s\": {\n    \"traces\": [],\n    \"train\": [],\n    \"demos\": [],\n    \"signature\": {\n"
                     "      \"instructions\": \"Given the fields `review`, produce the fields `sentiment`.\",\n"
                     "      \"fields\": [\n        {\n          \"prefix\": \"Review:\",\n          \"description\": "
                     "\"${review}\"\n        },\n%s        {\n          \"prefix\": \"Sentiment:\",\n          "
                     "\"description\": \"${sentiment}\"\n        }\n      ]\n    },\n    \"lm\": {\n      "
                     "\"_dspy_lm_class\": \"dspy.clients.lm.LM\",\n      \"model\": \"openai/gpt-4o-mini\",\n      "
                     "\"model_type\": \"chat\",\n      \"cache\": true,\n      \"num_retries\": 3,\n      \"temperature\": "
                     "null,\n      \"max_tokens\": 2000,\n      \"finetuning_model\": null,\n      \"launch_kwargs\": {},\n"
                     "      \"train_kwargs\": {}\n    }\n  },\n  \"metadata\": {\n    \"dependency_versions\": {\n      "
                     "\"python\": \"3.12\",\n      \"dspy\": \"3.3.1\",\n      \"cloudpickle\": \"3.1\"\n    }\n  }\n}\n",
                     cot ? "predict" : "self",
                     cot ? "        {\n          \"prefix\": \"Reasoning:\",\n          \"description\": \"${reasoning}\"\n"
                           "        },\n"
                         : "");
    CHECK_OK(dspy_write_file(path, s.ptr, s.len));
    dspy_str_free(&s);
    return path;
}

static void test_python_saved_program(void) {
    char url[340], cache[1100];
    snprintf(url, sizeof url, "%s/v1", g_url);
    snprintf(cache, sizeof cache, "%s/py-cache", test_tmpdir()); /* a fresh LM cache: every call reaches the stub */
    setenv("DSPY_CACHEDIR", cache, 1);
    const char *prog = python_saved("py_cot.json", true);
    /* read from the instructions: review -> sentiment (str), a ChainOfThought */
    const char *args[] = {"--program", prog, "--lm", "openai/stub", "--api-base", url, "--api-key", "k", "--devset",
                          g_dev, "--input-fields", "review=sentence", "--label-field", "sentiment=mood", "-n", "2", NULL};
    int before = atomic_load(&g_requests);
    test_run_result r = run_cmd("eval", args);
    CHECK_INT(r.status, 0);
    show_if_failed(&r, 0);
    CHECK_CONTAINS(r.err, "was saved by Python DSPy, which records no signature: read it from the instructions as "
                          "\"review -> sentiment\" (a ChainOfThought)");
    CHECK_CONTAINS(r.out, "EvaluationResult(score=100.0, results=<list of 6 results>)");
    CHECK_INT(atomic_load(&g_requests) - before, N_DEV);
    test_run_free(&r);
    /* the signature given: the Literal types are back */
    const char *args2[] = {"--program", prog, "--signature", SIG, "--lm", "openai/stub", "--api-base", url, "--api-key",
                           "k", "--devset", g_dev, "--input-fields", "review=sentence", "--label-field", "sentiment=mood",
                           "--no-progress", NULL};
    r = run_cmd("eval", args2);
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "EvaluationResult(score=100.0, results=<list of 6 results>)");
    CHECK(!strstr(r.err, "was saved by Python DSPy"));
    test_run_free(&r);
    /* a Predict ("self") */
    const char *p2 = python_saved("py_predict.json", false);
    const char *args3[] = {"--program", p2, "--lm", "openai/stub", "--api-base", url, "--api-key", "k", "--devset",
                           g_dev, "--input-fields", "review=sentence", "--label-field", "sentiment=mood", "--no-progress",
                           NULL};
    r = run_cmd("eval", args3);
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.err, "(a Predict)");
    CHECK_CONTAINS(r.out, "score=100.0");
    test_run_free(&r);
    unsetenv("DSPY_CACHEDIR");
}

typedef struct bad_case {
    const char *what;
    const char *extra[6];
    const char *message;
} bad_case;

/* Every bad input: exit status 2, the message, and not one request at the teacher. */
static void test_bad_inputs_spend_nothing(void) {
    char out[1100], finished[1100];
    snprintf(out, sizeof out, "%s/bad", test_tmpdir());
    snprintf(finished, sizeof finished, "%s/moved", test_tmpdir()); /* holds program.json */
    const bad_case cases[] = {
        {"unknown option", {"--bogus", "1"}, "unknown option '--bogus'"},
        {"stray word", {"extra"}, "unexpected argument 'extra'"},
        {"unknown short option", {"-x"}, "unknown option '-x'"},
        {"bad number", {"-n", "zero"}, "--num-threads 'zero': expected an integer"},
        {"train_kwarg typo", {"--train-kwargs", "num_train_epoch=3"}, "num_train_epoch"},
        {"train_kwarg range", {"--train-kwargs", "learning_rate=-1"}, "learning_rate"},
        {"train_kwarg form", {"--train-kwargs", "epochs"}, "--train-kwargs 'epochs': expected key=value"},
        {"missing trainset", {"--trainset", "/nonexistent/train.jsonl"}, "/nonexistent/train.jsonl: no such file"},
        {"bad signature", {"--signature", "review, sentiment"}, "must contain exactly one '->'"},
        {"signature input not in the data", {"--signature", "text -> sentiment"}, "the signature's input 'text'"},
        {"metric field not an output", {"--metric", "exact:mood"}, "'mood' is not an output field of the signature"},
        {"unknown metric", {"--metric", "bleu"}, "--metric 'bleu'"},
        {"unknown module", {"--module", "react"}, "--module 'react'"},
        {"missing label column", {"--label-field", "sentiment=stars"}, "no column 'stars' for the label field"},
        {"missing student", {"--student", "/nonexistent/student"}, "--student /nonexistent/student: not a directory"},
        {"finished out without --force", {"-o", finished}, "pass --force"},
        {"bad device", {"--device", "tpu"}, "--device 'tpu'"},
        {"bad baselines", {"--baselines", "all"}, "--baselines 'all'"},
        {"unknown data source", {"--trainset", "x.txt"}, "unknown data source"},
        {"filter without metric", {"--metric", "none", "--filter-traces"}, "--filter-traces"},
        /* last: the untrained student's server is started (its log kept in --out) before it fails */
        {"bad serve arg", {"--serve-arg=--bogus-flag"}, "did not start"},
    };
    int before = atomic_load(&g_requests);
    struct stat sb;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (strcmp(cases[i].what, "bad serve arg") == 0) CHECK(stat(out, &sb) != 0); /* nothing written so far */
        const char *argv[96];
        compile_args(argv, out, cases[i].extra);
        test_run_result r = run_cmd("compile", argv);
        if (r.status != 2 || !strstr(r.err, cases[i].message))
            fprintf(stderr, "case '%s': status %d\n%s\n", cases[i].what, r.status, r.err);
        CHECK_INT(r.status, 2);
        CHECK_CONTAINS(r.err, cases[i].message);
        test_run_free(&r);
    }
    /* no API key and no base URL: refused before anything */
    unsetenv("OPENAI_API_KEY");
    const char *nokey[] = {"--student", g_student, "--teacher", "openai/gpt-4o-mini", "--trainset", g_train, "--devset",
                           g_dev, "--input-fields", "review=sentence", "--label-field", "sentiment=mood", "-o", out, NULL};
    test_run_result r = run_cmd("compile", nokey);
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "needs an API key");
    test_run_free(&r);
    CHECK_INT(atomic_load(&g_requests) - before, 0);

    /* eval: bad inputs are exit 2 too */
    const char *e1[] = {"--program", "/nonexistent/p.json", "--devset", g_dev, NULL};
    r = run_cmd("eval", e1);
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "/nonexistent/p.json");
    test_run_free(&r);
    const char *e2[] = {"--program", python_saved("py_x.json", true), "--devset", g_dev, "--input-fields", "sentence",
                        "--label-field", "sentiment=mood", NULL};
    r = run_cmd("eval", e2);
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "the signature's input 'review' is not a field of the data");
    test_run_free(&r);
}

static void test_cli_conventions(void) {
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/model2", test_tmpdir());
    const char *im[] = {"--preset", "tiny", "--vocab", "320", "-o", dir, NULL};
    test_run_result r = run_cmd("init-model", im);
    CHECK_INT(r.status, 0);
    test_run_free(&r);
    r = run_cmd("init-model", im);
    CHECK_INT(r.status, 2);
    CHECK_CONTAINS(r.err, "already holds a model (config.json); pass --force");
    test_run_free(&r);
    const char *im2[] = {"--preset", "tiny", "--vocab", "320", "-o", dir, "--force", NULL};
    r = run_cmd("init-model", im2);
    CHECK_INT(r.status, 0);
    test_run_free(&r);
    /* help */
    const char *h[] = {"compile", NULL};
    r = run_cmd("help", h);
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "usage: dspy compile");
    CHECK_CONTAINS(r.out, "-n, --num-threads N");
    test_run_free(&r);
    const char *h2[] = {"nope", NULL};
    r = run_cmd("help", h2);
    CHECK_INT(r.status, 2);
    test_run_free(&r);
    const char *h3[] = {"-h", NULL};
    r = run_cmd("eval", h3);
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "usage: dspy eval");
    test_run_free(&r);
    const char *none[] = {NULL};
    r = test_run_dspy("--help", none);
    CHECK_INT(r.status, 0);
    CHECK_CONTAINS(r.out, "exit status (every command):");
    test_run_free(&r);
    /* tokenize --messages: transformers' ids (shared chat_vectors.jsonl, first vector) */
    if (test_have_shared("models/llama3-tokenizer/chat_template_llama3_2.jinja")) {
        char tok[1024], tpl[1100];
        snprintf(tok, sizeof tok, "%s", test_shared("models/llama3-tokenizer"));
        snprintf(tpl, sizeof tpl, "%s/chat_template_llama3_2.jinja", tok);
        const char *t[] = {"--tokenizer", tok, "--chat-template", tpl, "--messages",
                           "[{\"role\":\"user\",\"content\":\"why hasnt my card come in yet?\"}]",
                           "--add-generation-prompt", "--chat-date", "26 Jul 2024", "--ids", NULL};
        r = run_cmd("tokenize", t);
        CHECK_INT(r.status, 0);
        CHECK_STR(r.out, "128000,128006,9125,128007,271,38766,1303,33025,2696,25,6790,220,2366,18,198,15724,2696,25,220,"
                         "1627,10263,220,2366,19,271,128009,128006,882,128007,271,35734,706,406,856,3786,2586,304,3686,"
                         "30,128009,128006,78191,128007,271\n");
        test_run_free(&r);
        const char *t2[] = {"--tokenizer", tok, "--messages", "{\"role\": 1}", NULL};
        r = run_cmd("tokenize", t2);
        CHECK_INT(r.status, 2);
        CHECK_CONTAINS(r.err, "--messages must be a non-empty JSON list");
        test_run_free(&r);
    }
}

int main(void) {
    if (!test_have_shared("models/llama3-tokenizer/tokenizer.json")) {
        check_skip("../shared (the Llama 3 tokenizer) is missing");
        return check_summary("test_task");
    }
    snprintf(g_student, sizeof g_student, "%s/student", test_tmpdir());
    char tok[1024];
    snprintf(tok, sizeof tok, "%s", test_shared("models/llama3-tokenizer"));
    const char *im[] = {"--out", g_student, "--tokenizer", tok, "--seed", "5", NULL};
    test_run_result r = test_run_dspy("init-model", im);
    CHECK_INT(r.status, 0);
    test_run_free(&r);
    snprintf(g_train, sizeof g_train, "%s/train.jsonl", test_tmpdir());
    snprintf(g_dev, sizeof g_dev, "%s/dev.jsonl", test_tmpdir());
    write_jsonl(g_train, 0, N_TRAIN);
    write_jsonl(g_dev, N_TRAIN, N_DEV);
    http_stub *stub = NULL;
    CHECK_OK(http_stub_start(teacher, NULL, &stub));
    if (stub) {
        snprintf(g_url, sizeof g_url, "%s", http_stub_url(stub));
        unsetenv("DSPY_CACHEDIR");
        unsetenv("DSPY_FINETUNEDIR");
        RUN(test_compile_and_eval_custom_task);
        RUN(test_python_saved_program);
        RUN(test_bad_inputs_spend_nothing);
        RUN(test_cli_conventions);
    }
    http_stub_stop(stub);
    return check_summary("test_task");
}
