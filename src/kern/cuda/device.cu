/* device.cu — CUDA device discovery for dspy/backend.h: how many devices, their names and free
 * memory, and one clear reason when there are none (no driver, driver too old, no device, or
 * devices but no cuBLASLt to run on them). */
#include <cuda_runtime.h>
#include <stdio.h>

#include "kern/backend.h"

/* The reason text lives per thread so that concurrent callers do not overwrite each other. */
static thread_local char t_why[1024];

static const char *reason(cudaError_t e) {
    int drv = 0, rt = 0;
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    switch (e) {
    case cudaErrorInsufficientDriver:
        snprintf(t_why, sizeof t_why,
                 "the NVIDIA driver is too old for this build's CUDA %d.%d runtime (the driver supports CUDA %d.%d); "
                 "update the driver",
                 rt / 1000, rt % 1000 / 10, drv / 1000, drv % 1000 / 10);
        break;
    case cudaErrorNoDevice: snprintf(t_why, sizeof t_why, "no CUDA device is visible"); break;
    default:
        snprintf(t_why, sizeof t_why, "CUDA is not usable here (%s: %s)", cudaGetErrorName(e), cudaGetErrorString(e));
    }
    if (drv == 0) /* the runtime reports a missing driver as "insufficient" too */
        snprintf(t_why, sizeof t_why, "no NVIDIA driver is loaded on this machine (no GPU visible)");
    return t_why;
}

extern "C" int dspy_cuda_device_count_impl(const char **why) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* not sticky: clear it */
        if (why) *why = reason(e);
        return 0;
    }
    if (n == 0 && why) *why = reason(cudaErrorNoDevice);
    /* devices the backend cannot run on count as none: --device auto then stays on the CPU, and
     * --device cuda says why (cuBLASLt is opened at run time: kern/cuda/cublaslt_api.cuh) */
    const char *lt = n > 0 ? dspy_cu_lt_load() : NULL;
    if (lt) {
        snprintf(t_why, sizeof t_why, "%d GPU%s visible but not usable: %s", n, n == 1 ? "" : "s", lt);
        if (why) *why = t_why;
        return 0;
    }
    return n;
}

extern "C" int dspy_cuda_device_name_impl(int dev, char *buf, size_t cap) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, dev) != cudaSuccess) return -1;
    snprintf(buf, cap, "%s, %zu MiB, sm_%d%d, %d SMs", p.name, (size_t)(p.totalGlobalMem >> 20), p.major, p.minor,
             p.multiProcessorCount);
    return 0;
}

extern "C" int dspy_cuda_mem_info_impl(int dev, size_t *free_bytes, size_t *total_bytes, const char **why) {
    int prev = 0;
    cudaGetDevice(&prev);
    cudaError_t e = cudaSetDevice(dev);
    if (e == cudaSuccess) e = cudaMemGetInfo(free_bytes, total_bytes);
    cudaSetDevice(prev);
    if (e != cudaSuccess) {
        if (why) *why = cudaGetErrorString(e);
        return -1;
    }
    return 0;
}
