/* kv_f8.cu — kern/ops.h kv_f8_link / kv_f8_unlink: the table kv_f8.cuh describes. */
#include <pthread.h>

#include "kern/cuda/kv_f8.cuh"

enum { KV8_MAX_LINKS = 64 };

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static cu_kv8 g_links[KV8_MAX_LINKS];
static int g_n;

void dspy_cu_kv8_codes(const void *kc, const void *vc, uint8_t **k8, uint8_t **v8) {
    *k8 = *v8 = NULL;
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < g_n; i++) {
        const cu_kv8 *l = &g_links[i];
        const bf16 *k = (const bf16 *)l->k, *v = (const bf16 *)l->v;
        if ((const bf16 *)kc < k || (const bf16 *)kc >= k + l->n) continue;
        const ptrdiff_t off = (const bf16 *)kc - k;
        if ((const bf16 *)vc - v == off) *k8 = l->k8 + off, *v8 = l->v8 + off;
        break;
    }
    pthread_mutex_unlock(&g_mu);
}

dspy_status dspy_cu_kv_f8_link(dspy_backend *be, dspy_tensor k, dspy_tensor v, dspy_tensor k8, dspy_tensor v8) {
    CU_ENTER(be);
    const int64_t n = k.n;
    if (n <= 0 || v.n != n)
        return dspy_fail(DSPY_ERR_ARG, "cuda kv_f8_link: k and v must have one positive size (got %lld and %lld)",
                         (long long)k.n, (long long)v.n);
    CU_NEED("kv_f8_link", "k", k, DSPY_DTYPE_BF16, n);
    CU_NEED("kv_f8_link", "v", v, DSPY_DTYPE_BF16, n);
    CU_NEED("kv_f8_link", "k8", k8, DSPY_DTYPE_U8, n);
    CU_NEED("kv_f8_link", "v8", v8, DSPY_DTYPE_U8, n);
    if ((uintptr_t)k8.data % 16 || (uintptr_t)v8.data % 16)
        return dspy_fail(DSPY_ERR_ARG, "cuda kv_f8_link: k8 and v8 must be 16-byte aligned (the decode attention loads "
                                       "16 codes at a time)");
    cuda_state *s = cu_of(be);
    DSPY_TRY(dspy_cu_check(be, cudaMemsetAsync(k8.data, 0, (size_t)n, s->stream), "kv_f8_link (zero the codes)"));
    DSPY_TRY(dspy_cu_check(be, cudaMemsetAsync(v8.data, 0, (size_t)n, s->stream), "kv_f8_link (zero the codes)"));
    pthread_mutex_lock(&g_mu);
    int i = 0;
    while (i < g_n && g_links[i].k != k.data) i++;
    if (i == KV8_MAX_LINKS) {
        pthread_mutex_unlock(&g_mu);
        return dspy_fail(DSPY_ERR_NOMEM, "cuda kv_f8_link: %d caches are linked already (the most a process may)",
                         KV8_MAX_LINKS);
    }
    g_links[i] = (cu_kv8){k.data, v.data, (size_t)n, (uint8_t *)k8.data, (uint8_t *)v8.data};
    if (i == g_n) g_n++;
    pthread_mutex_unlock(&g_mu);
    return DSPY_OK;
}

void dspy_cu_kv_f8_unlink(dspy_backend *be, const void *k) {
    (void)be;
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < g_n; i++)
        if (g_links[i].k == k) {
            g_links[i] = g_links[--g_n];
            break;
        }
    pthread_mutex_unlock(&g_mu);
}
