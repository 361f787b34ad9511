/* kern/cuda/timeline.cuh — the stamps of kern/cuda/timeline.h inside a kernel. A stamped .cu file
 * includes this, defines its bind function with TL_BIND_FN (timeline.cu calls it), and brackets
 * each stamped kernel:
 *     TL_BEGIN(DSPY_TL_ATTN_IN);   first statement (t[0])
 *     TL_SLOT();                   just before the dependency wait (the record's slot)
 *     TL_MARK(1);                  after the dependency wait
 *     TL_MARK(2);                  after the prologue
 *     TL_END();                    before each return that ends the block's work (t[3], the record)
 * Without DSPY_CUDA_TIMELINE every macro is empty (no code, no registers, no shared memory).
 * The device pointer is one __constant__ per file (as c_release): one stamped backend at a time.
 */
#ifndef DSPY_KERN_CUDA_TIMELINE_CUH
#define DSPY_KERN_CUDA_TIMELINE_CUH

#include "kern/cuda/cuda.cuh"
#include "kern/cuda/timeline.h"

/* The device buffer: a count of slots taken, its capacity, then the records. */
struct cu_tl_buf {
    unsigned n, cap, pad[2];
    dspy_cu_tl_rec rec[1]; /* cap of them */
};

/* Each stamped file's bind function (timeline.cu points them all at one buffer, or NULL). */
cudaError_t dspy_cu_tl_bind_mma(cu_tl_buf *b);
cudaError_t dspy_cu_tl_bind_decode(cu_tl_buf *b);

#ifdef DSPY_CUDA_TIMELINE

static __constant__ cu_tl_buf *c_tl;

#define TL_BIND_FN(name) \
    cudaError_t name(cu_tl_buf *b) { return cudaMemcpyToSymbol(c_tl, &b, sizeof b); }

/* Thread 0 writes the record of this block (slot from TL_SLOT; dropped past cap). */
static __device__ __forceinline__ void tl_write(const unsigned long long *t, unsigned slot, int kind) {
    cu_tl_buf *b = c_tl;
    if (threadIdx.x != 0 || !b || slot >= b->cap) return; /* ~0u: not bound at TL_SLOT */
    unsigned sm;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
    dspy_cu_tl_rec *r = &b->rec[slot];
    r->t[0] = t[0], r->t[1] = t[1], r->t[2] = t[2], r->t[3] = cu_global_ns();
    r->kind = (uint32_t)kind;
    r->block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    r->grid = gridDim.x * gridDim.y * gridDim.z;
    r->sm = sm;
}

/* t[0] into shared memory (no register held across the kernel: a held slot made two kernels
 * spill). */
#define TL_BEGIN(kind)                              \
    __shared__ unsigned long long tl_t_[3];         \
    __shared__ unsigned tl_slot_;                   \
    const int tl_kind_ = (kind);                    \
    if (threadIdx.x == 0) tl_t_[0] = cu_global_ns();
/* The record's slot, taken by thread 0 just before the dependency wait: its warp waits for the
 * atomic's answer (~1 us) where it would mostly wait anyway. */
#define TL_SLOT()                                                          \
    do {                                                                   \
        if (threadIdx.x == 0) tl_slot_ = c_tl ? atomicAdd(&c_tl->n, 1u) : ~0u; \
    } while (0)
#define TL_MARK(i)                        \
    do {                                  \
        if (threadIdx.x == 0) tl_t_[i] = cu_global_ns(); \
    } while (0)
#define TL_END() tl_write(tl_t_, tl_slot_, tl_kind_)

#else

#define TL_BIND_FN(name) \
    cudaError_t name(cu_tl_buf *b) { return b ? cudaErrorNotSupported : cudaSuccess; }
#define TL_BEGIN(kind)
#define TL_SLOT() \
    do {        \
    } while (0)
#define TL_MARK(i) \
    do {           \
    } while (0)
#define TL_END() \
    do {         \
    } while (0)

#endif

#endif
