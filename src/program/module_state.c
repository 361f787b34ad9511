/* module_state.c — dump_state/load_state, module.save/load in DSPy's JSON layout, and
 * rebuilding a Predict/ChainOfThought from a saved file.
 *
 * Follows DSPy 3.3.1 Predict.dump_state/load_state, BaseModule.save/load (spec §12, CC-02,
 * CC-24): {name: predictor state} + "metadata": {"dependency_versions": ...}, orjson's
 * OPT_INDENT_2 | OPT_APPEND_NEWLINE layout (two-space indent, raw UTF-8, final newline). dspy.c
 * records its format profile, the program type, the signature text and the predictor config in
 * metadata.dspy_c (ignored by DSPy). Loading is transactional: every predictor's new state is
 * built and checked first, then all are applied. Not here: pickle files, save_program=True
 * directories, custom LM classes.
 */
#include <stdlib.h>
#include <string.h>

#include "dspy/log.h"
#include "program/module_priv.h"

static const char *const k_dep_keys[] = {"python", "dspy", "cloudpickle"};
static const char *const k_dep_versions[] = {"3.12", "3.3.1", "3.1"};

static dspy_status nomem(void) { return dspy_fail(DSPY_ERR_NOMEM, "module state: out of memory"); }

/* ---- dump ---------------------------------------------------------------------------------- */

dspy_status dspy_predict_dump_state(const dspy_module *p, dspy_json **out) {
    *out = NULL;
    predict_state *s = dspy_predict_state_of(p);
    if (!s) return dspy_fail(DSPY_ERR_ARG, "predict_dump_state: the module is not a Predict");
    dspy_json *o = dspy_json_object(), *sig = NULL;
    dspy_status st = o ? DSPY_OK : nomem();
    if (!st && (dspy_json_set(o, "traces", dspy_json_copy(s->traces)) || dspy_json_set(o, "train", dspy_json_copy(s->train)) ||
                dspy_json_set(o, "demos", dspy_json_copy(s->demos))))
        st = nomem();
    if (!st && !(st = dspy_signature_dump_state(s->sig, &sig))) {
        if (dspy_json_set(o, "signature", sig)) st = nomem();
    }
    if (!st) {
        dspy_json *lm = s->lm ? dspy_lm_dump_state(s->lm) : dspy_json_null();
        if (!lm || dspy_json_set(o, "lm", lm)) st = nomem();
    }
    if (st) {
        dspy_json_decref(o);
        return st;
    }
    *out = o;
    return DSPY_OK;
}

dspy_status dspy_module_dump_state(dspy_module *m, dspy_json **out) {
    *out = NULL;
    dspy_named_predictor *ps;
    size_t n;
    dspy_status st = dspy_module_named_predictors(m, &ps, &n);
    if (st) return st;
    dspy_json *o = dspy_json_object();
    if (!o) st = nomem();
    for (size_t i = 0; i < n && !st; i++) {
        dspy_json *one;
        if (!(st = dspy_predict_dump_state(ps[i].predictor, &one)) && dspy_json_set(o, ps[i].name, one)) st = nomem();
    }
    dspy_named_predictors_free(ps, n);
    if (st) {
        dspy_json_decref(o);
        return st;
    }
    *out = o;
    return DSPY_OK;
}

/* ---- load ---------------------------------------------------------------------------------- */

static dspy_lm_profile lm_profile_for(dspy_profile p) { return p == DSPY_PROFILE_V26 ? DSPY_LM_V26 : DSPY_LM_V33; }

/* A copy of list `v` under `key` of predictor `name`, checked to be an array (of objects for
 * demos); *out stays NULL when the key is absent. */
static dspy_status take_list(const dspy_json *state, const char *name, const char *key, bool objects, dspy_json **out) {
    *out = NULL;
    const dspy_json *v = dspy_json_get(state, key);
    if (!v) return DSPY_OK;
    if (dspy_json_typeof(v) != DSPY_JSON_ARRAY)
        return dspy_fail(DSPY_ERR_FORMAT, "state of '%s': \"%s\" must be a list", name, key);
    for (size_t i = 0; objects && i < dspy_json_size(v); i++)
        if (dspy_json_typeof(dspy_json_at(v, i)) != DSPY_JSON_OBJECT)
            return dspy_fail(DSPY_ERR_FORMAT, "state of '%s': %s[%zu] must be an object of field values", name, key, i);
    return (*out = dspy_json_copy(v)) ? DSPY_OK : nomem();
}

/* Predict.load_state(state) into `ns`, a fresh state built from the predictor's current one. */
static dspy_status prepare_predict(const predict_state *cur, const char *name, const dspy_json *state,
                                   bool allow_unsafe, predict_state *ns) {
    memset(ns, 0, sizeof *ns);
    if (!state || dspy_json_typeof(state) != DSPY_JSON_OBJECT)
        return dspy_fail(DSPY_ERR_FORMAT, "state of '%s' must be an object", name);
    if (dspy_json_get(state, "extended_signature"))
        return dspy_fail(DSPY_ERR_FORMAT, "state of '%s': Loading extended_signature is no longer supported in DSPy "
                         "2.6+ (the file was saved by DSPy 2.5 or older; save it again with a newer DSPy)", name);
    const dspy_json *sig = dspy_json_get(state, "signature");
    if (!sig) return dspy_fail(DSPY_ERR_FORMAT, "state of '%s' has no \"signature\"", name);
    if (!dspy_json_get(state, "lm")) return dspy_fail(DSPY_ERR_FORMAT, "state of '%s' has no \"lm\"", name);
    ns->profile = cur->profile;
    dspy_status st = DSPY_OK;
    if (!(ns->config = dspy_json_copy(cur->config))) st = nomem();
    if (!st) st = take_list(state, name, "traces", false, &ns->traces);
    if (!st && !ns->traces && !(ns->traces = dspy_json_copy(cur->traces))) st = nomem();
    if (!st) st = take_list(state, name, "train", false, &ns->train);
    if (!st && !ns->train && !(ns->train = dspy_json_copy(cur->train))) st = nomem();
    if (!st) st = take_list(state, name, "demos", true, &ns->demos);
    if (!st && !ns->demos && !(ns->demos = dspy_json_copy(cur->demos))) st = nomem();
    if (!st && (st = dspy_signature_load_state(cur->sig, sig, &ns->sig))) st = dspy_fail_wrap(st, "state of '%s'", name);
    const dspy_json *lm = dspy_json_get(state, "lm");
    if (!st && dspy_json_truthy(lm)) {
        dspy_lm_params lp = dspy_lm_params_default();
        lp.profile = lm_profile_for(cur->profile);
        if ((st = dspy_lm_load_state(lm, allow_unsafe, &lp, &ns->lm))) st = dspy_fail_wrap(st, "state of '%s': lm", name);
    }
    if (st) dspy_predict_state_release(ns);
    return st;
}

static void keys_of(const dspy_json *o, dspy_str *s) {
    bool first = true;
    for (void *it = dspy_json_iter(o); it; it = dspy_json_next(o, it)) {
        if (!first) dspy_str_append(s, ", ");
        first = false;
        dspy_py_repr_str(dspy_json_iter_key(it), strlen(dspy_json_iter_key(it)), s);
    }
}

dspy_status dspy_module_load_state(dspy_module *m, const dspy_json *state, bool allow_unsafe_lm_state) {
    if (!m) return dspy_fail(DSPY_ERR_ARG, "load_state: no module given");
    if (!state || dspy_json_typeof(state) != DSPY_JSON_OBJECT)
        return dspy_fail(DSPY_ERR_FORMAT, "load_state: the state must be a JSON object of predictor states");
    dspy_named_predictor *ps;
    size_t n;
    dspy_status st = dspy_module_named_predictors(m, &ps, &n);
    if (st) return st;
    predict_state *prepared = calloc(n ? n : 1, sizeof *prepared);
    size_t done = 0;
    if (!prepared) st = nomem();
    for (size_t i = 0; i < n && !st; i++) {
        const dspy_json *sub = dspy_json_get(state, ps[i].name);
        if (!sub) {
            dspy_str keys = DSPY_STR_INIT;
            keys_of(state, &keys);
            st = dspy_fail(DSPY_ERR_NOTFOUND, "load_state: no state for predictor '%s' of this %s (the state has %s); "
                           "was it saved from a different program?", ps[i].name, dspy_module_type_name(m),
                           keys.len ? dspy_str_cstr(&keys) : "no keys");
            dspy_str_free(&keys);
            break;
        }
        if (!(st = prepare_predict(dspy_predict_state_of(ps[i].predictor), ps[i].name, sub, allow_unsafe_lm_state, &prepared[i])))
            done = i + 1;
    }
    if (!st) /* commit: nothing below can fail */
        for (size_t i = 0; i < n; i++) dspy_predict_state_swap(dspy_predict_state_of(ps[i].predictor), &prepared[i]);
    for (size_t i = 0; i < (st ? done : n); i++) dspy_predict_state_release(&prepared[i]);
    free(prepared);
    dspy_named_predictors_free(ps, n);
    return st;
}

/* ---- signature text for metadata.dspy_c ------------------------------------------------------ */

/* "a, b: int -> c: list[str]" with types (inputs without a declared type stay bare; str
 * outputs are written bare, which parses to str). `skip` is an output index to leave out
 * (ChainOfThought's reasoning) or SIZE_MAX. */
static dspy_status signature_text(const dspy_signature *sig, size_t skip, char **out) {
    *out = NULL;
    dspy_str s = DSPY_STR_INIT;
    size_t ni = dspy_signature_n_inputs(sig), nf = dspy_signature_n_fields(sig);
    bool first = true;
    for (size_t i = 0; i < nf; i++) {
        if (i == ni) {
            dspy_str_append(&s, " -> ");
            first = true;
        }
        if (i == skip) continue;
        if (!first) dspy_str_append(&s, ", ");
        first = false;
        dspy_str_append(&s, dspy_signature_field_name(sig, i));
        const dspy_type *t = dspy_signature_field_type(sig, i);
        bool bare = i < ni ? dspy_signature_field_type_undefined(sig, i) : dspy_type_kind_of(t) == DSPY_TYPE_STR;
        if (!bare) {
            dspy_str_append(&s, ": ");
            dspy_type_name(t, DSPY_PROFILE_V33, &s);
        }
    }
    if (ni == nf) dspy_str_append(&s, " -> ");
    if (!dspy_str_ok(&s)) {
        dspy_str_free(&s);
        return nomem();
    }
    *out = dspy_str_take(&s);
    return *out ? DSPY_OK : nomem();
}

/* True when `text` parses back to the fields of `sig` (minus `skip`) with equal types. */
static bool round_trips(const char *text, const dspy_signature *sig, size_t skip) {
    dspy_signature *back;
    if (dspy_signature_parse(text, NULL, &back)) {
        dspy_errclear();
        return false;
    }
    size_t nf = dspy_signature_n_fields(sig), j = 0;
    bool ok = dspy_signature_n_fields(back) == nf - (skip < nf ? 1 : 0);
    for (size_t i = 0; ok && i < nf; i++) {
        if (i == skip) continue;
        ok = strcmp(dspy_signature_field_name(sig, i), dspy_signature_field_name(back, j)) == 0 &&
             dspy_signature_field_kind(sig, i) == dspy_signature_field_kind(back, j) &&
             dspy_type_equal(dspy_signature_field_type(sig, i), dspy_signature_field_type(back, j));
        j++;
    }
    dspy_signature_free(back);
    return ok;
}

/* metadata.dspy_c for module `m`. */
static dspy_status dspy_c_metadata(dspy_module *m, dspy_json **out) {
    *out = NULL;
    dspy_named_predictor *ps;
    size_t n;
    dspy_status st = dspy_module_named_predictors(m, &ps, &n);
    if (st) return st;
    dspy_profile prof = n ? dspy_predict_state_of(ps[0].predictor)->profile : DSPY_PROFILE_V33;
    for (size_t i = 1; i < n; i++)
        if (dspy_predict_state_of(ps[i].predictor)->profile != prof)
            dspy_log(DSPY_LOG_WARN, "save: predictors use different format profiles; recording %s (that of '%s')",
                     dspy_profile_name(prof), ps[0].name);
    dspy_json *o = dspy_json_object();
    if (!o || dspy_json_set_str(o, "format_profile", dspy_profile_name(prof)) ||
        dspy_json_set_str(o, "program", dspy_module_type_name(m)))
        st = nomem();
    /* the root's signature and config, for Predict and ChainOfThought roots */
    const predict_state *root = NULL;
    size_t skip = SIZE_MAX;
    if (!st && dspy_module_is_predict(m)) {
        root = dspy_predict_state_of(m);
    } else if (!st && dspy_module_impl(m) == NULL && strcmp(dspy_module_type_name(m), "ChainOfThought") == 0 &&
               dspy_module_n_children(m) == 1 && dspy_module_is_predict(dspy_module_child(m, "predict"))) {
        root = dspy_predict_state_of(dspy_module_child(m, "predict"));
        size_t ri;
        if (dspy_signature_find(root->sig, "reasoning", &ri) && ri == dspy_signature_n_inputs(root->sig)) skip = ri;
        else root = NULL;
    }
    if (!st && root) {
        char *text;
        if (!(st = signature_text(root->sig, skip, &text))) {
            if (round_trips(text, root->sig, skip)) {
                if (dspy_json_set_str(o, "signature", text)) st = nomem();
            } else {
                dspy_log(DSPY_LOG_WARN, "save: the signature '%s' does not read back with the same types; the saved "
                         "file will need the signature given when it is loaded with dspy_program_load", text);
            }
            free(text);
        }
        if (!st && dspy_json_set(o, "config", dspy_json_copy(root->config))) st = nomem();
    }
    dspy_named_predictors_free(ps, n);
    if (st) {
        dspy_json_decref(o);
        return st;
    }
    *out = o;
    return DSPY_OK;
}

/* ---- files --------------------------------------------------------------------------------- */

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static dspy_status check_path(const char *path, const char *what) {
    if (!path || !*path) return dspy_fail(DSPY_ERR_ARG, "%s: no path given", what);
    if (ends_with(path, ".pkl"))
        return dspy_fail(DSPY_ERR_ARG, "%s: %s: pickle files are not supported by dspy.c; use a .json path", what, path);
    if (!ends_with(path, ".json"))
        return dspy_fail(DSPY_ERR_ARG, "%s: `path` must end with `.json` (got '%s')", what, path);
    return DSPY_OK;
}

dspy_status dspy_module_save(dspy_module *m, const char *path) {
    dspy_status st = check_path(path, "save");
    if (st) return st;
    dspy_json *state = NULL, *meta = NULL, *deps = NULL, *dc = NULL;
    if ((st = dspy_module_dump_state(m, &state))) return st;
    if ((st = dspy_c_metadata(m, &dc))) goto done;
    if (!(meta = dspy_json_object()) || !(deps = dspy_json_object())) {
        st = nomem();
        goto done;
    }
    for (size_t i = 0; i < 3; i++)
        if (dspy_json_set_str(deps, k_dep_keys[i], k_dep_versions[i])) st = nomem();
    if (!st && dspy_json_set(meta, "dependency_versions", deps)) st = nomem();
    deps = NULL;
    if (!st && dspy_json_set(meta, "dspy_c", dc)) st = nomem();
    dc = NULL;
    if (!st && dspy_json_set(state, "metadata", meta)) st = nomem();
    meta = NULL;
    if (st) goto done;
    dspy_str text = DSPY_STR_INIT;
    st = dspy_json_dump(state, DSPY_JSON_UTF8 | DSPY_JSON_INDENT(2), &text);
    dspy_str_appendc(&text, '\n');
    if (!st && !dspy_str_ok(&text)) st = nomem();
    if (!st) st = dspy_write_file(path, dspy_str_cstr(&text), text.len);
    dspy_str_free(&text);
done:
    dspy_json_decref(state);
    dspy_json_decref(meta);
    dspy_json_decref(deps);
    dspy_json_decref(dc);
    return st;
}

/* Reads a saved program file: a JSON object. Warns on dependency version mismatches. */
static dspy_status read_saved(const char *path, dspy_json **out) {
    dspy_status st = check_path(path, "load");
    if (st) return st;
    if ((st = dspy_json_load(path, out))) return st;
    if (dspy_json_typeof(*out) != DSPY_JSON_OBJECT) {
        dspy_json_decref(*out);
        *out = NULL;
        return dspy_fail(DSPY_ERR_FORMAT, "%s: a saved program must be a JSON object of predictor states", path);
    }
    const dspy_json *deps = dspy_json_get(dspy_json_get(*out, "metadata"), "dependency_versions");
    for (size_t i = 0; i < 3; i++) {
        const char *saved = dspy_json_str(dspy_json_get(deps, k_dep_keys[i]));
        if (saved && strcmp(saved, k_dep_versions[i]) != 0)
            dspy_log(DSPY_LOG_WARN,
                     "There is a mismatch of %s version between saved model and current environment. You saved with "
                     "`%s==%s`, but now you have `%s==%s`. This might cause errors or performance downgrade on the "
                     "loaded model, please consider loading the model in the same environment as the saving environment.",
                     k_dep_keys[i], k_dep_keys[i], saved, k_dep_keys[i], k_dep_versions[i]);
    }
    return DSPY_OK;
}

dspy_status dspy_module_load(dspy_module *m, const char *path, bool allow_unsafe_lm_state) {
    dspy_json *state;
    dspy_status st = read_saved(path, &state);
    if (st) return st;
    st = dspy_module_load_state(m, state, allow_unsafe_lm_state);
    dspy_json_decref(state);
    if (st) return dspy_fail_wrap(st, "%s", path);
    return DSPY_OK;
}

dspy_program_load_params dspy_program_load_params_default(void) {
    dspy_program_load_params p = {.program = NULL, .signature = NULL, .format_profile = -1, .allow_unsafe_lm_state = false};
    return p;
}

/* Guesses the program type of a file without metadata.dspy_c from its keys. */
static const char *guess_program(const dspy_json *state, const char *sig_text) {
    if (dspy_json_get(state, "self")) return "Predict";
    const dspy_json *fields = dspy_json_get(dspy_json_get(dspy_json_get(state, "predict"), "signature"), "fields");
    dspy_signature *sig;
    if (!fields || !sig_text || dspy_signature_parse(sig_text, NULL, &sig)) {
        dspy_errclear();
        return NULL;
    }
    size_t nf = dspy_signature_n_fields(sig);
    dspy_signature_free(sig);
    return dspy_json_size(fields) == nf + 1 ? "ChainOfThought" : NULL;
}

dspy_status dspy_program_load(const char *path, const dspy_program_load_params *p, dspy_module **out) {
    *out = NULL;
    dspy_program_load_params prm = p ? *p : dspy_program_load_params_default();
    dspy_json *state;
    dspy_status st = read_saved(path, &state);
    if (st) return st;
    const dspy_json *dc = dspy_json_get(dspy_json_get(state, "metadata"), "dspy_c");
    const char *sig_text = prm.signature ? prm.signature : dspy_json_str(dspy_json_get(dc, "signature"));
    const char *program = prm.program ? prm.program : dspy_json_str(dspy_json_get(dc, "program"));
    if (!program) program = guess_program(state, sig_text);
    dspy_profile prof = DSPY_PROFILE_V33;
    const char *fp = dspy_json_str(dspy_json_get(dc, "format_profile"));
    dspy_module *m = NULL;
    if (prm.format_profile >= 0) prof = (dspy_profile)prm.format_profile;
    else if (fp && (st = dspy_profile_parse(fp, &prof))) st = dspy_fail_wrap(st, "%s: metadata.dspy_c.format_profile", path);
    if (!st && !sig_text)
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: the file does not record the program's signature (it was not saved by "
                       "dspy.c); give the signature (dspy_program_load_params.signature, --signature)", path);
    if (!st && !program)
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: the file does not record the program type; give it "
                       "(dspy_program_load_params.program, --module predict|cot)", path);
    if (st) goto done;
    dspy_predict_params pp = dspy_predict_params_default();
    pp.profile = prof;
    const dspy_json *cfg = dspy_json_get(dc, "config");
    pp.config = cfg && dspy_json_typeof(cfg) == DSPY_JSON_OBJECT ? cfg : NULL;
    if (strcmp(program, "Predict") == 0 || strcmp(program, "predict") == 0) {
        st = dspy_predict_new_text(sig_text, NULL, &pp, &m);
    } else if (strcmp(program, "ChainOfThought") == 0 || strcmp(program, "cot") == 0) {
        st = dspy_chain_of_thought_new_text(sig_text, NULL, &pp, &m);
    } else {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: program type '%s' cannot be rebuilt from a file (only Predict and "
                       "ChainOfThought can); build the module in C and use dspy_module_load", path, program);
    }
    if (st) {
        st = dspy_fail_wrap(st, "%s", path);
        goto done;
    }
    if ((st = dspy_module_load_state(m, state, prm.allow_unsafe_lm_state))) {
        st = dspy_fail_wrap(st, "%s", path);
        goto done;
    }
    *out = m;
    m = NULL;
done:
    dspy_module_free(m);
    dspy_json_decref(state);
    return st;
}
