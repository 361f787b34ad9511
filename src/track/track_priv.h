/* track_priv.h — helpers shared by the files of src/track (not a public API).
 *
 * Time in Unix milliseconds, JSON numbers that may be NaN or infinite (MLflow's JSON mapping
 * writes them as "NaN", "Infinity", "-Infinity"), MLflow's key rule, file copies, secret masking,
 * the run manifest's read-modify-write, and the list of files a run directory may hold.
 */
#ifndef DSPY_TRACK_PRIV_H
#define DSPY_TRACK_PRIV_H

#include <stdbool.h>
#include <stdint.h>

#include "dspy/json.h"
#include "dspy/status.h"
#include "dspy/str.h"
#include "dspy/track.h"

#define TRACK_FORMAT "dspy.run/1"
#define TRACK_MANIFEST "run.json"
#define TRACK_METRICS "metrics.jsonl"
#define TRACK_HISTORY "history.jsonl"
#define TRACK_REPORT "report.html"

/* Unix time in milliseconds. */
int64_t dspy_track_now_ms(void);

/* A JSON number for x; non-finite values become the strings "NaN", "Infinity", "-Infinity".
 * NULL on OOM. */
dspy_json *dspy_track_number(double x);
/* Reads a number written by dspy_track_number (or any JSON number); false when v is neither. */
bool dspy_track_number_of(const dspy_json *v, double *out);

/* MLflow's rule for metric, param and tag keys (mlflow/utils/validation.py): 1..250 bytes of
 * letters, digits, '_', '-', '.', ' ', '/', no ".." path component and no leading '/'. */
bool dspy_track_key_ok(const char *key);

/* Whether an option name holds a secret (contains key, token, secret or password). */
bool dspy_track_secret_name(const char *name);

/* Copies a regular file (parent directories of dst created, the modification time kept, as
 * `cp -p` does). DSPY_ERR_IO/NOTFOUND. */
dspy_status dspy_track_copy_file(const char *src, const char *dst);
/* Whether `path` is a regular file / a directory. */
bool dspy_track_is_file(const char *path);
bool dspy_track_is_dir(const char *path);

/* "<dir>/<rel>" (malloc'd) or NULL on OOM. */
char *dspy_track_join(const char *dir, const char *rel);
/* An absolute, '/'-trimmed copy of a path (malloc'd; not resolved through symlinks). */
char *dspy_track_absolute(const char *path);

/* Reads <dir>/<rel> as JSON. DSPY_ERR_NOTFOUND when absent. */
dspy_status dspy_track_load_json(const char *dir, const char *rel, dspy_json **out);
/* Writes `v` as indented JSON to <dir>/<rel> (atomically, as dspy_write_file does). */
dspy_status dspy_track_save_json(const char *dir, const char *rel, const dspy_json *v);

/* The artifacts present in `dir` as a JSON array of relative paths (new reference). */
dspy_json *dspy_track_list_artifacts(const char *dir);

/* The userinfo-free form of a URI ("http://user:pw@host/x" -> "http://host/x"), malloc'd. */
char *dspy_track_uri_public(const char *uri);

/* The points of a trainer log (train.jsonl: {"step", "epoch", "loss", "grad_norm", "lr",
 * "tokens_per_s", "elapsed", ...} per line) as metric points appended to `out` (an array):
 * keys loss, learning_rate, grad_norm, tokens_per_s, epoch; timestamps from the file's
 * modification time minus each line's distance in "elapsed" to the last line. */
dspy_status dspy_track_train_log_points(const char *path, dspy_json *out);

/* Appends {"key", "value", "step", "timestamp"} to the array `out`. */
dspy_status dspy_track_point_append(dspy_json *out, const char *key, double value, int64_t step, int64_t ts);

/* Random lowercase hex (2 * n_bytes digits) into buf (2 * n_bytes + 1 bytes). */
dspy_status dspy_track_random_hex(char *buf, size_t n_bytes);

/* ---- the run being written (run.c, collect.c, mlflow_push.c) ---------------------------------- */

struct dspy_run {
    char *dir, *id, *name, *kind;
    int64_t start_ms, end_ms;
    dspy_json *params, *tags, *metrics, *command, *env; /* objects; command an array */
    dspy_json *mlflow;                                  /* run.json's "mlflow" object or NULL */
    char *mlflow_uri, *mlflow_experiment;               /* configured, or NULL */
    char *report_path, *mlflow_run_id, *status, *error;
    FILE *notes;
    bool finished;
};

/* Appends points (an array) to <dir>/metrics.jsonl. */
dspy_status dspy_track_append_points(const char *dir, const dspy_json *points);
/* Gathers the final metrics, curves and copies described in dspy/track.h (dspy_run_finish):
 * points go to metrics.jsonl, final values to r->metrics, informative strings to r->tags. */
dspy_status dspy_track_collect(dspy_run *r);
/* The score of Evaluate's saved rows (results.json): the mean of each row's last member (the
 * metric column), in percent (-1 without rows), and the row count. DSPY_ERR_FORMAT: not a list. */
dspy_status dspy_track_results_score(const dspy_json *rows, double *score, size_t *n);
/* Starts the MLflow run of `r` (experiment + CreateRun) and records it in r->mlflow; a failure
 * is logged as a warning and recorded, never returned. */
void dspy_track_mlflow_begin(dspy_run *r);

#endif
