/* f8_ref.h — the tests' own definition of FP8 (E4M3) weight rounding, written apart from the
 * library's (src/model/f8_round.c) and CUDA's (kern/cuda/f8.cu), which the tests hold to it:
 * test_cuda_ops (f8_link, code by code) and test_safetensors (the CPU loader's f8_decode). */
#ifndef DSPY_TEST_F8_REF_H
#define DSPY_TEST_F8_REF_H

#include <stdint.h>

/* E4M3 rounding of x: 3 mantissa bits, normal from 2^-6 with subnormal steps of 2^-9 below,
 * nearest even, saturating at 448. */
float f8_ref_round(float x);
/* The value of E4M3 code b (0x7f and 0xff, the NaNs, never appear: the rounding saturates). */
float f8_ref_value(uint8_t b);
/* The row scale exponent of a row whose largest magnitude is amax: the smallest k >= -100 with
 * amax <= 448 * 2^k. */
int f8_ref_exponent(float amax);
/* w (rows, cols) rounded row by row: each value f8_ref_round(w / 2^k) * 2^k. */
void f8_ref_round_rows(float *w, int rows, int cols);

#endif
