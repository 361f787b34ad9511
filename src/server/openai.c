/* openai.c — OpenAI API requests in, JSON answers out (see openai.h).
 *
 * Validation follows what api.openai.com answers, in its words where they are known: a body
 * that is not JSON gets "We could not parse the JSON body of your request...", a wrong type
 * "Invalid type for 'max_tokens': expected an integer, but got a string instead.", a value out
 * of range "Invalid 'temperature': decimal above maximum value...". Every error names the field
 * in `param`. Fields that this server cannot honour are refused when set to anything but their
 * neutral value, so a client never gets an answer that silently ignored what it asked for.
 */
#include "server/openai.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/hash.h"
#include "dspy/json.h"

void dspy_oai_error_set(oai_error *e, int status, const char *type, const char *param, const char *code,
                   const char *fmt, ...) {
    e->status = status;
    e->type = type ? type : dspy_oai_error_type_for(status);
    e->code = code;
    dspy_str_clear(&e->param);
    dspy_str_clear(&e->message);
    if (param) dspy_str_append(&e->param, param);
    va_list ap;
    va_start(ap, fmt);
    char *m = NULL;
    if (vasprintf(&m, fmt, ap) >= 0) {
        dspy_str_append(&e->message, m);
        free(m);
    }
    va_end(ap);
}

void dspy_oai_error_free(oai_error *e) {
    dspy_str_free(&e->param);
    dspy_str_free(&e->message);
}

const char *dspy_oai_error_type_for(int status) {
    if (status == 401) return "authentication_error";
    if (status == 429) return "rate_limit_error";
    if (status >= 500) return "server_error";
    return "invalid_request_error";
}

static dspy_json *str_or_null(const char *s) { return s ? dspy_json_string(s) : dspy_json_null(); }

char *dspy_oai_error_json(const oai_error *e) {
    dspy_json *inner = dspy_json_object(), *root = dspy_json_object();
    char *out = NULL;
    if (!inner || !root) goto done;
    dspy_json_set(inner, "message", dspy_json_stringn(dspy_str_cstr(&e->message), e->message.len));
    dspy_json_set(inner, "type", dspy_json_string(e->type ? e->type : dspy_oai_error_type_for(e->status)));
    dspy_json_set(inner, "param", e->param.len ? dspy_json_string(dspy_str_cstr(&e->param)) : dspy_json_null());
    dspy_json_set(inner, "code", str_or_null(e->code));
    dspy_json_set(root, "error", inner);
    inner = NULL;
    out = dspy_json_dumps(root, DSPY_JSON_COMPACT | DSPY_JSON_UTF8);
done:
    dspy_json_decref(inner);
    dspy_json_decref(root);
    return out;
}

/* ---- routes ---------------------------------------------------------------------------- */

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') return (c | 0x20) - 'a' + 10;
    return -1;
}

char *dspy_oai_percent_decode(dspy_strv v) {
    char *out = malloc(v.len + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.ptr[i] == '%') {
            if (i + 2 >= v.len) {
                free(out);
                return NULL;
            }
            int a = hexval(v.ptr[i + 1]), b = hexval(v.ptr[i + 2]);
            if (a < 0 || b < 0) {
                free(out);
                return NULL;
            }
            out[o++] = (char)(a * 16 + b);
            i += 2;
        } else {
            out[o++] = v.ptr[i];
        }
    }
    out[o] = '\0';
    return out;
}

oai_route dspy_oai_route_match(dspy_strv method, dspy_strv path, char **model_id, const char **allow,
                          oai_error *err) {
    static const struct {
        const char *path;
        const char *method;
        oai_route route;
    } k_routes[] = {
        {"/health", "GET", OAI_ROUTE_HEALTH},
        {"/v1/models", "GET", OAI_ROUTE_MODELS},
        {"/v1/chat/completions", "POST", OAI_ROUTE_CHAT},
        {"/v1/completions", "POST", OAI_ROUTE_COMPLETIONS},
        {"/metrics", "GET", OAI_ROUTE_METRICS},
    };
    if (model_id) *model_id = NULL;
    if (allow) *allow = NULL;
    for (size_t i = 0; i < sizeof k_routes / sizeof k_routes[0]; i++) {
        if (!dspy_strv_eqz(path, k_routes[i].path)) continue;
        if (dspy_strv_eqz(method, k_routes[i].method)) return k_routes[i].route;
        if (allow) *allow = k_routes[i].method;
        dspy_oai_error_set(err, 405, NULL, NULL, "method_not_allowed",
                      "Method %.*s is not allowed for %.*s; use %s.", (int)method.len, method.ptr,
                      (int)path.len, path.ptr, k_routes[i].method);
        return OAI_ROUTE_NONE;
    }
    if (dspy_strv_starts_with(path, "/v1/models/") && path.len > 11) {
        if (!dspy_strv_eqz(method, "GET")) {
            if (allow) *allow = "GET";
            dspy_oai_error_set(err, 405, NULL, NULL, "method_not_allowed",
                          "Method %.*s is not allowed for %.*s; use GET.", (int)method.len, method.ptr,
                          (int)path.len, path.ptr);
            return OAI_ROUTE_NONE;
        }
        char *id = dspy_oai_percent_decode(dspy_strv_make(path.ptr + 11, path.len - 11));
        if (!id) {
            dspy_oai_error_set(err, 400, NULL, NULL, NULL, "Invalid percent-escape in the URL path %.*s.",
                          (int)path.len, path.ptr);
            return OAI_ROUTE_NONE;
        }
        if (model_id) *model_id = id;
        else free(id);
        return OAI_ROUTE_MODEL;
    }
    dspy_oai_error_set(err, 404, NULL, NULL, "unknown_url", "Invalid URL (%.*s %.*s)", (int)method.len,
                  method.ptr, (int)path.len, path.ptr);
    return OAI_ROUTE_NONE;
}

/* ---- request parsing ------------------------------------------------------------------- */

static const char *type_word(const dspy_json *v) {
    switch (dspy_json_typeof(v)) {
    case DSPY_JSON_NULL: return "null";
    case DSPY_JSON_BOOL: return "a boolean";
    case DSPY_JSON_INT: return "an integer";
    case DSPY_JSON_REAL: return "a decimal";
    case DSPY_JSON_STRING: return "a string";
    case DSPY_JSON_ARRAY: return "an array";
    case DSPY_JSON_OBJECT: return "an object";
    }
    return "a value";
}

static dspy_status bad_type(oai_error *err, const char *param, const char *want, const dspy_json *v) {
    dspy_oai_error_set(err, 400, NULL, param, "invalid_type",
                  "Invalid type for '%s': expected %s, but got %s instead.", param, want, type_word(v));
    return DSPY_ERR_ARG;
}

static dspy_status bad_value(oai_error *err, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static dspy_status bad_value(oai_error *err, const char *param, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *m = NULL;
    int k = vasprintf(&m, fmt, ap);
    va_end(ap);
    dspy_oai_error_set(err, 400, NULL, param, code, "%s", k >= 0 ? m : "invalid value");
    free(m);
    return DSPY_ERR_ARG;
}

/* A present, non-null member (NULL when absent or null). */
/* A field's value, NULL when absent or null: SDKs send "field": null for "not set", and the
 * API treats both alike. */
static dspy_json *member(const dspy_json *obj, const char *key) {
    dspy_json *v = dspy_json_get(obj, key);
    return v && dspy_json_typeof(v) != DSPY_JSON_NULL ? v : NULL;
}

/* Integer, or a decimal with an integral value (what some JSON writers produce). */
static bool as_int(const dspy_json *v, int64_t *out) {
    if (dspy_json_typeof(v) == DSPY_JSON_INT) {
        *out = dspy_json_intval(v);
        return true;
    }
    if (dspy_json_typeof(v) == DSPY_JSON_REAL) {
        double d = dspy_json_number(v);
        if (d >= -9.0e18 && d <= 9.0e18 && d == (double)(int64_t)d) {
            *out = (int64_t)d;
            return true;
        }
    }
    return false;
}

static dspy_status get_int(const dspy_json *body, const char *key, int64_t lo, int64_t hi,
                           int64_t *out, bool *present, oai_error *err) {
    dspy_json *v = member(body, key);
    *present = v != NULL;
    if (!v) return DSPY_OK;
    if (!as_int(v, out)) return bad_type(err, key, "an integer", v);
    if (*out < lo) return bad_value(err, key, "integer_below_min_value",
                                    "Invalid '%s': integer below minimum value. Expected a value >= %lld, but got %lld instead.",
                                    key, (long long)lo, (long long)*out);
    if (*out > hi) return bad_value(err, key, "integer_above_max_value",
                                    "Invalid '%s': integer above maximum value. Expected a value <= %lld, but got %lld instead.",
                                    key, (long long)hi, (long long)*out);
    return DSPY_OK;
}

static dspy_status get_num(const dspy_json *body, const char *key, double lo, double hi, bool lo_open,
                           double *out, oai_error *err) {
    dspy_json *v = member(body, key);
    if (!v) return DSPY_OK;
    if (!dspy_json_is_number(v)) return bad_type(err, key, "a decimal", v);
    double d = dspy_json_number(v);
    if (d < lo || (lo_open && d <= lo))
        return bad_value(err, key, "decimal_below_min_value",
                         "Invalid '%s': decimal below minimum value. Expected a value %s %g, but got %g instead.",
                         key, lo_open ? ">" : ">=", lo, d);
    if (d > hi)
        return bad_value(err, key, "decimal_above_max_value",
                         "Invalid '%s': decimal above maximum value. Expected a value <= %g, but got %g instead.",
                         key, hi, d);
    *out = d;
    return DSPY_OK;
}

static dspy_status get_bool(const dspy_json *body, const char *key, bool *out, oai_error *err) {
    dspy_json *v = member(body, key);
    if (!v) return DSPY_OK;
    if (dspy_json_typeof(v) != DSPY_JSON_BOOL) return bad_type(err, key, "a boolean", v);
    *out = dspy_json_truthy(v);
    return DSPY_OK;
}

static dspy_status nomem(oai_error *err) {
    dspy_oai_error_set(err, 500, NULL, NULL, NULL, "The server ran out of memory.");
    return DSPY_ERR_NOMEM;
}

static char *dup_json_str(const dspy_json *v) {
    size_t n = dspy_json_strlen(v);
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, dspy_json_str(v), n);
        s[n] = '\0';
    }
    return s;
}

/* Message content: a string, null (""), or an array of {"type":"text","text":...} parts. */
static dspy_status parse_content(const dspy_json *v, size_t i, char **out, oai_error *err) {
    char param[64];
    snprintf(param, sizeof param, "messages.[%zu].content", i);
    if (!v || dspy_json_typeof(v) == DSPY_JSON_NULL) {
        *out = strdup("");
        return *out ? DSPY_OK : nomem(err);
    }
    if (dspy_json_is_string(v)) {
        /* JSON allows \u0000, but the chat template and the tokenizer take C strings: a NUL
         * would silently cut the message */
        if (memchr(dspy_json_str(v), '\0', dspy_json_strlen(v)))
            return bad_value(err, param, "invalid_value", "Invalid '%s': the text contains a NUL character.", param);
        *out = dup_json_str(v);
        return *out ? DSPY_OK : nomem(err);
    }
    if (dspy_json_typeof(v) != DSPY_JSON_ARRAY) return bad_type(err, param, "a string or an array of content parts", v);
    dspy_str s = DSPY_STR_INIT;
    for (size_t k = 0; k < dspy_json_size(v); k++) {
        const dspy_json *part = dspy_json_at(v, k);
        const char *type = dspy_json_typeof(part) == DSPY_JSON_OBJECT ? dspy_json_str_or(part, "type", NULL) : NULL;
        const dspy_json *text = type ? dspy_json_get(part, "text") : NULL;
        if (!type || strcmp(type, "text") != 0 || !text || !dspy_json_is_string(text) ||
            memchr(dspy_json_str(text), '\0', dspy_json_strlen(text))) {
            dspy_str_free(&s);
            return bad_value(err, param, "invalid_value",
                             "Invalid '%s': part %zu is not a text part ({\"type\": \"text\", \"text\": \"...\"}); "
                             "this server accepts text content only.", param, k);
        }
        dspy_str_appendn(&s, dspy_json_str(text), dspy_json_strlen(text));
    }
    if (!dspy_str_ok(&s)) {
        dspy_str_free(&s);
        return nomem(err);
    }
    *out = dspy_str_take(&s);
    return *out ? DSPY_OK : nomem(err);
}

static dspy_status parse_messages(const dspy_json *body, oai_request *r, oai_error *err) {
    dspy_json *msgs = dspy_json_get(body, "messages");
    if (!msgs) return bad_value(err, "messages", "missing_required_parameter", "Missing required parameter: 'messages'.");
    if (dspy_json_typeof(msgs) != DSPY_JSON_ARRAY) return bad_type(err, "messages", "an array", msgs);
    size_t n = dspy_json_size(msgs);
    if (n == 0) return bad_value(err, "messages", "empty_array",
                                 "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.");
    r->messages = calloc(n, sizeof *r->messages);
    if (!r->messages) return nomem(err);
    for (size_t i = 0; i < n; i++) {
        const dspy_json *m = dspy_json_at(msgs, i);
        char param[64];
        snprintf(param, sizeof param, "messages.[%zu]", i);
        if (dspy_json_typeof(m) != DSPY_JSON_OBJECT) return bad_type(err, param, "an object", m);
        snprintf(param, sizeof param, "messages.[%zu].role", i);
        const dspy_json *role = dspy_json_get(m, "role");
        if (!role) return bad_value(err, param, "missing_required_parameter", "Missing required parameter: '%s'.", param);
        if (!dspy_json_is_string(role)) return bad_type(err, param, "a string", role);
        const char *rs = dspy_json_str(role);
        const char *norm = NULL;
        if (strcmp(rs, "system") == 0 || strcmp(rs, "developer") == 0) norm = "system";
        else if (strcmp(rs, "user") == 0) norm = "user";
        else if (strcmp(rs, "assistant") == 0) norm = "assistant";
        if (!norm)
            return bad_value(err, param, "invalid_value",
                             "Invalid value: '%s'. Supported values are: 'system', 'developer', 'user' and 'assistant' "
                             "(tool and function messages are not supported by this server).", rs);
        r->messages[i].role = strdup(norm);
        r->n_messages = i + 1;
        if (!r->messages[i].role) return nomem(err);
        const dspy_json *content = dspy_json_get(m, "content");
        if (!content && strcmp(norm, "assistant") != 0) {
            snprintf(param, sizeof param, "messages.[%zu].content", i);
            return bad_value(err, param, "missing_required_parameter", "Missing required parameter: '%s'.", param);
        }
        if (member(m, "tool_calls") || member(m, "function_call")) {
            snprintf(param, sizeof param, "messages.[%zu].tool_calls", i);
            return bad_value(err, param, "unsupported_parameter", "Tool calls are not supported by this server.");
        }
        dspy_status st = parse_content(content, i, &r->messages[i].content, err);
        if (st) return st;
    }
    return DSPY_OK;
}

static dspy_status parse_ids(const dspy_json *arr, int32_t vocab_size, oai_request *r, oai_error *err) {
    size_t n = dspy_json_size(arr);
    r->prompt_ids = malloc((n ? n : 1) * sizeof *r->prompt_ids);
    if (!r->prompt_ids) return nomem(err);
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        const dspy_json *e = dspy_json_at(arr, i);
        if (!as_int(e, &v)) return bad_type(err, "prompt", "a string or an array of token ids", e);
        if (v < 0 || v >= vocab_size)
            return bad_value(err, "prompt", "invalid_value",
                             "Invalid 'prompt': token id %lld at position %zu is outside the vocabulary [0, %d).",
                             (long long)v, i, vocab_size);
        r->prompt_ids[i] = (int32_t)v;
    }
    r->n_prompt_ids = n;
    return DSPY_OK;
}

static dspy_status parse_prompt(const dspy_json *body, int32_t vocab_size, oai_request *r, oai_error *err) {
    dspy_json *p = dspy_json_get(body, "prompt");
    if (!p) return bad_value(err, "prompt", "missing_required_parameter", "Missing required parameter: 'prompt'.");
    if (dspy_json_typeof(p) == DSPY_JSON_ARRAY && dspy_json_size(p) >= 1) {
        const dspy_json *first = dspy_json_at(p, 0);
        bool nested = dspy_json_typeof(first) == DSPY_JSON_STRING || dspy_json_typeof(first) == DSPY_JSON_ARRAY;
        if (nested) {
            if (dspy_json_size(p) != 1)
                return bad_value(err, "prompt", "unsupported_value",
                                 "Invalid 'prompt': this server takes one prompt per request (got %zu); send them as separate requests.",
                                 dspy_json_size(p));
            p = (dspy_json *)first;
        }
    }
    if (dspy_json_is_string(p)) {
        if (memchr(dspy_json_str(p), '\0', dspy_json_strlen(p)))
            return bad_value(err, "prompt", "invalid_value", "Invalid 'prompt': the text contains a NUL character.");
        r->prompt = dup_json_str(p);
        return r->prompt ? DSPY_OK : nomem(err);
    }
    if (dspy_json_typeof(p) == DSPY_JSON_ARRAY) {
        if (dspy_json_size(p) == 0)
            return bad_value(err, "prompt", "empty_array", "Invalid 'prompt': empty array of token ids.");
        return parse_ids(p, vocab_size, r, err);
    }
    return bad_type(err, "prompt", "a string or an array of token ids", p);
}

static dspy_status parse_stop(const dspy_json *body, oai_request *r, oai_error *err) {
    dspy_json *s = member(body, "stop");
    if (!s) return DSPY_OK;
    size_t n = 1;
    if (dspy_json_typeof(s) == DSPY_JSON_ARRAY) n = dspy_json_size(s);
    else if (!dspy_json_is_string(s)) return bad_type(err, "stop", "a string or an array of strings", s);
    if (n > OAI_MAX_STOP)
        return bad_value(err, "stop", "array_above_max_length",
                         "Invalid 'stop': array too long. Expected an array with maximum length %d, but got an array with length %zu instead.",
                         OAI_MAX_STOP, n);
    r->stop = calloc(n ? n : 1, sizeof *r->stop);
    if (!r->stop) return nomem(err);
    for (size_t i = 0; i < n; i++) {
        const dspy_json *e = dspy_json_typeof(s) == DSPY_JSON_ARRAY ? dspy_json_at(s, i) : s;
        if (!dspy_json_is_string(e)) return bad_type(err, "stop", "a string or an array of strings", e);
        if (dspy_json_strlen(e) == 0 || memchr(dspy_json_str(e), '\0', dspy_json_strlen(e))) continue;
        r->stop[r->n_stop] = dup_json_str(e);
        if (!r->stop[r->n_stop]) return nomem(err);
        r->n_stop++;
    }
    return DSPY_OK;
}

/* response_format: text, json_object or json_schema (with its schema kept as compact JSON). */
static dspy_status parse_response_format(const dspy_json *body, oai_request *r, oai_error *err) {
    dspy_json *rf = member(body, "response_format");
    if (!rf) return DSPY_OK;
    if (dspy_json_typeof(rf) != DSPY_JSON_OBJECT) return bad_type(err, "response_format", "an object", rf);
    dspy_json *t = dspy_json_get(rf, "type");
    if (!t) return bad_value(err, "response_format.type", "missing_required_parameter",
                             "Missing required parameter: 'response_format.type'.");
    if (!dspy_json_is_string(t)) return bad_type(err, "response_format.type", "a string", t);
    const char *ts = dspy_json_str(t);
    if (strcmp(ts, "text") == 0) return DSPY_OK;
    if (strcmp(ts, "json_object") == 0) {
        r->format = OAI_FORMAT_JSON_OBJECT;
        return DSPY_OK;
    }
    if (strcmp(ts, "json_schema") != 0)
        return bad_value(err, "response_format.type", "invalid_value",
                         "Invalid value: '%s'. Supported values are: 'text', 'json_object' and 'json_schema'.", ts);
    dspy_json *js = dspy_json_get(rf, "json_schema");
    if (!js) return bad_value(err, "response_format.json_schema", "missing_required_parameter",
                              "Missing required parameter: 'response_format.json_schema'.");
    if (dspy_json_typeof(js) != DSPY_JSON_OBJECT) return bad_type(err, "response_format.json_schema", "an object", js);
    dspy_json *schema = dspy_json_get(js, "schema");
    if (!schema) return bad_value(err, "response_format.json_schema.schema", "missing_required_parameter",
                                  "Missing required parameter: 'response_format.json_schema.schema'.");
    if (dspy_json_typeof(schema) != DSPY_JSON_OBJECT)
        return bad_type(err, "response_format.json_schema.schema", "an object", schema);
    r->format = OAI_FORMAT_JSON_SCHEMA;
    r->schema_text = dspy_json_dumps(schema, DSPY_JSON_COMPACT | DSPY_JSON_UTF8);
    return r->schema_text ? DSPY_OK : nomem(err);
}

/* The dspy_layout extension (see openai.h). */
static dspy_status parse_layout(const dspy_json *body, oai_request *r, oai_error *err) {
    dspy_json *l = member(body, "dspy_layout");
    if (!l) return DSPY_OK;
    if (dspy_json_typeof(l) != DSPY_JSON_ARRAY) return bad_type(err, "dspy_layout", "an array", l);
    size_t n = dspy_json_size(l);
    if (n == 0) return bad_value(err, "dspy_layout", "empty_array", "Invalid 'dspy_layout': empty array; list the output fields.");
    if (r->format != OAI_FORMAT_TEXT)
        return bad_value(err, "dspy_layout", "invalid_value",
                         "Invalid 'dspy_layout': it cannot be combined with a response_format other than text.");
    r->layout = calloc(n, sizeof *r->layout);
    if (!r->layout) return nomem(err);
    for (size_t i = 0; i < n; i++) {
        char param[64];
        const dspy_json *f = dspy_json_at(l, i);
        snprintf(param, sizeof param, "dspy_layout.[%zu]", i);
        if (dspy_json_typeof(f) != DSPY_JSON_OBJECT) return bad_type(err, param, "an object", f);
        oai_layout_field *o = &r->layout[i];
        o->max_tokens = -1;
        r->n_layout = i + 1;
        const dspy_json *name = dspy_json_get(f, "name");
        snprintf(param, sizeof param, "dspy_layout.[%zu].name", i);
        if (!name) return bad_value(err, param, "missing_required_parameter", "Missing required parameter: '%s'.", param);
        if (!dspy_json_is_string(name)) return bad_type(err, param, "a string", name);
        if (!(o->name = dup_json_str(name))) return nomem(err);
        int64_t mt;
        bool present;
        snprintf(param, sizeof param, "dspy_layout.[%zu].max_tokens", i);
        if (get_int(f, "max_tokens", 0, INT32_MAX, &mt, &present, err)) {
            dspy_oai_error_set(err, 400, NULL, param, "invalid_value", "Invalid '%s': expected an integer >= 0.", param);
            return DSPY_ERR_ARG;
        }
        if (present) o->max_tokens = (int32_t)mt;
        const dspy_json *en = member(f, "enum");
        if (!en) continue;
        snprintf(param, sizeof param, "dspy_layout.[%zu].enum", i);
        if (dspy_json_typeof(en) != DSPY_JSON_ARRAY || dspy_json_size(en) == 0)
            return bad_value(err, param, "invalid_value", "Invalid '%s': expected a non-empty array of strings.", param);
        o->values = calloc(dspy_json_size(en), sizeof *o->values);
        if (!o->values) return nomem(err);
        for (size_t k = 0; k < dspy_json_size(en); k++) {
            const dspy_json *v = dspy_json_at(en, k);
            if (!dspy_json_is_string(v)) return bad_type(err, param, "an array of strings", v);
            if (!(o->values[k] = dup_json_str(v))) return nomem(err);
            o->n_values = k + 1;
        }
    }
    r->format = OAI_FORMAT_LAYOUT;
    return DSPY_OK;
}

/* Fields this server cannot honour: refused unless neutral. */
static dspy_status check_unsupported(const dspy_json *body, oai_kind kind, oai_error *err) {
    static const char *const k_zero[] = {"presence_penalty", "frequency_penalty"};
    for (size_t i = 0; i < 2; i++) {
        dspy_json *v = member(body, k_zero[i]);
        if (!v) continue;
        if (!dspy_json_is_number(v)) return bad_type(err, k_zero[i], "a decimal", v);
        if (dspy_json_number(v) != 0.0)
            return bad_value(err, k_zero[i], "unsupported_parameter",
                             "Unsupported parameter: '%s' other than 0 is not supported by this server.", k_zero[i]);
    }
    dspy_json *v;
    if ((v = member(body, "logit_bias")) && dspy_json_size(v) > 0)
        return bad_value(err, "logit_bias", "unsupported_parameter", "Unsupported parameter: 'logit_bias' is not supported by this server.");
    if ((v = member(body, "logprobs")) && dspy_json_truthy(v))
        return bad_value(err, "logprobs", "unsupported_parameter", "Unsupported parameter: 'logprobs' is not supported by this server.");
    if ((v = member(body, "top_logprobs")) && dspy_json_truthy(v))
        return bad_value(err, "top_logprobs", "unsupported_parameter", "Unsupported parameter: 'top_logprobs' is not supported by this server.");
    if ((v = member(body, "tools")) && dspy_json_size(v) > 0)
        return bad_value(err, "tools", "unsupported_parameter", "Unsupported parameter: 'tools' (function calling) is not supported by this server.");
    if ((v = member(body, "functions")) && dspy_json_size(v) > 0)
        return bad_value(err, "functions", "unsupported_parameter", "Unsupported parameter: 'functions' is not supported by this server.");
    if (kind == OAI_COMPLETION) {
        if ((v = member(body, "echo")) && dspy_json_truthy(v))
            return bad_value(err, "echo", "unsupported_parameter", "Unsupported parameter: 'echo' is not supported by this server.");
        if ((v = member(body, "suffix")) && dspy_json_truthy(v))
            return bad_value(err, "suffix", "unsupported_parameter", "Unsupported parameter: 'suffix' is not supported by this server.");
    }
    return DSPY_OK;
}

dspy_status dspy_oai_request_parse(oai_kind kind, const char *body, size_t len, int32_t vocab_size,
                              oai_request *out, oai_error *err) {
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->max_tokens = -1;
    out->temperature = 1.0;
    out->top_p = 1.0;
    out->n = 1;
    out->max_string_tokens = -1;
    dspy_json *root = NULL;
    dspy_status st = dspy_json_parse(body, len, "body", &root);
    if (st != DSPY_OK) {
        dspy_oai_error_set(err, 400, NULL, NULL, NULL,
                      "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
                      "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid "
                      "JSON.) Details: %s", dspy_errmsg());
        return DSPY_ERR_ARG;
    }
    if (dspy_json_typeof(root) != DSPY_JSON_OBJECT) {
        st = bad_value(err, NULL, NULL, "The request body must be a JSON object, not %s.", type_word(root));
        goto fail;
    }
    dspy_json *v;
    if ((v = member(root, "model"))) {
        if (!dspy_json_is_string(v)) {
            st = bad_type(err, "model", "a string", v);
            goto fail;
        }
        if (!(out->model = dup_json_str(v))) {
            st = nomem(err);
            goto fail;
        }
    }
    st = kind == OAI_CHAT ? parse_messages(root, out, err) : parse_prompt(root, vocab_size, out, err);
    if (st) goto fail;

    int64_t iv;
    bool present;
    if ((st = get_int(root, "max_tokens", 1, INT32_MAX, &iv, &present, err))) goto fail;
    if (present) out->max_tokens = iv;
    /* the newer name wins when a client sends both, as the API does */
    if ((st = get_int(root, "max_completion_tokens", 1, INT32_MAX, &iv, &present, err))) goto fail;
    if (present) out->max_tokens = iv;
    if ((st = get_num(root, "temperature", 0.0, 2.0, false, &out->temperature, err))) goto fail;
    /* top_p 0 would leave nothing to sample from: the range is open at 0 */
    if ((st = get_num(root, "top_p", 0.0, 1.0, true, &out->top_p, err))) goto fail;
    if ((st = get_int(root, "top_k", -1, INT32_MAX, &iv, &present, err))) goto fail;
    if (present) out->top_k = iv > 0 ? (int32_t)iv : 0; /* vLLM's -1 and 0 both mean "no top-k" */
    if ((st = get_int(root, "n", 1, OAI_MAX_N, &iv, &present, err))) goto fail;
    if (present) out->n = (int32_t)iv;
    if ((st = get_int(root, "seed", INT64_MIN, INT64_MAX, &iv, &present, err))) goto fail;
    if (present) {
        out->has_seed = true;
        out->seed = (uint64_t)iv; /* a negative seed is a valid int64: reinterpret, not refuse */
    }
    if ((st = get_bool(root, "ignore_eos", &out->ignore_eos, err))) goto fail;
    if ((st = get_bool(root, "stream", &out->stream, err))) goto fail;
    if ((v = member(root, "stream_options"))) {
        if (dspy_json_typeof(v) != DSPY_JSON_OBJECT) {
            st = bad_type(err, "stream_options", "an object", v);
            goto fail;
        }
        dspy_json *u = member(v, "include_usage");
        if (u && dspy_json_typeof(u) != DSPY_JSON_BOOL) {
            st = bad_type(err, "stream_options.include_usage", "a boolean", u);
            goto fail;
        }
        out->include_usage = u && dspy_json_truthy(u);
    }
    if ((st = parse_stop(root, out, err))) goto fail;
    if ((st = check_unsupported(root, kind, err))) goto fail;
    if ((st = parse_response_format(root, out, err))) goto fail;
    if ((st = parse_layout(root, out, err))) goto fail;
    if ((st = get_int(root, "dspy_max_string_tokens", 0, 1 << 20, &iv, &present, err))) goto fail;
    if (present) out->max_string_tokens = (int32_t)iv;
    dspy_json_decref(root);
    return DSPY_OK;
fail:
    dspy_json_decref(root);
    dspy_oai_request_free(out);
    return st ? st : DSPY_ERR_ARG;
}

void dspy_oai_request_free(oai_request *r) {
    if (!r) return;
    free(r->model);
    for (size_t i = 0; i < r->n_messages; i++) {
        free(r->messages[i].role);
        free(r->messages[i].content);
    }
    free(r->messages);
    free(r->prompt);
    free(r->prompt_ids);
    for (size_t i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->stop);
    free(r->schema_text);
    for (size_t i = 0; i < r->n_layout; i++) {
        free(r->layout[i].name);
        for (size_t k = 0; k < r->layout[i].n_values; k++) free(r->layout[i].values[k]);
        free(r->layout[i].values);
    }
    free(r->layout);
    oai_kind k = r->kind;
    memset(r, 0, sizeof *r);
    r->kind = k;
}

/* ---- answers --------------------------------------------------------------------------- */

static dspy_json *head_object(oai_kind kind, bool chunk, const char *id, int64_t created, const char *model) {
    dspy_json *o = dspy_json_object();
    if (!o) return NULL;
    dspy_json_set(o, "id", dspy_json_string(id));
    dspy_json_set(o, "object", dspy_json_string(kind == OAI_CHAT ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                                                 : "text_completion"));
    dspy_json_set(o, "created", dspy_json_int(created));
    dspy_json_set(o, "model", dspy_json_string(model));
    return o;
}

static dspy_json *usage_object(oai_usage u) {
    dspy_json *o = dspy_json_object();
    if (!o) return NULL;
    dspy_json_set(o, "prompt_tokens", dspy_json_int(u.prompt_tokens));
    dspy_json_set(o, "completion_tokens", dspy_json_int(u.completion_tokens));
    dspy_json_set(o, "total_tokens", dspy_json_int(u.prompt_tokens + u.completion_tokens));
    return o;
}

static char *finish(dspy_json *o) {
    char *s = o ? dspy_json_dumps(o, DSPY_JSON_COMPACT | DSPY_JSON_UTF8) : NULL;
    dspy_json_decref(o);
    return s;
}

char *dspy_oai_completion_json(oai_kind kind, const char *id, int64_t created, const char *model,
                          const oai_choice *choices, size_t n, oai_usage usage) {
    dspy_json *o = head_object(kind, false, id, created, model);
    dspy_json *arr = dspy_json_array();
    if (!o || !arr) {
        dspy_json_decref(arr);
        dspy_json_decref(o);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        dspy_json *c = dspy_json_object();
        if (!c) break;
        if (kind == OAI_CHAT) {
            dspy_json_set(c, "index", dspy_json_int((int64_t)i));
            dspy_json *m = dspy_json_object();
            if (m) {
                dspy_json_set(m, "role", dspy_json_string("assistant"));
                dspy_json_set(m, "content", dspy_json_stringn(choices[i].text, choices[i].len));
            }
            dspy_json_set(c, "message", m ? m : dspy_json_null());
        } else {
            dspy_json_set(c, "text", dspy_json_stringn(choices[i].text, choices[i].len));
            dspy_json_set(c, "index", dspy_json_int((int64_t)i));
        }
        dspy_json_set(c, "logprobs", dspy_json_null());
        dspy_json_set(c, "finish_reason", str_or_null(choices[i].finish_reason));
        dspy_json_append(arr, c);
    }
    dspy_json_set(o, "choices", arr);
    dspy_json_set(o, "usage", usage_object(usage));
    return finish(o);
}

char *dspy_oai_chunk_json(oai_kind kind, const char *id, int64_t created, const char *model, int index,
                     bool first, const char *text, size_t len, const char *finish_reason,
                     bool usage_null) {
    dspy_json *o = head_object(kind, true, id, created, model);
    dspy_json *arr = dspy_json_array(), *c = dspy_json_object();
    if (!o || !arr || !c) {
        dspy_json_decref(c);
        dspy_json_decref(arr);
        dspy_json_decref(o);
        return NULL;
    }
    if (kind == OAI_CHAT) {
        dspy_json_set(c, "index", dspy_json_int(index));
        dspy_json *d = dspy_json_object();
        if (d) {
            if (first) dspy_json_set(d, "role", dspy_json_string("assistant"));
            if (first || len || !finish_reason) dspy_json_set(d, "content", dspy_json_stringn(text ? text : "", len));
        }
        dspy_json_set(c, "delta", d ? d : dspy_json_null());
    } else {
        dspy_json_set(c, "text", dspy_json_stringn(text ? text : "", len));
        dspy_json_set(c, "index", dspy_json_int(index));
    }
    dspy_json_set(c, "logprobs", dspy_json_null());
    dspy_json_set(c, "finish_reason", str_or_null(finish_reason));
    dspy_json_append(arr, c);
    dspy_json_set(o, "choices", arr);
    if (usage_null) dspy_json_set(o, "usage", dspy_json_null());
    return finish(o);
}

char *dspy_oai_usage_chunk_json(oai_kind kind, const char *id, int64_t created, const char *model,
                           oai_usage usage) {
    dspy_json *o = head_object(kind, true, id, created, model);
    if (!o) return NULL;
    dspy_json_set(o, "choices", dspy_json_array());
    dspy_json_set(o, "usage", usage_object(usage));
    return finish(o);
}

char *dspy_oai_model_json(const char *id, int64_t created, bool list) {
    dspy_json *m = dspy_json_object();
    if (!m) return NULL;
    dspy_json_set(m, "id", dspy_json_string(id));
    dspy_json_set(m, "object", dspy_json_string("model"));
    dspy_json_set(m, "created", dspy_json_int(created));
    dspy_json_set(m, "owned_by", dspy_json_string("dspy.c"));
    if (!list) return finish(m);
    dspy_json *o = dspy_json_object(), *arr = dspy_json_array();
    if (!o || !arr) {
        dspy_json_decref(m);
        dspy_json_decref(arr);
        dspy_json_decref(o);
        return NULL;
    }
    dspy_json_set(o, "object", dspy_json_string("list"));
    dspy_json_append(arr, m);
    dspy_json_set(o, "data", arr);
    return finish(o);
}

char *dspy_oai_new_id(oai_kind kind) {
    char hex[33];
    dspy_uuid4_hex(hex);
    dspy_str id = DSPY_STR_INIT;
    /* a prefix as OpenAI's ids have, then 24 hex digits of a uuid4 (92 random bits: plenty
     * for ids that only need to differ) */
    dspy_str_appendf(&id, "%s%.24s", kind == OAI_CHAT ? "chatcmpl-" : "cmpl-", hex);
    return dspy_str_take(&id);
}
