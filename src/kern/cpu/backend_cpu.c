/* backend_cpu.c — the CPU backend: host memory, planned scratch, argument checks, and two op
 * tables: the fp32 reference kernels (matmul.c, attention.c, pointwise.c, sample.c and the
 * training kernels), and the fast kernels that dspy_backend_cpu_use_fast switches to
 * (fast_linear.c's products, the reference for the rest). Copies are memcpy and complete at
 * once, so `sync` only reports success; there are no graphs (the engine runs CPU steps directly).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/safetensors.h"
#include "kern/cpu/cpu.h"
#include "kern/cpu/fast.h"

dspy_status dspy_cpu_check(const char *op, const char *arg, dspy_tensor t, dspy_dtype dt, dspy_dtype dt2, int64_t need) {
    if (t.device != DSPY_DEVICE_CPU)
        return dspy_fail(DSPY_ERR_ARG, "cpu %s: %s is not in host memory (a CUDA tensor was given to the CPU backend)",
                         op, arg);
    if (t.dtype != dt && (dt2 == DSPY_DTYPE_COUNT || t.dtype != dt2))
        return dspy_fail(DSPY_ERR_ARG, "cpu %s: %s is %s; this op takes %s%s%s", op, arg, dspy_dtype_name(t.dtype),
                         dspy_dtype_name(dt), dt2 == DSPY_DTYPE_COUNT ? "" : " or ",
                         dt2 == DSPY_DTYPE_COUNT ? "" : dspy_dtype_name(dt2));
    if (need > 0 && (!t.data || t.n < need))
        return dspy_fail(DSPY_ERR_ARG, "cpu %s: %s holds %lld elements, %lld needed", op, arg, (long long)t.n,
                         (long long)need);
    return DSPY_OK;
}

dspy_status dspy_cpu_plan_check(const char *op, const char *what, int64_t n, int64_t cap) {
    if (n <= cap) return DSPY_OK;
    return dspy_fail(DSPY_ERR_ARG, "cpu %s: %s is %lld, the backend was planned for %lld (dspy_backend_reserve)", op,
                     what, (long long)n, (long long)cap);
}

static const dspy_ops k_cpu_ops, k_cpu_fast_ops;

static void free_scratch(cpu_state *s) {
    free(s->att);
    free(s->rowmap);
    free(s->rowmap2);
    free(s->rowf);
    free(s->vwork);
    free(s->vidx);
    free(s->xb);
    free(s->a8);
    s->att = s->rowf = s->vwork = s->a8 = NULL;
    s->rowmap = s->rowmap2 = s->vidx = NULL;
    s->xb = NULL;
    s->xb_cap = s->a8_cap = 0;
}

dspy_status dspy_backend_cpu_reserve(dspy_backend *be, const dspy_backend_plan *p) {
    cpu_state *s = cpu_of(be), n = {0};
    n.fast = s->fast;
    n.max_width = s->max_width;
    n.nt = p->n_threads > 0 ? p->n_threads : omp_get_max_threads();
    size_t len = (size_t)(p->max_len > 0 ? p->max_len : 1), rows = (size_t)(p->max_rows > 0 ? p->max_rows : 1);
    size_t V = (size_t)(p->max_vocab > 0 ? p->max_vocab : 1);
    n.att = malloc(sizeof(float) * len * (size_t)n.nt);
    n.rowmap = malloc(sizeof(int32_t) * rows);
    n.rowmap2 = malloc(sizeof(int32_t) * rows);
    /* rows x heads: attention_train_backward keeps D per (row, head) there */
    n.rowf = malloc(sizeof(float) * rows * (size_t)(p->NH > 1 ? p->NH : 1));
    n.vwork = malloc(sizeof(float) * V);
    n.vidx = malloc(sizeof(int32_t) * V);
    if (n.fast) {
        n.xb_cap = (int64_t)rows * (n.max_width > 0 ? n.max_width : 1);
        n.xb = malloc(sizeof(uint16_t) * (size_t)n.xb_cap);
    }
    if (p->act8_width > 0) {
        n.a8_cap = (int64_t)rows * p->act8_width;
        n.a8 = malloc(sizeof(float) * (size_t)n.a8_cap);
    }
    if (!n.att || !n.rowmap || !n.rowmap2 || !n.rowf || !n.vwork || !n.vidx || (n.fast && !n.xb) ||
        (n.a8_cap && !n.a8)) {
        free_scratch(&n);
        return dspy_fail(DSPY_ERR_NOMEM, "cpu backend: cannot allocate scratch for %zu rows, %zu positions x %d "
                                         "threads, vocabulary %zu, linear inputs %d wide", rows, len, n.nt, V,
                         (int)n.max_width);
    }
    free_scratch(s);
    *s = n;
    be->plan = *p;
    be->ops = n.fast ? &k_cpu_fast_ops : &k_cpu_ops;
    return DSPY_OK;
}

/* ---- memory ----------------------------------------------------------------------------- */

static dspy_status cpu_alloc(dspy_backend *be, size_t bytes, void **out) {
    be->n_allocs++;
    *out = malloc(bytes ? bytes : 1);
    if (!*out) return dspy_fail(DSPY_ERR_NOMEM, "cpu: cannot allocate %zu MiB of host memory", bytes >> 20);
    return DSPY_OK;
}

static void cpu_free(dspy_backend *be, void *p) {
    (void)be;
    free(p);
}

static dspy_status cpu_copy(dspy_backend *be, void *dst, const void *src, size_t bytes, dspy_copy_kind kind) {
    (void)be;
    (void)kind;
    if (bytes) memmove(dst, src, bytes);
    return DSPY_OK;
}

static dspy_status cpu_fill(dspy_backend *be, dspy_tensor x, float value) {
    cpu_enter(be);
    CPU_NEED2("fill", "x", x, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, 0);
    if (x.dtype == DSPY_DTYPE_F32) {
        float *p = x.data;
        if (value == 0.0f && !signbit(value)) {
            memset(p, 0, sizeof(float) * (size_t)x.n);
            return DSPY_OK;
        }
        for (int64_t i = 0; i < x.n; i++) p[i] = value;
    } else {
        uint16_t *p = x.data, h = dspy_f32_to_bf16(value);
        for (int64_t i = 0; i < x.n; i++) p[i] = h;
    }
    return DSPY_OK;
}

static dspy_status cpu_cast(dspy_backend *be, dspy_tensor out, dspy_tensor inp) {
    (void)be;
    if (out.n != inp.n)
        return dspy_fail(DSPY_ERR_ARG, "cpu cast: out has %lld elements, inp %lld", (long long)out.n, (long long)inp.n);
    CPU_NEED2("cast", "out", out, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, 0);
    if (inp.device != DSPY_DEVICE_CPU) return dspy_fail(DSPY_ERR_ARG, "cpu cast: inp is not in host memory");
    for (int64_t i = 0; i < inp.n; i++) {
        float v;
        switch (inp.dtype) {
        case DSPY_DTYPE_F32: v = ((const float *)inp.data)[i]; break;
        case DSPY_DTYPE_BF16: v = dspy_bf16_to_f32(((const uint16_t *)inp.data)[i]); break;
        case DSPY_DTYPE_F16: v = dspy_f16_to_f32(((const uint16_t *)inp.data)[i]); break;
        default:
            return dspy_fail(DSPY_ERR_ARG, "cpu cast: inp is %s; F32, BF16 or F16 expected",
                             dspy_dtype_name(inp.dtype));
        }
        if (out.dtype == DSPY_DTYPE_F32) ((float *)out.data)[i] = v;
        else ((uint16_t *)out.data)[i] = dspy_f32_to_bf16(v);
    }
    return DSPY_OK;
}

static dspy_status cpu_sync(dspy_backend *be) {
    (void)be;
    return DSPY_OK;
}

/* ---- the table -------------------------------------------------------------------------- */

/* The entries the reference and the fast tables share: all but the matrix products. */
#define CPU_SHARED_OPS \
    .alloc = cpu_alloc, \
    .free = cpu_free, \
    .alloc_host = cpu_alloc, \
    .free_host = cpu_free, \
    .copy = cpu_copy, \
    .fill = cpu_fill, \
    .cast = cpu_cast, \
    .sync = cpu_sync, \
    .embedding = dspy_cpu_embedding, \
    .rmsnorm = dspy_cpu_rmsnorm, \
    .qkv_rope_store = dspy_cpu_qkv_rope_store, \
    .attention = dspy_cpu_attention, \
    .swiglu = dspy_cpu_swiglu, \
    .add = dspy_cpu_add, \
    .gather_rows = dspy_cpu_gather_rows, \
    .sample = dspy_cpu_sample, \
    .mask_logits = dspy_cpu_mask_logits, \
    .decode_advance = dspy_cpu_decode_advance, \
    .rope = dspy_cpu_rope, \
    .rmsnorm_backward = dspy_cpu_rmsnorm_backward, \
    .rope_backward = dspy_cpu_rope_backward, \
    .attention_train = dspy_cpu_attention_train, \
    .attention_train_backward = dspy_cpu_attention_train_backward, \
    .swiglu_backward = dspy_cpu_swiglu_backward, \
    .embedding_backward = dspy_cpu_embedding_backward, \
    .scatter_add_rows = dspy_cpu_scatter_add_rows, \
    .cross_entropy = dspy_cpu_cross_entropy, \
    .dropout = dspy_cpu_dropout, \
    .scale = dspy_cpu_scale, \
    .adamw = dspy_cpu_adamw, \
    .sum_rows = dspy_cpu_sum_rows, \
    .grad_sumsq = dspy_cpu_grad_sumsq, \
    .clip_coef = dspy_cpu_clip_coef

static const dspy_ops k_cpu_ops = {
    .name = "cpu",
    CPU_SHARED_OPS,
    .linear = dspy_cpu_linear,
    .attn_in = dspy_cpu_attn_in,
    .mlp_in = dspy_cpu_mlp_in,
    .logits = dspy_cpu_logits,
    .linear_backward = dspy_cpu_linear_backward,
};

/* The fast kernels' table: the reference entries except the matrix products and their backward
 * (fast_linear.c). */
static const dspy_ops k_cpu_fast_ops = {
    .name = "cpu-fast",
    CPU_SHARED_OPS,
    .linear = dspy_cpu_fast_linear,
    .attn_in = dspy_cpu_fast_attn_in,
    .mlp_in = dspy_cpu_fast_mlp_in,
    .logits = dspy_cpu_fast_logits,
    .linear_backward = dspy_cpu_fast_linear_backward,
};

dspy_status dspy_backend_cpu_init(dspy_backend *be) {
    be->ops = &k_cpu_ops;
    be->act_dtype = DSPY_DTYPE_F32;
    be->w_dtype = DSPY_DTYPE_F32;
    be->impl = calloc(1, sizeof(cpu_state));
    if (!be->impl) return dspy_fail(DSPY_ERR_NOMEM, "cpu backend: out of memory");
    dspy_status st = dspy_backend_cpu_reserve(be, &be->plan);
    if (st) {
        free(be->impl);
        be->impl = NULL;
    }
    return st;
}

dspy_status dspy_backend_cpu_use_fast(dspy_backend *be, int32_t max_width) {
    if (be->dev.type != DSPY_DEVICE_CPU)
        return dspy_fail(DSPY_ERR_ARG, "backend: the fast CPU kernels were asked of a CUDA backend");
    cpu_state *s = cpu_of(be);
    cpu_state keep = *s;
    s->fast = 1;
    s->max_width = max_width > keep.max_width ? max_width : keep.max_width;
    dspy_status st = dspy_backend_cpu_reserve(be, &be->plan);
    if (st) { /* reserve left the old scratch in place */
        s->fast = keep.fast;
        s->max_width = keep.max_width;
    }
    return st;
}

void dspy_backend_cpu_release(dspy_backend *be) {
    if (!be->impl) return;
    free_scratch(cpu_of(be));
    free(be->impl);
    be->impl = NULL;
}
