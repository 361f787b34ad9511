/* test_banking77.c — label lists, Banking77 from the local CSV files, and the tutorial split
 * checked against shared/data/banking77/tutorial_split.tsv (made with CPython's
 * random.Random(0).shuffle) and the tutorial's printed examples (CC-28, CC-29). */
#include <stdlib.h>
#include <sys/stat.h>

#include "check.h"
#include "dspy/csv.h"
#include "dspy/datasets.h"

static const char *dir(void) { return test_shared("data/banking77"); }

static char *repr_of(const dspy_example *e) {
    char *r = NULL;
    CHECK_OK(dspy_example_repr(e, &r));
    return r;
}

static void test_labels(void) {
    dspy_labels *l = NULL;
    CHECK_OK(dspy_labels_load(test_shared("data/banking77/labels.txt"), &l));
    if (!l) return;
    CHECK_INT(dspy_labels_count(l), 77);
    CHECK_STR(dspy_labels_name(l, 11), "card_arrival");
    CHECK_STR(dspy_labels_name(l, 0), "activate_my_card");
    CHECK_INT(dspy_labels_id(l, "Refund_not_showing_up"), 51);
    CHECK_INT(dspy_labels_id(l, "reverted_card_payment?"), 53);
    CHECK_INT(dspy_labels_id(l, "nope"), -1);
    CHECK(dspy_labels_name(l, 77) == NULL && dspy_labels_name(l, -1) == NULL);
    dspy_labels_free(l);

    char path[1024];
    snprintf(path, sizeof path, "%s/labels_dup.txt", test_tmpdir());
    CHECK_OK(dspy_write_file(path, "a\r\nb\r\na\r\n", 9));
    CHECK_STATUS(dspy_labels_load(path, &l), DSPY_ERR_FORMAT);
    CHECK(l == NULL);
    CHECK_CONTAINS(dspy_errmsg(), "labels_dup.txt: line 3: duplicate label 'a'");
    CHECK_OK(dspy_write_file(path, "a\n\nb\n", 5));
    CHECK_STATUS(dspy_labels_load(path, &l), DSPY_ERR_FORMAT);
    CHECK_CONTAINS(dspy_errmsg(), "line 2: empty label name");
    const char *names[] = {"x", "y"};
    CHECK_OK(dspy_labels_from_array(names, 2, &l));
    CHECK_INT(dspy_labels_id(l, "y"), 1);
    dspy_labels_free(l);
}

static void test_local_splits(void) {
    dspy_banking77_params p = dspy_banking77_params_default();
    p.data_dir = dir();
    dspy_dataset *tr = NULL, *te = NULL;
    dspy_labels *labels = NULL;
    CHECK_OK(dspy_banking77_load(&p, DSPY_BANKING77_TRAIN, &tr, &labels));
    CHECK_OK(dspy_banking77_load(&p, DSPY_BANKING77_TEST, &te, NULL));
    if (!tr || !te || !labels) goto done;
    CHECK_INT(dspy_dataset_len(tr), 10003);
    CHECK_INT(dspy_dataset_len(te), 3080);
    char *r = repr_of(dspy_dataset_get(tr, 0));
    CHECK_STR(r, "Example({'text': 'I am still waiting on my card?', 'label': 'card_arrival'}) (input_keys={'text'})");
    free(r);
    /* test: exactly 40 per class; train: all 77 classes, 35..187 each */
    int count[2][77] = {{0}};
    dspy_dataset *both[2] = {tr, te};
    bool all_known = true;
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < dspy_dataset_len(both[k]); i++) {
            const dspy_example *e = dspy_dataset_get(both[k], i);
            int32_t id = dspy_labels_id(labels, dspy_example_get_str(e, "label"));
            all_known &= id >= 0 && dspy_example_len(e) == 2;
            if (id >= 0) count[k][id]++;
        }
    CHECK(all_known);
    int tmin = 1 << 30, tmax = 0;
    bool test40 = true;
    for (int c = 0; c < 77; c++) {
        tmin = count[0][c] < tmin ? count[0][c] : tmin;
        tmax = count[0][c] > tmax ? count[0][c] : tmax;
        test40 &= count[1][c] == 40;
    }
    CHECK_INT(tmin, 35);
    CHECK_INT(tmax, 187);
    CHECK(test40);
done:
    dspy_dataset_free(tr);
    dspy_dataset_free(te);
    dspy_labels_free(labels);
}

static void test_tutorial_split_matches_tsv(void) {
    dspy_banking77_params p = dspy_banking77_params_default();
    p.data_dir = dir();
    dspy_dataset *train = NULL, *tr = NULL, *dev = NULL, *tr2 = NULL;
    dspy_csv *csv = NULL;
    CHECK_OK(dspy_banking77_load(&p, DSPY_BANKING77_TRAIN, &train, NULL));
    CHECK_OK(dspy_banking77_load(&p, DSPY_BANKING77_TUTORIAL_TRAIN, &tr2, NULL));
    char *data = NULL;
    size_t len = 0;
    CHECK_OK(dspy_read_file(test_shared("data/banking77/tutorial_split.tsv"), &data, &len));
    CHECK_OK(dspy_csv_load(test_shared("data/banking77/train.csv"), &csv));
    if (!train || !tr2 || !data || !csv) goto done;
    CHECK_OK(dspy_banking77_tutorial_split(train, &tr, &dev));
    if (!tr || !dev) goto done;
    CHECK_INT(dspy_dataset_len(tr), 500);
    CHECK_INT(dspy_dataset_len(dev), 100);
    /* tutorial_split.tsv: pos split train_row label_id label */
    int pos = 0, bad = 0;
    char *save = NULL;
    for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "pos\t", 4) == 0) continue;
        int p_, row, lid;
        char split[16], label[128];
        if (sscanf(line, "%d\t%15[^\t]\t%d\t%d\t%127s", &p_, split, &row, &lid, label) != 5 || p_ != pos) {
            bad++;
            break;
        }
        const char *text = dspy_csv_cell(csv, (size_t)row, 0, NULL);
        if (pos < 500) {
            const dspy_example *e = dspy_dataset_get(tr, (size_t)pos);
            bad += strcmp(split, "trainset") != 0 || dspy_example_nfields(e) != 1 ||
                   strcmp(dspy_example_get_str(e, "text"), text) != 0 ||
                   !dspy_example_is_input(e, "text") ||
                   !dspy_example_equal(e, dspy_dataset_get(tr2, (size_t)pos));
        } else if (pos < 600) {
            const dspy_example *e = dspy_dataset_get(dev, (size_t)(pos - 500));
            bad += strcmp(split, "devset") != 0 || dspy_example_nfields(e) != 2 ||
                   strcmp(dspy_example_get_str(e, "text"), text) != 0 ||
                   strcmp(dspy_example_get_str(e, "label"), label) != 0 ||
                   !dspy_example_is_input(e, "text") || dspy_example_ninputs(e) != 1;
        } else {
            bad += strcmp(split, "unused") != 0;
        }
        pos++;
    }
    CHECK_INT(pos, 1000);
    CHECK_INT(bad, 0);
    /* the tutorial's printed examples */
    char *r = repr_of(dspy_dataset_get(tr, 0));
    CHECK_STR(r, "Example({'text': 'What if there is an error on the exchange rate?'}) (input_keys={'text'})");
    free(r);
    const dspy_example *d0 = dspy_dataset_get(dev, 0);
    CHECK_STR(dspy_example_get_str(d0, "text"),
              "Which fiat currencies do you currently support? Will this change in this future?");
    CHECK_STR(dspy_example_get_str(d0, "label"), "fiat_currency_support");
    CHECK_STR(dspy_example_get_str(dspy_dataset_get(dev, 4), "text"), "why hasnt my card come in yet?");
    /* devset class sizes 17/17/16/15/14/13/8 over 7 classes */
    const char *seen[8] = {0};
    int cnt[8] = {0}, ns = 0;
    for (size_t i = 0; i < 100; i++) {
        const char *l = dspy_example_get_str(dspy_dataset_get(dev, i), "label");
        int k = 0;
        while (k < ns && strcmp(seen[k], l) != 0) k++;
        if (k == ns && ns < 8) seen[ns++] = l;
        if (k < 8) cnt[k]++;
    }
    CHECK_INT(ns, 7);
    int sorted[7];
    for (int i = 0; i < 7; i++) sorted[i] = cnt[i];
    for (int i = 0; i < 7; i++)
        for (int j = i + 1; j < 7; j++)
            if (sorted[j] > sorted[i]) {
                int t = sorted[i];
                sorted[i] = sorted[j];
                sorted[j] = t;
            }
    const int want[7] = {17, 17, 16, 15, 14, 13, 8};
    bool same = true;
    for (int i = 0; i < 7; i++) same &= sorted[i] == want[i];
    CHECK(same);
    /* too-short train set */
    dspy_dataset *shortset = NULL, *x = NULL;
    CHECK_OK(dspy_dataset_slice(train, 0, 999, &shortset));
    CHECK_STATUS(dspy_banking77_tutorial_split(shortset, &x, NULL), DSPY_ERR_ARG);
    CHECK(x == NULL);
    dspy_dataset_free(shortset);
done:
    free(data);
    dspy_csv_free(csv);
    dspy_dataset_free(train);
    dspy_dataset_free(tr);
    dspy_dataset_free(dev);
    dspy_dataset_free(tr2);
}

static void test_errors(void) {
    char d[1024], path[1100];
    snprintf(d, sizeof d, "%s/b77", test_tmpdir());
    CHECK_INT(mkdir(d, 0755), 0);
    snprintf(path, sizeof path, "%s/labels.txt", d);
    CHECK_OK(dspy_write_file(path, "a\nb\n", 4));
    snprintf(path, sizeof path, "%s/train.csv", d);
    const char *csv = "text,category\r\nhello,a\r\n\"multi\nline\",b\r\nbye,c\r\n";
    CHECK_OK(dspy_write_file(path, csv, strlen(csv)));
    dspy_banking77_params p = dspy_banking77_params_default();
    p.data_dir = d;
    dspy_dataset *ds = (dspy_dataset *)1;
    dspy_labels *l = (dspy_labels *)1;
    CHECK_STATUS(dspy_banking77_load(&p, DSPY_BANKING77_TRAIN, &ds, &l), DSPY_ERR_FORMAT);
    CHECK(ds == NULL && l == NULL);
    CHECK_CONTAINS(dspy_errmsg(), "train.csv: line 5: category 'c' is not one of the 2 names");
    CHECK_STATUS(dspy_banking77_load(&p, DSPY_BANKING77_TEST, &ds, NULL), DSPY_ERR_IO);
    CHECK_CONTAINS(dspy_errmsg(), "test.csv");
    dspy_banking77_split s;
    CHECK_STATUS(dspy_banking77_split_parse("dev", &s), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "tutorial-dev");
    CHECK_OK(dspy_banking77_split_parse("tutorial-train", &s));
    CHECK(s == DSPY_BANKING77_TUTORIAL_TRAIN);
    CHECK_STR(dspy_banking77_split_name(DSPY_BANKING77_TEST), "test");
}

int main(void) {
    if (!test_have_shared("data/banking77/train.csv")) {
        check_skip("shared/data/banking77 not present");
        return check_summary("test_banking77");
    }
    RUN(test_labels);
    RUN(test_local_splits);
    RUN(test_tutorial_split_matches_tsv);
    RUN(test_errors);
    return check_summary("test_banking77");
}
