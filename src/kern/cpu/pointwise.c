/* pointwise.c — fp32 reference row-wise operations: RMSNorm, RoPE, SwiGLU, softmax, embedding
 * lookup, residual add, row gather, KV-cache store.
 *
 * Each follows the arithmetic of transformers' Llama modules in float32 (LlamaRMSNorm,
 * apply_rotary_pos_emb with rotate_half, LlamaMLP with SiLU). OpenMP over rows.
 */
#include <math.h>
#include <string.h>

#include "kern/cpu/cpu.h"

void cpu_rmsnorm(float *out, const float *inp, const float *weight, int N, int C, float eps) {
#pragma omp parallel for schedule(static) if ((long)N * C > (1L << 18))
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
        float var = (float)(ss / C);
        float r = 1.0f / sqrtf(var + eps);
        float *o = out + (size_t)n * C;
        for (int c = 0; c < C; c++) o[c] = weight[c] * (x[c] * r);
    }
}

void cpu_rope(float *x, const int32_t *pos, const float *inv_freq, int N, int H, int HS) {
    int half = HS / 2;
#pragma omp parallel for schedule(static) if ((long)N * H * HS > (1L << 18))
    for (int n = 0; n < N; n++) {
        float cs[half > 0 ? half : 1], sn[half > 0 ? half : 1];
        for (int i = 0; i < half; i++) {
            float ang = (float)pos[n] * inv_freq[i]; /* inv_freq @ position_ids in float32 */
            cs[i] = (float)cos((double)ang);
            sn[i] = (float)sin((double)ang);
        }
        for (int h = 0; h < H; h++) {
            float *v = x + ((size_t)n * H + h) * HS;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * cs[i] - b * sn[i];
                v[i + half] = b * cs[i] + a * sn[i];
            }
        }
    }
}

void cpu_kv_store(float *kcache, float *vcache, const float *k, const float *v, const int32_t *slots, int N, int KVD) {
    for (int n = 0; n < N; n++) {
        memcpy(kcache + (size_t)slots[n] * KVD, k + (size_t)n * KVD, sizeof(float) * (size_t)KVD);
        memcpy(vcache + (size_t)slots[n] * KVD, v + (size_t)n * KVD, sizeof(float) * (size_t)KVD);
    }
}

void cpu_swiglu(float *out, const float *gate, const float *up, int N, int C) {
    size_t n = (size_t)N * C;
#pragma omp parallel for schedule(static) if (n > (1L << 18))
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void cpu_softmax(float *out, const float *inp, int N, int V) {
#pragma omp parallel for schedule(static) if ((long)N * V > (1L << 18))
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * V;
        float *o = out + (size_t)n * V;
        float m = -INFINITY;
        for (int i = 0; i < V; i++)
            if (x[i] > m) m = x[i];
        double sum = 0;
        for (int i = 0; i < V; i++) {
            o[i] = expf(x[i] - m);
            sum += o[i];
        }
        float inv = (float)(1.0 / sum);
        for (int i = 0; i < V; i++) o[i] *= inv;
    }
}

void cpu_embedding(float *out, const int32_t *ids, const float *table, int N, int C) {
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * C, table + (size_t)ids[n] * C, sizeof(float) * (size_t)C);
}

void cpu_add(float *x, const float *y, int64_t n) {
#pragma omp parallel for schedule(static) if (n > (1L << 18))
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

void cpu_gather_rows(float *out, const float *inp, const int32_t *rows, int M, int C) {
    for (int m = 0; m < M; m++) memmove(out + (size_t)m * C, inp + (size_t)rows[m] * C, sizeof(float) * (size_t)C);
}
