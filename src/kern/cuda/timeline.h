/* kern/cuda/timeline.h — block timelines of the decode step's kernels: a diagnostic build
 * (cmake -DDSPY_CUDA_TIMELINE=ON) stamps every block of the tensor-core GEMV family (gemv_mma.cu:
 * linear, linear in pairs, attn_in, mlp_in, logits) and of the batched decode attention
 * (attention_decode_batch.cu) with the device's global timer, so that a step's time can be split
 * into what ncu cannot show with the kernels serialised: how long after one kernel's last block
 * ends the next one's dependency wait returns, how long blocks sit parked before it, and how
 * long each block works after it. bench_gpu --timeline writes the records; bench/timeline.py
 * reads them.
 *
 * A record is written by thread 0 of a block as it ends: t[0] its first instruction, t[1] the
 * dependency wait returned, t[2] its prologue done (the normed rows in shared memory; the
 * attention's keys attended; = t[1] for linear), t[3] the end (thread 0's; the other warps end
 * within the last unit's epilogue). Its slot is an atomic add by thread 0 just before the wait
 * (kept in shared memory until the end). Blocks that return before the wait (a decode
 * attention CTA with no keys) write nothing. Without the option the kernels' code is the same as
 * without this file, and these functions fail with DSPY_ERR_ARG.
 *
 * Host side: outside any step or capture, from the backend's thread.
 */
#ifndef DSPY_KERN_CUDA_TIMELINE_H
#define DSPY_KERN_CUDA_TIMELINE_H

#include <stdbool.h>
#include <stdint.h>

#include "kern/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Which kernel wrote a record. */
typedef enum {
    DSPY_TL_NONE = 0,
    DSPY_TL_LINEAR,      /* k_mma_linear (o_proj, down where not in pairs) */
    DSPY_TL_LINEAR_PAIR, /* k_mma_linear_pair */
    DSPY_TL_ATTN_IN,     /* k_mma_attn_in */
    DSPY_TL_MLP_IN,      /* k_mma_mlp_in */
    DSPY_TL_LOGITS,      /* k_mma_logits (and its greedy form; the last block's t[3] after its combine) */
    DSPY_TL_ATTN_DECODE, /* k_attn_decode_batch */
    DSPY_TL_KINDS
} dspy_tl_kind;

/* One block (48 bytes, as the device writes it). */
typedef struct dspy_cu_tl_rec {
    uint64_t t[4];  /* global timer, ns */
    uint32_t kind;  /* dspy_tl_kind */
    uint32_t block; /* linear block index (x fastest) */
    uint32_t grid;  /* blocks in the launch */
    uint32_t sm;    /* the SM it ran on */
} dspy_cu_tl_rec;

/* Whether this build stamps its kernels (DSPY_CUDA_TIMELINE). */
bool dspy_cu_timeline_built(void);
/* Room for `cap` records on the device (allocated at the first call, grown if asked for more),
 * emptied, and the kernels pointed at it: every stamped block launched from now on writes one.
 * DSPY_ERR_ARG without the option, DSPY_ERR_NOMEM with the size. */
dspy_status dspy_cu_timeline_start(dspy_backend *be, int cap);
/* Waits for the device, then copies the records written since start (at most cap) to out;
 * *n = how many were written, which may exceed cap (the rest were dropped on the device too). */
dspy_status dspy_cu_timeline_read(dspy_backend *be, dspy_cu_tl_rec *out, int cap, int *n);
/* The kernels stop writing; the buffer is freed (also by dspy_backend_free). */
dspy_status dspy_cu_timeline_stop(dspy_backend *be);
/* A kind's name ("attn_in", ...; "?" past the enum). */
const char *dspy_cu_tl_kind_name(int kind);

#ifdef __cplusplus
}
#endif

#endif
