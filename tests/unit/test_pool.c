/* test_pool.c — thread pool: results complete, real concurrency, caller-thread rule for
 * n_threads == 1, cancellation of queued jobs and of parallel loops, nested submits, free. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "check.h"
#include "dspy/pool.h"

static void nap_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* Spins until *flag is true or ~5 s pass; returns the flag. */
static bool await_flag(atomic_bool *flag) {
    for (int i = 0; i < 5000 && !atomic_load(flag); i++) nap_us(1000);
    return atomic_load(flag);
}

typedef struct {
    size_t index;
    long long value;
    int worker;
} slot;

static void square_job(void *arg, int worker_id) {
    slot *s = arg;
    s->value = (long long)s->index * (long long)s->index;
    s->worker = worker_id;
}

static void test_many_jobs(void) {
    dspy_pool *pool = NULL;
    CHECK_OK(dspy_pool_new(4, &pool));
    if (!pool) return;
    CHECK_INT(dspy_pool_size(pool), 4);
    enum { N = 20000 };
    slot *slots = calloc(N, sizeof *slots);
    for (size_t i = 0; i < N; i++) {
        slots[i].index = i;
        slots[i].worker = -1;
    }
    int submit_failed = 0;
    for (size_t i = 0; i < N; i++) submit_failed += dspy_pool_submit(pool, square_job, &slots[i]) != DSPY_OK;
    CHECK_INT(submit_failed, 0);
    CHECK_OK(dspy_pool_wait(pool));
    int wrong = 0;
    for (size_t i = 0; i < N; i++)
        wrong += slots[i].value != (long long)(i * i) || slots[i].worker < 0 || slots[i].worker > 3;
    CHECK_INT(wrong, 0);
    /* The pool is reusable after a wait. */
    slots[0].index = 7;
    CHECK_OK(dspy_pool_submit(pool, square_job, &slots[0]));
    CHECK_OK(dspy_pool_wait(pool));
    CHECK_INT(slots[0].value, 49);
    dspy_pool_free(pool);
    free(slots);
}

/* Four jobs that each wait for all four to have started: passes only with 4 live workers. */
typedef struct {
    atomic_int started;
    atomic_bool all_in;
    atomic_int seen_all;
} rendezvous;

static void rendezvous_job(void *arg, int worker_id) {
    (void)worker_id;
    rendezvous *r = arg;
    if (atomic_fetch_add(&r->started, 1) + 1 == 4) atomic_store(&r->all_in, true);
    if (await_flag(&r->all_in)) atomic_fetch_add(&r->seen_all, 1);
}

static void test_concurrency(void) {
    dspy_pool *pool = NULL;
    CHECK_OK(dspy_pool_new(4, &pool));
    if (!pool) return;
    rendezvous r;
    atomic_init(&r.started, 0);
    atomic_init(&r.all_in, false);
    atomic_init(&r.seen_all, 0);
    for (int i = 0; i < 4; i++) CHECK_OK(dspy_pool_submit(pool, rendezvous_job, &r));
    CHECK_OK(dspy_pool_wait(pool));
    CHECK_INT(atomic_load(&r.seen_all), 4);
    dspy_pool_free(pool);
}

typedef struct {
    pthread_t caller;
    int n_items;
    atomic_int *ran;     /* per item run count */
    atomic_int on_caller;
    atomic_int bad_worker;
    atomic_int order_breaks; /* sequential mode: items seen out of index order */
    atomic_int last;
    int stop_at;   /* item that returns non-zero, or -1 */
    long nap;      /* microseconds per item */
    dspy_pool *cancel_pool; /* item stop_at cancels this pool instead of returning non-zero */
    int max_worker;
} loop_state;

static int record_item(size_t item, void *arg, int worker_id) {
    loop_state *s = arg;
    atomic_fetch_add(&s->ran[item], 1);
    if (pthread_equal(pthread_self(), s->caller)) atomic_fetch_add(&s->on_caller, 1);
    if (worker_id < 0 || worker_id > s->max_worker) atomic_fetch_add(&s->bad_worker, 1);
    if (atomic_exchange(&s->last, (int)item) != (int)item - 1) atomic_fetch_add(&s->order_breaks, 1);
    if (s->nap) nap_us(s->nap);
    if ((int)item == s->stop_at) {
        if (s->cancel_pool) dspy_pool_cancel(s->cancel_pool);
        else return 1;
    }
    return 0;
}

static loop_state *new_loop_state(int n_items, int max_worker) {
    loop_state *s = calloc(1, sizeof *s);
    s->caller = pthread_self();
    s->n_items = n_items;
    s->ran = calloc((size_t)n_items, sizeof *s->ran);
    for (int i = 0; i < n_items; i++) atomic_init(&s->ran[i], 0);
    atomic_init(&s->on_caller, 0);
    atomic_init(&s->bad_worker, 0);
    atomic_init(&s->order_breaks, 0);
    atomic_init(&s->last, -1);
    s->stop_at = -1;
    s->max_worker = max_worker;
    return s;
}

static void free_loop_state(loop_state *s) {
    free(s->ran);
    free(s);
}

/* Counts items that ran exactly once, and items that ran more than once. */
static void count_runs(loop_state *s, int *once, int *twice) {
    *once = *twice = 0;
    for (int i = 0; i < s->n_items; i++) {
        int r = atomic_load(&s->ran[i]);
        *once += r == 1;
        *twice += r > 1;
    }
}

static void test_parallel_for(void) {
    int once, twice;
    /* n_threads == 1: every item on the calling thread, in index order. */
    loop_state *s = new_loop_state(300, 0);
    CHECK_OK(dspy_parallel_for(1, 300, record_item, s));
    count_runs(s, &once, &twice);
    CHECK_INT(once, 300);
    CHECK_INT(atomic_load(&s->on_caller), 300);
    CHECK_INT(atomic_load(&s->order_breaks), 0);
    CHECK_INT(atomic_load(&s->bad_worker), 0);
    free_loop_state(s);
    /* n_threads == 4: every item exactly once, none on the calling thread. */
    s = new_loop_state(5000, 3);
    CHECK_OK(dspy_parallel_for(4, 5000, record_item, s));
    count_runs(s, &once, &twice);
    CHECK_INT(once, 5000);
    CHECK_INT(twice, 0);
    CHECK_INT(atomic_load(&s->on_caller), 0);
    CHECK_INT(atomic_load(&s->bad_worker), 0);
    free_loop_state(s);
    /* More threads than items, and no items. */
    s = new_loop_state(3, 7);
    CHECK_OK(dspy_parallel_for(8, 3, record_item, s));
    count_runs(s, &once, &twice);
    CHECK_INT(once, 3);
    free_loop_state(s);
    CHECK_OK(dspy_parallel_for(8, 0, record_item, NULL));
    CHECK_OK(dspy_parallel_for(1, 0, record_item, NULL));
    CHECK_STATUS(dspy_parallel_for(0, 10, record_item, NULL), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "n_threads=0 is out of range; use 1..1024");
    dspy_pool *pool = NULL;
    CHECK_STATUS(dspy_pool_new(-2, &pool), DSPY_ERR_ARG);
    CHECK(pool == NULL);
}

static void test_loop_stop(void) {
    int once, twice;
    /* Sequential: item 3 stops the loop, so exactly items 0..3 ran. */
    loop_state *s = new_loop_state(100, 0);
    s->stop_at = 3;
    CHECK_STATUS(dspy_parallel_for(1, 100, record_item, s), DSPY_ERR_CANCELLED);
    CHECK_CONTAINS(dspy_errmsg(), "stopped by an item");
    count_runs(s, &once, &twice);
    CHECK_INT(once, 4);
    CHECK_INT(atomic_load(&s->ran[3]), 1);
    CHECK_INT(atomic_load(&s->ran[4]), 0);
    free_loop_state(s);
    /* Parallel: item 10 stops it; the other workers finish their current item and stop. Each
     * item naps 2 ms, so running them all would take ~0.7 s; a stop leaves most unrun. */
    s = new_loop_state(1000, 2);
    s->stop_at = 10;
    s->nap = 2000;
    CHECK_STATUS(dspy_parallel_for(3, 1000, record_item, s), DSPY_ERR_CANCELLED);
    count_runs(s, &once, &twice);
    CHECK_INT(atomic_load(&s->ran[10]), 1);
    CHECK_INT(twice, 0);
    CHECK(once >= 11 && once < 100);
    free_loop_state(s);
}

static void test_pool_for_cancel(void) {
    dspy_pool *pool = NULL;
    CHECK_OK(dspy_pool_new(3, &pool));
    if (!pool) return;
    int once, twice;
    loop_state *s = new_loop_state(500, 2);
    CHECK_OK(dspy_pool_for(pool, 500, record_item, s));
    count_runs(s, &once, &twice);
    CHECK_INT(once, 500);
    free_loop_state(s);
    /* An item cancels the pool itself (as a SIGINT handler would). */
    s = new_loop_state(1000, 2);
    s->stop_at = 5;
    s->nap = 2000;
    s->cancel_pool = pool;
    CHECK_STATUS(dspy_pool_for(pool, 1000, record_item, s), DSPY_ERR_CANCELLED);
    count_runs(s, &once, &twice);
    CHECK(once >= 6 && once < 100);
    CHECK(dspy_pool_cancelled(pool));
    CHECK_STATUS(dspy_pool_for(pool, 10, record_item, s), DSPY_ERR_CANCELLED);
    free_loop_state(s);
    dspy_pool_free(pool);
}

typedef struct {
    atomic_int blockers_in;  /* blockers running */
    atomic_int queued_ran;   /* plain jobs that ran */
    atomic_int saw_cancel;   /* blockers that observed dspy_pool_cancelled */
    dspy_pool *pool;
} cancel_state;

static void blocker_job(void *arg, int worker_id) {
    (void)worker_id;
    cancel_state *c = arg;
    atomic_fetch_add(&c->blockers_in, 1);
    for (int i = 0; i < 5000 && !dspy_pool_cancelled(c->pool); i++) nap_us(1000);
    if (dspy_pool_cancelled(c->pool)) atomic_fetch_add(&c->saw_cancel, 1);
}

static void counted_job(void *arg, int worker_id) {
    (void)worker_id;
    cancel_state *c = arg;
    atomic_fetch_add(&c->queued_ran, 1);
}

static void test_pool_cancel(void) {
    cancel_state c;
    atomic_init(&c.blockers_in, 0);
    atomic_init(&c.queued_ran, 0);
    atomic_init(&c.saw_cancel, 0);
    CHECK_OK(dspy_pool_new(2, &c.pool));
    if (!c.pool) return;
    /* Two running jobs occupy both workers; 100 more wait in the queue. */
    CHECK_OK(dspy_pool_submit(c.pool, blocker_job, &c));
    CHECK_OK(dspy_pool_submit(c.pool, blocker_job, &c));
    for (int i = 0; i < 5000 && atomic_load(&c.blockers_in) < 2; i++) nap_us(1000);
    CHECK_INT(atomic_load(&c.blockers_in), 2);
    for (int i = 0; i < 100; i++) CHECK_OK(dspy_pool_submit(c.pool, counted_job, &c));
    CHECK(!dspy_pool_cancelled(c.pool));
    dspy_pool_cancel(c.pool);
    CHECK_STATUS(dspy_pool_submit(c.pool, counted_job, &c), DSPY_ERR_CANCELLED);
    CHECK_STATUS(dspy_pool_wait(c.pool), DSPY_ERR_CANCELLED);
    CHECK_INT(atomic_load(&c.saw_cancel), 2); /* running jobs saw the flag and stopped */
    CHECK_INT(atomic_load(&c.queued_ran), 0); /* queued jobs were discarded */
    dspy_pool_free(c.pool);
}

typedef struct {
    dspy_pool *pool;
    atomic_int leaves;
    atomic_int submit_errors;
} tree_state;

static void leaf_job(void *arg, int worker_id) {
    (void)worker_id;
    tree_state *t = arg;
    atomic_fetch_add(&t->leaves, 1);
}

static void branch_job(void *arg, int worker_id) {
    (void)worker_id;
    tree_state *t = arg;
    for (int i = 0; i < 10; i++)
        if (dspy_pool_submit(t->pool, leaf_job, t) != DSPY_OK) atomic_fetch_add(&t->submit_errors, 1);
}

static void test_nested_submit_and_free(void) {
    tree_state t;
    atomic_init(&t.leaves, 0);
    atomic_init(&t.submit_errors, 0);
    CHECK_OK(dspy_pool_new(3, &t.pool));
    if (!t.pool) return;
    for (int i = 0; i < 50; i++) CHECK_OK(dspy_pool_submit(t.pool, branch_job, &t));
    CHECK_OK(dspy_pool_wait(t.pool));
    CHECK_INT(atomic_load(&t.leaves), 500);
    CHECK_INT(atomic_load(&t.submit_errors), 0);
    dspy_pool_free(t.pool);
    /* free runs the jobs still queued before stopping the workers. */
    cancel_state c;
    atomic_init(&c.queued_ran, 0);
    CHECK_OK(dspy_pool_new(1, &c.pool));
    if (!c.pool) return;
    for (int i = 0; i < 200; i++) CHECK_OK(dspy_pool_submit(c.pool, counted_job, &c));
    dspy_pool_free(c.pool);
    CHECK_INT(atomic_load(&c.queued_ran), 200);
    dspy_pool_free(NULL);
}

int main(void) {
    RUN(test_many_jobs);
    RUN(test_concurrency);
    RUN(test_parallel_for);
    RUN(test_loop_stop);
    RUN(test_pool_for_cancel);
    RUN(test_pool_cancel);
    RUN(test_nested_submit_and_free);
    return check_summary("test_pool");
}
