/* pytext.h — the handful of CPython string operations the program layer must reproduce exactly
 * (private to src/program).
 *
 * What: str.splitlines, inspect.cleandoc, textwrap.dedent, str.title, DSPy's infer_prefix, the
 * `\w` class of Python's `re` for str patterns, identifier checks. All work on UTF-8 bytes.
 * Not: general Unicode case mapping. Case changes (title, capitalize) touch ASCII letters only;
 * non-ASCII letters are kept as they are. `\w` and identifier characters beyond ASCII use a
 * small table of non-word ranges (punctuation, symbols, spaces) instead of the Unicode database.
 * Follows CPython 3.12 (Objects/unicodeobject.c, Lib/inspect.py, Lib/textwrap.py) and
 * dspy/signatures/signature.py:infer_prefix.
 */
#ifndef DSPY_PROGRAM_PYTEXT_H
#define DSPY_PROGRAM_PYTEXT_H

#include <stdbool.h>
#include <stddef.h>

#include "dspy/str.h"

/* One line of str.splitlines(): [ptr, ptr+len) without its line break. */
typedef struct py_lines {
    dspy_strv *v;
    size_t n;
} py_lines;

/* Python str.splitlines() (no keepends): breaks on \n, \r\n, \r, \v, \f, \x1c-\x1e, U+0085,
 * U+2028, U+2029. Views point into `s`. Returns false on OOM (message set). Free with
 * dspy_py_lines_free. */
bool dspy_py_splitlines(const char *s, size_t n, py_lines *out);
void dspy_py_lines_free(py_lines *l);

/* inspect.cleandoc (CPython 3.12): expandtabs(8), strip the first line's leading whitespace,
 * remove the common indentation of the other lines, drop leading/trailing empty lines. */
void dspy_py_cleandoc(const char *s, dspy_str *out);
/* textwrap.dedent. */
void dspy_py_dedent(const char *s, dspy_str *out);
/* str.title() for ASCII letters (others untouched, and count as "not cased"). */
void dspy_py_title(const char *s, dspy_str *out);
/* DSPy infer_prefix(name): "someAttributeName42IsCool" -> "Some Attribute Name 42 Is Cool". */
void dspy_py_infer_prefix(const char *name, dspy_str *out);

/* Length in bytes of the word character (`\w` of Python str regexes) at p, or 0 if the
 * character there is not a word character. */
size_t dspy_py_word_char(const char *p, size_t n);
/* Length of an identifier-start / identifier-continue character at p (0 if not one). */
size_t dspy_py_ident_start(const char *p, size_t n);
size_t dspy_py_ident_continue(const char *p, size_t n);
/* True when [p, p+n) is a Python identifier and not a hard keyword. */
bool dspy_py_is_identifier(const char *p, size_t n);
bool dspy_py_is_keyword(const char *p, size_t n);

#endif
