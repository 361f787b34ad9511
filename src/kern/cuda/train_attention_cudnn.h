/* kern/cuda/train_attention_cudnn.h — the training attention (kern/ops.h attention_train,
 * attention_train_backward) through cuDNN's fused flash attention (the SDPA operation graphs of
 * cuDNN's backend API), for BF16 q, k, v of head size 64 or 128; a call with a shared prefix runs as
 * two of its graphs (train_attention_split.cu: the layout's causal one and a cross-attention one).
 * Private to kern/cuda; train_attention.cu and train_attention_split.cu call it.
 *
 * cuDNN is loaded at run time (dlopen of libcudnn.so.9): the library and the `dspy` binary do not
 * link it, so a machine without cuDNN runs the own kernels. cuDNN needs the segment layout on
 * the host (its graphs are planned for a batch count and a longest sequence); the trainer hands
 * it over with the op attention_train_layout before the pass's attention calls
 * (dspy_cu_sdpa_layout). DSPY_CUDA_CUDNN_ATTN: unset, cuDNN where it loads; 0 off; 1 required (the
 * layout call fails, saying why, where cuDNN cannot be loaded).
 */
#ifndef DSPY_KERN_CUDA_TRAIN_ATTENTION_CUDNN_H
#define DSPY_KERN_CUDA_TRAIN_ATTENTION_CUDNN_H

#include "kern/cuda/cuda.cuh"

struct cu_sdpa;

/* The layout of the packed sequence whose start array (T, device) the next attention calls
 * receive: nseg examples, the longest max_len tokens (kern/ops.h attention_train_layout). Derives
 * the per-example lengths and offsets on the device from start (no host round trip). With
 * start.data NULL: the planning form, scratch for up to T rows at the backend plan's NH and HS
 * (the trainer calls it when it plans; a layout for more rows than planned runs the own kernels);
 * start.data NULL and T 0 forgets the layout. */
dspy_status dspy_cu_sdpa_layout(dspy_backend *be, dspy_tensor start, int T, int nseg, int max_len);

/* Whether the fused path takes this call (*take): cuDNN loaded and on, BF16, HS 64 or 128, no
 * prefix, 16-byte aligned ptrs[n], a layout given for this start array and T, and a plan for the
 * key (built here at first use; a key cuDNN has no plan for is remembered and goes to the own
 * kernels, or is an error under DSPY_CUDA_CUDNN_ATTN=1). */
dspy_status dspy_cu_sdpa_route(dspy_backend *be, bool bwd, const void *start, int prefix, int T, int NH, int NKV,
                               int HS, const void *const *ptrs, int n, bool *take);

/* out (T, NH, HS) F32 (or BF16 when out16), lse (T, NH) F32 (natural log of the scaled scores'
 * sum, as the own kernels) from BF16 q (T, NH, HS), k, v (T, NKV, HS). */
dspy_status dspy_cu_sdpa_fwd(dspy_backend *be, void *out, bool out16, float *lse, const bf16 *q, const bf16 *k,
                             const bf16 *v, int T, int NH, int NKV, int HS);

/* dq (T, NH, HS), dk, dv (T, NKV, HS) F32, or BF16 when grad16 (cuDNN's BF16 outputs written in
 * place; under GQA its F32 head sums rounded once), overwritten, from dout (F32, or BF16 when
 * dout16), out (F32, or BF16 when out16), lse and q, k, v. */
dspy_status dspy_cu_sdpa_bwd(dspy_backend *be, void *dq, void *dk, void *dv, bool grad16, const void *dout,
                             bool dout16, const void *out, bool out16, const float *lse, const bf16 *q, const bf16 *k,
                             const bf16 *v, int T, int NH, int NKV, int HS);

/* As dspy_cu_sdpa_bwd with BF16 dout, dq, dk, dv (grad16), except where cuDNN forms GQA's head
 * sums in F32 (its wide graph): those are written to dk32, dv32 (T, NKV, HS) F32 (16-byte aligned)
 * instead, and dk, dv are left unwritten (*kept true), for a caller that adds more to them before
 * rounding once (train_attention_split.cu's part A); else as dspy_cu_sdpa_bwd (*kept false). */
dspy_status dspy_cu_sdpa_bwd_keep(dspy_backend *be, bf16 *dq, bf16 *dk, bf16 *dv, float *dk32, float *dv32,
                                  bool *kept, const bf16 *dout, const void *out, bool out16, const float *lse,
                                  const bf16 *q, const bf16 *k, const bf16 *v, int T, int NH, int NKV, int HS);

/* The prefix cross-attention, part B of train_attention_split.cu's exact split of a prefix-shared
 * call: one batch of Sq query rows against Skv keys, no mask (every row sees every key), on a
 * graph of its own (B 1, rows rounded up to 4,096 or the planned rows, keys to 64; cached as the
 * others). */

/* The planning call's part: the cross layout's few device words, where cuDNN is used (*on). */
dspy_status dspy_cu_sdpa_cross_plan(dspy_backend *be, bool *on);

/* Whether cuDNN takes both parts of a prefix-shared call (*take): as dspy_cu_sdpa_route, but for
 * 0 < prefix < T, examples of 256 tokens on average or more (the prefix one of them; any under
 * DSPY_CUDA_CUDNN_ATTN=1), and with a plan for the layout's causal graph
 * (part A: the prefix and each continuation an example) and for the cross graph of T - prefix rows
 * to prefix keys. */
dspy_status dspy_cu_sdpa_route_split(dspy_backend *be, bool bwd, const void *start, int prefix, int T, int NH,
                                     int NKV, int HS, const void *const *ptrs, int n, bool *take);

/* o (Sq, NH, HS) BF16 and stats (Sq, NH) F32 (16-byte aligned, as every pointer here) from q
 * (Sq, NH, HS), k, v (Skv, NKV, HS). */
dspy_status dspy_cu_sdpa_xfwd(dspy_backend *be, bf16 *o, float *stats, const bf16 *q, const bf16 *k, const bf16 *v,
                              int Sq, int Skv, int NH, int NKV, int HS);

/* Overwrites dq (Sq, NH, HS) BF16 and dk, dv (Skv, NKV, HS): F32 where *dkv32 comes back true (GQA's
 * head sum written in F32), else BF16; from dout (Sq, NH, HS) F32 (or BF16 when dout16, read in
 * place), out (F32, or BF16 when out16), stats (Sq, NH) and q, k, v. */
dspy_status dspy_cu_sdpa_xbwd(dspy_backend *be, bf16 *dq, void *dk, void *dv, bool *dkv32, const void *dout,
                              bool dout16, const void *out, bool out16, const float *stats, const bf16 *q,
                              const bf16 *k, const bf16 *v, int Sq, int Skv, int NH, int NKV, int HS);

/* Frees everything (plans, handle, scratch); NULL-safe. */
void dspy_cu_sdpa_release(cuda_state *s);

#endif
