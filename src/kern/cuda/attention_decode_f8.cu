/* attention_decode_f8.cu — the batch decode attention (attention_decode_batch.cu) reading an FP8
 * (E4M3) copy of the KV cache: head size 64, 3 or more sequences, up to 8 query heads per KV head.
 *
 * Why: at batch 16 the BF16 kernel runs ~10.6 us a layer (H200, 1,564 positions) with ~4 warps a
 * scheduler, each walking ~7 16-key groups whose chain (loads, S = Q K^T, the online softmax's
 * shuffles, P V) it cannot overlap; ncu: latency-bound, L2 at 19 %, DRAM at 15 %. With 1-byte
 * codes a lane's registers hold a 32-key group in the space of a 16-key BF16 one, so a warp walks
 * half as many groups (one softmax round and one table lookup per 32 keys) with the next group's
 * loads still in flight.
 *
 * The layout is the BF16 kernel's, twice (two 16-key halves h, keys kb + 16 h ..):
 *   K: lane (g, c) holds codes of dims [16 c, 16 c + 16) of key rows g, 8 + g of each half (one
 *      16-byte load a row); k-step t takes the codes' word t: its low pair -> F16 word 2t, its high
 *      pair -> word 2t + 1, matching the query's F16 words (dims 16 c + 4 t ..).
 *   V: lane (g, c) holds codes of dims [8 g, 8 g + 8) of value rows 2c, 2c + 1, 2c + 8, 2c + 9 of
 *      each half (8-byte loads); a byte permute pairs one dim of two keys, one conversion makes the
 *      F16 pair of the transposed A fragment.
 * E4M3 -> F16 is exact (every code is a normal or subnormal F16), so the products run as
 * m16n8k16 F16 MMAs with F32 accumulation: Q is rounded from BF16 to F16 (exact in range), P to
 * F16 (the BF16 kernel rounds it to BF16). Codes hold the cache values with no scale (E4M3's
 * range, +-448, saturating at the write).
 */
#include <cuda_fp8.h>

#include "kern/cuda/attention_decode.cuh"

/* The launch (attention_decode_batch.cu decides the CTAs' width and the slices, as for its own). */
dspy_status dspy_cu_attention_decode_f8(dspy_backend *be, bf16 *out, const bf16 *q, const uint8_t *k8, const uint8_t *v8,
                                        const dspy_attn_meta *m, int NH, int NKV, int S, bool wide, float sl2);

/* One lane's share of a 32-key group (keys kb .. kb + 31), codes. */
struct kv8_frag {
    uint4 k[4]; /* key rows g, 8 + g, 16 + g, 24 + g; dims [16 c, 16 c + 16) */
    uint2 v[8]; /* value rows 2c, 2c+1, 2c+8, 2c+9, then the same + 16; dims [8 g, 8 g + 8) */
};

/* A lane's columns in a cache row of NKV 64 codes. */
struct kv8_lane {
    const uint8_t *k, *v;
    int rs, bs, bsh, g, c;
};

static __device__ __forceinline__ kv8_lane kv8_lane_of(const uint8_t *kc, const uint8_t *vc, int bs, int NKV, int kvh,
                                                       int g, int c) {
    kv8_lane kl;
    kl.k = kc + kvh * 64 + c * 16, kl.v = vc + kvh * 64 + g * 8;
    kl.rs = NKV * 64, kl.bs = bs, kl.g = g, kl.c = c;
    kl.bsh = bs % 16 ? -1 : (bs & (bs - 1)) ? 0 : __ffs(bs) - 1;
    return kl;
}

/* The cache row of the first key of the 16-aligned run at kb (a multiple of 16 block size), else
 * -1 (rows looked up one by one). */
static __device__ __forceinline__ int row0_8(const kv8_lane &kl, const int32_t *__restrict__ table, int kb) {
    if (kl.bsh > 0) return table[kb >> kl.bsh] * kl.bs + (kb & (kl.bs - 1));
    return kl.bsh == 0 ? table[kb / kl.bs] * kl.bs + kb % kl.bs : -1;
}

/* The second half's first key: kb + 16, or where that half holds no key below L, the first
 * half's (its keys are masked; its table entry may not exist). */
static __device__ __forceinline__ int half1_kb(int kb, int L) { return kb + 16 < L ? kb + 16 : kb; }

/* The rows of half h (first key kh, first row r0 from row0_8 or -1): keys at or past L read key
 * L - 1 (masked later; a written row keeps NaN out of 0 * V). */
static __device__ __forceinline__ void load_half8(kv8_frag &f, int h, const kv8_lane &kl,
                                                  const int32_t *__restrict__ table, int r0, int kh, int L) {
    const int g = kl.g, c = kl.c;
    const int off[6] = {g, 8 + g, 2 * c, 2 * c + 1, 2 * c + 8, 2 * c + 9};
    int row[6];
    if (r0 >= 0) {
        const int lim = L - 1 - kh;
#pragma unroll
        for (int i = 0; i < 6; i++) row[i] = r0 + min(off[i], lim);
    } else {
#pragma unroll
        for (int i = 0; i < 6; i++) {
            const int j = min(kh + off[i], L - 1);
            row[i] = table[j / kl.bs] * kl.bs + j % kl.bs;
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) f.k[2 * h + r] = *(const uint4 *)(kl.k + (int64_t)row[r] * kl.rs);
#pragma unroll
    for (int r = 0; r < 4; r++) f.v[4 * h + r] = *(const uint2 *)(kl.v + (int64_t)row[2 + r] * kl.rs);
}

/* A 32-key group's two table lookups (r0 of each half), asked for ahead of its loads. */
struct grp8 {
    int r0, r1;
};

static __device__ __forceinline__ grp8 group8_rows(const kv8_lane &kl, const int32_t *__restrict__ table, int kb, int L) {
    grp8 r;
    r.r0 = row0_8(kl, table, kb), r.r1 = row0_8(kl, table, half1_kb(kb, L));
    return r;
}

static __device__ __forceinline__ void load_group8(kv8_frag &f, const kv8_lane &kl, const int32_t *__restrict__ table,
                                                   grp8 r, int kb, int L) {
    load_half8(f, 0, kl, table, r.r0, kb, L);
    load_half8(f, 1, kl, table, r.r1, half1_kb(kb, L), L);
}

static __device__ __forceinline__ uint32_t e4m3_pair_h(uint32_t x2) {
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)x2, __NV_E4M3);
    return (uint32_t)h.x | (uint32_t)h.y << 16;
}

static __device__ __forceinline__ uint32_t pack_f16(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *(uint32_t *)&v;
}

/* Attends one 32-key group: S per half (2 n-tiles of 8 keys), the online softmax over the
 * group's 8 scores of query g in this lane (max over the row's four lanes), O^T += V^T P^T per
 * half. qa: query row g's F16 A words per k-step (rows 8-15 zero). */
static __device__ __forceinline__ void attend_group8(const kv8_frag &f, const uint32_t (&qa)[4][2], float (&o)[4][4],
                                                     float &m, float &l, int kb, int L, int c, float sl2) {
    float s[2][2][4];
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
        for (int nt = 0; nt < 2; nt++) {
            float *d = s[h][nt];
            d[0] = d[1] = d[2] = d[3] = 0.0f;
            const uint4 kr = f.k[2 * h + nt];
#pragma unroll
            for (int t = 0; t < 4; t++) {
                const uint32_t w = word(kr, t);
                const uint32_t a[4] = {qa[t][0], 0u, qa[t][1], 0u};
                const uint32_t b[2] = {e4m3_pair_h(w & 0xffffu), e4m3_pair_h(w >> 16)};
                mma16816_f16(d, a, b);
            }
        }
    float mx = -INFINITY;
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int j = kb + 16 * h + 8 * nt + 2 * c + e;
                s[h][nt][e] = j < L ? s[h][nt][e] * sl2 : -INFINITY;
                mx = fmaxf(mx, s[h][nt][e]);
            }
    mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
    const float mnew = fmaxf(m, mx);
    const float mref = mnew == -INFINITY ? 0.0f : mnew;
    const float alpha = fast_exp2(m - mref);
    float sum = 0.0f;
    uint32_t pb[2][2];
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
        for (int nt = 0; nt < 2; nt++) {
            const float p0 = fast_exp2(s[h][nt][0] - mref), p1 = fast_exp2(s[h][nt][1] - mref);
            sum += p0 + p1;
            pb[h][nt] = pack_f16(p0, p1);
        }
    l = l * alpha + sum;
    m = mnew;
    const float a0 = __shfl_sync(FULL_MASK, alpha, 8 * c), a1 = __shfl_sync(FULL_MASK, alpha, 8 * c + 4);
#pragma unroll
    for (int mt = 0; mt < 4; mt++) o[mt][0] *= a0, o[mt][2] *= a0, o[mt][1] *= a1, o[mt][3] *= a1;
    /* m-tile mt: dims 8 g + 2 mt (row g) and the next (row g + 8): bytes 2 mt, 2 mt + 1 of a row's
     * 8 codes, in word mt / 2 */
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
        for (int mt = 0; mt < 4; mt++) {
            const uint32_t sel = mt % 2 ? 0x7362u : 0x5140u;
            const uint32_t x0 = mt < 2 ? f.v[4 * h].x : f.v[4 * h].y, x1 = mt < 2 ? f.v[4 * h + 1].x : f.v[4 * h + 1].y;
            const uint32_t x2 = mt < 2 ? f.v[4 * h + 2].x : f.v[4 * h + 2].y;
            const uint32_t x3 = mt < 2 ? f.v[4 * h + 3].x : f.v[4 * h + 3].y;
            const uint32_t p01 = __byte_perm(x0, x1, sel), p23 = __byte_perm(x2, x3, sel);
            const uint32_t a[4] = {e4m3_pair_h(p01 & 0xffffu), e4m3_pair_h(p01 >> 16), e4m3_pair_h(p23 & 0xffffu),
                                   e4m3_pair_h(p23 >> 16)};
            mma16816_f16(o[mt], a, pb[h]);
        }
}

/* Grid (nseg, NKV, S), W warps: attention_decode_batch.cu's k_attn_decode_batch with 32-key
 * groups of codes (the same slices, partials and combine). */
template <int W>
static __global__ __launch_bounds__(W * 32, W == 8 ? 2 : 1) void k_attn_decode_f8(
    bf16 *__restrict__ out, float *__restrict__ part, int *__restrict__ count, const bf16 *__restrict__ q,
    const uint8_t *__restrict__ kc, const uint8_t *__restrict__ vc, const dspy_attn_seg *__restrict__ segs,
    const int32_t *__restrict__ tables, int S, int bs, int NH, int NKV, int G, float sl2, int release) {
    constexpr int D = 64;
    __shared__ __align__(16) float o_sh[W][8][D];
    __shared__ float m_sh[W][8], l_sh[W][8], w_sh[W][8], den_sh[8], mfin_sh[8];
    __shared__ float sw_sh[16][DB_MAX_SPLITS], sl_sh[16][DB_MAX_SPLITS], dg_sh[16];
    __shared__ int row0_sh;
    __shared__ bool last_sh;
    const int split = blockIdx.z, kvh = blockIdx.y;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c = lane & 3;
    const kv8_lane kl = kv8_lane_of(kc, vc, bs, NKV, kvh, g, c);
    kv8_frag fa, fb;
    const int seg = blockIdx.x;
    const dspy_attn_seg sg = segs[seg];
    const int L = sg.pos0 + 1, NG = (L + 31) / 32;
    int per;
    const int S_eff = slices_of(NG, S, W, &per);
    if (split >= S_eff) return;
    const int g0 = split * per, g1 = min(NG, g0 + per);
    const int32_t *table = tables + sg.table_off;
    int gi = g0 + warp;
    /* groups holding only keys before pos0 (written by earlier steps) are asked for before the
     * dependency wait */
    const bool pre = gi < g1 && gi * 32 + 31 < sg.pos0;
    bool preb = pre && gi + W < g1 && (gi + W) * 32 + 31 < sg.pos0;
    if (pre) load_group8(fa, kl, table, group8_rows(kl, table, gi * 32, L), gi * 32, L);
    if (preb) load_group8(fb, kl, table, group8_rows(kl, table, (gi + W) * 32, L), (gi + W) * 32, L);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    if (release) asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
    if (gi < g1 && !pre) load_group8(fa, kl, table, group8_rows(kl, table, gi * 32, L), gi * 32, L);
    /* query row g (head kvh G + g), dims [16 c, 16 c + 16) as F16: k-step t takes words 2t, 2t + 1 */
    uint32_t qa[4][2];
    {
        uint4 qv[2];
        const uint4 *qp = (const uint4 *)(q + ((int64_t)sg.row0 * NH + kvh * G + g) * D + c * 16);
#pragma unroll
        for (int u = 0; u < 2; u++) qv[u] = g < G ? qp[u] : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
        for (int t = 0; t < 4; t++)
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const uint32_t w = word(qv[(2 * t + i) / 4], (2 * t + i) % 4);
                const float2 v = __bfloat1622float2(*(const __nv_bfloat162 *)&w);
                qa[t][i] = pack_f16(v.x, v.y);
            }
    }
    float o[4][4];
#pragma unroll
    for (int mt = 0; mt < 4; mt++) o[mt][0] = o[mt][1] = o[mt][2] = o[mt][3] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    int gl = gi + (preb ? 2 * W : W);
    grp8 rl = gl < g1 ? group8_rows(kl, table, gl * 32, L) : grp8{0, 0};
    while (gi < g1) {
        int gn = gi + W;
        if (gn < g1 && !preb) {
            load_group8(fb, kl, table, rl, gn * 32, L);
            gl = gn + W;
            if (gl < g1) rl = group8_rows(kl, table, gl * 32, L);
        }
        preb = false;
        attend_group8(fa, qa, o, m, l, gi * 32, L, c, sl2);
        gi = gn;
        if (gi >= g1) break;
        gn = gi + W;
        if (gn < g1) {
            load_group8(fa, kl, table, rl, gn * 32, L);
            gl = gn + W;
            if (gl < g1) rl = group8_rows(kl, table, gl * 32, L);
        }
        attend_group8(fb, qa, o, m, l, gi * 32, L, c, sl2);
        gi = gn;
    }
    l += __shfl_xor_sync(FULL_MASK, l, 1);
    l += __shfl_xor_sync(FULL_MASK, l, 2);
    if (c == 0) m_sh[warp][g] = m, l_sh[warp][g] = l;
#pragma unroll
    for (int mt = 0; mt < 4; mt++) {
        const int d = g * 8 + 2 * mt;
        *(float2 *)&o_sh[warp][2 * c][d] = make_float2(o[mt][0], o[mt][2]);
        *(float2 *)&o_sh[warp][2 * c + 1][d] = make_float2(o[mt][1], o[mt][3]);
    }
    __syncthreads();
    merge_warps<D, W>(m_sh, l_sh, w_sh, den_sh, mfin_sh, G);
    __syncthreads();
    const int64_t obase = ((int64_t)sg.row0 * NH + kvh * G) * D;
    if (S_eff == 1) {
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
    const int64_t pbase = ((int64_t)seg * NH + kvh * G) * S;
    for (int e = tid; e < G * D / 2; e += (W * 32)) {
        const int qq = e / (D / 2), d = 2 * (e % (D / 2));
        float nx = 0.0f, ny = 0.0f;
#pragma unroll
        for (int w = 0; w < W; w++) nx += w_sh[w][qq] * o_sh[w][qq][d], ny += w_sh[w][qq] * o_sh[w][qq][d + 1];
        *(float2 *)(part + (pbase + (int64_t)qq * S + split) * (D + 2) + d) = make_float2(nx, ny);
    }
    if (tid < G) {
        float *st = part + (pbase + (int64_t)tid * S + split) * (D + 2) + D;
        st[0] = mfin_sh[tid], st[1] = den_sh[tid];
    }
    __threadfence();
    __syncthreads();
    int *cnt = count + seg * NKV + kvh;
    if (tid == 0) last_sh = atomicAdd(cnt, 1) == S_eff - 1;
    __syncthreads();
    if (!last_sh) return;
    if (tid == 0) row0_sh = sg.row0;
    combine_rows<D, W>(out, part, cnt, seg, 1, &row0_sh, G, NH, kvh, S, S_eff, sw_sh, sl_sh, dg_sh);
}

dspy_status dspy_cu_attention_decode_f8(dspy_backend *be, bf16 *out, const bf16 *q, const uint8_t *k8, const uint8_t *v8,
                                        const dspy_attn_meta *m, int NH, int NKV, int S, bool wide, float sl2) {
    cuda_state *s = cu_of(be);
    const int rel = s->release & CU_REL_ATTENTION ? 1 : 0;
    const dim3 grid(m->nseg, NKV, S);
    const dspy_attn_seg *sg = (const dspy_attn_seg *)m->segs.data;
    const int32_t *tb = (const int32_t *)m->tables.data;
    const int bs = m->block_size, G = NH / NKV;
    if (wide)
        return cu_launch(be, "attention (decode batch, FP8 cache, 16 warps)", k_attn_decode_f8<16>, grid, 512, 0, out,
                         s->att_part, s->att_count, q, k8, v8, sg, tb, S, bs, NH, NKV, G, sl2, rel);
    return cu_launch(be, "attention (decode batch, FP8 cache)", k_attn_decode_f8<8>, grid, 256, 0, out, s->att_part,
                     s->att_count, q, k8, v8, sg, tb, S, bs, NH, NKV, G, sl2, rel);
}
