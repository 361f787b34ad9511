/* bootstrap_finetune.c — dspy/bootstrap.h: BootstrapFinetune.compile up to the training.
 *
 * Follows DSPy 3.3.1 dspy/teleprompt/bootstrap_finetune.py (spec §10.1–10.3, CC-29.2): the
 * teacher checks (prepare_teacher: assert_structural_equivalency, assert_no_shared_predictor),
 * bootstrap_trace_data per teacher, one job per (LM, predictor index or None), the LM check's
 * message and the num_threads check, and LocalProvider.finetune's file, output_dir and train
 * kwargs (§10.5). Differences (spec §16.6): the checks run before the teachers are bootstrapped
 * (same errors, found sooner), the student is deep-copied instead of mutated, and a job without
 * any data is an error here instead of a failed training later.
 */
#include <stdlib.h>
#include <string.h>

#include "dspy/log.h"
#include "dspy/settings.h"
#include "program/bootstrap_priv.h"

static dspy_status nomem(void) { return dspy_fail(DSPY_ERR_NOMEM, "BootstrapFinetune: out of memory"); }

struct dspy_finetune_job {
    dspy_module *student;
    dspy_finetune_task *tasks;
    size_t n_tasks;
    dspy_trace_data *data;
};

dspy_finetune_params dspy_finetune_params_default(void) {
    dspy_finetune_params p = {
        .metric = NULL,
        .multitask = true,
        .exclude_demos = false,
        .num_threads = 0,
        .max_errors = -1,
        .train_kwargs = NULL,
        .finetune_dir = NULL,
        .display_progress = true,
        .progress_out = NULL,
        .log_failures = true,
    };
    return p;
}

void dspy_finetune_job_free(dspy_finetune_job *job) {
    if (!job) return;
    for (size_t i = 0; i < job->n_tasks; i++) {
        dspy_finetune_task *t = &job->tasks[i];
        dspy_lm_free(t->lm);
        free(t->predictors);
        free(t->model);
        free(t->data_path);
        free(t->output_dir);
        free(t->train_kwargs);
    }
    free(job->tasks);
    dspy_module_free(job->student);
    dspy_trace_data_free(job->data);
    free(job);
}

dspy_module *dspy_finetune_job_student(const dspy_finetune_job *job) { return job ? job->student : NULL; }
size_t dspy_finetune_job_n_tasks(const dspy_finetune_job *job) { return job ? job->n_tasks : 0; }
const dspy_finetune_task *dspy_finetune_job_task(const dspy_finetune_job *job, size_t i) {
    return job && i < job->n_tasks ? &job->tasks[i] : NULL;
}
const dspy_trace_data *dspy_finetune_job_trace_data(const dspy_finetune_job *job) { return job ? job->data : NULL; }
dspy_bootstrap_counts dspy_finetune_job_counts(const dspy_finetune_job *job) {
    return dspy_trace_data_counts(job ? job->data : NULL);
}

/* ---- checks -------------------------------------------------------------------------------- */

/* prepare_teacher(student, teacher): AssertionError texts of DSPy as DSPY_ERR_ARG. */
static dspy_status check_teacher(const dspy_named_predictor *sp, size_t ns, dspy_module *teacher, size_t ti) {
    dspy_named_predictor *tp = NULL;
    size_t nt = 0;
    dspy_status st = dspy_module_named_predictors(teacher, &tp, &nt);
    if (st) return st;
    if (nt != ns) {
        st = dspy_fail(DSPY_ERR_ARG,
                       "teacher %zu: Structurally equivalent programs must have the the number of predictors. The number "
                       "of predictors for the two modules do not match: %zu != %zu",
                       ti, ns, nt);
        goto done;
    }
    for (size_t i = 0; i < ns; i++)
        if (strcmp(sp[i].name, tp[i].name) != 0) {
            st = dspy_fail(DSPY_ERR_ARG,
                           "teacher %zu: Program predictor names must match at  corresponding indices for structural "
                           "equivalency. The predictor names for the programs do not match at index %zu: '%s' != '%s'",
                           ti, i, sp[i].name, tp[i].name);
            goto done;
        }
    dspy_str shared = DSPY_STR_INIT;
    for (size_t i = 0; i < ns; i++)
        for (size_t k = 0; k < nt; k++)
            if (sp[i].predictor == tp[k].predictor) dspy_str_appendf(&shared, "%s%s", shared.len ? ", " : "", sp[i].name);
    if (shared.len)
        st = dspy_fail(DSPY_ERR_ARG,
                       "teacher %zu: The programs share the following predictor(s) with each other: %s (deep-copy the "
                       "student to make a teacher)",
                       ti, dspy_str_cstr(&shared));
    dspy_str_free(&shared);
done:
    dspy_named_predictors_free(tp, nt);
    return st;
}

/* "openai/local:org/name" -> "org/name": LocalProvider.finetune's model. */
static char *provider_model(dspy_lm *lm) {
    dspy_json *state = dspy_lm_dump_state(lm);
    const char *ft = state ? dspy_json_str(dspy_json_get(state, "finetuning_model")) : NULL;
    const char *m = ft && *ft ? ft : dspy_lm_model(lm);
    if (strncmp(m, "openai/", 7) == 0) m += 7;
    if (strncmp(m, "local:", 6) == 0) m += 6;
    char *r = strdup(m);
    dspy_json_decref(state);
    return r;
}

/* train_kwargs[lm] or lm.train_kwargs (new reference; NULL = none). */
static dspy_status task_user_kwargs(const dspy_json *user, dspy_lm *lm, dspy_json **out) {
    *out = NULL;
    if (user && dspy_json_size(user) > 0) {
        *out = dspy_json_incref((dspy_json *)user);
        return DSPY_OK;
    }
    dspy_json *state = dspy_lm_dump_state(lm);
    if (!state) return nomem();
    const dspy_json *tk = dspy_json_get(state, "train_kwargs");
    if (tk && dspy_json_typeof(tk) == DSPY_JSON_OBJECT) *out = dspy_json_incref((dspy_json *)tk);
    dspy_json_decref(state);
    return DSPY_OK;
}

/* ---- prepare ------------------------------------------------------------------------------- */

static dspy_status add_task(dspy_finetune_job *job, dspy_lm *lm, int64_t pred_ind, size_t predictor) {
    for (size_t i = 0; i < job->n_tasks; i++) {
        dspy_finetune_task *t = &job->tasks[i];
        if (t->lm == lm && t->pred_ind == pred_ind) {
            size_t *p = realloc(t->predictors, (t->n_predictors + 1) * sizeof *p);
            if (!p) return nomem();
            t->predictors = p;
            p[t->n_predictors++] = predictor;
            return DSPY_OK;
        }
    }
    dspy_finetune_task *tasks = realloc(job->tasks, (job->n_tasks + 1) * sizeof *tasks);
    if (!tasks) return nomem();
    job->tasks = tasks;
    dspy_finetune_task *t = &tasks[job->n_tasks];
    memset(t, 0, sizeof *t);
    t->data_format = "chat";
    t->pred_ind = pred_ind;
    if (!(t->predictors = malloc(sizeof *t->predictors))) return nomem();
    t->predictors[t->n_predictors++] = predictor;
    t->lm = dspy_lm_retain(lm);
    job->n_tasks++;
    return DSPY_OK;
}

/* Prepares and writes the data of task t, then its output_dir and train kwargs. */
static dspy_status build_task(dspy_finetune_job *job, dspy_finetune_task *t, const dspy_named_predictor *sp,
                              const dspy_finetune_params *p, const dspy_json *user_kwargs) {
    dspy_finetune_data_params dp = dspy_finetune_data_params_default();
    dp.pred_ind = t->pred_ind;
    dp.filter_by_score = p->metric != NULL;
    dp.exclude_demos = p->exclude_demos;
    dp.profile = (int)dspy_predict_profile(sp[t->predictors[0]].predictor); /* inference's profile */
    if (p->metric) dspy_log(DSPY_LOG_INFO, "Collected data for %zu examples", dspy_trace_data_len(job->data));
    dspy_json *records = NULL, *kw = NULL;
    dspy_status st = dspy_finetune_data_prepare(job->data, &dp, &records, &t->counts);
    if (st) return st;
    if (p->metric)
        dspy_log(DSPY_LOG_INFO, "After filtering with the metric, %zu examples remain",
                 t->counts.items - t->counts.filtered_out);
    t->n_records = dspy_json_size(records);
    if (t->n_records == 0) {
        st = dspy_fail(DSPY_ERR_STATE,
                       "BootstrapFinetune: no fine-tuning data for %s: of %zu bootstrapped examples, %zu failed to "
                       "parse and %zu were filtered out by the metric",
                       dspy_lm_model(t->lm), t->counts.items, t->counts.failed, t->counts.filtered_out);
        goto done;
    }
    dspy_log(DSPY_LOG_INFO, "Using %zu data points for fine-tuning the model: %s", t->n_records, dspy_lm_model(t->lm));
    if ((st = dspy_finetune_data_write(records, p->finetune_dir, &t->data_path))) goto done;
    dspy_log(DSPY_LOG_INFO, "Train data saved to %s", t->data_path);
    if (!(t->model = provider_model(t->lm))) {
        st = nomem();
        goto done;
    }
    if ((st = dspy_finetune_output_dir(t->data_path, t->model, &t->output_dir))) goto done;
    if ((st = task_user_kwargs(user_kwargs, t->lm, &kw))) goto done;
    st = dspy_finetune_train_kwargs(kw, t->output_dir, &t->train_kwargs);
done:
    dspy_json_decref(kw);
    dspy_json_decref(records);
    return st;
}

dspy_status dspy_bootstrap_finetune_prepare(dspy_module *student, const dspy_dataset *trainset,
                                            dspy_module *const *teachers, size_t n_teachers,
                                            const dspy_finetune_params *params, dspy_finetune_job **out) {
    *out = NULL;
    dspy_finetune_params p = params ? *params : dspy_finetune_params_default();
    if (!student || !trainset) return dspy_fail(DSPY_ERR_ARG, "BootstrapFinetune: a student and a trainset are needed");
    if (n_teachers && !teachers) return dspy_fail(DSPY_ERR_ARG, "BootstrapFinetune: teachers is NULL");
    int32_t num_threads = p.num_threads > 0 ? p.num_threads : dspy_settings_num_threads();
    dspy_named_predictor *sp = NULL;
    size_t ns = 0;
    dspy_json *user_kwargs = NULL;
    dspy_finetune_job *job = calloc(1, sizeof *job);
    if (!job) return nomem();
    dspy_log(DSPY_LOG_INFO, "Preparing the student and teacher programs...");
    dspy_status st = dspy_module_named_predictors(student, &sp, &ns);
    if (st) goto done;
    if (ns == 0) {
        st = dspy_fail(DSPY_ERR_ARG, "BootstrapFinetune: the student has no predictors to fine-tune");
        goto done;
    }
    for (size_t i = 0; i < ns; i++)
        if (!dspy_predict_lm(sp[i].predictor)) {
            st = dspy_fail(DSPY_ERR_ARG,
                           "Predictor %zu does not have an LM assigned. Please ensure the module's predictors have "
                           "their LM set before fine-tuning. You can set it using: your_module.set_lm(your_lm)",
                           i);
            goto done;
        }
    if (dspy_settings_adapter(NULL) != DSPY_ADAPTER_CHAT) {
        st = dspy_fail(DSPY_ERR_ARG, "BootstrapFinetune: the JSONAdapter cannot format fine-tuning data (DSPy raises "
                                     "NotImplementedError); configure the ChatAdapter");
        goto done;
    }
    for (size_t t = 0; t < n_teachers; t++)
        if (teachers[t] && (st = check_teacher(sp, ns, teachers[t], t))) goto done;
    if (p.train_kwargs) {
        if ((st = dspy_json_parse(p.train_kwargs, strlen(p.train_kwargs), "train_kwargs", &user_kwargs))) goto done;
        if (dspy_json_typeof(user_kwargs) != DSPY_JSON_OBJECT) {
            st = dspy_fail(DSPY_ERR_ARG, "train_kwargs must be a JSON object, e.g. {\"num_train_epochs\": 3}");
            goto done;
        }
    }
    for (size_t i = 0; i < ns; i++)
        if ((st = add_task(job, dspy_predict_lm(sp[i].predictor), p.multitask ? -1 : (int64_t)i, i))) goto done;
    if (job->n_tasks > (size_t)num_threads) {
        st = dspy_fail(DSPY_ERR_ARG,
                       "BootstrapFinetune requires `num_threads` to be bigger than or equal to the number of fine-tuning "
                       "jobs. There are %zu fine-tuning jobs to start, but the number of threads is: %d! If the "
                       "`multitask` flag is set to False, the number of fine-tuning jobs will be equal to the number of "
                       "predictors in the student program. If the `multitask` flag is set to True, the number of "
                       "fine-tuning jobs will be equal to: 1 if there is only a context LM, or the number of unique LMs "
                       "attached to the predictors in the student program. In any case, the number of fine-tuning jobs "
                       "will be less than or equal to the number of predictors.",
                       job->n_tasks, (int)num_threads);
        goto done;
    }

    dspy_log(DSPY_LOG_INFO, "Bootstrapping data...");
    if ((st = dspy_trace_data_new(&job->data))) goto done;
    dspy_bootstrap_params bp = dspy_bootstrap_params_default();
    bp.metric = p.metric;
    bp.num_threads = num_threads;
    bp.max_errors = p.max_errors;
    bp.display_progress = p.display_progress;
    bp.progress_out = p.progress_out;
    bp.log_failures = p.log_failures;
    bp.on_failure = p.on_failure;
    bp.failure_user = p.failure_user;
    size_t nt = n_teachers ? n_teachers : 1;
    for (size_t t = 0; t < nt; t++) {
        dspy_module *teacher = n_teachers && teachers[t] ? teachers[t] : student;
        dspy_trace_data *d = NULL;
        if ((st = dspy_bootstrap_trace_data(teacher, trainset, &bp, &d))) goto done;
        st = dspy_trace_data_extend(job->data, d);
        dspy_trace_data_free(d);
        if (st) goto done;
    }
    dspy_bootstrap_counts c = dspy_trace_data_counts(job->data);
    if (c.parse_failures || c.errors)
        dspy_log(DSPY_LOG_WARN,
                 "Bootstrapping: %zu of %zu examples failed (%zu unparseable answers, %zu errors); they are skipped",
                 c.parse_failures + c.errors, c.examples, c.parse_failures, c.errors);

    dspy_log(DSPY_LOG_INFO, "Preparing the train data...");
    for (size_t i = 0; i < job->n_tasks; i++)
        if ((st = build_task(job, &job->tasks[i], sp, &p, user_kwargs))) goto done;
    dspy_log(DSPY_LOG_INFO, "%zu fine-tuning job(s) to start", job->n_tasks);

    if ((st = dspy_module_deepcopy(student, &job->student))) goto done;
    if (p.exclude_demos) {
        dspy_named_predictor *cp = NULL;
        size_t nc = 0;
        if ((st = dspy_module_named_predictors(job->student, &cp, &nc))) goto done;
        for (size_t i = 0; i < nc && !st; i++) st = dspy_predict_set_demos(cp[i].predictor, NULL);
        dspy_named_predictors_free(cp, nc);
        if (st) goto done;
    }
    *out = job;
    job = NULL;
done:
    dspy_named_predictors_free(sp, ns);
    dspy_json_decref(user_kwargs);
    dspy_finetune_job_free(job);
    return st;
}
