/* dspy/engine.h — the inference engine: continuous batching over a loaded model.
 *
 * Made for one scheduler thread (the HTTP server's): requests are added with dspy_engine_add,
 * and each dspy_engine_step runs one batched forward pass over every active sequence — a chunk
 * of prompt for sequences still prefilling (chunked prefill, max_batch_tokens per step) and one
 * new token for each sequence that is decoding (with spec_tokens or jump_tokens, also its drafted
 * tokens: then it may gain several tokens in a step) — then samples and reports one event per sequence it
 * advanced (per new token). Finished sequences release their KV blocks at once (the filled ones stay
 * in the prefix cache until the memory is needed).
 *
 * The engine runs on the model's device (dspy_model_load's `device`): the CPU reference or CUDA.
 * Its KV cache, work buffers and step metadata are allocated once in dspy_engine_new, sized from
 * the parameters; a step allocates nothing, copies its metadata to the device in one transfer,
 * samples on the device, and waits for the device once, when the sampled tokens come back. On
 * CUDA a step in which every sequence decodes is a captured graph replayed per batch-size bucket.
 *
 * Guarantees:
 *   - CPU: batching does not change results: a sequence gets bit-identical logits, and so the
 *     same tokens, whether it runs alone or together with others, however its prompt is chunked,
 *     and whether its prefix came from the prefix cache or it was preempted and recomputed. CUDA computes in BF16 with F32 accumulation and is held to tolerances against
 *     the CPU (tests/unit/test_cuda_model.c); its results can depend on the batch composition.
 *   - Sampling is deterministic per sequence: its own RNG seeded by dspy_sampling.seed draws one
 *     uniform per sampled token; the same logits and draw give the same token on a backend.
 *
 * Prefix cache: every full KV block a sequence fills is kept, by the chain hash of the tokens up
 * to it, until its memory is needed; a new prompt that starts with the same tokens reuses those
 * blocks instead of computing them (the system prompt shared by many requests is computed once).
 * This holds in a cold burst too (many such prompts added before any block is published): a
 * prompt whose next full block another running sequence is computing with the same tokens feeds
 * nothing until that block is published, then reuses it; its reused tokens count as
 * prefix_hit_tokens, not computed_tokens.
 *
 * Not handled here: tokenization, stop *strings* (the caller detokenizes and checks them, then
 * calls dspy_engine_remove), chat templates.
 *
 * Thread safety: an engine is used from one thread at a time (no internal locking). The model
 * it reads is immutable and may be shared by several engines and threads; it must outlive them.
 * The compute inside a step is parallel (OpenMP on the CPU).
 */
#ifndef DSPY_ENGINE_H
#define DSPY_ENGINE_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/constraint.h"
#include "dspy/model.h"
#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_engine dspy_engine;

typedef struct dspy_engine_params {
    int32_t max_seqs;         /* sequences active at once (default 8) */
    int32_t max_tokens_total; /* KV cache capacity in tokens over all sequences; 0 (default) means
                                 min(max_position_embeddings, 16384) */
    int32_t block_size;       /* KV cache block in tokens (default 16) */
    int32_t max_batch_tokens; /* prompt tokens processed per step over all sequences (default 256);
                                 decode tokens come on top, one per decoding sequence */
    int32_t spec_tokens;      /* speculative decoding: up to this many drafted tokens per greedy
                                 (temperature 0, unconstrained) decoding sequence and step, drafted
                                 by prompt lookup (the continuation of the latest earlier occurrence
                                 of its last 3, 2 or 1 tokens in its own tokens), checked in the same
                                 forward pass; the tokens are those of spec_tokens 0 (CPU: bit for
                                 bit). A sequence whose drafts were all rejected m steps in a row
                                 waits min(2^(m-1), 8) steps before drafting again. 0 (default) =
                                 off; at most DSPY_ENGINE_MAX_SPEC. The environment variable
                                 DSPY_ENGINE_SPEC=K overrides it. */
    int32_t jump_tokens;      /* jump-forward: a constrained decoding sequence whose automaton fixes
                                 the next stretch of text (dspy_constraint_jump: a field header, the
                                 rest of a Literal value) drafts up to this many of its tokens a
                                 step, every row sampled under its own state's mask and checked as
                                 speculative drafts are: the tokens are those of jump_tokens 0 (CPU:
                                 bit for bit); steps are saved where the model writes the drafted
                                 tokenization. At most max(max_seqs, jump_tokens) drafted rows a
                                 step over all sequences. -1 (default) = auto: 8 on the CPU, 0 on
                                 CUDA (a drafting step runs eagerly, not replayed as a graph; not
                                 measured there yet); 0 = off; at most DSPY_ENGINE_MAX_SPEC;
                                 DSPY_ENGINE_JUMP=K overrides it. */
    int32_t multi_steps;      /* decode runs: where every fed sequence decodes greedily and
                                 unconstrained, up to this many decode steps are queued behind one
                                 another from one dspy_engine_step_begin (each step's tokens fed to
                                 the next on the device, kern/ops.h decode_advance), so the host's
                                 round trip between steps goes (B2's graph steps on the H200, batch
                                 14-16: 762 -> 750 us). A run stops where a sequence reaches its
                                 max_tokens, and a sequence that ends earlier (eos, a stop id)
                                 has its later rows computed and dropped; the tokens are those of
                                 multi_steps 1 (CPU: bit for bit). Its tokens reach the caller
                                 together at the run's end, and work added meanwhile waits for it
                                 (dspy_engine_limit_run). -1 (default) = auto: 8 where decode steps
                                 replay graphs (CUDA; B2 on the H200: 0.516 s -> 0.504 with runs of
                                 8, 0.507 with 4), 1 (off) on the CPU; at most
                                 DSPY_ENGINE_MAX_RUN; DSPY_ENGINE_MULTI=K overrides it. */
} dspy_engine_params;

enum { DSPY_ENGINE_MAX_SPEC = 32, DSPY_ENGINE_MAX_RUN = 32 };

DSPY_API dspy_engine_params dspy_engine_params_default(void);

typedef struct dspy_sampling {
    float temperature;         /* 0 = greedy: argmax, the lowest id on ties */
    float top_p;               /* nucleus mass in (0, 1]; 1 = off */
    int32_t top_k;             /* keep the k most likely tokens; 0 = off */
    uint64_t seed;             /* this sequence's RNG seed (any value, 0 included) */
    int32_t max_tokens;        /* new tokens at most; 0 = until the context or the KV capacity ends */
    const int32_t *stop_ids;   /* extra token ids that end the sequence (copied by add); may be NULL */
    int32_t n_stop_ids;
    bool ignore_eos;           /* true: the model's eos ids do not end the sequence */
    const dspy_constraint *constraint; /* NULL, or the automaton every sampled token must follow
                                          (dspy/constraint.h; borrowed: it must outlive the
                                          sequence); its vocabulary must be the model's */
} dspy_sampling;

/* temperature 1, top_p 1, top_k 0, seed 0, max_tokens 0, no stop ids, eos stops, no constraint. */
DSPY_API dspy_sampling dspy_sampling_default(void);

typedef enum dspy_finish {
    DSPY_FINISH_NONE = 0, /* still running */
    DSPY_FINISH_STOP,     /* produced an eos id or one of stop_ids (that token is the event's token) */
    DSPY_FINISH_LENGTH    /* reached max_tokens, the context length or its KV reservation */
} dspy_finish;

/* "stop" / "length" / "none": the OpenAI finish_reason spelling. */
DSPY_API const char *dspy_finish_name(dspy_finish f);

/* One per token: a sequence whose drafts were accepted reports several consecutive events in a
 * step (its tokens in order; only the last can carry a finish). */
typedef struct dspy_step_event {
    int64_t seq_id;
    int32_t token;       /* the new token, or -1 when this step only advanced the prompt */
    float logprob;       /* log p(token) under the model's own distribution (log_softmax of the raw
                            logits, before temperature/top-k/top-p); 0 when token is -1 */
    dspy_finish finish;  /* not NONE: the sequence ended with this event and is gone */
    int32_t n_generated; /* tokens generated so far, this one included */
} dspy_step_event;

typedef struct dspy_step_out {
    const dspy_step_event *events; /* owned by the engine; valid until its next call */
    int32_t n_events;              /* one per sequence advanced this step (one per new token of a
                                      speculating sequence), in add order */
    int32_t n_prefill_tokens;      /* prompt tokens processed this step */
    int32_t n_decode_tokens;       /* sequences that decoded one token this step */
} dspy_step_out;

typedef struct dspy_engine_stats {
    int32_t active;          /* sequences added and not finished (waiting ones included) */
    int32_t waiting;         /* of those, preempted and waiting for KV cache to resume */
    int32_t max_seqs;
    int32_t capacity_tokens; /* KV capacity (max_tokens_total rounded to blocks) */
    int32_t free_tokens;     /* KV tokens that can be handed out now (free or evictable cached blocks) */
    int32_t context_length;  /* the model's max_position_embeddings */
    int64_t device_allocs;   /* allocations the engine's backend has made; set by dspy_engine_new and
                                constant afterwards (steps allocate nothing) */
    int64_t cached_tokens;   /* tokens held in named (prefix-cache) blocks now */
    int64_t prompt_tokens;   /* cumulative: prompt tokens added */
    int64_t prefix_hit_tokens; /* cumulative: prompt tokens found in the prefix cache (not computed) */
    int64_t computed_tokens; /* cumulative: prompt tokens computed (including recomputation after preemption) */
    int64_t preemptions;     /* cumulative: sequences preempted for KV cache */
    bool async_steps;        /* dspy_engine_step_begin returns while the device computes (CUDA); on the
                                CPU it computes the whole step, so nothing overlaps it */
} dspy_engine_stats;

/* Where the steps' time went, cumulative since dspy_engine_new (host monotonic clock, ns). Always
 * kept (a few clock reads a step). A step's device span runs from its metadata upload to the end
 * of its wait for the device: the device works during it and the host only enqueues and waits;
 * everything else the host does between two spans (planning, reading results, and the caller's
 * own work) leaves the device idle. */
typedef enum dspy_step_kind {
    DSPY_STEP_GRAPH = 0, /* every sequence decodes: a captured graph replayed (CUDA) */
    DSPY_STEP_DECODE,    /* every sequence decodes, launched op by op (CPU, or graphs off) */
    DSPY_STEP_MIXED,     /* prompt chunks together with decoding sequences */
    DSPY_STEP_PREFILL,   /* prompt chunks only */
    DSPY_STEP_KINDS
} dspy_step_kind;

typedef struct dspy_engine_profile {
    int64_t steps[DSPY_STEP_KINDS];     /* steps of each kind */
    int64_t seqs[DSPY_STEP_KINDS];      /* sequences they advanced */
    int64_t rows[DSPY_STEP_KINDS];      /* tokens they fed (prompt and decode) */
    int64_t device_ns[DSPY_STEP_KINDS]; /* their device spans */
    int64_t launch_ns[DSPY_STEP_KINDS]; /* of which enqueueing: uploads, kernels or a graph replay
                                           (and its capture on first use), the readback */
    int64_t plan_ns;                    /* before the spans: resuming, growing, packing metadata */
    int64_t post_ns;                    /* after them: tokens, finish rules, publishing, retiring */
    int64_t captures, capture_ns;       /* decode graphs captured (inside launch_ns) */
    int64_t spec_steps;                 /* steps in which some sequence fed drafted tokens (eager) */
    int64_t draft_tokens;               /* drafted tokens fed (spec_tokens > 0) */
    int64_t accepted_tokens;            /* of those, accepted (each one a step saved) */
    int64_t run_steps;                  /* decode steps queued in runs of 2 or more (multi_steps) */
} dspy_engine_profile;

DSPY_API const char *dspy_step_kind_name(dspy_step_kind k); /* "graph", "decode", "mixed", "prefill" */
DSPY_API void dspy_engine_profile_get(const dspy_engine *e, dspy_engine_profile *out);

/* Creates an engine over `model` (which must outlive it) with its KV cache and work buffers
 * allocated once. `p` may be NULL (defaults). DSPY_ERR_ARG for impossible parameters,
 * DSPY_ERR_NOMEM when the cache does not fit. */
DSPY_API dspy_status dspy_engine_new(const dspy_model *model, const dspy_engine_params *p, dspy_engine **out);
/* NULL-safe; drops every sequence. */
DSPY_API void dspy_engine_free(dspy_engine *e);

/* Adds a sequence; its id (increasing from 1) goes to *seq_id. It starts in the next step.
 * `sp` may be NULL (dspy_sampling_default()). It takes KV blocks for its prompt now (sharing the
 * prefix cache's blocks for the prompt's leading full blocks: those tokens are not computed
 * again) and more as it decodes; when the pool runs dry a later sequence is preempted and
 * recomputed afterwards (see engine.c), so an added sequence always completes.
 *   DSPY_ERR_ARG      empty prompt, a token id outside the vocabulary, bad sampling values
 *   DSPY_ERR_CONTEXT  prompt + max_tokens can never fit: over the context length or over the
 *                     engine's whole KV capacity (reject the request)
 *   DSPY_ERR_STATE    it would fit, but not now: max_seqs sequences are active, the free KV cache
 *                     cannot hold the prompt, or a preempted sequence waits (queue the request;
 *                     retry after a step) */
DSPY_API dspy_status dspy_engine_add(dspy_engine *e, const int32_t *prompt, size_t n, const dspy_sampling *sp,
                                     int64_t *seq_id);

/* Runs one batched step (see the top of this file). With no active sequence it does nothing and
 * reports no event. Errors: DSPY_ERR_BACKEND (the device failed: the message says how; a CUDA
 * engine cannot run further steps after it), DSPY_ERR_ARG (a step the engine was not planned
 * for: a bug). */
DSPY_API dspy_status dspy_engine_step(dspy_engine *e, dspy_step_out *out);

/* dspy_engine_step in two halves, so that the caller's own work (a server handing the last
 * step's tokens to its clients, admitting new requests) runs while the device computes: begin
 * plans the step and enqueues it (*launched false when there was nothing to run), end waits for
 * it and applies it (out and errors as dspy_engine_step's; with nothing launched, no events).
 * Between the two the engine takes dspy_engine_add (the sequence joins at the next step; it
 * takes only blocks the step does not use), dspy_engine_remove (the sequence is retired when the
 * step ends and reports nothing from it), dspy_engine_step_done, dspy_engine_stats_get and
 * dspy_engine_profile_get; a second begin answers DSPY_ERR_STATE. dspy_engine_step is begin then
 * end. */
DSPY_API dspy_status dspy_engine_step_begin(dspy_engine *e, bool *launched);
DSPY_API dspy_status dspy_engine_step_end(dspy_engine *e, dspy_step_out *out);
/* *done = whether the step begun has finished on the device (dspy_engine_step_end would not
 * wait); true with none in flight, and always on a backend whose steps run as they are queued
 * (the CPU). DSPY_ERR_BACKEND when the device failed. */
DSPY_API dspy_status dspy_engine_step_done(dspy_engine *e, bool *done);

/* The most decode steps the next dspy_engine_step_begin may queue as one run (see
 * dspy_engine_params.multi_steps), until changed: a caller with work waiting to be added sets 1,
 * so that the work joins at the next step; the default is no limit. Values below 1 mean 1. */
DSPY_API void dspy_engine_limit_run(dspy_engine *e, int32_t steps);

/* Cancels an active sequence and frees its KV cache (e.g. a stop string matched, or the client
 * went away); during a step in flight, when that step ends. DSPY_ERR_NOTFOUND when the id is not
 * active (finished sequences are already gone). */
DSPY_API dspy_status dspy_engine_remove(dspy_engine *e, int64_t seq_id);

DSPY_API void dspy_engine_stats_get(const dspy_engine *e, dspy_engine_stats *out);

/* Runs what the first steps would otherwise pay for once (a server may call it before it takes
 * requests; dspy serve does unless DSPY_SERVE_WARMUP=0): prompt steps of 24, 32, 48, 64, ...
 * rows up to the largest step (the GEMM kernels of every size range loaded, their plans made)
 * and every decode batch size's captured graph (1, 2, 4, ... max_seqs), on padding rows whose
 * keys and values land only in the engine's reserved block. No sequence, prefix-cache block or
 * statistic changes (the profile counts the graph captures). Does nothing on a backend without
 * graphs (CPU) or while sequences are active. DSPY_ERR_BACKEND when the device fails. */
DSPY_API dspy_status dspy_engine_warmup(dspy_engine *e);

/* Logits of every position: logits (n, V) row t = the distribution after ids[0..t]. Runs a
 * private single-sequence pass (no engine needed); for parity tests and scoring.
 * DSPY_ERR_ARG for ids outside the vocabulary, DSPY_ERR_CONTEXT when n > context length. */
DSPY_API dspy_status dspy_model_forward_logits(const dspy_model *m, const int32_t *ids, size_t n, float *logits);

/* Generates one sequence with a private engine. *out_ids (malloc'd, caller frees) gets the new
 * tokens — when an eos/stop id ended it, that id is the last one; *out_logprobs (may be NULL)
 * their logprobs; *finish why it ended (may be NULL). Errors as dspy_engine_add. */
DSPY_API dspy_status dspy_generate(const dspy_model *m, const int32_t *prompt, size_t n, const dspy_sampling *sp,
                                   int32_t **out_ids, float **out_logprobs, size_t *out_n, dspy_finish *finish);

#ifdef __cplusplus
}
#endif

#endif
