/* backend.c — reports the compute backends (CPU always; CUDA when compiled in and present). */
#include "dspy/backend.h"

#include <stdio.h>

#ifdef DSPY_HAVE_CUDA
int dspy_cuda_device_count_impl(const char **why);
int dspy_cuda_device_name_impl(int dev, char *buf, size_t cap);
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
