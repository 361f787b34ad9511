/* data_source.c — a task's examples from JSONL, CSV or a Hugging Face split, mapped to a
 * program's fields (see include/dspy/data_source.h).
 *
 * Every source is first read into raw rows (examples holding the source's columns, each with
 * a human name such as "train.jsonl: line 7" for messages), then one mapping pass builds the
 * examples, so the three formats share the checks and the messages. Hugging Face ClassLabel
 * ids are turned into names with the /info feature list, as the tutorial's CLASSES[x.label].
 * Does not: guess columns, read compressed files or other JSON layouts (a JSON array file).
 */
#include "dspy/data_source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dspy/csv.h"
#include "dspy/jsonl.h"
#include "dspy/random.h"
#include "dspy/str.h"
#include "example_internal.h"

dspy_data_params dspy_data_params_default(void) {
    dspy_data_params p = {0};
    p.hf = dspy_hf_params_default();
    return p;
}

dspy_status dspy_field_map_parse(const char *spec, char *field_buf, size_t field_cap, dspy_field_map *out) {
    memset(out, 0, sizeof *out);
    const char *eq = strchr(spec, '=');
    size_t n = eq ? (size_t)(eq - spec) : strlen(spec);
    if (n == 0 || (eq && !eq[1]))
        return dspy_fail(DSPY_ERR_ARG, "'%s': expected FIELD or FIELD=COLUMN (e.g. text or text=sentence)", spec);
    if (n >= field_cap) return dspy_fail(DSPY_ERR_ARG, "'%s': the field name is too long", spec);
    for (size_t i = 0; i < n; i++)
        if (spec[i] == ' ' || spec[i] == '\t' || spec[i] == ',')
            return dspy_fail(DSPY_ERR_ARG, "'%s': a field name has no spaces or commas (list several fields "
                             "as separate values: --input-fields a,b is the same as --input-fields a --input-fields b)",
                             spec);
    memcpy(field_buf, spec, n);
    field_buf[n] = '\0';
    out->field = field_buf;
    out->column = eq ? eq + 1 : NULL;
    return DSPY_OK;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

dspy_status dspy_data_source_kind(const char *source, const char **kind) {
    *kind = NULL;
    if (!source || !*source) return dspy_fail(DSPY_ERR_ARG, "an empty data source");
    if (strncmp(source, "hf:", 3) == 0) {
        if (!source[3] || source[3] == ':')
            return dspy_fail(DSPY_ERR_ARG, "'%s': give a dataset name, e.g. hf:PolyAI/banking77:test", source);
        *kind = "hf";
    } else if (ends_with(source, ".jsonl") || ends_with(source, ".ndjson")) {
        *kind = "jsonl";
    } else if (ends_with(source, ".csv")) {
        *kind = "csv";
    } else {
        return dspy_fail(DSPY_ERR_ARG, "'%s': unknown data source; give a .jsonl or .csv file, or a Hugging Face "
                         "dataset as hf:DATASET[:CONFIG]:SPLIT (e.g. hf:PolyAI/banking77:test)", source);
    }
    return DSPY_OK;
}

/* ---- raw rows -------------------------------------------------------------------------------- */

typedef struct raw {
    dspy_dataset *rows;
    int64_t *line;       /* per row: its line in the file (0 for hf) */
    size_t n, cap;
    const char *name;    /* the source for messages */
    const char *unit;    /* "line" or "row" */
} raw;

static dspy_status raw_add(raw *r, dspy_example *ex, int64_t line) {
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 256;
        int64_t *l = realloc(r->line, cap * sizeof *l);
        if (!l) {
            dspy_example_free(ex);
            return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        }
        r->line = l;
        r->cap = cap;
    }
    dspy_status st = dspy_dataset_append(r->rows, ex);
    if (!st) r->line[r->n++] = line;
    return st;
}

static dspy_status jsonl_row(void *ud, const dspy_jsonl_line *line) {
    raw *r = ud;
    dspy_example *ex = NULL;
    dspy_status st = dspy_jsonl_line_example(line, &ex);
    return st ? st : raw_add(r, ex, dspy_jsonl_line_number(line));
}

static dspy_status check_file(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0)
        return dspy_fail(DSPY_ERR_NOTFOUND, "%s: no such file (give a path to a .jsonl or .csv file)", path);
    if (!S_ISREG(sb.st_mode)) return dspy_fail(DSPY_ERR_ARG, "%s: not a regular file", path);
    return DSPY_OK;
}

static dspy_status read_csv(const char *path, raw *r) {
    dspy_csv *csv = NULL;
    dspy_status st = dspy_csv_load(path, &csv);
    for (size_t i = 0; !st && i < dspy_csv_rows(csv); i++) {
        dspy_example *ex = NULL;
        st = dspy_example_new(&ex);
        for (size_t c = 0; !st && c < dspy_csv_cols(csv); c++) {
            size_t len;
            const char *cell = dspy_csv_cell(csv, i, c, &len);
            st = dspy_example_set_strn(ex, dspy_csv_header(csv, c), cell, len);
        }
        if (st) dspy_example_free(ex);
        else st = raw_add(r, ex, dspy_csv_row_line(csv, i));
    }
    dspy_csv_free(csv);
    return st;
}

/* hf:DATASET[:CONFIG]:SPLIT into its parts (malloc'd copy in *buf). */
static dspy_status hf_parts(const char *source, char **buf, const char **dataset, const char **config,
                            const char **split) {
    char *s = strdup(source + 3);
    if (!s) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    char *parts[4] = {0};
    int n = 0;
    for (char *p = s; n < 4;) {
        parts[n++] = p;
        char *c = strchr(p, ':');
        if (!c) break;
        *c = '\0';
        p = c + 1;
    }
    if (n > 3 || strchr(parts[n - 1], ':')) {
        free(s);
        return dspy_fail(DSPY_ERR_ARG, "'%s': expected hf:DATASET, hf:DATASET:SPLIT or hf:DATASET:CONFIG:SPLIT", source);
    }
    for (int i = 0; i < n; i++)
        if (!*parts[i]) {
            free(s);
            return dspy_fail(DSPY_ERR_ARG, "'%s': an empty part; expected hf:DATASET[:CONFIG]:SPLIT", source);
        }
    *buf = s;
    *dataset = parts[0];
    *config = n == 3 ? parts[1] : "default";
    *split = n == 1 ? "train" : parts[n - 1];
    return DSPY_OK;
}

/* ---- mapping --------------------------------------------------------------------------------- */

/* "'a', 'b', 'c'" of a row's columns. */
static void list_columns(dspy_str *s, const dspy_example *row) {
    for (size_t k = 0; k < dspy_example_len(row); k++)
        dspy_str_appendf(s, "%s'%s'", k ? ", " : "", dspy_example_key(row, k));
}

static dspy_status missing(const raw *r, size_t i, const dspy_example *row, const dspy_field_map *m, bool label) {
    dspy_str cols = DSPY_STR_INIT;
    list_columns(&cols, row);
    const char *col = m->column ? m->column : m->field;
    dspy_status st = dspy_fail(DSPY_ERR_FORMAT, "%s: %s %lld: no column '%s' for the %s field '%s' (the %s has %s); "
                               "map another column with %s=COLUMN", r->name, r->unit,
                               (long long)(r->line[i] ? r->line[i] : (int64_t)i), col, label ? "label" : "input",
                               m->field, r->unit, dspy_str_ok(&cols) ? dspy_str_cstr(&cols) : "?", m->field);
    dspy_str_free(&cols);
    return st;
}

/* The label value of a row as a string example field. */
static dspy_status set_label(const raw *r, size_t i, const dspy_value *v, const dspy_field_map *m,
                             const dspy_labels *names, dspy_example *ex) {
    long long where = (long long)(r->line[i] ? r->line[i] : (int64_t)i);
    const char *col = m->column ? m->column : m->field;
    size_t len;
    const char *s = dspy_value_str(v, &len);
    int64_t id;
    if (s) {
        if (len == 0) return dspy_fail(DSPY_ERR_FORMAT, "%s: %s %lld: the label '%s' is empty", r->name, r->unit, where, col);
        return dspy_example_set_value(ex, m->field, v);
    }
    if (dspy_value_int(v, &id)) {
        if (names) {
            const char *nm = dspy_labels_name(names, (int32_t)(id < 0 || id > INT32_MAX ? -1 : id));
            if (!nm)
                return dspy_fail(DSPY_ERR_FORMAT, "%s: %s %lld: label id %lld is outside the %zu class names", r->name,
                                 r->unit, where, (long long)id, dspy_labels_count(names));
            return dspy_example_set_str(ex, m->field, nm);
        }
        char buf[32];
        snprintf(buf, sizeof buf, "%lld", (long long)id);
        return dspy_example_set_str(ex, m->field, buf);
    }
    return dspy_fail(DSPY_ERR_FORMAT, "%s: %s %lld: the label '%s' must be a string or an integer class id", r->name,
                     r->unit, where, col);
}

static dspy_status map_rows(const raw *r, const dspy_data_params *p, const dspy_labels *names, dspy_dataset **out) {
    *out = NULL;
    dspy_dataset *ds = NULL;
    const char **keys = calloc(p->n_inputs, sizeof *keys);
    dspy_status st = keys ? dspy_dataset_new(&ds) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    for (size_t k = 0; !st && k < p->n_inputs; k++) keys[k] = p->inputs[k].field;
    for (size_t i = 0; !st && i < r->n; i++) {
        const dspy_example *row = dspy_dataset_get(r->rows, i);
        dspy_example *ex = NULL;
        st = dspy_example_new(&ex);
        for (size_t k = 0; !st && k < p->n_inputs; k++) {
            const dspy_field_map *m = &p->inputs[k];
            const dspy_value *v = dspy_example_get(row, m->column ? m->column : m->field);
            st = v ? dspy_example_set_value(ex, m->field, v) : missing(r, i, row, m, false);
        }
        if (!st && p->label) {
            const dspy_value *v = dspy_example_get(row, p->label->column ? p->label->column : p->label->field);
            if (!v || dspy_value_type_of(v) == DSPY_VALUE_NULL) {
                if (!p->label_optional) st = missing(r, i, row, p->label, true);
            } else {
                st = set_label(r, i, v, p->label, names, ex);
            }
        }
        if (!st) st = dspy_example_set_inputs(ex, keys, p->n_inputs);
        if (st) dspy_example_free(ex);
        else st = dspy_dataset_append(ds, ex);
    }
    free(keys);
    if (st) dspy_dataset_free(ds);
    else *out = ds;
    return st;
}

static dspy_status check_params(const dspy_data_params *p) {
    if (!p || !p->inputs || p->n_inputs == 0)
        return dspy_fail(DSPY_ERR_ARG, "data: at least one input field is needed (e.g. --input-fields text)");
    for (size_t i = 0; i < p->n_inputs; i++) {
        if (!p->inputs[i].field || !*p->inputs[i].field) return dspy_fail(DSPY_ERR_ARG, "data: an empty input field name");
        if (p->label && strcmp(p->inputs[i].field, p->label->field) == 0)
            return dspy_fail(DSPY_ERR_ARG, "data: '%s' is both an input field and the label field", p->label->field);
        for (size_t j = 0; j < i; j++)
            if (strcmp(p->inputs[i].field, p->inputs[j].field) == 0)
                return dspy_fail(DSPY_ERR_ARG, "data: the input field '%s' is given twice", p->inputs[i].field);
    }
    if (p->label && (!p->label->field || !*p->label->field))
        return dspy_fail(DSPY_ERR_ARG, "data: an empty label field name");
    return DSPY_OK;
}

dspy_status dspy_data_load(const char *source, const dspy_data_params *p, dspy_dataset **out,
                           dspy_labels **class_names) {
    *out = NULL;
    if (class_names) *class_names = NULL;
    const char *kind = NULL;
    dspy_status st = dspy_data_source_kind(source, &kind);
    if (!st) st = check_params(p);
    if (st) return st;
    raw r = {.name = source, .unit = "line"};
    dspy_labels *names = NULL;
    char *buf = NULL;
    if ((st = dspy_dataset_new(&r.rows))) return st;
    if (strcmp(kind, "jsonl") == 0) {
        if (!(st = check_file(source))) st = dspy_jsonl_read(source, NULL, jsonl_row, &r, NULL);
    } else if (strcmp(kind, "csv") == 0) {
        if (!(st = check_file(source))) st = read_csv(source, &r);
    } else {
        const char *dataset = NULL, *config = NULL, *split = NULL;
        r.unit = "row";
        dspy_dataset *rows = NULL;
        if (!(st = hf_parts(source, &buf, &dataset, &config, &split)))
            st = dspy_hf_load_split(&p->hf, dataset, config, split, &rows);
        for (size_t i = 0; !st && i < dspy_dataset_len(rows); i++) {
            dspy_example *ex = NULL;
            st = dspy_example_copy(dspy_dataset_get(rows, i), NULL, &ex);
            if (!st) st = raw_add(&r, ex, (int64_t)i);
        }
        dspy_dataset_free(rows);
        /* a label column holding integers is a ClassLabel when /info has names for it */
        const dspy_value *v0 = r.n && p->label
                                   ? dspy_example_get(dspy_dataset_get(r.rows, 0),
                                                      p->label->column ? p->label->column : p->label->field)
                                   : NULL;
        int64_t id;
        if (!st && v0 && dspy_value_int(v0, &id)) {
            char **nm = NULL;
            size_t nn = 0;
            dspy_status ist = dspy_hf_class_names(&p->hf, dataset, config,
                                                  p->label->column ? p->label->column : p->label->field, &nm, &nn);
            if (ist == DSPY_OK) st = dspy_labels_from_array((const char *const *)nm, nn, &names);
            else if (ist != DSPY_ERR_FORMAT) st = ist; /* FORMAT: not a ClassLabel, ids stay numbers */
            dspy_hf_names_free(nm, nn);
        }
    }
    if (!st && r.n == 0) st = dspy_fail(DSPY_ERR_FORMAT, "%s: no examples", source);
    if (!st) st = map_rows(&r, p, names, out);
    if (!st && class_names) {
        *class_names = names;
        names = NULL;
    }
    dspy_labels_free(names);
    dspy_dataset_free(r.rows);
    free(r.line);
    free(buf);
    return st;
}

/* ---- labels and splits ----------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

dspy_status dspy_labels_collect(const dspy_dataset *const *sets, size_t n, const char *field, dspy_labels **out) {
    *out = NULL;
    size_t total = 0, k = 0;
    for (size_t s = 0; s < n; s++) total += sets[s] ? dspy_dataset_len(sets[s]) : 0;
    const char **v = calloc(total ? total : 1, sizeof *v);
    if (!v) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    for (size_t s = 0; s < n; s++)
        for (size_t i = 0; sets[s] && i < dspy_dataset_len(sets[s]); i++) {
            const char *l = dspy_example_get_str(dspy_dataset_get(sets[s], i), field);
            if (l) v[k++] = l;
        }
    qsort(v, k, sizeof *v, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (u == 0 || strcmp(v[u - 1], v[i]) != 0) v[u++] = v[i];
    dspy_status st = u ? dspy_labels_from_array(v, u, out)
                       : dspy_fail(DSPY_ERR_ARG, "no example has a string '%s' to take the class labels from", field);
    free(v);
    return st;
}

dspy_status dspy_tutorial_split_pool(const dspy_dataset *pool, size_t n_raw, size_t n_train, size_t n_dev,
                                     uint64_t seed, dspy_dataset **trainset, dspy_dataset **devset) {
    if (trainset) *trainset = NULL;
    if (devset) *devset = NULL;
    size_t n = dspy_dataset_len(pool);
    if (n_raw == 0 || n_raw > n) n_raw = n;
    if (n_raw > INT32_MAX) return dspy_fail(DSPY_ERR_ARG, "tutorial split: the pool is too large");
    if (n_train + n_dev > n_raw)
        return dspy_fail(DSPY_ERR_ARG, "tutorial split: %zu train + %zu dev examples asked for, but only %zu rows are "
                         "used (the pool has %zu); ask for fewer", n_train, n_dev, n_raw, n);
    int32_t *idx = malloc((n_raw ? n_raw : 1) * sizeof *idx);
    if (!idx) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n_raw; i++) idx[i] = (int32_t)i;
    dspy_pyrandom r;
    dspy_pyrandom_seed(&r, seed);
    dspy_pyrandom_shuffle(&r, idx, n_raw, sizeof idx[0]);
    dspy_dataset *tr = NULL, *dev = NULL;
    dspy_status st = dspy_dataset_gather(pool, idx, n_train, &tr);
    if (!st) st = dspy_dataset_gather(pool, idx + n_train, n_dev, &dev);
    free(idx);
    return dspy_split_hand_out(st, tr, dev, trainset, devset);
}

dspy_status dspy_dataset_inputs_only(const dspy_dataset *ds, dspy_dataset **out) {
    *out = NULL;
    dspy_dataset *u = NULL;
    dspy_status st = dspy_dataset_new(&u);
    for (size_t i = 0; !st && i < dspy_dataset_len(ds); i++) {
        dspy_example *e = NULL;
        st = dspy_example_inputs(dspy_dataset_get(ds, i), &e);
        if (!st) st = dspy_dataset_append(u, e);
    }
    if (st) dspy_dataset_free(u);
    else *out = u;
    return st;
}
