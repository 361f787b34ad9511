/* run.c — writing a run directory: begin, params, tags, metrics, history, finish (dspy/track.h).
 *
 * Does: the run's identity (a random 128-bit id as 32 hex digits, as MLflow's run ids), run.json
 * (rewritten atomically whenever the run's state changes), metrics.jsonl appends, the
 * environment, secret masking in the recorded command line, and the end of a run (collection,
 * report, MLflow) in a fixed order.
 * Does not: decide what a command's files mean (collect.c), talk HTTP (mlflow_rest.c) or draw
 * the report (report_*.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "dspy/backend.h"
#include "dspy/log.h"
#include "dspy/version.h"
#include "track/track_priv.h"

dspy_run_params dspy_run_params_default(void) {
    return (dspy_run_params){.kind = NULL, .name = NULL, .argc = 0, .argv = NULL, .mlflow_uri = NULL,
                             .mlflow_experiment = NULL, .notes = NULL};
}

const char *dspy_run_dir(const dspy_run *r) { return r->dir; }
const char *dspy_run_id(const dspy_run *r) { return r->id; }
const char *dspy_run_report_path(const dspy_run *r) { return r->report_path; }
const char *dspy_run_mlflow_run_id(const dspy_run *r) { return r->mlflow_run_id; }

static dspy_status nomem(const char *dir) { return dspy_fail(DSPY_ERR_NOMEM, "out of memory starting a run in %s", dir); }

void dspy_run_free(dspy_run *r) {
    if (!r) return;
    free(r->dir);
    free(r->id);
    free(r->name);
    free(r->kind);
    dspy_json_decref(r->params);
    dspy_json_decref(r->tags);
    dspy_json_decref(r->metrics);
    dspy_json_decref(r->command);
    dspy_json_decref(r->env);
    dspy_json_decref(r->mlflow);
    free(r->mlflow_uri);
    free(r->mlflow_experiment);
    free(r->report_path);
    free(r->mlflow_run_id);
    free(r->status);
    free(r->error);
    free(r);
}

static const char *user_name(void) {
    const char *u = getenv("USER");
    if (u && *u) return u;
    struct passwd *pw = getpwuid(getuid());
    return pw && pw->pw_name ? pw->pw_name : "unknown";
}

/* argv with the values of secret options replaced by "***": "--api-key X", "--api-key=X". */
static dspy_json *masked_command(int argc, const char *const *argv) {
    dspy_json *a = dspy_json_array();
    bool mask_next = false;
    for (int i = 0; a && i < argc; i++) {
        const char *s = argv[i] ? argv[i] : "";
        dspy_json *v = NULL;
        if (mask_next) {
            v = dspy_json_string("***");
            mask_next = false;
        } else if (strncmp(s, "--", 2) == 0) {
            const char *eq = strchr(s, '=');
            char *name = eq ? strndup(s + 2, (size_t)(eq - s - 2)) : strdup(s + 2);
            bool secret = name && dspy_track_secret_name(name);
            free(name);
            if (secret && eq) {
                dspy_str m = DSPY_STR_INIT;
                dspy_str_appendf(&m, "%.*s=***", (int)(eq - s), s);
                v = dspy_str_ok(&m) ? dspy_json_string(m.ptr) : NULL;
                dspy_str_free(&m);
            } else {
                v = dspy_json_string(s);
                mask_next = secret;
            }
        } else {
            v = dspy_json_string(s);
        }
        if (!v || dspy_json_append(a, v) != DSPY_OK) {
            dspy_json_decref(a);
            return NULL;
        }
    }
    return a;
}

static dspy_json *environment(void) {
    dspy_json *e = dspy_json_object(), *backends = dspy_json_array();
    struct utsname u;
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    dspy_str os = DSPY_STR_INIT;
    if (uname(&u) == 0) dspy_str_appendf(&os, "%s %s %s", u.sysname, u.release, u.machine);
    const char *why = "";
    int ndev = dspy_cuda_compiled() ? dspy_cuda_device_count(&why) : 0;
    dspy_status st = e && backends && dspy_str_ok(&os) ? DSPY_OK : DSPY_ERR_NOMEM;
    if (!st) st = dspy_json_append(backends, dspy_json_string("cpu"));
    for (int i = 0; !st && i < ndev; i++) {
        char name[256], label[300];
        if (dspy_cuda_device_name(i, name, sizeof name) != DSPY_OK) snprintf(name, sizeof name, "?");
        snprintf(label, sizeof label, "cuda:%d %s", i, name);
        st = dspy_json_append(backends, dspy_json_string(label));
    }
    if (!st) st = dspy_json_set_str(e, "dspy_version", DSPY_VERSION_STRING);
    if (!st) st = dspy_json_set_str(e, "os", os.ptr ? os.ptr : "");
    if (!st) st = dspy_json_set_str(e, "host", host);
    if (!st) st = dspy_json_set(e, "cores", dspy_json_int(sysconf(_SC_NPROCESSORS_ONLN)));
    if (!st) st = dspy_json_set(e, "backends", dspy_json_incref(backends));
    if (!st) st = dspy_json_set_str(e, "cuda", !dspy_cuda_compiled() ? "not built" : ndev ? "available" : why);
    if (!st) st = dspy_json_set_str(e, "user", user_name());
    dspy_str_free(&os);
    dspy_json_decref(backends);
    if (st) {
        dspy_json_decref(e);
        return NULL;
    }
    return e;
}

/* run.json of `r` with its status (new reference). */
static dspy_json *run_manifest(const dspy_run *r) {
    dspy_json *o = dspy_json_object();
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    dspy_json *arts = dspy_track_list_artifacts(r->dir);
    dspy_status st = o && arts ? dspy_json_set_str(o, "format", TRACK_FORMAT) : DSPY_ERR_NOMEM;
    if (!st) st = dspy_json_set_str(o, "id", r->id);
    if (!st) st = dspy_json_set_str(o, "name", r->name);
    if (!st) st = dspy_json_set_str(o, "kind", r->kind);
    if (!st) st = dspy_json_set_str(o, "status", r->status);
    if (!st) st = dspy_json_set(o, "start_time", dspy_json_int(r->start_ms));
    if (!st) st = dspy_json_set(o, "end_time", r->end_ms ? dspy_json_int(r->end_ms) : dspy_json_null());
    if (!st) st = dspy_json_set(o, "pid", dspy_json_int(getpid()));
    if (!st) st = dspy_json_set_str(o, "host", host);
    if (!st) st = dspy_json_set(o, "command", dspy_json_incref(r->command));
    if (!st) st = dspy_json_set(o, "params", dspy_json_incref(r->params));
    if (!st) st = dspy_json_set(o, "tags", dspy_json_incref(r->tags));
    if (!st) st = dspy_json_set(o, "metrics", dspy_json_incref(r->metrics));
    if (!st) st = dspy_json_set(o, "artifacts", dspy_json_incref(arts));
    if (!st) st = dspy_json_set(o, "env", dspy_json_incref(r->env));
    if (!st && r->error) st = dspy_json_set_str(o, "error", r->error);
    if (!st && r->mlflow) st = dspy_json_set(o, "mlflow", dspy_json_incref(r->mlflow));
    dspy_json_decref(arts);
    if (st) {
        dspy_json_decref(o);
        return NULL;
    }
    return o;
}

/* Writes run.json. */
static dspy_status write_manifest(const dspy_run *r) {
    dspy_json *m = run_manifest(r);
    if (!m) return dspy_fail(DSPY_ERR_NOMEM, "out of memory writing %s/run.json", r->dir);
    dspy_status st = dspy_track_save_json(r->dir, TRACK_MANIFEST, m);
    dspy_json_decref(m);
    return st;
}

dspy_status dspy_track_append_points(const char *dir, const dspy_json *points) {
    dspy_str s = DSPY_STR_INIT;
    for (size_t i = 0; i < dspy_json_size(points); i++) {
        if (dspy_json_dump(dspy_json_at(points, i), DSPY_JSON_COMPACT | DSPY_JSON_UTF8, &s))
            return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        dspy_str_appendc(&s, '\n');
    }
    if (!dspy_str_ok(&s)) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    char *path = dspy_track_join(dir, TRACK_METRICS);
    dspy_status st = DSPY_OK;
    int fd = path ? open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
    if (!path) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    else if (fd < 0) st = dspy_fail(DSPY_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    /* one write per batch: a reader sees whole lines (O_APPEND) */
    else if (s.len && write(fd, s.ptr, s.len) != (ssize_t)s.len)
        st = dspy_fail(DSPY_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
    free(path);
    dspy_str_free(&s);
    return st;
}

static void note(const dspy_run *r, const char *fmt, const char *a, const char *b) {
    if (!r->notes) return;
    fprintf(r->notes, fmt, a, b);
    fflush(r->notes);
}

/* A tracking URI naming a folder (file:..., an absolute or ./relative path), as MLflow reads
 * MLFLOW_TRACKING_URI: the run is written there in the file-store layout at its end. */
static bool file_store(const char *uri) {
    return strncmp(uri, "file:", 5) == 0 || uri[0] == '/' || strncmp(uri, "./", 2) == 0 || strncmp(uri, "../", 3) == 0;
}

/* file:///a/b -> /a/b; file:a -> a; a path as it is. */
static const char *file_store_path(const char *uri) {
    if (strncmp(uri, "file://", 7) == 0) return uri + 7;
    if (strncmp(uri, "file:", 5) == 0) return uri + 5;
    return uri;
}

/* The end of a run for a file-store tracking URI: dspy_run_export_mlflow, recorded in run.json. */
static void finish_file_store(dspy_run *r, bool ok) {
    char *path = NULL;
    dspy_status st = dspy_run_export_mlflow(r->dir, file_store_path(r->mlflow_uri), r->mlflow_experiment, &path);
    dspy_json *rec = dspy_json_object();
    if (rec) {
        dspy_json_set_str(rec, "tracking_uri", r->mlflow_uri);
        dspy_json_set_str(rec, "experiment", r->mlflow_experiment);
        dspy_json_set_str(rec, "status", st ? "failed" : "synced");
        if (st) dspy_json_set_str(rec, "error", dspy_errmsg());
        else dspy_json_set_str(rec, "run_path", path);
        dspy_json_decref(r->mlflow);
        r->mlflow = rec;
    }
    if (st) dspy_log(DSPY_LOG_WARN, "MLflow file store %s: %s", r->mlflow_uri, dspy_errmsg());
    if (write_manifest(r)) dspy_log(DSPY_LOG_WARN, "run %s: %s", r->dir, dspy_errmsg());
    if (!st && ok) note(r, "mlflow: %s%s\n", path, "");
    free(path);
}

dspy_status dspy_run_begin(const char *dir, const dspy_run_params *p, dspy_run **out) {
    *out = NULL;
    if (!dir || !*dir || !p || !p->kind || !*p->kind)
        return dspy_fail(DSPY_ERR_ARG, "dspy_run_begin: needs a directory and a kind (compile, finetune, eval)");
    dspy_status st = DSPY_OK;
    dspy_run *r = calloc(1, sizeof *r);
    if (!r) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    char id[33];
    if ((st = dspy_track_random_hex(id, 16))) goto fail;
    r->dir = dspy_track_absolute(dir);
    r->id = strdup(id);
    r->kind = strdup(p->kind);
    const char *base = r->dir ? strrchr(r->dir, '/') : NULL;
    r->name = strdup(p->name && *p->name ? p->name : base && base[1] ? base + 1 : p->kind);
    r->status = strdup("RUNNING");
    r->params = dspy_json_object();
    r->tags = dspy_json_object();
    r->metrics = dspy_json_object();
    r->command = masked_command(p->argc, p->argv);
    r->env = environment();
    r->notes = p->notes;
    r->start_ms = dspy_track_now_ms();
    const char *uri = p->mlflow_uri && *p->mlflow_uri ? p->mlflow_uri : getenv("MLFLOW_TRACKING_URI");
    const char *exp = p->mlflow_experiment && *p->mlflow_experiment ? p->mlflow_experiment
                                                                     : getenv("MLFLOW_EXPERIMENT_NAME");
    if (uri && *uri && !(r->mlflow_uri = strdup(uri))) {
        st = nomem(dir);
        goto fail;
    }
    if (!(r->mlflow_experiment = strdup(exp && *exp ? exp : "dspy"))) {
        st = nomem(dir);
        goto fail;
    }
    if (!r->dir || !r->id || !r->kind || !r->name || !r->status || !r->params || !r->tags || !r->metrics ||
        !r->command || !r->env) {
        st = nomem(dir);
        goto fail;
    }
    dspy_str src = DSPY_STR_INIT;
    dspy_str_appendf(&src, "dspy %s", r->kind);
    if (!dspy_str_ok(&src) || dspy_json_set_str(r->tags, "mlflow.source.name", src.ptr) ||
        dspy_json_set_str(r->tags, "mlflow.source.type", "LOCAL") ||
        dspy_json_set_str(r->tags, "mlflow.user", user_name()) || dspy_json_set_str(r->tags, "dspy.kind", r->kind) ||
        dspy_json_set_str(r->tags, "dspy.version", DSPY_VERSION_STRING) || dspy_json_set_str(r->tags, "dspy.run_id", r->id) ||
        dspy_json_set_str(r->tags, "dspy.run_dir", r->dir)) {
        dspy_str_free(&src);
        st = nomem(dir);
        goto fail;
    }
    dspy_str_free(&src);
    if ((st = dspy_mkdir_p(r->dir))) goto fail;
    char *mpath = dspy_track_join(r->dir, TRACK_METRICS);
    st = mpath ? dspy_write_file(mpath, "", 0) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    free(mpath);
    if (st || (st = write_manifest(r))) goto fail;
    if (r->mlflow_uri && !file_store(r->mlflow_uri)) {
        dspy_track_mlflow_begin(r);
        if ((st = write_manifest(r))) goto fail;
    }
    *out = r;
    return DSPY_OK;
fail:
    dspy_run_free(r);
    return st;
}

dspy_status dspy_run_set_param(dspy_run *r, const char *key, const char *value) {
    if (!dspy_track_key_ok(key))
        return dspy_fail(DSPY_ERR_ARG, "run param '%s': keys are 1-250 characters of letters, digits, _ - . / and "
                         "space (MLflow's rule)", key ? key : "(null)");
    return dspy_json_set_str(r->params, key, value ? value : "");
}

dspy_status dspy_run_set_params_json(dspy_run *r, const char *prefix, const dspy_json *obj) {
    if (dspy_json_typeof(obj) != DSPY_JSON_OBJECT)
        return dspy_fail(DSPY_ERR_ARG, "dspy_run_set_params_json: expected a JSON object");
    dspy_status st = DSPY_OK;
    for (void *it = dspy_json_iter(obj); !st && it; it = dspy_json_next(obj, it)) {
        dspy_str key = DSPY_STR_INIT, val = DSPY_STR_INIT;
        const dspy_json *v = dspy_json_iter_value(it);
        dspy_str_appendf(&key, "%s%s", prefix ? prefix : "", dspy_json_iter_key(it));
        if (dspy_json_is_string(v)) dspy_str_append(&val, dspy_json_str(v));
        else st = dspy_json_dump(v, DSPY_JSON_COMPACT | DSPY_JSON_UTF8, &val);
        if (!st && (!dspy_str_ok(&key) || !dspy_str_ok(&val))) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        if (!st) st = dspy_run_set_param(r, key.ptr, val.ptr ? val.ptr : "");
        dspy_str_free(&key);
        dspy_str_free(&val);
    }
    return st;
}

dspy_status dspy_run_set_tag(dspy_run *r, const char *key, const char *value) {
    if (!dspy_track_key_ok(key)) return dspy_fail(DSPY_ERR_ARG, "run tag '%s': not a valid MLflow key", key ? key : "(null)");
    return dspy_json_set_str(r->tags, key, value ? value : "");
}

dspy_status dspy_run_log_metric(dspy_run *r, const char *key, double value, int64_t step) {
    if (!dspy_track_key_ok(key)) return dspy_fail(DSPY_ERR_ARG, "run metric '%s': not a valid MLflow key", key ? key : "(null)");
    dspy_json *pts = dspy_json_array();
    dspy_status st = pts ? dspy_track_point_append(pts, key, value, step, dspy_track_now_ms()) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!st) st = dspy_track_append_points(r->dir, pts);
    if (!st) st = dspy_json_set(r->metrics, key, dspy_track_number(value));
    dspy_json_decref(pts);
    return st;
}

dspy_status dspy_run_save_history(dspy_run *r, const char *rel_path, dspy_history *h) {
    char *path = dspy_track_join(r->dir, rel_path);
    if (!path) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_str s = DSPY_STR_INIT;
    dspy_status st = DSPY_OK;
    size_t n = h ? dspy_history_len(h) : 0;
    for (size_t i = 0; !st && i < n; i++) {
        dspy_json *e = dspy_history_at(h, i);
        if (e) {
            st = dspy_json_dump(e, DSPY_JSON_COMPACT | DSPY_JSON_UTF8, &s);
            dspy_str_appendc(&s, '\n');
        }
        dspy_json_decref(e);
    }
    if (!st && !dspy_str_ok(&s)) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    char *slash = strrchr(path, '/');
    if (!st && slash) {
        *slash = '\0';
        st = dspy_mkdir_p(path);
        *slash = '/';
    }
    if (!st) st = dspy_write_file(path, s.ptr ? s.ptr : "", s.len);
    dspy_str_free(&s);
    free(path);
    return st;
}

dspy_status dspy_run_finish(dspy_run *r, bool ok, const char *error) {
    if (!r || r->finished) return DSPY_OK;
    r->finished = true;
    r->end_ms = dspy_track_now_ms();
    free(r->status);
    r->status = strdup(ok ? "FINISHED" : "FAILED");
    if (!ok && error && *error) r->error = strdup(error);
    if (!r->status) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    /* collection problems cost the run some numbers, not its record */
    dspy_status st = dspy_track_collect(r);
    if (st) dspy_log(DSPY_LOG_WARN, "run %s: %s", r->dir, dspy_errmsg());
    if ((st = write_manifest(r))) return st;
    char *report = dspy_track_join(r->dir, TRACK_REPORT);
    if (!report) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if ((st = dspy_report_write(r->dir, NULL, report))) {
        dspy_log(DSPY_LOG_WARN, "run %s: no report: %s", r->dir, dspy_errmsg());
        free(report);
    } else {
        r->report_path = report;
        if ((st = write_manifest(r))) return st; /* the artifact list now has report.html */
    }
    /* a failed command has its one error line; the notes are for runs that finished */
    if (ok) note(r, "run %s: %s\n", r->id, r->dir);
    if (ok && r->report_path) note(r, "report: file://%s%s\n", r->report_path, "");
    if (!r->mlflow_uri) return DSPY_OK;
    if (file_store(r->mlflow_uri)) {
        finish_file_store(r, ok);
        return DSPY_OK;
    }
    dspy_mlflow_params mp = dspy_mlflow_params_default();
    mp.tracking_uri = r->mlflow_uri;
    mp.experiment = r->mlflow_experiment;
    char *mid = NULL;
    if ((st = dspy_run_push_mlflow(r->dir, &mp, &mid))) {
        dspy_log(DSPY_LOG_WARN, "%s", dspy_errmsg());
        dspy_log(DSPY_LOG_WARN, "MLflow: the run is kept in %s; send it again with `dspy runs push %s --mlflow-uri "
                 "URI`", r->dir, r->dir);
        return DSPY_OK;
    }
    if (r->mlflow_run_id && strcmp(r->mlflow_run_id, mid) == 0) {
        free(mid); /* the run begun at the start: the caller's pointer stays valid */
    } else {
        free(r->mlflow_run_id);
        r->mlflow_run_id = mid;
    }
    mid = r->mlflow_run_id;
    dspy_json *m = NULL;
    if (dspy_track_load_json(r->dir, TRACK_MANIFEST, &m) == DSPY_OK) {
        const dspy_json *ml = dspy_json_get(m, "mlflow");
        dspy_str link = DSPY_STR_INIT;
        dspy_str_appendf(&link, "%s/#/experiments/%s/runs/%s", dspy_json_str_or(ml, "tracking_uri", "?"),
                         dspy_json_str_or(ml, "experiment_id", "?"), mid);
        if (ok && dspy_str_ok(&link)) note(r, "mlflow: %s%s\n", link.ptr, "");
        dspy_str_free(&link);
        dspy_json_decref(r->mlflow);
        r->mlflow = dspy_json_incref(dspy_json_get(m, "mlflow"));
    }
    dspy_json_decref(m);
    return DSPY_OK;
}
