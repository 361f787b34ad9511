/* pyrepr.h — Python repr() of strings, floats and JSON values (private to src/data).
 *
 * Follows CPython's unicode_repr and float_repr (the 'r' format with the shortest digits that
 * round-trip). The printable table is Python 3.11's (scripts/make_py_unprintable.py).
 */
#ifndef DSPY_DATA_PYREPR_H
#define DSPY_DATA_PYREPR_H

#include <jansson.h>
#include <stdbool.h>

#include "dspy/str.h"

/* Python str.isprintable() for one code point. */
bool dspy_py_isprintable(unsigned cp);
/* Appends repr(s) for valid UTF-8 [p, p+n): quotes chosen as Python does, escapes as Python. */
void dspy_pyrepr_str(dspy_str *s, const char *p, size_t n);
/* Appends repr(float): 0.1, 1e-05, 1e+16, 3.0, -0.0, inf, nan. */
void dspy_pyrepr_float(dspy_str *s, double v);
/* Appends the Python repr of a JSON value decoded by json.loads. */
void dspy_pyrepr_json(dspy_str *s, const json_t *v);

#endif
