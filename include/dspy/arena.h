/* dspy/arena.h — bump allocator for per-call data (DESIGN.md §5).
 *
 * Strings, JSON and predictions produced by one program call live in an arena and die with it.
 * Blocks grow geometrically; nothing is freed individually. Not thread-safe: one arena per
 * thread or per call.
 */
#ifndef DSPY_ARENA_H
#define DSPY_ARENA_H

#include "dspy/export.h"

#include <stddef.h>
#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_arena dspy_arena;

/* New arena whose first block holds at least `first_block` bytes (0 = 64 KiB). NULL on OOM. */
DSPY_API dspy_arena *dspy_arena_new(size_t first_block);
/* Frees every block. NULL-safe. */
DSPY_API void dspy_arena_free(dspy_arena *a);
/* Forgets every allocation but keeps the first block for reuse. */
DSPY_API void dspy_arena_reset(dspy_arena *a);

/* `n` bytes aligned to 16; NULL on OOM (and dspy_errmsg set). Zeroed by _alloc0. */
DSPY_API void *dspy_arena_alloc(dspy_arena *a, size_t n);
DSPY_API void *dspy_arena_alloc0(dspy_arena *a, size_t n);
/* Copies of a NUL-terminated string / `n` bytes plus a NUL. */
DSPY_API char *dspy_arena_strdup(dspy_arena *a, const char *s);
DSPY_API char *dspy_arena_strndup(dspy_arena *a, const char *s, size_t n);
/* printf into the arena. */
DSPY_API char *dspy_arena_printf(dspy_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Total bytes handed out since creation or the last reset. */
DSPY_API size_t dspy_arena_used(const dspy_arena *a);

#ifdef __cplusplus
}
#endif

#endif
