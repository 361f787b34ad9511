/* fuzz_tokenize.c — libFuzzer target: encoding arbitrary bytes with the real Llama 3 tokenizer
 * (../shared/models/llama3-tokenizer; DSPY_FUZZ_TOKENIZER overrides). Invalid UTF-8 must be
 * refused with DSPY_ERR_ARG; valid text must decode back to itself exactly, token offsets must
 * be increasing and inside the text, and a streaming decode must agree with the whole one. */
#include <stdint.h>

#include "dspy/str.h"
#include "dspy/tokenizer.h"
#include "fuzz.h"

static dspy_tokenizer *g_tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *dir = getenv("DSPY_FUZZ_TOKENIZER");
    if (!dir) dir = DSPY_SHARED_DIR_DEFAULT "/models/llama3-tokenizer";
    if (dspy_tokenizer_load(dir, &g_tok) != DSPY_OK) {
        fprintf(stderr, "fuzz_tokenize: %s\n", dspy_errmsg());
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    bool parse_special = size & 1;
    int32_t *ids = NULL;
    size_t *starts = NULL, n = 0;
    dspy_status st = dspy_tokenizer_encode_offsets(g_tok, text, size, false, parse_special, &ids, &starts, &n);
    if (!dspy_utf8_valid(text, size, NULL)) {
        FUZZ_ASSERT(st == DSPY_ERR_ARG);
        return 0;
    }
    FUZZ_ASSERT(st == DSPY_OK);
    for (size_t i = 0; i < n; i++) FUZZ_ASSERT(starts[i] <= size && (i == 0 || starts[i] > starts[i - 1]));
    char *back = NULL;
    size_t len = 0;
    FUZZ_ASSERT(dspy_tokenizer_decode(g_tok, ids, n, false, &back, &len) == DSPY_OK);
    FUZZ_ASSERT(len == size && memcmp(back, text, size) == 0);
    dspy_tokenizer_stream *s = NULL;
    dspy_str streamed = DSPY_STR_INIT;
    FUZZ_ASSERT(dspy_tokenizer_stream_new(g_tok, false, &s) == DSPY_OK);
    for (size_t i = 0; i < n; i++) FUZZ_ASSERT(dspy_tokenizer_stream_push(s, ids[i], &streamed) == DSPY_OK);
    FUZZ_ASSERT(dspy_tokenizer_stream_flush(s, &streamed) == DSPY_OK);
    FUZZ_ASSERT(streamed.len == size && (size == 0 || memcmp(streamed.ptr, text, size) == 0));
    dspy_str_free(&streamed);
    dspy_tokenizer_stream_free(s);
    free(back);
    free(ids);
    free(starts);
    return 0;
}
