/* kern/e4m3.h — FP8 E4M3 rounding on the host, written from the format's definition (1 sign, 4
 * exponent bits with bias 7, 3 mantissa bits; normal values from 2^-6, subnormal steps of 2^-9
 * below; the largest finite value 448): the readable rule behind the model loader's FP8 weight
 * rows (model/f8_round.c) and the CPU backend's W8A8 input rows (kern/cpu/matmul.c); the CUDA
 * kernels (kern/cuda/f8.cu, gemm.cu) do the same on the device. */
#ifndef DSPY_KERN_E4M3_H
#define DSPY_KERN_E4M3_H

#include <stdint.h>

/* E4M3 of a, nearest even, saturating at +-448: the value. */
float dspy_e4m3(float a);

/* The smallest k in [-100, k_max] with amax <= 448 * 2^k (k_max when none is). */
int dspy_e4m3_row_exponent(float amax, int k_max);

/* row (n F32 values) rounded in place at its own scale 2^k (k from its largest magnitude,
 * at most k_max): each value E4M3(v / 2^k) * 2^k, exact powers of two. Returns k. */
int dspy_e4m3_round_row(float *row, int64_t n, int k_max);

#endif
