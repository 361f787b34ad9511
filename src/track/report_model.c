/* report_model.c — the data of the HTML report, computed from run directories (dspy/track.h).
 *
 * Does: per run, the manifest fields, the training curves from metrics.jsonl, the accuracy of
 * the untrained student / teacher / fine-tuned student, and from results.json (Evaluate's rows)
 * the per-class accuracy, the confusion matrix (rows: gold labels; columns: predicted labels,
 * then "(no answer)" for examples whose prediction failed, so every example is in one cell),
 * the most frequent confusions and the failed examples with the inspect_history text of their
 * LM calls (history.jsonl entries whose last user message holds the example's input).
 * Labels are sorted by name (related Banking77 intents such as card_* sit together); the report
 * script adds zoom and the top-confusions list for 77 classes.
 * Follows: DSPy's Evaluate rows (merge_dicts: a field in both example and prediction becomes
 * example_<f> and pred_<f>; the metric's column comes last) and pretty_print_history.
 * Does not: draw anything (report_html.c and assets/report.js do).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "track/track_priv.h"

#define NO_ANSWER "(no answer)"
enum { MAX_FAILED = 100, MAX_CURVE_POINTS = 2000, MAX_TOP = 20, MAX_CALLS_SHOWN = 3 };

/* A JSON value as display text (strings as they are). */
static char *text_of(const dspy_json *v) {
    if (!v) return NULL;
    if (dspy_json_is_string(v)) return strdup(dspy_json_str(v));
    return dspy_json_dumps(v, DSPY_JSON_COMPACT | DSPY_JSON_UTF8);
}

/* ---- curves ---------------------------------------------------------------------------------- */

static dspy_status curves_of(const char *dir, dspy_json *run) {
    dspy_json *points = NULL, *curves = dspy_json_object();
    dspy_status st = curves ? dspy_run_metrics(dir, &points) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !st && i < dspy_json_size(points); i++) {
        const dspy_json *p = dspy_json_at(points, i);
        const char *k = dspy_json_str_or(p, "key", "");
        int64_t step = dspy_json_int_or(p, "step", 0);
        double v;
        if (step <= 0 || !*k) continue; /* final values are logged at step 0 */
        dspy_json *arr = dspy_json_get(curves, k);
        if (!arr) {
            if ((st = dspy_json_set(curves, k, dspy_json_array()))) break;
            arr = dspy_json_get(curves, k);
        }
        dspy_json *pt = dspy_json_array();
        st = pt ? dspy_json_append(pt, dspy_json_int(step)) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        if (!st) st = dspy_json_append(pt, dspy_track_number_of(dspy_json_get(p, "value"), &v) && isfinite(v)
                                               ? dspy_json_real(v) : dspy_json_null());
        if (!st) st = dspy_json_append(arr, pt);
        else dspy_json_decref(pt);
    }
    /* long runs: every k-th point and the last, so that a chart stays light */
    for (void *it = st ? NULL : dspy_json_iter(curves); !st && it; it = dspy_json_next(curves, it)) {
        dspy_json *arr = dspy_json_iter_value(it);
        size_t n = dspy_json_size(arr);
        if (n <= MAX_CURVE_POINTS) continue;
        size_t k = (n + MAX_CURVE_POINTS - 1) / MAX_CURVE_POINTS;
        dspy_json *thin = dspy_json_array();
        for (size_t i = 0; !st && thin && i < n; i++)
            if (i % k == 0 || i == n - 1) st = dspy_json_append(thin, dspy_json_incref(dspy_json_at(arr, i)));
        if (!thin) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        if (!st) st = dspy_json_set(curves, dspy_json_iter_key(it), thin);
    }
    if (!st) st = dspy_json_set(run, "curves", dspy_json_incref(curves));
    dspy_json_decref(points);
    dspy_json_decref(curves);
    return st;
}

/* ---- evaluation rows ---------------------------------------------------------------------------- */

typedef struct row_view {
    char *gold, *pred; /* pred NULL: no answer */
    bool correct;
    const dspy_json *row;
    const char *input; /* the example's input text, for matching LM calls */
} row_view;

typedef struct label_count {
    char *label;
    size_t n, correct, as_pred;
} label_count;

typedef struct eval_ctx {
    row_view *rows;
    size_t n;
    label_count *labels;
    size_t nl, cap;
} eval_ctx;

static void ctx_free(eval_ctx *c) {
    for (size_t i = 0; i < c->n; i++) {
        free(c->rows[i].gold);
        free(c->rows[i].pred);
    }
    free(c->rows);
    for (size_t i = 0; i < c->nl; i++) free(c->labels[i].label);
    free(c->labels);
}

static label_count *label_get(eval_ctx *c, const char *name) {
    for (size_t i = 0; i < c->nl; i++)
        if (strcmp(c->labels[i].label, name) == 0) return &c->labels[i];
    if (c->nl == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 32;
        label_count *nv = realloc(c->labels, cap * sizeof *nv);
        if (!nv) return NULL;
        c->labels = nv;
        c->cap = cap;
    }
    label_count *l = &c->labels[c->nl];
    memset(l, 0, sizeof *l);
    if (!(l->label = strdup(name))) return NULL;
    c->nl++;
    return l;
}

static int cmp_label(const void *a, const void *b) {
    return strcmp(((const label_count *)a)->label, ((const label_count *)b)->label);
}

/* The output field compared: the X of example_X / pred_X pairs ("label" preferred). */
static char *output_field(const dspy_json *rows) {
    char *best = NULL;
    for (size_t i = 0; i < dspy_json_size(rows) && !(best && strcmp(best, "label") == 0); i++) {
        const dspy_json *row = dspy_json_at(rows, i);
        for (void *it = dspy_json_iter(row); it; it = dspy_json_next(row, it)) {
            const char *k = dspy_json_iter_key(it);
            if (strncmp(k, "example_", 8) != 0) continue;
            dspy_str pk = DSPY_STR_INIT;
            dspy_str_appendf(&pk, "pred_%s", k + 8);
            bool pair = dspy_str_ok(&pk) && dspy_json_get(row, pk.ptr);
            dspy_str_free(&pk);
            if (pair && (!best || strcmp(k + 8, "label") == 0)) {
                free(best);
                best = strdup(k + 8);
            }
        }
    }
    return best ? best : strdup("label");
}

static const char *metric_key(const dspy_json *row) {
    const char *last = NULL;
    for (void *it = dspy_json_iter(row); it; it = dspy_json_next(row, it)) last = dspy_json_iter_key(it);
    return last;
}

static dspy_status read_rows(const dspy_json *rows, const char *field, eval_ctx *c) {
    size_t n = dspy_json_size(rows);
    c->rows = n ? calloc(n, sizeof *c->rows) : NULL;
    if (n && !c->rows) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_str ek = DSPY_STR_INIT, pk = DSPY_STR_INIT;
    dspy_str_appendf(&ek, "example_%s", field);
    dspy_str_appendf(&pk, "pred_%s", field);
    if (!dspy_str_ok(&ek) || !dspy_str_ok(&pk)) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_status st = DSPY_OK;
    for (size_t i = 0; !st && i < n; i++) {
        const dspy_json *row = dspy_json_at(rows, i);
        row_view *v = &c->rows[c->n++];
        v->row = row;
        const dspy_json *g = dspy_json_get(row, ek.ptr);
        const dspy_json *p = g ? dspy_json_get(row, pk.ptr) : NULL;
        if (!g) g = dspy_json_get(row, field); /* failed: only the example's fields and the score */
        v->gold = g ? text_of(g) : strdup("?");
        v->pred = p ? text_of(p) : NULL;
        const char *mk = metric_key(row);
        const dspy_json *sv = mk ? dspy_json_get(row, mk) : NULL;
        double s = 0;
        if (dspy_json_typeof(sv) == DSPY_JSON_BOOL) s = dspy_json_truthy(sv);
        else dspy_track_number_of(sv, &s);
        v->correct = s > 0;
        v->input = dspy_json_str_or(row, "text", NULL);
        for (void *it = dspy_json_iter(row); !v->input && it; it = dspy_json_next(row, it))
            v->input = dspy_json_str(dspy_json_iter_value(it));
        if (!v->gold || (p && !v->pred)) {
            st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
            break;
        }
        label_count *l = label_get(c, v->gold);
        if (!l) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        else {
            l->n++;
            l->correct += v->correct;
        }
        if (!st && v->pred) {
            label_count *lp = label_get(c, v->pred);
            if (!lp) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
            else lp->as_pred++;
        }
    }
    dspy_str_free(&ek);
    dspy_str_free(&pk);
    if (!st && c->nl) qsort(c->labels, c->nl, sizeof *c->labels, cmp_label);
    return st;
}

static int label_index(const eval_ctx *c, const char *name) {
    for (size_t i = 0; i < c->nl; i++)
        if (strcmp(c->labels[i].label, name) == 0) return (int)i;
    return -1;
}

static int cmp_class(const void *a, const void *b) {
    const label_count *x = *(const label_count *const *)a, *y = *(const label_count *const *)b;
    double ax = (double)x->correct / (double)x->n, ay = (double)y->correct / (double)y->n;
    if (ax != ay) return ax < ay ? -1 : 1;
    if (x->n != y->n) return x->n > y->n ? -1 : 1;
    return strcmp(x->label, y->label);
}

static dspy_status per_class(const eval_ctx *c, dspy_json *ev) {
    const label_count **v = c->nl ? malloc(c->nl * sizeof *v) : NULL;
    size_t k = 0;
    if (c->nl && !v) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < c->nl; i++)
        if (c->labels[i].n) v[k++] = &c->labels[i];
    if (k) qsort(v, k, sizeof *v, cmp_class);
    dspy_json *arr = dspy_json_array();
    dspy_status st = arr ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !st && i < k; i++) {
        dspy_json *o = dspy_json_object();
        st = o ? dspy_json_set_str(o, "label", v[i]->label) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        if (!st) st = dspy_json_set(o, "n", dspy_json_int((int64_t)v[i]->n));
        if (!st) st = dspy_json_set(o, "correct", dspy_json_int((int64_t)v[i]->correct));
        if (!st) st = dspy_json_append(arr, o);
        else dspy_json_decref(o);
    }
    if (!st) st = dspy_json_set(ev, "per_class", dspy_json_incref(arr));
    dspy_json_decref(arr);
    free(v);
    return st;
}

typedef struct cell {
    int r, c;
    size_t count;
} cell;

static int cmp_cell_count(const void *a, const void *b) {
    const cell *x = a, *y = b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    if (x->r != y->r) return x->r - y->r;
    return x->c - y->c;
}

static dspy_status confusion(const eval_ctx *c, dspy_json *ev) {
    /* rows: labels that occur as gold; columns: every label seen, then "(no answer)" */
    int *row_of = c->nl ? malloc(c->nl * sizeof *row_of) : NULL;
    cell *cells = c->n ? calloc(c->n, sizeof *cells) : NULL;
    dspy_json *cm = dspy_json_object(), *rl = dspy_json_array(), *cl = dspy_json_array(), *cs = dspy_json_array(),
              *top = dspy_json_array();
    dspy_status st = (c->nl && !row_of) || (c->n && !cells) || !cm || !rl || !cl || !cs || !top
                         ? dspy_fail(DSPY_ERR_NOMEM, "out of memory") : DSPY_OK;
    int nrows = 0;
    bool any_missing = false;
    for (size_t i = 0; !st && i < c->nl; i++) {
        row_of[i] = c->labels[i].n ? nrows++ : -1;
        if (c->labels[i].n) st = dspy_json_append(rl, dspy_json_string(c->labels[i].label));
        if (!st) st = dspy_json_append(cl, dspy_json_string(c->labels[i].label));
    }
    size_t nc = 0;
    for (size_t i = 0; !st && i < c->n; i++) {
        const row_view *v = &c->rows[i];
        int r = row_of[label_index(c, v->gold)];
        int col = v->pred ? label_index(c, v->pred) : (int)c->nl;
        any_missing |= !v->pred;
        size_t j = 0;
        while (j < nc && (cells[j].r != r || cells[j].c != col)) j++;
        if (j == nc) cells[nc++] = (cell){r, col, 0};
        cells[j].count++;
    }
    if (!st && any_missing) st = dspy_json_append(cl, dspy_json_string(NO_ANSWER));
    for (size_t j = 0; !st && j < nc; j++) {
        dspy_json *t = dspy_json_array();
        st = t ? dspy_json_append(t, dspy_json_int(cells[j].r)) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        if (!st) st = dspy_json_append(t, dspy_json_int(cells[j].c));
        if (!st) st = dspy_json_append(t, dspy_json_int((int64_t)cells[j].count));
        if (!st) st = dspy_json_append(cs, t);
        else dspy_json_decref(t);
    }
    if (!st && nc) qsort(cells, nc, sizeof *cells, cmp_cell_count);
    size_t shown = 0;
    for (size_t j = 0; !st && j < nc && shown < MAX_TOP; j++) {
        const char *gold = dspy_json_str(dspy_json_at(rl, (size_t)cells[j].r));
        const char *pred = cells[j].c == (int)c->nl ? NO_ANSWER : c->labels[cells[j].c].label;
        if (strcmp(gold, pred) == 0) continue;
        dspy_json *o = dspy_json_object();
        st = o ? dspy_json_set_str(o, "gold", gold) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        if (!st) st = dspy_json_set_str(o, "pred", pred);
        if (!st) st = dspy_json_set(o, "count", dspy_json_int((int64_t)cells[j].count));
        if (!st) st = dspy_json_append(top, o);
        else dspy_json_decref(o);
        shown++;
    }
    if (!st) st = dspy_json_set(cm, "rows", dspy_json_incref(rl));
    if (!st) st = dspy_json_set(cm, "cols", dspy_json_incref(cl));
    if (!st) st = dspy_json_set(cm, "cells", dspy_json_incref(cs));
    if (!st) st = dspy_json_set(ev, "confusion", dspy_json_incref(cm));
    if (!st) st = dspy_json_set(ev, "top_confusions", dspy_json_incref(top));
    dspy_json_decref(cm);
    dspy_json_decref(rl);
    dspy_json_decref(cl);
    dspy_json_decref(cs);
    dspy_json_decref(top);
    free(cells);
    free(row_of);
    return st;
}

/* The last user message of a history entry. */
static const char *last_user(const dspy_json *entry) {
    const dspy_json *msgs = dspy_json_get(entry, "messages");
    for (size_t i = dspy_json_size(msgs); i-- > 0;) {
        const dspy_json *m = dspy_json_at(msgs, i);
        if (strcmp(dspy_json_str_or(m, "role", ""), "user") == 0) return dspy_json_str_or(m, "content", "");
    }
    return dspy_json_str_or(entry, "prompt", "");
}

/* inspect_history text of the (last few) calls made for `input`, or NULL. */
static char *calls_for(const dspy_json *history, const char *input) {
    if (!input || !*input || !history) return NULL;
    dspy_json *sel = dspy_json_array();
    if (!sel) return NULL;
    size_t n = dspy_json_size(history);
    size_t first = n;
    for (size_t i = n, found = 0; i-- > 0 && found < MAX_CALLS_SHOWN;)
        if (strstr(last_user(dspy_json_at(history, i)), input)) {
            first = i;
            found++;
        }
    for (size_t i = first; i < n; i++)
        if (strstr(last_user(dspy_json_at(history, i)), input) &&
            dspy_json_append(sel, dspy_json_incref(dspy_json_at(history, i))) != DSPY_OK)
            break;
    dspy_str s = DSPY_STR_INIT;
    char *r = NULL;
    if (dspy_json_size(sel) && dspy_history_render(sel, false, &s) == DSPY_OK) r = dspy_str_take(&s);
    dspy_str_free(&s);
    dspy_json_decref(sel);
    return r;
}

static dspy_status load_history(const char *dir, const char *rel, dspy_json **out) {
    *out = NULL;
    char *path = dspy_track_join(dir, rel), *data = NULL;
    size_t len = 0;
    if (!path) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_status st = DSPY_OK;
    if (dspy_track_is_file(path) && dspy_read_file(path, &data, &len) == DSPY_OK) {
        dspy_json *arr = dspy_json_array();
        for (const char *line = data; arr && line < data + len;) {
            const char *nl = memchr(line, '\n', (size_t)(data + len - line));
            size_t ll = nl ? (size_t)(nl - line) : (size_t)(data + len - line);
            dspy_json *o = NULL;
            if (ll && dspy_json_parse(line, ll, path, &o) == DSPY_OK && dspy_json_typeof(o) == DSPY_JSON_OBJECT)
                st = dspy_json_append(arr, o);
            else
                dspy_json_decref(o);
            line += ll + 1;
        }
        if (!arr) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        *out = arr;
    }
    free(data);
    free(path);
    return st;
}

static dspy_status failed_examples(const eval_ctx *c, const dspy_json *history, dspy_json *ev) {
    dspy_json *arr = dspy_json_array();
    dspy_status st = arr ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    size_t total = 0;
    for (size_t i = 0; !st && i < c->n; i++) {
        const row_view *v = &c->rows[i];
        if (v->correct) continue;
        if (total++ >= MAX_FAILED) continue;
        dspy_json *o = dspy_json_object();
        char *h = calls_for(history, v->input);
        st = o ? dspy_json_set(o, "index", dspy_json_int((int64_t)i)) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        if (!st) st = dspy_json_set(o, "row", dspy_json_incref((dspy_json *)v->row));
        if (!st) st = dspy_json_set_str(o, "input", v->input ? v->input : "");
        if (!st) st = dspy_json_set_str(o, "gold", v->gold);
        if (!st) st = dspy_json_set(o, "pred", v->pred ? dspy_json_string(v->pred) : dspy_json_null());
        if (!st) st = dspy_json_set(o, "history", h ? dspy_json_string(h) : dspy_json_null());
        free(h);
        if (!st) st = dspy_json_append(arr, o);
        else dspy_json_decref(o);
    }
    if (!st) st = dspy_json_set(ev, "failed_examples", dspy_json_incref(arr));
    if (!st) st = dspy_json_set(ev, "failed_total", dspy_json_int((int64_t)total));
    dspy_json_decref(arr);
    return st;
}

/* The "eval" object of a results.json (+ its history.jsonl); *out NULL when there is none. */
static dspy_status eval_of(const char *dir, const char *results_rel, const char *history_rel, bool details,
                           dspy_json **out) {
    *out = NULL;
    dspy_json *rows = NULL, *history = NULL, *ev = NULL;
    eval_ctx c = {0};
    char *field = NULL;
    dspy_status st = dspy_track_load_json(dir, results_rel, &rows);
    if (st == DSPY_ERR_NOTFOUND) return DSPY_OK;
    if (!st && dspy_json_typeof(rows) != DSPY_JSON_ARRAY)
        st = dspy_fail(DSPY_ERR_FORMAT, "%s/%s: expected Evaluate's list of rows", dir, results_rel);
    if (!st && !(field = output_field(rows))) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!st) st = read_rows(rows, field, &c);
    if (!st && !(ev = dspy_json_object())) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    size_t correct = 0, missing = 0;
    for (size_t i = 0; !st && i < c.n; i++) {
        correct += c.rows[i].correct;
        missing += !c.rows[i].pred;
    }
    if (!st) st = dspy_json_set_str(ev, "field", field);
    if (!st) st = dspy_json_set(ev, "n", dspy_json_int((int64_t)c.n));
    if (!st) st = dspy_json_set(ev, "correct", dspy_json_int((int64_t)correct));
    if (!st) st = dspy_json_set(ev, "no_answer", dspy_json_int((int64_t)missing));
    if (!st) st = dspy_json_set(ev, "score", c.n ? dspy_json_real(100.0 * (double)correct / (double)c.n) : dspy_json_null());
    if (!st) st = per_class(&c, ev);
    if (!st && details) st = confusion(&c, ev);
    if (!st && details) st = load_history(dir, history_rel, &history);
    if (!st && details) st = failed_examples(&c, history, ev);
    ctx_free(&c);
    free(field);
    dspy_json_decref(rows);
    dspy_json_decref(history);
    if (st) {
        dspy_json_decref(ev);
        return st;
    }
    *out = ev;
    return DSPY_OK;
}

/* ---- one run -------------------------------------------------------------------------------------- */

static dspy_status accuracy_bar(dspy_json *arr, const char *name, const dspy_json *metrics, const char *score_key,
                                const char *n_key) {
    dspy_json *o = dspy_json_object();
    double v;
    const dspy_json *sv = dspy_json_get(metrics, score_key);
    dspy_status st = o ? dspy_json_set_str(o, "name", name) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!st) st = dspy_json_set(o, "score", dspy_track_number_of(sv, &v) && isfinite(v) ? dspy_json_real(v) : dspy_json_null());
    if (!st) st = dspy_json_set(o, "n", dspy_json_int(dspy_json_int_or(metrics, n_key, 0)));
    if (!st) st = dspy_json_append(arr, o);
    else dspy_json_decref(o);
    return st;
}

static dspy_status run_model(const char *dir, dspy_json **out) {
    *out = NULL;
    dspy_json *run = NULL, *acc = dspy_json_array(), *ev = NULL, *bl = dspy_json_array();
    dspy_status st = acc && bl ? dspy_run_load(dir, &run) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (st) goto fail;
    const char *rdir = dspy_json_str_or(run, "dir", dir);
    const dspy_json *metrics = dspy_json_get(run, "metrics");
    bool evalrun = strcmp(dspy_json_str_or(run, "kind", ""), "eval") == 0;
    if (!evalrun && ((st = accuracy_bar(acc, "untrained student", metrics, "baseline_student_score",
                                        "baseline_student_examples")) ||
                     (st = accuracy_bar(acc, "teacher", metrics, "baseline_teacher_score", "baseline_teacher_examples"))))
        goto fail;
    if ((st = accuracy_bar(acc, evalrun ? "evaluated program" : "fine-tuned student", metrics, "eval_score",
                           "eval_examples")) ||
        (st = dspy_json_set(run, "accuracy", dspy_json_incref(acc))) || (st = curves_of(rdir, run)) ||
        (st = eval_of(rdir, "results.json", TRACK_HISTORY, true, &ev)) ||
        (st = dspy_json_set(run, "eval", ev ? dspy_json_incref(ev) : dspy_json_null())))
        goto fail;
    const dspy_json *arts = dspy_json_get(run, "artifacts");
    for (size_t i = 0; i < dspy_json_size(arts); i++) {
        const char *rel = dspy_json_str(dspy_json_at(arts, i));
        if (!rel || strncmp(rel, "baselines/", 10) != 0 || !strstr(rel, "/results.json")) continue;
        dspy_json *b = NULL, *entry = dspy_json_object();
        dspy_str name = DSPY_STR_INIT;
        dspy_str_appendn(&name, rel + 10, (size_t)(strstr(rel, "/results.json") - (rel + 10)));
        st = entry && dspy_str_ok(&name) ? eval_of(rdir, rel, NULL, false, &b) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        if (!st) st = dspy_json_set_str(entry, "name", name.ptr);
        if (!st) st = dspy_json_set(entry, "eval", b ? b : dspy_json_null());
        if (!st) st = dspy_json_append(bl, entry);
        else dspy_json_decref(entry);
        dspy_str_free(&name);
        if (st) goto fail;
    }
    if ((st = dspy_json_set(run, "baselines", dspy_json_incref(bl)))) goto fail;
    *out = run;
    run = NULL;
fail:
    dspy_json_decref(run);
    dspy_json_decref(acc);
    dspy_json_decref(ev);
    dspy_json_decref(bl);
    return st;
}

dspy_status dspy_report_model(const char *dir, const char *compare_dir, dspy_json **out) {
    *out = NULL;
    dspy_json *model = dspy_json_object(), *runs = dspy_json_array(), *r = NULL;
    dspy_status st = model && runs ? run_model(dir, &r) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!st) st = dspy_json_append(runs, r);
    if (!st && compare_dir && (st = run_model(compare_dir, &r)) == DSPY_OK) st = dspy_json_append(runs, r);
    if (!st) st = dspy_json_set(model, "runs", dspy_json_incref(runs));
    if (!st) st = dspy_json_set(model, "generated", dspy_json_int(dspy_track_now_ms()));
    dspy_json_decref(runs);
    if (st) {
        dspy_json_decref(model);
        return st;
    }
    *out = model;
    return DSPY_OK;
}
