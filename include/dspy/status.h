/* dspy/status.h — status codes and the thread-local error message.
 *
 * Every fallible function in dspy.c returns a dspy_status. On failure the function has written
 * a human-readable message (what failed, where, and how to fix it) into a thread-local buffer
 * that dspy_errmsg() returns until the next dspy_fail() on the same thread. Out-parameters are
 * left NULL (or zero) on failure.
 *
 * Follows DESIGN.md §4. The library never calls exit() and never prints to stdout.
 */
#ifndef DSPY_STATUS_H
#define DSPY_STATUS_H

#include "dspy/export.h"

#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dspy_status {
    DSPY_OK = 0,
    DSPY_ERR_NOMEM,    /* allocation failed */
    DSPY_ERR_IO,       /* file or socket I/O */
    DSPY_ERR_FORMAT,   /* a file or message is not in the expected format */
    DSPY_ERR_ARG,      /* a caller passed an invalid argument */
    DSPY_ERR_CONTEXT,  /* a prompt or sequence does not fit the context */
    DSPY_ERR_PARSE,    /* a model answer could not be parsed (AdapterParseError) */
    DSPY_ERR_BACKEND,  /* the compute backend (CUDA, OpenMP) failed or is absent */
    DSPY_ERR_REMOTE,   /* a remote service answered with an error */
    DSPY_ERR_TIMEOUT,  /* an operation ran past its deadline */
    DSPY_ERR_NOTFOUND, /* a named thing (file, key, model) does not exist */
    DSPY_ERR_CANCELLED,/* stopped by the caller or by an error budget (max_errors) */
    DSPY_ERR_STATE     /* the object is not in a state that allows the call */
} dspy_status;

/* Writes the message (printf format) into this thread's error buffer and returns `code`.
 * Typical use: `return dspy_fail(DSPY_ERR_ARG, "%s: line %d: ...", path, line);` */
DSPY_API dspy_status dspy_fail(dspy_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
DSPY_API dspy_status dspy_failv(dspy_status code, const char *fmt, va_list ap);

/* Prepends "prefix: " to the current message (for adding context on the way up) and returns
 * `code` unchanged. */
DSPY_API dspy_status dspy_fail_wrap(dspy_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Appends text (printf format) to the current message, e.g. a hint on how to fix it, and
 * returns `code` unchanged. */
DSPY_API dspy_status dspy_fail_append(dspy_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The last message written on this thread ("" if none). Valid until the next dspy_fail. */
DSPY_API const char *dspy_errmsg(void);

/* Clears this thread's message. */
DSPY_API void dspy_errclear(void);

/* Short stable name of a status: "ok", "nomem", "io", ... */
DSPY_API const char *dspy_status_name(dspy_status s);

/* Programmer-error assertion: prints file:line and the expression to stderr and aborts.
 * Never used for bad input, which gets a status. */
DSPY_API void dspy_assert_fail(const char *expr, const char *file, int line);
#define DSPY_ASSERT(x) ((x) ? (void)0 : dspy_assert_fail(#x, __FILE__, __LINE__))

#ifdef __cplusplus
}
#endif
#endif
