/* text_tables.h — Unicode data for DSPy's normalize_text (private to src/program): full
 * canonical decompositions, canonical combining classes, str.lower() mappings and the
 * character sets of str.isalnum(), str.isspace() and Final_Sigma's case-ignorable / cased
 * properties, all read from CPython by scripts/gen_text_tables.py (text_tables.c, generated).
 * Every table is sorted by code point; lookups are binary searches (text_normalize.c).
 */
#ifndef DSPY_PROGRAM_TEXT_TABLES_H
#define DSPY_PROGRAM_TEXT_TABLES_H

#include <stdint.h>

extern const char dspy_text_unicode_version[];
/* {code point, offset into _data, length}: NFD of one code point (Hangul syllables excluded). */
extern const unsigned dspy_text_decomp_count;
extern const uint32_t dspy_text_decomp[][3];
extern const uint32_t dspy_text_decomp_data[];
/* {first, last, class}: canonical combining classes other than 0. */
extern const unsigned dspy_text_ccc_count;
extern const uint32_t dspy_text_ccc[][3];
/* {code point, offset into _data, length}: str.lower() of one code point when it changes. */
extern const unsigned dspy_text_lower_count;
extern const uint32_t dspy_text_lower[][3];
extern const uint32_t dspy_text_lower_data[];
/* {first, last} ranges. */
extern const unsigned dspy_text_alnum_count, dspy_text_space_count, dspy_text_ignorable_count, dspy_text_cased_count;
extern const uint32_t dspy_text_alnum[][2];
extern const uint32_t dspy_text_space[][2];
extern const uint32_t dspy_text_ignorable[][2];
extern const uint32_t dspy_text_cased[][2];

#endif
