/* kern/cuda/kv_f8.cuh — an FP8 (E4M3) KV cache (kern/ops.h kv_f8_link, kv_f8.cu): the table that
 * maps a BF16 cache array to its 1-byte codes, and the store every cache writer uses (attn_in's
 * kernels, qkv_rope_store). Private to kern/cuda.
 *
 * Why a table and not operands: as with the FP8 weights (f8.cuh), the writers and the attention
 * are handed the layer's BF16 slot arrays by every path; the array's address names its codes.
 */
#ifndef DSPY_KERN_CUDA_KV_F8_CUH
#define DSPY_KERN_CUDA_KV_F8_CUH

#include <cuda_fp8.h>

#include "kern/cuda/cuda.cuh"

/* A linked cache: k, v the BF16 arrays (n elements each), k8, v8 their codes, index for index. */
typedef struct cu_kv8 {
    const void *k, *v;
    size_t n;
    uint8_t *k8, *v8;
} cu_kv8;

/* The codes of the layer slices kc, vc (each inside a linked cache, at the same offset), or
 * NULLs. Host side; cheap (a short scan under a lock). */
void dspy_cu_kv8_codes(const void *kc, const void *vc, uint8_t **k8, uint8_t **v8);

dspy_status dspy_cu_kv_f8_link(dspy_backend *be, dspy_tensor k, dspy_tensor v, dspy_tensor k8, dspy_tensor v8);
void dspy_cu_kv_f8_unlink(dspy_backend *be, const void *k);

/* Stores cache value x at index i of dst: as BF16, or where codes are kept (dst8 not NULL)
 * rounded on to E4M3 (the BF16 value's nearest, saturating at +-448), its code in dst8[i] and its
 * value, exact in BF16, in dst[i]. */
static __device__ __forceinline__ void kv_store(bf16 *dst, uint8_t *dst8, int64_t i, float x) {
    bf16 b = f2bf(x);
    if (dst8) {
        const __nv_fp8_storage_t c = __nv_cvt_float_to_fp8(bf2f(b), __NV_SATFINITE, __NV_E4M3);
        dst8[i] = (uint8_t)c;
        b = f2bf(__half2float(__half(__nv_cvt_fp8_to_halfraw(c, __NV_E4M3))));
    }
    dst[i] = b;
}

#endif
