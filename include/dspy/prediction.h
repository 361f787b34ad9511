/* dspy/prediction.h — dspy.Prediction: the output of a module call.
 *
 * A prediction is an ordered map from field name to JSON value (the first completion's values)
 * plus the completions: every choice the LM returned, parsed into fields. It follows DSPy 3.3.1
 * dspy/primitives/prediction.py (spec §11.2, conformance CC-20, CC-28):
 *   - from_completions([{"answer": "a"}, {"answer": "b"}]) stores answer='a'; the completions
 *     hold answer=['a', 'b'] (keys in order of first appearance);
 *   - repr is "Prediction(\n    answer='Paris'\n)" (values as Python repr, ",\n    " between
 *     fields); with k > 1 completions ",\n    completions=Completions(...)\n) (k-1 completions
 *     omitted)" follows the fields;
 *   - float(pred), comparisons and arithmetic use the "score" field (dspy_prediction_score).
 * Unlike dspy.Example, a prediction has no input keys and its repr shows every key.
 *
 * Ownership: predictions are reference counted (a trace and the caller share one);
 * dspy_prediction_free drops one reference. Accessors return borrowed values that live as long
 * as the prediction and are not changed by a later dspy_prediction_set of another key.
 * Thread safety: a prediction may be read from many threads; dspy_prediction_set needs
 * exclusive access (predictions a module returns are not changed by the library afterwards).
 */
#ifndef DSPY_PREDICTION_H
#define DSPY_PREDICTION_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>

#include "dspy/example.h"
#include "dspy/json.h"
#include "dspy/status.h"
#include "dspy/str.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_prediction dspy_prediction;

/* An empty prediction without completions (Python: Prediction()). */
DSPY_API dspy_status dspy_prediction_new(dspy_prediction **out);
/* Prediction(**fields): fields is a JSON object, copied (shallowly: values are shared). */
DSPY_API dspy_status dspy_prediction_from_fields(const dspy_json *fields, dspy_prediction **out);
/* Prediction.from_completions(list_or_dict): `completions` is a JSON array of objects (one per
 * choice) or an object of equal-length arrays (field -> values). The fields take each key's
 * first value. DSPY_ERR_ARG when the shape is wrong (non-object entries, non-list values,
 * lists of different lengths: DSPy's "All lists must have the same length"). */
DSPY_API dspy_status dspy_prediction_from_completions(const dspy_json *completions, dspy_prediction **out);

DSPY_API dspy_prediction *dspy_prediction_retain(dspy_prediction *p); /* NULL-safe; returns p */
DSPY_API void dspy_prediction_free(dspy_prediction *p);               /* NULL-safe; drops one reference */

/* pred[key] = value (steals `value`, also on failure); an existing key keeps its position. */
DSPY_API dspy_status dspy_prediction_set(dspy_prediction *p, const char *key, dspy_json *value);
/* pred[key], borrowed; NULL when absent. */
DSPY_API const dspy_json *dspy_prediction_get(const dspy_prediction *p, const char *key);
/* The string value of `key`; NULL when absent or not a string. */
DSPY_API const char *dspy_prediction_get_str(const dspy_prediction *p, const char *key);
/* All fields as a JSON object in order (borrowed). Dump it for "fields in order" JSON. */
DSPY_API const dspy_json *dspy_prediction_fields(const dspy_prediction *p);
/* Number of fields and the i-th key (NULL past the end), all keys included. */
DSPY_API size_t dspy_prediction_len(const dspy_prediction *p);
DSPY_API const char *dspy_prediction_key(const dspy_prediction *p, size_t i);

/* len(pred.completions): 0 for a prediction built without completions (Python: None). */
DSPY_API size_t dspy_prediction_n_completions(const dspy_prediction *p);
/* pred.completions as {field: [values...]} (borrowed; NULL without completions). */
DSPY_API const dspy_json *dspy_prediction_completions(const dspy_prediction *p);
/* pred.completions[i] as a new Prediction (no completions of its own). DSPY_ERR_ARG with
 * DSPy's "Index out of range" when i >= n_completions. */
DSPY_API dspy_status dspy_prediction_completion(const dspy_prediction *p, size_t i, dspy_prediction **out);

/* repr(pred) appended to `out` / returned malloc'd in *out. */
DSPY_API void dspy_prediction_append_repr(dspy_str *out, const dspy_prediction *p);
DSPY_API dspy_status dspy_prediction_repr(const dspy_prediction *p, char **out);
/* repr(pred.completions): "Completions(\n    answer=['a', 'b']\n)". DSPY_ERR_STATE without
 * completions. */
DSPY_API dspy_status dspy_prediction_completions_repr(const dspy_prediction *p, char **out);

/* float(pred): the "score" field as a number (bools count as 0/1, as Python's float()).
 * DSPY_ERR_NOTFOUND with DSPy's message "Prediction object does not have a 'score' field to
 * convert to float."; DSPY_ERR_ARG when the score is not a number. Comparisons and arithmetic
 * (pred + 1, pred < other) are done on this value by the caller. */
DSPY_API dspy_status dspy_prediction_score(const dspy_prediction *p, double *out);

/* An Example with the prediction's fields (input keys None), for metrics that take examples. */
DSPY_API dspy_status dspy_prediction_to_example(const dspy_prediction *p, dspy_example **out);

/* Python ==: the same keys with equal values (completions are not compared). */
DSPY_API bool dspy_prediction_equal(const dspy_prediction *a, const dspy_prediction *b);

#ifdef __cplusplus
}
#endif
#endif
