/* fuzz_json_schema.c — libFuzzer target: the JSON-schema compiler of structured outputs
 * (dspy_structured_json_schema over the real Llama 3 tokenizer; DSPY_FUZZ_TOKENIZER overrides).
 * Any JSON text is either refused (not JSON, or DSPY_ERR_ARG for a schema outside the subset,
 * with a message) or compiled into an automaton where no reachable state is a dead end and
 * whose start state allows some token. Small bounds keep each input fast. */
#include <stdint.h>

#include "dspy/json.h"
#include "dspy/structured.h"
#include "dspy/tokenizer.h"
#include "fuzz.h"

static dspy_tokenizer *g_tok;
static dspy_structured_vocab *g_voc;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *dir = getenv("DSPY_FUZZ_TOKENIZER");
    if (!dir) dir = DSPY_SHARED_DIR_DEFAULT "/models/llama3-tokenizer";
    if (dspy_tokenizer_load(dir, &g_tok) != DSPY_OK ||
        dspy_structured_vocab_new(g_tok, dspy_tokenizer_vocab_size(g_tok), &g_voc) != DSPY_OK) {
        fprintf(stderr, "fuzz_json_schema: %s\n", dspy_errmsg());
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0; /* large schemas only cost time */
    dspy_json *schema = NULL;
    if (dspy_json_parse((const char *)data, size, "schema", &schema) != DSPY_OK) return 0;
    dspy_structured_params p = dspy_structured_params_default();
    p.max_string_tokens = (int32_t)(size % 3);
    p.max_whitespace = 1;
    p.max_depth = 1;
    dspy_constraint *c = NULL;
    dspy_status st = dspy_structured_json_schema(g_voc, schema, &p, &c);
    if (st == DSPY_OK) {
        FUZZ_ASSERT(c != NULL);
        FUZZ_ASSERT(dspy_constraint_check(c, true) == DSPY_OK);
        FUZZ_ASSERT(dspy_constraint_count(c, 0) > 0 || dspy_constraint_accepts(c, 0));
    } else {
        FUZZ_ASSERT(c == NULL && (st == DSPY_ERR_ARG || st == DSPY_ERR_NOMEM) && dspy_errmsg()[0]);
    }
    dspy_constraint_free(c);
    dspy_json_decref(schema);
    return 0;
}
