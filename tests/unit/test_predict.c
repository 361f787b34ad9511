/* test_predict.c — Predict, ChainOfThought, Prediction, settings and callbacks end to end with
 * scripted LMs: conformance CC-20 (messages, repr, trace, max_trace_size, trace=None, the
 * temperature rule, the positional-call error, multi-output, the 14-call callback order),
 * CC-02 (ChainOfThought signature, named predictors, answer), CC-28 (Prediction rows), CC-19
 * through a module (fallback then AdapterParseError; LM errors without fallback), LM
 * assignment, deepcopy/reset_copy, contexts, and 8 threads calling one Predict. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/log.h"
#include "dspy/module.h"
#include "dspy/settings.h"
#include "tutorial_fixture.h"

static const char k_question[] = "What is the capital of France?";

static dspy_lm *scripted(const char *replies_json, bool cycle) {
    dspy_lm *lm = NULL;
    dspy_json *r = J(replies_json);
    CHECK_OK(dspy_lm_new_scripted(r, cycle, NULL, &lm));
    dspy_json_decref(r);
    return lm;
}

static dspy_json *question(const char *q) {
    dspy_json *in = dspy_json_object();
    dspy_json_set_str(in, "question", q);
    return in;
}

static char *compact(const dspy_json *v) { return v ? dspy_json_dumps(v, DSPY_JSON_COMPACT) : NULL; }

/* ---- a recording provider posing as openai/gpt-4o-mini --------------------------------------- */

typedef struct recorder {
    pthread_mutex_t lock;
    const char *reply;      /* content of every choice */
    dspy_status fail_with;  /* non-zero: every call fails */
    int calls;
    dspy_json *requests[8];
} recorder;

static dspy_status rec_complete(void *impl, dspy_lm *lm, const dspy_json *request, dspy_json **out) {
    (void)lm;
    recorder *r = impl;
    *out = NULL;
    pthread_mutex_lock(&r->lock);
    int k = r->calls++;
    if (k < 8) r->requests[k] = dspy_json_copy(request);
    pthread_mutex_unlock(&r->lock);
    if (r->fail_with) return dspy_fail(r->fail_with, "[openai/gpt-4o-mini] RateLimitError: HTTP 429 Too Many Requests");
    int64_t n = dspy_json_int_or(request, "n", 1);
    dspy_json *resp = dspy_json_object(), *choices = dspy_json_array();
    for (int64_t i = 0; i < n; i++) {
        dspy_json *c = dspy_json_object(), *msg = dspy_json_object();
        dspy_json_set_str(msg, "content", r->reply);
        dspy_json_set(c, "message", msg);
        dspy_json_set_str(c, "finish_reason", "stop");
        dspy_json_append(choices, c);
    }
    dspy_json_set(resp, "choices", choices);
    dspy_json_set(resp, "usage", dspy_json_object());
    dspy_json_set_str(resp, "model", "gpt-4o-mini");
    *out = resp;
    return DSPY_OK;
}

static void rec_free(void *impl) {
    recorder *r = impl;
    for (int i = 0; i < 8; i++) dspy_json_decref(r->requests[i]);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

static const dspy_lm_provider k_rec_provider = {"recorder", rec_complete, rec_free};

static dspy_lm *recording_lm(const char *reply, dspy_status fail_with, const char *kwargs_json, recorder **rec) {
    recorder *r = calloc(1, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    r->reply = reply;
    r->fail_with = fail_with;
    *rec = r;
    dspy_lm_params p = dspy_lm_params_default();
    p.cache = 0;
    dspy_json *kw = kwargs_json ? J(kwargs_json) : NULL;
    p.kwargs = kw;
    dspy_lm *lm = NULL;
    CHECK_OK(dspy_lm_new_custom("openai/gpt-4o-mini", &p, &k_rec_provider, r, &lm));
    dspy_json_decref(kw);
    return lm;
}

/* ---- CC-20 ---------------------------------------------------------------------------------- */

static const char k_cc20_messages[] =
    "[{\"role\": \"system\", \"content\": \"Your input fields are:\\n1. `question` (str):\\nYour output fields "
    "are:\\n1. `answer` (str):\\nAll interactions will be structured in the following way, with the appropriate "
    "values filled in.\\n\\n[[ ## question ## ]]\\n{question}\\n\\n[[ ## answer ## ]]\\n{answer}\\n\\n[[ ## "
    "completed ## ]]\\nIn adhering to this structure, your objective is: \\n        Given the fields `question`, "
    "produce the fields `answer`.\"}, {\"role\": \"user\", \"content\": \"[[ ## question ## ]]\\nWhat is the "
    "capital of France?\\n\\nRespond with the corresponding output fields, starting with the field `[[ ## answer "
    "## ]]`, and then ending with the marker for `[[ ## completed ## ]]`.\"}]";

static void test_cc20_predict_end_to_end(void) {
    dspy_settings_reset();
    dspy_lm *lm = scripted("[{\"answer\": \"Paris\"}]", false);
    dspy_settings_set_lm(lm);
    dspy_module *p = NULL;
    CHECK_OK(dspy_predict_new_text("question -> answer", NULL, NULL, &p));
    CHECK_STR(dspy_module_type_name(p), "Predict");
    dspy_json *in = question(k_question);
    dspy_prediction *pred = NULL;
    CHECK_OK(dspy_module_call(p, in, NULL, &pred));
    CHECK_STR(dspy_prediction_get_str(pred, "answer"), "Paris");
    char *repr = NULL;
    CHECK_OK(dspy_prediction_repr(pred, &repr));
    CHECK_STR(repr, "Prediction(\n    answer='Paris'\n)");
    free(repr);
    CHECK_INT(dspy_prediction_n_completions(pred), 1);

    /* the messages sent, exactly */
    dspy_json *entry = dspy_history_at(dspy_lm_history(lm), 0);
    dspy_json *want = J(k_cc20_messages);
    CHECK(entry && dspy_json_equal(dspy_json_get(entry, "messages"), want));
    char *got = entry ? dspy_json_dumps(dspy_json_get(entry, "messages"), DSPY_JSON_PY) : NULL;
    CHECK_STR(got, k_cc20_messages);
    free(got);
    dspy_json_decref(want);
    dspy_json_decref(entry);

    /* settings.trace[-1] == (predict, {"question": ...}, pred) */
    dspy_trace *tr = dspy_settings_trace();
    CHECK(tr != NULL);
    CHECK_INT(dspy_trace_len(tr), 1);
    dspy_trace_entry e;
    CHECK_OK(dspy_trace_get(tr, -1, &e));
    CHECK(e.predictor == p);
    CHECK(e.prediction == pred);
    char *ins = compact(e.inputs);
    CHECK_STR(ins, "{\"question\":\"What is the capital of France?\"}");
    free(ins);
    dspy_trace_entry_clear(&e);
    CHECK_STATUS(dspy_trace_get(tr, 1, &e), DSPY_ERR_ARG);
    dspy_trace_free(tr);

    /* the scripted LM is used up: its DSPY_ERR_STATE comes back */
    dspy_call_options o = dspy_call_options_default();
    o.no_trace = true;
    dspy_prediction *p2 = NULL;
    CHECK_STATUS(dspy_module_call(p, in, &o, &p2), DSPY_ERR_STATE);
    CHECK(p2 == NULL);
    dspy_prediction_free(pred);
    dspy_json_decref(in);
    dspy_module_free(p);
    dspy_lm_free(lm);
    dspy_settings_reset();
}

static void test_cc20_trace_limits(void) {
    dspy_settings_reset();
    dspy_lm *lm = scripted("[{\"answer\": \"Paris\"}]", true);
    dspy_module *p = NULL;
    CHECK_OK(dspy_predict_new_text("question -> answer", NULL, NULL, &p));
    CHECK_OK(dspy_module_set_lm(p, lm));
    dspy_json *in = question(k_question);

    /* max_trace_size=3 with 10 calls: the last 3 are kept */
    dspy_trace *fresh = NULL;
    CHECK_OK(dspy_trace_new(&fresh));
    dspy_context *ctx = NULL;
    CHECK_OK(dspy_context_new(&ctx));
    dspy_context_set_trace(ctx, fresh);
    dspy_context_set_max_trace_size(ctx, 3);
    CHECK_OK(dspy_context_push(ctx));
    dspy_prediction *last = NULL;
    for (int i = 0; i < 10; i++) {
        dspy_prediction *pr = NULL;
        CHECK_OK(dspy_module_call(p, in, NULL, &pr));
        dspy_prediction_free(last);
        last = pr;
    }
    CHECK_INT(dspy_trace_len(fresh), 3);
    dspy_trace_entry e;
    CHECK_OK(dspy_trace_get(fresh, -1, &e));
    CHECK(e.prediction == last);
    dspy_trace_entry_clear(&e);
    dspy_prediction_free(last);
    CHECK_OK(dspy_context_pop(ctx));
    dspy_context_free(ctx);
    /* the global trace was not touched */
    dspy_trace *g = dspy_settings_trace();
    CHECK_INT(dspy_trace_len(g), 0);

    /* trace=None: nothing is recorded */
    CHECK_OK(dspy_context_new(&ctx));
    dspy_context_set_trace(ctx, NULL);
    CHECK_OK(dspy_context_push(ctx));
    CHECK(dspy_settings_trace() == NULL);
    dspy_prediction *pr = NULL;
    CHECK_OK(dspy_module_call(p, in, NULL, &pr));
    dspy_prediction_free(pr);
    CHECK_OK(dspy_context_pop(ctx));
    dspy_context_free(ctx);
    CHECK_INT(dspy_trace_len(g), 0);
    CHECK_INT(dspy_trace_len(fresh), 3);

    /* no_trace (_trace=False) skips the append */
    dspy_call_options nt = dspy_call_options_default();
    nt.no_trace = true;
    CHECK_OK(dspy_module_call(p, in, &nt, &pr));
    dspy_prediction_free(pr);
    CHECK_INT(dspy_trace_len(g), 0);

    /* max_trace_size 0 records nothing either */
    dspy_settings_set_max_trace_size(0);
    CHECK_OK(dspy_module_call(p, in, NULL, &pr));
    dspy_prediction_free(pr);
    CHECK_INT(dspy_trace_len(g), 0);
    dspy_settings_set_max_trace_size(10000);
    CHECK_OK(dspy_module_call(p, in, NULL, &pr));
    dspy_prediction_free(pr);
    CHECK_INT(dspy_trace_len(g), 1);

    dspy_trace_free(g);
    dspy_trace_free(fresh);
    dspy_json_decref(in);
    dspy_module_free(p);
    dspy_lm_free(lm);
    dspy_settings_reset();
}

/* The request kwargs of call k as compact JSON, without model/messages. */
static char *request_kwargs(recorder *r, int k) {
    if (k >= r->calls || !r->requests[k]) return NULL;
    dspy_json *c = dspy_json_copy(r->requests[k]);
    dspy_json_del(c, "model");
    dspy_json_del(c, "messages");
    char *s = dspy_json_dumps(c, DSPY_JSON_COMPACT | DSPY_JSON_SORT_KEYS);
    dspy_json_decref(c);
    return s;
}

static void test_cc20_temperature_rule(void) {
    dspy_settings_reset();
    recorder *r;
    dspy_lm *lm = recording_lm("[[ ## answer ## ]]\nParis", 0, NULL, &r);
    dspy_json *in = question(k_question), *cfg = J("{\"n\": 2}");
    dspy_predict_params pp = dspy_predict_params_default();
    pp.config = cfg;
    dspy_module *p = NULL;
    CHECK_OK(dspy_predict_new_text("question -> answer", NULL, &pp, &p));
    CHECK_OK(dspy_module_set_lm(p, lm));
    dspy_prediction *pred = NULL;
    CHECK_OK(dspy_module_call(p, in, NULL, &pred));
    char *kw = request_kwargs(r, 0);
    CHECK_STR(kw, "{\"max_tokens\":null,\"n\":2,\"temperature\":0.7}");
    free(kw);
    CHECK_INT(dspy_prediction_n_completions(pred), 2);
    dspy_prediction_free(pred);
    /* the predictor's config itself is not changed */
    char *c = compact(dspy_predict_config(p));
    CHECK_STR(c, "{\"n\":2}");
    free(c);

    /* a per-call config: temperature 0.5 > 0.15 is kept; n=1 adds nothing */
    dspy_json *over = J("{\"temperature\": 0.5, \"n\": 3}");
    dspy_call_options o = dspy_call_options_default();
    o.config = over;
    CHECK_OK(dspy_module_call(p, in, &o, &pred));
    kw = request_kwargs(r, 1);
    CHECK_STR(kw, "{\"max_tokens\":null,\"n\":3,\"temperature\":0.5}");
    free(kw);
    dspy_prediction_free(pred);
    dspy_json_decref(over);
    over = J("{\"n\": 1}");
    o.config = over;
    CHECK_OK(dspy_module_call(p, in, &o, &pred));
    kw = request_kwargs(r, 2);
    CHECK_STR(kw, "{\"max_tokens\":null,\"n\":1,\"temperature\":null}");
    free(kw);
    dspy_prediction_free(pred);
    dspy_json_decref(over);
    dspy_module_free(p);
    dspy_lm_free(lm);

    /* `or` semantics (V33): config temperature 0.0 falls through to the LM's 0.9 -> unchanged;
     * V26 read `is None` and so raises it to 0.7 */
    dspy_lm *hot = recording_lm("[[ ## answer ## ]]\nParis", 0, "{\"temperature\": 0.9}", &r);
    dspy_json *cfg0 = J("{\"n\": 2, \"temperature\": 0.0}");
    pp.config = cfg0;
    CHECK_OK(dspy_predict_new_text("question -> answer", NULL, &pp, &p));
    CHECK_OK(dspy_module_set_lm(p, hot));
    CHECK_OK(dspy_module_call(p, in, NULL, &pred));
    dspy_prediction_free(pred);
    kw = request_kwargs(r, 0);
    CHECK_STR(kw, "{\"max_tokens\":null,\"n\":2,\"temperature\":0.0}");
    free(kw);
    dspy_module_free(p);
    pp.profile = DSPY_PROFILE_V26;
    CHECK_OK(dspy_predict_new_text("question -> answer", NULL, &pp, &p));
    CHECK_OK(dspy_module_set_lm(p, hot));
    CHECK_OK(dspy_module_call(p, in, NULL, &pred));
    dspy_prediction_free(pred);
    kw = request_kwargs(r, 1);
    CHECK_STR(kw, "{\"max_tokens\":null,\"n\":2,\"temperature\":0.7}");
    free(kw);
    dspy_module_free(p);
    dspy_lm_free(hot);

    /* n from the LM's kwargs (num_generations) also triggers the rule */
    dspy_lm *gen = recording_lm("[[ ## answer ## ]]\nParis", 0, "{\"num_generations\": 4}", &r);
    CHECK_OK(dspy_predict_new_text("question -> answer", NULL, NULL, &p));
    CHECK_OK(dspy_module_set_lm(p, gen));
    CHECK_OK(dspy_module_call(p, in, NULL, &pred));
    dspy_prediction_free(pred);
    kw = request_kwargs(r, 0);
    CHECK_STR(kw, "{\"max_tokens\":null,\"num_generations\":4,\"temperature\":0.7}");
    free(kw);
    dspy_module_free(p);
    dspy_lm_free(gen);
    dspy_json_decref(cfg0);
    dspy_json_decref(cfg);
    dspy_json_decref(in);
    dspy_settings_reset();
}

static void test_cc20_positional_and_no_lm(void) {
    dspy_settings_reset();
    dspy_module *p = NULL;
    CHECK_OK(dspy_predict_new_text("a -> b", NULL, NULL, &p));
    dspy_json *x = J("\"x\"");
    dspy_prediction *pred = (dspy_prediction *)1;
    CHECK_STATUS(dspy_module_call(p, x, NULL, &pred), DSPY_ERR_ARG);
    CHECK(pred == NULL);
    CHECK_STR(dspy_errmsg(), "Positional arguments are not allowed when calling `dspy.Predict`, must use keyword "
                             "arguments that match your signature input fields: 'a'. For example: "
                             "`predict(a=input_value, ...)`.");
    CHECK_STATUS(dspy_module_call(p, NULL, NULL, &pred), DSPY_ERR_ARG);
    dspy_json_decref(x);
    /* no LM anywhere */
    dspy_json *in = J("{\"a\": \"x\"}");
    CHECK_STATUS(dspy_module_call(p, in, NULL, &pred), DSPY_ERR_STATE);
    CHECK(strncmp(dspy_errmsg(), "No LM is loaded. Please configure the LM using `dspy.configure(lm=dspy.LM(...))`.",
                  81) == 0);
    dspy_json_decref(in);
    dspy_module_free(p);
}

static void test_cc20_multi_output(void) {
    dspy_settings_reset();
    dspy_lm *lm = scripted("[\"[[ ## answer1 ## ]]\\nmy first answer\\n\\n[[ ## answer2 ## ]]\\nmy second answer\"]", false);
    dspy_module *p = NULL;
    CHECK_OK(dspy_predict_new_text("question -> answer1, answer2", NULL, NULL, &p));
    dspy_json *in = question(k_question);
    dspy_call_options o = dspy_call_options_default();
    o.lm = lm; /* lm= as a call keyword */
    dspy_prediction *pred = NULL;
    CHECK_OK(dspy_module_call(p, in, &o, &pred));
    CHECK_STR(dspy_prediction_get_str(pred, "answer1"), "my first answer");
    CHECK_STR(dspy_prediction_get_str(pred, "answer2"), "my second answer");
    CHECK_STR(dspy_prediction_key(pred, 0), "answer1");
    CHECK_STR(dspy_prediction_key(pred, 1), "answer2");
    CHECK(dspy_predict_lm(p) == NULL); /* the call's LM is not stored */
    dspy_prediction_free(pred);
    dspy_json_decref(in);
    dspy_module_free(p);
    dspy_lm_free(lm);
    dspy_settings_reset();
}

/* ---- callbacks (CC-20: 14 calls for CoT n=3) ------------------------------------------------ */

typedef struct events {
    pthread_mutex_t lock;
    char names[64][32];
    char ids[64][33];
    const void *objs[64];
    int n;
    int ends_with_error;
    char last_error[256];
} events;

static void ev_add(events *e, const char *name, const char *id, const void *obj) {
    pthread_mutex_lock(&e->lock);
    if (e->n < 64) {
        snprintf(e->names[e->n], sizeof e->names[0], "%s", name);
        snprintf(e->ids[e->n], sizeof e->ids[0], "%s", id);
        e->objs[e->n] = obj;
        e->n++;
    }
    pthread_mutex_unlock(&e->lock);
    dspy_fail(DSPY_ERR_IO, "a callback wrote its own error"); /* must not leak to the caller */
}

static void ev_end_error(events *e, dspy_status st, const char *error) {
    if (!st) return;
    pthread_mutex_lock(&e->lock);
    e->ends_with_error++;
    snprintf(e->last_error, sizeof e->last_error, "%s", error ? error : "(null)");
    pthread_mutex_unlock(&e->lock);
}

static void on_module_start(void *u, const char *id, dspy_module *m, const dspy_json *in) {
    (void)in;
    ev_add(u, "on_module_start", id, m);
}
static void on_module_end(void *u, const char *id, const dspy_prediction *out, dspy_status st, const char *err) {
    ev_end_error(u, st, err);
    ev_add(u, "on_module_end", id, out);
}
static void on_format_start(void *u, const char *id, dspy_adapter_kind a, const dspy_signature *s, const dspy_json *d,
                            const dspy_json *in) {
    (void)s, (void)d, (void)in;
    ev_add(u, a == DSPY_ADAPTER_CHAT ? "on_adapter_format_start" : "on_adapter_format_start(json)", id, NULL);
}
static void on_format_end(void *u, const char *id, const dspy_json *msgs, dspy_status st, const char *err) {
    ev_end_error(u, st, err);
    ev_add(u, "on_adapter_format_end", id, msgs);
}
static void on_parse_start(void *u, const char *id, dspy_adapter_kind a, const dspy_signature *s, const char *c) {
    (void)a, (void)s, (void)c;
    ev_add(u, "on_adapter_parse_start", id, NULL);
}
static void on_parse_end(void *u, const char *id, const dspy_json *f, dspy_status st, const char *err) {
    ev_end_error(u, st, err);
    ev_add(u, "on_adapter_parse_end", id, f);
}
static void on_lm_start(void *u, const char *id, dspy_lm *lm, const dspy_json *m, const dspy_json *k) {
    (void)m, (void)k;
    ev_add(u, "on_lm_start", id, lm);
}
static void on_lm_end(void *u, const char *id, const dspy_lm_response *r, dspy_status st, const char *err) {
    ev_end_error(u, st, err);
    ev_add(u, "on_lm_end", id, r);
}

static dspy_callbacks all_callbacks(events *e) {
    dspy_callbacks cb = {.user = e,
                         .on_module_start = on_module_start,
                         .on_module_end = on_module_end,
                         .on_adapter_format_start = on_format_start,
                         .on_adapter_format_end = on_format_end,
                         .on_adapter_parse_start = on_parse_start,
                         .on_adapter_parse_end = on_parse_end,
                         .on_lm_start = on_lm_start,
                         .on_lm_end = on_lm_end};
    return cb;
}

static void test_cc20_callback_order(void) {
    dspy_settings_reset();
    events ev = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dspy_callbacks cb = all_callbacks(&ev);
    CHECK_OK(dspy_settings_set_callbacks(&cb, 1));
    dspy_lm *lm = scripted("[{\"reasoning\": \"r1\", \"answer\": \"a1\"}, {\"reasoning\": \"r2\", \"answer\": \"a2\"}, "
                           "{\"reasoning\": \"r3\", \"answer\": \"a3\"}]", false);
    dspy_settings_set_lm(lm);
    dspy_json *cfg = J("{\"n\": 3}");
    dspy_predict_params pp = dspy_predict_params_default();
    pp.config = cfg;
    dspy_module *cot = NULL;
    CHECK_OK(dspy_chain_of_thought_new_text("question -> answer", NULL, &pp, &cot));
    dspy_module *inner = dspy_module_child(cot, "predict");
    dspy_json *in = question(k_question);
    dspy_prediction *pred = NULL;
    CHECK_OK(dspy_module_call(cot, in, NULL, &pred));
    static const char *const want[14] = {
        "on_module_start", "on_module_start", "on_adapter_format_start", "on_adapter_format_end",
        "on_lm_start", "on_lm_end", "on_adapter_parse_start", "on_adapter_parse_end",
        "on_adapter_parse_start", "on_adapter_parse_end", "on_adapter_parse_start", "on_adapter_parse_end",
        "on_module_end", "on_module_end"};
    CHECK_INT(ev.n, 14);
    for (int i = 0; i < 14 && i < ev.n; i++) CHECK_STR(ev.names[i], want[i]);
    /* pairs share a call id; module starts name CoT then Predict; ends close Predict then CoT */
    CHECK(ev.objs[0] == cot && ev.objs[1] == inner);
    CHECK_STR(ev.ids[0], ev.ids[13]);
    CHECK_STR(ev.ids[1], ev.ids[12]);
    CHECK_STR(ev.ids[2], ev.ids[3]);
    CHECK_STR(ev.ids[4], ev.ids[5]);
    CHECK_STR(ev.ids[6], ev.ids[7]);
    CHECK(strcmp(ev.ids[0], ev.ids[1]) != 0 && strcmp(ev.ids[6], ev.ids[8]) != 0);
    CHECK_INT(strlen(ev.ids[0]), 32);
    CHECK(ev.objs[4] == lm);
    CHECK(ev.objs[12] == pred && ev.objs[13] == pred);

    /* n > 1: all completions are kept, the fields are the first's */
    CHECK_STR(dspy_prediction_get_str(pred, "reasoning"), "r1");
    CHECK_STR(dspy_prediction_get_str(pred, "answer"), "a1");
    CHECK_INT(dspy_prediction_n_completions(pred), 3);
    char *s = compact(dspy_json_get(dspy_prediction_completions(pred), "answer"));
    CHECK_STR(s, "[\"a1\",\"a2\",\"a3\"]");
    free(s);
    CHECK_OK(dspy_prediction_repr(pred, &s));
    CHECK_STR(s, "Prediction(\n    reasoning='r1',\n    answer='a1',\n    completions=Completions(...)\n) "
                 "(2 completions omitted)");
    free(s);
    dspy_prediction *third = NULL;
    CHECK_OK(dspy_prediction_completion(pred, 2, &third));
    CHECK_STR(dspy_prediction_get_str(third, "answer"), "a3");
    dspy_prediction_free(third);
    dspy_prediction_free(pred);

    /* instance callbacks run after the settings' ones, for that module only */
    events mine = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dspy_callbacks cb2 = {.user = &mine, .on_module_start = on_module_start, .on_module_end = on_module_end};
    CHECK_OK(dspy_module_add_callbacks(inner, &cb2));
    ev.n = 0;
    /* a failing call (the LM is used up): ends get the status and message; the caller gets the
     * LM's error, not the callbacks' */
    CHECK_STATUS(dspy_module_call(cot, in, NULL, &pred), DSPY_ERR_STATE);
    CHECK_CONTAINS(dspy_errmsg(), "dummy");
    CHECK_INT(ev.n, 8); /* module x2, format start/end, lm start/end, module_end x2: no parse */
    CHECK_STR(ev.names[5], "on_lm_end");
    CHECK_STR(ev.names[7], "on_module_end");
    CHECK_INT(mine.n, 2);
    CHECK_STR(mine.names[0], "on_module_start");
    CHECK(mine.objs[0] == inner);
    CHECK(mine.objs[1] == NULL);
    CHECK_INT(mine.ends_with_error, 1);
    CHECK_STR(mine.last_error, ev.last_error);
    CHECK_INT(ev.ends_with_error, 3); /* lm_end, module_end (Predict), module_end (CoT) */

    dspy_json_decref(cfg);
    dspy_json_decref(in);
    dspy_module_free(cot);
    dspy_lm_free(lm);
    dspy_settings_reset();
}

/* ---- CC-19 through a module ------------------------------------------------------------------- */

static void test_parse_error_after_fallback(void) {
    dspy_settings_reset();
    dspy_json *in = question("Q");
    dspy_module *p = NULL;
    CHECK_OK(dspy_predict_new_text("question -> answer", NULL, NULL, &p));
    /* a scripted LM (no response_format support): chat, then one JSONAdapter call */
    dspy_lm *dummy = scripted("[\"nonsense\"]", true);
    CHECK_OK(dspy_module_set_lm(p, dummy));
    dspy_prediction *pred = NULL;
    CHECK_STATUS(dspy_module_call(p, in, NULL, &pred), DSPY_ERR_PARSE);
    CHECK(pred == NULL);
    CHECK_CONTAINS(dspy_errmsg(), "Adapter JSONAdapter failed to parse the LM response. \n\nLM Response: nonsense");
    CHECK_INT(dspy_history_len(dspy_lm_history(dummy)), 2);
    dspy_trace *g = dspy_settings_trace();
    CHECK_INT(dspy_trace_len(g), 0); /* failures are not traced */
    dspy_trace_free(g);
    dspy_lm_free(dummy);

    /* gpt-4o-mini: chat, structured output, json_object — 3 calls, then AdapterParseError */
    recorder *r;
    dspy_lm *oai = recording_lm("nonsense", 0, NULL, &r);
    CHECK_OK(dspy_module_set_lm(p, oai));
    CHECK_STATUS(dspy_module_call(p, in, NULL, &pred), DSPY_ERR_PARSE);
    CHECK_INT(r->calls, 3);
    CHECK(r->calls == 3 && dspy_json_get(r->requests[0], "response_format") == NULL);
    CHECK(r->calls == 3 && strcmp(dspy_json_str_or(dspy_json_get(r->requests[1], "response_format"), "type", ""),
                                  "json_schema") == 0);
    CHECK(r->calls == 3 && strcmp(dspy_json_str_or(dspy_json_get(r->requests[2], "response_format"), "type", ""),
                                  "json_object") == 0);
    CHECK_STR(dspy_errmsg(), "LM response cannot be serialized to a JSON object.\n\nAdapter JSONAdapter failed to parse "
                             "the LM response. \n\nLM Response: nonsense \n\nExpected to find output fields in the LM "
                             "response: [answer] \n\n");
    dspy_lm_free(oai);

    /* use_json_adapter_fallback=False: one call */
    dspy_lm *oai2 = recording_lm("nonsense", 0, NULL, &r);
    CHECK_OK(dspy_module_set_lm(p, oai2));
    dspy_settings_set_adapter(DSPY_ADAPTER_CHAT, false);
    CHECK_STATUS(dspy_module_call(p, in, NULL, &pred), DSPY_ERR_PARSE);
    CHECK_INT(r->calls, 1);
    CHECK_CONTAINS(dspy_errmsg(), "Adapter ChatAdapter failed to parse");
    dspy_lm_free(oai2);

    /* settings.adapter = JSONAdapter answers JSON directly */
    dspy_lm *oai3 = recording_lm("{\"answer\": \"Paris\"}", 0, NULL, &r);
    CHECK_OK(dspy_module_set_lm(p, oai3));
    dspy_settings_set_adapter(DSPY_ADAPTER_JSON, true);
    CHECK_OK(dspy_module_call(p, in, NULL, &pred));
    CHECK_STR(dspy_prediction_get_str(pred, "answer"), "Paris");
    CHECK_INT(r->calls, 1);
    dspy_prediction_free(pred);
    dspy_lm_free(oai3);

    /* an LM error propagates unchanged, with no fallback call */
    dspy_settings_set_adapter(DSPY_ADAPTER_CHAT, true);
    dspy_lm *bad = recording_lm(NULL, DSPY_ERR_REMOTE, NULL, &r);
    CHECK_OK(dspy_module_set_lm(p, bad));
    CHECK_STATUS(dspy_module_call(p, in, NULL, &pred), DSPY_ERR_REMOTE);
    CHECK_STR(dspy_errmsg(), "[openai/gpt-4o-mini] RateLimitError: HTTP 429 Too Many Requests");
    CHECK_INT(r->calls, 1);
    dspy_lm_free(bad);
    dspy_json_decref(in);
    dspy_module_free(p);
    dspy_settings_reset();
}

/* ---- CC-02: ChainOfThought ------------------------------------------------------------------- */

static void test_cc02_chain_of_thought(void) {
    dspy_settings_reset();
    dspy_module *cot = NULL;
    CHECK_OK(dspy_chain_of_thought_new_text("text -> label: Literal['activate_my_card', 'age_limit']", NULL, NULL, &cot));
    CHECK_STR(dspy_module_type_name(cot), "ChainOfThought");
    dspy_named_predictor *np = NULL;
    size_t n = 0;
    CHECK_OK(dspy_module_named_predictors(cot, &np, &n));
    CHECK_INT(n, 1);
    CHECK(n == 1 && strcmp(np[0].name, "predict") == 0 && np[0].predictor == dspy_module_child(cot, "predict"));
    const dspy_signature *s = dspy_predict_signature(dspy_module_child(cot, "predict"));
    CHECK_INT(dspy_signature_n_inputs(s), 1);
    CHECK_STR(dspy_signature_field_name(s, 1), "reasoning");
    CHECK_STR(dspy_signature_field_name(s, 2), "label");
    CHECK(dspy_type_kind_of(dspy_signature_field_type(s, 1)) == DSPY_TYPE_STR);
    CHECK(dspy_type_kind_of(dspy_signature_field_type(s, 2)) == DSPY_TYPE_LITERAL);
    CHECK_STR(dspy_signature_instructions(s), "Given the fields `text`, produce the fields `label`.");
    CHECK_STR(dspy_signature_field_prefix(s, 1), "Reasoning:");
    dspy_named_predictors_free(np, n);
    dspy_module_free(cot);

    /* V26 prefix */
    dspy_predict_params pp = dspy_predict_params_default();
    pp.profile = DSPY_PROFILE_V26;
    CHECK_OK(dspy_chain_of_thought_new_text("question -> answer", NULL, &pp, &cot));
    CHECK_STR(dspy_signature_field_prefix(dspy_predict_signature(dspy_module_child(cot, "predict")), 1),
              "Reasoning: Let's think step by step in order to");
    CHECK(dspy_predict_profile(dspy_module_child(cot, "predict")) == DSPY_PROFILE_V26);
    dspy_module_free(cot);

    /* ChainOfThought("question -> answer") answers "2" */
    dspy_lm *lm = scripted("[\"[[ ## reasoning ## ]]\\nfind the number after 1\\n\\n[[ ## answer ## ]]\\n2\"]", false);
    CHECK_OK(dspy_chain_of_thought_new_text("question -> answer", NULL, NULL, &cot));
    CHECK_OK(dspy_module_set_lm(cot, lm));
    dspy_json *in = question("What is 1+1?");
    dspy_prediction *pred = NULL;
    CHECK_OK(dspy_module_call(cot, in, NULL, &pred));
    CHECK_STR(dspy_prediction_get_str(pred, "answer"), "2");
    CHECK_STR(dspy_prediction_get_str(pred, "reasoning"), "find the number after 1");
    /* the trace records the inner Predict */
    dspy_trace *g = dspy_settings_trace();
    dspy_trace_entry e;
    CHECK_OK(dspy_trace_get(g, -1, &e));
    CHECK(e.predictor == dspy_module_child(cot, "predict"));
    dspy_trace_entry_clear(&e);
    dspy_trace_free(g);
    dspy_prediction_free(pred);
    dspy_json_decref(in);
    dspy_module_free(cot);
    dspy_lm_free(lm);
    dspy_settings_reset();
}

/* ---- custom modules, named predictors, set_lm/get_lm, deepcopy ------------------------------- */

static dspy_status two_step_forward(dspy_module *self, const dspy_json *inputs, const dspy_call_options *opt,
                                    dspy_prediction **out) {
    dspy_prediction *first = NULL;
    dspy_status st = dspy_module_call(dspy_module_child(self, "draft"), inputs, opt, &first);
    if (st) return st;
    dspy_json *in2 = dspy_json_object();
    dspy_json_set(in2, "draft", dspy_json_incref((dspy_json *)dspy_prediction_get(first, "answer")));
    st = dspy_module_call(dspy_module_child(self, "refine"), in2, opt, out);
    dspy_json_decref(in2);
    dspy_prediction_free(first);
    return st;
}

static const dspy_module_vtable k_two_step = {"TwoStep", two_step_forward, NULL, NULL};

static void test_custom_module_parameters(void) {
    dspy_settings_reset();
    dspy_module *prog = NULL, *draft = NULL, *refine = NULL, *sub = NULL, *cot = NULL;
    CHECK_OK(dspy_module_new(&k_two_step, NULL, &prog));
    CHECK_OK(dspy_predict_new_text("question -> answer", NULL, NULL, &draft));
    CHECK_OK(dspy_predict_new_text("draft -> answer", NULL, NULL, &refine));
    CHECK_OK(dspy_chain_of_thought_new_text("question -> answer", NULL, NULL, &cot));
    CHECK_OK(dspy_module_new(&k_two_step, NULL, &sub));
    CHECK_OK(dspy_module_add_child(prog, "draft", draft));
    CHECK_OK(dspy_module_add_child(prog, "refine", refine));
    CHECK_OK(dspy_module_add_child(prog, "cot", cot));
    CHECK_OK(dspy_module_add_child(prog, "again", draft)); /* the same object twice: listed once */
    CHECK_OK(dspy_module_add_child(sub, "inner", refine));
    CHECK_STATUS(dspy_module_add_child(prog, "draft", refine), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_module_add_child(draft, "loop", prog), DSPY_ERR_ARG); /* would contain itself */
    dspy_named_predictor *np = NULL;
    size_t n = 0;
    CHECK_OK(dspy_module_named_predictors(prog, &np, &n));
    CHECK_INT(n, 3);
    if (n == 3) {
        CHECK_STR(np[0].name, "draft");
        CHECK_STR(np[1].name, "refine");
        CHECK_STR(np[2].name, "cot.predict");
        CHECK(np[2].predictor == dspy_module_child(cot, "predict"));
    }
    dspy_named_predictors_free(np, n);
    /* a Predict names itself "self" */
    CHECK_OK(dspy_module_named_predictors(draft, &np, &n));
    CHECK(n == 1 && strcmp(np[0].name, "self") == 0 && np[0].predictor == draft);
    dspy_named_predictors_free(np, n);
    /* compiled sub-modules are frozen */
    dspy_module_set_compiled(cot, true);
    CHECK_OK(dspy_module_named_predictors(prog, &np, &n));
    CHECK_INT(n, 2);
    dspy_named_predictors_free(np, n);
    dspy_module_set_compiled(cot, false);

    /* set_lm / get_lm */
    dspy_lm *a = scripted("[{\"answer\": \"draft 1\"}, {\"answer\": \"final\"}]", true), *b = scripted("[\"x\"]", false);
    dspy_lm *got = (dspy_lm *)1;
    CHECK_OK(dspy_module_get_lm(prog, &got)); /* all None */
    CHECK(got == NULL);
    CHECK_OK(dspy_module_set_lm(prog, a));
    CHECK_OK(dspy_module_get_lm(prog, &got));
    CHECK(got == a);
    CHECK(dspy_predict_lm(dspy_module_child(cot, "predict")) == a);
    CHECK_OK(dspy_module_set_lm(refine, b));
    CHECK_STATUS(dspy_module_get_lm(prog, &got), DSPY_ERR_STATE);
    CHECK_STR(dspy_errmsg(), "Multiple LMs are being used in the module. There's no unique LM to return.");
    CHECK_OK(dspy_module_set_lm(refine, a));

    /* a custom forward calling two predictors */
    dspy_json *in = question("Q");
    dspy_prediction *pred = NULL;
    CHECK_OK(dspy_module_call(prog, in, NULL, &pred));
    CHECK_STR(dspy_prediction_get_str(pred, "answer"), "final");
    dspy_prediction_free(pred);

    /* deepcopy: new objects, shared LM, shared children stay shared, demos copied */
    dspy_json *demos = J("[{\"question\": \"q1\", \"answer\": \"a1\"}]");
    CHECK_OK(dspy_predict_set_demos(draft, demos));
    dspy_module *copy = NULL;
    CHECK_OK(dspy_module_deepcopy(prog, &copy));
    CHECK(copy != prog);
    dspy_module *cd = dspy_module_child(copy, "draft");
    CHECK(cd != draft && dspy_module_is_predict(cd));
    CHECK(dspy_module_child(copy, "again") == cd);
    CHECK(dspy_predict_lm(cd) == a);
    CHECK(dspy_json_equal(dspy_predict_demos(cd), demos));
    CHECK_OK(dspy_predict_set_demos(draft, NULL));
    CHECK_INT(dspy_json_size(dspy_predict_demos(cd)), 1);
    CHECK_STR(dspy_module_type_name(dspy_module_child(copy, "cot")), "ChainOfThought");
    CHECK(dspy_predict_signature(cd) != dspy_predict_signature(draft));
    /* reset_copy: lm None, demos [] */
    dspy_module *fresh = NULL;
    CHECK_OK(dspy_module_reset_copy(copy, &fresh));
    CHECK(dspy_predict_lm(dspy_module_child(fresh, "draft")) == NULL);
    CHECK_INT(dspy_json_size(dspy_predict_demos(dspy_module_child(fresh, "draft"))), 0);
    CHECK(dspy_predict_lm(cd) == a);
    dspy_module_free(fresh);
    dspy_module_free(copy);

    /* calling a module built from an Example */
    dspy_example *ex = NULL, *exi = NULL;
    CHECK_OK(dspy_example_new(&ex));
    CHECK_OK(dspy_example_set_str(ex, "question", "Q"));
    CHECK_OK(dspy_example_set_str(ex, "answer", "gold"));
    const char *keys[] = {"question"};
    CHECK_OK(dspy_example_with_inputs(ex, keys, 1, &exi));
    CHECK_OK(dspy_module_call_example(draft, exi, NULL, &pred));
    dspy_trace *g = dspy_settings_trace();
    dspy_trace_entry e;
    CHECK_OK(dspy_trace_get(g, -1, &e));
    char *ins = compact(e.inputs);
    CHECK_STR(ins, "{\"question\":\"Q\"}"); /* only the input keys were passed */
    free(ins);
    dspy_trace_entry_clear(&e);
    dspy_trace_free(g);
    dspy_prediction_free(pred);
    dspy_example_free(ex);
    dspy_example_free(exi);

    dspy_json_decref(demos);
    dspy_json_decref(in);
    dspy_module_free(sub);
    dspy_module_free(cot);
    dspy_module_free(draft);
    dspy_module_free(refine);
    dspy_module_free(prog);
    dspy_lm_free(a);
    dspy_lm_free(b);
    dspy_settings_reset();
}

/* ---- Prediction (CC-28) ---------------------------------------------------------------------- */

static void test_prediction(void) {
    dspy_json *f = J("{\"reasoning\": \"r\", \"label\": \"l\"}");
    dspy_prediction *p = NULL;
    CHECK_OK(dspy_prediction_from_fields(f, &p));
    char *s = NULL;
    CHECK_OK(dspy_prediction_repr(p, &s));
    CHECK_STR(s, "Prediction(\n    reasoning='r',\n    label='l'\n)");
    free(s);
    CHECK_INT(dspy_prediction_n_completions(p), 0);
    CHECK_STATUS(dspy_prediction_completions_repr(p, &s), DSPY_ERR_STATE);
    double score;
    CHECK_STATUS(dspy_prediction_score(p, &score), DSPY_ERR_NOTFOUND);
    CHECK_STR(dspy_errmsg(), "Prediction object does not have a 'score' field to convert to float.");
    CHECK_OK(dspy_prediction_set(p, "score", dspy_json_real(0.5)));
    CHECK_OK(dspy_prediction_score(p, &score));
    CHECK(score == 0.5);
    CHECK_OK(dspy_prediction_set(p, "label", dspy_json_int(3))); /* keeps its position */
    CHECK_OK(dspy_prediction_repr(p, &s));
    CHECK_STR(s, "Prediction(\n    reasoning='r',\n    label=3,\n    score=0.5\n)");
    free(s);
    dspy_example *ex = NULL;
    CHECK_OK(dspy_prediction_to_example(p, &ex));
    CHECK_OK(dspy_example_repr(ex, &s));
    CHECK_STR(s, "Example({'reasoning': 'r', 'label': 3, 'score': 0.5}) (input_keys=None)");
    free(s);
    dspy_example_free(ex);
    dspy_prediction_free(p);
    dspy_json_decref(f);

    /* from_completions([{"answer": "a"}, {"answer": "b"}]) */
    dspy_json *c = J("[{\"answer\": \"a\"}, {\"answer\": \"b\"}]");
    CHECK_OK(dspy_prediction_from_completions(c, &p));
    CHECK_STR(dspy_prediction_get_str(p, "answer"), "a");
    s = compact(dspy_json_get(dspy_prediction_completions(p), "answer"));
    CHECK_STR(s, "[\"a\",\"b\"]");
    free(s);
    CHECK_OK(dspy_prediction_completions_repr(p, &s));
    CHECK_STR(s, "Completions(\n    answer=['a', 'b']\n)");
    free(s);
    dspy_prediction *q = NULL;
    CHECK_STATUS(dspy_prediction_completion(p, 2, &q), DSPY_ERR_ARG);
    CHECK_STR(dspy_errmsg(), "Index out of range");
    /* the dict-of-lists form gives the same prediction */
    dspy_json *d = J("{\"answer\": [\"a\", \"b\"]}");
    CHECK_OK(dspy_prediction_from_completions(d, &q));
    CHECK(dspy_prediction_equal(p, q));
    dspy_prediction_free(q);
    dspy_json_decref(d);
    d = J("{\"answer\": [\"a\", \"b\"], \"x\": [1]}");
    CHECK_STATUS(dspy_prediction_from_completions(d, &q), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "All lists must have the same length");
    dspy_json_decref(d);
    d = J("[\"not an object\"]");
    CHECK_STATUS(dspy_prediction_from_completions(d, &q), DSPY_ERR_ARG);
    dspy_json_decref(d);
    dspy_prediction_free(p);
    dspy_json_decref(c);

    /* values print as Python repr: None, True, floats, lists, quotes */
    f = J("{\"a\": null, \"b\": true, \"c\": 1e-05, \"d\": [1, \"x\"], \"e\": \"it's\"}");
    CHECK_OK(dspy_prediction_from_fields(f, &p));
    CHECK_OK(dspy_prediction_repr(p, &s));
    CHECK_STR(s, "Prediction(\n    a=None,\n    b=True,\n    c=1e-05,\n    d=[1, 'x'],\n    e=\"it's\"\n)");
    free(s);
    dspy_prediction_free(p);
    dspy_json_decref(f);
}

/* ---- settings and contexts --------------------------------------------------------------------- */

typedef struct worker_arg {
    dspy_context *ctx;
    dspy_lm *seen_lm;
    int32_t seen_threads;
    bool seen_trace_none;
} worker_arg;

static void *context_worker(void *p) {
    worker_arg *w = p;
    if (w->ctx) dspy_context_push(w->ctx);
    w->seen_lm = dspy_settings_lm();
    w->seen_threads = dspy_settings_num_threads();
    dspy_trace *t = dspy_settings_trace();
    w->seen_trace_none = t == NULL;
    dspy_trace_free(t);
    if (w->ctx) dspy_context_pop(w->ctx);
    return NULL;
}

static void test_settings_and_contexts(void) {
    dspy_settings_reset();
    CHECK_INT(dspy_settings_num_threads(), 8);
    CHECK_INT(dspy_settings_max_errors(), 10);
    CHECK_INT(dspy_settings_max_trace_size(), 10000);
    CHECK(dspy_settings_profile() == DSPY_PROFILE_V33);
    CHECK(dspy_settings_lm() == NULL);
    bool fb = false;
    CHECK(dspy_settings_adapter(&fb) == DSPY_ADAPTER_CHAT && fb);
    CHECK(!dspy_settings_disable_history());
    CHECK_STATUS(dspy_settings_set_num_threads(0), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_settings_set_max_errors(-1), DSPY_ERR_ARG);

    dspy_lm *global_lm = scripted("[\"g\"]", false), *ctx_lm = scripted("[\"c\"]", false);
    dspy_settings_set_lm(global_lm);
    dspy_context *outer = NULL, *inner = NULL;
    CHECK_OK(dspy_context_new(&outer));
    CHECK_OK(dspy_context_new(&inner));
    dspy_context_set_lm(outer, ctx_lm);
    CHECK_OK(dspy_context_set_num_threads(outer, 3));
    dspy_context_set_trace(inner, NULL);
    CHECK_OK(dspy_context_push(outer));
    CHECK_OK(dspy_context_push(inner));
    dspy_lm *l = dspy_settings_lm();
    CHECK(l == ctx_lm);
    dspy_lm_free(l);
    CHECK_INT(dspy_settings_num_threads(), 3);
    CHECK(dspy_settings_trace() == NULL);
    CHECK_INT(dspy_settings_max_errors(), 10);
    CHECK_STATUS(dspy_context_pop(outer), DSPY_ERR_STATE); /* not the innermost */

    /* a plain worker thread sees the process-wide values; one given the captured context sees
     * this thread's overrides */
    worker_arg plain = {0}, inherit = {0};
    CHECK_OK(dspy_context_capture(&inherit.ctx));
    pthread_t t1, t2;
    pthread_create(&t1, NULL, context_worker, &plain);
    pthread_create(&t2, NULL, context_worker, &inherit);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    CHECK(plain.seen_lm == global_lm && plain.seen_threads == 8 && !plain.seen_trace_none);
    CHECK(inherit.seen_lm == ctx_lm && inherit.seen_threads == 3 && inherit.seen_trace_none);
    dspy_lm_free(plain.seen_lm);
    dspy_lm_free(inherit.seen_lm);
    dspy_context_free(inherit.ctx);

    CHECK_OK(dspy_context_pop(inner));
    CHECK_OK(dspy_context_pop(outer));
    CHECK_STATUS(dspy_context_pop(outer), DSPY_ERR_STATE);
    l = dspy_settings_lm();
    CHECK(l == global_lm);
    dspy_lm_free(l);
    dspy_context_free(inner);
    dspy_context_free(outer);

    /* disable_history stops LM history */
    dspy_settings_set_disable_history(true);
    CHECK(!dspy_history_enabled());
    dspy_settings_reset();
    CHECK(dspy_history_enabled());
    CHECK(dspy_settings_lm() == NULL);
    dspy_lm_free(global_lm);
    dspy_lm_free(ctx_lm);
}

/* ---- 8 threads, one Predict ------------------------------------------------------------------- */

/* Answers "echo: <question>" for whatever question the user message carries. */
static dspy_status echo_reply(void *user, const dspy_json *messages, const dspy_json *kwargs, int32_t choice,
                              char **text) {
    (void)user, (void)kwargs, (void)choice;
    const dspy_json *last = dspy_json_at(messages, dspy_json_size(messages) - 1);
    const char *c = dspy_json_str_or(last, "content", "");
    const char *q = strstr(c, "[[ ## question ## ]]\n");
    if (!q) return dspy_fail(DSPY_ERR_STATE, "echo: no question");
    q += strlen("[[ ## question ## ]]\n");
    const char *end = strstr(q, "\n\n");
    size_t n = end ? (size_t)(end - q) : strlen(q);
    dspy_str s = DSPY_STR_INIT;
    dspy_str_append(&s, "[[ ## answer ## ]]\necho: ");
    dspy_str_appendn(&s, q, n);
    *text = dspy_str_take(&s);
    return DSPY_OK;
}

typedef struct thread_job {
    dspy_module *p;
    dspy_context *ctx;
    int id, bad;
} thread_job;

#define NTHREADS 8
#define NCALLS 25

static void *call_worker(void *arg) {
    thread_job *j = arg;
    dspy_context_push(j->ctx);
    for (int i = 0; i < NCALLS; i++) {
        char q[64], want[80];
        snprintf(q, sizeof q, "thread %d call %d", j->id, i);
        snprintf(want, sizeof want, "echo: %s", q);
        dspy_json *in = question(q);
        dspy_prediction *pred = NULL;
        if (dspy_module_call(j->p, in, NULL, &pred) || !dspy_prediction_get_str(pred, "answer") ||
            strcmp(dspy_prediction_get_str(pred, "answer"), want) != 0)
            j->bad++;
        dspy_prediction_free(pred);
        dspy_json_decref(in);
    }
    dspy_context_pop(j->ctx);
    return NULL;
}

static void test_threads_share_one_predict(void) {
    dspy_settings_reset();
    dspy_lm *lm = NULL;
    CHECK_OK(dspy_lm_new_scripted_fn(echo_reply, NULL, NULL, &lm));
    dspy_module *p = NULL;
    CHECK_OK(dspy_predict_new_text("question -> answer", NULL, NULL, &p));
    CHECK_OK(dspy_module_set_lm(p, lm));
    dspy_trace *trace = NULL;
    CHECK_OK(dspy_trace_new(&trace));
    dspy_context *mine = NULL, *captured = NULL;
    CHECK_OK(dspy_context_new(&mine));
    dspy_context_set_trace(mine, trace);
    CHECK_OK(dspy_context_push(mine));
    CHECK_OK(dspy_context_capture(&captured));
    size_t hist0 = dspy_history_len(dspy_history_global());
    pthread_t th[NTHREADS];
    thread_job jobs[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        jobs[i] = (thread_job){p, captured, i, 0};
        pthread_create(&th[i], NULL, call_worker, &jobs[i]);
    }
    int bad = 0;
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        bad += jobs[i].bad;
    }
    CHECK_INT(bad, 0);
    CHECK_INT(dspy_trace_len(trace), NTHREADS * NCALLS);
    /* every entry pairs its own inputs and prediction */
    int mismatched = 0;
    for (size_t i = 0; i < dspy_trace_len(trace); i++) {
        dspy_trace_entry e;
        if (dspy_trace_get(trace, (int64_t)i, &e)) {
            mismatched++;
            continue;
        }
        char want[80];
        snprintf(want, sizeof want, "echo: %s", dspy_json_str_or(e.inputs, "question", ""));
        if (e.predictor != p || strcmp(dspy_prediction_get_str(e.prediction, "answer"), want) != 0) mismatched++;
        dspy_trace_entry_clear(&e);
    }
    CHECK_INT(mismatched, 0);
    /* history: one entry per call on the LM and globally, each with its own question */
    dspy_history *h = dspy_lm_history(lm);
    CHECK_INT(dspy_history_len(h), NTHREADS * NCALLS);
    CHECK_INT(dspy_history_len(dspy_history_global()) - hist0, NTHREADS * NCALLS);
    int hbad = 0;
    for (size_t i = 0; i < dspy_history_len(h); i++) {
        dspy_json *e = dspy_history_at(h, i);
        const dspy_json *msgs = dspy_json_get(e, "messages");
        const char *user = dspy_json_str_or(dspy_json_at(msgs, dspy_json_size(msgs) - 1), "content", "");
        const char *out = dspy_json_str(dspy_json_at(dspy_json_get(e, "outputs"), 0));
        const char *q = strstr(user, "thread ");
        if (!q || !out || strncmp(out + strlen("[[ ## answer ## ]]\necho: "), q, strcspn(q, "\n")) != 0) hbad++;
        dspy_json_decref(e);
    }
    CHECK_INT(hbad, 0);
    dspy_trace *g = NULL;
    CHECK_OK(dspy_context_pop(mine));
    g = dspy_settings_trace();
    CHECK_INT(dspy_trace_len(g), 0); /* everything went to the captured trace */
    dspy_trace_free(g);
    dspy_context_free(captured);
    dspy_context_free(mine);
    dspy_trace_free(trace);
    dspy_module_free(p);
    dspy_lm_free(lm);
    dspy_settings_reset();
}

static void quiet_sink(dspy_log_level level, const char *msg, void *user) {
    (void)level;
    dspy_str *s = user;
    dspy_str_append(s, msg);
    dspy_str_appendc(s, '\n');
}

static void test_input_warnings(void) {
    dspy_settings_reset();
    dspy_str logs = DSPY_STR_INIT;
    dspy_log_set_sink(quiet_sink, &logs);
    dspy_lm *lm = scripted("[{\"answer\": \"x\"}]", true);
    dspy_module *p = NULL;
    CHECK_OK(dspy_predict_new_text("question, context -> answer", NULL, NULL, &p));
    CHECK_OK(dspy_module_set_lm(p, lm));
    dspy_json *in = J("{\"question\": \"q\", \"extra\": 1}");
    dspy_prediction *pred = NULL;
    CHECK_OK(dspy_module_call(p, in, NULL, &pred));
    CHECK_CONTAINS(dspy_str_cstr(&logs), "Not all input fields were provided to module. Present: ['question']. "
                                         "Missing: ['context'].");
    CHECK_CONTAINS(dspy_str_cstr(&logs), "Input contains fields not in signature. These fields will be ignored: "
                                         "['extra']. Expected fields: ['question', 'context'].");
    dspy_log_set_sink(NULL, NULL);
    dspy_str_free(&logs);
    dspy_prediction_free(pred);
    dspy_json_decref(in);
    dspy_module_free(p);
    dspy_lm_free(lm);
    dspy_settings_reset();
}

int main(void) {
    RUN(test_cc20_predict_end_to_end);
    RUN(test_cc20_trace_limits);
    RUN(test_cc20_temperature_rule);
    RUN(test_cc20_positional_and_no_lm);
    RUN(test_cc20_multi_output);
    RUN(test_cc20_callback_order);
    RUN(test_parse_error_after_fallback);
    RUN(test_cc02_chain_of_thought);
    RUN(test_custom_module_parameters);
    RUN(test_prediction);
    RUN(test_settings_and_contexts);
    RUN(test_threads_share_one_predict);
    RUN(test_input_warnings);
    return check_summary("test_predict");
}
