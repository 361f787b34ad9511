/* attention_prefill.cu — the prefill half of kern/ops.h attention: causal GQA flash attention
 * over the paged BF16 KV cache for head sizes 64 and 128, any segment lengths (attention.cu
 * takes decode steps and the other head sizes, and calls in here). The math is the CPU
 * reference's (kern/cpu/attention.c): scores q.k / sqrt(HS), max-subtracted softmax, weighted sum
 * of v — with BF16 inputs, F32 accumulation and BF16 weights P in the P V product.
 *
 * Both kernels follow FlashAttention-2: a CTA of 4 warps takes 64 query rows of one segment, each
 * warp 16 of them; keys and values stream through shared memory 64 positions at a time, gathered
 * from the paged cache through the block table by cp.async (XOR-swizzled rows, so ldmatrix is
 * conflict-free); S = Q K^T and O += P V run on the tensor cores (mma.sync m16n8k16), with V
 * through ldmatrix.trans and P kept in registers as the A operand; the softmax is online in the
 * log2 domain with the 1/sqrt(HS) scale folded into the exponent's FMA, and the causal mask runs
 * only on the tiles that reach past a warp's first row. CTAs take their row tiles in reverse
 * order (a segment's last tiles are its heaviest under the mask; starting them first shortens
 * the grid's tail).
 *
 *   - k_prefill64 (head size 64, even GQA groups, power-of-two cache blocks: the Llama-3.2-1B
 *     shape): two query heads of a KV group a CTA, both in every warp, so each K/V fragment feeds
 *     two mma chains; Q reloaded from shared memory each tile so 168 registers give 3 blocks (12
 *     warps) an SM; one barrier a tile; row sums out of the tensor cores (P times ones) instead of
 *     an add per score; the running max raised, and O rescaled, only when a weight would pass 2^8
 *     (rare after the first tiles); the block table read once per key row for K and V, with shifts.
 *     Where a call's row tiles are too few to fill the SMs (a prompt of a few hundred tokens after
 *     a long cached prefix: B2's lone request, ~60 CTAs of 24 key tiles on 132 SMs), k_prefill64's
 *     SPLIT form cuts each CTA's keys into S shares over a thread-block cluster of S along z; the
 *     shares meet in distributed shared memory (split_combine). Chosen per call by prefill_splits.
 *     Its WG form (sm_90a builds, the default there; DSPY_CUDA_PREFILL_WG=0 turns it off) runs
 *     S = Q K^T and O += P V on Hopper's warpgroup MMA (wgmma.cuh): the same CTA, tiles, loads and
 *     softmax, the products read Q, K and V from shared memory without ldmatrix, and the two heads
 *     staggered so that one head's softmax overlaps the other's products (wg_tile). H200, B2's
 *     mixed prompt step (15 x 204 rows after 1,296 cached keys): the attention's cost 2,565 ->
 *     1,938 us (16 layers; ~290 TFLOP/s), the step 9,926 -> 9,353 us; the lone 1 x 204 step's
 *     (split form) 423 -> 361 us.
 *   - k_attn_prefill (head size 128, odd groups, other block sizes; DSPY_CUDA_PREFILL64=0 puts head
 *     size 64 back on it): the kernel k_prefill64 replaced, one or two heads a CTA
 *     (DSPY_CUDA_PREFILL_HEADS), two barriers a tile, sums by adds, a rescale every tile, the block
 *     table read with a division per 16-byte chunk.
 *
 * Measured on the H200 (bench_gpu --only-prefill-ops: the attention of one 16,384-token chunk of
 * 11 x 1,488-token segments, 32 query heads over 8 KV heads, random q/k/v; 99.7 GFLOP, whose floor
 * at the measured 788 TFLOP/s of a cuBLAS BF16 GEMM is 0.127 ms): k_attn_prefill 0.693-0.698 ms
 * (143 TFLOP/s), k_prefill64 0.454-0.458 ms (218-220 TFLOP/s). Tried and dropped (ms): 128-key
 * tiles at 2 blocks (255 registers, spills) 0.634 with 2 stages, 0.705 with 3; 3 stages at 64 keys
 * 0.457; 2 blocks of 226 registers 0.477; two scores a BF16x2 ex2 (half the MUFU ops) 0.474;
 * the scores of tile i+1 computed before tile i's softmax (two score tiles live, 2 blocks) 0.502
 * (0.518-0.523 with the BF16x2 ex2). What they say: at head size 64 the kernel waits on latency
 * (tensor, MUFU, FP32 pipes and issue are each under ~40 % busy by instruction counts), and the
 * warps an SM holds hide it better than more work per warp does; PyTorch's SDPA on the same
 * shape runs at 370 TFLOP/s (wgmma, sm_90a): the WG form above. Its P V left in flight into the
 * next tile (three stages) made ptxas serialize every wgmma (C7515), so each tile waits for its
 * own products; the stagger of the two heads costs nothing and hides nothing measurable yet.
 */
#include <cooperative_groups.h>
#include <math.h>
#include <stdlib.h>

#include "kern/cuda/cuda.cuh"
#include "kern/cuda/mma.cuh"
#include "kern/cuda/wgmma.cuh"

dspy_status dspy_cu_attention_prefill_setup(dspy_backend *be);
dspy_status dspy_cu_attention_prefill(dspy_backend *be, bf16 *out, const bf16 *q, const bf16 *kc, const bf16 *vc,
                                      const dspy_attn_meta *m, int NH, int NKV, int HS, float scale_log2);

/* The segment and tile of prefill CTA `x`: tiles of 64 rows, numbered segment by segment. */
static __device__ bool find_tile(const dspy_attn_seg *segs, int nseg, int x, int *seg, int *tile) {
    for (int s = 0; s < nseg; s++) {
        int nt = (segs[s].n + 63) / 64;
        if (x < nt) {
            *seg = s;
            *tile = x;
            return true;
        }
        x -= nt;
    }
    return false;
}

/* Loads rows [0, 64) of a K or V tile (keys kb .. kb+63) from the paged cache into smem; keys at
 * or past kend are zero-filled. */
template <int D>
static __device__ __forceinline__ void load_kv_tile(char *sm, const bf16 *cache, const int32_t *table, int bs, int NKV,
                                             int kvh, int kb, int kend) {
    constexpr int CH = D / 8;
    for (int i = threadIdx.x; i < 64 * CH; i += 128) {
        int r = i / CH, c = i % CH, j = kb + r;
        bool ok = j < kend;
        const bf16 *src = cache;
        if (ok) {
            int64_t slot = (int64_t)table[j / bs] * bs + j % bs;
            src = cache + (slot * NKV + kvh) * D + c * 8;
        }
        cp_async16(sm + swz<CH>(r, c), src, ok);
    }
}

/* The older prefill CTA (head size 128, odd groups, block sizes that are not powers of two): 64
 * query rows of one segment for HP query heads of one KV group (HP = 1 or 2;
 * the heads share every K/V tile, fragment and mask, so two heads give each warp two
 * independent mma/softmax chains for the price of one set of shared-memory loads). Tiles are
 * taken in reverse order: under the causal mask a segment's last tiles are its heaviest, and
 * starting them first shortens the tail of the grid. QR reloads the Q fragments from shared
 * memory every tile instead of holding them, which lets MB = 3 blocks (12 warps) share an SM:
 * at head size 64 the kernel waits on instruction latencies, and more warps hide them (+13 %
 * on the H200 over Q in registers at 255 registers and 2 blocks). */
template <int D, int HP, int QR = 0, int MB = (HP == 1 && D == 64 ? 4 : 1)>
static __global__ __launch_bounds__(128, MB) void k_attn_prefill(bf16 *__restrict__ out, const bf16 *__restrict__ q,
                                                      const bf16 *__restrict__ kc, const bf16 *__restrict__ vc,
                                                      const dspy_attn_seg *__restrict__ segs, int nseg,
                                                      const int32_t *__restrict__ tables, int bs, int NH, int NKV,
                                                      float scale_log2) {
    constexpr int CH = D / 8, KB = D / 16, ND = D / 8; /* 16-B chunks per row, k16 blocks, n8 tiles of D */
    extern __shared__ __align__(128) char smem[];
    /* Q of the HP heads, then K buffers 0 and 1, then V buffers 0 and 1, each 64 x D BF16
     * (computed offsets, not arrays: a run-time index into an array of pointers would put it in
     * local memory). */
    constexpr int TILE = 64 * D * 2;
#define SQ(hh) (smem + (hh) * TILE)
#define SK(b) (smem + (HP + (b)) * TILE)
#define SV(b) (smem + (HP + 2 + (b)) * TILE)
    __shared__ int s_seg, s_tile;
    griddep_wait(CU_REL_ATTENTION);
    if (threadIdx.x == 0) {
        int sg = -1, tl = 0;
        if (!find_tile(segs, nseg, gridDim.x - 1 - blockIdx.x, &sg, &tl)) sg = -1;
        s_seg = sg, s_tile = tl;
    }
    __syncthreads();
    if (s_seg < 0) return;
    const dspy_attn_seg sg = segs[s_seg];
    const int h0 = blockIdx.y * HP, kvh = h0 / (NH / NKV);
    const int r0 = s_tile * 64;                       /* first row of the tile within the segment */
    const int nrows = min(64, sg.n - r0);             /* valid rows */
    const int kend = sg.pos0 + r0 + nrows;            /* keys needed: [0, kend) */
    const int32_t *table = tables + sg.table_off;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;

    /* Q tiles: rows r0 .. r0+63 of the segment, heads h0 .. h0+HP-1 (invalid rows zero). */
#pragma unroll
    for (int hh = 0; hh < HP; hh++)
        for (int i = threadIdx.x; i < 64 * CH; i += 128) {
            int r = i / CH, c = i % CH;
            bool ok = r < nrows;
            const bf16 *src = q + ((int64_t)(sg.row0 + (ok ? r0 + r : 0)) * NH + h0 + hh) * D + c * 8;
            cp_async16(SQ(hh) + swz<CH>(r, c), src, ok);
        }
    cp_async_commit();
    load_kv_tile<D>(SK(0), kc, table, bs, NKV, kvh, 0, kend);
    load_kv_tile<D>(SV(0), vc, table, bs, NKV, kvh, 0, kend);
    cp_async_commit();

    /* Positions of this thread's two rows (row g and g+8 of the warp's 16); rows past the
     * segment's end take the last valid row's position (their output is not written). */
    const int wr = warp * 16;
    const int pos_a = sg.pos0 + r0 + min(wr + g, nrows - 1), pos_b = sg.pos0 + r0 + min(wr + g + 8, nrows - 1);
    const int warp_pos_min = sg.pos0 + r0 + min(wr, nrows - 1);
    const int warp_pos_max = sg.pos0 + r0 + min(wr + 15, nrows - 1);

    uint32_t qf[HP][KB][4];
    float o[HP][ND][4];
    float m_a[HP], m_b[HP], l_a[HP], l_b[HP];
#pragma unroll
    for (int hh = 0; hh < HP; hh++) {
#pragma unroll
        for (int i = 0; i < ND; i++) o[hh][i][0] = o[hh][i][1] = o[hh][i][2] = o[hh][i][3] = 0.0f;
        m_a[hh] = m_b[hh] = -INFINITY, l_a[hh] = l_b[hh] = 0.0f;
    }

    const int ntiles = (kend + 63) / 64;
    for (int it = 0; it < ntiles; it++) {
        const int buf = it & 1, kb = it * 64;
        if (it + 1 < ntiles) {
            load_kv_tile<D>(SK(buf ^ 1), kc, table, bs, NKV, kvh, kb + 64, kend);
            load_kv_tile<D>(SV(buf ^ 1), vc, table, bs, NKV, kvh, kb + 64, kend);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        if (QR || it == 0) { /* QR: reloaded every tile, so the registers are free between tiles */
#pragma unroll
            for (int hh = 0; hh < HP; hh++)
#pragma unroll
                for (int kk = 0; kk < KB; kk++) {
                    int r = wr + (lane & 7) + ((lane >> 3) & 1) * 8, c = kk * 2 + (lane >> 4);
                    ldmatrix_x4(qf[hh][kk], SQ(hh) + swz<CH>(r, c));
                }
        }
        if (kb <= warp_pos_max) { /* tiles entirely above the warp's rows contribute nothing */
            /* S (16 x 64) = Q K^T per head, each K fragment loaded once for the HP heads */
            float s[HP][8][4];
#pragma unroll
            for (int hh = 0; hh < HP; hh++)
#pragma unroll
                for (int n = 0; n < 8; n++) s[hh][n][0] = s[hh][n][1] = s[hh][n][2] = s[hh][n][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < KB; kk++) {
#pragma unroll
                for (int n2 = 0; n2 < 4; n2++) { /* pairs of n8 tiles: keys n2*16 .. +15 */
                    uint32_t b[4];
                    int j = lane >> 3;
                    int r = n2 * 16 + (lane & 7) + (j >> 1) * 8, c = kk * 2 + (j & 1);
                    ldmatrix_x4(b, SK(buf) + swz<CH>(r, c));
#pragma unroll
                    for (int hh = 0; hh < HP; hh++) {
                        mma16816(s[hh][2 * n2], qf[hh][kk], b);
                        mma16816(s[hh][2 * n2 + 1], qf[hh][kk], b + 2);
                    }
                }
            }
            /* A tile whose last key is at or before the warp's first row needs no causal mask
             * (every tile but the diagonal ones). */
            const bool full = kb + 63 <= warp_pos_min;
#pragma unroll
            for (int hh = 0; hh < HP; hh++) {
                if (!full) { /* the causal mask, on the raw scores */
#pragma unroll
                    for (int n = 0; n < 8; n++) {
                        int key = kb + n * 8 + 2 * t;
                        float *sv = s[hh][n];
                        if (key > pos_a) sv[0] = -INFINITY;
                        if (key + 1 > pos_a) sv[1] = -INFINITY;
                        if (key > pos_b) sv[2] = -INFINITY;
                        if (key + 1 > pos_b) sv[3] = -INFINITY;
                    }
                }
                /* row maxima of the raw scores as trees, not 16-deep chains: with two warps per
                 * scheduler the fixed-latency dependencies are what the kernel waits on (Nsight
                 * Compute) */
                float ta[8], tb[8];
#pragma unroll
                for (int n = 0; n < 8; n++) ta[n] = fmaxf(s[hh][n][0], s[hh][n][1]), tb[n] = fmaxf(s[hh][n][2], s[hh][n][3]);
#pragma unroll
                for (int w = 4; w > 0; w >>= 1)
#pragma unroll
                    for (int n = 0; n < w; n++) ta[n] = fmaxf(ta[n], ta[n + w]), tb[n] = fmaxf(tb[n], tb[n + w]);
                float mx_a = fmaxf(m_a[hh], ta[0]), mx_b = fmaxf(m_b[hh], tb[0]);
                mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
                mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
                mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
                mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
                /* p = 2^(s * scale - max * scale): the scaling rides in the exponent's FMA (one
                 * instruction per score besides the exp; at head size 64 these per-score
                 * instructions, not the tensor cores, bound the kernel). Every row sees key 0 in
                 * the first tile, so the max is finite from then on; the first rescale is
                 * 2^-inf = 0. */
                const float ms_a = mx_a * scale_log2, ms_b = mx_b * scale_log2;
                float al_a = fast_exp2(fmaf(m_a[hh], scale_log2, -ms_a)), al_b = fast_exp2(fmaf(m_b[hh], scale_log2, -ms_b));
                m_a[hh] = mx_a, m_b[hh] = mx_b;
#pragma unroll
                for (int n = 0; n < 8; n++) {
                    float *sv = s[hh][n];
                    sv[0] = fast_exp2(fmaf(sv[0], scale_log2, -ms_a));
                    sv[1] = fast_exp2(fmaf(sv[1], scale_log2, -ms_a));
                    sv[2] = fast_exp2(fmaf(sv[2], scale_log2, -ms_b));
                    sv[3] = fast_exp2(fmaf(sv[3], scale_log2, -ms_b));
                    ta[n] = sv[0] + sv[1], tb[n] = sv[2] + sv[3];
                }
#pragma unroll
                for (int w = 4; w > 0; w >>= 1)
#pragma unroll
                    for (int n = 0; n < w; n++) ta[n] += ta[n + w], tb[n] += tb[n + w];
                const float sum_a = ta[0], sum_b = tb[0];
                l_a[hh] = l_a[hh] * al_a + sum_a;
                l_b[hh] = l_b[hh] * al_b + sum_b;
#pragma unroll
                for (int i = 0; i < ND; i++)
                    o[hh][i][0] *= al_a, o[hh][i][1] *= al_a, o[hh][i][2] *= al_b, o[hh][i][3] *= al_b;
            }
            /* O (16 x D) += P (16 x 64) V (64 x D) per head, each V fragment loaded once */
#pragma unroll
            for (int kk = 0; kk < 4; kk++) { /* keys kk*16 .. +15 */
                uint32_t a[HP][4];
#pragma unroll
                for (int hh = 0; hh < HP; hh++) {
                    a[hh][0] = pack_bf16(s[hh][2 * kk][0], s[hh][2 * kk][1]);
                    a[hh][1] = pack_bf16(s[hh][2 * kk][2], s[hh][2 * kk][3]);
                    a[hh][2] = pack_bf16(s[hh][2 * kk + 1][0], s[hh][2 * kk + 1][1]);
                    a[hh][3] = pack_bf16(s[hh][2 * kk + 1][2], s[hh][2 * kk + 1][3]);
                }
#pragma unroll
                for (int d2 = 0; d2 < ND / 2; d2++) { /* pairs of n8 tiles of D */
                    uint32_t b[4];
                    int j = lane >> 3;
                    int r = kk * 16 + (lane & 7) + (j & 1) * 8, c = d2 * 2 + (j >> 1);
                    ldmatrix_x4_trans(b, SV(buf) + swz<CH>(r, c));
#pragma unroll
                    for (int hh = 0; hh < HP; hh++) {
                        mma16816(o[hh][2 * d2], a[hh], b);
                        mma16816(o[hh][2 * d2 + 1], a[hh], b + 2);
                    }
                }
            }
        }
        __syncthreads(); /* the next iteration's prefetch overwrites this buffer */
    }
    /* normalise and write the valid rows */
    int ra = wr + g, rb = wr + g + 8;
#pragma unroll
    for (int hh = 0; hh < HP; hh++) {
        float la = l_a[hh], lb = l_b[hh];
        la += __shfl_xor_sync(0xffffffffu, la, 1);
        la += __shfl_xor_sync(0xffffffffu, la, 2);
        lb += __shfl_xor_sync(0xffffffffu, lb, 1);
        lb += __shfl_xor_sync(0xffffffffu, lb, 2);
        float inv_a = 1.0f / la, inv_b = 1.0f / lb;
#pragma unroll
        for (int i = 0; i < ND; i++) {
            int col = i * 8 + 2 * t;
            if (ra < nrows) {
                bf16 *dst = out + ((int64_t)(sg.row0 + r0 + ra) * NH + h0 + hh) * D + col;
                *(__nv_bfloat162 *)dst = __floats2bfloat162_rn(o[hh][i][0] * inv_a, o[hh][i][1] * inv_a);
            }
            if (rb < nrows) {
                bf16 *dst = out + ((int64_t)(sg.row0 + r0 + rb) * NH + h0 + hh) * D + col;
                *(__nv_bfloat162 *)dst = __floats2bfloat162_rn(o[hh][i][2] * inv_b, o[hh][i][3] * inv_b);
            }
        }
    }
#undef SQ
#undef SK
#undef SV
}

/* ---- head size 64: two heads a warp, lazy rescale, sums on the tensor cores ------------------ */

/* S (16 x 8NT, per head) = Q K^T for the warp's 16 rows of both heads (Q tiles at sq and sq + 8
 * KiB, K tile at sk), each K fragment loaded once for both heads. */
template <int NT>
static __device__ __forceinline__ void p64_qk(float (&s)[2][NT][4], const char *sq, const char *sk, int wr, int lane) {
#pragma unroll
    for (int hh = 0; hh < 2; hh++)
#pragma unroll
        for (int n = 0; n < NT; n++) s[hh][n][0] = s[hh][n][1] = s[hh][n][2] = s[hh][n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        uint32_t qf[2][4];
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            int r = wr + (lane & 7) + ((lane >> 3) & 1) * 8, c = kk * 2 + (lane >> 4);
            ldmatrix_x4(qf[hh], sq + hh * 64 * 64 * 2 + swz<8>(r, c));
        }
#pragma unroll
        for (int n2 = 0; n2 < NT / 2; n2++) { /* pairs of n8 tiles: keys n2*16 .. +15 */
            uint32_t b[4];
            int j = lane >> 3;
            int r = n2 * 16 + (lane & 7) + (j >> 1) * 8, c = kk * 2 + (j & 1);
            ldmatrix_x4(b, sk + swz<8>(r, c));
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                mma16816(s[hh][2 * n2], qf[hh], b);
                mma16816(s[hh][2 * n2 + 1], qf[hh], b + 2);
            }
        }
    }
}

/* The causal mask on one head's raw scores of keys kb .. (rows at positions pos_a = row g, pos_b =
 * g + 8); p64_mask: both heads. */
template <int NT>
static __device__ __forceinline__ void sm_mask(float (&s)[NT][4], int kb, int t, int pos_a, int pos_b) {
#pragma unroll
    for (int n = 0; n < NT; n++) {
        int key = kb + n * 8 + 2 * t;
        float *sv = s[n];
        if (key > pos_a) sv[0] = -INFINITY;
        if (key + 1 > pos_a) sv[1] = -INFINITY;
        if (key > pos_b) sv[2] = -INFINITY;
        if (key + 1 > pos_b) sv[3] = -INFINITY;
    }
}
template <int NT>
static __device__ __forceinline__ void p64_mask(float (&s)[2][NT][4], int kb, int t, int pos_a, int pos_b) {
    sm_mask<NT>(s[0], kb, t, pos_a, pos_b);
    sm_mask<NT>(s[1], kb, t, pos_a, pos_b);
}

/* The online softmax of one tile: raw scores s -> BF16 weights p (the A fragments of P V), with
 * the running max m[row g / g + 8], and O and the sums lf rescaled where the max moves. The max
 * is raised only where a weight would pass 2^8 (one vote for the warp): the first tile always
 * does (m = -inf), and every row sees key 0 there, so m is finite from then on and the first
 * rescale multiplies by 2^-inf = 0. In three phases per head so that p64_softmax votes once for
 * two heads: sm_max (the rows' new maxima mx; whether they pass the threshold), sm_rescale (for a
 * warp that voted to), sm_exp. */
template <int NT>
static __device__ __forceinline__ bool sm_max(const float (&s)[NT][4], const float (&m)[2], float (&mx)[2], float sl2) {
    /* row maxima as trees (short dependent chains), then across the row's 4 threads */
    float ta[NT], tb[NT];
#pragma unroll
    for (int n = 0; n < NT; n++) ta[n] = fmaxf(s[n][0], s[n][1]), tb[n] = fmaxf(s[n][2], s[n][3]);
#pragma unroll
    for (int w = NT / 2; w > 0; w >>= 1)
#pragma unroll
        for (int n = 0; n < w; n++) ta[n] = fmaxf(ta[n], ta[n + w]), tb[n] = fmaxf(tb[n], tb[n + w]);
    float a = fmaxf(m[0], ta[0]), b = fmaxf(m[1], tb[0]);
    a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, 1));
    b = fmaxf(b, __shfl_xor_sync(0xffffffffu, b, 1));
    a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, 2));
    b = fmaxf(b, __shfl_xor_sync(0xffffffffu, b, 2));
    mx[0] = a, mx[1] = b;
    return (a - m[0]) * sl2 > 8.0f || (b - m[1]) * sl2 > 8.0f;
}

static __device__ __forceinline__ void sm_rescale(float (&o)[8][4], float (&lf)[4], float (&m)[2], const float (&mx)[2],
                                                  float sl2) {
    const float al_a = fast_exp2((m[0] - mx[0]) * sl2), al_b = fast_exp2((m[1] - mx[1]) * sl2);
    m[0] = mx[0], m[1] = mx[1];
#pragma unroll
    for (int i = 0; i < 8; i++) o[i][0] *= al_a, o[i][1] *= al_a, o[i][2] *= al_b, o[i][3] *= al_b;
    lf[0] *= al_a, lf[1] *= al_a, lf[2] *= al_b, lf[3] *= al_b;
}

/* p = 2^(s * scale - max * scale): the scaling rides in the exponent's FMA */
template <int NT>
static __device__ __forceinline__ void sm_exp(const float (&s)[NT][4], uint32_t (&p)[NT / 2][4], const float (&m)[2],
                                              float sl2) {
    const float ma = m[0] * sl2, mb = m[1] * sl2;
#pragma unroll
    for (int kk = 0; kk < NT / 2; kk++) {
        const float *s0 = s[2 * kk], *s1 = s[2 * kk + 1];
        p[kk][0] = pack_bf16(fast_exp2(fmaf(s0[0], sl2, -ma)), fast_exp2(fmaf(s0[1], sl2, -ma)));
        p[kk][1] = pack_bf16(fast_exp2(fmaf(s0[2], sl2, -mb)), fast_exp2(fmaf(s0[3], sl2, -mb)));
        p[kk][2] = pack_bf16(fast_exp2(fmaf(s1[0], sl2, -ma)), fast_exp2(fmaf(s1[1], sl2, -ma)));
        p[kk][3] = pack_bf16(fast_exp2(fmaf(s1[2], sl2, -mb)), fast_exp2(fmaf(s1[3], sl2, -mb)));
    }
}

/* Both heads of a warp's tile, one vote. */
template <int NT>
static __device__ __forceinline__ void p64_softmax(float (&s)[2][NT][4], uint32_t (&p)[2][NT / 2][4], float (&o)[2][8][4],
                                                   float (&lf)[2][4], float (&m)[2][2], float sl2) {
    float mx[2][2];
    bool grow = sm_max<NT>(s[0], m[0], mx[0], sl2);
    grow |= sm_max<NT>(s[1], m[1], mx[1], sl2);
    if (__any_sync(0xffffffffu, grow)) {
#pragma unroll
        for (int hh = 0; hh < 2; hh++) sm_rescale(o[hh], lf[hh], m[hh], mx[hh], sl2);
    }
#pragma unroll
    for (int hh = 0; hh < 2; hh++) sm_exp<NT>(s[hh], p[hh], m[hh], sl2);
}

/* O (16 x 64, per head) += P V (V tile at sv, each fragment loaded once for both heads); the row
 * sums as P times a column of ones (every thread of a row then holds its whole sum). */
template <int NT>
static __device__ __forceinline__ void p64_pv(const uint32_t (&p)[2][NT / 2][4], float (&o)[2][8][4], float (&lf)[2][4],
                                              const char *sv, int lane) {
    const uint32_t ones[2] = {0x3F803F80u, 0x3F803F80u}; /* BF16 pairs (1, 1) */
#pragma unroll
    for (int kk = 0; kk < NT / 2; kk++) { /* keys kk*16 .. +15 */
#pragma unroll
        for (int hh = 0; hh < 2; hh++) mma16816(lf[hh], p[hh][kk], ones);
#pragma unroll
        for (int d2 = 0; d2 < 4; d2++) { /* pairs of n8 tiles of D */
            uint32_t b[4];
            int j = lane >> 3;
            int r = kk * 16 + (lane & 7) + (j & 1) * 8, c = d2 * 2 + (j >> 1);
            ldmatrix_x4_trans(b, sv + swz<8>(r, c));
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                mma16816(o[hh][2 * d2], p[hh][kk], b);
                mma16816(o[hh][2 * d2 + 1], p[hh][kk], b + 2);
            }
        }
    }
}

/* One key tile of a k_prefill64<.., WG> CTA on Hopper's warpgroup MMA: the CTA's 4 warps are one
 * warpgroup, whose 64 x 64 products land in the registers p64_qk and p64_pv fill (wgmma.cuh), with
 * Q, K and V read from shared memory by the tensor cores (no ldmatrix) and P handed over in
 * registers. The two heads are staggered so that each head's softmax runs while the tensor cores
 * work for the other: S of both issued, head 0's softmax once its S is done (head 1's still
 * running), its P V issued, head 1's softmax once S1 is done (P V0 running), its P V issued. The
 * row sums stay on mma.sync (P times ones). Everything is waited for before the tile ends (the
 * next tile's refill takes this stage). diag: the tile reaches past the warp's first row. */
static __device__ __forceinline__ void wg_tile(float (&s)[2][8][4], float (&o)[2][8][4], float (&lf)[2][4], float (&m)[2][2],
                                               const char *sq, const char *sk, const char *sv, bool diag, int kb, int t,
                                               int pos_a, int pos_b, float sl2) {
    const uint32_t ones[2] = {0x3F803F80u, 0x3F803F80u}; /* BF16 pairs (1, 1) */
    uint32_t p[2][4][4];
    wg_fence();
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
#pragma unroll
        for (int kk = 0; kk < 4; kk++) /* dims kk*16 .. +15: 32 bytes along each 128-byte row */
            wg_ss(s[hh], wg_desc(sq + hh * 64 * 64 * 2 + kk * 32), wg_desc(sk + kk * 32), kk);
        wg_commit();
    }
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        wg_wait<1>(); /* head 0: S0 (S1 may run); head 1: S1 (P V0 may run) */
        wg_pin(s[hh]);
        if (diag) sm_mask<8>(s[hh], kb, t, pos_a, pos_b);
        float mx[2];
        if (__any_sync(0xffffffffu, sm_max<8>(s[hh], m[hh], mx, sl2))) sm_rescale(o[hh], lf[hh], m[hh], mx, sl2);
        sm_exp<8>(s[hh], p[hh], m[hh], sl2);
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < 4; kk++) /* keys kk*16 .. +15: 16 rows of 128 bytes */
            wg_rs_t(o[hh], p[hh][kk], wg_desc(sv + kk * 16 * 128));
        wg_commit();
    }
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
#pragma unroll
        for (int hh = 0; hh < 2; hh++) mma16816(lf[hh], p[hh][kk], ones);
    wg_wait<0>();
    wg_pin(o[0]);
    wg_pin(o[1]);
}

/* The end of a split CTA (k_prefill64<.., SPLIT>): its unnormalised O, running max m and row
 * sums l of both heads go to its shared memory (the K/V stages are done with: 33 KiB of the 48);
 * after the cluster's barrier, rank z finishes rows z * ceil(64 / S) .. of the tile: one thread a
 * (head, row) weighs every rank's partial by 2^((m_r - M) * sl2) / sum_r (its l_r times that) over
 * the largest max M (an empty share has m = -inf and l = 0 and weighs nothing), then the outputs
 * sum the ranks' O rows four columns at a time (S independent DSMEM loads each). The second
 * barrier keeps every CTA's shared memory alive until all have read it. Rows rbase .. rbase +
 * nrows - 1 of out, heads h0 and h0 + 1. */
static __device__ __forceinline__ void split_combine(bf16 *__restrict__ out, const float (&o)[2][8][4], const float (&lf)[2][4],
                                                     const float (&m)[2][2], char *smem, int rbase, int nrows, int h0,
                                                     int NH, int ra, int rb, int t, float sl2) {
    constexpr int D = 64, SMAX = 8;
    namespace cg = cooperative_groups;
    cg::cluster_group cl = cg::this_cluster();
    /* [2][64][D] O, [2][64] m, [2][64] l (read by every rank); [SMAX][2][32] this rank's weights */
    float *so = (float *)smem, *sm = so + 2 * 64 * D, *sl = sm + 2 * 64, *wt = sl + 2 * 64;
    __syncthreads(); /* every warp is done with the K/V stages these overwrite */
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const int col = i * 8 + 2 * t;
            *(float2 *)(so + (hh * 64 + ra) * D + col) = make_float2(o[hh][i][0], o[hh][i][1]);
            *(float2 *)(so + (hh * 64 + rb) * D + col) = make_float2(o[hh][i][2], o[hh][i][3]);
        }
        if (t == 0) {
            sm[hh * 64 + ra] = m[hh][0], sm[hh * 64 + rb] = m[hh][1];
            sl[hh * 64 + ra] = lf[hh][0], sl[hh * 64 + rb] = lf[hh][2];
        }
    }
    cl.sync();
    const int S = (int)cl.num_blocks(), z = (int)cl.block_rank();
    const int rs = (64 + S - 1) / S, r0 = z * rs, nr = max(0, min(rs, min(64, nrows) - r0)); /* rs <= 32 */
    if ((int)threadIdx.x < 2 * nr) { /* (head, row) = (tid / nr, r0 + tid % nr) */
        const int hh = threadIdx.x / nr, r = r0 + threadIdx.x % nr;
        float mk[SMAX], M = -INFINITY, den = 0.0f;
        for (int k = 0; k < S; k++) mk[k] = cl.map_shared_rank(sm, k)[hh * 64 + r], M = fmaxf(M, mk[k]);
        for (int k = 0; k < S; k++) {
            mk[k] = mk[k] == -INFINITY ? 0.0f : fast_exp2((mk[k] - M) * sl2);
            den += mk[k] * cl.map_shared_rank(sl, k)[hh * 64 + r];
        }
        for (int k = 0; k < S; k++) wt[(k * 2 + hh) * 32 + r - r0] = mk[k] / den;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < 2 * nr * (D / 4); e += blockDim.x) { /* four columns each */
        const int hh = e / (nr * (D / 4)), r = r0 + e / (D / 4) % nr, col = 4 * (e % (D / 4));
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int k = 0; k < S; k++) {
            const float w = wt[(k * 2 + hh) * 32 + r - r0];
            const float4 v = *(const float4 *)(cl.map_shared_rank(so, k) + (hh * 64 + r) * D + col);
            acc.x += w * v.x, acc.y += w * v.y, acc.z += w * v.z, acc.w += w * v.w;
        }
        bf16 *dst = out + ((int64_t)(rbase + r) * NH + h0 + hh) * D + col;
        *(__nv_bfloat162 *)dst = __floats2bfloat162_rn(acc.x, acc.y);
        *(__nv_bfloat162 *)(dst + 2) = __floats2bfloat162_rn(acc.z, acc.w);
    }
    cl.sync(); /* no CTA leaves while another still reads its shared memory */
}

/* The head-size-64 prefill CTA (GQA groups of an even size, power-of-two cache blocks): 4 warps,
 * 64 query rows of one segment and two query heads of one KV group; warp w owns rows 16w .. 16w+15
 * of both heads, so every K/V fragment it loads feeds two mma chains. Keys and values stream
 * through shared memory KT = 64 positions at a time, two stages deep, one barrier a tile (the
 * refill of a stage is issued right after the barrier that ends its last use). Q is reloaded from
 * shared memory every tile: the registers go to occupancy (168 a thread, 3 blocks = 12 warps an
 * SM). See the file comment for what each choice was worth on the H200.
 * Tensors: out, q (N, NH, 64); kc, vc (slots, NKV, 64), slot = table[pos >> bsh] << bsh | pos & (2^bsh - 1)
 * with the segment's table at tables + table_off; grid (64-row tiles of all segments, NH / 2). */
template <int KT, int ST, int MB, bool SPLIT = false, bool WG = false>
static __global__ __launch_bounds__(128, MB) void k_prefill64(bf16 *__restrict__ out, const bf16 *__restrict__ q,
                                                               const bf16 *__restrict__ kc, const bf16 *__restrict__ vc,
                                                               const dspy_attn_seg *__restrict__ segs, int nseg,
                                                               const int32_t *__restrict__ tables, int bsh, int NH,
                                                               int NKV, float sl2, int skip) {
    constexpr int D = 64, CH = 8, NT = KT / 8; /* 16-B chunks per row, n8 tiles of a key tile */
    constexpr int QB = 64 * D * 2, KVB = KT * D * 2; /* bytes of a Q tile (one head), of a K or V tile */
    static_assert(!WG || KT == 64, "the warpgroup products take 64-key tiles");
    extern __shared__ __align__(128) char smem_raw[];
    /* WG: the tiles on 1,024-byte boundaries, where the 128-byte swizzle's pattern starts (the
     * launch adds 1 KiB) */
    char *const smem = WG ? smem_raw + ((1024u - (smem_u32(smem_raw) & 1023u)) & 1023u) : smem_raw;
    /* Q of heads h0 and h0+1, then per stage b: K, V (computed offsets: see k_attn_prefill) */
#define SK(b) (smem + 2 * QB + (b) * 2 * KVB)
#define SV(b) (smem + 2 * QB + (b) * 2 * KVB + KVB)
    __shared__ int s_seg, s_tile;
    griddep_wait(CU_REL_ATTENTION);
    if (threadIdx.x == 0) {
        int sg = -1, tl = 0;
        if (!find_tile(segs, nseg, gridDim.x - 1 - blockIdx.x, &sg, &tl)) sg = -1;
        s_seg = sg, s_tile = tl;
    }
    __syncthreads();
    if (s_seg < 0) return;
    const dspy_attn_seg sg = segs[s_seg];
    const int h0 = blockIdx.y * 2, kvh = h0 / (NH / NKV);
    const int r0 = s_tile * 64, nrows = min(64, sg.n - r0);
    const int kend = sg.pos0 + r0 + nrows; /* keys needed: [0, kend) */
    const int32_t *table = tables + sg.table_off;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;

    /* Q tiles (invalid rows zero) */
#pragma unroll
    for (int hh = 0; hh < 2; hh++)
#pragma unroll
        for (int i = threadIdx.x; i < 64 * CH; i += 128) {
            int r = i / CH, c = i % CH;
            bool ok = r < nrows;
            const bf16 *src = q + ((int64_t)(sg.row0 + (ok ? r0 + r : 0)) * NH + h0 + hh) * D + c * 8;
            cp_async16(smem + hh * QB + swz<CH>(r, c), src, ok);
        }
    /* this thread copies chunk c of key rows rr, rr + 16, ... of every K and V tile */
    const int c = threadIdx.x & 7, rr = threadIdx.x >> 3, bmask = (1 << bsh) - 1;
    const int64_t kv_row = (int64_t)NKV * D;
    const bf16 *kbase = kc + kvh * D + c * 8, *vbase = vc + kvh * D + c * 8;
    /* the key tiles [t0, t0 + ntiles) this CTA attends: all of them, or (SPLIT) its share of a
     * cluster's gridDim.z, each share starting at a tile whose first key every row of the CTA sees
     * (keys below pos0 + r0), so every row's running max is finite after its first tile */
    int t0 = 0, ntiles = (kend + KT - 1) / KT;
    if constexpr (SPLIT) {
        const int S = gridDim.z, z = blockIdx.z, seen = (sg.pos0 + r0) / KT, all = ntiles;
        t0 = min(z * all / S, seen);
        ntiles = (z + 1 == S ? all : min((z + 1) * all / S, seen)) - t0;
    }
    auto load_tile = [&](int b, int kb) {
#pragma unroll
        for (int i = 0; i < KT / 16; i++) {
            const int r = rr + 16 * i, j = kb + r;
            const bool ok = j < kend;
            const int64_t off = ok ? ((int64_t)table[j >> bsh] * (bmask + 1) + (j & bmask)) * kv_row : 0;
            cp_async16(SK(b) + swz<CH>(r, c), kbase + off, ok);
            cp_async16(SV(b) + swz<CH>(r, c), vbase + off, ok);
        }
    };
#pragma unroll
    for (int s = 0; s < ST - 1; s++) {
        if (s < ntiles) load_tile(s, (t0 + s) * KT);
        cp_async_commit(); /* the first group carries Q too */
    }

    const int wr = warp * 16;
    const int pos_a = sg.pos0 + r0 + min(wr + g, nrows - 1), pos_b = sg.pos0 + r0 + min(wr + g + 8, nrows - 1);
    const int warp_pos_min = sg.pos0 + r0 + min(wr, nrows - 1);
    const int warp_pos_max = sg.pos0 + r0 + min(wr + 15, nrows - 1);

    float o[2][8][4], lf[2][4]; /* O per head; row sums per head (cols 0 of rows g and g+8 used) */
    float m[2][2];              /* running max of the raw scores per head, rows g and g+8 */
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
#pragma unroll
        for (int i = 0; i < 8; i++) o[hh][i][0] = o[hh][i][1] = o[hh][i][2] = o[hh][i][3] = 0.0f;
        lf[hh][0] = lf[hh][1] = lf[hh][2] = lf[hh][3] = 0.0f;
        m[hh][0] = m[hh][1] = -INFINITY;
    }

    float s[2][NT][4]; /* (WG: written by the tensor cores in place; defined once for the compiler) */
#pragma unroll
    for (int hh = 0; hh < 2; hh++)
#pragma unroll
        for (int n = 0; n < NT; n++) s[hh][n][0] = s[hh][n][1] = s[hh][n][2] = s[hh][n][3] = 0.0f;
    for (int it = 0; it < ntiles; it++) {
        const int buf = it % ST, kb = (t0 + it) * KT;
        cp_async_wait<ST - 2>(); /* tile `it` (and Q) landed for this thread */
        if constexpr (WG) wg_fence_proxy(); /* ... and is visible to the tensor cores' reads */
        __syncthreads();         /* ... for every thread; and every warp is done with tile it - 1 */
        if (it + ST - 1 < ntiles) load_tile((it + ST - 1) % ST, (t0 + it + ST - 1) * KT); /* into tile it-1's stage */
        cp_async_commit();
        /* (a warpgroup's products take all four warps: WG skips nothing, its masked rows weigh 0) */
        if (!WG && kb > warp_pos_max) continue; /* tiles entirely above the warp's rows contribute nothing */
        /* nor does a warp whose 16 rows are all past the segment's end (a segment's last tile: 12
         * of B2's 204 rows); a split CTA's combine reads every warp's state, so it keeps them */
        if (!WG && !SPLIT && skip && wr >= nrows) continue;
        const bool diag = kb + KT - 1 > warp_pos_min; /* the causal mask: diagonal tiles only */
        if constexpr (WG) {
            wg_tile(s, o, lf, m, smem, SK(buf), SV(buf), diag, kb, t, pos_a, pos_b, sl2);
        } else {
            uint32_t p[2][NT / 2][4];
            p64_qk<NT>(s, smem, SK(buf), wr, lane);
            if (diag) p64_mask<NT>(s, kb, t, pos_a, pos_b);
            p64_softmax<NT>(s, p, o, lf, m, sl2);
            p64_pv<NT>(p, o, lf, SV(buf), lane);
        }
    }
    cp_async_wait<0>(); /* no copy may still target shared memory when the CTA exits */
    const int ra = wr + g, rb = wr + g + 8;
    if constexpr (SPLIT) {
        split_combine(out, o, lf, m, smem, sg.row0 + r0, nrows, h0, NH, ra, rb, t, sl2);
    } else { /* normalise and write the valid rows */
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const float inv_a = 1.0f / lf[hh][0], inv_b = 1.0f / lf[hh][2];
#pragma unroll
            for (int i = 0; i < 8; i++) {
                int col = i * 8 + 2 * t;
                if (ra < nrows) {
                    bf16 *dst = out + ((int64_t)(sg.row0 + r0 + ra) * NH + h0 + hh) * D + col;
                    *(__nv_bfloat162 *)dst = __floats2bfloat162_rn(o[hh][i][0] * inv_a, o[hh][i][1] * inv_a);
                }
                if (rb < nrows) {
                    bf16 *dst = out + ((int64_t)(sg.row0 + r0 + rb) * NH + h0 + hh) * D + col;
                    *(__nv_bfloat162 *)dst = __floats2bfloat162_rn(o[hh][i][2] * inv_b, o[hh][i][3] * inv_b);
                }
            }
        }
    }
#undef SK
#undef SV
}

/* ---- launch ------------------------------------------------------------------------------- */

template <int D, int HP, int QR = 0, int MB = (HP == 1 && D == 64 ? 4 : 1)> static dspy_status launch_prefill(dspy_backend *be, bf16 *out, const bf16 *q, const bf16 *kc,
                                                           const bf16 *vc, const dspy_attn_meta *m, int NH, int NKV,
                                                           float sl2) {
    size_t smem = (size_t)(HP + 4) * 64 * D * 2;
    /* An upper bound on the tiles: every segment adds at most one partial tile. */
    unsigned tiles = (unsigned)((m->N + 63) / 64 + m->nseg);
    dim3 grid(tiles, NH / HP);
    return cu_launch(be, "attention (prefill)", k_attn_prefill<D, HP, QR, MB>, grid, 128, smem, out, q, kc, vc,
                     (const dspy_attn_seg *)m->segs.data, m->nseg, (const int32_t *)m->tables.data, m->block_size, NH,
                     NKV, sl2);
}

template <int KT, int ST> static constexpr size_t p64_smem() { return (size_t)2 * 64 * 64 * 2 + (size_t)ST * 2 * KT * 64 * 2; }

/* Key splits of a k_prefill64 call (1: none): where its CTAs (the row tiles, estimated with half a
 * tile's waste a segment, times the head pairs) would leave SMs idle, S = floor(2 x SMs / CTAs) up
 * to 8 (about two CTAs an SM), each share at least 3 of the T = ceil(max_len / 64) key tiles. A pure
 * function of the call's sizes (the grid of a captured graph is fixed). H200, B2's single-sequence
 * prompt step (204 rows after 1,296 cached keys: ~60 CTAs of 24 tiles), the attention's cost in
 * the step: 730 us unsplit, 680 / 487 / 609 / 564 with 2 / 4 / 6 / 8 shares; with 8 or 15 such
 * sequences (470-900 CTAs) every split was slower (bench/RESULTS.md). DSPY_CUDA_PREFILL_SPLIT (read
 * at backend creation) = 1 turns splitting off, 2..8 forces S. */
static int prefill_splits(const cuda_state *s, const dspy_attn_meta *m, int NH) {
    if (s->prefill_split >= 1) return s->prefill_split;
    const int T = (m->max_len + 63) / 64;
    const int64_t ctas = ((int64_t)m->N + 32 * (int64_t)m->nseg + 63) / 64 * (NH / 2);
    int S = ctas > 0 ? (int)(2 * (int64_t)s->sm_count / ctas) : 1;
    if (S > 8) S = 8;
    while (S > 1 && T / S < 3) S--;
    return S < 2 ? 1 : S;
}

/* DSPY_CUDA_PREFILL_SKIP=0 (read once per process): warps with no row in the segment compute their
 * clamped copies of its last row as before (the before/after in one build). */
static int p64_skip = -1;

/* Whether k_prefill64's warpgroup form runs (DSPY_CUDA_PREFILL_WG=0: never): -1 until the first
 * backend's setup asked the device code (compiled for sm_90a or not, k_wg_built). */
static int p64_wg = -1;

static __global__ void k_wg_built(int *out) { *out = WG_ON; }

/* k_prefill64 over the call's row tiles and head pairs; S > 1: its SPLIT form, S shares of each
 * CTA's keys in a cluster of S along z; wg: the warpgroup products (1 KiB more shared memory for
 * the tiles' alignment). */
static dspy_status launch_prefill64(dspy_backend *be, bf16 *out, const bf16 *q, const bf16 *kc, const bf16 *vc,
                                    const dspy_attn_meta *m, int NH, int NKV, int bsh, float sl2, int S, bool wg) {
    unsigned tiles = (unsigned)((m->N + 63) / 64 + m->nseg); /* an upper bound, as in launch_prefill */
    const bool split = S > 1;
    auto kern = split ? (wg ? k_prefill64<64, 2, 3, true, true> : k_prefill64<64, 2, 3, true, false>)
                      : (wg ? k_prefill64<64, 2, 3, false, true> : k_prefill64<64, 2, 3, false, false>);
    const size_t smem = p64_smem<64, 2>() + (wg ? 1024 : 0);
    return cu_launch_cluster(be, split ? "attention (prefill, HS 64, key splits)" : "attention (prefill, HS 64)", kern,
                             dim3(tiles, NH / 2, split ? S : 1), dim3(128), split ? dim3(1, 1, S) : dim3(0, 0, 0), smem,
                             out, q, kc, vc, (const dspy_attn_seg *)m->segs.data, m->nseg,
                             (const int32_t *)m->tables.data, bsh, NH, NKV, sl2, p64_skip);
}

/* DSPY_CUDA_PREFILL64=0 routes head size 64 to the older k_attn_prefill (for comparisons; its
 * variant then follows DSPY_CUDA_PREFILL_HEADS); read once per process. */
static int p64_on = -1;

dspy_status dspy_cu_attention_prefill_setup(dspy_backend *be) {
    if (p64_on < 0) {
        const char *v = getenv("DSPY_CUDA_PREFILL64");
        p64_on = v && atoi(v) == 0 ? 0 : 1;
    }
    if (p64_skip < 0) {
        const char *v = getenv("DSPY_CUDA_PREFILL_SKIP");
        p64_skip = v && atoi(v) == 0 ? 0 : 1;
    }
    /* once a process: an sm_90a cubin loads only on a 9.0 device, and the PTX JIT-compiled for a
     * newer one is not 90a code */
    if (p64_wg < 0) {
        const char *v = getenv("DSPY_CUDA_PREFILL_WG");
        int *d = NULL, built = 0;
        cudaError_t e = cudaMalloc(&d, sizeof *d);
        if (e == cudaSuccess) {
            k_wg_built<<<1, 1, 0, cu_of(be)->stream>>>(d);
            e = cudaGetLastError();
            if (e == cudaSuccess)
                e = cudaMemcpyAsync(&built, d, sizeof built, cudaMemcpyDeviceToHost, cu_of(be)->stream);
            if (e == cudaSuccess) e = cudaStreamSynchronize(cu_of(be)->stream);
            cudaFree(d);
        }
        DSPY_TRY(dspy_cu_check(be, e, "attention prefill (asking the device code for sm_90a)"));
        p64_wg = built && !(v && atoi(v) == 0);
    }
    const size_t sm0 = p64_smem<64, 2>(), smw = sm0 + 1024;
    const struct {
        const void *k;
        size_t bytes;
    } p64[4] = {{(const void *)k_prefill64<64, 2, 3, false, false>, sm0},
                {(const void *)k_prefill64<64, 2, 3, true, false>, sm0},
                {(const void *)k_prefill64<64, 2, 3, false, true>, smw},
                {(const void *)k_prefill64<64, 2, 3, true, true>, smw}};
    for (int i = 0; i < 4; i++) {
        cudaError_t e = cudaFuncSetAttribute(p64[i].k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)p64[i].bytes);
        DSPY_TRY(dspy_cu_check(be, e, "attention prefill, head size 64 (shared memory)"));
    }
    /* this file's copy of the early-release bits (cuda.cuh: one per .cu file) */
    DSPY_TRY(dspy_cu_check(be, cu_release_set(cu_of(be)->release), "attention prefill (release flag)"));
    /* The prefill tiles take (HP + 4) x 64 x D BF16 of shared memory: 80 KiB for D = 128 and 48
     * KiB (plus the static tile index) for two heads of D = 64, above the default 48 KiB. */
    DSPY_TRY(dspy_cu_check(be, cudaFuncSetAttribute(k_attn_prefill<128, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               5 * 64 * 128 * 2),
                      "attention (shared memory)"));
    DSPY_TRY(dspy_cu_check(be, cudaFuncSetAttribute(k_attn_prefill<64, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               6 * 64 * 64 * 2),
                      "attention (shared memory)"));
    DSPY_TRY(dspy_cu_check(be, cudaFuncSetAttribute(k_attn_prefill<64, 2, 1, 3>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               6 * 64 * 64 * 2),
                      "attention (shared memory)"));
    return dspy_cu_check(be, cudaFuncSetAttribute(k_attn_prefill<64, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             5 * 64 * 64 * 2),
                    "attention (shared memory)");
}

dspy_status dspy_cu_attention_prefill(dspy_backend *be, bf16 *o, const bf16 *qq, const bf16 *kc, const bf16 *vc,
                                      const dspy_attn_meta *m, int NH, int NKV, int HS, float sl2) {
    const int G = NH / NKV, bs = m->block_size;
    int bsh = 0;
    while (bsh < 30 && (1 << bsh) < bs) bsh++;
    if (HS == 64 && G % 2 == 0 && (1 << bsh) == bs && p64_on)
        return launch_prefill64(be, o, qq, kc, vc, m, NH, NKV, bsh, sl2, prefill_splits(cu_of(be), m, NH), p64_wg == 1);
    /* two query heads per CTA where a KV group has an even number of them (D = 64 only: at 128
     * the doubled accumulators would not fit the registers) */
    if (HS == 64 && G % 2 == 0) switch (cu_of(be)->prefill_heads) {
        case 1: break;
        case 2: return launch_prefill<64, 2>(be, o, qq, kc, vc, m, NH, NKV, sl2);
        default: return launch_prefill<64, 2, 1, 3>(be, o, qq, kc, vc, m, NH, NKV, sl2);
        }
    if (HS == 64) return launch_prefill<64, 1>(be, o, qq, kc, vc, m, NH, NKV, sl2);
    return launch_prefill<128, 1>(be, o, qq, kc, vc, m, NH, NKV, sl2);
}
