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
 * prefill kernels. With DSPY_CUDA_CASCADE=1 a call with a shared-prefix hint goes to
 * attention_decode_shared.cu instead (the same groups and merges, attention_decode.cuh), which
 * reads the shared keys once for a group of sequences; by default the hint is not used here
 * (every sequence reads the prefix itself, out of L2: measured faster).
 */
#include <stdlib.h>

#include "kern/cuda/attention_decode.cuh"
#include "kern/cuda/timeline.cuh"

TL_BIND_FN(dspy_cu_tl_bind_decode)

/* attention.cu's dispatch: whether this kernel takes a decode call, and the launch. */
bool dspy_cu_decode_batch_fits(dspy_backend *be, int nseg, int NH, int NKV, int HS);
dspy_status dspy_cu_attention_decode_batch(dspy_backend *be, bf16 *out, const bf16 *q, const bf16 *kc, const bf16 *vc,
                                           const dspy_attn_meta *m, int NH, int NKV, int HS, float scale_log2);

/* Attends one group: scores, the online softmax of query g (max over the four lanes of g; each
 * lane keeps its own part of the sum), and O^T += V^T P^T. qa: query row g's A fragments per
 * k-step (rows 8-15 are zero); o[mt]: O^T's accumulator of m-tile mt (dims g D/8 + 2 mt and the
 * next one, queries 2c and 2c + 1). */
template <int D>
static __device__ __forceinline__ void attend_group(const kv_frag<D> &f, const uint32_t (&qa)[D / 16][2],
                                                    float (&o)[D / 16][4], float &m, float &l, int kb, int L, int c,
                                                    float sl2) {
    float s[2][4];
    uint32_t a[D / 16][4]; /* rows 8-15 zero */
#pragma unroll
    for (int t = 0; t < D / 16; t++) a[t][0] = qa[t][0], a[t][1] = 0u, a[t][2] = qa[t][1], a[t][3] = 0u;
    group_scores<D>(f, a, s);
    float a0, a1;
    uint32_t pb[2];
    softmax_half(s, 0, true, kb, L, c, sl2, m, l, a0, a1, pb); /* rows 0-7: query g */
    pv_accumulate<D>(f, o, a0, a1, pb);
}

/* Grid (nseg, NKV, S). CTA (seg, kv head, slice) of W warps attends one sequence's keys: its NG
 * groups of 16 keys are cut into S_eff <= S slices (slices_of). Partials: part[((seg NH + h) S +
 * slice) (D + 2)] = D unnormalised outputs, the max (log2) and the sum. A sequence attended in one
 * slice writes out directly; otherwise the last of its CTAs to arrive (count[seg NKV + kvh])
 * combines its partials. Every count depends only on the metadata on the device, so a captured
 * graph replays with any context. */
template <int D, int W>
static __global__ __launch_bounds__(W * 32, W == 8 && D == 64 ? 2 : 1) void k_attn_decode_batch(
    bf16 *__restrict__ out, float *__restrict__ part, int *__restrict__ count, const bf16 *__restrict__ q,
    const bf16 *__restrict__ kc, const bf16 *__restrict__ vc, const dspy_attn_seg *__restrict__ segs,
    const int32_t *__restrict__ tables, int S, int bs, int NH, int NKV, int G, float sl2, int release, int pf) {
    __shared__ __align__(16) float o_sh[W][8][D];
    __shared__ float m_sh[W][8], l_sh[W][8], w_sh[W][8], den_sh[8], mfin_sh[8];
    __shared__ float sw_sh[16][DB_MAX_SPLITS], sl_sh[16][DB_MAX_SPLITS], dg_sh[16];
    __shared__ int row0_sh;
    __shared__ bool last_sh;
    TL_BEGIN(DSPY_TL_ATTN_DECODE);
    /* Before the dependency wait only the host-copied metadata and keys of earlier positions are
     * read: this step's key (position pos0) and q come from the kernel before. */
    const int split = blockIdx.z, kvh = blockIdx.y;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c = lane & 3;
    const kv_lane kl = kv_lane_of(kc, vc, bs, NKV, kvh, D, g, c);
    kv_frag<D> fa, fb;
    const int seg = blockIdx.x;
    const dspy_attn_seg sg = segs[seg];
    const int L = sg.pos0 + 1, NG = (L + 15) / 16;
    int per;
    const int S_eff = slices_of(NG, S, W, &per);
    if (split >= S_eff) return;
    const int g0 = split * per, g1 = min(NG, g0 + per);
    const int32_t *table = tables + sg.table_off;
    int gi = g0 + warp;
    /* both register sets' first groups are asked for before the wait where they hold only older
     * keys: two groups in flight while the kernel before finishes */
    const bool pre = gi < g1 && gi * 16 + 15 < sg.pos0;
    bool preb = pre && gi + W < g1 && (gi + W) * 16 + 15 < sg.pos0;
    if (pre) load_group<D>(fa, kl, table, gi * 16, L);
    if (preb) load_group<D>(fb, kl, table, (gi + W) * 16, L);
    TL_SLOT();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    if (release) asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
    TL_MARK(1);
    if (gi < g1 && !pre) load_group<D>(fa, kl, table, gi * 16, L);
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
    /* two register sets: the next group's loads are in flight while this one is attended; the
     * table entry of the group after it (rl, of group gl) is asked for right after them */
    int gl = gi + (preb ? 2 * W : W);
    int rl = gl < g1 ? group_row0(kl, table, gl * 16) : 0;
    while (gi < g1) {
        int gn = gi + W;
        if (gn < g1 && !preb) {
            load_group_at<D>(fb, kl, table, rl, gn * 16, L);
            gl = gn + W, rl = gl < g1 ? group_row0(kl, table, gl * 16) : 0;
        }
        preb = false;
        if (pf && gn + W < g1) prefetch_group<D>(kc, vc, table, bs, NKV, kvh, (gn + W) * 16, L, lane);
        attend_group<D>(fa, qa, o, m, l, gi * 16, L, c, sl2);
        gi = gn;
        if (gi >= g1) break;
        gn = gi + W;
        if (gn < g1) {
            load_group_at<D>(fa, kl, table, rl, gn * 16, L);
            gl = gn + W, rl = gl < g1 ? group_row0(kl, table, gl * 16) : 0;
        }
        if (pf && gn + W < g1) prefetch_group<D>(kc, vc, table, bs, NKV, kvh, (gn + W) * 16, L, lane);
        attend_group<D>(fb, qa, o, m, l, gi * 16, L, c, sl2);
        gi = gn;
    }
    TL_MARK(2);
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
    if (S_eff == 1) {
        for (int e = tid; e < G * D / 2; e += (W * 32)) {
            const int qq = e / (D / 2), d = 2 * (e % (D / 2));
            float nx = 0.0f, ny = 0.0f;
#pragma unroll
            for (int w = 0; w < W; w++) nx += w_sh[w][qq] * o_sh[w][qq][d], ny += w_sh[w][qq] * o_sh[w][qq][d + 1];
            const float inv = 1.0f / den_sh[qq];
            *(__nv_bfloat162 *)(out + obase + (int64_t)qq * D + d) = __floats2bfloat162_rn(nx * inv, ny * inv);
        }
        TL_END();
        return;
    }
    /* this slice's partial, then the last of the sequence's CTAs to arrive combines them */
    const int64_t pbase = ((int64_t)seg * NH + kvh * G) * S; /* partial of (query qq, slice sp): pbase + qq S + sp */
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
    if (!last_sh) {
        TL_END();
        return;
    }
    if (tid == 0) row0_sh = sg.row0;
    combine_rows<D, W>(out, part, cnt, seg, 1, &row0_sh, G, NH, kvh, S, S_eff, sw_sh, sl_sh, dg_sh);
    TL_END();
}

/* DSPY_CUDA_DEC_BATCH: 0 leaves every decode call on attention.cu's split-K kernel (for
 * comparisons); n > 0 aims at n CTAs an SM (default: 2 CTAs of 8 warps at head size 64, 1 at 128:
 * the registers of two 16-key groups in flight per warp; 1 CTA of 16 warps where db_wide says).
 * DSPY_CUDA_DEC_BATCH_WARPS=16 / =8: CTAs of 16 / 8 warps at head size 64 whatever the batch.
 * Read once per process. DSPY_CUDA_DEC_BATCH_PF=1: each warp also asks L2 for the group after its
 * next one.
 */
static int db_knob = -1, db_warps = 0, db_pf = 0;

static void db_init(void) {
    if (db_knob >= 0) return;
    const char *v = getenv("DSPY_CUDA_DEC_BATCH"), *w = getenv("DSPY_CUDA_DEC_BATCH_WARPS");
    db_warps = w && (atoi(w) == 16 || atoi(w) == 8) ? atoi(w) : 0;
    db_pf = getenv("DSPY_CUDA_DEC_BATCH_PF") && atoi(getenv("DSPY_CUDA_DEC_BATCH_PF")) == 1;
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

/* Slices per sequence at per_sm CTAs an SM: a function of nseg only (and of the device and the
 * planned partials), so a captured graph replays with any context lengths. */
static int db_splits(const cuda_state *s, int nseg, int NH, int NKV, int HS, int per_sm) {
    int S = per_sm * s->sm_count / (nseg * NKV);
    S = S < 1 ? 1 : S > DB_MAX_SPLITS ? DB_MAX_SPLITS : S;
    /* one slice needs no partials */
    if ((size_t)S > db_slots(s, nseg, NH, HS) || (size_t)nseg * NKV > s->att_count_n) S = 1;
    return S;
}

dspy_status dspy_cu_attention_decode_batch(dspy_backend *be, bf16 *out, const bf16 *q, const bf16 *kc, const bf16 *vc,
                                           const dspy_attn_meta *m, int NH, int NKV, int HS, float sl2) {
    cuda_state *s = cu_of(be);
    if (m->shared.data && dspy_cu_decode_shared_fits(be, m->nseg, NKV))
        return dspy_cu_attention_decode_shared(be, out, q, kc, vc, m, NH, NKV, HS, sl2);
    const bool wide = db_wide(s, m->nseg, NKV, HS);
    const int S = db_splits(s, m->nseg, NH, NKV, HS, db_ctas_per_sm(HS, wide));
    const int rel = s->release & CU_REL_ATTENTION ? 1 : 0;
    const dim3 grid(m->nseg, NKV, S);
    const dspy_attn_seg *sg = (const dspy_attn_seg *)m->segs.data;
    const int32_t *tb = (const int32_t *)m->tables.data;
    const int bs = m->block_size, G = NH / NKV;
    if (wide)
        return cu_launch(be, "attention (decode batch, HS 64, 16 warps)", k_attn_decode_batch<64, 16>, grid, 512, 0,
                         out, s->att_part, s->att_count, q, kc, vc, sg, tb, S, bs, NH, NKV, G, sl2, rel, db_pf);
    if (HS == 64)
        return cu_launch(be, "attention (decode batch, HS 64)", k_attn_decode_batch<64, 8>, grid, 256, 0, out,
                         s->att_part, s->att_count, q, kc, vc, sg, tb, S, bs, NH, NKV, G, sl2, rel, db_pf);
    return cu_launch(be, "attention (decode batch, HS 128)", k_attn_decode_batch<128, 8>, grid, 256, 0, out,
                     s->att_part, s->att_count, q, kc, vc, sg, tb, S, bs, NH, NKV, G, sl2, rel, db_pf);
}
