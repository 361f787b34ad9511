/* test_startup_deps.c — what the `dspy` binary needs installed to start: the GPU libraries are
 * opened at run time, when a CUDA backend is made, never linked (kern/cuda/cublaslt_api.cuh:
 * linked, cuBLASLt cost every process ~80 ms and ~200 MB at start, and a CUDA build would not
 * start on a machine without it). In a CUDA build, cuBLASLt's entry points are all found from
 * the toolkit the build used (no GPU needed for that).
 */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "kern/backend.h"

static void test_needed(void) {
    char cmd[1024], line[512];
    snprintf(cmd, sizeof cmd, "readelf -d '%s' 2>&1", test_bin("dspy"));
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    if (!p) return;
    int needed = 0;
    while (fgets(line, sizeof line, p)) {
        if (!strstr(line, "(NEEDED)")) continue;
        needed++;
        static const char *const gpu[] = {"libcublas", "libcudnn", "libnccl", "libcudart", "libcuda.so"};
        for (size_t i = 0; i < sizeof gpu / sizeof *gpu; i++)
            check_report(strstr(line, gpu[i]) == NULL, __FILE__, __LINE__, "bin/dspy links %s: %s", gpu[i], line);
    }
    CHECK(pclose(p) == 0);
    CHECK(needed >= 3); /* readelf read the file: libc, jansson, curl, ... */
}

static void test_cublaslt_found(void) {
#ifdef DSPY_HAVE_CUDA
    const char *why = dspy_cu_lt_load();
    check_report(why == NULL, __FILE__, __LINE__, "cuBLASLt: %s", why ? why : "");
    CHECK(dspy_cu_lt_load() == why); /* once: the same answer */
#endif
}

int main(void) {
    RUN(test_needed);
    RUN(test_cublaslt_found);
    return check_summary("test_startup_deps");
}
