/* train_attention.cu — F32 attention of one packed training sequence and its backward
 * (kern/ops.h attention_train, attention_train_backward), flash-style: nothing of size T x T
 * is stored; scores are recomputed in tiles from q, k and the saved lse.
 *
 * Row t attends keys start[t] .. t (causal within its example, block-diagonal across examples;
 * start is non-decreasing because examples are contiguous) and, with a shared prefix, keys
 * [0, prefix) too. A tile of rows [t0, t0 + BQ) needs keys from start[t0] (its smallest start)
 * to its last row only, plus the prefix's below that (tr_key_tiles), so tiles of one example
 * never visit another example's keys; a tile spanning an example boundary masks per element.
 * A key tile inside the prefix is seen by every later row. GQA: query head h reads kv head
 * h / (NH / NKV).
 *
 * Kernels (F32 SIMT; tensor cores are a later step), 256 threads as a 16 x 16 grid, head dims
 * padded to DP = 64 (HS <= 64) or 128 (HS <= 128) with zeros; shared-memory rows padded by 4
 * floats so that the float4 reads of the dot products are free of bank conflicts:
 *   forward  (T/64, NH) blocks: a 64-row query tile; per 64-key tile S = Q K^T scale, the
 *            online softmax (running max m and sum l per row), O += P V; out = O / l,
 *            lse = m + log l.
 *   backward, three kernels, deterministic (no atomics):
 *     D      D[t, h] = dout . out (planned scratch train_rows, T * NH floats);
 *     dk/dv  (T/64, NKV) blocks: a 64-key tile, looping over the group's query heads and the
 *            32-row query tiles that can see it: P^T = exp(S^T scale - lse),
 *            dS^T = P^T (V dout^T - D), dv += P^T dout, dk += dS^T q scale;
 *     dq     (T/64, NH) blocks: a 64-row query tile over its key tiles: dq += dS k scale.
 *   Each output element is written once (OVERWRITE), so nothing needs zeroing first.
 *
 * Accuracy: F32 throughout, the same formulas as the CPU reference (kern/cpu/attention_train.c)
 * in a different summation order: ~1e-6 relative. start is not validated here (that would
 * need the host to read it back); a row whose start is after it sees no keys and gets NaN.
 *
 * BF16 q, k, v (the mixed-precision trainer) go to cuDNN's fused attention where it takes the
 * call (train_attention_cudnn.cu: head size 64 or 128, a layout given by attention_train_layout;
 * DSPY_CUDA_CUDNN_ATTN=0 turns it off; a shared prefix through train_attention_split.cu's exact
 * split into two cuDNN calls, DSPY_CUDA_CUDNN_SPLIT=0 turns that off), else to the tensor cores:
 * train_attention_fa.cu (FlashAttention-2 arrangement, mma.sync) for head size 64 or 128 with
 * 16-byte aligned tensors and a dq that overlaps no input, train_attention_tc.cu (WMMA) for the
 * rest. A BF16 out (the BF16 trainer's att, kern/ops.h), and a BF16 dout, dq, dk, dv (its
 * attention gradients), go to cuDNN (the split included) or the flash kernels only; a call that
 * neither takes is refused (out16_refused).
 */
#include "kern/cuda/train.cuh"
#include "kern/cuda/train_attention_cudnn.h"
#include "kern/cuda/train_attention_split.h"

enum {
    TA_THREADS = 256,
    FBQ = 64, /* forward and dq: query rows per tile */
    FBK = 64, /* keys per tile */
    BBQ = 32, /* dk/dv: query rows per tile */
};

/* Component c (0..3, a compile-time constant after unrolling) of a float4. */
static __device__ __forceinline__ float f4c(const float4 &v, int c) { return c == 0 ? v.x : c == 1 ? v.y : c == 2 ? v.z : v.w; }
static __device__ __forceinline__ float dot4(const float4 &a, const float4 &b) {
    return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}
static __device__ __forceinline__ void axpy4(float4 &acc, float s, const float4 &x) {
    acc.x += s * x.x, acc.y += s * x.y, acc.z += s * x.z, acc.w += s * x.w;
}
static __device__ __forceinline__ const float4 &at4(const float *p) { return *reinterpret_cast<const float4 *>(p); }

/* acc += A B for this thread's 4 rows (ty + 16 i) and dims (tx * 4 + 64 e): A (rows, FBK) with
 * row stride FBK + 4, B (FBK, ND * 64) with row stride ND * 64 + 4, both in shared memory. The
 * tile product of the forward (P V) and of the dq pass (dS K). */
template <int ND>
static __device__ __forceinline__ void acc_tile(float4 (&acc)[4][ND], const float *A, const float *B, int tx, int ty) {
    constexpr int LD = ND * 64 + 4, PL = FBK + 4;
#pragma unroll 2
    for (int c = 0; c < FBK; c += 4) {
        float4 a[4];
#pragma unroll
        for (int i = 0; i < 4; i++) a[i] = at4(A + (ty + 16 * i) * PL + c);
#pragma unroll
        for (int cc = 0; cc < 4; cc++)
#pragma unroll
            for (int e = 0; e < ND; e++) {
                const float4 b = at4(B + (c + cc) * LD + tx * 4 + 64 * e);
#pragma unroll
                for (int i = 0; i < 4; i++) axpy4(acc[i][e], f4c(a[i], cc), b);
            }
    }
}

/* Rows [r0, r0 + R) of head h of a (T, H, HS) array into dst (R, DP + 4); zero past T and HS. */
template <int DP, int R>
static __device__ __forceinline__ void load_rows(float *dst, const float *src, int r0, int T, int H, int h, int HS) {
    for (int idx = threadIdx.x; idx < R * DP; idx += TA_THREADS) {
        int r = idx / DP, d = idx % DP, t = r0 + r;
        dst[r * (DP + 4) + d] = (t < T && d < HS) ? src[((int64_t)t * H + h) * HS + d] : 0.0f;
    }
}

/* Per-row values of rows [r0, r0 + R) of head h of a (T, H) array; `pad` past T. */
template <int R>
static __device__ __forceinline__ void load_row_vals(float *dst, const float *src, int r0, int T, int H, int h, float pad) {
    for (int r = threadIdx.x; r < R; r += TA_THREADS) dst[r] = r0 + r < T ? src[(int64_t)(r0 + r) * H + h] : pad;
}

/* start of rows [r0, r0 + R); past T a start no key reaches (such rows see nothing). */
template <int R>
static __device__ __forceinline__ void load_starts(int *dst, const int32_t *start, int r0, int T) {
    for (int r = threadIdx.x; r < R; r += TA_THREADS) dst[r] = r0 + r < T ? start[r0 + r] : 0x7fffffff;
}

/* Maximum / sum over the 16 threads of one tile row (consecutive lanes of a half warp). */
static __device__ __forceinline__ float row_max16(float v) {
    for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
static __device__ __forceinline__ float row_sum16(float v) {
    for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Shared memory (floats) of each kernel. */
template <int DP> static constexpr size_t fwd_smem() { return sizeof(float) * ((size_t)(FBQ + 2 * FBK) * (DP + 4) + (size_t)FBQ * (FBK + 4)); }
template <int DP> static constexpr size_t dkdv_smem() { return sizeof(float) * ((size_t)(2 * FBK + 2 * BBQ) * (DP + 4) + 2 * (size_t)FBK * (BBQ + 4)); }
template <int DP> static constexpr size_t dq_smem() { return sizeof(float) * ((size_t)(2 * FBQ + 2 * FBK) * (DP + 4) + (size_t)FBQ * (FBK + 4)); }

/* ---- forward ----------------------------------------------------------------------------- */

/* Thread (tx, ty): scores of rows ty + 16 i and keys tx + 16 j (i, j < 4); output rows
 * ty + 16 i, dims tx * 4 + 64 e (e < DP / 64), as float4. */
template <int DP>
static __global__ void __launch_bounds__(TA_THREADS)
    k_att_fwd(float *out, float *lse, const float *q, const float *k, const float *v, const int32_t *start,
              int prefix, int T, int NH, int NKV, int HS, float scale) {
    griddep_wait();
    constexpr int LD = DP + 4, PL = FBK + 4, ND = DP / 64;
    extern __shared__ float4 smem4[];
    float *Qs = reinterpret_cast<float *>(smem4), *Ks = Qs + FBQ * LD, *Vs = Ks + FBK * LD, *Ps = Vs + FBK * LD;
    __shared__ int st[FBQ];
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const int t0 = blockIdx.x * FBQ, h = blockIdx.y, kvh = h / (NH / NKV);
    load_rows<DP, FBQ>(Qs, q, t0, T, NH, h, HS);
    load_starts<FBQ>(st, start, t0, T);
    float m[4], l[4];
    float4 o[4][ND];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        m[i] = -INFINITY, l[i] = 0.0f;
#pragma unroll
        for (int e = 0; e < ND; e++) o[i][e] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    const tr_keys kt = tr_key_tiles(prefix, start[t0], min(t0 + FBQ, T) - 1, FBK);
    for (int it = 0; it < kt.nt; it++) {
        const int j0 = tr_key_tile(kt, it, FBK);
        __syncthreads(); /* the previous tile's P V is done with Ks, Vs, Ps */
        load_rows<DP, FBK>(Ks, k, j0, T, NKV, kvh, HS);
        load_rows<DP, FBK>(Vs, v, j0, T, NKV, kvh, HS);
        __syncthreads();
        float s[4][4] = {};
#pragma unroll 4
        for (int d = 0; d < DP; d += 4) {
            float4 qa[4], ka[4];
#pragma unroll
            for (int i = 0; i < 4; i++) qa[i] = at4(Qs + (ty + 16 * i) * LD + d);
#pragma unroll
            for (int j = 0; j < 4; j++) ka[j] = at4(Ks + (tx + 16 * j) * LD + d);
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) s[i][j] += dot4(qa[i], ka[j]);
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int rr = ty + 16 * i, row = t0 + rr, rs = st[rr];
            float mx = -INFINITY;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int key = j0 + tx + 16 * j;
                s[i][j] = (tr_sees(key, row, rs, prefix) && key < T) ? s[i][j] * scale : -INFINITY;
                mx = fmaxf(mx, s[i][j]);
            }
            const float mnew = fmaxf(m[i], row_max16(mx));
            float alpha = 1.0f, sum = 0.0f;
            if (mnew != -INFINITY) {
                alpha = expf(m[i] - mnew); /* 0 when m was -inf */
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    s[i][j] = expf(s[i][j] - mnew); /* masked: exp(-inf) = 0 */
                    sum += s[i][j];
                }
            } else {
#pragma unroll
                for (int j = 0; j < 4; j++) s[i][j] = 0.0f;
            }
            l[i] = l[i] * alpha + row_sum16(sum);
            m[i] = mnew;
#pragma unroll
            for (int e = 0; e < ND; e++) o[i][e].x *= alpha, o[i][e].y *= alpha, o[i][e].z *= alpha, o[i][e].w *= alpha;
#pragma unroll
            for (int j = 0; j < 4; j++) Ps[rr * PL + tx + 16 * j] = s[i][j];
        }
        __syncthreads();
        acc_tile<ND>(o, Ps, Vs, tx, ty);
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int row = t0 + ty + 16 * i;
        if (row >= T) continue;
        const float inv = 1.0f / l[i];
        float *dst = out + ((int64_t)row * NH + h) * HS;
#pragma unroll
        for (int e = 0; e < ND; e++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int d = tx * 4 + 64 * e + c;
                if (d < HS) dst[d] = f4c(o[i][e], c) * inv;
            }
        if (tx == 0) lse[(int64_t)row * NH + h] = m[i] + logf(l[i]);
    }
}

/* ---- backward ---------------------------------------------------------------------------- */

/* D[t, h] = dout[t, h] . out[t, h]: one warp per (row, head). */
static __global__ void k_att_rowdot(float *D, const float *dout, const float *out, int64_t rows, int HS) {
    griddep_wait();
    const int64_t w = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (w >= rows) return;
    const float *a = dout + w * HS, *b = out + w * HS;
    float s = 0.0f;
    for (int d = threadIdx.x & 31; d < HS; d += 32) s += a[d] * b[d];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0) D[w] = s;
}

/* One block per (64-key tile, kv head). Thread (tx, ty): transposed scores of keys ty + 16 i
 * (i < 4) and rows tx + 16 j (j < 2); gradient rows = keys ty + 16 i, dims tx * 4 + 64 e. */
template <int DP>
static __global__ void __launch_bounds__(TA_THREADS)
    k_att_bwd_dkdv(float *dk, float *dv, const float *dout, const float *lse, const float *Dg, const float *q,
                   const float *k, const float *v, const int32_t *start, int prefix, int T, int NH, int NKV,
                   int HS, float scale) {
    griddep_wait();
    constexpr int LD = DP + 4, TL = BBQ + 4, ND = DP / 64;
    extern __shared__ float4 smem4[];
    float *Ks = reinterpret_cast<float *>(smem4), *Vs = Ks + FBK * LD, *Qs = Vs + FBK * LD, *Os = Qs + BBQ * LD;
    float *Pt = Os + BBQ * LD, *St = Pt + FBK * TL;
    __shared__ float ls[BBQ], Ds[BBQ];
    __shared__ int st[BBQ];
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const int j0 = blockIdx.x * FBK, kvh = blockIdx.y, group = NH / NKV, je = min(j0 + FBK, T) - 1;
    load_rows<DP, FBK>(Ks, k, j0, T, NKV, kvh, HS);
    load_rows<DP, FBK>(Vs, v, j0, T, NKV, kvh, HS);
    float4 dka[4][ND], dva[4][ND];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int e = 0; e < ND; e++) dka[i][e] = dva[i][e] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int g = 0; g < group; g++) {
        const int h = kvh * group + g;
        /* rows before j0 never see these keys; rows from the first whose start is past je on
         * (starts only grow) see none either, unless the tile holds prefix keys (every later
         * row sees those) */
        for (int t0 = j0; t0 < T && (start[t0] <= je || j0 < prefix); t0 += BBQ) {
            __syncthreads(); /* the previous tile is done with Qs, Os, Pt, St (and Ks, Vs are loaded) */
            load_rows<DP, BBQ>(Qs, q, t0, T, NH, h, HS);
            load_rows<DP, BBQ>(Os, dout, t0, T, NH, h, HS);
            load_row_vals<BBQ>(ls, lse, t0, T, NH, h, 0.0f);
            load_row_vals<BBQ>(Ds, Dg, t0, T, NH, h, 0.0f);
            load_starts<BBQ>(st, start, t0, T);
            __syncthreads();
            float s[4][2] = {}, dp[4][2] = {};
#pragma unroll 4
            for (int d = 0; d < DP; d += 4) {
                float4 ka[4], va[4], qa[2], oa[2];
#pragma unroll
                for (int i = 0; i < 4; i++) ka[i] = at4(Ks + (ty + 16 * i) * LD + d), va[i] = at4(Vs + (ty + 16 * i) * LD + d);
#pragma unroll
                for (int j = 0; j < 2; j++) qa[j] = at4(Qs + (tx + 16 * j) * LD + d), oa[j] = at4(Os + (tx + 16 * j) * LD + d);
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int j = 0; j < 2; j++) s[i][j] += dot4(ka[i], qa[j]), dp[i][j] += dot4(va[i], oa[j]);
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    const int kk = ty + 16 * i, key = j0 + kk, rr = tx + 16 * j, row = t0 + rr;
                    const bool ok = tr_sees(key, row, st[rr], prefix) && key < T && row < T;
                    const float p = ok ? expf(s[i][j] * scale - ls[rr]) : 0.0f;
                    Pt[kk * TL + rr] = p;
                    St[kk * TL + rr] = p * (dp[i][j] - Ds[rr]);
                }
            __syncthreads();
#pragma unroll 2
            for (int r = 0; r < BBQ; r += 4) {
                float4 pa[4], sa[4];
#pragma unroll
                for (int i = 0; i < 4; i++) pa[i] = at4(Pt + (ty + 16 * i) * TL + r), sa[i] = at4(St + (ty + 16 * i) * TL + r);
#pragma unroll
                for (int rc = 0; rc < 4; rc++)
#pragma unroll
                    for (int e = 0; e < ND; e++) {
                        const float4 oo = at4(Os + (r + rc) * LD + tx * 4 + 64 * e);
                        const float4 qq = at4(Qs + (r + rc) * LD + tx * 4 + 64 * e);
#pragma unroll
                        for (int i = 0; i < 4; i++) axpy4(dva[i][e], f4c(pa[i], rc), oo), axpy4(dka[i][e], f4c(sa[i], rc), qq);
                    }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int key = j0 + ty + 16 * i;
        if (key >= T) continue;
        float *dkr = dk + ((int64_t)key * NKV + kvh) * HS, *dvr = dv + ((int64_t)key * NKV + kvh) * HS;
#pragma unroll
        for (int e = 0; e < ND; e++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int d = tx * 4 + 64 * e + c;
                if (d < HS) dkr[d] = f4c(dka[i][e], c) * scale, dvr[d] = f4c(dva[i][e], c);
            }
    }
}

/* One block per (64-row query tile, head). Thread (tx, ty): scores of rows ty + 16 i and keys
 * tx + 16 j (i, j < 4); dq rows ty + 16 i, dims tx * 4 + 64 e. */
template <int DP>
static __global__ void __launch_bounds__(TA_THREADS)
    k_att_bwd_dq(float *dq, const float *dout, const float *lse, const float *Dg, const float *q, const float *k,
                 const float *v, const int32_t *start, int prefix, int T, int NH, int NKV, int HS, float scale) {
    griddep_wait();
    constexpr int LD = DP + 4, PL = FBK + 4, ND = DP / 64;
    extern __shared__ float4 smem4[];
    float *Qs = reinterpret_cast<float *>(smem4), *Os = Qs + FBQ * LD, *Ks = Os + FBQ * LD, *Vs = Ks + FBK * LD;
    float *Ss = Vs + FBK * LD;
    __shared__ float ls[FBQ], Ds[FBQ];
    __shared__ int st[FBQ];
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const int t0 = blockIdx.x * FBQ, h = blockIdx.y, kvh = h / (NH / NKV);
    load_rows<DP, FBQ>(Qs, q, t0, T, NH, h, HS);
    load_rows<DP, FBQ>(Os, dout, t0, T, NH, h, HS);
    load_row_vals<FBQ>(ls, lse, t0, T, NH, h, 0.0f);
    load_row_vals<FBQ>(Ds, Dg, t0, T, NH, h, 0.0f);
    load_starts<FBQ>(st, start, t0, T);
    float4 dqa[4][ND];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int e = 0; e < ND; e++) dqa[i][e] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const tr_keys kt = tr_key_tiles(prefix, start[t0], min(t0 + FBQ, T) - 1, FBK);
    for (int it = 0; it < kt.nt; it++) {
        const int j0 = tr_key_tile(kt, it, FBK);
        __syncthreads(); /* the previous tile is done with Ks, Ss (and the row tiles are loaded) */
        load_rows<DP, FBK>(Ks, k, j0, T, NKV, kvh, HS);
        load_rows<DP, FBK>(Vs, v, j0, T, NKV, kvh, HS);
        __syncthreads();
        float s[4][4] = {}, dp[4][4] = {};
#pragma unroll 2
        for (int d = 0; d < DP; d += 4) {
            float4 qa[4], oa[4], ka[4], va[4];
#pragma unroll
            for (int i = 0; i < 4; i++) qa[i] = at4(Qs + (ty + 16 * i) * LD + d), oa[i] = at4(Os + (ty + 16 * i) * LD + d);
#pragma unroll
            for (int j = 0; j < 4; j++) ka[j] = at4(Ks + (tx + 16 * j) * LD + d), va[j] = at4(Vs + (tx + 16 * j) * LD + d);
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) s[i][j] += dot4(qa[i], ka[j]), dp[i][j] += dot4(oa[i], va[j]);
        }
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int rr = ty + 16 * i, row = t0 + rr, key = j0 + tx + 16 * j;
                const bool ok = tr_sees(key, row, st[rr], prefix) && key < T;
                const float p = ok ? expf(s[i][j] * scale - ls[rr]) : 0.0f;
                Ss[rr * PL + tx + 16 * j] = p * (dp[i][j] - Ds[rr]);
            }
        __syncthreads();
        acc_tile<ND>(dqa, Ss, Ks, tx, ty);
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int row = t0 + ty + 16 * i;
        if (row >= T) continue;
        float *dst = dq + ((int64_t)row * NH + h) * HS;
#pragma unroll
        for (int e = 0; e < ND; e++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int d = tx * 4 + 64 * e + c;
                if (d < HS) dst[d] = f4c(dqa[i][e], c) * scale;
            }
    }
}

/* ---- entries ----------------------------------------------------------------------------- */

dspy_status dspy_cu_train_setup(dspy_backend *be) {
    /* Every kernel needs more than the default 48 KB of shared memory. */
#define TA_SMEM(kern, bytes) \
    DSPY_TRY(dspy_cu_check(be, cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)(bytes)), \
                      "training attention setup"))
    TA_SMEM(k_att_fwd<64>, fwd_smem<64>());
    TA_SMEM(k_att_fwd<128>, fwd_smem<128>());
    TA_SMEM(k_att_bwd_dkdv<64>, dkdv_smem<64>());
    TA_SMEM(k_att_bwd_dkdv<128>, dkdv_smem<128>());
    TA_SMEM(k_att_bwd_dq<64>, dq_smem<64>());
    TA_SMEM(k_att_bwd_dq<128>, dq_smem<128>());
#undef TA_SMEM
    DSPY_TRY(dspy_cu_train_tc_setup(be));
    return dspy_cu_train_fa_setup(be);
}

/* Shape and prefix checks shared by both entries. */
static dspy_status check_heads(const char *op, int T, int NH, int NKV, int HS, int prefix) {
    if (T < 0 || NH <= 0 || NKV <= 0 || NH % NKV != 0)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: T=%d NH=%d NKV=%d: need T >= 0 and NH a positive multiple of NKV",
                         op, T, NH, NKV);
    if (HS <= 0 || HS > 128)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: head size %d is not supported (the CUDA training attention takes "
                                       "1 .. 128)", op, HS);
    if (prefix < 0 || prefix > T)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: prefix is %d; a shared prefix has 0 .. T = %d tokens", op, prefix, T);
    return DSPY_OK;
}

/* BF16 out (the BF16 trainer's att, kern/ops.h), and BF16 dout, dq, dk, dv (its attention
 * gradients) are written and read by the fused and flash paths only: the error for a call that
 * would go elsewhere (what: "out", "dout", "dq, dk, dv"). */
static dspy_status out16_refused(const char *op, const char *what, int T, int HS) {
    return dspy_fail(DSPY_ERR_ARG, "cuda %s: a BF16 %s needs head size 64 or 128, 16-byte aligned tensors (and, "
                                   "backward, a dq overlapping no input) and T=%d within the flash kernels' grid "
                                   "(head size %d; DSPY_CUDA_TRAIN_ATTN=wmma also refuses it): pass F32 (the "
                                   "trainer: DSPY_TRAIN_ATT16=0, or DSPY_TRAIN_GRAD16=0)", op, what, T, HS);
}

dspy_status dspy_cu_attention_train(dspy_backend *be, dspy_tensor out, dspy_tensor lse, dspy_tensor q, dspy_tensor k,
                               dspy_tensor v, dspy_tensor start, int prefix, int T, int NH, int NKV, int HS) {
    CU_ENTER(be);
    const char *op = "attention_train";
    /* q, k, v all F32 (the F32 kernels here) or all BF16 (tensor cores, train_attention_tc.cu);
     * out F32, or BF16 with BF16 q, k, v */
    const dspy_dtype it = q.dtype == DSPY_DTYPE_BF16 ? DSPY_DTYPE_BF16 : DSPY_DTYPE_F32;
    if (it == DSPY_DTYPE_BF16) CU_NEED2(op, "out", out, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)T * NH * HS);
    else CU_NEED(op, "out", out, DSPY_DTYPE_F32, (int64_t)T * NH * HS);
    const bool out16 = out.dtype == DSPY_DTYPE_BF16;
    CU_NEED(op, "lse", lse, DSPY_DTYPE_F32, (int64_t)T * NH);
    CU_NEED(op, "q", q, it, (int64_t)T * NH * HS);
    CU_NEED(op, "k", k, it, (int64_t)T * NKV * HS);
    CU_NEED(op, "v", v, it, (int64_t)T * NKV * HS);
    CU_NEED(op, "start", start, DSPY_DTYPE_I32, T);
    DSPY_TRY(check_heads(op, T, NH, NKV, HS, prefix));
    if (T == 0) return DSPY_OK;
    const void *fa_ptrs[] = {out.data, q.data, k.data, v.data};
    bool fused = false;
    if (it == DSPY_DTYPE_BF16 && prefix > 0) { /* prefix-shared: cuDNN by the exact split, where it takes both parts */
        DSPY_TRY(dspy_cu_split_route(be, false, start.data, prefix, T, NH, NKV, HS, fa_ptrs, 4, &fused));
        if (fused)
            return dspy_cu_split_fwd(be, out.data, out16, (float *)lse.data, (const bf16 *)q.data,
                                     (const bf16 *)k.data, (const bf16 *)v.data, prefix, T, NH, NKV, HS);
    }
    if (it == DSPY_DTYPE_BF16)
        DSPY_TRY(dspy_cu_sdpa_route(be, false, start.data, prefix, T, NH, NKV, HS, fa_ptrs, 4, &fused));
    if (fused)
        return dspy_cu_sdpa_fwd(be, out.data, out16, (float *)lse.data, (const bf16 *)q.data, (const bf16 *)k.data,
                                (const bf16 *)v.data, T, NH, NKV, HS);
    if (it == DSPY_DTYPE_BF16 && dspy_cu_train_fa_fits(T, HS, fa_ptrs, 4))
        return dspy_cu_attention_train_fa(be, out.data, out16, (float *)lse.data, (const bf16 *)q.data,
                                          (const bf16 *)k.data, (const bf16 *)v.data, (const int32_t *)start.data,
                                          prefix, T, NH, NKV, HS);
    if (out16) return out16_refused(op, "out", T, HS);
    if (it == DSPY_DTYPE_BF16)
        return dspy_cu_attention_train_tc(be, (float *)out.data, (float *)lse.data, (const bf16 *)q.data,
                                          (const bf16 *)k.data, (const bf16 *)v.data, (const int32_t *)start.data,
                                          prefix, T, NH, NKV, HS);
    const float scale = (float)(1.0 / sqrt((double)HS)); /* as the CPU computes it */
    dim3 grid(cu_blocks(T, FBQ), NH);
    float *o = (float *)out.data, *l = (float *)lse.data;
    const float *qp = (const float *)q.data, *kp = (const float *)k.data, *vp = (const float *)v.data;
    const int32_t *sp = (const int32_t *)start.data;
    if (HS <= 64)
        return cu_launch(be, op, k_att_fwd<64>, grid, TA_THREADS, fwd_smem<64>(), o, l, qp, kp, vp, sp, prefix, T, NH,
                         NKV, HS, scale);
    return cu_launch(be, op, k_att_fwd<128>, grid, TA_THREADS, fwd_smem<128>(), o, l, qp, kp, vp, sp, prefix, T, NH,
                     NKV, HS, scale);
}

dspy_status dspy_cu_attention_train_backward(dspy_backend *be, dspy_tensor dq, dspy_tensor dk, dspy_tensor dv,
                                        dspy_tensor dout, dspy_tensor out, dspy_tensor lse, dspy_tensor q,
                                        dspy_tensor k, dspy_tensor v, dspy_tensor start, int prefix, int T, int NH,
                                        int NKV, int HS) {
    CU_ENTER(be);
    const char *op = "attention_train_backward";
    /* BF16 q, k, v: out and dout each F32 or BF16, dq, dk, dv all F32 or all BF16 (from a BF16
     * dout); F32 q, k, v: everything F32 */
    const dspy_dtype it = q.dtype == DSPY_DTYPE_BF16 ? DSPY_DTYPE_BF16 : DSPY_DTYPE_F32;
    const dspy_dtype gt = it == DSPY_DTYPE_BF16 && dq.dtype == DSPY_DTYPE_BF16 ? DSPY_DTYPE_BF16 : DSPY_DTYPE_F32;
    CU_NEED(op, "dq", dq, gt, (int64_t)T * NH * HS);
    CU_NEED(op, "dk", dk, gt, (int64_t)T * NKV * HS);
    CU_NEED(op, "dv", dv, gt, (int64_t)T * NKV * HS);
    CU_NEED(op, "lse", lse, DSPY_DTYPE_F32, (int64_t)T * NH);
    if (it == DSPY_DTYPE_BF16) {
        CU_NEED2(op, "out", out, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)T * NH * HS);
        CU_NEED2(op, "dout", dout, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)T * NH * HS);
    } else {
        CU_NEED(op, "out", out, DSPY_DTYPE_F32, (int64_t)T * NH * HS);
        CU_NEED(op, "dout", dout, DSPY_DTYPE_F32, (int64_t)T * NH * HS);
    }
    const bool out16 = out.dtype == DSPY_DTYPE_BF16, dout16 = dout.dtype == DSPY_DTYPE_BF16;
    const bool grad16 = gt == DSPY_DTYPE_BF16;
    if (grad16 && (!dout16 || (NH != NKV && NH < 4 * NKV)))
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: BF16 dq, dk, dv need a BF16 dout and NH == NKV or NH >= 4 NKV "
                                       "(NH=%d NKV=%d, dout %s; the GQA sums are F32 in dq's memory until rounded)",
                         op, NH, NKV, dout16 ? "BF16" : "F32");
    CU_NEED(op, "q", q, it, (int64_t)T * NH * HS);
    CU_NEED(op, "k", k, it, (int64_t)T * NKV * HS);
    CU_NEED(op, "v", v, it, (int64_t)T * NKV * HS);
    CU_NEED(op, "start", start, DSPY_DTYPE_I32, T);
    DSPY_TRY(check_heads(op, T, NH, NKV, HS, prefix));
    if (T == 0) return DSPY_OK;
    cuda_state *s = cu_of(be);
    const int64_t rows = (int64_t)T * NH;
    if ((size_t)rows > s->train_rows_n)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: T=%d x NH=%d rows exceed the planned scratch of %zu (plan max_rows "
                                       "and NH with dspy_backend_reserve)", op, T, NH, s->train_rows_n);
    const float scale = (float)(1.0 / sqrt((double)HS));
    float *D = s->train_rows;
    const float *g = (const float *)dout.data, *l = (const float *)lse.data;
    const float *qp = (const float *)q.data, *kp = (const float *)k.data, *vp = (const float *)v.data;
    const int32_t *sp = (const int32_t *)start.data;
    /* the flash backward keeps dout in BF16 in dq's memory until its dq pass: not when dq
     * overlaps an input */
    const void *fa_ptrs[] = {dq.data, dk.data, dv.data, dout.data, out.data, q.data, k.data, v.data};
    const char *q0 = (const char *)dq.data, *q1 = q0 + (size_t)T * NH * HS * dspy_dtype_size(dq.dtype);
    bool dq_alone = true;
    const dspy_tensor ins[] = {dout, out, lse, q, k, v, start};
    for (size_t i = 0; i < sizeof ins / sizeof ins[0]; i++) {
        const char *a0 = (const char *)ins[i].data, *a1 = a0 + (size_t)ins[i].n * dspy_dtype_size(ins[i].dtype);
        if (a0 < q1 && a1 > q0) dq_alone = false;
    }
    bool fused = false;
    if (it == DSPY_DTYPE_BF16 && dq_alone && prefix > 0) { /* the dtypes as dspy_cu_sdpa_bwd's (checked above) */
        DSPY_TRY(dspy_cu_split_route(be, true, start.data, prefix, T, NH, NKV, HS, fa_ptrs, 8, &fused));
        if (fused)
            return dspy_cu_split_bwd(be, dq.data, dk.data, dv.data, grad16, dout.data, dout16, out.data, out16, l,
                                     (const bf16 *)q.data, (const bf16 *)k.data, (const bf16 *)v.data, prefix, T, NH,
                                     NKV, HS);
    }
    if (it == DSPY_DTYPE_BF16 && dq_alone)
        DSPY_TRY(dspy_cu_sdpa_route(be, true, start.data, prefix, T, NH, NKV, HS, fa_ptrs, 8, &fused));
    if (fused)
        return dspy_cu_sdpa_bwd(be, dq.data, dk.data, dv.data, grad16, dout.data, dout16, out.data, out16, l,
                                (const bf16 *)q.data, (const bf16 *)k.data, (const bf16 *)v.data, T, NH, NKV, HS);
    if (it == DSPY_DTYPE_BF16 && dq_alone && dspy_cu_train_fa_fits(T, HS, fa_ptrs, 8))
        return dspy_cu_attention_train_backward_fa(be, dq.data, dk.data, dv.data, grad16, dout.data, dout16, out.data,
                                                   out16, l, D, (const bf16 *)q.data, (const bf16 *)k.data,
                                                   (const bf16 *)v.data, sp, prefix, T, NH, NKV, HS);
    if (grad16) return out16_refused(op, "dq, dk, dv", T, HS);
    if (dout16) return out16_refused(op, "dout", T, HS);
    if (out16) return out16_refused(op, "out", T, HS);
    DSPY_TRY(cu_launch(be, "attention_train_backward (D)", k_att_rowdot, cu_blocks(rows, TA_THREADS / 32), TA_THREADS,
                       0, D, g, (const float *)out.data, rows, HS));
    if (it == DSPY_DTYPE_BF16)
        return dspy_cu_attention_train_backward_tc(be, (float *)dq.data, (float *)dk.data, (float *)dv.data, g, l, D,
                                                   (const bf16 *)q.data, (const bf16 *)k.data, (const bf16 *)v.data,
                                                   (const int32_t *)start.data, prefix, T, NH, NKV, HS);
    dim3 gkv(cu_blocks(T, FBK), NKV), gq(cu_blocks(T, FBQ), NH);
    float *dkp = (float *)dk.data, *dvp = (float *)dv.data, *dqp = (float *)dq.data;
    if (HS <= 64) {
        DSPY_TRY(cu_launch(be, "attention_train_backward (dk, dv)", k_att_bwd_dkdv<64>, gkv, TA_THREADS,
                           dkdv_smem<64>(), dkp, dvp, g, l, (const float *)D, qp, kp, vp, sp, prefix, T, NH, NKV, HS,
                           scale));
        return cu_launch(be, "attention_train_backward (dq)", k_att_bwd_dq<64>, gq, TA_THREADS, dq_smem<64>(), dqp, g,
                         l, (const float *)D, qp, kp, vp, sp, prefix, T, NH, NKV, HS, scale);
    }
    DSPY_TRY(cu_launch(be, "attention_train_backward (dk, dv)", k_att_bwd_dkdv<128>, gkv, TA_THREADS,
                       dkdv_smem<128>(), dkp, dvp, g, l, (const float *)D, qp, kp, vp, sp, prefix, T, NH, NKV, HS,
                       scale));
    return cu_launch(be, "attention_train_backward (dq)", k_att_bwd_dq<128>, gq, TA_THREADS, dq_smem<128>(), dqp, g, l,
                     (const float *)D, qp, kp, vp, sp, prefix, T, NH, NKV, HS, scale);
}
