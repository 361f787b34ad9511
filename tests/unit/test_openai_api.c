/* test_openai_api.c — OpenAI request parsing and validation (every rejection with its status,
 * param, code and message), routes (404/405), and the exact JSON of answers, chunks, the
 * model list and error bodies. Expected shapes are the OpenAI API reference's. */
#include <stdlib.h>

#include "check.h"
#include "dspy/json.h"
#include "server/openai.h"

#define VOCAB 128256

static dspy_status parse(oai_kind kind, const char *body, oai_request *r, oai_error *e) {
    return dspy_oai_request_parse(kind, body, strlen(body), VOCAB, r, e);
}

/* Parses a body that must fail; checks status, param and code, and that the error JSON has
 * exactly the four OpenAI fields. Returns the message (static copy) for further checks. */
static const char *expect_fail(oai_kind kind, const char *body, int status, const char *param, const char *code) {
    static char msg[1024];
    oai_request r;
    oai_error e = OAI_ERROR_INIT;
    dspy_status st = parse(kind, body, &r, &e);
    check_report(st == DSPY_ERR_ARG, __FILE__, __LINE__, "parse(%s) should fail, got %s", body, dspy_status_name(st));
    check_report(e.status == status, __FILE__, __LINE__, "%s: status %d, want %d", body, e.status, status);
    char *json = dspy_oai_error_json(&e);
    dspy_json *v = NULL;
    CHECK_OK(dspy_json_parse(json, strlen(json), "error", &v));
    dspy_json *inner = dspy_json_get(v, "error");
    CHECK(inner && dspy_json_size(inner) == 4);
    CHECK_STR(dspy_json_str_or(inner, "type", NULL), "invalid_request_error");
    dspy_json *p = dspy_json_get(inner, "param"), *c = dspy_json_get(inner, "code");
    if (param) check_report(p && dspy_json_str(p) && strcmp(dspy_json_str(p), param) == 0, __FILE__, __LINE__,
                            "%s: param %s, want %s", body, p && dspy_json_str(p) ? dspy_json_str(p) : "null", param);
    else CHECK(p && dspy_json_typeof(p) == DSPY_JSON_NULL);
    if (code) check_report(c && dspy_json_str(c) && strcmp(dspy_json_str(c), code) == 0, __FILE__, __LINE__,
                           "%s: code %s, want %s", body, c && dspy_json_str(c) ? dspy_json_str(c) : "null", code);
    else CHECK(c && dspy_json_typeof(c) == DSPY_JSON_NULL);
    snprintf(msg, sizeof msg, "%s", dspy_json_str_or(inner, "message", ""));
    CHECK(msg[0] != '\0');
    dspy_json_decref(v);
    free(json);
    dspy_oai_error_free(&e);
    return msg;
}

static void test_chat_full(void) {
    oai_request r;
    oai_error e = OAI_ERROR_INIT;
    const char *body =
        "{\"model\":\"local:/abs/out\",\"messages\":["
        "{\"role\":\"system\",\"content\":\"Be brief.\"},"
        "{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]},"
        "{\"role\":\"user\",\"content\":\"Hi \\u00e9\"},"
        "{\"role\":\"assistant\",\"content\":null},"
        "{\"role\":\"user\",\"content\":\"again\",\"name\":\"x\"}],"
        "\"max_tokens\":50,\"max_completion_tokens\":40,\"temperature\":0.0,\"top_p\":0.9,\"top_k\":5,\"ignore_eos\":true,\"n\":3,"
        "\"stop\":[\"\\n\\n\",\"\",\"END\"],\"seed\":-7,\"stream\":true,\"stream_options\":{\"include_usage\":true},"
        "\"user\":\"ignored\",\"presence_penalty\":0,\"frequency_penalty\":0.0,\"logprobs\":false,"
        "\"response_format\":{\"type\":\"json_object\"},\"tools\":[]}";
    CHECK_OK(parse(OAI_CHAT, body, &r, &e));
    CHECK_STR(r.model, "local:/abs/out");
    CHECK_INT(r.n_messages, 5);
    CHECK_STR(r.messages[0].role, "system");
    CHECK_STR(r.messages[1].role, "system");
    CHECK_STR(r.messages[1].content, "ab");
    CHECK_STR(r.messages[2].content, "Hi \xc3\xa9");
    CHECK_STR(r.messages[3].role, "assistant");
    CHECK_STR(r.messages[3].content, "");
    CHECK_INT(r.max_tokens, 40); /* max_completion_tokens wins */
    CHECK_NEAR(r.temperature, 0.0, 0);
    CHECK_NEAR(r.top_p, 0.9, 1e-12);
    CHECK_INT(r.top_k, 5);
    CHECK(r.ignore_eos);
    CHECK_INT(r.n, 3);
    CHECK_INT(r.n_stop, 2); /* empty strings are dropped */
    CHECK_STR(r.stop[0], "\n\n");
    CHECK_STR(r.stop[1], "END");
    CHECK(r.has_seed);
    CHECK_INT((int64_t)r.seed, -7);
    CHECK(r.stream);
    CHECK(r.include_usage);
    dspy_oai_request_free(&r);
    dspy_oai_request_free(&r); /* idempotent */
    dspy_oai_error_free(&e);
}

static void test_chat_defaults(void) {
    oai_request r;
    oai_error e = OAI_ERROR_INIT;
    CHECK_OK(parse(OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":null,\"n\":null,"
                             "\"stop\":\"###\",\"max_tokens\":null,\"seed\":null,\"stream\":null}", &r, &e));
    CHECK(r.model == NULL);
    CHECK_INT(r.max_tokens, -1);
    CHECK_NEAR(r.temperature, 1.0, 0);
    CHECK_NEAR(r.top_p, 1.0, 0);
    CHECK_INT(r.top_k, 0);
    CHECK(!r.ignore_eos);
    CHECK_INT(r.n, 1);
    CHECK_INT(r.n_stop, 1);
    CHECK_STR(r.stop[0], "###");
    CHECK(!r.has_seed);
    CHECK(!r.stream);
    CHECK(!r.include_usage);
    dspy_oai_request_free(&r);
    /* DSPy's tutorial body (CC-21) */
    CHECK_OK(parse(OAI_CHAT, "{\"model\":\"local:/abs/out\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
                             "{\"role\":\"user\",\"content\":\"u\"}],\"max_tokens\":2000}", &r, &e));
    CHECK_INT(r.max_tokens, 2000);
    CHECK_INT(r.n_messages, 2);
    dspy_oai_request_free(&r);
    /* an integral decimal is taken as an integer */
    CHECK_OK(parse(OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":16.0}", &r, &e));
    CHECK_INT(r.max_tokens, 16);
    dspy_oai_request_free(&r);
    dspy_oai_error_free(&e);
}

static void test_chat_errors(void) {
    const char *m;
    m = expect_fail(OAI_CHAT, "{bad", 400, NULL, NULL);
    CHECK_CONTAINS(m, "We could not parse the JSON body of your request.");
    CHECK_CONTAINS(m, "line 1");
    expect_fail(OAI_CHAT, "", 400, NULL, NULL);
    m = expect_fail(OAI_CHAT, "[1,2]", 400, NULL, NULL);
    CHECK_CONTAINS(m, "must be a JSON object");
    m = expect_fail(OAI_CHAT, "{}", 400, "messages", "missing_required_parameter");
    CHECK_STR(m, "Missing required parameter: 'messages'.");
    m = expect_fail(OAI_CHAT, "{\"messages\":{}}", 400, "messages", "invalid_type");
    CHECK_STR(m, "Invalid type for 'messages': expected an array, but got an object instead.");
    expect_fail(OAI_CHAT, "{\"messages\":[]}", 400, "messages", "empty_array");
    expect_fail(OAI_CHAT, "{\"messages\":[\"hi\"]}", 400, "messages.[0]", "invalid_type");
    expect_fail(OAI_CHAT, "{\"messages\":[{\"content\":\"x\"}]}", 400, "messages.[0].role", "missing_required_parameter");
    m = expect_fail(OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"wizard\",\"content\":\"x\"}]}",
                    400, "messages.[1].role", "invalid_value");
    CHECK_CONTAINS(m, "'wizard'");
    expect_fail(OAI_CHAT, "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", 400, "messages.[0].role", "invalid_value");
    expect_fail(OAI_CHAT, "{\"messages\":[{\"role\":\"user\"}]}", 400, "messages.[0].content", "missing_required_parameter");
    expect_fail(OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400, "messages.[0].content", "invalid_type");
    m = expect_fail(OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]}]}",
                    400, "messages.[0].content", "invalid_value");
    CHECK_CONTAINS(m, "text content only");
    expect_fail(OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}", 400, "messages.[0].content", "invalid_value");
    expect_fail(OAI_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{}]}]}", 400,
                "messages.[0].tool_calls", "unsupported_parameter");
#define MSG "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]"
    expect_fail(OAI_CHAT, "{" MSG ",\"model\":5}", 400, "model", "invalid_type");
    m = expect_fail(OAI_CHAT, "{" MSG ",\"max_tokens\":\"10\"}", 400, "max_tokens", "invalid_type");
    CHECK_STR(m, "Invalid type for 'max_tokens': expected an integer, but got a string instead.");
    m = expect_fail(OAI_CHAT, "{" MSG ",\"max_tokens\":0}", 400, "max_tokens", "integer_below_min_value");
    CHECK_STR(m, "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got 0 instead.");
    expect_fail(OAI_CHAT, "{" MSG ",\"max_tokens\":1.5}", 400, "max_tokens", "invalid_type");
    expect_fail(OAI_CHAT, "{" MSG ",\"max_completion_tokens\":-3}", 400, "max_completion_tokens", "integer_below_min_value");
    m = expect_fail(OAI_CHAT, "{" MSG ",\"temperature\":2.5}", 400, "temperature", "decimal_above_max_value");
    CHECK_STR(m, "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 2.5 instead.");
    expect_fail(OAI_CHAT, "{" MSG ",\"temperature\":-0.1}", 400, "temperature", "decimal_below_min_value");
    expect_fail(OAI_CHAT, "{" MSG ",\"temperature\":\"hot\"}", 400, "temperature", "invalid_type");
    expect_fail(OAI_CHAT, "{" MSG ",\"top_p\":0}", 400, "top_p", "decimal_below_min_value");
    expect_fail(OAI_CHAT, "{" MSG ",\"top_p\":1.01}", 400, "top_p", "decimal_above_max_value");
    expect_fail(OAI_CHAT, "{" MSG ",\"top_k\":-2}", 400, "top_k", "integer_below_min_value");
    expect_fail(OAI_CHAT, "{" MSG ",\"n\":0}", 400, "n", "integer_below_min_value");
    expect_fail(OAI_CHAT, "{" MSG ",\"n\":129}", 400, "n", "integer_above_max_value");
    expect_fail(OAI_CHAT, "{" MSG ",\"seed\":\"1\"}", 400, "seed", "invalid_type");
    expect_fail(OAI_CHAT, "{" MSG ",\"stream\":\"yes\"}", 400, "stream", "invalid_type");
    expect_fail(OAI_CHAT, "{" MSG ",\"ignore_eos\":1}", 400, "ignore_eos", "invalid_type");
    expect_fail(OAI_CHAT, "{" MSG ",\"stream_options\":true}", 400, "stream_options", "invalid_type");
    expect_fail(OAI_CHAT, "{" MSG ",\"stream_options\":{\"include_usage\":1}}", 400, "stream_options.include_usage", "invalid_type");
    expect_fail(OAI_CHAT, "{" MSG ",\"stop\":5}", 400, "stop", "invalid_type");
    expect_fail(OAI_CHAT, "{" MSG ",\"stop\":[\"a\",7]}", 400, "stop", "invalid_type");
    expect_fail(OAI_CHAT, "{" MSG ",\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\",\"11\",\"12\",\"13\","
                          "\"14\",\"15\",\"16\",\"17\"]}", 400, "stop", "array_above_max_length");
    expect_fail(OAI_CHAT, "{" MSG ",\"logprobs\":true}", 400, "logprobs", "unsupported_parameter");
    expect_fail(OAI_CHAT, "{" MSG ",\"top_logprobs\":3}", 400, "top_logprobs", "unsupported_parameter");
    expect_fail(OAI_CHAT, "{" MSG ",\"presence_penalty\":0.5}", 400, "presence_penalty", "unsupported_parameter");
    expect_fail(OAI_CHAT, "{" MSG ",\"frequency_penalty\":\"x\"}", 400, "frequency_penalty", "invalid_type");
    expect_fail(OAI_CHAT, "{" MSG ",\"logit_bias\":{\"50256\":-100}}", 400, "logit_bias", "unsupported_parameter");
    expect_fail(OAI_CHAT, "{" MSG ",\"tools\":[{\"type\":\"function\"}]}", 400, "tools", "unsupported_parameter");
#undef MSG
}

static void test_completions(void) {
    oai_request r;
    oai_error e = OAI_ERROR_INIT;
    CHECK_OK(parse(OAI_COMPLETION, "{\"prompt\":\"Once upon\",\"max_tokens\":3,\"echo\":false,\"suffix\":null}", &r, &e));
    CHECK_STR(r.prompt, "Once upon");
    CHECK(r.prompt_ids == NULL);
    CHECK_INT(r.max_tokens, 3);
    dspy_oai_request_free(&r);
    CHECK_OK(parse(OAI_COMPLETION, "{\"prompt\":[\"only one\"]}", &r, &e));
    CHECK_STR(r.prompt, "only one");
    dspy_oai_request_free(&r);
    CHECK_OK(parse(OAI_COMPLETION, "{\"prompt\":[128000, 9906, 0]}", &r, &e));
    CHECK(r.prompt == NULL);
    CHECK_INT(r.n_prompt_ids, 3);
    CHECK_INT(r.prompt_ids[0], 128000);
    CHECK_INT(r.prompt_ids[2], 0);
    dspy_oai_request_free(&r);
    CHECK_OK(parse(OAI_COMPLETION, "{\"prompt\":[[1,2]]}", &r, &e));
    CHECK_INT(r.n_prompt_ids, 2);
    dspy_oai_request_free(&r);
    dspy_oai_error_free(&e);

    expect_fail(OAI_COMPLETION, "{}", 400, "prompt", "missing_required_parameter");
    expect_fail(OAI_COMPLETION, "{\"prompt\":5}", 400, "prompt", "invalid_type");
    expect_fail(OAI_COMPLETION, "{\"prompt\":[]}", 400, "prompt", "empty_array");
    const char *m = expect_fail(OAI_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", 400, "prompt", "unsupported_value");
    CHECK_CONTAINS(m, "one prompt per request");
    m = expect_fail(OAI_COMPLETION, "{\"prompt\":[1,128256]}", 400, "prompt", "invalid_value");
    CHECK_CONTAINS(m, "token id 128256 at position 1 is outside the vocabulary [0, 128256)");
    expect_fail(OAI_COMPLETION, "{\"prompt\":[1,-1]}", 400, "prompt", "invalid_value");
    expect_fail(OAI_COMPLETION, "{\"prompt\":[1,\"x\"]}", 400, "prompt", "invalid_type");
    expect_fail(OAI_COMPLETION, "{\"prompt\":\"x\",\"echo\":true}", 400, "echo", "unsupported_parameter");
    expect_fail(OAI_COMPLETION, "{\"prompt\":\"x\",\"suffix\":\"y\"}", 400, "suffix", "unsupported_parameter");
}

/* response_format and the dspy_layout / dspy_max_string_tokens extensions */
static void test_structured_fields(void) {
    oai_request r;
    oai_error e = OAI_ERROR_INIT;
#define MSG "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
    CHECK_OK(parse(OAI_CHAT, MSG "\"response_format\":{\"type\":\"text\"}}", &r, &e));
    CHECK_INT(r.format, OAI_FORMAT_TEXT);
    CHECK_INT(r.max_string_tokens, -1);
    dspy_oai_request_free(&r);
    CHECK_OK(parse(OAI_CHAT, MSG "\"response_format\":{\"type\":\"json_object\"}}", &r, &e));
    CHECK_INT(r.format, OAI_FORMAT_JSON_OBJECT);
    dspy_oai_request_free(&r);
    CHECK_OK(parse(OAI_CHAT, MSG "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"N\","
                   "\"strict\":true,\"schema\":{\"type\": \"object\", \"properties\": {\"a\": {\"type\":\"integer\"}}}}},"
                   "\"dspy_max_string_tokens\":7}", &r, &e));
    CHECK_INT(r.format, OAI_FORMAT_JSON_SCHEMA);
    CHECK_STR(r.schema_text, "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}");
    CHECK_INT(r.max_string_tokens, 7);
    dspy_oai_request_free(&r);
    CHECK_OK(parse(OAI_CHAT, MSG "\"dspy_layout\":[{\"name\":\"reasoning\",\"max_tokens\":9},"
                   "{\"name\":\"label\",\"enum\":[\"a\",\"b c\"]}]}", &r, &e));
    CHECK_INT(r.format, OAI_FORMAT_LAYOUT);
    CHECK_INT(r.n_layout, 2);
    if (r.n_layout == 2) {
        CHECK_STR(r.layout[0].name, "reasoning");
        CHECK_INT(r.layout[0].max_tokens, 9);
        CHECK_INT(r.layout[0].n_values, 0);
        CHECK_STR(r.layout[1].name, "label");
        CHECK_INT(r.layout[1].max_tokens, -1);
        CHECK_INT(r.layout[1].n_values, 2);
        CHECK_STR(r.layout[1].values[1], "b c");
    }
    dspy_oai_request_free(&r);
    const char *m;
    m = expect_fail(OAI_CHAT, MSG "\"response_format\":{\"type\":\"xml\"}}", 400, "response_format.type", "invalid_value");
    CHECK_STR(m, "Invalid value: 'xml'. Supported values are: 'text', 'json_object' and 'json_schema'.");
    expect_fail(OAI_CHAT, MSG "\"response_format\":\"json\"}", 400, "response_format", "invalid_type");
    expect_fail(OAI_CHAT, MSG "\"response_format\":{}}", 400, "response_format.type", "missing_required_parameter");
    expect_fail(OAI_CHAT, MSG "\"response_format\":{\"type\":\"json_schema\"}}", 400, "response_format.json_schema",
                "missing_required_parameter");
    expect_fail(OAI_CHAT, MSG "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"schema\":[1]}}}", 400,
                "response_format.json_schema.schema", "invalid_type");
    expect_fail(OAI_CHAT, MSG "\"dspy_layout\":{}}", 400, "dspy_layout", "invalid_type");
    expect_fail(OAI_CHAT, MSG "\"dspy_layout\":[]}", 400, "dspy_layout", "empty_array");
    expect_fail(OAI_CHAT, MSG "\"dspy_layout\":[{\"enum\":[\"a\"]}]}", 400, "dspy_layout.[0].name", "missing_required_parameter");
    expect_fail(OAI_CHAT, MSG "\"dspy_layout\":[{\"name\":\"a\",\"enum\":[]}]}", 400, "dspy_layout.[0].enum", "invalid_value");
    expect_fail(OAI_CHAT, MSG "\"dspy_layout\":[{\"name\":\"a\",\"enum\":[1]}]}", 400, "dspy_layout.[0].enum", "invalid_type");
    expect_fail(OAI_CHAT, MSG "\"dspy_layout\":[{\"name\":\"a\",\"max_tokens\":-1}]}", 400, "dspy_layout.[0].max_tokens",
                "invalid_value");
    m = expect_fail(OAI_CHAT, MSG "\"response_format\":{\"type\":\"json_object\"},\"dspy_layout\":[{\"name\":\"a\"}]}", 400,
                    "dspy_layout", "invalid_value");
    CHECK_CONTAINS(m, "cannot be combined");
    expect_fail(OAI_CHAT, MSG "\"dspy_max_string_tokens\":-2}", 400, "dspy_max_string_tokens", "integer_below_min_value");
#undef MSG
    dspy_oai_error_free(&e);
}

static void test_routes(void) {
    oai_error e = OAI_ERROR_INIT;
    char *id = NULL;
    const char *allow = NULL;
#define R(m, p) dspy_oai_route_match(dspy_strv_of(m), dspy_strv_of(p), &id, &allow, &e)
    CHECK_INT(R("GET", "/health"), OAI_ROUTE_HEALTH);
    CHECK_INT(R("GET", "/v1/models"), OAI_ROUTE_MODELS);
    CHECK_INT(R("POST", "/v1/chat/completions"), OAI_ROUTE_CHAT);
    CHECK_INT(R("POST", "/v1/completions"), OAI_ROUTE_COMPLETIONS);
    CHECK_INT(R("GET", "/metrics"), OAI_ROUTE_METRICS);
    CHECK_INT(R("POST", "/metrics"), OAI_ROUTE_NONE);
    CHECK_INT(e.status, 405);
    CHECK_INT(R("GET", "/v1/models/local%3A%2Fabs%2Fout"), OAI_ROUTE_MODEL);
    CHECK_STR(id, "local:/abs/out");
    free(id);
    CHECK_INT(R("GET", "/v1/models/tm"), OAI_ROUTE_MODEL);
    CHECK_STR(id, "tm");
    free(id);
    CHECK_INT(R("GET", "/v1/models/bad%zz"), OAI_ROUTE_NONE);
    CHECK_INT(e.status, 400);
    CHECK_INT(R("GET", "/v1/models/bad%4"), OAI_ROUTE_NONE);
    CHECK_INT(e.status, 400);

    CHECK_INT(R("POST", "/v1/foo"), OAI_ROUTE_NONE);
    CHECK_INT(e.status, 404);
    CHECK_STR(e.message.ptr, "Invalid URL (POST /v1/foo)");
    CHECK_STR(e.code, "unknown_url");
    CHECK(allow == NULL);
    CHECK_INT(R("GET", "/v1/chat/completions"), OAI_ROUTE_NONE);
    CHECK_INT(e.status, 405);
    CHECK_STR(allow, "POST");
    CHECK_STR(e.code, "method_not_allowed");
    CHECK_INT(R("POST", "/v1/models"), OAI_ROUTE_NONE);
    CHECK_INT(e.status, 405);
    CHECK_STR(allow, "GET");
    CHECK_INT(R("DELETE", "/v1/models/x"), OAI_ROUTE_NONE);
    CHECK_INT(e.status, 405);
    CHECK_INT(R("get", "/health"), OAI_ROUTE_NONE); /* methods are case-sensitive */
    CHECK_INT(e.status, 405);
#undef R
    dspy_oai_error_free(&e);
    char *d = dspy_oai_percent_decode(dspy_strv_of("a%20b%2f"));
    CHECK_STR(d, "a b/");
    free(d);
}

static void test_error_json(void) {
    oai_error e = OAI_ERROR_INIT;
    dspy_oai_error_set(&e, 404, NULL, "model", "model_not_found", "The model `%s` does not exist.", "gpt-x");
    char *j = dspy_oai_error_json(&e);
    CHECK_STR(j, "{\"error\":{\"message\":\"The model `gpt-x` does not exist.\",\"type\":\"invalid_request_error\","
                 "\"param\":\"model\",\"code\":\"model_not_found\"}}");
    free(j);
    dspy_oai_error_set(&e, 503, NULL, NULL, "overloaded", "busy \"now\"");
    j = dspy_oai_error_json(&e);
    CHECK_STR(j, "{\"error\":{\"message\":\"busy \\\"now\\\"\",\"type\":\"server_error\",\"param\":null,\"code\":\"overloaded\"}}");
    free(j);
    dspy_oai_error_set(&e, 401, "invalid_request_error", NULL, "invalid_api_key", "Incorrect API key provided.");
    j = dspy_oai_error_json(&e);
    CHECK_STR(j, "{\"error\":{\"message\":\"Incorrect API key provided.\",\"type\":\"invalid_request_error\","
                 "\"param\":null,\"code\":\"invalid_api_key\"}}");
    free(j);
    dspy_oai_error_free(&e);
    CHECK_STR(dspy_oai_error_type_for(401), "authentication_error");
    CHECK_STR(dspy_oai_error_type_for(413), "invalid_request_error");
    CHECK_STR(dspy_oai_error_type_for(500), "server_error");
}

static void test_answers(void) {
    oai_choice ch[2] = {{"Hello \xc3\xa9\n", 9, "stop"}, {"x", 1, "length"}};
    oai_usage u = {12, 9};
    char *j = dspy_oai_completion_json(OAI_CHAT, "chatcmpl-1", 1700000000, "m", ch, 2, u);
    CHECK_STR(j, "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":\"m\","
                 "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Hello \xc3\xa9\\n\"},"
                 "\"logprobs\":null,\"finish_reason\":\"stop\"},{\"index\":1,\"message\":{\"role\":\"assistant\","
                 "\"content\":\"x\"},\"logprobs\":null,\"finish_reason\":\"length\"}],"
                 "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":9,\"total_tokens\":21}}");
    free(j);
    j = dspy_oai_completion_json(OAI_COMPLETION, "cmpl-1", 5, "m", ch + 1, 1, u);
    CHECK_STR(j, "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":5,\"model\":\"m\",\"choices\":"
                 "[{\"text\":\"x\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}],"
                 "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":9,\"total_tokens\":21}}");
    free(j);
    j = dspy_oai_chunk_json(OAI_CHAT, "c", 5, "m", 0, true, "", 0, NULL, false);
    CHECK_STR(j, "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":"
                 "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}");
    free(j);
    j = dspy_oai_chunk_json(OAI_CHAT, "c", 5, "m", 1, false, "ab", 2, NULL, true);
    CHECK_STR(j, "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":"
                 "[{\"index\":1,\"delta\":{\"content\":\"ab\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}");
    free(j);
    j = dspy_oai_chunk_json(OAI_CHAT, "c", 5, "m", 0, false, "", 0, "stop", false);
    CHECK_STR(j, "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":"
                 "[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}");
    free(j);
    j = dspy_oai_chunk_json(OAI_COMPLETION, "c", 5, "m", 0, false, "t", 1, NULL, false);
    CHECK_STR(j, "{\"id\":\"c\",\"object\":\"text_completion\",\"created\":5,\"model\":\"m\",\"choices\":"
                 "[{\"text\":\"t\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}");
    free(j);
    j = dspy_oai_usage_chunk_json(OAI_CHAT, "c", 5, "m", u);
    CHECK_STR(j, "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[],"
                 "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":9,\"total_tokens\":21}}");
    free(j);
    j = dspy_oai_model_json("/abs/out", 7, true);
    CHECK_STR(j, "{\"object\":\"list\",\"data\":[{\"id\":\"/abs/out\",\"object\":\"model\",\"created\":7,\"owned_by\":\"dspy.c\"}]}");
    free(j);
    j = dspy_oai_model_json("m", 7, false);
    CHECK_STR(j, "{\"id\":\"m\",\"object\":\"model\",\"created\":7,\"owned_by\":\"dspy.c\"}");
    free(j);
    char *a = dspy_oai_new_id(OAI_CHAT), *b = dspy_oai_new_id(OAI_CHAT), *c = dspy_oai_new_id(OAI_COMPLETION);
    CHECK(strncmp(a, "chatcmpl-", 9) == 0 && strlen(a) == 9 + 24);
    CHECK(strcmp(a, b) != 0);
    CHECK(strncmp(c, "cmpl-", 5) == 0 && strlen(c) == 5 + 24);
    free(a);
    free(b);
    free(c);
}

int main(void) {
    RUN(test_chat_full);
    RUN(test_chat_defaults);
    RUN(test_chat_errors);
    RUN(test_completions);
    RUN(test_structured_fields);
    RUN(test_routes);
    RUN(test_error_json);
    RUN(test_answers);
    return check_summary("test_openai_api");
}
