/* bootstrap.c — dspy/bootstrap.h: trace data and bootstrap_trace_data.
 *
 * Follows DSPy 3.3.1 dspy/teleprompt/bootstrap_trace.py (spec §9, CC-29.3–4) with the project
 * decisions of spec §16.6: each example runs under its own dspy.context(trace=[]); an
 * AdapterParseError becomes a FailedPrediction step (the failing Predict, its inputs, the
 * answer) instead of a crash, and counts as an error for the max_errors budget; other errors
 * are counted and leave no item. The fine-tuning data is in finetune_data.c.
 */
#include <stdlib.h>
#include <string.h>

#include "dspy/bootstrap.h"
#include "dspy/parallel.h"
#include "dspy/settings.h"
#include "dspy/trace.h"
#include "program/bootstrap_priv.h"
#include "program/parse_failure.h"

static dspy_status nomem(void) { return dspy_fail(DSPY_ERR_NOMEM, "bootstrap_trace_data: out of memory"); }

struct dspy_trace_data {
    dspy_trace_item *items;
    size_t n, cap;
    dspy_bootstrap_counts counts;
};

static void failed_free(dspy_failed_prediction *f) {
    if (!f) return;
    free(f->completion_text);
    free(f);
}

static void item_clear(dspy_trace_item *it) {
    dspy_example_free(it->example);
    dspy_prediction_free(it->prediction);
    for (size_t k = 0; k < it->n_trace; k++) {
        dspy_module_free(it->trace[k].predictor);
        dspy_json_decref(it->trace[k].inputs);
        dspy_prediction_free(it->trace[k].prediction);
    }
    free(it->trace);
    failed_free(it->failed);
    memset(it, 0, sizeof *it);
}

dspy_status dspy_trace_data_new(dspy_trace_data **out) {
    *out = calloc(1, sizeof **out);
    return *out ? DSPY_OK : nomem();
}

void dspy_trace_data_free(dspy_trace_data *d) {
    if (!d) return;
    for (size_t i = 0; i < d->n; i++) item_clear(&d->items[i]);
    free(d->items);
    free(d);
}

size_t dspy_trace_data_len(const dspy_trace_data *d) { return d ? d->n : 0; }

const dspy_trace_item *dspy_trace_data_item(const dspy_trace_data *d, size_t i) {
    return d && i < d->n ? &d->items[i] : NULL;
}

dspy_bootstrap_counts dspy_trace_data_counts(const dspy_trace_data *d) {
    dspy_bootstrap_counts c = {0};
    return d ? d->counts : c;
}

/* Appends `it`, taking over its contents (cleared on failure too). */
static dspy_status push_item(dspy_trace_data *d, dspy_trace_item *it) {
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        dspy_trace_item *items = realloc(d->items, cap * sizeof *items);
        if (!items) {
            item_clear(it);
            return nomem();
        }
        d->items = items;
        d->cap = cap;
    }
    d->items[d->n++] = *it;
    d->counts.items++;
    if (it->failed) d->counts.parse_failures++;
    memset(it, 0, sizeof *it);
    return DSPY_OK;
}

/* A copy of `ex` with its input keys. */
static dspy_status copy_example(const dspy_example *ex, dspy_example **out) {
    if (!dspy_example_has_inputs(ex)) return dspy_example_copy(ex, NULL, out);
    size_t n = dspy_example_ninputs(ex);
    const char **keys = calloc(n ? n : 1, sizeof *keys);
    if (!keys) return nomem();
    for (size_t i = 0; i < n; i++) keys[i] = dspy_example_input_key(ex, i);
    dspy_status st = dspy_example_with_inputs(ex, keys, n, out);
    free(keys);
    return st;
}

dspy_status dspy_trace_data_append(dspy_trace_data *d, const dspy_example *example, size_t example_ind,
                                   dspy_prediction *prediction, const dspy_trace_step *steps, size_t n_steps,
                                   const double *score) {
    if (!d || !example || !prediction || (n_steps && !steps))
        return dspy_fail(DSPY_ERR_ARG, "trace_data_append: an example, a prediction and the steps are needed");
    for (size_t k = 0; k < n_steps; k++)
        if (!steps[k].predictor || !steps[k].prediction || !dspy_module_is_predict(steps[k].predictor))
            return dspy_fail(DSPY_ERR_ARG, "trace_data_append: step %zu needs a Predict and its prediction", k);
    dspy_trace_item it = {.example_ind = example_ind, .has_score = score != NULL, .score = score ? *score : 0};
    dspy_status st = copy_example(example, &it.example);
    if (st) return st;
    it.prediction = dspy_prediction_retain(prediction);
    if (n_steps && !(it.trace = calloc(n_steps, sizeof *it.trace))) {
        item_clear(&it);
        return nomem();
    }
    for (size_t k = 0; k < n_steps; k++) {
        it.trace[k].predictor = dspy_module_retain(steps[k].predictor);
        it.trace[k].inputs = steps[k].inputs ? dspy_json_copy(steps[k].inputs) : dspy_json_object();
        it.trace[k].prediction = dspy_prediction_retain(steps[k].prediction);
        it.n_trace++;
        if (!it.trace[k].inputs) {
            item_clear(&it);
            return nomem();
        }
    }
    d->counts.examples++;
    return push_item(d, &it);
}

/* ---- bootstrap_trace_data ------------------------------------------------------------------- */

dspy_bootstrap_params dspy_bootstrap_params_default(void) {
    dspy_bootstrap_params p = {
        .metric = NULL,
        .num_threads = 0,
        .max_errors = -1,
        .display_progress = true,
        .progress_out = NULL,
        .failure_score = 0,
        .format_failure_score = -1,
        .log_failures = true,
        .on_failure = NULL,
        .failure_user = NULL,
    };
    return p;
}

typedef struct boot_job {
    dspy_module *program;
    const dspy_dataset *ds;
    const dspy_bootstrap_params *p;
    dspy_trace_item *slots; /* per example; example == NULL until filled */
} boot_job;

/* Moves the entries of `tr` into it->trace, with room for one more step. */
static dspy_status take_trace(dspy_trace *tr, dspy_trace_item *it) {
    size_t n = dspy_trace_len(tr);
    if (!(it->trace = calloc(n + 1, sizeof *it->trace))) return nomem();
    for (size_t k = 0; k < n; k++) {
        dspy_trace_entry e;
        dspy_status st = dspy_trace_get(tr, (int64_t)k, &e);
        if (st) return st;
        it->trace[k] = (dspy_trace_step){e.predictor, e.inputs, e.prediction, NULL};
        it->n_trace++;
    }
    return DSPY_OK;
}

/* The FailedPrediction step for a parse failure noted by Predict. */
static dspy_status add_failed_step(const boot_job *j, dspy_trace_item *it, parse_failure *pf) {
    if (!(it->failed = calloc(1, sizeof *it->failed))) return nomem();
    it->failed->completion_text = pf->lm_response;
    pf->lm_response = NULL;
    const dspy_signature *sig = dspy_predict_signature(pf->predictor);
    size_t expected = sig ? dspy_signature_n_outputs(sig) : 0;
    double ffs = j->p->format_failure_score, fs = j->p->failure_score;
    it->failed->format_reward =
        pf->n_parsed > 0 && expected > 0 ? ffs + (fs - ffs) * ((double)pf->n_parsed / (double)expected) : ffs;
    it->trace[it->n_trace++] = (dspy_trace_step){pf->predictor, pf->inputs, NULL, it->failed};
    pf->predictor = NULL;
    pf->inputs = NULL;
    return DSPY_OK;
}

/* The inputs check DSPy's program(**example.inputs()) makes. */
static dspy_status check_inputs(const dspy_example *ex) {
    dspy_example *in = NULL;
    dspy_status st = dspy_example_inputs(ex, &in);
    dspy_example_free(in);
    return st;
}

static dspy_status boot_item(void *user, size_t i, double *score) {
    boot_job *j = user;
    const dspy_example *ex = dspy_dataset_get(j->ds, i);
    dspy_trace *tr = NULL;
    dspy_context *ctx = NULL;
    dspy_prediction *pred = NULL;
    parse_failure pf = {0};
    bool have_pf = false;
    dspy_trace_item it = {.example_ind = i, .has_score = j->p->metric != NULL};
    dspy_status st = check_inputs(ex);
    if (st) goto done;
    if ((st = dspy_trace_new(&tr)) || (st = dspy_context_new(&ctx))) goto done;
    dspy_context_set_trace(ctx, tr);
    if ((st = dspy_context_push(ctx))) goto done;
    dspy_parse_failure_watch(true);
    st = dspy_module_call_example(j->program, ex, NULL, &pred);
    have_pf = st == DSPY_ERR_PARSE && dspy_parse_failure_take(&pf);
    dspy_parse_failure_watch(false);
    dspy_context_pop(ctx);
    if (st && !have_pf) goto done; /* an LM or other error: counted, no item */
    dspy_status call_st = st;
    char *parse_msg = NULL;
    if (call_st && !(parse_msg = strdup(dspy_errmsg()))) {
        st = nomem();
        goto done;
    }
    st = copy_example(ex, &it.example);
    if (!st) st = take_trace(tr, &it);
    if (!st && have_pf) st = add_failed_step(j, &it, &pf);
    if (st) {
        free(parse_msg);
        goto done;
    }
    if (have_pf) {
        /* wrapped_metric: `format_reward or format_failure_score` */
        it.score = it.failed->format_reward != 0 ? it.failed->format_reward : j->p->format_failure_score;
    } else if (j->p->metric) {
        double s = 0;
        if ((st = j->p->metric->fn(j->p->metric->user, ex, pred, NULL, &s))) goto done;
        it.score = j->p->metric->kind == DSPY_SCORE_BOOL ? (s != 0 ? 1.0 : 0.0) : s;
    } else {
        it.score = 1.0; /* True */
    }
    it.prediction = pred;
    pred = NULL;
    *score = it.score;
    j->slots[i] = it;
    memset(&it, 0, sizeof it);
    if (call_st) {
        /* recorded, and still an error for the budget and the report */
        st = dspy_fail(call_st, "%s", parse_msg);
    }
    free(parse_msg);
done:
    if (st && j->p->on_failure) {
        /* the parse failure's answer is in the recorded item */
        char *msg = strdup(*dspy_errmsg() ? dspy_errmsg() : dspy_status_name(st));
        const dspy_failed_prediction *fp = have_pf ? j->slots[i].failed : NULL;
        dspy_eval_failure f = {i, st, msg ? msg : dspy_status_name(st), fp ? fp->completion_text : NULL};
        j->p->on_failure(j->p->failure_user, &f);
        if (msg) dspy_fail(st, "%s", msg); /* the executor logs and counts the same message */
        free(msg);
    }
    item_clear(&it);
    dspy_parse_failure_clear(&pf);
    dspy_prediction_free(pred);
    dspy_context_free(ctx);
    dspy_trace_free(tr);
    return st;
}

static void boot_describe(void *user, size_t i, dspy_str *out) {
    boot_job *j = user;
    dspy_example_append_repr(out, dspy_dataset_get(j->ds, i));
}

dspy_status dspy_bootstrap_trace_data(dspy_module *program, const dspy_dataset *dataset,
                                      const dspy_bootstrap_params *params, dspy_trace_data **out) {
    *out = NULL;
    dspy_bootstrap_params p = params ? *params : dspy_bootstrap_params_default();
    if (!program || !dataset) return dspy_fail(DSPY_ERR_ARG, "bootstrap_trace_data: a program and a dataset are needed");
    if (p.metric && !p.metric->fn) return dspy_fail(DSPY_ERR_ARG, "bootstrap_trace_data: the metric has no function");
    size_t n = dspy_dataset_len(dataset);
    boot_job j = {program, dataset, &p, calloc(n ? n : 1, sizeof(dspy_trace_item))};
    dspy_trace_data *d = NULL;
    dspy_parallel_report rep;
    memset(&rep, 0, sizeof rep);
    dspy_status st = DSPY_OK;
    if (!j.slots) {
        st = nomem();
        goto done;
    }
    if ((st = dspy_trace_data_new(&d))) goto done;
    dspy_parallel_params pp = dspy_parallel_params_default();
    pp.num_threads = p.num_threads;
    pp.max_errors = p.max_errors;
    pp.display_progress = p.display_progress;
    pp.progress_out = p.progress_out;
    pp.log_errors = p.log_failures;
    if ((st = dspy_parallel_run(&pp, n, boot_item, boot_describe, &j, &rep))) goto done;
    d->counts.examples = n;
    for (size_t i = 0; i < n && !st; i++)
        if (j.slots[i].example) st = push_item(d, &j.slots[i]);
    if (st) goto done;
    d->counts.errors = n - d->counts.items;
    *out = d;
    d = NULL;
done:
    for (size_t i = 0; j.slots && i < n; i++) item_clear(&j.slots[i]);
    free(j.slots);
    dspy_parallel_report_clear(&rep);
    dspy_trace_data_free(d);
    return st;
}

dspy_status dspy_trace_data_extend(dspy_trace_data *dst, dspy_trace_data *src) {
    if (src->n && dst->n + src->n > dst->cap) {
        size_t cap = dst->n + src->n;
        dspy_trace_item *items = realloc(dst->items, cap * sizeof *items);
        if (!items) return nomem();
        dst->items = items;
        dst->cap = cap;
    }
    if (src->n) memcpy(dst->items + dst->n, src->items, src->n * sizeof *src->items);
    dst->n += src->n;
    src->n = 0;
    dst->counts.examples += src->counts.examples;
    dst->counts.items += src->counts.items;
    dst->counts.parse_failures += src->counts.parse_failures;
    dst->counts.errors += src->counts.errors;
    memset(&src->counts, 0, sizeof src->counts);
    return DSPY_OK;
}
