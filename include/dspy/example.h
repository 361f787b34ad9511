/* dspy/example.h — dspy.Example (ordered fields, input keys) and datasets (lists of examples).
 *
 * An example is an ordered map from field name to value, in insertion order (setting an
 * existing key keeps its position, as a Python dict does). Values are strings or any JSON
 * value (number, bool, null, list, object), read through the opaque dspy_value handle.
 * Values are immutable once stored, so copies of an example share them (a shallow copy, like
 * Python's dict.copy()).
 *
 * Semantics follow spec/dspy_behaviour.md §11.1 and conformance CC-28:
 *  - keys starting with "dspy_" are hidden from keys/len/repr (not from get, equality or JSON
 *    with include_dspy);
 *  - with_inputs() returns a copy with the input keys set; copy() and without() do NOT keep
 *    them (DSPy builds both through type(self)(base=self, ...));
 *  - inputs() fails when no input keys were set; labels() too (it calls inputs());
 *  - equality compares the fields (order-insensitive, values with Python ==: 1 == 1.0 ==
 *    True) and ignores input keys;
 *  - repr is Python's: Example({'a': 1}) (input_keys=None). Input keys are a Python set, whose
 *    print order depends on string hashing; we print them in the order first given.
 * Not provided: hash(), attribute access errors (callers get NULL), pydantic/nested Examples
 * as values (a nested example is stored as a JSON object).
 *
 * Thread safety: an example or dataset may be read from several threads at once; writes need
 * exclusive access. All strings are UTF-8; setters reject invalid UTF-8 with DSPY_ERR_ARG.
 */
#ifndef DSPY_EXAMPLE_H
#define DSPY_EXAMPLE_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "dspy/json.h"
#include "dspy/status.h"
#include "dspy/str.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_example dspy_example;
typedef struct dspy_value dspy_value; /* borrowed from its example; never freed by callers */
typedef struct dspy_dataset dspy_dataset;

typedef enum dspy_value_type {
    DSPY_VALUE_NULL,
    DSPY_VALUE_BOOL,
    DSPY_VALUE_INT,
    DSPY_VALUE_REAL,
    DSPY_VALUE_STRING,
    DSPY_VALUE_ARRAY,
    DSPY_VALUE_OBJECT
} dspy_value_type;

/* ---- values ---------------------------------------------------------------------------- */

DSPY_API dspy_value_type dspy_value_type_of(const dspy_value *v);
/* The string of a string value (NUL-terminated; *len gets the byte length if non-NULL), or NULL
 * for any other type. */
DSPY_API const char *dspy_value_str(const dspy_value *v, size_t *len);
/* true and *out set when v is an integer (bools are not integers here). */
DSPY_API bool dspy_value_int(const dspy_value *v, int64_t *out);
/* true and *out set when v is a number (integer or real). */
DSPY_API bool dspy_value_number(const dspy_value *v, double *out);
/* Python ==: numbers compare by value across int/real/bool, lists element-wise, objects as
 * unordered maps. NULL equals only NULL. */
DSPY_API bool dspy_value_equal(const dspy_value *a, const dspy_value *b);
/* Appends compact JSON ({"a":1,"b":[2,3]}, non-ASCII kept raw, keys in insertion order). */
DSPY_API void dspy_value_append_json(dspy_str *s, const dspy_value *v);
/* Appends Python's repr(): 'text' (quotes and escapes as Python), 1, 0.5, True, None,
 * [1, 'a'], {'k': 'v'}. Floats print as Python's shortest round-trip repr. */
DSPY_API void dspy_value_append_repr(dspy_str *s, const dspy_value *v);
/* The value as JSON (borrowed: it lives as long as the value; dspy_json_incref to keep it
 * longer). NULL for NULL. For code that works on JSON (metrics, tables) without copying. */
DSPY_API const dspy_json *dspy_value_as_json(const dspy_value *v);

/* ---- examples -------------------------------------------------------------------------- */

/* An empty example with input keys unset (input_keys=None). */
DSPY_API dspy_status dspy_example_new(dspy_example **out);
/* NULL-safe. */
DSPY_API void dspy_example_free(dspy_example *ex);

/* Setters: add `key` at the end, or replace its value in place. `key` must be UTF-8.
 * Errors: DSPY_ERR_ARG (invalid UTF-8, bad JSON text), DSPY_ERR_NOMEM. */
DSPY_API dspy_status dspy_example_set_str(dspy_example *ex, const char *key, const char *value);
DSPY_API dspy_status dspy_example_set_strn(dspy_example *ex, const char *key, const char *value, size_t len);
DSPY_API dspy_status dspy_example_set_int(dspy_example *ex, const char *key, int64_t value);
DSPY_API dspy_status dspy_example_set_real(dspy_example *ex, const char *key, double value);
DSPY_API dspy_status dspy_example_set_bool(dspy_example *ex, const char *key, bool value);
/* Parses `json` (any JSON value: "null", "[1,2]", "{\"a\":\"b\"}", "\"text\"") and stores it. */
DSPY_API dspy_status dspy_example_set_json_text(dspy_example *ex, const char *key, const char *json);
/* Stores `v` (shared, not copied; v may come from another example). */
DSPY_API dspy_status dspy_example_set_value(dspy_example *ex, const char *key, const dspy_value *v);
/* Deletes `key` (Python `del ex[key]`). DSPY_ERR_NOTFOUND when absent. Input keys unchanged. */
DSPY_API dspy_status dspy_example_remove(dspy_example *ex, const char *key);
/* Copies every field of `from` into ex, in from's order (dict.update). Input keys unchanged. */
DSPY_API dspy_status dspy_example_update(dspy_example *ex, const dspy_example *from);

/* Getters (key lookups include dspy_ keys). NULL when absent. */
DSPY_API bool dspy_example_has(const dspy_example *ex, const char *key);
DSPY_API const dspy_value *dspy_example_get(const dspy_example *ex, const char *key);
/* The string value of `key`; NULL when absent or not a string. */
DSPY_API const char *dspy_example_get_str(const dspy_example *ex, const char *key);
/* Compact JSON of the value of `key` into *out (caller frees). DSPY_ERR_NOTFOUND if absent. */
DSPY_API dspy_status dspy_example_get_json_text(const dspy_example *ex, const char *key, char **out);

/* Visible fields (keys not starting with "dspy_"), in order: len() and keys()/values(). */
DSPY_API size_t dspy_example_len(const dspy_example *ex);
DSPY_API const char *dspy_example_key(const dspy_example *ex, size_t i);          /* NULL past the end */
DSPY_API const dspy_value *dspy_example_value(const dspy_example *ex, size_t i);  /* NULL past the end */
/* All fields including dspy_ keys (keys(include_dspy=True)). */
DSPY_API size_t dspy_example_nfields(const dspy_example *ex);
DSPY_API const char *dspy_example_field_key(const dspy_example *ex, size_t i);
DSPY_API const dspy_value *dspy_example_field_value(const dspy_example *ex, size_t i);

/* ---- input keys ------------------------------------------------------------------------ */

/* A copy with input keys = the given keys (duplicates dropped; keys need not exist; n == 0
 * gives an empty set, which still counts as set). */
DSPY_API dspy_status dspy_example_with_inputs(const dspy_example *ex, const char *const *keys, size_t n,
                                              dspy_example **out);
/* The same, in place. */
DSPY_API dspy_status dspy_example_set_inputs(dspy_example *ex, const char *const *keys, size_t n);
/* false while input keys are None. */
DSPY_API bool dspy_example_has_inputs(const dspy_example *ex);
DSPY_API bool dspy_example_is_input(const dspy_example *ex, const char *key);
DSPY_API size_t dspy_example_ninputs(const dspy_example *ex);
DSPY_API const char *dspy_example_input_key(const dspy_example *ex, size_t i);

/* inputs(): a new example with the fields whose key is an input key (store order), keeping the
 * input keys. DSPY_ERR_STATE with DSPy's message when input keys are not set. */
DSPY_API dspy_status dspy_example_inputs(const dspy_example *ex, dspy_example **out);
/* labels(): a new example with the other fields, input keys None. Same error as inputs(). */
DSPY_API dspy_status dspy_example_labels(const dspy_example *ex, dspy_example **out);

/* copy(**overrides): fields of ex, then of `overrides` (may be NULL); input keys None. */
DSPY_API dspy_status dspy_example_copy(const dspy_example *ex, const dspy_example *overrides,
                                       dspy_example **out);
/* without(*keys): copy() and delete each key; DSPY_ERR_NOTFOUND (Python KeyError) if one is
 * absent. */
DSPY_API dspy_status dspy_example_without(const dspy_example *ex, const char *const *keys, size_t n,
                                          dspy_example **out);

/* Python ==: same set of keys (all of them, dspy_ included) with equal values. */
DSPY_API bool dspy_example_equal(const dspy_example *a, const dspy_example *b);

/* Appends Python's repr, e.g. Example({'text': 'hi'}) (input_keys={'text'}). */
DSPY_API void dspy_example_append_repr(dspy_str *s, const dspy_example *ex);
/* repr into *out (caller frees). */
DSPY_API dspy_status dspy_example_repr(const dspy_example *ex, char **out);

/* Compact JSON object of the fields (toDict()), with or without dspy_ keys. */
DSPY_API void dspy_example_append_json(dspy_str *s, const dspy_example *ex, bool include_dspy);
/* Parses a JSON object into a new example (fields in the object's order, input keys None).
 * DSPY_ERR_FORMAT when the text is not a JSON object; the message names `name` (may be NULL). */
DSPY_API dspy_status dspy_example_from_json(const char *json, size_t len, const char *name,
                                            dspy_example **out);

/* ---- datasets -------------------------------------------------------------------------- */

DSPY_API dspy_status dspy_dataset_new(dspy_dataset **out);
/* Frees the dataset and its examples. NULL-safe. */
DSPY_API void dspy_dataset_free(dspy_dataset *ds);
/* Appends `ex` and takes ownership of it (also on failure, when it is freed). */
DSPY_API dspy_status dspy_dataset_append(dspy_dataset *ds, dspy_example *ex);
/* Appends a copy of `ex` that keeps its input keys. */
DSPY_API dspy_status dspy_dataset_append_copy(dspy_dataset *ds, const dspy_example *ex);
DSPY_API size_t dspy_dataset_len(const dspy_dataset *ds);
/* The i-th example (owned by the dataset), NULL when out of range. */
DSPY_API const dspy_example *dspy_dataset_get(const dspy_dataset *ds, size_t i);
DSPY_API dspy_example *dspy_dataset_get_mut(dspy_dataset *ds, size_t i);
/* Python ds[start:end] for non-negative bounds (clamped to the length; start >= end gives an
 * empty dataset). Examples are copied with their input keys. */
DSPY_API dspy_status dspy_dataset_slice(const dspy_dataset *ds, size_t start, size_t end,
                                        dspy_dataset **out);
/* [ds[i] for i in idx]; DSPY_ERR_ARG when an index is out of range. */
DSPY_API dspy_status dspy_dataset_gather(const dspy_dataset *ds, const int32_t *idx, size_t n,
                                         dspy_dataset **out);
/* Sets the input keys of every example, in place. */
DSPY_API dspy_status dspy_dataset_set_inputs(dspy_dataset *ds, const char *const *keys, size_t n);

#ifdef __cplusplus
}
#endif

#endif
