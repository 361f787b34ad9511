/* quiet_log.c — see quiet_log.h. */
#include "quiet_log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "dspy/log.h"

static atomic_long g_truncated;

static void sink(dspy_log_level level, const char *msg, void *user) {
    (void)user;
    static const char trunc[] = "LM response was truncated due to exceeding max_tokens";
    if (level == DSPY_LOG_WARN && strncmp(msg, trunc, sizeof trunc - 1) == 0 && atomic_fetch_add(&g_truncated, 1) > 0)
        return;
    fprintf(stderr, "[dspy] %s: %s\n", dspy_log_level_name(level), msg);
}

void quiet_log_begin(void) {
    atomic_store(&g_truncated, 0);
    dspy_log_set_sink(sink, NULL);
}

void quiet_log_end(void) {
    dspy_log_set_sink(NULL, NULL);
    long n = atomic_load(&g_truncated);
    if (n > 1) fprintf(stderr, "[dspy] WARNING: %ld LM answers were truncated at max_tokens in all (shown once)\n", n);
}
