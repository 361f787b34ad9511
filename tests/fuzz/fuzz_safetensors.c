/* fuzz_safetensors.c — libFuzzer target: the safetensors reader (header JSON, offsets, dtypes,
 * shapes) through dspy_safetensors_open on an in-memory file (memfd), then every accessor over
 * what it accepted: each tensor's bytes are read (to fp32 where the dtype allows, and the
 * NaN/Inf scan), so a span that lies outside the mapping would be caught by ASan.
 */
#include <stdint.h>

#include "dspy/safetensors.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    const int fd = fuzz_file("fuzz.safetensors", data, size, path);
    if (fd < 0) return 0;
    dspy_safetensors *f = NULL;
    if (dspy_safetensors_open(path, &f) == DSPY_OK) {
        for (size_t i = 0; i < dspy_safetensors_count(f); i++) {
            const dspy_tensor_info *t = dspy_safetensors_at(f, i);
            FUZZ_ASSERT(dspy_safetensors_find(f, t->name) == t);
            int64_t n = dspy_tensor_numel(t), bad = 0;
            FUZZ_ASSERT(dspy_tensor_check_finite(t, &bad, NULL) == DSPY_OK && bad >= 0 && bad <= n);
            if (n <= (1 << 20)) {
                float *dst = malloc((size_t)(n ? n : 1) * sizeof *dst);
                if (dst) dspy_tensor_to_f32(t, dst);
                free(dst);
            }
        }
        dspy_safetensors_metadata(f, "format");
    } else {
        FUZZ_ASSERT(f == NULL);
    }
    dspy_safetensors_free(f);
    close(fd);
    return 0;
}
