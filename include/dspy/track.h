/* dspy/track.h — experiment tracking: run directories, metrics logs, MLflow, HTML reports.
 *
 * A *run* is one `dspy compile`, `dspy finetune` or `dspy eval` (or any program that calls
 * dspy_run_begin). Its record lives in a run directory (the command's output directory), in one
 * documented layout (docs/tracking.md):
 *
 *   run.json        the manifest: {"format": "dspy.run/1", "id" (32 hex digits), "name", "kind",
 *                   "status" ("RUNNING", "FINISHED", "FAILED"), "start_time"/"end_time" (Unix ms),
 *                   "pid", "host", "command" (argv, secrets masked), "params" {name: string},
 *                   "tags" {name: string}, "metrics" {name: number} (final values), "artifacts"
 *                   [relative paths], "env" {dspy_version, os, host, cores, backends, user},
 *                   "error" (FAILED), "mlflow" {tracking_uri, experiment_id, run_id, status, error}}
 *   metrics.jsonl   every metric point: {"key", "value", "step", "timestamp"} one per line, in
 *                   the order logged (training curves: loss, learning_rate, grad_norm,
 *                   tokens_per_s, epoch per optimizer step; final values at step 0)
 *   history.jsonl   the LM calls of the evaluation (dspy/history.h entries), for the report's
 *                   inspect_history view of failed examples
 *   report.html     the self-contained HTML report (dspy_report_write)
 * plus what the command itself writes there and the run collects at dspy_run_finish:
 *   report.json (compile's numbers), program.json, results.json / results.csv (Evaluate rows),
 *   train.jsonl (the trainer's per-step log; compile copies it from the fine-tuning directory),
 *   finetune_data.jsonl (compile: a copy of the chat JSONL the student was trained on),
 *   baselines/<name>/results.json and history.jsonl (compile --baselines: the teacher and the
 *   untrained student on the same devset).
 *
 * MLflow (the REST API of MLflow's mlflow/protos/service.proto, field for field): when a
 * tracking URI is given (or MLFLOW_TRACKING_URI is set), dspy_run_begin finds or creates the
 * experiment and creates an MLflow run (status RUNNING); dspy_run_finish sends params, metrics
 * with their steps and timestamps, and tags with runs/log-batch, uploads the artifacts through
 * the tracking server's proxied artifact store (PUT /api/2.0/mlflow-artifacts/artifacts/...)
 * and sets the final status with runs/update. Requests that fail with a connection error, a
 * timeout, HTTP 429 or 5xx are retried with exponential backoff; a tracking server that stays
 * unreachable never fails the run: a warning is logged, the run directory keeps everything
 * (run.json records "mlflow": {"status": "failed", "error": ...}) and dspy_run_push_mlflow (CLI:
 * `dspy runs push DIR`) sends it later. Environment (MLflow's names): MLFLOW_TRACKING_URI,
 * MLFLOW_EXPERIMENT_NAME, MLFLOW_TRACKING_TOKEN (Bearer) or MLFLOW_TRACKING_USERNAME/PASSWORD
 * (Basic), MLFLOW_HTTP_REQUEST_MAX_RETRIES (default 3), MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR
 * (seconds, default 1: waits 1, 2, 4 s), MLFLOW_HTTP_REQUEST_TIMEOUT (seconds, default 30).
 * A tracking URI that names a folder (file:..., /..., ./...) gets the run written there in
 * MLflow's file-store layout at the run's end instead (dspy_run_export_mlflow).
 *
 * Thread safety: a dspy_run is used from one thread at a time. The reading functions share no
 * state and may run concurrently.
 */
#ifndef DSPY_TRACK_H
#define DSPY_TRACK_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dspy/history.h"
#include "dspy/json.h"
#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- writing a run ----------------------------------------------------------------------- */

typedef struct dspy_run dspy_run;

typedef struct dspy_run_params {
    const char *kind;              /* "compile", "finetune", "eval", ... (required) */
    const char *name;              /* run name; NULL: the run directory's base name */
    int argc;                      /* the command line to record (argv[0] first); secrets */
    const char *const *argv;       /*   (options named *key*, *token*, *secret*, *password*) masked */
    const char *mlflow_uri;        /* NULL: $MLFLOW_TRACKING_URI; NULL/empty both: no MLflow */
    const char *mlflow_experiment; /* NULL: $MLFLOW_EXPERIMENT_NAME, else "dspy" */
    FILE *notes;                   /* one-line notes of a run that finished (its directory, the
                                      report's path, the MLflow run), or NULL */
} dspy_run_params;

DSPY_API dspy_run_params dspy_run_params_default(void);

/* Starts a run in `dir` (created if needed): a new id, run.json with status RUNNING, an empty
 * metrics.jsonl, the environment; with MLflow configured, the experiment and an MLflow run
 * (failures there are warnings, never errors). Errors: DSPY_ERR_ARG (no kind or dir),
 * DSPY_ERR_IO (the directory or run.json cannot be written), DSPY_ERR_NOMEM. */
DSPY_API dspy_status dspy_run_begin(const char *dir, const dspy_run_params *p, dspy_run **out);

/* Records a parameter (string value; a later value for the same key replaces the earlier one).
 * Keys are 1-250 bytes of [A-Za-z0-9_.-/ ] (MLflow's rule); DSPY_ERR_ARG otherwise. */
DSPY_API dspy_status dspy_run_set_param(dspy_run *r, const char *key, const char *value);
/* Records every member of a JSON object as a parameter "<prefix><key>" (strings as they are,
 * other values as compact JSON), e.g. the effective train_kwargs. DSPY_ERR_ARG if not an object. */
DSPY_API dspy_status dspy_run_set_params_json(dspy_run *r, const char *prefix, const dspy_json *obj);
DSPY_API dspy_status dspy_run_set_tag(dspy_run *r, const char *key, const char *value);
/* Appends a metric point to metrics.jsonl now (timestamp: now) and keeps it as the final value
 * of `key`. Non-finite values are logged as they are (JSON null would lose them: NaN and
 * +-Infinity are written as the strings "NaN", "Infinity", "-Infinity"). */
DSPY_API dspy_status dspy_run_log_metric(dspy_run *r, const char *key, double value, int64_t step);
/* Writes the entries of `h` (oldest first) as JSON lines to <dir>/<rel_path> (directories made
 * as needed), e.g. "history.jsonl" or "baselines/teacher/history.jsonl". */
DSPY_API dspy_status dspy_run_save_history(dspy_run *r, const char *rel_path, dspy_history *h);

/* Ends the run: collects what the run directory holds (report.json numbers, results.json
 * scores, train.jsonl curves, and for compile copies of the trainer's train.jsonl and the
 * fine-tuning JSONL named in report.json), writes metrics.jsonl, run.json (FINISHED when ok,
 * else FAILED with `error`), and report.html, then sends everything to MLflow when configured.
 * Idempotent: a second call does nothing. MLflow failures are warnings; errors here are about
 * the run directory itself (DSPY_ERR_IO, DSPY_ERR_NOMEM). */
DSPY_API dspy_status dspy_run_finish(dspy_run *r, bool ok, const char *error);

DSPY_API const char *dspy_run_dir(const dspy_run *r);
DSPY_API const char *dspy_run_id(const dspy_run *r);
/* The report path written by dspy_run_finish (NULL before, or when it could not be written). */
DSPY_API const char *dspy_run_report_path(const dspy_run *r);
/* The MLflow run id, or NULL when MLflow is not configured or not reached. */
DSPY_API const char *dspy_run_mlflow_run_id(const dspy_run *r);
/* Frees the run; an unfinished run is left as it is on disk (status RUNNING). NULL-safe. */
DSPY_API void dspy_run_free(dspy_run *r);

/* ---- reading runs ------------------------------------------------------------------------ */

/* The manifest of the run in `dir` as a new JSON object: run.json, or for a directory written
 * before run.json existed (report.json, train.jsonl or results.json only) a manifest built from
 * those files (id = "" then). Adds "dir" (absolute) and "alive" (false when status is RUNNING
 * but the recorded process on this host is gone: shown as DIED by `dspy runs list`).
 * Errors: DSPY_ERR_NOTFOUND (no run there), DSPY_ERR_FORMAT (run.json unreadable). */
DSPY_API dspy_status dspy_run_load(const char *dir, dspy_json **out);

/* Every metric point of the run in `dir` (metrics.jsonl; for an older directory, its
 * train.jsonl) as a JSON array of {"key", "value", "step", "timestamp"}. A missing log gives []. */
DSPY_API dspy_status dspy_run_metrics(const char *dir, dspy_json **out);

/* Finds runs under each root (the root itself and directories up to `max_depth` levels below,
 * not descending into a run's own subdirectories, checkpoints, caches or model folders) and
 * returns their manifests (dspy_run_load) as a JSON array sorted by start_time, newest first. */
DSPY_API dspy_status dspy_runs_find(const char *const *roots, size_t n_roots, int max_depth, dspy_json **out);

/* Resolves a run reference: a run directory, or a run id or unique id prefix (>= 4 characters)
 * among the runs dspy_runs_find sees under `roots`. *dir_out is malloc'd. Errors:
 * DSPY_ERR_NOTFOUND, DSPY_ERR_ARG (an ambiguous prefix: the message lists the matches). */
DSPY_API dspy_status dspy_run_resolve(const char *ref, const char *const *roots, size_t n_roots, char **dir_out);

/* ---- MLflow ------------------------------------------------------------------------------ */

typedef struct dspy_mlflow_params {
    const char *tracking_uri;  /* http(s)://host[:port][/prefix]; NULL: $MLFLOW_TRACKING_URI */
    const char *experiment;    /* NULL: $MLFLOW_EXPERIMENT_NAME, else "dspy" */
    int max_retries;           /* < 0: $MLFLOW_HTTP_REQUEST_MAX_RETRIES or 3 */
    double backoff_factor_s;   /* < 0: $MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR or 1 (1, 2, 4, ... s) */
    double timeout_s;          /* <= 0: $MLFLOW_HTTP_REQUEST_TIMEOUT or 30 */
} dspy_mlflow_params;

DSPY_API dspy_mlflow_params dspy_mlflow_params_default(void);

/* Sends the finished run in `dir` to an MLflow tracking server: experiment (get-by-name or
 * create), the run (reusing the MLflow run dspy_run_begin created when nothing was logged to it
 * yet, else a new one), params, metrics and tags (log-batch, within MLflow's limits of 1000
 * metrics, 100 params and 100 tags per request), the artifacts (proxied artifact store), the
 * final status; records the outcome in run.json's "mlflow". *mlflow_run_id (may be NULL) gets
 * the MLflow run id (malloc'd). Errors: DSPY_ERR_ARG (no URI, an unsupported scheme),
 * DSPY_ERR_REMOTE / DSPY_ERR_TIMEOUT (the server, after retries; the message has MLflow's
 * error_code and message), DSPY_ERR_NOTFOUND (no run in dir). */
DSPY_API dspy_status dspy_run_push_mlflow(const char *dir, const dspy_mlflow_params *p, char **mlflow_run_id);

/* Writes the run in `dir` into an MLflow file store at `store_dir` (the layout of MLflow's
 * mlflow/store/tracking/file_store.py that `mlflow ui --backend-store-uri DIR` reads): the
 * experiment named `experiment` (NULL: "dspy"; created with a new numeric id when absent, the
 * store itself with its "Default" experiment 0 and .trash when new), <exp>/<run id>/meta.yaml,
 * metrics/<key> ("<timestamp ms> <value> <step>" lines), params/<key>, tags/<key> and
 * artifacts/ (copies). Exporting a run again replaces its folder. *run_path (may be NULL) gets
 * the run's folder (malloc'd). Errors: DSPY_ERR_NOTFOUND, DSPY_ERR_IO, DSPY_ERR_FORMAT (a
 * store folder that is not MLflow's layout). */
DSPY_API dspy_status dspy_run_export_mlflow(const char *dir, const char *store_dir, const char *experiment,
                                            char **run_path);

/* ---- the HTML report --------------------------------------------------------------------- */

/* The data the report shows, as a new JSON object {"runs": [run, ...]} (the run in `dir`, then
 * `compare_dir` when not NULL). Each run: its manifest fields, "curves" {metric: [[step, value],
 * ...]}, "accuracy" [{"name", "score" (percent or null), "n"}] for the untrained student, the
 * teacher and the fine-tuned student (or the evaluated program), and "eval" (when results.json
 * exists): "field" (the output compared), "n", "correct", "failed", "per_class" [{"label", "n",
 * "correct"}] (worst accuracy first), "confusion" {"rows": gold labels, "cols": predicted labels
 * and "(no answer)", "cells": [[row, col, count], ...]} whose counts sum to n, "top_confusions",
 * and "failed_examples" [{"index", "inputs", "gold", "pred", "history"}] (the first 100; history
 * is the inspect_history text of the example's LM calls). Errors as dspy_run_load. */
DSPY_API dspy_status dspy_report_model(const char *dir, const char *compare_dir, dspy_json **out);

/* Writes the report of the run in `dir` (side by side with `compare_dir` when not NULL) to
 * `out_html`: one self-contained HTML file (inline SVG drawn by an inline script from the
 * embedded data; no network fetches). Errors as dspy_report_model, DSPY_ERR_IO. */
DSPY_API dspy_status dspy_report_write(const char *dir, const char *compare_dir, const char *out_html);

#ifdef __cplusplus
}
#endif
#endif
