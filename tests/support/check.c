/* check.c — counters, reporting and path helpers for the unit tests. */
#include "check.h"

#include "dspy/str.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

_Atomic int check_passed, check_failed, check_skipped;
const char *check_current = "";
static char g_tmpdir[512];

void check_report(bool ok, const char *file, int line, const char *fmt, ...) {
    if (ok) {
        check_passed++;
        return;
    }
    check_failed++;
    fprintf(stderr, "FAIL %s (%s:%d): ", check_current, file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void check_skip(const char *why) {
    check_skipped++;
    fprintf(stderr, "SKIP %s: %s\n", check_current, why);
}

static void rm_rf(const char *path) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", path);
}

/* --part: the comma-separated list (argv's own storage) and which of its names a RUN reached;
 * --parts-all: every part of every CTest entry of this binary */
#define MAX_PARTS 16
static const char *g_parts, *g_parts_all;
static bool g_part_ran[MAX_PARTS];

/* The index of `fn` in the comma-separated `list`, -1 when absent. */
static int part_index(const char *list, const char *fn) {
    size_t n = strlen(fn);
    int i = 0;
    for (const char *p = list; *p; i++) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, fn, n) == 0) return i;
        p += len + (p[len] == ',');
    }
    return -1;
}

void check_parts(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--part") == 0) g_parts = argv[i + 1];
        if (strcmp(argv[i], "--parts-all") == 0) g_parts_all = argv[i + 1];
    }
}

bool check_part_wanted(const char *fn) {
    if (!g_parts) return true;
    int i = part_index(g_parts, fn);
    /* a RUN that no entry names would run in no CTest entry at all: fail rather than lose it */
    check_report(i >= 0 || !g_parts_all || part_index(g_parts_all, fn) >= 0, __FILE__, __LINE__,
                 "RUN(%s) is in none of this binary's CTest entries (DSPY_TEST_PARTS_ in CMakeLists.txt)", fn);
    if (i < 0) return false;
    if (i < MAX_PARTS) g_part_ran[i] = true;
    return true;
}

int check_summary(const char *name) {
    /* a skip (missing input) already explains parts that never ran */
    for (int i = 0; g_parts && *g_parts && !check_skipped; i++) {
        size_t len = strcspn(g_parts, ",");
        check_report(i < MAX_PARTS && g_part_ran[i], __FILE__, __LINE__, "--part %.*s: no RUN of that name ran",
                     (int)len, g_parts);
        g_parts += len + (g_parts[len] == ',');
    }
    if (g_tmpdir[0] && !getenv("DSPY_KEEP_TMP")) rm_rf(g_tmpdir);
    printf("%s: %d passed, %d failed", name, check_passed, check_failed);
    if (check_skipped) printf(", %d skipped", check_skipped);
    printf("\n");
    fflush(stdout);
    /* 77 = skipped for CTest (SKIP_RETURN_CODE): a test whose input was missing is not a pass. */
    return check_failed ? 1 : check_skipped ? 77 : 0;
}

#define NSLOTS 16
static char g_paths[NSLOTS][1024];
static int g_slot;

static const char *join(const char *base, const char *rel) {
    char *p = g_paths[g_slot++ % NSLOTS];
    snprintf(p, 1024, "%s/%s", base, rel);
    return p;
}

const char *test_shared(const char *rel) {
    const char *base = getenv("DSPY_SHARED_DIR");
    if (!base || !*base) base = DSPY_SHARED_DIR_DEFAULT;
    return join(base, rel);
}

const char *test_source(const char *rel) { return join(DSPY_SOURCE_DIR, rel); }

const char *test_npm_dir(const char *name) {
    const char *root = getenv("DSPY_NPM_CACHE");
    if (!root || !*root) root = join(getenv("HOME") ? getenv("HOME") : "/tmp", ".cache/dspy-npm");
    const char *cache = join(root, "_npm");
    if (!getenv("npm_config_cache")) setenv("npm_config_cache", cache, 1);
    const char *dir = join(root, name);
    if (dspy_mkdir_p(dir) != DSPY_OK) {
        check_report(false, __FILE__, __LINE__, "cannot create %s: %s", dir, dspy_errmsg());
        return NULL;
    }
    return dir;
}
const char *test_bin(const char *name) { return join(DSPY_BIN_DIR, name); }

bool test_have_shared(const char *rel) { return access(test_shared(rel), R_OK) == 0; }

int test_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET, a.sin_addr.s_addr = htonl(INADDR_LOOPBACK), a.sin_port = 0;
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

const char *test_tmpdir(void) {
    if (!g_tmpdir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(g_tmpdir, sizeof g_tmpdir, "%s/dspy-test-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(g_tmpdir)) {
            perror("mkdtemp");
            abort();
        }
    }
    return g_tmpdir;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void test_sort_doubles(double *v, int n) { qsort(v, (size_t)n, sizeof *v, cmp_double); }

double test_median(double *v, int n) {
    test_sort_doubles(v, n);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

extern char **environ;

char *test_slurp(const char *path) {
    char *s = NULL;
    size_t n;
    if (dspy_read_file(path, &s, &n)) return strdup("");
    return s;
}

test_run_result test_run_dspy(const char *subcommand, const char *const *args) {
    test_run_result r = {-1, NULL, NULL};
    char out_path[1024], err_path[1024];
    snprintf(out_path, sizeof out_path, "%s/stdout", test_tmpdir());
    snprintf(err_path, sizeof err_path, "%s/stderr", test_tmpdir());
    const char *argv[64];
    int n = 0;
    argv[n++] = test_bin("dspy");
    argv[n++] = subcommand;
    for (int i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return r;
    int ws;
    waitpid(pid, &ws, 0);
    r.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
    r.out = test_slurp(out_path);
    r.err = test_slurp(err_path);
    return r;
}

void test_run_free(test_run_result *r) {
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}
