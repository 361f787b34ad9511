/* status.c — thread-local error messages (DESIGN.md §4). */
#include "dspy/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERRMSG_CAP 4096
static _Thread_local char g_errmsg[ERRMSG_CAP];

dspy_status dspy_failv(dspy_status code, const char *fmt, va_list ap) {
    vsnprintf(g_errmsg, sizeof g_errmsg, fmt, ap);
    return code;
}

dspy_status dspy_fail(dspy_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    dspy_failv(code, fmt, ap);
    va_end(ap);
    return code;
}

dspy_status dspy_fail_wrap(dspy_status code, const char *fmt, ...) {
    char prefix[1024];
    char old[ERRMSG_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, g_errmsg, sizeof old);
    size_t n = strlen(prefix);
    if (n > sizeof g_errmsg - 3) n = sizeof g_errmsg - 3;
    memcpy(g_errmsg, prefix, n);
    memcpy(g_errmsg + n, ": ", 2);
    size_t rest = sizeof g_errmsg - n - 3;
    size_t ol = strnlen(old, sizeof old - 1);
    if (ol > rest) ol = rest;
    memcpy(g_errmsg + n + 2, old, ol);
    g_errmsg[n + 2 + ol] = '\0';
    return code;
}

dspy_status dspy_fail_append(dspy_status code, const char *fmt, ...) {
    size_t n = strnlen(g_errmsg, sizeof g_errmsg);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_errmsg + n, sizeof g_errmsg - n, fmt, ap);
    va_end(ap);
    return code;
}

const char *dspy_errmsg(void) { return g_errmsg; }

void dspy_errclear(void) { g_errmsg[0] = '\0'; }

const char *dspy_status_name(dspy_status s) {
    switch (s) {
    case DSPY_OK: return "ok";
    case DSPY_ERR_NOMEM: return "nomem";
    case DSPY_ERR_IO: return "io";
    case DSPY_ERR_FORMAT: return "format";
    case DSPY_ERR_ARG: return "arg";
    case DSPY_ERR_CONTEXT: return "context";
    case DSPY_ERR_PARSE: return "parse";
    case DSPY_ERR_BACKEND: return "backend";
    case DSPY_ERR_REMOTE: return "remote";
    case DSPY_ERR_TIMEOUT: return "timeout";
    case DSPY_ERR_NOTFOUND: return "notfound";
    case DSPY_ERR_CANCELLED: return "cancelled";
    case DSPY_ERR_STATE: return "state";
    }
    return "unknown";
}

void dspy_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "dspy: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}
