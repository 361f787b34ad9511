/* train_plan.cu — the training kernels' planned scratch (kern/backend.h: nothing allocates
 * inside an op). One F32 array, train_rows, of max_rows * max(NH, 1) floats:
 *   - rmsnorm_backward keeps each row's RMS inverse there (N floats) for the weight gradient;
 *   - attention_train_backward keeps D = dout . out per (row, head) there (T * NH floats).
 * Grown (never shrunk) by dspy_backend_reserve, outside any step or capture. A call with more
 * rows than planned fails with DSPY_ERR_ARG and says so.
 */
#include "kern/cuda/cuda.cuh"

dspy_status dspy_cu_train_reserve(dspy_backend *be, const dspy_backend_plan *p) {
    cuda_state *s = cu_of(be);
    size_t rows = (size_t)(p->max_rows > 0 ? p->max_rows : 1), heads = (size_t)(p->NH > 0 ? p->NH : 1);
    size_t need = rows * heads;
    if (need <= s->train_rows_n) return DSPY_OK;
    float *np = NULL;
    cudaError_t e = cudaMalloc((void **)&np, need * sizeof(float));
    if (e != cudaSuccess) {
        cudaGetLastError();
        return dspy_fail(DSPY_ERR_NOMEM, "cuda:%d: cannot allocate %.1f MiB of training scratch (%zu rows x %zu heads)",
                         s->dev, need * sizeof(float) / 1048576.0, rows, heads);
    }
    be->n_allocs++;
    cudaFree(s->train_rows);
    s->train_rows = np;
    s->train_rows_n = need;
    return DSPY_OK;
}

void dspy_cu_train_release(cuda_state *s) {
    cudaFree(s->train_rows);
    s->train_rows = NULL;
    s->train_rows_n = 0;
}
