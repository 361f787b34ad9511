/* dspy/str.h — growable byte strings and string views.
 *
 * dspy_str is a heap string builder: always NUL-terminated, may hold NUL bytes (use len).
 * An allocation failure makes the builder "failed": later appends are no-ops and
 * dspy_str_ok() returns false, so a long formatting sequence needs one check at the end.
 * dspy_strv is a non-owning (pointer, length) view.
 */
#ifndef DSPY_STR_H
#define DSPY_STR_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

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

DSPY_API void dspy_str_free(dspy_str *s);              /* frees the buffer, resets to empty */
DSPY_API void dspy_str_clear(dspy_str *s);             /* len = 0, keeps the buffer */
DSPY_API bool dspy_str_reserve(dspy_str *s, size_t extra);
DSPY_API void dspy_str_append(dspy_str *s, const char *z);
DSPY_API void dspy_str_appendn(dspy_str *s, const char *p, size_t n);
DSPY_API void dspy_str_appendv(dspy_str *s, dspy_strv v);
DSPY_API void dspy_str_appendc(dspy_str *s, char c);
DSPY_API void dspy_str_appendf(dspy_str *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends `n` copies of `z`. */
DSPY_API void dspy_str_repeat(dspy_str *s, const char *z, size_t n);
/* The contents ("" when empty; never NULL). */
DSPY_API const char *dspy_str_cstr(const dspy_str *s);
/* true unless an append failed. */
DSPY_API bool dspy_str_ok(const dspy_str *s);
/* Hands the buffer to the caller (free() it) and resets the builder. Returns NULL if the
 * builder failed (and sets dspy_errmsg); returns "" (allocated) for an empty builder. */
DSPY_API char *dspy_str_take(dspy_str *s);

/* Views. */
DSPY_API dspy_strv dspy_strv_of(const char *z);
DSPY_API dspy_strv dspy_strv_make(const char *p, size_t n);
DSPY_API bool dspy_strv_eq(dspy_strv a, dspy_strv b);
DSPY_API bool dspy_strv_eqz(dspy_strv a, const char *z);
DSPY_API bool dspy_strv_starts_with(dspy_strv a, const char *prefix);
DSPY_API bool dspy_strv_ends_with(dspy_strv a, const char *suffix);
/* Python str.strip() over ASCII whitespace and the Unicode whitespace Python strips. */
DSPY_API dspy_strv dspy_strv_strip(dspy_strv a);
DSPY_API dspy_strv dspy_strv_lstrip(dspy_strv a);
DSPY_API dspy_strv dspy_strv_rstrip(dspy_strv a);

/* Reads a whole file into *out (NUL-terminated, caller frees), *len its size. */
DSPY_API dspy_status dspy_read_file(const char *path, char **out, size_t *len);
/* Opens `path` read-only (close-on-exec) only if it is a regular file: a FIFO, socket, device
 * or directory is DSPY_ERR_IO ("is a FIFO, not a regular file") without blocking on it (the
 * open uses O_NONBLOCK, cleared afterwards). A missing file is DSPY_ERR_NOTFOUND. *fd is -1
 * on failure; *size (may be NULL) gets the file size. */
DSPY_API dspy_status dspy_open_regular(const char *path, int *fd, uint64_t *size);
/* dspy_read_file for files that must be regular (model and tokenizer files): refuses FIFOs,
 * devices and directories as dspy_open_regular does, and files over `max_bytes` (0 = no limit)
 * with DSPY_ERR_FORMAT naming the size, before reading anything. */
DSPY_API dspy_status dspy_read_regular_file(const char *path, size_t max_bytes, char **out, size_t *len);
/* Writes `n` bytes to `path` atomically (temp file in the same directory, then rename). */
DSPY_API dspy_status dspy_write_file(const char *path, const void *data, size_t n);
/* Writes the NUL-terminated `text` to DIR/NAME as dspy_write_file does, then frees it: the one
 * call after a renderer that returns a malloc'd string (config JSON, a state file), so a NULL
 * `text` (the renderer ran out of memory) is DSPY_ERR_NOMEM naming the file. */
DSPY_API dspy_status dspy_write_text_owned(const char *dir, const char *name, char *text);
/* Puts a fully written temporary file into place: flushes and fsyncs *fp (open on *tmp), closes
 * it, then renames *tmp to `path`. *fp is closed and set to NULL in every case. On success *tmp
 * (malloc'd) is freed and set to NULL: nothing is left to remove. On failure (DSPY_ERR_IO naming
 * the file and the error) *tmp stays for the caller to remove. The last step of the streaming
 * writers (safetensors, GGUF), so a reader never sees a half-written file. */
DSPY_API dspy_status dspy_file_commit(FILE **fp, char **tmp, const char *path);

/* Creates `dir` and its missing parents (mode 0755), like `mkdir -p`. An existing directory is
 * fine; an existing non-directory is DSPY_ERR_IO. The message names the path that failed. */
DSPY_API dspy_status dspy_mkdir_p(const char *dir);

/* UTF-8: true if [p, p+n) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
 * On false, *bad_off (if non-NULL) is the offset of the first bad byte. */
DSPY_API bool dspy_utf8_valid(const char *p, size_t n, size_t *bad_off);
/* Decodes one code point at p (valid UTF-8 assumed up to `n` bytes); returns its length
 * (1..4) and writes the code point, or returns 0 on invalid input. */
DSPY_API int dspy_utf8_decode(const char *p, size_t n, unsigned *cp);
/* Encodes cp into buf (4 bytes); returns the length. */
DSPY_API int dspy_utf8_encode(unsigned cp, char *buf);

#ifdef __cplusplus
}
#endif

#endif
