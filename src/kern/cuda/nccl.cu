/* nccl.cu — NCCL for multi-GPU training (train/dist.h), loaded when first needed.
 *
 * libnccl.so.2 is opened with dlopen on the first multi-rank run rather than linked: a
 * single-GPU or CPU user needs no NCCL installed, and the library keeps no dependency that its
 * installed users would have to find. Types and constants come from the toolkit's nccl.h; the
 * entry points are looked up by name. Every NCCL or CUDA failure comes back as -1 with the
 * reason in a per-thread buffer.
 */
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static thread_local char t_why[512];

typedef struct nccl_api {
    ncclResult_t (*get_unique_id)(ncclUniqueId *);
    ncclResult_t (*comm_init_rank)(ncclComm_t *, int, ncclUniqueId, int);
    ncclResult_t (*all_reduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t);
    ncclResult_t (*broadcast)(const void *, void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
    ncclResult_t (*comm_destroy)(ncclComm_t);
    const char *(*error_string)(ncclResult_t);
} nccl_api;

static nccl_api g_api;
static const char *g_load_error; /* set once by load(); NULL when the API is usable */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static char g_load_buf[512];

static void load(void) {
    void *h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(g_load_buf, sizeof g_load_buf, "cannot load NCCL (libnccl.so.2): %s; install NCCL or add its "
                 "directory to LD_LIBRARY_PATH", dlerror());
        g_load_error = g_load_buf;
        return;
    }
    struct {
        const char *name;
        void **slot;
    } syms[] = {{"ncclGetUniqueId", (void **)&g_api.get_unique_id}, {"ncclCommInitRank", (void **)&g_api.comm_init_rank},
                {"ncclAllReduce", (void **)&g_api.all_reduce},      {"ncclBroadcast", (void **)&g_api.broadcast},
                {"ncclCommDestroy", (void **)&g_api.comm_destroy},  {"ncclGetErrorString", (void **)&g_api.error_string}};
    for (size_t i = 0; i < sizeof syms / sizeof *syms; i++) {
        *syms[i].slot = dlsym(h, syms[i].name);
        if (!*syms[i].slot) {
            snprintf(g_load_buf, sizeof g_load_buf, "libnccl.so.2 has no %s (too old a NCCL?)", syms[i].name);
            g_load_error = g_load_buf;
            return;
        }
    }
}

static int ready(const char **why) {
    pthread_once(&g_once, load);
    if (g_load_error) {
        *why = g_load_error;
        return -1;
    }
    return 0;
}

static int fail_nccl(ncclResult_t r, const char *what, const char **why) {
    snprintf(t_why, sizeof t_why, "%s: %s", what, g_api.error_string ? g_api.error_string(r) : "NCCL error");
    *why = t_why;
    return -1;
}

extern "C" int dspy_nccl_unique_id(unsigned char out[128], const char **why) {
    if (ready(why)) return -1;
    ncclUniqueId id;
    ncclResult_t r = g_api.get_unique_id(&id);
    if (r != ncclSuccess) return fail_nccl(r, "ncclGetUniqueId", why);
    memcpy(out, id.internal, sizeof id.internal);
    return 0;
}

/* A rank's communicator and the side stream its overlapped all-reduces run on (created once,
 * with the two events that order it against the compute stream: nothing is created per step). */
typedef struct nccl_rank {
    ncclComm_t comm;
    cudaStream_t side;
    cudaEvent_t ready, done; /* compute -> side: the gradients are written; side -> compute: summed */
} nccl_rank;

static int fail_cuda(cudaError_t e, const char *what, const char **why) {
    snprintf(t_why, sizeof t_why, "%s: %s", what, cudaGetErrorString(e));
    *why = t_why;
    return -1;
}

extern "C" void dspy_nccl_free(void *comm) {
    nccl_rank *r = (nccl_rank *)comm;
    if (!r) return;
    if (r->comm && g_api.comm_destroy) g_api.comm_destroy(r->comm);
    if (r->ready) cudaEventDestroy(r->ready);
    if (r->done) cudaEventDestroy(r->done);
    if (r->side) cudaStreamDestroy(r->side);
    free(r);
}

/* On `device`: this rank's communicator among `world`, from rank 0's unique id. */
extern "C" int dspy_nccl_init(int world, int rank, int device, const unsigned char id_bytes[128], void **comm,
                              const char **why) {
    *comm = NULL;
    if (ready(why)) return -1;
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) {
        snprintf(t_why, sizeof t_why, "cudaSetDevice(%d): %s", device, cudaGetErrorString(e));
        *why = t_why;
        return -1;
    }
    nccl_rank *r = (nccl_rank *)calloc(1, sizeof *r);
    if (!r) {
        *why = "out of memory";
        return -1;
    }
    int lo = 0, hi = 0;
    int rc = 0;
    /* the side stream at the highest priority: an all-reduce is not queued behind the backward */
    if ((e = cudaDeviceGetStreamPriorityRange(&lo, &hi)) != cudaSuccess ||
        (e = cudaStreamCreateWithPriority(&r->side, cudaStreamNonBlocking, hi)) != cudaSuccess)
        rc = fail_cuda(e, "creating the all-reduce stream", why);
    else if ((e = cudaEventCreateWithFlags(&r->ready, cudaEventDisableTiming)) != cudaSuccess ||
             (e = cudaEventCreateWithFlags(&r->done, cudaEventDisableTiming)) != cudaSuccess)
        rc = fail_cuda(e, "creating the all-reduce events", why);
    if (!rc) {
        ncclUniqueId id;
        memcpy(id.internal, id_bytes, sizeof id.internal);
        ncclResult_t nr = g_api.comm_init_rank(&r->comm, world, id, rank);
        if (nr != ncclSuccess) rc = fail_nccl(nr, "ncclCommInitRank", why);
    }
    if (rc) {
        dspy_nccl_free(r);
        return -1;
    }
    *comm = r;
    return 0;
}

/* In place, summed over the ranks, on `stream` (asynchronous, like any kernel on it): n F32
 * values, or F64 when f64. */
extern "C" int dspy_nccl_allreduce_sum(void *comm, void *buf, size_t n, int f64, void *stream, const char **why) {
    ncclResult_t r = g_api.all_reduce(buf, buf, n, f64 ? ncclFloat64 : ncclFloat32, ncclSum, ((nccl_rank *)comm)->comm,
                                      (cudaStream_t)stream);
    return r == ncclSuccess ? 0 : fail_nccl(r, "ncclAllReduce", why);
}

/* The same on the rank's side stream, after what `stream` has queued so far (the gradients'
 * writes): the compute stream goes on with the rest of the backward meanwhile. dspy_nccl_join
 * makes `stream` wait for every such all-reduce queued before it. */
extern "C" int dspy_nccl_allreduce_sum_side(void *comm, void *buf, size_t n, int f64, void *stream, const char **why) {
    nccl_rank *r = (nccl_rank *)comm;
    cudaError_t e;
    if ((e = cudaEventRecord(r->ready, (cudaStream_t)stream)) != cudaSuccess ||
        (e = cudaStreamWaitEvent(r->side, r->ready, 0)) != cudaSuccess)
        return fail_cuda(e, "ordering an all-reduce after the backward", why);
    return dspy_nccl_allreduce_sum(comm, buf, n, f64, r->side, why);
}

extern "C" int dspy_nccl_join(void *comm, void *stream, const char **why) {
    nccl_rank *r = (nccl_rank *)comm;
    cudaError_t e;
    if ((e = cudaEventRecord(r->done, r->side)) != cudaSuccess ||
        (e = cudaStreamWaitEvent((cudaStream_t)stream, r->done, 0)) != cudaSuccess)
        return fail_cuda(e, "waiting for the all-reduces", why);
    return 0;
}

/* In place, rank `root`'s bytes to every rank, on `stream`. */
extern "C" int dspy_nccl_broadcast(void *comm, void *buf, size_t bytes, int root, void *stream, const char **why) {
    ncclResult_t r = g_api.broadcast(buf, buf, bytes, ncclUint8, root, ((nccl_rank *)comm)->comm, (cudaStream_t)stream);
    return r == ncclSuccess ? 0 : fail_nccl(r, "ncclBroadcast", why);
}
