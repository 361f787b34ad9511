/* fuzz_config.c — libFuzzer target: config.json and generation_config.json parsing and
 * validation (dspy_model_config_parse, dspy_generation_config_parse). An accepted config must
 * survive its own writer: to_json -> parse gives the same sizes, and its parameter count is
 * positive (no overflow got through validation).
 */
#include <stdint.h>

#include "dspy/model.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dspy_model_config c;
    if (dspy_model_config_parse((const char *)data, size, "fuzz/config.json", &c) != DSPY_OK) return 0;
    FUZZ_ASSERT(dspy_model_config_params(&c) > 0);
    char *text = dspy_model_config_to_json(&c);
    FUZZ_ASSERT(text != NULL);
    dspy_model_config back;
    FUZZ_ASSERT(dspy_model_config_parse(text, strlen(text), "roundtrip", &back) == DSPY_OK);
    FUZZ_ASSERT(back.hidden_size == c.hidden_size && back.num_hidden_layers == c.num_hidden_layers &&
                back.vocab_size == c.vocab_size && back.head_dim == c.head_dim);
    free(text);
    /* the same bytes as a generation_config.json on top of the accepted config */
    dspy_generation_config_parse((const char *)data, size, "fuzz/generation_config.json", &c);
    return 0;
}
