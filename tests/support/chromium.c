/* chromium.c — a Chrome DevTools Protocol client over --remote-debugging-pipe (see chromium.h).
 *
 * Follows the DevTools protocol as Chromium implements it: requests {"id", "method", "params",
 * "sessionId"} and answers {"id", "result"} or {"id", "error": {"message"}}, events {"method",
 * "params", "sessionId"}; with the pipe transport every message ends with a NUL byte. The page's
 * session comes from Target.attachToTarget with flatten = true, so that page commands carry the
 * sessionId instead of being wrapped.
 */
#include "chromium.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct chromium {
    pid_t pid;
    int to_fd, from_fd;
    dspy_str in; /* bytes read, not yet split into messages */
    int next_id;
    char *session;
    bool loaded;
    int width, height;
    dspy_str problems;
    int nproblems;
};

const char *chromium_find(void) {
    static const char *const names[] = {"/usr/bin/chromium", "/usr/bin/chromium-browser"};
    const char *env = getenv("DSPY_CHROMIUM");
    if (env && *env) return access(env, X_OK) == 0 ? env : NULL;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (access(names[i], X_OK) == 0) return names[i];
    return NULL;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void problem(chromium *c, const char *kind, const char *text) {
    c->nproblems++;
    dspy_str_appendf(&c->problems, "%s: %s\n", kind, text ? text : "");
}

static bool local_url(const char *u) {
    return strncmp(u, "file:", 5) == 0 || strncmp(u, "data:", 5) == 0 || strncmp(u, "about:", 6) == 0;
}

static void on_event(chromium *c, const dspy_json *msg) {
    const char *m = dspy_json_str_or(msg, "method", "");
    const dspy_json *p = dspy_json_get(msg, "params");
    if (strcmp(m, "Page.loadEventFired") == 0) {
        c->loaded = true;
    } else if (strcmp(m, "Runtime.consoleAPICalled") == 0) {
        const char *type = dspy_json_str_or(p, "type", "");
        if (strcmp(type, "error") != 0 && strcmp(type, "assert") != 0) return;
        dspy_str t = DSPY_STR_INIT;
        const dspy_json *args = dspy_json_get(p, "args");
        for (size_t i = 0; i < dspy_json_size(args); i++) {
            const dspy_json *a = dspy_json_at(args, i);
            const dspy_json *v = dspy_json_get(a, "value");
            if (dspy_json_str(v)) dspy_str_appendf(&t, "%s ", dspy_json_str(v));
            else dspy_str_appendf(&t, "%s ", dspy_json_str_or(a, "description", "?"));
        }
        problem(c, "console error", dspy_str_cstr(&t));
        dspy_str_free(&t);
    } else if (strcmp(m, "Runtime.exceptionThrown") == 0) {
        const dspy_json *d = dspy_json_get(p, "exceptionDetails");
        const char *desc = dspy_json_str_or(dspy_json_get(d, "exception"), "description", dspy_json_str_or(d, "text", "?"));
        problem(c, "exception", desc);
    } else if (strcmp(m, "Log.entryAdded") == 0) {
        const dspy_json *e = dspy_json_get(p, "entry");
        if (strcmp(dspy_json_str_or(e, "level", ""), "error") == 0) {
            dspy_str t = DSPY_STR_INIT;
            dspy_str_appendf(&t, "%s (%s)", dspy_json_str_or(e, "text", ""), dspy_json_str_or(e, "url", ""));
            problem(c, "log error", dspy_str_cstr(&t));
            dspy_str_free(&t);
        }
    } else if (strcmp(m, "Network.requestWillBeSent") == 0) {
        const dspy_json *r = dspy_json_get(p, "request");
        const char *url = dspy_json_str_or(r, "url", "");
        if (!local_url(url)) {
            dspy_str t = DSPY_STR_INIT;
            dspy_str_appendf(&t, "%s %s", dspy_json_str_or(r, "method", "?"), url);
            problem(c, "network", dspy_str_cstr(&t));
            dspy_str_free(&t);
        }
    }
}

static bool write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return false;
        p += k;
        n -= (size_t)k;
    }
    return true;
}

/* The next complete message, or NULL (with *eof when the browser closed the pipe). */
static dspy_json *next_message(chromium *c, double deadline, bool *eof) {
    *eof = false;
    for (;;) {
        char *nul = c->in.len ? memchr(c->in.ptr, '\0', c->in.len) : NULL;
        if (nul) {
            size_t n = (size_t)(nul - c->in.ptr);
            dspy_json *m = NULL;
            if (dspy_json_parse(c->in.ptr, n, "devtools message", &m) != DSPY_OK) m = NULL;
            memmove(c->in.ptr, nul + 1, c->in.len - n - 1);
            c->in.len -= n + 1;
            c->in.ptr[c->in.len] = '\0';
            if (m) return m;
            continue;
        }
        double left = deadline - now_s();
        if (left <= 0) return NULL;
        struct pollfd pf = {c->from_fd, POLLIN, 0};
        int rc = poll(&pf, 1, (int)(left * 1000) + 1);
        if (rc < 0 && errno == EINTR) continue;
        if (rc <= 0) continue;
        char buf[65536];
        ssize_t k = read(c->from_fd, buf, sizeof buf);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            *eof = true;
            return NULL;
        }
        dspy_str_appendn(&c->in, buf, (size_t)k);
    }
}

/* Sends a command (with the page session unless browser_level) and waits for its answer. */
static dspy_status command(chromium *c, const char *method, dspy_json *params, bool browser_level, double timeout_s,
                           dspy_json **result) {
    if (result) *result = NULL;
    int id = ++c->next_id;
    dspy_json *req = dspy_json_object();
    dspy_json_set(req, "id", dspy_json_int(id));
    dspy_json_set_str(req, "method", method);
    dspy_json_set(req, "params", params ? params : dspy_json_object());
    if (!browser_level && c->session) dspy_json_set_str(req, "sessionId", c->session);
    dspy_str text = DSPY_STR_INIT;
    dspy_json_dump(req, DSPY_JSON_COMPACT | DSPY_JSON_UTF8, &text);
    dspy_json_decref(req);
    dspy_str_appendc(&text, '\0');
    bool ok = dspy_str_ok(&text) && write_all(c->to_fd, text.ptr, text.len);
    dspy_str_free(&text);
    if (!ok) return dspy_fail(DSPY_ERR_IO, "chromium: cannot send %s (the browser is gone)", method);
    double deadline = now_s() + timeout_s;
    for (;;) {
        bool eof = false;
        dspy_json *m = next_message(c, deadline, &eof);
        if (!m) {
            return eof ? dspy_fail(DSPY_ERR_IO, "chromium: the browser closed the pipe during %s", method)
                       : dspy_fail(DSPY_ERR_TIMEOUT, "chromium: no answer to %s in %.0f s", method, timeout_s);
        }
        if (dspy_json_int_or(m, "id", -1) != id) {
            on_event(c, m);
            dspy_json_decref(m);
            continue;
        }
        dspy_status st = DSPY_OK;
        const dspy_json *err = dspy_json_get(m, "error");
        if (err) st = dspy_fail(DSPY_ERR_REMOTE, "chromium: %s: %s", method, dspy_json_str_or(err, "message", "error"));
        else if (result) *result = dspy_json_incref(dspy_json_get(m, "result"));
        dspy_json_decref(m);
        return st;
    }
}

dspy_status chromium_call(chromium *c, const char *method, dspy_json *params, double timeout_s, dspy_json **result) {
    return command(c, method, params, false, timeout_s, result);
}

static int dup_high(int fd) {
    int h = fcntl(fd, F_DUPFD, 10);
    close(fd);
    return h;
}

dspy_status chromium_start(const char *binary, const char *profile_dir, const char *log_path, int width, int height,
                           chromium **out) {
    *out = NULL;
    int to_child[2], from_child[2];
    if (pipe(to_child) != 0) return dspy_fail(DSPY_ERR_IO, "pipe: %s", strerror(errno));
    if (pipe(from_child) != 0) {
        close(to_child[0]);
        close(to_child[1]);
        return dspy_fail(DSPY_ERR_IO, "pipe: %s", strerror(errno));
    }
    /* above 4, so that dup2 onto 3 and 4 in the child cannot clobber one another */
    for (int i = 0; i < 2; i++) {
        to_child[i] = dup_high(to_child[i]);
        from_child[i] = dup_high(from_child[i]);
    }
    char profile[1100], size[64];
    snprintf(profile, sizeof profile, "--user-data-dir=%s", profile_dir);
    snprintf(size, sizeof size, "--window-size=%d,%d", width, height);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return dspy_fail(DSPY_ERR_IO, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* the browser never outlives the test */
        if (getppid() != parent) _exit(127);
        int log = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (log >= 0) {
            dup2(log, 1);
            dup2(log, 2);
        }
        dup2(to_child[0], 3);
        dup2(from_child[1], 4);
        char *argv[] = {(char *)binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--disable-extensions", "--disable-default-apps", "--mute-audio",
                        "--remote-debugging-pipe", profile, size, "about:blank", NULL};
        for (int fd = 5; fd < 1024; fd++) close(fd);
        execv(binary, argv);
        _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    fcntl(to_child[1], F_SETFD, FD_CLOEXEC);
    fcntl(from_child[0], F_SETFD, FD_CLOEXEC);
    chromium *c = calloc(1, sizeof *c);
    c->pid = pid;
    c->to_fd = to_child[1];
    c->from_fd = from_child[0];
    c->width = width;
    c->height = height;
    dspy_json *res = NULL, *p = dspy_json_object();
    dspy_json_set_str(p, "url", "about:blank");
    dspy_status st = command(c, "Target.createTarget", p, true, 60, &res);
    char *target = st ? NULL : strdup(dspy_json_str_or(res, "targetId", ""));
    dspy_json_decref(res);
    if (!st) {
        p = dspy_json_object();
        dspy_json_set_str(p, "targetId", target);
        dspy_json_set(p, "flatten", dspy_json_bool(true));
        st = command(c, "Target.attachToTarget", p, true, 30, &res);
        if (!st) c->session = strdup(dspy_json_str_or(res, "sessionId", ""));
        dspy_json_decref(res);
    }
    free(target);
    static const char *const domains[] = {"Runtime.enable", "Log.enable", "Network.enable", "Page.enable"};
    for (size_t i = 0; !st && i < sizeof domains / sizeof *domains; i++) st = command(c, domains[i], NULL, false, 30, NULL);
    if (!st) {
        p = dspy_json_object();
        dspy_json_set(p, "width", dspy_json_int(width));
        dspy_json_set(p, "height", dspy_json_int(height));
        dspy_json_set(p, "deviceScaleFactor", dspy_json_int(1));
        dspy_json_set(p, "mobile", dspy_json_bool(false));
        st = command(c, "Emulation.setDeviceMetricsOverride", p, false, 30, NULL);
    }
    if (st) {
        chromium_stop(c);
        return st;
    }
    *out = c;
    return DSPY_OK;
}

void chromium_stop(chromium *c) {
    if (!c) return;
    if (c->to_fd >= 0) {
        dspy_json *ignored = NULL;
        command(c, "Browser.close", NULL, true, 5, &ignored);
        dspy_json_decref(ignored);
        close(c->to_fd);
    }
    double deadline = now_s() + 10;
    int ws;
    while (waitpid(c->pid, &ws, WNOHANG) == 0) {
        if (now_s() > deadline) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, &ws, 0);
            break;
        }
        usleep(20000);
    }
    close(c->from_fd);
    dspy_str_free(&c->in);
    dspy_str_free(&c->problems);
    free(c->session);
    free(c);
}

dspy_status chromium_load(chromium *c, const char *url, double timeout_s) {
    c->loaded = false;
    dspy_json *p = dspy_json_object(), *res = NULL;
    dspy_json_set_str(p, "url", url);
    dspy_status st = command(c, "Page.navigate", p, false, timeout_s, &res);
    if (!st && dspy_json_str_or(res, "errorText", NULL))
        st = dspy_fail(DSPY_ERR_IO, "chromium: cannot open %s: %s", url, dspy_json_str_or(res, "errorText", ""));
    dspy_json_decref(res);
    double deadline = now_s() + timeout_s;
    while (!st && !c->loaded) {
        bool eof = false;
        dspy_json *m = next_message(c, deadline, &eof);
        if (!m) st = dspy_fail(eof ? DSPY_ERR_IO : DSPY_ERR_TIMEOUT, "chromium: %s did not finish loading", url);
        else on_event(c, m);
        dspy_json_decref(m);
    }
    return st;
}

dspy_status chromium_eval(chromium *c, const char *expression, dspy_json **value) {
    *value = NULL;
    dspy_json *p = dspy_json_object(), *res = NULL;
    dspy_json_set_str(p, "expression", expression);
    dspy_json_set(p, "returnByValue", dspy_json_bool(true));
    dspy_json_set(p, "awaitPromise", dspy_json_bool(true));
    dspy_status st = command(c, "Runtime.evaluate", p, false, 60, &res);
    const dspy_json *ex = dspy_json_get(res, "exceptionDetails");
    if (!st && ex)
        st = dspy_fail(DSPY_ERR_REMOTE, "chromium: the expression threw: %s",
                       dspy_json_str_or(dspy_json_get(ex, "exception"), "description", dspy_json_str_or(ex, "text", "?")));
    if (!st) *value = dspy_json_incref(dspy_json_get(dspy_json_get(res, "result"), "value"));
    if (!st && !*value) *value = dspy_json_null();
    dspy_json_decref(res);
    return st;
}

static int b64(int ch) {
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+') return 62;
    if (ch == '/') return 63;
    return -1;
}

dspy_status chromium_screenshot(chromium *c, const char *path, int *width_px, int *height_px) {
    *width_px = *height_px = 0;
    dspy_json *res = NULL;
    dspy_status st = command(c, "Page.getLayoutMetrics", NULL, false, 30, &res);
    const dspy_json *cs = dspy_json_get(res, "cssContentSize");
    if (!cs) cs = dspy_json_get(res, "contentSize");
    double h = dspy_json_num_or(cs, "height", c->height);
    dspy_json_decref(res);
    res = NULL;
    if (h > 30000) h = 30000; /* a screenshot is a picture to look at, not a data dump */
    if (!st) {
        dspy_json *p = dspy_json_object();
        dspy_json_set(p, "width", dspy_json_int(c->width));
        dspy_json_set(p, "height", dspy_json_int((int64_t)h));
        dspy_json_set(p, "deviceScaleFactor", dspy_json_int(1));
        dspy_json_set(p, "mobile", dspy_json_bool(false));
        st = command(c, "Emulation.setDeviceMetricsOverride", p, false, 30, NULL);
    }
    if (!st) {
        dspy_json *p = dspy_json_object();
        dspy_json_set_str(p, "format", "png");
        dspy_json_set(p, "captureBeyondViewport", dspy_json_bool(true));
        st = command(c, "Page.captureScreenshot", p, false, 120, &res);
    }
    const char *data = st ? NULL : dspy_json_str_or(res, "data", NULL);
    if (!st && !data) st = dspy_fail(DSPY_ERR_FORMAT, "chromium: Page.captureScreenshot gave no data");
    dspy_str png = DSPY_STR_INIT;
    unsigned acc = 0;
    int bits = 0;
    for (const char *q = data; !st && *q; q++) {
        int v = b64((unsigned char)*q);
        if (v < 0) continue; /* '=' padding */
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            dspy_str_appendc(&png, (char)((acc >> bits) & 0xFF));
        }
    }
    dspy_json_decref(res);
    if (!st && (png.len < 24 || memcmp(png.ptr, "\x89PNG\r\n\x1a\n", 8) != 0))
        st = dspy_fail(DSPY_ERR_FORMAT, "chromium: the screenshot is not a PNG");
    if (!st) {
        const unsigned char *u = (const unsigned char *)png.ptr;
        *width_px = (int)((unsigned)u[16] << 24 | (unsigned)u[17] << 16 | (unsigned)u[18] << 8 | u[19]);
        *height_px = (int)((unsigned)u[20] << 24 | (unsigned)u[21] << 16 | (unsigned)u[22] << 8 | u[23]);
        st = dspy_write_file(path, png.ptr, png.len);
    }
    dspy_str_free(&png);
    /* back to the window size for whatever comes next */
    dspy_json *p = dspy_json_object();
    dspy_json_set(p, "width", dspy_json_int(c->width));
    dspy_json_set(p, "height", dspy_json_int(c->height));
    dspy_json_set(p, "deviceScaleFactor", dspy_json_int(1));
    dspy_json_set(p, "mobile", dspy_json_bool(false));
    command(c, "Emulation.setDeviceMetricsOverride", p, false, 30, NULL);
    return st;
}

const char *chromium_problems(const chromium *c) { return dspy_str_cstr(&c->problems); }
int chromium_problem_count(const chromium *c) { return c->nproblems; }
