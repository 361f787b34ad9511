/* fuzz_tokenizer_json.c — libFuzzer target: loading tokenizer.json (vocab, merges, added tokens,
 * pre-tokenizer/decoder components) from an in-memory file; an accepted tokenizer then encodes
 * and decodes a fixed text, and decode(encode(x)) must give x back (ByteLevel BPE is lossless). */
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dspy/tokenizer.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("tokenizer.json", MFD_CLOEXEC);
    if (fd < 0) return 0;
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    dspy_tokenizer *tok = NULL;
    if (dspy_tokenizer_load(path, &tok) == DSPY_OK) {
        static const char text[] = "Hello world! 123 caf\xc3\xa9 <|eot_id|>\n";
        int32_t *ids = NULL;
        size_t n = 0;
        if (dspy_tokenizer_encode(tok, text, sizeof text - 1, false, false, &ids, &n) == DSPY_OK) {
            char *back = NULL;
            size_t len = 0;
            if (dspy_tokenizer_decode(tok, ids, n, false, &back, &len) == DSPY_OK)
                FUZZ_ASSERT(len == sizeof text - 1 && memcmp(back, text, len) == 0);
            free(back);
        }
        free(ids);
    } else {
        FUZZ_ASSERT(tok == NULL);
    }
    dspy_tokenizer_free(tok);
    close(fd);
    return 0;
}
