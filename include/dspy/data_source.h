/* dspy/data_source.h — a task's examples from a JSONL file, a CSV file or a Hugging Face
 * dataset split, with the source's columns mapped to a program's fields; the DSPy tutorial's
 * split for any labelled pool; the label set of a dataset.
 *
 * Sources (the string given to dspy_data_load):
 *   PATH.jsonl, PATH.ndjson     one JSON object per line (dspy/jsonl.h); values keep their JSON
 *                               type (a list stays a list)
 *   PATH.csv                    RFC 4180 with a header row (dspy/csv.h); every cell is a string
 *   hf:DATASET                  a Hugging Face dataset through the dataset viewer API
 *   hf:DATASET:SPLIT            (dspy/hf_datasets.h, cached), config "default", split "train"
 *   hf:DATASET:CONFIG:SPLIT     unless given, e.g. hf:PolyAI/banking77:test, hf:glue:sst2:validation
 * Mapping: each input field reads one column (field = column by default; "text" may read a
 * column "sentence"), and the label field reads one column. The examples hold only the mapped
 * fields, inputs first in the order given, then the label; their input keys are the input
 * fields (Example(...).with_inputs(*fields)).
 * Labels: a string stays as it is; an integer becomes its class name when the source is a
 * Hugging Face ClassLabel column (names from /info, in id order, as the DSPy tutorial does with
 * CLASSES[x.label]), else its decimal text ("3"); any other JSON type, an empty string or a
 * missing label is an error naming the row.
 * Errors name the source and the row: "train.jsonl: line 7: no column 'question' (the line has
 * 'q', 'a'); map it with question=q". A source is returned whole or not at all.
 *
 * Thread safety: the functions may run on several threads at once (no shared state besides
 * the HF cache files, which are written atomically).
 */
#ifndef DSPY_DATA_SOURCE_H
#define DSPY_DATA_SOURCE_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/datasets.h"
#include "dspy/example.h"
#include "dspy/hf_datasets.h"
#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One field and the source column it reads (column NULL = the field's own name). */
typedef struct dspy_field_map {
    const char *field;
    const char *column;
} dspy_field_map;

typedef struct dspy_data_params {
    const dspy_field_map *inputs; /* the program's input fields (at least one) */
    size_t n_inputs;
    const dspy_field_map *label;  /* the label field, or NULL for unlabeled data */
    bool label_optional;          /* rows without the label are kept unlabeled (default false:
                                     an error) */
    dspy_hf_params hf;            /* for hf: sources (dspy_hf_params_default()) */
} dspy_data_params;

DSPY_API dspy_data_params dspy_data_params_default(void);

/* "text" -> {text, NULL}; "text=sentence" -> {text, sentence}. The strings point into `spec`
 * (which must outlive the map; the '=' is not modified: column is spec's tail and field is
 * copied into field_buf of field_cap bytes). DSPY_ERR_ARG for an empty side or a field that is
 * not a Python identifier. */
DSPY_API dspy_status dspy_field_map_parse(const char *spec, char *field_buf, size_t field_cap, dspy_field_map *out);

/* The kind of source `source` names: "jsonl", "csv", "hf", or NULL with DSPY_ERR_ARG (the
 * message lists the accepted forms). Checks only the name, not the file. */
DSPY_API dspy_status dspy_data_source_kind(const char *source, const char **kind);

/* Loads a source (see the top of this file). *class_names (may be NULL) gets the ClassLabel
 * names of the label column for a Hugging Face source that has them, else NULL. Errors:
 * DSPY_ERR_ARG (bad source name or params), DSPY_ERR_NOTFOUND (no such file), DSPY_ERR_IO,
 * DSPY_ERR_FORMAT (bad file, a missing column or label, named with the row), network errors of
 * dspy/hf_datasets.h. Out-params are NULL on failure. */
DSPY_API dspy_status dspy_data_load(const char *source, const dspy_data_params *p, dspy_dataset **out,
                                    dspy_labels **class_names);

/* The distinct string values of `field` over the given datasets (NULL entries skipped), sorted
 * by their UTF-8 bytes (a stable order for a Literal[...] type whatever the row order).
 * DSPY_ERR_ARG when there are none. */
DSPY_API dspy_status dspy_labels_collect(const dspy_dataset *const *sets, size_t n, const char *field, dspy_labels **out);

/* The tutorial's split of any pool (dspy_banking77_tutorial_split is this with n_raw 1000,
 * n_train 500, n_dev 100, seed 0 and the trainset reduced to its inputs): the first n_raw rows
 * (0: all), shuffled with Python's random.Random(seed).shuffle; positions [0, n_train) are the
 * trainset, [n_train, n_train + n_dev) the devset. Examples are copies that keep their input
 * keys. Either out-param may be NULL. DSPY_ERR_ARG when n_train + n_dev exceeds the rows used. */
DSPY_API dspy_status dspy_tutorial_split_pool(const dspy_dataset *pool, size_t n_raw, size_t n_train, size_t n_dev,
                                              uint64_t seed, dspy_dataset **trainset, dspy_dataset **devset);

/* Example(**x.inputs()).with_inputs(*x.input_keys) for each example: the unlabeled copy the
 * tutorial bootstraps from. DSPY_ERR_STATE when an example has no input keys. */
DSPY_API dspy_status dspy_dataset_inputs_only(const dspy_dataset *ds, dspy_dataset **out);

#ifdef __cplusplus
}
#endif
#endif
