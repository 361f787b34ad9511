/* parity.h — what the CUDA-against-CPU parity tests share (test_cuda_ops, test_cuda_train_ops,
 * test_cuda_train): the relative error they judge by, the prologue that skips without a GPU and
 * seeds the random inputs, and the check that a device fault is reported, run in a child. */
#ifndef DSPY_TEST_PARITY_H
#define DSPY_TEST_PARITY_H

#include <stddef.h>
#include <stdint.h>

/* ||a - b|| / ||b|| over n (1 for ||b|| in the denominator when b is all zeros); infinite when
 * a has a non-finite value. */
double parity_rel(const float *a, const float *b, size_t n);
/* The same against a double-precision reference. */
double parity_rel_d(const float *a, const double *b, size_t n);

/* Prints "NAME: skipped: why" and returns 77 when no CUDA device is visible; otherwise seeds
 * *rng from DSPY_TEST_SEED (or the clock and pid), prints the seed and the device, and returns
 * -1 (go on). */
int parity_begin(const char *name, uint64_t *rng);

/* Runs `self --fault` (the test's own child mode, which provokes a device fault) and checks that
 * it exits 0 and prints `expect`. */
void parity_check_fault(const char *self, const char *expect);

#endif
