/* test_module_state.c — Predict.dump_state (CC-24), signature load_state through a module,
 * module.save in DSPy's JSON layout byte for byte (the tutorial ChainOfThought: two-space
 * indent, key order, raw UTF-8, final newline, top-level keys CC-02), load into a new program,
 * rebuilding a program from the file alone, transactional failures, unsafe LM keys. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/log.h"
#include "dspy/module.h"
#include "dspy/settings.h"
#include "tutorial_fixture.h"

static char *compact(const dspy_json *v) { return v ? dspy_json_dumps(v, DSPY_JSON_COMPACT) : NULL; }

static char *tmp_path(const char *name) {
    static char buf[4][1024];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", test_tmpdir(), name);
    return b;
}

static char *slurp(const char *path) {
    char *s = NULL;
    size_t n;
    if (dspy_read_file(path, &s, &n)) return NULL;
    return s;
}

/* CC-24 */
static void test_cc24_predict_dump(void) {
    dspy_module *p = NULL;
    CHECK_OK(dspy_predict_new_text("input -> output", NULL, NULL, &p));
    dspy_json *st = NULL;
    CHECK_OK(dspy_predict_dump_state(p, &st));
    char *s = compact(st);
    CHECK_STR(s, "{\"traces\":[],\"train\":[],\"demos\":[],\"signature\":{\"instructions\":\"Given the fields `input`, "
                 "produce the fields `output`.\",\"fields\":[{\"prefix\":\"Input:\",\"description\":\"${input}\"},"
                 "{\"prefix\":\"Output:\",\"description\":\"${output}\"}]},\"lm\":null}");
    free(s);
    dspy_json_decref(st);
    /* the module form names the Predict "self" */
    CHECK_OK(dspy_module_dump_state(p, &st));
    CHECK(dspy_json_get(st, "self") != NULL && dspy_json_size(st) == 1);
    dspy_json_decref(st);

    /* loading instructions "original instructions" into a Predict with new instructions */
    dspy_module *q = NULL;
    CHECK_OK(dspy_predict_new_text("input -> output", "original instructions", NULL, &q));
    CHECK_OK(dspy_module_dump_state(q, &st));
    dspy_module *r = NULL;
    CHECK_OK(dspy_predict_new_text("input -> output", "new instructions", NULL, &r));
    CHECK_OK(dspy_module_load_state(r, st, false));
    CHECK_STR(dspy_signature_instructions(dspy_predict_signature(r)), "original instructions");
    dspy_json_decref(st);

    /* with an LM: lm.dump_state() without the api key */
    dspy_json *kw = J("{\"api_key\": \"sk-secret\"}");
    dspy_lm_params lp = dspy_lm_params_default();
    lp.temperature = 1;
    lp.max_tokens = 100;
    lp.kwargs = kw;
    dspy_lm *lm = NULL;
    CHECK_OK(dspy_lm_new("openai/gpt-4o-mini", &lp, &lm));
    CHECK_OK(dspy_module_set_lm(p, lm));
    CHECK_OK(dspy_predict_dump_state(p, &st));
    dspy_json *want = dspy_lm_dump_state(lm);
    CHECK(dspy_json_equal(dspy_json_get(st, "lm"), want));
    s = compact(st);
    CHECK(s && strstr(s, "sk-secret") == NULL);
    free(s);
    dspy_json_decref(want);
    dspy_json_decref(st);
    dspy_json_decref(kw);
    dspy_lm_free(lm);
    dspy_module_free(p);
    dspy_module_free(q);
    dspy_module_free(r);
}

/* The tutorial program as orjson writes it: CC-02 signature state, top-level keys
 * ["predict", "metadata"], then dspy.c's metadata block. */
static void test_tutorial_cot_save_bytes(void) {
    if (!test_have_shared("data/banking77/labels.txt")) {
        check_skip("shared Banking77 labels missing");
        return;
    }
    int nl;
    char *sig_text = tutorial_signature_text(&nl);
    CHECK_INT(nl, 77);
    dspy_predict_params pp = dspy_predict_params_default();
    pp.profile = DSPY_PROFILE_V33;
    dspy_module *cot = NULL;
    CHECK_OK(dspy_chain_of_thought_new_text(sig_text, NULL, &pp, &cot));
    const char *path = tmp_path("tutorial.json");
    CHECK_OK(dspy_module_save(cot, path));
    char *got = slurp(path);

    dspy_json *sig_json = dspy_json_string(sig_text);
    char *sig_lit = dspy_json_dumps(sig_json, DSPY_JSON_UTF8);
    dspy_str want = DSPY_STR_INIT;
    dspy_str_append(&want,
                    "{\n"
                    "  \"predict\": {\n"
                    "    \"traces\": [],\n"
                    "    \"train\": [],\n"
                    "    \"demos\": [],\n"
                    "    \"signature\": {\n"
                    "      \"instructions\": \"Given the fields `text`, produce the fields `label`.\",\n"
                    "      \"fields\": [\n"
                    "        {\n"
                    "          \"prefix\": \"Text:\",\n"
                    "          \"description\": \"${text}\"\n"
                    "        },\n"
                    "        {\n"
                    "          \"prefix\": \"Reasoning:\",\n"
                    "          \"description\": \"${reasoning}\"\n"
                    "        },\n"
                    "        {\n"
                    "          \"prefix\": \"Label:\",\n"
                    "          \"description\": \"${label}\"\n"
                    "        }\n"
                    "      ]\n"
                    "    },\n"
                    "    \"lm\": null\n"
                    "  },\n"
                    "  \"metadata\": {\n"
                    "    \"dependency_versions\": {\n"
                    "      \"python\": \"3.12\",\n"
                    "      \"dspy\": \"3.3.1\",\n"
                    "      \"cloudpickle\": \"3.1\"\n"
                    "    },\n"
                    "    \"dspy_c\": {\n"
                    "      \"format_profile\": \"3.3\",\n"
                    "      \"program\": \"ChainOfThought\",\n"
                    "      \"signature\": ");
    dspy_str_append(&want, sig_lit);
    dspy_str_append(&want, ",\n"
                           "      \"config\": {}\n"
                           "    }\n"
                           "  }\n"
                           "}\n");
    CHECK_STR(got, dspy_str_cstr(&want));
    /* the signature recorded is the notebook's f"text -> label: Literal{CLASSES}" */
    CHECK(strncmp(sig_text, "text -> label: Literal['activate_my_card', 'age_limit', ", 56) == 0);

    /* the signature state equals CC-02 exactly */
    dspy_json *state = NULL;
    CHECK_OK(dspy_module_dump_state(cot, &state));
    char *ss = dspy_json_dumps(dspy_json_get(dspy_json_get(state, "predict"), "signature"), DSPY_JSON_PY);
    CHECK_STR(ss, "{\"instructions\": \"Given the fields `text`, produce the fields `label`.\", \"fields\": "
                  "[{\"prefix\": \"Text:\", \"description\": \"${text}\"}, {\"prefix\": \"Reasoning:\", "
                  "\"description\": \"${reasoning}\"}, {\"prefix\": \"Label:\", \"description\": \"${label}\"}]}");
    free(ss);
    dspy_json_decref(state);

    /* rebuilt from the file alone: same program, same prompt */
    dspy_module *back = NULL;
    CHECK_OK(dspy_program_load(path, NULL, &back));
    CHECK_STR(dspy_module_type_name(back), "ChainOfThought");
    if (back) {
        const dspy_signature *a = dspy_predict_signature(dspy_module_child(cot, "predict"));
        const dspy_signature *b = dspy_predict_signature(dspy_module_child(back, "predict"));
        char *sa = NULL, *sb = NULL;
        CHECK_OK(dspy_adapter_format_system(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V33, a, &sa));
        CHECK_OK(dspy_adapter_format_system(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V33, b, &sb));
        CHECK_STR(sb, sa);
        free(sa);
        free(sb);
        const char *path2 = tmp_path("tutorial2.json");
        CHECK_OK(dspy_module_save(back, path2));
        char *again = slurp(path2);
        CHECK_STR(again, got);
        free(again);
    }
    dspy_module_free(back);

    /* V26: the reasoning prefix and the profile are recorded and come back */
    pp.profile = DSPY_PROFILE_V26;
    dspy_module *old = NULL;
    CHECK_OK(dspy_chain_of_thought_new_text(sig_text, NULL, &pp, &old));
    const char *p26 = tmp_path("tutorial26.json");
    CHECK_OK(dspy_module_save(old, p26));
    char *t26 = slurp(p26);
    CHECK_CONTAINS(t26, "\"prefix\": \"Reasoning: Let's think step by step in order to\"");
    CHECK_CONTAINS(t26, "\"format_profile\": \"2.6\"");
    free(t26);
    CHECK_OK(dspy_program_load(p26, NULL, &back));
    CHECK(dspy_predict_profile(dspy_module_child(back, "predict")) == DSPY_PROFILE_V26);
    CHECK_STR(dspy_signature_field_prefix(dspy_predict_signature(dspy_module_child(back, "predict")), 1),
              "Reasoning: Let's think step by step in order to");
    dspy_module_free(back);
    dspy_module_free(old);

    free(got);
    free(sig_lit);
    dspy_json_decref(sig_json);
    dspy_str_free(&want);
    dspy_module_free(cot);
    free(sig_text);
}

static dspy_lm *local_lm(void) {
    dspy_json *kw = J("{\"api_base\": \"http://localhost:7501/v1\", \"api_key\": \"local\"}");
    dspy_lm_params lp = dspy_lm_params_default();
    lp.max_tokens = 2000;
    lp.kwargs = kw;
    dspy_lm *lm = NULL;
    CHECK_OK(dspy_lm_new("openai/local:/tmp/out", &lp, &lm));
    dspy_json_decref(kw);
    return lm;
}

static void test_round_trip_with_demos_and_lm(void) {
    dspy_json *cfg = J("{\"n\": 3}");
    dspy_predict_params pp = dspy_predict_params_default();
    pp.config = cfg;
    dspy_module *cot = NULL;
    CHECK_OK(dspy_chain_of_thought_new_text("question: str, hint -> answer: int", "Answer with a number.", &pp, &cot));
    dspy_module *inner = dspy_module_child(cot, "predict");
    dspy_json *demos = J("[{\"question\": \"1+1 — café ☕\", \"hint\": \"add\", \"reasoning\": \"r\", \"answer\": 2}]");
    CHECK_OK(dspy_predict_set_demos(inner, demos));
    CHECK_OK(dspy_signature_set_desc((dspy_signature *)dspy_predict_signature(inner), "answer", "the sum"));
    dspy_lm *lm = local_lm();
    CHECK_OK(dspy_module_set_lm(cot, lm));
    const char *path = tmp_path("prog.json");
    CHECK_OK(dspy_module_save(cot, path));
    char *text = slurp(path);
    CHECK_CONTAINS(text, "\"question\": \"1+1 — café ☕\""); /* raw UTF-8 */
    CHECK_CONTAINS(text, "\"api_base\": \"http://localhost:7501/v1\"");
    CHECK(text && strstr(text, "\"api_key\"") == NULL);
    CHECK_CONTAINS(text, "\"signature\": \"question: str, hint -> answer: int\"");
    CHECK_CONTAINS(text, "\"config\": {\n        \"n\": 3\n      }");
    CHECK(text && text[strlen(text) - 1] == '\n' && text[strlen(text) - 2] == '}');
    free(text);

    /* module.load into a fresh program with the same signature: api_base dropped by default */
    dspy_str logs = DSPY_STR_INIT;
    dspy_module *fresh = NULL;
    CHECK_OK(dspy_chain_of_thought_new_text("question: str, hint -> answer: int", NULL, NULL, &fresh));
    CHECK_OK(dspy_module_load(fresh, path, false));
    dspy_module *fi = dspy_module_child(fresh, "predict");
    CHECK(dspy_json_equal(dspy_predict_demos(fi), demos));
    CHECK_STR(dspy_signature_instructions(dspy_predict_signature(fi)), "Answer with a number.");
    size_t ai;
    CHECK(dspy_signature_find(dspy_predict_signature(fi), "answer", &ai));
    CHECK_STR(dspy_signature_field_desc(dspy_predict_signature(fi), ai), "the sum");
    dspy_lm *got = dspy_predict_lm(fi);
    CHECK(got != NULL && got != lm);
    if (got) {
        CHECK_STR(dspy_lm_model(got), "openai/local:/tmp/out");
        dspy_json *k = dspy_lm_kwargs(got);
        CHECK(dspy_json_get(k, "api_base") == NULL);
        CHECK(dspy_json_intval(dspy_json_get(k, "max_tokens")) == 2000);
        dspy_json_decref(k);
    }
    /* allow_unsafe_lm_state keeps it */
    CHECK_OK(dspy_module_load(fresh, path, true));
    dspy_json *k = dspy_lm_kwargs(dspy_predict_lm(fi));
    CHECK_STR(dspy_json_str(dspy_json_get(k, "api_base")), "http://localhost:7501/v1");
    dspy_json_decref(k);
    dspy_str_free(&logs);

    /* dspy_program_load: the config and both states come back; dump_state matches apart from
     * the dropped api_base */
    dspy_module *back = NULL;
    dspy_program_load_params pl = dspy_program_load_params_default();
    pl.allow_unsafe_lm_state = true;
    CHECK_OK(dspy_program_load(path, &pl, &back));
    if (back) {
        char *c = compact(dspy_predict_config(dspy_module_child(back, "predict")));
        CHECK_STR(c, "{\"n\":3}");
        free(c);
        dspy_json *s1 = NULL, *s2 = NULL;
        CHECK_OK(dspy_module_dump_state(cot, &s1));
        CHECK_OK(dspy_module_dump_state(back, &s2));
        CHECK(dspy_json_equal(s1, s2));
        dspy_json_decref(s1);
        dspy_json_decref(s2);
        CHECK(dspy_signature_field_type_undefined(dspy_predict_signature(dspy_module_child(back, "predict")), 1));
        CHECK(!dspy_signature_field_type_undefined(dspy_predict_signature(dspy_module_child(back, "predict")), 0));
    }
    dspy_module_free(back);
    dspy_module_free(fresh);
    dspy_json_decref(demos);
    dspy_json_decref(cfg);
    dspy_lm_free(lm);
    dspy_module_free(cot);
}

static void test_load_errors_are_transactional(void) {
    /* a program with two predictors; b's state is broken, so a must stay as it was */
    static const dspy_module_vtable vt = {"Pair", NULL, NULL, NULL};
    dspy_module *prog = NULL;
    CHECK_STATUS(dspy_module_new(&vt, NULL, &prog), DSPY_ERR_ARG); /* forward is required */
    dspy_module *a = NULL, *b = NULL, *holder = NULL;
    CHECK_OK(dspy_predict_new_text("q -> a", "keep me", NULL, &a));
    CHECK_OK(dspy_predict_new_text("q -> b", NULL, NULL, &b));
    CHECK_OK(dspy_chain_of_thought_new_text("q -> a", NULL, NULL, &holder)); /* any module type holds children */
    CHECK_OK(dspy_module_add_child(holder, "a", a));
    CHECK_OK(dspy_module_add_child(holder, "b", b));
    dspy_json *before = NULL;
    CHECK_OK(dspy_module_dump_state(holder, &before));
    char *keys = NULL;
    dspy_json *bad = dspy_json_copy(before);
    dspy_json_set_str(dspy_json_get(dspy_json_get(bad, "a"), "signature"), "instructions", "changed");
    dspy_json_set(dspy_json_get(bad, "a"), "demos", J("[{\"q\": \"x\", \"a\": \"y\"}]"));
    dspy_json_set(dspy_json_get(dspy_json_get(bad, "b"), "signature"), "fields", J("\"not a list\""));
    CHECK(dspy_module_load_state(holder, bad, false) != DSPY_OK);
    CHECK_CONTAINS(dspy_errmsg(), "'b'");
    dspy_json *after = NULL;
    CHECK_OK(dspy_module_dump_state(holder, &after));
    CHECK(dspy_json_equal(before, after));
    CHECK_STR(dspy_signature_instructions(dspy_predict_signature(a)), "keep me");
    dspy_json_decref(after);

    /* a missing name */
    dspy_json_del(bad, "b");
    CHECK_STATUS(dspy_module_load_state(holder, bad, false), DSPY_ERR_NOTFOUND);
    CHECK_CONTAINS(dspy_errmsg(), "no state for predictor 'b'");
    CHECK_INT(dspy_json_size(dspy_predict_demos(a)), 0);
    dspy_json_decref(bad);

    /* a DSPy <= 2.5 file */
    bad = dspy_json_copy(before);
    dspy_json_set(dspy_json_get(bad, "b"), "extended_signature", dspy_json_object());
    CHECK_STATUS(dspy_module_load_state(holder, bad, false), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "Loading extended_signature is no longer supported in DSPy 2.6+");
    dspy_json_decref(bad);

    /* demos must be objects */
    bad = dspy_json_copy(before);
    dspy_json_set(dspy_json_get(bad, "a"), "demos", J("[1]"));
    CHECK_STATUS(dspy_module_load_state(holder, bad, false), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "demos[0]");
    dspy_json_decref(bad);
    dspy_json_decref(before);
    free(keys);

    /* paths */
    CHECK_STATUS(dspy_module_save(a, tmp_path("x.pkl")), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "pickle");
    CHECK_STATUS(dspy_module_save(a, tmp_path("x.txt")), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_module_load(a, tmp_path("missing.json"), false), DSPY_ERR_IO);
    const char *notobj = tmp_path("list.json");
    CHECK_OK(dspy_write_file(notobj, "[1, 2]\n", 7));
    CHECK_STATUS(dspy_module_load(a, notobj, false), DSPY_ERR_FORMAT);

    /* loading a saved Predict into a ChainOfThought names what is missing */
    const char *pp = tmp_path("predict.json");
    CHECK_OK(dspy_module_save(a, pp));
    dspy_module *cot = NULL;
    CHECK_OK(dspy_chain_of_thought_new_text("q -> a", NULL, NULL, &cot));
    CHECK_STATUS(dspy_module_load(cot, pp, false), DSPY_ERR_NOTFOUND);
    CHECK_CONTAINS(dspy_errmsg(), "no state for predictor 'predict'");
    CHECK_CONTAINS(dspy_errmsg(), "'self', 'metadata'");
    dspy_module_free(cot);

    dspy_module_free(holder);
    dspy_module_free(a);
    dspy_module_free(b);
}

static void log_to(dspy_log_level level, const char *msg, void *user) {
    (void)level;
    dspy_str_append(user, msg);
    dspy_str_appendc(user, '\n');
}

/* A file saved by Python DSPy (no metadata.dspy_c, other versions). */
static void test_python_saved_file(void) {
    const char *path = tmp_path("python.json");
    const char *py =
        "{\n  \"predict\": {\n    \"traces\": [],\n    \"train\": [],\n    \"demos\": [\n      {\n        \"augmented\": true,\n"
        "        \"question\": \"2+2?\",\n        \"reasoning\": \"add\",\n        \"answer\": \"4\"\n      }\n    ],\n"
        "    \"signature\": {\n      \"instructions\": \"Be brief.\",\n      \"fields\": [\n        {\n          \"prefix\": "
        "\"Question:\",\n          \"description\": \"${question}\"\n        },\n        {\n          \"prefix\": "
        "\"Reasoning: Let's think step by step in order to\",\n          \"description\": \"${reasoning}\"\n        },\n"
        "        {\n          \"prefix\": \"Answer:\",\n          \"description\": \"${answer}\"\n        }\n      ]\n"
        "    },\n    \"lm\": null\n  },\n  \"metadata\": {\n    \"dependency_versions\": {\n      \"python\": \"3.11\",\n"
        "      \"dspy\": \"2.6.0\",\n      \"cloudpickle\": \"3.1\"\n    }\n  }\n}\n";
    CHECK_OK(dspy_write_file(path, py, strlen(py)));
    dspy_module *m = NULL;
    CHECK_STATUS(dspy_program_load(path, NULL, &m), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "give the signature");
    dspy_str logs = DSPY_STR_INIT;
    dspy_log_set_sink(log_to, &logs);
    dspy_program_load_params pl = dspy_program_load_params_default();
    pl.signature = "question -> answer";
    CHECK_OK(dspy_program_load(path, &pl, &m)); /* the type is guessed from the field count */
    dspy_log_set_sink(NULL, NULL);
    CHECK_STR(dspy_module_type_name(m), "ChainOfThought");
    CHECK_CONTAINS(dspy_str_cstr(&logs), "There is a mismatch of python version between saved model and current "
                                         "environment. You saved with `python==3.11`, but now you have `python==3.12`.");
    CHECK_CONTAINS(dspy_str_cstr(&logs), "`dspy==2.6.0`");
    if (m) {
        const dspy_signature *s = dspy_predict_signature(dspy_module_child(m, "predict"));
        CHECK_STR(dspy_signature_instructions(s), "Be brief.");
        CHECK_STR(dspy_signature_field_prefix(s, 1), "Reasoning: Let's think step by step in order to");
        CHECK_INT(dspy_json_size(dspy_predict_demos(dspy_module_child(m, "predict"))), 1);
    }
    dspy_str_free(&logs);
    dspy_module_free(m);
    pl.program = "Map";
    CHECK_STATUS(dspy_program_load(path, &pl, &m), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "only Predict and ChainOfThought");
}

int main(void) {
    dspy_settings_reset();
    RUN(test_cc24_predict_dump);
    RUN(test_tutorial_cot_save_bytes);
    RUN(test_round_trip_with_demos_and_lm);
    RUN(test_load_errors_are_transactional);
    RUN(test_python_saved_file);
    return check_summary("test_module_state");
}
