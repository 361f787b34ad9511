/* fuzz_tok.h — the property the tokenizer-loading targets (fuzz_tokenizer_json, fuzz_gguf) check
 * on a tokenizer they got: a fixed text encodes and decodes back to itself, byte for byte
 * (byte-level BPE is lossless, whatever the vocabulary and merges). */
#ifndef DSPY_FUZZ_TOK_H
#define DSPY_FUZZ_TOK_H

#include "dspy/tokenizer.h"
#include "fuzz.h"

static inline void fuzz_tok_roundtrip(const dspy_tokenizer *tok, const char *text, size_t n) {
    int32_t *ids = NULL;
    size_t k = 0;
    if (dspy_tokenizer_encode(tok, text, n, false, false, &ids, &k) == DSPY_OK) {
        char *back = NULL;
        size_t len = 0;
        if (dspy_tokenizer_decode(tok, ids, k, false, &back, &len) == DSPY_OK)
            FUZZ_ASSERT(len == n && memcmp(back, text, len) == 0);
        free(back);
    }
    free(ids);
}

#endif
