/* kern/cuda/cuda.cuh — the CUDA backend's private declarations: its state (device, stream,
 * cuBLASLt handle and workspace, planned scratch, sticky error), error helpers, launch helpers,
 * BF16 helpers, and the kernels' entry points behind its op table (backend_cuda.cu). Private to
 * kern/cuda; everyone else reaches them through kern/ops.h.
 *
 * Errors: every CUDA/cuBLASLt call is checked; the first failure becomes the backend's sticky
 * error (status + message) and is returned by that op, every later op, and sync. Kernels are
 * launched on the backend's stream only, so a step can be captured as a graph.
 */
#ifndef DSPY_KERN_CUDA_CUH
#define DSPY_KERN_CUDA_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kern/backend.h"
#include "kern/cuda/cublaslt_api.cuh"

typedef __nv_bfloat16 bf16;

/* A cached cuBLASLt plan for one GEMM shape (descriptors + the heuristic's algorithm). */
struct gemm_plan {
    int N, C, OC;
    int out_dtype; /* DSPY_DTYPE_F32 or _BF16 */
    bool accumulate;
    bool valid;
    bool none;     /* W8A8 plans: the heuristic had no algorithm (the BF16 GEMM runs instead) */
    uint64_t last_use;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
};

enum { GEMM_PLANS = 96 };

struct cuda_state {
    int dev;
    int sm_count;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *ws;               /* cuBLASLt workspace */
    size_t ws_bytes;
    uint8_t *act8;          /* W8A8 prompt GEMMs (gemm.cu): a call's input rows as E4M3 codes, act8_n bytes */
    float *act8_scale;      /* and each row's 2^k, act8_rows floats */
    size_t act8_n;
    int act8_rows;
    float *splitk;          /* W8A8 split-K partials of small prompt calls (gemm.cu w8a8_splits): splitk_n floats */
    size_t splitk_n;
    int splitk_mode;        /* DSPY_CUDA_SPLITK: 0 = chosen per call (default), 1 = never, 2..4 = that many */
    float *att_part;        /* split-K decode partials, att_part_n floats */
    size_t att_part_n;
    gemm_plan plans[GEMM_PLANS];
    uint64_t use_clock;
    bool pdl;               /* launch with programmatic dependent launch (DSPY_CUDA_PDL=0 turns it off) */
    int prefill_heads;      /* the prefill attention at head size 64 (DSPY_CUDA_PREFILL_HEADS): two query heads a
                               CTA with Q reloaded every tile at 3 blocks per SM (default), with Q held in
                               registers at 2 blocks (2), one head a CTA (1). H200, 16k-token chunk: 0.69,
                               0.79 and 0.89 ms a layer (other variants measured: bench/RESULTS.md) */
    int prefill_split;      /* key splits of the head-size-64 prefill attention (DSPY_CUDA_PREFILL_SPLIT): 0 = chosen
                               per call (attention_prefill.cu prefill_splits), 1 = none, 2..8 = that many */
    int release;            /* which kernels release the next one early (griddep_wait), CU_REL_* bits;
                               DSPY_CUDA_RELEASE, default CU_REL_DEFAULT */
    int gemv_occ[4][4];     /* resident blocks per SM of the GEMV kernels [gemv, attn_in, mlp_in, logits][rows - 1],
                               measured at init: their grids are one wave (dspy_cu_gemv_setup) */
    int *att_count;         /* (att_count_n) split-K arrival counters, zero between launches */
    size_t att_count_n;
    float *samp_part;       /* sampler: (samp_rows, parts, 3) partial maxima / sums, then mask_logits'
                               (samp_rows, parts, 4); samp_rows x 64 x 3 floats in all */
    int *samp_count;        /* (2, samp_rows) arrival counters of the sampler, then of mask_logits; zero
                               between launches */
    size_t samp_rows;
    float4 *greedy_part;    /* logits_greedy: (16 rows, sm_count blocks) partial states (gemv_mma.cu) */
    int *greedy_count;      /* its arrival counter, zero between launches */
    float *train_rows;      /* training: (train_rows_n) per-row floats, max_rows * NH (train_*.cu) */
    struct cu_sdpa *sdpa;   /* training attention through cuDNN (train_attention_cudnn.cu), made at first use */
    struct cu_split *split; /* its prefix-shared split's scratch (train_attention_split.cu), made when planned */
    size_t train_rows_n;
    dspy_status err;        /* sticky: DSPY_OK until something failed */
    char msg[480];
    bool capturing;
    int dec_cluster;        /* decode attention: 0 = slices combined by the last block through global memory;
                               16 = one thread-block cluster of 16 slices per (sequence, KV head), combined
                               through distributed shared memory, at batch sizes where the global
                               combine would cut 16 or more slices (attention.cu launch_decode)
                               (DSPY_CUDA_DEC_CLUSTER; default 16 on sm_90 where the device can place
                               such a cluster, else 0). H200 B1: 0.932 (0), 0.900
                               ms (16); clusters of 8 measured 0.950 */
    bool act8_fuse;         /* W8A8 rows written as codes by rmsnorm / SwiGLU (dspy_cu_linear_normed, mlp_act8);
                               DSPY_CUDA_ACT8_FUSE=0: the compositions (the before/after in one build) */
    int dec_min_keys;       /* decode attention: fewest keys per context slice (DSPY_CUDA_DEC_MIN_KEYS, 16..128,
                               default 32: more, shorter slices shorten the kernel's dependent chain; 32 and
                               64 beat 128 by ~1.5 % in B1 on the H200) */
};

static inline cuda_state *cu_of(dspy_backend *be) { return (cuda_state *)be->impl; }

/* Records a failure as the sticky error (if none yet) and returns it with its message. */
dspy_status dspy_cu_fail(dspy_backend *be, dspy_status code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The sticky error, re-posted as this thread's message (DSPY_OK when none). */
dspy_status dspy_cu_sticky(dspy_backend *be);
/* Checks a runtime call: on failure records "cuda:N: what: <CUDA error text> (name)". */
dspy_status dspy_cu_check(dspy_backend *be, cudaError_t e, const char *what);
/* Checks the launch just made (cudaGetLastError). */
dspy_status dspy_cu_launched(dspy_backend *be, const char *what);
/* Checks a cuBLASLt call. */
dspy_status dspy_cu_check_lt(dspy_backend *be, cublasStatus_t s, const char *what);

/* Argument checks: device, dtype (one of two unless dt2 == DSPY_DTYPE_COUNT), element count. */
dspy_status dspy_cu_need(dspy_backend *be, const char *op, const char *arg, dspy_tensor t, dspy_dtype dt, dspy_dtype dt2,
                    int64_t need);
#define CU_NEED(op, arg, t, dt, need) DSPY_TRY(dspy_cu_need(be, op, arg, t, dt, DSPY_DTYPE_COUNT, need))
#define CU_NEED2(op, arg, t, dt, dt2, need) DSPY_TRY(dspy_cu_need(be, op, arg, t, dt, dt2, need))
#define CU_ENTER(be) DSPY_TRY(dspy_cu_sticky(be))

/* Blocks for n items of `per` each. */
static inline unsigned cu_blocks(int64_t n, int per) { return (unsigned)((n + per - 1) / per); }

/* Which kernels release the next kernel of the stream as soon as their dependency wait returns
 * (see griddep_wait): one bit per kind. */
enum {
    CU_REL_LINEAR = 1,    /* the decode linear GEMV (o_proj, down_proj) */
    CU_REL_ATTENTION = 2, /* the attention kernels */
    CU_REL_ATTN_IN = 4,   /* the fused attn_in GEMV (the tensor-core one also from 4 rows on by
                           * default, decided per launch: gemv_mma.cu g_attn_rel_rows) */
    CU_REL_MLP_IN = 8,    /* the fused mlp_in GEMV */
    CU_REL_LOGITS = 16,   /* the fused logits GEMV */
    CU_REL_ALL = 31,
    /* measured on the H200 (bench/run_gpu.sh sweep, B1): the linear GEMVs, attention and mlp_in
     * releasing gained ~4 % over attention alone; attn_in releasing attention lost 13 % (the
     * parked attention blocks slow the GEMV they wait on) */
    CU_REL_DEFAULT = CU_REL_LINEAR | CU_REL_ATTENTION | CU_REL_MLP_IN,
};

/* The CU_REL_ bits, one copy per .cu file, set by the file's setup function through
 * cu_release_set (files that never set it release nothing early). */
static __constant__ int c_release;

/* Waits until the grid this one depends on (the previous kernel of the stream) has finished and
 * its memory is visible. Every kernel calls it before touching memory another kernel writes;
 * before it, a kernel only reads what no kernel of the step writes (weights, the host-copied step
 * metadata, KV positions of earlier steps). With programmatic dependent launch the next kernel
 * may then be scheduled early: by default once every block of this one has exited (launch
 * latency overlaps the drain); where c_release has the kernel's bit, once every block of this
 * one has passed this wait, so the next kernel's blocks issue their weight loads and park in
 * their own wait while this one works. That cannot cascade or deadlock: a kernel releases the next one only
 * after its own wait returned, and only when all its blocks are resident. Both instructions are
 * no-ops for a kernel launched without the attribute. */
__device__ __forceinline__ void griddep_wait(int release_bit = 0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    if (c_release & release_bit) asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

/* griddep_wait's early release decided by the launch rather than c_release: call right after
 * griddep_wait() (same conditions). */
__device__ __forceinline__ void griddep_release() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

/* Sets c_release (CU_REL_ bits) for the kernels of the calling .cu file. */
static inline cudaError_t cu_release_set(int bits) { return cudaMemcpyToSymbol(c_release, &bits, sizeof bits); }

/* Launches `kern` on the backend's stream, with programmatic dependent launch when enabled (the
 * kernel may be scheduled while the previous one drains, and waits in griddep_wait()), in
 * thread-block clusters of `cluster` blocks when cluster.x > 0 (the grid a multiple of it). */
template <typename... KArgs, typename... Args>
static inline dspy_status cu_launch_cluster(dspy_backend *be, const char *what, void (*kern)(KArgs...), dim3 grid,
                                            dim3 block, dim3 cluster, size_t smem, Args... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = cu_of(be)->stream;
    cudaLaunchAttribute attr[2];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = cu_of(be)->pdl ? 1 : 0;
    attr[1].id = cudaLaunchAttributeClusterDimension;
    attr[1].val.clusterDim.x = cluster.x, attr[1].val.clusterDim.y = cluster.y, attr[1].val.clusterDim.z = cluster.z;
    cfg.attrs = attr;
    cfg.numAttrs = cluster.x > 0 ? 2 : 1;
    return dspy_cu_check(be, cudaLaunchKernelEx(&cfg, kern, (KArgs)args...), what);
}

/* The same without clusters: every kernel of the backend goes through this. */
template <typename... KArgs, typename... Args>
static inline dspy_status cu_launch(dspy_backend *be, const char *what, void (*kern)(KArgs...), dim3 grid, dim3 block,
                                    size_t smem, Args... args) {
    return cu_launch_cluster(be, what, kern, grid, block, dim3(0, 0, 0), smem, args...);
}

__device__ __forceinline__ float bf2f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 f2bf(float x) { return __float2bfloat16_rn(x); }

/* The device's global timer, ns (common to all SMs). */
__device__ __forceinline__ unsigned long long cu_global_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

/* Split-K decode attention: the number of splits for nseg sequences (a pure function, so a
 * captured graph and the plan agree) and the partial floats it needs. */
int dspy_cu_decode_splits(const cuda_state *s, int nseg, int NKV);
size_t dspy_cu_decode_part_floats(const cuda_state *s, int max_seqs, int NH, int NKV, int HS);

/* Decode GEMV (gemv.cu): out (N <= GEMV_MAX_ROWS, OC) [+]= inp (N, C) BF16 @ W^T + bias;
 * false when the shape or alignment needs the general path. */
enum { GEMV_MAX_ROWS = 4 };
bool dspy_cu_gemv_fits(int N, int C, const void *w, const void *inp);
dspy_status dspy_cu_gemv(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, dspy_tensor bias, int N, int C,
                    int OC, bool accumulate);

/* Op entries (gemm.cu, gemv.cu, pointwise.cu, attention.cu, sample.cu). */
dspy_status dspy_cu_attn_in(dspy_backend *be, dspy_tensor q_out, dspy_tensor kcache, dspy_tensor vcache, dspy_tensor x,
                       dspy_tensor w_norm, dspy_tensor wqkv, dspy_tensor bqkv, dspy_tensor pos, dspy_tensor slots,
                       dspy_tensor inv_freq, dspy_tensor xn, dspy_tensor qkv, int N, int C, int NH, int NKV, int HS,
                       float eps);
dspy_status dspy_cu_mlp_in(dspy_backend *be, dspy_tensor h, dspy_tensor x, dspy_tensor w_norm, dspy_tensor w_gate_up,
                      dspy_tensor xn, dspy_tensor gu, int N, int C, int I, float eps);
bool dspy_cu_mlp_f16(dspy_backend *be, dspy_tensor h, dspy_tensor x, dspy_tensor w_norm, dspy_tensor w_gate_up,
                     dspy_tensor w_down, int N, int C, int I);
dspy_status dspy_cu_logits_greedy(dspy_backend *be, dspy_tensor tokens, dspy_tensor logprobs, dspy_tensor x,
                                  dspy_tensor rows, dspy_tensor w_norm, dspy_tensor w, dspy_tensor sel, dspy_tensor seln,
                                  int M, int C, int V, float eps, bool *done);
dspy_status dspy_cu_logits(dspy_backend *be, dspy_tensor out, dspy_tensor x, dspy_tensor rows, dspy_tensor w_norm,
                      dspy_tensor w, dspy_tensor sel, dspy_tensor seln, int M, int C, int V, float eps);
dspy_status dspy_cu_linear(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, dspy_tensor bias, int N,
                      int C, int OC, int accumulate);
dspy_status dspy_cu_embedding(dspy_backend *be, dspy_tensor out, dspy_tensor ids, dspy_tensor table, int N, int C);
dspy_status dspy_cu_rmsnorm(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor weight, int N, int C,
                       float eps);
dspy_status dspy_cu_qkv_rope_store(dspy_backend *be, dspy_tensor q_out, dspy_tensor kcache, dspy_tensor vcache,
                              dspy_tensor qkv, dspy_tensor pos, dspy_tensor slots, dspy_tensor inv_freq, int N, int NH,
                              int NKV, int HS);
dspy_status dspy_cu_attention(dspy_backend *be, dspy_tensor out, dspy_tensor q, dspy_tensor kcache, dspy_tensor vcache,
                         const dspy_attn_meta *m, int NH, int NKV, int HS);
dspy_status dspy_cu_swiglu(dspy_backend *be, dspy_tensor out, dspy_tensor gate, dspy_tensor up, int N, int I, int ld);
dspy_status dspy_cu_add(dspy_backend *be, dspy_tensor x, dspy_tensor y);
dspy_status dspy_cu_gather_rows(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor rows, int M, int C);
dspy_status dspy_cu_sample(dspy_backend *be, dspy_tensor tokens, dspy_tensor logprobs, dspy_tensor logits,
                      dspy_tensor params, int M, int V);
dspy_status dspy_cu_decode_advance(dspy_backend *be, dspy_tensor tokens, dspy_tensor pos, dspy_tensor slots,
                                   dspy_tensor segs, dspy_tensor tables, dspy_tensor sampled, dspy_tensor logprobs,
                                   dspy_tensor ring, dspy_tensor ctl, int n, int ring_slots, int block_size);
dspy_status dspy_cu_mask_logits(dspy_backend *be, dspy_tensor logits, dspy_tensor masks, dspy_tensor rows,
                           dspy_tensor shift, int R, int V);
dspy_status dspy_cu_fill(dspy_backend *be, dspy_tensor x, float value);
/* W8A8 producers (pointwise.cu): rows written straight as the E4M3 codes q (N, width) and 2^k sc
 * (N) that linear's W8A8 rounding (gemm.cu) makes of the BF16 rows rmsnorm / swiglu store, without
 * storing those; the caller checked the arguments and the _fits test. */
bool dspy_cu_rmsnorm_act8_fits(int C, const void *x, const void *w, const void *q);
dspy_status dspy_cu_rmsnorm_act8(dspy_backend *be, uint8_t *q, float *sc, dspy_tensor x, dspy_tensor weight, int N, int C,
                                 float eps);
bool dspy_cu_swiglu_act8_fits(int I, int ld, const void *gate, const void *up, const void *q);
dspy_status dspy_cu_swiglu_act8(dspy_backend *be, uint8_t *q, float *sc, dspy_tensor gate, dspy_tensor up, int N, int I,
                                int ld);
/* out (N, OC) = linear(rmsnorm(x, w_norm), w, bias) (gemm.cu): rmsnorm into xn, then linear, except
 * where that linear would run W8A8 on k_rmsnorm8's rows: then the rows go to codes in one kernel
 * (dspy_cu_rmsnorm_act8), xn untouched, the same result. attn_in's and mlp_in's composed paths. */
dspy_status dspy_cu_linear_normed(dspy_backend *be, dspy_tensor out, dspy_tensor xn, dspy_tensor x, dspy_tensor w_norm,
                                  float eps, dspy_tensor w, dspy_tensor bias, int N, int C, int OC);
bool dspy_cu_mlp_act8(dspy_backend *be, dspy_tensor h, dspy_tensor x, dspy_tensor w_down, int N, int C, int I);
/* The floats of the W8A8 split-K partials a backend with act8 buffers reserves (gemm.cu). */
size_t dspy_cu_splitk_floats(void);
dspy_status dspy_cu_cast(dspy_backend *be, dspy_tensor out, dspy_tensor inp);
/* Per-device kernel attributes (large shared memory of the prefill attention); at init. */
dspy_status dspy_cu_attention_setup(dspy_backend *be);
/* The GEMV family's release bits and occupancies; at init. */
dspy_status dspy_cu_gemv_setup(dspy_backend *be);
/* Releases the cached GEMM plans (backend_cuda.cu calls it on release). */
void dspy_cu_gemm_plans_free(cuda_state *s);

/* ---- training ops (train_*.cu), F32 ------------------------------------------------------
 * The op table's training entries (kern/ops.h "training (F32)"). Scratch: train_rows above,
 * planned by dspy_cu_train_reserve (max_rows * max(NH, 1) floats: the RMS inverses of
 * rmsnorm_backward, the rows' dout . out of attention_train_backward). */
dspy_status dspy_cu_train_reserve(dspy_backend *be, const dspy_backend_plan *p);
void dspy_cu_train_release(cuda_state *s);
/* Per-device kernel attributes (large shared memory of the training attention); at init. */
dspy_status dspy_cu_train_setup(dspy_backend *be);
/* The GEMM plan cache of gemm.cu: the slot for a key (*hit: it holds that plan, its use
 * recorded; else an empty slot, the least recently used plan destroyed). linear's plans use the
 * output dtype as tag; train_linear.cu uses tags >= 1000. */
gemm_plan *dspy_cu_gemm_plan_slot(cuda_state *s, int N, int C, int OC, int tag, bool acc, bool *hit);
void dspy_cu_gemm_plan_destroy(gemm_plan *p);
dspy_status dspy_cu_rope(dspy_backend *be, dspy_tensor x, dspy_tensor pos, dspy_tensor inv_freq, int N, int H, int HS);
dspy_status dspy_cu_rope_backward(dspy_backend *be, dspy_tensor dx, dspy_tensor pos, dspy_tensor inv_freq, int N, int H,
                             int HS);
dspy_status dspy_cu_linear_backward(dspy_backend *be, dspy_tensor dinp, dspy_tensor dw, dspy_tensor dbias, dspy_tensor dout,
                               dspy_tensor inp, dspy_tensor w, int N, int C, int OC);
dspy_status dspy_cu_rmsnorm_backward(dspy_backend *be, dspy_tensor dinp, dspy_tensor dweight, dspy_tensor dout,
                                dspy_tensor inp, dspy_tensor weight, int N, int C, float eps);
dspy_status dspy_cu_attention_train(dspy_backend *be, dspy_tensor out, dspy_tensor lse, dspy_tensor q, dspy_tensor k,
                               dspy_tensor v, dspy_tensor start, int prefix, int T, int NH, int NKV, int HS);
dspy_status dspy_cu_attention_train_backward(dspy_backend *be, dspy_tensor dq, dspy_tensor dk, dspy_tensor dv,
                                        dspy_tensor dout, dspy_tensor out, dspy_tensor lse, dspy_tensor q,
                                        dspy_tensor k, dspy_tensor v, dspy_tensor start, int prefix, int T, int NH, int NKV,
                                        int HS);
dspy_status dspy_cu_swiglu_backward(dspy_backend *be, dspy_tensor dgate, dspy_tensor dup, dspy_tensor dout,
                               dspy_tensor gate, dspy_tensor up, int N, int I);
dspy_status dspy_cu_embedding_backward(dspy_backend *be, dspy_tensor dtable, dspy_tensor ids, dspy_tensor dout, int N,
                                  int C);
dspy_status dspy_cu_scatter_add_rows(dspy_backend *be, dspy_tensor dinp, dspy_tensor rows, dspy_tensor dout, int M, int C);
dspy_status dspy_cu_cross_entropy(dspy_backend *be, dspy_tensor loss, dspy_tensor dlogits, dspy_tensor logits,
                             dspy_tensor targets, int M, int V, float dscale);
dspy_status dspy_cu_dropout(dspy_backend *be, dspy_tensor out, dspy_tensor inp, float p, uint64_t key);
dspy_status dspy_cu_scale(dspy_backend *be, dspy_tensor x, float s);
dspy_status dspy_cu_adamw(dspy_backend *be, dspy_tensor w, dspy_tensor g, dspy_tensor m, dspy_tensor v, dspy_tensor hp);
dspy_status dspy_cu_adamw_bf16(dspy_backend *be, dspy_tensor w, dspy_tensor g, dspy_tensor m, dspy_tensor v,
                               dspy_tensor hp, dspy_tensor w16);
dspy_status dspy_cu_linear_add(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, dspy_tensor res,
                               int N, int C, int OC);
/* train_lora.cu: the LoRA entries of the mixed-precision trainer. */
dspy_status dspy_cu_lora_forward(dspy_backend *be, dspy_tensor y, dspy_tensor u, dspy_tensor x, dspy_tensor A,
                                 dspy_tensor B, int N, int C, int r, int OC, float scale);
dspy_status dspy_cu_lora_backward(dspy_backend *be, dspy_tensor dx, dspy_tensor gA, dspy_tensor gB, dspy_tensor du,
                                  dspy_tensor dy, dspy_tensor x, dspy_tensor u, dspy_tensor A, dspy_tensor B, int N,
                                  int C, int r, int OC, float scale, float beta_dx);
dspy_status dspy_cu_dropout_acc(dspy_backend *be, dspy_tensor out, dspy_tensor inp, float p, uint64_t key,
                                bool accumulate);
dspy_status dspy_cu_linear_backward_beta(dspy_backend *be, dspy_tensor dinp, dspy_tensor dw, dspy_tensor dout,
                                         dspy_tensor inp, dspy_tensor w, int N, int C, int OC, float beta_dinp,
                                         float beta_dw);
/* train_reduce.cu: the trainer's reductions; train_linear.cu: linear with F32 inp and w. */
dspy_status dspy_cu_sum_rows(dspy_backend *be, dspy_tensor out, int slot, dspy_tensor x);
dspy_status dspy_cu_grad_sumsq(dspy_backend *be, dspy_tensor out, int slot, dspy_tensor x);
dspy_status dspy_cu_clip_coef(dspy_backend *be, dspy_tensor hp, int nhp, dspy_tensor out, dspy_tensor sumsq, int k,
                         dspy_tensor check, int nc, double max_norm);
dspy_status dspy_cu_linear_f32(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, dspy_tensor bias, int N,
                          int C, int OC, bool accumulate);

#endif
