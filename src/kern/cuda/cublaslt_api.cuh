/* kern/cuda/cublaslt_api.cuh — cuBLASLt's entry points, opened at run time (dlopen) by the first
 * CUDA backend, as cuDNN (train_attention_cudnn.h) and NCCL (nccl.cu) are.
 *
 * Why: linked, libcublasLt.so (~540 MB) was mapped and initialised by every process that links
 * the library — every `dspy` command, the CPU-only ones too: ~80 ms and ~200 MB of resident
 * memory at start — and a CUDA build would not start at all on a machine without it. Now a
 * machine without cuBLASLt runs everything but the CUDA backend, whose creation says why.
 * Types and constants still come from the toolkit's cublasLt.h; each entry point is looked up
 * by name into a pointer of its own declared type.
 */
#ifndef DSPY_KERN_CUDA_CUBLASLT_API_CUH
#define DSPY_KERN_CUDA_CUBLASLT_API_CUH

#include <cublasLt.h>

#include "kern/backend.h"

/* The entry points dspy.c calls, each named without its "cublasLt" prefix: one list for the
 * struct below and the loader's lookups. */
#define DSPY_CU_LT_FUNCS(X)                                                                      \
    X(Create) X(Destroy) X(Matmul) X(MatmulAlgoGetHeuristic) X(MatmulDescCreate) X(MatmulDescDestroy) \
    X(MatmulDescSetAttribute) X(MatmulPreferenceCreate) X(MatmulPreferenceDestroy)               \
    X(MatmulPreferenceSetAttribute) X(MatrixLayoutCreate) X(MatrixLayoutDestroy) X(MatrixLayoutSetAttribute)

struct dspy_cu_lt_api {
#define DSPY_CU_LT_MEMBER(name) decltype(&cublasLt##name) name;
    DSPY_CU_LT_FUNCS(DSPY_CU_LT_MEMBER)
#undef DSPY_CU_LT_MEMBER
};

/* The entry points; usable once dspy_cu_lt_load() has returned NULL. */
extern dspy_cu_lt_api dspy_cu_lt;

/* dspy_cu_lt_load (declared in kern/backend.h, for C callers too) opens cuBLASLt once
 * (thread-safe; later calls return the first answer): NULL when every entry point was found,
 * else a message saying what is missing and how to provide it. Tried in order: the library's
 * versioned name through the dynamic loader's search (LD_LIBRARY_PATH, the loader's cache, the
 * system directories), then the build's toolkit directory. */

#endif
