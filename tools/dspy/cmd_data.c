/* cmd_data.c — `dspy data show banking77|SRC`: print a dataset split as JSONL or TSV.
 *
 * Banking77 comes from a local folder (--data-dir, e.g. shared/data/banking77) or, without it,
 * from the Hugging Face dataset viewer API (cached under --cache-dir). Any other SRC is a
 * .jsonl/.csv file or hf:DATASET[:CONFIG]:SPLIT read as `dspy compile`/`dspy eval` read it
 * (dspy/data_source.h): the mapped --input-fields and --label-field, labels optional.
 *
 * Output formats (stdout, one example per line, in split order):
 *   jsonl  {"text":"...","label":"card_arrival"}  (compact JSON, UTF-8 raw)
 *   tsv    a header line with the field names, then one line per example. Only the fields
 *          the split's examples have are printed: tutorial-train examples are unlabeled in
 *          the tutorial, so that split prints the single column `text`. Cells are escaped so
 *          a line is a record: backslash -> \\, tab -> \t, newline -> \n, carriage return -> \r.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "dspy/data_source.h"
#include "dspy/datasets.h"
#include "dspy/str.h"

static void tsv_cell(dspy_str *s, const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        switch (p[i]) {
        case '\\': dspy_str_append(s, "\\\\"); break;
        case '\t': dspy_str_append(s, "\\t"); break;
        case '\n': dspy_str_append(s, "\\n"); break;
        case '\r': dspy_str_append(s, "\\r"); break;
        default: dspy_str_appendc(s, p[i]);
        }
    }
}

/* One TSV cell for a value: strings as they are, other values as compact JSON. */
static void tsv_value(dspy_str *s, const dspy_value *v) {
    size_t n;
    const char *z = v ? dspy_value_str(v, &n) : NULL;
    if (z) {
        tsv_cell(s, z, n);
        return;
    }
    if (!v) return;
    dspy_str j = DSPY_STR_INIT;
    dspy_value_append_json(&j, v);
    tsv_cell(s, dspy_str_cstr(&j), j.len);
    if (!dspy_str_ok(&j)) s->failed = true;
    dspy_str_free(&j);
}

/* A source other than banking77, with the field mapping. */
static dspy_status load_source(const dspy_args *a, const char *src, dspy_dataset **ds) {
    dspy_field_map in[16], lab;
    char fbuf[16][64], lbuf[64], spec[16][192];
    size_t n = 0;
    int k = dspy_args_count(a, "input-fields");
    for (int i = 0; i < (k ? k : 1); i++) {
        const char *v = k ? dspy_args_at(a, "input-fields", i) : "text";
        for (const char *p = v; p;) {
            const char *c = strchr(p, ',');
            size_t len = c ? (size_t)(c - p) : strlen(p);
            if (n >= 16 || len >= sizeof spec[0]) return dspy_fail(DSPY_ERR_ARG, "--input-fields: too many or too long");
            memcpy(spec[n], p, len);
            spec[n][len] = '\0';
            dspy_status st = dspy_field_map_parse(spec[n], fbuf[n], sizeof fbuf[n], &in[n]);
            if (st) return dspy_fail_wrap(st, "--input-fields");
            n++;
            p = c ? c + 1 : NULL;
        }
    }
    dspy_status st = dspy_field_map_parse(dspy_args_get(a, "label-field"), lbuf, sizeof lbuf, &lab);
    if (st) return dspy_fail_wrap(st, "--label-field");
    dspy_data_params p = dspy_data_params_default();
    p.inputs = in;
    p.n_inputs = n;
    p.label = &lab;
    p.label_optional = true;
    p.hf.cache_dir = dspy_args_get(a, "cache-dir");
    return dspy_data_load(src, &p, ds, NULL);
}

static int show(const dspy_args *a) {
    const char *name = a->pos[1];
    bool banking = strcmp(name, "banking77") == 0;
    dspy_banking77_split split = DSPY_BANKING77_TRAIN;
    if (banking && dspy_banking77_split_parse(dspy_args_get(a, "split"), &split)) return dspy_cli_usage_error("data show");
    const char *format = dspy_args_get(a, "format");
    bool tsv = strcmp(format, "tsv") == 0;
    if (!tsv && strcmp(format, "jsonl") != 0) {
        fprintf(stderr, "error: dspy data show: unknown format '%s'; choose jsonl or tsv\n", format);
        return 2;
    }
    long limit = -1;
    if (!dspy_args_int(a, "limit", &limit)) return 2;
    if (dspy_args_get(a, "limit") && limit < 0) {
        fprintf(stderr, "error: dspy data show: --limit must be >= 0\n");
        return 2;
    }
    dspy_dataset *ds;
    if (banking) {
        dspy_banking77_params p = dspy_banking77_params_default();
        p.data_dir = dspy_args_get(a, "data-dir");
        p.hf.cache_dir = dspy_args_get(a, "cache-dir");
        if (dspy_banking77_load(&p, split, &ds, NULL)) return dspy_cli_error("data show");
    } else {
        const char *kind;
        if (dspy_data_source_kind(name, &kind)) return dspy_cli_usage_error("data show");
        dspy_status st = load_source(a, name, &ds);
        if (st) return st == DSPY_ERR_IO || st == DSPY_ERR_REMOTE || st == DSPY_ERR_TIMEOUT ? dspy_cli_error("data show")
                                                                                         : dspy_cli_usage_error("data show");
    }
    size_t n = dspy_dataset_len(ds);
    if (limit >= 0 && (size_t)limit < n) n = (size_t)limit;
    dspy_str line = DSPY_STR_INIT;
    const dspy_example *first = dspy_dataset_get(ds, 0);
    if (tsv && first) {
        for (size_t k = 0; k < dspy_example_len(first); k++) {
            if (k) dspy_str_appendc(&line, '\t');
            const char *key = dspy_example_key(first, k);
            tsv_cell(&line, key, strlen(key));
        }
        dspy_str_appendc(&line, '\n');
        fwrite(dspy_str_cstr(&line), 1, line.len, stdout);
    }
    for (size_t i = 0; i < n && dspy_str_ok(&line); i++) {
        const dspy_example *ex = dspy_dataset_get(ds, i);
        dspy_str_clear(&line);
        if (tsv) {
            for (size_t k = 0; k < dspy_example_len(first); k++) {
                if (k) dspy_str_appendc(&line, '\t');
                tsv_value(&line, dspy_example_get(ex, dspy_example_key(first, k)));
            }
        } else {
            dspy_example_append_json(&line, ex, false);
        }
        dspy_str_appendc(&line, '\n');
        fwrite(dspy_str_cstr(&line), 1, line.len, stdout);
    }
    bool ok = dspy_str_ok(&line);
    dspy_str_free(&line);
    dspy_dataset_free(ds);
    if (!ok) {
        fprintf(stderr, "error: dspy data show: out of memory\n");
        return 1;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "error: dspy data show: writing to stdout failed\n");
        return 1;
    }
    return 0;
}

int cmd_data(int argc, char **argv) {
    static const dspy_opt opts[] = {
        {"data-dir", "DIR", "local folder with train.csv, test.csv, labels.txt (no download)", false, false, NULL},
        {"split", "NAME", "train, test, tutorial-train (500, unlabeled) or tutorial-dev (100)", false, false, "train"},
        {"limit", "N", "print at most N examples", false, false, NULL},
        {"format", "FMT", "jsonl or tsv (header line, \\t \\n \\\\ escaped)", false, false, "jsonl"},
        {"cache-dir", "DIR", "download cache [default: $DSPY_CACHEDIR/hf or ~/.dspy_cache/hf]", false, false, NULL},
        {"input-fields", "F[=COL],..", "SRC: the input fields and the columns they read", false, true, NULL},
        {"label-field", "F[=COL]", "SRC: the label field and its column (optional in the rows)", false, false, "label"},
        {0}};
    dspy_args a;
    int rc = dspy_args_parse_pos(&a, "data", "show banking77|SRC [options]",
                             "Print a dataset split: Banking77 train/test, or the DSPy tutorial's "
                             "500/100 trainset/devset.\nWithout --data-dir the data is downloaded "
                             "from the Hugging Face dataset viewer API.\nSRC: a .jsonl or .csv file or "
                             "hf:DATASET[:CONFIG]:SPLIT, mapped with --input-fields/--label-field.",
                             opts, 2, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (a.npos != 2 || strcmp(a.pos[0], "show") != 0) {
        fprintf(stderr, "error: dspy data: expected 'dspy data show banking77|SRC [options]' (see 'dspy data --help')\n");
        return 2;
    }
    return show(&a);
}
