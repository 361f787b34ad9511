/* fuzz_json.c — libFuzzer target: the JSON reader (dspy_json_parse) and writer.
 *
 * Any input either fails with a status and a message, or parses into a value whose compact dump
 * parses again to an equal value (a round trip). Crashes, leaks and sanitizer reports are what
 * libFuzzer looks for; the round trip catches reader/writer disagreements.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "dspy/json.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dspy_json *v = NULL;
    if (dspy_json_parse((const char *)data, size, "fuzz", &v) != DSPY_OK) {
        FUZZ_ASSERT(v == NULL && dspy_errmsg()[0] != '\0');
        return 0;
    }
    char *text = dspy_json_dumps(v, DSPY_JSON_COMPACT);
    FUZZ_ASSERT(text != NULL);
    dspy_json *back = NULL;
    FUZZ_ASSERT(dspy_json_parse(text, strlen(text), "roundtrip", &back) == DSPY_OK);
    FUZZ_ASSERT(dspy_json_equal(v, back));
    dspy_json_decref(back);
    free(text);
    dspy_json_decref(v);
    return 0;
}
