/* dspy/json.h — JSON values, parsing, and Python-compatible serialisation.
 *
 * Values are reference-counted trees (the implementation is jansson; its types never appear
 * here). Objects keep insertion order, as Python dicts do. Parsing reports line and column.
 * Serialisation reproduces, byte for byte, what DSPy's Python produces:
 *   - json.dumps(x) defaults: ", " and ": " separators, ensure_ascii=True   (DSPY_JSON_PY)
 *   - json.dumps(x, ensure_ascii=False)                                       (DSPY_JSON_UTF8)
 *   - compact separators "," ":" (cache keys, JSONL, HTTP bodies)             (DSPY_JSON_COMPACT)
 *   - sort_keys=True                                                          (DSPY_JSON_SORT_KEYS)
 *   - indent=N (Python json / orjson OPT_INDENT_2 layout)                     (DSPY_JSON_INDENT(n))
 * Floats are written as Python's repr(float): the shortest string that reads back to the same
 * double ("0.1", "100.0", "1e-05", "1e+16"); NaN/inf as Python's NaN/Infinity/-Infinity.
 *
 * Ownership: functions named _new/_parse/_load/_copy return a new reference the caller must
 * release with dspy_json_decref (NULL-safe). _get/_at accessors return borrowed references.
 * _set/_append "steal" the value reference passed in (documented per function).
 * Thread safety: a value may be read from many threads; mutation needs external locking.
 */
#ifndef DSPY_JSON_H
#define DSPY_JSON_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/status.h"
#include "dspy/str.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_json dspy_json;

typedef enum dspy_json_type {
    DSPY_JSON_NULL,
    DSPY_JSON_BOOL,
    DSPY_JSON_INT,
    DSPY_JSON_REAL,
    DSPY_JSON_STRING,
    DSPY_JSON_ARRAY,
    DSPY_JSON_OBJECT
} dspy_json_type;

/* Parses `len` bytes (any JSON value at top level). `name` labels errors ("config.json"):
 * "config.json: line 3, column 7: ..." Returns DSPY_ERR_FORMAT on bad JSON. */
DSPY_API dspy_status dspy_json_parse(const char *text, size_t len, const char *name, dspy_json **out);
/* Reads and parses a file; errors name the path. */
DSPY_API dspy_status dspy_json_load(const char *path, dspy_json **out);

/* Constructors (new references; NULL on OOM). */
DSPY_API dspy_json *dspy_json_null(void);
DSPY_API dspy_json *dspy_json_bool(bool b);
DSPY_API dspy_json *dspy_json_int(int64_t v);
DSPY_API dspy_json *dspy_json_real(double v);
DSPY_API dspy_json *dspy_json_string(const char *s);            /* must be valid UTF-8 */
DSPY_API dspy_json *dspy_json_stringn(const char *s, size_t n); /* may contain NUL bytes */
DSPY_API dspy_json *dspy_json_array(void);
DSPY_API dspy_json *dspy_json_object(void);

DSPY_API dspy_json *dspy_json_incref(dspy_json *v);
DSPY_API void dspy_json_decref(dspy_json *v);
/* Deep copy (new reference). */
DSPY_API dspy_json *dspy_json_copy(const dspy_json *v);
/* Python ==: structural, object key order ignored, ints and reals compared by value at any
 * depth (1 == 1.0), bools distinct from numbers. */
DSPY_API bool dspy_json_equal(const dspy_json *a, const dspy_json *b);

DSPY_API dspy_json_type dspy_json_typeof(const dspy_json *v);
DSPY_API bool dspy_json_is_string(const dspy_json *v);
DSPY_API bool dspy_json_is_number(const dspy_json *v);
/* Scalar reads. string: NULL unless a string; len via _len. number: int or real. */
DSPY_API const char *dspy_json_str(const dspy_json *v);
DSPY_API size_t dspy_json_strlen(const dspy_json *v);
DSPY_API int64_t dspy_json_intval(const dspy_json *v);   /* 0 unless an int (reals are truncated) */
DSPY_API double dspy_json_number(const dspy_json *v);    /* int or real as double; 0 otherwise */
DSPY_API bool dspy_json_truthy(const dspy_json *v);      /* Python bool(): "", 0, [], {}, null are false */

/* Objects (insertion-ordered). _get returns a borrowed reference or NULL. */
DSPY_API dspy_json *dspy_json_get(const dspy_json *obj, const char *key);
/* Sets key to `val`, stealing the reference (also on failure). Replaces in place, keeping the
 * key's position, as Python dict assignment does. */
DSPY_API dspy_status dspy_json_set(dspy_json *obj, const char *key, dspy_json *val);
DSPY_API dspy_status dspy_json_set_str(dspy_json *obj, const char *key, const char *s);
DSPY_API dspy_status dspy_json_del(dspy_json *obj, const char *key);
DSPY_API size_t dspy_json_size(const dspy_json *v);      /* entries of an object or array; 0 otherwise */
/* Iteration in insertion order: for (void *it = dspy_json_iter(o); it; it = dspy_json_next(o, it)) */
DSPY_API void *dspy_json_iter(const dspy_json *obj);
DSPY_API void *dspy_json_next(const dspy_json *obj, void *it);
DSPY_API const char *dspy_json_iter_key(void *it);
DSPY_API dspy_json *dspy_json_iter_value(void *it);

/* Arrays. _at returns a borrowed reference or NULL; _append steals `val`. */
DSPY_API dspy_json *dspy_json_at(const dspy_json *arr, size_t i);
DSPY_API dspy_status dspy_json_append(dspy_json *arr, dspy_json *val);

/* Typed lookups with errors that name `where` and the key:
 * "config.json: \"hidden_size\" must be an integer". Missing keys give DSPY_ERR_NOTFOUND
 * unless a default is used. */
DSPY_API dspy_status dspy_json_get_int(const dspy_json *obj, const char *key, const char *where, int64_t *out);
DSPY_API dspy_status dspy_json_get_num(const dspy_json *obj, const char *key, const char *where, double *out);
DSPY_API dspy_status dspy_json_get_strv(const dspy_json *obj, const char *key, const char *where, const char **out);
DSPY_API int64_t dspy_json_int_or(const dspy_json *obj, const char *key, int64_t def);
DSPY_API double dspy_json_num_or(const dspy_json *obj, const char *key, double def);
DSPY_API const char *dspy_json_str_or(const dspy_json *obj, const char *key, const char *def);
DSPY_API bool dspy_json_bool_or(const dspy_json *obj, const char *key, bool def);

/* Serialisation flags. */
enum {
    DSPY_JSON_PY = 0,               /* json.dumps defaults */
    DSPY_JSON_UTF8 = 1 << 0,        /* ensure_ascii=False */
    DSPY_JSON_COMPACT = 1 << 1,     /* separators=(",", ":") */
    DSPY_JSON_SORT_KEYS = 1 << 2,   /* sort_keys=True (by UTF-8 bytes = code points) */
};
#define DSPY_JSON_INDENT(n) ((int)(((n) & 0x1F) << 8)) /* indent=n (0..31) */

/* Appends the serialisation of `v` to `out`. */
DSPY_API dspy_status dspy_json_dump(const dspy_json *v, int flags, dspy_str *out);
/* Same, returning a malloc'd string (NULL on OOM with dspy_errmsg set). */
DSPY_API char *dspy_json_dumps(const dspy_json *v, int flags);

/* Python repr() of the value: dicts {'a': 1}, lists [1, 'x'], str with Python's quoting rules,
 * True/False/None, float repr. Appends to `out`. */
DSPY_API void dspy_json_repr(const dspy_json *v, dspy_str *out);
/* Python repr() of a UTF-8 string: picks ' or " as Python does, escapes \\ \n \r \t and
 * non-printable characters (\xNN, \uNNNN), keeps printable non-ASCII as is. */
DSPY_API void dspy_py_repr_str(const char *s, size_t n, dspy_str *out);
/* Python repr(float) into buf (at least 32 bytes). */
DSPY_API void dspy_py_float_repr(double x, char *buf, size_t cap);
/* Python str() of a value: strings as-is, everything else as repr. */
DSPY_API void dspy_json_pystr(const dspy_json *v, dspy_str *out);

#ifdef __cplusplus
}
#endif

#endif
