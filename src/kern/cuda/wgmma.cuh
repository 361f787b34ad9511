/* kern/cuda/wgmma.cuh — Hopper's warpgroup MMA (wgmma.mma_async, sm_90a) for the prefill
 * attention: the m64n64k16 BF16 shape with F32 accumulators, A from shared memory or from
 * registers, B from shared memory, tiles of 64 rows x 128 bytes in the 128-byte swizzle (mma.cuh's
 * swz<8>: chunk c of row r at c ^ (r & 7), which is the hardware's pattern when a tile starts on a
 * 1,024-byte boundary). Private to kern/cuda.
 *
 * The accumulator of a warpgroup's 64 x 64 result is, per warp w, rows 16w .. 16w + 15 in the
 * m16n8 C layout of mma.sync repeated over 8 column tiles (d[n][0..3]: rows g and g + 8, columns
 * 8n + 2t, +1), and an A operand in registers is the m16n8k16 A fragment: so the flash kernels'
 * softmax runs unchanged on wgmma's scores and hands its BF16 weights straight back.
 *
 * Where the compiler does not target sm_90a (__CUDA_ARCH_FEAT_SM90_ALL undefined) every function
 * here compiles to nothing and dspy_cu_wgmma_built says so: callers ask before launching. */
#ifndef DSPY_KERN_CUDA_WGMMA_CUH
#define DSPY_KERN_CUDA_WGMMA_CUH

#include <stdint.h>

#include "kern/cuda/mma.cuh"

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WG_ON 1
#else
#define WG_ON 0
#endif

/* The shared-memory descriptor of a 128-byte-swizzled tile at p (a 1,024-byte aligned tile, or
 * such a tile plus a 32-byte step along K): both byte offsets 1,024, the stride between groups of
 * 8 rows — the K-major form uses one of them, the MN-major (transposed) form the other, and the
 * second one only past 64 elements along MN, which these tiles never reach. */
static __device__ __forceinline__ uint64_t wg_desc(const void *p) {
    const uint64_t a = smem_u32(p);
    return ((a & 0x3FFFFu) >> 4) | ((uint64_t)(1024 >> 4) << 16) | ((uint64_t)(1024 >> 4) << 32) | (1ull << 62);
}

/* wgmma.fence: register writes by ordinary instructions (accumulators rescaled, A fragments
 * packed) become visible to the next wgmma. */
static __device__ __forceinline__ void wg_fence() {
#if WG_ON
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
static __device__ __forceinline__ void wg_commit() {
#if WG_ON
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N> static __device__ __forceinline__ void wg_wait() {
#if WG_ON
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
/* Shared memory written through the generic proxy (cp.async, st.shared) is seen by the async
 * proxy wgmma reads through only after this fence (each writing thread, before the barrier). */
static __device__ __forceinline__ void wg_fence_proxy() {
#if WG_ON
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

/* Pins an accumulator's registers after wg_wait: without it the compiler may move a read of d
 * above the wait (the wait names no register). */
static __device__ __forceinline__ void wg_pin(float (&d)[8][4]) {
#pragma unroll
    for (int n = 0; n < 8; n++)
        asm volatile("" : "+f"(d[n][0]), "+f"(d[n][1]), "+f"(d[n][2]), "+f"(d[n][3])::"memory");
}

#define WG_D32(d)                                                                                                      \
    "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]),           \
        "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]),       \
        "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]),       \
        "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),       \
        "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
#define WG_R32                                                                                                         \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, " \
    "%24, %25, %26, %27, %28, %29, %30, %31}"

/* d (64 x 64) [+]= A (64 x 16, K-major tile at descriptor da) B (16 x 64, K-major: B^T's rows are
 * the 64 columns, at db); acc 0 overwrites d. */
static __device__ __forceinline__ void wg_ss(float (&d)[8][4], uint64_t da, uint64_t db, int acc) {
#if WG_ON
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WG_R32 ", %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : WG_D32(d)
                 : "l"(da), "l"(db), "r"(acc));
#endif
}

/* d (64 x 64) += A (64 x 16, this thread's m16n8k16 A fragment a) B (16 x 64, MN-major: 16 rows of
 * 64 contiguous elements at db, i.e. a row-major K x N tile, transposed by the instruction). */
static __device__ __forceinline__ void wg_rs_t(float (&d)[8][4], const uint32_t (&a)[4], uint64_t db) {
#if WG_ON
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WG_R32
                 ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
                 : WG_D32(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
#endif
}

#undef WG_R32
#undef WG_D32

#endif
