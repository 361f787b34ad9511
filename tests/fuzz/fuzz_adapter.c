/* fuzz_adapter.c — libFuzzer target: the adapters' output parsers (ChatAdapter's
 * `[[ ## field ## ]]` sections, JSONAdapter's lenient JSON with json_repair) on arbitrary LM
 * completions, for a signature with a Literal, an int, a list and a str output, in both DSPy
 * profiles. A parse either succeeds with a JSON object or fails with DSPY_ERR_PARSE. */
#include <stdint.h>

#include "dspy/adapter.h"
#include "dspy/signature.h"
#include "fuzz.h"

static dspy_signature *g_sig;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (dspy_signature_parse("text -> reasoning, label: Literal['card_arrival', 'age_limit'], n: int, tags: list[str]",
                             NULL, &g_sig) != DSPY_OK) {
        fprintf(stderr, "fuzz_adapter: %s\n", dspy_errmsg());
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_cstr(data, size);
    for (int a = 0; a < 2; a++)
        for (int p = 0; p < 2; p++) {
            dspy_json *fields = NULL;
            dspy_status st = dspy_adapter_parse(a ? DSPY_ADAPTER_JSON : DSPY_ADAPTER_CHAT,
                                                p ? DSPY_PROFILE_V26 : DSPY_PROFILE_V33, g_sig, text, &fields);
            if (st == DSPY_OK) FUZZ_ASSERT(fields && dspy_json_typeof(fields) == DSPY_JSON_OBJECT);
            else FUZZ_ASSERT(fields == NULL && (st == DSPY_ERR_PARSE || st == DSPY_ERR_NOMEM));
            dspy_json_decref(fields);
        }
    free(text);
    return 0;
}
