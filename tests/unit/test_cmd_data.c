/* test_cmd_data.c — `dspy data show banking77` run as a process: TSV output against
 * shared/data/banking77/tutorial_split.tsv and the CSV texts, split sizes, labels, JSONL, and
 * a fast, helpful failure when the dataset API cannot be reached. */
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

#include "check.h"
#include "dspy/csv.h"
#include "dspy/datasets.h"
#include "http_stub.h"

/* Runs `cmd`, returns its stdout (+stderr when merged by cmd) and exit status. */
static char *run(const char *cmd, int *status) {
    FILE *f = popen(cmd, "r");
    if (!f) {
        *status = -1;
        return NULL;
    }
    dspy_str out = DSPY_STR_INIT;
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) dspy_str_appendn(&out, buf, n);
    int rc = pclose(f);
    *status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    return dspy_str_take(&out);
}

static char *show(const char *args, int *status) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' data show banking77 --data-dir '%s' %s", test_bin("dspy"),
             test_shared("data/banking77"), args);
    return run(cmd, status);
}

/* Undoes the TSV escapes of one cell in place. */
static void unescape(char *s) {
    char *o = s;
    for (char *p = s; *p; p++) {
        if (*p == '\\' && p[1]) {
            p++;
            *o++ = *p == 't' ? '\t' : *p == 'n' ? '\n' : *p == 'r' ? '\r' : *p;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
}

/* Splits `out` into lines (in place); returns the count. */
static int lines_of(char *out, char **lines, int cap) {
    int n = 0;
    char *save = NULL;
    for (char *l = strtok_r(out, "\n", &save); l && n < cap; l = strtok_r(NULL, "\n", &save)) lines[n++] = l;
    return n;
}

typedef struct {
    int row;
    char label[128];
    char split[16];
} tsv_ref;

static int load_ref(tsv_ref *ref) {
    char *data = NULL;
    size_t len = 0;
    CHECK_OK(dspy_read_file(test_shared("data/banking77/tutorial_split.tsv"), &data, &len));
    int n = 0;
    char *save = NULL;
    for (char *l = data ? strtok_r(data, "\n", &save) : NULL; l && n < 1000; l = strtok_r(NULL, "\n", &save)) {
        int pos, lid;
        if (sscanf(l, "%d\t%15[^\t]\t%d\t%d\t%127s", &pos, ref[n].split, &ref[n].row, &lid, ref[n].label) == 5)
            n++;
    }
    free(data);
    return n;
}

static void test_tutorial_splits_tsv(void) {
    static tsv_ref ref[1000];
    CHECK_INT(load_ref(ref), 1000);
    dspy_csv *csv = NULL;
    CHECK_OK(dspy_csv_load(test_shared("data/banking77/train.csv"), &csv));
    if (!csv) return;
    static char *lines[11000];

    int st;
    char *out = show("--split tutorial-dev --format tsv", &st);
    CHECK_INT(st, 0);
    int n = out ? lines_of(out, lines, 11000) : 0;
    CHECK_INT(n, 101);
    if (n == 101) {
        CHECK_STR(lines[0], "text\tlabel");
        int bad = 0;
        for (int i = 0; i < 100; i++) {
            char *tab = strchr(lines[i + 1], '\t');
            if (!tab || strchr(tab + 1, '\t')) {
                bad++;
                continue;
            }
            *tab = '\0';
            unescape(lines[i + 1]);
            const tsv_ref *r = &ref[500 + i];
            bad += strcmp(lines[i + 1], dspy_csv_cell(csv, (size_t)r->row, 0, NULL)) != 0 ||
                   strcmp(tab + 1, r->label) != 0 || strcmp(r->split, "devset") != 0;
        }
        CHECK_INT(bad, 0);
    }
    free(out);

    out = show("--split tutorial-train --format tsv", &st);
    CHECK_INT(st, 0);
    n = out ? lines_of(out, lines, 11000) : 0;
    CHECK_INT(n, 501);
    if (n == 501) {
        CHECK_STR(lines[0], "text"); /* the tutorial's trainset is unlabeled */
        int bad = 0;
        for (int i = 0; i < 500; i++) {
            bad += strchr(lines[i + 1], '\t') != NULL;
            unescape(lines[i + 1]);
            bad += strcmp(lines[i + 1], dspy_csv_cell(csv, (size_t)ref[i].row, 0, NULL)) != 0 ||
                   strcmp(ref[i].split, "trainset") != 0;
        }
        CHECK_INT(bad, 0);
        CHECK_STR(lines[1], "What if there is an error on the exchange rate?");
    }
    free(out);
    dspy_csv_free(csv);
}

static void test_full_splits(void) {
    dspy_labels *labels = NULL;
    CHECK_OK(dspy_labels_load(test_shared("data/banking77/labels.txt"), &labels));
    if (!labels) return;
    dspy_csv *csv = NULL;
    CHECK_OK(dspy_csv_load(test_shared("data/banking77/train.csv"), &csv));
    static char *lines[11000];
    const char *args[2] = {"--split train --format tsv", "--split test --format tsv"};
    const int want[2] = {10003, 3080};
    for (int k = 0; k < 2; k++) {
        int st;
        char *out = show(args[k], &st);
        CHECK_INT(st, 0);
        int n = out ? lines_of(out, lines, 11000) : 0;
        CHECK_INT(n, want[k] + 1);
        int bad = 0;
        for (int i = 1; i < n; i++) {
            char *tab = strrchr(lines[i], '\t');
            if (!tab) {
                bad++;
                continue;
            }
            bad += dspy_labels_id(labels, tab + 1) < 0;
            *tab = '\0';
            unescape(lines[i]);
            if (k == 0 && csv) bad += strcmp(lines[i], dspy_csv_cell(csv, (size_t)(i - 1), 0, NULL)) != 0;
        }
        CHECK_INT(bad, 0);
        free(out);
    }
    dspy_csv_free(csv);
    dspy_labels_free(labels);
}

static void test_jsonl_and_limit(void) {
    int st;
    char *out = show("--split train --limit 2", &st);
    CHECK_INT(st, 0);
    CHECK_STR(out, "{\"text\":\"I am still waiting on my card?\",\"label\":\"card_arrival\"}\n"
                   "{\"text\":\"What can I do if my card still hasn't arrived after 2 weeks?\",\"label\":\"card_arrival\"}\n");
    free(out);
    out = show("--split tutorial-dev --format tsv --limit 0", &st);
    CHECK_INT(st, 0);
    CHECK_STR(out, "text\tlabel\n");
    free(out);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' data show banking77 --data-dir '%s' --split nope 2>&1", test_bin("dspy"),
             test_shared("data/banking77"));
    out = run(cmd, &st);
    CHECK(st != 0);
    CHECK_CONTAINS(out, "error: ");
    CHECK_CONTAINS(out, "tutorial-dev");
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' data show banking77 --data-dir /nonexistent/dir 2>&1", test_bin("dspy"));
    out = run(cmd, &st);
    CHECK(st != 0);
    CHECK_CONTAINS(out, "/nonexistent/dir/labels.txt");
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' data show imagenet 2>&1", test_bin("dspy"));
    out = run(cmd, &st);
    CHECK(st != 0);
    CHECK_CONTAINS(out, "'imagenet': unknown data source");
    CHECK_INT(st, 2);
    free(out);
    /* any JSONL, mapped */
    char path[1100];
    snprintf(path, sizeof path, "%s/mood.jsonl", test_tmpdir());
    const char *rows = "{\"sentence\": \"so good\", \"mood\": \"pos\"}\n{\"sentence\": \"tab\\there\"}\n";
    CHECK_OK(dspy_write_file(path, rows, strlen(rows)));
    snprintf(cmd, sizeof cmd, "'%s' data show '%s' --input-fields review=sentence --label-field sentiment=mood --format tsv",
             test_bin("dspy"), path);
    out = run(cmd, &st);
    CHECK_INT(st, 0);
    CHECK_STR(out, "review\tsentiment\nso good\tpos\ntab\\there\t\n");
    free(out);
}

static void test_no_network_fails_fast(void) {
    int port = http_stub_closed_port();
    CHECK(port > 0);
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "env -u HF_TOKEN DSPY_HF_ENDPOINT=http://127.0.0.1:%d DSPY_CACHEDIR='%s/cache' '%s' data show "
             "banking77 --split tutorial-dev --format tsv 2>&1",
             port, test_tmpdir(), test_bin("dspy"));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int st;
    char *out = run(cmd, &st);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK(st != 0);
    CHECK(dt < 3.0);
    CHECK_CONTAINS(out, "error: ");
    CHECK_CONTAINS(out, "--data-dir");
    CHECK(out && strchr(out, '\n') == out + strlen(out) - 1); /* one line */
    free(out);
}

int main(void) {
    if (!test_have_shared("data/banking77/train.csv")) {
        check_skip("shared/data/banking77 not present");
        return check_summary("test_cmd_data");
    }
    RUN(test_tutorial_splits_tsv);
    RUN(test_full_splits);
    RUN(test_jsonl_and_limit);
    RUN(test_no_network_fails_fast);
    return check_summary("test_cmd_data");
}
