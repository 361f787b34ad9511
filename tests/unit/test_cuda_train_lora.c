/* test_cuda_train_lora.c — the LoRA entries of the mixed-precision trainer (kern/ops.h
 * lora_forward, lora_backward, dropout_acc) on CUDA against the CPU reference ops (label gpu; exit
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
 *     terms with beta 1); without dx (none: no input gradient) du, gA and gB the same;
 *   dropout_acc: F32 -> F32 bit-identical to the CPU's dropout; BF16 or F32 in, BF16 out the
 *     CPU's result rounded to BF16 bit for bit; accumulating into F32 and BF16 out bit for bit (each
 *     element the CPU's dropout value plus out, separately rounded).
 * Odd sizes (N 37, C 72, OC 1001, r 1 and 4) and the 1B shape's (r 32, C 2048, OC 512 / 8192);
 * dropout_acc on sizes that take its one-element and its eight-element (16-byte) kernel.
 * Bad arguments (beta 0.5, r 0, p 1, out aliasing inp with another dtype) are refused.
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

/* with_dx false: lora_backward gets no dx (none) and must still form du, gA and gB. */
static void one_backward(int N, int Cc, int r, int OC, float scale, dspy_dtype dxdt, float beta, bool with_dx) {
    char what[160];
    char tag[64];
    snprintf(tag, sizeof tag, "N=%d C=%d r=%d OC=%d %s beta %g", N, Cc, r, OC,
             !with_dx ? "no dx" : dxdt == B16 ? "BF16 dx" : "F32 dx", (double)beta);
    float *dy = rnd((size_t)N * OC, 1, true), *x = rnd((size_t)N * Cc, 1, true), *u = rnd((size_t)N * r, 1, true);
    float *A = rnd((size_t)r * Cc, 0.2f, true), *B = rnd((size_t)OC * r, 0.2f, true);
    float *gA0 = rnd((size_t)r * Cc, 1, false), *gB0 = rnd((size_t)OC * r, 1, false);
    float *dx0 = rnd((size_t)N * Cc, 1, dxdt == B16);
    dspy_tensor gdy = up(dy, (int64_t)N * OC, B16), gx = up(x, (int64_t)N * Cc, B16), gu = up(u, (int64_t)N * r, B16);
    dspy_tensor ga = up(A, (int64_t)r * Cc, B16), gb = up(B, (int64_t)OC * r, B16);
    dspy_tensor gga = up(gA0, (int64_t)r * Cc, F32), ggb = up(gB0, (int64_t)OC * r, F32);
    dspy_tensor gdx = !with_dx        ? NONE
                      : beta == 0.0f ? poisoned((int64_t)N * Cc, dxdt)
                                     : up(dx0, (int64_t)N * Cc, dxdt);
    dspy_tensor gdu = poisoned((int64_t)N * r, B16);
    CHECK_OK(G->ops->lora_backward(G, gdx, gga, ggb, gdu, gdy, gx, gu, ga, gb, N, Cc, r, OC, scale, beta));
    float *du = down(gdu), *hga = down(gga), *hgb = down(ggb), *hdx = with_dx ? down(gdx) : NULL;
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
    if (with_dx) {
        snprintf(what, sizeof what, "lora_backward %s dx", tag);
        if (dxdt == B16) expect_bf16_of(what, hdx, dxref, beta == 0.0f ? NULL : dx0, (size_t)N * Cc);
        else expect_close(what, hdx, dxref, (size_t)N * Cc, 1e-5);
    }
    free(dy), free(x), free(u), free(A), free(B), free(gA0), free(gB0), free(dx0);
    free(du), free(hga), free(hgb), free(hdx), free(duref), free(garef), free(gbref), free(dxref);
    dev_free(gdy), dev_free(gx), dev_free(gu), dev_free(ga), dev_free(gb), dev_free(gga), dev_free(ggb);
    if (with_dx) dev_free(gdx);
    dev_free(gdu);
}

static void test_backward(void) {
    one_backward(37, 72, 4, 1001, 2.0f, F32, 0.0f, true);
    one_backward(37, 72, 4, 1001, 0.5f, F32, 1.0f, true);
    one_backward(37, 72, 4, 1001, 2.0f, B16, 0.0f, true);
    one_backward(41, 2048, 32, 8192, 2.0f, B16, 1.0f, true);
    one_backward(5, 33, 1, 7, 3.0f, F32, 1.0f, true);
    one_backward(300, 2048, 32, 512, 2.0f, F32, 1.0f, true);
    one_backward(37, 72, 4, 1001, 2.0f, F32, 0.0f, false); /* the trainer's first layer under LoRA */
    one_backward(300, 2048, 32, 512, 2.0f, F32, 0.0f, false);
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
    CHECK_OK(G->ops->sync(G));
    dev_free(a), dev_free(f);
}

int main(void) {
    int early = parity_begin("test_cuda_train_lora", &g_rng);
    if (early >= 0) return early;
    dspy_backend_plan plan = {4096, 4096, 8, 32000, 8, 128, 0, 0};
    CHECK_OK(dspy_backend_new((dspy_device){DSPY_DEVICE_CPU, 0}, &plan, &C));
    CHECK_OK(dspy_backend_new((dspy_device){DSPY_DEVICE_CUDA, 0}, &plan, &G));
    if (!C || !G) return check_summary("test_cuda_train_lora");
    RUN(test_forward);
    RUN(test_backward);
    RUN(test_dropout);
    RUN(test_errors);
    CHECK_OK(G->ops->sync(G));
    dspy_backend_free(G);
    dspy_backend_free(C);
    int rc = check_summary("test_cuda_train_lora");
    printf("test_cuda_train_lora: %d/%d passed\n", check_passed, check_passed + check_failed);
    return rc;
}
