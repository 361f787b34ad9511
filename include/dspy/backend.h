/* dspy/backend.h — which compute backends this build and this machine offer.
 *
 * The CPU backend always exists. The CUDA backend exists when the library was built with nvcc
 * (DSPY_HAVE_CUDA) and a device with a new-enough driver is visible at run time. Devices are
 * named "cpu", "cuda", "cuda:N" or "auto" (dspy/tensor.h: dspy_device_parse).
 *
 * Thread safety: every function here may be called from any thread.
 */
#ifndef DSPY_BACKEND_H
#define DSPY_BACKEND_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>

#include "dspy/status.h"
#include "dspy/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* true when the library was built with the CUDA fast path (nvcc was found at build time). */
DSPY_API bool dspy_cuda_compiled(void);

/* Number of CUDA devices visible now (0 when none, when the driver is absent or too old, or when
 * the build has no CUDA). Never fails; the reason for 0 is in *why when non-NULL (a static or
 * thread-local string: "no CUDA device is visible", "the NVIDIA driver is too old for CUDA
 * 13.0 (driver supports 12.4)", ...). */
DSPY_API int dspy_cuda_device_count(const char **why);

/* Fills `buf` with "NAME, N MiB, sm_XY" for device `dev`. */
DSPY_API dspy_status dspy_cuda_device_name(int dev, char *buf, size_t cap);

/* Free and total memory of device `dev` in bytes. */
DSPY_API dspy_status dspy_cuda_mem_info(int dev, size_t *free_bytes, size_t *total_bytes);

/* Which kernels run a model on the CPU.
 *   REFERENCE: the readable fp32 kernels, the spec every other path is checked against; a row
 *              gives bit-identical results alone or batched, whatever the thread count.
 *   FAST:      matrices kept in BF16, products by SIMD kernels picked at run time (AVX-512 BF16,
 *              AVX2+FMA, or portable C), a cache-blocked GEMM for prefill, the linear input
 *              rounded to BF16 with F32 accumulation (what llama.cpp does for BF16 models).
 *              Within bf16 tolerance of the reference; deterministic run to run, batched or
 *              alone, for any thread count on one machine (each output is one thread's fixed
 *              sum), but not bit-identical across SIMD levels. */
typedef enum dspy_cpu_kernels {
    DSPY_CPU_KERNELS_REFERENCE = 0,
    DSPY_CPU_KERNELS_FAST = 1
} dspy_cpu_kernels;

/* "reference" or "fast" -> *out; DSPY_ERR_ARG naming the choices otherwise. */
DSPY_API dspy_status dspy_cpu_kernels_parse(const char *name, dspy_cpu_kernels *out);
/* "reference" or "fast". */
DSPY_API const char *dspy_cpu_kernels_name(dspy_cpu_kernels k);
/* The SIMD level the fast CPU kernels use on this machine ("avx512-bf16", "avx2", "scalar"),
 * checked at run time (the library itself is built for any x86-64). */
DSPY_API const char *dspy_cpu_simd_name(void);

#ifdef __cplusplus
}
#endif
#endif
