/* pool.c — fixed thread pool over one mutex-guarded FIFO ring, plus parallel-for (see
 * dspy/pool.h). Invariants, all under `mu`: `count` jobs sit in ring[head..head+count) (mod
 * cap); `pending` = queued + running jobs; done_cv is broadcast whenever pending reaches 0.
 * The cancel flag is a lone atomic so dspy_pool_cancel needs no lock: workers discard queued
 * jobs when they dequeue them, which keeps pending exact. */
#include "dspy/pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    dspy_pool_job fn;
    void *arg;
} job;

typedef struct {
    dspy_pool *pool;
    int id;
} worker_arg;

struct dspy_pool {
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* jobs queued or shutdown */
    pthread_cond_t done_cv; /* pending reached 0 */
    job *ring;
    size_t cap, head, count, pending;
    bool shutdown;
    atomic_bool cancelled;
    int n_threads, n_started;
    pthread_t *threads;
    worker_arg *wargs;
};

static void *worker_main(void *p) {
    worker_arg *wa = p;
    dspy_pool *pool = wa->pool;
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while (pool->count == 0 && !pool->shutdown) pthread_cond_wait(&pool->work_cv, &pool->mu);
        if (pool->count == 0) break; /* shutdown with an empty queue */
        job j = pool->ring[pool->head];
        pool->head = (pool->head + 1) % pool->cap;
        pool->count--;
        if (!atomic_load(&pool->cancelled)) {
            pthread_mutex_unlock(&pool->mu);
            j.fn(j.arg, wa->id);
            pthread_mutex_lock(&pool->mu);
        }
        if (--pool->pending == 0) pthread_cond_broadcast(&pool->done_cv);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

static void stop_workers(dspy_pool *pool) {
    pthread_mutex_lock(&pool->mu);
    pool->shutdown = true;
    pthread_cond_broadcast(&pool->work_cv);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < pool->n_started; i++) pthread_join(pool->threads[i], NULL);
    pool->n_started = 0;
}

void dspy_pool_free(dspy_pool *pool) {
    if (!pool) return;
    stop_workers(pool);
    pthread_cond_destroy(&pool->done_cv);
    pthread_cond_destroy(&pool->work_cv);
    pthread_mutex_destroy(&pool->mu);
    free(pool->ring);
    free(pool->threads);
    free(pool->wargs);
    free(pool);
}

dspy_status dspy_pool_new(int n_threads, dspy_pool **out) {
    *out = NULL;
    if (n_threads < 1 || n_threads > DSPY_POOL_MAX_THREADS)
        return dspy_fail(DSPY_ERR_ARG, "thread pool: n_threads=%d is out of range; use 1..%d", n_threads,
                         DSPY_POOL_MAX_THREADS);
    dspy_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return dspy_fail(DSPY_ERR_NOMEM, "thread pool: out of memory");
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->work_cv, NULL);
    pthread_cond_init(&pool->done_cv, NULL);
    atomic_init(&pool->cancelled, false);
    pool->n_threads = n_threads;
    pool->cap = 64;
    pool->ring = malloc(pool->cap * sizeof *pool->ring);
    pool->threads = calloc((size_t)n_threads, sizeof *pool->threads);
    pool->wargs = calloc((size_t)n_threads, sizeof *pool->wargs);
    if (!pool->ring || !pool->threads || !pool->wargs) {
        dspy_pool_free(pool);
        return dspy_fail(DSPY_ERR_NOMEM, "thread pool: out of memory for %d workers", n_threads);
    }
    for (int i = 0; i < n_threads; i++) {
        pool->wargs[i] = (worker_arg){pool, i};
        int rc = pthread_create(&pool->threads[i], NULL, worker_main, &pool->wargs[i]);
        if (rc != 0) {
            dspy_pool_free(pool);
            return dspy_fail(DSPY_ERR_NOMEM, "thread pool: cannot start thread %d of %d (%s); use fewer threads",
                             i + 1, n_threads, strerror(rc));
        }
        pool->n_started++;
    }
    *out = pool;
    return DSPY_OK;
}

static bool grow_ring(dspy_pool *pool) {
    size_t cap = pool->cap * 2;
    job *ring = malloc(cap * sizeof *ring);
    if (!ring) return false;
    for (size_t i = 0; i < pool->count; i++) ring[i] = pool->ring[(pool->head + i) % pool->cap];
    free(pool->ring);
    pool->ring = ring;
    pool->cap = cap;
    pool->head = 0;
    return true;
}

dspy_status dspy_pool_submit(dspy_pool *pool, dspy_pool_job fn, void *arg) {
    if (atomic_load(&pool->cancelled))
        return dspy_fail(DSPY_ERR_CANCELLED, "thread pool: cancelled; no new jobs are accepted");
    pthread_mutex_lock(&pool->mu);
    if (pool->count == pool->cap && !grow_ring(pool)) {
        pthread_mutex_unlock(&pool->mu);
        return dspy_fail(DSPY_ERR_NOMEM, "thread pool: out of memory queueing job %zu", pool->count + 1);
    }
    pool->ring[(pool->head + pool->count) % pool->cap] = (job){fn, arg};
    pool->count++;
    pool->pending++;
    pthread_cond_signal(&pool->work_cv);
    pthread_mutex_unlock(&pool->mu);
    return DSPY_OK;
}

dspy_status dspy_pool_wait(dspy_pool *pool) {
    pthread_mutex_lock(&pool->mu);
    while (pool->pending > 0) pthread_cond_wait(&pool->done_cv, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
    if (atomic_load(&pool->cancelled))
        return dspy_fail(DSPY_ERR_CANCELLED, "thread pool: cancelled before all jobs ran");
    return DSPY_OK;
}

void dspy_pool_cancel(dspy_pool *pool) {
    atomic_store(&pool->cancelled, true);
}

bool dspy_pool_cancelled(const dspy_pool *pool) {
    return atomic_load(&((dspy_pool *)pool)->cancelled);
}

int dspy_pool_size(const dspy_pool *pool) {
    return pool->n_threads;
}

/* One parallel loop: workers claim indices from `next` until the items run out or a stop. */
typedef struct {
    dspy_pool *pool;
    dspy_item_fn fn;
    void *arg;
    size_t n_items;
    atomic_size_t next;
    atomic_bool stop;
} loop;

static bool loop_stopped(loop *lp) {
    return atomic_load(&lp->stop) || (lp->pool && atomic_load(&lp->pool->cancelled));
}

static void loop_job(void *p, int worker_id) {
    loop *lp = p;
    while (!loop_stopped(lp)) {
        size_t i = atomic_fetch_add(&lp->next, 1);
        if (i >= lp->n_items) break;
        if (lp->fn(i, lp->arg, worker_id) != 0) atomic_store(&lp->stop, true);
    }
}

static dspy_status loop_result(loop *lp) {
    if (atomic_load(&lp->stop))
        return dspy_fail(DSPY_ERR_CANCELLED, "parallel loop: stopped by an item before all %zu items ran",
                         lp->n_items);
    return DSPY_OK;
}

dspy_status dspy_pool_for(dspy_pool *pool, size_t n_items, dspy_item_fn fn, void *arg) {
    loop lp = {.pool = pool, .fn = fn, .arg = arg, .n_items = n_items};
    atomic_init(&lp.next, 0);
    atomic_init(&lp.stop, false);
    size_t jobs = n_items < (size_t)pool->n_threads ? n_items : (size_t)pool->n_threads;
    size_t queued = 0;
    dspy_status st = DSPY_OK;
    while (queued < jobs && (st = dspy_pool_submit(pool, loop_job, &lp)) == DSPY_OK) queued++;
    /* One queued job alone works through every item, so a later failed submit loses nothing;
     * the jobs already queued point at `lp`, so wait for them in every case. */
    dspy_status wst = dspy_pool_wait(pool);
    if (jobs > 0 && queued == 0) return st;
    if (wst != DSPY_OK) return wst;
    return loop_result(&lp);
}

dspy_status dspy_parallel_for(int n_threads, size_t n_items, dspy_item_fn fn, void *arg) {
    if (n_threads < 1 || n_threads > DSPY_POOL_MAX_THREADS)
        return dspy_fail(DSPY_ERR_ARG, "parallel loop: n_threads=%d is out of range; use 1..%d", n_threads,
                         DSPY_POOL_MAX_THREADS);
    if (n_threads == 1) {
        loop lp = {.pool = NULL, .fn = fn, .arg = arg, .n_items = n_items};
        atomic_init(&lp.next, 0);
        atomic_init(&lp.stop, false);
        loop_job(&lp, 0);
        return loop_result(&lp);
    }
    if (n_items == 0) return DSPY_OK;
    int workers = n_items < (size_t)n_threads ? (int)n_items : n_threads;
    dspy_pool *pool = NULL;
    dspy_status st = dspy_pool_new(workers, &pool);
    if (st != DSPY_OK) return st;
    st = dspy_pool_for(pool, n_items, fn, arg);
    dspy_pool_free(pool);
    return st;
}
