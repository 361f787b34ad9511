/* adapter_json.c — DSPy's JSONAdapter (spec §5.4, dspy/adapters/json_adapter.py).
 *
 * What: the JSON-mode system/user/assistant text (V33; V26 joins every section with a blank
 * line and uses the V26 notes and type names), lenient parsing of the answer (json_repair,
 * then the first balanced {...}), and the structured-output response_format (pydantic model
 * DSPyProgramOutputs with every object's "required" = all properties and
 * "additionalProperties": false), as litellm puts it on the wire.
 * Not: tool calls, native function calling. The call sequencing lives in adapter_call.c.
 */
#include <stdlib.h>
#include <string.h>

#include "program/adapter_priv.h"
#include "program/json_repair.h"
#include "program/pytext.h"
#include "program/type_priv.h"

static dspy_status nomem(void) { return dspy_fail(DSPY_ERR_NOMEM, "JSON adapter: out of memory"); }

/* json.dumps({name: "{name}<note>"}, indent=2, ensure_ascii=False) */
static dspy_status out_json(const dspy_signature *sig, dspy_profile p, dspy_str *out) {
    dspy_json *o = dspy_json_object();
    if (!o) return nomem();
    dspy_status st = DSPY_OK;
    for (size_t i = dspy_signature_n_inputs(sig); i < dspy_signature_n_fields(sig) && !st; i++) {
        dspy_str ph = DSPY_STR_INIT;
        st = dspy_adp_field_placeholder(sig, i, p, &ph);
        if (!st) st = dspy_json_set_str(o, dspy_signature_field_name(sig, i), dspy_str_cstr(&ph));
        dspy_str_free(&ph);
    }
    if (!st) st = dspy_json_dump(o, DSPY_JSON_UTF8 | DSPY_JSON_INDENT(2), out);
    dspy_json_decref(o);
    return st;
}

dspy_status dspy_adp_json_system(const dspy_signature *sig, dspy_profile p, dspy_str *out) {
    size_t ni = dspy_signature_n_inputs(sig), nf = dspy_signature_n_fields(sig);
    dspy_str s = DSPY_STR_INIT;
    dspy_status st;
    if (p == DSPY_PROFILE_V26) {
        dspy_str_append(&s, "Your input fields are:\n");
        dspy_adp_enumerate_v26(sig, 0, ni, &s);
        dspy_str_append(&s, "\n\nYour output fields are:\n");
        dspy_adp_enumerate_v26(sig, ni, nf, &s);
        dspy_str_append(&s, "\n\n" ADP_INTRO "\n\nInputs will have the following structure:\n\n");
    } else {
        dspy_str_append(&s, ADP_INTRO "\n\nInputs will have the following structure:\n\n");
    }
    st = dspy_adp_block(sig, 0, ni, p, &s);
    if (!st) {
        dspy_str_append(&s, "\n\nOutputs will be a JSON object with the following fields.\n\n");
        st = out_json(sig, p, &s);
    }
    if (!st && p == DSPY_PROFILE_V26) {
        dspy_str_append(&s, "\n\n");
        st = dspy_adp_task_description(sig, &s);
    }
    dspy_adp_strip(&s);
    if (!st && p == DSPY_PROFILE_V33) {
        dspy_adp_field_description_v33(sig, out);
        dspy_str_appendc(out, '\n');
    }
    dspy_str_appendn(out, dspy_str_cstr(&s), s.len);
    if (!st && !dspy_str_ok(&s)) st = nomem();
    dspy_str_free(&s);
    if (!st && p == DSPY_PROFILE_V33) {
        dspy_str_appendc(out, '\n');
        st = dspy_adp_task_description(sig, out);
    }
    return st ? st : (dspy_str_ok(out) ? DSPY_OK : nomem());
}

dspy_status dspy_adp_json_req(const dspy_signature *sig, dspy_profile p, dspy_str *out) {
    size_t ni = dspy_signature_n_inputs(sig), nf = dspy_signature_n_fields(sig);
    dspy_str_append(out, "Respond with a JSON object in the following order of fields: ");
    for (size_t i = ni; i < nf; i++) {
        if (i > ni) dspy_str_append(out, ", then ");
        dspy_str_appendf(out, "`%s`", dspy_signature_field_name(sig, i));
        dspy_adp_type_info(sig, i, p, out);
    }
    dspy_str_append(out, ".");
    return dspy_str_ok(out) ? DSPY_OK : nomem();
}

dspy_status dspy_adp_json_assistant(const dspy_signature *sig, const dspy_json *outputs,
                               const char *missing, dspy_str *out) {
    dspy_json *o = dspy_json_object();
    if (!o) return nomem();
    dspy_status st = DSPY_OK;
    for (size_t i = dspy_signature_n_inputs(sig); i < dspy_signature_n_fields(sig) && !st; i++) {
        const char *name = dspy_signature_field_name(sig, i);
        const dspy_json *v = outputs && dspy_json_typeof(outputs) == DSPY_JSON_OBJECT
                                 ? dspy_json_get(outputs, name) : NULL;
        dspy_json *x = v ? dspy_json_incref((dspy_json *)v)
                         : missing ? dspy_json_string(missing) : dspy_json_null();
        st = x ? dspy_json_set(o, name, x) : nomem();
    }
    if (!st) st = dspy_json_dump(o, DSPY_JSON_UTF8 | DSPY_JSON_INDENT(2), out);
    dspy_json_decref(o);
    return st;
}

dspy_status dspy_adp_json_parse(const dspy_signature *sig, dspy_profile p, const char *completion,
                           dspy_json **fields) {
    *fields = NULL;
    size_t n = strlen(completion);
    const char *resp = completion;
    size_t resp_len = n;
    dspy_json *parsed = NULL, *out = NULL;
    char *resp_copy = NULL;
    dspy_status st = dspy_json_repair_loads(completion, n, &parsed);
    if (st) return st;
    if (dspy_json_typeof(parsed) != DSPY_JSON_OBJECT) {
        size_t at, len;
        if (dspy_json_first_braced(completion, n, &at, &len)) {
            resp = completion + at;
            resp_len = len;
            dspy_json_decref(parsed);
            parsed = NULL;
            if ((st = dspy_json_repair_loads(resp, resp_len, &parsed))) return st;
        }
    }
    if (!(resp_copy = malloc(resp_len + 1))) {
        st = nomem();
        goto done;
    }
    memcpy(resp_copy, resp, resp_len);
    resp_copy[resp_len] = '\0';
    if (dspy_json_typeof(parsed) != DSPY_JSON_OBJECT) {
        st = dspy_adp_parse_error("JSONAdapter", sig, resp_copy,
                             "LM response cannot be serialized to a JSON object.", NULL);
        goto done;
    }
    if (!(out = dspy_json_object())) {
        st = nomem();
        goto done;
    }
    for (void *it = dspy_json_iter(parsed); it; it = dspy_json_next(parsed, it)) {
        const char *k = dspy_json_iter_key(it);
        size_t idx;
        if (!dspy_signature_find(sig, k, &idx) || dspy_signature_field_kind(sig, idx) != DSPY_FIELD_OUTPUT)
            continue;
        dspy_json *val;
        st = dspy_type_parse_value(dspy_signature_field_type(sig, idx), dspy_json_iter_value(it), p, &val);
        if (st) goto done;
        if ((st = dspy_json_set(out, k, val))) goto done;
    }
    if (p == DSPY_PROFILE_V33 && (st = dspy_adp_apply_defaults(sig, out))) goto done;
    if (!dspy_adp_has_all_outputs(sig, out))
        st = p == DSPY_PROFILE_V26 ? dspy_adp_v26_keys_error(sig, out)
                                   : dspy_adp_parse_error("JSONAdapter", sig, resp_copy, NULL, out);
done:
    free(resp_copy);
    dspy_json_decref(parsed);
    if (st) {
        dspy_json_decref(out);
        return st;
    }
    *fields = out;
    return DSPY_OK;
}

bool dspy_json_adapter_has_open_mapping(const dspy_signature *sig) {
    for (size_t i = dspy_signature_n_inputs(sig); i < dspy_signature_n_fields(sig); i++)
        if (dspy_type_kind_of(dspy_signature_field_type(sig, i)) == DSPY_TYPE_DICT) return true;
    return false;
}

/* enforce_required of _get_structured_outputs_response_format. */
static dspy_status enforce_required(dspy_json *s) {
    if (dspy_json_typeof(s) != DSPY_JSON_OBJECT) return DSPY_OK;
    const char *ty = dspy_json_str_or(s, "type", NULL);
    if (ty && strcmp(ty, "object") == 0) {
        dspy_json *props = dspy_json_get(s, "properties");
        if (props) {
            dspy_json *req = dspy_json_array();
            if (!req) return nomem();
            for (void *it = dspy_json_iter(props); it; it = dspy_json_next(props, it))
                if (dspy_json_append(req, dspy_json_string(dspy_json_iter_key(it)))) {
                    dspy_json_decref(req);
                    return nomem();
                }
            if (dspy_json_set(s, "required", req) ||
                dspy_json_set(s, "additionalProperties", dspy_json_bool(false)))
                return nomem();
            for (void *it = dspy_json_iter(props); it; it = dspy_json_next(props, it)) {
                dspy_status st = enforce_required(dspy_json_iter_value(it));
                if (st) return st;
            }
        } else {
            if (dspy_json_set(s, "properties", dspy_json_object()) ||
                dspy_json_set(s, "required", dspy_json_array()) ||
                dspy_json_set(s, "additionalProperties", dspy_json_bool(false)))
                return nomem();
        }
    }
    if (ty && strcmp(ty, "array") == 0) {
        dspy_json *items = dspy_json_get(s, "items");
        if (items && dspy_json_typeof(items) == DSPY_JSON_OBJECT) return enforce_required(items);
    }
    return DSPY_OK;
}

static int cmp_keys(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A property schema: the type's schema plus "title" (and "default"), keys sorted as pydantic
 * sorts them. */
static dspy_status property_schema(const dspy_signature *sig, size_t i, dspy_json **out) {
    *out = NULL;
    dspy_json *base;
    dspy_status st = dspy_type_json_schema(dspy_signature_field_type(sig, i), &base);
    if (st) return st;
    dspy_str title = DSPY_STR_INIT;
    dspy_py_title(dspy_signature_field_name(sig, i), &title);
    for (size_t k = 0; k < title.len; k++)
        if (title.ptr[k] == '_') title.ptr[k] = ' ';
    dspy_adp_strip(&title);
    if ((st = dspy_json_set_str(base, "title", dspy_str_cstr(&title)))) goto done;
    const dspy_json *def = dspy_signature_field_default(sig, i);
    if (def && (st = dspy_json_set(base, "default", dspy_json_copy(def)))) goto done;
    size_t n = dspy_json_size(base), k = 0;
    const char **keys = malloc(n * sizeof *keys);
    dspy_json *sorted = dspy_json_object();
    if (!keys || !sorted) {
        free(keys);
        dspy_json_decref(sorted);
        st = nomem();
        goto done;
    }
    for (void *it = dspy_json_iter(base); it; it = dspy_json_next(base, it))
        keys[k++] = dspy_json_iter_key(it);
    qsort(keys, k, sizeof *keys, cmp_keys);
    for (size_t j = 0; j < k && !st; j++)
        st = dspy_json_set(sorted, keys[j], dspy_json_incref(dspy_json_get(base, keys[j])));
    free(keys);
    if (st) dspy_json_decref(sorted);
    else *out = sorted;
done:
    dspy_str_free(&title);
    dspy_json_decref(base);
    return st;
}

dspy_status dspy_json_adapter_response_format(const dspy_signature *sig, dspy_json **out) {
    *out = NULL;
    size_t ni = dspy_signature_n_inputs(sig), nf = dspy_signature_n_fields(sig);
    for (size_t i = ni; i < nf; i++)
        if (dspy_type_kind_of(dspy_signature_field_type(sig, i)) == DSPY_TYPE_DICT)
            return dspy_fail(DSPY_ERR_ARG, "Field '%s' has an open-ended mapping type which is not "
                             "supported by Structured Outputs.", dspy_signature_field_name(sig, i));
    dspy_json *schema = dspy_json_object(), *props = dspy_json_object(), *req = dspy_json_array();
    dspy_json *rf = NULL, *js = NULL;
    dspy_status st = DSPY_OK;
    if (!schema || !props || !req) {
        st = nomem();
        goto fail;
    }
    for (size_t i = ni; i < nf; i++) {
        dspy_json *prop;
        if ((st = property_schema(sig, i, &prop))) goto fail;
        if ((st = dspy_json_set(props, dspy_signature_field_name(sig, i), prop))) goto fail;
        if (!dspy_signature_field_default(sig, i) &&
            dspy_json_append(req, dspy_json_string(dspy_signature_field_name(sig, i)))) {
            st = nomem();
            goto fail;
        }
    }
    /* pydantic's sorted order: additionalProperties, properties, required, title, type */
    if (dspy_json_set(schema, "additionalProperties", dspy_json_bool(false))) {
        st = nomem();
        goto fail;
    }
    st = dspy_json_set(schema, "properties", props);
    props = NULL;
    if (st) goto fail;
    if (dspy_json_size(req)) {
        st = dspy_json_set(schema, "required", req);
        req = NULL;
        if (st) goto fail;
    }
    if (dspy_json_set_str(schema, "title", "DSPyProgramOutputs") ||
        dspy_json_set_str(schema, "type", "object")) {
        st = nomem();
        goto fail;
    }
    if ((st = enforce_required(schema))) goto fail;
    if (!(rf = dspy_json_object()) || !(js = dspy_json_object())) {
        st = nomem();
        goto fail;
    }
    if (dspy_json_set_str(rf, "type", "json_schema")) {
        st = nomem();
        goto fail;
    }
    st = dspy_json_set(js, "schema", schema);
    schema = NULL;
    if (st) goto fail;
    if (dspy_json_set_str(js, "name", "DSPyProgramOutputs") ||
        dspy_json_set(js, "strict", dspy_json_bool(true))) {
        st = nomem();
        goto fail;
    }
    st = dspy_json_set(rf, "json_schema", js);
    js = NULL;
    if (st) goto fail;
    dspy_json_decref(req);
    *out = rf;
    return DSPY_OK;
fail:
    dspy_json_decref(schema);
    dspy_json_decref(props);
    dspy_json_decref(req);
    dspy_json_decref(rf);
    dspy_json_decref(js);
    return st;
}
