/* unicode_tables.h — character classes for the tokenizer's pre-tokenizer (private).
 *
 * Generated data in unicode_tables.c (scripts/gen_unicode_tables.py): one class per code point
 * through a two-stage table. The Unicode version is dspy_unicode_version (14.0.0, the version
 * HF tokenizers' Oniguruma uses).
 */
#ifndef DSPY_MODEL_UNICODE_TABLES_H
#define DSPY_MODEL_UNICODE_TABLES_H

enum { DSPY_UCLS_OTHER = 0, DSPY_UCLS_LETTER = 1, DSPY_UCLS_NUMBER = 2, DSPY_UCLS_SPACE = 3 };

extern const char dspy_unicode_version[];
extern const unsigned char dspy_ucls_stage1[0x110000 >> 8];
extern const unsigned char dspy_ucls_blocks[][256];

/* The class of code point `cp` (< 0x110000). */
static inline int dspy_ucls(unsigned cp) {
    return dspy_ucls_blocks[dspy_ucls_stage1[cp >> 8]][cp & 255];
}

#endif
