/* csv.c — RFC 4180 CSV reader (see include/dspy/csv.h for the accepted dialect).
 *
 * One pass over the bytes after a UTF-8 check of the whole input. Cell texts are copied into
 * one buffer, each followed by a NUL; cells are addressed by (offset, length) pairs, header
 * record first. Line numbers count LF, CRLF and bare CR as one line end each, inside quoted
 * fields too, so they match what an editor shows.
 */
#include "dspy/csv.h"

#include <stdlib.h>
#include <string.h>

#include "dspy/str.h"

struct dspy_csv {
    char *name;
    char *text;      /* all cells, each NUL-terminated */
    size_t *off;     /* (nrec * ncols) cell offsets into text */
    size_t *len;     /* cell lengths */
    int32_t *line;   /* nrec record start lines */
    size_t nrec;     /* records including the header */
    size_t ncols;
};

typedef struct {
    dspy_str text;
    size_t *off, *len;
    size_t ncells, cap_cells;
    int32_t *line;
    size_t nrec, cap_rec;
} builder;

static dspy_status nomem(const char *name) { return dspy_fail(DSPY_ERR_NOMEM, "%s: out of memory parsing CSV", name); }

static bool push_cell(builder *b, size_t start) {
    if (b->ncells == b->cap_cells) {
        size_t nc = b->cap_cells ? b->cap_cells * 2 : 256;
        size_t *o = realloc(b->off, nc * sizeof *o);
        if (!o) return false;
        b->off = o;
        size_t *l = realloc(b->len, nc * sizeof *l);
        if (!l) return false;
        b->len = l;
        b->cap_cells = nc;
    }
    b->off[b->ncells] = start;
    b->len[b->ncells] = b->text.len - start;
    b->ncells++;
    dspy_str_appendc(&b->text, '\0');
    return dspy_str_ok(&b->text);
}

static bool push_record(builder *b, int32_t line) {
    if (b->nrec == b->cap_rec) {
        size_t nc = b->cap_rec ? b->cap_rec * 2 : 64;
        int32_t *l = realloc(b->line, nc * sizeof *l);
        if (!l) return false;
        b->line = l;
        b->cap_rec = nc;
    }
    b->line[b->nrec++] = line;
    return true;
}

static void builder_free(builder *b) {
    dspy_str_free(&b->text);
    free(b->off);
    free(b->len);
    free(b->line);
}

/* Line (1-based) and column byte offset (0-based) of byte `off`. */
static void locate(const char *p, size_t off, int32_t *line, size_t *col) {
    int32_t ln = 1;
    size_t start = 0;
    for (size_t i = 0; i < off; i++) {
        if (p[i] == '\n' || (p[i] == '\r' && p[i + 1] != '\n')) { /* i + 1 <= off < len */
            ln++;
            start = i + 1;
        }
    }
    *line = ln;
    *col = off - start;
}

static bool is_line_end(char c) { return c == '\n' || c == '\r'; }

/* Consumes one line end at *pos (CRLF, LF or CR). */
static void skip_line_end(const char *p, size_t n, size_t *pos) {
    if (p[*pos] == '\r' && *pos + 1 < n && p[*pos + 1] == '\n') (*pos)++;
    (*pos)++;
}

dspy_status dspy_csv_parse(const char *data, size_t n, const char *name, dspy_csv **out) {
    *out = NULL;
    if (!name) name = "<csv>";
    if (!data && n) return dspy_fail(DSPY_ERR_ARG, "%s: NULL data", name);
    size_t bad;
    if (!dspy_utf8_valid(data, n, &bad)) {
        int32_t line;
        size_t col;
        locate(data, bad, &line, &col);
        return dspy_fail(DSPY_ERR_FORMAT,
                         "%s: line %d: invalid UTF-8 at byte offset %zu (byte %zu of the line, "
                         "value 0x%02X); save the file as UTF-8",
                         name, line, bad, col + 1, (unsigned)(unsigned char)data[bad]);
    }
    builder b = {0};
    dspy_status st = DSPY_OK;
    size_t pos = 0;
    if (n >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0) pos = 3;
    int32_t line = 1;
    size_t ncols = 0;
    while (pos < n) {
        if (is_line_end(data[pos])) { /* empty line */
            skip_line_end(data, n, &pos);
            line++;
            continue;
        }
        int32_t rec_line = line;
        size_t first_cell = b.ncells;
        for (;;) {
            size_t start = b.text.len;
            if (pos < n && data[pos] == '"') {
                int32_t qline = line;
                pos++;
                for (;;) {
                    if (pos >= n) {
                        st = dspy_fail(DSPY_ERR_FORMAT,
                                       "%s: line %d: unterminated quoted field (the '\"' that opens "
                                       "it is never closed); close the field with '\"' and write "
                                       "a quote inside it as '\"\"'",
                                       name, qline);
                        goto fail;
                    }
                    char c = data[pos];
                    if (c == '"') {
                        if (pos + 1 < n && data[pos + 1] == '"') {
                            dspy_str_appendc(&b.text, '"');
                            pos += 2;
                            continue;
                        }
                        pos++;
                        break;
                    }
                    if (c == '\n' || (c == '\r' && !(pos + 1 < n && data[pos + 1] == '\n'))) line++;
                    /* a quoted run without quotes is copied in one go */
                    size_t run = pos + 1;
                    while (run < n && data[run] != '"' && !is_line_end(data[run])) run++;
                    dspy_str_appendn(&b.text, data + pos, run - pos);
                    pos = run;
                }
                if (pos < n && data[pos] != ',' && !is_line_end(data[pos])) {
                    st = dspy_fail(DSPY_ERR_FORMAT,
                                   "%s: line %d: unexpected character '%c' after the closing quote of "
                                   "a field; a quote inside a quoted field must be written '\"\"'",
                                   name, line, data[pos]);
                    goto fail;
                }
            } else {
                size_t run = pos;
                while (run < n && data[run] != ',' && !is_line_end(data[run])) run++;
                dspy_str_appendn(&b.text, data + pos, run - pos);
                pos = run;
            }
            if (!push_cell(&b, start)) {
                st = nomem(name);
                goto fail;
            }
            if (pos < n && data[pos] == ',') {
                pos++;
                continue;
            }
            if (pos < n) {
                skip_line_end(data, n, &pos);
                line++;
            }
            break;
        }
        size_t nf = b.ncells - first_cell;
        if (b.nrec == 0) {
            ncols = nf;
        } else if (nf != ncols) {
            st = dspy_fail(DSPY_ERR_FORMAT,
                           "%s: line %d: record has %zu field%s but the header has %zu; quote "
                           "fields that contain ',' or line breaks",
                           name, rec_line, nf, nf == 1 ? "" : "s", ncols);
            goto fail;
        }
        if (!push_record(&b, rec_line)) {
            st = nomem(name);
            goto fail;
        }
    }
    if (b.nrec == 0) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s: empty CSV: no header row", name);
        goto fail;
    }
    dspy_csv *csv = calloc(1, sizeof *csv);
    if (!csv) {
        st = nomem(name);
        goto fail;
    }
    csv->name = strdup(name);
    if (!csv->name) {
        free(csv);
        st = nomem(name);
        goto fail;
    }
    csv->text = dspy_str_take(&b.text);
    if (!csv->text) {
        free(csv->name);
        free(csv);
        st = nomem(name);
        goto fail;
    }
    csv->off = b.off;
    csv->len = b.len;
    csv->line = b.line;
    csv->nrec = b.nrec;
    csv->ncols = ncols;
    *out = csv;
    return DSPY_OK;
fail:
    builder_free(&b);
    return st;
}

dspy_status dspy_csv_load(const char *path, dspy_csv **out) {
    *out = NULL;
    char *data;
    size_t n;
    dspy_status st = dspy_read_file(path, &data, &n);
    if (st) return st;
    st = dspy_csv_parse(data, n, path, out);
    free(data);
    return st;
}

void dspy_csv_free(dspy_csv *csv) {
    if (!csv) return;
    free(csv->name);
    free(csv->text);
    free(csv->off);
    free(csv->len);
    free(csv->line);
    free(csv);
}

size_t dspy_csv_rows(const dspy_csv *csv) { return csv->nrec - 1; }
size_t dspy_csv_cols(const dspy_csv *csv) { return csv->ncols; }
const char *dspy_csv_name(const dspy_csv *csv) { return csv->name; }

const char *dspy_csv_header(const dspy_csv *csv, size_t col) {
    return col < csv->ncols ? csv->text + csv->off[col] : NULL;
}

int dspy_csv_col_index(const dspy_csv *csv, const char *name) {
    for (size_t i = 0; i < csv->ncols; i++)
        if (strcmp(csv->text + csv->off[i], name) == 0) return (int)i;
    return -1;
}

const char *dspy_csv_cell(const dspy_csv *csv, size_t row, size_t col, size_t *len) {
    if (row + 1 >= csv->nrec || col >= csv->ncols) {
        if (len) *len = 0;
        return NULL;
    }
    size_t k = (row + 1) * csv->ncols + col;
    if (len) *len = csv->len[k];
    return csv->text + csv->off[k];
}

int32_t dspy_csv_row_line(const dspy_csv *csv, size_t row) {
    return row + 1 < csv->nrec ? csv->line[row + 1] : 0;
}
