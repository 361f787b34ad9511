/* replay.c — main() for the fuzz targets outside libFuzzer: runs LLVMFuzzerTestOneInput over
 * every file of the directories (or files) given on the command line, so the normal and ASan
 * builds replay each target's seed corpus and its crash reproducers as an ordinary test.
 * Prints "<target>: N passed, 0 failed" (a crash aborts before that, failing the test).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dspy/str.h"
#include "fuzz.h"

__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    return 0;
}

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int run_file(const char *path) {
    char *data = NULL;
    size_t n = 0;
    if (dspy_read_file(path, &data, &n) != DSPY_OK) {
        fprintf(stderr, "replay: %s\n", dspy_errmsg());
        return 1;
    }
    LLVMFuzzerTestOneInput((const uint8_t *)data, n);
    free(data);
    return 0;
}

int main(int argc, char **argv) {
    LLVMFuzzerInitialize(&argc, &argv);
    int ran = 0, bad = 0;
    for (int a = 1; a < argc; a++) {
        struct stat sb;
        if (stat(argv[a], &sb) != 0) {
            fprintf(stderr, "replay: %s: not found\n", argv[a]);
            bad++;
            continue;
        }
        if (!S_ISDIR(sb.st_mode)) {
            bad += run_file(argv[a]);
            ran++;
            continue;
        }
        DIR *d = opendir(argv[a]);
        if (!d) continue;
        char **names = NULL;
        size_t nn = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char **nb = realloc(names, (nn + 1) * sizeof *names);
            if (!nb) abort();
            names = nb;
            size_t len = strlen(argv[a]) + strlen(e->d_name) + 2;
            names[nn] = malloc(len);
            if (!names[nn]) abort();
            snprintf(names[nn++], len, "%s/%s", argv[a], e->d_name);
        }
        closedir(d);
        qsort(names, nn, sizeof *names, cmp);
        for (size_t i = 0; i < nn; i++) {
            bad += run_file(names[i]);
            ran++;
            free(names[i]);
        }
        free(names);
    }
    const char *slash = strrchr(argv[0], '/');
    printf("%s: %d passed, %d failed\n", slash ? slash + 1 : argv[0], ran - bad, bad);
    return bad || ran == 0 ? 1 : 0;
}
