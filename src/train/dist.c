/* dist.c — ranks, rendezvous and collectives of data-parallel training (train/dist.h). */
#include "train/dist.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/store.h"

#ifdef DSPY_HAVE_CUDA
int dspy_nccl_unique_id(unsigned char out[128], const char **why);
int dspy_nccl_init(int world, int rank, int device, const unsigned char id_bytes[128], void **comm, const char **why);
int dspy_nccl_allreduce_sum(void *comm, void *buf, size_t n, int f64, void *stream, const char **why);
int dspy_nccl_allreduce_sum_side(void *comm, void *buf, size_t n, int f64, void *stream, const char **why);
int dspy_nccl_join(void *comm, void *stream, const char **why);
int dspy_nccl_broadcast(void *comm, void *buf, size_t bytes, int root, void *stream, const char **why);
void dspy_nccl_free(void *comm);
#endif

struct dspy_dist {
    int rank, world;
    dspy_store *store; /* several ranks only */
    void *comm;        /* kern/cuda/nccl.cu's communicator and side stream, several ranks only */
};

/* A whole number in [lo, hi] from variable `name`, or `dflt` when it is unset or empty. */
static dspy_status env_int(const char *name, long lo, long hi, long dflt, long *out) {
    const char *v = getenv(name);
    if (!v || !*v) {
        *out = dflt;
        return DSPY_OK;
    }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || x < lo || x > hi)
        return dspy_fail(DSPY_ERR_ARG, "%s='%s': expected a whole number from %ld to %ld", name, v, lo, hi);
    *out = x;
    return DSPY_OK;
}

dspy_status dspy_dist_env_read(dspy_dist_env *e) {
    memset(e, 0, sizeof *e);
    long world = 1, rank = 0, local = 0, port = 29500;
    dspy_status st;
    if ((st = env_int("WORLD_SIZE", 1, 65536, 1, &world))) return st;
    const char *r = getenv("RANK");
    if (world > 1 && (!r || !*r))
        return dspy_fail(DSPY_ERR_ARG, "WORLD_SIZE=%ld but RANK is not set: every process needs its RANK (0..%ld)", world,
                         world - 1);
    if ((st = env_int("RANK", 0, world - 1, 0, &rank))) return dspy_fail_wrap(st, "with WORLD_SIZE=%ld", world);
    if ((st = env_int("LOCAL_RANK", 0, 65535, rank, &local))) return st;
    if ((st = env_int("MASTER_PORT", 1, 65535, 29500, &port))) return st;
    const char *addr = getenv("MASTER_ADDR");
    if (!addr || !*addr) addr = "127.0.0.1";
    if (strlen(addr) >= sizeof e->master_addr)
        return dspy_fail(DSPY_ERR_ARG, "MASTER_ADDR is longer than %zu characters", sizeof e->master_addr - 1);
    e->world = (int)world, e->rank = (int)rank, e->local_rank = (int)local, e->master_port = (int)port;
    snprintf(e->master_addr, sizeof e->master_addr, "%s", addr);
    return DSPY_OK;
}

dspy_status dspy_dist_new(const dspy_dist_env *env, int cuda, double timeout_s, dspy_dist **out) {
    *out = NULL;
    if (env->world < 1 || env->rank < 0 || env->rank >= env->world)
        return dspy_fail(DSPY_ERR_ARG, "dist: rank %d of %d", env->rank, env->world);
    dspy_dist *d = calloc(1, sizeof *d);
    if (!d) return dspy_fail(DSPY_ERR_NOMEM, "dist: out of memory");
    d->rank = env->rank, d->world = env->world;
    if (d->world == 1) {
        *out = d;
        return DSPY_OK;
    }
    dspy_status st = DSPY_OK;
#ifdef DSPY_HAVE_CUDA
    if (!cuda) {
        st = dspy_fail(DSPY_ERR_ARG, "dist: %d ranks need CUDA devices (NCCL); this run is on the CPU", d->world);
        goto fail;
    }
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    if ((st = dspy_store_new(env->master_addr, env->master_port, d->rank == 0, timeout_s, &d->store))) goto fail;
    unsigned char id[128];
    const char *why = NULL;
    if (d->rank == 0) {
        if (dspy_nccl_unique_id(id, &why)) {
            st = dspy_fail(DSPY_ERR_BACKEND, "dist: rank 0: %s", why);
            dspy_store_set(d->store, "nccl_id_error", why, strlen(why)); /* the others stop too */
            goto fail;
        }
        if ((st = dspy_store_set(d->store, "nccl_id", id, sizeof id))) goto fail;
    } else {
        void *v = NULL;
        size_t n = 0;
        if ((st = dspy_store_get(d->store, "nccl_id", &v, &n))) goto fail;
        if (n != sizeof id) {
            free(v);
            st = dspy_fail(DSPY_ERR_FORMAT, "dist: rank %d: the NCCL id from rank 0 has %zu bytes", d->rank, n);
            goto fail;
        }
        memcpy(id, v, sizeof id);
        free(v);
    }
    if (dspy_nccl_init(d->world, d->rank, env->local_rank, id, &d->comm, &why)) {
        st = dspy_fail(DSPY_ERR_BACKEND, "dist: rank %d of %d on cuda:%d: %s", d->rank, d->world, env->local_rank, why);
        goto fail;
    }
    *out = d;
    return DSPY_OK;
#else
    (void)cuda;
    (void)timeout_s;
    st = dspy_fail(DSPY_ERR_BACKEND, "dist: %d ranks need CUDA and NCCL; this build has no CUDA", d->world);
    goto fail;
#endif
fail:
    dspy_dist_free(d);
    return st;
}

int dspy_dist_rank(const dspy_dist *d) { return d->rank; }
int dspy_dist_world(const dspy_dist *d) { return d->world; }

/* The collectives below run only with several ranks, which dspy_dist_new allows only in a CUDA
 * build: without CUDA they are never reached past their one-rank return. */
static dspy_status allreduce(dspy_dist *d, void *buf, size_t n, int f64, bool side, void *stream) {
    if (d->world == 1 || n == 0) return DSPY_OK;
    const char *why = "this build has no NCCL";
#ifdef DSPY_HAVE_CUDA
    if (!(side ? dspy_nccl_allreduce_sum_side : dspy_nccl_allreduce_sum)(d->comm, buf, n, f64, stream, &why))
        return DSPY_OK;
#else
    (void)buf, (void)f64, (void)side, (void)stream;
#endif
    return dspy_fail(DSPY_ERR_BACKEND, "dist: rank %d: all-reduce of %zu %s values: %s", d->rank, n,
                     f64 ? "F64" : "F32", why);
}

dspy_status dspy_dist_allreduce_sum(dspy_dist *d, float *buf, size_t n, void *stream) {
    return allreduce(d, buf, n, 0, false, stream);
}

dspy_status dspy_dist_allreduce_side(dspy_dist *d, void *buf, size_t n, bool f64, void *stream) {
    return allreduce(d, buf, n, f64, true, stream);
}

dspy_status dspy_dist_join(dspy_dist *d, void *stream) {
    if (d->world == 1) return DSPY_OK;
    const char *why = "this build has no NCCL";
#ifdef DSPY_HAVE_CUDA
    if (!dspy_nccl_join(d->comm, stream, &why)) return DSPY_OK;
#else
    (void)stream;
#endif
    return dspy_fail(DSPY_ERR_BACKEND, "dist: rank %d: %s", d->rank, why);
}

dspy_status dspy_dist_allreduce_sum_f64(dspy_dist *d, double *buf, size_t n, void *stream) {
    return allreduce(d, buf, n, 1, false, stream);
}

dspy_status dspy_dist_broadcast(dspy_dist *d, void *buf, size_t bytes, void *stream) {
    if (d->world == 1 || bytes == 0) return DSPY_OK;
    const char *why = "this build has no NCCL";
#ifdef DSPY_HAVE_CUDA
    if (!dspy_nccl_broadcast(d->comm, buf, bytes, 0, stream, &why)) return DSPY_OK;
#else
    (void)buf, (void)stream;
#endif
    return dspy_fail(DSPY_ERR_BACKEND, "dist: rank %d: broadcast of %zu bytes: %s", d->rank, bytes, why);
}

dspy_status dspy_dist_barrier(dspy_dist *d, const char *name) {
    if (d->world == 1) return DSPY_OK;
    return dspy_store_barrier(d->store, name, d->world);
}

void dspy_dist_free(dspy_dist *d) {
    if (!d) return;
#ifdef DSPY_HAVE_CUDA
    dspy_nccl_free(d->comm);
#endif
    dspy_store_free(d->store);
    free(d);
}
