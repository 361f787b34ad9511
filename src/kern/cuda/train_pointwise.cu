/* train_pointwise.cu — row-wise F32 training kernels (kern/ops.h "training"): RoPE and its
 * backward, RMSNorm backward, SwiGLU backward, the embedding / gather backward (scatter-add),
 * dropout and scale.
 *
 * The arithmetic follows the CPU reference (kern/cpu/pointwise.c, pointwise_backward.c):
 *   - RoPE: the angle pos * inv_freq in F32, its cos/sin in double rounded to F32 (what the CPU
 *     does), and the rotation with separately rounded products (no FMA contraction), so the
 *     result equals the CPU's whenever the cos/sin round the same (all but rare ties).
 *   - RMSNorm backward: dx = r w dy - x r^3 / C * sum(w dy x), r = (mean(x^2) + eps)^-1/2, the
 *     row sums in F32 (the CPU sums in double; the difference is ~1e-7 relative). The weight
 *     gradient is a deterministic column sum over rows, with r kept in the planned scratch.
 *   - SwiGLU backward: sigmoid as 1 / (1 + expf(-g)) (expf: within 2 ulp of the CPU's).
 *   - dropout: dspy_dropout_keep (kern/ops.h), the same mask bit for bit; scale is exact.
 *   - embedding_backward / scatter_add_rows add rows with atomicAdd: repeated indices add up in
 *     an unspecified order, so with repeats the sums are not bit-reproducible run to run (they
 *     are within F32 rounding of the CPU's ascending-row sums). An index outside the
 *     destination is a device fault (__trap): the backend's sticky error reports it at the next
 *     sync, as a bad id would fault the inference embedding.
 * Memory-bound; every kernel reads its inputs once and writes its outputs once.
 */
#include "kern/cuda/train.cuh"

/* ---- RoPE and its backward -------------------------------------------------------------- */

/* Load / store one element of x, F32 or BF16 (the BF16 trainer rotates its BF16 q and k in place:
 * the pair is widened, rotated in F32 and rounded once). */
static __device__ __forceinline__ float tr_ld(const float *p, int64_t i) { return p[i]; }
static __device__ __forceinline__ float tr_ld(const bf16 *p, int64_t i) { return bf2f(p[i]); }
static __device__ __forceinline__ void tr_st(float *p, int64_t i, float v) { p[i] = v; }
static __device__ __forceinline__ void tr_st(bf16 *p, int64_t i, float v) { p[i] = f2bf(v); }

/* One block per row n: thread (i, y) computes the pair (i, i + HS/2)'s cos/sin and rotates it in
 * heads y, y + blockDim.y, ... (dir +1 forward, -1 the transpose). Several head groups per row
 * (blockDim.y) keep more loads in flight than one thread walking every head; each head's
 * arithmetic is the same either way. */
template <typename T>
static __global__ void k_rope(T *x, const int32_t *pos, const float *inv_freq, int H, int HS, int dir) {
    griddep_wait();
    const int n = blockIdx.x, half = HS / 2;
    T *row = x + (int64_t)n * H * HS;
    const float p = (float)pos[n];
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float ang = __fmul_rn(p, inv_freq[i]); /* inv_freq @ position_ids in float32 */
        double sd, cd;
        sincos((double)ang, &sd, &cd);
        const float cs = (float)cd, sn = dir > 0 ? (float)sd : -(float)sd;
        for (int h = threadIdx.y; h < H; h += blockDim.y) {
            T *v = row + (int64_t)h * HS;
            float a = tr_ld(v, i), b = tr_ld(v, i + half);
            tr_st(v, i, __fsub_rn(__fmul_rn(a, cs), __fmul_rn(b, sn)));
            tr_st(v, i + half, __fadd_rn(__fmul_rn(b, cs), __fmul_rn(a, sn)));
        }
    }
}

/* x F32, or BF16 (CUDA only: the mixed-precision trainer's q and k, straight from their GEMMs). */
static dspy_status rope_dir(dspy_backend *be, const char *op, dspy_tensor x, dspy_tensor pos, dspy_tensor inv_freq,
                            int N, int H, int HS, int dir) {
    CU_ENTER(be);
    CU_NEED2(op, "x", x, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)N * H * HS);
    CU_NEED(op, "pos", pos, DSPY_DTYPE_I32, N);
    CU_NEED(op, "inv_freq", inv_freq, DSPY_DTYPE_F32, HS / 2);
    if (N == 0 || H == 0 || HS < 2) return DSPY_OK;
    const int half = HS / 2, threads = half >= 256 ? 256 : ((half + 31) / 32) * 32;
    const int groups = threads >= 256 ? 1 : H < 256 / threads ? H : 256 / threads; /* up to 256 threads */
    const dim3 block((unsigned)threads, (unsigned)groups);
    if (x.dtype == DSPY_DTYPE_BF16)
        return cu_launch(be, op, k_rope<bf16>, N, block, 0, (bf16 *)x.data, (const int32_t *)pos.data,
                         (const float *)inv_freq.data, H, HS, dir);
    return cu_launch(be, op, k_rope<float>, N, block, 0, (float *)x.data, (const int32_t *)pos.data,
                     (const float *)inv_freq.data, H, HS, dir);
}

dspy_status dspy_cu_rope(dspy_backend *be, dspy_tensor x, dspy_tensor pos, dspy_tensor inv_freq, int N, int H, int HS) {
    return rope_dir(be, "rope", x, pos, inv_freq, N, H, HS, +1);
}

dspy_status dspy_cu_rope_backward(dspy_backend *be, dspy_tensor dx, dspy_tensor pos, dspy_tensor inv_freq, int N, int H,
                             int HS) {
    return rope_dir(be, "rope_backward", dx, pos, inv_freq, N, H, HS, -1);
}

/* ---- column sums (weight and bias gradients) -------------------------------------------- */

enum { COLSUM_X = 32, COLSUM_Y = 16, COLSUM_SPLITS = 32, COLSUM_ROWS_PER_SPLIT = 128 };

/* Block (32, 16) per 32 columns and split y of the rows (rows [y R, min(N, (y + 1) R)), R = rows
 * per split): thread (tx, ty) sums rows ty, ty + 16, ... of the split in column c, then the 16
 * partial sums are added in a fixed order, into dst[c] (one split) or part[y][c]. */
static __global__ void k_colsum(float *dst, float *part, const float *a, const float *b, const float *r, int N, int C,
                                int R) {
    griddep_wait();
    __shared__ float sp[COLSUM_Y][COLSUM_X + 1];
    const int tx = threadIdx.x, ty = threadIdx.y, c = blockIdx.x * COLSUM_X + tx;
    const int n0 = blockIdx.y * R, n1 = min(N, n0 + R);
    float s = 0.0f;
    if (c < C)
        for (int n = n0 + ty; n < n1; n += COLSUM_Y) {
            int64_t i = (int64_t)n * C + c;
            s += b ? a[i] * b[i] * r[n] : a[i];
        }
    sp[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && c < C) {
        float t = 0.0f;
        for (int y = 0; y < COLSUM_Y; y++) t += sp[y][tx];
        if (part) part[(int64_t)blockIdx.y * C + c] = t;
        else dst[c] += t;
    }
}

/* dst[c] += the S split sums of column c, added in split order. */
static __global__ void k_colsum_splits(float *dst, const float *part, int C, int S) {
    griddep_wait();
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float t = 0.0f;
    for (int y = 0; y < S; y++) t += part[(int64_t)y * C + c];
    dst[c] += t;
}

/* The rows are split (COLSUM_ROWS_PER_SPLIT or more each, at most COLSUM_SPLITS splits) so that a
 * long column sum fills the GPU; the split sums wait in the training scratch after its first
 * N floats (rmsnorm_backward's r) when it has room, else one split does all. The split depends
 * only on N, C and the planned scratch: deterministic. */
dspy_status dspy_cu_train_colsum(dspy_backend *be, const char *what, float *dst, const float *a, const float *b,
                            const float *r, int N, int C) {
    if (N == 0 || C == 0) return DSPY_OK;
    cuda_state *s = cu_of(be);
    int S = N / COLSUM_ROWS_PER_SPLIT;
    S = S < 1 ? 1 : S > COLSUM_SPLITS ? COLSUM_SPLITS : S;
    const size_t off = ((size_t)N + 3) & ~(size_t)3; /* after r, 16-byte aligned */
    if (!s->train_rows || off + (size_t)S * C > s->train_rows_n) S = 1;
    const int R = (N + S - 1) / S;
    float *part = S > 1 ? s->train_rows + off : NULL;
    DSPY_TRY(cu_launch(be, what, k_colsum, dim3(cu_blocks(C, COLSUM_X), S), dim3(COLSUM_X, COLSUM_Y), 0, dst, part,
                       a, b, r, N, C, R));
    if (!part) return DSPY_OK;
    return cu_launch(be, what, k_colsum_splits, cu_blocks(C, 256), 256, 0, dst, (const float *)part, C, S);
}

/* ---- RMSNorm backward ------------------------------------------------------------------- */

/* One block per row: dx += r w dy - k x with k = r^3 / C * sum(w dy x); r saved for dweight. */
static __global__ void k_rmsnorm_backward(float *dinp, float *rsave, const float *dout, const float *inp, const float *w,
                                   int C, float eps) {
    griddep_wait();
    __shared__ float part[32];
    const int64_t off = (int64_t)blockIdx.x * C;
    const float *x = inp + off, *dy = dout + off;
    float ss = 0.0f, dot = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        ss += x[c] * x[c];
        dot += w[c] * dy[c] * x[c];
    }
    ss = tr_block_sum(ss, part);
    dot = tr_block_sum(dot, part);
    const float r = 1.0f / sqrtf(ss / (float)C + eps);
    const float k = dot * r * r * r / (float)C;
    float *dx = dinp + off;
    for (int c = threadIdx.x; c < C; c += blockDim.x) dx[c] += r * w[c] * dy[c] - k * x[c];
    if (rsave && threadIdx.x == 0) rsave[blockIdx.x] = r;
}

/* The same per row for C a multiple of 256 up to 8,192 and 16-byte aligned arrays: C / 8 threads
 * (whole warps), each holding its 8 columns of x and dy in registers between the sums and the
 * update, 16-byte loads and stores (the scalar form read x and dy twice with 4-byte loads). */
static __global__ void k_rmsnorm_backward8(float *dinp, float *rsave, const float *dout, const float *inp,
                                           const float *w, int C, float eps) {
    griddep_wait();
    __shared__ float part[32];
    const int64_t off = (int64_t)blockIdx.x * C + 8 * threadIdx.x;
    const int c0 = 8 * threadIdx.x;
    float x[8], dy[8], wv[8];
    *(float4 *)x = *(const float4 *)(inp + off), *(float4 *)(x + 4) = *(const float4 *)(inp + off + 4);
    *(float4 *)dy = *(const float4 *)(dout + off), *(float4 *)(dy + 4) = *(const float4 *)(dout + off + 4);
    *(float4 *)wv = *(const float4 *)(w + c0), *(float4 *)(wv + 4) = *(const float4 *)(w + c0 + 4);
    float ss = 0.0f, dot = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; e++) {
        ss += x[e] * x[e];
        dot += wv[e] * dy[e] * x[e];
    }
    ss = tr_block_sum(ss, part);
    dot = tr_block_sum(dot, part);
    const float r = 1.0f / sqrtf(ss / (float)C + eps);
    const float k = dot * r * r * r / (float)C;
    float dx[8];
    *(float4 *)dx = *(const float4 *)(dinp + off), *(float4 *)(dx + 4) = *(const float4 *)(dinp + off + 4);
#pragma unroll
    for (int e = 0; e < 8; e++) dx[e] += r * wv[e] * dy[e] - k * x[e];
    *(float4 *)(dinp + off) = *(const float4 *)dx, *(float4 *)(dinp + off + 4) = *(const float4 *)(dx + 4);
    if (rsave && threadIdx.x == 0) rsave[blockIdx.x] = r;
}

dspy_status dspy_cu_rmsnorm_backward(dspy_backend *be, dspy_tensor dinp, dspy_tensor dweight, dspy_tensor dout,
                                dspy_tensor inp, dspy_tensor weight, int N, int C, float eps) {
    CU_ENTER(be);
    const char *op = "rmsnorm_backward";
    CU_NEED(op, "dinp", dinp, DSPY_DTYPE_F32, (int64_t)N * C);
    CU_NEED(op, "dout", dout, DSPY_DTYPE_F32, (int64_t)N * C);
    CU_NEED(op, "inp", inp, DSPY_DTYPE_F32, (int64_t)N * C);
    CU_NEED(op, "weight", weight, DSPY_DTYPE_F32, C);
    if (dweight.data) CU_NEED(op, "dweight", dweight, DSPY_DTYPE_F32, C);
    if (N == 0 || C == 0) return DSPY_OK;
    cuda_state *s = cu_of(be);
    float *rsave = NULL;
    if (dweight.data) {
        if ((size_t)N > s->train_rows_n)
            return dspy_fail(DSPY_ERR_ARG, "cuda %s: %d rows exceed the planned %zu (plan max_rows with "
                                           "dspy_backend_reserve)", op, N, s->train_rows_n);
        rsave = s->train_rows;
    }
    const uintptr_t bits = (uintptr_t)dinp.data | (uintptr_t)dout.data | (uintptr_t)inp.data | (uintptr_t)weight.data;
    const bool vec = C % 256 == 0 && C <= 8192 && bits % 16 == 0;
    /* 256 threads: several rows' blocks per SM keep more loads in flight than one 1,024-wide block */
    int threads = C >= 256 ? 256 : ((C + 31) / 32) * 32;
    DSPY_TRY(cu_launch(be, op, vec ? k_rmsnorm_backward8 : k_rmsnorm_backward, N, vec ? C / 8 : threads, 0,
                       (float *)dinp.data, rsave, (const float *)dout.data, (const float *)inp.data,
                       (const float *)weight.data, C, eps));
    if (!rsave) return DSPY_OK;
    return dspy_cu_train_colsum(be, "rmsnorm_backward (dweight)", (float *)dweight.data, (const float *)dout.data,
                           (const float *)inp.data, rsave, N, C);
}

/* ---- SwiGLU backward -------------------------------------------------------------------- */

/* dgate may be dout (so may dup): each element's inputs are read before its outputs are written.
 * OT: float, or bf16 (the mixed-precision trainer's GEMM operands; then no aliasing). IT: the
 * saved gate / up, F32 or BF16 (the BF16 trainer's GEMM outputs); DT: dout, F32 or BF16 (its
 * down-projection dgrad written in BF16). */
template <typename OT, typename IT, typename DT>
static __global__ void k_swiglu_backward(OT *dgate, OT *dup, const DT *dout, const IT *gate, const IT *up,
                                         int64_t n) {
    griddep_wait();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float g = tr_ld(gate, i), d = tr_ld(dout, i), u = tr_ld(up, i);
        float sg = 1.0f / (1.0f + expf(-g));
        float du = d * g * sg, dg = d * u * sg * (1.0f + g * (1.0f - sg));
        tr_st(dup, i, du);
        tr_st(dgate, i, dg);
    }
}

/* The same per element, all BF16, n % 8 == 0 and 16-byte aligned arrays: 8 elements a thread
 * with 16-byte loads and stores (the scalar form ran at ~75 % of the copy rate on the trainer's
 * (8,192, 8,192) tensors). */
static __global__ void k_swiglu_backward8(bf16 *dgate, bf16 *dup, const bf16 *dout, const bf16 *gate,
                                          const bf16 *up, int64_t n8) {
    griddep_wait();
    for (int64_t v = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; v < n8; v += (int64_t)gridDim.x * blockDim.x) {
        const uint4 gv = ((const uint4 *)gate)[v], dv = ((const uint4 *)dout)[v], uv = ((const uint4 *)up)[v];
        const bf16 *g8 = (const bf16 *)&gv, *d8 = (const bf16 *)&dv, *u8 = (const bf16 *)&uv;
        uint4 og, ou;
        bf16 *dg8 = (bf16 *)&og, *du8 = (bf16 *)&ou;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            float g = bf2f(g8[e]), d = bf2f(d8[e]), u = bf2f(u8[e]);
            float sg = 1.0f / (1.0f + expf(-g));
            du8[e] = f2bf(d * g * sg);
            dg8[e] = f2bf(d * u * sg * (1.0f + g * (1.0f - sg)));
        }
        ((uint4 *)dup)[v] = ou;
        ((uint4 *)dgate)[v] = og;
    }
}

template <typename IT, typename DT>
static dspy_status swiglu_backward_in(dspy_backend *be, const char *op, dspy_tensor dgate, dspy_tensor dup,
                                      const DT *dout, const IT *gate, const IT *up, int64_t n) {
    if (dgate.dtype == DSPY_DTYPE_BF16 && sizeof(IT) == 2 && sizeof(DT) == 2 && n % 8 == 0 &&
        ((uintptr_t)dgate.data | (uintptr_t)dup.data | (uintptr_t)dout | (uintptr_t)gate | (uintptr_t)up) % 16 == 0)
        return cu_launch(be, op, k_swiglu_backward8, tr_grid(n / 8), 256, 0, (bf16 *)dgate.data, (bf16 *)dup.data,
                         (const bf16 *)dout, (const bf16 *)gate, (const bf16 *)up, n / 8);
    if (dgate.dtype == DSPY_DTYPE_BF16)
        return cu_launch(be, op, k_swiglu_backward<bf16, IT, DT>, tr_grid(n), 256, 0, (bf16 *)dgate.data,
                         (bf16 *)dup.data, dout, gate, up, n);
    return cu_launch(be, op, k_swiglu_backward<float, IT, DT>, tr_grid(n), 256, 0, (float *)dgate.data,
                     (float *)dup.data, dout, gate, up, n);
}

template <typename IT>
static dspy_status swiglu_backward_dout(dspy_backend *be, const char *op, dspy_tensor dgate, dspy_tensor dup,
                                        dspy_tensor dout, const IT *gate, const IT *up, int64_t n) {
    if (dout.dtype == DSPY_DTYPE_BF16)
        return swiglu_backward_in(be, op, dgate, dup, (const bf16 *)dout.data, gate, up, n);
    return swiglu_backward_in(be, op, dgate, dup, (const float *)dout.data, gate, up, n);
}

dspy_status dspy_cu_swiglu_backward(dspy_backend *be, dspy_tensor dgate, dspy_tensor dup, dspy_tensor dout,
                               dspy_tensor gate, dspy_tensor up, int N, int I) {
    CU_ENTER(be);
    const char *op = "swiglu_backward";
    int64_t n = (int64_t)N * I;
    CU_NEED2(op, "dgate", dgate, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, n);
    CU_NEED(op, "dup", dup, dgate.dtype, n);
    CU_NEED2(op, "dout", dout, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, n);
    CU_NEED2(op, "gate", gate, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, n);
    CU_NEED(op, "up", up, gate.dtype, n);
    if (n == 0) return DSPY_OK;
    if (dup.data == dgate.data)
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: dgate and dup are the same memory", op);
    /* outputs of another width than dout, or any output over BF16 inputs: an overlap would
     * overwrite inputs other threads still read (F32 over F32 in place is element-wise and allowed) */
    const int64_t ob = n * (int64_t)dspy_dtype_size(dgate.dtype);
    const char *a0 = (const char *)dgate.data, *b0 = (const char *)dup.data;
    const char *g0 = (const char *)dout.data, *g1 = g0 + n * (int64_t)dspy_dtype_size(dout.dtype);
    if ((dgate.dtype == DSPY_DTYPE_BF16 || dout.dtype == DSPY_DTYPE_BF16) &&
        ((a0 < g1 && a0 + ob > g0) || (b0 < g1 && b0 + ob > g0)))
        return dspy_fail(DSPY_ERR_ARG, "cuda %s: dgate / dup overlap dout (%s outputs)", op,
                         dgate.dtype == DSPY_DTYPE_BF16 ? "BF16" : "F32 over a BF16 dout");
    if (gate.dtype == DSPY_DTYPE_BF16) {
        const int64_t ib = n * (int64_t)sizeof(bf16);
        const char *in[2] = {(const char *)gate.data, (const char *)up.data}, *out[2] = {a0, b0};
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++)
                if (out[j] < in[i] + ib && out[j] + ob > in[i])
                    return dspy_fail(DSPY_ERR_ARG, "cuda %s: dgate / dup overlap the BF16 gate / up", op);
        return swiglu_backward_dout(be, op, dgate, dup, dout, (const bf16 *)gate.data, (const bf16 *)up.data, n);
    }
    return swiglu_backward_dout(be, op, dgate, dup, dout, (const float *)gate.data, (const float *)up.data, n);
}

/* ---- embedding backward, scatter-add ----------------------------------------------------- */

/* One block per source row n: dst row idx[n] += src row n (atomically: indices may repeat). */
static __global__ void k_add_rows(float *dst, int64_t rows, const int32_t *idx, const float *src, int C) {
    griddep_wait();
    const int n = blockIdx.x;
    const int64_t r = idx[n];
    if (r < 0 || r >= rows) __trap(); /* out of range: a device fault, reported as the sticky error */
    float *d = dst + r * C;
    const float *g = src + (int64_t)n * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(d + c, g[c]);
}

static dspy_status add_rows(dspy_backend *be, const char *op, const char *dst_name, dspy_tensor dst, dspy_tensor idx,
                            dspy_tensor src, int N, int C) {
    CU_ENTER(be);
    CU_NEED(op, dst_name, dst, DSPY_DTYPE_F32, C);
    CU_NEED(op, "ids", idx, DSPY_DTYPE_I32, N);
    CU_NEED(op, "dout", src, DSPY_DTYPE_F32, (int64_t)N * C);
    if (N == 0 || C == 0) return DSPY_OK;
    int threads = C >= 256 ? 256 : ((C + 31) / 32) * 32;
    return cu_launch(be, op, k_add_rows, N, threads, 0, (float *)dst.data, dst.n / C, (const int32_t *)idx.data,
                     (const float *)src.data, C);
}

dspy_status dspy_cu_embedding_backward(dspy_backend *be, dspy_tensor dtable, dspy_tensor ids, dspy_tensor dout, int N,
                                  int C) {
    return add_rows(be, "embedding_backward", "dtable", dtable, ids, dout, N, C);
}

dspy_status dspy_cu_scatter_add_rows(dspy_backend *be, dspy_tensor dinp, dspy_tensor rows, dspy_tensor dout, int M,
                                int C) {
    return add_rows(be, "scatter_add_rows", "dinp", dinp, rows, dout, M, C);
}

/* ---- dropout, scale ---------------------------------------------------------------------- */

/* out may be inp: each element is read before it is written. */
static __global__ void k_dropout(float *out, const float *inp, int64_t n, float p, float s, uint64_t key) {
    griddep_wait();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = dspy_dropout_keep(key, i, p) ? inp[i] * s : 0.0f;
}

dspy_status dspy_cu_dropout(dspy_backend *be, dspy_tensor out, dspy_tensor inp, float p, uint64_t key) {
    CU_ENTER(be);
    CU_NEED("dropout", "out", out, DSPY_DTYPE_F32, 0);
    CU_NEED("dropout", "inp", inp, DSPY_DTYPE_F32, out.n);
    if (out.n == 0) return DSPY_OK;
    float s = 1.0f / (1.0f - p); /* on the host, exactly as the CPU computes it */
    return cu_launch(be, "dropout", k_dropout, tr_grid(out.n), 256, 0, (float *)out.data, (const float *)inp.data,
                     out.n, p, s, key);
}

static __global__ void k_scale(float *x, int64_t n, float s) {
    griddep_wait();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] *= s;
}

dspy_status dspy_cu_scale(dspy_backend *be, dspy_tensor x, float s) {
    CU_ENTER(be);
    CU_NEED("scale", "x", x, DSPY_DTYPE_F32, 0);
    if (x.n == 0) return DSPY_OK;
    return cu_launch(be, "scale", k_scale, tr_grid(x.n), 256, 0, (float *)x.data, x.n, s);
}
