/* fast_avx2.c — the AVX2 + FMA product tiles (BF16 and F32) and axpy (x86-64 machines without
 * AVX-512 BF16).
 *
 * BF16 is the top half of an F32, so widening is a zero-extension and a shift; the exact
 * products are then summed with 8-lane FMAs (exact product, one rounding per add: the same as
 * an add of the exact product). Lane l of a pair's accumulator sums k = 8 i + l over the blocks
 * in order, a last partial block is zero-padded, and the lanes are added in a fixed tree. Rows
 * go two at a time (8 accumulators + 4 weight vectors fit the 16 registers); that changes no
 * sum, so a row gives the same bits whatever the tile (kern/cpu/fast.h). Compiled with a target
 * attribute and reached only when fast_simd.c found AVX2 and FMA.
 */
#include "kern/cpu/fast.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define TAVX2 __attribute__((target("avx2,fma")))

static inline TAVX2 __attribute__((always_inline)) __m256 widen(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

static inline TAVX2 __attribute__((always_inline)) float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); /* l, l + 4 */
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));                                          /* + l + 2 */
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));                                      /* + l + 1 */
    return _mm_cvtss_f32(s);
}

static inline TAVX2 __attribute__((always_inline)) __m256 load_f32(const float *p) { return _mm256_loadu_ps(p); }

/* The tile for element type T whose 8 consecutive elements LOAD widens to F32 lanes (BF16:
 * widen, F32: load_f32). Defines ROWS(NR (1 or 2) rows from x against 4 weight rows, the K tail
 * zero-padded in xt/wt; lane l sums k = 8 i + l) and the exported TILE over nr <= 4 rows, two at
 * a time. One body for both element types, so their summation orders cannot drift apart. */
#define DEFINE_TILE(TILE, ROWS, T, LOAD)                                                                         \
    static inline TAVX2 __attribute__((always_inline)) void ROWS(const int NR, const T *x, size_t ldx,          \
                                                                 const T *const w[4], int K, int kt,            \
                                                                 const T xt[2][8], const T wt[4][8],            \
                                                                 float out[2][4]) {                             \
        __m256 acc[2][4];                                                                                       \
        for (int r = 0; r < NR; r++)                                                                            \
            for (int j = 0; j < 4; j++) acc[r][j] = _mm256_setzero_ps();                                        \
        for (int k = 0; k < kt; k += 8) {                                                                       \
            __m256 wv[4];                                                                                       \
            for (int j = 0; j < 4; j++) wv[j] = LOAD(w[j] + k);                                                 \
            for (int r = 0; r < NR; r++) {                                                                      \
                __m256 xv = LOAD(x + (size_t)r * ldx + k);                                                      \
                for (int j = 0; j < 4; j++) acc[r][j] = _mm256_fmadd_ps(xv, wv[j], acc[r][j]);                  \
            }                                                                                                   \
        }                                                                                                       \
        if (kt < K) {                                                                                           \
            __m256 wv[4];                                                                                       \
            for (int j = 0; j < 4; j++) wv[j] = LOAD(wt[j]);                                                    \
            for (int r = 0; r < NR; r++) {                                                                      \
                __m256 xv = LOAD(xt[r]);                                                                        \
                for (int j = 0; j < 4; j++) acc[r][j] = _mm256_fmadd_ps(xv, wv[j], acc[r][j]);                  \
            }                                                                                                   \
        }                                                                                                       \
        for (int r = 0; r < NR; r++)                                                                            \
            for (int j = 0; j < 4; j++) out[r][j] = hsum(acc[r][j]);                                            \
    }                                                                                                           \
    TAVX2 void TILE(const T *x, size_t ldx, int nr, const T *const w[4], int K, float out[4][4]) {              \
        const int kt = K & ~7; /* whole blocks of 8 */                                                          \
        T wt[4][8] = {{0}}, xt[4][8] = {{0}};                                                                   \
        for (int i = kt; i < K; i++) {                                                                          \
            for (int j = 0; j < 4; j++) wt[j][i - kt] = w[j][i];                                                \
            for (int r = 0; r < nr; r++) xt[r][i - kt] = x[(size_t)r * ldx + i];                                \
        }                                                                                                       \
        for (int r0 = 0; r0 < nr; r0 += 2) {                                                                    \
            float o[2][4];                                                                                      \
            const T *xr = x + (size_t)r0 * ldx;                                                                 \
            if (nr - r0 >= 2) ROWS(2, xr, ldx, w, K, kt, (const T(*)[8])xt[r0], (const T(*)[8])wt, o);          \
            else ROWS(1, xr, ldx, w, K, kt, (const T(*)[8])xt[r0], (const T(*)[8])wt, o);                       \
            for (int r = r0; r < nr && r < r0 + 2; r++)                                                         \
                for (int j = 0; j < 4; j++) out[r][j] = o[r - r0][j];                                           \
        }                                                                                                       \
    }

DEFINE_TILE(dspy_cpu_tile_avx2, rows_bf16, uint16_t, widen)
DEFINE_TILE(dspy_cpu_tile_f32_avx2, rows_f32, float, load_f32)

TAVX2 void dspy_cpu_axpy_avx2(float *y, float a, const float *x, int n) {
    const __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] = __builtin_fmaf(a, x[i], y[i]);
}
#endif
