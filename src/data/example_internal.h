/* example_internal.h — jansson view of dspy_value and examples, for code inside src/.
 *
 * A dspy_value is a json_t that its example holds a reference to; these casts are the only
 * place that knows it. Other layers use the public API in include/dspy/example.h.
 */
#ifndef DSPY_DATA_EXAMPLE_INTERNAL_H
#define DSPY_DATA_EXAMPLE_INTERNAL_H

#include <jansson.h>
#include <stdint.h>

#include "dspy/example.h"

static inline json_t *dspy_value_json(const dspy_value *v) { return (json_t *)(uintptr_t)v; }
static inline const dspy_value *dspy_value_of_json(const json_t *j) {
    return (const dspy_value *)(const void *)j;
}

/* Stores `v` under `key`, taking over the caller's reference (also on failure). */
dspy_status dspy_example_set_json(dspy_example *ex, const char *key, json_t *v);
/* A new example with the members of JSON object `obj` (values shared by reference). */
dspy_status dspy_example_from_json_object(const json_t *obj, dspy_example **out);
/* A new JSON object with the fields (new reference), NULL on OOM (dspy_errmsg set). */
json_t *dspy_example_to_json_object(const dspy_example *ex, bool include_dspy);

/* The end of a train/dev split: on failure (st != DSPY_OK) frees both halves and returns st;
 * else hands each to its out-parameter, or frees it when that is NULL (the caller wants only
 * the other half), and returns DSPY_OK. */
dspy_status dspy_split_hand_out(dspy_status st, dspy_dataset *tr, dspy_dataset *dev, dspy_dataset **trainset,
                                dspy_dataset **devset);

#endif
