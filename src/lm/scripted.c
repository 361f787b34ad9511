/* scripted.c — the scripted LM provider (DSPy's DummyLM, dspy/utils/dummies.py).
 *
 * Answers each choice from a reply list (in order; cycling or failing when used up), from a
 * substring->reply map matched against the last message (DummyLM's dict mode), or from a
 * callback. Field-dict replies are rendered as DummyLM does: "[[ ## f ## ]]\n" + value, joined
 * by "\n\n", with no completed marker (conformance CC-20). Replies are OpenAI chat.completion
 * objects so scripted LMs go through the same pipeline (cache, history, usage) as HTTP ones.
 * Not here: DummyLM's follow_examples mode.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lm_internal.h"

typedef struct scripted {
    pthread_mutex_t lock;
    char **texts; /* list mode */
    size_t n, next;
    bool cycle;
    dspy_json *match; /* {"substring": "rendered reply"} */
    dspy_json *usage; /* reported with every reply, or NULL */
    dspy_scripted_fn fn;
    void *user;
} scripted;

static void scripted_free(void *p) {
    scripted *s = p;
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) free(s->texts[i]);
    free(s->texts);
    dspy_json_decref(s->match);
    dspy_json_decref(s->usage);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static scripted *scripted_alloc(void) {
    scripted *s = calloc(1, sizeof *s);
    if (s) pthread_mutex_init(&s->lock, NULL);
    return s;
}

dspy_status dspy_scripted_format_fields(const dspy_json *fields, dspy_str *out) {
    if (!fields || dspy_json_typeof(fields) != DSPY_JSON_OBJECT)
        return dspy_fail(DSPY_ERR_ARG, "scripted reply: fields must be a JSON object");
    bool first = true;
    for (void *it = dspy_json_iter(fields); it; it = dspy_json_next(fields, it)) {
        const dspy_json *v = dspy_json_iter_value(it);
        if (!first) dspy_str_append(out, "\n\n");
        first = false;
        dspy_str_appendf(out, "[[ ## %s ## ]]\n", dspy_json_iter_key(it));
        dspy_json_type t = dspy_json_typeof(v);
        if (t == DSPY_JSON_OBJECT || t == DSPY_JSON_ARRAY) {
            dspy_status st = dspy_json_dump(v, DSPY_JSON_UTF8, out);
            if (st) return st;
        } else {
            dspy_json_pystr(v, out);
        }
    }
    if (!dspy_str_ok(out)) return dspy_fail(DSPY_ERR_NOMEM, "scripted reply: out of memory");
    return DSPY_OK;
}

/* A reply (string or field object) as text; `where` labels errors. */
static dspy_status render_reply(const dspy_json *r, const char *where, size_t i, char **out) {
    *out = NULL;
    if (dspy_json_is_string(r)) {
        *out = strndup(dspy_json_str(r), dspy_json_strlen(r));
    } else if (r && dspy_json_typeof(r) == DSPY_JSON_OBJECT) {
        dspy_str s = DSPY_STR_INIT;
        dspy_status st = dspy_scripted_format_fields(r, &s);
        if (st) {
            dspy_str_free(&s);
            return st;
        }
        *out = dspy_str_take(&s);
    } else {
        return dspy_fail(DSPY_ERR_FORMAT, "%s: reply %zu must be a string or an object of output fields", where, i);
    }
    return *out ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", where);
}

static dspy_status fill_list(scripted *s, const dspy_json *replies, const char *where) {
    if (!replies || dspy_json_typeof(replies) != DSPY_JSON_ARRAY)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: replies must be a JSON array", where);
    size_t n = dspy_json_size(replies);
    s->texts = calloc(n ? n : 1, sizeof *s->texts);
    if (!s->texts) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", where);
    for (size_t i = 0; i < n; i++) {
        dspy_status st = render_reply(dspy_json_at(replies, i), where, i, &s->texts[i]);
        if (st) return st;
        s->n = i + 1;
    }
    return DSPY_OK;
}

dspy_status dspy_scripted_from_json(const dspy_json *spec, const char *where, void **impl) {
    *impl = NULL;
    scripted *s = scripted_alloc();
    if (!s) return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", where);
    dspy_status st = DSPY_OK;
    if (spec && dspy_json_typeof(spec) == DSPY_JSON_ARRAY) {
        st = fill_list(s, spec, where);
    } else if (spec && dspy_json_typeof(spec) == DSPY_JSON_OBJECT) {
        const dspy_json *replies = dspy_json_get(spec, "replies"), *match = dspy_json_get(spec, "match");
        const dspy_json *usage = dspy_json_get(spec, "usage");
        if (!!replies == !!match) {
            st = dspy_fail(DSPY_ERR_FORMAT, "%s: give exactly one of \"replies\" (a list) or \"match\" (an object)", where);
        } else if (replies) {
            st = fill_list(s, replies, where);
            s->cycle = dspy_json_bool_or(spec, "cycle", false);
        } else if (dspy_json_typeof(match) != DSPY_JSON_OBJECT) {
            st = dspy_fail(DSPY_ERR_FORMAT, "%s: \"match\" must be an object of substring -> reply", where);
        } else if (!(s->match = dspy_json_object())) {
            st = dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory", where);
        } else {
            size_t i = 0;
            for (void *it = dspy_json_iter(match); it && !st; it = dspy_json_next(match, it), i++) {
                char *text;
                st = render_reply(dspy_json_iter_value(it), where, i, &text);
                if (st) break;
                dspy_json *v = dspy_json_string(text);
                free(text);
                st = dspy_json_set(s->match, dspy_json_iter_key(it), v);
            }
        }
        if (!st && usage) {
            if (dspy_json_typeof(usage) != DSPY_JSON_OBJECT)
                st = dspy_fail(DSPY_ERR_FORMAT, "%s: \"usage\" must be an object", where);
            else s->usage = dspy_json_copy(usage);
        }
    } else {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: a scripted LM file holds a JSON array of replies or an object with "
                       "\"replies\" or \"match\"", where);
    }
    if (st) {
        scripted_free(s);
        return st;
    }
    *impl = s;
    return DSPY_OK;
}

dspy_status dspy_scripted_load(const char *path, void **impl) {
    *impl = NULL;
    if (!*path) return dspy_fail(DSPY_ERR_ARG, "scripted LM: the model string \"scripted:\" needs a file path");
    char *text;
    size_t len;
    dspy_status st = dspy_read_file(path, &text, &len);
    if (st) return dspy_fail_wrap(st, "scripted LM");
    dspy_strv body = dspy_strv_lstrip(dspy_strv_make(text, len));
    dspy_json *spec = NULL;
    /* JSON when it opens an object or an array; "[[ ## field ## ]]" opens ChatAdapter text. */
    bool is_json = body.len && body.ptr[0] == '{';
    if (body.len && body.ptr[0] == '[') {
        dspy_strv rest = dspy_strv_lstrip(dspy_strv_make(body.ptr + 1, body.len - 1));
        is_json = !(rest.len && rest.ptr[0] == '[');
    }
    if (is_json) {
        st = dspy_json_parse(text, len, path, &spec);
    } else { /* plain text: the whole file is the one reply, given to every call */
        spec = dspy_json_object();
        dspy_json *replies = dspy_json_array();
        if (!spec || !replies || dspy_json_append(replies, dspy_json_stringn(text, len)) ||
            dspy_json_set(spec, "replies", replies) || dspy_json_set(spec, "cycle", dspy_json_bool(true)))
            st = dspy_fail(DSPY_ERR_NOMEM, "scripted LM: out of memory reading %s", path);
        if (st && !spec) dspy_json_decref(replies);
    }
    free(text);
    if (st) {
        dspy_json_decref(spec);
        return dspy_fail_wrap(st, "scripted LM");
    }
    st = dspy_scripted_from_json(spec, path, impl);
    dspy_json_decref(spec);
    return st;
}

static dspy_status next_text(scripted *s, const dspy_json *messages, const dspy_json *kw, int32_t choice, char **out) {
    *out = NULL;
    if (s->fn) {
        dspy_status st = s->fn(s->user, messages, kw, choice, out);
        if (st == DSPY_OK && !*out) return dspy_fail(DSPY_ERR_STATE, "scripted LM: the reply callback returned no text");
        return st;
    }
    if (s->match) {
        size_t nm = dspy_json_size(messages);
        const char *last = nm ? dspy_json_str(dspy_json_get(dspy_json_at(messages, nm - 1), "content")) : NULL;
        for (void *it = dspy_json_iter(s->match); it && last; it = dspy_json_next(s->match, it)) {
            if (strstr(last, dspy_json_iter_key(it))) {
                *out = strdup(dspy_json_str(dspy_json_iter_value(it)));
                return *out ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "scripted LM: out of memory");
            }
        }
        return dspy_fail(DSPY_ERR_STATE, "scripted LM: no reply key occurs in the last message's content");
    }
    pthread_mutex_lock(&s->lock);
    const char *t = NULL;
    if (s->next < s->n) t = s->texts[s->next++];
    else if (s->cycle && s->n) {
        s->next = 1;
        t = s->texts[0];
    }
    *out = t ? strdup(t) : NULL;
    pthread_mutex_unlock(&s->lock);
    if (!t)
        return dspy_fail(DSPY_ERR_STATE, "scripted LM: all %zu replies have been used (add replies, or make the script "
                         "cycle)", s->n);
    return *out ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "scripted LM: out of memory");
}

static dspy_status scripted_complete(void *impl, dspy_lm *lm, const dspy_json *request, dspy_json **out) {
    scripted *s = impl;
    *out = NULL;
    const dspy_json *messages = dspy_json_get(request, "messages");
    const dspy_json *nv = dspy_json_get(request, "n");
    int64_t n = nv && dspy_json_typeof(nv) == DSPY_JSON_INT ? dspy_json_intval(nv) : 1;
    if (n < 1 || n > 4096) return dspy_fail(DSPY_ERR_ARG, "[%s] n must be between 1 and 4096, not %lld", dspy_lm_model(lm), (long long)n);
    dspy_json *kw = dspy_json_object(), *resp = dspy_json_object(), *choices = dspy_json_array();
    dspy_status st = DSPY_OK;
    if (!kw || !resp || !choices) {
        st = dspy_fail(DSPY_ERR_NOMEM, "scripted LM: out of memory");
        goto done;
    }
    for (void *it = dspy_json_iter(request); it; it = dspy_json_next(request, it)) {
        const char *k = dspy_json_iter_key(it);
        if (strcmp(k, "model") && strcmp(k, "messages") && dspy_json_set(kw, k, dspy_json_incref(dspy_json_iter_value(it)))) {
            st = dspy_fail(DSPY_ERR_NOMEM, "scripted LM: out of memory");
            goto done;
        }
    }
    for (int64_t i = 0; i < n; i++) {
        char *text;
        st = next_text(s, messages, kw, (int32_t)i, &text);
        if (st) {
            dspy_fail_wrap(st, "[%s]", dspy_lm_model(lm));
            goto done;
        }
        dspy_json *msg = dspy_json_object(), *c = dspy_json_object();
        bool ok = msg && c && dspy_json_set_str(msg, "role", "assistant") == DSPY_OK &&
                  dspy_json_set(msg, "content", dspy_json_string(text)) == DSPY_OK &&
                  dspy_json_set(c, "index", dspy_json_int(i)) == DSPY_OK &&
                  dspy_json_set(c, "message", dspy_json_incref(msg)) == DSPY_OK &&
                  dspy_json_set_str(c, "finish_reason", "stop") == DSPY_OK && dspy_json_append(choices, dspy_json_incref(c)) == DSPY_OK;
        free(text);
        dspy_json_decref(msg);
        dspy_json_decref(c);
        if (!ok) {
            st = dspy_fail(DSPY_ERR_NOMEM, "scripted LM: out of memory");
            goto done;
        }
    }
    if (dspy_json_set_str(resp, "object", "chat.completion") || dspy_json_set_str(resp, "model", dspy_lm_model(lm)) ||
        dspy_json_set(resp, "choices", dspy_json_incref(choices)) ||
        dspy_json_set(resp, "usage", s->usage ? dspy_json_copy(s->usage) : dspy_json_object())) {
        st = dspy_fail(DSPY_ERR_NOMEM, "scripted LM: out of memory");
        goto done;
    }
    *out = resp;
    resp = NULL;
    goto done;
done:
    dspy_json_decref(kw);
    dspy_json_decref(resp);
    dspy_json_decref(choices);
    return st;
}

const dspy_lm_provider dspy_scripted_provider = {"scripted", scripted_complete, scripted_free};

dspy_status dspy_lm_new_scripted(const dspy_json *replies, bool cycle, const dspy_lm_params *p, dspy_lm **out) {
    *out = NULL;
    void *impl;
    dspy_status st = dspy_scripted_from_json(replies, "scripted LM", &impl);
    if (st) return st;
    if (cycle) ((scripted *)impl)->cycle = true;
    return dspy_lm_new_custom("dummy", p, &dspy_scripted_provider, impl, out);
}

dspy_status dspy_lm_new_scripted_fn(dspy_scripted_fn fn, void *user, const dspy_lm_params *p, dspy_lm **out) {
    *out = NULL;
    if (!fn) return dspy_fail(DSPY_ERR_ARG, "scripted LM: the reply callback is NULL");
    scripted *s = scripted_alloc();
    if (!s) return dspy_fail(DSPY_ERR_NOMEM, "scripted LM: out of memory");
    s->fn = fn;
    s->user = user;
    return dspy_lm_new_custom("dummy", p, &dspy_scripted_provider, s, out);
}
