/* test_compile_api.c — dspy/compile.h through the library: BootstrapFinetune.compile with the
 * oracle teacher and a tiny random student (one real optimizer step) returns a NEW program on
 * "openai/local:<output_dir>" that keeps the student LM's kwargs and records the chat date,
 * leaving the student untouched (spec §16.6); launch/kill set and remove api_base around a real
 * `dspy serve` (one server per model directory, LMs with an api_base left alone, non-local LMs
 * skipped); train_kwargs JSON -> trainer params; errors for a non-local student LM, a student
 * without an LM, and bad train_kwargs. */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "dspy/compile.h"
#include "dspy/datasets.h"
#include "dspy/oracle.h"
#include "dspy/settings.h"

static char g_student[1024];

static dspy_json *js(const char *text) {
    dspy_json *v = NULL;
    dspy_json_parse(text, strlen(text), "test", &v);
    return v;
}

static void test_train_params_from_kwargs(void) {
    dspy_train_params p = dspy_train_params_default();
    dspy_json *kw = js("{\"num_train_epochs\": 3, \"learning_rate\": 1e-05, \"use_peft\": true, \"max_seq_length\": null, "
                       "\"output_dir\": \"/tmp/x\", \"device\": null, \"packing\": false, \"warmup_ratio\": 0.1}");
    CHECK_OK(dspy_train_params_from_kwargs(&p, kw));
    CHECK_INT(p.num_train_epochs, 3);
    CHECK_NEAR(p.learning_rate, 1e-5, 0);
    CHECK(p.use_peft);
    CHECK(!p.packing);
    CHECK_INT(p.max_seq_length, dspy_train_params_default().max_seq_length); /* None: the default */
    CHECK_STR(p.output_dir, "/tmp/x");
    CHECK_NEAR(p.warmup_ratio, 0.1, 0);
    dspy_json_decref(kw);
    /* errors name the key; p is unchanged */
    dspy_train_params q = dspy_train_params_default();
    kw = js("{\"num_train_epochs\": 2, \"no_such_key\": 1}");
    CHECK_STATUS(dspy_train_params_from_kwargs(&q, kw), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "no_such_key");
    CHECK_INT(q.num_train_epochs, dspy_train_params_default().num_train_epochs);
    dspy_json_decref(kw);
    kw = js("{\"learning_rate\": [1]}");
    CHECK_STATUS(dspy_train_params_from_kwargs(&q, kw), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "train_kwargs[\"learning_rate\"]");
    dspy_json_decref(kw);
    kw = js("[1]");
    CHECK_STATUS(dspy_train_params_from_kwargs(&q, kw), DSPY_ERR_ARG);
    dspy_json_decref(kw);
}

static dspy_module *cot(void) {
    dspy_module *m = NULL;
    CHECK_OK(dspy_chain_of_thought_new_text("text -> label: Literal['card_arrival', 'card_payment_wrong_exchange_rate', 'extra_charge_on_statement', "
                                            "'exchange_rate', 'activate_my_card']", NULL, NULL, &m));
    return m;
}

static dspy_lm *local_lm(const char *dir, double temperature) {
    char model[1200];
    snprintf(model, sizeof model, "openai/local:%s", dir);
    dspy_lm_params lp = dspy_lm_params_default();
    lp.temperature = temperature;
    lp.max_tokens = 8;
    lp.cache = 0;
    dspy_lm *lm = NULL;
    CHECK_OK(dspy_lm_new(model, &lp, &lm));
    return lm;
}

static const char *api_base(dspy_lm *lm) {
    static char buf[256];
    dspy_json *kw = dspy_lm_kwargs(lm);
    snprintf(buf, sizeof buf, "%s", dspy_json_str_or(kw, "api_base", ""));
    dspy_json_decref(kw);
    return buf;
}

static void test_compile_launch_kill(void) {
    dspy_banking77_params bp = dspy_banking77_params_default();
    bp.data_dir = test_shared("data/banking77");
    dspy_dataset *train = NULL, *trainset = NULL, *two = NULL;
    CHECK_OK(dspy_banking77_load(&bp, DSPY_BANKING77_TRAIN, &train, NULL));
    CHECK_OK(dspy_banking77_tutorial_split(train, &trainset, NULL));
    CHECK_OK(dspy_dataset_slice(trainset, 0, 2, &two));
    dspy_oracle *oracle = NULL;
    dspy_lm *teacher_lm = NULL, *student_lm = local_lm(g_student, 0.0);
    CHECK_OK(dspy_oracle_new(train, NULL, &oracle));
    CHECK_OK(dspy_oracle_lm_new(oracle, NULL, NULL, &teacher_lm));
    dspy_module *student = cot(), *teacher = cot(), *compiled = NULL;
    CHECK_OK(dspy_module_set_lm(student, student_lm));
    CHECK_OK(dspy_module_set_lm(teacher, teacher_lm));

    dspy_bootstrap_finetune_params p = dspy_bootstrap_finetune_params_default();
    char ftdir[1100];
    snprintf(ftdir, sizeof ftdir, "%s/finetune", test_tmpdir());
    p.prepare.finetune_dir = ftdir;
    p.prepare.num_threads = 2;
    p.prepare.display_progress = false;
    p.prepare.train_kwargs = "{\"max_steps\": 1, \"packing\": false, \"gradient_accumulation_steps\": 1, "
                             "\"learning_rate\": 0.001}";
    p.train_threads = 1;
    p.chat_date = "01 Jan 2025";
    dspy_bootstrap_finetune_report rep = {0};
    dspy_module *teachers[] = {teacher};
    CHECK_OK(dspy_bootstrap_finetune_compile(student, two, teachers, 1, &p, &compiled, &rep));
    CHECK(compiled != NULL && compiled != student);
    CHECK_INT(rep.bootstrap.examples, 2);
    CHECK_INT(rep.bootstrap.items, 2);
    CHECK_INT(rep.n_runs, 1);
    if (!compiled || rep.n_runs != 1) goto done;
    const dspy_finetune_run *run = &rep.runs[0];
    CHECK_STR(run->base_model, g_student);
    CHECK_INT(run->n_records, 2);
    CHECK_INT(run->train.steps, 1);
    CHECK_CONTAINS(run->data_path, ftdir);
    CHECK_CONTAINS(run->train_kwargs, "\"max_steps\":1");
    char want[1200];
    snprintf(want, sizeof want, "openai/local:%s", run->output_dir);
    CHECK_STR(run->finetuned_model, want);
    snprintf(want, sizeof want, "%s/model.safetensors", run->output_dir);
    CHECK(access(want, R_OK) == 0);
    /* the new program: compiled, its predictor on the fine-tuned model with the student's kwargs */
    CHECK(dspy_module_compiled(compiled));
    dspy_lm *ft = NULL;
    CHECK_OK(dspy_module_get_lm(compiled, &ft));
    CHECK(ft != NULL && ft != student_lm);
    if (!ft) goto done;
    CHECK_STR(dspy_lm_model(ft), run->finetuned_model);
    dspy_json *state = dspy_lm_dump_state(ft);
    CHECK_NEAR(dspy_json_num_or(state, "temperature", -1), 0.0, 0);
    CHECK_INT(dspy_json_int_or(state, "max_tokens", -1), 8);
    CHECK_STR(dspy_json_str_or(dspy_json_get(state, "launch_kwargs"), "chat_date", ""), "01 Jan 2025");
    dspy_json_decref(state);
    /* the student is untouched */
    dspy_lm *s_lm = NULL;
    CHECK_OK(dspy_module_get_lm(student, &s_lm));
    CHECK(s_lm == student_lm);
    CHECK(!dspy_module_compiled(student));

    /* launch: api_base points at a real server; a call goes through it; kill removes it */
    dspy_local_params lpar = dspy_local_params_default();
    lpar.dspy_bin = test_bin("dspy");
    lpar.log_dir = test_tmpdir();
    lpar.timeout_s = 120;
    const char *extra[] = {"--threads", "1"};
    lpar.extra_args = extra;
    lpar.n_extra_args = 2;
    dspy_launched *l = NULL;
    CHECK_OK(dspy_program_launch(compiled, &lpar, &l));
    CHECK_INT(dspy_launched_count(l), 1);
    dspy_local_server *srv = dspy_launched_server(l, 0);
    CHECK(dspy_launched_server(l, 1) == NULL);
    if (srv) {
        CHECK_STR(api_base(ft), dspy_local_api_base(srv));
        CHECK_STR(dspy_local_model_path(srv), run->output_dir);
        char *logs = NULL;
        CHECK_OK(dspy_local_get_logs(srv, &logs));
        CHECK_CONTAINS(logs, "listening on");
        free(logs);
    }
    /* launching again: the LM has an api_base, nothing new starts */
    dspy_launched *again = NULL;
    CHECK_OK(dspy_program_launch(compiled, &lpar, &again));
    CHECK_INT(dspy_launched_count(again), 0);
    dspy_launched_free(again);
    dspy_json *in = js("{\"text\": \"I am still waiting on my card?\"}");
    dspy_prediction *pred = NULL;
    dspy_status st = dspy_module_call(compiled, in, NULL, &pred);
    /* a one-step random model rarely answers in the format; either way the server answered */
    CHECK(st == DSPY_OK || st == DSPY_ERR_PARSE);
    CHECK_INT(dspy_history_len(dspy_lm_history(ft)) >= 1, 1);
    dspy_prediction_free(pred);
    dspy_json_decref(in);
    pid_t pid = srv ? dspy_local_pid(srv) : 0;
    CHECK_OK(dspy_program_kill(l));
    CHECK_STR(api_base(ft), "");
    CHECK_OK(dspy_program_kill(l)); /* idempotent */
    if (pid > 0) CHECK(kill(pid, 0) != 0); /* gone and reaped */
    dspy_launched_free(l);
    /* after kill a call fails at once, saying the model is not launched */
    in = js("{\"text\": \"hello\"}");
    CHECK_STATUS(dspy_module_call(compiled, in, NULL, &pred), DSPY_ERR_STATE);
    dspy_json_decref(in);
done:
    dspy_bootstrap_finetune_report_clear(&rep);
    dspy_module_free(compiled);
    dspy_module_free(student);
    dspy_module_free(teacher);
    dspy_lm_free(student_lm);
    dspy_lm_free(teacher_lm);
    dspy_oracle_free(oracle);
    dspy_dataset_free(two);
    dspy_dataset_free(trainset);
    dspy_dataset_free(train);
}

static void test_compile_errors(void) {
    dspy_dataset *ds = NULL;
    dspy_example *e = NULL;
    static const char *const key[] = {"text"};
    CHECK_OK(dspy_dataset_new(&ds));
    dspy_example_new(&e);
    dspy_example_set_str(e, "text", "I am still waiting on my card?");
    dspy_example_set_inputs(e, key, 1);
    dspy_dataset_append(ds, e);
    dspy_module *student = cot(), *out = NULL;
    dspy_bootstrap_finetune_params p = dspy_bootstrap_finetune_params_default();
    p.prepare.display_progress = false;
    char ftdir[1100];
    snprintf(ftdir, sizeof ftdir, "%s/finetune-errors", test_tmpdir());
    p.prepare.finetune_dir = ftdir;
    /* no LM on the student */
    CHECK_STATUS(dspy_bootstrap_finetune_compile(student, ds, NULL, 0, &p, &out, NULL), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "does not have an LM assigned");
    CHECK(out == NULL);
    /* a student LM that is not local: the scripted LM teaches itself, the trainer refuses */
    dspy_json *replies = js("[\"[[ ## reasoning ## ]]\\nr\\n\\n[[ ## label ## ]]\\ncard_arrival\\n\\n[[ ## completed ## ]]\"]");
    dspy_lm *lm = NULL;
    CHECK_OK(dspy_lm_new_scripted(replies, true, NULL, &lm));
    CHECK_OK(dspy_module_set_lm(student, lm));
    dspy_bootstrap_finetune_report rep = {0};
    CHECK_STATUS(dspy_bootstrap_finetune_compile(student, ds, NULL, 0, &p, &out, &rep), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "is not a local model");
    CHECK(out == NULL);
    CHECK_INT(rep.bootstrap.examples, 1); /* the report says how far it got */
    dspy_bootstrap_finetune_report_clear(&rep);
    /* bad train_kwargs are named */
    dspy_lm *loc = local_lm(g_student, 0.0);
    dspy_module *teacher = cot();
    CHECK_OK(dspy_module_set_lm(student, loc));
    CHECK_OK(dspy_module_set_lm(teacher, lm));
    p.prepare.train_kwargs = "{\"num_train_epochs\": \"many\"}";
    dspy_module *teachers[] = {teacher};
    CHECK_STATUS(dspy_bootstrap_finetune_compile(student, ds, teachers, 1, &p, &out, NULL), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "num_train_epochs");
    dspy_module_free(teacher);
    dspy_module_free(student);
    dspy_lm_free(lm);
    dspy_lm_free(loc);
    dspy_json_decref(replies);
    dspy_dataset_free(ds);
}

/* A module with two Predict children, for launch's one-server-per-directory rule. */
static dspy_status two_forward(dspy_module *self, const dspy_json *inputs, const dspy_call_options *opt,
                               dspy_prediction **out) {
    return dspy_module_call(dspy_module_child(self, "a"), inputs, opt, out);
}
static const dspy_module_vtable k_two = {"Two", two_forward, NULL, NULL};

static void test_launch_shared_and_skipped(void) {
    dspy_module *parent = NULL, *a = NULL, *b = NULL;
    CHECK_OK(dspy_module_new(&k_two, NULL, &parent));
    CHECK_OK(dspy_predict_new_text("text -> label", NULL, NULL, &a));
    CHECK_OK(dspy_predict_new_text("text -> label", NULL, NULL, &b));
    CHECK_OK(dspy_module_add_child(parent, "a", a));
    CHECK_OK(dspy_module_add_child(parent, "b", b));
    /* two LM objects, one model directory: one server for both */
    dspy_lm *l1 = local_lm(g_student, 0.0), *l2 = local_lm(g_student, 0.5);
    CHECK_OK(dspy_module_set_lm(a, l1));
    CHECK_OK(dspy_module_set_lm(b, l2));
    dspy_local_params lp = dspy_local_params_default();
    lp.dspy_bin = test_bin("dspy");
    lp.log_dir = test_tmpdir();
    lp.timeout_s = 120;
    const char *extra[] = {"--threads", "1"};
    lp.extra_args = extra;
    lp.n_extra_args = 2;
    dspy_launched *l = NULL;
    CHECK_OK(dspy_program_launch(parent, &lp, &l));
    CHECK_INT(dspy_launched_count(l), 1);
    CHECK(strlen(api_base(l1)) > 0);
    char base1[256];
    snprintf(base1, sizeof base1, "%s", api_base(l1));
    CHECK_STR(api_base(l2), base1);
    dspy_launched_free(l); /* kills and clears */
    CHECK_STR(api_base(l1), "");
    CHECK_STR(api_base(l2), "");
    /* a non-local LM is skipped; a launch failure leaves nothing running and says why */
    dspy_json *replies = js("[\"x\"]");
    dspy_lm *scripted = NULL;
    CHECK_OK(dspy_lm_new_scripted(replies, true, NULL, &scripted));
    CHECK_OK(dspy_module_set_lm(a, scripted));
    dspy_lm *missing = local_lm("/nonexistent/model/dir", 0.0);
    CHECK_OK(dspy_module_set_lm(b, missing));
    lp.timeout_s = 30;
    CHECK(dspy_program_launch(parent, &lp, &l) != DSPY_OK);
    CHECK(l == NULL);
    CHECK_CONTAINS(dspy_errmsg(), "predictor 'b'");
    CHECK_STR(api_base(missing), "");
    CHECK_OK(dspy_module_set_lm(b, scripted));
    CHECK_OK(dspy_program_launch(parent, &lp, &l));
    CHECK_INT(dspy_launched_count(l), 0);
    dspy_launched_free(l);
    dspy_lm_free(scripted);
    dspy_lm_free(missing);
    dspy_json_decref(replies);
    dspy_lm_free(l1);
    dspy_lm_free(l2);
    dspy_module_free(a);
    dspy_module_free(b);
    dspy_module_free(parent);
}

int main(void) {
    RUN(test_train_params_from_kwargs);
    if (!test_have_shared("models/llama3-tokenizer/tokenizer.json") || !test_have_shared("data/banking77/train.csv")) {
        check_skip("../shared (tokenizer, Banking77) is missing");
        return check_summary("test_compile_api");
    }
    snprintf(g_student, sizeof g_student, "%s/student", test_tmpdir());
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' init-model --out '%s' --tokenizer '%s' --seed 2 > /dev/null", test_bin("dspy"),
             g_student, test_shared("models/llama3-tokenizer"));
    if (system(cmd) != 0) {
        CHECK(!"init-model failed");
        return check_summary("test_compile_api");
    }
    RUN(test_compile_launch_kill);
    RUN(test_compile_errors);
    RUN(test_launch_shared_and_skipped);
    dspy_settings_reset();
    return check_summary("test_compile_api");
}
