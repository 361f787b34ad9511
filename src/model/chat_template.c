/* chat_template.c — Llama 3.x and ChatML chat prompts, byte-exact with transformers'
 * apply_chat_template, without a Jinja engine.
 *
 * Follows, line by line:
 *  - Llama 3.1/3.2: ../shared/models/llama3-tokenizer/chat_template_llama3_2.jinja (Meta's
 *    template; with no tools: bos_token, a system block "Cutting Knowledge Date: December
 *    2023\nToday Date: <date>\n\n" + the first message's content if it is a system message,
 *    then each message as header + content|trim + <|eot_id|>, then the generation prompt);
 *  - Llama 3.0: the template in that folder's tokenizer_config.json;
 *  - ChatML: Qwen2-7B-Instruct's template (see tests/unit/test_chat_template.c for its text and
 *    source) and Qwen2.5's, which render the same without tools.
 * Recognition is by distinctive substrings; anything else is refused by name.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dspy/chat_template.h"
#include "dspy/gguf.h"
#include "model/chat_template_internal.h"

struct dspy_chat_template {
    dspy_chat_kind kind;
    char *bos;            /* text emitted by {{ bos_token }} */
    char *default_system; /* ChatML: system message used when the first is not "system"; or NULL */
    bool tool_aware;      /* ChatML template with tool handling: only system/user/assistant roles */
};

void dspy_chat_template_free(dspy_chat_template *t) {
    if (!t) return;
    free(t->bos);
    free(t->default_system);
    free(t);
}

dspy_chat_kind dspy_chat_template_kind(const dspy_chat_template *t) { return t ? t->kind : (dspy_chat_kind)0; }

const char *dspy_chat_template_name(const dspy_chat_template *t) {
    switch (t ? t->kind : (dspy_chat_kind)0) {
    case DSPY_CHAT_LLAMA3: return "llama3";
    case DSPY_CHAT_LLAMA3_0: return "llama3.0";
    case DSPY_CHAT_CHATML: return "chatml";
    }
    return "?";
}

const char *dspy_chat_template_end_of_turn(const dspy_chat_template *t) {
    return t && t->kind == DSPY_CHAT_CHATML ? "<|im_end|>" : "<|eot_id|>";
}

static dspy_status make(dspy_chat_kind kind, const char *bos, const char *default_system, bool tool_aware,
                        dspy_chat_template **out) {
    *out = NULL;
    dspy_chat_template *t = calloc(1, sizeof *t);
    if (!t) return dspy_fail(DSPY_ERR_NOMEM, "chat template: out of memory");
    t->kind = kind;
    t->tool_aware = tool_aware;
    if (!bos) bos = kind == DSPY_CHAT_CHATML ? "" : "<|begin_of_text|>";
    t->bos = strdup(bos);
    t->default_system = default_system ? strdup(default_system) : NULL;
    if (!t->bos || (default_system && !t->default_system)) {
        dspy_chat_template_free(t);
        return dspy_fail(DSPY_ERR_NOMEM, "chat template: out of memory");
    }
    *out = t;
    return DSPY_OK;
}

dspy_status dspy_chat_template_builtin(dspy_chat_kind kind, dspy_chat_template **out) {
    *out = NULL;
    if (kind != DSPY_CHAT_LLAMA3 && kind != DSPY_CHAT_LLAMA3_0 && kind != DSPY_CHAT_CHATML)
        return dspy_fail(DSPY_ERR_ARG, "chat template: unknown kind %d", (int)kind);
    return make(kind, NULL, kind == DSPY_CHAT_CHATML ? "You are a helpful assistant." : NULL, false, out);
}

/* The ChatML default system message: a string literal that reads "<|im_start|>system" +
 * newline (a real newline or the escape \n) + text + "<|im_end|>", with Jinja string escapes
 * undone. Occurrences where the literal's quote closes before <|im_end|> (an expression such as
 * '<|im_start|>system\n' + messages[0]['content']) are skipped. NULL when there is none. */
static char *chatml_default_system(const char *j, bool *nomem) {
    *nomem = false;
    const char *tag = "<|im_start|>system";
    for (const char *p = strstr(j, tag); p; p = strstr(p + 1, tag)) {
        const char *o = p;
        while (o > j && o[-1] != '\'' && o[-1] != '"') o--;
        if (o == j) continue;
        char quote = o[-1];
        const char *q = p + strlen(tag);
        if (*q == '\n') q++;
        else if (q[0] == '\\' && q[1] == 'n') q += 2;
        else continue;
        const char *e = strstr(q, "<|im_end|>");
        if (!e || e == q) continue;
        bool literal = true;
        for (const char *c = q; c < e && literal; c++) {
            if (*c == '\\') c++;
            else if (*c == quote) literal = false;
        }
        if (!literal) continue;
        dspy_str s = DSPY_STR_INIT;
        for (const char *c = q; c < e; c++) {
            if (*c == '\\' && c + 1 < e) {
                c++;
                switch (*c) {
                case 'n': dspy_str_appendc(&s, '\n'); break;
                case 't': dspy_str_appendc(&s, '\t'); break;
                default: dspy_str_appendc(&s, *c); break;
                }
            } else {
                dspy_str_appendc(&s, *c);
            }
        }
        char *r = dspy_str_take(&s);
        if (!r) *nomem = true;
        return r;
    }
    return NULL;
}

dspy_status dspy_chat_template_parse(const char *j, const char *bos_token, dspy_chat_template **out) {
    *out = NULL;
    if (!j) return dspy_fail(DSPY_ERR_ARG, "chat template: no template text");
    if (strstr(j, "<|start_header_id|>") && strstr(j, "<|eot_id|>")) {
        if (strstr(j, "Cutting Knowledge Date")) return make(DSPY_CHAT_LLAMA3, bos_token, NULL, false, out);
        if (strstr(j, "loop.index0 == 0") && strstr(j, "bos_token + content"))
            return make(DSPY_CHAT_LLAMA3_0, bos_token, NULL, false, out);
    } else if (strstr(j, "<|im_start|>") && strstr(j, "<|im_end|>")) {
        if (strstr(j, "<think>"))
            return dspy_fail(DSPY_ERR_FORMAT,
                             "chat template: a ChatML template with <think> reasoning blocks (Qwen3 style) is not "
                             "supported; use a Qwen2/Qwen2.5-style template");
        bool nomem;
        char *sys = chatml_default_system(j, &nomem);
        if (nomem) return dspy_fail(DSPY_ERR_NOMEM, "chat template: out of memory");
        dspy_status st = make(DSPY_CHAT_CHATML, bos_token ? bos_token : "", sys, strstr(j, "tool_call") != NULL, out);
        free(sys);
        return st;
    }
    return dspy_fail(DSPY_ERR_FORMAT,
                     "chat template not recognised (it starts \"%.80s\"); dspy.c renders Llama 3.0, Llama "
                     "3.1/3.2 and ChatML (Qwen2/Qwen2.5) templates",
                     j);
}

static dspy_status read_json(const char *path, json_t **out) {
    *out = NULL;
    char *data;
    size_t n;
    dspy_status st = dspy_read_regular_file(path, (size_t)256 << 20, &data, &n);
    if (st != DSPY_OK) return st;
    json_error_t err;
    /* Integers as reals: configs hold model_max_length = 1e30, beyond jansson's integers. */
    json_t *j = json_loadb(data, n, JSON_DECODE_INT_AS_REAL, &err);
    free(data);
    if (!j)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: line %d column %d: invalid JSON: %s", path, err.line, err.column,
                         err.text);
    *out = j;
    return DSPY_OK;
}

static bool is_file(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* The template stored in a GGUF file (tokenizer.chat_template), with its bos token's text. */
static dspy_status load_gguf(const char *path, dspy_chat_template **out) {
    dspy_gguf *g;
    dspy_status st = dspy_gguf_open(path, &g);
    if (st) return st;
    const char *jinja = dspy_gguf_chat_template(g);
    st = jinja ? dspy_chat_template_parse(jinja, dspy_gguf_bos_text(g), out)
               : dspy_fail(DSPY_ERR_NOTFOUND, "%s: the GGUF file has no tokenizer.chat_template", path);
    if (st && jinja) st = dspy_fail_wrap(st, "%s", path);
    dspy_gguf_free(g);
    return st;
}

json_t *dspy_chat_template_from_config(json_t *tcfg) {
    json_t *ct = tcfg ? json_object_get(tcfg, "chat_template") : NULL;
    if (!json_is_array(ct)) return json_is_string(ct) ? ct : NULL;
    size_t i;
    json_t *e, *pick = NULL;
    json_array_foreach(ct, i, e) {
        const char *name = json_string_value(json_object_get(e, "name"));
        if (name && strcmp(name, "default") == 0) pick = json_object_get(e, "template");
    }
    return json_is_string(pick) ? pick : NULL;
}

dspy_status dspy_chat_template_load(const char *path, dspy_chat_template **out) {
    *out = NULL;
    dspy_status st = DSPY_OK;
    json_t *cfg = NULL;
    char *text = NULL;
    dspy_str jinja = DSPY_STR_INIT, config = DSPY_STR_INIT;
    const char *bos = NULL;
    struct stat sb;
    if (path && dspy_gguf_is_path(path)) return load_gguf(path, out);
    if (!path || stat(path, &sb) != 0)
        return dspy_fail(DSPY_ERR_NOTFOUND, "%s: no such file or directory (give a model directory, a "
                         "tokenizer_config.json or a .jinja file)", path ? path : "(null)");
    if (S_ISDIR(sb.st_mode)) {
        dspy_str_appendf(&jinja, "%s/chat_template.jinja", path);
        dspy_str_appendf(&config, "%s/tokenizer_config.json", path);
    } else if (ends_with(path, ".jinja")) {
        dspy_str_append(&jinja, path);
    } else {
        dspy_str_append(&config, path);
    }
    if (!dspy_str_ok(&jinja) || !dspy_str_ok(&config)) {
        st = dspy_fail(DSPY_ERR_NOMEM, "chat template: out of memory");
        goto done;
    }
    if (config.len && is_file(config.ptr)) {
        if ((st = read_json(config.ptr, &cfg)) != DSPY_OK) goto done;
        json_t *b = json_object_get(cfg, "bos_token");
        if (json_is_object(b)) b = json_object_get(b, "content");
        bos = json_is_string(b) ? json_string_value(b) : (json_is_null(b) ? "" : NULL);
    }
    const char *where;
    if (jinja.len && is_file(jinja.ptr)) {
        where = jinja.ptr;
        if ((st = dspy_read_regular_file(jinja.ptr, (size_t)16 << 20, &text, NULL)) != DSPY_OK) goto done;
    } else if (cfg) {
        where = config.ptr;
        json_t *ct = dspy_chat_template_from_config(cfg);
        if (!json_is_string(ct)) {
            st = dspy_fail(DSPY_ERR_FORMAT, "%s: no \"chat_template\" string (nor a chat_template.jinja beside it)",
                           config.ptr);
            goto done;
        }
        text = strdup(json_string_value(ct));
        if (!text) {
            st = dspy_fail(DSPY_ERR_NOMEM, "chat template: out of memory");
            goto done;
        }
    } else {
        st = dspy_fail(DSPY_ERR_NOTFOUND, "%s: no chat_template.jinja or tokenizer_config.json", path);
        goto done;
    }
    st = dspy_chat_template_parse(text, bos, out);
    if (st != DSPY_OK) dspy_fail_wrap(st, "%s", where);
done:
    json_decref(cfg);
    free(text);
    dspy_str_free(&jinja);
    dspy_str_free(&config);
    return st;
}

/* ---- rendering -------------------------------------------------------------------------- */

typedef struct {
    dspy_chat_span *v;
    size_t n, cap;
    bool oom;
} spanvec;

static void span_push(spanvec *s, size_t start, size_t end, size_t msg) {
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 8;
        dspy_chat_span *nv = realloc(s->v, nc * sizeof *nv);
        if (!nv) {
            s->oom = true;
            return;
        }
        s->v = nv;
        s->cap = nc;
    }
    s->v[s->n++] = (dspy_chat_span){start, end, msg};
}

static dspy_strv trimmed(const char *z) { return dspy_strv_strip(dspy_strv_of(z)); }

/* "<|start_header_id|>role<|end_header_id|>\n\n" + content|trim + "<|eot_id|>" */
static void llama_message(dspy_str *out, const dspy_chat_msg *m, size_t idx, spanvec *spans) {
    dspy_str_append(out, "<|start_header_id|>");
    dspy_str_append(out, m->role);
    dspy_str_append(out, "<|end_header_id|>\n\n");
    size_t start = out->len;
    dspy_str_appendv(out, trimmed(m->content));
    dspy_str_append(out, "<|eot_id|>");
    if (strcmp(m->role, "assistant") == 0) span_push(spans, start, out->len, idx);
}

dspy_status dspy_chat_render(const dspy_chat_template *t, const dspy_chat_msg *msgs, size_t n,
                             bool add_generation_prompt, const char *date_string, dspy_str *out,
                             dspy_chat_span **assistant_spans, size_t *nspans) {
    if (assistant_spans) *assistant_spans = NULL;
    if (nspans) *nspans = 0;
    if (!t || !out) return dspy_fail(DSPY_ERR_ARG, "chat render: needs a template and an output string");
    if (n == 0 || !msgs) return dspy_fail(DSPY_ERR_ARG, "chat render: the conversation has no messages");
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content)
            return dspy_fail(DSPY_ERR_ARG, "chat render: message %zu has no %s", i, msgs[i].role ? "content" : "role");
        const char *r = msgs[i].role;
        bool tool = strcmp(r, "tool") == 0 || strcmp(r, "ipython") == 0;
        if ((t->kind == DSPY_CHAT_LLAMA3 && tool) ||
            (t->kind == DSPY_CHAT_CHATML && t->tool_aware && strcmp(r, "system") != 0 && strcmp(r, "user") != 0 &&
             strcmp(r, "assistant") != 0))
            return dspy_fail(DSPY_ERR_ARG,
                             "chat render: message %zu has role '%s'; the %s template's tool messages are not "
                             "supported by dspy.c (use system, user and assistant)",
                             i, r, dspy_chat_template_name(t));
    }
    spanvec spans = {0};
    switch (t->kind) {
    case DSPY_CHAT_LLAMA3: {
        size_t first = 0;
        dspy_str_append(out, t->bos);
        dspy_str_append(out, "<|start_header_id|>system<|end_header_id|>\n\n");
        dspy_str_append(out, "Cutting Knowledge Date: December 2023\n");
        dspy_str_append(out, "Today Date: ");
        dspy_str_append(out, date_string ? date_string : "26 Jul 2024");
        dspy_str_append(out, "\n\n");
        if (strcmp(msgs[0].role, "system") == 0) {
            dspy_str_appendv(out, trimmed(msgs[0].content));
            first = 1;
        }
        dspy_str_append(out, "<|eot_id|>");
        for (size_t i = first; i < n; i++) llama_message(out, &msgs[i], i, &spans);
        if (add_generation_prompt) dspy_str_append(out, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    }
    case DSPY_CHAT_LLAMA3_0:
        for (size_t i = 0; i < n; i++) {
            if (i == 0) dspy_str_append(out, t->bos);
            llama_message(out, &msgs[i], i, &spans);
        }
        if (add_generation_prompt) dspy_str_append(out, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    case DSPY_CHAT_CHATML:
        dspy_str_append(out, t->bos);
        if (t->default_system && strcmp(msgs[0].role, "system") != 0) {
            dspy_str_append(out, "<|im_start|>system\n");
            dspy_str_append(out, t->default_system);
            dspy_str_append(out, "<|im_end|>\n");
        }
        for (size_t i = 0; i < n; i++) {
            dspy_str_append(out, "<|im_start|>");
            dspy_str_append(out, msgs[i].role);
            dspy_str_append(out, "\n");
            size_t start = out->len;
            dspy_str_append(out, msgs[i].content);
            dspy_str_append(out, "<|im_end|>");
            if (strcmp(msgs[i].role, "assistant") == 0) span_push(&spans, start, out->len, i);
            dspy_str_append(out, "\n");
        }
        if (add_generation_prompt) dspy_str_append(out, "<|im_start|>assistant\n");
        break;
    }
    if (!dspy_str_ok(out) || spans.oom) {
        free(spans.v);
        return dspy_fail(DSPY_ERR_NOMEM, "chat render: out of memory");
    }
    if (assistant_spans) {
        *assistant_spans = spans.v;
        if (!spans.v) *assistant_spans = malloc(sizeof(dspy_chat_span)); /* valid, empty */
        if (!*assistant_spans) return dspy_fail(DSPY_ERR_NOMEM, "chat render: out of memory");
    } else {
        free(spans.v);
    }
    if (nspans) *nspans = spans.n;
    return DSPY_OK;
}
