/* gemv_mma.cu — the decode-sized projections for 2..16 rows (a batched decode step; one row too
 * with FP8 weights) on tensor cores, with the same fused prologues and epilogues as gemv.cu:
 * linear (bias, BF16/F32 store or add into the F32 residual), attn_in (RMSNorm + QKV + RoPE +
 * KV-cache store), mlp_in (RMSNorm + gate/up + SwiGLU) and logits (gather + final RMSNorm +
 * lm_head).
 *
 * Why: at 16 rows a step is still memory-bound (2.5 GB of weights, ~0.6 ms on an H200), but the
 * GEMV kernels take 4 rows at most, and the composed path (rmsnorm, cuBLASLt, RoPE, SwiGLU
 * kernels) spends 1.07 ms of a batch-16 step on the projections. Here the weights stream once and
 * the rows ride along (H200, bench_gpu --only-step 1 --step-batch 16, ctx 1,564: projections
 * 0.91 ms, step 1.815 ms against 1.920 ms composed; batch 1's GEMVs 0.72 ms):
 *   - the weights are the A operand of mma.sync m16n8k16 (16 output features x 16 K), the N
 *     activation rows the B operand (one n8 tile for N <= 8, two above), F32 accumulation;
 *   - a lane loads whole 16-byte chunks (8 K values) of weight rows g and g + 8 (g = lane / 4)
 *     at K offset 8 * (lane % 4) of a 32-wide K step: a chunk feeds two MMAs, its first four
 *     values as fragment columns 2t, 2t+1, 2t+8, 2t+9 of one and its last four of the other. The
 *     B fragment takes the same K positions of activation row g (again one 16-byte load), so A
 *     and B agree on a permutation of K, which a dot product does not see;
 *   - a block of 16 warps owns a unit (one tile of 16 features, or a pair: RoPE's rows i and
 *     i + HS/2, SwiGLU's gate and up rows) and splits K over its warps (warp w takes K steps
 *     w, w + 16, ...: the block reads 1 KB of every row at a time, contiguous); eight
 *     16-byte weight loads per lane make a batch, and two batches are in flight whenever a warp
 *     waits (two register buffers taking turns; the batch two ahead — of this unit or the
 *     block's next — is issued as soon as a buffer is multiplied), so the stream keeps going
 *     through the cross-warp reduction (shared memory, fixed order: deterministic) and the
 *     epilogue. The first two batches are loaded before griddep_wait (weights never depend on
 *     the previous kernel), as in gemv.cu. mlp_in and logits, whose units fill the SMs four
 *     times over at the 1B shape, split K over groups of 4 warps instead (four units at a time
 *     a block; KW below);
 *   - RMSNorm prologue: each block normalises the N rows (one warp a row) into shared memory as
 *     BF16, the rounding the composed path's normed activations get; rows past N are zeros.
 *     linear reads its BF16 input rows from global memory (L1-cached, shared by the block):
 *     every block reads all of them from L2, as many bytes as its weights at 16 rows (likely
 *     part of why down_proj reaches 2.2 TB/s where mlp_in reaches 3.6; not profiled).
 * FP8 weights (kern/ops.h f8_link; the F8 instances): a lane's 16-byte load is 16 E4M3 codes of a
 * row, K 64 s + 16 t .. (steps of 64), that become two of the chunks above in registers; the
 * normed kernels convert them to F16 (one instruction a pair) and run the F16 MMA on rows stored
 * as F16, linear (rows read from global memory as BF16) rebuilds BF16 values bit by bit; either
 * way the products are those of the BF16 matrix f8_link rounded, and the row's 2^k scales the
 * F32 sum. Linear and logits take two-tile units where one-tile batches would leave loads unused.
 * H200, batch-14 decode step at B2's context: 0.98 ms against 1.19 with BF16 weights (2026-12-03,
 * before the F16 path).
 * Decode-step hand-offs (H200, FP8 step at batch 16 and B2's context, 828 -> 793 us with all
 * three; each alone worth 10-22 us): mlp_in writes h as F16 where the down projection runs here
 * with an FP8 copy (kern/ops.h mlp_f16), so down converts its codes to F16 in one instruction a
 * pair rather than rebuilding BF16 in four; a linear accumulating into the residual with
 * DSPY_LINEAR_ADD_EARLY reads its residual values before the dependency wait; attn_in lets the
 * decode attention start early from 4 rows on (g_attn_rel_rows).
 * One block per SM (its grid one wave), blocks striding over the units.
 * 2..4 rows come here too, and one row where the weights have an FP8 copy (dspy_cu_mma_fits): one
 * n8 tile, rows past N zero.
 * Not taken (the caller falls back to gemv.cu's GEMV or the composed path): N outside 2..16 (1..16
 * with FP8 weights), C % 32 != 0,
 * operands not 16-byte aligned, HS % 32 != 0 (attn_in), normed rows over the shared memory.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kern/cuda/f8.cuh"
#include "kern/cuda/gemv_mma.cuh"
#include "kern/cuda/mma.cuh"
#include "kern/cuda/timeline.cuh"

#include <cuda_fp16.h>
#include <cuda_fp8.h>

TL_BIND_FN(dspy_cu_tl_bind_mma)

enum { MW = 16, MMA_THREADS = MW * 32 };
enum { MEP_BF16 = 0, MEP_F32 = 1, MEP_ACC = 2 };

static __device__ __forceinline__ uint4 ld_stream16(const void *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

/* The stride (elements) of the normed rows in shared memory: C padded so that the 16-byte B loads
 * of a quarter warp (lanes t = 0..3 of rows g and g + 1) meet 32 different banks. BF16 lanes read
 * 16 bytes at 16 t bytes (one 64-byte run a row), so rows must start 16 words apart: stride = 32
 * (mod 64). FP8 lanes read 16 bytes at 32 t (a 16-byte load of codes spans 16 K values, and B
 * follows it), words {0-3, 8-11, 16-19, 24-27}: the next row must start 4 words on, stride = 8
 * (mod 64); with BF16's stride every load took two wavefronts (ncu, FP8 mlp_in: 55 % of the
 * shared wavefronts excessive). */
static __host__ __device__ __forceinline__ int row_ld(int C, bool f8) {
    const int want = f8 ? 8 : 32;
    return C + (((want - C) % 64) + 64) % 64;
}

/* Shared memory of a launch: the normed rows (8 * NT of them, row_ld wide, 2 bytes; none for
 * linear) and the reduction area (MW warps x T tiles x NT n-tiles x 4 values x 32 lanes). */
static size_t smem_bytes(int NT, int T, int C, bool normed, bool f8) {
    size_t xs = normed ? (size_t)8 * NT * row_ld(C, f8) * 2 : 0;
    return xs + (size_t)MW * T * NT * 4 * 32 * sizeof(float);
}

/* Split K: a unit is summed by a group of KW warps (KW = MW: the whole block, one unit at a time;
 * KW = 4: four groups, four units at a time, each group synchronised on its own named barrier).
 * Warp w is warp wk = w % KW of group w / KW. Fewer warps a unit mean more K steps each between
 * reductions: a quarter of the shared-memory traffic and barriers a unit, for kernels with units
 * enough to give every group of every SM work (mlp_in, logits at the 1B shape). */
template <int KW> static __device__ __forceinline__ void group_sync() {
    if (KW == MW) __syncthreads();
    else asm volatile("bar.sync %0, %1;" ::"r"(1 + (int)(threadIdx.x >> 5) / KW), "r"(KW * 32) : "memory");
}

/* Batch j of warp wk covers K steps s = (j * SPB + q) * KW + wk, q < SPB (SPB = 4 / T), each 32
 * wide; a lane's buffer a[(tt * SPB + q) * 2 + h] is the 16-byte chunk at K 32 s + 8 (lane % 4)
 * of tile tt's row g + 8 h. row_of(u, tt, r) is the weight row of the unit's tile tt, row r. */
template <int T, bool F8, int KW, typename RowOf>
static __device__ __forceinline__ void load_batch(uint4 *a, const void *__restrict__ W, int C, int S, int u, int j,
                                                  RowOf row_of) {
    constexpr int SPB = 4 / T, ES = F8 ? 1 : 2, KS = F8 ? 64 : 32; /* bytes an element; K a step */
    const int lane = threadIdx.x & 31, w = (threadIdx.x >> 5) % KW, g = lane >> 2, t = lane & 3;
    const char *Wb = (const char *)W;
#pragma unroll
    for (int tt = 0; tt < T; tt++) {
        const char *r0 = Wb + ((int64_t)row_of(u, tt, g) * C + (KS / 4) * t) * ES;
        const char *r1 = Wb + ((int64_t)row_of(u, tt, g + 8) * C + (KS / 4) * t) * ES;
#pragma unroll
        for (int q = 0; q < SPB; q++) {
            int s = (j * SPB + q) * KW + w;
            if (s < S) {
                a[(tt * SPB + q) * 2] = ld_stream16(r0 + (int64_t)s * KS * ES);
                a[(tt * SPB + q) * 2 + 1] = ld_stream16(r1 + (int64_t)s * KS * ES);
            }
        }
    }
}

/* Two E4M3 codes (bytes 0-1 of x with sel 0x9180, bytes 2-3 with 0xb3a2) as the BF16 pair of their
 * values: prmt makes each 16-bit half the code over a byte of copies of its sign bit (selector
 * nibbles with bit 3 set); shifted up four and masked, the code's seven magnitude bits sit on
 * BF16's low exponent and mantissa bits and a sign copy on bit 15. That BF16 is the code's value
 * times 2^-120 exactly (the exponent biases are 7 and 127; a subnormal code lands on the BF16
 * subnormal of the same ratio), and one exact multiply by 2^120 restores it. Three integer
 * operations and one BF16 multiply a pair; the row's 2^k is applied to the F32 sum (stream_step). */
static __device__ __forceinline__ uint32_t f8_pair(uint32_t x, uint32_t sel) {
    uint32_t w;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(w) : "r"(x), "r"(0u), "r"(sel));
    const uint32_t v = (w << 4) & 0x87f087f0u, m = 0x7b807b80u; /* 2^120, twice */
    __nv_bfloat162 r = __hmul2(*(const __nv_bfloat162 *)&v, *(const __nv_bfloat162 *)&m);
    return *(uint32_t *)&r;
}

/* Eight codes (words x0, x1) as a 16-byte BF16 chunk in the BF16 path's layout. */
static __device__ __forceinline__ uint4 f8_chunk(uint32_t x0, uint32_t x1) {
    return make_uint4(f8_pair(x0, 0x9180u), f8_pair(x0, 0xb3a2u), f8_pair(x1, 0x9180u), f8_pair(x1, 0xb3a2u));
}

/* The same eight codes as F16 values, one hardware conversion a pair (E4M3 -> F16 is exact: every
 * code is a normal F16). The kernels whose activation rows sit in shared memory (the normed ones)
 * take this path with the rows stored as F16 (norm_rows), so the MMA runs on F16. */
static __device__ __forceinline__ uint32_t f8_pair_h(uint32_t x2) {
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)x2, __NV_E4M3);
    return (uint32_t)h.x | (uint32_t)h.y << 16;
}
static __device__ __forceinline__ uint4 f8_chunk_h(uint32_t x0, uint32_t x1) {
    return make_uint4(f8_pair_h(x0 & 0xffffu), f8_pair_h(x0 >> 16), f8_pair_h(x1 & 0xffffu), f8_pair_h(x1 >> 16));
}

/* acc[tt][nt] (the 16 x 8 D fragment of tile tt, rows n8 tile nt) += the batch's MMAs. X: the
 * activation rows, ldx elements apart; GX: in global memory (rows >= N read as zeros), else in
 * shared memory (rows up to 8 * NT present, zeros past N). XH: the global rows are F16 (an F16
 * handoff from mlp_in, FP8 weights only). */
template <int NT, int T, bool GX, bool F8, int KW, bool XH = false>
static __device__ __forceinline__ void mma_batch(float (*acc)[NT][4], const uint4 *a, const bf16 *X, int ldx, int N, int S,
                                                 int j) {
    /* H: F8 with F16 rows (in shared memory from norm_rows, or XH): the codes convert to F16 */
    constexpr int SPB = 4 / T, HH = F8 ? 2 : 1;
    constexpr bool H = F8 && (!GX || XH);
    const int lane = threadIdx.x & 31, w = (threadIdx.x >> 5) % KW, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int q = 0; q < SPB; q++) {
        int s = (j * SPB + q) * KW + w;
        if (s >= S) continue; /* warp-uniform */
#pragma unroll
        for (int hh = 0; hh < HH; hh++) {
            /* F8: a 16-byte load held 16 codes, K 64 s + 16 t ..; half hh is the 8-value chunk at + 8 hh */
            const int k0 = F8 ? s * 64 + 16 * t + 8 * hh : s * 32 + 8 * t;
            uint4 b[NT];
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                int n = g + 8 * nt;
                if (GX) b[nt] = n < N ? __ldg((const uint4 *)(X + (int64_t)n * ldx + k0)) : make_uint4(0, 0, 0, 0);
                else b[nt] = *(const uint4 *)(X + (size_t)n * ldx + k0);
            }
#pragma unroll
            for (int tt = 0; tt < T; tt++) {
                uint4 A = a[(tt * SPB + q) * 2], A8 = a[(tt * SPB + q) * 2 + 1];
                if (H) {
                    A = hh ? f8_chunk_h(A.z, A.w) : f8_chunk_h(A.x, A.y);
                    A8 = hh ? f8_chunk_h(A8.z, A8.w) : f8_chunk_h(A8.x, A8.y);
                } else if (F8) {
                    A = hh ? f8_chunk(A.z, A.w) : f8_chunk(A.x, A.y);
                    A8 = hh ? f8_chunk(A8.z, A8.w) : f8_chunk(A8.x, A8.y);
                }
                const uint32_t f0[4] = {A.x, A8.x, A.y, A8.y}, f1[4] = {A.z, A8.z, A.w, A8.w};
#pragma unroll
                for (int nt = 0; nt < NT; nt++) {
                    const uint32_t b0[2] = {b[nt].x, b[nt].y}, b1[2] = {b[nt].z, b[nt].w};
                    if (H) {
                        mma16816_f16(acc[tt][nt], f0, b0);
                        mma16816_f16(acc[tt][nt], f1, b1);
                    } else {
                        mma16816(acc[tt][nt], f0, b0);
                        mma16816(acc[tt][nt], f1, b1);
                    }
                }
            }
        }
    }
}

/* Value e (n-tile e / 4, fragment element e % 4) of `lane` in tile tt, summed over the warps of
 * the calling warp's group in warp order. */
template <int NT, int T, int KW>
static __device__ __forceinline__ float reduced(const float *red, int tt, int e, int lane) {
    constexpr int SL = T * NT * 4;
    const int w0 = (int)(threadIdx.x >> 5) / KW * KW;
    float s = 0.0f;
#pragma unroll
    for (int w = 0; w < KW; w++) s += red[((w0 + w) * SL + tt * NT * 4 + e) * 32 + lane];
    return s;
}

/* The batches of a group, in order: (unit u, batch j), j < nb, then (u + gridDim.x MW / KW, 0),
 * ... (a group's first unit: blockIdx.x MW / KW + its index). */
template <int KW> static __device__ __forceinline__ void next_batch(int &u, int &j, int nb) {
    if (++j == nb) j = 0, u += gridDim.x * (MW / KW);
}
template <int KW> static __device__ __forceinline__ int first_unit() {
    return blockIdx.x * (MW / KW) + (int)(threadIdx.x >> 5) / KW;
}

/* Where value e of a lane's D fragments lands in the epilogue: feature row (of the unit's tile)
 * g or g + 8, activation row 2 (lane % 4) or the next, n-tile e / 4. */
static __device__ __forceinline__ int epi_feature(int e, int lane) { return (lane >> 2) + 8 * ((e & 3) >> 1); }
static __device__ __forceinline__ int epi_row(int e, int lane) { return 8 * (e >> 2) + 2 * (lane & 3) + (e & 1); }

/* One batch of the group's stream: buf (batch j of unit u, loaded two batches ago) through the
 * MMAs; when it ends the unit, the cross-warp reduction and epi(u, r, n, va, vb) for every
 * feature row r and activation row n < N (va: tile 0, vb: tile 1 or 0). Then buf is reloaded
 * with batch (lu, lj), two ahead, while the other buffer's loads are still in flight. */
template <int NT, int T, bool GX, bool F8, int KW, bool XH, typename RowOf, typename Epi>
static __device__ __forceinline__ void stream_step(uint4 *buf, float (*acc)[NT][4], int u, int j, int lu, int lj, int nb,
                                                   const void *__restrict__ W, const float *__restrict__ scale, int C,
                                                   int units, const bf16 *X, int ldx, int N, float *red, RowOf row_of,
                                                   Epi epi) {
    constexpr int SL = T * NT * 4, E = 4 * NT; /* E: values of a lane's D fragments in one tile */
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, S = C / (F8 ? 64 : 32);
    /* The unit's epilogue: warp wk of the group takes values e = wk, wk + KW, ... of every lane's
     * D fragments (n-tile e / 4, element e % 4: feature row g or g + 8, activation row
     * 2 (lane % 4) or the next), so each warp reads whole 32-lane rows of `red` (no bank
     * conflicts). F8: the row's 2^k in each tile of the first value, asked for before the MMAs
     * hide the wait (with KW = MW, the only one). */
    const int e0 = w % KW;
    const bool ep = j + 1 == nb && e0 < E;
    float s0 = 1.0f, s1 = 1.0f;
    if (F8 && ep) {
        const int er = epi_feature(e0, lane);
        s0 = __ldg(scale + row_of(u, 0, er)), s1 = __ldg(scale + row_of(u, T - 1, er));
    }
    mma_batch<NT, T, GX, F8, KW, XH>(acc, buf, X, ldx, N, S, j);
    if (lu < units) load_batch<T, F8, KW>(buf, W, C, S, lu, lj, row_of);
    if (j + 1 < nb) return;
#pragma unroll
    for (int tt = 0; tt < T; tt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                red[(w * SL + (tt * NT + nt) * 4 + i) * 32 + lane] = acc[tt][nt][i];
                acc[tt][nt][i] = 0.0f;
            }
    group_sync<KW>();
#pragma unroll
    for (int e = e0; e < E; e += KW) {
        const int er = epi_feature(e, lane), en = epi_row(e, lane);
        if (F8 && e != e0) s0 = __ldg(scale + row_of(u, 0, er)), s1 = __ldg(scale + row_of(u, T - 1, er));
        if (en < N)
            epi(u, er, en, reduced<NT, T, KW>(red, 0, e, lane) * s0,
                T > 1 ? reduced<NT, T, KW>(red, T - 1, e, lane) * s1 : 0.0f);
    }
    group_sync<KW>(); /* red is rewritten by the next unit */
}

/* The group's units, streamed through two register buffers that take turns (no copy between
 * them: a register move would wait for its load), so two batches (16 loads a lane) are in
 * flight whenever a warp waits. b0 and b1 hold the group's first two batches, loaded before the
 * dependency wait. */
template <int NT, int T, bool GX, bool F8, int KW, bool XH = false, typename RowOf, typename Epi>
static __device__ __forceinline__ void run_units(uint4 *b0, uint4 *b1, const void *__restrict__ W,
                                                 const float *__restrict__ scale, int C, int units, const bf16 *X,
                                                 int ldx, int N, float *red, RowOf row_of, Epi epi) {
    constexpr int SPB = 4 / T;
    const int nb = (C / (F8 ? 64 : 32) + KW * SPB - 1) / (KW * SPB);
    float acc[T][NT][4];
#pragma unroll
    for (int tt = 0; tt < T; tt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) acc[tt][nt][i] = 0.0f;
    int u = first_unit<KW>(), j = 0, lu = u, lj = 0; /* the batch in hand; the batch to load next */
    next_batch<KW>(lu, lj, nb);
    next_batch<KW>(lu, lj, nb);
    while (u < units) {
        stream_step<NT, T, GX, F8, KW, XH>(b0, acc, u, j, lu, lj, nb, W, scale, C, units, X, ldx, N, red, row_of, epi);
        next_batch<KW>(u, j, nb), next_batch<KW>(lu, lj, nb);
        if (u >= units) break;
        stream_step<NT, T, GX, F8, KW, XH>(b1, acc, u, j, lu, lj, nb, W, scale, C, units, X, ldx, N, red, row_of, epi);
        next_batch<KW>(u, j, nb), next_batch<KW>(lu, lj, nb);
    }
}

/* The group's first two batches (before griddep_wait: weights only). */
template <int T, bool F8, int KW, typename RowOf>
static __device__ __forceinline__ void first_batches(uint4 *b0, uint4 *b1, const void *__restrict__ W, int C, int units,
                                                     RowOf row_of) {
    constexpr int SPB = 4 / T;
    const int S = C / (F8 ? 64 : 32), nb = (S + KW * SPB - 1) / (KW * SPB);
    int u = first_unit<KW>(), j = 0;
    if (u < units) load_batch<T, F8, KW>(b0, W, C, S, u, j, row_of);
    next_batch<KW>(u, j, nb);
    if (u < units) load_batch<T, F8, KW>(b1, W, C, S, u, j, row_of);
}

/* v clamped to F16's finite range (+-65,504): the F16 stores below saturate rather than overflow. */
static __device__ __forceinline__ float f16_sat(float v) { return fminf(fmaxf(v, -65504.0f), 65504.0f); }

/* A BF16 pair as F16, saturating at +-65,504. */
static __device__ __forceinline__ __half2 f16_pair(__nv_bfloat162 v) {
    const float2 f = __bfloat1622float2(v);
    return __floats2half2_rn(f16_sat(f.x), f16_sat(f.y));
}

/* xs (8 * NT, ldx) BF16: rows r < N = rmsnorm(x row rows[r] (or r)) * wn, the rest zeros. One
 * warp a row, float4 loads (C % 4 == 0 and 16-byte aligned rows: checked by the caller). Same
 * arithmetic as gemv.cu's prologue and the composed rmsnorm: 1 / sqrtf(ss / C + eps), then
 * w * (x * rinv) rounded once to BF16. H (the FP8 kernels): those BF16 values stored as F16, which
 * holds them exactly from 2^-17 up to 65,504 in magnitude (8 significant bits; beyond, they
 * saturate, and below, F16 subnormals keep fewer bits: no normed row of a real model gets there),
 * so that the F16 MMA multiplies the same numbers as the BF16 one. */
template <int NT, bool H>
static __device__ __forceinline__ void norm_rows(bf16 *xs, int ldx, const float *__restrict__ x,
                                                 const int32_t *__restrict__ rows, const float *__restrict__ wn, int N,
                                                 int C, float eps) {
    const int lane = threadIdx.x & 31, r = threadIdx.x >> 5;
    if (r < 8 * NT) {
        bf16 *xo = xs + (size_t)r * ldx;
        if (r < N) {
            const float4 *x4 = (const float4 *)(x + (int64_t)(rows ? rows[r] : r) * C), *w4 = (const float4 *)wn;
            float ss = 0.0f;
#pragma unroll 8 /* eight row loads in flight (4: the FP8 step at batch 16 took 908 us, 884 with 8) */
            for (int c = lane; c < C / 4; c += 32) {
                float4 v = x4[c];
                ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
            }
            for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
            const float rinv = 1.0f / sqrtf(ss / (float)C + eps);
#pragma unroll 8
            for (int c = lane; c < C / 4; c += 32) {
                float4 v = x4[c], wv = w4[c];
                const __nv_bfloat162 lo = __floats2bfloat162_rn(wv.x * (v.x * rinv), wv.y * (v.y * rinv));
                const __nv_bfloat162 hi = __floats2bfloat162_rn(wv.z * (v.z * rinv), wv.w * (v.w * rinv));
                if (H) {
                    *(__half2 *)(xo + 4 * c) = f16_pair(lo);
                    *(__half2 *)(xo + 4 * c + 2) = f16_pair(hi);
                } else {
                    *(__nv_bfloat162 *)(xo + 4 * c) = lo;
                    *(__nv_bfloat162 *)(xo + 4 * c + 2) = hi;
                }
            }
        } else {
            for (int c = lane; c < C / 8; c += 32) *(uint4 *)(xo + 8 * c) = make_uint4(0, 0, 0, 0);
        }
    }
    __syncthreads();
}

/* ---- linear --------------------------------------------------------------------------------- */

/* XH: X holds F16 rows (mlp_in's F16 handoff; FP8 weights only). */
template <int NT, bool F8, int T, bool XH>
static __global__ __launch_bounds__(MMA_THREADS, 1) void k_mma_linear(const void *__restrict__ W,
                                                                      const float *__restrict__ scale,
                                                                      const bf16 *__restrict__ X,
                                                                      void *out, int mode, int early, const float *__restrict__ bias,
                                                                      int N, int OC, int C) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    TL_BEGIN(DSPY_TL_LINEAR);
    float *red = (float *)smem_raw;
    const int units = (OC + 16 * T - 1) / (16 * T);
    auto row_of = [=](int u, int tt, int r) { return min(u * 16 * T + tt * 16 + r, OC - 1); };
    uint4 b0[8], b1[8];
    first_batches<T, F8, MW>(b0, b1, W, C, units, row_of);
    /* early (DSPY_LINEAR_ADD_EARLY: the op just before does not write out): the residual values
     * this thread's epilogue adds to in the block's first unit, read before the wait. Safe: this
     * kernel starts only once the previous one has passed its own wait (or ended), so whatever
     * wrote out last had finished; one memory round trip fewer after the wait */
    const int u0 = first_unit<MW>(), w0 = threadIdx.x >> 5, ln = threadIdx.x & 31;
    float xr[T];
#pragma unroll
    for (int tt = 0; tt < T; tt++) {
        const int en = epi_row(w0, ln), row = u0 * 16 * T + tt * 16 + epi_feature(w0, ln);
        xr[tt] = early && u0 < units && w0 < 4 * NT && row < OC && en < N ? ((const float *)out)[(int64_t)en * OC + row] : 0.0f;
    }
    TL_SLOT();
    griddep_wait(CU_REL_LINEAR);
    TL_MARK(1);
    TL_MARK(2);
    run_units<NT, T, true, F8, MW, XH>(b0, b1, W, scale, C, units, X, C, N, red, row_of, [=](int u, int r, int n, float va,
                                                                                     float vb) {
        for (int tt = 0; tt < T; tt++) {
            const int row = u * 16 * T + tt * 16 + r;
            if (row >= OC) return;
            const float v = (tt ? vb : va) + (bias ? bias[row] : 0.0f);
            const int64_t idx = (int64_t)n * OC + row;
            if (mode == MEP_BF16) ((bf16 *)out)[idx] = f2bf(v);
            else if (mode == MEP_F32) ((float *)out)[idx] = v;
            else ((float *)out)[idx] = (early && u == u0 ? xr[tt] : ((float *)out)[idx]) + v;
        }
    });
    TL_END();
}

/* ---- attn_in: RMSNorm + q/k/v projection + RoPE + KV store --------------------------------- */

/* Unit u: rows i0 .. i0 + 15 (tile 0) and i0 + HS/2 .. (tile 1) of head hh of the stacked
 * [q heads | k heads | v heads] (hh = u / (HS / 32), i0 = 16 (u % (HS / 32))). */
template <int NT, bool F8>
static __global__ __launch_bounds__(MMA_THREADS, 1) void k_mma_attn_in(
    const void *__restrict__ W, const float *__restrict__ scale, const float *__restrict__ bias, const float *__restrict__ x, const float *__restrict__ wn,
    float eps, const int32_t *__restrict__ pos, const int32_t *__restrict__ slots, const float *__restrict__ inv_freq,
    bf16 *__restrict__ q_out, bf16 *__restrict__ kc, bf16 *__restrict__ vc, int N, int C, int NH, int NKV, int HS,
    int rel) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    TL_BEGIN(DSPY_TL_ATTN_IN);
    const int ldx = row_ld(C, F8), half = HS / 2, per = half / 16, Q = NH * HS, KVD = NKV * HS;
    bf16 *xs = (bf16 *)smem_raw;
    float *red = (float *)(smem_raw + (size_t)8 * NT * ldx * 2);
    const int units = (NH + 2 * NKV) * per;
    auto row_of = [=](int u, int tt, int r) { return (u / per) * HS + (u % per) * 16 + tt * half + r; };
    uint4 b0[8], b1[8];
    first_batches<2, F8, MW>(b0, b1, W, C, units, row_of);
    TL_SLOT();
    griddep_wait();
    TL_MARK(1);
    if (rel) griddep_release();
    norm_rows<NT, F8>(xs, ldx, x, NULL, wn, N, C, eps);
    TL_MARK(2);
    run_units<NT, 2, false, F8, MW>(b0, b1, W, scale, C, units, xs, ldx, N, red, row_of, [=](int u, int r, int n, float va, float vb) {
        const int hh = u / per, i = (u % per) * 16 + r, rowA = hh * HS + i;
        const int sect = hh < NH ? 0 : hh < NH + NKV ? 1 : 2, head = hh - (sect == 0 ? 0 : sect == 1 ? NH : NH + NKV);
        if (bias) va += bias[rowA], vb += bias[rowA + half];
        if (sect < 2) { /* rotate-half RoPE: the F32 angle pos * inv_freq, then cos/sin (as gemv.cu) */
            float ang = (float)pos[n] * inv_freq[i], sn, cs;
            sincosf(ang, &sn, &cs);
            float ra = va * cs - vb * sn, rb = vb * cs + va * sn;
            va = ra, vb = rb;
        }
        bf16 *dst = sect == 0 ? q_out + (int64_t)n * Q + head * HS
                              : (sect == 1 ? kc : vc) + (int64_t)slots[n] * KVD + head * HS;
        dst[i] = f2bf(va);
        dst[i + half] = f2bf(vb);
    });
    TL_END();
}

/* ---- mlp_in: RMSNorm + gate/up projection + SwiGLU ----------------------------------------- */

/* Unit u: gate rows 16 u .. 16 u + 15 (tile 0) and the same rows of up (tile 1, I rows later). */
template <int NT, bool F8, int KW>
static __global__ __launch_bounds__(MMA_THREADS, 1) void k_mma_mlp_in(const void *__restrict__ W,
                                                                      const float *__restrict__ scale,
                                                                      const float *__restrict__ x,
                                                                      const float *__restrict__ wn, float eps,
                                                                      bf16 *__restrict__ h, int h16, int N, int C, int I) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    TL_BEGIN(DSPY_TL_MLP_IN);
    const int ldx = row_ld(C, F8);
    bf16 *xs = (bf16 *)smem_raw;
    float *red = (float *)(smem_raw + (size_t)8 * NT * ldx * 2);
    const int units = (I + 15) / 16;
    auto row_of = [=](int u, int tt, int r) { return tt * I + min(u * 16 + r, I - 1); };
    uint4 b0[8], b1[8];
    first_batches<2, F8, KW>(b0, b1, W, C, units, row_of);
    TL_SLOT();
    griddep_wait(CU_REL_MLP_IN);
    TL_MARK(1);
    norm_rows<NT, F8>(xs, ldx, x, NULL, wn, N, C, eps);
    TL_MARK(2);
    run_units<NT, 2, false, F8, KW>(b0, b1, W, scale, C, units, xs, ldx, N, red, row_of, [=](int u, int r, int n, float gv, float uv) {
        const int row = u * 16 + r;
        if (row >= I) return;
        /* the composed path rounds gate and up to BF16 before SwiGLU; so does this one */
        gv = bf2f(f2bf(gv)), uv = bf2f(f2bf(uv));
        const bf16 hv = f2bf(gv / (1.0f + expf(-gv)) * uv);
        /* h16: that BF16 value in F16 (exact from 2^-14 to 65,504; saturating beyond), for down */
        if (h16) ((__half *)h)[(int64_t)n * I + row] = __float2half_rn(f16_sat(bf2f(hv)));
        else h[(int64_t)n * I + row] = hv;
    });
    TL_END();
}

/* ---- logits: gather + final RMSNorm + lm_head ---------------------------------------------- */

enum { GREEDY_MAX_BLOCKS = 256 }; /* a logits_greedy launch's most blocks (its grid is one wave) */

/* Greedy (kern/ops.h logits_greedy): a running maximum m, the lowest id holding it, and the sum s
 * of exp(v - m) over the values seen; empty while m = -inf. */
struct greedy_st {
    float m, s;
    int id;
};

static __device__ __forceinline__ void greedy_add(greedy_st &g, float v, int id) {
    if (v > g.m) {
        g.s = g.s * expf(g.m - v) + 1.0f; /* the old sum rescaled (0 while empty) */
        g.m = v, g.id = id;
    } else if (v > -INFINITY) {
        g.s += expf(v - g.m);
        if (v == g.m && id < g.id) g.id = id;
    }
}

/* Symmetric in a and b (the butterflies below leave both lanes of a pair with the same state). */
static __device__ __forceinline__ void greedy_merge(greedy_st &a, const greedy_st &b) {
    if (b.m == -INFINITY) return;
    if (a.m == -INFINITY) {
        a = b;
        return;
    }
    const float M = fmaxf(a.m, b.m);
    a.s = a.s * expf(a.m - M) + b.s * expf(b.m - M);
    if (b.m > a.m || (b.m == a.m && b.id < a.id)) a.id = b.id;
    a.m = M;
}

static __device__ __forceinline__ greedy_st greedy_shfl(const greedy_st &g, int o) {
    return {__shfl_xor_sync(0xffffffffu, g.m, o), __shfl_xor_sync(0xffffffffu, g.s, o),
            __shfl_xor_sync(0xffffffffu, g.id, o)};
}

/* The block's greedy states into one per row (rows < M): g[nt] of a lane holds activation row
 * 8 nt + 2 (lane % 4) + (w % KW) % 2 (stream_step's epilogue: warp w takes fragment values
 * e = w % KW, w % KW + KW, ... and KW is even), merged over the lanes that share it (lane / 4),
 * then over the warps (warp n takes row n, one warp's entry a lane). Each block writes its rows'
 * states to part (row, block); the block that arrives last (count, which it resets for the next
 * launch or graph replay) loads them all at once and merges them (warp n row n), and writes tokens
 * and logprobs as k_sample does (logit[token] - (m + log s)). Fixed orders throughout: the same logits give the same token and logprob. sm:
 * 16 x 2 x 4 x 3 floats of shared memory no warp still reads. */
template <int NT, int KW>
static __device__ __forceinline__ void greedy_finish(greedy_st (&g)[NT], int M, int32_t *__restrict__ tokens,
                                                     float *__restrict__ logprobs, float4 *__restrict__ part,
                                                     int *__restrict__ count, float *sm) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int o = 4; o < 32; o <<= 1) greedy_merge(g[nt], greedy_shfl(g[nt], o));
    __syncthreads(); /* every group is past its last unit: sm (the reduction area) is free */
    if (lane < 4)
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            float *e = sm + ((w * 2 + nt) * 4 + lane) * 3;
            e[0] = g[nt].m, e[1] = g[nt].s, e[2] = __int_as_float(g[nt].id);
        }
    __syncthreads();
    if (w < M) { /* warp n = w merges row n: lane l takes warp l's entry, then a butterfly */
        const int n = w;
        greedy_st a = {-INFINITY, 0.0f, 0x7fffffff};
        if (lane < MW && (lane % KW) % 2 == n % 2) {
            const float *e = sm + ((lane * 2 + n / 8) * 4 + (n % 8) / 2) * 3;
            a = greedy_st{e[0], e[1], __float_as_int(e[2])};
        }
#pragma unroll
        for (int o = MW / 2; o > 0; o >>= 1) greedy_merge(a, greedy_shfl(a, o));
        if (lane == 0) {
            __stcg(part + (int64_t)n * gridDim.x + blockIdx.x, make_float4(a.m, a.s, __int_as_float(a.id), 0.0f));
            __threadfence();
        }
    }
    __syncthreads();
    int *last = (int *)sm;
    if (threadIdx.x == 0) *last = atomicAdd(count, 1) == (int)gridDim.x - 1;
    __syncthreads();
    if (!*last) return;
    __threadfence();
    if (w < M) { /* every partial of the row loaded at once (GREEDY_MAX_BLOCKS / 32 a lane), then merged */
        float4 v[GREEDY_MAX_BLOCKS / 32];
#pragma unroll
        for (int k = 0; k < GREEDY_MAX_BLOCKS / 32; k++) {
            const int b = lane + 32 * k;
            v[k] = b < (int)gridDim.x ? __ldcg(part + (int64_t)w * gridDim.x + b) : make_float4(-INFINITY, 0.0f, 0.0f, 0.0f);
        }
        greedy_st a = {-INFINITY, 0.0f, 0x7fffffff};
#pragma unroll
        for (int k = 0; k < GREEDY_MAX_BLOCKS / 32; k++) greedy_merge(a, greedy_st{v[k].x, v[k].y, __float_as_int(v[k].z)});
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) greedy_merge(a, greedy_shfl(a, o));
        if (lane == 0) {
            tokens[w] = a.id;
            logprobs[w] = a.m - (a.m + logf(a.s));
        }
    }
    if (threadIdx.x == 0) *count = 0;
}

/* G: logits_greedy (tokens, logprobs, part and count; out unused), else logits (out). */
template <int NT, bool F8, int T, int KW, bool G>
static __global__ __launch_bounds__(MMA_THREADS, 1) void k_mma_logits(const void *__restrict__ W,
                                                                      const float *__restrict__ scale,
                                                                      const float *__restrict__ x,
                                                                      const int32_t *__restrict__ rows,
                                                                      const float *__restrict__ wn, float eps,
                                                                      float *__restrict__ out, int M, int C, int V,
                                                                      int32_t *__restrict__ tokens,
                                                                      float *__restrict__ logprobs,
                                                                      float4 *__restrict__ part, int *__restrict__ count) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    TL_BEGIN(DSPY_TL_LOGITS);
    const int ldx = row_ld(C, F8);
    bf16 *xs = (bf16 *)smem_raw;
    float *red = (float *)(smem_raw + (size_t)8 * NT * ldx * 2);
    const int units = (V + 16 * T - 1) / (16 * T);
    auto row_of = [=](int u, int tt, int r) { return min(u * 16 * T + tt * 16 + r, V - 1); };
    uint4 b0[8], b1[8];
    first_batches<T, F8, KW>(b0, b1, W, C, units, row_of);
    TL_SLOT();
    griddep_wait(CU_REL_LOGITS);
    TL_MARK(1);
    norm_rows<NT, F8>(xs, ldx, x, rows, wn, M, C, eps);
    TL_MARK(2);
    if constexpr (G) {
        greedy_st g[NT];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) g[nt] = {-INFINITY, 0.0f, 0x7fffffff};
        run_units<NT, T, false, F8, KW>(b0, b1, W, scale, C, units, xs, ldx, M, red, row_of,
                                        [&](int u, int r, int n, float va, float vb) {
#pragma unroll
                                            for (int tt = 0; tt < T; tt++) {
                                                const int row = u * 16 * T + tt * 16 + r;
                                                if (row >= V) continue; /* row_of's clamped copies */
                                                if (NT == 1 || n < 8) greedy_add(g[0], tt ? vb : va, row);
                                                else greedy_add(g[NT - 1], tt ? vb : va, row);
                                            }
                                        });
        greedy_finish<NT, KW>(g, M, tokens, logprobs, part, count, red);
    } else {
        run_units<NT, T, false, F8, KW>(b0, b1, W, scale, C, units, xs, ldx, M, red, row_of,
                                        [=](int u, int r, int n, float va, float vb) {
                                            for (int tt = 0; tt < T; tt++) {
                                                const int row = u * 16 * T + tt * 16 + r;
                                                if (row < V) out[(int64_t)n * V + row] = tt ? vb : va;
                                            }
                                        });
    }
    TL_END();
}

/* ---- host side ------------------------------------------------------------------------------- */

/* One wave: every kernel here holds an SM alone (512 threads at > 64 registers), so one block
 * per SM; the blocks stride over the units. */
static unsigned grid_of(dspy_backend *be, int units) {
    int sms = cu_of(be)->sm_count;
    return (unsigned)(units < sms ? units : sms);
}

/* The largest dynamic shared memory a block may opt in to, the smallest over the devices set up
 * (dspy_cu_mma_setup raised every kernel's limit to it); read there, not during a capture. */
static int g_smem_optin;

static bool aligned16(const void *p) { return (uintptr_t)p % 16 == 0; }

/* attn_in releases the decode attention early (griddep_release) from this many rows on, where
 * DSPY_CUDA_RELEASE is not given (DSPY_CUDA_ATTN_IN_RELEASE_ROWS; read at backend init). H200,
 * FP8 decode step at B2's context (1,564 positions), us, never -> from 4 rows: batch 16 814 ->
 * 793, 4 696 -> 688; but batch 1 685 -> 737 and 2 708 -> 725 (the parked attention CTAs slow the
 * GEMV they wait on), hence a threshold rather than a bit. */
static int g_attn_rel_rows = 4;

/* Tiles of 16 rows in a unit of linear and logits (T): one, except with FP8 weights where a
 * one-tile batch (16 warps x 4 K steps of 64) would leave lanes' loads unused (C < 4,096: half of
 * them at 2,048) and two-tile units still give every SM one (the lm_head; not o_proj's 64). */
static int lin_tiles(dspy_backend *be, bool f8, int OC, int C) {
    return f8 && C / 64 < MW * 4 && (OC + 31) / 32 >= cu_of(be)->sm_count ? 2 : 1;
}

/* Returns the launch of the instance for `rows` activation rows (NT: two n8 tiles above 8), FP8
 * or BF16 weights, T tiles a unit (linear and logits; 1 elsewhere) and KW warps a unit (4 where
 * kw4, else MW; mlp_in and logits only), through the caller's LAUNCH(NT, F8, T, KW) (attn_in's
 * and mlp_in's ignore T, linear's and attn_in's KW). */
#define MMA_INSTANCE_KW(rows, f8, T, KW)                    \
    do {                                                    \
        if ((rows) > 8) {                                   \
            if ((f8) && (T) == 2) LAUNCH(2, true, 2, KW);   \
            if (f8) LAUNCH(2, true, 1, KW);                 \
            LAUNCH(2, false, 1, KW);                        \
        }                                                   \
        if ((f8) && (T) == 2) LAUNCH(1, true, 2, KW);       \
        if (f8) LAUNCH(1, true, 1, KW);                     \
        LAUNCH(1, false, 1, KW);                            \
    } while (0)
#define MMA_INSTANCE(rows, f8, T, kw4)                      \
    do {                                                    \
        if (kw4) MMA_INSTANCE_KW(rows, f8, T, 4);           \
        MMA_INSTANCE_KW(rows, f8, T, MW);                   \
    } while (0)

/* DSPY_CUDA_MMA_KW (read at backend init): 4 or 16 warps a unit for mlp_in and logits whatever
 * their size; default (0): 4 where the units fill at least three of the four groups of every SM
 * (the 1B shape's mlp_in, 512 units, and lm_head on an H200's 132 SMs), else 16. */
static int g_kw;

static bool use_kw4(dspy_backend *be, int units) {
    return g_kw == 4 || (g_kw == 0 && units >= 3 * cu_of(be)->sm_count);
}

/* Blocks of a launch whose groups take `units` (MW / KW groups a block: MW / 4 where kw4). */
static unsigned grid_kw(dspy_backend *be, int units, bool kw4) {
    return grid_of(be, kw4 ? (units + MW / 4 - 1) / (MW / 4) : units);
}

/* Wp, mp and f8 of a launch: the FP8 copy linked to w (kern/ops.h f8_link) when there is one and
 * C % 64 == 0 (a 16-byte load is 16 codes), else w's BF16 values. */
#define F8_PICK(w, OC, C)                                                                                    \
    cu_f8 f8c;                                                                                                \
    const bool f8 = (C) % 64 == 0 && dspy_cu_f8_find((w).data, (OC), (C), &f8c);                             \
    const void *Wp = f8 ? (const void *)f8c.q : (w).data;                                                     \
    const float *mp = f8 ? f8c.scale : NULL

/* DSPY_CUDA_MMA=0 (read at backend init) sends every row back: 5..16 to the composed path, 1..4
 * to the GEMV (the before/after comparison of bench/run_gpu.sh's step stage in one build).
 * DSPY_CUDA_MMA_SMALL: where 1..4 rows go. 1 (default): here, except one row of BF16 weights
 * (gemv.cu's GEMV); 0: always the GEMV (before 2026-12-03); 2: always here. Why: the GEMV's F32
 * dot products fall behind the stream from 2 rows on, and it reads BF16 only (twice the bytes of
 * an FP8 copy). H200, decode step at B2's context (1,564 positions), us, GEMV -> here: FP8
 * weights b1 884 -> 750, b2 1,154 -> 781, b4 1,518 -> 777; BF16 b2 1,144 -> 1,002, b4 1,511 ->
 * 1,004, but b1 876 -> 951. */
static bool g_mma_off;
static int g_small = 1;

/* DSPY_CUDA_F16_H=0 (read at backend init): dspy_cu_mma_mlp_f16 always says no (h stays BF16; the
 * down projection rebuilds BF16 values from the codes, 4 instructions a pair instead of 1). */
static bool g_f16_h = true;

/* DSPY_CUDA_EARLY_RES=0 (read at backend init): DSPY_LINEAR_ADD_EARLY taken as a plain add (the
 * residual read in the epilogue, after the wait). */
static bool g_early = true;

bool dspy_cu_mma_fits(int N, int OC, int C, const void *w, const void *inp) {
    if (g_mma_off || N < 1 || N > MMA_MAX_ROWS || C <= 0 || C % 32 != 0 || !aligned16(w) || !aligned16(inp)) return false;
    if (N >= MMA_MIN_ROWS || g_small == 2) return true;
    if (g_small == 0) return false;
    if (N >= 2) return true;
    cu_f8 f8c; /* one row: here only with an FP8 copy */
    return C % 64 == 0 && dspy_cu_f8_find(w, OC, C, &f8c);
}

/* The normed-rows kernels also need the F32 rows and norm weights 16-byte aligned (float4) and
 * their shared memory within the device's limit. */
static bool fused_fits(int N, int OC, int C, const void *w, const void *x, const void *wn, int T, bool f8) {
    return dspy_cu_mma_fits(N, OC, C, w, x) && aligned16(wn) &&
           smem_bytes(N > 8 ? 2 : 1, T, C, true, f8) <= (size_t)g_smem_optin;
}

dspy_status dspy_cu_mma_linear(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, dspy_tensor bias, int N,
                               int C, int OC, int accumulate) {
    const int mode = accumulate ? MEP_ACC : out.dtype == DSPY_DTYPE_BF16 ? MEP_BF16 : MEP_F32;
    const bf16 *Xp = (const bf16 *)inp.data;
    const float *bp = (const float *)bias.data;
    F8_PICK(w, OC, C);
    const bool xh = inp.dtype == DSPY_DTYPE_F16;
    const int early = accumulate == DSPY_LINEAR_ADD_EARLY && g_early;
    if (xh && !f8)
        return dspy_fail(DSPY_ERR_ARG, "cuda linear: F16 input rows need the weights' FP8 copy (%d x %d has none)", OC, C);
    const int T = lin_tiles(be, f8, OC, C), units = (OC + 16 * T - 1) / (16 * T);
    /* xh: the F16 instance (F8 = true there; the BF16 one never sees xh) */
#define LAUNCH(NT, F8, T, KW_)                                                                                      \
    return xh ? cu_launch(be, "linear (tensor-core gemv, FP8 weights, F16 rows)", k_mma_linear<NT, F8, T, F8>,     \
                          grid_of(be, units), MMA_THREADS, smem_bytes(NT, T, C, false, F8), Wp, mp, Xp, out.data,   \
                          mode, early, bp, N, OC, C)                                                                \
              : cu_launch(be, F8 ? "linear (tensor-core gemv, FP8 weights)" : "linear (tensor-core gemv)",         \
                          k_mma_linear<NT, F8, T, false>, grid_of(be, units), MMA_THREADS,                          \
                          smem_bytes(NT, T, C, false, F8), Wp, mp, Xp, out.data, mode, early, bp, N, OC, C)
    MMA_INSTANCE(N, f8, T, false);
#undef LAUNCH
}

dspy_status dspy_cu_mma_attn_in(dspy_backend *be, bool *taken, dspy_tensor q_out, dspy_tensor kcache, dspy_tensor vcache,
                                dspy_tensor x, dspy_tensor w_norm, dspy_tensor wqkv, dspy_tensor bqkv, dspy_tensor pos,
                                dspy_tensor slots, dspy_tensor inv_freq, int N, int C, int NH, int NKV, int HS, float eps) {
    /* the arguments were checked by the caller, gemv.cu's attn_in entry */
    F8_PICK(wqkv, (NH + 2 * NKV) * HS, C);
    *taken = HS % 32 == 0 && fused_fits(N, (NH + 2 * NKV) * HS, C, wqkv.data, x.data, w_norm.data, 2, f8);
    if (!*taken) return DSPY_OK;
    const int units = (NH + 2 * NKV) * (HS / 32);
    const float *bp = (const float *)bqkv.data, *xp = (const float *)x.data, *wn = (const float *)w_norm.data;
    const int32_t *pp = (const int32_t *)pos.data, *sp = (const int32_t *)slots.data;
    const float *fp = (const float *)inv_freq.data;
    bf16 *qo = (bf16 *)q_out.data, *kc = (bf16 *)kcache.data, *vc = (bf16 *)vcache.data;
    const int rel_bits = cu_of(be)->release;
    const int rel = (rel_bits & CU_REL_ATTN_IN) || (rel_bits == CU_REL_DEFAULT && N >= g_attn_rel_rows);
#define LAUNCH(NT, F8, T_, KW_)                                                                                     \
    return cu_launch(be, F8 ? "attn_in (tensor-core gemv, FP8 weights)" : "attn_in (tensor-core gemv)",            \
                     k_mma_attn_in<NT, F8>, grid_of(be, units), MMA_THREADS,                                        \
                     smem_bytes(NT, 2, C, true, F8), Wp, mp, bp,                                                    \
                     xp, wn, eps, pp, sp, fp, qo, kc, vc, N, C, NH, NKV, HS, rel)
    MMA_INSTANCE(N, f8, 1, false);
#undef LAUNCH
}

dspy_status dspy_cu_mma_mlp_in(dspy_backend *be, bool *taken, dspy_tensor h, dspy_tensor x, dspy_tensor w_norm,
                               dspy_tensor w_gate_up, int N, int C, int I, float eps) {
    /* the arguments were checked by the caller, gemv.cu's mlp_in entry */
    F8_PICK(w_gate_up, 2 * I, C);
    *taken = fused_fits(N, 2 * I, C, w_gate_up.data, x.data, w_norm.data, 2, f8);
    if (!*taken) return DSPY_OK;
    const int h16 = h.dtype == DSPY_DTYPE_F16;
    if (h16 && !f8)
        return dspy_fail(DSPY_ERR_ARG, "cuda mlp_in: an F16 h needs the gate/up weights' FP8 copy (%d x %d has none)",
                         2 * I, C);
    const float *xp = (const float *)x.data, *wn = (const float *)w_norm.data;
    bf16 *hp = (bf16 *)h.data;
    const int units = (I + 15) / 16;
    const bool kw4 = use_kw4(be, units);
#define LAUNCH(NT, F8, T_, KW)                                                                                      \
    return cu_launch(be, F8 ? "mlp_in (tensor-core gemv, FP8 weights)" : "mlp_in (tensor-core gemv)",              \
                     k_mma_mlp_in<NT, F8, KW>, grid_kw(be, units, kw4), MMA_THREADS,                                \
                     smem_bytes(NT, 2, C, true, F8), Wp, mp, xp,                                                    \
                     wn, eps, hp, h16, N, C, I)
    MMA_INSTANCE(N, f8, 1, kw4);
#undef LAUNCH
}

bool dspy_cu_mma_mlp_f16(dspy_tensor h, dspy_tensor x, dspy_tensor w_norm, dspy_tensor w_gate_up, dspy_tensor w_down,
                         int N, int C, int I) {
    cu_f8 gu, dn;
    return g_f16_h && C % 64 == 0 && I % 64 == 0 && dspy_cu_f8_find(w_gate_up.data, 2 * I, C, &gu) &&
           dspy_cu_f8_find(w_down.data, C, I, &dn) &&
           fused_fits(N, 2 * I, C, w_gate_up.data, x.data, w_norm.data, 2, true) &&
           dspy_cu_mma_fits(N, C, I, w_down.data, h.data);
}

/* logits (out) or, where tokens is given, logits_greedy (tokens, logprobs; out unused). */
static dspy_status mma_logits(dspy_backend *be, bool *taken, float *op, int32_t *tokens, float *logprobs, dspy_tensor x,
                              dspy_tensor rows, dspy_tensor w_norm, dspy_tensor w, int M, int C, int V, float eps) {
    /* the arguments were checked by the caller, gemv.cu's logits entries */
    F8_PICK(w, V, C);
    const int T = lin_tiles(be, f8, V, C), units = (V + 16 * T - 1) / (16 * T);
    *taken = fused_fits(M, V, C, w.data, x.data, w_norm.data, T, f8);
    if (!*taken) return DSPY_OK;
    const float *xp = (const float *)x.data, *wn = (const float *)w_norm.data;
    const int32_t *rp = (const int32_t *)rows.data;
    const bool kw4 = use_kw4(be, units);
    const unsigned grid = grid_kw(be, units, kw4);
    cuda_state *s = cu_of(be);
    /* the grid is at most one block an SM and fused_fits took at most 16 rows: the scratch's size
     * (backend_cuda.cu); the last block's loads hold GREEDY_MAX_BLOCKS partials a row */
    if (tokens && (int)grid > GREEDY_MAX_BLOCKS)
        return dspy_cu_fail(be, DSPY_ERR_BACKEND, "logits_greedy: %u blocks, more than the %d the combine takes", grid,
                            (int)GREEDY_MAX_BLOCKS);
#define LAUNCH(NT, F8, T, KW)                                                                                       \
    return tokens ? cu_launch(be, F8 ? "logits_greedy (tensor-core gemv, FP8 weights)" : "logits_greedy (tensor-core gemv)", \
                              k_mma_logits<NT, F8, T, KW, true>, grid, MMA_THREADS, smem_bytes(NT, T, C, true, F8), Wp,  \
                              mp, xp, rp, wn, eps, (float *)NULL, M, C, V, tokens, logprobs, s->greedy_part,       \
                              s->greedy_count)                                                                     \
                  : cu_launch(be, F8 ? "logits (tensor-core gemv, FP8 weights)" : "logits (tensor-core gemv)",        \
                              k_mma_logits<NT, F8, T, KW, false>, grid, MMA_THREADS, smem_bytes(NT, T, C, true, F8), Wp, \
                              mp, xp, rp, wn, eps, op, M, C, V, (int32_t *)NULL, (float *)NULL, (float4 *)NULL,    \
                              (int *)NULL)
    MMA_INSTANCE(M, f8, T, kw4);
#undef LAUNCH
}

dspy_status dspy_cu_mma_logits(dspy_backend *be, bool *taken, dspy_tensor out, dspy_tensor x, dspy_tensor rows,
                               dspy_tensor w_norm, dspy_tensor w, int M, int C, int V, float eps) {
    return mma_logits(be, taken, (float *)out.data, NULL, NULL, x, rows, w_norm, w, M, C, V, eps);
}

dspy_status dspy_cu_mma_logits_greedy(dspy_backend *be, bool *taken, dspy_tensor tokens, dspy_tensor logprobs,
                                      dspy_tensor x, dspy_tensor rows, dspy_tensor w_norm, dspy_tensor w, int M, int C,
                                      int V, float eps) {
    return mma_logits(be, taken, NULL, (int32_t *)tokens.data, (float *)logprobs.data, x, rows, w_norm, w, M, C, V, eps);
}

/* Lets k take up to mx bytes of shared memory in all, and lowers *room to what that leaves for
 * its dynamic part: the opt-in limit counts static and dynamic bytes together, and the timeline
 * build's stamps add static bytes to every stamped kernel (none otherwise). */
template <typename K> static cudaError_t smem_allow(K *k, int mx, int *room) {
    cudaFuncAttributes a;
    cudaError_t e = cudaFuncGetAttributes(&a, k);
    if (e != cudaSuccess) return e;
    const int dyn = mx - (int)a.sharedSizeBytes;
    if (dyn < *room) *room = dyn;
    return cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, dyn);
}

dspy_status dspy_cu_mma_setup(dspy_backend *be) {
    /* this file's copy of the early-release bits (cuda.cuh: one per .cu file) */
    DSPY_TRY(dspy_cu_check(be, cu_release_set(cu_of(be)->release), "tensor-core gemv (release flag)"));
    const char *env = getenv("DSPY_CUDA_MMA");
    g_mma_off = env && strcmp(env, "0") == 0;
    const char *kw = getenv("DSPY_CUDA_MMA_KW");
    g_kw = kw && (atoi(kw) == 4 || atoi(kw) == 16) ? atoi(kw) : 0;
    const char *ea = getenv("DSPY_CUDA_EARLY_RES");
    g_early = !(ea && strcmp(ea, "0") == 0);
    const char *ar = getenv("DSPY_CUDA_ATTN_IN_RELEASE_ROWS");
    g_attn_rel_rows = ar ? atoi(ar) : 4;
    const char *fh = getenv("DSPY_CUDA_F16_H");
    g_f16_h = !(fh && strcmp(fh, "0") == 0);
    const char *sm = getenv("DSPY_CUDA_MMA_SMALL");
    g_small = sm && (strcmp(sm, "0") == 0 || strcmp(sm, "2") == 0) ? atoi(sm) : 1;
    int mx = 48 * 1024;
    cudaError_t e = cudaDeviceGetAttribute(&mx, cudaDevAttrMaxSharedMemoryPerBlockOptin, cu_of(be)->dev);
    int room = mx; /* the dynamic bytes every kernel here may take */
#define ATTR(...) \
    if (e == cudaSuccess) e = smem_allow(__VA_ARGS__, mx, &room);
#define ATTR2(K, ...) ATTR(K<1, false __VA_ARGS__>) ATTR(K<2, false __VA_ARGS__>) ATTR(K<1, true __VA_ARGS__>) \
    ATTR(K<2, true __VA_ARGS__>)
#define ATTR3(K, ...) ATTR(K<1, false, 1 __VA_ARGS__>) ATTR(K<2, false, 1 __VA_ARGS__>) ATTR(K<1, true, 1 __VA_ARGS__>) \
    ATTR(K<2, true, 1 __VA_ARGS__>) ATTR(K<1, true, 2 __VA_ARGS__>) ATTR(K<2, true, 2 __VA_ARGS__>)
    ATTR3(k_mma_linear, , false) ATTR(k_mma_linear<1, true, 1, true>) ATTR(k_mma_linear<2, true, 1, true>)
    ATTR(k_mma_linear<1, true, 2, true>) ATTR(k_mma_linear<2, true, 2, true>) ATTR2(k_mma_attn_in) ATTR2(k_mma_mlp_in, , 4) ATTR2(k_mma_mlp_in, , MW)
    ATTR3(k_mma_logits, , 4, false) ATTR3(k_mma_logits, , MW, false)
    ATTR3(k_mma_logits, , 4, true) ATTR3(k_mma_logits, , MW, true)
#undef ATTR3
#undef ATTR2
#undef ATTR
    if (e == cudaSuccess && (g_smem_optin == 0 || room < g_smem_optin)) g_smem_optin = room;
    return dspy_cu_check(be, e, "tensor-core gemv (shared memory limit)");
}
