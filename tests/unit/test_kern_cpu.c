/* test_kern_cpu.c — every CPU op of kern/ops.h against a plain double-precision re-computation
 * written here, plus the determinism contract (a row's result does not depend on the batch).
 *
 * Shapes are chosen off the fast paths (N not a multiple of 4, C not a multiple of 8, GQA,
 * shuffled KV blocks, several segments at different positions).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "f8_ref.h"
#include "dspy/safetensors.h"
#include "kern/backend.h"

static uint64_t g_rng = 88172645463325252ull;
static float frand(void) { /* uniform in [-1, 1) */
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}
static float *rnd(size_t n) {
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = frand();
    return p;
}

/* max |a - b| / max(1, max |b|) */
static double relerr(const float *a, const double *b, size_t n) {
    double e = 0, m = 1;
    for (size_t i = 0; i < n; i++) {
        if (fabs(a[i] - b[i]) > e) e = fabs(a[i] - b[i]);
        if (fabs(b[i]) > m) m = fabs(b[i]);
    }
    return e / m;
}

static const dspy_ops *O;
static dspy_backend *B;
#define F(p, n) dspy_bt(B, (p), (int64_t)(n), DSPY_DTYPE_F32)
#define I32(p, n) dspy_bt(B, (p), (int64_t)(n), DSPY_DTYPE_I32)
#define NONE dspy_tensor_none()

static void test_matmul(void) {
    const int N = 7, C = 37, OC = 21;
    float *x = rnd((size_t)N * C), *w = rnd((size_t)OC * C), *b = rnd(OC), *y = malloc(sizeof(float) * N * OC);
    double *ref = malloc(sizeof(double) * N * OC);
    for (int withbias = 0; withbias < 2; withbias++) {
        CHECK_OK(O->linear(B, F(y, N * OC), F(x, N * C), F(w, OC * C), withbias ? F(b, OC) : NONE, N, C, OC, false));
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) {
                double s = withbias ? b[o] : 0;
                for (int c = 0; c < C; c++) s += (double)x[n * C + c] * w[o * C + c];
                ref[n * OC + o] = s;
            }
        CHECK(relerr(y, ref, (size_t)N * OC) < 1e-6);
    }
    /* each row alone is bit-identical to the row inside the batch */
    float *one = malloc(sizeof(float) * OC);
    int diff = 0;
    for (int n = 0; n < N; n++) {
        CHECK_OK(O->linear(B, F(one, OC), F(x + n * C, C), F(w, OC * C), F(b, OC), 1, C, OC, false));
        diff += memcmp(one, y + n * OC, sizeof(float) * OC) != 0;
    }
    CHECK_INT(diff, 0);
    /* a large product (parallel path) */
    const int N2 = 9, C2 = 256, OC2 = 300;
    float *x2 = rnd((size_t)N2 * C2), *w2 = rnd((size_t)OC2 * C2), *y2 = malloc(sizeof(float) * N2 * OC2);
    double *r2 = malloc(sizeof(double) * N2 * OC2);
    CHECK_OK(O->linear(B, F(y2, N2 * OC2), F(x2, N2 * C2), F(w2, OC2 * C2), NONE, N2, C2, OC2, false));
    for (int n = 0; n < N2; n++)
        for (int o = 0; o < OC2; o++) {
            double s = 0;
            for (int c = 0; c < C2; c++) s += (double)x2[n * C2 + c] * w2[o * C2 + c];
            r2[n * OC2 + o] = s;
        }
    CHECK(relerr(y2, r2, (size_t)N2 * OC2) < 1e-6);
    /* BF16 weights equal their exact F32 widening, bit for bit; accumulate adds into out */
    uint16_t *wb = malloc(sizeof(uint16_t) * OC2 * C2);
    float *wf = malloc(sizeof(float) * OC2 * C2), *ya = malloc(sizeof(float) * N2 * OC2), *yb = malloc(sizeof(float) * N2 * OC2);
    for (int i = 0; i < OC2 * C2; i++) wb[i] = dspy_f32_to_bf16(w2[i]), wf[i] = dspy_bf16_to_f32(wb[i]);
    CHECK_OK(O->linear(B, F(ya, N2 * OC2), F(x2, N2 * C2), F(wf, OC2 * C2), NONE, N2, C2, OC2, false));
    CHECK_OK(O->linear(B, F(yb, N2 * OC2), F(x2, N2 * C2), dspy_bt(B, wb, OC2 * C2, DSPY_DTYPE_BF16), NONE, N2, C2,
                       OC2, false));
    CHECK(memcmp(ya, yb, sizeof(float) * N2 * OC2) == 0);
    for (int i = 0; i < N2 * OC2; i++) yb[i] = (float)i;
    CHECK_OK(O->linear(B, F(yb, N2 * OC2), F(x2, N2 * C2), F(wf, OC2 * C2), NONE, N2, C2, OC2, true));
    int acc_ok = 0;
    for (int i = 0; i < N2 * OC2; i++) acc_ok += yb[i] == (float)i + ya[i];
    CHECK_INT(acc_ok, N2 * OC2);
    for (int i = 0; i < N2 * OC2; i++) yb[i] = (float)i; /* DSPY_LINEAR_ADD_EARLY: an add here too */
    CHECK_OK(O->linear(B, F(yb, N2 * OC2), F(x2, N2 * C2), F(wf, OC2 * C2), NONE, N2, C2, OC2, DSPY_LINEAR_ADD_EARLY));
    acc_ok = 0;
    for (int i = 0; i < N2 * OC2; i++) acc_ok += yb[i] == (float)i + ya[i];
    CHECK_INT(acc_ok, N2 * OC2);
    /* wrong dtype and short tensors are errors that name the argument */
    CHECK_STATUS(O->linear(B, F(ya, N2 * OC2), I32(x2, N2 * C2), F(wf, OC2 * C2), NONE, N2, C2, OC2, false), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "inp is I32");
    CHECK_STATUS(O->linear(B, F(ya, 5), F(x2, N2 * C2), F(wf, OC2 * C2), NONE, N2, C2, OC2, false), DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "out holds 5 elements");
    free(wb), free(wf), free(ya), free(yb);
    free(x), free(w), free(b), free(y), free(ref), free(one), free(x2), free(w2), free(y2), free(r2);
}

static void test_rmsnorm(void) {
    const int N = 5, C = 45;
    float *x = rnd((size_t)N * C), *w = rnd(C), *y = malloc(sizeof(float) * N * C);
    double *ref = malloc(sizeof(double) * N * C);
    CHECK_OK(O->rmsnorm(B, F(y, N * C), F(x, N * C), F(w, C), N, C, 1e-5f));
    for (int n = 0; n < N; n++) {
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)x[n * C + c] * x[n * C + c];
        double r = 1.0 / sqrt(ss / C + 1e-5);
        for (int c = 0; c < C; c++) ref[n * C + c] = w[c] * x[n * C + c] * r;
    }
    CHECK(relerr(y, ref, (size_t)N * C) < 1e-6);
    CHECK_OK(O->rmsnorm(B, F(x, N * C), F(x, N * C), F(w, C), N, C, 1e-5f)); /* in place */
    CHECK(memcmp(x, y, sizeof(float) * N * C) == 0);
    free(x), free(w), free(y), free(ref);
}

static void test_rope(void) {
    const int N = 3, H = 2, HS = 8;
    int32_t pos[3] = {0, 5, 1000};
    float inv[4] = {1.0f, 0.1f, 0.01f, 0.001f};
    float *x = rnd((size_t)N * H * HS), *orig = malloc(sizeof(float) * N * H * HS);
    memcpy(orig, x, sizeof(float) * N * H * HS);
    double *ref = malloc(sizeof(double) * N * H * HS);
    CHECK_OK(O->rope(B, F(x, N * H * HS), I32(pos, N), F(inv, HS / 2), N, H, HS));
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < HS / 2; i++) {
                const float *v = orig + (n * H + h) * HS;
                double a = (double)pos[n] * inv[i];
                ref[(n * H + h) * HS + i] = v[i] * cos(a) - v[i + HS / 2] * sin(a);
                ref[(n * H + h) * HS + i + HS / 2] = v[i + HS / 2] * cos(a) + v[i] * sin(a);
            }
    CHECK(relerr(x, ref, (size_t)N * H * HS) < 1e-4); /* float32 angle at position 1000 */
    CHECK(memcmp(x, orig, sizeof(float) * H * HS) == 0); /* position 0 is the identity */
    free(x), free(orig), free(ref);
}

static void test_pointwise(void) {
    const int N = 3, C = 11, V = 13;
    float *g = rnd((size_t)N * C), *u = rnd((size_t)N * C), *y = malloc(sizeof(float) * N * C);
    double *ref = malloc(sizeof(double) * N * V * 2);
    CHECK_OK(O->swiglu(B, F(y, N * C), F(g, N * C), F(u, N * C), N, C, C));
    for (int i = 0; i < N * C; i++) ref[i] = g[i] / (1 + exp(-(double)g[i])) * u[i];
    CHECK(relerr(y, ref, (size_t)N * C) < 1e-6);
    /* the fused [gate | up] layout (row stride 2C) gives the same numbers */
    float *gu = malloc(sizeof(float) * N * 2 * C), *y2 = malloc(sizeof(float) * N * C);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) gu[n * 2 * C + c] = g[n * C + c], gu[n * 2 * C + C + c] = u[n * C + c];
    CHECK_OK(O->swiglu(B, F(y2, N * C), F(gu, N * 2 * C), F(gu + C, N * 2 * C - C), N, C, 2 * C));
    CHECK(memcmp(y, y2, sizeof(float) * N * C) == 0);
    free(gu), free(y2);
    float *l = NULL, *p = NULL;
    float *table = rnd((size_t)V * C), *e = malloc(sizeof(float) * 3 * C);
    int32_t ids[3] = {12, 0, 12};
    CHECK_OK(O->embedding(B, F(e, 3 * C), I32(ids, 3), F(table, V * C), 3, C));
    int32_t bad[1] = {13};
    CHECK_STATUS(O->embedding(B, F(e, C), I32(bad, 1), F(table, V * C), 1, C), DSPY_ERR_ARG);
    CHECK(memcmp(e, table + 12 * C, sizeof(float) * C) == 0 && memcmp(e + C, table, sizeof(float) * C) == 0 &&
          memcmp(e + 2 * C, table + 12 * C, sizeof(float) * C) == 0);
    float a[3] = {1, 2, 3}, b[3] = {0.5f, -2, 10};
    CHECK_OK(O->add(B, F(a, 3), F(b, 3)));
    CHECK(a[0] == 1.5f && a[1] == 0 && a[2] == 13);
    int32_t rows[2] = {2, 0};
    float sel[2 * 11];
    CHECK_OK(O->gather_rows(B, F(sel, 2 * C), F(table, V * C), I32(rows, 2), 2, C));
    CHECK(memcmp(sel, table + 2 * C, sizeof(float) * C) == 0 && memcmp(sel + C, table, sizeof(float) * C) == 0);
    free(g), free(u), free(y), free(ref), free(l), free(p), free(table), free(e);
}

/* Paged causal attention with GQA against a dense double-precision reference. */
static void test_attention(void) {
    const int NH = 4, NKV = 2, HS = 12, BS = 4, NBLK = 8, KVD = NKV * HS;
    /* two sequences: A has 6 cached + 3 new (prefill chunk), B has 9 cached + 1 new (decode) */
    int32_t tabA[3] = {5, 1, 6}, tabB[3] = {2, 7, 0};
    const int lenA = 9, lenB = 10;
    float *kc = calloc((size_t)NBLK * BS * KVD, sizeof(float)), *vc = calloc((size_t)NBLK * BS * KVD, sizeof(float));
    float *kA = rnd((size_t)lenA * KVD), *vA = rnd((size_t)lenA * KVD), *kB = rnd((size_t)lenB * KVD),
          *vB = rnd((size_t)lenB * KVD);
    int32_t slotsA[9], slotsB[10];
    for (int p = 0; p < lenA; p++) slotsA[p] = tabA[p / BS] * BS + p % BS;
    for (int p = 0; p < lenB; p++) slotsB[p] = tabB[p / BS] * BS + p % BS;
    for (int p = 0; p < lenA; p++) memcpy(kc + (size_t)slotsA[p] * KVD, kA + p * KVD, sizeof(float) * KVD);
    for (int p = 0; p < lenA; p++) memcpy(vc + (size_t)slotsA[p] * KVD, vA + p * KVD, sizeof(float) * KVD);
    for (int p = 0; p < lenB; p++) memcpy(kc + (size_t)slotsB[p] * KVD, kB + p * KVD, sizeof(float) * KVD);
    for (int p = 0; p < lenB; p++) memcpy(vc + (size_t)slotsB[p] * KVD, vB + p * KVD, sizeof(float) * KVD);
    int32_t tables[6] = {5, 1, 6, 2, 7, 0}; /* A's table at 0, B's at 3 */
    const int64_t NSLOT = (int64_t)NBLK * BS * KVD;
    const int N = 4; /* rows 0-2: A positions 6..8; row 3: B position 9 */
    float *q = rnd((size_t)N * NH * HS), *out = malloc(sizeof(float) * N * NH * HS);
    dspy_attn_seg segs[2] = {{0, 3, 6, 0}, {3, 1, 9, 3}};
    dspy_attn_meta am = {I32(segs, 8), I32(tables, 6), 2, N, BS, 16, false, dspy_tensor_none()};
    CHECK_OK(O->attention(B, F(out, N * NH * HS), F(q, N * NH * HS), F(kc, NSLOT), F(vc, NSLOT), &am, NH, NKV, HS));
    double *ref = malloc(sizeof(double) * N * NH * HS);
    for (int r = 0; r < N; r++) {
        const float *K = r < 3 ? kA : kB, *Vv = r < 3 ? vA : vB;
        int pos = r < 3 ? 6 + r : 9;
        for (int h = 0; h < NH; h++) {
            int kvh = h / (NH / NKV);
            double sc[16], m = -INFINITY, s = 0;
            for (int j = 0; j <= pos; j++) {
                double d = 0;
                for (int i = 0; i < HS; i++) d += (double)q[(r * NH + h) * HS + i] * K[j * KVD + kvh * HS + i];
                sc[j] = d / sqrt((double)HS);
                m = fmax(m, sc[j]);
            }
            for (int j = 0; j <= pos; j++) s += exp(sc[j] - m);
            for (int i = 0; i < HS; i++) {
                double o = 0;
                for (int j = 0; j <= pos; j++) o += exp(sc[j] - m) / s * Vv[j * KVD + kvh * HS + i];
                ref[(r * NH + h) * HS + i] = o;
            }
        }
    }
    CHECK(relerr(out, ref, (size_t)N * NH * HS) < 1e-5);
    /* decode of B alone, and A's last row alone, are bit-identical to the batched call */
    float *o1 = malloc(sizeof(float) * NH * HS);
    dspy_attn_seg b1 = {0, 1, 9, 3};
    dspy_attn_meta m1 = {I32(&b1, 4), I32(tables, 6), 1, 1, BS, 16, true, dspy_tensor_none()};
    CHECK_OK(O->attention(B, F(o1, NH * HS), F(q + 3 * NH * HS, NH * HS), F(kc, NSLOT), F(vc, NSLOT), &m1, NH, NKV, HS));
    CHECK(memcmp(o1, out + 3 * NH * HS, sizeof(float) * NH * HS) == 0);
    dspy_attn_seg a1 = {0, 1, 8, 0};
    m1.segs = I32(&a1, 4);
    CHECK_OK(O->attention(B, F(o1, NH * HS), F(q + 2 * NH * HS, NH * HS), F(kc, NSLOT), F(vc, NSLOT), &m1, NH, NKV, HS));
    /* a block table too short for the position, and a sequence longer than the plan, are
     * errors, not overflows */
    dspy_attn_seg big = {0, 1, 40, 0};
    m1.segs = I32(&big, 4);
    CHECK_STATUS(O->attention(B, F(o1, NH * HS), F(q, NH * HS), F(kc, NSLOT), F(vc, NSLOT), &m1, NH, NKV, HS),
                 DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "block-table entries");
    int32_t long_table[40] = {0};
    dspy_attn_seg huge = {0, 1, 100, 0};
    m1.segs = I32(&huge, 4);
    m1.tables = I32(long_table, 40);
    CHECK_STATUS(O->attention(B, F(o1, NH * HS), F(q, NH * HS), F(kc, NSLOT), F(vc, NSLOT), &m1, NH, NKV, HS),
                 DSPY_ERR_ARG);
    CHECK_CONTAINS(dspy_errmsg(), "planned for 64");
    CHECK(memcmp(o1, out + 2 * NH * HS, sizeof(float) * NH * HS) == 0);
    free(kc), free(vc), free(kA), free(vA), free(kB), free(vB), free(q), free(out), free(ref), free(o1);
}

/* The fused projection split: rotated q out, rotated k and plain v into the cache slots. */
static void test_qkv_rope_store(void) {
    const int N = 3, NH = 4, NKV = 2, HS = 8, Q = NH * HS, KVD = NKV * HS, W = Q + 2 * KVD, NS = 10;
    int32_t pos[3] = {0, 7, 300}, slots[3] = {9, 2, 5};
    float inv[4] = {1.0f, 0.3f, 0.05f, 0.001f};
    float *qkv = rnd((size_t)N * W), *q = malloc(sizeof(float) * N * Q);
    float *kc = calloc((size_t)NS * KVD, sizeof(float)), *vc = calloc((size_t)NS * KVD, sizeof(float));
    CHECK_OK(O->qkv_rope_store(B, F(q, N * Q), F(kc, NS * KVD), F(vc, NS * KVD), F(qkv, N * W), I32(pos, N),
                               I32(slots, N), F(inv, HS / 2), N, NH, NKV, HS));
    /* the same rotation as the rope op on the unfused parts */
    float *qr = malloc(sizeof(float) * N * Q), *kr = malloc(sizeof(float) * N * KVD);
    for (int n = 0; n < N; n++) {
        memcpy(qr + n * Q, qkv + n * W, sizeof(float) * Q);
        memcpy(kr + n * KVD, qkv + n * W + Q, sizeof(float) * KVD);
    }
    CHECK_OK(O->rope(B, F(qr, N * Q), I32(pos, N), F(inv, HS / 2), N, NH, HS));
    CHECK_OK(O->rope(B, F(kr, N * KVD), I32(pos, N), F(inv, HS / 2), N, NKV, HS));
    CHECK(memcmp(q, qr, sizeof(float) * N * Q) == 0);
    int ok = 0;
    for (int n = 0; n < N; n++)
        ok += memcmp(kc + slots[n] * KVD, kr + n * KVD, sizeof(float) * KVD) == 0 &&
              memcmp(vc + slots[n] * KVD, qkv + n * W + Q + KVD, sizeof(float) * KVD) == 0;
    CHECK_INT(ok, N);
    CHECK(kc[0] == 0 && vc[0] == 0); /* slot 0 untouched */
    int32_t bad[1] = {NS};
    CHECK_STATUS(O->qkv_rope_store(B, F(q, Q), F(kc, NS * KVD), F(vc, NS * KVD), F(qkv, W), I32(pos, 1), I32(bad, 1),
                                   F(inv, HS / 2), 1, NH, NKV, HS),
                 DSPY_ERR_ARG);
    free(qkv), free(q), free(kc), free(vc), free(qr), free(kr);
}

/* W8A8 (a backend planned with act8_width, kern/cpu/cpu.h dspy_cpu_act8_rows): a linear call of
 * more than 16 rows multiplies its rows rounded to E4M3 at their own 2^k (the tests' definition,
 * f8_ref.h) — in double against that, ~2e-2 from the unrounded product; 16 rows and the logits op
 * (the lm_head) are not rounded; the fast kernels do the same. Rows scaled over 2^-8 .. 2^8. */
static void test_w8a8(void) {
    enum { N = 20, C = 64, OC = 48 };
    for (int fast = 0; fast < 2; fast++) {
        dspy_backend *b8 = NULL;
        dspy_backend_plan plan = {64, 32, 4, 64, 4, 16, 1, 64};
        CHECK_OK(dspy_backend_new((dspy_device){DSPY_DEVICE_CPU, 0}, &plan, &b8));
        if (!b8) return;
        if (fast) CHECK_OK(dspy_backend_cpu_use_fast(b8, C));
        float *x = rnd((size_t)N * C), *w = rnd((size_t)OC * C), *out = malloc(sizeof(float) * N * OC);
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++) x[n * C + c] = ldexpf(x[n * C + c], n % 17 - 8);
        float *x8 = malloc(sizeof(float) * N * C);
        memcpy(x8, x, sizeof(float) * N * C);
        f8_ref_round_rows(x8, N, C);
        double *r8 = malloc(sizeof(double) * N * OC), *r32 = malloc(sizeof(double) * N * OC);
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) {
                double a = 0, b = 0;
                for (int c = 0; c < C; c++) a += (double)x8[n * C + c] * w[o * C + c], b += (double)x[n * C + c] * w[o * C + c];
                r8[n * OC + o] = a, r32[n * OC + o] = b;
            }
        /* F32 weights: the fast kernels' F32 tiles, the same sums in another order */
        const double tol = 1e-5;
        CHECK_OK(b8->ops->linear(b8, dspy_bt(b8, out, N * OC, DSPY_DTYPE_F32), dspy_bt(b8, x, N * C, DSPY_DTYPE_F32),
                                 dspy_bt(b8, w, OC * C, DSPY_DTYPE_F32), NONE, N, C, OC, false));
        const double e8 = relerr(out, r8, (size_t)N * OC), e32 = relerr(out, r32, (size_t)N * OC);
        check_report(e8 <= tol && e32 > 4 * e8 && e32 > 1e-3, __FILE__, __LINE__,
                     "W8A8 %d rows (%s): %.3g from the definition, %.3g from the unrounded rows", N, fast ? "fast" : "reference", e8, e32);
        /* 16 rows: not rounded */
        CHECK_OK(b8->ops->linear(b8, dspy_bt(b8, out, 16 * OC, DSPY_DTYPE_F32), dspy_bt(b8, x, 16 * C, DSPY_DTYPE_F32),
                                 dspy_bt(b8, w, OC * C, DSPY_DTYPE_F32), NONE, 16, C, OC, false));
        CHECK(relerr(out, r32, (size_t)16 * OC) <= tol);
        /* the logits op over all N rows (identity gather, unit norm weight): the unrounded path */
        float *nw = malloc(sizeof(float) * C), *sel = malloc(sizeof(float) * N * C), *seln = malloc(sizeof(float) * N * C);
        int32_t rows[N];
        for (int c = 0; c < C; c++) nw[c] = 1.0f;
        for (int n = 0; n < N; n++) rows[n] = n;
        float *lo = malloc(sizeof(float) * N * OC), *ln = malloc(sizeof(float) * N * OC);
        CHECK_OK(b8->ops->logits(b8, dspy_bt(b8, lo, N * OC, DSPY_DTYPE_F32), dspy_bt(b8, x, N * C, DSPY_DTYPE_F32),
                                 dspy_bt(b8, rows, N, DSPY_DTYPE_I32), dspy_bt(b8, nw, C, DSPY_DTYPE_F32),
                                 dspy_bt(b8, w, OC * C, DSPY_DTYPE_F32), dspy_bt(b8, sel, N * C, DSPY_DTYPE_F32),
                                 dspy_bt(b8, seln, N * C, DSPY_DTYPE_F32), N, C, OC, 1e-5f));
        CHECK_OK(b8->ops->linear(b8, dspy_bt(b8, ln, 16 * OC, DSPY_DTYPE_F32), dspy_bt(b8, seln, 16 * C, DSPY_DTYPE_F32),
                                 dspy_bt(b8, w, OC * C, DSPY_DTYPE_F32), NONE, 16, C, OC, false));
        CHECK(memcmp(lo, ln, sizeof(float) * 16 * OC) == 0); /* its first 16 rows as a 16-row (unrounded) linear */
        printf("  W8A8 linear, %s kernels: %.2e from the definition, %.2e from the unrounded rows\n",
               fast ? "fast" : "reference", e8, e32);
        free(x), free(w), free(out), free(x8), free(r8), free(r32), free(nw), free(sel), free(seln), free(lo), free(ln);
        dspy_backend_free(b8);
    }
}

int main(void) {
    dspy_backend_plan plan = {64, 32, 4, 64, 4, 16, 0, 0};
    CHECK_OK(dspy_backend_new((dspy_device){DSPY_DEVICE_CPU, 0}, &plan, &B));
    if (!B) return check_summary("test_kern_cpu");
    O = B->ops;
    CHECK_STR(O->name, "cpu");
    RUN(test_matmul);
    RUN(test_rmsnorm);
    RUN(test_rope);
    RUN(test_pointwise);
    RUN(test_attention);
    RUN(test_qkv_rope_store);
    RUN(test_w8a8);
    dspy_backend_free(B);
    return check_summary("test_kern_cpu");
}
