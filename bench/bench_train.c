/* bench_train.c — issue 11's T1 training benchmark: full fine-tuning of a model directory (the
 * Llama-3.2-1B shape of bench/torch_baseline.py --make-model) on the device trainer, 4 packed
 * sequences x 2,048 tokens per optimizer step, the loss on the last fifth of each sequence.
 *
 * The data is synthetic and fixed (token ids from a splitmix64 stream, seed 1): sequence s of a
 * step is ids[t], t < T; labels[t] = ids[t + 1] for t in [T - T/5 - 1, T - 1) — exactly the
 * positions transformers trains on when bench/torch_train.py masks the first T - T/5 labels
 * with -100 (its shift drops the last one). AdamW (lr 1e-5, betas 0.9/0.999, eps 1e-8, weight
 * decay 0) with clip_grad_norm_ 1.0, as the PyTorch side.
 *
 * Measured: `warmup` steps (plans, cuBLASLt heuristics), then `steps` timed steps (each ends in
 * the step's one wait, so wall time is device time): tokens/s = steps * seqs * T / seconds;
 * MFU = 6 * params * tokens/s / peak (issue 11: 6 N per token against the measured 789 TFLOP/s
 * BF16 peak of the H200; the LM head counts in N although ours computes it only where the loss
 * is); device memory in use after the steps (cudaMemGetInfo total - free: every buffer is
 * allocated before the first step, so this is the peak, CUDA context included) and the same
 * before the trainable existed.
 *
 * Then where a step goes (each part timed alone, ending in a wait, median of 3): the forward pass
 * of one sequence (dspy_trainable_loss), its forward + backward (dspy_trainable_step), the
 * rest of a step (optimizer: zero_grad, norms, AdamW, the BF16 refresh = step - seqs x
 * forward+backward), and the attention forward + backward of one layer at this T (the
 * training attention ops alone, one example of T tokens), times layers x seqs; then the
 * attention's forward and backward apart with their TFLOP/s, and (BF16) the same ops on the
 * WMMA kernels the flash ones replaced ({"bench": "T1_attention", ...}).
 *
 * T3 (--lora R): the same steps with LoRA adapters of rank R on every linear layer of the
 * blocks (q, k, v, o, gate, up, down: peft's "all-linear" minus lm_head), alpha 2R, dropout 0.05
 * (DSPy's use_peft defaults at R = 32; --lora-dropout P for another) over the frozen BF16 base;
 * tokens/s, memory and losses ({"bench": "T3", ...}), then the same profile ({"bench":
 * "T3_profile", ...}; the fwd and fwd_bwd parts are one sequence alone, unpacked) and, per linear
 * shape at the packed pass's tokens, the base GEMM, its dgrad and each LoRA entry alone
 * ({"bench": "T3_ops", ...}).
 *
 * T2 (--t2): issue 11's tutorial workload, one epoch (--epochs N: N) of 500 examples of a shared
 * 1,300-token prompt and a ~280-token continuation (240 .. 320), labels on the last 80 tokens,
 * one example per sequence, batch 1 x 8 accumulation (8 examples an optimizer step, the last
 * step 4), lr 1e-5 constant, clipping 1.0, BF16, planned for DSPy's max_seq_length 4096, in
 * order. Token ids from splitmix64 seed 2 (bench/torch_train.py --t2 draws the same): the
 * prompt's 1,300, then per example its continuation length 240 + (x % 81) and its tokens. Run
 * with prefix-shared steps (train/share_prefix.h: one 1,300-token prompt + 8 continuations per
 * step) and without (--share on|off|both, default both; each mode a fresh trainable from the
 * same weights, after `warmup` steps on the first batch, default 1, not timed). Reported per
 * mode: the epoch's wall time, steps, tokens (whole examples) and tokens computed, tokens/s,
 * and the 5-epoch estimate = 5 x the measured epoch (the epochs are alike: an estimate, not a
 * measurement, unless --epochs 5); the losses of the first and last steps and the largest
 * per-step loss difference between the two modes ({"bench": "T2", ...}).
 *
 * Parity at the 1B shape (issue 11, item 5): T1's and T3's lines carry every step's loss
 * ("losses", warm-up steps first) for bench/torch_train.py --curve-vs to compare with PyTorch's
 * step by step; --export DIR (T1) then writes the trained model as a checkpoint (the trainer's
 * export: config, safetensors in the model's dtype), loads it back as a model on the same device
 * and writes its logits of 64 fixed tokens (splitmix64 seed 3) to DIR/dspy_logits.f32 (64 x V
 * F32) and the tokens to DIR/dspy_ids.txt, for torch_train.py --check-export DIR to compare with
 * transformers' logits of the same checkpoint ({"bench": "T1_export", ...}).
 *
 * Several GPUs (issue 17): with torchrun's variables (WORLD_SIZE > 1, RANK, LOCAL_RANK,
 * MASTER_ADDR/PORT; one process per GPU) T1/T3 run `seqs` sequences a GPU, a step's batch being
 * seqs x world sequences split by the optimizer (train/optim.h), NCCL summing the gradients;
 * rank 0 prints the tokens/s of all ranks ({"bench": "dist", ...} first; no profile).
 *
 * Usage: bench_train --model DIR [--device cuda] [--seqs 4] [--T 2048] [--steps 10] [--warmup 2]
 *                    [--f32] [--peak-tflops 789] [--no-profile] [--lora R] [--lora-dropout 0.05] [--export DIR]
 *        bench_train --t2 --model DIR [--epochs 1] [--share both|on|off] [--warmup 1] [--examples 500]
 * Prints one JSON object per measurement ({"bench": "T1", ...}, {"bench": "T1_profile", ...},
 * {"bench": "T2", ...}) for bench/run_gpu.sh to tabulate.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/backend.h"
#include "dspy/clock.h"
#include "dspy/engine.h"
#include "dspy/model.h"
#include "dspy/rng.h"
#include "train/dist.h"
#include "train/optim.h"
#include "train/share_prefix.h"
#include "train/trainable_impl.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median3(double v[3]) {
    qsort(v, 3, sizeof *v, cmp_d);
    return v[1];
}

static int fail(const char *what) {
    fprintf(stderr, "bench_train: %s: %s\n", what, dspy_errmsg());
    return 1;
}

/* Device memory in use (total - free) in GB, or -1 off CUDA. */
static double used_gb(dspy_device dev) {
    size_t fr = 0, tot = 0;
    if (dev.type != DSPY_DEVICE_CUDA || dspy_cuda_mem_info(dev.ordinal, &fr, &tot)) return -1;
    return (double)(tot - fr) / 1e9;
}

/* The attention forward and backward of one layer for one example of T tokens, ms each (median of
 * 3); 0 on success. */
/* The trained trainable `t` as a checkpoint in `dir`, loaded back on `dev`, its logits of 64 fixed
 * tokens written beside it (see the header). */
static int export_check(dspy_trainable *t, const char *dir, dspy_device dev) {
    enum { N = 64 };
    if (dspy_trainable_export(t, dir, NULL)) return fail("export");
    char devname[32], path[1024];
    snprintf(devname, sizeof devname, dev.type == DSPY_DEVICE_CUDA ? "cuda:%d" : "cpu", dev.ordinal);
    dspy_model_params mp = dspy_model_params_default();
    mp.device = devname;
    dspy_model *m = NULL;
    if (dspy_model_load(dir, &mp, &m)) return fail("export: loading it back");
    const int32_t V = dspy_model_config_get(m)->vocab_size;
    int32_t ids[N];
    uint64_t rng = 3;
    for (int i = 0; i < N; i++) ids[i] = (int32_t)(dspy_splitmix64(&rng) % (uint64_t)V);
    float *logits = malloc(sizeof(float) * (size_t)N * (size_t)V);
    int rc = 1;
    if (!logits) fprintf(stderr, "bench_train: out of memory\n");
    else if (dspy_model_forward_logits(m, ids, N, logits)) fail("export: logits");
    else {
        snprintf(path, sizeof path, "%s/dspy_logits.f32", dir);
        FILE *f = fopen(path, "wb");
        bool ok = f && fwrite(logits, sizeof(float), (size_t)N * (size_t)V, f) == (size_t)N * (size_t)V;
        if (f && fclose(f)) ok = false;
        snprintf(path, sizeof path, "%s/dspy_ids.txt", dir);
        FILE *g = ok ? fopen(path, "w") : NULL;
        for (int i = 0; g && i < N; i++) fprintf(g, "%d\n", ids[i]);
        if (g && fclose(g)) g = NULL;
        if (!ok || !g) fprintf(stderr, "bench_train: writing %s/dspy_logits.f32 or dspy_ids.txt failed\n", dir);
        else {
            printf("{\"bench\": \"T1_export\", \"dir\": \"%s\", \"tokens\": %d, \"vocab\": %d}\n", dir, N, V);
            rc = 0;
        }
    }
    free(logits);
    dspy_model_free(m);
    return rc;
}

/* ", \"losses\": [l0, l1, ...]" of n steps into out (room for n numbers). */
static void losses_json(const double *l, int n, char *out, size_t cap) {
    size_t k = (size_t)snprintf(out, cap, ", \"losses\": [");
    for (int i = 0; i < n && k < cap; i++) k += (size_t)snprintf(out + k, cap - k, "%s%.5f", i ? ", " : "", l[i]);
    if (k < cap) snprintf(out + k, cap - k, "]");
}

static int attention_ms(dspy_trainable *t, int T, double *fwd_ms, double *bwd_ms) {
    dspy_backend *be = t->be;
    const dspy_ops *o = be->ops;
    const dspy_model_config *c = &t->cfg;
    int NH = c->num_attention_heads, NKV = c->num_key_value_heads, HS = c->head_dim;
    size_t nq = (size_t)T * NH * HS, nk = (size_t)T * NKV * HS;
    size_t sizes[9] = {nq, nk, nk, nq, (size_t)T * NH, nq, nk, nk, nq}; /* q k v out lse dq dk dv dout */
    float *p[9] = {0};
    int32_t *start = NULL;
    int rc = -1;
    double vf[3], vb[3];
    /* q, k, v in the trainer's attention dtype (BF16: the tensor-core kernels) */
    dspy_dtype dt[9];
    for (int i = 0; i < 9; i++) dt[i] = t->bf16 && i < 3 ? DSPY_DTYPE_BF16 : DSPY_DTYPE_F32;
    for (int i = 0; i < 9; i++)
        if (o->alloc(be, sizes[i] * dspy_dtype_size(dt[i]), (void **)&p[i])) goto done;
    if (o->alloc(be, (size_t)T * sizeof(int32_t), (void **)&start)) goto done;
    for (int i = 0; i < 9; i++)
        if (o->fill(be, dspy_bt(be, p[i], (int64_t)sizes[i], dt[i]), i == 4 ? 0.0f : 0.01f)) goto done;
    /* one example: every start is 0 (I32 zeros are F32 zeros) */
    if (o->fill(be, dspy_bt(be, start, T, DSPY_DTYPE_F32), 0.0f)) goto done;
#define FT(i) dspy_bt(be, p[i], (int64_t)sizes[i], dt[i])
    for (int r = 0; r < 4; r++) {
        dspy_tensor st = dspy_bt(be, start, T, DSPY_DTYPE_I32);
        double t0 = dspy_now_s();
        if (o->attention_train(be, FT(3), FT(4), FT(0), FT(1), FT(2), st, 0, T, NH, NKV, HS) || o->sync(be)) goto done;
        double t1 = dspy_now_s();
        if (o->attention_train_backward(be, FT(5), FT(6), FT(7), FT(8), FT(3), FT(4), FT(0), FT(1), FT(2), st, 0, T,
                                        NH, NKV, HS) ||
            o->sync(be))
            goto done;
        if (r) vf[r - 1] = 1e3 * (t1 - t0), vb[r - 1] = 1e3 * (dspy_now_s() - t1);
    }
#undef FT
    *fwd_ms = median3(vf), *bwd_ms = median3(vb);
    rc = 0;
done:
    for (int i = 0; i < 9; i++) o->free(be, p[i]);
    o->free(be, start);
    return rc;
}

/* Where a step of step_ms goes (see the file comment); prints {"bench": "<name>_profile", ...}. */
static int profile_step(dspy_trainable *t, const dspy_train_seq *batch, int seqs, double step_ms, const char *name) {
    double f[3], fb[3], ls;
    int64_t nl;
    for (int r = 0; r < 3; r++) {
        double t0 = dspy_now_s();
        if (dspy_trainable_loss(t, &batch[0], &ls, &nl)) return fail("profile (forward)");
        f[r] = 1e3 * (dspy_now_s() - t0);
        t0 = dspy_now_s();
        if (dspy_trainable_step(t, &batch[0], 1e-3f, &ls, &nl)) return fail("profile (forward + backward)");
        fb[r] = 1e3 * (dspy_now_s() - t0);
    }
    double fwd = median3(f), fwdbwd = median3(fb), af, ab, wf = 0, wb = 0;
    int T = batch[0].T;
    if (attention_ms(t, T, &af, &ab)) return fail("profile (attention)");
    /* the same with the WMMA kernels the flash ones replaced (BF16 trainer, HS 64 / 128) */
    if (t->bf16) {
        setenv("DSPY_CUDA_TRAIN_ATTN", "wmma", 1);
        int e = attention_ms(t, T, &wf, &wb);
        unsetenv("DSPY_CUDA_TRAIN_ATTN");
        if (e) return fail("profile (attention, wmma)");
    }
    int L = t->cfg.num_hidden_layers;
    double att = af + ab;
    printf("{\"bench\": \"%s_profile\", \"step_ms\": %.2f, \"fwd_ms_per_seq\": %.2f, \"fwd_bwd_ms_per_seq\": %.2f, "
           "\"rest_of_step_ms\": %.2f, \"attention_fwd_bwd_ms_per_layer\": %.3f, \"attention_ms_per_step\": %.2f}\n",
           name, step_ms, fwd, fwdbwd, step_ms - seqs * fwdbwd, att, att * L * seqs);
    /* causal FLOPs of one layer: forward 2 T^2 NH HS (two products over half the T x T scores),
     * backward 2.5 x that (five products) */
    const dspy_model_config *c = &t->cfg;
    double ff = 2.0 * T * (double)T * c->num_attention_heads * c->head_dim, fb_ = 2.5 * ff;
    printf("{\"bench\": \"T1_attention\", \"T\": %d, \"fwd_ms\": %.3f, \"bwd_ms\": %.3f, \"fwd_tflops\": %.1f, "
           "\"bwd_tflops\": %.1f, \"wmma_fwd_ms\": %.3f, \"wmma_bwd_ms\": %.3f}\n",
           T, af, ab, ff / (af * 1e9), fb_ / (ab * 1e9), wf, wb);
    return 0;
}

/* ---- T3: the LoRA entries alone ---------------------------------------------------------- */

/* ms of `reps` calls of op k (see lora_ops) between two waits, median of 3; -1 on failure. */
typedef struct {
    dspy_trainable *t;
    int T, in, out, lin;
    void *x16, *xd16, *y16, *u16, *du16, *dy16, *dxd16, *dxf, *gA, *gB, *A16, *B16;
} lora_bench;

static dspy_status lora_op(lora_bench *b, int k) {
    dspy_trainable *t = b->t;
    dspy_backend *be = t->be;
    const dspy_ops *o = be->ops;
    int T = b->T, in = b->in, out = b->out, r = t->lora.r;
    float p = t->lora.dropout > 0 ? t->lora.dropout : 0.05f;
#define BB(q, n) dspy_bt(be, (q), (int64_t)(n), DSPY_DTYPE_BF16)
#define FF(q, n) dspy_bt(be, (q), (int64_t)(n), DSPY_DTYPE_F32)
    uint16_t *w16 = t->layers[0].w16[b->lin];
    switch (k) {
    case 0: /* the base GEMM this adapter rides on */
        return o->linear(be, BB(b->y16, T * out), BB(b->x16, T * in), BB(w16, out * in), dspy_tensor_none(), T, in,
                         out, false);
    case 1: /* its dgrad (frozen base: no wgrad) */
        return o->linear_backward_beta(be, FF(b->dxf, T * in), dspy_tensor_none(), BB(b->dy16, T * out),
                                       dspy_tensor_none(), BB(w16, out * in), T, in, out, 0.0f, 0.0f);
    case 2: /* the dropped LoRA input */
        return o->dropout_acc(be, BB(b->xd16, T * in), BB(b->x16, T * in), p, 7, false);
    case 3:
        return o->lora_forward(be, BB(b->y16, T * out), BB(b->u16, T * r), BB(b->xd16, T * in), BB(b->A16, r * in),
                               BB(b->B16, out * r), T, in, r, out, t->lora_scale);
    case 4:
        return o->lora_backward(be, BB(b->dxd16, T * in), FF(b->gA, r * in), FF(b->gB, out * r), BB(b->du16, T * r),
                                BB(b->dy16, T * out), BB(b->xd16, T * in), BB(b->u16, T * r), BB(b->A16, r * in),
                                BB(b->B16, out * r), T, in, r, out, t->lora_scale, 0.0f);
    default: /* the masked input gradient into the F32 dx */
        return o->dropout_acc(be, FF(b->dxf, T * in), BB(b->dxd16, T * in), p, 7, true);
    }
#undef BB
#undef FF
}

/* For each linear shape of a layer at the packed pass's T tokens: the base GEMM and dgrad and each
 * LoRA entry alone ({"bench": "T3_ops", ...}, ms, 10 calls between waits, median of 3); 0 on success. */
static int lora_ops(dspy_trainable *t, int T) {
    dspy_backend *be = t->be;
    const dspy_ops *o = be->ops;
    if (!t->bf16 || !o->lora_forward) return 0;
    const int lins[5] = {LIN_Q, LIN_K, LIN_O, LIN_GATE, LIN_DOWN};
    for (int li = 0; li < 5; li++) {
        lora_bench b = {.t = t, .T = T, .lin = lins[li]};
        dspy_train_lin_dims(&t->cfg, b.lin, &b.in, &b.out);
        size_t r = (size_t)t->lora.r, in = (size_t)b.in, out = (size_t)b.out, TT = (size_t)T;
        void **bufs[12] = {&b.x16, &b.xd16, &b.y16, &b.u16,  &b.du16, &b.dy16,
                           &b.dxd16, &b.dxf, &b.gA, &b.gB, &b.A16, &b.B16};
        size_t bytes[12] = {2 * TT * in, 2 * TT * in, 2 * TT * out, 2 * TT * r, 2 * TT * r, 2 * TT * out,
                            2 * TT * in, 4 * TT * in, 4 * r * in, 4 * out * r, 2 * r * in, 2 * out * r};
        int rc = 0;
        for (int i = 0; i < 12 && !rc; i++) {
            rc = o->alloc(be, bytes[i], bufs[i]) != DSPY_OK;
            /* small values (nothing overflows); the F32 buffers are dxf, gA and gB */
            dspy_dtype dt = i >= 7 && i <= 9 ? DSPY_DTYPE_F32 : DSPY_DTYPE_BF16;
            int64_t n = (int64_t)(bytes[i] / dspy_dtype_size(dt));
            if (!rc) rc = o->fill(be, dspy_bt(be, *bufs[i], n, dt), 0.01f) != DSPY_OK;
        }
        double ms[6] = {0};
        for (int k = 0; k < 6 && !rc; k++) {
            double v[3];
            for (int trial = 0; trial < 4 && !rc; trial++) {
                double t0 = dspy_now_s();
                for (int rep = 0; rep < 10 && !rc; rep++) rc = lora_op(&b, k) != DSPY_OK;
                if (!rc) rc = o->sync(be) != DSPY_OK;
                if (trial) v[trial - 1] = 1e3 * (dspy_now_s() - t0) / 10;
            }
            if (!rc) ms[k] = median3(v);
        }
        for (int i = 0; i < 12; i++) o->free(be, *bufs[i]);
        if (rc) return fail("T3 ops");
        printf("{\"bench\": \"T3_ops\", \"T\": %d, \"in\": %d, \"out\": %d, \"base_fwd_ms\": %.3f, \"base_dgrad_ms\": "
               "%.3f, \"dropout_ms\": %.3f, \"lora_fwd_ms\": %.3f, \"lora_bwd_ms\": %.3f, \"dropout_add_ms\": %.3f}\n",
               T, b.in, b.out, ms[0], ms[1], ms[2], ms[3], ms[4], ms[5]);
    }
    return 0;
}

/* ---- T2 ------------------------------------------------------------------------------------ */

enum { T2_PREFIX = 1300, T2_CONT = 280, T2_LABELS = 80, T2_ACCUM = 8, T2_MAX_LEN = 4096 };

typedef struct {
    int n;            /* examples */
    int32_t **ids;    /* (n) each (len[e]) */
    int32_t **labels; /* (n) shifted: labels[t] = ids[t + 1] on the last T2_LABELS tokens */
    int32_t *len;
} t2_data;

static void t2_free(t2_data *d) {
    for (int e = 0; e < d->n && d->ids; e++) free(d->ids[e]), free(d->labels[e]);
    free(d->ids), free(d->labels), free(d->len);
}

/* The examples (see the file comment); false when out of memory. */
static bool t2_make(t2_data *d, int n, int32_t V) {
    d->n = n;
    d->ids = calloc((size_t)n, sizeof *d->ids), d->labels = calloc((size_t)n, sizeof *d->labels);
    d->len = calloc((size_t)n, sizeof *d->len);
    if (!d->ids || !d->labels || !d->len) return false;
    uint64_t rng = 2;
    int32_t prompt[T2_PREFIX];
    for (int i = 0; i < T2_PREFIX; i++) prompt[i] = (int32_t)(dspy_splitmix64(&rng) % (uint64_t)V);
    for (int e = 0; e < n; e++) {
        int c = T2_CONT - 40 + (int)(dspy_splitmix64(&rng) % 81), L = T2_PREFIX + c;
        d->len[e] = L;
        d->ids[e] = malloc(sizeof(int32_t) * (size_t)L), d->labels[e] = malloc(sizeof(int32_t) * (size_t)L);
        if (!d->ids[e] || !d->labels[e]) return false;
        memcpy(d->ids[e], prompt, sizeof prompt);
        for (int i = T2_PREFIX; i < L; i++) d->ids[e][i] = (int32_t)(dspy_splitmix64(&rng) % (uint64_t)V);
        for (int t = 0; t < L; t++) d->labels[e][t] = t >= L - 1 - T2_LABELS && t < L - 1 ? d->ids[e][t + 1] : -100;
    }
    return true;
}

/* One mode of T2 (share on or off) on a fresh trainable; losses (steps) are written; 0 on success. */
static int t2_mode(dspy_model *m, dspy_device dev, const t2_data *d, bool share, int epochs, int warmup,
                   double *losses, int *nsteps) {
    dspy_trainable *t = NULL;
    dspy_optimizer *o = NULL;
    dspy_share_buf sb = {0};
    dspy_train_seq batch[T2_ACCUM];
    int rc = 1;
    double t0 = dspy_now_s();
    if (dspy_trainable_new_on(m, NULL, 42, dev, false, &t)) return fail("T2 trainable");
    dspy_adamw_hparams h = dspy_adamw_hparams_default();
    if ((dev.type == DSPY_DEVICE_CUDA && dspy_trainable_set_bf16(t, true)) || dspy_trainable_plan(t, T2_MAX_LEN, T2_ACCUM) ||
        dspy_optimizer_new(t, &h, &o)) {
        fail("T2 setup");
        goto done;
    }
    double setup_s = dspy_now_s() - t0;
    int steps_per_epoch = (d->n + T2_ACCUM - 1) / T2_ACCUM, ns = 0;
    int64_t tokens = 0, computed = 0;
    int32_t prefix = 0;
    double tw = 0, secs = 0, warm_s = 0;
    dspy_step_stats st = {0};
    for (int k = -warmup; k < epochs * steps_per_epoch; k++) {
        if (k == 0) {
            warm_s = dspy_now_s() - t0 - setup_s;
            tw = dspy_now_s();
        }
        int s0 = k < 0 ? 0 : (k % steps_per_epoch) * T2_ACCUM, nb = d->n - s0 < T2_ACCUM ? d->n - s0 : T2_ACCUM;
        for (int i = 0; i < nb; i++)
            batch[i] = (dspy_train_seq){d->ids[s0 + i], NULL, d->labels[s0 + i], NULL, d->len[s0 + i], 0};
        const dspy_train_seq *run = batch;
        size_t nrun = (size_t)nb;
        if (share && dspy_share_prefix(&sb, batch, (size_t)nb, T2_MAX_LEN, DSPY_SHARE_MIN_PREFIX, &run, &nrun, &prefix)) {
            fail("T2 share");
            goto done;
        }
        if (dspy_optimizer_train_step(o, run, nrun, 1e-5, 1.0, &st)) {
            fail("T2 step");
            goto done;
        }
        if (k < 0) continue;
        for (int i = 0; i < nb; i++) tokens += d->len[s0 + i];
        for (size_t i = 0; i < nrun; i++) computed += run[i].T;
        losses[ns++] = st.loss;
    }
    secs = dspy_now_s() - tw;
    *nsteps = ns;
    printf("{\"bench\": \"T2\", \"share_prefix\": %s, \"prefix\": %d, \"examples\": %d, \"epochs_measured\": %d, "
           "\"steps\": %d, \"seconds\": %.3f, \"est_5_epochs_s\": %.2f, \"tokens\": %lld, \"tokens_computed\": %lld, "
           "\"tokens_per_s\": %.1f, \"loss_first\": %.5f, \"loss_last\": %.5f, \"mem_gb\": %.2f, \"setup_s\": %.1f, "
           "\"warmup_steps\": %d, \"warmup_s\": %.2f}\n",
           share ? "true" : "false", (int)prefix, d->n, epochs, ns, secs, 5.0 * secs / epochs, (long long)tokens,
           (long long)computed, (double)tokens / secs, losses[0], losses[ns - 1], used_gb(dev), setup_s, warmup, warm_s);
    fflush(stdout);
    rc = 0;
done:
    dspy_share_buf_free(&sb);
    dspy_optimizer_free(o);
    dspy_trainable_free(t);
    return rc;
}

static int t2_main(const char *model_dir, dspy_device dev, int n, int epochs, int warmup, const char *share) {
    bool on = strcmp(share, "off") != 0, off = strcmp(share, "on") != 0;
    dspy_model *m = NULL;
    t2_data d = {0};
    int rc = 1, steps = (n + T2_ACCUM - 1) / T2_ACCUM * epochs, n_on = 0, n_off = 0;
    double *l_on = calloc((size_t)steps + 1, sizeof *l_on), *l_off = calloc((size_t)steps + 1, sizeof *l_off);
    if (!l_on || !l_off) goto done;
    if (dspy_model_load(model_dir, NULL, &m)) {
        fail("model");
        goto done;
    }
    if (!t2_make(&d, n, dspy_model_config_get(m)->vocab_size)) {
        fprintf(stderr, "bench_train: out of memory\n");
        goto done;
    }
    if (off && t2_mode(m, dev, &d, false, epochs, warmup, l_off, &n_off)) goto done;
    if (on && t2_mode(m, dev, &d, true, epochs, warmup, l_on, &n_on)) goto done;
    if (on && off && n_on == n_off) {
        double w = 0;
        for (int k = 0; k < n_on; k++) w = fmax(w, fabs(l_on[k] - l_off[k]) / fabs(l_off[k]));
        printf("{\"bench\": \"T2_losses\", \"steps\": %d, \"max_rel_loss_diff_shared_vs_unshared\": %.3g}\n", n_on, w);
    }
    rc = 0;
done:
    t2_free(&d);
    dspy_model_free(m);
    free(l_on), free(l_off);
    return rc;
}

int main(int argc, char **argv) {
    const char *model_dir = NULL, *device = "cuda", *share = "both", *export_dir = NULL;
    bool t2 = false;
    int epochs = 1, examples = 500, warmup_t2 = 1;
    int seqs = 4, T = 2048, steps = 10, warmup = 2;
    bool f32 = false, profile = true;
    int lora_r = 0;
    double lora_dropout = 0.05;
    double peak = 789.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--f32")) f32 = true;
        else if (!strcmp(a, "--t2")) t2 = true;
        else if (!strcmp(a, "--no-profile")) profile = false;
        else if (!v) {
            fprintf(stderr, "bench_train: %s needs a value\n", a);
            return 2;
        } else if (!strcmp(a, "--model")) model_dir = v, i++;
        else if (!strcmp(a, "--device")) device = v, i++;
        else if (!strcmp(a, "--seqs")) seqs = atoi(v), i++;
        else if (!strcmp(a, "--T")) T = atoi(v), i++;
        else if (!strcmp(a, "--steps")) steps = atoi(v), i++;
        else if (!strcmp(a, "--warmup")) warmup = warmup_t2 = atoi(v), i++;
        else if (!strcmp(a, "--epochs")) epochs = atoi(v), i++;
        else if (!strcmp(a, "--examples")) examples = atoi(v), i++;
        else if (!strcmp(a, "--share")) share = v, i++;
        else if (!strcmp(a, "--peak-tflops")) peak = atof(v), i++;
        else if (!strcmp(a, "--lora")) lora_r = atoi(v), i++;
        else if (!strcmp(a, "--lora-dropout")) lora_dropout = atof(v), i++;
        else if (!strcmp(a, "--export")) export_dir = v, i++;
        else {
            fprintf(stderr, "bench_train: unknown option %s\n", a);
            return 2;
        }
    }
    if (!model_dir || seqs < 1 || T < 10 || steps < 1 || warmup < 0 || lora_r < 0 ||
        !(lora_dropout >= 0 && lora_dropout < 1) || (export_dir && lora_r > 0)) {
        fprintf(stderr, "usage: bench_train --model DIR [--device cuda] [--seqs 4] [--T 2048] [--steps 10] "
                        "[--warmup 2] [--f32] [--peak-tflops 789] [--lora R] [--lora-dropout 0.05] [--export DIR] "
                        "(--export: T1 only)\n");
        return 2;
    }
    dspy_device dev;
    if (dspy_device_parse(device, &dev)) return fail("device");
    if (t2) {
        if (!model_dir || epochs < 1 || examples < 1 || warmup_t2 < 0 ||
            (strcmp(share, "on") && strcmp(share, "off") && strcmp(share, "both"))) {
            fprintf(stderr, "usage: bench_train --t2 --model DIR [--epochs 1] [--share both|on|off] [--warmup 1] "
                            "[--examples 500]\n");
            return 2;
        }
        return t2_main(model_dir, dev, examples, epochs, warmup_t2, share);
    }
    /* several GPUs (issue 17): torchrun's variables place this process; `seqs` sequences a GPU,
     * the step's batch seqs x world, split by the optimizer (s % world == rank) */
    dspy_dist_env denv;
    dspy_dist *dist = NULL;
    if (dspy_dist_env_read(&denv)) return fail("WORLD_SIZE/RANK");
    if (denv.world > 1) {
        if (dev.type != DSPY_DEVICE_CUDA) {
            fprintf(stderr, "bench_train: WORLD_SIZE=%d ranks need --device cuda\n", denv.world);
            return 2;
        }
        dev.ordinal = denv.local_rank;
    }
    if (dspy_dist_new(&denv, dev.type == DSPY_DEVICE_CUDA, 300.0, &dist)) return fail("dist");
    const int world = denv.world, lead = denv.rank == 0, kseq = seqs * world;
    if (world > 1) profile = false;
    double mem0 = used_gb(dev);
    dspy_model *m = NULL;
    dspy_trainable *t = NULL;
    dspy_optimizer *o = NULL;
    int rc = 1;
    int32_t *buf = malloc(sizeof(int32_t) * 2 * (size_t)kseq * (size_t)T);
    dspy_train_seq *batch = calloc((size_t)kseq, sizeof *batch);
    double *losses = calloc((size_t)(warmup + steps), sizeof *losses);
    const size_t ljson_cap = 16 * (size_t)(warmup + steps) + 32;
    char *ljson = malloc(ljson_cap);
    if (!buf || !batch || !losses || !ljson) {
        fprintf(stderr, "bench_train: out of memory\n");
        goto done;
    }
    double t0 = dspy_now_s();
    if (dspy_model_load(model_dir, NULL, &m)) {
        fail("model");
        goto done;
    }
    int32_t V = dspy_model_config_get(m)->vocab_size;
    /* T3: DSPy's use_peft defaults (r 32, alpha 64, dropout 0.05) on every linear layer */
    dspy_lora_config lora = {.r = lora_r, .alpha = 2.0f * (float)lora_r, .dropout = (float)lora_dropout,
                             .enabled = lora_r > 0};
    if (dspy_trainable_new_on(m, lora_r > 0 ? &lora : NULL, 42, dev, false, &t)) {
        fail("trainable");
        goto done;
    }
    if (!f32 && dev.type == DSPY_DEVICE_CUDA && dspy_trainable_set_bf16(t, true)) {
        fail("bf16");
        goto done;
    }
    if (dspy_trainable_plan(t, T, kseq)) {
        fail("plan");
        goto done;
    }
    dspy_adamw_hparams h = dspy_adamw_hparams_default();
    if (dspy_optimizer_new(t, &h, &o) || dspy_optimizer_set_dist(o, dist)) {
        fail("optimizer");
        goto done;
    }
    double setup_s = dspy_now_s() - t0;
    uint64_t rng = 1;
    int lab0 = T - T / 5 - 1;
    for (int s = 0; s < kseq; s++) {
        int32_t *ids = buf + (size_t)2 * s * T, *labels = ids + T;
        for (int i = 0; i < T; i++) ids[i] = (int32_t)(dspy_splitmix64(&rng) % (uint64_t)V);
        for (int i = 0; i < T; i++) labels[i] = i >= lab0 && i < T - 1 ? ids[i + 1] : -100;
        batch[s] = (dspy_train_seq){ids, NULL, labels, NULL, T, 0};
    }
    dspy_step_stats st0 = {0}, st = {0};
    double tw = 0;
    for (int k = 0; k < warmup + steps; k++) {
        if (k == warmup) tw = dspy_now_s();
        if (dspy_optimizer_train_step(o, batch, (size_t)kseq, 1e-5, 1.0, &st)) {
            fail("step");
            goto done;
        }
        if (k == 0) st0 = st;
        losses[k] = st.loss;
    }
    losses_json(losses, warmup + steps, ljson, ljson_cap);
    double secs = dspy_now_s() - tw;
    /* tokens/s of all ranks together; MFU against one GPU's peak each */
    double params = (double)dspy_trainable_numel(t), tokens = (double)steps * kseq * T;
    double tps = tokens / secs, mfu = 6.0 * params * tps / (world * peak * 1e12);
    if (!lead) {
        rc = 0;
        goto done;
    }
    if (world > 1) printf("{\"bench\": \"dist\", \"world\": %d, \"seqs_per_gpu\": %d}\n", world, seqs);
    if (lora_r > 0) {
        /* the adapters are the trainable parameters; the frozen base has no weight gradients,
         * so 6 N per token does not apply: tokens/s is the measure */
        printf("{\"bench\": \"T3\", \"precision\": \"%s\", \"lora_r\": %d, \"lora_alpha\": %g, \"seqs\": %d, \"T\": %d, "
               "\"steps\": %d, \"seconds\": %.4f, \"step_ms\": %.2f, \"tokens_per_s\": %.1f, \"trainable_params\": %.0f, "
               "\"loss_first\": %.5f, \"loss_last\": %.5f, \"grad_norm_last\": %.5f, \"mem_gb\": %.2f, \"mem_before_gb\": %.2f, "
               "\"setup_s\": %.1f, \"lora_dropout\": %g%s}\n",
               dspy_trainable_bf16(t) ? "bf16" : "f32", lora_r, (double)lora.alpha, seqs, T, steps, secs, 1e3 * secs / steps, tps, params,
               st0.loss, st.loss, (double)st.grad_norm, used_gb(dev), mem0, setup_s, (double)lora.dropout, ljson);
        fflush(stdout);
        rc = profile ? profile_step(t, batch, seqs, 1e3 * secs / steps, "T3") : 0;
        if (!rc && profile) rc = lora_ops(t, t->work.cap);
        goto done;
    }
    printf("{\"bench\": \"T1\", \"precision\": \"%s\", \"seqs\": %d, \"T\": %d, \"steps\": %d, \"seconds\": %.4f, "
           "\"step_ms\": %.2f, \"tokens_per_s\": %.1f, \"mfu\": %.4f, \"params\": %.0f, \"labels_per_step\": %lld, "
           "\"loss_first\": %.5f, \"loss_last\": %.5f, \"grad_norm_last\": %.5f, \"mem_gb\": %.2f, "
           "\"mem_before_gb\": %.2f, \"setup_s\": %.1f%s}\n",
           dspy_trainable_bf16(t) ? "bf16" : "f32", seqs, T, steps, secs, 1e3 * secs / steps, tps, mfu, params, (long long)st.n_labels,
           st0.loss, st.loss, (double)st.grad_norm, used_gb(dev), mem0, setup_s, ljson);
    fflush(stdout);
    rc = export_dir ? export_check(t, export_dir, dev) : 0; /* before the profile's extra passes */
    if (!rc && profile) rc = profile_step(t, batch, seqs, 1e3 * secs / steps, "T1");
done:
    /* rank 0's store serves the others until every rank is through */
    if (!rc && dist && dspy_dist_barrier(dist, "bench-end")) rc = fail("barrier");
    dspy_optimizer_free(o);
    dspy_trainable_free(t);
    dspy_model_free(m);
    dspy_dist_free(dist);
    free(batch);
    free(buf);
    free(losses);
    free(ljson);
    return rc;
}
