/* oracle.c — the oracle teacher, a labelled stand-in LM for offline runs (see dspy/oracle.h).
 *
 * A sorted array of (stripped text, label) pairs searched with bsearch; the provider reads the
 * last user message, finds the input marker, looks the text up and renders the reply in the
 * ChatAdapter layout (or as a JSON object when JSON is asked for). Not here: anything a real
 * LM does — the oracle only knows the dataset it was built from.
 */
#include "dspy/oracle.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char *text; /* stripped */
    char *label;
    size_t idx; /* position in the dataset: the first of equal texts wins */
} entry;

struct dspy_oracle {
    atomic_int refs;
    entry *entries; /* sorted by text, unique */
    size_t n;
    char *input_field, *output_field, *reasoning_field;
};

dspy_oracle_params dspy_oracle_params_default(void) {
    dspy_oracle_params p = {"text", "label", "reasoning"};
    return p;
}

static int entry_cmp(const void *a, const void *b) {
    const entry *x = a, *y = b;
    int c = strcmp(x->text, y->text);
    if (c) return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int key_cmp(const void *key, const void *e) { return strcmp(key, ((const entry *)e)->text); }

void dspy_oracle_free(dspy_oracle *o) {
    if (!o || atomic_fetch_sub(&o->refs, 1) != 1) return;
    for (size_t i = 0; i < o->n; i++) {
        free(o->entries[i].text);
        free(o->entries[i].label);
    }
    free(o->entries);
    free(o->input_field);
    free(o->output_field);
    free(o->reasoning_field);
    free(o);
}

size_t dspy_oracle_size(const dspy_oracle *o) { return o ? o->n : 0; }

dspy_status dspy_oracle_new(const dspy_dataset *data, const dspy_oracle_params *p, dspy_oracle **out) {
    *out = NULL;
    dspy_oracle_params def = dspy_oracle_params_default();
    if (!p) p = &def;
    const char *in = p->input_field ? p->input_field : def.input_field;
    const char *outf = p->output_field ? p->output_field : def.output_field;
    const char *rf = p->reasoning_field ? p->reasoning_field : "";
    dspy_oracle *o = calloc(1, sizeof *o);
    if (!o) return dspy_fail(DSPY_ERR_NOMEM, "oracle: out of memory");
    atomic_init(&o->refs, 1);
    size_t cap = data ? dspy_dataset_len(data) : 0;
    o->input_field = strdup(in);
    o->output_field = strdup(outf);
    o->reasoning_field = strdup(rf);
    o->entries = calloc(cap ? cap : 1, sizeof *o->entries);
    if (!o->input_field || !o->output_field || !o->reasoning_field || !o->entries) goto fail;
    for (size_t i = 0; i < cap; i++) {
        const dspy_example *ex = dspy_dataset_get(data, i);
        const char *t = dspy_example_get_str(ex, in), *l = dspy_example_get_str(ex, outf);
        if (!t || !l) continue;
        dspy_strv v = dspy_strv_strip(dspy_strv_of(t));
        entry *e = &o->entries[o->n++];
        e->text = strndup(v.ptr, v.len);
        e->label = strdup(l);
        e->idx = i;
        if (!e->text || !e->label) goto fail;
    }
    if (o->n == 0) {
        dspy_oracle_free(o);
        return dspy_fail(DSPY_ERR_ARG, "oracle: no example of the dataset (%zu examples) has both a '%s' and a "
                         "'%s' string field; give a labelled dataset", cap, in, outf);
    }
    qsort(o->entries, o->n, sizeof *o->entries, entry_cmp);
    size_t k = 0; /* keep the first (lowest idx) of each run of equal texts */
    for (size_t i = 0; i < o->n; i++) {
        if (k && strcmp(o->entries[k - 1].text, o->entries[i].text) == 0) {
            free(o->entries[i].text);
            free(o->entries[i].label);
            continue;
        }
        o->entries[k++] = o->entries[i];
    }
    o->n = k;
    *out = o;
    return DSPY_OK;
fail:
    dspy_oracle_free(o);
    return dspy_fail(DSPY_ERR_NOMEM, "oracle: out of memory");
}

/* The content of the last user message (borrowed), or NULL. */
static const char *last_user(const dspy_json *messages) {
    for (size_t i = dspy_json_size(messages); i-- > 0;) {
        const dspy_json *m = dspy_json_at(messages, i);
        const char *role = dspy_json_str(dspy_json_get(m, "role"));
        if (role && strcmp(role, "user") == 0) return dspy_json_str(dspy_json_get(m, "content"));
    }
    return NULL;
}

/* Whether any message asks for the output field `name` ("[[ ## name ## ]]" or the JSON
 * adapter's "`name`" listing in the system message). */
static bool asks_for(const dspy_json *messages, const char *name) {
    if (!*name) return false;
    dspy_str m1 = DSPY_STR_INIT, m2 = DSPY_STR_INIT;
    dspy_str_appendf(&m1, "[[ ## %s ## ]]", name);
    dspy_str_appendf(&m2, "`%s`", name);
    bool found = false;
    for (size_t i = 0; i < dspy_json_size(messages) && !found; i++) {
        const char *c = dspy_json_str(dspy_json_get(dspy_json_at(messages, i), "content"));
        found = c && (strstr(c, dspy_str_cstr(&m1)) || strstr(c, dspy_str_cstr(&m2)));
    }
    dspy_str_free(&m1);
    dspy_str_free(&m2);
    return found;
}

/* The stripped input value after "[[ ## field ## ]]\n" in `content` (malloc'd), or NULL with
 * *missing set when the marker is absent. */
static char *input_value(const char *content, const char *field, bool *missing) {
    *missing = false;
    dspy_str mk = DSPY_STR_INIT;
    dspy_str_appendf(&mk, "[[ ## %s ## ]]", field);
    const char *at = dspy_str_ok(&mk) ? strstr(content, dspy_str_cstr(&mk)) : NULL;
    size_t ml = mk.len;
    dspy_str_free(&mk);
    if (!at) {
        *missing = true;
        return NULL;
    }
    const char *v = at + ml;
    if (*v == '\n') v++;
    const char *end = v + strlen(v);
    static const char *const stops[] = {"\n\n[[ ## ", "\n\nRespond with "};
    for (size_t i = 0; i < 2; i++) {
        const char *s = strstr(v, stops[i]);
        if (s && s < end) end = s;
    }
    dspy_strv sv = dspy_strv_strip(dspy_strv_make(v, (size_t)(end - v)));
    return strndup(sv.ptr, sv.len);
}

static dspy_status reply_for(const dspy_oracle *o, const dspy_json *messages, bool json, char **out) {
    *out = NULL;
    if (!messages || dspy_json_typeof(messages) != DSPY_JSON_ARRAY)
        return dspy_fail(DSPY_ERR_ARG, "oracle: messages must be a JSON array");
    const char *content = last_user(messages);
    if (!content) return dspy_fail(DSPY_ERR_ARG, "oracle: the request has no user message with text content");
    bool missing;
    char *text = input_value(content, o->input_field, &missing);
    if (missing)
        return dspy_fail(DSPY_ERR_ARG, "oracle: the last user message has no [[ ## %s ## ]] input; the oracle "
                         "answers only the prompts of a `%s -> %s` program", o->input_field, o->input_field,
                         o->output_field);
    if (!text) return dspy_fail(DSPY_ERR_NOMEM, "oracle: out of memory");
    const entry *e = bsearch(text, o->entries, o->n, sizeof *o->entries, key_cmp);
    if (!e) {
        dspy_str q = DSPY_STR_INIT;
        dspy_py_repr_str(text, strlen(text), &q);
        dspy_status st = dspy_fail(DSPY_ERR_NOTFOUND, "oracle: text not in the dataset: %s (the oracle stand-in "
                                   "knows only the %zu labelled texts it was built from)", dspy_str_cstr(&q), o->n);
        dspy_str_free(&q);
        free(text);
        return st;
    }
    bool cot = asks_for(messages, o->reasoning_field);
    dspy_str reasoning = DSPY_STR_INIT;
    if (cot) {
        dspy_str_appendf(&reasoning, "The message \"%s\" is about ", text);
        for (const char *c = e->label; *c; c++) dspy_str_appendc(&reasoning, *c == '_' ? ' ' : *c);
        dspy_str_appendc(&reasoning, '.');
    }
    free(text);
    dspy_str r = DSPY_STR_INIT;
    dspy_status st = DSPY_OK;
    if (json) {
        dspy_json *obj = dspy_json_object();
        if (!obj) st = dspy_fail(DSPY_ERR_NOMEM, "oracle: out of memory");
        if (!st && cot) st = dspy_json_set_str(obj, o->reasoning_field, dspy_str_cstr(&reasoning));
        if (!st) st = dspy_json_set_str(obj, o->output_field, e->label);
        if (!st) st = dspy_json_dump(obj, DSPY_JSON_UTF8, &r);
        dspy_json_decref(obj);
    } else {
        if (cot) dspy_str_appendf(&r, "[[ ## %s ## ]]\n%s\n\n", o->reasoning_field, dspy_str_cstr(&reasoning));
        dspy_str_appendf(&r, "[[ ## %s ## ]]\n%s\n\n[[ ## completed ## ]]", o->output_field, e->label);
    }
    dspy_str_free(&reasoning);
    if (st) {
        dspy_str_free(&r);
        return st;
    }
    if (!(*out = dspy_str_take(&r))) return dspy_fail(DSPY_ERR_NOMEM, "oracle: out of memory");
    return DSPY_OK;
}

dspy_status dspy_oracle_reply(const dspy_oracle *o, const dspy_json *messages, bool json, char **out) {
    *out = NULL;
    if (!o) return dspy_fail(DSPY_ERR_ARG, "oracle: no oracle given");
    return reply_for(o, messages, json, out);
}

/* ---- the provider ---------------------------------------------------------------------- */

static dspy_status oracle_complete(void *impl, dspy_lm *lm, const dspy_json *request, dspy_json **out) {
    (void)lm;
    *out = NULL;
    const dspy_oracle *o = impl;
    const dspy_json *messages = dspy_json_get(request, "messages");
    const dspy_json *rf = dspy_json_get(request, "response_format");
    const char *content = last_user(messages);
    bool json = (rf && dspy_json_typeof(rf) != DSPY_JSON_NULL) ||
                (content && strstr(content, "Respond with a JSON object"));
    const dspy_json *nj = dspy_json_get(request, "n");
    int64_t n = nj && dspy_json_typeof(nj) == DSPY_JSON_INT ? dspy_json_intval(nj) : 1;
    if (n < 1) n = 1;
    char *text;
    dspy_status st = reply_for(o, messages, json, &text);
    if (st) return st;
    dspy_json *resp = dspy_json_object(), *choices = dspy_json_array(), *usage = dspy_json_object();
    if (!resp || !choices || !usage) st = dspy_fail(DSPY_ERR_NOMEM, "oracle: out of memory");
    for (int64_t i = 0; !st && i < n; i++) {
        dspy_json *c = dspy_json_object(), *msg = dspy_json_object();
        if (!c || !msg) {
            dspy_json_decref(c);
            dspy_json_decref(msg);
            st = dspy_fail(DSPY_ERR_NOMEM, "oracle: out of memory");
            break;
        }
        st = dspy_json_set(c, "index", dspy_json_int(i));
        if (!st) st = dspy_json_set_str(msg, "role", "assistant");
        if (!st) st = dspy_json_set_str(msg, "content", text);
        if (!st) st = dspy_json_set(c, "message", msg);
        else dspy_json_decref(msg);
        if (!st) st = dspy_json_set_str(c, "finish_reason", "stop");
        if (!st) st = dspy_json_append(choices, c);
        else dspy_json_decref(c);
    }
    free(text);
    if (!st) st = dspy_json_set(usage, "prompt_tokens", dspy_json_int(0));
    if (!st) st = dspy_json_set(usage, "completion_tokens", dspy_json_int(0));
    if (!st) st = dspy_json_set(usage, "total_tokens", dspy_json_int(0));
    if (!st) st = dspy_json_set_str(resp, "object", "chat.completion");
    if (!st) st = dspy_json_set_str(resp, "model", dspy_json_str_or(request, "model", "oracle"));
    if (!st) {
        st = dspy_json_set(resp, "choices", choices);
        choices = NULL;
    }
    if (!st) {
        st = dspy_json_set(resp, "usage", usage);
        usage = NULL;
    }
    dspy_json_decref(choices);
    dspy_json_decref(usage);
    if (st) {
        dspy_json_decref(resp);
        return st;
    }
    *out = resp;
    return DSPY_OK;
}

static void oracle_release(void *impl) { dspy_oracle_free(impl); }

static const dspy_lm_provider k_oracle_provider = {"oracle", oracle_complete, oracle_release};

dspy_status dspy_oracle_lm_new(dspy_oracle *o, const char *model, const dspy_lm_params *p, dspy_lm **out) {
    *out = NULL;
    if (!o) return dspy_fail(DSPY_ERR_ARG, "oracle: no oracle given");
    dspy_lm_params lp = p ? *p : dspy_lm_params_default();
    if (lp.cache < 0) lp.cache = 0;
    atomic_fetch_add(&o->refs, 1);
    return dspy_lm_new_custom(model && *model ? model : "oracle", &lp, &k_oracle_provider, o, out);
}
