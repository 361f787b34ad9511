/* kv_cache.h — paged KV cache for the engine (private to src/engine).
 *
 * Per layer, keys and values live in one array of slots (n_blocks * block_size, NKV * HS) in the
 * backend's activation dtype (F32 on the CPU, BF16 on CUDA) and memory; a sequence owns a list
 * of blocks (its block table) and position p sits in slot
 * table[p / block_size] * block_size + p % block_size. Which block belongs to whom (reference
 * counts, the prefix cache) is the block pool's business (engine/block_pool.h), not this file's.
 */
#ifndef DSPY_ENGINE_KV_CACHE_H
#define DSPY_ENGINE_KV_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "dspy/model.h"
#include "dspy/status.h"
#include "kern/backend.h"

typedef struct dspy_kv_cache {
    dspy_backend *be;   /* borrowed: whose memory the arrays are */
    int32_t n_layers;
    int32_t kvd;        /* NKV * HS elements per slot */
    int32_t block_size;
    int32_t n_blocks;
    dspy_tensor k, v;   /* (L, n_blocks * block_size, kvd) each */
} dspy_kv_cache;

/* Room for at least `n_tokens` tokens (rounded up to whole blocks), allocated through `be`. */
dspy_status dspy_kv_cache_init(dspy_kv_cache *kv, dspy_backend *be, const dspy_model_config *c, int32_t n_tokens,
                               int32_t block_size);
void dspy_kv_cache_free(dspy_kv_cache *kv);

/* The layer's key / value slot arrays: (n_blocks * block_size, kvd). */
dspy_tensor dspy_kv_cache_k(const dspy_kv_cache *kv, int32_t layer);
dspy_tensor dspy_kv_cache_v(const dspy_kv_cache *kv, int32_t layer);

/* Blocks needed for n tokens. */
int32_t dspy_kv_cache_blocks_for(const dspy_kv_cache *kv, int64_t n_tokens);

#endif
