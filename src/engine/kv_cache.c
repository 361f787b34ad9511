/* kv_cache.c — paged KV cache: one allocation per engine, blocks handed out from a free list. */
#include "engine/kv_cache.h"

#include <stdlib.h>
#include <string.h>

dspy_status dspy_kv_cache_init(dspy_kv_cache *kv, const dspy_model_config *c, int32_t n_tokens, int32_t block_size) {
    memset(kv, 0, sizeof *kv);
    if (block_size <= 0 || n_tokens <= 0)
        return dspy_fail(DSPY_ERR_ARG, "KV cache: block_size %d and capacity %d must be positive", block_size, n_tokens);
    kv->n_layers = c->num_hidden_layers;
    kv->kvd = c->num_key_value_heads * c->head_dim;
    kv->block_size = block_size;
    kv->n_blocks = (int32_t)(((int64_t)n_tokens + block_size - 1) / block_size);
    size_t floats = (size_t)kv->n_layers * (size_t)kv->n_blocks * (size_t)block_size * (size_t)kv->kvd;
    kv->k = calloc(floats, sizeof(float));
    kv->v = calloc(floats, sizeof(float));
    kv->free_list = malloc(sizeof(int32_t) * (size_t)kv->n_blocks);
    if (!kv->k || !kv->v || !kv->free_list) {
        dspy_kv_cache_free(kv);
        return dspy_fail(DSPY_ERR_NOMEM, "KV cache: cannot allocate %zu MiB for %d tokens (lower max_tokens_total)",
                         2 * floats * sizeof(float) >> 20, n_tokens);
    }
    /* Stack with block 0 on top, so allocation order is 0, 1, 2, ... */
    for (int32_t i = 0; i < kv->n_blocks; i++) kv->free_list[i] = kv->n_blocks - 1 - i;
    kv->n_free = kv->n_blocks;
    return DSPY_OK;
}

void dspy_kv_cache_free(dspy_kv_cache *kv) {
    free(kv->k);
    free(kv->v);
    free(kv->free_list);
    memset(kv, 0, sizeof *kv);
}

static size_t layer_floats(const dspy_kv_cache *kv) {
    return (size_t)kv->n_blocks * (size_t)kv->block_size * (size_t)kv->kvd;
}

float *dspy_kv_cache_k(dspy_kv_cache *kv, int32_t layer) { return kv->k + (size_t)layer * layer_floats(kv); }
float *dspy_kv_cache_v(dspy_kv_cache *kv, int32_t layer) { return kv->v + (size_t)layer * layer_floats(kv); }

int32_t dspy_kv_cache_blocks_for(const dspy_kv_cache *kv, int64_t n_tokens) {
    return (int32_t)((n_tokens + kv->block_size - 1) / kv->block_size);
}

bool dspy_kv_cache_alloc(dspy_kv_cache *kv, int32_t n, int32_t *table) {
    if (n > kv->n_free) return false;
    for (int32_t i = 0; i < n; i++) table[i] = kv->free_list[--kv->n_free];
    return true;
}

void dspy_kv_cache_release(dspy_kv_cache *kv, const int32_t *table, int32_t n) {
    for (int32_t i = n - 1; i >= 0; i--) kv->free_list[kv->n_free++] = table[i];
}
