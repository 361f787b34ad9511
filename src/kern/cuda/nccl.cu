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
    ncclUniqueId id;
    memcpy(id.internal, id_bytes, sizeof id.internal);
    ncclComm_t c = NULL;
    ncclResult_t r = g_api.comm_init_rank(&c, world, id, rank);
    if (r != ncclSuccess) return fail_nccl(r, "ncclCommInitRank", why);
    *comm = c;
    return 0;
}

/* In place, summed over the ranks, on `stream` (asynchronous, like any kernel on it): n F32
 * values, or F64 when f64. */
extern "C" int dspy_nccl_allreduce_sum(void *comm, void *buf, size_t n, int f64, void *stream, const char **why) {
    ncclResult_t r = g_api.all_reduce(buf, buf, n, f64 ? ncclFloat64 : ncclFloat32, ncclSum, (ncclComm_t)comm,
                                      (cudaStream_t)stream);
    return r == ncclSuccess ? 0 : fail_nccl(r, "ncclAllReduce", why);
}

/* In place, rank `root`'s bytes to every rank, on `stream`. */
extern "C" int dspy_nccl_broadcast(void *comm, void *buf, size_t bytes, int root, void *stream, const char **why) {
    ncclResult_t r = g_api.broadcast(buf, buf, bytes, ncclUint8, root, (ncclComm_t)comm, (cudaStream_t)stream);
    return r == ncclSuccess ? 0 : fail_nccl(r, "ncclBroadcast", why);
}

extern "C" void dspy_nccl_free(void *comm) {
    if (comm && g_api.comm_destroy) g_api.comm_destroy((ncclComm_t)comm);
}
