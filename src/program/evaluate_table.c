/* evaluate_table.c — the rows of an EvaluationResult: merge_dicts rows, the result table
 * (V33 styling, 25-word cells, pandas' console layout) and the JSON/CSV files.
 *
 * Follows DSPy 3.3.1 dspy/evaluate/evaluate.py (_construct_result_table, truncate_cell,
 * stylize_metric_name, _prepare_results_output, save_as_csv/save_as_json; CC-27) and, for the
 * console layout, pandas 1.5's DataFrame.to_string as print(df) runs it from a script
 * (pandas/io/formats/{format,string,printing}.py): dtypes inferred per column (bool, int64,
 * float64 with NaN gaps, object), every cell with a leading space, numeric headers too,
 * object cells through pprint_thing (\t \r \n escaped, lists as [a, b]), each column
 * right-justified by _make_fixed_width (max_colwidth 50: 47 characters + "..."), floats as
 * "{: .6f}" with common trailing zeros trimmed, a left-justified index, adjoin(1, ...), and
 * _join_multiline/_binify at line width 80. Widths count code points, as pandas does.
 * Checked against pandas 1.5.3 by tests/ref/evaluate_tables.json. Not reproduced: the
 * scientific float format pandas switches to for very large or small values.
 */
#include <stdlib.h>
#include <string.h>

#include "program/evaluate_priv.h"

static dspy_status nomem(void) { return dspy_fail(DSPY_ERR_NOMEM, "EvaluationResult: out of memory"); }

/* ---- rows ----------------------------------------------------------------------------------- */

static dspy_json *score_json(double score, dspy_score_kind kind) {
    switch (kind) {
    case DSPY_SCORE_BOOL: return dspy_json_bool(score != 0);
    case DSPY_SCORE_INT: return dspy_json_int((int64_t)score);
    default: return dspy_json_real(score);
    }
}

/* merge_dicts(example, prediction) | {metric_name: score} for row i (new reference). */
static dspy_status build_row(const dspy_eval_result *r, size_t i, dspy_json **out) {
    *out = NULL;
    const eval_row *row = &r->rows[i];
    dspy_json *obj = dspy_json_object();
    if (!obj) return nomem();
    dspy_status st = DSPY_OK;
    dspy_str key = DSPY_STR_INIT;
    for (size_t k = 0; !st && k < dspy_example_len(row->example); k++) {
        const char *name = dspy_example_key(row->example, k);
        dspy_str_clear(&key);
        if (dspy_prediction_get(row->pred, name)) dspy_str_append(&key, "example_");
        dspy_str_append(&key, name);
        if (!dspy_str_ok(&key)) st = nomem();
        else st = dspy_json_set(obj, dspy_str_cstr(&key),
                                dspy_json_incref((dspy_json *)dspy_value_as_json(dspy_example_value(row->example, k))));
    }
    for (size_t k = 0; !st && k < dspy_prediction_len(row->pred); k++) {
        const char *name = dspy_prediction_key(row->pred, k);
        dspy_str_clear(&key);
        if (dspy_example_has(row->example, name)) dspy_str_append(&key, "pred_");
        dspy_str_append(&key, name);
        if (!dspy_str_ok(&key)) st = nomem();
        else st = dspy_json_set(obj, dspy_str_cstr(&key), dspy_json_incref((dspy_json *)dspy_prediction_get(row->pred, name)));
    }
    dspy_str_free(&key);
    if (!st) {
        dspy_json *s = score_json(row->score, row->kind);
        st = s ? dspy_json_set(obj, r->metric_name, s) : nomem();
    }
    if (st) {
        dspy_json_decref(obj);
        return st;
    }
    *out = obj;
    return DSPY_OK;
}

dspy_status dspy_eval_result_rows(const dspy_eval_result *r, dspy_json **out) {
    *out = NULL;
    dspy_json *arr = dspy_json_array();
    if (!arr) return nomem();
    for (size_t i = 0; i < r->n; i++) {
        dspy_json *row;
        dspy_status st = build_row(r, i, &row);
        if (!st) st = dspy_json_append(arr, row);
        if (st) {
            dspy_json_decref(arr);
            return st;
        }
    }
    *out = arr;
    return DSPY_OK;
}

static bool has_string(const dspy_json *arr, const char *s) {
    for (size_t i = 0; i < dspy_json_size(arr); i++)
        if (strcmp(dspy_json_str(dspy_json_at(arr, i)), s) == 0) return true;
    return false;
}

/* The columns of `rows` in first-seen order (new reference). */
static dspy_status columns_of(const dspy_json *rows, dspy_json **out) {
    *out = NULL;
    dspy_json *cols = dspy_json_array();
    if (!cols) return nomem();
    for (size_t i = 0; i < dspy_json_size(rows); i++) {
        const dspy_json *row = dspy_json_at(rows, i);
        for (void *it = dspy_json_iter(row); it; it = dspy_json_next(row, it)) {
            const char *k = dspy_json_iter_key(it);
            if (has_string(cols, k)) continue;
            dspy_json *s = dspy_json_string(k);
            if (!s || dspy_json_append(cols, s)) {
                dspy_json_decref(cols);
                return nomem();
            }
        }
    }
    *out = cols;
    return DSPY_OK;
}

dspy_status dspy_eval_result_columns(const dspy_eval_result *r, dspy_json **out) {
    dspy_json *rows;
    dspy_status st = dspy_eval_result_rows(r, &rows);
    if (st) {
        *out = NULL;
        return st;
    }
    st = columns_of(rows, out);
    dspy_json_decref(rows);
    return st;
}

/* ---- cells ------------------------------------------------------------------------------------ */

/* Length in bytes of a Python whitespace character at s (str.isspace), 0 if none. */
static size_t py_space_len(const char *s, size_t n) {
    unsigned char c = (unsigned char)s[0];
    if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f)) return 1;
    if (c < 0x80) return 0;
    unsigned cp;
    int l = dspy_utf8_decode(s, n, &cp);
    if (l <= 0) return 0;
    bool sp = cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 ||
              cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
    return sp ? (size_t)l : 0;
}

/* truncate_cell: more than 25 whitespace-separated words become the first 25 joined by one
 * space, plus "...". */
static void truncate_words(const char *s, size_t n, dspy_str *out) {
    size_t words = 0, i = 0;
    while (i < n) {
        size_t l;
        while (i < n && (l = py_space_len(s + i, n - i))) i += l;
        if (i == n) break;
        words++;
        while (i < n && !py_space_len(s + i, n - i)) i++;
    }
    if (words <= 25) {
        dspy_str_appendn(out, s, n);
        return;
    }
    size_t k = 0;
    i = 0;
    while (i < n && k < 25) {
        size_t l;
        while (i < n && (l = py_space_len(s + i, n - i))) i += l;
        size_t start = i;
        while (i < n && !py_space_len(s + i, n - i)) i++;
        if (k++) dspy_str_appendc(out, ' ');
        dspy_str_appendn(out, s + start, i - start);
    }
    dspy_str_append(out, "...");
}

/* Which kinds the metric column holds, for pandas' dtype: ints mixed with floats (and no bools)
 * make a float64 column, so the ints print as floats. */
static bool metric_as_float(const dspy_eval_result *r) {
    bool f = false, i = false, b = false;
    for (size_t k = 0; k < r->n; k++) {
        f |= r->rows[k].kind == DSPY_SCORE_FLOAT;
        i |= r->rows[k].kind == DSPY_SCORE_INT;
        b |= r->rows[k].kind == DSPY_SCORE_BOOL;
    }
    return f && i && !b;
}

/* stylize_metric_name (V33): floats "✔️ [x.xxx]", anything else "✔️ [x]". */
static void styled_score(dspy_str *out, double score, dspy_score_kind kind, bool as_float) {
    if (kind == DSPY_SCORE_FLOAT || as_float) dspy_str_appendf(out, "✔️ [%.3f]", score);
    else if (kind == DSPY_SCORE_BOOL) dspy_str_append(out, score != 0 ? "✔️ [True]" : "✔️ [False]");
    else dspy_str_appendf(out, "✔️ [%lld]", (long long)score);
}

/* The displayed cell of `row` (object) under column `col`. */
static void cell_text(const dspy_eval_result *r, size_t ri, const dspy_json *row, const char *col, bool as_float,
                      dspy_str *out) {
    if (strcmp(col, r->metric_name) == 0) {
        styled_score(out, r->rows[ri].score, r->rows[ri].kind, as_float);
        return;
    }
    const dspy_json *v = dspy_json_get(row, col);
    if (!v) {
        dspy_str_append(out, "NaN");
        return;
    }
    dspy_str s = DSPY_STR_INIT;
    dspy_json_pystr(v, &s);
    truncate_words(dspy_str_cstr(&s), s.len, out);
    if (!dspy_str_ok(&s)) out->failed = true;
    dspy_str_free(&s);
}

dspy_status dspy_eval_result_cell(const dspy_eval_result *r, size_t row, size_t col, char **out) {
    *out = NULL;
    if (row >= r->n) return dspy_fail(DSPY_ERR_ARG, "EvaluationResult: row %zu is out of range (%zu rows)", row, r->n);
    dspy_json *rows = NULL, *cols = NULL;
    dspy_status st = dspy_eval_result_rows(r, &rows);
    if (!st) st = columns_of(rows, &cols);
    if (!st && col >= dspy_json_size(cols))
        st = dspy_fail(DSPY_ERR_ARG, "EvaluationResult: column %zu is out of range (%zu columns)", col, dspy_json_size(cols));
    if (!st) {
        dspy_str s = DSPY_STR_INIT;
        cell_text(r, row, dspy_json_at(rows, row), dspy_json_str(dspy_json_at(cols, col)), metric_as_float(r), &s);
        if (!dspy_str_ok(&s)) st = nomem();
        else *out = dspy_str_take(&s);
    }
    dspy_json_decref(rows);
    dspy_json_decref(cols);
    return st;
}

/* ---- the printed table (pandas' DataFrame.to_string) ------------------------------------------ */

static size_t cp_len(const char *s) {
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80) n++;
    return n;
}

/* The byte offset of code point k of s (or its length). */
static size_t cp_offset(const char *s, size_t k) {
    size_t i = 0, c = 0;
    for (; s[i]; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80 && c++ == k) return i;
    return i;
}

/* pandas' column dtypes, as DataFrame(list_of_dicts) infers them. */
typedef enum col_kind { COL_OBJECT, COL_BOOL, COL_INT, COL_FLOAT, COL_METRIC } col_kind;

static col_kind column_kind(const dspy_eval_result *r, const dspy_json *rows, const char *col) {
    if (strcmp(col, r->metric_name) == 0) return COL_METRIC;
    bool gaps = false, all_bool = true, all_int = true, all_num = true, any = false;
    for (size_t i = 0; i < dspy_json_size(rows); i++) {
        const dspy_json *v = dspy_json_get(dspy_json_at(rows, i), col);
        dspy_json_type t = v ? dspy_json_typeof(v) : DSPY_JSON_NULL;
        if (t == DSPY_JSON_NULL) {
            gaps = true;
            all_bool = all_int = false;
            continue;
        }
        any = true;
        if (t != DSPY_JSON_BOOL) all_bool = false;
        if (t != DSPY_JSON_INT) all_int = false;
        if (t != DSPY_JSON_INT && t != DSPY_JSON_REAL) all_num = false;
    }
    if (!any) return COL_OBJECT;
    if (all_bool && !gaps) return COL_BOOL;
    if (all_int && !gaps) return COL_INT;
    if (all_num) return COL_FLOAT;
    return COL_OBJECT;
}

/* pprint_thing(x, escape_chars=("\t", "\r", "\n"), quote_strings=False). */
static void pprint(dspy_str *out, const dspy_json *v) {
    switch (dspy_json_typeof(v)) {
    case DSPY_JSON_STRING:
        for (const char *p = dspy_json_str(v), *e = p + dspy_json_strlen(v); p < e; p++) {
            if (*p == '\t') dspy_str_append(out, "\\t");
            else if (*p == '\r') dspy_str_append(out, "\\r");
            else if (*p == '\n') dspy_str_append(out, "\\n");
            else dspy_str_appendc(out, *p);
        }
        break;
    case DSPY_JSON_ARRAY:
        dspy_str_appendc(out, '[');
        for (size_t i = 0; i < dspy_json_size(v); i++) {
            if (i) dspy_str_append(out, ", ");
            pprint(out, dspy_json_at(v, i));
        }
        dspy_str_appendc(out, ']');
        break;
    case DSPY_JSON_OBJECT: {
        bool first = true;
        dspy_str_appendc(out, '{');
        for (void *it = dspy_json_iter(v); it; it = dspy_json_next(v, it)) {
            if (!first) dspy_str_append(out, ", ");
            first = false;
            dspy_json *k = dspy_json_string(dspy_json_iter_key(it));
            if (k) pprint(out, k);
            else out->failed = true;
            dspy_json_decref(k);
            dspy_str_append(out, ": ");
            pprint(out, dspy_json_iter_value(it));
        }
        dspy_str_appendc(out, '}');
        break;
    }
    default: dspy_json_repr(v, out); break;
    }
}

/* An object column's cell: truncate_cell, then pprint; a missing value is NaN. */
static void object_cell(dspy_str *out, const dspy_json *v) {
    if (!v) {
        dspy_str_append(out, "NaN");
        return;
    }
    dspy_str s = DSPY_STR_INIT, t = DSPY_STR_INIT;
    dspy_json_pystr(v, &s);
    truncate_words(dspy_str_cstr(&s), s.len, &t);
    if (dspy_str_ok(&t) && (t.len != s.len || dspy_json_is_string(v))) {
        dspy_json *js = dspy_json_stringn(dspy_str_cstr(&t), t.len);
        if (js) pprint(out, js);
        else out->failed = true;
        dspy_json_decref(js);
    } else {
        pprint(out, v); /* truncate_cell left the value as it was */
    }
    if (!dspy_str_ok(&s) || !dspy_str_ok(&t)) out->failed = true;
    dspy_str_free(&s);
    dspy_str_free(&t);
}

/* True for what _trim_zeros_float's regex ^\s*[\+-]?[0-9]+\.[0-9]*$ matches. */
static bool number_with_decimal(const char *x) {
    while (*x == ' ') x++;
    if (*x == '+' || *x == '-') x++;
    if (*x < '0' || *x > '9') return false;
    while (*x >= '0' && *x <= '9') x++;
    if (*x++ != '.') return false;
    while (*x >= '0' && *x <= '9') x++;
    return *x == '\0';
}

/* FloatArrayFormatter: "{: .6f}" for every value, "NaN" for gaps, then _trim_zeros_float. */
static dspy_status float_cells(char **cells, size_t n, const dspy_json *rows, const char *col) {
    for (size_t i = 0; i < n; i++) {
        const dspy_json *v = dspy_json_get(dspy_json_at(rows, i), col);
        dspy_str s = DSPY_STR_INIT;
        if (!v || dspy_json_typeof(v) == DSPY_JSON_NULL) dspy_str_append(&s, "NaN");
        else dspy_str_appendf(&s, "% .6f", dspy_json_number(v));
        if (!dspy_str_ok(&s) || !(cells[i] = dspy_str_take(&s))) return nomem();
    }
    for (;;) {
        bool any = false, all_zero = true;
        for (size_t i = 0; i < n; i++)
            if (number_with_decimal(cells[i])) {
                any = true;
                if (cells[i][strlen(cells[i]) - 1] != '0') all_zero = false;
            }
        if (!any || !all_zero) break;
        for (size_t i = 0; i < n; i++)
            if (number_with_decimal(cells[i])) cells[i][strlen(cells[i]) - 1] = '\0';
    }
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(cells[i]);
        if (number_with_decimal(cells[i]) && cells[i][l - 1] == '.') {
            char *c = realloc(cells[i], l + 2);
            if (!c) return nomem();
            c[l] = '0';
            c[l + 1] = '\0';
            cells[i] = c;
        }
    }
    return DSPY_OK;
}

/* One column as pandas lays it out: the header then the cells, all right-justified to one
 * width (_make_fixed_width with max_colwidth 50). Fills col[0..n] with malloc'd strings. */
static dspy_status format_column(const dspy_eval_result *r, col_kind kind, const dspy_json *rows, const char *name,
                                 size_t n, bool as_float, char **col) {
    char **cells = col + 1;
    dspy_status st = DSPY_OK;
    if (kind == COL_FLOAT) {
        if ((st = float_cells(cells, n, rows, name))) return st;
    } else {
        for (size_t i = 0; i < n; i++) {
            const dspy_json *v = dspy_json_get(dspy_json_at(rows, i), name);
            dspy_str s = DSPY_STR_INIT;
            if (kind == COL_INT) {
                dspy_str_appendf(&s, "% lld", (long long)dspy_json_intval(v));
            } else {
                dspy_str_appendc(&s, ' '); /* leading_space: the frame has an index */
                if (kind == COL_METRIC) styled_score(&s, r->rows[i].score, r->rows[i].kind, as_float);
                else object_cell(&s, v);
            }
            if (!dspy_str_ok(&s) || !(cells[i] = dspy_str_take(&s))) return nomem();
        }
    }
    dspy_str h = DSPY_STR_INIT;
    if (kind == COL_INT || kind == COL_FLOAT) dspy_str_appendc(&h, ' '); /* numeric dtype */
    dspy_str_append(&h, name);
    if (!dspy_str_ok(&h) || !(col[0] = dspy_str_take(&h))) return nomem();
    size_t header_w = cp_len(col[0]), max_len = header_w;
    for (size_t i = 0; i < n; i++)
        if (cp_len(cells[i]) > max_len) max_len = cp_len(cells[i]);
    if (max_len > 50) max_len = 50;
    size_t width = header_w;
    for (size_t i = 0; i < n; i++) {
        size_t l = cp_len(cells[i]);
        dspy_str s = DSPY_STR_INIT;
        if (l > max_len) {
            dspy_str_appendn(&s, cells[i], cp_offset(cells[i], max_len - 3));
            dspy_str_append(&s, "...");
            l = max_len;
        } else {
            dspy_str_append(&s, cells[i]);
        }
        dspy_str t = DSPY_STR_INIT;
        for (size_t k = l; k < max_len; k++) dspy_str_appendc(&t, ' ');
        dspy_str_append(&t, dspy_str_cstr(&s));
        dspy_str_free(&s);
        free(cells[i]);
        cells[i] = NULL;
        if (!dspy_str_ok(&t) || !(cells[i] = dspy_str_take(&t))) return nomem();
        if (cp_len(cells[i]) > width) width = cp_len(cells[i]);
    }
    dspy_str t = DSPY_STR_INIT;
    for (size_t k = header_w; k < width; k++) dspy_str_appendc(&t, ' ');
    dspy_str_append(&t, col[0]);
    free(col[0]);
    col[0] = NULL;
    if (!dspy_str_ok(&t) || !(col[0] = dspy_str_take(&t))) return nomem();
    return DSPY_OK;
}

static size_t col_width(char *const *col, size_t len) {
    size_t w = 0;
    for (size_t i = 0; i < len; i++)
        if (cp_len(col[i]) > w) w = cp_len(col[i]);
    return w;
}

/* pandas.io.formats.printing.adjoin(1, *lists) for lists of `len` lines, except that a list
 * may be shorter (the continuation marker), padded with blanks of its width. */
static void adjoin(dspy_str *out, char **const *lists, const size_t *lens, size_t nl, size_t len) {
    for (size_t line = 0; line < len; line++) {
        if (line) dspy_str_appendc(out, '\n');
        for (size_t c = 0; c < nl; c++) {
            size_t w = col_width(lists[c], lens[c]) + (c + 1 < nl ? 1 : 0);
            const char *x = line < lens[c] ? lists[c][line] : "";
            dspy_str_append(out, x);
            for (size_t k = cp_len(x); k < w; k++) dspy_str_appendc(out, ' ');
        }
    }
}

/* DataFrameFormatter with line_width 80 and no column limit: _join_multiline. `cols[0]` is the
 * index column; each column has len = 1 + rows lines. */
static void join_multiline(dspy_str *out, char ***cols, size_t ncols, size_t rows) {
    size_t len = rows + 1;
    long lwidth = 80 - (long)col_width(cols[0], len) - 1;
    size_t *bins = malloc(ncols * sizeof *bins), nbins = 0;
    char ***row = malloc((ncols + 1) * sizeof *row);
    size_t *lens = malloc((ncols + 1) * sizeof *lens);
    char **cont = malloc((rows ? rows : 1) * sizeof *cont), **blank = malloc((rows ? rows : 1) * sizeof *blank);
    if (!bins || !row || !lens || !cont || !blank) {
        out->failed = true;
        goto done;
    }
    /* _binify */
    long curr = 0;
    for (size_t i = 1; i < ncols; i++) {
        long w = (long)col_width(cols[i], len) + 1;
        curr += w;
        /* room for the " \\" marker, except after the last column */
        if (i > 1 && curr + (i + 1 == ncols ? 1 : 2) > lwidth) {
            bins[nbins++] = i;
            curr = w;
        }
    }
    bins[nbins++] = ncols;
    for (size_t i = 0; i < rows; i++) {
        cont[i] = i == 0 ? " \\" : "  ";
        blank[i] = " ";
    }
    size_t start = 1;
    for (size_t b = 0; b < nbins; b++) {
        size_t end = bins[b], k = 0;
        row[k] = cols[0];
        lens[k++] = len;
        for (size_t c = start; c < end; c++) {
            row[k] = cols[c];
            lens[k++] = len;
        }
        if (nbins > 1) {
            row[k] = b + 1 < nbins ? cont : blank;
            lens[k++] = rows;
        }
        if (b) dspy_str_append(out, "\n\n");
        adjoin(out, row, lens, k, len);
        start = end;
    }
done:
    free(bins);
    free(row);
    free(lens);
    free(cont);
    free(blank);
}

dspy_status dspy_eval_result_table_text(const dspy_eval_result *r, int64_t max_rows, char **out) {
    *out = NULL;
    dspy_json *rows = NULL, *cols = NULL;
    char ***strcols = NULL;
    size_t nshow = max_rows < 0 || (uint64_t)max_rows > r->n ? r->n : (size_t)max_rows;
    size_t nc = 0;
    dspy_str s = DSPY_STR_INIT;
    dspy_status st = dspy_eval_result_rows(r, &rows);
    if (!st) st = columns_of(rows, &cols);
    if (st) goto done;
    nc = dspy_json_size(cols);
    if (r->n == 0 || nc == 0) {
        dspy_str_append(&s, "Empty DataFrame\nColumns: []\nIndex: []\n");
    } else {
        if (!(strcols = calloc(nc + 1, sizeof *strcols))) {
            st = nomem();
            goto done;
        }
        for (size_t c = 0; c <= nc; c++)
            if (!(strcols[c] = calloc(nshow + 1, sizeof **strcols))) {
                st = nomem();
                goto done;
            }
        /* the index: "" above "0", "1", ... (left-justified by adjoin) */
        if (!(strcols[0][0] = strdup(""))) {
            st = nomem();
            goto done;
        }
        for (size_t i = 0; i < nshow; i++) {
            char idx[32];
            snprintf(idx, sizeof idx, "%zu", i);
            if (!(strcols[0][i + 1] = strdup(idx))) {
                st = nomem();
                goto done;
            }
        }
        bool as_float = metric_as_float(r);
        for (size_t c = 0; c < nc; c++) {
            dspy_json *shown = dspy_json_array();
            if (!shown) {
                st = nomem();
                goto done;
            }
            for (size_t i = 0; i < nshow; i++) dspy_json_append(shown, dspy_json_incref(dspy_json_at(rows, i)));
            const char *name = dspy_json_str(dspy_json_at(cols, c));
            /* the dtype comes from the whole frame; head(n) only cuts the rows shown */
            st = format_column(r, column_kind(r, rows, name), shown, name, nshow, as_float, strcols[c + 1]);
            dspy_json_decref(shown);
            if (st) goto done;
        }
        join_multiline(&s, strcols, nc + 1, nshow);
        dspy_str_appendc(&s, '\n');
    }
    if (nshow < r->n) dspy_str_appendf(&s, "... %zu more rows not displayed ...\n", r->n - nshow);
    if (!dspy_str_ok(&s)) {
        st = nomem();
        goto done;
    }
    *out = dspy_str_take(&s);
done:
    dspy_str_free(&s);
    for (size_t c = 0; strcols && c <= nc; c++) {
        for (size_t i = 0; strcols[c] && i <= nshow; i++) free(strcols[c][i]);
        free(strcols[c]);
    }
    free(strcols);
    dspy_json_decref(rows);
    dspy_json_decref(cols);
    return st;
}

dspy_status dspy_eval_result_print_table(const dspy_eval_result *r, int64_t max_rows, FILE *out) {
    char *text;
    dspy_status st = dspy_eval_result_table_text(r, max_rows, &text);
    if (st) return st;
    size_t n = strlen(text);
    bool ok = fwrite(text, 1, n, out) == n && fflush(out) == 0;
    free(text);
    return ok ? DSPY_OK : dspy_fail(DSPY_ERR_IO, "EvaluationResult: cannot write the result table");
}

/* ---- files ---------------------------------------------------------------------------------- */

dspy_status dspy_eval_result_save_json(const dspy_eval_result *r, const char *path) {
    dspy_json *rows;
    dspy_status st = dspy_eval_result_rows(r, &rows);
    if (st) return st;
    char *text = dspy_json_dumps(rows, DSPY_JSON_PY);
    dspy_json_decref(rows);
    if (!text) return nomem();
    st = dspy_write_file(path, text, strlen(text));
    free(text);
    return st ? dspy_fail_wrap(st, "save_as_json") : DSPY_OK;
}

/* One CSV field, quoted the way Python's csv module (excel dialect, QUOTE_MINIMAL) does. */
static void csv_field(dspy_str *out, const char *s, size_t n, bool only_field) {
    bool quote = only_field && n == 0;
    for (size_t i = 0; i < n && !quote; i++)
        if (s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n') quote = true;
    if (!quote) {
        dspy_str_appendn(out, s, n);
        return;
    }
    dspy_str_appendc(out, '"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"') dspy_str_appendc(out, '"');
        dspy_str_appendc(out, s[i]);
    }
    dspy_str_appendc(out, '"');
}

dspy_status dspy_eval_result_save_csv(const dspy_eval_result *r, const char *path) {
    dspy_json *rows = NULL, *cols = NULL;
    dspy_status st = dspy_eval_result_rows(r, &rows);
    if (!st) st = columns_of(rows, &cols);
    if (st) goto done;
    size_t nc = dspy_json_size(cols);
    dspy_str s = DSPY_STR_INIT, v = DSPY_STR_INIT;
    for (size_t c = 0; c < nc; c++) {
        const char *name = dspy_json_str(dspy_json_at(cols, c));
        if (c) dspy_str_appendc(&s, ',');
        csv_field(&s, name, strlen(name), nc == 1);
    }
    dspy_str_append(&s, "\r\n");
    for (size_t i = 0; i < dspy_json_size(rows); i++) {
        const dspy_json *row = dspy_json_at(rows, i);
        for (size_t c = 0; c < nc; c++) {
            const dspy_json *val = dspy_json_get(row, dspy_json_str(dspy_json_at(cols, c)));
            dspy_str_clear(&v);
            if (val && dspy_json_typeof(val) != DSPY_JSON_NULL) dspy_json_pystr(val, &v);
            if (c) dspy_str_appendc(&s, ',');
            csv_field(&s, dspy_str_cstr(&v), v.len, nc == 1);
        }
        dspy_str_append(&s, "\r\n");
    }
    bool ok = dspy_str_ok(&s) && dspy_str_ok(&v);
    dspy_str_free(&v);
    if (!ok) {
        dspy_str_free(&s);
        st = nomem();
        goto done;
    }
    st = dspy_write_file(path, s.ptr, s.len);
    dspy_str_free(&s);
    if (st) st = dspy_fail_wrap(st, "save_as_csv");
done:
    dspy_json_decref(rows);
    dspy_json_decref(cols);
    return st;
}
