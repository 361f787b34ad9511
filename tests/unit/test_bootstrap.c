/* test_bootstrap.c — bootstrap_trace_data and BootstrapFinetune's data preparation:
 * conformance CC-29.1 (_prepare_finetune_data per trace position or multitask, Random(0)
 * order), CC-29.2 (predictor without an LM), CC-29.3 (item keys, score only with a metric,
 * metric filtering), CC-29.4 (an unparseable answer becomes FailedPrediction(completion_text,
 * format_reward=-1) with score -1, in both fallback modes), CC-30.4 (output_dir regex, data
 * path, $DSPY_FINETUNEDIR / $DSPY_CACHEDIR), CC-30.5 (train kwargs merged key by key), and
 * CC-12 through the whole flow: the JSONL line of one tutorial example is byte-exact chat data
 * built from the shared fixtures. Also: teacher checks, multitask vs per-predictor jobs, the
 * num_threads check, error counting and the max_errors budget, the student left unchanged. */
#include <pthread.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/bootstrap.h"
#include "dspy/hash.h"
#include "dspy/log.h"
#include "dspy/module.h"
#include "dspy/settings.h"
#include "tutorial_fixture.h"

static const char k_reasoning[] =
    "The user is inquiring about the status of their card delivery, which suggests they are concerned about when they "
    "will receive their card. This aligns with the topic of card arrival and delivery estimates.";

static dspy_prediction *pred_from(const char *json) {
    dspy_json *j = J(json);
    dspy_prediction *p = NULL;
    CHECK_OK(dspy_prediction_from_fields(j, &p));
    dspy_json_decref(j);
    return p;
}

static dspy_example *example(const char *json, const char *input) {
    dspy_example *ex = NULL;
    CHECK_OK(dspy_example_from_json(json, strlen(json), "test", &ex));
    if (input) CHECK_OK(dspy_example_set_inputs(ex, &input, 1));
    return ex;
}

static char *compact(const dspy_json *v) { return dspy_json_dumps(v, DSPY_JSON_COMPACT | DSPY_JSON_UTF8); }

/* ---- CC-29.1 ---------------------------------------------------------------------------------- */

/* The "identity adapter" of DSPy's test: {"inputs": inputs, "outputs": outputs}. */
static dspy_status identity_format(void *user, const dspy_trace_step *step, const dspy_json *demos, dspy_json **out) {
    (void)user;
    (void)demos;
    dspy_json *o = dspy_json_object();
    dspy_json_set(o, "inputs", dspy_json_copy(step->inputs));
    dspy_json_set(o, "outputs", dspy_json_copy(dspy_prediction_fields(step->prediction)));
    *out = o;
    return DSPY_OK;
}

static void test_cc29_1_prepare_finetune_data(void) {
    dspy_module *p0 = NULL, *p1 = NULL;
    CHECK_OK(dspy_predict_new_text("input -> output", NULL, NULL, &p0));
    CHECK_OK(dspy_predict_new_text("input -> output", NULL, NULL, &p1));
    dspy_prediction *zero = pred_from("{\"output\": \"zero\"}"), *one = pred_from("{\"output\": \"one\"}");
    dspy_json *in0 = J("{\"input\": \"predictor-0\"}"), *in1 = J("{\"input\": \"predictor-1\"}");
    dspy_trace_step steps[2] = {{p0, in0, zero, NULL}, {p1, in1, one, NULL}};
    dspy_trace_data *d = NULL;
    CHECK_OK(dspy_trace_data_new(&d));
    dspy_example *ex = example("{\"input\": \"x\"}", "input");
    CHECK_OK(dspy_trace_data_append(d, ex, 0, one, steps, 2, NULL));
    CHECK_INT(dspy_trace_data_len(d), 1);

    dspy_finetune_data_params fp = dspy_finetune_data_params_default();
    fp.format = identity_format;
    fp.pred_ind = 1;
    dspy_json *data = NULL;
    dspy_finetune_data_counts c;
    CHECK_OK(dspy_finetune_data_prepare(d, &fp, &data, &c));
    char *s = compact(data);
    CHECK_STR(s, "[{\"inputs\":{\"input\":\"predictor-1\"},\"outputs\":{\"output\":\"one\"}}]");
    free(s);
    dspy_json_decref(data);
    CHECK_INT(c.records, 1);
    CHECK_INT(c.kept, 1);

    /* multitask: both, Random(0)-shuffled: for 2 items the first draw is 3 (rejected), then 1 */
    fp.pred_ind = -1;
    CHECK_OK(dspy_finetune_data_prepare(d, &fp, &data, &c));
    s = compact(data);
    CHECK_STR(s, "[{\"inputs\":{\"input\":\"predictor-0\"},\"outputs\":{\"output\":\"zero\"}},"
                 "{\"inputs\":{\"input\":\"predictor-1\"},\"outputs\":{\"output\":\"one\"}}]");
    free(s);
    dspy_json_decref(data);

    /* five one-step items: CPython's random.Random(0).shuffle(list(range(5))) is [2, 1, 0, 4, 3] */
    dspy_trace_data *d5 = NULL;
    CHECK_OK(dspy_trace_data_new(&d5));
    for (int i = 0; i < 5; i++) {
        char buf[64];
        snprintf(buf, sizeof buf, "{\"input\": \"i%d\"}", i);
        dspy_json *in = J(buf);
        dspy_trace_step st1 = {p0, in, zero, NULL};
        CHECK_OK(dspy_trace_data_append(d5, ex, (size_t)i, zero, &st1, 1, NULL));
        dspy_json_decref(in);
    }
    CHECK_OK(dspy_finetune_data_prepare(d5, &fp, &data, NULL));
    const char *order[5];
    for (size_t i = 0; i < 5; i++) order[i] = dspy_json_str(dspy_json_get(dspy_json_get(dspy_json_at(data, i), "inputs"), "input"));
    CHECK_STR(order[0], "i2");
    CHECK_STR(order[1], "i1");
    CHECK_STR(order[2], "i0");
    CHECK_STR(order[3], "i4");
    CHECK_STR(order[4], "i3");
    dspy_json_decref(data);
    dspy_trace_data_free(d5);

    /* the default format is ChatAdapter.format_finetune_data */
    fp = dspy_finetune_data_params_default();
    fp.pred_ind = 0;
    CHECK_OK(dspy_finetune_data_prepare(d, &fp, &data, NULL));
    const dspy_json *msgs = dspy_json_get(dspy_json_at(data, 0), "messages");
    CHECK_INT(dspy_json_size(msgs), 3);
    CHECK_STR(msg_role(msgs, 2), "assistant");
    CHECK_STR(msg_content(msgs, 2), "[[ ## output ## ]]\nzero\n\n[[ ## completed ## ]]\n");
    CHECK_CONTAINS(msg_content(msgs, 1), "[[ ## input ## ]]\npredictor-0\n\nRespond with");
    dspy_json_decref(data);

    /* a metric was given: items without a truthy score are dropped */
    dspy_trace_data *ds = NULL;
    CHECK_OK(dspy_trace_data_new(&ds));
    double scores[3] = {1, 0, -1};
    for (int i = 0; i < 3; i++) CHECK_OK(dspy_trace_data_append(ds, ex, (size_t)i, zero, steps, 1, &scores[i]));
    fp = dspy_finetune_data_params_default();
    fp.format = identity_format;
    fp.filter_by_score = true;
    CHECK_OK(dspy_finetune_data_prepare(ds, &fp, &data, &c));
    CHECK_INT(dspy_json_size(data), 2); /* -1 is truthy, as in Python */
    CHECK_INT(c.filtered_out, 1);
    CHECK_INT(c.items, 3);
    dspy_json_decref(data);
    dspy_trace_data_free(ds);

    CHECK_STATUS(dspy_trace_data_append(d, ex, 0, NULL, steps, 2, NULL), DSPY_ERR_ARG);
    dspy_example_free(ex);
    dspy_trace_data_free(d);
    dspy_json_decref(in0);
    dspy_json_decref(in1);
    dspy_prediction_free(zero);
    dspy_prediction_free(one);
    dspy_module_free(p0);
    dspy_module_free(p1);
}

/* ---- a teacher LM that answers the tutorial signature by rule -------------------------------- */

typedef struct teacher_rule {
    pthread_mutex_t mu;
    int calls;
} teacher_rule;

/* Replies by the text in the last user message:
 *   "why hasnt my card come in yet?"  -> k_reasoning, card_arrival (right)
 *   "Where can I find your exchange rates?" -> exchange_rate (right)
 *   "what currencies do you accept?"  -> exchange_rate (wrong: gold fiat_currency_support)
 *   "unparseable"                      -> "This is an invalid JSON!"
 *   "lm error"                         -> an LM error
 *   anything else                      -> "[[ ## answer ## ]]\nx" style for question -> answer */
static dspy_status teacher_fn(void *user, const dspy_json *messages, const dspy_json *kwargs, int32_t choice,
                              char **text) {
    (void)kwargs;
    (void)choice;
    teacher_rule *r = user;
    if (r) {
        pthread_mutex_lock(&r->mu);
        r->calls++;
        pthread_mutex_unlock(&r->mu);
    }
    const char *c = msg_content(messages, dspy_json_size(messages) - 1);
    bool json = strstr(c, "Respond with a JSON object") != NULL;
    dspy_str s = DSPY_STR_INIT;
    if (strstr(c, "lm error")) return dspy_fail(DSPY_ERR_REMOTE, "HTTP 503 Service Unavailable");
    if (strstr(c, "unparseable")) {
        dspy_str_append(&s, "This is an invalid JSON!");
    } else if (strstr(c, "why hasnt my card come in yet?")) {
        dspy_str_appendf(&s, "[[ ## reasoning ## ]]\n%s\n\n[[ ## label ## ]]\ncard_arrival\n\n[[ ## completed ## ]]", k_reasoning);
    } else if (strstr(c, "Where can I find your exchange rates?") || strstr(c, "what currencies do you accept?")) {
        dspy_str_append(&s, "[[ ## reasoning ## ]]\nRates.\n\n[[ ## label ## ]]\nexchange_rate\n\n[[ ## completed ## ]]");
    } else if (strstr(c, "partial")) {
        dspy_str_append(&s, "[[ ## answer ## ]]\nParis");
    } else if (json) {
        dspy_str_append(&s, "{\"answer\": \"A\"}");
    } else {
        dspy_str_append(&s, "[[ ## answer ## ]]\nA");
    }
    *text = dspy_str_take(&s);
    return DSPY_OK;
}

static dspy_lm *teacher_lm(teacher_rule *r) {
    dspy_lm *lm = NULL;
    CHECK_OK(dspy_lm_new_scripted_fn(teacher_fn, r, NULL, &lm));
    return lm;
}

static dspy_dataset *questions(int n, const char *special_at_2) {
    dspy_dataset *ds = NULL;
    CHECK_OK(dspy_dataset_new(&ds));
    for (int i = 0; i < n; i++) {
        char buf[128];
        snprintf(buf, sizeof buf, "{\"question\": \"%s %d\"}", i == 2 && special_at_2 ? special_at_2 : "q", i);
        dspy_dataset_append(ds, example(buf, "question"));
    }
    return ds;
}

/* ---- CC-29.3 / CC-29.4 ------------------------------------------------------------------------ */

static dspy_status one_metric(void *user, const dspy_example *ex, const dspy_prediction *pred, dspy_trace *trace,
                              double *score) {
    (void)user;
    (void)ex;
    (void)pred;
    CHECK(trace == NULL); /* DSPy calls metric(example, prediction) */
    *score = 1;
    return DSPY_OK;
}

static void test_cc29_3_4_trace_data(void) {
    for (int mode = 0; mode < 2; mode++) {
        /* mode 0: JSONAdapter; mode 1: ChatAdapter falling back to the JSONAdapter */
        dspy_settings_reset();
        dspy_settings_set_adapter(mode == 0 ? DSPY_ADAPTER_JSON : DSPY_ADAPTER_CHAT, true);
        teacher_rule rule = {.mu = PTHREAD_MUTEX_INITIALIZER};
        dspy_lm *lm = teacher_lm(&rule);
        dspy_module *prog = NULL;
        CHECK_OK(dspy_predict_new_text("question -> answer", NULL, NULL, &prog));
        CHECK_OK(dspy_module_set_lm(prog, lm));
        dspy_dataset *ds = questions(5, "unparseable");
        dspy_metric m = {"one", one_metric, NULL, DSPY_SCORE_INT};
        dspy_bootstrap_params bp = dspy_bootstrap_params_default();
        bp.metric = &m;
        bp.num_threads = 3;
        bp.display_progress = false;
        dspy_trace_data *d = NULL;
        dspy_log_set_level(DSPY_LOG_OFF);
        CHECK_OK(dspy_bootstrap_trace_data(prog, ds, &bp, &d));
        dspy_log_set_level(DSPY_LOG_INFO);
        CHECK_INT(dspy_trace_data_len(d), 5);
        CHECK_INT(rule.calls, mode == 0 ? 5 : 4 + 2); /* the chat answer, then the JSON fallback */
        int normal = 0;
        for (size_t i = 0; i < dspy_trace_data_len(d); i++) {
            const dspy_trace_item *it = dspy_trace_data_item(d, i);
            CHECK_INT(it->example_ind, i);
            CHECK(it->has_score);
            CHECK_INT(it->n_trace, 1);
            CHECK(it->trace[0].predictor == prog);
            CHECK(it->trace[0].inputs != NULL);
            if (i == 2) {
                CHECK(it->prediction == NULL);
                CHECK(it->failed != NULL);
                if (it->failed) {
                    CHECK_STR(it->failed->completion_text, "This is an invalid JSON!");
                    CHECK_NEAR(it->failed->format_reward, -1, 0);
                }
                CHECK_NEAR(it->score, -1, 0);
                CHECK(it->trace[0].prediction == NULL && it->trace[0].failed == it->failed);
                CHECK_STR(dspy_json_str(dspy_json_get(it->trace[0].inputs, "question")), "unparseable 2");
            } else {
                normal += it->prediction && !it->failed;
                CHECK_STR(dspy_prediction_get_str(it->prediction, "answer"), "A");
                CHECK_NEAR(it->score, 1, 0);
                CHECK(it->trace[0].prediction == it->prediction);
                CHECK_STR(dspy_example_get_str(it->example, "question"), dspy_example_get_str(dspy_dataset_get(ds, i), "question"));
            }
        }
        CHECK_INT(normal, 4);
        dspy_bootstrap_counts c = dspy_trace_data_counts(d);
        CHECK_INT(c.examples, 5);
        CHECK_INT(c.items, 5);
        CHECK_INT(c.parse_failures, 1);
        CHECK_INT(c.errors, 0);
        /* the FailedPrediction never reaches the fine-tuning data */
        if (mode == 1) {
            dspy_finetune_data_params fp = dspy_finetune_data_params_default();
            fp.filter_by_score = true;
            dspy_json *data = NULL;
            dspy_finetune_data_counts fc;
            CHECK_OK(dspy_finetune_data_prepare(d, &fp, &data, &fc));
            CHECK_INT(dspy_json_size(data), 4);
            CHECK_INT(fc.failed, 1);
            CHECK_INT(fc.filtered_out, 0);
            dspy_json_decref(data);
        }
        dspy_trace_data_free(d);

        /* without a metric: no score on the items */
        bp.metric = NULL;
        dspy_log_set_level(DSPY_LOG_OFF);
        CHECK_OK(dspy_bootstrap_trace_data(prog, ds, &bp, &d));
        dspy_log_set_level(DSPY_LOG_INFO);
        CHECK(!dspy_trace_data_item(d, 0)->has_score);
        dspy_trace_data_free(d);
        dspy_dataset_free(ds);
        dspy_module_free(prog);
        dspy_lm_free(lm);
    }
    dspy_settings_reset();
}

/* A partial parse: format_failure_score + (failure_score - format_failure_score) * k / n. */
static void test_partial_parse_reward(void) {
    dspy_settings_reset();
    dspy_settings_set_adapter(DSPY_ADAPTER_CHAT, false);
    dspy_lm *lm = teacher_lm(NULL);
    dspy_module *cot = NULL;
    CHECK_OK(dspy_chain_of_thought_new_text("question -> answer", NULL, NULL, &cot));
    CHECK_OK(dspy_module_set_lm(cot, lm));
    dspy_dataset *ds = questions(3, "partial");
    dspy_bootstrap_params bp = dspy_bootstrap_params_default();
    bp.display_progress = false;
    bp.num_threads = 1;
    dspy_trace_data *d = NULL;
    dspy_log_set_level(DSPY_LOG_OFF);
    CHECK_OK(dspy_bootstrap_trace_data(cot, ds, &bp, &d));
    dspy_log_set_level(DSPY_LOG_INFO);
    /* every answer lacks `reasoning`; the "partial" one has `answer` (1 of 2 outputs) */
    CHECK_INT(dspy_trace_data_len(d), 3);
    const dspy_trace_item *it = dspy_trace_data_item(d, 2);
    CHECK(it && it->failed);
    if (it && it->failed) {
        CHECK_NEAR(it->failed->format_reward, -0.5, 1e-12);
        CHECK_STR(it->failed->completion_text, "[[ ## answer ## ]]\nParis");
        /* the failing step is the ChainOfThought's inner Predict */
        CHECK(it->trace[0].predictor == dspy_module_child(cot, "predict"));
    }
    CHECK_NEAR(dspy_trace_data_item(d, 0)->failed->format_reward, -0.5, 1e-12); /* "A" parsed as answer */
    dspy_trace_data_free(d);
    dspy_dataset_free(ds);
    dspy_module_free(cot);
    dspy_lm_free(lm);
    dspy_settings_reset();
}

/* LM errors: counted, no item; the run stops only at max_errors. */
static void test_errors_counted_and_budget(void) {
    dspy_settings_reset();
    dspy_lm *lm = teacher_lm(NULL);
    dspy_module *prog = NULL;
    CHECK_OK(dspy_predict_new_text("question -> answer", NULL, NULL, &prog));
    CHECK_OK(dspy_module_set_lm(prog, lm));
    dspy_dataset *ds = NULL;
    CHECK_OK(dspy_dataset_new(&ds));
    for (int i = 0; i < 8; i++) {
        char buf[64];
        snprintf(buf, sizeof buf, "{\"question\": \"%s %d\"}", i % 3 == 0 ? "lm error" : "fine", i);
        dspy_dataset_append(ds, example(buf, "question"));
    }
    dspy_bootstrap_params bp = dspy_bootstrap_params_default();
    bp.display_progress = false;
    bp.num_threads = 2;
    dspy_trace_data *d = NULL;
    dspy_log_set_level(DSPY_LOG_OFF);
    CHECK_OK(dspy_bootstrap_trace_data(prog, ds, &bp, &d));
    dspy_bootstrap_counts c = dspy_trace_data_counts(d);
    CHECK_INT(c.examples, 8);
    CHECK_INT(c.items, 5);
    CHECK_INT(c.errors, 3);
    CHECK_INT(dspy_trace_data_item(d, 0)->example_ind, 1);
    dspy_trace_data_free(d);
    bp.max_errors = 3;
    CHECK_STATUS(dspy_bootstrap_trace_data(prog, ds, &bp, &d), DSPY_ERR_CANCELLED);
    CHECK(d == NULL);
    CHECK_STR(dspy_errmsg(), "Execution cancelled due to errors or interruption.");
    dspy_log_set_level(DSPY_LOG_INFO);
    dspy_dataset_free(ds);
    dspy_module_free(prog);
    dspy_lm_free(lm);
}

/* ---- CC-30.4 / CC-30.5 ------------------------------------------------------------------------ */

static bool matches(const char *re, const char *s) {
    regex_t rx;
    if (regcomp(&rx, re, REG_EXTENDED | REG_NOSUB) != 0) return false;
    bool ok = regexec(&rx, s, 0, NULL, 0) == 0;
    regfree(&rx);
    return ok;
}

/* Escapes regex metacharacters of a path. */
static void re_quote(dspy_str *out, const char *s) {
    for (; *s; s++) {
        if (strchr(".[]()*+?{}|^$\\", *s)) dspy_str_appendc(out, '\\');
        dspy_str_appendc(out, *s);
    }
}

static void test_cc30_4_dirs_and_names(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/ft", test_tmpdir());
    char *got = NULL;
    /* $DSPY_FINETUNEDIR wins, made absolute and created */
    setenv("DSPY_FINETUNEDIR", dir, 1);
    setenv("DSPY_CACHEDIR", "/nonexistent-cache", 1);
    CHECK_OK(dspy_finetune_dir(NULL, &got));
    CHECK_STR(got, dir);
    free(got);
    unsetenv("DSPY_FINETUNEDIR");
    char cache[1024];
    snprintf(cache, sizeof cache, "%s/cache/./x/..", test_tmpdir());
    setenv("DSPY_CACHEDIR", cache, 1);
    CHECK_OK(dspy_finetune_dir(NULL, &got));
    char want[1100];
    snprintf(want, sizeof want, "%s/cache/finetune", test_tmpdir());
    CHECK_STR(got, want);
    free(got);
    unsetenv("DSPY_CACHEDIR");
    const char *home = getenv("HOME");
    char *home_copy = home ? strdup(home) : NULL;
    char fake_home[1024];
    snprintf(fake_home, sizeof fake_home, "%s/home", test_tmpdir());
    setenv("HOME", fake_home, 1);
    CHECK_OK(dspy_finetune_dir(NULL, &got));
    snprintf(want, sizeof want, "%s/home/.dspy_cache/finetune", test_tmpdir());
    CHECK_STR(got, want);
    free(got);
    if (home_copy) setenv("HOME", home_copy, 1);
    free(home_copy);

    /* the data file: <dir>/<sha256 of its bytes>.jsonl, one compact object per line */
    dspy_json *records = J("[{\"messages\": [{\"role\": \"user\", \"content\": \"é / \\\"q\\\"\\n\"}]}, {\"a\": 1}]");
    char *path = NULL;
    CHECK_OK(dspy_finetune_data_write(records, dir, &path));
    char *body = NULL;
    size_t n = 0;
    CHECK_OK(dspy_read_file(path, &body, &n));
    CHECK_STR(body, "{\"messages\":[{\"role\":\"user\",\"content\":\"é / \\\"q\\\"\\n\"}]}\n{\"a\":1}\n");
    char hex[65];
    CHECK_OK(dspy_sha256_hex(body, n, hex));
    char wpath[1200];
    snprintf(wpath, sizeof wpath, "%s/%s.jsonl", dir, hex);
    CHECK_STR(path, wpath);

    /* output_dir (V33 create_output_dir) */
    char *out_dir = NULL;
    CHECK_OK(dspy_finetune_output_dir(path, "openai/local:meta-llama/Llama-3.2-1B-Instruct", &out_dir));
    dspy_str re = DSPY_STR_INIT;
    dspy_str_append(&re, "^");
    re_quote(&re, dir);
    dspy_str_appendf(&re, "/%s_[a-z0-9]{6}_meta-llama-Llama-3\\.2-1B-Instruct_[0-9]{4}-[0-9]{2}-[0-9]{2}_[0-9]{2}-[0-9]{2}-[0-9]{2}$",
                     hex);
    CHECK(matches(dspy_str_cstr(&re), out_dir));
    char *out2 = NULL;
    CHECK_OK(dspy_finetune_output_dir(path, "openai/local:meta-llama/Llama-3.2-1B-Instruct", &out2));
    CHECK(strcmp(out_dir, out2) != 0); /* the random tag differs */
    free(out2);
    /* every ".jsonl" is replaced, as str.replace does */
    CHECK_OK(dspy_finetune_output_dir("/a.jsonl/b.jsonl", "m", &out2));
    CHECK(matches("^/a_[a-z0-9]{6}_m_[0-9_-]{19}/b_[a-z0-9]{6}_m_[0-9_-]{19}$", out2));
    free(out2);
    dspy_str_free(&re);

    /* CC-30.5: defaults, then the user's keys in place, new keys appended */
    char *kw = NULL;
    CHECK_OK(dspy_finetune_train_kwargs(NULL, "/o", &kw));
    CHECK_STR(kw, "{\"device\":null,\"use_peft\":false,\"num_train_epochs\":5,\"per_device_train_batch_size\":1,"
                  "\"gradient_accumulation_steps\":8,\"learning_rate\":1e-05,\"max_seq_length\":null,\"packing\":true,"
                  "\"bf16\":true,\"output_dir\":\"/o\"}");
    free(kw);
    dspy_json *user = J("{\"num_train_epochs\": 3, \"lora_r\": 8, \"use_peft\": true, \"output_dir\": \"/mine\"}");
    CHECK_OK(dspy_finetune_train_kwargs(user, "/o", &kw));
    CHECK_STR(kw, "{\"device\":null,\"use_peft\":true,\"num_train_epochs\":3,\"per_device_train_batch_size\":1,"
                  "\"gradient_accumulation_steps\":8,\"learning_rate\":1e-05,\"max_seq_length\":null,\"packing\":true,"
                  "\"bf16\":true,\"output_dir\":\"/mine\",\"lora_r\":8}");
    free(kw);
    dspy_json_decref(user);
    user = J("[1]");
    CHECK_STATUS(dspy_finetune_train_kwargs(user, "/o", &kw), DSPY_ERR_ARG);
    dspy_json_decref(user);
    free(out_dir);
    free(path);
    free(body);
    dspy_json_decref(records);
}

/* ---- the whole preparation on the tutorial signature --------------------------------------------- */

static dspy_status label_metric(void *user, const dspy_example *ex, const dspy_prediction *pred, dspy_trace *trace,
                                double *score) {
    (void)user;
    (void)trace;
    const char *a = dspy_example_get_str(ex, "label"), *b = dspy_prediction_get_str(pred, "label");
    *score = a && b && strcmp(a, b) == 0; /* lambda x, y, trace=None: x.label == y.label */
    return DSPY_OK;
}

static dspy_dataset *tutorial_trainset(void) {
    dspy_dataset *ds = NULL;
    CHECK_OK(dspy_dataset_new(&ds));
    const char *rows[][2] = {
        {"why hasnt my card come in yet?", "card_arrival"},
        {"Where can I find your exchange rates?", "exchange_rate"},
        {"what currencies do you accept?", "fiat_currency_support"},
        {"unparseable question", "card_arrival"},
    };
    for (int i = 0; i < 4; i++) {
        dspy_json *o = dspy_json_object();
        dspy_json_set_str(o, "text", rows[i][0]);
        dspy_json_set_str(o, "label", rows[i][1]);
        char *s = compact(o);
        dspy_dataset_append(ds, example(s, "text"));
        free(s);
        dspy_json_decref(o);
    }
    return ds;
}

/* The JSONL line CC-12 describes: {"messages": [system, user, assistant]} from the fixtures. */
static char *expected_tutorial_line(void) {
    size_t n;
    char *sys = read_fixture("tutorial_system_v3.3.1.txt", &n);
    char *usr = read_fixture("tutorial_user_v3.3.1.txt", &n);
    char *ast = read_fixture("tutorial_assistant.txt", &n);
    char *line = NULL;
    if (sys && usr && ast) {
        dspy_json *msgs = dspy_json_array();
        const char *roles[3] = {"system", "user", "assistant"};
        const char *contents[3] = {sys, usr, ast};
        for (int i = 0; i < 3; i++) {
            dspy_json *m = dspy_json_object();
            dspy_json_set_str(m, "role", roles[i]);
            dspy_json_set_str(m, "content", contents[i]);
            dspy_json_append(msgs, m);
        }
        dspy_json *rec = dspy_json_object();
        dspy_json_set(rec, "messages", msgs);
        line = compact(rec);
        dspy_json_decref(rec);
    }
    free(sys);
    free(usr);
    free(ast);
    return line;
}

static void test_prepare_tutorial(void) {
    if (!test_have_shared("data/banking77/labels.txt") || !test_have_shared("spec/fixtures/tutorial_assistant.txt")) {
        check_skip("shared data missing");
        return;
    }
    dspy_settings_reset();
    dspy_log_set_level(DSPY_LOG_WARN);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tutorial-ft", test_tmpdir());
    int nl;
    char *sig = tutorial_signature_text(&nl);
    CHECK_INT(nl, 77);
    dspy_module *student = NULL, *teacher = NULL;
    CHECK_OK(dspy_chain_of_thought_new_text(sig, NULL, NULL, &student));
    free(sig);
    dspy_lm *local = NULL, *tlm = teacher_lm(NULL);
    dspy_lm_params lp = dspy_lm_params_default();
    lp.max_tokens = 2000;
    CHECK_OK(dspy_lm_new("openai/local:meta-llama/Llama-3.2-1B-Instruct", &lp, &local));
    dspy_dataset *train = tutorial_trainset();
    dspy_metric metric = {"<lambda>", label_metric, NULL, DSPY_SCORE_BOOL};
    dspy_finetune_params fp = dspy_finetune_params_default();
    fp.metric = &metric;
    fp.num_threads = 2;
    fp.finetune_dir = dir;
    fp.display_progress = false;
    dspy_finetune_job *job = NULL;

    /* CC-29.2: a predictor without an LM */
    CHECK_STATUS(dspy_bootstrap_finetune_prepare(student, train, NULL, 0, &fp, &job), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "does not have an LM assigned");
    CHECK_CONTAINS(dspy_errmsg(), "set_lm");
    CHECK(job == NULL);

    CHECK_OK(dspy_module_set_lm(student, local));
    /* teacher = student.deepcopy(); teacher.set_lm(teacher_lm) */
    CHECK_OK(dspy_module_deepcopy(student, &teacher));
    CHECK_OK(dspy_module_set_lm(teacher, tlm));
    /* a teacher sharing the student's predictors is refused */
    CHECK_STATUS(dspy_bootstrap_finetune_prepare(student, train, &student, 1, &fp, &job), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "The programs share the following predictor(s) with each other: predict");
    dspy_module *other = NULL;
    CHECK_OK(dspy_predict_new_text("text -> label", NULL, NULL, &other));
    CHECK_STATUS(dspy_bootstrap_finetune_prepare(student, train, &other, 1, &fp, &job), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "do not match at index 0: 'predict' != 'self'");
    dspy_module_free(other);

    dspy_json *demo = J("[{\"text\": \"demo text\", \"reasoning\": \"demo r\", \"label\": \"age_limit\"}]");
    CHECK_OK(dspy_predict_set_demos(dspy_module_child(student, "predict"), demo));
    CHECK_OK(dspy_predict_set_demos(dspy_module_child(teacher, "predict"), demo));
    for (int excl = 1; excl >= 0; excl--) {
        fp.exclude_demos = excl;
        dspy_log_set_level(DSPY_LOG_OFF);
        CHECK_OK(dspy_bootstrap_finetune_prepare(student, train, &teacher, 1, &fp, &job));
        dspy_log_set_level(DSPY_LOG_WARN);
        if (!job) return;
        dspy_bootstrap_counts c = dspy_finetune_job_counts(job);
        CHECK_INT(c.examples, 4);
        CHECK_INT(c.items, 4);
        CHECK_INT(c.parse_failures, 1);
        CHECK_INT(c.errors, 0);
        CHECK_INT(dspy_finetune_job_n_tasks(job), 1);
        const dspy_finetune_task *t = dspy_finetune_job_task(job, 0);
        CHECK(t->lm == local);
        CHECK_INT(t->pred_ind, -1);
        CHECK_INT(t->n_predictors, 1);
        CHECK_STR(t->model, "meta-llama/Llama-3.2-1B-Instruct");
        CHECK_STR(t->data_format, "chat");
        /* only the two traces whose label equals the gold label reach the data */
        CHECK_INT(t->counts.items, 4);
        CHECK_INT(t->counts.filtered_out, 1);
        CHECK_INT(t->counts.failed, 1);
        CHECK_INT(t->counts.kept, 2);
        CHECK_INT(t->n_records, 2);
        char *body = NULL;
        size_t n = 0;
        CHECK_OK(dspy_read_file(t->data_path, &body, &n));
        char hex[65];
        dspy_sha256_hex(body, n, hex);
        char want_path[1200];
        snprintf(want_path, sizeof want_path, "%s/%s.jsonl", dir, hex);
        CHECK_STR(t->data_path, want_path);
        char *first_nl = body ? strchr(body, '\n') : NULL;
        CHECK(first_nl && strchr(first_nl + 1, '\n') && strchr(first_nl + 1, '\n')[1] == '\0');
        CHECK(!strstr(body, "what currencies do you accept?"));
        CHECK(!strstr(body, "unparseable"));
        if (excl) {
            /* CC-12: the card_arrival line is exactly the fixtures' chat data */
            char *want = expected_tutorial_line();
            CHECK(want != NULL);
            bool found = false;
            for (char *line = body, *end; line && *line; line = end + 1) {
                end = strchr(line, '\n');
                if (!end) break;
                *end = '\0';
                if (strstr(line, "why hasnt my card come in yet?")) {
                    found = true;
                    CHECK_STR(line, want);
                    static const char head[] = "{\"messages\":[{\"role\":\"system\",\"content\":\"Your input fields are:"
                                               "\\n1. `text` (str):\\nYour output fields are:\\n1. `reasoning` (str): "
                                               "\\n2. `label` (Literal['activate_my_card', ";
                    CHECK(strncmp(line, head, sizeof head - 1) == 0);
                    CHECK_CONTAINS(line, "\"},{\"role\":\"assistant\",\"content\":\"[[ ## reasoning ## ]]\\nThe user is "
                                         "inquiring");
                    static const char tail[] = "[[ ## label ## ]]\\ncard_arrival\\n\\n[[ ## completed ## ]]\\n\"}]}";
                    CHECK(strlen(line) > sizeof tail && strcmp(line + strlen(line) - (sizeof tail - 1), tail) == 0);
                }
            }
            CHECK(found);
            free(want);
        } else {
            /* with demos: system, demo user, demo assistant, user, assistant */
            CHECK_CONTAINS(body, "{\"role\":\"user\",\"content\":\"[[ ## text ## ]]\\ndemo text\"}");
            CHECK_CONTAINS(body, "\"content\":\"[[ ## reasoning ## ]]\\ndemo r\\n\\n[[ ## label ## ]]\\nage_limit\\n\\n"
                                 "[[ ## completed ## ]]\\n\"}");
        }
        free(body);
        /* output_dir and the effective train kwargs */
        dspy_str re = DSPY_STR_INIT;
        dspy_str_append(&re, "^");
        re_quote(&re, dir);
        dspy_str_appendf(&re, "/%s_[a-z0-9]{6}_meta-llama-Llama-3\\.2-1B-Instruct_[0-9]{4}-[0-9]{2}-[0-9]{2}_[0-9]{2}-[0-9]{2}-[0-9]{2}$",
                         hex);
        CHECK(matches(dspy_str_cstr(&re), t->output_dir));
        dspy_str_free(&re);
        dspy_json *kw = NULL;
        CHECK_OK(dspy_json_parse(t->train_kwargs, strlen(t->train_kwargs), "kw", &kw));
        CHECK_STR(dspy_json_str(dspy_json_get(kw, "output_dir")), t->output_dir);
        CHECK_INT(dspy_json_intval(dspy_json_get(kw, "num_train_epochs")), 5);
        dspy_json_decref(kw);
        /* the student is unchanged; the job holds a copy (demos dropped with exclude_demos) */
        dspy_module *copy = dspy_finetune_job_student(job);
        CHECK(copy != student);
        CHECK(dspy_predict_lm(dspy_module_child(copy, "predict")) == local);
        CHECK_INT(dspy_json_size(dspy_predict_demos(dspy_module_child(copy, "predict"))), excl ? 0 : 1);
        CHECK_INT(dspy_json_size(dspy_predict_demos(dspy_module_child(student, "predict"))), 1);
        CHECK(dspy_predict_lm(dspy_module_child(student, "predict")) == local);
        CHECK(!dspy_module_compiled(student));
        dspy_finetune_job_free(job);
        job = NULL;
    }
    dspy_json_decref(demo);

    /* train kwargs: BootstrapFinetune's, else the LM's own */
    fp.train_kwargs = "{\"num_train_epochs\": 2}";
    fp.metric = NULL;
    dspy_log_set_level(DSPY_LOG_OFF);
    CHECK_OK(dspy_bootstrap_finetune_prepare(student, train, &teacher, 1, &fp, &job));
    dspy_log_set_level(DSPY_LOG_WARN);
    CHECK_CONTAINS(dspy_finetune_job_task(job, 0)->train_kwargs, "\"num_train_epochs\":2,");
    CHECK_INT(dspy_finetune_job_task(job, 0)->n_records, 3); /* no metric: every parsed trace */
    dspy_finetune_job_free(job);
    fp.train_kwargs = "[]";
    CHECK_STATUS(dspy_bootstrap_finetune_prepare(student, train, &teacher, 1, &fp, &job), DSPY_ERR_ARG);
    fp.train_kwargs = NULL;
    dspy_lm *local2 = NULL;
    dspy_json *tk = J("{\"learning_rate\": 2e-05}");
    lp.train_kwargs = tk;
    CHECK_OK(dspy_lm_new("openai/local:/models/llama", &lp, &local2));
    dspy_json_decref(tk);
    CHECK_OK(dspy_module_set_lm(student, local2));
    dspy_log_set_level(DSPY_LOG_OFF);
    CHECK_OK(dspy_bootstrap_finetune_prepare(student, train, &teacher, 1, &fp, &job));
    dspy_log_set_level(DSPY_LOG_WARN);
    CHECK_CONTAINS(dspy_finetune_job_task(job, 0)->train_kwargs, "\"learning_rate\":2e-05,");
    CHECK_STR(dspy_finetune_job_task(job, 0)->model, "/models/llama");
    CHECK_CONTAINS(dspy_finetune_job_task(job, 0)->output_dir, "_-models-llama_");
    dspy_finetune_job_free(job);

    /* the JSONAdapter cannot make fine-tuning data */
    dspy_settings_set_adapter(DSPY_ADAPTER_JSON, true);
    CHECK_STATUS(dspy_bootstrap_finetune_prepare(student, train, &teacher, 1, &fp, &job), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "NotImplementedError");
    dspy_settings_reset();

    dspy_dataset_free(train);
    dspy_module_free(student);
    dspy_module_free(teacher);
    dspy_lm_free(local);
    dspy_lm_free(local2);
    dspy_lm_free(tlm);
    dspy_log_set_level(DSPY_LOG_INFO);
}

/* ---- two predictors: multitask vs one job per predictor ---------------------------------------- */

static dspy_status two_forward(dspy_module *self, const dspy_json *inputs, const dspy_call_options *opt,
                               dspy_prediction **out) {
    dspy_prediction *first = NULL;
    dspy_status st = dspy_module_call(dspy_module_child(self, "first"), inputs, opt, &first);
    if (st) return st;
    dspy_prediction_free(first);
    return dspy_module_call(dspy_module_child(self, "second"), inputs, opt, out);
}

static const dspy_module_vtable two_vt = {"TwoStep", two_forward, NULL, NULL};

static dspy_module *two_step(dspy_lm *lm) {
    dspy_module *m = NULL, *a = NULL, *b = NULL;
    CHECK_OK(dspy_module_new(&two_vt, NULL, &m));
    CHECK_OK(dspy_predict_new_text("question -> answer", NULL, NULL, &a));
    CHECK_OK(dspy_predict_new_text("question -> answer", "Second step.", NULL, &b));
    CHECK_OK(dspy_module_add_child(m, "first", a));
    CHECK_OK(dspy_module_add_child(m, "second", b));
    dspy_module_free(a);
    dspy_module_free(b);
    if (lm) CHECK_OK(dspy_module_set_lm(m, lm));
    return m;
}

static void test_multitask_and_jobs(void) {
    dspy_settings_reset();
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/two-ft", test_tmpdir());
    dspy_lm *local = NULL, *tlm = teacher_lm(NULL);
    CHECK_OK(dspy_lm_new("openai/local:org/small", NULL, &local));
    dspy_module *student = two_step(local), *teacher = two_step(tlm);
    dspy_dataset *ds = questions(3, NULL);
    dspy_finetune_params fp = dspy_finetune_params_default();
    fp.finetune_dir = dir;
    fp.display_progress = false;
    fp.num_threads = 2;
    dspy_finetune_job *job = NULL;
    dspy_log_set_level(DSPY_LOG_OFF);
    CHECK_OK(dspy_bootstrap_finetune_prepare(student, ds, &teacher, 1, &fp, &job));
    CHECK_INT(dspy_finetune_job_n_tasks(job), 1);
    CHECK_INT(dspy_finetune_job_task(job, 0)->n_records, 6); /* 2 steps x 3 examples */
    CHECK_INT(dspy_finetune_job_task(job, 0)->n_predictors, 2);
    const dspy_trace_item *it = dspy_trace_data_item(dspy_finetune_job_trace_data(job), 0);
    CHECK_INT(it->n_trace, 2);
    CHECK(it->trace[0].predictor == dspy_module_child(teacher, "first"));
    CHECK(it->trace[1].predictor == dspy_module_child(teacher, "second"));
    dspy_finetune_job_free(job);

    fp.multitask = false;
    CHECK_OK(dspy_bootstrap_finetune_prepare(student, ds, &teacher, 1, &fp, &job));
    CHECK_INT(dspy_finetune_job_n_tasks(job), 2);
    for (size_t i = 0; i < 2; i++) {
        const dspy_finetune_task *t = dspy_finetune_job_task(job, i);
        CHECK_INT(t->pred_ind, (int64_t)i);
        CHECK_INT(t->n_predictors, 1);
        CHECK_INT(t->predictors[0], i);
        CHECK_INT(t->n_records, 3);
        char *body = NULL;
        size_t n;
        CHECK_OK(dspy_read_file(t->data_path, &body, &n));
        if (i == 1) CHECK_CONTAINS(body, "Second step.");
        else CHECK(!strstr(body, "Second step."));
        free(body);
    }
    CHECK(strcmp(dspy_finetune_job_task(job, 0)->data_path, dspy_finetune_job_task(job, 1)->data_path) != 0);
    dspy_finetune_job_free(job);

    /* more jobs than threads */
    fp.num_threads = 1;
    CHECK_STATUS(dspy_bootstrap_finetune_prepare(student, ds, &teacher, 1, &fp, &job), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "requires `num_threads` to be bigger than or equal to the number of fine-tuning jobs. "
                                  "There are 2 fine-tuning jobs to start, but the number of threads is: 1!");
    /* a teacher with another predictor count */
    dspy_module *one = NULL;
    CHECK_OK(dspy_predict_new_text("question -> answer", NULL, NULL, &one));
    fp.num_threads = 2;
    CHECK_STATUS(dspy_bootstrap_finetune_prepare(student, ds, &one, 1, &fp, &job), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "do not match: 2 != 1");
    /* no teacher: the student teaches itself (its LM is not launched here, so every example
     * fails and the budget stops the run) */
    fp.max_errors = 2;
    CHECK_STATUS(dspy_bootstrap_finetune_prepare(student, ds, NULL, 0, &fp, &job), DSPY_ERR_CANCELLED);
    dspy_log_set_level(DSPY_LOG_INFO);
    dspy_module_free(one);
    dspy_dataset_free(ds);
    dspy_module_free(student);
    dspy_module_free(teacher);
    dspy_lm_free(local);
    dspy_lm_free(tlm);
}

int main(void) {
    RUN(test_cc29_1_prepare_finetune_data);
    RUN(test_cc29_3_4_trace_data);
    RUN(test_partial_parse_reward);
    RUN(test_errors_counted_and_budget);
    RUN(test_cc30_4_dirs_and_names);
    RUN(test_prepare_tutorial);
    RUN(test_multitask_and_jobs);
    return check_summary("test_bootstrap");
}
