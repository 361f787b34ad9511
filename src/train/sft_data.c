/* sft_data.c — chat JSONL to labelled token sequences, and packing (include/dspy/sft_data.h).
 *
 * Each line is parsed with jansson (from the raw text the JSONL reader hands over), checked
 * message by message, rendered with the chat template (which reports the byte spans of the
 * assistant contents + end-of-turn tokens), encoded with byte offsets, and a token is labelled
 * when its first byte lies in one of those spans. Follows open-instruct's encode_sft_example
 * (what DSPy's train_sft_locally uses) for the choice of labelled tokens; packing follows the
 * intent of trl's packing without cross-example attention (segment ids, restarting positions).
 */
#include "dspy/sft_data.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dspy/jsonl.h"
#include "dspy/random.h"
#include "dspy/str.h"

typedef struct {
    int32_t *ids, *labels;
    int32_t n, n_labels;
    int64_t line;
} example;

struct dspy_sft_dataset {
    example *ex;
    size_t n, cap;
    dspy_sft_issue *iss;
    size_t n_iss, cap_iss;
    size_t n_lines;
    int64_t tokens, labels;
};

dspy_sft_params dspy_sft_params_default(void) {
    dspy_sft_params p = {.max_seq_length = 4096, .vocab_size = 0, .chat_date = NULL};
    return p;
}

const char *dspy_sft_issue_kind_name(dspy_sft_issue_kind k) {
    switch (k) {
    case DSPY_SFT_BAD_JSON: return "bad_json";
    case DSPY_SFT_BAD_SHAPE: return "bad_shape";
    case DSPY_SFT_UNKNOWN_ROLE: return "unknown_role";
    case DSPY_SFT_NO_ASSISTANT: return "no_assistant";
    case DSPY_SFT_TOO_LONG: return "too_long";
    case DSPY_SFT_BAD_TOKEN: return "bad_token";
    }
    return "?";
}

/* ---- loading ------------------------------------------------------------------------------ */

typedef struct {
    dspy_sft_dataset *ds;
    const dspy_tokenizer *tok;
    const dspy_chat_template *tpl;
    dspy_sft_params p;
    dspy_status oom; /* DSPY_ERR_NOMEM once an allocation failed */
} loader;

static dspy_status add_issue(loader *L, int64_t line, dspy_sft_issue_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static dspy_status add_issue(loader *L, int64_t line, dspy_sft_issue_kind kind, const char *fmt, ...) {
    dspy_sft_dataset *ds = L->ds;
    if (ds->n_iss == ds->cap_iss) {
        size_t nc = ds->cap_iss ? ds->cap_iss * 2 : 8;
        dspy_sft_issue *nv = realloc(ds->iss, nc * sizeof *nv);
        if (!nv) return L->oom = dspy_fail(DSPY_ERR_NOMEM, "sft data: out of memory");
        ds->iss = nv;
        ds->cap_iss = nc;
    }
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    int r = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (r < 0) return L->oom = dspy_fail(DSPY_ERR_NOMEM, "sft data: out of memory");
    ds->iss[ds->n_iss++] = (dspy_sft_issue){line, kind, msg};
    return DSPY_OK;
}

static void jsonl_error(void *ud, int64_t line, const char *message) {
    loader *L = ud;
    L->ds->n_lines++;
    add_issue(L, line, DSPY_SFT_BAD_JSON, "%s; each line must be one JSON object like "
                                          "{\"messages\": [{\"role\": \"user\", \"content\": \"...\"}, ...]}",
              message);
}

static const char *json_type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "a list";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* Renders, tokenizes and labels one checked conversation; adds it or an issue. */
static dspy_status add_conversation(loader *L, int64_t line, const dspy_chat_msg *msgs, size_t n) {
    dspy_str text = DSPY_STR_INIT;
    dspy_chat_span *spans = NULL;
    size_t nspans = 0, ntok = 0, *starts = NULL;
    int32_t *ids = NULL, *labels = NULL;
    dspy_status st = dspy_chat_render(L->tpl, msgs, n, false, L->p.chat_date, &text, &spans, &nspans);
    if (st == DSPY_ERR_ARG) {
        st = add_issue(L, line, DSPY_SFT_UNKNOWN_ROLE, "%s", dspy_errmsg());
        goto done;
    }
    if (st) goto done;
    st = dspy_tokenizer_encode_offsets(L->tok, text.ptr, text.len, false, true, &ids, &starts, &ntok);
    if (st) goto done;
    if (ntok > (size_t)L->p.max_seq_length) {
        st = add_issue(L, line, DSPY_SFT_TOO_LONG,
                       "the conversation is %zu tokens, more than max_seq_length=%d; it is skipped (not "
                       "truncated): raise max_seq_length or shorten the example",
                       ntok, L->p.max_seq_length);
        goto done;
    }
    labels = malloc((ntok ? ntok : 1) * sizeof *labels);
    if (!labels) {
        st = dspy_fail(DSPY_ERR_NOMEM, "sft data: out of memory");
        goto done;
    }
    int32_t nl = 0;
    size_t sp = 0;
    for (size_t t = 0; t < ntok; t++) {
        if (L->p.vocab_size > 0 && ids[t] >= L->p.vocab_size) {
            st = add_issue(L, line, DSPY_SFT_BAD_TOKEN,
                           "token %zu is id %d (%s), outside the model's vocabulary of %d: the tokenizer "
                           "does not match the model",
                           t, ids[t], dspy_tokenizer_id_to_token(L->tok, ids[t]) ? dspy_tokenizer_id_to_token(L->tok, ids[t]) : "?",
                           L->p.vocab_size);
            goto done;
        }
        while (sp < nspans && starts[t] >= spans[sp].end) sp++;
        bool in = sp < nspans && starts[t] >= spans[sp].start && starts[t] < spans[sp].end;
        labels[t] = in ? ids[t] : DSPY_SFT_IGNORE;
        nl += in;
    }
    if (nl == 0) { /* only possible when an assistant span holds no token start */
        st = add_issue(L, line, DSPY_SFT_NO_ASSISTANT, "no token of the conversation falls in an assistant message");
        goto done;
    }
    dspy_sft_dataset *ds = L->ds;
    if (ds->n == ds->cap) {
        size_t nc = ds->cap ? ds->cap * 2 : 16;
        example *nv = realloc(ds->ex, nc * sizeof *nv);
        if (!nv) {
            st = dspy_fail(DSPY_ERR_NOMEM, "sft data: out of memory");
            goto done;
        }
        ds->ex = nv;
        ds->cap = nc;
    }
    ds->ex[ds->n++] = (example){ids, labels, (int32_t)ntok, nl, line};
    ds->tokens += (int64_t)ntok;
    ds->labels += nl;
    ids = labels = NULL;
done:
    free(ids);
    free(labels);
    free(starts);
    free(spans);
    dspy_str_free(&text);
    return st;
}

/* Checks one line's structure; adds an issue for the first problem found. */
static dspy_status one_line(void *ud, const dspy_jsonl_line *jl) {
    loader *L = ud;
    L->ds->n_lines++;
    int64_t line = dspy_jsonl_line_number(jl);
    size_t len;
    const char *raw = dspy_jsonl_line_text(jl, &len);
    json_error_t err;
    json_t *root = json_loadb(raw, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!root) return add_issue(L, line, DSPY_SFT_BAD_JSON, "invalid JSON at column %d: %s", err.column, err.text);
    dspy_status st = DSPY_OK;
    dspy_chat_msg *msgs = NULL;
    json_t *m = json_object_get(root, "messages");
    if (!m) {
        st = add_issue(L, line, DSPY_SFT_BAD_SHAPE,
                       "no \"messages\" key; expected {\"messages\": [{\"role\": ..., \"content\": ...}, ...]}");
        goto done;
    }
    if (!json_is_array(m) || json_array_size(m) == 0) {
        st = add_issue(L, line, DSPY_SFT_BAD_SHAPE, "\"messages\" is %s; expected a non-empty list of messages",
                       json_is_array(m) ? "an empty list" : json_type_name(m));
        goto done;
    }
    size_t n = json_array_size(m);
    msgs = calloc(n, sizeof *msgs);
    if (!msgs) {
        st = dspy_fail(DSPY_ERR_NOMEM, "sft data: out of memory");
        goto done;
    }
    bool has_assistant = false;
    for (size_t i = 0; i < n; i++) {
        json_t *msg = json_array_get(m, i);
        if (!json_is_object(msg)) {
            st = add_issue(L, line, DSPY_SFT_BAD_SHAPE, "message %zu is %s; expected {\"role\": ..., \"content\": ...}",
                           i, json_type_name(msg));
            goto done;
        }
        json_t *role = json_object_get(msg, "role"), *content = json_object_get(msg, "content");
        if (!json_is_string(role) || !json_is_string(content)) {
            const char *which = !json_is_string(role) ? "role" : "content";
            json_t *v = !json_is_string(role) ? role : content;
            st = add_issue(L, line, DSPY_SFT_BAD_SHAPE, "message %zu: \"%s\" is %s; expected a string", i, which,
                           v ? json_type_name(v) : "missing");
            goto done;
        }
        const char *r = json_string_value(role);
        if (strlen(r) != json_string_length(role) || strlen(json_string_value(content)) != json_string_length(content)) {
            st = add_issue(L, line, DSPY_SFT_BAD_SHAPE, "message %zu: a NUL character (\\u0000) in \"%s\"", i,
                           strlen(r) != json_string_length(role) ? "role" : "content");
            goto done;
        }
        if (strcmp(r, "system") != 0 && strcmp(r, "user") != 0 && strcmp(r, "assistant") != 0) {
            st = add_issue(L, line, DSPY_SFT_UNKNOWN_ROLE,
                           "message %zu has role '%s'; the roles are system, user and assistant", i, r);
            goto done;
        }
        has_assistant |= strcmp(r, "assistant") == 0;
        msgs[i] = (dspy_chat_msg){r, json_string_value(content)};
    }
    if (!has_assistant) {
        st = add_issue(L, line, DSPY_SFT_NO_ASSISTANT,
                       "no assistant message: the loss is on assistant tokens only, so there is nothing to learn");
        goto done;
    }
    st = add_conversation(L, line, msgs, n);
done:
    free(msgs);
    json_decref(root);
    if (!st && L->oom) st = L->oom;
    return st;
}

void dspy_sft_free(dspy_sft_dataset *ds) {
    if (!ds) return;
    for (size_t i = 0; i < ds->n; i++) {
        free(ds->ex[i].ids);
        free(ds->ex[i].labels);
    }
    for (size_t i = 0; i < ds->n_iss; i++) free((char *)(uintptr_t)ds->iss[i].message);
    free(ds->ex);
    free(ds->iss);
    free(ds);
}

static dspy_status load_common(const char *path, const char *data, size_t len, const char *name,
                               const dspy_tokenizer *tok, const dspy_chat_template *tpl, const dspy_sft_params *p,
                               dspy_sft_dataset **out) {
    *out = NULL;
    if (!tok || !tpl) return dspy_fail(DSPY_ERR_ARG, "sft data: needs a tokenizer and a chat template");
    loader L = {.tok = tok, .tpl = tpl, .p = p ? *p : dspy_sft_params_default()};
    if (L.p.max_seq_length < 2)
        return dspy_fail(DSPY_ERR_ARG, "sft data: max_seq_length is %d; it must be at least 2", L.p.max_seq_length);
    L.ds = calloc(1, sizeof *L.ds);
    if (!L.ds) return dspy_fail(DSPY_ERR_NOMEM, "sft data: out of memory");
    dspy_jsonl_read_params rp = dspy_jsonl_read_params_default();
    rp.keep_going = true;
    rp.on_error = jsonl_error;
    rp.error_ud = &L;
    size_t n_bad = 0;
    dspy_status st = path ? dspy_jsonl_read(path, &rp, one_line, &L, &n_bad)
                          : dspy_jsonl_parse(data, len, name, &rp, one_line, &L, &n_bad);
    if (!st && L.oom) st = L.oom;
    if (st) {
        dspy_sft_free(L.ds);
        return st;
    }
    *out = L.ds;
    return DSPY_OK;
}

dspy_status dspy_sft_load(const char *path, const dspy_tokenizer *tok, const dspy_chat_template *tpl,
                          const dspy_sft_params *p, dspy_sft_dataset **out) {
    if (!path) {
        *out = NULL;
        return dspy_fail(DSPY_ERR_ARG, "sft data: no path");
    }
    struct stat sb;
    if (stat(path, &sb) != 0) {
        *out = NULL;
        return dspy_fail(DSPY_ERR_NOTFOUND, "%s: no such training data file", path);
    }
    return load_common(path, NULL, 0, NULL, tok, tpl, p, out);
}

dspy_status dspy_sft_parse(const char *data, size_t len, const char *name, const dspy_tokenizer *tok,
                           const dspy_chat_template *tpl, const dspy_sft_params *p, dspy_sft_dataset **out) {
    return load_common(NULL, data ? data : "", data ? len : 0, name, tok, tpl, p, out);
}

size_t dspy_sft_count(const dspy_sft_dataset *ds) { return ds ? ds->n : 0; }

dspy_sft_example dspy_sft_at(const dspy_sft_dataset *ds, size_t i) {
    const example *e = &ds->ex[i];
    return (dspy_sft_example){e->ids, e->labels, e->n, e->n_labels, e->line};
}

size_t dspy_sft_n_issues(const dspy_sft_dataset *ds) { return ds ? ds->n_iss : 0; }

const dspy_sft_issue *dspy_sft_issue_at(const dspy_sft_dataset *ds, size_t i) {
    return &ds->iss[i];
}

size_t dspy_sft_n_lines(const dspy_sft_dataset *ds) { return ds ? ds->n_lines : 0; }
int64_t dspy_sft_total_tokens(const dspy_sft_dataset *ds) { return ds ? ds->tokens : 0; }
int64_t dspy_sft_total_labels(const dspy_sft_dataset *ds) { return ds ? ds->labels : 0; }

/* ---- packing ------------------------------------------------------------------------------ */

typedef struct {
    size_t off;  /* first token in the pack's arrays */
    int32_t T, n_labels, n_examples;
} seqinfo;

struct dspy_sft_pack {
    int32_t *ids, *pos, *labels, *seg, *targets;
    seqinfo *seqs;
    size_t n;
};

/* Walks the next-fit packing: counts sequences and tokens, and (seq_of non-NULL) records the
 * sequence of each example. */
static dspy_status plan(const dspy_sft_dataset *ds, const size_t *order, size_t n, int32_t max_len, bool packing,
                        size_t *nseq, size_t *ntok, size_t *seq_of /* (n) or NULL */) {
    size_t cur = 0, count = 0, tokens = 0;
    for (size_t k = 0; k < n; k++) {
        if (order[k] >= ds->n)
            return dspy_fail(DSPY_ERR_ARG, "sft pack: example index %zu is out of range (%zu examples)", order[k],
                             ds->n);
        size_t len = (size_t)ds->ex[order[k]].n;
        if (len > (size_t)max_len)
            return dspy_fail(DSPY_ERR_ARG, "sft pack: example at line %lld is %zu tokens, longer than max_len=%d",
                             (long long)ds->ex[order[k]].line, len, max_len);
        if (count == 0 || !packing || cur + len > (size_t)max_len) {
            count++;
            cur = 0;
        }
        cur += len;
        tokens += len;
        if (seq_of) seq_of[k] = count - 1;
    }
    *nseq = count;
    *ntok = tokens;
    return DSPY_OK;
}

dspy_status dspy_sft_pack_count_only(const dspy_sft_dataset *ds, const size_t *order, size_t n, int32_t max_len,
                                     bool packing, size_t *count) {
    size_t ntok = 0;
    *count = 0;
    return plan(ds, order, n, max_len, packing, count, &ntok, NULL);
}

void dspy_sft_pack_free(dspy_sft_pack *pk) {
    if (!pk) return;
    free(pk->ids);
    free(pk->pos);
    free(pk->labels);
    free(pk->seg);
    free(pk->targets);
    free(pk->seqs);
    free(pk);
}

dspy_status dspy_sft_pack_new(const dspy_sft_dataset *ds, const size_t *order, size_t n, int32_t max_len, bool packing,
                              dspy_sft_pack **out) {
    *out = NULL;
    size_t nseq = 0, ntok = 0;
    size_t *seq_of = malloc((n ? n : 1) * sizeof *seq_of);
    if (!seq_of) return dspy_fail(DSPY_ERR_NOMEM, "sft pack: out of memory");
    dspy_status st = plan(ds, order, n, max_len, packing, &nseq, &ntok, seq_of);
    if (st) {
        free(seq_of);
        return st;
    }
    dspy_sft_pack *pk = calloc(1, sizeof *pk);
    size_t nt = ntok ? ntok : 1;
    if (pk) {
        pk->ids = malloc(nt * sizeof(int32_t));
        pk->pos = malloc(nt * sizeof(int32_t));
        pk->labels = malloc(nt * sizeof(int32_t));
        pk->seg = malloc(nt * sizeof(int32_t));
        pk->targets = malloc(nt * sizeof(int32_t));
        pk->seqs = calloc(nseq ? nseq : 1, sizeof(seqinfo));
    }
    if (!pk || !pk->ids || !pk->pos || !pk->labels || !pk->seg || !pk->targets || !pk->seqs) {
        free(seq_of);
        dspy_sft_pack_free(pk);
        return dspy_fail(DSPY_ERR_NOMEM, "sft pack: out of memory");
    }
    pk->n = nseq;
    size_t off = 0;
    for (size_t k = 0; k < n; k++) {
        seqinfo *s = &pk->seqs[seq_of[k]];
        if (s->T == 0) s->off = off;
        const example *e = &ds->ex[order[k]];
        for (int32_t t = 0; t < e->n; t++) {
            size_t j = off + (size_t)t;
            pk->ids[j] = e->ids[t];
            pk->pos[j] = t;
            pk->labels[j] = t == 0 ? DSPY_SFT_IGNORE : e->labels[t];
            pk->seg[j] = s->n_examples;
            pk->targets[j] = t + 1 < e->n ? e->labels[t + 1] : DSPY_SFT_IGNORE;
            s->n_labels += pk->labels[j] != DSPY_SFT_IGNORE;
        }
        s->T += e->n;
        s->n_examples++;
        off += (size_t)e->n;
    }
    free(seq_of);
    *out = pk;
    return DSPY_OK;
}

size_t dspy_sft_pack_count(const dspy_sft_pack *pk) { return pk ? pk->n : 0; }

dspy_sft_seq dspy_sft_pack_at(const dspy_sft_pack *pk, size_t i) {
    const seqinfo *s = &pk->seqs[i];
    return (dspy_sft_seq){pk->ids + s->off,     pk->pos + s->off, pk->labels + s->off, pk->seg + s->off,
                          pk->targets + s->off, s->T,             s->n_labels,         s->n_examples};
}

void dspy_sft_epoch_order(const dspy_sft_dataset *ds, uint64_t seed, int64_t epoch, size_t *order) {
    size_t n = ds->n;
    for (size_t i = 0; i < n; i++) order[i] = i;
    dspy_pyrandom r;
    dspy_pyrandom_seed(&r, seed + (uint64_t)epoch);
    dspy_pyrandom_shuffle(&r, order, n, sizeof *order);
}
