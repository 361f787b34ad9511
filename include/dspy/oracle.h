/* dspy/oracle.h — the oracle teacher: a clearly labelled STAND-IN LM for offline runs.
 *
 * What it does: answers each prompt of a classification program (DSPy's ChatAdapter or
 * JSONAdapter layout) with the dataset's gold label and a templated reasoning line, so that the
 * whole BootstrapFinetune flow (bootstrap, JSONL, fine-tune, serve, evaluate) can run with no
 * network and no API key. It is NOT a language model and knows nothing but the dataset it was
 * given: an offline run with it shows that every other step is real, never what a real teacher
 * (gpt-4o-mini in DSPy's tutorial) would produce.
 *
 * How it answers (one reply per requested choice, "n" honoured):
 *   1. the input is the value of the `[[ ## <input_field> ## ]]` marker of the LAST user message:
 *      the text after the marker line, up to the next "\n\n[[ ## " marker or the adapter's
 *      "\n\nRespond with ..." request (or the end), Python-stripped;
 *   2. the label is the one of the dataset example whose input (stripped) equals it; when the
 *      dataset holds the same text twice, the first label wins;
 *   3. the reasoning (only when the prompt asks for a `reasoning` output, i.e. ChainOfThought) is
 *      `The message "<text>" is about <label with '_' shown as ' '>.`;
 *   4. the reply is ChatAdapter output
 *        [[ ## reasoning ## ]]\n<reasoning>\n\n[[ ## label ## ]]\n<label>\n\n[[ ## completed ## ]]
 *      or, when the request asks for JSON (a "response_format" kwarg, or the JSONAdapter's
 *      "Respond with a JSON object" request), the JSON object {"reasoning": ..., "label": ...}.
 * An input it cannot find is an error (DSPY_ERR_NOTFOUND, "oracle: text not in the dataset:
 * ..."), which the program layer reports like any failed LM call (a teacher failure).
 *
 * The LM is an ordinary dspy_lm (a custom provider, lm.h): history, inspect_history, callbacks
 * and usage work as for any LM; usage is reported as zero tokens. Caching is off by default
 * (answers are computed, not fetched).
 *
 * Thread safety: the LM may be called from many threads at once; the map is read-only.
 */
#ifndef DSPY_ORACLE_H
#define DSPY_ORACLE_H

#include "dspy/export.h"

#include "dspy/example.h"
#include "dspy/lm.h"
#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_oracle dspy_oracle;

typedef struct dspy_oracle_params {
    const char *input_field;     /* the field holding the text. Default "text" */
    const char *output_field;    /* the label field. Default "label" */
    const char *reasoning_field; /* the CoT field answered when the prompt asks for it.
                                    Default "reasoning" */
} dspy_oracle_params;

DSPY_API dspy_oracle_params dspy_oracle_params_default(void);

/* An oracle over `data`: examples holding input_field and output_field as strings (examples
 * lacking either are skipped; the texts are copied into a map, so `data` may be freed
 * afterwards). `p` may be NULL (defaults). Errors: DSPY_ERR_ARG when no example has both
 * fields (the message names them), DSPY_ERR_NOMEM. *out NULL on failure. Reference counted:
 * LMs made from it keep a reference. */
DSPY_API dspy_status dspy_oracle_new(const dspy_dataset *data, const dspy_oracle_params *p, dspy_oracle **out);
/* Drops one reference (NULL-safe). */
DSPY_API void dspy_oracle_free(dspy_oracle *o);
/* Distinct texts the oracle knows. */
DSPY_API size_t dspy_oracle_size(const dspy_oracle *o);

/* The reply the oracle gives to `messages` (a JSON array of {"role", "content"}), malloc'd in
 * *out; `json` selects the JSON-object form. Errors as an LM call would return them for that
 * request: DSPY_ERR_NOTFOUND (text not in the dataset, quoted), DSPY_ERR_ARG (no user message,
 * or no input marker in it). */
DSPY_API dspy_status dspy_oracle_reply(const dspy_oracle *o, const dspy_json *messages, bool json, char **out);

/* An LM answering through `o` (retained). `model` is its model string (NULL = "oracle"; e.g.
 * "oracle:banking77"); `p` may be NULL (defaults). Its cache is off unless p->cache is 1. */
DSPY_API dspy_status dspy_oracle_lm_new(dspy_oracle *o, const char *model, const dspy_lm_params *p, dspy_lm **out);

#ifdef __cplusplus
}
#endif
#endif
