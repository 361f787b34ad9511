/* kern/backend.h — a compute backend: a device, an execution context, and the op table.
 *
 * Made by whoever runs compute (an engine, a trainer, a test) and used from one thread at a
 * time. The CPU backend's context is its OpenMP team and planned scratch; the CUDA backend's is
 * a stream, a cuBLASLt handle, a GEMM workspace, planned scratch for split-K attention and
 * sampling, and a sticky error (the first failure, returned by every later call). A plan sizes
 * the scratch once; entries given more rows or a longer sequence than planned fail with
 * DSPY_ERR_ARG instead of allocating.
 *
 * Not here: the model's weights (model/weights.c uploads them through a backend), buffers of an
 * engine or trainer (they allocate through ops->alloc, once).
 */
#ifndef DSPY_KERN_BACKEND_H
#define DSPY_KERN_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "dspy/status.h"
#include "dspy/tensor.h"
#include "kern/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What the scratch must hold: the largest call the owner will make. Zero fields take a small
 * default; dspy_backend_reserve may grow the plan later (outside any step or capture). */
typedef struct dspy_backend_plan {
    int32_t max_rows;  /* rows (tokens) of one call, any op */
    int32_t max_len;   /* longest sequence an attention call sees (positions) */
    int32_t max_seqs;  /* segments of one attention call */
    int32_t max_vocab; /* V of sample / cross_entropy */
    int32_t NH;        /* query heads (split-K attention partials) */
    int32_t HS;        /* head size */
    int32_t n_threads; /* CPU: OpenMP threads (0 = the OpenMP default) */
    int32_t act8_width; /* the widest input row of a W8A8 linear (kern/ops.h f8_link act8); 0 = none */
} dspy_backend_plan;

struct dspy_backend {
    const dspy_ops *ops;
    dspy_device dev;
    dspy_dtype act_dtype;   /* activations and KV cache: F32 on the CPU, BF16 on CUDA */
    dspy_dtype w_dtype;     /* matrices as the backend wants them: the stored dtype on the CPU
                               (F32 or BF16), BF16 on CUDA */
    dspy_backend_plan plan;
    int64_t n_allocs;       /* device allocations made through ops->alloc (tests check that steps make none) */
    void *impl;             /* the backend's own state */
};

/* Creates a backend on `dev` with scratch for `plan` (NULL: defaults). DSPY_ERR_BACKEND when the
 * device cannot be used (no CUDA in this build, no device, driver too old: the message says
 * which), DSPY_ERR_NOMEM with the sizes when the scratch does not fit. */
dspy_status dspy_backend_new(dspy_device dev, const dspy_backend_plan *plan, dspy_backend **out);
/* NULL-safe; waits for queued work first. */
void dspy_backend_free(dspy_backend *be);
/* Grows the scratch to cover `plan` (fields only grow). Not during a step or a capture. */
dspy_status dspy_backend_reserve(dspy_backend *be, const dspy_backend_plan *plan);

/* Tensor helpers: a view of `n` elements at p on the backend's device. */
static inline dspy_tensor dspy_bt(const dspy_backend *be, void *p, int64_t n, dspy_dtype dt) {
    return dspy_tensor_make(p, n, dt, be->dev.type);
}

/* Backend implementations (kern/cpu/backend_cpu.c, kern/cuda/backend_cuda.cu). */
dspy_status dspy_backend_cpu_init(dspy_backend *be);
void dspy_backend_cpu_release(dspy_backend *be);
dspy_status dspy_backend_cpu_reserve(dspy_backend *be, const dspy_backend_plan *plan);
/* Switches a CPU backend to the fast kernels (dspy_cpu_kernels: its op table becomes "cpu-fast")
 * with scratch for linear inputs up to max_width wide (the plan's max_rows rows); kept across
 * later reserves. DSPY_ERR_ARG on a CUDA backend, DSPY_ERR_NOMEM with the size. */
dspy_status dspy_backend_cpu_use_fast(dspy_backend *be, int32_t max_width);
#ifdef DSPY_HAVE_CUDA
dspy_status dspy_backend_cuda_init(dspy_backend *be);
void dspy_backend_cuda_release(dspy_backend *be);
dspy_status dspy_backend_cuda_reserve(dspy_backend *be, const dspy_backend_plan *plan);
void *dspy_backend_cuda_stream(dspy_backend *be);
/* Opens cuBLASLt (kern/cuda/cublaslt_api.cuh; the first CUDA backend does): NULL when every entry
 * point was found, else why not. Needs no GPU. */
const char *dspy_cu_lt_load(void);
#endif
/* The native queue every op of this backend runs on: the cudaStream_t of a CUDA backend (for
 * NCCL collectives that must run in order with its ops, train/dist.h), NULL on the CPU. */
void *dspy_backend_native_stream(dspy_backend *be);

#ifdef __cplusplus
}
#endif
#endif
