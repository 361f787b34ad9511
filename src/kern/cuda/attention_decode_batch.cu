/* attention_decode_batch.cu — kern/ops.h attention for decode steps of 3 or more sequences (every
 * segment one row), head size 64 or 128, up to 8 query heads per KV head: attention.cu sends
 * them here (batch 1-2 stay on its split-K / cluster kernel, which a single long context needs).
 *
 * Why a second decode kernel: at batch 16 and a 1,564-token context the split-K kernel took 53 us
 * a layer for ~51 MB of K and V (H200), ~1 TB/s: each CTA of 128 threads scored one key per
 * thread on the FP32 pipes and summed P V out of shared memory behind three barriers a 128-key
 * tile, with 3 slices per sequence (384 CTAs, 12 warps an SM) — latency-bound. Here every warp
 * streams 16-key groups from the paged cache straight into registers, with the next group's
 * loads in flight while it computes, and runs both products on the tensor cores (mma.sync
 * m16n8k16, BF16 in, F32 accumulate):
 *   S (16 x 8 keys)  = Q (the group's <= 8 query heads as rows 0-7, rows 8-15 zero) K^T
 *   O^T (16 dims x 8 queries) += V^T (16 dims x 16 keys) P^T (16 keys x 8 queries)
 * The dot products do not care in which order the head dimension is summed, so each lane loads
 * contiguous 16-byte pieces: for S, lane (g = lane / 4, c = lane % 4) holds dims
 * [c D/4, (c+1) D/4) of key rows g and 8 + g (and the same dims of its query row g), k-step t
 * using its pair words 2t and 2t+1; for P V, lane (g, c) holds dims [g D/8, (g+1) D/8) of the
 * value rows of keys 2c, 2c+1, 2c+8, 2c+9 and builds the transposed A fragment with byte
 * permutes (m-tile mt: row g = dim g D/8 + 2 mt, row g + 8 = the next dim). The S accumulator's
 * rows 0-7 are then exactly P^T's B fragment (no shuffle), and O^T's fragment gives each lane
 * the D/8 contiguous dims of queries 2c and 2c+1.
 *
 * A CTA of 8 warps takes one sequence, one KV head and one slice of the context; its warps take
 * the slice's 16-key groups in turn (warp w: groups w, w + 8, ...), so at any moment a CTA reads
 * one contiguous run of keys, and the CTAs of all sequences at the same slice (consecutive in
 * the grid) read the same blocks of a shared prefix together, out of L2. The warps' softmax
 * states meet in shared memory; where a sequence has several slices, each writes its partial
 * to global memory (attention.cu's layout) and the last to arrive combines them. The number of
 * slices depends only on the number of sequences (a captured graph replays with any context).
 * The math is the CPU reference's (kern/cpu/attention.c), with P rounded to BF16 in P V as in the
 * prefill kernels.
 */
#include <math.h>
#include <stdlib.h>

#include "kern/cuda/cuda.cuh"
#include "kern/cuda/mma.cuh"

/* attention.cu's dispatch: whether this kernel takes a decode call, and the launch. */
bool dspy_cu_decode_batch_fits(dspy_backend *be, int nseg, int NH, int NKV, int HS);
dspy_status dspy_cu_attention_decode_batch(dspy_backend *be, bf16 *out, const bf16 *q, const bf16 *kc, const bf16 *vc,
                                           const dspy_attn_meta *m, int NH, int NKV, int HS, float scale_log2);

enum { DB_MAX_SPLITS = 32, DB_MIN_SEQS = 3 };

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

/* Attends one group: scores, the online softmax of query g (max over the four lanes of g; each
 * lane keeps its own part of the sum), and O^T += V^T P^T. qa: query row g's A fragments per
 * k-step (rows 8-15 are zero); o[mt]: O^T's accumulator of m-tile mt (dims g D/8 + 2 mt and the
 * next one, queries 2c and 2c + 1). */
template <int D>
static __device__ __forceinline__ void attend_group(const kv_frag<D> &f, const uint32_t (&qa)[D / 16][2],
                                                    float (&o)[D / 16][4], float &m, float &l, int kb, int L, int c,
                                                    float sl2) {
    float s[2][4];
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
        for (int t = 0; t < D / 16; t++) {
            const uint32_t a[4] = {qa[t][0], 0u, qa[t][1], 0u};
            const uint32_t b[2] = {word(f.k[nt][(2 * t) / 4], (2 * t) % 4), word(f.k[nt][(2 * t + 1) / 4], (2 * t + 1) % 4)};
            mma16816(s[nt], a, b);
        }
    }
    /* s[nt][0..1]: query g against keys kb + 8 nt + 2c and the next (log2 domain after the scale) */
    float mx = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 2; nt++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int j = kb + 8 * nt + 2 * c + e;
            s[nt][e] = j < L ? s[nt][e] * sl2 : -INFINITY;
            mx = fmaxf(mx, s[nt][e]);
        }
    mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
    const float mnew = fmaxf(m, mx); /* finite: key kb < L is in every group */
    const float alpha = fast_exp2(m - mnew);
    float p[2][2], sum = 0.0f;
#pragma unroll
    for (int nt = 0; nt < 2; nt++)
#pragma unroll
        for (int e = 0; e < 2; e++) p[nt][e] = fast_exp2(s[nt][e] - mnew), sum += p[nt][e];
    l = l * alpha + sum;
    m = mnew;
    /* O^T's columns are queries 2c and 2c + 1: their factors live in lanes 8c and 8c + 4 */
    const float a0 = __shfl_sync(FULL_MASK, alpha, 8 * c), a1 = __shfl_sync(FULL_MASK, alpha, 8 * c + 4);
    const uint32_t pb[2] = {pack_bf16(p[0][0], p[0][1]), pack_bf16(p[1][0], p[1][1])};
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

/* Attends one group of shared-prefix keys (all of them below every sequence's length: no mask)
 * for a tile of 16 query rows: rows 0-7 (state 0) and rows 8-15 (state 1), each 8 query columns
 * of O^T. qa[t]: the A fragment of k-step t (row g's words 2t and 2t + 1, row g + 8's the same);
 * the S accumulator's elements 0-1 are P^T's B fragment for rows 0-7, elements 2-3 for rows 8-15. */
template <int D>
static __device__ __forceinline__ void attend_group2(const kv_frag<D> &f, const uint32_t (&qa)[D / 16][4],
                                                     float (&o)[2][D / 16][4], float (&m)[2], float (&l)[2], int c,
                                                     float sl2) {
    float s[2][4];
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
        for (int t = 0; t < D / 16; t++) {
            const uint32_t b[2] = {word(f.k[nt][(2 * t) / 4], (2 * t) % 4), word(f.k[nt][(2 * t + 1) / 4], (2 * t + 1) % 4)};
            mma16816(s[nt], qa[t], b);
        }
    }
#pragma unroll
    for (int h = 0; h < 2; h++) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) s[nt][2 * h + e] *= sl2, mx = fmaxf(mx, s[nt][2 * h + e]);
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
        const float mnew = fmaxf(m[h], mx);
        const float alpha = fast_exp2(m[h] - mnew);
        float p[2][2], sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) p[nt][e] = fast_exp2(s[nt][2 * h + e] - mnew), sum += p[nt][e];
        l[h] = l[h] * alpha + sum;
        m[h] = mnew;
        const float a0 = __shfl_sync(FULL_MASK, alpha, 8 * c), a1 = __shfl_sync(FULL_MASK, alpha, 8 * c + 4);
        const uint32_t pb[2] = {pack_bf16(p[0][0], p[0][1]), pack_bf16(p[1][0], p[1][1])};
#pragma unroll
        for (int mt = 0; mt < D / 16; mt++) {
            o[h][mt][0] *= a0, o[h][mt][2] *= a0, o[h][mt][1] *= a1, o[h][mt][3] *= a1;
            const uint32_t x0 = word(f.v[0][mt / 4], mt % 4), x1 = word(f.v[1][mt / 4], mt % 4);
            const uint32_t x2 = word(f.v[2][mt / 4], mt % 4), x3 = word(f.v[3][mt / 4], mt % 4);
            const uint32_t a[4] = {__byte_perm(x0, x1, 0x5410), __byte_perm(x0, x1, 0x7632),
                                   __byte_perm(x2, x3, 0x5410), __byte_perm(x2, x3, 0x7632)};
            mma16816(o[h][mt], a, pb);
        }
    }
}

/* How a run of NG 16-key groups is cut into slices: at most S, every one non-empty, at least W
 * groups a slice where there are that many. Returns the slices used; *per: groups a slice. */
static __device__ __forceinline__ int slices_of(int NG, int S, int W, int *per) {
    const int want = min(S, max(1, NG / W));
    *per = (NG + want - 1) / want;
    return (NG + *per - 1) / *per;
}

/* Whether sequence sq takes its first Ls keys from the shared tiles: one of the hint's ns and
 * longer than the shared keys (a hint that breaks its promise for sq only leaves sq out). */
static __device__ __forceinline__ bool is_sharer(const dspy_attn_seg *__restrict__ segs, int sq, int ns, int Ls) {
    return sq < ns && Ls <= segs[sq].pos0;
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

/* Combines the partials of one sequence's G query heads of KV head kvh into out: its nt context
 * slices at slots 0 .. nt - 1 and its ns shared-prefix slices at slots S .. S + ns - 1 (of Stot
 * a head; nt + ns <= DB_MAX_SPLITS), then resets its arrival counter. Called by the whole CTA. */
template <int D, int W>
static __device__ void combine_slices(bf16 *__restrict__ out, const float *__restrict__ part, int *cnt, int64_t pbase,
                                      int Stot, int S, int nt, int ns, int G, int64_t obase,
                                      float (&sw_sh)[8][DB_MAX_SPLITS], float (&sl_sh)[8][DB_MAX_SPLITS],
                                      float (&den_sh)[8]) {
    const int tid = threadIdx.x, n = nt + ns;
    __syncthreads(); /* the shared arrays may still be read by an earlier combine */
    __threadfence();
    for (int t = tid; t < G * n; t += W * 32) {
        const int qq = t / n, i = t % n, sp = i < nt ? i : S + i - nt;
        const float *st = part + (pbase + (int64_t)qq * Stot + sp) * (D + 2) + D;
        sw_sh[qq][i] = __ldcg(st), sl_sh[qq][i] = __ldcg(st + 1);
    }
    __syncthreads();
    if (tid < G) {
        float M = -INFINITY;
        for (int i = 0; i < n; i++) M = fmaxf(M, sw_sh[tid][i]);
        float den = 0.0f;
        for (int i = 0; i < n; i++) {
            const float wt = exp2f(sw_sh[tid][i] - M); /* every slice has keys: its max is finite */
            sw_sh[tid][i] = wt;
            den += wt * sl_sh[tid][i];
        }
        den_sh[tid] = den;
    }
    __syncthreads();
    for (int e = tid; e < G * D / 2; e += W * 32) {
        const int qq = e / (D / 2), d = 2 * (e % (D / 2));
        const float *p = part + (pbase + (int64_t)qq * Stot) * (D + 2) + d;
        float nx = 0.0f, ny = 0.0f;
        for (int i = 0; i < n; i++) {
            const int sp = i < nt ? i : S + i - nt;
            const float2 v = __ldcg((const float2 *)(p + sp * (D + 2)));
            nx += sw_sh[qq][i] * v.x, ny += sw_sh[qq][i] * v.y;
        }
        const float inv = 1.0f / den_sh[qq];
        *(__nv_bfloat162 *)(out + obase + (int64_t)qq * D + d) = __floats2bfloat162_rn(nx * inv, ny * inv);
    }
    if (tid == 0) *cnt = 0; /* ready for the next launch (or graph replay) */
}

/* Grid (nseg + T, NKV, max(S, Ssh)). CTA (seg < nseg, kv head, slice) of W warps attends one
 * sequence's own keys: with a shared-prefix hint (shared = {ns, len}; len rounded down to 16)
 * and seg < ns, the keys from Ls = len & ~15 on, else all. Its NG groups of 16 keys are cut into
 * S_eff <= S slices (slices_of). CTA (nseg + tile, kv head, slice < Ssh) attends one slice of the
 * shared keys 0 .. Ls - 1 for a tile of 16 query rows: rows 0-7 the G heads of sequences
 * tile 2 spr .. + spr - 1 (spr = 8 / G of them, rows past spr G zero), rows 8-15 the next spr;
 * the shared keys are read by T = ceil(nseg / 2 spr) tiles instead of by ns sequences. Partials:
 * part[((seg NH + h) Stot + slot) (D + 2)] = D unnormalised outputs, the max (log2) and the sum;
 * slots 0 .. S - 1 a sequence's own slices, S .. S + Ssh - 1 the shared ones (Stot = S + Ssh).
 * A sequence attended in one slice and nothing shared writes out directly; otherwise the last
 * of its CTAs to arrive (count[seg NKV + kvh]) combines its partials. Every count depends only
 * on the metadata on the device, so a captured graph replays with any context and hint. */
template <int D, int W>
static __global__ __launch_bounds__(W * 32, W == 8 && D == 64 ? 2 : 1) void k_attn_decode_batch(
    bf16 *__restrict__ out, float *__restrict__ part, int *__restrict__ count, const bf16 *__restrict__ q,
    const bf16 *__restrict__ kc, const bf16 *__restrict__ vc, const dspy_attn_seg *__restrict__ segs,
    const int32_t *__restrict__ tables, const int32_t *__restrict__ shared, int nseg, int S, int Ssh, int bs,
    int NH, int NKV, int G, float sl2, int release, int pf) {
    __shared__ __align__(16) float o_sh[W][8][D];
    __shared__ float m_sh[W][8], l_sh[W][8], w_sh[W][8], den_sh[8], mfin_sh[8];
    __shared__ float sw_sh[8][DB_MAX_SPLITS], sl_sh[8][DB_MAX_SPLITS];
    __shared__ bool last_sh[16];
    /* Before the dependency wait only the host-copied metadata and keys of earlier positions are
     * read: this step's key (position pos0) and q come from the kernel before. */
    const int split = blockIdx.z, kvh = blockIdx.y, Stot = S + Ssh;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c = lane & 3;
    const bool bs16 = bs % 16 == 0;
    int ns = 0, Ls = 0;
    if (shared != nullptr && Ssh > 0) {
        ns = min(shared[0], nseg), Ls = shared[1] & ~15;
        if (ns <= 0 || Ls <= 0) ns = 0, Ls = 0;
    }
    int per_sh = 1;
    const int Ssh_eff = ns > 0 ? slices_of(Ls / 16, Ssh, W, &per_sh) : 0;
    kv_frag<D> fa, fb;
    if (blockIdx.x >= nseg) {
        /* ---- a tile of the shared prefix ---- */
        const int spr = 8 / G, sbase = (blockIdx.x - nseg) * 2 * spr;
        if (sbase >= ns || split >= Ssh_eff) return;
        const int g0 = split * per_sh, g1 = min(Ls / 16, g0 + per_sh);
        const int32_t *table = tables + segs[sbase].table_off; /* the first Ls positions: any sharer's */
        int gi = g0 + warp;
        if (gi < g1) load_group<D>(fa, kc, vc, table, bs, bs16, NKV, kvh, gi * 16, Ls, g, c);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        asm volatile("griddepcontrol.wait;\n" ::: "memory");
        if (release) asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
        /* rows g and g + 8: head g % G of sequences sbase + g / G and sbase + spr + g / G */
        uint32_t qa[D / 16][4];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int sq = sbase + h * spr + g / G;
            const bool ok = g / G < spr && is_sharer(segs, sq, ns, Ls);
            uint4 qv[D / 32];
            const uint4 *qp = ok ? (const uint4 *)(q + ((int64_t)segs[sq].row0 * NH + kvh * G + g % G) * D + c * (D / 4))
                                 : nullptr;
#pragma unroll
            for (int u = 0; u < D / 32; u++) qv[u] = ok ? qp[u] : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
            for (int t = 0; t < D / 16; t++)
                qa[t][h] = word(qv[(2 * t) / 4], (2 * t) % 4), qa[t][2 + h] = word(qv[(2 * t + 1) / 4], (2 * t + 1) % 4);
        }
        float o[2][D / 16][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int mt = 0; mt < D / 16; mt++) o[h][mt][0] = o[h][mt][1] = o[h][mt][2] = o[h][mt][3] = 0.0f;
        /* one register set (two states of 16 rows take the second's registers); the group after
         * the next is asked of L2 meanwhile */
        while (gi < g1) {
            const int gn = gi + W;
            if (gn < g1) prefetch_group<D>(kc, vc, table, bs, NKV, kvh, gn * 16, Ls, lane);
            attend_group2<D>(fa, qa, o, m, l, c, sl2);
            gi = gn;
            if (gi < g1) load_group<D>(fa, kc, vc, table, bs, bs16, NKV, kvh, gi * 16, Ls, g, c);
        }
        const int slot = S + split;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float lh = l[h];
            lh += __shfl_xor_sync(FULL_MASK, lh, 1);
            lh += __shfl_xor_sync(FULL_MASK, lh, 2);
            if (c == 0) m_sh[warp][g] = m[h], l_sh[warp][g] = lh;
#pragma unroll
            for (int mt = 0; mt < D / 16; mt++) {
                const int d = g * (D / 8) + 2 * mt;
                *(float2 *)&o_sh[warp][2 * c][d] = make_float2(o[h][mt][0], o[h][mt][2]);
                *(float2 *)&o_sh[warp][2 * c + 1][d] = make_float2(o[h][mt][1], o[h][mt][3]);
            }
            __syncthreads();
            merge_warps<D, W>(m_sh, l_sh, w_sh, den_sh, mfin_sh, 8);
            __syncthreads();
            for (int e = tid; e < 8 * D / 2; e += W * 32) {
                const int col = e / (D / 2), d = 2 * (e % (D / 2)), sq = sbase + h * spr + col / G;
                if (col / G >= spr || !is_sharer(segs, sq, ns, Ls)) continue;
                float nx = 0.0f, ny = 0.0f;
#pragma unroll
                for (int w = 0; w < W; w++)
                    nx += w_sh[w][col] * o_sh[w][col][d], ny += w_sh[w][col] * o_sh[w][col][d + 1];
                const int64_t pr = ((int64_t)sq * NH + kvh * G + col % G) * Stot + slot;
                *(float2 *)(part + pr * (D + 2) + d) = make_float2(nx, ny);
            }
            if (tid < 8) {
                const int sq = sbase + h * spr + tid / G;
                if (tid / G < spr && is_sharer(segs, sq, ns, Ls)) {
                    float *st = part + (((int64_t)sq * NH + kvh * G + tid % G) * Stot + slot) * (D + 2) + D;
                    st[0] = mfin_sh[tid], st[1] = den_sh[tid];
                }
            }
            __syncthreads(); /* o_sh and the merged weights are rewritten by the next half */
        }
        __threadfence();
        __syncthreads();
        if (tid < 2 * spr) {
            const int sq = sbase + tid;
            bool last = false;
            if (is_sharer(segs, sq, ns, Ls)) {
                int per_t;
                const int nt = slices_of((segs[sq].pos0 + 16) / 16 - Ls / 16, S, W, &per_t);
                last = atomicAdd(count + sq * NKV + kvh, 1) == nt + Ssh_eff - 1;
            }
            last_sh[tid] = last;
        }
        __syncthreads();
        for (int j = 0; j < 2 * spr; j++) {
            if (!last_sh[j]) continue; /* block-uniform: read after the barrier */
            const int sq = sbase + j;
            int per_t;
            const int nt = slices_of((segs[sq].pos0 + 16) / 16 - Ls / 16, S, W, &per_t);
            combine_slices<D, W>(out, part, count + sq * NKV + kvh, ((int64_t)sq * NH + kvh * G) * Stot, Stot, S, nt,
                                 Ssh_eff, G, ((int64_t)segs[sq].row0 * NH + kvh * G) * D, sw_sh, sl_sh, den_sh);
        }
        return;
    }
    /* ---- one sequence's own keys ---- */
    const int seg = blockIdx.x;
    const dspy_attn_seg sg = segs[seg];
    const int L = sg.pos0 + 1, NG = (L + 15) / 16;
    const bool casc = is_sharer(segs, seg, ns, Ls); /* its first Ls keys are the shared tiles' */
    const int gs = casc ? Ls / 16 : 0;
    int per;
    const int S_eff = slices_of(NG - gs, S, W, &per);
    if (split >= S_eff) return;
    const int g0 = gs + split * per, g1 = min(NG, g0 + per);
    const int32_t *table = tables + sg.table_off;
    int gi = g0 + warp;
    const bool pre = gi < g1 && gi * 16 + 15 < sg.pos0;
    if (pre) load_group<D>(fa, kc, vc, table, bs, bs16, NKV, kvh, gi * 16, L, g, c);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    if (release) asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
    if (gi < g1 && !pre) load_group<D>(fa, kc, vc, table, bs, bs16, NKV, kvh, gi * 16, L, g, c);
    /* query row g (head kvh G + g), dims [c D/4, (c+1) D/4): k-step t takes words 2t and 2t + 1 */
    uint32_t qa[D / 16][2];
    {
        uint4 qv[D / 32];
        const uint4 *qp = (const uint4 *)(q + ((int64_t)sg.row0 * NH + kvh * G + g) * D + c * (D / 4));
#pragma unroll
        for (int u = 0; u < D / 32; u++) qv[u] = g < G ? qp[u] : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
        for (int t = 0; t < D / 16; t++)
            qa[t][0] = word(qv[(2 * t) / 4], (2 * t) % 4), qa[t][1] = word(qv[(2 * t + 1) / 4], (2 * t + 1) % 4);
    }
    float o[D / 16][4];
#pragma unroll
    for (int mt = 0; mt < D / 16; mt++) o[mt][0] = o[mt][1] = o[mt][2] = o[mt][3] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    /* two register sets: the next group's loads are in flight while this one is attended */
    while (gi < g1) {
        int gn = gi + W;
        if (gn < g1) load_group<D>(fb, kc, vc, table, bs, bs16, NKV, kvh, gn * 16, L, g, c);
        if (pf && gn + W < g1) prefetch_group<D>(kc, vc, table, bs, NKV, kvh, (gn + W) * 16, L, lane);
        attend_group<D>(fa, qa, o, m, l, gi * 16, L, c, sl2);
        gi = gn;
        if (gi >= g1) break;
        gn = gi + W;
        if (gn < g1) load_group<D>(fa, kc, vc, table, bs, bs16, NKV, kvh, gn * 16, L, g, c);
        if (pf && gn + W < g1) prefetch_group<D>(kc, vc, table, bs, NKV, kvh, (gn + W) * 16, L, lane);
        attend_group<D>(fb, qa, o, m, l, gi * 16, L, c, sl2);
        gi = gn;
    }
    /* the warps' states in shared memory (a warp without groups: m = -inf, l = 0, o = 0) */
    l += __shfl_xor_sync(FULL_MASK, l, 1);
    l += __shfl_xor_sync(FULL_MASK, l, 2);
    if (c == 0) m_sh[warp][g] = m, l_sh[warp][g] = l;
#pragma unroll
    for (int mt = 0; mt < D / 16; mt++) {
        const int d = g * (D / 8) + 2 * mt;
        *(float2 *)&o_sh[warp][2 * c][d] = make_float2(o[mt][0], o[mt][2]);
        *(float2 *)&o_sh[warp][2 * c + 1][d] = make_float2(o[mt][1], o[mt][3]);
    }
    __syncthreads();
    merge_warps<D, W>(m_sh, l_sh, w_sh, den_sh, mfin_sh, G);
    __syncthreads();
    const int64_t obase = ((int64_t)sg.row0 * NH + kvh * G) * D; /* out row of query qq: obase + qq D */
    if (S_eff == 1 && !casc) {
        for (int e = tid; e < G * D / 2; e += (W * 32)) {
            const int qq = e / (D / 2), d = 2 * (e % (D / 2));
            float nx = 0.0f, ny = 0.0f;
#pragma unroll
            for (int w = 0; w < W; w++) nx += w_sh[w][qq] * o_sh[w][qq][d], ny += w_sh[w][qq] * o_sh[w][qq][d + 1];
            const float inv = 1.0f / den_sh[qq];
            *(__nv_bfloat162 *)(out + obase + (int64_t)qq * D + d) = __floats2bfloat162_rn(nx * inv, ny * inv);
        }
        return;
    }
    /* this slice's partial, then the last of the sequence's CTAs to arrive combines them */
    const int64_t pbase = ((int64_t)seg * NH + kvh * G) * Stot; /* partial of (query qq, slot sp): pbase + qq Stot + sp */
    for (int e = tid; e < G * D / 2; e += (W * 32)) {
        const int qq = e / (D / 2), d = 2 * (e % (D / 2));
        float nx = 0.0f, ny = 0.0f;
#pragma unroll
        for (int w = 0; w < W; w++) nx += w_sh[w][qq] * o_sh[w][qq][d], ny += w_sh[w][qq] * o_sh[w][qq][d + 1];
        *(float2 *)(part + (pbase + (int64_t)qq * Stot + split) * (D + 2) + d) = make_float2(nx, ny);
    }
    if (tid < G) {
        float *st = part + (pbase + (int64_t)tid * Stot + split) * (D + 2) + D;
        st[0] = mfin_sh[tid], st[1] = den_sh[tid];
    }
    __threadfence();
    __syncthreads();
    const int nsh = casc ? Ssh_eff : 0;
    int *cnt = count + seg * NKV + kvh;
    if (tid == 0) last_sh[0] = atomicAdd(cnt, 1) == S_eff + nsh - 1;
    __syncthreads();
    if (!last_sh[0]) return;
    combine_slices<D, W>(out, part, cnt, pbase, Stot, S, S_eff, nsh, G, obase, sw_sh, sl_sh, den_sh);
}

/* DSPY_CUDA_DEC_BATCH: 0 leaves every decode call on attention.cu's split-K kernel (for
 * comparisons); n > 0 aims at n CTAs an SM (default: 2 CTAs of 8 warps at head size 64, 1 at 128:
 * the registers of two 16-key groups in flight per warp; 1 CTA of 16 warps where db_wide says).
 * DSPY_CUDA_DEC_BATCH_WARPS=16 / =8: CTAs of 16 / 8 warps at head size 64 whatever the batch.
 * Read once per process. DSPY_CUDA_DEC_BATCH_PF=1: each warp also asks L2 for the group after its
 * next one.
 * DSPY_CUDA_CASCADE=1: the shared-prefix hint is used (opt-in: on the H200 at batch 16, 1,564
 * positions of which 1,296 shared, attention cost 427 us of a step against 215 us ignoring it);
 * n > 1: used, the shared keys cut into n slices instead of db_cascade_plan's choice.
 * DSPY_CUDA_CASCADE_TAIL=n (n > 0): a sequence's own keys in at most n slices when the shared
 * tiles run (default: as without them).
 */
static int db_knob = -1, db_warps = 0, db_pf = 0, db_cascade = 0, db_tail = 0;

static void db_init(void) {
    if (db_knob >= 0) return;
    const char *v = getenv("DSPY_CUDA_DEC_BATCH"), *w = getenv("DSPY_CUDA_DEC_BATCH_WARPS");
    const char *cs = getenv("DSPY_CUDA_CASCADE");
    db_warps = w && (atoi(w) == 16 || atoi(w) == 8) ? atoi(w) : 0;
    db_pf = getenv("DSPY_CUDA_DEC_BATCH_PF") && atoi(getenv("DSPY_CUDA_DEC_BATCH_PF")) == 1;
    db_cascade = cs ? atoi(cs) : 0;
    if (db_cascade < 0 || db_cascade > DB_MAX_SPLITS / 2) db_cascade = 0;
    const char *ct = getenv("DSPY_CUDA_CASCADE_TAIL");
    db_tail = ct ? atoi(ct) : 0;
    if (db_tail < 0 || db_tail > DB_MAX_SPLITS / 2) db_tail = 0;
    db_knob = v ? atoi(v) : 100;
    if (db_knob < 0 || db_knob > 100) db_knob = 100;
}

/* CTAs of 16 warps, one an SM (head size 64): by default where 8-warp CTAs, two an SM, would cut
 * each sequence into at most 2 slices and 16-warp CTAs fit in one wave (nseg NKV <= SMs) — one
 * 16-warp CTA then attends a (sequence, KV head) whole, with no partials to combine. H200, FP8
 * decode step at 1,564 positions (1,300 shared), 16 warps forced: batch 14 918 -> 904 us, 16 928
 * -> 910 (B2 burst 0.673 -> 0.667 s); at batch 5 and 8 (4-5 slices) they lost 1-3 %. A function
 * of nseg only, as the slices are. */
static bool db_wide(const cuda_state *s, int nseg, int NKV, int HS) {
    db_init();
    if (HS != 64) return false;
    if (db_warps) return db_warps == 16;
    const int ctas = nseg * NKV; /* and where they fit in one wave */
    return db_knob == 100 && ctas <= s->sm_count && 2 * s->sm_count / ctas <= 2;
}

static int db_ctas_per_sm(int HS, bool wide) {
    db_init();
    return db_knob == 100 ? (HS == 64 && !wide ? 2 : 1) : db_knob;
}

bool dspy_cu_decode_batch_fits(dspy_backend *be, int nseg, int NH, int NKV, int HS) {
    (void)be;
    return nseg >= DB_MIN_SEQS && (HS == 64 || HS == 128) && NKV > 0 && NH % NKV == 0 && NH / NKV <= 8 &&
           db_ctas_per_sm(HS, false) > 0;
}

/* Partial slots a query head of nseg sequences has in the planned partials. */
static size_t db_slots(const cuda_state *s, int nseg, int NH, int HS) {
    return s->att_part_n / ((size_t)nseg * NH * (HS + 2));
}

/* Slices per sequence at per_sm CTAs an SM: a function of nseg only (and of the device and the
 * planned partials), so a captured graph replays with any context lengths. */
static int db_splits(const cuda_state *s, int nseg, int NH, int NKV, int HS, int per_sm) {
    int S = per_sm * s->sm_count / (nseg * NKV);
    S = S < 1 ? 1 : S > DB_MAX_SPLITS ? DB_MAX_SPLITS : S;
    /* one slice needs no partials */
    if ((size_t)S > db_slots(s, nseg, NH, HS) || (size_t)nseg * NKV > s->att_count_n) S = 1;
    return S;
}

/* The shared-prefix tiles of a call with a hint: T tiles of 16 query rows (*T), each cutting the
 * shared keys into at most *Ssh slices (about half the SMs' CTA slots for all tiles), with *S
 * trimmed so that S + Ssh slots fit the combine and the planned partials. *T = 0: no tiles. */
static void db_cascade_plan(const cuda_state *s, int nseg, int NH, int NKV, int HS, int per_sm, int *S, int *T,
                            int *Ssh) {
    const int G = NH / NKV, spr = 8 / G;
    *T = 0, *Ssh = 0;
    if (!db_cascade || (size_t)nseg * NKV > s->att_count_n) return;
    const int tiles = (nseg + 2 * spr - 1) / (2 * spr);
    int ssh = db_cascade > 1 ? db_cascade : per_sm * s->sm_count / (2 * tiles * NKV);
    ssh = ssh < 1 ? 1 : ssh > DB_MAX_SPLITS / 2 ? DB_MAX_SPLITS / 2 : ssh;
    int st = db_tail > 0 && db_tail < *S ? db_tail : *S;
    st = st > DB_MAX_SPLITS - ssh ? DB_MAX_SPLITS - ssh : st;
    const size_t fit = db_slots(s, nseg, NH, HS);
    while (ssh > 1 && (size_t)(st + ssh) > fit) ssh--;
    if ((size_t)(st + ssh) > fit) st = (int)fit - ssh;
    if (st < 1) return;
    *S = st, *T = tiles, *Ssh = ssh;
}

dspy_status dspy_cu_attention_decode_batch(dspy_backend *be, bf16 *out, const bf16 *q, const bf16 *kc, const bf16 *vc,
                                           const dspy_attn_meta *m, int NH, int NKV, int HS, float sl2) {
    cuda_state *s = cu_of(be);
    const bool wide = db_wide(s, m->nseg, NKV, HS);
    const int per_sm = db_ctas_per_sm(HS, wide);
    int S = db_splits(s, m->nseg, NH, NKV, HS, per_sm), T = 0, Ssh = 0;
    const int rel = s->release & CU_REL_ATTENTION ? 1 : 0;
    const int32_t *sh = (const int32_t *)m->shared.data;
    if (sh) db_cascade_plan(s, m->nseg, NH, NKV, HS, per_sm, &S, &T, &Ssh);
    if (T == 0) sh = nullptr, Ssh = 0;
    const dim3 grid(m->nseg + T, NKV, S > Ssh ? S : Ssh);
    const dspy_attn_seg *sg = (const dspy_attn_seg *)m->segs.data;
    const int32_t *tb = (const int32_t *)m->tables.data;
    const int bs = m->block_size, G = NH / NKV, n = m->nseg;
    if (wide)
        return cu_launch(be, "attention (decode batch, HS 64, 16 warps)", k_attn_decode_batch<64, 16>, grid, 512, 0,
                         out, s->att_part, s->att_count, q, kc, vc, sg, tb, sh, n, S, Ssh, bs, NH, NKV, G, sl2, rel,
                         db_pf);
    if (HS == 64)
        return cu_launch(be, "attention (decode batch, HS 64)", k_attn_decode_batch<64, 8>, grid, 256, 0, out,
                         s->att_part, s->att_count, q, kc, vc, sg, tb, sh, n, S, Ssh, bs, NH, NKV, G, sl2, rel, db_pf);
    return cu_launch(be, "attention (decode batch, HS 128)", k_attn_decode_batch<128, 8>, grid, 256, 0, out,
                     s->att_part, s->att_count, q, kc, vc, sg, tb, sh, n, S, Ssh, bs, NH, NKV, G, sl2, rel, db_pf);
}
