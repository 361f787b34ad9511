/* dspy/server.h — `dspy serve`: an OpenAI-compatible HTTP server over the native engine.
 *
 * What it does: loads a model directory (weights, tokenizer, chat template), starts one engine
 * thread with continuous batching, and serves on host:port
 *   GET  /v1/models, GET /v1/models/{id}    the served model
 *   POST /v1/chat/completions               messages rendered with the model's chat template
 *   POST /v1/completions                    a text prompt or token ids
 *   GET  /health                            200 {"status":"ok"} once serving
 *   GET  /metrics                           Prometheus text: requests, tokens, time to first
 *                                           token and per-token histograms, queue, batch,
 *                                           KV cache use, prefix-cache hit rate
 * with streaming (server-sent events, final "data: [DONE]"), n > 1, stop strings, seed,
 * max_tokens / max_completion_tokens, temperature, top_p, top_k, usage, an optional API key,
 * and OpenAI-shaped error bodies with matching statuses (bad JSON 400, unknown model 404,
 * prompt over the context 400, body too large 413, overloaded 503, unknown route 404, wrong
 * method 405, bad key 401, a POST body that is not application/json 415, a Host header that
 * is not allowed 403, a request over its token budget or n cap 400).
 * Fairness: a request may hold at most half of the decoding slots while others wait, and a
 * request that waits while long ones hold the KV cache preempts the one that has run longest
 * (it resumes later from where it stopped; see server/scheduler.h).
 * The model id is the served name: --served-model-name, else the model directory as given.
 * Requests may also name it "local:<dir>" (what DSPy's LocalProvider sends) or
 * "openai/local:<dir>", the directory's absolute path (with or without those prefixes) or its
 * basename.
 * Structured outputs: response_format json_schema / json_object and the dspy_layout extension
 * (DSPy's ChatAdapter field layout with Literal fields) are enforced by token automata
 * (dspy/structured.h; compiled once per distinct specification); a specification outside the
 * supported subset gets 400 (see server/openai.h for the request fields).
 * One log line per request (INFO): status, tokens, duration, queue wait, time to first token,
 * time per token, output format.
 * What it does not: TLS, tools/function calling, logprobs, embeddings, several models.
 *
 * In-process serving: dspy_server_start runs the server on a thread of its own inside the
 * calling program (no `dspy` executable, no child process) and dspy_server_join stops it; see
 * dspy/local.h for the launcher that picks this or a child process for an LM's model.
 *
 * Thread safety: dspy_server_stop is async-signal-safe; call it from a SIGTERM handler. The
 * other functions are for one controlling thread.
 */
#ifndef DSPY_SERVER_H
#define DSPY_SERVER_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/backend.h"
#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_server dspy_server;

typedef struct dspy_server_params {
    const char *model_dir;         /* required: config.json + weights (+ tokenizer files) */
    const char *tokenizer_dir;     /* tokenizer.json and tokenizer_config.json; NULL = model_dir */
    const char *host;              /* bind address; default "127.0.0.1" */
    int port;                      /* default 8000; 0 = an ephemeral port (see dspy_server_port) */
    const char *api_key;           /* NULL = no check; else "Authorization: Bearer <key>" on /v1,
                                      compared in constant time. The CLI reads it from
                                      --api-key-file or DSPY_API_KEY (a flag shows in /proc) */
    const char *allowed_hosts;     /* comma-separated Host header names also accepted, "*" = any;
                                      NULL = only IP literals and "localhost" (with any port): a
                                      DNS-rebinding page cannot reach the server by a name (403) */
    const char *cors_origin;       /* NULL (default) = no CORS headers, so browsers keep other
                                      origins out; an origin (or "*") to allow, with preflight */
    const char *served_model_name; /* NULL = model_dir as given */
    const char *chat_date;         /* Llama 3.x "Today Date:"; NULL = today ("%d %b %Y") */
    int32_t max_seqs;              /* sequences decoded together (default 8) */
    int32_t max_queue;             /* requests waiting for the engine before 503 (default 256) */
    int32_t kv_tokens;             /* KV cache capacity in tokens over all sequences; 0 = on a GPU
                                      kv_memory_percent % of the memory free after the weights
                                      (at most max_seqs x the context, at least the CPU default),
                                      on the CPU min(context length, 16384). Sequences take blocks
                                      as they grow; when none is free the newest is preempted and
                                      recomputed later */
    int32_t kv_memory_percent;     /* 1..95 (default 30): the share of the free GPU memory the KV
                                      cache takes when kv_tokens is 0 */
    int32_t max_batch_tokens;      /* prompt tokens prefilled per engine step over all sequences
                                      (chunked prefill); 0 (default) = 256 on the CPU, where a
                                      step's length is every running sequence's token latency,
                                      and 4,096 on a GPU, where a step of 256 prompt tokens leaves
                                      the device mostly idle (16 requests of 200 new prompt
                                      tokens took 13 steps at 256) */
    int32_t spec_tokens;           /* speculative decoding (dspy_engine_params.spec_tokens): up to
                                      this many tokens drafted by prompt lookup per greedy,
                                      unconstrained sequence and step, checked in the same pass;
                                      0 (default) = off; at most DSPY_ENGINE_MAX_SPEC */
    int32_t jump_tokens;           /* jump-forward (dspy_engine_params.jump_tokens): up to this many
                                      tokens of the text a constrained sequence's format fixes next
                                      drafted per step, checked in the same pass (the answers are
                                      those without it); -1 (default) = the engine's auto: 8 on
                                      the CPU, 0 on CUDA; 0 = off */
    int32_t default_max_tokens;    /* max_tokens for requests that give none (default 1024, capped
                                      by the room left in the context); 0 = the rest of the context */
    int32_t max_n;                 /* the largest n a request may ask (default 16; 400 above it) */
    int64_t max_request_tokens;    /* a request's budget: n x (prompt + max_tokens), the KV cache it
                                      reserves, must not exceed this (400 naming the numbers);
                                      0 (default) = the KV cache capacity */
    int32_t max_connections;       /* open HTTP connections served at once (default 1024, at least
                                      max_queue: a request over it gets 503 + Retry-After; idle
                                      and slow connections cost no thread) */
    int32_t max_per_client;        /* open connections from one IP address (default 512; 0 = no
                                      limit); more are refused at accept */
    size_t max_body_bytes;         /* default 8 MiB (413 over it) */
    size_t max_header_bytes;       /* default 32 KiB (431 over it) */
    int read_timeout_ms;           /* a request must arrive within this (default 30000; 408) */
    int shutdown_grace_ms;         /* on stop, in-flight requests get this long (default 30000)
                                      before they are aborted with 503 */
    int32_t n_threads;             /* compute threads; 0 = the OpenMP default */
    const char *device;            /* "auto", "cpu", "cuda", "cuda:N" (dspy_device_parse); NULL = cpu */
    int32_t replicas;              /* copies of the model behind the one port (0 or 1: one), each
                                      with its own engine and scheduler; a request goes to the
                                      least busy. On CUDA replica i runs on GPU i of those visible
                                      (device "cuda" or "auto"; `dspy serve --gpus N`), on the CPU
                                      the copies share the cores */
    bool strict;                   /* refuse a checkpoint with NaN/Inf weights (else a warning) */
    const char *weights;           /* NULL or "bf16" (default): the checkpoint's weights; "fp8":
                                      dspy_model_params.f8_decode (FP8-rounded weights; on CUDA
                                      batched decode steps read a 1-byte copy); "w8a8": fp8 and
                                      f8_act (prompt GEMMs on FP8-rounded activations too) */
    dspy_cpu_kernels cpu_kernels;  /* on the CPU: FAST (default: BF16 SIMD kernels) or REFERENCE
                                      (the fp32 parity kernels); dspy/backend.h */
    int32_t structured_max_tokens; /* structured outputs: tokens a free-text layout field or a JSON
                                      string may take unless the request says (default 256; 0 =
                                      unbounded, then only max_tokens ends a rambling model) */
} dspy_server_params;

DSPY_API dspy_server_params dspy_server_params_default(void);

/* Loads the model, tokenizer and chat template, creates the engine and binds the socket (so
 * the port is known and connections queue before dspy_server_run). A model without a chat
 * template serves /v1/completions only (chat requests get 400 saying so).
 * Errors: those of the model/tokenizer loaders (naming the file), DSPY_ERR_IO when the address
 * cannot be bound, DSPY_ERR_ARG for bad params. *out NULL on failure. */
DSPY_API dspy_status dspy_server_new(const dspy_server_params *p, dspy_server **out);

/* The bound port (the chosen one for port 0). */
DSPY_API int dspy_server_port(const dspy_server *s);
/* The served model id (borrowed). */
DSPY_API const char *dspy_server_model_name(const dspy_server *s);

/* Serves until dspy_server_stop; then stops accepting, lets in-flight requests finish for up to
 * shutdown_grace_ms, aborts the rest (503 or an error event on a stream), closes every
 * connection and returns DSPY_OK. DSPY_ERR_IO if the listening socket fails. */
DSPY_API dspy_status dspy_server_run(dspy_server *s);

/* Asks dspy_server_run to shut down. Async-signal-safe and idempotent. */
DSPY_API void dspy_server_stop(dspy_server *s);

/* Runs dspy_server_run on a new thread and returns at once. The socket was bound by
 * dspy_server_new, so the server answers from now on (connections made before the thread is
 * scheduled wait in the listen queue). The thread and the ones it starts block every
 * asynchronous signal (faults excepted): the host program's SIGINT/SIGTERM/SIGPIPE handling is
 * its own. Not with dspy_server_run on another thread.
 * DSPY_ERR_STATE if already started or the thread cannot be created. */
DSPY_API dspy_status dspy_server_start(dspy_server *s);

/* Stops a server started with dspy_server_start (as dspy_server_stop: in-flight requests get
 * shutdown_grace_ms) and waits for its thread. Returns what dspy_server_run returned; DSPY_OK
 * when it was not started. Afterwards the server can only be freed. */
DSPY_API dspy_status dspy_server_join(dspy_server *s);

/* Frees everything (a started server is joined first). NULL-safe; call after dspy_server_run
 * has returned, or instead of it. */
DSPY_API void dspy_server_free(dspy_server *s);

#ifdef __cplusplus
}
#endif
#endif
