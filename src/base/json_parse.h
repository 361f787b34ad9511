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
 *
 * Two more ways in, for documents too large to build whole (tokenizer.json's 128 k vocabulary
 * entries and 280 k merges were ~700 k jansson values, allocated and freed by every process
 * that tokenizes): dspy_json_parse_fast_spans leaves chosen members out of the tree and gives
 * back their text, which it has checked by the same rules; a cursor (dspy_json_cur) then reads
 * such text one value at a time, allocating nothing but its string buffer.
 */
#ifndef DSPY_BASE_JSON_PARSE_H
#define DSPY_BASE_JSON_PARSE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/str.h"

/* A new reference, or NULL: ask json_loadb. */
json_t *dspy_json_parse_fast(const char *text, size_t len);

/* A member of a member of the top-level object (outer.inner, e.g. "model" then "vocab") that
 * dspy_json_parse_fast_spans leaves out of the tree. */
typedef struct dspy_json_span {
    const char *outer, *inner; /* the keys (NUL-terminated, compared bytewise) */
    const char *at;            /* out: its value's text (into the document), NULL if absent */
    size_t len;
    size_t items;              /* out: the value's elements or members (an array or object; else 0) */
} dspy_json_span;

/* dspy_json_parse_fast, with each span's member checked (as any value) but not built, and its
 * value's text in span->at/len: the one the tree would hold where a key repeats (the last
 * outer member's last inner one). The tree has no such member. NULL as dspy_json_parse_fast
 * (spans then unspecified): ask json_loadb, which builds them too. At most 8 spans. */
json_t *dspy_json_parse_fast_spans(const char *text, size_t len, dspy_json_span *spans, size_t n_spans);

/* A cursor over JSON text: value by value, left to right. Every read checks what it reads by
 * the rules above and returns false (or -1) on anything else, the cursor then unusable. */
typedef struct dspy_json_cur {
    const char *p, *end;
    char *buf; /* unescaped string bytes (grows; free with dspy_json_cur_free) */
    size_t cap;
    int depth;                /* containers entered and not yet closed (at most 256) */
    unsigned char kinds[32];  /* bit d: container d is an object */
} dspy_json_cur;

void dspy_json_cur_init(dspy_json_cur *c, const char *text, size_t len);
void dspy_json_cur_free(dspy_json_cur *c);

/* The next character past whitespace ('{', '[', '"', 't', 'f', 'n', or '-'/a digit where a
 * value starts; anything else where none does), as an unsigned char; -1 at the end of the text. */
int dspy_json_cur_peek(dspy_json_cur *c);

/* Enters the object or array that comes next ('{' or '['); false if something else comes, or
 * 256 containers are open. */
bool dspy_json_cur_enter(dspy_json_cur *c, char open);

/* Before item i (0, 1, ...) of the object or array entered: 1 when an item follows (the cursor
 * at its key or value), 0 when the container closed here (the cursor past it), -1 if malformed. */
int dspy_json_cur_item(dspy_json_cur *c, size_t i);

/* A string (value or key; for a key, also its ':'): its bytes in *s[0 .. *n) — into the text
 * where it has no escapes, else into c->buf — valid until the next string read. Not
 * NUL-terminated. */
bool dspy_json_cur_string(dspy_json_cur *c, const char **s, size_t *n);
bool dspy_json_cur_key(dspy_json_cur *c, const char **s, size_t *n);

/* An integer (no fraction or exponent, at most 18 digits). */
bool dspy_json_cur_int(dspy_json_cur *c, int64_t *v);

/* Skips one value, checked as the reader checks it. */
bool dspy_json_cur_skip(dspy_json_cur *c);

/* The other way (base/json.c): s[0, n) (valid UTF-8) appended to out as a JSON string literal with
 * the compact dump's escapes — text for a cursor to read back. */
void dspy_json_quote(const char *s, size_t n, dspy_str *out);

#endif
