/* kern/cuda/attention_decode.cuh — what the two batch decode-attention kernels share
 * (attention_decode_batch.cu: each sequence's keys on their own; attention_decode_shared.cu: a
 * shared prompt prefix read once for a group of sequences): one lane's share of a 16-key group
 * of the paged cache and its loads, how a run of groups is cut into slices, and the merges of
 * softmax states (a CTA's warps; a sequence's slices through global partials). Private to
 * kern/cuda. The register layouts are explained at the top of attention_decode_batch.cu. */
#ifndef DSPY_KERN_CUDA_ATTENTION_DECODE_CUH
#define DSPY_KERN_CUDA_ATTENTION_DECODE_CUH

#include <math.h>

#include "kern/cuda/cuda.cuh"
#include "kern/cuda/mma.cuh"

enum { DB_MAX_SPLITS = 32, DB_MIN_SEQS = 3 };

/* attention_decode_shared.cu: whether it takes a hinted decode call of nseg sequences (the
 * DSPY_CUDA_CASCADE knob, the shapes, the planned partials), and the launch. */
bool dspy_cu_decode_shared_fits(dspy_backend *be, int nseg, int NH, int NKV, int HS);
dspy_status dspy_cu_attention_decode_shared(dspy_backend *be, bf16 *out, const bf16 *q, const bf16 *kc, const bf16 *vc,
                                            const dspy_attn_meta *m, int NH, int NKV, int HS, float scale_log2);

/* Partial slots a query head of nseg sequences has in the planned partials (s->att_part). */
static inline size_t db_slots(const cuda_state *s, int nseg, int NH, int HS) {
    return s->att_part_n / ((size_t)nseg * NH * (HS + 2));
}

#define FULL_MASK 0xffffffffu

/* Word i (0..3, known at compile time after unrolling) of a 16-byte register group. */
static __device__ __forceinline__ uint32_t word(const uint4 &v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

/* One lane's share of a 16-key group (keys kb .. kb + 15). */
template <int D> struct kv_frag {
    uint4 k[2][D / 32]; /* key rows kb + g and kb + 8 + g, dims [c D/4, (c+1) D/4) */
    uint4 v[4][D / 64]; /* value rows kb + 2c, 2c+1, 2c+8, 2c+9, dims [g D/8, (g+1) D/8) */
};

/* The group's rows from the paged cache. Keys at or past L are read as key L - 1 (their scores
 * are masked; reading a written row keeps NaN out of 0 * V). bs16: the block size is a multiple
 * of 16, so the 16-aligned group lies in one block (one table lookup). */
template <int D>
static __device__ __forceinline__ void load_group(kv_frag<D> &f, const bf16 *__restrict__ kc,
                                                  const bf16 *__restrict__ vc, const int32_t *__restrict__ table,
                                                  int bs, bool bs16, int NKV, int kvh, int kb, int L, int g, int c) {
    const int off[6] = {g, 8 + g, 2 * c, 2 * c + 1, 2 * c + 8, 2 * c + 9};
    int64_t row[6];
    if (bs16) {
        const int64_t base = (int64_t)table[kb / bs] * bs + kb % bs;
#pragma unroll
        for (int i = 0; i < 6; i++) row[i] = base + (min(kb + off[i], L - 1) - kb);
    } else {
#pragma unroll
        for (int i = 0; i < 6; i++) {
            const int j = min(kb + off[i], L - 1);
            row[i] = (int64_t)table[j / bs] * bs + j % bs;
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const uint4 *p = (const uint4 *)(kc + (row[r] * NKV + kvh) * D + c * (D / 4));
#pragma unroll
        for (int u = 0; u < D / 32; u++) f.k[r][u] = p[u];
    }
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const uint4 *p = (const uint4 *)(vc + (row[2 + r] * NKV + kvh) * D + g * (D / 8));
#pragma unroll
        for (int u = 0; u < D / 64; u++) f.v[r][u] = p[u];
    }
}

/* Asks L2 for a later group's rows (lanes 0-15 the keys, 16-31 the values; no registers held),
 * so that its loads a step later find them there rather than in DRAM. */
template <int D>
static __device__ __forceinline__ void prefetch_group(const bf16 *__restrict__ kc, const bf16 *__restrict__ vc,
                                                      const int32_t *__restrict__ table, int bs, int NKV, int kvh,
                                                      int kb, int L, int lane) {
    const int j = min(kb + (lane & 15), L - 1);
    const int64_t row = (int64_t)table[j / bs] * bs + j % bs;
    const bf16 *p = (lane < 16 ? kc : vc) + (row * NKV + kvh) * D;
#pragma unroll
    for (int b = 0; b < D * 2; b += 128) asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p + b / 2));
}

/* How a run of NG 16-key groups is cut into slices: at most S, every one non-empty, at least W
 * groups a slice where there are that many. Returns the slices used; *per: groups a slice. */
static __device__ __forceinline__ int slices_of(int NG, int S, int W, int *per) {
    const int want = min(S, max(1, NG / W));
    *per = (NG + want - 1) / want;
    return (NG + *per - 1) / *per;
}

/* The warps' softmax states of 8 query columns (m_sh, l_sh, o_sh, written by every warp) merged
 * into one per column: w_sh[w][col] = warp w's weight, den_sh, mfin_sh (columns < ncol). */
template <int D, int W>
static __device__ __forceinline__ void merge_warps(const float (&m_sh)[W][8], const float (&l_sh)[W][8],
                                                   float (&w_sh)[W][8], float (&den_sh)[8], float (&mfin_sh)[8],
                                                   int ncol) {
    const int tid = threadIdx.x;
    if (tid < ncol) {
        float M = -INFINITY;
        for (int w = 0; w < W; w++) M = fmaxf(M, m_sh[w][tid]);
        float den = 0.0f;
        for (int w = 0; w < W; w++) {
            const float mw = m_sh[w][tid], wt = mw == -INFINITY ? 0.0f : exp2f(mw - M);
            w_sh[w][tid] = wt;
            den += wt * l_sh[w][tid];
        }
        den_sh[tid] = den, mfin_sh[tid] = M;
    }
}

/* Combines the partials of one sequence's G query heads of KV head kvh into out: its n slices at
 * slots 0 .. n - 1 of Stot a head (n <= DB_MAX_SPLITS), then resets its arrival counter. A slice
 * may hold no key of a sequence (max -inf, sum 0: weight 0); at least one does. Called by the
 * whole CTA. */
template <int D, int W>
static __device__ void combine_slices(bf16 *__restrict__ out, const float *__restrict__ part, int *cnt, int64_t pbase,
                                      int Stot, int n, int G, int64_t obase, float (&sw_sh)[8][DB_MAX_SPLITS],
                                      float (&sl_sh)[8][DB_MAX_SPLITS], float (&den_sh)[8]) {
    const int tid = threadIdx.x;
    __syncthreads(); /* the shared arrays may still be read by an earlier combine */
    __threadfence();
    for (int t = tid; t < G * n; t += W * 32) {
        const int qq = t / n, i = t % n;
        const float *st = part + (pbase + (int64_t)qq * Stot + i) * (D + 2) + D;
        sw_sh[qq][i] = __ldcg(st), sl_sh[qq][i] = __ldcg(st + 1);
    }
    __syncthreads();
    if (tid < G) {
        float M = -INFINITY;
        for (int i = 0; i < n; i++) M = fmaxf(M, sw_sh[tid][i]);
        float den = 0.0f;
        for (int i = 0; i < n; i++) {
            const float wt = exp2f(sw_sh[tid][i] - M); /* M is finite: exp2(-inf) = 0 for an empty slice */
            sw_sh[tid][i] = wt;
            den += wt * sl_sh[tid][i];
        }
        den_sh[tid] = den;
    }
    __syncthreads();
    for (int e = tid; e < G * D / 2; e += W * 32) {
        const int qq = e / (D / 2), d = 2 * (e % (D / 2));
        const float *p = part + (pbase + (int64_t)qq * Stot) * (D + 2) + d;
        float2 v[DB_MAX_SPLITS]; /* every slice's load in flight at once: one L2 round trip, not n */
#pragma unroll
        for (int i = 0; i < DB_MAX_SPLITS; i++)
            if (i < n) v[i] = __ldcg((const float2 *)(p + i * (D + 2)));
        float nx = 0.0f, ny = 0.0f;
#pragma unroll
        for (int i = 0; i < DB_MAX_SPLITS; i++)
            if (i < n) nx += sw_sh[qq][i] * v[i].x, ny += sw_sh[qq][i] * v[i].y;
        const float inv = 1.0f / den_sh[qq];
        *(__nv_bfloat162 *)(out + obase + (int64_t)qq * D + d) = __floats2bfloat162_rn(nx * inv, ny * inv);
    }
    if (tid == 0) *cnt = 0; /* ready for the next launch (or graph replay) */
}

#endif
