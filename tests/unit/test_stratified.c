/* test_stratified.c — the splits `dspy compile` adds (dspy/datasets.h): the seeded stratified
 * split over Banking77's official test set, row for row against CPython's random.Random
 * (tests/ref/stratified_split.json, scripts/make_ref_stratified.py), its class balance and
 * errors; the tutorial's labelled trainset against shared/data/banking77/tutorial_split.tsv. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dspy/datasets.h"
#include "dspy/json.h"

static dspy_dataset *g_test, *g_train;

static void check_rows(const dspy_dataset *got, const dspy_json *want) {
    CHECK_INT(dspy_dataset_len(got), dspy_json_size(want));
    size_t bad = 0;
    for (size_t i = 0; i < dspy_dataset_len(got) && i < dspy_json_size(want); i++) {
        const dspy_example *g = dspy_dataset_get(got, i);
        const dspy_example *w = dspy_dataset_get(g_test, (size_t)dspy_json_intval(dspy_json_at(want, i)));
        if (!dspy_example_equal(g, w)) bad++;
    }
    CHECK_INT(bad, 0);
}

static void test_matches_cpython(void) {
    dspy_json *ref = NULL;
    CHECK_OK(dspy_json_load(test_source("tests/ref/stratified_split.json"), &ref));
    const dspy_json *cases = dspy_json_get(ref, "cases");
    CHECK_INT(dspy_json_size(cases), 4);
    for (size_t c = 0; c < dspy_json_size(cases); c++) {
        const dspy_json *k = dspy_json_at(cases, c);
        dspy_dataset *tr = NULL, *dev = NULL;
        CHECK_OK(dspy_stratified_split(g_test, "label", (size_t)dspy_json_int_or(k, "n_train", 0),
                                       (size_t)dspy_json_int_or(k, "n_dev", 0), (uint64_t)dspy_json_int_or(k, "seed", 0),
                                       &tr, &dev));
        check_rows(tr, dspy_json_get(k, "train"));
        check_rows(dev, dspy_json_get(k, "dev"));
        /* input keys are kept */
        CHECK(dspy_example_is_input(dspy_dataset_get(tr, 0), "text"));
        dspy_dataset_free(tr);
        dspy_dataset_free(dev);
    }
    dspy_json_decref(ref);
}

static void test_balance_and_errors(void) {
    dspy_dataset *tr = NULL, *dev = NULL;
    CHECK_OK(dspy_stratified_split(g_test, NULL, 154, 77, 0, &tr, &dev));
    /* every class twice in train, once in dev; no row in both */
    dspy_labels *labels = NULL;
    CHECK_OK(dspy_labels_load(test_shared("data/banking77/labels.txt"), &labels));
    int cnt_tr[77] = {0}, cnt_dev[77] = {0};
    for (size_t i = 0; i < 154; i++)
        cnt_tr[dspy_labels_id(labels, dspy_example_get_str(dspy_dataset_get(tr, i), "label"))]++;
    for (size_t i = 0; i < 77; i++)
        cnt_dev[dspy_labels_id(labels, dspy_example_get_str(dspy_dataset_get(dev, i), "label"))]++;
    int off = 0;
    for (int k = 0; k < 77; k++) off += (cnt_tr[k] != 2) + (cnt_dev[k] != 1);
    CHECK_INT(off, 0);
    int shared_rows = 0;
    for (size_t i = 0; i < 154; i++)
        for (size_t j = 0; j < 77; j++)
            shared_rows += dspy_example_equal(dspy_dataset_get(tr, i), dspy_dataset_get(dev, j));
    CHECK_INT(shared_rows, 0);
    /* another seed gives another sample */
    dspy_dataset *tr2 = NULL;
    CHECK_OK(dspy_stratified_split(g_test, NULL, 154, 77, 1, &tr2, NULL));
    CHECK(!dspy_example_equal(dspy_dataset_get(tr, 0), dspy_dataset_get(tr2, 0)));
    dspy_dataset_free(tr2);
    dspy_dataset_free(tr);
    dspy_dataset_free(dev);
    dspy_labels_free(labels);

    CHECK_STATUS(dspy_stratified_split(g_test, NULL, 3000, 81, 0, &tr, &dev), DSPY_ERR_ARG);
    CHECK(tr == NULL && dev == NULL);
    CHECK_CONTAINS(dspy_errmsg(), "3000 train + 81 dev examples asked for, the pool has only 3080");
    CHECK_STATUS(dspy_stratified_split(g_test, "category", 2, 1, 0, &tr, &dev), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "example 0 has no string 'category' field");
}

static void test_tutorial_labeled(void) {
    dspy_dataset *lab = NULL, *unl = NULL;
    CHECK_OK(dspy_banking77_tutorial_trainset_labeled(g_train, &lab));
    CHECK_OK(dspy_banking77_tutorial_split(g_train, &unl, NULL));
    CHECK_INT(dspy_dataset_len(lab), 500);
    /* the same texts as the unlabeled trainset, now with labels; CC-29.6: row 439 first */
    size_t bad = 0;
    for (size_t i = 0; i < 500; i++)
        bad += strcmp(dspy_example_get_str(dspy_dataset_get(lab, i), "text"),
                      dspy_example_get_str(dspy_dataset_get(unl, i), "text")) != 0;
    CHECK_INT(bad, 0);
    CHECK_STR(dspy_example_get_str(dspy_dataset_get(lab, 0), "text"), "What if there is an error on the exchange rate?");
    CHECK(dspy_example_equal(dspy_dataset_get(lab, 0), dspy_dataset_get(g_train, 439)));
    CHECK(dspy_example_is_input(dspy_dataset_get(lab, 0), "text"));
    CHECK(!dspy_example_is_input(dspy_dataset_get(lab, 0), "label"));
    /* tutorial_split.tsv: "pos split train_row label_id label" */
    char *tsv = NULL;
    size_t len;
    CHECK_OK(dspy_read_file(test_shared("data/banking77/tutorial_split.tsv"), &tsv, &len));
    int checked = 0, wrong = 0;
    char *save = NULL;
    for (char *line = strtok_r(tsv, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int pos, row, lid;
        char split[32], label[128];
        if (sscanf(line, "%d\t%31s\t%d\t%d\t%127s", &pos, split, &row, &lid, label) != 5 || pos >= 500) continue;
        wrong += strcmp(dspy_example_get_str(dspy_dataset_get(lab, (size_t)pos), "label"), label) != 0;
        checked++;
    }
    free(tsv);
    CHECK_INT(checked, 500);
    CHECK_INT(wrong, 0);
    dspy_dataset_free(lab);
    dspy_dataset_free(unl);
}

int main(void) {
    if (!test_have_shared("data/banking77/test.csv")) {
        check_skip("../shared/data/banking77 is missing");
        return check_summary("test_stratified");
    }
    dspy_banking77_params bp = dspy_banking77_params_default();
    bp.data_dir = test_shared("data/banking77");
    if (dspy_banking77_load(&bp, DSPY_BANKING77_TEST, &g_test, NULL) ||
        dspy_banking77_load(&bp, DSPY_BANKING77_TRAIN, &g_train, NULL)) {
        fprintf(stderr, "setup: %s\n", dspy_errmsg());
        return 1;
    }
    RUN(test_matches_cpython);
    RUN(test_balance_and_errors);
    RUN(test_tutorial_labeled);
    dspy_dataset_free(g_test);
    dspy_dataset_free(g_train);
    return check_summary("test_stratified");
}
