/* type_priv.h — the dspy_type struct and the cursor-level type parser (private to
 * src/program; the public API is include/dspy/type.h). */
#ifndef DSPY_PROGRAM_TYPE_PRIV_H
#define DSPY_PROGRAM_TYPE_PRIV_H

#include "dspy/type.h"
#include "program/pyliteral.h"

struct dspy_type {
    dspy_type_kind kind;
    size_t nargs;
    dspy_type **args;
    bool variadic;       /* tuple[X, ...] */
    dspy_json *literals; /* LITERAL: array of values */
};

/* Parses one annotation at the cursor, stopping before a ',' / ')' / end at bracket depth 0.
 * A bare `None` annotation gives str, as DSPy's make_signature does. Errors: DSPY_ERR_FORMAT,
 * message "column N: ..." (1-based, relative to c->s). */
dspy_status dspy_type_parse_at(py_cursor *c, dspy_type **out);

/* json.dumps(schema with "type" first, other keys sorted), as DSPy's _get_json_schema prints
 * it in the "# note: the value you produce must adhere to the JSON schema: ..." line. */
dspy_status dspy_type_schema_note(const dspy_type *t, dspy_str *out);

/* Python equality of two scalar JSON values (1 == 1.0 == True; "a" == "a"). */
bool dspy_type_py_eq(const dspy_json *a, const dspy_json *b);

/* Appends the Python repr of a tuple of Literal values: ('a', 'b'), ('a',), (True, 3). */
void dspy_type_literal_tuple_repr(const dspy_type *t, dspy_str *out);

#endif
