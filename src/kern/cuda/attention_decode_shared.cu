/* attention_decode_shared.cu — kern/ops.h attention for decode steps of 3 or more sequences that
 * carry a shared-prefix hint (dspy_attn_meta.shared: the first `len` positions of sequences
 * 0 .. n - 1 are the same cache blocks, as the prefix cache gives the evaluation's requests).
 * attention_decode_batch.cu sends such calls here with DSPY_CUDA_CASCADE=1 (opt-in: it measured
 * slower than reading the prefix once a sequence; see the knob below).
 *
 * Why it exists: B2's decode steps attend 16 sequences of ~1,560 positions of which ~1,300 are the shared
 * system prompt. Read once a sequence, that is ~49 MB a layer through L2 (13 us a layer on the
 * H200, ~4 TB/s, each warp six 16-key groups in a row). Here one CTA serves a group of R = 2 (8 /
 * G) sequences (16 query rows: rows 0-7 the G heads of sequences 0 .. R/2 - 1, rows 8-15 of the
 * rest) and reads each shared 16-key group once for all R, with the 16-row MMA of
 * attention_decode_batch.cu: S = Q K^T for all 16 rows, each half (8 rows) its own online softmax
 * and O^T += V^T P^T. A group of one sequence's own keys (after the prefix) runs the same MMA with
 * every other sequence's rows masked and only that sequence's half updated: the tensor cores have
 * room, the bytes are what count. At 16 sequences, G = 4: 4 groups of 4, the shared keys read 4
 * times instead of 16 (~19 MB a layer).
 *
 * The work of a CTA is a list of items — the shared groups (if any sequence of the group shares),
 * then each sequence's own groups — cut into Z slices along the list (slices_of), so every CTA
 * gets about the same number of groups; warp w takes items w, w + W, ... of its slice. Rows of a
 * slice that saw no key keep max -inf, sum 0 (masked softmax: no NaN). A group attended in one
 * slice writes out directly; otherwise every slice writes its partial for all R sequences and the
 * last CTA of the group to arrive combines them, all rows in one pass. Z depends only on the
 * number of sequences, and every count on the metadata on the device: a captured graph replays
 * with any contexts and hint. The math is the CPU reference's (kern/cpu/attention.c); only the
 * order of the sums differs from the unhinted kernel.
 *
 * Why it loses (ncu on the H200, batch 16): neither kernel is bandwidth-bound (L2 ~19 % of its
 * peak in both); each is a chain of dependent memory round trips a warp. Two or three items a
 * warp here against six there, but the partials, the fence, the arrival counter and the combine
 * add round trips of their own (21.2 us against 17.4 us a layer at ncu's base clock). Merging
 * the slices in a thread-block cluster over DSMEM instead won at batch 4 (161 against 211 us a
 * step) and lost at 16 (375 us: clusters of four full-SM CTAs wait for free SMs together).
 */
#include <stdlib.h>

#include "kern/cuda/attention_decode.cuh"

/* Attends one 16-key group for the 16 query rows of qa (A fragments of k-step t: row g's words
 * 2t and 2t + 1, row g + 8's the same), updating the softmax states of the halves in `halves`
 * (bit h: rows 8h .. 8h + 7; warp-uniform). ok[h]: whether this lane's row g of half h takes
 * these keys; keys at or past L are masked. A half whose rows all stay masked keeps m = -inf,
 * l = 0, o = 0. The S accumulator's elements 2h, 2h + 1 are P^T's B fragment for half h. */
template <int D>
static __device__ __forceinline__ void attend_rows(const kv_frag<D> &f, const uint32_t (&qa)[D / 16][4],
                                                   float (&o)[2][D / 16][4], float (&m)[2], float (&l)[2], int halves,
                                                   const bool (&ok)[2], int kb, int L, int c, float sl2) {
    float s[2][4];
    group_scores<D>(f, qa, s);
#pragma unroll
    for (int h = 0; h < 2; h++) {
        if (!(halves >> h & 1)) continue;
        float a0, a1;
        uint32_t pb[2];
        softmax_half(s, h, ok[h], kb, L, c, sl2, m[h], l[h], a0, a1, pb);
        pv_accumulate<D>(f, o[h], a0, a1, pb);
    }
}

/* A group's sequences (R <= 16) as the CTA sees them, in shared memory. */
struct group_info {
    int cum[17];   /* cum[j]: items of sequences 0 .. j - 1's own keys; cum[nq]: all of them */
    int gs[16];    /* sequence j's first own group: Ls / 16 for a sharer, else 0 */
    int len[16];   /* its keys (pos0 + 1) */
    int toff[16];  /* its block table's offset */
    int row0[16];  /* its row of q and out */
    int bits;      /* bit j: sequence j takes the shared keys */
};

/* Item i of a group's list: the shared group i (j = -1, keys < Ls of the first sharer's table),
 * or one of sequence j's own groups. */
static __device__ __forceinline__ void item_of(const group_info &gi, int nq, int Gsh, int Ls,
                                               const int32_t *__restrict__ tables, const int32_t *shtab, int i, int &j,
                                               const int32_t *&tab, int &kb, int &L) {
    if (i < Gsh) {
        j = -1, tab = shtab, kb = 16 * i, L = Ls;
        return;
    }
    const int r = i - Gsh;
    j = 0;
    while (j + 1 < nq && gi.cum[j + 1] <= r) j++;
    tab = tables + gi.toff[j], kb = 16 * (gi.gs[j] + r - gi.cum[j]), L = gi.len[j];
}

/* Grid (ceil(nseg / R), NKV, Z), W warps, one register set: the next item is asked of L2 while
 * one is attended (two sets spill at 16 warps; 12 warps with two sets measured no faster).
 * Partials: part[((seq NH + h) Z + slice) (D + 2)] as attention_decode_batch.cu's, combined by
 * the last CTA of the group to arrive. */
template <int D, int W>
static __global__ __launch_bounds__(W * 32, 1) void k_attn_decode_shared(
    bf16 *__restrict__ out, float *__restrict__ part, int *__restrict__ count, const bf16 *__restrict__ q,
    const bf16 *__restrict__ kc, const bf16 *__restrict__ vc, const dspy_attn_seg *__restrict__ segs,
    const int32_t *__restrict__ tables, const int32_t *__restrict__ shared, int nseg, int Z, int bs, int NH, int NKV,
    int G, float sl2, int release) {
    __shared__ __align__(16) float o_sh[W][8][D];
    __shared__ float m_sh[W][8], l_sh[W][8], w_sh[W][8], den_sh[8], mfin_sh[8];
    __shared__ float sw_sh[16][DB_MAX_SPLITS], sl_sh[16][DB_MAX_SPLITS], dg_sh[16];
    __shared__ group_info gi;
    __shared__ bool last_sh;
    const int spr = 8 / G, R = 2 * spr, sbase = blockIdx.x * R, kvh = blockIdx.y, z = blockIdx.z;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c = lane & 3;
    const kv_lane kl = kv_lane_of(kc, vc, bs, NKV, kvh, D, g, c);
    const int nq = min(R, nseg - sbase);
    /* Before the dependency wait only the host-copied metadata and keys of earlier positions are
     * read: this step's key (position pos0) and q come from the kernel before. */
    int ns = min(shared[0], nseg), Ls = shared[1] & ~15;
    if (ns <= 0 || Ls <= 0) ns = 0, Ls = 0;
    if (tid < nq) {
        const dspy_attn_seg sg = segs[sbase + tid];
        /* a sharer: named by the hint and longer than the shared keys (a hint that breaks its
         * promise for one sequence only leaves that one out) */
        const bool sharer = sbase + tid < ns && Ls <= sg.pos0;
        gi.gs[tid] = sharer ? Ls / 16 : 0;
        gi.len[tid] = sg.pos0 + 1, gi.toff[tid] = sg.table_off, gi.row0[tid] = sg.row0;
        gi.cum[tid + 1] = (sg.pos0 + 16) / 16 - gi.gs[tid]; /* this sequence's own groups, summed below */
    }
    __syncthreads();
    if (tid == 0) {
        int cum = 0, bits = 0;
        for (int j = 0; j < nq; j++) {
            const int own = gi.cum[j + 1];
            gi.cum[j] = cum, cum += own;
            bits |= gi.gs[j] ? 1 << j : 0;
        }
        gi.cum[nq] = cum, gi.bits = bits;
    }
    __syncthreads();
    const int bits = gi.bits, Gsh = bits ? Ls / 16 : 0, I = Gsh + gi.cum[nq];
    int per;
    const int Zeff = slices_of(I, Z, W, &per);
    if (z >= Zeff) return;
    const int i0 = z * per, i1 = min(I, i0 + per);
    const int32_t *shtab = tables + (bits ? gi.toff[__ffs(bits) - 1] : 0);
    /* this lane's rows g and g + 8: sequence rs[h] of the group (-1: a padding row) */
    int rs[2];
    bool ok_sh[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        rs[h] = g / G < spr && h * spr + g / G < nq ? h * spr + g / G : -1;
        ok_sh[h] = rs[h] >= 0 && (bits >> rs[h] & 1);
    }
    const int lowmask = (1 << spr) - 1, halves_sh = (bits & lowmask ? 1 : 0) | (bits >> spr ? 2 : 0);
    kv_frag<D> fa;
    int i = i0 + warp, j, kb, L;
    const int32_t *tab;
    bool pre = false;
    if (i < i1) {
        item_of(gi, nq, Gsh, Ls, tables, shtab, i, j, tab, kb, L);
        pre = j < 0 || kb + 16 < L; /* every key of the group before the new one */
        if (pre) load_group<D>(fa, kl, tab, kb, L);
    }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    if (release) asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
    if (i < i1 && !pre) load_group<D>(fa, kl, tab, kb, L);
    /* rows g and g + 8: head kvh G + g % G of sequences rs[0] and rs[1] */
    uint32_t qa[D / 16][4];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        uint4 qv[D / 32];
        const uint4 *qp =
            rs[h] >= 0 ? (const uint4 *)(q + ((int64_t)gi.row0[rs[h]] * NH + kvh * G + g % G) * D + c * (D / 4))
                       : nullptr;
#pragma unroll
        for (int u = 0; u < D / 32; u++) qv[u] = rs[h] >= 0 ? qp[u] : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
        for (int t = 0; t < D / 16; t++)
            qa[t][h] = word(qv[(2 * t) / 4], (2 * t) % 4), qa[t][2 + h] = word(qv[(2 * t + 1) / 4], (2 * t + 1) % 4);
    }
    float o[2][D / 16][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
        for (int mt = 0; mt < D / 16; mt++) o[h][mt][0] = o[h][mt][1] = o[h][mt][2] = o[h][mt][3] = 0.0f;
    /* one item: the shared keys for every sharer's rows, or sequence j's own for its rows */
    auto attend = [&](const kv_frag<D> &f, int ji, int kbi, int Li) {
        if (ji < 0) {
            attend_rows<D>(f, qa, o, m, l, halves_sh, ok_sh, kbi, Li, c, sl2);
        } else {
            const bool okj[2] = {rs[0] == ji, rs[1] == ji};
            attend_rows<D>(f, qa, o, m, l, 1 << (ji / spr), okj, kbi, Li, c, sl2);
        }
    };
    while (i < i1) {
        int jn = 0, kbn = 0, Ln = 0;
        const int32_t *tn = tab;
        if (i + W < i1) {
            item_of(gi, nq, Gsh, Ls, tables, shtab, i + W, jn, tn, kbn, Ln);
            prefetch_group<D>(kc, vc, tn, bs, NKV, kvh, kbn, Ln, lane);
        }
        attend(fa, j, kb, L);
        i += W;
        if (i >= i1) break;
        j = jn, kb = kbn, L = Ln, tab = tn;
        load_group<D>(fa, kl, tab, kb, L);
    }
    /* the warps' states merged a half at a time; out directly (one slice) or this slice's partial */
#pragma unroll
    for (int h = 0; h < 2; h++) {
        if (h * spr >= nq) break; /* block-uniform */
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
            const int col = e / (D / 2), d = 2 * (e % (D / 2)), sj = h * spr + col / G;
            if (col / G >= spr || sj >= nq) continue;
            float nx = 0.0f, ny = 0.0f;
#pragma unroll
            for (int w = 0; w < W; w++) nx += w_sh[w][col] * o_sh[w][col][d], ny += w_sh[w][col] * o_sh[w][col][d + 1];
            if (Zeff == 1) {
                const float inv = 1.0f / den_sh[col];
                *(__nv_bfloat162 *)(out + ((int64_t)gi.row0[sj] * NH + kvh * G + col % G) * D + d) =
                    __floats2bfloat162_rn(nx * inv, ny * inv);
            } else {
                const int64_t pr = ((int64_t)(sbase + sj) * NH + kvh * G + col % G) * Z + z;
                *(float2 *)(part + pr * (D + 2) + d) = make_float2(nx, ny);
            }
        }
        if (Zeff > 1 && tid < 8 && tid / G < spr && h * spr + tid / G < nq) {
            const int64_t pr = ((int64_t)(sbase + h * spr + tid / G) * NH + kvh * G + tid % G) * Z + z;
            part[pr * (D + 2) + D] = mfin_sh[tid], part[pr * (D + 2) + D + 1] = den_sh[tid];
        }
        __syncthreads(); /* o_sh and the merged weights are rewritten by the next half */
    }
    if (Zeff == 1) return;
    __threadfence();
    __syncthreads();
    int *cnt = count + blockIdx.x * NKV + kvh;
    if (tid == 0) last_sh = atomicAdd(cnt, 1) == Zeff - 1;
    __syncthreads();
    if (!last_sh) return;
    combine_rows<D, W>(out, part, cnt, sbase, nq, gi.row0, G, NH, kvh, Z, Zeff, sw_sh, sl_sh, dg_sh);
}

/* DSPY_CUDA_CASCADE=1 sends hinted calls here, n > 1 with n slices a group instead of the default
 * (about one CTA an SM over all groups and KV heads); unset or 0 leaves them to
 * attention_decode_batch.cu, every sequence reading the shared keys itself, which measured
 * faster (H200, FP8 decode step at 1,564 positions of which 1,296 shared, attention's cost in the
 * step: batch 16 191 us there against 236 us here, batch 4 132 against 211, batch 12 192 against
 * 220; bench/RESULTS.md, fourteenth session). Read once per process. */
static int sh_knob = -1;

static void sh_init(void) {
    if (sh_knob >= 0) return;
    const char *v = getenv("DSPY_CUDA_CASCADE");
    sh_knob = v ? atoi(v) : 0;
    if (sh_knob < 0 || sh_knob > DB_MAX_SPLITS) sh_knob = 0;
}

bool dspy_cu_decode_shared_fits(dspy_backend *be, int nseg, int NKV) {
    sh_init();
    return sh_knob > 0 && (size_t)nseg * NKV <= cu_of(be)->att_count_n;
}

dspy_status dspy_cu_attention_decode_shared(dspy_backend *be, bf16 *out, const bf16 *q, const bf16 *kc, const bf16 *vc,
                                            const dspy_attn_meta *m, int NH, int NKV, int HS, float sl2) {
    cuda_state *s = cu_of(be);
    const int G = NH / NKV, R = 2 * (8 / G), groups = (m->nseg + R - 1) / R;
    /* slices: a function of nseg only (a captured graph replays with any context); one slice
     * needs no partials */
    int Z = sh_knob > 1 ? sh_knob : s->sm_count / (groups * NKV);
    Z = Z < 1 ? 1 : Z > DB_MAX_SPLITS ? DB_MAX_SPLITS : Z;
    const size_t fit = db_slots(s, m->nseg, NH, HS);
    if ((size_t)Z > fit) Z = fit > 0 ? (int)fit : 1;
    const dim3 grid(groups, NKV, Z);
    const int rel = s->release & CU_REL_ATTENTION ? 1 : 0, bs = m->block_size, n = m->nseg;
    const dspy_attn_seg *sg = (const dspy_attn_seg *)m->segs.data;
    const int32_t *tb = (const int32_t *)m->tables.data, *sh = (const int32_t *)m->shared.data;
    if (HS == 64)
        return cu_launch(be, "attention (decode, shared prefix, HS 64)", k_attn_decode_shared<64, 16>, grid, 512, 0,
                         out, s->att_part, s->att_count, q, kc, vc, sg, tb, sh, n, Z, bs, NH, NKV, G, sl2, rel);
    return cu_launch(be, "attention (decode, shared prefix, HS 128)", k_attn_decode_shared<128, 8>, grid, 256, 0, out,
                     s->att_part, s->att_count, q, kc, vc, sg, tb, sh, n, Z, bs, NH, NKV, G, sl2, rel);
}
