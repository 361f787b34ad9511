/* test_kern_backward.c — the training entries of kern/ops.h (CPU) against finite differences.
 *
 * Each backward op is checked on small random shapes (off the fast paths: odd widths, GQA,
 * two packed examples, repeated ids) against double-precision central differences of a double
 * re-computation of its forward op written here, of the scalar L = sum(R * out) for a random R:
 * ||analytic - numeric|| / ||numeric|| <= 1e-5 (h = 1e-6; the float kernels land near 1e-7).
 * Also: the accumulate (+=) contract, NULL outputs skipped, the training attention against the
 * inference kernel (bit-identical for one example), the cross-entropy loss values, dropout's
 * mask (deterministic, keep rate, same mask for the backward call), and results that do not
 * depend on the thread count.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kern/backend.h"

#define TOL 1e-5
#define FD_H 1e-6

static dspy_backend *B; /* the CPU backend every call below goes through */

/* Calls of the op table with plain float arrays (sizes in elements; NULL = none). */
static dspy_tensor F(const void *p, int64_t n) {
    return p ? dspy_bt(B, (void *)p, n, DSPY_DTYPE_F32) : dspy_tensor_none();
}
#define I32(p, n) dspy_bt(B, (void *)(p), (int64_t)(n), DSPY_DTYPE_I32)
static void k_linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                              int N, int C, int OC) {
    CHECK_OK(B->ops->linear_backward(B, F(dinp, N * C), F(dw, OC * C), F(db, OC), F(dout, N * OC), F(inp, N * C),
                                     F(w, OC * C), N, C, OC));
}
static void k_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w, int N,
                               int C, float eps) {
    CHECK_OK(B->ops->rmsnorm_backward(B, F(dinp, N * C), F(dw, C), F(dout, N * C), F(inp, N * C), F(w, C), N, C, eps));
}
static void k_rope(float *x, const int32_t *pos, const float *inv, int N, int H, int HS, int dir) {
    if (dir > 0) CHECK_OK(B->ops->rope(B, F(x, N * H * HS), I32(pos, N), F(inv, HS / 2), N, H, HS));
    else CHECK_OK(B->ops->rope_backward(B, F(x, N * H * HS), I32(pos, N), F(inv, HS / 2), N, H, HS));
}
static void k_attention_train(float *out, float *lse, const float *q, const float *k, const float *v,
                              const int32_t *start, int prefix, int T, int NH, int NKV, int HS) {
    CHECK_OK(B->ops->attention_train(B, F(out, T * NH * HS), F(lse, T * NH), F(q, T * NH * HS), F(k, T * NKV * HS),
                                     F(v, T * NKV * HS), I32(start, T), prefix, T, NH, NKV, HS));
}
static void k_attention_train_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                       const float *lse, const float *q, const float *k, const float *v,
                                       const int32_t *start, int prefix, int T, int NH, int NKV, int HS) {
    size_t nq = (size_t)T * NH * HS, nk = (size_t)T * NKV * HS;
    CHECK_OK(B->ops->attention_train_backward(B, F(dq, nq), F(dk, nk), F(dv, nk), F(dout, nq), F(out, nq),
                                              F(lse, T * NH), F(q, nq), F(k, nk), F(v, nk), I32(start, T), prefix, T,
                                              NH, NKV, HS));
}
static void k_swiglu_backward(float *dg, float *du, const float *dout, const float *g, const float *u, int N, int C) {
    CHECK_OK(B->ops->swiglu_backward(B, F(dg, N * C), F(du, N * C), F(dout, N * C), F(g, N * C), F(u, N * C), N, C));
}
static void k_rows_backward(bool emb, float *d, int64_t drows, const int32_t *ids, const float *dout, int N, int C) {
    if (emb) CHECK_OK(B->ops->embedding_backward(B, F(d, drows * C), I32(ids, N), F(dout, N * C), N, C));
    else CHECK_OK(B->ops->scatter_add_rows(B, F(d, drows * C), I32(ids, N), F(dout, N * C), N, C));
}
static void k_cross_entropy(float *loss, float *dl, const float *x, const int32_t *t, int M, int V, float sc) {
    CHECK_OK(B->ops->cross_entropy(B, F(loss, M), F(dl, M * V), F(x, M * V), I32(t, M), M, V, sc));
}
static void k_dropout(float *out, const float *inp, int64_t n, float p, uint64_t key) {
    CHECK_OK(B->ops->dropout(B, F(out, n), F(inp, n), p, key));
}

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static double drand_(void) { /* uniform in [-1, 1), exactly representable as a float */
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (double)(float)((double)(g_rng >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}
static double *drnd(size_t n) {
    double *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = drand_();
    return p;
}
static float *tof(const double *x, size_t n) {
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = (float)x[i];
    return p;
}

/* Central differences of loss() over every element of x (restored afterwards), compared with
 * `analytic` by the norm of the difference over the norm of the numeric gradient. */
static void check_grad(const char *what, double (*loss)(void), double *x, size_t n, const float *analytic) {
    double num2 = 0, diff2 = 0;
    for (size_t i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + FD_H;
        double lp = loss();
        x[i] = x0 - FD_H;
        double lm = loss();
        x[i] = x0;
        double g = (lp - lm) / (2 * FD_H);
        num2 += g * g;
        diff2 += (g - analytic[i]) * (g - analytic[i]);
    }
    double rel = sqrt(diff2) / (sqrt(num2) > 0 ? sqrt(num2) : 1);
    check_report(rel <= TOL && num2 > 0, __FILE__, __LINE__, "%s: |analytic - numeric| / |numeric| = %.3g > %g", what,
                 rel, TOL);
    printf("  %-28s rel err %.2e (%zu elements)\n", what, rel, n);
}

/* analytic = after - before (the op accumulated into a buffer holding `before`). */
static float *delta(const float *after, const float *before, size_t n) {
    float *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = after[i] - before[i];
    return d;
}

/* ---- matmul ----------------------------------------------------------------------------- */

enum { MN = 5, MC = 11, MOC = 9 };
static double *m_x, *m_w, *m_b, *m_r;

static double loss_matmul(void) {
    double L = 0;
    for (int n = 0; n < MN; n++)
        for (int o = 0; o < MOC; o++) {
            double s = m_b[o];
            for (int c = 0; c < MC; c++) s += m_x[n * MC + c] * m_w[o * MC + c];
            L += m_r[n * MOC + o] * s;
        }
    return L;
}

static void test_matmul_backward(void) {
    m_x = drnd(MN * MC), m_w = drnd(MOC * MC), m_b = drnd(MOC), m_r = drnd(MN * MOC);
    float *x = tof(m_x, MN * MC), *w = tof(m_w, MOC * MC), *r = tof(m_r, MN * MOC);
    double *p0 = drnd(MN * MC + MOC * MC + MOC);
    float *dx0 = tof(p0, MN * MC), *dw0 = tof(p0 + MN * MC, MOC * MC), *db0 = tof(p0 + MN * MC + MOC * MC, MOC);
    float *dx = tof(p0, MN * MC), *dw = tof(p0 + MN * MC, MOC * MC), *db = tof(p0 + MN * MC + MOC * MC, MOC);
    k_linear_backward(dx, dw, db, r, x, w, MN, MC, MOC);
    float *gx = delta(dx, dx0, MN * MC), *gw = delta(dw, dw0, MOC * MC), *gb = delta(db, db0, MOC);
    check_grad("matmul dinp", loss_matmul, m_x, MN * MC, gx);
    check_grad("matmul dw", loss_matmul, m_w, MOC * MC, gw);
    check_grad("matmul dbias", loss_matmul, m_b, MOC, gb);
    /* NULL outputs are skipped; the others get the same numbers */
    float *dw2 = tof(p0 + MN * MC, MOC * MC);
    k_linear_backward(NULL, dw2, NULL, r, x, NULL, MN, MC, MOC);
    CHECK(memcmp(dw2, dw, sizeof(float) * MOC * MC) == 0);
    float *dx2 = tof(p0, MN * MC);
    k_linear_backward(dx2, NULL, NULL, r, x, w, MN, MC, MOC);
    CHECK(memcmp(dx2, dx, sizeof(float) * MN * MC) == 0);
    free(m_x), free(m_w), free(m_b), free(m_r), free(x), free(w), free(r), free(p0);
    free(dx0), free(dw0), free(db0), free(dx), free(dw), free(db), free(gx), free(gw), free(gb), free(dw2), free(dx2);
}

/* ---- rmsnorm ---------------------------------------------------------------------------- */

enum { RN = 4, RC = 13 };
static const float REPS = 1e-5f;
static double *r_x, *r_w, *r_r;

static double loss_rmsnorm(void) {
    double L = 0;
    for (int n = 0; n < RN; n++) {
        double ss = 0;
        for (int c = 0; c < RC; c++) ss += r_x[n * RC + c] * r_x[n * RC + c];
        double inv = 1.0 / sqrt(ss / RC + REPS);
        for (int c = 0; c < RC; c++) L += r_r[n * RC + c] * r_w[c] * r_x[n * RC + c] * inv;
    }
    return L;
}

static void test_rmsnorm_backward(void) {
    r_x = drnd(RN * RC), r_w = drnd(RC), r_r = drnd(RN * RC);
    float *x = tof(r_x, RN * RC), *w = tof(r_w, RC), *r = tof(r_r, RN * RC);
    double *p0 = drnd(RN * RC + RC);
    float *dx0 = tof(p0, RN * RC), *dw0 = tof(p0 + RN * RC, RC), *dx = tof(p0, RN * RC), *dw = tof(p0 + RN * RC, RC);
    k_rmsnorm_backward(dx, dw, r, x, w, RN, RC, REPS);
    float *gx = delta(dx, dx0, RN * RC), *gw = delta(dw, dw0, RC);
    check_grad("rmsnorm dinp", loss_rmsnorm, r_x, RN * RC, gx);
    check_grad("rmsnorm dweight", loss_rmsnorm, r_w, RC, gw);
    float *dx2 = tof(p0, RN * RC);
    k_rmsnorm_backward(dx2, NULL, r, x, w, RN, RC, REPS);
    CHECK(memcmp(dx2, dx, sizeof(float) * RN * RC) == 0);
    free(r_x), free(r_w), free(r_r), free(x), free(w), free(r), free(p0), free(dx0), free(dw0), free(dx), free(dw);
    free(gx), free(gw), free(dx2);
}

/* ---- rope ------------------------------------------------------------------------------- */

enum { PN = 3, PH = 2, PHS = 8 };
static const int32_t p_pos[PN] = {0, 5, 17};
static float p_inv[PHS / 2];
static double *p_x, *p_r;

static double loss_rope(void) {
    double L = 0;
    for (int n = 0; n < PN; n++)
        for (int h = 0; h < PH; h++)
            for (int i = 0; i < PHS / 2; i++) {
                double ang = (double)((float)p_pos[n] * p_inv[i]);
                const double *v = p_x + (n * PH + h) * PHS;
                const double *r = p_r + (n * PH + h) * PHS;
                L += r[i] * (v[i] * cos(ang) - v[i + PHS / 2] * sin(ang));
                L += r[i + PHS / 2] * (v[i + PHS / 2] * cos(ang) + v[i] * sin(ang));
            }
    return L;
}

static void test_rope_backward(void) {
    for (int i = 0; i < PHS / 2; i++) p_inv[i] = (float)(1.0 / pow(10000.0, 2.0 * i / PHS));
    p_x = drnd(PN * PH * PHS), p_r = drnd(PN * PH * PHS);
    float *g = tof(p_r, PN * PH * PHS);
    k_rope(g, p_pos, p_inv, PN, PH, PHS, -1);
    check_grad("rope", loss_rope, p_x, PN * PH * PHS, g);
    /* rope then rope_backward is the identity (the rotation is orthogonal) */
    float *x = tof(p_x, PN * PH * PHS);
    k_rope(x, p_pos, p_inv, PN, PH, PHS, +1);
    k_rope(x, p_pos, p_inv, PN, PH, PHS, -1);
    double e = 0;
    for (int i = 0; i < PN * PH * PHS; i++) e = fmax(e, fabs(x[i] - p_x[i]));
    CHECK(e < 1e-6);
    free(p_x), free(p_r), free(g), free(x);
}

/* ---- training attention ----------------------------------------------------------------- */

enum { AT = 9, ANH = 4, ANKV = 2, AHS = 6 };
static const int32_t a_start[AT] = {0, 0, 0, 0, 4, 4, 4, 4, 4}; /* two packed examples */
/* a prefix of 3 tokens and two continuations of 3: [P P P | A A A | B B B] */
static const int32_t a_pstart[AT] = {0, 0, 0, 3, 3, 3, 6, 6, 6};
enum { A_PREFIX = 3 };
static const int32_t *a_st = a_start; /* the layout attn_d computes */
static int a_prefix;
static double *a_q, *a_k, *a_v, *a_r;

/* The mask, written out: row t sees key j <= t of its own example or of the shared prefix. */
static bool a_sees(int t, int j) { return j <= t && (j >= a_st[t] || j < a_prefix); }

static void attn_d(double *out) {
    const double scale = 1.0 / sqrt((double)AHS);
    for (int t = 0; t < AT; t++)
        for (int h = 0; h < ANH; h++) {
            int kvh = h / (ANH / ANKV);
            double s[AT], m = -INFINITY, sum = 0;
            for (int j = 0; j < AT; j++) {
                if (!a_sees(t, j)) continue;
                double d = 0;
                for (int c = 0; c < AHS; c++) d += a_q[(t * ANH + h) * AHS + c] * a_k[(j * ANKV + kvh) * AHS + c];
                s[j] = d * scale;
                m = fmax(m, s[j]);
            }
            for (int j = 0; j < AT; j++)
                if (a_sees(t, j)) sum += exp(s[j] - m);
            for (int c = 0; c < AHS; c++) {
                double o = 0;
                for (int j = 0; j < AT; j++)
                    if (a_sees(t, j)) o += exp(s[j] - m) / sum * a_v[(j * ANKV + kvh) * AHS + c];
                out[(t * ANH + h) * AHS + c] = o;
            }
        }
}

static double loss_attn(void) {
    double out[AT * ANH * AHS], L = 0;
    attn_d(out);
    for (int i = 0; i < AT * ANH * AHS; i++) L += a_r[i] * out[i];
    return L;
}

static void test_attention_train(void) {
    size_t nq = AT * ANH * AHS, nk = AT * ANKV * AHS;
    a_q = drnd(nq), a_k = drnd(nk), a_v = drnd(nk), a_r = drnd(nq);
    float *q = tof(a_q, nq), *k = tof(a_k, nk), *v = tof(a_v, nk), *r = tof(a_r, nq);
    float *out = malloc(sizeof(float) * nq), lse[AT * ANH];
    k_attention_train(out, lse, q, k, v, a_start, 0, AT, ANH, ANKV, AHS);
    double ref[AT * ANH * AHS], e = 0;
    attn_d(ref);
    for (size_t i = 0; i < nq; i++) e = fmax(e, fabs(out[i] - ref[i]));
    CHECK(e < 1e-6);
    /* the first example's rows equal the inference kernel's over a (shuffled) paged cache */
    enum { BS = 2 };
    int32_t table[2] = {1, 0};
    float kc[4 * ANKV * AHS], vc[4 * ANKV * AHS], o2[4 * ANH * AHS];
    for (int p = 0; p < 4; p++) {
        int slot = table[p / BS] * BS + p % BS;
        memcpy(kc + slot * ANKV * AHS, k + p * ANKV * AHS, sizeof(float) * ANKV * AHS);
        memcpy(vc + slot * ANKV * AHS, v + p * ANKV * AHS, sizeof(float) * ANKV * AHS);
    }
    dspy_attn_seg seg = {0, 4, 0, 0};
    dspy_attn_meta am = {I32(&seg, 4), I32(table, 2), 1, 4, BS, 4, false, dspy_tensor_none()};
    CHECK_OK(B->ops->attention(B, F(o2, 4 * ANH * AHS), F(q, 4 * ANH * AHS), F(kc, 4 * ANKV * AHS),
                               F(vc, 4 * ANKV * AHS), &am, ANH, ANKV, AHS));
    CHECK(memcmp(o2, out, sizeof o2) == 0);
    /* backward */
    float *dq = malloc(sizeof(float) * nq), *dk = malloc(sizeof(float) * nk), *dv = malloc(sizeof(float) * nk);
    k_attention_train_backward(dq, dk, dv, r, out, lse, q, k, v, a_start, 0, AT, ANH, ANKV, AHS);
    check_grad("attention dq", loss_attn, a_q, nq, dq);
    check_grad("attention dk (GQA)", loss_attn, a_k, nk, dk);
    check_grad("attention dv (GQA)", loss_attn, a_v, nk, dv);
    /* block-diagonal: the first example's gradients ignore the second's upstream gradient */
    for (size_t i = 4 * ANH * AHS; i < nq; i++) r[i] = 0;
    float *dq2 = malloc(sizeof(float) * nq), *dk2 = malloc(sizeof(float) * nk), *dv2 = malloc(sizeof(float) * nk);
    k_attention_train_backward(dq2, dk2, dv2, r, out, lse, q, k, v, a_start, 0, AT, ANH, ANKV, AHS);
    CHECK(memcmp(dq2, dq, sizeof(float) * 4 * ANH * AHS) == 0);
    CHECK(memcmp(dk2, dk, sizeof(float) * 4 * ANKV * AHS) == 0);
    int zero = 1;
    for (size_t i = 4 * ANKV * AHS; i < nk; i++) zero &= dk2[i] == 0 && dv2[i] == 0;
    CHECK(zero);
    free(a_q), free(a_k), free(a_v), free(a_r), free(q), free(k), free(v), free(r), free(out);
    free(dq), free(dk), free(dv), free(dq2), free(dk2), free(dv2);
}

/* A shared prefix (prefix-shared training steps): [P P P | A A A | B B B] with prefix 3 against
 * the mask written out (forward within 1e-6, gradients against finite differences), and against
 * the unshared layout it replaces, [P P P A A A] and [P P P B B B] run alone (the prefix rows'
 * upstream gradient given to the first only): the same outputs (bit for bit: the same keys in
 * the same order), the same dq, and the prefix's dk, dv the sum of the two runs' (to F32
 * rounding, 1e-6). Bad prefixes are refused. */
static void test_attention_train_prefix(void) {
    enum { UT = 6 };
    size_t nq = AT * ANH * AHS, nk = AT * ANKV * AHS, rq = ANH * AHS, rk = ANKV * AHS;
    a_st = a_pstart, a_prefix = A_PREFIX;
    a_q = drnd(nq), a_k = drnd(nk), a_v = drnd(nk), a_r = drnd(nq);
    float *q = tof(a_q, nq), *k = tof(a_k, nk), *v = tof(a_v, nk), *r = tof(a_r, nq);
    float *out = malloc(sizeof(float) * nq), lse[AT * ANH];
    k_attention_train(out, lse, q, k, v, a_pstart, A_PREFIX, AT, ANH, ANKV, AHS);
    double ref[AT * ANH * AHS], e = 0;
    attn_d(ref);
    for (size_t i = 0; i < nq; i++) e = fmax(e, fabs(out[i] - ref[i]));
    check_report(e < 1e-6, __FILE__, __LINE__, "prefix attention: max |out - naive| = %.3g > 1e-6", e);
    float *dq = malloc(sizeof(float) * nq), *dk = malloc(sizeof(float) * nk), *dv = malloc(sizeof(float) * nk);
    k_attention_train_backward(dq, dk, dv, r, out, lse, q, k, v, a_pstart, A_PREFIX, AT, ANH, ANKV, AHS);
    check_grad("prefix attention dq", loss_attn, a_q, nq, dq);
    check_grad("prefix attention dk", loss_attn, a_k, nk, dk);
    check_grad("prefix attention dv", loss_attn, a_v, nk, dv);
    /* the unshared layout: continuation c (0 or 1) after its own copy of the prefix */
    int32_t ustart[UT] = {0};
    float dk_pre[A_PREFIX * ANKV * AHS] = {0}, dv_pre[A_PREFIX * ANKV * AHS] = {0};
    int same_out = 1;
    double e_grad = 0;
    for (int c = 0; c < 2; c++) {
        float uq[UT * ANH * AHS], uk[UT * ANKV * AHS], uv[UT * ANKV * AHS], ur[UT * ANH * AHS];
        float uo[UT * ANH * AHS], ul[UT * ANH], udq[UT * ANH * AHS], udk[UT * ANKV * AHS], udv[UT * ANKV * AHS];
        for (int t = 0; t < UT; t++) {
            int src = t < A_PREFIX ? t : t + 3 * c; /* the shared row this unshared row copies */
            memcpy(uq + t * rq, q + src * rq, sizeof(float) * rq);
            /* the prefix rows' own upstream gradient goes with the first copy only */
            if (t < A_PREFIX && c == 1) memset(ur + t * rq, 0, sizeof(float) * rq);
            else memcpy(ur + t * rq, r + src * rq, sizeof(float) * rq);
            memcpy(uk + t * rk, k + src * rk, sizeof(float) * rk);
            memcpy(uv + t * rk, v + src * rk, sizeof(float) * rk);
        }
        k_attention_train(uo, ul, uq, uk, uv, ustart, 0, UT, ANH, ANKV, AHS);
        same_out &= memcmp(uo + A_PREFIX * rq, out + (A_PREFIX + 3 * c) * rq, sizeof(float) * 3 * rq) == 0;
        same_out &= memcmp(uo, out, sizeof(float) * A_PREFIX * rq) == 0;
        k_attention_train_backward(udq, udk, udv, ur, uo, ul, uq, uk, uv, ustart, 0, UT, ANH, ANKV, AHS);
        for (size_t i = 0; i < A_PREFIX * rk; i++) dk_pre[i] += udk[i], dv_pre[i] += udv[i];
        for (size_t i = 0; i < 3 * rq; i++) /* a continuation's dq is its own; the prefix's, the first copy's */
            e_grad = fmax(e_grad, fabs(udq[A_PREFIX * rq + i] - dq[(A_PREFIX + 3 * c) * rq + i]));
        for (size_t i = 0; c == 0 && i < A_PREFIX * rq; i++) e_grad = fmax(e_grad, fabs(udq[i] - dq[i]));
        for (size_t i = 0; i < 3 * rk; i++)
            e_grad = fmax(e_grad, fabs(udk[A_PREFIX * rk + i] - dk[(A_PREFIX + 3 * c) * rk + i]) +
                                      fabs(udv[A_PREFIX * rk + i] - dv[(A_PREFIX + 3 * c) * rk + i]));
    }
    for (size_t i = 0; i < A_PREFIX * rk; i++) e_grad = fmax(e_grad, fabs(dk_pre[i] - dk[i]) + fabs(dv_pre[i] - dv[i]));
    check_report(same_out, __FILE__, __LINE__, "prefix attention: outputs differ from the unshared layout's");
    check_report(e_grad < 1e-6, __FILE__, __LINE__, "prefix attention: gradients differ from the unshared sum by %.3g",
                 e_grad);
    for (int bad = 0; bad < 2; bad++) {
        int pr = bad ? AT + 1 : -1;
        CHECK_STATUS(B->ops->attention_train(B, F(out, nq), F(lse, AT * ANH), F(q, nq), F(k, nk), F(v, nk),
                                             I32(a_pstart, AT), pr, AT, ANH, ANKV, AHS),
                     DSPY_ERR_ARG);
        CHECK_STATUS(B->ops->attention_train_backward(B, F(dq, nq), F(dk, nk), F(dv, nk), F(r, nq), F(out, nq),
                                                      F(lse, AT * ANH), F(q, nq), F(k, nk), F(v, nk),
                                                      I32(a_pstart, AT), pr, AT, ANH, ANKV, AHS),
                     DSPY_ERR_ARG);
    }
    a_st = a_start, a_prefix = 0;
    free(a_q), free(a_k), free(a_v), free(a_r), free(q), free(k), free(v), free(r), free(out);
    free(dq), free(dk), free(dv);
}

/* ---- swiglu ----------------------------------------------------------------------------- */

enum { SN = 3, SC = 7 };
static double *s_g, *s_u, *s_r;

static double loss_swiglu(void) {
    double L = 0;
    for (int i = 0; i < SN * SC; i++) L += s_r[i] * s_g[i] / (1 + exp(-s_g[i])) * s_u[i];
    return L;
}

static void test_swiglu_backward(void) {
    s_g = drnd(SN * SC), s_u = drnd(SN * SC), s_r = drnd(SN * SC);
    for (int i = 0; i < SN * SC; i++) s_g[i] *= 4; /* cover the sigmoid's tails */
    float *g = tof(s_g, SN * SC), *u = tof(s_u, SN * SC), *r = tof(s_r, SN * SC);
    float dg[SN * SC], du[SN * SC];
    k_swiglu_backward(dg, du, r, g, u, SN, SC);
    check_grad("swiglu dgate", loss_swiglu, s_g, SN * SC, dg);
    check_grad("swiglu dup", loss_swiglu, s_u, SN * SC, du);
    k_swiglu_backward(r, du, r, g, u, SN, SC); /* dgate may equal dout */
    CHECK(memcmp(r, dg, sizeof dg) == 0);
    free(s_g), free(s_u), free(s_r), free(g), free(u), free(r);
}

/* ---- embedding and row scatter ---------------------------------------------------------- */

enum { EV = 6, EN = 8, EC = 5 };
static const int32_t e_ids[EN] = {3, 1, 3, 0, 5, 3, 1, 2};
static double *e_tab, *e_r;

static double loss_embedding(void) {
    double L = 0;
    for (int n = 0; n < EN; n++)
        for (int c = 0; c < EC; c++) L += e_r[n * EC + c] * e_tab[e_ids[n] * EC + c];
    return L;
}

static void test_embedding_backward(void) {
    e_tab = drnd(EV * EC), e_r = drnd(EN * EC);
    float *r = tof(e_r, EN * EC);
    double *p0 = drnd(EV * EC);
    float *d0 = tof(p0, EV * EC), *d = tof(p0, EV * EC);
    k_rows_backward(true, d, EV, e_ids, r, EN, EC);
    float *g = delta(d, d0, EV * EC);
    check_grad("embedding (repeated ids)", loss_embedding, e_tab, EV * EC, g);
    float *d2 = tof(p0, EV * EC);
    k_rows_backward(false, d2, EV, e_ids, r, EN, EC);
    CHECK(memcmp(d2, d, sizeof(float) * EV * EC) == 0);
    free(e_tab), free(e_r), free(r), free(p0), free(d0), free(d), free(g), free(d2);
}

/* ---- cross-entropy ---------------------------------------------------------------------- */

enum { CM = 4, CV = 11 };
static const int32_t c_t[CM] = {3, 0, 10, 3};
static const float CSCALE = 0.37f;
static double *c_x;

static double ce_row(const double *x, int t) {
    double m = -INFINITY, s = 0;
    for (int i = 0; i < CV; i++) m = fmax(m, x[i]);
    for (int i = 0; i < CV; i++) s += exp(x[i] - m);
    return m + log(s) - x[t];
}

static double loss_ce(void) {
    double L = 0;
    for (int m = 0; m < CM; m++) L += ce_row(c_x + m * CV, c_t[m]);
    return L * CSCALE;
}

static void test_cross_entropy(void) {
    c_x = drnd(CM * CV);
    for (int i = 0; i < CM * CV; i++) c_x[i] *= 5;
    float *x = tof(c_x, CM * CV), loss[CM], d[CM * CV];
    k_cross_entropy(loss, d, x, c_t, CM, CV, CSCALE);
    double e = 0;
    for (int m = 0; m < CM; m++) e = fmax(e, fabs(loss[m] - ce_row(c_x + m * CV, c_t[m])));
    CHECK(e < 1e-6);
    check_grad("cross-entropy dlogits", loss_ce, c_x, CM * CV, d);
    float loss2[CM];
    k_cross_entropy(loss2, x, x, c_t, CM, CV, CSCALE); /* in place */
    CHECK(memcmp(x, d, sizeof d) == 0);
    CHECK(memcmp(loss2, loss, sizeof loss) == 0);
    float *x3 = tof(c_x, CM * CV), loss3[CM];
    k_cross_entropy(loss3, NULL, x3, c_t, CM, CV, CSCALE); /* loss only */
    CHECK(memcmp(loss3, loss, sizeof loss) == 0);
    free(c_x), free(x), free(x3);
}

/* ---- dropout and scale ------------------------------------------------------------------ */

static void test_dropout(void) {
    enum { N = 20000 };
    float *x = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N), *z = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) x[i] = 1.0f + (float)(i % 7);
    const float p = 0.25f;
    k_dropout(y, x, N, p, 42);
    int kept = 0, bad = 0;
    for (int i = 0; i < N; i++) {
        if (y[i] != 0) {
            kept++;
            bad += y[i] != x[i] * (1.0f / (1.0f - p));
        }
        bad += (y[i] != 0) != dspy_dropout_keep(42, i, p);
    }
    CHECK_INT(bad, 0);
    CHECK(fabs(kept / (double)N - 0.75) < 0.015);
    memcpy(z, x, sizeof(float) * N);
    k_dropout(z, z, N, p, 42); /* in place, same key: the same mask (the backward call) */
    CHECK(memcmp(z, y, sizeof(float) * N) == 0);
    k_dropout(z, x, N, p, 43);
    CHECK(memcmp(z, y, sizeof(float) * N) != 0);
    k_dropout(z, x, N, 0.0f, 7); /* p = 0 keeps everything */
    CHECK(memcmp(z, x, sizeof(float) * N) == 0);
    CHECK_OK(B->ops->scale(B, F(z, N), 0.5f));
    CHECK(z[3] == x[3] * 0.5f && z[N - 1] == x[N - 1] * 0.5f);
    free(x), free(y), free(z);
}

/* ---- thread-count independence ---------------------------------------------------------- */

/* 1 and 4 threads give the same bits; run_prefix > 0: the first example (20 tokens) is a shared prefix. */
static void threads_case(int run_prefix) {
    enum { T = 64, NH = 4, NKV = 2, HS = 32, C = 64, OC = 128, V = 50 };
    int32_t start[T], ids[T];
    for (int t = 0; t < T; t++) start[t] = t < 20 ? 0 : t < 45 ? 20 : 45, ids[t] = (t * 7) % V;
    size_t nq = (size_t)T * NH * HS, nk = (size_t)T * NKV * HS;
    double *dq_ = drnd(nq), *dk_ = drnd(nk), *dv_ = drnd(nk), *dr = drnd(nq), *dx_ = drnd((size_t)T * C);
    double *dw_ = drnd((size_t)OC * C), *dg = drnd((size_t)T * OC);
    float *q = tof(dq_, nq), *k = tof(dk_, nk), *v = tof(dv_, nk), *r = tof(dr, nq);
    float *x = tof(dx_, (size_t)T * C), *w = tof(dw_, (size_t)OC * C), *g = tof(dg, (size_t)T * OC);
    float *res[2][6];
    int nthreads[2] = {1, 4};
    dspy_backend *keep = B;
    for (int run = 0; run < 2; run++) {
        dspy_backend_plan plan = {T, T, 1, V, NH, HS, nthreads[run], 0};
        CHECK_OK(dspy_backend_new((dspy_device){DSPY_DEVICE_CPU, 0}, &plan, &B));
        float **o = res[run];
        o[0] = malloc(sizeof(float) * nq);
        float *lse = malloc(sizeof(float) * T * NH);
        k_attention_train(o[0], lse, q, k, v, start, run_prefix, T, NH, NKV, HS);
        o[1] = malloc(sizeof(float) * nq), o[2] = malloc(sizeof(float) * nk), o[3] = malloc(sizeof(float) * nk);
        k_attention_train_backward(o[1], o[2], o[3], r, o[0], lse, q, k, v, start, run_prefix, T, NH, NKV, HS);
        o[4] = calloc((size_t)T * C + (size_t)OC * C, sizeof(float));
        k_linear_backward(o[4], o[4] + (size_t)T * C, NULL, g, x, w, T, C, OC);
        o[5] = calloc((size_t)V * C + C + (size_t)T * C, sizeof(float));
        k_rows_backward(true, o[5], V, ids, x, T, C);
        k_rmsnorm_backward(o[5] + (size_t)V * C + C, o[5] + (size_t)V * C, x, x, w, T, C, 1e-5f);
        free(lse);
        dspy_backend_free(B);
    }
    B = keep;
    size_t sizes[6] = {nq, nq, nk, nk, (size_t)T * C + (size_t)OC * C, (size_t)V * C + C + (size_t)T * C};
    for (int i = 0; i < 6; i++) {
        check_report(memcmp(res[0][i], res[1][i], sizeof(float) * sizes[i]) == 0, __FILE__, __LINE__,
                     "output %d differs between 1 and 4 threads", i);
        free(res[0][i]), free(res[1][i]);
    }
    free(dq_), free(dk_), free(dv_), free(dr), free(dx_), free(dw_), free(dg);
    free(q), free(k), free(v), free(r), free(x), free(w), free(g);
}

static void test_threads(void) {
    threads_case(0);
    threads_case(20);
}

int main(void) {
    dspy_backend_plan plan = {64, 64, 1, 64, 8, 32, 0, 0};
    CHECK_OK(dspy_backend_new((dspy_device){DSPY_DEVICE_CPU, 0}, &plan, &B));
    if (!B) return check_summary("test_kern_backward");
    RUN(test_matmul_backward);
    RUN(test_rmsnorm_backward);
    RUN(test_rope_backward);
    RUN(test_attention_train);
    RUN(test_attention_train_prefix);
    RUN(test_swiglu_backward);
    RUN(test_embedding_backward);
    RUN(test_cross_entropy);
    RUN(test_dropout);
    RUN(test_threads);
    dspy_backend_free(B);
    return check_summary("test_kern_backward");
}
