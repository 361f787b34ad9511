/* bench_train_attn.c — the CUDA training attention's passes alone (issue 11 T1/T2): the flash
 * forward, and the backward's prep, dk/dv and dq passes timed apart, for each kernel variant of
 * train_attention_fa.cu (DSPY_CUDA_FA, two digits: forward, dk/dv; "-" the defaults), with
 * TFLOP/s and each variant's results against the first variant's.
 *
 * Shapes (the 1B Llama's attention: 32 query heads, 8 KV heads, head size 64, BF16 q, k, v):
 *   t1     one example of T = 2,048 tokens (a T1 sequence: each of a step's 4 sequences is one
 *          call of the ops, 16 layers x 4 sequences x (forward + backward) a step)
 *   packed 4 examples of 2,048 in one call (T = 8,192; the block-diagonal mask)
 *   odd    37 examples of lengths 1 .. 300 (a drawn stream) packed into one call
 *   t2     the tutorial's prefix-shared layout: a 1,300-token prompt + 8 continuations of 240 ..
 *          320 tokens seen after it (T ~ 3,540)
 *   pshort a 200-token prefix and 40 continuations of 1 .. 131 tokens (T ~ 2,900)
 * FLOPs count only the visible (row, key) pairs: forward 4 HS per pair (S, PV), dq 6 HS (S, dP,
 * dQ), dk/dv 8 HS (S, dP, dV, dK); "bwd" is the usual 2.5 x forward (10 HS per pair) over the whole
 * backward (prep + dk/dv + dq). Each time is the median of 7 rounds of REPS launches of one pass
 * between two waits (the launch gaps are ~us against passes of ~100 us). dk/dv alone
 * is (prep + dk/dv) - prep (DSPY_CUDA_FA_PARTS), as dk/dv reads what prep writes.
 *
 * The variant "cudnn" is cuDNN's fused attention (train_attention_cudnn.cu): the layout is given
 * (attention_train_layout) for a second copy of the start array that only that variant passes, so
 * the other variants run the own kernels; its prep, dk/dv and dq columns are not split (0). On
 * t2 (a shared prefix) it is the exact split into two cuDNN graphs (train_attention_split.cu);
 * "nosplit" passes start2 too with DSPY_CUDA_CUDNN_SPLIT=0 (the own kernels after a layout).
 *
 * --bf16 1: the BF16 trainer's dtypes (its defaults att16 and grad16): out, dout, dq, dk, dv BF16
 * (lse F32); without it (0) all five are F32.
 *
 * Usage: bench_train_attn [--variants -,cudnn,00,10,...] [--shapes t1,packed,odd,t2,pshort] [--reps 20]
 *                         [--bf16 0|1]
 * Prints one JSON object per (shape, variant) ({"bench": "train_attn", ...}), then a table.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/backend.h"
#include "dspy/clock.h"
#include "dspy/safetensors.h"
#include "kern/backend.h"

enum { NH = 32, NKV = 8, HS = 64, MAX_VARIANTS = 16, MAX_EX = 64, NSHAPES = 5 };

typedef struct {
    const char *name;
    int nex, lens[MAX_EX], prefix;
} shape;

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static uint64_t g_state = 12345;
static uint64_t next_u64(void) { /* splitmix64 */
    uint64_t z = (g_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float uniform(void) { return (float)((next_u64() >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f; }

static int fail(const char *what) {
    fprintf(stderr, "bench_train_attn: %s: %s\n", what, dspy_errmsg());
    return 1;
}

/* Buffers of one shape: q k v (BF16), out lse dout dq dk dv (F32; out, dout, dq, dk, dv BF16 in
 * their memory under --bf16), start. */
typedef struct {
    int T;
    void *q, *k, *v;
    float *out, *lse, *dout, *dq, *dk, *dv;
    int32_t *start, *start2; /* start2: the same, the array the cudnn variant passes */
    double pairs; /* visible (row, key) pairs of one head */
} bufs;

#define T_(p, n, dt) dspy_bt(be, (p), (int64_t)(n), (dt))
#define NQ ((size_t)b->T * NH * HS)
#define NK ((size_t)b->T * NKV * HS)

static int g_cudnn; /* the cudnn variant runs: pass start2 */
static int g_bf16;  /* --bf16: out, dout, dq, dk, dv BF16 */
#define GT (g_bf16 ? DSPY_DTYPE_BF16 : DSPY_DTYPE_F32)
#define START(b) (g_cudnn ? (b)->start2 : (b)->start)

static int run_fwd(dspy_backend *be, bufs *b, const shape *s) {
    return (int)be->ops->attention_train(be, T_(b->out, NQ, GT), T_(b->lse, (size_t)b->T * NH, DSPY_DTYPE_F32),
                                         T_(b->q, NQ, DSPY_DTYPE_BF16), T_(b->k, NK, DSPY_DTYPE_BF16),
                                         T_(b->v, NK, DSPY_DTYPE_BF16), T_(START(b), b->T, DSPY_DTYPE_I32), s->prefix,
                                         b->T, NH, NKV, HS);
}

static int run_bwd(dspy_backend *be, bufs *b, const shape *s) {
    return (int)be->ops->attention_train_backward(
        be, T_(b->dq, NQ, GT), T_(b->dk, NK, GT), T_(b->dv, NK, GT), T_(b->dout, NQ, GT), T_(b->out, NQ, GT),
        T_(b->lse, (size_t)b->T * NH, DSPY_DTYPE_F32),
        T_(b->q, NQ, DSPY_DTYPE_BF16), T_(b->k, NK, DSPY_DTYPE_BF16), T_(b->v, NK, DSPY_DTYPE_BF16),
        T_(START(b), b->T, DSPY_DTYPE_I32), s->prefix, b->T, NH, NKV, HS);
}

/* Median ms of one call of fwd (which 0) or bwd (1) under DSPY_CUDA_FA_PARTS=parts. */
static double time_ms(dspy_backend *be, bufs *b, const shape *s, int which, const char *parts, int reps) {
    enum { ROUNDS = 7 };
    double v[ROUNDS];
    const int n = ROUNDS;
    setenv("DSPY_CUDA_FA_PARTS", parts, 1);
    for (int r = 0; r <= n; r++) {
        if (be->ops->sync(be)) return -1;
        double t0 = dspy_now_s();
        for (int i = 0; i < reps; i++)
            if (which ? run_bwd(be, b, s) : run_fwd(be, b, s)) return -1;
        if (be->ops->sync(be)) return -1;
        if (r) v[r - 1] = 1e3 * (dspy_now_s() - t0) / reps; /* the first round warms up */
    }
    unsetenv("DSPY_CUDA_FA_PARTS");
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return v[n / 2];
}

/* n values at p to the host as F32 (b16: BF16 there, widened) */
static float *down(dspy_backend *be, const void *p, size_t n, bool b16) {
    float *h = malloc(sizeof(float) * n);
    uint16_t *h16 = b16 ? malloc(sizeof(uint16_t) * n) : NULL;
    void *dst = b16 ? (void *)h16 : (void *)h;
    if (!h || (b16 && !h16) ||
        be->ops->copy(be, dst, p, (b16 ? sizeof(uint16_t) : sizeof(float)) * n, DSPY_COPY_D2H) || be->ops->sync(be)) {
        free(h), free(h16);
        return NULL;
    }
    for (size_t i = 0; b16 && i < n; i++) h[i] = dspy_bf16_to_f32(h16[i]);
    free(h16);
    return h;
}

/* max |a - r| / max |r| */
static double rel_err(const float *a, const float *r, size_t n) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - r[i]);
        if (!(e <= d)) d = e; /* NaN wins */
        if (fabs(r[i]) > m) m = fabs(r[i]);
    }
    return m > 0 ? d / m : d;
}

static int setup(dspy_backend *be, bufs *b, const shape *s) {
    int T = 0;
    for (int e = 0; e < s->nex; e++) T += s->lens[e];
    b->T = T;
    const dspy_ops *o = be->ops;
    size_t nq = (size_t)T * NH * HS, nk = (size_t)T * NKV * HS;
    if (o->alloc(be, nq * 2, &b->q) || o->alloc(be, nk * 2, &b->k) || o->alloc(be, nk * 2, &b->v) ||
        o->alloc(be, nq * 4, (void **)&b->out) || o->alloc(be, (size_t)T * NH * 4, (void **)&b->lse) ||
        o->alloc(be, nq * 4, (void **)&b->dout) || o->alloc(be, nq * 4, (void **)&b->dq) ||
        o->alloc(be, nk * 4, (void **)&b->dk) || o->alloc(be, nk * 4, (void **)&b->dv) ||
        o->alloc(be, (size_t)T * 4, (void **)&b->start) || o->alloc(be, (size_t)T * 4, (void **)&b->start2))
        return -1;
    int32_t *st = malloc(sizeof(int32_t) * (size_t)T);
    uint16_t *h = malloc(sizeof(uint16_t) * nq);
    float *f = malloc(sizeof(float) * nq);
    if (!st || !h || !f) return free(st), free(h), free(f), -1;
    b->pairs = 0;
    for (int e = 0, t = 0; e < s->nex; e++)
        for (int i = 0; i < s->lens[e]; i++, t++) {
            st[t] = t - i;
            b->pairs += (double)(i + 1) + (st[t] < s->prefix ? 0 : s->prefix); /* own keys, then the prefix's */
        }
    int rc = (int)o->copy(be, b->start, st, sizeof(int32_t) * (size_t)T, DSPY_COPY_H2D);
    if (!rc) rc = (int)o->copy(be, b->start2, st, sizeof(int32_t) * (size_t)T, DSPY_COPY_H2D);
    int longest = 0;
    for (int e = 0; e < s->nex; e++) longest = s->lens[e] > longest ? s->lens[e] : longest;
    if (!rc && o->attention_train_layout) {
        rc = (int)o->attention_train_layout(be, T_(b->start2, T, DSPY_DTYPE_I32), T, s->nex, longest);
        if (rc) fprintf(stderr, "bench_train_attn: layout: %s\n", dspy_errmsg());
    }
    void *dst[3] = {b->q, b->k, b->v};
    size_t ns[3] = {nq, nk, nk};
    float amp[3] = {2.0f, 2.0f, 1.0f};
    for (int a = 0; a < 3 && !rc; a++) {
        for (size_t i = 0; i < ns[a]; i++) h[i] = dspy_f32_to_bf16(amp[a] * uniform());
        rc = (int)o->copy(be, dst[a], h, 2 * ns[a], DSPY_COPY_H2D) || (int)o->sync(be);
    }
    for (size_t i = 0; i < nq && !rc; i++) f[i] = uniform(), h[i] = dspy_f32_to_bf16(f[i]);
    if (!rc) rc = (int)o->copy(be, b->dout, g_bf16 ? (void *)h : (void *)f, (g_bf16 ? 2 : 4) * nq, DSPY_COPY_H2D) ||
                  (int)o->sync(be);
    free(st), free(h), free(f);
    return rc;
}

static void release(dspy_backend *be, bufs *b) {
    void *p[] = {b->q, b->k, b->v, b->out, b->lse, b->dout, b->dq, b->dk, b->dv, b->start, b->start2};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) be->ops->free(be, p[i]);
}

typedef struct {
    char shape[16], var[8];
    double err_out, err_lse, err_dq, err_dk, err_dv; /* each result's max rel diff vs the first variant */
    double fwd, prep, dkdv, dq, bwd, err;
    double tf_fwd, tf_dkdv, tf_dq, tf_bwd;
} row;

int main(int argc, char **argv) {
    const char *variants = "-,cudnn,00,10,20,01,02"; /* the defaults, cuDNN's, one pass changed at a time */
    const char *shapes = "t1,packed,odd,t2,pshort";
    int reps = 20;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--variants")) variants = argv[i + 1];
        else if (!strcmp(argv[i], "--shapes")) shapes = argv[i + 1];
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--bf16")) g_bf16 = atoi(argv[i + 1]) != 0;
        else
            return fprintf(stderr, "usage: bench_train_attn [--variants 00,10,-] [--shapes t1,packed,odd,t2,pshort] "
                                   "[--reps 20] [--bf16 0|1]\n"),
                   2;
    }
    if (reps < 1) reps = 1;
    shape all[NSHAPES] = {{"t1", 1, {2048}, 0},  {"packed", 4, {2048, 2048, 2048, 2048}, 0}, {"odd", 37, {0}, 0},
                          {"t2", 9, {1300}, 1300}, {"pshort", 41, {200}, 200}};
    for (int e = 1; e < 41; e++) all[4].lens[e] = 1 + ((e - 1) * 37 + 11) % 131;
    for (int e = 0; e < 37; e++) all[2].lens[e] = 1 + (int)(next_u64() % 300);
    for (int e = 1; e < 9; e++) all[3].lens[e] = 240 + (int)(next_u64() % 81);
    dspy_backend *be = NULL;
    dspy_backend_plan plan = {16384, 16384, 64, 0, NH, HS, 0, 0};
    if (dspy_backend_new((dspy_device){DSPY_DEVICE_CUDA, 0}, &plan, &be)) return fail("backend (no GPU?)");
    const dspy_ops *ops = be->ops;
    if (ops->attention_train_layout && ops->attention_train_layout(be, T_(NULL, 0, DSPY_DTYPE_I32), 16384, 0, 0))
        return fail("planning the fused attention");
    row rows[NSHAPES * MAX_VARIANTS];
    int nrows = 0, rc = 1;
    for (int si = 0; si < NSHAPES; si++) {
        const shape *s = &all[si];
        if (!strstr(shapes, s->name)) continue;
        bufs b = {0};
        if (setup(be, &b, s)) { fail(s->name); goto done; }
        float *ref[5] = {0};
        size_t rn[5] = {(size_t)b.T * NH * HS, (size_t)b.T * NH, (size_t)b.T * NH * HS, (size_t)b.T * NKV * HS,
                        (size_t)b.T * NKV * HS};
        char vl[256];
        snprintf(vl, sizeof vl, "%s", variants);
        for (char *v = strtok(vl, ","); v && nrows < NSHAPES * MAX_VARIANTS; v = strtok(NULL, ",")) {
            const bool nosplit = !strcmp(v, "nosplit");
            g_cudnn = !strcmp(v, "cudnn") || nosplit;
            if (strcmp(v, "-") && !g_cudnn) setenv("DSPY_CUDA_FA", v, 1);
            else unsetenv("DSPY_CUDA_FA");
            if (g_cudnn) { /* the split's switch is read with the layout */
                if (nosplit) setenv("DSPY_CUDA_CUDNN_SPLIT", "0", 1);
                else unsetenv("DSPY_CUDA_CUDNN_SPLIT");
                int longest = 0;
                for (int e = 0; e < s->nex; e++) longest = s->lens[e] > longest ? s->lens[e] : longest;
                if (ops->attention_train_layout &&
                    ops->attention_train_layout(be, T_(b.start2, b.T, DSPY_DTYPE_I32), b.T, s->nex, longest)) {
                    fail("layout");
                    goto done;
                }
            }
            row *r = &rows[nrows++];
            memset(r, 0, sizeof *r);
            snprintf(r->shape, sizeof r->shape, "%s", s->name);
            snprintf(r->var, sizeof r->var, "%s", v);
            /* results first (the full passes), against the first variant's */
            if (run_fwd(be, &b, s) || run_bwd(be, &b, s) || be->ops->sync(be)) {
                fail(v);
                if (!g_cudnn || be->ops->sync(be)) goto done;
                nrows--; /* cuDNN refused the shape (said above): the other variants go on */
                continue;
            }
            float *got[5] = {down(be, b.out, rn[0], g_bf16), down(be, b.lse, rn[1], false),
                             down(be, b.dq, rn[2], g_bf16), down(be, b.dk, rn[3], g_bf16),
                             down(be, b.dv, rn[4], g_bf16)};
            for (int i = 0; i < 5; i++) {
                if (!got[i]) { fail("copy back"); goto done; }
                if (!ref[i]) ref[i] = got[i], got[i] = NULL;
                else {
                    double e = rel_err(got[i], ref[i], rn[i]);
                    double *ei[5] = {&r->err_out, &r->err_lse, &r->err_dq, &r->err_dk, &r->err_dv};
                    *ei[i] = e;
                    if (!(e <= r->err)) r->err = e;
                    free(got[i]);
                }
            }
            r->fwd = time_ms(be, &b, s, 0, "7", reps);
            double pk = 0;
            if (!g_cudnn) { /* the own kernels' passes apart */
                r->prep = time_ms(be, &b, s, 1, "1", reps);
                pk = time_ms(be, &b, s, 1, "3", reps);
                r->dq = time_ms(be, &b, s, 1, "4", reps);
            }
            r->bwd = time_ms(be, &b, s, 1, "7", reps);
            if (r->fwd < 0 || r->prep < 0 || pk < 0 || r->dq < 0 || r->bwd < 0) { fail("timing"); goto done; }
            r->dkdv = pk - r->prep;
            double f = b.pairs * NH * HS; /* FLOP per HS-pair unit */
            r->tf_fwd = 4 * f / (r->fwd * 1e9), r->tf_dkdv = 8 * f / (r->dkdv * 1e9);
            r->tf_dq = 6 * f / (r->dq * 1e9), r->tf_bwd = 10 * f / (r->bwd * 1e9);
            printf("{\"bench\": \"train_attn\", \"shape\": \"%s\", \"T\": %d, \"variant\": \"%s\", \"bf16\": %d, "
                   "\"fwd_ms\": %.4f, \"prep_ms\": %.4f, \"dkdv_ms\": %.4f, \"dq_ms\": %.4f, \"bwd_ms\": %.4f, "
                   "\"fwd_tflops\": %.1f, \"dkdv_tflops\": %.1f, \"dq_tflops\": %.1f, \"bwd_tflops\": %.1f, "
                   "\"max_rel_diff_vs_first\": %.2e, "
                   "\"rel_diff\": {\"out\": %.2e, \"lse\": %.2e, \"dq\": %.2e, \"dk\": %.2e, \"dv\": %.2e}}\n",
                   s->name, b.T, v, g_bf16, r->fwd, r->prep, r->dkdv, r->dq, r->bwd, r->tf_fwd, r->tf_dkdv, r->tf_dq,
                   r->tf_bwd, r->err, r->err_out, r->err_lse, r->err_dq, r->err_dk, r->err_dv);
            fflush(stdout);
        }
        unsetenv("DSPY_CUDA_FA");
        for (int i = 0; i < 5; i++) free(ref[i]);
        release(be, &b);
    }
    printf("\n| shape | variant | fwd ms (TFLOP/s) | prep ms | dk/dv ms (TFLOP/s) | dq ms (TFLOP/s) | bwd ms (TFLOP/s, 2.5x fwd) | "
           "max rel diff vs first |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for (int i = 0; i < nrows; i++) {
        const row *r = &rows[i];
        printf("| %s | %s | %.3f (%.0f) | %.3f | %.3f (%.0f) | %.3f (%.0f) | %.3f (%.0f) | %.1e |\n", r->shape, r->var,
               r->fwd, r->tf_fwd, r->prep, r->dkdv, r->tf_dkdv, r->dq, r->tf_dq, r->bwd, r->tf_bwd, r->err);
    }
    rc = 0;
done:
    dspy_backend_free(be);
    return rc;
}
