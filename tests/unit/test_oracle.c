/* test_oracle.c — the oracle stand-in teacher (dspy/oracle.h): it answers the tutorial's
 * ChainOfThought prompts (built by the real ChatAdapter, V33 and V26) with the gold label of the
 * real Banking77 data and the templated reasoning; the answer parses back through the real
 * adapter; JSON mode; n > 1; unknown texts and malformed prompts are errors that a program call
 * reports; duplicates keep the first label; history records the calls. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/adapter.h"
#include "dspy/datasets.h"
#include "dspy/history.h"
#include "dspy/module.h"
#include "dspy/oracle.h"
#include "dspy/settings.h"
#include "tutorial_fixture.h"

static dspy_dataset *g_train;  /* Banking77 train (HF order) */
static dspy_oracle *g_oracle;

static dspy_json *js(const char *text) {
    dspy_json *v = NULL;
    dspy_json_parse(text, strlen(text), "test", &v);
    return v;
}

static void test_build(void) {
    CHECK_INT(dspy_oracle_size(g_oracle) > 9000, 1); /* 10,003 rows, a few duplicate texts */
    dspy_dataset *ds;
    dspy_oracle *o = NULL;
    CHECK_OK(dspy_dataset_new(&ds));
    dspy_example *e;
    dspy_example_new(&e);
    dspy_example_set_str(e, "text", "no label here");
    dspy_dataset_append(ds, e);
    CHECK_STATUS(dspy_oracle_new(ds, NULL, &o), DSPY_ERR_ARG);
    CHECK(o == NULL);
    CHECK_CONTAINS(dspy_errmsg(), "'text' and a 'label'");
    /* duplicates: the first label wins; texts are matched stripped */
    dspy_example_new(&e);
    dspy_example_set_str(e, "text", "  same text ");
    dspy_example_set_str(e, "label", "first");
    dspy_dataset_append(ds, e);
    dspy_example_new(&e);
    dspy_example_set_str(e, "text", "same text");
    dspy_example_set_str(e, "label", "second");
    dspy_dataset_append(ds, e);
    CHECK_OK(dspy_oracle_new(ds, NULL, &o));
    CHECK_INT(dspy_oracle_size(o), 1);
    dspy_json *msgs = js("[{\"role\":\"user\",\"content\":\"[[ ## text ## ]]\\nsame text\\n\\nRespond with the "
                         "corresponding output fields, starting with the field `[[ ## label ## ]]`\"}]");
    char *r = NULL;
    CHECK_OK(dspy_oracle_reply(o, msgs, false, &r));
    CHECK_STR(r, "[[ ## label ## ]]\nfirst\n\n[[ ## completed ## ]]");
    free(r);
    dspy_json_decref(msgs);
    dspy_oracle_free(o);
    dspy_dataset_free(ds);
}

/* The tutorial prompt for a train text, through the real adapter; the oracle's reply. */
static void check_tutorial_prompt(dspy_profile prof) {
    dspy_signature *cot = tutorial_cot(prof);
    CHECK(cot != NULL);
    if (!cot) return;
    const dspy_example *x = dspy_dataset_get(g_train, 0);
    const char *text = dspy_example_get_str(x, "text"), *label = dspy_example_get_str(x, "label");
    CHECK_STR(label, "card_arrival");
    dspy_json *inputs = dspy_json_object();
    dspy_json_set_str(inputs, "text", text);
    dspy_json *msgs = NULL;
    CHECK_OK(dspy_adapter_format(DSPY_ADAPTER_CHAT, prof, cot, NULL, inputs, &msgs));
    char *r = NULL;
    CHECK_OK(dspy_oracle_reply(g_oracle, msgs, false, &r));
    CHECK_STR(r, "[[ ## reasoning ## ]]\nThe message \"I am still waiting on my card?\" is about card arrival.\n\n"
                 "[[ ## label ## ]]\ncard_arrival\n\n[[ ## completed ## ]]");
    /* the real adapter parses it into the gold label */
    dspy_json *fields = NULL;
    CHECK_OK(dspy_adapter_parse(DSPY_ADAPTER_CHAT, prof, cot, r, &fields));
    CHECK_STR(dspy_json_str(dspy_json_get(fields, "label")), "card_arrival");
    dspy_json_decref(fields);
    free(r);
    dspy_json_decref(msgs);
    /* JSON adapter prompt: a JSON object that the JSON adapter parses */
    CHECK_OK(dspy_adapter_format(DSPY_ADAPTER_JSON, prof, cot, NULL, inputs, &msgs));
    CHECK_OK(dspy_oracle_reply(g_oracle, msgs, true, &r));
    CHECK_STR(r, "{\"reasoning\": \"The message \\\"I am still waiting on my card?\\\" is about card arrival.\", "
                 "\"label\": \"card_arrival\"}");
    fields = NULL;
    CHECK_OK(dspy_adapter_parse(DSPY_ADAPTER_JSON, prof, cot, r, &fields));
    CHECK_STR(dspy_json_str(dspy_json_get(fields, "label")), "card_arrival");
    dspy_json_decref(fields);
    free(r);
    dspy_json_decref(msgs);
    dspy_json_decref(inputs);
    dspy_signature_free(cot);
}

static void test_tutorial_prompt_v33(void) { check_tutorial_prompt(DSPY_PROFILE_V33); }
static void test_tutorial_prompt_v26(void) { check_tutorial_prompt(DSPY_PROFILE_V26); }

/* A whole ChainOfThought call through the LM pipeline: gold labels for several texts, history,
 * inspect_history, n = 2, and the errors. */
static void test_program_call(void) {
    int nl;
    char *sig = tutorial_signature_text(&nl);
    CHECK_INT(nl, 77);
    dspy_module *m = NULL;
    CHECK_OK(dspy_chain_of_thought_new_text(sig, NULL, NULL, &m));
    free(sig);
    dspy_lm *lm = NULL;
    CHECK_OK(dspy_oracle_lm_new(g_oracle, "oracle:banking77", NULL, &lm));
    CHECK_STR(dspy_lm_model(lm), "oracle:banking77");
    CHECK(!dspy_lm_cache_enabled(lm));
    CHECK_OK(dspy_module_set_lm(m, lm));
    for (size_t i = 0; i < 40; i += 7) {
        const dspy_example *x = dspy_dataset_get(g_train, i * 211);
        dspy_prediction *pred = NULL;
        CHECK_OK(dspy_module_call_example(m, x, NULL, &pred));
        CHECK_STR(dspy_prediction_get_str(pred, "label"), dspy_example_get_str(x, "label"));
        CHECK_CONTAINS(dspy_prediction_get_str(pred, "reasoning"), "The message \"");
        dspy_prediction_free(pred);
    }
    CHECK_INT(dspy_history_len(dspy_lm_history(lm)), 6);
    dspy_str out = DSPY_STR_INIT;
    dspy_json *last = dspy_history_last(dspy_lm_history(lm), 1);
    CHECK_OK(dspy_history_render(last, false, &out));
    CHECK_CONTAINS(dspy_str_cstr(&out), "Response:\n\n[[ ## reasoning ## ]]\nThe message");
    dspy_json_decref(last);
    dspy_str_free(&out);

    /* n = 2: two identical completions */
    dspy_json *cfg = js("{\"n\": 2}");
    dspy_json *in = js("{\"text\": \"I am still waiting on my card?\"}");
    dspy_call_options opt = dspy_call_options_default();
    opt.config = cfg;
    dspy_prediction *pred = NULL;
    CHECK_OK(dspy_module_call(m, in, &opt, &pred));
    CHECK_INT(dspy_prediction_n_completions(pred), 2);
    dspy_prediction_free(pred);
    dspy_json_decref(cfg);
    dspy_json_decref(in);

    /* unknown text: an LM error (no fallback), reported by the call */
    in = js("{\"text\": \"This sentence is not in Banking77.\"}");
    pred = NULL;
    CHECK_STATUS(dspy_module_call(m, in, NULL, &pred), DSPY_ERR_NOTFOUND);
    CHECK(pred == NULL);
    CHECK_CONTAINS(dspy_errmsg(), "oracle: text not in the dataset: 'This sentence is not in Banking77.'");
    dspy_json_decref(in);

    /* a prompt without the input marker */
    dspy_json *msgs = js("[{\"role\":\"user\",\"content\":\"[[ ## question ## ]]\\nWhat?\"}]");
    char *r = NULL;
    CHECK_STATUS(dspy_oracle_reply(g_oracle, msgs, false, &r), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "no [[ ## text ## ]] input");
    dspy_json_decref(msgs);
    msgs = js("[{\"role\":\"system\",\"content\":\"x\"}]");
    CHECK_STATUS(dspy_oracle_reply(g_oracle, msgs, false, &r), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "no user message");
    dspy_json_decref(msgs);

    dspy_module_free(m);
    dspy_lm_free(lm);
}

int main(void) {
    if (!test_have_shared("data/banking77/train.csv")) {
        check_skip("../shared/data/banking77 is missing");
        return check_summary("test_oracle");
    }
    dspy_banking77_params bp = dspy_banking77_params_default();
    bp.data_dir = test_shared("data/banking77");
    if (dspy_banking77_load(&bp, DSPY_BANKING77_TRAIN, &g_train, NULL) ||
        dspy_oracle_new(g_train, NULL, &g_oracle)) {
        fprintf(stderr, "setup: %s\n", dspy_errmsg());
        return 1;
    }
    RUN(test_build);
    RUN(test_tutorial_prompt_v33);
    RUN(test_tutorial_prompt_v26);
    RUN(test_program_call);
    dspy_oracle_free(g_oracle);
    dspy_dataset_free(g_train);
    dspy_settings_reset();
    return check_summary("test_oracle");
}
