/* bench_gpu.c — inference benchmarks on the GPU (issue 9's B1 and prefill), with their floors.
 *
 *   copy   device-to-device copy bandwidth (bytes read + written / time), the memory ceiling
 *   B1     batch-1 greedy decode: a 1,500-token prompt, 128 new tokens; ms per decoded token
 *          (median over the steps after the first token), and its fraction of the memory floor
 *          (weight bytes / measured copy bandwidth: every decode step reads every weight once);
 *          then the same under a constraint (a token mask built, copied and applied every step)
 *          and its overhead
 *   prefill 100 prompts of 1,500 tokens through one engine (chunked, max_batch_tokens tokens a
 *          step) until every sequence has its first token; seconds and tokens/s, and the FLOP
 *          floor (2 * non-embedding params * tokens + causal attention) at the measured peak
 *
 *   step   one decode step of --step-batch sequences (default 1) on the device alone, and each
 *          op's cost in the chain; --step-shared P: their first P positions in shared KV blocks;
 *          --step-rows R: each sequence feeds its last R positions instead (a prompt step after a
 *          cached prefix, as B2's waves run them) at context --step-ctx; also the step launched op
 *          by op (no graph) and the attention calls alone
 *
 * Usage: bench_gpu --model DIR [--device cuda] [--prefill-chunk 32768] [--peak-tflops 789]
 *        [--only-step 1 [--step-batch 16] [--step-shared 1300] [--step-rows 204 --step-ctx 1500]]
 *        [--weights fp8|w8a8]
 * --timeline PATH (with --only-step): the greedy step's variant only, then that step again with
 * every block of its stamped kernels timed (kern/cuda/timeline.h; a -DDSPY_CUDA_TIMELINE=ON build),
 * one JSON line a block to PATH, for bench/timeline.py
 * --weights fp8 (w8a8): the model loaded with dspy_model_params.f8_decode (and f8_act) (weight_bytes then counts the
 * FP8 copies too; a batched decode step reads the 1-byte copies, ~1.24 GB at the 1B shape)
 * The prefill's default chunk is 32,768 tokens a step: on the H200 it measured 0.617 s against
 * 0.642 s for 16,384 (bench/RESULTS.md; the larger GEMMs and fewer steps); run_gpu.sh prints both.
 * Prints one JSON object per measurement (for bench/run_gpu.sh to tabulate).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/backend.h"
#include "dspy/clock.h"
#include "dspy/constraint.h"
#include "check.h"
#include "dspy/engine.h"
#include "dspy/json.h"
#include "dspy/model.h"
#include "dspy/rng.h"
#include "engine/engine_impl.h"
#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "kern/backend.h"
#ifdef DSPY_HAVE_CUDA
#include "kern/cuda/timeline.h"
#endif

static int fail(const char *what) {
    fprintf(stderr, "bench_gpu: %s: %s\n", what, dspy_errmsg());
    return 1;
}

/* Device-to-device copy of 2 GiB, median of 10; returns bytes read + written per second. */
static double copy_bandwidth(dspy_device dev) {
    dspy_backend *be = NULL;
    if (dspy_backend_new(dev, NULL, &be)) return 0;
    size_t bytes = (size_t)2 << 30;
    void *a = NULL, *b = NULL;
    double bw = 0;
    if (!be->ops->alloc(be, bytes, &a) && !be->ops->alloc(be, bytes, &b)) {
        be->ops->fill(be, dspy_bt(be, a, (int64_t)(bytes / 4), DSPY_DTYPE_F32), 1.0f);
        double t[10];
        for (int i = 0; i < 12; i++) {
            double t0 = dspy_now_s();
            be->ops->copy(be, b, a, bytes, DSPY_COPY_D2D);
            be->ops->sync(be);
            if (i >= 2) t[i - 2] = dspy_now_s() - t0;
        }
        bw = 2.0 * (double)bytes / test_median(t, 10);
    }
    be->ops->free(be, a);
    be->ops->free(be, b);
    dspy_backend_free(be);
    return bw;
}

/* ---- one decode step's ops, alone: time per call (a captured graph of 20 calls, replayed),
 * achieved bandwidth over the bytes each must read ---- */

typedef dspy_status (*op_fn)(dspy_backend *be, void *ctx);
typedef struct op_ctx {
    const dspy_model *m;
    dspy_tensor x, xn, qkv, q, att, gu, h, kc, vc, pos, slots, segs, tables, rows, logits, params, tok, lp, sel, seln;
    int ctx_len;
} op_ctx;

static dspy_status op_attn_in(dspy_backend *be, void *p) {
    op_ctx *c = p;
    const dspy_model_config *cf = dspy_model_config_get(c->m);
    const dspy_layer_weights *L = &dspy_model_weights_get(c->m)->layers[0];
    return be->ops->attn_in(be, c->q, c->kc, c->vc, c->x, L->attn_norm, L->wqkv, L->bqkv, c->pos, c->slots,
                            dspy_model_weights_get(c->m)->inv_freq, c->xn, c->qkv, 1, cf->hidden_size,
                            cf->num_attention_heads, cf->num_key_value_heads, cf->head_dim, 1e-5f);
}
static dspy_status op_attention(dspy_backend *be, void *p) {
    op_ctx *c = p;
    const dspy_model_config *cf = dspy_model_config_get(c->m);
    dspy_attn_meta am = {c->segs, c->tables, 1, 1, 16, c->ctx_len, true, dspy_tensor_none()};
    return be->ops->attention(be, c->att, c->q, c->kc, c->vc, &am, cf->num_attention_heads, cf->num_key_value_heads,
                              cf->head_dim);
}
static dspy_status op_o(dspy_backend *be, void *p) {
    op_ctx *c = p;
    const dspy_model_config *cf = dspy_model_config_get(c->m);
    const dspy_layer_weights *L = &dspy_model_weights_get(c->m)->layers[0];
    return be->ops->linear(be, c->x, c->att, L->wo, L->bo, 1, cf->num_attention_heads * cf->head_dim, cf->hidden_size,
                           true);
}
static dspy_status op_mlp_in(dspy_backend *be, void *p) {
    op_ctx *c = p;
    const dspy_model_config *cf = dspy_model_config_get(c->m);
    const dspy_layer_weights *L = &dspy_model_weights_get(c->m)->layers[0];
    return be->ops->mlp_in(be, c->h, c->x, L->mlp_norm, L->w_gate_up, c->xn, c->gu, 1, cf->hidden_size,
                           cf->intermediate_size, 1e-5f);
}
static dspy_status op_down(dspy_backend *be, void *p) {
    op_ctx *c = p;
    const dspy_model_config *cf = dspy_model_config_get(c->m);
    const dspy_layer_weights *L = &dspy_model_weights_get(c->m)->layers[0];
    return be->ops->linear(be, c->x, c->h, L->w_down, dspy_tensor_none(), 1, cf->intermediate_size, cf->hidden_size,
                           true);
}
static dspy_status op_logits(dspy_backend *be, void *p) {
    op_ctx *c = p;
    const dspy_model_config *cf = dspy_model_config_get(c->m);
    const dspy_model_weights *w = dspy_model_weights_get(c->m);
    return be->ops->logits(be, c->logits, c->x, c->rows, w->final_norm, w->lm_head, c->sel, c->seln, 1,
                           cf->hidden_size, cf->vocab_size, 1e-5f);
}
static dspy_status op_sample(dspy_backend *be, void *p) {
    op_ctx *c = p;
    return be->ops->sample(be, c->tok, c->lp, c->logits, c->params, 1, dspy_model_config_get(c->m)->vocab_size);
}

/* Time per call of `calls` calls of f captured in one graph: median of seven replays (after two
 * warm-ups); -1 on error. */
static double time_graph(dspy_backend *be, op_fn f, void *c, int calls) {
    void *g = NULL;
    if (be->ops->graph_begin(be)) return -1;
    dspy_status st = DSPY_OK;
    for (int i = 0; i < calls && !st; i++) st = f(be, c);
    dspy_status st2 = be->ops->graph_end(be, &g);
    if (st || st2) return -1;
    double t[7];
    for (int r = 0; r < 9; r++) {
        double t0 = dspy_now_s();
        be->ops->graph_launch(be, g);
        be->ops->sync(be);
        if (r >= 2) t[r - 2] = (dspy_now_s() - t0) / calls;
    }
    be->ops->graph_free(be, g);
    return test_median(t, 7);
}

static void bench_ops(const dspy_model *m, double bw, int ctx_len) {
    const dspy_model_config *cf = dspy_model_config_get(m);
    dspy_backend *be = NULL;
    dspy_backend_plan plan = {64, 8192, 8, cf->vocab_size, cf->num_attention_heads, cf->head_dim, 0, 0};
    if (dspy_backend_new(dspy_model_device(m), &plan, &be)) {
        fprintf(stderr, "bench_ops: %s\n", dspy_errmsg());
        return;
    }
    const int C = cf->hidden_size, I = cf->intermediate_size, V = cf->vocab_size, Q = cf->num_attention_heads * cf->head_dim;
    const int KVD = cf->num_key_value_heads * cf->head_dim, slots = 2048;
    op_ctx c = {.m = m, .ctx_len = ctx_len};
    struct {
        dspy_tensor *t;
        int64_t n;
        dspy_dtype dt;
    } bufs[] = {{&c.x, C, DSPY_DTYPE_F32},        {&c.xn, C, DSPY_DTYPE_BF16},     {&c.qkv, Q + 2 * KVD, DSPY_DTYPE_BF16},
                {&c.q, Q, DSPY_DTYPE_BF16},       {&c.att, Q, DSPY_DTYPE_BF16},    {&c.gu, 2 * I, DSPY_DTYPE_BF16},
                {&c.h, I, DSPY_DTYPE_BF16},       {&c.kc, (int64_t)slots * KVD, DSPY_DTYPE_BF16},
                {&c.vc, (int64_t)slots * KVD, DSPY_DTYPE_BF16},                 {&c.logits, V, DSPY_DTYPE_F32},
                {&c.sel, C, DSPY_DTYPE_F32},      {&c.seln, C, DSPY_DTYPE_BF16}};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        void *p = NULL;
        be->ops->alloc(be, (size_t)bufs[i].n * dspy_dtype_size(bufs[i].dt), &p);
        *bufs[i].t = dspy_bt(be, p, bufs[i].n, bufs[i].dt);
        be->ops->fill(be, *bufs[i].t, 0.25f); /* not zeros: zeros can run faster than real data */
    }
    int32_t host[64 + 128];
    memset(host, 0, sizeof host);
    host[0] = ctx_len - 1;                 /* pos */
    host[1] = ctx_len - 1;                 /* slot */
    host[4] = 0, host[5] = 1, host[6] = ctx_len - 1, host[7] = 0; /* segment: row 0, n 1, pos0, table 0 */
    for (int b = 0; b < 128; b++) host[64 + b] = b; /* table: blocks 0 .. 127 (2048 slots) */
    host[12] = 0;                          /* rows */
    dspy_sample_param sp = {0, 1, 0, 0, 0};
    memcpy(host + 16, &sp, sizeof sp);
    void *meta = NULL;
    be->ops->alloc(be, sizeof host, &meta);
    be->ops->copy(be, meta, host, sizeof host, DSPY_COPY_H2D);
    be->ops->sync(be);
    int32_t *d = meta;
    c.pos = dspy_bt(be, d + 0, 1, DSPY_DTYPE_I32), c.slots = dspy_bt(be, d + 1, 1, DSPY_DTYPE_I32);
    c.segs = dspy_bt(be, d + 4, 4, DSPY_DTYPE_I32), c.rows = dspy_bt(be, d + 12, 1, DSPY_DTYPE_I32);
    c.params = dspy_bt(be, d + 16, DSPY_SAMPLE_PARAM_WORDS, DSPY_DTYPE_I32);
    c.tables = dspy_bt(be, d + 64, 128, DSPY_DTYPE_I32);
    c.tok = dspy_bt(be, d + 40, 1, DSPY_DTYPE_I32), c.lp = dspy_bt(be, d + 41, 1, DSPY_DTYPE_F32);
    struct {
        const char *name;
        op_fn f;
        double bytes;
    } ops[] = {{"attn_in", op_attn_in, 2.0 * (Q + 2 * KVD) * C},
               {"attention", op_attention, 2.0 * 2 * ctx_len * KVD},
               {"o_proj+res", op_o, 2.0 * C * Q},
               {"mlp_in", op_mlp_in, 2.0 * 2 * I * C},
               {"down+res", op_down, 2.0 * C * I},
               {"logits", op_logits, 2.0 * (double)V * C},
               {"sample", op_sample, 4.0 * V}};
    double layer = 0;
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        double t = time_graph(be, ops[i].f, &c, 20);
        if (i < 5) layer += t;
        printf("{\"bench\": \"op\", \"op\": \"%s\", \"us\": %.2f, \"GBps\": %.0f, \"fraction_of_copy_bw\": %.2f}\n",
               ops[i].name, t * 1e6, ops[i].bytes / t / 1e9, bw > 0 ? ops[i].bytes / t / bw : 0);
    }
    printf("{\"bench\": \"op\", \"op\": \"layer (5 ops)\", \"us\": %.2f}\n", layer * 1e6);
    be->ops->free(be, meta);
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->ops->free(be, bufs[i].t->data);
    dspy_backend_free(be);
}

/* The prefill step's ops at one chunk of N tokens (segments of `seg` tokens from position 0):
 * milliseconds and TFLOP/s each. */
typedef struct pf_ctx {
    const dspy_model *m;
    int N, nseg;
    dspy_tensor x, xn, qkv, q, att, gu, h, kc, vc, pos, slots, segs, tables;
} pf_ctx;

static dspy_status pf_attn_in(dspy_backend *be, void *p) {
    pf_ctx *c = p;
    const dspy_model_config *cf = dspy_model_config_get(c->m);
    const dspy_layer_weights *L = &dspy_model_weights_get(c->m)->layers[0];
    return be->ops->attn_in(be, c->q, c->kc, c->vc, c->x, L->attn_norm, L->wqkv, L->bqkv, c->pos, c->slots,
                            dspy_model_weights_get(c->m)->inv_freq, c->xn, c->qkv, c->N, cf->hidden_size,
                            cf->num_attention_heads, cf->num_key_value_heads, cf->head_dim, 1e-5f);
}
static dspy_status pf_attention(dspy_backend *be, void *p) {
    pf_ctx *c = p;
    const dspy_model_config *cf = dspy_model_config_get(c->m);
    dspy_attn_meta am = {c->segs, c->tables, c->nseg, c->N, 16, c->N, false, dspy_tensor_none()};
    return be->ops->attention(be, c->att, c->q, c->kc, c->vc, &am, cf->num_attention_heads, cf->num_key_value_heads,
                              cf->head_dim);
}
static dspy_status pf_o(dspy_backend *be, void *p) {
    pf_ctx *c = p;
    const dspy_model_config *cf = dspy_model_config_get(c->m);
    const dspy_layer_weights *L = &dspy_model_weights_get(c->m)->layers[0];
    return be->ops->linear(be, c->x, c->att, L->wo, L->bo, c->N, cf->num_attention_heads * cf->head_dim,
                           cf->hidden_size, true);
}
static dspy_status pf_mlp_in(dspy_backend *be, void *p) {
    pf_ctx *c = p;
    const dspy_model_config *cf = dspy_model_config_get(c->m);
    const dspy_layer_weights *L = &dspy_model_weights_get(c->m)->layers[0];
    return be->ops->mlp_in(be, c->h, c->x, L->mlp_norm, L->w_gate_up, c->xn, c->gu, c->N, cf->hidden_size,
                           cf->intermediate_size, 1e-5f);
}
static dspy_status pf_down(dspy_backend *be, void *p) {
    pf_ctx *c = p;
    const dspy_model_config *cf = dspy_model_config_get(c->m);
    const dspy_layer_weights *L = &dspy_model_weights_get(c->m)->layers[0];
    return be->ops->linear(be, c->x, c->h, L->w_down, dspy_tensor_none(), c->N, cf->intermediate_size,
                           cf->hidden_size, true);
}

/* Uniform random values in [-2, 2) into the BF16 tensor t (n elements) through an F32 staging
 * buffer. The attention row times on these: on the constant activations the other rows use, every
 * row's scores repeat along the keys, so the running max never moves and the softmax's rescaling
 * work (which random data does pay) would be left out. */
static void fill_random_bf16(dspy_backend *be, dspy_tensor t, int64_t n, uint64_t seed) {
    float *h = malloc(sizeof(float) * (size_t)n);
    void *d = NULL;
    if (h && !be->ops->alloc(be, sizeof(float) * (size_t)n, &d)) {
        for (int64_t i = 0; i < n; i++) h[i] = (float)(dspy_splitmix64(&seed) >> 40) * (4.0f / 16777216.0f) - 2.0f;
        if (!be->ops->copy(be, d, h, sizeof(float) * (size_t)n, DSPY_COPY_H2D))
            be->ops->cast(be, t, dspy_bt(be, d, n, DSPY_DTYPE_F32));
        be->ops->sync(be);
    }
    be->ops->free(be, d);
    free(h);
}

static double time_calls(dspy_backend *be, op_fn f, void *c, int calls) {
    double t[5];
    f(be, c); /* warm: plans, first touch */
    be->ops->sync(be);
    for (int r = 0; r < 5; r++) {
        double t0 = dspy_now_s();
        for (int i = 0; i < calls; i++) f(be, c);
        be->ops->sync(be);
        t[r] = (dspy_now_s() - t0) / calls;
    }
    return test_median(t, 5);
}

static void bench_prefill_ops(const dspy_model *m, int N, int seg) {
    const dspy_model_config *cf = dspy_model_config_get(m);
    dspy_backend *be = NULL;
    dspy_backend_plan plan = {N, N, N / seg + 1, cf->vocab_size, cf->num_attention_heads, cf->head_dim, 0, 0};
    if (dspy_backend_new(dspy_model_device(m), &plan, &be)) return;
    const int64_t C = cf->hidden_size, I = cf->intermediate_size, Q = (int64_t)cf->num_attention_heads * cf->head_dim;
    const int64_t KVD = (int64_t)cf->num_key_value_heads * cf->head_dim;
    pf_ctx c = {.m = m, .N = N, .nseg = N / seg};
    struct {
        dspy_tensor *t;
        int64_t n;
        dspy_dtype dt;
    } bufs[] = {{&c.x, N * C, DSPY_DTYPE_F32},    {&c.xn, N * C, DSPY_DTYPE_BF16},  {&c.qkv, N * (Q + 2 * KVD), DSPY_DTYPE_BF16},
                {&c.q, N * Q, DSPY_DTYPE_BF16},   {&c.att, N * Q, DSPY_DTYPE_BF16}, {&c.gu, N * 2 * I, DSPY_DTYPE_BF16},
                {&c.h, N * I, DSPY_DTYPE_BF16},   {&c.kc, N * KVD, DSPY_DTYPE_BF16}, {&c.vc, N * KVD, DSPY_DTYPE_BF16}};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        void *p = NULL;
        be->ops->alloc(be, (size_t)bufs[i].n * dspy_dtype_size(bufs[i].dt), &p);
        *bufs[i].t = dspy_bt(be, p, bufs[i].n, bufs[i].dt);
        be->ops->fill(be, *bufs[i].t, 0.25f);
    }
    int nseg = c.nseg, nblk = N / 16;
    int32_t *h = calloc((size_t)(2 * N + 4 * nseg + nblk), sizeof(int32_t));
    for (int i = 0; i < N; i++) h[i] = i % seg, h[N + i] = i;
    for (int s = 0; s < nseg; s++) {
        dspy_attn_seg sg = {s * seg, seg, 0, s * seg / 16};
        memcpy(h + 2 * N + 4 * s, &sg, sizeof sg);
    }
    for (int b = 0; b < nblk; b++) h[2 * N + 4 * nseg + b] = b;
    void *meta = NULL;
    size_t mb = sizeof(int32_t) * (size_t)(2 * N + 4 * nseg + nblk);
    be->ops->alloc(be, mb, &meta);
    be->ops->copy(be, meta, h, mb, DSPY_COPY_H2D);
    be->ops->sync(be);
    int32_t *d = meta;
    c.pos = dspy_bt(be, d, N, DSPY_DTYPE_I32), c.slots = dspy_bt(be, d + N, N, DSPY_DTYPE_I32);
    c.segs = dspy_bt(be, d + 2 * N, 4 * nseg, DSPY_DTYPE_I32);
    c.tables = dspy_bt(be, d + 2 * N + 4 * nseg, nblk, DSPY_DTYPE_I32);
    double attn_flops = 4.0 * cf->num_attention_heads * cf->head_dim * 0.5 * (double)seg * seg * nseg;
    struct {
        const char *name;
        op_fn f;
        double flops;
    } ops[] = {{"attn_in", pf_attn_in, 2.0 * N * C * (Q + 2 * KVD)},
               {"attention", pf_attention, attn_flops},
               {"o_proj+res", pf_o, 2.0 * N * C * Q},
               {"mlp_in", pf_mlp_in, 2.0 * N * C * 2 * I},
               {"down+res", pf_down, 2.0 * N * C * I}};
    double layer = 0;
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        if (ops[i].f == pf_attention) { /* attn_in just wrote q, k, v from constant rows */
            fill_random_bf16(be, c.q, N * Q, 1);
            fill_random_bf16(be, c.kc, N * KVD, 2);
            fill_random_bf16(be, c.vc, N * KVD, 3);
        }
        double t = time_calls(be, ops[i].f, &c, 5);
        layer += t;
        printf("{\"bench\": \"prefill_op\", \"N\": %d, \"op\": \"%s\", \"ms\": %.3f, \"tflops\": %.0f}\n", N,
               ops[i].name, t * 1e3, ops[i].flops / t / 1e12);
    }
    printf("{\"bench\": \"prefill_op\", \"N\": %d, \"op\": \"layer (5 ops)\", \"ms\": %.3f}\n", N, layer * 1e3);
    free(h);
    be->ops->free(be, meta);
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->ops->free(be, bufs[i].t->data);
    dspy_backend_free(be);
}

/* ---- a whole decode step on the device, without the host: dspy_forward + the sampler for nb
 * sequences (--step-batch, default 1; each its own KV blocks) at position ctx_len - 1, ten steps
 * captured in one graph and replayed. Against B1's
 * ms/token this splits the step into device time and the host's round trip. Then the same step
 * composed from the ops directly, whole and with one kind of op left out: the
 * difference is that op's cost in the chain (its own time plus what it adds at the boundaries),
 * which the ops-alone table above cannot show. ---- */

enum { LEAVE_ATTN_IN = 1, LEAVE_ATTENTION = 2, LEAVE_O = 4, LEAVE_MLP_IN = 8, LEAVE_DOWN = 16, LEAVE_LOGITS = 32,
       LEAVE_SAMPLE = 64 };

typedef struct step_ctx {
    const dspy_model *m;
    dspy_kv_cache kv;
    dspy_fwd_buf buf;
    dspy_fwd_batch b;
    dspy_tensor params, tok, lp;
    int nb;    /* sequences (rows) in the step */
    int leave; /* -1: dspy_forward and the sampler; -2: dspy_forward_greedy; otherwise the ops composed,
                  leaving out these LEAVE_ bits */
} step_ctx;

static dspy_status step_once(dspy_backend *be, void *p) {
    step_ctx *c = p;
    const dspy_ops *o = be->ops;
    const dspy_model_config *cf = dspy_model_config_get(c->m);
    const dspy_model_weights *w = dspy_model_weights_get(c->m);
    const int C = cf->hidden_size, I = cf->intermediate_size, V = cf->vocab_size, NH = cf->num_attention_heads;
    const int NKV = cf->num_key_value_heads, HS = cf->head_dim, Q = NH * HS;
    const float eps = (float)cf->rms_norm_eps;
    dspy_fwd_buf *B = &c->buf;
    const int nb = c->nb, n = c->b.n; /* sequences (logits rows); rows (nb x the prompt rows each) */
    dspy_tensor logits = dspy_tensor_slice(B->logits, 0, (int64_t)nb * V);
    if (c->leave == -2) { /* the engine's greedy step: the sampler inside the logits op where it can */
        bool done = false;
        DSPY_TRY(dspy_forward_greedy(c->m, be, &c->kv, B, &c->b, c->tok, c->lp, &done));
        return done ? DSPY_OK : o->sample(be, c->tok, c->lp, logits, c->params, nb, V);
    }
    if (c->leave < 0) {
        DSPY_TRY(dspy_forward(c->m, be, &c->kv, B, &c->b));
        return o->sample(be, c->tok, c->lp, logits, c->params, nb, V);
    }
    const int lv = c->leave;
    dspy_tensor x = dspy_tensor_slice(B->x, 0, (int64_t)n * C);
    DSPY_TRY(o->embedding(be, x, c->b.tokens, w->embed, n, C));
    dspy_tensor xn = dspy_tensor_slice(B->xn, 0, (int64_t)n * C), q = dspy_tensor_slice(B->q, 0, (int64_t)n * Q);
    dspy_tensor qkv = dspy_tensor_slice(B->qkv, 0, (int64_t)n * (Q + 2 * NKV * HS));
    dspy_tensor att = dspy_tensor_slice(B->att, 0, (int64_t)n * Q), gu = dspy_tensor_slice(B->gu, 0, (int64_t)n * 2 * I);
    dspy_tensor h = dspy_tensor_slice(B->h, 0, (int64_t)n * I);
    for (int l = 0; l < cf->num_hidden_layers; l++) {
        const dspy_layer_weights *L = &w->layers[l];
        dspy_tensor kc = dspy_kv_cache_k(&c->kv, l), vc = dspy_kv_cache_v(&c->kv, l);
        if (!(lv & LEAVE_ATTN_IN))
            DSPY_TRY(o->attn_in(be, q, kc, vc, x, L->attn_norm, L->wqkv, L->bqkv, c->b.pos, c->b.slots,
                                w->inv_freq, xn, qkv, n, C, NH, NKV, HS, eps));
        if (!(lv & LEAVE_ATTENTION)) DSPY_TRY(o->attention(be, att, q, kc, vc, &c->b.attn, NH, NKV, HS));
        /* early residual reads only where the op just before is the one forward.c puts there */
        if (!(lv & LEAVE_O))
            DSPY_TRY(o->linear(be, x, att, L->wo, L->bo, n, Q, C, lv & LEAVE_ATTENTION ? 1 : DSPY_LINEAR_ADD_EARLY));
        const dspy_tensor hl = dspy_fwd_mlp_h(be, h, x, L, n, C, I); /* as forward.c hands it over */
        if (!(lv & LEAVE_MLP_IN))
            DSPY_TRY(o->mlp_in(be, hl, x, L->mlp_norm, L->w_gate_up, xn, gu, n, C, I, eps));
        if (!(lv & LEAVE_DOWN))
            DSPY_TRY(o->linear(be, x, hl, L->w_down, dspy_tensor_none(), n, I, C, lv & LEAVE_MLP_IN ? 1 : DSPY_LINEAR_ADD_EARLY));
    }
    if (!(lv & LEAVE_LOGITS))
        DSPY_TRY(o->logits(be, logits, x, c->b.out_rows, w->final_norm, w->lm_head, dspy_tensor_slice(B->sel, 0, (int64_t)nb * C),
                           dspy_tensor_slice(B->seln, 0, (int64_t)nb * C), nb, C, V, eps));
    if (!(lv & LEAVE_SAMPLE)) DSPY_TRY(o->sample(be, c->tok, c->lp, logits, c->params, nb, V));
    return DSPY_OK;
}

/* Bytes one decode token streams: the projection matrices and the lm_head, BF16 or (f8_decode)
 * their E4M3 codes and a 4-byte scale a row; the norms and the token's embedding row are left out
 * (under 0.1 %). Not dspy_model_weight_bytes: that counts the embedding table whole and, with FP8,
 * both copies. */
static size_t decode_bytes(const dspy_model *m) {
    const dspy_model_config *c = dspy_model_config_get(m);
    const size_t C = (size_t)c->hidden_size, Q = (size_t)c->num_attention_heads * c->head_dim;
    const size_t KV = (size_t)c->num_key_value_heads * c->head_dim, I = (size_t)c->intermediate_size;
    const size_t rows = (size_t)c->num_hidden_layers * (Q + 2 * KV + C + 2 * I + C) + (size_t)c->vocab_size;
    const size_t elems = (size_t)c->num_hidden_layers * C * (Q + 2 * KV + Q + 2 * I) +
                         (size_t)c->num_hidden_layers * I * C + (size_t)c->vocab_size * C;
    return dspy_model_f8_decode(m) ? elems + 4 * rows : 2 * elems;
}

/* A decode step's byte floor: the weights once (decode_bytes) and the keys and values it attends,
 * the shared prefix once (B2's sequences share its blocks) and each sequence's own positions. */
static double step_floor_bytes(const dspy_model *m, int ctx_len, int nb, int shared) {
    const dspy_model_config *c = dspy_model_config_get(m);
    const int sh = shared < ctx_len ? shared : ctx_len;
    const double per_pos = 2.0 * c->num_hidden_layers * c->num_key_value_heads * c->head_dim * 2; /* K and V, BF16 */
    return (double)decode_bytes(m) + per_pos * (sh + (double)nb * (ctx_len - sh));
}

/* --timeline's file (NULL: none), and whether writing it failed (bench_gpu's exit status). */
static const char *g_timeline;
static int g_timeline_failed;

/* The engine's greedy step (c->leave -2), TL_STEPS of them captured in one graph, replayed twice
 * unstamped, then once with the records on; written to path as JSON lines (times in ns, as the
 * device's global timer gives them). */
static void step_timeline(dspy_backend *be, step_ctx *c, const char *path) {
#ifdef DSPY_HAVE_CUDA
    enum { TL_STEPS = 4, TL_CAP = 1 << 16 };
    void *g = NULL;
    dspy_cu_tl_rec *rec = NULL;
    FILE *f = NULL;
    int n = 0;
    const char *why = NULL; /* a failure of this function's own; else dspy_errmsg()'s */
    c->leave = -2;
    dspy_status st = be->ops->graph_begin(be), st2 = DSPY_OK;
    if (st) goto fail;
    for (int i = 0; i < TL_STEPS && !st; i++) st = step_once(be, c);
    st2 = be->ops->graph_end(be, &g); /* the capture ends whatever the steps said */
    if (st || st2) goto fail;
    for (int r = 0; r < 2 && !st; r++) st = be->ops->graph_launch(be, g);
    if (st || (st = be->ops->sync(be)) || (st = dspy_cu_timeline_start(be, TL_CAP)) || (st = be->ops->graph_launch(be, g)))
        goto fail;
    if (!(rec = malloc(sizeof *rec * TL_CAP))) {
        why = "out of memory";
        goto fail;
    }
    if ((st = dspy_cu_timeline_read(be, rec, TL_CAP, &n))) goto fail;
    if (!(f = fopen(path, "w"))) {
        why = "cannot open it for writing";
        goto fail;
    }
    for (int i = 0; i < n && i < TL_CAP; i++) {
        const dspy_cu_tl_rec *r = &rec[i];
        /* every block that takes a slot writes its record as it ends (timeline.h); an empty one
         * would be a slot whose block never ended, which the sync before the read excludes */
        if (r->kind == DSPY_TL_NONE) continue;
        fprintf(f, "{\"kind\": \"%s\", \"block\": %u, \"grid\": %u, \"sm\": %u, \"t\": [%llu, %llu, %llu, %llu]}\n",
                dspy_cu_tl_kind_name((int)r->kind), r->block, r->grid, r->sm, (unsigned long long)r->t[0],
                (unsigned long long)r->t[1], (unsigned long long)r->t[2], (unsigned long long)r->t[3]);
    }
    if (fflush(f) || ferror(f)) {
        why = "writing it failed";
        goto fail;
    }
    dspy_json *jp = dspy_json_stringn(path, strlen(path));
    char *qp = jp ? dspy_json_dumps(jp, DSPY_JSON_PY) : NULL;
    printf("{\"bench\": \"timeline\", \"steps\": %d, \"records\": %d, \"dropped\": %d, \"path\": %s}\n", TL_STEPS, n,
           n > TL_CAP ? n - TL_CAP : 0, qp ? qp : "null");
    free(qp);
    dspy_json_decref(jp);
    goto done;
fail:
    fprintf(stderr, "--timeline %s: %s\n", path, why ? why : dspy_errmsg());
    g_timeline_failed = 1;
done:
    if (f) fclose(f);
    free(rec);
    if (g) be->ops->graph_free(be, g);
    dspy_cu_timeline_stop(be);
#else
    (void)be, (void)c, (void)path;
#endif
}

/* nb sequences at context ctx_len, each feeding its last P positions (P = 1: a decode step; P > 1:
 * a prompt step of a prefix-cached request, as B2's waves run them, W8A8 where the model has it). */
static void bench_step(const dspy_model *m, int ctx_len, int nb, int P, int shared, double bw, double peak) {
    const dspy_model_config *cf = dspy_model_config_get(m);
    dspy_backend *be = NULL;
    const int per = (ctx_len + 15) / 16 + 1;           /* blocks per sequence */
    const int n = nb * P;                              /* rows */
    dspy_backend_plan plan = {n > 64 ? n : 64, 4096, nb > 8 ? nb : 8, cf->vocab_size, cf->num_attention_heads, cf->head_dim,
                              0, dspy_engine_act8_width(m)};
    if (nb < 1 || nb > 64 || P < 1 || P >= ctx_len) {
        fprintf(stderr, "bench_step: --step-batch takes 1..64, --step-rows 1..ctx - 1\n");
        return;
    }
    if (dspy_backend_new(dspy_model_device(m), &plan, &be)) {
        fprintf(stderr, "bench_step: %s\n", dspy_errmsg());
        return;
    }
    step_ctx c = {.m = m, .nb = nb};
    /* tokens, pos, slots (n each), out rows (nb), segments (4 nb), sampling params, the shared-prefix
     * hint, results, tables; segments and params 16-byte aligned as the engine lays them out (the
     * params hold a double: an odd n left them misaligned, and the sampler faulted at one row) */
    const int o_tok = 0, o_pos = n, o_slot = 2 * n, o_rows = 3 * n, o_seg = (o_rows + 64 + 3) & ~3, o_par = o_seg + 256,
              o_sh = o_par + 488, o_res = o_sh + 24, o_tab = o_res + 128;
    const size_t words = (size_t)o_tab + (size_t)nb * per;
    int32_t *host = calloc(words, sizeof(int32_t));
    void *meta = NULL;
    if (!host || dspy_kv_cache_init(&c.kv, be, cf, nb * per * 16, 16) || dspy_fwd_buf_init(&c.buf, be, cf, n, nb) ||
        be->ops->alloc(be, words * sizeof(int32_t), &meta)) {
        fprintf(stderr, "bench_step: %s\n", dspy_errmsg());
        goto done;
    }
    /* not zeros: the keys and values of the earlier positions as a decode step finds them */
    be->ops->fill(be, c.kv.k, 0.02f);
    be->ops->fill(be, c.kv.v, 0.5f);
    be->ops->fill(be, c.buf.x, 0.25f);
    const int p0 = ctx_len - P; /* the first fed position */
    for (int s = 0; s < nb; s++) {
        for (int j = 0; j < P; j++) {
            const int r = s * P + j, pos = p0 + j;
            host[o_tok + r] = 9906 + (r % 1000);
            host[o_pos + r] = pos;
            host[o_slot + r] = (s * per + pos / 16) * 16 + pos % 16;
        }
        host[o_rows + s] = s * P + P - 1;
        dspy_attn_seg sg = {s * P, P, p0, s * per}; /* its rows, after p0 positions, its table */
        memcpy(host + o_seg + 4 * s, &sg, sizeof sg);
        dspy_sample_param sp = {0, 1, 0, 0, 0};
        memcpy(host + o_par + DSPY_SAMPLE_PARAM_WORDS * s, &sp, sizeof sp);
        /* the first `shared` positions' full blocks are sequence 0's, in every table (a shared prefix,
         * as the prefix cache gives B2's requests); the rest each sequence's own */
        for (int b = 0; b < per; b++) host[o_tab + s * per + b] = b < shared / 16 && b < p0 / 16 ? b : s * per + b;
    }
    /* the hint the engine gives a decode step: every sequence, the shared blocks' positions (whole
     * 16-key groups below the new position); read with DSPY_CUDA_CASCADE=1 */
    if (P == 1) {
        const int nsb = shared / 16 < (ctx_len - 1) / 16 ? shared / 16 : (ctx_len - 1) / 16;
        host[o_sh] = nb >= 2 && nsb * 16 >= 64 ? nb : 0;
        host[o_sh + 1] = host[o_sh] ? nsb * 16 : 0;
    }
    be->ops->copy(be, meta, host, words * sizeof(int32_t), DSPY_COPY_H2D);
    be->ops->sync(be);
    int32_t *d = meta;
    c.b.n = n;
    c.b.tokens = dspy_bt(be, d + o_tok, n, DSPY_DTYPE_I32);
    c.b.pos = dspy_bt(be, d + o_pos, n, DSPY_DTYPE_I32);
    c.b.slots = dspy_bt(be, d + o_slot, n, DSPY_DTYPE_I32);
    c.b.attn = (dspy_attn_meta){dspy_bt(be, d + o_seg, 4 * nb, DSPY_DTYPE_I32),
                                dspy_bt(be, d + o_tab, (int64_t)nb * per, DSPY_DTYPE_I32), nb, n, 16, per * 16, P == 1,
                                P == 1 ? dspy_bt(be, d + o_sh, 2, DSPY_DTYPE_I32) : dspy_tensor_none()};
    c.b.out_rows = dspy_bt(be, d + o_rows, nb, DSPY_DTYPE_I32);
    c.b.n_out = nb;
    c.params = dspy_bt(be, d + o_par, (int64_t)DSPY_SAMPLE_PARAM_WORDS * nb, DSPY_DTYPE_I32);
    c.tok = dspy_bt(be, d + o_res, nb, DSPY_DTYPE_I32), c.lp = dspy_bt(be, d + o_res + 64, nb, DSPY_DTYPE_F32);
    struct {
        const char *name;
        int leave;
    } v[] = {{"forward+sample", -1},
             {"forward+greedy (the sampler in the logits op)", -2},
             {"ops composed", 0},
             {"  without attn_in", LEAVE_ATTN_IN},
             {"  without attention", LEAVE_ATTENTION},
             {"  without o_proj", LEAVE_O},
             {"  without mlp_in", LEAVE_MLP_IN},
             {"  without down", LEAVE_DOWN},
             {"  without logits+sample", LEAVE_LOGITS | LEAVE_SAMPLE},
             {"  without sample", LEAVE_SAMPLE},
             /* the attention calls back to back, and the rest of that graph (the embedding) alone */
             {"  attention only", LEAVE_ATTN_IN | LEAVE_O | LEAVE_MLP_IN | LEAVE_DOWN | LEAVE_LOGITS | LEAVE_SAMPLE},
             {"  embedding only", LEAVE_ATTN_IN | LEAVE_ATTENTION | LEAVE_O | LEAVE_MLP_IN | LEAVE_DOWN | LEAVE_LOGITS | LEAVE_SAMPLE},
             {"forward+sample, launched (no graph)", -1}};
    /* floors: the bytes (decode_bytes, the attended keys and values) at the copy bandwidth; the
     * FLOPs (the projections over every row, the lm_head over the sampled rows, causal attention
     * over each segment) at --peak-tflops */
    const double L = cf->num_hidden_layers, C = cf->hidden_size, I = cf->intermediate_size, V = cf->vocab_size;
    const double Q = (double)cf->num_attention_heads * cf->head_dim, KV = (double)cf->num_key_value_heads * cf->head_dim;
    const double flops = 2.0 * n * L * (C * (Q + 2 * KV) + Q * C + C * 2 * I + I * C) + 2.0 * nb * C * V +
                         4.0 * L * Q * nb * (double)P * (p0 + (P + 1) / 2.0);
    const double floor_us = fmax(bw > 0 ? step_floor_bytes(m, ctx_len, nb, shared) / bw * 1e6 : 0, flops / peak * 1e6);
    double full = 0;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        if (g_timeline && v[i].leave != -2) continue; /* a stamped build times the greedy step only */
        c.leave = v[i].leave;
        const bool eager = i + 1 == sizeof v / sizeof v[0];
        /* ten steps in one graph; the last variant launched op by op, as the engine runs prompt steps */
        double t = eager ? time_calls(be, step_once, &c, 10) : time_graph(be, step_once, &c, 10);
        if (t < 0) {
            fprintf(stderr, "bench_step: %s: %s\n", v[i].name, dspy_errmsg());
            break;
        }
        if (v[i].leave == 0) full = t;
        printf("{\"bench\": \"step\", \"batch\": %d, \"rows_each\": %d, \"shared\": %d, \"variant\": \"%s\", \"ctx\": %d, "
               "\"us\": %.1f, \"chain_cost_us\": %.1f, \"floor_us\": %.1f, \"fraction_of_floor\": %.3f}\n",
               nb, P, shared, v[i].name, ctx_len, t * 1e6, v[i].leave > 0 && full > 0 ? (full - t) * 1e6 : 0.0,
               v[i].leave < 0 ? floor_us : 0.0, v[i].leave < 0 && floor_us > 0 ? floor_us / (t * 1e6) : 0.0);
    }
    if (g_timeline) step_timeline(be, &c, g_timeline);
done:
    free(host);
    be->ops->free(be, meta);
    dspy_fwd_buf_free(&c.buf);
    dspy_kv_cache_free(&c.kv);
    dspy_backend_free(be);
}

static int32_t *random_ids(int n, int V, uint64_t seed) {
    int32_t *p = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (int32_t)((seed >> 33) % (uint64_t)(V - 1000)) + 500;
    }
    return p;
}

/* B1: one 1,500-token prompt, `gen` greedy tokens, median ms per decoded token over runs 1-3
 * (run 0 warms up: graph capture); *ttft the last run's time to the first token. single: one
 * decode step a call (dspy_engine_limit_run), as a constrained sequence's steps always are.
 * -1 on error. */
static double b1_ms(dspy_model *m, const dspy_constraint *cons, int plen, int gen, double *ttft, bool single) {
    const dspy_model_config *c = dspy_model_config_get(m);
    dspy_engine_params ep = dspy_engine_params_default();
    ep.max_seqs = 1, ep.max_batch_tokens = 2048, ep.max_tokens_total = plen + gen + 16;
    dspy_engine *e = NULL;
    if (dspy_engine_new(m, &ep, &e)) return -1;
    if (single) dspy_engine_limit_run(e, 1);
    double runs[3];
    for (int r = 0; r < 4; r++) {
        int32_t *p = random_ids(plen, c->vocab_size, 1000 + (uint64_t)r);
        dspy_sampling sp = dspy_sampling_default();
        sp.temperature = 0, sp.max_tokens = gen, sp.ignore_eos = true, sp.constraint = cons;
        int64_t id;
        dspy_status st = dspy_engine_add(e, p, (size_t)plen, &sp, &id);
        free(p);
        if (st) {
            dspy_engine_free(e);
            return -1;
        }
        double steps[512];
        int ns = 0, got = 0;
        double ts = dspy_now_s(), tfirst = 0;
        for (;;) {
            double s0 = dspy_now_s();
            dspy_step_out so;
            if (dspy_engine_step(e, &so)) {
                dspy_engine_free(e);
                return -1;
            }
            if (so.n_events == 0) break;
            double dt = dspy_now_s() - s0;
            /* a decode run gives several tokens a call (dspy_engine_params.multi_steps): time per token */
            int k = 0;
            for (int32_t q = 0; q < so.n_events; q++) k += so.events[q].token >= 0;
            if (k > 0) {
                if (got == 0) tfirst = dspy_now_s() - ts;
                else if (ns < 512) steps[ns++] = dt / k;
                got += k;
            }
            if (so.events[so.n_events - 1].finish) break;
        }
        if (r > 0) runs[r - 1] = test_median(steps, ns), *ttft = tfirst;
    }
    dspy_engine_free(e);
    return test_median(runs, 3) * 1e3;
}

int main(int argc, char **argv) {
    const char *dir = NULL, *device = "cuda";
    int chunk = 32768, n_prompts = 100, plen = 1500, gen = 128;
    double peak = 789e12;
    int only_b1 = 0, only_prefill = 0, only_step = 0, only_prefill_ops = 0, step_batch = 1, step_shared = 0;
    int step_rows = 1, step_ctx = 0;
    bool f8 = false, a8 = false;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--device")) device = argv[i + 1];
        else if (!strcmp(argv[i], "--prefill-chunk")) chunk = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prompts")) n_prompts = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--peak-tflops")) peak = atof(argv[i + 1]) * 1e12;
        else if (!strcmp(argv[i], "--only-b1")) only_b1 = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--only-prefill")) only_prefill = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--only-step")) only_step = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--only-prefill-ops")) only_prefill_ops = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--step-batch")) step_batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--step-shared")) step_shared = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--step-rows")) step_rows = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--step-ctx")) step_ctx = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--timeline")) g_timeline = argv[i + 1];
        else if (!strcmp(argv[i], "--weights")) a8 = !strcmp(argv[i + 1], "w8a8"), f8 = a8 || !strcmp(argv[i + 1], "fp8");
    }
    if (!dir) {
        fprintf(stderr, "usage: bench_gpu --model DIR [--device cuda] [--prefill-chunk N] [--prompts N] [--only-step 1 "
                        "[--step-batch B] [--step-shared P] [--step-rows R] [--step-ctx L] [--timeline PATH]] "
                        "[--weights fp8|w8a8]\n");
        return 2;
    }
    /* before the model loads: a run that cannot stamp says so at once */
    if (g_timeline && !only_step) {
        fprintf(stderr, "bench_gpu: --timeline goes with --only-step 1\n");
        return 2;
    }
#ifdef DSPY_HAVE_CUDA
    const bool stamps = dspy_cu_timeline_built();
#else
    const bool stamps = false;
#endif
    if (g_timeline && !stamps) {
        fprintf(stderr, "bench_gpu: --timeline %s: this build has no stamps (a CUDA build configured with "
                        "-DDSPY_CUDA_TIMELINE=ON)\n", g_timeline);
        return 2;
    }
    dspy_model_params mp = dspy_model_params_default();
    mp.device = device;
    mp.f8_decode = f8;
    mp.f8_act = a8;
    dspy_model *m = NULL;
    double t0 = dspy_now_s();
    if (dspy_model_load(dir, &mp, &m)) return fail("load");
    double t_load = dspy_now_s() - t0;
    const dspy_model_config *c = dspy_model_config_get(m);
    char name[256] = "cpu";
    if (dspy_model_device(m).type == DSPY_DEVICE_CUDA) dspy_cuda_device_name(dspy_model_device(m).ordinal, name, sizeof name);
    double bw = copy_bandwidth(dspy_model_device(m));
    size_t wbytes = dspy_model_weight_bytes(m);
    printf("{\"bench\": \"copy\", \"device\": \"%s\", \"GBps\": %.1f, \"weight_bytes\": %zu, \"load_s\": %.2f}\n", name,
           bw / 1e9, wbytes, t_load);

    if (only_prefill_ops) {
        bench_prefill_ops(m, 16384, 1488);
        dspy_model_free(m);
        return 0;
    }
    if (dspy_model_device(m).type == DSPY_DEVICE_CUDA && !only_b1 && !only_prefill) {
        if (!only_step) bench_ops(m, bw, plen);
        bench_step(m, step_ctx > 0 ? step_ctx : plen + gen / 2, step_batch, step_rows, step_shared, bw, peak);
        if (only_step) {
            dspy_model_free(m);
            return g_timeline_failed;
        }
        bench_prefill_ops(m, 16384, 1488);
    }
    if (only_prefill) goto prefill;

    /* ---- B1: batch-1 decode, free and under a constraint ---- */
    double ttft = 0, ttft_c = 0, ttft_1 = 0;
    double ms = b1_ms(m, NULL, plen, gen, &ttft, false);
    double ms1 = b1_ms(m, NULL, plen, gen, &ttft_1, true);
    if (ms < 0 || ms1 < 0) return fail("B1");
    /* the mask's cost per token: a FREE state that bans one token (a mask row built, copied and
     * applied every step: the worst case, as a LIST state's row is mostly zeros to build) */
    dspy_constraint *cons = NULL;
    if (dspy_constraint_new(1, c->vocab_size, &cons) || dspy_constraint_set_free(cons, 0, 0) ||
        dspy_constraint_set_token(cons, 0, 0, -1))
        return fail("constraint");
    double ms_c = b1_ms(m, cons, plen, gen, &ttft_c, false);
    dspy_constraint_free(cons);
    if (ms_c < 0) return fail("B1 constrained");
    double floor_ms = bw > 0 ? (double)decode_bytes(m) / bw * 1e3 : 0;
    printf("{\"bench\": \"B1\", \"ms_per_token\": %.4f, \"tokens_per_s\": %.1f, \"floor_ms\": %.4f, "
           "\"fraction_of_floor\": %.3f, \"prefill_1500_ms\": %.2f, \"single_steps_ms_per_token\": %.4f}\n",
           ms, 1e3 / ms, floor_ms, floor_ms / ms, ttft * 1e3, ms1);
    /* the mask's overhead against the same step structure: a constrained sequence never runs
     * several decode steps at once, so it is compared with single steps */
    printf("{\"bench\": \"B1_constrained\", \"ms_per_token\": %.4f, \"overhead\": %.4f}\n", ms_c, ms_c / ms1 - 1);

    if (only_b1) {
        dspy_model_free(m);
        return 0;
    }
    /* ---- prefill: n_prompts x plen ---- */
prefill:;
    dspy_engine_params ep = dspy_engine_params_default();
    dspy_engine *e = NULL;
    ep.max_seqs = n_prompts, ep.max_batch_tokens = chunk, ep.max_tokens_total = n_prompts * (plen + 16);
    if (dspy_engine_new(m, &ep, &e)) return fail("engine (prefill)");
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        int32_t *p = random_ids(plen * n_prompts, c->vocab_size, 77 + (uint64_t)r);
        double ts = dspy_now_s();
        for (int i = 0; i < n_prompts; i++) {
            dspy_sampling sp = dspy_sampling_default();
            sp.temperature = 0, sp.max_tokens = 1, sp.ignore_eos = true;
            int64_t id;
            if (dspy_engine_add(e, p + (size_t)i * plen, (size_t)plen, &sp, &id)) return fail("add (prefill)");
        }
        int done = 0;
        while (done < n_prompts) {
            dspy_step_out so;
            if (dspy_engine_step(e, &so)) return fail("step (prefill)");
            for (int k = 0; k < so.n_events; k++) done += so.events[k].finish != DSPY_FINISH_NONE;
            if (so.n_events == 0) break;
        }
        double dt = dspy_now_s() - ts;
        if (dt < best) best = dt;
        free(p);
    }
    dspy_engine_free(e);
    double tokens = (double)n_prompts * plen;
    double params = (double)dspy_model_config_params(c) - (double)c->vocab_size * c->hidden_size; /* no embedding */
    double attn = 4.0 * c->num_hidden_layers * c->num_attention_heads * c->head_dim * 0.5 * (double)plen * plen * n_prompts;
    double flops = 2.0 * params * tokens + attn;
    printf("{\"bench\": \"prefill\", \"prompts\": %d, \"prompt_tokens\": %d, \"chunk\": %d, \"seconds\": %.4f, "
           "\"tokens_per_s\": %.0f, \"tflops\": %.1f, \"floor_s\": %.4f}\n",
           n_prompts, plen, chunk, best, tokens / best, flops / best / 1e12, flops / peak);
    dspy_model_free(m);
    return 0;
}
