/* dspy/datasets.h — class label lists and the Banking77 dataset with the tutorial's split.
 *
 * Banking77 (PolyAI/banking77) comes either from a local folder (train.csv, test.csv with
 * header `text,category`, and labels.txt with the 77 names in Hugging Face ClassLabel order,
 * as in shared/data/banking77) or from the Hugging Face dataset viewer API (hf_datasets.h).
 * Both give the same examples: {text, label} where label is the class NAME, the way the DSPy
 * tutorial builds them (`dspy.Example(x, label=CLASSES[x.label]).with_inputs("text")`), rows
 * in HF order (= CSV order). The label id is the name's index in the label list.
 *
 * Tutorial split (spec §11.3): the first 1,000 train rows, shuffled with Python's
 * random.Random(0).shuffle; positions 0..499 become the unlabeled trainset
 * (Example(text=x.text).with_inputs("text")), positions 500..599 the devset (text and label,
 * input key text). Also here: the tutorial's labelled trainset and a seeded stratified split
 * (stratified.c).
 */
#ifndef DSPY_DATASETS_H
#define DSPY_DATASETS_H

#include "dspy/export.h"

#include <stddef.h>
#include <stdint.h>
#include "dspy/example.h"
#include "dspy/hf_datasets.h"
#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- class labels ---------------------------------------------------------------------- */

typedef struct dspy_labels dspy_labels; /* immutable once built; safe to share across threads */

/* One name per line (LF or CRLF, final newline optional). Errors name the file and line:
 * an empty line, a duplicate name, invalid UTF-8 (DSPY_ERR_FORMAT); DSPY_ERR_IO. */
DSPY_API dspy_status dspy_labels_load(const char *path, dspy_labels **out);
/* From an array of names (copied). Duplicates are an error (DSPY_ERR_ARG). */
DSPY_API dspy_status dspy_labels_from_array(const char *const *names, size_t n, dspy_labels **out);
DSPY_API void dspy_labels_free(dspy_labels *l); /* NULL-safe */
DSPY_API size_t dspy_labels_count(const dspy_labels *l);
/* Name of label id `id`, or NULL when out of range. */
DSPY_API const char *dspy_labels_name(const dspy_labels *l, int32_t id);
/* Id of `name`, or -1. */
DSPY_API int32_t dspy_labels_id(const dspy_labels *l, const char *name);

/* ---- Banking77 --------------------------------------------------------------------------- */

#define DSPY_BANKING77_HF_NAME "PolyAI/banking77"
#define DSPY_BANKING77_NUM_LABELS 77

typedef enum dspy_banking77_split {
    DSPY_BANKING77_TRAIN,          /* 10,003 rows */
    DSPY_BANKING77_TEST,           /* 3,080 rows */
    DSPY_BANKING77_TUTORIAL_TRAIN, /* 500 rows, text only */
    DSPY_BANKING77_TUTORIAL_DEV    /* 100 rows, text and label */
} dspy_banking77_split;

/* "train", "test", "tutorial-train", "tutorial-dev" -> split; DSPY_ERR_ARG listing the names
 * otherwise. */
DSPY_API dspy_status dspy_banking77_split_parse(const char *name, dspy_banking77_split *out);
/* The name of a split ("train", ...). */
DSPY_API const char *dspy_banking77_split_name(dspy_banking77_split split);

typedef struct dspy_banking77_params {
    const char *data_dir; /* folder with train.csv, test.csv, labels.txt; NULL: download (hf) */
    dspy_hf_params hf;    /* used when data_dir is NULL */
} dspy_banking77_params;

DSPY_API dspy_banking77_params dspy_banking77_params_default(void);

/* Loads one split. *out: examples {text, label-name} with input key "text" (tutorial-train:
 * {text} only). *labels (may be NULL) gets the 77 names in id order. Errors: DSPY_ERR_IO,
 * DSPY_ERR_FORMAT (with file and line, e.g. an unknown category), network errors from
 * hf_datasets.h. Out-params are NULL on failure. */
DSPY_API dspy_status dspy_banking77_load(const dspy_banking77_params *p, dspy_banking77_split split,
                                         dspy_dataset **out, dspy_labels **labels);

/* The tutorial split of a train set in HF order ({text, label} examples, at least 1,000):
 * see the top of this file. Either out-param may be NULL. DSPY_ERR_ARG when train is too short. */
DSPY_API dspy_status dspy_banking77_tutorial_split(const dspy_dataset *train, dspy_dataset **trainset,
                                                   dspy_dataset **devset);

/* The tutorial's labelled trainset (its second run, with a metric): raw_data[:500] of the split
 * above with their labels, i.e. [x.with_inputs("text") for x in raw_data[:500]]. Same errors
 * as dspy_banking77_tutorial_split. */
DSPY_API dspy_status dspy_banking77_tutorial_trainset_labeled(const dspy_dataset *train, dspy_dataset **out);

/* A seeded stratified sample of a labelled `pool` (e.g. the official test set): n_train + n_dev
 * distinct examples (copies, input keys kept) spread as evenly as the pool allows over every
 * value of `label_key` (NULL = "label"). The algorithm (Python's random.Random(seed), so it can
 * be reproduced in Python) is described in src/data/stratified.c. Either out-param may be NULL.
 * Errors: DSPY_ERR_ARG when n_train + n_dev exceeds the pool; DSPY_ERR_FORMAT for an example
 * without a string label (its index is named). */
DSPY_API dspy_status dspy_stratified_split(const dspy_dataset *pool, const char *label_key, size_t n_train, size_t n_dev,
                                           uint64_t seed, dspy_dataset **trainset, dspy_dataset **devset);

#ifdef __cplusplus
}
#endif

#endif
