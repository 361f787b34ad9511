/* bench_cpu.c — CPU speed of the reference and fast kernels (issue 16; bench/cpu_bench.sh runs it
 * next to llama.cpp and writes bench/RESULTS.md's table).
 *
 *   bench_cpu ops [--threads N]
 *       linear (N, C) x (OC, C)^T on the shapes of the 1B model's decode and prefill: GFLOP/s of
 *       the reference kernel and of the fast kernel at every SIMD level this CPU runs.
 *   bench_cpu model --model DIR [--kernels fast|reference] [--threads N] [--prompt P]
 *                   [--decode T] [--reps R] [--warmup W]
 *       the engine on one sequence: prefill of P tokens (fixed pseudo-random ids) timed to its
 *       first sampled token, then T greedy decode tokens; W untimed runs, then R timed ones,
 *       each a fresh engine on the same loaded model. Prints one JSON line per repetition and the medians.
 * Numbers go to stdout; nothing here is a test (DESIGN.md §8.6).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dspy/backend.h"
#include "dspy/clock.h"
#include "check.h"
#include "dspy/engine.h"
#include "dspy/model.h"
#include "kern/backend.h"
#include "kern/cpu/fast.h"

static const char *arg(int argc, char **argv, const char *name, const char *def) {
    for (int i = 0; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return def;
}

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float frand(void) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (float)((g_rng >> 40) * 0x1.0p-24) * 2.0f - 1.0f;
}

/* Seconds per call of linear (N, C, OC) on backend be, the median of enough calls for ~0.3 s. */
static double time_linear(dspy_backend *be, int N, int C, int OC, float *x, uint16_t *w, float *y) {
    dspy_tensor X = dspy_bt(be, x, (int64_t)N * C, DSPY_DTYPE_F32), W = dspy_bt(be, w, (int64_t)OC * C, DSPY_DTYPE_BF16);
    dspy_tensor Y = dspy_bt(be, y, (int64_t)N * OC, DSPY_DTYPE_F32);
    double t[15];
    int reps = 0;
    double t_all = dspy_now_s();
    while (reps < 15 && (reps < 3 || dspy_now_s() - t_all < 0.3)) {
        double t0 = dspy_now_s();
        if (be->ops->linear(be, Y, X, W, dspy_tensor_none(), N, C, OC, false)) {
            fprintf(stderr, "linear failed: %s\n", dspy_errmsg());
            return -1;
        }
        t[reps++] = dspy_now_s() - t0;
    }
    return test_median(t, reps);
}

static int run_ops(int threads) {
    static const struct {
        const char *what;
        int N, C, OC;
    } shapes[] = {{"1B decode qkv", 1, 2048, 3072},    {"1B decode gate_up", 1, 2048, 16384},
                  {"1B decode down", 1, 8192, 2048},   {"1B decode lm_head", 1, 2048, 128256},
                  {"1B prefill qkv", 128, 2048, 3072}, {"1B prefill gate_up", 128, 2048, 16384},
                  {"1B prefill down", 128, 8192, 2048}};
    dspy_backend_plan plan = {128, 64, 1, 64, 1, 1, threads, 0};
    dspy_backend *ref = NULL, *fast = NULL;
    if (dspy_backend_new((dspy_device){DSPY_DEVICE_CPU, 0}, &plan, &ref) ||
        dspy_backend_new((dspy_device){DSPY_DEVICE_CPU, 0}, &plan, &fast) || dspy_backend_cpu_use_fast(fast, 8192)) {
        fprintf(stderr, "bench_cpu: %s\n", dspy_errmsg());
        return 1;
    }
    printf("linear, %d threads, best SIMD here: %s (GFLOP/s; median of repeated calls)\n", threads,
           dspy_cpu_simd_label(dspy_cpu_simd_detect()));
    printf("%-20s %6s %6s %7s %10s", "shape", "N", "C", "OC", "reference");
    for (int l = 0; l <= (int)dspy_cpu_simd_detect(); l++) printf(" %12s", dspy_cpu_simd_label((dspy_cpu_simd)l));
    printf("\n");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s].N, C = shapes[s].C, OC = shapes[s].OC;
        float *x = malloc(sizeof(float) * (size_t)N * C), *y = malloc(sizeof(float) * (size_t)N * OC);
        uint16_t *w = malloc(sizeof(uint16_t) * (size_t)OC * C);
        if (!x || !y || !w) return 1;
        for (size_t i = 0; i < (size_t)N * C; i++) x[i] = frand();
        for (size_t i = 0; i < (size_t)OC * C; i++) w[i] = dspy_cpu_round_bf16(frand() * 0.05f);
        double flop = 2.0 * N * C * OC;
        printf("%-20s %6d %6d %7d", shapes[s].what, N, C, OC);
        double tr = N * (double)OC * C > 2e9 ? -1 : time_linear(ref, N, C, OC, x, w, y);
        if (tr > 0) printf(" %10.1f", flop / tr * 1e-9);
        else printf(" %10s", "-");
        dspy_cpu_simd keep = dspy_cpu_simd_active();
        for (int l = 0; l <= (int)dspy_cpu_simd_detect(); l++) {
            dspy_cpu_simd_force((dspy_cpu_simd)l, NULL);
            printf(" %12.1f", flop / time_linear(fast, N, C, OC, x, w, y) * 1e-9);
        }
        dspy_cpu_simd_force(keep, NULL);
        printf("\n");
        fflush(stdout);
        free(x), free(y), free(w);
    }
    dspy_backend_free(ref);
    dspy_backend_free(fast);
    return 0;
}

/* One repetition: prefill P ids, then T greedy tokens. */
static int run_once(const dspy_model *m, const int32_t *ids, int P, int T, double *prefill_s, double *decode_s) {
    dspy_engine_params ep = dspy_engine_params_default();
    ep.max_seqs = 1;
    ep.max_tokens_total = P + T + 1;
    ep.max_batch_tokens = P;
    dspy_engine *e = NULL;
    if (dspy_engine_new(m, &ep, &e)) return 1;
    dspy_sampling sp = dspy_sampling_default();
    sp.temperature = 0;
    sp.max_tokens = T + 1;
    sp.ignore_eos = true;
    int64_t id;
    int got = 0;
    double t0 = dspy_now_s(), t1 = t0;
    if (dspy_engine_add(e, ids, (size_t)P, &sp, &id)) goto fail;
    for (;;) {
        dspy_step_out so;
        if (dspy_engine_step(e, &so)) goto fail;
        if (so.n_events == 0) break;
        if (so.events[0].token < 0) continue;
        if (got++ == 0) t1 = dspy_now_s();
        if (so.events[0].finish != DSPY_FINISH_NONE) break;
    }
    *prefill_s = t1 - t0;
    *decode_s = dspy_now_s() - t1;
    dspy_engine_free(e);
    return got == T + 1 ? 0 : 1;
fail:
    dspy_engine_free(e);
    return 1;
}

static int run_model(int argc, char **argv) {
    const char *dir = arg(argc, argv, "--model", NULL), *kern = arg(argc, argv, "--kernels", "fast");
    int threads = atoi(arg(argc, argv, "--threads", "2")), P = atoi(arg(argc, argv, "--prompt", "128"));
    int T = atoi(arg(argc, argv, "--decode", "32")), R = atoi(arg(argc, argv, "--reps", "3"));
    int W = atoi(arg(argc, argv, "--warmup", "1"));
    if (!dir || P < 1 || T < 1 || R < 1 || R > 64 || W < 0) {
        fprintf(stderr, "usage: bench_cpu model --model DIR [--kernels fast|reference] [--threads N] [--prompt P] "
                        "[--decode T] [--reps R] [--warmup W]\n");
        return 2;
    }
    dspy_model_params mp = dspy_model_params_default();
    mp.n_threads = threads;
    dspy_model *m = NULL;
    if (dspy_cpu_kernels_parse(kern, &mp.cpu_kernels) || dspy_model_load(dir, &mp, &m)) {
        fprintf(stderr, "bench_cpu: %s\n", dspy_errmsg());
        return 1;
    }
    int V = dspy_model_config_get(m)->vocab_size;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)P);
    double pf[64], dc[64];
    for (int i = 0; i < P; i++) ids[i] = (int32_t)((uint64_t)(i * 2654435761u) % (uint64_t)(V > 1000 ? 1000 : V)) + 1;
    for (int r = 0; r < W; r++) /* untimed: pages the weights in, starts the threads */
        if (run_once(m, ids, P, T, &pf[0], &dc[0])) {
            fprintf(stderr, "bench_cpu: %s\n", dspy_errmsg());
            return 1;
        }
    for (int r = 0; r < R; r++) {
        if (run_once(m, ids, P, T, &pf[r], &dc[r])) {
            fprintf(stderr, "bench_cpu: %s\n", dspy_errmsg());
            return 1;
        }
        printf("{\"kernels\": \"%s\", \"simd\": \"%s\", \"threads\": %d, \"prompt\": %d, \"decode\": %d, "
               "\"prefill_tok_s\": %.2f, \"decode_tok_s\": %.2f}\n",
               kern, dspy_cpu_simd_name(), threads, P, T, P / pf[r], T / dc[r]);
        fflush(stdout);
    }
    double mp_s = test_median(pf, R), md_s = test_median(dc, R);
    printf("median: prefill %.2f tok/s, decode %.2f tok/s (%s kernels, %d threads)\n", P / mp_s, T / md_s, kern,
           threads);
    free(ids);
    dspy_model_free(m);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "ops") == 0) return run_ops(atoi(arg(argc, argv, "--threads", "2")));
    if (argc >= 2 && strcmp(argv[1], "model") == 0) return run_model(argc, argv);
    fprintf(stderr, "usage: bench_cpu ops [--threads N] | bench_cpu model --model DIR [...]\n");
    return 2;
}
