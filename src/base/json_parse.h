/* base/json_parse.h — a fast reader for the common JSON, under dspy_json_parse (private to
 * the library and its tests: also tokenizer.json's reader in model/tokenizer.c).
 *
 * What it does: parses text into the jansson value json_loadb(text, len, JSON_DECODE_ANY |
 * JSON_ALLOW_NUL) builds — the same types, values, key order and repeated-key rule — for
 * input made of strings of valid UTF-8 (escapes included), integers of up to 18 digits, finite
 * reals, literals, arrays and objects nested at most 256 deep.
 * What it does not: anything else (invalid UTF-8, \u0000, bad surrogates, longer integers,
 * reals that overflow, syntax errors) — it returns NULL, builds nothing, and leaves the answer
 * and the error message to jansson.
 */
#ifndef DSPY_BASE_JSON_PARSE_H
#define DSPY_BASE_JSON_PARSE_H

#include <jansson.h>
#include <stddef.h>

/* A new reference, or NULL: ask json_loadb. */
json_t *dspy_json_parse_fast(const char *text, size_t len);

#endif
