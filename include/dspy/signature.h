/* dspy/signature.h — DSPy signatures: typed input/output fields plus instructions.
 *
 * A signature is what `dspy.Signature("question, context -> answer: int", "instructions")`
 * builds (spec §1, dspy/signatures/signature.py): an ordered list of input fields followed by
 * output fields, each with a name (a Python identifier), a type (dspy/type.h), a description
 * (default "${name}") and a prefix (default infer_prefix(name) + ":"), and instructions
 * (default "Given the fields `a`, `b`, produce the fields `c`."; the accessor returns
 * inspect.cleandoc of what was given, as DSPy's `.instructions` does).
 *
 * Field indices run over all fields: inputs 0..n_inputs-1, then outputs.
 * Ownership: constructors (_parse, _new, _copy and every function returning a new signature
 * through **out) give the caller a signature to release with dspy_signature_free (NULL-safe).
 * Strings returned by accessors are owned by the signature and live until it is freed or the
 * field is changed with a setter.
 * Thread safety: a signature may be read from many threads; setters need exclusive access.
 */
#ifndef DSPY_SIGNATURE_H
#define DSPY_SIGNATURE_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>

#include "dspy/json.h"
#include "dspy/status.h"
#include "dspy/type.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_signature dspy_signature;

typedef enum dspy_field_kind {
    DSPY_FIELD_INPUT,
    DSPY_FIELD_OUTPUT
} dspy_field_kind;

/* One field for dspy_signature_new / _prepend / _append. */
typedef struct dspy_field_spec {
    const char *name;      /* a Python identifier, not a keyword */
    dspy_field_kind kind;
    const char *type;      /* type expression ("list[str]"); NULL = str */
    const char *desc;      /* NULL = "${name}" */
    const char *prefix;    /* NULL = infer_prefix(name) + ":" */
} dspy_field_spec;

/* Parses "inputs -> outputs". `instructions` NULL gives the default instructions; "" gives
 * empty instructions. Errors (DSPY_ERR_FORMAT) use DSPy's wording where it has one:
 *   "Invalid signature format: 'a, b', must contain exactly one '->'."
 *   "Input and output fields must have distinct names, but found duplicates: 'a'."
 *   "Unknown name: Foo"
 * and name the column for syntax errors. */
DSPY_API dspy_status dspy_signature_parse(const char *text, const char *instructions, dspy_signature **out);
/* Builds a signature from field specs (inputs and outputs may be interleaved in `fields`; the
 * signature keeps inputs first, each group in the given order). */
DSPY_API dspy_status dspy_signature_new(const dspy_field_spec *fields, size_t n, const char *instructions,
                                        dspy_signature **out);
DSPY_API dspy_status dspy_signature_copy(const dspy_signature *s, dspy_signature **out);
DSPY_API void dspy_signature_free(dspy_signature *s);

DSPY_API size_t dspy_signature_n_inputs(const dspy_signature *s);
DSPY_API size_t dspy_signature_n_outputs(const dspy_signature *s);
DSPY_API size_t dspy_signature_n_fields(const dspy_signature *s);
DSPY_API const char *dspy_signature_field_name(const dspy_signature *s, size_t i);
DSPY_API dspy_field_kind dspy_signature_field_kind(const dspy_signature *s, size_t i);
DSPY_API const dspy_type *dspy_signature_field_type(const dspy_signature *s, size_t i);
DSPY_API const char *dspy_signature_field_desc(const dspy_signature *s, size_t i);
DSPY_API const char *dspy_signature_field_prefix(const dspy_signature *s, size_t i);
/* True for input fields written without a type (DSPy's IS_TYPE_UNDEFINED). */
DSPY_API bool dspy_signature_field_type_undefined(const dspy_signature *s, size_t i);
/* The declared default of an output field (borrowed), or NULL when it has none. */
DSPY_API const dspy_json *dspy_signature_field_default(const dspy_signature *s, size_t i);
/* Finds a field by name; returns false when absent. */
DSPY_API bool dspy_signature_find(const dspy_signature *s, const char *name, size_t *index);

/* Instructions as DSPy's `.instructions` returns them (inspect.cleandoc). */
DSPY_API const char *dspy_signature_instructions(const dspy_signature *s);
/* "a, b -> c" (DSPy's `.signature`); malloc'd, NULL on OOM. */
DSPY_API char *dspy_signature_text(const dspy_signature *s);

/* In-place field updates (DSPy's with_updated_fields on the owner's copy). DSPY_ERR_NOTFOUND
 * for an unknown name. A default may only be set on an output field (DSPY_ERR_ARG otherwise);
 * NULL removes it. The value is copied. */
DSPY_API dspy_status dspy_signature_set_desc(dspy_signature *s, const char *name, const char *desc);
DSPY_API dspy_status dspy_signature_set_prefix(dspy_signature *s, const char *name, const char *prefix);
DSPY_API dspy_status dspy_signature_set_default(dspy_signature *s, const char *name, const dspy_json *value);

/* New signatures (DSPy's Signature class methods); the source is unchanged. Instructions are
 * kept as they are (not recomputed from the new field list); with_instructions(NULL) gives
 * empty instructions. */
DSPY_API dspy_status dspy_signature_with_instructions(const dspy_signature *s, const char *instructions,
                                                      dspy_signature **out);
DSPY_API dspy_status dspy_signature_prepend(const dspy_signature *s, const dspy_field_spec *field,
                                            dspy_signature **out);
DSPY_API dspy_status dspy_signature_append(const dspy_signature *s, const dspy_field_spec *field,
                                           dspy_signature **out);
/* ChainOfThought's signature (spec §2): `reasoning: str` prepended to the outputs, desc
 * "${reasoning}", prefix "Reasoning:" (V33) or "Reasoning: Let's think step by step in order
 * to" (V26). */
DSPY_API dspy_status dspy_signature_chain_of_thought(const dspy_signature *s, dspy_profile p,
                                                     dspy_signature **out);

/* {"instructions": str, "fields": [{"prefix": p, "description": d}, ...]} in field order. */
DSPY_API dspy_status dspy_signature_dump_state(const dspy_signature *s, dspy_json **out);
/* A copy of `s` with the state's instructions and, zipped by position (the shorter list wins),
 * the state's prefixes and descriptions. DSPY_ERR_FORMAT names the bad key. */
DSPY_API dspy_status dspy_signature_load_state(const dspy_signature *s, const dspy_json *state,
                                               dspy_signature **out);

/* infer_prefix(name) without the trailing ':' ("someAttributeName42IsCool" ->
 * "Some Attribute Name 42 Is Cool"); malloc'd, NULL on OOM. */
DSPY_API char *dspy_infer_prefix(const char *name);

#ifdef __cplusplus
}
#endif

#endif
