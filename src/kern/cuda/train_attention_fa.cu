/* train_attention_fa.cu — the BF16 training attention in the FlashAttention-2 arrangement
 * (kern/ops.h attention_train / attention_train_backward with BF16 q, k, v, head size 64 or 128,
 * 16-byte aligned rows; train_attention_tc.cu's WMMA kernels take every other BF16 shape).
 *
 * The same masks and outputs as train_attention.cu: packed examples, row t sees keys
 * start[t] .. t and those of a shared prefix [0, prefix) (the key tiles of tr_key_tiles); nothing of size T x T is stored; the backward recomputes the scores from q, k and
 * the saved lse. Everything runs in registers at the level of the mma.sync m16n8k16 fragments
 * (BF16 operands, F32 accumulators), as the inference prefill kernel (attention.cu) does: a CTA of
 * 4 warps takes a tile of 64 rows, each warp 16 of them; the streamed tiles go through shared
 * memory by cp.async, double-buffered, XOR-swizzled so that ldmatrix is conflict-free; the
 * softmax is online in the log2 domain with the scale folded into the exponent's FMA
 * (ex2.approx.ftz). Score and probability tiles never leave the registers: the accumulator
 * fragment of S = A B^T is, element for element, the A fragment of the next product P V.
 *
 * Kernels (128 threads; grids put the heaviest tiles of the causal triangle first):
 *   forward (NH, T/64): 64 query rows of one head; per 64-key tile S = Q K^T, the online
 *            softmax, O += P V; out = O / l, lse = m + log l (natural log, scaled scores);
 *            out F32, or BF16 rounded once from the F32 value (the BF16 trainer's att).
 *   prep    one warp per (row, head): D = dout . out (out F32 or BF16), an F32 dout rounded to
 *            BF16 into the first half of dq (free until the dq pass writes it; a BF16 dout is
 *            read as it is), and dk, dv zeroed when query heads share a KV head (their partial
 *            sums are added atomically).
 *   dk/dv   (NH, T/64): 64 keys of one query head over the query tiles that can see them:
 *            S^T = K Q^T, dP^T = V dO^T, P^T = 2^(S^T scale log2e - lse log2e),
 *            dS^T = P^T (dP^T - D); dV += P^T dO, dK += dS^T Q (the 4 query heads of a
 *            Llama KV group are 4 CTAs: 4 x the parallelism of one CTA per KV head).
 *   dq      (NH, T/64): 64 query rows over their key tiles: S, dP = dO V^T, dS, dQ += dS K.
 * dq is written once (OVERWRITE); dk, dv too when NH == NKV, else summed over the group with
 * atomic adds (F32, order not fixed: the CUDA trainer is within tolerance, not bitwise, as its
 * embedding gradient already is).
 * BF16 gradients (the BF16 trainer, from a BF16 dout): dq, and dk, dv when NH == NKV, rounded once
 * in the epilogues; under GQA the atomic F32 sums go to scratch in dq's memory (its T NH D BF16
 * elements hold the 2 T NKV D floats when NH >= 4 NKV), rounded into dk, dv after the dk/dv pass
 * (k_fa_round2) and before the dq pass overwrites that memory.
 * k_fa_fwd2 / k_fa_dkdv2 are the forward and dk/dv templated on the CTA's shape (128-row forward
 * CTAs of 2 m16 tiles a warp) and on a register cap for 3 CTAs an SM; fa_config says which of
 * them run by default (measured on the H200) and how DSPY_CUDA_FA picks others.
 */
#include <stdlib.h>
#include <string.h>

#include "kern/cuda/mma.cuh"
#include "kern/cuda/train.cuh"

#define FA_LOG2E 1.4426950408889634f

enum { FA_THREADS = 128, FA_TILE = 64 };

/* ---- fragment-level helpers (the prefill kernel's, attention.cu) ----------------------------- */

/* Rows [r0, r0 + R) of head h of a (T, H, D) BF16 array into a swizzled (R, D) tile by
 * cp.async from NT threads; rows at or past T are zero-filled. */
template <int D, int R = FA_TILE, int NT = FA_THREADS>
static __device__ __forceinline__ void fa_load(char *dst, const bf16 *src, int r0, int T, int H, int h) {
    constexpr int CH = D / 8;
    for (int i = threadIdx.x; i < R * CH; i += NT) {
        const int r = i / CH, c = i % CH, t = r0 + r;
        const bool ok = t < T;
        cp_async16(dst + swz<CH>(r, c), ok ? src + ((int64_t)t * H + h) * D + c * 8 : src, ok);
    }
}

/* The same from an F32 array, rounded to BF16 (plain loads: once per CTA). */
template <int D, int R = FA_TILE, int NT = FA_THREADS>
static __device__ __forceinline__ void fa_load_f32(char *dst, const float *src, int r0, int T, int H, int h) {
    constexpr int CH = D / 8;
    for (int i = threadIdx.x; i < R * CH; i += NT) {
        const int r = i / CH, c = i % CH, t = r0 + r;
        uint4 w = make_uint4(0, 0, 0, 0);
        if (t < T) {
            const float4 *p = reinterpret_cast<const float4 *>(src + ((int64_t)t * H + h) * D + c * 8);
            const float4 a = p[0], b = p[1];
            w = make_uint4(pack_bf16(a.x, a.y), pack_bf16(a.z, a.w), pack_bf16(b.x, b.y), pack_bf16(b.z, b.w));
        }
        *reinterpret_cast<uint4 *>(dst + swz<CH>(r, c)) = w;
    }
}

/* s (16 x 64 as 8 n8 tiles) += A B^T: A the warp's 16 rows [w0, w0 + 16) of tile A (16 x D),
 * B all 64 rows of tile B. */
template <int D>
static __device__ __forceinline__ void fa_abt(float (&s)[8][4], const char *A, int w0, const char *B) {
    constexpr int CH = D / 8, KB = D / 16;
    const int lane = threadIdx.x & 31, j = lane >> 3;
#pragma unroll
    for (int kk = 0; kk < KB; kk++) {
        uint32_t a[4];
        ldmatrix_x4(a, A + swz<CH>(w0 + (lane & 7) + (j & 1) * 8, kk * 2 + (lane >> 4)));
#pragma unroll
        for (int n2 = 0; n2 < 4; n2++) { /* B rows n2*16 .. +15: two n8 tiles */
            uint32_t b[4];
            ldmatrix_x4(b, B + swz<CH>(n2 * 16 + (lane & 7) + (j >> 1) * 8, kk * 2 + (j & 1)));
            mma16816(s[2 * n2], a, b);
            mma16816(s[2 * n2 + 1], a, b + 2);
        }
    }
}

/* acc (16 x D as D/8 n8 tiles) += P B: P (16 x 64) in the accumulator layout of fa_abt (rounded
 * to BF16 here), B a (64, D) tile. */
template <int D>
static __device__ __forceinline__ void fa_pb(float (&acc)[D / 8][4], const float (&p)[8][4], const char *B) {
    constexpr int CH = D / 8;
    const int lane = threadIdx.x & 31, j = lane >> 3;
#pragma unroll
    for (int kk = 0; kk < 4; kk++) { /* P columns (B rows) kk*16 .. +15 */
        uint32_t a[4];
        a[0] = pack_bf16(p[2 * kk][0], p[2 * kk][1]);
        a[1] = pack_bf16(p[2 * kk][2], p[2 * kk][3]);
        a[2] = pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]);
        a[3] = pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3]);
#pragma unroll
        for (int d2 = 0; d2 < D / 16; d2++) { /* pairs of n8 tiles of D */
            uint32_t b[4];
            ldmatrix_x4_trans(b, B + swz<CH>(kk * 16 + (lane & 7) + (j & 1) * 8, d2 * 2 + (j >> 1)));
            mma16816(acc[2 * d2], a, b);
            mma16816(acc[2 * d2 + 1], a, b + 2);
        }
    }
}

template <int N, int M> static __device__ __forceinline__ void fa_zero(float (&x)[N][M]) {
#pragma unroll
    for (int i = 0; i < N; i++)
#pragma unroll
        for (int e = 0; e < M; e++) x[i][e] = 0.0f;
}

/* The causal block-diagonal mask (and the shared prefix) on a score tile of fa_abt's layout whose
 * columns are keys kb .. kb + 63: this thread's rows are ra (elements 0, 1) and rb (2, 3),
 * starting at sa, sb. */
static __device__ __forceinline__ void fa_mask_rows(float (&s)[8][4], int kb, int ra, int sa, int rb, int sb,
                                                    int prefix) {
    const int t = threadIdx.x & 3;
#pragma unroll
    for (int n = 0; n < 8; n++) {
        const int key = kb + n * 8 + 2 * t;
        if (!tr_sees(key, ra, sa, prefix)) s[n][0] = -INFINITY;
        if (!tr_sees(key + 1, ra, sa, prefix)) s[n][1] = -INFINITY;
        if (!tr_sees(key, rb, sb, prefix)) s[n][2] = -INFINITY;
        if (!tr_sees(key + 1, rb, sb, prefix)) s[n][3] = -INFINITY;
    }
}

/* ---- forward ------------------------------------------------------------------------------ */

template <int D> static constexpr size_t fa_tile_bytes() { return (size_t)FA_TILE * D * sizeof(bf16); }

/* Two adjacent elements of out, F32 or (the BF16 trainer's) BF16, rounded once from F32. */
static __device__ __forceinline__ void fa_st2(float *p, float a, float b) {
    *reinterpret_cast<float2 *>(p) = make_float2(a, b);
}
static __device__ __forceinline__ void fa_st2(bf16 *p, float a, float b) {
    *reinterpret_cast<__nv_bfloat162 *>(p) = __floats2bfloat162_rn(a, b);
}
static __device__ __forceinline__ float2 fa_ld2(const float *p) { return *reinterpret_cast<const float2 *>(p); }
static __device__ __forceinline__ float2 fa_ld2(const bf16 *p) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(p));
}
/* Q, K x 2, V x 2 */
template <int D> static constexpr size_t fa_fwd_smem() { return 5 * fa_tile_bytes<D>(); }

template <int D, typename OT>
static __global__ __launch_bounds__(FA_THREADS) void k_fa_fwd(OT *__restrict__ out, float *__restrict__ lse,
                                                              const bf16 *__restrict__ q, const bf16 *__restrict__ k,
                                                              const bf16 *__restrict__ v,
                                                              const int32_t *__restrict__ start, int prefix, int T,
                                                              int NH, int NKV, float scale_log2, float scale) {
    constexpr int ND = D / 8, TB = FA_TILE * D * 2;
    extern __shared__ __align__(128) char smem[];
    char *sq = smem;
#define SK(b) (smem + (1 + (b)) * TB)
#define SV(b) (smem + (3 + (b)) * TB)
    griddep_wait();
    const int h = blockIdx.x, t0 = (gridDim.y - 1 - blockIdx.y) * FA_TILE, kvh = h / (NH / NKV);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, w0 = warp * 16;
    const int last = min(t0 + FA_TILE, T) - 1; /* the tile's last valid row */
    const tr_keys kt = tr_key_tiles(prefix, start[t0], last, FA_TILE); /* prefix keys, then start[t0] .. last */
    const int nt = kt.nt;
    fa_load<D>(sq, q, t0, T, NH, h);
    fa_load<D>(SK(0), k, tr_key_tile(kt, 0, FA_TILE), T, NKV, kvh);
    fa_load<D>(SV(0), v, tr_key_tile(kt, 0, FA_TILE), T, NKV, kvh);
    cp_async_commit();
    /* this thread's rows (g and g + 8 of the warp's 16; rows past T take the last row's mask and
     * are not written) and the warp's row and start ranges */
    const int ra = min(t0 + w0 + g, last), rb = min(t0 + w0 + g + 8, last);
    const int sa = start[ra], sb = start[rb];
    const int wmin = min(t0 + w0, last), wmax = min(t0 + w0 + 15, last);
    const int wst_min = start[wmin], wst_max = start[wmax];
    float o[ND][4];
    fa_zero(o);
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;
    for (int it = 0; it < nt; it++) {
        const int buf = it & 1, kb = tr_key_tile(kt, it, FA_TILE);
        if (it + 1 < nt) {
            fa_load<D>(SK(buf ^ 1), k, tr_key_tile(kt, it + 1, FA_TILE), T, NKV, kvh);
            fa_load<D>(SV(buf ^ 1), v, tr_key_tile(kt, it + 1, FA_TILE), T, NKV, kvh);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        /* a tile entirely after the warp's rows, or before their starts and past the prefix,
         * contributes nothing */
        if (kb <= wmax && (kb + FA_TILE - 1 >= wst_min || kb < prefix)) {
            float s[8][4];
            fa_zero(s);
            fa_abt<D>(s, sq, w0, SK(buf));
            /* every key of the tile visible to every row of the warp: no mask */
            if (!(kb + FA_TILE - 1 <= wmin && (kb >= wst_max || kb + FA_TILE <= prefix)))
                fa_mask_rows(s, kb, ra, sa, rb, sb, prefix);
            /* row maxima as trees (short dependency chains), then over the 4 threads of a row */
            float ta[8], tb[8];
#pragma unroll
            for (int n = 0; n < 8; n++) ta[n] = fmaxf(s[n][0], s[n][1]), tb[n] = fmaxf(s[n][2], s[n][3]);
#pragma unroll
            for (int w = 4; w > 0; w >>= 1)
#pragma unroll
                for (int n = 0; n < w; n++) ta[n] = fmaxf(ta[n], ta[n + w]), tb[n] = fmaxf(tb[n], tb[n + w]);
            float mx_a = fmaxf(m_a, ta[0]), mx_b = fmaxf(m_b, tb[0]);
            mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
            mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
            mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
            mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
            /* p = 2^(s scale log2e - max scale log2e). A row that has seen no key yet (its
             * example starts later than this tile, packed examples) keeps max -inf: subtract 0
             * then, so that its weights are 2^-inf = 0 and not NaN. */
            const float ms_a = mx_a == -INFINITY ? 0.0f : mx_a * scale_log2;
            const float ms_b = mx_b == -INFINITY ? 0.0f : mx_b * scale_log2;
            const float al_a = fast_exp2(fmaf(m_a, scale_log2, -ms_a)), al_b = fast_exp2(fmaf(m_b, scale_log2, -ms_b));
            m_a = mx_a, m_b = mx_b;
#pragma unroll
            for (int n = 0; n < 8; n++) {
                s[n][0] = fast_exp2(fmaf(s[n][0], scale_log2, -ms_a));
                s[n][1] = fast_exp2(fmaf(s[n][1], scale_log2, -ms_a));
                s[n][2] = fast_exp2(fmaf(s[n][2], scale_log2, -ms_b));
                s[n][3] = fast_exp2(fmaf(s[n][3], scale_log2, -ms_b));
                ta[n] = s[n][0] + s[n][1], tb[n] = s[n][2] + s[n][3];
            }
#pragma unroll
            for (int w = 4; w > 0; w >>= 1)
#pragma unroll
                for (int n = 0; n < w; n++) ta[n] += ta[n + w], tb[n] += tb[n + w];
            l_a = l_a * al_a + ta[0];
            l_b = l_b * al_b + tb[0];
#pragma unroll
            for (int i = 0; i < ND; i++) o[i][0] *= al_a, o[i][1] *= al_a, o[i][2] *= al_b, o[i][3] *= al_b;
            fa_pb<D>(o, s, SV(buf)); /* O += P V */
        }
        __syncthreads(); /* the next iteration's prefetch overwrites this buffer */
    }
#undef SK
#undef SV
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 1);
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 2);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 1);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 2);
    const int row_a = t0 + w0 + g, row_b = row_a + 8; /* every valid row sees itself: l > 0 */
    const float inv_a = 1.0f / l_a, inv_b = 1.0f / l_b;
#pragma unroll
    for (int i = 0; i < ND; i++) {
        const int col = i * 8 + 2 * t;
        if (row_a < T) fa_st2(out + ((int64_t)row_a * NH + h) * D + col, o[i][0] * inv_a, o[i][1] * inv_a);
        if (row_b < T) fa_st2(out + ((int64_t)row_b * NH + h) * D + col, o[i][2] * inv_b, o[i][3] * inv_b);
    }
    if (t == 0) {
        if (row_a < T) lse[(int64_t)row_a * NH + h] = m_a * scale + logf(l_a);
        if (row_b < T) lse[(int64_t)row_b * NH + h] = m_b * scale + logf(l_b);
    }
}

/* ---- backward ----------------------------------------------------------------------------- */

/* One warp per (row, head) r of `rows`: D[r] = dout[r] . out[r] (dout, out each F32 or BF16); an
 * F32 dout is rounded to BF16 into dob[r] (a BF16 dout is its own BF16 copy: dob NULL). With
 * dk != NULL, first dk and dv (nkv F32 elements each) to 0 over the whole grid. */
template <int D, typename OT, typename GT>
static __global__ void k_fa_prep(float *__restrict__ Dg, bf16 *__restrict__ dob, float *__restrict__ dk,
                                 float *__restrict__ dv, int64_t nkv, const GT *__restrict__ dout,
                                 const OT *__restrict__ out, int64_t rows) {
    griddep_wait();
    const int64_t gt = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, nth = (int64_t)gridDim.x * blockDim.x;
    if (dk)
        for (int64_t i = gt; i < nkv; i += nth) dk[i] = 0.0f, dv[i] = 0.0f;
    const int64_t r = gt >> 5; /* the same for the whole warp */
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    float acc = 0.0f;
#pragma unroll
    for (int c = lane * 2; c < D; c += 64) {
        const float2 gv = fa_ld2(dout + r * D + c);
        const float2 ov = fa_ld2(out + r * D + c);
        acc = fmaf(gv.x, ov.x, fmaf(gv.y, ov.y, acc));
        if (dob) *reinterpret_cast<__nv_bfloat162 *>(dob + r * D + c) = __floats2bfloat162_rn(gv.x, gv.y);
    }
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) Dg[r] = acc;
}

/* dk16, dv16 (n each) = the F32 sums dk, dv rounded once (GQA with BF16 outputs: the group's
 * CTAs add their parts into F32 scratch, rounded here after the last). */
static __global__ void k_fa_round2(bf16 *__restrict__ dk16, bf16 *__restrict__ dv16, const float *__restrict__ dk,
                                   const float *__restrict__ dv, int64_t n) {
    griddep_wait();
    for (int64_t i = 2 * ((int64_t)blockIdx.x * blockDim.x + threadIdx.x); i < n;
         i += 2 * (int64_t)gridDim.x * blockDim.x) {
        fa_st2(dk16 + i, dk[i], dk[i + 1]);
        fa_st2(dv16 + i, dv[i], dv[i + 1]);
    }
}

/* K, V, Q x 2, dO x 2, then per query-tile buffer lse log2e, D and start of its 64 rows */
/* One buffer of a dk/dv pass's query rows r0 .. r0 + 63 (cp.async, NT threads): q and dO into sq,
 * sg, and per row lse * log2(e), D = rowsum(dO * O) and its start into vb ([lse2 | D | start]);
 * rows past T get 0 and start INT_MAX (they see no key). */
template <int D, int NT>
static __device__ __forceinline__ void fa_load_rows(char *sq, char *sg, float *vb, const bf16 *__restrict__ q,
                                                    const bf16 *__restrict__ dob, const float *__restrict__ lse,
                                                    const float *__restrict__ Dg, const int32_t *__restrict__ start,
                                                    int r0, int T, int NH, int h) {
    fa_load<D, FA_TILE, NT>(sq, q, r0, T, NH, h);
    fa_load<D, FA_TILE, NT>(sg, dob, r0, T, NH, h);
    if (threadIdx.x < FA_TILE) {
        const int rr = r0 + (int)threadIdx.x;
        vb[threadIdx.x] = rr < T ? lse[(int64_t)rr * NH + h] * FA_LOG2E : 0.0f;
        vb[FA_TILE + threadIdx.x] = rr < T ? Dg[(int64_t)rr * NH + h] : 0.0f;
        reinterpret_cast<int *>(vb)[2 * FA_TILE + threadIdx.x] = rr < T ? start[rr] : 0x7fffffff;
    }
}

/* The dk/dv kernels' P^T and dS^T in place of S^T and dP^T for one tile (this thread's keys ka and
 * kb_ in rows, the tile's query rows t0 + c in columns): P = exp2(S scale - lse) where the row
 * sees the key, else 0; dS = P (dP - D). l2, Dv, st: the tile's lse (log2), D and starts in
 * shared memory; full: every element of the tile is visible (no mask tests). */
static __device__ __forceinline__ void fa_probs(float (&s)[8][4], float (&dp)[8][4], const float *l2, const float *Dv,
                                                const int *st, int t0, int t, int T, int ka, int kb_, int prefix,
                                                bool full, float scale_log2) {
#pragma unroll
    for (int n = 0; n < 8; n++) {
        const int c = n * 8 + 2 * t; /* columns c, c + 1 of the tile */
        const float2 lv = *reinterpret_cast<const float2 *>(l2 + c);
        const float2 dv2 = *reinterpret_cast<const float2 *>(Dv + c);
        const int2 sv2 = *reinterpret_cast<const int2 *>(st + c);
        const int r0 = t0 + c, r1 = r0 + 1;
        /* invalid rows have start INT_MAX: key >= start fails (and r < T the prefix case) */
        const bool ok0 = full || (r0 < T && tr_sees(ka, r0, sv2.x, prefix));
        const bool ok1 = full || (r1 < T && tr_sees(ka, r1, sv2.y, prefix));
        const bool ok2 = full || (r0 < T && tr_sees(kb_, r0, sv2.x, prefix));
        const bool ok3 = full || (r1 < T && tr_sees(kb_, r1, sv2.y, prefix));
        const float p0 = ok0 ? fast_exp2(fmaf(s[n][0], scale_log2, -lv.x)) : 0.0f;
        const float p1 = ok1 ? fast_exp2(fmaf(s[n][1], scale_log2, -lv.y)) : 0.0f;
        const float p2 = ok2 ? fast_exp2(fmaf(s[n][2], scale_log2, -lv.x)) : 0.0f;
        const float p3 = ok3 ? fast_exp2(fmaf(s[n][3], scale_log2, -lv.y)) : 0.0f;
        s[n][0] = p0, s[n][1] = p1, s[n][2] = p2, s[n][3] = p3;
        dp[n][0] = p0 * (dp[n][0] - dv2.x), dp[n][1] = p1 * (dp[n][1] - dv2.y);
        dp[n][2] = p2 * (dp[n][2] - dv2.x), dp[n][3] = p3 * (dp[n][3] - dv2.y);
    }
}

/* The dk/dv kernels' end: this thread's rows of dK (times scale) and dV for keys ka and kb_ (those
 * below T), written (F32, or BF16 rounded once), or added atomically (F32 only) when query heads
 * share the KV head. */
template <int D, typename KT>
static __device__ __forceinline__ void fa_store_dkdv(KT *dk, KT *dv, const float (&dka)[D / 8][4],
                                                     const float (&dva)[D / 8][4], int ka, int kb_, int t, int T,
                                                     int NKV, int kvh, float scale, int atomic) {
    constexpr int ND = D / 8;
#pragma unroll
    for (int i = 0; i < ND; i++) {
        const int col = i * 8 + 2 * t;
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const int key = hf ? kb_ : ka;
            if (key >= T) continue;
            KT *pk = dk + ((int64_t)key * NKV + kvh) * D + col, *pv = dv + ((int64_t)key * NKV + kvh) * D + col;
            const float2 k2 = make_float2(dka[i][2 * hf] * scale, dka[i][2 * hf + 1] * scale);
            const float2 v2 = make_float2(dva[i][2 * hf], dva[i][2 * hf + 1]);
            if constexpr (sizeof(KT) == sizeof(float)) {
                if (atomic) {
#if __CUDA_ARCH__ >= 900 /* one 8-byte atomic for the pair */
                    atomicAdd(reinterpret_cast<float2 *>(pk), k2);
                    atomicAdd(reinterpret_cast<float2 *>(pv), v2);
#else
                    atomicAdd(pk, k2.x), atomicAdd(pk + 1, k2.y), atomicAdd(pv, v2.x), atomicAdd(pv + 1, v2.y);
#endif
                    continue;
                }
            }
            fa_st2(pk, k2.x, k2.y);
            fa_st2(pv, v2.x, v2.y);
        }
    }
}

template <int D> static constexpr size_t fa_dkdv_smem() { return 6 * fa_tile_bytes<D>() + 2 * 3 * FA_TILE * 4; }

template <int D, typename KT>
static __global__ __launch_bounds__(FA_THREADS) void k_fa_dkdv(KT *__restrict__ dk, KT *__restrict__ dv,
                                                               const bf16 *__restrict__ dob,
                                                               const float *__restrict__ lse,
                                                               const float *__restrict__ Dg,
                                                               const bf16 *__restrict__ q, const bf16 *__restrict__ k,
                                                               const bf16 *__restrict__ v,
                                                               const int32_t *__restrict__ start, int prefix, int T,
                                                               int NH, int NKV, float scale_log2, float scale,
                                                               int atomic) {
    constexpr int ND = D / 8, TB = FA_TILE * D * 2;
    extern __shared__ __align__(128) char smem[];
    char *sk = smem, *sv = smem + TB;
#define SQ(b) (smem + (2 + (b)) * TB)
#define SG(b) (smem + (4 + (b)) * TB)
    float *vals = reinterpret_cast<float *>(smem + 6 * TB); /* [buf][lse2 | D | start][64] */
    griddep_wait();
    const int h = blockIdx.x, j0 = blockIdx.y * FA_TILE, kvh = h / (NH / NKV);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, w0 = warp * 16;
    const int jl = min(j0 + FA_TILE, T) - 1; /* the tile's last valid key */
    fa_load<D>(sk, k, j0, T, NKV, kvh);
    fa_load<D>(sv, v, j0, T, NKV, kvh);
    /* query tiles from j0 on (rows before j0 never see these keys) while their first row can
     * see the last key (starts only grow), or to the end when the tile holds prefix keys */
    fa_load_rows<D, FA_THREADS>(SQ(0), SG(0), vals, q, dob, lse, Dg, start, j0, T, NH, h);
    cp_async_commit();
    const int ka = j0 + w0 + g, kb_ = ka + 8; /* this thread's keys */
    const int wk_min = j0 + w0, wk_max = j0 + w0 + 15;
    float dka[ND][4], dva[ND][4];
    fa_zero(dka);
    fa_zero(dva);
    for (int it = 0, t0 = j0;; it++, t0 += FA_TILE) {
        const int buf = it & 1;
        const bool next = t0 + FA_TILE < T && (start[t0 + FA_TILE] <= jl || j0 < prefix);
        if (next)
            fa_load_rows<D, FA_THREADS>(SQ(buf ^ 1), SG(buf ^ 1), vals + (buf ^ 1) * 3 * FA_TILE, q, dob, lse, Dg, start,
                                        t0 + FA_TILE, T, NH, h);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const float *l2 = vals + buf * 3 * FA_TILE, *Dv = l2 + FA_TILE;
        const int *st = reinterpret_cast<const int *>(l2 + 2 * FA_TILE);
        /* the warp's keys exist and the tile's first row (the smallest start) can see one, or
         * some are prefix keys */
        if (wk_min < T && (st[0] <= wk_max || wk_min < prefix)) {
            float s[8][4], dp[8][4];
            fa_zero(s);
            fa_zero(dp);
            fa_abt<D>(s, sk, w0, SQ(buf));  /* S^T = K Q^T: rows keys, columns query rows */
            fa_abt<D>(dp, sv, w0, SG(buf)); /* dP^T = V dO^T */
            /* every row of the tile valid, at or after the warp's last key, and started by its
             * first (or the warp's keys all in the prefix) */
            const bool full = t0 + FA_TILE - 1 < T && t0 >= wk_max && (st[FA_TILE - 1] <= wk_min || wk_max < prefix);
            fa_probs(s, dp, l2, Dv, st, t0, t, T, ka, kb_, prefix, full, scale_log2);
            fa_pb<D>(dva, s, SG(buf));  /* dV += P^T dO */
            fa_pb<D>(dka, dp, SQ(buf)); /* dK += dS^T Q */
        }
        __syncthreads(); /* the next prefetch overwrites this buffer */
        if (!next) break;
    }
#undef SQ
#undef SG
    fa_store_dkdv<D, KT>(dk, dv, dka, dva, ka, kb_, t, T, NKV, kvh, scale, atomic);
}

/* Q, dO, K x 2, V x 2 */
template <int D> static constexpr size_t fa_dq_smem() { return 6 * fa_tile_bytes<D>(); }

/* dout (GT) F32 or BF16; dq (QT) F32 or BF16 (rounded once from the F32 accumulator). */
template <int D, typename GT, typename QT>
static __global__ __launch_bounds__(FA_THREADS) void k_fa_dq(QT *__restrict__ dq, const GT *__restrict__ dout,
                                                             const float *__restrict__ lse,
                                                             const float *__restrict__ Dg, const bf16 *__restrict__ q,
                                                             const bf16 *__restrict__ k, const bf16 *__restrict__ v,
                                                             const int32_t *__restrict__ start, int prefix, int T,
                                                             int NH, int NKV, float scale_log2, float scale) {
    constexpr int ND = D / 8, TB = FA_TILE * D * 2;
    extern __shared__ __align__(128) char smem[];
    char *sq = smem, *sg = smem + TB;
#define SK(b) (smem + (2 + (b)) * TB)
#define SV(b) (smem + (4 + (b)) * TB)
    griddep_wait();
    const int h = blockIdx.x, t0 = (gridDim.y - 1 - blockIdx.y) * FA_TILE, kvh = h / (NH / NKV);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, w0 = warp * 16;
    const int last = min(t0 + FA_TILE, T) - 1;
    const tr_keys kt = tr_key_tiles(prefix, start[t0], last, FA_TILE);
    const int nt = kt.nt;
    fa_load<D>(sq, q, t0, T, NH, h);
    fa_load<D>(SK(0), k, tr_key_tile(kt, 0, FA_TILE), T, NKV, kvh);
    fa_load<D>(SV(0), v, tr_key_tile(kt, 0, FA_TILE), T, NKV, kvh);
    if constexpr (sizeof(GT) == sizeof(bf16)) fa_load<D>(sg, dout, t0, T, NH, h);
    cp_async_commit();
    if constexpr (sizeof(GT) == sizeof(float)) fa_load_f32<D>(sg, dout, t0, T, NH, h); /* visible after the loop's first barrier */
    const int ra = min(t0 + w0 + g, last), rb = min(t0 + w0 + g + 8, last);
    const int sa = start[ra], sb = start[rb];
    const float la = lse[(int64_t)ra * NH + h] * FA_LOG2E, lb = lse[(int64_t)rb * NH + h] * FA_LOG2E;
    const float da = Dg[(int64_t)ra * NH + h], db = Dg[(int64_t)rb * NH + h];
    const int wmin = min(t0 + w0, last), wmax = min(t0 + w0 + 15, last);
    const int wst_min = start[wmin], wst_max = start[wmax];
    float acc[ND][4];
    fa_zero(acc);
    for (int it = 0; it < nt; it++) {
        const int buf = it & 1, kb = tr_key_tile(kt, it, FA_TILE);
        if (it + 1 < nt) {
            fa_load<D>(SK(buf ^ 1), k, tr_key_tile(kt, it + 1, FA_TILE), T, NKV, kvh);
            fa_load<D>(SV(buf ^ 1), v, tr_key_tile(kt, it + 1, FA_TILE), T, NKV, kvh);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        if (kb <= wmax && (kb + FA_TILE - 1 >= wst_min || kb < prefix)) {
            float s[8][4], dp[8][4];
            fa_zero(s);
            fa_zero(dp);
            fa_abt<D>(s, sq, w0, SK(buf));  /* S = Q K^T */
            fa_abt<D>(dp, sg, w0, SV(buf)); /* dP = dO V^T */
            if (!(kb + FA_TILE - 1 <= wmin && (kb >= wst_max || kb + FA_TILE <= prefix)))
                fa_mask_rows(s, kb, ra, sa, rb, sb, prefix);
#pragma unroll
            for (int n = 0; n < 8; n++) { /* dS = P (dP - D), P = 2^(s scale log2e - lse log2e) */
                s[n][0] = fast_exp2(fmaf(s[n][0], scale_log2, -la)) * (dp[n][0] - da);
                s[n][1] = fast_exp2(fmaf(s[n][1], scale_log2, -la)) * (dp[n][1] - da);
                s[n][2] = fast_exp2(fmaf(s[n][2], scale_log2, -lb)) * (dp[n][2] - db);
                s[n][3] = fast_exp2(fmaf(s[n][3], scale_log2, -lb)) * (dp[n][3] - db);
            }
            fa_pb<D>(acc, s, SK(buf)); /* dQ += dS K */
        }
        __syncthreads();
    }
#undef SK
#undef SV
    const int row_a = t0 + w0 + g, row_b = row_a + 8;
#pragma unroll
    for (int i = 0; i < ND; i++) {
        const int col = i * 8 + 2 * t;
        if (row_a < T) fa_st2(dq + ((int64_t)row_a * NH + h) * D + col, acc[i][0] * scale, acc[i][1] * scale);
        if (row_b < T) fa_st2(dq + ((int64_t)row_b * NH + h) * D + col, acc[i][2] * scale, acc[i][3] * scale);
    }
}

/* ---- the wider kernels (W warps a CTA, MT m16 tiles a warp) -------------------------------------
 * The same arithmetic as the kernels above, templated on the CTA's shape and its register cap
 * (MINB CTAs an SM). Forward: a CTA of W warps takes BM = 16 W MT query rows; with MT = 2 a warp
 * holds two m16 tiles (rows w*16 and 16 W + w*16 of the CTA's: every warp reaches the diagonal,
 * so the causal tiles stay balanced across warps), every K/V fragment loaded by ldmatrix feeds two
 * mma instead of one and each K/V tile is loaded once for 128 rows. dk/dv: 16 W keys a CTA; the
 * warp's K and V fragments stay in registers at head size 64 (the same for every query tile)
 * unless the registers are capped for 3 CTAs an SM (then the occupancy pays more than the
 * reloads). Measured on the H200 (bench_train_attn, 1B heads): see fa_config. */

/* s[m] (16 x 64 as 8 n8 tiles) += A_m B^T for the m16 tiles m with act[m]: A_m rows a0[m] ..
 * a0[m] + 15 of tile A, B all 64 rows of tile B (the B fragments shared by the m tiles). */
template <int D, int MT>
static __device__ __forceinline__ void fa_abt_m(float (&s)[MT][8][4], const char *A, const int (&a0)[MT],
                                                const bool (&act)[MT], const char *B) {
    constexpr int CH = D / 8, KB = D / 16;
    const int lane = threadIdx.x & 31, j = lane >> 3;
#pragma unroll
    for (int kk = 0; kk < KB; kk++) {
        uint32_t a[MT][4];
#pragma unroll
        for (int m = 0; m < MT; m++) ldmatrix_x4(a[m], A + swz<CH>(a0[m] + (lane & 7) + (j & 1) * 8, kk * 2 + (lane >> 4)));
#pragma unroll
        for (int n2 = 0; n2 < 4; n2++) {
            uint32_t b[4];
            ldmatrix_x4(b, B + swz<CH>(n2 * 16 + (lane & 7) + (j >> 1) * 8, kk * 2 + (j & 1)));
#pragma unroll
            for (int m = 0; m < MT; m++)
                if (act[m]) {
                    mma16816(s[m][2 * n2], a[m], b);
                    mma16816(s[m][2 * n2 + 1], a[m], b + 2);
                }
        }
    }
}

/* acc[m] (16 x D) += P_m B for the m16 tiles with act[m]: P_m (16 x 64) in fa_abt's accumulator
 * layout (rounded to BF16 here), B a (64, D) tile (its fragments shared by the m tiles). */
template <int D, int MT>
static __device__ __forceinline__ void fa_pb_m(float (&acc)[MT][D / 8][4], const float (&p)[MT][8][4],
                                               const bool (&act)[MT], const char *B) {
    constexpr int CH = D / 8;
    const int lane = threadIdx.x & 31, j = lane >> 3;
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        uint32_t a[MT][4];
#pragma unroll
        for (int m = 0; m < MT; m++) {
            a[m][0] = pack_bf16(p[m][2 * kk][0], p[m][2 * kk][1]);
            a[m][1] = pack_bf16(p[m][2 * kk][2], p[m][2 * kk][3]);
            a[m][2] = pack_bf16(p[m][2 * kk + 1][0], p[m][2 * kk + 1][1]);
            a[m][3] = pack_bf16(p[m][2 * kk + 1][2], p[m][2 * kk + 1][3]);
        }
#pragma unroll
        for (int d2 = 0; d2 < D / 16; d2++) {
            uint32_t b[4];
            ldmatrix_x4_trans(b, B + swz<CH>(kk * 16 + (lane & 7) + (j & 1) * 8, d2 * 2 + (j >> 1)));
#pragma unroll
            for (int m = 0; m < MT; m++)
                if (act[m]) {
                    mma16816(acc[m][2 * d2], a[m], b);
                    mma16816(acc[m][2 * d2 + 1], a[m], b + 2);
                }
        }
    }
}

/* The A fragments (16 rows w0 .. w0 + 15 of a (., D) tile, all D columns) for fa_abt_r. */
template <int D>
static __device__ __forceinline__ void fa_afrag(uint32_t (&a)[D / 16][4], const char *A, int w0) {
    constexpr int CH = D / 8;
    const int lane = threadIdx.x & 31, j = lane >> 3;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) ldmatrix_x4(a[kk], A + swz<CH>(w0 + (lane & 7) + (j & 1) * 8, kk * 2 + (lane >> 4)));
}

/* fa_abt with the A fragments already in registers. */
template <int D>
static __device__ __forceinline__ void fa_abt_r(float (&s)[8][4], const uint32_t (&a)[D / 16][4], const char *B) {
    constexpr int CH = D / 8;
    const int lane = threadIdx.x & 31, j = lane >> 3;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
        for (int n2 = 0; n2 < 4; n2++) {
            uint32_t b[4];
            ldmatrix_x4(b, B + swz<CH>(n2 * 16 + (lane & 7) + (j >> 1) * 8, kk * 2 + (j & 1)));
            mma16816(s[2 * n2], a[kk], b);
            mma16816(s[2 * n2 + 1], a[kk], b + 2);
        }
}

/* The rows of one m16 tile of a warp: this thread's rows ra, rb (clamped to the CTA's last valid
 * row: rows past T take its mask and are not written) with starts sa, sb; the tile's row range
 * [wmin, wmax] (clamped) and the starts of its ends. */
struct fa_rows {
    int ra, rb, sa, sb, wmin, wmax, wsmin, wsmax;
};

static __device__ __forceinline__ fa_rows fa_rows_of(int r0, int last, const int32_t *start) {
    const int g = (threadIdx.x & 31) >> 2;
    fa_rows r;
    r.ra = min(r0 + g, last), r.rb = min(r0 + g + 8, last);
    r.sa = start[r.ra], r.sb = start[r.rb];
    r.wmin = min(r0, last), r.wmax = min(r0 + 15, last);
    r.wsmin = start[r.wmin], r.wsmax = start[r.wmax];
    return r;
}

/* Whether the key tile [kb, kb + 64) holds a key some row of the m16 tile sees (before its
 * rows, and at or after their starts or in the prefix), and whether every row sees every key. */
static __device__ __forceinline__ bool fa_tile_live(const fa_rows &r, int kb, int prefix) {
    return kb <= r.wmax && (kb + FA_TILE - 1 >= r.wsmin || kb < prefix);
}
static __device__ __forceinline__ bool fa_tile_full(const fa_rows &r, int kb, int prefix) {
    return kb + FA_TILE - 1 <= r.wmin && (kb >= r.wsmax || kb + FA_TILE <= prefix);
}

/* Q (BM rows), K x 2, V x 2 */
template <int D, int W, int MT> static constexpr size_t fa_fwd2_smem() {
    return (size_t)16 * W * MT * D * 2 + 4 * fa_tile_bytes<D>();
}

template <int D, int W, int MT, int MINB, typename OT>
static __global__ __launch_bounds__(32 * W, MINB) void k_fa_fwd2(OT *__restrict__ out, float *__restrict__ lse,
                                                           const bf16 *__restrict__ q, const bf16 *__restrict__ k,
                                                           const bf16 *__restrict__ v,
                                                           const int32_t *__restrict__ start, int prefix, int T,
                                                           int NH, int NKV, float scale_log2, float scale) {
    constexpr int NT = 32 * W, BM = 16 * W * MT, ND = D / 8, TB = FA_TILE * D * 2, QB = BM * D * 2;
    extern __shared__ __align__(128) char smem[];
    char *sq = smem;
#define SK(b) (smem + QB + (b) * TB)
#define SV(b) (smem + QB + (2 + (b)) * TB)
    griddep_wait();
    const int h = blockIdx.x, t0 = (gridDim.y - 1 - blockIdx.y) * BM, kvh = h / (NH / NKV);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int last = min(t0 + BM, T) - 1;
    const tr_keys kt = tr_key_tiles(prefix, start[t0], last, FA_TILE);
    const int nt = kt.nt;
    fa_load<D, BM, NT>(sq, q, t0, T, NH, h);
    fa_load<D, FA_TILE, NT>(SK(0), k, tr_key_tile(kt, 0, FA_TILE), T, NKV, kvh);
    fa_load<D, FA_TILE, NT>(SV(0), v, tr_key_tile(kt, 0, FA_TILE), T, NKV, kvh);
    cp_async_commit();
    int a0[MT];
    fa_rows rw[MT];
    float o[MT][ND][4], m_a[MT], m_b[MT], l_a[MT], l_b[MT];
#pragma unroll
    for (int m = 0; m < MT; m++) {
        a0[m] = m * 16 * W + warp * 16;
        rw[m] = fa_rows_of(t0 + a0[m], last, start);
        fa_zero(o[m]);
        m_a[m] = m_b[m] = -INFINITY, l_a[m] = l_b[m] = 0.0f;
    }
    for (int it = 0; it < nt; it++) {
        const int buf = it & 1, kb = tr_key_tile(kt, it, FA_TILE);
        if (it + 1 < nt) {
            fa_load<D, FA_TILE, NT>(SK(buf ^ 1), k, tr_key_tile(kt, it + 1, FA_TILE), T, NKV, kvh);
            fa_load<D, FA_TILE, NT>(SV(buf ^ 1), v, tr_key_tile(kt, it + 1, FA_TILE), T, NKV, kvh);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        bool act[MT], any = false;
#pragma unroll
        for (int m = 0; m < MT; m++) act[m] = fa_tile_live(rw[m], kb, prefix), any |= act[m];
        if (any) {
            float s[MT][8][4];
#pragma unroll
            for (int m = 0; m < MT; m++) fa_zero(s[m]);
            fa_abt_m<D, MT>(s, sq, a0, act, SK(buf));
#pragma unroll
            for (int m = 0; m < MT; m++) {
                if (!act[m]) continue;
                if (!fa_tile_full(rw[m], kb, prefix))
                    fa_mask_rows(s[m], kb, rw[m].ra, rw[m].sa, rw[m].rb, rw[m].sb, prefix);
                /* the online softmax of k_fa_fwd, per m16 tile */
                float ta[8], tb[8];
#pragma unroll
                for (int n = 0; n < 8; n++) ta[n] = fmaxf(s[m][n][0], s[m][n][1]), tb[n] = fmaxf(s[m][n][2], s[m][n][3]);
#pragma unroll
                for (int w = 4; w > 0; w >>= 1)
#pragma unroll
                    for (int n = 0; n < w; n++) ta[n] = fmaxf(ta[n], ta[n + w]), tb[n] = fmaxf(tb[n], tb[n + w]);
                float mx_a = fmaxf(m_a[m], ta[0]), mx_b = fmaxf(m_b[m], tb[0]);
                mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
                mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
                mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
                mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
                const float ms_a = mx_a == -INFINITY ? 0.0f : mx_a * scale_log2;
                const float ms_b = mx_b == -INFINITY ? 0.0f : mx_b * scale_log2;
                const float al_a = fast_exp2(fmaf(m_a[m], scale_log2, -ms_a));
                const float al_b = fast_exp2(fmaf(m_b[m], scale_log2, -ms_b));
                m_a[m] = mx_a, m_b[m] = mx_b;
#pragma unroll
                for (int n = 0; n < 8; n++) {
                    s[m][n][0] = fast_exp2(fmaf(s[m][n][0], scale_log2, -ms_a));
                    s[m][n][1] = fast_exp2(fmaf(s[m][n][1], scale_log2, -ms_a));
                    s[m][n][2] = fast_exp2(fmaf(s[m][n][2], scale_log2, -ms_b));
                    s[m][n][3] = fast_exp2(fmaf(s[m][n][3], scale_log2, -ms_b));
                    ta[n] = s[m][n][0] + s[m][n][1], tb[n] = s[m][n][2] + s[m][n][3];
                }
#pragma unroll
                for (int w = 4; w > 0; w >>= 1)
#pragma unroll
                    for (int n = 0; n < w; n++) ta[n] += ta[n + w], tb[n] += tb[n + w];
                l_a[m] = l_a[m] * al_a + ta[0];
                l_b[m] = l_b[m] * al_b + tb[0];
#pragma unroll
                for (int i = 0; i < ND; i++)
                    o[m][i][0] *= al_a, o[m][i][1] *= al_a, o[m][i][2] *= al_b, o[m][i][3] *= al_b;
            }
            fa_pb_m<D, MT>(o, s, act, SV(buf)); /* O += P V */
        }
        __syncthreads();
    }
#undef SK
#undef SV
#pragma unroll
    for (int m = 0; m < MT; m++) {
        float la = l_a[m], lb = l_b[m];
        la += __shfl_xor_sync(0xffffffffu, la, 1);
        la += __shfl_xor_sync(0xffffffffu, la, 2);
        lb += __shfl_xor_sync(0xffffffffu, lb, 1);
        lb += __shfl_xor_sync(0xffffffffu, lb, 2);
        const int row_a = t0 + a0[m] + g, row_b = row_a + 8;
        const float inv_a = 1.0f / la, inv_b = 1.0f / lb;
#pragma unroll
        for (int i = 0; i < ND; i++) {
            const int col = i * 8 + 2 * t;
            if (row_a < T) fa_st2(out + ((int64_t)row_a * NH + h) * D + col, o[m][i][0] * inv_a, o[m][i][1] * inv_a);
            if (row_b < T) fa_st2(out + ((int64_t)row_b * NH + h) * D + col, o[m][i][2] * inv_b, o[m][i][3] * inv_b);
        }
        if (t == 0) {
            if (row_a < T) lse[(int64_t)row_a * NH + h] = m_a[m] * scale + logf(la);
            if (row_b < T) lse[(int64_t)row_b * NH + h] = m_b[m] * scale + logf(lb);
        }
    }
}

/* K, V (16 W rows each), Q x 2, dO x 2, then per query-tile buffer lse log2e, D and start */
template <int D, int W> static constexpr size_t fa_dkdv2_smem() {
    return (size_t)2 * 16 * W * D * 2 + 4 * fa_tile_bytes<D>() + 2 * 3 * FA_TILE * 4;
}

/* (NH, T / (16 W)): 16 W keys of one query head over the query tiles that can see them (atomic:
 * dk, dv summed over the KV group's CTAs when NH != NKV). */
template <int D, int W, int MINB, typename KT>
static __global__ __launch_bounds__(32 * W, MINB) void k_fa_dkdv2(KT *__restrict__ dk, KT *__restrict__ dv,
                                                            const bf16 *__restrict__ dob,
                                                            const float *__restrict__ lse,
                                                            const float *__restrict__ Dg,
                                                            const bf16 *__restrict__ q, const bf16 *__restrict__ k,
                                                            const bf16 *__restrict__ v,
                                                            const int32_t *__restrict__ start, int prefix, int T,
                                                            int NH, int NKV, float scale_log2, float scale,
                                                            int atomic) {
    constexpr int NT = 32 * W, BK = 16 * W, ND = D / 8, KB = D / 16, TB = FA_TILE * D * 2, KVB = BK * D * 2;
    /* K and V fragments in registers (32 of them; 64 at D 128 would spill), unless the registers
     * are capped for 3 CTAs an SM */
    constexpr bool HOLD = D == 64 && MINB < 3;
    extern __shared__ __align__(128) char smem[];
    char *sk = smem, *sv = smem + KVB;
#define SQ(b) (smem + 2 * KVB + (b) * TB)
#define SG(b) (smem + 2 * KVB + (2 + (b)) * TB)
    float *vals = reinterpret_cast<float *>(smem + 2 * KVB + 4 * TB); /* [buf][lse2 | D | start][64] */
    griddep_wait();
    const int h = blockIdx.x, kvh = h / (NH / NKV), j0 = blockIdx.y * BK;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, w0 = warp * 16;
    const int jl = min(j0 + BK, T) - 1; /* the CTA's last valid key */
    fa_load<D, BK, NT>(sk, k, j0, T, NKV, kvh);
    fa_load<D, BK, NT>(sv, v, j0, T, NKV, kvh);
    fa_load_rows<D, NT>(SQ(0), SG(0), vals, q, dob, lse, Dg, start, j0, T, NH, h);
    cp_async_commit();
    const int ka = j0 + w0 + g, kb_ = ka + 8; /* this thread's keys */
    const int wk_min = j0 + w0, wk_max = j0 + w0 + 15;
    float dka[ND][4], dva[ND][4];
    fa_zero(dka);
    fa_zero(dva);
    [[maybe_unused]] uint32_t kf[HOLD ? KB : 1][4], vf[HOLD ? KB : 1][4];
    /* query tiles from j0 on (rows before j0 never see these keys) while their first row can see
     * the CTA's last key (starts only grow), or to the end when the CTA holds prefix keys */
    for (int it = 0, t0 = j0;; it++, t0 += FA_TILE) {
        const int buf = it & 1;
        const bool next = t0 + FA_TILE < T && (start[t0 + FA_TILE] <= jl || j0 < prefix);
        if (next)
            fa_load_rows<D, NT>(SQ(buf ^ 1), SG(buf ^ 1), vals + (buf ^ 1) * 3 * FA_TILE, q, dob, lse, Dg, start,
                                t0 + FA_TILE, T, NH, h);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        if constexpr (HOLD) {
            if (it == 0) fa_afrag<D>(kf, sk, w0), fa_afrag<D>(vf, sv, w0);
        }
        const float *l2 = vals + buf * 3 * FA_TILE, *Dv = l2 + FA_TILE;
        const int *st = reinterpret_cast<const int *>(l2 + 2 * FA_TILE);
        /* the warp's keys exist, some row of the tile is at or after its first key, and the
         * tile's first row (the smallest start) can see one of them, or some are prefix keys */
        if (wk_min < T && t0 + FA_TILE - 1 >= wk_min && (st[0] <= wk_max || wk_min < prefix)) {
            float s[8][4], dp[8][4];
            fa_zero(s);
            fa_zero(dp);
            if constexpr (HOLD) {
                fa_abt_r<D>(s, kf, SQ(buf));  /* S^T = K Q^T */
                fa_abt_r<D>(dp, vf, SG(buf)); /* dP^T = V dO^T */
            } else {
                fa_abt<D>(s, sk, w0, SQ(buf));
                fa_abt<D>(dp, sv, w0, SG(buf));
            }
            const bool full = t0 + FA_TILE - 1 < T && t0 >= wk_max && (st[FA_TILE - 1] <= wk_min || wk_max < prefix);
            fa_probs(s, dp, l2, Dv, st, t0, t, T, ka, kb_, prefix, full, scale_log2);
            fa_pb<D>(dva, s, SG(buf));  /* dV += P^T dO */
            fa_pb<D>(dka, dp, SQ(buf)); /* dK += dS^T Q */
        }
        __syncthreads();
        if (!next) break;
    }
#undef SQ
#undef SG
    fa_store_dkdv<D, KT>(dk, dv, dka, dva, ka, kb_, t, T, NKV, kvh, scale, atomic);
}

/* ---- entries ------------------------------------------------------------------------------ */

/* Which kernel runs each pass: DSPY_CUDA_FA = two digits, forward then dk/dv (comparisons and
 * tests; anything else means the defaults). The dq pass is k_fa_dq always (a 4 x 2 and an 8-warp
 * version measured no faster: 0.122-0.146 ms against 0.124 at T = 2,048).
 *   forward: 0 k_fa_fwd; 1 k_fa_fwd2 at 4 warps x 1 m16 tile (64 rows); 2 at 4 x 2 (128 rows)
 *            with registers for 3 CTAs an SM (head size 64; 1 at 128)
 *   dk/dv:   0 k_fa_dkdv; 1 k_fa_dkdv2 at 4 warps, K/V fragments held; 2 at 4 warps with
 *            registers for 3 CTAs an SM (head size 64; 1 at 128, where the cap would spill)
 * Defaults at head size 64 (128 keeps 0 and 0), from the H200 (bench_train_attn, the 1B heads;
 * ms against the 64-row kernels): forward 1 below T = 3,072 (one T1 example of 2,048: 0.100 vs
 * 0.109; 2 gives 0.108) and 2 from there (4 x 2,048 packed: 0.350 vs 0.374; T2's prefix-shared
 * 3,540: 0.183 vs 0.189; 1 gives 0.386 and 0.196); dk/dv 2 (0.207 vs 0.217, 0.762 vs 0.883,
 * 0.387 vs 0.445). Measured slower: 8 warps a CTA (forward 0.116 at 2,048; dk/dv 0.219), and one
 * dk/dv CTA over the whole KV group (dk, dv summed in registers, no atomics: 0.340 at 2,048, its
 * 256 CTAs leave the causal imbalance to few SMs).
 * DSPY_CUDA_FA_PARTS (bits: 1 prep, 2 dk/dv, 4 dq; default 7) runs only some of the backward's
 * passes: bench_train_attn times them apart with it (the results are then incomplete). */
struct fa_cfg {
    int fwd, dkdv;
};

static fa_cfg fa_config(int T, int D) {
    const char *e = getenv("DSPY_CUDA_FA");
    if (e && strlen(e) == 2 && e[0] >= '0' && e[0] <= '2' && e[1] >= '0' && e[1] <= '2')
        return fa_cfg{e[0] - '0', e[1] - '0'};
    if (D != 64) return fa_cfg{0, 0}; /* measured at head size 64 only */
    return fa_cfg{T < 3072 ? 1 : 2, 2};
}

template <typename K> static dspy_status fa_smem_attr(dspy_backend *be, K *kern, size_t bytes) {
    return dspy_cu_check(be, cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes),
                         "flash training attention setup");
}

template <int D, typename OT> static dspy_status fa_setup_fwd(dspy_backend *be) {
    DSPY_TRY(fa_smem_attr(be, k_fa_fwd<D, OT>, fa_fwd_smem<D>()));
    DSPY_TRY(fa_smem_attr(be, k_fa_fwd2<D, 4, 1, 1, OT>, fa_fwd2_smem<D, 4, 1>()));
    if constexpr (D == 64) return fa_smem_attr(be, k_fa_fwd2<64, 4, 2, 3, OT>, fa_fwd2_smem<64, 4, 2>());
    return DSPY_OK;
}

/* the backward's kernels for one dk, dv output type (F32, or BF16 written directly) */
template <int D, typename KT> static dspy_status fa_setup_dkdv(dspy_backend *be) {
    DSPY_TRY((fa_smem_attr(be, k_fa_dkdv<D, KT>, fa_dkdv_smem<D>())));
    DSPY_TRY((fa_smem_attr(be, k_fa_dkdv2<D, 4, 1, KT>, fa_dkdv2_smem<D, 4>())));
    if constexpr (D == 64) return fa_smem_attr(be, k_fa_dkdv2<64, 4, 3, KT>, fa_dkdv2_smem<64, 4>());
    return DSPY_OK;
}

template <int D> static dspy_status fa_setup_d(dspy_backend *be) {
    DSPY_TRY((fa_setup_fwd<D, float>(be)));
    DSPY_TRY((fa_setup_fwd<D, bf16>(be)));
    DSPY_TRY((fa_setup_dkdv<D, float>(be)));
    DSPY_TRY((fa_setup_dkdv<D, bf16>(be)));
    /* dq from dout (F32 or BF16) into dq (F32, or BF16 from a BF16 dout) */
    DSPY_TRY((fa_smem_attr(be, k_fa_dq<D, float, float>, fa_dq_smem<D>())));
    DSPY_TRY((fa_smem_attr(be, k_fa_dq<D, bf16, float>, fa_dq_smem<D>())));
    return fa_smem_attr(be, k_fa_dq<D, bf16, bf16>, fa_dq_smem<D>());
}

dspy_status dspy_cu_train_fa_setup(dspy_backend *be) {
    DSPY_TRY(fa_setup_d<64>(be));
    return fa_setup_d<128>(be);
}

bool dspy_cu_train_fa_fits(int T, int HS, const void *const *ptrs, int n) {
    const char *e = getenv("DSPY_CUDA_TRAIN_ATTN"); /* "wmma": the older kernels (comparisons) */
    if (e && strcmp(e, "wmma") == 0) return false;
    if (HS != 64 && HS != 128) return false;
    if (cu_blocks(T, FA_TILE) > 65535u) return false; /* the tiles are the grid's y */
    uintptr_t a = 0;
    for (int i = 0; i < n; i++) a |= (uintptr_t)ptrs[i];
    return (a & 15u) == 0;
}

template <int D, int W, int MT, int MINB, typename OT>
static dspy_status fa_fwd2(dspy_backend *be, OT *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                           const int32_t *start, int prefix, int T, int NH, int NKV, float sl2, float scale) {
    dim3 grid(NH, cu_blocks(T, 16 * W * MT));
    return cu_launch(be, "attention_train (BF16 flash)", k_fa_fwd2<D, W, MT, MINB, OT>, grid, 32 * W,
                     fa_fwd2_smem<D, W, MT>(), out, lse, q, k, v, start, prefix, T, NH, NKV, sl2, scale);
}

template <int D, typename OT>
static dspy_status fa_forward(dspy_backend *be, OT *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                              const int32_t *start, int prefix, int T, int NH, int NKV) {
    const float scale = (float)(1.0 / sqrt((double)D)), sl2 = scale * FA_LOG2E;
    switch (fa_config(T, D).fwd) {
    case 0: {
        dim3 grid(NH, cu_blocks(T, FA_TILE));
        return cu_launch(be, "attention_train (BF16 flash)", k_fa_fwd<D, OT>, grid, FA_THREADS, fa_fwd_smem<D>(), out,
                         lse, q, k, v, start, prefix, T, NH, NKV, sl2, scale);
    }
    case 1: return fa_fwd2<D, 4, 1, 1>(be, out, lse, q, k, v, start, prefix, T, NH, NKV, sl2, scale);
    default:
        if constexpr (D == 64) return fa_fwd2<D, 4, 2, 3>(be, out, lse, q, k, v, start, prefix, T, NH, NKV, sl2, scale);
        return fa_fwd2<D, 4, 1, 1>(be, out, lse, q, k, v, start, prefix, T, NH, NKV, sl2, scale);
    }
}

dspy_status dspy_cu_attention_train_fa(dspy_backend *be, void *out, bool out16, float *lse, const bf16 *q,
                                       const bf16 *k, const bf16 *v, const int32_t *start, int prefix, int T, int NH,
                                       int NKV, int HS) {
    if (out16)
        return HS == 64 ? fa_forward<64>(be, (bf16 *)out, lse, q, k, v, start, prefix, T, NH, NKV)
                        : fa_forward<128>(be, (bf16 *)out, lse, q, k, v, start, prefix, T, NH, NKV);
    return HS == 64 ? fa_forward<64>(be, (float *)out, lse, q, k, v, start, prefix, T, NH, NKV)
                    : fa_forward<128>(be, (float *)out, lse, q, k, v, start, prefix, T, NH, NKV);
}

/* The dk/dv pass into dk, dv (KT: F32, summed atomically under GQA, or BF16 written directly). */
template <int D, typename KT>
static dspy_status fa_dkdv(dspy_backend *be, KT *dk, KT *dv, const bf16 *dob, const float *lse, const float *Dg,
                           const bf16 *q, const bf16 *k, const bf16 *v, const int32_t *start, int prefix, int T, int NH,
                           int NKV, float sl2, float scale, int atomic) {
    const int kind = fa_config(T, D).dkdv;
    const char *what = "attention_train_backward (BF16 flash dk, dv)";
    dim3 grid(NH, cu_blocks(T, FA_TILE));
    if (kind == 0)
        return cu_launch(be, what, k_fa_dkdv<D, KT>, grid, FA_THREADS, fa_dkdv_smem<D>(), dk, dv, dob, lse, Dg, q, k, v,
                         start, prefix, T, NH, NKV, sl2, scale, atomic);
    if (kind == 1 || D != 64)
        return cu_launch(be, what, k_fa_dkdv2<D, 4, 1, KT>, grid, 128, fa_dkdv2_smem<D, 4>(), dk, dv, dob, lse, Dg, q,
                         k, v, start, prefix, T, NH, NKV, sl2, scale, atomic);
    return cu_launch(be, what, k_fa_dkdv2<64, 4, 3, KT>, grid, 128, fa_dkdv2_smem<64, 4>(), dk, dv, dob, lse, Dg, q, k,
                     v, start, prefix, T, NH, NKV, sl2, scale, atomic);
}

/* The backward: dout (GT) and dq, dk, dv (QT) F32 or BF16 (BF16 outputs only from a BF16 dout, and
 * under GQA only with NH >= 4 NKV: the entry checks). */
template <int D, typename OT, typename GT, typename QT>
static dspy_status fa_backward(dspy_backend *be, QT *dq, QT *dk, QT *dv, const GT *dout, const OT *out,
                               const float *lse, float *Dg, const bf16 *q, const bf16 *k, const bf16 *v,
                               const int32_t *start, int prefix, int T, int NH, int NKV) {
    const float scale = (float)(1.0 / sqrt((double)D)), sl2 = scale * FA_LOG2E;
    const int64_t rows = (int64_t)T * NH, nkv = (int64_t)T * NKV * D;
    const char *pe = getenv("DSPY_CUDA_FA_PARTS");
    const int parts = pe && *pe ? atoi(pe) : 7;
    const int atomic = NH != NKV;
    constexpr bool g16 = sizeof(GT) == sizeof(bf16), q16 = sizeof(QT) == sizeof(bf16);
    /* dout in BF16 for the dk/dv pass: a BF16 dout itself, or an F32 one rounded into the first
     * half of dq (F32 there: free until the dq pass writes it) */
    bf16 *dob = g16 ? (bf16 *)NULL : reinterpret_cast<bf16 *>(dq);
    const bf16 *dk_dout = g16 ? reinterpret_cast<const bf16 *>(dout) : dob;
    /* the group's atomic sums in F32: dk, dv themselves, or with BF16 outputs scratch in dq's memory
     * (2 nkv floats fit in its T NH D BF16 elements when NH >= 4 NKV), rounded into dk, dv after the
     * pass, before the dq pass overwrites it */
    float *sk = (float *)NULL, *sv = (float *)NULL;
    if (atomic) {
        if constexpr (q16) sk = reinterpret_cast<float *>(dq), sv = sk + nkv;
        else sk = dk, sv = dv;
    }
    if (parts & 1)
        DSPY_TRY(cu_launch(be, "attention_train_backward (BF16 flash prep)", k_fa_prep<D, OT, GT>,
                           cu_blocks(rows, FA_THREADS / 32), FA_THREADS, 0, Dg, dob, sk, sv, nkv, dout, out, rows));
    if (parts & 2) {
        if (atomic) {
            DSPY_TRY((fa_dkdv<D, float>(be, sk, sv, dk_dout, lse, Dg, q, k, v, start, prefix, T, NH, NKV, sl2, scale,
                                        1)));
            if constexpr (q16)
                DSPY_TRY(cu_launch(be, "attention_train_backward (BF16 flash dk, dv rounding)", k_fa_round2,
                                   tr_grid(nkv / 2), 256, 0, (bf16 *)dk, (bf16 *)dv, (const float *)sk,
                                   (const float *)sv, nkv));
        } else {
            DSPY_TRY((fa_dkdv<D, QT>(be, dk, dv, dk_dout, lse, Dg, q, k, v, start, prefix, T, NH, NKV, sl2, scale, 0)));
        }
    }
    if (!(parts & 4)) return DSPY_OK;
    dim3 grid(NH, cu_blocks(T, FA_TILE));
    return cu_launch(be, "attention_train_backward (BF16 flash dq)", k_fa_dq<D, GT, QT>, grid, FA_THREADS,
                     fa_dq_smem<D>(), dq, dout, lse, (const float *)Dg, q, k, v, start, prefix, T, NH, NKV, sl2, scale);
}

/* The head size and the dtypes as types. */
template <typename OT, typename GT, typename QT>
static dspy_status fa_backward_hs(dspy_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *out,
                                  const float *lse, float *D, const bf16 *q, const bf16 *k, const bf16 *v,
                                  const int32_t *start, int prefix, int T, int NH, int NKV, int HS) {
    if (HS == 64)
        return fa_backward<64, OT, GT, QT>(be, (QT *)dq, (QT *)dk, (QT *)dv, (const GT *)dout, (const OT *)out, lse, D,
                                           q, k, v, start, prefix, T, NH, NKV);
    return fa_backward<128, OT, GT, QT>(be, (QT *)dq, (QT *)dk, (QT *)dv, (const GT *)dout, (const OT *)out, lse, D, q,
                                        k, v, start, prefix, T, NH, NKV);
}

template <typename OT>
static dspy_status fa_backward_out(dspy_backend *be, void *dq, void *dk, void *dv, bool grad16, const void *dout,
                                   bool dout16, const void *out, const float *lse, float *D, const bf16 *q,
                                   const bf16 *k, const bf16 *v, const int32_t *start, int prefix, int T, int NH,
                                   int NKV, int HS) {
    if (grad16)
        return fa_backward_hs<OT, bf16, bf16>(be, dq, dk, dv, dout, out, lse, D, q, k, v, start, prefix, T, NH, NKV, HS);
    if (dout16)
        return fa_backward_hs<OT, bf16, float>(be, dq, dk, dv, dout, out, lse, D, q, k, v, start, prefix, T, NH, NKV,
                                               HS);
    return fa_backward_hs<OT, float, float>(be, dq, dk, dv, dout, out, lse, D, q, k, v, start, prefix, T, NH, NKV, HS);
}

dspy_status dspy_cu_attention_train_backward_fa(dspy_backend *be, void *dq, void *dk, void *dv, bool grad16,
                                                const void *dout, bool dout16, const void *out, bool out16,
                                                const float *lse, float *D, const bf16 *q, const bf16 *k,
                                                const bf16 *v, const int32_t *start, int prefix, int T, int NH,
                                                int NKV, int HS) {
    if (grad16 && (!dout16 || (NH != NKV && NH < 4 * NKV)))
        return dspy_fail(DSPY_ERR_ARG, "cuda attention_train_backward (flash): BF16 dq, dk, dv need a BF16 dout and "
                                       "NH == NKV or NH >= 4 NKV (NH=%d NKV=%d)", NH, NKV);
    if (out16)
        return fa_backward_out<bf16>(be, dq, dk, dv, grad16, dout, dout16, out, lse, D, q, k, v, start, prefix, T, NH,
                                     NKV, HS);
    return fa_backward_out<float>(be, dq, dk, dv, grad16, dout, dout16, out, lse, D, q, k, v, start, prefix, T, NH,
                                  NKV, HS);
}
