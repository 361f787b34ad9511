/* test_dist.c — the ranks of data-parallel training without GPUs (train/dist.h): torchrun's
 * variables read and checked (nothing set is one rank; bad or missing values name the
 * variable), and the single-rank path every CPU run takes: no store, no NCCL, collectives that
 * leave the data as it is, barriers that return at once. Several ranks on the CPU are refused
 * with the reason. (Several GPUs: test_cuda_dist.) */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "train/dist.h"

static void clear_env(void) {
    static const char *const k[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"};
    for (size_t i = 0; i < sizeof k / sizeof *k; i++) unsetenv(k[i]);
}

static void test_env(void) {
    dspy_dist_env e;
    clear_env();
    CHECK_OK(dspy_dist_env_read(&e));
    CHECK(e.rank == 0 && e.world == 1 && e.local_rank == 0 && e.master_port == 29500);
    CHECK_STR(e.master_addr, "127.0.0.1");

    setenv("WORLD_SIZE", "4", 1), setenv("RANK", "3", 1), setenv("LOCAL_RANK", "1", 1);
    setenv("MASTER_ADDR", "node0.example", 1), setenv("MASTER_PORT", "29511", 1);
    CHECK_OK(dspy_dist_env_read(&e));
    CHECK(e.rank == 3 && e.world == 4 && e.local_rank == 1 && e.master_port == 29511);
    CHECK_STR(e.master_addr, "node0.example");
    unsetenv("LOCAL_RANK"); /* defaults to RANK (one node) */
    CHECK_OK(dspy_dist_env_read(&e));
    CHECK_INT(e.local_rank, 3);

    setenv("RANK", "4", 1);
    CHECK_STATUS(dspy_dist_env_read(&e), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "RANK='4'");
    CHECK_CONTAINS(dspy_errmsg(), "0 to 3");
    unsetenv("RANK");
    CHECK_STATUS(dspy_dist_env_read(&e), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "RANK is not set");
    setenv("RANK", "1", 1), setenv("WORLD_SIZE", "two", 1);
    CHECK_STATUS(dspy_dist_env_read(&e), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "WORLD_SIZE='two'");
    setenv("WORLD_SIZE", "2", 1), setenv("MASTER_PORT", "70000", 1);
    CHECK_STATUS(dspy_dist_env_read(&e), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "MASTER_PORT");
    setenv("MASTER_PORT", "29500", 1), setenv("WORLD_SIZE", "0", 1);
    CHECK_STATUS(dspy_dist_env_read(&e), DSPY_ERR_ARG);
    clear_env();
}

static void test_single_rank(void) {
    clear_env();
    dspy_dist_env e;
    CHECK_OK(dspy_dist_env_read(&e));
    dspy_dist *d = NULL;
    CHECK_OK(dspy_dist_new(&e, 0, 1.0, &d));
    if (!d) return;
    CHECK_INT(dspy_dist_rank(d), 0);
    CHECK_INT(dspy_dist_world(d), 1);
    float g[5] = {1.5f, -2.0f, 0.0f, 3.25f, 1e30f}, want[5];
    memcpy(want, g, sizeof g);
    CHECK_OK(dspy_dist_allreduce_sum(d, g, 5, NULL)); /* the sum over one rank */
    CHECK(memcmp(g, want, sizeof g) == 0);
    unsigned char b[3] = {7, 8, 9};
    CHECK_OK(dspy_dist_broadcast(d, b, 3, NULL));
    CHECK(b[0] == 7 && b[1] == 8 && b[2] == 9);
    CHECK_OK(dspy_dist_barrier(d, "start"));
    CHECK_OK(dspy_dist_barrier(d, "end"));
    dspy_dist_free(d);
    dspy_dist_free(NULL);

    /* several ranks on the CPU: refused, saying why */
    e.world = 2, e.rank = 1;
    d = NULL;
    CHECK(dspy_dist_new(&e, 0, 1.0, &d) != DSPY_OK);
    CHECK(strstr(dspy_errmsg(), "CUDA") != NULL);
    CHECK(d == NULL);
    e.rank = 2;
    CHECK_STATUS(dspy_dist_new(&e, 0, 1.0, &d), DSPY_ERR_ARG);
}

int main(void) {
    RUN(test_env);
    RUN(test_single_rank);
    return check_summary("test_dist");
}
