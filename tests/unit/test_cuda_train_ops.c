/* test_cuda_train_ops.c — the CUDA training ops of kern/ops.h against the CPU reference (label gpu).
 *
 * Every op runs on both backends on fresh random F32 inputs (the seed is printed;
 * DSPY_TEST_SEED replays one); the CPU op is the reference. Compared by ||cuda - cpu|| / ||cpu||
 * with these tolerances (all F32, no TF32 anywhere):
 *   rope, rope_backward, embedding_backward, scatter_add_rows:  1e-6
 *     (element-wise; only cos/sin rounding or the order of repeated-row atomics differ)
 *   swiglu_backward: 1e-5 (expf within 2 ulp of the CPU's, amplified by 1 - sigmoid(g)
 *     cancelling for large g; the GPU may fuse a multiply-add)
 *   rmsnorm_backward, linear_backward (cuBLASLt CUBLAS_COMPUTE_32F), cross_entropy:  1e-5
 *     (sums of up to a few thousand F32 terms in a different order)
 *   attention_train: out and lse 1e-5; attention_train_backward dq/dk/dv 3e-5 (sums over a
 *     whole example of products of recomputed probabilities); both are also compared with a
 *     double-precision reference computed here (the same 1e-5 / 3e-5), and the CPU's own
 *     distance to it is printed beside.
 *   dropout, scale and adamw: bit-identical (the same mask function; separately rounded
 *     operations in the same order).
 *   The BF16 entries of the mixed-precision trainer, against the CPU's F32 op on the same
 *   BF16-rounded inputs: rope on BF16 x and swiglu_backward's BF16 outputs within half a BF16
 *   ulp of the F32 result; swiglu_backward from BF16 gate / up and linear_backward_beta (beta 0
 *   from NaN-poisoned outputs, beta 1 accumulating) and linear_add (the residual in the GEMM's
 *   epilogue) 1e-5; linear_backward_beta's BF16 dinp, swiglu_backward from a BF16 dout and
 *   cross_entropy's BF16 dlogits within BF16 rounding (4e-3 relative); adamw_bf16 bit-identical
 *   to adamw, its BF16 copy the updated weights rounded bit for bit.
 *   attention_train / _backward with BF16 q, k, v (tensor cores: the flash kernels for HS 64 and
 *     128, the WMMA kernels otherwise and under DSPY_CUDA_TRAIN_ATTN=wmma) against the CPU on the same
 *     BF16-rounded values: out, dq, dk, dv 1e-2 (P, dS and dout are rounded to BF16 inside),
 *     lse 1e-5.
 *   the same through cuDNN's fused attention (attention_train_layout given; HS 64 and 128):
 *     out, dq, dk, dv 1e-2, lse 1e-5; with a shared prefix through the exact split into two cuDNN
 *     graphs merged by log-sum-exp (prefixes of 1, 37, 1,300 tokens), the same tolerances, and
 *     not bit-identical to the flash kernels' out (the split ran).
 *   each of those with a BF16 out (the BF16 trainer's att): bit for bit the BF16 rounding of the
 *     F32 out and the same lse; the backward from it 1e-2; refused (ARG) where neither the flash
 *     nor the fused kernels take the call (HS 16, 32, 80, the WMMA kernels), and with F32 q, k, v.
 *   the backward from a BF16 dout, with F32 and BF16 dq, dk, dv (the BF16 trainer's attention
 *     gradients), flash, cuDNN and cuDNN's prefix split, from an F32 and a BF16 out: 1e-2 against
 *     the CPU on the same BF16-rounded q, k, v, dout; the BF16 dq (and dk, dv without GQA) the
 *     BF16 rounding of the F32 result; refused (ARG) for a KV group of 2, HS 80, the WMMA
 *     kernels, an F32 dout, the CPU; the split's BF16 dq not bit-identical to the flash kernels'.
 *   rope_backward on BF16 dx within half a BF16 ulp of the CPU's F32 result.
 * OVERWRITE outputs are poisoned (NaN) first and must come back finite; += outputs start from
 * random values on both sides, so the comparison checks the accumulation too. Sizes are odd on
 * purpose (T=37, C=72, V=1001, HS 16/64/80/128, GQA, packed sequences whose examples start
 * inside a tile, slices that are not 16-byte aligned for cuBLASLt). Also: aliasing allowed by
 * ops.h (dlogits == logits, dgate == dout, dropout in place), argument errors, the planned
 * scratch limit, graph capture of a backward step, and an out-of-range scatter index faulting
 * into the sticky error (in a child process, since a fault ends the CUDA context).
 *
 * Without a GPU the test reports a skip (exit 77), not a pass.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "parity.h"
#include "dspy/backend.h"
#include "dspy/safetensors.h"
#include "kern/backend.h"

static dspy_backend *C, *G; /* CPU reference, CUDA */
static uint64_t g_rng;

static float frand(void) { /* uniform in [-1, 1) */
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}
static int irand(int n) { return (int)((frand() * 0.5f + 0.5f) * (float)n) % n; }
/* n values in [-scale, scale). */
static float *rnd(size_t n, float scale) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = frand() * scale;
    return p;
}
static float *dup_f(const float *a, size_t n) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    memcpy(p, a, n * sizeof *p);
    return p;
}

/* ---- device tensors -------------------------------------------------------------------- */

static dspy_tensor dev_alloc(dspy_dtype dt, int64_t n) {
    void *p = NULL;
    CHECK_OK(G->ops->alloc(G, (size_t)(n ? n : 1) * dspy_dtype_size(dt), &p));
    return dspy_bt(G, p, n, dt);
}
static dspy_tensor up(const float *h, int64_t n) {
    dspy_tensor t = dev_alloc(DSPY_DTYPE_F32, n);
    CHECK_OK(G->ops->copy(G, t.data, h, (size_t)n * 4, DSPY_COPY_H2D));
    CHECK_OK(G->ops->sync(G));
    return t;
}
static dspy_tensor up_i32(const int32_t *h, int64_t n) {
    dspy_tensor t = dev_alloc(DSPY_DTYPE_I32, n);
    CHECK_OK(G->ops->copy(G, t.data, h, (size_t)n * 4, DSPY_COPY_H2D));
    CHECK_OK(G->ops->sync(G));
    return t;
}
/* A device F32 tensor full of NaN. */
static dspy_tensor poisoned(int64_t n) {
    dspy_tensor t = dev_alloc(DSPY_DTYPE_F32, n);
    CHECK_OK(G->ops->fill(G, t, NAN));
    return t;
}
/* A device BF16 tensor of n NaNs (an OVERWRITE output that must come back written). */
static dspy_tensor poisoned16(int64_t n) {
    uint16_t *b = malloc(sizeof(uint16_t) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) b[i] = 0x7fc0;
    dspy_tensor t = dev_alloc(DSPY_DTYPE_BF16, n);
    CHECK_OK(G->ops->copy(G, t.data, b, sizeof(uint16_t) * (size_t)n, DSPY_COPY_H2D));
    CHECK_OK(G->ops->sync(G));
    free(b);
    return t;
}
static float *down(dspy_tensor t) {
    float *h = malloc((size_t)(t.n ? t.n : 1) * sizeof(float));
    CHECK_OK(G->ops->copy(G, h, t.data, (size_t)t.n * 4, DSPY_COPY_D2H));
    CHECK_OK(G->ops->sync(G));
    return h;
}
static void dev_free(dspy_tensor t) { G->ops->free(G, t.data); }

#define HF(p, n) dspy_bt(C, (void *)(p), (int64_t)(n), DSPY_DTYPE_F32)
#define HI(p, n) dspy_bt(C, (void *)(p), (int64_t)(n), DSPY_DTYPE_I32)
#define NONE dspy_tensor_none()


static void expect_close(const char *what, const float *got, const float *ref, size_t n, double tol) {
    double e = parity_rel(got, ref, n);
    check_report(e <= tol, __FILE__, __LINE__, "%s: relative error %.3g > %.1g", what, e, tol);
    printf("  %-52s rel err %.2e (tol %.0e, %zu values)\n", what, e, tol, n);
}
static double rms_f(const float *a, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * a[i];
    return sqrt(s / (double)(n ? n : 1));
}
/* Values that must be 0 up to rounding: every one finite, their rms at most `bound`. */
static void expect_near_zero(const char *what, const float *got, size_t n, double bound) {
    int finite = 1;
    for (size_t i = 0; i < n; i++) finite &= isfinite(got[i]) != 0;
    double r = finite ? rms_f(got, n) : INFINITY;
    check_report(r <= bound, __FILE__, __LINE__, "%s: rms %.3g > %.3g", what, r, bound);
    printf("  %-52s rms %.2e (bound %.1e, %zu values)\n", what, r, bound, n);
}
static void expect_same(const char *what, const float *got, const float *ref, size_t n) {
    size_t diff = 0;
    for (size_t i = 0; i < n; i++) diff += memcmp(&got[i], &ref[i], sizeof(float)) != 0;
    check_report(diff == 0, __FILE__, __LINE__, "%s: %zu of %zu values differ (bit-identical expected)", what, diff, n);
    printf("  %-52s bit-identical: %s (%zu values)\n", what, diff ? "NO" : "yes", n);
}

/* ---- RoPE ------------------------------------------------------------------------------- */

/* RoPE's inputs for N rows: Llama 3's inverse frequencies (theta 500,000) in inv (HS / 2), and
 * positions 0, 1, 2 then random ones up to 128k (malloc'd; free it). */
static int32_t *rope_inputs(int N, int HS, float *inv) {
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)N);
    for (int i = 0; i < HS / 2; i++) inv[i] = (float)(1.0 / pow(500000.0, 2.0 * i / HS));
    for (int i = 0; i < N; i++) pos[i] = i < 3 ? i : irand(131072);
    return pos;
}

static void one_rope(int N, int H, int HS) {
    char what[96];
    int64_t n = (int64_t)N * H * HS;
    float *x = rnd((size_t)n, 2), inv[64];
    int32_t *pos = rope_inputs(N, HS, inv);
    dspy_tensor dp = up_i32(pos, N), di = up(inv, HS / 2);
    for (int dir = 0; dir < 2; dir++) {
        float *ref = dup_f(x, (size_t)n);
        dspy_tensor dx = up(x, n);
        if (dir == 0) {
            CHECK_OK(C->ops->rope(C, HF(ref, n), HI(pos, N), HF(inv, HS / 2), N, H, HS));
            CHECK_OK(G->ops->rope(G, dx, dp, di, N, H, HS));
        } else {
            CHECK_OK(C->ops->rope_backward(C, HF(ref, n), HI(pos, N), HF(inv, HS / 2), N, H, HS));
            CHECK_OK(G->ops->rope_backward(G, dx, dp, di, N, H, HS));
        }
        float *got = down(dx);
        snprintf(what, sizeof what, "%s N=%d H=%d HS=%d", dir ? "rope_backward" : "rope", N, H, HS);
        expect_close(what, got, ref, (size_t)n, 1e-6);
        if (dir == 1) { /* forward then backward is the identity (a rotation and its transpose) */
            CHECK_OK(G->ops->rope(G, dx, dp, di, N, H, HS));
            float *back = down(dx);
            snprintf(what, sizeof what, "rope_backward then rope HS=%d (identity)", HS);
            expect_close(what, back, x, (size_t)n, 1e-6);
            free(back);
        }
        free(ref), free(got);
        dev_free(dx);
    }
    free(x), free(pos);
    dev_free(dp), dev_free(di);
}

static void test_rope(void) {
    one_rope(37, 6, 16);
    one_rope(37, 12, 64);
    one_rope(5, 3, 128);
}

/* ---- linear_backward ---------------------------------------------------------------------- */

/* off: elements the device tensors start past an allocation (1 makes them 4-byte aligned only). */
static void one_linear_backward(int N, int Cc, int OC, bool want_dinp, bool want_dw, bool want_db, int off) {
    char what[128];
    float *dout = rnd((size_t)N * OC, 1), *x = rnd((size_t)N * Cc, 1), *w = rnd((size_t)OC * Cc, 0.1f);
    float *di0 = rnd((size_t)N * Cc, 1), *dw0 = rnd((size_t)OC * Cc, 1), *db0 = rnd((size_t)OC, 1);
    float *di = dup_f(di0, (size_t)N * Cc), *dw = dup_f(dw0, (size_t)OC * Cc), *db = dup_f(db0, (size_t)OC);
    CHECK_OK(C->ops->linear_backward(C, want_dinp ? HF(di, N * Cc) : NONE, want_dw ? HF(dw, OC * Cc) : NONE,
                                     want_db ? HF(db, OC) : NONE, HF(dout, N * OC), want_dw ? HF(x, N * Cc) : NONE,
                                     want_dinp ? HF(w, OC * Cc) : NONE, N, Cc, OC));
    /* device copies, `off` floats into larger buffers */
    float *pad[6] = {dout, x, w, di0, dw0, db0};
    int64_t len[6] = {(int64_t)N * OC, (int64_t)N * Cc, (int64_t)OC * Cc, (int64_t)N * Cc, (int64_t)OC * Cc, OC};
    dspy_tensor whole[6], t[6];
    for (int i = 0; i < 6; i++) {
        float *h = calloc((size_t)(len[i] + off), sizeof(float));
        memcpy(h + off, pad[i], sizeof(float) * (size_t)len[i]);
        whole[i] = up(h, len[i] + off);
        t[i] = dspy_tensor_slice(whole[i], off, len[i]);
        free(h);
    }
    CHECK_OK(G->ops->linear_backward(G, want_dinp ? t[3] : NONE, want_dw ? t[4] : NONE, want_db ? t[5] : NONE, t[0],
                                     want_dw ? t[1] : NONE, want_dinp ? t[2] : NONE, N, Cc, OC));
    float *g_di = down(t[3]), *g_dw = down(t[4]), *g_db = down(t[5]);
    const char *al = off ? ", 4-byte aligned" : "";
    snprintf(what, sizeof what, "linear_backward N=%d C=%d OC=%d dinp +=%s", N, Cc, OC, al);
    if (want_dinp) expect_close(what, g_di, di, (size_t)N * Cc, 1e-5);
    else expect_same("linear_backward: absent dinp untouched", g_di, di0, (size_t)N * Cc);
    snprintf(what, sizeof what, "linear_backward N=%d C=%d OC=%d dw +=%s", N, Cc, OC, al);
    if (want_dw) expect_close(what, g_dw, dw, (size_t)OC * Cc, 1e-5);
    else expect_same("linear_backward: absent dw untouched", g_dw, dw0, (size_t)OC * Cc);
    snprintf(what, sizeof what, "linear_backward N=%d C=%d OC=%d dbias +=", N, Cc, OC);
    if (want_db) expect_close(what, g_db, db, (size_t)OC, 1e-5);
    else expect_same("linear_backward: absent dbias untouched", g_db, db0, (size_t)OC);
    free(dout), free(x), free(w), free(di0), free(dw0), free(db0), free(di), free(dw), free(db);
    free(g_di), free(g_dw), free(g_db);
    for (int i = 0; i < 6; i++) dev_free(whole[i]);
}

static void test_linear_backward(void) {
    one_linear_backward(37, 72, 1001, true, true, true, 0);
    one_linear_backward(300, 256, 768, true, true, false, 0);
    one_linear_backward(129, 2048, 3, true, true, true, 0);
    one_linear_backward(1, 64, 64, true, true, true, 0);
    one_linear_backward(37, 72, 1001, true, true, true, 1); /* unaligned slices */
    one_linear_backward(45, 33, 17, false, true, false, 3);  /* LoRA-like: dw only, no w */
    one_linear_backward(45, 33, 17, true, false, true, 0);   /* dinp + dbias, no inp */
    one_linear_backward(300, 256, 768, true, true, false, 0); /* the cached plans, second use */
}

/* ---- rmsnorm_backward -------------------------------------------------------------------- */

static void one_rmsnorm_backward(int N, int Cc, bool want_dw) {
    char what[96];
    float *x = rnd((size_t)N * Cc, 3), *w = rnd((size_t)Cc, 1), *dy = rnd((size_t)N * Cc, 1);
    float *dx0 = rnd((size_t)N * Cc, 1), *dw0 = rnd((size_t)Cc, 1);
    float *dx = dup_f(dx0, (size_t)N * Cc), *dw = dup_f(dw0, (size_t)Cc);
    CHECK_OK(C->ops->rmsnorm_backward(C, HF(dx, N * Cc), want_dw ? HF(dw, Cc) : NONE, HF(dy, N * Cc), HF(x, N * Cc),
                                      HF(w, Cc), N, Cc, 1e-5f));
    dspy_tensor gx = up(x, (int64_t)N * Cc), gw = up(w, Cc), gdy = up(dy, (int64_t)N * Cc);
    dspy_tensor gdx = up(dx0, (int64_t)N * Cc), gdw = up(dw0, Cc);
    CHECK_OK(G->ops->rmsnorm_backward(G, gdx, want_dw ? gdw : NONE, gdy, gx, gw, N, Cc, 1e-5f));
    float *hdx = down(gdx), *hdw = down(gdw);
    snprintf(what, sizeof what, "rmsnorm_backward N=%d C=%d dinp +=", N, Cc);
    expect_close(what, hdx, dx, (size_t)N * Cc, 1e-5);
    snprintf(what, sizeof what, "rmsnorm_backward N=%d C=%d dweight +=", N, Cc);
    if (want_dw) expect_close(what, hdw, dw, (size_t)Cc, 1e-5);
    else expect_same("rmsnorm_backward: absent dweight untouched", hdw, dw0, (size_t)Cc);
    free(x), free(w), free(dy), free(dx0), free(dw0), free(dx), free(dw), free(hdx), free(hdw);
    dev_free(gx), dev_free(gw), dev_free(gdy), dev_free(gdx), dev_free(gdw);
}

static void test_rmsnorm_backward(void) {
    one_rmsnorm_backward(37, 72, true);
    one_rmsnorm_backward(5, 2048, true);
    one_rmsnorm_backward(300, 1001, true);
    one_rmsnorm_backward(37, 72, false);
    one_rmsnorm_backward(129, 512, true); /* the 8-wide kernel (C a multiple of 256) */
    one_rmsnorm_backward(64, 8192, false);
}

/* ---- swiglu_backward --------------------------------------------------------------------- */

static void test_swiglu_backward(void) {
    const int N = 37, I = 1001;
    const int64_t n = (int64_t)N * I;
    float *g = rnd((size_t)n, 6), *u = rnd((size_t)n, 2), *d = rnd((size_t)n, 1);
    float *rg = malloc(sizeof(float) * (size_t)n), *ru = malloc(sizeof(float) * (size_t)n);
    CHECK_OK(C->ops->swiglu_backward(C, HF(rg, n), HF(ru, n), HF(d, n), HF(g, n), HF(u, n), N, I));
    dspy_tensor gg = up(g, n), gu = up(u, n), gd = up(d, n), gdg = poisoned(n), gdu = poisoned(n);
    CHECK_OK(G->ops->swiglu_backward(G, gdg, gdu, gd, gg, gu, N, I));
    float *hg = down(gdg), *hu = down(gdu);
    expect_close("swiglu_backward N=37 I=1001 dgate (overwrite)", hg, rg, (size_t)n, 1e-5);
    expect_close("swiglu_backward N=37 I=1001 dup (overwrite)", hu, ru, (size_t)n, 1e-5);
    /* dgate == dout */
    CHECK_OK(G->ops->swiglu_backward(G, gd, gdu, gd, gg, gu, N, I));
    float *hg2 = down(gd);
    expect_close("swiglu_backward dgate == dout", hg2, rg, (size_t)n, 1e-5);
    CHECK_STATUS(G->ops->swiglu_backward(G, gdg, gdg, gd, gg, gu, N, I), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "dgate and dup are the same memory");
    /* BF16 outputs (the mixed-precision trainer): the F32 results rounded once, so within one
     * BF16 rounding (2^-8 relative) of the CPU's; overlapping dout is refused */
    dspy_tensor bg = dev_alloc(DSPY_DTYPE_BF16, n), bu = dev_alloc(DSPY_DTYPE_BF16, n);
    dev_free(gd);
    gd = up(d, n); /* the in-place call above overwrote dout */
    CHECK_OK(G->ops->swiglu_backward(G, bg, bu, gd, gg, gu, N, I));
    uint16_t *b16 = malloc(sizeof(uint16_t) * 2 * (size_t)n);
    float *bf = malloc(sizeof(float) * 2 * (size_t)n);
    CHECK_OK(G->ops->copy(G, b16, bg.data, sizeof(uint16_t) * (size_t)n, DSPY_COPY_D2H));
    CHECK_OK(G->ops->copy(G, b16 + n, bu.data, sizeof(uint16_t) * (size_t)n, DSPY_COPY_D2H));
    CHECK_OK(G->ops->sync(G));
    for (int64_t i = 0; i < 2 * n; i++) bf[i] = dspy_bf16_to_f32(b16[i]);
    expect_close("swiglu_backward BF16 dgate", bf, rg, (size_t)n, 4e-3);
    expect_close("swiglu_backward BF16 dup", bf + n, ru, (size_t)n, 4e-3);
    size_t bad = 0; /* each value is the device's F32 result rounded to nearest: within half a BF16 ulp */
    for (int64_t i = 0; i < n; i++)
        bad += (fabsf(bf[i] - hg[i]) > fabsf(hg[i]) * (1.0f / 256.0f)) + (fabsf(bf[n + i] - hu[i]) > fabsf(hu[i]) * (1.0f / 256.0f));
    CHECK(bad == 0);
    dspy_tensor gd_lo = dspy_bt(G, gd.data, n, DSPY_DTYPE_BF16);
    CHECK_STATUS(G->ops->swiglu_backward(G, gd_lo, bu, gd, gg, gu, N, I), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "overlap dout");
    free(g), free(u), free(d), free(rg), free(ru), free(hg), free(hu), free(hg2), free(b16), free(bf);
    dev_free(gg), dev_free(gu), dev_free(gd), dev_free(gdg), dev_free(gdu), dev_free(bg), dev_free(bu);
}

/* ---- embedding_backward, scatter_add_rows ------------------------------------------------- */

static void test_add_rows(void) {
    const int V = 1001, Cc = 72, N = 37, M = 20;
    int32_t ids[37], rows[20];
    for (int i = 0; i < N; i++) ids[i] = i % 5 == 0 ? 17 : irand(V); /* 17 repeats 8 times */
    ids[1] = 0, ids[2] = V - 1;
    for (int i = 0; i < M; i++) rows[i] = i % 3 == 0 ? 4 : irand(N);
    float *tab0 = rnd((size_t)V * Cc, 1), *g = rnd((size_t)N * Cc, 1), *gm = rnd((size_t)M * Cc, 1);
    float *x0 = rnd((size_t)N * Cc, 1);
    float *tab = dup_f(tab0, (size_t)V * Cc), *x = dup_f(x0, (size_t)N * Cc);
    CHECK_OK(C->ops->embedding_backward(C, HF(tab, V * Cc), HI(ids, N), HF(g, N * Cc), N, Cc));
    CHECK_OK(C->ops->scatter_add_rows(C, HF(x, N * Cc), HI(rows, M), HF(gm, M * Cc), M, Cc));
    dspy_tensor gt = up(tab0, (int64_t)V * Cc), gi = up_i32(ids, N), gg = up(g, (int64_t)N * Cc);
    dspy_tensor gx = up(x0, (int64_t)N * Cc), gr = up_i32(rows, M), ggm = up(gm, (int64_t)M * Cc);
    CHECK_OK(G->ops->embedding_backward(G, gt, gi, gg, N, Cc));
    CHECK_OK(G->ops->scatter_add_rows(G, gx, gr, ggm, M, Cc));
    float *ht = down(gt), *hx = down(gx);
    expect_close("embedding_backward V=1001 C=72 N=37 (repeats) +=", ht, tab, (size_t)V * Cc, 1e-6);
    expect_close("scatter_add_rows N=37 C=72 M=20 (repeats) +=", hx, x, (size_t)N * Cc, 1e-6);
    free(tab0), free(g), free(gm), free(x0), free(tab), free(x), free(ht), free(hx);
    dev_free(gt), dev_free(gi), dev_free(gg), dev_free(gx), dev_free(gr), dev_free(ggm);
}

/* ---- cross_entropy ------------------------------------------------------------------------- */

/* mode 0: separate poisoned dlogits; 1: dlogits == logits; 2: no dlogits (loss only). */
static void one_xent(int M, int V, int mode) {
    char what[96];
    const int64_t n = (int64_t)M * V;
    float *lg = rnd((size_t)n, 8), dscale = 1.0f / (float)M;
    int32_t *tg = malloc(sizeof(int32_t) * (size_t)M);
    for (int m = 0; m < M; m++) tg[m] = m == 0 ? 0 : m == 1 ? V - 1 : irand(V);
    if (M > 2) lg[(size_t)2 * V + tg[2]] = 30; /* a confident row: p(target) ~ 1 */
    float *loss = malloc(sizeof(float) * (size_t)M), *dl = malloc(sizeof(float) * (size_t)n);
    CHECK_OK(C->ops->cross_entropy(C, HF(loss, M), mode == 2 ? NONE : HF(dl, n), HF(lg, n), HI(tg, M), M, V, dscale));
    dspy_tensor glg = up(lg, n), gt = up_i32(tg, M), gl = poisoned(M), gd = mode == 0 ? poisoned(n) : glg;
    CHECK_OK(G->ops->cross_entropy(G, gl, mode == 2 ? NONE : gd, glg, gt, M, V, dscale));
    float *hl = down(gl), *hd = down(gd);
    const char *how = mode == 0 ? "" : mode == 1 ? ", dlogits == logits" : ", loss only";
    snprintf(what, sizeof what, "cross_entropy M=%d V=%d loss%s", M, V, how);
    expect_close(what, hl, loss, (size_t)M, 1e-5);
    snprintf(what, sizeof what, "cross_entropy M=%d V=%d dlogits%s", M, V, how);
    if (mode != 2) expect_close(what, hd, dl, (size_t)n, 1e-5);
    else expect_same("cross_entropy: logits untouched without dlogits", hd, lg, (size_t)n);
    free(lg), free(tg), free(loss), free(dl), free(hl), free(hd);
    dev_free(glg), dev_free(gt), dev_free(gl);
    if (mode == 0) dev_free(gd);
}

static void test_cross_entropy(void) {
    one_xent(37, 1001, 0);
    one_xent(37, 1001, 1);
    one_xent(37, 1001, 2);
    one_xent(3, 128256, 0);
    one_xent(1, 7, 1);
    /* a target outside [0, V): that row's loss is NaN (the CPU refuses the call); others fine */
    const int M = 3, V = 50;
    float *lg = rnd((size_t)M * V, 4);
    int32_t tg[3] = {5, V, 7};
    dspy_tensor glg = up(lg, (int64_t)M * V), gt = up_i32(tg, M), gl = poisoned(M);
    CHECK_OK(G->ops->cross_entropy(G, gl, NONE, glg, gt, M, V, 1.0f));
    float *hl = down(gl);
    CHECK(isfinite(hl[0]) && isnan(hl[1]) && isfinite(hl[2]));
    CHECK_STATUS(C->ops->cross_entropy(C, HF(hl, M), NONE, HF(lg, M * V), HI(tg, M), M, V, 1.0f), DSPY_ERR_ARG);
    /* a dlogits that partly overlaps logits is refused */
    CHECK_STATUS(G->ops->cross_entropy(G, gl, dspy_tensor_slice(glg, 1, (int64_t)M * V - 1),
                                       glg, gt, M, V - 1, 1.0f),
                 DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "overlaps logits");
    free(lg), free(hl);
    dev_free(glg), dev_free(gt), dev_free(gl);
}

/* ---- dropout, scale ------------------------------------------------------------------------ */

static void test_dropout_scale(void) {
    const int64_t n = 100003;
    float *x = rnd((size_t)n, 3);
    float ps[3] = {0.0f, 0.1f, 0.5f};
    for (int k = 0; k < 3; k++) {
        uint64_t key = g_rng * 0x9e3779b97f4a7c15ull + (uint64_t)k;
        float *ref = malloc(sizeof(float) * (size_t)n);
        CHECK_OK(C->ops->dropout(C, HF(ref, n), HF(x, n), ps[k], key));
        dspy_tensor gx = up(x, n), go = poisoned(n);
        CHECK_OK(G->ops->dropout(G, go, gx, ps[k], key));
        float *h = down(go);
        char what[96];
        snprintf(what, sizeof what, "dropout p=%.1f n=%lld", (double)ps[k], (long long)n);
        expect_same(what, h, ref, (size_t)n);
        CHECK_OK(G->ops->dropout(G, gx, gx, ps[k], key)); /* in place */
        float *h2 = down(gx);
        snprintf(what, sizeof what, "dropout p=%.1f in place", (double)ps[k]);
        expect_same(what, h2, ref, (size_t)n);
        free(ref), free(h), free(h2);
        dev_free(gx), dev_free(go);
    }
    float *ref = dup_f(x, (size_t)n);
    CHECK_OK(C->ops->scale(C, HF(ref, n), 0.37f));
    dspy_tensor gx = up(x, n);
    CHECK_OK(G->ops->scale(G, gx, 0.37f));
    float *h = down(gx);
    expect_same("scale n=100003", h, ref, (size_t)n);
    free(x), free(ref), free(h);
    dev_free(gx);
}

/* ---- adamw ------------------------------------------------------------------------------- */

/* Three steps with weight decay, a changing lr and a clip coefficient: CUDA and CPU bit-identical. */
static void test_adamw(void) {
    const int64_t n = 100003;
    float *w = rnd((size_t)n, 1), *m = calloc((size_t)n, sizeof(float)), *v = calloc((size_t)n, sizeof(float));
    dspy_tensor gw = up(w, n), gm = up(m, n), gv = up(v, n), ghp = dev_alloc(DSPY_DTYPE_F32, DSPY_ADAMW_WORDS);
    for (int t = 1; t <= 3; t++) {
        float *g = rnd((size_t)n, t == 2 ? 5.0f : 0.1f), hp[DSPY_ADAMW_WORDS];
        dspy_adamw_pack(hp, t, 1e-3 / t, 0.9, 0.95, 1e-8, 0.1, t == 2 ? 0.25f : 1.0f);
        CHECK_OK(C->ops->adamw(C, HF(w, n), HF(g, n), HF(m, n), HF(v, n), HF(hp, DSPY_ADAMW_WORDS)));
        dspy_tensor gg = up(g, n);
        CHECK_OK(G->ops->copy(G, ghp.data, hp, sizeof hp, DSPY_COPY_H2D));
        CHECK_OK(G->ops->adamw(G, gw, gg, gm, gv, ghp));
        CHECK_OK(G->ops->sync(G));
        free(g);
        dev_free(gg);
    }
    float *hw = down(gw), *hm = down(gm), *hv = down(gv);
    expect_same("adamw 3 steps: w", hw, w, (size_t)n);
    expect_same("adamw 3 steps: m", hm, m, (size_t)n);
    expect_same("adamw 3 steps: v", hv, v, (size_t)n);
    free(w), free(m), free(v), free(hw), free(hm), free(hv);
    dev_free(gw), dev_free(gm), dev_free(gv), dev_free(ghp);
}

/* ---- the mixed-precision trainer's BF16 entries ----------------------------------------------- */

/* Host values rounded to BF16 in place; returns a device BF16 tensor holding them. */
static dspy_tensor up_bf16(float *h, int64_t n) {
    uint16_t *b = malloc(sizeof(uint16_t) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) b[i] = dspy_f32_to_bf16(h[i]), h[i] = dspy_bf16_to_f32(b[i]);
    dspy_tensor t = dev_alloc(DSPY_DTYPE_BF16, n);
    CHECK_OK(G->ops->copy(G, t.data, b, sizeof(uint16_t) * (size_t)n, DSPY_COPY_H2D));
    CHECK_OK(G->ops->sync(G));
    free(b);
    return t;
}
/* A device BF16 tensor widened to F32 on the host. */
static float *down_bf16(dspy_tensor t) {
    uint16_t *b = malloc(sizeof(uint16_t) * (size_t)(t.n ? t.n : 1));
    float *h = malloc(sizeof(float) * (size_t)(t.n ? t.n : 1));
    CHECK_OK(G->ops->copy(G, b, t.data, sizeof(uint16_t) * (size_t)t.n, DSPY_COPY_D2H));
    CHECK_OK(G->ops->sync(G));
    for (int64_t i = 0; i < t.n; i++) h[i] = dspy_bf16_to_f32(b[i]);
    free(b);
    return h;
}
/* got holds ref rounded to BF16: every value within half a BF16 ulp of ref, i.e. within 2^-8 of
 * |ref| (half an ulp is 2^-8 of the bottom of ref's binade). */
static void expect_bf16_of(const char *what, const float *got, const float *ref, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += !(fabsf(got[i] - ref[i]) <= fabsf(ref[i]) * (1.0f / 256.0f) + 1e-30f);
    check_report(bad == 0, __FILE__, __LINE__, "%s: %zu of %zu values beyond BF16 rounding", what, bad, n);
    printf("  %-52s within BF16 rounding: %s (%zu values)\n", what, bad ? "NO" : "yes", n);
}

/* got is ref's BF16 rounding up to the last bit of a partial sum rounded on the way: every value
 * within one BF16 ulp of ref (2^-7 of |ref|) or, where a rounded partial sum was larger than the
 * result (cancellation), within 2^-7 of the tensor's RMS on top; those must be rare (at most one
 * in 50,000 values). Used where cuDNN's atomic adds make two runs' partial sums differ in their
 * last bit. */
static void expect_bf16_ulp_of(const char *what, const float *got, const float *ref, size_t n) {
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)ref[i] * ref[i];
    const float rms = n ? (float)sqrt(ss / (double)n) : 0.0f;
    size_t beyond_ulp = 0, beyond_half = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        const float d = fabsf(got[i] - ref[i]), ulp = fabsf(ref[i]) * (1.0f / 128.0f) + 1e-30f;
        beyond_ulp += !(d <= ulp);
        beyond_half += !(d <= ulp * 0.5f);
        bad += !(d <= ulp + rms * (1.0f / 128.0f));
    }
    check_report(bad == 0 && beyond_ulp <= n / 50000, __FILE__, __LINE__,
                 "%s: %zu of %zu values beyond one BF16 ulp (at most %zu allowed), %zu beyond one ulp + 2^-7 RMS",
                 what, beyond_ulp, n, n / 50000, bad);
    printf("  %-52s within one BF16 ulp: %zu of %zu beyond (%zu beyond half an ulp, %zu beyond ulp + 2^-7 RMS)\n",
           what, beyond_ulp, n, beyond_half, bad);
}

/* RoPE (bwd: its backward, the BF16 trainer's dq and dk) in place on BF16 x (the trainer's q and
 * k): the CPU's F32 rotation of the same BF16-rounded values, rounded once (cos/sin may round
 * differently in rare ties: 1e-6 of F32 noise, far inside the half-ulp bound). The CPU refuses
 * BF16 (it trains in F32). */
static void one_rope_bf16(int N, int H, int HS, bool bwd) {
    char what[96];
    int64_t n = (int64_t)N * H * HS;
    float *x = rnd((size_t)n, 2), inv[64];
    int32_t *pos = rope_inputs(N, HS, inv);
    dspy_tensor dp = up_i32(pos, N), di = up(inv, HS / 2), dx = up_bf16(x, n);
    if (bwd) {
        uint16_t *h16 = calloc((size_t)n, sizeof(uint16_t));
        CHECK_STATUS(C->ops->rope_backward(C, dspy_bt(C, h16, n, DSPY_DTYPE_BF16), HI(pos, N), HF(inv, HS / 2), N, H,
                                           HS),
                     DSPY_ERR_ARG);
        free(h16);
        CHECK_OK(C->ops->rope_backward(C, HF(x, n), HI(pos, N), HF(inv, HS / 2), N, H, HS));
        CHECK_OK(G->ops->rope_backward(G, dx, dp, di, N, H, HS));
    } else {
        CHECK_OK(C->ops->rope(C, HF(x, n), HI(pos, N), HF(inv, HS / 2), N, H, HS));
        CHECK_OK(G->ops->rope(G, dx, dp, di, N, H, HS));
    }
    float *got = down_bf16(dx);
    snprintf(what, sizeof what, "%s BF16 x N=%d H=%d HS=%d", bwd ? "rope_backward" : "rope", N, H, HS);
    expect_bf16_of(what, got, x, (size_t)n);
    free(x), free(pos), free(got);
    dev_free(dp), dev_free(di), dev_free(dx);
}

/* One swiglu_backward case over BF16 gate / up (the trainer's saved GEMM outputs), dout BF16
 * when dout16: N x I random values, the CPU's F32 reference on the same rounded values, and
 * the device's F32 outputs from poisoned buffers within 1e-5 of it. The caller checks more on
 * the device tensors and host copies it holds, then frees them (swiglu_case_free). */
typedef struct swiglu_case {
    int N, I;
    int64_t n;
    float *g, *u, *d, *rg, *ru, *hg, *hu; /* inputs, CPU reference, device F32 outputs */
    dspy_tensor gg, gu, gd, fg, fu;       /* device inputs, F32 outputs */
} swiglu_case;

static void swiglu_case_run(swiglu_case *c, const char *what, bool dout16, int N, int I) {
    char label[128];
    c->N = N, c->I = I, c->n = (int64_t)c->N * c->I;
    const int64_t n = c->n;
    c->g = rnd((size_t)n, 6), c->u = rnd((size_t)n, 2), c->d = rnd((size_t)n, 1);
    c->gg = up_bf16(c->g, n), c->gu = up_bf16(c->u, n), c->gd = dout16 ? up_bf16(c->d, n) : up(c->d, n);
    c->rg = malloc(sizeof(float) * (size_t)n), c->ru = malloc(sizeof(float) * (size_t)n);
    CHECK_OK(C->ops->swiglu_backward(C, HF(c->rg, n), HF(c->ru, n), HF(c->d, n), HF(c->g, n), HF(c->u, n), c->N,
                                     c->I));
    c->fg = poisoned(n), c->fu = poisoned(n);
    CHECK_OK(G->ops->swiglu_backward(G, c->fg, c->fu, c->gd, c->gg, c->gu, c->N, c->I));
    c->hg = down(c->fg), c->hu = down(c->fu);
    snprintf(label, sizeof label, "swiglu_backward %s: dgate F32", what);
    expect_close(label, c->hg, c->rg, (size_t)n, 1e-5);
    snprintf(label, sizeof label, "swiglu_backward %s: dup F32", what);
    expect_close(label, c->hu, c->ru, (size_t)n, 1e-5);
}

static void swiglu_case_free(swiglu_case *c) {
    free(c->g), free(c->u), free(c->d), free(c->rg), free(c->ru), free(c->hg), free(c->hu);
    dev_free(c->gg), dev_free(c->gu), dev_free(c->gd), dev_free(c->fg), dev_free(c->fu);
}

/* swiglu_backward from BF16 gate / up against the CPU on the same rounded values: F32 outputs
 * 1e-5, BF16 outputs within half an ulp of the device's F32 ones; outputs overlapping the BF16
 * inputs are refused. */
static void test_swiglu_backward_bf16_in(void) {
    swiglu_case c;
    swiglu_case_run(&c, "BF16 gate/up", false, 37, 1001);
    const int64_t n = c.n;
    dspy_tensor bg = dev_alloc(DSPY_DTYPE_BF16, n), bu = dev_alloc(DSPY_DTYPE_BF16, n);
    CHECK_OK(G->ops->swiglu_backward(G, bg, bu, c.gd, c.gg, c.gu, c.N, c.I));
    float *b1 = down_bf16(bg), *b2 = down_bf16(bu);
    expect_bf16_of("swiglu_backward BF16 in and out: dgate", b1, c.hg, (size_t)n);
    expect_bf16_of("swiglu_backward BF16 in and out: dup", b2, c.hu, (size_t)n);
    CHECK_STATUS(G->ops->swiglu_backward(G, c.gu, bu, c.gd, c.gg, c.gu, c.N, c.I), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "overlap the BF16 gate / up");
    free(b1), free(b2);
    dev_free(bg), dev_free(bu);
    swiglu_case_free(&c);
}

/* Everything BF16 (the trainer's MLP backward) at sizes that take the 8-wide kernel (N x I a
 * multiple of 8, aligned), and at an odd size that does not: dgate and dup within BF16 rounding
 * of the device's F32 results from the same inputs, and of the CPU's. */
static void test_swiglu_backward_all_bf16(void) {
    static const int shapes[2][2] = {{33, 1024}, {37, 1001}};
    for (int k = 0; k < 2; k++) {
        char what[96];
        swiglu_case c;
        snprintf(what, sizeof what, "all BF16 N=%d I=%d", shapes[k][0], shapes[k][1]);
        swiglu_case_run(&c, what, true, shapes[k][0], shapes[k][1]);
        const int64_t n = c.n;
        dspy_tensor bg = dev_alloc(DSPY_DTYPE_BF16, n), bu = dev_alloc(DSPY_DTYPE_BF16, n);
        CHECK_OK(G->ops->fill(G, bg, NAN));
        CHECK_OK(G->ops->fill(G, bu, NAN));
        CHECK_OK(G->ops->swiglu_backward(G, bg, bu, c.gd, c.gg, c.gu, c.N, c.I));
        float *b1 = down_bf16(bg), *b2 = down_bf16(bu);
        snprintf(what, sizeof what, "swiglu_backward all BF16 N=%d I=%d: dgate", c.N, c.I);
        expect_bf16_of(what, b1, c.hg, (size_t)n);
        expect_close(what, b1, c.rg, (size_t)n, 4e-3);
        snprintf(what, sizeof what, "swiglu_backward all BF16 N=%d I=%d: dup", c.N, c.I);
        expect_bf16_of(what, b2, c.hu, (size_t)n);
        expect_close(what, b2, c.ru, (size_t)n, 4e-3);
        free(b1), free(b2);
        dev_free(bg), dev_free(bu);
        swiglu_case_free(&c);
    }
}

/* linear_backward_beta against the CPU's linear_backward on the same BF16-rounded operands: beta
 * 0 from NaN-poisoned outputs (the CPU from zeros), beta 1 from random ones; 1e-5. */
static void one_linear_backward_beta(int N, int Cc, int OC, float beta_di, float beta_dw) {
    char what[128];
    float *dout = rnd((size_t)N * OC, 1), *x = rnd((size_t)N * Cc, 1), *w = rnd((size_t)OC * Cc, 0.1f);
    dspy_tensor gdo = up_bf16(dout, (int64_t)N * OC), gx = up_bf16(x, (int64_t)N * Cc);
    dspy_tensor gw = up_bf16(w, (int64_t)OC * Cc);
    float *di = beta_di != 0.0f ? rnd((size_t)N * Cc, 1) : calloc((size_t)N * Cc, sizeof(float));
    float *dw = beta_dw != 0.0f ? rnd((size_t)OC * Cc, 1) : calloc((size_t)OC * Cc, sizeof(float));
    dspy_tensor gdi = beta_di != 0.0f ? up(di, (int64_t)N * Cc) : poisoned((int64_t)N * Cc);
    dspy_tensor gdw = beta_dw != 0.0f ? up(dw, (int64_t)OC * Cc) : poisoned((int64_t)OC * Cc);
    CHECK_OK(C->ops->linear_backward(C, HF(di, N * Cc), HF(dw, OC * Cc), NONE, HF(dout, N * OC), HF(x, N * Cc),
                                     HF(w, OC * Cc), N, Cc, OC));
    CHECK_OK(G->ops->linear_backward_beta(G, gdi, gdw, gdo, gx, gw, N, Cc, OC, beta_di, beta_dw));
    float *hdi = down(gdi), *hdw = down(gdw);
    snprintf(what, sizeof what, "linear_backward_beta N=%d C=%d OC=%d dinp beta %g", N, Cc, OC, (double)beta_di);
    expect_close(what, hdi, di, (size_t)N * Cc, 1e-5);
    snprintf(what, sizeof what, "linear_backward_beta N=%d C=%d OC=%d dw beta %g", N, Cc, OC, (double)beta_dw);
    expect_close(what, hdw, dw, (size_t)OC * Cc, 1e-5);
    free(dout), free(x), free(w), free(di), free(dw), free(hdi), free(hdw);
    dev_free(gdo), dev_free(gx), dev_free(gw), dev_free(gdi), dev_free(gdw);
}

static void test_linear_backward_beta(void) {
    one_linear_backward_beta(37, 72, 1001, 0.0f, 0.0f);
    one_linear_backward_beta(300, 256, 768, 0.0f, 1.0f);
    one_linear_backward_beta(300, 256, 768, 1.0f, 0.0f);
    one_linear_backward_beta(129, 2048, 8, 1.0f, 1.0f);
    /* no rows: beta 0 still defines the weight gradient (zeros) */
    dspy_tensor gdw = poisoned(8 * 16), none16 = dev_alloc(DSPY_DTYPE_BF16, 1);
    CHECK_OK(G->ops->linear_backward_beta(G, NONE, gdw, dspy_bt(G, none16.data, 0, DSPY_DTYPE_BF16),
                                          dspy_bt(G, none16.data, 0, DSPY_DTYPE_BF16), NONE, 0, 16, 8, 0.0f, 0.0f));
    float *h = down(gdw);
    size_t nz = 0;
    for (int i = 0; i < 8 * 16; i++) nz += h[i] != 0.0f;
    CHECK(nz == 0);
    free(h);
    CHECK_STATUS(G->ops->linear_backward_beta(G, NONE, gdw, dspy_bt(G, none16.data, 0, DSPY_DTYPE_BF16),
                                              dspy_bt(G, none16.data, 0, DSPY_DTYPE_BF16), NONE, 0, 16, 8, 0.0f, 0.5f),
                 DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "must each be 0 or 1");
    dev_free(gdw), dev_free(none16);
}

/* The device's AdamW state after adamw_bf16 steps against the CPU's w, m, v (n): w, m and v bit for
 * bit, and the BF16 working copy w16 the CPU's w rounded to BF16 bit for bit. */
static void expect_adamw_state(const char *what, dspy_tensor gw, dspy_tensor gm, dspy_tensor gv, dspy_tensor w16,
                               const float *w, const float *m, const float *v, int64_t n) {
    char label[96];
    float *hw = down(gw), *hm = down(gm), *hv = down(gv), *h16 = down_bf16(w16);
    float *r16 = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) r16[i] = dspy_bf16_to_f32(dspy_f32_to_bf16(w[i]));
    snprintf(label, sizeof label, "%s: w", what);
    expect_same(label, hw, w, (size_t)n);
    snprintf(label, sizeof label, "%s: m", what);
    expect_same(label, hm, m, (size_t)n);
    snprintf(label, sizeof label, "%s: v", what);
    expect_same(label, hv, v, (size_t)n);
    snprintf(label, sizeof label, "%s: w16 = BF16(w)", what);
    expect_same(label, h16, r16, (size_t)n);
    free(hw), free(hm), free(hv), free(h16), free(r16);
}

/* adamw_bf16: w, m, v bit-identical to the CPU's adamw, and w16 the updated w rounded to BF16 bit
 * for bit; a skipped step (NaN gscale) leaves all four as they were. */
static void test_adamw_bf16(void) {
    const int64_t n = 100003;
    float *w = rnd((size_t)n, 1), *m = calloc((size_t)n, sizeof(float)), *v = calloc((size_t)n, sizeof(float));
    dspy_tensor gw = up(w, n), gm = up(m, n), gv = up(v, n), ghp = dev_alloc(DSPY_DTYPE_F32, DSPY_ADAMW_WORDS);
    dspy_tensor g16 = dev_alloc(DSPY_DTYPE_BF16, n);
    for (int t = 1; t <= 4; t++) {
        float *g = rnd((size_t)n, 0.1f), hp[DSPY_ADAMW_WORDS];
        dspy_adamw_pack(hp, t, 1e-3 / t, 0.9, 0.95, 1e-8, 0.1, t == 4 ? NAN : t == 2 ? 0.25f : 1.0f);
        if (t < 4) CHECK_OK(C->ops->adamw(C, HF(w, n), HF(g, n), HF(m, n), HF(v, n), HF(hp, DSPY_ADAMW_WORDS)));
        dspy_tensor gg = up(g, n);
        CHECK_OK(G->ops->copy(G, ghp.data, hp, sizeof hp, DSPY_COPY_H2D));
        CHECK_OK(G->ops->adamw_bf16(G, gw, gg, gm, gv, ghp, g16));
        CHECK_OK(G->ops->sync(G));
        free(g);
        dev_free(gg);
    }
    expect_adamw_state("adamw_bf16, 3 steps + a skipped one", gw, gm, gv, g16, w, m, v, n);
    CHECK_STATUS(G->ops->adamw_bf16(G, gw, gw, gm, gv, ghp, dspy_bt(G, g16.data, n - 1, DSPY_DTYPE_BF16)),
                 DSPY_ERR_ARG);
    free(w), free(m), free(v);
    dev_free(gw), dev_free(gm), dev_free(gv), dev_free(ghp), dev_free(g16);
}

/* The single-pass step's BF16 weight gradients (optim.c wgrad16_step): adamw from a BF16 g is
 * the CPU's update from the same BF16-rounded values, bit for bit (w, m, v and the BF16 working
 * copy); grad_sumsq of a BF16 x is the CPU's double sum of squares of those values (1e-12);
 * linear_backward_beta's BF16 dw (beta 0) is the CPU's F32 weight gradient within BF16 rounding;
 * a BF16 dw with beta 1 and a BF16 x of a length not a multiple of 8 are refused. */
static void test_wgrad16(void) {
    const int64_t n = 100000; /* a multiple of 8 */
    float *w = rnd((size_t)n, 1), *m = calloc((size_t)n, sizeof(float)), *v = calloc((size_t)n, sizeof(float));
    dspy_tensor gw = up(w, n), gm = up(m, n), gv = up(v, n), ghp = dev_alloc(DSPY_DTYPE_F32, DSPY_ADAMW_WORDS);
    dspy_tensor w16 = dev_alloc(DSPY_DTYPE_BF16, n), sq = dev_alloc(DSPY_DTYPE_F64, 3);
    double ref_sq = 0.0, got_sq[3];
    for (int t = 1; t <= 3; t++) {
        float *g = rnd((size_t)n, 0.1f), hp[DSPY_ADAMW_WORDS];
        dspy_tensor gg = up_bf16(g, n); /* g now holds the rounded values */
        dspy_adamw_pack(hp, t, 1e-3 / t, 0.9, 0.95, 1e-8, 0.1, t == 2 ? 0.25f : 1.0f);
        CHECK_OK(C->ops->adamw(C, HF(w, n), HF(g, n), HF(m, n), HF(v, n), HF(hp, DSPY_ADAMW_WORDS)));
        CHECK_OK(G->ops->copy(G, ghp.data, hp, sizeof hp, DSPY_COPY_H2D));
        CHECK_OK(G->ops->adamw_bf16(G, gw, gg, gm, gv, ghp, w16));
        if (t == 3) {
            for (int64_t i = 0; i < n; i++) ref_sq += (double)g[i] * (double)g[i];
            CHECK_OK(G->ops->grad_sumsq(G, sq, 2, gg));
            CHECK_OK(G->ops->copy(G, got_sq, sq.data, sizeof got_sq, DSPY_COPY_D2H));
        }
        CHECK_OK(G->ops->sync(G));
        if (t == 3)
            CHECK_STATUS(G->ops->grad_sumsq(G, sq, 0, dspy_tensor_slice(gg, 0, n - 3)), DSPY_ERR_ARG);
        free(g);
        dev_free(gg);
    }
    expect_adamw_state("adamw from a BF16 g, 3 steps", gw, gm, gv, w16, w, m, v, n);
    check_report(fabs(got_sq[2] - ref_sq) <= 1e-12 * ref_sq, __FILE__, __LINE__,
                 "grad_sumsq of a BF16 x: %.17g, the CPU's %.17g", got_sq[2], ref_sq);
    printf("  grad_sumsq of a BF16 x (n %lld): %.3e relative to the CPU's\n", (long long)n,
           fabs(got_sq[2] - ref_sq) / ref_sq);
    free(w), free(m), free(v);
    dev_free(gw), dev_free(gm), dev_free(gv), dev_free(ghp), dev_free(w16), dev_free(sq);
    /* linear_backward_beta with a BF16 dw */
    const int N = 300, Cc = 256, OC = 768;
    float *dout = rnd((size_t)N * OC, 1), *x = rnd((size_t)N * Cc, 1);
    float *dw = calloc((size_t)OC * Cc, sizeof(float));
    dspy_tensor gdo = up_bf16(dout, (int64_t)N * OC), gx = up_bf16(x, (int64_t)N * Cc);
    CHECK_OK(C->ops->linear_backward(C, NONE, HF(dw, OC * Cc), NONE, HF(dout, N * OC), HF(x, N * Cc), NONE, N, Cc, OC));
    dspy_tensor gdw = poisoned16((int64_t)OC * Cc);
    CHECK_OK(G->ops->linear_backward_beta(G, NONE, gdw, gdo, gx, NONE, N, Cc, OC, 0.0f, 0.0f));
    float *hdw = down_bf16(gdw);
    expect_close("linear_backward_beta BF16 dw N=300 C=256 OC=768", hdw, dw, (size_t)OC * Cc, 4e-3);
    CHECK_STATUS(G->ops->linear_backward_beta(G, NONE, gdw, gdo, gx, NONE, N, Cc, OC, 0.0f, 1.0f), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "a BF16 dw is overwritten");
    free(dout), free(x), free(dw), free(hdw);
    dev_free(gdo), dev_free(gx), dev_free(gdw);
}

/* linear_add: res + the CPU's linear of the same BF16-rounded operands, 1e-5; into a separate out
 * (NaN-poisoned first) and in place on res; a partly overlapping out is refused. */
static void one_linear_add(int N, int Cc, int OC) {
    char what[128];
    float *x = rnd((size_t)N * Cc, 1), *w = rnd((size_t)OC * Cc, 0.1f), *res = rnd((size_t)N * OC, 2);
    dspy_tensor gx = up_bf16(x, (int64_t)N * Cc), gw = up_bf16(w, (int64_t)OC * Cc), gr = up(res, (int64_t)N * OC);
    float *ref = dup_f(res, (size_t)N * OC);
    CHECK_OK(C->ops->linear(C, HF(ref, N * OC), HF(x, N * Cc), HF(w, OC * Cc), NONE, N, Cc, OC, true));
    dspy_tensor go = poisoned((int64_t)N * OC);
    CHECK_OK(G->ops->linear_add(G, go, gx, gw, gr, N, Cc, OC));
    float *h1 = down(go);
    snprintf(what, sizeof what, "linear_add N=%d C=%d OC=%d (separate out)", N, Cc, OC);
    expect_close(what, h1, ref, (size_t)N * OC, 1e-5);
    CHECK_OK(G->ops->linear_add(G, gr, gx, gw, gr, N, Cc, OC));
    float *h2 = down(gr);
    snprintf(what, sizeof what, "linear_add N=%d C=%d OC=%d (out == res)", N, Cc, OC);
    expect_close(what, h2, ref, (size_t)N * OC, 1e-5);
    CHECK_STATUS(G->ops->linear_add(G, dspy_tensor_slice(go, 1, (int64_t)N * OC - 1), gx, gw,
                                    dspy_tensor_slice(go, 0, (int64_t)N * OC - 1), N, Cc, OC - 1),
                 DSPY_ERR_ARG);
    free(x), free(w), free(res), free(ref), free(h1), free(h2);
    dev_free(gx), dev_free(gw), dev_free(gr), dev_free(go);
}

/* BF16 dh (linear_backward_beta's BF16 dinp) into swiglu_backward's BF16 dout; the loss's BF16
 * dlogits: each within BF16 rounding of the F32 result (4e-3 relative). */
static void test_bf16_chain(void) {
    char what[128];
    /* dinp in BF16 */
    const int N = 300, Cc = 256, OC = 768;
    float *dout = rnd((size_t)N * OC, 1), *w = rnd((size_t)OC * Cc, 0.1f);
    dspy_tensor gdo = up_bf16(dout, (int64_t)N * OC), gw = up_bf16(w, (int64_t)OC * Cc);
    float *di = calloc((size_t)N * Cc, sizeof(float));
    CHECK_OK(C->ops->linear_backward(C, HF(di, N * Cc), NONE, NONE, HF(dout, N * OC), NONE, HF(w, OC * Cc), N, Cc, OC));
    dspy_tensor gdi = dev_alloc(DSPY_DTYPE_BF16, (int64_t)N * Cc);
    CHECK_OK(G->ops->linear_backward_beta(G, gdi, NONE, gdo, NONE, gw, N, Cc, OC, 0.0f, 1.0f));
    float *hdi = down_bf16(gdi);
    snprintf(what, sizeof what, "linear_backward_beta N=%d C=%d OC=%d BF16 dinp", N, Cc, OC);
    expect_close(what, hdi, di, (size_t)N * Cc, 4e-3);
    CHECK_STATUS(G->ops->linear_backward_beta(G, gdi, NONE, gdo, NONE, gw, N, Cc, OC, 1.0f, 1.0f), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "never accumulated");
    free(dout), free(w), free(di), free(hdi);
    dev_free(gdo), dev_free(gw), dev_free(gdi);
    /* swiglu_backward from a BF16 dout (and BF16 gate / up) */
    swiglu_case sc;
    swiglu_case_run(&sc, "BF16 dout", true, 37, 1001);
    /* F32 outputs over a BF16 dout are refused (dout viewed in dgate's own memory) */
    CHECK_STATUS(G->ops->swiglu_backward(G, sc.fg, sc.fu, dspy_bt(G, sc.fg.data, sc.n, DSPY_DTYPE_BF16), sc.gg, sc.gu,
                                         sc.N, sc.I),
                 DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "overlap dout");
    swiglu_case_free(&sc);
    /* cross_entropy with BF16 dlogits */
    const int M = 37, V = 1001;
    float *lg = rnd((size_t)M * V, 4), *rl = malloc(sizeof(float) * M), *rd = malloc(sizeof(float) * (size_t)M * V);
    int32_t *tg = malloc(sizeof(int32_t) * M);
    for (int i = 0; i < M; i++) tg[i] = irand(V);
    CHECK_OK(C->ops->cross_entropy(C, HF(rl, M), HF(rd, M * V), HF(lg, M * V), HI(tg, M), M, V, 0.5f));
    dspy_tensor glg = up(lg, (int64_t)M * V), gt = up_i32(tg, M), gl = poisoned(M);
    dspy_tensor gdl = dev_alloc(DSPY_DTYPE_BF16, (int64_t)M * V);
    CHECK_OK(G->ops->cross_entropy(G, gl, gdl, glg, gt, M, V, 0.5f));
    float *hl = down(gl), *hd = down_bf16(gdl);
    expect_close("cross_entropy BF16 dlogits: loss", hl, rl, (size_t)M, 1e-5);
    expect_close("cross_entropy BF16 dlogits: dlogits", hd, rd, (size_t)M * V, 4e-3);
    CHECK_STATUS(G->ops->cross_entropy(G, gl, dspy_bt(G, glg.data, (int64_t)M * V, DSPY_DTYPE_BF16), glg, gt, M, V,
                                       0.5f),
                 DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "a BF16 one must be separate");
    free(lg), free(rl), free(rd), free(tg), free(hl), free(hd);
    dev_free(glg), dev_free(gt), dev_free(gl), dev_free(gdl);
}

/* cross_entropy from BF16 logits (the trainer's lm_head output): V 1,001 (the element-wise
 * kernel) and 1,024 (8 at a time), dlogits BF16, F32 or none, against the CPU on the same
 * BF16-rounded logits: loss 1e-5, dlogits 1e-5 (F32) or BF16 rounding (4e-3); a confident row
 * and the first and last classes as targets; an overlapping dlogits refused. */
static void one_xent_bf16_logits(int M, int V) {
    char what[128];
    const int64_t n = (int64_t)M * V;
    float *lg = rnd((size_t)n, 4), *rl = malloc(sizeof(float) * M), *rd = malloc(sizeof(float) * (size_t)n);
    int32_t *tg = malloc(sizeof(int32_t) * M);
    for (int i = 0; i < M; i++) tg[i] = i == 0 ? 0 : i == 1 ? V - 1 : irand(V);
    lg[(size_t)2 * V + tg[2]] = 30;
    dspy_tensor glg = up_bf16(lg, n), gt = up_i32(tg, M); /* lg now holds the rounded values */
    CHECK_OK(C->ops->cross_entropy(C, HF(rl, M), HF(rd, n), HF(lg, n), HI(tg, M), M, V, 0.25f));
    for (int mode = 0; mode < 3; mode++) { /* dlogits BF16, F32, none */
        dspy_tensor gl = poisoned(M), gd = mode == 0 ? poisoned16(n) : mode == 1 ? poisoned(n) : NONE;
        CHECK_OK(G->ops->cross_entropy(G, gl, gd, glg, gt, M, V, 0.25f));
        float *hl = down(gl);
        snprintf(what, sizeof what, "cross_entropy BF16 logits M=%d V=%d (%s dlogits): loss", M, V,
                 mode == 0 ? "BF16" : mode == 1 ? "F32" : "no");
        expect_close(what, hl, rl, (size_t)M, 1e-5);
        if (mode < 2) {
            float *hd = mode == 0 ? down_bf16(gd) : down(gd);
            snprintf(what, sizeof what, "cross_entropy BF16 logits M=%d V=%d: %s dlogits", M, V, mode ? "F32" : "BF16");
            expect_close(what, hd, rd, (size_t)n, mode == 0 ? 4e-3 : 1e-5);
            free(hd);
            dev_free(gd);
        }
        free(hl);
        dev_free(gl);
    }
    dspy_tensor gl = poisoned(M);
    CHECK_STATUS(G->ops->cross_entropy(G, gl, dspy_bt(G, glg.data, n, DSPY_DTYPE_BF16), glg, gt, M, V, 0.25f),
                 DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "must be separate");
    free(lg), free(rl), free(rd), free(tg);
    dev_free(glg), dev_free(gt), dev_free(gl);
}

static void test_bf16_entries(void) {
    one_rope_bf16(37, 6, 16, false);
    one_rope_bf16(37, 12, 64, false);
    one_rope_bf16(5, 3, 128, false);
    one_rope_bf16(37, 6, 16, true);
    one_rope_bf16(37, 12, 64, true);
    one_rope_bf16(5, 3, 128, true);
    test_swiglu_backward_bf16_in();
    test_swiglu_backward_all_bf16();
    one_xent_bf16_logits(37, 1001);
    one_xent_bf16_logits(37, 1024);
    test_linear_backward_beta();
    test_adamw_bf16();
    test_wgrad16();
    one_linear_add(37, 72, 1001);
    one_linear_add(300, 256, 768);
    test_bf16_chain();
}

/* ---- attention_train and its backward ------------------------------------------------------ */

/* The mask of ops.h, written out: row t sees key j <= t of its own example or of the shared prefix. */
static bool ref_sees(const int32_t *start, int prefix, int t, int j) {
    return j <= t && (j >= start[t] || j < prefix);
}

/* One attention case on the host: the packed examples' start array, random q, k, v and dout (q,
 * k, v rounded to BF16 in place and uploaded as BF16 into gb[3] when gb is given), and the CPU's
 * forward and backward of them: the reference every CUDA path is held to. */
typedef struct att_host {
    int T;
    int64_t nq, nkv, nl;
    int32_t *start;
    float *q, *k, *v, *dout, *out, *lse, *dq, *dk, *dv;
} att_host;

static void att_host_make(att_host *a, int NH, int NKV, int HS, int nex, const int *lens, int prefix, dspy_tensor *gb) {
    int T = 0;
    for (int e = 0; e < nex; e++) T += lens[e];
    a->T = T;
    a->start = malloc(sizeof(int32_t) * (size_t)T);
    for (int e = 0, t = 0; e < nex; e++)
        for (int i = 0; i < lens[e]; i++, t++) a->start[t] = t - i;
    const int64_t nq = (int64_t)T * NH * HS, nkv = (int64_t)T * NKV * HS, nl = (int64_t)T * NH;
    a->nq = nq, a->nkv = nkv, a->nl = nl;
    a->q = rnd((size_t)nq, 2), a->k = rnd((size_t)nkv, 2), a->v = rnd((size_t)nkv, 1), a->dout = rnd((size_t)nq, 1);
    if (gb) gb[0] = up_bf16(a->q, nq), gb[1] = up_bf16(a->k, nkv), gb[2] = up_bf16(a->v, nkv);
    a->out = malloc(sizeof(float) * (size_t)nq), a->lse = malloc(sizeof(float) * (size_t)nl);
    a->dq = malloc(sizeof(float) * (size_t)nq), a->dk = malloc(sizeof(float) * (size_t)nkv);
    a->dv = malloc(sizeof(float) * (size_t)nkv);
    CHECK_OK(C->ops->attention_train(C, HF(a->out, nq), HF(a->lse, nl), HF(a->q, nq), HF(a->k, nkv), HF(a->v, nkv),
                                     HI(a->start, T), prefix, T, NH, NKV, HS));
    CHECK_OK(C->ops->attention_train_backward(C, HF(a->dq, nq), HF(a->dk, nkv), HF(a->dv, nkv), HF(a->dout, nq),
                                              HF(a->out, nq), HF(a->lse, nl), HF(a->q, nq), HF(a->k, nkv),
                                              HF(a->v, nkv), HI(a->start, T), prefix, T, NH, NKV, HS));
}

static void att_host_free(att_host *a) {
    free(a->start), free(a->q), free(a->k), free(a->v), free(a->dout), free(a->out), free(a->lse), free(a->dq);
    free(a->dk), free(a->dv);
}

/* Double-precision reference of the forward and backward (the formulas of ops.h). */
static void att_ref(const float *q, const float *k, const float *v, const float *dout, const int32_t *start,
                    int prefix, int T, int NH, int NKV, int HS, double *out, double *lse, double *dq, double *dk,
                    double *dv) {
    const double sc = 1.0 / sqrt((double)HS);
    const int group = NH / NKV;
    double *p = malloc(sizeof(double) * (size_t)T);
    memset(dq, 0, sizeof(double) * (size_t)T * NH * HS);
    memset(dk, 0, sizeof(double) * (size_t)T * NKV * HS);
    memset(dv, 0, sizeof(double) * (size_t)T * NKV * HS);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < NH; h++) {
            const int kvh = h / group;
            const float *qv = q + ((size_t)t * NH + h) * HS, *go = dout + ((size_t)t * NH + h) * HS;
            double m = -INFINITY, sum = 0;
            for (int j = 0; j <= t; j++) {
                if (!ref_sees(start, prefix, t, j)) continue;
                double s = 0;
                for (int d = 0; d < HS; d++) s += (double)qv[d] * k[((size_t)j * NKV + kvh) * HS + d];
                p[j] = s * sc;
                m = fmax(m, p[j]);
            }
            for (int j = 0; j <= t; j++)
                if (ref_sees(start, prefix, t, j)) sum += exp(p[j] - m);
            lse[(size_t)t * NH + h] = m + log(sum);
            double *o = out + ((size_t)t * NH + h) * HS, D = 0;
            for (int d = 0; d < HS; d++) o[d] = 0;
            for (int j = 0; j <= t; j++) {
                if (!ref_sees(start, prefix, t, j)) continue;
                p[j] = exp(p[j] - m) / sum;
                for (int d = 0; d < HS; d++) o[d] += p[j] * v[((size_t)j * NKV + kvh) * HS + d];
            }
            for (int d = 0; d < HS; d++) D += go[d] * o[d];
            for (int j = 0; j <= t; j++) {
                if (!ref_sees(start, prefix, t, j)) continue;
                const size_t kr = ((size_t)j * NKV + kvh) * HS;
                double dp = 0;
                for (int d = 0; d < HS; d++) dp += (double)go[d] * v[kr + d];
                const double ds = p[j] * (dp - D) * sc;
                for (int d = 0; d < HS; d++) {
                    dq[((size_t)t * NH + h) * HS + d] += ds * k[kr + d];
                    dk[kr + d] += ds * qv[d];
                    dv[kr + d] += p[j] * go[d];
                }
            }
        }
    free(p);
}

static void expect_ref(const char *what, const float *gpu, const float *cpu, const double *exact, size_t n,
                       double tol) {
    double eg = parity_rel_d(gpu, exact, n), ec = parity_rel_d(cpu, exact, n);
    check_report(eg <= tol, __FILE__, __LINE__, "%s vs double: relative error %.3g > %.1g", what, eg, tol);
    printf("  %-52s vs double: cuda %.2e, cpu %.2e (tol %.0e)\n", what, eg, ec, tol);
}

static void one_attention(const char *name, int NH, int NKV, int HS, int nex, const int *lens, int prefix) {
    char what[128];
    att_host rf;
    att_host_make(&rf, NH, NKV, HS, nex, lens, prefix, NULL);
    const int T = rf.T;
    const int64_t nq = rf.nq, nkv = rf.nkv, nl = rf.nl;
    int32_t *start = rf.start;
    float *q = rf.q, *k = rf.k, *v = rf.v, *dout = rf.dout, *out = rf.out, *lse = rf.lse, *dq = rf.dq, *dk = rf.dk,
          *dv = rf.dv;
    dspy_tensor gq = up(q, nq), gk = up(k, nkv), gv = up(v, nkv), gs = up_i32(start, T);
    dspy_tensor go = poisoned(nq), gl = poisoned(nl);
    { /* a BF16 out needs BF16 q, k, v (CUDA), and the CPU reference takes F32 only */
        dspy_tensor g16 = poisoned16(nq);
        CHECK_STATUS(G->ops->attention_train(G, g16, gl, gq, gk, gv, gs, prefix, T, NH, NKV, HS), DSPY_ERR_ARG);
        dev_free(g16);
        uint16_t *h16 = calloc((size_t)nq, sizeof(uint16_t));
        CHECK_STATUS(C->ops->attention_train(C, dspy_bt(C, h16, nq, DSPY_DTYPE_BF16), HF(lse, nl), HF(q, nq),
                                             HF(k, nkv), HF(v, nkv), HI(start, T), prefix, T, NH, NKV, HS),
                     DSPY_ERR_ARG);
        free(h16);
    }
    CHECK_OK(G->ops->attention_train(G, go, gl, gq, gk, gv, gs, prefix, T, NH, NKV, HS));
    float *ho = down(go), *hl = down(gl);
    snprintf(what, sizeof what, "%s T=%d: out", name, T);
    expect_close(what, ho, out, (size_t)nq, 1e-5);
    snprintf(what, sizeof what, "%s T=%d: lse", name, T);
    expect_close(what, hl, lse, (size_t)nl, 1e-5);
    /* the backward from the same saved out and lse on both sides (the CPU's), so that it is
     * compared alone */
    dspy_tensor gdo = up(dout, nq), gout = up(out, nq), glse = up(lse, nl);
    dspy_tensor gdq = poisoned(nq), gdk = poisoned(nkv), gdv = poisoned(nkv);
    CHECK_OK(G->ops->attention_train_backward(G, gdq, gdk, gdv, gdo, gout, glse, gq, gk, gv, gs, prefix, T, NH, NKV, HS));
    float *hdq = down(gdq), *hdk = down(gdk), *hdv = down(gdv);
    snprintf(what, sizeof what, "%s T=%d: dq", name, T);
    expect_close(what, hdq, dq, (size_t)nq, 3e-5);
    snprintf(what, sizeof what, "%s T=%d: dk", name, T);
    expect_close(what, hdk, dk, (size_t)nkv, 3e-5);
    snprintf(what, sizeof what, "%s T=%d: dv", name, T);
    expect_close(what, hdv, dv, (size_t)nkv, 3e-5);
    /* against double precision */
    double *rout = malloc(sizeof(double) * (size_t)nq), *rlse = malloc(sizeof(double) * (size_t)nl);
    double *rdq = malloc(sizeof(double) * (size_t)nq), *rdk = malloc(sizeof(double) * (size_t)nkv);
    double *rdv = malloc(sizeof(double) * (size_t)nkv);
    att_ref(q, k, v, dout, start, prefix, T, NH, NKV, HS, rout, rlse, rdq, rdk, rdv);
    snprintf(what, sizeof what, "%s: out", name);
    expect_ref(what, ho, out, rout, (size_t)nq, 1e-5);
    snprintf(what, sizeof what, "%s: lse", name);
    expect_ref(what, hl, lse, rlse, (size_t)nl, 1e-5);
    snprintf(what, sizeof what, "%s: dq", name);
    expect_ref(what, hdq, dq, rdq, (size_t)nq, 3e-5);
    snprintf(what, sizeof what, "%s: dk", name);
    expect_ref(what, hdk, dk, rdk, (size_t)nkv, 3e-5);
    snprintf(what, sizeof what, "%s: dv", name);
    expect_ref(what, hdv, dv, rdv, (size_t)nkv, 3e-5);
    att_host_free(&rf);
    free(ho), free(hl), free(hdq), free(hdk), free(hdv), free(rout), free(rlse), free(rdq), free(rdk), free(rdv);
    dspy_tensor all[] = {gq, gk, gv, gs, go, gl, gdo, gout, glse, gdq, gdk, gdv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
}

/* The attention in the CPU reference's terms, for check_out16: the BF16 q, k, v (gb), start,
 * dout on the device; the CPU's dq, dk, dv (from its F32 out); the GPU's F32-out forward (ho, hl). */
typedef struct att_case {
    const char *name;
    int T, NH, NKV, HS, prefix;
    dspy_tensor *gb, gs, gdo;
    const float *ho, *hl, *dq, *dk, *dv;
    bool one_key; /* every row sees one key: dq and dk are rounding noise (not compared) */
} att_case;

/* A BF16 out (kern/ops.h, the BF16 trainer's att), where the flash or fused kernels take the call
 * (takes): the forward writes the BF16 rounding of its F32 out bit for bit (the same kernels, the
 * value rounded once) and the same lse bits; the backward from that BF16 out and lse matches the
 * CPU's dq, dk, dv within the BF16 tolerance (1e-2). Elsewhere (other head sizes, the WMMA
 * kernels) both entries refuse a BF16 out (ARG). */
static void check_out16(const att_case *c, const char *vn, bool takes) {
    char what[192];
    const int64_t nq = (int64_t)c->T * c->NH * c->HS, nkv = (int64_t)c->T * c->NKV * c->HS, nl = (int64_t)c->T * c->NH;
    dspy_tensor go = poisoned16(nq), gl = poisoned(nl), gdq = poisoned(nq), gdk = poisoned(nkv), gdv = poisoned(nkv);
    dspy_status fst = G->ops->attention_train(G, go, gl, c->gb[0], c->gb[1], c->gb[2], c->gs, c->prefix, c->T, c->NH,
                                              c->NKV, c->HS);
    if (!takes) {
        CHECK_STATUS(fst, DSPY_ERR_ARG);
        CHECK_CONTAINS(dspy_errmsg(), "BF16 out");
        CHECK_STATUS(G->ops->attention_train_backward(G, gdq, gdk, gdv, c->gdo, go, gl, c->gb[0], c->gb[1], c->gb[2],
                                                      c->gs, c->prefix, c->T, c->NH, c->NKV, c->HS),
                     DSPY_ERR_ARG);
        printf("  %-52s BF16 out refused (HS %d)\n", c->name, c->HS);
    } else {
        CHECK_OK(fst);
        float *h16 = down_bf16(go), *hl = down(gl), *r16 = malloc(sizeof(float) * (size_t)nq);
        for (int64_t i = 0; i < nq; i++) r16[i] = dspy_bf16_to_f32(dspy_f32_to_bf16(c->ho[i]));
        snprintf(what, sizeof what, "%s [%s]: BF16 out", c->name, vn);
        expect_same(what, h16, r16, (size_t)nq);
        snprintf(what, sizeof what, "%s [%s]: lse (BF16 out)", c->name, vn);
        expect_same(what, hl, c->hl, (size_t)nl);
        CHECK_OK(G->ops->attention_train_backward(G, gdq, gdk, gdv, c->gdo, go, gl, c->gb[0], c->gb[1], c->gb[2], c->gs,
                                                  c->prefix, c->T, c->NH, c->NKV, c->HS));
        float *hdq = down(gdq), *hdk = down(gdk), *hdv = down(gdv);
        if (!c->one_key) {
            snprintf(what, sizeof what, "%s [%s]: dq (BF16 out)", c->name, vn);
            expect_close(what, hdq, c->dq, (size_t)nq, 1e-2);
            snprintf(what, sizeof what, "%s [%s]: dk (BF16 out)", c->name, vn);
            expect_close(what, hdk, c->dk, (size_t)nkv, 1e-2);
        }
        snprintf(what, sizeof what, "%s [%s]: dv (BF16 out)", c->name, vn);
        expect_close(what, hdv, c->dv, (size_t)nkv, 1e-2);
        free(h16), free(hl), free(r16), free(hdq), free(hdk), free(hdv);
    }
    dspy_tensor outs[] = {go, gl, gdq, gdk, gdv};
    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) dev_free(outs[i]);
}

/* The tensor-core path (BF16 q, k, v; train_attention_tc.cu) against the CPU's F32 attention of
 * the same BF16-rounded q, k, v: the products are exact in F32, so the differences are the
 * BF16 rounding of P, dS and dout inside the kernels: out, dq, dk, dv within 1e-2 relative
 * (measured ~3e-3), lse within 1e-5 (F32 scores). Both backward passes start from the CPU's
 * out and lse. */
static void one_attention_bf16(const char *name, int NH, int NKV, int HS, int nex, const int *lens, int prefix) {
    char what[128];
    dspy_tensor gb[3]; /* q, k, v rounded to BF16 on the host; the device gets the BF16 bits */
    att_host rf;
    att_host_make(&rf, NH, NKV, HS, nex, lens, prefix, gb);
    const int T = rf.T;
    const int64_t nq = rf.nq, nkv = rf.nkv, nl = rf.nl;
    int32_t *start = rf.start;
    float *k = rf.k, *v = rf.v, *dout = rf.dout, *out = rf.out, *lse = rf.lse, *dq = rf.dq, *dk = rf.dk, *dv = rf.dv;
    dspy_tensor gs = up_i32(start, T), gdo = up(dout, nq), gout = up(out, nq), glse = up(lse, nl);
    /* the flash shapes (HS 64 and 128) under the defaults and each kernel variant of
     * train_attention_fa.cu (DSPY_CUDA_FA: forward, dk/dv; between them every kernel), the rest once */
    static const char *const variants[] = {NULL, "00", "11", "22"};
    const int nvar = (HS == 64 || HS == 128) && !getenv("DSPY_CUDA_TRAIN_ATTN") ? (int)(sizeof variants / sizeof variants[0]) : 1;
    for (int vi = 0; vi < nvar; vi++) {
        if (variants[vi]) setenv("DSPY_CUDA_FA", variants[vi], 1);
        const char *vn = variants[vi] ? variants[vi] : "default";
        dspy_tensor go = poisoned(nq), gl = poisoned(nl);
        CHECK_OK(G->ops->attention_train(G, go, gl, gb[0], gb[1], gb[2], gs, prefix, T, NH, NKV, HS));
        float *ho = down(go), *hl = down(gl);
        snprintf(what, sizeof what, "%s T=%d [%s]: out", name, T, vn);
        expect_close(what, ho, out, (size_t)nq, 1e-2);
        snprintf(what, sizeof what, "%s T=%d [%s]: lse", name, T, vn);
        expect_close(what, hl, lse, (size_t)nl, 1e-5);
        dspy_tensor gdq = poisoned(nq), gdk = poisoned(nkv), gdv = poisoned(nkv);
        CHECK_OK(G->ops->attention_train_backward(G, gdq, gdk, gdv, gdo, gout, glse, gb[0], gb[1], gb[2], gs, prefix, T,
                                                  NH, NKV, HS));
        float *hdq = down(gdq), *hdk = down(gdk), *hdv = down(gdv);
        int all_single = 1;
        for (int e = 0; e < nex; e++) all_single &= lens[e] == 1;
        if (all_single) {
            /* One key per row: P = 1, so dS = dP - rowsum(dout * out) cancels to exactly 0 and dq, dk
             * are rounding noise on both sides (a relative error between two noises says nothing).
             * Held instead against the size dq would have without the cancellation:
             * rms(dout) * rms(v) * rms(k) (dP ~ dout.v summed over HS, times the 1/sqrt(HS) scale). */
            double natural = rms_f(dout, (size_t)nq) * rms_f(v, (size_t)nkv) * rms_f(k, (size_t)nkv);
            snprintf(what, sizeof what, "%s T=%d [%s]: dq (analytically 0)", name, T, vn);
            expect_near_zero(what, hdq, (size_t)nq, 1e-2 * natural);
            snprintf(what, sizeof what, "%s T=%d [%s]: dk (analytically 0)", name, T, vn);
            expect_near_zero(what, hdk, (size_t)nkv, 1e-2 * natural);
        } else {
            snprintf(what, sizeof what, "%s T=%d [%s]: dq", name, T, vn);
            expect_close(what, hdq, dq, (size_t)nq, 1e-2);
            snprintf(what, sizeof what, "%s T=%d [%s]: dk", name, T, vn);
            expect_close(what, hdk, dk, (size_t)nkv, 1e-2);
    }
    snprintf(what, sizeof what, "%s T=%d [%s]: dv", name, T, vn);
    expect_close(what, hdv, dv, (size_t)nkv, 1e-2);
    const char *wm = getenv("DSPY_CUDA_TRAIN_ATTN");
    const att_case ac = {name, T, NH, NKV, HS, prefix, gb, gs, gdo, ho, hl, dq, dk, dv, all_single != 0};
    check_out16(&ac, vn, (HS == 64 || HS == 128) && !(wm && strcmp(wm, "wmma") == 0));
    /* mixed dtypes are refused */
    CHECK_STATUS(G->ops->attention_train(G, go, gl, gb[0], gout, gb[2], gs, prefix, T, NH, NKV, HS), DSPY_ERR_ARG);
    free(ho), free(hl), free(hdq), free(hdk), free(hdv);
    dspy_tensor outs[] = {go, gl, gdq, gdk, gdv};
    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) dev_free(outs[i]);
    unsetenv("DSPY_CUDA_FA");
    }
    att_host_free(&rf);
    dspy_tensor all[] = {gb[0], gb[1], gb[2], gs, gdo, gout, glse};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
}

static void test_attention_train_bf16(void) {
    int l37[3] = {10, 1, 26};
    one_attention_bf16("attention_train BF16 NH=4 NKV=2 HS=16", 4, 2, 16, 3, l37, 0);
    int l300[4] = {70, 5, 130, 95};
    one_attention_bf16("attention_train BF16 NH=8 NKV=2 HS=64 packed", 8, 2, 64, 4, l300, 0);
    int l200[1] = {200};
    one_attention_bf16("attention_train BF16 NH=4 NKV=4 HS=128 one example", 4, 4, 128, 1, l200, 0);
    int l129[2] = {64, 65};
    one_attention_bf16("attention_train BF16 NH=6 NKV=3 HS=80", 6, 3, 80, 2, l129, 0);
    int l1[1] = {1};
    one_attention_bf16("attention_train BF16 T=1", 2, 1, 64, 1, l1, 0);
    int lmany[8] = {1, 2, 3, 64, 1, 40, 33, 7};
    one_attention_bf16("attention_train BF16 NH=2 NKV=1 HS=32 8 examples", 2, 1, 32, 8, lmany, 0);
    /* the flash kernels (HS 64 and 128): odd lengths, examples starting and ending inside tiles
     * (rows whose first key tile is entirely another example's), a Llama-sized KV group of 4
     * (dk, dv summed atomically) and one without grouping (written directly), many key tiles */
    int lodd[7] = {1, 63, 64, 65, 127, 3, 200};
    one_attention_bf16("attention_train BF16 flash NH=4 NKV=1 HS=64 odd packed", 4, 1, 64, 7, lodd, 0);
    int l128[4] = {33, 150, 1, 90};
    one_attention_bf16("attention_train BF16 flash NH=4 NKV=2 HS=128 packed", 4, 2, 128, 4, l128, 0);
    one_attention_bf16("attention_train BF16 flash NH=3 NKV=3 HS=64 odd packed", 3, 3, 64, 7, lodd, 0);
    int llong[3] = {1000, 1041, 7};
    one_attention_bf16("attention_train BF16 flash NH=8 NKV=2 HS=64 long", 8, 2, 64, 3, llong, 0);
    int l1k[1] = {1029};
    one_attention_bf16("attention_train BF16 flash NH=2 NKV=1 HS=128 one long example", 2, 1, 128, 1, l1k, 0);
    /* many packed examples of odd lengths at the Llama-1B head layout (a KV group of 4): the 128-row
     * and 128-key CTAs of the wider kernels span several examples and end past T */
    int l41[41];
    for (int e = 0; e < 41; e++) l41[e] = 1 + (e * 37 + 11) % 131;
    l41[7] = 1, l41[8] = 128, l41[9] = 129, l41[20] = 127;
    one_attention_bf16("attention_train BF16 flash NH=8 NKV=2 HS=64 41 examples", 8, 2, 64, 41, l41, 0);
    int lp41[41] = {200}; /* a 200-token prefix seen by 40 continuations */
    for (int e = 1; e < 41; e++) lp41[e] = l41[e - 1];
    one_attention_bf16("attention_train BF16 flash prefix 200 NH=8 NKV=2 HS=64 41 examples", 8, 2, 64, 41, lp41, 200);
    /* the WMMA kernels on the shapes the flash kernels take by default */
    setenv("DSPY_CUDA_TRAIN_ATTN", "wmma", 1);
    one_attention_bf16("attention_train BF16 wmma NH=4 NKV=1 HS=64 odd packed", 4, 1, 64, 7, lodd, 0);
    one_attention_bf16("attention_train BF16 wmma NH=4 NKV=2 HS=128 packed", 4, 2, 128, 4, l128, 0);
    unsetenv("DSPY_CUDA_TRAIN_ATTN");
    /* a shared prefix (the first example) seen by every later row: prefixes ending inside a
     * tile and on a tile edge, continuations of one token, a KV group of 4 (atomic dk, dv), the
     * tutorial's shape (a 1,300-token prompt and ~280-token continuations) */
    int lpodd[8] = {100, 1, 63, 64, 65, 127, 3, 200};
    one_attention_bf16("attention_train BF16 flash prefix 100 NH=4 NKV=1 HS=64", 4, 1, 64, 8, lpodd, 100);
    one_attention_bf16("attention_train BF16 flash prefix 100 NH=3 NKV=3 HS=64", 3, 3, 64, 8, lpodd, 100);
    one_attention_bf16("attention_train BF16 flash prefix 33 NH=4 NKV=2 HS=128", 4, 2, 128, 4, l128, 33);
    int lp128[3] = {128, 64, 70};
    one_attention_bf16("attention_train BF16 flash prefix 128 NH=2 NKV=1 HS=128", 2, 1, 128, 3, lp128, 128);
    int lt2[5] = {1300, 280, 281, 279, 7};
    one_attention_bf16("attention_train BF16 flash prefix 1300 NH=8 NKV=2 HS=64", 8, 2, 64, 5, lt2, 1300);
    one_attention_bf16("attention_train BF16 prefix 10 NH=4 NKV=2 HS=16", 4, 2, 16, 3, l37, 10);
    one_attention_bf16("attention_train BF16 prefix 64 NH=6 NKV=3 HS=80", 6, 3, 80, 2, l129, 64);
    setenv("DSPY_CUDA_TRAIN_ATTN", "wmma", 1);
    one_attention_bf16("attention_train BF16 wmma prefix 100 NH=4 NKV=1 HS=64", 4, 1, 64, 8, lpodd, 100);
    one_attention_bf16("attention_train BF16 wmma prefix 33 NH=4 NKV=2 HS=128", 4, 2, 128, 4, l128, 33);
    unsetenv("DSPY_CUDA_TRAIN_ATTN");
}

/* cuDNN's fused attention (train_attention_cudnn.cu; DSPY_CUDA_CUDNN_ATTN=1: cuDNN must load, or
 * the layout call fails and says why) against the CPU's F32 attention of the same BF16-rounded
 * q, k, v, after attention_train_layout gave the examples' count and longest: out, dq, dk, dv
 * 1e-2 (P and dS in BF16 inside, out and dk/dv written through BF16), lse 1e-5 (F32 scores).
 * The backward starts from the CPU's out and lse. With a prefix the call runs as two cuDNN graphs
 * (train_attention_split.cu; its own cases: test_attention_train_split). */
static void one_attention_cudnn(const char *name, int NH, int NKV, int HS, int nex, const int *lens, int prefix) {
    char what[160];
    int T = 0, longest = 0;
    for (int e = 0; e < nex; e++) T += lens[e], longest = lens[e] > longest ? lens[e] : longest;
    dspy_tensor gb[3];
    att_host rf;
    att_host_make(&rf, NH, NKV, HS, nex, lens, prefix, gb);
    const int64_t nq = rf.nq, nkv = rf.nkv, nl = rf.nl;
    int32_t *start = rf.start;
    float *k = rf.k, *v = rf.v, *dout = rf.dout, *out = rf.out, *lse = rf.lse, *dq = rf.dq, *dk = rf.dk, *dv = rf.dv;
    dspy_tensor gq = gb[0], gk = gb[1], gv = gb[2];
    dspy_tensor gs = up_i32(start, T), gdo = up(dout, nq), gout = up(out, nq), glse = up(lse, nl);
    CHECK_OK(G->ops->attention_train_layout(G, gs, T, nex, longest));
    dspy_tensor go = poisoned(nq), gl = poisoned(nl);
    CHECK_OK(G->ops->attention_train(G, go, gl, gq, gk, gv, gs, prefix, T, NH, NKV, HS));
    float *ho = down(go), *hl = down(gl);
    snprintf(what, sizeof what, "%s T=%d: out", name, T);
    expect_close(what, ho, out, (size_t)nq, 1e-2);
    snprintf(what, sizeof what, "%s T=%d: lse", name, T);
    expect_close(what, hl, lse, (size_t)nl, 1e-5);
    dspy_tensor gdq = poisoned(nq), gdk = poisoned(nkv), gdv = poisoned(nkv);
    CHECK_OK(G->ops->attention_train_backward(G, gdq, gdk, gdv, gdo, gout, glse, gq, gk, gv, gs, prefix, T, NH, NKV,
                                              HS));
    float *hdq = down(gdq), *hdk = down(gdk), *hdv = down(gdv);
    if (longest == 1) { /* one key per row: dq and dk are 0 up to rounding (see one_attention_bf16) */
        double natural = rms_f(dout, (size_t)nq) * rms_f(v, (size_t)nkv) * rms_f(k, (size_t)nkv);
        snprintf(what, sizeof what, "%s T=%d: dq (analytically 0)", name, T);
        expect_near_zero(what, hdq, (size_t)nq, 1e-2 * natural);
        snprintf(what, sizeof what, "%s T=%d: dk (analytically 0)", name, T);
        expect_near_zero(what, hdk, (size_t)nkv, 1e-2 * natural);
    } else {
        snprintf(what, sizeof what, "%s T=%d: dq", name, T);
        expect_close(what, hdq, dq, (size_t)nq, 1e-2);
        snprintf(what, sizeof what, "%s T=%d: dk", name, T);
        expect_close(what, hdk, dk, (size_t)nkv, 1e-2);
    }
    snprintf(what, sizeof what, "%s T=%d: dv", name, T);
    expect_close(what, hdv, dv, (size_t)nkv, 1e-2);
    const att_case ac = {name, T, NH, NKV, HS, prefix, gb, gs, gdo, ho, hl, dq, dk, dv, longest == 1};
    check_out16(&ac, prefix ? "split" : "cudnn", true);
    free(ho), free(hl), free(hdq), free(hdk), free(hdv);
    att_host_free(&rf);
    dspy_tensor all[] = {gq, gk, gv, gs, gdo, gout, glse, go, gl, gdq, gdk, gdv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
}

static void test_attention_train_cudnn(void) {
    setenv("DSPY_CUDA_CUDNN_ATTN", "1", 1);
    /* the planning call (the trainer's, at plan time): scratch for the plan's rows */
    CHECK_OK(G->ops->attention_train_layout(G, dspy_bt(G, NULL, 0, DSPY_DTYPE_I32), 4096, 0, 0));
    int lodd[7] = {1, 63, 64, 65, 127, 3, 200};
    one_attention_cudnn("attention_train cudnn NH=8 NKV=2 HS=64 odd packed", 8, 2, 64, 7, lodd, 0);
    int l300[4] = {70, 5, 130, 95};
    one_attention_cudnn("attention_train cudnn NH=4 NKV=4 HS=64 packed", 4, 4, 64, 4, l300, 0);
    int l128[4] = {33, 150, 1, 90};
    one_attention_cudnn("attention_train cudnn NH=8 NKV=2 HS=128 packed", 8, 2, 128, 4, l128, 0);
    int l1k[1] = {1029};
    one_attention_cudnn("attention_train cudnn NH=4 NKV=4 HS=128 one long example", 4, 4, 128, 1, l1k, 0);
    int llong[3] = {1000, 1041, 7};
    one_attention_cudnn("attention_train cudnn NH=4 NKV=1 HS=64 long", 4, 1, 64, 3, llong, 0);
    int l41[41];
    for (int e = 0; e < 41; e++) l41[e] = 1 + (e * 37 + 11) % 131;
    one_attention_cudnn("attention_train cudnn NH=8 NKV=2 HS=64 41 examples", 8, 2, 64, 41, l41, 0);
    int lones[5] = {1, 1, 1, 1, 1};
    one_attention_cudnn("attention_train cudnn NH=2 NKV=1 HS=64 five 1-token examples", 2, 1, 64, 5, lones, 0);
    /* a prefix: cuDNN by the exact split (train_attention_split.cu) */
    int lpodd[8] = {100, 1, 63, 64, 65, 127, 3, 200};
    one_attention_cudnn("attention_train cudnn-layout prefix 100 NH=4 NKV=1 HS=64", 4, 1, 64, 8, lpodd, 100);
    /* bad layouts */
    dspy_tensor gs = dev_alloc(DSPY_DTYPE_I32, 8);
    CHECK_STATUS(G->ops->attention_train_layout(G, gs, 8, 0, 4), DSPY_ERR_ARG);
    CHECK_STATUS(G->ops->attention_train_layout(G, gs, 8, 9, 4), DSPY_ERR_ARG);
    CHECK_STATUS(G->ops->attention_train_layout(G, gs, 8, 2, 9), DSPY_ERR_ARG);
    CHECK_STATUS(G->ops->attention_train_layout(G, gs, 16, 2, 8), DSPY_ERR_ARG); /* start holds 8 */
    dev_free(gs);
    /* forget the layout: later tests' start arrays may reuse an address */
    CHECK_OK(G->ops->attention_train_layout(G, dspy_bt(G, NULL, 0, DSPY_DTYPE_I32), 0, 0, 0));
    unsetenv("DSPY_CUDA_CUDNN_ATTN");
}

/* ---- BF16 attention gradients (the BF16 trainer's grad16) ---------------------------------- */

/* dq, dk, dv of one backward (got*, F32 on the host) against the CPU's (ref*) within the BF16
 * tolerance 1e-2; one_key: dq and dk are analytically 0 (see one_attention_bf16) and held to
 * 1e-2 of their natural size instead. */
static void expect_grads(const char *what, const float *gq, const float *gk, const float *gv, const att_host *rf,
                         bool one_key, double natural) {
    char w[224];
    if (one_key) {
        snprintf(w, sizeof w, "%s: dq (analytically 0)", what);
        expect_near_zero(w, gq, (size_t)rf->nq, 1e-2 * natural);
        snprintf(w, sizeof w, "%s: dk (analytically 0)", what);
        expect_near_zero(w, gk, (size_t)rf->nkv, 1e-2 * natural);
    } else {
        snprintf(w, sizeof w, "%s: dq", what);
        expect_close(w, gq, rf->dq, (size_t)rf->nq, 1e-2);
        snprintf(w, sizeof w, "%s: dk", what);
        expect_close(w, gk, rf->dk, (size_t)rf->nkv, 1e-2);
    }
    snprintf(w, sizeof w, "%s: dv", what);
    expect_close(w, gv, rf->dv, (size_t)rf->nkv, 1e-2);
}

/* attention_train_backward from a BF16 dout (the o-projection's BF16 dgrad), with F32 and with
 * BF16 dq, dk, dv, against the CPU's F32 backward of the same BF16-rounded q, k, v and dout, from
 * the CPU's F32 out and, second, the device's own BF16 out (and its lse): 1e-2 relative both (the
 * tolerance of the other BF16 paths; the kernels round dout to BF16 anyway). The BF16 dq is the
 * F32 one's BF16 rounding (the same accumulation, rounded once in the epilogue), and so are dk,
 * dv without GQA (under GQA their F32 sums are atomic, in no fixed order). Outputs start
 * NaN-poisoned. Where the call cannot take BF16 (kern/ops.h: head size 64 or 128, and for BF16
 * gradients NH == NKV or NH >= 4 NKV; not the WMMA kernels) it is an ARG error, as are BF16
 * gradients from an F32 dout, and BF16 gradients on the CPU. cudnn: through cuDNN (a layout
 * given, DSPY_CUDA_CUDNN_ATTN=1; with a prefix by the split, train_attention_split.cu); else the flash
 * kernels under the defaults and each DSPY_CUDA_FA variant (every dk/dv kernel). */
static void one_attention_grad16(const char *name, int NH, int NKV, int HS, int nex, const int *lens, int prefix,
                                 bool cudnn) {
    char what[192];
    int longest = 0;
    for (int e = 0; e < nex; e++) longest = lens[e] > longest ? lens[e] : longest;
    dspy_tensor gb[3];
    att_host rf;
    att_host_make(&rf, NH, NKV, HS, nex, lens, prefix, gb);
    const int T = rf.T;
    const int64_t nq = rf.nq, nkv = rf.nkv, nl = rf.nl;
    /* dout rounded to BF16 (in place) and the CPU's backward again from the rounded values */
    dspy_tensor gdo16 = up_bf16(rf.dout, nq), gdo = up(rf.dout, nq);
    CHECK_OK(C->ops->attention_train_backward(C, HF(rf.dq, nq), HF(rf.dk, nkv), HF(rf.dv, nkv), HF(rf.dout, nq),
                                              HF(rf.out, nq), HF(rf.lse, nl), HF(rf.q, nq), HF(rf.k, nkv),
                                              HF(rf.v, nkv), HI(rf.start, T), prefix, T, NH, NKV, HS));
    { /* the CPU trains in F32: BF16 gradients refused */
        uint16_t *h16 = calloc((size_t)nq, sizeof(uint16_t));
        CHECK_STATUS(C->ops->attention_train_backward(C, dspy_bt(C, h16, nq, DSPY_DTYPE_BF16), HF(rf.dk, nkv),
                                                      HF(rf.dv, nkv), HF(rf.dout, nq), HF(rf.out, nq), HF(rf.lse, nl),
                                                      HF(rf.q, nq), HF(rf.k, nkv), HF(rf.v, nkv), HI(rf.start, T),
                                                      prefix, T, NH, NKV, HS),
                     DSPY_ERR_ARG);
        free(h16);
    }
    const bool one_key = longest == 1;
    const double natural = rms_f(rf.dout, (size_t)nq) * rms_f(rf.v, (size_t)nkv) * rms_f(rf.k, (size_t)nkv);
    dspy_tensor gs = up_i32(rf.start, T), gout = up(rf.out, nq), glse = up(rf.lse, nl);
    if (cudnn) {
        setenv("DSPY_CUDA_CUDNN_ATTN", "1", 1);
        CHECK_OK(G->ops->attention_train_layout(G, dspy_bt(G, NULL, 0, DSPY_DTYPE_I32), 4096, 0, 0));
        CHECK_OK(G->ops->attention_train_layout(G, gs, T, nex, longest));
    }
    const char *wm = getenv("DSPY_CUDA_TRAIN_ATTN");
    const bool wmma = wm && strcmp(wm, "wmma") == 0;
    const bool takes16 = (HS == 64 || HS == 128) && !wmma;            /* a BF16 dout */
    const bool grads16 = takes16 && (NH == NKV || NH >= 4 * NKV);      /* BF16 dq, dk, dv */
    /* the device's BF16 out and lse, where it writes them (the second out the backward starts from) */
    dspy_tensor go16 = poisoned16(nq), gl16 = poisoned(nl);
    if (takes16) CHECK_OK(G->ops->attention_train(G, go16, gl16, gb[0], gb[1], gb[2], gs, prefix, T, NH, NKV, HS));
    static const char *const variants[] = {NULL, "00", "11", "22"};
    const int nvar = takes16 && !cudnn ? (int)(sizeof variants / sizeof variants[0]) : 1;
    for (int vi = 0; vi < nvar; vi++) {
        if (variants[vi]) setenv("DSPY_CUDA_FA", variants[vi], 1);
        const char *vn = cudnn ? (prefix ? "split" : "cudnn") : variants[vi] ? variants[vi] : "default";
        for (int oi = 0; oi < (takes16 ? 2 : 1); oi++) {
            dspy_tensor o = oi ? go16 : gout, l = oi ? gl16 : glse;
            const char *on = oi ? "BF16 out" : "F32 out";
            dspy_tensor fq = poisoned(nq), fk = poisoned(nkv), fv = poisoned(nkv);
            dspy_tensor bq = poisoned16(nq), bk = poisoned16(nkv), bv = poisoned16(nkv);
            dspy_status st = G->ops->attention_train_backward(G, fq, fk, fv, gdo16, o, l, gb[0], gb[1], gb[2], gs,
                                                              prefix, T, NH, NKV, HS);
            if (!takes16) {
                CHECK_STATUS(st, DSPY_ERR_ARG);
                CHECK_CONTAINS(dspy_errmsg(), "BF16 dout");
                CHECK_STATUS(G->ops->attention_train_backward(G, bq, bk, bv, gdo16, o, l, gb[0], gb[1], gb[2], gs,
                                                              prefix, T, NH, NKV, HS),
                             DSPY_ERR_ARG);
                printf("  %-52s BF16 dout and gradients refused (HS %d%s)\n", name, HS, wmma ? ", wmma" : "");
            } else {
                CHECK_OK(st);
                float *hq = down(fq), *hk = down(fk), *hv = down(fv);
                snprintf(what, sizeof what, "%s T=%d [%s, %s] BF16 dout", name, T, vn, on);
                expect_grads(what, hq, hk, hv, &rf, one_key, natural);
                /* BF16 gradients from an F32 dout: refused (the flash kernels keep the BF16 dout in
                 * dq's memory, which the GQA sums need) */
                CHECK_STATUS(G->ops->attention_train_backward(G, bq, bk, bv, gdo, o, l, gb[0], gb[1], gb[2], gs, prefix,
                                                              T, NH, NKV, HS),
                             DSPY_ERR_ARG);
                st = G->ops->attention_train_backward(G, bq, bk, bv, gdo16, o, l, gb[0], gb[1], gb[2], gs, prefix, T,
                                                      NH, NKV, HS);
                if (!grads16) {
                    CHECK_STATUS(st, DSPY_ERR_ARG);
                    CHECK_CONTAINS(dspy_errmsg(), "NH >= 4 NKV");
                    printf("  %-52s BF16 gradients refused (NH %d NKV %d)\n", name, NH, NKV);
                } else {
                    CHECK_OK(st);
                    float *h16q = down_bf16(bq), *h16k = down_bf16(bk), *h16v = down_bf16(bv);
                    snprintf(what, sizeof what, "%s T=%d [%s, %s] BF16 grads", name, T, vn, on);
                    expect_grads(what, h16q, h16k, h16v, &rf, one_key, natural);
                    snprintf(what, sizeof what, "%s [%s, %s]: BF16 dq of the F32 one", name, vn, on);
                    expect_bf16_of(what, h16q, hq, (size_t)nq);
                    if (NH == NKV) {
                        snprintf(what, sizeof what, "%s [%s, %s]: BF16 dk of the F32 one", name, vn, on);
                        expect_bf16_of(what, h16k, hk, (size_t)nkv);
                        snprintf(what, sizeof what, "%s [%s, %s]: BF16 dv of the F32 one", name, vn, on);
                        expect_bf16_of(what, h16v, hv, (size_t)nkv);
                    }
                    free(h16q), free(h16k), free(h16v);
                }
                free(hq), free(hk), free(hv);
            }
            dspy_tensor outs[] = {fq, fk, fv, bq, bk, bv};
            for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) dev_free(outs[i]);
        }
        unsetenv("DSPY_CUDA_FA");
    }
    if (cudnn) { /* forget the layout: later tests' start arrays may reuse an address */
        CHECK_OK(G->ops->attention_train_layout(G, dspy_bt(G, NULL, 0, DSPY_DTYPE_I32), 0, 0, 0));
        unsetenv("DSPY_CUDA_CUDNN_ATTN");
    }
    att_host_free(&rf);
    dspy_tensor all[] = {gb[0], gb[1], gb[2], gdo16, gdo, gs, gout, glse, go16, gl16};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
}

static void test_attention_grad16(void) {
    /* the flash kernels: a Llama KV group of 4 (the GQA sums in F32, rounded once), no GQA, odd
     * packed lengths (examples starting and ending inside tiles), many examples, a shared prefix */
    int lodd[7] = {1, 63, 64, 65, 127, 3, 200};
    one_attention_grad16("grad16 flash NH=8 NKV=2 HS=64 odd packed", 8, 2, 64, 7, lodd, 0, false);
    int l128[4] = {33, 150, 1, 90};
    one_attention_grad16("grad16 flash NH=4 NKV=4 HS=128 packed", 4, 4, 128, 4, l128, 0, false);
    one_attention_grad16("grad16 flash NH=3 NKV=3 HS=64 odd packed", 3, 3, 64, 7, lodd, 0, false);
    int l41[41];
    for (int e = 0; e < 41; e++) l41[e] = 1 + (e * 37 + 11) % 131;
    one_attention_grad16("grad16 flash NH=8 NKV=2 HS=64 41 examples", 8, 2, 64, 41, l41, 0, false);
    int lpodd[8] = {100, 1, 63, 64, 65, 127, 3, 200};
    one_attention_grad16("grad16 flash prefix 100 NH=4 NKV=1 HS=64", 4, 1, 64, 8, lpodd, 100, false);
    one_attention_grad16("grad16 flash prefix 33 NH=8 NKV=1 HS=128", 8, 1, 128, 4, l128, 33, false);
    int lones[5] = {1, 1, 1, 1, 1};
    one_attention_grad16("grad16 flash NH=4 NKV=4 HS=64 five 1-token examples", 4, 4, 64, 5, lones, 0, false);
    /* refused: BF16 gradients for a KV group of 2; anything BF16 at head size 80 and on the WMMA
     * kernels */
    one_attention_grad16("grad16 flash NH=4 NKV=2 HS=128 (group of 2)", 4, 2, 128, 4, l128, 0, false);
    int l129[2] = {64, 65};
    one_attention_grad16("grad16 NH=6 NKV=3 HS=80", 6, 3, 80, 2, l129, 0, false);
    setenv("DSPY_CUDA_TRAIN_ATTN", "wmma", 1);
    one_attention_grad16("grad16 wmma NH=8 NKV=2 HS=64", 8, 2, 64, 7, lodd, 0, false);
    unsetenv("DSPY_CUDA_TRAIN_ATTN");
    /* cuDNN: GQA (its F32 head sums rounded once), no GQA (dQ, dK, dV written in place), long
     * examples, one-token examples; with a prefix the split (its own cases: one_split_grad16) */
    one_attention_grad16("grad16 cudnn NH=8 NKV=2 HS=64 odd packed", 8, 2, 64, 7, lodd, 0, true);
    int l300[4] = {70, 5, 130, 95};
    one_attention_grad16("grad16 cudnn NH=4 NKV=4 HS=64 packed", 4, 4, 64, 4, l300, 0, true);
    one_attention_grad16("grad16 cudnn NH=8 NKV=2 HS=128 packed", 8, 2, 128, 4, l128, 0, true);
    int llong[3] = {1000, 1041, 7};
    one_attention_grad16("grad16 cudnn NH=4 NKV=1 HS=64 long", 4, 1, 64, 3, llong, 0, true);
    one_attention_grad16("grad16 cudnn NH=2 NKV=2 HS=128 five 1-token examples", 2, 2, 128, 5, lones, 0, true);
    one_attention_grad16("grad16 cudnn NH=4 NKV=2 HS=64 (group of 2)", 4, 2, 64, 4, l300, 0, true);
    one_attention_grad16("grad16 cudnn-layout prefix 100 NH=4 NKV=1 HS=64", 4, 1, 64, 8, lpodd, 100, true);
}

static void test_attention_train(void) {
    int l37[3] = {10, 1, 26};
    one_attention("attention_train NH=4 NKV=2 HS=16", 4, 2, 16, 3, l37, 0);
    one_attention("attention_train NH=4 NKV=2 HS=64", 4, 2, 64, 3, l37, 0);
    int l300[4] = {70, 5, 130, 95}; /* examples start inside 64- and 32-row tiles */
    one_attention("attention_train NH=8 NKV=2 HS=64 packed", 8, 2, 64, 4, l300, 0);
    int l200[1] = {200};
    one_attention("attention_train NH=4 NKV=4 HS=128 one example", 4, 4, 128, 1, l200, 0);
    int l129[2] = {64, 65};
    one_attention("attention_train NH=6 NKV=3 HS=80", 6, 3, 80, 2, l129, 0);
    int l1[1] = {1};
    one_attention("attention_train T=1", 2, 1, 64, 1, l1, 0);
    int lmany[8] = {1, 2, 3, 64, 1, 40, 33, 7};
    one_attention("attention_train NH=2 NKV=1 HS=32 8 examples", 2, 1, 32, 8, lmany, 0);
    /* a shared prefix: inside a tile, on a tile edge, many continuations */
    one_attention("attention_train prefix 10 NH=4 NKV=2 HS=16", 4, 2, 16, 3, l37, 10);
    one_attention("attention_train prefix 70 NH=8 NKV=2 HS=64", 8, 2, 64, 4, l300, 70);
    one_attention("attention_train prefix 64 NH=6 NKV=3 HS=80", 6, 3, 80, 2, l129, 64);
    int lpre[6] = {130, 5, 64, 1, 90, 33};
    one_attention("attention_train prefix 130 NH=4 NKV=4 HS=128", 4, 4, 128, 6, lpre, 130);
}

/* ---- graphs ------------------------------------------------------------------------------ */

/* A backward step (cross-entropy, linear and attention backward) captured once and replayed on
 * new input contents equals running the ops directly (every op here is deterministic). */
static void test_graph(void) {
    const int T = 70, NH = 4, NKV = 2, HS = 64, Cc = NH * HS, V = 300;
    const int64_t nq = (int64_t)T * NH * HS, nkv = (int64_t)T * NKV * HS;
    int32_t start[70], tg[70];
    for (int t = 0; t < T; t++) start[t] = t < 30 ? 0 : 30, tg[t] = irand(V);
    float *x = rnd((size_t)T * Cc, 1), *w = rnd((size_t)V * Cc, 0.1f), *q = rnd((size_t)nq, 2);
    float *kv = rnd((size_t)nkv, 2);
    dspy_tensor gx = up(x, (int64_t)T * Cc), gw = up(w, (int64_t)V * Cc), glg = dev_alloc(DSPY_DTYPE_F32, (int64_t)T * V);
    dspy_tensor gloss = dev_alloc(DSPY_DTYPE_F32, T), gt = up_i32(tg, T), gdx = dev_alloc(DSPY_DTYPE_F32, (int64_t)T * Cc);
    dspy_tensor gdw = dev_alloc(DSPY_DTYPE_F32, (int64_t)V * Cc), gq = up(q, nq), gk = up(kv, nkv), gs = up_i32(start, T);
    dspy_tensor go = dev_alloc(DSPY_DTYPE_F32, nq), gl = dev_alloc(DSPY_DTYPE_F32, (int64_t)T * NH);
    dspy_tensor gdq = dev_alloc(DSPY_DTYPE_F32, nq), gdk = dev_alloc(DSPY_DTYPE_F32, nkv), gdv = dev_alloc(DSPY_DTYPE_F32, nkv);
    float *lg = rnd((size_t)T * V, 4);
#define STEP()                                                                                                \
    do {                                                                                                      \
        CHECK_OK(G->ops->fill(G, gdx, 0.0f));                                                                 \
        CHECK_OK(G->ops->fill(G, gdw, 0.0f));                                                                 \
        CHECK_OK(G->ops->cross_entropy(G, gloss, glg, glg, gt, T, V, 1.0f / T));                              \
        CHECK_OK(G->ops->linear_backward(G, gdx, gdw, NONE, glg, gx, gw, T, Cc, V));                          \
        CHECK_OK(G->ops->attention_train(G, go, gl, gq, gk, gk, gs, 0, T, NH, NKV, HS));                         \
        CHECK_OK(G->ops->attention_train_backward(G, gdq, gdk, gdv, gdx, go, gl, gq, gk, gk, gs, 0, T, NH, NKV, HS)); \
    } while (0)
    CHECK_OK(G->ops->copy(G, glg.data, lg, sizeof(float) * (size_t)T * V, DSPY_COPY_H2D));
    STEP(); /* plans made outside the capture */
    void *graph = NULL;
    CHECK_OK(G->ops->graph_begin(G));
    STEP();
    CHECK_OK(G->ops->graph_end(G, &graph));
    float *lg2 = rnd((size_t)T * V, 4);
    CHECK_OK(G->ops->copy(G, glg.data, lg2, sizeof(float) * (size_t)T * V, DSPY_COPY_H2D));
    CHECK_OK(G->ops->graph_launch(G, graph));
    float *a_loss = down(gloss), *a_dw = down(gdw), *a_dq = down(gdq), *a_dk = down(gdk);
    CHECK_OK(G->ops->copy(G, glg.data, lg2, sizeof(float) * (size_t)T * V, DSPY_COPY_H2D));
    STEP();
    float *b_loss = down(gloss), *b_dw = down(gdw), *b_dq = down(gdq), *b_dk = down(gdk);
    expect_same("graph replay: loss", a_loss, b_loss, (size_t)T);
    expect_same("graph replay: dw", a_dw, b_dw, (size_t)V * Cc);
    expect_same("graph replay: dq", a_dq, b_dq, (size_t)nq);
    expect_same("graph replay: dk", a_dk, b_dk, (size_t)nkv);
#undef STEP
    G->ops->graph_free(G, graph);
    free(x), free(w), free(q), free(kv), free(lg), free(lg2);
    free(a_loss), free(a_dw), free(a_dq), free(a_dk), free(b_loss), free(b_dw), free(b_dq), free(b_dk);
    dspy_tensor all[] = {gx, gw, glg, gloss, gt, gdx, gdw, gq, gk, gs, go, gl, gdq, gdk, gdv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
}

/* ---- errors ------------------------------------------------------------------------------ */

static void test_errors(void) {
    float h[64] = {0};
    int32_t hi[8] = {0};
    dspy_tensor d = dev_alloc(DSPY_DTYPE_F32, 64), i8 = up_i32(hi, 8);
    CHECK_STATUS(G->ops->rope(G, dspy_bt(G, d.data, 64, DSPY_DTYPE_I32), i8, d, 1, 2, 16), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "x is I32");
    CHECK_STATUS(G->ops->linear_backward(G, HF(h, 64), NONE, NONE, d, NONE, d, 8, 8, 8), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "not in GPU memory");
    CHECK_STATUS(G->ops->linear_backward(G, d, NONE, NONE, d, NONE, d, 8, 9, 8), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "dinp holds 64 elements, 72 needed");
    CHECK_STATUS(G->ops->cross_entropy(G, d, NONE, d, d, 2, 4, 1.0f), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "targets is F32");
    CHECK_STATUS(G->ops->attention_train(G, d, d, d, d, d, i8, 0, 0, 2, 2, 160), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "head size 160");
    CHECK_STATUS(G->ops->attention_train(G, d, d, d, d, d, i8, 0, 2, 3, 2, 8), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "multiple of NKV");
    CHECK_OK(G->ops->sync(G)); /* argument errors are not sticky */
    /* the planned scratch: dspy_backend_new plans at least 64 rows (kern/backend.c merges the
     * caller's plan into that floor), so a backend planned for 16 rows x 1 head has 64 floats:
     * it refuses 64 rows x 2 heads of attention and 65 rows of rmsnorm_backward */
    dspy_backend *small = NULL;
    dspy_backend_plan plan = {16, 16, 1, 64, 1, 16, 0, 0};
    CHECK_OK(dspy_backend_new((dspy_device){DSPY_DEVICE_CUDA, 0}, &plan, &small));
    if (small) {
        void *p = NULL;
        CHECK_OK(small->ops->alloc(small, 65536, &p));
        dspy_tensor t = dspy_bt(small, p, 16384, DSPY_DTYPE_F32), s = dspy_bt(small, p, 64, DSPY_DTYPE_I32);
        CHECK_OK(small->ops->fill(small, t, 0.0f)); /* start all 0: one example */
        CHECK_STATUS(small->ops->attention_train_backward(small, t, t, t, t, t, t, t, t, t, s, 0, 64, 2, 2, 8),
                     DSPY_ERR_ARG);
        CHECK_CONTAINS(dspy_errmsg(), "planned scratch");
        CHECK_STATUS(small->ops->rmsnorm_backward(small, t, t, t, t, t, 65, 8, 1e-5f), DSPY_ERR_ARG);
        CHECK_CONTAINS(dspy_errmsg(), "65 rows exceed the planned 64");
        small->ops->free(small, p);
        dspy_backend_free(small);
    }
    dev_free(d), dev_free(i8);
}

/* In a child: scatter_add_rows with an index outside the destination faults (__trap); sync
 * and every later op return the sticky error. Exit 0 when that is what happened. */
static int fault_child(void) {
    dspy_backend_plan plan = {64, 64, 4, 64, 8, 64, 0, 0};
    if (dspy_backend_new((dspy_device){DSPY_DEVICE_CUDA, 0}, &plan, &G)) return 2;
    int32_t rows[2] = {1, 9};
    dspy_tensor dst = dev_alloc(DSPY_DTYPE_F32, 4 * 8), src = dev_alloc(DSPY_DTYPE_F32, 2 * 8), r = up_i32(rows, 2);
    dspy_status st = G->ops->scatter_add_rows(G, dst, r, src, 2, 8);
    if (!st) st = G->ops->sync(G);
    if (st != DSPY_ERR_BACKEND) return 3;
    fprintf(stderr, "fault: %s\n", dspy_errmsg());
    st = G->ops->scale(G, dst, 2.0f);
    if (st != DSPY_ERR_BACKEND || !strstr(dspy_errmsg(), "earlier CUDA failure")) return 4;
    return 0;
}


/* A prefix-shared call through cuDNN by the exact split (train_attention_split.cu: the layout's
 * causal graph over the prefix and each continuation, and a cross-attention graph of the
 * continuation rows to the prefix keys, merged by log-sum-exp; the backward as the two parts'
 * sums) against the CPU's F32 attention of the same BF16-rounded q, k, v, as the fused path
 * without a prefix is held: out, dq, dk, dv 1e-2, lse 1e-5, from NaN-poisoned outputs; the
 * backward from the CPU's out and lse; a BF16 out bit for bit the rounding of the F32 out and the
 * backward from it (check_out16). That the split ran: with DSPY_CUDA_CUDNN_SPLIT=0 the same call
 * runs the own flash kernels, within the same tolerance of the CPU but not bit-identical to the
 * split's out. */
static void one_attention_split(const char *name, int NH, int NKV, int HS, int nex, const int *lens) {
    char what[160];
    const int prefix = lens[0];
    int T = 0, longest = 0;
    for (int e = 0; e < nex; e++) T += lens[e], longest = lens[e] > longest ? lens[e] : longest;
    dspy_tensor gb[3];
    att_host rf;
    att_host_make(&rf, NH, NKV, HS, nex, lens, prefix, gb);
    const int64_t nq = rf.nq, nkv = rf.nkv, nl = rf.nl;
    dspy_tensor gs = up_i32(rf.start, T), gdo = up(rf.dout, nq), gout = up(rf.out, nq), glse = up(rf.lse, nl);
    CHECK_OK(G->ops->attention_train_layout(G, gs, T, nex, longest));
    dspy_tensor go = poisoned(nq), gl = poisoned(nl);
    CHECK_OK(G->ops->attention_train(G, go, gl, gb[0], gb[1], gb[2], gs, prefix, T, NH, NKV, HS));
    float *ho = down(go), *hl = down(gl);
    snprintf(what, sizeof what, "%s T=%d: out", name, T);
    expect_close(what, ho, rf.out, (size_t)nq, 1e-2);
    snprintf(what, sizeof what, "%s T=%d: lse", name, T);
    expect_close(what, hl, rf.lse, (size_t)nl, 1e-5);
    dspy_tensor gdq = poisoned(nq), gdk = poisoned(nkv), gdv = poisoned(nkv);
    CHECK_OK(G->ops->attention_train_backward(G, gdq, gdk, gdv, gdo, gout, glse, gb[0], gb[1], gb[2], gs, prefix, T,
                                              NH, NKV, HS));
    float *hdq = down(gdq), *hdk = down(gdk), *hdv = down(gdv);
    snprintf(what, sizeof what, "%s T=%d: dq", name, T);
    expect_close(what, hdq, rf.dq, (size_t)nq, 1e-2);
    snprintf(what, sizeof what, "%s T=%d: dk", name, T);
    expect_close(what, hdk, rf.dk, (size_t)nkv, 1e-2);
    snprintf(what, sizeof what, "%s T=%d: dv", name, T);
    expect_close(what, hdv, rf.dv, (size_t)nkv, 1e-2);
    const att_case ac = {name, T, NH, NKV, HS, prefix, gb, gs, gdo, ho, hl, rf.dq, rf.dk, rf.dv, false};
    check_out16(&ac, "split", true);
    /* the split off: the flash kernels, another summation order */
    setenv("DSPY_CUDA_CUDNN_SPLIT", "0", 1);
    CHECK_OK(G->ops->attention_train_layout(G, gs, T, nex, longest));
    dspy_tensor fo = poisoned(nq), fl = poisoned(nl);
    CHECK_OK(G->ops->attention_train(G, fo, fl, gb[0], gb[1], gb[2], gs, prefix, T, NH, NKV, HS));
    float *hfo = down(fo);
    snprintf(what, sizeof what, "%s T=%d: out (split off)", name, T);
    expect_close(what, hfo, rf.out, (size_t)nq, 1e-2);
    size_t diff = 0;
    for (int64_t i = 0; i < nq; i++) diff += memcmp(&hfo[i], &ho[i], sizeof(float)) != 0;
    check_report(diff > 0, __FILE__, __LINE__, "%s: out with the split off is bit-identical to the split's (did the "
                                               "split run?)", name);
    printf("  %-52s split vs flash out: %zu of %lld values differ\n", name, diff, (long long)nq);
    unsetenv("DSPY_CUDA_CUDNN_SPLIT");
    CHECK_OK(G->ops->attention_train_layout(G, gs, T, nex, longest));
    free(ho), free(hl), free(hdq), free(hdk), free(hdv), free(hfo);
    att_host_free(&rf);
    dspy_tensor all[] = {gb[0], gb[1], gb[2], gs, gdo, gout, glse, go, gl, gdq, gdk, gdv, fo, fl};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
}

/* The split's backward with the BF16 trainer's gradients (grad16): from a BF16 dout (read in place
 * by both parts), F32 and BF16 dq, dk, dv, against the CPU's F32 backward of the same BF16-rounded
 * q, k, v and dout, from the CPU's F32 out and, second, the split's own BF16 out and lse: 1e-2
 * (one_attention_grad16's tolerance), from NaN-poisoned outputs. The BF16 dq is within one BF16
 * ulp of the F32 one (each part's BF16 dQ summed in F32 and rounded once, no second rounding; not
 * exactly its rounding because cuDNN's dQ sums are atomic, so the two runs' part A can differ in
 * the last bit), and so are dk, dv without GQA (under GQA the F32 head sums are cuDNN's). BF16
 * gradients are refused (ARG) for a KV group of 2 (kern/ops.h: NH == NKV or NH >= 4 NKV) and from
 * an F32 dout. That the split ran: with DSPY_CUDA_CUDNN_SPLIT=0 the flash kernels' BF16 dq is not
 * bit-identical to the split's. */
static void one_split_grad16(const char *name, int NH, int NKV, int HS, int nex, const int *lens) {
    char what[192];
    const int prefix = lens[0];
    int longest = 0;
    for (int e = 0; e < nex; e++) longest = lens[e] > longest ? lens[e] : longest;
    dspy_tensor gb[3];
    att_host rf;
    att_host_make(&rf, NH, NKV, HS, nex, lens, prefix, gb);
    const int T = rf.T;
    const int64_t nq = rf.nq, nkv = rf.nkv, nl = rf.nl;
    /* dout rounded to BF16 (in place) and the CPU's backward again from the rounded values */
    dspy_tensor gdo16 = up_bf16(rf.dout, nq), gdo = up(rf.dout, nq);
    CHECK_OK(C->ops->attention_train_backward(C, HF(rf.dq, nq), HF(rf.dk, nkv), HF(rf.dv, nkv), HF(rf.dout, nq),
                                              HF(rf.out, nq), HF(rf.lse, nl), HF(rf.q, nq), HF(rf.k, nkv),
                                              HF(rf.v, nkv), HI(rf.start, T), prefix, T, NH, NKV, HS));
    const bool grads16 = NH == NKV || NH >= 4 * NKV;
    dspy_tensor gs = up_i32(rf.start, T), gout = up(rf.out, nq), glse = up(rf.lse, nl);
    CHECK_OK(G->ops->attention_train_layout(G, gs, T, nex, longest));
    dspy_tensor go16 = poisoned16(nq), gl16 = poisoned(nl);
    CHECK_OK(G->ops->attention_train(G, go16, gl16, gb[0], gb[1], gb[2], gs, prefix, T, NH, NKV, HS));
    float *split_dq = NULL; /* the split's BF16 dq from the F32 out, for the check that it ran */
    for (int oi = 0; oi < 2; oi++) {
        dspy_tensor o = oi ? go16 : gout, l = oi ? gl16 : glse;
        const char *on = oi ? "BF16 out" : "F32 out";
        dspy_tensor fq = poisoned(nq), fk = poisoned(nkv), fv = poisoned(nkv);
        dspy_tensor bq = poisoned16(nq), bk = poisoned16(nkv), bv = poisoned16(nkv);
        CHECK_OK(G->ops->attention_train_backward(G, fq, fk, fv, gdo16, o, l, gb[0], gb[1], gb[2], gs, prefix, T, NH,
                                                  NKV, HS));
        float *hq = down(fq), *hk = down(fk), *hv = down(fv);
        snprintf(what, sizeof what, "%s T=%d [%s] BF16 dout", name, T, on);
        expect_grads(what, hq, hk, hv, &rf, false, 0);
        CHECK_STATUS(G->ops->attention_train_backward(G, bq, bk, bv, gdo, o, l, gb[0], gb[1], gb[2], gs, prefix, T,
                                                      NH, NKV, HS),
                     DSPY_ERR_ARG);
        dspy_status st = G->ops->attention_train_backward(G, bq, bk, bv, gdo16, o, l, gb[0], gb[1], gb[2], gs, prefix,
                                                          T, NH, NKV, HS);
        if (!grads16) {
            CHECK_STATUS(st, DSPY_ERR_ARG);
            CHECK_CONTAINS(dspy_errmsg(), "NH >= 4 NKV");
            printf("  %-52s BF16 gradients refused (NH %d NKV %d)\n", name, NH, NKV);
        } else {
            CHECK_OK(st);
            float *h16q = down_bf16(bq), *h16k = down_bf16(bk), *h16v = down_bf16(bv);
            snprintf(what, sizeof what, "%s T=%d [%s] BF16 grads", name, T, on);
            expect_grads(what, h16q, h16k, h16v, &rf, false, 0);
            /* within one BF16 ulp, not half: cuDNN forms dQ with atomic adds in no fixed order, so
             * part A's BF16 dq can differ in its last bit between the F32-gradient run and this one
             * (measured on the H200: 1 to 9 of ~10^6 values beyond half an ulp), and the split adds
             * part B to it before rounding: where A and B cancel, A's last bit is more than one ulp
             * of the sum (1 to 5 of ~10^6 values beyond one ulp, measured) */
            snprintf(what, sizeof what, "%s [%s]: BF16 dq of the F32 one", name, on);
            expect_bf16_ulp_of(what, h16q, hq, (size_t)nq);
            if (NH == NKV) {
                snprintf(what, sizeof what, "%s [%s]: BF16 dk of the F32 one", name, on);
                expect_bf16_ulp_of(what, h16k, hk, (size_t)nkv);
                snprintf(what, sizeof what, "%s [%s]: BF16 dv of the F32 one", name, on);
                expect_bf16_ulp_of(what, h16v, hv, (size_t)nkv);
            }
            if (oi == 0) split_dq = h16q, h16q = NULL;
            free(h16q), free(h16k), free(h16v);
        }
        free(hq), free(hk), free(hv);
        dspy_tensor outs[] = {fq, fk, fv, bq, bk, bv};
        for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) dev_free(outs[i]);
    }
    if (split_dq) { /* the split off: the flash kernels' BF16 dq, another summation order */
        setenv("DSPY_CUDA_CUDNN_SPLIT", "0", 1);
        CHECK_OK(G->ops->attention_train_layout(G, gs, T, nex, longest));
        dspy_tensor bq = poisoned16(nq), bk = poisoned16(nkv), bv = poisoned16(nkv);
        CHECK_OK(G->ops->attention_train_backward(G, bq, bk, bv, gdo16, gout, glse, gb[0], gb[1], gb[2], gs, prefix,
                                                  T, NH, NKV, HS));
        float *fq = down_bf16(bq);
        size_t diff = 0;
        for (int64_t i = 0; i < nq; i++) diff += memcmp(&fq[i], &split_dq[i], sizeof(float)) != 0;
        check_report(diff > 0, __FILE__, __LINE__, "%s: BF16 dq with the split off is bit-identical to the "
                                                   "split's (did the split run?)", name);
        printf("  %-52s split vs flash BF16 dq: %zu of %lld values differ\n", name, diff, (long long)nq);
        unsetenv("DSPY_CUDA_CUDNN_SPLIT");
        CHECK_OK(G->ops->attention_train_layout(G, gs, T, nex, longest));
        free(fq), free(split_dq);
        dev_free(bq), dev_free(bk), dev_free(bv);
    }
    att_host_free(&rf);
    dspy_tensor all[] = {gb[0], gb[1], gb[2], gdo16, gdo, gs, gout, glse, go16, gl16};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
}

static void test_attention_train_split(void) {
    setenv("DSPY_CUDA_CUDNN_ATTN", "1", 1);
    CHECK_OK(G->ops->attention_train_layout(G, dspy_bt(G, NULL, 0, DSPY_DTYPE_I32), 4096, 0, 0));
    /* prefixes of 1, 37 (inside a tile) and 1,300 (the tutorial's prompt) tokens; continuations
     * of 1 .. 300 tokens, on and off the 64-row tiles; a KV group of 4 (cuDNN's F32 head sum) and
     * none (BF16 dk, dv); head sizes 64 and 128 */
    int l1[5] = {1, 1, 17, 300, 2};
    one_attention_split("attention_train split P=1 NH=8 NKV=2 HS=64", 8, 2, 64, 5, l1);
    int l37[7] = {37, 1, 63, 64, 65, 300, 129};
    one_attention_split("attention_train split P=37 NH=8 NKV=2 HS=128", 8, 2, 128, 7, l37);
    one_attention_split("attention_train split P=37 NH=4 NKV=4 HS=64", 4, 4, 64, 7, l37);
    /* 2 heads and an odd prefix: the continuation rows' lse starts off a 16-byte boundary (copied
     * for cuDNN) */
    one_attention_split("attention_train split P=37 NH=2 NKV=1 HS=64", 2, 1, 64, 7, l37);
    int lt2[6] = {1300, 280, 1, 300, 241, 37};
    one_attention_split("attention_train split P=1300 NH=8 NKV=2 HS=64", 8, 2, 64, 6, lt2);
    int lt2b[4] = {1300, 200, 1, 77};
    one_attention_split("attention_train split P=1300 NH=8 NKV=2 HS=128", 8, 2, 128, 4, lt2b);
    /* the same layouts with the BF16 trainer's gradients (BF16 dout, F32 and BF16 dq, dk, dv): a KV
     * group of 4 (part A's F32 head sums kept, rounded once with part B's), none (BF16 in place),
     * a group of 2 (BF16 gradients refused) */
    one_split_grad16("grad16 split P=1 NH=8 NKV=2 HS=64", 8, 2, 64, 5, l1);
    one_split_grad16("grad16 split P=37 NH=8 NKV=2 HS=128", 8, 2, 128, 7, l37);
    one_split_grad16("grad16 split P=37 NH=4 NKV=4 HS=64", 4, 4, 64, 7, l37);
    one_split_grad16("grad16 split P=37 NH=2 NKV=1 HS=64", 2, 1, 64, 7, l37);
    one_split_grad16("grad16 split P=1300 NH=8 NKV=2 HS=64", 8, 2, 64, 6, lt2);
    one_split_grad16("grad16 split P=1300 NH=4 NKV=4 HS=128", 4, 4, 128, 4, lt2b);
    CHECK_OK(G->ops->attention_train_layout(G, dspy_bt(G, NULL, 0, DSPY_DTYPE_I32), 0, 0, 0));
    unsetenv("DSPY_CUDA_CUDNN_ATTN");
}

int main(int argc, char **argv) {
    int early = parity_begin("test_cuda_train_ops", &g_rng);
    if (early >= 0) return early;
    if (argc > 1 && strcmp(argv[1], "--fault") == 0) return fault_child();
    dspy_backend_plan plan = {4096, 4096, 8, 128256, 8, 128, 0, 0};
    CHECK_OK(dspy_backend_new((dspy_device){DSPY_DEVICE_CPU, 0}, &plan, &C));
    CHECK_OK(dspy_backend_new((dspy_device){DSPY_DEVICE_CUDA, 0}, &plan, &G));
    if (!C || !G) return check_summary("test_cuda_train_ops");
    RUN(test_rope);
    RUN(test_linear_backward);
    RUN(test_rmsnorm_backward);
    RUN(test_swiglu_backward);
    RUN(test_add_rows);
    RUN(test_cross_entropy);
    RUN(test_dropout_scale);
    RUN(test_adamw);
    RUN(test_bf16_entries);
    RUN(test_attention_train);
    RUN(test_attention_train_bf16);
    RUN(test_attention_train_cudnn);
    RUN(test_attention_grad16);
    RUN(test_attention_train_split);
    RUN(test_graph);
    RUN(test_errors);
    CHECK_OK(G->ops->sync(G));
    dspy_backend_free(G);
    dspy_backend_free(C);
    check_current = "test_sticky_fault";
    parity_check_fault(argv[0], "fault: ");
    int rc = check_summary("test_cuda_train_ops");
    printf("test_cuda_train_ops: %d/%d passed\n", check_passed, check_passed + check_failed);
    return rc;
}
