/* predict.c — dspy.Predict: configuration, the forward pass and its accessors.
 *
 * Follows DSPy 3.3.1 dspy/predict/predict.py (spec §3.1, §3.3, CC-20): _forward_preprocess
 * (config merge, LM choice and errors, the temperature rule, missing/extra input warnings),
 * forward (settings.adapter or a ChatAdapter with the JSONAdapter fallback, through
 * dspy_adapter_call and dspy_lm_call with n choices), _forward_postprocess
 * (Prediction.from_completions, trace append with max_trace_size). The V26 profile changes the
 * prompt format and the temperature rule's reading of a configured 0.0 (2.6 tested
 * `is None`, 3.3.1 uses `or`). Not here: streaming, async, input type-mismatch warnings,
 * defaults of input fields, the `prediction` (predicted outputs) keyword.
 */
#include <stdlib.h>
#include <string.h>

#include "dspy/log.h"
#include "dspy/settings.h"
#include "program/module_priv.h"
#include "program/parse_failure.h"
#include "program/settings_priv.h"

static dspy_status nomem(void) { return dspy_fail(DSPY_ERR_NOMEM, "Predict: out of memory"); }

/* ---- state -------------------------------------------------------------------------------- */

void dspy_predict_state_release(predict_state *s) {
    if (!s) return;
    dspy_signature_free(s->sig);
    dspy_json_decref(s->config);
    dspy_json_decref(s->demos);
    dspy_json_decref(s->traces);
    dspy_json_decref(s->train);
    dspy_lm_free(s->lm);
    memset(s, 0, sizeof *s);
}

void dspy_predict_state_swap(predict_state *dst, predict_state *src) {
    predict_state tmp = *dst;
    *dst = *src;
    *src = tmp;
}

static void state_free(void *impl) {
    dspy_predict_state_release(impl);
    free(impl);
}

static dspy_status state_copy(const void *impl, void **out) {
    const predict_state *s = impl;
    *out = NULL;
    predict_state *c = calloc(1, sizeof *c);
    if (!c) return nomem();
    c->profile = s->profile;
    c->lm = dspy_lm_retain(s->lm);
    dspy_status st = dspy_signature_copy(s->sig, &c->sig);
    if (!st && (!(c->config = dspy_json_copy(s->config)) || !(c->demos = dspy_json_copy(s->demos)) ||
                !(c->traces = dspy_json_copy(s->traces)) || !(c->train = dspy_json_copy(s->train))))
        st = nomem();
    if (st) {
        state_free(c);
        return st;
    }
    *out = c;
    return DSPY_OK;
}

/* ---- the forward pass --------------------------------------------------------------------- */

dspy_status dspy_predict_positional_error(const dspy_signature *sig) {
    dspy_str names = DSPY_STR_INIT;
    size_t n = dspy_signature_n_inputs(sig);
    for (size_t i = 0; i < n; i++) {
        if (i) dspy_str_append(&names, ", ");
        dspy_str_append(&names, dspy_signature_field_name(sig, i));
    }
    dspy_status st = dspy_fail(DSPY_ERR_ARG,
                               "Positional arguments are not allowed when calling `dspy.Predict`, must use keyword "
                               "arguments that match your signature input fields: '%s'. For example: `predict(%s%s...)`.",
                               dspy_str_cstr(&names), n ? dspy_signature_field_name(sig, 0) : "",
                               n ? "=input_value, " : "");
    dspy_str_free(&names);
    return st;
}

/* Python truthiness of an optional value (absent = None). */
static bool truthy(const dspy_json *v) { return v && dspy_json_truthy(v); }

/* Predict's temperature rule (spec §3.1 step 3) applied to `config` in place. */
static dspy_status temperature_rule(dspy_json *config, dspy_lm *lm, dspy_profile profile) {
    dspy_json *lmkw = dspy_lm_kwargs(lm);
    if (!lmkw) return nomem();
    const dspy_json *t_cfg = dspy_json_get(config, "temperature");
    const dspy_json *t;
    if (profile == DSPY_PROFILE_V26) /* config.get("temperature"); lm.kwargs["temperature"] if None */
        t = t_cfg && dspy_json_typeof(t_cfg) != DSPY_JSON_NULL ? t_cfg : dspy_json_get(lmkw, "temperature");
    else /* config.get("temperature") or lm.kwargs.get("temperature") */
        t = truthy(t_cfg) ? t_cfg : dspy_json_get(lmkw, "temperature");
    const dspy_json *n = NULL;
    const dspy_json *cands[3] = {dspy_json_get(config, "n"), dspy_json_get(lmkw, "n"),
                                 dspy_json_get(lmkw, "num_generations")};
    for (int i = 0; i < 3 && !n; i++)
        if (truthy(cands[i])) n = cands[i];
    double nv = n && dspy_json_is_number(n) ? dspy_json_number(n) : 1;
    bool t_none = !t || dspy_json_typeof(t) == DSPY_JSON_NULL;
    bool low = t_none || ((dspy_json_is_number(t) || dspy_json_typeof(t) == DSPY_JSON_BOOL) &&
                          (dspy_json_typeof(t) == DSPY_JSON_BOOL ? (dspy_json_truthy(t) ? 1.0 : 0.0) : dspy_json_number(t)) <= 0.15);
    dspy_status st = DSPY_OK;
    if (low && nv > 1) st = dspy_json_set(config, "temperature", dspy_json_real(0.7)) ? nomem() : DSPY_OK;
    dspy_json_decref(lmkw);
    return st;
}

static void append_pylist(dspy_str *s, const char *const *names, size_t n) {
    dspy_str_appendc(s, '[');
    for (size_t i = 0; i < n; i++) {
        if (i) dspy_str_append(s, ", ");
        dspy_py_repr_str(names[i], strlen(names[i]), s);
    }
    dspy_str_appendc(s, ']');
}

/* The V33 missing/extra input warnings (V26 printed the missing one to stdout; we log it). */
static void input_warnings(const dspy_signature *sig, const dspy_json *inputs, dspy_profile profile) {
    if (!dspy_log_enabled(DSPY_LOG_WARN)) return;
    size_t ni = dspy_signature_n_inputs(sig);
    const char **present = calloc(ni + 1, sizeof *present), **missing = calloc(ni + 1, sizeof *missing);
    const char **expected = calloc(ni + 1, sizeof *expected);
    size_t np = 0, nm = 0, nextra = 0;
    if (!present || !missing || !expected) goto done;
    for (size_t i = 0; i < ni; i++) {
        const char *f = dspy_signature_field_name(sig, i);
        expected[i] = f;
        if (dspy_json_get(inputs, f)) {
            present[np++] = f;
        } else {
            if (profile == DSPY_PROFILE_V26 || !dspy_type_allows_none(dspy_signature_field_type(sig, i))) missing[nm++] = f;
        }
    }
    if (nm) {
        dspy_str s = DSPY_STR_INIT;
        dspy_str_append(&s, "Not all input fields were provided to module. Present: ");
        append_pylist(&s, present, np);
        dspy_str_append(&s, ". Missing: ");
        append_pylist(&s, missing, nm);
        dspy_str_append(&s, ".");
        dspy_log(DSPY_LOG_WARN, "%s", dspy_str_cstr(&s));
        dspy_str_free(&s);
    }
    if (profile == DSPY_PROFILE_V33) {
        for (void *it = dspy_json_iter(inputs); it; it = dspy_json_next(inputs, it)) {
            size_t idx;
            const char *k = dspy_json_iter_key(it);
            if (!dspy_signature_find(sig, k, &idx) || idx >= ni) nextra++;
        }
        if (nextra) {
            const char **extra = calloc(nextra, sizeof *extra);
            if (extra) {
                size_t k = 0;
                for (void *it = dspy_json_iter(inputs); it; it = dspy_json_next(inputs, it)) {
                    size_t idx;
                    const char *key = dspy_json_iter_key(it);
                    if (!dspy_signature_find(sig, key, &idx) || idx >= ni) extra[k++] = key;
                }
                dspy_str s = DSPY_STR_INIT;
                dspy_str_append(&s, "Input contains fields not in signature. These fields will be ignored: ");
                append_pylist(&s, extra, nextra);
                dspy_str_append(&s, ". Expected fields: ");
                append_pylist(&s, expected, ni);
                dspy_str_append(&s, ".");
                dspy_log(DSPY_LOG_WARN, "%s", dspy_str_cstr(&s));
                dspy_str_free(&s);
                free(extra);
            }
        }
    }
done:
    free(present);
    free(missing);
    free(expected);
}

/* What litellm reports for the model (spec §5.4): OpenAI models take response_format with
 * JSON schemas; local models served by dspy.c take response_format {"type": "json_object"};
 * scripted and custom LMs take none (DummyLM's "dummy" is unknown to litellm). */
static void lm_capabilities(dspy_lm *lm, bool *response_format, bool *schema) {
    const char *m = dspy_lm_model(lm);
    *response_format = *schema = false;
    if (strncmp(m, "openai/local:", 13) == 0) {
        *response_format = true;
    } else if (strncmp(m, "openai/", 7) == 0) {
        *response_format = true;
        *schema = true;
    }
}

typedef struct lm_ctx {
    dspy_lm *lm;
    dspy_lm_callbacks *extra;
    size_t n_extra;
} lm_ctx;

/* The adapter's LM callback: one dspy_lm_call, its choices as a list of texts (null for a
 * choice without content). */
static dspy_status call_lm(const dspy_json *messages, const dspy_json *kwargs, void *user, dspy_json **outputs) {
    lm_ctx *c = user;
    *outputs = NULL;
    dspy_lm_response *r;
    dspy_status st = dspy_lm_call_with(c->lm, messages, kwargs, c->extra, c->n_extra, &r);
    if (st) return st;
    dspy_json *arr = dspy_json_array();
    for (int32_t i = 0; arr && i < r->n; i++) {
        dspy_json *t = r->choices[i].text ? dspy_json_string(r->choices[i].text) : dspy_json_null();
        if (!t || dspy_json_append(arr, t)) {
            dspy_json_decref(arr);
            arr = NULL;
        }
    }
    dspy_lm_response_free(r);
    if (!arr) return nomem();
    *outputs = arr;
    return DSPY_OK;
}

static dspy_status no_lm_error(void) {
    return dspy_fail(DSPY_ERR_STATE,
                     "No LM is loaded. Please configure the LM using `dspy.configure(lm=dspy.LM(...))`. e.g, "
                     "`dspy.configure(lm=dspy.LM('openai/gpt-4o-mini'))` (in C: dspy_settings_set_lm or "
                     "dspy_module_set_lm; on the command line: --lm MODEL)");
}

static dspy_status predict_forward(dspy_module *self, const dspy_json *inputs, const dspy_call_options *opt,
                                   dspy_prediction **out) {
    *out = NULL;
    predict_state *ps = dspy_predict_state_of(self);
    if (!ps) return dspy_fail(DSPY_ERR_STATE, "Predict.forward called on a module that is not a Predict");
    if (opt->config && dspy_json_typeof(opt->config) != DSPY_JSON_OBJECT)
        return dspy_fail(DSPY_ERR_ARG, "Predict: config must be a JSON object of LM kwargs");
    if (opt->demos && dspy_json_typeof(opt->demos) != DSPY_JSON_ARRAY)
        return dspy_fail(DSPY_ERR_ARG, "Predict: demos must be a JSON array of objects");
    settings_view v;
    dspy_settings_view_get(&v);
    dspy_json *config = NULL, *completions = NULL;
    dspy_prediction *pred = NULL;
    dspy_lm_callbacks *extra = NULL;
    dspy_status st = DSPY_OK;
    dspy_lm *lm = opt->lm ? opt->lm : ps->lm ? ps->lm : v.lm;
    if (!lm) {
        st = no_lm_error();
        goto done;
    }
    if (!(config = dspy_json_copy(ps->config))) {
        st = nomem();
        goto done;
    }
    for (void *it = opt->config ? dspy_json_iter(opt->config) : NULL; it; it = dspy_json_next(opt->config, it))
        if (dspy_json_set(config, dspy_json_iter_key(it), dspy_json_incref(dspy_json_iter_value(it)))) {
            st = nomem();
            goto done;
        }
    if ((st = temperature_rule(config, lm, ps->profile))) goto done;
    input_warnings(ps->sig, inputs, ps->profile);

    dspy_adapter_call_params prm = dspy_adapter_call_params_default();
    prm.adapter = v.adapter;
    prm.use_json_adapter_fallback = v.use_json_fallback;
    prm.profile = ps->profile;
    lm_capabilities(lm, &prm.supports_response_format, &prm.supports_response_schema);
    dspy_adapter_hooks hooks = dspy_cb_adapter_hooks_template;
    lm_ctx lc = {lm, NULL, 0};
    if (v.callbacks) {
        hooks.user = v.callbacks;
        prm.hooks = &hooks;
        if (!(extra = calloc(v.callbacks->n, sizeof *extra))) {
            st = nomem();
            goto done;
        }
        for (size_t i = 0; i < v.callbacks->n; i++)
            extra[i] = (dspy_lm_callbacks){v.callbacks->items[i].user, v.callbacks->items[i].on_lm_start,
                                           v.callbacks->items[i].on_lm_end};
        lc.extra = extra;
        lc.n_extra = v.callbacks->n;
    }
    const dspy_json *demos = opt->demos ? opt->demos : ps->demos;
    dspy_adapter_call_info info = {0};
    st = dspy_adapter_call(&prm, ps->sig, demos, inputs, config, call_lm, &lc, &completions,
                           dspy_parse_failure_watching() ? &info : NULL);
    if (st == DSPY_ERR_PARSE) dspy_parse_failure_note(self, inputs, info.lm_response);
    dspy_adapter_call_info_clear(&info);
    if (st) goto done;
    if ((st = dspy_prediction_from_completions(completions, &pred))) goto done;
    if (!opt->no_trace && v.trace && v.max_trace_size > 0 &&
        (st = dspy_trace_append(v.trace, self, inputs, pred, v.max_trace_size)))
        goto done;
    *out = pred;
    pred = NULL;
done:
    dspy_prediction_free(pred);
    dspy_json_decref(completions);
    dspy_json_decref(config);
    free(extra);
    dspy_settings_view_clear(&v);
    return st;
}

const dspy_module_vtable dspy_predict_vtable = {
    .type_name = "Predict",
    .forward = predict_forward,
    .copy_impl = state_copy,
    .free_impl = state_free,
};

/* ---- construction and accessors ------------------------------------------------------------- */

dspy_predict_params dspy_predict_params_default(void) {
    dspy_predict_params p = {.profile = dspy_settings_profile(), .config = NULL};
    return p;
}

dspy_status dspy_predict_new(const dspy_signature *sig, const dspy_predict_params *p, dspy_module **out) {
    *out = NULL;
    dspy_predict_params prm = p ? *p : dspy_predict_params_default();
    if (!sig) return dspy_fail(DSPY_ERR_ARG, "Predict: no signature given");
    if (prm.profile != DSPY_PROFILE_V33 && prm.profile != DSPY_PROFILE_V26)
        return dspy_fail(DSPY_ERR_ARG, "Predict: unknown format profile %d", (int)prm.profile);
    if (prm.config && dspy_json_typeof(prm.config) != DSPY_JSON_OBJECT)
        return dspy_fail(DSPY_ERR_ARG, "Predict: config must be a JSON object of LM kwargs (e.g. {\"n\": 3})");
    predict_state *s = calloc(1, sizeof *s);
    if (!s) return nomem();
    s->profile = prm.profile;
    dspy_status st = dspy_signature_copy(sig, &s->sig);
    if (!st && (!(s->config = prm.config ? dspy_json_copy(prm.config) : dspy_json_object()) ||
                !(s->demos = dspy_json_array()) || !(s->traces = dspy_json_array()) || !(s->train = dspy_json_array())))
        st = nomem();
    if (st) {
        state_free(s);
        return st;
    }
    return dspy_module_new(&dspy_predict_vtable, s, out);
}

dspy_status dspy_predict_new_text(const char *signature, const char *instructions, const dspy_predict_params *p,
                                  dspy_module **out) {
    *out = NULL;
    dspy_signature *sig;
    dspy_status st = dspy_signature_parse(signature, instructions, &sig);
    if (st) return st;
    st = dspy_predict_new(sig, p, out);
    dspy_signature_free(sig);
    return st;
}

static dspy_status not_predict(const char *fn) {
    return dspy_fail(DSPY_ERR_ARG, "%s: the module is not a Predict", fn);
}

const dspy_signature *dspy_predict_signature(const dspy_module *p) {
    predict_state *s = dspy_predict_state_of(p);
    return s ? s->sig : NULL;
}

dspy_status dspy_predict_set_signature(dspy_module *p, const dspy_signature *sig) {
    predict_state *s = dspy_predict_state_of(p);
    if (!s) return not_predict("predict_set_signature");
    if (!sig) return dspy_fail(DSPY_ERR_ARG, "predict_set_signature: no signature given");
    dspy_signature *c;
    dspy_status st = dspy_signature_copy(sig, &c);
    if (st) return st;
    dspy_signature_free(s->sig);
    s->sig = c;
    return DSPY_OK;
}

dspy_profile dspy_predict_profile(const dspy_module *p) {
    predict_state *s = dspy_predict_state_of(p);
    return s ? s->profile : DSPY_PROFILE_V33;
}

const dspy_json *dspy_predict_demos(const dspy_module *p) {
    predict_state *s = dspy_predict_state_of(p);
    return s ? s->demos : NULL;
}

dspy_status dspy_predict_set_demos(dspy_module *p, const dspy_json *demos) {
    predict_state *s = dspy_predict_state_of(p);
    if (!s) return not_predict("predict_set_demos");
    if (demos && dspy_json_typeof(demos) != DSPY_JSON_ARRAY)
        return dspy_fail(DSPY_ERR_ARG, "predict_set_demos: demos must be a JSON array of objects");
    for (size_t i = 0; demos && i < dspy_json_size(demos); i++)
        if (dspy_json_typeof(dspy_json_at(demos, i)) != DSPY_JSON_OBJECT)
            return dspy_fail(DSPY_ERR_ARG, "predict_set_demos: demo %zu is not an object of field values", i);
    dspy_json *c = demos ? dspy_json_copy(demos) : dspy_json_array();
    if (!c) return nomem();
    dspy_json_decref(s->demos);
    s->demos = c;
    return DSPY_OK;
}

const dspy_json *dspy_predict_config(const dspy_module *p) {
    predict_state *s = dspy_predict_state_of(p);
    return s ? s->config : NULL;
}

dspy_status dspy_predict_update_config(dspy_module *p, const dspy_json *kwargs) {
    predict_state *s = dspy_predict_state_of(p);
    if (!s) return not_predict("predict_update_config");
    if (!kwargs || dspy_json_typeof(kwargs) != DSPY_JSON_OBJECT)
        return dspy_fail(DSPY_ERR_ARG, "predict_update_config: kwargs must be a JSON object");
    dspy_json *c = dspy_json_copy(s->config);
    if (!c) return nomem();
    for (void *it = dspy_json_iter(kwargs); it; it = dspy_json_next(kwargs, it))
        if (dspy_json_set(c, dspy_json_iter_key(it), dspy_json_copy(dspy_json_iter_value(it)))) {
            dspy_json_decref(c);
            return nomem();
        }
    dspy_json_decref(s->config);
    s->config = c;
    return DSPY_OK;
}

dspy_lm *dspy_predict_lm(const dspy_module *p) {
    predict_state *s = dspy_predict_state_of(p);
    return s ? s->lm : NULL;
}

dspy_status dspy_predict_reset(dspy_module *p) {
    predict_state *s = dspy_predict_state_of(p);
    if (!s) return not_predict("predict_reset");
    dspy_json *demos = dspy_json_array(), *traces = dspy_json_array(), *train = dspy_json_array();
    if (!demos || !traces || !train) {
        dspy_json_decref(demos);
        dspy_json_decref(traces);
        dspy_json_decref(train);
        return nomem();
    }
    dspy_json_decref(s->demos);
    dspy_json_decref(s->traces);
    dspy_json_decref(s->train);
    s->demos = demos;
    s->traces = traces;
    s->train = train;
    dspy_lm_free(s->lm);
    s->lm = NULL;
    return DSPY_OK;
}
