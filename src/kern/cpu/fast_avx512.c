/* fast_avx512.c — the AVX-512 product tiles (BF16 and F32) and axpy (Zen 4/5, Sapphire Rapids
 * and later: AVX-512 F/BW/VL with BF16).
 *
 * VDPBF16PS adds two exact bf16 x bf16 products into each of 16 F32 lanes, so one instruction
 * does 32 multiply-adds and the stored BF16 weights are read without widening. Each (row,
 * weight row) pair owns one accumulator: lane l sums k = 32 i + 2 l and 32 i + 2 l + 1 over the
 * blocks i in order, the last partial block is read with a mask (the missing pairs are +0), and
 * the 16 lanes are then added by _mm512_reduce_add_ps. That order depends on K alone, so a row
 * gives the same bits in a tile of 1 row or 4 (kern/cpu/fast.h). Compiled with a target
 * attribute: the rest of the library stays baseline x86-64, and this code only runs when
 * fast_simd.c found the instructions.
 */
#include "kern/cpu/fast.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

static inline T512 __attribute__((always_inline)) __m512bh load_bh(const uint16_t *p) {
    return (__m512bh)_mm512_loadu_si512((const void *)p);
}

static inline T512 __attribute__((always_inline)) __m512bh load_bh_mask(const uint16_t *p, __mmask32 m) {
    return (__m512bh)_mm512_maskz_loadu_epi16(m, (const void *)p);
}

/* NR rows (a compile-time constant after inlining) against 4 weight rows. */
static inline T512 __attribute__((always_inline)) void tile(const int NR, const uint16_t *x, size_t ldx,
                                                            const uint16_t *const w[4], int K, float out[4][4]) {
    __m512 acc[4][4];
    for (int r = 0; r < NR; r++)
        for (int j = 0; j < 4; j++) acc[r][j] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 32 <= K; k += 32) {
        __m512bh wv[4];
        for (int j = 0; j < 4; j++) wv[j] = load_bh(w[j] + k);
        for (int r = 0; r < NR; r++) {
            __m512bh xv = load_bh(x + (size_t)r * ldx + k);
            for (int j = 0; j < 4; j++) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], xv, wv[j]);
        }
    }
    if (k < K) {
        __mmask32 m = (__mmask32)((1ull << (K - k)) - 1);
        __m512bh wv[4];
        for (int j = 0; j < 4; j++) wv[j] = load_bh_mask(w[j] + k, m);
        for (int r = 0; r < NR; r++) {
            __m512bh xv = load_bh_mask(x + (size_t)r * ldx + k, m);
            for (int j = 0; j < 4; j++) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], xv, wv[j]);
        }
    }
    for (int r = 0; r < NR; r++)
        for (int j = 0; j < 4; j++) out[r][j] = _mm512_reduce_add_ps(acc[r][j]);
}

T512 void dspy_cpu_tile_avx512(const uint16_t *x, size_t ldx, int nr, const uint16_t *const w[4], int K,
                               float out[4][4]) {
    switch (nr) {
    case 1: tile(1, x, ldx, w, K, out); break;
    case 2: tile(2, x, ldx, w, K, out); break;
    case 3: tile(3, x, ldx, w, K, out); break;
    default: tile(4, x, ldx, w, K, out); break;
    }
}

/* F32 rows: 16 lanes of FMAs, lane l summing k = 16 i + l; a masked last block. */
static inline T512 __attribute__((always_inline)) void tile_f32(const int NR, const float *x, size_t ldx,
                                                                const float *const w[4], int K, float out[4][4]) {
    __m512 acc[4][4];
    for (int r = 0; r < NR; r++)
        for (int j = 0; j < 4; j++) acc[r][j] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 wv[4];
        for (int j = 0; j < 4; j++) wv[j] = _mm512_loadu_ps(w[j] + k);
        for (int r = 0; r < NR; r++) {
            __m512 xv = _mm512_loadu_ps(x + (size_t)r * ldx + k);
            for (int j = 0; j < 4; j++) acc[r][j] = _mm512_fmadd_ps(xv, wv[j], acc[r][j]);
        }
    }
    if (k < K) {
        __mmask16 m = (__mmask16)((1u << (K - k)) - 1);
        __m512 wv[4];
        for (int j = 0; j < 4; j++) wv[j] = _mm512_maskz_loadu_ps(m, w[j] + k);
        for (int r = 0; r < NR; r++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, x + (size_t)r * ldx + k);
            for (int j = 0; j < 4; j++) acc[r][j] = _mm512_fmadd_ps(xv, wv[j], acc[r][j]);
        }
    }
    for (int r = 0; r < NR; r++)
        for (int j = 0; j < 4; j++) out[r][j] = _mm512_reduce_add_ps(acc[r][j]);
}

T512 void dspy_cpu_tile_f32_avx512(const float *x, size_t ldx, int nr, const float *const w[4], int K,
                                   float out[4][4]) {
    switch (nr) {
    case 1: tile_f32(1, x, ldx, w, K, out); break;
    case 2: tile_f32(2, x, ldx, w, K, out); break;
    case 3: tile_f32(3, x, ldx, w, K, out); break;
    default: tile_f32(4, x, ldx, w, K, out); break;
    }
}

T512 void dspy_cpu_axpy_avx512(float *y, float a, const float *x, int n) {
    const __m512 av = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m, x + i),
                                                        _mm512_maskz_loadu_ps(m, y + i)));
    }
}
#endif
