/* backend.c — device names, device discovery, and making a backend of either kind.
 *
 * Discovery wraps the CUDA runtime (kern/cuda/device.cu) so that a build without CUDA, a machine
 * without a GPU and a driver too old for this build each give one clear reason. Creation picks
 * the implementation (kern/cpu/backend_cpu.c or kern/cuda/backend_cuda.cu) and sizes its
 * scratch from the plan.
 */
#include "kern/backend.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/backend.h"

#ifdef DSPY_HAVE_CUDA
int dspy_cuda_device_count_impl(const char **why);
int dspy_cuda_device_name_impl(int dev, char *buf, size_t cap);
int dspy_cuda_mem_info_impl(int dev, size_t *free_bytes, size_t *total_bytes, const char **why);
#endif

bool dspy_cuda_compiled(void) {
#ifdef DSPY_HAVE_CUDA
    return true;
#else
    return false;
#endif
}

int dspy_cuda_device_count(const char **why) {
#ifdef DSPY_HAVE_CUDA
    return dspy_cuda_device_count_impl(why);
#else
    if (why) *why = "this build has no CUDA (nvcc was not found when it was built)";
    return 0;
#endif
}

dspy_status dspy_cuda_device_name(int dev, char *buf, size_t cap) {
#ifdef DSPY_HAVE_CUDA
    if (dspy_cuda_device_name_impl(dev, buf, cap) != 0)
        return dspy_fail(DSPY_ERR_BACKEND, "cuda: cannot query device %d", dev);
    return DSPY_OK;
#else
    (void)buf;
    (void)cap;
    return dspy_fail(DSPY_ERR_BACKEND, "cuda: device %d requested but this build has no CUDA", dev);
#endif
}

dspy_status dspy_cuda_mem_info(int dev, size_t *free_bytes, size_t *total_bytes) {
    *free_bytes = *total_bytes = 0;
#ifdef DSPY_HAVE_CUDA
    const char *why = NULL;
    if (dspy_cuda_mem_info_impl(dev, free_bytes, total_bytes, &why) != 0)
        return dspy_fail(DSPY_ERR_BACKEND, "cuda:%d: cannot read its memory (%s)", dev, why ? why : "?");
    return DSPY_OK;
#else
    return dspy_fail(DSPY_ERR_BACKEND, "cuda: device %d requested but this build has no CUDA", dev);
#endif
}

dspy_status dspy_device_parse(const char *name, dspy_device *out) {
    out->type = DSPY_DEVICE_CPU;
    out->ordinal = 0;
    if (!name || strcmp(name, "cpu") == 0) return DSPY_OK;
    const char *why = NULL;
    if (strcmp(name, "auto") == 0) {
        /* auto never fails: no GPU (or no CUDA in this build) simply means the CPU */
        if (dspy_cuda_device_count(&why) > 0) out->type = DSPY_DEVICE_CUDA;
        return DSPY_OK;
    }
    if (strncmp(name, "cuda", 4) != 0 || (name[4] != '\0' && name[4] != ':'))
        return dspy_fail(DSPY_ERR_ARG, "device \"%s\" is not known (expected auto, cpu, cuda or cuda:N)", name);
    long ord = 0;
    if (name[4] == ':') {
        char *end;
        errno = 0;
        ord = strtol(name + 5, &end, 10);
        if (end == name + 5 || *end || errno || ord < 0 || ord > 1024)
            return dspy_fail(DSPY_ERR_ARG, "device \"%s\": expected cuda:N with N a device number", name);
    }
    int n = dspy_cuda_device_count(&why);
    if (n == 0) return dspy_fail(DSPY_ERR_BACKEND, "device \"%s\": %s; use --device cpu", name, why);
    if (ord >= n)
        return dspy_fail(DSPY_ERR_BACKEND, "device \"%s\": only %d CUDA device%s visible (cuda:0%s)", name, n,
                         n == 1 ? " is" : "s are", n > 1 ? " .. cuda:N-1" : "");
    out->type = DSPY_DEVICE_CUDA;
    out->ordinal = (int32_t)ord;
    return DSPY_OK;
}

dspy_status dspy_cpu_kernels_parse(const char *name, dspy_cpu_kernels *out) {
    *out = DSPY_CPU_KERNELS_FAST;
    if (name && strcmp(name, "fast") == 0) return DSPY_OK;
    *out = DSPY_CPU_KERNELS_REFERENCE;
    if (name && strcmp(name, "reference") == 0) return DSPY_OK;
    return dspy_fail(DSPY_ERR_ARG, "cpu kernels \"%s\" are not known (expected fast or reference)",
                     name ? name : "(null)");
}

const char *dspy_cpu_kernels_name(dspy_cpu_kernels k) {
    return k == DSPY_CPU_KERNELS_FAST ? "fast" : "reference";
}

void dspy_device_str(dspy_device d, char *buf, size_t cap) {
    if (d.type == DSPY_DEVICE_CUDA) snprintf(buf, cap, "cuda:%d", (int)d.ordinal);
    else snprintf(buf, cap, "cpu");
}

/* Fields of b that are larger replace those of a: a plan only grows, so scratch sized for one
 * caller (the engine's batch, the trainer's sequence) stays big enough for every other. */
static void plan_merge(dspy_backend_plan *a, const dspy_backend_plan *b) {
#define GROW(f) \
    if (b->f > a->f) a->f = b->f
    GROW(max_rows);
    GROW(max_len);
    GROW(max_seqs);
    GROW(max_vocab);
    GROW(NH);
    GROW(HS);
    GROW(act8_width);
#undef GROW
    if (b->n_threads > 0) a->n_threads = b->n_threads;
}

dspy_status dspy_backend_new(dspy_device dev, const dspy_backend_plan *plan, dspy_backend **out) {
    *out = NULL;
    dspy_backend *be = calloc(1, sizeof *be);
    if (!be) return dspy_fail(DSPY_ERR_NOMEM, "backend: out of memory");
    be->dev = dev;
    /* a small floor, so a backend made without a plan (tests, weight copies) can still run ops */
    be->plan = (dspy_backend_plan){64, 64, 1, 1, 1, 1, 0, 0};
    if (plan) plan_merge(&be->plan, plan);
    dspy_status st;
    if (dev.type == DSPY_DEVICE_CPU) {
        st = dspy_backend_cpu_init(be);
    } else {
#ifdef DSPY_HAVE_CUDA
        st = dspy_backend_cuda_init(be);
#else
        st = dspy_fail(DSPY_ERR_BACKEND, "cuda:%d requested but this build has no CUDA (nvcc was not found when "
                                         "it was built); use --device cpu", (int)dev.ordinal);
#endif
    }
    if (st) {
        free(be);
        return st;
    }
    *out = be;
    return DSPY_OK;
}

void *dspy_backend_native_stream(dspy_backend *be) {
#ifdef DSPY_HAVE_CUDA
    if (be && be->dev.type == DSPY_DEVICE_CUDA) return dspy_backend_cuda_stream(be);
#endif
    (void)be;
    return NULL;
}

void dspy_backend_free(dspy_backend *be) {
    if (!be) return;
    if (be->dev.type == DSPY_DEVICE_CPU) dspy_backend_cpu_release(be);
#ifdef DSPY_HAVE_CUDA
    else dspy_backend_cuda_release(be);
#endif
    free(be);
}

dspy_status dspy_backend_reserve(dspy_backend *be, const dspy_backend_plan *plan) {
    dspy_backend_plan p = be->plan;
    plan_merge(&p, plan);
    /* unchanged plan: keep the scratch as it is, so pointers into it stay valid */
    if (memcmp(&p, &be->plan, sizeof p) == 0) return DSPY_OK;
    if (be->dev.type == DSPY_DEVICE_CPU) return dspy_backend_cpu_reserve(be, &p);
#ifdef DSPY_HAVE_CUDA
    return dspy_backend_cuda_reserve(be, &p);
#else
    return dspy_fail(DSPY_ERR_BACKEND, "backend: no CUDA in this build");
#endif
}
