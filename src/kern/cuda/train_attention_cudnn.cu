/* train_attention_cudnn.cu — the training attention through cuDNN's fused flash attention
 * (train_attention_cudnn.h): operation graphs of cuDNN's backend API that its engine heuristics
 * fuse into one forward and one backward kernel, for packed causal examples (THD layout with
 * ragged offsets), GQA, head size 64 or 128, BF16 q, k, v.
 *
 * The graphs (the pattern cuDNN's fused SDPA engines recognise; the cuDNN frontend builds the same):
 *   forward  S = Q K^T (per example: rows and keys beyond its length are padding), S *= scale,
 *            padding mask (row < len and key < len), causal mask (row >= key), softmax with its
 *            statistics Stats = max + log(sum exp) (the own kernels' lse: natural log of the
 *            scaled scores), O = P V.
 *   backward D = rowsum(dO * O), S and P = exp(S scale - Stats) recomputed under the same masks,
 *            dV = P^T dO, dS = P (dO V^T - D) scale, dK = dS^T Q, dQ = dS K; with GQA dK and dV
 *            are summed over a KV head's query heads (a reduction over full-head tensors).
 * Layouts, all THD (token-major: element (t, h, d) at t * H * HS + h * HS + d): a tensor is
 * (B, H, S, HS) with strides (-, HS, H * HS, 1) and example b starts at the ragged offset
 * off[b] = first token of b x H x HS; Stats (B, NH, S, 1) strides (-, 1, NH, 1) is the (T, NH)
 * lse array itself. B is the example count and S the longest example rounded up to 64: a graph
 * (and its execution plan) is cached per (B, S, NH, NKV, HS).
 * The cross-attention graphs (train_attention_split.cu's part B of a prefix-shared call: the
 * continuation rows against the prefix keys) are the same without the causal mask, for one batch
 * of S query rows (rounded up to 4,096 or the planned rows) and Skv keys (rounded up to 64), the
 * scores (S, Skv); their ragged offsets and lengths are a few device words (xlay) written once per
 * layout and sizes.
 *
 * Precision and the op's F32 interface: cuDNN takes BF16 O and dO and writes BF16 O and dQ
 * (measured on the H200, cuDNN 9.19: a graph with an F32 O, or an F32 dK / dV straight out of
 * the matmuls, finalizes but its kernel does not write them, and its F32 dQ accumulator is not
 * dQ in the THD layout, so neither is used). out is written through a BF16 copy widened into F32
 * (so that narrowing it again for the backward is exact), or, BF16 out (the BF16 trainer's att),
 * written by cuDNN directly and read in place by the backward; dout is narrowed to BF16 as the own
 * flash kernels round it; dq is widened from BF16; dk and dv are F32 under GQA (the sum over a KV
 * head's query heads, a reduction, writes F32 correctly; measured) and widened from BF16
 * otherwise. The BF16 trainer's BF16 gradients (BF16 dout, dq, dk, dv) skip every conversion: dO
 * is read and dQ (and dK, dV without GQA) written in place; under GQA the F32 head sums go to the
 * dK / dV scratch and are rounded once into dk, dv.
 *
 * Where it runs: examples of 512 tokens on average or more (T / nseg). H200, 32 query heads, 8 KV
 * heads, HS 64 (bench_train_attn), cuDNN vs the own flash kernels a layer, conversions included:
 * one 2,048-token example forward 0.085 vs 0.102 ms, backward 0.254 vs 0.344 ms; T1's pass of 4 x
 * 2,048 forward 0.264 vs 0.354 ms, backward 0.827 vs 1.277 ms (T1 step 126.1 vs 135.6 ms). Shorter
 * examples stay on the own kernels (37 examples of 1 .. 300 tokens: cuDNN 0.095 / 0.311 ms against
 * 0.071 / 0.233, its grid being examples x the longest); a prefix-shared call's split from 256
 * tokens an example (SDPA_SPLIT_MIN_MEAN). DSPY_CUDA_CUDNN_ATTN=1 takes every call it can (the
 * tests).
 * Intermediates cuDNN reads and writes (D, the full-head dK and dV under GQA, the BF16 copies)
 * live in scratch planned by the planning form of dspy_cu_sdpa_layout, with the plans' workspace.
 */
#include "kern/cuda/train_attention_cudnn.h"
#include "kern/cuda/train.cuh"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if __has_include(<cudnn_graph.h>)
#include <cudnn_graph.h>
#define SDPA_HAVE_CUDNN 1
#else
#define SDPA_HAVE_CUDNN 0
#endif

#if SDPA_HAVE_CUDNN

typedef cudnnBackendDescriptor_t cdesc;

/* The cuDNN entry points, resolved from libcudnn.so.9 at first use. */
struct sdpa_api {
    void *lib;
    size_t (*version)(void);
    const char *(*err_string)(cudnnStatus_t);
    void (*last_error)(char *, size_t);
    cudnnStatus_t (*create)(cudnnHandle_t *);
    cudnnStatus_t (*destroy)(cudnnHandle_t);
    cudnnStatus_t (*set_stream)(cudnnHandle_t, cudaStream_t);
    cudnnStatus_t (*create_desc)(cudnnBackendDescriptorType_t, cdesc *);
    cudnnStatus_t (*destroy_desc)(cdesc);
    cudnnStatus_t (*finalize)(cdesc);
    cudnnStatus_t (*set_attr)(cdesc, cudnnBackendAttributeName_t, cudnnBackendAttributeType_t, int64_t, const void *);
    cudnnStatus_t (*get_attr)(cdesc const, cudnnBackendAttributeName_t, cudnnBackendAttributeType_t, int64_t, int64_t *,
                              void *);
    cudnnStatus_t (*execute)(cudnnHandle_t, cdesc, cdesc);
};

enum {
    SDPA_CACHE = 24,  /* graphs kept (forward and backward count apart) */
    SDPA_DESCS = 160, /* descriptors of one graph */
    SDPA_OPS = 64,    /* operations of one graph */
    SDPA_SROUND = 64, /* S (the longest example) rounded up to this */
    SDPA_MIN_MEAN = 512, /* fewest tokens an example on average for cuDNN to run the call (see above) */
    SDPA_SPLIT_MIN_MEAN = 256, /* the same for a prefix-shared call's split (the prefix one example): H200,
                                  bench_train_attn, 32 query heads, 8 KV heads, HS 64, split vs the own
                                  kernels, forward / backward: T2's layout (1,300-token prefix, 8 continuations
                                  of 240 .. 320: 393 tokens an example) 0.180 / 0.550 ms vs 0.183 / 0.644; a
                                  200-token prefix and 40 continuations of 1 .. 131 (69 an example) 0.125 /
                                  0.404 vs 0.057 / 0.259 */
    SDPA_XROUND = 4096,  /* the cross-attention's query rows rounded up to this or to the planned rows, the
                            fewer: one graph for every call of a run with up to 4,096 rows (T2: 1,100 to
                            2,600 rows, which rounding to 1,024 planned as 2,048 and 3,072; a graph costs
                            ~65 ms at first use on the H200, from T2's warm-up step); the rows past the
                            length cost an empty tile each (T2's backward: 0.549 ms at 3,072, 0.554 at
                            4,096, within the noise) */
};

/* The cross-attention's layout in xlay (int64 words; each tensor 16-byte aligned as the graphs
 * declare): ragged offsets (2 each) of q/o/dq, k/v/dk/dv and stats, then the two lengths (INT32). */
enum { SDPA_X_RQ = 0, SDPA_X_RKV = 2, SDPA_X_RS = 4, SDPA_X_SEQ_Q = 6, SDPA_X_SEQ_KV = 8, SDPA_X_WORDS = 10 };

/* Tensor ids of the variant pack; virtual tensors get ids from U_VIRTUAL up. */
enum {
    U_Q = 1, U_K, U_V, U_O, U_STATS, U_DO, U_DQ, U_DK, U_DV, U_SEQ_Q, U_SEQ_KV, U_RQ, U_RKV, U_RS, U_SCALE, U_NEGINF,
    U_ONE, U_DSUM, U_DQACC, U_DKF, U_DVF, U_COUNT, U_VIRTUAL = 100,
};

/* One finalized graph with its plan; every descriptor kept alive until the entry is dropped. */
struct sdpa_graph {
    bool used, bwd, wide; /* wide: the backward's dK, dV written in F32 by the GQA head sum */
    bool refused;         /* cuDNN had no plan for the key: the own kernels run it */
    bool causal;          /* the causal mask (false: the prefix cross-attention, every key seen) */
    int B, S, Skv, NH, NKV, HS; /* S: query rows, Skv: keys (both S but in the cross-attention) */
    cdesc all[SDPA_DESCS];
    int nall;
    cdesc plan;
    int64_t ws;
    float scale, neg_inf, one; /* the by-value scalars the variant pack points at */
    uint64_t last_use;
};

struct cu_sdpa {
    sdpa_api api;
    bool tried, loaded, disabled; /* tried loading; loaded; off by DSPY_CUDA_CUDNN_ATTN=0 */
    bool required;                /* DSPY_CUDA_CUDNN_ATTN=1 at the last layout: a graph without a plan is an error */
    char why[200];           /* why cuDNN is not used (load failure) */
    cudnnHandle_t h;
    /* the layout of dspy_cu_sdpa_layout */
    const void *start;
    int T, nseg, S;
    int heads[3]; /* NH, NKV, HS the offsets below were computed for (0: not yet) */
    int32_t *seg;    /* (cap + 1) example starts, then (cap) lengths */
    int64_t *off;    /* (3, cap + 1) ragged offsets: q/o/dq, k/v/dk/dv, stats */
    int cap;         /* rows planned: examples at most */
    /* scratch */
    uint16_t *b16;   /* BF16 O, dO, dQ, dK, dV: 3 x rows x NH x HS + 2 x rows x NH x HS */
    float *f32;      /* D (rows x NH), then two full-head (rows x NH x HS) arrays */
    size_t rows, width; /* planned rows and NH x HS */
    int NH;
    void *ws;
    size_t ws_bytes;
    int64_t *xlay;   /* the cross-attention's one-batch layout (SDPA_X_*), made by dspy_cu_sdpa_cross_plan */
    int xkey[5];     /* Sq, Skv, NH, NKV, HS xlay holds (0: not yet this layout) */
    sdpa_graph g[SDPA_CACHE];
    uint64_t clock;
};

/* ---- loading ----------------------------------------------------------------------------- */

static bool sdpa_load(cu_sdpa *c) {
    sdpa_api *a = &c->api;
    a->lib = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_LOCAL);
    if (!a->lib) {
        snprintf(c->why, sizeof c->why, "cannot load libcudnn.so.9 (%s)", dlerror());
        return false;
    }
#define SDPA_SYM(field, name)                                                                                          \
    do {                                                                                                               \
        *(void **)&a->field = dlsym(a->lib, name);                                                                     \
        if (!a->field) {                                                                                               \
            snprintf(c->why, sizeof c->why, "libcudnn.so.9 lacks %s", name);                                           \
            return false;                                                                                              \
        }                                                                                                              \
    } while (0)
    SDPA_SYM(version, "cudnnGetVersion");
    SDPA_SYM(err_string, "cudnnGetErrorString");
    SDPA_SYM(last_error, "cudnnGetLastErrorString");
    SDPA_SYM(create, "cudnnCreate");
    SDPA_SYM(destroy, "cudnnDestroy");
    SDPA_SYM(set_stream, "cudnnSetStream");
    SDPA_SYM(create_desc, "cudnnBackendCreateDescriptor");
    SDPA_SYM(destroy_desc, "cudnnBackendDestroyDescriptor");
    SDPA_SYM(finalize, "cudnnBackendFinalize");
    SDPA_SYM(set_attr, "cudnnBackendSetAttribute");
    SDPA_SYM(get_attr, "cudnnBackendGetAttribute");
    SDPA_SYM(execute, "cudnnBackendExecute");
#undef SDPA_SYM
    /* the ragged THD layout with INT64 offsets and the F32-capable fused engines: 9.6 and later */
    if (a->version() < 90600) {
        snprintf(c->why, sizeof c->why, "cuDNN %zu is older than 9.6", a->version());
        return false;
    }
    return true;
}

/* "what: <status> (<cuDNN's last message>)" */
static dspy_status sdpa_fail(cu_sdpa *c, cudnnStatus_t st, const char *what) {
    char last[320] = "";
    c->api.last_error(last, sizeof last);
    return dspy_fail(DSPY_ERR_BACKEND, "cuda cudnn attention: %s: %s%s%s%s", what, c->api.err_string(st),
                     last[0] ? " (" : "", last, last[0] ? ")" : "");
}

/* DSPY_CUDA_CUDNN_DEBUG=1: one stderr line per handle and per planned graph with the device
 * memory in use after it (what cuDNN itself takes is not visible to the trainer's plan). */
static void sdpa_debug(const char *what, int B, int S, long long ws) {
    static int on = -1;
    if (on < 0) on = getenv("DSPY_CUDA_CUDNN_DEBUG") && strcmp(getenv("DSPY_CUDA_CUDNN_DEBUG"), "1") == 0;
    if (!on) return;
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    fprintf(stderr, "cudnn attention: %s B=%d S=%d workspace %lld bytes; device memory in use %.2f GB\n", what, B, S,
            ws, (double)(tot - fr) / 1e9);
}

/* The state, created (and cuDNN loaded) at first use; NULL when cuDNN is off or unavailable. */
static cu_sdpa *sdpa_of(dspy_backend *be) {
    cuda_state *s = cu_of(be);
    if (!s->sdpa) {
        s->sdpa = (cu_sdpa *)calloc(1, sizeof(cu_sdpa));
        if (!s->sdpa) return NULL;
    }
    cu_sdpa *c = s->sdpa;
    if (!c->tried) {
        c->tried = true;
        const char *env = getenv("DSPY_CUDA_CUDNN_ATTN");
        c->disabled = env && strcmp(env, "0") == 0;
        if (!c->disabled && sdpa_load(c)) {
            sdpa_debug("before cudnnCreate", 0, 0, 0);
            cudnnStatus_t st = c->api.create(&c->h);
            sdpa_debug("after cudnnCreate", 0, 0, 0);
            if (!st) st = c->api.set_stream(c->h, s->stream);
            if (st) snprintf(c->why, sizeof c->why, "cudnnCreate: %s", c->api.err_string(st));
            c->loaded = !st;
        }
    }
    return c->loaded && !c->disabled ? c : NULL;
}

/* ---- graph building ---------------------------------------------------------------------- */

/* A graph under construction: the first failure is kept (st) and later calls do nothing. */
struct gbuild {
    cu_sdpa *c;
    sdpa_graph *g;
    cdesc ops[SDPA_OPS];
    int nops;
    int64_t next_uid;
    dspy_status st;
};

static cdesc gb_new(gbuild *b, cudnnBackendDescriptorType_t type, const char *what) {
    if (b->st) return NULL;
    if (b->g->nall == SDPA_DESCS) {
        b->st = dspy_fail(DSPY_ERR_BACKEND, "cuda cudnn attention: %s: more than %d descriptors", what, SDPA_DESCS);
        return NULL;
    }
    cdesc d = NULL;
    cudnnStatus_t st = b->c->api.create_desc(type, &d);
    if (st) {
        b->st = sdpa_fail(b->c, st, what);
        return NULL;
    }
    b->g->all[b->g->nall++] = d;
    return d;
}

static void gb_set(gbuild *b, cdesc d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t n,
                   const void *v, const char *what) {
    if (b->st) return;
    cudnnStatus_t st = b->c->api.set_attr(d, name, type, n, v);
    if (st) b->st = sdpa_fail(b->c, st, what);
}

static void gb_fin(gbuild *b, cdesc d, const char *what) {
    if (b->st) return;
    cudnnStatus_t st = b->c->api.finalize(d);
    if (st) b->st = sdpa_fail(b->c, st, what);
}

/* A tensor (dims and strides of 4); uid 0: virtual, numbered here. */
static cdesc gb_tensor(gbuild *b, cudnnDataType_t dt, const int64_t *dims, const int64_t *str, int64_t uid, cdesc ragged,
                       bool by_value, const char *what) {
    cdesc t = gb_new(b, CUDNN_BACKEND_TENSOR_DESCRIPTOR, what);
    bool virt = uid == 0, byv = by_value;
    if (virt) uid = b->next_uid++;
    int64_t align = 16;
    gb_set(b, t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, what);
    gb_set(b, t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt, what);
    gb_set(b, t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims, what);
    gb_set(b, t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, str, what);
    gb_set(b, t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align, what);
    gb_set(b, t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt, what);
    if (byv) gb_set(b, t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &byv, what);
    if (ragged) gb_set(b, t, CUDNN_ATTR_TENSOR_RAGGED_OFFSET_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &ragged, what);
    gb_fin(b, t, what);
    return t;
}

static cdesc gb_virtual(gbuild *b, cudnnDataType_t dt, const int64_t *dims, const int64_t *str, const char *what) {
    return gb_tensor(b, dt, dims, str, 0, NULL, false, what);
}

static void gb_op(gbuild *b, cdesc op, const char *what) {
    gb_fin(b, op, what);
    if (b->st) return;
    if (b->nops == SDPA_OPS) {
        b->st = dspy_fail(DSPY_ERR_BACKEND, "cuda cudnn attention: %s: more than %d operations", what, SDPA_OPS);
        return;
    }
    b->ops[b->nops++] = op;
}

/* y = mode(x, b, t) (b, t optional); axis >= 0 for GEN_INDEX. */
static void gb_pw(gbuild *b, cudnnPointwiseMode_t mode, cudnnDataType_t prec, cdesc x, cdesc bb, cdesc t, cdesc y,
                  int64_t axis, const char *what) {
    cdesc pw = gb_new(b, CUDNN_BACKEND_POINTWISE_DESCRIPTOR, what);
    gb_set(b, pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, what);
    gb_set(b, pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec, what);
    if (axis >= 0) gb_set(b, pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, what);
    gb_fin(b, pw, what);
    cdesc op = gb_new(b, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, what);
    gb_set(b, op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw, what);
    gb_set(b, op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, what);
    if (bb) gb_set(b, op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &bb, what);
    if (t) gb_set(b, op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t, what);
    gb_set(b, op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, what);
    gb_op(b, op, what);
}

/* c = a b, F32 accumulation; m/n/k overrides: per-batch GEMM sizes (the example lengths). */
static void gb_matmul(gbuild *b, cdesc a, cdesc bm, cdesc c, cdesc m, cdesc n, cdesc k, bool padded, const char *what) {
    cdesc mm = gb_new(b, CUDNN_BACKEND_MATMUL_DESCRIPTOR, what);
    cudnnDataType_t f = CUDNN_DATA_FLOAT;
    double pad = 0.0;
    gb_set(b, mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f, what);
    if (padded) gb_set(b, mm, CUDNN_ATTR_MATMUL_PADDING_VALUE, CUDNN_TYPE_DOUBLE, 1, &pad, what);
    gb_fin(b, mm, what);
    cdesc op = gb_new(b, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, what);
    gb_set(b, op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a, what);
    gb_set(b, op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &bm, what);
    gb_set(b, op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c, what);
    gb_set(b, op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm, what);
    if (m) gb_set(b, op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_M_OVERRIDE_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &m, what);
    if (n) gb_set(b, op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_N_OVERRIDE_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n, what);
    if (k) gb_set(b, op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_K_OVERRIDE_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &k, what);
    gb_op(b, op, what);
}

static void gb_reduce(gbuild *b, cudnnReduceTensorOp_t mode, cdesc x, cdesc y, const char *what) {
    cdesc r = gb_new(b, CUDNN_BACKEND_REDUCTION_DESCRIPTOR, what);
    cudnnDataType_t f = CUDNN_DATA_FLOAT;
    gb_set(b, r, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode, what);
    gb_set(b, r, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f, what);
    gb_fin(b, r, what);
    cdesc op = gb_new(b, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, what);
    gb_set(b, op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, what);
    gb_set(b, op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, what);
    gb_set(b, op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &r, what);
    gb_op(b, op, what);
}

static void gb_reshape(gbuild *b, cdesc x, cdesc y, const char *what) {
    cdesc op = gb_new(b, CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, what);
    gb_set(b, op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, what);
    gb_set(b, op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, what);
    gb_op(b, op, what);
}

/* The tensors both graphs share and the masked, scaled scores of both:
 * s = select(select(Q K^T scale, padding), causal), (B, NH, S, S) F32. */
struct gcommon {
    cdesc q, kt, v, seq_q, seq_kv, rq, rkv, rs, scale, neg_inf, stats;
    int64_t sdim[4], sstr[4], rdim[4], rstr[4];
};

static void gb_common(gbuild *b, gcommon *m, bool vt) {
    const sdpa_graph *g = b->g;
    const int64_t B = g->B, S = g->S, Skv = g->Skv, NH = g->NH, NKV = g->NKV, HS = g->HS;
    const int64_t one4[4] = {1, 1, 1, 1}, odim[4] = {B + 1, 1, 1, 1}, ldim[4] = {B, 1, 1, 1};
    m->rq = gb_tensor(b, CUDNN_DATA_INT64, odim, one4, U_RQ, NULL, false, "ragged offsets q");
    m->rkv = gb_tensor(b, CUDNN_DATA_INT64, odim, one4, U_RKV, NULL, false, "ragged offsets kv");
    m->rs = gb_tensor(b, CUDNN_DATA_INT64, odim, one4, U_RS, NULL, false, "ragged offsets stats");
    m->seq_q = gb_tensor(b, CUDNN_DATA_INT32, ldim, one4, U_SEQ_Q, NULL, false, "lengths q");
    m->seq_kv = gb_tensor(b, CUDNN_DATA_INT32, ldim, one4, U_SEQ_KV, NULL, false, "lengths kv");
    m->scale = gb_tensor(b, CUDNN_DATA_FLOAT, one4, one4, U_SCALE, NULL, true, "scale");
    m->neg_inf = gb_tensor(b, CUDNN_DATA_FLOAT, one4, one4, U_NEGINF, NULL, true, "-inf");
    const int64_t qd[4] = {B, NH, S, HS}, qs[4] = {S * NH * HS, HS, NH * HS, 1};
    const int64_t ktd[4] = {B, NKV, HS, Skv}, kts[4] = {Skv * NKV * HS, HS, 1, NKV * HS};
    const int64_t vd[4] = {B, NKV, Skv, HS}, vs[4] = {Skv * NKV * HS, HS, NKV * HS, 1};
    const int64_t sd[4] = {B, NH, S, 1}, ss[4] = {S * NH, 1, NH, 1};
    m->q = gb_tensor(b, CUDNN_DATA_BFLOAT16, qd, qs, U_Q, m->rq, false, "q");
    m->kt = gb_tensor(b, CUDNN_DATA_BFLOAT16, ktd, kts, U_K, m->rkv, false, "k");
    /* the backward reads V transposed (dP = dO V^T), the forward as it is (O = P V) */
    m->v = vt ? gb_tensor(b, CUDNN_DATA_BFLOAT16, ktd, kts, U_V, m->rkv, false, "v")
              : gb_tensor(b, CUDNN_DATA_BFLOAT16, vd, vs, U_V, m->rkv, false, "v");
    m->stats = gb_tensor(b, CUDNN_DATA_FLOAT, sd, ss, U_STATS, m->rs, false, "stats");
    const int64_t sdim[4] = {B, NH, S, Skv}, sstr[4] = {NH * S * Skv, S * Skv, Skv, 1};
    const int64_t rdim[4] = {B, NH, S, 1}, rstr[4] = {NH * S, S, 1, 1};
    memcpy(m->sdim, sdim, sizeof sdim), memcpy(m->sstr, sstr, sizeof sstr);
    memcpy(m->rdim, rdim, sizeof rdim), memcpy(m->rstr, rstr, sizeof rstr);
}

/* Q K^T scale under the padding mask; returns the scores before the causal mask. */
static cdesc gb_scores(gbuild *b, gcommon *m, bool padded_mm) {
    cdesc s0 = gb_virtual(b, CUDNN_DATA_FLOAT, m->sdim, m->sstr, "S");
    gb_matmul(b, m->q, m->kt, s0, m->seq_q, m->seq_kv, NULL, padded_mm, "Q K^T");
    cdesc s1 = gb_virtual(b, CUDNN_DATA_FLOAT, m->sdim, m->sstr, "S scaled");
    gb_pw(b, CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, s0, m->scale, NULL, s1, -1, "S scale");
    cdesc ri = gb_virtual(b, CUDNN_DATA_INT32, m->sdim, m->sstr, "padding rows");
    cdesc ci = gb_virtual(b, CUDNN_DATA_INT32, m->sdim, m->sstr, "padding cols");
    gb_pw(b, CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, s1, NULL, NULL, ri, 2, "padding row index");
    gb_pw(b, CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, s1, NULL, NULL, ci, 3, "padding col index");
    cdesc rm = gb_virtual(b, CUDNN_DATA_BOOLEAN, m->sdim, m->sstr, "row < len");
    cdesc cm = gb_virtual(b, CUDNN_DATA_BOOLEAN, m->sdim, m->sstr, "col < len");
    cdesc pm = gb_virtual(b, CUDNN_DATA_BOOLEAN, m->sdim, m->sstr, "padding mask");
    gb_pw(b, CUDNN_POINTWISE_CMP_LT, CUDNN_DATA_BOOLEAN, ri, m->seq_q, NULL, rm, -1, "row < len");
    gb_pw(b, CUDNN_POINTWISE_CMP_LT, CUDNN_DATA_BOOLEAN, ci, m->seq_kv, NULL, cm, -1, "col < len");
    gb_pw(b, CUDNN_POINTWISE_LOGICAL_AND, CUDNN_DATA_BOOLEAN, rm, cm, NULL, pm, -1, "padding and");
    cdesc s2 = gb_virtual(b, CUDNN_DATA_FLOAT, m->sdim, m->sstr, "S padded");
    gb_pw(b, CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, s1, m->neg_inf, pm, s2, -1, "padding select");
    return s2;
}

/* select(x, -inf, row >= col): the causal mask. */
static cdesc gb_causal(gbuild *b, gcommon *m, cdesc x) {
    cdesc ri = gb_virtual(b, CUDNN_DATA_INT32, m->sdim, m->sstr, "causal rows");
    cdesc ci = gb_virtual(b, CUDNN_DATA_INT32, m->sdim, m->sstr, "causal cols");
    gb_pw(b, CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_FLOAT, x, NULL, NULL, ri, 2, "causal row index");
    gb_pw(b, CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_FLOAT, x, NULL, NULL, ci, 3, "causal col index");
    cdesc c = gb_virtual(b, CUDNN_DATA_BOOLEAN, m->sdim, m->sstr, "row >= col");
    gb_pw(b, CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, ri, ci, NULL, c, -1, "row >= col");
    cdesc y = gb_virtual(b, CUDNN_DATA_FLOAT, m->sdim, m->sstr, "S causal");
    gb_pw(b, CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, x, m->neg_inf, c, y, -1, "causal select");
    return y;
}

static void gb_forward(gbuild *b) {
    const sdpa_graph *g = b->g;
    const int64_t B = g->B, S = g->S, NH = g->NH, HS = g->HS;
    gcommon m;
    gb_common(b, &m, false);
    cdesc s = gb_scores(b, &m, true);
    if (g->causal) s = gb_causal(b, &m, s);
    cdesc mx = gb_virtual(b, CUDNN_DATA_FLOAT, m.rdim, m.rstr, "row max");
    gb_reduce(b, CUDNN_REDUCE_TENSOR_MAX, s, mx, "row max");
    cdesc sub = gb_virtual(b, CUDNN_DATA_FLOAT, m.sdim, m.sstr, "S - max");
    gb_pw(b, CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, s, mx, NULL, sub, -1, "S - max");
    cdesc e = gb_virtual(b, CUDNN_DATA_FLOAT, m.sdim, m.sstr, "exp");
    gb_pw(b, CUDNN_POINTWISE_EXP, CUDNN_DATA_FLOAT, sub, NULL, NULL, e, -1, "exp");
    cdesc z = gb_virtual(b, CUDNN_DATA_FLOAT, m.rdim, m.rstr, "row sum");
    gb_reduce(b, CUDNN_REDUCE_TENSOR_ADD, e, z, "row sum");
    cdesc lz = gb_virtual(b, CUDNN_DATA_FLOAT, m.rdim, m.rstr, "log sum");
    gb_pw(b, CUDNN_POINTWISE_LOG, CUDNN_DATA_FLOAT, z, NULL, NULL, lz, -1, "log sum");
    gb_pw(b, CUDNN_POINTWISE_ADD, CUDNN_DATA_FLOAT, mx, lz, NULL, m.stats, -1, "stats");
    cdesc p = gb_virtual(b, CUDNN_DATA_BFLOAT16, m.sdim, m.sstr, "P");
    gb_pw(b, CUDNN_POINTWISE_DIV, CUDNN_DATA_FLOAT, e, z, NULL, p, -1, "P");
    const int64_t od[4] = {B, NH, S, HS}, os[4] = {S * NH * HS, HS, NH * HS, 1};
    cdesc o = gb_tensor(b, CUDNN_DATA_BFLOAT16, od, os, U_O, m.rq, false, "o");
    gb_matmul(b, p, m.v, o, m.seq_q, NULL, m.seq_kv, false, "P V");
}

static void gb_backward(gbuild *b) {
    const sdpa_graph *g = b->g;
    const int64_t B = g->B, S = g->S, Skv = g->Skv, NH = g->NH, NKV = g->NKV, HS = g->HS, grp = NH / NKV;
    gcommon m;
    gb_common(b, &m, true);
    const int64_t qd[4] = {B, NH, S, HS}, qs[4] = {S * NH * HS, HS, NH * HS, 1};
    const int64_t kd[4] = {B, NKV, Skv, HS}, ks[4] = {Skv * NKV * HS, HS, NKV * HS, 1};
    /* full-head dK, dV: THD over NH heads */
    const int64_t fd[4] = {B, NH, Skv, HS}, fs[4] = {Skv * NH * HS, HS, NH * HS, 1};
    const int64_t one4[4] = {1, 1, 1, 1};
    const cudnnDataType_t kvt = g->wide && grp > 1 ? CUDNN_DATA_FLOAT : CUDNN_DATA_BFLOAT16;
    cdesc o = gb_tensor(b, CUDNN_DATA_BFLOAT16, qd, qs, U_O, m.rq, false, "o");
    cdesc dO = gb_tensor(b, CUDNN_DATA_BFLOAT16, qd, qs, U_DO, m.rq, false, "dO");
    cdesc dq = gb_tensor(b, CUDNN_DATA_BFLOAT16, qd, qs, U_DQ, m.rq, false, "dQ");
    cdesc dk = gb_tensor(b, kvt, kd, ks, U_DK, m.rkv, false, "dK");
    cdesc dv = gb_tensor(b, kvt, kd, ks, U_DV, m.rkv, false, "dV");
    cdesc one = gb_tensor(b, CUDNN_DATA_FLOAT, one4, one4, U_ONE, NULL, true, "one");
    /* D = rowsum(dO * O), stored (cuDNN reads it per key tile) */
    const int64_t ts[4] = {NH * S * HS, S * HS, NH * HS, 1};
    cdesc t = gb_virtual(b, CUDNN_DATA_FLOAT, qd, ts, "dO * O");
    gb_pw(b, CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, dO, o, NULL, t, -1, "dO * O");
    cdesc d0 = gb_virtual(b, CUDNN_DATA_FLOAT, m.rdim, m.rstr, "D");
    gb_reduce(b, CUDNN_REDUCE_TENSOR_ADD, t, d0, "D");
    const int64_t sd[4] = {B, NH, S, 1}, ss[4] = {S * NH, 1, NH, 1};
    cdesc dsum = gb_tensor(b, CUDNN_DATA_FLOAT, sd, ss, U_DSUM, m.rs, false, "D stored");
    gb_pw(b, CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, d0, one, NULL, dsum, -1, "D stored");
    /* P = exp(S scale - Stats) under the masks */
    cdesc s = gb_scores(b, &m, false);
    cdesc sl = gb_virtual(b, CUDNN_DATA_FLOAT, m.sdim, m.sstr, "S - stats");
    gb_pw(b, CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, s, m.stats, NULL, sl, -1, "S - stats");
    cdesc sc = g->causal ? gb_causal(b, &m, sl) : sl;
    cdesc p = gb_virtual(b, CUDNN_DATA_FLOAT, m.sdim, m.sstr, "P");
    gb_pw(b, CUDNN_POINTWISE_EXP, CUDNN_DATA_FLOAT, sc, NULL, NULL, p, -1, "P");
    const int64_t tsd[4] = {B, NH, Skv, S}, tss[4] = {NH * S * Skv, S * Skv, 1, Skv};
    cdesc pt = gb_virtual(b, CUDNN_DATA_BFLOAT16, tsd, tss, "P^T");
    gb_reshape(b, p, pt, "P^T");
    /* dV = P^T dO (summed over the KV head's query heads under GQA) */
    if (grp == 1) {
        gb_matmul(b, pt, dO, dv, m.seq_kv, NULL, m.seq_q, false, "P^T dO");
    } else {
        cdesc dvf = gb_tensor(b, CUDNN_DATA_BFLOAT16, fd, fs, U_DVF, m.rkv, false, "dV full heads");
        gb_matmul(b, pt, dO, dvf, m.seq_kv, NULL, m.seq_q, false, "P^T dO");
        gb_reduce(b, CUDNN_REDUCE_TENSOR_ADD, dvf, dv, "dV head sum");
    }
    /* dS = P (dO V^T - D) scale */
    cdesc dp = gb_virtual(b, CUDNN_DATA_FLOAT, m.sdim, m.sstr, "dP");
    gb_matmul(b, dO, m.v, dp, m.seq_q, m.seq_kv, NULL, false, "dO V^T");
    cdesc dp1 = gb_virtual(b, CUDNN_DATA_FLOAT, m.sdim, m.sstr, "dP - D");
    gb_pw(b, CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, dp, dsum, NULL, dp1, -1, "dP - D");
    cdesc dp2 = gb_virtual(b, CUDNN_DATA_FLOAT, m.sdim, m.sstr, "P (dP - D)");
    gb_pw(b, CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, dp1, p, NULL, dp2, -1, "P (dP - D)");
    cdesc ds = gb_virtual(b, CUDNN_DATA_FLOAT, m.sdim, m.sstr, "dS");
    gb_pw(b, CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, dp2, m.scale, NULL, ds, -1, "dS");
    cdesc dst = gb_virtual(b, CUDNN_DATA_BFLOAT16, tsd, tss, "dS^T");
    gb_reshape(b, ds, dst, "dS^T");
    /* dK = dS^T Q */
    if (grp == 1) {
        gb_matmul(b, dst, m.q, dk, m.seq_kv, NULL, m.seq_q, false, "dS^T Q");
    } else {
        cdesc dkf = gb_tensor(b, CUDNN_DATA_BFLOAT16, fd, fs, U_DKF, m.rkv, false, "dK full heads");
        gb_matmul(b, dst, m.q, dkf, m.seq_kv, NULL, m.seq_q, false, "dS^T Q");
        gb_reduce(b, CUDNN_REDUCE_TENSOR_ADD, dkf, dk, "dK head sum");
    }
    /* dQ = dS K, accumulated in F32 (dQ_accum, scratch), then BF16 */
    const int64_t krd[4] = {B, NKV, Skv, HS};
    cdesc kr = gb_tensor(b, CUDNN_DATA_BFLOAT16, krd, ks, 0, m.rkv, false, "K");
    gb_reshape(b, m.kt, kr, "K");
    cdesc dqa = gb_tensor(b, CUDNN_DATA_FLOAT, qd, qs, U_DQACC, m.rq, false, "dQ accumulator");
    gb_matmul(b, ds, kr, dqa, m.seq_q, NULL, m.seq_kv, false, "dS K");
    gb_pw(b, CUDNN_POINTWISE_IDENTITY, CUDNN_DATA_FLOAT, dqa, NULL, NULL, dq, -1, "dQ");
}

static void graph_drop(cu_sdpa *c, sdpa_graph *g) {
    for (int i = g->nall - 1; i >= 0; i--) c->api.destroy_desc(g->all[i]);
    memset(g, 0, sizeof *g);
}

/* The operation graph of b, the heuristics' engine configurations tried in order: the first
 * that finalizes is the plan. */
static dspy_status graph_plan(gbuild *b) {
    cu_sdpa *c = b->c;
    sdpa_graph *g = b->g;
    cdesc og = gb_new(b, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "operation graph");
    gb_set(b, og, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, b->nops, b->ops, "operation graph");
    /* the handle attributes are marked deprecated in cuDNN 9 headers but are still how a
     * graph and a plan learn their handle: set by value to keep the build warning-free */
    gb_set(b, og, (cudnnBackendAttributeName_t)800 /* OPERATIONGRAPH_HANDLE */, CUDNN_TYPE_HANDLE, 1, &c->h,
           "operation graph");
    gb_fin(b, og, "operation graph");
    cdesc heur = gb_new(b, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, "heuristics");
    cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    gb_set(b, heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &og, "heuristics");
    gb_set(b, heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "heuristics");
    gb_fin(b, heur, "heuristics");
    if (b->st) return b->st;
    int64_t n = 0;
    cudnnStatus_t st = c->api.get_attr(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &n, NULL);
    if (st) return sdpa_fail(c, st, "heuristics results");
    if (n <= 0) return dspy_fail(DSPY_ERR_BACKEND, "cuda cudnn attention: no engine takes this graph");
    if (n > 8) n = 8;
    cdesc cfg[8];
    for (int64_t i = 0; i < n; i++) cfg[i] = gb_new(b, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine config");
    if (b->st) return b->st;
    int64_t got = 0;
    st = c->api.get_attr(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, n, &got, cfg);
    if (st) return sdpa_fail(c, st, "heuristics results");
    dspy_status last = dspy_fail(DSPY_ERR_BACKEND, "cuda cudnn attention: no engine configuration finalizes");
    for (int64_t i = 0; i < got; i++) {
        cdesc plan = gb_new(b, CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, "execution plan");
        gb_set(b, plan, (cudnnBackendAttributeName_t)400 /* EXECUTION_PLAN_HANDLE */, CUDNN_TYPE_HANDLE, 1, &c->h,
               "execution plan");
        gb_set(b, plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg[i],
               "execution plan");
        if (b->st) return b->st;
        st = c->api.finalize(plan);
        if (st) {
            char what[64];
            snprintf(what, sizeof what, "execution plan (engine configuration %d of %d)", (int)i + 1, (int)got);
            last = sdpa_fail(c, st, what);
            continue;
        }
        int64_t ws = 0, cnt = 0;
        st = c->api.get_attr(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &cnt, &ws);
        if (st) return sdpa_fail(c, st, "workspace size");
        g->plan = plan, g->ws = ws;
        return DSPY_OK;
    }
    return last;
}

/* Builds and plans the graph for the key: the backward under GQA with F32 dK, dV first, then
 * (and everything else) with BF16 outputs. */
static dspy_status graph_build(cu_sdpa *c, sdpa_graph *g, bool bwd, bool causal, int B, int S, int Skv, int NH,
                               int NKV, int HS) {
    dspy_status st = DSPY_OK;
    char first[400] = ""; /* the F32 attempt's failure, said with the BF16 one's */
    for (int wide = bwd && NH > NKV; wide >= 0; wide--) {
        graph_drop(c, g);
        g->bwd = bwd, g->wide = wide, g->causal = causal, g->B = B, g->S = S, g->Skv = Skv, g->NH = NH, g->NKV = NKV;
        g->HS = HS;
        g->scale = (float)(1.0 / sqrt((double)HS)), g->neg_inf = -INFINITY, g->one = 1.0f;
        gbuild b = {};
        b.c = c, b.g = g, b.next_uid = U_VIRTUAL;
        if (bwd) gb_backward(&b);
        else gb_forward(&b);
        st = b.st ? b.st : graph_plan(&b);
        if (!st) {
            g->used = true;
            return DSPY_OK;
        }
        if (wide) snprintf(first, sizeof first, "%s", dspy_errmsg());
    }
    graph_drop(c, g);
    char second[400];
    snprintf(second, sizeof second, "%s", dspy_errmsg()); /* dspy_fail writes the message buffer */
    return dspy_fail(st, "cuda cudnn attention: the %s%s graph (B=%d S=%d Skv=%d NH=%d NKV=%d HS=%d) has no "
                     "plan%s%s%s: %s", causal ? "" : "cross-attention ", bwd ? "backward" : "forward", B, S, Skv, NH, NKV, HS,
                     first[0] ? "; with F32 dK, dV: " : "", first, first[0] ? "; with BF16 outputs" : "", second);
}

/* The cached graph for the key, built at first use. */
static dspy_status graph_find(dspy_backend *be, cu_sdpa *c, bool bwd, bool causal, int B, int S, int Skv, int NH,
                              int NKV, int HS, sdpa_graph **out) {
    sdpa_graph *free_g = NULL, *oldest = &c->g[0];
    for (int i = 0; i < SDPA_CACHE; i++) {
        sdpa_graph *g = &c->g[i];
        if (g->used && g->bwd == bwd && g->causal == causal && g->B == B && g->S == S && g->Skv == Skv &&
            g->NH == NH && g->NKV == NKV && g->HS == HS) {
            g->last_use = ++c->clock;
            *out = g;
            return DSPY_OK;
        }
        if (!g->used && !free_g) free_g = g;
        if (g->used && g->last_use < oldest->last_use) oldest = g;
    }
    sdpa_graph *g = free_g ? free_g : oldest;
    if (cu_of(be)->capturing)
        return dspy_fail(DSPY_ERR_STATE, "cuda cudnn attention: a new graph (B=%d S=%d) is needed inside a capture; "
                                         "run the shape once before capturing", B, S);
    dspy_status st = graph_build(c, g, bwd, causal, B, S, Skv, NH, NKV, HS);
    sdpa_debug(st ? "no plan for" : bwd ? "planned backward" : "planned forward", B, S, st ? 0 : (long long)g->ws);
    g->last_use = ++c->clock;
    if (st && !c->required) { /* remembered: the own kernels take this key from now on */
        g->used = g->refused = true, g->bwd = bwd, g->causal = causal, g->B = B, g->S = S, g->Skv = Skv, g->NH = NH;
        g->NKV = NKV, g->HS = HS;
        *out = g;
        return DSPY_OK;
    }
    if (st) return st;
    if ((size_t)g->ws > c->ws_bytes) { /* the fused engines ask for little or none; grown once */
        void *nw = NULL;
        DSPY_TRY(dspy_cu_check(be, cudaMalloc(&nw, (size_t)g->ws), "cudnn attention workspace"));
        be->n_allocs++;
        cudaFree(c->ws);
        c->ws = nw, c->ws_bytes = (size_t)g->ws;
    }
    *out = g;
    return DSPY_OK;
}

/* The layout's graph (causal, its examples and longest). */
static dspy_status graph_get(dspy_backend *be, cu_sdpa *c, bool bwd, int NH, int NKV, int HS, sdpa_graph **out) {
    return graph_find(be, c, bwd, true, c->nseg, c->S, c->S, NH, NKV, HS, out);
}

/* Runs g's plan with the tensors of ids[n] at ptrs[n]. */
static dspy_status graph_run(dspy_backend *be, cu_sdpa *c, sdpa_graph *g, const int64_t *ids, void *const *ptrs, int n,
                             const char *what) {
    cdesc vp = NULL;
    cudnnStatus_t st = c->api.create_desc(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp);
    void *ws = c->ws;
    if (!st) st = c->api.set_attr(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, ids);
    if (!st) st = c->api.set_attr(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs);
    if (!st) st = c->api.set_attr(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
    if (!st) st = c->api.finalize(vp);
    if (!st) st = c->api.execute(c->h, g->plan, vp);
    if (vp) c->api.destroy_desc(vp);
    if (!st) return DSPY_OK;
    dspy_status e = sdpa_fail(c, st, what);
    char msg[480];
    snprintf(msg, sizeof msg, "%s", dspy_errmsg());
    return dspy_cu_fail(be, e, "%s", msg);
}

/* ---- layout and conversion kernels ------------------------------------------------------- */

/* One block: the example starts (start[t] == t opens an example) in order, their lengths, and
 * the longest; seg holds (cap + 1) starts then (cap) lengths. */
static __global__ void k_sdpa_layout(int32_t *seg, const int32_t *start, int T, int cap) {
    __shared__ int counts[1024];
    griddep_wait();
    const int per = (T + blockDim.x - 1) / blockDim.x, t0 = threadIdx.x * per;
    int n = 0;
    for (int t = t0; t < t0 + per && t < T; t++) n += start[t] == t;
    counts[threadIdx.x] = n;
    __syncthreads();
    for (int o = 1; o < (int)blockDim.x; o <<= 1) { /* inclusive scan */
        int v = threadIdx.x >= (unsigned)o ? counts[threadIdx.x - o] : 0;
        __syncthreads();
        counts[threadIdx.x] += v;
        __syncthreads();
    }
    int idx = counts[threadIdx.x] - n, total = counts[blockDim.x - 1];
    for (int t = t0; t < t0 + per && t < T; t++)
        if (start[t] == t && idx < cap) seg[idx++] = t;
    __syncthreads();
    const int nseg = total < cap ? total : cap;
    if (threadIdx.x == 0) seg[nseg] = T;
    __syncthreads();
    for (int b = threadIdx.x; b < nseg; b += blockDim.x) seg[cap + 1 + b] = seg[b + 1] - seg[b];
}

/* off (3, nseg + 1): the example starts times NH x HS, NKV x HS, NH. */
static __global__ void k_sdpa_offsets(int64_t *off, const int32_t *seg, int nseg, int cap, int NH, int NKV, int HS) {
    griddep_wait();
    for (int b = threadIdx.x + blockIdx.x * blockDim.x; b <= nseg; b += blockDim.x * gridDim.x) {
        int64_t s0 = seg[b];
        off[b] = s0 * NH * HS, off[cap + 1 + b] = s0 * NKV * HS, off[2 * (cap + 1) + b] = s0 * NH;
    }
}

static __global__ void k_sdpa_widen(float *dst, const bf16 *src, int64_t n) {
    griddep_wait();
    for (int64_t i = threadIdx.x + (int64_t)blockIdx.x * blockDim.x; i < n; i += (int64_t)blockDim.x * gridDim.x)
        dst[i] = __bfloat162float(src[i]);
}

static __global__ void k_sdpa_narrow(bf16 *dst, const float *src, int64_t n) {
    griddep_wait();
    for (int64_t i = threadIdx.x + (int64_t)blockIdx.x * blockDim.x; i < n; i += (int64_t)blockDim.x * gridDim.x)
        dst[i] = __float2bfloat16(src[i]);
}

static __global__ void k_sdpa_narrow2(bf16 *d1, const float *s1, bf16 *d2, const float *s2, int64_t n) {
    griddep_wait();
    for (int64_t i = threadIdx.x + (int64_t)blockIdx.x * blockDim.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        d1[i] = __float2bfloat16(s1[i]);
        d2[i] = __float2bfloat16(s2[i]);
    }
}

/* ---- the entries ------------------------------------------------------------------------- */

/* The scratch for T rows at the backend plan's NH and HS (grown, never shrunk). */
static dspy_status sdpa_reserve(dspy_backend *be, cu_sdpa *c, int T) {
    const dspy_backend_plan *p = &be->plan;
    size_t rows = (size_t)T, nh = (size_t)(p->NH > 0 ? p->NH : 1);
    size_t width = nh * (size_t)(p->HS > 0 ? p->HS : 1);
    if (c->b16 && rows <= c->rows && width <= c->width && nh <= (size_t)c->NH) return DSPY_OK;
    if (rows < c->rows) rows = c->rows;
    if (width < c->width) width = c->width;
    if (nh < (size_t)c->NH) nh = (size_t)c->NH;
    uint16_t *b16 = NULL;
    float *f32 = NULL;
    int32_t *seg = NULL;
    int64_t *off = NULL;
    /* BF16: O, dO, dQ (rows x width each), dK, dV (at most rows x width each) */
    const char *what = "cudnn attention scratch";
    dspy_status st = dspy_cu_check(be, cudaMalloc((void **)&b16, 5 * rows * width * sizeof(uint16_t)), what);
    /* F32: D (rows x NH), the full-head dK and dV, dQ's accumulator (rows x width each) */
    if (!st) st = dspy_cu_check(be, cudaMalloc((void **)&f32, (rows * nh + 3 * rows * width) * sizeof(float)), what);
    if (!st) st = dspy_cu_check(be, cudaMalloc((void **)&seg, (2 * rows + 1) * sizeof(int32_t)), what);
    if (!st) st = dspy_cu_check(be, cudaMalloc((void **)&off, 3 * (rows + 1) * sizeof(int64_t)), what);
    if (st) {
        cudaFree(b16), cudaFree(f32), cudaFree(seg), cudaFree(off);
        return st;
    }
    be->n_allocs += 4;
    cudaFree(c->b16), cudaFree(c->f32), cudaFree(c->seg), cudaFree(c->off);
    c->b16 = b16, c->f32 = f32, c->seg = seg, c->off = off;
    c->rows = rows, c->width = width, c->NH = (int)nh, c->cap = (int)rows;
    c->start = NULL; /* a layout refers to the old arrays */
    return DSPY_OK;
}

dspy_status dspy_cu_sdpa_layout(dspy_backend *be, dspy_tensor start, int T, int nseg, int max_len) {
    CU_ENTER(be);
    cu_sdpa *c = sdpa_of(be);
    const char *env = getenv("DSPY_CUDA_CUDNN_ATTN");
    if (c) c->required = env && strcmp(env, "1") == 0;
    if (!c && env && strcmp(env, "1") == 0) /* required: say why it cannot be used */
        return dspy_fail(DSPY_ERR_BACKEND, "cuda attention_train_layout: DSPY_CUDA_CUDNN_ATTN=1 but cuDNN cannot be "
                                           "used: %s", cu_of(be)->sdpa ? cu_of(be)->sdpa->why : "out of memory");
    if (!c) return DSPY_OK; /* the own kernels need no layout */
    if (!start.data) { /* the planning form: scratch for T rows, before any step; T 0 forgets the layout */
        c->start = NULL;
        if (T == 0) return DSPY_OK;
        if (T < 0) return dspy_fail(DSPY_ERR_ARG, "cuda attention_train_layout: planning for T=%d rows", T);
        if (cu_of(be)->capturing)
            return dspy_fail(DSPY_ERR_STATE, "cuda attention_train_layout: planning inside a capture");
        return sdpa_reserve(be, c, T);
    }
    CU_NEED("attention_train_layout", "start", start, DSPY_DTYPE_I32, T);
    if (T < 1 || nseg < 1 || nseg > T || max_len < 1 || max_len > T)
        return dspy_fail(DSPY_ERR_ARG, "cuda attention_train_layout: T=%d nseg=%d max_len=%d: need 1 <= nseg <= T "
                                       "and 1 <= max_len <= T", T, nseg, max_len);
    c->start = NULL;
    if (!c->b16 || (size_t)T > c->rows) return DSPY_OK; /* not planned for T rows: the own kernels run */
    DSPY_TRY(cu_launch(be, "attention_train_layout", k_sdpa_layout, 1, 1024, 0, c->seg, (const int32_t *)start.data, T,
                       c->cap));
    c->start = start.data, c->T = T, c->nseg = nseg;
    c->S = (max_len + SDPA_SROUND - 1) / SDPA_SROUND * SDPA_SROUND;
    c->heads[0] = c->heads[1] = c->heads[2] = 0;
    c->xkey[0] = 0;
    return DSPY_OK;
}

/* The offsets for these heads (once per layout). */
static dspy_status sdpa_heads(dspy_backend *be, cu_sdpa *c, int NH, int NKV, int HS) {
    if (c->heads[0] == NH && c->heads[1] == NKV && c->heads[2] == HS) return DSPY_OK;
    if ((size_t)NH * HS > c->width || NH > c->NH)
        return dspy_fail(DSPY_ERR_ARG, "cuda cudnn attention: NH=%d x HS=%d exceed the planned scratch (%d heads, "
                                       "width %zu; plan NH and HS with dspy_backend_reserve)", NH, HS, c->NH, c->width);
    DSPY_TRY(cu_launch(be, "cudnn attention offsets", k_sdpa_offsets, cu_blocks(c->nseg + 1, 256), 256, 0, c->off,
                       (const int32_t *)c->seg, c->nseg, c->cap, NH, NKV, HS));
    c->heads[0] = NH, c->heads[1] = NKV, c->heads[2] = HS;
    return DSPY_OK;
}

dspy_status dspy_cu_sdpa_route(dspy_backend *be, bool bwd, const void *start, int prefix, int T, int NH, int NKV,
                               int HS, const void *const *ptrs, int n, bool *take) {
    *take = false;
    cuda_state *s = cu_of(be);
    cu_sdpa *c = s->sdpa;
    if (!c || !c->loaded || c->disabled || !c->start || c->start != start || c->T != T) return DSPY_OK;
    if (prefix != 0 || (HS != 64 && HS != 128)) return DSPY_OK;
    if (!c->required && T < SDPA_MIN_MEAN * c->nseg) return DSPY_OK; /* short examples: the own kernels are faster */
    for (int i = 0; i < n; i++)
        if ((uintptr_t)ptrs[i] % 16) return DSPY_OK;
    sdpa_graph *g = NULL;
    DSPY_TRY(graph_get(be, c, bwd, NH, NKV, HS, &g));
    *take = !g->refused;
    return DSPY_OK;
}

dspy_status dspy_cu_sdpa_fwd(dspy_backend *be, void *out, bool out16, float *lse, const bf16 *q, const bf16 *k,
                             const bf16 *v, int T, int NH, int NKV, int HS) {
    cu_sdpa *c = cu_of(be)->sdpa;
    DSPY_TRY(sdpa_heads(be, c, NH, NKV, HS));
    sdpa_graph *g = NULL;
    DSPY_TRY(graph_get(be, c, false, NH, NKV, HS, &g));
    const int64_t n = (int64_t)T * NH * HS;
    bf16 *o16 = out16 ? (bf16 *)out : (bf16 *)c->b16; /* BF16 out: cuDNN writes it, no widening */
    int64_t *rq = c->off, *rkv = c->off + c->cap + 1, *rs = c->off + 2 * (c->cap + 1);
    int32_t *len = c->seg + c->cap + 1;
    const int64_t ids[] = {U_Q, U_K, U_V, U_O, U_STATS, U_SEQ_Q, U_SEQ_KV, U_RQ, U_RKV, U_RS, U_SCALE, U_NEGINF};
    void *ptrs[] = {(void *)q, (void *)k, (void *)v, (void *)o16, lse, len, len, rq, rkv, rs,
                    &g->scale, &g->neg_inf};
    DSPY_TRY(graph_run(be, c, g, ids, ptrs, (int)(sizeof ids / sizeof ids[0]), "attention_train (cudnn forward)"));
    if (out16) return DSPY_OK;
    return cu_launch(be, "attention_train (cudnn out)", k_sdpa_widen, tr_grid(n), 256, 0, (float *)out,
                     (const bf16 *)o16, n);
}

/* dspy_cu_sdpa_bwd, and with k32, v32 (grad16 only) dspy_cu_sdpa_bwd_keep: a wide graph's F32 head
 * sums written there and left unrounded (*kept). */
static dspy_status sdpa_bwd_run(dspy_backend *be, void *dq, void *dk, void *dv, bool grad16, float *k32, float *v32,
                                bool *kept, const void *dout, bool dout16, const void *out, bool out16,
                                const float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int T, int NH, int NKV,
                                int HS) {
    cu_sdpa *c = cu_of(be)->sdpa;
    if (kept) *kept = false;
    DSPY_TRY(sdpa_heads(be, c, NH, NKV, HS));
    sdpa_graph *g = NULL;
    DSPY_TRY(graph_get(be, c, true, NH, NKV, HS, &g));
    const int64_t nq = (int64_t)T * NH * HS, nk = (int64_t)T * NKV * HS, slot = (int64_t)c->rows * c->width;
    bf16 *o16 = (bf16 *)c->b16, *do16 = o16 + slot, *dq16 = do16 + slot, *dk16 = dq16 + slot, *dv16 = dk16 + slot;
    float *dsum = c->f32, *dkf = dsum + c->rows * c->NH, *dvf = dkf + slot, *dqa = dvf + slot;
    /* F32 out holds BF16 values (the forward widened them): narrowing them again is exact; a
     * BF16 out is cuDNN's O itself, read in place, and a BF16 dout its dO */
    if (out16) o16 = (bf16 *)out;
    if (dout16) do16 = (bf16 *)dout;
    if (!out16 && !dout16)
        DSPY_TRY(cu_launch(be, "attention_train_backward (cudnn inputs)", k_sdpa_narrow2, tr_grid(nq), 256, 0, o16,
                           (const float *)out, do16, (const float *)dout, nq));
    else if (!out16)
        DSPY_TRY(cu_launch(be, "attention_train_backward (cudnn out)", k_sdpa_narrow, tr_grid(nq), 256, 0, o16,
                           (const float *)out, nq));
    else if (!dout16)
        DSPY_TRY(cu_launch(be, "attention_train_backward (cudnn dout)", k_sdpa_narrow, tr_grid(nq), 256, 0, do16,
                           (const float *)dout, nq));
    /* where cuDNN writes dQ, dK, dV: BF16 outputs (grad16) straight into dq, dk, dv, except the
     * F32 head sums of a wide graph, which go to the dK, dV scratch (its rows x width BF16 hold
     * the T x NKV x HS floats under GQA; or the caller's k32, v32) and are rounded into dk, dv after
     * (not for k32, v32); F32 outputs through the BF16 scratch, widened after, except a wide graph's
     * F32 dK, dV, written in place */
    float *sk = k32 ? k32 : (float *)dk16, *sv = v32 ? v32 : (float *)dv16;
    void *wq = grad16 ? dq : (void *)dq16;
    void *wk = g->wide ? (grad16 ? (void *)sk : dk) : grad16 ? dk : (void *)dk16;
    void *wv = g->wide ? (grad16 ? (void *)sv : dv) : grad16 ? dv : (void *)dv16;
    int64_t *rq = c->off, *rkv = c->off + c->cap + 1, *rs = c->off + 2 * (c->cap + 1);
    int32_t *len = c->seg + c->cap + 1;
    const int64_t ids[] = {U_Q,     U_K,   U_V,   U_O,   U_DO,  U_STATS,  U_DQ,   U_DK,   U_DV,   U_SEQ_Q,
                           U_SEQ_KV, U_RQ, U_RKV, U_RS, U_SCALE, U_NEGINF, U_ONE, U_DSUM, U_DQACC, U_DKF, U_DVF};
    void *ptrs[] = {(void *)q, (void *)k, (void *)v, o16, do16, (void *)lse, wq, wk, wv, len, len, rq, rkv, rs,
                    &g->scale, &g->neg_inf, &g->one, dsum, dqa, dkf, dvf};
    const int n = NH == NKV ? (int)(sizeof ids / sizeof ids[0]) - 2 : (int)(sizeof ids / sizeof ids[0]);
    DSPY_TRY(graph_run(be, c, g, ids, ptrs, n, "attention_train_backward (cudnn)"));
    if (grad16 && g->wide && k32) {
        *kept = true;
        return DSPY_OK;
    }
    if (grad16)
        return g->wide ? cu_launch(be, "attention_train_backward (cudnn dk, dv)", k_sdpa_narrow2, tr_grid(nk), 256, 0,
                                   (bf16 *)dk, (const float *)wk, (bf16 *)dv, (const float *)wv, nk)
                       : DSPY_OK;
    DSPY_TRY(cu_launch(be, "attention_train_backward (cudnn dq)", k_sdpa_widen, tr_grid(nq), 256, 0, (float *)dq,
                       (const bf16 *)dq16, nq));
    if (g->wide) return DSPY_OK;
    DSPY_TRY(cu_launch(be, "attention_train_backward (cudnn dk)", k_sdpa_widen, tr_grid(nk), 256, 0, (float *)dk,
                       (const bf16 *)dk16, nk));
    return cu_launch(be, "attention_train_backward (cudnn dv)", k_sdpa_widen, tr_grid(nk), 256, 0, (float *)dv,
                     (const bf16 *)dv16, nk);
}

dspy_status dspy_cu_sdpa_bwd(dspy_backend *be, void *dq, void *dk, void *dv, bool grad16, const void *dout,
                             bool dout16, const void *out, bool out16, const float *lse, const bf16 *q, const bf16 *k,
                             const bf16 *v, int T, int NH, int NKV, int HS) {
    return sdpa_bwd_run(be, dq, dk, dv, grad16, NULL, NULL, NULL, dout, dout16, out, out16, lse, q, k, v, T, NH, NKV,
                        HS);
}

dspy_status dspy_cu_sdpa_bwd_keep(dspy_backend *be, bf16 *dq, bf16 *dk, bf16 *dv, float *dk32, float *dv32,
                                  bool *kept, const bf16 *dout, const void *out, bool out16, const float *lse,
                                  const bf16 *q, const bf16 *k, const bf16 *v, int T, int NH, int NKV, int HS) {
    return sdpa_bwd_run(be, dq, dk, dv, true, dk32, dv32, kept, dout, true, out, out16, lse, q, k, v, T, NH, NKV, HS);
}

/* ---- the prefix cross-attention (train_attention_split.cu's part B) ------------------------ */

/* xlay for one batch of Sq query rows and Skv keys (SDPA_X_*). */
static __global__ void k_sdpa_xlayout(int64_t *x, int Sq, int Skv, int NH, int NKV, int HS) {
    griddep_wait();
    if (threadIdx.x) return;
    x[SDPA_X_RQ] = 0, x[SDPA_X_RQ + 1] = (int64_t)Sq * NH * HS;
    x[SDPA_X_RKV] = 0, x[SDPA_X_RKV + 1] = (int64_t)Skv * NKV * HS;
    x[SDPA_X_RS] = 0, x[SDPA_X_RS + 1] = (int64_t)Sq * NH;
    ((int32_t *)(x + SDPA_X_SEQ_Q))[0] = Sq;
    ((int32_t *)(x + SDPA_X_SEQ_KV))[0] = Skv;
}

/* The cross graph's key: query rows rounded up to SDPA_XROUND or to the planned rows rounded up to
 * SDPA_SROUND, the fewer (>= Sq either way: Sq <= rows), keys to SDPA_SROUND. */
static void sdpa_xkey(const cu_sdpa *c, int Sq, int Skv, int *S, int *Sk) {
    const int a = (Sq + SDPA_XROUND - 1) / SDPA_XROUND * SDPA_XROUND;
    const int b = (int)((c->rows + SDPA_SROUND - 1) / SDPA_SROUND * SDPA_SROUND);
    *S = a < b ? a : b;
    *Sk = (Skv + SDPA_SROUND - 1) / SDPA_SROUND * SDPA_SROUND;
}

/* The sizes checked against the planned scratch and the cross layout written for them (once per
 * layout and sizes). */
static dspy_status sdpa_xready(dspy_backend *be, cu_sdpa *c, const char *op, int Sq, int Skv, int NH, int NKV,
                               int HS) {
    if (Sq < 1 || Skv < 1 || (size_t)Sq > c->rows || (size_t)Skv > c->rows || (size_t)NH * HS > c->width ||
        NH > c->NH || !c->xlay)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: the cross-attention of %d rows to %d keys (NH=%d, HS=%d) exceeds "
                                       "the planned scratch (%zu rows, %d heads, width %zu)%s", op, Sq, Skv, NH, HS,
                         c->rows, c->NH, c->width, c->xlay ? "" : " or was not planned");
    const int key[5] = {Sq, Skv, NH, NKV, HS};
    if (!memcmp(key, c->xkey, sizeof key)) return DSPY_OK;
    DSPY_TRY(cu_launch(be, op, k_sdpa_xlayout, 1, 32, 0, c->xlay, Sq, Skv, NH, NKV, HS));
    memcpy(c->xkey, key, sizeof key);
    return DSPY_OK;
}

/* The cross graph (forward or backward) of Sq rows to Skv keys, found or built (sdpa_xkey's key). */
static dspy_status sdpa_xfind(dspy_backend *be, cu_sdpa *c, bool bwd, int Sq, int Skv, int NH, int NKV, int HS,
                              sdpa_graph **g) {
    int S, Sk;
    sdpa_xkey(c, Sq, Skv, &S, &Sk);
    return graph_find(be, c, bwd, false, 1, S, Sk, NH, NKV, HS, g);
}

dspy_status dspy_cu_sdpa_cross_plan(dspy_backend *be, bool *on) {
    *on = false;
    cu_sdpa *c = sdpa_of(be);
    if (!c) return DSPY_OK;
    if (!c->xlay) {
        DSPY_TRY(dspy_cu_check(be, cudaMalloc((void **)&c->xlay, SDPA_X_WORDS * sizeof(int64_t)),
                               "cudnn cross-attention layout"));
        be->n_allocs++;
    }
    c->xkey[0] = 0;
    *on = true;
    return DSPY_OK;
}

dspy_status dspy_cu_sdpa_route_split(dspy_backend *be, bool bwd, const void *start, int prefix, int T, int NH,
                                     int NKV, int HS, const void *const *ptrs, int n, bool *take) {
    *take = false;
    cu_sdpa *c = cu_of(be)->sdpa;
    if (!c || !c->loaded || c->disabled || !c->start || c->start != start || c->T != T || !c->xlay) return DSPY_OK;
    if (prefix < 1 || prefix >= T || (HS != 64 && HS != 128)) return DSPY_OK;
    if (!c->required && T < SDPA_SPLIT_MIN_MEAN * c->nseg) return DSPY_OK; /* short examples: the own kernels */
    for (int i = 0; i < n; i++)
        if ((uintptr_t)ptrs[i] % 16) return DSPY_OK;
    sdpa_graph *g = NULL;
    DSPY_TRY(graph_get(be, c, bwd, NH, NKV, HS, &g));
    if (g->refused) return DSPY_OK;
    DSPY_TRY(sdpa_xfind(be, c, bwd, T - prefix, prefix, NH, NKV, HS, &g));
    *take = !g->refused;
    return DSPY_OK;
}

dspy_status dspy_cu_sdpa_xfwd(dspy_backend *be, bf16 *o, float *stats, const bf16 *q, const bf16 *k, const bf16 *v,
                              int Sq, int Skv, int NH, int NKV, int HS) {
    const char *op = "attention_train (cudnn cross-attention)";
    cu_sdpa *c = cu_of(be)->sdpa;
    DSPY_TRY(sdpa_xready(be, c, op, Sq, Skv, NH, NKV, HS));
    sdpa_graph *g = NULL;
    DSPY_TRY(sdpa_xfind(be, c, false, Sq, Skv, NH, NKV, HS, &g));
    int64_t *x = c->xlay;
    const int64_t ids[] = {U_Q, U_K, U_V, U_O, U_STATS, U_SEQ_Q, U_SEQ_KV, U_RQ, U_RKV, U_RS, U_SCALE, U_NEGINF};
    void *ptrs[] = {(void *)q, (void *)k, (void *)v, o, stats, x + SDPA_X_SEQ_Q, x + SDPA_X_SEQ_KV, x + SDPA_X_RQ,
                    x + SDPA_X_RKV, x + SDPA_X_RS, &g->scale, &g->neg_inf};
    return graph_run(be, c, g, ids, ptrs, (int)(sizeof ids / sizeof ids[0]), op);
}

dspy_status dspy_cu_sdpa_xbwd(dspy_backend *be, bf16 *dq, void *dk, void *dv, bool *dkv32, const void *dout,
                              bool dout16, const void *out, bool out16, const float *stats, const bf16 *q,
                              const bf16 *k, const bf16 *v, int Sq, int Skv, int NH, int NKV, int HS) {
    const char *op = "attention_train_backward (cudnn cross-attention)";
    cu_sdpa *c = cu_of(be)->sdpa;
    DSPY_TRY(sdpa_xready(be, c, op, Sq, Skv, NH, NKV, HS));
    sdpa_graph *g = NULL;
    DSPY_TRY(sdpa_xfind(be, c, true, Sq, Skv, NH, NKV, HS, &g));
    const int64_t nq = (int64_t)Sq * NH * HS, slot = (int64_t)c->rows * c->width;
    bf16 *o16 = (bf16 *)c->b16, *do16 = o16 + slot;
    float *dsum = c->f32, *dkf = dsum + c->rows * c->NH, *dvf = dkf + slot, *dqa = dvf + slot;
    /* as dspy_cu_sdpa_bwd: a BF16 out and a BF16 dout read in place, F32 ones narrowed */
    if (out16) o16 = (bf16 *)out;
    if (dout16) do16 = (bf16 *)dout;
    if (!out16 && !dout16)
        DSPY_TRY(cu_launch(be, op, k_sdpa_narrow2, tr_grid(nq), 256, 0, o16, (const float *)out, do16,
                           (const float *)dout, nq));
    else if (!out16)
        DSPY_TRY(cu_launch(be, op, k_sdpa_narrow, tr_grid(nq), 256, 0, o16, (const float *)out, nq));
    else if (!dout16)
        DSPY_TRY(cu_launch(be, op, k_sdpa_narrow, tr_grid(nq), 256, 0, do16, (const float *)dout, nq));
    int64_t *x = c->xlay;
    const int64_t ids[] = {U_Q,     U_K,   U_V,   U_O,   U_DO,  U_STATS,  U_DQ,   U_DK,   U_DV,   U_SEQ_Q,
                           U_SEQ_KV, U_RQ, U_RKV, U_RS, U_SCALE, U_NEGINF, U_ONE, U_DSUM, U_DQACC, U_DKF, U_DVF};
    void *ptrs[] = {(void *)q, (void *)k, (void *)v, o16, do16, (void *)stats, dq, dk, dv, x + SDPA_X_SEQ_Q,
                    x + SDPA_X_SEQ_KV, x + SDPA_X_RQ, x + SDPA_X_RKV, x + SDPA_X_RS, &g->scale, &g->neg_inf, &g->one,
                    dsum, dqa, dkf, dvf};
    const int n = NH == NKV ? (int)(sizeof ids / sizeof ids[0]) - 2 : (int)(sizeof ids / sizeof ids[0]);
    *dkv32 = g->wide;
    return graph_run(be, c, g, ids, ptrs, n, op);
}

void dspy_cu_sdpa_release(cuda_state *s) {
    cu_sdpa *c = s->sdpa;
    if (!c) return;
    for (int i = 0; i < SDPA_CACHE; i++)
        if (c->g[i].nall) graph_drop(c, &c->g[i]);
    if (c->h) c->api.destroy(c->h);
    cudaFree(c->b16), cudaFree(c->f32), cudaFree(c->seg), cudaFree(c->off), cudaFree(c->ws), cudaFree(c->xlay);
    if (c->api.lib) dlclose(c->api.lib);
    free(c);
    s->sdpa = NULL;
}

#else /* no cuDNN headers at build time: the own kernels only */

struct cu_sdpa {
    int unused;
};

dspy_status dspy_cu_sdpa_layout(dspy_backend *be, dspy_tensor start, int T, int nseg, int max_len) {
    (void)start, (void)T, (void)nseg, (void)max_len;
    CU_ENTER(be);
    return DSPY_OK;
}

dspy_status dspy_cu_sdpa_route(dspy_backend *be, bool bwd, const void *start, int prefix, int T, int NH, int NKV,
                               int HS, const void *const *ptrs, int n, bool *take) {
    (void)be, (void)bwd, (void)start, (void)prefix, (void)T, (void)NH, (void)NKV, (void)HS, (void)ptrs, (void)n;
    *take = false;
    return DSPY_OK;
}

dspy_status dspy_cu_sdpa_fwd(dspy_backend *be, void *out, bool out16, float *lse, const bf16 *q, const bf16 *k,
                             const bf16 *v, int T, int NH, int NKV, int HS) {
    (void)be, (void)out, (void)out16, (void)lse, (void)q, (void)k, (void)v, (void)T, (void)NH, (void)NKV, (void)HS;
    return dspy_fail(DSPY_ERR_BACKEND, "cuda cudnn attention: this build has no cuDNN");
}

dspy_status dspy_cu_sdpa_bwd(dspy_backend *be, void *dq, void *dk, void *dv, bool grad16, const void *dout,
                             bool dout16, const void *out, bool out16, const float *lse, const bf16 *q, const bf16 *k,
                             const bf16 *v, int T, int NH, int NKV, int HS) {
    (void)be, (void)dq, (void)dk, (void)dv, (void)grad16, (void)dout, (void)dout16, (void)out, (void)out16, (void)lse;
    (void)q, (void)k, (void)v, (void)T, (void)NH, (void)NKV, (void)HS;
    return dspy_fail(DSPY_ERR_BACKEND, "cuda cudnn attention: this build has no cuDNN");
}

dspy_status dspy_cu_sdpa_bwd_keep(dspy_backend *be, bf16 *dq, bf16 *dk, bf16 *dv, float *dk32, float *dv32,
                                  bool *kept, const bf16 *dout, const void *out, bool out16, const float *lse,
                                  const bf16 *q, const bf16 *k, const bf16 *v, int T, int NH, int NKV, int HS) {
    (void)be, (void)dq, (void)dk, (void)dv, (void)dk32, (void)dv32, (void)dout, (void)out, (void)out16, (void)lse;
    (void)q, (void)k, (void)v, (void)T, (void)NH, (void)NKV, (void)HS;
    *kept = false;
    return dspy_fail(DSPY_ERR_BACKEND, "cuda cudnn attention: this build has no cuDNN");
}

dspy_status dspy_cu_sdpa_cross_plan(dspy_backend *be, bool *on) {
    (void)be;
    *on = false;
    return DSPY_OK;
}

dspy_status dspy_cu_sdpa_route_split(dspy_backend *be, bool bwd, const void *start, int prefix, int T, int NH,
                                     int NKV, int HS, const void *const *ptrs, int n, bool *take) {
    (void)be, (void)bwd, (void)start, (void)prefix, (void)T, (void)NH, (void)NKV, (void)HS, (void)ptrs, (void)n;
    *take = false;
    return DSPY_OK;
}

dspy_status dspy_cu_sdpa_xfwd(dspy_backend *be, bf16 *o, float *stats, const bf16 *q, const bf16 *k, const bf16 *v,
                              int Sq, int Skv, int NH, int NKV, int HS) {
    (void)be, (void)o, (void)stats, (void)q, (void)k, (void)v, (void)Sq, (void)Skv, (void)NH, (void)NKV, (void)HS;
    return dspy_fail(DSPY_ERR_BACKEND, "cuda cudnn attention: this build has no cuDNN");
}

dspy_status dspy_cu_sdpa_xbwd(dspy_backend *be, bf16 *dq, void *dk, void *dv, bool *dkv32, const void *dout,
                              bool dout16, const void *out, bool out16, const float *stats, const bf16 *q,
                              const bf16 *k, const bf16 *v, int Sq, int Skv, int NH, int NKV, int HS) {
    (void)be, (void)dq, (void)dk, (void)dv, (void)dout, (void)dout16, (void)out, (void)out16, (void)stats, (void)q;
    (void)k, (void)v, (void)Sq, (void)Skv, (void)NH, (void)NKV, (void)HS;
    *dkv32 = false;
    return dspy_fail(DSPY_ERR_BACKEND, "cuda cudnn attention: this build has no cuDNN");
}

void dspy_cu_sdpa_release(cuda_state *s) { (void)s; }

#endif
