/* train/dist.h — the ranks of a multi-GPU training run (private to src/train/).
 *
 * Data-parallel training runs one process per GPU. Each learns its place from torchrun's
 * variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), which `dspy finetune
 * --gpus N` sets for the processes it starts and any multi-node launcher can set too. Rank 0
 * serves the rendezvous store (train/store.h) and publishes NCCL's unique id; every rank builds
 * its NCCL communicator on GPU LOCAL_RANK. Gradients are summed by NCCL on the device
 * (kern/cuda/nccl.cu), never through the store.
 *
 * One rank (no variables set, or WORLD_SIZE=1) is the single-GPU or CPU run: no store, no NCCL,
 * and every collective is the identity — the path the CPU-only CI exercises.
 */
#ifndef DSPY_TRAIN_DIST_H
#define DSPY_TRAIN_DIST_H

#include <stdbool.h>
#include <stddef.h>

#include "dspy/status.h"

typedef struct dspy_dist_env {
    int rank, world, local_rank;
    char master_addr[256];
    int master_port;
} dspy_dist_env;

/* From the environment. Nothing set: rank 0 of 1. WORLD_SIZE > 1 needs RANK (LOCAL_RANK
 * defaults to RANK, MASTER_ADDR to 127.0.0.1, MASTER_PORT to 29500). DSPY_ERR_ARG naming the
 * variable when a value is not a whole number or out of range. */
dspy_status dspy_dist_env_read(dspy_dist_env *e);

typedef struct dspy_dist dspy_dist;

/* Joins the run: with several ranks, the store and the NCCL communicator on CUDA device
 * env->local_rank (cuda = false is refused: NCCL needs GPUs). timeout_s bounds the rendezvous.
 * Sets NCCL_NVLS_ENABLE=0 unless the environment says otherwise (NVLink multicast stays off). */
dspy_status dspy_dist_new(const dspy_dist_env *env, int cuda, double timeout_s, dspy_dist **out);
int dspy_dist_rank(const dspy_dist *d);
int dspy_dist_world(const dspy_dist *d);
/* buf (n F32, device memory with several ranks) summed over the ranks in place, enqueued on
 * `stream` (a cudaStream_t; NULL the default stream). One rank: returns at once. */
dspy_status dspy_dist_allreduce_sum(dspy_dist *d, float *buf, size_t n, void *stream);
/* buf (n F32, or F64 when f64) summed over the ranks in place like dspy_dist_allreduce_sum, but
 * on the rank's own side stream, after what `stream` has queued so far: `stream` goes on
 * meanwhile (the gradients' all-reduce overlapping the rest of the backward). dspy_dist_join
 * makes `stream` wait for every one queued before it. The ranks must queue their collectives in
 * the same order. One rank: nothing to do. */
dspy_status dspy_dist_allreduce_side(dspy_dist *d, void *buf, size_t n, bool f64, void *stream);
dspy_status dspy_dist_join(dspy_dist *d, void *stream);
/* The same for n F64 values (the trainer's per-sequence loss sums). */
dspy_status dspy_dist_allreduce_sum_f64(dspy_dist *d, double *buf, size_t n, void *stream);
/* Rank 0's `bytes` at buf to every rank, in place, on `stream`. One rank: returns at once. */
dspy_status dspy_dist_broadcast(dspy_dist *d, void *buf, size_t bytes, void *stream);
/* Every rank waits for the others (through the store; names used once). One rank: at once. */
dspy_status dspy_dist_barrier(dspy_dist *d, const char *name);
/* NULL-safe. Rank 0 last, after a barrier: its store serves the others until then. */
void dspy_dist_free(dspy_dist *d);

#endif
