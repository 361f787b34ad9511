/* kern/cpu/cpu.h — the fp32 CPU reference backend's private declarations: its state (OpenMP
 * thread count and planned scratch), argument checks, and the kernels behind its op table
 * (backend_cpu.c). Private to kern/cpu; everyone else reaches them through kern/ops.h.
 */
#ifndef DSPY_KERN_CPU_H
#define DSPY_KERN_CPU_H

#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "kern/backend.h"

/* Scratch planned by dspy_backend_reserve (nothing allocates inside an op). */
typedef struct cpu_state {
    int nt;              /* OpenMP threads of every parallel region */
    float *att;          /* (nt, max_len) attention probabilities, one row per thread */
    int32_t *rowmap;     /* (max_rows) row -> segment / example bounds */
    int32_t *rowmap2;    /* (max_rows) */
    float *rowf;         /* (max_rows, max(NH, 1)) per-row floats (RMS inverses; attention_train_backward's
                            D per (row, head)) */
    float *vwork;        /* (max_vocab) sampler work */
    int32_t *vidx;       /* (max_vocab) sampler order */
    int fast;            /* 1: the fast kernels' table (dspy_backend_cpu_use_fast) */
    int32_t max_width;   /* fast kernels: the widest linear input row */
    uint16_t *xb;        /* fast kernels: (max_rows, max_width) BF16 copy of a linear's input */
    int64_t xb_cap;      /* its elements (0 for the reference kernels) */
    float *a8;           /* W8A8 (plan act8_width > 0): (max_rows, act8_width) E4M3-rounded copy of a linear's input */
    int64_t a8_cap;      /* its elements (0: no W8A8) */
} cpu_state;

static inline cpu_state *cpu_of(dspy_backend *be) { return (cpu_state *)be->impl; }

/* W8A8 rows as the CUDA backend's prompt GEMMs take them (kern/ops.h f8_link act8): where the
 * backend was planned with act8_width (an f8_act model's engine) and the call has
 * DSPY_ACT8_MIN_ROWS rows or more, inp's N rows copied into the planned scratch and each rounded
 * to E4M3 at its own 2^k (kern/e4m3.h, k <= DSPY_ACT8_K_MAX); else inp itself. The logits ops never ask (the lm_head stays W8A16). */
const float *dspy_cpu_act8_rows(dspy_backend *be, const float *inp, int N, int C);

/* Sets this thread's OpenMP team size to the backend's (an ICV of the calling thread). */
static inline void cpu_enter(dspy_backend *be) { omp_set_num_threads(cpu_of(be)->nt); }

/* Checks that t lives on the CPU, has `dt` (or, when dt2 is not DSPY_DTYPE_COUNT, one of dt/dt2)
 * and at least `need` elements; the message names the op and the argument. */
dspy_status dspy_cpu_check(const char *op, const char *arg, dspy_tensor t, dspy_dtype dt, dspy_dtype dt2, int64_t need);
#define CPU_NEED(op, arg, t, dt, need) DSPY_TRY(dspy_cpu_check(op, arg, t, dt, DSPY_DTYPE_COUNT, need))
#define CPU_NEED2(op, arg, t, dt, dt2, need) DSPY_TRY(dspy_cpu_check(op, arg, t, dt, dt2, need))
/* DSPY_ERR_ARG when `n` exceeds the planned `cap` (what, the op, how to plan more). */
dspy_status dspy_cpu_plan_check(const char *op, const char *what, int64_t n, int64_t cap);

/* Widens BF16 bits to F32 exactly. */
static inline float cpu_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Dot product of length n in a fixed order: 8 interleaved partial sums over blocks of 8, a
 * fixed pairwise combination, then the tail. The order depends only on n, which is what makes
 * batched and single-row results bit-identical. */
static inline float cpu_dot(const float *a, const float *b, int n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int c = 0;
    for (; c + 8 <= n; c += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[c + j] * b[c + j];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; c < n; c++) s += a[c] * b[c];
    return s;
}

/* cpu_dot against a BF16 row: the same order, so the result equals cpu_dot with the widened row. */
static inline float cpu_dot_bf16(const float *a, const uint16_t *b, int n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int c = 0;
    for (; c + 8 <= n; c += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[c + j] * cpu_bf16(b[c + j]);
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; c < n; c++) s += a[c] * cpu_bf16(b[c]);
    return s;
}


/* Inference kernels (matmul.c, attention.c, pointwise.c, sample.c). */
dspy_status dspy_cpu_linear(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, dspy_tensor bias, int N,
                       int C, int OC, int accumulate);
/* The same without W8A8 (the logits ops: the lm_head stays W8A16, as on CUDA). */
dspy_status dspy_cpu_linear_w16(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, dspy_tensor bias,
                                int N, int C, int OC, int accumulate);
dspy_status dspy_cpu_attention(dspy_backend *be, dspy_tensor out, dspy_tensor q, dspy_tensor kcache, dspy_tensor vcache,
                          const dspy_attn_meta *m, int NH, int NKV, int HS);
dspy_status dspy_cpu_embedding(dspy_backend *be, dspy_tensor out, dspy_tensor ids, dspy_tensor table, int N, int C);
dspy_status dspy_cpu_rmsnorm(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor weight, int N, int C,
                        float eps);
dspy_status dspy_cpu_qkv_rope_store(dspy_backend *be, dspy_tensor q_out, dspy_tensor kcache, dspy_tensor vcache,
                               dspy_tensor qkv, dspy_tensor pos, dspy_tensor slots, dspy_tensor inv_freq, int N,
                               int NH, int NKV, int HS);
dspy_status dspy_cpu_attn_in(dspy_backend *be, dspy_tensor q_out, dspy_tensor kcache, dspy_tensor vcache, dspy_tensor x,
                        dspy_tensor w_norm, dspy_tensor wqkv, dspy_tensor bqkv, dspy_tensor pos, dspy_tensor slots,
                        dspy_tensor inv_freq, dspy_tensor xn, dspy_tensor qkv, int N, int C, int NH, int NKV, int HS,
                        float eps);
dspy_status dspy_cpu_mlp_in(dspy_backend *be, dspy_tensor h, dspy_tensor x, dspy_tensor w_norm, dspy_tensor w_gate_up,
                       dspy_tensor xn, dspy_tensor gu, int N, int C, int I, float eps);
dspy_status dspy_cpu_logits(dspy_backend *be, dspy_tensor out, dspy_tensor x, dspy_tensor rows, dspy_tensor w_norm,
                       dspy_tensor w, dspy_tensor sel, dspy_tensor seln, int M, int C, int V, float eps);
dspy_status dspy_cpu_rope(dspy_backend *be, dspy_tensor x, dspy_tensor pos, dspy_tensor inv_freq, int N, int H, int HS);
dspy_status dspy_cpu_swiglu(dspy_backend *be, dspy_tensor out, dspy_tensor gate, dspy_tensor up, int N, int I, int ld);
dspy_status dspy_cpu_add(dspy_backend *be, dspy_tensor x, dspy_tensor y);
dspy_status dspy_cpu_gather_rows(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor rows, int M, int C);
dspy_status dspy_cpu_sample(dspy_backend *be, dspy_tensor tokens, dspy_tensor logprobs, dspy_tensor logits,
                       dspy_tensor params, int M, int V);
dspy_status dspy_cpu_decode_advance(dspy_backend *be, dspy_tensor tokens, dspy_tensor pos, dspy_tensor slots,
                                    dspy_tensor segs, dspy_tensor tables, dspy_tensor sampled, dspy_tensor logprobs,
                                    dspy_tensor ring, dspy_tensor ctl, int n, int ring_slots, int block_size);
dspy_status dspy_cpu_mask_logits(dspy_backend *be, dspy_tensor logits, dspy_tensor masks, dspy_tensor rows,
                            dspy_tensor shift, int R, int V);

/* Training kernels (matmul.c, pointwise_backward.c, attention_train.c, adamw.c). */
/* linear_backward's argument checks (dtypes and sizes of the tensors given), shared by the
 * reference and the fast kernels. */
dspy_status dspy_cpu_linear_backward_check(dspy_tensor dinp, dspy_tensor dw, dspy_tensor dbias, dspy_tensor dout,
                                          dspy_tensor inp, dspy_tensor w, int N, int C, int OC);
dspy_status dspy_cpu_linear_backward(dspy_backend *be, dspy_tensor dinp, dspy_tensor dw, dspy_tensor dbias,
                                dspy_tensor dout, dspy_tensor inp, dspy_tensor w, int N, int C, int OC);
dspy_status dspy_cpu_rmsnorm_backward(dspy_backend *be, dspy_tensor dinp, dspy_tensor dweight, dspy_tensor dout,
                                 dspy_tensor inp, dspy_tensor weight, int N, int C, float eps);
dspy_status dspy_cpu_rope_backward(dspy_backend *be, dspy_tensor dx, dspy_tensor pos, dspy_tensor inv_freq, int N, int H,
                              int HS);
dspy_status dspy_cpu_attention_train(dspy_backend *be, dspy_tensor out, dspy_tensor lse, dspy_tensor q, dspy_tensor k,
                                dspy_tensor v, dspy_tensor start, int prefix, int T, int NH, int NKV, int HS);
dspy_status dspy_cpu_attention_train_backward(dspy_backend *be, dspy_tensor dq, dspy_tensor dk, dspy_tensor dv,
                                         dspy_tensor dout, dspy_tensor out, dspy_tensor lse, dspy_tensor q,
                                         dspy_tensor k, dspy_tensor v, dspy_tensor start, int prefix, int T, int NH, int NKV,
                                         int HS);
dspy_status dspy_cpu_swiglu_backward(dspy_backend *be, dspy_tensor dgate, dspy_tensor dup, dspy_tensor dout,
                                dspy_tensor gate, dspy_tensor up, int N, int I);
dspy_status dspy_cpu_embedding_backward(dspy_backend *be, dspy_tensor dtable, dspy_tensor ids, dspy_tensor dout, int N,
                                   int C);
dspy_status dspy_cpu_scatter_add_rows(dspy_backend *be, dspy_tensor dinp, dspy_tensor rows, dspy_tensor dout, int M,
                                 int C);
dspy_status dspy_cpu_cross_entropy(dspy_backend *be, dspy_tensor loss, dspy_tensor dlogits, dspy_tensor logits,
                              dspy_tensor targets, int M, int V, float dscale);
dspy_status dspy_cpu_dropout(dspy_backend *be, dspy_tensor out, dspy_tensor inp, float p, uint64_t key);
dspy_status dspy_cpu_scale(dspy_backend *be, dspy_tensor x, float s);
dspy_status dspy_cpu_adamw(dspy_backend *be, dspy_tensor w, dspy_tensor g, dspy_tensor m, dspy_tensor v, dspy_tensor hp);
/* The trainer's reductions (reduce.c). */
dspy_status dspy_cpu_sum_rows(dspy_backend *be, dspy_tensor out, int slot, dspy_tensor x);
dspy_status dspy_cpu_grad_sumsq(dspy_backend *be, dspy_tensor out, int slot, dspy_tensor x);
dspy_status dspy_cpu_clip_coef(dspy_backend *be, dspy_tensor hp, int nhp, dspy_tensor out, dspy_tensor sumsq, int k,
                          dspy_tensor check, int nc, double max_norm);

#endif
