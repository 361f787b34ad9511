/* test_kv_budget.c — the KV cache `dspy serve` sizes when --kv-tokens is 0 (server/kv_budget.h):
 * bytes per token from the config, the CPU default, the share of the free GPU memory, and the
 * caps (max_seqs whole contexts, 32-bit slot offsets, the small default as a floor). */
#include <stdint.h>

#include "check.h"
#include "dspy/model.h"
#include "server/kv_budget.h"

/* The Llama-3.2-1B shape: 16 layers, 8 KV heads of 64, a 131,072-token context. */
static dspy_model_config shape_1b(void) {
    dspy_model_config c = {0};
    c.num_hidden_layers = 16, c.num_key_value_heads = 8, c.head_dim = 64, c.max_position_embeddings = 131072;
    c.num_attention_heads = 32, c.hidden_size = 2048;
    return c;
}

int main(void) {
    dspy_model_config c = shape_1b();
    /* K and V x 16 layers x 8 heads x 64 x 2 bytes */
    CHECK_INT(dspy_srv_kv_bytes_per_token(&c, 2), 32768);
    CHECK_INT(dspy_srv_kv_bytes_per_token(&c, 4), 65536);

    /* the CPU (or an unknown free size) keeps min(context, 16384) */
    CHECK_INT(dspy_srv_kv_budget(&c, false, (size_t)100e9, 30, 8, 2), 16384);
    CHECK_INT(dspy_srv_kv_budget(&c, true, 0, 30, 8, 2), 16384);
    dspy_model_config short_ctx = c;
    short_ctx.max_position_embeddings = 2048;
    CHECK_INT(dspy_srv_kv_budget(&short_ctx, false, 0, 30, 8, 2), 2048);

    /* 30 % of 100 GB free at 32 KiB a token: 915,527 tokens, under 8 x 131,072 */
    CHECK_INT(dspy_srv_kv_budget(&c, true, (size_t)100e9, 30, 8, 2), 915527);
    /* 2 sequences can fill only 2 contexts */
    CHECK_INT(dspy_srv_kv_budget(&c, true, (size_t)100e9, 30, 2, 2), 262144);
    /* scarce memory: never below the small default (the allocation then says what is missing) */
    CHECK_INT(dspy_srv_kv_budget(&c, true, (size_t)100e6, 30, 8, 2), 16384);
    /* a short context with a large pool: max_seqs x context */
    CHECK_INT(dspy_srv_kv_budget(&short_ctx, true, (size_t)100e9, 95, 64, 2), 64 * 2048);

    /* wide rows: slot x row must stay under 2^31 (8,192-element rows -> < 262,144 slots) */
    dspy_model_config wide = c;
    wide.num_key_value_heads = 64, wide.head_dim = 128, wide.num_hidden_layers = 1;
    int32_t n = dspy_srv_kv_budget(&wide, true, (size_t)1000e9, 95, 4096, 2);
    CHECK(n > 0 && (int64_t)n * 8192 <= INT32_MAX);
    CHECK(n >= 262144 - 4096);
    return check_summary("kv_budget");
}
