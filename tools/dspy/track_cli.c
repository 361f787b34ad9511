/* track_cli.c — the run records of `dspy compile`, `dspy finetune` and `dspy eval` (track_cli.h).
 *
 * Does: options -> run params (secrets masked), the run directory of an eval without --out, the
 * compile-specific extras (effective train_kwargs, the fine-tuned LM's history, the baseline
 * evaluations), and the end of a run with the caller's error message preserved.
 * Does not: write any file itself; dspy/track.h does.
 */
#include "track_cli.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dspy/history.h"
#include "dspy/log.h"
#include "dspy/str.h"

static const char *opt_value(const dspy_args *a, const char *name) {
    for (int i = 0; i < a->nopts; i++)
        if (strcmp(a->opts[i].name, name) == 0) return a->value[i];
    return NULL;
}

/* A URI without its user:password. */
static void uri_public(dspy_str *out, const char *uri) {
    const char *s = strstr(uri, "://");
    const char *host = s ? s + 3 : uri, *at = strchr(host, '@'), *slash = strchr(host, '/');
    if (at && (!slash || at < slash)) {
        dspy_str_appendn(out, uri, (size_t)(host - uri));
        dspy_str_append(out, at + 1);
    } else {
        dspy_str_append(out, uri);
    }
}

/* The library's rule (options named ...-key, ...-token, ...secret..., ...password...). */
static bool secret(const char *name) {
    static const char *const words[] = {"key", "token", "secret", "password", "passwd"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++) {
        size_t w = strlen(words[i]);
        for (const char *p = name; (p = strstr(p, words[i])) != NULL; p++)
            if ((p == name || p[-1] == '-' || p[-1] == '_') && (p[w] == '\0' || p[w] == '-' || p[w] == '_')) return true;
    }
    return false;
}

static dspy_status record_options(dspy_run *run, const dspy_args *a) {
    dspy_status st = DSPY_OK;
    for (int i = 0; !st && i < a->nopts; i++) {
        const dspy_opt *o = &a->opts[i];
        dspy_str v = DSPY_STR_INIT;
        if (o->multi) {
            dspy_json *arr = dspy_json_array();
            for (int k = 0; arr && k < a->nmulti[i]; k++)
                if (dspy_json_append(arr, dspy_json_string(secret(o->name) ? "***" : a->multi[i][k]))) break;
            if (!arr || dspy_json_dump(arr, DSPY_JSON_COMPACT | DSPY_JSON_UTF8, &v)) st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
            dspy_json_decref(arr);
        } else if (!o->metavar) {
            dspy_str_append(&v, a->given[i] ? "true" : "false");
        } else if (a->value[i]) {
            if (secret(o->name)) dspy_str_append(&v, "***");
            else if (strstr(o->name, "uri")) uri_public(&v, a->value[i]);
            else dspy_str_append(&v, a->value[i]);
        } else {
            continue; /* no value and no default */
        }
        if (!st) st = dspy_str_ok(&v) ? dspy_run_set_param(run, o->name, v.ptr ? v.ptr : "")
                                      : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        dspy_str_free(&v);
    }
    return st;
}

dspy_run *cli_run_begin(const dspy_args *a, const char *kind, const char *dir, int argc, char **argv, FILE *notes) {
    dspy_str auto_dir = DSPY_STR_INIT;
    if (!dir) dir = opt_value(a, "out");
    if (!dir) {
        /* eval without --out still gets a run directory, MLflow's ./mlruns way */
        const char *root = getenv("DSPY_RUNS_DIR");
        char stamp[32], hex[5];
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
        snprintf(hex, sizeof hex, "%04x", (unsigned)getpid() & 0xffffu);
        dspy_str_appendf(&auto_dir, "%s/%s-%s-%s", root && *root ? root : "dspy-runs", kind, stamp, hex);
        dir = dspy_str_cstr(&auto_dir);
    }
    /* the recorded command line starts with the program and the subcommand */
    const char **av = calloc((size_t)argc + 2, sizeof *av);
    dspy_run *run = NULL;
    dspy_status st = av ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!st) {
        av[0] = "dspy";
        av[1] = kind;
        for (int i = 0; i < argc; i++) av[i + 2] = argv[i];
        dspy_run_params p = dspy_run_params_default();
        p.kind = kind;
        p.argc = argc + 2;
        p.argv = av;
        p.mlflow_uri = opt_value(a, "mlflow-uri") ? opt_value(a, "mlflow-uri") : opt_value(a, "mlflow_uri");
        p.notes = notes;
        st = dspy_run_begin(dir, &p, &run);
    }
    if (!st) st = record_options(run, a);
    if (!st) st = dspy_run_set_param(run, "command", kind);
    if (st) {
        dspy_log(DSPY_LOG_WARN, "this run is not recorded: %s", dspy_errmsg());
        dspy_run_free(run);
        run = NULL;
    }
    free(av);
    dspy_str_free(&auto_dir);
    return run;
}

void cli_run_end(dspy_run **run, bool ok) {
    if (!run || !*run) return;
    char *msg = strdup(dspy_errmsg());
    if (dspy_run_finish(*run, ok, ok ? NULL : msg)) dspy_log(DSPY_LOG_WARN, "run record: %s", dspy_errmsg());
    dspy_run_free(*run);
    *run = NULL;
    /* the command reports its own error after this; give it its message back */
    if (msg && *msg) dspy_fail(DSPY_ERR_STATE, "%s", msg);
    free(msg);
}

void cli_run_compile(dspy_run *run, const dspy_bootstrap_finetune_report *rep, dspy_lm *finetuned) {
    if (!run) return;
    dspy_status st = DSPY_OK;
    for (size_t i = 0; !st && rep && i < rep->n_runs; i++) {
        dspy_json *kw = NULL;
        const char *text = rep->runs[i].train_kwargs;
        if (text && !(st = dspy_json_parse(text, strlen(text), "train_kwargs", &kw)))
            st = dspy_run_set_params_json(run, "train_kwargs.", kw);
        dspy_json_decref(kw);
    }
    if (!st && finetuned) st = dspy_run_save_history(run, "history.jsonl", dspy_lm_history(finetuned));
    if (st) dspy_log(DSPY_LOG_WARN, "run record: %s", dspy_errmsg());
}

void cli_run_baseline(dspy_run *run, const char *name, const dspy_eval_result *res, dspy_module *program) {
    if (!run || !res) return;
    dspy_lm *lm = NULL;
    dspy_str dir = DSPY_STR_INIT, js = DSPY_STR_INIT, cs = DSPY_STR_INIT, hist = DSPY_STR_INIT;
    dspy_str_appendf(&dir, "%s/baselines/%s", dspy_run_dir(run), name);
    dspy_str_appendf(&js, "%s/results.json", dspy_str_cstr(&dir));
    dspy_str_appendf(&cs, "%s/results.csv", dspy_str_cstr(&dir));
    dspy_str_appendf(&hist, "baselines/%s/history.jsonl", name);
    dspy_status st = DSPY_OK;
    if (!dspy_str_ok(&dir) || !dspy_str_ok(&js) || !dspy_str_ok(&cs) || !dspy_str_ok(&hist))
        st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    if (!st) st = dspy_mkdir_p(dir.ptr);
    if (!st) st = dspy_eval_result_save_json(res, js.ptr);
    if (!st) st = dspy_eval_result_save_csv(res, cs.ptr);
    if (!st && program) st = dspy_module_get_lm(program, &lm);
    if (!st && lm) st = dspy_run_save_history(run, hist.ptr, dspy_lm_history(lm));
    if (st) dspy_log(DSPY_LOG_WARN, "run record: baseline %s: %s", name, dspy_errmsg());
    dspy_str_free(&dir);
    dspy_str_free(&js);
    dspy_str_free(&cs);
    dspy_str_free(&hist);
}

void cli_run_eval(dspy_run *run, const dspy_eval_result *res, dspy_module *program) {
    if (!run || !res) return;
    dspy_str js = DSPY_STR_INIT, cs = DSPY_STR_INIT;
    dspy_str_appendf(&js, "%s/results.json", dspy_run_dir(run));
    dspy_str_appendf(&cs, "%s/results.csv", dspy_run_dir(run));
    dspy_lm *lm = NULL;
    dspy_status st = dspy_str_ok(&js) && dspy_str_ok(&cs) ? DSPY_OK : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    FILE *f = st ? NULL : fopen(js.ptr, "rb");
    if (f) fclose(f);
    else if (!st && !(st = dspy_eval_result_save_json(res, js.ptr))) st = dspy_eval_result_save_csv(res, cs.ptr);
    if (!st) st = dspy_run_log_metric(run, "eval_score", dspy_eval_result_score(res), 0);
    if (!st) st = dspy_run_log_metric(run, "eval_examples", (double)dspy_eval_result_len(res), 0);
    if (!st) st = dspy_run_log_metric(run, "eval_failed", (double)dspy_eval_result_n_failed(res), 0);
    if (!st) st = dspy_module_get_lm(program, &lm);
    if (!st && lm) st = dspy_run_save_history(run, "history.jsonl", dspy_lm_history(lm));
    if (st) dspy_log(DSPY_LOG_WARN, "run record: %s", dspy_errmsg());
    dspy_str_free(&js);
    dspy_str_free(&cs);
}
