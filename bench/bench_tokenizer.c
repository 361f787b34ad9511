/* bench_tokenizer.c — single-threaded encode/decode throughput of the Llama 3 tokenizer on the
 * Banking77 training texts (../shared/data/banking77/train.csv, one encode call per text, as
 * the trainer and the evaluator use it), plus the same texts joined into one string.
 *
 * Usage: bench_tokenizer [tokenizer.json-or-dir] [train.csv]   (defaults: ../shared paths)
 * Prints MB/s and tokens/s. Without a BPE cache; Llama 3's ignore_merges makes most pieces one
 * vocabulary lookup.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "dspy/csv.h"
#include "dspy/str.h"
#include "dspy/tokenizer.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The `text` column of the CSV, one malloc'd string per row. */
static size_t read_texts(const char *path, char ***out) {
    dspy_csv *csv;
    if (dspy_csv_load(path, &csv) != DSPY_OK) {
        fprintf(stderr, "bench_tokenizer: %s\n", dspy_errmsg());
        exit(1);
    }
    long col = dspy_csv_col_index(csv, "text");
    size_t cnt = dspy_csv_rows(csv);
    char **texts = malloc(cnt * sizeof *texts);
    for (size_t r = 0; r < cnt; r++) {
        size_t len;
        const char *t = dspy_csv_cell(csv, r, col < 0 ? 0 : (size_t)col, &len);
        texts[r] = strndup(t, len);
    }
    dspy_csv_free(csv);
    *out = texts;
    return cnt;
}

int main(int argc, char **argv) {
    const char *tp = argc > 1 ? argv[1] : test_shared("models/llama3-tokenizer/tokenizer.json");
    char tpath[1024];
    snprintf(tpath, sizeof tpath, "%s", tp);
    const char *cp = argc > 2 ? argv[2] : test_shared("data/banking77/train.csv");
    double t0 = now();
    dspy_tokenizer *tok;
    if (dspy_tokenizer_load(tpath, &tok) != DSPY_OK) {
        fprintf(stderr, "bench_tokenizer: %s\n", dspy_errmsg());
        return 1;
    }
    printf("load: %.3f s (%s)\n", now() - t0, tpath);
    char **texts;
    size_t nt = read_texts(cp, &texts);
    size_t *lens = malloc(nt * sizeof *lens), bytes = 0;
    for (size_t i = 0; i < nt; i++) bytes += (lens[i] = strlen(texts[i]));
    printf("texts: %zu, %zu bytes (%s)\n", nt, bytes, cp);

    /* Per-text encode, repeated for at least 2 s. */
    size_t tokens = 0, rounds = 0;
    double t = now(), el;
    do {
        for (size_t i = 0; i < nt; i++) {
            int32_t *ids;
            size_t n;
            if (dspy_tokenizer_encode(tok, texts[i], lens[i], true, true, &ids, &n) != DSPY_OK) return 1;
            tokens += n;
            free(ids);
        }
        rounds++;
        el = now() - t;
    } while (el < 2.0);
    printf("encode per text:  %.1f MB/s, %.2f M tokens/s (%zu rounds, %.1f bytes/token)\n",
           (double)bytes * rounds / el / 1e6, (double)tokens / el / 1e6, rounds,
           (double)bytes * rounds / (double)tokens);

    /* One long string. */
    dspy_str all = DSPY_STR_INIT;
    for (size_t i = 0; i < nt; i++) {
        dspy_str_append(&all, texts[i]);
        dspy_str_appendc(&all, '\n');
    }
    int32_t *ids = NULL;
    size_t n = 0;
    rounds = 0;
    t = now();
    do {
        free(ids);
        dspy_tokenizer_encode(tok, all.ptr, all.len, false, true, &ids, &n);
        rounds++;
        el = now() - t;
    } while (el < 2.0);
    printf("encode one string: %.1f MB/s, %.2f M tokens/s\n", (double)all.len * rounds / el / 1e6,
           (double)n * rounds / el / 1e6);

    rounds = 0;
    t = now();
    do {
        char *text;
        size_t tl;
        dspy_tokenizer_decode(tok, ids, n, false, &text, &tl);
        free(text);
        rounds++;
        el = now() - t;
    } while (el < 1.0);
    printf("decode: %.1f MB/s, %.2f M tokens/s\n", (double)all.len * rounds / el / 1e6, (double)n * rounds / el / 1e6);
    free(ids);
    dspy_str_free(&all);
    for (size_t i = 0; i < nt; i++) free(texts[i]);
    free(texts);
    free(lens);
    dspy_tokenizer_free(tok);
    return 0;
}
