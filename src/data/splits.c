/* splits.c — the DSPy tutorial's Banking77 split (spec §11.3, §11.4).
 *
 * The shuffle is Python's random.Random(0).shuffle: MT19937 seeded by init_by_array([0]),
 * Fisher-Yates from the end with _randbelow(i + 1) drawn by rejection from getrandbits(k).
 * The private generator below exists only until the shared Python-compatible module lands.
 */
#include <stdlib.h>

#include "dspy/datasets.h"

enum { MT_N = 624, MT_M = 397 };

typedef struct {
    uint32_t mt[MT_N];
    int i;
} mt19937;

static void mt_init_genrand(mt19937 *r, uint32_t s) {
    r->mt[0] = s;
    for (int i = 1; i < MT_N; i++)
        r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->i = MT_N;
}

/* CPython init_by_array (Modules/_randommodule.c). */
static void mt_init_by_array(mt19937 *r, const uint32_t *key, int len) {
    mt_init_genrand(r, 19650218u);
    int i = 1, j = 0;
    for (int k = MT_N > len ? MT_N : len; k; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1664525u)) + key[j] + (uint32_t)j;
        i++;
        j++;
        if (i >= MT_N) {
            r->mt[0] = r->mt[MT_N - 1];
            i = 1;
        }
        if (j >= len) j = 0;
    }
    for (int k = MT_N - 1; k; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
        i++;
        if (i >= MT_N) {
            r->mt[0] = r->mt[MT_N - 1];
            i = 1;
        }
    }
    r->mt[0] = 0x80000000u;
}

static uint32_t mt_next(mt19937 *r) {
    if (r->i >= MT_N) {
        for (int k = 0; k < MT_N; k++) {
            uint32_t y = (r->mt[k] & 0x80000000u) | (r->mt[(k + 1) % MT_N] & 0x7fffffffu);
            r->mt[k] = r->mt[(k + MT_M) % MT_N] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        r->i = 0;
    }
    uint32_t y = r->mt[r->i++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* Python _randbelow_with_getrandbits(n) for 1 <= n < 2^31. */
static uint32_t mt_randbelow(mt19937 *r, uint32_t n) {
    int k = 0;
    while ((n >> k) != 0) k++; /* n.bit_length() */
    uint32_t v;
    do v = mt_next(r) >> (32 - k);
    while (v >= n);
    return v;
}

/* Shuffles idx[0..n) as random.Random(0).shuffle does. */
/* replace with dspy/random.h on merge */
static void tutorial_permutation(int32_t *idx, size_t n) {
    mt19937 r;
    const uint32_t key[1] = {0};
    mt_init_by_array(&r, key, 1);
    for (size_t i = n; i-- > 1;) {
        size_t j = mt_randbelow(&r, (uint32_t)(i + 1));
        int32_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
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
