/* server/kv_budget.h — the KV cache `dspy serve` holds when --kv-tokens is 0 (private to
 * src/server/).
 *
 * On the CPU, and when the device cannot say what is free: min(context length, 16,384) tokens,
 * the engine's own default. On a GPU: kv_memory_percent % of the device memory free once the
 * weights are loaded (vLLM's gpu_memory_utilization, but of what is free rather than of the
 * whole card, so that a trainer or a second server on the same GPU keeps its share), no more
 * than max_seqs sequences of the whole context can fill, no less than the CPU default, and few
 * enough that every slot index times the row width fits the kernels' 32-bit offsets.
 */
#ifndef DSPY_SERVER_KV_BUDGET_H
#define DSPY_SERVER_KV_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/model.h"

/* Bytes one token's keys and values take over all layers at `elem_bytes` per element. */
int64_t dspy_srv_kv_bytes_per_token(const dspy_model_config *c, int32_t elem_bytes);

/* The KV tokens to allocate. on_gpu false (or free_bytes 0: unknown) gives the CPU default;
 * percent in 1..95; max_seqs >= 1; elem_bytes the cache's element size (2 for BF16). */
int32_t dspy_srv_kv_budget(const dspy_model_config *c, bool on_gpu, size_t free_bytes, int32_t percent,
                           int32_t max_seqs, int32_t elem_bytes);

#endif
