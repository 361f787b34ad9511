/* kern/cuda/attention_decode.cuh — what the two batch decode-attention kernels share
 * (attention_decode_batch.cu: each sequence's keys on their own; attention_decode_shared.cu: a
 * shared prompt prefix read once for a group of sequences): one lane's share of a 16-key group
 * of the paged cache and its loads, how a run of groups is cut into slices, a group's scores,
 * online softmax and P V, and the merges of softmax states (a CTA's warps; the slices through
 * global partials). Private to kern/cuda. The register layouts are explained at the top of attention_decode_batch.cu. */
#ifndef DSPY_KERN_CUDA_ATTENTION_DECODE_CUH
#define DSPY_KERN_CUDA_ATTENTION_DECODE_CUH

#include <math.h>

#include "kern/cuda/cuda.cuh"
#include "kern/cuda/mma.cuh"

enum { DB_MAX_SPLITS = 32, DB_MIN_SEQS = 3 };

/* attention_decode_shared.cu: whether it takes a hinted decode call of nseg sequences that
 * attention_decode_batch.cu takes (the DSPY_CUDA_CASCADE knob, the planned arrival counters),
 * and the launch. */
bool dspy_cu_decode_shared_fits(dspy_backend *be, int nseg, int NKV);
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

/* What a lane's loads of every group share, computed once a kernel (kv_lane_of): its K and V
 * columns (kvh D + c D/4, kvh D + g D/8), the row stride, the block size and its log2. */
struct kv_lane {
    const bf16 *k, *v;
    int rs;  /* a cache row: NKV D elements */
    int bs;  /* block size in positions */
    int bsh; /* log2 bs where bs is a power of two >= 16; 0 for another multiple of 16; -1 otherwise */
    int g, c;
};

static __device__ __forceinline__ kv_lane kv_lane_of(const bf16 *kc, const bf16 *vc, int bs, int NKV, int kvh, int D,
                                                     int g, int c) {
    kv_lane kl;
    kl.k = kc + kvh * D + c * (D / 4), kl.v = vc + kvh * D + g * (D / 8);
    kl.rs = NKV * D, kl.bs = bs, kl.g = g, kl.c = c;
    kl.bsh = bs % 16 ? -1 : (bs & (bs - 1)) ? 0 : __ffs(bs) - 1;
    return kl;
}

/* The cache row of the first key of the 16-aligned group at kb where the block size is a multiple
 * of 16 (the group lies in one block: one table lookup, a shift for the usual power of two); -1
 * otherwise (load_group_at then looks each row up). */
static __device__ __forceinline__ int group_row0(const kv_lane &kl, const int32_t *__restrict__ table, int kb) {
    if (kl.bsh > 0) return table[kb >> kl.bsh] * kl.bs + (kb & (kl.bs - 1));
    return kl.bsh == 0 ? table[kb / kl.bs] * kl.bs + kb % kl.bs : -1;
}

/* The group's rows from the paged cache, its first row r0 = group_row0(kb) (asked for earlier by
 * a caller that hides the table's latency). Keys at or past L are read as key L - 1 (their scores
 * are masked; reading a written row keeps NaN out of 0 * V). With r0 each row is r0 plus its
 * clamped offset — a few instructions a row, as these sit on each warp's chain between two
 * groups. */
template <int D>
static __device__ __forceinline__ void load_group_at(kv_frag<D> &f, const kv_lane &kl,
                                                     const int32_t *__restrict__ table, int r0, int kb, int L) {
    const int g = kl.g, c = kl.c;
    const int off[6] = {g, 8 + g, 2 * c, 2 * c + 1, 2 * c + 8, 2 * c + 9};
    int row[6];
    if (r0 >= 0) {
        const int lim = L - 1 - kb;
#pragma unroll
        for (int i = 0; i < 6; i++) row[i] = r0 + min(off[i], lim);
    } else {
#pragma unroll
        for (int i = 0; i < 6; i++) {
            const int j = min(kb + off[i], L - 1);
            row[i] = table[j / kl.bs] * kl.bs + j % kl.bs;
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const uint4 *p = (const uint4 *)(kl.k + (int64_t)row[r] * kl.rs);
#pragma unroll
        for (int u = 0; u < D / 32; u++) f.k[r][u] = p[u];
    }
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const uint4 *p = (const uint4 *)(kl.v + (int64_t)row[2 + r] * kl.rs);
#pragma unroll
        for (int u = 0; u < D / 64; u++) f.v[r][u] = p[u];
    }
}

template <int D>
static __device__ __forceinline__ void load_group(kv_frag<D> &f, const kv_lane &kl, const int32_t *__restrict__ table,
                                                  int kb, int L) {
    load_group_at<D>(f, kl, table, group_row0(kl, table, kb), kb, L);
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

/* The last CTA to arrive at a group of nq sequences (seq0 .. seq0 + nq - 1; nq = 1 for
 * attention_decode_batch.cu): every row r = sj G + qq (sequence sj, query head qq of KV head kvh)
 * combined from its n slices, partials part[((seq NH + kvh G + qq) Z + slice) (D + 2)], into out
 * row row0[sj], all rows side by side (this tail is on the step's critical path), then the
 * arrival counter reset. A slice that saw no key of a row has max -inf, sum 0: weight 0; at
 * least one slice has keys. nq G <= 16. Called by the whole CTA. */
template <int D, int W>
static __device__ void combine_rows(bf16 *__restrict__ out, const float *__restrict__ part, int *cnt, int seq0, int nq,
                                    const int *row0, int G, int NH, int kvh, int Z, int n,
                                    float (&sw)[16][DB_MAX_SPLITS], float (&sl)[16][DB_MAX_SPLITS], float (&den)[16]) {
    const int tid = threadIdx.x, rows = nq * G;
    __syncthreads(); /* row0 may have just been written */
    __threadfence();
    for (int t = tid; t < rows * n; t += W * 32) {
        const int r = t / n, i = t % n;
        const float *st = part + ((((int64_t)(seq0 + r / G) * NH + kvh * G + r % G) * Z) + i) * (D + 2) + D;
        sw[r][i] = __ldcg(st), sl[r][i] = __ldcg(st + 1);
    }
    __syncthreads();
    if (tid < rows) {
        float M = -INFINITY;
        for (int i = 0; i < n; i++) M = fmaxf(M, sw[tid][i]);
        float dn = 0.0f;
        for (int i = 0; i < n; i++) {
            const float wt = exp2f(sw[tid][i] - M); /* M is finite: exp2(-inf) = 0 for an empty slice */
            sw[tid][i] = wt;
            dn += wt * sl[tid][i];
        }
        den[tid] = dn;
    }
    __syncthreads();
    for (int e = tid; e < rows * D / 2; e += W * 32) {
        const int r = e / (D / 2), d = 2 * (e % (D / 2)), sj = r / G, qq = r % G;
        const float *p = part + (((int64_t)(seq0 + sj) * NH + kvh * G + qq) * Z) * (D + 2) + d;
        float2 v[DB_MAX_SPLITS]; /* every slice's load in flight at once: one L2 round trip, not n */
#pragma unroll
        for (int i = 0; i < DB_MAX_SPLITS; i++)
            if (i < n) v[i] = __ldcg((const float2 *)(p + i * (D + 2)));
        float nx = 0.0f, ny = 0.0f;
#pragma unroll
        for (int i = 0; i < DB_MAX_SPLITS; i++)
            if (i < n) nx += sw[r][i] * v[i].x, ny += sw[r][i] * v[i].y;
        const float inv = 1.0f / den[r];
        *(__nv_bfloat162 *)(out + ((int64_t)row0[sj] * NH + kvh * G + qq) * D + d) =
            __floats2bfloat162_rn(nx * inv, ny * inv);
    }
    if (tid == 0) *cnt = 0; /* ready for the next launch (or graph replay) */
}

/* S = Q K^T for one 16-key group: s[nt] the 16-row x 8-key tile of keys 8 nt .. 8 nt + 7 (the
 * m16n8k16 accumulator layout); qa[t]: the A fragment of k-step t (rows g and g + 8, words 2t and
 * 2t + 1 of each). */
template <int D>
static __device__ __forceinline__ void group_scores(const kv_frag<D> &f, const uint32_t (&qa)[D / 16][4],
                                                    float (&s)[2][4]) {
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
        for (int t = 0; t < D / 16; t++) {
            const uint32_t b[2] = {word(f.k[nt][(2 * t) / 4], (2 * t) % 4), word(f.k[nt][(2 * t + 1) / 4], (2 * t + 1) % 4)};
            mma16816(s[nt], qa[t], b);
        }
    }
}

/* The online softmax of half h (rows 8h .. 8h + 7) over a group's scores s (group_scores'
 * layout; this lane: row g's keys kb + 8 nt + 2c and the next in s[nt][2h], s[nt][2h + 1]): keys
 * at or past L, and every key where !ok (this lane's row takes none of them), are masked; the
 * row's max m (over its four lanes) and this lane's share of its sum l move on. Out: P^T's B
 * fragment pb, and the correction factors a0, a1 of O^T's columns 2c and 2c + 1 (rows 2c and
 * 2c + 1 live in lanes 8c and 8c + 4). A row with no key yet keeps m = -inf, l = 0 (weights 0). */
static __device__ __forceinline__ void softmax_half(float (&s)[2][4], int h, bool ok, int kb, int L, int c, float sl2,
                                                    float &m, float &l, float &a0, float &a1, uint32_t (&pb)[2]) {
    float mx = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 2; nt++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int j = kb + 8 * nt + 2 * c + e;
            s[nt][2 * h + e] = ok && j < L ? s[nt][2 * h + e] * sl2 : -INFINITY; /* log2 domain after the scale */
            mx = fmaxf(mx, s[nt][2 * h + e]);
        }
    mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
    const float mnew = fmaxf(m, mx);
    const float mref = mnew == -INFINITY ? 0.0f : mnew;
    const float alpha = fast_exp2(m - mref);
    float p[2][2], sum = 0.0f;
#pragma unroll
    for (int nt = 0; nt < 2; nt++)
#pragma unroll
        for (int e = 0; e < 2; e++) p[nt][e] = fast_exp2(s[nt][2 * h + e] - mref), sum += p[nt][e];
    l = l * alpha + sum;
    m = mnew;
    a0 = __shfl_sync(FULL_MASK, alpha, 8 * c), a1 = __shfl_sync(FULL_MASK, alpha, 8 * c + 4);
    pb[0] = pack_bf16(p[0][0], p[0][1]), pb[1] = pack_bf16(p[1][0], p[1][1]);
}

/* O^T += V^T P^T for one 16-key group and 8 query columns: o's columns 2c and 2c + 1 first scaled
 * by their softmax corrections a0 and a1; pb = P^T's B fragment. */
template <int D>
static __device__ __forceinline__ void pv_accumulate(const kv_frag<D> &f, float (&o)[D / 16][4], float a0, float a1,
                                                     const uint32_t (&pb)[2]) {
#pragma unroll
    for (int mt = 0; mt < D / 16; mt++) {
        o[mt][0] *= a0, o[mt][2] *= a0, o[mt][1] *= a1, o[mt][3] *= a1;
        const uint32_t x0 = word(f.v[0][mt / 4], mt % 4), x1 = word(f.v[1][mt / 4], mt % 4);
        const uint32_t x2 = word(f.v[2][mt / 4], mt % 4), x3 = word(f.v[3][mt / 4], mt % 4);
        /* A (16 dims x 16 keys): row g = the low halves (dim g D/8 + 2 mt), row g + 8 the high */
        const uint32_t a[4] = {__byte_perm(x0, x1, 0x5410), __byte_perm(x0, x1, 0x7632), __byte_perm(x2, x3, 0x5410),
                               __byte_perm(x2, x3, 0x7632)};
        mma16816(o[mt], a, pb);
    }
}

#endif
