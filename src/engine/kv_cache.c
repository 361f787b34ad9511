/* kv_cache.c — paged KV cache: one allocation per engine on its backend. The arrays are zeroed
 * once so that no slot ever holds garbage (a padded decode row of a captured graph may read a
 * block nobody wrote). */
#include "engine/kv_cache.h"

#include <stdlib.h>
#include <string.h>

dspy_status dspy_kv_cache_init(dspy_kv_cache *kv, dspy_backend *be, const dspy_model_config *c, int32_t n_tokens,
                               int32_t block_size) {
    memset(kv, 0, sizeof *kv);
    if (block_size <= 0 || n_tokens <= 0)
        return dspy_fail(DSPY_ERR_ARG, "KV cache: block_size %d and capacity %d must be positive", block_size, n_tokens);
    kv->be = be;
    kv->n_layers = c->num_hidden_layers;
    kv->kvd = c->num_key_value_heads * c->head_dim;
    kv->block_size = block_size;
    kv->n_blocks = (int32_t)(((int64_t)n_tokens + block_size - 1) / block_size);
    int64_t n = (int64_t)kv->n_layers * kv->n_blocks * block_size * kv->kvd;
    size_t bytes = (size_t)n * dspy_dtype_size(be->act_dtype);
    void *k = NULL, *v = NULL;
    dspy_status st = be->ops->alloc(be, bytes, &k);
    if (!st) st = be->ops->alloc(be, bytes, &v);
    kv->k = dspy_bt(be, k, n, be->act_dtype);
    kv->v = dspy_bt(be, v, n, be->act_dtype);
    if (!st) st = be->ops->fill(be, kv->k, 0.0f);
    if (!st) st = be->ops->fill(be, kv->v, 0.0f);
    if (st) {
        dspy_kv_cache_free(kv);
        return dspy_fail_append(st, " (KV cache of %zu MiB for %d tokens; lower --kv-tokens/max_tokens_total)",
                                2 * bytes >> 20, n_tokens);
    }
    return DSPY_OK;
}

void dspy_kv_cache_free(dspy_kv_cache *kv) {
    if (kv->be) {
        kv->be->ops->free(kv->be, kv->k.data);
        kv->be->ops->free(kv->be, kv->v.data);
    }
    memset(kv, 0, sizeof *kv);
}

static int64_t layer_elems(const dspy_kv_cache *kv) { return (int64_t)kv->n_blocks * kv->block_size * kv->kvd; }

dspy_tensor dspy_kv_cache_k(const dspy_kv_cache *kv, int32_t layer) {
    return dspy_tensor_slice(kv->k, layer * layer_elems(kv), layer_elems(kv));
}
dspy_tensor dspy_kv_cache_v(const dspy_kv_cache *kv, int32_t layer) {
    return dspy_tensor_slice(kv->v, layer * layer_elems(kv), layer_elems(kv));
}

int32_t dspy_kv_cache_blocks_for(const dspy_kv_cache *kv, int64_t n_tokens) {
    return (int32_t)((n_tokens + kv->block_size - 1) / kv->block_size);
}

