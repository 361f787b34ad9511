/* block_pool.c — reference-counted KV blocks and the prefix cache (block_pool.h).
 *
 * The name table is open addressing with linear probing and tombstone-free deletion (backward
 * shift), so lookups stay O(1) however many blocks are evicted and reused.
 */
#include "engine/block_pool.h"

#include <stdlib.h>
#include <string.h>

static uint64_t mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t dspy_block_name(uint64_t parent, const int32_t *tokens, int32_t block_size) {
    uint64_t h = mix(parent ^ 0x6a09e667f3bcc908ull);
    for (int32_t i = 0; i < block_size; i++) h = mix(h ^ (uint32_t)tokens[i]);
    return h ? h : 1; /* 0 means "not cached" */
}

dspy_status dspy_block_pool_init(dspy_block_pool *p, int32_t n_blocks, int32_t block_size) {
    memset(p, 0, sizeof *p);
    p->n_blocks = n_blocks;
    p->block_size = block_size;
    p->ht_cap = 16;
    while (p->ht_cap < 2 * n_blocks) p->ht_cap *= 2;
    size_t nb = (size_t)n_blocks;
    p->ref = calloc(nb, sizeof *p->ref);
    p->name = calloc(nb, sizeof *p->name);
    p->parent = calloc(nb, sizeof *p->parent);
    p->tokens = malloc(nb * (size_t)block_size * sizeof *p->tokens);
    p->free_list = malloc(nb * sizeof *p->free_list);
    p->prev = malloc(nb * sizeof *p->prev);
    p->next = malloc(nb * sizeof *p->next);
    p->ht_key = calloc((size_t)p->ht_cap, sizeof *p->ht_key);
    p->ht_val = malloc((size_t)p->ht_cap * sizeof *p->ht_val);
    if (!p->ref || !p->name || !p->parent || !p->tokens || !p->free_list || !p->prev || !p->next || !p->ht_key ||
        !p->ht_val) {
        dspy_block_pool_free(p);
        return dspy_fail(DSPY_ERR_NOMEM, "KV block pool: out of memory for %d blocks", n_blocks);
    }
    /* a stack with block 0 on top, so allocation order is 0, 1, 2, ... */
    for (int32_t i = 0; i < n_blocks; i++) p->free_list[i] = n_blocks - 1 - i;
    p->n_free = n_blocks;
    p->lru_head = p->lru_tail = -1;
    return DSPY_OK;
}

void dspy_block_pool_free(dspy_block_pool *p) {
    free(p->ref);
    free(p->name);
    free(p->parent);
    free(p->tokens);
    free(p->free_list);
    free(p->prev);
    free(p->next);
    free(p->ht_key);
    free(p->ht_val);
    memset(p, 0, sizeof *p);
}

int32_t dspy_block_pool_available(const dspy_block_pool *p) { return p->n_free + p->n_lru; }

int32_t dspy_block_pool_cached(const dspy_block_pool *p) {
    int32_t n = 0;
    for (int32_t i = 0; i < p->n_blocks; i++) n += p->name[i] != 0;
    return n;
}

/* ---- the name table ---------------------------------------------------------------------- */

static int32_t ht_find(const dspy_block_pool *p, uint64_t key) {
    uint32_t m = (uint32_t)p->ht_cap - 1;
    for (uint32_t i = (uint32_t)key & m;; i = (i + 1) & m) {
        if (p->ht_key[i] == 0) return -1;
        if (p->ht_key[i] == key) return (int32_t)i;
    }
}

static void ht_insert(dspy_block_pool *p, uint64_t key, int32_t block) {
    uint32_t m = (uint32_t)p->ht_cap - 1, i = (uint32_t)key & m;
    while (p->ht_key[i] != 0) i = (i + 1) & m;
    p->ht_key[i] = key;
    p->ht_val[i] = block;
}

/* Removes slot i and shifts the following run back so that no probe chain breaks. */
static void ht_remove_slot(dspy_block_pool *p, uint32_t i) {
    uint32_t m = (uint32_t)p->ht_cap - 1, j = i;
    p->ht_key[i] = 0;
    for (;;) {
        j = (j + 1) & m;
        if (p->ht_key[j] == 0) return;
        uint32_t home = (uint32_t)p->ht_key[j] & m;
        /* entry j may move to the hole i when its home is not in (i, j] (cyclically) */
        bool in_between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_between) {
            p->ht_key[i] = p->ht_key[j];
            p->ht_val[i] = p->ht_val[j];
            p->ht_key[j] = 0;
            i = j;
        }
    }
}

/* ---- the LRU list -------------------------------------------------------------------------- */

static void lru_remove(dspy_block_pool *p, int32_t b) {
    if (p->prev[b] >= 0) p->next[p->prev[b]] = p->next[b];
    else p->lru_head = p->next[b];
    if (p->next[b] >= 0) p->prev[p->next[b]] = p->prev[b];
    else p->lru_tail = p->prev[b];
    p->n_lru--;
}

static void lru_push(dspy_block_pool *p, int32_t b) {
    p->prev[b] = p->lru_tail;
    p->next[b] = -1;
    if (p->lru_tail >= 0) p->next[p->lru_tail] = b;
    else p->lru_head = b;
    p->lru_tail = b;
    p->n_lru++;
}

/* ---- blocks -------------------------------------------------------------------------------- */

bool dspy_block_pool_alloc(dspy_block_pool *p, int32_t *block) {
    int32_t b;
    if (p->n_free > 0) {
        b = p->free_list[--p->n_free];
    } else if (p->n_lru > 0) { /* evict the least recently used cached block */
        b = p->lru_head;
        lru_remove(p, b);
        int32_t slot = ht_find(p, p->name[b]);
        if (slot >= 0 && p->ht_val[slot] == b) ht_remove_slot(p, (uint32_t)slot);
        p->name[b] = 0;
    } else {
        return false;
    }
    p->ref[b] = 1;
    *block = b;
    return true;
}

void dspy_block_pool_ref(dspy_block_pool *p, int32_t b) {
    if (p->ref[b]++ == 0 && p->name[b] != 0) lru_remove(p, b);
}

void dspy_block_pool_unref(dspy_block_pool *p, int32_t b) {
    if (--p->ref[b] > 0) return;
    if (p->name[b] != 0) lru_push(p, b);
    else p->free_list[p->n_free++] = b;
}

int32_t dspy_block_pool_lookup(dspy_block_pool *p, uint64_t name, uint64_t parent, const int32_t *tokens) {
    p->lookups++;
    int32_t slot = ht_find(p, name);
    if (slot < 0) return -1;
    int32_t b = p->ht_val[slot];
    if (p->parent[b] != parent ||
        memcmp(p->tokens + (size_t)b * p->block_size, tokens, sizeof(int32_t) * (size_t)p->block_size) != 0)
        return -1; /* a hash collision: never reuse the wrong keys and values */
    return b;
}

void dspy_block_pool_publish(dspy_block_pool *p, int32_t block, uint64_t name, uint64_t parent,
                             const int32_t *tokens) {
    if (p->name[block] != 0 || ht_find(p, name) >= 0) return;
    p->name[block] = name;
    p->parent[block] = parent;
    memcpy(p->tokens + (size_t)block * p->block_size, tokens, sizeof(int32_t) * (size_t)p->block_size);
    ht_insert(p, name, block);
}
