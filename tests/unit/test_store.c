/* test_store.c — the rendezvous store of multi-process training (train/store.h), with real
 * processes over TCP on 127.0.0.1: rank 0 publishes a value that three other ranks wait for,
 * counters and a barrier across four processes; a key never set times out; a rank 0 that stops
 * or is killed -9 gives the waiting ranks an error at once, not a hang; a taken port, no rank 0
 * and bad arguments are clear errors. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "dspy/clock.h"
#include "train/store.h"

static const char k_blob[] = "nccl-unique-id\0with a zero byte";

/* A rank other than 0: waits for the blob, counts itself in, meets the others. */
static int child_rank(int port, int rank) {
    dspy_store *s = NULL;
    if (dspy_store_new("localhost", port, false, 10.0, &s)) return 10 + rank;
    void *v = NULL;
    size_t n = 0;
    int rc = 0;
    if (dspy_store_get(s, "id", &v, &n) || n != sizeof k_blob || memcmp(v, k_blob, n)) rc = 20 + rank;
    free(v);
    int64_t sum = 0;
    if (!rc && dspy_store_add(s, "count", rank, &sum)) rc = 30 + rank;
    if (!rc && dspy_store_barrier(s, "ready", 4)) rc = 40 + rank;
    if (!rc && dspy_store_barrier(s, "done", 4)) rc = 50 + rank;
    dspy_store_free(s);
    return rc;
}

static void test_four_ranks(void) {
    int port = test_free_port();
    pid_t kids[3];
    for (int r = 1; r <= 3; r++) {
        kids[r - 1] = fork();
        if (kids[r - 1] == 0) _exit(child_rank(port, r));
    }
    dspy_store *s = NULL;
    CHECK_OK(dspy_store_new("127.0.0.1", port, true, 10.0, &s));
    if (s) {
        CHECK_OK(dspy_store_set(s, "id", k_blob, sizeof k_blob));
        CHECK_OK(dspy_store_barrier(s, "ready", 4));
        int64_t sum = -1;
        CHECK_OK(dspy_store_add(s, "count", 0, &sum));
        CHECK_INT(sum, 1 + 2 + 3); /* every rank counted before the barrier opened */
        CHECK_OK(dspy_store_barrier(s, "done", 4));
    }
    for (int i = 0; i < 3; i++) {
        int status = 0;
        waitpid(kids[i], &status, 0);
        CHECK(WIFEXITED(status));
        CHECK_INT(WEXITSTATUS(status), 0);
    }
    /* a value replaced, an empty value, a key set as bytes then added to */
    if (s) {
        void *v = NULL;
        size_t n = 9;
        CHECK_OK(dspy_store_set(s, "k", "", 0));
        CHECK_OK(dspy_store_get(s, "k", &v, &n));
        CHECK_INT(n, 0);
        free(v);
        CHECK_OK(dspy_store_set(s, "k", "ab", 2));
        CHECK_OK(dspy_store_get(s, "k", &v, &n));
        CHECK(n == 2 && !memcmp(v, "ab", 2));
        free(v);
        int64_t sum = 0;
        CHECK_OK(dspy_store_add(s, "k", 5, &sum));
        CHECK_INT(sum, 5);
    }
    dspy_store_free(s);
}

static void test_timeout_and_errors(void) {
    int port = test_free_port();
    dspy_store *s = NULL;
    CHECK_OK(dspy_store_new("127.0.0.1", port, true, 0.3, &s));
    if (!s) return;
    void *v = NULL;
    size_t n = 0;
    double t0 = dspy_now_s();
    CHECK_STATUS(dspy_store_get(s, "never", &v, &n), DSPY_ERR_TIMEOUT);
    CHECK(dspy_now_s() - t0 < 3.0);
    CHECK_CONTAINS(dspy_errmsg(), "'never'");
    CHECK(v == NULL);
    /* the port is taken by this store */
    dspy_store *t = NULL;
    CHECK_STATUS(dspy_store_new("127.0.0.1", port, true, 0.3, &t), DSPY_ERR_IO);
    CHECK_CONTAINS(dspy_errmsg(), "cannot listen");
    CHECK(t == NULL);
    dspy_store_free(s);
    /* nobody on the port: the client gives up after its timeout */
    t0 = dspy_now_s();
    CHECK_STATUS(dspy_store_new("127.0.0.1", test_free_port(), false, 0.3, &t), DSPY_ERR_IO);
    CHECK_CONTAINS(dspy_errmsg(), "rank 0 did not answer");
    CHECK(dspy_now_s() - t0 < 3.0);
    CHECK_STATUS(dspy_store_new("", 29500, false, 1, &t), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_store_new("127.0.0.1", 0, false, 1, &t), DSPY_ERR_ARG);
    CHECK_STATUS(dspy_store_new("no-such-host.invalid", 29500, false, 0.2, &t), DSPY_ERR_IO);
    CHECK_CONTAINS(dspy_errmsg(), "MASTER_ADDR");
}

/* A waiting rank, and rank 0 going away under it. */
typedef struct waiter {
    dspy_store *s;
    dspy_status st;
    double took;
} waiter;

static void *wait_for_key(void *p) {
    waiter *w = p;
    void *v = NULL;
    size_t n = 0;
    double t0 = dspy_now_s();
    w->st = dspy_store_get(w->s, "never", &v, &n);
    w->took = dspy_now_s() - t0;
    free(v);
    return NULL;
}

static void test_rank0_gone(void) {
    /* rank 0 stops (its store freed) while another rank waits */
    int port = test_free_port();
    dspy_store *zero = NULL, *one = NULL;
    CHECK_OK(dspy_store_new("127.0.0.1", port, true, 30, &zero));
    CHECK_OK(dspy_store_new("127.0.0.1", port, false, 30, &one));
    if (!zero || !one) {
        dspy_store_free(one);
        dspy_store_free(zero);
        return;
    }
    waiter w = {one, DSPY_OK, 0};
    pthread_t th;
    pthread_create(&th, NULL, wait_for_key, &w);
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
    dspy_store_free(zero);
    pthread_join(th, NULL);
    CHECK_INT(w.st, DSPY_ERR_IO);
    CHECK(w.took < 5.0);
    dspy_store_free(one);

    /* rank 0 killed -9 in another process */
    port = test_free_port();
    int pipefd[2];
    CHECK(pipe(pipefd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        dspy_store *z = NULL;
        char c = dspy_store_new("127.0.0.1", port, true, 30, &z) ? 'x' : 'y';
        if (write(pipefd[1], &c, 1) != 1) _exit(3);
        pause();
        _exit(0);
    }
    char c = 0;
    CHECK(read(pipefd[0], &c, 1) == 1 && c == 'y');
    close(pipefd[0]);
    close(pipefd[1]);
    CHECK_OK(dspy_store_new("127.0.0.1", port, false, 30, &one));
    if (one) {
        w = (waiter){one, DSPY_OK, 0};
        pthread_create(&th, NULL, wait_for_key, &w);
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        pthread_join(th, NULL);
        CHECK_INT(w.st, DSPY_ERR_IO);
        CHECK(w.took < 5.0);
        dspy_store_free(one);
    }
    waitpid(pid, NULL, 0);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    RUN(test_four_ranks);
    RUN(test_timeout_and_errors);
    RUN(test_rank0_gone);
    return check_summary("test_store");
}
