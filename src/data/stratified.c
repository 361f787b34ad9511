/* stratified.c — the other splits `dspy compile` offers (dspy/datasets.h): the tutorial's
 * labelled trainset (its second, labelled run: raw_data[:500] with labels) and a seeded
 * stratified train/dev sample over every class of a labelled pool (e.g. Banking77's official
 * test set, 40 rows per class).
 *
 * Stratified sampling, exactly: r = random.Random(seed) (dspy/random.h); the pool's indices are
 * grouped by label (groups in order of first appearance), each group is shuffled with r in that
 * order, then the group order itself is shuffled with r; a round-robin over the groups in that
 * order (one index from each group that still has one, repeatedly) gives a sequence whose first
 * n_train entries are the trainset and the next n_dev the devset, so every class gets
 * floor(n/k) or ceil(n/k) examples of each set while it has rows left; finally each set is
 * shuffled with r (train first) so classes are not in a cycle.
 * Not here: the tutorial's own 500/100 split (splits.c).
 */
#include <stdlib.h>
#include <string.h>

#include "dspy/datasets.h"
#include "dspy/random.h"

dspy_status dspy_banking77_tutorial_trainset_labeled(const dspy_dataset *train, dspy_dataset **out) {
    *out = NULL;
    enum { RAW = 1000, TRAIN = 500 };
    if (dspy_dataset_len(train) < RAW)
        return dspy_fail(DSPY_ERR_ARG, "tutorial split: needs the first %d train rows, the train set has %zu", RAW,
                         dspy_dataset_len(train));
    int32_t idx[RAW];
    for (int32_t i = 0; i < RAW; i++) idx[i] = i;
    dspy_pyrandom r;
    dspy_pyrandom_seed(&r, 0);
    dspy_pyrandom_shuffle(&r, idx, RAW, sizeof idx[0]);
    dspy_dataset *ds = NULL;
    dspy_status st = dspy_dataset_gather(train, idx, TRAIN, &ds);
    static const char *const text_key[] = {"text"};
    if (!st) st = dspy_dataset_set_inputs(ds, text_key, 1);
    if (st) {
        dspy_dataset_free(ds);
        return st;
    }
    *out = ds;
    return DSPY_OK;
}

typedef struct group {
    const char *label;
    int32_t *idx;
    size_t n, next;
} group;

dspy_status dspy_stratified_split(const dspy_dataset *pool, const char *label_key, size_t n_train, size_t n_dev,
                                  uint64_t seed, dspy_dataset **trainset, dspy_dataset **devset) {
    if (trainset) *trainset = NULL;
    if (devset) *devset = NULL;
    size_t n = dspy_dataset_len(pool);
    if (!label_key) label_key = "label";
    if (n_train + n_dev > n)
        return dspy_fail(DSPY_ERR_ARG, "stratified split: %zu train + %zu dev examples asked for, the pool has only "
                         "%zu; ask for fewer", n_train, n_dev, n);
    if (n > INT32_MAX) return dspy_fail(DSPY_ERR_ARG, "stratified split: the pool is too large");
    group *g = calloc(n ? n : 1, sizeof *g);
    int32_t *all = malloc((n ? n : 1) * sizeof *all), *seq = malloc((n ? n : 1) * sizeof *seq);
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    size_t ng = 0;
    dspy_status st = DSPY_OK;
    dspy_dataset *tr = NULL, *dev = NULL;
    if (!g || !all || !seq || !order) {
        st = dspy_fail(DSPY_ERR_NOMEM, "stratified split: out of memory");
        goto done;
    }
    /* group sizes, then contiguous slices of `all` */
    size_t *gof = malloc((n ? n : 1) * sizeof *gof);
    if (!gof) {
        st = dspy_fail(DSPY_ERR_NOMEM, "stratified split: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n && !st; i++) {
        const char *l = dspy_example_get_str(dspy_dataset_get(pool, i), label_key);
        if (!l) {
            st = dspy_fail(DSPY_ERR_FORMAT, "stratified split: example %zu has no string '%s' field; the pool must "
                           "be labelled", i, label_key);
            break;
        }
        size_t k = 0;
        while (k < ng && strcmp(g[k].label, l) != 0) k++;
        if (k == ng) g[ng++].label = l;
        g[k].n++;
        gof[i] = k;
    }
    if (!st) {
        size_t off = 0;
        for (size_t k = 0; k < ng; k++) {
            g[k].idx = all + off;
            off += g[k].n;
            g[k].n = 0;
        }
        for (size_t i = 0; i < n; i++) g[gof[i]].idx[g[gof[i]].n++] = (int32_t)i;
    }
    free(gof);
    if (st) goto done;
    dspy_pyrandom r;
    dspy_pyrandom_seed(&r, seed);
    for (size_t k = 0; k < ng; k++) dspy_pyrandom_shuffle(&r, g[k].idx, g[k].n, sizeof g[k].idx[0]);
    for (size_t k = 0; k < ng; k++) order[k] = k;
    dspy_pyrandom_shuffle(&r, order, ng, sizeof order[0]);
    size_t m = 0, want = n_train + n_dev;
    while (m < want) {
        for (size_t j = 0; j < ng && m < want; j++) {
            group *gr = &g[order[j]];
            if (gr->next < gr->n) seq[m++] = gr->idx[gr->next++];
        }
    }
    dspy_pyrandom_shuffle(&r, seq, n_train, sizeof seq[0]);
    dspy_pyrandom_shuffle(&r, seq + n_train, n_dev, sizeof seq[0]);
    st = dspy_dataset_gather(pool, seq, n_train, &tr);
    if (!st) st = dspy_dataset_gather(pool, seq + n_train, n_dev, &dev);
    if (st) goto done;
    if (trainset) {
        *trainset = tr;
        tr = NULL;
    }
    if (devset) {
        *devset = dev;
        dev = NULL;
    }
done:
    dspy_dataset_free(tr);
    dspy_dataset_free(dev);
    free(g);
    free(all);
    free(seq);
    free(order);
    return st;
}
