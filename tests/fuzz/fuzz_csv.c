/* fuzz_csv.c — libFuzzer target: the CSV reader (RFC 4180 quoting, UTF-8 checks, ragged rows). */
#include <stdint.h>

#include "dspy/csv.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dspy_csv *csv = NULL;
    if (dspy_csv_parse((const char *)data, size, "fuzz.csv", &csv) == DSPY_OK) {
        FUZZ_ASSERT(csv != NULL);
        dspy_csv_col_index(csv, "text");
    } else {
        FUZZ_ASSERT(csv == NULL);
    }
    dspy_csv_free(csv);
    return 0;
}
