/* pointwise.cu — row-wise CUDA kernels: embedding lookup, RMSNorm, RoPE fused with the KV-cache
 * store, SwiGLU, residual add, row gather, fill and cast.
 *
 * The arithmetic follows the CPU reference (kern/cpu/pointwise.c): RMSNorm statistics in F32
 * (the CPU sums in double; the difference is far below BF16 rounding), the RoPE angle
 * pos * inv_freq rounded to F32 before cos/sin (sincosf: within an F32 ulp or two of the CPU's
 * double cos/sin, far below BF16 rounding), SiLU as
 * g / (1 + exp(-g)). Outputs are written in the output tensor's dtype (round to nearest even).
 * Memory-bound: each kernel reads its inputs once and writes its outputs once.
 */
#include <math.h>

#include "kern/cuda/cuda.cuh"
#include "kern/cuda/f8.cuh"

/* Load/store one element of an F32 or BF16 array. */
static __device__ __forceinline__ float ld_any(const void *p, int64_t i, bool bf) {
    return bf ? bf2f(((const bf16 *)p)[i]) : ((const float *)p)[i];
}
static __device__ __forceinline__ void st_any(void *p, int64_t i, float v, bool bf) {
    if (bf) ((bf16 *)p)[i] = f2bf(v);
    else ((float *)p)[i] = v;
}

/* ---- embedding ---------------------------------------------------------------------------- */

/* out (N, C) = table[ids]; one block per row. */
static __global__ void k_embedding(void *out, bool out_bf, const int32_t *ids, const void *table, bool tab_bf, int C) {
    griddep_wait();
    int n = blockIdx.x;
    int64_t row = ids[n];
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        st_any(out, (int64_t)n * C + c, ld_any(table, row * C + c, tab_bf), out_bf);
}

dspy_status dspy_cu_embedding(dspy_backend *be, dspy_tensor out, dspy_tensor ids, dspy_tensor table, int N, int C) {
    CU_ENTER(be);
    CU_NEED2("embedding", "out", out, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)N * C);
    CU_NEED("embedding", "ids", ids, DSPY_DTYPE_I32, N);
    CU_NEED2("embedding", "table", table, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, C);
    if (N == 0) return DSPY_OK;
    return cu_launch(be, "embedding", k_embedding, N, 256, 0, out.data, out.dtype == DSPY_DTYPE_BF16,
                     (const int32_t *)ids.data, (const void *)table.data, table.dtype == DSPY_DTYPE_BF16, C);
}

/* ---- RMSNorm ------------------------------------------------------------------------------ */

/* Sum (MAX: the largest value) over the block (blockDim.x a multiple of 32, at most 1024); every
 * thread gets it. The sum's order is fixed (the RMSNorm kernels' results depend on it); a maximum
 * is exact in any order. */
template <bool MAX = false> static __device__ float block_reduce(float v) {
    __shared__ float part[32];
    auto op = [](float a, float b) { return MAX ? fmaxf(a, b) : a + b; };
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    __syncthreads(); /* part may still be read by a previous call */
    if (l == 0) part[w] = v;
    __syncthreads();
    int nw = blockDim.x >> 5;
    v = l < nw ? part[l] : 0.0f; /* 0: the sum's identity, and below every |x| the maximum takes */
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
static __device__ float block_sum(float v) { return block_reduce(v); }

/* One block per row: out = inp * rsqrt(mean(inp^2) + eps) * weight. */
static __global__ void k_rmsnorm(void *out, bool out_bf, const float *inp, const float *w, int C, float eps) {
    griddep_wait();
    const float *x = inp + (int64_t)blockIdx.x * C;
    float ss = 0;
    for (int c = threadIdx.x; c < C; c += blockDim.x) ss += x[c] * x[c];
    ss = block_sum(ss);
    float r = 1.0f / sqrtf(ss / (float)C + eps);
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        st_any(out, (int64_t)blockIdx.x * C + c, w[c] * (x[c] * r), out_bf);
}

/* The same per element (w * (x * r), r = 1 / sqrtf(ss / C + eps), rounded once), for C a multiple
 * of 256 up to 8,192 and 16-byte aligned rows: one block of C / 8 threads (whole warps) per row,
 * each holding its 8 values in registers between the sum and the scaling, so a row is read once
 * with 16-byte loads and written with 16-byte (BF16) or 32-byte (F32) stores. Only the sum's
 * order differs from k_rmsnorm. Why: the scalar form ran at ~40 % of the copy rate on the
 * trainer's (8,192, 2,048) rows. */
static __device__ __forceinline__ void rms8(float *y, const float *inp, const float *w, int C, float eps) {
    const int64_t base = (int64_t)blockIdx.x * C + 8 * threadIdx.x;
    const float4 a = *(const float4 *)(inp + base), b = *(const float4 *)(inp + base + 4);
    float ss = a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w + b.x * b.x + b.y * b.y + b.z * b.z + b.w * b.w;
    ss = block_sum(ss);
    const float r = 1.0f / sqrtf(ss / (float)C + eps);
    const float4 wa = *(const float4 *)(w + 8 * threadIdx.x), wb = *(const float4 *)(w + 8 * threadIdx.x + 4);
    y[0] = wa.x * (a.x * r), y[1] = wa.y * (a.y * r), y[2] = wa.z * (a.z * r), y[3] = wa.w * (a.w * r);
    y[4] = wb.x * (b.x * r), y[5] = wb.y * (b.y * r), y[6] = wb.z * (b.z * r), y[7] = wb.w * (b.w * r);
}

static __global__ void k_rmsnorm8(void *out, bool out_bf, const float *inp, const float *w, int C, float eps) {
    griddep_wait();
    const int64_t base = (int64_t)blockIdx.x * C + 8 * threadIdx.x;
    float y[8];
    rms8(y, inp, w, C, eps);
    if (out_bf) {
        uint4 o;
        __nv_bfloat162 *h = (__nv_bfloat162 *)&o;
#pragma unroll
        for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(y[2 * i], y[2 * i + 1]);
        *(uint4 *)((bf16 *)out + base) = o;
    } else {
        *(float4 *)((float *)out + base) = make_float4(y[0], y[1], y[2], y[3]);
        *(float4 *)((float *)out + base + 4) = make_float4(y[4], y[5], y[6], y[7]);
    }
}

/* Thread t's eight values y (BF16-rounded in place) of row `row` as the W8A8 codes linear makes
 * of that BF16 row (gemm.cu k_act8: 2^k the smallest with every |y| <= 448 * 2^k, k <= the
 * activation bound), stored at q + row * C + 8 t, and the row's 2^k at sc[row]. */
static __device__ __forceinline__ void act8_row8(float *y, uint8_t *q, float *sc, int64_t row, int C) {
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        y[i] = __bfloat162float(__float2bfloat16_rn(y[i]));
        amax = fmaxf(amax, fabsf(y[i]));
    }
    amax = block_reduce<true>(amax);
    const int k = min(f8_exponent(amax), (int)DSPY_ACT8_K_MAX);
    *(uint2 *)(q + row * C + 8 * threadIdx.x) = act8_pack8(y, ldexpf(1.0f, -k));
    if (threadIdx.x == 0) sc[row] = ldexpf(1.0f, k);
}

/* k_rmsnorm8's rows as W8A8 codes (act8_row8) instead of BF16: the same codes and scales as
 * rmsnorm into BF16 and then linear's rounding of those rows, with the BF16 rows never stored and
 * read back. */
static __global__ void k_rmsnorm8_act8(uint8_t *q, float *sc, const float *inp, const float *w, int C, float eps) {
    griddep_wait();
    float y[8];
    rms8(y, inp, w, C, eps);
    act8_row8(y, q, sc, blockIdx.x, C);
}

bool dspy_cu_rmsnorm_act8_fits(int C, const void *x, const void *w, const void *q) {
    return C % 256 == 0 && C <= 8192 && ((uintptr_t)x | (uintptr_t)w | (uintptr_t)q) % 16 == 0;
}

dspy_status dspy_cu_rmsnorm_act8(dspy_backend *be, uint8_t *q, float *sc, dspy_tensor x, dspy_tensor weight, int N, int C,
                                 float eps) {
    if (N == 0) return DSPY_OK;
    return cu_launch(be, "rmsnorm (rows to E4M3)", k_rmsnorm8_act8, N, C / 8, 0, q, sc, (const float *)x.data,
                     (const float *)weight.data, C, eps);
}

dspy_status dspy_cu_rmsnorm(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor weight, int N, int C,
                       float eps) {
    CU_ENTER(be);
    CU_NEED2("rmsnorm", "out", out, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)N * C);
    CU_NEED("rmsnorm", "inp", inp, DSPY_DTYPE_F32, (int64_t)N * C);
    CU_NEED("rmsnorm", "weight", weight, DSPY_DTYPE_F32, C);
    if (N == 0) return DSPY_OK;
    const uintptr_t bits = (uintptr_t)out.data | (uintptr_t)inp.data | (uintptr_t)weight.data;
    if (C % 256 == 0 && C <= 8192 && bits % 16 == 0)
        return cu_launch(be, "rmsnorm", k_rmsnorm8, N, C / 8, 0, out.data, out.dtype == DSPY_DTYPE_BF16,
                         (const float *)inp.data, (const float *)weight.data, C, eps);
    int threads = C >= 1024 ? 1024 : ((C + 31) / 32) * 32;
    return cu_launch(be, "rmsnorm", k_rmsnorm, N, threads, 0, out.data, out.dtype == DSPY_DTYPE_BF16,
                     (const float *)inp.data, (const float *)weight.data, C, eps);
}

/* ---- RoPE + KV store ------------------------------------------------------------------------ */

/* One block per row; thread t handles rotation pair (head, i) of the q heads then the k heads,
 * and copies v. */
static __global__ void k_qkv_rope_store(bf16 *q_out, bf16 *kc, bf16 *vc, const bf16 *qkv, const int32_t *pos,
                                 const int32_t *slots, const float *inv_freq, int NH, int NKV, int HS) {
    griddep_wait();
    int n = blockIdx.x, half = HS / 2, Q = NH * HS, KVD = NKV * HS, W = Q + 2 * KVD;
    const bf16 *row = qkv + (int64_t)n * W;
    int64_t slot = slots[n];
    int p = pos[n];
    for (int t = threadIdx.x; t < (NH + NKV) * half; t += blockDim.x) {
        int h = t / half, i = t % half;
        float ang = (float)p * inv_freq[i], sn, cs;
        sincosf(ang, &sn, &cs); /* full-range F32 cos/sin of the F32 angle (the CPU widens to double) */
        bool isq = h < NH;
        const bf16 *src = isq ? row + h * HS : row + Q + (h - NH) * HS;
        float a = bf2f(src[i]), b = bf2f(src[i + half]);
        bf16 *dst = isq ? q_out + (int64_t)n * Q + h * HS : kc + slot * KVD + (h - NH) * HS;
        dst[i] = f2bf(a * cs - b * sn);
        dst[i + half] = f2bf(b * cs + a * sn);
    }
    for (int t = threadIdx.x; t < KVD; t += blockDim.x) vc[slot * KVD + t] = row[Q + KVD + t];
}

dspy_status dspy_cu_qkv_rope_store(dspy_backend *be, dspy_tensor q_out, dspy_tensor kcache, dspy_tensor vcache,
                              dspy_tensor qkv, dspy_tensor pos, dspy_tensor slots, dspy_tensor inv_freq, int N, int NH,
                              int NKV, int HS) {
    CU_ENTER(be);
    const int Q = NH * HS, KVD = NKV * HS;
    CU_NEED("qkv_rope_store", "q_out", q_out, DSPY_DTYPE_BF16, (int64_t)N * Q);
    CU_NEED("qkv_rope_store", "qkv", qkv, DSPY_DTYPE_BF16, (int64_t)N * (Q + 2 * KVD));
    CU_NEED("qkv_rope_store", "kcache", kcache, DSPY_DTYPE_BF16, KVD);
    CU_NEED("qkv_rope_store", "vcache", vcache, DSPY_DTYPE_BF16, KVD);
    CU_NEED("qkv_rope_store", "pos", pos, DSPY_DTYPE_I32, N);
    CU_NEED("qkv_rope_store", "slots", slots, DSPY_DTYPE_I32, N);
    CU_NEED("qkv_rope_store", "inv_freq", inv_freq, DSPY_DTYPE_F32, HS / 2);
    if (N == 0) return DSPY_OK;
    return cu_launch(be, "qkv_rope_store", k_qkv_rope_store, N, 256, 0, (bf16 *)q_out.data, (bf16 *)kcache.data,
                     (bf16 *)vcache.data, (const bf16 *)qkv.data, (const int32_t *)pos.data,
                     (const int32_t *)slots.data, (const float *)inv_freq.data, NH, NKV, HS);
}

/* ---- SwiGLU, add, gather -------------------------------------------------------------------- */

static __global__ void k_swiglu(void *out, bool out_bf, const void *gate, const void *up, bool in_bf, int N, int I, int ld) {
    griddep_wait();
    int64_t total = (int64_t)N * I;
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (int64_t)gridDim.x * blockDim.x) {
        int64_t n = k / I, i = k % I;
        float g = ld_any(gate, n * ld + i, in_bf), u = ld_any(up, n * ld + i, in_bf);
        st_any(out, k, g / (1.0f + expf(-g)) * u, out_bf);
    }
}

/* The same per element, all BF16, I and ld multiples of 8 and 16-byte aligned arrays: 8 elements
 * a thread with 16-byte loads and stores, rows on the grid's y (no 64-bit division per element).
 * Why: the scalar form ran at ~40 % of the copy rate on the trainer's (8,192, 8,192) outputs. */
static __device__ __forceinline__ uint4 swiglu8(uint4 gv, uint4 uv) {
    const __nv_bfloat162 *g2 = (const __nv_bfloat162 *)&gv, *u2 = (const __nv_bfloat162 *)&uv;
    uint4 o;
    __nv_bfloat162 *o2 = (__nv_bfloat162 *)&o;
#pragma unroll
    for (int e = 0; e < 4; e++) {
        const float2 g = __bfloat1622float2(g2[e]), u = __bfloat1622float2(u2[e]);
        o2[e] = __floats2bfloat162_rn(g.x / (1.0f + expf(-g.x)) * u.x, g.y / (1.0f + expf(-g.y)) * u.y);
    }
    return o;
}

static __global__ void k_swiglu8(bf16 *out, const bf16 *gate, const bf16 *up, int N, int I, int ld) {
    griddep_wait();
    const int i = 8 * (blockIdx.x * blockDim.x + threadIdx.x);
    if (i >= I) return;
    for (int n = blockIdx.y; n < N; n += gridDim.y)
        *(uint4 *)(out + (int64_t)n * I + i) =
            swiglu8(*(const uint4 *)(gate + (int64_t)n * ld + i), *(const uint4 *)(up + (int64_t)n * ld + i));
}

/* k_swiglu8's rows as W8A8 codes (act8_row8): one block of I / 8 threads a row, so the row's
 * largest value is known before its codes are made. Why: the down projection of a W8A8 prompt
 * step otherwise reads back the BF16 h that SwiGLU stored, only to round it (at B2's 3,060-row
 * steps, 100 MB a layer moved for nothing). */
static __global__ void k_swiglu8_act8(uint8_t *q, float *sc, const bf16 *gate, const bf16 *up, int I, int ld) {
    griddep_wait();
    const int64_t n = blockIdx.x;
    const int i = 8 * threadIdx.x;
    const uint4 o = swiglu8(*(const uint4 *)(gate + n * ld + i), *(const uint4 *)(up + n * ld + i));
    const __nv_bfloat162 *o2 = (const __nv_bfloat162 *)&o;
    float y[8];
#pragma unroll
    for (int e = 0; e < 4; e++) {
        const float2 f = __bfloat1622float2(o2[e]);
        y[2 * e] = f.x, y[2 * e + 1] = f.y;
    }
    act8_row8(y, q, sc, n, I);
}

bool dspy_cu_swiglu_act8_fits(int I, int ld, const void *gate, const void *up, const void *q) {
    return I % 256 == 0 && I <= 8192 && ld % 8 == 0 && ((uintptr_t)gate | (uintptr_t)up | (uintptr_t)q) % 16 == 0;
}

dspy_status dspy_cu_swiglu_act8(dspy_backend *be, uint8_t *q, float *sc, dspy_tensor gate, dspy_tensor up, int N, int I,
                                int ld) {
    if (N == 0) return DSPY_OK;
    return cu_launch(be, "swiglu (rows to E4M3)", k_swiglu8_act8, N, I / 8, 0, q, sc, (const bf16 *)gate.data,
                     (const bf16 *)up.data, I, ld);
}

dspy_status dspy_cu_swiglu(dspy_backend *be, dspy_tensor out, dspy_tensor gate, dspy_tensor up, int N, int I, int ld) {
    CU_ENTER(be);
    int64_t need = N > 0 ? (int64_t)(N - 1) * ld + I : 0;
    CU_NEED2("swiglu", "out", out, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)N * I);
    CU_NEED2("swiglu", "gate", gate, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, need);
    CU_NEED("swiglu", "up", up, gate.dtype, need);
    if (ld < I) return dspy_fail(DSPY_ERR_ARG, "cuda swiglu: row stride %d is below the width %d", ld, I);
    int64_t total = (int64_t)N * I;
    if (total == 0) return DSPY_OK;
    if (out.dtype == DSPY_DTYPE_BF16 && gate.dtype == DSPY_DTYPE_BF16 && I % 8 == 0 && ld % 8 == 0 &&
        ((uintptr_t)out.data | (uintptr_t)gate.data | (uintptr_t)up.data) % 16 == 0) {
        const unsigned bx = (unsigned)((I / 8 + 127) / 128), by = N < 65535 ? (unsigned)N : 65535u;
        return cu_launch(be, "swiglu", k_swiglu8, dim3(bx, by), 128, 0, (bf16 *)out.data, (const bf16 *)gate.data,
                         (const bf16 *)up.data, N, I, ld);
    }
    unsigned blocks = cu_blocks(total, 256);
    if (blocks > 65535u * 8) blocks = 65535u * 8;
    return cu_launch(be, "swiglu", k_swiglu, blocks, 256, 0, out.data, out.dtype == DSPY_DTYPE_BF16,
                     (const void *)gate.data, (const void *)up.data, gate.dtype == DSPY_DTYPE_BF16, N, I, ld);
}

static __global__ void k_add(float *x, const void *y, bool y_bf, int64_t n) {
    griddep_wait();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] += ld_any(y, i, y_bf);
}

dspy_status dspy_cu_add(dspy_backend *be, dspy_tensor x, dspy_tensor y) {
    CU_ENTER(be);
    CU_NEED("add", "x", x, DSPY_DTYPE_F32, 0);
    CU_NEED2("add", "y", y, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, x.n);
    if (x.n == 0) return DSPY_OK;
    unsigned blocks = cu_blocks(x.n, 256);
    if (blocks > 65535u * 8) blocks = 65535u * 8;
    k_add<<<blocks, 256, 0, cu_of(be)->stream>>>((float *)x.data, y.data, y.dtype == DSPY_DTYPE_BF16, x.n);
    return dspy_cu_launched(be, "add");
}

/* One block per output row. Blocks run in no particular order, so out must not alias inp. */
static __global__ void k_gather(void *out, const void *inp, bool bf, const int32_t *rows, int C) {
    griddep_wait();
    int m = blockIdx.x;
    int64_t r = rows[m];
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        st_any(out, (int64_t)m * C + c, ld_any(inp, r * C + c, bf), bf);
}

dspy_status dspy_cu_gather_rows(dspy_backend *be, dspy_tensor out, dspy_tensor inp, dspy_tensor rows, int M, int C) {
    CU_ENTER(be);
    CU_NEED2("gather_rows", "out", out, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, (int64_t)M * C);
    CU_NEED("gather_rows", "inp", inp, out.dtype, 0);
    CU_NEED("gather_rows", "rows", rows, DSPY_DTYPE_I32, M);
    if (out.data == inp.data && M > 0)
        return dspy_fail(DSPY_ERR_ARG, "cuda gather_rows: out and inp must not be the same memory on CUDA");
    if (M == 0) return DSPY_OK;
    return cu_launch(be, "gather_rows", k_gather, M, 256, 0, out.data, (const void *)inp.data,
                     out.dtype == DSPY_DTYPE_BF16, (const int32_t *)rows.data, C);
}

/* ---- fill, cast ------------------------------------------------------------------------------ */

static __global__ void k_fill(void *x, bool bf, int64_t n, float v) {
    griddep_wait();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        st_any(x, i, v, bf);
}

dspy_status dspy_cu_fill(dspy_backend *be, dspy_tensor x, float value) {
    CU_ENTER(be);
    CU_NEED2("fill", "x", x, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, 0);
    if (x.n == 0) return DSPY_OK;
    if (value == 0.0f && !signbit(value))
        return dspy_cu_check(be, cudaMemsetAsync(x.data, 0, dspy_tensor_bytes(x), cu_of(be)->stream), "fill");
    unsigned blocks = cu_blocks(x.n, 256);
    if (blocks > 65535u * 8) blocks = 65535u * 8;
    k_fill<<<blocks, 256, 0, cu_of(be)->stream>>>(x.data, x.dtype == DSPY_DTYPE_BF16, x.n, value);
    return dspy_cu_launched(be, "fill");
}

static __global__ void k_cast(void *out, bool out_bf, const void *inp, int in_kind, int64_t n) {
    griddep_wait();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = in_kind == 0   ? ((const float *)inp)[i]
                  : in_kind == 1 ? bf2f(((const bf16 *)inp)[i])
                                 : __half2float(((const __half *)inp)[i]);
        st_any(out, i, v, out_bf);
    }
}

/* F32 -> BF16 for n % 8 == 0 and 16-byte aligned arrays: 8 elements a thread, 32-byte loads and
 * a 16-byte store, the same rounding (the trainer's casts of (8,192, 2,048) gradients ran at ~60 %
 * of the copy rate in the scalar form). */
static __global__ void k_cast_f32_bf16_8(bf16 *out, const float *inp, int64_t n8) {
    griddep_wait();
    for (int64_t v = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; v < n8; v += (int64_t)gridDim.x * blockDim.x) {
        const float4 a = ((const float4 *)inp)[2 * v], b = ((const float4 *)inp)[2 * v + 1];
        uint4 o;
        __nv_bfloat162 *h = (__nv_bfloat162 *)&o;
        h[0] = __floats2bfloat162_rn(a.x, a.y), h[1] = __floats2bfloat162_rn(a.z, a.w);
        h[2] = __floats2bfloat162_rn(b.x, b.y), h[3] = __floats2bfloat162_rn(b.z, b.w);
        ((uint4 *)out)[v] = o;
    }
}

dspy_status dspy_cu_cast(dspy_backend *be, dspy_tensor out, dspy_tensor inp) {
    CU_ENTER(be);
    if (out.n != inp.n)
        return dspy_fail(DSPY_ERR_ARG, "cuda cast: out has %lld elements, inp %lld", (long long)out.n,
                         (long long)inp.n);
    CU_NEED2("cast", "out", out, DSPY_DTYPE_F32, DSPY_DTYPE_BF16, 0);
    if (inp.device != DSPY_DEVICE_CUDA || (inp.dtype != DSPY_DTYPE_F32 && inp.dtype != DSPY_DTYPE_BF16 &&
                                           inp.dtype != DSPY_DTYPE_F16))
        return dspy_fail(DSPY_ERR_ARG, "cuda cast: inp must be F32, BF16 or F16 in GPU memory");
    if (inp.n == 0) return DSPY_OK;
    int kind = inp.dtype == DSPY_DTYPE_F32 ? 0 : inp.dtype == DSPY_DTYPE_BF16 ? 1 : 2;
    if (kind == 0 && out.dtype == DSPY_DTYPE_BF16 && inp.n % 8 == 0 &&
        ((uintptr_t)out.data | (uintptr_t)inp.data) % 16 == 0) {
        unsigned b8 = cu_blocks(inp.n / 8, 256);
        if (b8 > 65535u * 8) b8 = 65535u * 8;
        return cu_launch(be, "cast", k_cast_f32_bf16_8, b8, 256, 0, (bf16 *)out.data, (const float *)inp.data,
                         inp.n / 8);
    }
    unsigned blocks = cu_blocks(inp.n, 256);
    if (blocks > 65535u * 8) blocks = 65535u * 8;
    k_cast<<<blocks, 256, 0, cu_of(be)->stream>>>(out.data, out.dtype == DSPY_DTYPE_BF16, inp.data, kind, inp.n);
    return dspy_cu_launched(be, "cast");
}
