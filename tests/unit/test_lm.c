/* test_lm.c — the LM object without a network: kwargs layout (CC-21), copy, dump/load state
 * (CC-24), request keys (CC-22), usage sums (CC-22, DSPy's test_usage_tracker vectors), the
 * scripted LM (DummyLM, CC-20), callbacks and history. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/history.h"
#include "dspy/lm.h"
#include "dspy/log.h"

static dspy_json *parse(const char *s) {
    dspy_json *j = NULL;
    CHECK_OK(dspy_json_parse(s, strlen(s), "test", &j));
    return j;
}

static void check_json_eq(const dspy_json *got, const char *want_text, int line) {
    dspy_json *want = parse(want_text);
    char *g = got ? dspy_json_dumps(got, DSPY_JSON_COMPACT) : NULL;
    check_report(got && dspy_json_equal(got, want), __FILE__, line, "json:\n  got:  %s\n  want: %s", g ? g : "(null)",
                 want_text);
    free(g);
    dspy_json_decref(want);
}
#define CHECK_JSON(got, want) check_json_eq((got), (want), __LINE__)

static void check_dump_exact(const dspy_json *got, const char *want, int line) {
    char *g = got ? dspy_json_dumps(got, DSPY_JSON_COMPACT) : NULL;
    check_report(g && strcmp(g, want) == 0, __FILE__, line, "json bytes:\n  got:  %s\n  want: %s", g ? g : "(null)", want);
    free(g);
}
#define CHECK_DUMP(got, want) check_dump_exact((got), (want), __LINE__)

static char g_warnings[2048];
static void capture(dspy_log_level level, const char *msg, void *user) {
    (void)user;
    if (level == DSPY_LOG_WARN) {
        strncat(g_warnings, msg, sizeof g_warnings - strlen(g_warnings) - 2);
        strcat(g_warnings, "\n");
    }
}

static dspy_lm *new_lm(const char *model, const dspy_lm_params *p) {
    dspy_lm *lm = NULL;
    CHECK_OK(dspy_lm_new(model, p, &lm));
    return lm;
}

static void test_kwargs_layout(void) {
    dspy_lm *lm = new_lm("openai/gpt-4o-mini", NULL);
    dspy_json *kw = dspy_lm_kwargs(lm);
    CHECK_DUMP(kw, "{\"temperature\":null,\"max_tokens\":null}");
    dspy_json_decref(kw);
    CHECK_INT(dspy_lm_num_retries(lm), 3);
    CHECK(dspy_lm_cache_enabled(lm));
    CHECK_STR(dspy_lm_model_type(lm), "chat");

    /* lm.copy(rollout_id=1, temperature=0.2) (CC-21) */
    dspy_json *ov = parse("{\"rollout_id\":1,\"temperature\":0.2}");
    dspy_lm *c = NULL;
    CHECK_OK(dspy_lm_copy(lm, ov, &c));
    kw = dspy_lm_kwargs(c);
    CHECK_DUMP(kw, "{\"temperature\":0.2,\"max_tokens\":null,\"rollout_id\":1}");
    dspy_json_decref(kw);
    dspy_json_decref(ov);
    /* null deletes a kwarg; attributes are set as attributes */
    ov = parse("{\"temperature\":null,\"num_retries\":7,\"cache\":false,\"model\":\"openai/gpt-4o\",\"top_p\":0.5}");
    dspy_lm *c2 = NULL;
    CHECK_OK(dspy_lm_copy(c, ov, &c2));
    kw = dspy_lm_kwargs(c2);
    CHECK_DUMP(kw, "{\"max_tokens\":null,\"rollout_id\":1,\"top_p\":0.5}");
    dspy_json_decref(kw);
    CHECK_INT(dspy_lm_num_retries(c2), 7);
    CHECK(!dspy_lm_cache_enabled(c2));
    CHECK_STR(dspy_lm_model(c2), "openai/gpt-4o");
    CHECK_STR(dspy_lm_model(c), "openai/gpt-4o-mini"); /* the original is untouched */
    dspy_json_decref(ov);
    ov = parse("{\"num_retries\":\"x\"}");
    dspy_lm *bad = (dspy_lm *)1;
    CHECK_STATUS(dspy_lm_copy(c, ov, &bad), DSPY_ERR_ARG);
    CHECK(bad == NULL);
    dspy_json_decref(ov);
    dspy_lm_free(c2);
    dspy_lm_free(c);
    dspy_lm_free(lm);

    /* V26: temperature 0.0 and max_tokens 1000 unless set; 8 retries */
    dspy_lm_params p = dspy_lm_params_default();
    p.profile = DSPY_LM_V26;
    p.max_tokens = 3000;
    lm = new_lm("openai/gpt-4o-mini", &p);
    kw = dspy_lm_kwargs(lm);
    CHECK_DUMP(kw, "{\"temperature\":0.0,\"max_tokens\":3000}");
    dspy_json_decref(kw);
    CHECK_INT(dspy_lm_num_retries(lm), 8);
    dspy_lm_free(lm);

    /* user kwargs after temperature/max_tokens; rollout_id null removed */
    p = dspy_lm_params_default();
    dspy_json *extra = parse("{\"n\":2,\"rollout_id\":null,\"max_tokens\":250,\"api_key\":\"sk-1\"}");
    p.kwargs = extra;
    lm = new_lm("openai/gpt-4o-mini", &p);
    kw = dspy_lm_kwargs(lm);
    CHECK_DUMP(kw, "{\"temperature\":null,\"max_tokens\":250,\"n\":2,\"api_key\":\"sk-1\"}");
    dspy_json_decref(kw);
    dspy_json_decref(extra);
    CHECK_OK(dspy_lm_set_kwarg(lm, "api_base", dspy_json_string("http://127.0.0.1:9/v1")));
    CHECK_OK(dspy_lm_set_kwarg(lm, "n", NULL));
    kw = dspy_lm_kwargs(lm);
    CHECK_DUMP(kw, "{\"temperature\":null,\"max_tokens\":250,\"api_key\":\"sk-1\",\"api_base\":\"http://127.0.0.1:9/v1\"}");
    dspy_json_decref(kw);
    dspy_lm_free(lm);
}

static void test_reasoning_and_errors(void) {
    dspy_lm_params p = dspy_lm_params_default();
    p.temperature = 0.7;
    dspy_lm *lm = (dspy_lm *)1;
    CHECK_STATUS(dspy_lm_new("openai/o3-mini", &p, &lm), DSPY_ERR_ARG);
    CHECK(lm == NULL);
    CHECK_CONTAINS(dspy_errmsg(), "reasoning models require");
    p = dspy_lm_params_default();
    p.max_tokens = 20000;
    lm = new_lm("openai/gpt-5", &p);
    dspy_json *kw = dspy_lm_kwargs(lm);
    CHECK_DUMP(kw, "{\"temperature\":null,\"max_completion_tokens\":20000}");
    dspy_json_decref(kw);
    dspy_lm_free(lm);
    p.max_tokens = 3000;
    lm = new_lm("openai/gpt-5-chat-latest", &p); /* not a reasoning model */
    kw = dspy_lm_kwargs(lm);
    CHECK_DUMP(kw, "{\"temperature\":null,\"max_tokens\":3000}");
    dspy_json_decref(kw);
    dspy_lm_free(lm);

    CHECK_STATUS(dspy_lm_new("anthropic/claude", NULL, &lm), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "unsupported model string \"anthropic/claude\"");
    CHECK_STATUS(dspy_lm_new("openai/", NULL, &lm), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_lm_new("", NULL, &lm), DSPY_ERR_ARG);
    p = dspy_lm_params_default();
    p.model_type = "text";
    CHECK_STATUS(dspy_lm_new("openai/gpt-4o-mini", &p, &lm), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "model_type \"text\" is not supported");
    CHECK_STATUS(dspy_lm_new("scripted:/nonexistent/file.json", NULL, &lm), DSPY_ERR_IO);
    CHECK_CONTAINS(dspy_errmsg(), "/nonexistent/file.json");
}

static void test_dump_load_state(void) {
    /* CC-24 */
    dspy_lm_params p = dspy_lm_params_default();
    p.temperature = 1;
    p.max_tokens = 100;
    p.num_retries = 10;
    dspy_json *lk = parse("{\"temperature\":1}"), *tk = parse("{\"temperature\":5}"), *kw = parse("{\"api_key\":\"sk-x\"}");
    p.launch_kwargs = lk;
    p.train_kwargs = tk;
    p.kwargs = kw;
    dspy_lm *lm = new_lm("openai/gpt-4o-mini", &p);
    dspy_json *st = dspy_lm_dump_state(lm);
    /* CC-24 has "temperature": 1 (Python int; 1 == 1.0 in Python): our temperature is a double */
    CHECK_JSON(st, "{\"_dspy_lm_class\": \"dspy.clients.lm.LM\", \"model\": \"openai/gpt-4o-mini\", \"model_type\": "
                   "\"chat\", \"temperature\": 1.0, \"max_tokens\": 100, \"num_retries\": 10, \"cache\": true, "
                   "\"finetuning_model\": null, \"launch_kwargs\": {\"temperature\": 1}, \"train_kwargs\": "
                   "{\"temperature\": 5}}");
    CHECK(dspy_json_get(st, "api_key") == NULL);
    /* round trip */
    dspy_lm *back = NULL;
    CHECK_OK(dspy_lm_load_state(st, false, NULL, &back));
    dspy_json *st2 = back ? dspy_lm_dump_state(back) : NULL;
    CHECK(st2 && dspy_json_equal(st, st2));
    dspy_json_decref(st2);
    dspy_lm_free(back);
    dspy_json_decref(st);
    dspy_lm_free(lm);
    dspy_json_decref(lk);
    dspy_json_decref(tk);
    dspy_json_decref(kw);

    /* api_base / base_url / model_list dropped unless allowed */
    dspy_json *s = parse("{\"_dspy_lm_class\":\"dspy.clients.lm.LM\",\"model\":\"openai/local:/abs/out\",\"model_type\":"
                         "\"chat\",\"cache\":true,\"num_retries\":3,\"finetuning_model\":null,\"launch_kwargs\":{},"
                         "\"train_kwargs\":{},\"temperature\":null,\"max_tokens\":2000,\"api_base\":\"http://localhost:"
                         "1234/v1\",\"base_url\":\"x\",\"model_list\":[]}");
    g_warnings[0] = '\0';
    dspy_log_set_sink(capture, NULL);
    CHECK_OK(dspy_lm_load_state(s, false, NULL, &lm));
    dspy_log_set_sink(NULL, NULL);
    CHECK_CONTAINS(g_warnings, "LM state for openai/local:/abs/out: dropping \"api_base\" (load with allow_unsafe_lm_state");
    CHECK_CONTAINS(g_warnings, "dropping \"base_url\"");
    CHECK_CONTAINS(g_warnings, "dropping \"model_list\"");
    dspy_json *k = lm ? dspy_lm_kwargs(lm) : NULL;
    CHECK_DUMP(k, "{\"temperature\":null,\"max_tokens\":2000}");
    dspy_json_decref(k);
    dspy_lm_free(lm);
    CHECK_OK(dspy_lm_load_state(s, true, NULL, &lm));
    k = lm ? dspy_lm_kwargs(lm) : NULL;
    CHECK_DUMP(k, "{\"temperature\":null,\"max_tokens\":2000,\"api_base\":\"http://localhost:1234/v1\",\"base_url\":"
                  "\"x\",\"model_list\":[]}");
    dspy_json_decref(k);
    dspy_lm_free(lm);
    dspy_json_decref(s);
    s = parse("{\"_dspy_lm_class\":\"my.Custom\",\"model\":\"x\"}");
    CHECK_STATUS(dspy_lm_load_state(s, false, NULL, &lm), DSPY_ERR_FORMAT);
    dspy_json_decref(s);
}

static void test_request_keys(void) {
    /* CC-22: LM("openai/gpt-4o-mini")(messages=[{"role":"user","content":"Hello"}]) */
    dspy_json *msgs = parse("[{\"role\":\"user\",\"content\":\"Hello\"}]");
    dspy_lm *lm = new_lm("openai/gpt-4o-mini", NULL);
    char key[65], key2[65];
    CHECK_OK(dspy_lm_request_key(lm, msgs, NULL, key));
    CHECK_STR(key, "440b01c3f6e26f86116db1edc738a5f43f89fe2cdb67b47cb0cd0d945b5b4cb0");
    /* api_key / api_base / base_url on the LM do not change it */
    CHECK_OK(dspy_lm_set_kwarg(lm, "api_key", dspy_json_string("sk-1")));
    CHECK_OK(dspy_lm_set_kwarg(lm, "api_base", dspy_json_string("http://h/v1")));
    CHECK_OK(dspy_lm_set_kwarg(lm, "base_url", dspy_json_string("http://h2/v1")));
    CHECK_OK(dspy_lm_request_key(lm, msgs, NULL, key2));
    CHECK_STR(key2, key);
    /* rollout_id=1 changes it; rollout_id=None and "cache" do not */
    dspy_json *kw = parse("{\"rollout_id\":1}");
    CHECK_OK(dspy_lm_request_key(lm, msgs, kw, key2));
    CHECK_STR(key2, "198da189d60d016cfd74ae36594daea05711aa83c5b21c6271666ad658dc32c6"); /* orjson vector */
    dspy_json_decref(kw);
    kw = parse("{\"rollout_id\":null,\"cache\":false}");
    CHECK_OK(dspy_lm_request_key(lm, msgs, kw, key2));
    CHECK_STR(key2, key);
    dspy_json_decref(kw);
    /* n=3, temperature=0.7 per call: orjson vector */
    kw = parse("{\"temperature\":0.7,\"n\":3}");
    CHECK_OK(dspy_lm_request_key(lm, msgs, kw, key2));
    CHECK_STR(key2, "4fbc926a0392f876acbf9bdb6be4f15bed1d53312e523ae4631a0a0d2a5a8c3f");
    dspy_json_decref(kw);
    /* bad arguments */
    dspy_json *notarr = parse("{\"role\":\"user\"}");
    CHECK_STATUS(dspy_lm_request_key(lm, notarr, NULL, key2), DSPY_ERR_ARG);
    dspy_json *badmsg = parse("[{\"content\":\"x\"}]");
    CHECK_STATUS(dspy_lm_request_key(lm, badmsg, NULL, key2), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "messages[0]");
    dspy_json_decref(notarr);
    dspy_json_decref(badmsg);
    dspy_lm_free(lm);
    dspy_json_decref(msgs);
}

static void test_usage_merge(void) {
    /* DSPy tests/utils/test_usage_tracker.py::test_get_total_tokens */
    const char *entries[] = {
        "{\"prompt_tokens\":1117,\"completion_tokens\":46,\"total_tokens\":1163,\"prompt_tokens_details\":{\"cached_tokens\":"
        "200,\"audio_tokens\":50},\"completion_tokens_details\":{\"reasoning_tokens\":20,\"audio_tokens\":10,"
        "\"accepted_prediction_tokens\":16,\"rejected_prediction_tokens\":0}}",
        "{\"prompt_tokens\":800,\"completion_tokens\":100,\"total_tokens\":900,\"prompt_tokens_details\":{\"cached_tokens\":"
        "300,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":50,\"audio_tokens\":0,"
        "\"accepted_prediction_tokens\":40,\"rejected_prediction_tokens\":10}}",
        "{\"prompt_tokens\":500,\"completion_tokens\":80,\"total_tokens\":580,\"prompt_tokens_details\":{\"cached_tokens\":"
        "100,\"audio_tokens\":25},\"completion_tokens_details\":{\"reasoning_tokens\":30,\"audio_tokens\":15,"
        "\"accepted_prediction_tokens\":25,\"rejected_prediction_tokens\":10}}"};
    dspy_json *total = dspy_json_object();
    for (int i = 0; i < 3; i++) {
        dspy_json *e = parse(entries[i]);
        CHECK_OK(dspy_usage_merge(total, e));
        dspy_json_decref(e);
    }
    CHECK_JSON(total, "{\"prompt_tokens\":2417,\"completion_tokens\":226,\"total_tokens\":2643,\"prompt_tokens_details\":"
                      "{\"cached_tokens\":600,\"audio_tokens\":75},\"completion_tokens_details\":{\"reasoning_tokens\":100,"
                      "\"audio_tokens\":25,\"accepted_prediction_tokens\":81,\"rejected_prediction_tokens\":20}}");
    dspy_json_decref(total);
    /* ::test_merge_usage_entries_with_none_values */
    const char *with_none[] = {
        "{\"prompt_tokens\":1117,\"completion_tokens\":46,\"total_tokens\":1163,\"prompt_tokens_details\":null,"
        "\"completion_tokens_details\":{}}",
        "{\"prompt_tokens\":800,\"completion_tokens\":100,\"total_tokens\":900,\"prompt_tokens_details\":null,"
        "\"completion_tokens_details\":null}",
        "{\"prompt_tokens\":100,\"completion_tokens\":100,\"total_tokens\":200,\"prompt_tokens_details\":{\"cached_tokens\":"
        "50,\"audio_tokens\":50},\"completion_tokens_details\":null}",
        "{\"prompt_tokens\":800,\"completion_tokens\":100,\"total_tokens\":900,\"prompt_tokens_details\":null,"
        "\"completion_tokens_details\":{\"reasoning_tokens\":1,\"audio_tokens\":1,\"accepted_prediction_tokens\":1,"
        "\"rejected_prediction_tokens\":1}}"};
    total = dspy_json_object();
    for (int i = 0; i < 4; i++) {
        dspy_json *e = parse(with_none[i]);
        CHECK_OK(dspy_usage_merge(total, e));
        dspy_json_decref(e);
    }
    CHECK_JSON(total, "{\"prompt_tokens\":2817,\"completion_tokens\":346,\"total_tokens\":3163,\"prompt_tokens_details\":"
                      "{\"cached_tokens\":50,\"audio_tokens\":50},\"completion_tokens_details\":{\"reasoning_tokens\":1,"
                      "\"audio_tokens\":1,\"accepted_prediction_tokens\":1,\"rejected_prediction_tokens\":1}}");
    dspy_json *arr = parse("[]");
    CHECK_STATUS(dspy_usage_merge(total, arr), DSPY_ERR_ARG);
    dspy_json_decref(arr);
    dspy_json_decref(total);
}

static dspy_json *question(const char *q) {
    dspy_json *m = dspy_json_array(), *u = dspy_json_object();
    dspy_json_set_str(u, "role", "user");
    dspy_json_set_str(u, "content", q);
    dspy_json_append(m, u);
    return m;
}

static void test_scripted(void) {
    /* CC-20: DummyLM replies "[[ ## answer ## ]]\nParis" (no completed marker) */
    dspy_json *replies = parse("[{\"answer\":\"Paris\"},{\"answer1\":\"my first answer\",\"answer2\":\"my second answer\"},"
                               "\"raw text\",{\"n\":3,\"ok\":true,\"none\":null,\"list\":[1,\"\\u00e9\"],\"obj\":{\"a\":1}}]");
    dspy_lm *lm = NULL;
    CHECK_OK(dspy_lm_new_scripted(replies, false, NULL, &lm));
    CHECK_STR(dspy_lm_model(lm), "dummy");
    CHECK(!dspy_lm_cache_enabled(lm)); /* DummyLM never caches */
    dspy_json *m = question("What is the capital of France?");
    const char *want[] = {"[[ ## answer ## ]]\nParis",
                          "[[ ## answer1 ## ]]\nmy first answer\n\n[[ ## answer2 ## ]]\nmy second answer", "raw text",
                          "[[ ## n ## ]]\n3\n\n[[ ## ok ## ]]\nTrue\n\n[[ ## none ## ]]\nNone\n\n[[ ## list ## ]]\n"
                          "[1, \"\xc3\xa9\"]\n\n[[ ## obj ## ]]\n{\"a\": 1}"};
    for (int i = 0; i < 4; i++) {
        dspy_lm_response *r = NULL;
        CHECK_OK(dspy_lm_call(lm, m, NULL, &r));
        CHECK(r && r->n == 1 && !r->cached);
        if (r) CHECK_STR(r->choices[0].text, want[i]);
        if (r) CHECK_STR(r->choices[0].finish_reason, "stop");
        dspy_lm_response_free(r);
    }
    dspy_lm_response *r = (dspy_lm_response *)1;
    CHECK_STATUS(dspy_lm_call(lm, m, NULL, &r), DSPY_ERR_STATE);
    CHECK(r == NULL);
    CHECK_CONTAINS(dspy_errmsg(), "all 4 replies have been used");
    CHECK_INT(dspy_history_len(dspy_lm_history(lm)), 4);
    dspy_lm_free(lm);
    dspy_json_decref(replies);

    /* cycling, n=3 consumes three replies */
    replies = parse("[\"a\",\"b\"]");
    CHECK_OK(dspy_lm_new_scripted(replies, true, NULL, &lm));
    dspy_json *kw = parse("{\"n\":3}");
    CHECK_OK(dspy_lm_call(lm, m, kw, &r));
    CHECK(r && r->n == 3);
    if (r && r->n == 3) {
        CHECK_STR(r->choices[0].text, "a");
        CHECK_STR(r->choices[1].text, "b");
        CHECK_STR(r->choices[2].text, "a");
    }
    dspy_lm_response_free(r);
    /* history entry: outputs list; inspect_history shows the first output and "(and 2 other
     * completions)" */
    dspy_json *e = dspy_history_at(dspy_lm_history(lm), 0);
    CHECK_DUMP(dspy_json_get(e, "outputs"), "[\"a\",\"b\",\"a\"]");
    CHECK_DUMP(dspy_json_get(e, "kwargs"), "{\"n\":3}");
    CHECK_STR(dspy_json_str_or(e, "model", NULL), "dummy");
    CHECK_STR(dspy_json_str_or(e, "model_type", NULL), "chat");
    CHECK(dspy_json_get(e, "prompt") && dspy_json_typeof(dspy_json_get(e, "prompt")) == DSPY_JSON_NULL);
    const char *ts = dspy_json_str_or(e, "timestamp", "");
    CHECK(strlen(ts) == 26 || strlen(ts) == 19); /* 2025-01-08T12:39:42[.143798] */
    CHECK(ts[4] == '-' && ts[10] == 'T' && ts[13] == ':');
    CHECK_INT(strlen(dspy_json_str_or(e, "uuid", "")), 36);
    dspy_json_decref(e);
    FILE *f = tmpfile();
    CHECK_OK(dspy_lm_inspect_history(lm, 1, f));
    rewind(f);
    char buf[512] = {0};
    size_t nread = fread(buf, 1, sizeof buf - 1, f);
    buf[nread] = '\0';
    fclose(f);
    CHECK_CONTAINS(buf, "User message:\n\nWhat is the capital of France?\n\n\nResponse:\n\na\n\n \t (and 2 other completions)\n");
    dspy_json_decref(kw);
    dspy_lm_free(lm);
    dspy_json_decref(replies);
    dspy_json_decref(m);
}

static void test_scripted_files(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/script.json", test_tmpdir());
    const char *spec = "{\"match\":{\"France\":{\"answer\":\"Paris\"},\"Italy\":\"[[ ## answer ## ]]\\nRome\"},"
                       "\"usage\":{\"prompt_tokens\":3,\"total_tokens\":4}}";
    CHECK_OK(dspy_write_file(path, spec, strlen(spec)));
    char model[1100];
    snprintf(model, sizeof model, "scripted:%s", path);
    dspy_lm *lm = new_lm(model, NULL);
    CHECK(!dspy_lm_cache_enabled(lm));
    dspy_json *m = question("capital of Italy?");
    dspy_lm_response *r = NULL;
    CHECK_OK(dspy_lm_call(lm, m, NULL, &r));
    if (r) CHECK_STR(r->choices[0].text, "[[ ## answer ## ]]\nRome");
    if (r) CHECK_DUMP(r->usage, "{\"prompt_tokens\":3,\"total_tokens\":4}");
    dspy_lm_response_free(r);
    dspy_json_decref(m);
    m = question("capital of France?");
    CHECK_OK(dspy_lm_call(lm, m, NULL, &r));
    if (r) CHECK_STR(r->choices[0].text, "[[ ## answer ## ]]\nParis");
    dspy_lm_response_free(r);
    dspy_json_decref(m);
    dspy_json *u = dspy_lm_usage(lm);
    CHECK_DUMP(u, "{\"prompt_tokens\":6,\"total_tokens\":8}");
    dspy_json_decref(u);
    dspy_lm_usage_reset(lm);
    u = dspy_lm_usage(lm);
    CHECK_DUMP(u, "{}");
    dspy_json_decref(u);
    m = question("capital of Spain?");
    CHECK_STATUS(dspy_lm_call(lm, m, NULL, &r), DSPY_ERR_STATE);
    CHECK_CONTAINS(dspy_errmsg(), "no reply key occurs");
    dspy_json_decref(m);
    dspy_lm_free(lm);

    const char *bad = "{\"replies\":[1]}";
    CHECK_OK(dspy_write_file(path, bad, strlen(bad)));
    CHECK_STATUS(dspy_lm_new(model, NULL, &lm), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "reply 0 must be a string or an object");
    const char *notjson = "[\"a\",";
    CHECK_OK(dspy_write_file(path, notjson, strlen(notjson)));
    CHECK_STATUS(dspy_lm_new(model, NULL, &lm), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), path);
}

typedef struct cb_log {
    pthread_mutex_t lock;
    int starts, ends, errors;
    char start_id[33], end_id[33];
    char order[16];
} cb_log;

static void on_start(void *u, const char *id, dspy_lm *lm, const dspy_json *messages, const dspy_json *kwargs) {
    cb_log *l = u;
    (void)lm;
    (void)kwargs;
    pthread_mutex_lock(&l->lock);
    l->starts++;
    snprintf(l->start_id, sizeof l->start_id, "%s", id);
    strncat(l->order, dspy_json_size(messages) ? "s" : "?", sizeof l->order - strlen(l->order) - 1);
    pthread_mutex_unlock(&l->lock);
}

static void on_end(void *u, const char *id, const dspy_lm_response *r, dspy_status st, const char *err) {
    cb_log *l = u;
    pthread_mutex_lock(&l->lock);
    l->ends++;
    if (st) {
        l->errors++;
        if (!r && err && strstr(err, "replies have been used")) strncat(l->order, "x", sizeof l->order - strlen(l->order) - 1);
    } else {
        strncat(l->order, r && r->n ? "e" : "?", sizeof l->order - strlen(l->order) - 1);
    }
    snprintf(l->end_id, sizeof l->end_id, "%s", id);
    pthread_mutex_unlock(&l->lock);
}

static void test_callbacks_and_history_switches(void) {
    dspy_json *replies = parse("[\"one\"]");
    dspy_lm_params p = dspy_lm_params_default();
    p.max_history_size = 2;
    dspy_lm *lm = NULL;
    CHECK_OK(dspy_lm_new_scripted(replies, false, &p, &lm));
    cb_log log;
    memset(&log, 0, sizeof log);
    pthread_mutex_init(&log.lock, NULL);
    dspy_lm_callbacks cb = {&log, on_start, on_end};
    CHECK_OK(dspy_lm_add_callbacks(lm, &cb));
    dspy_json *m = question("q");
    dspy_lm_response *r = NULL;
    CHECK_OK(dspy_lm_call(lm, m, NULL, &r));
    dspy_lm_response_free(r);
    CHECK_INT(log.starts, 1);
    CHECK_INT(log.ends, 1);
    CHECK_INT(strlen(log.start_id), 32);
    CHECK_STR(log.start_id, log.end_id);
    char first_id[33];
    memcpy(first_id, log.start_id, sizeof first_id);
    CHECK_STATUS(dspy_lm_call(lm, m, NULL, &r), DSPY_ERR_STATE);
    CHECK_CONTAINS(dspy_errmsg(), "replies have been used"); /* the message survives the callbacks */
    CHECK_STR(log.order, "sesx");
    CHECK_INT(log.errors, 1);
    CHECK(strcmp(first_id, log.start_id) != 0);
    /* copies share the callbacks */
    dspy_lm *c = NULL;
    CHECK_OK(dspy_lm_copy(lm, NULL, &c));
    CHECK_STATUS(dspy_lm_call(c, m, NULL, &r), DSPY_ERR_STATE); /* shares the (used-up) script */
    CHECK_INT(log.starts, 3);
    dspy_lm_free(c);
    dspy_lm_free(lm);
    dspy_json_decref(replies);

    /* max_history_size bounds lm.history; disabling history records nothing anywhere */
    replies = parse("[\"x\"]");
    CHECK_OK(dspy_lm_new_scripted(replies, true, &p, &lm));
    dspy_history *g = dspy_history_global();
    dspy_history_clear(g);
    for (int i = 0; i < 5; i++) {
        CHECK_OK(dspy_lm_call(lm, m, NULL, &r));
        dspy_lm_response_free(r);
    }
    CHECK_INT(dspy_history_len(dspy_lm_history(lm)), 2);
    CHECK_INT(dspy_history_len(g), 5);
    dspy_history_set_enabled(false);
    CHECK_OK(dspy_lm_call(lm, m, NULL, &r));
    dspy_lm_response_free(r);
    dspy_history_set_enabled(true);
    CHECK_INT(dspy_history_len(g), 5);
    dspy_lm_free(lm);
    p.max_history_size = 0;
    CHECK_OK(dspy_lm_new_scripted(replies, true, &p, &lm));
    CHECK_OK(dspy_lm_call(lm, m, NULL, &r));
    dspy_lm_response_free(r);
    CHECK_INT(dspy_history_len(dspy_lm_history(lm)), 0);
    CHECK_INT(dspy_history_len(g), 6);
    dspy_lm_free(lm);
    /* V26 history entries hold the merged kwargs (without api_*), V33 only the call's */
    p = dspy_lm_params_default();
    p.profile = DSPY_LM_V26;
    dspy_json *lmkw = parse("{\"api_key\":\"sk-hidden\"}"), *callkw = parse("{\"n\":1}");
    p.kwargs = lmkw;
    CHECK_OK(dspy_lm_new_scripted(replies, true, &p, &lm));
    CHECK_OK(dspy_lm_call(lm, m, callkw, &r));
    dspy_lm_response_free(r);
    dspy_json *e = dspy_history_at(dspy_lm_history(lm), 0);
    CHECK_DUMP(dspy_json_get(e, "kwargs"), "{\"temperature\":0.0,\"max_tokens\":1000,\"n\":1}");
    dspy_json_decref(e);
    dspy_lm_free(lm);
    dspy_json_decref(lmkw);
    dspy_json_decref(callkw);
    dspy_history_clear(g);
    dspy_json_decref(replies);
    dspy_json_decref(m);
    pthread_mutex_destroy(&log.lock);
}

static dspy_status echo_fn(void *user, const dspy_json *messages, const dspy_json *kwargs, int32_t choice, char **text) {
    (void)user;
    (void)kwargs;
    const char *q = dspy_json_str(dspy_json_get(dspy_json_at(messages, 0), "content"));
    dspy_str s = DSPY_STR_INIT;
    dspy_str_appendf(&s, "%s#%d", q ? q : "?", choice);
    *text = dspy_str_take(&s);
    return DSPY_OK;
}

typedef struct th_arg {
    dspy_lm *lm;
    int id, ok;
} th_arg;

static void *caller(void *a) {
    th_arg *t = a;
    for (int i = 0; i < 50; i++) {
        char q[32], want[40];
        snprintf(q, sizeof q, "t%d-%d", t->id, i);
        snprintf(want, sizeof want, "%s#0", q);
        dspy_json *m = question(q);
        dspy_lm_response *r = NULL;
        if (dspy_lm_call(t->lm, m, NULL, &r) == DSPY_OK && r->n == 1 && strcmp(r->choices[0].text, want) == 0) t->ok++;
        dspy_lm_response_free(r);
        dspy_json_decref(m);
    }
    return NULL;
}

static void test_scripted_fn_threads(void) {
    dspy_lm *lm = NULL;
    CHECK_OK(dspy_lm_new_scripted_fn(echo_fn, NULL, NULL, &lm));
    pthread_t th[8];
    th_arg a[8];
    for (int i = 0; i < 8; i++) {
        a[i] = (th_arg){lm, i, 0};
        pthread_create(&th[i], NULL, caller, &a[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        CHECK_INT(a[i].ok, 50);
    }
    CHECK_INT(dspy_history_len(dspy_lm_history(lm)), 400);
    dspy_lm_free(lm);
    dspy_history_clear(dspy_history_global());
}

int main(void) {
    RUN(test_kwargs_layout);
    RUN(test_reasoning_and_errors);
    RUN(test_dump_load_state);
    RUN(test_request_keys);
    RUN(test_usage_merge);
    RUN(test_scripted);
    RUN(test_scripted_files);
    RUN(test_callbacks_and_history_switches);
    RUN(test_scripted_fn_threads);
    return check_summary("test_lm");
}
