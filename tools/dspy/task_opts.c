/* task_opts.c — the task options shared by `dspy compile` and `dspy eval` (see task_opts.h).
 *
 * Everything here runs before any LM call: option parsing, data loading (local files, or the
 * HF viewer API, which is not the teacher), the label set, the signature and the checks that
 * the signature, the data and the metric fit together.
 */
#include "task_opts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/datasets.h"
#include "dspy/str.h"

/* ---- parsing ------------------------------------------------------------------------------- */

static dspy_status parse_fields(task *t, const dspy_args *a) {
    int n = dspy_args_count(a, "input-fields");
    t->n_inputs = 0;
    for (int i = 0; i < (n ? n : 1); i++) {
        const char *v = n ? dspy_args_at(a, "input-fields", i) : "text";
        const char *p = v;
        while (p) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            if (t->n_inputs >= TASK_MAX_INPUTS)
                return dspy_fail(DSPY_ERR_ARG, "--input-fields: at most %d fields", TASK_MAX_INPUTS);
            char *spec = t->input_spec[t->n_inputs];
            if (len >= sizeof t->input_spec[0]) return dspy_fail(DSPY_ERR_ARG, "--input-fields '%s': too long", v);
            memcpy(spec, p, len);
            spec[len] = '\0';
            dspy_status st = dspy_field_map_parse(spec, t->input_buf[t->n_inputs], sizeof t->input_buf[0],
                                                  &t->inputs[t->n_inputs]);
            if (st) return dspy_fail_wrap(st, "--input-fields");
            t->n_inputs++;
            p = comma ? comma + 1 : NULL;
        }
    }
    const char *l = dspy_args_get(a, "label-field");
    snprintf(t->label_spec, sizeof t->label_spec, "%s", l ? l : "label");
    dspy_status st = dspy_field_map_parse(t->label_spec, t->label_buf, sizeof t->label_buf, &t->label);
    if (st) return dspy_fail_wrap(st, "--label-field");
    for (size_t i = 0; i < t->n_inputs; i++) {
        if (strcmp(t->inputs[i].field, t->label.field) == 0)
            return dspy_fail(DSPY_ERR_ARG, "--input-fields %s: '%s' is also the label field (--label-field)",
                             t->inputs[i].field, t->label.field);
        for (size_t j = 0; j < i; j++)
            if (strcmp(t->inputs[i].field, t->inputs[j].field) == 0)
                return dspy_fail(DSPY_ERR_ARG, "--input-fields: '%s' is given twice", t->inputs[i].field);
    }
    return DSPY_OK;
}

static dspy_status parse_metric(task *t, const char *spec) {
    const char *colon = spec ? strchr(spec, ':') : NULL;
    size_t n = spec ? (colon ? (size_t)(colon - spec) : strlen(spec)) : 0;
    const char *field = colon ? colon + 1 : t->label.field;
    if (!spec || (n == 5 && strncmp(spec, "exact", 5) == 0)) t->metric_kind = TASK_METRIC_EXACT;
    else if (n == 2 && strncmp(spec, "f1", 2) == 0) t->metric_kind = TASK_METRIC_F1;
    else if ((n == 18 && strncmp(spec, "answer_exact_match", 18) == 0) || (n == 2 && strncmp(spec, "em", 2) == 0))
        t->metric_kind = TASK_METRIC_AEM;
    else if (n == 4 && strncmp(spec, "none", 4) == 0 && !colon) t->metric_kind = TASK_METRIC_NONE;
    else
        return dspy_fail(DSPY_ERR_ARG, "--metric '%s': use exact[:FIELD], f1[:FIELD], answer_exact_match[:FIELD] or "
                         "none", spec);
    if (colon && !*field) return dspy_fail(DSPY_ERR_ARG, "--metric '%s': a field name after ':'", spec);
    if (strlen(field) >= sizeof t->metric_field) return dspy_fail(DSPY_ERR_ARG, "--metric: the field name is too long");
    snprintf(t->metric_field, sizeof t->metric_field, "%s", field);
    return DSPY_OK;
}

/* --metric none: every prediction that parsed scores True (bootstrap_trace_data's rule without
 * a metric), so the score is the share of examples answered. */
static dspy_status answered_fn(void *user, const dspy_example *ex, const dspy_prediction *pred, dspy_trace *trace,
                               double *score) {
    (void)user;
    (void)ex;
    (void)pred;
    (void)trace;
    *score = 1.0;
    return DSPY_OK;
}

dspy_status task_parse(task *t, const dspy_args *a, bool compile) {
    memset(t, 0, sizeof *t);
    t->compile = compile;
    dspy_status st = parse_fields(t, a);
    if (st) return st;
    const char *module = dspy_args_get(a, "module");
    if (module && strcmp(module, "cot") != 0 && strcmp(module, "predict") != 0 &&
        strcmp(module, "ChainOfThought") != 0 && strcmp(module, "Predict") != 0)
        return dspy_fail(DSPY_ERR_ARG, "--module '%s': use cot (ChainOfThought) or predict", module);
    t->cot = !module || strcmp(module, "cot") == 0 || strcmp(module, "ChainOfThought") == 0;
    t->profile = DSPY_PROFILE_V33;
    if (dspy_args_get(a, "dspy-format")) {
        if ((st = dspy_profile_parse(dspy_args_get(a, "dspy-format"), &t->profile)))
            return dspy_fail_wrap(st, "--dspy-format");
        t->profile_given = true;
    }
    t->instructions = dspy_args_get(a, "instructions");
    t->json_fallback = !dspy_args_flag(a, "no-json-fallback");
    t->structured = !dspy_args_flag(a, "no-structured");
    const char *mspec = dspy_args_get(a, "metric"), *field = dspy_args_get(a, "field");
    char buf[160];
    if (field && !(mspec && strchr(mspec, ':'))) { /* eval's older --field NAME */
        snprintf(buf, sizeof buf, "%s:%s", mspec ? mspec : "exact", field);
        mspec = buf;
    }
    if ((st = parse_metric(t, mspec))) return st;
    switch (t->metric_kind) {
    case TASK_METRIC_EXACT: t->metric = dspy_metric_exact_match(t->metric_field); break;
    case TASK_METRIC_AEM: t->metric = dspy_metric_answer_exact_match(t->metric_field); break;
    case TASK_METRIC_F1: t->metric = dspy_metric_f1(t->metric_field); break;
    case TASK_METRIC_NONE: t->metric = (dspy_metric){"answered", answered_fn, NULL, DSPY_SCORE_BOOL}; break;
    }
    return DSPY_OK;
}

/* ---- data ---------------------------------------------------------------------------------- */

static dspy_status count_opt(const dspy_args *a, const char *name, long min, long def, long *out) {
    const char *v = dspy_args_get(a, name);
    *out = def;
    if (!v) return DSPY_OK;
    char *end;
    long x = strtol(v, &end, 10);
    if (end == v || *end || x < min) return dspy_fail(DSPY_ERR_ARG, "--%s '%s': expected an integer >= %ld", name, v, min);
    *out = x;
    return DSPY_OK;
}

static dspy_status load_src(task *t, const dspy_args *a, const char *src, bool label_optional, dspy_dataset **out,
                            dspy_labels **names) {
    dspy_data_params p = dspy_data_params_default();
    p.inputs = t->inputs;
    p.n_inputs = t->n_inputs;
    p.label = &t->label;
    p.label_optional = label_optional;
    p.hf.cache_dir = dspy_args_get(a, "cache-dir");
    return dspy_data_load(src, &p, out, names);
}

/* Appends copies of the labelled examples of `ds` to t->known. */
static dspy_status add_known(task *t, const dspy_dataset *ds) {
    dspy_status st = t->known ? DSPY_OK : dspy_dataset_new(&t->known);
    for (size_t i = 0; !st && ds && i < dspy_dataset_len(ds); i++)
        if (dspy_example_get_str(dspy_dataset_get(ds, i), t->label.field))
            st = dspy_dataset_append_copy(t->known, dspy_dataset_get(ds, i));
    return st;
}

static dspy_status limit(dspy_dataset **ds, long n) {
    if (!*ds || n < 0 || (size_t)n >= dspy_dataset_len(*ds)) return DSPY_OK;
    dspy_dataset *s = NULL;
    dspy_status st = dspy_dataset_slice(*ds, 0, (size_t)n, &s);
    if (st) return st;
    dspy_dataset_free(*ds);
    *ds = s;
    return DSPY_OK;
}

/* Splits a labelled pool by `split` (tutorial or stratified); devset only when trainset is NULL. */
static dspy_status split_pool(task *t, const dspy_args *a, const dspy_dataset *pool, const char *split,
                              dspy_dataset **trainset, dspy_dataset **devset) {
    bool strat = strcmp(split, "stratified") == 0;
    long ntr, ndev, seed;
    dspy_status st = count_opt(a, "train-size", 0, 500, &ntr);
    if (!st) st = count_opt(a, "dev-size", 1, strat ? 154 : 100, &ndev);
    if (!st) st = count_opt(a, "seed", 0, 0, &seed);
    if (st) return st;
    if (strat) {
        st = dspy_stratified_split(pool, t->label.field, (size_t)ntr, (size_t)ndev, (uint64_t)seed, trainset, devset);
        snprintf(t->split_desc, sizeof t->split_desc, "stratified: random.Random(%ld), %ld train + %ld dev over "
                 "every class", seed, ntr, ndev);
    } else {
        st = dspy_tutorial_split_pool(pool, 1000, (size_t)ntr, (size_t)ndev, (uint64_t)seed, trainset, devset);
        snprintf(t->split_desc, sizeof t->split_desc, "the tutorial's: the first %zu rows shuffled with "
                 "random.Random(%ld), %ld train + %ld dev",
                 dspy_dataset_len(pool) < 1000 ? dspy_dataset_len(pool) : (size_t)1000, seed, ntr, ndev);
    }
    return st;
}

static dspy_status load_banking77(task *t, const dspy_args *a, const char *split) {
    if (strcmp(t->label.field, "label") != 0 || t->label.column || t->n_inputs != 1 ||
        strcmp(t->inputs[0].field, "text") != 0 || t->inputs[0].column)
        return dspy_fail(DSPY_ERR_ARG, "--input-fields/--label-field: Banking77 has the fields text and label; give "
                         "your own data with --dataset, --trainset or --devset");
    dspy_banking77_params bp = dspy_banking77_params_default();
    bp.data_dir = dspy_args_get(a, "data-dir");
    bp.hf.cache_dir = dspy_args_get(a, "cache-dir");
    t->banking77 = true;
    snprintf(t->data_desc, sizeof t->data_desc, "Banking77 (%s)",
             bp.data_dir ? bp.data_dir : "Hugging Face dataset viewer API, PolyAI/banking77");
    dspy_dataset *train = NULL, *test = NULL;
    bool strat = strcmp(split, "stratified") == 0;
    dspy_status st = dspy_banking77_load(&bp, DSPY_BANKING77_TRAIN, &train, &t->labels);
    if (!st) st = dspy_banking77_load(&bp, DSPY_BANKING77_TEST, &test, NULL);
    if (!st) st = add_known(t, train);
    if (!st) st = add_known(t, test);
    if (st) goto done;
    if (strat || strcmp(split, "tutorial") == 0 || strcmp(split, "tutorial-dev") == 0) {
        st = split_pool(t, a, strat ? test : train, split, t->compile ? &t->trainset : NULL, &t->devset);
        if (!st && strat) snprintf(t->split_desc + strlen(t->split_desc), sizeof t->split_desc - strlen(t->split_desc),
                                   " of the official test set");
    } else if (!t->compile && (strcmp(split, "test") == 0 || strcmp(split, "train") == 0)) {
        t->devset = strcmp(split, "test") == 0 ? test : train;
        if (t->devset == test) test = NULL;
        else train = NULL;
        snprintf(t->split_desc, sizeof t->split_desc, "the whole %s split", split);
    } else {
        st = dspy_fail(DSPY_ERR_ARG, "--split '%s': use %s", split,
                       t->compile ? "tutorial or stratified" : "tutorial-dev, test, train or stratified");
    }
done:
    dspy_dataset_free(train);
    dspy_dataset_free(test);
    return st;
}

dspy_status task_load(task *t, const dspy_args *a, const char *trainset_src, const char *split, long limit_train,
                      long limit_dev) {
    const char *dataset = dspy_args_get(a, "dataset"), *devset = dspy_args_get(a, "devset");
    dspy_labels *names = NULL, *names2 = NULL;
    dspy_dataset *pool = NULL;
    dspy_status st = DSPY_OK;
    bool generic = dataset || devset || trainset_src;
    if (generic && dspy_args_get(a, "data-dir"))
        return dspy_fail(DSPY_ERR_ARG, "--data-dir is Banking77's folder; with --dataset/--trainset/--devset it is not "
                         "used (drop it)");
    if (!generic) {
        if ((st = load_banking77(t, a, split))) return st;
    } else if (dataset) {
        if (devset || trainset_src)
            return dspy_fail(DSPY_ERR_ARG, "--dataset SRC is split into a trainset and a devset; give either it or "
                             "--trainset/--devset");
        if (strcmp(split, "tutorial-dev") == 0) split = "tutorial";
        if (strcmp(split, "tutorial") != 0 && strcmp(split, "stratified") != 0 && (t->compile || strcmp(split, "all") != 0))
            return dspy_fail(DSPY_ERR_ARG, "--split '%s' for --dataset: use tutorial or stratified%s", split,
                             t->compile ? "" : " (the devset part), or all");
        if ((st = load_src(t, a, dataset, false, &pool, &names))) return st;
        snprintf(t->data_desc, sizeof t->data_desc, "%s", dataset);
        if ((st = add_known(t, pool))) goto done;
        if (strcmp(split, "all") == 0) {
            t->devset = pool;
            pool = NULL;
            snprintf(t->split_desc, sizeof t->split_desc, "all %zu rows", dspy_dataset_len(t->devset));
        } else if ((st = split_pool(t, a, pool, split, t->compile ? &t->trainset : NULL, &t->devset))) {
            goto done;
        }
    } else {
        if (!devset)
            return dspy_fail(DSPY_ERR_ARG, "--trainset needs --devset SRC too (the labelled examples to evaluate on)");
        if (t->compile && !trainset_src)
            return dspy_fail(DSPY_ERR_ARG, "--devset needs --trainset SRC too (the examples the teacher answers)");
        if (trainset_src && (st = load_src(t, a, trainset_src, true, &t->trainset, &names2))) goto done;
        if ((st = load_src(t, a, devset, false, &t->devset, &names))) goto done;
        if (!names) {
            names = names2;
            names2 = NULL;
        }
        snprintf(t->data_desc, sizeof t->data_desc, "%s%s%s", trainset_src ? trainset_src : "", trainset_src ? " + " : "",
                 devset);
        snprintf(t->split_desc, sizeof t->split_desc, "as given");
        if ((st = add_known(t, t->trainset)) || (st = add_known(t, t->devset))) goto done;
    }
    if ((st = limit(&t->trainset, limit_train)) || (st = limit(&t->devset, limit_dev))) goto done;
    if (!t->devset || dspy_dataset_len(t->devset) == 0) {
        st = dspy_fail(DSPY_ERR_ARG, "the devset is empty");
        goto done;
    }
    if (t->compile && (!t->trainset || dspy_dataset_len(t->trainset) == 0)) {
        st = dspy_fail(DSPY_ERR_ARG, "the trainset is empty");
        goto done;
    }
    if (!t->labels) {
        if (names) {
            t->labels = names;
            names = NULL;
        } else {
            const dspy_dataset *sets[2] = {t->known, t->devset};
            st = dspy_labels_collect(sets, 2, t->label.field, &t->labels);
        }
    }
done:
    dspy_labels_free(names);
    dspy_labels_free(names2);
    dspy_dataset_free(pool);
    return st;
}

/* ---- program ------------------------------------------------------------------------------- */

/* Whether label `name` occurs in the trainset or the devset. */
static bool label_seen(const task *t, const char *name) {
    const dspy_dataset *sets[2] = {t->trainset, t->devset};
    for (int s = 0; s < 2; s++)
        for (size_t i = 0; sets[s] && i < dspy_dataset_len(sets[s]); i++) {
            const char *g = dspy_example_get_str(dspy_dataset_get(sets[s], i), t->label.field);
            if (g && strcmp(g, name) == 0) return true;
        }
    return false;
}

dspy_status task_signature(task *t, const dspy_args *a) {
    const char *given = dspy_args_get(a, "signature");
    free(t->signature);
    t->signature = NULL;
    if (given) {
        t->signature_given = true;
        t->signature = strdup(given);
        return t->signature ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    }
    dspy_str s = DSPY_STR_INIT;
    for (size_t i = 0; i < t->n_inputs; i++) dspy_str_appendf(&s, "%s%s", i ? ", " : "", t->inputs[i].field);
    dspy_str_appendf(&s, " -> %s", t->label.field);
    if (t->metric_kind == TASK_METRIC_F1 || !t->labels) {
        dspy_str_append(&s, ": str");
    } else {
        bool observed = dspy_args_flag(a, "observed-labels");
        dspy_str_append(&s, ": Literal[");
        size_t k = 0;
        for (size_t i = 0; i < dspy_labels_count(t->labels); i++) {
            const char *n = dspy_labels_name(t->labels, (int32_t)i);
            if (observed && !label_seen(t, n)) continue;
            if (k++) dspy_str_append(&s, ", ");
            dspy_py_repr_str(n, strlen(n), &s);
        }
        dspy_str_append(&s, "]");
        if (!k) {
            dspy_str_free(&s);
            return dspy_fail(DSPY_ERR_ARG, "--observed-labels: no label of the list occurs in the data");
        }
    }
    if (!dspy_str_ok(&s)) {
        dspy_str_free(&s);
        return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    }
    t->signature = dspy_str_take(&s);
    return DSPY_OK;
}

dspy_status task_check(task *t, const dspy_signature *sig) {
    const dspy_example *ex = dspy_dataset_get(t->devset, 0);
    for (size_t i = 0; i < dspy_signature_n_inputs(sig); i++) {
        const char *f = dspy_signature_field_name(sig, i);
        if (!dspy_example_has(ex, f))
            return dspy_fail(DSPY_ERR_ARG, "the signature's input '%s' is not a field of the data (fields: --input-fields "
                             "and --label-field); map it with --input-fields %s=COLUMN", f, f);
    }
    for (size_t i = 0; i < t->n_inputs; i++) {
        size_t k;
        if (!dspy_signature_find(sig, t->inputs[i].field, &k) || dspy_signature_field_kind(sig, k) != DSPY_FIELD_INPUT)
            return dspy_fail(DSPY_ERR_ARG, "--input-fields %s: the signature has no input '%s'", t->inputs[i].field,
                             t->inputs[i].field);
    }
    if (t->metric_kind == TASK_METRIC_NONE) return DSPY_OK;
    size_t k;
    if (!dspy_signature_find(sig, t->metric_field, &k) || dspy_signature_field_kind(sig, k) != DSPY_FIELD_OUTPUT)
        return dspy_fail(DSPY_ERR_ARG, "--metric: '%s' is not an output field of the signature; name one with "
                         "--metric exact:FIELD", t->metric_field);
    if (!dspy_example_has(ex, t->metric_field))
        return dspy_fail(DSPY_ERR_ARG, "--metric: the devset has no field '%s' (its label field is '%s')", t->metric_field,
                         t->label.field);
    /* a Literal output: gold values outside it can never be matched */
    const dspy_json *vals = dspy_type_literal_values(dspy_signature_field_type(sig, k));
    if (vals && t->metric_kind == TASK_METRIC_EXACT) {
        size_t outside = 0;
        const char *first = NULL;
        for (size_t i = 0; i < dspy_dataset_len(t->devset); i++) {
            const char *g = dspy_example_get_str(dspy_dataset_get(t->devset, i), t->metric_field);
            bool in = false;
            for (size_t j = 0; g && !in && j < dspy_json_size(vals); j++) {
                const char *v = dspy_json_str(dspy_json_at(vals, j));
                in = v && strcmp(v, g) == 0;
            }
            if (g && !in && !outside++) first = g;
        }
        if (outside)
            fprintf(stderr, "warning: %zu devset labels are not among the signature's Literal values (e.g. '%s'): "
                            "they can never be matched\n", outside, first);
    }
    return DSPY_OK;
}

dspy_status task_program(const task *t, dspy_module **out) {
    dspy_predict_params pp = dspy_predict_params_default();
    pp.profile = t->profile;
    return t->cot ? dspy_chain_of_thought_new_text(t->signature, t->instructions, &pp, out)
                  : dspy_predict_new_text(t->signature, t->instructions, &pp, out);
}

void task_majority(const task *t, const char **label, double *rate) {
    *label = NULL;
    *rate = 0;
    size_t n = dspy_dataset_len(t->devset), best = 0;
    for (size_t i = 0; i < n; i++) {
        const char *g = dspy_example_get_str(dspy_dataset_get(t->devset, i), t->metric_field);
        if (!g) continue;
        size_t c = 0;
        for (size_t j = 0; j < n; j++) {
            const char *h = dspy_example_get_str(dspy_dataset_get(t->devset, j), t->metric_field);
            c += h && strcmp(g, h) == 0;
        }
        if (c > best) {
            best = c;
            *label = g;
        }
    }
    if (n) *rate = 100.0 * (double)best / (double)n;
}

void task_free(task *t) {
    dspy_dataset_free(t->trainset);
    dspy_dataset_free(t->devset);
    dspy_dataset_free(t->known);
    dspy_labels_free(t->labels);
    free(t->signature);
    memset(t, 0, sizeof *t);
}
