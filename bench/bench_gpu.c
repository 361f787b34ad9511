/* bench_gpu.c — inference benchmarks on the GPU (issue 9's B1 and prefill), with their floors.
 *
 *   copy   device-to-device copy bandwidth (bytes read + written / time), the memory ceiling
 *   B1     batch-1 greedy decode: a 1,500-token prompt, 128 new tokens; ms per decoded token
 *          (median over the steps after the first token), and its fraction of the memory floor
 *          (weight bytes / measured copy bandwidth: every decode step reads every weight once)
 *   prefill 100 prompts of 1,500 tokens through one engine (chunked, max_batch_tokens tokens a
 *          step) until every sequence has its first token; seconds and tokens/s, and the FLOP
 *          floor (2 * non-embedding params * tokens + causal attention) at the measured peak
 *
 * Usage: bench_gpu --model DIR [--device cuda] [--prefill-chunk 16384] [--peak-tflops 789]
 * Prints one JSON object per measurement (for bench/run_gpu.sh to tabulate).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dspy/backend.h"
#include "dspy/engine.h"
#include "dspy/model.h"
#include "kern/backend.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int fail(const char *what) {
    fprintf(stderr, "bench_gpu: %s: %s\n", what, dspy_errmsg());
    return 1;
}

/* Device-to-device copy of 2 GiB, median of 10; returns bytes read + written per second. */
static double copy_bandwidth(dspy_device dev) {
    dspy_backend *be = NULL;
    if (dspy_backend_new(dev, NULL, &be)) return 0;
    size_t bytes = (size_t)2 << 30;
    void *a = NULL, *b = NULL;
    double bw = 0;
    if (!be->ops->alloc(be, bytes, &a) && !be->ops->alloc(be, bytes, &b)) {
        be->ops->fill(be, dspy_bt(be, a, (int64_t)(bytes / 4), DSPY_DTYPE_F32), 1.0f);
        double t[10];
        for (int i = 0; i < 12; i++) {
            double t0 = now_s();
            be->ops->copy(be, b, a, bytes, DSPY_COPY_D2D);
            be->ops->sync(be);
            if (i >= 2) t[i - 2] = now_s() - t0;
        }
        bw = 2.0 * (double)bytes / median(t, 10);
    }
    be->ops->free(be, a);
    be->ops->free(be, b);
    dspy_backend_free(be);
    return bw;
}

static int32_t *random_ids(int n, int V, uint64_t seed) {
    int32_t *p = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (int32_t)((seed >> 33) % (uint64_t)(V - 1000)) + 500;
    }
    return p;
}

int main(int argc, char **argv) {
    const char *dir = NULL, *device = "cuda";
    int chunk = 16384, n_prompts = 100, plen = 1500, gen = 128;
    double peak = 789e12;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--device")) device = argv[i + 1];
        else if (!strcmp(argv[i], "--prefill-chunk")) chunk = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prompts")) n_prompts = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--peak-tflops")) peak = atof(argv[i + 1]) * 1e12;
    }
    if (!dir) {
        fprintf(stderr, "usage: bench_gpu --model DIR [--device cuda] [--prefill-chunk N] [--prompts N]\n");
        return 2;
    }
    dspy_model_params mp = dspy_model_params_default();
    mp.device = device;
    dspy_model *m = NULL;
    double t0 = now_s();
    if (dspy_model_load(dir, &mp, &m)) return fail("load");
    double t_load = now_s() - t0;
    const dspy_model_config *c = dspy_model_config_get(m);
    char name[256] = "cpu";
    if (dspy_model_device(m).type == DSPY_DEVICE_CUDA) dspy_cuda_device_name(dspy_model_device(m).ordinal, name, sizeof name);
    double bw = copy_bandwidth(dspy_model_device(m));
    size_t wbytes = dspy_model_weight_bytes(m);
    printf("{\"bench\": \"copy\", \"device\": \"%s\", \"GBps\": %.1f, \"weight_bytes\": %zu, \"load_s\": %.2f}\n", name,
           bw / 1e9, wbytes, t_load);

    /* ---- B1: batch-1 decode ---- */
    dspy_engine_params ep = dspy_engine_params_default();
    ep.max_seqs = 1, ep.max_batch_tokens = 2048, ep.max_tokens_total = plen + gen + 16;
    dspy_engine *e = NULL;
    if (dspy_engine_new(m, &ep, &e)) return fail("engine");
    double runs[3];
    double ttft = 0;
    for (int r = 0; r < 4; r++) { /* run 0 warms up (graph capture) */
        int32_t *p = random_ids(plen, c->vocab_size, 1000 + (uint64_t)r);
        dspy_sampling sp = dspy_sampling_default();
        sp.temperature = 0, sp.max_tokens = gen, sp.ignore_eos = true;
        int64_t id;
        if (dspy_engine_add(e, p, (size_t)plen, &sp, &id)) return fail("add");
        free(p);
        double steps[512];
        int ns = 0, got = 0;
        double ts = now_s(), tfirst = 0;
        for (;;) {
            double s0 = now_s();
            dspy_step_out so;
            if (dspy_engine_step(e, &so)) return fail("step");
            if (so.n_events == 0) break;
            double dt = now_s() - s0;
            if (so.events[0].token >= 0) {
                if (got++ == 0) tfirst = now_s() - ts;
                else if (ns < 512) steps[ns++] = dt;
            }
            if (so.events[0].finish) break;
        }
        if (r > 0) runs[r - 1] = median(steps, ns), ttft = tfirst;
    }
    dspy_engine_free(e);
    double ms = median(runs, 3) * 1e3, floor_ms = bw > 0 ? (double)wbytes / bw * 1e3 : 0;
    printf("{\"bench\": \"B1\", \"ms_per_token\": %.4f, \"tokens_per_s\": %.1f, \"floor_ms\": %.4f, "
           "\"fraction_of_floor\": %.3f, \"prefill_1500_ms\": %.2f}\n",
           ms, 1e3 / ms, floor_ms, floor_ms / ms, ttft * 1e3);

    /* ---- prefill: n_prompts x plen ---- */
    ep = dspy_engine_params_default();
    ep.max_seqs = n_prompts, ep.max_batch_tokens = chunk, ep.max_tokens_total = n_prompts * (plen + 16);
    if (dspy_engine_new(m, &ep, &e)) return fail("engine (prefill)");
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        int32_t *p = random_ids(plen * n_prompts, c->vocab_size, 77 + (uint64_t)r);
        double ts = now_s();
        for (int i = 0; i < n_prompts; i++) {
            dspy_sampling sp = dspy_sampling_default();
            sp.temperature = 0, sp.max_tokens = 1, sp.ignore_eos = true;
            int64_t id;
            if (dspy_engine_add(e, p + (size_t)i * plen, (size_t)plen, &sp, &id)) return fail("add (prefill)");
        }
        int done = 0;
        while (done < n_prompts) {
            dspy_step_out so;
            if (dspy_engine_step(e, &so)) return fail("step (prefill)");
            for (int k = 0; k < so.n_events; k++) done += so.events[k].finish != DSPY_FINISH_NONE;
            if (so.n_events == 0) break;
        }
        double dt = now_s() - ts;
        if (dt < best) best = dt;
        free(p);
    }
    dspy_engine_free(e);
    double tokens = (double)n_prompts * plen;
    double params = (double)dspy_model_config_params(c) - (double)c->vocab_size * c->hidden_size; /* no embedding */
    double attn = 4.0 * c->num_hidden_layers * c->num_attention_heads * c->head_dim * 0.5 * (double)plen * plen * n_prompts;
    double flops = 2.0 * params * tokens + attn;
    printf("{\"bench\": \"prefill\", \"prompts\": %d, \"prompt_tokens\": %d, \"chunk\": %d, \"seconds\": %.4f, "
           "\"tokens_per_s\": %.0f, \"tflops\": %.1f, \"floor_s\": %.4f}\n",
           n_prompts, plen, chunk, best, tokens / best, flops / best / 1e12, flops / peak);
    dspy_model_free(m);
    return 0;
}
