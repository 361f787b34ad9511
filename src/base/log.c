/* log.c — leveled logging with a replaceable sink (see dspy/log.h for the contract).
 * The minimum level is an atomic; the sink pair and sink calls are guarded by one mutex.
 * DSPY_LOG_LEVEL is read once through pthread_once. */
#include "dspy/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static atomic_int g_level = DSPY_LOG_INFO;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static dspy_log_sink g_sink; /* NULL: default sink */
static void *g_user;
static _Thread_local bool t_in_sink;

static void default_sink(dspy_log_level level, const char *msg) {
    fprintf(stderr, "[dspy] %s: %s\n", dspy_log_level_name(level), msg);
    fflush(stderr);
}

static void read_env(void) {
    const char *v = getenv("DSPY_LOG_LEVEL");
    if (!v || !*v) return;
    dspy_log_level lv;
    if (dspy_log_level_parse(v, &lv) == DSPY_OK) {
        atomic_store(&g_level, (int)lv);
        return;
    }
    char msg[256];
    snprintf(msg, sizeof msg, "DSPY_LOG_LEVEL=%.64s is not a level; use debug, info, warn, error or off (keeping INFO)",
             v);
    pthread_mutex_lock(&g_mu);
    default_sink(DSPY_LOG_WARN, msg);
    pthread_mutex_unlock(&g_mu);
}

static void init(void) {
    pthread_once(&g_once, read_env);
}

const char *dspy_log_level_name(dspy_log_level level) {
    switch (level) {
    case DSPY_LOG_DEBUG: return "DEBUG";
    case DSPY_LOG_INFO: return "INFO";
    case DSPY_LOG_WARN: return "WARNING";
    case DSPY_LOG_ERROR: return "ERROR";
    case DSPY_LOG_OFF: return "OFF";
    }
    return "?";
}

dspy_status dspy_log_level_parse(const char *s, dspy_log_level *out) {
    static const struct {
        const char *name;
        dspy_log_level level;
    } names[] = {{"debug", DSPY_LOG_DEBUG}, {"info", DSPY_LOG_INFO},   {"warn", DSPY_LOG_WARN},
                 {"warning", DSPY_LOG_WARN}, {"error", DSPY_LOG_ERROR}, {"off", DSPY_LOG_OFF}};
    for (size_t i = 0; s && i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].level;
            return DSPY_OK;
        }
    }
    return dspy_fail(DSPY_ERR_ARG, "log level \"%s\" is unknown; use debug, info, warn, error or off",
                     s ? s : "(null)");
}

void dspy_log_set_level(dspy_log_level level) {
    init();
    atomic_store(&g_level, (int)level);
}

dspy_log_level dspy_log_get_level(void) {
    init();
    return (dspy_log_level)atomic_load(&g_level);
}

bool dspy_log_enabled(dspy_log_level level) {
    return level < DSPY_LOG_OFF && (int)level >= (int)dspy_log_get_level();
}

void dspy_log_set_sink(dspy_log_sink fn, void *user) {
    pthread_mutex_lock(&g_mu);
    g_sink = fn;
    g_user = user;
    pthread_mutex_unlock(&g_mu);
}

static void deliver(dspy_log_level level, const char *msg) {
    if (t_in_sink) { /* a sink logging from inside itself: don't recurse or self-deadlock */
        fprintf(stderr, "[dspy] %s: %s\n", dspy_log_level_name(level), msg);
        return;
    }
    pthread_mutex_lock(&g_mu);
    if (g_sink) {
        t_in_sink = true;
        g_sink(level, msg, g_user);
        t_in_sink = false;
    } else {
        default_sink(level, msg);
    }
    pthread_mutex_unlock(&g_mu);
}

void dspy_logv(dspy_log_level level, const char *fmt, va_list ap) {
    if (!dspy_log_enabled(level)) return;
    char small[1024];
    char *msg = small;
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    if (n >= (int)sizeof small) {
        char *big = malloc((size_t)n + 1);
        if (big) {
            vsnprintf(big, (size_t)n + 1, fmt, ap2);
            msg = big;
        }
    } else if (n < 0) {
        snprintf(small, sizeof small, "(unformattable log message: %s)", fmt);
    }
    va_end(ap2);
    size_t len = strlen(msg);
    if (len > 0 && msg[len - 1] == '\n') msg[len - 1] = '\0';
    deliver(level, msg);
    if (msg != small) free(msg);
}

void dspy_log(dspy_log_level level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    dspy_logv(level, fmt, ap);
    va_end(ap);
}
