/* fuzz_gguf.c — libFuzzer target: a GGUF file (header, metadata, tensor infos, offsets) through
 * dspy_gguf_open, every accessor over what it accepted (each tensor's first and last byte read,
 * so a span outside the mapping is caught by ASan), and the readers built on it: the model
 * config, the chat template and the tokenizer (tokenizer.ggml.* written as tokenizer.json text and
 * read back, model/gguf_vocab.c and tokenizer_lists.c). An accepted tokenizer then encodes and
 * decodes a fixed text, which must come back (byte-level BPE is lossless).
 *
 * The input goes into a memfd (fuzz_file) reached through a symlink whose name ends in .gguf:
 * the loaders pick the GGUF path by that ending.
 */
#include <stdint.h>

#include "dspy/chat_template.h"
#include "dspy/gguf.h"
#include "dspy/model.h"
#include "dspy/tokenizer.h"
#include "fuzz.h"
#include "fuzz_tok.h"

static char g_link[96];

static void drop_link(void) { unlink(g_link); }

/* g_link pointed at the input's memfd (returned; -1 on failure). */
static int link_input(const uint8_t *data, size_t size) {
    if (!g_link[0]) {
        snprintf(g_link, sizeof g_link, "/tmp/dspy-fuzz-%d.gguf", (int)getpid());
        atexit(drop_link);
    }
    char path[64];
    const int fd = fuzz_file("fuzz.gguf", data, size, path);
    if (fd < 0) return -1;
    unlink(g_link);
    if (symlink(path, g_link) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void accessors(const dspy_gguf *g) {
    volatile unsigned sink = dspy_gguf_version(g) + (unsigned)dspy_gguf_alignment(g);
    for (size_t i = 0; i < dspy_gguf_kv_count(g); i++) {
        const char *key = dspy_gguf_kv_key(g, i);
        FUZZ_ASSERT(key && dspy_gguf_find_key(g, key) == (int64_t)i);
        int64_t iv;
        double fv;
        bool bv;
        sink += dspy_gguf_get_int(g, key, &iv) + dspy_gguf_get_float(g, key, &fv) + dspy_gguf_get_bool(g, key, &bv);
        const char *s = dspy_gguf_get_str(g, key);
        if (s) sink += (unsigned char)s[0];
        dspy_gguf_vtype et;
        size_t n;
        if (dspy_gguf_get_arr(g, key, &et, &n)) {
            FUZZ_ASSERT(dspy_gguf_kv_type(g, i) == DSPY_GGUF_ARRAY);
            for (size_t k = 0; k < n && k < 64; k++) {
                size_t len;
                const char *e = et == DSPY_GGUF_STRING ? dspy_gguf_arr_str(g, key, k, &len) : NULL;
                if (e && len) sink += (unsigned char)e[len - 1];
                else if (et != DSPY_GGUF_STRING) sink += (unsigned)dspy_gguf_arr_int(g, key, k);
            }
        }
    }
    for (size_t i = 0; i < dspy_gguf_tensor_count(g); i++) {
        const dspy_gguf_tensor *t = dspy_gguf_tensor_at(g, i);
        FUZZ_ASSERT(t && dspy_gguf_tensor_find(g, t->name) == t);
        if (t->nbytes) sink += ((const unsigned char *)t->data)[0] + ((const unsigned char *)t->data)[t->nbytes - 1];
    }
    const char *tpl = dspy_gguf_chat_template(g), *bos = dspy_gguf_bos_text(g);
    if (tpl) sink += (unsigned char)tpl[0];
    if (bos) sink += (unsigned char)bos[0];
    dspy_model_config cfg;
    (void)dspy_gguf_model_config(g, &cfg);
    (void)sink;
}

static void tokenizer(void) {
    dspy_tokenizer *tok = NULL;
    if (dspy_tokenizer_load(g_link, &tok) != DSPY_OK) {
        FUZZ_ASSERT(tok == NULL);
        return;
    }
    static const char text[] = "Hello world! 123 caf\xc3\xa9 ab\n";
    fuzz_tok_roundtrip(tok, text, sizeof text - 1);
    dspy_tokenizer_free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const int fd = link_input(data, size);
    if (fd < 0) return 0;
    dspy_gguf *g = NULL;
    if (dspy_gguf_open(g_link, &g) != DSPY_OK) {
        FUZZ_ASSERT(g == NULL);
        close(fd);
        return 0;
    }
    accessors(g);
    dspy_gguf_free(g);
    tokenizer();
    dspy_chat_template *t = NULL;
    if (dspy_chat_template_load(g_link, &t) == DSPY_OK) dspy_chat_template_free(t);
    else FUZZ_ASSERT(t == NULL);
    close(fd);
    return 0;
}
