/* kern/cuda/f8.cuh — FP8 (E4M3) decode weights (f8.cu): the rounding kernel behind the f8_link
 * op and the process-wide table that maps a BF16 weight matrix to its 1-byte copy, read by the
 * tensor-core GEMV (gemv_mma.cu) when it is handed that matrix. Private to kern/cuda.
 *
 * Why a table and not a second operand: the copy belongs to the model (one upload, any number of
 * engines, each with a backend of its own) while the ops take the BF16 matrix every path shares;
 * device pointers are unique in the process, so the matrix's address names its copy.
 */
#ifndef DSPY_KERN_CUDA_F8_CUH
#define DSPY_KERN_CUDA_F8_CUH

#include <cuda_fp8.h>

#include "kern/cuda/cuda.cuh"

/* A matrix's FP8 copy: q (OC, C) E4M3 codes, row-major; scale (OC) each row's 2^k (weight = code
 * * 2^k, f8.cu). */
typedef struct cu_f8 {
    const void *w;
    const uint8_t *q;
    const float *scale;
    int OC, C;
    bool act8; /* W8A8 prompt GEMMs (gemm.cu) */
} cu_f8;

/* The largest v of the block's NT threads (a multiple of 32), for every thread; red: NT / 32
 * floats of shared memory. */
template <int NT> static __device__ __forceinline__ float f8_block_max(float v, float *red) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    v = red[0];
    for (int i = 1; i < NT / 32; i++) v = fmaxf(v, red[i]);
    return v;
}

/* The smallest row scale exponent (every 2^k and scaled value a normal number). */
enum { F8_K_MIN = -100 };

/* The smallest k >= F8_K_MIN with amax <= 448 * 2^k (448: E4M3's largest finite value; a zero row
 * takes F8_K_MIN): kern/e4m3.c's dspy_e4m3_row_exponent without its upper bound, which the
 * callers apply (a weight row refuses k > 7, an activation row takes DSPY_ACT8_K_MAX). */
static __device__ __forceinline__ int f8_exponent(float amax) {
    if (!(amax > 0x1p-100f * 448.0f)) return F8_K_MIN;
    int e;
    frexpf(amax, &e); /* amax in [2^(e-1), 2^e) */
    int k = e - 9;
    while (ldexpf(448.0f, k) < amax) k++;
    while (ldexpf(448.0f, k - 1) >= amax) k--;
    return k;
}

/* Eight values v[i] * down as E4M3 codes (nearest even, saturating), byte i = value i: the W8A8
 * activation rounding (down = 2^-k of the row; gemm.cu k_act8 and the producers in pointwise.cu
 * that write codes directly share it, so every path makes the same codes). */
static __device__ __forceinline__ uint2 act8_pack8(const float *v, float down) {
    uint32_t w[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const uint32_t lo = __nv_cvt_float2_to_fp8x2(make_float2(v[4 * i] * down, v[4 * i + 1] * down), __NV_SATFINITE,
                                                     __NV_E4M3);
        const uint32_t hi = __nv_cvt_float2_to_fp8x2(make_float2(v[4 * i + 2] * down, v[4 * i + 3] * down),
                                                     __NV_SATFINITE, __NV_E4M3);
        w[i] = lo | hi << 16;
    }
    return make_uint2(w[0], w[1]);
}

/* The copy linked to BF16 matrix w (OC, C), or false (none, or linked with another shape). Host
 * side; cheap (a short scan under a lock). */
bool dspy_cu_f8_find(const void *w, int OC, int C, cu_f8 *out);

dspy_status dspy_cu_f8_link(dspy_backend *be, dspy_tensor w, dspy_tensor q, dspy_tensor scale, int OC, int C,
                            bool act8);
void dspy_cu_f8_unlink(dspy_backend *be, const void *w);

#endif
