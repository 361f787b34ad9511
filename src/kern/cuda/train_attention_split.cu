/* train_attention_split.cu — a prefix-shared training attention call (kern/ops.h attention_train,
 * 0 < prefix P < T) through cuDNN's fused attention (train_attention_split.h), exactly, as two
 * cuDNN calls whose results are merged:
 *   part A  the layout's causal block-diagonal attention over all T rows, the prefix its first
 *           example and each continuation one of its own (what attention_train_layout describes:
 *           prefix rows have start 0); the prefix rows' result is final here. O_A, L_A.
 *   part B  the T - P continuation rows against the P prefix keys, every key seen (one batch,
 *           s_q = T - P, s_kv = P; train_attention_cudnn.cu's cross graph). O_B, L_B.
 * A continuation row's keys are the disjoint union of the two parts' keys, so its softmax is the
 * log-sum-exp merge of the two:
 *   forward   L = logaddexp(L_A, L_B), O = O_A e^(L_A - L) + O_B e^(L_B - L) (F32; a BF16 out
 *             rounded once from it), lse = L.
 *   backward  each part's backward run with the FINAL out and lse (and dout): its P = exp(S - L) is
 *             the row's true probability of each of its keys, and D = rowsum(dout * out) is the
 *             row's true D, so each part yields exactly its share of dS and the shares add:
 *             dq (continuation rows) = dq_A + dq_B, dk, dv (prefix keys) = dk_A + dk_B, dv_A + dv_B
 *             (GQA's head sum as cuDNN forms it in each part). F32 gradients: part A writes the
 *             outputs (dspy_cu_sdpa_bwd), part B's BF16 dq and F32 or BF16 dk, dv are added to
 *             them in F32. BF16 gradients (the BF16 trainer's grad16, from a BF16 dout): part A
 *             writes cuDNN's BF16 dq, dk, dv in place, except GQA's F32 head sums, kept in scratch
 *             (dspy_cu_sdpa_bwd_keep); the sum of each gradient's parts is formed in F32 from
 *             those values and rounded once (k_split_add16): the BF16 result is the F32 result's
 *             rounding, as on the path without a prefix.
 * Precision: as the fused path without a prefix (BF16 P, dS, O and dout inside cuDNN; cuDNN's dQ,
 * and its dK, dV without GQA, BF16); the merge and the sums are F32. A BF16 dout is read in place
 * by both parts.
 *
 * Where it runs: where cuDNN takes both parts, for examples of 256 tokens on average or more (the
 * prefix one of them; train_attention_cudnn.cu's SDPA_SPLIT_MIN_MEAN). Measured on the H200
 * (bench_train_attn, the 1B Llama's 32 query heads, 8 KV heads, HS 64, F32 out): T2's layout (a
 * 1,300-token prefix and 8 continuations of 240 .. 320 tokens) forward 0.180 ms against the own
 * flash kernels' 0.183, backward 0.550 against 0.644; T2 one epoch prefix-shared (bench_train --t2,
 * the BF16 att) 4.31 s against 4.36 (with the F32 att 4.39 against 4.37; both with two graphs
 * planned in the epoch, ~65 ms each once per run, and ~2 % between runs).
 *
 * Scratch (planned by the planning layout call, nothing allocated in a step): part B's O (forward)
 * or dq (backward), BF16 (rows, NH x HS); its lse, F32 (rows, NH) (backward: the final lse's
 * continuation rows copied there when they are not 16-byte aligned, as cuDNN's tensors must be);
 * its dk and dv, each (rows, NH x HS) BF16-sized: F32 only under GQA (cuDNN's head sum), where
 * NKV <= NH / 2 makes P x NKV x HS floats fit (forward, F32 out: the first holds part A's BF16 O);
 * with BF16 gradients under GQA those two hold part A's F32 head sums (T x NKV x HS floats) first
 * and part B's after them, which NH >= 4 NKV (BF16 gradients' condition) makes fit.
 */
#include "kern/cuda/train_attention_split.h"
#include "kern/cuda/train.cuh"
#include "kern/cuda/train_attention_cudnn.h"

#include <stdlib.h>
#include <string.h>

struct cu_split {
    bool on;            /* DSPY_CUDA_CUDNN_SPLIT is not 0 */
    bf16 *xo;           /* part B's O (forward) or dq (backward): rows x width */
    float *xl;          /* part B's lse: rows x NH */
    void *xk, *xv;      /* part B's dk, dv: rows x width BF16 each */
    size_t rows, width; /* planned rows and NH x HS */
    int NH;
};

static bool split_env_on(void) {
    const char *e = getenv("DSPY_CUDA_CUDNN_SPLIT");
    return !(e && strcmp(e, "0") == 0);
}

/* The scratch for T rows at the backend plan's NH and HS (grown, never shrunk). */
static dspy_status split_reserve(dspy_backend *be, int T) {
    cuda_state *s = cu_of(be);
    if (!s->split) {
        s->split = (cu_split *)calloc(1, sizeof(cu_split));
        if (!s->split) return dspy_fail(DSPY_ERR_NOMEM, "cuda attention_train_layout: the split's state");
    }
    cu_split *p = s->split;
    p->on = split_env_on();
    if (!p->on) return DSPY_OK; /* off when planned: no scratch, and the route takes nothing */
    const dspy_backend_plan *pl = &be->plan;
    size_t rows = (size_t)T, nh = (size_t)(pl->NH > 0 ? pl->NH : 1);
    size_t width = nh * (size_t)(pl->HS > 0 ? pl->HS : 1);
    if (p->xo && rows <= p->rows && width <= p->width && nh <= (size_t)p->NH) return DSPY_OK;
    if (rows < p->rows) rows = p->rows;
    if (width < p->width) width = p->width;
    if (nh < (size_t)p->NH) nh = (size_t)p->NH;
    bf16 *xo = NULL;
    float *xl = NULL;
    void *xk = NULL, *xv = NULL;
    const size_t slot = rows * width * sizeof(bf16);
    const char *what = "cudnn split attention scratch";
    dspy_status st = dspy_cu_check(be, cudaMalloc((void **)&xo, slot), what);
    if (!st) st = dspy_cu_check(be, cudaMalloc((void **)&xl, rows * nh * sizeof(float)), what);
    if (!st) st = dspy_cu_check(be, cudaMalloc(&xk, slot), what);
    if (!st) st = dspy_cu_check(be, cudaMalloc(&xv, slot), what);
    if (st) {
        cudaFree(xo), cudaFree(xl), cudaFree(xk), cudaFree(xv);
        return st;
    }
    be->n_allocs += 4;
    cudaFree(p->xo), cudaFree(p->xl), cudaFree(p->xk), cudaFree(p->xv);
    p->xo = xo, p->xl = xl, p->xk = xk, p->xv = xv;
    p->rows = rows, p->width = width, p->NH = (int)nh;
    return DSPY_OK;
}

dspy_status dspy_cu_train_attention_layout(dspy_backend *be, dspy_tensor start, int T, int nseg, int max_len) {
    DSPY_TRY(dspy_cu_sdpa_layout(be, start, T, nseg, max_len));
    cuda_state *s = cu_of(be);
    if (start.data || T == 0) { /* a layout (or forgetting one): the switch may have changed */
        if (s->split) s->split->on = split_env_on();
        return DSPY_OK;
    }
    bool on = false; /* the planning form (dspy_cu_sdpa_layout checked T and the capture) */
    DSPY_TRY(dspy_cu_sdpa_cross_plan(be, &on));
    return on ? split_reserve(be, T) : DSPY_OK;
}

dspy_status dspy_cu_split_route(dspy_backend *be, bool bwd, const void *start, int prefix, int T, int NH, int NKV,
                                int HS, const void *const *ptrs, int n, bool *take) {
    *take = false;
    const cu_split *p = cu_of(be)->split;
    if (!p || !p->on || prefix < 1 || prefix >= T || (size_t)T > p->rows || (size_t)NH * HS > p->width ||
        NH > p->NH)
        return DSPY_OK;
    return dspy_cu_sdpa_route_split(be, bwd, start, prefix, T, NH, NKV, HS, ptrs, n, take);
}

static __device__ __forceinline__ void sp_st(float *p, float x) { *p = x; }
static __device__ __forceinline__ void sp_st(bf16 *p, float x) { *p = __float2bfloat16(x); }

/* The forward's out, one warp per (row, head) of `rows`, the first `pre` the prefix's: out (rows,
 * HS) = oa, part A's (oa may be out itself), and for the rest the merge with part B's ob, lb (rows -
 * pre, HS and 1), lse (rows) holding part A's and becoming the merged one. */
template <typename O>
static __global__ void k_split_merge(O *out, const bf16 *oa, float *lse, const bf16 *ob, const float *lb, int64_t pre,
                                     int64_t rows, int HS) {
    griddep_wait();
    const int64_t w = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (w >= rows) return;
    const int lane = threadIdx.x & 31;
    O *o = out + w * HS;
    const bf16 *a = oa + w * HS;
    if (w < pre) {
        for (int d = lane; d < HS; d += 32) sp_st(o + d, __bfloat162float(a[d]));
        return;
    }
    const float la = lse[w], lbw = lb[w - pre];
    /* both finite: a continuation row sees itself (part A) and at least one prefix key (part B) */
    const float m = fmaxf(la, lbw), L = m + log1pf(expf(fminf(la, lbw) - m));
    const float wa = expf(la - L), wb = expf(lbw - L);
    const bf16 *b = ob + (w - pre) * HS;
    for (int d = lane; d < HS; d += 32) sp_st(o + d, wa * __bfloat162float(a[d]) + wb * __bfloat162float(b[d]));
    __syncwarp(); /* every lane has read lse[w] */
    if (lane == 0) lse[w] = L;
}

/* The backward's sum: dq (nq) += dqb; dk, dv (nk) += dkb, dvb (F32 when f32, else BF16). */
static __global__ void k_split_add(float *dq, const bf16 *dqb, int64_t nq, float *dk, float *dv, const void *dkb,
                                   const void *dvb, bool f32, int64_t nk) {
    griddep_wait();
    const int64_t n = nq + nk, step = (int64_t)blockDim.x * gridDim.x;
    for (int64_t i = threadIdx.x + (int64_t)blockIdx.x * blockDim.x; i < n; i += step) {
        if (i < nq) {
            dq[i] += __bfloat162float(dqb[i]);
        } else if (f32) {
            dk[i - nq] += ((const float *)dkb)[i - nq];
            dv[i - nq] += ((const float *)dvb)[i - nq];
        } else {
            dk[i - nq] += __bfloat162float(((const bf16 *)dkb)[i - nq]);
            dv[i - nq] += __bfloat162float(((const bf16 *)dvb)[i - nq]);
        }
    }
}

/* The backward's sum into BF16 gradients, each rounded once from its F32 value: dq (nq, the
 * continuation rows: part A's BF16 there) = dq + dqb; dk, dv: with part A's F32 head sums ak, av
 * (nka, every key) = ak + bk for the first nk (the prefix keys) and ak beyond, else (part A's BF16
 * in dk, dv) dk + bk for the first nk; bk, bv part B's, F32 when b32, else BF16. */
static __global__ void k_split_add16(bf16 *dq, const bf16 *dqb, int64_t nq, bf16 *dk, bf16 *dv, const float *ak,
                                     const float *av, int64_t nka, const void *bk, const void *bv, bool b32,
                                     int64_t nk) {
    griddep_wait();
    const int64_t n = nq + (ak ? nka : nk), step = (int64_t)blockDim.x * gridDim.x;
    for (int64_t i = threadIdx.x + (int64_t)blockIdx.x * blockDim.x; i < n; i += step) {
        if (i < nq) {
            dq[i] = __float2bfloat16(__bfloat162float(dq[i]) + __bfloat162float(dqb[i]));
            continue;
        }
        const int64_t j = i - nq;
        float xk = 0.0f, xv = 0.0f;
        if (j < nk) {
            xk = b32 ? ((const float *)bk)[j] : __bfloat162float(((const bf16 *)bk)[j]);
            xv = b32 ? ((const float *)bv)[j] : __bfloat162float(((const bf16 *)bv)[j]);
        }
        dk[j] = __float2bfloat16((ak ? ak[j] : __bfloat162float(dk[j])) + xk);
        dv[j] = __float2bfloat16((av ? av[j] : __bfloat162float(dv[j])) + xv);
    }
}

dspy_status dspy_cu_split_fwd(dspy_backend *be, void *out, bool out16, float *lse, const bf16 *q, const bf16 *k,
                              const bf16 *v, int prefix, int T, int NH, int NKV, int HS) {
    cu_split *p = cu_of(be)->split;
    const int P = prefix, R = T - P;
    const int64_t qo = (int64_t)P * NH * HS, pre = (int64_t)P * NH, rows = (int64_t)T * NH;
    /* part A: cuDNN's BF16 O straight into a BF16 out (its prefix rows final), else into scratch
     * (the merge writes every F32 row once: no widened copy first) */
    bf16 *oa = out16 ? (bf16 *)out : (bf16 *)p->xk;
    DSPY_TRY(dspy_cu_sdpa_fwd(be, oa, true, lse, q, k, v, T, NH, NKV, HS));
    DSPY_TRY(dspy_cu_sdpa_xfwd(be, p->xo, p->xl, q + qo, k, v, R, P, NH, NKV, HS));
    const char *what = "attention_train (cudnn split merge)";
    if (out16) /* the continuation rows only, in place */
        return cu_launch(be, what, k_split_merge<bf16>, cu_blocks(rows - pre, 8), 256, 0, (bf16 *)out + qo,
                         (const bf16 *)oa + qo, lse + pre, (const bf16 *)p->xo, (const float *)p->xl, (int64_t)0,
                         rows - pre, HS);
    return cu_launch(be, what, k_split_merge<float>, cu_blocks(rows, 8), 256, 0, (float *)out, (const bf16 *)oa, lse,
                     (const bf16 *)p->xo, (const float *)p->xl, pre, rows, HS);
}

dspy_status dspy_cu_split_bwd(dspy_backend *be, void *dq, void *dk, void *dv, bool grad16, const void *dout,
                              bool dout16, const void *out, bool out16, const float *lse, const bf16 *q, const bf16 *k,
                              const bf16 *v, int prefix, int T, int NH, int NKV, int HS) {
    cuda_state *s = cu_of(be);
    cu_split *p = s->split;
    const int P = prefix, R = T - P;
    const int64_t qo = (int64_t)P * NH * HS, nq = (int64_t)R * NH * HS, nk = (int64_t)P * NKV * HS;
    const int64_t nka = (int64_t)T * NKV * HS;
    /* part A. BF16 gradients: cuDNN's BF16 outputs in place, except GQA's F32 head sums (a wide
     * graph), kept unrounded in xk, xv (T x NKV x HS floats each) for part B's prefix-key sums */
    bool kept = false;
    if (grad16)
        DSPY_TRY(dspy_cu_sdpa_bwd_keep(be, (bf16 *)dq, (bf16 *)dk, (bf16 *)dv, (float *)p->xk, (float *)p->xv, &kept,
                                       (const bf16 *)dout, out, out16, lse, q, k, v, T, NH, NKV, HS));
    else
        DSPY_TRY(dspy_cu_sdpa_bwd(be, dq, dk, dv, false, dout, dout16, out, out16, lse, q, k, v, T, NH, NKV, HS));
    /* part B's dk, dv (F32 at most under GQA, where NKV <= NH / 2; BF16 without) after part A's kept
     * sums, if any (then GQA with NH >= 4 NKV, kern/ops.h's condition for BF16 gradients: (T + P)
     * x NKV x HS floats < 2 T x NH / 4 x HS x 4 bytes, the slot's rows x width BF16) */
    const size_t bsz = NH > NKV ? sizeof(float) : sizeof(bf16);
    const size_t boff = kept ? (size_t)nka * sizeof(float) : 0, slot = p->rows * p->width * sizeof(bf16);
    if (boff + (size_t)nk * bsz > slot)
        return dspy_fail(DSPY_ERR_ARG, "cuda attention_train_backward (cudnn split): part B's dk, dv (P=%d x NKV=%d "
                                       "x HS=%d) do not fit after part A's F32 sums (T=%d) in the planned scratch "
                                       "(%zu rows x width %zu)", P, NKV, HS, T, p->rows, p->width);
    void *bk = (char *)p->xk + boff, *bv = (char *)p->xv + boff;
    const float *stats = lse + (int64_t)P * NH;
    if ((uintptr_t)stats % 16) {
        DSPY_TRY(dspy_cu_check(be, cudaMemcpyAsync(p->xl, stats, sizeof(float) * (size_t)R * NH,
                                                   cudaMemcpyDeviceToDevice, s->stream),
                               "attention_train_backward (cudnn split lse)"));
        stats = p->xl;
    }
    const size_t esz = out16 ? sizeof(bf16) : sizeof(float), gsz = dout16 ? sizeof(bf16) : sizeof(float);
    const void *ob = (const char *)out + qo * esz, *gb = (const char *)dout + qo * gsz;
    bool b32 = false;
    DSPY_TRY(dspy_cu_sdpa_xbwd(be, p->xo, bk, bv, &b32, gb, dout16, ob, out16, stats, q + qo, k, v, R, P, NH, NKV,
                               HS));
    if (grad16)
        return cu_launch(be, "attention_train_backward (cudnn split sum)", k_split_add16,
                         tr_grid(nq + (kept ? nka : nk)), 256, 0, (bf16 *)dq + qo, (const bf16 *)p->xo, nq, (bf16 *)dk,
                         (bf16 *)dv, kept ? (const float *)p->xk : (const float *)NULL,
                         kept ? (const float *)p->xv : (const float *)NULL, nka, (const void *)bk, (const void *)bv,
                         b32, nk);
    return cu_launch(be, "attention_train_backward (cudnn split sum)", k_split_add, tr_grid(nq + nk), 256, 0,
                     (float *)dq + qo, (const bf16 *)p->xo, nq, (float *)dk, (float *)dv, (const void *)bk,
                     (const void *)bv, b32, nk);
}

void dspy_cu_split_release(cuda_state *s) {
    cu_split *p = s->split;
    if (!p) return;
    cudaFree(p->xo), cudaFree(p->xl), cudaFree(p->xk), cudaFree(p->xv);
    free(p);
    s->split = NULL;
}
