/* train/trainable_impl.h — the inside of dspy_trainable, shared by trainable.c (construction,
 * parameters, LoRA merge, export) and backward.c (the training forward/backward pass).
 * Private to src/train; the API is train/backward.h.
 */
#ifndef DSPY_TRAIN_TRAINABLE_IMPL_H
#define DSPY_TRAIN_TRAINABLE_IMPL_H

#include "kern/backend.h"
#include "train/backward.h"

/* The seven linear layers of a decoder layer, in HF order. */
enum { LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN, LIN_COUNT };

/* One LoRA adapter: y += (alpha / r) * B (A (dropout(x))). */
typedef struct lora_adapter {
    float *A, *gA; /* (r, in) */
    float *B, *gB; /* (out, r) */
    uint16_t *A16, *B16; /* mixed precision: BF16 working copies of A and B, or NULL */
} lora_adapter;

/* One decoder layer's fp32 weights and gradients (gradient pointers NULL when frozen). */
typedef struct train_layer {
    float *attn_norm, *mlp_norm;         /* (C) */
    float *w[LIN_COUNT];                 /* (out, in) */
    float *b[LIN_COUNT];                 /* (out) or NULL: q/k/v (qkv_bias), o (o_bias) */
    float *g_attn_norm, *g_mlp_norm;
    float *gw[LIN_COUNT], *gb[LIN_COUNT];
    lora_adapter lora[LIN_COUNT];        /* all NULL without LoRA */
    uint16_t *w16[LIN_COUNT];            /* BF16 working copies of w (mixed precision), or NULL */
} train_layer;

/* What the forward pass saves of one layer for T tokens (the rest is recomputed). */
typedef struct layer_acts {
    float *xin;          /* (T, C) residual entering the layer */
    float *q, *k, *v;    /* (T, NH, HS), (T, NKV, HS) x2; q and k after RoPE */
    float *lse;          /* (T, NH) attention log-sum-exp */
    float *att;          /* (T, NH * HS) attention output (o_proj input); BF16 in the buffer's
                            first half where backward.c's att16 says so */
    float *xmid;         /* (T, C) residual after attention */
    float *gate, *up;    /* (T, I) MLP pre-activations */
    float *lu[LIN_COUNT];/* (T, r) scaled LoRA intermediates (alpha/r) A dropout(x) (F32 trainer) */
    uint16_t *lu16[LIN_COUNT]; /* the same in BF16 (mixed precision: lora_forward's u) */
    uint16_t *xd16[LIN_COUNT]; /* mixed precision, LoRA dropout: (T, in) BF16 dropped LoRA inputs,
                                  lora_backward's x (kept, not redrawn) */
    uint16_t *qb, *kb, *vb; /* mixed precision: BF16 copies of q, k (after RoPE) and v, what the
                               tensor-core attention and its backward read */
    uint16_t *xnb[2];    /* mixed precision (acts16): (T, C) BF16 RMSNorm outputs (attention,
                            MLP), the GEMMs' inputs forward and for the weight gradients */
    uint16_t *hb;        /* the same: (T, I) BF16 SwiGLU output, the down projection's input */
    uint16_t *gate16, *up16; /* the same: (T, I) BF16 gate / up GEMM outputs (then gate and up,
                                and q, k, v, are not kept in F32: the q/k/v GEMMs write qb, kb,
                                vb, and RoPE rotates those) */
} layer_acts;

/* Work buffers for sequences of up to `cap` tokens, in the backend's memory (planned once;
 * a step never allocates unless a sequence is longer than every one before). */
typedef struct train_work {
    int32_t cap;
    float *block;
    layer_acts *acts;              /* (L) */
    float *xfin;                   /* (T, C) residual after the last layer */
    float *sel, *seln, *dsel;      /* (T, C) labelled rows: gathered, normed, gradient */
    float *logits;                 /* (ce_rows, V) one chunk of logits / dlogits (BF16 logits in
                                      mixed precision, dlogits in gb) */
    float *loss;                   /* (T) per labelled row */
    float *xn, *dx, *dxn;          /* (T, C) */
    float *dq, *datt;              /* (T, NH * HS) */
    float *dk, *dv;                /* (T, NKV * HS) */
    float *h, *dh, *dup;           /* (T, I) */
    float *ltmp;                   /* (T, max out) LoRA path output (F32 trainer) */
    float *xd, *dxd;               /* (T, max in) dropped LoRA input and its gradient (F32 trainer) */
    float *du;                     /* (T, r) (F32 trainer) */
    uint16_t *dxd16;               /* mixed precision + LoRA dropout: (T, max in) BF16, the LoRA
                                      path's input gradient before the mask */
    uint16_t *du16;                /* the same: (T, r) BF16, lora_backward's du */
    /* The sequences of the pass being run (dspy_train_group_run): sequence j is rows
     * [parts[j], parts[j + 1]) and its LoRA dropout uses the RNG state rng + j. */
    const int32_t *parts;
    int nparts;
    uint16_t *b16;                 /* mixed precision only: one allocation holding xb, gb and
                                      every layer's qb, kb, vb (and xnb, hb without LoRA) */
    uint16_t *xb;                  /* (T, max(in)) BF16: the input of the linear being computed */
    uint16_t *gb;                  /* (max(T * max(out), ce_rows * V)) BF16: its output gradient */
    int32_t *iblock;               /* (5, cap) on the backend: ids, start, pos, rows, targets */
    int32_t *ids, *start, *pos, *rows, *targets; /* (T) views into iblock */
    /* Host staging of those five arrays, one (5, cap) record per slot (page-locked on CUDA): a
     * sequence is prepared on the host and copied in one H2D copy; the slots of one optimizer
     * step stay untouched until the step's one sync. */
    int32_t *stage;
    int nslots;
    bool acts16;                   /* mixed precision: the BF16 saved copies above
                                      (xnb, hb, gate16, up16) instead of F32 ones */
    bool att16_env;                /* DSPY_TRAIN_ATT16 not 0 (and not the WMMA comparison kernels), read
                                      once per pass so that its forward and backward agree */
    bool grad16_env;               /* DSPY_TRAIN_GRAD16 not 0 (and not the WMMA comparison
                                      kernels): BF16 attention gradients where grad16 allows */
    bool fresh;                    /* the next backward pass is the first of an optimizer step:
                                      its weight-gradient GEMMs overwrite (beta 0) instead of
                                      adding, so the step zeroes only the other gradients
                                      (dspy_train_zero_uncovered); needs linear_backward_beta */
    double *loss_dev;              /* (nslots) F64 on the backend: each sequence's loss sum */
    /* when set, called as soon as layer `layer`'s backward has queued every write of its weight
     * gradients (layers in backward order, last first): optim.c sets it for a rank's last pass
     * of a data-parallel step, to start their all-reduce while the backward goes on */
    dspy_status (*layer_done)(void *ud, int layer);
    void *layer_done_ud;
    double *loss_host;             /* (nslots) page-locked: where the step reads them back */
} train_work;

/* Rows of logits materialised at once by the loss: CE_ROWS in F32 (the CPU reference's chunking,
 * which its lm_head gradient's summation order follows), CE_ROWS_BF16 in mixed precision (fewer,
 * larger lm_head GEMMs: each chunk's weight gradient reads and writes the whole F32 (V, C)
 * gradient once). */
#define CE_ROWS 256
#define CE_ROWS_BF16 1024

struct dspy_trainable {
    dspy_model *m;                 /* read only: weights are copied out at construction */
    dspy_model_config cfg;
    dspy_backend *be;              /* the backend the steps run on (CPU reference or CUDA) */
    dspy_backend *host_be;         /* a CPU backend for host-side work (LoRA merges into the host
                                      mirror); == be when be is the CPU */
    /* Mirrored (every CUDA trainable; a CPU one when asked, to test the same code path): the
     * blocks below live in be's memory and the h* blocks are host mirrors, synchronised by
     * dspy_trainable_to_host / _to_device; dspy_param.w/g point into the mirrors, .dw/.dg into
     * the backend. Not mirrored: one host copy, h* == the blocks. */
    bool mirrored;
    bool lora_on, merged;
    dspy_lora_config lora;
    float lora_scale;              /* alpha / r */
    uint64_t seed, rng;
    uint64_t rng_stride;           /* sequence j of a packed pass draws its LoRA dropout at rng +
                                      j * rng_stride: 1, except in a data-parallel step (optim.c),
                                      where a rank's pass holds every world-th sequence */
    float *wblock, *gblock;        /* fp32 weights; gradients (full fine-tuning: same layout) */
    size_t wn;
    float *lblock;                 /* LoRA: every A and B, then their gradients in the same order */
    size_t ln;
    float *hwblock, *hgblock, *hlblock; /* host mirrors (the blocks themselves when not mirrored) */
    /* Mixed precision (dspy_trainable_set_bf16, CUDA only): the GEMMs take BF16 copies of the
     * linear weights and lm_head (layers[l].w16, lm_head16, each 256-byte aligned in w16block)
     * and BF16 casts of their activations, accumulate in F32 and write F32 outputs and
     * gradients; the F32 master weights stay what the optimizer updates and checkpoints store.
     * The copies are refreshed (dspy_train_refresh_bf16) after every optimizer step and upload. */
    bool bf16;
    uint16_t *w16block;
    uint16_t *lm_head16;
    float *inv_freq;               /* (HS/2) RoPE inverse frequencies in be's memory */
    float *embed, *final_norm, *lm_head;   /* lm_head == embed when tied */
    float *g_embed, *g_final_norm, *g_lm_head; /* g_lm_head == g_embed when tied; NULL when frozen */
    train_layer *layers;           /* (L) */
    dspy_param *params;
    size_t nparams;
    train_work work;
};

/* The packed passes of an optimizer step (optim.c): consecutive sequences without a shared
 * prefix run as one pass of up to this many tokens; 0 = one pass per sequence. Mixed precision
 * only (DSPY_TRAIN_GROUP_TOKENS in the environment overrides the default of
 * DSPY_TRAIN_GROUP_DEFAULT; the F32 trainer keeps the CPU reference's order of sums). Under LoRA
 * each sequence of a pass keeps its own dropout masks (dspy_train_group_run). */
#define DSPY_TRAIN_GROUP_DEFAULT 8192
int32_t dspy_train_group_tokens(const dspy_trainable *t);

/* Whether the step's first backward pass can overwrite the weight gradients (work.fresh):
 * full fine-tuning in mixed precision on a backend with linear_backward_beta. */
bool dspy_train_can_overwrite(const dspy_trainable *t);
/* Zeroes the gradients that a fresh pass does not overwrite (norms, biases, an untied embedding);
 * queued, no wait. */
dspy_status dspy_train_zero_uncovered(dspy_trainable *t);
/* The BF16 working copy of parameter p (mixed precision: the linear weights and lm_head), or NULL. */
uint16_t *dspy_train_param_w16(const dspy_trainable *t, const dspy_param *p);
/* Loss slot `slot` (< work.nslots) = 0: a sequence that ran inside another slot's packed pass. */
dspy_status dspy_train_slot_clear(dspy_trainable *t, int slot);

/* Casts the F32 master weights into their BF16 working copies (mixed precision; no-op otherwise).
 * Queued on the backend, no wait. */
dspy_status dspy_train_refresh_bf16(dspy_trainable *t);

/* Whether the last pass kept layer l's attention gradients in BF16 (backward.c grad16: the BF16
 * trainer's datt, dq, dk, dv; reads the environment switch of that pass). For tests. */
bool dspy_train_grad16(const dspy_trainable *t, int l);

/* (in, out) of linear `lin` under config c. */
void dspy_train_lin_dims(const dspy_model_config *c, int lin, int *in, int *out);
/* Frees the work buffers (backward.c). */
void dspy_train_work_free(dspy_backend *be, train_work *w);
/* Work buffers for sequences of up to T tokens and `slots` sequences per optimizer step
 * (backward.c); fields only grow. */
dspy_status dspy_train_work_reserve(dspy_trainable *t, int32_t T, int slots);
/* Forward (and, when train, backward) of one sequence with its staging and loss in `slot`
 * (< work.nslots): the loss sum goes to work.loss_dev[slot] and is NOT read back; *M gets the
 * labelled rows (host-known). Nothing waits for the device. */
dspy_status dspy_train_seq_run(dspy_trainable *t, const dspy_train_seq *s, bool train, float grad_scale, int slot,
                          int32_t *M);
/* The same for a packed pass s of nparts sequences laid end to end, sequence j being rows
 * [parts[j], parts[j + 1]) (parts (nparts + 1), parts[0] = 0, parts[nparts] = s->T): the LoRA
 * dropout of sequence j is what dspy_train_seq_run would draw for it alone at RNG state rng + j
 * (a mask per sequence, indexed from its first row), and a training pass advances the RNG by
 * nparts. dspy_train_seq_run is this with one part. */
dspy_status dspy_train_group_run(dspy_trainable *t, const dspy_train_seq *s, const int32_t *parts, int nparts,
                                 bool train, float grad_scale, int slot, int32_t *M);

#endif
