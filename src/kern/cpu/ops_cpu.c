/* ops_cpu.c — the CPU backend's operation table (kern/ops.h): the fp32 reference kernels of
 * matmul.c, attention.c and pointwise.c, and the training ones of matmul_backward.c,
 * attention_train.c and pointwise_backward.c. Prefill and decode attention share one kernel. */
#include "kern/cpu/cpu.h"

static const dspy_ops k_cpu_ops = {
    .name = "cpu",
    .matmul = cpu_matmul,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .kv_store = cpu_kv_store,
    .attention_prefill = cpu_attention,
    .attention_decode = cpu_attention,
    .swiglu = cpu_swiglu,
    .softmax = cpu_softmax,
    .embedding = cpu_embedding,
    .add = cpu_add,
    .gather_rows = cpu_gather_rows,
    .matmul_backward = cpu_matmul_backward,
    .rmsnorm_backward = cpu_rmsnorm_backward,
    .rope_backward = cpu_rope_backward,
    .attention_train = cpu_attention_train,
    .attention_train_backward = cpu_attention_train_backward,
    .swiglu_backward = cpu_swiglu_backward,
    .embedding_backward = cpu_embedding_backward,
    .scatter_add_rows = cpu_scatter_add_rows,
    .cross_entropy = cpu_cross_entropy,
    .dropout = cpu_dropout,
    .scale = cpu_scale,
};

const dspy_ops *dspy_ops_cpu(void) { return &k_cpu_ops; }
