/* check.h — the tiny test harness every tests/unit/test_*.c uses.
 *
 * A test binary defines `static void test_x(void)` functions and calls them from main() with
 * RUN(test_x); main() returns check_summary(), which prints "<binary>: N passed, N failed" and
 * returns 1 when any check failed, 77 when none failed but a part was skipped (check_skip: CTest
 * reports the test as skipped, SKIP_RETURN_CODE 77, and CI fails on a skip outside the gpu
 * lane), else 0. Each CHECK counts as one pass or one failure; failures
 * print file:line and the values involved. Paths: test_shared("data/...") resolves against
 * ../shared (env DSPY_SHARED_DIR overrides), test_source("tests/ref/...") against the repo.
 */
#ifndef DSPY_TEST_CHECK_H
#define DSPY_TEST_CHECK_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "dspy/status.h"

/* atomic: servers' handler threads and workers check too */
extern _Atomic int check_passed, check_failed, check_skipped;
extern const char *check_current;

void check_report(bool ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int check_summary(const char *name);
/* Marks the current test as skipped with a reason (e.g. no GPU). */
void check_skip(const char *why);

/* Absolute paths to shared material, the source tree, the dspy binary, and a fresh temp dir.
 * Returned strings are static per call site slot; copy them if needed beyond the next call. */
const char *test_shared(const char *rel);
const char *test_source(const char *rel);
const char *test_bin(const char *name);
/* A fresh empty directory under $TMPDIR, removed by check_summary() unless DSPY_KEEP_TMP. */
const char *test_tmpdir(void);
/* The directory for npm package `name` outside the source tree: $DSPY_NPM_CACHE/name, else
 * ~/.cache/dspy-npm/name (created). Also points npm's own download cache there (npm_config_cache
 * = <that root>/_npm, unless already set) so that no npm install writes into the checkout.
 * Returns NULL (and reports a failure) when the directory cannot be made. */
const char *test_npm_dir(const char *name);
/* A TCP port on 127.0.0.1 nobody listens on right now (-1 if none could be found). */
int test_free_port(void);
/* True when a shared file is present (tests that need ../shared skip cleanly without it). */
bool test_have_shared(const char *rel);

/* Runs `dspy <subcommand> <args...>` (args NULL-terminated) with stdout and stderr captured.
 * status is the exit code (-1 if it could not start or did not exit normally). */
typedef struct test_run_result {
    int status;
    char *out, *err; /* malloc'd, never NULL after a start */
} test_run_result;
test_run_result test_run_dspy(const char *subcommand, const char *const *args);
void test_run_free(test_run_result *r);
/* A file's whole content (malloc'd; "" when it cannot be read). */
char *test_slurp(const char *path);

/* Timings for the benchmarks: v sorted ascending in place; the median of n >= 1 values (the mean
 * of the middle two when n is even; sorts v). */
void test_sort_doubles(double *v, int n);
double test_median(double *v, int n);

/* 1 in a build under AddressSanitizer (gcc defines __SANITIZE_ADDRESS__, clang has the
 * feature), where tests shrink their workloads (-O0 and shadow memory make them ~10x slower). */
#if defined(__SANITIZE_ADDRESS__)
#define CHECK_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHECK_UNDER_ASAN 1
#endif
#endif
#ifndef CHECK_UNDER_ASAN
#define CHECK_UNDER_ASAN 0
#endif

/* Parts: a slow binary's main() calls check_parts(argc, argv); `test_x --part test_a,test_b`
 * then runs only RUN(test_a) and RUN(test_b), so that CMake can give it one CTest entry per group
 * of parts (DSPY_TEST_PARTS_<name> in CMakeLists.txt) and ctest -j spreads it over the cores.
 * Without --part every RUN runs. A named part that no RUN reached fails check_summary (a typo
 * must not pass as an empty test); with `--parts-all <every entry's parts>` (CMake passes it), a
 * RUN named in no entry fails too (a new RUN must not go untested). */
void check_parts(int argc, char **argv);
bool check_part_wanted(const char *fn);

#define RUN(fn)                             \
    do {                                    \
        if (check_part_wanted(#fn)) {       \
            check_current = #fn;            \
            fn();                           \
        }                                   \
    } while (0)

#define CHECK(cond) check_report((cond), __FILE__, __LINE__, "CHECK(%s)", #cond)

#define CHECK_OK(expr)                                                                         \
    do {                                                                                       \
        dspy_status st_ = (expr);                                                              \
        check_report(st_ == DSPY_OK, __FILE__, __LINE__, "%s -> %s: %s", #expr,               \
                     dspy_status_name(st_), dspy_errmsg());                                    \
    } while (0)

#define CHECK_STATUS(expr, want)                                                               \
    do {                                                                                       \
        dspy_status st_ = (expr);                                                              \
        check_report(st_ == (want), __FILE__, __LINE__, "%s -> %s (want %s): %s", #expr,       \
                     dspy_status_name(st_), dspy_status_name(want), dspy_errmsg());            \
    } while (0)

#define CHECK_INT(a, b)                                                                        \
    do {                                                                                       \
        long long a_ = (long long)(a), b_ = (long long)(b);                                    \
        check_report(a_ == b_, __FILE__, __LINE__, "%s == %s: %lld vs %lld", #a, #b, a_, b_);  \
    } while (0)

#define CHECK_U64(a, b)                                                                        \
    do {                                                                                       \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);         \
        check_report(a_ == b_, __FILE__, __LINE__, "%s == %s: %llu vs %llu", #a, #b, a_, b_);  \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                  \
    do {                                                                                       \
        double a_ = (double)(a), b_ = (double)(b);                                             \
        check_report(a_ - b_ <= (tol) && b_ - a_ <= (tol), __FILE__, __LINE__,                 \
                     "%s ~= %s: %.9g vs %.9g (tol %g)", #a, #b, a_, b_, (double)(tol));        \
    } while (0)

#define CHECK_STR(a, b)                                                                        \
    do {                                                                                       \
        const char *a_ = (a), *b_ = (b);                                                       \
        bool ok_ = a_ && b_ && strcmp(a_, b_) == 0;                                            \
        check_report(ok_, __FILE__, __LINE__, "%s == %s:\n  got:  \"%s\"\n  want: \"%s\"", #a, \
                     #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");                              \
    } while (0)

/* Substring check, used for error messages. */
#define CHECK_CONTAINS(hay, needle)                                                            \
    do {                                                                                       \
        const char *h_ = (hay), *n_ = (needle);                                                \
        check_report(h_ && n_ && strstr(h_, n_) != NULL, __FILE__, __LINE__,                   \
                     "\"%s\" contains \"%s\"", h_ ? h_ : "(null)", n_ ? n_ : "(null)");        \
    } while (0)

#endif
