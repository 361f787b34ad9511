/* fuzz_tokenizer_json.c — libFuzzer target: loading tokenizer.json (vocab, merges, added tokens,
 * pre-tokenizer/decoder components) from an in-memory file; an accepted tokenizer then encodes
 * and decodes a fixed text, and decode(encode(x)) must give x back (ByteLevel BPE is lossless). */
#include <stdint.h>

#include "dspy/tokenizer.h"
#include "fuzz.h"
#include "fuzz_tok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    const int fd = fuzz_file("tokenizer.json", data, size, path);
    if (fd < 0) return 0;
    dspy_tokenizer *tok = NULL;
    if (dspy_tokenizer_load(path, &tok) == DSPY_OK) {
        static const char text[] = "Hello world! 123 caf\xc3\xa9 <|eot_id|>\n";
        fuzz_tok_roundtrip(tok, text, sizeof text - 1);
    } else {
        FUZZ_ASSERT(tok == NULL);
    }
    dspy_tokenizer_free(tok);
    close(fd);
    return 0;
}
