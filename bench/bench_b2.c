/* bench_b2.c — issue 10's B2, the evaluation workload against `dspy serve`: 100 requests that share
 * a 1,300-token prefix (the tutorial's system prompt and demos) followed by ~200 tokens of their
 * own, 80 answer tokens each (greedy, ignore_eos), sent by 16 concurrent HTTP clients to a real
 * server process on 127.0.0.1. Prints the wall time from the first request to the last answer,
 * requests/s, the completion tokens, and what the server's /metrics says about the prefix cache.
 *
 * The prompts are token ids (OpenAI completions accept arrays of ids), made by the same
 * splitmix64 rule bench/torch_baseline.py --b2 uses, so PyTorch's batched generate in the same
 * run sees exactly the same prompts:
 *   shared[i] = 1000 + splitmix64(7 + i) % 99000            (i < PREFIX)
 *   own_r[j]  = 1000 + splitmix64(1000003 * (r + 1) + j) % 99000   (j < UNIQUE)
 *
 * Two modes:
 *   default ("mode": "first-alone"): one request first, alone (it fills the prefix cache and
 *     warms the server; its time is reported apart, "seconds_with_first" adds it), then the other
 *     requests - 1 by the clients, timed from their first send to the last answer ("seconds").
 *   --burst ("mode": "burst"): what the tutorial's evaluation does: every request, the first
 *     included, through the clients from a cold prefix cache, timed from the first send to the
 *     last answer ("seconds"); the engine's in-flight prefix sharing is what keeps the clients'
 *     first prompts from computing the shared prefix each ("prompt_tokens_computed": the prompt
 *     tokens the server computed, from /metrics; about prefix + requests * unique when it holds).
 * In both, "text_hash" covers the answers of requests 1 .. requests - 1 (the same set, so two runs
 * of either mode compare).
 *
 * Usage: bench_b2 --model DIR [--device cuda] [--requests 100] [--clients 16] [--prefix 1300]
 *        [--unique 200] [--max-tokens 80] [--max-seqs 16] [--weights bf16|fp8|w8a8] [--burst]
 * One JSON line (bench "B2") last. Not a test (bench/, DESIGN §8.6).
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "http_client.h"
#include "dspy/json.h"
#include "dspy/local.h"
#include "dspy/str.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t splitmix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

typedef struct {
    const char *base; /* http://127.0.0.1:PORT/v1 */
    char **bodies;    /* (requests) JSON bodies */
    int requests;
    uint64_t *text_hash; /* (requests) FNV-1a of each answer's text, to compare two servers' outputs */
    atomic_int next, ok, errors, first_error;
    atomic_llong completion_tokens, prompt_tokens;
} b2_run;

/* GET or POST (body non-NULL) to base + path on a kept-alive handle, the body into *out; the
 * HTTP status, or 0 on a transport error. */
static long request(CURL *h, const char *base, const char *path, const char *body, test_http_reply *out) {
    char url[512];
    snprintf(url, sizeof url, "%s%s", base, path);
    test_http(h, url, body, 300, out);
    return out->status;
}

static void *client_main(void *arg) {
    b2_run *r = arg;
    CURL *h = curl_easy_init();
    test_http_reply out = {0};
    for (int i; h && (i = atomic_fetch_add(&r->next, 1)) < r->requests;) {
        long st = request(h, r->base, "/completions", r->bodies[i], &out);
        dspy_json *j = NULL;
        if (st == 200 && dspy_json_parse(out.body.ptr, out.body.len, "B2 response", &j) == DSPY_OK) {
            const dspy_json *u = dspy_json_get(j, "usage");
            const char *text = dspy_json_str_or(dspy_json_at(dspy_json_get(j, "choices"), 0), "text", "");
            uint64_t hv = 1469598103934665603ull;
            for (const char *c = text; *c; c++) hv = (hv ^ (unsigned char)*c) * 1099511628211ull;
            r->text_hash[i] = hv;
            atomic_fetch_add(&r->completion_tokens, (long long)dspy_json_number(dspy_json_get(u, "completion_tokens")));
            atomic_fetch_add(&r->prompt_tokens, (long long)dspy_json_number(dspy_json_get(u, "prompt_tokens")));
            atomic_fetch_add(&r->ok, 1);
        } else if (atomic_fetch_add(&r->errors, 1) == 0) {
            atomic_store(&r->first_error, (int)st);
        }
        dspy_json_decref(j);
    }
    test_http_reply_free(&out);
    if (h) curl_easy_cleanup(h);
    return NULL;
}

/* The value of the first sample of metric `name` in Prometheus text (`name value` or
 * `name{labels} value`), or -1 when it is absent. */
static double metric(const char *text, const char *name) {
    size_t n = strlen(name);
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (*l == '#' || strncmp(l, name, n) != 0 || (l[n] != ' ' && l[n] != '{')) continue;
        const char *v = l[n] == '{' ? strchr(l, '}') : l + n;
        return v ? strtod(v + 1, NULL) : -1;
    }
    return -1;
}

/* The value of metric `name` with label key="value" (src/server/metrics.c's profile families),
 * or 0 when it is absent (a server without them). */
static double metric_l(const char *text, const char *name, const char *key, const char *value) {
    if (!text) return 0;
    char want[160];
    snprintf(want, sizeof want, "%s{%s=\"%s\"} ", name, key, value);
    const char *l = strstr(text, want);
    return l ? strtod(l + strlen(want), NULL) : 0;
}

/* Where the server's engine thread spent the time between two /metrics snapshots (a before, b
 * after) of a phase that took `wall` seconds. */
static void print_profile(const char *phase, const char *a, const char *b, double wall) {
    static const char *const kinds[] = {"graph", "decode", "mixed", "prefill"};
    static const char *const parts[] = {"idle", "admit", "step", "events", "stats", "step_plan", "step_post",
                                        "graph_capture"};
#define D(name, key, v) (metric_l(b, name, key, v) - metric_l(a, name, key, v))
    printf("profile %s (wall %.4f s): kind steps seqs/step rows/step device_ms device_us/step launch_ms\n", phase,
           wall);
    double dev = 0;
    for (int k = 0; k < 4; k++) {
        double n = D("dspy_engine_kind_steps_total", "kind", kinds[k]);
        if (n <= 0) continue;
        double d = D("dspy_engine_device_seconds_total", "kind", kinds[k]);
        dev += d;
        printf("profile %s   %-8s %6.0f %6.2f %8.1f %9.2f %9.1f %9.2f\n", phase, kinds[k], n,
               D("dspy_engine_kind_sequences_total", "kind", kinds[k]) / n,
               D("dspy_engine_kind_rows_total", "kind", kinds[k]) / n, d * 1e3, d * 1e6 / n,
               D("dspy_engine_launch_seconds_total", "kind", kinds[k]) * 1e3);
    }
    double thread = 0;
    printf("profile %s   engine thread ms:", phase);
    for (int i = 0; i < 8; i++) {
        double v = D("dspy_engine_thread_seconds_total", "phase", parts[i]);
        if (i < 5) thread += v;
        printf(" %s %.2f", parts[i], v * 1e3);
    }
    double step = D("dspy_engine_thread_seconds_total", "phase", "step");
    printf("\nprofile %s   device spans %.2f ms, step outside them %.2f ms, engine thread busy outside steps %.2f "
           "ms, not in the loop %.2f ms\n", phase, dev * 1e3, (step - dev) * 1e3,
           (thread - step - D("dspy_engine_thread_seconds_total", "phase", "idle")) * 1e3, (wall - thread) * 1e3);
#undef D
}

static const char *opt(int argc, char **argv, const char *name, const char *def) {
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return def;
}

static bool flag(int argc, char **argv, const char *name) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0) return true;
    return false;
}

int main(int argc, char **argv) {
    const char *model = opt(argc, argv, "--model", NULL), *device = opt(argc, argv, "--device", "cuda");
    const int requests = atoi(opt(argc, argv, "--requests", "100")), clients = atoi(opt(argc, argv, "--clients", "16"));
    const int prefix = atoi(opt(argc, argv, "--prefix", "1300")), unique = atoi(opt(argc, argv, "--unique", "200"));
    const int max_tokens = atoi(opt(argc, argv, "--max-tokens", "80"));
    const char *max_seqs = opt(argc, argv, "--max-seqs", "16");
    const char *weights = opt(argc, argv, "--weights", "bf16"); /* fp8, w8a8: dspy serve --weights */
    const bool burst = flag(argc, argv, "--burst");
    if (!model || requests < 1 || clients < 1 || prefix < 0 || unique < 1 || max_tokens < 1 ||
        flag(argc, argv, "--help")) {
        fprintf(stderr, "usage: bench_b2 --model DIR [--device cuda] [--requests N] [--clients N] [--prefix N] "
                        "[--unique N] [--max-tokens N] [--max-seqs N] [--weights bf16|fp8|w8a8] [--burst]\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    dspy_local_params p = dspy_local_params_default();
    p.dspy_bin = test_bin("dspy");
    p.timeout_s = 300;
    p.log_dir = getenv("B2_SERVER_LOG_DIR"); /* keep the server's log there (its warm-up time) */
    /* KV room for every client's sequence at once (each reserves prompt + max_tokens) */
    char kv[32];
    snprintf(kv, sizeof kv, "%d", (atoi(max_seqs) + 1) * (prefix + unique + max_tokens + 16));
    const char *args[] = {"--tokenizer", test_shared("models/llama3-tokenizer"), "--device", device, "--max-seqs",
                          max_seqs, "--kv-tokens", kv, "--weights", weights};
    p.extra_args = args;
    p.n_extra_args = 10;
    dspy_local_server *srv = NULL;
    if (dspy_local_launch(model, &p, &srv) != DSPY_OK) {
        fprintf(stderr, "bench_b2: %s\n", dspy_errmsg());
        return 2;
    }
    b2_run r = {.base = dspy_local_api_base(srv), .requests = requests};
    r.bodies = calloc((size_t)requests, sizeof *r.bodies);
    r.text_hash = calloc((size_t)requests, sizeof *r.text_hash);
    for (int q = 0; q < requests; q++) {
        dspy_str b = {0};
        dspy_str_appendf(&b, "{\"model\":\"%s\",\"prompt\":[", model);
        for (int i = 0; i < prefix + unique; i++) {
            uint64_t z = i < prefix ? splitmix64(7 + (uint64_t)i)
                                    : splitmix64(1000003ull * (uint64_t)(q + 1) + (uint64_t)(i - prefix));
            dspy_str_appendf(&b, "%s%d", i ? "," : "", (int)(1000 + z % 99000));
        }
        /* ignore_eos: every answer is max_tokens long, as PyTorch's generate with min_new_tokens in
         * the same run (a random model reaches an eos id now and then, in some waves only) */
        dspy_str_appendf(&b, "],\"max_tokens\":%d,\"temperature\":0,\"ignore_eos\":true}", max_tokens);
        r.bodies[q] = b.ptr;
    }
    /* default: one request first, alone: it fills the prefix cache and warms the server (its time
     * is reported apart); then the rest by `clients` concurrent clients. --burst: all of them by
     * the clients, from a cold prefix cache. */
    CURL *h = curl_easy_init();
    test_http_reply out = {0};
    char *m0 = NULL, *mstart = NULL;
    char root[256];
    snprintf(root, sizeof root, "%.*s", (int)(strlen(r.base) - 3), r.base); /* /metrics sits beside /v1 */
    if (request(h, root, "/metrics", NULL, &out) == 200) mstart = strdup(dspy_str_cstr(&out.body));
    double t_first = 0;
    long st = 200;
    if (!burst) {
        t_first = now_s();
        st = request(h, r.base, "/completions", r.bodies[0], &out);
        t_first = now_s() - t_first;
        if (request(h, root, "/metrics", NULL, &out) == 200) m0 = strdup(dspy_str_cstr(&out.body));
    } else if (mstart) {
        m0 = strdup(mstart);
    }
    atomic_init(&r.next, burst ? 0 : 1);
    double t0 = now_s();
    pthread_t *th = calloc((size_t)clients, sizeof *th);
    for (int i = 0; i < clients; i++) pthread_create(&th[i], NULL, client_main, &r);
    for (int i = 0; i < clients; i++) pthread_join(th[i], NULL);
    double wall = now_s() - t0;
    char *m1 = request(h, root, "/metrics", NULL, &out) == 200 ? strdup(dspy_str_cstr(&out.body)) : NULL;
    /* prefix-cache hit rate over the concurrent requests: hit tokens / looked-up tokens (metric
     * names of src/server's /metrics; -1 when the server has no such endpoint) */
    double hit = -1, hit_shared = -1;
    if (m0 && m1) {
        double h0 = metric(m0, "dspy_prefix_cache_hits_tokens_total"), h1 = metric(m1, "dspy_prefix_cache_hits_tokens_total");
        double p0 = metric(m0, "dspy_prefix_cache_queries_tokens_total"), p1 = metric(m1, "dspy_prefix_cache_queries_tokens_total");
        if (h0 >= 0 && h1 >= 0 && p1 > p0) hit = (h1 - h0) / (p1 - p0);
        /* the share of the cacheable part found: each request's own tokens can never be cached */
        if (h0 >= 0 && h1 >= 0 && prefix > 0) hit_shared = (h1 - h0) / ((double)(requests - 1) * prefix);
    }
    /* speculative decoding (DSPY_ENGINE_SPEC=K in the server's environment) over the concurrent
     * part: drafted and accepted tokens; 0 when it is off */
    double drafted = 0, accepted = 0;
    if (m0 && m1) {
        drafted = metric(m1, "dspy_engine_draft_tokens_total") - metric(m0, "dspy_engine_draft_tokens_total");
        accepted = metric(m1, "dspy_engine_accepted_tokens_total") - metric(m0, "dspy_engine_accepted_tokens_total");
    }
    const char *spec = getenv("DSPY_ENGINE_SPEC");
    uint64_t all = 1469598103934665603ull; /* the answers' hashes in request order */
    for (int q = 1; q < requests; q++) all = (all ^ r.text_hash[q]) * 1099511628211ull;
    if (burst) {
        /* prompt tokens the server computed over the burst (the shared prefix once, ideally) */
        double computed = m0 && m1 ? metric(m1, "dspy_prompt_tokens_computed_total") -
                                         metric(m0, "dspy_prompt_tokens_computed_total")
                                   : -1;
        printf("B2 burst: %d requests by %d clients from a cold prefix cache: %d ok, %d errors (first: HTTP %d), "
               "%lld prompt and %lld completion tokens, %.0f prompt tokens computed\n", requests, clients,
               atomic_load(&r.ok), atomic_load(&r.errors), atomic_load(&r.first_error),
               atomic_load(&r.prompt_tokens), atomic_load(&r.completion_tokens), computed);
        print_profile("burst", m0, m1, wall);
        printf("{\"bench\": \"B2\", \"mode\": \"burst\", \"device\": \"%s\", \"requests\": %d, \"clients\": %d, "
               "\"seconds\": %.4f, \"req_per_s\": %.1f, \"completion_tokens\": %lld, \"errors\": %d, "
               "\"prefix_hit_rate\": %.4f, \"prefix_hit_of_shared\": %.4f, \"prompt_tokens_computed\": %.0f, "
               "\"spec_tokens\": %d, \"drafted\": %.0f, \"accepted\": %.0f, \"weights\": \"%s\", "
               "\"text_hash\": \"%016llx\"}\n",
               device, requests, clients, wall, requests / wall, atomic_load(&r.completion_tokens),
               atomic_load(&r.errors), hit, hit_shared, computed, spec ? atoi(spec) : 0, drafted, accepted, weights,
               (unsigned long long)all);
        goto done;
    }
    printf("B2: first request alone %.3f s (HTTP %ld); %d requests by %d clients: %d ok, %d errors (first: HTTP %d), "
           "%lld prompt and %lld completion tokens\n", t_first, st, requests - 1, clients, atomic_load(&r.ok),
           atomic_load(&r.errors), atomic_load(&r.first_error), atomic_load(&r.prompt_tokens),
           atomic_load(&r.completion_tokens));
    print_profile("first", mstart, m0, t_first);
    print_profile("rest", m0, m1, wall);
    printf("{\"bench\": \"B2\", \"mode\": \"first-alone\", \"device\": \"%s\", \"requests\": %d, \"clients\": %d, \"seconds\": %.4f, "
           "\"seconds_with_first\": %.4f, \"req_per_s\": %.1f, \"completion_tokens\": %lld, \"errors\": %d, "
           "\"prefix_hit_rate\": %.4f, \"prefix_hit_of_shared\": %.4f, \"spec_tokens\": %d, \"drafted\": %.0f, "
           "\"accepted\": %.0f, \"weights\": \"%s\", \"text_hash\": \"%016llx\"}\n", device, requests - 1, clients, wall,
           wall + t_first, (requests - 1) / wall, atomic_load(&r.completion_tokens), atomic_load(&r.errors), hit,
           hit_shared, spec ? atoi(spec) : 0, drafted, accepted, weights, (unsigned long long)all);
done:;
    int rc = atomic_load(&r.errors) || st != 200 ? 1 : 0;
    for (int q = 0; q < requests; q++) free(r.bodies[q]);
    free(r.bodies), free(th), free(m0), free(m1), free(mstart), free(r.text_hash);
    test_http_reply_free(&out);
    curl_easy_cleanup(h);
    dspy_local_free(srv);
    curl_global_cleanup();
    return rc;
}
