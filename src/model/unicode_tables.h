/* unicode_tables.h — Unicode data for the tokenizer (private): character classes for the
 * pre-tokenizer and NFC normalization.
 *
 * Generated data in unicode_tables.c (scripts/gen_unicode_tables.py): one class byte per code
 * point through a two-stage table, plus NFC tables. The Unicode version is
 * dspy_unicode_version (14.0.0, the version HF tokenizers' Oniguruma uses).
 */
#ifndef DSPY_MODEL_UNICODE_TABLES_H
#define DSPY_MODEL_UNICODE_TABLES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/status.h"
#include "dspy/str.h"

enum {
    DSPY_UCLS_OTHER = 0,
    DSPY_UCLS_LETTER = 1,
    DSPY_UCLS_NUMBER = 2,
    DSPY_UCLS_SPACE = 3,
    DSPY_UCLS_MASK = 3,
    DSPY_UCLS_NFC = 4 /* flag: may change under NFC, or affects its neighbours */
};

extern const char dspy_unicode_version[];
extern const unsigned char dspy_ucls_stage1[0x110000 >> 8];
extern const unsigned char dspy_ucls_blocks[][256];

extern const unsigned dspy_nfc_ccc_count, dspy_nfc_decomp_count, dspy_nfc_compose_count;
extern const uint32_t dspy_nfc_ccc[];
extern const uint32_t dspy_nfc_decomp_index[][2];
extern const uint32_t dspy_nfc_decomp_data[];
extern const uint32_t dspy_nfc_compose[][3];

/* The class byte of code point `cp` (< 0x110000): DSPY_UCLS_* in the low bits, plus the
 * DSPY_UCLS_NFC flag. */
static inline int dspy_ucls(unsigned cp) {
    return dspy_ucls_blocks[dspy_ucls_stage1[cp >> 8]][cp & 255];
}

/* NFC of the valid UTF-8 text s[0, n). When the text is already NFC, *changed is false and
 * nothing else is written. Otherwise `out` (cleared first) gets the normalized text and *map a
 * malloc'ed array of out->len + 1 entries: for each byte of `out`, base + the offset in `s` of
 * the character it came from (the last entry is base + n). Errors: DSPY_ERR_NOMEM. */
dspy_status dspy_nfc(const unsigned char *s, size_t n, size_t base, dspy_str *out, size_t **map, bool *changed);

#endif
