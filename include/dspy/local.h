/* dspy/local.h — the local provider's server: launch `dspy serve` for a model directory, wait
 * until it answers, kill it.
 *
 * What it does: what DSPy's LocalProvider.launch/kill do with SGLang (dspy_behaviour.md §10.7),
 * with `dspy serve` instead: the model path is the LM name with "openai/", "local:" and
 * "huggingface/" stripped; the server is started as a child process from an argv list (no
 * shell) with its stdout and stderr appended to a log file; readiness is GET /v1/models
 * answering 200, polled until a timeout that is honoured whatever happens (refused connections
 * included, project decision §16.6; a child that exits early fails at once with the log's end).
 * Instead of binding a port, closing it and hoping it stays free, the child is started with
 * port 0 (unless a port is given) and the port is read from its "listening on" line.
 * kill: SIGTERM, wait up to a grace period, then SIGKILL.
 * What it does not: fine-tuning (see the trainer), reconnecting to a server it did not start.
 *
 * Thread safety: a dspy_local_server is used by one thread at a time. Launching from a threaded
 * program is safe (posix_spawn).
 */
#ifndef DSPY_LOCAL_H
#define DSPY_LOCAL_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_local_server dspy_local_server;

typedef struct dspy_local_params {
    const char *dspy_bin;     /* the dspy executable; NULL: /proc/self/exe when this process is
                                 `dspy`, else the DSPY_BIN environment variable */
    const char *log_dir;      /* where the log file goes (created if needed; give the run directory);
                                 NULL: $TMPDIR or /tmp, and the log is removed by dspy_local_free
                                 when the server ended cleanly */
    const char *host;         /* bind address passed to `dspy serve` (default "127.0.0.1") */
    int port;                 /* 0 (default): the server picks a free port */
    const char *api_key;      /* NULL (default): none; else given to the child in its environment
                                 (DSPY_API_KEY, not on the command line where /proc shows it) and
                                 sent as "Authorization: Bearer KEY" by the readiness check. An
                                 inherited DSPY_API_KEY is removed from the child's environment
                                 when this is NULL */
    double timeout_s;         /* readiness deadline (default 1800, DSPy's) */
    double kill_grace_s;      /* SIGTERM -> SIGKILL delay (default 10) */
    const char *const *extra_args; /* more `dspy serve` arguments (e.g. "--max-seqs", "16") */
    size_t n_extra_args;
} dspy_local_params;

DSPY_API dspy_local_params dspy_local_params_default(void);

/* Starts `dspy serve --model PATH --host HOST --port PORT [--api-key KEY] [extra args]`, waits until ready and
 * returns the handle in *out. `model` may carry DSPy's prefixes ("openai/local:/abs/out").
 * Errors (each message names the log file and quotes its last lines when there is one):
 *   DSPY_ERR_ARG      no dspy binary found (set params.dspy_bin or DSPY_BIN), empty model
 *   DSPY_ERR_IO       the log file or the process cannot be created
 *   DSPY_ERR_STATE    the server exited before it was ready
 *   DSPY_ERR_TIMEOUT  not ready within timeout_s (the process is killed)
 * *out NULL on failure. */
DSPY_API dspy_status dspy_local_launch(const char *model, const dspy_local_params *p, dspy_local_server **out);

/* "http://127.0.0.1:PORT/v1" (the host as launched; borrowed). */
DSPY_API const char *dspy_local_api_base(const dspy_local_server *s);
DSPY_API int dspy_local_port(const dspy_local_server *s);
DSPY_API pid_t dspy_local_pid(const dspy_local_server *s);
DSPY_API const char *dspy_local_log_path(const dspy_local_server *s);
/* The model path after prefix stripping (borrowed). */
DSPY_API const char *dspy_local_model_path(const dspy_local_server *s);

/* The whole log so far (malloc'd, caller frees) in *out. DSPY_ERR_IO if it cannot be read. */
DSPY_API dspy_status dspy_local_get_logs(const dspy_local_server *s, char **out);

/* SIGTERM, wait up to kill_grace_s, then SIGKILL; reaps the child. *exit_status (may be NULL)
 * gets the exit code, or 128+signal when a signal ended it. Idempotent: a second call returns
 * the same result. DSPY_ERR_IO if the child cannot be waited for. */
DSPY_API dspy_status dspy_local_kill(dspy_local_server *s, int *exit_status);

/* Kills the server if still running (as dspy_local_kill) and frees. NULL-safe. The log file is
 * kept. */
DSPY_API void dspy_local_free(dspy_local_server *s);

/* The model path DSPy's LocalProvider uses: strips "openai/", then "local:", then
 * "huggingface/" (each only at the start). Returns a pointer into `model`. */
DSPY_API const char *dspy_local_strip_model(const char *model);

#ifdef __cplusplus
}
#endif
#endif
