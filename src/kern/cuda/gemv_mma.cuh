/* kern/cuda/gemv_mma.cuh — the decode projections for 2..16 rows on tensor cores (gemv_mma.cu),
 * and for one row where the weights have an FP8 copy (kern/ops.h f8_link): the same four entries
 * as gemv.cu's GEMV family (linear, attn_in, mlp_in, logits), which keeps one row of BF16 weights. Each entry has a `fits` test; gemv.cu and gemm.cu ask it and
 * fall back to the composed path (rmsnorm / cuBLASLt / qkv_rope_store / swiglu) when it says no.
 * Private to kern/cuda.
 */
#ifndef DSPY_KERN_CUDA_GEMV_MMA_CUH
#define DSPY_KERN_CUDA_GEMV_MMA_CUH

#include "kern/cuda/cuda.cuh"

/* Rows one launch takes: two n8 tiles of the m16n8k16 MMA. */
enum { MMA_MIN_ROWS = GEMV_MAX_ROWS + 1, MMA_MAX_ROWS = 16 };

/* Whether linear with N rows of C BF16 inputs and w (OC x C, as given) runs on these kernels: N in
 * 2..MMA_MAX_ROWS, or one row with an FP8 copy of w linked (DSPY_CUDA_MMA_SMALL in gemv_mma.cu
 * changes the 1..GEMV_MAX_ROWS part); C % 32 == 0, 16-byte aligned operands. */
bool dspy_cu_mma_fits(int N, int OC, int C, const void *w, const void *inp);

/* out (N, OC) [+]= inp (N, C) BF16 @ W^T + bias; the caller checked shapes and dspy_cu_mma_fits.
 * inp may be F16 where w has an FP8 copy (mlp_f16's handoff; DSPY_ERR_ARG otherwise). */
dspy_status dspy_cu_mma_linear(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, dspy_tensor bias, int N,
                               int C, int OC, int accumulate);

/* The fused ops (kern/ops.h semantics); *taken false (and nothing launched) when the shape or
 * alignment is not one these kernels take: the caller then runs the composed path. mlp_in's h
 * may be F16 where the gate/up weights have an FP8 copy (DSPY_ERR_ARG otherwise). */
dspy_status dspy_cu_mma_attn_in(dspy_backend *be, bool *taken, dspy_tensor q_out, dspy_tensor kcache, dspy_tensor vcache,
                                dspy_tensor x, dspy_tensor w_norm, dspy_tensor wqkv, dspy_tensor bqkv, dspy_tensor pos,
                                dspy_tensor slots, dspy_tensor inv_freq, int N, int C, int NH, int NKV, int HS, float eps);
dspy_status dspy_cu_mma_mlp_in(dspy_backend *be, bool *taken, dspy_tensor h, dspy_tensor x, dspy_tensor w_norm,
                               dspy_tensor w_gate_up, int N, int C, int I, float eps);
/* Whether mlp_in can hand h to the down projection as F16 (kern/ops.h mlp_f16): both on these
 * kernels with FP8 copies (gate/up fused, down linear), DSPY_CUDA_F16_H not 0. */
bool dspy_cu_mma_mlp_f16(dspy_tensor h, dspy_tensor x, dspy_tensor w_norm, dspy_tensor w_gate_up, dspy_tensor w_down,
                         int N, int C, int I);
dspy_status dspy_cu_mma_logits(dspy_backend *be, bool *taken, dspy_tensor out, dspy_tensor x, dspy_tensor rows,
                               dspy_tensor w_norm, dspy_tensor w, int M, int C, int V, float eps);
/* logits_greedy's kernel (kern/ops.h): logits' tensor-core kernel with the greedy epilogue;
 * *taken as for logits. */
dspy_status dspy_cu_mma_logits_greedy(dspy_backend *be, bool *taken, dspy_tensor tokens, dspy_tensor logprobs,
                                      dspy_tensor x, dspy_tensor rows, dspy_tensor w_norm, dspy_tensor w, int M, int C,
                                      int V, float eps);

/* Kernel attributes (dynamic shared memory above 48 KB); at init. */
dspy_status dspy_cu_mma_setup(dspy_backend *be);

#endif
