/* local.c — launch / wait / kill a `dspy serve` child process (see dspy/local.h).
 *
 * The child is started with posix_spawn (safe in a threaded parent) with --parent-pid, so it
 * dies with this process however this process ends (see cmd_serve.c): stdin from /dev/null,
 * stdout and stderr appended to the log file, signal mask cleared and SIGTERM/SIGINT/SIGPIPE
 * reset to their defaults (ignored dispositions would otherwise survive exec). Readiness is
 * checked with libcurl; every wait is bounded by the launch deadline. Follows DSPy's
 * LocalProvider.launch/kill (dspy_behaviour.md §10.7) with the deviations listed in local.h.
 */
#include "dspy/local.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dspy/str.h"

extern char **environ;

#define LOCAL_POLL_MS 100
#define LOCAL_TAIL_BYTES 2000

struct dspy_local_server {
    pid_t pid;
    bool reaped;
    int exit_status;
    int port;
    double kill_grace_s;
    char *model_path;
    char *log_path;
    bool log_is_temp; /* in $TMPDIR (no log_dir given): removed when the server ended cleanly */
    char *api_base;
};

dspy_local_params dspy_local_params_default(void) {
    dspy_local_params p = {0};
    p.host = "127.0.0.1";
    p.timeout_s = 1800.0;
    p.kill_grace_s = 10.0;
    return p;
}

const char *dspy_local_strip_model(const char *model) {
    static const char *const k_prefixes[] = {"openai/", "local:", "huggingface/"};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(k_prefixes[i]);
        if (strncmp(model, k_prefixes[i], n) == 0) model += n;
    }
    return model;
}

const char *dspy_local_api_base(const dspy_local_server *s) { return s->api_base; }
int dspy_local_port(const dspy_local_server *s) { return s->port; }
pid_t dspy_local_pid(const dspy_local_server *s) { return s->pid; }
const char *dspy_local_log_path(const dspy_local_server *s) { return s->log_path; }
const char *dspy_local_model_path(const dspy_local_server *s) { return s->model_path; }

dspy_status dspy_local_get_logs(const dspy_local_server *s, char **out) {
    size_t len;
    return dspy_read_file(s->log_path, out, &len);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* The last lines of the log, for error messages ("" when unreadable). malloc'd. */
static char *log_tail(const char *path) {
    char *text = NULL;
    size_t len = 0;
    if (!path || dspy_read_file(path, &text, &len) != DSPY_OK) return strdup("");
    size_t start = len > LOCAL_TAIL_BYTES ? len - LOCAL_TAIL_BYTES : 0;
    char *t = strdup(text + start);
    free(text);
    return t;
}

static dspy_status resolve_bin(const dspy_local_params *p, char **out) {
    *out = NULL;
    if (p->dspy_bin && *p->dspy_bin) {
        *out = strdup(p->dspy_bin);
        return *out ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "local: out of memory");
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        const char *base = strrchr(self, '/');
        base = base ? base + 1 : self;
        if (strcmp(base, "dspy") == 0) {
            *out = strdup(self);
            return *out ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "local: out of memory");
        }
    }
    const char *env = getenv("DSPY_BIN");
    if (env && *env) {
        *out = strdup(env);
        return *out ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "local: out of memory");
    }
    return dspy_fail(DSPY_ERR_ARG, "local: cannot tell where the dspy executable is (this process is not `dspy`); "
                                   "set the DSPY_BIN environment variable or dspy_local_params.dspy_bin");
}

/* Finds "listening on http://HOST:PORT" in the log; 0 when not there yet. */
static int port_from_log(const char *path) {
    char *text = NULL;
    size_t len = 0;
    if (dspy_read_file(path, &text, &len) != DSPY_OK) return 0;
    int port = 0;
    const char *m = strstr(text, "listening on http://");
    if (m) {
        m += strlen("listening on http://");
        const char *end = m;
        while (*end && *end != ' ' && *end != '\n' && *end != '/') end++;
        const char *colon = NULL;
        for (const char *q = m; q < end; q++)
            if (*q == ':') colon = q;
        if (colon) {
            long v = strtol(colon + 1, NULL, 10);
            if (v > 0 && v < 65536) port = (int)v;
        }
    }
    free(text);
    return port;
}

static size_t discard(char *ptr, size_t size, size_t nmemb, void *user) {
    (void)ptr;
    (void)user;
    return size * nmemb;
}

/* GET url; the HTTP status, or 0 when the connection failed. */
static long http_get_status(const char *url, const char *api_key, double timeout_s) {
    CURL *h = curl_easy_init();
    if (!h) return 0;
    struct curl_slist *hdrs = NULL;
    if (api_key) {
        dspy_str a = DSPY_STR_INIT;
        dspy_str_appendf(&a, "Authorization: Bearer %s", api_key);
        if (dspy_str_ok(&a)) hdrs = curl_slist_append(NULL, a.ptr);
        dspy_str_free(&a);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    }
    long ms = (long)(timeout_s * 1000.0);
    if (ms < 100) ms = 100;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    long code = 0;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    return code;
}

/* Reaps the child if it has exited; true when it has. */
static bool reap(dspy_local_server *s, bool block) {
    if (s->reaped) return true;
    int status = 0;
    pid_t r;
    do r = waitpid(s->pid, &status, block ? 0 : WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == s->pid) {
        s->reaped = true;
        s->exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
        return true;
    }
    if (r < 0) { /* not our child any more (reaped elsewhere) */
        s->reaped = true;
        s->exit_status = -1;
        return true;
    }
    return false;
}

/* The environment for the child: ours, with DSPY_API_KEY set to `key` (the key stays out of
 * the command line, which every local user can read in /proc) or removed when key is NULL.
 * malloc'd array of borrowed strings plus one owned entry (*owned). */
static char **child_env(const char *key, char **owned) {
    *owned = NULL;
    size_t n = 0;
    while (environ[n]) n++;
    char **env = calloc(n + 2, sizeof *env);
    if (!env) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "DSPY_API_KEY=", 13) != 0) env[k++] = environ[i];
    if (key) {
        dspy_str e = DSPY_STR_INIT;
        dspy_str_appendf(&e, "DSPY_API_KEY=%s", key);
        if (!(*owned = dspy_str_take(&e))) {
            free(env);
            return NULL;
        }
        env[k++] = *owned;
    }
    env[k] = NULL;
    return env;
}

static dspy_status spawn(dspy_local_server *s, char *const argv[], int log_fd, const char *key) {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, log_fd, 1);
    posix_spawn_file_actions_adddup2(&fa, log_fd, 2);
    sigset_t none, defs;
    sigemptyset(&none);
    sigemptyset(&defs);
    sigaddset(&defs, SIGTERM);
    sigaddset(&defs, SIGINT);
    sigaddset(&defs, SIGPIPE);
    sigaddset(&defs, SIGHUP);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &defs);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char *owned = NULL;
    char **env = child_env(key, &owned);
    int rc = env ? posix_spawn(&s->pid, argv[0], &fa, &at, argv, env) : ENOMEM;
    free(env);
    if (owned) explicit_bzero(owned, strlen(owned));
    free(owned);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (rc != 0) return dspy_fail(DSPY_ERR_IO, "local: cannot start %s: %s", argv[0], strerror(rc));
    return DSPY_OK;
}

dspy_status dspy_local_launch(const char *model, const dspy_local_params *params, dspy_local_server **out) {
    *out = NULL;
    dspy_local_params p = params ? *params : dspy_local_params_default();
    if (!p.host) p.host = "127.0.0.1";
    if (p.timeout_s <= 0) p.timeout_s = 1800.0;
    if (p.kill_grace_s < 0) p.kill_grace_s = 10.0;
    if (!model || !*dspy_local_strip_model(model))
        return dspy_fail(DSPY_ERR_ARG, "local: a model path is needed (e.g. \"openai/local:/path/to/model\")");
    dspy_local_server *s = calloc(1, sizeof *s);
    if (!s) return dspy_fail(DSPY_ERR_NOMEM, "local: out of memory");
    s->pid = -1;
    s->reaped = true;
    s->kill_grace_s = p.kill_grace_s;
    char *bin = NULL, *tail = NULL;
    char **argv = NULL;
    int log_fd = -1;
    dspy_status st = DSPY_OK;
    dspy_str tmp = DSPY_STR_INIT;
    char port_arg[16];
    if (!(s->model_path = strdup(dspy_local_strip_model(model)))) {
        st = dspy_fail(DSPY_ERR_NOMEM, "local: out of memory");
        goto fail;
    }
    if ((st = resolve_bin(&p, &bin)) != DSPY_OK) goto fail;
    const char *dir = p.log_dir;
    s->log_is_temp = !dir || !*dir;
    if (!dir || !*dir) dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    if ((st = dspy_mkdir_p(dir)) != DSPY_OK) goto fail;
    dspy_str_appendf(&tmp, "%s/dspy-serve-XXXXXX.log", dir);
    if (!dspy_str_ok(&tmp)) {
        st = dspy_fail(DSPY_ERR_NOMEM, "local: out of memory");
        goto fail;
    }
    s->log_path = dspy_str_take(&tmp);
    log_fd = s->log_path ? mkostemps(s->log_path, 4, O_CLOEXEC | O_APPEND) : -1;
    if (log_fd < 0) {
        st = dspy_fail(DSPY_ERR_IO, "%s/dspy-serve-*.log: cannot create the log file: %s", dir, strerror(errno));
        goto fail;
    }
    snprintf(port_arg, sizeof port_arg, "%d", p.port > 0 ? p.port : 0);
    char parent_arg[24];
    snprintf(parent_arg, sizeof parent_arg, "%ld", (long)getpid());
    size_t na = 12 + p.n_extra_args + 1, k = 0;
    argv = calloc(na, sizeof *argv);
    if (!argv) {
        st = dspy_fail(DSPY_ERR_NOMEM, "local: out of memory");
        goto fail;
    }
    argv[k++] = bin;
    argv[k++] = "serve";
    argv[k++] = "--model";
    argv[k++] = s->model_path;
    argv[k++] = "--host";
    argv[k++] = (char *)p.host;
    argv[k++] = "--port";
    argv[k++] = port_arg;
    argv[k++] = "--parent-pid"; /* the child dies with this process, even on SIGKILL */
    argv[k++] = parent_arg;

    for (size_t i = 0; i < p.n_extra_args; i++) argv[k++] = (char *)p.extra_args[i];
    argv[k] = NULL;
    if ((st = spawn(s, argv, log_fd, p.api_key)) != DSPY_OK) goto fail;
    s->reaped = false;
    close(log_fd);
    log_fd = -1;

    /* wait for readiness, never past the deadline */
    const char *connect_host = p.host;
    bool v6 = strchr(p.host, ':') != NULL;
    if (strcmp(p.host, "0.0.0.0") == 0) connect_host = "127.0.0.1";
    else if (strcmp(p.host, "::") == 0) connect_host = "::1";
    double deadline = now_s() + p.timeout_s;
    s->port = p.port;
    for (;;) {
        if (reap(s, false)) {
            tail = log_tail(s->log_path);
            st = dspy_fail(DSPY_ERR_STATE, "local: `dspy serve` exited with status %d before it was ready (log %s):\n%s",
                           s->exit_status, s->log_path, tail);
            goto fail;
        }
        double left = deadline - now_s();
        if (left <= 0) break;
        if (s->port == 0) s->port = port_from_log(s->log_path);
        if (s->port > 0) {
            dspy_str_clear(&tmp);
            dspy_str_appendf(&tmp, v6 ? "http://[%s]:%d/v1/models" : "http://%s:%d/v1/models", connect_host, s->port);
            long code = dspy_str_ok(&tmp) ? http_get_status(tmp.ptr, p.api_key, left < 5.0 ? left : 5.0) : 0;
            if (code == 200) {
                dspy_str_clear(&tmp);
                dspy_str_appendf(&tmp, v6 ? "http://[%s]:%d/v1" : "http://%s:%d/v1", connect_host, s->port);
                if (!dspy_str_ok(&tmp)) {
                    st = dspy_fail(DSPY_ERR_NOMEM, "local: out of memory");
                    goto fail;
                }
                s->api_base = dspy_str_take(&tmp);
                free(bin);
                free(argv);
                *out = s;
                return DSPY_OK;
            }
        }
        left = deadline - now_s();
        if (left > 0) sleep_ms(left * 1000.0 < LOCAL_POLL_MS ? (int)(left * 1000.0) + 1 : LOCAL_POLL_MS);
    }
    tail = log_tail(s->log_path);
    st = dspy_fail(DSPY_ERR_TIMEOUT, "local: `dspy serve` did not become ready within %g s (log %s):\n%s", p.timeout_s,
                   s->log_path, tail);
fail:
    if (log_fd >= 0) close(log_fd);
    if (!s->reaped) {
        char *msg = strdup(dspy_errmsg());
        dspy_local_kill(s, NULL);
        if (msg) dspy_fail(st, "%s", msg);
        free(msg);
    }
    free(tail);
    free(bin);
    free(argv);
    dspy_str_free(&tmp);
    free(s->model_path);
    free(s->log_path);
    free(s->api_base);
    free(s);
    return st;
}

dspy_status dspy_local_kill(dspy_local_server *s, int *exit_status) {
    if (!s->reaped && s->pid > 0) {
        kill(s->pid, SIGTERM);
        double deadline = now_s() + s->kill_grace_s;
        while (!reap(s, false) && now_s() < deadline) sleep_ms(20);
        if (!s->reaped) {
            kill(s->pid, SIGKILL);
            reap(s, true);
        }
    }
    if (exit_status) *exit_status = s->exit_status;
    if (s->exit_status == -1 && s->pid > 0)
        return dspy_fail(DSPY_ERR_IO, "local: could not wait for process %d", (int)s->pid);
    return DSPY_OK;
}

void dspy_local_free(dspy_local_server *s) {
    if (!s) return;
    dspy_local_kill(s, NULL);
    /* a log in the temp dir of a server that ended cleanly says nothing worth keeping; logs in
     * a run directory (log_dir) stay with the run */
    if (s->log_is_temp && s->log_path && s->reaped && s->exit_status == 0) unlink(s->log_path);
    free(s->model_path);
    free(s->log_path);
    free(s->api_base);
    free(s);
}
