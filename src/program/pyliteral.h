/* pyliteral.h — Python literal syntax: a cursor over source text, string and number literals,
 * and ast.literal_eval (private to src/program).
 *
 * What: the pieces of Python's grammar that signatures and DSPy's parse_value need: names,
 * string literals (quotes, triple quotes, r/b/u prefixes, escapes, implicit concatenation),
 * int/float literals (underscores, 0x/0o/0b), and literal_eval over str, int, float, bool,
 * None, tuples, lists, sets and dicts, with unary +/- on numbers.
 * Not: complex numbers, f-strings, \N{...} escapes, ints beyond 64 bits (reported as errors).
 * Values are dspy_json: tuples and sets become arrays (set order = first occurrence), bytes
 * become strings.
 * Follows CPython 3.12 Lib/ast.py:literal_eval and the lexical rules of the reference manual.
 */
#ifndef DSPY_PROGRAM_PYLITERAL_H
#define DSPY_PROGRAM_PYLITERAL_H

#include <stdbool.h>
#include <stddef.h>

#include "dspy/json.h"
#include "dspy/str.h"

typedef struct py_cursor {
    const char *s;
    size_t n;
    size_t pos;
} py_cursor;

/* Skips spaces, tabs, newlines, backslash-newline continuations and # comments. */
void dspy_pyc_skip_ws(py_cursor *c);
/* Byte at the cursor ('\0' at the end). */
char dspy_pyc_peek(const py_cursor *c);
/* True (and consumes it) when the text at the cursor is `op`. */
bool dspy_pyc_eat(py_cursor *c, const char *op);
/* Length of the identifier at the cursor (0 if none); does not consume. */
size_t dspy_pyc_name_len(const py_cursor *c);
/* True when a string literal (with optional prefix) starts at the cursor. */
bool dspy_pyc_at_string(const py_cursor *c);
/* True when a number literal starts at the cursor ("1", ".5"). */
bool dspy_pyc_at_number(const py_cursor *c);
/* Reads one or more adjacent string literals and appends their decoded UTF-8 value.
 * DSPY_ERR_FORMAT with a message naming the column on a malformed literal. */
dspy_status dspy_pyc_string(py_cursor *c, dspy_str *out);
/* Reads an int or float literal into a new dspy_json. */
dspy_status dspy_pyc_number(py_cursor *c, dspy_json **out);

/* ast.literal_eval(text): DSPY_ERR_PARSE when text is not a Python literal. */
dspy_status dspy_py_literal_eval(const char *s, size_t n, dspy_json **out);

#endif
