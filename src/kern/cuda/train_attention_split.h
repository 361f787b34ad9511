/* kern/cuda/train_attention_split.h — prefix-shared training attention (kern/ops.h attention_train
 * with 0 < prefix < T) through cuDNN's fused attention by an exact split into two cuDNN calls
 * merged by log-sum-exp (train_attention_split.cu says how). Private to kern/cuda;
 * train_attention.cu dispatches to it, backend_cuda.cu's op table holds the layout entry.
 *
 * DSPY_CUDA_CUDNN_SPLIT=0 turns the split off (prefix-shared calls run the own flash kernels, as
 * without cuDNN); read at the planning call and at every layout.
 */
#ifndef DSPY_KERN_CUDA_TRAIN_ATTENTION_SPLIT_H
#define DSPY_KERN_CUDA_TRAIN_ATTENTION_SPLIT_H

#include "kern/cuda/cuda.cuh"

struct cu_split;

/* The op attention_train_layout (kern/ops.h): cuDNN's layout (dspy_cu_sdpa_layout), and in the
 * planning form (start.data NULL, T > 0) the split's scratch for T rows at the backend plan's NH and
 * HS as well, where cuDNN is used. */
dspy_status dspy_cu_train_attention_layout(dspy_backend *be, dspy_tensor start, int T, int nseg, int max_len);

/* Whether the split takes this prefix-shared call (*take): on, planned for T rows and these heads,
 * and cuDNN takes both parts (dspy_cu_sdpa_route_split; ptrs[n] the call's tensors). */
dspy_status dspy_cu_split_route(dspy_backend *be, bool bwd, const void *start, int prefix, int T, int NH, int NKV,
                                int HS, const void *const *ptrs, int n, bool *take);

/* attention_train's forward for a call the route took: out (T, NH, HS) F32 (or BF16 when out16),
 * lse (T, NH) from BF16 q (T, NH, HS), k, v (T, NKV, HS). */
dspy_status dspy_cu_split_fwd(dspy_backend *be, void *out, bool out16, float *lse, const bf16 *q, const bf16 *k,
                              const bf16 *v, int prefix, int T, int NH, int NKV, int HS);

/* attention_train_backward for a call the route took: dq (T, NH, HS), dk, dv (T, NKV, HS) F32, or
 * BF16 when grad16 (each rounded once from the two parts' F32 sum; needs dout16 and NH == NKV or
 * NH >= 4 NKV, as train_attention.cu checks), overwritten, from dout (F32, or BF16 when dout16,
 * read in place), the forward's out (F32, or BF16 when out16) and lse, and q, k, v. */
dspy_status dspy_cu_split_bwd(dspy_backend *be, void *dq, void *dk, void *dv, bool grad16, const void *dout,
                              bool dout16, const void *out, bool out16, const float *lse, const bf16 *q, const bf16 *k,
                              const bf16 *v, int prefix, int T, int NH, int NKV, int HS);

/* Frees the split's scratch; NULL-safe. */
void dspy_cu_split_release(cuda_state *s);

#endif
