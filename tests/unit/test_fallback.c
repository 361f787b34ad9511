/* test_fallback.c — Adapter.__call__ and the ChatAdapter -> JSONAdapter fallback (conformance
 * CC-19, spec §5.1/§5.4) with a scripted LM callback that records every request. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/adapter.h"
#include "tutorial_fixture.h"

#define MAX_CALLS 8

typedef struct script {
    const char *replies[MAX_CALLS]; /* JSON text of the outputs array per call; NULL = error */
    dspy_status fail_with;          /* status returned for a NULL reply */
    int calls;
    dspy_json *messages[MAX_CALLS];
    dspy_json *kwargs[MAX_CALLS];
} script;

static dspy_status scripted_lm(const dspy_json *messages, const dspy_json *lm_kwargs, void *user,
                               dspy_json **outputs) {
    script *s = user;
    *outputs = NULL;
    int k = s->calls++;
    if (k >= MAX_CALLS) return dspy_fail(DSPY_ERR_STATE, "scripted LM: too many calls");
    s->messages[k] = dspy_json_copy(messages);
    s->kwargs[k] = lm_kwargs ? dspy_json_copy(lm_kwargs) : NULL;
    const char *r = s->replies[k];
    if (!r) return dspy_fail(s->fail_with, "[openai/gpt-4o-mini] RateLimitError: HTTP 429 Too Many Requests");
    *outputs = J(r);
    return DSPY_OK;
}

static void script_free(script *s) {
    for (int i = 0; i < MAX_CALLS; i++) {
        dspy_json_decref(s->messages[i]);
        dspy_json_decref(s->kwargs[i]);
    }
}

static const char *rf_type(const script *s, int k) {
    const dspy_json *rf = s->kwargs[k] ? dspy_json_get(s->kwargs[k], "response_format") : NULL;
    return rf ? dspy_json_str_or(rf, "type", "?") : NULL;
}

static dspy_adapter_call_params openai_params(void) {
    dspy_adapter_call_params p = dspy_adapter_call_params_default();
    p.supports_response_format = true;
    p.supports_response_schema = true; /* gpt-4o-mini */
    return p;
}

static dspy_signature *qa(void) {
    dspy_signature *s = NULL;
    CHECK_OK(dspy_signature_parse("question -> answer", NULL, &s));
    return s;
}

/* CC-19.1: chat parse fails, structured JSON call succeeds (json_repair reads single quotes). */
static void test_fallback_to_structured(void) {
    script sc = {.replies = {"[\"{'answer': 'Paris'}\"]", "[\"{'answer': 'Paris'}\"]"}};
    dspy_signature *s = qa();
    dspy_json *in = J("{\"question\": \"What is the capital of France?\"}"), *out = NULL;
    dspy_json *kw = J("{\"temperature\": 0.7, \"max_tokens\": 42}");
    dspy_adapter_call_params p = openai_params();
    dspy_adapter_call_info info;
    CHECK_OK(dspy_adapter_call(&p, s, NULL, in, kw, scripted_lm, &sc, &out, &info));
    CHECK_INT(sc.calls, 2);
    CHECK_INT(info.lm_calls, 2);
    CHECK(info.adapter == DSPY_ADAPTER_JSON);
    char *js = out ? dspy_json_dumps(out, DSPY_JSON_COMPACT) : NULL;
    CHECK_STR(js, "[{\"answer\":\"Paris\"}]");
    free(js);
    /* call 1: ChatAdapter messages, the caller's kwargs unchanged, no response_format */
    dspy_json *chat = NULL, *jsonm = NULL;
    CHECK_OK(dspy_adapter_format(DSPY_ADAPTER_CHAT, DSPY_PROFILE_V33, s, NULL, in, &chat));
    CHECK_OK(dspy_adapter_format(DSPY_ADAPTER_JSON, DSPY_PROFILE_V33, s, NULL, in, &jsonm));
    CHECK(dspy_json_equal(sc.messages[0], chat));
    CHECK(dspy_json_equal(sc.kwargs[0], kw));
    CHECK(rf_type(&sc, 0) == NULL);
    /* call 2: JSONAdapter messages with the structured response_format */
    CHECK(dspy_json_equal(sc.messages[1], jsonm));
    CHECK_STR(rf_type(&sc, 1), "json_schema");
    const dspy_json *rf = sc.kwargs[1] ? dspy_json_get(sc.kwargs[1], "response_format") : NULL;
    CHECK_STR(dspy_json_str_or(dspy_json_get(rf, "json_schema"), "name", NULL), "DSPyProgramOutputs");
    CHECK(sc.kwargs[1] && dspy_json_number(dspy_json_get(sc.kwargs[1], "temperature")) == 0.7);
    CHECK(sc.kwargs[1] && dspy_json_intval(dspy_json_get(sc.kwargs[1], "max_tokens")) == 42);
    CHECK(dspy_json_get(kw, "response_format") == NULL); /* the caller's object is not mutated */
    dspy_adapter_call_info_clear(&info);
    dspy_json_decref(chat);
    dspy_json_decref(jsonm);
    dspy_json_decref(out);
    dspy_json_decref(kw);
    dspy_json_decref(in);
    dspy_signature_free(s);
    script_free(&sc);
}

/* CC-19.2: everything fails: chat, structured, json_object, then JSONAdapter's error. */
static void test_three_calls_then_error(void) {
    script sc = {.replies = {"[\"nonsense\"]", "[\"nonsense\"]", "[\"nonsense\"]", "[\"nonsense\"]"}};
    dspy_signature *s = qa();
    dspy_json *in = J("{\"question\": \"Q\"}"), *out = (dspy_json *)1;
    dspy_adapter_call_params p = openai_params();
    dspy_adapter_call_info info;
    CHECK_STATUS(dspy_adapter_call(&p, s, NULL, in, NULL, scripted_lm, &sc, &out, &info), DSPY_ERR_PARSE);
    CHECK(out == NULL);
    CHECK_INT(sc.calls, 3);
    CHECK_INT(info.lm_calls, 3);
    CHECK(rf_type(&sc, 0) == NULL);
    CHECK_STR(rf_type(&sc, 1), "json_schema");
    CHECK_STR(rf_type(&sc, 2), "json_object");
    CHECK_STR(dspy_errmsg(), "LM response cannot be serialized to a JSON object.\n\nAdapter JSONAdapter failed to parse the LM response. \n\nLM Response: nonsense \n\nExpected to find output fields in the LM response: [answer] \n\n");
    CHECK(info.adapter == DSPY_ADAPTER_JSON);
    CHECK_STR(info.lm_response, "nonsense");
    dspy_adapter_call_info_clear(&info);
    CHECK(info.lm_response == NULL);
    script_free(&sc);

    /* without schema support (a local model): chat, then json_object directly */
    script sc2 = {.replies = {"[\"nonsense\"]", "[\"nonsense\"]", "[\"nonsense\"]"}};
    p.supports_response_schema = false;
    CHECK_STATUS(dspy_adapter_call(&p, s, NULL, in, NULL, scripted_lm, &sc2, &out, NULL), DSPY_ERR_PARSE);
    CHECK_INT(sc2.calls, 2);
    CHECK_STR(rf_type(&sc2, 1), "json_object");
    script_free(&sc2);

    /* an open-ended dict output forces json_object even with schema support */
    dspy_signature *d = NULL;
    CHECK_OK(dspy_signature_parse("question -> data: dict[str, int]", NULL, &d));
    script sc3 = {.replies = {"[\"nonsense\"]", "[\"{\\\"data\\\": {\\\"a\\\": \\\"1\\\"}}\"]"}};
    p.supports_response_schema = true;
    CHECK_OK(dspy_adapter_call(&p, d, NULL, in, NULL, scripted_lm, &sc3, &out, NULL));
    CHECK_INT(sc3.calls, 2);
    CHECK_STR(rf_type(&sc3, 1), "json_object");
    char *js = out ? dspy_json_dumps(out, DSPY_JSON_COMPACT) : NULL;
    CHECK_STR(js, "[{\"data\":{\"a\":1}}]");
    free(js);
    dspy_json_decref(out);
    script_free(&sc3);
    dspy_signature_free(d);
    dspy_json_decref(in);
    dspy_signature_free(s);
}

/* CC-19.3: use_json_adapter_fallback=false */
static void test_no_fallback(void) {
    script sc = {.replies = {"[\"nonsense\"]", "[\"nonsense\"]"}};
    dspy_signature *s = qa();
    dspy_json *in = J("{\"question\": \"Q\"}"), *out = NULL;
    dspy_adapter_call_params p = openai_params();
    p.use_json_adapter_fallback = false;
    dspy_adapter_call_info info;
    CHECK_STATUS(dspy_adapter_call(&p, s, NULL, in, NULL, scripted_lm, &sc, &out, &info), DSPY_ERR_PARSE);
    CHECK_INT(sc.calls, 1);
    CHECK(info.adapter == DSPY_ADAPTER_CHAT);
    CHECK_STR(dspy_errmsg(), "Adapter ChatAdapter failed to parse the LM response. \n\nLM Response: nonsense \n\nExpected to find output fields in the LM response: [answer] \n\nActual output fields parsed from the LM response: [] \n\n");
    dspy_adapter_call_info_clear(&info);
    dspy_json_decref(in);
    dspy_signature_free(s);
    script_free(&sc);
}

/* CC-19.4: LM errors never fall back (in the chat call or in the structured call). */
static void test_lm_errors(void) {
    script sc = {.fail_with = DSPY_ERR_REMOTE};
    dspy_signature *s = qa();
    dspy_json *in = J("{\"question\": \"Q\"}"), *out = NULL;
    dspy_adapter_call_params p = openai_params();
    CHECK_STATUS(dspy_adapter_call(&p, s, NULL, in, NULL, scripted_lm, &sc, &out, NULL), DSPY_ERR_REMOTE);
    CHECK_INT(sc.calls, 1);
    CHECK_CONTAINS(dspy_errmsg(), "HTTP 429");
    script_free(&sc);
    script sc2 = {.replies = {"[\"nonsense\"]", NULL}, .fail_with = DSPY_ERR_TIMEOUT};
    CHECK_STATUS(dspy_adapter_call(&p, s, NULL, in, NULL, scripted_lm, &sc2, &out, NULL), DSPY_ERR_TIMEOUT);
    CHECK_INT(sc2.calls, 2);
    script_free(&sc2);
    /* a status DSPY_ERR_PARSE from the LM itself is still an LM error */
    script sc3 = {.fail_with = DSPY_ERR_PARSE};
    CHECK_STATUS(dspy_adapter_call(&p, s, NULL, in, NULL, scripted_lm, &sc3, &out, NULL), DSPY_ERR_PARSE);
    CHECK_INT(sc3.calls, 1);
    script_free(&sc3);
    dspy_json_decref(in);
    dspy_signature_free(s);
}

/* CC-19.5 / CC-19.6: JSONAdapter as the adapter: request modes. */
static void test_json_modes(void) {
    dspy_signature *s = qa();
    dspy_json *in = J("{\"question\": \"Q\"}"), *out = NULL;
    dspy_adapter_call_params p = dspy_adapter_call_params_default();
    p.adapter = DSPY_ADAPTER_JSON;
    p.supports_response_format = false;
    script sc = {.replies = {"[\"{\\\"answer\\\": \\\"A\\\"}\"]"}};
    dspy_json *kw = J("{\"max_tokens\": 3000}");
    CHECK_OK(dspy_adapter_call(&p, s, NULL, in, kw, scripted_lm, &sc, &out, NULL));
    CHECK_INT(sc.calls, 1);
    CHECK(sc.kwargs[0] && dspy_json_get(sc.kwargs[0], "response_format") == NULL);
    CHECK(dspy_json_equal(sc.kwargs[0], kw));
    dspy_json_decref(out);
    script_free(&sc);
    p.supports_response_format = true;
    p.supports_response_schema = false;
    script sc2 = {.replies = {"[\"{\\\"answer\\\": \\\"A\\\"}\"]"}};
    CHECK_OK(dspy_adapter_call(&p, s, NULL, in, kw, scripted_lm, &sc2, &out, NULL));
    CHECK_INT(sc2.calls, 1);
    const dspy_json *rf = sc2.kwargs[0] ? dspy_json_get(sc2.kwargs[0], "response_format") : NULL;
    char *js = rf ? dspy_json_dumps(rf, DSPY_JSON_COMPACT) : NULL;
    CHECK_STR(js, "{\"type\":\"json_object\"}");
    free(js);
    dspy_json_decref(out);
    script_free(&sc2);
    /* a JSONAdapter failure never falls back to anything else */
    script sc3 = {.replies = {"[\"nonsense\"]", "[\"nonsense\"]"}};
    CHECK_STATUS(dspy_adapter_call(&p, s, NULL, in, kw, scripted_lm, &sc3, &out, NULL), DSPY_ERR_PARSE);
    CHECK_INT(sc3.calls, 1);
    script_free(&sc3);
    dspy_json_decref(kw);
    dspy_json_decref(in);
    dspy_signature_free(s);
}

/* CC-19.7: empty or null content. */
static void test_empty_reply(void) {
    dspy_signature *s = qa();
    dspy_json *in = J("{\"question\": \"Q\"}"), *out = NULL;
    dspy_adapter_call_params p = openai_params();
    script sc = {.replies = {"[\"\"]", "[\"{\\\"answer\\\": \\\"x\\\"}\"]"}};
    CHECK_OK(dspy_adapter_call(&p, s, NULL, in, NULL, scripted_lm, &sc, &out, NULL));
    CHECK_INT(sc.calls, 2);
    char *js = out ? dspy_json_dumps(out, DSPY_JSON_COMPACT) : NULL;
    CHECK_STR(js, "[{\"answer\":\"x\"}]");
    free(js);
    dspy_json_decref(out);
    script_free(&sc);
    p.use_json_adapter_fallback = false;
    script sc2 = {.replies = {"[null]"}};
    CHECK_STATUS(dspy_adapter_call(&p, s, NULL, in, NULL, scripted_lm, &sc2, &out, NULL), DSPY_ERR_PARSE);
    CHECK_STR(dspy_errmsg(), "The LM returned an empty or null response.\n\nAdapter ChatAdapter failed to parse the LM response. \n\nLM Response: None \n\nExpected to find output fields in the LM response: [answer] \n\n");
    script_free(&sc2);
    script sc3 = {.replies = {"[{\"text\": \"\"}]"}};
    CHECK_STATUS(dspy_adapter_call(&p, s, NULL, in, NULL, scripted_lm, &sc3, &out, NULL), DSPY_ERR_PARSE);
    CHECK_CONTAINS(dspy_errmsg(), "The LM returned an empty or null response.");
    script_free(&sc3);
    script sc4 = {.replies = {"{\"not\": \"a list\"}"}};
    CHECK_STATUS(dspy_adapter_call(&p, s, NULL, in, NULL, scripted_lm, &sc4, &out, NULL), DSPY_ERR_REMOTE);
    script_free(&sc4);
    dspy_json_decref(in);
    dspy_signature_free(s);
}

/* n choices: one result per choice, logprobs kept; one bad choice fails the attempt. */
static void test_choices(void) {
    dspy_signature *s = qa();
    dspy_json *in = J("{\"question\": \"Q\"}"), *out = NULL;
    dspy_adapter_call_params p = openai_params();
    script sc = {.replies = {"[\"[[ ## answer ## ]]\\nA\", \"[[ ## answer ## ]]\\nB\", {\"text\": \"[[ ## answer ## ]]\\nC\", \"logprobs\": {\"content\": []}}]"}};
    CHECK_OK(dspy_adapter_call(&p, s, NULL, in, NULL, scripted_lm, &sc, &out, NULL));
    CHECK_INT(sc.calls, 1);
    char *js = out ? dspy_json_dumps(out, DSPY_JSON_COMPACT) : NULL;
    CHECK_STR(js, "[{\"answer\":\"A\"},{\"answer\":\"B\"},{\"answer\":\"C\",\"logprobs\":{\"content\":[]}}]");
    free(js);
    dspy_json_decref(out);
    script_free(&sc);
    script sc2 = {.replies = {"[\"[[ ## answer ## ]]\\nA\", \"oops\"]", "[\"{\\\"answer\\\": \\\"J1\\\"}\", \"{\\\"answer\\\": \\\"J2\\\"}\"]"}};
    CHECK_OK(dspy_adapter_call(&p, s, NULL, in, NULL, scripted_lm, &sc2, &out, NULL));
    CHECK_INT(sc2.calls, 2);
    js = out ? dspy_json_dumps(out, DSPY_JSON_COMPACT) : NULL;
    CHECK_STR(js, "[{\"answer\":\"J1\"},{\"answer\":\"J2\"}]");
    free(js);
    dspy_json_decref(out);
    script_free(&sc2);
    dspy_json_decref(in);
    dspy_signature_free(s);
}

/* The tutorial flow: ChainOfThought, a well-formed answer, one call; V26 errors before calling. */
static void test_tutorial_call(void) {
    dspy_signature *s = tutorial_cot(DSPY_PROFILE_V33);
    if (!s) {
        check_skip("labels missing");
        return;
    }
    dspy_json *in = J("{\"text\": \"why hasnt my card come in yet?\"}"), *out = NULL;
    dspy_adapter_call_params p = dspy_adapter_call_params_default();
    script sc = {.replies = {"[\"[[ ## reasoning ## ]]\\nThe card has not arrived.\\n\\n[[ ## label ## ]]\\ncard_arrival\\n\\n[[ ## completed ## ]]\"]"}};
    CHECK_OK(dspy_adapter_call(&p, s, NULL, in, NULL, scripted_lm, &sc, &out, NULL));
    CHECK_INT(sc.calls, 1);
    char *js = out ? dspy_json_dumps(out, DSPY_JSON_COMPACT) : NULL;
    CHECK_STR(js, "[{\"reasoning\":\"The card has not arrived.\",\"label\":\"card_arrival\"}]");
    free(js);
    dspy_json_decref(out);
    script_free(&sc);
    /* "card_arrival." is not an exact match: the JSON fallback runs (json_object for a local LM) */
    script sc2 = {.replies = {"[\"[[ ## reasoning ## ]]\\nr\\n\\n[[ ## label ## ]]\\ncard_arrival.\"]",
                              "[\"{\\\"reasoning\\\": \\\"r\\\", \\\"label\\\": \\\"card_arrival\\\"}\"]"}};
    CHECK_OK(dspy_adapter_call(&p, s, NULL, in, NULL, scripted_lm, &sc2, &out, NULL));
    CHECK_INT(sc2.calls, 2);
    CHECK_STR(rf_type(&sc2, 1), "json_object");
    dspy_json_decref(out);
    script_free(&sc2);
    /* V26: a missing input is an error raised before the LM call, and it does not fall back */
    p.profile = DSPY_PROFILE_V26;
    dspy_json *none = J("{}");
    script sc3 = {0};
    CHECK_STATUS(dspy_adapter_call(&p, s, NULL, none, NULL, scripted_lm, &sc3, &out, NULL), DSPY_ERR_ARG);
    CHECK_INT(sc3.calls, 0);
    script_free(&sc3);
    dspy_json_decref(none);
    dspy_json_decref(in);
    dspy_signature_free(s);
}

int main(void) {
    RUN(test_fallback_to_structured);
    RUN(test_three_calls_then_error);
    RUN(test_no_fallback);
    RUN(test_lm_errors);
    RUN(test_json_modes);
    RUN(test_empty_reply);
    RUN(test_choices);
    RUN(test_tutorial_call);
    return check_summary("test_fallback");
}
