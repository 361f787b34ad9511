/* dspy/clock.h — monotonic time and sleeping, for deadlines, timeouts and durations.
 *
 * What it does: reads CLOCK_MONOTONIC (never jumps with the wall clock, so a deadline computed
 * from it is honoured across NTP or manual clock changes) in three units, and sleeps for a
 * number of milliseconds, resuming after signals; and the two steps of a timed wait on a
 * condition variable against that clock (a condition variable waits on CLOCK_REALTIME unless
 * told otherwise, so a wall-clock jump would stretch or cut its timeouts). What it does not: wall-clock time (use
 * time(2) / clock_gettime(CLOCK_REALTIME) where a date is meant).
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef DSPY_CLOCK_H
#define DSPY_CLOCK_H

#include "dspy/export.h"

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Seconds since an arbitrary fixed point (boot), with nanosecond resolution. */
DSPY_API double dspy_now_s(void);
/* The same in whole milliseconds and nanoseconds. */
DSPY_API int64_t dspy_now_ms(void);
DSPY_API int64_t dspy_now_ns(void);

/* Sleeps at least `ms` milliseconds (nothing for ms <= 0); a signal does not cut it short. */
DSPY_API void dspy_sleep_ms(int64_t ms);

/* pthread_cond_init for a condition variable whose timed waits read CLOCK_MONOTONIC; pair it
 * with dspy_deadline_in. */
DSPY_API void dspy_cond_init_monotonic(pthread_cond_t *cv);
/* *ts = now + ms on CLOCK_MONOTONIC: the absolute deadline pthread_cond_timedwait takes. */
DSPY_API void dspy_deadline_in(struct timespec *ts, int64_t ms);

#ifdef __cplusplus
}
#endif

#endif
