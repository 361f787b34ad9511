/* server/scheduler.h — continuous batching: one engine thread serving queued requests
 * (private to src/server/).
 *
 * What it does: requests ("jobs", each with n choices = n sequences over one prompt) enter a
 * bounded FIFO queue. The engine thread owns the engine: before every step it admits waiting
 * choices fairly: the job with the fewest sequences in the engine goes first (ties: the
 * earliest), and when the engine has no slot or KV room for it, a job holding more of the
 * engine gives one sequence up — at once when it holds two or more sequences more, after a
 * 500 ms time slice when it holds one more. A preempted sequence is removed from the engine and
 * added again later with its prompt plus the tokens it already generated (recomputed; its text
 * and token counts continue where they were; a greedy choice is unchanged, a sampled one is
 * reseeded from (seed, tokens so far), which is why only jobs marked preemptible give way).
 * Then it runs dspy_engine_step, detokenizes each new
 * token with the tokenizer's streaming decoder, holds back text that could be the start of a
 * stop string, releases the rest to the job, and removes sequences that ended (eos/stop id,
 * max_tokens, a stop string) or whose job was cancelled (client gone). Finished sequences
 * report "stop" or "length".
 * What it does not: HTTP, JSON, chat templates (the caller gives token ids), priorities,
 * KV swapping (preemption recomputes).
 *
 * Thread safety: dspy_sched_submit, sched_job_* and dspy_sched_abort may be called from any thread. A job
 * is shared by its submitter and the engine thread through a reference count.
 */
#ifndef DSPY_SERVER_SCHEDULER_H
#define DSPY_SERVER_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/engine.h"
#include "dspy/status.h"
#include "dspy/str.h"
#include "dspy/tokenizer.h"

typedef struct sched sched;
typedef struct sched_job sched_job;

/* Starts the engine thread over `eng` and `tok` (both must outlive the scheduler; the engine
 * is used by that thread only from now on). max_queue: jobs waiting for admission (>= 1).
 * *out NULL on failure (DSPY_ERR_NOMEM, DSPY_ERR_ARG). */
dspy_status dspy_sched_new(dspy_engine *eng, const dspy_tokenizer *tok, int32_t max_queue, sched **out);

/* Fails every queued and running job with `status`/`message` (503, "the server is shutting
 * down") and removes their sequences; jobs submitted afterwards are refused. */
void dspy_sched_abort(sched *s, int status, const char *message);

/* Stops the engine thread (aborting what is left, as dspy_sched_abort with 503) and frees. NULL-safe. */
void dspy_sched_free(sched *s);

/* Jobs waiting in the queue and jobs running, for /health and tests. */
void dspy_sched_counts(sched *s, int32_t *queued, int32_t *running);

/* A snapshot for /metrics, taken after the engine thread's last step (before the first: the
 * engine as created, its warm-up included); idle_ns counts a wait for work going on now. */
typedef struct sched_stats {
    int32_t queued, running;      /* jobs */
    int32_t active_seqs;          /* sequences in the engine */
    int32_t last_batch;           /* sequences advanced by the last step */
    int64_t steps;                /* engine steps so far */
    int64_t batch_seqs;           /* sum over steps of the sequences advanced */
    int32_t kv_capacity, kv_free; /* tokens */
    int64_t cached_tokens;        /* held in prefix-cache blocks */
    int64_t prompt_tokens, prefix_hit_tokens, computed_tokens; /* cumulative, engine */
    long long preemptions;
    /* the engine thread's time, cumulative (ns): waiting for work, admitting, inside
     * dspy_engine_step, handing the steps' events to their jobs (detokenizing, stop strings,
     * waking the waiting HTTP threads, completing jobs), taking these snapshots */
    int64_t idle_ns, admit_ns, step_ns, events_ns, stats_ns;
    dspy_engine_profile engine; /* inside dspy_engine_step */
} sched_stats;
void dspy_sched_stats_get(sched *s, sched_stats *out);
/* Sequences preempted so far (for tests and logs). */
long long dspy_sched_preemptions(sched *s);

/* ---- jobs -------------------------------------------------------------------------------- */

typedef struct sched_job_params {
    int32_t n;              /* choices (sequences), >= 1 */
    dspy_sampling sampling; /* per sequence; choice i uses seed sampling.seed + i. stop_ids are
                               copied by dspy_sched_job_new */
    char *const *stop;      /* stop strings (copied), n_stop of them */
    size_t n_stop;
    bool preemptible;       /* its sequences may be preempted (see the top). Set it only when a
                               reseed cannot change what the client asked for: greedy decoding,
                               or sampling without an explicit seed; and never with a
                               constraint (a resumed sequence would restart its automaton) */
    bool whole;             /* the submitter waits for the whole answer: its polls wake when the
                               job completes or fails (or time out), not at every released piece
                               of text (one thread wake-up a token per request costs the engine
                               thread more than the rest of its per-token work) */
    void *hold;             /* released with hold_release when the job is freed (after its
                               sequences left the engine): e.g. a reference on the constraint
                               in sampling.constraint. May be NULL */
    void (*hold_release)(void *hold);
} sched_job_params;

/* A job over `prompt` (copied). The caller holds one reference. On success the job owns
 * p->hold (released with the job); on failure the caller still does. */
dspy_status dspy_sched_job_new(const int32_t *prompt, size_t n_prompt, const sched_job_params *p, sched_job **out);

/* Queues the job (the scheduler takes its own reference). DSPY_ERR_STATE when the queue is
 * full (answer 503), DSPY_ERR_CANCELLED when the scheduler is shutting down. */
dspy_status dspy_sched_submit(sched *s, sched_job *j);

/* Asks the engine thread to drop the job's sequences (the client went away). Idempotent. */
void dspy_sched_job_cancel(sched_job *j);

/* Drops the caller's reference. NULL-safe. */
void dspy_sched_job_release(sched_job *j);

/* When the job went through the scheduler, in seconds since its submission (-1: not yet):
 * admitted (first sequence added to the engine), first token, done (complete or failed). */
typedef struct sched_job_times {
    double admitted, first_token, done;
} sched_job_times;
void dspy_sched_job_times_get(sched_job *j, sched_job_times *out);

/* What a poll hands over for one choice. */
typedef struct sched_choice_out {
    dspy_str text;            /* text released since the last poll is appended here */
    const char *finish;       /* "stop"/"length" once the choice has ended, else NULL */
    bool finish_new;          /* the choice ended since the last poll */
    int32_t completion_tokens;
} sched_choice_out;

/* Waits up to timeout_ms for news, then moves every choice's released text into out[i].text
 * (appending; out has n entries, zero-initialised by the caller before the first poll) and
 * updates finish / completion_tokens. Returns 1 when the job is complete (every choice ended),
 * 0 when it is still running, -1 when it failed: *err_status (HTTP status) and *err_message
 * (owned by the job) say why. */
int dspy_sched_job_poll(sched_job *j, int timeout_ms, sched_choice_out *out, int *err_status,
                   const char **err_message);

/* ---- stop strings (pure; exposed for tests) ---------------------------------------------- */

/* Looks for stop strings in text[0, len). When one occurs, returns true and *pos is where the
 * earliest one starts (the text to release is text[0, pos)). Otherwise returns false and *pos
 * is how much can be released now: len minus the longest suffix of text that is a proper
 * prefix of some stop string (that suffix is held back until more text decides it). */
bool dspy_sched_stop_scan(const char *text, size_t len, char *const *stops, size_t n_stops, size_t *pos);

#endif
