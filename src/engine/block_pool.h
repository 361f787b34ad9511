/* block_pool.h — KV-cache block ids with reference counts and a prefix cache (private to
 * src/engine).
 *
 * Every block of the paged cache is free, referenced by one or more sequences, or cached: full
 * of a known token prefix, unreferenced, kept for reuse until its memory is needed. A full block
 * is named by a chain hash over (the previous block's name, its block_size tokens) — the whole
 * prefix up to it — and the pool keeps each cached block's parent name and tokens, so a lookup
 * is verified exactly (a hash collision can never hand out the wrong keys and values).
 * Unreferenced cached blocks form an LRU list; allocation takes a free block first, then evicts
 * the least recently used cached one. Sequences share full blocks only (they never write into a
 * block another sequence references: a shared prefix ends at a block boundary), so no copy is
 * ever needed.
 *
 * Not thread-safe: one engine, one thread. Sizes are fixed at init; nothing allocates later.
 */
#ifndef DSPY_ENGINE_BLOCK_POOL_H
#define DSPY_ENGINE_BLOCK_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "dspy/status.h"

typedef struct dspy_block_pool {
    int32_t n_blocks, block_size;
    int32_t *ref;           /* (n_blocks) reference counts */
    uint64_t *name;         /* (n_blocks) chain hash of a cached block; 0 = not cached */
    uint64_t *parent;       /* (n_blocks) the previous block's name (0 for the first block) */
    int32_t *tokens;        /* (n_blocks, block_size) a cached block's tokens */
    int32_t *free_list;     /* stack of free, uncached blocks */
    int32_t n_free;
    int32_t *prev, *next;   /* LRU list of unreferenced cached blocks (-1 = none) */
    int32_t lru_head, lru_tail, n_lru; /* head = least recently used */
    uint64_t *ht_key;       /* open-addressing table name -> block; key 0 = empty */
    int32_t *ht_val;
    int32_t ht_cap;         /* a power of two >= 2 n_blocks */
    int64_t hit_tokens, lookups; /* prefix-cache statistics */
} dspy_block_pool;

dspy_status dspy_block_pool_init(dspy_block_pool *p, int32_t n_blocks, int32_t block_size);
void dspy_block_pool_free(dspy_block_pool *p);

/* Blocks that can be handed out now: free ones plus evictable cached ones. */
int32_t dspy_block_pool_available(const dspy_block_pool *p);
/* Takes a block (reference count 1): a free one, else the least recently used cached one (which
 * stops being cached). false when none is available. */
bool dspy_block_pool_alloc(dspy_block_pool *p, int32_t *block);
/* One more reference to a block (a cached, unreferenced block leaves the LRU list). */
void dspy_block_pool_ref(dspy_block_pool *p, int32_t block);
/* One reference less; at zero a cached block joins the LRU list (most recent end), an uncached
 * one the free list. */
void dspy_block_pool_unref(dspy_block_pool *p, int32_t block);

/* The chain name of a full block of `tokens` (block_size ids) after the block named `parent`
 * (0 for the first block of a sequence). Never 0. */
uint64_t dspy_block_name(uint64_t parent, const int32_t *tokens, int32_t block_size);
/* The cached block holding exactly (parent, tokens), or -1. Counts a lookup. */
int32_t dspy_block_pool_lookup(dspy_block_pool *p, uint64_t name, uint64_t parent, const int32_t *tokens);
/* Records that `block` (referenced, fully written) holds (parent, tokens) under `name`, so later
 * prompts can reuse it. A no-op when that name is already cached (by another block) or the
 * block is already named. */
void dspy_block_pool_publish(dspy_block_pool *p, int32_t block, uint64_t name, uint64_t parent,
                             const int32_t *tokens);
/* Cached blocks (referenced or not). */
int32_t dspy_block_pool_cached(const dspy_block_pool *p);

#endif
