/* mlflow.h — the MLflow tracking REST client used by src/track (not a public API).
 *
 * Each call is one RPC of MLflow's mlflow/protos/service.proto (MlflowService, REST 2.0), with
 * the JSON field names and types of its request message:
 *   GetExperimentByName  GET  /api/2.0/mlflow/experiments/get-by-name?experiment_name=...
 *   CreateExperiment     POST /api/2.0/mlflow/experiments/create {name}
 *   CreateRun            POST /api/2.0/mlflow/runs/create {experiment_id, run_name, start_time, tags}
 *   LogBatch             POST /api/2.0/mlflow/runs/log-batch {run_id, metrics, params, tags}
 *   UpdateRun            POST /api/2.0/mlflow/runs/update {run_id, status, end_time}
 * and the proxied artifact upload of MLflow's HttpArtifactRepository (mlflow-artifacts:/ URIs):
 *   PUT /api/2.0/mlflow-artifacts/artifacts/<path> with the file as the body.
 * int64 fields are sent as JSON numbers (as MLflow's own client does), doubles as numbers or
 * "NaN"/"Infinity"/"-Infinity", RunStatus by name. Retries: connection errors, timeouts, HTTP
 * 429 and 5xx, up to max_retries more attempts, waiting backoff_factor * 2^i seconds.
 * Errors name the RPC, the HTTP status and MLflow's {"error_code", "message"}.
 */
#ifndef DSPY_TRACK_MLFLOW_H
#define DSPY_TRACK_MLFLOW_H

#include <stdint.h>

#include "dspy/json.h"
#include "dspy/status.h"
#include "dspy/track.h"

typedef struct track_mlflow track_mlflow;

/* A client for p->tracking_uri (http or https; env defaults as dspy/track.h says). No request
 * is sent. DSPY_ERR_ARG: no URI or another scheme. */
dspy_status dspy_track_mlflow_open(const dspy_mlflow_params *p, track_mlflow **out);
void dspy_track_mlflow_free(track_mlflow *m);
/* The tracking URI without user:password. */
const char *dspy_track_mlflow_uri(const track_mlflow *m);
/* Requests sent so far (retries included). */
int dspy_track_mlflow_requests(const track_mlflow *m);

/* The id of the active experiment `name`, created when absent (*id malloc'd). */
dspy_status dspy_track_mlflow_experiment(track_mlflow *m, const char *name, char **id);
/* Creates a run (status RUNNING); `tags` is a JSON object of strings (may be NULL). */
dspy_status dspy_track_mlflow_create_run(track_mlflow *m, const char *experiment_id, const char *run_name,
                                    int64_t start_ms, const dspy_json *tags, char **run_id, char **artifact_uri);
/* Logs metric points (array of {key, value, step, timestamp}), params and tags (objects of
 * strings), split into requests within MLflow's limits. Values longer than MLflow accepts
 * (params 6000 bytes, tags 5000) are cut, with a warning. */
dspy_status dspy_track_mlflow_log_batch(track_mlflow *m, const char *run_id, const dspy_json *metrics,
                                   const dspy_json *params, const dspy_json *tags);
/* Sets the run's status ("FINISHED", "FAILED", "KILLED") and end time. */
dspy_status dspy_track_mlflow_update_run(track_mlflow *m, const char *run_id, const char *status, int64_t end_ms);
/* Uploads a local file as <artifact_uri>/<rel>. artifact_uri mlflow-artifacts:/... goes through
 * the tracking server, http(s):// is used as it is, file:// is copied to when that path is
 * local; DSPY_ERR_ARG for other stores (s3:, gs:, ...), which need their own clients. */
dspy_status dspy_track_mlflow_upload(track_mlflow *m, const char *artifact_uri, const char *rel, const char *local_path);

#endif
