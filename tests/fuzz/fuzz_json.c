/* fuzz_json.c — libFuzzer target: the JSON reader (dspy_json_parse) and writer.
 *
 * Any input either fails with a status and a message, or parses into a value whose compact dump
 * parses again to an equal value (a round trip). Crashes, leaks and sanitizer reports are what
 * libFuzzer looks for; the round trip catches reader/writer disagreements. The fast reader under
 * dspy_json_parse (base/json_parse.h) is checked against jansson's: what it takes, jansson takes
 * too, into a tree that dumps to the same bytes; with members left out as text (spans), it takes
 * the same inputs, and each span is a value of its own; the cursor's skip takes the same too.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json_parse.h"
#include "dspy/json.h"
#include "fuzz.h"

static void spans_and_cursor(const char *text, size_t len, bool took) {
    dspy_json_span sp[3] = {{.outer = "model", .inner = "vocab"}, {.outer = "model", .inner = "merges"},
                            {.outer = "a", .inner = "b"}};
    json_t *g = dspy_json_parse_fast_spans(text, len, sp, 3);
    FUZZ_ASSERT((g != NULL) == took);
    for (int k = 0; g && k < 3; k++) {
        if (!sp[k].at) continue;
        FUZZ_ASSERT(sp[k].at >= text && sp[k].at + sp[k].len <= text + len);
        json_t *v = dspy_json_parse_fast(sp[k].at, sp[k].len);
        FUZZ_ASSERT(v != NULL);
        FUZZ_ASSERT(sp[k].items == (json_is_array(v) ? json_array_size(v) : json_object_size(v)));
        json_decref(v);
    }
    json_decref(g);
    dspy_json_cur c;
    dspy_json_cur_init(&c, text, len);
    const bool skipped = dspy_json_cur_skip(&c) && dspy_json_cur_peek(&c) == -1;
    dspy_json_cur_free(&c);
    FUZZ_ASSERT(skipped == took);
}

static void differential(const char *text, size_t len) {
    json_t *f = dspy_json_parse_fast(text, len);
    spans_and_cursor(text, len, f != NULL);
    if (!f) return;
    json_error_t err;
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    FUZZ_ASSERT(j != NULL);
    char *a = dspy_json_dumps((const dspy_json *)f, DSPY_JSON_COMPACT), *b = dspy_json_dumps((const dspy_json *)j, DSPY_JSON_COMPACT);
    FUZZ_ASSERT(a && b && strcmp(a, b) == 0);
    free(a), free(b);
    json_decref(f);
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    differential((const char *)data, size);
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
