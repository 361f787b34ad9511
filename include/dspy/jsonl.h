/* dspy/jsonl.h — JSON Lines: read a file line by line, write one compact object per line.
 *
 * Reading: each line ("\n" or "\r\n" ends it; the last line may lack it) holds one JSON value;
 * blank and whitespace-only lines are skipped. Each good line is handed to a callback as a
 * dspy_jsonl_line (raw text, 1-based line number, parsed value). A bad line (invalid UTF-8,
 * invalid JSON, not an object) is reported with its line number and what is wrong; by default
 * reading stops there, and with keep_going it continues with the next line.
 *
 * Writing: one compact JSON object per line ({"a":1,"b":"x"}: no spaces, keys in insertion
 * order, non-ASCII UTF-8 written raw, i.e. ensure_ascii off), each line written with one
 * write() on a file opened in append mode. Whole-file writes go through a temp file and a
 * rename, so a reader never sees half a file.
 *
 * Not handled: values Python's json accepts but JSON does not (NaN, Infinity), integers
 * beyond 64 bits. Reals are written by jansson with 17 significant digits (not Python's
 * shortest repr). Uses jansson internally; no jansson type appears here.
 */
#ifndef DSPY_JSONL_H
#define DSPY_JSONL_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "dspy/example.h"
#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- reading --------------------------------------------------------------------------- */

/* One good line, valid only during the callback that receives it. */
typedef struct dspy_jsonl_line dspy_jsonl_line;

/* 1-based line number in the file. */
DSPY_API int64_t dspy_jsonl_line_number(const dspy_jsonl_line *line);
/* The raw line (without its line end), not NUL-terminated; *len gets its length. */
DSPY_API const char *dspy_jsonl_line_text(const dspy_jsonl_line *line, size_t *len);
/* The parsed value, borrowed (valid during the callback; use dspy_example_set_value to keep
 * it, which shares it). */
DSPY_API const dspy_value *dspy_jsonl_line_value(const dspy_jsonl_line *line);
/* A new example with the members of the line's object (input keys None). DSPY_ERR_FORMAT when
 * the line is not an object (only possible with allow_non_object). */
DSPY_API dspy_status dspy_jsonl_line_example(const dspy_jsonl_line *line, dspy_example **out);

/* Called for each good line. Returning non-OK stops reading; that status (and its message)
 * is what the read function returns. */
typedef dspy_status (*dspy_jsonl_line_fn)(void *ud, const dspy_jsonl_line *line);
/* Called for each bad line with its number and a message "what is wrong". */
typedef void (*dspy_jsonl_error_fn)(void *ud, int64_t line, const char *message);

typedef struct dspy_jsonl_read_params {
    bool keep_going;        /* continue after a bad line (default false: stop at the first) */
    size_t max_errors;      /* with keep_going: fail once this many lines were bad; 0 = no limit */
    bool allow_non_object;  /* accept lines holding arrays, strings, numbers (default false) */
    dspy_jsonl_error_fn on_error; /* may be NULL */
    void *error_ud;
} dspy_jsonl_read_params;

DSPY_API dspy_jsonl_read_params dspy_jsonl_read_params_default(void);

/* Parses JSONL text (`name` names it in messages; NULL reads "<jsonl>"). `p` may be NULL for
 * the defaults. *n_bad (may be NULL) gets the number of bad lines.
 * Returns DSPY_OK when every line was good, or when keep_going is set and max_errors was not
 * reached (bad lines then reach only on_error and *n_bad; one of them must be non-NULL, else
 * DSPY_ERR_ARG). Otherwise DSPY_ERR_FORMAT "name: line N: what is wrong" (the first bad line;
 * with keep_going the message also gives the count). A callback's error is returned as is. */
DSPY_API dspy_status dspy_jsonl_parse(const char *data, size_t len, const char *name,
                                      const dspy_jsonl_read_params *p, dspy_jsonl_line_fn fn, void *ud,
                                      size_t *n_bad);
/* The same over a file, read line by line. Adds DSPY_ERR_IO. */
DSPY_API dspy_status dspy_jsonl_read(const char *path, const dspy_jsonl_read_params *p,
                                     dspy_jsonl_line_fn fn, void *ud, size_t *n_bad);
/* Reads a file of JSON objects into a dataset (one example per good line, in order; input keys
 * None). Errors as dspy_jsonl_read; *out is NULL on failure. */
DSPY_API dspy_status dspy_jsonl_load_examples(const char *path, const dspy_jsonl_read_params *p,
                                              dspy_dataset **out, size_t *n_bad);

/* ---- writing --------------------------------------------------------------------------- */

typedef struct dspy_jsonl_writer dspy_jsonl_writer;

/* Opens `path` for appending (created if missing; `truncate` empties it first). Not
 * thread-safe: one writer per thread, or a lock around it. Errors: DSPY_ERR_IO. */
DSPY_API dspy_status dspy_jsonl_writer_open(const char *path, bool truncate, dspy_jsonl_writer **out);
/* Appends the example's fields as one line (dspy_ keys included when include_dspy). */
DSPY_API dspy_status dspy_jsonl_writer_write_example(dspy_jsonl_writer *w, const dspy_example *ex,
                                                     bool include_dspy);
/* Appends a JSON object given as text (any formatting; re-rendered compact). DSPY_ERR_ARG when
 * the text is not one JSON object. */
DSPY_API dspy_status dspy_jsonl_writer_write_json(dspy_jsonl_writer *w, const char *json, size_t len);
/* Closes the file; returns DSPY_ERR_IO if closing failed. NULL-safe (returns DSPY_OK). */
DSPY_API dspy_status dspy_jsonl_writer_close(dspy_jsonl_writer *w);

/* Writes every example of `ds` as a JSONL file, atomically (temp file + rename). */
DSPY_API dspy_status dspy_jsonl_write_examples(const char *path, const dspy_dataset *ds, bool include_dspy);

#ifdef __cplusplus
}
#endif

#endif
