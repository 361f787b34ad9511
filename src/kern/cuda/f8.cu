/* f8.cu — FP8 (E4M3) decode weights: kern/ops.h f8_link / f8_unlink and the table f8.cuh
 * describes.
 *
 * The rounding, one row at a time: k is the smallest integer with max |w| <= 448 * 2^k over the
 * row (448: E4M3's largest finite value), each w / 2^k is rounded to E4M3 (nearest even,
 * saturating), and the row is written back as code * 2^k in BF16. A power of two for the scale
 * makes that product exact in BF16 (E4M3 has 4 significant bits, BF16 8), so the BF16 matrix and
 * the codes describe the same weights: the GEMV that reads the codes and every other path
 * (cuBLASLt prefill, the 1..4-row GEMV, the embedding of a tied lm_head) compute one model. A
 * per-row scale costs at most one bit of range against the best real scale; E4M3's relative
 * precision (3 mantissa bits) does not depend on the scale.
 *
 * scale: 2^k per row, F32. gemv_mma.cu multiplies the codes' BF16 values (exact) by the
 * activations and sums in F32, then scales the sum by 2^k: a power of two commutes with every
 * rounding, so that is the sum of the BF16 path's products in another order. k is kept in
 * [-100, 7] (every weight and 2^k a normal number; a zero row takes -100); a row whose max |w| is
 * above 448 * 2^7 (57,344) or not finite is an error (no model has one).
 */
#include <cuda_fp8.h>
#include <pthread.h>

#include "kern/cuda/f8.cuh"

enum { F8_MAX_LINKS = 4096, F8_THREADS = 256, F8_K_MAX = 7 };

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static cu_f8 g_links[F8_MAX_LINKS];
static int g_n;

/* Grid (OC): block `row` rounds w's row in place, writes its codes to q and 2^k to scale;
 * *bad = row + 1 for a row it cannot represent (the largest such row wins; any is reported). */
static __global__ __launch_bounds__(F8_THREADS) void k_f8_round(bf16 *__restrict__ w, uint8_t *__restrict__ q,
                                                             float *__restrict__ scale, int C, int *bad) {
    __shared__ float red[F8_THREADS / 32];
    const int row = blockIdx.x, tid = threadIdx.x;
    bf16 *wr = w + (int64_t)row * C;
    uint8_t *qr = q + (int64_t)row * C;
    float amax = 0.0f;
    int finite = 1;
    for (int c = tid; c < C; c += F8_THREADS) {
        const float v = fabsf(bf2f(wr[c]));
        finite &= isfinite(v) ? 1 : 0;
        amax = fmaxf(amax, v);
    }
    finite = __syncthreads_and(finite);
    amax = f8_block_max<F8_THREADS>(amax, red);
    int k = f8_exponent(amax);
    if (!finite || k > F8_K_MAX) {
        if (tid == 0) atomicMax(bad, row + 1);
        k = F8_K_MAX;
    }
    const float down = ldexpf(1.0f, -k);
    for (int c = tid; c < C; c += F8_THREADS) {
        const __nv_fp8_storage_t b = __nv_cvt_float_to_fp8(bf2f(wr[c]) * down, __NV_SATFINITE, __NV_E4M3);
        qr[c] = (uint8_t)b;
        const float back = __half2float(__half(__nv_cvt_fp8_to_halfraw(b, __NV_E4M3)));
        wr[c] = f2bf(ldexpf(back, k));
    }
    if (tid == 0) scale[row] = ldexpf(1.0f, k);
}

bool dspy_cu_f8_find(const void *w, int OC, int C, cu_f8 *out) {
    bool found = false;
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < g_n && !found; i++)
        if (g_links[i].w == w && g_links[i].OC == OC && g_links[i].C == C) *out = g_links[i], found = true;
    pthread_mutex_unlock(&g_mu);
    return found;
}

dspy_status dspy_cu_f8_link(dspy_backend *be, dspy_tensor w, dspy_tensor q, dspy_tensor scale, int OC, int C,
                            bool act8) {
    CU_ENTER(be);
    if (OC <= 0 || C <= 0)
        return dspy_fail(DSPY_ERR_ARG, "cuda f8_link: the matrix must have rows and columns (got %d x %d)", OC, C);
    CU_NEED("f8_link", "w", w, DSPY_DTYPE_BF16, (int64_t)OC * C);
    CU_NEED("f8_link", "q", q, DSPY_DTYPE_U8, (int64_t)OC * C);
    CU_NEED("f8_link", "scale", scale, DSPY_DTYPE_F32, OC);
    if ((uintptr_t)q.data % 16 != 0)
        return dspy_fail(DSPY_ERR_ARG, "cuda f8_link: q must be 16-byte aligned (the GEMV loads 16 codes at a time)");
    cuda_state *s = cu_of(be);
    int *bad = NULL, hbad = 0;
    DSPY_TRY(dspy_cu_check(be, cudaMalloc((void **)&bad, sizeof(int)), "f8_link (flag)"));
    dspy_status st = dspy_cu_check(be, cudaMemsetAsync(bad, 0, sizeof(int), s->stream), "f8_link (flag)");
    if (!st)
        st = cu_launch(be, "f8_link (round to E4M3)", k_f8_round, dim3(OC), dim3(F8_THREADS), 0, (bf16 *)w.data,
                       (uint8_t *)q.data, (float *)scale.data, C, bad);
    if (!st) st = dspy_cu_check(be, cudaMemcpyAsync(&hbad, bad, sizeof(int), cudaMemcpyDeviceToHost, s->stream), "f8_link");
    if (!st) st = dspy_cu_check(be, cudaStreamSynchronize(s->stream), "f8_link");
    cudaFree(bad);
    if (st) return st;
    if (hbad)
        return dspy_fail(DSPY_ERR_ARG, "cuda f8_link: row %d of a %d x %d matrix has a value that is not finite or whose "
                                       "magnitude is above 448 * 2^%d: no FP8 copy (the row is left rounded at 2^%d)",
                         hbad - 1, OC, C, F8_K_MAX, F8_K_MAX);
    pthread_mutex_lock(&g_mu);
    int i = 0;
    while (i < g_n && g_links[i].w != w.data) i++;
    if (i == F8_MAX_LINKS) {
        pthread_mutex_unlock(&g_mu);
        return dspy_fail(DSPY_ERR_NOMEM, "cuda f8_link: %d matrices are linked already (the most a process may)",
                         F8_MAX_LINKS);
    }
    g_links[i] = (cu_f8){w.data, (const uint8_t *)q.data, (const float *)scale.data, OC, C, act8};
    if (i == g_n) g_n++;
    pthread_mutex_unlock(&g_mu);
    return DSPY_OK;
}

void dspy_cu_f8_unlink(dspy_backend *be, const void *w) {
    (void)be;
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < g_n; i++)
        if (g_links[i].w == w) {
            g_links[i] = g_links[--g_n];
            break;
        }
    pthread_mutex_unlock(&g_mu);
}
