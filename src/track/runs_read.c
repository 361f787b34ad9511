/* runs_read.c — reading run directories: manifests, metric logs, finding and naming runs.
 *
 * Does: dspy_run_load (run.json, or a manifest built from the files of a directory written before
 * run.json existed), dspy_run_metrics, dspy_runs_find (a bounded walk that stops at runs and
 * skips caches, checkpoints and model folders), dspy_run_resolve (a directory or an id prefix).
 * Does not: write anything.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "track/track_priv.h"

static int64_t mtime_ms(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0) return 0;
    return (int64_t)sb.st_mtim.tv_sec * 1000 + sb.st_mtim.tv_nsec / 1000000;
}

/* A manifest for a directory without run.json (older runs): kind from the files present. */
static dspy_status legacy_manifest(const char *dir, dspy_json **out) {
    static const char *const probes[][2] = {
        {"report.json", "compile"}, {"train.jsonl", "finetune"}, {"results.json", "eval"}};
    const char *kind = NULL, *file = NULL;
    for (size_t i = 0; !kind && i < sizeof probes / sizeof *probes; i++) {
        char *p = dspy_track_join(dir, probes[i][0]);
        if (p && dspy_track_is_file(p)) {
            kind = probes[i][1];
            file = probes[i][0];
        }
        free(p);
    }
    if (!kind)
        return dspy_fail(DSPY_ERR_NOTFOUND, "%s: not a run directory (no run.json, report.json, train.jsonl or "
                         "results.json)", dir);
    char *fp = dspy_track_join(dir, file);
    int64_t t = fp ? mtime_ms(fp) : 0;
    free(fp);
    const char *base = strrchr(dir, '/');
    dspy_json *m = dspy_json_object(), *metrics = dspy_json_object(), *rep = NULL, *rows = NULL;
    dspy_status st = m && metrics ? dspy_json_set_str(m, "format", TRACK_FORMAT) : DSPY_ERR_NOMEM;
    if (!st) st = dspy_json_set_str(m, "id", "");
    if (!st) st = dspy_json_set_str(m, "name", base && base[1] ? base + 1 : dir);
    if (!st) st = dspy_json_set_str(m, "kind", kind);
    if (!st) st = dspy_json_set_str(m, "status", "FINISHED");
    if (!st) st = dspy_json_set(m, "start_time", dspy_json_int(t));
    if (!st) st = dspy_json_set(m, "end_time", dspy_json_int(t));
    if (!st) st = dspy_json_set(m, "params", dspy_json_object());
    if (!st) st = dspy_json_set(m, "tags", dspy_json_object());
    if (!st) st = dspy_json_set(m, "env", dspy_json_object());
    if (!st) st = dspy_json_set(m, "artifacts", dspy_track_list_artifacts(dir));
    if (!st && dspy_track_load_json(dir, "report.json", &rep) == DSPY_OK)
        for (void *it = dspy_json_iter(rep); !st && it; it = dspy_json_next(rep, it))
            if (dspy_json_is_number(dspy_json_iter_value(it)))
                st = dspy_json_set(metrics, strcmp(dspy_json_iter_key(it), "score") == 0 ? "eval_score"
                                                                                        : dspy_json_iter_key(it),
                                   dspy_json_incref(dspy_json_iter_value(it)));
    double score;
    size_t n;
    if (!st && !dspy_json_get(metrics, "eval_score") && dspy_track_load_json(dir, "results.json", &rows) == DSPY_OK &&
        dspy_track_results_score(rows, &score, &n) == DSPY_OK && n) {
        st = dspy_json_set(metrics, "eval_score", dspy_json_real(score));
        if (!st) st = dspy_json_set(metrics, "eval_examples", dspy_json_int((int64_t)n));
    }
    if (!st) st = dspy_json_set(m, "metrics", dspy_json_incref(metrics));
    dspy_json_decref(rep);
    dspy_json_decref(rows);
    dspy_json_decref(metrics);
    if (st) {
        dspy_json_decref(m);
        return st == DSPY_ERR_NOMEM ? dspy_fail(st, "out of memory") : st;
    }
    *out = m;
    return DSPY_OK;
}

/* false when the manifest says RUNNING on this host and its process is gone. */
static bool alive(const dspy_json *m) {
    if (strcmp(dspy_json_str_or(m, "status", ""), "RUNNING") != 0) return true;
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    if (strcmp(dspy_json_str_or(m, "host", ""), host) != 0) return true;
    int64_t pid = dspy_json_int_or(m, "pid", 0);
    return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

dspy_status dspy_run_load(const char *dir, dspy_json **out) {
    *out = NULL;
    char *abs = dspy_track_absolute(dir);
    if (!abs) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_json *m = NULL;
    dspy_status st;
    if (!dspy_track_is_dir(abs)) {
        st = dspy_fail(DSPY_ERR_NOTFOUND, "%s: no such run directory", dir);
    } else if ((st = dspy_track_load_json(abs, TRACK_MANIFEST, &m)) == DSPY_ERR_NOTFOUND) {
        st = legacy_manifest(abs, &m);
    } else if (!st && (dspy_json_typeof(m) != DSPY_JSON_OBJECT ||
                       strncmp(dspy_json_str_or(m, "format", ""), "dspy.run/", 9) != 0)) {
        st = dspy_fail(DSPY_ERR_FORMAT, "%s/run.json: not a dspy run manifest (no \"format\": \"dspy.run/1\")", abs);
    }
    if (!st) st = dspy_json_set_str(m, "dir", abs);
    if (!st) st = dspy_json_set(m, "alive", dspy_json_bool(alive(m)));
    free(abs);
    if (st) {
        dspy_json_decref(m);
        return st;
    }
    *out = m;
    return DSPY_OK;
}

dspy_status dspy_run_metrics(const char *dir, dspy_json **out) {
    *out = NULL;
    dspy_json *arr = dspy_json_array();
    char *path = dspy_track_join(dir, TRACK_METRICS), *train = dspy_track_join(dir, "train.jsonl");
    char *data = NULL;
    size_t len = 0;
    dspy_status st = arr && path && train ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!st && dspy_track_is_file(path)) {
        if (!(st = dspy_read_file(path, &data, &len))) {
            for (const char *line = data; !st && line < data + len;) {
                const char *nl = memchr(line, '\n', (size_t)(data + len - line));
                size_t ll = nl ? (size_t)(nl - line) : (size_t)(data + len - line);
                dspy_json *o = NULL;
                /* a line cut by a kill at the end of the file is skipped, not an error */
                if (ll && dspy_json_parse(line, ll, path, &o) == DSPY_OK && dspy_json_get(o, "key"))
                    st = dspy_json_append(arr, o);
                else
                    dspy_json_decref(o);
                line += ll + 1;
            }
        }
    } else if (!st && dspy_track_is_file(train)) {
        st = dspy_track_train_log_points(train, arr);
    }
    free(data);
    free(path);
    free(train);
    if (st) {
        dspy_json_decref(arr);
        return st;
    }
    *out = arr;
    return DSPY_OK;
}

/* Folders never searched for runs: a run's own data, caches, checkpoints, VCS and packages. */
static bool skipped(const char *dir, const char *name) {
    static const char *const names[] = {"cache", "logs", "baselines", "node_modules", "__pycache__", "eval-cache"};
    if (name[0] == '.') return true;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strcmp(name, names[i]) == 0) return true;
    if (strncmp(name, "checkpoint-", 11) == 0) return true;
    char *run = dspy_track_join(dir, TRACK_MANIFEST), *cfg = dspy_track_join(dir, "config.json");
    /* a Hugging Face model folder, unless it is also a run (`dspy finetune --out`) */
    bool model = run && cfg && !dspy_track_is_file(run) && dspy_track_is_file(cfg);
    free(run);
    free(cfg);
    return model;
}

static dspy_status walk(const char *dir, int depth, int max_depth, dspy_json *out) {
    char *manifest = dspy_track_join(dir, TRACK_MANIFEST);
    if (!manifest) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    bool is_run = dspy_track_is_file(manifest);
    free(manifest);
    if (is_run) {
        dspy_json *m = NULL;
        /* an unreadable manifest is left out of the list rather than failing the whole search */
        if (dspy_run_load(dir, &m) == DSPY_OK) return dspy_json_append(out, m);
        return DSPY_OK;
    }
    if (depth >= max_depth) return DSPY_OK;
    DIR *d = opendir(dir);
    if (!d) return DSPY_OK;
    dspy_status st = DSPY_OK;
    for (struct dirent *e; !st && (e = readdir(d)) != NULL;) {
        char *sub = dspy_track_join(dir, e->d_name);
        if (!sub) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        else if (dspy_track_is_dir(sub) && !skipped(sub, e->d_name)) st = walk(sub, depth + 1, max_depth, out);
        free(sub);
    }
    closedir(d);
    return st;
}

static int newest_first(const void *a, const void *b) {
    int64_t x = dspy_json_int_or(*(const dspy_json *const *)a, "start_time", 0);
    int64_t y = dspy_json_int_or(*(const dspy_json *const *)b, "start_time", 0);
    return x < y ? 1 : x > y ? -1 : 0;
}

dspy_status dspy_runs_find(const char *const *roots, size_t n_roots, int max_depth, dspy_json **out) {
    *out = NULL;
    dspy_json *found = dspy_json_array(), *sorted = dspy_json_array();
    dspy_status st = found && sorted ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !st && i < n_roots; i++) {
        char *abs = dspy_track_absolute(roots[i]);
        st = abs ? walk(abs, 0, max_depth, found) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        free(abs);
    }
    size_t n = st ? 0 : dspy_json_size(found);
    const dspy_json **v = n ? malloc(n * sizeof *v) : NULL;
    if (n && !v) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !st && i < n; i++) v[i] = dspy_json_at(found, i);
    if (!st && n) qsort(v, n, sizeof *v, newest_first);
    /* the same run reached through two roots is listed once */
    for (size_t i = 0; !st && i < n; i++) {
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++)
            dup = strcmp(dspy_json_str_or(v[i], "dir", ""), dspy_json_str_or(v[j], "dir", "")) == 0;
        if (!dup) st = dspy_json_append(sorted, dspy_json_incref((dspy_json *)v[i]));
    }
    free(v);
    dspy_json_decref(found);
    if (st) {
        dspy_json_decref(sorted);
        return st;
    }
    *out = sorted;
    return DSPY_OK;
}

dspy_status dspy_run_resolve(const char *ref, const char *const *roots, size_t n_roots, char **dir_out) {
    *dir_out = NULL;
    dspy_json *m = NULL, *all = NULL;
    if (dspy_track_is_dir(ref) && dspy_run_load(ref, &m) == DSPY_OK) {
        *dir_out = strdup(dspy_json_str_or(m, "dir", ref));
        dspy_json_decref(m);
        return *dir_out ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    }
    size_t rl = strlen(ref);
    if (rl < 4)
        return dspy_fail(DSPY_ERR_NOTFOUND, "run '%s': not a run directory; give a directory or at least 4 characters "
                         "of a run id (see `dspy runs list`)", ref);
    dspy_status st = dspy_runs_find(roots, n_roots, 3, &all);
    if (st) return st;
    dspy_str matches = DSPY_STR_INIT;
    const char *hit = NULL;
    size_t n = 0;
    for (size_t i = 0; i < dspy_json_size(all); i++) {
        const dspy_json *r = dspy_json_at(all, i);
        if (strncmp(dspy_json_str_or(r, "id", ""), ref, rl) != 0) continue;
        hit = dspy_json_str_or(r, "dir", "");
        dspy_str_appendf(&matches, "%s%s (%s)", n ? ", " : "", dspy_json_str_or(r, "id", ""), hit);
        n++;
    }
    if (n == 1) {
        *dir_out = strdup(hit);
        st = *dir_out ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    } else if (n > 1) {
        st = dspy_fail(DSPY_ERR_ARG, "run '%s' is ambiguous: %s; give more of the id", ref, dspy_str_cstr(&matches));
    } else {
        dspy_str where = DSPY_STR_INIT;
        for (size_t i = 0; i < n_roots; i++) dspy_str_appendf(&where, "%s%s", i ? ", " : "", roots[i]);
        st = dspy_fail(DSPY_ERR_NOTFOUND, "run '%s': not a run directory, and no run id starts with it under %s",
                       ref, dspy_str_cstr(&where));
        dspy_str_free(&where);
    }
    dspy_str_free(&matches);
    dspy_json_decref(all);
    return st;
}
