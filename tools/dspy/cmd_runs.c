/* cmd_runs.c — `dspy runs`: list, compare, export and push the recorded runs (dspy/track.h).
 *
 *   dspy runs list [DIR ...]                 runs under DIR (default: . and $DSPY_RUNS_DIR), newest first
 *   dspy runs show RUN                       one run: status, params, final metrics, artifacts
 *   dspy runs compare A B                    params that differ and final metrics side by side
 *   dspy runs export RUN ... --mlflow DIR    MLflow's file-store layout (mlflow ui --backend-store-uri DIR)
 *   dspy runs push RUN [--mlflow-uri URI]    send a run to an MLflow tracking server (again)
 * A RUN is a run directory or a run id prefix (4+ characters) of a run found under --dir.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "dspy/track.h"

#define MAX_ROOTS (DSPY_ARGS_MAX_MULTI + 2)

static size_t roots_of(const dspy_args *a, const char **roots) {
    size_t n = 0;
    for (int i = 0; i < dspy_args_count(a, "dir"); i++) roots[n++] = dspy_args_at(a, "dir", i);
    if (n == 0) roots[n++] = ".";
    const char *env = getenv("DSPY_RUNS_DIR");
    roots[n++] = env && *env ? env : "dspy-runs";
    return n;
}

static void fmt_time(int64_t ms, char *buf, size_t cap) {
    if (ms <= 0) {
        snprintf(buf, cap, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%d %H:%M:%S", &tm);
}

static void fmt_duration(const dspy_json *m, char *buf, size_t cap) {
    int64_t s = dspy_json_int_or(m, "start_time", 0), e = dspy_json_int_or(m, "end_time", 0);
    if (s <= 0 || e <= 0) snprintf(buf, cap, "-");
    else if (e - s < 120000) snprintf(buf, cap, "%.1fs", (double)(e - s) / 1000.0);
    else snprintf(buf, cap, "%.1fmin", (double)(e - s) / 60000.0);
}

static const char *status_of(const dspy_json *m) {
    const char *s = dspy_json_str_or(m, "status", "?");
    return strcmp(s, "RUNNING") == 0 && !dspy_json_bool_or(m, "alive", true) ? "DIED" : s;
}

/* A metric value for display ("-" when absent). */
static void fmt_metric(const dspy_json *metrics, const char *key, char *buf, size_t cap) {
    const dspy_json *v = dspy_json_get(metrics, key);
    if (dspy_json_is_number(v)) snprintf(buf, cap, "%.6g", dspy_json_number(v));
    else if (dspy_json_str(v)) snprintf(buf, cap, "%s", dspy_json_str(v));
    else snprintf(buf, cap, "-");
}

static int runs_list(int argc, char **argv) {
    static const dspy_opt opts[] = {
        {"depth", "N", "how many folder levels below each DIR to look", false, false, "3"},
        {"json", NULL, "print the manifests as a JSON list", false, false, NULL},
        {0}};
    dspy_args a;
    int rc = dspy_args_parse_pos(&a, "runs list", "[DIR ...] [--depth N] [--json]",
                             "List the runs recorded under DIR (default: . and $DSPY_RUNS_DIR or ./dspy-runs), "
                             "newest first.", opts, 64, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    long depth = 3;
    if (!dspy_args_int(&a, "depth", &depth) || depth < 0 || depth > 16) {
        fprintf(stderr, "error: dspy runs list: --depth takes 0..16\n");
        return 2;
    }
    const char *roots[MAX_ROOTS];
    size_t n = 0;
    for (int i = 0; i < a.npos; i++) roots[n++] = a.pos[i];
    if (n == 0) {
        const char *env = getenv("DSPY_RUNS_DIR");
        roots[n++] = ".";
        roots[n++] = env && *env ? env : "dspy-runs";
    }
    dspy_json *runs = NULL;
    if (dspy_runs_find(roots, n, (int)depth, &runs)) return dspy_cli_error("runs list");
    if (dspy_args_flag(&a, "json")) {
        char *text = dspy_json_dumps(runs, DSPY_JSON_UTF8 | DSPY_JSON_INDENT(2));
        printf("%s\n", text ? text : "[]");
        free(text);
    } else if (dspy_json_size(runs) == 0) {
        printf("no runs under");
        for (size_t i = 0; i < n; i++) printf(" %s", roots[i]);
        printf(" (dspy compile, finetune and eval record one in their output directory)\n");
    } else {
        printf("%-8s  %-8s  %-8s  %-19s  %8s  %7s  %-20s  %s\n", "ID", "KIND", "STATUS", "STARTED", "TIME", "SCORE",
               "NAME", "DIR");
        for (size_t i = 0; i < dspy_json_size(runs); i++) {
            const dspy_json *m = dspy_json_at(runs, i);
            char started[32], took[32], score[32];
            fmt_time(dspy_json_int_or(m, "start_time", 0), started, sizeof started);
            fmt_duration(m, took, sizeof took);
            const dspy_json *sv = dspy_json_get(dspy_json_get(m, "metrics"), "eval_score");
            if (dspy_json_is_number(sv)) snprintf(score, sizeof score, "%.1f%%", dspy_json_number(sv));
            else snprintf(score, sizeof score, "-");
            printf("%-8.8s  %-8s  %-8s  %-19s  %8s  %7s  %-20s  %s\n", *dspy_json_str_or(m, "id", "") ? dspy_json_str_or(m, "id", "") : "-",
                   dspy_json_str_or(m, "kind", "?"), status_of(m), started, took, score, dspy_json_str_or(m, "name", ""),
                   dspy_json_str_or(m, "dir", ""));
        }
    }
    dspy_json_decref(runs);
    return fflush(stdout) == 0 ? 0 : 1;
}

static dspy_status load_ref(const dspy_args *a, const char *ref, dspy_json **out) {
    const char *roots[MAX_ROOTS];
    size_t n = roots_of(a, roots);
    char *dir = NULL;
    dspy_status st = dspy_run_resolve(ref, roots, n, &dir);
    if (!st) st = dspy_run_load(dir, out);
    free(dir);
    return st;
}

static void print_object(const char *title, const dspy_json *o) {
    printf("%s:\n", title);
    if (!dspy_json_size(o)) printf("  (none)\n");
    for (void *it = dspy_json_iter(o); it; it = dspy_json_next(o, it)) {
        const dspy_json *v = dspy_json_iter_value(it);
        char *text = dspy_json_is_string(v) ? NULL : dspy_json_dumps(v, DSPY_JSON_COMPACT | DSPY_JSON_UTF8);
        printf("  %-32s %s\n", dspy_json_iter_key(it), text ? text : dspy_json_str(v) ? dspy_json_str(v) : "");
        free(text);
    }
}

static const dspy_opt k_ref_opts[] = {
    {"dir", "DIR", "where to look for run ids (repeatable; default: . and $DSPY_RUNS_DIR)", false, true, NULL},
    {"json", NULL, "print JSON", false, false, NULL},
    {0}};

static int runs_show(int argc, char **argv) {
    dspy_args a;
    int rc = dspy_args_parse_pos(&a, "runs show", "RUN [--dir DIR] [--json]",
                             "Show one run: status, times, params, final metrics, artifacts, MLflow.", k_ref_opts, 64, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (a.npos != 1) {
        fprintf(stderr, "error: dspy runs show: give one run (a directory or an id prefix)\n");
        return 2;
    }
    dspy_json *m = NULL;
    if (load_ref(&a, a.pos[0], &m)) return dspy_cli_error("runs show");
    if (dspy_args_flag(&a, "json")) {
        char *text = dspy_json_dumps(m, DSPY_JSON_UTF8 | DSPY_JSON_INDENT(2));
        printf("%s\n", text ? text : "{}");
        free(text);
    } else {
        char started[32], took[32];
        fmt_time(dspy_json_int_or(m, "start_time", 0), started, sizeof started);
        fmt_duration(m, took, sizeof took);
        printf("run %s (%s): dspy %s, %s, started %s, %s\n", dspy_json_str_or(m, "name", ""), dspy_json_str_or(m, "id", ""),
               dspy_json_str_or(m, "kind", "?"), status_of(m), started, took);
        printf("dir: %s\n", dspy_json_str_or(m, "dir", ""));
        if (dspy_json_get(m, "error")) printf("error: %s\n", dspy_json_str_or(m, "error", ""));
        print_object("params", dspy_json_get(m, "params"));
        print_object("metrics", dspy_json_get(m, "metrics"));
        print_object("mlflow", dspy_json_get(m, "mlflow"));
        const dspy_json *arts = dspy_json_get(m, "artifacts");
        printf("artifacts:");
        for (size_t i = 0; i < dspy_json_size(arts); i++) printf(" %s", dspy_json_str(dspy_json_at(arts, i)));
        printf("\n");
    }
    dspy_json_decref(m);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* The keys of two objects, each once, in a's order then b's. */
static dspy_json *union_keys(const dspy_json *a, const dspy_json *b) {
    dspy_json *keys = dspy_json_object();
    for (void *it = dspy_json_iter(a); keys && it; it = dspy_json_next(a, it)) dspy_json_set(keys, dspy_json_iter_key(it), dspy_json_null());
    for (void *it = dspy_json_iter(b); keys && it; it = dspy_json_next(b, it)) dspy_json_set(keys, dspy_json_iter_key(it), dspy_json_null());
    return keys;
}

static int runs_compare(int argc, char **argv) {
    dspy_args a;
    int rc = dspy_args_parse_pos(&a, "runs compare", "A B [--dir DIR] [--json]",
                             "Compare two runs: the params that differ and every final metric side by side, with "
                             "B - A.", k_ref_opts, 64, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (a.npos != 2) {
        fprintf(stderr, "error: dspy runs compare: give two runs (directories or id prefixes)\n");
        return 2;
    }
    dspy_json *x = NULL, *y = NULL;
    if (load_ref(&a, a.pos[0], &x) || load_ref(&a, a.pos[1], &y)) {
        dspy_json_decref(x);
        return dspy_cli_error("runs compare");
    }
    const dspy_json *px = dspy_json_get(x, "params"), *py = dspy_json_get(y, "params");
    const dspy_json *mx = dspy_json_get(x, "metrics"), *my = dspy_json_get(y, "metrics");
    dspy_json *pk = union_keys(px, py), *mk = union_keys(mx, my);
    int ret = 0;
    if (!pk || !mk) {
        fprintf(stderr, "error: dspy runs compare: out of memory\n");
        ret = 1;
    } else if (dspy_args_flag(&a, "json")) {
        dspy_json *o = dspy_json_object(), *diff = dspy_json_object(), *met = dspy_json_object();
        for (void *it = dspy_json_iter(pk); o && diff && it; it = dspy_json_next(pk, it)) {
            const char *k = dspy_json_iter_key(it);
            const char *va = dspy_json_str_or(px, k, NULL), *vb = dspy_json_str_or(py, k, NULL);
            if (va && vb && strcmp(va, vb) == 0) continue;
            dspy_json *pair = dspy_json_array();
            dspy_json_append(pair, va ? dspy_json_string(va) : dspy_json_null());
            dspy_json_append(pair, vb ? dspy_json_string(vb) : dspy_json_null());
            dspy_json_set(diff, k, pair);
        }
        for (void *it = dspy_json_iter(mk); o && met && it; it = dspy_json_next(mk, it)) {
            const char *k = dspy_json_iter_key(it);
            dspy_json *pair = dspy_json_array();
            const dspy_json *va = dspy_json_get(mx, k), *vb = dspy_json_get(my, k);
            dspy_json_append(pair, va ? dspy_json_incref((dspy_json *)va) : dspy_json_null());
            dspy_json_append(pair, vb ? dspy_json_incref((dspy_json *)vb) : dspy_json_null());
            dspy_json_set(met, k, pair);
        }
        if (o) {
            dspy_json_set(o, "a", dspy_json_incref(x));
            dspy_json_set(o, "b", dspy_json_incref(y));
            dspy_json_set(o, "params_differ", dspy_json_incref(diff));
            dspy_json_set(o, "metrics", dspy_json_incref(met));
        }
        char *text = o ? dspy_json_dumps(o, DSPY_JSON_UTF8 | DSPY_JSON_INDENT(2)) : NULL;
        if (text) printf("%s\n", text);
        else ret = 1;
        free(text);
        dspy_json_decref(o);
        dspy_json_decref(diff);
        dspy_json_decref(met);
    } else {
        char ta[32], tb[32], da[32], db[32];
        fmt_time(dspy_json_int_or(x, "start_time", 0), ta, sizeof ta);
        fmt_time(dspy_json_int_or(y, "start_time", 0), tb, sizeof tb);
        fmt_duration(x, da, sizeof da);
        fmt_duration(y, db, sizeof db);
        printf("%-32s %-28s %-28s\n", "", "A", "B");
        printf("%-32s %-28.28s %-28.28s\n", "name", dspy_json_str_or(x, "name", ""), dspy_json_str_or(y, "name", ""));
        printf("%-32s %-28.28s %-28.28s\n", "id", dspy_json_str_or(x, "id", ""), dspy_json_str_or(y, "id", ""));
        printf("%-32s %-28s %-28s\n", "kind", dspy_json_str_or(x, "kind", ""), dspy_json_str_or(y, "kind", ""));
        printf("%-32s %-28s %-28s\n", "status", status_of(x), status_of(y));
        printf("%-32s %-28s %-28s\n", "started", ta, tb);
        printf("%-32s %-28s %-28s\n", "wall time", da, db);
        printf("\nfinal metrics%-19s %-28s %-28s %s\n", "", "", "", "B - A");
        for (void *it = dspy_json_iter(mk); it; it = dspy_json_next(mk, it)) {
            const char *k = dspy_json_iter_key(it);
            char va[40], vb[40];
            fmt_metric(mx, k, va, sizeof va);
            fmt_metric(my, k, vb, sizeof vb);
            const dspy_json *ja = dspy_json_get(mx, k), *jb = dspy_json_get(my, k);
            printf("  %-30s %-28s %-28s", k, va, vb);
            if (dspy_json_is_number(ja) && dspy_json_is_number(jb))
                printf(" %+.6g", dspy_json_number(jb) - dspy_json_number(ja));
            printf("\n");
        }
        size_t same = 0, differ = 0;
        printf("\nparams that differ\n");
        for (void *it = dspy_json_iter(pk); it; it = dspy_json_next(pk, it)) {
            const char *k = dspy_json_iter_key(it);
            const char *va = dspy_json_str_or(px, k, NULL), *vb = dspy_json_str_or(py, k, NULL);
            if (va && vb && strcmp(va, vb) == 0) {
                same++;
                continue;
            }
            differ++;
            printf("  %-30s %-28s %-28s\n", k, va ? va : "(unset)", vb ? vb : "(unset)");
        }
        if (!differ) printf("  (none)\n");
        printf("(%zu params are the same)\n", same);
    }
    dspy_json_decref(pk);
    dspy_json_decref(mk);
    dspy_json_decref(x);
    dspy_json_decref(y);
    return ret ? ret : fflush(stdout) == 0 ? 0 : 1;
}

static int runs_export(int argc, char **argv) {
    static const dspy_opt opts[] = {
        {"mlflow", "DIR", "the MLflow file store to write (created when absent)", true, false, NULL},
        {"experiment", "NAME", "MLflow experiment (created when absent)", false, false, "dspy"},
        {"dir", "DIR", "where to look for run ids (repeatable)", false, true, NULL},
        {0}};
    dspy_args a;
    int rc = dspy_args_parse_pos(&a, "runs export", "RUN ... --mlflow DIR [--experiment NAME]",
                                 "Write runs in MLflow's file-store layout; view them with\n"
                                 "  mlflow ui --backend-store-uri DIR", opts, 64, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (a.npos < 1) {
        fprintf(stderr, "error: dspy runs export: give at least one run (a directory or an id prefix)\n");
        return 2;
    }
    const char *roots[MAX_ROOTS];
    size_t nr = roots_of(&a, roots);
    for (int i = 0; i < a.npos; i++) {
        char *dir = NULL, *path = NULL;
        dspy_status st = dspy_run_resolve(a.pos[i], roots, nr, &dir);
        if (!st) st = dspy_run_export_mlflow(dir, dspy_args_get(&a, "mlflow"), dspy_args_get(&a, "experiment"), &path);
        if (!st) printf("exported %s -> %s\n", dir, path);
        free(dir);
        free(path);
        if (st) return dspy_cli_error("runs export");
    }
    printf("view with: mlflow ui --backend-store-uri %s\n", dspy_args_get(&a, "mlflow"));
    return fflush(stdout) == 0 ? 0 : 1;
}

static int runs_push(int argc, char **argv) {
    static const dspy_opt opts[] = {
        {"mlflow-uri", "URI", "the tracking server (default: $MLFLOW_TRACKING_URI, else the one in run.json)", false, false, NULL},
        {"experiment", "NAME", "MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else the run's, else dspy)", false, false, NULL},
        {"dir", "DIR", "where to look for run ids (repeatable)", false, true, NULL},
        {0}};
    dspy_args a;
    int rc = dspy_args_parse_pos(&a, "runs push", "RUN ... [--mlflow-uri URI] [--experiment NAME]",
                             "Send runs to an MLflow tracking server (params, metrics with steps, tags, artifacts "
                             "through its proxied artifact store, final status), e.g. after the server was down.",
                             opts, 64, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (a.npos < 1) {
        fprintf(stderr, "error: dspy runs push: give at least one run (a directory or an id prefix)\n");
        return 2;
    }
    const char *roots[MAX_ROOTS];
    size_t nr = roots_of(&a, roots);
    dspy_mlflow_params p = dspy_mlflow_params_default();
    p.tracking_uri = dspy_args_get(&a, "mlflow-uri");
    p.experiment = dspy_args_get(&a, "experiment");
    for (int i = 0; i < a.npos; i++) {
        char *dir = NULL, *id = NULL;
        dspy_status st = dspy_run_resolve(a.pos[i], roots, nr, &dir);
        if (!st) st = dspy_run_push_mlflow(dir, &p, &id);
        if (!st) printf("pushed %s -> MLflow run %s\n", dir, id);
        free(dir);
        free(id);
        if (st) return dspy_cli_error("runs push");
    }
    return fflush(stdout) == 0 ? 0 : 1;
}

int cmd_runs(int argc, char **argv) {
    static const struct {
        const char *name;
        int (*fn)(int, char **);
        const char *about;
    } subs[] = {
        {"list", runs_list, "list the runs under folders, newest first"},
        {"show", runs_show, "show one run"},
        {"compare", runs_compare, "compare two runs: params that differ, final metrics side by side"},
        {"export", runs_export, "write runs in MLflow's file-store layout (--mlflow DIR)"},
        {"push", runs_push, "send runs to an MLflow tracking server"},
    };
    if (argc >= 1)
        for (size_t i = 0; i < sizeof subs / sizeof *subs; i++)
            if (strcmp(argv[0], subs[i].name) == 0) return subs[i].fn(argc - 1, argv + 1);
    bool help = argc >= 1 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0);
    FILE *f = help ? stdout : stderr;
    if (!help) fprintf(f, "error: dspy runs: %s\n\n", argc ? "unknown subcommand" : "which subcommand?");
    fprintf(f, "usage: dspy runs <subcommand> [options]\n\nRuns recorded by dspy compile, finetune and eval "
               "(run.json in their output directory).\n\nsubcommands:\n");
    for (size_t i = 0; i < sizeof subs / sizeof *subs; i++) fprintf(f, "  %-8s %s\n", subs[i].name, subs[i].about);
    fprintf(f, "\nRun 'dspy runs <subcommand> --help' for its options.\n");
    return help ? 0 : 2;
}
