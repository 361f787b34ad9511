/* test_local_structured.c — what Predict sends for structured outputs, seen at an HTTP stub:
 *   - a local model ("openai/local:<dir>") with a Literal output: the ChatAdapter request
 *     carries "dspy_layout" (the output fields in order, the Literal values as str()), the
 *     JSONAdapter request carries the json_schema response_format;
 *   - with dspy_settings_set_local_structured(false): neither (json_object, as DSPy/litellm);
 *   - a remote model ("openai/<name>"): no dspy_layout, whatever the setting, and the request
 *     body is byte for byte the one sent with the setting off;
 *   - signatures the layout cannot express (an int output) or without a Literal get none;
 *   - dspy_chat_adapter_layout's value for a mixed Literal (str() of ints and bools).
 * The stub answers in the ChatAdapter/JSON layout so the calls succeed.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/adapter.h"
#include "dspy/json.h"
#include "dspy/lm.h"
#include "dspy/module.h"
#include "dspy/prediction.h"
#include "dspy/settings.h"
#include "dspy/signature.h"
#include "http_stub.h"

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static char *g_last_body;

/* Remembers the body; answers the ChatAdapter layout (with an "n" field for the signature that
 * has one; others ignore it), or JSON when response_format is set. */
static void handler(void *ud, const http_stub_request *req, http_stub_response *resp) {
    (void)ud;
    pthread_mutex_lock(&g_mu);
    free(g_last_body);
    g_last_body = strdup(req->body);
    pthread_mutex_unlock(&g_mu);
    bool json = strstr(req->body, "\"response_format\"") != NULL;
    const char *content = json ? "{\"answer\": \"no\"}" : "[[ ## answer ## ]]\nno\n\n[[ ## n ## ]]\n3\n\n[[ ## completed ## ]]";
    dspy_json *o = dspy_json_object(), *choices = dspy_json_array(), *c = dspy_json_object(), *m = dspy_json_object();
    dspy_json_set_str(m, "role", "assistant");
    dspy_json_set_str(m, "content", content);
    dspy_json_set(c, "message", m);
    dspy_json_set_str(c, "finish_reason", "stop");
    dspy_json_set(c, "index", dspy_json_int(0));
    dspy_json_append(choices, c);
    dspy_json_set(o, "choices", choices);
    dspy_json_set_str(o, "model", "x");
    dspy_json_dump(o, DSPY_JSON_COMPACT, &resp->body);
    dspy_json_decref(o);
}

static char *last_body(void) {
    pthread_mutex_lock(&g_mu);
    char *b = g_last_body ? strdup(g_last_body) : NULL;
    pthread_mutex_unlock(&g_mu);
    return b;
}

/* Calls Predict(sig) once through `model` at the stub and returns the request body sent. */
static char *call(http_stub *stub, const char *model, const char *sig, dspy_adapter_kind adapter) {
    dspy_lm_params p = dspy_lm_params_default();
    p.cache = 0;
    dspy_lm *lm = NULL;
    CHECK_OK(dspy_lm_new(model, &p, &lm));
    if (!lm) return NULL;
    char base[256];
    snprintf(base, sizeof base, "%s/v1", http_stub_url(stub));
    dspy_lm_set_kwarg(lm, "api_base", dspy_json_string(base));
    dspy_lm_set_kwarg(lm, "api_key", dspy_json_string("k"));
    dspy_settings_set_lm(lm);
    dspy_settings_set_adapter(adapter, false);
    dspy_module *pr = NULL;
    CHECK_OK(dspy_predict_new_text(sig, NULL, NULL, &pr));
    dspy_json *in = dspy_json_object();
    dspy_json_set_str(in, "question", "Is it?");
    dspy_prediction *out = NULL;
    CHECK_OK(dspy_module_call(pr, in, NULL, &out));
    dspy_prediction_free(out);
    dspy_json_decref(in);
    dspy_module_free(pr);
    dspy_settings_set_lm(NULL);
    dspy_lm_free(lm);
    return last_body();
}

static const dspy_json *field(const dspy_json *body, const char *key) { return body ? dspy_json_get(body, key) : NULL; }

static dspy_json *parse_body(const char *b) {
    dspy_json *v = NULL;
    if (b) CHECK_OK(dspy_json_parse(b, strlen(b), "request", &v));
    return v;
}

static void test_requests(void) {
    http_stub *stub = NULL;
    CHECK_OK(http_stub_start(handler, NULL, &stub));
    if (!stub) return;
    const char *sig = "question -> answer: Literal['yes', 'no']";
    /* local, ChatAdapter: dspy_layout */
    char *b = call(stub, "openai/local:/models/student", sig, DSPY_ADAPTER_CHAT);
    dspy_json *v = parse_body(b);
    const dspy_json *l = field(v, "dspy_layout");
    CHECK(l != NULL);
    if (l) {
        char *t = dspy_json_dumps(l, DSPY_JSON_COMPACT);
        CHECK_STR(t, "[{\"name\":\"answer\",\"enum\":[\"yes\",\"no\"]}]");
        free(t);
    }
    CHECK(field(v, "response_format") == NULL);
    CHECK_STR(dspy_json_str_or(v, "model", ""), "local:/models/student");
    dspy_json_decref(v);
    free(b);
    /* local, JSONAdapter: json_schema with the Literal as an enum */
    b = call(stub, "openai/local:/models/student", sig, DSPY_ADAPTER_JSON);
    v = parse_body(b);
    CHECK_STR(dspy_json_str_or(field(v, "response_format"), "type", ""), "json_schema");
    CHECK(field(v, "dspy_layout") == NULL);
    dspy_json_decref(v);
    free(b);
    /* off: as DSPy (json_object, no layout) */
    dspy_settings_set_local_structured(false);
    b = call(stub, "openai/local:/models/student", sig, DSPY_ADAPTER_CHAT);
    v = parse_body(b);
    CHECK(field(v, "dspy_layout") == NULL);
    dspy_json_decref(v);
    free(b);
    b = call(stub, "openai/local:/models/student", sig, DSPY_ADAPTER_JSON);
    v = parse_body(b);
    CHECK_STR(dspy_json_str_or(field(v, "response_format"), "type", ""), "json_object");
    dspy_json_decref(v);
    free(b);
    char *remote_off = call(stub, "openai/gpt-4o-mini", sig, DSPY_ADAPTER_CHAT);
    dspy_settings_set_local_structured(true);
    /* remote: unchanged by the setting, byte for byte */
    char *remote_on = call(stub, "openai/gpt-4o-mini", sig, DSPY_ADAPTER_CHAT);
    CHECK(remote_on && remote_off && strcmp(remote_on, remote_off) == 0);
    CHECK(remote_on && !strstr(remote_on, "dspy_layout"));
    free(remote_on);
    free(remote_off);
    /* outputs the layout cannot express, or nothing to constrain: no layout */
    b = call(stub, "openai/local:/models/student", "question -> answer: Literal['yes', 'no'], n: int", DSPY_ADAPTER_CHAT);
    CHECK(b && !strstr(b, "dspy_layout"));
    free(b);
    b = call(stub, "openai/local:/models/student", "question -> answer", DSPY_ADAPTER_CHAT);
    CHECK(b && !strstr(b, "dspy_layout"));
    free(b);
    http_stub_stop(stub);
}

static void test_layout_value(void) {
    dspy_signature *sig = NULL;
    CHECK_OK(dspy_signature_parse("q -> reasoning, pick: Literal[1, 'two', True]", NULL, &sig));
    if (!sig) return;
    dspy_json *l = NULL;
    CHECK_OK(dspy_chat_adapter_layout(sig, &l));
    char *t = l ? dspy_json_dumps(l, DSPY_JSON_COMPACT) : NULL;
    CHECK_STR(t, "[{\"name\":\"reasoning\"},{\"name\":\"pick\",\"enum\":[\"1\",\"two\",\"True\"]}]");
    free(t);
    dspy_json_decref(l);
    dspy_signature_free(sig);
}

int main(void) {
    RUN(test_requests);
    RUN(test_layout_value);
    dspy_settings_reset();
    free(g_last_body);
    return check_summary("test_local_structured");
}
