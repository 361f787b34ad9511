/* jsonl.c — JSON Lines reader and writer (see include/dspy/jsonl.h).
 *
 * Reader: lines come from memory or from getline(); each is checked for UTF-8, parsed with
 * jansson (JSON_DECODE_ANY, so the "not an object" error is ours and clear) and passed on.
 * Writer: compact Python-compatible rendering (dspy/json.h, no ensure_ascii), one write() per line.
 */
#include "dspy/jsonl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dspy/json.h"
#include "dspy/str.h"
#include "example_internal.h"

struct dspy_jsonl_line {
    int64_t number;
    const char *text;
    size_t len;
    json_t *value;
};

struct dspy_jsonl_writer {
    int fd;
    char *path;
    dspy_str buf;
};

typedef struct {
    const char *name;
    dspy_jsonl_read_params p;
    dspy_jsonl_line_fn fn;
    void *ud;
    size_t n_bad;
    int64_t first_bad_line;
    dspy_str first_msg;
} reader;

dspy_jsonl_read_params dspy_jsonl_read_params_default(void) {
    dspy_jsonl_read_params p = {0};
    return p;
}

int64_t dspy_jsonl_line_number(const dspy_jsonl_line *line) { return line->number; }

const char *dspy_jsonl_line_text(const dspy_jsonl_line *line, size_t *len) {
    if (len) *len = line->len;
    return line->text;
}

const dspy_value *dspy_jsonl_line_value(const dspy_jsonl_line *line) {
    return dspy_value_of_json(line->value);
}

dspy_status dspy_jsonl_line_example(const dspy_jsonl_line *line, dspy_example **out) {
    *out = NULL;
    if (!json_is_object(line->value))
        return dspy_fail(DSPY_ERR_FORMAT, "line %lld: expected a JSON object",
                         (long long)line->number);
    return dspy_example_from_json_object(line->value, out);
}

static const char *type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* Records a bad line; returns non-OK when reading must stop. */
static dspy_status bad_line(reader *r, int64_t lineno, const char *msg) {
    r->n_bad++;
    if (r->p.on_error) r->p.on_error(r->p.error_ud, lineno, msg);
    if (r->n_bad == 1) {
        r->first_bad_line = lineno;
        dspy_str_append(&r->first_msg, msg);
    }
    if (!r->p.keep_going)
        return dspy_fail(DSPY_ERR_FORMAT, "%s: line %lld: %s", r->name, (long long)lineno, msg);
    if (r->p.max_errors && r->n_bad >= r->p.max_errors)
        return dspy_fail(DSPY_ERR_FORMAT,
                         "%s: %zu bad lines, stopped at max_errors=%zu; the first is line %lld: %s",
                         r->name, r->n_bad, r->p.max_errors, (long long)r->first_bad_line,
                         dspy_str_cstr(&r->first_msg));
    return DSPY_OK;
}

static dspy_status one_line(reader *r, const char *text, size_t len, int64_t lineno) {
    if (len && text[len - 1] == '\r') len--;
    size_t k = 0;
    while (k < len && (text[k] == ' ' || text[k] == '\t' || text[k] == '\r')) k++;
    if (k == len) return DSPY_OK;
    char msg[256];
    size_t bad;
    if (!dspy_utf8_valid(text, len, &bad)) {
        snprintf(msg, sizeof msg, "invalid UTF-8 at byte %zu of the line (value 0x%02X)", bad + 1,
                 (unsigned)(unsigned char)text[bad]);
        return bad_line(r, lineno, msg);
    }
    json_error_t err;
    json_t *v = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!v) {
        snprintf(msg, sizeof msg, "invalid JSON at column %d: %s", err.column, err.text);
        return bad_line(r, lineno, msg);
    }
    if (!r->p.allow_non_object && !json_is_object(v)) {
        snprintf(msg, sizeof msg, "expected a JSON object, got %s", type_name(v));
        json_decref(v);
        return bad_line(r, lineno, msg);
    }
    dspy_jsonl_line line = {lineno, text, len, v};
    dspy_status st = r->fn ? r->fn(r->ud, &line) : DSPY_OK;
    json_decref(v);
    return st;
}

static dspy_status reader_init(reader *r, const char *name, const dspy_jsonl_read_params *p,
                               dspy_jsonl_line_fn fn, void *ud, size_t *n_bad) {
    memset(r, 0, sizeof *r);
    r->name = name ? name : "<jsonl>";
    r->p = p ? *p : dspy_jsonl_read_params_default();
    r->fn = fn;
    r->ud = ud;
    if (n_bad) *n_bad = 0;
    if (r->p.keep_going && !r->p.on_error && !n_bad)
        return dspy_fail(DSPY_ERR_ARG, "%s: keep_going needs on_error or n_bad to report bad lines",
                         r->name);
    return DSPY_OK;
}

static dspy_status reader_done(reader *r, dspy_status st, size_t *n_bad) {
    if (n_bad) *n_bad = r->n_bad;
    dspy_str_free(&r->first_msg);
    return st;
}

dspy_status dspy_jsonl_parse(const char *data, size_t len, const char *name,
                             const dspy_jsonl_read_params *p, dspy_jsonl_line_fn fn, void *ud,
                             size_t *n_bad) {
    reader r;
    dspy_status st = reader_init(&r, name, p, fn, ud, n_bad);
    if (st) return st;
    size_t pos = 0;
    int64_t lineno = 0;
    while (!st && pos < len) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - data) : len;
        st = one_line(&r, data + pos, end - pos, ++lineno);
        pos = end + 1;
    }
    return reader_done(&r, st, n_bad);
}

dspy_status dspy_jsonl_read(const char *path, const dspy_jsonl_read_params *p,
                            dspy_jsonl_line_fn fn, void *ud, size_t *n_bad) {
    reader r;
    dspy_status st = reader_init(&r, path, p, fn, ud, n_bad);
    if (st) return st;
    FILE *f = fopen(path, "rb");
    if (!f) return reader_done(&r, dspy_fail(DSPY_ERR_IO, "%s: cannot open: %s", path, strerror(errno)), n_bad);
    char *buf = NULL;
    size_t cap = 0;
    int64_t lineno = 0;
    ssize_t got;
    errno = 0;
    while (!st && (got = getline(&buf, &cap, f)) >= 0) {
        size_t n = (size_t)got;
        if (n && buf[n - 1] == '\n') n--;
        st = one_line(&r, buf, n, ++lineno);
        errno = 0;
    }
    if (!st && ferror(f)) st = dspy_fail(DSPY_ERR_IO, "%s: read error after line %lld: %s", path,
                                         (long long)lineno, strerror(errno ? errno : EIO));
    free(buf);
    fclose(f);
    return reader_done(&r, st, n_bad);
}

static dspy_status collect(void *ud, const dspy_jsonl_line *line) {
    dspy_example *ex;
    dspy_status st = dspy_jsonl_line_example(line, &ex);
    return st ? st : dspy_dataset_append((dspy_dataset *)ud, ex);
}

dspy_status dspy_jsonl_load_examples(const char *path, const dspy_jsonl_read_params *p,
                                     dspy_dataset **out, size_t *n_bad) {
    dspy_status st = dspy_dataset_new(out);
    if (st) return st;
    dspy_jsonl_read_params q = p ? *p : dspy_jsonl_read_params_default();
    q.allow_non_object = false;
    st = dspy_jsonl_read(path, &q, collect, *out, n_bad);
    if (st) {
        dspy_dataset_free(*out);
        *out = NULL;
    }
    return st;
}

/* ---- writing --------------------------------------------------------------------------- */

dspy_status dspy_jsonl_writer_open(const char *path, bool truncate, dspy_jsonl_writer **out) {
    *out = NULL;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0644);
    if (fd < 0) return dspy_fail(DSPY_ERR_IO, "%s: cannot open for writing: %s", path, strerror(errno));
    dspy_jsonl_writer *w = calloc(1, sizeof *w);
    char *pc = strdup(path);
    if (!w || !pc) {
        free(w);
        free(pc);
        close(fd);
        return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory opening a JSONL writer", path);
    }
    w->fd = fd;
    w->path = pc;
    *out = w;
    return DSPY_OK;
}

/* Writes w->buf (one line, newline included) with as few write() calls as the kernel allows. */
static dspy_status flush_line(dspy_jsonl_writer *w) {
    if (!dspy_str_ok(&w->buf)) {
        dspy_str_free(&w->buf);
        return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory rendering a JSONL line", w->path);
    }
    size_t off = 0;
    while (off < w->buf.len) {
        ssize_t k = write(w->fd, w->buf.ptr + off, w->buf.len - off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            dspy_str_clear(&w->buf);
            return dspy_fail(DSPY_ERR_IO, "%s: write failed: %s", w->path,
                             k < 0 ? strerror(errno) : "no progress");
        }
        off += (size_t)k;
    }
    dspy_str_clear(&w->buf);
    return DSPY_OK;
}

dspy_status dspy_jsonl_writer_write_example(dspy_jsonl_writer *w, const dspy_example *ex,
                                            bool include_dspy) {
    dspy_str_clear(&w->buf);
    dspy_example_append_json(&w->buf, ex, include_dspy);
    dspy_str_appendc(&w->buf, '\n');
    return flush_line(w);
}

dspy_status dspy_jsonl_writer_write_json(dspy_jsonl_writer *w, const char *json, size_t len) {
    json_error_t err;
    json_t *v = json_loadb(json, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!v)
        return dspy_fail(DSPY_ERR_ARG, "%s: not valid JSON (column %d: %s)", w->path, err.column,
                         err.text);
    if (!json_is_object(v)) {
        dspy_status st = dspy_fail(DSPY_ERR_ARG, "%s: a JSONL line must be a JSON object, got %s",
                                   w->path, type_name(v));
        json_decref(v);
        return st;
    }
    dspy_str_clear(&w->buf);
    if (dspy_json_dump((const dspy_json *)v, DSPY_JSON_COMPACT | DSPY_JSON_UTF8, &w->buf)) w->buf.failed = true;
    json_decref(v);
    dspy_str_appendc(&w->buf, '\n');
    return flush_line(w);
}

dspy_status dspy_jsonl_writer_close(dspy_jsonl_writer *w) {
    if (!w) return DSPY_OK;
    dspy_status st = DSPY_OK;
    if (close(w->fd) != 0) st = dspy_fail(DSPY_ERR_IO, "%s: close failed: %s", w->path, strerror(errno));
    dspy_str_free(&w->buf);
    free(w->path);
    free(w);
    return st;
}

dspy_status dspy_jsonl_write_examples(const char *path, const dspy_dataset *ds, bool include_dspy) {
    dspy_str s = DSPY_STR_INIT;
    for (size_t i = 0; i < dspy_dataset_len(ds); i++) {
        dspy_example_append_json(&s, dspy_dataset_get(ds, i), include_dspy);
        dspy_str_appendc(&s, '\n');
    }
    if (!dspy_str_ok(&s)) {
        dspy_str_free(&s);
        return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory rendering JSONL", path);
    }
    dspy_status st = dspy_write_file(path, s.ptr ? s.ptr : "", s.len);
    dspy_str_free(&s);
    return st;
}
