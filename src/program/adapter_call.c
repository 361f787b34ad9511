/* adapter_call.c — the public adapter entry points: format (system, demos, user), finetune
 * data, parse, and Adapter.__call__ with the ChatAdapter -> JSONAdapter fallback.
 *
 * What: spec §4 (message list), §4.7 (format_finetune_data), §5.1 (call pipeline and
 * fallback), §5.4 (JSONAdapter request modes: none / json_object / structured then
 * json_object), CC-19.
 * Not: the LM client (a callback supplies the LM), history, usage tracking; callbacks only as
 * the optional format/parse hooks the module layer installs.
 */
#include <stdlib.h>
#include <string.h>

#include "program/adapter_priv.h"

static dspy_status nomem(void) { return dspy_fail(DSPY_ERR_NOMEM, "adapter: out of memory"); }

const char *dspy_adapter_name(dspy_adapter_kind a) {
    return a == DSPY_ADAPTER_JSON ? "JSONAdapter" : "ChatAdapter";
}

static dspy_status take(dspy_str *s, dspy_status st, char **out) {
    *out = NULL;
    if (!st && !dspy_str_ok(s)) st = nomem();
    if (st) {
        dspy_str_free(s);
        return st;
    }
    *out = dspy_str_take(s);
    dspy_str_free(s);
    return *out ? DSPY_OK : nomem();
}

static dspy_status system_text(dspy_adapter_kind a, dspy_profile p, const dspy_signature *sig,
                               dspy_str *out) {
    return a == DSPY_ADAPTER_JSON ? dspy_adp_json_system(sig, p, out) : dspy_adp_chat_system(sig, p, out);
}

static dspy_status req_text(dspy_adapter_kind a, dspy_profile p, const dspy_signature *sig,
                            dspy_str *out) {
    return a == DSPY_ADAPTER_JSON ? dspy_adp_json_req(sig, p, out) : dspy_adp_chat_req(sig, p, out);
}

/* A user turn: the main request (req) or a demo; `incomplete` selects the demo prefix. */
static dspy_status user_text(dspy_adapter_kind a, dspy_profile p, const dspy_signature *sig,
                             const dspy_json *values, bool main_request, bool incomplete,
                             dspy_str *out) {
    dspy_str req = DSPY_STR_INIT;
    dspy_status st = DSPY_OK;
    /* V26 adds the request to every user turn (when the signature has outputs); V33 only to
     * the main request. */
    bool with_req = p == DSPY_PROFILE_V26
                        ? (a == DSPY_ADAPTER_JSON || dspy_signature_n_outputs(sig) > 0)
                        : main_request;
    if (with_req) st = req_text(a, p, sig, &req);
    if (!st) {
        const char *prefix = incomplete ? ADP_INCOMPLETE_PREFIX : "";
        dspy_str body = DSPY_STR_INIT;
        st = dspy_adp_user_content(sig, p, values, prefix, with_req ? dspy_str_cstr(&req) : NULL,
                              incomplete, &body);
        if (!st && p == DSPY_PROFILE_V26 && a == DSPY_ADAPTER_JSON) dspy_adp_strip(&body);
        if (!st) dspy_str_appendn(out, dspy_str_cstr(&body), body.len);
        dspy_str_free(&body);
    }
    dspy_str_free(&req);
    return st ? st : (dspy_str_ok(out) ? DSPY_OK : nomem());
}

static dspy_status assistant_text(dspy_adapter_kind a, dspy_profile p, const dspy_signature *sig,
                                  const dspy_json *outputs, const char *missing, dspy_str *out) {
    return a == DSPY_ADAPTER_JSON ? dspy_adp_json_assistant(sig, outputs, missing, out)
                                  : dspy_adp_chat_assistant(sig, p, outputs, missing, out);
}

static dspy_status push_str(dspy_json *messages, const char *role, dspy_str *s) {
    dspy_status st = dspy_str_ok(s) ? dspy_adp_push(messages, role, dspy_str_cstr(s), s->len) : nomem();
    dspy_str_free(s);
    return st;
}

static dspy_status check_object(const dspy_json *v, const char *what) {
    if (v && dspy_json_typeof(v) != DSPY_JSON_OBJECT)
        return dspy_fail(DSPY_ERR_ARG, "%s must be a JSON object mapping field names to values", what);
    return DSPY_OK;
}

dspy_status dspy_adapter_format(dspy_adapter_kind a, dspy_profile p, const dspy_signature *sig,
                                const dspy_json *demos, const dspy_json *inputs,
                                dspy_json **messages) {
    *messages = NULL;
    dspy_status st = check_object(inputs, "inputs");
    if (st) return st;
    dspy_json *inc = NULL, *comp = NULL, *msgs = dspy_json_array();
    if (!msgs) return nomem();
    dspy_str s = DSPY_STR_INIT;
    if ((st = system_text(a, p, sig, &s)) || (st = push_str(msgs, "system", &s))) goto fail;
    if ((st = dspy_adp_split_demos(sig, demos, &inc, &comp))) goto fail;
    for (int group = 0; group < 2; group++) {
        const dspy_json *list = group == 0 ? inc : comp;
        bool incomplete = group == 0;
        const char *missing = p == DSPY_PROFILE_V26 ? ADP_MISSING_V26
                              : incomplete ? ADP_MISSING_INCOMPLETE : ADP_MISSING_COMPLETE;
        for (size_t i = 0; i < dspy_json_size(list); i++) {
            const dspy_json *demo = dspy_json_at(list, i);
            if ((st = user_text(a, p, sig, demo, false, incomplete, &s)) || (st = push_str(msgs, "user", &s)))
                goto fail;
            if ((st = assistant_text(a, p, sig, demo, missing, &s)) || (st = push_str(msgs, "assistant", &s)))
                goto fail;
        }
    }
    if ((st = user_text(a, p, sig, inputs, true, false, &s))) goto fail;
    if (s.len == 0) dspy_str_free(&s); /* V33 omits an empty user message */
    else if ((st = push_str(msgs, "user", &s))) goto fail;
    dspy_json_decref(inc);
    dspy_json_decref(comp);
    *messages = msgs;
    return DSPY_OK;
fail:
    dspy_str_free(&s);
    dspy_json_decref(inc);
    dspy_json_decref(comp);
    dspy_json_decref(msgs);
    return st;
}

dspy_status dspy_adapter_format_system(dspy_adapter_kind a, dspy_profile p,
                                       const dspy_signature *sig, char **out) {
    dspy_str s = DSPY_STR_INIT;
    return take(&s, system_text(a, p, sig, &s), out);
}

dspy_status dspy_adapter_format_user(dspy_adapter_kind a, dspy_profile p,
                                     const dspy_signature *sig, const dspy_json *inputs,
                                     char **out) {
    *out = NULL;
    dspy_status st = check_object(inputs, "inputs");
    if (st) return st;
    dspy_str s = DSPY_STR_INIT;
    return take(&s, user_text(a, p, sig, inputs, true, false, &s), out);
}

dspy_status dspy_adapter_format_assistant(dspy_adapter_kind a, dspy_profile p,
                                          const dspy_signature *sig, const dspy_json *outputs,
                                          char **out) {
    *out = NULL;
    dspy_status st = check_object(outputs, "outputs");
    if (st) return st;
    dspy_str s = DSPY_STR_INIT;
    return take(&s, assistant_text(a, p, sig, outputs, p == DSPY_PROFILE_V26 ? ADP_MISSING_V26 : NULL, &s),
                out);
}

dspy_status dspy_adapter_format_finetune_data(dspy_adapter_kind a, dspy_profile p,
                                              const dspy_signature *sig, const dspy_json *demos,
                                              const dspy_json *inputs, const dspy_json *outputs,
                                              dspy_json **out) {
    *out = NULL;
    if (a == DSPY_ADAPTER_JSON)
        return dspy_fail(DSPY_ERR_ARG, "JSONAdapter does not implement format_finetune_data "
                         "(DSPy raises NotImplementedError); fine-tune with the ChatAdapter");
    dspy_status st = check_object(outputs, "outputs");
    if (st) return st;
    if (p == DSPY_PROFILE_V26) {
        /* format_turn(..., role="assistant", incomplete=False) requires every output */
        dspy_json *empty = outputs ? NULL : dspy_json_object();
        const dspy_json *o = outputs ? outputs : empty;
        if (!o) return nomem();
        if (!dspy_adp_has_all_outputs(sig, o)) {
            dspy_adp_v26_keys_error(sig, o);
            char *msg = strdup(dspy_errmsg());
            dspy_json_decref(empty);
            st = msg ? dspy_fail(DSPY_ERR_ARG, "%s", msg) : nomem();
            free(msg);
            return st;
        }
        dspy_json_decref(empty);
    }
    dspy_json *msgs, *wrap = NULL;
    if ((st = dspy_adapter_format(a, p, sig, demos, inputs, &msgs))) return st;
    dspy_str s = DSPY_STR_INIT;
    if ((st = assistant_text(a, p, sig, outputs, NULL, &s)) || (st = push_str(msgs, "assistant", &s)))
        goto fail;
    if (!(wrap = dspy_json_object())) {
        st = nomem();
        goto fail;
    }
    st = dspy_json_set(wrap, "messages", msgs);
    msgs = NULL;
    if (st) goto fail;
    *out = wrap;
    return DSPY_OK;
fail:
    dspy_str_free(&s);
    dspy_json_decref(msgs);
    dspy_json_decref(wrap);
    return st;
}

dspy_status dspy_adapter_parse(dspy_adapter_kind a, dspy_profile p, const dspy_signature *sig,
                               const char *completion, dspy_json **fields) {
    return a == DSPY_ADAPTER_JSON ? dspy_adp_json_parse(sig, p, completion, fields)
                                  : dspy_adp_chat_parse(sig, p, completion, fields);
}

/* ---- Adapter.__call__ ------------------------------------------------------------------------ */

dspy_adapter_call_params dspy_adapter_call_params_default(void) {
    dspy_adapter_call_params p = {
        .adapter = DSPY_ADAPTER_CHAT,
        .profile = DSPY_PROFILE_V33,
        .use_json_adapter_fallback = true,
        .supports_response_format = true,
        .supports_response_schema = false,
    };
    return p;
}

void dspy_adapter_call_info_clear(dspy_adapter_call_info *info) {
    if (!info) return;
    free(info->lm_response);
    memset(info, 0, sizeof *info);
}

static void note_response(dspy_adapter_call_info *info, const char *text) {
    if (!info) return;
    free(info->lm_response);
    info->lm_response = NULL;
    if (text) {
        size_t n = strlen(text);
        if ((info->lm_response = malloc(n + 1))) memcpy(info->lm_response, text, n + 1);
    }
}

/* One adapter attempt. *lm_failed tells the caller that the status came from the LM. */
static dspy_status attempt(dspy_adapter_kind a, const dspy_adapter_call_params *prm,
                           const dspy_signature *sig, const dspy_json *demos, const dspy_json *inputs,
                           const dspy_json *kwargs, dspy_lm_call_fn lm, void *user, dspy_json **out,
                           dspy_adapter_call_info *info, bool *lm_failed) {
    *out = NULL;
    *lm_failed = false;
    if (info) info->adapter = a;
    dspy_json *messages = NULL, *outputs = NULL, *results = NULL;
    const dspy_adapter_hooks *hk = prm->hooks;
    void *token = hk && hk->format_start ? hk->format_start(hk->user, a, sig, demos, inputs) : NULL;
    dspy_status st = dspy_adapter_format(a, prm->profile, sig, demos, inputs, &messages);
    if (hk && hk->format_end) hk->format_end(hk->user, token, messages, st);
    if (st) return st;
    if (info) info->lm_calls++;
    st = lm(messages, kwargs, user, &outputs);
    dspy_json_decref(messages);
    if (st) {
        *lm_failed = true;
        return st;
    }
    if (!outputs || dspy_json_typeof(outputs) != DSPY_JSON_ARRAY) {
        dspy_json_decref(outputs);
        *lm_failed = true;
        return dspy_fail(DSPY_ERR_REMOTE, "LM callback returned no list of outputs");
    }
    if (!(results = dspy_json_array())) {
        st = nomem();
        goto done;
    }
    for (size_t i = 0; i < dspy_json_size(outputs); i++) {
        const dspy_json *o = dspy_json_at(outputs, i);
        const dspy_json *text = o, *logprobs = NULL;
        if (dspy_json_typeof(o) == DSPY_JSON_OBJECT) {
            text = dspy_json_get(o, "text");
            logprobs = dspy_json_get(o, "logprobs");
        }
        if (!text || !dspy_json_is_string(text) || dspy_json_strlen(text) == 0) {
            const char *shown = text && dspy_json_is_string(text) ? "" : "None";
            note_response(info, shown);
            st = dspy_adp_parse_error(dspy_adapter_name(a), sig, shown,
                                 "The LM returned an empty or null response.", NULL);
            goto done;
        }
        dspy_json *fields;
        token = hk && hk->parse_start ? hk->parse_start(hk->user, a, sig, dspy_json_str(text)) : NULL;
        st = dspy_adapter_parse(a, prm->profile, sig, dspy_json_str(text), &fields);
        if (hk && hk->parse_end) hk->parse_end(hk->user, token, st ? NULL : fields, st);
        if (st) {
            if (st == DSPY_ERR_PARSE) {
                char *msg = strdup(dspy_errmsg());
                note_response(info, dspy_json_str(text));
                if (msg) {
                    dspy_fail(DSPY_ERR_PARSE, "%s", msg);
                    free(msg);
                }
            }
            goto done;
        }
        /* missing output keys are set to None */
        for (size_t k = dspy_signature_n_inputs(sig); k < dspy_signature_n_fields(sig); k++) {
            const char *name = dspy_signature_field_name(sig, k);
            if (!dspy_json_get(fields, name) && dspy_json_set(fields, name, dspy_json_null())) st = nomem();
        }
        if (!st && logprobs && dspy_json_set(fields, "logprobs", dspy_json_incref((dspy_json *)logprobs)))
            st = nomem();
        if (!st && dspy_json_append(results, fields)) st = nomem();
        else if (st) dspy_json_decref(fields);
        if (st) goto done;
    }
done:
    dspy_json_decref(outputs);
    if (st) {
        dspy_json_decref(results);
        return st;
    }
    *out = results;
    return DSPY_OK;
}

static dspy_status with_response_format(const dspy_json *kwargs, dspy_json *rf, dspy_json **out) {
    *out = NULL;
    dspy_json *k = kwargs ? dspy_json_copy(kwargs) : dspy_json_object();
    if (!k) {
        dspy_json_decref(rf);
        return nomem();
    }
    dspy_status st = dspy_json_set(k, "response_format", rf);
    if (st) {
        dspy_json_decref(k);
        return st;
    }
    *out = k;
    return DSPY_OK;
}

static dspy_json *json_object_format(void) {
    dspy_json *rf = dspy_json_object();
    if (rf && dspy_json_set_str(rf, "type", "json_object")) {
        dspy_json_decref(rf);
        return NULL;
    }
    return rf;
}

/* JSONAdapter.__call__ (spec §5.4). */
static dspy_status json_call(const dspy_adapter_call_params *prm, const dspy_signature *sig,
                             const dspy_json *demos, const dspy_json *inputs, const dspy_json *kwargs,
                             dspy_lm_call_fn lm, void *user, dspy_json **out,
                             dspy_adapter_call_info *info) {
    bool lm_failed;
    dspy_json *k = NULL;
    dspy_status st;
    if (!prm->supports_response_format)
        return attempt(DSPY_ADAPTER_JSON, prm, sig, demos, inputs, kwargs, lm, user, out, info, &lm_failed);
    if (!dspy_json_adapter_has_open_mapping(sig) && prm->supports_response_schema) {
        dspy_json *rf;
        st = dspy_json_adapter_response_format(sig, &rf);
        if (st) return st;
        if ((st = with_response_format(kwargs, rf, &k))) return st;
        st = attempt(DSPY_ADAPTER_JSON, prm, sig, demos, inputs, k, lm, user, out, info, &lm_failed);
        dspy_json_decref(k);
        k = NULL;
        if (!st || lm_failed || st == DSPY_ERR_NOMEM) return st;
        /* "Failed to use structured output format, falling back to JSON mode." */
    }
    dspy_json *jo = json_object_format();
    if (!jo) return nomem();
    if ((st = with_response_format(kwargs, jo, &k))) return st;
    st = attempt(DSPY_ADAPTER_JSON, prm, sig, demos, inputs, k, lm, user, out, info, &lm_failed);
    dspy_json_decref(k);
    return st;
}

dspy_status dspy_adapter_call(const dspy_adapter_call_params *params, const dspy_signature *sig,
                              const dspy_json *demos, const dspy_json *inputs,
                              const dspy_json *lm_kwargs, dspy_lm_call_fn lm, void *user,
                              dspy_json **completions, dspy_adapter_call_info *info) {
    *completions = NULL;
    dspy_adapter_call_params prm = params ? *params : dspy_adapter_call_params_default();
    if (info) {
        info->lm_calls = 0;
        info->adapter = prm.adapter;
        info->lm_response = NULL;
    }
    if (lm_kwargs && dspy_json_typeof(lm_kwargs) != DSPY_JSON_OBJECT)
        return dspy_fail(DSPY_ERR_ARG, "lm_kwargs must be a JSON object");
    if (prm.adapter == DSPY_ADAPTER_JSON)
        return json_call(&prm, sig, demos, inputs, lm_kwargs, lm, user, completions, info);
    bool lm_failed;
    dspy_status st = attempt(DSPY_ADAPTER_CHAT, &prm, sig, demos, inputs, lm_kwargs, lm, user,
                             completions, info, &lm_failed);
    if (!st || lm_failed || st == DSPY_ERR_NOMEM || !prm.use_json_adapter_fallback) return st;
    /* V26 fell back only on errors raised while parsing; V33 on any non-LM error. */
    if (prm.profile == DSPY_PROFILE_V26 && st != DSPY_ERR_PARSE) return st;
    return json_call(&prm, sig, demos, inputs, lm_kwargs, lm, user, completions, info);
}
