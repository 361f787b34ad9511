/* compile_prepare.c — everything `dspy compile` checks and builds before its first teacher
 * call (see compile_run.h): the numbers and names of every option, the output folder, the
 * student model directory, the teacher and its API key, the data, the signature against the
 * data and the metric, the oracle stand-in's coverage of the trainset, and every train_kwarg
 * (with LocalProvider's defaults filled in, through the trainer's own parser and range checks).
 * A problem here is a usage error: nothing has been written and no LM called.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "compile_run.h"
#include "dspy/chat_template.h"
#include "dspy/model.h"
#include "dspy/settings.h"

static bool is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool is_file(const char *dir, const char *name) {
    dspy_str p = DSPY_STR_INIT;
    dspy_str_appendf(&p, "%s/%s", dir, name);
    struct stat sb;
    bool ok = dspy_str_ok(&p) && stat(dspy_str_cstr(&p), &sb) == 0 && S_ISREG(sb.st_mode);
    dspy_str_free(&p);
    return ok;
}

/* An absolute copy of `path` (malloc'd; the path need not exist). */
static char *absolute(const char *path) {
    if (path[0] == '/') return strdup(path);
    char *cwd = getcwd(NULL, 0);
    if (!cwd) return NULL;
    dspy_str s = DSPY_STR_INIT;
    dspy_str_appendf(&s, "%s/%s", cwd, path);
    free(cwd);
    return dspy_str_take(&s);
}

/* "key=value" -> kwargs[key] = JSON value (numbers, true/false/True/False, null/None) or string. */
static dspy_status add_train_kwarg(dspy_json *kw, const char *arg) {
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg)
        return dspy_fail(DSPY_ERR_ARG, "--train-kwargs '%s': expected key=value, e.g. --train-kwargs "
                         "num_train_epochs=3", arg);
    char *key = strndup(arg, (size_t)(eq - arg));
    const char *v = eq + 1;
    dspy_json *val = NULL;
    if (strcmp(v, "None") == 0 || strcmp(v, "null") == 0) val = dspy_json_null();
    else if (strcmp(v, "True") == 0 || strcmp(v, "true") == 0) val = dspy_json_bool(true);
    else if (strcmp(v, "False") == 0 || strcmp(v, "false") == 0) val = dspy_json_bool(false);
    else {
        char *end = NULL;
        errno = 0;
        long long i = strtoll(v, &end, 10);
        if (*v && end && !*end && errno == 0) val = dspy_json_int(i);
        else {
            double d = strtod(v, &end);
            val = *v && end && !*end ? dspy_json_real(d) : dspy_json_string(v);
        }
    }
    dspy_status st = key && val ? dspy_json_set(kw, key, val) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!key) dspy_json_decref(val);
    free(key);
    return st;
}

/* The user's train_kwargs as JSON text, checked as the trainer will read them: LocalProvider's
 * defaults filled in, every key known, every value in range. */
static dspy_status check_train_kwargs(run_state *r) {
    const dspy_args *a = r->a;
    dspy_json *kw = dspy_json_object(), *eff = NULL;
    char *eff_text = NULL;
    if (!kw) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_status st = DSPY_OK;
    for (int i = 0; !st && i < dspy_args_count(a, "train-kwargs"); i++)
        st = add_train_kwarg(kw, dspy_args_at(a, "train-kwargs", i));
    if (!st) st = dspy_finetune_train_kwargs(kw, "/nonexistent/output_dir", &eff_text);
    if (!st) st = dspy_json_parse(eff_text, strlen(eff_text), "train_kwargs", &eff);
    if (!st) {
        dspy_train_params tp = dspy_train_params_default();
        st = dspy_train_params_from_kwargs(&tp, eff);
        if (!st) st = dspy_train_params_validate(&tp);
        if (st) st = dspy_fail_wrap(st, "--train-kwargs");
    }
    if (!st && !(r->train_kwargs = dspy_json_dumps(kw, DSPY_JSON_COMPACT | DSPY_JSON_UTF8)))
        st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    free(eff_text);
    dspy_json_decref(eff);
    dspy_json_decref(kw);
    return st;
}

static dspy_status check_student(const char *dir) {
    if (!is_dir(dir))
        return dspy_fail(DSPY_ERR_NOTFOUND, "--student %s: not a directory; give a Hugging Face model directory "
                         "(config.json, model.safetensors, tokenizer.json), e.g. one written by `dspy init-model`", dir);
    dspy_model_config cfg;
    dspy_status st = dspy_model_config_load(dir, &cfg);
    if (st) return dspy_fail_wrap(st, "--student %s", dir);
    if (!is_file(dir, "tokenizer.json"))
        return dspy_fail(DSPY_ERR_NOTFOUND, "--student %s: no tokenizer.json (copy the model's tokenizer files there, "
                         "e.g. `dspy init-model --tokenizer DIR`)", dir);
    if (!is_file(dir, "model.safetensors") && !is_file(dir, "model.safetensors.index.json"))
        return dspy_fail(DSPY_ERR_NOTFOUND, "--student %s: no model.safetensors (weights are needed to fine-tune)", dir);
    dspy_chat_template *tpl = NULL;
    if ((st = dspy_chat_template_load(dir, &tpl))) return dspy_fail_wrap(st, "--student %s: chat template", dir);
    dspy_chat_template_free(tpl);
    return DSPY_OK;
}

static dspy_status check_teacher(const dspy_args *a) {
    const char *teacher = dspy_args_get(a, "teacher");
    if (strcmp(teacher, "oracle") == 0 || strncmp(teacher, "oracle:", 7) == 0) return DSPY_OK;
    if (strncmp(teacher, "openai/", 7) != 0 || !teacher[7])
        return dspy_fail(DSPY_ERR_ARG, "--teacher '%s': use openai/<model> (with --teacher-base-url for any "
                         "OpenAI-compatible server), openai/local:<model dir>, or oracle (the offline stand-in)", teacher);
    if (strncmp(teacher, "openai/local:", 13) == 0) {
        if (!is_dir(teacher + 13))
            return dspy_fail(DSPY_ERR_NOTFOUND, "--teacher %s: %s is not a model directory", teacher, teacher + 13);
        return DSPY_OK;
    }
    const char *base = dspy_args_get(a, "teacher-base-url"), *key = dspy_args_get(a, "teacher-api-key");
    if (!key) key = getenv("OPENAI_API_KEY");
    if (base && strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0)
        return dspy_fail(DSPY_ERR_ARG, "--teacher-base-url '%s': expected an http:// or https:// URL", base);
    if (!base && (!key || !*key))
        return dspy_fail(DSPY_ERR_ARG, "--teacher %s needs an API key: set OPENAI_API_KEY (or --teacher-api-key), "
                         "point --teacher-base-url at another OpenAI-compatible server, or run offline with --teacher "
                         "oracle (a labelled stand-in)", teacher);
    return DSPY_OK;
}

static dspy_status make_teacher_lm(run_state *r) {
    const dspy_args *a = r->a;
    const char *model = dspy_args_get(a, "teacher");
    dspy_lm_params lp = dspy_lm_params_default();
    lp.profile = r->t.profile == DSPY_PROFILE_V26 ? DSPY_LM_V26 : DSPY_LM_V33;
    long tmt = 0;
    dspy_status st = dspy_args_int_in(a, "teacher-max-tokens", 1, INT32_MAX, &tmt);
    if (st) return st;
    if (tmt) lp.max_tokens = (int32_t)tmt;
    if (strcmp(model, "oracle") == 0 || strncmp(model, "oracle:", 7) == 0) {
        r->teacher_is_oracle = true;
        /* a stand-in over every labelled example the run knows; it answers one input and one output */
        const dspy_signature *sig = dspy_predict_signature(dspy_module_is_predict(r->program)
                                                               ? r->program : dspy_module_child(r->program, "predict"));
        size_t outs = 0;
        for (size_t i = 0; i < dspy_signature_n_fields(sig); i++)
            if (dspy_signature_field_kind(sig, i) == DSPY_FIELD_OUTPUT &&
                strcmp(dspy_signature_field_name(sig, i), "reasoning") != 0)
                outs++;
        size_t lab;
        if (dspy_signature_n_inputs(sig) != 1 || outs != 1 || !dspy_signature_find(sig, r->t.label.field, &lab))
            return dspy_fail(DSPY_ERR_ARG, "--teacher oracle answers programs with one input and one output, the label "
                             "field '%s' (\"text -> label\"); this signature has %zu inputs and %zu outputs: use a real "
                             "teacher", r->t.label.field, dspy_signature_n_inputs(sig), outs);
        dspy_oracle_params op = dspy_oracle_params_default();
        op.input_field = dspy_signature_field_name(sig, 0);
        op.output_field = r->t.label.field;
        if ((st = dspy_oracle_new(r->t.known, &op, &r->oracle))) return dspy_fail_wrap(st, "--teacher oracle");
        /* it must know every text it will be asked */
        const dspy_dataset *sets[2] = {r->t.trainset, r->baseline_teacher ? r->t.devset : NULL};
        for (int s = 0; s < 2; s++)
            for (size_t i = 0; sets[s] && i < dspy_dataset_len(sets[s]); i++) {
                const dspy_example *ex = dspy_dataset_get(sets[s], i);
                bool known = false;
                const char *text = dspy_example_get_str(ex, op.input_field);
                for (size_t k = 0; text && !known && k < dspy_dataset_len(r->t.known); k++) {
                    const char *kt = dspy_example_get_str(dspy_dataset_get(r->t.known, k), op.input_field);
                    known = kt && strcmp(kt, text) == 0;
                }
                if (!known)
                    return dspy_fail(DSPY_ERR_ARG, "--teacher oracle: %s example %zu has no label anywhere in the data, "
                                     "so the stand-in cannot answer it; label it or use a real teacher",
                                     s == 0 ? "trainset" : "devset", i);
            }
        return dspy_oracle_lm_new(r->oracle, strcmp(model, "oracle") == 0 ? (r->t.banking77 ? "oracle:banking77"
                                                                                           : "oracle:data")
                                                                          : model,
                                  &lp, &r->teacher_lm);
    }
    dspy_json *kw = dspy_json_object();
    if (!kw) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    const char *base = dspy_args_get(a, "teacher-base-url"), *key = dspy_args_get(a, "teacher-api-key");
    if (!key) key = getenv("OPENAI_API_KEY");
    bool local = strncmp(model, "openai/local:", 13) == 0;
    if (base) st = dspy_json_set_str(kw, "api_base", base);
    if (!st && !local) st = dspy_json_set_str(kw, "api_key", key && *key ? key : "EMPTY");
    lp.kwargs = kw;
    if (!st) st = dspy_lm_new(model, &lp, &r->teacher_lm);
    dspy_json_decref(kw);
    return st;
}

static dspy_status make_student_lm(run_state *r) {
    char *abs = absolute(dspy_args_get(r->a, "student"));
    if (!abs) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_str model = DSPY_STR_INIT;
    dspy_str_appendf(&model, "openai/local:%s", abs);
    free(abs);
    dspy_lm_params lp = dspy_lm_params_default();
    lp.profile = r->t.profile == DSPY_PROFILE_V26 ? DSPY_LM_V26 : DSPY_LM_V33;
    lp.temperature = r->temperature; /* explicit, 0.0 by default: reproducible evaluations (spec §16.5) */
    lp.max_tokens = (int32_t)r->max_tokens;
    dspy_status st = dspy_str_ok(&model) ? dspy_lm_new(dspy_str_cstr(&model), &lp, &r->student_lm)
                                         : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_str_free(&model);
    return st;
}

static dspy_status parse_numbers(run_state *r) {
    const dspy_args *a = r->a;
    r->num_threads = 4;
    r->max_tokens = 1000;
    r->table_rows = 5;
    r->launch_timeout = 600;
    r->max_errors = -1;
    dspy_status st = dspy_args_int_in(a, "num-threads", 1, 256, &r->num_threads);
    if (!st) st = dspy_args_int_in(a, "max-tokens", 1, INT32_MAX, &r->max_tokens);
    if (!st) st = dspy_args_int_in(a, "display-table", -1, INT32_MAX, &r->table_rows);
    if (!st) st = dspy_args_int_in(a, "max-errors", 1, INT32_MAX, &r->max_errors);
    if (!st) st = dspy_args_int_in(a, "train-threads", 1, 1024, &r->train_threads);
    if (!st) st = dspy_args_int_in(a, "teacher-max-tokens", 1, INT32_MAX, &(long){0});
    if (!st) st = dspy_args_number(a, "temperature", &r->temperature);
    if (!st) st = dspy_args_number(a, "launch-timeout", &r->launch_timeout);
    if (!st && r->launch_timeout <= 0) st = dspy_fail(DSPY_ERR_ARG, "--launch-timeout must be positive");
    long lt = -1, ld = -1;
    if (!st) st = dspy_args_int_in(a, "limit-train", 1, INT32_MAX, &lt);
    if (!st) st = dspy_args_int_in(a, "limit-dev", 1, INT32_MAX, &ld);
    return st;
}

static dspy_status parse_baselines(run_state *r) {
    const char *b = dspy_args_get(r->a, "baselines");
    r->baseline_student = r->baseline_teacher = false;
    if (strcmp(b, "none") == 0) return DSPY_OK;
    for (const char *p = b; *p;) {
        size_t n = strcspn(p, ",");
        if (n == 7 && strncmp(p, "student", 7) == 0) r->baseline_student = true;
        else if (n == 7 && strncmp(p, "teacher", 7) == 0) r->baseline_teacher = true;
        else
            return dspy_fail(DSPY_ERR_ARG, "--baselines '%s': use student,teacher (the default), student, teacher or "
                             "none", b);
        p += n + (p[n] == ',');
    }
    return DSPY_OK;
}

dspy_status compile_prepare(run_state *r) {
    const dspy_args *a = r->a;
    dspy_status st = parse_numbers(r);
    if (!st) st = parse_baselines(r);
    if (st) return st;
    r->verbose = dspy_args_flag(a, "verbose");
    r->filter_traces = dspy_args_flag(a, "filter-traces");
    r->device = dspy_args_get(a, "device");
    if (strcmp(r->device, "auto") != 0 && strcmp(r->device, "cpu") != 0 && strcmp(r->device, "cuda") != 0)
        return dspy_fail(DSPY_ERR_ARG, "--device '%s': use auto, cpu or cuda", r->device);
    const char *out = dspy_args_get(a, "out");
    if (!(r->out_dir = absolute(out))) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_str prog = DSPY_STR_INIT;
    dspy_str_appendf(&prog, "%s/program.json", r->out_dir);
    bool done_before = dspy_str_ok(&prog) && access(dspy_str_cstr(&prog), F_OK) == 0;
    dspy_str_free(&prog);
    if (done_before && !dspy_args_flag(a, "force"))
        return dspy_fail(DSPY_ERR_ARG, "--out %s holds a finished run (program.json); pass --force to run again there "
                         "(the teacher's cached answers are reused), or choose another folder", out);
    if ((st = check_student(dspy_args_get(a, "student"))) || (st = check_teacher(a))) return st;
    if ((st = check_train_kwargs(r))) return st;
    /* the task: fields, metric, data, signature, program */
    long lt = -1, ld = -1;
    dspy_args_int_in(a, "limit-train", 1, INT32_MAX, &lt);
    dspy_args_int_in(a, "limit-dev", 1, INT32_MAX, &ld);
    if ((st = task_parse(&r->t, a, true))) return st;
    if (r->filter_traces && r->t.metric_kind == TASK_METRIC_NONE)
        return dspy_fail(DSPY_ERR_ARG, "--filter-traces keeps the traces the metric scores truthy: give a --metric");
    if ((st = task_load(&r->t, a, dspy_args_get(a, "trainset"), dspy_args_get(a, "split"), lt, ld))) return st;
    if ((st = task_signature(&r->t, a))) return st;
    if ((st = task_program(&r->t, &r->program))) return dspy_fail_wrap(st, "--signature");
    const dspy_module *pred = dspy_module_is_predict(r->program) ? r->program : dspy_module_child(r->program, "predict");
    if ((st = task_check(&r->t, dspy_predict_signature(pred)))) return st;
    if (r->filter_traces) {
        for (size_t i = 0; i < dspy_dataset_len(r->t.trainset); i++)
            if (!dspy_example_has(dspy_dataset_get(r->t.trainset, i), r->t.metric_field))
                return dspy_fail(DSPY_ERR_ARG, "--filter-traces scores the teacher's traces against the trainset's "
                                 "labels, but trainset example %zu has no '%s'", i, r->t.metric_field);
    }
    /* LMs (built, not called) */
    if ((st = make_teacher_lm(r)) || (st = make_student_lm(r))) return st;
    if (dspy_args_get(a, "chat-date")) {
        snprintf(r->chat_date, sizeof r->chat_date, "%s", dspy_args_get(a, "chat-date"));
    } else {
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(r->chat_date, sizeof r->chat_date, "%d %b %Y", &tm);
    }
    /* student_classify = classify.deepcopy(); student_classify.set_lm(student_lm); likewise the teacher */
    if ((st = dspy_module_deepcopy(r->program, &r->student)) || (st = dspy_module_set_lm(r->student, r->student_lm)) ||
        (st = dspy_module_deepcopy(r->program, &r->teacher)) || (st = dspy_module_set_lm(r->teacher, r->teacher_lm)))
        return st;
    /* the tutorial's first run bootstraps from the inputs alone; --filter-traces needs the labels */
    if (!r->filter_traces) {
        dspy_dataset *u = NULL;
        if ((st = dspy_dataset_inputs_only(r->t.trainset, &u))) return st;
        dspy_dataset_free(r->t.trainset);
        r->t.trainset = u;
    }
    /* servers: serve args, --device */
    size_t n = 0;
    bool seqs_given = false;
    for (int i = 0; i < dspy_args_count(a, "serve-arg"); i++) {
        r->serve_args[n++] = dspy_args_at(a, "serve-arg", i);
        seqs_given = seqs_given || strncmp(r->serve_args[n - 1], "--max-seqs", 10) == 0;
    }
    /* the servers decode as many sequences together as there are threads calling them (the
     * default 8 would queue half of the tutorial's 16), unless --serve-arg says otherwise */
    if (!seqs_given && r->num_threads > 8) {
        snprintf(r->max_seqs_arg, sizeof r->max_seqs_arg, "--max-seqs=%ld", r->num_threads);
        r->serve_args[n++] = r->max_seqs_arg;
    }
    if (strcmp(r->device, "auto") != 0) {
        snprintf(r->device_arg, sizeof r->device_arg, "--device=%s", r->device);
        r->serve_args[n++] = r->device_arg;
    }
    r->lp = dspy_local_params_default();
    r->lp.timeout_s = r->launch_timeout;
    r->lp.extra_args = r->serve_args;
    r->lp.n_extra_args = n;
    return DSPY_OK;
}
