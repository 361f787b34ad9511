/* util.c — small helpers of the tracking layer (track_priv.h): time, numbers that may not be
 * finite, MLflow's key rule, file copies and paths, manifests, the artifact list, the trainer
 * log as metric points.
 * Follows: MLflow's key validation (mlflow/utils/validation.py: _validate_metric_name and
 * friends) and the proto3 JSON mapping of doubles ("NaN", "Infinity", "-Infinity").
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "track/track_priv.h"

int64_t dspy_track_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

dspy_json *dspy_track_number(double x) {
    if (isnan(x)) return dspy_json_string("NaN");
    if (isinf(x)) return dspy_json_string(x > 0 ? "Infinity" : "-Infinity");
    return dspy_json_real(x);
}

bool dspy_track_number_of(const dspy_json *v, double *out) {
    if (dspy_json_is_number(v)) {
        *out = dspy_json_number(v);
        return true;
    }
    const char *s = dspy_json_str(v);
    if (!s) return false;
    if (strcmp(s, "NaN") == 0) *out = NAN;
    else if (strcmp(s, "Infinity") == 0) *out = INFINITY;
    else if (strcmp(s, "-Infinity") == 0) *out = -INFINITY;
    else return false;
    return true;
}

bool dspy_track_key_ok(const char *key) {
    size_t n = key ? strlen(key) : 0;
    if (n == 0 || n > 250 || key[0] == '/') return false;
    for (size_t i = 0; i < n; i++) {
        char c = key[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                  c == '-' || c == '.' || c == ' ' || c == '/';
        if (!ok) return false;
    }
    /* a ".." component would climb out of the store's folder */
    for (const char *p = key; (p = strstr(p, "..")) != NULL; p += 2) {
        bool start = p == key || p[-1] == '/', end = p[2] == '\0' || p[2] == '/';
        if (start && end) return false;
    }
    return true;
}

bool dspy_track_secret_name(const char *name) {
    /* "api-key", "teacher-api-key", "token", "hf_token", "password"; not "max-tokens" */
    static const char *const words[] = {"key", "token", "secret", "password", "passwd"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++) {
        size_t w = strlen(words[i]);
        for (const char *p = name; (p = strstr(p, words[i])) != NULL; p++) {
            bool start = p == name || p[-1] == '-' || p[-1] == '_';
            bool end = p[w] == '\0' || p[w] == '-' || p[w] == '_';
            if (start && end) return true;
        }
    }
    return false;
}

bool dspy_track_is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

bool dspy_track_is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

char *dspy_track_join(const char *dir, const char *rel) {
    dspy_str s = DSPY_STR_INIT;
    dspy_str_appendf(&s, "%s/%s", dir, rel);
    return dspy_str_take(&s);
}

char *dspy_track_absolute(const char *path) {
    dspy_str s = DSPY_STR_INIT;
    if (path[0] != '/') {
        char *cwd = getcwd(NULL, 0);
        if (!cwd) return NULL;
        dspy_str_appendf(&s, "%s/", cwd);
        free(cwd);
    }
    dspy_str_append(&s, path);
    while (s.len > 1 && s.ptr && s.ptr[s.len - 1] == '/') s.ptr[--s.len] = '\0';
    return dspy_str_take(&s);
}

dspy_status dspy_track_copy_file(const char *src, const char *dst) {
    char *data = NULL, *parent = NULL;
    size_t len = 0;
    dspy_status st = dspy_read_file(src, &data, &len);
    if (st) goto fail;
    if (!(parent = strdup(dst))) {
        st = dspy_fail(DSPY_ERR_NOMEM, "out of memory copying %s", src);
        goto fail;
    }
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = '\0';
        if ((st = dspy_mkdir_p(parent))) goto fail;
    }
    st = dspy_write_file(dst, data, len);
    /* keep the modification time, as `cp -p` does: a trainer log's timestamps derive from it */
    struct stat sb;
    if (!st && stat(src, &sb) == 0) {
        struct timespec times[2] = {sb.st_atim, sb.st_mtim};
        utimensat(AT_FDCWD, dst, times, 0);
    }
fail:
    free(parent);
    free(data);
    return st;
}

dspy_status dspy_track_load_json(const char *dir, const char *rel, dspy_json **out) {
    *out = NULL;
    char *path = dspy_track_join(dir, rel);
    if (!path) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_status st = dspy_track_is_file(path) ? dspy_json_load(path, out)
                                         : dspy_fail(DSPY_ERR_NOTFOUND, "%s: no such file", path);
    free(path);
    return st;
}

dspy_status dspy_track_save_json(const char *dir, const char *rel, const dspy_json *v) {
    dspy_str body = DSPY_STR_INIT;
    char *path = dspy_track_join(dir, rel);
    dspy_status st = path ? dspy_json_dump(v, DSPY_JSON_UTF8 | DSPY_JSON_INDENT(2), &body)
                          : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!st) {
        dspy_str_appendc(&body, '\n');
        st = dspy_str_ok(&body) ? dspy_write_file(path, body.ptr, body.len) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    }
    dspy_str_free(&body);
    free(path);
    return st;
}

/* The small files of a run directory that count as its artifacts, in this order; names with a
 * '*' stand for each baselines/<name>/ folder. NULL-terminated. */
static const char *const artifact_names[] = {
    TRACK_MANIFEST, TRACK_METRICS, "report.json", "program.json", "results.json", "results.csv",
    "train.jsonl", "finetune_data.jsonl", TRACK_HISTORY, TRACK_REPORT,
    "baselines/*/results.json", "baselines/*/results.csv", "baselines/*/" TRACK_HISTORY, NULL,
};

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The sorted names of the subdirectories of `dir` (malloc'd array of malloc'd strings). */
static size_t subdirs(const char *dir, char ***out) {
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d) return 0;
    size_t n = 0, cap = 0;
    char **v = NULL;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.') continue;
        char *p = dspy_track_join(dir, e->d_name);
        bool isdir = p && dspy_track_is_dir(p);
        free(p);
        if (!isdir) continue;
        if (n == cap) {
            char **nv = realloc(v, (cap = cap ? 2 * cap : 8) * sizeof *nv);
            if (!nv) break;
            v = nv;
        }
        if (!(v[n] = strdup(e->d_name))) break;
        n++;
    }
    closedir(d);
    if (n) qsort(v, n, sizeof *v, cmp_str);
    *out = v;
    return n;
}

dspy_json *dspy_track_list_artifacts(const char *dir) {
    dspy_json *arr = dspy_json_array();
    char *bdir = dspy_track_join(dir, "baselines");
    char **names = NULL;
    size_t nb = bdir ? subdirs(bdir, &names) : 0;
    bool oom = !arr || !bdir;
    for (size_t i = 0; !oom && artifact_names[i]; i++) {
        const char *pat = artifact_names[i];
        const char *star = strchr(pat, '*');
        for (size_t j = 0; j < (star ? nb : 1) && !oom; j++) {
            dspy_str rel = DSPY_STR_INIT;
            if (star) dspy_str_appendf(&rel, "%.*s%s%s", (int)(star - pat), pat, names[j], star + 1);
            else dspy_str_append(&rel, pat);
            char *full = dspy_str_ok(&rel) ? dspy_track_join(dir, rel.ptr) : NULL;
            oom = !full;
            if (full && dspy_track_is_file(full)) oom = dspy_json_append(arr, dspy_json_string(rel.ptr)) != DSPY_OK;
            free(full);
            dspy_str_free(&rel);
        }
    }
    for (size_t j = 0; j < nb; j++) free(names[j]);
    free(names);
    free(bdir);
    if (oom) {
        dspy_json_decref(arr);
        return NULL;
    }
    return arr;
}

char *dspy_track_uri_public(const char *uri) {
    const char *scheme = strstr(uri, "://");
    if (!scheme) return strdup(uri);
    const char *host = scheme + 3;
    const char *slash = strchr(host, '/');
    const char *at = strchr(host, '@');
    dspy_str s = DSPY_STR_INIT;
    if (at && (!slash || at < slash)) {
        dspy_str_appendn(&s, uri, (size_t)(host - uri));
        dspy_str_append(&s, at + 1);
    } else {
        dspy_str_append(&s, uri);
    }
    return dspy_str_take(&s);
}

dspy_status dspy_track_random_hex(char *buf, size_t n_bytes) {
    unsigned char raw[64];
    if (n_bytes > sizeof raw) return dspy_fail(DSPY_ERR_ARG, "dspy_track_random_hex: %zu bytes is too many", n_bytes);
    size_t got = 0;
    while (got < n_bytes) {
        ssize_t k = getrandom(raw + got, n_bytes - got, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return dspy_fail(DSPY_ERR_IO, "getrandom failed: %s", strerror(errno));
        got += (size_t)k;
    }
    for (size_t i = 0; i < n_bytes; i++) snprintf(buf + 2 * i, 3, "%02x", raw[i]);
    return DSPY_OK;
}

/* ---- the trainer's log ---------------------------------------------------------------------- */

dspy_status dspy_track_point_append(dspy_json *out, const char *key, double value, int64_t step, int64_t ts) {
    dspy_json *p = dspy_json_object();
    if (!p) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_status st = dspy_json_set_str(p, "key", key);
    if (!st) st = dspy_json_set(p, "value", dspy_track_number(value));
    if (!st) st = dspy_json_set(p, "step", dspy_json_int(step));
    if (!st) st = dspy_json_set(p, "timestamp", dspy_json_int(ts));
    if (!st) return dspy_json_append(out, p);
    dspy_json_decref(p);
    return st;
}

dspy_status dspy_track_train_log_points(const char *path, dspy_json *out) {
    static const char *const keys[][2] = {
        {"loss", "loss"}, {"lr", "learning_rate"}, {"grad_norm", "grad_norm"},
        {"tokens_per_s", "tokens_per_s"}, {"epoch", "epoch"},
    };
    char *data = NULL;
    size_t len = 0;
    dspy_json *lines = dspy_json_array();
    dspy_status st = lines ? dspy_read_file(path, &data, &len) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (st) goto fail;
    struct stat sb;
    int64_t mtime_ms = stat(path, &sb) == 0 ? (int64_t)sb.st_mtim.tv_sec * 1000 + sb.st_mtim.tv_nsec / 1000000
                                            : dspy_track_now_ms();
    /* every complete line that parses (a killed trainer may leave half a line at the end) */
    double last_elapsed = 0;
    for (const char *line = data; line < data + len;) {
        const char *nl = memchr(line, '\n', (size_t)(data + len - line));
        size_t ll = nl ? (size_t)(nl - line) : (size_t)(data + len - line);
        dspy_json *o = NULL;
        if (ll && dspy_json_parse(line, ll, path, &o) == DSPY_OK && dspy_json_typeof(o) == DSPY_JSON_OBJECT &&
            dspy_json_get(o, "step")) {
            last_elapsed = dspy_json_num_or(o, "elapsed", last_elapsed);
            if ((st = dspy_json_append(lines, o))) goto fail;
        } else {
            dspy_json_decref(o);
        }
        line += ll + 1;
    }
    for (size_t i = 0; i < dspy_json_size(lines); i++) {
        const dspy_json *o = dspy_json_at(lines, i);
        int64_t step = dspy_json_int_or(o, "step", 0);
        double el = dspy_json_num_or(o, "elapsed", last_elapsed);
        int64_t ts = mtime_ms - (int64_t)llround((last_elapsed - el) * 1000.0);
        for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
            double v;
            const dspy_json *jv = dspy_json_get(o, keys[k][0]);
            if (jv && dspy_track_number_of(jv, &v) && (st = dspy_track_point_append(out, keys[k][1], v, step, ts))) goto fail;
        }
    }
fail:
    free(data);
    dspy_json_decref(lines);
    return st;
}
