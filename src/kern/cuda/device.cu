/* device.cu — CUDA device discovery for dspy/backend.h. */
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" int dspy_cuda_device_count_impl(const char **why) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        if (why) *why = cudaGetErrorString(e);
        return 0;
    }
    if (n == 0 && why) *why = "no CUDA device found";
    return n;
}

extern "C" int dspy_cuda_device_name_impl(int dev, char *buf, size_t cap) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, dev) != cudaSuccess) return -1;
    snprintf(buf, cap, "%s, %zu MiB, sm_%d%d", p.name, (size_t)(p.totalGlobalMem >> 20), p.major, p.minor);
    return 0;
}
