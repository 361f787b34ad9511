/* mlflow_push.c — sending a run directory to an MLflow tracking server.
 *
 * Does: the MLflow side of a run's lifecycle. At dspy_run_begin: the experiment (by name, created
 * when absent) and CreateRun with the run's tags, so that the MLflow UI shows the run as RUNNING
 * while the command works. At dspy_run_finish or `dspy runs push`: LogBatch of every param, tag
 * and metric point of the run directory (metrics.jsonl), the artifacts (run.json's list), then
 * UpdateRun with the final status and end time. run.json's "mlflow" object records where the run
 * went and how far it got: "status" is "running" (created), "sending" (data being logged; a push
 * that stops here is never resumed into the same MLflow run, which would duplicate metric
 * points: the next push creates a new one), "synced" or "failed" (with "error").
 * Does not: retry beyond the client's retries, or delete an MLflow run left half-logged.
 */
#include <stdlib.h>
#include <string.h>

#include "dspy/log.h"
#include "track/mlflow.h"
#include "track/track_priv.h"

static dspy_json *mlflow_record(const char *uri, const char *experiment, const char *eid, const char *rid,
                                const char *au, const char *status, bool logged, const char *error) {
    dspy_json *o = dspy_json_object();
    char *pub = uri ? dspy_track_uri_public(uri) : NULL;
    dspy_status st = o && (!uri || pub) ? DSPY_OK : DSPY_ERR_NOMEM;
    if (!st && pub) st = dspy_json_set_str(o, "tracking_uri", pub);
    if (!st && experiment) st = dspy_json_set_str(o, "experiment", experiment);
    if (!st && eid) st = dspy_json_set_str(o, "experiment_id", eid);
    if (!st && rid) st = dspy_json_set_str(o, "run_id", rid);
    if (!st && au) st = dspy_json_set_str(o, "artifact_uri", au);
    if (!st) st = dspy_json_set_str(o, "status", status);
    if (!st) st = dspy_json_set(o, "logged", dspy_json_bool(logged));
    if (!st && error) st = dspy_json_set_str(o, "error", error);
    free(pub);
    if (st) {
        dspy_json_decref(o);
        return NULL;
    }
    return o;
}

void dspy_track_mlflow_begin(dspy_run *r) {
    dspy_mlflow_params p = dspy_mlflow_params_default();
    p.tracking_uri = r->mlflow_uri;
    p.experiment = r->mlflow_experiment;
    track_mlflow *m = NULL;
    char *eid = NULL, *rid = NULL, *au = NULL;
    dspy_status st = dspy_track_mlflow_open(&p, &m);
    if (!st) st = dspy_track_mlflow_experiment(m, r->mlflow_experiment, &eid);
    if (!st) st = dspy_track_mlflow_create_run(m, eid, r->name, r->start_ms, r->tags, &rid, &au);
    dspy_json_decref(r->mlflow);
    if (st) {
        dspy_log(DSPY_LOG_WARN, "%s", dspy_errmsg());
        dspy_log(DSPY_LOG_WARN, "MLflow: the run goes on without it for now; it is sent at the end");
        r->mlflow = mlflow_record(r->mlflow_uri, r->mlflow_experiment, eid, NULL, NULL, "failed", false, dspy_errmsg());
    } else {
        r->mlflow = mlflow_record(r->mlflow_uri, r->mlflow_experiment, eid, rid, au, "running", false, NULL);
        free(r->mlflow_run_id);
        r->mlflow_run_id = strdup(rid);
    }
    free(eid);
    free(rid);
    free(au);
    dspy_track_mlflow_free(m);
}

/* MLflow's RunStatus for a manifest status (NULL: leave the MLflow run RUNNING). */
static const char *final_status(const dspy_json *manifest, bool alive) {
    const char *s = dspy_json_str_or(manifest, "status", "");
    if (strcmp(s, "FINISHED") == 0 || strcmp(s, "FAILED") == 0) return s;
    return alive ? NULL : "KILLED";
}

static dspy_status save_record(const char *dir, dspy_json *manifest, dspy_json *record) {
    if (!record) return dspy_fail(DSPY_ERR_NOMEM, "out of memory");
    dspy_status st = dspy_json_set(manifest, "mlflow", record);
    if (!st) st = dspy_track_save_json(dir, TRACK_MANIFEST, manifest);
    return st;
}

dspy_status dspy_run_push_mlflow(const char *dir, const dspy_mlflow_params *p, char **mlflow_run_id) {
    if (mlflow_run_id) *mlflow_run_id = NULL;
    dspy_mlflow_params d = p ? *p : dspy_mlflow_params_default();
    dspy_json *man = NULL, *loaded = NULL, *metrics = NULL;
    track_mlflow *m = NULL;
    char *eid = NULL, *rid = NULL, *au = NULL, *err = NULL, *uri = NULL, *exp = NULL;
    dspy_status st = dspy_track_load_json(dir, TRACK_MANIFEST, &man);
    if (st == DSPY_ERR_NOTFOUND) {
        st = dspy_fail(st, "%s: no run.json; only runs recorded by dspy_run_begin (dspy compile, finetune, eval) "
                       "can be sent to MLflow", dir);
        goto fail;
    }
    if (st || (st = dspy_run_load(dir, &loaded)) || (st = dspy_run_metrics(dir, &metrics))) goto fail;
    const dspy_json *prev = dspy_json_get(man, "mlflow");
    const char *env_uri = getenv("MLFLOW_TRACKING_URI"), *env_exp = getenv("MLFLOW_EXPERIMENT_NAME");
    /* copies: the strings of `prev` go away when run.json's record is replaced below */
    uri = strdup(d.tracking_uri && *d.tracking_uri ? d.tracking_uri
                 : env_uri && *env_uri ? env_uri : dspy_json_str_or(prev, "tracking_uri", ""));
    exp = strdup(d.experiment && *d.experiment ? d.experiment
                 : env_exp && *env_exp ? env_exp : dspy_json_str_or(prev, "experiment", "dspy"));
    if (!uri || !exp) {
        st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        goto fail;
    }
    d.tracking_uri = *uri ? uri : NULL;
    d.experiment = exp;
    if ((st = dspy_track_mlflow_open(&d, &m))) goto fail;
    const char *prid = dspy_json_str_or(prev, "run_id", NULL);
    bool reuse = prid && !dspy_json_bool_or(prev, "logged", true) &&
                 strcmp(dspy_json_str_or(prev, "status", ""), "running") == 0 &&
                 strcmp(dspy_json_str_or(prev, "tracking_uri", ""), dspy_track_mlflow_uri(m)) == 0 &&
                 strcmp(dspy_json_str_or(prev, "experiment", ""), d.experiment) == 0;
    if (reuse) {
        eid = strdup(dspy_json_str_or(prev, "experiment_id", ""));
        rid = strdup(prid);
        au = strdup(dspy_json_str_or(prev, "artifact_uri", ""));
        if (!eid || !rid || !au) {
            st = dspy_fail(DSPY_ERR_NOMEM, "out of memory");
            goto fail;
        }
    } else if ((st = dspy_track_mlflow_experiment(m, d.experiment, &eid)) ||
               (st = dspy_track_mlflow_create_run(m, eid, dspy_json_str_or(man, "name", NULL),
                                             dspy_json_int_or(man, "start_time", dspy_track_now_ms()),
                                             dspy_json_get(man, "tags"), &rid, &au))) {
        goto fail;
    }
    if ((st = save_record(dir, man, mlflow_record(d.tracking_uri, d.experiment, eid, rid, au, "sending", true, NULL))))
        goto fail;
    if ((st = dspy_track_mlflow_log_batch(m, rid, metrics, dspy_json_get(man, "params"), dspy_json_get(man, "tags"))))
        goto fail;
    const dspy_json *arts = dspy_json_get(man, "artifacts");
    for (size_t i = 0; i < dspy_json_size(arts); i++) {
        const char *rel = dspy_json_str(dspy_json_at(arts, i));
        char *local = rel ? dspy_track_join(dir, rel) : NULL;
        if (!rel || !dspy_track_is_file(local)) {
            free(local);
            continue;
        }
        st = local ? dspy_track_mlflow_upload(m, au, rel, local) : dspy_fail(DSPY_ERR_NOMEM, "out of memory");
        free(local);
        if (st == DSPY_ERR_ARG) {
            /* a store this client cannot write: the run's data is in MLflow, its files stay here */
            dspy_log(DSPY_LOG_WARN, "%s; the artifacts stay in %s", dspy_errmsg(), dir);
            st = DSPY_OK;
            break;
        }
        if (st) goto fail;
    }
    const char *fs = final_status(man, dspy_json_bool_or(loaded, "alive", false));
    int64_t end = dspy_json_int_or(man, "end_time", 0);
    if (fs && (st = dspy_track_mlflow_update_run(m, rid, fs, end > 0 ? end : dspy_track_now_ms()))) goto fail;
    if ((st = save_record(dir, man, mlflow_record(d.tracking_uri, d.experiment, eid, rid, au, "synced", true, NULL))))
        goto fail;
    if (mlflow_run_id) {
        *mlflow_run_id = rid;
        rid = NULL;
    }
fail:
    if (st && man && d.tracking_uri) {
        /* keep the reason in run.json, then give the original message back to the caller */
        err = strdup(dspy_errmsg());
        if (err && save_record(dir, man, mlflow_record(d.tracking_uri, d.experiment, eid, rid, au, "failed",
                                                       rid != NULL, err)) == DSPY_OK)
            dspy_fail(st, "%s", err);
    }
    free(err);
    free(uri);
    free(exp);
    free(eid);
    free(rid);
    free(au);
    dspy_track_mlflow_free(m);
    dspy_json_decref(metrics);
    dspy_json_decref(loaded);
    dspy_json_decref(man);
    return st;
}
