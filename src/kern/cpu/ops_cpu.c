/* ops_cpu.c — the CPU backend's operation table (kern/ops.h): the fp32 reference kernels of
 * matmul.c, attention.c and pointwise.c. Prefill and decode attention share one kernel. */
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
};

const dspy_ops *dspy_ops_cpu(void) { return &k_cpu_ops; }
