/* cublaslt_api.cu — opening cuBLASLt at run time (see cublaslt_api.cuh). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#include "kern/cuda/cublaslt_api.cuh"

/* Set by CMake from the toolkit the build used: the versioned file name and its directory. */
#ifndef DSPY_CUBLASLT_SONAME
#define DSPY_CUBLASLT_SONAME "libcublasLt.so"
#endif
#ifndef DSPY_CUDA_LIBDIR
#define DSPY_CUDA_LIBDIR "/usr/local/cuda/lib64"
#endif

dspy_cu_lt_api dspy_cu_lt;

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static const char *g_error; /* NULL once loaded */
static char g_buf[768];

static void load(void) {
    void *h = dlopen(DSPY_CUBLASLT_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        char first[384];
        snprintf(first, sizeof first, "%s", dlerror());
        /* the build's toolkit, then the toolkit's usual places (lib64 or lib, by its version) */
        static const char *const dirs[] = {DSPY_CUDA_LIBDIR, "/usr/local/cuda/lib64", "/usr/local/cuda/lib"};
        for (size_t i = 0; !h && i < sizeof dirs / sizeof *dirs; i++) {
            char path[512];
            snprintf(path, sizeof path, "%s/%s", dirs[i], DSPY_CUBLASLT_SONAME);
            h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        }
        if (!h) {
            snprintf(g_buf, sizeof g_buf, "cannot load cuBLASLt (%s): %s; install the CUDA toolkit's cuBLAS or add the "
                     "directory holding %s to LD_LIBRARY_PATH", DSPY_CUBLASLT_SONAME, first, DSPY_CUBLASLT_SONAME);
            g_error = g_buf;
            return;
        }
    }
    struct {
        const char *name;
        void **slot;
    } syms[] = {
#define DSPY_CU_LT_SYM(name) {"cublasLt" #name, (void **)&dspy_cu_lt.name},
        DSPY_CU_LT_FUNCS(DSPY_CU_LT_SYM)
#undef DSPY_CU_LT_SYM
    };
    for (size_t i = 0; i < sizeof syms / sizeof *syms; i++) {
        *syms[i].slot = dlsym(h, syms[i].name);
        if (!*syms[i].slot) {
            snprintf(g_buf, sizeof g_buf, "%s has no %s (a cuBLASLt older than the toolkit dspy.c was built with?)",
                     DSPY_CUBLASLT_SONAME, syms[i].name);
            g_error = g_buf;
            return; /* the handle stays open: harmless, and the process may still run on the CPU */
        }
    }
}

const char *dspy_cu_lt_load(void) {
    pthread_once(&g_once, load);
    return g_error;
}
