/* dspy/csv.h — RFC 4180 CSV reader with a header row.
 *
 * Parses a whole CSV text into a table of cells: records end with CRLF, LF or a bare CR
 * (outside quotes), fields are separated by ',', a field may be quoted with '"' and then hold
 * ',', line breaks and '""' (one literal quote). Bytes inside quotes are kept exactly (a CRLF
 * inside a quoted field stays CRLF). The final record may lack its line end. A UTF-8 byte order
 * mark at the start is skipped. Empty lines between records are skipped (as Python's
 * csv.DictReader does). The first record is the header; every later record must have the same
 * number of fields.
 *
 * Not supported: other delimiters or quote characters, Python's skipinitialspace (spaces around
 * fields are data), text after a closing quote (an error: quotes inside a quoted field must be
 * doubled). A '"' inside an unquoted field is kept as a literal character.
 *
 * Errors (DSPY_ERR_FORMAT) name the file and the 1-based line: an unterminated quote gives the
 * line where the quoted field started; invalid UTF-8 gives the line and the byte offset (in the
 * file and in the line). Follows RFC 4180 and shared/data/banking77/README.md.
 *
 * A dspy_csv is immutable after parsing: reads from several threads are safe.
 */
#ifndef DSPY_CSV_H
#define DSPY_CSV_H

#include "dspy/export.h"

#include <stddef.h>
#include <stdint.h>
#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_csv dspy_csv;

/* Parses `len` bytes of `data` (need not be NUL-terminated). `name` (e.g. the file path) is
 * used in error messages; NULL reads as "<csv>". On success *out owns copies of every cell
 * (data may be freed). Errors: DSPY_ERR_FORMAT (bad CSV or UTF-8, empty input, ragged row),
 * DSPY_ERR_NOMEM. *out is NULL on failure. */
DSPY_API dspy_status dspy_csv_parse(const char *data, size_t len, const char *name, dspy_csv **out);

/* Reads and parses the file at `path`. Errors as dspy_csv_parse plus DSPY_ERR_IO. */
DSPY_API dspy_status dspy_csv_load(const char *path, dspy_csv **out);

/* Frees the table. NULL-safe. */
DSPY_API void dspy_csv_free(dspy_csv *csv);

/* Number of data records (header excluded) and of columns (fields in the header). */
DSPY_API size_t dspy_csv_rows(const dspy_csv *csv);
DSPY_API size_t dspy_csv_cols(const dspy_csv *csv);

/* Header name of column `col`, or NULL when out of range. */
DSPY_API const char *dspy_csv_header(const dspy_csv *csv, size_t col);

/* Index of the column whose header equals `name`, or -1. */
DSPY_API int dspy_csv_col_index(const dspy_csv *csv, const char *name);

/* Cell text of data record `row` (0-based, header excluded), column `col`: NUL-terminated
 * UTF-8 owned by the table, or NULL when out of range. *len (if non-NULL) gets its byte length
 * (a cell may hold U+0000). */
DSPY_API const char *dspy_csv_cell(const dspy_csv *csv, size_t row, size_t col, size_t *len);

/* 1-based line of the file where data record `row` starts (0 when out of range); for error
 * messages about a record's content. */
DSPY_API int32_t dspy_csv_row_line(const dspy_csv *csv, size_t row);

/* The name given at parse time (the path for dspy_csv_load). */
DSPY_API const char *dspy_csv_name(const dspy_csv *csv);

#ifdef __cplusplus
}
#endif

#endif
