/* clock.c — monotonic time and sleeping (dspy/clock.h). */
#include "dspy/clock.h"

#include <errno.h>
#include <time.h>

int64_t dspy_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t dspy_now_ms(void) { return dspy_now_ns() / 1000000; }

double dspy_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void dspy_sleep_ms(int64_t ms) {
    if (ms <= 0) return;
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    /* nanosleep writes the time left into ts when a signal interrupts it: sleep that again */
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void dspy_cond_init_monotonic(pthread_cond_t *cv) {
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

void dspy_deadline_in(struct timespec *ts, int64_t ms) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) { /* carry: tv_nsec must stay below one second */
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}
