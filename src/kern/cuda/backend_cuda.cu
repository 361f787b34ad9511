/* backend_cuda.cu — the CUDA backend: its context (device, stream, cuBLASLt handle, workspace,
 * planned scratch, sticky error), memory and copies, graph capture, and the op table of the
 * kernels in gemm.cu, pointwise.cu, attention.cu and sample.cu, and the training entries of
 * train_*.cu (F32; the trainer itself still runs on the CPU backend).
 *
 * Every entry first returns the sticky error if there is one; every CUDA call's status is
 * checked. Nothing here waits for the device except `sync` (and release).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kern/cuda/cuda.cuh"
#include "kern/cuda/f8.cuh"
#include "kern/cuda/timeline.h"
#include "kern/cuda/train_attention_cudnn.h"
#include "kern/cuda/train_attention_split.h"

/* ---- errors ------------------------------------------------------------------------------ */

dspy_status dspy_cu_fail(dspy_backend *be, dspy_status code, const char *fmt, ...) {
    cuda_state *s = cu_of(be);
    char buf[sizeof s->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (s && s->err == DSPY_OK) {
        s->err = code;
        snprintf(s->msg, sizeof s->msg, "%s", buf);
    }
    return dspy_fail(code, "%s", buf);
}

dspy_status dspy_cu_sticky(dspy_backend *be) {
    cuda_state *s = cu_of(be);
    if (s->err == DSPY_OK) {
        /* The calling thread may not have selected this device yet (engines are made on one
         * thread and stepped on another); cheap when it already has. */
        cudaError_t e = cudaSetDevice(s->dev);
        return e == cudaSuccess ? DSPY_OK : dspy_cu_check(be, e, "select device");
    }
    return dspy_fail(s->err, "%s (an earlier CUDA failure; this backend can no longer run work)", s->msg);
}

dspy_status dspy_cu_check(dspy_backend *be, cudaError_t e, const char *what) {
    if (e == cudaSuccess) return DSPY_OK;
    dspy_status code = e == cudaErrorMemoryAllocation ? DSPY_ERR_NOMEM : DSPY_ERR_BACKEND;
    if (code == DSPY_ERR_NOMEM) { /* not sticky: the context is still usable */
        cudaGetLastError();
        return dspy_fail(code, "cuda:%d: %s: out of GPU memory", cu_of(be)->dev, what);
    }
    return dspy_cu_fail(be, code, "cuda:%d: %s: %s (%s)", cu_of(be)->dev, what, cudaGetErrorString(e), cudaGetErrorName(e));
}

dspy_status dspy_cu_launched(dspy_backend *be, const char *what) { return dspy_cu_check(be, cudaGetLastError(), what); }

dspy_status dspy_cu_check_lt(dspy_backend *be, cublasStatus_t st, const char *what) {
    if (st == CUBLAS_STATUS_SUCCESS) return DSPY_OK;
    return dspy_cu_fail(be, DSPY_ERR_BACKEND, "cuda:%d: %s: cuBLASLt status %d", cu_of(be)->dev, what, (int)st);
}

dspy_status dspy_cu_need(dspy_backend *be, const char *op, const char *arg, dspy_tensor t, dspy_dtype dt, dspy_dtype dt2,
                    int64_t need) {
    (void)be;
    if (t.device != DSPY_DEVICE_CUDA)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: %s is not in GPU memory (a host tensor was given to the CUDA backend)",
                         op, arg);
    if (t.dtype != dt && (dt2 == DSPY_DTYPE_COUNT || t.dtype != dt2))
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: %s is %s; this op takes %s%s%s", op, arg, dspy_dtype_name(t.dtype),
                         dspy_dtype_name(dt), dt2 == DSPY_DTYPE_COUNT ? "" : " or ",
                         dt2 == DSPY_DTYPE_COUNT ? "" : dspy_dtype_name(dt2));
    if (need > 0 && (!t.data || t.n < need))
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: %s holds %lld elements, %lld needed", op, arg, (long long)t.n,
                         (long long)need);
    return DSPY_OK;
}

/* ---- memory, copies, the stream ---------------------------------------------------------- */

static dspy_status cu_alloc(dspy_backend *be, size_t bytes, void **out) {
    *out = NULL;
    CU_ENTER(be);
    be->n_allocs++;
    cudaError_t e = cudaMalloc(out, bytes ? bytes : 1);
    if (e == cudaSuccess) return DSPY_OK;
    cudaGetLastError();
    *out = NULL;
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    return dspy_fail(DSPY_ERR_NOMEM, "cuda:%d: cannot allocate %.2f GiB of GPU memory (%.2f GiB free of %.2f GiB)",
                     cu_of(be)->dev, bytes / 1073741824.0, fr / 1073741824.0, tot / 1073741824.0);
}

static void cu_free(dspy_backend *be, void *p) {
    (void)be;
    if (p) cudaFree(p);
}

static dspy_status cu_alloc_host(dspy_backend *be, size_t bytes, void **out) {
    *out = NULL;
    CU_ENTER(be);
    cudaError_t e = cudaMallocHost(out, bytes ? bytes : 1);
    if (e == cudaSuccess) return DSPY_OK;
    cudaGetLastError();
    *out = NULL;
    return dspy_fail(DSPY_ERR_NOMEM, "cuda:%d: cannot allocate %zu MiB of page-locked host memory", cu_of(be)->dev,
                     bytes >> 20);
}

static void cu_free_host(dspy_backend *be, void *p) {
    (void)be;
    if (p) cudaFreeHost(p);
}

static dspy_status cu_copy(dspy_backend *be, void *dst, const void *src, size_t bytes, dspy_copy_kind kind) {
    CU_ENTER(be);
    if (!bytes) return DSPY_OK;
    cudaMemcpyKind k = kind == DSPY_COPY_H2D ? cudaMemcpyHostToDevice
                       : kind == DSPY_COPY_D2H ? cudaMemcpyDeviceToHost
                                               : cudaMemcpyDeviceToDevice;
    return dspy_cu_check(be, cudaMemcpyAsync(dst, src, bytes, k, cu_of(be)->stream), "copy");
}

static dspy_status cu_sync(dspy_backend *be) {
    CU_ENTER(be);
    return dspy_cu_check(be, cudaStreamSynchronize(cu_of(be)->stream), "synchronize (a kernel failed)");
}

static dspy_status cu_query(dspy_backend *be, bool *done) {
    CU_ENTER(be);
    const cudaError_t e = cudaStreamQuery(cu_of(be)->stream);
    *done = e == cudaSuccess;
    return e == cudaErrorNotReady ? DSPY_OK : dspy_cu_check(be, e, "query (a kernel failed)");
}

/* ---- graphs ------------------------------------------------------------------------------ */

static dspy_status cu_graph_begin(dspy_backend *be) {
    CU_ENTER(be);
    cuda_state *s = cu_of(be);
    DSPY_TRY(dspy_cu_check(be, cudaStreamBeginCapture(s->stream, cudaStreamCaptureModeThreadLocal), "graph capture"));
    s->capturing = true;
    return DSPY_OK;
}

static dspy_status cu_graph_end(dspy_backend *be, void **out) {
    *out = NULL;
    cuda_state *s = cu_of(be);
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(s->stream, &g);
    s->capturing = false;
    CU_ENTER(be);
    DSPY_TRY(dspy_cu_check(be, e, "graph capture end"));
    cudaGraphExec_t x = NULL;
    e = cudaGraphInstantiate(&x, g, 0);
    cudaGraphDestroy(g);
    DSPY_TRY(dspy_cu_check(be, e, "graph instantiate"));
    *out = (void *)x;
    return DSPY_OK;
}

static dspy_status cu_graph_launch(dspy_backend *be, void *g) {
    CU_ENTER(be);
    return dspy_cu_check(be, cudaGraphLaunch((cudaGraphExec_t)g, cu_of(be)->stream), "graph launch");
}

static void cu_graph_free(dspy_backend *be, void *g) {
    (void)be;
    if (g) cudaGraphExecDestroy((cudaGraphExec_t)g);
}

/* ---- the table --------------------------------------------------------------------------- */

static const dspy_ops k_cuda_ops = {
    .name = "cuda",
    .alloc = cu_alloc,
    .free = cu_free,
    .alloc_host = cu_alloc_host,
    .free_host = cu_free_host,
    .copy = cu_copy,
    .fill = dspy_cu_fill,
    .cast = dspy_cu_cast,
    .sync = cu_sync,
    .query = cu_query,
    .graph_begin = cu_graph_begin,
    .graph_end = cu_graph_end,
    .graph_launch = cu_graph_launch,
    .graph_free = cu_graph_free,
    .embedding = dspy_cu_embedding,
    .rmsnorm = dspy_cu_rmsnorm,
    .linear = dspy_cu_linear,
    .qkv_rope_store = dspy_cu_qkv_rope_store,
    .attn_in = dspy_cu_attn_in,
    .mlp_in = dspy_cu_mlp_in,
    .logits = dspy_cu_logits,
    .attention = dspy_cu_attention,
    .swiglu = dspy_cu_swiglu,
    .add = dspy_cu_add,
    .gather_rows = dspy_cu_gather_rows,
    .sample = dspy_cu_sample,
    .mask_logits = dspy_cu_mask_logits,
    .decode_advance = dspy_cu_decode_advance,
    /* training entries (train_*.cu) */
    .rope = dspy_cu_rope,
    .linear_backward = dspy_cu_linear_backward,
    .rmsnorm_backward = dspy_cu_rmsnorm_backward,
    .rope_backward = dspy_cu_rope_backward,
    .attention_train = dspy_cu_attention_train,
    .attention_train_backward = dspy_cu_attention_train_backward,
    .swiglu_backward = dspy_cu_swiglu_backward,
    .embedding_backward = dspy_cu_embedding_backward,
    .scatter_add_rows = dspy_cu_scatter_add_rows,
    .cross_entropy = dspy_cu_cross_entropy,
    .dropout = dspy_cu_dropout,
    .scale = dspy_cu_scale,
    .adamw = dspy_cu_adamw,
    .sum_rows = dspy_cu_sum_rows,
    .grad_sumsq = dspy_cu_grad_sumsq,
    .clip_coef = dspy_cu_clip_coef,
    .linear_backward_beta = dspy_cu_linear_backward_beta,
    .adamw_bf16 = dspy_cu_adamw_bf16,
    .linear_add = dspy_cu_linear_add,
    .lora_forward = dspy_cu_lora_forward,
    .lora_backward = dspy_cu_lora_backward,
    .dropout_acc = dspy_cu_dropout_acc,
    .attention_train_layout = dspy_cu_train_attention_layout,
    .f8_link = dspy_cu_f8_link,
    .f8_unlink = dspy_cu_f8_unlink,
    .mlp_f16 = dspy_cu_mlp_f16,
    .mlp_act8 = dspy_cu_mlp_act8,
    .logits_greedy = dspy_cu_logits_greedy,
};

/* ---- lifetime ---------------------------------------------------------------------------- */

extern "C" dspy_status dspy_backend_cuda_reserve(dspy_backend *be, const dspy_backend_plan *p) {
    cuda_state *s = cu_of(be);
    CU_ENTER(be);
    DSPY_TRY(dspy_cu_check(be, cudaSetDevice(s->dev), "select device"));
    size_t part = dspy_cu_decode_part_floats(s, p->max_seqs > 0 ? p->max_seqs : 1, p->NH > 0 ? p->NH : 1, 1,
                                        p->HS > 0 ? p->HS : 1);
    size_t counters = (size_t)(p->max_seqs > 0 ? p->max_seqs : 1) * (size_t)(p->NH > 0 ? p->NH : 1);
    if (counters > s->att_count_n) {
        int *nc = NULL;
        DSPY_TRY(cu_alloc(be, counters * sizeof(int), (void **)&nc));
        DSPY_TRY(dspy_cu_check(be, cudaMemsetAsync(nc, 0, counters * sizeof(int), s->stream), "zero counters"));
        DSPY_TRY(dspy_cu_check(be, cudaStreamSynchronize(s->stream), "zero counters"));
        cudaFree(s->att_count);
        s->att_count = nc;
        s->att_count_n = counters;
    }
    size_t srows = (size_t)(p->max_seqs > 0 ? p->max_seqs : 1);
    if (srows > s->samp_rows) {
        float *np = NULL;
        int *nc = NULL;
        DSPY_TRY(cu_alloc(be, srows * 64 * 3 * sizeof(float), (void **)&np));
        /* counters: the sampler's rows, then mask_logits' */
        DSPY_TRY(cu_alloc(be, 2 * srows * sizeof(int), (void **)&nc));
        DSPY_TRY(dspy_cu_check(be, cudaMemsetAsync(nc, 0, 2 * srows * sizeof(int), s->stream), "zero counters"));
        DSPY_TRY(dspy_cu_check(be, cudaStreamSynchronize(s->stream), "zero counters"));
        cudaFree(s->samp_part);
        cudaFree(s->samp_count);
        s->samp_part = np, s->samp_count = nc, s->samp_rows = srows;
    }
    if (!s->greedy_part) {
        float4 *np = NULL;
        int *nc = NULL;
        DSPY_TRY(cu_alloc(be, (size_t)16 * s->sm_count * sizeof(float4), (void **)&np));
        if (dspy_status st = cu_alloc(be, sizeof(int), (void **)&nc)) {
            cudaFree(np);
            return st;
        }
        s->greedy_part = np, s->greedy_count = nc;
        DSPY_TRY(dspy_cu_check(be, cudaMemsetAsync(nc, 0, sizeof(int), s->stream), "zero counters"));
        DSPY_TRY(dspy_cu_check(be, cudaStreamSynchronize(s->stream), "zero counters"));
    }
    size_t a8 = (size_t)(p->max_rows > 0 ? p->max_rows : 0) * (size_t)(p->act8_width > 0 ? p->act8_width : 0);
    if (a8 > s->act8_n) {
        uint8_t *nq = NULL;
        float *ns = NULL;
        DSPY_TRY(cu_alloc(be, a8, (void **)&nq));
        if (dspy_status st = cu_alloc(be, (size_t)p->max_rows * sizeof(float), (void **)&ns)) {
            cudaFree(nq);
            return st;
        }
        cudaFree(s->act8);
        cudaFree(s->act8_scale);
        s->act8 = nq, s->act8_scale = ns, s->act8_n = a8, s->act8_rows = p->max_rows;
    }
    if (s->act8 && !s->splitk && s->splitk_mode != 1) { /* W8A8: the small calls' split-K partials */
        const size_t n = dspy_cu_splitk_floats();
        DSPY_TRY(cu_alloc(be, n * sizeof(float), (void **)&s->splitk));
        s->splitk_n = n;
    }
    if (part > s->att_part_n) {
        float *np = NULL;
        DSPY_TRY(cu_alloc(be, part * sizeof(float), (void **)&np));
        cudaFree(s->att_part);
        s->att_part = np;
        s->att_part_n = part;
    }
    DSPY_TRY(dspy_cu_train_reserve(be, p));
    be->plan = *p;
    return DSPY_OK;
}

extern "C" dspy_status dspy_backend_cuda_init(dspy_backend *be) {
    be->ops = &k_cuda_ops;
    be->act_dtype = DSPY_DTYPE_BF16;
    be->w_dtype = DSPY_DTYPE_BF16;
    cuda_state *s = (cuda_state *)calloc(1, sizeof(cuda_state));
    if (!s) return dspy_fail(DSPY_ERR_NOMEM, "cuda backend: out of memory");
    be->impl = s;
    s->dev = be->dev.ordinal;
    dspy_status st = DSPY_OK;
    cudaDeviceProp prop;
    if ((st = dspy_cu_check(be, cudaSetDevice(s->dev), "select device"))) goto fail;
    if ((st = dspy_cu_check(be, cudaGetDeviceProperties(&prop, s->dev), "device properties"))) goto fail;
    if (prop.major < 8) {
        st = dspy_cu_fail(be, DSPY_ERR_BACKEND, "cuda:%d: %s is sm_%d%d; the CUDA backend needs compute capability 8.0 or "
                                           "newer (bf16 tensor cores)", s->dev, prop.name, prop.major, prop.minor);
        goto fail;
    }
    s->sm_count = prop.multiProcessorCount;
    {
        const char *pdl = getenv("DSPY_CUDA_PDL");
        s->pdl = !(pdl && strcmp(pdl, "0") == 0);
        /* tuning variants the benchmark compares in one run (bench/run_gpu.sh) */
        const char *ph = getenv("DSPY_CUDA_PREFILL_HEADS"), *rl = getenv("DSPY_CUDA_RELEASE");
        s->prefill_heads = ph ? atoi(ph) : 4;
        if (s->prefill_heads < 1 || s->prefill_heads > 2) s->prefill_heads = 4; /* 4: the default variant */
        s->release = rl ? atoi(rl) & CU_REL_ALL : CU_REL_DEFAULT;
        const char *ps = getenv("DSPY_CUDA_PREFILL_SPLIT");
        s->prefill_split = ps ? atoi(ps) : 0;
        if (s->prefill_split < 0 || s->prefill_split > 8) s->prefill_split = 0;
        if (prop.major < 9) s->prefill_split = 1; /* the splits meet in a thread-block cluster (sm_90) */
        const char *dc = getenv("DSPY_CUDA_DEC_CLUSTER");
        s->dec_cluster = dc ? atoi(dc) : prop.major >= 9 ? 16 : 0; /* clusters need sm_90 */
        if (s->dec_cluster != 16) s->dec_cluster = 0;
        const char *af = getenv("DSPY_CUDA_ACT8_FUSE");
        s->act8_fuse = !(af && strcmp(af, "0") == 0);
        const char *sk = getenv("DSPY_CUDA_SPLITK");
        s->splitk_mode = sk ? atoi(sk) : 0;
        if (s->splitk_mode < 0 || s->splitk_mode > 4) s->splitk_mode = 0;
        const char *mk = getenv("DSPY_CUDA_DEC_MIN_KEYS");
        s->dec_min_keys = mk ? atoi(mk) : 32;
        if (s->dec_min_keys < 16 || s->dec_min_keys > 128) s->dec_min_keys = 32;
    }
    if ((st = dspy_cu_check(be, cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking), "create stream"))) goto fail;
    if (const char *why = dspy_cu_lt_load()) {
        st = dspy_cu_fail(be, DSPY_ERR_BACKEND, "cuda:%d: %s", s->dev, why);
        goto fail;
    }
    if ((st = dspy_cu_check_lt(be, dspy_cu_lt.Create(&s->lt), "create cuBLASLt handle"))) goto fail;
    s->ws_bytes = 64u << 20; /* Hopper kernels want a large workspace */
    if ((st = cu_alloc(be, s->ws_bytes, &s->ws))) goto fail;
    if ((st = dspy_cu_attention_setup(be))) goto fail;
    if ((st = dspy_cu_gemv_setup(be))) goto fail;
    if ((st = dspy_cu_train_setup(be))) goto fail;
    if ((st = dspy_backend_cuda_reserve(be, &be->plan))) goto fail;
    return DSPY_OK;
fail:
    dspy_backend_cuda_release(be);
    return st;
}

extern "C" void *dspy_backend_cuda_stream(dspy_backend *be) {
    cuda_state *s = cu_of(be);
    return s ? (void *)s->stream : NULL;
}

extern "C" void dspy_backend_cuda_release(dspy_backend *be) {
    cuda_state *s = cu_of(be);
    if (!s) return;
    cudaSetDevice(s->dev);
    if (s->stream) cudaStreamSynchronize(s->stream);
    dspy_cu_timeline_stop(be);
    dspy_cu_gemm_plans_free(s);
    if (s->lt) dspy_cu_lt.Destroy(s->lt);
    cudaFree(s->ws);
    cudaFree(s->act8);
    cudaFree(s->act8_scale);
    cudaFree(s->splitk);
    cudaFree(s->att_part);
    cudaFree(s->att_count);
    cudaFree(s->samp_part);
    cudaFree(s->samp_count);
    cudaFree(s->greedy_part);
    cudaFree(s->greedy_count);
    dspy_cu_train_release(s);
    dspy_cu_split_release(s);
    dspy_cu_sdpa_release(s);
    if (s->stream) cudaStreamDestroy(s->stream);
    cudaGetLastError();
    free(s);
    be->impl = NULL;
}
