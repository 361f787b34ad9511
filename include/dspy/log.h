/* dspy/log.h — leveled logging to a replaceable sink (stderr by default).
 *
 * What it does: dspy_log(level, fmt, ...) formats a message and hands it to the current sink
 * when level >= the global minimum. The minimum starts at INFO, or at the level named by the
 * environment variable DSPY_LOG_LEVEL (debug, info, warn/warning, error, off; any case), read
 * once at the first logging call. The default sink writes "[dspy] LEVEL: message\n" to stderr,
 * e.g. "[dspy] INFO: Average Metric: 55 / 100 (55.0%)".
 * What it does not: timestamps, logger names, files or rotation (a sink can add them), and it
 * does not coordinate with a live progress bar on the same terminal.
 *
 * Thread safety: every function may be called from any thread. Sink calls are serialized by
 * one mutex, so a sink never runs twice at once and lines never interleave. A sink that itself
 * calls dspy_log gets its nested messages written by the default stderr writer instead of
 * recursing. The library never logs to stdout.
 */
#ifndef DSPY_LOG_H
#define DSPY_LOG_H

#include "dspy/export.h"

#include <stdarg.h>
#include <stdbool.h>

#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dspy_log_level {
    DSPY_LOG_DEBUG = 0,
    DSPY_LOG_INFO = 1,
    DSPY_LOG_WARN = 2,
    DSPY_LOG_ERROR = 3,
    DSPY_LOG_OFF = 4 /* as a minimum level: log nothing; never a message's level */
} dspy_log_level;

/* Receives one message without a trailing newline (one trailing '\n' of the format result is
 * removed). `msg` is valid only during the call. */
typedef void (*dspy_log_sink)(dspy_log_level level, const char *msg, void *user);

/* Logs a printf-style message at `level` (DEBUG..ERROR) if it is enabled. Never fails; an
 * allocation failure for a very long message truncates it to 1023 bytes. */
DSPY_API void dspy_log(dspy_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
DSPY_API void dspy_logv(dspy_log_level level, const char *fmt, va_list ap);

/* True when a message at `level` would reach the sink (use it to skip costly formatting). */
DSPY_API bool dspy_log_enabled(dspy_log_level level);

/* Sets / gets the global minimum level. An explicit set overrides DSPY_LOG_LEVEL. */
DSPY_API void dspy_log_set_level(dspy_log_level level);
DSPY_API dspy_log_level dspy_log_get_level(void);

/* Installs a sink (fn, user); fn == NULL restores the default stderr sink. Takes effect for
 * the next message; waits for a sink call in progress on another thread to finish. */
DSPY_API void dspy_log_set_sink(dspy_log_sink fn, void *user);

/* "DEBUG", "INFO", "WARNING", "ERROR", "OFF" (Python logging's level names). */
DSPY_API const char *dspy_log_level_name(dspy_log_level level);

/* Parses a level name as DSPY_LOG_LEVEL accepts it. DSPY_ERR_ARG for anything else, with the
 * accepted names in the message. */
DSPY_API dspy_status dspy_log_level_parse(const char *s, dspy_log_level *out);

#ifdef __cplusplus
}
#endif
#endif
