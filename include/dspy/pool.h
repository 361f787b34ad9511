/* dspy/pool.h — a fixed-size thread pool with cancellation, and a parallel for-loop on it.
 *
 * What it does: N pthread workers take jobs from one FIFO queue. dspy_pool_wait blocks until
 * every submitted job has finished. dspy_pool_cancel raises a shared atomic flag: jobs still
 * queued are then discarded without running, new submissions are refused, and running jobs can
 * poll dspy_pool_cancelled() to stop early. dspy_parallel_for runs fn over item indices
 * 0..n-1, sequentially on the calling thread when n_threads == 1 (DSPy's Evaluate and
 * ParallelExecutor rule, dspy_behaviour.md §8.2), else on a pool.
 * What it does not: futures or return values (jobs write into their own slots), priorities,
 * per-job timeouts or resubmission of stragglers (the caller's policy).
 *
 * Thread safety: submit, cancel, cancelled and wait may be called from any thread, and submit
 * from inside a job. wait must not be called from inside a job of the same pool (it would wait
 * for itself). dspy_pool_cancel only stores an atomic, so it is async-signal-safe (a SIGINT
 * handler may call it).
 */
#ifndef DSPY_POOL_H
#define DSPY_POOL_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>

#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSPY_POOL_MAX_THREADS 1024

typedef struct dspy_pool dspy_pool;

/* A job: `arg` is what was submitted, `worker_id` is the running worker, 0..n_threads-1.
 * The pool never frees `arg`; a discarded (cancelled) job never sees it either, so the
 * submitter must own and release job arguments. */
typedef void (*dspy_pool_job)(void *arg, int worker_id);

/* Starts a pool of n_threads workers (1..DSPY_POOL_MAX_THREADS) in *out (NULL on failure).
 * DSPY_ERR_ARG for a bad count; DSPY_ERR_NOMEM when memory or a thread cannot be had. */
DSPY_API dspy_status dspy_pool_new(int n_threads, dspy_pool **out);

/* Queues fn(arg, worker_id). DSPY_ERR_CANCELLED (job not queued) once the pool is cancelled;
 * DSPY_ERR_NOMEM if the queue cannot grow. */
DSPY_API dspy_status dspy_pool_submit(dspy_pool *pool, dspy_pool_job fn, void *arg);

/* Blocks until every job submitted so far has finished or been discarded. Returns DSPY_OK, or
 * DSPY_ERR_CANCELLED when the pool has been cancelled (some jobs may not have run). */
DSPY_API dspy_status dspy_pool_wait(dspy_pool *pool);

/* Raises the cancel flag (sticky for the pool's life): queued jobs are discarded, further
 * submissions refused, running jobs finish unless they poll dspy_pool_cancelled. */
DSPY_API void dspy_pool_cancel(dspy_pool *pool);
DSPY_API bool dspy_pool_cancelled(const dspy_pool *pool);

/* Number of worker threads. */
DSPY_API int dspy_pool_size(const dspy_pool *pool);

/* Runs every job still queued (none if cancelled), stops and joins the workers, frees the
 * pool. NULL-safe. Must not be called from inside one of the pool's jobs. */
DSPY_API void dspy_pool_free(dspy_pool *pool);

/* An item of a parallel loop: returns 0 to go on, non-zero to stop the loop (items not yet
 * started are skipped; items already running finish). */
typedef int (*dspy_item_fn)(size_t item, void *arg, int worker_id);

/* Runs fn(i, arg, worker_id) for i in [0, n_items), each exactly once unless stopped.
 * n_threads == 1: in index order on the calling thread (worker_id 0). Otherwise on a fresh
 * pool of min(n_threads, n_items) workers, items handed out in index order; returns after all
 * started items finished. DSPY_ERR_CANCELLED when an item returned non-zero; DSPY_ERR_ARG for
 * n_threads < 1 or > DSPY_POOL_MAX_THREADS; DSPY_ERR_NOMEM if the pool cannot start. */
DSPY_API dspy_status dspy_parallel_for(int n_threads, size_t n_items, dspy_item_fn fn, void *arg);

/* The same over an existing pool (its workers, its cancel flag: dspy_pool_cancel from any
 * thread stops the loop too, returning DSPY_ERR_CANCELLED). It returns when the pool is idle,
 * so it also waits for jobs that other threads submitted meanwhile. Must not be called from
 * inside one of the pool's jobs. */
DSPY_API dspy_status dspy_pool_for(dspy_pool *pool, size_t n_items, dspy_item_fn fn, void *arg);

#ifdef __cplusplus
}
#endif
#endif
