/* kern/ops.h — the compute core: a backend is an execution context plus one table of operations
 * (DESIGN.md §6). engine/forward.c and train/backward.c call only these entries, so the same
 * model code drives every backend.
 *
 * A backend (kern/backend.h) is a device, an execution context and this table. On the CPU the
 * context is the OpenMP thread team and planned scratch; on CUDA it is a stream, a cuBLASLt
 * handle and workspace, and a sticky error. Every entry takes the backend first and tensors
 * (dspy/tensor.h) that carry their dtype and device, and returns a status. An entry never
 * aborts, never allocates (scratch is planned by dspy_backend_reserve) and, on CUDA, never
 * waits for the device: work is queued on the backend's stream, and the first failure is kept
 * (sticky) and returned by that call, every later call, and `sync`.
 *
 * Shapes use the usual letters: N rows (tokens of the batch, flattened over sequences), C model
 * width, OC output width, NH/NKV query/key-value heads, HS head size, I MLP width, V vocabulary,
 * M selected rows. Activations are row-major. Dtypes: the CPU takes F32 activations and F32 or
 * BF16 weights (a BF16 weight is widened exactly as it is read, so results equal those of the
 * widened F32 weight); CUDA takes BF16 or F32 where an entry says so and accumulates in F32.
 * An entry given a dtype it does not support returns DSPY_ERR_ARG naming the argument.
 *
 * Determinism (CPU, the reference): every output element is computed from its own inputs in a
 * fixed order that does not depend on N, on the other rows of the batch, or on the number of
 * threads. A row gives bit-identical results alone or batched, and a sequence's attention is the
 * same whether its prompt was prefilled in one chunk or several. Other backends are held to
 * stated tolerances per dtype (tests/unit/test_cuda_ops.c), not to bit identity.
 *
 * Training entries come after the inference ones. Unless an entry says otherwise, gradient
 * outputs ACCUMULATE (+=) so that several paths can add into one buffer, and an absent
 * (dspy_tensor_none()) gradient output is skipped.
 */
#ifndef DSPY_KERN_OPS_H
#define DSPY_KERN_OPS_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "dspy/status.h"
#include "dspy/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dspy_backend dspy_backend;

/* One sequence's slice of an attention call: rows [row0, row0 + n) of q/out are its new tokens
 * at positions pos0 .. pos0 + n - 1; keys/values for positions 0 .. pos0 + n - 1 are already in
 * the paged cache (qkv_rope_store ran first). Its block table is tables[table_off ...]: position
 * p lives in cache slot tables[table_off + p / block_size] * block_size + p % block_size.
 * Stored on the backend's device, 16 bytes each. */
typedef struct dspy_attn_seg {
    int32_t row0;
    int32_t n;
    int32_t pos0;
    int32_t table_off;
} dspy_attn_seg;

/* Everything an attention call needs besides q, the caches and out. */
typedef struct dspy_attn_meta {
    dspy_tensor segs;    /* (nseg * 4) I32 on the device: dspy_attn_seg records */
    dspy_tensor tables;  /* I32 on the device: the block tables, concatenated */
    int32_t nseg;
    int32_t N;           /* rows of q/out (sum of the segments' n; segments may leave gaps) */
    int32_t block_size;
    int32_t max_len;     /* an upper bound on every pos0 + n (sizes split-K work on CUDA) */
    bool decode;         /* every segment has n == 1 (lets a backend pick its decode kernel;
                            results must agree with the general path within tolerance) */
    dspy_tensor shared;  /* optional (dspy_tensor_none(): no hint): 2 I32 on the device, {n, len}:
                            segments 0 .. n - 1 of a decode call hold the same cache slots for
                            positions 0 .. len - 1 (the same leading block-table entries, as the
                            prefix cache gives them), len < every such pos0 + 1. A hint read on the
                            device (a captured graph replays with new values): a backend may read
                            those keys once for all n (CUDA's batch decode); results agree with the
                            unhinted call within tolerance. n = 0 or len = 0: nothing shared */
} dspy_attn_meta;

/* Per-row sampling parameters, on the device, 24 bytes (6 words) each (see `sample`). */
typedef struct dspy_sample_param {
    float temperature; /* 0 = greedy */
    float top_p;       /* (0, 1]; 1 = off */
    int32_t top_k;     /* 0 = off */
    int32_t pad;
    double uniform;    /* a draw in [0, 1) made by the host from the sequence's own RNG */
} dspy_sample_param;

#define DSPY_SAMPLE_PARAM_WORDS 6

typedef enum dspy_copy_kind {
    DSPY_COPY_H2D = 0, /* host -> device */
    DSPY_COPY_D2H = 1, /* device -> host */
    DSPY_COPY_D2D = 2  /* device -> device */
} dspy_copy_kind;

typedef struct dspy_ops {
    const char *name;

    /* ---- memory and the stream --------------------------------------------------------- */

    /* Device memory (host memory on the CPU), not initialised. DSPY_ERR_NOMEM says how much. */
    dspy_status (*alloc)(dspy_backend *be, size_t bytes, void **out);
    void (*free)(dspy_backend *be, void *p); /* NULL-safe */
    /* Host memory for staging copies (page-locked on CUDA, so copies stay asynchronous). */
    dspy_status (*alloc_host)(dspy_backend *be, size_t bytes, void **out);
    void (*free_host)(dspy_backend *be, void *p); /* NULL-safe */
    /* Stream-ordered copy of `bytes`; the host side must stay valid until the next sync. */
    dspy_status (*copy)(dspy_backend *be, void *dst, const void *src, size_t bytes, dspy_copy_kind kind);
    /* x (n) = value, any float dtype. */
    dspy_status (*fill)(dspy_backend *be, dspy_tensor x, float value);
    /* out (n) = inp (n) converted (F32 <-> BF16, F16 -> F32/BF16; round to nearest even). */
    dspy_status (*cast)(dspy_backend *be, dspy_tensor out, dspy_tensor inp);
    /* Waits for every queued operation; returns the sticky error, if any. */
    dspy_status (*sync)(dspy_backend *be);
    /* Optional (NULL: queued work is done when the call that queued it returns, as on the CPU):
     * *done = whether everything queued so far has finished, without waiting. */
    dspy_status (*query)(dspy_backend *be, bool *done);

    /* Graph capture (CUDA graphs): between graph_begin and graph_end every entry is recorded,
     * not run; graph_launch replays the recording with the memory contents of replay time.
     * Backends without graphs leave these NULL (the engine then runs steps directly). */
    dspy_status (*graph_begin)(dspy_backend *be);
    dspy_status (*graph_end)(dspy_backend *be, void **graph);
    dspy_status (*graph_launch)(dspy_backend *be, void *graph);
    void (*graph_free)(dspy_backend *be, void *graph);

    /* ---- inference ---------------------------------------------------------------------- */

    /* out (N, C) = table[ids] (table (V, C), F32 or BF16); ids (N) I32. out F32 or BF16. */
    dspy_status (*embedding)(dspy_backend *be, dspy_tensor out, dspy_tensor ids, dspy_tensor table, int N, int C);

    /* out (N, C) = inp / sqrt(mean(inp^2) + eps) * weight (C); HF LlamaRMSNorm (statistics in
     * F32). inp F32; out F32 or BF16; out may equal inp when both are F32. */
    dspy_status (*rmsnorm)(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor weight, int N, int C,
                           float eps);

    /* nn.Linear: y (N, OC) = inp (N, C) @ w^T + bias, w (OC, C) as nn.Linear stores it, bias (OC)
     * or none. accumulate 0 (false): out = y; 1 (true): out += y (out F32: the residual stream);
     * DSPY_LINEAR_ADD_EARLY: out += y where the op issued just before this one does not write out,
     * so a backend may read out while that op still runs (CUDA's decode projections read the
     * residual before their dependency wait: one memory round trip off the step's chain). out F32
     * or BF16, inp F32 or BF16, w F32 or BF16 (the CPU takes F32 inp only; CUDA takes BF16 inp
     * with BF16 w, or F32 inp with F32 w: the trainer's F32 layer, cuBLASLt with F32 compute, no
     * TF32; and F16 inp where mlp_f16 said yes). */
    dspy_status (*linear)(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, dspy_tensor bias, int N,
                          int C, int OC, int accumulate);

    /* From the fused projection qkv (N, NH*HS + 2*NKV*HS) = [q | k | v] per row: rotate-half RoPE
     * of q and k at positions pos (N) with inv_freq (HS/2, F32):
     *   x[i] = x[i] cos - x[i+HS/2] sin, x[i+HS/2] = x[i+HS/2] cos + x[i] sin, angle = pos * inv_freq[i]
     * (angle in F32, as transformers computes inv_freq @ position_ids), then q_out (N, NH, HS) =
     * rotated q, and the rotated k and v stored in the caches (slots, NKV, HS) at rows slots (N). */
    dspy_status (*qkv_rope_store)(dspy_backend *be, dspy_tensor q_out, dspy_tensor kcache, dspy_tensor vcache,
                                  dspy_tensor qkv, dspy_tensor pos, dspy_tensor slots, dspy_tensor inv_freq, int N,
                                  int NH, int NKV, int HS);

    /* Fused projections of the decoder layer. Each is DEFINED as the composition written next to
     * it (the CPU runs exactly that composition); a backend may fuse the steps, e.g. into one GEMV
     * kernel for decode-sized N. The scratch tensors hold the intermediates when a backend
     * composes; their contents afterwards are unspecified.
     *
     * attn_in: xn = rmsnorm(x, w_norm); qkv = linear(xn, wqkv, bqkv);
     *          qkv_rope_store(q_out, kcache, vcache, qkv, pos, slots, inv_freq).
     * x (N, C) F32; xn (N, C), qkv (N, NH*HS + 2*NKV*HS) scratch in the activation dtype. */
    dspy_status (*attn_in)(dspy_backend *be, dspy_tensor q_out, dspy_tensor kcache, dspy_tensor vcache, dspy_tensor x,
                           dspy_tensor w_norm, dspy_tensor wqkv, dspy_tensor bqkv, dspy_tensor pos, dspy_tensor slots,
                           dspy_tensor inv_freq, dspy_tensor xn, dspy_tensor qkv, int N, int C, int NH, int NKV,
                           int HS, float eps);

    /* mlp_in: xn = rmsnorm(x, w_norm); gu = linear(xn, w_gate_up); h (N, I) = swiglu(gu[:, :I],
     * gu[:, I:]). x (N, C) F32; xn (N, C), gu (N, 2I) scratch. */
    dspy_status (*mlp_in)(dspy_backend *be, dspy_tensor h, dspy_tensor x, dspy_tensor w_norm, dspy_tensor w_gate_up,
                          dspy_tensor xn, dspy_tensor gu, int N, int C, int I, float eps);

    /* logits: sel = gather_rows(x, rows); seln = rmsnorm(sel, w_norm); out (M, V) F32 =
     * linear(seln, w). x (N, C) F32, rows (M) I32; sel (M, C) F32 and seln (M, C) scratch. */
    dspy_status (*logits)(dspy_backend *be, dspy_tensor out, dspy_tensor x, dspy_tensor rows, dspy_tensor w_norm,
                          dspy_tensor w, dspy_tensor sel, dspy_tensor seln, int M, int C, int V, float eps);

    /* out (N, NH, HS) = causal softmax(q k^T / sqrt(HS)) v for each segment of `m`, q (N, NH, HS),
     * caches (slots, NKV, HS); query head h reads kv head h / (NH / NKV) (GQA). Rows outside
     * every segment are left as they were. */
    dspy_status (*attention)(dspy_backend *be, dspy_tensor out, dspy_tensor q, dspy_tensor kcache,
                             dspy_tensor vcache, const dspy_attn_meta *m, int NH, int NKV, int HS);

    /* out (N, I) = silu(gate) * up where gate and up are (N, I) views with row stride ld
     * (ld = I for separate arrays; gate = gu, up = gu + I, ld = 2I for the fused [gate | up]
     * projection). out may equal gate when ld == I. */
    dspy_status (*swiglu)(dspy_backend *be, dspy_tensor out, dspy_tensor gate, dspy_tensor up, int N, int I,
                          int ld);

    /* x (n) += y (n). */
    dspy_status (*add)(dspy_backend *be, dspy_tensor x, dspy_tensor y);

    /* out (M, C) = inp[rows] (inp (N, C), rows (M) I32). out may equal inp on the CPU only (rows
     * ascending); CUDA needs separate memory. */
    dspy_status (*gather_rows)(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor rows, int M, int C);

    /* One token per row of logits (M, V) F32 with params (M) dspy_sample_param records:
     * temperature 0 is greedy (the lowest id among equal maxima); otherwise the logits are
     * divided by the temperature, cut to the top_k largest (ties with the k-th kept), cut to the
     * nucleus (a token stays while the mass ranked above it is < top_p), renormalised, and the
     * token is the one at `uniform` of the kept mass. The CPU walks the kept tokens in rank
     * order (transformers' warpers, ties by id); other backends may walk them in id order (the
     * same distribution, a different token for the same draw). tokens (M) I32; logprobs (M)
     * F32 = log_softmax(logits)[token] (the raw distribution, before any warper). */
    dspy_status (*sample)(dspy_backend *be, dspy_tensor tokens, dspy_tensor logprobs, dspy_tensor logits,
                          dspy_tensor params, int M, int V);

    /* Constrained rows, before `sample`: for r < R, row rows[r] of logits (M, V) F32 keeps the
     * tokens whose bit is set in its mask (masks (R, W) I32 bit words, W = (V + 31) / 32, bit t
     * in word t / 32) and the others become -inf; shift (R) F32 gets lse(masked row) -
     * lse(raw row), so a logprob `sample` reports for the masked row plus shift is the raw
     * distribution's. Rows not listed are untouched. Every mask must keep at least one token. */
    dspy_status (*mask_logits)(dspy_backend *be, dspy_tensor logits, dspy_tensor masks, dspy_tensor rows,
                               dspy_tensor shift, int R, int V);

    /* Step ctl[1] of a run of ctl[2] decode steps whose rows are one a segment (row i = segment
     * i = sampled row i, as the engine lays out a padded decode step of n rows) has sampled;
     * ctl (3) I32, read on the device. Copies sampled and logprobs (n) into slot ctl[1] of ring
     * (ring_slots, 2, n) I32 — the tokens, then the logprobs' bits — (nothing once ctl[1] >=
     * ring_slots); where a step follows (ctl[1] + 1 < ctl[2]) readies it in place for the first
     * ctl[0] rows (ctl[0] <= n): tokens[i] = sampled[i], pos[i] += 1, segment i's pos0 = pos[i]
     * (segs (n, 4) I32: dspy_attn_seg), slots[i] = tables[segment i's table_off + pos[i] / bs] *
     * bs + pos[i] % bs (the table must hold that block); then ctl[1] += 1. Rows from ctl[0] on
     * are untouched. Why: with it the
     * engine queues several decode steps behind one another with no host round trip between
     * them: the host knows every next position, and only the tokens come from the device (B2's
     * graph decode steps on the H200: 762 -> 750 us in runs of 8). */
    dspy_status (*decode_advance)(dspy_backend *be, dspy_tensor tokens, dspy_tensor pos, dspy_tensor slots,
                                  dspy_tensor segs, dspy_tensor tables, dspy_tensor sampled, dspy_tensor logprobs,
                                  dspy_tensor ring, dspy_tensor ctl, int n, int ring_slots, int block_size);

    /* ---- training (F32) ----------------------------------------------------------------- */

    /* In place on x (N, H, HS): the RoPE rotation of qkv_rope_store. x F32 (CUDA: or BF16, rotated
     * in F32 and rounded once). */
    dspy_status (*rope)(dspy_backend *be, dspy_tensor x, dspy_tensor pos, dspy_tensor inv_freq, int N, int H,
                        int HS);

    /* Backward of linear: dinp (N, C) += dout (N, OC) @ w (OC, C); dw (OC, C) += dout^T @ inp;
     * dbias (OC) += column sums of dout. Each output may be none (w may then be none). Outputs
     * F32; operands F32, or on CUDA all BF16 (dout's dtype decides; the mixed-precision
     * trainer's working copies, F32 accumulation; dbias then needs its own call with F32 dout). */
    dspy_status (*linear_backward)(dspy_backend *be, dspy_tensor dinp, dspy_tensor dw, dspy_tensor dbias,
                                   dspy_tensor dout, dspy_tensor inp, dspy_tensor w, int N, int C, int OC);

    /* Backward of rmsnorm (same eps): dinp (N, C) += d out/d inp^T dout; dweight (C) += sum over
     * rows of dout * inp / rms. dweight may be none. */
    dspy_status (*rmsnorm_backward)(dspy_backend *be, dspy_tensor dinp, dspy_tensor dweight, dspy_tensor dout,
                                    dspy_tensor inp, dspy_tensor weight, int N, int C, float eps);

    /* Backward of rope, in place on dx (N, H, HS): the transpose rotation (angle -pos * inv_freq).
     * dx F32 (CUDA: or BF16, rotated in F32 and rounded once; the BF16 trainer's dq and dk). */
    dspy_status (*rope_backward)(dspy_backend *be, dspy_tensor dx, dspy_tensor pos, dspy_tensor inv_freq, int N,
                                 int H, int HS);

    /* Training attention of one packed sequence of T tokens: out (T, NH, HS) = softmax(q k^T /
     * sqrt(HS)) v where row t sees the keys j <= t with j >= start[t] or j < prefix. start (T)
     * I32: index of the first token of t's example (causal within an example, block-diagonal
     * across examples). prefix in [0, T]: keys [0, prefix) are a shared prompt prefix that every
     * row sees (a prefix-shared step: the prefix is the sequence's first example and each later
     * example is a continuation of it; 0 = no shared prefix, plain packing). q (T, NH, HS), k
     * and v (T, NKV, HS), GQA as attention. Also writes lse (T, NH), the log-sum-exp of each
     * row's scaled scores, for the backward pass. q, k, v F32, or on CUDA all BF16 (the
     * mixed-precision trainer: tensor cores, F32 statistics, out and lse F32, the probabilities
     * rounded to BF16 for the P V product). With BF16 q, k, v, out may be BF16 too (CUDA: the
     * F32 result rounded once, bit for bit the BF16 rounding of the F32 out; the trainer's att,
     * the o-projection's GEMM operand, without a cast): only for head size 64 or 128, out, q, k,
     * v 16-byte aligned (the fused and flash kernels; elsewhere an ARG error). */
    dspy_status (*attention_train)(dspy_backend *be, dspy_tensor out, dspy_tensor lse, dspy_tensor q, dspy_tensor k,
                                   dspy_tensor v, dspy_tensor start, int prefix, int T, int NH, int NKV, int HS);

    /* Backward of attention_train (same start and prefix) from its saved out and lse: OVERWRITES
     * dq (T, NH, HS), dk and dv (T, NKV, HS) (GQA: a kv head's gradient sums over its query
     * heads; a prefix key's over every row that sees it). q, k, v as the forward's (BF16 on
     * CUDA: tensor cores, dout and dS rounded to BF16 for the products); everything else F32,
     * except out, which is BF16 when the forward wrote it so, and, with BF16 q, k, v on CUDA, dout
     * and the gradients: dout may be BF16 (the BF16 trainer's, from the o-projection's BF16 dgrad),
     * and dq, dk, dv may be BF16 together (each rounded once from its F32 value; GQA's sums over a
     * group are F32 until then) when dout is BF16 and NH == NKV or NH >= 4 NKV. Any BF16 among
     * out, dout, dq, dk, dv needs head size 64 or 128, dq, dk, dv, dout, out, q, k, v 16-byte
     * aligned and dq overlapping no input (the fused and flash kernels; elsewhere an ARG error).
     * The CPU takes F32 only. */
    dspy_status (*attention_train_backward)(dspy_backend *be, dspy_tensor dq, dspy_tensor dk, dspy_tensor dv,
                                            dspy_tensor dout, dspy_tensor out, dspy_tensor lse, dspy_tensor q,
                                            dspy_tensor k, dspy_tensor v, dspy_tensor start, int prefix, int T,
                                            int NH, int NKV, int HS);

    /* Backward of swiglu (ld == I): OVERWRITES dgate, dup (N, I) from dout (N, I); dgate may
     * equal dout. CUDA: dgate and dup may both be BF16 (the mixed-precision trainer's GEMM
     * operands; then neither may overlap dout), gate and up may both be BF16 (its saved GEMM
     * outputs; then no output may overlap them), and dout may be BF16 (then no output may overlap
     * it). */
    dspy_status (*swiglu_backward)(dspy_backend *be, dspy_tensor dgate, dspy_tensor dup, dspy_tensor dout,
                                   dspy_tensor gate, dspy_tensor up, int N, int I);

    /* Backward of embedding: dtable (V, C) rows ids[n] += dout (N, C) row n (repeats add up). */
    dspy_status (*embedding_backward)(dspy_backend *be, dspy_tensor dtable, dspy_tensor ids, dspy_tensor dout,
                                      int N, int C);

    /* Backward of gather_rows: dinp (N, C) rows rows[m] += dout (M, C) row m. */
    dspy_status (*scatter_add_rows)(dspy_backend *be, dspy_tensor dinp, dspy_tensor rows, dspy_tensor dout, int M,
                                    int C);

    /* Fused cross-entropy of M rows: loss (M) = logsumexp(logits[m]) - logits[m][targets[m]]
     * (natural log; targets (M) I32 in [0, V)); when dlogits (M, V) is given it is OVERWRITTEN
     * with dscale * (softmax(logits[m]) - onehot(targets[m])). dlogits may equal logits. CUDA:
     * logits and dlogits may each be BF16 (the mixed-precision trainer's lm_head output and GEMM
     * operand; then dlogits is separate from logits). */
    dspy_status (*cross_entropy)(dspy_backend *be, dspy_tensor loss, dspy_tensor dlogits, dspy_tensor logits,
                                 dspy_tensor targets, int M, int V, float dscale);

    /* Inverted dropout: out (n) = keep(key, i) ? inp / (1 - p) : 0, out may equal inp. The mask is
     * a pure function of (key, i), so the backward pass is the same call on the gradient with
     * the same key; every backend must use dspy_dropout_keep below. */
    dspy_status (*dropout)(dspy_backend *be, dspy_tensor out, dspy_tensor inp, float p, uint64_t key);

    /* x (n) *= s. */
    dspy_status (*scale)(dspy_backend *be, dspy_tensor x, float s);

    /* One fused AdamW step (torch's _single_tensor_adam, decoupled weight decay; the formulas
     * of train/optim.h), in place on w, m, v (n) F32 from the gradient g (n) F32, with the step
     * constants hp (DSPY_ADAMW_WORDS F32 in the backend's memory, packed by dspy_adamw_pack):
     *   gi = g gscale; w *= decay; m += w1 (gi - m); v = v b2 + (w2 gi) gi;
     *   w += (neg_step m) / (sqrt(v) / bc2_sqrt + eps)
     * each operation rounded on its own (no fused multiply-add), so every backend reproduces
     * dspy_adamw_update bit for bit. g is not written. The constants are read from memory so
     * that a captured graph replays with the current step's values. A NaN gscale (clip_coef's
     * "skip this step") leaves w, m and v unchanged. CUDA: g may be BF16 (a single-pass step's
     * weight gradient, widened exactly: the update of those BF16 values, bit for bit). */
    dspy_status (*adamw)(dspy_backend *be, dspy_tensor w, dspy_tensor g, dspy_tensor m, dspy_tensor v,
                         dspy_tensor hp);

    /* out[slot] (F64) = the sum of x (n) F32, in double: the loss reduction. The CPU adds in
     * index order; other backends in a fixed order of their own (deterministic run to run). */
    dspy_status (*sum_rows)(dspy_backend *be, dspy_tensor out, int slot, dspy_tensor x);

    /* out[slot] (F64) = the sum of squares of x (n) F32, in double, over chunks of
     * DSPY_SUMSQ_CHUNK elements, each summed in index order and the chunk sums added in chunk
     * order on the CPU (train/optim.c's order, so the CPU result is bit-identical to
     * dspy_grad_norm's per-tensor sums); other backends in a fixed order of their own. CUDA: x
     * may be BF16 (a single-pass step's weight gradient; n a multiple of 8, 16-byte aligned). */
    dspy_status (*grad_sumsq)(dspy_backend *be, dspy_tensor out, int slot, dspy_tensor x);

    /* torch's clip_grad_norm_ from k per-tensor sums of squares sumsq (k) F64:
     *   norm = (float)sqrt(sum over i of tn_i^2 in double), tn_i = (float)sqrt(sumsq[i]);
     *   coef = (float)max_norm / (norm + 1e-6f) when max_norm > 0 and that is < 1, else 1.
     * Writes norm to out[0] (F32) and coef to word DSPY_ADAMW_GSCALE of each of the nhp adamw
     * constant records in hp (nhp * DSPY_ADAMW_WORDS F32). When the norm or any of the nc
     * values of `check` (F64, e.g. the step's loss sums; none when nc is 0) is not finite, coef
     * is NaN: adamw then leaves every parameter as it was. One tiny launch, no host read. */
    dspy_status (*clip_coef)(dspy_backend *be, dspy_tensor hp, int nhp, dspy_tensor out, dspy_tensor sumsq, int k,
                             dspy_tensor check, int nc, double max_norm);

    /* ---- optional training entries (NULL where a backend lacks them; the trainer then composes
     * the entries above) --------------------------------------------------------------------- */

    /* linear_backward with the accumulation chosen per output (beta 0 or 1):
     *   dinp (N, C) = dout @ w + beta_dinp dinp;  dw (OC, C) = dout^T @ inp + beta_dw dw
     * beta 0 overwrites, so the output need not be initialised (the first contribution of a pass
     * or of an optimizer step). No bias gradient. CUDA: BF16 dout, inp, w (the mixed-precision
     * trainer), F32 outputs; dinp may be BF16 with beta_dinp 0, and dw BF16 with beta_dw 0 (each
     * rounded once from F32 sums: the single-pass step's weight gradients, as torch autocast's). */
    dspy_status (*linear_backward_beta)(dspy_backend *be, dspy_tensor dinp, dspy_tensor dw, dspy_tensor dout,
                                        dspy_tensor inp, dspy_tensor w, int N, int C, int OC, float beta_dinp,
                                        float beta_dw);

    /* adamw, then w16 (n) BF16 = the updated w rounded to nearest even: the mixed-precision
     * trainer's working copy refreshed in the same pass (left as it was when the step is skipped,
     * like w). */
    dspy_status (*adamw_bf16)(dspy_backend *be, dspy_tensor w, dspy_tensor g, dspy_tensor m, dspy_tensor v,
                              dspy_tensor hp, dspy_tensor w16);

    /* out (N, OC) F32 = res (N, OC) F32 + inp (N, C) @ w^T: linear and the residual add in one
     * pass (out may equal res, or be separate). CUDA: BF16 inp and w. */
    dspy_status (*linear_add)(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor w, dspy_tensor res,
                              int N, int C, int OC);

    /* LoRA's two products (peft's Linear: y += scale B A x), the mixed-precision trainer's form, on
     * the LoRA input x (N, C) (already dropped out) and the adapters A (r, C), B (OC, r):
     *   u (N, r) = scale * x @ A^T;   y (N, OC) += u @ B^T
     * u is kept for the backward pass. CUDA: BF16 x, A, B and u (u rounded once from F32 sums);
     * y F32, or BF16 (within BF16 rounding of each term: cuBLASLt may round the product before
     * the add). */
    dspy_status (*lora_forward)(dspy_backend *be, dspy_tensor y, dspy_tensor u, dspy_tensor x, dspy_tensor A,
                                dspy_tensor B, int N, int C, int r, int OC, float scale);

    /* Backward of lora_forward from its x and u:
     *   du (N, r) = scale * dy @ B;  gB (OC, r) += dy^T @ u;  gA (r, C) += du^T @ x;
     *   dx (N, C) = du @ A + beta_dx dx   (beta_dx 0 or 1)
     * du is written (the operand of the last two products). dx may be none: no input gradient
     * (the trainer's first layer under LoRA needs none). CUDA: BF16 dy, x, u, A, B and du
     * (rounded once from F32 sums); gA, gB F32; dx F32 or BF16 (beta 1: as lora_forward's y). */
    dspy_status (*lora_backward)(dspy_backend *be, dspy_tensor dx, dspy_tensor gA, dspy_tensor gB, dspy_tensor du,
                                 dspy_tensor dy, dspy_tensor x, dspy_tensor u, dspy_tensor A, dspy_tensor B, int N,
                                 int C, int r, int OC, float scale, float beta_dx);

    /* The dropout op's result (the same mask for the same key and p) written (accumulate false:
     * out = dropout(inp)) or added (true: out += dropout(inp), each element rounded once).
     * CUDA: out and inp each F32 or BF16; out may equal inp when both have one dtype. */
    dspy_status (*dropout_acc)(dspy_backend *be, dspy_tensor out, dspy_tensor inp, float p, uint64_t key,
                               bool accumulate);

    /* Optional (CUDA; NULL elsewhere): the host-side layout of the packed sequence whose start
     * array (T, device) the following attention_train / attention_train_backward calls receive:
     * nseg examples (a shared prefix counts as one), the longest max_len tokens. Lets the backend
     * run a fused attention planned for that shape (CUDA: cuDNN's, for BF16 q, k, v of head size
     * 64 or 128; with a prefix as two);
     * calls with another start array or T, or none given, run the backend's own kernels. With
     * start.data NULL it is the planning call (before any step, outside a capture): scratch for
     * up to T rows at the backend plan's NH and HS (T 0: forget the layout given last). The
     * caller gives a layout again whenever start's contents change. */
    dspy_status (*attention_train_layout)(dspy_backend *be, dspy_tensor start, int T, int nseg, int max_len);

    /* Optional (CUDA; NULL elsewhere): FP8 decode weights. w (OC, C) BF16 is rounded in place to
     * E4M3 with a power-of-two scale per row (2^k, the smallest with every |w| <= 448 * 2^k;
     * nearest even) and rewritten as those values in BF16, so every path computes with the
     * same weights; q (OC * C U8, 16-byte aligned) receives the E4M3 codes and scale (OC F32) each
     * row's 2^k (kern/cuda/f8.cu). Until f8_unlink(w), the decode-sized
     * projections (1..16 rows, C % 64 == 0: linear, attn_in, mlp_in, logits) of any backend in
     * the process that are given w read the codes instead: half the bytes, the same sums up to
     * F32 reordering. Outside a capture; syncs. DSPY_ERR_ARG when a row holds a value that is
     * not finite or above 448 * 2^7. f8_unlink of a matrix never linked does nothing.
     * act8 (W8A8): linear calls of more rows than that (prompt steps), from a backend planned with
     * act8_width >= C, also round their input rows to E4M3 (a power-of-two scale a row, the same
     * rule; every |x| <= 448 * 2^100) and multiply codes by codes (cuBLASLt FP8, F32
     * accumulation): the products of the rounded rows and weights, summed in F32. The CPU backend
     * (no f8_link) rounds the rows of every linear call of more than 16 rows where it was planned
     * with act8_width, the logits ops' excepted (kern/cpu/cpu.h dspy_cpu_act8_rows). */
    dspy_status (*f8_link)(dspy_backend *be, dspy_tensor w, dspy_tensor q, dspy_tensor scale, int OC, int C,
                           bool act8);
    void (*f8_unlink)(dspy_backend *be, const void *w);
    /* Optional (CUDA; NULL elsewhere): whether mlp_in may hand h (N, I) to the down projection
     * (w_down, C x I) as F16 for these arguments. Where it says yes the caller may pass h typed F16
     * to mlp_in and then to linear: h holds the same values, mlp_in's BF16 rounding stored as F16
     * (exact from 2^-14 to 65,504 in magnitude; saturating beyond, fewer bits below), and linear
     * multiplies them as it would the BF16 ones. Why: a decode step's down projection on the
     * tensor-core kernels with FP8 weights converts its codes to F16 in one instruction a pair,
     * against four to rebuild BF16 values (CUDA: both kernels on tensor cores with FP8 copies). Any
     * other mlp_in or linear call given F16 fails with DSPY_ERR_ARG. */
    bool (*mlp_f16)(dspy_backend *be, dspy_tensor h, dspy_tensor x, dspy_tensor w_norm, dspy_tensor w_gate_up,
                    dspy_tensor w_down, int N, int C, int I);
    /* Optional (CUDA; NULL elsewhere): whether mlp_in may hand h (N, I) to the down projection
     * (w_down, C x I, accumulating into the F32 residual x) as the W8A8 codes linear would make of
     * it (f8_link act8). Where it says yes the caller may pass h's buffer typed U8 (its N * I * 2
     * bytes) to mlp_in and then to linear: it holds the N x I E4M3 codes of mlp_in's BF16 rows,
     * then their 2^k (F32) from byte dspy_act8_scales_at(N, I) — the codes and scales linear's
     * rounding of the BF16 h gives, so x gets the same sums. Why: a W8A8 prompt step otherwise
     * stores h as BF16 only for the down projection to read it back and round it (at B2's
     * 3,060-row steps ~100 MB a layer). Any other mlp_in or linear call given U8 rows fails with
     * DSPY_ERR_ARG. */
    bool (*mlp_act8)(dspy_backend *be, dspy_tensor h, dspy_tensor x, dspy_tensor w_down, int N, int C, int I);
    /* Optional (CUDA; NULL elsewhere): logits followed by sample with every row greedy, without
     * the logits: for the M rows `logits` would produce (same arguments, sel and seln scratch),
     * tokens (M) I32 = the lowest id among the row's maximal logits and logprobs (M) F32 =
     * log_softmax(row)[token] — the token sample gives at temperature 0 on the logits `logits`
     * writes (the same values), the logprob up to F32 summation order. *done = false when this
     * backend's kernels do not take the arguments: nothing was queued, and the caller runs logits
     * then sample. Why: a decode step otherwise writes M x V F32 logits only for the sampler to
     * read them back in a kernel of its own (H200, batch 16 at the 1B shape: the sampler's 10.7 us
     * of a 774 us step). */
    dspy_status (*logits_greedy)(dspy_backend *be, dspy_tensor tokens, dspy_tensor logprobs, dspy_tensor x,
                                 dspy_tensor rows, dspy_tensor w_norm, dspy_tensor w, dspy_tensor sel, dspy_tensor seln,
                                 int M, int C, int V, float eps, bool *done);
} dspy_ops;

/* mlp_act8's layout of N rows of C codes: the row scales from this byte (16-byte aligned), the
 * whole in dspy_act8_bytes. */
static inline size_t dspy_act8_scales_at(int64_t N, int64_t C) { return ((size_t)(N * C) + 15) / 16 * 16; }
static inline size_t dspy_act8_bytes(int64_t N, int64_t C) { return dspy_act8_scales_at(N, C) + 4 * (size_t)N; }

/* linear's accumulate: out += y, and out untouched by the op just before (see linear). */
enum { DSPY_LINEAR_ADD_EARLY = 2 };

/* W8A8 (f8_link act8, the CPU's act8_width): linear calls of at least DSPY_ACT8_MIN_ROWS rows
 * round their rows; a row's scale 2^k has k <= DSPY_ACT8_K_MAX (kern/e4m3.h starts at -100). */
enum { DSPY_ACT8_MIN_ROWS = 17, DSPY_ACT8_K_MAX = 100 };

/* The words of adamw's step constants. */
enum {
    DSPY_ADAMW_DECAY,    /* 1 - lr * weight_decay (1: no decay) */
    DSPY_ADAMW_W1,       /* 1 - beta1 */
    DSPY_ADAMW_B2,       /* beta2 */
    DSPY_ADAMW_W2,       /* 1 - beta2 */
    DSPY_ADAMW_BC2_SQRT, /* sqrt(1 - beta2^step) */
    DSPY_ADAMW_EPS,      /* eps */
    DSPY_ADAMW_NEG_STEP, /* -lr / (1 - beta1^step) */
    DSPY_ADAMW_GSCALE,   /* multiplies the gradient first (the clip coefficient; 1 = none) */
    DSPY_ADAMW_WORDS
};

/* grad_sumsq's chunk (the CPU's summation order). */
#define DSPY_SUMSQ_CHUNK (1 << 15)

/* Packs adamw's constants for optimizer step `step` (counting from 1), computed in double and
 * rounded to F32 exactly as train/optim.c's dspy_adamw_update computes them. */
static inline void dspy_adamw_pack(float hp[DSPY_ADAMW_WORDS], int64_t step, double lr, double beta1, double beta2,
                                   double eps, double weight_decay, float gscale) {
    hp[DSPY_ADAMW_DECAY] = (float)(1.0 - lr * weight_decay);
    hp[DSPY_ADAMW_W1] = (float)(1.0 - beta1);
    hp[DSPY_ADAMW_B2] = (float)beta2;
    hp[DSPY_ADAMW_W2] = (float)(1.0 - beta2);
    hp[DSPY_ADAMW_BC2_SQRT] = (float)sqrt(1.0 - pow(beta2, (double)step));
    hp[DSPY_ADAMW_EPS] = (float)eps;
    hp[DSPY_ADAMW_NEG_STEP] = (float)(-(lr / (1.0 - pow(beta1, (double)step))));
    hp[DSPY_ADAMW_GSCALE] = gscale;
}

/* The AdamW update of n elements on the host with constants hp (dspy_adamw_pack): what the CPU
 * backend's adamw op and train/optim.c's dspy_adamw_update both run, so they agree bit for bit
 * (torch's _single_tensor_adam order; elements independent, OpenMP over them). */
#ifndef __CUDACC__ /* host code only: the CUDA op has its own kernel (and nvcc no OpenMP) */
static inline void dspy_adamw_apply(const float hp[DSPY_ADAMW_WORDS], float *w, const float *g, float *m, float *v,
                                    int64_t n) {
    const float decay = hp[DSPY_ADAMW_DECAY], w1 = hp[DSPY_ADAMW_W1], b2 = hp[DSPY_ADAMW_B2];
    const float w2 = hp[DSPY_ADAMW_W2], bc2_sqrt = hp[DSPY_ADAMW_BC2_SQRT], eps = hp[DSPY_ADAMW_EPS];
    const float neg_step = hp[DSPY_ADAMW_NEG_STEP], gscale = hp[DSPY_ADAMW_GSCALE];
#pragma omp parallel for schedule(static) if (n > (1L << 16))
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * gscale, wi = w[i] * decay;
        float mi = m[i] + w1 * (gi - m[i]);
        float vi = v[i] * b2;
        vi = vi + w2 * gi * gi;
        float den = sqrtf(vi) / bc2_sqrt + eps;
        wi = wi + neg_step * mi / den;
        m[i] = mi;
        v[i] = vi;
        w[i] = wi;
    }
}
#endif

/* Host and device functions share these definitions (nvcc compiles this header too). */
#ifdef __CUDACC__
#define DSPY_HD __host__ __device__
#else
#define DSPY_HD
#endif

/* The dropout mask: element i of the call with `key` is kept when the top 24 bits of
 * splitmix64(key + i * golden) read as a fraction in [0, 1) are >= p. */
static inline DSPY_HD uint32_t dspy_dropout_bits(uint64_t key, int64_t i) {
    uint64_t z = key + (uint64_t)i * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (uint32_t)(z >> 40);
}
static inline DSPY_HD int dspy_dropout_keep(uint64_t key, int64_t i, float p) {
    return (float)dspy_dropout_bits(key, i) * 0x1.0p-24f >= p;
}
/* The same test without a conversion to float (kernels): keep when dspy_dropout_bits(key, i) >=
 * dspy_dropout_threshold(p). Exact: the bits b < 2^24 and p * 2^24 are exact in F32, so
 * b * 2^-24 >= p exactly when the integer b >= ceil(p * 2^24). */
static inline DSPY_HD uint32_t dspy_dropout_threshold(float p) { return (uint32_t)ceilf(p * 0x1.0p24f); }

/* Propagates a failed status to the caller: `DSPY_TRY(be->ops->add(be, x, y));`. */
#define DSPY_TRY(expr)                    \
    do {                                  \
        dspy_status dspy_try_st_ = (expr); \
        if (dspy_try_st_) return dspy_try_st_; \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif
