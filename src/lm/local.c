/* local.c — launch / wait / kill a local model server: in process on a thread, or a `dspy
 * serve` child process (see dspy/local.h).
 *
 * The thread is dspy_server_new + dspy_server_start; the `dspy serve` extra arguments are read
 * into its parameters by local_args.c. The child is started with posix_spawn (safe in a threaded parent) with --parent-pid, so it
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

#include "dspy/clock.h"
#include "dspy/str.h"
#include "lm/lm_internal.h"

extern char **environ;

#define LOCAL_POLL_MS 100
#define LOCAL_TAIL_BYTES 2000

struct dspy_local_server {
    dspy_local_mode mode; /* THREAD or CHILD */
    dspy_server *srv;     /* THREAD: the server, until kill */
    dspy_status stop_st;  /* THREAD: what kill returned, kept for a second call */
    char *stop_msg;
    pid_t pid;            /* CHILD: the process, -1 before it is spawned */
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
dspy_local_mode dspy_local_get_mode(const dspy_local_server *s) { return s->mode; }
pid_t dspy_local_pid(const dspy_local_server *s) { return s->mode == DSPY_LOCAL_CHILD ? s->pid : 0; }
const char *dspy_local_log_path(const dspy_local_server *s) { return s->log_path; }
const char *dspy_local_model_path(const dspy_local_server *s) { return s->model_path; }

dspy_status dspy_local_get_logs(const dspy_local_server *s, char **out) {
    size_t len;
    *out = NULL;
    if (!s->log_path)
        return dspy_fail(DSPY_ERR_STATE, "local: the in-process server for %s has no log file; its lines go to the "
                                         "process log (dspy_log_set_sink)", s->model_path);
    return dspy_read_file(s->log_path, out, &len);
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

/* The dspy executable named by the caller (params.dspy_bin, then DSPY_BIN) or this process
 * when it is `dspy`; *out malloc'd, or NULL when there is none. */
static dspy_status find_bin(const dspy_local_params *p, char **out) {
    *out = NULL;
    const char *env = getenv("DSPY_BIN");
    const char *named = p->dspy_bin && *p->dspy_bin ? p->dspy_bin : env && *env ? env : NULL;
    char self[PATH_MAX];
    if (!named) {
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n > 0) {
            self[n] = '\0';
            const char *base = strrchr(self, '/');
            base = base ? base + 1 : self;
            if (strcmp(base, "dspy") == 0) named = self;
        }
    }
    if (named && !(*out = strdup(named))) return dspy_fail(DSPY_ERR_NOMEM, "local: out of memory");
    return DSPY_OK;
}

/* "http://HOST:PORT/v1" for a client of a server bound to `host` (a wildcard address is
 * reached through the loopback one). malloc'd, NULL on OOM. */
static char *api_base_for(const char *host, int port, const char *path) {
    const char *connect_host = host;
    if (strcmp(host, "0.0.0.0") == 0) connect_host = "127.0.0.1";
    else if (strcmp(host, "::") == 0) connect_host = "::1";
    dspy_str u = DSPY_STR_INIT;
    dspy_str_appendf(&u, strchr(host, ':') ? "http://[%s]:%d%s" : "http://%s:%d%s", connect_host, port, path);
    return dspy_str_take(&u);
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

/* ---- in process ---------------------------------------------------------------------------- */

static dspy_status launch_thread(dspy_local_server *s, const dspy_local_params *p) {
    dspy_server_params sp = dspy_server_params_default();
    sp.model_dir = s->model_path;
    sp.host = p->host;
    sp.port = p->port > 0 ? p->port : 0;
    sp.api_key = p->api_key;
    bool grace_set = false;
    dspy_status st = dspy_local_serve_args(p->extra_args, p->n_extra_args, &sp, &grace_set);
    if (st) return st;
    /* kill_grace_s bounds a child's shutdown; for a thread it is the requests' grace period
     * (capped at a day, so the int of milliseconds cannot overflow) */
    if (!grace_set) sp.shutdown_grace_ms = (int)((p->kill_grace_s < 86400.0 ? p->kill_grace_s : 86400.0) * 1000.0);
    if ((st = dspy_server_new(&sp, &s->srv)) != DSPY_OK) return st;
    if ((st = dspy_server_start(s->srv)) != DSPY_OK) return st;
    s->port = dspy_server_port(s->srv);
    if (!(s->api_base = api_base_for(p->host, s->port, "/v1"))) return DSPY_ERR_NOMEM;
    return DSPY_OK;
}

/* ---- child process ------------------------------------------------------------------------- */

/* Creates the log file (O_APPEND, so the child's two streams interleave whole writes) in
 * log_dir or the temp dir; sets s->log_path and returns the descriptor in *fd. */
static dspy_status open_log(dspy_local_server *s, const dspy_local_params *p, int *fd) {
    const char *dir = p->log_dir;
    s->log_is_temp = !dir || !*dir;
    if (!dir || !*dir) dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    dspy_status st = dspy_mkdir_p(dir);
    if (st) return st;
    dspy_str path = DSPY_STR_INIT;
    dspy_str_appendf(&path, "%s/dspy-serve-XXXXXX.log", dir);
    if (!(s->log_path = dspy_str_take(&path))) return DSPY_ERR_NOMEM;
    *fd = mkostemps(s->log_path, 4, O_CLOEXEC | O_APPEND);
    if (*fd < 0) return dspy_fail(DSPY_ERR_IO, "%s/dspy-serve-*.log: cannot create the log file: %s", dir, strerror(errno));
    return DSPY_OK;
}

/* Polls the child until GET /v1/models answers 200, it exits, or the deadline passes. */
static dspy_status wait_ready(dspy_local_server *s, const dspy_local_params *p) {
    double deadline = dspy_now_s() + p->timeout_s;
    s->port = p->port;
    for (;;) {
        if (reap(s, false)) {
            char *tail = log_tail(s->log_path);
            dspy_status st = dspy_fail(DSPY_ERR_STATE, "local: `dspy serve` exited with status %d before it was ready "
                                       "(log %s):\n%s", s->exit_status, s->log_path, tail);
            free(tail);
            return st;
        }
        double left = deadline - dspy_now_s();
        if (left <= 0) break;
        /* port 0: the child chose one and says which in its "listening on" line */
        if (s->port == 0) s->port = port_from_log(s->log_path);
        if (s->port > 0) {
            char *url = api_base_for(p->host, s->port, "/v1/models");
            long code = url ? http_get_status(url, p->api_key, left < 5.0 ? left : 5.0) : 0;
            free(url);
            if (code == 200) return (s->api_base = api_base_for(p->host, s->port, "/v1")) ? DSPY_OK : DSPY_ERR_NOMEM;
        }
        left = deadline - dspy_now_s();
        if (left > 0) dspy_sleep_ms(left * 1000.0 < LOCAL_POLL_MS ? (int)(left * 1000.0) + 1 : LOCAL_POLL_MS);
    }
    char *tail = log_tail(s->log_path);
    dspy_status st = dspy_fail(DSPY_ERR_TIMEOUT, "local: `dspy serve` did not become ready within %g s (log %s):\n%s",
                               p->timeout_s, s->log_path, tail);
    free(tail);
    return st;
}

static dspy_status launch_child(dspy_local_server *s, const dspy_local_params *p, char *bin) {
    int log_fd = -1;
    dspy_status st = open_log(s, p, &log_fd);
    char port_arg[16], parent_arg[24];
    snprintf(port_arg, sizeof port_arg, "%d", p->port > 0 ? p->port : 0);
    snprintf(parent_arg, sizeof parent_arg, "%ld", (long)getpid());
    char **argv = calloc(11 + p->n_extra_args, sizeof *argv);
    if (!st && !argv) st = dspy_fail(DSPY_ERR_NOMEM, "local: out of memory");
    if (st) goto done;
    size_t k = 0;
    argv[k++] = bin;
    argv[k++] = "serve";
    argv[k++] = "--model";
    argv[k++] = s->model_path;
    argv[k++] = "--host";
    argv[k++] = (char *)p->host;
    argv[k++] = "--port";
    argv[k++] = port_arg;
    argv[k++] = "--parent-pid"; /* the child dies with this process, even on SIGKILL */
    argv[k++] = parent_arg;
    for (size_t i = 0; i < p->n_extra_args; i++) argv[k++] = (char *)p->extra_args[i];
    argv[k] = NULL;
    if ((st = spawn(s, argv, log_fd, p->api_key)) != DSPY_OK) goto done;
    s->reaped = false;
    st = wait_ready(s, p);
done:
    if (log_fd >= 0) close(log_fd);
    free(argv);
    return st;
}

/* ---- the handle ---------------------------------------------------------------------------- */

static void local_free_fields(dspy_local_server *s) {
    dspy_server_free(s->srv);
    free(s->stop_msg);
    free(s->model_path);
    free(s->log_path);
    free(s->api_base);
    free(s);
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
    char *bin = NULL;
    dspy_status st = DSPY_OK;
    if (!(s->model_path = strdup(dspy_local_strip_model(model)))) {
        st = dspy_fail(DSPY_ERR_NOMEM, "local: out of memory");
        goto fail;
    }
    if (p.mode != DSPY_LOCAL_THREAD && (st = find_bin(&p, &bin)) != DSPY_OK) goto fail;
    if (p.mode == DSPY_LOCAL_CHILD && !bin) {
        st = dspy_fail(DSPY_ERR_ARG, "local: a `dspy serve` child was asked for but there is no dspy executable "
                                     "(this process is not `dspy`); set the DSPY_BIN environment variable or "
                                     "dspy_local_params.dspy_bin, or use DSPY_LOCAL_THREAD");
        goto fail;
    }
    s->mode = bin ? DSPY_LOCAL_CHILD : DSPY_LOCAL_THREAD;
    st = bin ? launch_child(s, &p, bin) : launch_thread(s, &p);
    if (st) goto fail;
    free(bin);
    *out = s;
    return DSPY_OK;
fail:
    if (!s->reaped) { /* a child that started: kill it, keeping the launch error's message */
        char *msg = strdup(dspy_errmsg());
        dspy_local_kill(s, NULL);
        if (msg) dspy_fail(st, "%s", msg);
        free(msg);
    }
    free(bin);
    local_free_fields(s); /* a thread that started is joined by dspy_server_free */
    return st;
}

/* A thread: stop, join and free the server now (its port and memory are released at kill,
 * as a child's are), remembering the result for later calls. */
static dspy_status kill_thread(dspy_local_server *s, int *exit_status) {
    if (s->srv) {
        s->stop_st = dspy_server_join(s->srv);
        if (s->stop_st) s->stop_msg = strdup(dspy_errmsg());
        dspy_server_free(s->srv);
        s->srv = NULL;
        s->exit_status = s->stop_st ? 1 : 0;
    }
    if (exit_status) *exit_status = s->exit_status;
    if (!s->stop_st) return DSPY_OK;
    return dspy_fail(s->stop_st, "%s", s->stop_msg ? s->stop_msg : "local: the server thread failed");
}

dspy_status dspy_local_kill(dspy_local_server *s, int *exit_status) {
    if (s->mode == DSPY_LOCAL_THREAD) return kill_thread(s, exit_status);
    if (!s->reaped && s->pid > 0) {
        kill(s->pid, SIGTERM);
        double deadline = dspy_now_s() + s->kill_grace_s;
        while (!reap(s, false) && dspy_now_s() < deadline) dspy_sleep_ms(20);
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
    local_free_fields(s);
}
