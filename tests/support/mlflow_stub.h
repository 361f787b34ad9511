/* mlflow_stub.h — an MLflow tracking server for tests, on 127.0.0.1 (tests/support/http_stub.h).
 *
 * It keeps experiments, runs, params, metrics, tags and artifacts in memory and answers the
 * REST API of MLflow's mlflow/protos/service.proto for the RPCs a client logs runs with
 * (GetExperimentByName, CreateExperiment, GetExperiment, CreateRun, UpdateRun, GetRun, LogBatch,
 * LogMetric, LogParam, SetTag) plus the proxied artifact store (PUT and GET under
 * /api/2.0/mlflow-artifacts/artifacts/). Every request is checked against the request message of
 * service.proto as of MLflow commit 0026b08dc1b90b63efce78302b7d6df63f1eac63 (the 3.x line; these
 * messages are unchanged since MLflow 2.0): each JSON field must be a field of the message, of its
 * type under protobuf's JSON mapping (string; int32/int64 as a JSON integer or a decimal string;
 * double as a number or "NaN"/"Infinity"/"-Infinity"; enum RunStatus by name or number; nested
 * messages as objects; repeated fields as arrays), fields marked (validate_required) present, and
 * MLflow's server-side limits held (LogBatch: <= 1000 metrics, <= 100 params, <= 100 tags,
 * <= 1000 in all; keys <= 250 bytes; param values <= 6000 bytes; a param never changes value).
 * A request that breaks a rule gets HTTP 400 {"error_code": "INVALID_PARAMETER_VALUE"} and is
 * counted in mlflow_stub_violations(), with its reason kept for the test to print.
 *
 * Faults for tests: answer the next N requests with an HTTP status (e.g. 503), drop the next N
 * connections without answering, or fail every request with 500.
 *
 * Thread safety: the server handles connections on several threads; every accessor takes the
 * lock. Strings returned by accessors are copies the caller frees, or JSON the caller decrefs.
 */
#ifndef DSPY_TEST_MLFLOW_STUB_H
#define DSPY_TEST_MLFLOW_STUB_H

#include <stdbool.h>

#include "dspy/json.h"
#include "dspy/status.h"

typedef struct mlflow_stub mlflow_stub;

dspy_status mlflow_stub_start(mlflow_stub **out);
void mlflow_stub_stop(mlflow_stub *s); /* NULL-safe */
/* "http://127.0.0.1:<port>" (owned by the stub). */
const char *mlflow_stub_url(const mlflow_stub *s);

/* Adds an experiment as if created earlier; returns its id (owned by the stub). */
const char *mlflow_stub_add_experiment(mlflow_stub *s, const char *name);

/* Faults. */
void mlflow_stub_fail_next(mlflow_stub *s, int n, int http_status);
void mlflow_stub_drop_next(mlflow_stub *s, int n);
void mlflow_stub_fail_all(mlflow_stub *s, bool on);

/* Counters: requests seen (faulted ones included), per RPC name ("CreateRun", "LogBatch",
 * "artifact PUT", ...), and requests that broke service.proto's rules. */
int mlflow_stub_requests(mlflow_stub *s);
int mlflow_stub_calls(mlflow_stub *s, const char *rpc);
int mlflow_stub_violations(mlflow_stub *s);
/* The reasons of the violations, one per line (malloc'd). */
char *mlflow_stub_violation_text(mlflow_stub *s);
/* The order of the RPCs that succeeded, space-separated ("GetExperimentByName CreateRun ...";
 * malloc'd). */
char *mlflow_stub_trace(mlflow_stub *s);

/* The store, as JSON (new references):
 *   experiments: [{"experiment_id", "name"}]
 *   run(id): {"run_id", "experiment_id", "run_name", "status", "start_time", "end_time",
 *             "params": {k: v}, "tags": {k: v}, "metrics": [{"key","value","timestamp","step"}],
 *             "artifact_uri"}  (NULL when unknown); value is a number or "NaN"/"Infinity"...
 *   runs(): every run id in creation order. */
dspy_json *mlflow_stub_experiments(mlflow_stub *s);
dspy_json *mlflow_stub_run(mlflow_stub *s, const char *run_id);
dspy_json *mlflow_stub_runs(mlflow_stub *s);
/* An uploaded artifact's bytes (malloc'd, *len set) or NULL. `path` is relative to the run's
 * artifact root ("program.json", "baselines/teacher/results.json"). */
char *mlflow_stub_artifact(mlflow_stub *s, const char *run_id, const char *path, size_t *len);
/* Content-Type of that upload (malloc'd) or NULL. */
char *mlflow_stub_artifact_type(mlflow_stub *s, const char *run_id, const char *path);

#endif
