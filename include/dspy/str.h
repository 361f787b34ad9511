/* dspy/str.h — growable byte strings and string views.
 *
 * dspy_str is a heap string builder: always NUL-terminated, may hold NUL bytes (use len).
 * An allocation failure makes the builder "failed": later appends are no-ops and
 * dspy_str_ok() returns false, so a long formatting sequence needs one check at the end.
 * dspy_strv is a non-owning (pointer, length) view.
 */
#ifndef DSPY_STR_H
#define DSPY_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "dspy/status.h"

typedef struct dspy_str {
    char *ptr;   /* NUL-terminated buffer, or NULL before the first append */
    size_t len;  /* bytes in use, excluding the NUL */
    size_t cap;  /* bytes allocated */
    bool failed; /* an allocation failed */
} dspy_str;

typedef struct dspy_strv {
    const char *ptr;
    size_t len;
} dspy_strv;

#define DSPY_STR_INIT {NULL, 0, 0, false}

void dspy_str_free(dspy_str *s);              /* frees the buffer, resets to empty */
void dspy_str_clear(dspy_str *s);             /* len = 0, keeps the buffer */
bool dspy_str_reserve(dspy_str *s, size_t extra);
void dspy_str_append(dspy_str *s, const char *z);
void dspy_str_appendn(dspy_str *s, const char *p, size_t n);
void dspy_str_appendv(dspy_str *s, dspy_strv v);
void dspy_str_appendc(dspy_str *s, char c);
void dspy_str_appendf(dspy_str *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends `n` copies of `z`. */
void dspy_str_repeat(dspy_str *s, const char *z, size_t n);
/* The contents ("" when empty; never NULL). */
const char *dspy_str_cstr(const dspy_str *s);
/* true unless an append failed. */
bool dspy_str_ok(const dspy_str *s);
/* Hands the buffer to the caller (free() it) and resets the builder. Returns NULL if the
 * builder failed (and sets dspy_errmsg); returns "" (allocated) for an empty builder. */
char *dspy_str_take(dspy_str *s);

/* Views. */
dspy_strv dspy_strv_of(const char *z);
dspy_strv dspy_strv_make(const char *p, size_t n);
bool dspy_strv_eq(dspy_strv a, dspy_strv b);
bool dspy_strv_eqz(dspy_strv a, const char *z);
bool dspy_strv_starts_with(dspy_strv a, const char *prefix);
bool dspy_strv_ends_with(dspy_strv a, const char *suffix);
/* Python str.strip() over ASCII whitespace and the Unicode whitespace Python strips. */
dspy_strv dspy_strv_strip(dspy_strv a);
dspy_strv dspy_strv_lstrip(dspy_strv a);
dspy_strv dspy_strv_rstrip(dspy_strv a);

/* Reads a whole file into *out (NUL-terminated, caller frees), *len its size. */
dspy_status dspy_read_file(const char *path, char **out, size_t *len);
/* Opens `path` read-only (close-on-exec) only if it is a regular file: a FIFO, socket, device
 * or directory is DSPY_ERR_IO ("is a FIFO, not a regular file") without blocking on it (the
 * open uses O_NONBLOCK, cleared afterwards). A missing file is DSPY_ERR_NOTFOUND. *fd is -1
 * on failure; *size (may be NULL) gets the file size. */
dspy_status dspy_open_regular(const char *path, int *fd, uint64_t *size);
/* dspy_read_file for files that must be regular (model and tokenizer files): refuses FIFOs,
 * devices and directories as dspy_open_regular does, and files over `max_bytes` (0 = no limit)
 * with DSPY_ERR_FORMAT naming the size, before reading anything. */
dspy_status dspy_read_regular_file(const char *path, size_t max_bytes, char **out, size_t *len);
/* Writes `n` bytes to `path` atomically (temp file in the same directory, then rename). */
dspy_status dspy_write_file(const char *path, const void *data, size_t n);

/* Creates `dir` and its missing parents (mode 0755), like `mkdir -p`. An existing directory is
 * fine; an existing non-directory is DSPY_ERR_IO. The message names the path that failed. */
dspy_status dspy_mkdir_p(const char *dir);

/* UTF-8: true if [p, p+n) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
 * On false, *bad_off (if non-NULL) is the offset of the first bad byte. */
bool dspy_utf8_valid(const char *p, size_t n, size_t *bad_off);
/* Decodes one code point at p (valid UTF-8 assumed up to `n` bytes); returns its length
 * (1..4) and writes the code point, or returns 0 on invalid input. */
int dspy_utf8_decode(const char *p, size_t n, unsigned *cp);
/* Encodes cp into buf (4 bytes); returns the length. */
int dspy_utf8_encode(unsigned cp, char *buf);

#endif
