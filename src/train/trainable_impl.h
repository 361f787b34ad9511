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
} lora_adapter;

/* One decoder layer's fp32 weights and gradients (gradient pointers NULL when frozen). */
typedef struct train_layer {
    float *attn_norm, *mlp_norm;         /* (C) */
    float *w[LIN_COUNT];                 /* (out, in) */
    float *b[LIN_COUNT];                 /* (out) or NULL: q/k/v (qkv_bias), o (o_bias) */
    float *g_attn_norm, *g_mlp_norm;
    float *gw[LIN_COUNT], *gb[LIN_COUNT];
    lora_adapter lora[LIN_COUNT];        /* all NULL without LoRA */
} train_layer;

/* What the forward pass saves of one layer for T tokens (the rest is recomputed). */
typedef struct layer_acts {
    float *xin;          /* (T, C) residual entering the layer */
    float *q, *k, *v;    /* (T, NH, HS), (T, NKV, HS) x2; q and k after RoPE */
    float *lse;          /* (T, NH) attention log-sum-exp */
    float *att;          /* (T, NH * HS) attention output (o_proj input) */
    float *xmid;         /* (T, C) residual after attention */
    float *gate, *up;    /* (T, I) MLP pre-activations */
    float *lu[LIN_COUNT];/* (T, r) scaled LoRA intermediates (alpha/r) A dropout(x) */
} layer_acts;

/* Work buffers for sequences of up to `cap` tokens. */
typedef struct train_work {
    int32_t cap;
    float *block;
    layer_acts *acts;              /* (L) */
    float *xfin;                   /* (T, C) residual after the last layer */
    float *sel, *seln, *dsel;      /* (T, C) labelled rows: gathered, normed, gradient */
    float *logits;                 /* (CE_ROWS, V) one chunk of logits / dlogits */
    float *loss;                   /* (T) per labelled row */
    float *xn, *dx, *dxn;          /* (T, C) */
    float *dq, *datt;              /* (T, NH * HS) */
    float *dk, *dv;                /* (T, NKV * HS) */
    float *h, *dh, *dup;           /* (T, I) */
    float *ltmp;                   /* (T, max out) LoRA path output */
    float *xd, *dxd;               /* (T, max in) dropped LoRA input and its gradient */
    float *du;                     /* (T, r) */
    int32_t *start, *pos, *rows, *targets; /* (T) */
} train_work;

/* Rows of logits materialised at once by the loss. */
#define CE_ROWS 256

struct dspy_trainable {
    dspy_model *m;                 /* read only: weights are copied out at construction */
    dspy_model_config cfg;
    dspy_backend *be;              /* the CPU reference backend the steps run on */
    bool lora_on, merged;
    dspy_lora_config lora;
    float lora_scale;              /* alpha / r */
    uint64_t seed, rng;
    float *wblock, *gblock;        /* fp32 weights; gradients (full fine-tuning: same layout) */
    size_t wn;
    float *lblock;                 /* LoRA A, B and their gradients */
    float *embed, *final_norm, *lm_head;   /* lm_head == embed when tied */
    float *g_embed, *g_final_norm, *g_lm_head; /* g_lm_head == g_embed when tied; NULL when frozen */
    train_layer *layers;           /* (L) */
    dspy_param *params;
    size_t nparams;
    train_work work;
};

/* (in, out) of linear `lin` under config c. */
void dspy_train_lin_dims(const dspy_model_config *c, int lin, int *in, int *out);
/* Frees the work buffers (backward.c). */
void dspy_train_work_free(train_work *w);

#endif
