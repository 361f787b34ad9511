/* kern/cpu/fast.h — the fast CPU kernels' private declarations: the SIMD level picked at run
 * time, the product tile each level implements, and the ops of the fast table (fast_linear.c).
 *
 * What the fast path computes (the contract its tests hold it to): a linear's input row is
 * rounded to BF16 (round to nearest even), the BF16 weight is read as stored, each product
 * bf16 x bf16 is exact in F32 and the products are summed in F32 in an order fixed by the SIMD
 * level and the length K alone, never by the row's batch, the tile it falls in or the thread
 * that runs it. Hence: deterministic run to run, a row bit-identical alone or batched, for any
 * thread count; |fast - reference| <= 2^-8 * sum_k |x_k w_k| + F32 summation error.
 *
 * The library is built for any x86-64: only the files of one level (fast_avx512.c, fast_avx2.c)
 * are compiled for it, with function target attributes, and reached through a pointer chosen
 * with __builtin_cpu_supports. Private to kern/cpu.
 */
#ifndef DSPY_KERN_CPU_FAST_H
#define DSPY_KERN_CPU_FAST_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kern/cpu/cpu.h"

typedef enum dspy_cpu_simd {
    DSPY_CPU_SIMD_SCALAR = 0, /* portable C (the compiler's baseline vectors) */
    DSPY_CPU_SIMD_AVX2 = 1,   /* AVX2 + FMA: BF16 widened to F32, 8-lane FMA */
    DSPY_CPU_SIMD_AVX512 = 2, /* AVX-512 F/BW/VL + BF16: VDPBF16PS, 16 lanes of pair products */
    DSPY_CPU_SIMD_COUNT
} dspy_cpu_simd;

/* One tile of products: out[r][j] = sum over k < K of x_r[k] * w_j[k] for r < nr (1..4) and
 * j < 4, with x_r = x + r * ldx and w_j = w[j], all BF16. A given (x_r, w_j, K) gives the same
 * bits whatever nr and whatever the other rows are. */
typedef void (*dspy_cpu_tile_fn)(const uint16_t *x, size_t ldx, int nr, const uint16_t *const w[4], int K,
                                 float out[4][4]);

/* The same with F32 input rows and F32 weight rows (the trainer's master weights): the products
 * are F32 multiplies (fused with the add on AVX2/AVX-512), so the result differs from the
 * reference only by the summation order: |fast - ref| <= (2K + 32) 2^-24 sum_k |x_k w_k|. */
typedef void (*dspy_cpu_tile_f32_fn)(const float *x, size_t ldx, int nr, const float *const w[4], int K,
                                     float out[4][4]);
/* y (n) += a * x (n), element by element (the gradient products of linear_backward). */
typedef void (*dspy_cpu_axpy_fn)(float *y, float a, const float *x, int n);

void dspy_cpu_tile_scalar(const uint16_t *x, size_t ldx, int nr, const uint16_t *const w[4], int K,
                          float out[4][4]);
void dspy_cpu_tile_f32_scalar(const float *x, size_t ldx, int nr, const float *const w[4], int K, float out[4][4]);
void dspy_cpu_tile_f32_avx2(const float *x, size_t ldx, int nr, const float *const w[4], int K, float out[4][4]);
void dspy_cpu_tile_f32_avx512(const float *x, size_t ldx, int nr, const float *const w[4], int K, float out[4][4]);
void dspy_cpu_axpy_scalar(float *y, float a, const float *x, int n);
void dspy_cpu_axpy_avx2(float *y, float a, const float *x, int n);
void dspy_cpu_axpy_avx512(float *y, float a, const float *x, int n);
void dspy_cpu_tile_avx2(const uint16_t *x, size_t ldx, int nr, const uint16_t *const w[4], int K, float out[4][4]);
void dspy_cpu_tile_avx512(const uint16_t *x, size_t ldx, int nr, const uint16_t *const w[4], int K,
                          float out[4][4]);

/* The best level this CPU runs (detected once, thread-safe). */
dspy_cpu_simd dspy_cpu_simd_detect(void);
/* The level the fast kernels use now: the detected one unless a test forced another. */
dspy_cpu_simd dspy_cpu_simd_active(void);
/* Tests: use `level` from now on (DSPY_ERR_ARG when this CPU cannot run it); returns the
 * previous level in *prev when non-NULL. Not to be called while kernels run. */
dspy_status dspy_cpu_simd_force(dspy_cpu_simd level, dspy_cpu_simd *prev);
/* "avx512-bf16", "avx2", "scalar". */
const char *dspy_cpu_simd_label(dspy_cpu_simd level);
/* The kernels of a level. */
dspy_cpu_tile_fn dspy_cpu_tile_for(dspy_cpu_simd level);
dspy_cpu_tile_f32_fn dspy_cpu_tile_f32_for(dspy_cpu_simd level);
dspy_cpu_axpy_fn dspy_cpu_axpy_for(dspy_cpu_simd level);

/* F32 -> BF16, round to nearest even; NaN stays a (quiet) NaN. */
static inline uint16_t dspy_cpu_round_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* The fast op table's own entries (the rest are the reference kernels). */
dspy_status dspy_cpu_fast_linear(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, dspy_tensor bias,
                                 int N, int C, int OC, int accumulate);
dspy_status dspy_cpu_fast_linear_backward(dspy_backend *be, dspy_tensor dinp, dspy_tensor dw, dspy_tensor dbias,
                                          dspy_tensor dout, dspy_tensor inp, dspy_tensor w, int N, int C, int OC);
dspy_status dspy_cpu_fast_attn_in(dspy_backend *be, dspy_tensor q_out, dspy_tensor kcache, dspy_tensor vcache,
                                  dspy_tensor x, dspy_tensor w_norm, dspy_tensor wqkv, dspy_tensor bqkv,
                                  dspy_tensor pos, dspy_tensor slots, dspy_tensor inv_freq, dspy_tensor xn,
                                  dspy_tensor qkv, int N, int C, int NH, int NKV, int HS, float eps);
dspy_status dspy_cpu_fast_mlp_in(dspy_backend *be, dspy_tensor h, dspy_tensor x, dspy_tensor w_norm,
                                 dspy_tensor w_gate_up, dspy_tensor xn, dspy_tensor gu, int N, int C, int I,
                                 float eps);
dspy_status dspy_cpu_fast_logits(dspy_backend *be, dspy_tensor out, dspy_tensor x, dspy_tensor rows,
                                 dspy_tensor w_norm, dspy_tensor w, dspy_tensor sel, dspy_tensor seln, int M, int C,
                                 int V, float eps);

#endif
