/* fast_simd.c — picks the fast CPU kernels' SIMD level at run time, and the portable C tile.
 *
 * Detection uses __builtin_cpu_supports (CPUID plus the OS's XSAVE state), once. The portable
 * tile sums in 16 interleaved lanes over k (lane = k mod 16), then adds the lanes pairwise: the
 * same shape as the AVX-512 tile, written so that any compiler vectorises it without changing
 * the order. It is what machines without AVX2 run and what the tests compare the others with.
 */
#include <stdatomic.h>

#include "dspy/backend.h"
#include "kern/cpu/fast.h"

static atomic_int g_detected = -1; /* dspy_cpu_simd, or -1 before the first look */
static atomic_int g_forced = -1;   /* a test's choice, or -1 */

dspy_cpu_simd dspy_cpu_simd_detect(void) {
    int d = atomic_load(&g_detected);
    if (d >= 0) return (dspy_cpu_simd)d;
    d = DSPY_CPU_SIMD_SCALAR;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) d = DSPY_CPU_SIMD_AVX2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16"))
        d = DSPY_CPU_SIMD_AVX512;
#endif
    atomic_store(&g_detected, d);
    return (dspy_cpu_simd)d;
}

dspy_cpu_simd dspy_cpu_simd_active(void) {
    int f = atomic_load(&g_forced);
    return f >= 0 ? (dspy_cpu_simd)f : dspy_cpu_simd_detect();
}

dspy_status dspy_cpu_simd_force(dspy_cpu_simd level, dspy_cpu_simd *prev) {
    if (prev) *prev = dspy_cpu_simd_active();
    if ((int)level < 0 || level >= DSPY_CPU_SIMD_COUNT || level > dspy_cpu_simd_detect())
        return dspy_fail(DSPY_ERR_ARG, "cpu fast kernels: SIMD level %s is not available on this CPU (best: %s)",
                         (int)level >= 0 && level < DSPY_CPU_SIMD_COUNT ? dspy_cpu_simd_label(level) : "?",
                         dspy_cpu_simd_label(dspy_cpu_simd_detect()));
    atomic_store(&g_forced, (int)level);
    return DSPY_OK;
}

const char *dspy_cpu_simd_label(dspy_cpu_simd level) {
    switch (level) {
    case DSPY_CPU_SIMD_AVX512: return "avx512-bf16";
    case DSPY_CPU_SIMD_AVX2: return "avx2";
    default: return "scalar";
    }
}

const char *dspy_cpu_simd_name(void) { return dspy_cpu_simd_label(dspy_cpu_simd_active()); }

dspy_cpu_tile_fn dspy_cpu_tile_for(dspy_cpu_simd level) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (level == DSPY_CPU_SIMD_AVX512) return dspy_cpu_tile_avx512;
    if (level == DSPY_CPU_SIMD_AVX2) return dspy_cpu_tile_avx2;
#else
    (void)level;
#endif
    return dspy_cpu_tile_scalar;
}

dspy_cpu_tile_f32_fn dspy_cpu_tile_f32_for(dspy_cpu_simd level) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (level == DSPY_CPU_SIMD_AVX512) return dspy_cpu_tile_f32_avx512;
    if (level == DSPY_CPU_SIMD_AVX2) return dspy_cpu_tile_f32_avx2;
#else
    (void)level;
#endif
    return dspy_cpu_tile_f32_scalar;
}

dspy_cpu_axpy_fn dspy_cpu_axpy_for(dspy_cpu_simd level) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (level == DSPY_CPU_SIMD_AVX512) return dspy_cpu_axpy_avx512;
    if (level == DSPY_CPU_SIMD_AVX2) return dspy_cpu_axpy_avx2;
#else
    (void)level;
#endif
    return dspy_cpu_axpy_scalar;
}

/* ---- the portable kernels ---------------------------------------------------------------- */

enum { LANES = 16 };

/* One (x row, w row) pair: 16 lane sums over k, then ((0+1)+(2+3))+... pairwise, 16 -> 1. */
static float dot_lanes(const uint16_t *x, const uint16_t *w, int K) {
    float acc[LANES] = {0};
    int k = 0;
    for (; k + LANES <= K; k += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += cpu_bf16(x[k + l]) * cpu_bf16(w[k + l]);
    for (int l = 0; k + l < K; l++) acc[l] += cpu_bf16(x[k + l]) * cpu_bf16(w[k + l]);
    for (int width = LANES / 2; width > 0; width /= 2)
        for (int l = 0; l < width; l++) acc[l] = acc[2 * l] + acc[2 * l + 1];
    return acc[0];
}

void dspy_cpu_tile_scalar(const uint16_t *x, size_t ldx, int nr, const uint16_t *const w[4], int K,
                          float out[4][4]) {
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < 4; j++) out[r][j] = dot_lanes(x + (size_t)r * ldx, w[j], K);
}

static float dot_lanes_f32(const float *x, const float *w, int K) {
    float acc[LANES] = {0};
    int k = 0;
    for (; k + LANES <= K; k += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += x[k + l] * w[k + l];
    for (int l = 0; k + l < K; l++) acc[l] += x[k + l] * w[k + l];
    for (int width = LANES / 2; width > 0; width /= 2)
        for (int l = 0; l < width; l++) acc[l] = acc[2 * l] + acc[2 * l + 1];
    return acc[0];
}

void dspy_cpu_tile_f32_scalar(const float *x, size_t ldx, int nr, const float *const w[4], int K, float out[4][4]) {
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < 4; j++) out[r][j] = dot_lanes_f32(x + (size_t)r * ldx, w[j], K);
}

void dspy_cpu_axpy_scalar(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}
