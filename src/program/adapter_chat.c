/* adapter_chat.c — DSPy's ChatAdapter (spec §4, §5.2, §5.5) and the formatting pieces the
 * JSONAdapter shares with it.
 *
 * What: system/user/assistant message text for the V33 profile (dspy/adapters/chat_adapter.py
 * and base.py of DSPy 3.3.1) and the V26 profile (2.6.0rc8 prepare_instructions/format_turn),
 * format_field_value, demo partitioning, `[[ ## field ## ]]` parsing, AdapterParseError text.
 * Not: conversation history, images/audio/tools, callbacks (the caller runs those).
 * Decision (spec §16.6): a header line with leading whitespace keeps its same-line content
 * (DSPy slices the raw line with the stripped line's offset).
 */
#include <stdlib.h>
#include <string.h>

#include "program/adapter_priv.h"
#include "program/pytext.h"
#include "program/type_priv.h"

static dspy_status nomem(void) { return dspy_fail(DSPY_ERR_NOMEM, "adapter: out of memory"); }

static dspy_status str_status(const dspy_str *s) { return dspy_str_ok(s) ? DSPY_OK : nomem(); }

void dspy_adp_strip(dspy_str *s) {
    dspy_strv v = dspy_strv_strip(dspy_strv_make(dspy_str_cstr(s), s->len));
    if (!s->ptr) return;
    memmove(s->ptr, v.ptr, v.len);
    s->len = v.len;
    s->ptr[s->len] = '\0';
}

/* ---- field values ---------------------------------------------------------------------------------- */

static void blob(const char *s, size_t n, dspy_str *out) {
    bool plain = memchr(s, '\n', n) == NULL;
    for (size_t i = 0; plain && i + 1 < n; i++)
        if ((unsigned char)s[i] == 0xc2 &&
            ((unsigned char)s[i + 1] == 0xab || (unsigned char)s[i + 1] == 0xbb))
            plain = false; /* « or » */
    if (plain) {
        dspy_str_append(out, "\xc2\xab");
        dspy_str_appendn(out, s, n);
        dspy_str_append(out, "\xc2\xbb");
        return;
    }
    dspy_str_append(out, "\xc2\xab\xc2\xab\xc2\xab\n    ");
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n') dspy_str_append(out, "\n    ");
        else dspy_str_appendc(out, s[i]);
    }
    dspy_str_append(out, "\n\xc2\xbb\xc2\xbb\xc2\xbb");
}

static void blob_value(const dspy_json *v, dspy_str *out) {
    dspy_str s = DSPY_STR_INIT;
    dspy_json_pystr(v, &s);
    blob(dspy_str_cstr(&s), s.len, out);
    if (!dspy_str_ok(&s)) out->failed = true;
    dspy_str_free(&s);
}

dspy_status dspy_format_field_value(const dspy_type *annotation, const dspy_json *value,
                                    dspy_str *out) {
    dspy_json_type t = dspy_json_typeof(value);
    if (t == DSPY_JSON_ARRAY && annotation && dspy_type_kind_of(annotation) == DSPY_TYPE_STR) {
        size_t n = dspy_json_size(value);
        if (n == 0) dspy_str_append(out, "N/A");
        else if (n == 1) blob_value(dspy_json_at(value, 0), out);
        else
            for (size_t i = 0; i < n; i++) {
                if (i) dspy_str_appendc(out, '\n');
                dspy_str_appendf(out, "[%zu] ", i + 1);
                blob_value(dspy_json_at(value, i), out);
            }
        return str_status(out);
    }
    if (t == DSPY_JSON_ARRAY || t == DSPY_JSON_OBJECT) return dspy_json_dump(value, DSPY_JSON_UTF8, out);
    dspy_json_pystr(value, out);
    return str_status(out);
}

/* ---- system message pieces ------------------------------------------------------------------------- */

static bool desc_is_default(const dspy_signature *sig, size_t i) {
    const char *d = dspy_signature_field_desc(sig, i), *n = dspy_signature_field_name(sig, i);
    size_t nl = strlen(n);
    return strlen(d) == nl + 3 && d[0] == '$' && d[1] == '{' && memcmp(d + 2, n, nl) == 0 && d[nl + 2] == '}';
}

static void fd_block(const dspy_signature *sig, size_t from, size_t to, dspy_str *out) {
    dspy_str b = DSPY_STR_INIT;
    for (size_t i = from; i < to; i++) {
        if (i > from) dspy_str_appendc(&b, '\n');
        dspy_str_appendf(&b, "%zu. `%s` (", i - from + 1, dspy_signature_field_name(sig, i));
        dspy_type_name(dspy_signature_field_type(sig, i), DSPY_PROFILE_V33, &b);
        dspy_str_append(&b, "): ");
        if (!desc_is_default(sig, i)) dspy_str_append(&b, dspy_signature_field_desc(sig, i));
    }
    dspy_adp_strip(&b);
    dspy_str_appendn(out, dspy_str_cstr(&b), b.len);
    if (!dspy_str_ok(&b)) out->failed = true;
    dspy_str_free(&b);
}

void dspy_adp_field_description_v33(const dspy_signature *sig, dspy_str *out) {
    size_t ni = dspy_signature_n_inputs(sig), nf = dspy_signature_n_fields(sig);
    dspy_str_append(out, "Your input fields are:\n");
    fd_block(sig, 0, ni, out);
    dspy_str_append(out, "\nYour output fields are:\n");
    fd_block(sig, ni, nf, out);
}

void dspy_adp_enumerate_v26(const dspy_signature *sig, size_t from, size_t to, dspy_str *out) {
    dspy_str b = DSPY_STR_INIT;
    for (size_t i = from; i < to; i++) {
        if (i > from) dspy_str_appendc(&b, '\n');
        dspy_str_appendf(&b, "%zu. `%s` (", i - from + 1, dspy_signature_field_name(sig, i));
        dspy_type_name(dspy_signature_field_type(sig, i), DSPY_PROFILE_V26, &b);
        dspy_str_append(&b, ")");
        if (!desc_is_default(sig, i)) dspy_str_appendf(&b, ": %s", dspy_signature_field_desc(sig, i));
    }
    dspy_adp_strip(&b);
    dspy_str_appendn(out, dspy_str_cstr(&b), b.len);
    if (!dspy_str_ok(&b)) out->failed = true;
    dspy_str_free(&b);
}

dspy_status dspy_adp_field_placeholder(const dspy_signature *sig, size_t i, dspy_profile p, dspy_str *out) {
    dspy_str_appendf(out, "{%s}", dspy_signature_field_name(sig, i));
    if (dspy_signature_field_kind(sig, i) == DSPY_FIELD_INPUT) return str_status(out);
    const dspy_type *t = dspy_signature_field_type(sig, i);
    const char *note = "        # note: the value you produce ";
    switch (dspy_type_kind_of(t)) {
    case DSPY_TYPE_STR:
        break;
    case DSPY_TYPE_BOOL:
        dspy_str_append(out, note);
        dspy_str_append(out, "must be True or False");
        break;
    case DSPY_TYPE_INT:
    case DSPY_TYPE_FLOAT:
        dspy_str_append(out, note);
        dspy_str_appendf(out, "must be a single %s value",
                         dspy_type_kind_of(t) == DSPY_TYPE_INT ? "int" : "float");
        break;
    case DSPY_TYPE_LITERAL: {
        dspy_str_append(out, note);
        dspy_str_append(out, p == DSPY_PROFILE_V26 ? "must be one of: "
                                                   : "must exactly match (no extra characters) one of: ");
        const dspy_json *vals = dspy_type_literal_values(t);
        for (size_t k = 0; k < dspy_json_size(vals); k++) {
            if (k) dspy_str_append(out, "; ");
            dspy_json_pystr(dspy_json_at(vals, k), out);
        }
        break;
    }
    default: {
        dspy_str_append(out, note);
        dspy_str_append(out, p == DSPY_PROFILE_V26
                                 ? "must be pareseable according to the following JSON schema: "
                                 : "must adhere to the JSON schema: ");
        dspy_status st = dspy_type_schema_note(t, out);
        if (st) return st;
    }
    }
    return str_status(out);
}

dspy_status dspy_adp_block(const dspy_signature *sig, size_t from, size_t to, dspy_profile p, dspy_str *out) {
    dspy_str b = DSPY_STR_INIT;
    dspy_status st = DSPY_OK;
    for (size_t i = from; i < to && !st; i++) {
        if (i > from) dspy_str_append(&b, "\n\n");
        dspy_str_appendf(&b, "[[ ## %s ## ]]\n", dspy_signature_field_name(sig, i));
        st = dspy_adp_field_placeholder(sig, i, p, &b);
    }
    dspy_adp_strip(&b);
    dspy_str_appendn(out, dspy_str_cstr(&b), b.len);
    if (!st && !dspy_str_ok(&b)) st = nomem();
    dspy_str_free(&b);
    return st ? st : str_status(out);
}

dspy_status dspy_adp_task_description(const dspy_signature *sig, dspy_str *out) {
    dspy_str d = DSPY_STR_INIT;
    dspy_py_dedent(dspy_signature_instructions(sig), &d);
    py_lines lines;
    if (!dspy_str_ok(&d) || !dspy_py_splitlines(dspy_str_cstr(&d), d.len, &lines)) {
        dspy_str_free(&d);
        return nomem();
    }
    dspy_str_append(out, "In adhering to this structure, your objective is: ");
    for (size_t i = 0; i < lines.n; i++) {
        dspy_str_append(out, "\n        ");
        dspy_str_appendv(out, lines.v[i]);
    }
    dspy_py_lines_free(&lines);
    dspy_str_free(&d);
    return str_status(out);
}

void dspy_adp_type_info(const dspy_signature *sig, size_t i, dspy_profile p, dspy_str *out) {
    const dspy_type *t = dspy_signature_field_type(sig, i);
    if (dspy_type_kind_of(t) == DSPY_TYPE_STR) return;
    dspy_str_append(out, " (must be formatted as a valid Python ");
    dspy_type_name(t, p, out);
    dspy_str_append(out, ")");
}

dspy_status dspy_adp_chat_system(const dspy_signature *sig, dspy_profile p, dspy_str *out) {
    size_t ni = dspy_signature_n_inputs(sig), nf = dspy_signature_n_fields(sig);
    dspy_status st;
    if (p == DSPY_PROFILE_V26) {
        dspy_str s = DSPY_STR_INIT;
        dspy_str_append(&s, "Your input fields are:\n");
        dspy_adp_enumerate_v26(sig, 0, ni, &s);
        dspy_str_append(&s, "\n\nYour output fields are:\n");
        dspy_adp_enumerate_v26(sig, ni, nf, &s);
        dspy_str_append(&s, "\n\n" ADP_INTRO "\n\n");
        st = dspy_adp_block(sig, 0, ni, p, &s);
        if (!st) {
            dspy_str_append(&s, "\n\n");
            st = dspy_adp_block(sig, ni, nf, p, &s);
        }
        if (!st) {
            dspy_str_append(&s, "\n\n[[ ## completed ## ]]\n\n");
            st = dspy_adp_task_description(sig, &s);
        }
        dspy_adp_strip(&s);
        dspy_str_appendn(out, dspy_str_cstr(&s), s.len);
        dspy_str_free(&s);
        return st ? st : str_status(out);
    }
    dspy_adp_field_description_v33(sig, out);
    dspy_str_appendc(out, '\n');
    dspy_str fs = DSPY_STR_INIT;
    dspy_str_append(&fs, ADP_INTRO "\n\n");
    st = dspy_adp_block(sig, 0, ni, p, &fs);
    if (!st) {
        dspy_str_append(&fs, "\n\n");
        st = dspy_adp_block(sig, ni, nf, p, &fs);
    }
    dspy_str_append(&fs, "\n\n[[ ## completed ## ]]\n");
    dspy_adp_strip(&fs);
    dspy_str_appendn(out, dspy_str_cstr(&fs), fs.len);
    dspy_str_free(&fs);
    if (st) return st;
    dspy_str_appendc(out, '\n');
    return dspy_adp_task_description(sig, out);
}

dspy_status dspy_adp_chat_req(const dspy_signature *sig, dspy_profile p, dspy_str *out) {
    size_t ni = dspy_signature_n_inputs(sig), nf = dspy_signature_n_fields(sig);
    dspy_str_append(out, "Respond with the corresponding output fields, starting with the field ");
    for (size_t i = ni; i < nf; i++) {
        if (i > ni) dspy_str_append(out, ", then ");
        dspy_str_appendf(out, "`[[ ## %s ## ]]`", dspy_signature_field_name(sig, i));
        dspy_adp_type_info(sig, i, p, out);
    }
    dspy_str_append(out, ", and then ending with the marker for `[[ ## completed ## ]]`.");
    return str_status(out);
}

/* ---- the dspy_layout request extension --------------------------------------------------------------- */

dspy_status dspy_chat_adapter_layout(const dspy_signature *sig, dspy_json **out) {
    *out = NULL;
    size_t ni = dspy_signature_n_inputs(sig), nf = dspy_signature_n_fields(sig);
    bool any_literal = false;
    for (size_t i = ni; i < nf; i++) {
        dspy_type_kind k = dspy_type_kind_of(dspy_signature_field_type(sig, i));
        if (k == DSPY_TYPE_LITERAL) any_literal = true;
        else if (k != DSPY_TYPE_STR) return DSPY_OK;
    }
    if (!any_literal) return DSPY_OK;
    dspy_json *arr = dspy_json_array();
    if (!arr) return nomem();
    for (size_t i = ni; i < nf; i++) {
        const dspy_type *t = dspy_signature_field_type(sig, i);
        dspy_json *f = dspy_json_object();
        if (!f || dspy_json_append(arr, f) || dspy_json_set_str(f, "name", dspy_signature_field_name(sig, i))) goto fail;
        if (dspy_type_kind_of(t) != DSPY_TYPE_LITERAL) continue;
        const dspy_json *vals = dspy_type_literal_values(t);
        dspy_json *en = dspy_json_array();
        if (!en || dspy_json_set(f, "enum", en)) goto fail;
        for (size_t k = 0; k < dspy_json_size(vals); k++) {
            /* the value as format_field_value writes it: str() of the Literal value */
            dspy_str s = DSPY_STR_INIT;
            dspy_json_pystr(dspy_json_at(vals, k), &s);
            bool ok = dspy_str_ok(&s);
            bool empty = ok && s.len == 0;
            if (ok && !empty && dspy_json_append(en, dspy_json_stringn(s.ptr, s.len))) ok = false;
            dspy_str_free(&s);
            if (!ok) goto fail;
            if (empty) { /* an empty value cannot be told apart from a missing one */
                dspy_json_decref(arr);
                return DSPY_OK;
            }
        }
    }
    *out = arr;
    return DSPY_OK;
fail:
    dspy_json_decref(arr);
    return nomem();
}

/* ---- user / assistant messages ------------------------------------------------------------------- */

static const dspy_json *value_of(const dspy_json *values, const char *name) {
    return values && dspy_json_typeof(values) == DSPY_JSON_OBJECT ? dspy_json_get(values, name) : NULL;
}

/* Python repr of dict_keys([...]) of a JSON object's keys. */
static void dict_keys_repr(const dspy_json *obj, dspy_str *out) {
    dspy_str_append(out, "dict_keys([");
    bool first = true;
    if (obj && dspy_json_typeof(obj) == DSPY_JSON_OBJECT)
        for (void *it = dspy_json_iter(obj); it; it = dspy_json_next(obj, it)) {
            if (!first) dspy_str_append(out, ", ");
            first = false;
            const char *k = dspy_json_iter_key(it);
            dspy_py_repr_str(k, strlen(k), out);
        }
    dspy_str_append(out, "])");
}

static void field_keys_repr(const dspy_signature *sig, size_t from, size_t to, dspy_str *out) {
    dspy_str_append(out, "dict_keys([");
    for (size_t i = from; i < to; i++) {
        if (i > from) dspy_str_append(out, ", ");
        const char *k = dspy_signature_field_name(sig, i);
        dspy_py_repr_str(k, strlen(k), out);
    }
    dspy_str_append(out, "])");
}

dspy_status dspy_adp_user_content(const dspy_signature *sig, dspy_profile p, const dspy_json *values,
                             const char *prefix, const char *req, bool v26_incomplete,
                             dspy_str *out) {
    size_t ni = dspy_signature_n_inputs(sig);
    dspy_str s = DSPY_STR_INIT;
    dspy_status st = DSPY_OK;
    if (p == DSPY_PROFILE_V26) {
        if (!v26_incomplete) {
            for (size_t i = 0; i < ni; i++)
                if (!value_of(values, dspy_signature_field_name(sig, i))) {
                    dspy_str m = DSPY_STR_INIT;
                    dspy_str_append(&m, "Expected ");
                    field_keys_repr(sig, 0, ni, &m);
                    dspy_str_append(&m, " but got ");
                    dict_keys_repr(values, &m);
                    st = dspy_fail(DSPY_ERR_ARG, "%s", dspy_str_cstr(&m));
                    dspy_str_free(&m);
                    return st;
                }
        }
        bool first = true;
        if (prefix && v26_incomplete) {
            dspy_str_append(&s, prefix);
            first = false;
        }
        for (size_t i = 0; i < ni && !st; i++) {
            const char *name = dspy_signature_field_name(sig, i);
            if (!first) dspy_str_append(&s, "\n\n");
            first = false;
            dspy_str_appendf(&s, "[[ ## %s ## ]]\n", name);
            const dspy_json *v = value_of(values, name);
            if (v) {
                st = dspy_format_field_value(dspy_signature_field_type(sig, i), v, &s);
            } else {
                dspy_str_append(&s, ADP_MISSING_V26);
            }
        }
        if (req) {
            if (!first) dspy_str_append(&s, "\n\n");
            dspy_str_append(&s, req);
        }
    } else {
        dspy_str_append(&s, prefix ? prefix : "");
        for (size_t i = 0; i < ni && !st; i++) {
            const char *name = dspy_signature_field_name(sig, i);
            const dspy_json *v = value_of(values, name);
            if (!v) continue;
            dspy_str_appendf(&s, "\n\n[[ ## %s ## ]]\n", name);
            st = dspy_format_field_value(dspy_signature_field_type(sig, i), v, &s);
        }
        if (req) {
            dspy_str_append(&s, "\n\n");
            dspy_str_append(&s, req);
        }
        dspy_str_append(&s, "\n\n"); /* the empty suffix */
        dspy_adp_strip(&s);
    }
    if (!st) st = str_status(&s);
    if (!st) {
        dspy_str_appendn(out, dspy_str_cstr(&s), s.len);
        st = str_status(out);
    }
    dspy_str_free(&s);
    return st;
}

dspy_status dspy_adp_chat_assistant(const dspy_signature *sig, dspy_profile p, const dspy_json *outputs,
                               const char *missing, dspy_str *out) {
    size_t ni = dspy_signature_n_inputs(sig), nf = dspy_signature_n_fields(sig);
    dspy_str s = DSPY_STR_INIT;
    dspy_status st = DSPY_OK;
    dspy_json *miss = missing ? dspy_json_string(missing) : dspy_json_null();
    if (!miss) return nomem();
    for (size_t i = ni; i < nf && !st; i++) {
        const char *name = dspy_signature_field_name(sig, i);
        const dspy_json *v = value_of(outputs, name);
        if (i > ni) dspy_str_append(&s, "\n\n");
        dspy_str_appendf(&s, "[[ ## %s ## ]]\n", name);
        st = dspy_format_field_value(dspy_signature_field_type(sig, i), v ? v : miss, &s);
    }
    dspy_json_decref(miss);
    if (p == DSPY_PROFILE_V26) {
        /* format_turn: the outputs and the pseudo-field `completed` (value ""), joined as is */
        dspy_str_append(&s, nf > ni ? "\n\n[[ ## completed ## ]]\n" : "[[ ## completed ## ]]\n");
    } else {
        dspy_adp_strip(&s);
        dspy_str_append(&s, "\n\n[[ ## completed ## ]]\n");
    }
    if (!st) st = str_status(&s);
    if (!st) dspy_str_appendn(out, dspy_str_cstr(&s), s.len);
    dspy_str_free(&s);
    return st ? st : str_status(out);
}

static bool demo_has(const dspy_json *demo, const char *name, bool need_non_null) {
    const dspy_json *v = dspy_json_get(demo, name);
    return v && (!need_non_null || dspy_json_typeof(v) != DSPY_JSON_NULL);
}

dspy_status dspy_adp_split_demos(const dspy_signature *sig, const dspy_json *demos,
                            dspy_json **incomplete, dspy_json **complete) {
    *incomplete = dspy_json_array();
    *complete = dspy_json_array();
    if (!*incomplete || !*complete) goto fail;
    if (!demos) return DSPY_OK;
    if (dspy_json_typeof(demos) != DSPY_JSON_ARRAY) {
        dspy_json_decref(*incomplete);
        dspy_json_decref(*complete);
        *incomplete = *complete = NULL;
        return dspy_fail(DSPY_ERR_ARG, "demos must be a JSON array of objects");
    }
    size_t ni = dspy_signature_n_inputs(sig), nf = dspy_signature_n_fields(sig);
    for (size_t d = 0; d < dspy_json_size(demos); d++) {
        dspy_json *demo = dspy_json_at(demos, d);
        if (dspy_json_typeof(demo) != DSPY_JSON_OBJECT) {
            dspy_json_decref(*incomplete);
            dspy_json_decref(*complete);
            *incomplete = *complete = NULL;
            return dspy_fail(DSPY_ERR_ARG, "demos[%zu] must be a JSON object of field values", d);
        }
        bool all = true, any_in = false, any_out = false;
        for (size_t i = 0; i < nf; i++) {
            const char *n = dspy_signature_field_name(sig, i);
            all = all && demo_has(demo, n, true);
            if (demo_has(demo, n, false)) {
                if (i < ni) any_in = true;
                else any_out = true;
            }
        }
        dspy_json *dst = all ? *complete : (any_in && any_out) ? *incomplete : NULL;
        if (dst && dspy_json_append(dst, dspy_json_incref(demo))) goto fail;
    }
    return DSPY_OK;
fail:
    dspy_json_decref(*incomplete);
    dspy_json_decref(*complete);
    *incomplete = *complete = NULL;
    return nomem();
}

dspy_status dspy_adp_push(dspy_json *messages, const char *role, const char *text, size_t len) {
    dspy_json *m = dspy_json_object();
    dspy_json *c = dspy_json_stringn(text, len);
    if (!m || !c || dspy_json_set_str(m, "role", role)) {
        dspy_json_decref(m);
        dspy_json_decref(c);
        return nomem();
    }
    if (dspy_json_set(m, "content", c)) {
        dspy_json_decref(m);
        return nomem();
    }
    if (dspy_json_append(messages, m)) return nomem();
    return DSPY_OK;
}

/* ---- parsing --------------------------------------------------------------------------------------- */

dspy_status dspy_adp_parse_error(const char *adapter, const dspy_signature *sig, const char *lm_response,
                            const char *message, const dspy_json *parsed) {
    dspy_str m = DSPY_STR_INIT;
    if (message && *message) dspy_str_appendf(&m, "%s\n\n", message);
    dspy_str_appendf(&m, "Adapter %s failed to parse the LM response. \n\nLM Response: %s \n\n"
                         "Expected to find output fields in the LM response: [", adapter, lm_response);
    size_t ni = dspy_signature_n_inputs(sig), nf = dspy_signature_n_fields(sig);
    for (size_t i = ni; i < nf; i++)
        dspy_str_appendf(&m, "%s%s", i > ni ? ", " : "", dspy_signature_field_name(sig, i));
    dspy_str_append(&m, "] \n\n");
    if (parsed) {
        dspy_str_append(&m, "Actual output fields parsed from the LM response: [");
        bool first = true;
        for (void *it = dspy_json_iter(parsed); it; it = dspy_json_next(parsed, it)) {
            dspy_str_appendf(&m, "%s%s", first ? "" : ", ", dspy_json_iter_key(it));
            first = false;
        }
        dspy_str_append(&m, "] \n\n");
    }
    if (!dspy_str_ok(&m)) {
        dspy_str_free(&m);
        return nomem();
    }
    dspy_status st = dspy_fail(DSPY_ERR_PARSE, "%s", dspy_str_cstr(&m));
    dspy_str_free(&m);
    return st;
}

dspy_status dspy_adp_v26_keys_error(const dspy_signature *sig, const dspy_json *fields) {
    dspy_str m = DSPY_STR_INIT;
    dspy_str_append(&m, "Expected ");
    field_keys_repr(sig, dspy_signature_n_inputs(sig), dspy_signature_n_fields(sig), &m);
    dspy_str_append(&m, " but got ");
    dict_keys_repr(fields, &m);
    dspy_status st = dspy_str_ok(&m) ? dspy_fail(DSPY_ERR_PARSE, "%s", dspy_str_cstr(&m)) : nomem();
    dspy_str_free(&m);
    return st;
}

bool dspy_adp_has_all_outputs(const dspy_signature *sig, const dspy_json *fields) {
    for (size_t i = dspy_signature_n_inputs(sig); i < dspy_signature_n_fields(sig); i++)
        if (!dspy_json_get(fields, dspy_signature_field_name(sig, i))) return false;
    return true;
}

dspy_status dspy_adp_apply_defaults(const dspy_signature *sig, dspy_json *fields) {
    for (size_t i = dspy_signature_n_inputs(sig); i < dspy_signature_n_fields(sig); i++) {
        const char *name = dspy_signature_field_name(sig, i);
        if (dspy_json_get(fields, name)) continue;
        const dspy_json *def = dspy_signature_field_default(sig, i);
        dspy_json *v = NULL;
        if (def) v = dspy_json_copy(def);
        else if (dspy_type_allows_none(dspy_signature_field_type(sig, i))) v = dspy_json_null();
        else continue;
        if (!v || dspy_json_set(fields, name, v)) return nomem();
    }
    return DSPY_OK;
}

/* Matches `[[ ## (\w+) ## ]]` at the start of s; returns the match length (0 if none) and the
 * name span. */
static size_t match_header(dspy_strv s, dspy_strv *name) {
    if (!dspy_strv_starts_with(s, "[[ ## ")) return 0;
    size_t i = 6, l;
    while (i < s.len && (l = dspy_py_word_char(s.ptr + i, s.len - i)) > 0) i += l;
    if (i == 6) return 0;
    if (s.len - i < 6 || memcmp(s.ptr + i, " ## ]]", 6) != 0) return 0;
    *name = dspy_strv_make(s.ptr + 6, i - 6);
    return i + 6;
}

typedef struct section {
    char *header;  /* NULL for the text before the first header */
    dspy_str text; /* lines joined by '\n' */
    bool any;      /* at least one line */
} section;

dspy_status dspy_adp_chat_parse(const dspy_signature *sig, dspy_profile p, const char *completion,
                           dspy_json **fields) {
    *fields = NULL;
    size_t n = strlen(completion);
    py_lines lines;
    if (!dspy_py_splitlines(completion, n, &lines)) return nomem();
    section *secs = calloc(lines.n + 1, sizeof *secs);
    size_t ns = 1;
    dspy_status st = DSPY_OK;
    dspy_json *out = NULL;
    if (!secs) {
        dspy_py_lines_free(&lines);
        return nomem();
    }
    for (size_t k = 0; k < lines.n; k++) {
        dspy_strv line = lines.v[k];
        dspy_strv s = dspy_strv_strip(line), name;
        size_t m = match_header(s, &name);
        if (m) {
            section *sec = &secs[ns++];
            if (!(sec->header = malloc(name.len + 1))) {
                st = nomem();
                goto done;
            }
            memcpy(sec->header, name.ptr, name.len);
            sec->header[name.len] = '\0';
            dspy_strv rest = dspy_strv_strip(dspy_strv_make(s.ptr + m, s.len - m));
            if (p == DSPY_PROFILE_V33 && rest.len) {
                dspy_str_appendv(&sec->text, rest);
                sec->any = true;
            }
        } else {
            section *sec = &secs[ns - 1];
            if (sec->any) dspy_str_appendc(&sec->text, '\n');
            dspy_str_appendv(&sec->text, line);
            sec->any = true;
        }
    }
    if (!(out = dspy_json_object())) {
        st = nomem();
        goto done;
    }
    for (size_t k = 1; k < ns; k++) {
        section *sec = &secs[k];
        size_t idx;
        if (!dspy_signature_find(sig, sec->header, &idx) ||
            dspy_signature_field_kind(sig, idx) != DSPY_FIELD_OUTPUT || dspy_json_get(out, sec->header))
            continue;
        if (!dspy_str_ok(&sec->text)) {
            st = nomem();
            goto done;
        }
        dspy_adp_strip(&sec->text);
        dspy_json *raw = dspy_json_stringn(dspy_str_cstr(&sec->text), sec->text.len), *val = NULL;
        if (!raw) {
            st = nomem();
            goto done;
        }
        st = dspy_type_parse_value(dspy_signature_field_type(sig, idx), raw, p, &val);
        dspy_json_decref(raw);
        if (st == DSPY_ERR_NOMEM) goto done;
        if (st) {
            dspy_str m = DSPY_STR_INIT;
            if (p == DSPY_PROFILE_V26) {
                dspy_str_appendf(&m, "Error parsing field %s: %s.\n\n\t\tOn attempting to parse the value\n```\n%s\n```",
                                 sec->header, dspy_errmsg(), dspy_str_cstr(&sec->text));
                st = dspy_str_ok(&m) ? dspy_fail(DSPY_ERR_PARSE, "%s", dspy_str_cstr(&m)) : nomem();
            } else {
                dspy_str_appendf(&m, "Failed to parse field %s with value %s from the LM response. Error message: %s",
                                 sec->header, dspy_str_cstr(&sec->text), dspy_errmsg());
                st = dspy_str_ok(&m) ? dspy_adp_parse_error("ChatAdapter", sig, completion, dspy_str_cstr(&m), NULL)
                                     : nomem();
            }
            dspy_str_free(&m);
            goto done;
        }
        if ((st = dspy_json_set(out, sec->header, val))) goto done;
    }
    if (p == DSPY_PROFILE_V33 && (st = dspy_adp_apply_defaults(sig, out))) goto done;
    if (!dspy_adp_has_all_outputs(sig, out)) {
        st = p == DSPY_PROFILE_V26 ? dspy_adp_v26_keys_error(sig, out)
                                   : dspy_adp_parse_error("ChatAdapter", sig, completion, NULL, out);
        goto done;
    }
done:
    for (size_t k = 0; k < ns; k++) {
        free(secs[k].header);
        dspy_str_free(&secs[k].text);
    }
    free(secs);
    dspy_py_lines_free(&lines);
    if (st) {
        dspy_json_decref(out);
        return st;
    }
    *fields = out;
    return DSPY_OK;
}
