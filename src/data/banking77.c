/* banking77.c — class label lists and Banking77 loading (see include/dspy/datasets.h).
 *
 * Local folder: labels.txt gives the HF ClassLabel order; train.csv/test.csv rows (header
 * text,category) become {text, label} with the category checked against labels.txt.
 * Remote: hf_datasets.c gives rows {text, label:int} and the label names from /info; the
 * id is replaced by its name, as the tutorial does. Follows shared/data/banking77/README.md.
 */
#include <stdlib.h>
#include <string.h>

#include "dspy/csv.h"
#include "dspy/datasets.h"
#include "dspy/str.h"

struct dspy_labels {
    char **names;
    size_t n;
};

void dspy_labels_free(dspy_labels *l) {
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    free(l);
}

size_t dspy_labels_count(const dspy_labels *l) { return l->n; }

const char *dspy_labels_name(const dspy_labels *l, int32_t id) {
    return id >= 0 && (size_t)id < l->n ? l->names[id] : NULL;
}

int32_t dspy_labels_id(const dspy_labels *l, const char *name) {
    for (size_t i = 0; name && i < l->n; i++)
        if (strcmp(l->names[i], name) == 0) return (int32_t)i;
    return -1;
}

/* Appends a copy of name[0..len) unless it is a duplicate (returns 1) or OOM (returns -1). */
static int add_label(dspy_labels *l, const char *name, size_t len) {
    for (size_t i = 0; i < l->n; i++)
        if (strlen(l->names[i]) == len && memcmp(l->names[i], name, len) == 0) return 1;
    char **nn = realloc(l->names, (l->n + 1) * sizeof *nn);
    if (!nn) return -1;
    l->names = nn;
    if (!(l->names[l->n] = strndup(name, len))) return -1;
    l->n++;
    return 0;
}

dspy_status dspy_labels_from_array(const char *const *names, size_t n, dspy_labels **out) {
    *out = NULL;
    dspy_labels *l = calloc(1, sizeof *l);
    if (!l) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        int rc = names[i] ? add_label(l, names[i], strlen(names[i])) : 1;
        if (rc) {
            dspy_labels_free(l);
            return rc < 0 ? dspy_fail(DSPY_ERR_NOMEM, "out of memory")
                          : dspy_fail(DSPY_ERR_ARG, "labels: name %zu ('%s') is NULL or a duplicate",
                                      i, names[i] ? names[i] : "(null)");
        }
    }
    *out = l;
    return DSPY_OK;
}

dspy_status dspy_labels_load(const char *path, dspy_labels **out) {
    *out = NULL;
    char *data;
    size_t len;
    dspy_status st = dspy_read_file(path, &data, &len);
    if (st) return st;
    size_t bad;
    dspy_labels *l = NULL;
    if (!dspy_utf8_valid(data, len, &bad)) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: invalid UTF-8 at byte offset %zu", path, bad);
        goto done;
    }
    if (!(l = calloc(1, sizeof *l))) {
        st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        goto done;
    }
    size_t pos = 0;
    for (int line = 1; pos < len; line++) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - data) : len, n = end - pos;
        if (n && data[pos + n - 1] == '\r') n--;
        if (n == 0) {
            st = dspy_fail(DSPY_ERR_FORMAT, "%s: line %d: empty label name; one name per line, no blank lines",
                           path, line);
            goto done;
        }
        int rc = add_label(l, data + pos, n);
        if (rc) {
            st = rc < 0 ? dspy_fail(DSPY_ERR_NOMEM, "out of memory")
                        : dspy_fail(DSPY_ERR_FORMAT, "%s: line %d: duplicate label '%.*s'", path, line,
                                    (int)n, data + pos);
            goto done;
        }
        pos = end + 1;
    }
    if (l->n == 0) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: no label names", path);
        goto done;
    }
    *out = l;
    l = NULL;
done:
    dspy_labels_free(l);
    free(data);
    return st;
}

/* ---- Banking77 --------------------------------------------------------------------------- */

static const char *const k_split_names[] = {"train", "test", "tutorial-train", "tutorial-dev"};

dspy_status dspy_banking77_split_parse(const char *name, dspy_banking77_split *out) {
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, k_split_names[i]) == 0) {
            *out = (dspy_banking77_split)i;
            return DSPY_OK;
        }
    return dspy_fail(DSPY_ERR_ARG,
                     "banking77: unknown split '%s'; choose train, test, tutorial-train or tutorial-dev",
                     name ? name : "(null)");
}

const char *dspy_banking77_split_name(dspy_banking77_split split) {
    return (unsigned)split < 4 ? k_split_names[split] : "?";
}

dspy_banking77_params dspy_banking77_params_default(void) {
    dspy_banking77_params p = {0};
    p.hf = dspy_hf_params_default();
    return p;
}

static const char *const k_text[] = {"text"};

/* New example {text, label: name} with input key text. */
static dspy_status make_example(const char *text, size_t text_len, const char *label,
                                dspy_example **out) {
    dspy_status st = dspy_example_new(out);
    if (!st) st = dspy_example_set_strn(*out, "text", text, text_len);
    if (!st) st = dspy_example_set_str(*out, "label", label);
    if (!st) st = dspy_example_set_inputs(*out, k_text, 1);
    if (st) {
        dspy_example_free(*out);
        *out = NULL;
    }
    return st;
}

/* The end of a loader: on failure frees what was built and gives NULLs; else hands the
 * dataset out, and the labels too when the caller wants them. */
static void hand_out(dspy_status st, dspy_dataset *ds, dspy_labels *labels, dspy_dataset **out,
                     dspy_labels **labels_out) {
    if (st) {
        dspy_dataset_free(ds);
        dspy_labels_free(labels);
        ds = NULL;
        labels = NULL;
    }
    *out = ds;
    if (labels_out) *labels_out = labels;
    else dspy_labels_free(labels);
}

static dspy_status load_local(const char *dir, const char *file, dspy_dataset **out,
                              dspy_labels **labels_out) {
    dspy_str path = DSPY_STR_INIT;
    dspy_labels *labels = NULL;
    dspy_csv *csv = NULL;
    dspy_dataset *ds = NULL;
    dspy_str_appendf(&path, "%s/labels.txt", dir);
    dspy_status st = dspy_labels_load(dspy_str_cstr(&path), &labels);
    if (st) goto done;
    dspy_str_clear(&path);
    dspy_str_appendf(&path, "%s/%s", dir, file);
    if ((st = dspy_csv_load(dspy_str_cstr(&path), &csv))) goto done;
    int ct = dspy_csv_col_index(csv, "text"), cc = dspy_csv_col_index(csv, "category");
    if (ct < 0 || cc < 0) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: line 1: expected the header 'text,category'", path.ptr);
        goto done;
    }
    if ((st = dspy_dataset_new(&ds))) goto done;
    for (size_t r = 0; r < dspy_csv_rows(csv); r++) {
        size_t tl;
        const char *text = dspy_csv_cell(csv, r, (size_t)ct, &tl);
        const char *cat = dspy_csv_cell(csv, r, (size_t)cc, NULL);
        if (dspy_labels_id(labels, cat) < 0) {
            st = dspy_fail(DSPY_ERR_FORMAT, "%s: line %d: category '%s' is not one of the %zu names in %s/labels.txt",
                           path.ptr, (int)dspy_csv_row_line(csv, r), cat, dspy_labels_count(labels), dir);
            goto done;
        }
        dspy_example *ex;
        if ((st = make_example(text, tl, cat, &ex))) goto done;
        if ((st = dspy_dataset_append(ds, ex))) goto done;
    }
done:
    hand_out(st, ds, labels, out, labels_out);
    dspy_csv_free(csv);
    dspy_str_free(&path);
    return st;
}

static dspy_status load_hf(const dspy_hf_params *hf, const char *split, dspy_dataset **out,
                           dspy_labels **labels_out) {
    char **names = NULL;
    size_t nnames = 0;
    dspy_dataset *rows = NULL, *ds = NULL;
    dspy_labels *labels = NULL;
    dspy_status st = dspy_hf_class_names(hf, DSPY_BANKING77_HF_NAME, "default", "label", &names, &nnames);
    if (st) goto done;
    if ((st = dspy_labels_from_array((const char *const *)names, nnames, &labels))) goto done;
    if ((st = dspy_hf_load_split(hf, DSPY_BANKING77_HF_NAME, "default", split, &rows))) goto done;
    if ((st = dspy_dataset_new(&ds))) goto done;
    for (size_t i = 0; i < dspy_dataset_len(rows); i++) {
        const dspy_example *row = dspy_dataset_get(rows, i);
        size_t tl;
        const char *text = dspy_value_str(dspy_example_get(row, "text"), &tl);
        int64_t id;
        bool has_id = dspy_value_int(dspy_example_get(row, "label"), &id);
        const char *name = has_id && id >= 0 && id < (int64_t)nnames ? names[id] : NULL;
        if (!text || !name) {
            st = dspy_fail(DSPY_ERR_FORMAT,
                           "hf: %s/%s row %zu: expected {\"text\": string, \"label\": 0..%zu}",
                           DSPY_BANKING77_HF_NAME, split, i, nnames ? nnames - 1 : 0);
            goto done;
        }
        dspy_example *ex;
        if ((st = make_example(text, tl, name, &ex))) goto done;
        if ((st = dspy_dataset_append(ds, ex))) goto done;
    }
done:
    hand_out(st, ds, labels, out, labels_out);
    dspy_dataset_free(rows);
    dspy_hf_names_free(names, nnames);
    return st;
}

dspy_status dspy_banking77_load(const dspy_banking77_params *p, dspy_banking77_split split,
                                dspy_dataset **out, dspy_labels **labels) {
    *out = NULL;
    if (labels) *labels = NULL;
    dspy_banking77_params d = p ? *p : dspy_banking77_params_default();
    if ((unsigned)split > DSPY_BANKING77_TUTORIAL_DEV)
        return dspy_fail(DSPY_ERR_ARG, "banking77: invalid split %d", (int)split);
    bool test = split == DSPY_BANKING77_TEST;
    dspy_dataset *base = NULL;
    dspy_status st = d.data_dir ? load_local(d.data_dir, test ? "test.csv" : "train.csv", &base, labels)
                                : load_hf(&d.hf, test ? "test" : "train", &base, labels);
    if (st) return st;
    if (split == DSPY_BANKING77_TRAIN || split == DSPY_BANKING77_TEST) {
        *out = base;
        return DSPY_OK;
    }
    dspy_dataset *tr = NULL, *dev = NULL;
    st = dspy_banking77_tutorial_split(base, split == DSPY_BANKING77_TUTORIAL_TRAIN ? &tr : NULL,
                                       split == DSPY_BANKING77_TUTORIAL_DEV ? &dev : NULL);
    dspy_dataset_free(base);
    if (st) {
        if (labels) {
            dspy_labels_free(*labels);
            *labels = NULL;
        }
        return st;
    }
    *out = tr ? tr : dev;
    return DSPY_OK;
}
