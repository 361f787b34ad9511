/* fuzz_jsonl.c — libFuzzer target: the JSONL reader, stopping at the first bad line and with
 * keep_going, turning each good line into an example. */
#include <stdint.h>

#include "dspy/example.h"
#include "dspy/jsonl.h"
#include "fuzz.h"

static dspy_status on_line(void *ud, const dspy_jsonl_line *line) {
    (void)ud;
    dspy_example *ex = NULL;
    if (dspy_jsonl_line_example(line, &ex) == DSPY_OK) dspy_example_free(ex);
    return DSPY_OK;
}

static void on_error(void *ud, int64_t line, const char *message) {
    (void)line;
    (void)message;
    (*(size_t *)ud)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dspy_jsonl_parse((const char *)data, size, "fuzz.jsonl", NULL, on_line, NULL, NULL);
    dspy_jsonl_read_params p = dspy_jsonl_read_params_default();
    size_t errors = 0, n_bad = 0;
    p.keep_going = true;
    p.allow_non_object = size & 1;
    p.on_error = on_error;
    p.error_ud = &errors;
    dspy_jsonl_parse((const char *)data, size, "fuzz.jsonl", &p, on_line, NULL, &n_bad);
    FUZZ_ASSERT(n_bad == errors);
    return 0;
}
