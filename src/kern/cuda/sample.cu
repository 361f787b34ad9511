/* sample.cu — sampling on the device (kern/ops.h sample).
 *
 * The same distribution as the CPU reference (transformers' temperature, top-k with ties kept,
 * top-p nucleus), without sorting the vocabulary:
 *   1. max, argmax (lowest id among equal maxima) and log-sum-exp of the raw logits, by 16 blocks
 *      a row (each a part of the vocabulary, combined by the last to finish): greedy rows stop
 *      here, and every row's logprob is logit[token] - lse;
 *   2. top-k: the k-th largest logit by a 4-pass radix select (8 bits a pass) over
 *      order-preserving 32-bit keys, counting; kept = keys >= it (so ties with the k-th stay);
 *   3. top-p: among the kept, the key at which the mass ranked at or above first reaches
 *      top_p * total, by the same radix walk weighted by mass; kept = keys >= it. (The CPU keeps
 *      a token while the mass ranked strictly above it is < top_p; the two differ only in how
 *      exactly equal logits at the cut are split, where the device keeps them all);
 *   4. the draw: target = uniform * kept mass, then the first id, in ascending id order, whose
 *      cumulative kept mass exceeds it (a block-wide prefix sum over per-thread id ranges).
 * Masses exp((x - max) / T) are summed as 40-bit fixed-point integers, so every sum is exact and
 * independent of thread timing: the same logits and uniform always give the same token.
 */
#include <math.h>

#include "kern/cuda/cuda.cuh"

enum { SAMPLE_THREADS = 512, SAMPLE_PARTS = 32 }; /* 32 blocks per row: a batch-1 step spreads its scan over 32 SMs */

#define FX_ONE 1099511627776.0f /* 2^40 */

static __device__ __forceinline__ uint32_t fkey(float f) {
    uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static __device__ __forceinline__ unsigned long long fx_mass(float x, float mx, float inv_t) {
    return __float2ull_rn(expf((x - mx) * inv_t) * FX_ONE);
}

/* Block-wide exclusive prefix sum of v; *total gets the sum. Every thread must call it. */
static __device__ unsigned long long block_excl_scan(unsigned long long v, unsigned long long *total) {
    __shared__ unsigned long long ws[32];
    __shared__ unsigned long long tot;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    unsigned long long inc = v;
    for (int o = 1; o < 32; o <<= 1) {
        unsigned long long n = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o) inc += n;
    }
    if (lane == 31) ws[w] = inc;
    __syncthreads();
    if (w == 0) {
        unsigned long long s = lane < nw ? ws[lane] : 0, si = s;
        for (int o = 1; o < 32; o <<= 1) {
            unsigned long long n = __shfl_up_sync(0xffffffffu, si, o);
            if (lane >= o) si += n;
        }
        if (lane < nw) ws[lane] = si - s; /* exclusive, per warp */
        if (lane == nw - 1) tot = si;
    }
    __syncthreads();
    unsigned long long r = ws[w] + inc - v;
    *total = tot;
    __syncthreads(); /* ws and tot are reused by the next call */
    return r;
}

/* Radix walk from the top: the largest key K such that the weight of keys >= K (among keys >=
 * floor) reaches `need`. weighted: weight = fixed-point mass, else 1 per key. */
static __device__ uint32_t radix_top(const float *x, int V, uint32_t floor_key, unsigned long long need, bool weighted,
                              float mx, float inv_t) {
    __shared__ unsigned long long hist[256];
    __shared__ uint32_t s_prefix;
    __shared__ unsigned long long s_above;
    uint32_t prefix = 0, mask = 0;
    unsigned long long above = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            uint32_t k = fkey(x[i]);
            if (k < floor_key || (k & mask) != prefix) continue;
            atomicAdd(&hist[(k >> shift) & 255], weighted ? fx_mass(x[i], mx, inv_t) : 1ull);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int b = 255;
            for (; b > 0; b--) {
                if (above + hist[b] >= need) break;
                above += hist[b];
            }
            s_prefix = prefix | ((uint32_t)b << shift);
            s_above = above;
        }
        __syncthreads();
        prefix = s_prefix;
        above = s_above;
        mask |= 255u << shift;
        __syncthreads();
    }
    return prefix;
}

/* Grid (rows, SAMPLE_PARTS). Every block takes a contiguous part of its row's vocabulary and
 * writes its maximum (the lowest id among equal maxima) and its sum of exp(x - maximum) to
 * part; the block that arrives last for the row (an atomic counter it resets) combines them into
 * the row's argmax and log-sum-exp, and, for a sampled row, runs steps 2-4 over the whole row. */
static __global__ __launch_bounds__(SAMPLE_THREADS) void k_sample(int32_t *tokens, float *logprobs, const float *logits,
                                                           const dspy_sample_param *params, int V, float *part,
                                                           int *count) {
    griddep_wait();
    const int row = blockIdx.x, P = gridDim.y, pi = blockIdx.y;
    const float *x = logits + (int64_t)row * V;
    const dspy_sample_param sp = params[row];
    __shared__ float s_val[32], s_sum[32];
    __shared__ int s_idx[32];
    __shared__ float s_max, s_lse;
    __shared__ int s_best, s_tok;
    __shared__ bool s_last;
    __shared__ float s_part[3 * SAMPLE_PARTS];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    /* 1. this part's max / argmax (ties: lowest id) and sum of exp(x - max) */
    const int chunk = (V + P - 1) / P, i0 = pi * chunk, i1 = min(V, i0 + chunk);
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    /* unrolled: several loads in flight per thread, not one L2 round trip per element */
#pragma unroll 4
    for (int i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
        float v = x[i];
        if (v > bv) bv = v, bi = i; /* ascending i per thread: the first maximum stays */
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
    }
    if (lane == 0) s_val[w] = bv, s_idx[w] = bi;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int k = 1; k < nw; k++)
            if (s_val[k] > bv || (s_val[k] == bv && s_idx[k] < bi)) bv = s_val[k], bi = s_idx[k];
        s_max = bv, s_best = bi;
    }
    __syncthreads();
    const float lmax = s_max;
    float se = 0.0f;
#pragma unroll 4
    for (int i = i0 + threadIdx.x; i < i1; i += blockDim.x) se += expf(x[i] - lmax);
    for (int o = 16; o > 0; o >>= 1) se += __shfl_xor_sync(0xffffffffu, se, o);
    if (lane == 0) s_sum[w] = se;
    __syncthreads();
    float *pp = part + ((int64_t)row * P + pi) * 3;
    if (threadIdx.x == 0) {
        float t = 0.0f;
        for (int k = 0; k < nw; k++) t += s_sum[k];
        pp[0] = lmax, pp[1] = __int_as_float(s_best), pp[2] = t;
        __threadfence();
        s_last = atomicAdd(&count[row], 1) == P - 1;
    }
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    /* combine the parts: their partials loaded in parallel, then one thread reduces */
    if (threadIdx.x < 3 * P) s_part[threadIdx.x] = __ldcg(part + (int64_t)row * P * 3 + threadIdx.x);
    __syncthreads();
    if (threadIdx.x == 0) {
        float M = -INFINITY;
        int best = 0x7fffffff;
        for (int k = 0; k < P; k++) {
            float m = s_part[3 * k];
            int id = __float_as_int(s_part[3 * k + 1]);
            if (m > M || (m == M && id < best)) M = m, best = id;
        }
        float tot = 0.0f;
        for (int k = 0; k < P; k++) {
            float m = s_part[3 * k];
            if (m > -INFINITY) tot += s_part[3 * k + 2] * expf(m - M);
        }
        s_max = M, s_best = best, s_tok = best, s_lse = M + logf(tot);
        count[row] = 0; /* ready for the next launch (or graph replay) */
    }
    __syncthreads();
    const float mx = s_max;
    if (sp.temperature > 0.0f) {
        const float inv_t = 1.0f / sp.temperature;
        uint32_t floor_key = 0;
        /* 2. top-k */
        if (sp.top_k > 0 && sp.top_k < V) floor_key = radix_top(x, V, 0, (unsigned long long)sp.top_k, false, mx, inv_t);
        /* 3. top-p: the mass of the top-k survivors, then the cut */
        if (sp.top_p < 1.0f) {
            unsigned long long own = 0, total;
            for (int i = threadIdx.x; i < V; i += blockDim.x)
                if (fkey(x[i]) >= floor_key) own += fx_mass(x[i], mx, inv_t);
            block_excl_scan(own, &total);
            unsigned long long need = (unsigned long long)((double)sp.top_p * (double)total);
            if (need < 1) need = 1;
            uint32_t pk = radix_top(x, V, floor_key, need, true, mx, inv_t);
            if (pk > floor_key) floor_key = pk;
        }
        /* 4. the draw over kept ids in ascending order: each thread a contiguous id range */
        const int ch = (V + blockDim.x - 1) / blockDim.x;
        const int j0 = threadIdx.x * ch, j1 = min(V, j0 + ch);
        unsigned long long own = 0, total;
        for (int i = j0; i < j1; i++)
            if (fkey(x[i]) >= floor_key) own += fx_mass(x[i], mx, inv_t);
        unsigned long long before = block_excl_scan(own, &total);
        unsigned long long target = (unsigned long long)(sp.uniform * (double)total);
        if (target >= before && target < before + own) {
            unsigned long long cum = before;
            for (int i = j0; i < j1; i++) {
                if (fkey(x[i]) < floor_key) continue;
                cum += fx_mass(x[i], mx, inv_t);
                if (cum > target) {
                    s_tok = i;
                    break;
                }
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        tokens[row] = s_tok;
        logprobs[row] = x[s_tok] - s_lse;
    }
}

dspy_status dspy_cu_sample(dspy_backend *be, dspy_tensor tokens, dspy_tensor logprobs, dspy_tensor logits,
                      dspy_tensor params, int M, int V) {
    CU_ENTER(be);
    CU_NEED("sample", "tokens", tokens, DSPY_DTYPE_I32, M);
    CU_NEED("sample", "logprobs", logprobs, DSPY_DTYPE_F32, M);
    CU_NEED("sample", "logits", logits, DSPY_DTYPE_F32, (int64_t)M * V);
    CU_NEED("sample", "params", params, DSPY_DTYPE_I32, (int64_t)M * DSPY_SAMPLE_PARAM_WORDS);
    cuda_state *s = cu_of(be);
    /* rows beyond the planned scratch go in several launches (the engine never needs that) */
    for (int r0 = 0; r0 < M; r0 += (int)s->samp_rows) {
        int n = M - r0 < (int)s->samp_rows ? M - r0 : (int)s->samp_rows;
        DSPY_TRY(cu_launch(be, "sample", k_sample, dim3(n, SAMPLE_PARTS), SAMPLE_THREADS, 0,
                           (int32_t *)tokens.data + r0, (float *)logprobs.data + r0,
                           (const float *)logits.data + (int64_t)r0 * V,
                           (const dspy_sample_param *)params.data + r0, V, s->samp_part, s->samp_count));
    }
    return DSPY_OK;
}

/* (max, sum of exp(x - max)) pairs, merged: the streaming log-sum-exp. */
static __device__ __forceinline__ void lse_merge(float &m, float &s, float om, float os) {
    if (om == -INFINITY) return;
    if (m == -INFINITY) {
        m = om, s = os;
        return;
    }
    float n = fmaxf(m, om);
    s = s * expf(m - n) + os * expf(om - n);
    m = n;
}

enum { MASK_THREADS = 512, MASK_PARTS = 16 };
/* The sampler's scratch per planned row is 64 x 3 floats (backend_cuda.cu): the sampler uses
 * the first 3 x SAMPLE_PARTS of every row's share, mask_logits the region after all of those. */
static_assert(3 * SAMPLE_PARTS + 4 * MASK_PARTS <= 64 * 3, "mask_logits partials do not fit the sampler scratch");

/* Block-wide max and sum of two values each (every thread gets them). */
static __device__ __forceinline__ void block_max2(float &a, float &b, float (*sh)[32]) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, o));
        b = fmaxf(b, __shfl_xor_sync(0xffffffffu, b, o));
    }
    __syncthreads();
    if (lane == 0) sh[0][w] = a, sh[1][w] = b;
    __syncthreads();
    a = b = -INFINITY;
    for (int k = 0; k < nw; k++) a = fmaxf(a, sh[0][k]), b = fmaxf(b, sh[1][k]);
}
static __device__ __forceinline__ void block_sum2(float &a, float &b, float (*sh)[32]) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        a += __shfl_xor_sync(0xffffffffu, a, o);
        b += __shfl_xor_sync(0xffffffffu, b, o);
    }
    __syncthreads();
    if (lane == 0) sh[0][w] = a, sh[1][w] = b;
    __syncthreads();
    a = b = 0.0f;
    for (int k = 0; k < nw; k++) a += sh[0][k], b += sh[1][k];
}

/* Grid (constrained rows, MASK_PARTS). Each block takes a contiguous part of its row: pass 1 the
 * part's raw and masked maxima, pass 2 the sums of exp(x - max) (raw, and masked over the allowed
 * tokens) while the banned logits become -inf. The block arriving last for the row (an atomic
 * counter it resets) merges the parts into shift = lse(masked) - lse(raw). When nothing is
 * banned the raw and masked values go through the same operations in the same order, so the
 * shift is exactly 0. Spread over MASK_PARTS blocks and with no exp in the maximum pass, the
 * mask costs a few microseconds per row instead of one SM's long dependent chain. */
static __global__ __launch_bounds__(MASK_THREADS) void k_mask_logits(float *logits, const uint32_t *masks,
                                                              const int32_t *rows, float *shift, float *part,
                                                              int *count, int V, int W, int64_t M) {
    griddep_wait();
    const int r = blockIdx.x, pz = blockIdx.y;
    const int64_t row = rows[r];
    if (row < 0 || row >= M) return; /* the engine never lists such a row; nothing to touch */
    float *x = logits + row * V;
    const uint32_t *mk = masks + (int64_t)r * W;
    const int chunk = (V + MASK_PARTS - 1) / MASK_PARTS, i0 = pz * chunk, i1 = min(V, i0 + chunk);
    __shared__ float sh[2][32];
    __shared__ bool s_last;
    float rm = -INFINITY, mm = -INFINITY;
#pragma unroll 4
    for (int i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
        float v = x[i];
        rm = fmaxf(rm, v);
        if (mk[i >> 5] >> (i & 31) & 1u) mm = fmaxf(mm, v);
    }
    block_max2(rm, mm, sh);
    float rs = 0.0f, ms = 0.0f;
#pragma unroll 4
    for (int i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
        float v = x[i];
        if (rm > -INFINITY) rs += expf(v - rm);
        if (mk[i >> 5] >> (i & 31) & 1u) {
            if (mm > -INFINITY) ms += expf(v - mm);
        } else {
            x[i] = -INFINITY;
        }
    }
    block_sum2(rs, ms, sh);
    float *pp = part + (int64_t)r * MASK_PARTS * 4;
    if (threadIdx.x == 0) {
        float4 v = make_float4(rm, rs, mm, ms);
        __stcg((float4 *)(pp + pz * 4), v);
        __threadfence();
        s_last = atomicAdd(&count[r], 1) == MASK_PARTS - 1;
    }
    __syncthreads();
    if (!s_last || threadIdx.x != 0) return;
    __threadfence();
    float RM = -INFINITY, RS = 0.0f, MM = -INFINITY, MS = 0.0f;
    for (int k = 0; k < MASK_PARTS; k++) {
        float4 v = __ldcg((const float4 *)(pp + k * 4));
        lse_merge(RM, RS, v.x, v.y);
        lse_merge(MM, MS, v.z, v.w);
    }
    shift[r] = (MM + logf(MS)) - (RM + logf(RS));
    count[r] = 0; /* ready for the next launch (or graph replay) */
}

dspy_status dspy_cu_mask_logits(dspy_backend *be, dspy_tensor logits, dspy_tensor masks, dspy_tensor rows,
                           dspy_tensor shift, int R, int V) {
    CU_ENTER(be);
    const int W = (V + 31) / 32;
    CU_NEED("mask_logits", "logits", logits, DSPY_DTYPE_F32, 0);
    CU_NEED("mask_logits", "masks", masks, DSPY_DTYPE_I32, (int64_t)R * W);
    CU_NEED("mask_logits", "rows", rows, DSPY_DTYPE_I32, R);
    CU_NEED("mask_logits", "shift", shift, DSPY_DTYPE_F32, R);
    if (V <= 0) return dspy_fail(DSPY_ERR_ARG, "mask_logits: vocabulary %d must be positive", V);
    if (R == 0) return DSPY_OK;
    cuda_state *s = cu_of(be);
    /* partials after the sampler's, counters after the sampler's (backend_cuda.cu plans both);
     * rows beyond the planned scratch go in several launches (the engine never needs that) */
    float *part = s->samp_part + s->samp_rows * 3 * SAMPLE_PARTS;
    int *count = s->samp_count + s->samp_rows;
    for (int r0 = 0; r0 < R; r0 += (int)s->samp_rows) {
        int n = R - r0 < (int)s->samp_rows ? R - r0 : (int)s->samp_rows;
        DSPY_TRY(cu_launch(be, "mask_logits", k_mask_logits, dim3(n, MASK_PARTS), dim3(MASK_THREADS), 0,
                           (float *)logits.data, (const uint32_t *)masks.data + (int64_t)r0 * W,
                           (const int32_t *)rows.data + r0, (float *)shift.data + r0, part, count, V, W,
                           logits.n / V));
    }
    return DSPY_OK;
}

/* kern/ops.h decode_advance: one block, a thread a row. The step's last kernel wrote `sampled`
 * and `logprobs`; every earlier kernel of the step has read the metadata rewritten here (each
 * waited on the one before it). */
static __global__ void k_decode_advance(int32_t *tokens, int32_t *pos, int32_t *slots, dspy_attn_seg *segs,
                                        const int32_t *tables, const int32_t *sampled, const float *logprobs,
                                        int32_t *ring, int32_t *ctl, int n, int ring_slots, int bs) {
    griddep_wait();
    const int slot = ctl[1], live = slot + 1 < ctl[2] ? min(ctl[0], n) : 0; /* no step follows: none */
    __syncthreads(); /* every thread has read ctl before thread 0 moves ctl[1] on */
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const int32_t tok = sampled[i];
        if (slot >= 0 && slot < ring_slots) {
            ring[(int64_t)slot * 2 * n + i] = tok;
            ring[(int64_t)slot * 2 * n + n + i] = __float_as_int(logprobs[i]);
        }
        if (i >= live) continue;
        const int32_t p = pos[i] + 1;
        tokens[i] = tok;
        pos[i] = p;
        segs[i].pos0 = p;
        slots[i] = tables[segs[i].table_off + p / bs] * bs + p % bs;
    }
    if (threadIdx.x == 0) ctl[1] = slot + 1;
}

dspy_status dspy_cu_decode_advance(dspy_backend *be, dspy_tensor tokens, dspy_tensor pos, dspy_tensor slots,
                                   dspy_tensor segs, dspy_tensor tables, dspy_tensor sampled, dspy_tensor logprobs,
                                   dspy_tensor ring, dspy_tensor ctl, int n, int ring_slots, int bs) {
    CU_ENTER(be);
    CU_NEED("decode_advance", "tokens", tokens, DSPY_DTYPE_I32, n);
    CU_NEED("decode_advance", "pos", pos, DSPY_DTYPE_I32, n);
    CU_NEED("decode_advance", "slots", slots, DSPY_DTYPE_I32, n);
    CU_NEED("decode_advance", "segs", segs, DSPY_DTYPE_I32, 4 * (int64_t)n);
    CU_NEED("decode_advance", "tables", tables, DSPY_DTYPE_I32, 0);
    CU_NEED("decode_advance", "sampled", sampled, DSPY_DTYPE_I32, n);
    CU_NEED("decode_advance", "logprobs", logprobs, DSPY_DTYPE_F32, n);
    CU_NEED("decode_advance", "ring", ring, DSPY_DTYPE_I32, 2 * (int64_t)n * ring_slots);
    CU_NEED("decode_advance", "ctl", ctl, DSPY_DTYPE_I32, 3);
    if (n < 1 || n > 1024 || ring_slots < 1 || bs < 1)
        return dspy_fail(DSPY_ERR_ARG, "decode_advance: n %d must be in 1 .. 1024, ring_slots %d and block size %d "
                                       "positive", n, ring_slots, bs);
    const int threads = n <= 32 ? 32 : (n + 31) / 32 * 32;
    return cu_launch(be, "decode_advance", k_decode_advance, dim3(1), dim3(threads), 0, (int32_t *)tokens.data,
                     (int32_t *)pos.data, (int32_t *)slots.data, (dspy_attn_seg *)segs.data,
                     (const int32_t *)tables.data, (const int32_t *)sampled.data, (const float *)logprobs.data,
                     (int32_t *)ring.data, (int32_t *)ctl.data, n, ring_slots, bs);
}
