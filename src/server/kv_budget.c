/* kv_budget.c — the KV cache size `dspy serve` picks when --kv-tokens is 0 (server/kv_budget.h). */
#include "server/kv_budget.h"

int64_t dspy_srv_kv_bytes_per_token(const dspy_model_config *c, int32_t elem_bytes) {
    /* keys and values, every layer, NKV heads of HS elements */
    return 2 * (int64_t)c->num_hidden_layers * c->num_key_value_heads * c->head_dim * elem_bytes;
}

int32_t dspy_srv_kv_budget(const dspy_model_config *c, bool on_gpu, size_t free_bytes, int32_t percent,
                           int32_t max_seqs, int32_t elem_bytes) {
    int64_t ctx = c->max_position_embeddings;
    int64_t small = ctx < 16384 ? ctx : 16384;
    int64_t per_token = dspy_srv_kv_bytes_per_token(c, elem_bytes);
    if (!on_gpu || free_bytes == 0 || per_token <= 0) return (int32_t)small;
    int64_t n = (int64_t)((double)free_bytes * (double)percent / 100.0 / (double)per_token);
    int64_t most = (int64_t)max_seqs * ctx;               /* more than this is never used */
    int64_t row = (int64_t)c->num_key_value_heads * c->head_dim;
    int64_t addressable = (INT32_MAX / row) & ~(int64_t)4095; /* slot * row stays a 32-bit offset */
    if (n > most) n = most;
    if (n > addressable) n = addressable;
    if (n < small) n = small;
    return (int32_t)n;
}
