/* kern/cuda/train.cuh — device helpers shared by the training kernels (train_*.cu): block-wide
 * sums, the online log-sum-exp pair, the grid size of element-wise kernels, and the
 * deterministic column sum that rmsnorm_backward and linear_backward use for weight/bias
 * gradients. Private to kern/cuda. */
#ifndef DSPY_KERN_CUDA_TRAIN_CUH
#define DSPY_KERN_CUDA_TRAIN_CUH

#include <math.h>

#include "kern/cuda/cuda.cuh"

/* Blocks of 256 threads for a grid-stride loop over n elements (capped; the loop covers the rest). */
static inline unsigned tr_grid(int64_t n) {
    unsigned b = cu_blocks(n, 256);
    return b > 65535u * 8 ? 65535u * 8 : (b ? b : 1);
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it. part is
 * 32 floats of shared memory; the call may be repeated with the same part. */
__device__ __forceinline__ float tr_block_sum(float v, float *part) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    __syncthreads(); /* part may still be read by a previous call */
    if (l == 0) part[w] = v;
    __syncthreads();
    v = l < (int)(blockDim.x >> 5) ? part[l] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* An online log-sum-exp: sum exp(x - m) = s over the values seen, m their maximum (-inf and
 * s = 0 for none). Merging rescales the smaller-maximum side; -inf maxima never make NaN. */
struct tr_lse {
    float m, s;
};

__device__ __forceinline__ tr_lse tr_lse_merge(tr_lse a, tr_lse b) {
    float m = fmaxf(a.m, b.m);
    if (m == -INFINITY) return a;
    return tr_lse{m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

__device__ __forceinline__ tr_lse tr_lse_add(tr_lse a, float x) {
    if (x == -INFINITY) return a; /* adds nothing (and -inf - -inf would be NaN) */
    if (x > a.m) return tr_lse{x, a.s * expf(a.m - x) + 1.0f}; /* expf(-inf) = 0 for the first value */
    return tr_lse{a.m, a.s + expf(x - a.m)};
}

/* The key tiles of a query tile of the training attention with a shared prefix (ops.h
 * attention_train: row t sees keys j <= t with j >= start[t] or j < prefix). kbeg is the tile's
 * smallest start (its first row's), last its last row. Tiles i < na cover the prefix keys below
 * kbeg, [0, na * tile); the rest go on from bbeg = max(kbeg, na * tile), tile by tile, to last:
 * disjoint, so no key is counted twice, and every key a row of the tile sees is in one. Without
 * a prefix (or kbeg 0) it is today's walk from kbeg. Keys of a tile that a row does not see are
 * masked per element (tr_sees). */
struct tr_keys {
    int na, bbeg, nt;
};

__host__ __device__ __forceinline__ tr_keys tr_key_tiles(int prefix, int kbeg, int last, int tile) {
    tr_keys r;
    const int pe = prefix < kbeg ? prefix : kbeg;
    r.na = (pe + tile - 1) / tile;
    r.bbeg = kbeg > r.na * tile ? kbeg : r.na * tile;
    r.nt = r.na + (last >= r.bbeg ? (last - r.bbeg) / tile + 1 : 0);
    return r;
}

/* The first key of tile i of tr_key_tiles. */
__host__ __device__ __forceinline__ int tr_key_tile(const tr_keys &r, int i, int tile) {
    return i < r.na ? i * tile : r.bbeg + (i - r.na) * tile;
}

/* Whether row `row` (its example starting at `st`) sees key `key`. */
__device__ __forceinline__ bool tr_sees(int key, int row, int st, int prefix) {
    return key <= row && (key >= st || key < prefix);
}

/* grad_sumsq's per-block partial sums live in the training scratch after its train_rows_n
 * floats (train_plan.cu allocates TR_SUMSQ_FLOATS more: the doubles plus alignment). */
enum { TR_SUMSQ_BLOCKS = 1024, TR_SUMSQ_FLOATS = 2 * TR_SUMSQ_BLOCKS + 2 };
static inline double *tr_sumsq_partials(cuda_state *s) {
    return (double *)(s->train_rows + ((s->train_rows_n + 1) & ~(size_t)1));
}

/* dst (C) += column sums over N rows of a (N, C), times b (N, C) * r (N) per element when b is
 * given. Deterministic (a fixed order per column); no scratch. */
dspy_status dspy_cu_train_colsum(dspy_backend *be, const char *what, float *dst, const float *a, const float *b,
                            const float *r, int N, int C);

/* train_attention_tc.cu: the tensor-core training attention (BF16 q, k, v; F32 everything else),
 * behind train_attention.cu's entries, which check the arguments. D (T * NH) is dout . out per
 * (row, head), as the F32 backward computes it. */
dspy_status dspy_cu_train_tc_setup(dspy_backend *be);
dspy_status dspy_cu_attention_train_tc(dspy_backend *be, float *out, float *lse, const bf16 *q, const bf16 *k,
                                       const bf16 *v, const int32_t *start, int prefix, int T, int NH, int NKV,
                                       int HS);
dspy_status dspy_cu_attention_train_backward_tc(dspy_backend *be, float *dq, float *dk, float *dv, const float *dout,
                                                const float *lse, const float *D, const bf16 *q, const bf16 *k,
                                                const bf16 *v, const int32_t *start, int prefix, int T, int NH,
                                                int NKV, int HS);

/* train_attention_fa.cu: the same two ops in the FlashAttention-2 arrangement (mma.sync, register
 * softmax, cp.async double buffering) for HS 64 or 128 with 16-byte aligned tensors. fits says
 * whether it takes the call (DSPY_CUDA_TRAIN_ATTN=wmma sends every call to the kernels above).
 * The backward computes D into D (T * NH) itself and uses dq as scratch before writing it. out is
 * F32, or BF16 when out16 (written rounded once; the backward reads it so); dout F32, or BF16 when
 * dout16; dq, dk, dv F32, or BF16 when grad16 (rounded once; needs dout16, and NH == NKV or
 * NH >= 4 NKV: the GQA sums are F32 in dq's memory until rounded; else an ARG error). */
dspy_status dspy_cu_train_fa_setup(dspy_backend *be);
bool dspy_cu_train_fa_fits(int T, int HS, const void *const *ptrs, int n);
dspy_status dspy_cu_attention_train_fa(dspy_backend *be, void *out, bool out16, float *lse, const bf16 *q,
                                       const bf16 *k, const bf16 *v, const int32_t *start, int prefix, int T, int NH,
                                       int NKV, int HS);
dspy_status dspy_cu_attention_train_backward_fa(dspy_backend *be, void *dq, void *dk, void *dv, bool grad16,
                                                const void *dout, bool dout16, const void *out, bool out16,
                                                const float *lse, float *D, const bf16 *q, const bf16 *k,
                                                const bf16 *v, const int32_t *start, int prefix, int T, int NH,
                                                int NKV, int HS);

/* train_linear.cu: D = alpha op(A) @ op(B) + beta D on cuBLASLt (column-major; see train_linear.cu's
 * layout note), BF16 A and B, F32 accumulation, D F32 or (d16) BF16 (beta 0 or 1 either way), with
 * the plan cache entry (m, n, k, tag); a tag stands for one (ta, tb) pair. train_lora.cu's GEMMs. */
dspy_status dspy_cu_train_gemm(dspy_backend *be, const char *what, int tag, int m, int n, int k, bool ta, bool tb,
                               float alpha, float beta, const void *A, const void *B, void *D, bool d16);

#endif
