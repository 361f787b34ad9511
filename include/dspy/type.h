/* dspy/type.h — field types of DSPy signatures: parsing, Python-style names, pydantic JSON
 * schemas, and DSPy's value parsing/validation.
 *
 * A dspy_type is the C form of the Python annotation a string signature resolves to
 * (dspy/signatures/signature.py:_parse_type_node): str, int, float, bool, bytes, None, Any,
 * list[...], set[...], frozenset[...], tuple[...], dict[...], Literal[...], Optional[...],
 * Union[...] and `A | B`, with typing aliases (List, Dict, Tuple, Set, FrozenSet) and
 * `typing.X` / `builtins.X` attribute forms. Literal arguments keep their exact Python values
 * and order (str, int, float, bool, None; duplicates dropped as typing does). Unions are
 * flattened and de-duplicated as typing.Union does; a one-member union is that member.
 *
 * What this is not: pydantic models, Enums, dspy.Image and other custom classes (unknown names
 * give DSPy's "Unknown name: X" error; names DSPy knows but dspy.c does not support, such as
 * Callable or complex, give an error that says so).
 *
 * Thread safety: types are immutable after parsing; share them freely between threads.
 * Ownership: _parse/_copy return a new type the caller frees with dspy_type_free (NULL-safe).
 */
#ifndef DSPY_TYPE_H
#define DSPY_TYPE_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>

#include "dspy/json.h"
#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* DSPy format profile (spec §0, §4.3, §16.1). V33 = DSPy 3.3.1 (default); V26 = the tutorial's
 * DSPy (2.6.0rc8 adapters): unquoted Literal names, other notes, other layout. */
typedef enum dspy_profile {
    DSPY_PROFILE_V33 = 0,
    DSPY_PROFILE_V26 = 1
} dspy_profile;

/* "3.3" or "2.6". */
DSPY_API const char *dspy_profile_name(dspy_profile p);
/* Accepts "3.3", "3.3.1", "v33", "V33", "2.6", "2.6.0", "v26", "V26". DSPY_ERR_ARG otherwise. */
DSPY_API dspy_status dspy_profile_parse(const char *s, dspy_profile *out);

typedef struct dspy_type dspy_type;

typedef enum dspy_type_kind {
    DSPY_TYPE_STR,
    DSPY_TYPE_INT,
    DSPY_TYPE_FLOAT,
    DSPY_TYPE_BOOL,
    DSPY_TYPE_BYTES,
    DSPY_TYPE_NONE,      /* NoneType */
    DSPY_TYPE_ANY,
    DSPY_TYPE_LIST,      /* list[X] or bare list */
    DSPY_TYPE_SET,
    DSPY_TYPE_FROZENSET,
    DSPY_TYPE_TUPLE,     /* tuple[X, Y], tuple[X, ...] (variadic) or bare tuple */
    DSPY_TYPE_DICT,      /* dict[K, V] or bare dict */
    DSPY_TYPE_LITERAL,
    DSPY_TYPE_UNION      /* Union[...], Optional[X] = Union[X, None], A | B */
} dspy_type_kind;

/* Parses a type expression ("list[str]", "Literal['a', 'b']", "int | None"). Errors are
 * DSPY_ERR_FORMAT with the column and DSPy's wording where DSPy has one ("Unknown name: X"). */
DSPY_API dspy_status dspy_type_parse(const char *text, dspy_type **out);
/* The type `str` (what an unannotated field gets). NULL on OOM. */
DSPY_API dspy_type *dspy_type_new_str(void);
DSPY_API dspy_type *dspy_type_copy(const dspy_type *t);
DSPY_API void dspy_type_free(dspy_type *t);

DSPY_API dspy_type_kind dspy_type_kind_of(const dspy_type *t);
/* Type arguments: list/set 1 (0 when bare), dict 2 (0 when bare), tuple n, union n. */
DSPY_API size_t dspy_type_nargs(const dspy_type *t);
DSPY_API const dspy_type *dspy_type_arg(const dspy_type *t, size_t i);
/* tuple[X, ...] */
DSPY_API bool dspy_type_is_variadic(const dspy_type *t);
/* Literal values as a borrowed JSON array (strings, ints, reals, bools, null); NULL otherwise. */
DSPY_API const dspy_json *dspy_type_literal_values(const dspy_type *t);
/* True for None, Any, and unions containing None or Any (DSPy's "annotation allows None"). */
DSPY_API bool dspy_type_allows_none(const dspy_type *t);
DSPY_API bool dspy_type_equal(const dspy_type *a, const dspy_type *b);

/* Python-style name as DSPy prints it (get_annotation_name): "str", "list[str]",
 * "dict[str, int]", "Union[int, NoneType]", "tuple[int, Ellipsis]". Literal strings are quoted
 * as V33 does ("Literal['yes', 'no']", "Literal[\"she's\"]", "Literal[True, 3, 'foo']"); the
 * V26 profile prints them unquoted ("Literal[yes, no]"). Appends to `out`. */
DSPY_API void dspy_type_name(const dspy_type *t, dspy_profile p, dspy_str *out);

/* pydantic TypeAdapter(t).json_schema() (pydantic 2.11+), keys in pydantic's sorted order.
 * New reference in *out. */
DSPY_API dspy_status dspy_type_json_schema(const dspy_type *t, dspy_json **out);

/* pydantic TypeAdapter(t).validate_python(value) in lax mode: "42" -> 42 for int, 1 -> 1.0 for
 * float, "yes" -> True for bool, lists/dicts element-wise, unions left to right (exact matches
 * first). DSPY_ERR_PARSE with a pydantic-like message ("1 validation error for int\n  Input
 * should be a valid integer, ... [type=int_parsing, input_value='x', input_type=str]"). */
DSPY_API dspy_status dspy_type_validate(const dspy_type *t, const dspy_json *value, dspy_json **out);

/* DSPy parse_value(value, annotation) (dspy/adapters/utils.py): str -> str(value); Literal ->
 * membership after stripping whitespace, quotes and Literal[...]/str[...] wrappers (V33);
 * otherwise json_repair.loads / ast.literal_eval of a string, then validation. The V26 profile
 * uses V26's parse_value (json.loads, then literal_eval, then the raw string). Errors are
 * DSPY_ERR_PARSE with DSPy's message ("'c' is not one of ('a', 'b')"). */
DSPY_API dspy_status dspy_type_parse_value(const dspy_type *t, const dspy_json *value, dspy_profile p,
                                           dspy_json **out);

#ifdef __cplusplus
}
#endif

#endif
