/* timeline.cu — kern/cuda/timeline.h's host side: the device buffer of block records, pointed to
 * by every stamped file (timeline.cuh's TL_BIND_FN), and read back after a step. A diagnostic:
 * without DSPY_CUDA_TIMELINE the entries say so and nothing is allocated.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "kern/cuda/timeline.cuh"

/* The buffer of the backend that started the timeline (one at a time: the pointers are per file,
 * not per backend), its capacity, and the records the last start made room for (<= g_cap: what
 * read may return; past it the buffer may hold an earlier start's records). */
static cu_tl_buf *g_buf;
static int g_cap, g_started;
static dspy_backend *g_owner;

static cudaError_t bind_all(cu_tl_buf *b) {
    cudaError_t e = dspy_cu_tl_bind_mma(b);
    if (e == cudaSuccess) e = dspy_cu_tl_bind_decode(b);
    return e;
}

extern "C" bool dspy_cu_timeline_built(void) {
#ifdef DSPY_CUDA_TIMELINE
    return true;
#else
    return false;
#endif
}

extern "C" const char *dspy_cu_tl_kind_name(int kind) {
    static const char *names[DSPY_TL_KINDS] = {"none", "linear", "linear_pair", "attn_in", "mlp_in", "logits", "attention"};
    return kind >= 0 && kind < DSPY_TL_KINDS ? names[kind] : "?";
}

extern "C" dspy_status dspy_cu_timeline_start(dspy_backend *be, int cap) {
    CU_ENTER(be);
    if (!dspy_cu_timeline_built())
        return dspy_fail(DSPY_ERR_ARG, "cuda timeline: this build has no stamps (configure with -DDSPY_CUDA_TIMELINE=ON)");
    if (cap < 1) return dspy_fail(DSPY_ERR_ARG, "cuda timeline: room for %d records", cap);
    if (g_owner && g_owner != be)
        return dspy_fail(DSPY_ERR_ARG, "cuda timeline: another backend holds it (stop that one first)");
    const size_t bytes = offsetof(cu_tl_buf, rec) + (size_t)cap * sizeof(dspy_cu_tl_rec);
    if (cap > g_cap) {
        DSPY_TRY(dspy_cu_check(be, bind_all(NULL), "cuda timeline (unbind)"));
        cudaFree(g_buf);
        g_buf = NULL, g_cap = 0, g_owner = NULL;
        void *p = NULL;
        char what[80];
        snprintf(what, sizeof what, "cuda timeline (%zu bytes of records)", bytes);
        DSPY_TRY(dspy_cu_check(be, cudaMalloc(&p, bytes), what));
        g_buf = (cu_tl_buf *)p, g_cap = cap;
    }
    g_owner = be, g_started = cap;
    const unsigned hdr[2] = {0u, (unsigned)cap};
    DSPY_TRY(dspy_cu_check(be, cudaStreamSynchronize(cu_of(be)->stream), "cuda timeline (sync)"));
    DSPY_TRY(dspy_cu_check(be, cudaMemset(g_buf, 0, bytes), "cuda timeline (clear)"));
    DSPY_TRY(dspy_cu_check(be, cudaMemcpy(g_buf, hdr, sizeof hdr, cudaMemcpyHostToDevice), "cuda timeline (header)"));
    DSPY_TRY(dspy_cu_check(be, bind_all(g_buf), "cuda timeline (bind)"));
    /* the clear, the header and the pointers went by the legacy stream, which the backend's
     * non-blocking stream does not wait for: done before the next kernel stamps */
    return dspy_cu_check(be, cudaDeviceSynchronize(), "cuda timeline (sync after start)");
}

extern "C" dspy_status dspy_cu_timeline_read(dspy_backend *be, dspy_cu_tl_rec *out, int cap, int *n) {
    CU_ENTER(be);
    if (!g_buf || g_owner != be) return dspy_fail(DSPY_ERR_ARG, "cuda timeline: not started on this backend");
    DSPY_TRY(dspy_cu_check(be, cudaStreamSynchronize(cu_of(be)->stream), "cuda timeline (sync)"));
    unsigned written = 0;
    DSPY_TRY(dspy_cu_check(be, cudaMemcpy(&written, g_buf, sizeof written, cudaMemcpyDeviceToHost), "cuda timeline (count)"));
    int k = (int)(written < (unsigned)g_started ? written : (unsigned)g_started);
    if (k > cap) k = cap;
    if (k > 0)
        DSPY_TRY(dspy_cu_check(be, cudaMemcpy(out, g_buf->rec, (size_t)k * sizeof *out, cudaMemcpyDeviceToHost),
                               "cuda timeline (records)"));
    *n = (int)written;
    return DSPY_OK;
}

extern "C" dspy_status dspy_cu_timeline_stop(dspy_backend *be) {
    if (!g_buf || g_owner != be) return DSPY_OK;
    /* the pointers to clear are this device's (the caller's thread may have another selected) */
    cudaSetDevice(cu_of(be)->dev);
    cudaStreamSynchronize(cu_of(be)->stream);
    const cudaError_t e = bind_all(NULL);
    cudaFree(g_buf);
    g_buf = NULL, g_cap = 0, g_started = 0, g_owner = NULL;
    return dspy_cu_check(be, e, "cuda timeline (unbind)");
}
