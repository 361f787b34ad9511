/* dspy/structured.h — compilers from output specifications to token automata
 * (dspy/constraint.h) over a tokenizer's vocabulary: structured outputs for the server.
 *
 * What it does: turns
 *   - a Literal set (exactly one of some strings),
 *   - a ChatAdapter field layout ("[[ ## reasoning ## ]]" free text, "[[ ## label ## ]]" one of
 *     the Literal values, ..., "[[ ## completed ## ]]"), or
 *   - a JSON schema (the subset DSPy's JSONAdapter sends: objects with string, number, integer,
 *     boolean, null, enum/const, anyOf, array and nested-object members, $ref into $defs) or
 *     any JSON object (response_format {"type": "json_object"})
 * into a byte-level automaton, then into a token automaton: a token is allowed in a state when
 * its whole byte string (dspy_tokenizer_token_bytes) walks the byte automaton without dying,
 * and it moves to where the walk lands. Any tokenization of an allowed text is allowed, not
 * only the canonical one. Special tokens are never allowed; eos ends the output in the
 * accepting states only (right after the literal, the "[[ ## completed ## ]]" marker, or the
 * closing brace).
 *
 * Jump-forward: each state of a compiled automaton whose next bytes are fixed (a header, the
 * rest of a Literal value once its first bytes tell which, the closing marker) carries them as
 * a jump list (dspy_constraint_jump), cut into tokens by longest match over the vocabulary; the
 * engine drafts them (dspy_engine_params.jump_tokens) without changing what is sampled.
 *
 * Bounded free text: a free-text field of a layout and a JSON string value may take at most
 * max_tokens tokens; then the automaton allows only the shortest way out (the blank line before
 * the next header, the closing quote), so every sequence ends in a parseable answer even when
 * the model would ramble on. Bounds cost memory (each counted token is a copy of the text's
 * states: ~65 KB per level over Llama 3's vocabulary, so 256 tokens ~17 MB); 0 means
 * unbounded.
 *
 * What the outputs look like (and what the automaton enforces):
 *   - layout: "[[ ## f1 ## ]]\n" v1 "\n\n[[ ## f2 ## ]]\n" v2 ... "\n\n[[ ## completed ## ]]",
 *     the layout DSPy's ChatAdapter writes and parses. Free text never contains '[' nor a
 *     blank line ("\n\n"), so no line of it can read as a field header; a Literal field's value
 *     is exactly one of its strings.
 *   - JSON: objects list the schema's properties in the order of "properties" (required ones
 *     always, optional ones may be left out), with up to max_whitespace bytes of whitespace
 *     between tokens; numbers have at most 15 integer and 15 fraction digits; strings are
 *     written with raw UTF-8 (escapes allowed). Array lengths and, for json_object, nesting
 *     depth (max_depth) and key counts are not counted: those stay bounded only by max_tokens.
 *
 * Thread safety: a vocabulary is immutable once built and may be shared by threads; compiling
 * reads it only. The automata are dspy_constraint objects (immutable once returned).
 */
#ifndef DSPY_STRUCTURED_H
#define DSPY_STRUCTURED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/constraint.h"
#include "dspy/export.h"
#include "dspy/json.h"
#include "dspy/status.h"
#include "dspy/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The token byte strings of a tokenizer, as a trie (built once per tokenizer; ~10 MB and
 * ~0.1 s for Llama 3's 128k tokens). model_vocab (>= the tokenizer's vocab size) is the size of
 * the automata it compiles: ids past the tokenizer's are never allowed. */
typedef struct dspy_structured_vocab dspy_structured_vocab;

DSPY_API dspy_status dspy_structured_vocab_new(const dspy_tokenizer *tok, int32_t model_vocab, dspy_structured_vocab **out);
DSPY_API void dspy_structured_vocab_free(dspy_structured_vocab *v); /* NULL-safe */

typedef struct dspy_structured_params {
    int32_t max_string_tokens; /* JSON string values: tokens each may take (0 = unbounded);
                                  default 0 */
    int32_t max_whitespace;    /* JSON: whitespace bytes allowed between two tokens; default 8 */
    int32_t max_depth;         /* json_object / open objects: nesting depth of values; default 2 */
} dspy_structured_params;

DSPY_API dspy_structured_params dspy_structured_params_default(void);

/* One field of a ChatAdapter layout: free text (n_values 0) or one of `values` (exact bytes,
 * non-empty, as the adapter writes them: the Python str() of each Literal value). */
typedef struct dspy_layout_field {
    const char *name;          /* a Python identifier ([A-Za-z_][A-Za-z0-9_]*) */
    const char *const *values; /* NULL for free text */
    size_t n_values;
    int32_t max_tokens;        /* free text: tokens it may take (0 = unbounded) */
} dspy_layout_field;

/* Exactly one of the n strings (non-empty, duplicates ignored), then eos.
 * DSPY_ERR_ARG: no values, an empty value. */
DSPY_API dspy_status dspy_structured_literal(const dspy_structured_vocab *v, const char *const *values, size_t n,
                                    dspy_constraint **out);

/* A ChatAdapter answer with these fields in this order, then "[[ ## completed ## ]]" and eos.
 * DSPY_ERR_ARG naming the field: no fields, a bad or repeated name, an empty Literal value, a
 * negative max_tokens. */
DSPY_API dspy_status dspy_structured_layout(const dspy_structured_vocab *v, const dspy_layout_field *fields, size_t n,
                                   dspy_constraint **out);

/* A JSON document valid under `schema` (see the top for the subset), then eos. p may be NULL
 * (defaults). DSPY_ERR_ARG for a schema outside the subset, with the JSON pointer of the part
 * and the reason ("/properties/age: keyword 'minimum' is not supported"). */
DSPY_API dspy_status dspy_structured_json_schema(const dspy_structured_vocab *v, const dspy_json *schema,
                                        const dspy_structured_params *p, dspy_constraint **out);

/* Any JSON object (values nested up to p->max_depth), then eos. */
DSPY_API dspy_status dspy_structured_json_object(const dspy_structured_vocab *v, const dspy_structured_params *p,
                                        dspy_constraint **out);

#ifdef __cplusplus
}
#endif
#endif
