/* attention.cu — causal GQA attention over the paged BF16 KV cache (kern/ops.h attention).
 *
 * Two kernels here, and the prefill's in attention_prefill.cu (flash attention on the tensor
 * cores for head size 64 or 128, any segment lengths):
 *   - decode (every segment one row, head size 64 or 128, up to 8 query heads per KV head):
 *     split-K flash decoding. A CTA takes one sequence, one KV head (all its query heads, so K
 *     and V are read once per group) and one slice of the context; the last CTA of a group to
 *     finish combines the slices with their max/sum statistics (no second kernel). The number
 *     of slices depends only on the number of sequences, so a captured graph replays with any
 *     context length.
 *   - a generic kernel (any head size, any row counts): one warp per (row, head), online
 *     softmax, F32 throughout. Used for the shapes the fast kernels do not take.
 * The math is the CPU reference's (kern/cpu/attention.c): scores q.k / sqrt(HS), max-subtracted
 * softmax, weighted sum of v — with BF16 inputs and F32 accumulation.
 */
#include <cooperative_groups.h>
#include <math.h>

#include "kern/cuda/cuda.cuh"
#include "kern/cuda/mma.cuh"

#define LOG2E 1.4426950408889634f

/* attention_prefill.cu: the shared-memory limits of the prefill kernels (once per backend), and
 * the prefill launch for HS 64 or 128 (scale_log2 = log2(e) / sqrt(HS)). */
dspy_status dspy_cu_attention_prefill_setup(dspy_backend *be);
dspy_status dspy_cu_attention_prefill(dspy_backend *be, bf16 *out, const bf16 *q, const bf16 *kc, const bf16 *vc,
                                      const dspy_attn_meta *m, int NH, int NKV, int HS, float scale_log2);
/* attention_decode_batch.cu: decode steps of 3 or more sequences on the tensor cores. */
bool dspy_cu_decode_batch_fits(dspy_backend *be, int nseg, int NH, int NKV, int HS);
dspy_status dspy_cu_attention_decode_batch(dspy_backend *be, bf16 *out, const bf16 *q, const bf16 *kc, const bf16 *vc,
                                           const dspy_attn_meta *m, int NH, int NKV, int HS, float scale_log2);

/* ---- decode: split-K over the context ------------------------------------------------------ */

enum { DEC_THREADS = 128, DEC_MAX_GROUP = 8, DEC_MAX_SPLITS = 32 };

int dspy_cu_decode_splits(const cuda_state *s, int nseg, int NKV) {
    int work = nseg * NKV, want = (2 * s->sm_count + work - 1) / work;
    return want < 1 ? 1 : want > DEC_MAX_SPLITS ? DEC_MAX_SPLITS : want;
}

size_t dspy_cu_decode_part_floats(const cuda_state *s, int max_seqs, int NH, int NKV, int HS) {
    size_t best = 0;
    for (int n = 1; n <= max_seqs; n++) {
        size_t v = (size_t)n * (size_t)dspy_cu_decode_splits(s, n, NKV);
        if (v > best) best = v;
    }
    return best * (size_t)NH * (size_t)(HS + 2);
}

/* Grid (nseg, NKV, S). A sequence of L positions uses S_eff = min(S, ceil(L / min_keys)) slices
 * (min_keys: DSPY_CUDA_DEC_MIN_KEYS, default 32; the others exit at once), so short contexts are
 * not spread thin while the grid stays fixed for a captured graph. The CTA (seg, kv head, slice) attends its slice for the G query heads of the
 * group: per tile of 128 keys, each thread scores one key against the G heads (its key row in
 * registers) and stages that key's value row in shared memory; the statistics are updated per
 * head by a warp; then each thread accumulates its (head, dim) outputs from shared memory. It
 * writes part[((seg * NH + h) * S + slice) * (D + 2)] = D unnormalised outputs, the running max
 * (log2 domain) and sum. The CTA that arrives last for (seg, kv head) — an atomic counter, reset
 * by that CTA for the next launch — combines the slices into out, loading every slice's
 * statistics at once and the outputs with independent loads.
 * CL > 0 (16): grid (nseg, NKV, CL) in clusters of CL blocks along z, every block a slice (empty
 * slices contribute nothing); each leaves its partial in its own shared memory and, after one
 * cluster barrier, every block combines CL-th of the group's outputs reading the others' shared
 * memory (no global partials, fence, atomic or second pass through L2). */
template <int D, int G, int CL = 0>
static __global__ __launch_bounds__(DEC_THREADS) void k_attn_decode(bf16 *__restrict__ out, float *__restrict__ part,
                                                             int *__restrict__ count, const bf16 *__restrict__ q,
                                                             const bf16 *__restrict__ kc, const bf16 *__restrict__ vc,
                                                             const dspy_attn_seg *__restrict__ segs,
                                                             const int32_t *__restrict__ tables, int bs, int NH,
                                                             int NKV, float scale_log2, int min_keys) {
    constexpr int PAIRS = G * D / 2, PER = (PAIRS + DEC_THREADS - 1) / DEC_THREADS; /* output pairs per thread */
    __shared__ __align__(16) float qs[G][D];
    __shared__ float sc[G][DEC_THREADS];
    __shared__ __align__(16) bf16 vs[DEC_THREADS][D];
    __shared__ float alpha_s[G];
    __shared__ float w_s[G][DEC_MAX_SPLITS], l_s[G][DEC_MAX_SPLITS], den_s[G];
    __shared__ bool s_last;
    /* Before griddep_wait: the step metadata (copied from the host before the step's first
     * kernel) and the keys and values of earlier positions (written by earlier steps) — only
     * position pos0, this step's token, comes from the kernel before this one. */
    const int S = gridDim.z, split = blockIdx.z, kvh = blockIdx.y;
    const dspy_attn_seg sg = segs[blockIdx.x];
    const int L = sg.pos0 + 1, S_eff = CL ? CL : min(S, (L + min_keys - 1) / min_keys);
    if (split >= S_eff) return; /* never with CL: every block of a cluster reaches its barriers */
    const int chunk = (L + S_eff - 1) / S_eff, k0 = split * chunk, k1 = min(L, k0 + chunk);
    const int32_t *table = tables + sg.table_off;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    uint4 kv[D / 8]; /* this thread's key row of the current tile */
    /* the cache rows of key j (a block-table lookup: one dependent load) */
    auto key_rows = [&](int j, const uint4 **kr, const uint4 **vr) {
        int64_t slot = (int64_t)table[j / bs] * bs + j % bs;
        *kr = (const uint4 *)(kc + (slot * NKV + kvh) * D);
        *vr = (const uint4 *)(vc + (slot * NKV + kvh) * D);
    };
    /* key j into kv (registers) and its value row into vs[tid] */
    auto load_key = [&](int j) {
        const uint4 *kr, *vr;
        key_rows(j, &kr, &vr);
#pragma unroll
        for (int c = 0; c < D / 8; c++) kv[c] = kr[c];
#pragma unroll
        for (int c = 0; c < D / 8; c++) ((uint4 *)vs[tid])[c] = vr[c];
    };
    /* The first tile: the older keys are loaded before the wait (their latency overlaps the
     * previous kernel), and so is the block-table lookup of this step's key, so that after the
     * wait only its rows (just written by attn_in) are fetched, issued together with the query
     * loads and before anything waits on either: the block holding this step's key is the last
     * of its group to finish, and it used to wait three dependent round trips (q, table, k/v). */
    const int j0 = k0 + tid;
    const uint4 *kr0 = NULL, *vr0 = NULL;
    if (j0 < k1) key_rows(j0, &kr0, &vr0);
    const bool pre = j0 < k1 && j0 < sg.pos0, cur = j0 < k1 && !pre;
    if (pre) {
#pragma unroll
        for (int c = 0; c < D / 8; c++) kv[c] = kr0[c];
#pragma unroll
        for (int c = 0; c < D / 8; c++) ((uint4 *)vs[tid])[c] = vr0[c];
    }
    griddep_wait(CU_REL_ATTENTION);
    uint4 vcur[D / 8];
    if (cur) {
#pragma unroll
        for (int c = 0; c < D / 8; c++) kv[c] = kr0[c], vcur[c] = vr0[c];
    }
    for (int i = tid; i < G * D; i += DEC_THREADS)
        qs[i / D][i % D] = bf2f(q[((int64_t)sg.row0 * NH + kvh * G + i / D) * D + i % D]) * scale_log2;
    if (cur) {
#pragma unroll
        for (int c = 0; c < D / 8; c++) ((uint4 *)vs[tid])[c] = vcur[c];
    }
    float2 acc[PER];
#pragma unroll
    for (int i = 0; i < PER; i++) acc[i] = make_float2(0.0f, 0.0f);
    float mg[2] = {-INFINITY, -INFINITY}, lg[2] = {0.0f, 0.0f}; /* statistics of heads warp and warp + 4 */
    __syncthreads();
    for (int kb = k0; kb < k1; kb += DEC_THREADS) {
        int j = kb + tid;
        if (j < k1) {
            if (kb != k0) load_key(j);
            float dots[G];
#pragma unroll
            for (int g = 0; g < G; g++) dots[g] = 0.0f;
#pragma unroll
            for (int c = 0; c < D / 8; c++) {
                const __nv_bfloat162 *kp = (const __nv_bfloat162 *)&kv[c];
                float2 k0f = __bfloat1622float2(kp[0]), k1f = __bfloat1622float2(kp[1]);
                float2 k2f = __bfloat1622float2(kp[2]), k3f = __bfloat1622float2(kp[3]);
#pragma unroll
                for (int g = 0; g < G; g++) {
                    float4 qa = *(const float4 *)&qs[g][c * 8], qb = *(const float4 *)&qs[g][c * 8 + 4];
                    dots[g] += qa.x * k0f.x + qa.y * k0f.y + qa.z * k1f.x + qa.w * k1f.y + qb.x * k2f.x +
                               qb.y * k2f.y + qb.z * k3f.x + qb.w * k3f.y;
                }
            }
#pragma unroll
            for (int g = 0; g < G; g++) sc[g][tid] = dots[g];
        } else {
#pragma unroll
            for (int g = 0; g < G; g++) sc[g][tid] = -INFINITY;
        }
        __syncthreads();
        /* warp w updates the statistics of heads w and w + 4 */
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            int g = warp + 4 * hh;
            if (g >= G) continue;
            float v0 = sc[g][lane], v1 = sc[g][lane + 32], v2 = sc[g][lane + 64], v3 = sc[g][lane + 96];
            float mx = fmaxf(fmaxf(v0, v1), fmaxf(v2, v3));
            for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            float mnew = fmaxf(mg[hh], mx); /* finite: the tile has at least one valid key */
            float p0 = fast_exp2(v0 - mnew), p1 = fast_exp2(v1 - mnew), p2 = fast_exp2(v2 - mnew), p3 = fast_exp2(v3 - mnew);
            sc[g][lane] = p0, sc[g][lane + 32] = p1, sc[g][lane + 64] = p2, sc[g][lane + 96] = p3;
            float sum = p0 + p1 + p2 + p3;
            for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            float al = fast_exp2(mg[hh] - mnew);
            lg[hh] = lg[hh] * al + sum;
            mg[hh] = mnew;
            if (lane == 0) alpha_s[g] = al;
        }
        __syncthreads();
        const int nk = min(DEC_THREADS, k1 - kb);
#pragma unroll
        for (int i = 0; i < PER; i++) {
            int idx = tid + i * DEC_THREADS; /* output pair (g, dims 2dp, 2dp+1) */
            if (idx >= PAIRS) continue;
            int g = idx / (D / 2), dp = idx % (D / 2);
            /* four independent sums, so the shared-memory loads pipeline instead of queueing
             * behind one FMA chain */
            float2 a0 = make_float2(0, 0), a1 = a0, a2 = a0, a3 = a0;
            int jj = 0;
            for (; jj + 4 <= nk; jj += 4) {
                float2 v0 = __bfloat1622float2(((const __nv_bfloat162 *)vs[jj])[dp]);
                float2 v1 = __bfloat1622float2(((const __nv_bfloat162 *)vs[jj + 1])[dp]);
                float2 v2 = __bfloat1622float2(((const __nv_bfloat162 *)vs[jj + 2])[dp]);
                float2 v3 = __bfloat1622float2(((const __nv_bfloat162 *)vs[jj + 3])[dp]);
                float p0 = sc[g][jj], p1 = sc[g][jj + 1], p2 = sc[g][jj + 2], p3 = sc[g][jj + 3];
                a0.x += p0 * v0.x, a0.y += p0 * v0.y, a1.x += p1 * v1.x, a1.y += p1 * v1.y;
                a2.x += p2 * v2.x, a2.y += p2 * v2.y, a3.x += p3 * v3.x, a3.y += p3 * v3.y;
            }
            for (; jj < nk; jj++) {
                float2 v0 = __bfloat1622float2(((const __nv_bfloat162 *)vs[jj])[dp]);
                a0.x += sc[g][jj] * v0.x, a0.y += sc[g][jj] * v0.y;
            }
            float al = alpha_s[g];
            acc[i].x = acc[i].x * al + ((a0.x + a1.x) + (a2.x + a3.x));
            acc[i].y = acc[i].y * al + ((a0.y + a1.y) + (a2.y + a3.y));
        }
        __syncthreads();
    }
    if constexpr (CL > 0) {
        __shared__ float o_sh[G * D], st_sh[G][2];
        namespace cg = cooperative_groups;
        cg::cluster_group cl = cg::this_cluster();
#pragma unroll
        for (int i = 0; i < PER; i++) {
            int idx = tid + i * DEC_THREADS;
            if (idx < PAIRS) o_sh[2 * idx] = acc[i].x, o_sh[2 * idx + 1] = acc[i].y;
        }
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            int g = warp + 4 * hh;
            if (g < G && lane == 0) st_sh[g][0] = mg[hh], st_sh[g][1] = lg[hh];
        }
        cl.sync();
        constexpr int SHARE = (G * D + CL - 1) / CL; /* outputs this block combines */
        const int rank = (int)cl.block_rank();
        for (int e = tid; e < SHARE; e += DEC_THREADS) {
            const int idx = rank * SHARE + e;
            if (idx >= G * D) break;
            const int g = idx / D;
            float ms[CL], M = -INFINITY;
#pragma unroll
            for (int r = 0; r < CL; r++) ms[r] = cl.map_shared_rank(&st_sh[0][0], r)[2 * g], M = fmaxf(M, ms[r]);
            float num = 0.0f, den = 0.0f;
#pragma unroll
            for (int r = 0; r < CL; r++) {
                float w = ms[r] == -INFINITY ? 0.0f : fast_exp2(ms[r] - M);
                den += w * cl.map_shared_rank(&st_sh[0][0], r)[2 * g + 1];
                num += w * cl.map_shared_rank(o_sh, r)[idx];
            }
            out[((int64_t)sg.row0 * NH + kvh * G) * D + idx] = f2bf(num / den);
        }
        cl.sync(); /* no block leaves while another still reads its shared memory */
        return;
    }
    const int64_t base = ((int64_t)blockIdx.x * NH + kvh * G) * S;
#pragma unroll
    for (int i = 0; i < PER; i++) {
        int idx = tid + i * DEC_THREADS;
        if (idx >= PAIRS) continue;
        int g = idx / (D / 2), dp = idx % (D / 2);
        float *dst = part + ((base + (int64_t)g * S) + split) * (D + 2) + 2 * dp;
        dst[0] = acc[i].x, dst[1] = acc[i].y;
    }
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        int g = warp + 4 * hh;
        if (g < G && lane == 0) {
            float *st = part + ((base + (int64_t)g * S) + split) * (D + 2) + D;
            st[0] = mg[hh];
            st[1] = lg[hh];
        }
    }
    /* the last CTA of (seg, kv head) combines the slices */
    __threadfence();
    __syncthreads();
    int *cnt = count + blockIdx.x * NKV + kvh;
    if (tid == 0) s_last = atomicAdd(cnt, 1) == S_eff - 1;
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    /* every slice's statistics at once (one load per thread, in parallel), then per head the
     * weights 2^(m_s - M) and the denominator */
    for (int t = tid; t < G * S_eff; t += DEC_THREADS) {
        int g = t / S_eff, sp = t % S_eff;
        const float *st = part + (base + (int64_t)g * S + sp) * (D + 2) + D;
        w_s[g][sp] = __ldcg(st);
        l_s[g][sp] = __ldcg(st + 1);
    }
    __syncthreads();
    if (tid < G) {
        float M = -INFINITY;
        for (int sp = 0; sp < S_eff; sp++) M = fmaxf(M, w_s[tid][sp]);
        float den = 0.0f;
        for (int sp = 0; sp < S_eff; sp++) {
            float ms = w_s[tid][sp], w = ms == -INFINITY ? 0.0f : exp2f(ms - M);
            w_s[tid][sp] = w;
            den += w * l_s[tid][sp];
        }
        den_s[tid] = den;
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < PER; i++) {
        int idx = tid + i * DEC_THREADS;
        if (idx >= PAIRS) continue;
        int g = idx / (D / 2), dp = idx % (D / 2);
        const float *p = part + (base + (int64_t)g * S) * (D + 2) + 2 * dp;
        float nx = 0.0f, ny = 0.0f;
#pragma unroll 8
        for (int sp = 0; sp < S_eff; sp++) {
            float wv = w_s[g][sp];
            nx += wv * __ldcg(p + sp * (D + 2));
            ny += wv * __ldcg(p + sp * (D + 2) + 1);
        }
        float inv = 1.0f / den_s[g];
        *(__nv_bfloat162 *)(out + ((int64_t)sg.row0 * NH + kvh * G + g) * D + 2 * dp) =
            __floats2bfloat162_rn(nx * inv, ny * inv);
    }
    if (tid == 0) *cnt = 0; /* ready for the next launch (or graph replay) */
}

/* ---- generic: one warp per (row, head) ------------------------------------------------------- */

static __global__ void k_attn_generic(bf16 *__restrict__ out, const bf16 *__restrict__ q, const bf16 *__restrict__ kc,
                               const bf16 *__restrict__ vc, const dspy_attn_seg *__restrict__ segs, int nseg,
                               const int32_t *__restrict__ tables, int bs, int N, int NH, int NKV, int HS,
                               float scale_log2) {
    griddep_wait(CU_REL_ATTENTION);
    int64_t wid = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (wid >= (int64_t)N * NH) return;
    int r = (int)(wid / NH), h = (int)(wid % NH), kvh = h / (NH / NKV);
    int s = -1;
    for (int i = 0; i < nseg; i++)
        if (r >= segs[i].row0 && r < segs[i].row0 + segs[i].n) s = i;
    if (s < 0) return;
    const dspy_attn_seg sg = segs[s];
    const int32_t *table = tables + sg.table_off;
    int pos = sg.pos0 + (r - sg.row0);
    const int PER = (HS + 31) / 32; /* dims per lane, at most 8 (HS <= 256) */
    float qv[8], o[8];
    for (int i = 0; i < 8; i++) {
        int d = lane + 32 * i;
        qv[i] = i < PER && d < HS ? bf2f(q[((int64_t)r * NH + h) * HS + d]) * scale_log2 : 0.0f;
        o[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int j = 0; j <= pos; j++) {
        int64_t slot = (int64_t)table[j / bs] * bs + j % bs;
        const bf16 *kr = kc + (slot * NKV + kvh) * HS, *vr = vc + (slot * NKV + kvh) * HS;
        float sdot = 0.0f;
        for (int i = 0; i < PER; i++) {
            int d = lane + 32 * i;
            if (d < HS) sdot += qv[i] * bf2f(kr[d]);
        }
        for (int off = 16; off > 0; off >>= 1) sdot += __shfl_xor_sync(0xffffffffu, sdot, off);
        float mn = fmaxf(m, sdot), al = exp2f(m - mn), p = exp2f(sdot - mn);
        l = l * al + p;
        m = mn;
        for (int i = 0; i < PER; i++) {
            int d = lane + 32 * i;
            if (d < HS) o[i] = o[i] * al + p * bf2f(vr[d]);
        }
    }
    for (int i = 0; i < PER; i++) {
        int d = lane + 32 * i;
        if (d < HS) out[((int64_t)r * NH + h) * HS + d] = f2bf(o[i] / l);
    }
}

/* ---- the op ------------------------------------------------------------------------------- */

template <int D> static dspy_status launch_decode(dspy_backend *be, bf16 *out, const bf16 *q, const bf16 *kc,
                                                  const bf16 *vc, const dspy_attn_meta *m, int NH, int NKV,
                                                  float sl2) {
    cuda_state *s = cu_of(be);
    int S = dspy_cu_decode_splits(s, m->nseg, NKV);
    size_t need = (size_t)m->nseg * NH * S * (D + 2);
    if (need > s->att_part_n || (size_t)m->nseg * NKV > s->att_count_n)
        return dspy_fail(DSPY_ERR_ARG, "cuda attention: %d sequences need %zu partial floats and %d counters; %zu and "
                                       "%zu were planned (dspy_backend_reserve)", m->nseg, need, m->nseg * NKV,
                         s->att_part_n, s->att_count_n);
    dim3 grid(m->nseg, NKV, S);
    const dspy_attn_seg *sg = (const dspy_attn_seg *)m->segs.data;
    const int32_t *tb = (const int32_t *)m->tables.data;
    /* Clusters of 16 slices where the global combine would itself cut the context into 16 or more
     * (few sequences: one or two at the 1B shape's 8 KV heads); with more sequences the grid has
     * parallelism enough, and 16 slices of a 1,500-token context would leave each block less
     * than one 128-key tile (batch 16 on the H200: attention 847 us of a 1,815 us step). */
    const bool clusters = s->dec_cluster == 16 && S >= 16;
#define DEC(G)                                                                                                     \
    if (clusters)                                                                                                  \
        return cu_launch_cluster(be, "attention (decode, clusters of 16)", k_attn_decode<D, G, 16>,               \
                                 dim3(m->nseg, NKV, 16), DEC_THREADS, dim3(1, 1, 16), 0, out, s->att_part,        \
                                 s->att_count, q, kc, vc, sg, tb, m->block_size, NH, NKV, sl2, s->dec_min_keys);  \
    return cu_launch(be, "attention (decode)", k_attn_decode<D, G>, grid, DEC_THREADS, 0, out, s->att_part,      \
                     s->att_count, q, kc, vc, sg, tb, m->block_size, NH, NKV, sl2, s->dec_min_keys)
    switch (NH / NKV) {
    case 1: DEC(1);
    case 2: DEC(2);
    case 4: DEC(4);
    default: DEC(8);
    }
#undef DEC
}

/* Clusters of 16 blocks are beyond the portable 8: each kernel must allow them. */
template <int D> static cudaError_t allow_cluster16() {
    cudaError_t e = cudaFuncSetAttribute(k_attn_decode<D, 1, 16>, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(k_attn_decode<D, 2, 16>, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(k_attn_decode<D, 4, 16>, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(k_attn_decode<D, 8, 16>, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    return e;
}

dspy_status dspy_cu_attention_setup(dspy_backend *be) {
    DSPY_TRY(dspy_cu_check(be, cu_release_set(cu_of(be)->release), "attention (release flag)"));
    cuda_state *s = cu_of(be);
    if (s->dec_cluster == 16) {
        /* 16 blocks of one cluster must fit one GPC at once; where the device cannot place even
         * one such cluster (or refuses the size), decode keeps the global combine */
        cudaError_t e = allow_cluster16<64>();
        if (e == cudaSuccess) e = allow_cluster16<128>();
        int n = 0;
        if (e == cudaSuccess) {
            cudaLaunchConfig_t cfg = {};
            cudaLaunchAttribute at[1];
            cfg.gridDim = dim3(1, 1, 16);
            cfg.blockDim = dim3(DEC_THREADS);
            at[0].id = cudaLaunchAttributeClusterDimension;
            at[0].val.clusterDim.x = 1, at[0].val.clusterDim.y = 1, at[0].val.clusterDim.z = 16;
            cfg.attrs = at;
            cfg.numAttrs = 1;
            e = cudaOccupancyMaxActiveClusters(&n, k_attn_decode<128, 8, 16>, &cfg);
        }
        if (e != cudaSuccess || n < 1) {
            cudaGetLastError(); /* not sticky: clear it */
            s->dec_cluster = 0;
        }
    }
    return dspy_cu_attention_prefill_setup(be);
}

dspy_status dspy_cu_attention(dspy_backend *be, dspy_tensor out, dspy_tensor q, dspy_tensor kcache, dspy_tensor vcache,
                         const dspy_attn_meta *m, int NH, int NKV, int HS) {
    CU_ENTER(be);
    const int N = m->N;
    CU_NEED("attention", "out", out, DSPY_DTYPE_BF16, (int64_t)N * NH * HS);
    CU_NEED("attention", "q", q, DSPY_DTYPE_BF16, (int64_t)N * NH * HS);
    CU_NEED("attention", "kcache", kcache, DSPY_DTYPE_BF16, 1);
    CU_NEED("attention", "vcache", vcache, DSPY_DTYPE_BF16, 1);
    CU_NEED("attention", "segs", m->segs, DSPY_DTYPE_I32, (int64_t)m->nseg * 4);
    CU_NEED("attention", "tables", m->tables, DSPY_DTYPE_I32, 0);
    if (NKV <= 0 || NH % NKV != 0 || HS <= 0 || HS > 256)
        return dspy_fail(DSPY_ERR_ARG, "cuda attention: NH %d, NKV %d, HS %d are not supported", NH, NKV, HS);
    if (N == 0 || m->nseg == 0) return DSPY_OK;
    bf16 *o = (bf16 *)out.data;
    const bf16 *qq = (const bf16 *)q.data, *kc = (const bf16 *)kcache.data, *vc = (const bf16 *)vcache.data;
    const float sl2 = LOG2E / sqrtf((float)HS);
    const int G = NH / NKV;
    if (m->decode && dspy_cu_decode_batch_fits(be, m->nseg, NH, NKV, HS))
        return dspy_cu_attention_decode_batch(be, o, qq, kc, vc, m, NH, NKV, HS, sl2);
    if (m->decode && (G == 1 || G == 2 || G == 4 || G == 8) && (HS == 64 || HS == 128))
        return HS == 64 ? launch_decode<64>(be, o, qq, kc, vc, m, NH, NKV, sl2)
                        : launch_decode<128>(be, o, qq, kc, vc, m, NH, NKV, sl2);
    if (HS == 64 || HS == 128) return dspy_cu_attention_prefill(be, o, qq, kc, vc, m, NH, NKV, HS, sl2);
    int64_t warps = (int64_t)N * NH;
    return cu_launch(be, "attention (generic)", k_attn_generic, cu_blocks(warps * 32, 256), 256, 0, o, qq, kc, vc,
                     (const dspy_attn_seg *)m->segs.data, m->nseg, (const int32_t *)m->tables.data, m->block_size, N,
                     NH, NKV, HS, sl2);
}
