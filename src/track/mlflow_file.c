/* mlflow_file.c — a run written into an MLflow file store (dspy_run_export_mlflow).
 *
 * The layout is the one MLflow's FileStore (mlflow/store/tracking/file_store.py) writes and
 * `mlflow ui --backend-store-uri DIR` reads:
 *   DIR/.trash/                         deleted experiments (created empty)
 *   DIR/0/meta.yaml                     the "Default" experiment of a new store
 *   DIR/<exp id>/meta.yaml              artifact_location, creation_time, experiment_id (a quoted
 *                                       string), last_update_time, lifecycle_stage, name
 *   DIR/<exp id>/<run id>/meta.yaml     the persisted RunInfo: artifact_uri, deleted_time, end_time,
 *                                       entry_point_name '', experiment_id, lifecycle_stage, run_id,
 *                                       run_name, run_uuid, source_name '', source_type 4 (LOCAL),
 *                                       source_version '', start_time, status (the RunStatus number:
 *                                       RUNNING 1, FINISHED 3, FAILED 4, KILLED 5), tags [], user_id
 *   DIR/<exp id>/<run id>/metrics/<key> one line per point: "<timestamp ms> <value> <step>", the
 *                                       value as Python's str(float) prints it ("nan", "inf" too)
 *   DIR/<exp id>/<run id>/params/<key>  the value, no trailing newline; tags/<key> likewise
 *   DIR/<exp id>/<run id>/artifacts/    the run's artifact files
 * Keys holding '/' become subfolders, as in FileStore. YAML keys are written sorted (PyYAML's
 * safe_dump default); strings that a YAML reader would take for another type are quoted.
 * Does not: merge into an existing MLflow run (a run exported again is replaced whole), write
 * the SQL stores, or read MLflow's model registry.
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dspy/hash.h"
#include "track/track_priv.h"

/* ---- YAML scalars ---------------------------------------------------------------------------- */

static bool looks_typed(const char *s) {
    static const char *const words[] = {"true", "false", "yes", "no", "on", "off", "null", "~", "y", "n"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (strcasecmp(s, words[i]) == 0) return true;
    char *end = NULL;
    strtod(s, &end);
    return end != s; /* starts like a number: 12, 1e5, .5, 0x1f, 2024-01-01 */
}

/* A string as a YAML scalar: plain when unambiguous, else a double-quoted (JSON) string. */
static void yaml_str(dspy_str *out, const char *s) {
    bool plain = *s && !looks_typed(s) && s[0] != '-' && s[0] != '.' && s[0] != ' ';
    for (const char *p = s; plain && *p; p++) {
        char c = *p;
        plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
                c == '.' || c == '/';
    }
    if (plain) {
        dspy_str_append(out, s);
        return;
    }
    dspy_json *j = dspy_json_string(s);
    if (j) dspy_json_dump(j, DSPY_JSON_COMPACT | DSPY_JSON_UTF8, out);
    else dspy_str_append(out, "''");
    dspy_json_decref(j);
}

/* The value of a top-level "key: value" line of a YAML file MLflow wrote (plain, '...' or "..."). */
static char *yaml_get(const char *text, const char *key) {
    size_t kl = strlen(key);
    for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        if (strncmp(line, key, kl) != 0 || line[kl] != ':') continue;
        const char *v = line + kl + 1;
        while (*v == ' ') v++;
        const char *end = strchr(v, '\n');
        size_t n = end ? (size_t)(end - v) : strlen(v);
        while (n && (v[n - 1] == ' ' || v[n - 1] == '\r')) n--;
        if (n >= 2 && v[0] == '\'' && v[n - 1] == '\'') {
            dspy_str s = DSPY_STR_INIT;
            for (size_t i = 1; i + 1 < n; i++) {
                dspy_str_appendc(&s, v[i]);
                if (v[i] == '\'' && v[i + 1] == '\'') i++;
            }
            return dspy_str_take(&s);
        }
        if (n >= 2 && v[0] == '"') {
            dspy_json *j = NULL;
            char *r = NULL;
            if (dspy_json_parse(v, n, "meta.yaml", &j) == DSPY_OK && dspy_json_str(j)) r = strdup(dspy_json_str(j));
            dspy_json_decref(j);
            return r;
        }
        return strndup(v, n);
    }
    return NULL;
}

/* file:// URI of an absolute path (pathlib's as_uri: unreserved characters and '/' kept). */
static void file_uri(dspy_str *out, const char *path) {
    dspy_str_append(out, "file://");
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        unsigned char c = *p;
        bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                    c == '_' || c == '.' || c == '~' || c == '/';
        if (keep) dspy_str_appendc(out, (char)c);
        else dspy_str_appendf(out, "%%%02X", c);
    }
}

/* Writes DIR/REL, creating the folders REL names on the way (MLflow's store nests tags,
 * params and metrics one file per key). */
static dspy_status write_under(const char *dir, const char *rel, const char *text, size_t n) {
    char *path = dspy_track_join(dir, rel);
    if (!path) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    char *slash = strrchr(path, '/');
    *slash = '\0';
    dspy_status st = dspy_mkdir_p(path);
    *slash = '/';
    if (!st) st = dspy_write_file(path, text, n);
    free(path);
    return st;
}

static dspy_status rm_rf(const char *path) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return errno == ENOENT ? DSPY_OK : dspy_fail(DSPY_ERR_IO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) {
        DIR *d = opendir(path);
        if (!d) return dspy_fail(DSPY_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        dspy_status st = DSPY_OK;
        for (struct dirent *e; !st && (e = readdir(d)) != NULL;) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char *sub = dspy_track_join(path, e->d_name);
            st = sub ? rm_rf(sub) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
            free(sub);
        }
        closedir(d);
        if (!st && rmdir(path) != 0) st = dspy_fail(DSPY_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
        return st;
    }
    return unlink(path) == 0 ? DSPY_OK : dspy_fail(DSPY_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
}

/* ---- experiments -------------------------------------------------------------------------------- */

static dspy_status write_experiment(const char *store, const char *id, const char *name) {
    dspy_str y = DSPY_STR_INIT, dir = DSPY_STR_INIT;
    int64_t now = dspy_track_now_ms();
    dspy_str_appendf(&dir, "%s/%s", store, id);
    dspy_str_append(&y, "artifact_location: ");
    file_uri(&y, dspy_str_cstr(&dir));
    dspy_str_appendf(&y, "\ncreation_time: %lld\nexperiment_id: '%s'\nlast_update_time: %lld\nlifecycle_stage: "
                     "active\nname: ", (long long)now, id, (long long)now);
    yaml_str(&y, name);
    dspy_str_appendc(&y, '\n');
    dspy_status st = dspy_str_ok(&y) && dspy_str_ok(&dir) ? write_under(dir.ptr, "meta.yaml", y.ptr, y.len)
                                                          : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_str_free(&y);
    dspy_str_free(&dir);
    return st;
}

/* The id of the active experiment named `name` in the store, or a new one. */
static dspy_status experiment_id(const char *store, const char *name, char **id) {
    *id = NULL;
    DIR *d = opendir(store);
    if (!d) return dspy_fail(DSPY_ERR_IO, "%s: cannot open the MLflow store: %s", store, strerror(errno));
    dspy_status st = DSPY_OK;
    for (struct dirent *e; !st && !*id && (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.') continue;
        dspy_str p = DSPY_STR_INIT;
        dspy_str_appendf(&p, "%s/%s/meta.yaml", store, e->d_name);
        char *text = NULL;
        size_t len = 0;
        if (dspy_str_ok(&p) && dspy_track_is_file(p.ptr) && dspy_read_file(p.ptr, &text, &len) == DSPY_OK) {
            char *n = yaml_get(text, "name"), *stage = yaml_get(text, "lifecycle_stage");
            if (n && strcmp(n, name) == 0 && (!stage || strcmp(stage, "active") == 0) && !(*id = strdup(e->d_name)))
                st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
            free(n);
            free(stage);
        }
        free(text);
        dspy_str_free(&p);
    }
    closedir(d);
    if (st || *id) return st;
    /* a new id: MLflow's FileStore uses a random positive integer */
    char hex[17];
    if ((st = dspy_track_random_hex(hex, 8))) return st;
    unsigned long long v = strtoull(hex, NULL, 16) % 900000000000000000ULL + 100000000000000000ULL;
    dspy_str s = DSPY_STR_INIT;
    dspy_str_appendf(&s, "%llu", v);
    if (!dspy_str_ok(&s)) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if ((st = write_experiment(store, s.ptr, name))) {
        dspy_str_free(&s);
        return st;
    }
    *id = dspy_str_take(&s);
    return DSPY_OK;
}

static dspy_status ensure_store(const char *store) {
    dspy_status st = dspy_mkdir_p(store);
    char *zero = dspy_track_join(store, "0/meta.yaml"), *trash = dspy_track_join(store, ".trash");
    if (!st && (!zero || !trash)) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    bool fresh = !st && !dspy_track_is_dir(trash);
    if (!st && fresh && !dspy_track_is_file(zero)) st = write_experiment(store, "0", "Default");
    if (!st && fresh && mkdir(trash, 0755) != 0 && errno != EEXIST)
        st = dspy_fail(DSPY_ERR_IO, "%s: cannot create: %s", trash, strerror(errno));
    free(zero);
    free(trash);
    return st;
}

/* ---- the run ----------------------------------------------------------------------------------- */

static int status_number(const dspy_json *man) {
    const char *s = dspy_json_str_or(man, "status", "");
    if (strcmp(s, "FINISHED") == 0) return 3;
    if (strcmp(s, "FAILED") == 0) return 4;
    return dspy_json_bool_or(man, "alive", true) ? 1 : 5;
}

static dspy_status write_run_meta(const char *run_dir, const char *exp, const char *rid, const dspy_json *man) {
    dspy_str y = DSPY_STR_INIT, arts = DSPY_STR_INIT;
    dspy_str_appendf(&arts, "%s/artifacts", run_dir);
    dspy_str_append(&y, "artifact_uri: ");
    file_uri(&y, dspy_str_cstr(&arts));
    int64_t end = dspy_json_int_or(man, "end_time", 0);
    dspy_str_append(&y, "\ndeleted_time: null\nend_time: ");
    if (end > 0) dspy_str_appendf(&y, "%lld", (long long)end);
    else dspy_str_append(&y, "null");
    dspy_str_appendf(&y, "\nentry_point_name: ''\nexperiment_id: '%s'\nlifecycle_stage: active\nrun_id: %s\nrun_name: ",
                     exp, rid);
    yaml_str(&y, dspy_json_str_or(man, "name", ""));
    dspy_str_appendf(&y, "\nrun_uuid: %s\nsource_name: ''\nsource_type: 4\nsource_version: ''\nstart_time: %lld\n"
                     "status: %d\ntags: []\nuser_id: ", rid, (long long)dspy_json_int_or(man, "start_time", 0),
                     status_number(man));
    yaml_str(&y, dspy_json_str_or(dspy_json_get(man, "env"), "user", "unknown"));
    dspy_str_appendc(&y, '\n');
    dspy_status st = dspy_str_ok(&y) && dspy_str_ok(&arts) ? write_under(run_dir, "meta.yaml", y.ptr, y.len)
                                                           : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!st) st = dspy_mkdir_p(arts.ptr);
    dspy_str_free(&y);
    dspy_str_free(&arts);
    return st;
}

/* params/<key> or tags/<key> files, one per member of an object of strings. */
static dspy_status write_kv(const char *run_dir, const char *folder, const dspy_json *obj, const char *run_name) {
    dspy_status st = DSPY_OK;
    dspy_str rel = DSPY_STR_INIT;
    for (void *it = dspy_json_iter(obj); !st && it; it = dspy_json_next(obj, it)) {
        const char *k = dspy_json_iter_key(it), *v = dspy_json_str(dspy_json_iter_value(it));
        if (!dspy_track_key_ok(k)) continue; /* FileStore would refuse it; nothing of ours has such a key */
        dspy_str_clear(&rel);
        dspy_str_appendf(&rel, "%s/%s", folder, k);
        st = dspy_str_ok(&rel) ? write_under(run_dir, rel.ptr, v ? v : "", v ? strlen(v) : 0)
                               : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    }
    if (!st && run_name) { /* FileStore.create_run sets mlflow.runName */
        dspy_str_clear(&rel);
        dspy_str_appendf(&rel, "%s/mlflow.runName", folder);
        st = dspy_str_ok(&rel) ? write_under(run_dir, rel.ptr, run_name, strlen(run_name))
                               : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    }
    dspy_str_free(&rel);
    return st;
}

/* metrics/<key>: the points of each key in logged order, "<timestamp> <value> <step>\n". */
static dspy_status write_metrics(const char *run_dir, const dspy_json *points) {
    dspy_json *files = dspy_json_object();
    dspy_status st = files ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !st && i < dspy_json_size(points); i++) {
        const dspy_json *p = dspy_json_at(points, i);
        const char *k = dspy_json_str_or(p, "key", "");
        double v = 0;
        if (!dspy_track_key_ok(k) || !dspy_track_number_of(dspy_json_get(p, "value"), &v)) continue;
        char num[40];
        dspy_py_float_repr(v, num, sizeof num);
        dspy_str line = DSPY_STR_INIT;
        const char *prev = dspy_json_str_or(files, k, "");
        dspy_str_appendf(&line, "%s%lld %s %lld\n", prev, (long long)dspy_json_int_or(p, "timestamp", 0), num,
                         (long long)dspy_json_int_or(p, "step", 0));
        st = dspy_str_ok(&line) ? dspy_json_set_str(files, k, line.ptr) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        dspy_str_free(&line);
    }
    dspy_str rel = DSPY_STR_INIT;
    for (void *it = st ? NULL : dspy_json_iter(files); !st && it; it = dspy_json_next(files, it)) {
        const char *text = dspy_json_str(dspy_json_iter_value(it));
        dspy_str_clear(&rel);
        dspy_str_appendf(&rel, "metrics/%s", dspy_json_iter_key(it));
        st = dspy_str_ok(&rel) ? write_under(run_dir, rel.ptr, text, strlen(text)) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    }
    dspy_str_free(&rel);
    dspy_json_decref(files);
    return st;
}

dspy_status dspy_run_export_mlflow(const char *dir, const char *store_dir, const char *experiment, char **run_path) {
    if (run_path) *run_path = NULL;
    dspy_json *man = NULL, *points = NULL;
    char *store = NULL, *exp = NULL, *run_dir = NULL;
    char rid[DSPY_SHA256_HEX_LEN + 1];
    dspy_status st = dspy_run_load(dir, &man);
    if (st || (st = dspy_run_metrics(dir, &points))) goto fail;
    if (!(store = dspy_track_absolute(store_dir))) {
        st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((st = ensure_store(store)) || (st = experiment_id(store, experiment ? experiment : "dspy", &exp))) goto fail;
    const char *id = dspy_json_str_or(man, "id", "");
    if (*id) {
        snprintf(rid, sizeof rid, "%s", id);
    } else { /* an older run without an id: one derived from its folder, so a re-export replaces it */
        const char *d = dspy_json_str_or(man, "dir", dir);
        if ((st = dspy_sha256_hex(d, strlen(d), rid))) goto fail;
        rid[32] = '\0';
    }
    dspy_str rd = DSPY_STR_INIT;
    dspy_str_appendf(&rd, "%s/%s/%s", store, exp, rid);
    if (!(run_dir = dspy_str_take(&rd))) {
        st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        goto fail;
    }
    const char *name = dspy_json_str_or(man, "name", rid);
    if ((st = rm_rf(run_dir)) || (st = write_run_meta(run_dir, exp, rid, man)) ||
        (st = write_kv(run_dir, "params", dspy_json_get(man, "params"), NULL)) ||
        (st = write_kv(run_dir, "tags", dspy_json_get(man, "tags"), name)) || (st = write_metrics(run_dir, points)))
        goto fail;
    const dspy_json *arts = dspy_json_get(man, "artifacts");
    for (size_t i = 0; !st && i < dspy_json_size(arts); i++) {
        const char *rel = dspy_json_str(dspy_json_at(arts, i));
        dspy_str src = DSPY_STR_INIT, dst = DSPY_STR_INIT;
        dspy_str_appendf(&src, "%s/%s", dspy_json_str_or(man, "dir", dir), rel ? rel : "");
        dspy_str_appendf(&dst, "%s/artifacts/%s", run_dir, rel ? rel : "");
        if (!dspy_str_ok(&src) || !dspy_str_ok(&dst)) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        else if (rel && dspy_track_is_file(src.ptr)) st = dspy_track_copy_file(src.ptr, dst.ptr);
        dspy_str_free(&src);
        dspy_str_free(&dst);
    }
    if (!st && run_path) {
        *run_path = run_dir;
        run_dir = NULL;
    }
fail:
    free(run_dir);
    free(exp);
    free(store);
    dspy_json_decref(points);
    dspy_json_decref(man);
    return st;
}
