/* test_cuda_train_lora.c — the LoRA entries of the mixed-precision trainer (kern/ops.h
 * lora_forward, lora_backward, dropout_acc, lora_dx, lora_u) on CUDA against the CPU reference ops (label gpu; exit
 * 77 without a GPU).
 *
 * Fresh random inputs each run (the seed is printed; DSPY_TEST_SEED replays one), rounded to BF16
 * where the op takes BF16, so both sides multiply the same numbers (a product of two BF16 values
 * is exact in F32: only the summation order differs). Compared by ||cuda - cpu|| / ||cpu||:
 *   lora_forward: u (BF16) within BF16 rounding of the CPU's scale * x A^T; y = y0 + u B^T with
 *     the device's own u, 1e-5 (F32 y) or BF16 rounding of the two terms (BF16 y: cuBLASLt may
 *     round the product before the add, see expect_bf16_of);
 *   lora_backward: du (BF16) within BF16 rounding of scale * dy B; with the device's du,
 *     gA = gA0 + du^T x and gB = gB0 + dy^T u 1e-5 (accumulated from random values), dx = du A
 *     (beta 0, from NaN) or dx0 + du A (beta 1) 1e-5, BF16 dx within BF16 rounding (of the two
 *     terms with beta 1);
 *   dropout_acc: F32 -> F32 bit-identical to the CPU's dropout; BF16 or F32 in, BF16 out the
 *     CPU's result rounded to BF16 bit for bit; accumulating into F32 and BF16 out bit for bit (each
 *     element the CPU's dropout value plus out, separately rounded).
 * Odd sizes (N 37, C 72, OC 1001, r 1 and 4) and the 1B shape's (r 32, C 2048, OC 512 / 8192);
 * dropout_acc on sizes that take its one-element and its eight-element (16-byte) kernel.
 *   lora_dx: dx0 + each adapter's product masked by the CPU's dropout (its key) in turn, F32 dx
 *     within 1e-5 and BF16 dx within BF16 rounding of the F32 sum; bit for bit at r 1 (every
 *     product exact); NaN guards around dx untouched; 1 to 3 adapters, odd C, r 1 .. 40, p 0,
 *     an F32 dx off 8-byte alignment, the 1B shape's q/k/v, gate/up and down.
 *   lora_u: each xd the CPU's dropout rounded to BF16 bit for bit, each u within BF16 rounding of
 *     scale times the CPU's product on it, from NaN-poisoned outputs; 1 to 3 adapters, odd C, r 1
 *     .. 40, p 0 (no xd), the 1B shape's q/k/v and down; lora_forward with u given (no x) adds
 *     u B^T within 1e-5 and leaves u as it was.
 * Bad arguments (beta 0.5, r 0, p 1, out aliasing inp with another dtype; lora_dx with 0 or 4
 * adapters, an F32 du, a short dx; lora_u with 0 adapters, p 1, an F32 x, no xd at p > 0) are
 * refused.
 *
 * Prints "test_cuda_train_lora: N/M passed" last.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
/* n values in [-scale, scale), rounded to BF16 when b16. */
static float *rnd(size_t n, float scale, bool b16) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; i < n; i++) {
        p[i] = frand() * scale;
        if (b16) p[i] = dspy_bf16_to_f32(dspy_f32_to_bf16(p[i]));
    }
    return p;
}
static float *dup_f(const float *a, size_t n) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    memcpy(p, a, n * sizeof *p);
    return p;
}

/* A device tensor of dtype dt (F32 or BF16) holding h (already BF16-representable for BF16). */
static dspy_tensor up(const float *h, int64_t n, dspy_dtype dt) {
    void *p = NULL;
    CHECK_OK(G->ops->alloc(G, (size_t)(n ? n : 1) * dspy_dtype_size(dt), &p));
    if (dt == DSPY_DTYPE_BF16) {
        uint16_t *b = malloc(sizeof(uint16_t) * (size_t)(n ? n : 1));
        for (int64_t i = 0; i < n; i++) b[i] = dspy_f32_to_bf16(h[i]);
        CHECK_OK(G->ops->copy(G, p, b, sizeof(uint16_t) * (size_t)n, DSPY_COPY_H2D));
        CHECK_OK(G->ops->sync(G));
        free(b);
    } else {
        CHECK_OK(G->ops->copy(G, p, h, sizeof(float) * (size_t)n, DSPY_COPY_H2D));
        CHECK_OK(G->ops->sync(G));
    }
    return dspy_bt(G, p, n, dt);
}
/* A device tensor full of NaN. */
static dspy_tensor poisoned(int64_t n, dspy_dtype dt) {
    void *p = NULL;
    CHECK_OK(G->ops->alloc(G, (size_t)(n ? n : 1) * dspy_dtype_size(dt), &p));
    dspy_tensor t = dspy_bt(G, p, n, dt);
    CHECK_OK(G->ops->fill(G, t, NAN));
    return t;
}
/* A device tensor widened to F32 on the host. */
static float *down(dspy_tensor t) {
    float *h = malloc(sizeof(float) * (size_t)(t.n ? t.n : 1));
    if (t.dtype == DSPY_DTYPE_BF16) {
        uint16_t *b = malloc(sizeof(uint16_t) * (size_t)(t.n ? t.n : 1));
        CHECK_OK(G->ops->copy(G, b, t.data, sizeof(uint16_t) * (size_t)t.n, DSPY_COPY_D2H));
        CHECK_OK(G->ops->sync(G));
        for (int64_t i = 0; i < t.n; i++) h[i] = dspy_bf16_to_f32(b[i]);
        free(b);
    } else {
        CHECK_OK(G->ops->copy(G, h, t.data, sizeof(float) * (size_t)t.n, DSPY_COPY_D2H));
        CHECK_OK(G->ops->sync(G));
    }
    return h;
}
static void dev_free(dspy_tensor t) { G->ops->free(G, t.data); }

#define HF(p, n) dspy_bt(C, (void *)(p), (int64_t)(n), DSPY_DTYPE_F32)
#define NONE dspy_tensor_none()
#define B16 DSPY_DTYPE_BF16
#define F32 DSPY_DTYPE_F32

static void expect_close(const char *what, const float *got, const float *ref, size_t n, double tol) {
    double e = parity_rel(got, ref, n);
    check_report(e <= tol, __FILE__, __LINE__, "%s: relative error %.3g > %.1g", what, e, tol);
    printf("  %-60s rel err %.2e (tol %.0e, %zu values)\n", what, e, tol, n);
}
/* got is ref rounded to BF16 (up to an ulp where the device's F32 sum rounds the other way):
 * every value within 2^-7 of |ref| plus a floor of 2^-7 * rms(ref) * 1e-3 for sums near zero.
 * With base (a BF16 output the product was added into: ref = base + product), within 2^-7 of
 * |ref| + |product|: cuBLASLt may round the product to BF16 before adding it (on the H200, 2 % of
 * a 300 x 512 sum were off by up to half an ulp of the product where the two terms cancel). */
static void expect_bf16_of(const char *what, const float *got, const float *ref, const float *base, size_t n) {
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)ref[i] * ref[i];
    float floor_ = (float)(sqrt(ss / (double)(n ? n : 1)) * (1.0 / 128.0) * 1e-3);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        float mag = fabsf(ref[i]) + (base ? fabsf(ref[i] - base[i]) : 0.0f);
        bad += !(fabsf(got[i] - ref[i]) <= mag * (1.0f / 128.0f) + floor_);
    }
    check_report(bad == 0, __FILE__, __LINE__, "%s: %zu of %zu values beyond BF16 rounding", what, bad, n);
    printf("  %-60s within BF16 rounding: %s (%zu values)\n", what, bad ? "NO" : "yes", n);
}
static void expect_same(const char *what, const float *got, const float *ref, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += memcmp(&got[i], &ref[i], sizeof(float)) != 0;
    check_report(bad == 0, __FILE__, __LINE__, "%s: %zu of %zu values differ", what, bad, n);
    printf("  %-60s bit-identical: %s (%zu values)\n", what, bad ? "NO" : "yes", n);
}

/* ---- lora_forward ---------------------------------------------------------------------------- */

static void one_forward(int N, int Cc, int r, int OC, float scale, dspy_dtype ydt) {
    char what[160];
    const char *yn = ydt == B16 ? "BF16 y" : "F32 y";
    float *x = rnd((size_t)N * Cc, 1, true), *A = rnd((size_t)r * Cc, 0.2f, true);
    float *B = rnd((size_t)OC * r, 0.2f, true), *y0 = rnd((size_t)N * OC, 1, ydt == B16);
    dspy_tensor gx = up(x, (int64_t)N * Cc, B16), gA = up(A, (int64_t)r * Cc, B16), gB = up(B, (int64_t)OC * r, B16);
    dspy_tensor gy = up(y0, (int64_t)N * OC, ydt), gu = poisoned((int64_t)N * r, B16);
    CHECK_OK(G->ops->lora_forward(G, gy, gu, gx, gA, gB, N, Cc, r, OC, scale));
    float *u = down(gu), *y = down(gy);
    /* u: the CPU's linear, scaled */
    float *uref = calloc((size_t)N * r, sizeof(float));
    CHECK_OK(C->ops->linear(C, HF(uref, N * r), HF(x, N * Cc), HF(A, r * Cc), NONE, N, Cc, r, false));
    CHECK_OK(C->ops->scale(C, HF(uref, N * r), scale));
    snprintf(what, sizeof what, "lora_forward N=%d C=%d r=%d OC=%d u", N, Cc, r, OC);
    expect_bf16_of(what, u, uref, NULL, (size_t)N * r);
    /* y: y0 + the device's u times B^T */
    float *yref = dup_f(y0, (size_t)N * OC);
    CHECK_OK(C->ops->linear(C, HF(yref, N * OC), HF(u, N * r), HF(B, OC * r), NONE, N, r, OC, true));
    snprintf(what, sizeof what, "lora_forward N=%d C=%d r=%d OC=%d %s", N, Cc, r, OC, yn);
    if (ydt == B16) expect_bf16_of(what, y, yref, y0, (size_t)N * OC);
    else expect_close(what, y, yref, (size_t)N * OC, 1e-5);
    free(x), free(A), free(B), free(y0), free(u), free(y), free(uref), free(yref);
    dev_free(gx), dev_free(gA), dev_free(gB), dev_free(gy), dev_free(gu);
}

static void test_forward(void) {
    one_forward(37, 72, 4, 1001, 2.0f, F32);
    one_forward(37, 72, 4, 1001, 0.75f, B16);
    one_forward(5, 33, 1, 7, 3.0f, F32);
    one_forward(300, 2048, 32, 512, 2.0f, B16);
    one_forward(129, 8192, 32, 2048, 2.0f, F32);
}

/* ---- lora_backward --------------------------------------------------------------------------- */

static void one_backward(int N, int Cc, int r, int OC, float scale, dspy_dtype dxdt, float beta) {
    char what[160];
    char tag[64];
    snprintf(tag, sizeof tag, "N=%d C=%d r=%d OC=%d %s beta %g", N, Cc, r, OC, dxdt == B16 ? "BF16 dx" : "F32 dx",
             (double)beta);
    float *dy = rnd((size_t)N * OC, 1, true), *x = rnd((size_t)N * Cc, 1, true), *u = rnd((size_t)N * r, 1, true);
    float *A = rnd((size_t)r * Cc, 0.2f, true), *B = rnd((size_t)OC * r, 0.2f, true);
    float *gA0 = rnd((size_t)r * Cc, 1, false), *gB0 = rnd((size_t)OC * r, 1, false);
    float *dx0 = rnd((size_t)N * Cc, 1, dxdt == B16);
    dspy_tensor gdy = up(dy, (int64_t)N * OC, B16), gx = up(x, (int64_t)N * Cc, B16), gu = up(u, (int64_t)N * r, B16);
    dspy_tensor ga = up(A, (int64_t)r * Cc, B16), gb = up(B, (int64_t)OC * r, B16);
    dspy_tensor gga = up(gA0, (int64_t)r * Cc, F32), ggb = up(gB0, (int64_t)OC * r, F32);
    dspy_tensor gdx = beta == 0.0f ? poisoned((int64_t)N * Cc, dxdt) : up(dx0, (int64_t)N * Cc, dxdt);
    dspy_tensor gdu = poisoned((int64_t)N * r, B16);
    CHECK_OK(G->ops->lora_backward(G, gdx, gga, ggb, gdu, gdy, gx, gu, ga, gb, N, Cc, r, OC, scale, beta));
    float *du = down(gdu), *hga = down(gga), *hgb = down(ggb), *hdx = down(gdx);
    /* du = scale * dy B: the CPU's dgrad with w = B */
    float *duref = calloc((size_t)N * r, sizeof(float));
    CHECK_OK(C->ops->linear_backward(C, HF(duref, N * r), NONE, NONE, HF(dy, N * OC), NONE, HF(B, OC * r), N, r, OC));
    CHECK_OK(C->ops->scale(C, HF(duref, N * r), scale));
    snprintf(what, sizeof what, "lora_backward %s du", tag);
    expect_bf16_of(what, du, duref, NULL, (size_t)N * r);
    /* with the device's du: gB += dy^T u, gA += du^T x, dx = du A + beta dx0 */
    float *garef = dup_f(gA0, (size_t)r * Cc), *gbref = dup_f(gB0, (size_t)OC * r);
    float *dxref = beta == 0.0f ? calloc((size_t)N * Cc, sizeof(float)) : dup_f(dx0, (size_t)N * Cc);
    CHECK_OK(C->ops->linear_backward(C, NONE, HF(gbref, OC * r), NONE, HF(dy, N * OC), HF(u, N * r), NONE, N, r, OC));
    CHECK_OK(C->ops->linear_backward(C, HF(dxref, N * Cc), HF(garef, r * Cc), NONE, HF(du, N * r), HF(x, N * Cc),
                                     HF(A, r * Cc), N, Cc, r));
    snprintf(what, sizeof what, "lora_backward %s gA", tag);
    expect_close(what, hga, garef, (size_t)r * Cc, 1e-5);
    snprintf(what, sizeof what, "lora_backward %s gB", tag);
    expect_close(what, hgb, gbref, (size_t)OC * r, 1e-5);
    snprintf(what, sizeof what, "lora_backward %s dx", tag);
    if (dxdt == B16) expect_bf16_of(what, hdx, dxref, beta == 0.0f ? NULL : dx0, (size_t)N * Cc);
    else expect_close(what, hdx, dxref, (size_t)N * Cc, 1e-5);
    free(dy), free(x), free(u), free(A), free(B), free(gA0), free(gB0), free(dx0);
    free(du), free(hga), free(hgb), free(hdx), free(duref), free(garef), free(gbref), free(dxref);
    dev_free(gdy), dev_free(gx), dev_free(gu), dev_free(ga), dev_free(gb), dev_free(gga), dev_free(ggb);
    dev_free(gdx), dev_free(gdu);
}

static void test_backward(void) {
    one_backward(37, 72, 4, 1001, 2.0f, F32, 0.0f);
    one_backward(37, 72, 4, 1001, 0.5f, F32, 1.0f);
    one_backward(37, 72, 4, 1001, 2.0f, B16, 0.0f);
    one_backward(41, 2048, 32, 8192, 2.0f, B16, 1.0f);
    one_backward(5, 33, 1, 7, 3.0f, F32, 1.0f);
    one_backward(300, 2048, 32, 512, 2.0f, F32, 1.0f);
}

/* ---- dropout_acc ----------------------------------------------------------------------------- */

static float r16(float v) { return dspy_bf16_to_f32(dspy_f32_to_bf16(v)); }

static void one_dropout(int64_t n, float p, uint64_t key) {
    char what[160];
    float *x = rnd((size_t)n, 2, true), *o0 = rnd((size_t)n, 1, true);
    float *ref = malloc(sizeof(float) * (size_t)n);
    CHECK_OK(C->ops->dropout(C, HF(ref, n), HF(x, n), p, key));
    /* F32 -> F32 (written, from NaN) */
    dspy_tensor gx32 = up(x, n, F32), go32 = poisoned(n, F32);
    CHECK_OK(G->ops->dropout_acc(G, go32, gx32, p, key, false));
    float *h = down(go32);
    snprintf(what, sizeof what, "dropout_acc n=%lld p=%g F32 -> F32", (long long)n, (double)p);
    expect_same(what, h, ref, (size_t)n);
    free(h);
    /* BF16 -> BF16 (written): the CPU's value rounded */
    dspy_tensor gx16 = up(x, n, B16), go16 = poisoned(n, B16);
    CHECK_OK(G->ops->dropout_acc(G, go16, gx16, p, key, false));
    h = down(go16);
    float *want = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) want[i] = r16(ref[i]);
    snprintf(what, sizeof what, "dropout_acc n=%lld p=%g BF16 -> BF16", (long long)n, (double)p);
    expect_same(what, h, want, (size_t)n);
    free(h);
    /* F32 -> BF16 (written) */
    dspy_tensor go16b = poisoned(n, B16);
    CHECK_OK(G->ops->dropout_acc(G, go16b, gx32, p, key, false));
    h = down(go16b);
    snprintf(what, sizeof what, "dropout_acc n=%lld p=%g F32 -> BF16", (long long)n, (double)p);
    expect_same(what, h, want, (size_t)n);
    free(h);
    dev_free(go16b);
    /* BF16 into F32, accumulated: o0 + the CPU's value */
    dspy_tensor ga32 = up(o0, n, F32);
    CHECK_OK(G->ops->dropout_acc(G, ga32, gx16, p, key, true));
    h = down(ga32);
    for (int64_t i = 0; i < n; i++) want[i] = o0[i] + ref[i];
    snprintf(what, sizeof what, "dropout_acc n=%lld p=%g F32 += BF16", (long long)n, (double)p);
    expect_same(what, h, want, (size_t)n);
    free(h);
    /* BF16 into BF16, accumulated: rounded once */
    dspy_tensor ga16 = up(o0, n, B16);
    CHECK_OK(G->ops->dropout_acc(G, ga16, gx16, p, key, true));
    h = down(ga16);
    for (int64_t i = 0; i < n; i++) want[i] = r16(o0[i] + ref[i]);
    snprintf(what, sizeof what, "dropout_acc n=%lld p=%g BF16 += BF16", (long long)n, (double)p);
    expect_same(what, h, want, (size_t)n);
    free(h);
    /* in place, F32 */
    CHECK_OK(G->ops->dropout_acc(G, gx32, gx32, p, key, false));
    h = down(gx32);
    snprintf(what, sizeof what, "dropout_acc n=%lld p=%g in place", (long long)n, (double)p);
    expect_same(what, h, ref, (size_t)n);
    free(h);
    free(x), free(o0), free(ref), free(want);
    dev_free(gx32), dev_free(go32), dev_free(gx16), dev_free(go16), dev_free(ga32), dev_free(ga16);
}

static void test_dropout(void) {
    one_dropout(1, 0.5f, 3);
    one_dropout(1001, 0.1f, 0x1234567890abcdefull);
    one_dropout(300 * 2048 + 7, 0.05f, 42); /* one element a step (n not a multiple of 8) */
    one_dropout(300 * 2048, 0.05f, 42);     /* eight a step (16-byte aligned, n a multiple of 8) */
    one_dropout(777, 0.0f, 9);
    one_dropout(4096, 0.0f, 9);
}

/* ---- lora_dx ---------------------------------------------------------------------------------- */

/* dx (N, C) += sum over j < k of dropout_j(du_j A_j), against the CPU: each product by linear_backward
 * (du_j A_j), masked by the CPU's dropout with key_j, added to dx0 in adapter order in F32. dx lives
 * at element offset `off` of its allocation (off odd: an F32 dx no longer 8-byte aligned) with NaN
 * guards on both sides, which must stay NaN. r 1: every product is exact in F32 (one BF16 x BF16
 * term), so the device must match bit for bit; otherwise within 1e-5 (F32 dx; only the order of
 * the r-term sums differs) or BF16 rounding of the F32 sum (BF16 dx). */
static void one_lora_dx(int N, int Cc, int r, int k, float p, dspy_dtype dxdt, int off) {
    char what[160];
    const size_t n = (size_t)N * Cc, guard = 16;
    float *du[DSPY_LORA_DX_MAX], *A[DSPY_LORA_DX_MAX];
    dspy_tensor gdu[DSPY_LORA_DX_MAX], gA[DSPY_LORA_DX_MAX];
    uint64_t keys[DSPY_LORA_DX_MAX];
    for (int j = 0; j < k; j++) {
        du[j] = rnd((size_t)N * r, 1, true), A[j] = rnd((size_t)r * Cc, 0.2f, true);
        gdu[j] = up(du[j], (int64_t)N * r, B16), gA[j] = up(A[j], (int64_t)r * Cc, B16);
        keys[j] = g_rng ^ (0x9e3779b97f4a7c15ull * (uint64_t)(j + 1));
    }
    float *dx0 = rnd(n, 1, dxdt == B16);
    /* the device allocation: off + guard NaNs, dx0, guard NaNs */
    const size_t tot = (size_t)off + guard + n + guard;
    float *hall = malloc(sizeof(float) * tot);
    for (size_t i = 0; i < tot; i++) hall[i] = NAN;
    memcpy(hall + off + guard, dx0, sizeof(float) * n);
    dspy_tensor gall = up(hall, (int64_t)tot, dxdt);
    dspy_tensor gdx = dspy_tensor_slice(gall, (int64_t)(off + guard), (int64_t)n);
    CHECK_OK(G->ops->lora_dx(G, gdx, k, gdu, gA, keys, N, Cc, r, p));
    float *got = down(gall);
    /* the CPU: dx0, then each adapter's dropped product added in turn */
    float *ref = dup_f(dx0, n), *tmp = malloc(sizeof(float) * (n ? n : 1));
    for (int j = 0; j < k && n > 0; j++) {
        memset(tmp, 0, sizeof(float) * n);
        CHECK_OK(C->ops->linear_backward(C, HF(tmp, n), NONE, NONE, HF(du[j], N * r), NONE, HF(A[j], r * Cc), N, Cc,
                                         r));
        CHECK_OK(C->ops->dropout(C, HF(tmp, n), HF(tmp, n), p, keys[j]));
        for (size_t i = 0; i < n; i++) ref[i] = ref[i] + tmp[i];
    }
    size_t bad_guard = 0;
    for (size_t i = 0; i < tot; i++)
        if (i < (size_t)off + guard || i >= (size_t)off + guard + n) bad_guard += !isnan(got[i]);
    snprintf(what, sizeof what, "lora_dx N=%d C=%d r=%d k=%d p=%g %s off %d", N, Cc, r, k, (double)p,
             dxdt == B16 ? "BF16 dx" : "F32 dx", off);
    check_report(bad_guard == 0, __FILE__, __LINE__, "%s: %zu guard values written", what, bad_guard);
    const float *g = got + off + guard;
    if (dxdt == B16) {
        if (r == 1) {
            for (size_t i = 0; i < n; i++) ref[i] = r16(ref[i]);
            expect_same(what, g, ref, n);
        } else expect_bf16_of(what, g, ref, NULL, n);
    } else if (r == 1) expect_same(what, g, ref, n);
    else expect_close(what, g, ref, n, 1e-5);
    for (int j = 0; j < k; j++) free(du[j]), free(A[j]), dev_free(gdu[j]), dev_free(gA[j]);
    free(dx0), free(hall), free(got), free(ref), free(tmp);
    dev_free(gall);
}

static void test_lora_dx(void) {
    one_lora_dx(37, 72, 4, 3, 0.1f, F32, 0);
    one_lora_dx(37, 72, 4, 3, 0.1f, F32, 1);  /* F32 dx 4-byte aligned only: one element a store */
    one_lora_dx(37, 73, 4, 2, 0.5f, F32, 0);  /* odd C */
    one_lora_dx(37, 73, 1, 2, 0.5f, B16, 0);  /* r 1: bit for bit */
    one_lora_dx(5, 33, 1, 3, 0.3f, F32, 0);   /* r 1: bit for bit */
    one_lora_dx(5, 33, 1, 1, 0.0f, F32, 1);   /* no dropout */
    one_lora_dx(1, 1, 1, 1, 0.3f, B16, 1);
    one_lora_dx(66, 130, 40, 2, 0.05f, F32, 0); /* r 40: two rank chunks, the second part zero */
    one_lora_dx(300, 2048, 32, 3, 0.05f, F32, 0); /* q/k/v of the 1B shape */
    one_lora_dx(300, 2048, 32, 2, 0.0f, F32, 0);  /* gate/up without dropout */
    one_lora_dx(129, 8192, 32, 1, 0.05f, B16, 0); /* down: BF16 dh */
    one_lora_dx(129, 8192, 32, 1, 0.05f, B16, 1);
    one_lora_dx(0, 64, 8, 1, 0.1f, F32, 0);        /* no rows */
}

/* ---- lora_u ----------------------------------------------------------------------------------- */

/* xd_j = dropout_j(x), u_j = scale xd_j A_j^T for k adapters sharing x, against the CPU: xd the CPU's
 * dropout of x rounded to BF16, bit for bit (dropout_acc's BF16 -> BF16 value); u within BF16
 * rounding of scale times the CPU's linear on the CPU's xd. xd and u start as NaN (every element
 * must be written); p 0 writes no xd and multiplies x itself. Then lora_forward without x adds
 * the device's u B^T into y (u given). */
static void one_lora_u(int N, int Cc, int r, int k, float p, float scale) {
    char what[160];
    const size_t n = (size_t)N * Cc;
    float *x = rnd(n, 1, true);
    dspy_tensor gx = up(x, (int64_t)n, B16);
    float *A[DSPY_LORA_DX_MAX];
    dspy_tensor gA[DSPY_LORA_DX_MAX], gxd[DSPY_LORA_DX_MAX], gu[DSPY_LORA_DX_MAX];
    uint64_t keys[DSPY_LORA_DX_MAX];
    for (int j = 0; j < k; j++) {
        A[j] = rnd((size_t)r * Cc, 0.2f, true);
        gA[j] = up(A[j], (int64_t)r * Cc, B16);
        gxd[j] = p > 0 ? poisoned((int64_t)n, B16) : NONE;
        gu[j] = poisoned((int64_t)N * r, B16);
        keys[j] = g_rng ^ (0xbf58476d1ce4e5b9ull * (uint64_t)(j + 3));
    }
    CHECK_OK(G->ops->lora_u(G, k, gxd, gu, gx, gA, keys, N, Cc, r, scale, p));
    float *xdref = malloc(sizeof(float) * (n ? n : 1)), *uref = malloc(sizeof(float) * ((size_t)N * r + 1));
    for (int j = 0; j < k; j++) {
        snprintf(what, sizeof what, "lora_u N=%d C=%d r=%d k=%d p=%g adapter %d", N, Cc, r, k, (double)p, j);
        if (n) CHECK_OK(C->ops->dropout(C, HF(xdref, n), HF(x, n), p, keys[j]));
        for (size_t i = 0; i < n; i++) xdref[i] = r16(xdref[i]);
        if (p > 0) {
            float *xd = down(gxd[j]);
            char w2[180];
            snprintf(w2, sizeof w2, "%s xd", what);
            expect_same(w2, xd, xdref, n);
            free(xd);
        }
        memset(uref, 0, sizeof(float) * ((size_t)N * r + 1));
        if (n) CHECK_OK(C->ops->linear(C, HF(uref, N * r), HF(xdref, n), HF(A[j], r * Cc), NONE, N, Cc, r, false));
        for (size_t i = 0; i < (size_t)N * r; i++) uref[i] *= scale;
        float *u = down(gu[j]);
        char w3[180];
        snprintf(w3, sizeof w3, "%s u", what);
        expect_bf16_of(w3, u, uref, NULL, (size_t)N * r);
        free(u);
    }
    /* lora_forward with u given: y = y0 + u B^T (the first adapter's u) */
    const int OC = 24;
    float *B = rnd((size_t)OC * r, 0.2f, true), *y0 = rnd((size_t)N * OC, 1, false);
    dspy_tensor gB = up(B, (int64_t)OC * r, B16), gy = up(y0, (int64_t)N * OC, F32);
    float *u0 = down(gu[0]);
    CHECK_OK(G->ops->lora_forward(G, gy, gu[0], NONE, NONE, gB, N, Cc, r, OC, scale));
    float *y = down(gy), *yref = dup_f(y0, (size_t)N * OC);
    if (N) CHECK_OK(C->ops->linear(C, HF(yref, N * OC), HF(u0, N * r), HF(B, OC * r), NONE, N, r, OC, true));
    float *u0b = down(gu[0]);
    snprintf(what, sizeof what, "lora_forward N=%d r=%d OC=%d with u given: y", N, r, OC);
    expect_close(what, y, yref, (size_t)N * OC, 1e-5);
    snprintf(what, sizeof what, "lora_forward N=%d r=%d OC=%d with u given: u untouched", N, r, OC);
    expect_same(what, u0b, u0, (size_t)N * r);
    free(B), free(y0), free(u0), free(u0b), free(y), free(yref);
    dev_free(gB), dev_free(gy);
    for (int j = 0; j < k; j++) {
        free(A[j]);
        dev_free(gA[j]), dev_free(gu[j]);
        if (p > 0) dev_free(gxd[j]);
    }
    free(x), free(xdref), free(uref);
    dev_free(gx);
}

static void test_lora_u(void) {
    one_lora_u(37, 72, 4, 3, 0.1f, 2.0f);
    one_lora_u(37, 73, 4, 2, 0.5f, 0.75f);   /* odd C: one element at a time */
    one_lora_u(5, 33, 1, 1, 0.3f, 3.0f);
    one_lora_u(21, 40, 8, 2, 0.0f, 2.0f);    /* no dropout: u from x, no xd */
    one_lora_u(66, 130, 40, 2, 0.05f, 2.0f); /* r 40: two rank slices, xd written once */
    one_lora_u(300, 2048, 32, 3, 0.05f, 2.0f); /* q/k/v of the 1B shape */
    one_lora_u(129, 8192, 32, 1, 0.05f, 2.0f); /* down */
    one_lora_u(1, 1, 1, 1, 0.3f, 1.0f);
}

/* ---- bad arguments --------------------------------------------------------------------------- */

static void test_errors(void) {
    float z[64] = {0};
    dspy_tensor a = up(z, 64, B16), f = up(z, 64, F32);
    CHECK_STATUS(G->ops->lora_backward(G, f, f, f, a, a, a, a, a, a, 2, 4, 2, 4, 1.0f, 0.5f), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "must be 0 or 1");
    CHECK_STATUS(G->ops->lora_forward(G, f, a, a, a, a, 2, 4, 0, 4, 1.0f), DSPY_ERR_ARG);
    CHECK_STATUS(G->ops->lora_forward(G, f, f, a, a, a, 2, 4, 2, 4, 1.0f), DSPY_ERR_ARG); /* u must be BF16 */
    CHECK_STATUS(G->ops->dropout_acc(G, f, f, 1.0f, 1, false), DSPY_ERR_ARG);
    CHECK_STATUS(G->ops->dropout_acc(G, dspy_bt(G, a.data, 16, F32), dspy_bt(G, a.data, 16, B16), 0.1f, 1, false),
                 DSPY_ERR_ARG);
    dspy_tensor du[4] = {a, a, a, a}, As[4] = {a, a, a, a};
    uint64_t keys[4] = {1, 2, 3, 4};
    CHECK_STATUS(G->ops->lora_dx(G, f, 0, du, As, keys, 2, 4, 2, 0.1f), DSPY_ERR_ARG);
    CHECK_STATUS(G->ops->lora_dx(G, f, DSPY_LORA_DX_MAX + 1, du, As, keys, 2, 4, 2, 0.1f), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "adapters");
    CHECK_STATUS(G->ops->lora_dx(G, f, 1, du, As, keys, 2, 4, 2, 1.0f), DSPY_ERR_ARG);
    CHECK_STATUS(G->ops->lora_dx(G, f, 1, du, As, keys, 2, 4, 0, 0.1f), DSPY_ERR_ARG);      /* r 0 */
    dspy_tensor duf[1] = {f};
    CHECK_STATUS(G->ops->lora_dx(G, f, 1, duf, As, keys, 2, 4, 2, 0.1f), DSPY_ERR_ARG);     /* du must be BF16 */
    CHECK_STATUS(G->ops->lora_dx(G, a, 1, du, As, keys, 16, 8, 2, 0.1f), DSPY_ERR_ARG);     /* dx too short */
    dspy_tensor xds[1] = {a}, us[1] = {a};
    CHECK_STATUS(G->ops->lora_u(G, 0, xds, us, a, As, keys, 2, 4, 2, 1.0f, 0.1f), DSPY_ERR_ARG);
    CHECK_STATUS(G->ops->lora_u(G, 1, xds, us, a, As, keys, 2, 4, 2, 1.0f, 1.0f), DSPY_ERR_ARG);
    CHECK_STATUS(G->ops->lora_u(G, 1, xds, us, f, As, keys, 2, 4, 2, 1.0f, 0.1f), DSPY_ERR_ARG); /* x must be BF16 */
    dspy_tensor nox[1] = {NONE};
    CHECK_STATUS(G->ops->lora_u(G, 1, nox, us, a, As, keys, 2, 4, 2, 1.0f, 0.1f), DSPY_ERR_ARG); /* p > 0 needs xd */
    CHECK_OK(G->ops->lora_u(G, 1, nox, us, a, As, keys, 2, 4, 2, 1.0f, 0.0f));                  /* p 0 does not */
    CHECK_OK(G->ops->sync(G));
    dev_free(a), dev_free(f);
}

int main(void) {
    int early = parity_begin("test_cuda_train_lora", &g_rng);
    if (early >= 0) return early;
    dspy_backend_plan plan = {4096, 4096, 8, 32000, 8, 128, 0};
    CHECK_OK(dspy_backend_new((dspy_device){DSPY_DEVICE_CPU, 0}, &plan, &C));
    CHECK_OK(dspy_backend_new((dspy_device){DSPY_DEVICE_CUDA, 0}, &plan, &G));
    if (!C || !G) return check_summary("test_cuda_train_lora");
    RUN(test_forward);
    RUN(test_backward);
    RUN(test_dropout);
    RUN(test_lora_dx);
    RUN(test_lora_u);
    RUN(test_errors);
    CHECK_OK(G->ops->sync(G));
    dspy_backend_free(G);
    dspy_backend_free(C);
    int rc = check_summary("test_cuda_train_lora");
    printf("test_cuda_train_lora: %d/%d passed\n", check_passed, check_passed + check_failed);
    return rc;
}
