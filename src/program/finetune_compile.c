/* finetune_compile.c — BootstrapFinetune.compile: prepare (bootstrap.h), fine-tune each job
 * with the local trainer (train.h), and return a new program using the fine-tuned models
 * (dspy/compile.h). Follows DSPy 3.3.1 dspy/teleprompt/bootstrap_finetune.py and
 * dspy/clients/lm_local.py (spec §10.2, §10.5) with the project decisions of §16.
 * Not here: bootstrapping and the data files (bootstrap.c), training (src/train), serving.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dspy/clock.h"
#include "dspy/compile.h"
#include "dspy/log.h"

/* train.h: chat_date NULL renders "Today Date: 26 Jul 2024" (the template's fallback) */
#define DSPY_TRAIN_DEFAULT_CHAT_DATE "26 Jul 2024"

dspy_bootstrap_finetune_params dspy_bootstrap_finetune_params_default(void) {
    dspy_bootstrap_finetune_params p;
    memset(&p, 0, sizeof p);
    p.prepare = dspy_finetune_params_default();
    return p;
}

void dspy_bootstrap_finetune_report_clear(dspy_bootstrap_finetune_report *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_runs; i++) {
        dspy_finetune_run *x = &r->runs[i];
        free(x->base_model);
        free(x->data_path);
        free(x->output_dir);
        free(x->finetuned_model);
        free(x->train_kwargs);
    }
    free(r->runs);
    memset(r, 0, sizeof *r);
}

dspy_status dspy_train_params_from_kwargs(dspy_train_params *p, const dspy_json *kwargs) {
    if (!kwargs) return DSPY_OK;
    if (dspy_json_typeof(kwargs) != DSPY_JSON_OBJECT)
        return dspy_fail(DSPY_ERR_ARG, "train_kwargs must be a JSON object");
    dspy_train_params work = *p;
    for (void *it = dspy_json_iter(kwargs); it; it = dspy_json_next(kwargs, it)) {
        const char *key = dspy_json_iter_key(it);
        const dspy_json *v = dspy_json_iter_value(it);
        char buf[64];
        const char *text = NULL;
        switch (dspy_json_typeof(v)) {
        case DSPY_JSON_NULL: text = "None"; break;
        case DSPY_JSON_BOOL: text = dspy_json_truthy(v) ? "true" : "false"; break;
        case DSPY_JSON_INT: snprintf(buf, sizeof buf, "%lld", (long long)dspy_json_intval(v)); text = buf; break;
        case DSPY_JSON_REAL: dspy_py_float_repr(dspy_json_number(v), buf, sizeof buf); text = buf; break;
        case DSPY_JSON_STRING: text = dspy_json_str(v); break;
        default:
            return dspy_fail(DSPY_ERR_ARG, "train_kwargs[\"%s\"]: lists and objects are not accepted; give a "
                             "number, a boolean, a string or null", key);
        }
        dspy_status st = dspy_train_params_set(&work, key, text);
        if (st) return dspy_fail_wrap(st, "train_kwargs");
    }
    *p = work;
    return DSPY_OK;
}

/* Fine-tunes one task and returns the fine-tuned LM (a copy of the task's LM). */
static dspy_status run_task(const dspy_finetune_task *t, const dspy_bootstrap_finetune_params *p,
                            dspy_finetune_run *run, dspy_lm **out) {
    *out = NULL;
    const char *model = dspy_lm_model(t->lm);
    if (strncmp(model, "openai/local:", 13) != 0)
        return dspy_fail(DSPY_ERR_ARG, "BootstrapFinetune: the student LM \"%s\" is not a local model; only "
                         "\"openai/local:<model dir>\" LMs can be fine-tuned here (DSPy's LocalProvider)", model);
    dspy_json *kw = NULL;
    dspy_status st = dspy_json_parse(t->train_kwargs, strlen(t->train_kwargs), "train_kwargs", &kw);
    if (st) return st;
    dspy_train_params tp = dspy_train_params_default();
    if (p->train_threads > 0) tp.n_threads = p->train_threads;
    if (p->chat_date) tp.chat_date = p->chat_date;
    st = dspy_train_params_from_kwargs(&tp, kw);
    const char *out_dir = tp.output_dir ? tp.output_dir : t->output_dir; /* LocalProvider re-reads it */
    run->base_model = strdup(t->model);
    run->data_path = strdup(t->data_path);
    run->output_dir = strdup(out_dir);
    run->train_kwargs = strdup(t->train_kwargs);
    run->n_records = t->n_records;
    run->data = t->counts;
    if (!st && (!run->base_model || !run->data_path || !run->output_dir || !run->train_kwargs))
        st = dspy_fail(DSPY_ERR_NOMEM, "BootstrapFinetune: out of memory");
    if (!st) {
        dspy_log(DSPY_LOG_INFO, "Starting LocalProvider fine-tuning of %s on %zu examples (%s) into %s", t->model,
                 t->n_records, t->data_path, out_dir);
        st = dspy_finetune(t->model, t->data_path, out_dir, &tp, p->progress, p->progress_ud, &run->train);
        if (st) dspy_fail_wrap(st, "fine-tuning %s", t->model);
    }
    dspy_str m = DSPY_STR_INIT;
    if (!st) {
        dspy_str_appendf(&m, "openai/local:%s", out_dir);
        run->finetuned_model = strdup(dspy_str_cstr(&m));
        dspy_json *ov = dspy_json_object();
        if (!ov || !run->finetuned_model) {
            dspy_json_decref(ov);
            st = dspy_fail(DSPY_ERR_NOMEM, "BootstrapFinetune: out of memory");
        } else {
            st = dspy_json_set_str(ov, "model", run->finetuned_model);
            /* lm.copy(model=...): the base LM's api_base (if it was launched) is not the new one's */
            if (!st) st = dspy_json_set(ov, "api_base", dspy_json_null());
            /* serve with the date the training data was rendered with (NULL: the trainer's
             * default, train.h) — recorded in launch_kwargs, so a saved program keeps it */
            dspy_json *lk = dspy_json_object();
            if (!st && !lk) st = dspy_fail(DSPY_ERR_NOMEM, "BootstrapFinetune: out of memory");
            if (!st) st = dspy_json_set_str(lk, "chat_date", tp.chat_date ? tp.chat_date : DSPY_TRAIN_DEFAULT_CHAT_DATE);
            if (!st) {
                st = dspy_json_set(ov, "launch_kwargs", lk);
                lk = NULL;
            }
            dspy_json_decref(lk);
            if (!st) st = dspy_lm_copy(t->lm, ov, out);
            dspy_json_decref(ov);
        }
    }
    dspy_str_free(&m);
    dspy_json_decref(kw);
    return st;
}

dspy_status dspy_bootstrap_finetune_compile(dspy_module *student, const dspy_dataset *trainset,
                                            dspy_module *const *teachers, size_t n_teachers,
                                            const dspy_bootstrap_finetune_params *p, dspy_module **out,
                                            dspy_bootstrap_finetune_report *report) {
    *out = NULL;
    dspy_bootstrap_finetune_report local = {0};
    if (!report) report = &local;
    memset(report, 0, sizeof *report);
    dspy_bootstrap_finetune_params def = dspy_bootstrap_finetune_params_default();
    if (!p) p = &def;

    dspy_finetune_job *job = NULL;
    dspy_named_predictor *preds = NULL;
    size_t np = 0;
    dspy_module *result = NULL;
    double t0 = dspy_now_s();
    dspy_status st = dspy_bootstrap_finetune_prepare(student, trainset, teachers, n_teachers, &p->prepare, &job);
    report->bootstrap_s = dspy_now_s() - t0;
    if (st) goto done;
    report->bootstrap = dspy_finetune_job_counts(job);
    size_t nt = dspy_finetune_job_n_tasks(job);
    report->runs = calloc(nt ? nt : 1, sizeof *report->runs);
    if (!report->runs) {
        st = dspy_fail(DSPY_ERR_NOMEM, "BootstrapFinetune: out of memory");
        goto done;
    }
    result = dspy_module_retain(dspy_finetune_job_student(job));
    if ((st = dspy_module_named_predictors(result, &preds, &np))) goto done;
    t0 = dspy_now_s();
    for (size_t i = 0; i < nt && !st; i++) {
        const dspy_finetune_task *t = dspy_finetune_job_task(job, i);
        dspy_lm *ft = NULL;
        report->n_runs = i + 1;
        st = run_task(t, p, &report->runs[i], &ft);
        for (size_t k = 0; !st && k < t->n_predictors; k++) {
            size_t idx = t->predictors[k];
            if (idx >= np) st = dspy_fail(DSPY_ERR_STATE, "BootstrapFinetune: predictor %zu does not exist", idx);
            else st = dspy_module_set_lm(preds[idx].predictor, ft);
        }
        dspy_lm_free(ft);
    }
    report->train_s = dspy_now_s() - t0;
    if (st) goto done;
    dspy_module_set_compiled(result, true);
    *out = result;
    result = NULL;
done:
    dspy_named_predictors_free(preds, np);
    dspy_module_free(result);
    dspy_finetune_job_free(job);
    if (report == &local) dspy_bootstrap_finetune_report_clear(&local);
    return st;
}
