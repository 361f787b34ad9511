/* test_cuda_dist.c — data-parallel collectives on two GPUs (train/dist.h over NCCL): two rank
 * processes (this binary re-run with --rank R; CUDA is never touched before the fork) meet
 * through rank 0's store, build their NCCL communicators, and sum F32 gradients on the device
 * in order with their backend's stream: exact sums for integer-valued data, a large odd-sized
 * buffer, a broadcast from rank 0, the side-stream all-reduces (F32 and F64) ordered after the
 * compute stream's writes and before its reads (dspy_dist_join), barriers. NVLink multicast stays off (NCCL_NVLS_ENABLE=0).
 * Fewer than two GPUs: a skip (exit 77), not a pass. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "dspy/backend.h"
#include "kern/backend.h"
#include "train/dist.h"

/* One rank: 0 on success, 77 without two GPUs, another code naming the failed step. */
static int rank_main(int rank) {
    const char *why = NULL;
    if (dspy_cuda_device_count(&why) < 2) {
        printf("test_cuda_dist: skipped: rank %d sees fewer than 2 GPUs (%s)\n", rank, why ? why : "one");
        return 77;
    }
    dspy_dist_env env;
    if (dspy_dist_env_read(&env)) return 10;
    dspy_backend *be = NULL;
    if (dspy_backend_new((dspy_device){DSPY_DEVICE_CUDA, env.local_rank}, NULL, &be)) return 11;
    dspy_dist *d = NULL;
    if (dspy_dist_new(&env, 1, 60, &d)) {
        fprintf(stderr, "rank %d: %s\n", rank, dspy_errmsg());
        return 12;
    }
    int rc = 0;
    const size_t n = 10000019; /* odd, and large enough for NCCL's pipelined path */
    float *h = malloc(n * sizeof *h), *dev = NULL;
    if (!h || be->ops->alloc(be, n * sizeof *h, (void **)&dev)) rc = 13;
    /* rank r holds (i % 1000) * (r + 1): the sum over two ranks is exactly 3 (i % 1000) */
    for (size_t i = 0; !rc && i < n; i++) h[i] = (float)(i % 1000) * (float)(rank + 1);
    if (!rc && be->ops->copy(be, dev, h, n * sizeof *h, DSPY_COPY_H2D)) rc = 14;
    if (!rc && dspy_dist_allreduce_sum(d, dev, n, dspy_backend_native_stream(be))) rc = 15;
    if (!rc && (be->ops->copy(be, h, dev, n * sizeof *h, DSPY_COPY_D2H) || be->ops->sync(be))) rc = 16;
    for (size_t i = 0; !rc && i < n; i++)
        if (h[i] != (float)(i % 1000) * 3.0f) rc = 17;
    /* rank 0's bytes reach rank 1 */
    unsigned char hb[64];
    for (int i = 0; i < 64; i++) hb[i] = (unsigned char)(rank == 0 ? i * 3 : 0xEE);
    if (!rc && be->ops->copy(be, dev, hb, 64, DSPY_COPY_H2D)) rc = 18;
    if (!rc && dspy_dist_broadcast(d, dev, 64, dspy_backend_native_stream(be))) rc = 19;
    if (!rc && (be->ops->copy(be, hb, dev, 64, DSPY_COPY_D2H) || be->ops->sync(be))) rc = 20;
    for (int i = 0; !rc && i < 64; i++)
        if (hb[i] != (unsigned char)(i * 3)) rc = 21;
    /* the side stream: its all-reduce must see the copy queued before it on the compute stream,
     * and the compute stream's read-back must wait (dspy_dist_join) for the sums, F32 and F64 */
    void *cs = dspy_backend_native_stream(be);
    for (size_t i = 0; !rc && i < n; i++) h[i] = (float)(i % 7) * (float)(rank + 1);
    double l64[5] = {0.125 * (rank + 1), 1e15 * (rank + 1), -3.0 * (rank + 1), 0, 7.5 * (rank + 1)};
    double *d64 = NULL;
    if (!rc && be->ops->alloc(be, sizeof l64, (void **)&d64)) rc = 23;
    if (!rc && (be->ops->copy(be, dev, h, n * sizeof *h, DSPY_COPY_H2D) ||
                be->ops->copy(be, d64, l64, sizeof l64, DSPY_COPY_H2D)))
        rc = 24;
    if (!rc && (dspy_dist_allreduce_side(d, dev, n, false, cs) || dspy_dist_allreduce_side(d, d64, 5, true, cs) ||
                dspy_dist_join(d, cs)))
        rc = 25;
    if (!rc && (be->ops->copy(be, h, dev, n * sizeof *h, DSPY_COPY_D2H) ||
                be->ops->copy(be, l64, d64, sizeof l64, DSPY_COPY_D2H) || be->ops->sync(be)))
        rc = 26;
    for (size_t i = 0; !rc && i < n; i++)
        if (h[i] != (float)(i % 7) * 3.0f) rc = 27;
    if (!rc && (l64[0] != 0.375 || l64[1] != 3e15 || l64[2] != -9.0 || l64[3] != 0 || l64[4] != 22.5)) rc = 28;
    if (d64) be->ops->free(be, d64);
    if (!rc && dspy_dist_barrier(d, "end")) rc = 22;
    if (rc) fprintf(stderr, "rank %d: step %d failed: %s\n", rank, rc, dspy_errmsg());
    if (dev) be->ops->free(be, dev);
    free(h);
    dspy_dist_free(d);
    dspy_backend_free(be);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--rank")) return rank_main(atoi(argv[2]));
    char port[16];
    snprintf(port, sizeof port, "%d", test_free_port());
    setenv("WORLD_SIZE", "2", 1), setenv("MASTER_ADDR", "127.0.0.1", 1), setenv("MASTER_PORT", port, 1);
    setenv("NCCL_NVLS_ENABLE", "0", 1);
    pid_t kids[2];
    for (int r = 0; r < 2; r++) {
        char rs[16];
        snprintf(rs, sizeof rs, "%d", r);
        if ((kids[r] = fork()) == 0) {
            setenv("RANK", rs, 1), setenv("LOCAL_RANK", rs, 1);
            execl(argv[0], argv[0], "--rank", rs, (char *)NULL);
            _exit(127);
        }
    }
    int codes[2];
    for (int r = 0; r < 2; r++) {
        int status = 0;
        waitpid(kids[r], &status, 0);
        codes[r] = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (codes[0] == 77 || codes[1] == 77) return 77;
    CHECK_INT(codes[0], 0);
    CHECK_INT(codes[1], 0);
    return check_summary("test_cuda_dist");
}
