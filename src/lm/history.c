/* history.c — dspy/history.h: bounded entry FIFOs and pretty_print_history.
 *
 * A history is a ring of JSON object references under a mutex. Rendering reproduces DSPy 3.3.1
 * dspy/utils/inspect_history.py (spec dspy_behaviour.md §7): every Python print() is written
 * out as its text plus "\n", so the byte layout is exact. Python semantics used: str.strip()
 * (Unicode whitespace), str.capitalize() on ASCII roles, history[-n:] slicing.
 */
#include "dspy/history.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct dspy_history {
    pthread_mutex_t lock;
    size_t max;      /* 0 = unbounded */
    dspy_json **buf; /* ring of cap slots */
    size_t cap, start, len;
};

dspy_history *dspy_history_new(size_t max_size) {
    dspy_history *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    pthread_mutex_init(&h->lock, NULL);
    h->max = max_size;
    return h;
}

static void drop_oldest_locked(dspy_history *h, dspy_json **dropped, size_t *ndropped) {
    dropped[(*ndropped)++] = h->buf[h->start];
    h->buf[h->start] = NULL;
    h->start = (h->start + 1) % h->cap;
    h->len--;
}

void dspy_history_free(dspy_history *h) {
    if (!h) return;
    dspy_history_clear(h);
    free(h->buf);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

static bool grow_locked(dspy_history *h) {
    size_t ncap = h->cap ? h->cap * 2 : 16;
    if (h->max && ncap > h->max) ncap = h->max;
    dspy_json **nb = malloc(ncap * sizeof *nb);
    if (!nb) return false;
    for (size_t i = 0; i < h->len; i++) nb[i] = h->buf[(h->start + i) % h->cap];
    free(h->buf);
    h->buf = nb;
    h->cap = ncap;
    h->start = 0;
    return true;
}

dspy_status dspy_history_append(dspy_history *h, dspy_json *entry) {
    if (!entry || dspy_json_typeof(entry) != DSPY_JSON_OBJECT)
        return dspy_fail(DSPY_ERR_ARG, "history: an entry must be a JSON object");
    dspy_json *dropped[1];
    size_t ndropped = 0;
    dspy_status st = DSPY_OK;
    pthread_mutex_lock(&h->lock);
    if (h->max && h->len >= h->max) drop_oldest_locked(h, dropped, &ndropped);
    if (h->len == h->cap && !grow_locked(h)) {
        st = dspy_fail(DSPY_ERR_NOMEM, "history: out of memory");
    } else {
        h->buf[(h->start + h->len) % h->cap] = dspy_json_incref(entry);
        h->len++;
    }
    pthread_mutex_unlock(&h->lock);
    for (size_t i = 0; i < ndropped; i++) dspy_json_decref(dropped[i]);
    return st;
}

size_t dspy_history_len(dspy_history *h) {
    pthread_mutex_lock(&h->lock);
    size_t n = h->len;
    pthread_mutex_unlock(&h->lock);
    return n;
}

dspy_json *dspy_history_at(dspy_history *h, size_t i) {
    dspy_json *v = NULL;
    pthread_mutex_lock(&h->lock);
    if (i < h->len) v = dspy_json_incref(h->buf[(h->start + i) % h->cap]);
    pthread_mutex_unlock(&h->lock);
    return v;
}

dspy_json *dspy_history_last(dspy_history *h, int32_t n) {
    dspy_json *arr = dspy_json_array();
    if (!arr) return NULL;
    pthread_mutex_lock(&h->lock);
    /* Python history[-n:]: start = -n, negative indices count from the end, then clamp. */
    int64_t len = (int64_t)h->len, start = -(int64_t)n;
    if (start < 0) start += len;
    if (start < 0) start = 0;
    if (start > len) start = len;
    bool ok = true;
    for (int64_t i = start; i < len && ok; i++)
        ok = dspy_json_append(arr, dspy_json_incref(h->buf[(h->start + (size_t)i) % h->cap])) == DSPY_OK;
    pthread_mutex_unlock(&h->lock);
    if (!ok) {
        dspy_json_decref(arr);
        return NULL;
    }
    return arr;
}

void dspy_history_clear(dspy_history *h) {
    pthread_mutex_lock(&h->lock);
    size_t n = h->len, cap = h->cap, start = h->start;
    dspy_json **buf = h->buf;
    h->buf = NULL;
    h->cap = h->len = h->start = 0;
    pthread_mutex_unlock(&h->lock);
    for (size_t i = 0; i < n; i++) dspy_json_decref(buf[(start + i) % cap]);
    free(buf);
}

void dspy_history_set_max_size(dspy_history *h, size_t max_size) {
    pthread_mutex_lock(&h->lock);
    h->max = max_size;
    while (max_size && h->len > max_size) {
        dspy_json *v = h->buf[h->start];
        h->buf[h->start] = NULL;
        h->start = (h->start + 1) % h->cap;
        h->len--;
        dspy_json_decref(v);
    }
    pthread_mutex_unlock(&h->lock);
}

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static dspy_history *g_history;
static atomic_bool g_enabled = true;

static void global_init(void) { g_history = dspy_history_new(10000); }

dspy_history *dspy_history_global(void) {
    pthread_once(&g_once, global_init);
    DSPY_ASSERT(g_history != NULL);
    return g_history;
}

void dspy_history_set_enabled(bool enabled) { atomic_store(&g_enabled, enabled); }
bool dspy_history_enabled(void) { return atomic_load(&g_enabled); }

/* ---- rendering -------------------------------------------------------------------------- */

typedef struct pp {
    dspy_str *out;
    bool colors;
} pp;

/* DSPy's _red/_blue/_green(text) followed by print(): colour codes around the text, then the
 * helper's own "\n" and print's "\n" (or only print's when end=""). */
static void colored(pp *p, const char *code, dspy_strv text, bool helper_newline) {
    if (p->colors) dspy_str_append(p->out, code);
    dspy_str_appendv(p->out, text);
    if (p->colors) dspy_str_append(p->out, "\x1b[0m");
    if (helper_newline) dspy_str_appendc(p->out, '\n');
    dspy_str_appendc(p->out, '\n');
}
#define RED "\x1b[31m"
#define BLUE "\x1b[34m"
#define GREEN "\x1b[32m"

static void print_line(pp *p, dspy_strv text) {
    dspy_str_appendv(p->out, text);
    dspy_str_appendc(p->out, '\n');
}

static dspy_strv strip_str(const dspy_json *s) {
    return dspy_strv_strip(dspy_strv_make(dspy_json_str(s), dspy_json_strlen(s)));
}

static void render_part(pp *p, const dspy_json *c) {
    const char *type = dspy_json_str_or(c, "type", "");
    dspy_str tmp = DSPY_STR_INIT;
    if (strcmp(type, "text") == 0) {
        print_line(p, strip_str(dspy_json_get(c, "text")));
    } else if (strcmp(type, "image_url") == 0) {
        const char *url = dspy_json_str_or(dspy_json_get(c, "image_url"), "url", "");
        const char *b64 = strstr(url, "base64,");
        if (strstr(url, "base64")) {
            /* f"<{url.split('base64,')[0]}base64,<IMAGE BASE 64 ENCODED({len(split[1])})>" */
            size_t pre = b64 ? (size_t)(b64 - url) : strlen(url);
            size_t n = 0;
            if (b64) { /* len() counts code points of split[1] (up to the next "base64,") */
                const char *s = b64 + 7, *e = strstr(s, "base64,");
                if (!e) e = s + strlen(s);
                for (const char *q = s; q < e; q++) n += ((unsigned char)*q & 0xC0) != 0x80;
            }
            dspy_str_appendc(&tmp, '<');
            dspy_str_appendn(&tmp, url, pre);
            dspy_str_appendf(&tmp, "base64,<IMAGE BASE 64 ENCODED(%zu)>", n);
        } else {
            dspy_str_appendf(&tmp, "<image_url: %s>", url);
        }
        colored(p, BLUE, dspy_strv_strip(dspy_strv_make(tmp.ptr ? tmp.ptr : "", tmp.len)), true);
    } else if (strcmp(type, "input_audio") == 0) {
        const dspy_json *a = dspy_json_get(c, "input_audio");
        dspy_str_appendf(&tmp, "<audio format='%s' base64-encoded, length=%zu>", dspy_json_str_or(a, "format", ""),
                         dspy_json_strlen(dspy_json_get(a, "data")));
        colored(p, BLUE, dspy_strv_strip(dspy_strv_make(tmp.ptr, tmp.len)), true);
    } else if (strcmp(type, "file") == 0 || strcmp(type, "input_file") == 0) {
        const dspy_json *f = dspy_json_get(c, "file");
        if (!f) f = dspy_json_get(c, "input_file");
        dspy_str_appendf(&tmp, "<file: name:%s, id:%s, data_length:%zu>", dspy_json_str_or(f, "filename", ""),
                         dspy_json_str_or(f, "file_id", ""), dspy_json_strlen(dspy_json_get(f, "file_data")));
        colored(p, BLUE, dspy_strv_strip(dspy_strv_make(tmp.ptr, tmp.len)), true);
    }
    dspy_str_free(&tmp);
}

static dspy_status render_entry(pp *p, const dspy_json *item, size_t index) {
    const dspy_json *messages = dspy_json_get(item, "messages");
    const dspy_json *outputs = dspy_json_get(item, "outputs");
    if (!outputs || dspy_json_typeof(outputs) != DSPY_JSON_ARRAY)
        return dspy_fail(DSPY_ERR_ARG, "inspect_history: entry %zu has no \"outputs\" list", index);
    dspy_json *fallback = NULL;
    if (!dspy_json_truthy(messages)) {
        /* messages or [{"role": "user", "content": prompt}] */
        const dspy_json *prompt = dspy_json_get(item, "prompt");
        if (!dspy_json_is_string(prompt))
            return dspy_fail(DSPY_ERR_ARG, "inspect_history: entry %zu has neither messages nor a prompt", index);
        fallback = dspy_json_array();
        dspy_json *m = dspy_json_object();
        if (!fallback || !m || dspy_json_set_str(m, "role", "user") ||
            dspy_json_set(m, "content", dspy_json_incref((dspy_json *)prompt)) || dspy_json_append(fallback, m)) {
            dspy_json_decref(fallback);
            return dspy_fail(DSPY_ERR_NOMEM, "inspect_history: out of memory");
        }
        messages = fallback;
    }
    const dspy_json *ts = dspy_json_get(item, "timestamp");
    dspy_str tsline = DSPY_STR_INIT;
    dspy_str_appendc(&tsline, '[');
    if (ts) dspy_json_pystr(ts, &tsline);
    else dspy_str_append(&tsline, "Unknown time");
    dspy_str_appendc(&tsline, ']');

    print_line(p, dspy_strv_of("\n\n\n"));
    colored(p, BLUE, dspy_strv_make(dspy_str_cstr(&tsline), tsline.len), true);
    dspy_str_free(&tsline);

    for (size_t i = 0; i < dspy_json_size(messages); i++) {
        const dspy_json *msg = dspy_json_at(messages, i);
        const char *role = dspy_json_str_or(msg, "role", "");
        dspy_str label = DSPY_STR_INIT; /* role.capitalize() + " message:" */
        for (size_t k = 0; role[k]; k++) {
            char ch = role[k];
            if (k == 0 && ch >= 'a' && ch <= 'z') ch = (char)(ch - 32);
            else if (k > 0 && ch >= 'A' && ch <= 'Z') ch = (char)(ch + 32);
            dspy_str_appendc(&label, ch);
        }
        dspy_str_append(&label, " message:");
        colored(p, RED, dspy_strv_make(dspy_str_cstr(&label), label.len), true);
        dspy_str_free(&label);
        const dspy_json *content = dspy_json_get(msg, "content");
        if (dspy_json_is_string(content)) {
            print_line(p, strip_str(content));
        } else if (content && dspy_json_typeof(content) == DSPY_JSON_ARRAY) {
            for (size_t k = 0; k < dspy_json_size(content); k++) render_part(p, dspy_json_at(content, k));
        }
        print_line(p, dspy_strv_of("\n"));
    }

    const dspy_json *first = dspy_json_at(outputs, 0);
    if (first && dspy_json_typeof(first) == DSPY_JSON_OBJECT) {
        const dspy_json *text = dspy_json_get(first, "text");
        if (dspy_json_truthy(text) && dspy_json_is_string(text)) {
            colored(p, RED, dspy_strv_of("Response:"), true);
            colored(p, GREEN, dspy_strv_lstrip(strip_str(text)), true);
        }
        const dspy_json *calls = dspy_json_get(first, "tool_calls");
        if (dspy_json_truthy(calls)) {
            colored(p, RED, dspy_strv_of("Tool calls:"), true);
            for (size_t k = 0; k < dspy_json_size(calls); k++) {
                const dspy_json *fn = dspy_json_get(dspy_json_at(calls, k), "function");
                dspy_str line = DSPY_STR_INIT;
                const dspy_json *name = fn ? dspy_json_get(fn, "name") : NULL;
                const dspy_json *args = fn ? dspy_json_get(fn, "arguments") : NULL;
                if (name) dspy_json_pystr(name, &line);
                dspy_str_append(&line, ": ");
                if (args) dspy_json_pystr(args, &line);
                colored(p, GREEN, dspy_strv_lstrip(dspy_strv_make(dspy_str_cstr(&line), line.len)), true);
                dspy_str_free(&line);
            }
        }
    } else if (dspy_json_is_string(first)) {
        colored(p, RED, dspy_strv_of("Response:"), true);
        colored(p, GREEN, dspy_strv_lstrip(strip_str(first)), true);
    }
    size_t nout = dspy_json_size(outputs);
    if (nout > 1) {
        char note[64];
        snprintf(note, sizeof note, " \t (and %zu other completions)", nout - 1);
        colored(p, RED, dspy_strv_of(note), false);
    }
    dspy_json_decref(fallback);
    return DSPY_OK;
}

dspy_status dspy_history_render(const dspy_json *entries, bool colors, dspy_str *out) {
    if (!entries || dspy_json_typeof(entries) != DSPY_JSON_ARRAY)
        return dspy_fail(DSPY_ERR_ARG, "inspect_history: entries must be a JSON array");
    pp p = {out, colors};
    for (size_t i = 0; i < dspy_json_size(entries); i++) {
        dspy_status st = render_entry(&p, dspy_json_at(entries, i), i);
        if (st) return st;
    }
    print_line(&p, dspy_strv_of("\n\n\n"));
    if (!dspy_str_ok(out)) return dspy_fail(DSPY_ERR_NOMEM, "inspect_history: out of memory");
    return DSPY_OK;
}

dspy_status dspy_history_print(dspy_history *h, int32_t n, FILE *out) {
    dspy_json *entries = dspy_history_last(h, n);
    if (!entries) return dspy_fail(DSPY_ERR_NOMEM, "inspect_history: out of memory");
    int fd = fileno(out);
    bool colors = fd >= 0 && isatty(fd);
    dspy_str s = DSPY_STR_INIT;
    dspy_status st = dspy_history_render(entries, colors, &s);
    dspy_json_decref(entries);
    if (st == DSPY_OK && (fwrite(dspy_str_cstr(&s), 1, s.len, out) != s.len || fflush(out) != 0))
        st = dspy_fail(DSPY_ERR_IO, "inspect_history: cannot write the history");
    dspy_str_free(&s);
    return st;
}

dspy_status dspy_inspect_history(int32_t n, FILE *out) { return dspy_history_print(dspy_history_global(), n, out); }
