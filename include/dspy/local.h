/* dspy/local.h — the local provider's server: serve a model directory for an LM, wait until it
 * answers, stop it.
 *
 * What it does: what DSPy's LocalProvider.launch/kill do with SGLang (dspy_behaviour.md §10.7),
 * with the native server instead. The model path is the LM name with "openai/", "local:" and
 * "huggingface/" stripped. The server runs one of two ways (dspy_local_mode):
 *   - in process (DSPY_LOCAL_THREAD): dspy_server_new + dspy_server_start (dspy/server.h) on a
 *     thread of this program. No `dspy` executable is needed, so there is no version skew
 *     between the library and a binary found on disk; the server's log lines go to this
 *     process's log (dspy/log.h); it ends with the process. The model is loaded inside
 *     dspy_local_launch, so the server is ready when it returns.
 *   - as a child (DSPY_LOCAL_CHILD): `dspy serve` started from an argv list (no shell) with
 *     its stdout and stderr appended to a log file and --parent-pid, so it dies with this
 *     process however this process ends; readiness is GET /v1/models answering 200, polled
 *     until a timeout that is honoured whatever happens (refused connections included, project
 *     decision §16.6; a child that exits early fails at once with the log's end). Instead of
 *     binding a port, closing it and hoping it stays free, the child is started with port 0
 *     (unless a port is given) and the port is read from its "listening on" line. kill:
 *     SIGTERM, wait up to a grace period, then SIGKILL.
 * DSPY_LOCAL_AUTO (the default) picks the child when a binary is named (params.dspy_bin or the
 * DSPY_BIN environment variable, the override) or when this process is `dspy` itself (a crash
 * or a GPU left in a bad state then stays in the child), and the thread otherwise.
 * What it does not: fine-tuning (see the trainer), reconnecting to a server it did not start.
 *
 * Thread safety: a dspy_local_server is used by one thread at a time. Launching from a threaded
 * program is safe (posix_spawn; the server thread blocks asynchronous signals).
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

typedef enum dspy_local_mode {
    DSPY_LOCAL_AUTO = 0, /* a child when a dspy binary is named or this is `dspy`, else a thread */
    DSPY_LOCAL_THREAD,   /* in process, on a thread (dspy_bin and DSPY_BIN are not looked at) */
    DSPY_LOCAL_CHILD,    /* a `dspy serve` child process */
} dspy_local_mode;

typedef struct dspy_local_params {
    dspy_local_mode mode;     /* default DSPY_LOCAL_AUTO */
    const char *dspy_bin;     /* child: the dspy executable; NULL: /proc/self/exe when this process
                                 is `dspy`, else the DSPY_BIN environment variable */
    const char *log_dir;      /* child: where the log file goes (created if needed; give the run
                                 directory); NULL: $TMPDIR or /tmp, and the log is removed by
                                 dspy_local_free when the server ended cleanly */
    const char *host;         /* bind address (default "127.0.0.1") */
    int port;                 /* 0 (default): the server picks a free port */
    const char *api_key;      /* NULL (default): none; else required by the server. A child gets
                                 it in its environment (DSPY_API_KEY, not on the command line where
                                 /proc shows it) and the readiness check sends it as
                                 "Authorization: Bearer KEY". An inherited DSPY_API_KEY is removed
                                 from the child's environment when this is NULL */
    double timeout_s;         /* child: readiness deadline (default 1800, DSPy's) */
    double kill_grace_s;      /* child: SIGTERM -> SIGKILL delay; thread: the shutdown grace of
                                 in-flight requests unless --shutdown-grace says (default 10) */
    const char *const *extra_args; /* more `dspy serve` arguments (e.g. "--max-seqs", "16" or
                                      "--device=cuda"). A thread takes the server options of
                                      dspy_server_params by their CLI names (--tokenizer,
                                      --served-model-name, --chat-date, --device, --max-seqs,
                                      --max-queue, --kv-tokens, --default-max-tokens, --max-n,
                                      --structured-max-tokens, --max-request-tokens,
                                      --max-connections, --max-per-client, --threads, --max-body,
                                      --request-timeout, --shutdown-grace, --strict) and refuses
                                      others with DSPY_ERR_ARG */
    size_t n_extra_args;
} dspy_local_params;

DSPY_API dspy_local_params dspy_local_params_default(void);

/* Starts a server for `model` (see the modes above), waits until it is ready and returns the
 * handle in *out. `model` may carry DSPy's prefixes ("openai/local:/abs/out"). A child is
 * `dspy serve --model PATH --host HOST --port PORT --parent-pid PID [extra args]`.
 * Errors:
 *   DSPY_ERR_ARG      empty model; an extra argument the thread does not know; a child wanted
 *                     and no dspy binary found (set params.dspy_bin or DSPY_BIN)
 *   thread: those of dspy_server_new (the model or tokenizer loader's, naming the file;
 *           DSPY_ERR_IO when the address cannot be bound) and DSPY_ERR_STATE when the thread
 *           cannot start; nothing is left running
 *   child (each message names the log file and quotes its last lines when there is one):
 *   DSPY_ERR_IO       the log file or the process cannot be created
 *   DSPY_ERR_STATE    the server exited before it was ready
 *   DSPY_ERR_TIMEOUT  not ready within timeout_s (the process is killed)
 * *out NULL on failure. */
DSPY_API dspy_status dspy_local_launch(const char *model, const dspy_local_params *p, dspy_local_server **out);

/* "http://127.0.0.1:PORT/v1" (the host as launched; borrowed). */
DSPY_API const char *dspy_local_api_base(const dspy_local_server *s);
DSPY_API int dspy_local_port(const dspy_local_server *s);
/* The mode it runs in: DSPY_LOCAL_THREAD or DSPY_LOCAL_CHILD (never AUTO). */
DSPY_API dspy_local_mode dspy_local_get_mode(const dspy_local_server *s);
/* The child's process id; 0 for a server on a thread. */
DSPY_API pid_t dspy_local_pid(const dspy_local_server *s);
/* The child's log file; NULL for a server on a thread (its lines go to dspy/log.h's sink). */
DSPY_API const char *dspy_local_log_path(const dspy_local_server *s);
/* The model path after prefix stripping (borrowed). */
DSPY_API const char *dspy_local_model_path(const dspy_local_server *s);

/* The whole log so far (malloc'd, caller frees) in *out. DSPY_ERR_IO if it cannot be read;
 * DSPY_ERR_STATE for a server on a thread, which has no log file of its own. */
DSPY_API dspy_status dspy_local_get_logs(const dspy_local_server *s, char **out);

/* Child: SIGTERM, wait up to kill_grace_s, then SIGKILL; reaps the child. *exit_status (may be
 * NULL) gets the exit code, or 128+signal when a signal ended it. DSPY_ERR_IO if the child
 * cannot be waited for.
 * Thread: dspy_server_join (in-flight requests get the grace period), then frees the server:
 * its port, model memory and threads are released when this returns. *exit_status is 0, or 1
 * when the server's loop failed (then its status is returned).
 * Idempotent: a second call returns the same result. */
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
