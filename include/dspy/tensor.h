/* dspy/tensor.h — element types, devices, and the plain tensor handle the compute layers pass.
 *
 * A dspy_tensor is a view, not an owner: a pointer to `n` elements of `dtype` in the memory of
 * `device` (host memory for the CPU, device memory for CUDA). Shapes travel beside it as
 * explicit sizes (the kernel convention of kern/ops.h: `// (N, C)` comments), so the struct
 * stays four words and is passed by value. Whoever allocated the memory frees it.
 *
 * No CUDA or third-party types appear here; the same header serves every backend.
 */
#ifndef DSPY_TENSOR_H
#define DSPY_TENSOR_H

#include "dspy/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dspy/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Tensor element types as safetensors names them. The CPU computes in F32 (BF16/F16 weights
 * are widened exactly as they are read); CUDA stores BF16 and accumulates in F32. The others
 * are only measured (so a file holding them still opens). */
typedef enum dspy_dtype {
    DSPY_DTYPE_F32 = 0,
    DSPY_DTYPE_BF16,
    DSPY_DTYPE_F16,
    DSPY_DTYPE_F64,
    DSPY_DTYPE_I64,
    DSPY_DTYPE_I32,
    DSPY_DTYPE_I16,
    DSPY_DTYPE_I8,
    DSPY_DTYPE_U8,
    DSPY_DTYPE_BOOL,
    DSPY_DTYPE_F8_E4M3,
    DSPY_DTYPE_F8_E5M2,
    DSPY_DTYPE_COUNT
} dspy_dtype;

/* "F32", "BF16", ... (safetensors spelling); "?" for an invalid value. */
DSPY_API const char *dspy_dtype_name(dspy_dtype t);
/* Bytes per element (0 for an invalid value). */
DSPY_API size_t dspy_dtype_size(dspy_dtype t);
/* Parses a safetensors dtype name; false if unknown. */
DSPY_API bool dspy_dtype_parse(const char *name, dspy_dtype *out);

/* Where memory lives. */
typedef enum dspy_device_type {
    DSPY_DEVICE_CPU = 0, /* host memory, the fp32 reference backend */
    DSPY_DEVICE_CUDA = 1 /* an NVIDIA GPU's memory */
} dspy_device_type;

/* A device: its type and, for CUDA, the ordinal (cuda:N). */
typedef struct dspy_device {
    dspy_device_type type;
    int32_t ordinal;
} dspy_device;

/* Parses "cpu", "cuda", "cuda:N" or "auto" (CUDA device 0 when one is visible, else the CPU).
 * DSPY_ERR_ARG for anything else; DSPY_ERR_BACKEND when CUDA is asked for and this build has no
 * CUDA, no device is visible, or the driver is too old (the message says which, and how many
 * devices exist). */
DSPY_API dspy_status dspy_device_parse(const char *name, dspy_device *out);
/* "cpu" or "cuda:N" into buf. */
DSPY_API void dspy_device_str(dspy_device d, char *buf, size_t cap);

typedef struct dspy_tensor {
    void *data;            /* NULL for an absent optional tensor (e.g. no bias) */
    int64_t n;             /* elements */
    dspy_dtype dtype;
    dspy_device_type device;
} dspy_tensor;

/* An absent optional tensor. */
static inline dspy_tensor dspy_tensor_none(void) {
    dspy_tensor t = {NULL, 0, DSPY_DTYPE_F32, DSPY_DEVICE_CPU};
    return t;
}
static inline dspy_tensor dspy_tensor_make(void *data, int64_t n, dspy_dtype dt, dspy_device_type dev) {
    dspy_tensor t = {data, n, dt, dev};
    return t;
}
/* The elements [off, off + n) of t (same dtype and device). */
static inline dspy_tensor dspy_tensor_slice(dspy_tensor t, int64_t off, int64_t n) {
    dspy_tensor s = t;
    s.data = t.data ? (char *)t.data + (size_t)off * dspy_dtype_size(t.dtype) : NULL;
    s.n = n;
    return s;
}
static inline size_t dspy_tensor_bytes(dspy_tensor t) { return (size_t)t.n * dspy_dtype_size(t.dtype); }

#ifdef __cplusplus
}
#endif
#endif
