/* failures.c — quiet reporting of failed examples (see failures.h). */
#include "failures.h"

#include <stdlib.h>
#include <string.h>

#include "dspy/str.h"

#define SNIPPET_CHARS 80

dspy_status failure_log_init(failure_log *f, const dspy_dataset *ds) {
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    f->ds = ds;
    f->items = dspy_json_array();
    return f->items ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
}

static const char *reason_of(dspy_status st) {
    switch (st) {
    case DSPY_ERR_PARSE: return "unparseable answer";
    case DSPY_ERR_REMOTE: return "LM error";
    case DSPY_ERR_TIMEOUT: return "timeout";
    case DSPY_ERR_IO: return "connection error";
    case DSPY_ERR_CONTEXT: return "too long for the context";
    case DSPY_ERR_NOTFOUND: return "not found";
    default: return "error";
    }
}

void failure_log_add(void *user, const dspy_eval_failure *e) {
    failure_log *f = user;
    dspy_json *o = dspy_json_object();
    if (!o) return;
    dspy_json_set(o, "index", dspy_json_int((int64_t)e->index));
    dspy_json_set_str(o, "reason", reason_of(e->status));
    dspy_json_set_str(o, "status", dspy_status_name(e->status));
    dspy_json_set_str(o, "message", e->message ? e->message : "");
    dspy_json_set(o, "reply", e->lm_response ? dspy_json_string(e->lm_response) : dspy_json_null());
    const dspy_example *ex = f->ds ? dspy_dataset_get(f->ds, e->index) : NULL;
    if (ex) {
        dspy_str s = DSPY_STR_INIT;
        dspy_example_append_json(&s, ex, false);
        dspy_json *j = NULL;
        if (dspy_str_ok(&s) && dspy_json_parse(s.ptr, s.len, "example", &j) == DSPY_OK) dspy_json_set(o, "example", j);
        dspy_str_free(&s);
    }
    pthread_mutex_lock(&f->mu);
    if (e->status == DSPY_ERR_PARSE) f->n_parse++;
    else f->n_other++;
    dspy_json_append(f->items, o);
    pthread_mutex_unlock(&f->mu);
}

size_t failure_log_count(const failure_log *f) { return f->n_parse + f->n_other; }

static int by_index(const void *a, const void *b) {
    int64_t x = dspy_json_int_or(*(dspy_json *const *)a, "index", 0), y = dspy_json_int_or(*(dspy_json *const *)b, "index", 0);
    return x < y ? -1 : x > y;
}

/* The records sorted by example index (borrowed pointers, malloc'd array). */
static dspy_json **sorted(failure_log *f, size_t *n) {
    *n = dspy_json_size(f->items);
    dspy_json **v = malloc((*n ? *n : 1) * sizeof *v);
    if (!v) return NULL;
    for (size_t i = 0; i < *n; i++) v[i] = dspy_json_at(f->items, i);
    qsort(v, *n, sizeof *v, by_index);
    return v;
}

/* The first SNIPPET_CHARS characters of `s`, escaped, and "..." when cut. */
static void snippet(dspy_str *out, const char *s) {
    size_t chars = 0, i = 0, n = strlen(s);
    while (i < n && chars < SNIPPET_CHARS) {
        unsigned char c = (unsigned char)s[i];
        unsigned cp;
        int l = dspy_utf8_decode(s + i, n - i, &cp);
        if (c == '\n') dspy_str_append(out, "\\n");
        else if (c == '\r') dspy_str_append(out, "\\r");
        else if (c == '\t') dspy_str_append(out, "\\t");
        else if (c == '\\') dspy_str_append(out, "\\\\");
        else if (c == '"') dspy_str_append(out, "\\\"");
        else if (c < 0x20 || c == 0x7f || l <= 0) dspy_str_appendf(out, "\\x%02x", c);
        else dspy_str_appendn(out, s + i, (size_t)l);
        i += l > 0 ? (size_t)l : 1;
        chars++;
    }
    if (i < n) dspy_str_append(out, "...");
}

void failure_log_print(failure_log *f, FILE *out, const char *what, const char *details) {
    size_t n = 0;
    dspy_json **v = sorted(f, &n);
    if (!v || n == 0) {
        free(v);
        return;
    }
    dspy_str line = DSPY_STR_INIT;
    for (size_t i = 0; i < n; i++) {
        dspy_str_clear(&line);
        const char *reply = dspy_json_str_or(v[i], "reply", NULL);
        dspy_str_appendf(&line, "   #%lld %s: ", (long long)dspy_json_int_or(v[i], "index", 0),
                         dspy_json_str_or(v[i], "reason", "error"));
        if (reply) {
            dspy_str_appendc(&line, '"');
            snippet(&line, reply);
            dspy_str_appendc(&line, '"');
        } else {
            snippet(&line, dspy_json_str_or(v[i], "message", ""));
        }
        fprintf(out, "%s\n", dspy_str_ok(&line) ? dspy_str_cstr(&line) : "   (out of memory)");
    }
    fprintf(out, "   %zu %s example%s failed: %zu unparseable answer%s (scored as wrong), %zu other error%s%s%s\n", n, what,
            n == 1 ? "" : "s", f->n_parse, f->n_parse == 1 ? "" : "s", f->n_other, f->n_other == 1 ? "" : "s",
            details ? "; details in " : " (pass --out DIR to keep the details)", details ? details : "");
    fflush(out);
    dspy_str_free(&line);
    free(v);
}

dspy_status failure_log_save(failure_log *f, const char *path) {
    size_t n = 0;
    dspy_json **v = sorted(f, &n);
    if (!v) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_str s = DSPY_STR_INIT;
    for (size_t i = 0; i < n; i++) {
        dspy_json_dump(v[i], DSPY_JSON_COMPACT | DSPY_JSON_UTF8, &s);
        dspy_str_appendc(&s, '\n');
    }
    free(v);
    dspy_status st = dspy_str_ok(&s) ? dspy_write_file(path, s.ptr ? s.ptr : "", s.len)
                                     : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_str_free(&s);
    return st;
}

void failure_log_free(failure_log *f) {
    dspy_json_decref(f->items);
    pthread_mutex_destroy(&f->mu);
    memset(f, 0, sizeof *f);
}
