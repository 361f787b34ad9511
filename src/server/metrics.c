/* metrics.c — Prometheus counters and histograms for `dspy serve` (see metrics.h). */
#include "server/metrics.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define N_ROUTES 2
#define N_STATUS_SLOTS 8 /* 200, 400, 401, 404, 413, 503, other, 0 (client gone) */
#define N_STRUCT 4

/* Bucket bounds in seconds, fixed for the server's life: Prometheus sums histograms across
 * scrapes and servers only when the bounds agree. Chosen around what a CPU or one GPU gives
 * (first token in ms to s, per-token times of 1 ms to 1 s). */
static const double k_ttft_b[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
static const double k_tpot_b[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};
static const double k_dur_b[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
#define NB(a) (sizeof a / sizeof a[0])

typedef struct histo {
    const double *bounds;
    size_t n;
    uint64_t counts[16]; /* per bucket (not cumulative, so observe is one increment; render sums
                            them as Prometheus wants); counts[n] is +Inf */
    double sum;
    uint64_t count;
} histo;

static const char *const k_routes[N_ROUTES] = {"chat", "completions"};
static const int k_status[N_STATUS_SLOTS - 1] = {200, 400, 401, 404, 413, 503, 0};
static const char *const k_struct[N_STRUCT] = {"none", "json_schema", "json_object", "layout"};

struct srv_metrics {
    pthread_mutex_t mu;
    uint64_t requests[N_ROUTES][N_STATUS_SLOTS]; /* slot N_STATUS_SLOTS - 1: other statuses */
    uint64_t structured[N_STRUCT];
    uint64_t prompt_tokens, completion_tokens;
    histo ttft, tpot, dur;
};

srv_metrics *dspy_srv_metrics_new(void) {
    srv_metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    pthread_mutex_init(&m->mu, NULL);
    m->ttft = (histo){k_ttft_b, NB(k_ttft_b), {0}, 0, 0};
    m->tpot = (histo){k_tpot_b, NB(k_tpot_b), {0}, 0, 0};
    m->dur = (histo){k_dur_b, NB(k_dur_b), {0}, 0, 0};
    return m;
}

void dspy_srv_metrics_free(srv_metrics *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* A value on a bound counts in that bucket: Prometheus buckets are "less than or equal". */
static void observe(histo *h, double v) {
    size_t i = 0;
    while (i < h->n && v > h->bounds[i]) i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

void dspy_srv_metrics_request(srv_metrics *m, const srv_request_sample *r) {
    int route = r->route && strcmp(r->route, "completions") == 0 ? 1 : 0;
    int slot = N_STATUS_SLOTS - 1;
    for (int i = 0; i < N_STATUS_SLOTS - 1; i++)
        if (k_status[i] == r->status) slot = i;
    int sk = 0;
    for (int i = 0; i < N_STRUCT; i++)
        if (r->structured && strcmp(r->structured, k_struct[i]) == 0) sk = i;
    pthread_mutex_lock(&m->mu);
    m->requests[route][slot]++;
    m->structured[sk]++;
    m->prompt_tokens += (uint64_t)(r->prompt_tokens > 0 ? r->prompt_tokens : 0);
    m->completion_tokens += (uint64_t)(r->completion_tokens > 0 ? r->completion_tokens : 0);
    if (r->ttft_s >= 0) observe(&m->ttft, r->ttft_s);
    if (r->tpot_s >= 0) observe(&m->tpot, r->tpot_s);
    observe(&m->dur, r->duration_s);
    pthread_mutex_unlock(&m->mu);
}

static void render_histo(dspy_str *o, const char *name, const char *help, const histo *h) {
    dspy_str_appendf(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (size_t i = 0; i < h->n; i++) {
        cum += h->counts[i];
        dspy_str_appendf(o, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i], (unsigned long long)cum);
    }
    cum += h->counts[h->n];
    dspy_str_appendf(o, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n", name, (unsigned long long)cum,
                     name, h->sum, name, (unsigned long long)h->count);
}

static void gauge(dspy_str *o, const char *name, const char *help, const char *type, double v) {
    dspy_str_appendf(o, "# HELP %s %s\n# TYPE %s %s\n%s %.9g\n", name, help, name, type, name, v);
}

/* One counter family with a sample per label value (values[i] for label key="names[i]"); scale
 * turns nanoseconds into seconds. */
static void counter_family(dspy_str *o, const char *name, const char *help, const char *key, const char *const *names,
                           const int64_t *values, int n, double scale) {
    dspy_str_appendf(o, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (int i = 0; i < n; i++) dspy_str_appendf(o, "%s{%s=\"%s\"} %.9g\n", name, key, names[i], (double)values[i] * scale);
}

/* Where the engine thread's time went (see sched_stats and dspy_engine_profile): B2's profile. */
static void render_profile(dspy_str *o, const sched_stats *st) {
    const dspy_engine_profile *p = &st->engine;
    const char *kinds[DSPY_STEP_KINDS];
    for (int k = 0; k < DSPY_STEP_KINDS; k++) kinds[k] = dspy_step_kind_name((dspy_step_kind)k);
    counter_family(o, "dspy_engine_kind_steps_total", "Engine steps by kind (graph: a replayed decode graph).", "kind",
                   kinds, p->steps, DSPY_STEP_KINDS, 1);
    counter_family(o, "dspy_engine_kind_sequences_total", "Sequences advanced by steps of each kind.", "kind", kinds,
                   p->seqs, DSPY_STEP_KINDS, 1);
    counter_family(o, "dspy_engine_kind_rows_total", "Tokens fed by steps of each kind.", "kind", kinds, p->rows,
                   DSPY_STEP_KINDS, 1);
    counter_family(o, "dspy_engine_device_seconds_total", "Steps' device spans (upload to the end of the wait).",
                   "kind", kinds, p->device_ns, DSPY_STEP_KINDS, 1e-9);
    counter_family(o, "dspy_engine_launch_seconds_total", "Of the device spans, the host enqueueing the work.", "kind",
                   kinds, p->launch_ns, DSPY_STEP_KINDS, 1e-9);
    static const char *const phases[] = {"idle", "admit", "step", "events", "stats", "step_plan", "step_post",
                                         "graph_capture"};
    const int64_t ns[] = {st->idle_ns, st->admit_ns, st->step_ns, st->events_ns, st->stats_ns,
                          p->plan_ns,  p->post_ns,   p->capture_ns};
    counter_family(o, "dspy_engine_thread_seconds_total",
                   "The engine thread's time: idle (no work), admit, step (dspy_engine_step: its plan, device spans "
                   "and post), events (results to the requests), stats; step_plan, step_post and graph_capture are "
                   "parts of step.", "phase", phases, ns, (int)(sizeof ns / sizeof ns[0]), 1e-9);
    gauge(o, "dspy_engine_graph_captures_total", "Decode graphs captured.", "counter", (double)p->captures);
    gauge(o, "dspy_engine_spec_steps_total",
          "Steps in which a sequence fed drafted tokens (speculative decoding, jump-forward).", "counter",
          (double)p->spec_steps);
    gauge(o, "dspy_engine_draft_tokens_total", "Drafted tokens fed (speculative decoding, jump-forward).", "counter",
          (double)p->draft_tokens);
    gauge(o, "dspy_engine_accepted_tokens_total", "Drafted tokens accepted: each one a decode step saved.", "counter",
          (double)p->accepted_tokens);
}

bool dspy_srv_metrics_render(srv_metrics *m, const sched_stats *st, dspy_str *o) {
    pthread_mutex_lock(&m->mu);
    dspy_str_append(o, "# HELP dspy_requests_total Finished generation requests by route and HTTP status "
                       "(status 0: the client went away).\n# TYPE dspy_requests_total counter\n");
    for (int r = 0; r < N_ROUTES; r++)
        for (int k = 0; k < N_STATUS_SLOTS; k++) {
            if (!m->requests[r][k]) continue;
            if (k < N_STATUS_SLOTS - 1)
                dspy_str_appendf(o, "dspy_requests_total{route=\"%s\",status=\"%d\"} %llu\n", k_routes[r], k_status[k],
                                 (unsigned long long)m->requests[r][k]);
            else
                dspy_str_appendf(o, "dspy_requests_total{route=\"%s\",status=\"other\"} %llu\n", k_routes[r],
                                 (unsigned long long)m->requests[r][k]);
        }
    dspy_str_append(o, "# HELP dspy_structured_requests_total Generation requests by output constraint.\n"
                       "# TYPE dspy_structured_requests_total counter\n");
    for (int i = 0; i < N_STRUCT; i++)
        dspy_str_appendf(o, "dspy_structured_requests_total{kind=\"%s\"} %llu\n", k_struct[i],
                         (unsigned long long)m->structured[i]);
    gauge(o, "dspy_prompt_tokens_total", "Prompt tokens of finished requests.", "counter", (double)m->prompt_tokens);
    gauge(o, "dspy_completion_tokens_total", "Completion tokens of finished requests.", "counter",
          (double)m->completion_tokens);
    render_histo(o, "dspy_time_to_first_token_seconds", "From submission to the first generated token.", &m->ttft);
    render_histo(o, "dspy_time_per_output_token_seconds", "Mean time per output token after the first, per request.",
                 &m->tpot);
    render_histo(o, "dspy_request_duration_seconds", "From the request's arrival to its last byte.", &m->dur);
    pthread_mutex_unlock(&m->mu);
    /* the engine's numbers come from the scheduler's snapshot (taken under its own lock), not
     * from this one: the two locks are never held together */
    gauge(o, "dspy_queue_length", "Requests waiting for the engine.", "gauge", st->queued);
    gauge(o, "dspy_running_requests", "Requests with sequences in the engine.", "gauge", st->running);
    gauge(o, "dspy_active_sequences", "Sequences in the engine.", "gauge", st->active_seqs);
    gauge(o, "dspy_batch_size", "Sequences advanced by the last engine step.", "gauge", st->last_batch);
    gauge(o, "dspy_engine_steps_total", "Engine steps.", "counter", (double)st->steps);
    gauge(o, "dspy_batch_sequences_total", "Sum over engine steps of the sequences advanced (divide by "
          "dspy_engine_steps_total for the mean batch size).", "counter", (double)st->batch_seqs);
    gauge(o, "dspy_kv_cache_capacity_tokens", "KV cache capacity.", "gauge", st->kv_capacity);
    gauge(o, "dspy_kv_cache_used_tokens", "KV cache tokens not free (in use or only cached).", "gauge",
          st->kv_capacity - st->kv_free);
    gauge(o, "dspy_kv_cache_usage_ratio", "Used / capacity.", "gauge",
          st->kv_capacity > 0 ? (double)(st->kv_capacity - st->kv_free) / st->kv_capacity : 0.0);
    gauge(o, "dspy_prefix_cache_tokens", "Tokens held in prefix-cache blocks.", "gauge", (double)st->cached_tokens);
    gauge(o, "dspy_prefix_cache_queries_tokens_total", "Prompt tokens looked up in the prefix cache.", "counter",
          (double)st->prompt_tokens);
    gauge(o, "dspy_prefix_cache_hits_tokens_total", "Prompt tokens found in the prefix cache.", "counter",
          (double)st->prefix_hit_tokens);
    gauge(o, "dspy_prefix_cache_hit_rate", "hits / queries over the server's life.", "gauge",
          st->prompt_tokens > 0 ? (double)st->prefix_hit_tokens / (double)st->prompt_tokens : 0.0);
    gauge(o, "dspy_prompt_tokens_computed_total", "Prompt tokens computed (misses and recomputation).", "counter",
          (double)st->computed_tokens);
    gauge(o, "dspy_preemptions_total", "Sequences preempted for KV cache.", "counter", (double)st->preemptions);
    render_profile(o, st);
    return dspy_str_ok(o);
}
