/* parity.c — see parity.h. */
#include "parity.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "dspy/backend.h"

double parity_rel(const float *a, const float *b, size_t n) {
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        r += (double)b[i] * b[i];
    }
    return sqrt(d) / (r > 0 ? sqrt(r) : 1);
}

double parity_rel_d(const float *a, const double *b, size_t n) {
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        r += b[i] * b[i];
    }
    return sqrt(d) / (r > 0 ? sqrt(r) : 1);
}

int parity_begin(const char *name, uint64_t *rng) {
    const char *why = NULL;
    if (dspy_cuda_device_count(&why) == 0) {
        printf("%s: skipped: %s\n", name, why);
        return 77;
    }
    const char *s = getenv("DSPY_TEST_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    *rng = seed ? seed : 1;
    printf("%s: seed %llu (DSPY_TEST_SEED=%llu replays it)\n", name, (unsigned long long)seed,
           (unsigned long long)seed);
    char dev[256];
    CHECK_OK(dspy_cuda_device_name(0, dev, sizeof dev));
    printf("device: %s\n", dev);
    return -1;
}

void parity_check_fault(const char *self, const char *expect) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "'%s' --fault 2>&1", self);
    FILE *p = popen(cmd, "r");
    char buf[2048] = {0};
    size_t n = p ? fread(buf, 1, sizeof buf - 1, p) : 0;
    buf[n] = 0;
    int rc = p ? pclose(p) : -1;
    check_report(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, __FILE__, __LINE__, "fault child: rc %d: %s", rc, buf);
    CHECK_CONTAINS(buf, expect);
}
