/* splits.c — the DSPy tutorial's Banking77 split (spec §11.3, §11.4).
 *
 * The shuffle is Python's random.Random(0).shuffle: MT19937 seeded by init_by_array([0]),
 * Fisher-Yates from the end with _randbelow(i + 1) drawn by rejection from getrandbits(k)
 * (dspy/random.h).
 */
#include <stdlib.h>

#include "dspy/datasets.h"
#include "dspy/random.h"
#include "example_internal.h"

/* Shuffles idx[0..n) as random.Random(0).shuffle does. */
static void tutorial_permutation(int32_t *idx, size_t n) {
    dspy_pyrandom r;
    dspy_pyrandom_seed(&r, 0);
    dspy_pyrandom_shuffle(&r, idx, n, sizeof idx[0]);
}

enum { TUTORIAL_RAW = 1000, TUTORIAL_TRAIN = 500, TUTORIAL_DEV = 100 };

dspy_status dspy_banking77_tutorial_split(const dspy_dataset *train, dspy_dataset **trainset,
                                          dspy_dataset **devset) {
    if (trainset) *trainset = NULL;
    if (devset) *devset = NULL;
    if (dspy_dataset_len(train) < TUTORIAL_RAW)
        return dspy_fail(DSPY_ERR_ARG,
                         "tutorial split: needs the first %d train rows, the train set has %zu",
                         TUTORIAL_RAW, dspy_dataset_len(train));
    int32_t idx[TUTORIAL_RAW];
    for (int32_t i = 0; i < TUTORIAL_RAW; i++) idx[i] = i;
    tutorial_permutation(idx, TUTORIAL_RAW);
    static const char *const text_key[] = {"text"};
    dspy_dataset *tr = NULL, *dev = NULL;
    dspy_status st = dspy_dataset_new(&tr);
    if (!st) st = dspy_dataset_new(&dev);
    for (int pos = 0; !st && pos < TUTORIAL_TRAIN + TUTORIAL_DEV; pos++) {
        const dspy_example *x = dspy_dataset_get(train, (size_t)idx[pos]);
        dspy_example *e = NULL;
        if (pos < TUTORIAL_TRAIN) { /* Example(text=x.text).with_inputs("text") */
            const dspy_value *text = dspy_example_get(x, "text");
            if (!text) {
                st = dspy_fail(DSPY_ERR_FORMAT, "tutorial split: train row %d has no 'text'", idx[pos]);
                break;
            }
            st = dspy_example_new(&e);
            if (!st) st = dspy_example_set_value(e, "text", text);
        } else { /* raw_data[500:600]: Example(x, label=...).with_inputs("text") */
            st = dspy_example_copy(x, NULL, &e);
        }
        if (!st) st = dspy_example_set_inputs(e, text_key, 1);
        if (st) {
            dspy_example_free(e);
            break;
        }
        st = dspy_dataset_append(pos < TUTORIAL_TRAIN ? tr : dev, e);
    }
    return dspy_split_hand_out(st, tr, dev, trainset, devset);
}

dspy_status dspy_split_hand_out(dspy_status st, dspy_dataset *tr, dspy_dataset *dev, dspy_dataset **trainset,
                                dspy_dataset **devset) {
    if (st) {
        dspy_dataset_free(tr);
        dspy_dataset_free(dev);
        return st;
    }
    if (trainset) *trainset = tr;
    else dspy_dataset_free(tr);
    if (devset) *devset = dev;
    else dspy_dataset_free(dev);
    return DSPY_OK;
}
