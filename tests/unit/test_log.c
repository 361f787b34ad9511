/* test_log.c — levels, DSPY_LOG_LEVEL, the default stderr format, sinks, threads. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "dspy/log.h"
#include "dspy/str.h"

typedef struct {
    dspy_str text; /* "LEVEL|msg\n" per message */
    int count;
} capture;

static void capture_sink(dspy_log_level level, const char *msg, void *user) {
    capture *c = user;
    dspy_str_appendf(&c->text, "%s|%s\n", dspy_log_level_name(level), msg);
    c->count++;
}

/* Runs `fn` in a child process with DSPY_LOG_LEVEL=env (NULL: unset) before any logging,
 * capturing the child's stderr. The logging state must be fresh, hence the fork. */
static char *run_child(const char *env, void (*fn)(void)) {
    int fds[2];
    if (pipe(fds) != 0) return NULL;
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        if (env) setenv("DSPY_LOG_LEVEL", env, 1);
        else unsetenv("DSPY_LOG_LEVEL");
        fn();
        fflush(stderr);
        _exit(0);
    }
    close(fds[1]);
    dspy_str out = DSPY_STR_INIT;
    char buf[512];
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) > 0) dspy_str_appendn(&out, buf, (size_t)n);
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return dspy_str_take(&out);
}

static void child_logs(void) {
    dspy_log(DSPY_LOG_DEBUG, "debug %d", 1);
    dspy_log(DSPY_LOG_INFO, "Average Metric: %d / %d (%.1f%%)", 55, 100, 55.0);
    dspy_log(DSPY_LOG_WARN, "careful\n");
    dspy_log(DSPY_LOG_ERROR, "bad");
}

static void test_default_sink_and_env(void) {
    char *out = run_child(NULL, child_logs);
    CHECK_STR(out, "[dspy] INFO: Average Metric: 55 / 100 (55.0%)\n[dspy] WARNING: careful\n[dspy] ERROR: bad\n");
    free(out);
    out = run_child("DEBUG", child_logs);
    CHECK_STR(out,
              "[dspy] DEBUG: debug 1\n[dspy] INFO: Average Metric: 55 / 100 (55.0%)\n"
              "[dspy] WARNING: careful\n[dspy] ERROR: bad\n");
    free(out);
    out = run_child("error", child_logs);
    CHECK_STR(out, "[dspy] ERROR: bad\n");
    free(out);
    out = run_child("off", child_logs);
    CHECK_STR(out, "");
    free(out);
    out = run_child("loud", child_logs);
    CHECK_STR(out,
              "[dspy] WARNING: DSPY_LOG_LEVEL=loud is not a level; use debug, info, warn, error or off "
              "(keeping INFO)\n[dspy] INFO: Average Metric: 55 / 100 (55.0%)\n[dspy] WARNING: careful\n"
              "[dspy] ERROR: bad\n");
    free(out);
}

static void test_levels_and_sink(void) {
    capture c = {DSPY_STR_INIT, 0};
    dspy_log_set_sink(capture_sink, &c);
    dspy_log_set_level(DSPY_LOG_WARN);
    CHECK(!dspy_log_enabled(DSPY_LOG_INFO));
    CHECK(dspy_log_enabled(DSPY_LOG_ERROR));
    dspy_log(DSPY_LOG_INFO, "hidden");
    dspy_log(DSPY_LOG_WARN, "w %s", "x");
    dspy_log(DSPY_LOG_ERROR, "e");
    dspy_log_set_level(DSPY_LOG_DEBUG);
    CHECK_INT(dspy_log_get_level(), DSPY_LOG_DEBUG);
    dspy_log(DSPY_LOG_DEBUG, "d");
    dspy_log_set_level(DSPY_LOG_OFF);
    dspy_log(DSPY_LOG_ERROR, "silenced");
    dspy_log_set_level(DSPY_LOG_INFO);
    CHECK_STR(dspy_str_cstr(&c.text), "WARNING|w x\nERROR|e\nDEBUG|d\n");
    /* A long message is delivered whole. */
    dspy_str_clear(&c.text);
    char big[5000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    dspy_log(DSPY_LOG_INFO, "<%s>", big);
    CHECK_INT(c.text.len, strlen("INFO|<>\n") + 4999);
    dspy_log_set_sink(NULL, NULL);
    dspy_str_free(&c.text);
}

static void test_parse(void) {
    dspy_log_level lv = DSPY_LOG_OFF;
    CHECK_OK(dspy_log_level_parse("Warning", &lv));
    CHECK_INT(lv, DSPY_LOG_WARN);
    CHECK_OK(dspy_log_level_parse("warn", &lv));
    CHECK_INT(lv, DSPY_LOG_WARN);
    CHECK_OK(dspy_log_level_parse("DEBUG", &lv));
    CHECK_INT(lv, DSPY_LOG_DEBUG);
    CHECK_STATUS(dspy_log_level_parse("verbose", &lv), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "\"verbose\" is unknown; use debug, info, warn, error or off");
    CHECK_STR(dspy_log_level_name(DSPY_LOG_ERROR), "ERROR");
}

static void *log_many(void *arg) {
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < 500; i++) dspy_log(DSPY_LOG_INFO, "thread %d line %d", id, i);
    return NULL;
}

static void test_threads(void) {
    capture c = {DSPY_STR_INIT, 0};
    dspy_log_set_sink(capture_sink, &c);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, log_many, (void *)(intptr_t)i);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    dspy_log_set_sink(NULL, NULL);
    CHECK_INT(c.count, 2000);
    /* Every line is whole: each thread's lines appear in its own order. */
    int next[4] = {0, 0, 0, 0}, bad = 0;
    const char *p = dspy_str_cstr(&c.text);
    while (*p) {
        int id, ln;
        if (sscanf(p, "INFO|thread %d line %d", &id, &ln) != 2 || id < 0 || id > 3 || ln != next[id]) bad++;
        else next[id]++;
        p = strchr(p, '\n');
        if (!p) break;
        p++;
    }
    CHECK_INT(bad, 0);
    dspy_str_free(&c.text);
}

/* A sink that logs from inside itself must not deadlock. */
static void nested_sink(dspy_log_level level, const char *msg, void *user) {
    (void)level;
    capture *c = user;
    c->count++;
    if (strcmp(msg, "outer") == 0) dspy_log(DSPY_LOG_ERROR, "inner");
}

static void child_nested(void) {
    capture c = {DSPY_STR_INIT, 0};
    dspy_log_set_sink(nested_sink, &c);
    dspy_log(DSPY_LOG_INFO, "outer");
    dspy_log_set_sink(NULL, NULL);
    dspy_log(DSPY_LOG_INFO, "count=%d", c.count);
}

static void test_nested(void) {
    char *out = run_child(NULL, child_nested);
    CHECK_STR(out, "[dspy] ERROR: inner\n[dspy] INFO: count=1\n");
    free(out);
}

int main(void) {
    RUN(test_default_sink_and_env);
    RUN(test_nested);
    RUN(test_levels_and_sink);
    RUN(test_parse);
    RUN(test_threads);
    return check_summary("test_log");
}
