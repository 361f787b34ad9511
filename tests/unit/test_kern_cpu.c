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
#include "kern/ops.h"

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

static void test_matmul(void) {
    const int N = 7, C = 37, OC = 21;
    float *x = rnd((size_t)N * C), *w = rnd((size_t)OC * C), *b = rnd(OC), *y = malloc(sizeof(float) * N * OC);
    double *ref = malloc(sizeof(double) * N * OC);
    for (int withbias = 0; withbias < 2; withbias++) {
        O->matmul(y, x, w, withbias ? b : NULL, N, C, OC);
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
        O->matmul(one, x + n * C, w, b, 1, C, OC);
        diff += memcmp(one, y + n * OC, sizeof(float) * OC) != 0;
    }
    CHECK_INT(diff, 0);
    /* a large product (parallel path) */
    const int N2 = 9, C2 = 256, OC2 = 300;
    float *x2 = rnd((size_t)N2 * C2), *w2 = rnd((size_t)OC2 * C2), *y2 = malloc(sizeof(float) * N2 * OC2);
    double *r2 = malloc(sizeof(double) * N2 * OC2);
    O->matmul(y2, x2, w2, NULL, N2, C2, OC2);
    for (int n = 0; n < N2; n++)
        for (int o = 0; o < OC2; o++) {
            double s = 0;
            for (int c = 0; c < C2; c++) s += (double)x2[n * C2 + c] * w2[o * C2 + c];
            r2[n * OC2 + o] = s;
        }
    CHECK(relerr(y2, r2, (size_t)N2 * OC2) < 1e-6);
    free(x), free(w), free(b), free(y), free(ref), free(one), free(x2), free(w2), free(y2), free(r2);
}

static void test_rmsnorm(void) {
    const int N = 5, C = 45;
    float *x = rnd((size_t)N * C), *w = rnd(C), *y = malloc(sizeof(float) * N * C);
    double *ref = malloc(sizeof(double) * N * C);
    O->rmsnorm(y, x, w, N, C, 1e-5f);
    for (int n = 0; n < N; n++) {
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)x[n * C + c] * x[n * C + c];
        double r = 1.0 / sqrt(ss / C + 1e-5);
        for (int c = 0; c < C; c++) ref[n * C + c] = w[c] * x[n * C + c] * r;
    }
    CHECK(relerr(y, ref, (size_t)N * C) < 1e-6);
    O->rmsnorm(x, x, w, N, C, 1e-5f); /* in place */
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
    O->rope(x, pos, inv, N, H, HS);
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
    O->swiglu(y, g, u, N, C);
    for (int i = 0; i < N * C; i++) ref[i] = g[i] / (1 + exp(-(double)g[i])) * u[i];
    CHECK(relerr(y, ref, (size_t)N * C) < 1e-6);
    float *l = rnd((size_t)N * V), *p = malloc(sizeof(float) * N * V);
    for (int i = 0; i < V; i++) l[i] *= 30; /* large logits: the max subtraction matters */
    O->softmax(p, l, N, V);
    for (int n = 0; n < N; n++) {
        double m = -INFINITY, s = 0;
        for (int i = 0; i < V; i++) m = fmax(m, l[n * V + i]);
        for (int i = 0; i < V; i++) s += exp(l[n * V + i] - m);
        for (int i = 0; i < V; i++) ref[n * V + i] = exp(l[n * V + i] - m) / s;
    }
    CHECK(relerr(p, ref, (size_t)N * V) < 1e-6);
    float *table = rnd((size_t)V * C), *e = malloc(sizeof(float) * 3 * C);
    int32_t ids[3] = {12, 0, 12};
    O->embedding(e, ids, table, 3, C);
    CHECK(memcmp(e, table + 12 * C, sizeof(float) * C) == 0 && memcmp(e + C, table, sizeof(float) * C) == 0 &&
          memcmp(e + 2 * C, table + 12 * C, sizeof(float) * C) == 0);
    float a[3] = {1, 2, 3}, b[3] = {0.5f, -2, 10};
    O->add(a, b, 3);
    CHECK(a[0] == 1.5f && a[1] == 0 && a[2] == 13);
    int32_t rows[2] = {2, 0};
    float sel[2 * 11];
    O->gather_rows(sel, table, rows, 2, C);
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
    O->kv_store(kc, vc, kA, vA, slotsA, lenA, KVD);
    O->kv_store(kc, vc, kB, vB, slotsB, lenB, KVD);
    CHECK(memcmp(kc + (size_t)slotsA[7] * KVD, kA + 7 * KVD, sizeof(float) * KVD) == 0);
    const int N = 4; /* rows 0-2: A positions 6..8; row 3: B position 9 */
    float *q = rnd((size_t)N * NH * HS), *out = malloc(sizeof(float) * N * NH * HS);
    dspy_attn_seg segs[2] = {{0, 3, 6, tabA}, {3, 1, 9, tabB}};
    O->attention_prefill(out, q, kc, vc, segs, 2, BS, NH, NKV, HS);
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
    dspy_attn_seg b1 = {0, 1, 9, tabB};
    O->attention_decode(o1, q + 3 * NH * HS, kc, vc, &b1, 1, BS, NH, NKV, HS);
    CHECK(memcmp(o1, out + 3 * NH * HS, sizeof(float) * NH * HS) == 0);
    dspy_attn_seg a1 = {0, 1, 8, tabA};
    O->attention_decode(o1, q + 2 * NH * HS, kc, vc, &a1, 1, BS, NH, NKV, HS);
    CHECK(memcmp(o1, out + 2 * NH * HS, sizeof(float) * NH * HS) == 0);
    free(kc), free(vc), free(kA), free(vA), free(kB), free(vB), free(q), free(out), free(ref), free(o1);
}

int main(void) {
    O = dspy_ops_cpu();
    CHECK_STR(O->name, "cpu");
    RUN(test_matmul);
    RUN(test_rmsnorm);
    RUN(test_rope);
    RUN(test_pointwise);
    RUN(test_attention);
    return check_summary("test_kern_cpu");
}
