/* dspy/cache.h — the LM response cache: a bounded in-memory LRU over an SQLite file.
 *
 * Follows DSPy 3.3.1's dspy.cache (spec dspy_behaviour.md §6.4): two layers, memory first, then
 * disk (a disk hit is copied into memory); keys are the SHA-256 hex of the request serialised
 * as compact JSON with keys sorted recursively (orjson OPT_SORT_KEYS), after dropping the
 * ignored top-level keys. What it does not reproduce: DSPy's on-disk format (diskcache +
 * pickle) and its 30 GB size limit — our disk layer is one SQLite table that is never evicted.
 *
 * Disk layer: `<dir>/lm_cache.sqlite`, WAL journal, synchronous=FULL, busy_timeout. Each
 * thread uses its own connection (a pool hands one connection to one thread at a time), so
 * any number of threads and processes may read and write the same file at once. A put is
 * committed before dspy_cache_put returns: a value stored before a crash (even kill -9) is
 * there after it.
 *
 * Values are JSON trees. get returns a deep copy the caller owns, so callers may mutate it.
 * Thread safety: every function may be called from many threads on the same cache.
 * Lifetime: caches are reference counted; dspy_cache_free drops one reference, and the last
 * one closes the connections (no thread may still be inside a call on it).
 */
#ifndef DSPY_CACHE_H
#define DSPY_CACHE_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/json.h"
#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_cache dspy_cache;

typedef struct dspy_cache_params {
    const char *dir;           /* directory of the SQLite file; NULL = $DSPY_CACHEDIR, or
                                  ~/.dspy_cache when that is unset or empty. Created (mkdir -p). */
    bool disk;                 /* true: use the disk layer (default); false: memory only */
    size_t memory_max_entries; /* LRU bound; 0 disables the memory layer. Default 1000000. */
    int32_t busy_timeout_ms;   /* how long a writer waits for another's lock. Default 10000. */
} dspy_cache_params;

DSPY_API dspy_cache_params dspy_cache_params_default(void);

/* Opens (creating if needed) a cache. Fails with DSPY_ERR_IO naming the path when the
 * directory or database cannot be created or opened. *out holds one reference. */
DSPY_API dspy_status dspy_cache_open(const dspy_cache_params *p, dspy_cache **out);
/* Adds a reference and returns `c` (NULL-safe). */
DSPY_API dspy_cache *dspy_cache_retain(dspy_cache *c);
/* Drops one reference (NULL-safe); the last one closes the cache. */
DSPY_API void dspy_cache_free(dspy_cache *c);

/* The SQLite file path, or NULL for a memory-only cache. Valid while the cache lives. */
DSPY_API const char *dspy_cache_path(const dspy_cache *c);

/* Cache key of `request` (a JSON object): copy its top-level members except the keys listed in
 * `ignored` (NULL-terminated array, or NULL), serialise compact with sorted keys and raw UTF-8,
 * and write the SHA-256 as 64 lowercase hex digits plus NUL into `out`.
 * DSPY_ERR_ARG when `request` is not an object. */
DSPY_API dspy_status dspy_cache_key(const dspy_json *request, const char *const *ignored, char out[65]);

/* Looks `key` up in memory, then on disk. A hit sets *out to a new reference (a deep copy);
 * a miss returns DSPY_OK with *out = NULL. Disk errors return DSPY_ERR_IO. */
DSPY_API dspy_status dspy_cache_get(dspy_cache *c, const char *key, dspy_json **out);
/* Stores `value` (copied) under `key` in memory and on disk; the disk write is committed when
 * this returns DSPY_OK. On a disk error the value is still in memory and DSPY_ERR_IO is
 * returned (the stats count it). */
DSPY_API dspy_status dspy_cache_put(dspy_cache *c, const char *key, const dspy_json *value);

/* Entries currently held in memory. */
DSPY_API size_t dspy_cache_memory_count(dspy_cache *c);
/* Empties the memory layer (the disk is untouched). */
DSPY_API void dspy_cache_clear_memory(dspy_cache *c);

typedef struct dspy_cache_stats {
    uint64_t memory_hits, disk_hits, misses, puts, disk_errors;
} dspy_cache_stats;
DSPY_API void dspy_cache_get_stats(dspy_cache *c, dspy_cache_stats *out);

/* The process-wide default cache (dspy.cache), opened on first use with
 * dspy_cache_params_default() — so $DSPY_CACHEDIR is read then. *out is a new reference
 * (release with dspy_cache_free). Errors (unwritable directory) are returned every time the
 * open is attempted; nothing falls back silently. */
DSPY_API dspy_status dspy_cache_default(dspy_cache **out);
/* Replaces the default cache (dspy.configure_cache): opens a new one with `p`; LMs that resolve
 * the default afterwards use it; calls in flight finish on the old one. */
DSPY_API dspy_status dspy_cache_configure(const dspy_cache_params *p);

#ifdef __cplusplus
}
#endif
#endif
